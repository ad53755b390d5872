/**
 * The NetworkPolicies back the mesh up at L4, and open nothing more: for the shop example (bundled and
 * operator observability) and generated specs, the policies are evaluated (netpol.ts) over every pod the
 * chart deploys plus "foreign" pods (a pod the chart does not know in each namespace, and in an unrelated
 * one), and the allowed connections must EQUAL the expected set computed from the IR: the mesh's allowed
 * edges on the sidecars' inbound port, the gateway's listeners from outside, Prometheus → admin ports,
 * proxies → collector → trace store, Grafana → Prometheus and the trace store, DNS, the API server for
 * Prometheus, and the gateway's JWKS / Redis. The evaluator itself is tested on hand-written policies.
 */
import { describe, expect, it } from "vitest";
import { synthesize, type ChartOptions, type KubeObject } from "../../components/kubernetes/index.ts";
import type { TranslateResult } from "../../components/translate/ir.ts";
import { networkEdges } from "../../policies/network.ts";
import { allowedConnections, cluster, probePorts, selectorMatches, type Pod } from "./netpol.ts";
import { generatedResult, resultOf, ROOT, shopResult } from "./support.ts";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { parse } from "yaml";
import { loadSpecFile } from "../../components/spec/load.ts";
import { translate } from "../../components/translate/translate.ts";

const ADMIN = { gateway: 9901, sidecar: 15000 };
const INBOUND = 15006;

function foreignPods(namespaces: string[], ports: { port: number; protocol: string }[]): Pod[] {
  return namespaces.map((ns) => ({ id: `${ns}/foreign`, namespace: ns, labels: {}, ports }));
}

/** The cluster's DNS server (CoreDNS as kubeadm, EKS, GKE and AKS label it): added to every evaluation. */
const KUBE_DNS: Pod = {
  id: "kube-system/kube-dns",
  namespace: "kube-system",
  labels: { "k8s-app": "kube-dns" },
  ports: [
    { name: "dns", port: 53, protocol: "UDP" },
    { name: "dns-tcp", port: 53, protocol: "TCP" },
  ],
};

/** The connections the mesh and its observability pipeline need, computed from the IR (not the chart). */
function expected(result: TranslateResult, mode: "bundled" | "operator", obsNs: string, foreign: string[]) {
  const infra = result.infra;
  const ns = infra.namespace;
  const out = new Set<string>();
  const workloads = infra.workloads.map((w) => w.name);
  const chartPods = workloads.map((w) => `${ns}/${w}`);
  for (const e of infra.edges)
    if (e.allowed && e.declared && workloads.includes(e.from) && workloads.includes(e.to))
      out.add(`${ns}/${e.from} -> ${ns}/${e.to}:${INBOUND}/TCP`);
  const gateway = infra.workloads.find((w) => w.kind === "gateway");
  // The gateway's listeners are open to anyone: outside, and pods of namespaces without policies.
  const open = foreign.filter((f) => f !== ns && !(mode === "bundled" && f === obsNs));
  if (gateway)
    for (const l of gateway.listeners)
      for (const src of ["external", KUBE_DNS.id, ...open.map((f) => `${f}/foreign`)])
        out.add(`${src} -> ${ns}/gateway:${l.port}/TCP`);
  const scraper = mode === "bundled" ? `${obsNs}/prometheus` : `${obsNs}/foreign`;
  for (const w of infra.workloads)
    out.add(`${scraper} -> ${ns}/${w.name}:${w.kind === "gateway" ? ADMIN.gateway : ADMIN.sidecar}/TCP`);
  if (mode === "bundled") {
    chartPods.push(`${obsNs}/prometheus`, `${obsNs}/grafana`, `${obsNs}/otel-collector`, `${obsNs}/tempo`);
    for (const w of workloads) out.add(`${ns}/${w} -> ${obsNs}/otel-collector:4318/TCP`);
    out.add(`${obsNs}/otel-collector -> ${obsNs}/tempo:4317/TCP`);
    out.add(`${obsNs}/grafana -> ${obsNs}/prometheus:9090/TCP`);
    out.add(`${obsNs}/grafana -> ${obsNs}/tempo:3200/TCP`);
    for (const port of [443, 6443]) {
      out.add(`${obsNs}/prometheus -> external:${port}/TCP`);
      out.add(`${obsNs}/prometheus -> elsewhere/foreign:${port}/TCP`);
    }
  }
  // DNS from every pod of the policed namespaces, to the cluster's DNS server only (not to any host
  // that listens on port 53).
  chartPods.push(`${ns}/foreign`, ...(mode === "bundled" ? [`${obsNs}/foreign`] : []));
  for (const p of chartPods)
    for (const proto of ["UDP", "TCP"]) out.add(`${p} -> ${KUBE_DNS.id}:53/${proto}`);
  // The gateway's dependencies: JWKS endpoints outside, the Redis beside it.
  const g = result.runtime.gateway;
  if (g) {
    const urls = [
      ...g.auth.jwt.flatMap((j) => (j.jwksUri ? [j.jwksUri] : [])),
      ...(g.rateLimitStore.kind === "redis" ? [g.rateLimitStore.url] : []),
      ...(g.cacheStore.kind === "redis" ? [g.cacheStore.url] : []),
    ];
    for (const u of urls) {
      const url = new URL(u);
      const port = url.port ? Number(url.port) : url.protocol === "https:" ? 443 : 6379;
      const inCluster = /^[^.]+\.([^.]+)\.svc\.cluster\.local$/.exec(url.hostname);
      out.add(`${ns}/gateway -> ${inCluster ? `${inCluster[1]}/foreign` : "external"}:${port}/TCP`);
    }
  }
  // The destinations outside the mesh a sidecar relays to (declared and allowed): an address or a name
  // outside the cluster → "external"; a cluster Service name → that namespace's pods.
  for (const e of infra.egress.filter((x) => x.declared && x.allowed)) {
    const inCluster = /^[^.]+\.([^.]+)\.svc\.cluster\.local$/.exec(e.host);
    out.add(`${ns}/${e.from} -> ${inCluster ? `${inCluster[1]}/foreign` : "external"}:${e.port}/TCP`);
  }
  return out;
}

/**
 * The allowed connections with at least one end in a namespace the chart deploys (and so polices):
 * what foreign pods of other namespaces do among themselves is not the chart's business.
 */
function evaluate(objects: readonly KubeObject[], foreignNs: string[]) {
  const ports = probePorts(cluster(objects));
  const chartNs = new Set(objects.filter((o) => o.kind === "Namespace").map((o) => o.metadata.name));
  const inChart = (end: string) => chartNs.has(end.split("/")[0]!);
  return new Set(
    [...allowedConnections(cluster(objects, [...foreignPods(foreignNs, ports), KUBE_DNS]))].filter((c) => {
      const [src, dst] = c.split(" -> ") as [string, string];
      return inChart(src) || inChart(dst);
    }),
  );
}

const diff = (actual: Set<string>, want: Set<string>) => ({
  unexpected: [...actual].filter((x) => !want.has(x)).sort(),
  missing: [...want].filter((x) => !actual.has(x)).sort(),
});

describe("NetworkPolicies derived from the authorization rules", () => {
  const cases: { name: string; result: () => Promise<TranslateResult>; opts: ChartOptions }[] = [
    { name: "shop_bundled", result: shopResult, opts: {} },
    { name: "shop_operator", result: shopResult, opts: { observability: "operator" } },
    {
      name: "external_destinations",
      result: async () => {
        const loaded = await loadSpecFile(join(ROOT, "test/translate/testdata/external.in.yaml"));
        if (!loaded.ok) throw new Error(loaded.errors.map((e) => e.message).join("; "));
        return translate(loaded.spec);
      },
      opts: {},
    },
    {
      name: "generated_40_services",
      result: async () => generatedResult({ services: 40, routes: 60, seed: 7 }),
      opts: {},
    },
  ];
  for (const c of cases)
    it(`allow_exactly_the_mesh_edges_and_the_observability_pipeline_${c.name}`, async () => {
      const result = await c.result();
      const ns = result.infra.namespace;
      const mode = c.opts.observability === "operator" ? "operator" : "bundled";
      const obsNs = mode === "operator" ? "monitoring" : `${ns}-observability`;
      const foreignNs = [ns, obsNs, "elsewhere"];
      const actual = evaluate(synthesize(result, c.opts), foreignNs);
      const want = expected(result, mode, obsNs, foreignNs);
      expect(diff(actual, want)).toEqual({ unexpected: [], missing: [] });
      // The proof is not vacuous: the mesh's edges are there.
      const meshEdges = result.infra.edges.filter(
        (e) => e.allowed && e.declared && e.from !== "internet",
      ).length;
      expect([...actual].filter((x) => x.endsWith(`:${INBOUND}/TCP`)).length).toBeGreaterThanOrEqual(
        meshEdges,
      );
    });

  it("open_the_same_mesh_edges_as_the_assertion_engines_network_layer", async () => {
    const result = await shopResult();
    const ns = result.infra.namespace;
    const actual = [...evaluate(synthesize(result), [ns])].filter(
      (c) => c.startsWith(`${ns}/`) && c.endsWith(`:${INBOUND}/TCP`),
    );
    const engine = networkEdges(result.infra)
      .filter((e) => e.from !== "internet")
      .map((e) => `${ns}/${e.from} -> ${ns}/${e.to}:${INBOUND}/TCP`);
    expect(actual.sort()).toEqual(engine.sort());
    expect(engine.length).toBeGreaterThan(5);
  });

  it("an_allow_rule_for_a_peer_that_never_calls_opens_no_edge", async () => {
    const result = await shopResult();
    const edges = result.infra.edges.map((e) =>
      e.from === "orders" && e.to === "payments" ? { ...e, declared: false } : e,
    );
    const undeclared = { ...result, infra: { ...result.infra, edges } };
    const before = evaluate(synthesize(result), ["shop", "elsewhere"]);
    const after = evaluate(synthesize(undeclared), ["shop", "elsewhere"]);
    expect(diff(after, before)).toEqual({
      unexpected: [],
      missing: [`shop/orders -> shop/payments:${INBOUND}/TCP`],
    });
  });

  it("removing_an_allow_rule_closes_exactly_that_edge", async () => {
    const result = await shopResult();
    const edges = result.infra.edges.map((e) =>
      e.from === "orders" && e.to === "payments" ? { ...e, allowed: false } : e,
    );
    const narrowed = { ...result, infra: { ...result.infra, edges } };
    const before = evaluate(synthesize(result), ["shop", "elsewhere"]);
    const after = evaluate(synthesize(narrowed), ["shop", "elsewhere"]);
    expect(diff(after, before)).toEqual({
      unexpected: [],
      missing: [`shop/orders -> shop/payments:${INBOUND}/TCP`],
    });
  });

  it("a_mesh_app_port_is_never_reachable_from_another_pod", async () => {
    const result = await shopResult();
    const actual = evaluate(synthesize(result), ["shop", "shop-observability", "elsewhere"]);
    const appPorts = new Set(
      result.infra.workloads.flatMap((w) =>
        w.kind === "service" ? [`shop/${w.name}:${w.appPort}/TCP`] : [],
      ),
    );
    expect([...actual].filter((x) => appPorts.has(x.split(" -> ")[1]!))).toEqual([]);
  });

  // A pod resolves a name of two labels through the cluster's search domains first: `redis.cache` is the
  // Service redis of namespace cache (as `redis.cache.svc.cluster.local`) when there is one, else a host
  // outside — and an ipBlock does not admit the cluster's pods (Cilium: "world" only).
  it.each<[string, string, string[]]>([
    ["a_short_cluster_name_reaches_its_namespace_and_outside", "redis.cache", ["cache/foreign", "external"]],
    ["a_fully_qualified_two_label_name_is_outside_only", "redis.cache.", ["external"]],
    ["a_longer_outside_name_is_outside_only", "redis.cache.example", ["external"]],
  ])("the_gateways_redis_named_%s", async (_, host, want) => {
    const raw = parse(readFileSync(join(ROOT, "examples/shop/mesh.yaml"), "utf8"));
    raw.gateway.rateLimitStore.redis.url = `redis://${host}:6379`;
    const actual = evaluate(synthesize(resultOf(raw)), ["shop", "cache", "elsewhere"]);
    const reached = [...actual].filter((c) => c.startsWith("shop/gateway -> ") && c.endsWith(":6379/TCP"));
    expect(reached.map((c) => c.split(" -> ")[1]!.replace(/:6379\/TCP$/, "")).sort()).toEqual(want);
  });

  it.each<[string, ChartOptions, string[]]>([
    ["the_default_reaches_only_kube_dns", {}, [KUBE_DNS.id]],
    ["operator_mode_too", { observability: "operator" }, [KUBE_DNS.id]],
    [
      "an_added_node_local_cache_is_reached_by_its_address",
      { dns: { cidrs: ["169.254.20.10/32"] } },
      [KUBE_DNS.id, "external"],
    ],
  ])("dns_egress_goes_to_the_cluster_dns_not_to_any_host_on_port_53_%s", async (_, opts, want) => {
    const objects = synthesize(await shopResult(), opts);
    const actual = evaluate(objects, ["shop", "shop-observability", "monitoring", "elsewhere"]);
    const dnsFromChart = [...actual].filter((c) => /^shop(-observability)?\//.test(c) && /:53\//.test(c));
    expect(new Set(dnsFromChart.map((c) => c.split(" -> ")[1]!.replace(/:53\/(UDP|TCP)$/, "")))).toEqual(
      new Set(want),
    );
    for (const policy of objects.filter((o) => /allow-dns$/.test(o.metadata.name)))
      expect(
        (policy.spec as { egress: { to?: unknown[] }[] }).egress.every((e) => (e.to ?? []).length > 0),
      ).toBe(true);
  });

  it.each<[string, ChartOptions["dns"], string]>([
    ["a_namespace_that_is_no_dns_label", { namespace: "Kube_System" }, "dns.namespace"],
    ["no_pod_labels", { podLabels: {} }, "dns.podLabels"],
    ["a_bad_label_value", { podLabels: { "k8s-app": "kube dns" } }, "dns.podLabels"],
    ["a_cidr_without_prefix", { cidrs: ["169.254.20.10"] }, "dns.cidrs"],
    ["a_prefix_too_long", { cidrs: ["10.0.0.0/33"] }, "dns.cidrs"],
  ])("a_bad_dns_option_is_refused_naming_the_field_%s", async (_, dns, field) => {
    const result = await shopResult();
    expect(() => synthesize(result, { dns })).toThrow(new RegExp(`^${field.replace(".", "\\.")}: `));
  });

  it("no_observability_means_no_scrape_and_no_trace_rules", async () => {
    const result = await shopResult();
    const objects = synthesize(result, { observability: "none" });
    expect(objects.filter((o) => o.metadata.namespace === "shop-observability")).toEqual([]);
    const actual = evaluate(objects, ["shop", "monitoring", "elsewhere"]);
    expect([...actual].filter((x) => /:(9901|15000|4318)\/TCP$/.test(x))).toEqual([]);
  });
});

describe("the NetworkPolicy evaluator", () => {
  const ns = (name: string) => ({ apiVersion: "v1", kind: "Namespace", metadata: { name, labels: {} } });
  const deploy = (namespace: string, name: string, labels: Record<string, string>, port: number) => ({
    apiVersion: "apps/v1",
    kind: "Deployment",
    metadata: { name, namespace },
    spec: {
      template: {
        metadata: { labels },
        spec: { containers: [{ name: "c", ports: [{ name: "web", containerPort: port }] }] },
      },
    },
  });
  const np = (namespace: string, name: string, spec: Record<string, unknown>) => ({
    apiVersion: "networking.k8s.io/v1",
    kind: "NetworkPolicy",
    metadata: { name, namespace },
    spec,
  });
  const base = [
    ns("a"),
    ns("b"),
    deploy("a", "x", { app: "x" }, 80),
    deploy("a", "y", { app: "y" }, 8080),
    deploy("b", "z", { app: "z" }, 80),
  ];
  const conns = (policies: unknown[]) =>
    [...allowedConnections(cluster([...base, ...policies] as never))].filter((c) => !c.includes("external:"));

  it("admits_everything_without_policies", () => {
    expect(conns([])).toContain("a/x -> b/z:80/TCP");
    expect(conns([])).toContain("external -> a/y:8080/TCP");
  });

  it("denies_everything_under_default_deny", () => {
    const deny = [
      np("a", "d", { podSelector: {}, policyTypes: ["Ingress", "Egress"] }),
      np("b", "d", { podSelector: {}, policyTypes: ["Ingress", "Egress"] }),
    ];
    expect(conns(deny)).toEqual([]);
  });

  it("needs_both_the_source_egress_and_the_destination_ingress", () => {
    const deny = np("a", "d", { podSelector: {}, policyTypes: ["Ingress", "Egress"] });
    const ingress = np("a", "i", {
      podSelector: { matchLabels: { app: "y" } },
      policyTypes: ["Ingress"],
      ingress: [{ from: [{ podSelector: { matchLabels: { app: "x" } } }], ports: [{ port: 8080 }] }],
    });
    const egress = np("a", "e", {
      podSelector: { matchLabels: { app: "x" } },
      policyTypes: ["Egress"],
      egress: [{ to: [{ podSelector: { matchLabels: { app: "y" } } }] }],
    });
    expect(conns([deny, ingress])).not.toContain("a/x -> a/y:8080/TCP");
    expect(conns([deny, egress])).not.toContain("a/x -> a/y:8080/TCP");
    expect(conns([deny, ingress, egress])).toContain("a/x -> a/y:8080/TCP");
    expect(conns([deny, ingress, egress]).filter((c) => c.startsWith("a/"))).toEqual(["a/x -> a/y:8080/TCP"]);
  });

  it("resolves_named_ports_on_the_destination_and_checks_protocols", () => {
    const deny = np("a", "d", { podSelector: {}, policyTypes: ["Ingress"] });
    const named = np("a", "n", { podSelector: {}, ingress: [{ ports: [{ port: "web" }] }] });
    const udp = np("a", "u", { podSelector: {}, ingress: [{ ports: [{ port: 80, protocol: "UDP" }] }] });
    expect(conns([deny, named])).toContain("b/z -> a/x:80/TCP");
    expect(conns([deny, named])).toContain("b/z -> a/y:8080/TCP");
    expect(conns([deny, udp]).filter((c) => c.includes("-> a/"))).toEqual([]);
  });

  it("ands_a_namespace_selector_with_its_pod_selector", () => {
    const only = np("a", "o", {
      podSelector: { matchLabels: { app: "x" } },
      ingress: [
        {
          from: [
            {
              namespaceSelector: { matchLabels: { "kubernetes.io/metadata.name": "b" } },
              podSelector: { matchLabels: { app: "nope" } },
            },
          ],
        },
      ],
    });
    expect(conns([only]).filter((c) => c.endsWith("a/x:80/TCP"))).toEqual([]);
  });

  it.each([
    [{ matchExpressions: [{ key: "a", operator: "In", values: ["1"] }] }, { a: "1" }, true],
    [{ matchExpressions: [{ key: "a", operator: "In", values: ["1"] }] }, {}, false],
    [{ matchExpressions: [{ key: "a", operator: "NotIn", values: ["1"] }] }, {}, true],
    [{ matchExpressions: [{ key: "a", operator: "Exists" }] }, { a: "" }, true],
    [{ matchExpressions: [{ key: "a", operator: "DoesNotExist" }] }, { a: "x" }, false],
    [{ matchLabels: { a: "1" }, matchExpressions: [{ key: "b", operator: "Exists" }] }, { a: "1" }, false],
    [{}, { any: "thing" }, true],
  ])("matches_label_selectors_%#", (sel, labels, want) => {
    expect(selectorMatches(sel, labels as Record<string, string>)).toBe(want);
  });
});
