/**
 * `meshgate graph`: the service graph of one spec as mermaid or Graphviz dot — `internet`, the gateway and
 * the services as nodes; the allowed edges labelled with what they admit (methods and path patterns); the
 * public entry points (public gateway routes) apart from the authenticated ones; declared calls the callee
 * denies as dashed red edges; the mesh's mTLS state on the mesh boundary and on its edges; the destinations
 * outside the mesh (spec `external`) as nodes outside the mesh boundary, with an edge labelled `host:port`
 * from each service whose sidecar relays to them (it calls them and an allow rule names it), and a declared
 * call that no allow rule admits dashed red, like a denied mesh call. The output is deterministic (sorted),
 * so it can be committed and diffed.
 */
import { GATEWAY, INTERNET } from "./model.ts";
import { describeGrants, destinationOf, type Reachability } from "./reachability.ts";
import type { PolicyInput } from "./run.ts";

interface GraphEdge {
  from: string;
  to: string;
  label: string;
  kind: "public" | "authenticated" | "allowed" | "denied" | "egress";
}

interface Graph {
  name: string;
  mtls: "strict" | "permissive";
  services: string[];
  /** Destinations outside the mesh, by name. */
  externals: string[];
  hasGateway: boolean;
  edges: GraphEdge[];
}

const MAX_LABEL = 100;
const clip = (s: string) => (s.length > MAX_LABEL ? `${s.slice(0, MAX_LABEL - 1)}…` : s);

/** The graph of one spec, from its reachability relation. */
export function buildGraph(input: PolicyInput, reach: Reachability): Graph {
  const edges: GraphEdge[] = [];
  const pub = reach.routes.filter((r) => r.auth.public);
  const authd = reach.routes.filter((r) => !r.auth.public);
  if (pub.length > 0)
    edges.push({
      from: INTERNET,
      to: GATEWAY,
      kind: "public",
      label: clip(
        `public: ${describeGrants(
          pub.flatMap((r) => r.grants),
          2,
        )}`,
      ),
    });
  if (authd.length > 0)
    edges.push({
      from: INTERNET,
      to: GATEWAY,
      kind: "authenticated",
      label: clip(`authenticated: ${authd.length} route${authd.length === 1 ? "" : "s"}`),
    });
  for (const m of reach.mesh)
    edges.push({ from: m.from, to: m.to, kind: "allowed", label: clip(describeGrants(m.grants, 3)) });
  const allowed = new Set(reach.mesh.map((m) => `${m.from}\u0000${m.to}`));
  for (const c of reach.calls)
    if (!allowed.has(`${c.from}\u0000${c.to}`))
      edges.push({ from: c.from, to: c.to, kind: "denied", label: "declared call, denied" });
  for (const e of reach.egress) {
    if (e.relayed)
      edges.push({
        from: e.from,
        to: e.to,
        kind: "egress",
        // The app's plain HTTP leaves encrypted by its sidecar: say so where the edge leaves the mesh.
        label:
          e.tls === "originate"
            ? `${destinationOf(e)} · ${e.mutual ? "mTLS" : "TLS"} by the ${e.from === GATEWAY ? "gateway" : "sidecar"}`
            : destinationOf(e),
      });
    else if (e.declared)
      edges.push({ from: e.from, to: e.to, kind: "denied", label: "declared call, denied" });
  }
  return {
    name: input.infra.name,
    mtls: input.infra.mtls,
    services: [...input.model.serviceNames],
    externals: reach.externals.map((x) => x.name),
    hasGateway: input.runtime.gateway !== null,
    edges,
  };
}

const safe = (n: string) => n.replace(/[^A-Za-z0-9]/g, "_");
const mq = (s: string) => `"${s.replace(/"/g, "#quot;")}"`;

/** Mermaid flowchart. */
export function renderMermaid(g: Graph): string {
  const externals = new Set(g.externals);
  const id = (n: string) => (externals.has(n) ? `ext_${safe(n)}` : `n_${safe(n)}`);
  const lines = ["flowchart LR", `  ${id(INTERNET)}((internet))`];
  lines.push(`  subgraph mesh[${mq(`${g.name} · mTLS ${g.mtls}`)}]`);
  if (g.hasGateway) lines.push(`    ${id(GATEWAY)}{{gateway}}`);
  for (const s of g.services) lines.push(`    ${id(s)}[${mq(s)}]`);
  lines.push("  end");
  for (const x of g.externals) lines.push(`  ${id(x)}[/${mq(x)}/]`);
  const styles: string[] = [];
  g.edges.forEach((e, i) => {
    const arrow = e.kind === "denied" ? "-.->" : e.kind === "allowed" && g.mtls === "strict" ? "==>" : "-->";
    lines.push(`  ${id(e.from)} ${arrow}|${mq(e.label)}| ${id(e.to)}`);
    if (e.kind === "public") styles.push(`  linkStyle ${i} stroke:#ff7f0e,stroke-width:2px`);
    if (e.kind === "denied") styles.push(`  linkStyle ${i} stroke:#d62728`);
  });
  return [...lines, ...styles].join("\n") + "\n";
}

const dq = (s: string) => `"${s.replace(/\\/g, "\\\\").replace(/"/g, '\\"')}"`;

/** Graphviz dot. */
export function renderDot(g: Graph): string {
  const lines = [
    `digraph ${dq(g.name)} {`,
    "  rankdir=LR;",
    '  node [fontname="Helvetica", shape=box];',
    '  edge [fontname="Helvetica", fontsize=10];',
    `  ${dq(INTERNET)} [shape=doublecircle];`,
    '  subgraph "cluster_mesh" {',
    `    label=${dq(`${g.name} · mTLS ${g.mtls}`)};`,
    `    style=${g.mtls === "strict" ? "solid" : "dashed"};`,
  ];
  if (g.hasGateway) lines.push(`    ${dq(GATEWAY)} [shape=hexagon];`);
  for (const s of g.services) lines.push(`    ${dq(s)};`);
  lines.push("  }");
  // Outside the mesh's cluster; their names never clash with a service's, `gateway` or `internet`.
  for (const x of g.externals) lines.push(`  ${dq(x)} [shape=parallelogram];`);
  for (const e of g.edges) {
    const attrs = [`label=${dq(e.label)}`];
    if (e.kind === "public") attrs.push('color="#ff7f0e"', "penwidth=2");
    if (e.kind === "denied") attrs.push('color="#d62728"', "style=dashed");
    if (e.kind === "allowed") attrs.push(g.mtls === "strict" ? "style=bold" : "style=dotted");
    lines.push(`  ${dq(e.from)} -> ${dq(e.to)} [${attrs.join(", ")}];`);
  }
  lines.push("}");
  return lines.join("\n") + "\n";
}
