/**
 * Set relations between path patterns (the grammar of runtime/decide/pattern.ts), and whether a callee's
 * allow rules admit a set of requests. Patterns are compared segment by segment: a literal matches itself,
 * `*` and `{param}` one non-empty segment, a trailing `**` zero or more segments.
 *
 * These answer "does rule R admit every request of route Q" structurally. A later round refines the
 * mesh layer with the sidecar's own decision code (runtime/decide/inbound.ts); the functions here are the
 * static approximation, conservative where they cannot be exact (a request set covered only by the
 * union of several rules reads as partly admitted).
 */
import type { AuthzRule, HttpMethod } from "../runtime/contract/schema.ts";
import { HTTP_METHODS } from "../runtime/contract/schema.ts";
import { isPatternError, parsePathPattern, type PatternSegment } from "../runtime/decide/pattern.ts";

const cache = new Map<string, readonly PatternSegment[] | null>();

/** The segments of a pattern (cached), or null when it does not parse. */
export function segmentsOf(pattern: string): readonly PatternSegment[] | null {
  let s = cache.get(pattern);
  if (s === undefined) {
    const parsed = parsePathPattern(pattern);
    s = isPatternError(parsed) ? null : parsed.segments;
    if (cache.size > 100_000) cache.clear();
    cache.set(pattern, s);
  }
  return s;
}

/** Does every path `inner` matches also match `outer`? */
export function patternContains(outer: string, inner: string): boolean {
  if (outer === inner) return true;
  const o = segmentsOf(outer);
  const i = segmentsOf(inner);
  return o !== null && i !== null && contains(o, i, 0, 0);
}

function contains(o: readonly PatternSegment[], i: readonly PatternSegment[], a: number, b: number): boolean {
  for (;;) {
    if (a === o.length) return b === i.length;
    const os = o[a]!;
    if (os.kind === "rest") return true;
    if (b === i.length) return false;
    const is = i[b]!;
    if (is.kind === "rest") return false; // inner also matches the path that ends here; outer needs more
    if (os.kind === "literal" && (is.kind !== "literal" || is.value !== os.value)) return false;
    a++;
    b++;
  }
}

/** Is there a path both patterns match? */
export function patternsOverlap(x: string, y: string): boolean {
  if (x === y) return true;
  const xs = segmentsOf(x);
  const ys = segmentsOf(y);
  if (xs === null || ys === null) return false;
  let a = 0;
  let b = 0;
  for (;;) {
    if (a === xs.length && b === ys.length) return true;
    if (a < xs.length && xs[a]!.kind === "rest") return true;
    if (b < ys.length && ys[b]!.kind === "rest") return true;
    if (a === xs.length || b === ys.length) return false;
    const p = xs[a]!;
    const q = ys[b]!;
    if (p.kind === "literal" && q.kind === "literal" && p.value !== q.value) return false;
    a++;
    b++;
  }
}

/** The pattern with every `{param}` written as `*` (they match the same paths). */
export function normalizePattern(pattern: string): string {
  return pattern.replace(/\{[A-Za-z_][A-Za-z0-9_]*\}/g, "*");
}

/** A request set: methods (empty = every method) on the paths a pattern matches. */
export interface RequestSet {
  methods: readonly HttpMethod[];
  path: string;
}

export type Admission = "all" | "some" | "none";

/**
 * Whether the allow rules admit the requests of `set` from the peer `peerId` (a SPIFFE ID): all of them,
 * some, or none. Rules with no methods admit every method; rules with no paths every path.
 */
export function admission(rules: readonly AuthzRule[], peerId: string, set: RequestSet): Admission {
  const mine = rules.filter((r) => r.from.includes(peerId));
  if (mine.length === 0) return "none";
  const methods = set.methods.length > 0 ? set.methods : HTTP_METHODS;
  let covered = 0;
  let touched = 0;
  for (const m of methods) {
    let c = false;
    let t = false;
    for (const r of mine) {
      if (r.methods.length > 0 && !r.methods.includes(m)) continue;
      if (r.paths.length === 0) {
        c = t = true;
        break;
      }
      for (const p of r.paths) {
        if (patternContains(p, set.path)) {
          c = t = true;
          break;
        }
        if (patternsOverlap(p, set.path)) t = true;
      }
      if (c) break;
    }
    if (c) covered++;
    if (t) touched++;
  }
  return covered === methods.length ? "all" : touched === 0 ? "none" : "some";
}

/** "GET, HEAD /orders/*" style summary of a request set. */
export function describeSet(set: RequestSet): string {
  return `${set.methods.length > 0 ? set.methods.join(", ") : "any method"} ${set.path}`;
}
