/**
 * The L4 layer: which workload may open a TCP connection to which port of which other workload — what the
 * Kubernetes NetworkPolicies of a mesh open. Default deny; open are
 *  - ingress from anywhere (`internet`) to the gateway's listener ports;
 *  - every mesh edge that is both declared (the caller's `calls`, or a gateway route to the service) and
 *    allowed (an allow rule of the callee names the caller), to the callee's sidecar inbound port.
 * A declared call the callee denies, or an allow rule for a peer that never calls, gets no connection:
 * the sidecars would refuse it anyway (the caller's outbound side refuses undeclared destinations, the
 * callee's inbound side refuses peers it does not allow), so the network layer opens nothing nobody needs.
 *
 * Egress to destinations outside the mesh (spec `external`) opens for the edges a sidecar relays (declared
 * and allowed), on the destination's port, to what a NetworkPolicy can name (components/kubernetes
 * network.ts destinationEgress): an IP address → that address (/32, /128); a cluster Service name
 * (`x.ns.svc…`) → the pods of that namespace, a bare name → of the mesh's; any other DNS name → every
 * address (0.0.0.0/0, ::/0) — a NetworkPolicy cannot name a DNS name, so only the sidecar checks the name.
 *
 * Traffic assertions evaluate this layer with the same function the Kubernetes chart renders from, so a
 * verified request is one the NetworkPolicies let through.
 */
import { destinationPeer } from "../components/kubernetes/network.ts";
import type { InfraIR } from "../components/translate/ir.ts";
import { cmp } from "./order.ts";

/** One open L4 edge: `from` may connect to `ports` of `to`. */
export interface NetworkEdge {
  from: string;
  to: string;
  ports: number[];
  /** What opens it: `gateway.listeners`, or the callee's allow rules (`services.orders.allow[0]`). */
  source: string;
}

/** The open L4 edges of a mesh (everything else is denied), sorted by from, to. */
export function networkEdges(infra: InfraIR): NetworkEdge[] {
  const out: NetworkEdge[] = [];
  const gateway = infra.workloads.find((w) => w.kind === "gateway");
  if (gateway && gateway.kind === "gateway") {
    const ports = [...new Set(gateway.listeners.map((l) => l.port))].sort((a, b) => a - b);
    out.push({ from: "internet", to: gateway.name, ports, source: "gateway.listeners" });
  }
  for (const e of infra.edges) {
    if (e.from === "internet" || !e.declared || !e.allowed) continue;
    out.push({ from: e.from, to: e.to, ports: [e.port], source: e.allowedBy.join(", ") });
  }
  return out.sort((a, b) => cmp(a.from, b.from) || cmp(a.to, b.to));
}

/** Looks an edge up: the open edge from → to, or undefined (denied). */
export function networkEdge(
  edges: readonly NetworkEdge[],
  from: string,
  to: string,
): NetworkEdge | undefined {
  return edges.find((e) => e.from === from && e.to === to);
}

/** One open L4 egress edge to a destination outside the mesh. */
export interface EgressNetworkEdge {
  from: string;
  /** The external destination's name. */
  to: string;
  host: string;
  port: number;
  /** What the NetworkPolicy admits: CIDRs (`10.20.0.7/32`), or `namespace <ns>` for cluster Services. */
  peers: string[];
  /** The destination's allow rules that open it (`external.card-processor.allow[0]`). */
  source: string;
}

/** The peers the chart's NetworkPolicy names for a host (components/kubernetes destinationPeer), as text. */
export function egressPeers(host: string, namespace: string): string[] {
  const peer = destinationPeer(host, namespace);
  return [...(peer.namespace !== null ? [`namespace ${peer.namespace}`] : []), ...peer.cidrs];
}

/** The open L4 egress edges of a mesh: the relayed ones (declared and allowed), sorted by from, to. */
export function egressEdges(infra: InfraIR): EgressNetworkEdge[] {
  return infra.egress
    .filter((e) => e.declared && e.allowed)
    .map((e) => ({
      from: e.from,
      to: e.external,
      host: e.host,
      port: e.port,
      peers: egressPeers(e.host, infra.namespace),
      source: e.allowedBy.join(", "),
    }))
    .sort((a, b) => cmp(a.from, b.from) || cmp(a.to, b.to));
}
