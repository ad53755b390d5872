/** The resilience primitives, driven with an explicit clock: budget, backoff, retry safety, ejection. */
import { describe, expect, it } from "vitest";
import type { RetryPlan } from "../../runtime/contract/index.ts";
import {
  RetryBudget,
  available,
  backoffMs,
  newHealth,
  MAX_EJECTION_MS,
  recordResult,
  retryable,
  type AttemptFailure,
} from "../../runtime/upstream/resilience.ts";

const plan = (retryOn: RetryPlan["retryOn"]): RetryPlan => ({
  attempts: 2,
  perTryTimeoutMs: 100,
  retryOn,
  backoff: { baseMs: 25, maxMs: 250 },
});

describe("retry budget", () => {
  it("allows_ratio_of_recent_requests_plus_the_minimum", () => {
    const b = new RetryBudget({ ratio: 0.2, minPerSecond: 1 });
    const t = 1_000_000;
    for (let i = 0; i < 100; i++) b.deposit(t);
    let granted = 0;
    while (b.tryWithdraw(t)) granted++;
    expect(granted).toBe(30); // 0.2 × 100 + 1/s × 10 s
  });

  it("forgets_deposits_older_than_the_window", () => {
    const b = new RetryBudget({ ratio: 0.5, minPerSecond: 0 });
    for (let i = 0; i < 100; i++) b.deposit(0);
    expect(b.tryWithdraw(0)).toBe(true);
    expect(b.tryWithdraw(10_500)).toBe(false);
  });

  it("refuses_everything_with_a_zero_budget", () => {
    const b = new RetryBudget({ ratio: 0, minPerSecond: 0 });
    b.deposit(5);
    expect(b.tryWithdraw(5)).toBe(false);
  });
});

describe("backoff", () => {
  it.each([
    [0, 0.999, 24],
    [1, 0.999, 49],
    [3, 0.999, 199],
    [10, 0.999, 249],
    [4, 0, 0],
  ])("retry_%d_with_random_%d_waits_%d_ms", (retry, random, ms) => {
    expect(backoffMs(retry, { baseMs: 25, maxMs: 250 }, random)).toBe(ms);
  });
});

describe("retry safety", () => {
  const f = (kind: AttemptFailure["kind"], status = 0): AttemptFailure =>
    kind === "status" ? { kind, status } : ({ kind } as AttemptFailure);
  it.each([
    ["retries_connect_failures_for_post", f("connect-failure"), ["connect-failure"], "POST", true, true],
    ["retries_refused_streams_for_patch", f("refused-stream"), ["refused-stream"], "PATCH", true, true],
    ["never_retries_a_reset_post", f("reset"), ["reset"], "POST", true, false],
    ["retries_a_reset_get", f("reset"), ["reset"], "GET", true, true],
    ["never_retries_a_timed_out_post", f("timeout"), ["timeout"], "POST", true, false],
    ["retries_a_503_put", f("status", 503), ["503"], "PUT", true, true],
    ["never_retries_a_503_post", f("status", 503), ["5xx"], "POST", true, false],
    ["retries_a_502_on_5xx", f("status", 502), ["5xx"], "GET", true, true],
    ["does_not_retry_unlisted_statuses", f("status", 500), ["503"], "GET", true, false],
    ["does_not_retry_429_unless_listed", f("status", 429), ["5xx"], "GET", true, false],
    ["retries_429_when_listed", f("status", 429), ["429"], "GET", true, true],
    ["never_retries_a_streamed_body", f("connect-failure"), ["connect-failure"], "PUT", false, false],
    ["never_retries_an_unlisted_connect_failure", f("connect-failure"), ["503"], "GET", true, false],
  ] as const)("%s", (_claim, failure, on, method, replayable, expected) => {
    expect(retryable(failure, plan([...on]), method, replayable)).toBe(expected);
  });
});

describe("outlier detection", () => {
  const cfg = { consecutive5xx: 3, intervalMs: 10_000, baseEjectionMs: 30_000, maxEjectedPercent: 10 };

  it("ejects_after_consecutive_failures_for_a_growing_time", () => {
    const h = newHealth();
    expect(recordResult(h, true, cfg, 0, 0, 10)).toBe(false);
    expect(recordResult(h, true, cfg, 0, 0, 10)).toBe(false);
    expect(recordResult(h, true, cfg, 0, 0, 10)).toBe(true);
    expect(h.ejectedUntil).toBe(30_000);
    expect(available(h, 29_999)).toBe(false);
    expect(available(h, 30_000)).toBe(true);
    for (let i = 0; i < 3; i++) recordResult(h, true, cfg, 31_000, 0, 10);
    expect(h.ejectedUntil).toBe(31_000 + 60_000);
  });

  it.each([
    // [base ms, ejections in a row, the last one's length ms, the multiplier then]
    ["30s_base_reaches_300s_at_the_10th_and_stays", 30_000, 25, 300_000, 10],
    ["7s_base_is_capped_at_300s_not_301s", 7_000, 60, 300_000, 43],
    ["a_base_over_300s_lasts_its_base", 600_000, 5, 600_000, 1],
  ])("caps_an_ejection_at_max_ejection_time_%s", (_name, baseEjectionMs, times, last, multiplier) => {
    const c = { ...cfg, baseEjectionMs };
    const h = newHealth();
    let now = 0;
    for (let i = 0; i < times; i++) {
      now = Math.max(now, h.ejectedUntil); // each ejection ends, then three failures in a row
      for (let j = 0; j < 3; j++) recordResult(h, true, c, now, 0, 10);
    }
    expect([h.ejectedUntil - now, h.ejections]).toEqual([last, multiplier]);
    expect(MAX_EJECTION_MS).toBe(300_000);
  });

  it("a_success_resets_the_consecutive_count", () => {
    const h = newHealth();
    recordResult(h, true, cfg, 0, 0, 10);
    recordResult(h, true, cfg, 0, 0, 10);
    recordResult(h, false, cfg, 0, 0, 10);
    expect(recordResult(h, true, cfg, 0, 0, 10)).toBe(false);
  });

  it("never_ejects_more_than_the_max_percent_but_always_allows_one", () => {
    const h = newHealth();
    for (let i = 0; i < 2; i++) recordResult(h, true, cfg, 0, 1, 10);
    expect(recordResult(h, true, cfg, 0, 1, 10)).toBe(false); // 10% of 10 = 1 already ejected
    const single = newHealth();
    for (let i = 0; i < 2; i++) recordResult(single, true, cfg, 0, 0, 1);
    expect(recordResult(single, true, cfg, 0, 0, 1)).toBe(true); // at least one may go
  });

  it("shrinks_the_multiplier_after_an_interval_of_health", () => {
    const h = newHealth();
    for (let i = 0; i < 3; i++) recordResult(h, true, cfg, 0, 0, 10);
    expect(h.ejections).toBe(1);
    recordResult(h, false, cfg, 30_000 + 10_000, 0, 10);
    expect(h.ejections).toBe(0);
  });
});
