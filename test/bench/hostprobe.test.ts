/**
 * The benchmarks' host-speed probe (bench/hostprobe.ts): slow intervals from the probe's samples, the
 * requests that overlapped none, the per-pass report — and the probe process itself, run for real.
 */
import { mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import {
  coveredMs,
  hostReport,
  slowIntervals,
  startHostProbe,
  steadyRequests,
  summarizeHost,
  type ProbeResult,
} from "../../bench/hostprobe.ts";

const T = 1_800_000_000_000; // ms since the epoch
/** Samples every 2 ms of 50 µs, except the given [offset ms, duration µs] ones. */
function probe(slow: Record<number, number> = {}, ms = 200): ProbeResult {
  const samples: number[] = [];
  for (let t = 0; t < ms; t += 2) samples.push(T + t, slow[t] ?? 50);
  return { baseUs: 50, samples };
}

describe("slow intervals", () => {
  it.each([
    ["a_steady_host_has_none", {}, []],
    ["a_unit_at_3x_is_not_slow", { 10: 150 }, []],
    ["a_unit_over_3x_marks_its_own_time", { 10: 400 }, [[10, 10.4]]],
    ["a_unit_stalled_for_30_ms_marks_30_ms", { 20: 30_000 }, [[20, 50]]],
    ["slow_units_less_than_10_ms_apart_merge", { 10: 1000, 16: 1000 }, [[10, 17]]],
    [
      "slow_units_10_ms_apart_or_more_stay_apart",
      { 10: 1000, 30: 1000 },
      [
        [10, 11],
        [30, 31],
      ],
    ],
  ])("%s", (_claim, slow, expected) => {
    const got = slowIntervals(probe(slow)).map(([a, b]) => [a - T, Math.round((b - T) * 10) / 10]);
    expect(got).toEqual(expected);
  });

  it("covers_the_sum_of_the_intervals", () => {
    expect(
      coveredMs([
        [0, 10],
        [20, 25],
      ]),
    ).toBe(15);
  });
});

describe("steady requests", () => {
  const intervals: [number, number][] = [[100, 150]];
  it.each([
    ["a_request_long_before_is_kept", 10, 5, true],
    ["a_request_ending_inside_is_dropped", 90, 20, false],
    ["a_request_starting_inside_is_dropped", 120, 1, false],
    ["a_request_spanning_the_interval_is_dropped", 90, 100, false],
    ["a_request_within_the_margin_after_is_dropped", 151, 1, false],
    ["a_request_after_the_margin_is_kept", 153, 1, true],
    ["a_request_ending_within_the_margin_before_is_dropped", 90, 9, false],
  ])("%s", (_claim, start, duration, kept) => {
    expect(steadyRequests([start], [duration], intervals)).toEqual(kept ? [duration] : []);
  });

  it("keeps_requests_in_any_start_order", () => {
    expect(steadyRequests([300, 120, 10], [1, 1, 2], intervals)).toEqual([2, 1]);
  });
});

describe("host report", () => {
  it("reports_slow_time_within_the_pass_and_percentiles_of_the_steady_requests", () => {
    // 100 requests 1 ms apart, 0.5 ms each, except the ones started during a 20-ms host stall at 40 ms.
    const starts: number[] = [];
    const durations: number[] = [];
    for (let i = 0; i < 100; i++) {
      starts.push((T + 20 + i) * 1000);
      durations.push(i >= 40 && i < 60 ? 15_000 : 500);
    }
    const r = hostReport(probe({ 60: 20_000 }), starts, durations);
    expect(r.slowMs).toBeCloseTo(20, 5);
    expect(r.passMs).toBeCloseTo(99.5, 5);
    // Requests overlapping [58, 82] ms (the stall widened by the 2-ms margin) are left out: all the slow ones.
    expect(r.steadyP99).toBe(0.5);
    expect(r.steadyShare).toBeGreaterThan(0.5);
    expect(r.steadyShare).toBeLessThan(0.8);
  });
});

describe("host summary", () => {
  const report = (slowMs: number, steadyShare: number, steadyP99: number) => ({
    slowMs,
    passMs: 1000,
    steadyShare,
    steadyP50: 0.1,
    steadyP99,
  });

  it("takes_the_median_of_each_figure_over_the_passes_with_a_report", () => {
    expect(
      summarizeHost([report(10, 0.99, 0.5), undefined, report(30, 0.9, 2), report(20, 0.95, 1)]),
    ).toEqual({ slow: "2.0 %", steady: "95.0 %", steadyP99: 1 });
  });

  it("is_null_when_no_pass_was_probed", () => {
    expect(summarizeHost([undefined, undefined])).toBeNull();
  });
});

describe("the probe process", () => {
  const dir = mkdtempSync(join(os.tmpdir(), "meshgate-hostprobe-"));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it("times_units_every_few_ms_under_jitless_and_writes_them", async () => {
    const before = Date.now();
    const p = startHostProbe(0.3, join(dir, "probe.json"), null, false);
    const r = await p.result();
    expect(r).not.toBeNull();
    expect(r!.baseUs).toBeGreaterThan(0);
    const n = r!.samples.length / 2;
    expect(n).toBeGreaterThan(20);
    expect(r!.samples[0]).toBeGreaterThanOrEqual(before - 5);
    for (let i = 2; i < r!.samples.length; i += 2) expect(r!.samples[i]!).toBeGreaterThan(r!.samples[i - 2]!);
  });
});
