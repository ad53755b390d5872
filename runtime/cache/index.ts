export { HttpCache, CacheExchange } from "./cache.ts";
export type {
  CacheDecision,
  CacheHit,
  CacheObserver,
  CacheRequest,
  CacheResult,
  HttpCacheOptions,
  RouteCache,
} from "./cache.ts";
export { MemoryStore, decodeValue, encodeValue, accountedBytes, ENTRY_OVERHEAD_BYTES } from "./store.ts";
export type {
  CacheStore,
  MaybePromise,
  MemoryStoreOptions,
  PurgeRequest,
  StoreStats,
  StoredResponse,
  StoredValue,
  VaryRecord,
} from "./store.ts";
export {
  RedisStore,
  RedisStoreUnavailableError,
  REDIS_ENTRY_OVERHEAD_BYTES,
  REDIS_PARTITIONS,
  partitionOf,
  redisCachePrefix,
} from "./redis-store.ts";
export type { RedisStoreObserver, RedisStoreOptions } from "./redis-store.ts";
export { parsePurgeRequest, PURGE_BODY_LIMIT } from "./purge.ts";
export type { ParsedPurge } from "./purge.ts";
export * from "./policy.ts";
