/**
 * Seeded bad specs: mutations of the shop example, each of which must be caught with the expected codes.
 * A mutation is caught when a violation with the expected code (and path, where given) appears that the
 * unmodified example does not have — so the findings the example already has cannot satisfy a case.
 */
import { describe, expect, it } from "vitest";
import { runGuardrails } from "../../policies/run.ts";
import type { Violation } from "../../policies/types.ts";
import { inputOf, routeIndex, shopRaw } from "./support.ts";

type Raw = ReturnType<typeof shopRaw>;
const violations = (raw: Raw): Violation[] => runGuardrails(inputOf(raw)).flatMap((c) => c.violations);
const key = (v: { code: string; path: string }) => `${v.code} ${v.path}`;
const baseline = new Set(violations(shopRaw()).map(key));

const route = (raw: Raw, name: string) => raw.gateway.routes[routeIndex(raw, name)];

const CASES: [string, (raw: Raw) => void, { code: string; path?: (raw: Raw) => string }[]][] = [
  [
    "catches_a_permissive_mesh",
    (r) => (r.mesh.mtls = "permissive"),
    [{ code: "E_POLICY_MTLS_PERMISSIVE", path: () => "mesh.mtls" }],
  ],
  [
    "catches_a_gateway_without_tls",
    (r) => (r.gateway.listeners = [{ name: "http", port: 8080, protocol: "http" }]),
    [{ code: "E_POLICY_EDGE_PLAINTEXT" }],
  ],
  [
    "catches_an_allow_rule_that_admits_every_request",
    (r) => (r.services.orders.allow = [{ from: ["gateway"] }]),
    [{ code: "E_POLICY_ALLOW_ANY_REQUEST", path: () => "services.orders.allow[0]" }],
  ],
  [
    "catches_a_public_route_that_writes",
    (r) => (route(r, "list-products").match.methods = ["GET", "HEAD", "POST"]),
    [
      {
        code: "E_POLICY_PUBLIC_WRITE",
        path: (r) => `gateway.routes[${routeIndex(r, "list-products")}].match.methods`,
      },
    ],
  ],
  [
    "catches_a_write_route_any_api_key_may_call",
    (r) => delete route(r, "partner-bulk-orders").auth.groups,
    [
      {
        code: "E_POLICY_WRITE_UNSCOPED",
        path: (r) => `gateway.routes[${routeIndex(r, "partner-bulk-orders")}].auth`,
      },
    ],
  ],
  [
    "catches_a_public_route_without_rate_limit",
    (r) => delete route(r, "search").rateLimit,
    [{ code: "E_POLICY_PUBLIC_ROUTE_UNLIMITED", path: (r) => `gateway.routes[${routeIndex(r, "search")}]` }],
  ],
  [
    "catches_a_public_limit_keyed_by_a_client_header",
    (r) => (route(r, "search").rateLimit.key = "header:x-client-id"),
    [{ code: "E_POLICY_RATE_LIMIT_CLIENT_KEY" }],
  ],
  [
    "catches_a_route_shadowed_by_an_exact_host_copy",
    (r) =>
      r.gateway.routes.push({
        ...structuredClone(route(r, "list-orders")),
        name: "list-orders-on-hosts",
        match: { path: "/api/orders", methods: ["GET"], hosts: ["api.shop.example", "shop.example"] },
      }),
    [
      {
        code: "E_POLICY_ROUTE_SHADOWED",
        path: (r) => `gateway.routes[${routeIndex(r, "list-orders")}].match`,
      },
    ],
  ],
  [
    "catches_two_routes_that_tie",
    (r) => r.gateway.routes.push({ ...structuredClone(route(r, "me")), name: "profile" }),
    [{ code: "E_POLICY_ROUTE_CONFLICT", path: (r) => `gateway.routes[${routeIndex(r, "profile")}].match` }],
  ],
  [
    "catches_a_redirect_into_a_404",
    (r) => (route(r, "legacy-shop").redirect.path = "/store"),
    [{ code: "E_POLICY_REDIRECT_UNROUTED" }],
  ],
  [
    "catches_a_host_without_a_certificate",
    (r) => (r.gateway.listeners[1].tls.certificates[0].hosts = ["api.shop.example"]),
    [{ code: "E_POLICY_TLS_HOST_UNCOVERED", path: () => "gateway.listeners[1].tls.certificates" }],
  ],
  [
    "catches_a_route_the_target_refuses",
    (r) => (r.services.inventory.allow = [r.services.inventory.allow[0]]),
    [{ code: "E_POLICY_CALL_DENIED", path: (r) => `gateway.routes[${routeIndex(r, "partner-stock")}].to` }],
  ],
  [
    "catches_a_declared_call_the_callee_refuses",
    (r) => (r.services.payments.allow = [{ from: ["gateway"], methods: ["GET"], paths: ["/payments/{id}"] }]),
    [
      { code: "E_POLICY_CALL_DENIED", path: () => "services.orders.calls[0]" },
      { code: "E_POLICY_ALLOW_WITHOUT_CALL" },
    ],
  ],
  [
    "catches_retries_multiplying_through_search",
    (r) => (route(r, "search").retries = { attempts: 3, perTryTimeout: "1600ms", on: ["reset", "503"] }),
    [
      {
        code: "E_POLICY_RETRY_AMPLIFICATION",
        path: (r) => `gateway.routes[${routeIndex(r, "search")}].retries`,
      },
    ],
  ],
  [
    "catches_a_call_cycle",
    (r) => {
      r.services.users.calls = ["orders"];
      r.services.orders.allow.push({ from: ["users"], methods: ["GET"], paths: ["/orders/*"] });
    },
    [
      { code: "E_POLICY_CALL_CYCLE" },
      { code: "E_POLICY_RETRY_AMPLIFICATION", path: () => "services.orders.calls" },
    ],
  ],
  [
    "catches_a_route_timeout_below_the_callee_s_worst_case",
    (r) => {
      r.services.users.calls = ["payments"];
      r.services.payments.allow.push({ from: ["users"], methods: ["GET"], paths: ["/payments/{id}"] });
    },
    [{ code: "E_POLICY_TIMEOUT_BUDGET", path: (r) => `gateway.routes[${routeIndex(r, "me")}]` }],
  ],
  [
    "catches_a_post_retried_after_it_was_sent",
    (r) => (route(r, "create-order").retries = { attempts: 1, on: ["reset", "503"] }),
    [
      {
        code: "E_POLICY_RETRY_NON_IDEMPOTENT",
        path: (r) => `gateway.routes[${routeIndex(r, "create-order")}].retries`,
      },
    ],
  ],
  [
    "catches_svids_that_live_a_month",
    (r) => Object.assign(r.mesh.ca, { workloadTtl: "30d", renewBefore: "10d" }),
    [{ code: "E_POLICY_CERT_TTL_TOO_LONG", path: () => "mesh.ca.workloadTtl" }],
  ],
  [
    "catches_a_renewal_within_the_clock_skew",
    (r) => (r.mesh.ca.renewBefore = "9m"),
    [{ code: "E_POLICY_CERT_RENEW_SKEW" }, { code: "E_POLICY_CERT_RENEW_WINDOW" }],
  ],
  [
    "catches_an_intermediate_that_cannot_rotate",
    (r) => (r.mesh.ca.intermediateValidity = "40h"),
    [{ code: "E_POLICY_CA_ROTATION_OVERLAP", path: () => "mesh.ca.intermediateValidity" }],
  ],
  [
    "catches_metrics_switched_off",
    (r) => (r.observability.metrics.enabled = false),
    [{ code: "E_POLICY_METRICS_DISABLED" }],
  ],
  [
    "catches_access_logs_switched_off",
    (r) => (r.observability.logs.access = false),
    [{ code: "E_POLICY_ACCESS_LOG_DISABLED" }],
  ],
  [
    "catches_the_local_admin_listener_on_the_gateway_port",
    (r) => (r.targets.local.adminPort = 8080),
    [{ code: "E_POLICY_ADMIN_PORT_EXPOSED", path: () => "targets.local.adminPort" }],
  ],
  [
    "catches_a_service_on_its_sidecar_admin_port",
    (r) => (r.services.notifications.port = 15000),
    [{ code: "E_POLICY_PORT_COLLISION", path: () => "services.notifications.port" }],
  ],
];

describe("seeded bad specs (mutations of the shop example)", () => {
  it("has_at_least_fifteen_seeded_specs", () => {
    expect(CASES.length).toBeGreaterThanOrEqual(15);
  });

  it.each(CASES)("%s", (_claim, mutate, expected) => {
    const raw = shopRaw();
    mutate(raw);
    const found = violations(raw).filter((v) => !baseline.has(key(v)));
    for (const e of expected) {
      const path = e.path?.(raw);
      expect(
        found.filter((v) => v.code === e.code && (path === undefined || v.path === path)),
        `${e.code}${path ? ` at ${path}` : ""} among new violations: ${found.map(key).join(", ") || "none"}`,
      ).not.toEqual([]);
    }
  });
});
