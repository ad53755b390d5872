/**
 * The topology graph: the shop's graph JSON (golden), edge statuses and layers of a small spec with a
 * denied call, an allowed-but-undeclared peer and a call cycle, where each edge's numbers are read, and
 * the certificate expiry read from a proxy's metrics.
 */
import { describe, expect, it } from "vitest";
import { parseSpec } from "../../components/spec/parse.ts";
import { translate } from "../../components/translate/translate.ts";
import { buildTopology, certificateOf, edgeSource } from "../../stacks/local/topology/graph.ts";
import { parseExposition } from "../../stacks/local/topology/metrics.ts";
import { expectGolden } from "../support/golden.ts";
import { shopInfra } from "../observability/support.ts";

const TESTDATA = new URL("./testdata/", import.meta.url).pathname;

function infraOf(services: Record<string, unknown>, gateway?: unknown, external?: unknown) {
  const r = parseSpec({
    name: "t",
    trustDomain: "t.example",
    services,
    ...(gateway ? { gateway } : {}),
    ...(external ? { external } : {}),
  });
  if (!r.ok) throw new Error(r.errors.map((e) => `${e.path}: ${e.message}`).join("\n"));
  return translate(r.spec).infra;
}

const SMALL = {
  web: { image: "r/web:1", port: 8080, calls: ["api"], allow: [{ from: ["gateway"] }] },
  api: { image: "r/api:1", port: 8080, calls: ["db", "web"], allow: [{ from: ["web"] }] },
  db: { image: "r/db:1", port: 8080, allow: [{ from: ["batch"] }] },
  batch: { image: "r/batch:1", port: 8080 },
};
const GATEWAY = {
  hosts: ["t.example"],
  routes: [
    { name: "web", match: { path: "/**" }, to: "web", public: true, rateLimit: { requests: 10, per: "1s" } },
  ],
};

describe("buildTopology", () => {
  it("renders_the_shop_graph_as_the_golden_file", async () => {
    const graph = buildTopology(await shopInfra());
    expectGolden(`${TESTDATA}shop.graph.json`, JSON.stringify(graph, null, 2) + "\n");
  });

  it("draws_external_destinations_with_their_address_and_the_egress_edges_by_status", () => {
    const g = buildTopology(
      infraOf(
        {
          web: { image: "r/web:1", port: 8080, calls: ["psp", "mail"] },
          api: { image: "r/api:1", port: 8080 },
        },
        undefined,
        {
          psp: {
            host: "api.stripe.com",
            port: 443,
            tls: "originate",
            clientCertificate: { secret: "psp-client" },
            allow: [{ from: ["web"] }],
          },
          mail: { host: "2001:db8::25", port: 587, allow: [{ from: ["api"] }] },
          unused: { host: "10.0.0.9", port: 5432 },
        },
      ),
    );
    const externals = g.nodes.filter((n) => n.kind === "external");
    // A destination nobody calls or may reach is not drawn; the others sit after their callers.
    expect(externals.map((n) => [n.id, n.address, n.identity, n.transport])).toEqual([
      ["mail", "[2001:db8::25]:587", null, "passthrough"],
      ["psp", "api.stripe.com:443", null, "mtls"],
    ]);
    // Mesh nodes have no transport of their own.
    expect(g.nodes.filter((n) => n.kind !== "external").every((n) => n.transport === null)).toBe(true);
    const web = g.nodes.find((n) => n.id === "web")!;
    for (const n of externals) expect(n.layer).toBeGreaterThan(web.layer);
    expect(g.edges.filter((e) => e.egress).map((e) => [e.id, e.status, e.allowedBy])).toEqual([
      ["api->mail", "unused", ["external.mail.allow[0]"]],
      ["web->mail", "denied", []],
      ["web->psp", "allowed", ["external.psp.allow[0]"]],
    ]);
    // Live numbers: the caller's sidecar's plain-HTTP requests to that destination plus its tunnels
    // there; none for a refused one.
    const spiffeOf = (w: string) => `spiffe://t.example/ns/t/sa/${w}`;
    const psp = edgeSource(
      g.edges.find((e) => e.id === "web->psp")!,
      spiffeOf,
    )!;
    expect(psp.target).toBe("web");
    expect([psp.stats.counter, psp.stats.histogram]).toEqual([
      "meshgate_requests_total",
      "meshgate_request_duration_seconds",
    ]);
    expect(psp.stats.match).toEqual({ direction: "outbound", peer: "psp" });
    expect(psp.also!.counter).toBe("meshgate_egress_connections_total");
    expect(psp.also!.match).toEqual({ external: "psp" });
    expect([psp.also!.isError("failed"), psp.also!.isError("opened")]).toEqual([true, false]);
    expect(
      edgeSource(
        g.edges.find((e) => e.id === "web->mail")!,
        spiffeOf,
      ),
    ).toBeNull();
  });

  it("marks_edges_allowed_denied_and_unused", () => {
    const g = buildTopology(infraOf(SMALL, GATEWAY));
    expect(g.edges.map((e) => [e.id, e.status])).toEqual([
      ["api->db", "denied"],
      ["api->web", "denied"],
      ["batch->db", "unused"],
      ["gateway->web", "allowed"],
      ["internet->gateway", "allowed"],
      ["web->api", "allowed"],
    ]);
    expect(g.edges.find((e) => e.id === "web->api")!.allowedBy).toEqual(["services.api.allow[0]"]);
  });

  it("layers_nodes_by_longest_path_and_draws_a_cycle_back", () => {
    const g = buildTopology(infraOf(SMALL, GATEWAY));
    // internet 0, gateway 1, web 2, api 3, db 4 (api → db); batch is reached by nothing (the services'
    // first layer); api → web closes a cycle and is drawn going back.
    expect(Object.fromEntries(g.nodes.map((n) => [n.id, n.layer]))).toEqual({
      internet: 0,
      gateway: 1,
      web: 2,
      batch: 2,
      api: 3,
      db: 4,
    });
  });

  it("places_nodes_without_overlap_inside_the_canvas", async () => {
    const g = buildTopology(await shopInfra());
    const seen = new Set(g.nodes.map((n) => `${n.x},${n.y}`));
    expect(seen.size).toBe(g.nodes.length);
    for (const n of g.nodes) {
      expect(n.x).toBeGreaterThan(0);
      expect(n.x).toBeLessThan(g.width);
      expect(n.y).toBeGreaterThan(0);
      expect(n.y).toBeLessThan(g.height);
    }
  });

  it("works_without_a_gateway", () => {
    const g = buildTopology(infraOf({ ...SMALL, web: { ...SMALL.web, allow: [{ from: ["api"] }] } }));
    expect(g.nodes.map((n) => n.id)).toEqual(["internet", "api", "batch", "db", "web"]);
    expect(g.edges.some((e) => e.from === "internet")).toBe(false);
  });
});

describe("edgeSource", () => {
  const g = buildTopology(infraOf(SMALL, GATEWAY));
  const spiffe = (w: string) => `spiffe://t.example/ns/t/sa/${w}`;
  const src = (id: string) =>
    edgeSource(
      g.edges.find((e) => e.id === id)!,
      spiffe,
    );

  it("reads_internet_traffic_from_the_gateway", () => {
    expect(src("internet->gateway")).toMatchObject({
      target: "gateway",
      stats: { counter: "meshgate_requests_total", match: {} },
    });
  });
  it("reads_gateway_edges_at_the_callee_inbound_by_the_gateway_identity", () => {
    expect(src("gateway->web")).toMatchObject({
      target: "web",
      stats: {
        match: { direction: "inbound", peer: spiffe("gateway") },
        histogram: "meshgate_request_duration_seconds",
      },
    });
  });
  it("reads_service_edges_at_the_caller_outbound_by_destination", () => {
    expect(src("api->db")).toMatchObject({
      target: "api",
      stats: { match: { direction: "outbound", peer: "db" } },
    });
  });
  it("counts_upstream_failures_as_errors_for_a_denied_gateway_edge", () => {
    const denied = buildTopology(
      infraOf(
        {
          web: { image: "r/web:1", port: 8080, allow: [{ from: ["batch"] }] },
          batch: { image: "r/b:1", port: 8080, calls: ["web"] },
        },
        GATEWAY,
      ),
    ).edges.find((e) => e.id === "gateway->web")!;
    expect(denied.status).toBe("denied");
    const s = edgeSource(denied, spiffe)!;
    expect(s).toMatchObject({
      target: "gateway",
      stats: { counter: "meshgate_upstream_requests_total", match: { cluster: "web" } },
    });
    expect(["5xx", "connect_failure", "timeout"].map(s.stats.isError)).toEqual([true, true, true]);
    expect(["success", "2xx", "4xx"].map(s.stats.isError)).toEqual([false, false, false]);
  });
});

describe("certificateOf", () => {
  const metrics = parseExposition(
    [
      'meshgate_cert_expiry_seconds{proxy="sidecar",identity="spiffe://t.example/ns/t/sa/old"} 0',
      'meshgate_cert_expiry_seconds{proxy="sidecar",identity="spiffe://t.example/ns/t/sa/web"} 598',
      'meshgate_requests_total{proxy="sidecar"} 3',
    ].join("\n"),
  ).samples;

  it("reads_the_serving_identity_and_its_expiry_time", () => {
    expect(certificateOf("web", "spiffe://t.example/ns/t/sa/web", metrics, 1_000_000)).toEqual({
      workload: "web",
      identity: "spiffe://t.example/ns/t/sa/web",
      expiresInSeconds: 598,
      expiresAt: 1_598_000,
      scrapedAt: 1_000_000,
    });
  });
  it("falls_back_to_the_largest_series_when_the_identity_differs", () => {
    expect(certificateOf("web", "spiffe://t.example/ns/t/sa/other", metrics, 0)?.expiresInSeconds).toBe(598);
  });
  it("is_null_without_an_identity_loaded", () => {
    expect(certificateOf("web", null, parseExposition("meshgate_requests_total 1").samples, 0)).toBeNull();
  });
});
