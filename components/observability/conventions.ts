/**
 * meshgate's observability conventions as data: every metric the proxies register (name, type, unit,
 * labels per proxy), the label vocabulary with what bounds each label's values, the labels Prometheus
 * adds at scrape time, the span attributes (OpenTelemetry HTTP semantic conventions) and the access-log
 * schema. The rule, dashboard and scrape-config generators read only this catalog, the docs tables are
 * rendered from it, and the tests check it against what the running proxies expose — so the generated
 * queries can only name series that exist.
 *
 * Deviations: where an emitted name or label breaks the conventions written here, the entry says so in
 * `deviation` (the runtime is not renamed here: a rename breaks users' dashboards and is the lead's call).
 */

export type ProxyKind = "gateway" | "sidecar";
export type MetricType = "counter" | "gauge" | "histogram";

/** The namespace every meshgate metric starts with. */
export const METRIC_PREFIX = "meshgate_";

export interface MetricConvention {
  /** The full metric name (for a histogram, the family name without `_bucket`/`_sum`/`_count`). */
  readonly name: string;
  readonly type: MetricType;
  /** The base unit of the value (`seconds`, `bytes`), or what is counted. */
  readonly unit: string;
  readonly help: string;
  /**
   * The label names each proxy kind sets, in registration order (scrape-time target labels such as
   * `service` and `namespace` come on top, see TARGET_LABELS). A proxy kind that is absent does not
   * register the metric.
   */
  readonly labels: Readonly<Partial<Record<ProxyKind, readonly string[]>>>;
  /** When a proxy registers the metric only in some setups (e.g. the gateway as a mesh member). */
  readonly only?: Readonly<Partial<Record<ProxyKind, string>>>;
  /** How the name or labels break the conventions (see docs/observability.md), if they do. */
  readonly deviation?: string;
}

const both = <L extends readonly string[]>(labels: L) => ({ gateway: labels, sidecar: labels });
const UPSTREAM = ["proxy", "cluster"] as const;

/**
 * Every metric family the gateway (all processes of a multi-worker gateway) and the sidecar register,
 * sorted by name. Kept equal to what the runtime exposes by test/observability/metrics-catalog.test.ts.
 */
export const METRICS: readonly MetricConvention[] = [
  {
    name: "meshgate_aggregate_parts_total",
    type: "counter",
    unit: "parts",
    help: "Aggregate route parts, by route, part and outcome.",
    labels: { gateway: ["proxy", "route", "part", "outcome"] },
  },
  {
    name: "meshgate_authn_total",
    type: "counter",
    unit: "attempts",
    help: "Authentication attempts, by mechanism and result.",
    labels: { gateway: ["proxy", "mechanism", "result"] },
    deviation: "counts attempts: `meshgate_authn_attempts_total` would say what is counted",
  },
  {
    name: "meshgate_authz_denied_total",
    type: "counter",
    unit: "requests",
    help: "Requests refused by authentication or authorization (gateway: by route and unmet requirement; sidecar: by service, peer and reason).",
    labels: {
      gateway: ["proxy", "route", "reason"],
      sidecar: ["proxy", "service", "peer", "reason"],
    },
    deviation:
      "the sidecar sets `service` itself, which is also a target label (the scrape config keeps the proxy's value, `honor_labels: true`; both are the same workload)",
  },
  {
    name: "meshgate_cache_entries",
    type: "gauge",
    unit: "entries",
    help: "Responses the cache holds.",
    labels: { gateway: ["proxy"] },
  },
  {
    name: "meshgate_cache_evictions_total",
    type: "counter",
    unit: "entries",
    help: "Entries evicted to keep the cache within its byte budget.",
    labels: { gateway: ["proxy"] },
  },
  {
    name: "meshgate_cache_not_stored_total",
    type: "counter",
    unit: "responses",
    help: "Responses forwarded on caching routes that were not stored, by route and reason.",
    labels: { gateway: ["proxy", "route", "reason"] },
  },
  {
    name: "meshgate_cache_requests_total",
    type: "counter",
    unit: "requests",
    help: "Requests on caching routes, by route and result (hit, miss, stale, revalidated, bypass, coalesced, stale_while_revalidate, stale_if_error).",
    labels: { gateway: ["proxy", "route", "result"] },
  },
  {
    name: "meshgate_cache_store_errors_total",
    type: "counter",
    unit: "operations",
    help: "Cache store operations that failed (the request went on as a miss).",
    labels: { gateway: ["proxy", "operation"] },
  },
  {
    name: "meshgate_cache_local_active",
    type: "gauge",
    unit: "boolean",
    help: "1 while the Redis store's local layer answers lookups in this process (Redis tracks its keys); 0 while it is off (a connection down, tracking refused, or not configured).",
    labels: { gateway: ["proxy"] },
  },
  {
    name: "meshgate_cache_local_bytes",
    type: "gauge",
    unit: "bytes",
    help: "Bytes the Redis store's local layer holds in this process.",
    labels: { gateway: ["proxy"] },
  },
  {
    name: "meshgate_cache_local_lookups_total",
    type: "counter",
    unit: "lookups",
    help: "Store lookups while the Redis store's local layer was on: hit (answered in this process, no round trip to Redis) or miss (sent on to Redis).",
    labels: { gateway: ["proxy", "result"] },
  },
  {
    name: "meshgate_cache_store_available",
    type: "gauge",
    unit: "boolean",
    help: "1 while the cache store answers; 0 during a Redis outage (lookups are misses, stores dropped).",
    labels: { gateway: ["proxy"] },
  },
  {
    name: "meshgate_cache_stored_bytes",
    type: "gauge",
    unit: "bytes",
    help: "Bytes the cache holds: keys, headers, bodies and per-entry overhead.",
    labels: { gateway: ["proxy"] },
  },
  {
    name: "meshgate_cert_expiry_seconds",
    type: "gauge",
    unit: "seconds",
    help: "Seconds until the serving SVID or an intermediate of its chain expires, whichever is first (negative once expired), by SPIFFE ID.",
    labels: both(["proxy", "identity"]),
    only: { gateway: "with a mesh identity (svid configured)" },
    deviation:
      "a time-until gauge is computed at scrape time; the convention is a timestamp (`meshgate_cert_not_after_timestamp_seconds`) with `- time()` in PromQL. A replaced identity's series stays at 0 (it reads as expired)",
  },
  {
    name: "meshgate_config_info",
    type: "gauge",
    unit: "info",
    help: "The config serving now (value 1), by content hash.",
    labels: both(["proxy", "hash"]),
  },
  {
    name: "meshgate_config_reloads_total",
    type: "counter",
    unit: "reloads",
    help: "Config reload attempts, by result.",
    labels: both(["proxy", "result"]),
  },
  {
    name: "meshgate_egress_bytes_total",
    type: "counter",
    unit: "bytes",
    help: "Bytes relayed to and from destinations outside the mesh, by external and direction (sent: app to external; received).",
    labels: { sidecar: ["proxy", "external", "direction"] },
  },
  {
    name: "meshgate_egress_connections_total",
    type: "counter",
    unit: "connections",
    help: "Connections to destinations outside the mesh (CONNECT tunnels and external local ports), by external and outcome (opened, failed).",
    labels: { sidecar: ["proxy", "external", "outcome"] },
  },
  {
    name: "meshgate_egress_tunnels_active",
    type: "gauge",
    unit: "tunnels",
    help: "Tunnels to destinations outside the mesh open now, by external.",
    labels: { sidecar: ["proxy", "external"] },
  },
  {
    name: "meshgate_event_loop_delay_seconds",
    type: "histogram",
    unit: "seconds",
    help: "How late a timer due every 20 ms ran: the delay every callback met at that moment.",
    labels: both([]),
    deviation:
      "prom-client's Node collector exposes `nodejs_eventloop_lag_*_seconds` gauges reset at each scrape; this is a cumulative histogram (several scrapers do not reset each other), prefixed as the process metrics are",
  },
  {
    name: "meshgate_external_cert_expiry_seconds",
    type: "gauge",
    unit: "seconds",
    help: "Seconds until the client certificate presented to an external destination expires (negative once expired), by external.",
    labels: both(["proxy", "external"]),
    deviation:
      "a time-until gauge computed at scrape time, as meshgate_cert_expiry_seconds (the convention is a not-after timestamp). An external that no longer presents a certificate has its series removed",
  },
  {
    name: "meshgate_external_cert_reloads_total",
    type: "counter",
    unit: "loads",
    help: "Loads of the client certificates presented to external destinations: loaded (a new pair serves new connections), rejected (refused; the previous pair keeps serving).",
    labels: both(["proxy", "result"]),
  },
  {
    name: "meshgate_faults_injected_total",
    type: "counter",
    unit: "requests",
    help: "Faults injected by route fault rules.",
    labels: { gateway: ["proxy", "route", "kind"] },
  },
  {
    name: "meshgate_gateway_errors_total",
    type: "counter",
    unit: "responses",
    help: "Error responses the gateway generated itself, by error code.",
    labels: { gateway: ["proxy", "code"] },
    deviation:
      "the sidecar counts the same thing as `meshgate_sidecar_errors_total{direction,code}`: one `meshgate_proxy_errors_total{proxy,code}` would serve both",
  },
  {
    name: "meshgate_gateway_proxy_protocol_refused_total",
    type: "counter",
    unit: "connections",
    help: "Connections closed on a PROXY-protocol listener because they did not start with a valid PROXY header.",
    labels: { gateway: ["proxy", "listener"] },
  },
  {
    name: "meshgate_gateway_worker_restarts_total",
    type: "counter",
    unit: "restarts",
    help: "Worker processes restarted after an unexpected exit.",
    labels: { gateway: [] },
    only: { gateway: "the primary process of a multi-worker gateway" },
  },
  {
    name: "meshgate_gateway_workers_ready",
    type: "gauge",
    unit: "processes",
    help: "Worker processes serving.",
    labels: { gateway: [] },
    only: { gateway: "the primary process of a multi-worker gateway" },
  },
  {
    name: "meshgate_gc_duration_seconds",
    type: "histogram",
    unit: "seconds",
    help: "Garbage-collection pauses, by kind (minor: young-generation scavenges; major: mark-compact; incremental: marking steps; weakcb: weak callbacks).",
    labels: both(["kind"]),
    deviation:
      "prefixed, unlike prom-client's `nodejs_gc_duration_seconds{kind}` (the same kinds), as the process metrics are",
  },
  {
    name: "meshgate_identity_reloads_total",
    type: "counter",
    unit: "loads",
    help: "Identity file loads: loaded, rejected (the previous identity keeps serving), issued / issue_failed (development issuer).",
    labels: both(["proxy", "result"]),
    only: { gateway: "with a mesh identity (svid configured)" },
  },
  {
    name: "meshgate_jwks_fetches_total",
    type: "counter",
    unit: "fetches",
    help: "JWKS fetches, by provider and outcome.",
    labels: { gateway: ["proxy", "provider", "outcome"] },
  },
  {
    name: "meshgate_metrics_label_overflow_total",
    type: "counter",
    unit: "label sets",
    help: "Label sets folded into the __overflow__ series because a metric reached its child cap, by metric.",
    labels: both(["metric"]),
  },
  {
    name: "meshgate_mirrored_requests_total",
    type: "counter",
    unit: "requests",
    help: "Mirrored request copies, by outcome (success, 5xx, failure, no_endpoint, overflow: dropped at the shadow cluster's circuit breaker).",
    labels: { gateway: ["proxy", "cluster", "outcome"] },
  },
  {
    name: "meshgate_process_cpu_seconds_total",
    type: "counter",
    unit: "seconds",
    help: "Total user and system CPU time spent in seconds.",
    labels: both([]),
    deviation:
      "the standard process collector's names are unprefixed (`process_cpu_seconds_total`): the meshgate_ prefix keeps the common node/process dashboards from finding them",
  },
  {
    name: "meshgate_process_resident_memory_bytes",
    type: "gauge",
    unit: "bytes",
    help: "Resident memory size in bytes.",
    labels: both([]),
    deviation: "prefixed, unlike the standard `process_resident_memory_bytes`",
  },
  {
    name: "meshgate_process_start_time_seconds",
    type: "gauge",
    unit: "seconds",
    help: "Start time of the process since unix epoch in seconds.",
    labels: both([]),
    deviation: "prefixed, unlike the standard `process_start_time_seconds`",
  },
  {
    name: "meshgate_ratelimit_evictions_total",
    type: "counter",
    unit: "buckets",
    help: "In-process buckets dropped at the key cap: idle (full, nothing lost) or active.",
    labels: { gateway: ["proxy", "kind"] },
  },
  {
    name: "meshgate_ratelimit_fail_open_total",
    type: "counter",
    unit: "requests",
    help: "Requests admitted without a rate-limit answer because the store failed and fails open.",
    labels: { gateway: ["proxy", "route"] },
  },
  {
    name: "meshgate_ratelimit_limited_total",
    type: "counter",
    unit: "requests",
    help: "Requests refused with 429 by a route's rate limit.",
    labels: { gateway: ["proxy", "route"] },
  },
  {
    name: "meshgate_ratelimit_mode_info",
    type: "gauge",
    unit: "info",
    help: "The rate-limit mode in effect (value 1): the store of fleet limits, and what they are divided by.",
    labels: { gateway: ["proxy", "store", "fleet_divisor"] },
  },
  {
    name: "meshgate_ratelimit_store_errors_total",
    type: "counter",
    unit: "checks",
    help: "Rate-limit checks the store could not answer, by reason and the fail mode that answered instead.",
    labels: { gateway: ["proxy", "reason", "mode"] },
  },
  {
    name: "meshgate_request_duration_seconds",
    type: "histogram",
    unit: "seconds",
    help: "Time from request to response end (gateway: by route; sidecar: by direction and peer).",
    labels: { gateway: ["proxy", "route"], sidecar: ["proxy", "direction", "peer"] },
    deviation:
      "no `code_class`: latency SLOs count every request, failures included. The gateway's series carry no destination service (a route may split or aggregate). WebSocket upgrades are counted in `meshgate_requests_total` only: a tunnel's lifetime is no request latency",
  },
  {
    name: "meshgate_requests_in_flight",
    type: "gauge",
    unit: "requests",
    help: "Requests being handled.",
    labels: both(["proxy"]),
  },
  {
    name: "meshgate_requests_total",
    type: "counter",
    unit: "requests",
    help: "Requests answered (gateway: by route and status class; sidecar: by direction, peer, status class and mTLS).",
    labels: {
      gateway: ["proxy", "route", "code_class"],
      sidecar: ["proxy", "direction", "peer", "code_class", "mtls"],
    },
    deviation:
      "`peer` has two vocabularies: the caller's SPIFFE ID inbound, the destination service outbound (a service name both ways would join the two views)",
  },
  {
    name: "meshgate_retries_total",
    type: "counter",
    unit: "retries",
    help: "Retries, by cluster and the failure retried.",
    labels: both(["proxy", "cluster", "reason"]),
  },
  {
    name: "meshgate_retry_budget_exhausted_total",
    type: "counter",
    unit: "retries",
    help: "Retries refused because the budget was spent.",
    labels: both(UPSTREAM),
  },
  {
    name: "meshgate_sidecar_errors_total",
    type: "counter",
    unit: "responses",
    help: "Error responses the sidecar generated itself, by direction and code.",
    labels: { sidecar: ["proxy", "direction", "code"] },
    deviation: "see `meshgate_gateway_errors_total`",
  },
  {
    name: "meshgate_tls_handshake_failures_total",
    type: "counter",
    unit: "connections",
    help: "Inbound TLS connections refused, by OpenSSL's or the SVID verifier's reason.",
    labels: { sidecar: ["proxy", "reason"] },
  },
  {
    name: "meshgate_tls_handshakes_total",
    type: "counter",
    unit: "connections",
    help: "Inbound mTLS connections whose peer was verified and accepted.",
    labels: { sidecar: ["proxy"] },
  },
  {
    name: "meshgate_tls_resumptions_total",
    type: "counter",
    unit: "connections",
    help: "Inbound mTLS connections that resumed a TLS session (counted in meshgate_tls_handshakes_total too; the peer's leaf is verified either way).",
    labels: { sidecar: ["proxy"] },
  },
  {
    name: "meshgate_tls_connections_retired_total",
    type: "counter",
    unit: "connections",
    help: "Inbound mTLS connections retired because the peer's chain expired (expired) or a new bundle no longer holds its root (untrusted).",
    labels: { sidecar: ["proxy", "reason"] },
  },
  {
    name: "meshgate_access_log_dropped_total",
    type: "counter",
    unit: "lines",
    help: "Access lines dropped because stdout did not take them (a stalled log collector); the requests were served.",
    labels: both(["proxy"]),
  },
  {
    name: "meshgate_trace_spans_dropped_total",
    type: "counter",
    unit: "spans",
    help: "Spans not exported, by reason.",
    labels: both(["proxy", "reason"]),
  },
  {
    name: "meshgate_upstream_ejections_total",
    type: "counter",
    unit: "ejections",
    help: "Endpoints ejected by outlier detection.",
    labels: both(UPSTREAM),
  },
  {
    name: "meshgate_upstream_health_changes_total",
    type: "counter",
    unit: "transitions",
    help: "Active health-check transitions.",
    labels: both(["proxy", "cluster", "healthy"]),
  },
  {
    name: "meshgate_upstream_panic_total",
    type: "counter",
    unit: "requests",
    help: "Requests balanced across every endpoint of a cluster, available or not, because fewer than half were available (panic routing).",
    labels: both(UPSTREAM),
  },
  {
    name: "meshgate_upstream_overflow_total",
    type: "counter",
    unit: "requests",
    help: "Requests refused by the circuit breaker.",
    labels: both(UPSTREAM),
  },
  {
    name: "meshgate_upstream_requests_total",
    type: "counter",
    unit: "attempts",
    help: "Upstream attempts, by cluster and outcome.",
    labels: both(["proxy", "cluster", "outcome"]),
    deviation:
      "counts attempts, not requests (`meshgate_upstream_attempts_total` would say so); `outcome` mixes words and status classes (success, 5xx, connect_failure, …)",
  },
];

/** A label of the vocabulary: what it means and what bounds its values. */
export interface LabelConvention {
  readonly name: string;
  readonly meaning: string;
  readonly bounded: string;
  /** Set by Prometheus at scrape time (the generated scrape config), not by the proxy. */
  readonly target?: boolean;
}

export const LABELS: readonly LabelConvention[] = [
  {
    name: "namespace",
    meaning: "the mesh's namespace",
    bounded: "one per mesh",
    target: true,
  },
  {
    name: "service",
    meaning: "the workload whose proxy emitted the series: a service name, or `gateway`",
    bounded: "the spec's workloads",
    target: true,
  },
  {
    name: "proxy",
    meaning:
      "`gateway` or `sidecar` (set by the proxy; the scrape config sets it too, for series without it)",
    bounded: "2 values",
    target: true,
  },
  {
    name: "job",
    meaning: "the scrape job: `meshgate-<namespace>-gateway|sidecar`",
    bounded: "2 per mesh",
    target: true,
  },
  {
    name: "instance",
    meaning: "the scraped address (host:port)",
    bounded: "one per proxy replica",
    target: true,
  },
  {
    name: "pod",
    meaning: "the Kubernetes pod (Kubernetes service discovery only)",
    bounded: "one per replica",
    target: true,
  },
  {
    name: "worker",
    meaning: "the worker process of a multi-worker gateway (`sum without (worker)` to add them up)",
    bounded: "one per CPU core",
  },
  {
    name: "route",
    meaning: "the gateway route's name; `none` when no route matched",
    bounded: "the spec's routes + 1",
  },
  {
    name: "listener",
    meaning: "the gateway listener's name (gateway.listeners)",
    bounded: "the spec's listeners",
  },
  { name: "code_class", meaning: "the response status class: `1xx`…`5xx`", bounded: "5 values" },
  {
    name: "direction",
    meaning:
      "sidecar: `inbound` (from peers) or `outbound` (from the app); egress bytes: `sent` (app to external) or `received`",
    bounded: "2 values",
  },
  {
    name: "external",
    meaning: "sidecar: a destination outside the mesh the config declares (`outbound.external[].name`)",
    bounded: "the spec's external destinations",
  },
  {
    name: "peer",
    meaning:
      "sidecar: inbound, the caller's SPIFFE ID when an allow rule names it, else `other` (`none` for plaintext); outbound, the destination service",
    bounded: "the allow rules' peers + 2; the declared calls",
  },
  {
    name: "mtls",
    meaning: "sidecar: whether the request came over mTLS (`true`/`false`)",
    bounded: "2 values",
  },
  {
    name: "cluster",
    meaning: "the upstream cluster: a mesh service (`app` for a sidecar's own app)",
    bounded: "the spec's services + 1",
  },
  {
    name: "outcome",
    meaning:
      "an upstream attempt's result: `success`, `2xx`…`5xx`, `connect_failure`, `timeout`, `reset`, …; an egress connection's: `opened` or `failed`",
    bounded: "the forwarder's outcome words",
  },
  {
    name: "reason",
    meaning: "why: the unmet authorization requirement, the retried failure, …",
    bounded: "a fixed catalog per metric",
  },
  {
    name: "result",
    meaning: "the result of an operation (`success`/`failure`, `hit`/`miss`, `loaded`/`rejected`, …)",
    bounded: "a fixed catalog per metric",
  },
  { name: "code", meaning: "the proxy's error code (`x-meshgate-error`)", bounded: "the error catalogs" },
  {
    name: "identity",
    meaning: "the serving SVID's SPIFFE ID",
    bounded: "one per workload (capped at 16 series)",
  },
  { name: "hash", meaning: "the serving config's content hash", bounded: "capped at 4 series" },
  {
    name: "le",
    meaning: "a histogram bucket's upper bound, in the metric's unit",
    bounded: "the fixed bucket list",
  },
  {
    name: "mechanism",
    meaning: "an authentication mechanism (`jwt`, `apiKey`, `clientCert`, `oidc`)",
    bounded: "4 values",
  },
  { name: "provider", meaning: "a JWT provider of the spec", bounded: "the spec's providers" },
  { name: "part", meaning: "an aggregate route's part", bounded: "the spec's parts" },
  {
    name: "kind",
    meaning: "a fault rule's kind (`abort`, `delay`), a rate-limit eviction's kind (`idle`, `active`)",
    bounded: "2 values each",
  },
  { name: "operation", meaning: "a cache store operation", bounded: "the store's operations" },
  { name: "metric", meaning: "the metric whose label sets overflowed", bounded: "the registered metrics" },
  {
    name: "store",
    meaning: "the rate-limit store of fleet limits (`redis`, `local`)",
    bounded: "a few values",
  },
  {
    name: "fleet_divisor",
    meaning: "what fleet limits are divided by (the replica count, or 1)",
    bounded: "one value per config",
  },
  { name: "mode", meaning: "the rate-limit store's fail mode (`open`, `closed`)", bounded: "2 values" },
  { name: "healthy", meaning: "an active health check's new state (`true`/`false`)", bounded: "2 values" },
];

/** The labels the generated scrape config adds to every series (see scrape.ts). */
export const TARGET_LABELS = LABELS.filter((l) => l.target).map((l) => l.name);

/**
 * Request-latency histogram buckets, in seconds (runtime/telemetry/metrics.ts DEFAULT_LATENCY_BUCKETS,
 * which both proxies use). Latency SLO thresholds must be one of them (E_SPEC_SLO_LATENCY_BUCKET).
 */
export { DEFAULT_LATENCY_BUCKETS as LATENCY_BUCKETS } from "../../runtime/telemetry/metrics.ts";
/** The event-loop delay histogram's buckets (runtime/telemetry/metrics.ts), for the stall alert's tests. */
export { EVENT_LOOP_DELAY_BUCKETS } from "../../runtime/telemetry/metrics.ts";

/** The catalog entry of a metric family (a histogram's `_bucket`/`_sum`/`_count` resolve to it). */
export function metricConvention(series: string): MetricConvention | undefined {
  const exact = METRICS.find((m) => m.name === series);
  if (exact) return exact;
  const m = /^(.*)_(bucket|sum|count)$/.exec(series);
  if (!m) return undefined;
  const family = METRICS.find((x) => x.name === m[1]);
  return family?.type === "histogram" ? family : undefined;
}

/** The label names a series can carry from a proxy kind (its own plus the target labels). */
export function seriesLabels(series: string, proxy?: ProxyKind): Set<string> | undefined {
  const m = metricConvention(series);
  if (!m) return undefined;
  const own = proxy ? (m.labels[proxy] ?? []) : Object.values(m.labels).flat();
  const out = new Set([...own, ...TARGET_LABELS, "worker"]);
  if (m.type === "histogram" && series.endsWith("_bucket")) out.add("le");
  return out;
}

// ─────────────────────────────── spans ───────────────────────────────

/** One span attribute: where the OpenTelemetry HTTP semantic conventions ask for it and who sets it. */
export interface SpanAttributeConvention {
  readonly name: string;
  /** Span kinds the conventions define it on, with its requirement level there. */
  readonly semconv: string;
  readonly gateway: string;
  readonly sidecar: string;
}

/**
 * The span model: a SERVER span per request a proxy receives and a CLIENT span per upstream request,
 * named `{method} {http.route}` (server, when a route matched) or `{method}`; W3C traceparent/tracestate
 * propagated; status ERROR for 5xx (server) and 4xx/5xx or a failure (client). Resource: `service.name`
 * is the workload (`gateway` or the service name).
 */
export const SPAN_ATTRIBUTES: readonly SpanAttributeConvention[] = [
  {
    name: "http.request.method",
    semconv: "server, client: required",
    gateway: "both spans",
    sidecar: "both spans",
  },
  {
    name: "http.request.method_original",
    semconv: "conditionally (method not known)",
    gateway: "both spans",
    sidecar: "both spans",
  },
  {
    name: "http.response.status_code",
    semconv: "conditionally (a response was received/sent)",
    gateway: "both spans",
    sidecar: "both spans",
  },
  {
    name: "http.route",
    semconv: "server: conditionally required",
    gateway: "server (the route's path pattern)",
    sidecar: "not set",
  },
  {
    name: "http.request.resend_count",
    semconv: "client: recommended (on a resend)",
    gateway: "client (retries of the request)",
    sidecar: "client",
  },
  {
    name: "url.path",
    semconv: "server: required",
    gateway: "server (canonical path, no query)",
    sidecar: "server",
  },
  { name: "url.scheme", semconv: "server: required", gateway: "server", sidecar: "server" },
  { name: "url.full", semconv: "client: required", gateway: "not set", sidecar: "not set" },
  {
    name: "server.address",
    semconv: "server: recommended; client: required",
    gateway: "server (Host); client (the endpoint as `host:port`)",
    sidecar: "outbound server (Host); client (`host:port`)",
  },
  { name: "server.port", semconv: "client: required", gateway: "not set", sidecar: "not set" },
  { name: "network.peer.address", semconv: "recommended", gateway: "server", sidecar: "server" },
  {
    name: "error.type",
    semconv: "conditionally (the request failed)",
    gateway: "both spans",
    sidecar: "both spans",
  },
  {
    name: "meshgate.route",
    semconv: "meshgate: the route (gateway) or allow rule / per-route policy (sidecar)",
    gateway: "server",
    sidecar: "server",
  },
  {
    name: "meshgate.upstream",
    semconv: "meshgate: the upstream cluster",
    gateway: "client",
    sidecar: "client",
  },
  {
    name: "meshgate.direction",
    semconv: "meshgate: inbound or outbound",
    gateway: "not set",
    sidecar: "server",
  },
  {
    name: "meshgate.peer",
    semconv: "meshgate: the caller's SPIFFE ID",
    gateway: "not set",
    sidecar: "inbound server span",
  },
];

// ─────────────────────────────── access logs ───────────────────────────────

export interface AccessLogField {
  readonly name: string;
  readonly type: "string" | "number" | "boolean" | "object";
  readonly meaning: string;
  /** Which proxies write it, and whether always or only when known. */
  readonly gateway: "always" | "when known" | "no";
  readonly sidecar: "always" | "when known" | "no";
}

/**
 * One JSON line per request (pino), `event: "access"`, with pino's `level` and `time` (ms since the epoch),
 * the logger's `name` and the proxy's base field `proxy` (which replaces pino's default `pid` and
 * `hostname`). Never headers, tokens, keys or query strings.
 */
export const ACCESS_LOG_FIELDS: readonly AccessLogField[] = [
  { name: "level", type: "number", meaning: "pino level (30 = info)", gateway: "always", sidecar: "always" },
  {
    name: "time",
    type: "number",
    meaning: "milliseconds since the Unix epoch",
    gateway: "always",
    sidecar: "always",
  },
  {
    name: "name",
    type: "string",
    meaning:
      "the logger: `meshgate-gateway`, `meshgate-sidecar` (set by the `meshgate gateway|sidecar` processes)",
    gateway: "when known",
    sidecar: "when known",
  },
  { name: "proxy", type: "string", meaning: "`gateway` or `sidecar`", gateway: "always", sidecar: "always" },
  {
    name: "event",
    type: "string",
    meaning:
      "`access` (the sidecar's egress tunnels write `egress` lines of their own, with other fields: docs/sidecar.md, *Egress*)",
    gateway: "always",
    sidecar: "always",
  },
  {
    name: "requestId",
    type: "string",
    meaning: "X-Request-Id (kept when well-formed, else minted)",
    gateway: "always",
    sidecar: "always",
  },
  { name: "direction", type: "string", meaning: "`inbound` or `outbound`", gateway: "no", sidecar: "always" },
  { name: "method", type: "string", meaning: "the request method", gateway: "always", sidecar: "always" },
  {
    name: "path",
    type: "string",
    meaning:
      "the canonical path (no query); for a request refused before routing, the target as sent without query, fragment or userinfo (at most 200 characters), empty when the target itself was refused",
    gateway: "always",
    sidecar: "always",
  },
  {
    name: "host",
    type: "string",
    meaning:
      "the Host header (or :authority, or a CONNECT target) as received, without userinfo (`user:password@`) and without anything after a `/`, `?` or `#`, at most 255 characters",
    gateway: "when known",
    sidecar: "no",
  },
  {
    name: "route",
    type: "string",
    meaning: "the matched route, `none` when no route matched",
    gateway: "always",
    sidecar: "no",
  },
  {
    name: "rule",
    type: "string",
    meaning: "the allow rule (inbound) or per-route policy (outbound) that applied",
    gateway: "no",
    sidecar: "when known",
  },
  {
    name: "peer",
    type: "string",
    meaning: "the caller's SPIFFE ID label (inbound) or the destination (outbound)",
    gateway: "no",
    sidecar: "always",
  },
  {
    name: "peerId",
    type: "string",
    meaning: "inbound: the caller's verified SPIFFE ID (absent over plaintext)",
    gateway: "no",
    sidecar: "when known",
  },
  {
    name: "service",
    type: "string",
    meaning: "the service whose sidecar wrote the line",
    gateway: "no",
    sidecar: "always",
  },
  {
    name: "mtls",
    type: "boolean",
    meaning: "whether the request came over mTLS",
    gateway: "no",
    sidecar: "always",
  },
  {
    name: "client",
    type: "string",
    meaning: "the client address (trusted-hop aware)",
    gateway: "always",
    sidecar: "no",
  },
  {
    name: "status",
    type: "number",
    meaning:
      "the response status; 499 (as nginx writes it) when the client left before any response started — counted so in `meshgate_requests_total` (`4xx`) and on the span",
    gateway: "always",
    sidecar: "always",
  },
  {
    name: "completed",
    type: "boolean",
    meaning: "whether the response was sent completely",
    gateway: "always",
    sidecar: "always",
  },
  {
    name: "durationMs",
    type: "number",
    meaning: "request to response end, in ms (µs precision)",
    gateway: "always",
    sidecar: "always",
  },
  {
    name: "upstream",
    type: "string",
    meaning: "the endpoint that answered (`host:port`)",
    gateway: "when known",
    sidecar: "when known",
  },
  {
    name: "outcome",
    type: "string",
    meaning:
      "`success`, `success_after_N_retries` or the failure (`timeout`, `connect_failure`, …); a refusal: decide()'s code (`no_route`, …), `denied_<requirement>` (gateway authorization), `denied_<code>` (sidecar), `denied_mesh_<code>` (gateway: the callee's sidecar refused the request, or the aggregate part that failed it — 403 with its `x-meshgate-denied` code)",
    gateway: "when known",
    sidecar: "when known",
  },
  {
    name: "auth",
    type: "string",
    meaning:
      "how the caller authenticated: `jwt:<provider>`, `apiKey`, `clientCert:<provider>`, `oidc:<provider>`",
    gateway: "when known",
    sidecar: "no",
  },
  {
    name: "subject",
    type: "string",
    meaning:
      "the principal's subject (`sub`, the API-key consumer, the certificate subject); never a credential",
    gateway: "when known",
    sidecar: "no",
  },
  {
    name: "consumer",
    type: "string",
    meaning: "the API-key consumer",
    gateway: "when known",
    sidecar: "no",
  },
  {
    name: "scopes",
    type: "string",
    meaning: "the scopes the token granted, space-separated",
    gateway: "when known",
    sidecar: "no",
  },
  {
    name: "headers",
    type: "object",
    meaning:
      "values of the request headers route conditions read (never the credential headers the gateway checks; `[redacted]` for a credential-like name such as `x-api-key`, `x-auth-token`, `api_key`, `access_token`)",
    gateway: "when known",
    sidecar: "no",
  },
];
