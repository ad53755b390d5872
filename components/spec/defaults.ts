/**
 * Every default of the spec, in one table, each with the reason it was chosen. The zod schema reads its
 * `.default(...)` values from here and the README's defaults table is generated from here, so the two
 * cannot drift. Security-relevant defaults fail closed.
 */

interface DefaultEntry<T> {
  readonly value: T;
  readonly reason: string;
}
const d = <const T>(value: T, reason: string): DefaultEntry<T> => ({ value, reason });

export const DEFAULTS = {
  namespace: d("<name>", "one namespace per mesh keeps identities and NetworkPolicies simple"),
  "mesh.mtls": d(
    "strict",
    "fail closed: every hop is authenticated and encrypted; permissive is for migrations",
  ),
  "mesh.ca.provider": d("meshgate", "the mesh generates its own CA; cert-manager is opt-in"),
  "mesh.ca.rootValidity": d("10y", "roots rotate rarely and in stages; a long life avoids surprise expiry"),
  "mesh.ca.intermediateValidity": d(
    "1y",
    "intermediates sign every leaf; a year bounds the damage of a leaked issuer key",
  ),
  "mesh.ca.workloadTtl": d(
    "24h",
    "short-lived SVIDs make revocation unnecessary (Istio and Linkerd use 24h)",
  ),
  "mesh.ca.renewBefore": d(
    "8h",
    "renew with a third of the lifetime left, so a failed renewal has hours to recover",
  ),
  "mesh.ca.clockSkew": d(
    "5m",
    "backdate notBefore so peers with slightly slow clocks accept new certificates",
  ),
  "mesh.defaults.timeout": d("2s", "a bounded total time per call stops slow calls from piling up"),
  "mesh.defaults.connectTimeout": d(
    "1s",
    "loopback and in-cluster connects take milliseconds; fail fast to retry elsewhere",
  ),
  "mesh.defaults.retries.attempts": d(2, "two retries absorb a restarting pod without multiplying load"),
  "mesh.defaults.retries.perTryTimeout": d("500ms", "leaves room for the retries inside the 2s total"),
  "mesh.defaults.retries.on": d(
    ["connect-failure", "refused-stream", "reset", "503"],
    "only failures where a retry can help; never 500, which is usually a bug that repeats",
  ),
  "mesh.defaults.retries.backoff.base": d(
    "25ms",
    "jittered exponential backoff from 25ms spreads retries out",
  ),
  "mesh.defaults.retries.backoff.max": d(
    "250ms",
    "caps the backoff so retries still fit the per-call timeout",
  ),
  "mesh.defaults.retries.budget.ratio": d(0.2, "retries may add at most 20% load (Linkerd/Finagle budget)"),
  "mesh.defaults.retries.budget.minPerSecond": d(10, "low-traffic services can still retry a few requests"),
  "mesh.defaults.circuitBreaker.maxConnections": d(1024, "Envoy's default; bounds sockets per upstream"),
  "mesh.defaults.circuitBreaker.maxPendingRequests": d(
    1024,
    "Envoy's default; queued requests beyond it fail fast",
  ),
  "mesh.defaults.circuitBreaker.maxRequests": d(
    1024,
    "Envoy's default; bounds concurrent requests per upstream",
  ),
  "mesh.defaults.circuitBreaker.consecutive5xx": d(5, "Envoy's outlier-detection default"),
  "mesh.defaults.circuitBreaker.interval": d("10s", "Envoy's outlier-detection sweep interval"),
  "mesh.defaults.circuitBreaker.baseEjection": d(
    "30s",
    "Envoy's default; grows with each repeated ejection, up to 300 s (Envoy's max_ejection_time)",
  ),
  "mesh.defaults.circuitBreaker.maxEjectedPercent": d(
    10,
    "never eject most of a service because of a shared fault",
  ),
  "mesh.defaults.circuitBreaker.panicThreshold": d(
    50,
    "Envoy's healthy_panic_threshold: with fewer endpoints available, balance across all of them",
  ),
  "mesh.defaults.loadBalancer": d(
    "least-request",
    "P2C least-request beats round-robin under uneven latency",
  ),
  "external.*.share.identity": d(
    false,
    "a third party the gateway forwards to sees no consumer identity (principal headers, forwarded claims) unless you opt in",
  ),
  "external.*.share.clientAddress": d(
    false,
    "a third party the gateway forwards to sees no client IP addresses (X-Forwarded-For, Forwarded, X-Real-IP) unless you opt in",
  ),
  "services.*.protocol": d("http", "HTTP/1.1 is what most apps speak; set http2 or grpc explicitly"),
  "services.*.replicas": d(1, "scale explicitly; one replica is the cheapest working default"),
  "services.*.calls": d([], "no declared dependencies until you list them"),
  "services.*.allow": d([], "deny by default: no caller is allowed until a rule names it"),
  "services.*.limits.maxHeaderSize": d("16KiB", "the sidecar answers 431 above it, as the gateway does"),
  "services.*.limits.maxBodySize": d(
    "1MiB",
    "the sidecar answers 413 above it; raise it for upload services",
  ),
  "services.*.limits.headerTimeout": d(
    "10s",
    "slowloris defence inside the mesh too; meshgate refuses more than 15s",
  ),
  "gateway.replicas": d(2, "two replicas survive a node drain"),
  "gateway.listeners": d(
    [{ name: "http", port: 8080, protocol: "http" }],
    "plain HTTP on 8080 behind a TLS-terminating load balancer",
  ),
  "gateway.listeners.*.http2": d(true, "h2 over TLS (ALPN) or h2c with prior knowledge, next to HTTP/1.1"),
  "gateway.listeners.*.proxyProtocol": d(
    false,
    "a PROXY header is accepted only where a load balancer is configured to send one: anyone else reaching the port could name any address",
  ),
  "gateway.listeners.*.tls.minVersion": d("TLSv1.2", "TLS 1.2+ only; 1.0/1.1 are deprecated (RFC 8996)"),
  "gateway.clientIp.trustedHops": d(
    0,
    "X-Forwarded-For is spoofable: trust no hop unless you say how many proxies are in front",
  ),
  "gateway.clientIp.header": d(
    "x-forwarded-for" as "x-forwarded-for" | "forwarded",
    "what most load balancers append to; only the header your trusted proxies maintain may be read",
  ),
  "gateway.limits.maxHeaderSize": d("16KiB", "larger headers are almost always abuse; answered 431"),
  "gateway.limits.maxBodySize": d(
    "1MiB",
    "bodies over the limit are refused with 413 before they are buffered",
  ),
  "gateway.limits.headerTimeout": d("10s", "slowloris defence; meshgate refuses more than 15s"),
  "gateway.limits.requestTimeout": d("60s", "bounds slow uploads; routes set their own upstream timeouts"),
  "gateway.limits.idleTimeout": d(
    "60s",
    "keep-alive connections are closed after a minute of silence; a response its client reads none of for as long is cut (nginx's send_timeout)",
  ),
  "gateway.limits.maxConnections": d(10000, "bounds file descriptors and memory per gateway process"),
  "gateway.limits.drainTimeout": d(
    "30s",
    "SIGTERM waits this long for in-flight requests (Kubernetes' grace period)",
  ),
  "gateway.jwt.*.clockSkew": d("30s", "tolerates small clock differences; meshgate refuses more than 5m"),
  "gateway.jwt.*.tokenFrom": d(
    { header: "authorization", prefix: "Bearer " },
    "RFC 6750 bearer tokens; query strings only when configured",
  ),
  "gateway.apiKeys.header": d("x-api-key", "the common convention (Kong, AWS API Gateway)"),
  "gateway.oidc.*.sessionTtl": d("8h", "a working day; the session cookie is HttpOnly, Secure, SameSite=Lax"),
  "gateway.cache.maxSize": d(
    "64MiB",
    "bounded LRU memory per gateway process; with Redis, the budget of the shared store",
  ),
  "gateway.cache.redis.timeout": d(
    "100ms",
    "a lookup Redis does not answer in time is a miss: the origin answers instead",
  ),
  "gateway.cache.redis.localSize": d(
    "16MiB",
    "each gateway process keeps the Redis entries it reads, kept coherent by Redis' client tracking (announced changes drop them; off while the announcements cannot arrive): repeated hits need no round trip; 0B turns it off",
  ),
  "gateway.routes.*.timeout": d(
    "<service timeout>",
    "the target service's route policy for the upstream path and methods, else its timeout, else mesh.defaults.timeout",
  ),
  "gateway.routes.*.retries": d(
    "<service retries>",
    "the target service's route policy for the upstream path and methods, else its retries, else mesh.defaults.retries",
  ),
  "gateway.routes.*.limits.maxBodySize": d("<gateway.limits.maxBodySize>", "the gateway-wide body limit"),
  "gateway.routes.*.limits.maxResponseSize": d(
    "1MiB",
    "applies where the gateway buffers a response (aggregate parts, response body transforms); streamed responses are not limited unless set",
  ),
  "gateway.routes.*.rateLimit.key": d(
    "ip",
    "the client address (trusted-hop aware) is known for every request",
  ),
  "gateway.routes.*.rateLimit.scope": d(
    "fleet",
    "the number you write is the total across replicas (Redis, or divided per replica)",
  ),
  "gateway.routes.*.rateLimit.burst": d("<requests>", "a full bucket allows one period's worth at once"),
  "gateway.routes.*.cache.perPrincipal": d(
    false,
    "responses to authenticated requests are not cached unless you opt in per principal",
  ),
  "gateway.routes.*.cache.maxEntrySize": d("1MiB", "large bodies stream through uncached"),
  "gateway.routes.*.cache.staleWhileRevalidate": d(
    "0s",
    "stale responses are served during revalidation only when the origin says so (RFC 5861)",
  ),
  "gateway.routes.*.cache.staleIfError": d(
    "0s",
    "stale responses replace upstream errors only when the origin says so (RFC 5861)",
  ),
  "gateway.routes.*.redirect.status": d(
    302,
    "temporary, so a wrong redirect is not cached forever by browsers",
  ),
  "gateway.routes.*.aggregate.*.method": d("GET", "aggregation reads; writes fan out badly"),
  "gateway.routes.*.aggregate.*.onError": d(
    "fail",
    "fail closed: a partial response only when the route says so",
  ),
  "gateway.routes.*.static.index": d(["index.html"], "the usual directory index"),
  "gateway.routes.*.static.precompressed": d(true, "serve .br/.gz siblings when the client accepts them"),
  "gateway.routes.*.cors.credentials": d(false, "cookies cross origins only when you opt in"),
  "gateway.routes.*.cors.maxAge": d("10m", "browsers cache the preflight for ten minutes"),
  "observability.metrics.enabled": d(true, "every proxy exposes meshgate_* metrics on its admin port"),
  "observability.metrics.backend": d(
    "prometheus",
    "a bundled Prometheus; prometheus-operator or none are options",
  ),
  "observability.metrics.scrapeInterval": d("15s", "Prometheus' common default"),
  "observability.metrics.retention": d(
    "30d",
    "the default SLO window: an error budget is read over its whole window (Prometheus' own default, 15d, would read half)",
  ),
  "observability.tracing.enabled": d(true, "W3C trace context is always propagated; spans are sampled"),
  "observability.tracing.sampling": d(0.01, "1% of traces keeps the store small; raise it for debugging"),
  "observability.tracing.backend": d("tempo", "Tempo stores traces cheaply; jaeger or none are options"),
  "observability.logs.access": d(true, "JSON access logs (never with credentials) from every proxy"),
  "observability.logs.level": d("info", "errors and lifecycle events, not per-request debug"),
  "observability.grafana.enabled": d(true, "generated dashboards are provisioned"),
  "observability.slos.*.window": d("30d", "the SRE workbook's usual SLO window"),
  "targets.local.gatewayPort": d(8080, "the gateway's port on 127.0.0.1 in local mode"),
  "targets.local.adminPort": d(9901, "the admin listener (topology page, JWKS, metrics) in local mode"),
  "targets.local.stateDir": d(".meshgate", "where local mode writes certificates and state.json"),
  "targets.kubernetes.gatewayServiceType": d(
    "LoadBalancer",
    "the gateway is the only Service exposed outside the cluster",
  ),
  "targets.kubernetes.gatewayExternalTrafficPolicy": d(
    "Local",
    "the gateway sees each client's own address (rate limits by IP, access logs, X-Forwarded-For): kube-proxy does not rewrite it, and load balancers send only to nodes that run a gateway pod",
  ),
  "targets.kubernetes.gatewayDrainDelay": d(
    "5s",
    "a stopping gateway pod keeps serving this long (a preStop sleep) while Services and load balancers stop sending to it: new connections in that window are not refused",
  ),
  "targets.kubernetes.serviceDrainDelay": d(
    "5s",
    "a stopping service pod's app keeps serving this long (a preStop sleep) while callers' sidecars still send to it — they re-resolve the headless Service within its DNS TTL (CoreDNS: 5 s)",
  ),
} as const;

export type DefaultPath = keyof typeof DEFAULTS;

/** Fixed ports of the proxies inside a pod (Istio's numbers, so tooling and habits carry over). */
export const PROXY_PORTS = {
  sidecarInbound: 15006,
  sidecarOutbound: 15001,
  sidecarAdmin: 15000,
  /**
   * The sidecars' local ports on 127.0.0.1 (for apps that cannot use an HTTP proxy): one per service and
   * per external destination with one host, chosen in this range by a hash of the name (translate's
   * localPorts) — the same port for a name in every sidecar, unmoved when other names come and go.
   */
  localPortRange: { first: 15101, size: 899 },
  gatewayAdmin: 9901,
} as const;

/** Limits meshgate refuses to loosen, whatever the spec says. */
export const HARD_LIMITS = {
  maxHeaderTimeoutMs: 15_000,
  maxJwtClockSkewMs: 300_000,
  maxRetryAttempts: 10,
} as const;
