/**
 * The compiled router: routes compiled once into a segment trie per host, so a lookup costs O(segments
 * of the path), independent of the number of routes. The tries are held in a few typed arrays (see "The
 * compact trie" below), so that a lookup among 10,000 routes touches few cache lines.
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
import { isPatternError, parsePathPattern, type PatternSegment } from "./pattern.ts";
import { compareCodeUnits } from "../contract/canonical.ts";
import { linearRegExp } from "./regex.ts";

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
   * The compiled rewrite path, when the route rewrites it (or the redirect path, for a redirect route):
   * literal parts, and numbers that index the captured segments — filled per request without a name lookup.
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

/** A trie node while the router is built; the finished router holds the compact tables instead. */
interface Draft {
  readonly literal: Map<string, Draft>;
  wildcard: Draft | null;
  /** Routes ending here exactly. */
  readonly end: CompiledRoute[];
  /** Routes ending here with `**` (zero or more further segments). */
  readonly rest: CompiledRoute[];
}

const draft = (): Draft => ({ literal: new Map(), wildcard: null, end: [], rest: [] });

// The compact trie. With thousands of routes a lookup's cost is its cache misses, so the trie is a few
// typed arrays instead of objects and Maps: node records of STRIDE ints in one Int32Array (numbered in
// pre-order, so a subtree is contiguous in memory; node 0 is unused, so 0 means "none"), the literal
// segments in one char pool, the literal children of wide nodes in one open-addressing hash table keyed
// by (parent, segment hash), and the route lists as ranges of one array in precedence order.
const STRIDE = 8;
/** The node's parent: a hash-table hit is the child when its parent and label are the ones sought. */
const PARENT = 0;
/** The node's label (the literal segment leading to it, or none): offset in the char pool, and length. */
const LABEL = 1;
const LABEL_LEN = 2;
/** The `*`/`{param}` child, or 0. */
const WILD = 3;
/** Routes ending here: list[END, REST); routes ending here with `**`: list[REST, REST_END). */
const END = 4;
const REST = 5;
const REST_END = 6;
/**
 * The literal children: 0 = none; -child = exactly one, compared inline (most nodes deep in a large
 * table have one); n > 0 = n children, found through the hash table.
 */
const KIDS = 7;

/**
 * A route-list entry's info word: the route's methodMask, HAS_CONDITIONS when it has header or query
 * conditions, and OTHER_METHODS when it names a method outside METHOD_BITS (only a config that bypassed
 * the contract can), so that the Allow set is then read from the route's `methods`.
 */
const HAS_CONDITIONS = 1 << 16;
const OTHER_METHODS = 1 << 17;
const METHOD_MASK = (1 << 16) - 1;

/** What a lookup reads, built once by the Router's constructor. */
interface Tables {
  readonly nodes: Int32Array;
  /** Literal segments, as UTF-16 code units (each distinct segment once). */
  readonly pool: Uint16Array;
  /** The hash table: pairs [segment hash, child node]; child 0 = empty slot. */
  readonly slots: Int32Array;
  /** Slot count - 1 (a power of two minus one). */
  readonly slotMask: number;
  /** The route lists of all nodes, each in precedence order. */
  readonly list: readonly CompiledRoute[];
  /** Per list entry: methodMask | HAS_CONDITIONS, so refusing a route needs no read of its object. */
  readonly info: Int32Array;
}

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
  readonly routes: readonly CompiledRoute[];
  readonly #tables: Tables;
  /** Root node by exact host. */
  readonly #exact = new Map<string, number>();
  /** Wildcard hosts by suffix (".example.com"), longest first. */
  readonly #wildcards: { readonly suffix: string; readonly root: number }[] = [];
  readonly #anyHost: number;

  constructor(routes: readonly GatewayRoute[]) {
    const shared = new Map<string, unknown>();
    const compiled = routes.map((r) => compileRoute(r, shared));
    this.routes = compiled;
    const anyHost = draft();
    const exact = new Map<string, Draft>();
    const wildcards = new Map<string, Draft>();
    for (const r of compiled) {
      const parsed = parsePathPattern(r.config.match.path);
      if (isPatternError(parsed)) throw new Error(`route ${r.name}: ${parsed.error}`);
      const hosts = r.config.match.hosts;
      if (hosts.length === 0) insert(anyHost, parsed.segments, r);
      for (const h of hosts) {
        const [table, key] = h.startsWith("*.") ? [wildcards, h.slice(1)] : [exact, h];
        let root = table.get(key);
        if (!root) table.set(key, (root = draft()));
        insert(root, parsed.segments, r);
      }
    }
    const suffixes = [...wildcards.keys()].sort((a, b) => b.length - a.length || compareCodeUnits(a, b));
    const b = new TableBuilder();
    this.#anyHost = b.add(anyHost);
    for (const [host, root] of exact) this.#exact.set(host, b.add(root));
    for (const suffix of suffixes) this.#wildcards.push({ suffix, root: b.add(wildcards.get(suffix)!) });
    this.#tables = b.finish();
  }

  /** Finds the route for a request on a canonical host (lower-case, no port). */
  match(host: string, q: RouteQuery): RouterResult {
    const s = new MatchState(this.#tables, q);
    const exact = this.#exact.get(host);
    let route = exact !== undefined ? walk(exact, s.start, s) : null;
    for (let i = 0; route === null && i < this.#wildcards.length; i++) {
      const w = this.#wildcards[i]!;
      if (host.endsWith(w.suffix) && host.length > w.suffix.length) route = walk(w.root, s.start, s);
    }
    route ??= walk(this.#anyHost, s.start, s);
    if (route) return { kind: "matched", route, captures: s.captures };
    if (s.allowMask !== 0 || s.allowOther !== null)
      return { kind: "method-not-allowed", allow: allowList(s.allowMask, s.allowOther) };
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

/** The METHOD_BITS methods in the Allow header's (code-unit) order. */
const ALLOW_ORDER: readonly (readonly [string, number])[] = Object.entries(METHOD_BITS).sort(([a], [b]) =>
  compareCodeUnits(a, b),
);

/** The sorted Allow list of a refusal: the methods of `mask`, and the other ones. */
function allowList(mask: number, other: ReadonlySet<string> | null): string[] {
  const allow: string[] = [];
  for (const [m, bit] of ALLOW_ORDER) if ((mask & bit) !== 0) allow.push(m);
  return other === null ? allow : [...new Set([...allow, ...other])].sort();
}

/** One lookup's state: the tables, the request facts and what the walk has collected. */
class MatchState {
  readonly t: Tables;
  readonly q: RouteQuery;
  /**
   * The canonical path, walked by position (no split): a segment starts at `pos` and ends at the next
   * "/" or the end; the walk is past the last segment when `pos > path.length`.
   */
  readonly path: string;
  /** Where the first segment starts: "/" has no segments (the walk starts past the end); "/a/" has two ("a" and ""). */
  readonly start: number;
  /** The request method's bit (0 for a method outside METHOD_BITS, which then matches only routes without methods). */
  readonly methodBit: number;
  readonly captures: string[] = [];
  /** The methods of the routes that matched the path but refused the method (METHOD_BITS). */
  allowMask = 0;
  /** Their methods outside METHOD_BITS, if any. */
  allowOther: Set<string> | null = null;
  parsedQuery: URLSearchParams | null = null;

  constructor(t: Tables, q: RouteQuery) {
    this.t = t;
    this.q = q;
    this.path = q.path;
    this.start = q.path === "/" ? 2 : 1;
    this.methodBit = METHOD_BITS[q.method] ?? 0;
  }
}

/**
 * The best route under node `n` for the path from `pos` on: depth first, the literal child before the
 * wildcard child before the node's `**` routes — which is the precedence order of the patterns.
 */
function walk(n: number, pos: number, s: MatchState): CompiledRoute | null {
  const nodes = s.t.nodes;
  const path = s.path;
  const at = n * STRIDE;
  if (pos > path.length) return pick(nodes[at + END]!, nodes[at + REST]!, s) ?? pickRest(at, s);
  const kids = nodes[at + KIDS]!;
  const wild = nodes[at + WILD]!;
  if (kids === 0 && wild === 0) return pickRest(at, s);
  let end = path.indexOf("/", pos);
  if (end < 0) end = path.length;
  const lit =
    kids < 0 ? (hasLabel(s, -kids, pos, end) ? -kids : 0) : kids > 0 ? findChild(s, n, pos, end) : 0;
  if (lit !== 0) {
    const r = walk(lit, end + 1, s);
    if (r) return r;
  }
  if (wild !== 0 && end !== pos) {
    s.captures.push(path.slice(pos, end));
    const r = walk(wild, end + 1, s);
    if (r) return r;
    s.captures.pop();
  }
  return pickRest(at, s);
}

const pickRest = (at: number, s: MatchState): CompiledRoute | null =>
  pick(s.t.nodes[at + REST]!, s.t.nodes[at + REST_END]!, s);

/** Is node `c`'s label the path's segment [pos, end)? */
function hasLabel(s: MatchState, c: number, pos: number, end: number): boolean {
  const at = c * STRIDE;
  if (s.t.nodes[at + LABEL_LEN] !== end - pos) return false;
  const pool = s.t.pool;
  const path = s.path;
  for (let i = s.t.nodes[at + LABEL]!, k = pos; k < end; i++, k++)
    if (pool[i] !== path.charCodeAt(k)) return false;
  return true;
}

/** The literal child of node `n` labelled with the path's segment [pos, end), or 0. */
function findChild(s: MatchState, n: number, pos: number, end: number): number {
  const h = segmentHash(s.path, pos, end);
  const slots = s.t.slots;
  const mask = s.t.slotMask;
  for (let i = slotOf(h, n, mask); ; i = (i + 1) & mask) {
    const c = slots[2 * i + 1]!;
    if (c === 0) return 0;
    if (slots[2 * i] === h && s.t.nodes[c * STRIDE + PARENT] === n && hasLabel(s, c, pos, end)) return c;
  }
}

/**
 * FNV-1a over the UTF-16 code units of text[from, to), with a final avalanche so that the low bits (the
 * hash table's index) depend on every unit. Exported for the tests (to build colliding segments).
 */
export function segmentHash(text: string, from: number, to: number): number {
  let h = 0x811c9dc5;
  for (let k = from; k < to; k++) h = Math.imul(h ^ text.charCodeAt(k), 0x01000193);
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  return h ^ (h >>> 13);
}

/** A segment's first slot under parent `n`. */
const slotOf = (h: number, n: number, mask: number): number => (h ^ Math.imul(n, 0x9e3779b1)) & mask;

/** The first route of list[from, to) (in precedence order) whose conditions and method hold. */
function pick(from: number, to: number, s: MatchState): CompiledRoute | null {
  for (let i = from; i < to; i++) {
    const info = s.t.info[i]!;
    if ((info & HAS_CONDITIONS) !== 0 && !conditionsHold(s.t.list[i]!, s)) continue;
    const mask = info & METHOD_MASK;
    if (mask !== 0 && (mask & s.methodBit) === 0) {
      // The Allow set is collected as bits: a refusal reads no route object.
      s.allowMask |= mask;
      if ((info & OTHER_METHODS) !== 0) {
        const other = (s.allowOther ??= new Set());
        for (const m of s.t.list[i]!.methods!) if (METHOD_BITS[m] === undefined) other.add(m);
      }
      continue;
    }
    return s.t.list[i]!;
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

function insert(root: Draft, segments: readonly PatternSegment[], r: CompiledRoute): void {
  let node = root;
  for (const seg of segments) {
    if (seg.kind === "rest") {
      node.rest.push(r);
      return;
    }
    if (seg.kind === "literal") {
      let next = node.literal.get(seg.value);
      if (!next) node.literal.set(seg.value, (next = draft()));
      node = next;
    } else {
      node = node.wildcard ??= draft();
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

/** Flattens draft tries into the compact tables (each trie's nodes in pre-order). */
class TableBuilder {
  readonly #nodes: number[] = Array<number>(STRIDE).fill(0); // node 0: unused
  readonly #pool: number[] = [];
  readonly #labels = new Map<string, number>();
  readonly #list: CompiledRoute[] = [];
  /** Children that go into the hash table: [parent, label, child]. */
  readonly #hashed: [number, string, number][] = [];

  /** Adds one trie; returns its root node. */
  add(root: Draft): number {
    return this.#node(root, 0, null);
  }

  #node(d: Draft, parent: number, label: string | null): number {
    const id = this.#nodes.length / STRIDE;
    const at = this.#nodes.length;
    for (let i = 0; i < STRIDE; i++) this.#nodes.push(0);
    const nodes = this.#nodes;
    nodes[at + PARENT] = parent;
    if (label !== null) {
      let offset = this.#labels.get(label);
      if (offset === undefined) {
        offset = this.#pool.length;
        this.#labels.set(label, offset);
        for (let k = 0; k < label.length; k++) this.#pool.push(label.charCodeAt(k));
      }
      nodes[at + LABEL] = offset;
      nodes[at + LABEL_LEN] = label.length;
    }
    nodes[at + END] = this.#list.length;
    for (const r of d.end.sort(precedence)) this.#list.push(r);
    nodes[at + REST] = this.#list.length;
    for (const r of d.rest.sort(precedence)) this.#list.push(r);
    nodes[at + REST_END] = this.#list.length;
    for (const [segment, child] of d.literal) {
      const c = this.#node(child, id, segment);
      if (d.literal.size > 1) this.#hashed.push([id, segment, c]);
      else nodes[at + KIDS] = -c;
    }
    if (d.literal.size > 1) nodes[at + KIDS] = d.literal.size;
    if (d.wildcard) nodes[at + WILD] = this.#node(d.wildcard, id, null);
    return id;
  }

  finish(): Tables {
    let size = 2;
    while (size < this.#hashed.length * 2) size *= 2;
    const slots = new Int32Array(2 * size);
    const mask = size - 1;
    for (const [parent, label, child] of this.#hashed) {
      const h = segmentHash(label, 0, label.length);
      let i = slotOf(h, parent, mask);
      while (slots[2 * i + 1] !== 0) i = (i + 1) & mask;
      slots[2 * i] = h;
      slots[2 * i + 1] = child;
    }
    const list = this.#list;
    return {
      nodes: Int32Array.from(this.#nodes),
      pool: Uint16Array.from(this.#pool),
      slots,
      slotMask: mask,
      list,
      info: Int32Array.from(
        list,
        (r) =>
          r.methodMask |
          (r.conditionCount > 0 ? HAS_CONDITIONS : 0) |
          (r.methods !== null && [...r.methods].some((m) => METHOD_BITS[m] === undefined)
            ? OTHER_METHODS
            : 0),
      ),
    };
  }
}

/**
 * A header condition's name is compared lower-case (header names are case-insensitive, and the header
 * source is keyed by lower-case names); a query parameter's name as written (`apiVersion` and
 * `apiversion` are two parameters to the upstream).
 */
function compileCondition(c: GatewayRoute["match"]["headers"][number], header: boolean): Condition {
  const name = header ? c.name.toLowerCase() : c.name;
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
      // Full-match semantics (as Envoy's RE2 matchers): the whole value must match, in linear time.
      const re = linearRegExp(`^(?:${c.value ?? ""})$`);
      return { name, test: (x) => x !== undefined && re.test(x) };
    }
    case "present":
      return { name, test: (x) => x !== undefined };
    case "absent":
      return { name, test: (x) => x === undefined };
  }
}

/** No header or query conditions (one array for every such route). */
const NO_CONDITIONS: readonly Condition[] = [];

/**
 * One object for equal read-only parts of a router's routes (method sets, capture names, rewrite
 * templates): thousands of routes then hold a few such objects, and a lookup touches less memory.
 */
function sharedValue<T>(shared: Map<string, unknown>, key: string, value: T): T {
  const known = shared.get(key);
  if (known !== undefined) return known as T;
  shared.set(key, value);
  return value;
}

function compileRoute(config: GatewayRoute, shared: Map<string, unknown>): CompiledRoute {
  const parsed = parsePathPattern(config.match.path);
  if (isPatternError(parsed)) throw new Error(`route ${config.name}: ${parsed.error}`);
  const captureNames: (string | null)[] = [];
  for (const seg of parsed.segments) {
    if (seg.kind === "param") captureNames.push(seg.name);
    else if (seg.kind === "any") captureNames.push(null);
  }
  const action = config.action;
  // The path a forward sends (rewrite.path) or a redirect points to (redirect.path): both may use {params}.
  const path =
    action.kind === "forward"
      ? (action.rewrite?.path ?? null)
      : action.kind === "redirect"
        ? action.path
        : null;
  const template = path ? compileTemplate(path) : null;
  const rewrite =
    template === null
      ? null
      : template.map((part) => {
          if (typeof part === "string") return part;
          const index = captureNames.indexOf(part.param);
          if (index < 0)
            throw new Error(
              `route ${config.name}: ${action.kind} uses {${part.param}}, which the path does not capture`,
            );
          return index;
        });
  const methods = config.match.methods;
  return {
    config,
    name: config.name,
    methods:
      methods.length > 0
        ? sharedValue(shared, `methods ${JSON.stringify(methods)}`, new Set<HttpMethod>(methods))
        : null,
    methodMask: methods.reduce((mask, m) => mask | (METHOD_BITS[m] ?? 0), 0),
    conditionCount: config.match.headers.length + config.match.query.length,
    headers:
      config.match.headers.length > 0
        ? config.match.headers.map((c) => compileCondition(c, true))
        : NO_CONDITIONS,
    query:
      config.match.query.length > 0
        ? config.match.query.map((c) => compileCondition(c, false))
        : NO_CONDITIONS,
    captureNames: sharedValue(shared, `captures ${JSON.stringify(captureNames)}`, captureNames),
    captureCount: captureNames.length,
    source: config.match.path,
    rewrite: rewrite && sharedValue(shared, `rewrite ${JSON.stringify(rewrite)}`, rewrite),
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
