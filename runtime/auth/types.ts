/**
 * The values the authentication modules exchange with the gateway: the request facts they read, what one
 * mechanism concludes, what the gateway must do (allow with a principal, deny, or write a response such
 * as an OIDC login redirect), and the observer through which the gateway counts it all.
 */
import type { X509Certificate } from "node:crypto";
import type { GatewayRuntimeConfig } from "../contract/schema.ts";
import type { AuthzRequirement, Principal } from "../decide/authorize.ts";

export type JwtProviderConfig = GatewayRuntimeConfig["auth"]["jwt"][number];
export type ApiKeysConfig = NonNullable<GatewayRuntimeConfig["auth"]["apiKeys"]>;
export type ClientCertProviderConfig = GatewayRuntimeConfig["auth"]["clientCert"][number];
export type OidcProviderConfig = GatewayRuntimeConfig["auth"]["oidc"][number];

/**
 * The TLS side of the connection (a `tls.TLSSocket` satisfies it). `authorized` is true when the peer's
 * chain verified against the listener's client CA bundle; the chain is read once per connection.
 */
export interface TlsPeer {
  readonly authorized: boolean;
  readonly authorizationError?: Error | string | null;
  getPeerX509Certificate(): X509Certificate | undefined;
  getPeerCertificate(detailed: true): { raw?: Buffer; issuerCertificate?: unknown } | null;
}

/** What authentication reads of a request (after decide(): the path is canonical). */
export interface AuthRequestFacts {
  readonly method: string;
  /** The canonical path. */
  readonly path: string;
  /** The raw query string, without "?". */
  readonly query: string;
  /** The canonical host (lower-case, no port). */
  readonly host: string;
  /** The Host header / :authority as received (with port), for absolute redirect URIs. */
  readonly authority: string;
  readonly scheme: "http" | "https";
  /** The client address (trusted-hop aware). */
  readonly clientIp: string;
  /**
   * The request came through the gateway's trusted proxies (`clientIp.trustedHops` ≥ 1, or the peer is in
   * `clientIp.trustedProxies`): their X-Forwarded-Proto may decide the external scheme. Absent: false.
   */
  readonly viaTrustedProxy?: boolean;
  /** Header lookup by lower-case name (first value). */
  readonly header: (name: string) => string | undefined;
  /** Raw header name/value pairs, to count repeated credential headers. */
  readonly rawHeaders: readonly string[];
  /** The TLS connection, or null on plaintext listeners. */
  readonly tls: TlsPeer | null;
  /**
   * The connection the request came on (HTTP/1 socket, HTTP/2 session), to remember its last verified
   * token; absent or null: no per-connection memo.
   */
  readonly connection?: object | null;
}

/** A failure of one mechanism, or of the whole authentication. Reasons never contain credentials. */
export interface AuthFailure {
  readonly kind: "failure";
  /** 401: no or bad credentials; 403: authentic but not admitted by the provider (certificate subject); 503: the provider is unreachable (no keys, no discovery). */
  readonly status: 401 | 403 | 503;
  readonly code: "unauthenticated" | "forbidden" | "auth_unavailable";
  readonly mechanism: string;
  readonly reason: string;
  /** RFC 6750 error for Bearer challenges ("invalid_token", "invalid_request"), when one applies. */
  readonly bearerError: "invalid_token" | "invalid_request" | null;
  /**
   * The connection, not the credential, is what no longer holds (a client certificate verified under a CA
   * removed since): the answer closes it, so the client's next request is verified on a new one.
   */
  readonly reconnect?: true;
}

/** A response the gateway writes as is (OIDC: login redirect, callback, logout). */
export interface AuthResponse {
  readonly kind: "respond";
  readonly status: number;
  readonly headers: Readonly<Record<string, string | readonly string[]>>;
  readonly body: string;
  /** Bounded label for logs and metrics ("login_redirect", "callback", "logout", "callback_refused"). */
  readonly event: string;
}

/** The authentication and authorization verdict the gateway acts on. */
export type AdmitResult =
  | { readonly kind: "allow"; readonly principal: Principal | null }
  | {
      readonly kind: "deny";
      readonly status: 401 | 403 | 503;
      readonly code: "unauthenticated" | "forbidden" | "auth_unavailable";
      readonly reason: string;
      /** Bounded label: the authz requirement, or "authentication" / "unavailable". */
      readonly requirement: AuthzRequirement | "unavailable";
      /** Response headers (WWW-Authenticate challenges). */
      readonly headers: Readonly<Record<string, string>>;
      /** The principal that authenticated but was refused by authorization (403), for the access log. */
      readonly principal?: Principal | null;
      /** The answer closes the connection (AuthFailure.reconnect). */
      readonly reconnect?: true;
    }
  | AuthResponse;

/** Counters the gateway keeps (it owns the registry); every label value is bounded. */
export interface AuthObserver {
  /** `meshgate_authn_total{mechanism,result}`; result: success | cached | failure | unavailable. */
  authn(mechanism: string, result: "success" | "cached" | "failure" | "unavailable"): void;
  /** `meshgate_authz_denied_total{route,reason}`; reason: an AuthzRequirement. */
  authzDenied(route: string, reason: string): void;
  /** `meshgate_jwks_fetches_total{provider,outcome}`; outcome: success | failure | not_modified. */
  jwksFetch(provider: string, outcome: "success" | "failure"): void;
}

/** Where the modules log (a pino logger satisfies it). Call sites pass fixed messages and bounded fields. */
export interface AuthLog {
  warn(obj: Record<string, unknown>, msg?: string): void;
  error(obj: Record<string, unknown>, msg?: string): void;
  info(obj: Record<string, unknown>, msg?: string): void;
}

export const NO_OBSERVER: AuthObserver = {
  authn: () => {},
  authzDenied: () => {},
  jwksFetch: () => {},
};

export const failure = (
  mechanism: string,
  reason: string,
  status: AuthFailure["status"] = 401,
  bearerError: AuthFailure["bearerError"] = null,
): AuthFailure => ({
  kind: "failure",
  status,
  code: status === 401 ? "unauthenticated" : status === 403 ? "forbidden" : "auth_unavailable",
  mechanism,
  reason,
  bearerError,
});
