/**
 * A small caching proxy for module-level tests: a real HTTP server on 127.0.0.1 that puts HttpCache in
 * front of a real upstream, forwarding misses with the gateway's own forward() and UpstreamCluster (so
 * the tee runs under the real forwarding contract). The gateway wiring follows the same steps.
 *
 * A request header `x-test-principal` stands in for the principal the gateway's authentication would
 * establish; it is passed upstream as `x-principal`.
 */
import http, { type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { HttpCache, type CacheResult, type RouteCache } from "../../runtime/cache/cache.ts";
import type { NotStoredReason } from "../../runtime/cache/policy.ts";
import { MemoryStore } from "../../runtime/cache/store.ts";
import type { Cluster } from "../../runtime/contract/schema.ts";
import { canonicalizeTarget } from "../../runtime/decide/canonical.ts";
import { upstreamRequestHeaders } from "../../runtime/net/headers.ts";
import { NOT_FORWARDED } from "../../runtime/gateway/headers.ts";
import { PoolCache, UpstreamCluster } from "../../runtime/upstream/cluster.ts";
import { forward, type ForwardObserver } from "../../runtime/upstream/forward.ts";
import type { CancelToken } from "../../runtime/upstream/h1pool.ts";

export interface CacheProxy {
  readonly url: string;
  readonly cache: HttpCache;
  readonly store: MemoryStore;
  /** Results reported to the observer, in order. */
  readonly results: CacheResult[];
  readonly notStored: NotStoredReason[];
  /** Moves the cache's clock (ms). */
  advance(ms: number): void;
  /** The cache's clock (an upstream in sync with it sends this in Date). */
  now(): number;
  close(): Promise<void>;
}

export interface ProxyOptions {
  readonly maxBytes?: number;
  readonly coalesceWaitMs?: number;
  readonly staleRetentionMs?: number;
}

const quietForward: ForwardObserver = { attempt() {}, retry() {}, budgetExhausted() {}, overflow() {} };

/** The route cache settings a spec route with `cache: { ttl: 30s }` translates to. */
export const ROUTE: RouteCache = {
  ttlMs: 30_000,
  vary: [],
  perPrincipal: false,
  maxEntryBytes: 1024 * 1024,
  staleWhileRevalidateMs: 0,
  staleIfErrorMs: 0,
};

export async function startCacheProxy(
  upstreamPort: number,
  routes: Readonly<Record<string, RouteCache>>,
  options: ProxyOptions = {},
): Promise<CacheProxy> {
  let offset = 0;
  const results: CacheResult[] = [];
  const notStored: NotStoredReason[] = [];
  const store = new MemoryStore({
    maxBytes: options.maxBytes ?? 64 * 1024 * 1024,
    now: () => Date.now() + offset,
  });
  const cache = new HttpCache({
    store,
    now: () => Date.now() + offset,
    ...(options.coalesceWaitMs !== undefined ? { coalesceWaitMs: options.coalesceWaitMs } : {}),
    ...(options.staleRetentionMs !== undefined ? { staleRetentionMs: options.staleRetentionMs } : {}),
    observer: {
      request: (_route, result) => results.push(result),
      notStored: (_route, reason) => notStored.push(reason),
      storeError: () => {},
    },
  });
  const config: Cluster = {
    name: "app",
    service: "app",
    namespace: "t",
    port: upstreamPort,
    protocol: "http1",
    loadBalancer: "round-robin",
    connectTimeoutMs: 1000,
    circuitBreaker: { maxConnections: 1024, maxPendingRequests: 1024, maxRequests: 4096 },
    outlierDetection: {
      consecutive5xx: 1000,
      intervalMs: 10_000,
      baseEjectionMs: 1,
      maxEjectedPercent: 0,
      panicThreshold: 0,
    },
    retryBudget: { ratio: 0, minPerSecond: 0 },
    healthCheck: null,
    tls: { mode: "none" },
  };
  const pools = new PoolCache({ connections: 1024 });
  const cluster = new UpstreamCluster(
    config,
    { kind: "static", endpoints: { app: [{ host: "127.0.0.1", port: upstreamPort }] } },
    pools,
    { onError() {}, onEjection() {}, onHealthChange() {} },
  );
  await cluster.start();

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const method = req.method ?? "GET";
    const target = canonicalizeTarget(req.url ?? "/");
    if (!target.ok) {
      res.writeHead(400).end();
      return;
    }
    const routeName = target.path.split("/")[1] ?? "";
    const route = routes[routeName];
    const principal =
      typeof req.headers["x-test-principal"] === "string" ? req.headers["x-test-principal"] : null;
    const headers = upstreamRequestHeaders(req.headers, NOT_FORWARDED);
    delete headers["x-test-principal"];
    if (principal !== null) headers["x-principal"] = principal;
    let exchange = null;
    if (route && (method === "GET" || method === "HEAD")) {
      let d = cache.lookup({
        route: routeName,
        config: route,
        method,
        host: "127.0.0.1",
        path: target.path,
        query: target.query,
        headers: req.headers,
        principal,
      });
      if (d instanceof Promise) {
        d = await d;
        if (res.destroyed) {
          if (d.kind === "forward") d.exchange.finish();
          return;
        }
      }
      if (d.kind === "hit") return cache.respond(d, res);
      if (d.kind === "unsatisfiable") {
        res.writeHead(504, { "content-length": 0 }).end();
        return;
      }
      exchange = d.exchange;
      exchange.prepare(headers);
    }
    const body = method === "GET" || method === "HEAD" ? null : req;
    // As the gateway: the client leaving cancels the upstream request.
    const cancel: CancelToken = { aborted: false, onabort: null };
    res.once("close", () => {
      if (!res.writableFinished && !res.errored) {
        cancel.aborted = true;
        cancel.onabort?.();
      }
    });
    const result = await forward(
      cluster,
      {
        cancel,
        method: exchange?.upstreamMethod ?? method,
        path: target.query ? `${target.path}?${target.query}` : target.path,
        headers,
        body,
        timeoutMs: 5000,
        retry: { attempts: 0, perTryTimeoutMs: 0, retryOn: [], backoff: { baseMs: 1, maxMs: 1 } },
        hashKey: "",
      },
      (status, upstreamHeaders, closeDelimited) => {
        // The pools hand on end-to-end headers only.
        void cache.invalidate(method, status, "127.0.0.1", target.path, target.query, upstreamHeaders);
        if (exchange) return exchange.onHead(status, upstreamHeaders, res, !closeDelimited);
        res.writeHead(status, upstreamHeaders);
        return res;
      },
      quietForward,
    );
    exchange?.finish();
    if (result.kind === "error") {
      if (result.headersSent) res.destroy();
      else res.writeHead(502, { "content-length": 0 }).end();
    }
  }

  const server = http.createServer((req, res) => {
    handle(req, res).catch((err: Error) => {
      if (!res.headersSent) res.writeHead(500).end(err.message);
      else res.destroy();
    });
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    cache,
    store,
    results,
    notStored,
    advance: (ms) => {
      offset += ms;
    },
    now: () => Date.now() + offset,
    close: async () => {
      server.closeAllConnections();
      await new Promise<void>((r) => server.close(() => r()));
      cluster.close();
      await pools.closeAll();
    },
  };
}
