/**
 * Resilience primitives shared by the gateway and the sidecar: a retry budget, jittered backoff, the
 * retry-safety rules, passive outlier detection and the circuit breaker's counters. Each is a small
 * value with explicit inputs (the clock is passed in), so tests drive them deterministically.
 */
import {
  IDEMPOTENT_METHODS,
  type HttpMethod,
  type RetryBudget as RetryBudgetConfig,
  type RetryOn,
  type RetryPlan,
} from "../contract/schema.ts";

/**
 * Retry budget (Finagle/Linkerd): retries may add at most `ratio` of the requests seen in the last
 * `windowMs`, plus `minPerSecond` × window for low-traffic clusters. Deposits and withdrawals are kept
 * in one-second buckets, so old traffic stops funding retries once it leaves the window.
 */
export class RetryBudget {
  private readonly ratio: number;
  private readonly minPerSecond: number;
  private readonly buckets: number;
  private readonly deposits: Float64Array;
  private readonly withdrawals: Float64Array;
  private readonly stamps: Float64Array;

  constructor(budget: RetryBudgetConfig, windowSeconds = 10) {
    this.ratio = budget.ratio;
    this.minPerSecond = budget.minPerSecond;
    this.buckets = windowSeconds;
    this.deposits = new Float64Array(windowSeconds);
    this.withdrawals = new Float64Array(windowSeconds);
    this.stamps = new Float64Array(windowSeconds).fill(-1);
  }

  private bucket(nowMs: number): number {
    const second = Math.floor(nowMs / 1000);
    const i = second % this.buckets;
    if (this.stamps[i] !== second) {
      this.stamps[i] = second;
      this.deposits[i] = 0;
      this.withdrawals[i] = 0;
    }
    return i;
  }

  /** Every original (non-retry) request funds the budget. */
  deposit(nowMs: number): void {
    this.deposits[this.bucket(nowMs)]! += 1;
  }

  /** Takes one retry from the budget; false when the budget is spent. */
  tryWithdraw(nowMs: number): boolean {
    const current = this.bucket(nowMs);
    const oldest = Math.floor(nowMs / 1000) - this.buckets + 1;
    let deposited = 0;
    let withdrawn = 0;
    for (let i = 0; i < this.buckets; i++) {
      if (this.stamps[i]! >= oldest) {
        deposited += this.deposits[i]!;
        withdrawn += this.withdrawals[i]!;
      }
    }
    const allowed = deposited * this.ratio + this.minPerSecond * this.buckets;
    if (withdrawn + 1 > allowed) return false;
    this.withdrawals[current]! += 1;
    return true;
  }
}

/** Full-jitter exponential backoff (AWS architecture blog): uniform in [0, min(max, base × 2^retry)). */
export function backoffMs(retry: number, backoff: RetryPlan["backoff"], random: number): number {
  const cap = Math.min(backoff.maxMs, backoff.baseMs * 2 ** retry);
  return Math.floor(random * cap);
}

/** How one attempt failed (or the status it answered with). */
export type AttemptFailure =
  | { kind: "connect-failure" }
  | { kind: "refused-stream" }
  | { kind: "reset" }
  | { kind: "timeout" }
  | { kind: "status"; status: number };

/** Failures after which no byte of the request reached the upstream: safe to retry for any method. */
const NEVER_SENT: ReadonlySet<AttemptFailure["kind"]> = new Set(["connect-failure", "refused-stream"]);

function matchesRetryOn(f: AttemptFailure, on: readonly RetryOn[]): boolean {
  if (f.kind !== "status") return on.includes(f.kind);
  const s = f.status;
  return (
    (s >= 500 && s <= 599 && on.includes("5xx")) ||
    (s === 502 && on.includes("502")) ||
    (s === 503 && on.includes("503")) ||
    (s === 504 && on.includes("504")) ||
    (s === 429 && on.includes("429"))
  );
}

/**
 * May this failure be retried? Only if the plan lists it, and either the request never reached the
 * upstream, or the method is idempotent (RFC 9110 §9.2.2) and its body can be replayed.
 */
export function retryable(
  f: AttemptFailure,
  plan: RetryPlan,
  method: string,
  bodyReplayable: boolean,
): boolean {
  if (!matchesRetryOn(f, plan.retryOn)) return false;
  if (NEVER_SENT.has(f.kind)) return bodyReplayable;
  return IDEMPOTENT_METHODS.has(method as HttpMethod) && bodyReplayable;
}

/** Passive health of one endpoint (Envoy outlier detection, consecutive-5xx flavour). */
export interface EndpointHealth {
  consecutiveFailures: number;
  ejectedUntil: number;
  ejections: number;
  lastEjectionEnd: number;
  /** Active health checks: false after `unhealthyThreshold` failed probes. */
  activeHealthy: boolean;
}

export const newHealth = (): EndpointHealth => ({
  consecutiveFailures: 0,
  ejectedUntil: 0,
  ejections: 0,
  lastEjectionEnd: 0,
  activeHealthy: true,
});

export interface OutlierConfig {
  consecutive5xx: number;
  intervalMs: number;
  baseEjectionMs: number;
  maxEjectedPercent: number;
}

/**
 * The longest one ejection lasts — Envoy's `max_ejection_time` default — unless `baseEjection` itself is
 * longer. Without it an endpoint that failed for a day was ejected for hours after it recovered (30 s ×
 * its 100th ejection = 50 min), and its multiplier took as many healthy intervals to come back down.
 */
export const MAX_EJECTION_MS = 300_000;

/**
 * Records an attempt's result; returns true when this result ejects the endpoint. A failure is a 5xx,
 * a reset, a timeout or a connect failure. The ejection lasts baseEjectionMs × (number of ejections), at
 * most MAX_EJECTION_MS (the multiplier stops growing there); the multiplier shrinks by one for each
 * interval the endpoint then stays healthy. At most maxEjectedPercent of the endpoints are ejected at once
 * — but at least one may be (as Envoy does).
 */
export function recordResult(
  h: EndpointHealth,
  failed: boolean,
  cfg: OutlierConfig,
  nowMs: number,
  ejectedNow: number,
  total: number,
): boolean {
  if (!failed) {
    h.consecutiveFailures = 0;
    if (h.ejections > 0 && h.ejectedUntil <= nowMs && nowMs - h.lastEjectionEnd >= cfg.intervalMs) {
      h.ejections--;
      h.lastEjectionEnd = nowMs;
    }
    return false;
  }
  h.consecutiveFailures++;
  if (h.consecutiveFailures < cfg.consecutive5xx || h.ejectedUntil > nowMs) return false;
  const maxEjected = Math.max(1, Math.floor((total * cfg.maxEjectedPercent) / 100));
  if (ejectedNow >= maxEjected) return false;
  const longest = Math.max(MAX_EJECTION_MS, cfg.baseEjectionMs);
  h.ejections = Math.min(h.ejections + 1, Math.ceil(longest / cfg.baseEjectionMs));
  h.ejectedUntil = nowMs + Math.min(cfg.baseEjectionMs * h.ejections, longest);
  h.lastEjectionEnd = h.ejectedUntil;
  h.consecutiveFailures = 0;
  return true;
}

export function available(h: EndpointHealth, nowMs: number): boolean {
  return h.activeHealthy && h.ejectedUntil <= nowMs;
}
