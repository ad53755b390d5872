/**
 * The process metrics that show a stalled proxy (runtime/telemetry/metrics.ts registerProcessMetrics):
 * the event-loop delay histogram, fed by a timer due every 20 ms, and the garbage-collection pause
 * histogram, fed by perf_hooks' gc entries — both measured for real in this process (a busy loop, real
 * allocation), and both stopped by the function registerProcessMetrics returns.
 */
import { setTimeout as sleep } from "node:timers/promises";
import { describe, expect, it } from "vitest";
import { MetricsRegistry, registerProcessMetrics } from "../../runtime/telemetry/metrics.ts";

/** A family's samples from the exposition: `name{labels}` → value. */
function samples(text: string, family: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split("\n")) {
    if (!line.startsWith(family)) continue;
    const at = line.lastIndexOf(" ");
    out.set(line.slice(0, at), Number(line.slice(at + 1)));
  }
  return out;
}

function busyFor(ms: number): void {
  const end = performance.now() + ms;
  while (performance.now() < end) {
    // the one thread is busy: every timer due meanwhile runs late
  }
}

/** Allocates short-lived garbage until V8 has scavenged at least once. */
function churn(): void {
  let keep: unknown[] = [];
  for (let i = 0; i < 2_000_000; i++) {
    keep.push({ i, s: `x${i}` });
    if (keep.length > 1000) keep = [];
  }
}

describe("process metrics of a stalled proxy", () => {
  it("records_a_blocked_event_loop_as_a_late_timer", async () => {
    const registry = new MetricsRegistry({ prefix: "meshgate_" });
    const stop = registerProcessMetrics(registry);
    try {
      await sleep(120); // a few samples of an idle loop
      busyFor(150);
      await sleep(60);
      const s = samples(registry.render(), "meshgate_event_loop_delay_seconds");
      const count = s.get("meshgate_event_loop_delay_seconds_count")!;
      expect(count).toBeGreaterThanOrEqual(4);
      // At least one sample waited through most of the 150 ms block: above the 100 ms bound.
      expect(s.get('meshgate_event_loop_delay_seconds_bucket{le="0.1"}')!).toBeLessThan(count);
      expect(s.get("meshgate_event_loop_delay_seconds_sum")!).toBeGreaterThan(0.1);
      // An idle loop's samples are on time, within the timer's granularity.
      expect(s.get('meshgate_event_loop_delay_seconds_bucket{le="0.025"}')!).toBeGreaterThanOrEqual(3);
    } finally {
      stop();
    }
  });

  it("records_garbage_collection_pauses_by_kind", async () => {
    const registry = new MetricsRegistry({ prefix: "meshgate_" });
    const stop = registerProcessMetrics(registry);
    try {
      const before = samples(registry.render(), "meshgate_gc_duration_seconds");
      for (const kind of ["minor", "major", "incremental", "weakcb"])
        expect(before.get(`meshgate_gc_duration_seconds_count{kind="${kind}"}`), kind).toBe(0);
      churn();
      await sleep(20); // gc entries reach the observer asynchronously
      const after = samples(registry.render(), "meshgate_gc_duration_seconds");
      const minor = after.get('meshgate_gc_duration_seconds_count{kind="minor"}')!;
      expect(minor).toBeGreaterThan(0);
      expect(after.get('meshgate_gc_duration_seconds_sum{kind="minor"}')!).toBeGreaterThan(0);
      expect(after.get('meshgate_gc_duration_seconds_bucket{kind="minor",le="+Inf"}')).toBe(minor);
    } finally {
      stop();
    }
  });

  it("stops_sampling_once_stopped", async () => {
    const registry = new MetricsRegistry({ prefix: "meshgate_" });
    registerProcessMetrics(registry)();
    churn();
    await sleep(80);
    const s = samples(registry.render(), "meshgate_");
    expect(s.get("meshgate_event_loop_delay_seconds_count")).toBe(0);
    expect(s.get('meshgate_gc_duration_seconds_count{kind="minor"}')).toBe(0);
  });
});
