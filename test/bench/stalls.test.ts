import { describe, expect, it } from "vitest";
import { stallsBetween } from "../../bench/support.ts";

/** A /metrics text with GC and event-loop families as the proxies render them. */
const scrape = (gc: { minor: [number, number]; major: [number, number] }, loop: Record<string, number>) =>
  [
    "# TYPE meshgate_gc_duration_seconds histogram",
    `meshgate_gc_duration_seconds_sum{kind="minor"} ${gc.minor[1]}`,
    `meshgate_gc_duration_seconds_count{kind="minor"} ${gc.minor[0]}`,
    `meshgate_gc_duration_seconds_sum{kind="major"} ${gc.major[1]}`,
    `meshgate_gc_duration_seconds_count{kind="major"} ${gc.major[0]}`,
    "# TYPE meshgate_event_loop_delay_seconds histogram",
    ...Object.entries(loop).map(([le, n]) => `meshgate_event_loop_delay_seconds_bucket{le="${le}"} ${n}`),
    "meshgate_requests_total 5",
  ].join("\n");

describe("bench: what stalled a proxy between two scrapes", () => {
  it.each([
    {
      claim: "counts_the_pauses_and_time_between_the_scrapes_and_their_share_of_the_pass",
      before: scrape({ minor: [10, 0.01], major: [1, 0.02] }, { "0.001": 100, "0.005": 100, "+Inf": 100 }),
      after: scrape({ minor: [40, 0.031], major: [1, 0.02] }, { "0.001": 380, "0.005": 398, "+Inf": 400 }),
      seconds: 5,
      want: "meshgate GC 30 pauses, 21.0 ms (0.42 % of the pass), event-loop delay p99 ≤ 5 ms, max > 10 s (300 samples)",
    },
    {
      claim: "reads_everything_since_start_from_one_scrape",
      before: "",
      after: scrape({ minor: [4, 0.002], major: [0, 0] }, { "0.001": 50, "0.0025": 50, "+Inf": 50 }),
      seconds: null,
      want: "meshgate GC 4 pauses, 2.0 ms, event-loop delay p99 ≤ 1 ms, max ≤ 1 ms (50 samples)",
    },
  ])("$claim", ({ before, after, seconds, want }) => {
    expect(stallsBetween(before, after, seconds)).toBe(want);
  });
});
