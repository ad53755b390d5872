/**
 * The gateway's HTTP cache engine (RFC 9111 shared cache) over a CacheStore: lookup (hit, coalesced wait,
 * or forward), the exchange that forwards a miss or revalidates a stale entry (conditional request, 304
 * freshening) and tees the response to the client while capturing it, invalidation after unsafe methods
 * (RFC 9111 §4.4), purge, Cache-Status (RFC 9211), and metrics hooks.
 *
 * Per request, for a route with `cache`:
 *   const d = cache.lookup(req)            // synchronous with the memory store (a Promise while waiting)
 *   hit           → cache.respond(d, res)  // Age, Cache-Status; 304 for a matching client conditional
 *   unsatisfiable → 504 (only-if-cached)
 *   forward       → d.exchange.prepare(upstreamHeaders); forward with
 *                   onHead = (status, h, closeDelimited) => d.exchange.onHead(status, h, res, !closeDelimited);
 *                   then d.exchange.finish()
 * `res` may also be a function that takes the head and returns where the body goes (a response-shaping
 * stage): the cache stores the upstream's response, and the stage runs on hits as on misses. Headers that
 * belong to one response only (RateLimit-*, Connection: close) are passed as `extra`, never stored.
 * and for any request that may change state: cache.invalidate(...) once its response head is known.
 *
 * Coalescing: concurrent misses of one key make one upstream request (the fill); the others wait for it
 * (bounded by `coalesceWaitMs`), then look up again. A fill that turns out not storable, fails, or is cut
 * short releases its waiters at once, and they go upstream themselves: a waiter is never served an error
 * it did not cause, nor a response that was not stored (a stored variant must still match its Vary).
 */
import type { OutgoingHttpHeaders, ServerResponse } from "node:http";
import { Writable } from "node:stream";
import type { GatewayRoute } from "../contract/schema.ts";
import type { GatewayErrorCode } from "../gateway/errors.ts";
import { canonicalizeTarget } from "../decide/canonical.ts";
import {
  appendCacheStatus,
  cacheStatusMember,
  currentAgeMs,
  entryRange,
  freshenHeaders,
  freshnessLifetimeMs,
  hasClientConditional,
  initialAgeMs,
  isServerError,
  longestStaleMs,
  mayFill,
  mayServeOnError,
  mayServeWhileRevalidating,
  NO_DIRECTIVES,
  NOT_MODIFIED_FIELDS,
  notModified,
  notModifiedSelects,
  notStorable,
  parseAgeSeconds,
  parseCacheControl,
  parseHttpDate,
  parseVary,
  primaryKey,
  requestBypass,
  requestCacheControl,
  reuse,
  secondaryKey,
  staleWindowsMs,
  unionNames,
  type BypassReason,
  type CacheControl,
  type CacheStatusParams,
  type Forward,
  type HeaderBag,
  type NotStoredReason,
  type StaleWindows,
} from "./policy.ts";
import type { CacheStore, MaybePromise, PurgeRequest, StoredResponse, StoredValue } from "./store.ts";
import { sendTimeoutError } from "../net/send-timeout.ts";

/** The `result` label of meshgate_cache_requests_total. */
export type CacheResult =
  | "hit"
  | "miss"
  | "stale"
  | "revalidated"
  | "bypass"
  | "coalesced"
  | "stale_while_revalidate"
  | "stale_if_error";

/** Metrics hooks (the gateway maps them to counters; tests count them). */
export interface CacheObserver {
  /** Once per request on a caching route. */
  request(route: string, result: CacheResult): void;
  /** A forwarded GET response that was not stored, and why. */
  notStored(route: string, reason: NotStoredReason): void;
  /**
   * A store operation failed (a remote store): the request went on as a miss. `damaged`: a stored entry
   * did not decode (its bytes cut short or grown inside the store).
   */
  storeError(operation: "get" | "set" | "delete" | "purge" | "damaged"): void;
}

/** A route's cache settings (the contract's `routes[].cache`). */
export type RouteCache = NonNullable<GatewayRoute["cache"]>;

/** What the cache reads of one request. */
export interface CacheRequest {
  readonly route: string;
  readonly config: RouteCache;
  readonly method: string;
  /** Canonical host, path and query (from decide()). */
  readonly host: string;
  readonly path: string;
  readonly query: string;
  /** The client's request headers (lower-case names). */
  readonly headers: HeaderBag;
  /**
   * The request headers as the upstream gets them (the gateway's X-Forwarded-*, X-Real-IP, principal
   * headers, the route's header transforms), built when first asked: variants are selected by them, since
   * a response's Vary names what the upstream saw (RFC 9111 §4.1). Default: `headers`.
   */
  readonly forwardedHeaders?: () => HeaderBag;
  /**
   * The principal the gateway authenticated (subject or consumer), or null; "" for one without a subject
   * (it bypasses: requestBypass).
   */
  readonly principal: string | null;
  /**
   * The scheme and authority the upstream is told (`X-Forwarded-Proto`; `Host`, `X-Forwarded-Host` and
   * `Forwarded` as the client sent them), e.g. `https://api.example.com:8443`: part of the key. The
   * canonical host drops the port, a trailing dot and case, and says nothing of the scheme, while upstreams
   * build redirects and absolute links from exactly these — one client's `Host: api.example.com:1337` or a
   * plain-http request's redirect to https must not be served to the others.
   */
  readonly origin?: string;
  /** How long this request may wait for another request's fill (default: the cache's coalesceWaitMs). */
  readonly waitMs?: number;
  /** Request headers that carry credentials (default: Authorization; the gateway adds its API-key header). */
  readonly credentialHeaders?: readonly string[];
  /**
   * True when a body follows that no header announces: an HTTP/2 request whose HEADERS frame did not end
   * the stream (HTTP/2 frames a body without Content-Length or Transfer-Encoding). Such a GET bypasses
   * like one with Content-Length: its response may depend on a body the key does not hold.
   */
  readonly hasBody?: boolean;
  /**
   * The client gets the stored response reshaped (the route transforms the response body): a byte range
   * of the stored body is no range of that, and a slice of it would be transformed as if it were the
   * whole document (a nested object passing paths meant for the top level). Range is then ignored — the
   * whole response, transformed (RFC 9110 §14.2 lets a server ignore Range).
   */
  readonly ignoreRange?: boolean;
}

export interface CacheHit {
  readonly kind: "hit";
  readonly entry: StoredResponse;
  readonly request: CacheRequest;
  /**
   * "coalesced" when the entry was filled by a request this one waited for; "stale_while_revalidate" when
   * a stale entry is served while it is revalidated (RFC 5861 §3).
   */
  readonly result: "hit" | "coalesced" | "stale_while_revalidate";
  /** When the lookup found it (ms): Age and ttl are computed for this instant. */
  readonly at: number;
  /**
   * The background revalidation the caller must run after answering (a GET forwarded like a miss, its
   * response going to onHead with REVALIDATION_TARGET, which discards the body once captured), or null.
   * Only the first request that serves a stale entry gets one; later ones find its fill in flight.
   */
  readonly revalidate: CacheExchange | null;
}

export type CacheDecision =
  | CacheHit
  | { readonly kind: "forward"; readonly exchange: CacheExchange }
  /** `Cache-Control: only-if-cached` and nothing usable stored: answer 504 (RFC 9111 §5.2.1.7). */
  | { readonly kind: "unsatisfiable" };

export interface HttpCacheOptions {
  readonly store: CacheStore;
  readonly observer?: CacheObserver;
  /** Clock (ms since the epoch); injectable for tests. */
  readonly now?: () => number;
  /** Longest wait for another request's fill of the same key before going upstream. Default 10 s. */
  readonly coalesceWaitMs?: number;
  /** How long an entry with validators is kept once stale, to be revalidated. Default 10 min. */
  readonly staleRetentionMs?: number;
  /** The cache's name in Cache-Status. Default "meshgate". */
  readonly name?: string;
  /**
   * Called when an unsafe request invalidated URLs here (RFC 9111 §4.4), with the host and the URLs: a
   * process whose store is its own memory tells the other processes (gateway workers), which apply it
   * with dropUrls. A shared store (Redis) needs no relay.
   */
  readonly onInvalidate?: (host: string, urls: readonly string[]) => void;
  /** Called when a stored body was cut at the send timeout (see HttpCache.sendTimeoutMs). */
  readonly onSendTimeout?: () => void;
}

/** The size of the slices a stored body is written in (each waits for the client to take the one before). */
const SEND_SLICE = 64 * 1024;

interface Fill {
  readonly promise: Promise<void>;
  readonly release: () => void;
  readonly timer: NodeJS.Timeout;
}

/** How long HEADs of a key whose GET response could not be stored are sent as HEADs. */
export const HEAD_PASS_MS = 60_000;
/**
 * Why a HEAD's GET was not stored that says the same GET would not be stored next time either: the
 * response's own directives, cookies, Vary, freshness, framing or size. Not a request's no-store, nor a
 * status (an error is transient; stale-if-error and retries deal with it).
 */
const HEAD_PASS_REASONS: ReadonlySet<NotStoredReason> = new Set<NotStoredReason>([
  "no-store",
  "private",
  "set-cookie",
  "vary-star",
  "no-freshness",
  "unframed",
  "too-large",
]);
/** Most keys remembered so (beyond: forgotten all at once; each costs one more download). */
const HEAD_PASS_KEYS = 10_000;

const UNSATISFIABLE: CacheDecision = Object.freeze({ kind: "unsatisfiable" });
const SAFE_METHODS = new Set(["GET", "HEAD", "OPTIONS", "TRACE"]);
/** Response header fields never stored (per message or per client). */
const UNSTORED = new Set([
  "connection",
  "keep-alive",
  "transfer-encoding",
  "age",
  "content-length",
  "set-cookie",
]);

const noop = () => {};

/**
 * Where a response goes: the client's response (its head written with writeHead), or a function that
 * takes the head and returns where the body goes (a stage in front of the client, e.g. response
 * transforms).
 */
export type ResponseTarget = ServerResponse | ((status: number, headers: OutgoingHttpHeaders) => Writable);

function openResponse(target: ResponseTarget, status: number, headers: OutgoingHttpHeaders): Writable {
  if (typeof target === "function") return target(status, headers);
  target.writeHead(status, headers);
  return target;
}

/** A Writable that discards what it is given (the body of a 304, or of a response already answered). */
const sink = (): Writable =>
  new Writable({
    write(_chunk, _enc, cb) {
      cb();
    },
  });

/** Where a background revalidation's response goes: nowhere (the tee stores it; no client waits). */
export const REVALIDATION_TARGET: ResponseTarget = () => sink();

const text = (v: string | readonly string[] | number | undefined): string | undefined =>
  v === undefined ? undefined : typeof v === "string" ? v : typeof v === "number" ? String(v) : v.join(", ");

export class HttpCache {
  readonly store: CacheStore;
  readonly name: string;
  readonly now: () => number;
  readonly staleRetentionMs: number;
  readonly coalesceWaitMs: number;
  readonly observer: CacheObserver | undefined;
  readonly #onInvalidate: ((host: string, urls: readonly string[]) => void) | undefined;
  readonly #fills = new Map<string, Fill>();
  /**
   * Keys whose GET response could not be stored (HEAD_PASS_REASONS) when a HEAD was sent as a GET: until
   * the time given, HEADs of them go upstream as HEADs — one full download per key and HEAD_PASS_MS, not
   * one per HEAD (Varnish's hit-for-miss).
   */
  readonly #headPass = new Map<string, number>();
  /** `meshgate; hit; ttl=` */
  readonly #hitPrefix: string;
  /** Per route config: the route's Vary names, lower-case and sorted (computed once). */
  readonly #routeVary = new WeakMap<RouteCache, readonly string[]>();

  /**
   * The send timeout (nginx's send_timeout; the gateway's idle timeout): a stored body is written in
   * slices, and a client that takes none of it for this long has its response destroyed — as the upstream
   * pools do for a forwarded response (E_SEND_TIMEOUT). Written whole with end(body), a large hit sat in the
   * socket's buffer of a client that never read it until the connection's own idle handling. 0: none.
   * Settable: the cache outlives a reload that changes the timeout.
   */
  sendTimeoutMs = 0;
  readonly #onSendTimeout: (() => void) | undefined;

  constructor(options: HttpCacheOptions) {
    this.#onSendTimeout = options.onSendTimeout;
    this.store = options.store;
    this.observer = options.observer;
    this.now = options.now ?? Date.now;
    this.coalesceWaitMs = options.coalesceWaitMs ?? 10_000;
    this.staleRetentionMs = options.staleRetentionMs ?? 600_000;
    this.name = options.name ?? "meshgate";
    this.#onInvalidate = options.onInvalidate;
    this.#hitPrefix = `${this.name}; hit; ttl=`;
  }

  /** A HEAD of `key` goes upstream as a HEAD for now (its GET response could not be stored). */
  #passesHead(key: string, now: number): boolean {
    const until = this.#headPass.get(key);
    if (until === undefined) return false;
    if (until > now) return true;
    this.#headPass.delete(key);
    return false;
  }

  /** Remembers that `key`'s GET response could not be stored (see #headPass). */
  rememberUnstorableForHead(key: string): void {
    if (this.#headPass.size >= HEAD_PASS_KEYS) this.#headPass.clear();
    this.#headPass.set(key, this.now() + HEAD_PASS_MS);
  }

  /** Fills in progress (keys being fetched by one request while others may wait). */
  get inFlightFills(): number {
    return this.#fills.size;
  }

  /**
   * The largest body a route's response is captured and stored with: its `maxEntryBytes`, and no more
   * than the store takes (a body the store would refuse is not buffered whole in vain, nor reported as
   * `stored`: it streams through as `too-large`).
   */
  maxBodyBytes(config: RouteCache): number {
    const s = this.store.maxEntryBytes;
    return s === undefined || s >= config.maxEntryBytes ? config.maxEntryBytes : s;
  }

  routeVary(config: RouteCache): readonly string[] {
    let v = this.#routeVary.get(config);
    if (v === undefined) {
      v = [...new Set(config.vary.map((n) => n.toLowerCase()))].sort();
      this.#routeVary.set(config, v);
    }
    return v;
  }

  /** Decides how to answer a request on a caching route (see the module comment). */
  lookup(req: CacheRequest): MaybePromise<CacheDecision> {
    return this.#lookup(req, true, false);
  }

  #lookup(req: CacheRequest, mayWait: boolean, waited: boolean): MaybePromise<CacheDecision> {
    const bypass = requestBypass(
      req.method,
      req.headers,
      req.principal,
      req.config.perPrincipal,
      req.credentialHeaders,
      req.hasBody === true,
    );
    if (bypass !== null) return this.#bypass(req, bypass);
    const reqCC = requestCacheControl(req.headers["cache-control"], req.headers.pragma);
    const primary = primaryKey(
      req.path,
      req.query,
      req.host,
      req.route,
      req.config.perPrincipal ? req.principal : null,
      req.origin,
    );
    // Under the primary key: the response when no request header selects variants (one lookup), else
    // the Vary record naming the selecting headers, and the variant under primary + tab + secondary key.
    const first = this.#get(primary);
    if (first instanceof Promise) {
      return first.then((r) => this.#withPrimary(req, reqCC, primary, r, mayWait, waited));
    }
    return this.#withPrimary(req, reqCC, primary, first, mayWait, waited);
  }

  #withPrimary(
    req: CacheRequest,
    reqCC: CacheControl,
    primary: string,
    first: StoredValue | undefined,
    mayWait: boolean,
    waited: boolean,
  ): MaybePromise<CacheDecision> {
    const routeVary = this.routeVary(req.config);
    const names = first?.kind === "vary" ? first.names : routeVary;
    if (names.length === 0) return this.#decide(req, reqCC, primary, primary, first, false, mayWait, waited);
    const record = first?.kind === "vary";
    const key = variantKey(primary, names, selecting(req));
    const value = this.#get(key);
    if (value instanceof Promise) {
      return value.then((v) => this.#decide(req, reqCC, primary, key, v, record, mayWait, waited));
    }
    return this.#decide(req, reqCC, primary, key, value, record, mayWait, waited);
  }

  #decide(
    req: CacheRequest,
    reqCC: CacheControl,
    primary: string,
    key: string,
    value: StoredValue | undefined,
    hadRecord: boolean,
    mayWait: boolean,
    waited: boolean,
  ): MaybePromise<CacheDecision> {
    const entry = value?.kind === "response" ? value : null;
    const now = this.now();
    if (entry !== null && reuse(entry, reqCC, now) !== "validate") {
      const result = waited ? "coalesced" : "hit";
      this.observer?.request(req.route, result);
      return { kind: "hit", entry, request: req, result, at: now, revalidate: null };
    }
    if (
      entry !== null &&
      mayServeWhileRevalidating(entry, this.staleWindows(entry, req.config), reqCC, now)
    ) {
      this.observer?.request(req.route, "stale_while_revalidate");
      // One background revalidation per key: a fill in flight (a revalidation, or a request's own forward)
      // will store what it gets.
      let revalidate: CacheExchange | null = null;
      if (!this.#fills.has(key)) {
        const fill = this.#newFill(key, req.waitMs ?? this.coalesceWaitMs);
        const get: CacheRequest = req.method === "GET" ? req : { ...req, method: "GET" };
        revalidate = new CacheExchange(
          this,
          get,
          NO_DIRECTIVES,
          "stale",
          null,
          primary,
          key,
          entry,
          fill,
          true,
        );
        revalidate.background = true;
      }
      return { kind: "hit", entry, request: req, result: "stale_while_revalidate", at: now, revalidate };
    }
    if (reqCC.onlyIfCached) {
      this.observer?.request(req.route, "miss");
      return UNSATISFIABLE;
    }
    const fill = this.#fills.get(key);
    if (fill !== undefined && mayWait) return this.#wait(fill, req);
    // A partial request that no stored response answers goes to the origin as it is, and its 206 is not
    // stored (the cache fills from full responses only).
    if (req.method === "GET" && req.headers.range !== undefined && req.ignoreRange !== true)
      return this.#bypass(req, "range");
    // A HEAD that nothing stored answers is sent as a GET, whose response fills the cache (the client
    // gets its head only): later GETs and HEADs are hits. nginx (proxy_cache_convert_head) and Varnish do
    // the same. With `no-store` the HEAD goes on as it is.
    const mayStore = mayFill(req.method, reqCC) && !(req.method === "HEAD" && this.#passesHead(key, now));
    let mine: Fill | null = null;
    if (mayStore && fill === undefined) {
      mine = this.#newFill(key, req.waitMs ?? this.coalesceWaitMs);
    }
    const mode: Forward =
      entry === null
        ? hadRecord
          ? "vary-miss"
          : "miss"
        : entry.lifetimeMs > currentAgeMs(entry, now)
          ? "request"
          : "stale";
    return {
      kind: "forward",
      exchange: new CacheExchange(this, req, reqCC, mode, null, primary, key, entry, mine, mayStore),
    };
  }

  #bypass(req: CacheRequest, reason: BypassReason): CacheDecision {
    this.observer?.request(req.route, "bypass");
    return {
      kind: "forward",
      exchange: new CacheExchange(this, req, null, "bypass", reason, "", "", null, null, false),
    };
  }

  async #wait(fill: Fill, req: CacheRequest): Promise<CacheDecision> {
    await fill.promise;
    return this.#lookup(req, false, true);
  }

  #newFill(key: string, waitMs: number): Fill {
    let resolve: () => void = noop;
    const promise = new Promise<void>((r) => (resolve = r));
    const fill: Fill = {
      promise,
      release: () => {
        clearTimeout(fill.timer);
        if (this.#fills.get(key) === fill) this.#fills.delete(key);
        resolve();
      },
      timer: setTimeout(() => fill.release(), waitMs),
    };
    fill.timer.unref();
    this.#fills.set(key, fill);
    return fill;
  }

  /**
   * The stale windows of a stored response on a route (RFC 5861): from its stored Cache-Control (a 304
   * that freshened it updated that too) and the route's defaults. Read only for stale entries.
   */
  staleWindows(e: StoredResponse, config: RouteCache): StaleWindows {
    return staleWindowsMs(parseCacheControl(e.headers["cache-control"]), config);
  }

  /** Answers a hit: the stored response with Age and Cache-Status, or 304 to a matching conditional. */
  respond(hit: CacheHit, res: ResponseTarget, extra?: OutgoingHttpHeaders): void {
    const e = hit.entry;
    const age = currentAgeMs(e, hit.at);
    const ttl = Math.floor((e.lifetimeMs - age) / 1000);
    const member =
      hit.result === "coalesced"
        ? cacheStatusMember(this.name, { fwd: "miss", fwdStatus: e.status, collapsed: true, ttl })
        : hit.result === "stale_while_revalidate"
          ? cacheStatusMember(this.name, { hit: true, ttl, detail: "stale-while-revalidate" })
          : this.#hitPrefix + ttl;
    this.writeEntry(res, e, hit.request, age, member, extra);
  }

  /** Writes a stored response to the client (Age from `ageMs`; HEAD without body; 304 when it matches). */
  writeEntry(
    res: ResponseTarget,
    e: StoredResponse,
    req: CacheRequest,
    ageMs: number,
    member: string,
    extra?: OutgoingHttpHeaders,
  ): void {
    const age = String(Math.floor(ageMs / 1000));
    const status = text(e.headers["cache-status"]);
    if (
      hasClientConditional(req.headers) &&
      notModified(req.headers, e.status, e.etag, e.lastModified, e.date)
    ) {
      const h: OutgoingHttpHeaders = {};
      for (const name of NOT_MODIFIED_FIELDS) {
        const v = e.headers[name];
        if (v !== undefined) h[name] = v;
      }
      if (e.etag === null && e.lastModified !== null) h["last-modified"] = e.lastModified;
      h.age = age;
      h["cache-status"] = appendCacheStatus(status, member);
      if (extra !== undefined) Object.assign(h, extra);
      openResponse(res, 304, h).end();
      return;
    }
    const h: OutgoingHttpHeaders = Object.assign({}, e.headers);
    h.age = age;
    h["cache-status"] = appendCacheStatus(status, member);
    if (extra !== undefined) Object.assign(h, extra);
    // RFC 9110 §14: a GET for a byte range of a stored 200 gets that range (after the conditionals above).
    const range =
      req.method === "GET" && e.status === 200 && req.ignoreRange !== true
        ? entryRange(req.headers.range, req.headers["if-range"], e.etag, e.lastModified, e.body.length)
        : null;
    if (range?.kind === "range") {
      h["content-range"] = `bytes ${range.start}-${range.end}/${e.body.length}`;
      h["content-length"] = range.end - range.start + 1;
      this.#send(openResponse(res, 206, h), e.body.subarray(range.start, range.end + 1));
      return;
    }
    if (range?.kind === "unsatisfiable") {
      const code: GatewayErrorCode = "range_not_satisfiable";
      const body = JSON.stringify({
        error: { code, message: `the range is outside the ${e.body.length} bytes of the response` },
      });
      openResponse(res, 416, {
        "content-type": "application/json",
        "content-length": Buffer.byteLength(body),
        "content-range": `bytes */${e.body.length}`,
        "x-meshgate-error": code,
        "cache-status": h["cache-status"],
        ...extra,
      }).end(body);
      return;
    }
    if (e.status !== 204) h["content-length"] = e.body.length;
    const out = openResponse(res, e.status, h);
    if (req.method === "HEAD") out.end();
    else this.#send(out, e.body);
  }

  /**
   * Writes a stored body under the send timeout: one end() for a body of one slice; a larger one slice by
   * slice, each written once the client took the one before ('drain'), the timer armed while it takes
   * nothing. Never more than a slice buffered beyond what the socket holds.
   */
  #send(out: Writable, body: Buffer): void {
    const timeoutMs = this.sendTimeoutMs;
    if (timeoutMs <= 0 || body.length <= SEND_SLICE) {
      out.end(body);
      return;
    }
    let offset = 0;
    let timer: NodeJS.Timeout | null = null;
    const stop = () => {
      if (timer !== null) clearTimeout(timer);
      timer = null;
    };
    const pump = () => {
      stop();
      while (offset < body.length) {
        const next = Math.min(offset + SEND_SLICE, body.length);
        const slice = body.subarray(offset, next);
        offset = next;
        if (offset === body.length) {
          out.off("close", stop);
          out.end(slice);
          return;
        }
        if (!out.write(slice)) {
          timer = setTimeout(() => {
            timer = null;
            out.off("drain", pump);
            this.#onSendTimeout?.();
            out.destroy(sendTimeoutError());
          }, timeoutMs);
          out.once("drain", pump);
          return;
        }
      }
    };
    out.once("close", stop);
    pump();
  }

  /**
   * RFC 9111 §4.4: a non-error response (2xx, 3xx) to an unsafe method invalidates the stored responses
   * of its target URI, and of the URIs in Location and Content-Location when they are on the same host.
   * Returns how many entries were removed.
   */
  async invalidate(
    method: string,
    status: number,
    host: string,
    path: string,
    query: string,
    responseHeaders?: HeaderBag,
  ): Promise<number> {
    if (SAFE_METHODS.has(method) || status < 200 || status >= 400) return 0;
    const urls = new Set([query.length > 0 ? `${path}?${query}` : path]);
    for (const field of ["location", "content-location"]) {
      const v = text(responseHeaders?.[field]);
      if (v === undefined) continue;
      const c = canonicalizeTarget(v);
      if (c.ok && (c.host === null || c.host === host)) urls.add(c.query ? `${c.path}?${c.query}` : c.path);
    }
    const list = [...urls];
    try {
      this.#onInvalidate?.(host, list);
    } catch {
      // Best effort (the other processes' entries still expire); never a failure of this request.
    }
    return this.dropUrls(host, list);
  }

  /**
   * Removes every stored response of these URLs (path and query, canonical) on `host`: all routes,
   * principals and variants. What invalidate() does here, and what another process's invalidation does
   * when it is relayed (HttpCacheOptions.onInvalidate). Resolves with how many entries went.
   */
  async dropUrls(host: string, urls: readonly string[]): Promise<number> {
    let n = 0;
    for (const url of urls) n += await this.#purgeOp(() => this.store.purgeUrl(url, host));
    return n;
  }

  /**
   * Removes entries: every variant of a URL, every URL under a prefix, or everything. Rejects when the
   * store failed (the purge API then answers 503: a shared store may still hold what was to be purged).
   */
  async purge(req: PurgeRequest): Promise<number> {
    if ("all" in req) return this.#purgeOp(() => this.store.purgeAll(), true);
    if ("url" in req) return this.#purgeOp(() => this.store.purgeUrl(req.url, req.host), true);
    return this.#purgeOp(() => this.store.purgePrefix(req.prefix, req.host), true);
  }

  async #purgeOp(op: () => MaybePromise<number>, rethrow = false): Promise<number> {
    try {
      return await op();
    } catch (err) {
      this.observer?.storeError("purge");
      if (rethrow) throw err;
      return 0;
    }
  }

  #get(key: string): MaybePromise<StoredValue | undefined> {
    try {
      const v = this.store.get(key);
      if (v instanceof Promise) {
        return v.catch(() => {
          this.observer?.storeError("get");
          return undefined;
        });
      }
      return v;
    } catch {
      this.observer?.storeError("get");
      return undefined;
    }
  }

  /** Stores a value; resolves when it is visible to lookups (false when the store refused or failed). */
  set(key: string, value: StoredValue, ttlMs: number): MaybePromise<boolean> {
    try {
      const r = this.store.set(key, value, ttlMs);
      if (r instanceof Promise) {
        return r.catch(() => {
          this.observer?.storeError("set");
          return false;
        });
      }
      return r;
    } catch {
      this.observer?.storeError("set");
      return false;
    }
  }

  delete(key: string): void {
    try {
      const r = this.store.delete(key);
      if (r instanceof Promise) r.catch(() => this.observer?.storeError("delete"));
    } catch {
      this.observer?.storeError("delete");
    }
  }
}

/**
 * One request forwarded by the cache: a bypass, a miss (maybe filling the cache for waiters), or a
 * revalidation of a stored response. Created by HttpCache.lookup; the gateway calls prepare() on the
 * upstream request headers, onHead() from the forwarder's response-head callback, and finish() when the
 * forward is over (whatever its outcome).
 */
export class CacheExchange {
  readonly #cache: HttpCache;
  readonly request: CacheRequest;
  readonly #reqCC: CacheControl | null;
  readonly mode: Forward;
  readonly #bypass: BypassReason | null;
  readonly #primary: string;
  readonly #key: string;
  readonly #stale: StoredResponse | null;
  #fill: Fill | null;
  readonly #mayStore: boolean;
  #validating = false;
  /** A tee is capturing the body: it settles the fill. */
  #teeing = false;
  #requestTime = 0;
  #reported = false;
  /**
   * A background revalidation (RFC 5861 §3): no client waits on it — it is not counted as a request
   * (the request that started it was, as stale_while_revalidate) and never answers with a stale entry.
   */
  background = false;
  /** The client was answered with the stored response instead of an upstream error (serveStaleOnError). */
  servedStale = false;

  constructor(
    cache: HttpCache,
    request: CacheRequest,
    reqCC: CacheControl | null,
    mode: Forward,
    bypass: BypassReason | null,
    primary: string,
    key: string,
    stale: StoredResponse | null,
    fill: Fill | null,
    mayStore: boolean,
  ) {
    this.#cache = cache;
    this.request = request;
    this.#reqCC = reqCC;
    this.mode = mode;
    this.#bypass = bypass;
    this.#primary = primary;
    this.#key = key;
    this.#stale = stale;
    this.#fill = fill;
    this.#mayStore = mayStore;
  }

  /**
   * The method to send upstream: GET whenever the response may be stored (a HEAD miss fetches the GET
   * response to fill the cache), else the client's.
   */
  get upstreamMethod(): string {
    return this.#mayStore ? "GET" : this.request.method;
  }

  /** The client asked with HEAD: it gets the response's head, never its body. */
  get #headOnly(): boolean {
    return this.request.method === "HEAD";
  }

  /**
   * Adjusts the headers sent upstream: when the response may be stored, the client's own conditionals and
   * ranges are removed (the cache wants the full response, and answers the client's conditional itself) and,
   * for a stored response being revalidated, its validators are sent (RFC 9111 §4.3.1).
   */
  prepare(headers: Record<string, string | string[]>): void {
    this.#requestTime = this.#cache.now();
    if (!this.#mayStore) return;
    delete headers["if-none-match"];
    delete headers["if-modified-since"];
    // A background revalidation started by a range request fetches the whole response.
    delete headers.range;
    delete headers["if-range"];
    const s = this.#stale;
    if (s === null) return;
    if (s.etag !== null) headers["if-none-match"] = s.etag;
    if (s.lastModified !== null) headers["if-modified-since"] = s.lastModified;
    this.#validating = s.etag !== null || s.lastModified !== null;
  }

  /**
   * The response head arrived from upstream. Writes the client's response head (with Cache-Status) and
   * returns where the body goes: the client's response itself, a tee that also captures it for the
   * store, or a sink (a 304 answered from the stored response).
   *
   * `headers` are the upstream's end-to-end response headers; they go on to the client with Cache-Status
   * added, and `extra` (headers of this response only, never stored). `framed`: the body's end is
   * explicit (Content-Length, chunked, an HTTP/2 stream end) — a close-delimited body is never stored,
   * since its truncation could not be detected.
   */
  onHead(
    status: number,
    headers: OutgoingHttpHeaders,
    res: ResponseTarget,
    framed = true,
    extra?: OutgoingHttpHeaders,
  ): Writable {
    const upstreamHeaders: HeaderBag = headers;
    const responseHeaders = headers;
    const cache = this.#cache;
    const responseTime = cache.now();
    const route = this.request.route;
    if (this.#bypass !== null) {
      responseHeaders["cache-status"] = appendCacheStatus(
        responseHeaders["cache-status"],
        cacheStatusMember(cache.name, { fwd: "bypass", fwdStatus: status, detail: this.#bypass }),
      );
      if (extra !== undefined) Object.assign(responseHeaders, extra);
      return openResponse(res, status, responseHeaders);
    }
    if (this.#validating && status === 304) return this.#notModified(headers, res, responseTime, extra);
    // RFC 5861 §4: an error from upstream is answered with the stored response when it allows that.
    if (isServerError(status) && this.serveStaleOnError(res, extra, status)) return sink();

    const resCC = parseCacheControl(upstreamHeaders["cache-control"]);
    const reason: NotStoredReason | null = this.#mayStore
      ? notStorable({
          method: this.upstreamMethod,
          status,
          request: this.#reqCC!,
          response: resCC,
          headers: upstreamHeaders,
          routeTtlMs: this.request.config.ttlMs,
          maxEntryBytes: cache.maxBodyBytes(this.request.config),
          framed,
          stale: this.request.config,
        })
      : this.#headOnly
        ? "head"
        : "request-no-store";
    this.#report(this.mode === "stale" ? "stale" : "miss");
    const params: CacheStatusParams = {
      fwd: this.mode,
      fwdStatus: status,
      ...(reason === null ? { stored: true } : { detail: reason }),
    };
    if (reason !== null) {
      if (this.#mayStore) cache.observer?.notStored(route, reason);
      // A full response replacing a stored one that may no longer be stored: drop the stored one.
      if (this.#stale !== null && this.#mayStore && status < 500) cache.delete(this.#key);
      this.#releaseFill();
      responseHeaders["cache-status"] = appendCacheStatus(
        responseHeaders["cache-status"],
        cacheStatusMember(cache.name, params),
      );
      if (extra !== undefined) Object.assign(responseHeaders, extra);
      const out = openResponse(res, status, responseHeaders);
      if (!this.#headOnly || !this.#mayStore) return out;
      // A HEAD sent upstream as a GET: the client has its answer; the body is read and dropped. When the
      // same GET would not be stored next time either, the next HEADs of the key go as HEADs for a while.
      if (HEAD_PASS_REASONS.has(reason)) cache.rememberUnstorableForHead(this.#key);
      out.end();
      return sink();
    }
    const stored = storedHeaders(responseHeaders);
    responseHeaders["cache-status"] = appendCacheStatus(
      responseHeaders["cache-status"],
      cacheStatusMember(cache.name, params),
    );
    const etag = text(upstreamHeaders.etag) ?? null;
    const lastModified = text(upstreamHeaders["last-modified"]) ?? null;
    // RFC 9110 §6.6.1: a cache stores a response without Date with the time it was received.
    if (stored.date === undefined) stored.date = new Date(responseTime).toUTCString();
    const date = text(stored.date) ?? null;
    const pending: PendingEntry = {
      status,
      headers: stored,
      requestTime: this.#requestTime || responseTime,
      responseTime,
      initialAgeMs: initialAgeMs(
        parseAgeSeconds(upstreamHeaders.age),
        parseHttpDate(date ?? undefined),
        this.#requestTime || responseTime,
        responseTime,
      ),
      lifetimeMs: freshnessLifetimeMs(
        status,
        resCC,
        upstreamHeaders,
        responseTime,
        this.request.config.ttlMs,
      ),
      mustRevalidate:
        resCC.mustRevalidate || resCC.proxyRevalidate || resCC.sMaxAge !== null || resCC.noCache,
      staleMs: longestStaleMs(staleWindowsMs(resCC, this.request.config)),
      etag,
      lastModified,
      date,
      vary: parseVary(text(upstreamHeaders.vary)) as readonly string[],
      declaredLength:
        upstreamHeaders["content-length"] === undefined
          ? -1
          : Number(text(upstreamHeaders["content-length"])),
    };
    // The client's own conditional (removed from the upstream request) is answered here.
    let toClient = true;
    if (
      hasClientConditional(this.request.headers) &&
      notModified(this.request.headers, status, etag, lastModified, date)
    ) {
      const h: OutgoingHttpHeaders = {};
      for (const name of NOT_MODIFIED_FIELDS)
        if (responseHeaders[name] !== undefined) h[name] = responseHeaders[name];
      if (etag === null && lastModified !== null) h["last-modified"] = lastModified;
      h["cache-status"] = responseHeaders["cache-status"];
      if (extra !== undefined) Object.assign(h, extra);
      openResponse(res, 304, h).end();
      toClient = false;
    }
    if (toClient && extra !== undefined) Object.assign(responseHeaders, extra);
    let out = toClient ? openResponse(res, status, responseHeaders) : null;
    if (out !== null && this.#headOnly) {
      // A HEAD sent upstream as a GET: the client has its answer now; the tee captures the body alone.
      out.end();
      out = null;
    }
    this.#teeing = true;
    return new CacheTee(this, out, cache.maxBodyBytes(this.request.config), pending);
  }

  /** A 304 to the cache's conditional request: freshen the stored response and answer from it. */
  #notModified(
    received: OutgoingHttpHeaders,
    res: ResponseTarget,
    responseTime: number,
    extra: OutgoingHttpHeaders | undefined,
  ): Writable {
    const upstreamHeaders: HeaderBag = received;
    const cache = this.#cache;
    const stale = this.#stale!;
    if (!notModifiedSelects(stale.etag, text(upstreamHeaders.etag))) {
      // RFC 9111 §4.3.4: a 304 for another representation must not update (nor serve) the stored one.
      cache.delete(this.#key);
      this.#releaseFill();
      this.#report("stale");
      const code: GatewayErrorCode = "upstream_bad_revalidation";
      const body = JSON.stringify({
        error: {
          code,
          message: "the upstream's 304 does not match the stored response",
        },
      });
      openResponse(res, 502, {
        "content-type": "application/json",
        "content-length": Buffer.byteLength(body),
        "x-meshgate-error": code,
        "cache-status": cacheStatusMember(cache.name, {
          fwd: this.mode,
          fwdStatus: 304,
          detail: "validator-mismatch",
        }),
        ...extra,
      }).end(this.request.method === "HEAD" ? undefined : body);
      return sink();
    }
    const headers = freshenHeaders(stale.headers, storedHeaders(received));
    const resCC = parseCacheControl(headers["cache-control"]);
    const config = this.request.config;
    const date = text(headers.date) ?? null;
    const entry: StoredResponse = {
      ...stale,
      headers,
      requestTime: this.#requestTime || responseTime,
      responseTime,
      initialAgeMs: initialAgeMs(
        parseAgeSeconds(upstreamHeaders.age),
        parseHttpDate(date ?? undefined),
        this.#requestTime || responseTime,
        responseTime,
      ),
      lifetimeMs: freshnessLifetimeMs(stale.status, resCC, headers, responseTime, config.ttlMs),
      mustRevalidate:
        resCC.mustRevalidate || resCC.proxyRevalidate || resCC.sMaxAge !== null || resCC.noCache,
      etag: text(headers.etag) ?? null,
      lastModified: text(headers["last-modified"]) ?? null,
      date,
    };
    const reason = notStorable({
      method: "GET",
      status: entry.status,
      request: this.#reqCC!,
      response: resCC,
      headers,
      routeTtlMs: config.ttlMs,
      maxEntryBytes: cache.maxBodyBytes(config),
      framed: true,
      stale: config,
    });
    const staleMs = longestStaleMs(staleWindowsMs(resCC, config));
    const retention = retentionMs(entry, cache.staleRetentionMs, responseTime, staleMs);
    if (reason === null && retention > 0) {
      const r = cache.set(this.#key, entry, retention);
      if (r instanceof Promise) void r.then(() => this.#releaseFill());
      else this.#releaseFill();
    } else {
      cache.delete(this.#key);
      this.#releaseFill();
    }
    this.#report("revalidated");
    const age = currentAgeMs(entry, responseTime);
    const member = cacheStatusMember(cache.name, {
      fwd: this.mode,
      fwdStatus: 304,
      ttl: Math.floor((entry.lifetimeMs - age) / 1000),
    });
    // A cookie the upstream set on the 304 goes to this client only (never stored).
    const setCookie = upstreamHeaders["set-cookie"];
    cache.writeEntry(
      res,
      entry,
      this.request,
      age,
      member,
      setCookie === undefined ? extra : { ...extra, "set-cookie": setCookie as string | string[] },
    );
    return sink();
  }

  /**
   * RFC 5861 §4: answers the client with the stored response instead of an upstream error — the
   * upstream's 500/502/503/504 (`upstreamStatus`), or no response at all (null: refused, timed out, reset,
   * no endpoint, breaker open) — when the stored response (or the request's own `stale-if-error`) allows it.
   * Returns false, writing nothing, when it does not: the caller answers with the error. Never for a
   * bypass, a miss, or a background revalidation.
   */
  serveStaleOnError(
    res: ResponseTarget,
    extra: OutgoingHttpHeaders | undefined,
    upstreamStatus: number | null,
  ): boolean {
    const s = this.#stale;
    if (s === null || this.background || this.#bypass !== null) return false;
    const cache = this.#cache;
    const now = cache.now();
    if (!mayServeOnError(s, cache.staleWindows(s, this.request.config), this.#reqCC, now)) return false;
    this.servedStale = true;
    this.#releaseFill();
    this.#report("stale_if_error");
    const age = currentAgeMs(s, now);
    const member = cacheStatusMember(cache.name, {
      fwd: this.mode,
      ...(upstreamStatus === null ? {} : { fwdStatus: upstreamStatus }),
      ttl: Math.floor((s.lifetimeMs - age) / 1000),
      detail: "stale-if-error",
    });
    cache.writeEntry(res, s, this.request, age, member, extra);
    return true;
  }

  /** Stores a completely received body (called by the tee); releases the waiters once it is visible. */
  commit(p: PendingEntry, body: Buffer): void {
    const cache = this.#cache;
    if (p.declaredLength >= 0 && body.length !== p.declaredLength) {
      this.abandon();
      return;
    }
    const entry: StoredResponse = {
      kind: "response",
      status: p.status,
      headers: p.headers,
      body,
      requestTime: p.requestTime,
      responseTime: p.responseTime,
      initialAgeMs: p.initialAgeMs,
      lifetimeMs: p.lifetimeMs,
      mustRevalidate: p.mustRevalidate,
      etag: p.etag,
      lastModified: p.lastModified,
      date: p.date,
    };
    const retention = retentionMs(entry, cache.staleRetentionMs, cache.now(), p.staleMs);
    if (retention <= 0) {
      cache.observer?.notStored(this.request.route, "no-freshness");
      this.abandon();
      return;
    }
    const names = unionNames(cache.routeVary(this.request.config), p.vary);
    const primary = this.#primary;
    // Without selecting headers the response sits under the primary key itself; with them, the Vary
    // record does, and the response under its variant key.
    const key = names.length === 0 ? primary : variantKey(primary, names, selecting(this.request));
    const writes: MaybePromise<boolean>[] = [cache.set(key, entry, retention)];
    if (names.length > 0) writes.push(cache.set(primary, { kind: "vary", names }, retention));
    if (writes.some((w) => w instanceof Promise)) void Promise.all(writes).then(() => this.#releaseFill());
    else this.#releaseFill();
  }

  /** The body outgrew the route's maxEntryBytes: it streams on uncached, and waiters go upstream. */
  tooLarge(): void {
    this.#cache.observer?.notStored(this.request.route, "too-large");
    if (this.#headOnly) this.#cache.rememberUnstorableForHead(this.#key);
    this.#releaseFill();
  }

  /** The response will not be stored (cut short, client gone): waiters go upstream. */
  abandon(): void {
    this.#releaseFill();
  }

  /**
   * The forward is over (any outcome): the result is counted, and waiters are released unless a tee is
   * still capturing the body (it commits or abandons when the body ends; pools may resolve before the
   * body writable finished).
   */
  finish(): void {
    this.#report(this.mode === "stale" ? "stale" : this.mode === "bypass" ? "bypass" : "miss");
    if (!this.#teeing) this.#releaseFill();
  }

  #releaseFill(): void {
    const f = this.#fill;
    if (f === null) return;
    this.#fill = null;
    f.release();
  }

  #report(result: CacheResult): void {
    // Bypasses are counted at lookup; a background revalidation is not a request.
    if (this.#reported || this.mode === "bypass" || this.background) return;
    this.#reported = true;
    this.#cache.observer?.request(this.request.route, result);
  }
}

/** What the tee needs to build the stored response once the body is complete. */
interface PendingEntry {
  readonly status: number;
  readonly headers: Record<string, string | string[]>;
  readonly requestTime: number;
  readonly responseTime: number;
  readonly initialAgeMs: number;
  readonly lifetimeMs: number;
  readonly mustRevalidate: boolean;
  /** How long it may be served stale (RFC 5861 windows): the store keeps it that long past its lifetime. */
  readonly staleMs: number;
  readonly etag: string | null;
  readonly lastModified: string | null;
  readonly date: string | null;
  readonly vary: readonly string[];
  /** Content-Length, or -1. */
  readonly declaredLength: number;
}

/**
 * How long to keep an entry: its remaining freshness, plus the stale retention when it can be
 * revalidated, or the longest it may be served stale (RFC 5861) if that is longer.
 */
function retentionMs(e: StoredResponse, staleRetentionMs: number, now: number, staleMs: number): number {
  const age = currentAgeMs(e, now);
  const remaining = Math.max(0, e.lifetimeMs - age);
  const validators = e.etag !== null || e.lastModified !== null;
  // Serving stale is bounded by staleness (age − lifetime), so the extra time counts from the expiry.
  const stale = Math.max(0, e.lifetimeMs + staleMs - age) - remaining;
  return remaining + Math.max(validators ? staleRetentionMs : 0, stale);
}

/** The headers that select a request's variant: as the upstream gets them (CacheRequest.forwardedHeaders). */
const selecting = (req: CacheRequest): HeaderBag => req.forwardedHeaders?.() ?? req.headers;

/** Where a variant is stored: the primary key, a tab, and the secondary key of its selecting headers. */
function variantKey(primary: string, names: readonly string[], headers: HeaderBag): string {
  return `${primary}\t${secondaryKey(names, headers)}`;
}

/** The response fields to store: string values, without per-message and per-client fields. */
function storedHeaders(h: OutgoingHttpHeaders): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {};
  for (const name in h) {
    if (UNSTORED.has(name)) continue;
    const v = h[name];
    if (v === undefined) continue;
    out[name] = typeof v === "number" ? String(v) : typeof v === "string" ? v : [...v];
  }
  return out;
}

/**
 * Passes the response body to the client as it arrives and captures up to `maxBytes` of it; the entry is
 * committed only when the body completed normally (never for a reset or truncated upstream response).
 * Backpressure from the client is respected; a client that goes away fails the tee (and so the fill).
 */
class CacheTee extends Writable {
  readonly #exchange: CacheExchange;
  /** Where the body goes on to the client; null when the client was answered already (a 304). */
  readonly #out: Writable | null;
  readonly #maxBytes: number;
  readonly #pending: PendingEntry;
  #chunks: Buffer[] | null = [];
  #size = 0;
  #waiting: ((err?: Error | null) => void) | null = null;
  #finished = false;

  constructor(exchange: CacheExchange, out: Writable | null, maxBytes: number, pending: PendingEntry) {
    super();
    this.#exchange = exchange;
    this.#out = out;
    this.#maxBytes = maxBytes;
    this.#pending = pending;
    if (out !== null) {
      out.on("drain", this.#onDrain);
      out.once("close", this.#onClose);
    }
  }

  readonly #onDrain = (): void => {
    const cb = this.#waiting;
    this.#waiting = null;
    cb?.();
  };

  readonly #onClose = (): void => {
    const cb = this.#waiting;
    this.#waiting = null;
    cb?.(new Error("the client closed the connection"));
  };

  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    if (this.#chunks !== null) {
      this.#size += chunk.length;
      if (this.#size > this.#maxBytes) {
        this.#chunks = null;
        this.#exchange.tooLarge();
      } else this.#chunks.push(chunk);
    }
    const out = this.#out;
    if (out === null) return cb();
    if (out.destroyed) return cb(new Error("the client closed the connection"));
    if (out.write(chunk)) cb();
    else this.#waiting = cb;
  }

  override _final(cb: (err?: Error | null) => void): void {
    this.#finished = true;
    this.#out?.end();
    if (this.#chunks !== null) this.#exchange.commit(this.#pending, Buffer.concat(this.#chunks, this.#size));
    this.#chunks = null;
    cb();
  }

  override _destroy(err: Error | null, cb: (err?: Error | null) => void): void {
    const out = this.#out;
    if (!this.#finished) {
      this.#chunks = null;
      this.#exchange.abandon();
      if (out !== null && !out.destroyed) out.destroy(err ?? undefined);
    }
    if (out !== null) {
      out.off("drain", this.#onDrain);
      out.off("close", this.#onClose);
    }
    // The failure went to the client's response above, and to the forwarder through its own promise: the
    // tee itself does not emit it (pools may destroy their sink without listening for its errors).
    cb();
  }
}
