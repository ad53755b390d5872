/**
 * decide(): route precedence, rejects as values, rewrites, and the properties the issue names —
 * route choice independent of declaration order, and no request reaching a route its canonical path
 * does not match.
 */
import fc from "fast-check";
import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { parse } from "yaml";
import { compileGateway, decide, type Decision } from "../../runtime/decide/index.ts";
import type { GatewayRuntimeConfig } from "../../runtime/contract/index.ts";
import { parsePathPattern, isPatternError } from "../../runtime/decide/pattern.ts";
import { parseSpec } from "../../components/spec/parse.ts";
import { translate } from "../../components/translate/translate.ts";

type RouteSpec = Record<string, unknown> & { name: string; match: Record<string, unknown> };

/** A gateway config from a list of spec routes (all public, all to service "app"). */
function gatewayOf(routes: RouteSpec[], hosts = ["api.example", "*.preview.example"]): GatewayRuntimeConfig {
  const r = parseSpec({
    name: "t",
    trustDomain: "t.example",
    services: { app: { image: "r/app:1", port: 8080, allow: [{ from: ["gateway"] }] } },
    gateway: {
      hosts,
      routes: routes.map((x) => ({ to: "app", public: true, rateLimit: { requests: 1, per: "1s" }, ...x })),
    },
  });
  if (!r.ok) throw new Error(r.errors.map((e) => `${e.path}: ${e.message}`).join("\n"));
  return translate(r.spec).runtime.gateway!;
}

function request(method: string, target: string, headers: Record<string, string> = {}, host = "api.example") {
  return { method, target, host, header: (n: string) => headers[n] };
}

const routeName = (d: Decision) => (d.kind === "route" ? d.route.name : `${d.status} ${d.code}`);

const PRECEDENCE_ROUTES: RouteSpec[] = [
  { name: "exact", match: { path: "/api/orders/recent" } },
  { name: "param", match: { path: "/api/orders/{id}" } },
  { name: "param-get", match: { path: "/api/orders/{id}", methods: ["GET"] } },
  {
    name: "param-canary",
    match: { path: "/api/orders/{id}", methods: ["GET"], headers: { "x-canary": "1" } },
  },
  { name: "star-items", match: { path: "/api/*/items" } },
  { name: "rest", match: { path: "/api/**" } },
  { name: "root-rest", match: { path: "/**" } },
  { name: "preview", match: { path: "/api/orders/{id}", hosts: ["*.preview.example"] } },
  { name: "post-only", match: { path: "/submit", methods: ["POST"] } },
  { name: "query-v2", match: { path: "/search", query: { v: "2" } } },
  { name: "query-camel", match: { path: "/search", query: { apiVersion: "3" } } },
  { name: "search", match: { path: "/search" } },
  { name: "root", match: { path: "/" } },
];

describe("route precedence", () => {
  const gw = compileGateway(gatewayOf(PRECEDENCE_ROUTES));
  it.each([
    ["a_literal_beats_a_param", "GET", "/api/orders/recent", {}, "api.example", "exact"],
    ["a_route_naming_methods_beats_one_without", "GET", "/api/orders/7", {}, "api.example", "param-get"],
    [
      "more_header_conditions_win",
      "GET",
      "/api/orders/7",
      { "x-canary": "1" },
      "api.example",
      "param-canary",
    ],
    ["falls_back_when_the_method_does_not_match", "DELETE", "/api/orders/7", {}, "api.example", "param"],
    ["a_param_beats_rest_at_the_first_difference", "GET", "/api/x/items", {}, "api.example", "star-items"],
    ["rest_catches_deeper_paths", "GET", "/api/orders/7/lines", {}, "api.example", "rest"],
    ["rest_matches_zero_segments", "GET", "/api", {}, "api.example", "rest"],
    ["the_longer_literal_prefix_wins_over_root_rest", "GET", "/other", {}, "api.example", "root-rest"],
    ["an_exact_root_route_beats_root_rest", "GET", "/", {}, "api.example", "root"],
    [
      "a_wildcard_host_route_beats_any_host_routes",
      "GET",
      "/api/orders/7",
      {},
      "pr-1.preview.example",
      "preview",
    ],
    ["query_conditions_select_a_route", "GET", "/search?q=x&v=2", {}, "api.example", "query-v2"],
    ["without_the_query_the_plain_route_wins", "GET", "/search?q=x", {}, "api.example", "search"],
    [
      "query_parameter_names_are_matched_as_written",
      "GET",
      "/search?apiVersion=3",
      {},
      "api.example",
      "query-camel",
    ],
    [
      "a_query_parameter_named_in_another_case_is_another_parameter",
      "GET",
      "/search?apiversion=3",
      {},
      "api.example",
      "search",
    ],
    [
      "a_method_restricted_route_falls_through_to_a_catch_all",
      "GET",
      "/submit",
      {},
      "api.example",
      "root-rest",
    ],
    ["the_path_is_canonicalized_before_matching", "GET", "/api/./orders//recent", {}, "api.example", "exact"],
    [
      "hosts_compare_case_insensitively_and_ignore_the_port",
      "GET",
      "/api/orders/recent",
      {},
      "API.Example:8443",
      "exact",
    ],
  ])("%s", (_claim, method, target, headers, host, expected) => {
    expect(routeName(decide(gw, request(method, target, headers, host)))).toBe(expected);
  });

  it("answers_405_with_allow_when_only_method_restricted_routes_match", () => {
    const only = compileGateway(
      gatewayOf([{ name: "post-only", match: { path: "/submit", methods: ["POST", "PUT"] } }]),
    );
    const d = decide(only, request("GET", "/submit"));
    expect(d).toMatchObject({
      kind: "reject",
      status: 405,
      code: "method_not_allowed",
      allow: ["POST", "PUT"],
    });
  });
});

describe("rejects are values", () => {
  const gw = compileGateway(gatewayOf([{ name: "orders", match: { path: "/orders/{id}" } }]));
  it.each([
    ["refuses_an_encoded_slash", "/orders/a%2Fb", "api.example", 400, "bad_request_target", "encoded_slash"],
    ["refuses_a_fragment", "/orders/1#x", "api.example", 400, "bad_request_target", "fragment"],
    [
      "refuses_climbing_above_root",
      "/../orders/1",
      "api.example",
      400,
      "bad_request_target",
      "dot_segment_above_root",
    ],
    ["refuses_a_malformed_host", "/orders/1", "bad host", 400, "bad_host", null],
    ["refuses_a_missing_host", "/orders/1", undefined, 400, "bad_host", null],
    ["refuses_a_host_the_gateway_does_not_serve", "/orders/1", "evil.example", 404, "host_not_served", null],
    ["answers_404_when_no_route_matches", "/nothing", "api.example", 404, "no_route", null],
    ["does_not_let_a_dot_segment_reach_a_route", "/orders/1/..", "api.example", 404, "no_route", null],
  ])("%s", (_claim, target, host, status, code, reason) => {
    const d = decide(gw, {
      method: "GET",
      target,
      host: host as string | undefined,
      header: () => undefined,
    });
    expect(d).toMatchObject({ kind: "reject", status, code, reason });
  });

  // RFC 9110 §9.1: methods are case-sensitive. The HTTP/1.1 parser refuses `get`; decide() refuses it alike
  // (HTTP/2 passes :method as sent), on a route without a method list too, and `meshgate explain` with it.
  it.each([
    ["refuses_a_lower_case_method", "get", "reject"],
    ["refuses_a_mixed_case_method", "Post", "reject"],
    ["refuses_a_method_with_a_space", "GET X", "reject"],
    ["routes_an_upper_case_method", "GET", "route"],
    ["routes_an_upper_case_extension_method", "PROPFIND", "route"],
  ])("%s", (_claim, method, kind) => {
    const d = decide(gw, { method, target: "/orders/1", host: "api.example", header: () => undefined });
    expect(d.kind).toBe(kind);
    if (d.kind === "reject") expect(d).toMatchObject({ status: 400, code: "bad_method" });
  });

  it("uses_the_host_of_an_absolute_form_target", () => {
    const d = decide(gw, {
      method: "GET",
      target: "http://evil.example/orders/1",
      host: "api.example",
      header: () => undefined,
    });
    expect(d).toMatchObject({ kind: "reject", code: "host_not_served" });
  });
});

describe("the route decision", () => {
  it("carries_the_rewrite_with_params_and_the_query", () => {
    const gw = compileGateway(
      gatewayOf([
        {
          name: "get",
          match: { path: "/api/orders/{id}" },
          rewrite: { path: "/orders/{id}", host: "orders.internal" },
        },
      ]),
    );
    const d = decide(gw, request("GET", "/api/orders/%41b%7e?expand=lines"));
    expect(d).toMatchObject({
      kind: "route",
      path: "/api/orders/Ab~",
      params: { id: "Ab~" },
      query: "expand=lines",
      upstreamPath: "/orders/Ab~?expand=lines",
      upstreamHost: "orders.internal",
    });
  });

  it("fills_a_redirect_path_with_the_captured_params", () => {
    const gw = compileGateway(
      gatewayOf([
        {
          name: "moved",
          match: { path: "/items/{id}" },
          to: undefined,
          redirect: { path: "/v2/items/{id}" },
        },
        { name: "v2", match: { path: "/v2/items/{id}" } },
      ]),
    );
    expect(decide(gw, request("GET", "/items/%41b?x=1"))).toMatchObject({
      kind: "route",
      params: { id: "Ab" },
      upstreamPath: "/v2/items/Ab?x=1",
    });
  });

  it("forwards_the_canonical_path_when_there_is_no_rewrite", () => {
    const gw = compileGateway(gatewayOf([{ name: "all", match: { path: "/**" } }]));
    expect(decide(gw, request("GET", "/a/./b//c/../d"))).toMatchObject({
      kind: "route",
      upstreamPath: "/a/b/d",
    });
  });

  it("carries_the_auth_requirement_timeout_and_retry_plan_of_the_shop_route", () => {
    const shop = parseSpec(
      parse(readFileSync(new URL("../../examples/shop/mesh.yaml", import.meta.url), "utf8")),
    );
    if (!shop.ok) throw new Error("shop invalid");
    const gw = compileGateway(translate(shop.spec).runtime.gateway!);
    const d = decide(gw, request("GET", "/api/orders/42", {}, "api.shop.example"));
    expect(d).toMatchObject({
      kind: "route",
      upstreamPath: "/orders/42",
      auth: { public: false, anyOf: [{ kind: "jwt", provider: "main" }], scopes: ["orders:read"] },
      timeoutMs: 3000,
      retry: { attempts: 1, perTryTimeoutMs: 300 },
    });
    expect(routeName(decide(gw, request("POST", "/api/orders", {}, "api.shop.example")))).toBe(
      "create-order",
    );
    expect(routeName(decide(gw, request("GET", "/api/products", { "x-chaos": "on" }, "shop.example")))).toBe(
      "products-chaos",
    );
    expect(routeName(decide(gw, request("GET", "/app/deep/link", {}, "shop.example")))).toBe("app");
  });
});

// ───────────── properties ─────────────

const SEGMENTS = ["a", "b", "orders", "items", "7", "x-y", "A"];
const patternArb = fc
  .tuple(
    fc.array(fc.oneof(fc.constantFrom(...SEGMENTS), fc.constant("*"), fc.constant("{p}")), {
      minLength: 0,
      maxLength: 4,
    }),
    fc.boolean(),
  )
  .map(([segs, rest]) => {
    let n = 0;
    const named = segs.map((s) => (s === "{p}" ? `{p${n++}}` : s));
    const path = `/${[...named, ...(rest ? ["**"] : [])].join("/")}`;
    return path === "/" ? "/" : path.replace(/\/$/, "");
  });
const routeSetArb = fc
  .uniqueArray(fc.tuple(patternArb, fc.constantFrom(null, ["GET"], ["POST"], ["GET", "POST"])), {
    minLength: 1,
    maxLength: 12,
    selector: ([p, m]) => `${p} ${JSON.stringify(m)}`,
  })
  .map((rows) =>
    rows.map(
      ([path, methods], i) =>
        ({ name: `r${i}`, match: { path, ...(methods ? { methods } : {}) } }) as RouteSpec,
    ),
  );
const requestPathArb = fc
  .array(fc.constantFrom(...SEGMENTS, "zz", ".", "..", "", "%61"), { minLength: 0, maxLength: 5 })
  .map((segs) => `/${segs.join("/")}`);

/** An independent reference: does a canonical path match a pattern? (regex from the pattern) */
function referenceMatches(pattern: string, path: string): boolean {
  const parsed = parsePathPattern(pattern);
  if (isPatternError(parsed)) return false;
  let re = "^";
  for (const seg of parsed.segments) {
    if (seg.kind === "literal") re += `/${seg.value.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}`;
    else if (seg.kind === "rest") re += "(?:/.*)?";
    else re += "/[^/]+";
  }
  re += "$";
  if (parsed.segments.length === 0) re = "^/$";
  return new RegExp(re).test(path);
}

describe("properties", () => {
  it("no_request_reaches_a_route_its_canonical_path_does_not_match", () => {
    fc.assert(
      fc.property(
        routeSetArb,
        requestPathArb,
        fc.constantFrom("GET", "POST", "PUT"),
        (routes, target, method) => {
          const gw = compileGateway(gatewayOf(routes));
          const d = decide(gw, request(method, target));
          if (d.kind !== "route") return true;
          const pattern = d.route.config.match.path;
          const methods = d.route.config.match.methods;
          return (
            referenceMatches(pattern, d.path) && (methods.length === 0 || methods.includes(method as "GET"))
          );
        },
      ),
      { numRuns: 400 },
    );
  });

  it("route_choice_does_not_depend_on_declaration_order", () => {
    fc.assert(
      fc.property(
        routeSetArb,
        fc.array(requestPathArb, { minLength: 1, maxLength: 8 }),
        (routes, targets) => {
          const a = compileGateway(gatewayOf(routes));
          const b = compileGateway(gatewayOf([...routes].reverse()));
          return targets.every(
            (t) => routeName(decide(a, request("GET", t))) === routeName(decide(b, request("GET", t))),
          );
        },
      ),
      { numRuns: 300 },
    );
  });

  it("a_matching_route_is_never_missed", () => {
    fc.assert(
      fc.property(routeSetArb, requestPathArb, (routes, target) => {
        const gw = compileGateway(gatewayOf(routes));
        const d = decide(gw, request("GET", target));
        if (d.kind === "reject" && d.code === "no_route") {
          // Then no route's pattern matches the canonical path (for GET-capable routes).
          const path = decide(
            compileGateway(gatewayOf([{ name: "all", match: { path: "/**" } }])),
            request("GET", target),
          );
          if (path.kind !== "route") return true;
          return routes.every(
            (r) =>
              !referenceMatches(r.match.path as string, path.path) ||
              (r.match.methods && !(r.match.methods as string[]).includes("GET")),
          );
        }
        return true;
      }),
      { numRuns: 400 },
    );
  });
});
