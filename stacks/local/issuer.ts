/**
 * The dev token issuer of local mode: an ES256 key in `<stateDir>/issuer/jwt-key.pem` (0600, made once
 * and reused), its public JWKS (served by the local admin server at `/.well-known/jwks.json`), and
 * signed JWTs for `meshgate token`. `meshgate up` writes `<stateDir>/issuer/issuer.json` with the issuer
 * URL and the audiences of the spec's JWT providers, which every provider of the local gateway trusts.
 */
import type { webcrypto } from "node:crypto";
import { mkdir, readFile } from "node:fs/promises";
import { join } from "node:path";
import {
  calculateJwkThumbprint,
  exportJWK,
  exportPKCS8,
  generateKeyPair,
  importPKCS8,
  SignJWT,
  type JWK,
} from "jose";
import { writeFileAtomic } from "../../runtime/pki/index.ts";

type CryptoKey = webcrypto.CryptoKey;

export const ISSUER_FILES = { key: "jwt-key.pem", info: "issuer.json" } as const;
const ALG = "ES256";

/** What `meshgate up` records for `meshgate token`. */
export interface IssuerInfo {
  readonly issuer: string;
  readonly jwksUri: string;
  readonly providers: readonly { readonly name: string; readonly audiences: readonly string[] }[];
}

export interface DevIssuer {
  readonly kid: string;
  readonly privateKey: CryptoKey;
  /** The public JWKS (one key); never holds private members. */
  readonly jwks: { readonly keys: readonly JWK[] };
}

/** A problem the user must resolve (no issuer yet, bad arguments); the message says how. */
export class IssuerError extends Error {
  override name = "IssuerError";
  readonly code = "E_LOCAL_ISSUER";
}

async function fromPem(pem: string): Promise<DevIssuer> {
  const privateKey = await importPKCS8(pem, ALG, { extractable: true });
  const full = await exportJWK(privateKey);
  const pub: JWK = { kty: full.kty!, crv: full.crv!, x: full.x!, y: full.y! };
  const kid = await calculateJwkThumbprint(pub);
  return { kid, privateKey, jwks: { keys: [{ ...pub, kid, alg: ALG, use: "sig" }] } };
}

/** Opens the issuer key in `dir`, creating it (0600) on first use. */
export async function openDevIssuer(dir: string): Promise<{ issuer: DevIssuer; created: boolean }> {
  const path = join(dir, ISSUER_FILES.key);
  const existing = await readFile(path, "utf8").catch(() => null);
  if (existing !== null) return { issuer: await fromKeyFile(existing, path), created: false };
  const { privateKey } = await generateKeyPair(ALG, { extractable: true });
  const pem = await exportPKCS8(privateKey);
  await mkdir(dir, { recursive: true, mode: 0o700 });
  await writeFileAtomic(path, pem, 0o600);
  return { issuer: await fromPem(pem), created: true };
}

/** Loads the issuer key and the info `meshgate up` wrote; refuses when `up` never ran with this state dir. */
export async function loadDevIssuer(dir: string): Promise<{ issuer: DevIssuer; info: IssuerInfo }> {
  const pem = await readFile(join(dir, ISSUER_FILES.key), "utf8").catch(() => null);
  const infoText = await readFile(join(dir, ISSUER_FILES.info), "utf8").catch(() => null);
  if (pem === null || infoText === null)
    throw new IssuerError(
      `no dev issuer in ${dir}: run \`meshgate up SPEC\` first (or pass the --state-dir it uses)`,
    );
  return {
    issuer: await fromKeyFile(pem, join(dir, ISSUER_FILES.key)),
    info: parseIssuerInfo(infoText, join(dir, ISSUER_FILES.info)),
  };
}

/** The key file as `meshgate up` writes it (a PKCS#8 P-256 key); anything else is the user's to fix. */
async function fromKeyFile(pem: string, path: string): Promise<DevIssuer> {
  try {
    return await fromPem(pem);
  } catch {
    throw new IssuerError(
      `${path} is not the ES256 key \`meshgate up\` writes: delete it and run \`meshgate up SPEC\` again to make a new one (tokens signed with the old key stop working)`,
    );
  }
}

/** issuer.json as `meshgate up` writes it; anything else (cut short, edited) is the user's to fix. */
function parseIssuerInfo(text: string, path: string): IssuerInfo {
  let info: unknown;
  try {
    info = JSON.parse(text);
  } catch {
    info = null;
  }
  const i = info as Partial<IssuerInfo> | null;
  if (
    typeof i?.issuer !== "string" ||
    typeof i.jwksUri !== "string" ||
    !Array.isArray(i.providers) ||
    !i.providers.every((p) => typeof p?.name === "string" && Array.isArray(p.audiences))
  )
    throw new IssuerError(
      `${path} is not what \`meshgate up\` writes: run \`meshgate up SPEC\` again to rewrite it`,
    );
  return i as IssuerInfo;
}

export async function writeIssuerInfo(dir: string, info: IssuerInfo): Promise<void> {
  await mkdir(dir, { recursive: true, mode: 0o700 });
  await writeFileAtomic(join(dir, ISSUER_FILES.info), `${JSON.stringify(info, null, 2)}\n`, 0o644);
}

export interface TokenRequest {
  readonly sub: string;
  readonly scopes?: readonly string[];
  /** Default: the first audience of the first JWT provider. */
  readonly audience?: string;
  readonly ttlMs?: number;
  /** Extra claims (e.g. tenant); registered claims cannot be overridden through it. */
  readonly claims?: Readonly<Record<string, unknown>>;
  readonly now?: number;
}

/** A signed ES256 JWT the local gateway's JWT providers accept. */
export async function signDevToken(issuer: DevIssuer, info: IssuerInfo, r: TokenRequest): Promise<string> {
  const audience = r.audience ?? info.providers[0]?.audiences[0];
  if (!audience) throw new IssuerError("the spec's JWT providers name no audience: pass --aud");
  const now = Math.floor((r.now ?? Date.now()) / 1000);
  const ttl = Math.max(1, Math.floor((r.ttlMs ?? 3_600_000) / 1000));
  const payload: Record<string, unknown> = { ...(r.claims ?? {}) };
  if (r.scopes && r.scopes.length > 0) payload.scope = r.scopes.join(" ");
  return new SignJWT(payload)
    .setProtectedHeader({ alg: ALG, kid: issuer.kid, typ: "JWT" })
    .setIssuer(info.issuer)
    .setSubject(r.sub)
    .setAudience(audience)
    .setIssuedAt(now)
    .setNotBefore(now)
    .setExpirationTime(now + ttl)
    .sign(issuer.privateKey);
}
