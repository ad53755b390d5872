/**
 * The rejection table: every row starts from a small valid spec, breaks exactly one thing, and claims the
 * error code and dotted path parseSpec reports for it. The base spec is checked to be valid on its own, and
 * every E_SPEC_* code a parsed document can produce must be claimed by at least one row.
 */
import { describe, expect, it } from "vitest";
import { STATIC_CA_PEM } from "../support/certs.ts";
import { SpecErrorCatalog } from "../../components/spec/errors.ts";
import type { SpecError, SpecErrorCode } from "../../components/spec/errors.ts";
import { parseSpec } from "../../components/spec/parse.ts";

// The rows deliberately write ill-typed values (a port as a string, …), so the document is untyped here.
// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Doc = any;

const HASH_A = `sha256:${"a".repeat(64)}`;
const HASH_B = `sha256:${"b".repeat(64)}`;

/** A small, valid, complete spec: three services, a gateway with jwt and API keys, three routes, an SLO. */
const BASE = {
  name: "base",
  trustDomain: "base.example",
  services: {
    orders: {
      image: "ghcr.io/acme/orders:1.4.2",
      port: 8080,
      replicas: 2,
      calls: ["payments"],
      timeout: "3s",
      allow: [{ from: ["gateway"], methods: ["GET", "POST"], paths: ["/orders", "/orders/*"] }],
      routes: [{ name: "create", match: { path: "/orders", methods: ["POST"] }, timeout: "2s" }],
      healthCheck: { path: "/healthz" },
    },
    payments: {
      image: "ghcr.io/acme/payments:5.0.1",
      port: 8443,
      calls: ["card-processor"],
      allow: [{ from: ["orders"], methods: ["POST"], paths: ["/payments"] }],
    },
    users: {
      image: "ghcr.io/acme/users:3.1.0",
      port: 8080,
      allow: [{ from: ["gateway"], methods: ["GET"], paths: ["/me"] }],
    },
  },
  external: {
    "card-processor": { host: "api.stripe.com", port: 443, allow: [{ from: ["payments"] }] },
  },
  gateway: {
    hosts: ["api.base.example"],
    listeners: [
      { name: "http", port: 8080, protocol: "http" },
      {
        name: "https",
        port: 8443,
        protocol: "https",
        tls: { certificates: [{ hosts: ["api.base.example"], secret: "base-tls" }] },
      },
    ],
    jwt: {
      main: {
        issuer: "https://id.base.example/",
        audiences: ["base-api"],
        jwksUri: "https://id.base.example/.well-known/jwks.json",
        algorithms: ["ES256"],
      },
    },
    apiKeys: {
      consumers: {
        acme: { keyHashes: [HASH_A], groups: ["partners"] },
        globex: { keyHashes: [HASH_B], groups: ["partners", "bulk"] },
      },
    },
    routes: [
      {
        name: "get-order",
        match: { path: "/api/orders/{id}", methods: ["GET"] },
        to: "orders",
        rewrite: { path: "/orders/{id}" },
        auth: { jwt: "main", scopes: ["orders:read"] },
      },
      {
        name: "me",
        match: { path: "/api/me", methods: ["GET"] },
        to: "users",
        rewrite: { path: "/me" },
        public: true,
        rateLimit: { requests: 100, per: "1m", key: "ip" },
      },
      {
        name: "partner-orders",
        match: { path: "/partner/orders", methods: ["POST"] },
        to: "orders",
        rewrite: { path: "/orders" },
        auth: { apiKey: true, groups: ["partners"], clientIps: ["203.0.113.0/24"] },
        rateLimit: { requests: 60, per: "1m", key: "consumer" },
      },
    ],
  },
  observability: {
    slos: [{ route: "get-order", availability: 99.9, latencyP99: "250ms" }],
  },
};

const base = (): Doc => structuredClone(BASE);

interface Row {
  claim: string;
  mutate: (spec: Doc) => void;
  code: SpecErrorCode;
  path: string;
  /** Text the error's message must contain, when the claim is about the message too. */
  message?: string;
}

const gatewayRoute = (spec: Doc, i: number) => spec.gateway.routes[i];

const ROWS: Row[] = [
  // ── structure: keys, fields, types ──
  {
    claim: "rejects_unknown_key_with_did_you_mean",
    mutate: (s) => (s.services.orders.timout = "2s"),
    code: "E_SPEC_UNKNOWN_KEY",
    path: "services.orders.timout",
    message: 'did you mean "timeout"',
  },
  {
    claim: "rejects_unknown_top_level_key",
    mutate: (s) => (s.gatway = {}),
    code: "E_SPEC_UNKNOWN_KEY",
    path: "gatway",
    message: 'did you mean "gateway"',
  },
  {
    claim: "rejects_unknown_key_in_route_auth",
    mutate: (s) => (gatewayRoute(s, 0).auth.scope = ["orders:read"]),
    code: "E_SPEC_UNKNOWN_KEY",
    path: "gateway.routes[0].auth.scope",
    message: 'did you mean "scopes"',
  },
  {
    claim: "rejects_service_without_image",
    mutate: (s) => delete s.services.orders.image,
    code: "E_SPEC_MISSING_FIELD",
    path: "services.orders.image",
  },
  {
    claim: "rejects_service_without_port",
    mutate: (s) => delete s.services.payments.port,
    code: "E_SPEC_MISSING_FIELD",
    path: "services.payments.port",
  },
  {
    claim: "rejects_spec_without_trust_domain",
    mutate: (s) => delete s.trustDomain,
    code: "E_SPEC_MISSING_FIELD",
    path: "trustDomain",
  },
  {
    claim: "rejects_empty_jwt_issuer",
    mutate: (s) => (s.gateway.jwt.main.issuer = " "),
    code: "E_SPEC_MISSING_FIELD",
    path: "gateway.jwt.main.issuer",
  },
  {
    claim: "rejects_port_as_string",
    mutate: (s) => (s.services.orders.port = "8080"),
    code: "E_SPEC_INVALID_TYPE",
    path: "services.orders.port",
  },
  {
    claim: "rejects_calls_as_string",
    mutate: (s) => (s.services.orders.calls = "payments"),
    code: "E_SPEC_INVALID_TYPE",
    path: "services.orders.calls",
  },
  {
    claim: "rejects_route_target_of_wrong_type",
    mutate: (s) => (gatewayRoute(s, 0).to = 42),
    code: "E_SPEC_INVALID_TYPE",
    path: "gateway.routes[0].to",
  },
  {
    claim: "rejects_duration_written_as_a_number",
    mutate: (s) => (s.services.orders.timeout = 500),
    code: "E_SPEC_INVALID_TYPE",
    path: "services.orders.timeout",
  },
  {
    claim: "rejects_lower_case_method_with_did_you_mean",
    mutate: (s) => (gatewayRoute(s, 0).match.methods = ["get"]),
    code: "E_SPEC_INVALID_VALUE",
    path: "gateway.routes[0].match.methods[0]",
    message: 'did you mean "GET"',
  },
  {
    claim: "rejects_unknown_listener_protocol",
    mutate: (s) => (s.gateway.listeners[0].protocol = "tcp"),
    code: "E_SPEC_INVALID_VALUE",
    path: "gateway.listeners[0].protocol",
  },
  {
    claim: "rejects_header_condition_with_two_matchers",
    mutate: (s) => (gatewayRoute(s, 0).match.headers = { "x-debug": { exact: "1", prefix: "1" } }),
    code: "E_SPEC_INVALID_VALUE",
    path: "gateway.routes[0].match.headers.x-debug",
  },
  {
    claim: "rejects_cors_wildcard_with_credentials",
    mutate: (s) => (gatewayRoute(s, 0).cors = { origins: ["*"], credentials: true }),
    code: "E_SPEC_INVALID_VALUE",
    path: "gateway.routes[0].cors.origins",
  },
  {
    claim: "rejects_cache_on_a_route_without_get",
    mutate: (s) => (gatewayRoute(s, 2).cache = { ttl: "10s" }),
    code: "E_SPEC_INVALID_VALUE",
    path: "gateway.routes[2].cache",
  },
  {
    claim: "rejects_cache_on_an_aggregate_route_which_never_reaches_the_cache",
    mutate: (s) => {
      const r = gatewayRoute(s, 1);
      delete r.to;
      delete r.rewrite;
      r.aggregate = { me: { service: "users", path: "/me" } };
      r.cache = { ttl: "10s" };
    },
    code: "E_SPEC_ROUTE_ACTION",
    path: "gateway.routes[1].cache",
    message: "applies only to routes that forward",
  },
  {
    claim: "rejects_cache_on_a_redirect_route",
    mutate: (s) => {
      const r = gatewayRoute(s, 1);
      delete r.to;
      delete r.rewrite;
      r.redirect = { path: "/v2/me" };
      r.cache = { ttl: "10s" };
    },
    code: "E_SPEC_ROUTE_ACTION",
    path: "gateway.routes[1].cache",
    message: "applies only to routes that forward",
  },

  // ── ranges ──
  {
    claim: "rejects_port_above_65535",
    mutate: (s) => (s.services.orders.port = 70000),
    code: "E_SPEC_OUT_OF_RANGE",
    path: "services.orders.port",
  },
  {
    claim: "rejects_negative_replicas",
    mutate: (s) => (s.services.orders.replicas = -1),
    code: "E_SPEC_OUT_OF_RANGE",
    path: "services.orders.replicas",
  },
  {
    claim: "rejects_empty_audiences",
    mutate: (s) => (s.gateway.jwt.main.audiences = []),
    code: "E_SPEC_OUT_OF_RANGE",
    path: "gateway.jwt.main.audiences",
  },
  // Durations and sizes past an exact integer of ms or bytes validated, then the proxies refused the config
  // at start (E_RT_CONFIG_INVALID); 0 in the Prometheus config crashed synth and observability.
  {
    claim: "rejects_a_duration_beyond_1000y",
    mutate: (s) => (gatewayRoute(s, 0).cache = { ttl: "999999y" }),
    code: "E_SPEC_OUT_OF_RANGE",
    path: "gateway.routes[0].cache.ttl",
    message: "must be at most 1000y",
  },
  // A duration the proxies arm as a timer: Node fires a timer above 2^31−1 ms (~24.8 days) after 1 ms,
  // so a 30d timeout was an immediate one (and a 30d health-check interval probed every millisecond).
  ...(
    [
      ["a_service_timeout", (s: Doc) => (s.services.orders.timeout = "30d"), "services.orders.timeout"],
      ["a_route_timeout", (s: Doc) => (gatewayRoute(s, 0).timeout = "25d"), "gateway.routes[0].timeout"],
      [
        "a_per_try_timeout",
        (s: Doc) => (gatewayRoute(s, 0).retries = { perTryTimeout: "1y" }),
        "gateway.routes[0].retries.perTryTimeout",
      ],
      [
        "a_health_check_interval",
        (s: Doc) => (s.services.orders.healthCheck = { path: "/healthz", interval: "30d" }),
        "services.orders.healthCheck.interval",
      ],
      [
        "a_fault_delay",
        (s: Doc) => (gatewayRoute(s, 1).fault = { delay: { duration: "30d", percent: 1 } }),
        "gateway.routes[1].fault.delay.duration",
      ],
      [
        "a_drain_timeout",
        (s: Doc) => (s.gateway.limits = { drainTimeout: "100d" }),
        "gateway.limits.drainTimeout",
      ],
      [
        "an_external_connect_timeout",
        (s: Doc) => (s.external["card-processor"].connectTimeout = "30d"),
        "external.card-processor.connectTimeout",
      ],
    ] as const
  ).map(([what, mutate, path]): Row => ({
    claim: `rejects_${what}_above_the_24d_a_timer_holds`,
    mutate,
    code: "E_SPEC_OUT_OF_RANGE",
    path,
    message: "must be at most 24d",
  })),
  {
    claim: "rejects_a_duration_too_long_for_a_number",
    mutate: (s) => (gatewayRoute(s, 0).timeout = `${"9".repeat(400)}ms`),
    code: "E_SPEC_OUT_OF_RANGE",
    path: "gateway.routes[0].timeout",
  },
  {
    claim: "rejects_a_size_beyond_a_pebibyte",
    mutate: (s) => (s.gateway.limits = { maxBodySize: "99999999GiB" }),
    code: "E_SPEC_OUT_OF_RANGE",
    path: "gateway.limits.maxBodySize",
    message: "must be at most 1048576GiB",
  },
  {
    claim: "rejects_a_scrape_interval_of_0s",
    mutate: (s) => (s.observability.metrics = { scrapeInterval: "0s" }),
    code: "E_SPEC_OUT_OF_RANGE",
    path: "observability.metrics.scrapeInterval",
  },
  {
    // rate(…[5m]) needs two samples in 5 minutes: every recording rule and SLO alert stayed empty.
    claim: "rejects_a_scrape_interval_too_long_for_the_5m_rates_the_rules_read",
    mutate: (s) => (s.observability.metrics = { scrapeInterval: "3m" }),
    code: "E_SPEC_OUT_OF_RANGE",
    path: "observability.metrics.scrapeInterval",
    message: "no alert would ever fire",
  },
  {
    claim: "rejects_a_metrics_retention_under_1ms",
    mutate: (s) => (s.observability.metrics = { retention: "0.4ms" }),
    code: "E_SPEC_OUT_OF_RANGE",
    path: "observability.metrics.retention",
  },
  {
    claim: "rejects_an_slo_window_of_0s",
    mutate: (s) => (s.observability.slos[0].window = "0s"),
    code: "E_SPEC_OUT_OF_RANGE",
    path: "observability.slos[0].window",
  },
  {
    claim: "rejects_more_than_ten_retry_attempts",
    mutate: (s) => (s.services.orders.retries = { attempts: 11 }),
    code: "E_SPEC_OUT_OF_RANGE",
    path: "services.orders.retries.attempts",
  },
  {
    claim: "rejects_split_with_one_entry",
    mutate: (s) => {
      delete gatewayRoute(s, 1).to;
      gatewayRoute(s, 1).split = [{ service: "users", weight: 100 }];
    },
    code: "E_SPEC_OUT_OF_RANGE",
    path: "gateway.routes[1].split",
  },

  // ── formats ──
  {
    claim: "rejects_duration_in_words",
    mutate: (s) => (s.services.orders.timeout = "5 seconds"),
    code: "E_SPEC_INVALID_DURATION",
    path: "services.orders.timeout",
  },
  {
    claim: "rejects_rate_limit_period_without_unit",
    mutate: (s) => (gatewayRoute(s, 1).rateLimit.per = "60"),
    code: "E_SPEC_INVALID_DURATION",
    path: "gateway.routes[1].rateLimit.per",
  },
  {
    claim: "rejects_malformed_size",
    mutate: (s) => (s.services.orders.limits = { maxBodySize: "1MB!" }),
    code: "E_SPEC_INVALID_SIZE",
    path: "services.orders.limits.maxBodySize",
  },
  {
    claim: "rejects_upper_case_service_name",
    mutate: (s) => {
      s.services.Orders = s.services.orders;
      delete s.services.orders;
      s.services.payments.allow[0].from = ["gateway"];
    },
    code: "E_SPEC_INVALID_NAME",
    path: "services.Orders",
  },
  {
    claim: "rejects_route_name_with_underscore",
    mutate: (s) => (gatewayRoute(s, 1).name = "Bad_Name"),
    code: "E_SPEC_INVALID_NAME",
    path: "gateway.routes[1].name",
  },
  {
    claim: "rejects_invalid_mesh_name",
    mutate: (s) => (s.name = "-base"),
    code: "E_SPEC_INVALID_NAME",
    path: "name",
  },
  {
    claim: "rejects_service_named_gateway",
    mutate: (s) => (s.services.gateway = { image: "ghcr.io/acme/gw:1.0.0", port: 8080 }),
    code: "E_SPEC_RESERVED_NAME",
    path: "services.gateway",
  },
  {
    claim: "rejects_service_named_internet",
    mutate: (s) => (s.services.internet = { image: "ghcr.io/acme/net:1.0.0", port: 8080 }),
    code: "E_SPEC_RESERVED_NAME",
    path: "services.internet",
  },
  {
    claim: "rejects_host_with_empty_label",
    mutate: (s) => (s.gateway.hosts = ["api..base.example"]),
    code: "E_SPEC_INVALID_HOST",
    path: "gateway.hosts[0]",
  },
  {
    claim: "rejects_upper_case_trust_domain",
    mutate: (s) => (s.trustDomain = "Base.Example"),
    code: "E_SPEC_INVALID_TRUST_DOMAIN",
    path: "trustDomain",
  },
  {
    claim: "rejects_path_pattern_without_leading_slash",
    mutate: (s) => (gatewayRoute(s, 1).match.path = "api/me"),
    code: "E_SPEC_INVALID_PATH_PATTERN",
    path: "gateway.routes[1].match.path",
  },
  {
    claim: "rejects_path_pattern_with_empty_segment",
    mutate: (s) => (gatewayRoute(s, 1).match.path = "/api//me"),
    code: "E_SPEC_INVALID_PATH_PATTERN",
    path: "gateway.routes[1].match.path",
  },
  {
    claim: "rejects_path_pattern_with_dot_dot",
    mutate: (s) => (s.services.orders.allow[0].paths = ["/orders/../admin"]),
    code: "E_SPEC_INVALID_PATH_PATTERN",
    path: "services.orders.allow[0].paths[0]",
  },
  {
    claim: "rejects_path_pattern_with_percent_encoding",
    mutate: (s) => (s.services.orders.healthCheck.path = "/%2e/healthz"),
    code: "E_SPEC_INVALID_PATH_PATTERN",
    path: "services.orders.healthCheck.path",
  },
  {
    claim: "rejects_path_pattern_with_trailing_slash",
    mutate: (s) => (s.services.orders.routes[0].match.path = "/orders/"),
    code: "E_SPEC_INVALID_PATH_PATTERN",
    path: "services.orders.routes[0].match.path",
  },
  {
    claim: "rejects_double_star_before_the_last_segment",
    mutate: (s) => (s.services.users.allow[0].paths = ["/**/me"]),
    code: "E_SPEC_INVALID_PATH_PATTERN",
    path: "services.users.allow[0].paths[0]",
  },
  {
    claim: "rejects_repeated_path_param",
    mutate: (s) => (gatewayRoute(s, 0).match.path = "/api/orders/{id}/{id}"),
    code: "E_SPEC_INVALID_PATH_PATTERN",
    path: "gateway.routes[0].match.path",
  },
  {
    claim: "rejects_header_regex_that_does_not_compile",
    mutate: (s) => (gatewayRoute(s, 0).match.headers = { "x-tenant": { regex: "([a-z" } }),
    code: "E_SPEC_INVALID_REGEX",
    path: "gateway.routes[0].match.headers.x-tenant.regex",
  },
  {
    claim: "rejects_query_regex_with_a_backreference_that_needs_backtracking",
    mutate: (s) => (gatewayRoute(s, 0).match.query = { v: { regex: "(a+)\\1" } }),
    code: "E_SPEC_INVALID_REGEX",
    path: "gateway.routes[0].match.query.v.regex",
  },
  {
    claim: "rejects_cidr_prefix_too_long",
    mutate: (s) => (gatewayRoute(s, 2).auth.clientIps = ["10.0.0.0/33"]),
    code: "E_SPEC_INVALID_CIDR",
    path: "gateway.routes[2].auth.clientIps[0]",
  },
  {
    claim: "rejects_cidr_that_is_not_an_address",
    mutate: (s) => (gatewayRoute(s, 2).auth.clientIps = ["203.0.113.0/24", "office-network"]),
    code: "E_SPEC_INVALID_CIDR",
    path: "gateway.routes[2].auth.clientIps[1]",
  },
  {
    claim: "rejects_plain_http_jwks_uri_off_localhost",
    mutate: (s) => (s.gateway.jwt.main.jwksUri = "http://id.base.example/.well-known/jwks.json"),
    code: "E_SPEC_INVALID_URL",
    path: "gateway.jwt.main.jwksUri",
  },
  {
    claim: "rejects_redis_url_with_http_scheme",
    mutate: (s) => (s.gateway.rateLimitStore = { redis: { url: "http://redis:6379", failMode: "open" } }),
    code: "E_SPEC_INVALID_URL",
    path: "gateway.rateLimitStore.redis.url",
  },
  {
    // The gateway's Redis client refuses these at start; the spec must refuse them first, not a
    // crash-looping gateway after the deploy.
    claim: "rejects_redis_url_whose_path_is_not_a_database_number",
    mutate: (s) =>
      (s.gateway.rateLimitStore = { redis: { url: "redis://redis:6379/limits", failMode: "open" } }),
    code: "E_SPEC_INVALID_URL",
    path: "gateway.rateLimitStore.redis.url",
  },
  {
    claim: "rejects_cache_redis_url_with_a_query",
    mutate: (s) => (s.gateway.cache = { redis: { url: "redis://redis:6379/0?ssl=true" } }),
    code: "E_SPEC_INVALID_URL",
    path: "gateway.cache.redis.url",
  },
  {
    claim: "rejects_rate_limit_period_of_zero",
    mutate: (s) => (gatewayRoute(s, 0).rateLimit = { requests: 5, per: "0s" }),
    code: "E_SPEC_OUT_OF_RANGE",
    path: "gateway.routes[0].rateLimit.per",
  },
  {
    claim: "rejects_rate_limit_too_fine_grained_to_count_exactly",
    mutate: (s) => (gatewayRoute(s, 0).rateLimit = { requests: 1, per: "1d", burst: 1_000_000_007 }),
    code: "E_SPEC_OUT_OF_RANGE",
    path: "gateway.routes[0].rateLimit",
  },
  {
    claim: "rejects_otlp_endpoint_that_is_not_a_url",
    mutate: (s) => (s.observability.tracing = { otlpEndpoint: "collector:4318" }),
    code: "E_SPEC_INVALID_URL",
    path: "observability.tracing.otlpEndpoint",
  },
  {
    claim: "rejects_latest_image_tag",
    mutate: (s) => (s.services.orders.image = "ghcr.io/acme/orders:latest"),
    code: "E_SPEC_INVALID_IMAGE",
    path: "services.orders.image",
  },
  {
    claim: "rejects_image_without_tag_or_digest",
    mutate: (s) => (s.services.orders.image = "ghcr.io/acme/orders"),
    code: "E_SPEC_INVALID_IMAGE",
    path: "services.orders.image",
  },
  {
    claim: "rejects_key_hash_that_is_not_sha256_hex",
    mutate: (s) => (s.gateway.apiKeys.consumers.acme.keyHashes = ["sha256:abc123"]),
    code: "E_SPEC_INVALID_KEY_HASH",
    path: "gateway.apiKeys.consumers.acme.keyHashes[0]",
  },

  // ── uniqueness ──
  {
    claim: "rejects_duplicate_route_names",
    mutate: (s) => (gatewayRoute(s, 1).name = "get-order"),
    code: "E_SPEC_DUPLICATE_NAME",
    path: "gateway.routes[1].name",
  },
  {
    claim: "rejects_key_hash_shared_by_two_consumers",
    mutate: (s) => s.gateway.apiKeys.consumers.globex.keyHashes.push(HASH_A),
    code: "E_SPEC_DUPLICATE_NAME",
    path: "gateway.apiKeys.consumers.globex.keyHashes[1]",
  },
  {
    claim: "rejects_callee_listed_twice",
    mutate: (s) => (s.services.orders.calls = ["payments", "payments"]),
    code: "E_SPEC_DUPLICATE_NAME",
    path: "services.orders.calls[1]",
  },
  {
    claim: "rejects_duplicate_listener_ports",
    mutate: (s) => s.gateway.listeners.push({ name: "http-alt", port: 8080, protocol: "http" }),
    code: "E_SPEC_DUPLICATE_PORT",
    path: "gateway.listeners[2].port",
  },
  {
    claim: "rejects_listener_on_the_admin_port",
    mutate: (s) => (s.gateway.listeners[0].port = 9901),
    code: "E_SPEC_DUPLICATE_PORT",
    path: "gateway.listeners[0].port",
  },

  // ── references ──
  {
    claim: "rejects_unknown_service_in_calls",
    mutate: (s) => (s.services.orders.calls = ["paymnts"]),
    code: "E_SPEC_UNKNOWN_REFERENCE",
    path: "services.orders.calls[0]",
    message: 'did you mean "payments"',
  },
  {
    claim: "rejects_unknown_peer_in_allow_from",
    mutate: (s) => (s.services.payments.allow[0].from = ["ordres"]),
    code: "E_SPEC_UNKNOWN_REFERENCE",
    path: "services.payments.allow[0].from[0]",
  },
  {
    claim: "rejects_unknown_service_in_route_to",
    mutate: (s) => (gatewayRoute(s, 0).to = "order"),
    code: "E_SPEC_UNKNOWN_REFERENCE",
    path: "gateway.routes[0].to",
  },
  {
    claim: "rejects_unknown_service_in_route_to_object",
    mutate: (s) => (gatewayRoute(s, 0).to = { service: "order" }),
    code: "E_SPEC_UNKNOWN_REFERENCE",
    path: "gateway.routes[0].to.service",
  },
  {
    claim: "rejects_unknown_service_in_split",
    mutate: (s) => {
      delete gatewayRoute(s, 1).to;
      gatewayRoute(s, 1).split = [
        { service: "users", weight: 90 },
        { service: "users-v2", weight: 10 },
      ];
    },
    code: "E_SPEC_UNKNOWN_REFERENCE",
    path: "gateway.routes[1].split[1].service",
  },
  {
    claim: "rejects_unknown_mirror_service",
    mutate: (s) => (gatewayRoute(s, 1).mirror = { service: "users-shadow", percent: 10 }),
    code: "E_SPEC_UNKNOWN_REFERENCE",
    path: "gateway.routes[1].mirror.service",
  },
  {
    claim: "rejects_unknown_aggregate_service",
    mutate: (s) => {
      const r = gatewayRoute(s, 1);
      delete r.to;
      delete r.rewrite;
      r.aggregate = { me: { service: "users", path: "/me" }, cart: { service: "carts", path: "/cart" } };
    },
    code: "E_SPEC_UNKNOWN_REFERENCE",
    path: "gateway.routes[1].aggregate.cart.service",
  },
  {
    claim: "rejects_unknown_jwt_provider",
    mutate: (s) => (gatewayRoute(s, 0).auth.jwt = "mian"),
    code: "E_SPEC_UNKNOWN_REFERENCE",
    path: "gateway.routes[0].auth.jwt",
    message: 'did you mean "main"',
  },
  {
    claim: "rejects_unknown_jwt_provider_in_a_list",
    mutate: (s) => (gatewayRoute(s, 0).auth.jwt = ["main", "partner"]),
    code: "E_SPEC_UNKNOWN_REFERENCE",
    path: "gateway.routes[0].auth.jwt[1]",
  },
  {
    claim: "rejects_unknown_api_key_consumer",
    mutate: (s) => (gatewayRoute(s, 2).auth.consumers = ["initech"]),
    code: "E_SPEC_UNKNOWN_REFERENCE",
    path: "gateway.routes[2].auth.consumers[0]",
  },
  {
    claim: "rejects_unknown_consumer_group",
    mutate: (s) => (gatewayRoute(s, 2).auth.groups = ["partner"]),
    code: "E_SPEC_UNKNOWN_REFERENCE",
    path: "gateway.routes[2].auth.groups[0]",
    message: 'did you mean "partners"',
  },
  {
    claim: "rejects_api_key_auth_without_api_keys_section",
    mutate: (s) => {
      delete s.gateway.apiKeys;
      delete gatewayRoute(s, 2).auth.groups;
    },
    code: "E_SPEC_UNKNOWN_REFERENCE",
    path: "gateway.routes[2].auth.apiKey",
  },
  {
    claim: "rejects_unknown_route_in_slo",
    mutate: (s) => (s.observability.slos[0].route = "get-orders"),
    code: "E_SPEC_UNKNOWN_REFERENCE",
    path: "observability.slos[0].route",
  },
  {
    claim: "rejects_unknown_service_in_slo",
    mutate: (s) => (s.observability.slos = [{ service: "billing", availability: 99.9 }]),
    code: "E_SPEC_UNKNOWN_REFERENCE",
    path: "observability.slos[0].service",
  },
  {
    claim: "rejects_route_host_the_gateway_does_not_serve",
    mutate: (s) => (gatewayRoute(s, 0).match.hosts = ["admin.base.example"]),
    code: "E_SPEC_UNKNOWN_REFERENCE",
    path: "gateway.routes[0].match.hosts[0]",
  },
  {
    claim: "rejects_gateway_in_allow_from_without_a_gateway",
    mutate: (s) => {
      delete s.gateway;
      s.observability.slos = [];
    },
    code: "E_SPEC_UNKNOWN_REFERENCE",
    path: "services.orders.allow[0].from[0]",
  },
  {
    claim: "rejects_service_calling_itself",
    mutate: (s) => (s.services.orders.calls = ["payments", "orders"]),
    code: "E_SPEC_SELF_REFERENCE",
    path: "services.orders.calls[1]",
  },
  {
    claim: "rejects_service_allowing_itself",
    mutate: (s) => (s.services.payments.allow[0].from = ["orders", "payments"]),
    code: "E_SPEC_SELF_REFERENCE",
    path: "services.payments.allow[0].from[1]",
  },

  // ── external destinations ──
  {
    claim: "rejects_external_destination_named_like_a_service",
    mutate: (s) => (s.external.orders = { host: "orders.example.com", port: 443 }),
    code: "E_SPEC_DUPLICATE_NAME",
    path: "external.orders",
  },
  {
    claim: "rejects_external_destination_with_a_reserved_name",
    mutate: (s) => (s.external.internet = { host: "example.com", port: 443 }),
    code: "E_SPEC_RESERVED_NAME",
    path: "external.internet",
  },
  {
    claim: "rejects_external_destination_without_a_port",
    mutate: (s) => delete s.external["card-processor"].port,
    code: "E_SPEC_MISSING_FIELD",
    path: "external.card-processor.port",
  },
  {
    claim: "rejects_external_destination_with_an_unknown_field",
    mutate: (s) => (s.external["card-processor"].hosts = ["api.stripe.com"]),
    code: "E_SPEC_UNKNOWN_KEY",
    path: "external.card-processor.hosts",
    message: 'did you mean "host"',
  },
  {
    claim: "rejects_a_wildcard_of_a_top_level_domain",
    mutate: (s) => (s.external["card-processor"].host = "*.com"),
    code: "E_SPEC_INVALID_HOST",
    path: "external.card-processor.host",
    message: "top-level domain",
  },
  {
    claim: "rejects_a_wildcard_inside_a_name",
    mutate: (s) => (s.external["card-processor"].host = "api.*.stripe.com"),
    code: "E_SPEC_INVALID_HOST",
    path: "external.card-processor.host",
    message: "not a DNS name",
  },
  {
    claim: "rejects_a_partial_wildcard_label",
    mutate: (s) => (s.external["card-processor"].host = "*api.stripe.com"),
    code: "E_SPEC_INVALID_HOST",
    path: "external.card-processor.host",
    message: "not a DNS name",
  },
  {
    claim: "rejects_a_wildcard_of_an_address",
    mutate: (s) => (s.external["card-processor"].host = "*.10.0.0.1"),
    code: "E_SPEC_INVALID_HOST",
    path: "external.card-processor.host",
    message: "wildcard of no DNS name",
  },
  {
    claim: "rejects_a_wildcard_over_kubernetes_service_names",
    mutate: (s) => (s.external["card-processor"].host = "*.svc.cluster.local"),
    code: "E_SPEC_INVALID_HOST",
    path: "external.card-processor.host",
    message: "Kubernetes Service names",
  },
  {
    claim: "rejects_a_range_with_address_bits_past_its_prefix",
    mutate: (s) => (s.external["card-processor"].host = "10.20.1.0/16"),
    code: "E_SPEC_INVALID_HOST",
    path: "external.card-processor.host",
    message: "past its /16 prefix",
  },
  {
    claim: "rejects_a_malformed_range",
    mutate: (s) => (s.external["card-processor"].host = "10.20.0.0/40"),
    code: "E_SPEC_INVALID_HOST",
    path: "external.card-processor.host",
    message: "is not a CIDR range",
  },
  {
    claim: "rejects_a_range_holding_the_cloud_metadata_address",
    mutate: (s) => (s.external["card-processor"].host = "169.254.0.0/16"),
    code: "E_SPEC_INVALID_HOST",
    path: "external.card-processor.host",
    message: "link-local (cloud metadata)",
  },
  {
    claim: "rejects_every_address_as_a_range",
    mutate: (s) => (s.external["card-processor"].host = "0.0.0.0/0"),
    code: "E_SPEC_INVALID_HOST",
    path: "external.card-processor.host",
    message: "loopback",
  },
  {
    claim: "rejects_an_upper_case_wildcard",
    mutate: (s) => (s.external["card-processor"].host = "*.Stripe.com"),
    code: "E_SPEC_INVALID_HOST",
    path: "external.card-processor.host",
    message: "upper-case",
  },
  {
    claim: "rejects_upper_case_external_host",
    mutate: (s) => (s.external["card-processor"].host = "API.stripe.com"),
    code: "E_SPEC_INVALID_HOST",
    path: "external.card-processor.host",
    message: "upper-case",
  },
  {
    claim: "rejects_url_as_external_host",
    mutate: (s) => (s.external["card-processor"].host = "https://api.stripe.com"),
    code: "E_SPEC_INVALID_HOST",
    path: "external.card-processor.host",
  },
  {
    claim: "rejects_malformed_ipv4_external_host",
    mutate: (s) => (s.external["card-processor"].host = "10.0.0.256"),
    code: "E_SPEC_INVALID_HOST",
    path: "external.card-processor.host",
    message: "not a valid IP address",
  },
  {
    claim: "rejects_bracketed_ipv6_external_host",
    mutate: (s) => (s.external["card-processor"].host = "[2001:db8::1]"),
    code: "E_SPEC_INVALID_HOST",
    path: "external.card-processor.host",
    message: "without them",
  },
  {
    claim: "rejects_two_external_destinations_for_one_host_and_port",
    mutate: (s) => (s.external.stripe = { host: "api.stripe.com", port: 443 }),
    code: "E_SPEC_DUPLICATE_NAME",
    path: "external.stripe.host",
  },
  {
    claim: "rejects_the_same_wildcard_at_the_same_port_twice",
    mutate: (s) => {
      s.external.buckets = { host: "*.s3.amazonaws.com", port: 443 };
      s.external.objects = { host: "*.s3.amazonaws.com", port: 443 };
    },
    code: "E_SPEC_DUPLICATE_NAME",
    path: "external.objects.host",
  },
  {
    claim: "rejects_ipv6_destination_written_twice_differently",
    mutate: (s) => {
      s.external.mail = { host: "2001:db8::25", port: 587 };
      s.external.smtp = { host: "2001:DB8:0:0::25", port: 587 };
    },
    code: "E_SPEC_DUPLICATE_NAME",
    path: "external.smtp.host",
  },
  {
    claim: "rejects_gateway_allowed_to_an_external_destination_without_a_gateway",
    mutate: (s) => {
      s.external["card-processor"].allow[0].from = ["gateway"];
      delete s.gateway;
    },
    code: "E_SPEC_UNKNOWN_REFERENCE",
    path: "external.card-processor.allow[0].from[0]",
    message: "the spec has no gateway",
  },
  {
    claim: "rejects_zero_max_connections_to_an_external_destination",
    mutate: (s) => (s.external["card-processor"].maxConnections = 0),
    code: "E_SPEC_OUT_OF_RANGE",
    path: "external.card-processor.maxConnections",
  },
  {
    claim: "rejects_a_local_port_pinned_twice",
    mutate: (s) => {
      s.services.orders.localPort = 15432;
      s.external["card-processor"].localPort = 15432;
    },
    code: "E_SPEC_DUPLICATE_PORT",
    path: "external.card-processor.localPort",
    message: "local port 15432 is already pinned by services.orders",
  },
  {
    claim: "rejects_a_local_port_outside_the_sidecars_range",
    mutate: (s) => (s.services.orders.localPort = 5432),
    code: "E_SPEC_OUT_OF_RANGE",
    path: "services.orders.localPort",
  },
  {
    claim: "rejects_a_local_port_on_a_wildcard_destination",
    mutate: (s) => {
      s.external.buckets = {
        host: "*.s3.example.com",
        port: 443,
        localPort: 15443,
        allow: [{ from: ["orders"] }],
      };
    },
    code: "E_SPEC_LOCAL_PORT",
    path: "external.buckets.localPort",
    message: "a wildcard (*.s3.example.com): it has no local port",
  },
  {
    claim: "rejects_a_share_that_is_not_a_boolean",
    mutate: (s) => (s.external["card-processor"].share = { identity: "yes" }),
    code: "E_SPEC_INVALID_TYPE",
    path: "external.card-processor.share.identity",
  },
  {
    claim: "rejects_an_unknown_kind_of_client_detail_to_share",
    mutate: (s) => (s.external["card-processor"].share = { email: true }),
    code: "E_SPEC_UNKNOWN_KEY",
    path: "external.card-processor.share.email",
  },
  {
    claim: "rejects_route_to_an_external_destination_that_does_not_allow_the_gateway",
    mutate: (s) => (s.gateway.routes[0].to = { external: "card-processor" }),
    code: "E_SPEC_EXTERNAL_ROUTE",
    path: "gateway.routes[0].to.external",
    message: 'external "card-processor" does not allow the gateway',
  },
  {
    claim: "rejects_route_to_a_wildcard_external_destination",
    mutate: (s) => {
      s.external.buckets = { host: "*.s3.example.com", port: 443, allow: [{ from: ["gateway"] }] };
      s.gateway.routes[0].to = { external: "buckets" };
    },
    code: "E_SPEC_EXTERNAL_ROUTE",
    path: "gateway.routes[0].to.external",
    message: "a wildcard (*.s3.example.com): a route needs one host",
  },
  {
    claim: "rejects_route_to_an_external_address_range",
    mutate: (s) => {
      s.external.appliances = { host: "10.40.0.0/24", port: 8443, allow: [{ from: ["gateway"] }] };
      s.gateway.routes[0].to = { external: "appliances" };
    },
    code: "E_SPEC_EXTERNAL_ROUTE",
    path: "gateway.routes[0].to.external",
    message: "an address range (10.40.0.0/24)",
  },
  {
    claim: "rejects_route_to_a_misspelt_external_destination",
    mutate: (s) => (s.gateway.routes[0].to = { external: "card-procesor" }),
    code: "E_SPEC_UNKNOWN_REFERENCE",
    path: "gateway.routes[0].to.external",
    message: 'did you mean "card-processor"',
  },
  {
    claim: "rejects_a_split_entry_to_an_external_destination_that_does_not_allow_the_gateway",
    mutate: (s) => {
      delete s.gateway.routes[0].to;
      s.gateway.routes[0].split = [
        { service: "orders", weight: 90 },
        { external: "card-processor", weight: 10 },
      ];
    },
    code: "E_SPEC_EXTERNAL_ROUTE",
    path: "gateway.routes[0].split[1].external",
    message: 'external "card-processor" does not allow the gateway',
  },
  {
    claim: "rejects_a_split_entry_to_a_wildcard_external_destination",
    mutate: (s) => {
      s.external.buckets = { host: "*.s3.example.com", port: 443, allow: [{ from: ["gateway"] }] };
      delete s.gateway.routes[0].to;
      s.gateway.routes[0].split = [
        { external: "buckets", weight: 50 },
        { service: "orders", weight: 50 },
      ];
    },
    code: "E_SPEC_EXTERNAL_ROUTE",
    path: "gateway.routes[0].split[0].external",
    message: "a wildcard (*.s3.example.com): a route needs one host",
  },
  {
    claim: "rejects_a_split_entry_to_a_misspelt_external_destination",
    mutate: (s) => {
      delete s.gateway.routes[0].to;
      s.gateway.routes[0].split = [
        { external: "card-procesor", weight: 50 },
        { service: "orders", weight: 50 },
      ];
    },
    code: "E_SPEC_UNKNOWN_REFERENCE",
    path: "gateway.routes[0].split[0].external",
    message: 'did you mean "card-processor"',
  },
  {
    claim: "rejects_the_same_external_destination_twice_in_a_split",
    mutate: (s) => {
      s.external["card-processor"].allow.push({ from: ["gateway"] });
      delete s.gateway.routes[0].to;
      s.gateway.routes[0].split = [
        { external: "card-processor", weight: 50 },
        { external: "card-processor", weight: 50 },
      ];
    },
    code: "E_SPEC_DUPLICATE_NAME",
    path: "gateway.routes[0].split[1].external",
    message: 'external destination "card-processor" appears twice in the split',
  },
  {
    claim: "rejects_a_split_entry_naming_both_a_service_and_an_external_destination",
    mutate: (s) => {
      delete s.gateway.routes[0].to;
      s.gateway.routes[0].split = [
        { service: "orders", external: "card-processor", weight: 50 },
        { service: "orders", weight: 50 },
      ];
    },
    code: "E_SPEC_INVALID_TYPE",
    path: "gateway.routes[0].split[0]",
  },
  {
    claim: "rejects_an_aggregate_part_naming_both_a_service_and_an_external_destination",
    mutate: (s) => {
      delete s.gateway.routes[0].to;
      s.gateway.routes[0].aggregate = {
        a: { service: "orders", external: "card-processor", path: "/x" },
      };
    },
    code: "E_SPEC_ROUTE_ACTION",
    path: "gateway.routes[0].aggregate.a",
    message: "aggregate part a names both a service and an external destination",
  },
  {
    claim: "rejects_an_aggregate_part_naming_neither_a_service_nor_an_external_destination",
    mutate: (s) => {
      delete s.gateway.routes[0].to;
      s.gateway.routes[0].aggregate = { a: { path: "/x" } };
    },
    code: "E_SPEC_ROUTE_ACTION",
    path: "gateway.routes[0].aggregate.a",
    message: "aggregate part a names neither a service nor an external destination",
  },
  {
    claim: "rejects_an_aggregate_part_to_an_external_destination_that_does_not_allow_the_gateway",
    mutate: (s) => {
      delete s.gateway.routes[0].to;
      s.gateway.routes[0].aggregate = { a: { external: "card-processor", path: "/x" } };
    },
    code: "E_SPEC_EXTERNAL_ROUTE",
    path: "gateway.routes[0].aggregate.a.external",
    message: 'external "card-processor" does not allow the gateway',
  },
  {
    claim: "rejects_route_target_naming_both_a_service_and_an_external_destination",
    mutate: (s) => (s.gateway.routes[0].to = { service: "orders", external: "card-processor" }),
    code: "E_SPEC_INVALID_TYPE",
    path: "gateway.routes[0].to",
  },
  {
    claim: "rejects_unknown_service_allowed_to_an_external_destination",
    mutate: (s) => (s.external["card-processor"].allow[0].from = ["payment"]),
    code: "E_SPEC_UNKNOWN_REFERENCE",
    path: "external.card-processor.allow[0].from[0]",
    message: 'did you mean "payments"',
  },
  {
    claim: "rejects_call_to_a_misspelt_external_destination",
    mutate: (s) => (s.services.payments.calls = ["card-procesor"]),
    code: "E_SPEC_UNKNOWN_REFERENCE",
    path: "services.payments.calls[0]",
    message: 'did you mean "card-processor"',
  },
  {
    claim: "rejects_ca_on_an_external_destination_whose_tls_the_app_does",
    mutate: (s) => (s.external["card-processor"].ca = STATIC_CA_PEM),
    code: "E_SPEC_TLS_CONFIG",
    path: "external.card-processor.ca",
    message: "only used when the sidecar originates TLS",
  },
  {
    claim: "rejects_a_client_certificate_on_an_external_destination_whose_tls_the_app_does",
    mutate: (s) => (s.external["card-processor"].clientCertificate = { secret: "stripe-client" }),
    code: "E_SPEC_TLS_CONFIG",
    path: "external.card-processor.clientCertificate",
    message: "only presented when the sidecar originates TLS",
  },
  {
    claim: "rejects_a_client_certificate_with_both_a_secret_and_files",
    mutate: (s) => {
      s.external["card-processor"].tls = "originate";
      s.external["card-processor"].clientCertificate = {
        secret: "stripe-client",
        certFile: "/etc/stripe/tls.crt",
        keyFile: "/etc/stripe/tls.key",
      };
    },
    code: "E_SPEC_TLS_CONFIG",
    path: "external.card-processor.clientCertificate",
    message: "needs either secret, or both certFile and keyFile",
  },
  {
    claim: "rejects_a_client_certificate_file_without_its_key",
    mutate: (s) => {
      s.external["card-processor"].tls = "originate";
      s.external["card-processor"].clientCertificate = { certFile: "/etc/stripe/tls.crt" };
    },
    code: "E_SPEC_TLS_CONFIG",
    path: "external.card-processor.clientCertificate",
    message: "needs either secret, or both certFile and keyFile",
  },
  {
    claim: "rejects_an_empty_client_certificate",
    mutate: (s) => {
      s.external["card-processor"].tls = "originate";
      s.external["card-processor"].clientCertificate = {};
    },
    code: "E_SPEC_TLS_CONFIG",
    path: "external.card-processor.clientCertificate",
    message: "needs either secret, or both certFile and keyFile",
  },
  {
    claim: "rejects_ca_without_a_pem_certificate",
    mutate: (s) => {
      s.external["card-processor"].tls = "originate";
      s.external["card-processor"].ca = "/etc/ssl/certs/partner-ca.pem";
    },
    code: "E_SPEC_TLS_CONFIG",
    path: "external.card-processor.ca",
    message: "holds no PEM certificate",
  },
  {
    claim: "rejects_ca_whose_certificate_does_not_parse",
    mutate: (s) => {
      s.external["card-processor"].tls = "originate";
      s.external["card-processor"].ca =
        `${STATIC_CA_PEM}\n-----BEGIN CERTIFICATE-----\nTUlJQm9ndXM=\n-----END CERTIFICATE-----\n`;
    },
    code: "E_SPEC_TLS_CONFIG",
    path: "external.card-processor.ca",
    message: "certificate 2 of 2 does not parse",
  },
  {
    claim: "rejects_unknown_tls_mode_of_an_external_destination",
    mutate: (s) => (s.external["card-processor"].tls = "mutual"),
    code: "E_SPEC_INVALID_VALUE",
    path: "external.card-processor.tls",
  },

  // ── routes ──
  {
    claim: "rejects_route_without_auth_unless_public",
    mutate: (s) => delete gatewayRoute(s, 0).auth,
    code: "E_SPEC_ROUTE_WITHOUT_AUTH",
    path: "gateway.routes[0]",
  },
  {
    claim: "rejects_route_marked_public_false_without_auth",
    mutate: (s) => (gatewayRoute(s, 1).public = false),
    code: "E_SPEC_ROUTE_WITHOUT_AUTH",
    path: "gateway.routes[1]",
  },
  {
    claim: "rejects_route_with_auth_and_public",
    mutate: (s) => (gatewayRoute(s, 0).public = true),
    code: "E_SPEC_ROUTE_AUTH_AND_PUBLIC",
    path: "gateway.routes[0].public",
  },
  {
    claim: "rejects_route_without_action",
    mutate: (s) => {
      delete gatewayRoute(s, 1).to;
      delete gatewayRoute(s, 1).rewrite;
    },
    code: "E_SPEC_ROUTE_ACTION",
    path: "gateway.routes[1]",
  },
  {
    claim: "rejects_route_with_two_actions",
    mutate: (s) => (gatewayRoute(s, 1).redirect = { path: "/profile" }),
    code: "E_SPEC_ROUTE_ACTION",
    path: "gateway.routes[1]",
  },
  {
    claim: "rejects_rewrite_on_a_route_that_does_not_forward",
    mutate: (s) => {
      delete gatewayRoute(s, 1).to;
      gatewayRoute(s, 1).redirect = { path: "/profile" };
    },
    code: "E_SPEC_ROUTE_ACTION",
    path: "gateway.routes[1].rewrite",
  },
  {
    claim: "rejects_aggregate_without_parts",
    mutate: (s) => {
      const r = gatewayRoute(s, 1);
      delete r.to;
      delete r.rewrite;
      r.aggregate = {};
    },
    code: "E_SPEC_ROUTE_ACTION",
    path: "gateway.routes[1].aggregate",
  },
  {
    claim: "rejects_mirror_without_to_or_split",
    mutate: (s) => {
      const r = gatewayRoute(s, 1);
      delete r.to;
      delete r.rewrite;
      r.redirect = { path: "/profile" };
      r.mirror = { service: "orders" };
    },
    code: "E_SPEC_ROUTE_MIRROR",
    path: "gateway.routes[1].mirror",
  },
  {
    claim: "rejects_mirror_to_the_routes_own_backend",
    mutate: (s) => (gatewayRoute(s, 0).mirror = { service: "orders", percent: 10 }),
    code: "E_SPEC_ROUTE_MIRROR",
    path: "gateway.routes[0].mirror.service",
  },
  {
    claim: "rejects_mirror_to_a_service_of_the_split",
    mutate: (s) => {
      const r = gatewayRoute(s, 0);
      delete r.to;
      r.split = [
        { service: "orders", weight: 50 },
        { service: "payments", weight: 50 },
      ];
      r.mirror = { service: "payments" };
    },
    code: "E_SPEC_ROUTE_MIRROR",
    path: "gateway.routes[0].mirror.service",
  },
  {
    claim: "rejects_split_weights_not_summing_to_100",
    mutate: (s) => {
      delete gatewayRoute(s, 0).to;
      gatewayRoute(s, 0).split = [
        { service: "orders", weight: 60 },
        { service: "payments", weight: 30 },
      ];
    },
    code: "E_SPEC_SPLIT_WEIGHTS",
    path: "gateway.routes[0].split",
  },
  {
    claim: "rejects_rewrite_param_not_captured_by_match",
    mutate: (s) => (gatewayRoute(s, 1).rewrite.path = "/users/{id}"),
    code: "E_SPEC_REWRITE_PARAM",
    path: "gateway.routes[1].rewrite.path",
  },

  // ── auth requirements ──
  {
    claim: "rejects_scopes_without_jwt",
    mutate: (s) => (gatewayRoute(s, 2).auth.scopes = ["orders:write"]),
    code: "E_SPEC_AUTH_REQUIREMENT",
    path: "gateway.routes[2].auth.scopes",
  },
  {
    claim: "rejects_claims_without_jwt",
    mutate: (s) => (gatewayRoute(s, 2).auth.claims = { tier: "gold" }),
    code: "E_SPEC_AUTH_REQUIREMENT",
    path: "gateway.routes[2].auth.claims",
  },
  {
    claim: "rejects_groups_without_api_key",
    mutate: (s) => (gatewayRoute(s, 0).auth.groups = ["partners"]),
    code: "E_SPEC_AUTH_REQUIREMENT",
    path: "gateway.routes[0].auth.groups",
  },
  {
    claim: "rejects_consumers_without_api_key",
    mutate: (s) => (gatewayRoute(s, 0).auth.consumers = ["acme"]),
    code: "E_SPEC_AUTH_REQUIREMENT",
    path: "gateway.routes[0].auth.consumers",
  },
  {
    claim: "rejects_auth_without_mechanism",
    mutate: (s) => (gatewayRoute(s, 0).auth = {}),
    code: "E_SPEC_AUTH_REQUIREMENT",
    path: "gateway.routes[0].auth",
  },
  {
    claim: "rejects_rate_limit_by_subject_on_api_key_route",
    mutate: (s) => (gatewayRoute(s, 2).rateLimit.key = "subject"),
    code: "E_SPEC_AUTH_REQUIREMENT",
    path: "gateway.routes[2].rateLimit.key",
  },
  {
    claim: "rejects_rate_limit_by_consumer_on_jwt_route",
    mutate: (s) => (gatewayRoute(s, 0).rateLimit = { requests: 10, per: "1m", key: "consumer" }),
    code: "E_SPEC_AUTH_REQUIREMENT",
    path: "gateway.routes[0].rateLimit.key",
  },

  // ── JWT providers ──
  {
    claim: "rejects_jwt_algorithm_hs256",
    mutate: (s) => (s.gateway.jwt.main.algorithms = ["HS256"]),
    code: "E_SPEC_JWT_ALGORITHM",
    path: "gateway.jwt.main.algorithms[0]",
  },
  {
    claim: "rejects_jwt_algorithm_none",
    mutate: (s) => (s.gateway.jwt.main.algorithms = ["ES256", "none"]),
    code: "E_SPEC_JWT_ALGORITHM",
    path: "gateway.jwt.main.algorithms[1]",
  },
  {
    claim: "rejects_jwt_provider_with_jwks_uri_and_inline_jwks",
    mutate: (s) => (s.gateway.jwt.main.jwks = { keys: [{ kty: "EC", crv: "P-256", x: "x", y: "y" }] }),
    code: "E_SPEC_JWT_KEYS",
    path: "gateway.jwt.main",
  },
  {
    claim: "rejects_jwt_provider_without_keys",
    mutate: (s) => delete s.gateway.jwt.main.jwksUri,
    code: "E_SPEC_JWT_KEYS",
    path: "gateway.jwt.main",
  },

  // ── TLS ──
  {
    claim: "rejects_https_listener_without_tls",
    mutate: (s) => delete s.gateway.listeners[1].tls,
    code: "E_SPEC_TLS_CONFIG",
    path: "gateway.listeners[1].tls",
  },
  {
    claim: "rejects_http_listener_with_tls",
    mutate: (s) => (s.gateway.listeners[0].tls = s.gateway.listeners[1].tls),
    code: "E_SPEC_TLS_CONFIG",
    path: "gateway.listeners[0].tls",
  },
  {
    claim: "rejects_certificate_without_secret_or_files",
    mutate: (s) => delete s.gateway.listeners[1].tls.certificates[0].secret,
    code: "E_SPEC_TLS_CONFIG",
    path: "gateway.listeners[1].tls.certificates[0]",
  },
  {
    claim: "rejects_certificate_with_cert_file_but_no_key_file",
    mutate: (s) =>
      (s.gateway.listeners[1].tls.certificates[0] = { hosts: ["api.base.example"], certFile: "tls.crt" }),
    code: "E_SPEC_TLS_CONFIG",
    path: "gateway.listeners[1].tls.certificates[0]",
  },

  // ── PROXY protocol ──
  {
    claim: "rejects_proxy_protocol_sources_without_proxy_protocol",
    mutate: (s) => (s.gateway.listeners[0].proxyProtocolSources = ["10.0.0.0/20"]),
    code: "E_SPEC_PROXY_PROTOCOL",
    path: "gateway.listeners[0].proxyProtocolSources",
  },
  {
    claim: "rejects_a_proxy_protocol_source_that_is_not_a_cidr",
    mutate: (s) => {
      s.gateway.listeners[0].proxyProtocol = true;
      s.gateway.listeners[0].proxyProtocolSources = ["10.0.0/20"];
    },
    code: "E_SPEC_INVALID_CIDR",
    path: "gateway.listeners[0].proxyProtocolSources[0]",
  },
  {
    claim: "rejects_a_trusted_proxy_that_is_not_a_cidr",
    mutate: (s) => (s.gateway.clientIp = { trustedProxies: ["10.0.0.0/16", "lb.internal"] }),
    code: "E_SPEC_INVALID_CIDR",
    path: "gateway.clientIp.trustedProxies[1]",
  },
  {
    claim: "rejects_trusted_hops_beside_trusted_proxies",
    mutate: (s) => (s.gateway.clientIp = { trustedHops: 1, trustedProxies: ["10.0.0.0/16"] }),
    code: "E_SPEC_CLIENT_IP",
    path: "gateway.clientIp.trustedHops",
  },

  // ── limits, retries, CA, SLOs ──
  {
    claim: "rejects_gateway_header_timeout_above_15s",
    mutate: (s) => (s.gateway.limits = { headerTimeout: "20s" }),
    code: "E_SPEC_LIMIT_TOO_LOOSE",
    path: "gateway.limits.headerTimeout",
  },
  {
    claim: "rejects_service_header_timeout_above_15s",
    mutate: (s) => (s.services.users.limits = { headerTimeout: "1m" }),
    code: "E_SPEC_LIMIT_TOO_LOOSE",
    path: "services.users.limits.headerTimeout",
  },
  {
    claim: "rejects_a_gateway_request_timeout_shorter_than_the_default_header_timeout",
    mutate: (s) => (s.gateway.limits = { requestTimeout: "5s" }),
    code: "E_SPEC_GATEWAY_TIMEOUTS",
    path: "gateway.limits.requestTimeout",
  },
  {
    claim: "rejects_a_gateway_request_timeout_shorter_than_its_header_timeout",
    mutate: (s) => (s.gateway.limits = { headerTimeout: "3s", requestTimeout: "2s" }),
    code: "E_SPEC_GATEWAY_TIMEOUTS",
    path: "gateway.limits.requestTimeout",
  },
  {
    claim: "rejects_a_gateway_header_timeout_of_zero",
    mutate: (s) => (s.gateway.limits = { headerTimeout: "0s" }),
    code: "E_SPEC_GATEWAY_TIMEOUTS",
    path: "gateway.limits.headerTimeout",
  },
  {
    claim: "rejects_a_gateway_request_timeout_of_zero",
    mutate: (s) => (s.gateway.limits = { requestTimeout: "0s" }),
    code: "E_SPEC_GATEWAY_TIMEOUTS",
    path: "gateway.limits.requestTimeout",
  },
  {
    claim: "rejects_a_gateway_idle_timeout_of_zero",
    mutate: (s) => (s.gateway.limits = { idleTimeout: "0ms" }),
    code: "E_SPEC_GATEWAY_TIMEOUTS",
    path: "gateway.limits.idleTimeout",
  },
  {
    claim: "rejects_jwt_clock_skew_above_5m",
    mutate: (s) => (s.gateway.jwt.main.clockSkew = "10m"),
    code: "E_SPEC_LIMIT_TOO_LOOSE",
    path: "gateway.jwt.main.clockSkew",
  },
  {
    claim: "rejects_per_try_timeout_longer_than_service_timeout",
    mutate: (s) => (s.services.orders.retries = { perTryTimeout: "4s" }),
    code: "E_SPEC_RETRY_TIMEOUT",
    path: "services.orders.retries.perTryTimeout",
  },
  {
    claim: "rejects_per_try_timeout_longer_than_mesh_default_timeout",
    mutate: (s) => (s.mesh = { defaults: { timeout: "1s", retries: { perTryTimeout: "2s" } } }),
    code: "E_SPEC_RETRY_TIMEOUT",
    path: "mesh.defaults.retries.perTryTimeout",
  },
  {
    claim: "rejects_per_try_timeout_longer_than_service_route_timeout",
    mutate: (s) => (s.services.orders.routes[0].retries = { perTryTimeout: "2500ms" }),
    code: "E_SPEC_RETRY_TIMEOUT",
    path: "services.orders.routes[0].retries.perTryTimeout",
  },
  {
    claim: "rejects_per_try_timeout_longer_than_gateway_route_timeout",
    mutate: (s) => {
      gatewayRoute(s, 0).timeout = "1s";
      gatewayRoute(s, 0).retries = { perTryTimeout: "1500ms" };
    },
    code: "E_SPEC_RETRY_TIMEOUT",
    path: "gateway.routes[0].retries.perTryTimeout",
  },
  {
    claim: "rejects_workload_ttl_not_shorter_than_intermediate",
    mutate: (s) => (s.mesh = { ca: { intermediateValidity: "30d", workloadTtl: "30d" } }),
    code: "E_SPEC_CA_LIFETIMES",
    path: "mesh.ca.workloadTtl",
  },
  {
    claim: "rejects_renew_before_not_shorter_than_workload_ttl",
    mutate: (s) => (s.mesh = { ca: { workloadTtl: "24h", renewBefore: "24h" } }),
    code: "E_SPEC_CA_LIFETIMES",
    path: "mesh.ca.renewBefore",
  },
  {
    claim: "rejects_intermediate_outliving_root",
    mutate: (s) => (s.mesh = { ca: { rootValidity: "1y", intermediateValidity: "2y" } }),
    code: "E_SPEC_CA_LIFETIMES",
    path: "mesh.ca.intermediateValidity",
  },
  {
    claim: "rejects_slo_with_route_and_service",
    mutate: (s) => (s.observability.slos[0].service = "orders"),
    code: "E_SPEC_SLO_TARGET",
    path: "observability.slos[0]",
  },
  {
    claim: "rejects_slo_with_neither_route_nor_service",
    mutate: (s) => delete s.observability.slos[0].route,
    code: "E_SPEC_SLO_TARGET",
    path: "observability.slos[0]",
  },
  {
    claim: "rejects_slo_latency_that_is_not_a_histogram_bucket_boundary",
    mutate: (s) => (s.observability.slos[0].latencyP99 = "300ms"),
    code: "E_SPEC_SLO_LATENCY_BUCKET",
    path: "observability.slos[0].latencyP99",
  },
  {
    claim: "rejects_a_retry_budget_on_a_route_because_budgets_belong_to_services",
    mutate: (s) => (s.gateway.routes[0].retries = { attempts: 1, budget: { ratio: 0.5 } }),
    code: "E_SPEC_UNKNOWN_KEY",
    path: "gateway.routes[0].retries.budget",
  },
  // Found by probing: each was once accepted or masked.
  {
    claim: "rejects_a_protocol_relative_redirect_path",
    mutate: (s) => {
      const r = s.gateway.routes[1];
      delete r.to;
      delete r.rewrite;
      r.redirect = { path: "//evil.example" };
    },
    code: "E_SPEC_INVALID_PATH_PATTERN",
    path: "gateway.routes[1].redirect.path",
  },
  {
    claim: "rejects_an_unclosed_param_in_a_rewrite",
    mutate: (s) => (s.gateway.routes[0].rewrite.path = "/orders/{id"),
    code: "E_SPEC_INVALID_PATH_PATTERN",
    path: "gateway.routes[0].rewrite.path",
  },
  {
    claim: "rejects_wildcards_in_a_rewrite",
    mutate: (s) => (s.gateway.routes[0].rewrite.path = "/orders/*"),
    code: "E_SPEC_INVALID_PATH_PATTERN",
    path: "gateway.routes[0].rewrite.path",
  },
  {
    claim: "rejects_dot_segments_in_an_aggregate_part_path",
    mutate: (s) =>
      s.gateway.routes.push({
        name: "dash",
        match: { path: "/api/dash", methods: ["GET"] },
        auth: { jwt: "main" },
        aggregate: { me: { service: "users", path: "/me/../admin" } },
      }),
    code: "E_SPEC_INVALID_PATH_PATTERN",
    path: "gateway.routes[3].aggregate.me.path",
  },
  {
    claim: "rejects_a_route_per_try_timeout_longer_than_the_inherited_service_timeout",
    mutate: (s) => (s.gateway.routes[0].retries = { perTryTimeout: "10s" }),
    code: "E_SPEC_RETRY_TIMEOUT",
    path: "gateway.routes[0].retries.perTryTimeout",
  },
  {
    claim: "keeps_a_type_error_on_a_route_that_is_not_a_mapping",
    mutate: (s) => (s.gateway.routes[1] = "oops"),
    code: "E_SPEC_INVALID_TYPE",
    path: "gateway.routes[1]",
  },
  {
    claim: "keeps_a_type_error_on_a_jwt_provider_that_is_not_a_mapping",
    mutate: (s) => (s.gateway.jwt.main = "oops"),
    code: "E_SPEC_INVALID_TYPE",
    path: "gateway.jwt.main",
  },
  {
    claim: "keeps_the_type_error_beside_a_mirror_on_a_redirect",
    mutate: (s) => {
      const r = s.gateway.routes[1];
      delete r.to;
      delete r.rewrite;
      r.redirect = { path: "/me" };
      r.mirror = "users";
    },
    code: "E_SPEC_INVALID_TYPE",
    path: "gateway.routes[1].mirror",
  },
  {
    claim: "rejects_a_trust_domain_without_letters_or_digits",
    mutate: (s) => (s.trustDomain = "."),
    code: "E_SPEC_INVALID_TRUST_DOMAIN",
    path: "trustDomain",
  },
  // ── API management: transforms, CORS origins, aggregate headers, static routes ──
  {
    claim: "rejects_a_transform_that_sets_a_gateway_owned_header",
    mutate: (s) =>
      (gatewayRoute(s, 0).transform = { request: { headers: { set: { "x-forwarded-for": "1.2.3.4" } } } }),
    code: "E_SPEC_RESERVED_HEADER",
    path: "gateway.routes[0].transform.request.headers.set.x-forwarded-for",
  },
  {
    claim: "rejects_a_rate_limit_keyed_by_the_clients_x_forwarded_for",
    mutate: (s) => (gatewayRoute(s, 1).rateLimit.key = "header:x-forwarded-for"),
    code: "E_SPEC_RESERVED_HEADER",
    path: "gateway.routes[1].rateLimit.key",
    message: "every request could name a fresh bucket",
  },
  {
    claim: "rejects_a_rate_limit_keyed_by_the_request_id",
    mutate: (s) => (gatewayRoute(s, 1).rateLimit.key = "header:x-request-id"),
    code: "E_SPEC_RESERVED_HEADER",
    path: "gateway.routes[1].rateLimit.key",
  },
  // Requests carrying a header name with "_" or "." are refused (400 ambiguous_header_name): a rule reading one
  // from clients could never be met.
  {
    claim: "rejects_a_header_condition_on_a_name_no_request_can_carry",
    mutate: (s) => (gatewayRoute(s, 0).match.headers = { x_tenant: { exact: "acme" } }),
    code: "E_SPEC_AMBIGUOUS_HEADER_NAME",
    path: "gateway.routes[0].match.headers.x_tenant",
    message: "can never be sent",
  },
  {
    claim: "rejects_a_rate_limit_keyed_by_a_header_name_with_a_dot",
    mutate: (s) => (gatewayRoute(s, 1).rateLimit.key = "header:x.tenant"),
    code: "E_SPEC_AMBIGUOUS_HEADER_NAME",
    path: "gateway.routes[1].rateLimit.key",
  },
  {
    claim: "rejects_an_api_key_header_with_an_underscore",
    mutate: (s) => (s.gateway.apiKeys.header = "api_key"),
    code: "E_SPEC_AMBIGUOUS_HEADER_NAME",
    path: "gateway.apiKeys.header",
    message: "api_key",
  },
  {
    claim: "rejects_a_cors_request_header_with_an_underscore",
    mutate: (s) => (gatewayRoute(s, 0).cors = { origins: ["https://app.example"], headers: ["x_trace"] }),
    code: "E_SPEC_AMBIGUOUS_HEADER_NAME",
    path: "gateway.routes[0].cors.headers[0]",
  },
  {
    claim: "rejects_a_transform_that_removes_a_hop_by_hop_header",
    mutate: (s) => (gatewayRoute(s, 0).transform = { response: { headers: { remove: ["connection"] } } }),
    code: "E_SPEC_RESERVED_HEADER",
    path: "gateway.routes[0].transform.response.headers.remove[0]",
  },
  {
    claim: "rejects_a_transform_that_forges_a_principal_header",
    mutate: (s) => {
      s.gateway.jwt.main.forwardClaims = { "x-user": "sub" };
      gatewayRoute(s, 1).transform = { request: { headers: { add: { "x-user": "admin" } } } };
    },
    code: "E_SPEC_RESERVED_HEADER",
    path: "gateway.routes[1].transform.request.headers.add.x-user",
    message: "principal header",
  },
  {
    claim: "rejects_a_transform_in_the_meshgate_header_namespace",
    mutate: (s) =>
      (gatewayRoute(s, 0).transform = { request: { headers: { set: { "x-meshgate-subject": "x" } } } }),
    code: "E_SPEC_RESERVED_HEADER",
    path: "gateway.routes[0].transform.request.headers.set.x-meshgate-subject",
  },
  {
    claim: "rejects_an_aggregate_part_forwarding_a_hop_by_hop_header",
    mutate: (s) =>
      s.gateway.routes.push({
        name: "dash",
        match: { path: "/api/dash", methods: ["GET"] },
        auth: { jwt: "main" },
        aggregate: { me: { service: "users", path: "/me", forwardHeaders: ["te"] } },
      }),
    code: "E_SPEC_RESERVED_HEADER",
    path: "gateway.routes[3].aggregate.me.forwardHeaders[0]",
  },
  {
    claim: "rejects_a_template_with_an_unknown_variable",
    mutate: (s) =>
      (gatewayRoute(s, 0).transform = {
        request: { headers: { set: { "x-env": "${process.env.SECRET}" } } },
      }),
    code: "E_SPEC_INVALID_TEMPLATE",
    path: "gateway.routes[0].transform.request.headers.set.x-env",
    message: "not a template variable",
  },
  {
    claim: "rejects_a_template_naming_a_param_the_route_does_not_capture",
    mutate: (s) =>
      (gatewayRoute(s, 0).transform = { request: { headers: { set: { "x-user": "${params.user}" } } } }),
    code: "E_SPEC_INVALID_TEMPLATE",
    path: "gateway.routes[0].transform.request.headers.set.x-user",
    message: "captures {id}",
  },
  {
    claim: "rejects_an_unclosed_template",
    mutate: (s) =>
      (gatewayRoute(s, 0).transform = { request: { body: { template: { id: "${params.id" } } } }),
    code: "E_SPEC_INVALID_TEMPLATE",
    path: "gateway.routes[0].transform.request.body.template.id",
  },
  {
    claim: "rejects_a_body_path_through_proto",
    mutate: (s) =>
      (gatewayRoute(s, 0).transform = { response: { body: { set: { "__proto__.admin": true } } } }),
    code: "E_SPEC_INVALID_TEMPLATE",
    path: "gateway.routes[0].transform.response.body.set.__proto__.admin",
  },
  {
    claim: "rejects_a_body_rename_into_constructor",
    mutate: (s) =>
      (gatewayRoute(s, 0).transform = { request: { body: { rename: { a: "constructor.prototype.x" } } } }),
    code: "E_SPEC_INVALID_TEMPLATE",
    path: "gateway.routes[0].transform.request.body.rename.a",
  },
  {
    claim: "rejects_a_template_reading_a_claim_through_prototype",
    mutate: (s) =>
      (gatewayRoute(s, 0).transform = {
        request: { headers: { set: { "x-c": "${principal.claims.prototype.x}" } } },
      }),
    code: "E_SPEC_INVALID_TEMPLATE",
    path: "gateway.routes[0].transform.request.headers.set.x-c",
  },
  {
    claim: "rejects_a_request_body_transform_on_an_aggregate_route",
    mutate: (s) =>
      s.gateway.routes.push({
        name: "dash",
        match: { path: "/api/dash", methods: ["GET"] },
        auth: { jwt: "main" },
        aggregate: { me: { service: "users", path: "/me" } },
        transform: { request: { body: { drop: ["x"] } } },
      }),
    code: "E_SPEC_ROUTE_ACTION",
    path: "gateway.routes[3].transform.request.body",
  },
  {
    claim: "rejects_a_request_transform_on_a_static_route",
    mutate: (s) =>
      s.gateway.routes.push({
        name: "site",
        match: { path: "/site/**", methods: ["GET"] },
        public: true,
        static: { dir: "/srv/www" },
        transform: { request: { headers: { set: { "x-a": "b" } } } },
      }),
    code: "E_SPEC_ROUTE_ACTION",
    path: "gateway.routes[3].transform.request",
  },
  {
    claim: "rejects_a_static_route_matching_post",
    mutate: (s) =>
      s.gateway.routes.push({
        name: "site",
        match: { path: "/site/**", methods: ["GET", "POST"] },
        public: true,
        static: { dir: "/srv/www" },
      }),
    code: "E_SPEC_ROUTE_ACTION",
    path: "gateway.routes[3].match.methods",
  },
  {
    claim: "rejects_a_static_index_with_a_slash",
    mutate: (s) =>
      s.gateway.routes.push({
        name: "site",
        match: { path: "/site/**" },
        public: true,
        static: { dir: "/srv/www", index: ["../index.html"] },
      }),
    code: "E_SPEC_INVALID_VALUE",
    path: "gateway.routes[3].static.index[0]",
  },
  {
    claim: "rejects_a_spa_fallback_that_climbs",
    mutate: (s) =>
      s.gateway.routes.push({
        name: "site",
        match: { path: "/site/**" },
        public: true,
        static: { dir: "/srv/www", spaFallback: "/../etc/passwd" },
      }),
    code: "E_SPEC_INVALID_VALUE",
    path: "gateway.routes[3].static.spaFallback",
  },
  {
    claim: "rejects_the_null_cors_origin",
    mutate: (s) => (gatewayRoute(s, 0).cors = { origins: ["null"] }),
    code: "E_SPEC_INVALID_VALUE",
    path: "gateway.routes[0].cors.origins[0]",
  },
  {
    claim: "rejects_a_cors_origin_with_a_path",
    mutate: (s) => (gatewayRoute(s, 0).cors = { origins: ["https://app.example/"] }),
    code: "E_SPEC_INVALID_VALUE",
    path: "gateway.routes[0].cors.origins[0]",
  },
  {
    claim: "rejects_a_cors_wildcard_over_a_top_level_domain",
    mutate: (s) => (gatewayRoute(s, 0).cors = { origins: ["https://*.com"] }),
    code: "E_SPEC_INVALID_VALUE",
    path: "gateway.routes[0].cors.origins[0]",
    message: "two labels",
  },
  {
    claim: "rejects_a_cors_wildcard_in_the_middle_of_a_host",
    mutate: (s) => (gatewayRoute(s, 0).cors = { origins: ["https://app.*.example.com"] }),
    code: "E_SPEC_INVALID_VALUE",
    path: "gateway.routes[0].cors.origins[0]",
  },
  {
    claim: "rejects_a_cidr_prefix_with_a_leading_zero",
    mutate: (s) => (s.gateway.routes[2].auth.clientIps = ["10.0.0.0/08"]),
    code: "E_SPEC_INVALID_CIDR",
    path: "gateway.routes[2].auth.clientIps[0]",
  },
  {
    // Written into Set-Cookie as is: "; Domain=…" would add an attribute, a space or "=" breaks the cookie.
    claim: "rejects_an_oidc_cookie_name_with_an_attribute_in_it",
    mutate: (s) =>
      (s.gateway.oidc = {
        sso: {
          issuer: "https://id.base.example/",
          clientId: "web",
          clientSecretEnv: "SSO_CLIENT_SECRET",
          redirectPath: "/callback",
          cookieName: "sso; Domain=base.example",
        },
      }),
    code: "E_SPEC_INVALID_VALUE",
    path: "gateway.oidc.sso.cookieName",
  },
  {
    // Both on the default meshgate_session: a login at one provider ends the other's session.
    claim: "rejects_two_oidc_providers_on_one_session_cookie",
    mutate: (s) =>
      (s.gateway.oidc = {
        sso: {
          issuer: "https://id.base.example/",
          clientId: "web",
          clientSecretEnv: "SSO_CLIENT_SECRET",
          redirectPath: "/app/callback",
        },
        partners: {
          issuer: "https://id.partners.example/",
          clientId: "web",
          clientSecretEnv: "PARTNERS_CLIENT_SECRET",
          redirectPath: "/partners/callback",
        },
      }),
    code: "E_SPEC_DUPLICATE_NAME",
    path: "gateway.oidc.partners.cookieName",
  },
  {
    claim: "rejects_an_oidc_cookie_name_with_a_space",
    mutate: (s) =>
      (s.gateway.oidc = {
        sso: {
          issuer: "https://id.base.example/",
          clientId: "web",
          clientSecretEnv: "SSO_CLIENT_SECRET",
          redirectPath: "/callback",
          cookieName: "my session",
        },
      }),
    code: "E_SPEC_INVALID_VALUE",
    path: "gateway.oidc.sso.cookieName",
  },
];

const LOADING_CODES = new Set<SpecErrorCode>([
  "E_SPEC_FILE_NOT_FOUND",
  "E_SPEC_FILE_TYPE",
  "E_SPEC_YAML_SYNTAX",
  "E_SPEC_DUPLICATE_KEY",
  "E_SPEC_MODULE_LOAD",
  "E_SPEC_MODULE_EXPORT",
]);

function errorsOf(spec: unknown): SpecError[] {
  const result = parseSpec(spec);
  expect(result.ok, "the spec should be rejected").toBe(false);
  return result.errors;
}

describe("the base spec", () => {
  it("base_spec_is_valid", () => {
    const result = parseSpec(base());
    expect(result.errors).toEqual([]);
    expect(result.ok).toBe(true);
  });

  it("rows_start_from_an_unchanged_base", () => {
    const first = base();
    ROWS[0]!.mutate(first);
    expect(parseSpec(base()).ok).toBe(true);
  });
});

describe("rejections", () => {
  it.each(ROWS)("$claim", ({ mutate, code, path, message }) => {
    const spec = base();
    mutate(spec);
    const errors = errorsOf(spec);
    expect(errors).toContainEqual(
      expect.objectContaining({
        code,
        path,
        ...(message ? { message: expect.stringContaining(message) } : {}),
      }),
    );
  });

  it("claims_are_unique", () => {
    const claims = ROWS.map((r) => r.claim);
    expect(new Set(claims).size).toBe(claims.length);
  });

  it("covers_every_code_a_parsed_document_can_produce", () => {
    const producible = Object.keys(SpecErrorCatalog).filter(
      (c): c is SpecErrorCode => c.startsWith("E_SPEC_") && !LOADING_CODES.has(c as SpecErrorCode),
    );
    const covered = new Set(ROWS.map((r) => r.code));
    expect(producible.filter((c) => !covered.has(c))).toEqual([]);
    expect(producible.length).toBeGreaterThan(30);
  });
});

describe("reporting", () => {
  it("reports_all_errors_at_once", () => {
    const spec = base();
    spec.services.orders.timout = "2s"; // unknown key
    spec.services.payments.timeout = "5 seconds"; // bad duration
    spec.trustDomain = "Base.Example"; // bad trust domain
    spec.services.orders.calls = ["paymnts"]; // unknown reference
    delete gatewayRoute(spec, 0).auth; // missing auth
    gatewayRoute(spec, 2).auth.scopes = ["x"]; // scopes without jwt
    const errors = errorsOf(spec);
    const expected: [SpecErrorCode, string][] = [
      ["E_SPEC_UNKNOWN_KEY", "services.orders.timout"],
      ["E_SPEC_INVALID_DURATION", "services.payments.timeout"],
      ["E_SPEC_INVALID_TRUST_DOMAIN", "trustDomain"],
      ["E_SPEC_UNKNOWN_REFERENCE", "services.orders.calls[0]"],
      ["E_SPEC_ROUTE_WITHOUT_AUTH", "gateway.routes[0]"],
      ["E_SPEC_AUTH_REQUIREMENT", "gateway.routes[2].auth.scopes"],
    ];
    for (const [code, path] of expected)
      expect(errors).toContainEqual(expect.objectContaining({ code, path }));
    expect(errors.length).toBeGreaterThanOrEqual(expected.length);
  });

  it("suggests_gateway_for_a_misspelt_peer", () => {
    const spec = base();
    spec.services.orders.allow[0].from[0] = "gatway";
    const error = errorsOf(spec).find((e) => e.path === "services.orders.allow[0].from[0]");
    expect(error?.code).toBe("E_SPEC_UNKNOWN_REFERENCE");
    expect(error?.message).toContain('did you mean "gateway"');
  });

  it("never_echoes_the_credentials_of_a_url_it_cannot_parse", () => {
    // A token with a raw "/" makes the URL unparseable; the error must still not show it.
    const spec = base();
    spec.observability.tracing = { otlpEndpoint: "https://123456:glc_ab/cd+ef=@otlp.example/v1/traces" };
    const error = errorsOf(spec).find((e) => e.path === "observability.tracing.otlpEndpoint");
    expect(error?.code).toBe("E_SPEC_INVALID_URL");
    expect(error?.message).toBe('"https://[credentials]@otlp.example/v1/traces" is not a URL');
    expect(JSON.stringify(error)).not.toContain("glc_ab");
  });

  // A secret written where its hash, its variable's name or a mapping belongs: the error names the field
  // and the fix, and never quotes the secret (validate's output ends up in CI logs).
  it.each([
    {
      claim: "an_api_key_written_where_its_hash_belongs",
      mutate: (s: Doc) => (s.gateway.apiKeys.consumers.acme.keyHashes = ["demo-key-acme-s3cr3t"]),
      path: "gateway.apiKeys.consumers.acme.keyHashes[0]",
      code: "E_SPEC_INVALID_KEY_HASH",
    },
    {
      claim: "an_api_key_written_as_a_string_instead_of_a_list",
      mutate: (s: Doc) => (s.gateway.apiKeys.consumers.acme.keyHashes = "demo-key-acme-s3cr3t"),
      path: "gateway.apiKeys.consumers.acme.keyHashes",
      code: "E_SPEC_INVALID_TYPE",
    },
    {
      claim: "a_client_secret_written_where_its_variable_name_belongs",
      mutate: (s: Doc) =>
        (s.gateway.oidc = {
          sso: {
            issuer: "https://id.base.example/",
            clientId: "web",
            clientSecretEnv: "Zx9-s3cr3t-client-value",
            redirectPath: "/callback",
          },
        }),
      path: "gateway.oidc.sso.clientSecretEnv",
      code: "E_SPEC_INVALID_VALUE",
    },
    {
      claim: "a_redis_url_with_a_password_written_instead_of_the_mapping",
      mutate: (s: Doc) =>
        (s.gateway.rateLimitStore = { redis: "redis://:s3cr3tPassw0rd@redis.base.example:6379" }),
      path: "gateway.rateLimitStore.redis",
      code: "E_SPEC_INVALID_TYPE",
    },
    {
      claim: "a_url_with_a_password_in_a_field_of_another_type",
      mutate: (s: Doc) =>
        (s.observability.tracing = { backend: "https://user:s3cr3t@otlp.example/v1/traces" }),
      path: "observability.tracing.backend",
      code: "E_SPEC_INVALID_VALUE",
    },
  ])("never_echoes_$claim", ({ mutate, path, code }) => {
    const spec = base();
    mutate(spec);
    const error = errorsOf(spec).find((e) => e.path === path);
    expect(error?.code).toBe(code);
    expect(JSON.stringify(error)).not.toContain("s3cr3t");
  });

  it("hints_a_unit_for_a_duration_written_as_a_number", () => {
    const spec = base();
    spec.services.orders.timeout = 500;
    const error = errorsOf(spec).find((e) => e.path === "services.orders.timeout");
    expect(error?.hint).toContain('"500ms"');
  });

  it("every_error_has_a_message_and_a_hint", () => {
    for (const row of ROWS) {
      const spec = base();
      row.mutate(spec);
      for (const e of errorsOf(spec)) {
        expect(e.message, `${row.claim}: ${e.code} at ${e.path}`).not.toBe("");
        expect(e.hint, `${row.claim}: ${e.code} at ${e.path}`).not.toBe("");
      }
    }
  });
});
