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
  http_version_not_supported: [505, "a request line with an HTTP version other than 1.0 or 1.1"],
  unauthenticated: [
    401,
    "the route requires authentication and the request did not authenticate (no or invalid credentials; see WWW-Authenticate)",
  ],
  forbidden: [
    403,
    "authenticated, but the route's scopes, claims, consumers, groups, client IP ranges or the certificate provider's subjects do not admit the caller",
  ],
  host_not_served: [404, "the gateway does not serve this host"],
  no_route: [404, "no route matches the method, host and canonical path"],
  method_not_allowed: [405, "routes match the path but not the method (see the Allow header)"],
  body_too_large: [413, "the request body exceeds the route's limit"],
  internal_error: [500, "an unexpected gateway error (logged with the request id)"],
  action_unavailable: [501, "the route's action (aggregate, static) is not served by this runtime version"],
  upstream_reset: [502, "the upstream closed or reset the connection before a complete response head"],
  upstream_connect_failure: [503, "no connection to the upstream could be opened"],
  no_healthy_upstream: [503, "the cluster has no endpoints"],
  no_cluster: [503, "the route's backend cluster is not configured"],
  upstream_overflow: [503, "the cluster's circuit breaker is open (max requests or max pending reached)"],
  upstream_identity_unavailable: [
    503,
    "mTLS to the mesh needs a workload identity this gateway does not have",
  ],
  auth_unavailable: [
    503,
    "an identity provider the route depends on is unreachable (JWKS never fetched, OIDC discovery or token endpoint down)",
  ],
  upstream_timeout: [504, "the upstream did not answer within the route's timeout"],
  fault_injected: [0, "a fault rule of the route aborted the request (status from the rule)"],
} as const satisfies Record<string, readonly [number, string]>;

export type GatewayErrorCode = keyof typeof GatewayErrorCatalog;
