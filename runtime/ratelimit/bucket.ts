/**
 * Token-bucket math in integers, so that no rounding ever accumulates.
 *
 * A limit of `requests` per `periodMs` with a bucket of `burst` tokens, divided over `divisor` replicas,
 * refills `requests` tokens every `periodMs × divisor` ms and holds `burst / divisor` tokens. Measured
 * in *units* where one token is `periodMs × divisor` units, that is exactly:
 *
 *   rate     = requests             units added per millisecond
 *   cost     = periodMs × divisor   units one request takes
 *   capacity = burst × periodMs     units a full bucket holds (at least one token)
 *
 * — all integers (reduced by their common divisor), so a bucket refilled lazily from integer
 * millisecond timestamps holds exactly what an ideal bucket holds: no drift over any number of periods.
 * The same three numbers drive the local buckets, the primary's buckets behind worker leases and the
 * Redis script.
 */

/** The compiled, integer form of one limit. */
export interface BucketPolicy {
  /** Units added per millisecond. */
  readonly rate: number;
  /** Units one request takes (one token). */
  readonly cost: number;
  /** Units in a full bucket (≥ cost). */
  readonly capacity: number;
  /** Whole tokens in a full bucket: what `RateLimit-Limit` says. */
  readonly limit: number;
  /** Identity of the numbers (`rate/cost/capacity`), part of every bucket key. */
  readonly id: string;
  /** The `RateLimit-Policy` value (draft-ietf-httpapi-ratelimit-headers-06 §5.1). */
  readonly policyHeader: string;
  /** The divisor applied (1, or the replica count for a fleet limit without Redis). */
  readonly divisor: number;
  /** True when `burst / divisor` was below one token and was raised to one (a per-replica floor). */
  readonly raisedToOneToken: boolean;
}

/**
 * The largest rate, cost or capacity. Units then stay below 2^51 (a refill adds less than what is
 * missing plus one ms of rate; a worker debt is a few tokens), well inside the 2^53 that doubles — here
 * and in Redis' Lua — hold exactly.
 */
export const MAX_UNITS = 2 ** 50;

export interface LimitNumbers {
  readonly requests: number;
  readonly periodMs: number;
  readonly burst: number;
}

/**
 * Compiles a limit (divided over `divisor` replicas). Throws RangeError when the numbers cannot be
 * represented exactly (a burst × period beyond 2^50 after reduction), naming them.
 */
export function compilePolicy(limit: LimitNumbers, divisor = 1): BucketPolicy {
  const { requests, periodMs, burst } = limit;
  for (const [name, v] of [
    ["requests", requests],
    ["periodMs", periodMs],
    ["burst", burst],
    ["divisor", divisor],
  ] as const)
    if (!Number.isSafeInteger(v) || v < 1)
      throw new RangeError(`rate limit ${name} must be a positive integer, got ${v}`);
  let rate = requests;
  let cost = periodMs * divisor;
  let capacity = burst * periodMs;
  const raisedToOneToken = capacity < cost;
  if (raisedToOneToken) capacity = cost;
  const g = gcd(gcd(rate, cost), capacity);
  rate /= g;
  cost /= g;
  capacity /= g;
  if (capacity > MAX_UNITS || cost > MAX_UNITS || rate > MAX_UNITS)
    throw new RangeError(
      `rate limit ${requests} per ${periodMs} ms with burst ${burst} is too fine-grained to count exactly; use a shorter period or a smaller burst`,
    );
  return {
    rate,
    cost,
    capacity,
    limit: Math.floor(capacity / cost),
    id: `${rate}/${cost}/${capacity}`,
    policyHeader: policyHeader(requests, periodMs * divisor, Math.floor(capacity / cost)),
    divisor,
    raisedToOneToken,
  };
}

/**
 * `RateLimit-Policy` of draft-06: `<quota>;w=<window seconds>`, plus `burst=<tokens>` (an extension
 * parameter) when the bucket holds more or less than one window's quota. The window is a whole number
 * of seconds; a sub-second or fractional window is expressed per whole second.
 */
function policyHeader(requests: number, windowMs: number, burstTokens: number): string {
  let quota: number;
  let w: number;
  if (windowMs % 1000 === 0) {
    quota = requests;
    w = windowMs / 1000;
  } else {
    w = Math.ceil(windowMs / 1000);
    quota = Math.floor((requests * w * 1000) / windowMs);
  }
  return burstTokens === quota ? `${quota};w=${w}` : `${quota};w=${w};burst=${burstTokens}`;
}

function gcd(a: number, b: number): number {
  while (b !== 0) [a, b] = [b, a % b];
  return a;
}

/** A bucket: its units and the millisecond they were last brought up to date. */
export interface BucketState {
  units: number;
  t: number;
}

/** A full bucket at `now`. */
export function fullBucket(p: BucketPolicy, now: number): BucketState {
  return { units: p.capacity, t: now };
}

/**
 * Brings `s` up to `now` (integer ms): adds `rate` units per elapsed ms, up to the capacity. A clock
 * that goes back adds nothing (and keeps `t`, so the time is not counted twice).
 */
export function refill(s: BucketState, p: BucketPolicy, now: number): void {
  if (now <= s.t) return;
  const missing = p.capacity - s.units;
  if (missing > 0) {
    const elapsed = now - s.t;
    // Compared as times, so a long idle bucket never multiplies into an imprecise number.
    s.units = elapsed >= Math.ceil(missing / p.rate) ? p.capacity : s.units + elapsed * p.rate;
  }
  s.t = now;
}

/** Takes `n` tokens if the (refilled) bucket holds them. */
export function take(s: BucketState, p: BucketPolicy, n = 1): boolean {
  const units = n * p.cost;
  if (s.units < units) return false;
  s.units -= units;
  return true;
}

/** Whole tokens in the bucket. */
export function tokens(s: BucketState, p: BucketPolicy): number {
  return s.units <= 0 ? 0 : Math.floor(s.units / p.cost);
}

/** Milliseconds until the bucket holds one whole token (0 when it does). */
export function msUntilToken(s: BucketState, p: BucketPolicy): number {
  return s.units >= p.cost ? 0 : Math.ceil((p.cost - s.units) / p.rate);
}

/** Milliseconds until the bucket is full again (0 when it is). */
export function msUntilFull(s: BucketState, p: BucketPolicy): number {
  return s.units >= p.capacity ? 0 : Math.ceil((p.capacity - s.units) / p.rate);
}
