/**
 * Destinations outside the mesh (spec `external`) through the policy layer: externals are leaves of the
 * call graph; a service reaches one only when its sidecar relays the tunnel (it calls the destination and
 * an allow rule of the destination names it) — which the reachability relation, `meshgate graph`,
 * explainRequest (and the assertions, `meshgate explain` and the matchers built on it) and the network
 * layer all say alike, the last in agreement with the NetworkPolicies the chart renders.
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { parse } from "yaml";
import { synthesize } from "../../components/kubernetes/index.ts";
import { translate } from "../../components/translate/translate.ts";
import { parseSpec } from "../../components/spec/parse.ts";
import {
  explainRequest,
  formatDecision,
  TrafficRequestError,
  type TrafficDecision,
  type TrafficRequest,
} from "../../policies/assertions.ts";
import { parseAssertionText, runAssertions } from "../../policies/assertion-file.ts";
import { buildGraph, renderDot, renderMermaid } from "../../policies/graph.ts";
import { egressEdges } from "../../policies/network.ts";
import { staticReachability } from "../../policies/reachability.ts";
import { runGuardrails } from "../../policies/run.ts";
import { meshgateMatchers, meshOf } from "../../testing/matchers.ts";
import { expectGolden } from "../support/golden.ts";
import { inputOf, ROOT, shopRaw } from "./support.ts";

const FILE = join(ROOT, "test/policies/testdata/egress.yaml");
const GOLDEN = join(ROOT, "test/policies/testdata");
type Raw = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any
const egressRaw = () => parse(readFileSync(FILE, "utf8")) as Raw;
const input = inputOf(egressRaw());

expect.extend(meshgateMatchers);

describe("externals in the model and the reachability relation", () => {
  it("keeps_external_destinations_out_of_the_service_call_graph", () => {
    expect(input.model.callees("checkout")).toEqual(["ledger"]);
    expect(input.model.externalCalls("checkout")).toEqual(["card-processor", "mailer", "legacy-db"]);
    expect(input.model.callers("ledger")).toEqual(["checkout"]);
    expect(input.model.callers("card-processor")).toEqual([]);
    expect(staticReachability(input).calls).toEqual([{ from: "checkout", to: "ledger" }]);
  });

  it("lists_egress_declared_or_allowed_and_relays_only_edges_that_are_both", () => {
    const r = staticReachability(input);
    expect(r.externals.map((x) => `${x.name} ${x.host}:${x.port}`)).toEqual([
      "card-processor api.stripe.com:443",
      "legacy-db 10.20.0.7:5432",
      "mailer 2001:db8::25:587",
      "warehouse warehouse.data.svc.cluster.local:9000",
    ]);
    expect(r.egress.map((e) => [e.from, e.to, e.declared, e.rules.join(), e.relayed].join(" "))).toEqual([
      "checkout card-processor true external.card-processor.allow[0] true",
      "checkout legacy-db true  false",
      "checkout mailer true external.mailer.allow[0] true",
      "ledger legacy-db false external.legacy-db.allow[0] false",
      "ledger warehouse true external.warehouse.allow[0] true",
    ]);
  });

  it("reports_the_denied_call_and_the_allow_rule_without_a_call_and_nothing_else_about_externals", () => {
    const about = runGuardrails(input)
      .flatMap((c) => c.violations)
      .filter((v) => /legacy-db|card-processor|mailer|warehouse/.test(`${v.path} ${v.message}`))
      .map((v) => `${v.code} ${v.path}`);
    expect(about).toEqual([
      "E_POLICY_ALLOW_WITHOUT_CALL external.legacy-db.allow[0].from[0]",
      "E_POLICY_CALL_DENIED services.checkout.calls[3]",
    ]);
  });
});

describe("meshgate graph with external destinations", () => {
  const graph = buildGraph(input, staticReachability(input));

  it("draws_externals_outside_the_mesh_and_relayed_egress_labelled_host_and_port", () => {
    const mermaid = renderMermaid(graph);
    const lines = mermaid.split("\n");
    // Declared after the mesh's subgraph closes: outside its boundary.
    const end = lines.indexOf("  end");
    expect(lines.indexOf('  ext_card_processor[/"card-processor"/]')).toBeGreaterThan(end);
    expect(mermaid).toContain('  n_checkout -->|"api.stripe.com:443"| ext_card_processor');
    expect(mermaid).toContain('  n_checkout -->|"[2001:db8::25]:587"| ext_mailer');
    expect(mermaid).toContain('  n_ledger -->|"warehouse.data.svc.cluster.local:9000"| ext_warehouse');
    expectGolden(join(GOLDEN, "egress.graph.mmd"), mermaid);
  });

  it("draws_a_declared_call_no_allow_rule_admits_dashed_red_and_an_allow_without_a_call_not_at_all", () => {
    const mermaid = renderMermaid(graph);
    const edges = mermaid.split("\n").filter((l) => / (-->|==>|-\.->)\|/.test(l));
    const i = edges.indexOf('  n_checkout -.->|"declared call, denied"| ext_legacy_db');
    expect(i).toBeGreaterThanOrEqual(0);
    expect(mermaid).toContain(`  linkStyle ${i} stroke:#d62728`);
    expect(edges.filter((l) => l.includes("n_ledger") && l.includes("ext_legacy_db"))).toEqual([]);
  });

  it("says_on_the_edge_when_the_callers_sidecar_opens_the_tls", () => {
    const shop = inputOf(parse(readFileSync(join(ROOT, "examples/shop/mesh.yaml"), "utf8")));
    const shopGraph = buildGraph(shop, staticReachability(shop));
    const label = (to: string) => shopGraph.edges.find((e) => e.kind === "egress" && e.to === to)?.label;
    expect(label("card-processor")).toBe("api.stripe.com:443 · TLS by the sidecar");
    expect(label("risk-engine")).toBe("10.40.0.0/24:8443");
    expect(label("bank-payouts")).toBe("payouts.bank.example:443 · mTLS by the sidecar");
  });

  it("draws_externals_as_parallelograms_outside_the_cluster_in_dot", () => {
    const dot = renderDot(graph);
    const cluster = dot.slice(dot.indexOf('subgraph "cluster_mesh"'), dot.indexOf("  }\n"));
    expect(cluster).not.toContain("card-processor");
    expect(dot).toContain('  "card-processor" [shape=parallelogram];');
    expect(dot).toContain('  "checkout" -> "card-processor" [label="api.stripe.com:443"];');
    expect(dot).toContain(
      '  "checkout" -> "legacy-db" [label="declared call, denied", color="#d62728", style=dashed];',
    );
    expectGolden(join(GOLDEN, "egress.graph.dot"), dot);
  });
});

describe("explainRequest to external destinations", () => {
  it.each<[string, TrafficRequest, Partial<TrafficDecision>, string]>([
    [
      "allows_a_relayed_tunnel_naming_the_allow_rule_and_every_address_the_dns_name_opens",
      { from: "checkout", to: "card-processor", method: "POST", path: "/v1/charges" },
      {
        verdict: "allow",
        layer: "network",
        rule: "external.card-processor.allow[0]",
        targets: ["card-processor"],
        status: null,
        code: null,
      },
      "checkout → 0.0.0.0/0, ::/0 :443 open (a NetworkPolicy cannot name api.stripe.com",
    ],
    [
      "allows_a_tunnel_to_an_ipv6_address_through_exactly_that_address",
      { from: "checkout", to: "mailer", path: "/" },
      { verdict: "allow", rule: "external.mailer.allow[0]" },
      "checkout → 2001:db8::25/128 :587 open",
    ],
    [
      "allows_a_tunnel_to_a_cluster_service_through_its_namespace",
      { from: "ledger", to: "warehouse", path: "/" },
      { verdict: "allow", rule: "external.warehouse.allow[0]" },
      "ledger → namespace data :9000 open",
    ],
    [
      "denies_a_declared_call_no_allow_rule_admits_naming_the_missing_rule",
      { from: "checkout", to: "legacy-db", path: "/" },
      { verdict: "deny", layer: "outbound", status: 403, code: "egress_denied", rule: null },
      "[external.legacy-db.allow]: 403 egress_denied: no allow rule of external.legacy-db names checkout",
    ],
    [
      "denies_an_allowed_destination_the_service_does_not_call_naming_the_missing_call",
      { from: "ledger", to: "legacy-db", path: "/" },
      { verdict: "deny", layer: "outbound", status: 403, code: "egress_denied" },
      "[services.ledger.calls]: 403 egress_denied: legacy-db (10.20.0.7:5432) is not a declared call of ledger",
    ],
    [
      "denies_a_connect_to_another_host_than_the_destinations",
      { from: "checkout", to: "card-processor", host: "api.evil.example", path: "/" },
      { verdict: "deny", layer: "outbound", code: "egress_denied" },
      "CONNECT api.evil.example:443 names no destination checkout may reach",
    ],
    [
      "allows_the_destinations_host_written_in_another_case_or_with_brackets",
      { from: "checkout", to: "mailer", host: "[2001:DB8:0::25]", path: "/" },
      { verdict: "allow" },
      "CONNECT [2001:db8::25]:587 is relayed",
    ],
  ])("%s", (_claim, request, expected, text) => {
    const d = explainRequest(input, request);
    expect(d).toMatchObject(expected);
    expect(formatDecision(d)).toContain(text);
    // No sidecar at the destination: the mesh layer never decides a tunnel.
    expect(d.steps.map((s) => s.layer)).not.toContain("mesh");
  });

  // The shop's product-images is a wildcard (*.s3.eu-west-1.amazonaws.com): the sidecar's own matching.
  it.each<[string, TrafficRequest, Partial<TrafficDecision>, string]>([
    [
      "allows_a_name_a_wildcard_destination_covers",
      { from: "catalog", to: "product-images", host: "Images.s3.eu-west-1.amazonaws.com", path: "/" },
      { verdict: "allow", layer: "network", rule: "external.product-images.allow[0]" },
      "CONNECT images.s3.eu-west-1.amazonaws.com:443 is relayed",
    ],
    [
      "takes_a_name_the_wildcard_covers_when_the_request_names_none",
      { from: "catalog", to: "product-images", path: "/" },
      { verdict: "allow" },
      "CONNECT example.s3.eu-west-1.amazonaws.com:443 is relayed",
    ],
    [
      "denies_the_wildcards_domain_itself",
      { from: "catalog", to: "product-images", host: "s3.eu-west-1.amazonaws.com", path: "/" },
      { verdict: "deny", layer: "outbound", status: 403, code: "egress_denied" },
      "CONNECT s3.eu-west-1.amazonaws.com:443 names no destination catalog may reach",
    ],
    [
      "denies_a_lookalike_of_the_wildcards_domain",
      { from: "catalog", to: "product-images", host: "evils3.eu-west-1.amazonaws.com", path: "/" },
      { verdict: "deny", layer: "outbound", status: 403, code: "egress_denied" },
      "names no destination catalog may reach (product-images is *.s3.eu-west-1.amazonaws.com:443)",
    ],
    [
      "denies_a_covered_name_to_a_service_that_does_not_call_the_wildcard",
      { from: "orders", to: "product-images", host: "images.s3.eu-west-1.amazonaws.com", path: "/" },
      { verdict: "deny", layer: "outbound", status: 403, code: "egress_denied" },
      "is not a declared call of orders",
    ],
  ])("%s", (_claim, request, expected, text) => {
    const d = explainRequest(inputOf(shopRaw()), request);
    expect(d).toMatchObject(expected);
    expect(formatDecision(d)).toContain(text);
  });

  it.each<[string, object | undefined, string]>([
    ["by_default", undefined, "without the client's identity or address"],
    ["when_it_shares_identity", { identity: true }, "with the client's identity (shared), not its address"],
    [
      "when_it_shares_both",
      { identity: true, clientAddress: true },
      "with the client's identity and address (shared)",
    ],
  ])("explains_what_a_gateway_route_tells_an_external_destination_about_the_client_%s", (_c, share, text) => {
    const raw = shopRaw();
    if (share) raw.external["carrier-tracking"].share = share;
    const d = explainRequest(inputOf(raw), {
      from: "internet",
      path: "/api/shipments/1Z",
      scopes: ["orders:read"],
      to: "carrier-tracking",
    });
    expect(d).toMatchObject({ verdict: "allow", route: "track-shipment" });
    expect(formatDecision(d)).toContain(
      `external.carrier-tracking.allow[0] admits the gateway; it forwards to tracking.carrier.example:443 over TLS verified for tracking.carrier.example, ${text}`,
    );
  });

  it("explains_a_split_between_an_external_destination_and_a_service_hop_by_hop", () => {
    const raw = shopRaw();
    const route = raw.gateway.routes.find((r: { name: string }) => r.name === "track-shipment");
    delete route.to;
    route.split = [
      { external: "carrier-tracking", weight: 80 },
      { service: "orders", weight: 20 },
    ];
    raw.services.orders.allow.push({ from: ["gateway"], methods: ["GET"], paths: ["/v2/shipments/*"] });
    const i = inputOf(raw);
    const d = explainRequest(i, { from: "internet", path: "/api/shipments/1Z", scopes: ["orders:read"] });
    expect(d).toMatchObject({ verdict: "allow", route: "track-shipment" });
    const text = formatDecision(d);
    expect(text).toContain(
      "backend carrier-tracking (weight 80): external.carrier-tracking.allow[0] admits the gateway; it forwards to tracking.carrier.example:443",
    );
    expect(text).toContain("backend orders (weight 20): admits spiffe://shop.example/ns/shop/sa/gateway");
    expect(i.model.externalCalls("gateway")).toEqual(["carrier-tracking"]);
    // The entry's spec path is the split's, for guardrails and diffs that cite it.
    const routeOf = i.model.routes.find((r) => r.name === "track-shipment")!;
    expect(i.model.targets(routeOf).map((t) => [t.service, t.external, t.source])).toEqual([
      ["carrier-tracking", true, "gateway.routes[13].split[0].external"],
      ["orders", false, "gateway.routes[13].split[1].service"],
    ]);
  });

  it("explains_an_aggregate_part_from_an_external_destination_as_its_own_hop", () => {
    const raw = shopRaw();
    const route = raw.gateway.routes.find((r: { name: string }) => r.name === "track-shipment");
    delete route.to;
    delete route.rewrite;
    delete route.cache;
    route.aggregate = { tracking: { external: "carrier-tracking", path: "/v2/shipments/{id}" } };
    const i = inputOf(raw);
    const d = explainRequest(i, { from: "internet", path: "/api/shipments/1Z", scopes: ["orders:read"] });
    expect(d).toMatchObject({ verdict: "allow", route: "track-shipment" });
    expect(formatDecision(d)).toContain(
      "part tracking (carrier-tracking, onError fail): external.carrier-tracking.allow[0] admits the gateway; it forwards to tracking.carrier.example:443",
    );
    const routeOf = i.model.routes.find((r) => r.name === "track-shipment")!;
    expect(i.model.targets(routeOf).map((t) => [t.service, t.external, t.kind, t.source])).toEqual([
      ["carrier-tracking", true, "part", "gateway.routes[13].aggregate.tracking"],
    ]);
  });

  it("explains_a_range_destination_by_the_address_asked_for_and_opens_exactly_the_range", () => {
    const raw = egressRaw();
    raw.services.checkout.calls.push("corp-net");
    raw.external["corp-net"] = { host: "10.30.0.0/16", port: 5432, allow: [{ from: ["checkout"] }] };
    const ranged = inputOf(raw);
    const explain = (host?: string) =>
      explainRequest(ranged, { from: "checkout", to: "corp-net", path: "/", ...(host ? { host } : {}) });
    const inside = explain("10.30.7.8");
    expect(inside).toMatchObject({ verdict: "allow", layer: "network", rule: "external.corp-net.allow[0]" });
    expect(formatDecision(inside)).toContain("CONNECT 10.30.7.8:5432 is relayed");
    expect(formatDecision(inside)).toContain("checkout → 10.30.0.0/16 :5432 open");
    expect(formatDecision(explain())).toContain("CONNECT 10.30.0.0:5432 is relayed");
    const outside = explain("10.31.0.1");
    expect(outside).toMatchObject({ verdict: "deny", layer: "outbound", status: 403, code: "egress_denied" });
    expect(formatDecision(outside)).toContain(
      "CONNECT 10.31.0.1:5432 names no destination checkout may reach",
    );
  });

  it.each<[string, TrafficRequest, string, RegExp]>([
    [
      "rejects_the_gateway_as_a_direct_caller_of_an_external_destination",
      { from: "gateway", to: "card-processor", path: "/" },
      "from",
      /gateway reaches an external destination only through a route/,
    ],
    [
      "rejects_an_internet_request_to_an_external_destination",
      { from: "internet", to: "card-processor", path: "/" },
      "to",
      /destination outside the mesh/,
    ],
    [
      "names_the_external_destinations_when_the_callee_is_unknown",
      { from: "checkout", to: "stripe", path: "/" },
      "to",
      /or external destination \(card-processor, legacy-db, mailer, warehouse\)/,
    ],
    [
      "rejects_a_callee_named_like_an_object_property_instead_of_taking_it_for_a_destination",
      { from: "checkout", to: "constructor", path: "/" },
      "to",
      /unknown service "constructor"/,
    ],
  ])("%s", (_claim, request, field, message) => {
    const raw = egressRaw();
    raw.gateway = {
      hosts: ["egress.example"],
      routes: [
        { name: "entries", match: { path: "/entries", methods: ["POST"] }, to: "ledger", public: true },
      ],
    };
    raw.services.ledger.allow[0].from.push("gateway");
    let err: unknown;
    try {
      explainRequest(inputOf(raw), request);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(TrafficRequestError);
    expect((err as TrafficRequestError).field).toBe(field);
    expect((err as TrafficRequestError).message).toMatch(message);
  });

  it("checks_egress_assertions_of_a_file_and_reports_a_failed_one_with_its_trace", () => {
    const parsed = parseAssertionText(
      [
        "assertions:",
        "  - name: checkout reaches the card processor",
        "    from: checkout",
        "    to: card-processor",
        "    path: /v1/charges",
        "    expect: allow",
        "    rule: external.card-processor.allow[0]",
        "  - name: checkout reaches the legacy database",
        "    from: checkout",
        "    to: legacy-db",
        "    path: /",
        "    expect: allow",
      ].join("\n"),
      "egress.yaml",
    );
    if (!parsed.ok) throw new Error(JSON.stringify(parsed.errors));
    const [ok, failed] = runAssertions(input, parsed.set.assertions, parsed.set);
    expect(ok!.passed).toBe(true);
    expect(failed!.passed).toBe(false);
    expect(failed!.violations[0]!.message).toContain("expected allow, got deny");
    expect(failed!.violations[0]!.message).toContain("no allow rule of external.legacy-db names checkout");
    expect(failed!.violations[0]!.line).toBe(8);
  });

  it("lets_the_vitest_matchers_assert_egress", () => {
    const mesh = meshOf(egressRaw());
    expect(mesh).toAllow({
      from: "checkout",
      to: "card-processor",
      path: "/v1/charges",
      rule: "external.card-processor.allow[0]",
    });
    expect(mesh).toDeny({
      from: "checkout",
      to: "legacy-db",
      path: "/",
      layer: "outbound",
      code: "egress_denied",
    });
    expect(mesh).not.toAllow({ from: "ledger", to: "legacy-db", path: "/" });
  });
});

describe("egress at the network layer", () => {
  /** The egress rules of a workload's NetworkPolicy in the chart, as `peers :port` strings. */
  function chartEgress(workload: string): string[] {
    const r = parseSpec(egressRaw());
    if (!r.ok) throw new Error("invalid");
    const policy = synthesize(translate(r.spec)).find(
      (o) => o.kind === "NetworkPolicy" && o.metadata.name === `meshgate-${workload}`,
    );
    if (!policy) throw new Error(`no NetworkPolicy meshgate-${workload}`);
    const spec = policy.spec as { egress?: { to?: Raw[]; ports?: { port: number }[] }[] };
    return (spec.egress ?? []).flatMap((rule) =>
      (rule.ports ?? []).map(
        (p) =>
          `${(rule.to ?? [])
            .map((peer) =>
              peer.ipBlock
                ? peer.ipBlock.cidr
                : peer.namespaceSelector && !peer.podSelector
                  ? `namespace ${peer.namespaceSelector.matchLabels["kubernetes.io/metadata.name"]}`
                  : "pods",
            )
            .join(", ")} :${p.port}`,
      ),
    );
  }

  it("opens_exactly_the_relayed_edges_as_the_chart_networkpolicies_do", () => {
    const edges = egressEdges(input.infra).map(
      (e) => `${e.from} ${e.to} ${e.peers.join(", ")} :${e.port} (${e.source})`,
    );
    expect(edges).toEqual([
      "checkout card-processor 0.0.0.0/0, ::/0 :443 (external.card-processor.allow[0])",
      "checkout mailer 2001:db8::25/128 :587 (external.mailer.allow[0])",
      "ledger warehouse namespace data :9000 (external.warehouse.allow[0])",
    ]);
    for (const workload of ["checkout", "ledger"]) {
      const chart = chartEgress(workload).filter((r) => !r.startsWith("pods"));
      const engine = egressEdges(input.infra)
        .filter((e) => e.from === workload)
        .map((e) => `${e.peers.join(", ")} :${e.port}`);
      expect(chart.sort(), workload).toEqual(engine.sort());
    }
    // Neither the denied call nor the allow without a call opens the database's address.
    expect([...chartEgress("checkout"), ...chartEgress("ledger")].join("\n")).not.toContain("10.20.0.7");
  });
});
