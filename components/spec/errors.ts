/**
 * The spec layer's catalog: every error (E_SPEC_*) and warning (W_SPEC_*) that loading, validating or
 * translating a spec can report. Codes are stable; messages may improve. The README's table is checked
 * against this catalog (test/docs/error-catalog.test.ts), so a new code cannot ship undocumented.
 */
export const SpecErrorCatalog = {
  // Loading
  E_SPEC_FILE_NOT_FOUND: "the spec file does not exist or cannot be read",
  E_SPEC_FILE_TYPE: "the spec file's extension is not .yaml, .yml, .json, .ts, .mts, .js or .mjs",
  E_SPEC_YAML_SYNTAX: "the YAML (or JSON) text does not parse; the message gives line and column",
  E_SPEC_DUPLICATE_KEY: "a mapping has the same key twice (YAML would silently keep the last one)",
  E_SPEC_MODULE_LOAD: "the TypeScript/JavaScript spec module threw while loading",
  E_SPEC_MODULE_EXPORT: "the spec module's default export is not a defineMesh({...}) value",
  // Structure
  E_SPEC_UNKNOWN_KEY: "a key the spec does not define (typo, or a field at the wrong level)",
  E_SPEC_MISSING_FIELD: "a required field is missing",
  E_SPEC_INVALID_TYPE: "a value has the wrong type (string where a list is expected, …)",
  E_SPEC_INVALID_VALUE: "a value is not one of the allowed choices",
  E_SPEC_OUT_OF_RANGE: "a number, duration, size or list length is outside its allowed range",
  E_SPEC_INVALID_DURATION: 'a duration is not a human string such as "500ms", "2s", "1m30s"',
  E_SPEC_INVALID_SIZE: 'a size is not a human string such as "16KiB" or "1MiB"',
  E_SPEC_INVALID_NAME: "a name is not a DNS label (lower-case letters, digits and '-', at most 63)",
  E_SPEC_RESERVED_NAME: "a service uses a name meshgate reserves (gateway, internet)",
  E_SPEC_INVALID_HOST: "a host name is not a valid DNS name (optionally starting with '*.')",
  E_SPEC_INVALID_TRUST_DOMAIN:
    "the trust domain breaks the SPIFFE rules (lower-case [a-z0-9._-], at most 255)",
  E_SPEC_INVALID_PATH_PATTERN:
    "a path pattern is malformed (must start with '/', no '//', '.', '..', '%', '?', '#')",
  E_SPEC_INVALID_REGEX: "a regular expression does not compile",
  E_SPEC_INVALID_CIDR: "an IP range is not a valid IPv4/IPv6 CIDR",
  E_SPEC_INVALID_URL: "a URL is malformed or uses a scheme that is not allowed here",
  E_SPEC_INVALID_IMAGE: "a container image reference is malformed or not pinned (tag or digest required)",
  E_SPEC_INVALID_KEY_HASH: 'an API-key hash is not "sha256:<64 hex digits>" (keys are never stored in clear)',
  E_SPEC_DUPLICATE_NAME: "two items of a list share a name (or a mount path) that must be unique",
  E_SPEC_DUPLICATE_PORT:
    "two listeners (or a listener and the admin port) use the same port, or two services or destinations pin the same localPort",
  E_SPEC_LOCAL_PORT:
    "a localPort on an external destination that is a wildcard or an address range (it has no local port)",
  // Meaning
  E_SPEC_UNKNOWN_REFERENCE: "a name refers to a service, route, provider or consumer that is not defined",
  E_SPEC_SELF_REFERENCE: "a service lists itself in calls or allow.from",
  E_SPEC_ROUTE_WITHOUT_AUTH: "a gateway route has no auth and does not say public: true",
  E_SPEC_ROUTE_AUTH_AND_PUBLIC: "a gateway route has auth and also says public: true",
  E_SPEC_ROUTE_ACTION: "a gateway route needs exactly one of to, split, redirect, aggregate, static",
  E_SPEC_EXTERNAL_ROUTE:
    "a gateway route forwards to an external destination that is a wildcard or an address range (no one host), or whose allow rules do not name gateway",
  E_SPEC_ROUTE_MIRROR: "mirror is only allowed beside to or split, and not to the route's own backend",
  E_SPEC_SPLIT_WEIGHTS: "the weights of a split do not add up to 100",
  E_SPEC_REWRITE_PARAM: "a rewrite uses a {param} that the route's path pattern does not capture",
  E_SPEC_AUTH_REQUIREMENT:
    "an auth requirement cannot be met by the route's mechanisms (scopes/claims without jwt, …)",
  E_SPEC_JWT_ALGORITHM:
    "a JWT provider allows an algorithm that is not pinned asymmetric (none and HS* are refused)",
  E_SPEC_JWT_KEYS: "a JWT provider needs exactly one of jwksUri or jwks",
  E_SPEC_TLS_CONFIG: "an https listener has no certificates, or an http listener has tls",
  E_SPEC_PROXY_PROTOCOL: "a listener names proxyProtocolSources but does not set proxyProtocol: true",
  E_SPEC_CLIENT_IP:
    "gateway.clientIp sets both trustedHops (above 0) and trustedProxies: the client address is found one way or the other",
  E_SPEC_LIMIT_TOO_LOOSE:
    "a safety limit is looser than meshgate allows (header timeout > 15s, clock skew > 5m, …)",
  E_SPEC_RETRY_TIMEOUT: "the per-try timeout is longer than the total timeout it must fit in",
  E_SPEC_GATEWAY_TIMEOUTS:
    "gateway.limits: a header, request or idle timeout of 0s (which would turn it off), or a request timeout shorter than the header timeout",
  E_SPEC_CA_LIFETIMES:
    "certificate lifetimes are inconsistent (leaf outlives intermediate, renewBefore ≥ TTL, …)",
  E_SPEC_SLO_TARGET: "an SLO names both or neither of route and service",
  E_SPEC_SLO_LATENCY_BUCKET:
    "an SLO's latencyP99 is not a bucket boundary of meshgate_request_duration_seconds (the share of slower requests could not be counted exactly)",
  E_SPEC_RESERVED_HEADER:
    "a transform or an aggregate part's forwardHeaders names a header the gateway owns (hop-by-hop, X-Forwarded-*, X-Request-Id, x-meshgate-*, principal headers, Content-Length, Host), or a rate limit is keyed by one the client writes and the gateway drops or replaces (X-Forwarded-*, Forwarded, X-Real-IP, X-Request-Id)",
  E_SPEC_AMBIGUOUS_HEADER_NAME:
    'a header the gateway reads from clients (a route\'s header condition, CORS request headers, a rate-limit key, an aggregate part\'s forwardHeaders, the API-key or token header) is named with "_" or ".": the gateway refuses every request carrying such a name (400 ambiguous_header_name), so it could never arrive',
  E_SPEC_INVALID_TEMPLATE:
    "a transform template or JSON field path is malformed (unknown variable, unclosed `${`, a `__proto__`, `constructor` or `prototype` segment)",
  // Warnings (non-fatal diagnostics from translate)
  W_SPEC_CALL_NOT_ALLOWED:
    "a declared call (or a gateway route) targets a service whose allow rules deny the caller",
  W_SPEC_ALLOW_WITHOUT_CALL: "an allow rule names a peer that never declares a call to this service",
  W_SPEC_SHARE_WITHOUT_ROUTE:
    "an external destination's share names what the gateway tells it about clients, but no gateway route forwards to it (share has no effect)",
  W_SPEC_MTLS_PERMISSIVE: "mTLS is permissive: plaintext is accepted (for migrations only)",
  W_SPEC_UNREACHABLE_SERVICE: "no allow rule admits any caller, so the service can receive no traffic",
  W_SPEC_RETRY_UNSAFE_METHOD:
    "retries are set on a route that only accepts non-idempotent methods; they apply only to bytes never sent",
  W_SPEC_SPLIT_TIMEOUTS:
    "a split's entries have different timeouts and the route sets none: every request gets the heaviest entry's, which changes with the weights",
  W_SPEC_PUBLIC_ROUTE_UNLIMITED: "a public route has no rate limit",
  W_SPEC_PROXY_PROTOCOL_ANY_SOURCE:
    "a PROXY-protocol listener takes the header from any source: whoever reaches the port can name any client address",
  W_SPEC_AUTH_MECHANISM_UNCONSTRAINED:
    "a route's scopes/claims constrain only token callers (JWT, OIDC) and its consumers/groups only API-key callers: another mechanism the route accepts is admitted without them",
  W_SPEC_SLO_WINDOW_BEYOND_RETENTION:
    "an SLO's window is longer than the metrics retention: its error budget and burn are read over the retention only, and an older outage is forgotten",
  W_SPEC_RATE_LIMIT_REPLICA_FLOOR:
    "a fleet rate limit divided over the replicas (no Redis) leaves each replica less than one token of burst; each allows one",
} as const;

export type SpecCode = keyof typeof SpecErrorCatalog;
export type SpecErrorCode = Extract<SpecCode, `E_${string}`>;
export type SpecWarningCode = Extract<SpecCode, `W_${string}`>;

/** One problem with a spec: stable code, dotted path, message, and how to fix it. */
export interface SpecError {
  code: SpecErrorCode;
  /** Dotted path into the spec (`services.orders.allow[0].from[0]`), "" for the whole document. */
  path: string;
  message: string;
  hint: string;
  /** 1-based position in the source file, when the spec came from YAML/JSON text. */
  line?: number;
  column?: number;
}

/** A non-fatal finding of translate: the spec is valid but probably not what was meant. */
export interface Diagnostic {
  code: SpecWarningCode;
  severity: "warning" | "info";
  path: string;
  message: string;
  hint: string;
}

/** Thrown by APIs that need a valid spec (defineMesh, the Pulumi components); carries every error. */
export class SpecValidationError extends Error {
  readonly errors: readonly SpecError[];
  constructor(errors: readonly SpecError[], source?: string) {
    super(
      `${source ? `${source}: ` : ""}invalid mesh spec (${errors.length} error${errors.length === 1 ? "" : "s"}):\n` +
        errors.map((e) => `  ${formatSpecError(e)}`).join("\n"),
    );
    this.name = "SpecValidationError";
    this.errors = errors;
  }
}

export function formatSpecError(e: SpecError, file?: string): string {
  const where = file
    ? `${file}${e.line ? `:${e.line}:${e.column}` : ""}: `
    : e.line
      ? `${e.line}:${e.column}: `
      : "";
  return `${where}${e.path ? `${e.path}: ` : ""}${e.message} [${e.code}]${e.hint ? `\n    fix: ${e.hint}` : ""}`;
}

/** Formats a path array from zod or our own walkers as `a.b[0].c`. */
export function formatPath(path: ReadonlyArray<PropertyKey>): string {
  let out = "";
  for (const p of path) {
    if (typeof p === "number") out += `[${p}]`;
    else out += out ? `.${String(p)}` : String(p);
  }
  return out;
}
