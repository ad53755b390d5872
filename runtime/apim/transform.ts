/**
 * Route transforms: header operations (remove → set → add) and JSON body operations (drop → rename →
 * set → template) on requests and responses, compiled once per route.
 *
 * - Header names that are hop-by-hop, gateway-owned (`x-forwarded-*`, `x-request-id`, `x-meshgate-*`,
 *   the principal headers of `forwardClaims`), `content-length` or `host` are refused at compile time —
 *   the spec refuses them first, this is the runtime's own guard (a hand-written config fails to load).
 * - Body operations apply to `application/json` and `+json` bodies whose top-level value is an object;
 *   other JSON values pass unchanged. Intermediate objects are created by set/rename/template; an
 *   intermediate that exists and is not an object skips the operation (never replaced).
 * - Literal `set` values are cloned per request, so no request can alter the config's copy.
 */
import { deepFreeze } from "../contract/canonical.ts";
import { isRawJson, parseJsonExact, utf8Text } from "./body.ts";
import type { GatewayRoute } from "../contract/schema.ts";
import { reservedHeader } from "../gateway/headers.ts";
import {
  compileTemplate,
  parseFieldPath,
  renderTemplate,
  renderTemplateValue,
  type FieldPath,
  type Template,
  type TemplateContext,
  type TemplateScope,
} from "./template.ts";

type TransformConfig = NonNullable<GatewayRoute["transform"]["request"]>;

export interface CompiledHeaderOps {
  readonly remove: readonly string[];
  readonly set: readonly (readonly [string, Template])[];
  readonly add: readonly (readonly [string, Template])[];
  /** Some value is not constant: a TemplateContext is needed to apply them. */
  readonly usesContext: boolean;
}

export interface CompiledBodyOps {
  readonly drop: readonly FieldPath[];
  readonly rename: readonly (readonly [FieldPath, FieldPath])[];
  readonly set: readonly (readonly [FieldPath, unknown])[];
  readonly template: readonly (readonly [FieldPath, Template])[];
}

export interface CompiledTransform {
  /** null when there is no header operation. */
  readonly headers: CompiledHeaderOps | null;
  /** null when the body passes untouched (and streams). */
  readonly body: CompiledBodyOps | null;
}

/** A transform that cannot be compiled: the config is refused whole. */
export class TransformCompileError extends Error {
  readonly code = "E_RT_TRANSFORM";
  /** Where in the route (`transform.request.headers.set.x-forwarded-for`). */
  readonly field: string;
  constructor(field: string, message: string) {
    super(`${field}: ${message}`);
    this.field = field;
  }
}

export interface TransformCompileOptions {
  /** The route's captured path parameters (what `${params.x}` may name). */
  readonly params: readonly string[];
  /** Extra header names the gateway owns (the principal headers from jwt forwardClaims). */
  readonly ownedHeaders?: ReadonlySet<string>;
}

/**
 * Compiles one direction of a route's transform. Throws TransformCompileError naming the field.
 * Returns null when there is nothing to do.
 */
export function compileTransform(
  t: TransformConfig | null,
  where: string,
  options: TransformCompileOptions,
): CompiledTransform | null {
  if (t === null) return null;
  const scope: TemplateScope = { params: options.params };
  const headerName = (name: string, field: string): string => {
    const n = name.toLowerCase();
    const reason = reservedHeader(n) ?? (options.ownedHeaders?.has(n) ? "a principal header" : null);
    if (reason !== null)
      throw new TransformCompileError(field, `header ${n} cannot be changed: it is ${reason}`);
    return n;
  };
  const template = (source: string, field: string): Template => {
    const r = compileTemplate(source, scope);
    if (!r.ok) throw new TransformCompileError(field, r.error);
    return r.value;
  };
  const fieldPath = (path: string, field: string): FieldPath => {
    const r = parseFieldPath(path);
    if (!r.ok) throw new TransformCompileError(field, r.error);
    return r.value;
  };

  const h = t.headers;
  let headers: CompiledHeaderOps | null = null;
  if (h.remove.length + Object.keys(h.set).length + Object.keys(h.add).length > 0) {
    const remove = h.remove.map((n) => headerName(n, `${where}.headers.remove`));
    const set = Object.entries(h.set).map(
      ([n, v]) =>
        [headerName(n, `${where}.headers.set.${n}`), template(v, `${where}.headers.set.${n}`)] as const,
    );
    const add = Object.entries(h.add).map(
      ([n, v]) =>
        [headerName(n, `${where}.headers.add.${n}`), template(v, `${where}.headers.add.${n}`)] as const,
    );
    headers = {
      remove,
      set,
      add,
      usesContext: [...set, ...add].some(([, tpl]) => !tpl.constant),
    };
  }

  let body: CompiledBodyOps | null = null;
  if (t.body !== null) {
    const b = t.body;
    body = {
      drop: b.drop.map((p) => fieldPath(p, `${where}.body.drop`)),
      rename: Object.entries(b.rename).map(
        ([from, to]) =>
          [fieldPath(from, `${where}.body.rename`), fieldPath(to, `${where}.body.rename.${from}`)] as const,
      ),
      set: Object.entries(b.set).map(
        ([p, v]) => [fieldPath(p, `${where}.body.set`), deepFreeze(structuredClone(v))] as const,
      ),
      template: Object.entries(b.template).map(
        ([p, v]) =>
          [fieldPath(p, `${where}.body.template`), template(v, `${where}.body.template.${p}`)] as const,
      ),
    };
  }
  if (headers === null && body === null) return null;
  return { headers, body };
}

/** Header values as node:http keeps them. */
export type HeaderBag = Record<string, string | string[] | number | undefined>;

/**
 * Applies header operations in place: remove, then set (replace), then add (append a value). A template
 * with a missing variable skips its operation. `ctx` may be null when `ops.usesContext` is false.
 */
export function applyHeaderOps(
  ops: CompiledHeaderOps,
  headers: HeaderBag,
  ctx: TemplateContext | null,
): void {
  for (let i = 0; i < ops.remove.length; i++) {
    const name = ops.remove[i]!;
    if (name in headers) delete headers[name]; // a delete makes the object a slow dictionary: only when present
  }
  for (let i = 0; i < ops.set.length; i++) {
    const [name, tpl] = ops.set[i]!;
    const v = ctx === null ? (tpl.constant ? renderConstant(tpl) : undefined) : renderTemplate(tpl, ctx);
    if (v !== undefined && isHeaderValue(v)) headers[name] = v;
  }
  for (let i = 0; i < ops.add.length; i++) {
    const [name, tpl] = ops.add[i]!;
    const v = ctx === null ? (tpl.constant ? renderConstant(tpl) : undefined) : renderTemplate(tpl, ctx);
    if (v === undefined || !isHeaderValue(v)) continue;
    const cur = headers[name];
    if (cur === undefined) headers[name] = v;
    else if (Array.isArray(cur)) headers[name] = [...cur, v];
    else headers[name] = [String(cur), v];
  }
}

const renderConstant = (t: Template): string => (t.parts.length === 0 ? "" : (t.parts[0] as string));

/**
 * RFC 9110 §5.5 field-value: HTAB, visible ASCII, space and obs-text (0x80–0xFF) — no CR, LF, NUL nor any
 * other control character, which Node refuses to send (ERR_INVALID_CHAR). A rendered value from a query
 * parameter (`?q=%01`, decoded), a header or a claim could carry one: sent, it failed the forward as an
 * upstream reset (a 502 counted against a healthy endpoint by outlier detection) or the response with a 500.
 */
function isHeaderValue(v: string): boolean {
  for (let i = 0; i < v.length; i++) {
    const c = v.charCodeAt(i);
    if ((c < 0x20 && c !== 9) || c === 0x7f || c > 0xff) return false;
  }
  return true;
}

type JsonObject = Record<string, unknown>;
/** An object a path can go into: not a list, and not a number kept as its text (parseJsonExact). */
const isObject = (v: unknown): v is JsonObject =>
  v !== null && typeof v === "object" && !Array.isArray(v) && !isRawJson(v);

/** The parent object of a path's last segment; with `create`, missing intermediates become `{}`. */
function parentOf(root: JsonObject, path: FieldPath, create: boolean): JsonObject | null {
  let cur: JsonObject = root;
  for (let i = 0; i < path.length - 1; i++) {
    const seg = path[i]!;
    const next = Object.hasOwn(cur, seg) ? cur[seg] : undefined;
    if (next === undefined) {
      if (!create) return null;
      const made: JsonObject = {};
      cur[seg] = made;
      cur = made;
    } else if (isObject(next)) cur = next;
    else return null;
  }
  return cur;
}

function setPath(root: JsonObject, path: FieldPath, value: unknown): void {
  const parent = parentOf(root, path, true);
  if (parent !== null) parent[path[path.length - 1]!] = value;
}

/**
 * Applies body operations to a parsed JSON value in place and returns it: drop, rename, set, template.
 * A value that is not an object passes unchanged.
 */
export function applyBodyOps(ops: CompiledBodyOps, value: unknown, ctx: TemplateContext | null): unknown {
  if (!isObject(value)) return value;
  for (const path of ops.drop) {
    const parent = parentOf(value, path, false);
    const last = path[path.length - 1]!;
    if (parent !== null && Object.hasOwn(parent, last)) delete parent[last];
  }
  for (const [from, to] of ops.rename) {
    const parent = parentOf(value, from, false);
    const last = from[from.length - 1]!;
    if (parent === null || !Object.hasOwn(parent, last)) continue;
    const moved = parent[last];
    delete parent[last];
    setPath(value, to, moved);
  }
  for (const [path, literal] of ops.set) {
    setPath(
      value,
      path,
      literal !== null && typeof literal === "object" ? structuredClone(literal) : literal,
    );
  }
  if (ctx !== null) {
    for (const [path, tpl] of ops.template) {
      const v = renderTemplateValue(tpl, ctx);
      if (v !== undefined) setPath(value, path, v);
    }
  }
  return value;
}

export type JsonTransformResult =
  | { readonly ok: true; readonly body: Buffer }
  | { readonly ok: false; readonly reason: "invalid_json" | "not_serializable" };

/**
 * Parses a JSON body, applies the operations and serializes it again. An empty body stays empty.
 * Invalid JSON (including a UTF-8 BOM, bytes that are not UTF-8, or trailing garbage) is reported, never
 * passed on untransformed; numbers keep their text (parseJsonExact).
 */
export function transformJson(
  ops: CompiledBodyOps,
  body: Buffer,
  ctx: TemplateContext | null,
): JsonTransformResult {
  if (body.length === 0) return { ok: true, body };
  let value: unknown;
  try {
    value = parseJsonExact(utf8Text(body));
  } catch {
    return { ok: false, reason: "invalid_json" };
  }
  try {
    const out = applyBodyOps(ops, value, ctx);
    return { ok: true, body: Buffer.from(JSON.stringify(out), "utf8") };
  } catch {
    // A structure too deep to serialize (stack overflow) is refused rather than passed through.
    return { ok: false, reason: "not_serializable" };
  }
}
