/**
 * CORS per route (the Fetch standard's CORS protocol), compiled once per route.
 *
 * - Origins match exactly (`https://app.example`), by a subdomain pattern (`https://*.example.com`: one or
 *   more DNS labels in front of `.example.com`, same scheme and port), or `*` (any origin; the spec
 *   refuses `*` with credentials). `null` and origins with paths are refused by the spec.
 * - A preflight (`OPTIONS` with `Origin` and `Access-Control-Request-Method`) on a route with `cors` is
 *   answered by the gateway before authentication and never forwarded: 204 with the allow headers when
 *   the origin, the requested method and every requested header are allowed; otherwise 403
 *   `cors_denied` with no CORS header at all (the browser then blocks the actual request).
 * - On actual requests the upstream's own Access-Control-* headers are dropped (the route's policy owns
 *   CORS) and the policy's are added when the origin is allowed; a request
 *   from another origin is still forwarded, its response carries no CORS header (the browser hides it
 *   from the page), as Envoy and Kong do. `Vary: Origin` is added whenever the answer depends on it; `*`
 *   (which does not depend on it) is sent on requests without an Origin too.
 */
import type { OutgoingHttpHeaders } from "node:http";
import type { GatewayRoute } from "../contract/schema.ts";

type CorsConfig = NonNullable<GatewayRoute["cors"]>;

export interface CompiledCors {
  readonly anyOrigin: boolean;
  readonly exact: ReadonlySet<string>;
  /** `scheme://*.suffix[:port]` patterns: the origin starts with `scheme://`, ends with `.suffix[:port]`. */
  readonly patterns: readonly { readonly scheme: string; readonly suffix: string }[];
  readonly credentials: boolean;
  readonly methods: ReadonlySet<string>;
  readonly allowMethods: string;
  /** null = any requested header (`*` in the config); else lower-case names. */
  readonly headers: ReadonlySet<string> | null;
  readonly exposeHeaders: string | null;
  readonly maxAge: string;
  /** The response varies with Origin (anything but `*`, which answers every origin alike). */
  readonly varyOrigin: boolean;
}

const ORIGIN =
  /^(https?):\/\/(\*\.)?([a-z0-9]([-a-z0-9]*[a-z0-9])?)(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*(:[0-9]{1,5})?$/;

/**
 * Why an origin entry is not accepted (null when it is): `*`, `scheme://host[:port]`, or
 * `scheme://*.domain[:port]` with at least two labels after the wildcard. Used by the spec and at compile.
 */
export function originEntryProblem(entry: string): string | null {
  if (entry === "*") return null;
  if (entry === "null")
    return 'the "null" origin is sent by sandboxed and file: documents; allowing it lets any of them in';
  const m = ORIGIN.exec(entry);
  if (!m) return "not an origin: write scheme://host[:port] in lower case, without a path or trailing slash";
  if (m[2] !== undefined) {
    const domain = entry.slice(entry.indexOf("*.") + 2).replace(/:[0-9]+$/, "");
    if (!domain.includes("."))
      return "a wildcard needs at least two labels after it (*.example.com, not *.com)";
  }
  return null;
}

/** Compiles a route's CORS policy; throws an Error naming the bad origin. */
export function compileCors(c: CorsConfig): CompiledCors {
  const exact = new Set<string>();
  const patterns: { scheme: string; suffix: string }[] = [];
  let anyOrigin = false;
  for (const o of c.origins) {
    const problem = originEntryProblem(o);
    if (problem !== null) throw new Error(`cors.origins: ${JSON.stringify(o)}: ${problem}`);
    if (o === "*") anyOrigin = true;
    else if (o.includes("://*.")) {
      const i = o.indexOf("://*.");
      patterns.push({ scheme: o.slice(0, i + 3), suffix: o.slice(i + 4) });
    } else exact.add(o);
  }
  if (anyOrigin && c.credentials) throw new Error('cors.origins: "*" cannot be combined with credentials');
  const headers = c.headers.includes("*") ? null : new Set(c.headers.map((h) => h.toLowerCase()));
  return {
    anyOrigin,
    exact,
    patterns,
    credentials: c.credentials,
    methods: new Set(c.methods),
    allowMethods: c.methods.join(", "),
    headers,
    exposeHeaders: c.exposeHeaders.length > 0 ? c.exposeHeaders.join(", ") : null,
    maxAge: String(c.maxAgeSeconds),
    varyOrigin: !anyOrigin,
  };
}

const LABELS = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;

/** Is the request's Origin allowed? Exact (case-sensitive, as browsers serialize it), pattern, or `*`. */
export function originAllowed(c: CompiledCors, origin: string): boolean {
  if (c.exact.has(origin)) return true;
  for (const p of c.patterns) {
    if (!origin.startsWith(p.scheme) || !origin.endsWith(p.suffix)) continue;
    const label = origin.slice(p.scheme.length, origin.length - p.suffix.length);
    // The part in front of ".suffix" must be one or more DNS labels — no port, no userinfo, no slash.
    if (label.length > 0 && LABELS.test(label)) return true;
  }
  return c.anyOrigin;
}

/** The Access-Control-Allow-Origin value for an allowed origin (`*` never goes with credentials). */
function allowOriginValue(c: CompiledCors, origin: string): string {
  return c.anyOrigin ? "*" : origin;
}

/** A CORS preflight: OPTIONS with Origin and Access-Control-Request-Method. */
export function isPreflight(
  method: string,
  origin: string | undefined,
  requestMethod: string | undefined,
): boolean {
  return method === "OPTIONS" && origin !== undefined && requestMethod !== undefined;
}

export type PreflightResult =
  | { readonly allowed: true; readonly headers: OutgoingHttpHeaders }
  | { readonly allowed: false; readonly reason: string; readonly headers: OutgoingHttpHeaders };

const PREFLIGHT_VARY = "Origin, Access-Control-Request-Method, Access-Control-Request-Headers";
const TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;

/** The answer to a preflight: the headers of a 204, or why it is denied (then no CORS header at all). */
export function preflight(
  c: CompiledCors,
  origin: string,
  requestMethod: string,
  requestHeaders: string | undefined,
): PreflightResult {
  if (!originAllowed(c, origin))
    return { allowed: false, reason: `origin ${origin} is not allowed`, headers: { vary: PREFLIGHT_VARY } };
  if (!c.methods.has(requestMethod))
    return {
      allowed: false,
      reason: `method ${requestMethod} is not allowed for cross-origin requests`,
      headers: { vary: PREFLIGHT_VARY },
    };
  const requested: string[] = [];
  if (requestHeaders !== undefined) {
    for (const raw of requestHeaders.split(",")) {
      const h = raw.trim().toLowerCase();
      if (h === "") continue;
      if (!TOKEN.test(h) || (c.headers !== null && !c.headers.has(h)))
        return {
          allowed: false,
          reason: `request header ${h} is not allowed for cross-origin requests`,
          headers: { vary: PREFLIGHT_VARY },
        };
      requested.push(h);
    }
  }
  const headers: OutgoingHttpHeaders = {
    "access-control-allow-origin": allowOriginValue(c, origin),
    "access-control-allow-methods": c.allowMethods,
    "access-control-max-age": c.maxAge,
    vary: PREFLIGHT_VARY,
    "content-length": 0,
  };
  if (requested.length > 0) headers["access-control-allow-headers"] = requested.join(", ");
  if (c.credentials) headers["access-control-allow-credentials"] = "true";
  return { allowed: true, headers };
}

/** Adds `value` to a Vary header (kept as is when it is `*` or already lists it). */
export function appendVary(headers: OutgoingHttpHeaders, value: string): void {
  const cur = headers.vary;
  if (cur === undefined || cur === "") {
    headers.vary = value;
    return;
  }
  const text = Array.isArray(cur) ? cur.join(", ") : String(cur);
  const lower = value.toLowerCase();
  for (const t of text.split(",")) {
    const v = t.trim().toLowerCase();
    if (v === "*" || v === lower) return;
  }
  headers.vary = `${text}, ${value}`;
}

const UPSTREAM_CORS = [
  "access-control-allow-origin",
  "access-control-allow-credentials",
  "access-control-expose-headers",
  "access-control-allow-methods",
  "access-control-allow-headers",
  "access-control-max-age",
];

/**
 * Adds the CORS headers of an actual (non-preflight) response in place: for an allowed origin,
 * Access-Control-Allow-Origin, -Allow-Credentials and -Expose-Headers; always `Vary: Origin` when the
 * answer depends on the origin. Returns whether the origin was allowed.
 */
export function addCorsHeaders(
  c: CompiledCors,
  origin: string | undefined,
  headers: OutgoingHttpHeaders,
): boolean {
  // The route's policy owns CORS: whatever the upstream said about it is replaced.
  for (const h of UPSTREAM_CORS) delete headers[h];
  if (c.varyOrigin) appendVary(headers, "Origin");
  // `*` answers every origin alike, so it goes on requests without an Origin too — the Fetch standard's
  // "CORS protocol and HTTP caches": a shared cache in front that stored the answer to a same-origin or
  // non-browser request (no Origin, and no Vary: Origin since nothing depends on it) serves it to the
  // CORS requests of every page; without the header there, the browser hides all of them.
  if (origin === undefined ? !c.anyOrigin : !originAllowed(c, origin)) return false;
  headers["access-control-allow-origin"] = origin === undefined ? "*" : allowOriginValue(c, origin);
  if (c.credentials) headers["access-control-allow-credentials"] = "true";
  if (c.exposeHeaders !== null) headers["access-control-expose-headers"] = c.exposeHeaders;
  return true;
}
