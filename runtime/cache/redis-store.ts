/**
 * The cache store in Redis, shared by every gateway process and replica that points at the same server:
 * a fill through one gateway is a hit on the others, and a purge or an invalidation through one removes
 * the entry for all. It implements `CacheStore` over the dependency-free `RedisClient`.
 *
 * **Layout** (`P` = `<prefix>:{mgc<n>}:`, one of 16 partitions chosen by a hash of the entry's URL; the
 * braces are a Redis Cluster hash tag, so every key of a partition is in one slot and each script touches
 * one slot only — Redis ≥ 7 enforces this for the scripts below, which carry a `#!lua` line):
 *
 * | key (after `P`) | type | holds |
 * |---|---|---|
 * | `e:<h>` | string, `PX` ttl | the entry (`encodeValue` bytes); `h` = SHA-256 of the cache key, base64url |
 * | `i` | hash | `h` → `<accounted bytes> <r\|v> <url>` (what eviction and purges need to know) |
 * | `q` | sorted set | `h` scored by when it was queued (µs, Redis' clock): the eviction order |
 * | `u:<url>` | hash | the URL's entries (every host, route, principal, variant): `h` → host |
 * | `urls` | sorted set | the partition's URLs (score 0, ordered by bytes): prefix purges are a range |
 * | `a` | hash | `b` accounted bytes, `n` stored responses, `t` the last queue position |
 *
 * Keys carry no principal or header value (the cache key is hashed); URLs are kept for purges.
 *
 * **Byte budget.** `maxBytes` is enforced by the store, not by Redis: each partition holds at most
 * `maxBytes / 16`, accounted as the encoded value (rounded up to the allocator's size class) + the URL
 * twice + the host + a fixed overhead — an upper bound of what Redis really uses (measured with
 * `MEMORY USAGE`, see the tests). Storing past the budget evicts inside the same script, CLOCK-style as
 * the memory store does: from the oldest end of `q`, an entry already expired is dropped, one read since
 * it was queued (`OBJECT IDLETIME`, Redis' own access clock, so a hit stays one plain `GET` with no write)
 * is queued again once, and otherwise the entry is evicted. Under an LFU `maxmemory-policy` Redis tracks
 * no idle time and eviction is oldest-first. Each call walks at most `maxEvictionSteps` entries, so a
 * script never blocks Redis for long; a value that cannot be made room for is not stored. Expired entries
 * count until they are met. Redis' own `maxmemory` should sit above the budget (with room for other
 * users of the server): if Redis evicts or refuses (`OOM`), stores fail (dropped, counted), never a
 * response.
 *
 * **The local layer** (`local`, the gateway's `gateway.cache.redis.localSize`): each process keeps the
 * entries it read in a byte-bounded LRU (a MemoryStore) and answers repeated lookups from it without a
 * round trip — kept coherent by Redis itself (client-side caching, `CLIENT TRACKING … OPTIN` redirected to
 * a second connection subscribed to `__redis__:invalidate`): every GET whose reply may be kept is sent
 * right after `CLIENT CACHING YES`, so Redis remembers that this connection holds the key and announces
 * any change to it — a store, a delete, a purge, an eviction, expiry, `FLUSHDB` — from any process or
 * replica; the announced keys leave the layer. Fail closed: the layer is only used while both connections
 * are up and tracking is confirmed for them; a lost connection (either), a new subscriber, or a flush
 * empties it, a subscriber that misses a ping's timeout turns it off at once (so a silently dead
 * connection costs at most one ping interval plus the timeout), and a reply whose key was announced while
 * the GET was in flight is not kept. Entries also
 * leave after `maxAgeMs` (defence in depth; freshness is the entry's own). This process's own stores,
 * deletes and purges drop its copies at once. A server that refuses tracking (ACLs without `CLIENT`,
 * an old server) leaves the layer off, reported once; the store works as without it.
 *
 * **Failures.** Every command is bounded by the client's command timeout. A timeout or a lost connection
 * opens a breaker for `breakMs`: operations then fail at once (a lookup is a synchronous miss) instead of
 * each waiting for the timeout; after it the next operations go through again. The observer hears about
 * the first failure of an outage and the first success after it (the gateway logs once per outage). URL
 * purges that fail (invalidations after unsafe methods, purge API calls) are remembered (up to
 * `maxPendingPurges` URLs, beyond that everything is purged) and replayed when Redis answers again, so a
 * stalled and resumed server does not serve what was invalidated meanwhile: until a URL's purge is
 * replayed, lookups of it are misses (the answers that end the outage come before the replay runs).
 */
import { createHash } from "node:crypto";
import { performance } from "node:perf_hooks";
import type { RedisClient } from "../redis/client.ts";
import { RedisScript } from "../redis/client.ts";
import {
  RedisClosedError,
  RedisConnectionError,
  RedisError,
  RedisOverloadError,
  RedisReplyError,
  RedisTimeoutError,
} from "../redis/errors.ts";
import type { RespValue } from "../redis/resp.ts";
import { hostOfKey, urlOfKey } from "./policy.ts";
import {
  decodeValue,
  encodeValue,
  isCurrentEncoding,
  MemoryStore,
  type CacheStore,
  type LocalLayerStats,
  type MaybePromise,
  type StoreStats,
  type StoredValue,
} from "./store.ts";

/** Partitions of the key space (hash tags). Fixed, so that every gateway agrees on where a URL lives. */
export const REDIS_PARTITIONS = 16;

/**
 * Accounted per entry on top of the value, URL and host: the keys, the index fields and Redis' own objects
 * (measured with `MEMORY USAGE`, see the tests).
 */
export const REDIS_ENTRY_OVERHEAD_BYTES = 512;

/**
 * What Redis' allocator (jemalloc) reserves for `n` bytes: classes 16 bytes apart up to 128, then four
 * per power of two.
 */
export function allocatedBytes(n: number): number {
  if (n <= 128) return Math.max(16, Math.ceil(n / 16) * 16);
  const step = 2 ** (Math.floor(Math.log2(n - 1)) - 2);
  return Math.ceil(n / step) * step;
}

export interface RedisStoreObserver {
  /** Entries evicted to keep a partition within its budget (by this process' stores). */
  evicted?(count: number): void;
  /** The first failure of an outage (a timeout, a lost connection): operations fail fast for a while. */
  unavailable?(error: Error): void;
  /**
   * The local layer was turned on (tracking confirmed) or off (a connection lost, or the server refused
   * tracking: `error`). Reported on changes only.
   */
  local?(on: boolean, error?: Error): void;
  /** The first success after an outage; `replayed` URL purges remembered during it follow. */
  recovered?(): void;
  /** Redis answered with an error reply (e.g. `OOM`, `NOPERM`); reported at most once a minute. */
  replyError?(error: Error): void;
  /** An entry of this format whose bytes do not decode (e.g. cut short): the lookup is a miss. */
  damaged?(): void;
}

export interface RedisStoreOptions {
  /** The client (owned by the store from now on: `close()` closes it). */
  readonly client: RedisClient;
  /** The budget of the whole store (all gateways that share it), bytes; each partition gets 1/16. */
  readonly maxBytes: number;
  /** Largest accounted entry stored; default (and at most) the partition budget. */
  readonly maxEntryBytes?: number;
  /** Key prefix; default `meshgate:cache`. No braces (they would change the hash tag). See redisCachePrefix. */
  readonly prefix?: string;
  /** How long operations fail fast after a timeout or a lost connection; default 1000 ms. */
  readonly breakMs?: number;
  /** Most entries one store call may walk to make room; default 2000. */
  readonly maxEvictionSteps?: number;
  /** URLs whose failed purge is remembered for replay; default 1000 (beyond: purge all on recovery). */
  readonly maxPendingPurges?: number;
  readonly observer?: RedisStoreObserver;
  /** The local layer (see the module comment); omitted = every lookup is a round trip. */
  readonly local?: RedisLocalLayerOptions;
}

export interface RedisLocalLayerOptions {
  /** Bytes kept in this process (accounted as the memory store does). */
  readonly maxBytes: number;
  /** Longest an entry stays in the layer; default 10 s. */
  readonly maxAgeMs?: number;
  /** Ping the subscriber connection this often, so a silently dead one is noticed; default 1000 ms. */
  readonly pingEveryMs?: number;
  /**
   * Creates the subscriber connection (same server as the store's client) that receives the
   * invalidations: a RedisClient whose `onMessage` is the given function. Owned by the store.
   */
  readonly subscriber: (onMessage: (channel: string, payload: RespValue) => void) => RedisClient;
}

/** The channel Redis announces tracked keys' changes on (RESP2 client-side caching). */
export const INVALIDATION_CHANNEL = "__redis__:invalidate";

/** Helper shared by the scripts: removes entry `h` and its bookkeeping; returns its kind and liveness. */
const DROP = `
local function drop(base, h)
  local meta = redis.call('HGET', base .. 'i', h)
  if not meta then return nil, 0 end
  local bytes, kind, url = string.match(meta, '^(%d+) (%a) (.*)$')
  redis.call('HDEL', base .. 'i', h)
  redis.call('ZREM', base .. 'q', h)
  local live = redis.call('UNLINK', base .. 'e:' .. h)
  local u = base .. 'u:' .. url
  redis.call('HDEL', u, h)
  if redis.call('EXISTS', u) == 0 then redis.call('ZREM', base .. 'urls', url) end
  local b = redis.call('HINCRBY', base .. 'a', 'b', -tonumber(bytes))
  if kind == 'r' then redis.call('HINCRBY', base .. 'a', 'n', -1) end
  if b < 0 then redis.call('HSET', base .. 'a', 'b', 0, 'n', 0) end
  return kind, live
end
local function totals(base)
  local t = redis.call('HMGET', base .. 'a', 'b', 'n')
  return tonumber(t[1] or '0'), tonumber(t[2] or '0')
end
`;

/**
 * KEYS: a, i, q, urls, e:<h>, u:<url> (one partition). ARGV: h, value, ttl ms, accounted bytes, kind
 * (r|v), url, host, budget, max eviction steps.
 * Returns { stored 0|1, bytes, responses, evicted }.
 */
export const SET_SCRIPT = new RedisScript(`#!lua
${DROP}
local base = string.sub(KEYS[1], 1, -2)
local t = redis.call('TIME')
-- Queue positions: Redis' clock in µs, strictly increasing per partition (ties would order by member).
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local last = tonumber(redis.call('HGET', KEYS[1], 't') or '0')
local at = math.max(now, last + 1)
local h, ttl, bytes, kind, url = ARGV[1], tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5], ARGV[6]
local budget, steps = tonumber(ARGV[8]), tonumber(ARGV[9])
drop(base, h)
local used = totals(base)
local evicted = 0
while used + bytes > budget and steps > 0 do
  local head = redis.call('ZRANGE', KEYS[3], 0, 0, 'WITHSCORES')
  if #head == 0 then
    -- Nothing queued: nothing is accounted either (repairs counts left by keys Redis itself removed).
    redis.call('HSET', KEYS[1], 'b', 0, 'n', 0)
    used = 0
    break
  end
  steps = steps - 1
  local c, since = head[1], tonumber(head[2])
  local e = base .. 'e:' .. c
  local live = redis.call('EXISTS', e) == 1
  local again = false
  if live and since < now then
    -- Read since it was queued (Redis' access clock has a resolution of one second).
    local ok, idle = pcall(redis.call, 'OBJECT', 'IDLETIME', e)
    again = ok and type(idle) == 'number' and (idle + 1) * 1000000 < now - since
  end
  if again then
    at = at + 1
    redis.call('ZADD', KEYS[3], at, c)
  else
    local _, was = drop(base, c)
    if was == 1 then evicted = evicted + 1 end
    if not redis.call('HGET', KEYS[2], c) then redis.call('ZREM', KEYS[3], c) end
  end
  used = totals(base)
end
if used + bytes > budget then
  local b, n = totals(base)
  return { 0, b, n, evicted }
end
redis.call('SET', KEYS[5], ARGV[2], 'PX', ttl)
redis.call('HSET', KEYS[2], h, bytes .. ' ' .. kind .. ' ' .. url)
at = at + 1
redis.call('ZADD', KEYS[3], at, h)
redis.call('HSET', KEYS[1], 't', at)
redis.call('HSET', KEYS[6], h, ARGV[7])
redis.call('ZADD', KEYS[4], 0, url)
redis.call('HINCRBY', KEYS[1], 'b', bytes)
if kind == 'r' then redis.call('HINCRBY', KEYS[1], 'n', 1) end
for _, k in ipairs({ KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[6] }) do
  if redis.call('PTTL', k) < ttl then redis.call('PEXPIRE', k, ttl) end
end
local b, n = totals(base)
return { 1, b, n, evicted }
`);

/** KEYS: a. ARGV: h. Returns { removed a live response 0|1, bytes, responses }. */
export const DELETE_SCRIPT = new RedisScript(`#!lua flags=allow-oom
${DROP}
local base = string.sub(KEYS[1], 1, -2)
local kind, live = drop(base, ARGV[1])
local b, n = totals(base)
return { live, b, n }
`);

/**
 * KEYS: a, u:<url>. ARGV: url, host ('' = every host), HSCAN cursor, batch size.
 * Removes one batch of the URL's entries. Returns { next cursor, responses removed, bytes, responses }.
 */
export const PURGE_URL_SCRIPT = new RedisScript(`#!lua flags=allow-oom
${DROP}
local base = string.sub(KEYS[1], 1, -2)
local host = ARGV[2]
local r = redis.call('HSCAN', KEYS[2], ARGV[3], 'COUNT', tonumber(ARGV[4]))
local fields = r[2]
local removed = 0
for j = 1, #fields, 2 do
  if host == '' or fields[j + 1] == host then
    local kind, live = drop(base, fields[j])
    if kind == 'r' and live == 1 then removed = removed + 1 end
    redis.call('HDEL', KEYS[2], fields[j])
  end
end
if redis.call('EXISTS', KEYS[2]) == 0 then redis.call('ZREM', base .. 'urls', ARGV[1]) end
local b, n = totals(base)
return { r[1], removed, b, n }
`);

/** KEYS: a. ARGV: batch size. Removes one batch of the oldest entries. Returns { left, removed, b, n }. */
export const PURGE_ALL_SCRIPT = new RedisScript(`#!lua flags=allow-oom
${DROP}
local base = string.sub(KEYS[1], 1, -2)
local batch = redis.call('ZRANGE', base .. 'q', 0, tonumber(ARGV[1]) - 1)
local removed = 0
for _, h in ipairs(batch) do
  local kind, live = drop(base, h)
  if kind == 'r' and live == 1 then removed = removed + 1 end
  redis.call('ZREM', base .. 'q', h)
end
local left = redis.call('ZCARD', base .. 'q')
if left == 0 then
  redis.call('UNLINK', base .. 'i', base .. 'urls')
  redis.call('HSET', KEYS[1], 'b', 0, 'n', 0)
end
local b, n = totals(base)
return { left, removed, b, n }
`);

const SCRIPTS = [SET_SCRIPT, DELETE_SCRIPT, PURGE_URL_SCRIPT, PURGE_ALL_SCRIPT];
/** Entries handled per purge script call, and URLs listed per prefix range read. */
const BATCH = 256;
const STATS_EVERY_MS = 5000;
const REPLY_ERROR_EVERY_MS = 60_000;

/** The failures after which Redis is treated as unavailable (rather than refusing one command). */
function isOutage(err: unknown): boolean {
  return (
    err instanceof RedisTimeoutError ||
    err instanceof RedisConnectionError ||
    err instanceof RedisOverloadError ||
    err instanceof RedisClosedError
  );
}

/** The error operations fail with while the breaker is open. */
export class RedisStoreUnavailableError extends RedisError {
  constructor(cause: Error | null) {
    super(
      "E_REDIS_CONNECTION",
      `the Redis cache store is unavailable${cause ? ` (${cause.message})` : ""}; retrying shortly`,
    );
    this.name = "RedisStoreUnavailableError";
  }
}

/**
 * The key prefix of a gateway's cache: one namespace per mesh and Kubernetes namespace, so that two
 * deployments sharing a Redis never serve or purge each other's entries. Braces are dropped (hash tags).
 */
export function redisCachePrefix(mesh: string, namespace: string): string {
  return `meshgate:cache:${mesh}:${namespace}`.replace(/[{}]/g, "");
}

/** FNV-1a over the URL's UTF-16 code units: the partition of a URL (stable across processes). */
export function partitionOf(url: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < url.length; i++) {
    h ^= url.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return (h >>> 0) % REDIS_PARTITIONS;
}

const num = (v: RespValue | undefined): number =>
  typeof v === "number" ? v : typeof v === "bigint" ? Number(v) : Number(String(v ?? 0));

export class RedisStore implements CacheStore {
  readonly client: RedisClient;
  readonly maxBytes: number;
  /** Budget of one partition. */
  readonly partitionBytes: number;
  readonly maxEntryBytes: number;
  readonly prefix: string;
  readonly #breakMs: number;
  readonly #steps: number;
  readonly #maxPending: number;
  readonly #observer: RedisStoreObserver;
  /** Base key of each partition (`<prefix>:{mgc<n>}:`). */
  readonly #bases: readonly string[];
  /** Last seen totals per partition. */
  readonly #bytes: number[];
  readonly #entries: number[];
  #statsAt = -Infinity;
  #openUntil = 0;
  #down = false;
  #lastError: Error | null = null;
  #replyErrorAt = -Infinity;
  /** URL purges that failed: url → hosts ("" = every host), replayed on recovery. */
  readonly #pending = new Map<string, Set<string>>();
  #pendingOverflow = false;
  #replaying = false;
  #closed = false;
  /** The local layer, its subscriber connection and tracking state (null without a local layer). */
  readonly #local: MemoryStore | null = null;
  /** Lookups the local layer answered, and those it sent on to Redis while on. */
  #localHits = 0;
  #localMisses = 0;
  readonly #localAgeMs: number = 0;
  readonly #sub: RedisClient | null = null;
  /** The subscriber connection's client id once it is subscribed, else null. */
  #subId: number | null = null;
  /** Bumped on every event of the subscriber connection. */
  #subGen = 0;
  /** A subscription or a tracking request is under way. */
  #subscribing = false;
  #enabling = false;
  /** The server refused tracking (ACLs, an old server): the layer stays off. */
  #refused: Error | null = null;
  /** Tracking is confirmed on the store's current connection, redirected to the current subscriber. */
  #tracking = false;
  /** Reported state of the layer (for observer.local). */
  #localOn = false;
  /** Bumped whenever the layer is emptied: a read begun before may not fill it. */
  #epoch = 0;
  /** Redis key → cache key of the entries in the layer. */
  readonly #localKeys = new Map<string, string>();
  /** Reads in flight per Redis key, and the keys announced while one was. */
  readonly #inflight = new Map<string, number>();
  readonly #announced = new Set<string>();
  #pingTimer: NodeJS.Timeout | null = null;
  #unwatch: (() => void)[] = [];

  constructor(options: RedisStoreOptions) {
    if (!(options.maxBytes > 0)) throw new RangeError("RedisStore maxBytes must be a positive number");
    const prefix = options.prefix ?? "meshgate:cache";
    if (/[{}]/.test(prefix)) throw new RangeError("RedisStore prefix must not contain { or }");
    this.client = options.client;
    this.maxBytes = options.maxBytes;
    this.partitionBytes = Math.floor(options.maxBytes / REDIS_PARTITIONS);
    this.maxEntryBytes = Math.min(options.maxEntryBytes ?? Infinity, this.partitionBytes);
    this.prefix = prefix;
    this.#breakMs = options.breakMs ?? 1000;
    this.#steps = options.maxEvictionSteps ?? 2000;
    this.#maxPending = options.maxPendingPurges ?? 1000;
    this.#observer = options.observer ?? {};
    this.#bases = Array.from({ length: REDIS_PARTITIONS }, (_, n) => `${prefix}:{mgc${n}}:`);
    this.#bytes = new Array<number>(REDIS_PARTITIONS).fill(0);
    this.#entries = new Array<number>(REDIS_PARTITIONS).fill(0);
    const local = options.local;
    if (local !== undefined && local.maxBytes > 0) {
      this.#local = new MemoryStore({ maxBytes: local.maxBytes });
      this.#localAgeMs = local.maxAgeMs ?? 10_000;
      const sub = (this.#sub = local.subscriber((_channel, payload) => this.#announce(payload)));
      this.#unwatch.push(
        this.client.watch((e) => (e.type === "ready" ? this.#track() : this.#lose())),
        sub.watch((e) => {
          this.#subId = null;
          this.#subGen++;
          if (e.type === "ready") void this.#subscribe();
          else this.#lose();
        }),
      );
      void sub.connect().catch(() => {}); // retried by the client; the layer stays off meanwhile
      this.#pingTimer = setInterval(() => this.#repair(), local.pingEveryMs ?? 1000);
      this.#pingTimer.unref();
    }
  }

  /** Whether lookups may be answered by the local layer now (tracking confirmed). */
  get localActive(): boolean {
    return this.#tracking;
  }

  /** The local layer: whether it answers, its entries and bytes (off and zeros without one). */
  localStats(): LocalLayerStats {
    const s = this.#local?.stats() ?? { entries: 0, bytes: 0 };
    return {
      active: this.#tracking,
      entries: s.entries,
      bytes: s.bytes,
      hits: this.#localHits,
      misses: this.#localMisses,
    };
  }

  /** True while operations fail fast after an outage. */
  get unavailable(): boolean {
    return this.#down;
  }

  /** URL purges waiting for Redis to answer again. */
  get pendingPurges(): number {
    return this.#pending.size;
  }

  /** The Redis key of an entry (for tests and diagnostics). */
  entryKey(key: string): string {
    return `${this.#bases[partitionOf(urlOfKey(key))]}e:${hashKey(key)}`;
  }

  /** The bytes an entry is accounted for in Redis. */
  accountedBytes(key: string, encodedLength: number): number {
    const url = urlOfKey(key);
    return (
      allocatedBytes(encodedLength) +
      2 * Buffer.byteLength(url) +
      hostOfKey(key).length +
      REDIS_ENTRY_OVERHEAD_BYTES
    );
  }

  get(key: string): MaybePromise<StoredValue | undefined> {
    this.#gate();
    if (this.#tracking) {
      const held = this.#local!.get(key);
      if (held !== undefined) {
        this.#localHits++;
        return held;
      }
      this.#localMisses++;
      return this.#trackedGet(key);
    }
    return this.client.command(["GET", this.entryKey(key)], { buffers: true }).then(
      (v) => {
        this.#ok();
        if (!Buffer.isBuffer(v) || this.#purgePending(key)) return undefined;
        // The reply is this value's own buffer: the body need not be copied again.
        return this.#decode(v, false);
      },
      (err: unknown) => this.#failed(err),
    );
  }

  /** The stored value, or a miss for bytes that do not decode (counted when they claim this format). */
  #decode(v: Buffer, copyBody: boolean): StoredValue | undefined {
    const value = decodeValue(v, copyBody);
    if (value !== null) return value;
    if (isCurrentEncoding(v)) this.#observer.damaged?.();
    return undefined;
  }

  /** A GET that Redis tracks for this connection (CLIENT CACHING YES right before it); fills the layer. */
  #trackedGet(key: string): Promise<StoredValue | undefined> {
    const rk = this.entryKey(key);
    const epoch = this.#epoch;
    let tracked = false;
    // Both go out in this order on the one connection: the GET is the command CACHING applies to.
    this.client.command(["CLIENT", "CACHING", "YES"]).then(
      () => (tracked = true),
      () => {},
    );
    this.#inflight.set(rk, (this.#inflight.get(rk) ?? 0) + 1);
    return this.client.command(["GET", rk], { buffers: true }).then(
      (v) => {
        const announced = this.#settle(rk);
        this.#ok();
        if (!Buffer.isBuffer(v) || this.#purgePending(key)) return undefined;
        const keep = tracked && !announced && epoch === this.#epoch && this.#tracking;
        // Kept values own their body (a reply may share the socket's buffer).
        const value = this.#decode(v, keep);
        if (keep && value !== undefined && this.#local!.set(key, value, this.#localAgeMs)) {
          this.#localKeys.set(rk, key);
          // Keys evicted or expired from the layer are only announced when Redis changes them: forget
          // the ones the layer no longer holds once they outnumber what it holds.
          if (this.#localKeys.size > 2 * this.#local!.size + 1024) {
            for (const [r, k] of this.#localKeys) if (!this.#local!.has(k)) this.#localKeys.delete(r);
          }
        }
        return value;
      },
      (err: unknown) => {
        this.#settle(rk);
        return this.#failed(err);
      },
    );
  }

  /** A tracked read of `rk` is over: whether its key was announced while it was in flight. */
  #settle(rk: string): boolean {
    const announced = this.#announced.has(rk);
    const n = this.#inflight.get(rk)! - 1;
    if (n > 0) this.#inflight.set(rk, n);
    else {
      this.#inflight.delete(rk);
      this.#announced.delete(rk);
    }
    return announced;
  }

  /**
   * Whether a purge of the key's URL failed during an outage and has not been replayed yet (or more
   * failed than were remembered): Redis may still hold what it removes, so a read must be a miss.
   */
  #purgePending(key: string): boolean {
    if (this.#pendingOverflow) return true;
    if (this.#pending.size === 0) return false;
    const hosts = this.#pending.get(urlOfKey(key));
    return hosts !== undefined && (hosts.has("") || hosts.has(hostOfKey(key)));
  }

  /** Drops this process's copy of a key (its own store, delete: no waiting for the announcement). */
  #dropLocal(key: string): void {
    if (this.#local === null) return;
    const rk = this.entryKey(key);
    this.#local.delete(key);
    this.#localKeys.delete(rk);
    if (this.#inflight.has(rk)) this.#announced.add(rk);
  }

  /** An invalidation message: the keys that changed, or null (the database was flushed). */
  #announce(payload: RespValue): void {
    if (this.#local === null) return;
    if (!Array.isArray(payload)) {
      this.#empty();
      return;
    }
    for (const k of payload) {
      const rk = String(k);
      const key = this.#localKeys.get(rk);
      if (key !== undefined) {
        this.#localKeys.delete(rk);
        this.#local.delete(key);
      }
      if (this.#inflight.has(rk)) this.#announced.add(rk);
    }
  }

  /** Empties the layer; reads in flight will not fill it. */
  #empty(): void {
    this.#epoch++;
    this.#local?.purgeAll();
    this.#localKeys.clear();
  }

  /** Tracking is lost (a connection went down or changed): the layer is off and empty. */
  #lose(error?: Error): void {
    this.#tracking = false;
    this.#empty();
    if (this.#localOn || error !== undefined) {
      this.#localOn = false;
      this.#observer.local?.(false, error);
    }
  }

  /** The subscriber (re)connected: learn its id and subscribe, then redirect tracking to it. */
  async #subscribe(): Promise<void> {
    const sub = this.#sub!;
    this.#lose();
    if (this.#refused !== null || this.#subscribing) return;
    this.#subscribing = true;
    const gen = this.#subGen;
    try {
      const [id] = await Promise.all([
        sub.command(["CLIENT", "ID"]),
        sub.command(["SUBSCRIBE", INVALIDATION_CHANNEL]),
      ]);
      if (gen !== this.#subGen || this.#closed) return;
      this.#subId = Number(id);
      this.#track();
    } catch (err) {
      if (gen !== this.#subGen || this.#closed) return;
      if (err instanceof RedisReplyError) this.#refuse(err);
      // Timed out: whether it subscribed is unknown; a new connection subscribes on its ready event.
      else sub.drop("the subscription for cache invalidations was not confirmed in time");
    } finally {
      this.#subscribing = false;
    }
  }

  /** Turns tracking on for the store's connection, redirected to the subscriber (when both are up). */
  #track(): void {
    this.#lose();
    const id = this.#subId;
    if (id === null || this.client.state !== "ready" || this.#closed || this.#refused !== null) return;
    const epoch = this.#epoch;
    this.#enabling = true;
    this.client.command(["CLIENT", "TRACKING", "ON", "REDIRECT", id, "OPTIN"]).then(
      () => {
        this.#enabling = false;
        if (epoch !== this.#epoch || this.#subId !== id) return;
        this.#tracking = true;
        if (!this.#localOn) {
          this.#localOn = true;
          this.#observer.local?.(true);
        }
      },
      (err: unknown) => {
        this.#enabling = false;
        // Refused for good; a timeout or a lost connection is retried (#repair, the next ready event).
        if (err instanceof RedisReplyError) this.#refuse(err);
      },
    );
  }

  /** The server refused what the layer needs: it stays off (reported once). */
  #refuse(err: RedisReplyError): void {
    this.#refused = err;
    this.#lose(err);
  }

  /**
   * Every `pingEveryMs`: pings the subscriber (a silently dead connection then times out and is replaced)
   * and finishes what a timeout left undone (a subscription, the tracking request).
   */
  #repair(): void {
    const sub = this.#sub!;
    if (this.#closed || this.#refused !== null || sub.state !== "ready") return;
    sub.command(["PING"]).catch((err: unknown) => {
      // A subscriber that does not answer may miss announcements: the layer goes off at once, and a new
      // connection replaces it (without waiting for the client's stall timeout).
      if (err instanceof RedisTimeoutError && sub.state === "ready") {
        this.#lose();
        sub.drop("the subscriber for cache invalidations did not answer a ping");
      }
    });
    // Not subscribed and not subscribing: the connection's state is unknown; a new one subscribes.
    if (this.#subId === null && !this.#subscribing) sub.drop("no subscription for cache invalidations");
    else if (!this.#tracking && !this.#enabling && this.client.state === "ready") this.#track();
  }

  async set(key: string, value: StoredValue, ttlMs: number): Promise<boolean> {
    this.#gate();
    this.#dropLocal(key);
    const encoded = encodeValue(value);
    const bytes = this.accountedBytes(key, encoded.length);
    if (bytes > this.maxEntryBytes || !(ttlMs > 0)) {
      // As the memory store: a refused replacement does not leave the previous value behind.
      await this.delete(key);
      return false;
    }
    const url = urlOfKey(key);
    const p = partitionOf(url);
    const base = this.#bases[p]!;
    const h = hashKey(key);
    const r = await this.#eval(
      SET_SCRIPT,
      [`${base}a`, `${base}i`, `${base}q`, `${base}urls`, `${base}e:${h}`, `${base}u:${url}`],
      [
        h,
        encoded,
        Math.ceil(ttlMs),
        bytes,
        value.kind === "response" ? "r" : "v",
        url,
        hostOfKey(key),
        this.partitionBytes,
        this.#steps,
      ],
    );
    this.#totals(p, r[1], r[2]);
    const evicted = num(r[3]);
    if (evicted > 0) this.#observer.evicted?.(evicted);
    return num(r[0]) === 1;
  }

  async delete(key: string): Promise<boolean> {
    this.#gate();
    this.#dropLocal(key);
    const p = partitionOf(urlOfKey(key));
    const base = this.#bases[p]!;
    const r = await this.#eval(DELETE_SCRIPT, [`${base}a`], [hashKey(key)]);
    this.#totals(p, r[1], r[2]);
    return num(r[0]) === 1;
  }

  /** Removes every entry of a URL (or of one host); a failure is remembered and replayed on recovery. */
  async purgeUrl(url: string, host?: string): Promise<number> {
    this.#purgeLocal(url, host);
    try {
      this.#gate();
      return await this.#purgeUrl(url, host ?? "");
    } catch (err) {
      this.#remember(url, host ?? "");
      throw err;
    }
  }

  async purgePrefix(prefix: string, host?: string): Promise<number> {
    if (this.#local !== null) {
      this.#epoch++;
      this.#local.purgePrefix(prefix, host);
    }
    this.#gate();
    let n = 0;
    // One partition after another, each a range of its URL index read in batches after the last URL seen.
    for (let p = 0; p < REDIS_PARTITIONS; p++) {
      const base = this.#bases[p]!;
      let min = `[${prefix}`;
      const max = Buffer.concat([Buffer.from(`[${prefix}`), Buffer.from([0xff])]);
      for (;;) {
        const urls = (await this.#call(["ZRANGEBYLEX", `${base}urls`, min, max, "LIMIT", 0, BATCH], true)) as
          Buffer[] | null;
        if (!urls || urls.length === 0) break;
        for (const u of urls) n += await this.#purgeUrl(u.toString("utf8"), host ?? "");
        if (urls.length < BATCH) break;
        min = `(${urls[urls.length - 1]!.toString("utf8")}`;
      }
    }
    return n;
  }

  async purgeAll(): Promise<number> {
    this.#empty();
    this.#gate();
    const all = await Promise.all(
      this.#bases.map(async (base, p) => {
        let n = 0;
        for (;;) {
          const r = await this.#eval(PURGE_ALL_SCRIPT, [`${base}a`], [BATCH]);
          n += num(r[1]);
          this.#totals(p, r[2], r[3]);
          if (num(r[0]) === 0) return n;
        }
      }),
    );
    this.#pending.clear();
    this.#pendingOverflow = false;
    return all.reduce((a, b) => a + b, 0);
  }

  /**
   * What this process last saw (totals are returned by every write); refreshed from Redis in the
   * background at most every 5 s when asked.
   */
  stats(): StoreStats {
    const now = performance.now();
    if (now - this.#statsAt >= STATS_EVERY_MS && !this.#down && this.client.state === "ready") {
      this.#statsAt = now;
      this.#bases.forEach((base, p) => {
        this.client.command(["HMGET", `${base}a`, "b", "n"]).then(
          (r) => {
            const [b, n] = r as (string | null)[];
            this.#totals(p, b ?? 0, n ?? 0);
          },
          () => {},
        );
      });
    }
    let bytes = 0;
    let entries = 0;
    for (let p = 0; p < REDIS_PARTITIONS; p++) {
      bytes += this.#bytes[p]!;
      entries += this.#entries[p]!;
    }
    return { entries, bytes };
  }

  /**
   * Loads the scripts into Redis (call it on every (re)connection), so stores and purges hit `EVALSHA`
   * at once instead of a `NOSCRIPT` round trip. A server that refuses them (Redis < 7 cannot compile a
   * `#!lua` line) is reported as a reply error.
   */
  async loadScripts(): Promise<void> {
    try {
      await Promise.all(SCRIPTS.map((s) => this.client.command(["SCRIPT", "LOAD", s.source])));
    } catch (err) {
      try {
        this.#failed(err);
      } catch {
        // reported
      }
    }
  }

  /** Closes the client; operations fail from now on (without reports: it is no outage). */
  async close(): Promise<void> {
    this.#closed = true;
    this.#pending.clear();
    if (this.#pingTimer !== null) clearInterval(this.#pingTimer);
    for (const u of this.#unwatch) u();
    this.#tracking = false;
    this.#empty();
    await Promise.all([this.client.close(), this.#sub?.close()]);
  }

  /** Drops this process's copies of a URL's entries (a purge here needs no announcement to apply). */
  #purgeLocal(url: string, host: string | undefined): void {
    if (this.#local === null) return;
    // Reads in flight for the URL may not fill the layer with what is being purged.
    this.#epoch++;
    this.#local.purgeUrl(url, host);
  }

  // ── internals ──

  async #purgeUrl(url: string, host: string): Promise<number> {
    const p = partitionOf(url);
    const base = this.#bases[p]!;
    let cursor = "0";
    let n = 0;
    do {
      const r = await this.#eval(
        PURGE_URL_SCRIPT,
        [`${base}a`, `${base}u:${url}`],
        [url, host, cursor, BATCH],
      );
      cursor = Buffer.isBuffer(r[0]) ? r[0].toString() : String(r[0]);
      n += num(r[1]);
      this.#totals(p, r[2], r[3]);
    } while (cursor !== "0");
    return n;
  }

  async #eval(script: RedisScript, keys: string[], args: (string | number | Buffer)[]): Promise<RespValue[]> {
    try {
      const r = await this.client.evalScript(script, keys, args);
      this.#ok();
      return r as RespValue[];
    } catch (err) {
      return this.#failed(err);
    }
  }

  async #call(args: (string | number | Buffer)[], buffers = false): Promise<RespValue> {
    try {
      const r = await this.client.command(args, { buffers });
      this.#ok();
      return r;
    } catch (err) {
      return this.#failed(err);
    }
  }

  /** Throws at once while the breaker is open (a lookup is then a synchronous miss). */
  #gate(): void {
    if (this.#closed) throw new RedisClosedError();
    if (this.#openUntil !== 0 && performance.now() < this.#openUntil)
      throw new RedisStoreUnavailableError(this.#lastError);
  }

  #ok(): void {
    this.#openUntil = 0;
    if (!this.#down) return;
    this.#down = false;
    this.#lastError = null;
    this.#observer.recovered?.();
    void this.#replay();
  }

  #failed(err: unknown): never {
    const e = err instanceof Error ? err : new Error(String(err));
    if (this.#closed) throw e;
    if (isOutage(e)) {
      this.#openUntil = performance.now() + this.#breakMs;
      this.#lastError = e;
      if (!this.#down) {
        this.#down = true;
        this.#observer.unavailable?.(e);
      }
    } else {
      const now = performance.now();
      if (now - this.#replyErrorAt >= REPLY_ERROR_EVERY_MS) {
        this.#replyErrorAt = now;
        this.#observer.replyError?.(e);
      }
    }
    throw e;
  }

  #totals(p: number, b: RespValue | undefined, n: RespValue | undefined): void {
    this.#bytes[p] = Math.max(0, num(b));
    this.#entries[p] = Math.max(0, num(n));
  }

  #remember(url: string, host: string): void {
    if (this.#pendingOverflow || this.#closed) return;
    let hosts = this.#pending.get(url);
    if (hosts === undefined) {
      if (this.#pending.size >= this.#maxPending) {
        this.#pending.clear();
        this.#pendingOverflow = true;
        return;
      }
      this.#pending.set(url, (hosts = new Set()));
    }
    hosts.add(host);
  }

  /** Replays the URL purges that failed during the outage (or purges everything after an overflow). */
  async #replay(): Promise<void> {
    if (this.#replaying) return;
    this.#replaying = true;
    try {
      if (this.#pendingOverflow) {
        await this.purgeAll();
        return;
      }
      while (this.#pending.size > 0) {
        const [url, hosts] = this.#pending.entries().next().value!;
        // Purging every host covers the narrower purges of the same URL.
        const list = hosts.has("") ? [""] : [...hosts];
        for (const host of list) {
          await this.purgeUrl(url, host);
          // Forgotten only once done: reads answered before the purge ran are misses (#purgePending).
          hosts.delete(host);
        }
        if (hosts.size === 0 && this.#pending.get(url) === hosts) this.#pending.delete(url);
      }
    } catch {
      // Still failing: what is left stays remembered for the next recovery.
    } finally {
      this.#replaying = false;
    }
  }
}

/** The entry's id in Redis: SHA-256 of the cache key (no principal or header value in key names). */
function hashKey(key: string): string {
  return createHash("sha256").update(key).digest("base64url");
}

export { SCRIPTS as REDIS_STORE_SCRIPTS };
