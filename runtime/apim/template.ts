/**
 * The template language of transforms, and the dotted field paths of JSON body operations.
 *
 * A template is text with `${…}` placeholders; `$${` writes a literal `${`. A placeholder names one
 * variable — there are no expressions, filters, function calls or property lookups beyond the fixed
 * grammar below, so a template can never execute code:
 *
 *   ${params.<name>}              a path parameter captured by the route's match.path
 *   ${request.method} ${request.path} ${request.host} ${request.id}
 *   ${request.header.<name>}      the first value of a request header (lower-case name)
 *   ${request.query.<name>}       the first value of a query parameter
 *   ${client.ip}                  the client address (trusted-hop aware)
 *   ${principal.subject} ${principal.consumer}
 *   ${principal.claims.<a.b.c>}   a claim of the authenticated principal, by dotted path
 *
 * Templates are compiled once per route; rendering walks the compiled parts. A variable without a value
 * (an absent header, no principal, a missing claim) makes the whole template render to `undefined`, and
 * the operation that uses it is skipped. Paths refuse `__proto__`, `constructor` and `prototype`, and
 * lookups read own properties only, so neither a template nor a body operation can reach or pollute an
 * object prototype.
 *
 * Pure: no I/O, no clock, no randomness (the spec layer reuses it to validate templates before deploy).
 */

/** Path segments that would reach an object's prototype machinery: refused everywhere. */
const FORBIDDEN_SEGMENTS: ReadonlySet<string> = new Set(["__proto__", "constructor", "prototype"]);
/** Longest dotted path accepted (segments). */
export const MAX_PATH_DEPTH = 32;

/** A dotted path into a JSON object, as validated segments. */
export type FieldPath = readonly string[];

export type ParseResult<T> =
  { readonly ok: true; readonly value: T } | { readonly ok: false; readonly error: string };

const fail = (error: string): { ok: false; error: string } => ({ ok: false, error });

/**
 * Parses a dotted JSON field path (`customer.address.city`). Segments are object keys: non-empty, no
 * `.`, none of `__proto__`/`constructor`/`prototype`, at most MAX_PATH_DEPTH of them.
 */
export function parseFieldPath(path: string): ParseResult<FieldPath> {
  if (path.length === 0) return fail("empty field path");
  const segments = path.split(".");
  if (segments.length > MAX_PATH_DEPTH)
    return fail(`field path "${path}" is deeper than ${MAX_PATH_DEPTH} levels`);
  for (const seg of segments) {
    if (seg.length === 0) return fail(`field path "${path}" has an empty segment`);
    if (FORBIDDEN_SEGMENTS.has(seg)) return fail(`field path "${path}" uses the forbidden segment "${seg}"`);
  }
  return { ok: true, value: segments };
}

/** The value of `name` on `obj` when it is an own property of a plain object, else undefined. */
export function ownValue(obj: unknown, name: string): unknown {
  if (obj === null || typeof obj !== "object" || Array.isArray(obj)) return undefined;
  return Object.hasOwn(obj, name) ? (obj as Record<string, unknown>)[name] : undefined;
}

/** The value at a dotted path, reading own properties of plain objects only. */
export function getPath(root: unknown, path: FieldPath): unknown {
  let cur = root;
  for (let i = 0; i < path.length; i++) {
    cur = ownValue(cur, path[i]!);
    if (cur === undefined) return undefined;
  }
  return cur;
}

// ───────────── templates ─────────────

/** Where a placeholder reads its value. */
export type TemplateVar =
  | { readonly kind: "param"; readonly name: string }
  | { readonly kind: "method" | "path" | "host" | "requestId" | "clientIp" | "subject" | "consumer" }
  | { readonly kind: "header"; readonly name: string }
  | { readonly kind: "query"; readonly name: string }
  | { readonly kind: "claim"; readonly path: FieldPath };

export type TemplatePart = string | TemplateVar;

/** A compiled template: literal strings and variables, in order. */
export interface Template {
  readonly source: string;
  readonly parts: readonly TemplatePart[];
  /** The single variable when the template is exactly one placeholder (body templates keep its JSON type). */
  readonly whole: TemplateVar | null;
  /** True when no part is a variable. */
  readonly constant: boolean;
}

/** What a compiled template may reference: the route's captured path parameters. */
export interface TemplateScope {
  readonly params: readonly string[];
}

const PARAM_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;
const HEADER_NAME = /^[a-z0-9!#$%&'*+^_`|~-]+$/;
const QUERY_NAME = /^[A-Za-z0-9._~-]+$/;
const CLAIM_SEGMENT = /^[A-Za-z0-9_$:-]+$/;
const SIMPLE: Readonly<Record<string, TemplateVar["kind"]>> = {
  "request.method": "method",
  "request.path": "path",
  "request.host": "host",
  "request.id": "requestId",
  "client.ip": "clientIp",
  "principal.subject": "subject",
  "principal.consumer": "consumer",
};

function compileVar(expr: string, scope: TemplateScope): ParseResult<TemplateVar> {
  const simple = SIMPLE[expr];
  if (simple !== undefined && Object.hasOwn(SIMPLE, expr))
    return { ok: true, value: { kind: simple } as TemplateVar };
  const prefixed = (prefix: string) => (expr.startsWith(prefix) ? expr.slice(prefix.length) : null);
  const param = prefixed("params.");
  if (param !== null) {
    if (!PARAM_NAME.test(param)) return fail(`"\${${expr}}": not a parameter name`);
    if (!scope.params.includes(param)) {
      return fail(
        `"\${${expr}}": match.path captures ${scope.params.length ? scope.params.map((p) => `{${p}}`).join(", ") : "no parameters"}`,
      );
    }
    return { ok: true, value: { kind: "param", name: param } };
  }
  const header = prefixed("request.header.");
  if (header !== null) {
    if (!HEADER_NAME.test(header)) return fail(`"\${${expr}}": not a lower-case header name`);
    return { ok: true, value: { kind: "header", name: header } };
  }
  const query = prefixed("request.query.");
  if (query !== null) {
    if (!QUERY_NAME.test(query)) return fail(`"\${${expr}}": not a query parameter name`);
    return { ok: true, value: { kind: "query", name: query } };
  }
  const claim = prefixed("principal.claims.");
  if (claim !== null) {
    const path = parseFieldPath(claim);
    if (!path.ok) return fail(`"\${${expr}}": ${path.error}`);
    if (!path.value.every((s) => CLAIM_SEGMENT.test(s)))
      return fail(`"\${${expr}}": claim names are letters, digits, "_", "$", ":" and "-"`);
    return { ok: true, value: { kind: "claim", path: path.value } };
  }
  return fail(
    `"\${${expr}}" is not a template variable (use params.<name>, request.method|path|host|id, request.header.<name>, request.query.<name>, client.ip, principal.subject|consumer|claims.<path>)`,
  );
}

/** Compiles a template once; errors name the placeholder and what is allowed. */
export function compileTemplate(source: string, scope: TemplateScope): ParseResult<Template> {
  const parts: TemplatePart[] = [];
  let text = "";
  let i = 0;
  while (i < source.length) {
    const dollar = source.indexOf("$", i);
    if (dollar < 0) {
      text += source.slice(i);
      break;
    }
    text += source.slice(i, dollar);
    if (source.startsWith("$${", dollar)) {
      text += "${";
      i = dollar + 3;
      continue;
    }
    if (!source.startsWith("${", dollar)) {
      text += "$";
      i = dollar + 1;
      continue;
    }
    const close = source.indexOf("}", dollar + 2);
    if (close < 0) return fail(`unclosed "\${" at offset ${dollar} (write $\${ for a literal "\${")`);
    const v = compileVar(source.slice(dollar + 2, close), scope);
    if (!v.ok) return v;
    if (text) parts.push(text);
    text = "";
    parts.push(v.value);
    i = close + 1;
  }
  if (text) parts.push(text);
  const vars = parts.filter((p): p is TemplateVar => typeof p !== "string");
  return {
    ok: true,
    value: {
      source,
      parts,
      whole: parts.length === 1 && vars.length === 1 ? vars[0]! : null,
      constant: vars.length === 0,
    },
  };
}

/** The authenticated caller, as far as templates see it (filled by authentication). */
export interface TemplatePrincipal {
  readonly subject?: string;
  readonly consumer?: string | null;
  readonly claims?: Readonly<Record<string, unknown>>;
}

/** The request facts a template reads. */
export interface TemplateContext {
  readonly params: Readonly<Record<string, string>>;
  readonly method: string;
  /** The canonical path. */
  readonly path: string;
  readonly host: string;
  /** The raw query string (without "?"). */
  readonly query: string;
  readonly requestId: string;
  readonly clientIp: string;
  /** First value of a request header by lower-case name. */
  readonly header: (name: string) => string | undefined;
  readonly principal: TemplatePrincipal | null;
}

/** The raw value of a variable: a string, a claim's JSON value, or undefined when it has none. */
export function variableValue(v: TemplateVar, ctx: TemplateContext): unknown {
  switch (v.kind) {
    case "param":
      return Object.hasOwn(ctx.params, v.name) ? ctx.params[v.name] : undefined;
    case "method":
      return ctx.method;
    case "path":
      return ctx.path;
    case "host":
      return ctx.host;
    case "requestId":
      return ctx.requestId;
    case "clientIp":
      return ctx.clientIp;
    case "subject":
      return ctx.principal?.subject;
    case "consumer":
      return ctx.principal?.consumer ?? undefined;
    case "header":
      return ctx.header(v.name);
    case "query":
      return ctx.query ? (new URLSearchParams(ctx.query).get(v.name) ?? undefined) : undefined;
    case "claim":
      return ctx.principal?.claims ? getPath(ctx.principal.claims, v.path) : undefined;
  }
}

function asText(value: unknown): string | undefined {
  if (value === undefined || value === null) return undefined;
  if (typeof value === "string") return value;
  if (typeof value === "number" || typeof value === "boolean") return String(value);
  return JSON.stringify(value);
}

/** Renders a template to text, or undefined when a variable has no value (the operation is skipped). */
export function renderTemplate(t: Template, ctx: TemplateContext): string | undefined {
  if (t.constant) return t.parts.length === 0 ? "" : (t.parts[0] as string);
  let out = "";
  for (let i = 0; i < t.parts.length; i++) {
    const p = t.parts[i]!;
    if (typeof p === "string") out += p;
    else {
      const s = asText(variableValue(p, ctx));
      if (s === undefined) return undefined;
      out += s;
    }
  }
  return out;
}

/**
 * Renders a template as a JSON value: a template that is exactly one placeholder keeps the variable's
 * JSON type (a claim that is a list stays a list); any other renders to a string. An object or a list is a
 * copy: the body it lands in is the request's own (a later op may write into it), the variable's value
 * (a principal's claims, shared by every request of that principal) is not.
 */
export function renderTemplateValue(t: Template, ctx: TemplateContext): unknown {
  if (t.whole !== null) {
    const v = variableValue(t.whole, ctx);
    return v === null ? undefined : typeof v === "object" ? structuredClone(v) : v;
  }
  return renderTemplate(t, ctx);
}
