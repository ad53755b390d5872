/** A dependency-free Redis client (RESP2 over one pipelined TCP or TLS connection). */
export { RedisClient, RedisScript } from "./client.ts";
export type { RedisClientEvent, RedisClientOptions, RedisClientState } from "./client.ts";
export * from "./errors.ts";
export { RespParser, decodeReply, encodeCommand } from "./resp.ts";
export type { RedisArg, RespParserLimits, RespValue } from "./resp.ts";
export { parseRedisUrl, redactRedisUrl } from "./url.ts";
export type { RedisTarget } from "./url.ts";
