/**
 * Path patterns, shared by gateway routes, service allow rules and per-route policies.
 *
 *   /orders            exact
 *   /orders/*          `*`: exactly one segment
 *   /orders/{id}       `{name}`: exactly one segment, captured for rewrites
 *   /static/**         `**`: zero or more segments; only as the last segment
 *
 * Patterns are checked once (at translate and at config load); literal segments may only hold RFC 3986
 * unreserved characters and a few sub-delims, so a pattern can never depend on how a request path is
 * percent-encoded or dot-normalized: it is compared with the canonical path only.
 */

export type PatternSegment =
  | { readonly kind: "literal"; readonly value: string }
  | { readonly kind: "any" }
  | { readonly kind: "param"; readonly name: string }
  | { readonly kind: "rest" };

export interface PathPattern {
  readonly source: string;
  readonly segments: readonly PatternSegment[];
  readonly params: readonly string[];
}

const LITERAL = /^[A-Za-z0-9\-._~!$&'()+,=:@]+$/;
const PARAM = /^\{([A-Za-z_][A-Za-z0-9_]*)\}$/;

/** Parses a pattern, or returns the reason it is malformed (with how to fix it). */
export function parsePathPattern(source: string): PathPattern | { error: string } {
  if (typeof source !== "string" || !source.startsWith("/")) {
    return { error: `path pattern ${JSON.stringify(source)} must start with "/"` };
  }
  if (source === "/") return { source, segments: [], params: [] };
  if (/[?#%\\\s]/.test(source)) {
    return { error: `path pattern ${JSON.stringify(source)} must not contain "?", "#", "%", "\\" or spaces` };
  }
  const parts = source.slice(1).split("/");
  const segments: PatternSegment[] = [];
  const params: string[] = [];
  for (let i = 0; i < parts.length; i++) {
    const part = parts[i]!;
    if (part === "") {
      return {
        error:
          i === parts.length - 1
            ? `path pattern ${JSON.stringify(source)} ends with "/": write "${source.slice(0, -1)}" or "${source}**"`
            : `path pattern ${JSON.stringify(source)} has an empty segment ("//")`,
      };
    }
    if (part === "." || part === "..") {
      return { error: `path pattern ${JSON.stringify(source)} has a "${part}" segment` };
    }
    if (part === "**") {
      if (i !== parts.length - 1)
        return { error: `"**" must be the last segment of ${JSON.stringify(source)}` };
      segments.push({ kind: "rest" });
      continue;
    }
    if (part === "*") {
      segments.push({ kind: "any" });
      continue;
    }
    const param = PARAM.exec(part);
    if (param) {
      const name = param[1]!;
      if (params.includes(name))
        return { error: `parameter {${name}} appears twice in ${JSON.stringify(source)}` };
      params.push(name);
      segments.push({ kind: "param", name });
      continue;
    }
    if (!LITERAL.test(part)) {
      return {
        error: `segment ${JSON.stringify(part)} of ${JSON.stringify(source)} may only use letters, digits and -._~!$&'()+,=:@ (or be *, **, {name})`,
      };
    }
    segments.push({ kind: "literal", value: part });
  }
  return { source, segments, params };
}

export function isPatternError(p: PathPattern | { error: string }): p is { error: string } {
  return "error" in p;
}

/**
 * Does a canonical path match the pattern? The router's semantics for one pattern: a literal matches
 * that exact segment, `*` / `{name}` one non-empty segment, a trailing `**` zero or more segments (empty
 * ones included); "/" has no segments, "/a/" has two ("a" and ""). Used by the sidecar's inbound
 * authorization and its per-route policies; a property test checks it against the Router.
 */
export function matchPath(pattern: PathPattern, path: string): boolean {
  const segments = pattern.segments;
  // Segments are walked by position (no split): one starts at `pos` and ends at the next "/" or the end.
  let pos = path === "/" ? 2 : 1;
  for (let i = 0; i < segments.length; i++) {
    const s = segments[i]!;
    if (s.kind === "rest") return true;
    if (pos > path.length) return false;
    let end = path.indexOf("/", pos);
    if (end < 0) end = path.length;
    if (s.kind === "literal") {
      if (end - pos !== s.value.length || !path.startsWith(s.value, pos)) return false;
    } else if (end === pos) return false;
    pos = end + 1;
  }
  return pos > path.length;
}

/** Rank of a pattern position: lower is more specific (literal, one segment, end of pattern, `**`). */
function rankAt(p: PathPattern, i: number): number {
  const s = p.segments[i];
  if (s === undefined) return 2;
  return s.kind === "literal" ? 0 : s.kind === "rest" ? 3 : 1;
}

/**
 * Orders two patterns by specificity as the router does: at the first position where they differ, a
 * literal beats `*`/`{name}`, which beats the pattern's end, which beats `**`. Negative when `a` is more
 * specific. Among the patterns that match one path, the first in this order is the router's choice.
 */
export function comparePatterns(a: PathPattern, b: PathPattern): number {
  const n = Math.max(a.segments.length, b.segments.length);
  for (let i = 0; i < n; i++) {
    const d = rankAt(a, i) - rankAt(b, i);
    if (d !== 0) return d;
    if (rankAt(a, i) >= 2) break;
  }
  return 0;
}
