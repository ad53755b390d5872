/** Rate limiting: token buckets in process, across worker processes (leases) and in Redis. */
export * from "./bucket.ts";
export * from "./headers.ts";
export * from "./key.ts";
export * from "./lease.ts";
export * from "./limiter.ts";
export * from "./local.ts";
export * from "./redis-store.ts";
