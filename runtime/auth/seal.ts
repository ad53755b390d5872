/**
 * Tamper-proof cookie values: AES-256-GCM (authenticated encryption: confidential, and any change to the
 * value fails its tag) with a random 96-bit nonce per value and the cookie's purpose as additional data, so
 * a value sealed for one cookie (the pending login) cannot be replayed as another (the session).
 *
 * Format: "v1." + base64url(nonce ‖ ciphertext ‖ tag), in its one canonical spelling (RFC 4648 §5: the
 * alphabet [A-Za-z0-9_-], no padding, no lone last character, zero unused bits). Node's decoder also takes
 * `+` and `/`, padding, stray characters and set unused bits, so without the canonical check one sealed
 * value had many spellings that all unseal alike — and a logout, which revokes the hash of the cookie's
 * exact text, missed every other spelling of it (and each of them could fill the revocation store).
 * Strict, every value that unseals has exactly one spelling, so revoking that text revokes the session.
 */
import { createCipheriv, createDecipheriv, hkdfSync, randomBytes } from "node:crypto";

const VERSION = "v1.";
const NONCE = 12;
const TAG = 16;

/** A 32-byte key derived with HKDF-SHA256 from secret input keying material. */
export function deriveKey(secret: string, salt: string, info: string): Buffer {
  return Buffer.from(hkdfSync("sha256", Buffer.from(secret, "utf8"), salt, info, 32));
}

export function seal(key: Buffer, purpose: string, value: unknown): string {
  const nonce = randomBytes(NONCE);
  const cipher = createCipheriv("aes-256-gcm", key, nonce);
  cipher.setAAD(Buffer.from(purpose, "utf8"));
  const body = Buffer.concat([cipher.update(JSON.stringify(value), "utf8"), cipher.final()]);
  return VERSION + Buffer.concat([nonce, body, cipher.getAuthTag()]).toString("base64url");
}

/**
 * The sealed value, or null when it is malformed (any spelling but the canonical one included), sealed with
 * another key or purpose, or tampered with.
 */
export function unseal(key: Buffer, purpose: string, sealed: string): unknown {
  if (!sealed.startsWith(VERSION) || sealed.length > 8192) return null;
  const encoded = sealed.slice(VERSION.length);
  const raw = Buffer.from(encoded, "base64url");
  // Re-encoding gives the canonical spelling of the decoded bytes: anything else is another spelling.
  if (raw.length < NONCE + TAG + 2 || raw.toString("base64url") !== encoded) return null;
  try {
    const decipher = createDecipheriv("aes-256-gcm", key, raw.subarray(0, NONCE));
    decipher.setAAD(Buffer.from(purpose, "utf8"));
    decipher.setAuthTag(raw.subarray(raw.length - TAG));
    const text = Buffer.concat([decipher.update(raw.subarray(NONCE, raw.length - TAG)), decipher.final()]);
    return JSON.parse(text.toString("utf8"));
  } catch {
    return null;
  }
}
