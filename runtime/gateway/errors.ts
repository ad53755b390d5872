/**
 * The codes of the error responses the gateway generates itself, sent as the `x-meshgate-error` header and
 * in the JSON body `{"error":{"code","message"}}`. Stable: clients and dashboards may match on them. The
 * README's table is generated from this catalog.
 */
export const GatewayErrorCatalog = {
  bad_request_target: [
    400,
    "the request target was refused by canonicalization (the message names the rule)",
  ],
  bad_method: [
    400,
    "the method is not an upper-case token (methods are case-sensitive, RFC 9110 §9.1: `get` is not GET; HTTP/1.1 requests with one are refused by the parser, without this code)",
  ],
  bad_host: [400, "the Host header is missing or malformed"],
  duplicate_header: [
    400,
    "a header that must appear once (Host, Content-Length, Authorization, …) appeared twice",
  ],
  ambiguous_header_name: [400, "a header name contains '_' or '.' (refused: some stacks alias them to '-')"],
  bad_transfer_encoding: [
    400,
    "Transfer-Encoding other than exactly 'chunked', or any in an HTTP/1.0 request",
  ],
  bad_json_body: [
    400,
    "the route transforms JSON request bodies and this one is not valid JSON (or its Content-Encoding is not supported)",
  ],
  bad_grpc_web_body: [
    400,
    "a gRPC-Web text call (application/grpc-web-text) to a gRPC service whose body is not base64",
  ],
  bad_upgrade: [
    400,
    "a WebSocket upgrade whose method is not GET (RFC 6455 §4.1: the opening handshake is a GET)",
  ],
  action_unavailable: [
    400,
    "the route's action cannot serve the request (a WebSocket upgrade on a route that does not forward)",
  ],
  http_version_not_supported: [505, "a request line with an HTTP version other than 1.0 or 1.1"],
  unauthenticated: [
    401,
    "the route requires authentication and the request did not authenticate (no or invalid credentials; see WWW-Authenticate)",
  ],
  cors_denied: [
    403,
    "a CORS preflight from an origin, or for a method or header, the route's cors does not allow (sent without CORS headers)",
  ],
  forbidden: [
    403,
    "authenticated, but the route's scopes, claims, consumers, groups, client IP ranges or the certificate provider's subjects do not admit the caller",
  ],
  host_not_served: [404, "the gateway does not serve this host"],
  no_route: [404, "no route matches the method, host and canonical path"],
  static_not_found: [
    404,
    "a static route has no file for the path (also: dotfiles, paths that would leave the root)",
  ],
  method_not_allowed: [405, "routes match the path but not the method (see the Allow header)"],
  request_timeout: [
    408,
    "an HTTP/2 request whose body did not arrive within limits.requestTimeout (the stream is then reset with NO_ERROR; HTTP/1.1 gets a bare 408 and its connection closed)",
  ],
  body_too_large: [413, "the request body exceeds the route's limit"],
  unsupported_media_type: [
    415,
    "the route sets, templates or drops fields of JSON request bodies and this request's body is not JSON (its Content-Type is not application/json or +json, or it has none)",
  ],
  range_not_satisfiable: [
    416,
    "a static file or a cached response was asked for a byte range outside it (Content-Range: bytes */size)",
  ],
  rate_limited: [
    429,
    "the route's rate limit for this client is spent (Retry-After says when to retry; RateLimit-* describe the limit)",
  ],
  internal_error: [500, "an unexpected gateway error (logged with the request id)"],
  upstream_reset: [502, "the upstream closed or reset the connection before a complete response head"],
  upstream_bad_upgrade: [
    502,
    "the upstream answered a WebSocket upgrade with a 101 that is not a WebSocket handshake (Upgrade, Sec-WebSocket-Accept), or with a malformed head: no tunnel",
  ],
  response_too_large: [
    502,
    "the upstream response exceeds the route's limits.maxResponseBytes (a response already started is reset instead)",
  ],
  response_transform_failed: [
    502,
    "the route transforms JSON responses and the upstream's (or the merged aggregate) is not valid JSON or does not decode",
  ],
  aggregate_part_failed: [
    502,
    "an aggregate part with onError: fail failed (non-2xx, not JSON, reset, too large); x-meshgate-part names it",
  ],
  upstream_connect_failure: [503, "no connection to the upstream could be opened"],
  no_healthy_upstream: [503, "the cluster has no endpoints"],
  no_cluster: [503, "the route's backend cluster is not configured"],
  upstream_overflow: [503, "the cluster's circuit breaker is open (max requests or max pending reached)"],
  upstream_identity_unavailable: [
    503,
    "mTLS to the mesh needs a workload identity this gateway does not have",
  ],
  ratelimit_unavailable: [
    503,
    "the rate-limit store (Redis) timed out or failed and is configured to fail closed (Retry-After: 1)",
  ],
  auth_unavailable: [
    503,
    "an identity provider the route depends on is unreachable (JWKS never fetched, OIDC discovery or token endpoint down)",
  ],
  upstream_bad_revalidation: [
    502,
    "the upstream answered the cache's conditional request with a 304 for another representation",
  ],
  upstream_timeout: [504, "the upstream did not answer within the route's timeout"],
  aggregate_part_timeout: [
    504,
    "an aggregate part with onError: fail did not answer within its timeout; x-meshgate-part names it",
  ],
  not_cached: [504, "the request said Cache-Control: only-if-cached and no stored response could answer it"],
  fault_injected: [0, "a fault rule of the route aborted the request (status from the rule)"],
} as const satisfies Record<string, readonly [number, string]>;

export type GatewayErrorCode = keyof typeof GatewayErrorCatalog;
