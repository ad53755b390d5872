/**
 * The cache's metrics in the shared registry: meshgate_cache_requests_total{route,result},
 * meshgate_cache_not_stored_total{route,reason}, meshgate_cache_evictions_total,
 * meshgate_cache_store_errors_total{operation}, and the gauges meshgate_cache_stored_bytes and
 * meshgate_cache_entries (read from the store when metrics are rendered),
 * meshgate_cache_store_available, and the Redis store's local layer: meshgate_cache_local_active,
 * meshgate_cache_local_bytes and meshgate_cache_local_lookups_total{result}. Counter children are kept per route, so a hit costs no label lookup.
 */
import type { CounterChild, MetricsRegistry } from "../telemetry/metrics.ts";
import type { CacheObserver, CacheResult } from "./cache.ts";
import type { NotStoredReason } from "./policy.ts";
import type { CacheStore } from "./store.ts";

export interface CacheMetrics {
  readonly observer: CacheObserver;
  /** For MemoryStore's onEvict. */
  evicted(count: number): void;
  /** The store whose size the gauges show (replaced when the cache is). */
  watch(store: CacheStore): void;
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
  const localActive = registry
    .gauge(
      "cache_local_active",
      "1 while the Redis store's local layer answers lookups in this process (Redis tracks its keys); 0 while it is off (a connection down, tracking refused, or not configured).",
      ["proxy"],
    )
    .labels(proxy);
  const localBytes = registry
    .gauge("cache_local_bytes", "Bytes the Redis store's local layer holds in this process.", ["proxy"])
    .labels(proxy);
  const localLookups = registry.counter(
    "cache_local_lookups_total",
    "Store lookups while the Redis store's local layer was on: hit (answered in this process, no round trip to Redis) or miss (sent on to Redis).",
    ["proxy", "result"],
  );
  const localHits = localLookups.labels(proxy, "hit");
  const localMisses = localLookups.labels(proxy, "miss");
  // The store counts (no work on the lookup path beyond an add); a replaced store starts again from 0.
  let counted = { store: null as CacheStore | null, hits: 0, misses: 0 };
  let watched: CacheStore | null = null;
  registry.onCollect(() => {
    if (watched === null) return;
    const s = watched.stats();
    bytes.set(s.bytes);
    entries.set(s.entries);
    const local = watched.localStats?.();
    localActive.set(local?.active ? 1 : 0);
    localBytes.set(local?.bytes ?? 0);
    if (local !== undefined) {
      if (counted.store !== watched) counted = { store: watched, hits: 0, misses: 0 };
      if (local.hits > counted.hits) localHits.inc(local.hits - counted.hits);
      if (local.misses > counted.misses) localMisses.inc(local.misses - counted.misses);
      counted = { store: watched, hits: local.hits, misses: local.misses };
    }
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
    watch: (store) => {
      watched = store;
    },
    available: (up) => available.set(up ? 1 : 0),
  };
}
