/**
 * Local limits that hold across worker processes: the primary owns the buckets, workers spend leases.
 *
 * The gateway runs one worker per core behind SO_REUSEPORT, and the kernel decides which worker a
 * connection lands on. A limit of N per minute must admit about N across all workers, yet a client
 * whose connections all land on one worker must be able to use all N. So:
 *
 * - The primary (`LeaseServer`) holds the one authoritative bucket per (route, key).
 * - A worker (`LeaseClient`) asks the primary for tokens over the IPC channel and spends them locally,
 *   synchronously. When its lease runs low it asks for more in the background, so a busy key is
 *   answered without waiting. Only a key the worker holds no tokens for waits one IPC round trip.
 * - Every token a worker spends was taken from the primary's bucket first, so the fleet of workers never
 *   admits more than the one bucket would: **no over-admission**. The cost is the other way round:
 *   tokens leased to one worker and not spent there are unavailable to the others until they are given
 *   back (after `idleMs` without use) — at most one lease per worker and key, and a lease is at most
 *   `1 / (2 × workers)` of what the bucket held when it was granted, so a client on another worker is
 *   never starved by it.
 * - When the primary's bucket is empty, an ask that needs a token *reserves* the next one: the primary
 *   takes it in advance (its bucket goes into debt by at most one token per worker) and says when it
 *   exists; the worker answers 429 on its own until then and admits one request at that moment without
 *   asking. So even a key held at its limit is answered synchronously: every admitted request costs one
 *   background ask, denied ones none. Tokens are still produced only at the bucket's rate, and handed out
 *   in the order they were asked for.
 * - A worker that was told "no token before T" asks again after at most `idleMs` anyway, so tokens
 *   another worker gave back are seen within that time.
 * - Asks are batched: one IPC message per worker per event-loop turn, whatever the number of keys.
 * - If the primary does not answer within `timeoutMs` (it should always answer; this is a broken
 *   channel), the waiting requests are refused with `storeError: "unavailable"` — fail closed.
 */
import { performance } from "node:perf_hooks";
import type { BucketPolicy } from "./bucket.ts";
import { LocalBuckets, type EvictionKind, type RateLimitDecision } from "./local.ts";

/** Worker → primary: one batch of asks. `policies` defines ids on first use. */
export interface LeaseRequest {
  readonly type: "ratelimit";
  readonly id: number;
  readonly policies?: readonly LeasePolicy[];
  /** [policy id, key, tokens needed now, extra tokens wanted, unused tokens given back] */
  readonly ops: readonly (readonly [string, string, number, number, number])[];
}

export interface LeasePolicy {
  readonly id: string;
  readonly rate: number;
  readonly cost: number;
  readonly capacity: number;
}

/** Primary → worker: one result per op, in order. */
export interface LeaseReply {
  readonly type: "ratelimit";
  readonly id: number;
  /**
   * [tokens granted, ms until they may be spent (0: now; > 0: a reserved token, or with none granted,
   * when the next one exists; `UNKNOWN_POLICY`: the primary does not know the policy — it dropped it
   * as idle — and the worker must define it again), tokens left in the primary's bucket, ms until it
   * is full]
   */
  readonly results: readonly (readonly [number, number, number, number])[];
}

const monotonicMs = () => Math.floor(performance.now());

/** The "ms" of a result for a policy the primary does not hold (dropped after `policyIdleMs`). */
export const UNKNOWN_POLICY = -1;

// ── primary ───────────────────────────────────────────────────────────────────────────────────────────

export interface LeaseServerOptions {
  readonly now?: () => number;
  /** Keys per policy; default 100,000. */
  readonly maxKeys?: number;
  /**
   * Policies unused this long (after a reload changed them) are dropped once all their buckets are full;
   * default 10 min.
   */
  readonly policyIdleMs?: number;
  readonly onEvict?: (kind: EvictionKind) => void;
}

/** The primary's side: the authoritative buckets, answering worker asks. */
export class LeaseServer {
  readonly #tables = new Map<string, { buckets: LocalBuckets; lastUsed: number }>();
  readonly #now: () => number;
  readonly #maxKeys: number;
  readonly #policyIdleMs: number;
  readonly #onEvict: (kind: EvictionKind) => void;

  constructor(options: LeaseServerOptions = {}) {
    this.#now = options.now ?? monotonicMs;
    this.#maxKeys = options.maxKeys ?? 100_000;
    this.#policyIdleMs = options.policyIdleMs ?? 600_000;
    this.#onEvict = options.onEvict ?? (() => {});
  }

  /** Answers one batch from a worker; `workers` is how many share the buckets (for lease sizes). */
  handle(req: LeaseRequest, workers: number): LeaseReply {
    const now = this.#now();
    for (const p of req.policies ?? []) {
      if (this.#tables.has(p.id)) continue;
      const policy: BucketPolicy = {
        rate: p.rate,
        cost: p.cost,
        capacity: p.capacity,
        limit: Math.floor(p.capacity / p.cost),
        id: p.id,
        policyHeader: "",
        divisor: 1,
        raisedToOneToken: false,
      };
      this.#tables.set(p.id, {
        buckets: new LocalBuckets(policy, { maxKeys: this.#maxKeys, onEvict: this.#onEvict }),
        lastUsed: now,
      });
    }
    const n = Math.max(1, workers);
    const results: [number, number, number, number][] = [];
    for (const [policyId, key, need, want, back] of req.ops) {
      const table = this.#tables.get(policyId);
      if (!table) {
        // Dropped as idle (or never defined): the worker defines it again and asks again.
        results.push([0, UNKNOWN_POLICY, 0, 0]);
        continue;
      }
      table.lastUsed = now;
      const b = table.buckets;
      if (back > 0) b.giveBack(key, now, back);
      let granted = 0;
      let readyIn = 0;
      if (need > 0 || want > 0) {
        const before = b.peek(key, now).tokens;
        // What is needed now, plus a lease of at most 1/(2 × workers) of what the bucket holds.
        const extra = Math.min(want, Math.floor(Math.max(0, before - need) / (2 * n)));
        granted = b.takeUpTo(key, now, 1, need + extra);
        if (granted === 0 && need > 0) {
          // Empty: reserve the next token for this worker (debt of at most one token per worker).
          const at = b.reserve(key, now, n);
          if (at >= 0) {
            granted = 1;
            readyIn = Math.max(1, at);
          }
        }
      }
      const after = b.peek(key, now);
      if (granted === 0) readyIn = Math.max(1, after.retryAfterMs);
      results.push([granted, readyIn, after.tokens, after.resetMs]);
    }
    return { type: "ratelimit", id: req.id, results };
  }

  /**
   * Drops full buckets (they answer like absent ones), and policies no worker used for `policyIdleMs`
   * once they hold no other: a quiet route's spent bucket (a daily limit nobody asked about for minutes)
   * is kept until it is full again, never handed back full.
   */
  sweep(): void {
    const now = this.#now();
    for (const [id, t] of this.#tables) {
      t.buckets.sweep(now);
      if (now - t.lastUsed > this.#policyIdleMs && t.buckets.size === 0) this.#tables.delete(id);
    }
  }

  /** Policies and keys held (for tests and metrics). */
  stats(): { policies: number; keys: number } {
    let keys = 0;
    for (const t of this.#tables.values()) keys += t.buckets.size;
    return { policies: this.#tables.size, keys };
  }
}

// ── worker ────────────────────────────────────────────────────────────────────────────────────────────

export interface LeaseClientOptions {
  readonly now?: () => number;
  /** Largest extra lease asked for per key; default 64. */
  readonly leaseMax?: number;
  /** A key unused this long gives its unused tokens back; default 1000 ms. */
  readonly idleMs?: number;
  /** The primary must answer within this; default 1000 ms. */
  readonly timeoutMs?: number;
  /** Keys held per worker; default 100,000. */
  readonly maxKeys?: number;
}

type Waiter = (d: RateLimitDecision) => void;

interface Entry {
  readonly policy: string;
  readonly key: string;
  /** Tokens leased (or reserved) and not spent. */
  tokens: number;
  /** When `tokens` may be spent (later than now for a reserved token). */
  availableAt: number;
  /** With no tokens: the next token's time as the primary said (for Retry-After). */
  retryAt: number;
  /** With no tokens: do not ask the primary again before this (at most `idleMs` ahead). */
  deniedUntil: number;
  /** With a reserved token: ask again from this time on (tokens given back may make one due sooner). */
  recheckAt: number;
  /** Tokens the primary's bucket held after the last answer. */
  remaining: number;
  resetAt: number;
  lastUsed: number;
  lastGrant: number;
  inflight: boolean;
  waiters: Waiter[] | null;
}

/** The worker's side: spends leased tokens synchronously, asks the primary for more. */
export class LeaseClient {
  readonly #send: (m: LeaseRequest) => void;
  readonly #now: () => number;
  readonly #leaseMax: number;
  readonly #idleMs: number;
  readonly #timeoutMs: number;
  readonly #maxKeys: number;
  /** Entries per limit (policy id), then per key: no string joined per check. */
  readonly #tables = new Map<string, Map<string, Entry>>();
  #count = 0;
  /** Every policy a limiter was made for, by id; and the ids the primary was told about. */
  readonly #policies = new Map<string, LeasePolicy>();
  readonly #defined = new Set<string>();
  #newPolicies: LeasePolicy[] = [];
  #ops: [string, string, number, number, number][] = [];
  #opEntries: (Entry | null)[] = [];
  #flushScheduled = false;
  #nextId = 1;
  readonly #inflight = new Map<number, { sentAt: number; entries: (Entry | null)[] }>();
  readonly #timer: NodeJS.Timeout;

  constructor(send: (m: LeaseRequest) => void, options: LeaseClientOptions = {}) {
    this.#send = send;
    this.#now = options.now ?? monotonicMs;
    this.#leaseMax = options.leaseMax ?? 64;
    this.#idleMs = options.idleMs ?? 1000;
    this.#timeoutMs = options.timeoutMs ?? 1000;
    this.#maxKeys = options.maxKeys ?? 100_000;
    this.#timer = setInterval(() => this.sweep(), Math.max(10, Math.min(this.#idleMs, this.#timeoutMs) / 2));
    this.#timer.unref();
  }

  /** A per-limit view whose `check` spends this worker's leases. `scope` separates routes. */
  limiter(scope: string, policy: BucketPolicy): LeasedBuckets {
    const id = `${scope}|${policy.id}`;
    if (!this.#policies.has(id))
      this.#policies.set(id, { id, rate: policy.rate, cost: policy.cost, capacity: policy.capacity });
    let table = this.#tables.get(id);
    if (!table) this.#tables.set(id, (table = new Map()));
    return new LeasedBuckets(this, id, policy, table);
  }

  /** Feeds a reply from the primary (wired to the IPC channel by the worker). */
  receive(reply: LeaseReply): void {
    const batch = this.#inflight.get(reply.id);
    if (!batch) return; // timed out already
    this.#inflight.delete(reply.id);
    const now = this.#now();
    for (let i = 0; i < batch.entries.length; i++) {
      const e = batch.entries[i];
      const r = reply.results[i];
      if (!e || !r) continue;
      const [granted, readyIn, remaining, resetMs] = r;
      e.inflight = false;
      if (readyIn === UNKNOWN_POLICY) {
        // The primary dropped the policy while this worker did not use it: define it again, and ask
        // again for the requests waiting (a top-up is asked again by the next check).
        this.#defined.delete(e.policy);
        if (e.waiters) this.#ask(e, e.waiters.length);
        continue;
      }
      e.lastGrant = granted;
      e.remaining = remaining;
      e.resetAt = now + resetMs;
      if (granted > 0) {
        e.tokens += granted;
        e.availableAt = now + readyIn;
        e.recheckAt = now + this.#idleMs;
        e.retryAt = e.deniedUntil = 0;
      } else {
        e.retryAt = now + readyIn;
        e.deniedUntil = now + Math.min(readyIn, this.#idleMs);
      }
      this.#serveWaiters(e, now);
    }
  }

  /** Keys held (for tests). */
  get size(): number {
    return this.#count;
  }

  /** Gives back idle leases, fails asks the primary did not answer in time. Runs on a timer. */
  sweep(): void {
    const now = this.#now();
    for (const [id, batch] of this.#inflight) {
      if (now - batch.sentAt < this.#timeoutMs) continue;
      this.#inflight.delete(id);
      for (const e of batch.entries) {
        if (!e) continue;
        e.inflight = false;
        const waiters = e.waiters;
        e.waiters = null;
        if (waiters) for (const w of waiters) w(UNAVAILABLE);
      }
    }
    for (const table of this.#tables.values())
      for (const [k, e] of table) {
        if (e.inflight || e.waiters || now - e.lastUsed < this.#idleMs) continue;
        this.#evict(table, k, e);
      }
  }

  /** Stops the timer and gives every unused token back. */
  close(): void {
    clearInterval(this.#timer);
    for (const table of this.#tables.values()) {
      for (const e of table.values()) if (e.tokens > 0) this.#queue(e.policy, e.key, 0, 0, e.tokens, null);
      table.clear();
    }
    this.#count = 0;
    this.#flush();
  }

  /** @internal the check of LeasedBuckets. */
  check(
    policyId: string,
    policy: BucketPolicy,
    table: Map<string, Entry>,
    key: string,
  ): RateLimitDecision | Promise<RateLimitDecision> {
    const now = this.#now();
    let e = table.get(key);
    if (e === undefined) {
      if (this.#count >= this.#maxKeys) this.#makeRoom();
      e = {
        policy: policyId,
        key,
        tokens: 0,
        availableAt: 0,
        retryAt: 0,
        deniedUntil: 0,
        recheckAt: 0,
        remaining: policy.limit,
        resetAt: now,
        lastUsed: now,
        lastGrant: 0,
        inflight: false,
        waiters: null,
      };
      table.set(key, e);
      this.#count++;
    }
    e.lastUsed = now;
    if (e.tokens >= 1) {
      if (now < e.availableAt) {
        // A reserved token, not yet due. Now and then hand it back and ask again: tokens another worker
        // gave back may make one available sooner. Until the answer, keep refusing.
        const due = e.availableAt;
        if (!e.inflight && now >= e.recheckAt) {
          const back = e.tokens;
          e.tokens = 0;
          e.availableAt = 0;
          e.retryAt = e.deniedUntil = due;
          this.#ask(e, 1, back);
        }
        return denied(due, e, now);
      }
      e.tokens--;
      if (e.tokens === 0 && e.remaining === 0) {
        // The primary was empty: the next token is about one token-time away. Refuse meanwhile rather
        // than make every request wait for the ask below.
        e.retryAt = e.deniedUntil = now + Math.ceil(policy.cost / policy.rate);
      }
      // Top up in the background at half the last lease; at zero, ask for (or reserve) the next token.
      if (!e.inflight && e.tokens <= e.lastGrant >> 1) this.#ask(e, e.tokens === 0 ? 1 : 0);
      return allowed(e, now);
    }
    if (now < e.deniedUntil) return denied(e.retryAt, e, now);
    return new Promise<RateLimitDecision>((resolve) => {
      (e.waiters ??= []).push(resolve);
      if (!e.inflight) this.#ask(e, e.waiters.length);
    });
  }

  #serveWaiters(e: Entry, now: number): void {
    const waiters = e.waiters;
    if (!waiters) return;
    let i = 0;
    while (i < waiters.length && e.tokens >= 1 && now >= e.availableAt) {
      e.tokens--;
      waiters[i++]!(allowed(e, now));
    }
    if (i === waiters.length) {
      e.waiters = null;
      if (!e.inflight && e.tokens === 0) this.#ask(e, 1); // the next token, for the next request
      return;
    }
    const retryAt = e.tokens >= 1 ? e.availableAt : now < e.deniedUntil ? e.retryAt : 0;
    if (retryAt > now) {
      e.waiters = null;
      for (; i < waiters.length; i++) waiters[i]!(denied(retryAt, e, now));
      return;
    }
    // The bucket had tokens but fewer than waited: ask again for the rest.
    e.waiters = waiters.slice(i);
    this.#ask(e, e.waiters.length);
  }

  #ask(e: Entry, need: number, back = 0): void {
    e.inflight = true;
    this.#queue(e.policy, e.key, need, this.#leaseMax, back, e);
  }

  #queue(policy: string, key: string, need: number, want: number, back: number, e: Entry | null): void {
    // An ask defines its policy first, unless the primary was told already (give-backs need none: a
    // bucket the primary does not hold is full).
    if (e !== null && !this.#defined.has(policy)) {
      this.#defined.add(policy);
      this.#newPolicies.push(this.#policies.get(policy)!);
    }
    this.#ops.push([policy, key, need, want, back]);
    this.#opEntries.push(e);
    if (!this.#flushScheduled) {
      this.#flushScheduled = true;
      // After the current I/O callbacks: the asks of every request read in this turn go in one message.
      setImmediate(this.#flushTick);
    }
  }

  readonly #flushTick = (): void => this.#flush();

  #flush(): void {
    this.#flushScheduled = false;
    if (this.#ops.length === 0) return;
    const id = this.#nextId++;
    const req: LeaseRequest = {
      type: "ratelimit",
      id,
      ...(this.#newPolicies.length ? { policies: this.#newPolicies } : {}),
      ops: this.#ops,
    };
    this.#inflight.set(id, { sentAt: this.#now(), entries: this.#opEntries });
    this.#newPolicies = [];
    this.#ops = [];
    this.#opEntries = [];
    this.#send(req);
  }

  #makeRoom(): void {
    // Look at the oldest few: drop the first idle one (its tokens go back); recently used ones move to
    // the back. If all are in use, drop the oldest that is not waiting for the primary.
    const now = this.#now();
    let probes = 0;
    let fallback: [Map<string, Entry>, string, Entry] | undefined;
    const moved: [Map<string, Entry>, string, Entry][] = [];
    for (const table of this.#tables.values()) {
      for (const [k, e] of table) {
        if (probes++ >= 16) break;
        if (e.inflight || e.waiters) continue;
        if (now - e.lastUsed >= this.#idleMs) {
          this.#evict(table, k, e);
          return;
        }
        if (fallback) moved.push([table, k, e]);
        else fallback = [table, k, e];
      }
      if (probes >= 16) break;
    }
    if (fallback) this.#evict(...fallback);
    for (const [table, k, e] of moved) {
      table.delete(k);
      table.set(k, e);
    }
  }

  #evict(table: Map<string, Entry>, k: string, e: Entry): void {
    if (table.delete(k)) this.#count--;
    if (e.tokens > 0) this.#queue(e.policy, e.key, 0, 0, e.tokens, null);
    e.tokens = 0;
  }
}

const UNAVAILABLE: RateLimitDecision = Object.freeze({
  allowed: false,
  remaining: 0,
  resetMs: 0,
  retryAfterMs: 1000,
  storeError: "unavailable",
});

function allowed(e: Entry, now: number): RateLimitDecision {
  return {
    allowed: true,
    remaining: e.remaining + e.tokens,
    resetMs: Math.max(0, e.resetAt - now),
    retryAfterMs: 0,
    storeError: null,
  };
}

function denied(retryAt: number, e: Entry, now: number): RateLimitDecision {
  return {
    allowed: false,
    remaining: 0,
    resetMs: Math.max(0, e.resetAt - now),
    retryAfterMs: Math.max(1, retryAt - now),
    storeError: null,
  };
}

/** One limit's view of a worker's leases; `check` is synchronous whenever the worker holds tokens. */
export class LeasedBuckets {
  readonly policy: BucketPolicy;
  readonly #client: LeaseClient;
  readonly #id: string;
  readonly #table: Map<string, Entry>;
  /** @internal made by `LeaseClient.limiter`. */
  constructor(client: LeaseClient, id: string, policy: BucketPolicy, table: Map<string, Entry>) {
    this.#client = client;
    this.#id = id;
    this.policy = policy;
    this.#table = table;
  }
  check(key: string): RateLimitDecision | Promise<RateLimitDecision> {
    return this.#client.check(this.#id, this.policy, this.#table, key);
  }
}
