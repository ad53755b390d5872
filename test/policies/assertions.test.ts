/**
 * Traffic decisions (explainRequest) and traffic assertions on the shop example: each layer decides and
 * names its rule, network edges follow the IR, assertion files are validated strictly, failed assertions
 * carry the trace and the file position, and `meshgate verify` / `meshgate explain` run them.
 */
import { execFile } from "node:child_process";
import { mkdtemp, rm, writeFile, copyFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parse, stringify } from "yaml";
import { readFileSync } from "node:fs";
import {
  explainRequest,
  formatDecision,
  TrafficRequestError,
  type TrafficRequest,
} from "../../policies/assertions.ts";
import {
  checkAssertionReferences,
  parseAssertionText,
  runAssertions,
  type TrafficAssertion,
} from "../../policies/assertion-file.ts";
import { networkEdges } from "../../policies/network.ts";
import { formatReplayText, parseAccessLog, replay } from "../../policies/replay.ts";
import type { PolicyInput } from "../../policies/run.ts";
import { inputOf, ROOT } from "./support.ts";

const SHOP = join(ROOT, "examples/shop/mesh.yaml");
const shopRaw = () => parse(readFileSync(SHOP, "utf8")) as Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any
let shop: PolicyInput;
beforeAll(() => {
  shop = inputOf(shopRaw());
});

describe("explainRequest on the shop", () => {
  it.each<[string, TrafficRequest, Partial<ReturnType<typeof explainRequest>>, string]>([
    [
      "allows_a_public_listing_through_both_canary_backends",
      { from: "internet", path: "/api/products" },
      { verdict: "allow", layer: "network", route: "list-products", targets: ["catalog", "catalog-v2"] },
      "services.catalog-v2.allow[0]",
    ],
    [
      "denies_an_unknown_path_at_the_edge_with_404",
      { from: "internet", path: "/nope" },
      { verdict: "deny", layer: "edge", status: 404, code: "no_route", route: null },
      "no route matches GET /nope",
    ],
    [
      "denies_an_encoded_slash_at_the_edge_with_400",
      { from: "internet", path: "/api/orders%2f7" },
      { verdict: "deny", layer: "edge", status: 400, code: "bad_request_target" },
      "bad_request_target",
    ],
    [
      "denies_an_unserved_host",
      { from: "internet", path: "/api/products", host: "evil.example" },
      { verdict: "deny", layer: "edge", status: 404, code: "host_not_served" },
      "evil.example",
    ],
    [
      "denies_a_token_free_order_read_at_authentication",
      { from: "internet", path: "/api/orders/7" },
      { verdict: "deny", layer: "authentication", status: 401, code: "unauthenticated", route: "get-order" },
      "requires authentication (jwt main)",
    ],
    [
      "denies_a_token_whose_sub_is_not_a_string_at_authentication_as_the_gateway_does",
      { from: "internet", path: "/api/orders/7", claims: { sub: 42 }, scopes: ["orders:read"] },
      { verdict: "deny", layer: "authentication", status: 401, code: "unauthenticated", route: "get-order" },
      "sub claim is not a string",
    ],
    [
      "denies_a_token_without_the_scope_at_authorization",
      { from: "internet", path: "/api/orders/7", scopes: ["orders:write"] },
      { verdict: "deny", layer: "authorization", status: 403, code: "forbidden" },
      "missing scope orders:read",
    ],
    [
      "reads_scopes_from_the_scope_claim",
      { from: "internet", path: "/api/orders/7", claims: { sub: "u-1", scope: "a orders:read" } },
      { verdict: "allow", route: "get-order", targets: ["orders"] },
      "subject u-1",
    ],
    [
      "refuses_a_token_on_an_api_key_route",
      { from: "internet", path: "/partner/stock/x", scopes: ["orders:read"] },
      { verdict: "deny", layer: "authentication", status: 401 },
      "the token (jwt main) is not accepted here",
    ],
    [
      "admits_an_api_key_of_the_right_group",
      { from: "internet", path: "/partner/stock/x", consumer: "acme-retail" },
      { verdict: "allow", route: "partner-stock", targets: ["inventory"] },
      "consumer acme-retail admitted (group partners)",
    ],
    [
      "denies_a_client_outside_the_route_ranges",
      {
        from: "internet",
        method: "POST",
        path: "/partner/orders",
        consumer: "globex",
        clientIp: "192.0.2.1",
      },
      { verdict: "deny", layer: "authorization", status: 403 },
      "client address 192.0.2.1 is not in the route's clientIps",
    ],
    [
      "routes_on_a_header_condition",
      { from: "internet", path: "/api/products", headers: { "X-Chaos": "on" }, scopes: ["chaos:inject"] },
      { verdict: "allow", route: "products-chaos", targets: ["catalog-v2"] },
      "products-chaos",
    ],
    [
      "answers_a_redirect_at_the_gateway",
      { from: "internet", path: "/shop/a" },
      { verdict: "allow", status: 301, action: "redirect", targets: [] },
      "redirect to /app",
    ],
    [
      "evaluates_every_aggregate_part_with_the_gateway_identity",
      { from: "internet", path: "/api/dashboard", scopes: ["orders:read"] },
      { verdict: "allow", targets: ["catalog", "orders", "users"], action: "aggregate" },
      "part profile (users, onError fail): admits spiffe://shop.example/ns/shop/sa/gateway to GET /me",
    ],
    [
      "allows_a_declared_and_allowed_mesh_call_with_its_rule",
      { from: "orders", to: "payments", method: "POST", path: "/payments" },
      { verdict: "allow", route: "charge", rule: "services.payments.allow[0]", targets: ["payments"] },
      "orders → payments :15006 open",
    ],
    [
      "denies_an_undeclared_call_at_the_callers_sidecar",
      { from: "search", to: "orders", path: "/orders" },
      { verdict: "deny", layer: "outbound", status: 403, code: "destination_not_declared" },
      "services.search.calls",
    ],
    [
      "denies_an_unlisted_method_at_the_callees_sidecar",
      { from: "orders", to: "payments", method: "DELETE", path: "/payments/1" },
      { verdict: "deny", layer: "mesh", status: 403, code: "method_not_allowed" },
      "no allow rule admits DELETE",
    ],
    [
      "denies_the_gateway_where_no_rule_names_it",
      { from: "gateway", to: "payments", method: "POST", path: "/payments" },
      { verdict: "deny", layer: "mesh", code: "peer_not_allowed" },
      "no allow rule admits spiffe://shop.example/ns/shop/sa/gateway",
    ],
  ])("%s", (_claim, request, expected, text) => {
    const d = explainRequest(shop, request);
    expect(d).toMatchObject(expected);
    expect(formatDecision(d)).toContain(text);
  });

  it("denies_a_part_that_fails_the_aggregate_with_502", () => {
    const raw = shopRaw();
    raw.services.users.allow = [{ from: ["orders"], methods: ["GET"], paths: ["/users/*"] }];
    const d = explainRequest(inputOf(raw), {
      from: "internet",
      path: "/api/dashboard",
      scopes: ["orders:read"],
    });
    expect(d).toMatchObject({ verdict: "deny", layer: "mesh", status: 502, code: "peer_not_allowed" });
  });

  it("denies_a_split_when_one_weighted_backend_refuses_the_gateway", () => {
    const raw = shopRaw();
    raw.services["catalog-v2"].allow = [{ from: ["search"], methods: ["GET"], paths: ["/products"] }];
    raw.services.search.calls = ["catalog", "catalog-v2"];
    const d = explainRequest(inputOf(raw), { from: "internet", path: "/api/products" });
    expect(d).toMatchObject({ verdict: "deny", layer: "mesh", status: 403 });
    expect(formatDecision(d)).toContain("backend catalog-v2 (weight 10)");
  });

  it.each<[string, Record<string, string>, string, string]>([
    ["checks_a_head_the_cache_fills_as_the_get_it_is_sent_as", {}, "deny", "GET /products/7"],
    ["checks_a_head_with_no_store_as_a_head", { "cache-control": "no-store" }, "allow", "HEAD /products/7"],
    ["checks_a_head_that_bypasses_the_cache_as_a_head", { authorization: "Basic eA==" }, "allow", "HEAD"],
  ])("%s", (_claim, headers, verdict, text) => {
    // get-product caches; the catalogs admit the gateway for HEAD only here.
    const raw = shopRaw();
    for (const s of ["catalog", "catalog-v2"])
      raw.services[s].allow = [{ from: ["gateway"], methods: ["HEAD"], paths: ["/products/*"] }];
    const d = explainRequest(inputOf(raw), {
      from: "internet",
      method: "HEAD",
      path: "/api/products/7",
      headers,
    });
    expect(d.verdict).toBe(verdict);
    expect(formatDecision(d)).toContain(text);
  });

  it.each<[string, string[], string]>([
    // A gateway of wildcard hosts only serves no localhost: that default made every request a 404
    // host_not_served, so an `expect: deny` assertion held whatever the routes said.
    [
      "asks_a_wildcard_only_gateway_with_a_name_its_first_wildcard_covers",
      ["*.shop.example"],
      "example.shop.example",
    ],
    [
      "asks_the_first_exact_host_when_the_gateway_has_one",
      ["*.shop.example", "api.shop.example"],
      "api.shop.example",
    ],
  ])("%s", (_claim, hosts, host) => {
    const raw = shopRaw();
    raw.gateway.hosts = hosts;
    raw.gateway.listeners = raw.gateway.listeners.filter((l: { protocol: string }) => l.protocol === "http");
    const d = explainRequest(inputOf(raw), { from: "internet", path: "/api/products" });
    expect(d).toMatchObject({ verdict: "allow", route: "list-products", request: { host } });
  });

  it("ignores_a_denied_mirror_for_the_verdict_but_shows_it", () => {
    const raw = shopRaw();
    raw.services["search-next"].allow = [{ from: ["search"], methods: ["GET"], paths: ["/search"] }];
    const d = explainRequest(inputOf(raw), { from: "internet", path: "/api/search" });
    expect(d.verdict).toBe("allow");
    expect(formatDecision(d)).toContain("mirror search-next: 403 peer_not_allowed");
  });

  it.each<[string, TrafficRequest, string]>([
    ["rejects_an_unknown_caller", { from: "web", to: "orders", path: "/" }, "from"],
    ["rejects_a_mesh_request_without_a_callee", { from: "orders", path: "/" }, "to"],
    ["rejects_an_unknown_consumer", { from: "internet", path: "/", consumer: "initech" }, "consumer"],
    ["rejects_an_unknown_provider", { from: "internet", path: "/", provider: "other" }, "provider"],
    [
      "rejects_credentials_on_a_mesh_request",
      { from: "orders", to: "users", path: "/", scopes: ["x"] },
      "scopes",
    ],
  ])("%s", (_claim, request, field) => {
    expect(() => explainRequest(shop, request)).toThrow(TrafficRequestError);
    try {
      explainRequest(shop, request);
    } catch (err) {
      expect((err as TrafficRequestError).field).toBe(field);
    }
  });
});

describe("networkEdges", () => {
  it("opens_ingress_to_every_gateway_listener_and_only_declared_allowed_edges", () => {
    const edges = networkEdges(shop.infra).map((e) => `${e.from}->${e.to}:${e.ports.join(",")}`);
    expect(edges).toContain("internet->gateway:8080,8443");
    expect(edges).toContain("orders->payments:15006");
    expect(edges).toContain("gateway->catalog:15006");
    expect(edges).not.toContain("gateway->payments:15006");
    expect(edges).not.toContain("search->orders:15006");
    const declaredAllowed = shop.infra.edges.filter((e) => e.declared && e.allowed && e.from !== "internet");
    expect(edges).toHaveLength(declaredAllowed.length + 1);
  });

  it("closes_an_allowed_edge_nobody_declares_so_the_network_layer_denies_it", () => {
    const raw = shopRaw();
    raw.services.payments.allow.push({ from: ["gateway"], methods: ["GET"], paths: ["/payments/{id}"] });
    const input = inputOf(raw);
    const d = explainRequest(input, { from: "gateway", to: "payments", path: "/payments/1" });
    expect(d).toMatchObject({ verdict: "deny", layer: "network", code: "network_denied" });
    expect(formatDecision(d)).toContain("gateway → payments: no open edge (default deny)");
  });
});

describe("assertion files", () => {
  const parseOk = (text: string) => {
    const r = parseAssertionText(text, "a.yaml");
    if (!r.ok) throw new Error(JSON.stringify(r.errors));
    return r.set;
  };

  it("checks_every_assertion_of_the_shop_example", () => {
    const set = parseOk(readFileSync(join(ROOT, "examples/shop/assertions.yaml"), "utf8"));
    expect(set.assertions.length).toBeGreaterThanOrEqual(20);
    expect(set.assertions.filter((a) => a.expect === "deny").length).toBeGreaterThanOrEqual(8);
    expect(checkAssertionReferences(shop, set)).toEqual([]);
    const results = runAssertions(shop, set.assertions, { file: set.file, locate: set.locate });
    expect(results.filter((r) => !r.passed).map((r) => r.violations[0]?.message)).toEqual([]);
  });

  it("reports_a_failed_assertion_with_its_position_and_the_trace", () => {
    const set = parseOk(
      "assertions:\n  - name: ok\n    from: internet\n    path: /api/products\n    expect: allow\n" +
        "  - name: wrong\n    from: internet\n    path: /api/orders\n    expect: allow\n    route: list-orders\n",
    );
    const [ok, wrong] = runAssertions(shop, set.assertions, { file: "a.yaml", locate: set.locate });
    expect(ok).toMatchObject({ kind: "assertion", name: "ok", passed: true, violations: [] });
    expect(wrong).toMatchObject({ kind: "assertion", name: "wrong", passed: false });
    expect(wrong!.violations[0]).toMatchObject({
      code: "E_POLICY_ASSERTION_FAILED",
      severity: "error",
      path: "assertions[1]",
      file: "a.yaml",
      line: 6,
      column: 5,
    });
    expect(wrong!.violations[0]!.message).toContain("expected allow, got deny");
    expect(wrong!.violations[0]!.message).toContain("✗ authentication");
  });

  it.each<[string, Partial<TrafficAssertion>, string[]]>([
    [
      "compares_layer_status_and_code",
      { layer: "mesh", status: 404, code: "no_route" },
      ["expected layer mesh, got edge"],
    ],
    ["compares_the_route", { route: "search" }, ["expected route search, got none"]],
  ])("%s", (_claim, extra, messages) => {
    const [r] = runAssertions(shop, [{ from: "internet", path: "/nope", expect: "deny", ...extra }]);
    for (const m of messages) expect(r!.violations[0]!.message).toContain(m);
  });

  it.each([
    [
      "refuses_an_unknown_key_with_a_suggestion",
      "assertions:\n  - from: internet\n    path: /\n    expct: allow\n",
      'unknown key "expct" (did you mean "expect"?)',
      "assertions[0].expct",
      4,
    ],
    [
      "refuses_a_bad_expectation",
      "assertions:\n  - from: internet\n    path: /\n    expect: maybe\n",
      "",
      "assertions[0].expect",
      4,
    ],
    [
      "refuses_a_port_that_is_no_tcp_port",
      "assertions:\n  - from: payments\n    to: risk-engine\n    path: /\n    port: 70000\n    expect: deny\n",
      "",
      "assertions[0].port",
      5,
    ],
    ["refuses_broken_yaml", "assertions: [\n", "", "", 2],
    ["refuses_a_file_without_assertions", "tests: []\n", 'unknown key "tests"', "tests", 1],
  ])("%s", (_claim, text, message, path, line) => {
    const r = parseAssertionText(text, "a.yaml");
    expect(r.ok).toBe(false);
    if (r.ok) return;
    const e = r.errors.find((x) => x.path === path)!;
    expect(e).toMatchObject({ code: "E_POLICY_ASSERTIONS_INVALID", line });
    expect(e.message).toContain(message);
  });

  it("refuses_references_the_spec_does_not_have", () => {
    const set = parseOk(
      "assertions:\n  - from: internet\n    path: /\n    consumer: initech\n    expect: deny\n" +
        "  - from: ordrs\n    to: payments\n    path: /\n    expect: deny\n" +
        "  - from: internet\n    path: /api/orders\n    route: list-order\n    expect: deny\n",
    );
    const errors = checkAssertionReferences(shop, set);
    expect(errors.map((e) => `${e.path} ${e.line}`)).toEqual([
      "assertions[0].consumer 4",
      "assertions[1].from 6",
      "assertions[2].route 12",
    ]);
    expect(errors[2]!.message).toContain('did you mean "list-orders"?');
  });
});

describe("meshgate verify and explain", () => {
  const run = promisify(execFile);
  const BIN = join(ROOT, "bin/meshgate.js");
  async function meshgate(args: string[]) {
    try {
      const { stdout, stderr } = await run(process.execPath, [BIN, ...args], { cwd: ROOT });
      return { code: 0, stdout, stderr };
    } catch (err) {
      const e = err as { code: number; stdout: string; stderr: string };
      return { code: e.code, stdout: e.stdout, stderr: e.stderr };
    }
  }
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "meshgate-assertions-"));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it("finds_the_assertion_file_beside_the_spec_and_passes_the_shop", async () => {
    const r = await meshgate(["verify", "examples/shop/mesh.yaml"]);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain("✓ assertion orders cannot refund (DELETE) payments");
    expect(r.stdout).toMatch(/^58 passed, 0 failed/m);
  });

  it("exits_1_with_json_when_an_assertion_fails", async () => {
    const spec = join(dir, "mesh.yaml");
    await copyFile(SHOP, spec);
    const file = join(dir, "extra.yaml");
    await writeFile(
      file,
      stringify({
        assertions: [
          {
            name: "payments open to the gateway",
            from: "gateway",
            to: "payments",
            method: "POST",
            path: "/payments",
            expect: "allow",
          },
        ],
      }),
    );
    const r = await meshgate(["verify", spec, "--assertions", file, "--format", "json"]);
    expect(r.code).toBe(1);
    const report = JSON.parse(r.stdout);
    expect(report).toMatchObject({ ok: false, passed: 14, failed: 1 });
    const failed = report.checks.find((c: { kind: string }) => c.kind === "assertion");
    expect(failed.violations[0]).toMatchObject({ code: "E_POLICY_ASSERTION_FAILED", file, line: 2 });
    const text = await meshgate(["verify", spec, "--assertions", file]);
    expect(text.stdout).toContain(
      `${file}:2:5: error: assertions[0]: payments open to the gateway: expected allow, got deny`,
    );
    expect(text.stdout).toContain("14 passed, 1 failed");
  });

  it("exits_2_for_an_assertion_about_an_unknown_service", async () => {
    const file = join(dir, "typo.yaml");
    await writeFile(
      file,
      "assertions:\n  - from: ordrs\n    to: payments\n    path: /payments\n    expect: deny\n",
    );
    const r = await meshgate(["verify", "examples/shop/mesh.yaml", "--assertions", file]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain(`${file}:2:5: assertions[0].from: unknown caller "ordrs"`);
    expect(r.stderr).toContain("[E_POLICY_ASSERTIONS_INVALID]");
  });

  it("explains_one_request_in_text_and_json", async () => {
    const args = [
      "explain",
      "examples/shop/mesh.yaml",
      "--from",
      "internet",
      "--method",
      "POST",
      "--path",
      "/partner/orders",
      "--consumer",
      "globex",
      "--client-ip",
      "192.0.2.9",
    ];
    const text = await meshgate(args);
    expect(text.code).toBe(0);
    expect(text.stdout).toContain(
      "✓ authentication  gateway [gateway.routes[10].auth]: API key of consumer globex accepted",
    );
    expect(text.stdout).toContain("DENY at authorization: 403 forbidden (route partner-bulk-orders)");
    const json = JSON.parse((await meshgate([...args, "--format", "json"])).stdout);
    expect(json).toMatchObject({
      verdict: "deny",
      layer: "authorization",
      status: 403,
      route: "partner-bulk-orders",
    });
    expect(json.steps.map((s: { layer: string }) => s.layer)).toEqual([
      "edge",
      "authentication",
      "authorization",
    ]);
  });

  it("explains_a_mesh_call_with_headers_and_claims_flags", async () => {
    const mesh = await meshgate([
      "explain",
      "examples/shop/mesh.yaml",
      "--from",
      "orders",
      "--to",
      "users",
      "--path",
      "/users/7",
    ]);
    expect(mesh.stdout).toContain("ALLOW → users (services.users.allow[1])");
    const chaos = await meshgate([
      "explain",
      "examples/shop/mesh.yaml",
      "--from",
      "internet",
      "--path",
      "/api/products",
      "--header",
      "x-chaos: on",
      "--claims",
      '{"sub":"ops","scope":"chaos:inject"}',
    ]);
    expect(chaos.stdout).toContain("ALLOW via route products-chaos → catalog-v2");
  });

  it("explains_a_tunnel_to_an_external_destination", async () => {
    const r = await meshgate([
      "explain",
      "examples/shop/mesh.yaml",
      "--from",
      "payments",
      "--to",
      "card-processor",
      "--method",
      "POST",
      "--path",
      "/v1/charges",
    ]);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain(
      "✓ outbound        payments (sidecar) [external.card-processor.allow[0]]: card-processor is a declared call",
    );
    expect(r.stdout).toContain("ALLOW → card-processor (external.card-processor.allow[0])");
    const denied = await meshgate([
      "explain",
      "examples/shop/mesh.yaml",
      "--from",
      "orders",
      "--to",
      "card-processor",
      "--format",
      "json",
    ]);
    expect(JSON.parse(denied.stdout)).toMatchObject({
      verdict: "deny",
      layer: "outbound",
      status: 403,
      code: "egress_denied",
    });
    // --path is optional for a tunnel (nothing in it is seen), still required for a mesh call.
    expect(denied.code).toBe(0);
    const meshCall = await meshgate([
      "explain",
      "examples/shop/mesh.yaml",
      "--from",
      "orders",
      "--to",
      "payments",
    ]);
    expect(meshCall.code).toBe(2);
    expect(meshCall.stderr).toContain("missing --path");
  });

  it.each([
    ["explains_an_address_of_a_range_at_its_port_as_allowed", "8443", "allow", "ALLOW → risk-engine"],
    [
      "explains_the_same_address_at_another_port_as_denied",
      "443",
      "deny",
      "CONNECT 10.40.0.7:443 names no destination",
    ],
  ])("%s", async (_claim, port, verdict, text) => {
    const args = ["explain", "examples/shop/mesh.yaml", "--from", "payments", "--to", "risk-engine"];
    const r = await meshgate([...args, "--host", "10.40.0.7", "--port", port]);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain(text);
    const json = await meshgate([...args, "--host", "10.40.0.7", "--port", port, "--format", "json"]);
    expect(JSON.parse(json.stdout)).toMatchObject({ verdict, request: { port: Number(port) } });
  });

  // The method as sent (RFC 9110 §9.1: case-sensitive), and a caller past its sidecar (no client
  // certificate): the verdicts the proxies give them.
  it.each<[string, "strict" | "permissive", string[], Record<string, unknown>]>([
    [
      "refuses_a_lower_case_method_at_the_gateway_as_the_gateway_does",
      "strict",
      ["--from", "internet", "--method", "get", "--path", "/api/products"],
      { verdict: "deny", layer: "edge", status: 400, code: "bad_method" },
    ],
    [
      "allows_the_same_request_with_the_upper_case_method",
      "strict",
      ["--from", "internet", "--method", "GET", "--path", "/api/products"],
      { verdict: "allow" },
    ],
    [
      "refuses_a_lower_case_method_at_the_callers_sidecar",
      "strict",
      ["--from", "orders", "--to", "payments", "--method", "post", "--path", "/payments"],
      { verdict: "deny", layer: "outbound", status: 400, code: "bad_method" },
    ],
    [
      "refuses_a_plaintext_caller_of_a_strict_sidecar_at_its_tls_handshake",
      "strict",
      ["--from", "orders", "--to", "payments", "--method", "POST", "--path", "/payments", "--plaintext"],
      { verdict: "deny", layer: "mesh", status: null, code: "no_peer_identity" },
    ],
    [
      "admits_a_plaintext_caller_of_a_permissive_sidecar_by_the_rules_methods_and_paths",
      "permissive",
      ["--from", "orders", "--to", "payments", "--method", "POST", "--path", "/payments", "--plaintext"],
      { verdict: "allow", request: { credentials: "plaintext: no client certificate" } },
    ],
    [
      "refuses_a_plaintext_caller_of_a_permissive_sidecar_a_method_no_rule_admits",
      "permissive",
      [
        "--from",
        "orders",
        "--to",
        "payments",
        "--method",
        "DELETE",
        "--path",
        "/payments/p-1",
        "--plaintext",
      ],
      { verdict: "deny", layer: "mesh", status: 403, code: "method_not_allowed" },
    ],
  ])("%s", async (_claim, mtls, args, want) => {
    let spec = "examples/shop/mesh.yaml";
    if (mtls === "permissive") {
      spec = join(dir, "permissive.yaml");
      await writeFile(
        spec,
        readFileSync(join(ROOT, "examples/shop/mesh.yaml"), "utf8").replace(
          "mtls: strict",
          "mtls: permissive",
        ),
      );
    }
    const r = await meshgate(["explain", spec, ...args, "--format", "json"]);
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject(want);
  });

  it.each([
    ["exits_2_without_a_path", ["--from", "internet"], "missing --path"],
    [
      "exits_2_for_claims_that_are_not_an_object",
      ["--from", "internet", "--path", "/", "--claims", "[1]"],
      "--claims must be a JSON object",
    ],
    [
      "exits_2_for_an_unknown_consumer",
      ["--from", "internet", "--path", "/", "--consumer", "x"],
      '--consumer unknown API-key consumer "x"',
    ],
    [
      "exits_2_for_a_port_that_is_no_number",
      ["--from", "payments", "--to", "risk-engine", "--port", "https"],
      '--port must be a port number from 1 to 65535, got "https"',
    ],
    [
      "exits_2_for_a_port_out_of_range",
      ["--from", "payments", "--to", "risk-engine", "--port", "70000"],
      '--port must be a port number from 1 to 65535, got "70000"',
    ],
    [
      "exits_2_for_a_port_to_a_mesh_service",
      ["--from", "orders", "--to", "payments", "--path", "/", "--port", "8080"],
      "--port a port is given only for a destination outside the mesh",
    ],
    [
      "exits_2_for_a_plaintext_caller_from_the_internet",
      ["--from", "internet", "--path", "/", "--plaintext"],
      "--plaintext a plaintext caller is a pod of a service",
    ],
    [
      "exits_2_for_a_malformed_header",
      ["--from", "internet", "--path", "/", "--header", "novalue"],
      "--header must be NAME:VALUE",
    ],
  ])("%s", async (_claim, extra, message) => {
    const r = await meshgate(["explain", "examples/shop/mesh.yaml", ...extra]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain(message);
  });
});

describe("parseAccessLog", () => {
  const line = (o: Record<string, unknown>) =>
    JSON.stringify({ level: 30, event: "access", requestId: "r", method: "GET", ...o });
  it.each([
    [
      "makes_a_gateway_line_with_a_token_principal_into_a_request",
      {
        proxy: "gateway",
        path: "/api/orders",
        host: "api.shop.example",
        route: "list-orders",
        status: 200,
        client: "203.0.113.1",
        auth: "jwt:main",
        subject: "u-1",
        scopes: "orders:read x",
        headers: { "x-chaos": "on" },
      },
      {
        request: {
          from: "internet",
          path: "/api/orders",
          host: "api.shop.example",
          clientIp: "203.0.113.1",
          provider: "main",
          claims: { sub: "u-1" },
          scopes: ["orders:read", "x"],
          headers: { "x-chaos": "on" },
        },
        logged: { verdict: "allow", route: "list-orders", statusClass: null },
      },
    ],
    [
      "reads_a_refusal_from_the_outcome",
      { proxy: "gateway", path: "/nope", host: "h", route: "none", status: 404, outcome: "no_route" },
      { logged: { verdict: "deny", route: null, statusClass: "4xx" } },
    ],
    [
      "makes_an_inbound_sidecar_line_into_a_mesh_request",
      {
        proxy: "sidecar",
        direction: "inbound",
        path: "/payments",
        service: "payments",
        peerId: "spiffe://shop.example/ns/shop/sa/orders",
        rule: "services.payments.allow[0]",
        status: 200,
      },
      {
        request: { from: "spiffe://shop.example/ns/shop/sa/orders", to: "payments", path: "/payments" },
        logged: { verdict: "allow", route: "services.payments.allow[0]" },
      },
    ],
  ])("%s", (_claim, fields, expected) => {
    const [r] = parseAccessLog(line(fields)).requests;
    expect(r).toMatchObject({ skipped: null, ...expected });
  });

  it.each([
    [
      "skips_a_refused_target",
      { proxy: "gateway", path: "", host: "h", route: "none", status: 400, outcome: "bad_request_target" },
      "canonicalization",
    ],
    [
      "skips_a_client_certificate_principal",
      { proxy: "gateway", path: "/x", host: "h", route: "x", status: 200, auth: "clientCert:partners" },
      "clientCert principals are not modelled",
    ],
    ["skips_a_line_without_host", { proxy: "gateway", path: "/x", route: "x", status: 200 }, "no host"],
    [
      "skips_a_plaintext_inbound_request",
      { proxy: "sidecar", direction: "inbound", path: "/x", service: "orders", status: 200 },
      "plaintext",
    ],
    [
      "skips_a_refused_outbound_request",
      {
        proxy: "sidecar",
        direction: "outbound",
        path: "/x",
        service: "orders",
        peer: "none",
        status: 403,
        outcome: "denied_destination_not_declared",
      },
      "destination is not logged",
    ],
  ])("%s", (_claim, fields, reason) => {
    const [r] = parseAccessLog(line(fields)).requests;
    expect(r!.request).toBeNull();
    expect(r!.skipped).toContain(reason);
  });

  it("ignores_other_lines_and_counts_a_request_id_once", () => {
    const text = [
      "not json",
      JSON.stringify({ event: "started" }),
      line({
        proxy: "sidecar",
        direction: "outbound",
        path: "/p",
        service: "orders",
        peer: "payments",
        status: 200,
      }),
      line({
        proxy: "sidecar",
        direction: "inbound",
        path: "/p",
        service: "payments",
        peerId: "spiffe://x",
        status: 200,
      }),
    ].join("\n");
    const r = parseAccessLog(text);
    expect(r.ignored).toBe(2);
    expect(r.requests).toHaveLength(1);
    expect(r.requests[0]!.request).toMatchObject({ from: "orders", to: "payments" });
  });

  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  type SpecDoc = Record<string, any>;
  const egressLine = (o: Record<string, unknown>) =>
    JSON.stringify({ level: 30, event: "egress", service: "payments", durationMs: 1, ...o });

  it.each([
    [
      "makes_a_connect_tunnel_into_a_tunnel_request",
      {
        external: "card-processor",
        target: "API.stripe.com:443",
        via: "connect",
        status: 200,
        outcome: "closed",
      },
      {
        tunnel: { via: "connect", host: "api.stripe.com", port: 443, external: "card-processor" },
        logged: { verdict: "allow", statusClass: null },
      },
    ],
    [
      "reads_a_refused_connect_without_a_destination",
      { target: "api.evil.example:443", via: "connect", status: 403, outcome: "denied_egress_denied" },
      {
        tunnel: { via: "connect", host: "api.evil.example", port: 443, external: null },
        logged: { verdict: "deny", statusClass: "4xx" },
      },
    ],
    [
      "counts_a_failed_connect_as_let_through_by_the_policy",
      {
        external: "card-processor",
        target: "api.stripe.com:443",
        via: "connect",
        status: 502,
        outcome: "connect_failed",
      },
      { logged: { verdict: "allow" } },
    ],
  ])("%s", (_claim, fields, expected) => {
    const [r] = parseAccessLog(egressLine(fields)).requests;
    expect(r).toMatchObject({ skipped: null, ...expected });
  });

  it("skips_a_malformed_connect_target", () => {
    const [r] = parseAccessLog(
      egressLine({ target: "nope", via: "connect", status: 400, outcome: "denied_egress_bad_authority" }),
    ).requests;
    expect(r!.skipped).toContain("malformed");
  });

  it.each([
    [
      "lists_a_tunnel_the_proposed_spec_would_refuse",
      (raw: SpecDoc) => {
        delete raw.external["card-processor"];
        raw.services.payments.calls = ["risk-engine"];
      },
      {
        external: "card-processor",
        target: "api.stripe.com:443",
        via: "connect",
        status: 200,
        outcome: "closed",
      },
      ["allow", "deny", "no external destination declares api.stripe.com:443"],
    ],
    [
      "lists_a_refused_tunnel_a_new_destination_would_relay",
      (raw: SpecDoc) => {
        raw.external.partner = { host: "api.partner.example", port: 443, allow: [{ from: ["payments"] }] };
        raw.services.payments.calls.push("partner");
      },
      { target: "api.partner.example:443", via: "connect", status: 403, outcome: "denied_egress_denied" },
      ["deny", "allow", "allowed → partner (external.partner.allow[0])"],
    ],
    [
      "lists_a_tunnel_to_another_port_when_the_destination_moves_there",
      (raw: SpecDoc) => (raw.external["card-processor"].port = 8443),
      { target: "api.stripe.com:8443", via: "connect", status: 403, outcome: "denied_egress_denied" },
      ["deny", "allow", "allowed → card-processor"],
    ],
    [
      "lists_a_local_port_tunnel_whose_destination_is_gone",
      (raw: SpecDoc) => {
        delete raw.external["card-processor"];
        raw.services.payments.calls = ["risk-engine"];
      },
      { external: "card-processor", target: "api.stripe.com:443", via: "local", outcome: "closed" },
      ["allow", "deny", "its local port is gone"],
    ],
    [
      "lists_a_tunnel_the_caller_is_no_longer_allowed",
      (raw: SpecDoc) => (raw.external["card-processor"].allow = [{ from: ["orders"] }]),
      {
        external: "card-processor",
        target: "api.stripe.com:443",
        via: "connect",
        status: 200,
        outcome: "closed",
      },
      ["allow", "deny", "403 egress_denied"],
    ],
  ])("%s", (_claim, change, fields, [before, after, detail]) => {
    const raw = shopRaw();
    change(raw);
    const requests = parseAccessLog(egressLine(fields)).requests;
    expect(replay(requests, shop).changed).toEqual([]);
    const r = replay(requests, inputOf(raw));
    expect(r.changed.map((c) => [c.before.verdict, c.after.verdict])).toEqual([[before, after]]);
    expect(r.changed[0]!.detail).toContain(detail);
  });

  it("replays_a_request_to_a_wildcard_destination_by_the_name_it_went_to", () => {
    const log = line({
      proxy: "sidecar",
      direction: "outbound",
      path: "/img.png",
      host: "media.s3.eu-west-1.amazonaws.com",
      service: "catalog",
      peer: "product-images",
      status: 200,
    });
    const requests = parseAccessLog(log).requests;
    expect(replay(requests, shop).changed).toEqual([]);
    const raw = shopRaw();
    raw.external["product-images"].host = "images.s3.eu-west-1.amazonaws.com";
    const r = replay(requests, inputOf(raw));
    expect(r.changed.map((c) => c.request)).toEqual([
      "GET media.s3.eu-west-1.amazonaws.com /img.png from catalog to product-images",
    ]);
  });

  // The gateway logs a credential-like header a route reads as "[redacted]" (runtime/gateway/redact.ts):
  // presence is replayed, a comparison of its value cannot be.
  it.each([
    ["replays_a_presence_condition_on_a_redacted_credential_header", { present: true }, null],
    [
      "skips_a_line_whose_redacted_credential_header_a_route_compares",
      "abc",
      "x-auth-token is not in access lines",
    ],
  ])("%s", (_claim, condition, skipped) => {
    const raw = shopRaw();
    raw.gateway.routes.unshift({
      name: "tokened",
      match: { path: "/api/tokened", methods: ["GET"], headers: { "x-auth-token": condition } },
      to: "catalog",
      rewrite: { path: "/products" },
      public: true,
      rateLimit: { requests: 100, per: "1m", key: "ip" },
    });
    const log = line({
      proxy: "gateway",
      path: "/api/tokened",
      host: "api.shop.example",
      route: "tokened",
      status: 200,
      client: "203.0.113.1",
      headers: { "x-auth-token": "[redacted]" },
    });
    const r = replay(parseAccessLog(log).requests, inputOf(raw));
    if (skipped === null) {
      expect(r.skipped).toEqual([]);
      expect(r.changed).toEqual([]);
      expect(r.replayed).toBe(1);
    } else expect(r.skipped.map((s) => s.reason)).toEqual([expect.stringContaining(skipped)]);
  });

  it("replays_a_removed_consumer_as_anonymous_and_reports_the_change", () => {
    const raw = shopRaw();
    delete raw.gateway.apiKeys.consumers["acme-retail"];
    raw.gateway.routes.find((r: { name: string }) => r.name === "partner-stock").auth.groups = [
      "partners",
      "bulk",
    ];
    const log = line({
      proxy: "gateway",
      path: "/partner/stock/1",
      host: "api.shop.example",
      route: "partner-stock",
      status: 200,
      client: "203.0.113.1",
      auth: "apiKey",
      subject: "acme-retail",
      consumer: "acme-retail",
    });
    const r = replay(parseAccessLog(log).requests, inputOf(raw), {
      base: shop,
      baseLabel: "base",
      headLabel: "head",
    });
    expect(r.changed).toHaveLength(1);
    expect(r.changed[0]).toMatchObject({
      before: { verdict: "allow" },
      after: { verdict: "deny", statusClass: "4xx" },
    });
    expect(formatReplayText(r)).toContain("1 request(s) replayed: 1 would change (base → head)");
  });
});
