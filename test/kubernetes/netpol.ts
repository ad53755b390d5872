/**
 * A small NetworkPolicy evaluator (the networking.k8s.io/v1 semantics) over a set of manifests: pods
 * (from Deployment templates), namespaces and policies in, the set of allowed connections out.
 *
 * - A pod is isolated for ingress (egress) when some policy of its namespace selects it and lists Ingress
 *   (Egress) in policyTypes; an isolated pod admits a connection only if some rule of those policies
 *   matches it (peer and port). A connection needs the source's egress and the destination's ingress.
 * - Peers: podSelector (the policy's namespace), namespaceSelector (+ podSelector), ipBlock. Namespaces
 *   carry `kubernetes.io/metadata.name`. ipBlock is modelled as matching addresses outside the cluster's
 *   pods only (the documented intent; CNIs differ for pod IPs).
 * - Ports: number, named (resolved on the destination pod's container ports), range (endPort), protocol
 *   (default TCP); no ports = every port.
 *
 * Endpoints are the manifests' pods (`<ns>/<deployment>`), "foreign" pods the caller adds (pods in a
 * namespace that the chart does not deploy, with given labels and ports), and `external` (outside the
 * cluster).
 */
import type { KubeObject } from "../../components/kubernetes/index.ts";

type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

export interface PodPort {
  name?: string;
  port: number;
  protocol: string;
}

export interface Pod {
  /** `<namespace>/<name>`. */
  id: string;
  namespace: string;
  labels: Record<string, string>;
  ports: PodPort[];
}

export interface Cluster {
  pods: Pod[];
  namespaces: Map<string, Record<string, string>>;
  policies: Json[];
}

/** Pods, namespaces and policies of a set of manifests (plus foreign pods and namespaces). */
export function cluster(objects: readonly (KubeObject | Json)[], foreign: Pod[] = []): Cluster {
  const namespaces = new Map<string, Record<string, string>>();
  const pods: Pod[] = [];
  const policies: Json[] = [];
  for (const o of objects as Json[]) {
    if (o.kind === "Namespace")
      namespaces.set(o.metadata.name, {
        ...o.metadata.labels,
        "kubernetes.io/metadata.name": o.metadata.name,
      });
    if (o.kind === "NetworkPolicy") policies.push(o);
    if (o.kind === "Deployment") {
      const spec = o.spec.template.spec;
      const containers = [...(spec.initContainers ?? []), ...(spec.containers ?? [])];
      pods.push({
        id: `${o.metadata.namespace}/${o.metadata.name}`,
        namespace: o.metadata.namespace,
        labels: o.spec.template.metadata?.labels ?? {},
        ports: containers.flatMap((c: Json) =>
          (c.ports ?? []).map((p: Json) => ({
            ...(p.name ? { name: p.name } : {}),
            port: p.containerPort,
            protocol: p.protocol ?? "TCP",
          })),
        ),
      });
    }
  }
  for (const p of foreign) {
    pods.push(p);
    if (!namespaces.has(p.namespace))
      namespaces.set(p.namespace, { "kubernetes.io/metadata.name": p.namespace });
  }
  return { pods, namespaces, policies };
}

export function selectorMatches(sel: Json | undefined, labels: Record<string, string>): boolean {
  if (!sel) return true;
  for (const [k, v] of Object.entries((sel.matchLabels ?? {}) as Record<string, string>))
    if (labels[k] !== v) return false;
  for (const e of (sel.matchExpressions ?? []) as Json[]) {
    const has = Object.hasOwn(labels, e.key);
    const value = labels[e.key];
    switch (e.operator) {
      case "In":
        if (!has || !e.values.includes(value)) return false;
        break;
      case "NotIn":
        if (has && e.values.includes(value)) return false;
        break;
      case "Exists":
        if (!has) return false;
        break;
      case "DoesNotExist":
        if (has) return false;
        break;
      default:
        throw new Error(`unknown selector operator ${e.operator}`);
    }
  }
  return true;
}

type Endpoint = Pod | "external";

function peerMatches(c: Cluster, peer: Json, policyNs: string, ep: Endpoint): boolean {
  if (peer.ipBlock) return ep === "external";
  if (ep === "external") return false;
  if (peer.namespaceSelector) {
    const nsLabels = c.namespaces.get(ep.namespace) ?? { "kubernetes.io/metadata.name": ep.namespace };
    return selectorMatches(peer.namespaceSelector, nsLabels) && selectorMatches(peer.podSelector, ep.labels);
  }
  return ep.namespace === policyNs && selectorMatches(peer.podSelector, ep.labels);
}

function portMatches(rulePorts: Json[] | undefined, port: number, protocol: string, dst: Endpoint): boolean {
  if (!rulePorts || rulePorts.length === 0) return true;
  return rulePorts.some((p) => {
    if ((p.protocol ?? "TCP") !== protocol) return false;
    if (p.port === undefined) return true;
    if (typeof p.port === "string") {
      if (dst === "external") return false;
      return dst.ports.some((q) => q.name === p.port && q.port === port && q.protocol === protocol);
    }
    return p.endPort !== undefined ? port >= p.port && port <= p.endPort : port === p.port;
  });
}

function types(p: Json): string[] {
  return p.spec.policyTypes ?? (p.spec.egress ? ["Ingress", "Egress"] : ["Ingress"]);
}

function selecting(c: Cluster, pod: Pod, type: "Ingress" | "Egress"): Json[] {
  return c.policies.filter(
    (p) =>
      p.metadata.namespace === pod.namespace &&
      types(p).includes(type) &&
      selectorMatches(p.spec.podSelector, pod.labels),
  );
}

/** Does `dst` admit a connection from `src` on port/protocol? */
export function ingressAllows(c: Cluster, src: Endpoint, dst: Pod, port: number, protocol: string): boolean {
  const ps = selecting(c, dst, "Ingress");
  if (ps.length === 0) return true;
  return ps.some((p) =>
    ((p.spec.ingress ?? []) as Json[]).some(
      (rule) =>
        (!rule.from ||
          rule.from.length === 0 ||
          rule.from.some((peer: Json) => peerMatches(c, peer, p.metadata.namespace, src))) &&
        portMatches(rule.ports, port, protocol, dst),
    ),
  );
}

/** Does `src` may open a connection to `dst` on port/protocol? */
export function egressAllows(c: Cluster, src: Pod, dst: Endpoint, port: number, protocol: string): boolean {
  const ps = selecting(c, src, "Egress");
  if (ps.length === 0) return true;
  return ps.some((p) =>
    ((p.spec.egress ?? []) as Json[]).some(
      (rule) =>
        (!rule.to ||
          rule.to.length === 0 ||
          rule.to.some((peer: Json) => peerMatches(c, peer, p.metadata.namespace, dst))) &&
        portMatches(rule.ports, port, protocol, dst),
    ),
  );
}

/** Every port any policy names, plus DNS: the ports probed towards external addresses. */
export function probePorts(c: Cluster): PodPort[] {
  const seen = new Map<string, PodPort>();
  const add = (port: number, protocol: string) => seen.set(`${port}/${protocol}`, { port, protocol });
  add(53, "UDP");
  add(53, "TCP");
  for (const p of c.policies)
    for (const rule of [...(p.spec.ingress ?? []), ...(p.spec.egress ?? [])] as Json[])
      for (const q of (rule.ports ?? []) as Json[])
        if (typeof q.port === "number") add(q.port, q.protocol ?? "TCP");
  for (const pod of c.pods) for (const q of pod.ports) add(q.port, q.protocol);
  return [...seen.values()];
}

/**
 * Every allowed connection, as `src -> dst:port/protocol` strings: pod to pod (on the destination's
 * declared ports), external to pod, and pod to external (on the probe ports).
 */
export function allowedConnections(c: Cluster): Set<string> {
  const out = new Set<string>();
  for (const dst of c.pods)
    for (const { port, protocol } of dst.ports) {
      for (const src of c.pods)
        if (egressAllows(c, src, dst, port, protocol) && ingressAllows(c, src, dst, port, protocol))
          out.add(`${src.id} -> ${dst.id}:${port}/${protocol}`);
      if (ingressAllows(c, "external", dst, port, protocol))
        out.add(`external -> ${dst.id}:${port}/${protocol}`);
    }
  const probes = probePorts(c);
  for (const src of c.pods)
    for (const { port, protocol } of probes)
      if (egressAllows(c, src, "external", port, protocol))
        out.add(`${src.id} -> external:${port}/${protocol}`);
  return out;
}
