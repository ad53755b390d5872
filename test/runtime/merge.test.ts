/** Merging the expositions of several processes: one HELP/TYPE per family, a worker label, promtool-valid. */
import { spawnSync } from "node:child_process";
import { describe, expect, it } from "vitest";
import { mergeExpositions } from "../../runtime/telemetry/merge.ts";
import { MetricsRegistry } from "../../runtime/telemetry/metrics.ts";

function registry(n: number): string {
  const r = new MetricsRegistry({ prefix: "meshgate_" });
  r.counter("requests_total", "Requests.", ["route"]).labels("a").inc(n);
  r.gauge("in_flight", "In flight.").set(n);
  r.histogram("duration_seconds", "Durations.", ["route"], [0.1, 1])
    .labels("a")
    .observe(0.05 * n);
  return r.render();
}

describe("mergeExpositions", () => {
  const merged = mergeExpositions([
    { label: "0", text: registry(1) },
    { label: "1", text: registry(3) },
  ]);

  it("keeps_one_help_and_type_per_family_and_labels_every_sample", () => {
    expect(merged.match(/^# TYPE meshgate_requests_total counter$/gm)).toHaveLength(1);
    expect(merged).toContain('meshgate_requests_total{worker="0",route="a"} 1');
    expect(merged).toContain('meshgate_requests_total{worker="1",route="a"} 3');
    expect(merged).toContain('meshgate_in_flight{worker="1"} 3');
    expect(merged).toContain('meshgate_duration_seconds_bucket{worker="0",route="a",le="0.1"} 1');
    expect(merged).toContain('meshgate_duration_seconds_count{worker="1",route="a"} 1');
  });

  it("keeps_a_label_value_holding_a_comma_and_brace_as_it_is", () => {
    const r = new MetricsRegistry({ prefix: "meshgate_" });
    r.counter("odd_total", "Odd.", ["a", "b"]).labels("x,}y", "z").inc();
    expect(mergeExpositions([{ label: "0", text: r.render() }])).toContain(
      'meshgate_odd_total{worker="0",a="x,}y",b="z"} 1',
    );
    expect(mergeExpositions([{ label: "0", text: "# TYPE m gauge\nm{} 1\n" }])).toBe(
      '# TYPE m gauge\nm{worker="0"} 1\n',
    );
  });

  it("writes_a_family_the_merging_process_shares_with_the_others_once_keeping_its_own_samples_unlabelled", () => {
    // A gateway primary counts reloads too (config_reloads_total): its own exposition was appended as a
    // second one, and the family had two HELP and two TYPE lines, which promtool refuses.
    const own = new MetricsRegistry({ prefix: "meshgate_" });
    own.counter("requests_total", "Requests (primary).", ["route"]).labels("p").inc(7);
    const all = mergeExpositions([
      { label: null, text: own.render() },
      { label: "0", text: registry(1) },
    ]);
    expect(all.match(/^# (HELP|TYPE) meshgate_requests_total /gm)).toHaveLength(2);
    expect(all.match(/^# (HELP|TYPE) meshgate_metrics_label_overflow_total /gm)).toHaveLength(2);
    expect(all).toContain(
      'meshgate_requests_total{route="p"} 7\nmeshgate_requests_total{worker="0",route="a"} 1',
    );
    const r = spawnSync("promtool", ["check", "metrics"], { input: all, encoding: "utf8" });
    expect(r.status, `${r.stdout}${r.stderr}`).toBe(0);
  });

  it("is_accepted_by_promtool", () => {
    const r = spawnSync("promtool", ["check", "metrics"], { input: merged, encoding: "utf8" });
    if (r.error) throw new Error("promtool is not on PATH: .ci/run must install the prometheus package");
    expect(r.status, `${r.stdout}${r.stderr}`).toBe(0);
  });
});
