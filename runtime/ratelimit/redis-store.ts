/**
 * Token buckets in Redis, for limits that hold across gateway replicas.
 *
 * - **One round trip, atomic.** Each check is one `EVALSHA` of the script below: it reads the bucket,
 *   refills it, takes a token and writes it back, inside Redis, so concurrent checks from any number of
 *   replicas never race.
 * - **One clock.** The script reads the time with `TIME` on the Redis server, so replicas whose clocks
 *   differ still refill the same bucket consistently (scripts replicate their effects, Redis ≥ 5).
 * - **Cluster-safe keys.** One key per bucket, `meshgate:rl:{<hash>}`: the script touches only that key,
 *   and the braces make its hash slot that of the hash alone. The hash (SHA-256 of route, limit and key
 *   value, 128 bits) keeps client-chosen values (a header) out of Redis and bounds the key length.
 * - **Idle buckets expire**: every write sets a TTL of the time until the bucket would be full again
 *   (plus a second), after which the key's absence means the same thing.
 * - **Fail mode.** A timeout, a refused or lost connection or an error reply is answered by the declared
 *   fail mode — `open` admits, `closed` refuses — with `storeError` saying what failed, and is reported
 *   to the observer, so the gateway counts it. The client never waits for a dead server: while it is
 *   reconnecting, checks fail at once.
 *
 * The numbers are the integers of bucket.ts (units, not fractional tokens): doubles in Lua hold them
 * exactly (they stay below 2^51), and they are written back with `%d`, never in exponent notation.
 */
import { createHash } from "node:crypto";
import type { RedisClient } from "../redis/client.ts";
import { RedisScript } from "../redis/client.ts";
import {
  RedisConnectionError,
  RedisClosedError,
  RedisOverloadError,
  RedisTimeoutError,
} from "../redis/errors.ts";
import type { RespValue } from "../redis/resp.ts";
import type { BucketPolicy } from "./bucket.ts";
import type { RateLimitDecision, StoreErrorReason } from "./local.ts";

/**
 * KEYS[1] the bucket; ARGV rate, cost, capacity (units, see bucket.ts).
 * Returns { allowed (0|1), whole tokens left, ms until the next token, ms until full }.
 */
export const TOKEN_BUCKET_SCRIPT = new RedisScript(`
local rate = tonumber(ARGV[1])
local cost = tonumber(ARGV[2])
local capacity = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local b = redis.call('HMGET', KEYS[1], 'u', 't')
local units = tonumber(b[1])
local last = tonumber(b[2])
if units == nil or last == nil then
  units = capacity
  last = now
end
if now > last then
  local missing = capacity - units
  if missing > 0 then
    local elapsed = now - last
    if elapsed >= math.ceil(missing / rate) then
      units = capacity
    else
      units = units + elapsed * rate
    end
  end
  last = now
end
local allowed = 0
if units >= cost then
  units = units - cost
  allowed = 1
end
local retry = 0
if units < cost then
  retry = math.ceil((cost - units) / rate)
end
local full = math.ceil((capacity - units) / rate)
redis.call('HSET', KEYS[1], 'u', string.format('%d', units), 't', string.format('%d', last))
redis.call('PEXPIRE', KEYS[1], full + 1000)
return { allowed, math.floor(units / cost), retry, full }
`);

/** The Redis key of one bucket. */
export function redisBucketKey(scope: string, policy: BucketPolicy, key: string): string {
  const h = createHash("sha256").update(`${scope}\u0000${policy.id}\u0000${key}`).digest("base64url");
  return `meshgate:rl:{${h.slice(0, 22)}}`;
}

/** Which failure an error is, for the fail mode and the metrics. */
export function storeErrorReason(err: unknown): StoreErrorReason {
  if (err instanceof RedisTimeoutError) return "timeout";
  if (err instanceof RedisConnectionError || err instanceof RedisClosedError) return "connection";
  if (err instanceof RedisOverloadError) return "overload";
  return "reply";
}

export interface RedisBucketsOptions {
  readonly failMode: "open" | "closed";
  /** Called on every failed check, before the fail mode answers. */
  readonly onStoreError?: (reason: StoreErrorReason, mode: "open" | "closed", err: unknown) => void;
}

/** One limit's buckets in Redis. */
export class RedisBuckets {
  readonly policy: BucketPolicy;
  readonly failMode: "open" | "closed";
  readonly #client: RedisClient;
  readonly #scope: string;
  readonly #args: readonly number[];
  readonly #onStoreError: NonNullable<RedisBucketsOptions["onStoreError"]>;
  readonly #failed: RateLimitDecision;

  constructor(client: RedisClient, scope: string, policy: BucketPolicy, options: RedisBucketsOptions) {
    this.#client = client;
    this.#scope = scope;
    this.policy = policy;
    this.failMode = options.failMode;
    this.#args = [policy.rate, policy.cost, policy.capacity];
    this.#onStoreError = options.onStoreError ?? (() => {});
    this.#failed = Object.freeze({
      allowed: options.failMode === "open",
      remaining: 0,
      resetMs: 0,
      retryAfterMs: options.failMode === "open" ? 0 : 1000,
      storeError: null,
    });
  }

  check(key: string): Promise<RateLimitDecision> {
    return this.#client
      .evalScript(TOKEN_BUCKET_SCRIPT, [redisBucketKey(this.#scope, this.policy, key)], this.#args)
      .then(this.#decode, this.#fail);
  }

  readonly #decode = (v: RespValue): RateLimitDecision => {
    if (!Array.isArray(v) || v.length !== 4 || v.some((x) => typeof x !== "number"))
      return this.#fail(new TypeError("the rate-limit script returned an unexpected reply"));
    const [allowed, remaining, retryAfterMs, resetMs] = v as number[];
    return {
      allowed: allowed === 1,
      remaining: remaining!,
      resetMs: resetMs!,
      retryAfterMs: retryAfterMs!,
      storeError: null,
    };
  };

  readonly #fail = (err: unknown): RateLimitDecision => {
    const reason = storeErrorReason(err);
    this.#onStoreError(reason, this.failMode, err);
    return { ...this.#failed, storeError: reason };
  };
}
