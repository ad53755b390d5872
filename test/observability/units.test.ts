/**
 * The pure pieces: burn-rate tiers per SLO window and budget, PromQL helpers and the PromQL reader, and the
 * Go template functions — the latter checked against the real promtool, which renders the same values.
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import {
  leMatcher,
  promDuration,
  promNumber,
  readExpression,
  selector,
  sloTiers,
  toYaml,
} from "../../components/observability/index.ts";
import {
  goG,
  humanize,
  humanizeDuration,
  humanizePercentage,
  renderTemplate,
} from "../../components/observability/gotemplate.ts";
import { promtool, writeFiles } from "./support.ts";

const H = 3_600_000;
const D = 24 * H;

describe("sloTiers", () => {
  const cases: { claim: string; budget: number; window: number; rates: number[]; omitted: number }[] = [
    {
      claim: "thirty_days_follow_the_workbook",
      budget: 0.001,
      window: 30 * D,
      rates: [14.4, 6, 3, 1],
      omitted: 0,
    },
    {
      claim: "twenty_eight_days_scale_the_rates",
      budget: 0.0001,
      window: 28 * D,
      rates: [13.44, 5.6, 2.8, 0.933333333333],
      omitted: 0,
    },
    {
      claim: "seven_days_scale_the_rates_down",
      budget: 0.005,
      window: 7 * D,
      rates: [3.36, 1.4, 0.7, 0.233333333333],
      omitted: 0,
    },
    {
      claim: "a_two_hour_window_keeps_only_the_1h_tier",
      budget: 0.01,
      window: 2 * H,
      rates: [0.04],
      omitted: 3,
    },
    {
      claim: "a_loose_slo_drops_tiers_that_need_over_100_percent_errors",
      budget: 0.1,
      window: 30 * D,
      rates: [6, 3, 1],
      omitted: 1,
    },
  ];
  for (const c of cases)
    it(c.claim, () => {
      const plan = sloTiers(c.budget, c.window);
      expect(plan.tiers.map((t) => t.burnRate)).toEqual(c.rates);
      expect(plan.omitted).toHaveLength(c.omitted);
      for (const t of plan.tiers) {
        expect(t.threshold).toBeCloseTo(t.burnRate * c.budget, 12);
        expect(t.shortWindowMs * 12).toBe(t.longWindowMs);
      }
    });

  it("refuses_a_budget_outside_zero_to_one", () => {
    expect(() => sloTiers(0, D)).toThrow(RangeError);
    expect(() => sloTiers(1, D)).toThrow(RangeError);
  });
});

describe("promql helpers", () => {
  it("writes_durations_in_the_largest_whole_unit", () => {
    const cases: [number, string][] = [
      [300_000, "5m"],
      [H, "1h"],
      [D, "1d"],
      [7 * D, "7d"],
      [30 * D, "30d"],
      [1500, "1500ms"],
      [15_000, "15s"],
    ];
    for (const [ms, text] of cases) expect(promDuration(ms)).toBe(text);
    expect(() => promDuration(0)).toThrow(RangeError);
  });

  it("matches_both_spellings_of_an_integral_bucket_bound", () => {
    expect(leMatcher(0.25)).toBe("0.25");
    expect(leMatcher(1)).toEqual({ re: "1|1\\.0" });
    expect(selector("x_bucket", { le: leMatcher(10) })).toBe('x_bucket{le=~"10|10\\\\.0"}');
  });

  it("quotes_label_values_and_writes_numbers_without_float_noise", () => {
    expect(selector("x", { a: 'q"u\\o\nte', b: { not: "y" } })).toBe('x{a="q\\"u\\\\o\\nte",b!="y"}');
    expect(promNumber(0.1 * 0.144)).toBe("0.0144");
    expect(promNumber(14.399999999999999)).toBe("14.4");
  });
});

describe("readExpression", () => {
  const cases: { expr: string; selectors: string[]; groupings: string[][] }[] = [
    {
      expr: 'sum by (a, b) (rate(x_total{c="d",e=~"f|g"}[5m] offset 1h)) / on (a) group_left (h) y',
      selectors: ['x_total{c="d",e=~"f|g"}', "y"],
      groupings: [["a", "b"], ["a"], ["h"]],
    },
    {
      expr: "histogram_quantile(0.99, sum without (pod) (rate(lat_bucket[$__rate_interval])))",
      selectors: ["lat_bucket"],
      groupings: [["pod"]],
    },
    {
      expr: 'label_replace(up{job="j"}, "dst", "${1}", "src", "(.*)") and topk(3, rec:rule:rate5m) or vector(0)',
      selectors: ['up{job="j"}', "rec:rule:rate5m"],
      groupings: [],
    },
    { expr: "sum(a) by (x) > bool 2 unless absent(b)", selectors: ["a", "b"], groupings: [["x"]] },
  ];
  for (const [i, c] of cases.entries())
    it(`reads_selectors_and_groupings_${i + 1}`, () => {
      const r = readExpression(c.expr);
      expect(
        r.selectors.map((s) =>
          selector(
            s.metric,
            Object.fromEntries(s.matchers.map((m) => [m.label, m.op === "=~" ? { re: m.value } : m.value])),
          ),
        ),
      ).toEqual(c.selectors);
      expect(r.groupings).toEqual(c.groupings);
    });

  it("refuses_a_selector_without_a_metric_name", () => {
    expect(() => readExpression('{__name__=~"meshgate_.*"}')).toThrow(/without a metric name/);
  });
});

describe("go template functions", () => {
  it("format_like_go", () => {
    const g: [number, number, string][] = [
      [0.015 * 100, 4, "1.5"],
      [100, 4, "100"],
      [1000, 4, "1000"],
      [12345, 4, "1.234e+04"],
      [0.0001, 4, "0.0001"],
      [0.00001, 4, "1e-05"],
      [0.5, 3, "0.5"],
      [2.0000000000000004, 4, "2"],
    ];
    for (const [v, p, text] of g) expect(goG(v, p), String(v)).toBe(text);
    expect(humanize(0.5)).toBe("500m");
    expect(humanize(1234)).toBe("1.234k");
    expect(humanizePercentage(0.24999999999999997)).toBe("25%");
    expect(humanizeDuration(27540)).toBe("7h 39m 0s");
    expect(humanizeDuration(-1860)).toBe("-31m 0s");
    expect(humanizeDuration(0.25)).toBe("250ms");
  });

  it("render_the_same_text_as_prometheus", async () => {
    // An alert renders every function for each value; promtool compares its rendering with ours.
    const values = [
      0, 0.00042, 0.015, 0.5, 1, 12.5, 59, 3599, 12345, 27540, 90061, 1234567, 1.0005, -1860, -0.5,
    ];
    const text =
      "{{ $labels.v }}: {{ $value | humanize }} / {{ $value | humanizePercentage }} / " +
      '{{ $value | humanizeDuration }} / {{ printf "%.3g" $value }}';
    const dir = await mkdtemp(join(tmpdir(), "meshgate-gotemplate-"));
    try {
      await writeFiles(dir, [
        {
          path: "r.yml",
          content: toYaml({
            groups: [{ name: "g", rules: [{ alert: "A", expr: "x", annotations: { t: text } }] }],
          }),
        },
        {
          path: "t.yml",
          content: toYaml({
            rule_files: ["r.yml"],
            tests: [
              {
                interval: "1m",
                input_series: values.map((v, i) => ({ series: `x{v="${i}"}`, values: `${v}x2` })),
                alert_rule_test: [
                  {
                    eval_time: "1m",
                    alertname: "A",
                    exp_alerts: values.map((v, i) => ({
                      exp_labels: { v: String(i) },
                      exp_annotations: { t: renderTemplate(text, { v: String(i) }, v) },
                    })),
                  },
                ],
              },
            ],
          }),
        },
      ]);
      const r = promtool(["test", "rules", "t.yml"], dir);
      expect(r.status, r.output).toBe(0);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it("refuses_a_template_action_it_cannot_render", () => {
    expect(() => renderTemplate("{{ $value | title }}", {}, 1)).toThrow(/unsupported template action/);
  });
});
