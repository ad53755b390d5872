/**
 * The config hash a proxy shows: in `meshgate_config_info{hash}`, in its start, reload and worker log
 * lines, in `POST /reload`'s answer and in `/config`.
 *
 * The sealed hash (`hash` in the file) is an unsalted SHA-256 over the whole config. For a config that
 * holds a credential — a user or password in a URL (Redis stores, the OTLP endpoint, JWKS and OIDC
 * URLs) — that makes it a guessing oracle: whoever reads a metric or a log line, and knows or guesses the
 * rest of the config, can test password guesses offline. (API-key hashes are no such secret: the spec
 * holds them as written, in the repository, and a key is a random token, not a guessable password.) So:
 *
 * - a config without credentials shows its sealed hash, as before (equal on every replica, and to the
 *   `meshgate.io/config-hash` annotation and Docker label);
 * - a config with credentials shows `hmac-sha256:` + HMAC-SHA256(process key, sealed hash). It changes
 *   whenever anything changes, a credential alone included (a reload that took effect is still visible),
 *   but without the key, 32 random bytes drawn when the process starts and never shown, it tells nothing
 *   about the credential. A gateway's workers take their primary's key, so one gateway shows one value;
 *   replicas (and restarts) show different values for the same config — compare replicas by the
 *   config-hash annotation.
 */
import { createHmac, randomBytes } from "node:crypto";

/** The environment variable a gateway primary hands its key to its workers in (hex). */
export const CONFIG_HASH_KEY_ENV = "MESHGATE_CONFIG_HASH_KEY";

const inherited = process.env[CONFIG_HASH_KEY_ENV];
const KEY: Buffer =
  inherited && /^[0-9a-f]{64}$/.test(inherited) ? Buffer.from(inherited, "hex") : randomBytes(32);

/** This process's key, hex, for the workers it forks (never logged or served). */
export function configHashKeyHex(): string {
  return KEY.toString("hex");
}

/** Whether a URL carries a user or password (an unparsable one with an `@` is assumed to). */
export function urlHoldsCredentials(url: string | null | undefined): boolean {
  if (!url) return false;
  try {
    const u = new URL(url);
    return u.username !== "" || u.password !== "";
  } catch {
    return /@/.test(url); // unparsable: assume the worst
  }
}

export interface ConfigWithSecrets {
  readonly hash: string;
  readonly telemetry?: { readonly tracing?: { readonly otlpEndpoint?: string | null } };
  readonly rateLimitStore?: { readonly kind: string; readonly url?: string };
  readonly cacheStore?: { readonly kind: string; readonly url?: string };
  readonly auth?: {
    readonly jwt?: readonly { readonly jwksUri?: string | null }[];
    readonly oidc?: readonly { readonly issuer?: string }[];
  };
}

/**
 * The config with each URL that may carry a credential — the OTLP endpoint, the Redis stores', the JWKS
 * and OIDC URLs — replaced by `f(url)`, the rest as it is. The one list of those fields: whether a config
 * holds secrets, what /config redacts and what the Kubernetes config-hash annotation hashes all go
 * through it, so a URL field added here is handled everywhere.
 */
export function mapCredentialUrls<T extends ConfigWithSecrets>(config: T, f: (url: string) => string): T {
  const c: ConfigWithSecrets = config;
  const out: Record<string, unknown> = { ...c };
  const tracing = c.telemetry?.tracing;
  if (typeof tracing?.otlpEndpoint === "string")
    out.telemetry = { ...c.telemetry, tracing: { ...tracing, otlpEndpoint: f(tracing.otlpEndpoint) } };
  for (const store of ["rateLimitStore", "cacheStore"] as const) {
    const s = c[store];
    if (typeof s?.url === "string") out[store] = { ...s, url: f(s.url) };
  }
  const auth = c.auth;
  if (auth)
    out.auth = {
      ...auth,
      ...(auth.jwt && {
        jwt: auth.jwt.map((p) => (typeof p.jwksUri === "string" ? { ...p, jwksUri: f(p.jwksUri) } : p)),
      }),
      ...(auth.oidc && {
        oidc: auth.oidc.map((p) => (typeof p.issuer === "string" ? { ...p, issuer: f(p.issuer) } : p)),
      }),
    };
  return out as T;
}

/** Whether the config holds a credential in a URL (what /config redacts from them): then its sealed hash is not shown. */
export function configHoldsSecrets(config: ConfigWithSecrets): boolean {
  let holds = false;
  mapCredentialUrls(config, (url) => {
    holds ||= urlHoldsCredentials(url);
    return url;
  });
  return holds;
}

const cache = new WeakMap<object, string>();

/** The hash to show for a config (see above); computed once per config object. */
export function exposedConfigHash(config: ConfigWithSecrets): string {
  let h = cache.get(config);
  if (h === undefined) {
    h = configHoldsSecrets(config) ? maskConfigHash(config.hash) : config.hash;
    cache.set(config, h);
  }
  return h;
}

/** A sealed hash made unusable as a guessing oracle: HMAC-SHA256 under this process's key. */
export function maskConfigHash(sealed: string): string {
  return `hmac-sha256:${createHmac("sha256", KEY).update(sealed).digest("hex")}`;
}

/** A reload's answer as `POST /reload` shows it: the serving config's shown hash, or a masked one. */
export function exposedReloadResult<R extends { readonly ok: boolean }>(
  result: R,
  serving: ConfigWithSecrets,
): R {
  const hash = (result as { readonly hash?: unknown }).hash;
  if (typeof hash !== "string") return result;
  return { ...result, hash: hash === serving.hash ? exposedConfigHash(serving) : maskConfigHash(hash) };
}
