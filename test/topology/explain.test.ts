/**
 * The explain panel's answers for a table of requests against the shop (policies' explainRequest, the
 * function `meshgate explain` and the traffic assertions run): verdict, status, route, deciding layer and
 * rule — what the page shows — and the validation of the request body.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadSpecFile } from "../../components/spec/load.ts";
import { translate } from "../../components/translate/translate.ts";
import {
  createTopology,
  parseExplainRequest,
  type TopologyHandler,
} from "../../stacks/local/topology/index.ts";
import type { TrafficRequest } from "../../policies/index.ts";

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
  request: TrafficRequest;
  verdict: "allow" | "deny";
  status: number | null;
  route: string | null;
  /** The layer that denied (or, allowed, the last one passed). */
  layer: string;
  /** The rule of the deciding step (the denial, or the last mesh step when allowed). */
  rule: string;
}

const reader = { sub: "alice", scope: "orders:read" };
const CASES: Case[] = [
  {
    name: "public_route_reaches_its_backends",
    request: { from: "internet", method: "GET", path: "/api/products" },
    verdict: "allow",
    status: null,
    route: "list-products",
    layer: "network",
    rule: "services.catalog-v2.allow[0]",
  },
  {
    name: "token_route_without_credentials_is_401",
    request: { from: "internet", method: "GET", path: "/api/orders" },
    verdict: "deny",
    status: 401,
    route: "list-orders",
    layer: "authentication",
    rule: "gateway.routes[4].auth",
  },
  {
    name: "token_without_the_scope_is_403",
    request: {
      from: "internet",
      method: "GET",
      path: "/api/orders",
      claims: { sub: "bob", scope: "profile" },
    },
    verdict: "deny",
    status: 403,
    route: "list-orders",
    layer: "authorization",
    rule: "gateway.routes[4].auth",
  },
  {
    name: "token_with_the_scope_reaches_orders",
    request: { from: "internet", method: "GET", path: "/api/orders", claims: reader },
    verdict: "allow",
    status: null,
    route: "list-orders",
    layer: "network",
    rule: "services.orders.allow[0]",
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
    verdict: "deny",
    status: 403,
    route: "partner-bulk-orders",
    layer: "authorization",
    rule: "gateway.routes[10].auth",
  },
  {
    name: "unknown_path_is_404",
    request: { from: "internet", method: "GET", path: "/nope" },
    verdict: "deny",
    status: 404,
    route: null,
    layer: "edge",
    rule: "",
  },
  {
    name: "orders_may_not_delete_payments",
    request: { from: "orders", method: "DELETE", path: "/payments", to: "payments" },
    verdict: "deny",
    status: 403,
    route: null,
    layer: "mesh",
    rule: "services.payments.allow",
  },
  {
    name: "the_gateway_identity_is_refused_by_payments",
    request: { from: "gateway", method: "GET", path: "/payments/1", to: "payments" },
    verdict: "deny",
    status: 403,
    route: null,
    layer: "mesh",
    rule: "services.payments.allow",
  },
];

describe("explain", () => {
  for (const c of CASES)
    it(c.name, () => {
      const r = topology.explain(c.request);
      expect({ verdict: r.verdict, status: r.status, route: r.route, layer: r.layer }).toEqual({
        verdict: c.verdict,
        status: c.status,
        route: c.route,
        layer: c.layer,
      });
      const deciding =
        c.verdict === "deny"
          ? r.steps.find((s) => s.outcome === "deny")!
          : r.steps.filter((s) => s.layer === "mesh").at(-1)!;
      expect(deciding.rule).toBe(c.rule);
    });

  it("answers_a_request_naming_what_the_mesh_lacks_with_400", async () => {
    expect(() => topology.explain({ from: "nobody", method: "GET", path: "/", to: "orders" })).toThrow(
      /^from: unknown caller "nobody"/,
    );
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
