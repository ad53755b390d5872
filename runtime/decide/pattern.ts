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
