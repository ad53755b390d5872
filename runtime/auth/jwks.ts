/**
 * The verification keys of one JWT provider: inline (`jwks`) or fetched from `jwksUri`.
 *
 * Remote sets are cached for the response's `Cache-Control: max-age` clamped to [minTtlMs, maxTtlMs]
 * (default ttlMs without one) and refreshed in the background once stale — stale keys keep verifying
 * meanwhile. A token with a `kid` the set does not hold triggers a refetch, at most one in flight per
 * provider and at most one per `minRefetchIntervalMs`: a stampede of unknown-kid tokens causes one fetch,
 * and the rest wait for it or fail fast. A failed refresh keeps the keys and is retried no sooner than
 * `minRefetchIntervalMs` later; a fetched set without a usable key is no failure: its keys (none) replace
 * the previous ones. Fetches have a timeout, follow no redirects and read at most `maxBytes`.
 *
 * Keys are looked up by exact `kid` in this set only (every key with that kid fitting the token's alg is
 * tried); tokens' `jku`, `x5u`, `jwk` and `x5c` headers are never consulted. Each key is imported once
 * per pinned algorithm it fits (kty/crv, its own `alg`, `use: sig`, `key_ops` with verify); symmetric
 * (`oct`) keys and private members are never used.
 */
import { importJWK, type CryptoKey, type JWK } from "jose";
import { request } from "undici";
import type { AuthLog, AuthObserver, JwtProviderConfig } from "./types.ts";

export interface JwksOptions {
  /** Default cache lifetime when the response has no max-age. Default 10 minutes. */
  readonly ttlMs?: number;
  /** Lower and upper bounds for a response's max-age. Default 1 minute and 24 hours. */
  readonly minTtlMs?: number;
  readonly maxTtlMs?: number;
  /** Minimum time between two fetches caused by unknown kids. Default 30 s. */
  readonly minRefetchIntervalMs?: number;
  /** Fetch timeout. Default 5 s. */
  readonly timeoutMs?: number;
  /** Largest JWKS document read. Default 1 MiB. */
  readonly maxBytes?: number;
  readonly now?: () => number;
}

/**
 * `keys` holds every key of the set with the token's kid that fits its alg, in the set's order: a JWKS may
 * publish one kid twice (a rotation that reuses the kid, two algorithms), and like Envoy's jwt_authn and
 * jose's createLocalJWKSet the verifier tries each of them. Usually it is one key.
 */
export type KeyLookup =
  | { readonly kind: "key"; readonly keys: readonly CryptoKey[] }
  | { readonly kind: "unknown_kid" }
  | { readonly kind: "no_kid" }
  | { readonly kind: "unavailable" };

const UNKNOWN_KID: KeyLookup = Object.freeze({ kind: "unknown_kid" });
const NO_KID: KeyLookup = Object.freeze({ kind: "no_kid" });

/** Which JWK fits which JWS algorithm. */
const FITS: Readonly<Record<string, (jwk: JWK) => boolean>> = {
  RS256: (k) => k.kty === "RSA",
  RS384: (k) => k.kty === "RSA",
  RS512: (k) => k.kty === "RSA",
  PS256: (k) => k.kty === "RSA",
  PS384: (k) => k.kty === "RSA",
  PS512: (k) => k.kty === "RSA",
  ES256: (k) => k.kty === "EC" && k.crv === "P-256",
  ES384: (k) => k.kty === "EC" && k.crv === "P-384",
  ES512: (k) => k.kty === "EC" && k.crv === "P-521",
  EdDSA: (k) => k.kty === "OKP" && k.crv === "Ed25519",
  Ed25519: (k) => k.kty === "OKP" && k.crv === "Ed25519",
};

/** The asymmetric algorithms a provider may pin (none and HS* are refused: alg confusion, RFC 8725 §3.1). */
export const ASYMMETRIC_ALGORITHMS: ReadonlySet<string> = new Set(Object.keys(FITS));

const PUBLIC_MEMBERS = ["kty", "crv", "x", "y", "n", "e"] as const;

interface KeyEntry {
  readonly kid: string | undefined;
  /** Imported key per algorithm it fits. */
  readonly byAlg: ReadonlyMap<string, CryptoKey>;
  /**
   * Identity of the key: kid, public members (kty, crv, x, y, n, e) and the sorted algorithms it verifies,
   * to notice removed or replaced keys and keys withdrawn from an algorithm.
   */
  readonly id: string;
}

export class JwksStore {
  readonly provider: string;
  private readonly uri: string | null;
  /** What a fetch sends: the URI without its user and password, and those as basic auth (fetchTarget). */
  private readonly target: FetchTarget | null;
  private readonly algorithms: readonly string[];
  private readonly opts: Required<Omit<JwksOptions, "now">>;
  private readonly now: () => number;
  private keys: readonly KeyEntry[] = [];
  /** kid → alg → the lookup answer (built once per key set: a lookup is two map reads, no allocation). */
  private byKid: ReadonlyMap<string, ReadonlyMap<string, KeyLookup>> = new Map();
  private loaded = false;
  private expiresAt = 0;
  private lastAttemptAt = Number.NEGATIVE_INFINITY;
  private inflight: Promise<void> | null = null;
  private abort = new AbortController();
  private closed = false;
  private inlineReady: Promise<void> | null = null;
  /** Fetches started (for tests and diagnostics). */
  fetches = 0;

  private readonly observer: AuthObserver;
  private readonly log: AuthLog;
  private readonly onKeysChanged: () => void;

  /** `onKeysChanged` is called when keys disappear or change, so verifications cached with them are dropped. */
  constructor(
    cfg: JwtProviderConfig,
    opts: JwksOptions,
    observer: AuthObserver,
    log: AuthLog,
    onKeysChanged: () => void,
  ) {
    this.observer = observer;
    this.log = log;
    this.onKeysChanged = onKeysChanged;
    this.provider = cfg.name;
    this.uri = cfg.jwksUri;
    this.target = cfg.jwksUri === null ? null : fetchTarget(cfg.jwksUri);
    this.algorithms = cfg.algorithms;
    this.now = opts.now ?? Date.now;
    this.opts = {
      ttlMs: opts.ttlMs ?? 600_000,
      minTtlMs: opts.minTtlMs ?? 60_000,
      maxTtlMs: opts.maxTtlMs ?? 86_400_000,
      minRefetchIntervalMs: opts.minRefetchIntervalMs ?? 30_000,
      timeoutMs: opts.timeoutMs ?? 5_000,
      maxBytes: opts.maxBytes ?? 1024 * 1024,
    };
    if (cfg.jwks) {
      const inline = cfg.jwks.keys;
      this.inlineReady = importKeys(inline, this.algorithms).then((keys) => {
        this.setKeys(keys);
        this.loaded = true;
        if (keys.length === 0)
          this.log.error(
            { event: "jwks_unusable", provider: this.provider },
            "no inline JWKS key fits the provider's pinned algorithms",
          );
      });
    } else if (!this.uri) {
      throw new Error(`JWT provider ${cfg.name}: needs jwksUri or jwks`);
    }
  }

  /** Starts loading keys ahead of the first request (remote sets only; never throws). */
  prefetch(): void {
    if (this.uri && !this.inflight && !this.loaded) void this.refresh();
  }

  /** The key for a token's `kid` and `alg`, fetching the set when it is missing, stale or lacks the kid. */
  async lookup(kid: string | undefined, alg: string): Promise<KeyLookup> {
    if (this.inlineReady) {
      await this.inlineReady;
      return this.find(kid, alg);
    }
    if (!this.loaded) {
      if (this.inflight) await this.inflight;
      else if (this.mayRefetch()) await this.refresh();
      if (!this.loaded) return { kind: "unavailable" };
    } else if (this.now() >= this.expiresAt && !this.inflight) {
      void this.refresh(); // stale-while-revalidate
    }
    let found = this.find(kid, alg);
    if (found.kind === "unknown_kid" && kid !== undefined) {
      if (this.inflight) await this.inflight;
      else if (this.mayRefetch()) await this.refresh();
      found = this.find(kid, alg);
    }
    return found;
  }

  close(): void {
    this.closed = true;
    this.abort.abort();
  }

  private mayRefetch(): boolean {
    return !this.closed && this.now() - this.lastAttemptAt >= this.opts.minRefetchIntervalMs;
  }

  private setKeys(keys: readonly KeyEntry[]): void {
    const byKid = new Map<string, Map<string, CryptoKey[]>>();
    for (const k of keys) {
      if (k.kid === undefined) continue;
      let perAlg = byKid.get(k.kid);
      if (!perAlg) byKid.set(k.kid, (perAlg = new Map()));
      for (const [alg, key] of k.byAlg) {
        const list = perAlg.get(alg);
        if (list) list.push(key);
        else perAlg.set(alg, [key]);
      }
    }
    const index = new Map<string, Map<string, KeyLookup>>();
    for (const [kid, perAlg] of byKid) {
      const answers = new Map<string, KeyLookup>();
      for (const [alg, list] of perAlg)
        answers.set(alg, Object.freeze({ kind: "key", keys: Object.freeze(list) }));
      index.set(kid, answers);
    }
    this.keys = keys;
    this.byKid = index;
  }

  private find(kid: string | undefined, alg: string): KeyLookup {
    if (kid !== undefined) return this.byKid.get(kid)?.get(alg) ?? UNKNOWN_KID;
    // No kid: acceptable only when exactly one key of the set fits the algorithm.
    let only: CryptoKey | null = null;
    for (const k of this.keys) {
      const key = k.byAlg.get(alg);
      if (!key) continue;
      if (only) return NO_KID;
      only = key;
    }
    return only ? { kind: "key", keys: [only] } : NO_KID;
  }

  /** One fetch (callers share `inflight`). Failures keep the previous keys. */
  private refresh(): Promise<void> {
    if (this.inflight) return this.inflight;
    this.lastAttemptAt = this.now();
    this.fetches++;
    this.inflight = this.fetchOnce()
      .then(
        ({ keys, ttlMs }) => {
          const previous = this.keys;
          this.setKeys(keys);
          this.loaded = true;
          this.expiresAt = this.now() + ttlMs;
          this.observer.jwksFetch(this.provider, "success");
          const now = new Set(keys.map((k) => k.id));
          if (previous.some((k) => !now.has(k.id))) this.onKeysChanged();
        },
        (err: Error) => {
          if (this.closed) return;
          // A stale set whose refresh failed is tried again no sooner than an unknown kid may cause a fetch:
          // left stale, every token not yet cached would start another fetch as soon as this one failed — a
          // request-paced retry storm against an issuer that is already failing (and a warning per request).
          if (this.loaded)
            this.expiresAt = Math.max(this.expiresAt, this.now() + this.opts.minRefetchIntervalMs);
          this.observer.jwksFetch(this.provider, "failure");
          this.log.warn(
            {
              event: "jwks_fetch_failed",
              provider: this.provider,
              uri: safeUri(this.uri!),
              error: err.message,
            },
            "JWKS fetch failed; the previous keys (if any) stay in use",
          );
        },
      )
      .finally(() => {
        this.inflight = null;
      });
    return this.inflight;
  }

  private async fetchOnce(): Promise<{ keys: KeyEntry[]; ttlMs: number }> {
    const { url, authorization } = this.target!;
    const res = await request(url, {
      method: "GET",
      headers: {
        accept: "application/jwk-set+json, application/json",
        ...(authorization === null ? {} : { authorization }),
      },
      headersTimeout: this.opts.timeoutMs,
      bodyTimeout: this.opts.timeoutMs,
      signal: AbortSignal.any([this.abort.signal, AbortSignal.timeout(this.opts.timeoutMs)]),
    });
    if (res.statusCode !== 200) {
      await res.body.dump();
      throw new Error(`JWKS answered HTTP ${res.statusCode}`);
    }
    const declared = Number(res.headers["content-length"] ?? 0);
    if (declared > this.opts.maxBytes) {
      res.body.destroy();
      throw new Error(`JWKS larger than ${this.opts.maxBytes} bytes`);
    }
    const chunks: Buffer[] = [];
    let size = 0;
    for await (const chunk of res.body) {
      size += (chunk as Buffer).length;
      if (size > this.opts.maxBytes) {
        res.body.destroy();
        throw new Error(`JWKS larger than ${this.opts.maxBytes} bytes`);
      }
      chunks.push(chunk as Buffer);
    }
    let doc: unknown;
    try {
      doc = JSON.parse(Buffer.concat(chunks).toString("utf8"));
    } catch {
      throw new Error("JWKS is not JSON");
    }
    const list = (doc as { keys?: unknown } | null)?.keys;
    if (!Array.isArray(list)) throw new Error('JWKS has no "keys" array');
    // A set that holds no usable key is still the issuer's word: it withdrew the keys it published (the last
    // one of them revoked, or replaced by keys of an algorithm this provider does not pin). Taken as a failed
    // fetch, the withdrawn keys kept verifying for good — every later refresh "failed" the same way — while a
    // withdrawn key beside a usable one stopped at once. The keys become none (tokens get 401) until a
    // refresh finds usable ones.
    const keys = await importKeys(list as Record<string, unknown>[], this.algorithms);
    if (keys.length === 0)
      this.log.error(
        { event: "jwks_unusable", provider: this.provider, uri: safeUri(this.uri!) },
        "no key of the fetched JWKS fits the provider's pinned algorithms: tokens are refused until one does",
      );
    const cc = res.headers["cache-control"];
    return { keys, ttlMs: this.ttlFrom(Array.isArray(cc) ? cc.join(",") : cc) };
  }

  private ttlFrom(cacheControl: string | undefined): number {
    const m = cacheControl ? /(?:^|[,\s])max-age\s*=\s*"?(\d{1,10})"?/i.exec(cacheControl) : null;
    const seconds = m ? Number(m[1]) : null;
    const ttl = seconds === null ? this.opts.ttlMs : seconds * 1000;
    return Math.min(this.opts.maxTtlMs, Math.max(this.opts.minTtlMs, ttl));
  }
}

/** Imports every usable key once per pinned algorithm it fits; unusable keys are skipped. */
async function importKeys(
  list: readonly Record<string, unknown>[],
  algorithms: readonly string[],
): Promise<KeyEntry[]> {
  const out: KeyEntry[] = [];
  for (const raw of list) {
    if (typeof raw !== "object" || raw === null) continue;
    const jwk = raw as JWK & { use?: unknown; key_ops?: unknown };
    if (jwk.kty === "oct" || typeof jwk.kty !== "string") continue;
    if (jwk.use !== undefined && jwk.use !== "sig") continue;
    if (jwk.key_ops !== undefined && !(Array.isArray(jwk.key_ops) && jwk.key_ops.includes("verify")))
      continue;
    if (jwk.kid !== undefined && typeof jwk.kid !== "string") continue;
    const pub: JWK = {};
    for (const m of PUBLIC_MEMBERS) if (typeof jwk[m] === "string") pub[m] = jwk[m] as string;
    const byAlg = new Map<string, CryptoKey>();
    for (const alg of algorithms) {
      if (!FITS[alg]?.(pub) || (jwk.alg !== undefined && jwk.alg !== alg)) continue;
      try {
        const key = await importJWK({ ...pub, alg }, alg);
        if (!(key instanceof Uint8Array)) byAlg.set(alg, key);
      } catch {
        // Malformed key material: unusable for this algorithm.
      }
    }
    // The identity covers every public member and the algorithms the key verifies: a refresh that keeps
    // the material but narrows its algorithms (no `alg` → `alg: PS256`) withdraws the key for the others,
    // so the verifications cached with it under those must go too (onKeysChanged).
    if (byAlg.size)
      out.push({
        kid: jwk.kid,
        byAlg,
        id: JSON.stringify([
          jwk.kid ?? null,
          ...PUBLIC_MEMBERS.map((m) => pub[m] ?? null),
          [...byAlg.keys()].sort(),
        ]),
      });
  }
  return out;
}

interface FetchTarget {
  readonly url: string;
  readonly authorization: string | null;
}

/**
 * How a JWKS URI is fetched. A user and password in it (`https://user:password@idp/jwks`, accepted by the
 * spec like the OTLP endpoint's) are sent as basic auth (RFC 7617), percent-decoded, as Node's http client
 * and curl do — undici's request() drops them silently, so the issuer saw an anonymous request — and
 * never sent in the request target. An unparsable URI is left to fail the fetch (logged without it).
 */
export function fetchTarget(uri: string): FetchTarget {
  let u: URL;
  try {
    u = new URL(uri);
  } catch {
    return { url: uri, authorization: null };
  }
  if (u.username === "" && u.password === "") return { url: uri, authorization: null };
  let credentials: string;
  try {
    credentials = `${decodeURIComponent(u.username)}:${decodeURIComponent(u.password)}`;
  } catch {
    credentials = `${u.username}:${u.password}`; // a stray "%": sent as written, as Node's client does
  }
  u.username = "";
  u.password = "";
  return { url: u.href, authorization: `Basic ${Buffer.from(credentials, "utf8").toString("base64")}` };
}

/** A URI for logs: scheme, host and path only (no userinfo, no query). */
export function safeUri(uri: string): string {
  try {
    const u = new URL(uri);
    return `${u.protocol}//${u.host}${u.pathname}`;
  } catch {
    return "(invalid URI)";
  }
}
