import { describe, expect, it } from "vitest";
import { medianCost, scalingBound, scalingCost, type ScalingCost } from "../../bench/support.ts";

const cost = (proxyUs: number, restUs: number, busyCores = 2): ScalingCost => ({
  proxyUs,
  restUs,
  busyCores,
});

describe("bench worker scaling: CPU cost per request", () => {
  it.each([
    {
      claim: "5 s at 100 ticks/s: 250 proxy ticks and 150 other ticks over 50,000 requests are 50 and 30 µs",
      a: { t: 0, busy: 1_000, proxy: 100 },
      b: { t: 5_000, busy: 1_400, proxy: 350 },
      requests: 50_000,
      want: { proxyUs: 50, restUs: 30, busyCores: 0.8 },
    },
    {
      claim:
        "a proxy charged more ticks than the machine's busy count (tick rounding) leaves the rest at 0, never negative",
      a: { t: 0, busy: 0, proxy: 0 },
      b: { t: 1_000, busy: 99, proxy: 100 },
      requests: 10_000,
      want: { proxyUs: 100, restUs: 0, busyCores: 0.99 },
    },
  ])("$claim", ({ a, b, requests, want }) => {
    const got = scalingCost(a, b, requests, 100);
    expect(got.proxyUs).toBeCloseTo(want.proxyUs, 9);
    expect(got.restUs).toBeCloseTo(want.restUs, 9);
    expect(got.busyCores).toBeCloseTo(want.busyCores, 9);
  });

  it.each([
    { claim: "no requests", requests: 0, t: 1_000 },
    { claim: "no duration", requests: 10, t: 0 },
  ])("a run with $claim is refused, not divided by zero", ({ requests, t }) => {
    expect(() => scalingCost({ t: 0, busy: 0, proxy: 0 }, { t, busy: 1, proxy: 1 }, requests, 100)).toThrow(
      RangeError,
    );
  });

  it("the median cost is taken field by field", () => {
    expect(medianCost([cost(10, 5, 1), cost(30, 1, 2), cost(20, 9, 1.5)])).toEqual(cost(20, 5, 1.5));
  });
});

describe("bench worker scaling: the bound 2 workers can reach on shared cores", () => {
  it.each([
    {
      claim: "a proxy at 50 µs with the rest at 27 µs is bounded at 1.30× on 2 cores",
      p1: 50,
      r2: 27,
      want: 1.2987,
    },
    { claim: "a proxy at 66 µs with the rest at 27 µs is bounded at 1.42×", p1: 66, r2: 27, want: 1.4194 },
    { claim: "the goal's 1.4× needs the rest ≤ 0.43 × the proxy's cost", p1: 70, r2: 30, want: 1.4 },
    { claim: "a free load generator allows the full 2×", p1: 40, r2: 0, want: 2 },
  ])("$claim", ({ p1, r2, want }) => {
    expect(scalingBound(cost(p1, 10), cost(p1 * 1.2, r2), 2)).toBeCloseTo(want, 3);
  });

  it("a costlier proxy scales better against the same load generator (the bound rises with P1)", () => {
    const bounds = [20, 40, 60, 80].map((p1) => scalingBound(cost(p1, 0), cost(p1, 27), 2));
    expect(bounds).toEqual([...bounds].sort((x, y) => x - y));
    expect(new Set(bounds).size).toBe(4);
  });
});
