/**
 * The topology graph of one translated spec, pure and deterministic: `internet`, the gateway and the
 * services as nodes placed by a layered layout (longest path from `internet`, nodes of a layer ordered by
 * the mean position of their callers, then by name), and the InfraIR's edges — allowed (the callee's
 * rules admit the caller), denied (a declared call the callee's rules refuse), or allowed but never
 * declared — each with where its live numbers are read from the proxies' metrics; and the destinations
 * outside the mesh (spec `external`) that some service calls or may reach, with the InfraIR's egress
 * edges (the caller's sidecar's requests and tunnels).
 */
import type { InfraIR } from "../../../components/translate/ir.ts";
import { sumOf, type Match, type Sample, type StatsSource } from "./metrics.ts";

export const INTERNET = "internet";
export const GATEWAY = "gateway";

export interface TopologyNode {
  readonly id: string;
  readonly kind: "internet" | "gateway" | "service" | "external";
  /** The workload's SPIFFE ID (null for `internet` and external destinations). */
  readonly identity: string | null;
  /** An external destination's `host:port` (null for the others). */
  readonly address: string | null;
  /**
   * An external destination's TLS: the app's own (`passthrough`; plain HTTP from the gateway), opened by
   * the callers' proxies — sidecars, or the gateway for a route to it — (`tls`), or opened by them
   * presenting a client certificate (`mtls`); null for the others.
   */
  readonly transport: "passthrough" | "tls" | "mtls" | null;
  readonly layer: number;
  /** Centre of the node in the page's SVG coordinates. */
  readonly x: number;
  readonly y: number;
}

export type EdgeStatus = "allowed" | "denied" | "unused";

export interface TopologyEdge {
  /** `from->to`. */
  readonly id: string;
  readonly from: string;
  readonly to: string;
  /** allowed: declared and admitted; denied: declared, refused by the callee; unused: admitted, never declared. */
  readonly status: EdgeStatus;
  /** The spec locations that admit the edge (the callee's allow rules). */
  readonly allowedBy: readonly string[];
  /** Where the live numbers come from, in words (`orders sidecar, outbound to payments`). */
  readonly source: string;
  /** To a destination outside the mesh (the caller's sidecar forwards plain HTTP to it and relays tunnels). */
  readonly egress: boolean;
}

export interface TopologyGraph {
  readonly name: string;
  readonly namespace: string;
  readonly trustDomain: string;
  readonly mtls: "strict" | "permissive";
  readonly width: number;
  readonly height: number;
  readonly nodes: readonly TopologyNode[];
  readonly edges: readonly TopologyEdge[];
}

const COLUMN = 270;
const ROW = 86;
const MARGIN_X = 80;
const MARGIN_Y = 50;

/** The graph of an InfraIR (its workloads, identities and edges). */
export function buildTopology(infra: InfraIR): TopologyGraph {
  const identities = new Map(infra.identities.map((i) => [i.name, i.spiffeId]));
  const hasGateway = infra.workloads.some((w) => w.kind === "gateway");
  const services = infra.workloads
    .filter((w) => w.kind === "service")
    .map((w) => w.name)
    .sort();
  const egress = infra.egress.filter((e) => e.allowed || e.declared);
  const externals = new Map(
    infra.externals
      .filter((x) => egress.some((e) => e.external === x.name))
      .map((x) => [x.name, x.host.includes(":") ? `[${x.host}]:${x.port}` : `${x.host}:${x.port}`]),
  );
  const transports = new Map(
    infra.externals.map(
      (x) =>
        [
          x.name,
          x.tls === "passthrough" ? "passthrough" : x.clientCertificate !== null ? "mtls" : "tls",
        ] as const,
    ),
  );
  const ids = [INTERNET, ...(hasGateway ? [GATEWAY] : []), ...services, ...externals.keys()];
  const known = new Set(ids);
  const status = (e: { allowed: boolean; declared: boolean }) =>
    (e.allowed ? (e.declared ? "allowed" : "unused") : "denied") as EdgeStatus;
  const edges = [
    ...infra.edges
      .filter((e) => known.has(e.from) && known.has(e.to) && (e.allowed || e.declared))
      .map((e) => ({
        id: `${e.from}->${e.to}`,
        from: e.from,
        to: e.to,
        status: status(e),
        allowedBy: [...e.allowedBy],
        source: statsSourceText(e.from, e.to, e.allowed),
        egress: false,
      })),
    ...egress
      .filter((e) => known.has(e.from))
      .map((e) => ({
        id: `${e.from}->${e.external}`,
        from: e.from,
        to: e.external,
        status: status(e),
        allowedBy: [...e.allowedBy],
        source: `${e.from} sidecar: requests and tunnels to ${e.external} (${externals.get(e.external)})`,
        egress: true,
      })),
  ].sort((a, b) => cmp(a.id, b.id));

  const layer = layers(ids, edges, hasGateway);
  const byLayer = new Map<number, string[]>();
  for (const id of ids) {
    const l = layer.get(id)!;
    byLayer.set(l, [...(byLayer.get(l) ?? []), id]);
  }
  const maxLayer = Math.max(...byLayer.keys());
  const row = new Map<string, number>();
  for (let l = 0; l <= maxLayer; l++) {
    const members = byLayer.get(l) ?? [];
    const centre = (id: string) => {
      const rows = edges
        .filter((e) => e.to === id && row.has(e.from) && layer.get(e.from)! < l)
        .map((e) => row.get(e.from)!);
      return rows.length ? rows.reduce((a, b) => a + b, 0) / rows.length : Infinity;
    };
    const ordered = members
      .map((id) => ({ id, c: centre(id) }))
      .sort((a, b) => (a.c !== b.c ? (a.c < b.c ? -1 : 1) : cmp(a.id, b.id)));
    ordered.forEach((m, i) => row.set(m.id, i - (ordered.length - 1) / 2));
  }
  const tallest = Math.max(...[...byLayer.values()].map((m) => m.length));
  const height = MARGIN_Y * 2 + (tallest - 1) * ROW;
  const nodes: TopologyNode[] = ids.map((id) => ({
    id,
    kind: externals.has(id)
      ? "external"
      : id === INTERNET
        ? "internet"
        : id === GATEWAY && hasGateway
          ? "gateway"
          : "service",
    identity: id === INTERNET || externals.has(id) ? null : (identities.get(id) ?? null),
    address: externals.get(id) ?? null,
    transport: externals.has(id) ? (transports.get(id) ?? null) : null,
    layer: layer.get(id)!,
    x: MARGIN_X + layer.get(id)! * COLUMN,
    y: height / 2 + row.get(id)! * ROW,
  }));
  return {
    name: infra.name,
    namespace: infra.namespace,
    trustDomain: infra.trustDomain,
    mtls: infra.mtls,
    width: MARGIN_X * 2 + maxLayer * COLUMN,
    height,
    nodes,
    edges,
  };
}

const cmp = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);

/**
 * Longest-path layers from `internet` (layer 0; the gateway 1). Edges that close a cycle (back edges of a
 * depth-first walk from `internet`, then from the other nodes in name order) are left out, so a call
 * cycle is drawn as one edge going back. A node nothing reaches sits in the services' first layer.
 */
function layers(
  ids: readonly string[],
  edges: readonly { from: string; to: string }[],
  hasGateway: boolean,
): Map<string, number> {
  const out = new Map<string, string[]>(ids.map((id) => [id, []]));
  for (const e of edges) out.get(e.from)!.push(e.to);
  const state = new Map<string, 1 | 2>(); // 1 on the walk's stack, 2 done
  const forward: { from: string; to: string }[] = [];
  const walk = (id: string) => {
    state.set(id, 1);
    for (const to of out.get(id)!) {
      const s = state.get(to);
      if (s === 1) continue; // a back edge: it closes a cycle
      forward.push({ from: id, to });
      if (s === undefined) walk(to);
    }
    state.set(id, 2);
  };
  for (const id of ids) if (!state.has(id)) walk(id);
  const first = hasGateway ? 2 : 1;
  const layer = new Map<string, number>(ids.map((id) => [id, id === INTERNET ? 0 : first]));
  if (hasGateway) layer.set(GATEWAY, 1);
  for (let round = 0, changed = true; changed && round <= ids.length; round++) {
    changed = false;
    for (const e of forward) {
      if (e.to === INTERNET || e.to === GATEWAY) continue;
      if (layer.get(e.from)! + 1 > layer.get(e.to)!) {
        layer.set(e.to, layer.get(e.from)! + 1);
        changed = true;
      }
    }
  }
  return layer;
}

// ───────────── where each edge's numbers come from ─────────────

/** A scrape target: a proxy's admin endpoint. */
export interface ScrapeTarget {
  /** The workload whose proxy this is (`gateway` or a service name). */
  readonly workload: string;
  readonly kind: "gateway" | "sidecar";
  /** The proxy's admin base URL (`http://127.0.0.1:15000`); `/metrics` is appended. */
  readonly adminUrl: string;
}

const REQUESTS = "meshgate_requests_total";
const DURATION = "meshgate_request_duration_seconds";
const is5xx = (s: string) => s === "5xx";
const upstreamError = (s: string) => s !== "success" && s !== "2xx" && s !== "3xx" && s !== "4xx";

/** Which target's series give an edge's numbers. */
export interface EdgeSource {
  readonly target: string;
  readonly stats: StatsSource;
  /** A second source on the same target whose counts add to the first (an egress edge's tunnels). */
  readonly also?: StatsSource;
}

/**
 * Where an edge's numbers are read:
 * - `internet->gateway`: the gateway's requests and latency, every route;
 * - `gateway->S`: S's sidecar, inbound from the gateway's SPIFFE ID (the peer label holds the ID only
 *   when an allow rule names it); for a denied edge, the gateway's upstream attempts to cluster S;
 * - `A->B`: A's sidecar, outbound to B (the peer label is the destination service);
 * - `A->X`, X outside the mesh: A's sidecar's plain-HTTP requests to X plus its tunnels to X (rate =
 *   requests + tunnels opened, errors = 5xx + failed connects, p99 of the requests); none for a denied
 *   one (the sidecar refuses it before naming X).
 */
export function edgeSource(edge: TopologyEdge, spiffeOf: (workload: string) => string): EdgeSource | null {
  if (edge.egress)
    return edge.status === "denied"
      ? null
      : {
          target: edge.from,
          stats: {
            counter: REQUESTS,
            statusLabel: "code_class",
            isError: is5xx,
            histogram: DURATION,
            match: { direction: "outbound", peer: edge.to },
          },
          also: {
            counter: "meshgate_egress_connections_total",
            statusLabel: "outcome",
            isError: (s) => s === "failed",
            histogram: null,
            match: { external: edge.to },
          },
        };
  if (edge.from === INTERNET)
    return {
      target: GATEWAY,
      stats: { counter: REQUESTS, statusLabel: "code_class", isError: is5xx, histogram: DURATION, match: {} },
    };
  if (edge.from === GATEWAY) {
    if (edge.status === "denied")
      return {
        target: GATEWAY,
        stats: {
          counter: "meshgate_upstream_requests_total",
          statusLabel: "outcome",
          isError: upstreamError,
          histogram: null,
          match: { cluster: edge.to },
        },
      };
    const match: Match = { direction: "inbound", peer: spiffeOf(GATEWAY) };
    return {
      target: edge.to,
      stats: { counter: REQUESTS, statusLabel: "code_class", isError: is5xx, histogram: DURATION, match },
    };
  }
  const match: Match = { direction: "outbound", peer: edge.to };
  return {
    target: edge.from,
    stats: { counter: REQUESTS, statusLabel: "code_class", isError: is5xx, histogram: DURATION, match },
  };
}

function statsSourceText(from: string, to: string, allowed: boolean): string {
  if (from === INTERNET) return "gateway: requests of every route";
  if (from === GATEWAY)
    return allowed
      ? `${to} sidecar: inbound from the gateway's identity`
      : `gateway: upstream attempts to ${to}`;
  return `${from} sidecar: outbound to ${to}`;
}

/** One identity's certificate, as a proxy's `meshgate_cert_expiry_seconds` reported it. */
export interface CertificateExpiry {
  readonly workload: string;
  readonly identity: string;
  /** Seconds until the serving SVID expires at the scrape (negative once expired). */
  readonly expiresInSeconds: number;
  /** When it expires (ms since the epoch): the scrape time plus the gauge. */
  readonly expiresAt: number;
  /** When the value was scraped (ms since the epoch). */
  readonly scrapedAt: number;
}

/**
 * The certificate of the identity a target's proxy serves now: the largest `meshgate_cert_expiry_seconds`
 * among the target's series of its own SPIFFE ID (a replaced identity's series stays at 0), else the
 * largest of any identity; null when the proxy exports none (no identity loaded yet).
 */
export function certificateOf(
  workload: string,
  identity: string | null,
  samples: readonly Sample[],
  scrapedAt: number,
): CertificateExpiry | null {
  const series = samples.filter((s) => s.name === "meshgate_cert_expiry_seconds" && s.labels.identity);
  const own = identity ? series.filter((s) => s.labels.identity === identity) : [];
  const pool = own.length ? own : series;
  if (pool.length === 0) return null;
  const best = pool.reduce((a, b) => (b.value > a.value ? b : a));
  return {
    workload,
    identity: best.labels.identity!,
    expiresInSeconds: best.value,
    expiresAt: scrapedAt + best.value * 1000,
    scrapedAt,
  };
}

/** Requests a target's proxy is handling now (`meshgate_requests_in_flight`). */
export const inFlight = (samples: readonly Sample[]): number => sumOf(samples, "meshgate_requests_in_flight");
