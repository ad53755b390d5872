/**
 * In-process token buckets for one limit: one bucket per key, refilled lazily on use, checked
 * synchronously in O(1).
 *
 * Bounded memory: at most `maxKeys` buckets. A full bucket is the same as no bucket, so when the table
 * is at its cap the oldest buckets are looked at first and full ones are dropped without changing any
 * answer (`evicted("idle")`); recently used ones get a second chance at the back of the queue. Only
 * when the oldest few are all in use is the oldest dropped anyway (`evicted("active")`): its key starts
 * again from a full bucket — the cap's only, counted, inaccuracy.
 */
import {
  fullBucket,
  msUntilFull,
  msUntilToken,
  refill,
  take,
  tokens,
  type BucketPolicy,
  type BucketState,
} from "./bucket.ts";

/** What a check answers. */
export interface RateLimitDecision {
  readonly allowed: boolean;
  /** Whole tokens left after this request. */
  readonly remaining: number;
  /** Milliseconds until the bucket is full again. */
  readonly resetMs: number;
  /** Milliseconds until the next token (0 when allowed). */
  readonly retryAfterMs: number;
  /**
   * Set when the store could not answer and the fail mode decided instead (`allowed` then says which):
   * the kind of failure.
   */
  readonly storeError: StoreErrorReason | null;
}

export type StoreErrorReason = "timeout" | "connection" | "reply" | "overload" | "unavailable";

export type EvictionKind = "idle" | "active";

export interface LocalStoreOptions {
  /** Most keys kept; default 100,000. */
  readonly maxKeys?: number;
  /** How many of the oldest buckets an insertion at the cap looks at for a full one; default 8. */
  readonly probes?: number;
  readonly onEvict?: (kind: EvictionKind) => void;
}

export class LocalBuckets {
  readonly policy: BucketPolicy;
  readonly #buckets = new Map<string, BucketState>();
  readonly #maxKeys: number;
  readonly #probes: number;
  readonly #onEvict: (kind: EvictionKind) => void;

  constructor(policy: BucketPolicy, options: LocalStoreOptions = {}) {
    this.policy = policy;
    this.#maxKeys = options.maxKeys ?? 100_000;
    this.#probes = options.probes ?? 8;
    this.#onEvict = options.onEvict ?? (() => {});
    if (!(this.#maxKeys >= 1)) throw new RangeError("maxKeys must be at least 1");
  }

  /** Buckets held now. */
  get size(): number {
    return this.#buckets.size;
  }

  /** Takes one token for `key` at `now` (integer ms, monotonic). */
  check(key: string, now: number): RateLimitDecision {
    const p = this.policy;
    let s = this.#buckets.get(key);
    if (s === undefined) {
      if (this.#buckets.size >= this.#maxKeys) this.#makeRoom(now);
      s = fullBucket(p, now);
      this.#buckets.set(key, s);
    } else refill(s, p, now);
    const allowed = take(s, p);
    return {
      allowed,
      remaining: tokens(s, p),
      resetMs: msUntilFull(s, p),
      retryAfterMs: allowed ? 0 : msUntilToken(s, p),
      storeError: null,
    };
  }

  /**
   * Takes up to `max` tokens at once (at least `min` or none), for leases. Returns how many, and leaves
   * the bucket's state readable through `peek`.
   */
  takeUpTo(key: string, now: number, min: number, max: number): number {
    const p = this.policy;
    let s = this.#buckets.get(key);
    if (s === undefined) {
      if (this.#buckets.size >= this.#maxKeys) this.#makeRoom(now);
      s = fullBucket(p, now);
      this.#buckets.set(key, s);
    } else refill(s, p, now);
    const have = tokens(s, p);
    if (have < min) return 0;
    const n = Math.min(have, max);
    s.units -= n * p.cost;
    return n;
  }

  /**
   * Reserves the next token that will exist, taking it now: the bucket goes into debt by one token (at
   * most `maxDebt` tokens deep). Returns the milliseconds until that token exists, or -1 when the debt
   * is already that deep. Only called on an empty bucket (a full one would grant now).
   */
  reserve(key: string, now: number, maxDebt: number): number {
    const p = this.policy;
    const s = this.#buckets.get(key);
    if (s === undefined) return -1; // absent means full: the caller takes instead
    refill(s, p, now);
    if (s.units - p.cost < -maxDebt * p.cost) return -1;
    const readyIn = msUntilToken(s, p);
    s.units -= p.cost;
    return readyIn;
  }

  /** Gives back `n` unused tokens (capped at a full bucket). */
  giveBack(key: string, now: number, n: number): void {
    const s = this.#buckets.get(key);
    if (s === undefined) return; // gone means full
    refill(s, this.policy, now);
    s.units = Math.min(this.policy.capacity, s.units + n * this.policy.cost);
  }

  /** The bucket of `key` at `now` (a full one if there is none); does not take anything. */
  peek(key: string, now: number): { tokens: number; resetMs: number; retryAfterMs: number } {
    const p = this.policy;
    const s = this.#buckets.get(key);
    if (s === undefined) return { tokens: p.limit, resetMs: 0, retryAfterMs: 0 };
    refill(s, p, now);
    return { tokens: tokens(s, p), resetMs: msUntilFull(s, p), retryAfterMs: msUntilToken(s, p) };
  }

  /** Drops every full bucket (they answer like absent ones); returns how many were dropped. */
  sweep(now: number): number {
    let n = 0;
    for (const [key, s] of this.#buckets) {
      refill(s, this.policy, now);
      if (s.units >= this.policy.capacity) {
        this.#buckets.delete(key);
        n++;
      }
    }
    return n;
  }

  #makeRoom(now: number): void {
    const buckets = this.#buckets;
    const p = this.policy;
    const probed: string[] = [];
    let victim: string | undefined;
    let victimUnits = -Infinity;
    for (const [key, s] of buckets) {
      if (probed.length >= this.#probes) break;
      refill(s, p, now);
      if (s.units >= p.capacity) {
        buckets.delete(key);
        this.#onEvict("idle");
        return;
      }
      probed.push(key);
      if (s.units > victimUnits) {
        victim = key;
        victimUnits = s.units;
      }
    }
    // All in use: drop the fullest of them (the least lost), and move the others to the back.
    if (victim === undefined) return;
    buckets.delete(victim);
    this.#onEvict("active");
    for (const key of probed) {
      if (key === victim) continue;
      const s = buckets.get(key)!;
      buckets.delete(key);
      buckets.set(key, s);
    }
  }
}
