/**
 * The explain panel's answers for a table of requests against the shop: what the proxies' decision code
 * (decide, authorize, decideOutbound, decideInbound) concludes at each layer and which rule decided.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadSpecFile } from "../../components/spec/load.ts";
import { translate } from "../../components/translate/translate.ts";
import {
  createTopology,
  parseExplainRequest,
  type TopologyHandler,
} from "../../stacks/local/topology/index.ts";
import type { ExplainRequest } from "../../policies/explain.ts";

let topology: TopologyHandler;
beforeAll(async () => {
  const loaded = await loadSpecFile(new URL("../../examples/shop/mesh.yaml", import.meta.url).pathname);
  if (!loaded.ok) throw new Error("shop spec invalid");
  const { infra, runtime } = translate(loaded.spec);
  topology = createTopology({ spec: loaded.spec, infra, runtime, targets: [] });
});
afterAll(() => topology.close());

interface Case {
  name: string;
  request: ExplainRequest;
  outcome: "allow" | "deny";
  status: number | null;
  route: string | null;
  deniedBy: string | null;
  /** [layer, result, rule] of every step, in order. */
  steps: [string, string, string][];
  /** A fragment of the deciding step's reason. */
  reason?: string;
}

const reader = { sub: "alice", scope: "orders:read" };
const CASES: Case[] = [
  {
    name: "public_route_reaches_both_split_backends",
    request: { from: "internet", method: "GET", path: "/api/products" },
    outcome: "allow",
    status: null,
    route: "list-products",
    deniedBy: null,
    steps: [
      ["route", "allow", "gateway.routes[0]"],
      ["authentication", "allow", "gateway.routes[0].public"],
      ["authorization", "allow", "gateway.routes[0].public"],
      ["ratelimit", "info", "gateway.routes[0].rateLimit"],
      ["inbound", "allow", "services.catalog.allow[0]"],
      ["inbound", "allow", "services.catalog-v2.allow[0]"],
    ],
  },
  {
    name: "token_route_without_credentials_is_401",
    request: { from: "internet", method: "GET", path: "/api/orders" },
    outcome: "deny",
    status: 401,
    route: "list-orders",
    deniedBy: "authentication",
    steps: [
      ["route", "allow", "gateway.routes[4]"],
      ["authentication", "deny", "gateway.routes[4].auth"],
    ],
    reason: "requires authentication (jwt main)",
  },
  {
    name: "token_without_the_scope_is_403",
    request: {
      from: "internet",
      method: "GET",
      path: "/api/orders",
      claims: { sub: "bob", scope: "profile" },
    },
    outcome: "deny",
    status: 403,
    route: "list-orders",
    deniedBy: "authorization",
    steps: [
      ["route", "allow", "gateway.routes[4]"],
      ["authentication", "allow", "gateway.routes[4].auth"],
      ["authorization", "deny", "gateway.routes[4].auth"],
    ],
    reason: "missing scope orders:read",
  },
  {
    name: "token_with_the_scope_reaches_orders",
    request: { from: "internet", method: "GET", path: "/api/orders", claims: reader },
    outcome: "allow",
    status: null,
    route: "list-orders",
    deniedBy: null,
    steps: [
      ["route", "allow", "gateway.routes[4]"],
      ["authentication", "allow", "gateway.routes[4].auth"],
      ["authorization", "allow", "gateway.routes[4].auth"],
      ["ratelimit", "info", "gateway.routes[4].rateLimit"],
      ["inbound", "allow", "services.orders.allow[0]"],
    ],
  },
  {
    name: "aggregate_checks_every_part",
    request: { from: "internet", method: "GET", path: "/api/dashboard", claims: reader },
    outcome: "allow",
    status: null,
    route: "dashboard",
    deniedBy: null,
    steps: [
      ["route", "allow", "gateway.routes[7]"],
      ["authentication", "allow", "gateway.routes[7].auth"],
      ["authorization", "allow", "gateway.routes[7].auth"],
      ["inbound", "allow", "services.catalog.allow[0]"],
      ["inbound", "allow", "services.orders.allow[0]"],
      ["inbound", "allow", "services.users.allow[0]"],
    ],
  },
  {
    name: "api_key_consumer_outside_the_group_is_403",
    request: {
      from: "internet",
      method: "POST",
      path: "/partner/orders",
      consumer: "acme-retail",
      clientIp: "203.0.113.5",
    },
    outcome: "deny",
    status: 403,
    route: "partner-bulk-orders",
    deniedBy: "authorization",
    steps: [
      ["route", "allow", "gateway.routes[10]"],
      ["authentication", "allow", "gateway.routes[10].auth"],
      ["authorization", "deny", "gateway.routes[10].auth"],
    ],
    reason: "consumer acme-retail is not among the route's consumers or groups",
  },
  {
    name: "api_key_from_outside_the_client_ranges_is_403",
    request: {
      from: "internet",
      method: "POST",
      path: "/partner/orders",
      consumer: "globex",
      clientIp: "192.0.2.1",
    },
    outcome: "deny",
    status: 403,
    route: "partner-bulk-orders",
    deniedBy: "authorization",
    steps: [
      ["route", "allow", "gateway.routes[10]"],
      ["authentication", "allow", "gateway.routes[10].auth"],
      ["authorization", "deny", "gateway.routes[10].auth"],
    ],
    reason: "client address 192.0.2.1 is not in the route's clientIps",
  },
  {
    name: "unknown_path_is_404",
    request: { from: "internet", method: "GET", path: "/nope" },
    outcome: "deny",
    status: 404,
    route: null,
    deniedBy: "route",
    steps: [["route", "deny", "gateway.routes"]],
    reason: "no_route",
  },
  {
    name: "encoded_slash_is_refused_before_routing",
    request: { from: "internet", method: "GET", path: "/api/products/a%2Fb" },
    outcome: "deny",
    status: 400,
    route: null,
    deniedBy: "route",
    steps: [["route", "deny", "gateway.routes"]],
    reason: "bad_request_target",
  },
  {
    name: "host_not_served_is_404",
    request: { from: "internet", method: "GET", path: "/api/products", host: "evil.example" },
    outcome: "deny",
    status: 404,
    route: null,
    deniedBy: "route",
    steps: [["route", "deny", "gateway.hosts"]],
  },
  {
    name: "orders_may_charge_payments_under_the_charge_policy",
    request: { from: "orders", method: "POST", path: "/payments", to: "payments" },
    outcome: "allow",
    status: null,
    route: "charge",
    deniedBy: null,
    steps: [
      ["outbound", "allow", "services.payments.routes[0]"],
      ["inbound", "allow", "services.payments.allow[0]"],
    ],
  },
  {
    name: "orders_may_not_delete_payments",
    request: { from: "orders", method: "DELETE", path: "/payments", to: "payments" },
    outcome: "deny",
    status: 403,
    route: "default",
    deniedBy: "inbound",
    steps: [
      ["outbound", "allow", "services.payments"],
      ["inbound", "deny", "services.payments.allow"],
    ],
    reason: "method_not_allowed",
  },
  {
    name: "search_may_not_call_orders_it_does_not_declare",
    request: { from: "search", method: "GET", path: "/orders", to: "orders" },
    outcome: "deny",
    status: 403,
    route: null,
    deniedBy: "outbound",
    steps: [["outbound", "deny", "services.search.calls"]],
    reason: "destination_not_declared",
  },
  {
    name: "the_gateway_identity_is_refused_by_payments",
    request: { from: "gateway", method: "GET", path: "/payments/1", to: "payments" },
    outcome: "deny",
    status: 403,
    route: null,
    deniedBy: "inbound",
    steps: [["inbound", "deny", "services.payments.allow"]],
    reason: "peer_not_allowed",
  },
];

describe("explain", () => {
  for (const c of CASES)
    it(c.name, () => {
      const r = topology.explain(c.request);
      expect({ outcome: r.outcome, status: r.status, route: r.route, deniedBy: r.deniedBy }).toEqual({
        outcome: c.outcome,
        status: c.status,
        route: c.route,
        deniedBy: c.deniedBy,
      });
      expect(r.steps.map((s) => [s.layer, s.result, s.rule])).toEqual(c.steps);
      if (c.reason) expect(r.steps.find((s) => s.result === "deny")!.reason).toContain(c.reason);
    });

  it("marks_a_mirror_as_not_deciding", () => {
    const r = topology.explain({ from: "internet", method: "GET", path: "/api/search" });
    const mirror = r.steps.find((s) => s.reason.startsWith("mirror search-next"))!;
    expect(mirror).toMatchObject({ layer: "inbound", result: "allow", decisive: false });
  });
});

describe("parseExplainRequest", () => {
  const cases: [string, unknown, string | null][] = [
    ["accepts_a_minimal_request", { from: "internet", method: "GET", path: "/" }, null],
    ["refuses_a_non_object", [1], "the body must be a JSON object"],
    ["names_a_missing_field", { from: "internet", method: "GET" }, "path: required"],
    [
      "names_an_unknown_field",
      { from: "internet", method: "GET", path: "/", token: "x" },
      "token: unknown field",
    ],
    [
      "refuses_a_lower_case_method",
      { from: "internet", method: "get", path: "/" },
      "method: an upper-case HTTP method",
    ],
    [
      "refuses_claims_that_are_not_an_object",
      { from: "internet", method: "GET", path: "/", claims: "x" },
      "claims: must be a JSON object",
    ],
    [
      "refuses_non_string_headers",
      { from: "internet", method: "GET", path: "/", headers: { a: 1 } },
      "headers: every value must be a string",
    ],
    [
      "refuses_claims_and_consumer_together",
      { from: "internet", method: "GET", path: "/", claims: {}, consumer: "x" },
      "claims, consumer: give a token's claims or an API-key consumer, not both",
    ],
  ];
  for (const [name, body, error] of cases)
    it(name, () => {
      const r = parseExplainRequest(body);
      if (error === null) expect(typeof r).toBe("object");
      else expect(r).toContain(error);
    });
});
