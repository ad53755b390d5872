/**
 * The reachability relation of a mesh: who may reach whom, on which methods and path patterns.
 *
 *  - mesh access: a peer (a service, or the gateway) → a service, as the callee's allow rules admit it
 *    (deny by default: no rule, no access);
 *  - route access: `internet` → the gateway's routes → the services they send to, with the route's
 *    authentication requirement (who on the internet: anyone for public routes, the holders of a token
 *    with these scopes, the API-key consumers of these groups, …), and whether the target's allow rules
 *    admit what the route sends;
 *  - egress: a service → a destination outside the mesh (spec `external`), relayed by the caller's
 *    sidecar only when the service both calls it and one of the destination's allow rules names it (deny by
 *    default; the NetworkPolicies open exactly the relayed ones). External destinations are leaves: nothing
 *    is reached through them.
 *
 * `staticReachability` derives it from the IR and the pattern algebra (patterns.ts). The semantic diff
 * takes the relation through a `ReachabilityFn`, so a later round can pass one refined by evaluating
 * requests with decide() (edge authorization and the sidecar's inbound decision).
 */
import type { HttpMethod, RouteAuth } from "../runtime/contract/schema.ts";
import { HTTP_METHODS } from "../runtime/contract/schema.ts";
import { GATEWAY, INTERNET } from "./model.ts";
import { patternContains, type Admission } from "./patterns.ts";
import type { PolicyInput } from "./run.ts";
import { cmp } from "./order.ts";

/** One method ("*" = every method) on the paths of a pattern ("/**" = every path). */
export interface Grant {
  method: HttpMethod | "*";
  path: string;
}

export interface MeshAccess {
  from: string;
  to: string;
  grants: Grant[];
  /** The allow rules that admit it (`services.payments.allow[0]`). */
  rules: string[];
  /** Does the caller declare the call (or, for the gateway, route to the service)? */
  declared: boolean;
}

export interface RouteTargetAccess {
  service: string;
  kind: "backend" | "mirror" | "part";
  /** What the route sends there. */
  grants: Grant[];
  /** Whether the target's allow rules admit it from the gateway. */
  admitted: Admission;
  /** An external destination: its allow rules name the gateway (the spec checks), no sidecar admits it. */
  external?: true;
}

export interface RouteAccess {
  route: string;
  from: typeof INTERNET;
  /** Who on the internet: "anyone", or the credentials the route requires (computed when read). */
  readonly principal: string;
  auth: RouteAuth;
  /** Hosts the route is matched on (empty = every gateway host). */
  hosts: string[];
  /** The requests the route matches at the edge. */
  grants: Grant[];
  /**
   * Its header and query conditions: among routes of one path pattern the router prefers more of them (a
   * client sends whatever headers it likes, so a route with conditions can take another route's requests).
   */
  conditions: number;
  /** "forward", "aggregate", "redirect" or "static". */
  action: string;
  targets: RouteTargetAccess[];
}

/** A destination outside the mesh (spec `external`). */
export interface ExternalDestination {
  name: string;
  /** A lower-case DNS name, an IP address (canonical), a wildcard or a range. */
  host: string;
  port: number;
  /** Does the caller's sidecar open the TLS (`originate`), or the app (`passthrough`)? */
  tls: "passthrough" | "originate";
  /** Does the sidecar present a client certificate on the TLS it opens (mutual TLS)? */
  mutual: boolean;
}

/**
 * A service's edge to an external destination that it declares (`calls`) or that the destination's allow
 * rules admit — the caller's sidecar relays it (CONNECT host:port, or its local port) only when both hold.
 */
export interface EgressAccess {
  from: string;
  /** The external destination's name. */
  to: string;
  host: string;
  port: number;
  /** The destination's `tls`: `originate` when the caller's sidecar opens the TLS. */
  tls: "passthrough" | "originate";
  /** The caller's sidecar presents a client certificate on that TLS (mutual TLS). */
  mutual: boolean;
  /** Does the service list the destination in `calls`? */
  declared: boolean;
  /** The destination's allow rules that name the service (`external.card-processor.allow[0]`); [] = none. */
  rules: string[];
  /** Does the caller's sidecar relay it (its RuntimeConfig's `outbound.external` lists the destination)? */
  relayed: boolean;
}

export interface Reachability {
  mesh: MeshAccess[];
  routes: RouteAccess[];
  /** Declared calls between services (the `calls` graph), from → to. */
  calls: { from: string; to: string }[];
  /** The destinations outside the mesh, by name. */
  externals: ExternalDestination[];
  /** Edges to them, declared or allowed (sorted by from, to); only `relayed` ones reach anything. */
  egress: EgressAccess[];
}

/** Computes the relation of one spec; the diff is parameterized by it. */
export type ReachabilityFn = (input: PolicyInput) => Reachability;

const grantsOf = (methods: readonly HttpMethod[], paths: readonly string[]): Grant[] => {
  const ms: (HttpMethod | "*")[] = methods.length > 0 ? [...methods] : ["*"];
  const ps = paths.length > 0 ? paths : ["/**"];
  return ms.flatMap((method) => ps.map((path) => ({ method, path })));
};

export const staticReachability: ReachabilityFn = (input) => {
  const { model, runtime } = input;
  const mesh: MeshAccess[] = [];
  const routedTo = new Set<string>();
  const routes: RouteAccess[] = [];
  for (const r of runtime.gateway?.routes ?? []) {
    // A backend of a split with weight 0 receives no request (the gateway's chooseBackend never picks it):
    // it is not reached, so raising its weight is a widening the diff shows.
    const idle =
      r.action.kind === "forward" &&
      r.action.backends.length > 1 &&
      r.action.backends.some((b) => b.weight === 0)
        ? new Set(r.action.backends.filter((b) => b.weight === 0).map((b) => b.cluster))
        : null;
    const reached = model
      .targets(r)
      .filter((t) => t.kind !== "backend" || idle === null || !idle.has(t.service));
    const targets: RouteTargetAccess[] = reached.map((t) => {
      routedTo.add(t.service);
      return {
        service: t.service,
        kind: t.kind,
        grants: grantsOf(t.methods, [t.path]),
        admitted: t.external ? "all" : model.admits(t.service, GATEWAY, { methods: t.methods, path: t.path }),
        ...(t.external ? { external: true as const } : {}),
      };
    });
    routes.push({
      route: r.name,
      from: INTERNET,
      get principal() {
        return principalOf(this.auth);
      },
      auth: r.auth,
      hosts: r.match.hosts,
      grants: grantsOf(r.match.methods, [r.match.path]),
      conditions: r.match.headers.length + r.match.query.length,
      action: r.action.kind,
      targets,
    });
  }
  for (const s of runtime.sidecars) {
    const byPeer = new Map<string, MeshAccess>();
    for (const rule of s.inbound.authz.rules) {
      for (const id of rule.from) {
        const peer = model.identityName(id) ?? id;
        let e = byPeer.get(peer);
        if (!e) {
          const declared = peer === GATEWAY ? routedTo.has(s.name) : model.callees(peer).includes(s.name);
          byPeer.set(peer, (e = { from: peer, to: s.name, grants: [], rules: [], declared }));
        }
        e.grants.push(...grantsOf(rule.methods, rule.paths));
        e.rules.push(rule.source);
      }
    }
    mesh.push(...byPeer.values());
  }
  mesh.sort((a, b) => cmp(a.from, b.from) || cmp(a.to, b.to));
  routes.sort((a, b) => cmp(a.route, b.route));
  const calls = model.serviceNames
    .flatMap((from) => [...new Set(model.callees(from))].map((to) => ({ from, to })))
    .sort((a, b) => cmp(a.from, b.from) || cmp(a.to, b.to));
  const externals = input.infra.externals.map((x) => ({
    name: x.name,
    host: x.host,
    port: x.port,
    tls: x.tls,
    mutual: x.clientCertificate !== null,
  }));
  const byName = new Map(externals.map((x) => [x.name, x]));
  const egress = input.infra.egress
    .map((e) => ({
      from: e.from,
      to: e.external,
      host: e.host,
      port: e.port,
      tls: byName.get(e.external)?.tls ?? "passthrough",
      mutual: byName.get(e.external)?.mutual ?? false,
      declared: e.declared,
      rules: [...e.allowedBy],
      // Relayed by the caller's sidecar — or, from the gateway, forwarded by a route of its own.
      relayed:
        e.from === GATEWAY
          ? (input.runtime.gateway?.clusters.some((c) => c.name === e.external && c.address) ?? false)
          : (model.sidecar(e.from)?.outbound.external.some((x) => x.name === e.external) ?? false),
    }))
    .sort((a, b) => cmp(a.from, b.from) || cmp(a.to, b.to));
  return { mesh, routes, calls, externals, egress };
};

/** "api.stripe.com:443", "[2001:db8::25]:587": where an external destination's tunnels go. */
export function destinationOf(d: { host: string; port: number }): string {
  return d.host.includes(":") ? `[${d.host}]:${d.port}` : `${d.host}:${d.port}`;
}

/** "anyone", "jwt main with scopes orders:read", "API key of group partners from 203.0.113.0/24", … */
export function principalOf(a: RouteAuth): string {
  if (a.public) return "anyone";
  if (a.anyOf.length === 0) return "nobody (no mechanism)";
  const mechanisms = a.anyOf.map((m) => (m.kind === "apiKey" ? "API key" : `${m.kind} ${m.provider}`));
  const parts = [mechanisms.join(" or ")];
  if (a.scopes.length) parts.push(`scopes ${a.scopes.join(" ")}`);
  for (const c of a.claims) parts.push(`${c.name} ∈ {${c.values.join(", ")}}`);
  if (a.consumers.length) parts.push(`consumers ${a.consumers.join(", ")}`);
  if (a.groups.length) parts.push(`groups ${a.groups.join(", ")}`);
  if (a.clientIps.length) parts.push(`from ${a.clientIps.join(", ")}`);
  return parts.length === 1 ? parts[0]! : `${parts[0]} with ${parts.slice(1).join(", ")}`;
}

/**
 * Does `weak` admit everyone `strong` admits? (Then changing `strong` to `weak` widens nothing.)
 * Mechanisms are alternatives (more of them admit more); scopes, claims, consumers, groups and client
 * ranges are restrictions (an empty list restricts nothing).
 */
export function authCovers(weak: RouteAuth, strong: RouteAuth): boolean {
  if (weak.public) return true;
  if (strong.public) return false;
  const key = (m: RouteAuth["anyOf"][number]) => (m.kind === "apiKey" ? "apiKey" : `${m.kind}:${m.provider}`);
  const weakMechanisms = new Set(weak.anyOf.map(key));
  if (!strong.anyOf.every((m) => weakMechanisms.has(key(m)))) return false;
  if (!weak.scopes.every((s) => strong.scopes.includes(s))) return false;
  for (const c of weak.claims) {
    const s = strong.claims.find((x) => x.name === c.name);
    if (!s || !s.values.every((v) => c.values.includes(v))) return false;
  }
  const restricts = (w: readonly string[], s: readonly string[]) =>
    w.length === 0 || (s.length > 0 && s.every((x) => w.includes(x)));
  // Consumers and groups are one allow-list at run time (authorize(): a listed consumer, or a member of a
  // listed group; both empty admit every API key), not two restrictions: `weak` covers `strong` when it
  // admits every API key, or when `strong` lists some and each of its consumers and groups is `weak`'s too
  // (group membership is the consumers table's; comparing names is the conservative reading).
  const open = (a: RouteAuth) => a.consumers.length === 0 && a.groups.length === 0;
  const apiKeys =
    open(weak) ||
    (!open(strong) &&
      strong.consumers.every((c) => weak.consumers.includes(c)) &&
      strong.groups.every((g) => weak.groups.includes(g)));
  return apiKeys && restricts(weak.clientIps, strong.clientIps);
}

/** The grants of `grants` that `by` does not cover, method by method ("*" covers every method). */
export function uncovered(grants: readonly Grant[], by: readonly Grant[]): Grant[] {
  const out: Grant[] = [];
  const covers = (m: HttpMethod, path: string) =>
    by.some((b) => (b.method === "*" || b.method === m) && patternContains(b.path, path));
  for (const g of grants) {
    if (g.method === "*") {
      if (by.some((b) => b.method === "*" && patternContains(b.path, g.path))) continue;
      const missing = HTTP_METHODS.filter((m) => !covers(m, g.path));
      // "Any method" is more than the nine names: decide() routes any upper-case token (PROPFIND, PURGE)
      // and an empty method list admits it, so listing all nine does not cover "*".
      if (missing.length === HTTP_METHODS.length || missing.length === 0) out.push(g);
      else for (const m of missing) out.push({ method: m, path: g.path });
    } else if (!covers(g.method, g.path)) out.push(g);
  }
  return out;
}

/** "GET, HEAD /products, /products/*; POST /orders" */
export function describeGrants(grants: readonly Grant[], max = 6): string {
  const byMethods = new Map<string, string[]>();
  const byPath = new Map<string, string[]>();
  for (const g of grants) {
    const list = byPath.get(g.path) ?? [];
    if (!list.includes(g.method)) list.push(g.method);
    byPath.set(g.path, list);
  }
  for (const [path, methods] of byPath) {
    const order = (m: string) => (m === "*" ? -1 : HTTP_METHODS.indexOf(m as HttpMethod));
    const key = methods.includes("*") ? "any method" : methods.sort((a, b) => order(a) - order(b)).join(", ");
    const paths = byMethods.get(key) ?? [];
    paths.push(path);
    byMethods.set(key, paths);
  }
  const parts = [...byMethods].map(([m, paths]) => `${m} ${paths.join(", ")}`);
  return parts.length > max
    ? `${parts.slice(0, max).join("; ")}; +${parts.length - max} more`
    : parts.join("; ");
}
