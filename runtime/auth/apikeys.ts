/**
 * API keys (per consumer, stored hashed): the presented key is hashed with SHA-256 and compared with
 * `crypto.timingSafeEqual` against every stored hash of its bucket (buckets by the digest's first byte keep
 * the work per request small with many consumers; inside a bucket every candidate is compared, with no early
 * exit). The key header must appear once (a repeated header is refused, whatever its name), keys are bounded
 * in size, and the consumer's name and groups become the principal.
 */
import { createHash, timingSafeEqual } from "node:crypto";
import { API_KEY_PROVIDER, type Principal } from "../decide/authorize.ts";
import { failure, type ApiKeysConfig, type AuthFailure, type AuthRequestFacts } from "./types.ts";

/** Longest key accepted (generated keys are 20–64 characters). */
export const MAX_API_KEY_BYTES = 512;

interface Candidate {
  readonly digest: Buffer;
  readonly principal: Principal;
}

export class ApiKeyVerifier {
  readonly header: string;
  private readonly buckets: Candidate[][] = Array.from({ length: 256 }, () => []);
  /** Digest comparisons made (every candidate of the bucket is compared; for tests and diagnostics). */
  comparisons = 0;

  constructor(cfg: ApiKeysConfig) {
    this.header = cfg.header.toLowerCase();
    for (const c of cfg.consumers) {
      const principal: Principal = Object.freeze({
        mechanism: "apiKey" as const,
        provider: API_KEY_PROVIDER,
        subject: c.name,
        consumer: c.name,
        groups: Object.freeze([...c.groups]),
        scopes: Object.freeze([]) as readonly string[],
        claims: Object.freeze({}),
        expiresAt: null,
      });
      for (const h of c.keyHashes) {
        const m = /^sha256:([0-9a-f]{64})$/.exec(h);
        if (!m) throw new Error(`apiKeys.consumers.${c.name}.keyHashes: expected "sha256:<64 hex>"`);
        const digest = Buffer.from(m[1]!, "hex");
        this.buckets[digest[0]!]!.push({ digest, principal });
      }
    }
  }

  /** The principal for the request's key: null when no key header is present, a failure when refused. */
  authenticate(facts: Pick<AuthRequestFacts, "header" | "rawHeaders">): Principal | null | AuthFailure {
    const key = facts.header(this.header);
    const rawHeaders = facts.rawHeaders;
    if (key === undefined) return null;
    let seen = 0;
    for (let i = 0; i < rawHeaders.length; i += 2) {
      const n = rawHeaders[i]!;
      if (n.length === this.header.length && n.toLowerCase() === this.header) seen++;
    }
    if (seen > 1) return failure("apiKey", `the ${this.header} header appears more than once`);
    if (key.length === 0 || key.length > MAX_API_KEY_BYTES || key.includes(","))
      return failure("apiKey", "malformed API key");
    const digest = createHash("sha256").update(key, "utf8").digest();
    let match: Principal | null = null;
    for (const c of this.buckets[digest[0]!]!) {
      this.comparisons++;
      if (timingSafeEqual(c.digest, digest) && match === null) match = c.principal;
    }
    return match ?? failure("apiKey", "unknown API key");
  }
}

/** The stored form of a key: "sha256:" + hex SHA-256 (what `printf %s "$KEY" | sha256sum` prints). */
export const apiKeyHash = (key: string): string =>
  `sha256:${createHash("sha256").update(key, "utf8").digest("hex")}`;
