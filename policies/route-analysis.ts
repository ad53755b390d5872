/**
 * Which gateway routes can be reached at all, and which pairs tie — decided by the compiled router and
 * decide() themselves, never by a second implementation of their precedence rules.
 *
 * Shadowing. For each route we build probe requests that the route matches and that are as generic as
 * possible: every `*`/`{param}` segment and every `**` tail gets a fresh value no route names, headers and
 * query parameters the route does not constrain are absent or fresh (every combination when few names are
 * constrained anywhere), and the probes range over the route's methods, its host classes and `**` tail
 * lengths up to one past the longest pattern. If a probe request is matched by a route R2, R2 matches every
 * request of R's that differs from the probe only in those fresh values, so when decide() sends *every*
 * probe to another route, no request reaches R: it is shadowed. One probe that decide() sends to R proves
 * it reachable.
 *
 * Conflicts. Two routes conflict when decide() picks between them by name alone: a request matches both,
 * and swapping their names swaps the winner (checked with a two-route Router, both ways).
 */
import type { GatewayRoute, HttpMethod } from "../runtime/contract/schema.ts";
import { HTTP_METHODS } from "../runtime/contract/schema.ts";
import { decide, type CompiledGateway } from "../runtime/decide/decide.ts";
import { Router } from "../runtime/decide/router.ts";
import { normalizePattern, segmentsOf } from "./patterns.ts";
import { cmp } from "./order.ts";

export interface Probe {
  method: string;
  host: string;
  path: string;
  query: string;
  headers: Readonly<Record<string, string>>;
}

export interface RouteAnalysis {
  /** Routes no probe reaches, with the routes that won their probes. */
  shadowed: { route: string; by: string[]; probe: Probe }[];
  /** Route pairs ordered by name only; `winner` serves the shared requests today. */
  conflicts: { winner: string; loser: string; probe: Probe }[];
  /** Routes whose probes could not be built (a regex condition none of the probe values satisfies). */
  unanalyzed: { route: string; reason: string }[];
}

const MAX_TAIL = 12;
const MAX_FREE_NAMES = 3;
const REGEX_PROBES = ["", "0", "1", "a", "x", "on", "off", "true", "yes", "v1", "GET", "json"];

/** Analyzes every route of a compiled gateway (see the module comment). */
export function analyzeRoutes(gw: CompiledGateway): RouteAnalysis {
  const routes = gw.config.routes;
  const ctx = new ProbeContext(gw);
  const conflicts = findConflicts(ctx, routes);
  const loserOf = new Map<string, Set<string>>();
  for (const c of conflicts) {
    let s = loserOf.get(c.loser);
    if (!s) loserOf.set(c.loser, (s = new Set()));
    s.add(c.winner);
  }
  const shadowed: RouteAnalysis["shadowed"] = [];
  const unanalyzed: RouteAnalysis["unanalyzed"] = [];
  for (const r of routes) {
    const probes = ctx.probesFor(r);
    if (typeof probes === "string") {
      unanalyzed.push({ route: r.name, reason: probes });
      continue;
    }
    const winners = new Set<string>();
    let reached = false;
    let first: Probe | null = null;
    for (const p of probes) {
      const d = ctx.decide(p);
      if (d === null) continue; // host not served: not a request of this gateway
      if (d === r.name) {
        reached = true;
        break;
      }
      first ??= p;
      winners.add(d);
    }
    if (reached || first === null) continue;
    const by = [...winners].sort();
    const tiedOnly = loserOf.get(r.name);
    if (tiedOnly && by.every((w) => tiedOnly.has(w))) continue; // reported as a conflict
    shadowed.push({ route: r.name, by, probe: first });
  }
  return { shadowed, conflicts, unanalyzed };
}

/** A path variant of an authenticated route's request that a public route serves (see publicVariants). */
export interface PublicVariant {
  /** The authenticated route, and a request it serves. */
  route: string;
  probe: Probe;
  /** The variant request and the public route that serves it. */
  variant: Probe;
  by: string;
  /** The clusters both routes forward to. */
  clusters: string[];
}

/**
 * Requests that differ from an authenticated route's only in a trailing slash, letter case or a `;param`
 * on the last segment, which decide() sends to a *public* route forwarding to the same upstream. The
 * gateway matches paths exactly (Istio's must-not-normalize list): `/admin/` is not `/admin`. Many
 * upstream frameworks read them as one (Express's non-strict routing, Spring's trailing-slash match and
 * `;jsessionid` stripping, ASP.NET's case-insensitive routes), and serve the protected resource unauthenticated.
 */
export function publicVariants(gw: CompiledGateway): PublicVariant[] {
  const ctx = new ProbeContext(gw);
  const byName = new Map(gw.config.routes.map((r) => [r.name, r]));
  const clustersOf = (r: GatewayRoute): string[] =>
    r.action.kind === "forward" ? r.action.backends.map((b) => b.cluster) : [];
  const out: PublicVariant[] = [];
  for (const r of gw.config.routes) {
    const own = clustersOf(r);
    if (r.auth.public || own.length === 0) continue;
    const probes = ctx.probesFor(r);
    if (typeof probes === "string") continue;
    let probe: Probe | null = null;
    for (const p of probes)
      if (ctx.decide(p) === r.name) {
        probe = p;
        break;
      }
    if (probe === null) continue; // shadowed: route-precedence reports it
    for (const path of pathVariants(probe.path)) {
      const variant = { ...probe, path };
      const by = byName.get(ctx.decide(variant) ?? "");
      if (by === undefined || by.name === r.name || !by.auth.public) continue;
      const shared = clustersOf(by).filter((c) => own.includes(c));
      if (shared.length === 0) continue; // another upstream: it has no such resource to give away
      out.push({ route: r.name, probe, variant, by: by.name, clusters: [...new Set(shared)].sort() });
      break;
    }
  }
  return out;
}

/** A path with a trailing slash added or removed, upper-cased, and with `;x` on its last segment. */
function pathVariants(path: string): string[] {
  const out = new Set<string>();
  if (path.endsWith("/")) {
    if (path.length > 1) out.add(path.slice(0, -1));
  } else out.add(`${path}/`);
  out.add(path.toUpperCase());
  if (!path.endsWith("/")) out.add(`${path};x`);
  out.delete(path);
  return [...out];
}

class ProbeContext {
  readonly gw: CompiledGateway;
  readonly fresh: string;
  readonly maxSegments: number;
  readonly headerNames: readonly string[];
  readonly queryNames: readonly string[];
  private readonly exactHosts: readonly string[];
  private readonly wildcardSuffixes: readonly string[];
  private readonly servesAll: boolean;

  constructor(gw: CompiledGateway) {
    this.gw = gw;
    const routes = gw.config.routes;
    const literals = new Set<string>();
    let maxSegments = 0;
    const headerNames = new Set<string>();
    const queryNames = new Set<string>();
    const exact = new Set<string>();
    const wild = new Set<string>();
    for (const h of gw.config.hosts)
      (h.startsWith("*.") ? wild : exact).add(h.startsWith("*.") ? h.slice(1) : h);
    this.servesAll = gw.config.hosts.length === 0;
    for (const r of routes) {
      const segs = segmentsOf(r.match.path) ?? [];
      maxSegments = Math.max(maxSegments, segs.filter((s) => s.kind !== "rest").length);
      for (const s of segs) if (s.kind === "literal") literals.add(s.value);
      for (const c of r.match.headers) headerNames.add(c.name.toLowerCase());
      for (const c of r.match.query) queryNames.add(c.name);
      for (const h of r.match.hosts)
        (h.startsWith("*.") ? wild : exact).add(h.startsWith("*.") ? h.slice(1) : h);
    }
    let fresh = "mgprobe~0";
    while (literals.has(fresh)) fresh += "~";
    this.fresh = fresh;
    this.maxSegments = maxSegments;
    this.headerNames = [...headerNames].sort();
    this.queryNames = [...queryNames].sort();
    this.exactHosts = [...exact].sort();
    this.wildcardSuffixes = [...wild].sort();
  }

  /** The route decide() picks for a probe, or null when the gateway does not serve the probe's host. */
  decide(p: Probe): string | null {
    const d = decide(this.gw, {
      method: p.method,
      target: p.query ? `${p.path}?${p.query}` : p.path,
      host: p.host,
      header: (name) => p.headers[name],
    });
    if (d.kind === "route") return d.route.name;
    return d.code === "host_not_served" || d.code === "bad_host" ? null : `(${d.status} ${d.code})`;
  }

  private hostCache = new Map<string, string[]>();
  /** Host values standing for every class of host the route serves (cached per host list). */
  hostsFor(r: GatewayRoute): string[] {
    const key = r.match.hosts.join(",");
    let hosts = this.hostCache.get(key);
    if (!hosts) this.hostCache.set(key, (hosts = this.computeHosts(r)));
    return hosts;
  }

  private computeHosts(r: GatewayRoute): string[] {
    const out = new Set<string>();
    const probeFor = (suffix: string) => `mgprobe${suffix}`;
    if (r.match.hosts.length === 0) {
      for (const h of this.exactHosts) out.add(h);
      for (const s of this.wildcardSuffixes) out.add(probeFor(s));
      if (this.servesAll || out.size === 0) out.add("mgprobe.invalid");
    } else {
      for (const h of r.match.hosts) {
        if (!h.startsWith("*.")) {
          out.add(h);
          continue;
        }
        const suffix = h.slice(1);
        out.add(probeFor(suffix));
        for (const e of this.exactHosts) if (e.endsWith(suffix) && e.length > suffix.length) out.add(e);
        for (const s of this.wildcardSuffixes) if (s.endsWith(suffix)) out.add(probeFor(s));
      }
    }
    return [...out].sort();
  }

  /** Paths standing for every request path of the route's pattern. */
  pathsFor(r: GatewayRoute): string[] {
    const segs = segmentsOf(r.match.path) ?? [];
    const fixed: string[] = [];
    let rest = false;
    for (const s of segs) {
      if (s.kind === "literal") fixed.push(s.value);
      else if (s.kind === "rest") rest = true;
      else fixed.push(this.fresh);
    }
    if (!rest) return [`/${fixed.join("/")}`];
    const out: string[] = [];
    const tails = Math.min(MAX_TAIL, Math.max(1, this.maxSegments + 1 - fixed.length));
    for (let k = 0; k <= tails; k++) {
      const all = [...fixed, ...Array.from({ length: k }, () => this.fresh)];
      out.push(all.length === 0 ? "/" : `/${all.join("/")}`);
    }
    return out;
  }

  /** A value satisfying one condition (as the compiled router tests it), or null when none is found. */
  valueFor(c: GatewayRoute["match"]["headers"][number]): string | undefined | null {
    switch (c.kind) {
      case "exact":
        return c.value ?? "";
      case "prefix":
        return `${c.value ?? ""}~`;
      case "present":
        return "~";
      case "absent":
        return undefined;
      case "regex": {
        const re = new RegExp(`^(?:${c.value ?? ""})$`);
        const stripped = (c.value ?? "").replace(/[\\^$.*+?()[\]{}|]/g, "");
        for (const v of [...REGEX_PROBES, stripped, this.fresh]) if (re.test(v)) return v;
        return null;
      }
    }
  }

  /** Every probe of a route (built lazily: most routes are reached by the first), or why none can be built. */
  probesFor(r: GatewayRoute): Iterable<Probe> | string {
    const own: Record<string, string | undefined> = {};
    const ownQuery: Record<string, string | undefined> = {};
    for (const [list, into] of [
      [r.match.headers, own],
      [r.match.query, ownQuery],
    ] as const) {
      for (const c of list) {
        const v = this.valueFor(c);
        if (v === null) return `no probe value satisfies ${c.name} ~ /${c.value}/`;
        into[c.name] = v;
      }
    }
    const ownHeaderNames = new Set(r.match.headers.map((c) => c.name.toLowerCase()));
    const ownQueryNames = new Set(r.match.query.map((c) => c.name));
    const free = [
      ...this.headerNames.filter((n) => !ownHeaderNames.has(n)).map((n) => ({ kind: "h" as const, n })),
      ...this.queryNames.filter((n) => !ownQueryNames.has(n)).map((n) => ({ kind: "q" as const, n })),
    ];
    const variants: boolean[][] = [];
    if (free.length <= MAX_FREE_NAMES) {
      for (let mask = 0; mask < 1 << free.length; mask++)
        variants.push(free.map((_, i) => (mask & (1 << i)) !== 0));
    } else {
      variants.push(
        free.map(() => false),
        free.map(() => true),
      );
    }
    const methods: readonly HttpMethod[] = r.match.methods.length > 0 ? r.match.methods : HTTP_METHODS;
    const hosts = this.hostsFor(r);
    const paths = this.pathsFor(r);
    const fresh = this.fresh;
    const needsQuery = r.match.query.length > 0 || free.some((f) => f.kind === "q");
    return {
      *[Symbol.iterator]() {
        for (const host of hosts) {
          for (const path of paths) {
            for (const method of methods) {
              for (const v of variants) {
                const headers: Record<string, string> = {};
                const query = needsQuery ? new URLSearchParams() : null;
                for (const c of r.match.headers) {
                  const val = own[c.name];
                  if (val !== undefined) headers[c.name.toLowerCase()] = val;
                }
                for (const c of r.match.query) {
                  const val = ownQuery[c.name];
                  if (val !== undefined) query!.append(c.name, val);
                }
                free.forEach((f, i) => {
                  if (!v[i]) return;
                  if (f.kind === "h") headers[f.n] = fresh;
                  else query!.append(f.n, fresh);
                });
                yield { method, host, path, query: query ? query.toString() : "", headers };
              }
            }
          }
        }
      },
    };
  }
}

/** Pairs of routes that decide() orders by name alone. */
function findConflicts(ctx: ProbeContext, routes: readonly GatewayRoute[]): RouteAnalysis["conflicts"] {
  // Only routes at the same node of the same host's trie can be ordered by name: same host entry, same
  // pattern up to parameter names. Group by that; the routers below decide the rest.
  const groups = new Map<string, GatewayRoute[]>();
  for (const r of routes) {
    const pattern = normalizePattern(r.match.path);
    for (const h of r.match.hosts.length > 0 ? r.match.hosts : [""]) {
      const key = `${h}\u0000${pattern}`;
      let g = groups.get(key);
      if (!g) groups.set(key, (g = []));
      g.push(r);
    }
  }
  const out: RouteAnalysis["conflicts"] = [];
  const seen = new Set<string>();
  for (const [key, group] of groups) {
    if (group.length < 2) continue;
    const host = key.slice(0, key.indexOf("\u0000"));
    for (let i = 0; i < group.length; i++) {
      for (let j = i + 1; j < group.length; j++) {
        const [a, b] = [group[i]!, group[j]!];
        const pairKey = a.name < b.name ? `${a.name}\u0000${b.name}` : `${b.name}\u0000${a.name}`;
        if (seen.has(pairKey)) continue;
        const probe = sharedProbe(ctx, a, b, host);
        if (!probe) continue;
        const first = winner([a, b], probe);
        const swapped = winner(
          [
            { ...a, name: b.name },
            { ...b, name: a.name },
          ],
          probe,
        );
        if (first === null || swapped === null || first === swapped) continue;
        seen.add(pairKey);
        const w = first === 0 ? a : b;
        const l = first === 0 ? b : a;
        out.push({ winner: w.name, loser: l.name, probe });
      }
    }
  }
  return out.sort((x, y) => cmp(x.loser, y.loser) || cmp(x.winner, y.winner));
}

/** Index (0 or 1) of the route a two-route Router picks for the probe, or null when neither matches. */
function winner(pair: [GatewayRoute, GatewayRoute], p: Probe): 0 | 1 | null {
  const m = new Router(pair).match(p.host, {
    method: p.method,
    path: p.path,
    query: p.query,
    headers: { header: (n) => p.headers[n] },
  });
  if (m.kind !== "matched") return null;
  return m.route.config === pair[0] ? 0 : 1;
}

function matches(r: GatewayRoute, p: Probe): boolean {
  return winner([r, r], p) !== null;
}

/** A request both routes match, or null when none of the candidate combinations is. */
function sharedProbe(ctx: ProbeContext, a: GatewayRoute, b: GatewayRoute, hostEntry: string): Probe | null {
  const methods =
    a.match.methods.length === 0
      ? b.match.methods.length === 0
        ? ["GET"]
        : b.match.methods
      : a.match.methods.filter((m) => b.match.methods.length === 0 || b.match.methods.includes(m));
  if (methods.length === 0) return null;
  const hosts =
    hostEntry === ""
      ? ctx.hostsFor(a)
      : [hostEntry.startsWith("*.") ? `mgprobe${hostEntry.slice(1)}` : hostEntry];
  const path = ctx.pathsFor(a)[0]!;
  // Candidate values per constrained name: what either route's condition asks for, fresh, or absent.
  const hNames = [...new Set([...a.match.headers, ...b.match.headers].map((c) => c.name.toLowerCase()))];
  const qNames = [...new Set([...a.match.query, ...b.match.query].map((c) => c.name))];
  const candidates = (conds: GatewayRoute["match"]["headers"], name: string, lower: boolean) => {
    const vals = new Set<string | undefined>([undefined, ctx.fresh]);
    for (const c of conds)
      if ((lower ? c.name.toLowerCase() : c.name) === name) {
        const v = ctx.valueFor(c);
        if (v !== null) vals.add(v);
      }
    return [...vals];
  };
  const hCands = hNames.map((n) => candidates([...a.match.headers, ...b.match.headers], n, true));
  const qCands = qNames.map((n) => candidates([...a.match.query, ...b.match.query], n, false));
  const all = [...hCands, ...qCands];
  const total = all.reduce((n, c) => n * c.length, 1);
  if (total > 256) return null; // too many combinations to search: no claim
  for (let k = 0; k < total; k++) {
    let rest = k;
    const headers: Record<string, string> = {};
    const query = new URLSearchParams();
    all.forEach((cands, i) => {
      const v = cands[rest % cands.length];
      rest = Math.floor(rest / cands.length);
      if (v === undefined) return;
      if (i < hNames.length) headers[hNames[i]!] = v;
      else query.append(qNames[i - hNames.length]!, v);
    });
    for (const host of hosts) {
      const probe: Probe = { method: methods[0]!, host, path, query: query.toString(), headers };
      if (matches(a, probe) && matches(b, probe)) return probe;
    }
  }
  return null;
}
