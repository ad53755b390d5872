/**
 * What the admin listeners' /config shows: the serving config with secrets removed — API-key hashes,
 * credentials in URLs (stores, the OTLP endpoint, JWKS and OIDC URLs), the private members of inline JWKs.
 * Public material (JWKS public keys, issuers) stays, it helps debugging.
 */
import type { GatewayRuntimeConfig, SidecarRuntimeConfig } from "../contract/schema.ts";
import { exposedConfigHash, mapCredentialUrls } from "../contract/exposed-hash.ts";

/** What stands for a secret value in /config and in access lines. */
export const REDACTED = "[redacted]";

/**
 * A header name that carries a credential by convention — a word auth, authentication, authorization,
 * token, key, apikey, secret, password, passwd, session, sessionid, cookie, credential(s), signature or
 * jwt, between `-`, `_` or `.` (`x-api-key`, `x-auth-token`, `x-amz-security-token`, `x-session-id`, and
 * Swagger's `api_key`, `access_token`, `x-authentication`): a route may test one that its service checks
 * itself, and the access line then shows it present, never its value. (The gateway refuses a request
 * with `_` or `.` in a header name, ambiguous_header_name — and logs the line all the same.)
 */
export function credentialHeaderName(name: string): boolean {
  return CREDENTIAL_WORD.test(name);
}
const CREDENTIAL_WORD =
  /(?:^|[-_.])(?:auth|authentication|authorization|token|key|apikey|secret|password|passwd|session|sessionid|cookie|credentials?|signature|jwt)(?:[-_.]|$)/i;

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

/** What the sidecar's /config shows: its config without the OTLP endpoint's credentials. */
export function redactSidecarConfig(config: SidecarRuntimeConfig): SidecarRuntimeConfig {
  return { ...mapCredentialUrls(config, redactUrl), hash: exposedConfigHash(config) };
}

export function redactConfig(config: GatewayRuntimeConfig): unknown {
  const redacted = mapCredentialUrls(config, redactUrl);
  return {
    ...redacted,
    hash: exposedConfigHash(config),
    auth: {
      ...redacted.auth,
      jwt: redacted.auth.jwt.map((p) => ({
        ...p,
        jwks: p.jwks && { ...p.jwks, keys: p.jwks.keys.map(redactJwk) },
      })),
      apiKeys: redacted.auth.apiKeys && {
        ...redacted.auth.apiKeys,
        consumers: redacted.auth.apiKeys.consumers.map((c) => ({
          ...c,
          keyHashes: c.keyHashes.map(() => REDACTED),
        })),
      },
    },
  };
}
