/**
 * The codes of the error responses a sidecar generates itself, sent as `x-meshgate-error` and in the JSON
 * body `{"error":{"code","message"}}`; inbound authorization denials also carry `x-meshgate-denied:
 * <reason>` (the decideInbound code). Stable: apps, dashboards and runbooks may match on them.
 * docs/sidecar.md lists them (a test keeps the two in sync).
 */
export const SidecarErrorCatalog = {
  bad_request_target: [
    400,
    "the request target was refused by canonicalization (the message names the rule)",
  ],
  bad_host: [400, "the Host header is missing or malformed (outbound: it names no service)"],
  duplicate_header: [400, "a header that must appear once (Host, Content-Length, …) appeared twice"],
  ambiguous_header_name: [400, "a header name contains '_' or '.'"],
  bad_transfer_encoding: [
    400,
    "Transfer-Encoding other than exactly 'chunked', or any in an HTTP/1.0 request",
  ],
  bad_upgrade: [
    400,
    "a WebSocket upgrade whose method is not GET (RFC 6455 §4.1: the opening handshake is a GET)",
  ],
  unsupported_scheme: [
    400,
    "outbound: an https:// target; the app speaks plain HTTP to its sidecar, which originates mTLS",
  ],
  egress_bad_authority: [
    400,
    "outbound: a CONNECT target that is not host:port (a DNS name, an IPv4 address or [an IPv6 address], port 1–65535)",
  ],
  authz_denied: [
    403,
    "inbound: deny by default — no allow rule admits the peer, method and path (x-meshgate-denied says why)",
  ],
  destination_not_declared: [
    403,
    "outbound: the destination is not a service this one declares in `calls` (fail closed)",
  ],
  egress_denied: [
    403,
    "outbound: a CONNECT to a host and port no declared external destination names (deny by default; nothing is connected)",
  ],
  browser_request: [
    403,
    "outbound: a request from a browser page (an Origin header, or Sec-Fetch-Site other than same-origin or none): the outbound ports serve the app only",
  ],
  request_timeout: [408, "the request head did not arrive within the service's header timeout"],
  body_too_large: [413, "inbound: the request body exceeds the service's limits.maxBodySize"],
  misdirected_request: [
    421,
    "outbound: a service's local port got a Host that names neither the loopback (127.0.0.0/8, localhost, [::1]) nor that service (DNS rebinding)",
  ],
  headers_too_large: [431, "the request head exceeds the service's limits.maxHeaderSize"],
  internal_error: [500, "an unexpected sidecar error (logged with the request id)"],
  upstream_reset: [
    502,
    "the upstream (peer sidecar or app) closed or reset the connection before a complete response head",
  ],
  upstream_bad_upgrade: [
    502,
    "the upstream answered a WebSocket upgrade with a 101 that is not a WebSocket handshake (Upgrade, Sec-WebSocket-Accept), or with a malformed head: no tunnel",
  ],
  egress_connect_failed: [
    502,
    "outbound: the connection to a declared external destination failed (refused, unreachable, or its name did not resolve)",
  ],
  upstream_connect_failure: [
    503,
    "no connection to the upstream could be opened (outbound: includes failed mTLS handshakes, a wrong server identity, and an external destination whose certificate does not verify when the sidecar originates TLS)",
  ],
  no_healthy_upstream: [503, "the destination has no available endpoint"],
  upstream_overflow: [503, "the destination's circuit breaker is open (max requests or max pending reached)"],
  egress_overflow: [
    503,
    "outbound: a CONNECT to an external destination that already has its maxConnections of tunnels and local-port relays from this sidecar (nothing is connected)",
  ],
  upstream_identity_unavailable: [
    503,
    "outbound: no valid identity is loaded (not yet, or expired), so no mTLS connection can be opened",
  ],
  upstream_timeout: [504, "the upstream did not answer within the route's timeout"],
  egress_connect_timeout: [
    504,
    "outbound: no connection to a declared external destination within its connectTimeoutMs",
  ],
  http_version_not_supported: [505, "a request line with an HTTP version other than 1.0 or 1.1"],
} as const satisfies Record<string, readonly [number, string]>;

export type SidecarErrorCode = keyof typeof SidecarErrorCatalog;
