/**
 * NetworkPolicies derived from the same authorization rules the sidecars enforce, so L4 backs up the mesh:
 *
 * - default deny (ingress and egress) for every pod of the mesh namespace, and of the bundled backends';
 * - DNS egress (port 53, UDP and TCP) to the cluster's DNS servers only (ChartOptions.dns) for every pod;
 * - per mesh workload: ingress on the sidecar's inbound port from exactly the workloads the IR's
 *   `allowed` edges name, egress to exactly the workloads it may call; the gateway's listeners open to
 *   everyone; the proxies' admin ports open to Prometheus; egress to the trace collector, and the
 *   gateway's egress to what its config names outside the mesh (JWKS and OIDC issuers, Redis);
 * - the bundled backends: Prometheus → admin ports (and the API server, for pod discovery), proxies →
 *   collector → trace store, Grafana → Prometheus and the trace store.
 *
 * Pure. test/kubernetes/network.test.ts evaluates these policies and proves the pod-to-pod edges they
 * allow are exactly the mesh's allowed edges plus those of the observability pipeline.
 */
import type {
  NetworkPolicyEgressRule,
  NetworkPolicyPeer,
  NetworkPolicyPort,
} from "kubernetes-types/networking/v1.js";
import type { RuntimeConfig } from "../../runtime/contract/index.ts";
import { BACKEND_PORTS, LABELS, backendSelector, meta, type KubeObject, type Resolved } from "./model.ts";

/** The label every namespace carries (Kubernetes ≥ 1.21 sets it): how policies select a namespace. */
const NAMESPACE_NAME = "kubernetes.io/metadata.name";
const GATEWAY = "gateway";

const tcp = (port: number): NetworkPolicyPort => ({ protocol: "TCP", port });
const inNamespace = (ns: string): NetworkPolicyPeer => ({
  namespaceSelector: { matchLabels: { [NAMESPACE_NAME]: ns } },
});

function policy(
  r: Resolved,
  name: string,
  namespace: string,
  podSelector: Record<string, unknown>,
  rules: { ingress?: unknown[]; egress?: unknown[] },
  types: ("Ingress" | "Egress")[] = ["Ingress", "Egress"],
): KubeObject {
  return {
    apiVersion: "networking.k8s.io/v1",
    kind: "NetworkPolicy",
    metadata: meta(r, name, namespace, "network-policy", namespace === r.ns ? { [LABELS.mesh]: r.mesh } : {}),
    spec: {
      podSelector,
      policyTypes: types,
      ...(rules.ingress && rules.ingress.length > 0 ? { ingress: rules.ingress } : {}),
      ...(rules.egress && rules.egress.length > 0 ? { egress: rules.egress } : {}),
    },
  };
}

/** Pods of some mesh workloads (in the mesh namespace). */
function workloadsPeer(r: Resolved, workloads: readonly string[]): NetworkPolicyPeer {
  return {
    podSelector: {
      matchLabels: { [LABELS.mesh]: r.mesh },
      matchExpressions: [{ key: LABELS.workload, operator: "In", values: [...workloads] }],
    },
  };
}

/** A bundled backend's pods, seen from another namespace. */
function backendPeer(r: Resolved, app: string): NetworkPolicyPeer {
  return { ...inNamespace(r.obsNs), podSelector: { matchLabels: backendSelector(r, app) } };
}

/** Who scrapes the proxies' admin ports: the bundled Prometheus, or any pod of the operator's namespace. */
function prometheusPeer(r: Resolved): NetworkPolicyPeer {
  return r.observability === "bundled" ? backendPeer(r, "prometheus") : inNamespace(r.obsNs);
}

const DEFAULT_PORTS: Record<string, number> = { "https:": 443, "http:": 80, "redis:": 6379, "rediss:": 6379 };

/** A host and TCP port outside the mesh that a proxy connects to. */
export interface Destination {
  readonly host: string;
  readonly port: number;
}

/** The destination of a URL (its port, or the scheme's); null when it cannot be parsed (translate validated it). */
function urlDestination(url: string): Destination | null {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    return null;
  }
  const port = u.port !== "" ? Number(u.port) : DEFAULT_PORTS[u.protocol];
  if (port === undefined) return null;
  return { host: u.hostname.replace(/^\[|\]$/g, "").toLowerCase(), port };
}

/**
 * What a NetworkPolicy can name for a host: a cluster Service name (`x.ns.svc[.cluster.local]`, or a bare
 * name in the mesh namespace `namespace`) → that namespace's pods; an IP literal → that address; a CIDR
 * range (an external's `10.20.0.0/16`) → that range; any other host → any address outside the cluster's
 * pods (0.0.0.0/0, ::/0) — a NetworkPolicy cannot name a DNS name; the sidecar checks the name of every
 * tunnel it relays. A name of two labels (`redis.cache`) is both: a pod's resolver tries the cluster's
 * search domains first, so it is the Service `redis` of namespace `cache` when there is one
 * (`redis.cache.svc.cluster.local`), else a host outside. policies/network.ts reads the same answer.
 */
export function destinationPeer(
  host: string,
  namespace: string,
): { readonly namespace: string | null; readonly cidrs: readonly string[] } {
  const anywhere = ["0.0.0.0/0", "::/0"];
  if (host.includes("/")) return { namespace: null, cidrs: [host] }; // a CIDR range (spec external host)
  const svc = /^[a-z0-9-]+\.([a-z0-9-]+)\.svc(\.cluster\.local)?\.?$/.exec(host);
  if (svc) return { namespace: svc[1]!, cidrs: [] };
  if (/^[a-z0-9-]+$/.test(host)) return { namespace, cidrs: [] };
  if (/^\d+\.\d+\.\d+\.\d+$/.test(host)) return { namespace: null, cidrs: [`${host}/32`] };
  if (host.includes(":")) return { namespace: null, cidrs: [`${host}/128`] };
  // (Not with a final dot: a fully qualified name skips the search domains.)
  const twoLabels = /^[a-z0-9-]+\.([a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)$/.exec(host);
  return { namespace: twoLabels ? twoLabels[1]! : null, cidrs: anywhere };
}

/** The egress a destination needs (destinationPeer), on its port. */
export function destinationEgress(r: Resolved, { host, port }: Destination): NetworkPolicyEgressRule {
  const peer = destinationPeer(host, r.ns);
  const to: NetworkPolicyPeer[] = [
    ...(peer.namespace !== null ? [inNamespace(peer.namespace)] : []),
    ...peer.cidrs.map((cidr) => ({ ipBlock: { cidr } })),
  ];
  return { to, ports: [tcp(port)] };
}

/**
 * The destinations outside the mesh a proxy's config makes it reach: the URLs it calls (trace collector;
 * the gateway's JWKS URIs, OIDC issuers, Redis), a sidecar's external destinations (spec `external`) and
 * the external backends of the gateway's routes.
 */
export function externalDestinations(r: Resolved, config: RuntimeConfig): Destination[] {
  const urls = externalUrls(r, config).flatMap((u) => urlDestination(u) ?? []);
  if (config.kind === "gateway")
    // …and the external backends its routes forward to (clusters with an address).
    return [
      ...urls,
      ...config.clusters.flatMap((c) => (c.address ? [{ host: c.address, port: c.port }] : [])),
    ];
  return [...urls, ...config.outbound.external.map((x) => ({ host: x.host, port: x.port }))];
}

/** The URLs outside the mesh a proxy's config makes it call. */
function externalUrls(r: Resolved, config: RuntimeConfig): string[] {
  const urls: string[] = [];
  const t = config.telemetry.tracing;
  if (t.enabled && t.otlpEndpoint !== null && r.traceStore === null) urls.push(t.otlpEndpoint);
  if (config.kind === "gateway") {
    for (const j of config.auth.jwt) if (j.jwksUri !== null) urls.push(j.jwksUri);
    for (const o of config.auth.oidc) urls.push(o.issuer);
    if (config.rateLimitStore.kind === "redis") urls.push(config.rateLimitStore.url);
    if (config.cacheStore.kind === "redis") urls.push(config.cacheStore.url);
  }
  return urls;
}

function dedupe<T>(items: readonly T[]): T[] {
  const seen = new Set<string>();
  return items.filter((i) => {
    const key = JSON.stringify(i);
    if (seen.has(key)) return false;
    seen.add(key);
    return true;
  });
}

/** The mesh namespace's policies. */
export function meshPolicies(r: Resolved): KubeObject[] {
  const out: KubeObject[] = [
    policy(r, "meshgate-default-deny", r.ns, {}, {}),
    policy(r, "meshgate-allow-dns", r.ns, {}, { egress: [dnsEgress(r)] }, ["Egress"]),
  ];
  // An edge opens at L4 when it is both declared (the caller's `calls`, or a gateway route) and allowed by
  // the callee: either sidecar would refuse the others. policies' networkEdges() is the same relation.
  const edges = r.infra.edges.filter((e) => e.allowed && e.declared && e.from !== "internet");
  const configs = new Map<string, RuntimeConfig>(r.result.runtime.sidecars.map((s) => [s.name, s]));
  if (r.result.runtime.gateway) configs.set(GATEWAY, r.result.runtime.gateway);
  const scraped = r.observability !== "none" && r.infra.observability.metrics.enabled;
  const traced = r.traceStore !== null && r.infra.observability.tracing.enabled;
  for (const w of r.infra.workloads) {
    const ingress: unknown[] = [];
    const egress: unknown[] = [];
    if (w.kind === "gateway") ingress.push({ ports: w.listeners.map((l) => tcp(l.port)) });
    const callers = [...new Set(edges.filter((e) => e.to === w.name).map((e) => e.from))].sort();
    if (w.kind === "service" && callers.length > 0)
      ingress.push({ from: [workloadsPeer(r, callers)], ports: [tcp(w.sidecar.inbound)] });
    if (scraped)
      ingress.push({
        from: [prometheusPeer(r)],
        ports: [tcp(w.kind === "gateway" ? w.adminPort : w.sidecar.admin)],
      });
    // Callees by the port they are reached on (every sidecar's inbound port, today one).
    const byPort = new Map<number, string[]>();
    for (const e of edges.filter((x) => x.from === w.name))
      byPort.set(e.port, [...(byPort.get(e.port) ?? []), e.to]);
    for (const [port, callees] of [...byPort].sort(([a], [b]) => a - b))
      egress.push({ to: [workloadsPeer(r, [...new Set(callees)].sort())], ports: [tcp(port)] });
    if (traced) egress.push({ to: [backendPeer(r, "otel-collector")], ports: [tcp(BACKEND_PORTS.otlpHttp)] });
    const config = configs.get(w.name);
    if (config)
      egress.push(
        ...dedupe(externalDestinations(r, config).map((d) => destinationEgress(r, d))).sort((a, b) =>
          JSON.stringify(a) < JSON.stringify(b) ? -1 : 1,
        ),
      );
    out.push(
      policy(
        r,
        `meshgate-${w.name}`,
        r.ns,
        { matchLabels: { [LABELS.mesh]: r.mesh, [LABELS.workload]: w.name } },
        { ingress, egress },
      ),
    );
  }
  // Services the proxies use in the mesh namespace itself (a Redis beside the gateway): the default deny
  // holds for those pods too, so admit exactly the proxies that need them, on those ports — on pods that
  // are not mesh workloads (a workload's app is only reachable through its sidecar).
  const local = new Map<number, Set<string>>();
  for (const [workload, config] of [...configs].sort(([a], [b]) => (a < b ? -1 : 1)))
    for (const d of externalDestinations(r, config)) {
      const rule = destinationEgress(r, d);
      if (!rule.to?.some((p) => p.namespaceSelector?.matchLabels?.[NAMESPACE_NAME] === r.ns)) continue;
      for (const p of rule.ports ?? []) {
        const port = p.port as number;
        local.set(port, (local.get(port) ?? new Set<string>()).add(workload));
      }
    }
  if (local.size > 0)
    out.push(
      policy(
        r,
        "meshgate-proxy-dependencies",
        r.ns,
        { matchExpressions: [{ key: LABELS.mesh, operator: "DoesNotExist" }] },
        {
          ingress: [...local]
            .sort(([a], [b]) => a - b)
            .map(([port, workloads]) => ({
              from: [workloadsPeer(r, [...workloads].sort())],
              ports: [tcp(port)],
            })),
        },
        ["Ingress"],
      ),
    );
  return out;
}

/**
 * DNS (port 53, UDP and TCP) to the cluster's DNS servers only: not to any address, where a pod (an app
 * that bypasses its sidecar) could reach any host that listens on port 53 — a tunnel out of the mesh.
 */
function dnsEgress(r: Resolved): NetworkPolicyEgressRule {
  return {
    to: [
      { ...inNamespace(r.dns.namespace), podSelector: { matchLabels: { ...r.dns.podLabels } } },
      ...r.dns.cidrs.map((cidr) => ({ ipBlock: { cidr } })),
    ],
    ports: [
      { protocol: "UDP", port: 53 },
      { protocol: "TCP", port: 53 },
    ],
  };
}

/** The bundled backends' namespace: default deny, DNS, and exactly the pipeline's connections. */
export function observabilityPolicies(r: Resolved, grafana: boolean): KubeObject[] {
  const ns = r.obsNs;
  const sel = (app: string) => ({ matchLabels: backendSelector(r, app) });
  const local = (app: string): NetworkPolicyPeer => ({ podSelector: sel(app) });
  const meshPods: NetworkPolicyPeer = {
    ...inNamespace(r.ns),
    podSelector: { matchLabels: { [LABELS.mesh]: r.mesh } },
  };
  const adminPorts = [
    ...new Set(r.infra.workloads.map((w) => (w.kind === "gateway" ? w.adminPort : w.sidecar.admin))),
  ].sort((a, b) => a - b);
  const store = r.traceStore;
  const storeQueryPort = store === "jaeger" ? BACKEND_PORTS.jaegerQuery : BACKEND_PORTS.tempo;
  const out: KubeObject[] = [
    policy(r, "meshgate-observability-default-deny", ns, {}, {}),
    policy(r, "meshgate-observability-allow-dns", ns, {}, { egress: [dnsEgress(r)] }, ["Egress"]),
    policy(r, "prometheus", ns, sel("prometheus"), {
      ingress: grafana ? [{ from: [local("grafana")], ports: [tcp(BACKEND_PORTS.prometheus)] }] : [],
      egress: [
        { to: [meshPods], ports: adminPorts.map(tcp) },
        // The Kubernetes API server (pod discovery): its address differs per cluster.
        { ports: [tcp(443), tcp(6443)] },
      ],
    }),
  ];
  if (grafana)
    out.push(
      policy(r, "grafana", ns, sel("grafana"), {
        // No ingress from other pods: open it with `kubectl port-forward`, or add a policy for an Ingress.
        egress: [
          { to: [local("prometheus")], ports: [tcp(BACKEND_PORTS.prometheus)] },
          ...(store ? [{ to: [local(store)], ports: [tcp(storeQueryPort)] }] : []),
        ],
      }),
    );
  if (store) {
    out.push(
      policy(r, "otel-collector", ns, sel("otel-collector"), {
        ingress: [{ from: [meshPods], ports: [tcp(BACKEND_PORTS.otlpHttp)] }],
        egress: [{ to: [local(store)], ports: [tcp(BACKEND_PORTS.otlpGrpc)] }],
      }),
      policy(r, store, ns, sel(store), {
        ingress: [
          { from: [local("otel-collector")], ports: [tcp(BACKEND_PORTS.otlpGrpc)] },
          ...(grafana ? [{ from: [local("grafana")], ports: [tcp(storeQueryPort)] }] : []),
        ],
      }),
    );
  }
  return out;
}
