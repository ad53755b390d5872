/** Authentication at the edge: JWT (JWKS), API keys, client certificates, OIDC login; one Authenticator per config. */
export { Authenticator, CLIENT_CERT_CHALLENGE, OIDC_CHALLENGE, PRINCIPAL_HEADERS } from "./authenticator.ts";
export { headerValue } from "../net/headers.ts";
export type { AuthenticatorOptions, AuthnOutcome } from "./authenticator.ts";
export { ApiKeyVerifier, apiKeyHash, MAX_API_KEY_BYTES } from "./apikeys.ts";
export { ClientCertVerifier, clientCertTlsOptions, parseDn, readCaBundle } from "./clientcert.ts";
export { JwksStore, ASYMMETRIC_ALGORITHMS } from "./jwks.ts";
export type { JwksOptions, KeyLookup } from "./jwks.ts";
export {
  JwtVerifier,
  TokenCache,
  decodeToken,
  tokenHash,
  MAX_TOKEN_BYTES,
  MAX_CLOCK_SKEW_MS,
} from "./jwt.ts";
export type { DecodedToken, JwtOptions } from "./jwt.ts";
export { OidcClient, PENDING_LOGIN_MS, RevokedSessions, isLoopbackHost } from "./oidc.ts";
export type { OidcOptions } from "./oidc.ts";
export { parseStrictJson } from "./json.ts";
export { NO_OBSERVER } from "./types.ts";
export type {
  AdmitResult,
  AuthFailure,
  AuthLog,
  AuthObserver,
  AuthRequestFacts,
  AuthResponse,
  TlsPeer,
} from "./types.ts";
export { RequestFacts } from "./facts.ts";
