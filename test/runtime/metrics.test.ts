/** The Prometheus metrics registry: exposition text, escaping, bounded cardinality, registration checks. */
import { spawnSync } from "node:child_process";
import { describe, expect, it } from "vitest";
import {
  DEFAULT_LATENCY_BUCKETS,
  DEFAULT_MAX_CHILDREN,
  EXPOSITION_CONTENT_TYPE,
  MetricsRegistry,
  escapeHelp,
  escapeLabelValue,
  formatNumber,
  registerProcessMetrics,
} from "../../runtime/telemetry/metrics.ts";

const OVERFLOW_FAMILY = [
  "# HELP meshgate_metrics_label_overflow_total Label sets folded into the __overflow__ series because a metric reached its child cap, by metric.",
  "# TYPE meshgate_metrics_label_overflow_total counter",
];

/** The small registry of the exact-exposition test. */
function smallRegistry(): MetricsRegistry {
  const registry = new MetricsRegistry({ prefix: "meshgate_" });
  const requests = registry.counter("requests_total", "Requests handled.", ["route", "code_class"]);
  const ok = requests.labels("list-orders", "2xx");
  ok.inc();
  ok.inc(3);
  requests.labels("get-order", "5xx").inc();
  const inflight = registry.gauge("requests_in_flight", "Requests being handled.");
  inflight.inc();
  inflight.inc();
  inflight.dec();
  const duration = registry.histogram(
    "request_duration_seconds",
    "Request duration in seconds.",
    ["route"],
    [0.25, 0.5, 1],
  );
  const child = duration.labels("list-orders");
  for (const v of [0.125, 0.5, 0.75, 4]) child.observe(v);
  return registry;
}

/** Pipes the text to `promtool check metrics`, the Prometheus project's own parser and linter. */
function promtoolCheck(text: string): { status: number | null; output: string } {
  const run = spawnSync("promtool", ["check", "metrics"], { input: text, encoding: "utf8" });
  if (run.error) {
    const code = (run.error as NodeJS.ErrnoException).code;
    throw new Error(
      code === "ENOENT"
        ? "promtool is not on PATH: .ci/run must install the prometheus package (apt-get install -y prometheus provides /usr/bin/promtool)"
        : `could not run promtool: ${run.error.message}`,
    );
  }
  return { status: run.status, output: `${run.stdout}${run.stderr}` };
}

describe("metrics registry", () => {
  it("renders_counters_gauges_and_histograms_as_exact_exposition_text", () => {
    expect(smallRegistry().render()).toBe(
      [
        ...OVERFLOW_FAMILY,
        "# HELP meshgate_requests_total Requests handled.",
        "# TYPE meshgate_requests_total counter",
        'meshgate_requests_total{route="list-orders",code_class="2xx"} 4',
        'meshgate_requests_total{route="get-order",code_class="5xx"} 1',
        "# HELP meshgate_requests_in_flight Requests being handled.",
        "# TYPE meshgate_requests_in_flight gauge",
        "meshgate_requests_in_flight 1",
        "# HELP meshgate_request_duration_seconds Request duration in seconds.",
        "# TYPE meshgate_request_duration_seconds histogram",
        'meshgate_request_duration_seconds_bucket{route="list-orders",le="0.25"} 1',
        'meshgate_request_duration_seconds_bucket{route="list-orders",le="0.5"} 2',
        'meshgate_request_duration_seconds_bucket{route="list-orders",le="1"} 3',
        'meshgate_request_duration_seconds_bucket{route="list-orders",le="+Inf"} 4',
        'meshgate_request_duration_seconds_sum{route="list-orders"} 5.375',
        'meshgate_request_duration_seconds_count{route="list-orders"} 4',
        "",
      ].join("\n"),
    );
  });

  it("renders_help_and_type_for_metrics_without_children_and_zero_for_unlabelled_ones", () => {
    const registry = new MetricsRegistry();
    registry.counter("routes_total", "By route.", ["route"]);
    registry.counter("restarts_total", "Restarts.");
    registry.gauge("ready", "Ready.");
    registry.histogram("wait_seconds", "Wait.", [], [1]);
    expect(registry.render()).toBe(
      [
        "# HELP metrics_label_overflow_total Label sets folded into the __overflow__ series because a metric reached its child cap, by metric.",
        "# TYPE metrics_label_overflow_total counter",
        "# HELP routes_total By route.",
        "# TYPE routes_total counter",
        "# HELP restarts_total Restarts.",
        "# TYPE restarts_total counter",
        "restarts_total 0",
        "# HELP ready Ready.",
        "# TYPE ready gauge",
        "ready 0",
        "# HELP wait_seconds Wait.",
        "# TYPE wait_seconds histogram",
        'wait_seconds_bucket{le="1"} 0',
        'wait_seconds_bucket{le="+Inf"} 0',
        "wait_seconds_sum 0",
        "wait_seconds_count 0",
        "",
      ].join("\n"),
    );
  });

  it("counts_histogram_observations_on_bucket_bounds_as_inside_the_bucket", () => {
    const registry = new MetricsRegistry();
    const h = registry.histogram("h_seconds", "H.", [], [0.1, 1]);
    for (const v of [0.1, 1, 1.0000001, -5, NaN]) h.observe(v);
    const s = h.labels().snapshot();
    expect(s.buckets).toEqual([2, 3, 5]);
    expect(s.count).toBe(5);
    expect(s.sum).toBeNaN();
  });

  it("escapes_label_values_and_help_text", () => {
    const registry = new MetricsRegistry();
    const c = registry.counter("escapes_total", 'Help with a \\ backslash, "quotes" and a\nnewline.', [
      "path",
    ]);
    c.labels('C:\\dir "x"\nnext').inc();
    expect(registry.render()).toContain(
      [
        '# HELP escapes_total Help with a \\\\ backslash, "quotes" and a\\nnewline.',
        "# TYPE escapes_total counter",
        'escapes_total{path="C:\\\\dir \\"x\\"\\nnext"} 1',
      ].join("\n"),
    );
    expect(escapeLabelValue("plain")).toBe("plain");
    expect(escapeHelp("a\\b\nc")).toBe("a\\\\b\\nc");
  });

  it("formats_numbers_as_prometheus_expects", () => {
    expect(formatNumber(Infinity)).toBe("+Inf");
    expect(formatNumber(-Infinity)).toBe("-Inf");
    expect(formatNumber(NaN)).toBe("NaN");
    expect(formatNumber(0)).toBe("0");
    expect(formatNumber(-0)).toBe("0");
    expect(formatNumber(42)).toBe("42");
    expect(formatNumber(-7)).toBe("-7");
    expect(formatNumber(2 ** 53)).toBe("9007199254740992");
    expect(formatNumber(1e21)).toBe("1000000000000000000000");
    expect(formatNumber(1.5e300)).not.toMatch(/e/);
    expect(formatNumber(0.1 + 0.2)).toBe("0.30000000000000004");
    expect(formatNumber(0.0005)).toBe("0.0005");
    expect(formatNumber(1e-7)).toBe("1e-7");
  });

  it("returns_the_same_cached_child_for_the_same_label_values", () => {
    const registry = new MetricsRegistry();
    const c = registry.counter("c_total", "C.", ["a", "b"]);
    expect(c.labels("x", "y")).toBe(c.labels("x", "y"));
    expect(c.labels("x", "y")).not.toBe(c.labels("y", "x"));
    c.labels("x", "y").inc(2);
    expect(c.labels("x", "y").get()).toBe(2);
  });

  it("folds_label_sets_beyond_the_cap_into_the_overflow_child_and_counts_the_folds", () => {
    const registry = new MetricsRegistry({ prefix: "meshgate_" });
    const c = registry.counter("requests_total", "Requests.", ["route", "code_class"], { maxChildren: 2 });
    c.labels("a", "2xx").inc();
    c.labels("b", "2xx").inc();
    const folded = c.labels("c", "2xx");
    folded.inc(5);
    expect(c.labels("d", "4xx")).toBe(folded);
    c.labels("d", "4xx").inc();
    c.labels("a", "2xx").inc(); // existing children keep working at the cap
    expect(c.labels("__overflow__", "__overflow__")).toBe(folded);
    const text = registry.render();
    expect(text).toContain('meshgate_metrics_label_overflow_total{metric="meshgate_requests_total"} 3\n');
    expect(text).toContain(
      [
        'meshgate_requests_total{route="a",code_class="2xx"} 2',
        'meshgate_requests_total{route="b",code_class="2xx"} 1',
        'meshgate_requests_total{route="__overflow__",code_class="__overflow__"} 6',
      ].join("\n"),
    );
    expect(text.match(/__overflow__",code_class/g)).toHaveLength(1);
  });

  it("removes_a_child_whose_state_ended_freeing_its_slot_under_the_cap", () => {
    const registry = new MetricsRegistry();
    const g = registry.gauge("info", "Info.", ["proxy", "hash"], { maxChildren: 2 });
    for (const hash of ["h1", "h2", "h3", "h4", "h5"]) {
      const previous = g.labels("gateway", hash);
      previous.set(1);
      expect(g.remove("gateway", `h${Number(hash.slice(1)) - 1}`)).toBe(hash !== "h1");
    }
    expect(g.remove("gateway", "nope")).toBe(false);
    expect(g.remove("__overflow__", "__overflow__")).toBe(false);
    const text = registry.render();
    expect(text).toContain('info{proxy="gateway",hash="h5"} 1\n');
    expect(text).not.toMatch(/hash="(h1|h2|h3|h4|__overflow__)"/);
    expect(text).not.toContain('metric="info"');
  });

  it("caps_metrics_at_2000_children_by_default_and_per_registry", () => {
    expect(DEFAULT_MAX_CHILDREN).toBe(2_000);
    const registry = new MetricsRegistry();
    const c = registry.counter("routes_total", "By route.", ["route"]);
    for (let i = 0; i < 2_000; i++) c.labels(`r${i}`).inc();
    expect(c.labels("r2000")).toBe(c.labels("__overflow__"));
    expect(c.labels("r1999")).not.toBe(c.labels("__overflow__"));
    expect(registry.render()).toContain('metrics_label_overflow_total{metric="routes_total"} 1\n');

    const small = new MetricsRegistry({ defaultMaxChildren: 1 });
    const g = small.gauge("g", "G.", ["k"]);
    g.labels("a").set(1);
    g.labels("b").set(2);
    expect(small.render()).toContain('g{k="a"} 1\ng{k="__overflow__"} 2\n');
  });

  it("throws_a_clear_error_for_the_wrong_number_of_label_values", () => {
    const registry = new MetricsRegistry({ prefix: "meshgate_" });
    const c = registry.counter("requests_total", "Requests.", ["route", "code_class"]);
    const loose = c as unknown as { labels(...v: string[]): unknown };
    expect(() => loose.labels("only-one")).toThrow(
      "metric meshgate_requests_total takes 2 label value(s) (route, code_class), got 1",
    );
    expect(() => loose.labels("a", "b", "c")).toThrow(/takes 2 label value\(s\).*got 3/);
    const g = registry.gauge("up", "Up.") as unknown as { labels(...v: string[]): unknown };
    expect(() => g.labels("x")).toThrow(/takes 0 label value\(s\).*got 1/);
    const h = registry.histogram("d_seconds", "D.", ["route"]) as unknown as { observe(v: number): void };
    expect(() => h.observe(1)).toThrow("metric meshgate_d_seconds has labels (route): use .labels(...)");
  });

  it("rejects_label_values_that_are_not_strings_or_hold_the_key_separator", () => {
    const registry = new MetricsRegistry();
    const c = registry.counter("c_total", "C.", ["a", "b"]);
    expect(() => c.labels("x\u0000", "y")).toThrow(/without U\+0000/);
    expect(() => c.labels("x", 5 as unknown as string)).toThrow(/must be strings/);
    const one = registry.counter("d_total", "D.", ["a"]);
    expect(() => one.labels("x\u0000y")).toThrow(/without U\+0000/);
  });

  it("rejects_negative_or_nan_counter_increments", () => {
    const registry = new MetricsRegistry();
    const c = registry.counter("c_total", "C.");
    expect(() => c.inc(-1)).toThrow(RangeError);
    expect(() => c.inc(NaN)).toThrow(RangeError);
    c.inc(0);
    expect(c.get()).toBe(0);
  });

  it("throws_on_invalid_metric_and_label_names", () => {
    const registry = new MetricsRegistry();
    for (const name of ["", "1abc", "a-b", "a b", "réseau", "a.b"]) {
      expect(() => registry.counter(name, "x"), name).toThrow(/invalid metric name/);
    }
    registry.gauge("a:b_c", "Colons are allowed in metric names.");
    for (const label of ["", "1x", "a-b", "a:b", "é"]) {
      expect(() => registry.counter(`m_${label.length}_total`, "x", [label]), label).toThrow(
        /invalid label name/,
      );
    }
    expect(() => registry.counter("n_total", "x", ["__name"])).toThrow(/must not start with "__"/);
    expect(() => registry.counter("o_total", "x", ["a", "a"])).toThrow(/declared twice/);
    expect(() => registry.histogram("p_seconds", "x", ["le"])).toThrow(/"le" is reserved/);
    expect(() => new MetricsRegistry({ prefix: "mesh-gate_" })).toThrow(/prefix/);
    expect(() => registry.histogram("q_seconds", "x", [], [1, 0.5])).toThrow(/strictly increasing/);
    expect(() => registry.histogram("r_seconds", "x", [], [NaN])).toThrow(/finite/);
    expect(() => registry.counter("s_total", "x", ["a"], { maxChildren: 0 })).toThrow(/maxChildren/);
    // A rejected registration takes no name.
    registry.histogram("q_seconds", "x", [], [0.5, 1, Infinity]);
  });

  it("throws_on_duplicate_registration", () => {
    const registry = new MetricsRegistry({ prefix: "meshgate_" });
    registry.counter("requests_total", "Requests.");
    expect(() => registry.counter("requests_total", "Again.")).toThrow(
      "metric meshgate_requests_total is already registered",
    );
    expect(() => registry.gauge("requests_total", "As a gauge.")).toThrow(/already registered/);
    registry.histogram("latency_seconds", "Latency.");
    expect(() => registry.counter("latency_seconds_count", "Clashes with a histogram sample.")).toThrow(
      /already registered/,
    );
    expect(() => registry.counter("metrics_label_overflow_total", "Reserved.")).toThrow(/already registered/);
  });

  it("runs_on_collect_functions_at_the_start_of_each_render_in_order", () => {
    const registry = new MetricsRegistry();
    const expiry = registry.gauge("cert_expiry_seconds", "Seconds until the certificate expires.");
    const calls: string[] = [];
    let now = 100;
    registry.onCollect(() => {
      calls.push("first");
      expiry.set(now);
    });
    registry.onCollect(() => calls.push(`second saw ${expiry.get()}`));
    expect(calls).toEqual([]);
    expect(registry.render()).toContain("cert_expiry_seconds 100\n");
    now = 42;
    expect(registry.render()).toContain("cert_expiry_seconds 42\n");
    expect(calls).toEqual(["first", "second saw 100", "first", "second saw 42"]);
  });

  it("exports_process_metrics_refreshed_at_render", () => {
    const registry = new MetricsRegistry({ prefix: "meshgate_" });
    registerProcessMetrics(registry)();
    const text = registry.render();
    const value = (name: string) => Number(new RegExp(`^${name} (\\S+)$`, "m").exec(text)?.[1]);
    expect(value("meshgate_process_resident_memory_bytes")).toBeGreaterThan(1_000_000);
    expect(value("meshgate_process_cpu_seconds_total")).toBeGreaterThan(0);
    const start = value("meshgate_process_start_time_seconds");
    expect(start).toBeGreaterThan(Date.now() / 1000 - 3600);
    expect(start).toBeLessThanOrEqual(Date.now() / 1000);
    expect(text).toContain("# TYPE meshgate_process_cpu_seconds_total counter\n");
    expect(text).toContain("# TYPE meshgate_process_resident_memory_bytes gauge\n");
  });

  it("declares_the_default_latency_buckets_and_content_type", () => {
    expect(DEFAULT_LATENCY_BUCKETS).toEqual([
      0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300,
    ]);
    expect(EXPOSITION_CONTENT_TYPE).toBe("text/plain; version=0.0.4; charset=utf-8");
  });

  it("renders_text_that_promtool_check_metrics_accepts", () => {
    const registry = smallRegistry();
    registerProcessMetrics(registry)();
    const escapes = registry.counter("escapes_total", 'Help with \\ and "quotes"\nover two lines.', ["path"]);
    escapes.labels('C:\\dir "x"\nnext').inc();
    escapes.labels("").inc();
    escapes.labels("ünïcödé ✓").inc();
    const capped = registry.counter("capped_total", "Capped.", ["id"], { maxChildren: 1 });
    for (const id of ["a", "b", "c"]) capped.labels(id).inc();
    registry.counter("unused_total", "No children yet.", ["route"]);
    const odd = registry.gauge("odd_values", "Non-finite and large values.", ["kind"]);
    odd.labels("pos_inf").set(Infinity);
    odd.labels("neg_inf").set(-Infinity);
    odd.labels("nan").set(NaN);
    odd.labels("huge").set(1e300);
    odd.labels("tiny").set(1e-300);
    odd.labels("neg").set(-0.5);
    const latency = registry.histogram("upstream_duration_seconds", "Upstream latency.", ["upstream"]);
    for (const v of [0.0001, 0.003, 0.2, 7, 30]) latency.labels("orders").observe(v);
    latency.labels("empty");
    registry
      .histogram("unlabelled_duration_seconds", "No labels.", [], DEFAULT_LATENCY_BUCKETS)
      .observe(0.01);

    const text = registry.render();
    const { status, output } = promtoolCheck(text);
    expect(output.split("\n").filter((line) => /error/i.test(line))).toEqual([]);
    expect({ status, output }).toEqual({ status: 0, output: "" });
  });
});
