/**
 * The cache's metrics in the shared registry: meshgate_cache_requests_total{route,result},
 * meshgate_cache_not_stored_total{route,reason}, meshgate_cache_evictions_total,
 * meshgate_cache_store_errors_total{operation}, and the gauges meshgate_cache_stored_bytes and
 * meshgate_cache_entries (read from the store when metrics are rendered) and
 * meshgate_cache_store_available. Counter children are kept per route, so a hit costs no label lookup.
 */
import type { CounterChild, MetricsRegistry } from "../telemetry/metrics.ts";
import type { CacheObserver, CacheResult } from "./cache.ts";
import type { NotStoredReason } from "./policy.ts";
import type { StoreStats } from "./store.ts";

export interface CacheMetrics {
  readonly observer: CacheObserver;
  /** For MemoryStore's onEvict. */
  evicted(count: number): void;
  /** The store whose size the gauges show (replaced when the cache is). */
  watch(stats: () => StoreStats): void;
  /** Whether the store answers (a remote store's outage sets 0 until it is back). */
  available(up: boolean): void;
}

export function registerCacheMetrics(registry: MetricsRegistry, proxy: string): CacheMetrics {
  const requests = registry.counter(
    "cache_requests_total",
    "Requests on caching routes, by route and result (hit, miss, stale, revalidated, bypass, coalesced, stale_while_revalidate, stale_if_error).",
    ["proxy", "route", "result"],
  );
  const notStored = registry.counter(
    "cache_not_stored_total",
    "Responses forwarded on caching routes that were not stored, by route and reason.",
    ["proxy", "route", "reason"],
  );
  const evictions = registry
    .counter("cache_evictions_total", "Entries evicted to keep the cache within its byte budget.", ["proxy"])
    .labels(proxy);
  const storeErrors = registry.counter(
    "cache_store_errors_total",
    "Cache store operations that failed (the request went on as a miss).",
    ["proxy", "operation"],
  );
  const bytes = registry
    .gauge("cache_stored_bytes", "Bytes the cache holds: keys, headers, bodies and per-entry overhead.", [
      "proxy",
    ])
    .labels(proxy);
  const entries = registry.gauge("cache_entries", "Responses the cache holds.", ["proxy"]).labels(proxy);
  const available = registry
    .gauge(
      "cache_store_available",
      "1 while the cache store answers; 0 during a Redis outage (lookups are misses, stores dropped).",
      ["proxy"],
    )
    .labels(proxy);
  let stats: (() => StoreStats) | null = null;
  registry.onCollect(() => {
    if (stats === null) return;
    const s = stats();
    bytes.set(s.bytes);
    entries.set(s.entries);
  });
  const perRoute = new Map<string, Partial<Record<CacheResult, CounterChild>>>();
  return {
    observer: {
      request(route, result) {
        let m = perRoute.get(route);
        if (m === undefined) perRoute.set(route, (m = {}));
        (m[result] ??= requests.labels(proxy, route, result)).inc();
      },
      notStored(route: string, reason: NotStoredReason) {
        notStored.labels(proxy, route, reason).inc();
      },
      storeError(operation) {
        storeErrors.labels(proxy, operation).inc();
      },
    },
    evicted: (n) => evictions.inc(n),
    watch: (s) => {
      stats = s;
    },
    available: (up) => available.set(up ? 1 : 0),
  };
}
