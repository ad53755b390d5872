/**
 * HTTP caching policy for a shared cache (RFC 9111) as pure functions: Cache-Control parsing, which
 * requests may be answered from the cache, which responses may be stored, freshness lifetime, age, Vary
 * secondary keys, conditional requests, serving stale (RFC 5861) and the Cache-Status header (RFC 9211).
 *
 * No I/O, no clock: every time is passed in (milliseconds since the epoch). The engine (cache.ts) calls
 * these per request; the tests call them table-driven, each case citing its RFC section.
 *
 * Choices where the RFC leaves room (documented in docs/cache.md):
 * - the route's `cache.ttlMs` fills in as the heuristic freshness lifetime (RFC 9111 §4.2.2) when the
 *   response has no explicit one; it never caps an explicit `s-maxage`/`max-age`/`Expires`;
 * - stored status codes: the heuristically cacheable ones (RFC 9110 §15.1, plus 451) with any freshness,
 *   and 302/303/307 only with explicit freshness; never 206 (ranges are served from stored 200s), 304,
 *   1xx or other 5xx;
 * - never stored: `no-store` (request or response), `private` (qualified or not), `Set-Cookie`,
 *   `Vary: *`, close-delimited bodies (truncation would be indistinguishable from the end);
 * - qualified `no-cache="…"` is treated as unqualified (RFC 9111 §5.2.2.4 allows it);
 * - duplicate or invalid `max-age`/`s-maxage` make the response stale (RFC 9111 §4.2.1);
 * - an explicit `stale-while-revalidate`/`stale-if-error` overrides the proxy-revalidate that `s-maxage`
 *   implies; `must-revalidate`, `proxy-revalidate` and `no-cache` forbid stale serving (staleWindowsMs).
 */
import { createHash } from "node:crypto";
import { parseRange, type RangeResult } from "../apim/http-cache.ts";

/** Parsed Cache-Control directives (request or response). Delta-seconds are in seconds. */
export interface CacheControl {
  readonly noStore: boolean;
  readonly noCache: boolean;
  readonly private: boolean;
  readonly public: boolean;
  readonly mustRevalidate: boolean;
  readonly proxyRevalidate: boolean;
  readonly mustUnderstand: boolean;
  readonly onlyIfCached: boolean;
  /** null when absent; 0 when invalid or duplicated (treated as stale, RFC 9111 §4.2.1). */
  readonly maxAge: number | null;
  readonly sMaxAge: number | null;
  /** Request: null when absent, Infinity without a value. */
  readonly maxStale: number | null;
  readonly minFresh: number | null;
  /** RFC 5861 §3 (response): null when absent or invalid. */
  readonly staleWhileRevalidate: number | null;
  /** RFC 5861 §4 (response or request): null when absent or invalid. */
  readonly staleIfError: number | null;
}

export const NO_DIRECTIVES: CacheControl = Object.freeze({
  noStore: false,
  noCache: false,
  private: false,
  public: false,
  mustRevalidate: false,
  proxyRevalidate: false,
  mustUnderstand: false,
  onlyIfCached: false,
  maxAge: null,
  sMaxAge: null,
  maxStale: null,
  minFresh: null,
  staleWhileRevalidate: null,
  staleIfError: null,
});

/** RFC 9111 §1.2.2: delta-seconds beyond 2^31 are sent as 2^31. */
const MAX_DELTA = 2147483648;

/** delta-seconds (1*DIGIT, optionally quoted); null when invalid. */
function deltaSeconds(value: string | null): number | null {
  if (value === null || value.length === 0 || value.length > 16) return null;
  for (let i = 0; i < value.length; i++) {
    const c = value.charCodeAt(i);
    if (c < 48 || c > 57) return null;
  }
  return Math.min(Number(value), MAX_DELTA);
}

type Mutable<T> = { -readonly [K in keyof T]: T[K] };

/** A header field's value as Node gives it (a string, several field lines, or a number set by code). */
export type FieldValue = string | readonly string[] | number | undefined;

/**
 * Parses Cache-Control field lines (RFC 9111 §5.2): comma-separated directives, names case-insensitive,
 * values as token or quoted-string (commas inside quotes do not split). Unknown directives are ignored.
 */
export function parseCacheControl(value: FieldValue): CacheControl {
  if (value === undefined) return NO_DIRECTIVES;
  const text =
    typeof value === "string" ? value : typeof value === "number" ? String(value) : value.join(",");
  if (text.length === 0) return NO_DIRECTIVES;
  const cc: Mutable<CacheControl> = { ...NO_DIRECTIVES };
  let seenMaxAge = false;
  let seenSMaxAge = false;
  const n = text.length;
  let i = 0;
  while (i < n) {
    // name
    let j = i;
    while (j < n && text.charCodeAt(j) !== 44 /* , */ && text.charCodeAt(j) !== 61 /* = */) j++;
    const name = text.slice(i, j).trim().toLowerCase();
    let arg: string | null = null;
    if (j < n && text.charCodeAt(j) === 61) {
      j++;
      while (j < n && (text.charCodeAt(j) === 32 || text.charCodeAt(j) === 9)) j++;
      if (j < n && text.charCodeAt(j) === 34 /* " */) {
        let out = "";
        j++;
        while (j < n && text.charCodeAt(j) !== 34) {
          if (text.charCodeAt(j) === 92 /* \ */ && j + 1 < n) j++;
          out += text[j];
          j++;
        }
        j++; // closing quote
        arg = out;
        while (j < n && text.charCodeAt(j) !== 44) j++;
      } else {
        const start = j;
        while (j < n && text.charCodeAt(j) !== 44) j++;
        arg = text.slice(start, j).trim();
      }
    }
    i = j + 1;
    switch (name) {
      case "no-store":
        cc.noStore = true;
        break;
      case "no-cache":
        cc.noCache = true; // qualified form treated as unqualified (§5.2.2.4)
        break;
      case "private":
        cc.private = true; // qualified form treated as unqualified (§5.2.2.7)
        break;
      case "public":
        cc.public = true;
        break;
      case "must-revalidate":
        cc.mustRevalidate = true;
        break;
      case "proxy-revalidate":
        cc.proxyRevalidate = true;
        break;
      case "must-understand":
        cc.mustUnderstand = true;
        break;
      case "only-if-cached":
        cc.onlyIfCached = true;
        break;
      case "max-age": {
        const v = deltaSeconds(arg);
        cc.maxAge = seenMaxAge || v === null ? 0 : v;
        seenMaxAge = true;
        break;
      }
      case "s-maxage": {
        const v = deltaSeconds(arg);
        cc.sMaxAge = seenSMaxAge || v === null ? 0 : v;
        seenSMaxAge = true;
        break;
      }
      case "max-stale":
        cc.maxStale = arg === null ? Infinity : (deltaSeconds(arg) ?? cc.maxStale);
        break;
      case "min-fresh":
        cc.minFresh = deltaSeconds(arg) ?? cc.minFresh;
        break;
      case "stale-while-revalidate":
        cc.staleWhileRevalidate = deltaSeconds(arg) ?? cc.staleWhileRevalidate;
        break;
      case "stale-if-error":
        cc.staleIfError = deltaSeconds(arg) ?? cc.staleIfError;
        break;
    }
  }
  return cc;
}

/** True when a Pragma field holds the `no-cache` token. */
function pragmaNoCache(value: FieldValue): boolean {
  if (value === undefined) return false;
  const text =
    typeof value === "string" ? value : typeof value === "number" ? String(value) : value.join(",");
  for (const t of text.split(",")) if (t.trim().toLowerCase() === "no-cache") return true;
  return false;
}

/**
 * The request's cache directives: Cache-Control, or `Pragma: no-cache` as `no-cache` when the request
 * has no Cache-Control (RFC 9111 §5.4).
 */
export function requestCacheControl(cacheControl: FieldValue, pragma: FieldValue): CacheControl {
  if (cacheControl !== undefined) return parseCacheControl(cacheControl);
  if (pragmaNoCache(pragma)) return { ...NO_DIRECTIVES, noCache: true };
  return NO_DIRECTIVES;
}

/** Header lookup by lower-case name, as Node's IncomingHttpHeaders. */
export type HeaderBag = Readonly<Record<string, FieldValue>>;

const headerText = (v: FieldValue): string | undefined =>
  v === undefined ? undefined : typeof v === "string" ? v : typeof v === "number" ? String(v) : v.join(", ");

/** Why a request is neither answered from nor stored into the cache. */
export type BypassReason =
  "method" | "authorization" | "no-principal" | "range" | "precondition" | "request-body";

/** Request headers that carry credentials unless the gateway says more (its API-key header). */
export const CREDENTIAL_HEADERS: readonly string[] = ["authorization"];

/**
 * The request headers that carry credentials for a gateway with this API-key header (if any) and these
 * JWT providers' token headers (`tokenFrom.header`, when not Authorization).
 */
export function credentialHeaders(
  apiKeyHeader: string | undefined,
  tokenHeaders: readonly string[] = [],
): readonly string[] {
  const names = new Set(CREDENTIAL_HEADERS);
  for (const h of [apiKeyHeader, ...tokenHeaders]) if (h) names.add(h.toLowerCase());
  return names.size === CREDENTIAL_HEADERS.length ? CREDENTIAL_HEADERS : [...names];
}

/**
 * Whether a request bypasses the cache entirely (neither lookup nor store):
 * - methods other than GET and HEAD (RFC 9111 §2: the cache key is for GET; HEAD is served from it);
 * - credentials (RFC 9111 §3.5), unless the route caches per principal and the gateway authenticated one
 *   with a subject (the principal is then part of the key; "" is one without): an `Authorization`
 *   header (or another of `credentialHeaders`, e.g. the gateway's API-key header), or a principal the
 *   gateway established by other means (client certificate, session);
 * - `If-Match`/`If-Unmodified-Since` (preconditions for the origin to evaluate), and GET/HEAD requests
 *   carrying a body (Content-Length other than 0, Transfer-Encoding, or `hasBody`: an HTTP/2 body
 *   neither announces).
 * A `Range` request is looked up (a stored full response answers it: entryRange); only when it must be
 * forwarded does it bypass the store (the engine decides that: a partial response is never stored).
 */
export function requestBypass(
  method: string,
  headers: HeaderBag,
  principal: string | null,
  perPrincipal: boolean,
  credentialHeaders: readonly string[] = CREDENTIAL_HEADERS,
  hasBody = false,
): BypassReason | null {
  if (method !== "GET" && method !== "HEAD") return "method";
  let credentials = principal !== null;
  for (let i = 0; !credentials && i < credentialHeaders.length; i++)
    credentials = headers[credentialHeaders[i]!] !== undefined;
  if (credentials) {
    if (!perPrincipal) return "authorization";
    // "" is a principal without a subject (a JWT without `sub`): keyed by it, every such principal would
    // share one entry.
    if (principal === null || principal === "") return "no-principal";
  }
  if (headers["if-match"] !== undefined || headers["if-unmodified-since"] !== undefined)
    return "precondition";
  const cl = headers["content-length"];
  if (hasBody || (cl !== undefined && cl !== "0") || headers["transfer-encoding"] !== undefined)
    return "request-body";
  return null;
}

/**
 * Whether a looked-up request that goes upstream may fill the cache with its response: a GET or a HEAD
 * (sent as a GET: the cache stores the GET response and the client gets its head — nginx's
 * proxy_cache_convert_head, Varnish's builtin), unless the request says `no-store`.
 */
export function mayFill(method: string, request: CacheControl): boolean {
  return (method === "GET" || method === "HEAD") && !request.noStore;
}

/**
 * The method a request on a caching route is sent upstream with when the cache forwards it: GET for a
 * HEAD that may fill the cache (not bypassed, not `no-store`), else the request's own. What the callee
 * sees — the policies check the callee's allow rules with it.
 */
export function upstreamMethod(
  method: string,
  headers: HeaderBag,
  principal: string | null,
  perPrincipal: boolean,
  credentials: readonly string[] = CREDENTIAL_HEADERS,
): string {
  if (method !== "HEAD") return method;
  if (requestBypass(method, headers, principal, perPrincipal, credentials) !== null) return method;
  return mayFill(method, requestCacheControl(headers["cache-control"], headers.pragma)) ? "GET" : method;
}

/**
 * The methods a caching route may send upstream, for the methods it matches (empty: every method): a
 * route that matches HEAD also sends GET (a HEAD that fills the cache).
 */
export function upstreamMethods<M extends string>(methods: readonly M[]): (M | "GET")[] {
  const sent: (M | "GET")[] = [...methods];
  const names: readonly string[] = methods;
  if (names.length > 0 && names.includes("HEAD") && !names.includes("GET")) sent.push("GET");
  return sent;
}

/**
 * The byte range a stored 200 response answers a GET with (RFC 9110 §14): one `bytes=` range → "range",
 * a range outside the body → "unsatisfiable" (416), and "none" (the whole response, 200) for no Range, a
 * malformed or multi-range header (§14.2 lets a server ignore Range), or an If-Range that does not hold
 * (§13.1.5: an entity-tag must equal the stored strong ETag; a date must equal the stored Last-Modified).
 */
export function entryRange(
  range: FieldValue,
  ifRange: FieldValue,
  etag: string | null,
  lastModified: string | null,
  size: number,
): RangeResult {
  const r = headerText(range);
  if (r === undefined) return WHOLE;
  const condition = headerText(ifRange)?.trim();
  if (condition !== undefined) {
    if (condition.startsWith('"')) {
      if (etag === null || condition !== etag) return WHOLE;
    } else if (condition.startsWith("W/")) {
      return WHOLE; // a weak tag never validates a range
    } else {
      const at = parseHttpDate(condition);
      const lm = parseHttpDate(lastModified ?? undefined);
      if (at === null || lm === null || at !== lm) return WHOLE;
    }
  }
  return parseRange(r, size);
}

const WHOLE: RangeResult = Object.freeze({ kind: "none" });

/**
 * Status codes cacheable by default (RFC 9110 §15.1; 451 by RFC 7725). 206 is left out: partial responses
 * are never stored; ranges are answered from stored 200s.
 */
const HEURISTIC_STATUS = new Set([200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 451, 501]);
/** Further codes stored only with explicit freshness (RFC 9111 §3 "understood" codes). */
const EXPLICIT_ONLY_STATUS = new Set([302, 303, 307]);

/** Why a response was not stored (the `detail` of Cache-Status, and a metric label). */
export type NotStoredReason =
  | "head"
  | "status"
  | "request-no-store"
  | "no-store"
  | "private"
  | "set-cookie"
  | "vary-star"
  | "no-freshness"
  | "unframed"
  | "too-large";

export interface StorableInput {
  readonly method: string;
  readonly status: number;
  readonly request: CacheControl;
  readonly response: CacheControl;
  readonly headers: HeaderBag;
  /** The route's default lifetime (heuristic freshness, RFC 9111 §4.2.2). */
  readonly routeTtlMs: number;
  readonly maxEntryBytes: number;
  /** The body's end is explicit (Content-Length, chunked, or an HTTP/2 stream end). */
  readonly framed: boolean;
  /** The route's stale-serving defaults (RFC 5861 windows when the response names none). */
  readonly stale?: StaleDefaults;
}

/**
 * Whether a shared cache may store this response (RFC 9111 §3); null = storable, else the reason.
 * Requests with credentials never get here unless the route caches per principal (requestBypass).
 */
export function notStorable(x: StorableInput): NotStoredReason | null {
  // §3: the request method is understood (GET; HEAD responses have no body to store).
  if (x.method !== "GET") return "head";
  const heuristic = HEURISTIC_STATUS.has(x.status);
  // §3: a final status code the cache understands (206 and 304 are never stored here).
  if (!heuristic && !EXPLICIT_ONLY_STATUS.has(x.status)) return "status";
  // §5.2.1.5: no-store in the request.
  if (x.request.noStore) return "request-no-store";
  // §5.2.2.5, §5.2.2.3: no-store, unless must-understand with a status the cache understands.
  if (x.response.noStore && !x.response.mustUnderstand) return "no-store";
  // §5.2.2.7: a shared cache must not store private responses.
  if (x.response.private) return "private";
  // Gateway choice (as Envoy, Varnish, nginx): a response that sets cookies is for one client.
  if (x.headers["set-cookie"] !== undefined) return "set-cookie";
  // §4.1: Vary: * never matches a later request.
  const vary = headerText(x.headers.vary);
  if (vary !== undefined && parseVary(vary) === "*") return "vary-star";
  // §3: explicit freshness, public, or a heuristically cacheable status.
  const explicit =
    x.response.sMaxAge !== null || x.response.maxAge !== null || x.headers.expires !== undefined;
  if (!explicit && !heuristic && !x.response.public) return "no-freshness";
  if (!explicit && x.routeTtlMs === 0 && !hasValidator(x.headers)) return "no-freshness";
  if (
    explicit &&
    !hasValidator(x.headers) &&
    longestStaleMs(staleWindowsMs(x.response, x.stale ?? NO_STALE_DEFAULTS)) === 0
  ) {
    // A response that is stale on arrival, has no validator and may not be served stale is never reused.
    const sec = x.response.sMaxAge ?? x.response.maxAge;
    if (sec === 0 || (sec === null && expiresInPast(x.headers))) return "no-freshness";
  }
  if (x.response.noCache && !hasValidator(x.headers)) return "no-freshness";
  // §3.3, §3.4: an incomplete response is never stored; a close-delimited body cannot be told complete.
  if (!x.framed) return "unframed";
  const cl = headerText(x.headers["content-length"]);
  if (cl !== undefined && Number(cl) > x.maxEntryBytes) return "too-large";
  return null;
}

function expiresInPast(headers: HeaderBag): boolean {
  const expires = parseHttpDate(headerText(headers.expires));
  const date = parseHttpDate(headerText(headers.date));
  return expires === null || (date !== null && expires <= date);
}

/** The response carries a validator usable in a conditional request (RFC 9110 §8.8). */
export function hasValidator(headers: HeaderBag): boolean {
  return headers.etag !== undefined || headers["last-modified"] !== undefined;
}

/**
 * Freshness lifetime in ms (RFC 9111 §4.2.1), for a shared cache: `s-maxage`, else `max-age`, else
 * `Expires` − `Date` (the response time when Date is absent; an invalid Expires means already expired),
 * else the route's TTL as heuristic freshness (§4.2.2) for heuristically cacheable statuses or `public`.
 * `no-cache` makes the lifetime 0: every reuse needs validation (§5.2.2.4).
 */
export function freshnessLifetimeMs(
  status: number,
  response: CacheControl,
  headers: HeaderBag,
  responseTime: number,
  routeTtlMs: number,
): number {
  if (response.noCache) return 0;
  if (response.sMaxAge !== null) return response.sMaxAge * 1000;
  if (response.maxAge !== null) return response.maxAge * 1000;
  const expiresText = headerText(headers.expires);
  if (expiresText !== undefined) {
    const expires = parseHttpDate(expiresText);
    if (expires === null) return 0;
    const date = parseHttpDate(headerText(headers.date)) ?? responseTime;
    return Math.max(0, expires - date);
  }
  if (HEURISTIC_STATUS.has(status) || response.public) return routeTtlMs;
  return 0;
}

/** A non-negative integer Age value (RFC 9111 §5.1); invalid or list values are ignored (0). */
export function parseAgeSeconds(value: FieldValue): number {
  if (value === undefined || typeof value !== "string") return 0;
  return deltaSeconds(value.trim()) ?? 0;
}

/**
 * The corrected initial age in ms (RFC 9111 §4.2.3): the larger of the apparent age (response time −
 * Date) and the upstream's Age plus the response delay.
 */
export function initialAgeMs(
  ageSeconds: number,
  dateMs: number | null,
  requestTime: number,
  responseTime: number,
): number {
  const apparent = dateMs === null ? 0 : Math.max(0, responseTime - dateMs);
  const corrected = ageSeconds * 1000 + Math.max(0, responseTime - requestTime);
  return Math.max(apparent, corrected);
}

/** What freshness and reuse decisions read from a stored response. */
export interface FreshnessFacts {
  readonly lifetimeMs: number;
  readonly initialAgeMs: number;
  /** When the response (or the 304 that last freshened it) was received. */
  readonly responseTime: number;
  /** `must-revalidate`, `proxy-revalidate`, `s-maxage` or `no-cache`: never served stale (§4.2.4). */
  readonly mustRevalidate: boolean;
}

/** current_age (RFC 9111 §4.2.3) in ms: corrected initial age plus resident time. */
export function currentAgeMs(e: FreshnessFacts, now: number): number {
  return e.initialAgeMs + Math.max(0, now - e.responseTime);
}

/** How a stored response may be used for a request. */
export type Reuse = "fresh" | "stale-allowed" | "validate";

/**
 * Whether a stored response can answer the request without contacting the origin (RFC 9111 §4.2,
 * §5.2.1): fresh, or stale within the request's `max-stale` when the response allows serving stale;
 * request `no-cache`, `max-age` (age ≤ max-age) and `min-fresh` (remaining ≥ min-fresh) are honoured.
 */
export function reuse(e: FreshnessFacts, request: CacheControl, now: number): Reuse {
  if (request.noCache) return "validate";
  const age = currentAgeMs(e, now);
  if (request.maxAge !== null && age > request.maxAge * 1000) return "validate";
  const remaining = e.lifetimeMs - age;
  if (remaining > 0) {
    if (request.minFresh !== null && remaining < request.minFresh * 1000) return "validate";
    return "fresh";
  }
  if (request.maxStale !== null && !e.mustRevalidate && request.minFresh === null) {
    if (-remaining <= request.maxStale * 1000) return "stale-allowed";
  }
  return "validate";
}

// ──────────────────────────────────────── serving stale (RFC 5861) ────────────────────────────────────────

/** A route's windows for serving stale responses when the response names none (ms; 0 = off). */
export interface StaleDefaults {
  readonly staleWhileRevalidateMs: number;
  readonly staleIfErrorMs: number;
}

/** How long past its freshness a stored response may still be served, and when (ms). */
export interface StaleWindows {
  /** Served while one background request revalidates it (RFC 5861 §3). */
  readonly whileRevalidateMs: number;
  /** Served instead of an error (500, 502, 503, 504, or no response at all) from upstream (RFC 5861 §4). */
  readonly ifErrorMs: number;
  /** The response forbids serving it stale (must-revalidate, proxy-revalidate, no-cache): no request may either. */
  readonly forbidden: boolean;
}

export const NO_STALE_DEFAULTS: StaleDefaults = Object.freeze({
  staleWhileRevalidateMs: 0,
  staleIfErrorMs: 0,
});
const NO_WINDOWS: StaleWindows = Object.freeze({ whileRevalidateMs: 0, ifErrorMs: 0, forbidden: false });
const FORBIDDEN: StaleWindows = Object.freeze({ whileRevalidateMs: 0, ifErrorMs: 0, forbidden: true });

/**
 * The stale windows of a stored response, from its Cache-Control and the route's defaults:
 * - `must-revalidate`, `proxy-revalidate` and `no-cache` forbid serving it stale at all (RFC 9111 §4.2.4,
 *   §5.2.2.2, §5.2.2.4, §5.2.2.8), whatever else is said;
 * - an explicit `stale-while-revalidate=N` / `stale-if-error=N` from the origin is its permission and is
 *   honoured as given — also beside `s-maxage`, whose implied proxy-revalidate (§5.2.2.10) it overrides, as
 *   CDNs do for the common `s-maxage=60, stale-while-revalidate=30`;
 * - otherwise the route's defaults apply, except to an `s-maxage` response (the origin asked shared caches
 *   to revalidate, and gave no permission).
 */
export function staleWindowsMs(response: CacheControl, defaults: StaleDefaults): StaleWindows {
  if (response.mustRevalidate || response.proxyRevalidate || response.noCache) return FORBIDDEN;
  const routeMay = response.sMaxAge === null;
  const swr =
    response.staleWhileRevalidate !== null
      ? response.staleWhileRevalidate * 1000
      : routeMay
        ? defaults.staleWhileRevalidateMs
        : 0;
  const sie =
    response.staleIfError !== null ? response.staleIfError * 1000 : routeMay ? defaults.staleIfErrorMs : 0;
  if (sie === 0 && swr === 0) return response.sMaxAge === null ? NO_WINDOWS : FORBIDDEN;
  return { whileRevalidateMs: swr, ifErrorMs: sie, forbidden: false };
}

/** The longest a response may be served past its freshness (how long a store must keep it for that). */
export const longestStaleMs = (w: StaleWindows): number => Math.max(w.whileRevalidateMs, w.ifErrorMs);

/**
 * RFC 5861 §3: whether a stored response that needs validation may be served now while the cache
 * revalidates it in the background — only when staleness is the one reason it needs validation (a request's
 * `no-cache`, `max-age` or `min-fresh` asks for an answer from the origin and gets one) and its staleness is
 * within the window.
 */
export function mayServeWhileRevalidating(
  e: FreshnessFacts,
  windows: StaleWindows,
  request: CacheControl,
  now: number,
): boolean {
  if (windows.whileRevalidateMs === 0) return false;
  if (request.noCache || request.minFresh !== null) return false;
  const age = currentAgeMs(e, now);
  if (request.maxAge !== null && age > request.maxAge * 1000) return false;
  const staleness = age - e.lifetimeMs;
  return staleness >= 0 && staleness <= windows.whileRevalidateMs;
}

/**
 * RFC 5861 §4: whether a stored response may answer a request whose forward ended in an error (the
 * upstream's 500, 502, 503 or 504, or no response: refused, timed out, reset, no endpoint, breaker open),
 * "regardless of other freshness information": its staleness is within the response's window, or the
 * request's own `stale-if-error`. Responses that forbid stale serving (staleWindowsMs) never qualify.
 */
export function mayServeOnError(
  e: FreshnessFacts,
  windows: StaleWindows,
  request: CacheControl | null,
  now: number,
): boolean {
  if (windows.forbidden) return false;
  const window = Math.max(windows.ifErrorMs, (request?.staleIfError ?? 0) * 1000);
  if (window === 0) return false;
  return currentAgeMs(e, now) - e.lifetimeMs <= window;
}

/** The upstream statuses RFC 5861 §4 counts as errors. */
export const isServerError = (status: number): boolean =>
  status === 500 || status === 502 || status === 503 || status === 504;

// ─────────────────────────────────────────────── keys ───────────────────────────────────────────────

/**
 * The primary cache key (RFC 9111 §2): the canonical path and query first (so purges by URL and by prefix
 * are prefix matches), then the host, the route, the principal for per-principal routes, and the origin
 * the upstream is told (scheme and authority as forwarded, when given). Components are separated by a
 * tab, which no canonical path, query or host contains; route, principal and origin are length-prefixed,
 * so no value can forge another key.
 */
export function primaryKey(
  path: string,
  query: string,
  host: string,
  route: string,
  principal: string | null,
  origin = "",
): string {
  const url = query.length > 0 ? `${path}?${query}` : path;
  const p = principal === null ? "-" : `${principal.length}:${principal}`;
  const key = `${url}\t${host}\t${route.length}:${route}\t${p}`;
  return origin.length > 0 ? `${key}\t${origin.length}:${origin}` : key;
}

/** The URL (path and query) a key starts with. */
export function urlOfKey(key: string): string {
  const t = key.indexOf("\t");
  return t < 0 ? key : key.slice(0, t);
}

/** The host component of a key. */
export function hostOfKey(key: string): string {
  const a = key.indexOf("\t");
  const b = key.indexOf("\t", a + 1);
  return a < 0 || b < 0 ? "" : key.slice(a + 1, b);
}

/**
 * The names a Vary field lists (RFC 9111 §4.1): lower-case, unique, sorted; "*" when it holds `*`.
 */
export function parseVary(value: FieldValue): readonly string[] | "*" {
  const text = headerText(value);
  if (text === undefined) return [];
  const names = new Set<string>();
  for (const raw of text.split(",")) {
    const name = raw.trim().toLowerCase();
    if (name === "*") return "*";
    if (name.length > 0) names.add(name);
  }
  return [...names].sort();
}

/** Sorted union of two sorted lists of names. */
export function unionNames(a: readonly string[], b: readonly string[]): readonly string[] {
  if (b.length === 0) return a;
  if (a.length === 0) return b;
  return [...new Set([...a, ...b])].sort();
}

/** Header values compared case-insensitively when selecting a variant (their values are tokens). */
const CASE_INSENSITIVE = new Set(["accept", "accept-encoding", "accept-language", "accept-charset"]);
/** Names whose values are credentials: secondary keys holding them are hashed, never stored raw. */
const SENSITIVE = new Set(["authorization", "cookie", "proxy-authorization", "x-api-key"]);

/**
 * A request header's value as Vary compares it (RFC 9111 §4.1): field lines combined, whitespace around
 * commas and at the ends removed, runs of spaces collapsed, lower-cased where the field is
 * case-insensitive. undefined when absent (absent and empty are different).
 */
export function normalizeFieldValue(name: string, value: FieldValue): string | undefined {
  const text = headerText(value);
  if (text === undefined) return undefined;
  const folded = CASE_INSENSITIVE.has(name);
  const memo = folded ? FOLDED : KEPT;
  let v = memo.get(text);
  if (v !== undefined) return v;
  let i = 0;
  while (i < text.length && text.charCodeAt(i) !== 32 && text.charCodeAt(i) !== 9) i++;
  // Without spaces or tabs there is nothing to normalize.
  v =
    i === text.length
      ? text
      : text
          .replace(/[ \t]*,[ \t]*/g, ",")
          .replace(/[ \t]+/g, " ")
          .trim();
  if (folded) v = v.toLowerCase();
  if (text.length <= MEMO_VALUE_CHARS) {
    if (memo.size >= MEMO_ENTRIES) memo.clear();
    memo.set(text, v);
  }
  return v;
}

/**
 * Normalized values of recently seen short header values (a few distinct Accept-Encoding or
 * Accept-Language values make up most traffic): a lookup instead of two regular expressions per request.
 * Bounded: at most MEMO_ENTRIES values of at most MEMO_VALUE_CHARS characters per map. Pure in effect —
 * the same input always gives the same output.
 */
const MEMO_ENTRIES = 4096;
const MEMO_VALUE_CHARS = 256;
const FOLDED = new Map<string, string>();
const KEPT = new Map<string, string>();

/**
 * The secondary key (RFC 9111 §4.1): the normalized values of the selecting headers, in name order.
 * "" when there are none. Hashed (SHA-256) when a selecting header carries credentials, so keys never
 * hold a token or a cookie.
 */
export function secondaryKey(names: readonly string[], headers: HeaderBag): string {
  if (names.length === 0) return "";
  let out = "";
  let sensitive = false;
  for (const name of names) {
    const v = normalizeFieldValue(name, headers[name]);
    out += v === undefined ? `${name}\n` : `${name}:${v}\n`;
    if (SENSITIVE.has(name)) sensitive = true;
  }
  return sensitive ? `#${createHash("sha256").update(out).digest("base64url")}` : out;
}

// ──────────────────────────────────────────── conditionals ────────────────────────────────────────────

const MONTHS: Readonly<Record<string, number>> = {
  Jan: 0,
  Feb: 1,
  Mar: 2,
  Apr: 3,
  May: 4,
  Jun: 5,
  Jul: 6,
  Aug: 7,
  Sep: 8,
  Oct: 9,
  Nov: 10,
  Dec: 11,
};
const IMF = /^[A-Z][a-z]{2}, (\d{2}) ([A-Z][a-z]{2}) (\d{4}) (\d{2}):(\d{2}):(\d{2}) GMT$/;
const RFC850 = /^[A-Z][a-z]+, (\d{2})-([A-Z][a-z]{2})-(\d{2}) (\d{2}):(\d{2}):(\d{2}) GMT$/;
const ASCTIME = /^[A-Z][a-z]{2} ([A-Z][a-z]{2}) ([ \d]\d) (\d{2}):(\d{2}):(\d{2}) (\d{4})$/;

/**
 * An HTTP-date (RFC 9110 §5.6.7) in ms: IMF-fixdate, or the obsolete RFC 850 and asctime forms; null
 * when invalid. A two-digit RFC 850 year more than 50 years ahead of `now` is in the previous century.
 */
export function parseHttpDate(value: string | undefined, now = 0): number | null {
  if (value === undefined) return null;
  const v = value.trim();
  let y: number, mon: number | undefined, d: number, h: number, mi: number, s: number;
  let m = IMF.exec(v);
  if (m) {
    [d, mon, y, h, mi, s] = [
      Number(m[1]),
      MONTHS[m[2]!],
      Number(m[3]),
      Number(m[4]),
      Number(m[5]),
      Number(m[6]),
    ];
  } else if ((m = RFC850.exec(v))) {
    const yy = Number(m[3]);
    const year = now > 0 ? new Date(now).getUTCFullYear() : 2000;
    y = Math.floor(year / 100) * 100 + yy;
    if (y > year + 50) y -= 100;
    [d, mon, h, mi, s] = [Number(m[1]), MONTHS[m[2]!], Number(m[4]), Number(m[5]), Number(m[6])];
  } else if ((m = ASCTIME.exec(v))) {
    [mon, d, h, mi, s, y] = [
      MONTHS[m[1]!],
      Number(m[2]!.trim()),
      Number(m[3]),
      Number(m[4]),
      Number(m[5]),
      Number(m[6]),
    ];
  } else return null;
  if (mon === undefined || d < 1 || d > 31 || h > 23 || mi > 59 || s > 60) return null;
  return Date.UTC(y, mon, d, h, mi, s);
}

/** The opaque part of an entity tag, without `W/` (weak comparison, RFC 9110 §8.8.3.2). */
function opaqueTag(tag: string): string {
  const t = tag.trim();
  return t.startsWith("W/") ? t.slice(2) : t;
}

/**
 * If-None-Match (RFC 9110 §13.1.2) against a response's ETag: true when the field is `*` or lists a tag
 * that matches by weak comparison.
 */
export function noneMatchHits(ifNoneMatch: string, etag: string | null): boolean {
  if (ifNoneMatch.trim() === "*") return etag !== null;
  if (etag === null) return false;
  const mine = opaqueTag(etag);
  // Entity tags are quoted strings that cannot contain ",": splitting on commas is exact.
  for (const t of ifNoneMatch.split(",")) if (opaqueTag(t) === mine) return true;
  return false;
}

/**
 * Whether a GET/HEAD with conditional headers should get 304 Not Modified for a 200 response
 * (RFC 9110 §13.2.2): If-None-Match decides when present; otherwise If-Modified-Since against
 * Last-Modified, or Date when there is none (RFC 9111 §4.3.2). An invalid date is ignored.
 */
export function notModified(
  request: HeaderBag,
  status: number,
  etag: string | null,
  lastModified: string | null,
  date: string | null,
): boolean {
  if (status !== 200) return false;
  const inm = headerText(request["if-none-match"]);
  if (inm !== undefined) return noneMatchHits(inm, etag);
  const ims = parseHttpDate(headerText(request["if-modified-since"]));
  if (ims === null) return false;
  const modified = parseHttpDate(lastModified ?? date ?? undefined);
  return modified !== null && modified <= ims;
}

/** Request headers with a client's conditionals (removed before a cache fill, evaluated by the cache). */
export function hasClientConditional(request: HeaderBag): boolean {
  return request["if-none-match"] !== undefined || request["if-modified-since"] !== undefined;
}

/**
 * Fields a 304 carries (RFC 9110 §15.4.5): Cache-Control, Content-Location, Date, ETag, Expires and Vary;
 * Last-Modified only when there is no ETag.
 */
export const NOT_MODIFIED_FIELDS: readonly string[] = [
  "cache-control",
  "content-location",
  "date",
  "etag",
  "expires",
  "vary",
];

/** Stored header fields a 304 never replaces (RFC 9111 §3.2): framing, per-message and per-client ones. */
const NOT_FRESHENED = new Set([
  "content-length",
  "transfer-encoding",
  "connection",
  "keep-alive",
  "age",
  "set-cookie",
  "cache-status",
]);

/**
 * The stored headers updated by a 304 (RFC 9111 §3.2, §4.3.4): each field in the 304 replaces the stored
 * field of that name, except framing and per-message fields.
 */
export function freshenHeaders(
  stored: Readonly<Record<string, string | string[]>>,
  notModifiedHeaders: HeaderBag,
): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = { ...stored };
  for (const name in notModifiedHeaders) {
    if (NOT_FRESHENED.has(name)) continue;
    const v = notModifiedHeaders[name];
    if (v === undefined) continue;
    out[name] = typeof v === "string" ? v : typeof v === "number" ? String(v) : [...v];
  }
  return out;
}

/** The stored validator of a 304 matches the stored response (RFC 9111 §4.3.4): same ETag, or none sent. */
export function notModifiedSelects(storedEtag: string | null, notModifiedEtag: string | undefined): boolean {
  if (notModifiedEtag === undefined) return true;
  return storedEtag !== null && opaqueTag(storedEtag) === opaqueTag(notModifiedEtag);
}

// ──────────────────────────────────────────── Cache-Status ────────────────────────────────────────────

/** RFC 9211 `fwd` values the gateway sends. */
export type Forward = "bypass" | "miss" | "vary-miss" | "stale" | "request" | "method";

export interface CacheStatusParams {
  readonly hit?: boolean;
  readonly fwd?: Forward;
  readonly fwdStatus?: number;
  /** Remaining freshness in seconds (negative when stale). */
  readonly ttl?: number;
  readonly stored?: boolean;
  readonly collapsed?: boolean;
  /** A token: why not stored, why bypassed. */
  readonly detail?: string;
}

/** One Cache-Status list member (RFC 9211 §2): `meshgate; hit; ttl=12` or `meshgate; fwd=miss; …`. */
export function cacheStatusMember(name: string, p: CacheStatusParams): string {
  let out = name;
  if (p.hit) out += "; hit";
  if (p.fwd !== undefined) out += `; fwd=${p.fwd}`;
  if (p.fwdStatus !== undefined) out += `; fwd-status=${p.fwdStatus}`;
  if (p.ttl !== undefined) out += `; ttl=${p.ttl}`;
  if (p.stored) out += "; stored";
  if (p.collapsed) out += "; collapsed";
  if (p.detail !== undefined) out += `; detail=${p.detail}`;
  return out;
}

/**
 * Appends this cache's member to the Cache-Status the upstream sent (RFC 9211 §2: members are ordered
 * from the origin towards the client).
 */
export function appendCacheStatus(existing: FieldValue, member: string): string {
  const prior = headerText(existing);
  return prior === undefined || prior.trim() === "" ? member : `${prior}, ${member}`;
}
