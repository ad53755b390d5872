/**
 * What the admin listeners' /config shows: the serving config with secrets removed — API-key hashes,
 * credentials in URLs (stores, the OTLP endpoint, JWKS and OIDC URLs), the private members of inline JWKs.
 * Public material (JWKS public keys, issuers) stays, it helps debugging.
 */
import type { GatewayRuntimeConfig, SidecarRuntimeConfig } from "../contract/schema.ts";
import { exposedConfigHash } from "../contract/exposed-hash.ts";

const REDACTED = "[redacted]";

/** The URL with its user and password replaced; as written when it has none (an issuer must stay exact). */
function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    if (!u.username && !u.password) return url;
    u.username = u.username ? REDACTED : "";
    u.password = u.password ? REDACTED : "";
    return u.toString();
  } catch {
    return REDACTED;
  }
}

/**
 * JWK members that are secret (RFC 7518 §6.2.2, §6.3.2, §6.4.1): the private parts of EC, OKP and RSA keys
 * and a symmetric key's `k`. An inline JWKS is meant to hold public keys only, and the runtime verifies
 * with the public members alone — but a key pair pasted whole is accepted, and must not be shown.
 */
const PRIVATE_JWK_MEMBERS = new Set(["d", "p", "q", "dp", "dq", "qi", "oth", "k"]);

/** A JWK without its secret members: what translate writes into a RuntimeConfig (the runtime verifies with the rest). */
export function publicJwk(jwk: Record<string, unknown>): Record<string, unknown> {
  return Object.fromEntries(Object.entries(jwk).filter(([k]) => !PRIVATE_JWK_MEMBERS.has(k)));
}

function redactJwk(jwk: Record<string, unknown>): Record<string, unknown> {
  return Object.fromEntries(
    Object.entries(jwk).map(([k, v]) => [k, PRIVATE_JWK_MEMBERS.has(k) ? REDACTED : v]),
  );
}

/** The telemetry settings without the OTLP endpoint's credentials (`https://user:token@…`: basic auth). */
function redactTelemetry<T extends GatewayRuntimeConfig["telemetry"]>(telemetry: T): T {
  const endpoint = telemetry.tracing.otlpEndpoint;
  return endpoint === null
    ? telemetry
    : { ...telemetry, tracing: { ...telemetry.tracing, otlpEndpoint: redactUrl(endpoint) } };
}

/** What the sidecar's /config shows: its config without the OTLP endpoint's credentials. */
export function redactSidecarConfig(config: SidecarRuntimeConfig): SidecarRuntimeConfig {
  return { ...config, hash: exposedConfigHash(config), telemetry: redactTelemetry(config.telemetry) };
}

export function redactConfig(config: GatewayRuntimeConfig): unknown {
  return {
    ...config,
    hash: exposedConfigHash(config),
    telemetry: redactTelemetry(config.telemetry),
    auth: {
      ...config.auth,
      jwt: config.auth.jwt.map((p) => ({
        ...p,
        jwksUri: p.jwksUri === null ? null : redactUrl(p.jwksUri),
        jwks: p.jwks && { ...p.jwks, keys: p.jwks.keys.map(redactJwk) },
      })),
      oidc: config.auth.oidc.map((p) => ({ ...p, issuer: redactUrl(p.issuer) })),
      apiKeys: config.auth.apiKeys && {
        ...config.auth.apiKeys,
        consumers: config.auth.apiKeys.consumers.map((c) => ({
          ...c,
          keyHashes: c.keyHashes.map(() => REDACTED),
        })),
      },
    },
    rateLimitStore:
      config.rateLimitStore.kind === "redis"
        ? { ...config.rateLimitStore, url: redactUrl(config.rateLimitStore.url) }
        : config.rateLimitStore,
    cacheStore:
      config.cacheStore.kind === "redis"
        ? { ...config.cacheStore, url: redactUrl(config.cacheStore.url) }
        : config.cacheStore,
  };
}
