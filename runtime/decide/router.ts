/**
 * The compiled router: routes compiled once into a segment trie per host, so a lookup costs O(segments
 * of the path), independent of the number of routes.
 *
 * Precedence (documented in the README; a route's position in the config never matters):
 *  1. host: an exact host beats a wildcard host (longer suffix first), which beats routes without hosts;
 *  2. path, compared segment by segment from the left: at the first segment where two patterns differ,
 *     a literal beats `*`/`{param}`, which beats `**`; so the more specific prefix wins;
 *  3. among routes with the same path pattern: routes naming methods beat routes without, then more
 *     header/query conditions beat fewer, then the route name (alphabetical) breaks the tie.
 * A request whose path matches routes that all refuse its method gets 405 with `Allow`; otherwise 404.
 */
import type { GatewayRoute, HttpMethod } from "../contract/schema.ts";
import { isPatternError, parsePathPattern } from "./pattern.ts";
import { compareCodeUnits } from "../contract/canonical.ts";

interface Condition {
  readonly name: string;
  readonly test: (value: string | undefined) => boolean;
}

export interface CompiledRoute {
  readonly config: GatewayRoute;
  readonly name: string;
  /** null = every method. */
  readonly methods: ReadonlySet<string> | null;
  /** The methods as a bitmask (METHOD_BITS), 0 = every method: checked without leaving the route object. */
  readonly methodMask: number;
  /** headers.length + query.length, inline for the same reason. */
  readonly conditionCount: number;
  readonly headers: readonly Condition[];
  readonly query: readonly Condition[];
  /** Names of the wildcard segments in order (null for `*`), for captures. */
  readonly captureNames: readonly (string | null)[];
  /** captureNames.length, inline. */
  readonly captureCount: number;
  /**
   * The compiled rewrite path, when the route rewrites it: literal parts, and numbers that index the
   * captured segments — filled per request without a name lookup.
   */
  readonly rewrite: readonly (string | number)[] | null;
  readonly source: string;
  // What decide() copies into its decision, held here so that a lookup touches one object per route
  // (with 10,000 routes the route objects are cache misses; config sub-objects would be more of them).
  readonly action: GatewayRoute["action"];
  readonly auth: GatewayRoute["auth"];
  readonly timeoutMs: number;
  readonly retry: GatewayRoute["retry"];
  /** The Host header the route sends upstream (rewrite.host), or null to keep the client's. */
  readonly rewriteHost: string | null;
}

interface Node {
  /** Routes whose pattern is all literal segments, by their path: one lookup for the whole path. */
  exactPaths?: Map<string, CompiledRoute[]>;
  literal: Map<string, Node> | null;
  /**
   * When the node has exactly one literal child: its segment and node, compared inline (most nodes deep
   * in a large route table have one — a Map costs two more memory reads per level).
   */
  onlyKey: string | null;
  onlyChild: Node | null;
  wildcard: Node | null;
  /** Routes ending here exactly. */
  end: CompiledRoute[];
  /** Routes ending here with `**` (zero or more further segments). */
  rest: CompiledRoute[];
}

const newNode = (): Node => ({
  literal: null,
  onlyKey: null,
  onlyChild: null,
  wildcard: null,
  end: [],
  rest: [],
});

/** The request facts the router reads. Header names are lower-case. */
export interface RouteQuery {
  readonly method: string;
  /** Canonical path (from canonicalizeTarget). */
  readonly path: string;
  /** Raw query string (without "?"). */
  readonly query: string;
  /** Header lookup by lower-case name (first value); called as a method, so `this` is kept. */
  readonly headers: HeaderSource;
}

export interface HeaderSource {
  header(name: string): string | undefined;
}

export type RouterResult =
  | {
      readonly kind: "matched";
      readonly route: CompiledRoute;
      /** The captured segments in pattern order (the rewrite template indexes them; see paramsOf). */
      readonly captures: readonly string[];
    }
  | { readonly kind: "method-not-allowed"; readonly allow: readonly string[] }
  | { readonly kind: "no-route" };

export class Router {
  private readonly exact = new Map<string, Node>();
  private readonly wildcards: { suffix: string; root: Node }[] = [];
  private readonly anyHost: Node = newNode();
  readonly routes: readonly CompiledRoute[];

  constructor(routes: readonly GatewayRoute[]) {
    const compiled = routes.map(compileRoute);
    this.routes = compiled;
    const segments = new Map<string, string>();
    for (const r of compiled) {
      const hosts = r.config.match.hosts;
      if (hosts.length === 0) insert(this.anyHost, r, segments);
      for (const h of hosts) {
        if (h.startsWith("*.")) {
          const suffix = h.slice(1);
          let entry = this.wildcards.find((w) => w.suffix === suffix);
          if (!entry) {
            entry = { suffix, root: newNode() };
            this.wildcards.push(entry);
          }
          insert(entry.root, r, segments);
        } else {
          let root = this.exact.get(h);
          if (!root) this.exact.set(h, (root = newNode()));
          insert(root, r, segments);
        }
      }
    }
    this.wildcards.sort((a, b) => b.suffix.length - a.suffix.length || compareCodeUnits(a.suffix, b.suffix));
    for (const root of [this.anyHost, ...this.exact.values(), ...this.wildcards.map((w) => w.root)])
      sortTree(root);
  }

  /** Finds the route for a request on a canonical host (lower-case, no port). */
  match(host: string, q: RouteQuery): RouterResult {
    const state: MatchState = {
      q,
      path: q.path,
      // "/" has no segments (the walk starts past the end); "/a/" has two ("a" and "").
      start: q.path === "/" ? 2 : 1,
      methodBit: METHOD_BITS[q.method] ?? 0,
      captures: [],
      allow: null,
    };
    const exact = this.exact.get(host);
    let route = exact ? search(exact, state) : null;
    for (let i = 0; route === null && i < this.wildcards.length; i++) {
      const w = this.wildcards[i]!;
      if (host.endsWith(w.suffix) && host.length > w.suffix.length) route = search(w.root, state);
    }
    route ??= search(this.anyHost, state);
    if (route) return { kind: "matched", route, captures: state.captures };
    if (state.allow) return { kind: "method-not-allowed", allow: [...state.allow].sort() };
    return { kind: "no-route" };
  }
}

const EMPTY: Readonly<Record<string, string>> = Object.freeze({});

/** The named captures of a match (`{id}` → value); `*` segments are captured but unnamed. */
export function paramsOf(
  route: CompiledRoute,
  captures: readonly string[],
): Readonly<Record<string, string>> {
  if (route.captureCount === 0) return EMPTY;
  const params: Record<string, string> = {};
  const names = route.captureNames;
  for (let k = 0; k < names.length; k++) {
    const n = names[k];
    if (n !== null && n !== undefined) params[n] = captures[k]!;
  }
  return params;
}

/** One bit per routable method. */
const METHOD_BITS: Readonly<Record<string, number>> = Object.freeze({
  GET: 1,
  HEAD: 2,
  POST: 4,
  PUT: 8,
  PATCH: 16,
  DELETE: 32,
  OPTIONS: 64,
  TRACE: 128,
  CONNECT: 256,
});

interface MatchState {
  readonly q: RouteQuery;
  /**
   * The canonical path, walked by position (no split): a segment starts at `pos` and ends at the next
   * "/" or the end; the walk is past the last segment when `pos > path.length`.
   */
  readonly path: string;
  /** Where the first segment starts. */
  readonly start: number;
  /** The request method's bit (0 for a method outside METHOD_BITS, which then matches only routes without methods). */
  readonly methodBit: number;
  readonly captures: string[];
  allow: Set<string> | null;
  parsedQuery?: URLSearchParams;
}

/**
 * The best route of one host's trie. A route of only literal segments equal to the path outranks every
 * other pattern matching it (at any segment where they differ it has the literal), so the whole-path map
 * is asked first; when none of its routes accepts the request, the trie is walked.
 */
function search(root: Node, s: MatchState): CompiledRoute | null {
  const exact = root.exactPaths?.get(s.q.path);
  if (exact !== undefined) {
    const r = pick(exact, s);
    if (r !== null) return r;
  }
  return walk(root, s.start, s);
}

function walk(node: Node, pos: number, s: MatchState): CompiledRoute | null {
  const path = s.path;
  if (pos > path.length) return pick(node.end, s) ?? pick(node.rest, s);
  if (node.literal === null && node.wildcard === null) return pick(node.rest, s);
  let end = path.indexOf("/", pos);
  if (end < 0) end = path.length;
  const seg = path.slice(pos, end);
  const lit = node.onlyKey !== null ? (node.onlyKey === seg ? node.onlyChild : null) : node.literal?.get(seg);
  if (lit) {
    const r = walk(lit, end + 1, s);
    if (r) return r;
  }
  if (node.wildcard && seg !== "") {
    s.captures.push(seg);
    const r = walk(node.wildcard, end + 1, s);
    if (r) return r;
    s.captures.pop();
  }
  return pick(node.rest, s);
}

/** The first route of a node list (already in precedence order) whose conditions hold. */
function pick(list: readonly CompiledRoute[], s: MatchState): CompiledRoute | null {
  for (let i = 0; i < list.length; i++) {
    const r = list[i]!;
    if (r.conditionCount !== 0 && !conditionsHold(r, s)) continue;
    if (r.methodMask !== 0 && (r.methodMask & s.methodBit) === 0) {
      const allow = (s.allow ??= new Set());
      for (const m of r.methods!) allow.add(m);
      continue;
    }
    return r;
  }
  return null;
}

function conditionsHold(r: CompiledRoute, s: MatchState): boolean {
  for (const c of r.headers) if (!c.test(s.q.headers.header(c.name))) return false;
  if (r.query.length > 0) {
    const params = (s.parsedQuery ??= new URLSearchParams(s.q.query));
    for (const c of r.query) if (!c.test(params.get(c.name) ?? undefined)) return false;
  }
  return true;
}

function insert(root: Node, r: CompiledRoute, segments: Map<string, string>): void {
  const parsed = parsePathPattern(r.config.match.path);
  if (isPatternError(parsed)) throw new Error(`route ${r.name}: ${parsed.error}`);
  if (parsed.segments.every((seg) => seg.kind === "literal")) {
    const path = `/${parsed.segments.map((seg) => (seg.kind === "literal" ? seg.value : "")).join("/")}`;
    root.exactPaths ??= new Map();
    const list = root.exactPaths.get(path);
    if (list) list.push(r);
    else root.exactPaths.set(path, [r]);
  }
  let node = root;
  for (const seg of parsed.segments) {
    if (seg.kind === "rest") {
      node.rest.push(r);
      return;
    }
    if (seg.kind === "literal") {
      node.literal ??= new Map();
      // One string per distinct segment across the table: comparisons then read one shared copy.
      const key = intern(segments, seg.value);
      let next = node.literal.get(key);
      if (!next) node.literal.set(key, (next = newNode()));
      node = next;
    } else {
      node = node.wildcard ??= newNode();
    }
  }
  node.end.push(r);
}

function precedence(a: CompiledRoute, b: CompiledRoute): number {
  return (
    Number(b.methods !== null) - Number(a.methods !== null) ||
    b.headers.length + b.query.length - (a.headers.length + a.query.length) ||
    (a.name < b.name ? -1 : a.name > b.name ? 1 : 0)
  );
}

/** One string per distinct literal segment of a router: trie keys share it (built at compile time). */
function intern(table: Map<string, string>, value: string): string {
  const known = table.get(value);
  if (known !== undefined) return known;
  table.set(value, value);
  return value;
}

function sortTree(node: Node): void {
  if (node.literal !== null && node.literal.size === 1) {
    for (const [key, child] of node.literal) {
      node.onlyKey = key;
      node.onlyChild = child;
    }
  }
  if (node.exactPaths) for (const list of node.exactPaths.values()) list.sort(precedence);
  node.end.sort(precedence);
  node.rest.sort(precedence);
  if (node.literal) for (const child of node.literal.values()) sortTree(child);
  if (node.wildcard) sortTree(node.wildcard);
}

function compileCondition(c: GatewayRoute["match"]["headers"][number]): Condition {
  const name = c.name.toLowerCase();
  switch (c.kind) {
    case "exact": {
      const v = c.value ?? "";
      return { name, test: (x) => x === v };
    }
    case "prefix": {
      const v = c.value ?? "";
      return { name, test: (x) => x !== undefined && x.startsWith(v) };
    }
    case "regex": {
      // Full-match semantics (as Envoy's RE2 matchers): the whole value must match.
      const re = new RegExp(`^(?:${c.value ?? ""})$`);
      return { name, test: (x) => x !== undefined && re.test(x) };
    }
    case "present":
      return { name, test: (x) => x !== undefined };
    case "absent":
      return { name, test: (x) => x === undefined };
  }
}

function compileRoute(config: GatewayRoute): CompiledRoute {
  const parsed = parsePathPattern(config.match.path);
  if (isPatternError(parsed)) throw new Error(`route ${config.name}: ${parsed.error}`);
  const captureNames: (string | null)[] = [];
  for (const seg of parsed.segments) {
    if (seg.kind === "param") captureNames.push(seg.name);
    else if (seg.kind === "any") captureNames.push(null);
  }
  const action = config.action;
  const template =
    action.kind === "forward" && action.rewrite?.path ? compileTemplate(action.rewrite.path) : null;
  return {
    config,
    name: config.name,
    methods: config.match.methods.length > 0 ? new Set<HttpMethod>(config.match.methods) : null,
    methodMask: config.match.methods.reduce((mask, m) => mask | (METHOD_BITS[m] ?? 0), 0),
    conditionCount: config.match.headers.length + config.match.query.length,
    headers: config.match.headers.map(compileCondition),
    query: config.match.query.map(compileCondition),
    captureNames,
    captureCount: captureNames.length,
    source: config.match.path,
    rewrite:
      template === null
        ? null
        : template.map((part) => {
            if (typeof part === "string") return part;
            const index = captureNames.indexOf(part.param);
            if (index < 0)
              throw new Error(
                `route ${config.name}: rewrite uses {${part.param}}, which the path does not capture`,
              );
            return index;
          }),
    action,
    auth: config.auth,
    timeoutMs: config.timeoutMs,
    retry: config.retry,
    rewriteHost: action.kind === "forward" ? (action.rewrite?.host ?? null) : null,
  };
}

/** "/orders/{id}" → ["/orders/", { param: "id" }]: filled per request without parsing. */
export function compileTemplate(template: string): (string | { readonly param: string })[] {
  const parts: (string | { readonly param: string })[] = [];
  let last = 0;
  for (const m of template.matchAll(/\{([A-Za-z_][A-Za-z0-9_]*)\}/g)) {
    if (m.index > last) parts.push(template.slice(last, m.index));
    parts.push({ param: m[1]! });
    last = m.index + m[0].length;
  }
  if (last < template.length) parts.push(template.slice(last));
  return parts;
}
