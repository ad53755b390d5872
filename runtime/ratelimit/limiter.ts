/**
 * The gateway's rate limiters: one per route with a `rateLimit`, each backed by the store its scope and
 * the config's `rateLimitStore` call for.
 *
 * | route scope | `rateLimitStore` | store | limit enforced here |
 * |---|---|---|---|
 * | `replica` | any | in process (leased across workers) | the route's numbers |
 * | `fleet` | `redis` | Redis, shared by every replica | the route's numbers, fleet-wide |
 * | `fleet` | `local` (n replicas) | in process (leased across workers) | the route's numbers ÷ n |
 *
 * "In process" is a `LocalBuckets` table in a single-process gateway, and worker leases on the
 * primary's buckets (lease.ts) when the gateway runs several workers: either way the check is
 * synchronous whenever it can be. Redis checks are one round trip.
 *
 * `configure()` compiles a config's limits once; routes whose limit did not change keep their buckets
 * (and the Redis client is kept while its URL and timeout stay the same), so a reload does not hand
 * every client a fresh bucket. `activate()` is called once the new config serves.
 */
import { performance } from "node:perf_hooks";
import type { GatewayRuntimeConfig, GatewayRoute } from "../contract/schema.ts";
import { RedisClient, type RedisClientEvent, type RedisClientOptions } from "../redis/client.ts";
import { redactRedisUrl } from "../redis/url.ts";
import { compilePolicy, type BucketPolicy } from "./bucket.ts";
import { ownedByTheGateway, rateLimitKey, type KeyKind } from "./key.ts";
import type { LeaseClient } from "./lease.ts";
import { LocalBuckets, type EvictionKind, type RateLimitDecision, type StoreErrorReason } from "./local.ts";
import { RedisBuckets, TOKEN_BUCKET_SCRIPT } from "./redis-store.ts";

export type StoreKind = "local" | "leased" | "redis";

export interface RateLimitObserver {
  /** A Redis (or lease) failure answered by the fail mode; `error` is what Redis (or the client) said. */
  storeError?(reason: StoreErrorReason, mode: "open" | "closed", error?: unknown): void;
  /** A bucket dropped at the key cap (`idle`: it was full, nothing lost). */
  evicted?(kind: EvictionKind): void;
  /** Connection events of the Redis client (ready, down, closed), for logs. */
  redis?(event: RedisClientEvent): void;
}

export interface RateLimitersOptions {
  /** Worker leases on the primary's buckets (multi-worker gateways); absent = this process's buckets. */
  readonly leases?: LeaseClient;
  readonly observer?: RateLimitObserver;
  /** Keys per route in process; default 100,000. */
  readonly maxKeys?: number;
  /** Integer milliseconds on a monotonic clock (tests inject one). */
  readonly now?: () => number;
  /** Extra Redis client options (TLS `ca`, reconnect backoff). */
  readonly redis?: Partial<Omit<RedisClientOptions, "url" | "commandTimeoutMs">>;
}

/** Which mode is in effect, for the startup log, the `/config` view and the docs. */
export interface RateLimitMode {
  readonly store: "local" | "redis";
  /** Replicas a fleet limit is divided by (1 with Redis). */
  readonly fleetDivisor: number;
  /** Whether in-process buckets are shared by worker processes through the primary. */
  readonly workers: "leased" | "single-process";
  readonly redis: {
    readonly url: string;
    readonly failMode: "open" | "closed";
    readonly timeoutMs: number;
  } | null;
  readonly routes: readonly {
    readonly route: string;
    readonly scope: "replica" | "fleet";
    readonly store: StoreKind;
    readonly key: string;
    /** RateLimit-Policy of the bucket this replica enforces. */
    readonly policy: string;
    readonly divisor: number;
  }[];
  /** One sentence saying all of the above. */
  readonly summary: string;
}

/** One route's limiter. */
export class RouteLimiter {
  /** Everything that makes two limiters interchangeable (route, store, numbers, key, fail mode). */
  readonly identity: string;
  readonly route: string;
  readonly keyKind: KeyKind;
  /** The header a `header` key reads (lower-case). */
  readonly header: string | null;
  readonly policy: BucketPolicy;
  readonly store: StoreKind;
  /** Fail mode of a Redis store; null for in-process stores (which cannot fail but for a broken IPC channel, answered closed). */
  readonly failMode: "open" | "closed" | null;
  readonly #check: (key: string) => RateLimitDecision | Promise<RateLimitDecision>;

  constructor(
    identity: string,
    route: string,
    keyKind: KeyKind,
    header: string | null,
    policy: BucketPolicy,
    store: StoreKind,
    failMode: "open" | "closed" | null,
    check: (key: string) => RateLimitDecision | Promise<RateLimitDecision>,
  ) {
    this.identity = identity;
    this.route = route;
    this.keyKind = keyKind;
    this.header = header;
    this.policy = policy;
    this.store = store;
    this.failMode = failMode;
    this.#check = check;
  }

  /**
   * Counts one request. Synchronous for in-process stores whenever the answer is known locally; a
   * Promise otherwise (Redis, or a worker asking the primary).
   */
  check(
    client: string,
    subject: string | undefined,
    consumer: string | undefined,
    header: string | string[] | undefined,
  ): RateLimitDecision | Promise<RateLimitDecision> {
    return this.#check(rateLimitKey(this.keyKind, client, subject, consumer, header));
  }

  /** Counts one request for an already derived key. */
  checkKey(key: string): RateLimitDecision | Promise<RateLimitDecision> {
    return this.#check(key);
  }
}

/** What `configure()` built: the limiter per route name, and the mode. */
export interface RateLimitPlan {
  readonly limiters: ReadonlyMap<string, RouteLimiter>;
  readonly mode: RateLimitMode;
  /** @internal */
  readonly redisKey: string | null;
  /** @internal */
  readonly redisClient: RedisClient | null;
}

const monotonicMs = () => Math.floor(performance.now());

export class RateLimiters {
  readonly #leases: LeaseClient | undefined;
  readonly #observer: RateLimitObserver;
  readonly #maxKeys: number;
  readonly #now: () => number;
  readonly #redisOptions: RateLimitersOptions["redis"];
  #active: RateLimitPlan | null = null;
  /** Plans built but not (yet) active: their limiters may be reused, their clients must be closed. */
  readonly #built = new Set<RateLimitPlan>();
  #closed = false;

  constructor(options: RateLimitersOptions = {}) {
    this.#leases = options.leases;
    this.#observer = options.observer ?? {};
    this.#maxKeys = options.maxKeys ?? 100_000;
    this.#now = options.now ?? monotonicMs;
    this.#redisOptions = options.redis;
  }

  /**
   * Compiles the limits of `config`. Throws (RangeError naming the route) for limits that cannot be
   * counted exactly, so the whole config is refused.
   */
  configure(config: GatewayRuntimeConfig): RateLimitPlan {
    const store = config.rateLimitStore;
    const fleetDivisor = store.kind === "local" ? store.replicas : 1;
    const previous = new Map<string, RouteLimiter>();
    for (const plan of [...this.#built, ...(this.#active ? [this.#active] : [])])
      for (const l of plan.limiters.values()) previous.set(l.identity, l);

    let redisClient: RedisClient | null = null;
    let redisKey: string | null = null;
    const needsRedis = store.kind === "redis" && config.routes.some((r) => r.rateLimit?.scope === "fleet");
    if (store.kind === "redis" && needsRedis) {
      redisKey = `${store.url}\u0000${store.timeoutMs}`;
      for (const plan of [...(this.#active ? [this.#active] : []), ...this.#built])
        if (plan.redisKey === redisKey && plan.redisClient) redisClient = plan.redisClient;
      redisClient ??= this.#newRedisClient(store.url, store.timeoutMs);
    }

    const limiters = new Map<string, RouteLimiter>();
    const routes: RateLimitMode["routes"][number][] = [];
    try {
      for (const r of config.routes) {
        if (!r.rateLimit) continue;
        const rl = r.rateLimit;
        const toRedis = rl.scope === "fleet" && store.kind === "redis";
        const divisor = rl.scope === "fleet" ? fleetDivisor : 1;
        let policy: BucketPolicy;
        try {
          policy = compilePolicy(rl, divisor);
        } catch (err) {
          throw new RangeError(`gateway route ${r.name}: ${(err as Error).message}`, { cause: err });
        }
        const kind: StoreKind = toRedis ? "redis" : this.#leases ? "leased" : "local";
        const header = rl.key.kind === "header" ? rl.key.header.toLowerCase() : null;
        // The spec refuses these (E_SPEC_RESERVED_HEADER); a hand-written config does not load either.
        if (header !== null && ownedByTheGateway(header))
          throw new RangeError(
            `gateway route ${r.name}: rate limit keyed by header ${header}, which the gateway owns: the client writes its own copy, so every request could name a fresh bucket; key by ip`,
          );
        const failMode = toRedis && store.kind === "redis" ? store.failMode : null;
        // Buckets in a shared Redis are named by mesh, namespace and route: two meshes never share one.
        const scope = `${config.mesh}/${config.namespace}/${r.name}`;
        // The Redis client and fail mode name only a Redis limiter: an in-process one keeps its buckets
        // when a reload changes the store's URL or timeout, or adds the first fleet route.
        const id = `${scope}\u0000${kind}\u0000${policy.id}\u0000${rl.key.kind}\u0000${header ?? ""}\u0000${toRedis ? `${failMode}\u0000${redisKey}` : ""}`;
        const limiter =
          previous.get(id) ?? this.#newLimiter(id, scope, r, policy, kind, header, failMode, redisClient);
        limiters.set(r.name, limiter);
        routes.push({
          route: r.name,
          scope: rl.scope,
          store: kind,
          key: rl.key.kind === "header" ? `header:${rl.key.header}` : rl.key.kind,
          policy: policy.policyHeader,
          divisor,
        });
      }
    } catch (err) {
      if (redisClient && !this.#inUse(redisClient)) void redisClient.close();
      throw err;
    }
    const mode = describeMode(config, this.#leases ? "leased" : "single-process", routes);
    const plan: RateLimitPlan = { limiters, mode, redisKey, redisClient };
    this.#built.add(plan);
    return plan;
  }

  /** Makes `plan` the serving one; Redis clients no plan uses any more are closed after `graceMs`. */
  activate(plan: RateLimitPlan, graceMs = 5000): void {
    const old = this.#active;
    this.#active = plan;
    this.#built.delete(plan);
    const stale = new Set<RedisClient>();
    for (const p of [...this.#built, ...(old ? [old] : [])]) if (p.redisClient) stale.add(p.redisClient);
    this.#built.clear();
    if (plan.redisClient) stale.delete(plan.redisClient);
    for (const c of stale) setTimeout(() => void c.close(), graceMs).unref();
  }

  /** Forgets a plan that will not serve (its config was refused after all); closes its new Redis client. */
  discard(plan: RateLimitPlan): void {
    if (!this.#built.delete(plan)) return;
    if (plan.redisClient && !this.#inUse(plan.redisClient)) void plan.redisClient.close();
  }

  /** Discards every plan built since the last `activate()` (a reload that failed after configure). */
  discardPending(): void {
    for (const plan of [...this.#built]) this.discard(plan);
  }

  get mode(): RateLimitMode | null {
    return this.#active?.mode ?? null;
  }

  /** Closes every Redis client. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    const clients = new Set<RedisClient>();
    for (const p of [...this.#built, ...(this.#active ? [this.#active] : [])])
      if (p.redisClient) clients.add(p.redisClient);
    await Promise.all([...clients].map((c) => c.close()));
  }

  #inUse(client: RedisClient): boolean {
    for (const p of [...this.#built, ...(this.#active ? [this.#active] : [])])
      if (p.redisClient === client) return true;
    return false;
  }

  #newRedisClient(url: string, timeoutMs: number): RedisClient {
    const observer = this.#observer;
    const client: RedisClient = new RedisClient({
      // Its replies are four integers or a script's SHA1: a server sending more is broken.
      maxReplyBytes: 64 * 1024,
      ...this.#redisOptions,
      url,
      commandTimeoutMs: Math.max(1, timeoutMs),
      connectTimeoutMs: this.#redisOptions?.connectTimeoutMs ?? Math.max(1000, timeoutMs),
      onEvent: (e) => {
        // Load the script on every (re)connection, so checks hit EVALSHA and not the EVAL fallback.
        if (e.type === "ready")
          void client.call("SCRIPT", "LOAD", TOKEN_BUCKET_SCRIPT.source).catch(() => {});
        observer.redis?.(e);
        this.#redisOptions?.onEvent?.(e);
      },
    });
    // Connect now, so the first requests do not pay for it; failures are reported through onEvent.
    void client.connect().catch(() => {});
    return client;
  }

  #newLimiter(
    id: string,
    scope: string,
    r: GatewayRoute,
    policy: BucketPolicy,
    kind: StoreKind,
    header: string | null,
    failMode: "open" | "closed" | null,
    redisClient: RedisClient | null,
  ): RouteLimiter {
    const keyKind = r.rateLimit!.key.kind;
    const observer = this.#observer;
    if (kind === "redis") {
      const buckets = new RedisBuckets(redisClient!, scope, policy, {
        failMode: failMode!,
        onStoreError: (reason, mode, err) => observer.storeError?.(reason, mode, err),
      });
      return new RouteLimiter(id, r.name, keyKind, header, policy, kind, failMode, (key) =>
        buckets.check(key),
      );
    }
    if (kind === "leased") {
      const leased = this.#leases!.limiter(r.name, policy);
      return new RouteLimiter(id, r.name, keyKind, header, policy, kind, null, (key) => {
        const d = leased.check(key);
        if (d instanceof Promise) return d.then(reportUnavailable(observer));
        if (d.storeError) observer.storeError?.(d.storeError, "closed");
        return d;
      });
    }
    const buckets = new LocalBuckets(policy, {
      maxKeys: this.#maxKeys,
      onEvict: (k) => observer.evicted?.(k),
    });
    const now = this.#now;
    return new RouteLimiter(id, r.name, keyKind, header, policy, kind, null, (key) =>
      buckets.check(key, now()),
    );
  }
}

function reportUnavailable(observer: RateLimitObserver) {
  return (d: RateLimitDecision): RateLimitDecision => {
    if (d.storeError) observer.storeError?.(d.storeError, "closed");
    return d;
  };
}

/**
 * Which mode a config puts the rate limits in, without building anything (for the multi-worker
 * primary's log line). Throws like `configure()` for limits that cannot be counted exactly.
 */
export function rateLimitMode(
  config: GatewayRuntimeConfig,
  workers: RateLimitMode["workers"],
): RateLimitMode {
  const store = config.rateLimitStore;
  const routes: RateLimitMode["routes"][number][] = [];
  for (const r of config.routes) {
    const rl = r.rateLimit;
    if (!rl) continue;
    const divisor = rl.scope === "fleet" && store.kind === "local" ? store.replicas : 1;
    routes.push({
      route: r.name,
      scope: rl.scope,
      store:
        rl.scope === "fleet" && store.kind === "redis" ? "redis" : workers === "leased" ? "leased" : "local",
      key: rl.key.kind === "header" ? `header:${rl.key.header}` : rl.key.kind,
      policy: compilePolicy(rl, divisor).policyHeader,
      divisor,
    });
  }
  return describeMode(config, workers, routes);
}

function describeMode(
  config: GatewayRuntimeConfig,
  workers: RateLimitMode["workers"],
  routes: RateLimitMode["routes"][number][],
): RateLimitMode {
  const store = config.rateLimitStore;
  const fleetDivisor = store.kind === "local" ? store.replicas : 1;
  const redis =
    store.kind === "redis"
      ? { url: redactRedisUrl(store.url), failMode: store.failMode, timeoutMs: store.timeoutMs }
      : null;
  const inProcess =
    workers === "leased" ? "in process, shared by the workers through the primary" : "in process";
  let summary: string;
  if (routes.length === 0) summary = "rate limits: no route has a rate limit";
  else if (redis)
    summary = `rate limits: fleet-scoped limits are shared by every replica through Redis at ${redis.url} (fail ${redis.failMode}, timeout ${redis.timeoutMs} ms); replica-scoped limits are ${inProcess}`;
  else
    summary = `rate limits: ${inProcess}, no Redis; ${
      fleetDivisor > 1
        ? `fleet-scoped limits are divided by ${fleetDivisor} replicas (each replica enforces 1/${fleetDivisor})`
        : "fleet-scoped limits apply as written (1 replica)"
    }`;
  return {
    store: redis ? "redis" : "local",
    fleetDivisor,
    workers,
    redis,
    routes,
    summary,
  };
}
