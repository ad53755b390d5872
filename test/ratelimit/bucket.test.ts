/**
 * Token-bucket math with an injected clock: compiled integers, refill over time, burst, the exact
 * boundary of the next token, no drift over millions of milliseconds, bounded memory; key derivation
 * and the response headers.
 */
import { describe, expect, it } from "vitest";
import {
  compilePolicy,
  fullBucket,
  msUntilFull,
  msUntilToken,
  refill,
  take,
  tokens,
} from "../../runtime/ratelimit/bucket.ts";
import { rateLimitHeaders, retryAfterSeconds } from "../../runtime/ratelimit/headers.ts";
import { clientKey, rateLimitKey } from "../../runtime/ratelimit/key.ts";
import { LocalBuckets, type EvictionKind, type RateLimitDecision } from "../../runtime/ratelimit/local.ts";
import { RateLimiters } from "../../runtime/ratelimit/limiter.ts";
import type { GatewayRuntimeConfig } from "../../runtime/contract/schema.ts";
import { gatewayConfig } from "../support/gateway.ts";

describe("compiled policy", () => {
  it.each([
    // requests, periodMs, burst, divisor → rate, cost, capacity, limit, RateLimit-Policy
    [100, 60_000, 100, 1, 1, 600, 60_000, 100, "100;w=60"],
    [10, 1000, 20, 1, 1, 100, 2000, 20, "10;w=1;burst=20"],
    [100, 60_000, 100, 3, 1, 1800, 60_000, 33, "100;w=180;burst=33"],
    [100, 1000, 100, 2, 1, 20, 1000, 50, "100;w=2;burst=50"],
    [5, 250, 5, 1, 1, 50, 250, 5, "20;w=1;burst=5"],
    [3, 7, 5, 1, 3, 7, 35, 5, "428;w=1;burst=5"],
    [1, 1000, 1, 4, 1, 4000, 4000, 1, "1;w=4"],
  ])(
    "compiles_%i_per_%i_ms_burst_%i_over_%i_replicas",
    (requests, periodMs, burst, divisor, rate, cost, capacity, limit, header) => {
      const p = compilePolicy({ requests, periodMs, burst }, divisor);
      expect({
        rate: p.rate,
        cost: p.cost,
        capacity: p.capacity,
        limit: p.limit,
        header: p.policyHeader,
      }).toEqual({
        rate,
        cost,
        capacity,
        limit,
        header,
      });
    },
  );

  it("raises_a_per_replica_bucket_below_one_token_to_one_token", () => {
    const p = compilePolicy({ requests: 1, periodMs: 1000, burst: 1 }, 4);
    expect(p.raisedToOneToken).toBe(true);
    expect(p.limit).toBe(1);
    expect(compilePolicy({ requests: 4, periodMs: 1000, burst: 4 }, 4).raisedToOneToken).toBe(false);
  });

  it.each([
    [{ requests: 0, periodMs: 1000, burst: 1 }, /requests must be a positive integer/],
    [{ requests: 1.5, periodMs: 1000, burst: 1 }, /requests/],
    [{ requests: 1, periodMs: 86_400_000, burst: 1e9 + 7 }, /too fine-grained/],
  ])("refuses_numbers_it_cannot_count_exactly_%#", (limit, message) => {
    expect(() => compilePolicy(limit)).toThrow(message);
  });
});

describe("bucket refill", () => {
  const p = compilePolicy({ requests: 10, periodMs: 1000, burst: 10 }); // one token per 100 ms

  it.each([
    // taken at t=0 from a full bucket, then looked at t → tokens, ms to next token, ms to full
    [10, 0, 0, 100, 1000],
    [10, 99, 0, 1, 1000 - 99],
    [10, 100, 1, 0, 900],
    [10, 250, 2, 0, 750],
    [10, 1000, 10, 0, 0],
    [10, 5000, 10, 0, 0],
    [3, 0, 7, 0, 300],
    [3, 300, 10, 0, 0],
  ])("after_taking_%i_at_0_holds_at_%i_ms_the_right_tokens", (taken, t, tok, next, full) => {
    const s = fullBucket(p, 0);
    for (let i = 0; i < taken; i++) expect(take(s, p)).toBe(true);
    refill(s, p, t);
    expect(tokens(s, p)).toBe(tok);
    expect(msUntilToken(s, p)).toBe(next);
    expect(msUntilFull(s, p)).toBe(full);
  });

  it("allows_the_burst_then_refuses_until_exactly_the_next_token", () => {
    const b = new LocalBuckets(p);
    const results: boolean[] = [];
    for (let i = 0; i < 12; i++) results.push(b.check("k", 0).allowed);
    expect(results).toEqual([...Array(10).fill(true), false, false]);
    const denied = b.check("k", 0);
    expect(denied.retryAfterMs).toBe(100);
    expect(b.check("k", 99).allowed).toBe(false);
    expect(b.check("k", 99).retryAfterMs).toBe(1);
    expect(b.check("k", 100).allowed).toBe(true); // the boundary itself admits
    expect(b.check("k", 100).allowed).toBe(false);
    expect(b.check("k", 150).retryAfterMs).toBe(50);
  });

  it("reports_remaining_and_reset", () => {
    const b = new LocalBuckets(p);
    const first = b.check("k", 0);
    expect(first).toEqual({ allowed: true, remaining: 9, resetMs: 100, retryAfterMs: 0, storeError: null });
    for (let i = 0; i < 9; i++) b.check("k", 0);
    expect(b.check("k", 0)).toEqual({
      allowed: false,
      remaining: 0,
      resetMs: 1000,
      retryAfterMs: 100,
      storeError: null,
    });
  });

  it("adds_nothing_when_the_clock_goes_back", () => {
    const s = fullBucket(p, 1000);
    for (let i = 0; i < 10; i++) take(s, p);
    refill(s, p, 500);
    expect(tokens(s, p)).toBe(0);
    refill(s, p, 1100);
    expect(tokens(s, p)).toBe(1); // counted from 1000, not from 500
  });

  it.each([
    [3, 7, 5, 7_000_000],
    [100, 60_000, 100, 3_600_000 * 2],
    [7, 1000, 2, 1_000_003],
  ])("never_drifts_%i_per_%i_ms_burst_%i_over_%i_ms", (requests, periodMs, burst, duration) => {
    // A client asking every millisecond gets exactly the burst plus the refill, however long it runs.
    const b = new LocalBuckets(compilePolicy({ requests, periodMs, burst }));
    let admitted = 0;
    for (let t = 0; t <= duration; t++) if (b.check("k", t).allowed) admitted++;
    expect(admitted).toBe(burst + Math.floor((duration * requests) / periodMs));
  });

  it("never_drifts_with_irregular_gaps_and_fleet_division", () => {
    const policy = compilePolicy({ requests: 100, periodMs: 60_000, burst: 100 }, 3);
    const b = new LocalBuckets(policy);
    let seed = 42;
    const rand = () => (seed = (seed * 48271) % 2147483647) / 2147483647;
    let admitted = 0;
    let t = 0;
    const end = 3_600_000 * 10; // ten hours
    while (t <= end) {
      if (b.check("k", t).allowed) admitted++;
      t += 1 + Math.floor(rand() * 97);
    }
    // 100 per 3 minutes per replica (one token per 1800 ms) from a bucket of 33⅓ tokens: exactly
    // floor((60,000 units + last check time) / 1800) however irregular the checks.
    expect(admitted).toBeGreaterThanOrEqual(20_032);
    expect(admitted).toBeLessThanOrEqual(20_033);
  });
});

describe("bounded memory", () => {
  const p = compilePolicy({ requests: 1, periodMs: 1000, burst: 2 });

  it("evicts_full_buckets_first_without_changing_any_answer", () => {
    const evictions: EvictionKind[] = [];
    const b = new LocalBuckets(p, { maxKeys: 3, onEvict: (k) => evictions.push(k) });
    b.check("a", 0);
    b.check("b", 0);
    b.check("c", 0);
    // At 2000 ms every bucket is full again: making room for "d" drops one of them losslessly.
    b.check("d", 2000);
    expect(evictions).toEqual(["idle"]);
    expect(b.size).toBe(3);
  });

  it("evicts_the_fullest_active_bucket_when_all_are_in_use_and_stays_bounded", () => {
    const evictions: EvictionKind[] = [];
    const b = new LocalBuckets(p, { maxKeys: 100, onEvict: (k) => evictions.push(k) });
    for (let i = 0; i < 10_000; i++) b.check(`k${i}`, 0);
    expect(b.size).toBe(100);
    expect(evictions.filter((k) => k === "active")).toHaveLength(9_900);
  });

  it("keeps_a_busy_key_while_one_time_keys_churn", () => {
    const b = new LocalBuckets(compilePolicy({ requests: 1, periodMs: 60_000, burst: 5 }), { maxKeys: 50 });
    for (let i = 0; i < 5; i++) expect(b.check("busy", i).allowed).toBe(true);
    for (let i = 0; i < 5000; i++) {
      b.check(`once-${i}`, 10 + i);
      if (i % 10 === 0) b.check("busy", 10 + i); // stays in use
    }
    expect(b.check("busy", 6000).allowed).toBe(false); // its empty bucket survived the churn
  });
});

describe("keys", () => {
  const long = "x".repeat(65);
  it.each([
    ["ip", "203.0.113.7", undefined, undefined, undefined, "i:203.0.113.7"],
    ["ip", "::ffff:203.0.113.7", undefined, undefined, undefined, "i:203.0.113.7"],
    ["ip", "2001:db8:1:2:3:4:5:6", undefined, undefined, undefined, "i:2001:db8:1:2::/64"],
    ["ip", "2001:DB8:0001:0002::9", undefined, undefined, undefined, "i:2001:db8:1:2::/64"],
    ["ip", "::1", undefined, undefined, undefined, "i:0:0:0:0::/64"],
    ["ip", "::FFFF:203.0.113.7", undefined, undefined, undefined, "i:203.0.113.7"],
    ["ip", "::ffff:cb00:7107", undefined, undefined, undefined, "i:203.0.113.7"],
    ["ip", "0:0:0:0:0:ffff:203.0.113.7", undefined, undefined, undefined, "i:203.0.113.7"],
    ["ip", "0000:0000::FFFF:CB00:7107", undefined, undefined, undefined, "i:203.0.113.7"],
    ["ip", "::ffff:cb00:7108", undefined, undefined, undefined, "i:203.0.113.8"],
    ["ip", "::ffff:0:cb00:7107", undefined, undefined, undefined, "i:0:0:0:0::/64"],
    ["subject", "10.0.0.1", "alice", undefined, undefined, "s:alice"],
    ["subject", "10.0.0.1", undefined, undefined, undefined, "i:10.0.0.1"],
    ["consumer", "10.0.0.1", "alice", "mobile-app", undefined, "c:mobile-app"],
    ["consumer", "10.0.0.1", "alice", undefined, undefined, "i:10.0.0.1"],
    ["header", "10.0.0.1", undefined, undefined, "tenant-1", "h:tenant-1"],
    ["header", "10.0.0.1", undefined, undefined, "", "i:10.0.0.1"],
    ["header", "10.0.0.1", undefined, undefined, undefined, "i:10.0.0.1"],
    ["header", "10.0.0.1", undefined, undefined, ["a", "b"], "h:a, b"],
    ["header", "10.0.0.1", undefined, undefined, "i:10.0.0.2", "h:i:10.0.0.2"],
    ["route", "10.0.0.1", "alice", undefined, "x", "r"],
  ] as const)("keys_%s_from_%s_%s_%s_%s", (kind, client, subject, consumer, header, key) => {
    expect(rateLimitKey(kind, client, subject, consumer, header as string | string[] | undefined)).toBe(key);
  });

  it.each([
    ["x-forwarded-for", true],
    ["X-Real-IP", true],
    ["x-request-id", true],
    ["forwarded", true],
    ["x-meshgate-client-ip", true],
    ["x-meshgate-subject", false], // keyed by the principal's subject
    ["x-tenant", false],
    ["host", false],
  ] as const)("refuses_a_key_from_header_%s_only_when_the_gateway_owns_it", (header, refused) => {
    const spec = gatewayConfig(
      [{ name: "r", match: { path: "/r" }, to: "app", public: true, rateLimit: { requests: 1, per: "1m" } }],
      { app: { port: 1 } },
    );
    const config = {
      ...spec,
      routes: spec.routes.map((r) => ({
        ...r,
        rateLimit: { ...r.rateLimit!, key: { kind: "header", header } },
      })),
    } as GatewayRuntimeConfig;
    const build = () => new RateLimiters().configure(config);
    if (refused)
      expect(build).toThrow(/gateway route r: rate limit keyed by header .*, which the gateway owns/);
    else expect(build).not.toThrow();
  });

  it("hashes_long_values_into_a_bounded_key", () => {
    const k = rateLimitKey("header", "1.2.3.4", undefined, undefined, long + "a".repeat(10_000));
    expect(k).toMatch(/^h:#[A-Za-z0-9_-]{43}$/);
    expect(rateLimitKey("header", "1.2.3.4", undefined, undefined, long)).not.toBe(
      rateLimitKey("header", "1.2.3.4", undefined, undefined, long + "y"),
    );
    expect(clientKey("not-an-address")).toBe("not-an-address");
    expect(clientKey("z".repeat(500))).toMatch(/^#/);
  });
});

describe("headers", () => {
  const p = compilePolicy({ requests: 10, periodMs: 1000, burst: 20 });
  const d = (o: Partial<RateLimitDecision>): RateLimitDecision => ({
    allowed: true,
    remaining: 5,
    resetMs: 1500,
    retryAfterMs: 0,
    storeError: null,
    ...o,
  });

  it("sends_limit_remaining_reset_and_policy", () => {
    expect(rateLimitHeaders(p, d({}))).toEqual({
      "ratelimit-limit": "20",
      "ratelimit-remaining": "5",
      "ratelimit-reset": "2",
      "ratelimit-policy": "10;w=1;burst=20",
    });
  });

  it("sends_none_when_the_store_failed", () => {
    expect(rateLimitHeaders(p, d({ storeError: "timeout" }))).toBeNull();
  });

  it.each([
    [0, 1],
    [1, 1],
    [999, 1],
    [1000, 1],
    [1001, 2],
    [59_500, 60],
  ])("retry_after_%i_ms_is_%i_seconds", (ms, seconds) => {
    expect(retryAfterSeconds(d({ allowed: false, retryAfterMs: ms }))).toBe(seconds);
  });
});
