/**
 * The topology page's arithmetic: the text-exposition parser, counter differencing with resets and new
 * series, histogram_quantile over bucket increases, and per-edge window stats — exact numbers.
 */
import { describe, expect, it } from "vitest";
import {
  bucketQuantile,
  increase,
  increaseBy,
  parseExposition,
  parseSampleLine,
  mergeStats,
  windowStats,
  withinWindow,
  type Sample,
  type Snapshot,
  type StatsSource,
} from "../../stacks/local/topology/metrics.ts";
import { MetricsRegistry } from "../../runtime/telemetry/metrics.ts";

describe("parseExposition", () => {
  const cases: { name: string; line: string; sample: Sample | string }[] = [
    { name: "bare_name", line: "up 1", sample: { name: "up", labels: {}, value: 1 } },
    {
      name: "labels_and_timestamp",
      line: 'meshgate_requests_total{proxy="gateway",route="a",code_class="2xx"} 42 1700000000000',
      sample: {
        name: "meshgate_requests_total",
        labels: { proxy: "gateway", route: "a", code_class: "2xx" },
        value: 42,
      },
    },
    {
      name: "escaped_label_values",
      line: String.raw`m{a="x\"y",b="back\\slash",c="new\nline"} 2`,
      sample: { name: "m", labels: { a: 'x"y', b: "back\\slash", c: "new\nline" }, value: 2 },
    },
    { name: "trailing_comma", line: 'm{a="1",} 3', sample: { name: "m", labels: { a: "1" }, value: 3 } },
    {
      name: "plus_inf_bucket",
      line: 'h_bucket{le="+Inf"} 7',
      sample: { name: "h_bucket", labels: { le: "+Inf" }, value: 7 },
    },
    { name: "exponent", line: "m 1.5e-3", sample: { name: "m", labels: {}, value: 0.0015 } },
    {
      name: "negative_gauge",
      line: 'meshgate_cert_expiry_seconds{identity="x"} -12',
      sample: { name: "meshgate_cert_expiry_seconds", labels: { identity: "x" }, value: -12 },
    },
    { name: "missing_value", line: 'm{a="1"}', sample: "expected a space before the value" },
    { name: "bad_value", line: "m abc", sample: 'malformed value "abc"' },
    { name: "unterminated_label", line: 'm{a="1} 2', sample: "label a: unterminated value" },
    { name: "bad_escape", line: String.raw`m{a="\t"} 2`, sample: "label a: bad escape \\t" },
    { name: "no_name", line: '{a="1"} 2', sample: "no metric name" },
  ];
  for (const c of cases)
    it(`reads_${c.name}`, () => {
      expect(parseSampleLine(c.line)).toEqual(c.sample);
    });

  it("skips_comments_and_reports_bad_lines_without_losing_the_rest", () => {
    const r = parseExposition('# HELP m help\n# TYPE m counter\nm 1\nbroken line here\n\nn{a="b"} 2\n');
    expect(r.samples).toEqual([
      { name: "m", labels: {}, value: 1 },
      { name: "n", labels: { a: "b" }, value: 2 },
    ]);
    expect(r.errors).toEqual(['line 4: malformed value "line"']);
  });

  it("reads_everything_the_runtime_registry_renders", () => {
    const reg = new MetricsRegistry({ prefix: "meshgate_" });
    reg.counter("requests_total", "r", ["route", "code_class"]).labels('we"ird\\', "2xx").inc(3);
    const h = reg.histogram("request_duration_seconds", "d", ["route"]);
    h.labels("a").observe(0.003);
    h.labels("a").observe(0.2);
    const parsed = parseExposition(reg.render());
    expect(parsed.errors).toEqual([]);
    const get = (name: string, labels: Record<string, string>) =>
      parsed.samples.find(
        (s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v),
      )?.value;
    expect(get("meshgate_requests_total", { route: 'we"ird\\' })).toBe(3);
    expect(get("meshgate_request_duration_seconds_bucket", { route: "a", le: "0.005" })).toBe(1);
    expect(get("meshgate_request_duration_seconds_bucket", { route: "a", le: "+Inf" })).toBe(2);
    expect(get("meshgate_request_duration_seconds_count", { route: "a" })).toBe(2);
    expect(get("meshgate_request_duration_seconds_sum", { route: "a" })).toBeCloseTo(0.203, 12);
  });
});

const snap = (at: number, text: string): Snapshot => ({ at, samples: parseExposition(text).samples });

describe("increase", () => {
  const cases: { name: string; snaps: Snapshot[]; expected: number }[] = [
    { name: "single_snapshot_gives_nothing", snaps: [snap(0, "c 5")], expected: 0 },
    { name: "plain_growth", snaps: [snap(0, "c 5"), snap(2000, "c 9"), snap(4000, "c 15")], expected: 10 },
    {
      name: "reset_counts_the_new_value",
      snaps: [snap(0, "c 5"), snap(2000, "c 9"), snap(4000, "c 3")],
      expected: 7,
    },
    { name: "series_appearing_counts_from_zero", snaps: [snap(0, ""), snap(2000, "c 4")], expected: 4 },
    {
      name: "sums_series_and_keeps_them_apart",
      snaps: [snap(0, 'c{w="1"} 10\nc{w="2"} 100'), snap(2000, 'c{w="1"} 12\nc{w="2"} 5')],
      expected: 2 + 5,
    },
    { name: "nan_is_left_out", snaps: [snap(0, "c 1"), snap(2000, "c NaN"), snap(4000, "c 3")], expected: 3 },
  ];
  for (const c of cases)
    it(c.name, () => {
      expect(increase(c.snaps, "c")).toBe(c.expected);
    });

  it("filters_by_labels_and_groups_by_one", () => {
    const s = [
      snap(0, 'r{dir="in",cc="2xx"} 1\nr{dir="in",cc="5xx"} 0\nr{dir="out",cc="2xx"} 50'),
      snap(2000, 'r{dir="in",cc="2xx"} 8\nr{dir="in",cc="5xx"} 2\nr{dir="out",cc="2xx"} 90'),
    ];
    expect(increase(s, "r", { dir: "in" })).toBe(9);
    expect(increase(s, "r", { dir: ["in", "out"] })).toBe(49);
    expect([...increaseBy(s, "r", "cc", { dir: "in" })]).toEqual([
      ["2xx", 7],
      ["5xx", 2],
    ]);
  });
});

describe("bucketQuantile", () => {
  const b = (pairs: [string, number][]) => new Map(pairs);
  const cases: { name: string; q: number; buckets: Map<string, number>; expected: number | null }[] = [
    {
      name: "empty_histogram_is_null",
      q: 0.99,
      buckets: b([
        ["0.1", 0],
        ["+Inf", 0],
      ]),
      expected: null,
    },
    { name: "no_inf_bucket_is_null", q: 0.99, buckets: b([["0.1", 5]]), expected: null },
    { name: "only_inf_bucket_is_null", q: 0.5, buckets: b([["+Inf", 5]]), expected: null },
    // rank 0.5 × 100 = 50 lands in (0.1, 0.25] holding 40 (cumulative 30 → 70): 0.1 + 0.15 × 20/40
    {
      name: "interpolates_inside_the_bucket",
      q: 0.5,
      buckets: b([
        ["0.1", 30],
        ["0.25", 70],
        ["+Inf", 100],
      ]),
      expected: 0.175,
    },
    // rank 99 in the first bucket [0, 0.005]: 0.005 × 99/100
    {
      name: "first_bucket_starts_at_zero",
      q: 0.99,
      buckets: b([
        ["0.005", 100],
        ["0.01", 100],
        ["+Inf", 100],
      ]),
      expected: 0.00495,
    },
    // rank 99 beyond the last finite bound: the highest finite bound
    {
      name: "rank_in_inf_bucket_gives_highest_bound",
      q: 0.99,
      buckets: b([
        ["0.1", 50],
        ["1", 98],
        ["+Inf", 100],
      ]),
      expected: 1,
    },
    // buckets given out of order and with a decreasing count are sorted and made monotonic
    {
      name: "sorts_and_repairs_monotonicity",
      q: 0.5,
      buckets: b([
        ["+Inf", 10],
        ["1", 4],
        ["0.5", 6],
      ]),
      expected: 0.5 * (5 / 6),
    },
    {
      name: "exact_bucket_boundary",
      q: 0.5,
      buckets: b([
        ["0.1", 50],
        ["0.2", 100],
        ["+Inf", 100],
      ]),
      expected: 0.1,
    },
  ];
  for (const c of cases)
    it(c.name, () => {
      const got = bucketQuantile(c.q, c.buckets);
      if (c.expected === null) expect(got).toBeNull();
      else expect(got).toBeCloseTo(c.expected, 12);
    });
});

describe("windowStats", () => {
  const src: StatsSource = {
    counter: "meshgate_requests_total",
    statusLabel: "code_class",
    isError: (s) => s === "5xx",
    histogram: "meshgate_request_duration_seconds",
    match: { direction: "outbound", peer: "payments" },
  };
  const series = (ok: number, err: number, fast: number, slow: number, other: number) =>
    [
      `meshgate_requests_total{direction="outbound",peer="payments",code_class="2xx"} ${ok}`,
      `meshgate_requests_total{direction="outbound",peer="payments",code_class="5xx"} ${err}`,
      `meshgate_requests_total{direction="outbound",peer="users",code_class="2xx"} ${other}`,
      `meshgate_request_duration_seconds_bucket{direction="outbound",peer="payments",le="0.01"} ${fast}`,
      `meshgate_request_duration_seconds_bucket{direction="outbound",peer="payments",le="0.1"} ${fast + slow}`,
      `meshgate_request_duration_seconds_bucket{direction="outbound",peer="payments",le="+Inf"} ${fast + slow}`,
      `meshgate_request_duration_seconds_bucket{direction="outbound",peer="users",le="+Inf"} ${other}`,
    ].join("\n");

  it("computes_rate_error_ratio_codes_and_p99_over_the_window", () => {
    // 10 s: 95 ok + 5 errors on the edge; 90 fast (≤ 10 ms) and 10 slow (10–100 ms) observations.
    const s = [
      snap(0, series(100, 0, 100, 0, 0)),
      snap(4000, series(150, 2, 140, 12, 77)),
      snap(10_000, series(195, 5, 190, 10 + 0, 500)),
    ];
    const stats = windowStats(s, src);
    expect(stats.requests).toBe(100);
    expect(stats.rate).toBe(10);
    expect(stats.errorRatio).toBe(0.05);
    expect(stats.codes).toEqual({ "2xx": 9.5, "5xx": 0.5 });
    // buckets: le 0.01 grew 90, 0.1 grew 100, +Inf 100 → rank 99 in (0.01, 0.1]: 0.01 + 0.09 × 9/10
    expect(stats.p99).toBeCloseTo(0.091, 12);
  });

  it("an_idle_edge_has_zero_rate_and_no_p99", () => {
    const stats = windowStats([snap(0, series(5, 0, 5, 0, 0)), snap(2000, series(5, 0, 5, 0, 0))], src);
    expect(stats).toEqual({ rate: 0, errorRatio: 0, codes: {}, p99: null, requests: 0 });
  });

  it("adds_an_egress_edges_tunnels_to_its_requests_keeping_the_requests_p99", () => {
    // 10 s: 100 plain-HTTP requests (5 answered 5xx) and 20 tunnels opened + 5 failed connects.
    const tunnels: StatsSource = {
      counter: "meshgate_egress_connections_total",
      statusLabel: "outcome",
      isError: (s) => s === "failed",
      histogram: null,
      match: { external: "payments" },
    };
    const egress = (opened: number, failed: number) =>
      [
        `meshgate_egress_connections_total{external="payments",outcome="opened"} ${opened}`,
        `meshgate_egress_connections_total{external="payments",outcome="failed"} ${failed}`,
      ].join("\n");
    const s = [
      snap(0, `${series(100, 0, 100, 0, 0)}\n${egress(0, 0)}`),
      snap(10_000, `${series(195, 5, 190, 10, 0)}\n${egress(20, 5)}`),
    ];
    const both = mergeStats(windowStats(s, src), windowStats(s, tunnels));
    expect(both.requests).toBe(125);
    expect(both.rate).toBe(12.5);
    expect(both.errorRatio).toBeCloseTo(10 / 125, 12);
    expect(both.codes).toEqual({ "2xx": 9.5, "5xx": 0.5, opened: 2, failed: 0.5 });
    expect(both.p99).toBeCloseTo(0.091, 12);
    // Tunnels alone: no latency, the failed share of connects.
    const idle = [
      snap(0, `${series(5, 0, 5, 0, 0)}\n${egress(0, 0)}`),
      snap(10_000, `${series(5, 0, 5, 0, 0)}\n${egress(20, 5)}`),
    ];
    expect(mergeStats(windowStats(idle, src), windowStats(idle, tunnels))).toEqual({
      rate: 2.5,
      errorRatio: 0.2,
      codes: { opened: 2, failed: 0.5 },
      p99: null,
      requests: 25,
    });
  });

  it("keeps_the_snapshots_of_the_window_and_at_least_two", () => {
    const s = [0, 2000, 4000, 6000, 8000].map((at) => snap(at, "c 1"));
    expect(withinWindow(s, 4000).map((x) => x.at)).toEqual([4000, 6000, 8000]);
    expect(withinWindow(s, 500).map((x) => x.at)).toEqual([6000, 8000]);
    expect(withinWindow(s.slice(0, 1), 500).map((x) => x.at)).toEqual([0]);
  });
});
