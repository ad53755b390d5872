/**
 * `promtool test rules` unit tests for the generated rules, generated from the same IR: synthetic series
 * shaped like what the proxies expose after scraping (target labels included), and the alerts that must
 * and must not fire — for every SLO indicator (a fast burn pages, a 2× burn does not, a quiet burn is
 * silent, a short spike does not page, a page resets once the short window is clean) and for every other
 * alert kind. Expected annotations are rendered from the rules' own templates, the way Prometheus renders
 * them (gotemplate.ts), so promtool checks the texts too.
 *
 * Traffic is uniform (1,000 requests a minute) wherever an alert's value is asserted: every window's ratio
 * is then exactly the configured one, whatever rate() extrapolates.
 */
import type { InfraIR, ServiceWorkloadIR } from "../translate/ir.ts";
import { renderTemplate } from "./gotemplate.ts";
import { promDuration, promNumber } from "./promql.ts";
import { EVENT_LOOP_DELAY_BUCKETS } from "./conventions.ts";
import { runningWorkloads } from "./scrape.ts";
import {
  certThresholds,
  EXTERNAL_CERT_WARN_SECONDS,
  RECORDS,
  sloMatchers,
  type AlertingRule,
  type Indicator,
  type RulesResult,
  indicators,
  DEFAULT_THRESHOLDS,
  type AlertThresholds,
} from "./rules.ts";

export interface InputSeries {
  readonly series: string;
  readonly values: string;
}

export interface ExpAlert {
  readonly exp_labels: Readonly<Record<string, string>>;
  readonly exp_annotations: Readonly<Record<string, string>>;
}

export interface AlertRuleTest {
  readonly eval_time: string;
  readonly alertname: string;
  readonly exp_alerts: readonly ExpAlert[];
}

export interface PromqlExprTest {
  readonly expr: string;
  readonly eval_time: string;
  readonly exp_samples: readonly { readonly labels: string; readonly value: number }[];
}

export interface PromtoolTest {
  readonly name: string;
  readonly interval: string;
  readonly input_series: readonly InputSeries[];
  readonly alert_rule_test?: readonly AlertRuleTest[];
  readonly promql_expr_test?: readonly PromqlExprTest[];
}

export interface PromtoolTestFile {
  readonly rule_files: readonly string[];
  readonly evaluation_interval: string;
  /** Recording groups before the alerts, so alerts read the ratios of the same evaluation. */
  readonly group_eval_order: readonly string[];
  readonly tests: readonly PromtoolTest[];
}

export interface RuleTestsOptions {
  /** The rule file, relative to the test file's directory. */
  readonly ruleFile: string;
  readonly thresholds?: Partial<AlertThresholds>;
}

/** Requests per minute of the synthetic traffic. */
const PER_MINUTE = 1000;

type Labels = Record<string, string>;

/** `name{a="x",…}` in promtool's series notation (labels sorted). */
function seriesText(name: string, labels: Labels): string {
  const body = Object.keys(labels)
    .sort()
    .map((k) => `${k}=${JSON.stringify(labels[k])}`)
    .join(",");
  return `${name}{${body}}`;
}

/**
 * A value list in promtool's expanding notation: runs of constant increments become `a+bxn`, so a
 * counter written per minute stays readable (`0+985x80`).
 */
export function valuesText(values: readonly (number | null)[]): string {
  const parts: string[] = [];
  let i = 0;
  while (i < values.length) {
    const v = values[i];
    if (v === null || v === undefined) {
      let n = 0;
      while (values[i + n + 1] === null) n++;
      parts.push(n === 0 ? "_" : `_x${n + 1}`);
      i += n + 1;
      continue;
    }
    let n = 0;
    const step = i + 1 < values.length && values[i + 1] !== null ? values[i + 1]! - v : 0;
    while (
      i + n + 1 < values.length &&
      values[i + n + 1] !== null &&
      near(values[i + n + 1]! - values[i + n]!, step)
    )
      n++;
    const a = promNumber(v);
    parts.push(
      n === 0
        ? a
        : step === 0
          ? `${a}x${n}`
          : `${a}${step < 0 ? "-" : "+"}${promNumber(Math.abs(step))}x${n}`,
    );
    i += n + 1;
  }
  return parts.join(" ");
}

const near = (a: number, b: number) => Math.abs(a - b) < 1e-9 * Math.max(1, Math.abs(a), Math.abs(b));

/** Cumulative sums of per-minute increments, starting at 0. */
function cumulative(perMinute: readonly number[]): number[] {
  const out = [0];
  for (const x of perMinute) out.push(out[out.length - 1]! + x);
  return out.map((v) => Number(v.toPrecision(12)));
}

const repeat = (value: number, n: number) => Array.from({ length: n }, () => value);
const minutes = (n: number) => `${n}m`;

/** The labels scraping adds to a workload's series (scrape.ts). */
function targetLabels(ns: string, workload: string, proxy: "gateway" | "sidecar", port: number): Labels {
  return {
    job: `meshgate-${ns}-${proxy}`,
    instance: `${workload}:${port}`,
    namespace: ns,
    proxy,
    service: workload,
  };
}

interface Ctx {
  readonly infra: InfraIR;
  readonly ns: string;
  readonly alerts: readonly AlertingRule[];
  readonly thresholds: AlertThresholds;
}

function adminPort(infra: InfraIR, workload: string): number {
  const w = infra.workloads.find((x) => x.name === workload);
  if (!w) throw new Error(`no workload ${workload}`);
  return w.kind === "gateway" ? w.adminPort : w.sidecar.admin;
}

/** The generated alert with this name whose rule labels match (SLO alerts: slo and sli). */
function alertRule(ctx: Ctx, name: string, match: Labels = {}): AlertingRule {
  const rule = ctx.alerts.find(
    (a) => a.alert === name && Object.entries(match).every(([k, v]) => a.labels[k] === v),
  );
  if (!rule) throw new Error(`no generated alert ${name} ${JSON.stringify(match)}`);
  return rule;
}

/** The alert as promtool reports it: the series' labels plus the rule's, annotations rendered. */
function expAlert(rule: AlertingRule, seriesLabels: Labels, value: number): ExpAlert {
  const labels = { ...seriesLabels, ...rule.labels };
  const annotations: Record<string, string> = {};
  for (const [k, v] of Object.entries(rule.annotations)) annotations[k] = renderTemplate(v, labels, value);
  return { exp_labels: sortLabels(labels), exp_annotations: annotations };
}

const sortLabels = (l: Labels): Labels =>
  Object.fromEntries(
    Object.keys(l)
      .sort()
      .map((k) => [k, l[k]!]),
  );

// ───────────────────────────── SLO indicators ─────────────────────────────

/** The series an indicator reads, for per-minute bad and total counts. */
function sliSeries(
  ctx: Ctx,
  ind: Indicator,
  bad: readonly number[],
  total: readonly number[],
): InputSeries[] {
  const ns = ctx.ns;
  const m = sloMatchers(ns, ind.slo) as Labels;
  const workload = ind.slo.kind === "route" ? "gateway" : ind.slo.target;
  const proxy = ind.slo.kind === "route" ? "gateway" : "sidecar";
  const base: Labels = { ...targetLabels(ns, workload, proxy, adminPort(ctx.infra, workload)), ...m };
  if (proxy === "sidecar") Object.assign(base, { peer: callerOf(ctx.infra, ind.slo.target), mtls: "true" });
  const good = total.map((t, i) => t - bad[i]!);
  if (ind.sli === "availability") {
    return [
      {
        series: seriesText("meshgate_requests_total", { ...base, code_class: "2xx" }),
        values: valuesText(cumulative(good)),
      },
      {
        series: seriesText("meshgate_requests_total", { ...base, code_class: "5xx" }),
        values: valuesText(cumulative(bad)),
      },
    ];
  }
  const histogram = { ...base };
  delete histogram.mtls; // the duration histogram has no mtls label
  const le = String(ind.slo.latencyP99Ms! / 1000);
  return [
    {
      series: seriesText("meshgate_request_duration_seconds_bucket", { ...histogram, le }),
      values: valuesText(cumulative(good)),
    },
    {
      series: seriesText("meshgate_request_duration_seconds_count", histogram),
      values: valuesText(cumulative(total)),
    },
  ];
}

/** A caller's SPIFFE ID for a service's inbound series: the first allowed caller, else `other`. */
function callerOf(infra: InfraIR, service: string): string {
  const edge = infra.edges.find((e) => e.to === service && e.allowed);
  const id = edge ? infra.identities.find((i) => i.name === edge.from)?.spiffeId : undefined;
  return id ?? "other";
}

/** What one indicator adds to a scenario's test group. */
interface Part {
  readonly series: readonly InputSeries[];
  readonly alerts: readonly AlertRuleTest[];
  readonly exprs: readonly PromqlExprTest[];
}

interface Scenario {
  /** The group's name, given the indicators that take part. */
  readonly name: (tags: readonly string[]) => string;
  /** The indicator's part, or null when the scenario cannot be shaped for it (e.g. a threshold near 100%). */
  readonly part: (ind: Indicator) => Part | null;
}

function sloScenarios(ctx: Ctx): Scenario[] {
  const rules = (ind: Indicator) => ({
    fast: ctx.alerts.find(
      (a) =>
        a.alert === "MeshgateSLOBudgetBurnFast" && a.labels.slo === ind.slo.name && a.labels.sli === ind.sli,
    ),
    slow: ctx.alerts.find(
      (a) =>
        a.alert === "MeshgateSLOBudgetBurnSlow" && a.labels.slo === ind.slo.name && a.labels.sli === ind.sli,
    ),
  });
  const sloLabels = (ind: Indicator): Labels => ({ namespace: ctx.ns, slo: ind.slo.name, sli: ind.sli });
  const ratioSel = (ind: Indicator, w: number) => seriesText(RECORDS.sloErrorRatio(w), sloLabels(ind));
  const bool = (ind: Indicator, w: number, th: number, at: string, value: 0 | 1): PromqlExprTest => ({
    expr: `${ratioSel(ind, w)} > bool ${promNumber(th)}`,
    eval_time: at,
    exp_samples: [{ labels: `{${labelText(sloLabels(ind))}}`, value }],
  });
  const firstFast = (ind: Indicator) => {
    const t = ind.plan.tiers.find((x) => x.speed === "fast");
    return t && t.longWindowMs === 3_600_000 ? t : undefined;
  };

  /** Uniform traffic at this error ratio for 80 minutes; which of the two alerts fire at 70m. */
  const uniform = (ind: Indicator, ratio: number): Part => {
    const r = rules(ind);
    const alerts: AlertRuleTest[] = [];
    for (const [rule, speed] of [
      [r.fast, "fast"],
      [r.slow, "slow"],
    ] as const) {
      if (!rule) continue;
      const fires = ind.plan.tiers.some((t) => t.speed === speed && ratio > t.threshold);
      alerts.push({
        eval_time: minutes(70),
        alertname: rule.alert,
        exp_alerts: fires ? [expAlert(rule, sloLabels(ind), ratio)] : [],
      });
    }
    const total = repeat(PER_MINUTE, 80);
    return { series: sliSeries(ctx, ind, repeat(ratio * PER_MINUTE, 80), total), alerts, exprs: [] };
  };

  return [
    {
      name: (tags) =>
        `a burn just above the 1h page threshold pages (fast) and tickets (slow): ${tags.join(", ")}`,
      part: (ind) => {
        const t = ind.plan.tiers.find((x) => x.speed === "fast");
        if (!t) return null;
        const ratio = Math.min(1, Math.ceil(t.burnRate + 0.5) * ind.errorBudget);
        return ratio > t.threshold ? uniform(ind, ratio) : null;
      },
    },
    {
      // 3 clean hours, then an hour at 1.5× the 1h tier's threshold: the 1h tier pages while the 6h window
      // (1.5 / 4 of the threshold ratio, below the 6h tier's 5/12) keeps the 6h tier quiet.
      name: (tags) => `an hour at 1.5× the 1h threshold pages through the 1h tier alone: ${tags.join(", ")}`,
      part: (ind) => {
        const t = firstFast(ind);
        const t2 = ind.plan.tiers.find((x) => x.speed === "fast" && x !== t);
        const fast = rules(ind).fast;
        if (!t || !fast || 1.5 * t.threshold > 1) return null;
        const ratio = 1.5 * t.threshold;
        const perMinute = [...repeat(0, 180), ...repeat(ratio * PER_MINUTE, 60)];
        return {
          series: sliSeries(ctx, ind, perMinute, repeat(PER_MINUTE, perMinute.length)),
          alerts: [
            {
              eval_time: minutes(240),
              alertname: fast.alert,
              exp_alerts: [expAlert(fast, sloLabels(ind), ratio)],
            },
          ],
          exprs: t2 ? [bool(ind, t2.longWindowMs, t2.threshold, minutes(240), 0)] : [],
        };
      },
    },
    {
      // A steady burn at 1.2× the 6h tier's threshold (below the 1h tier's): the 6h tier pages alone.
      name: (tags) =>
        `a steady burn at 1.2× the 6h threshold pages through the 6h tier alone: ${tags.join(", ")}`,
      part: (ind) => {
        const t1 = firstFast(ind);
        const t2 = ind.plan.tiers.find((x) => x.speed === "fast" && x.longWindowMs === 6 * 3_600_000);
        if (!t2 || 1.2 * t2.threshold > 1) return null;
        const ratio = 1.2 * t2.threshold;
        if (t1 && ratio >= t1.threshold) return null;
        const p = uniform(ind, ratio);
        return { ...p, exprs: t1 ? [bool(ind, t1.longWindowMs, t1.threshold, minutes(70), 0)] : [] };
      },
    },
    {
      name: (tags) => `a 2× burn opens a ticket and pages nobody: ${tags.join(", ")}`,
      part: (ind) => {
        const ratio = 2 * ind.errorBudget;
        // Only where 2× is below every fast tier (always, for windows of a day or more).
        if (ratio >= 1 || ind.plan.tiers.some((t) => t.speed === "fast" && ratio > t.threshold)) return null;
        return uniform(ind, ratio);
      },
    },
    {
      name: (tags) => `a burn at half the lowest threshold is quiet: ${tags.join(", ")}`,
      part: (ind) =>
        ind.plan.tiers.length ? uniform(ind, Math.min(...ind.plan.tiers.map((t) => t.threshold)) / 2) : null,
    },
    {
      // Two minutes of errors after an hour of clean traffic: the 5m window is far above the page
      // threshold, the 1h window is not, so nobody is paged.
      name: (tags) => `a 2-minute error spike does not page: ${tags.join(", ")}`,
      part: (ind) => {
        const t = firstFast(ind);
        const fast = rules(ind).fast;
        if (!t || !fast) return null;
        const r = Math.min(1, 10 * t.threshold);
        if (r / 2 <= t.threshold * 1.5) return null;
        const perMinute = [...repeat(0, 120), r * PER_MINUTE, r * PER_MINUTE, ...repeat(0, 4)];
        return {
          series: sliSeries(ctx, ind, perMinute, repeat(PER_MINUTE, perMinute.length)),
          alerts: [{ eval_time: minutes(122), alertname: fast.alert, exp_alerts: [] }],
          exprs: [
            bool(ind, 300_000, t.threshold, minutes(122), 1),
            bool(ind, 3_600_000, t.threshold, minutes(122), 0),
          ],
        };
      },
    },
    {
      // 20 minutes of errors at 6× the page threshold page at once; the page resets once the short windows
      // (5m, 30m) are clean, although the 1h window still holds the burst.
      name: (tags) =>
        `a 20-minute burst pages, and the page resets once the short windows are clean: ${tags.join(", ")}`,
      part: (ind) => {
        const t = firstFast(ind);
        const fast = rules(ind).fast;
        if (!t || !fast || 6 * t.threshold > 1) return null;
        const perMinute = [...repeat(6 * t.threshold * PER_MINUTE, 20), ...repeat(0, 40)];
        const firing = `ALERTS{alertname="${fast.alert}",alertstate="firing",${labelText({ ...sloLabels(ind), ...fast.labels })}}`;
        return {
          series: sliSeries(ctx, ind, perMinute, repeat(PER_MINUTE, perMinute.length)),
          alerts: [{ eval_time: minutes(55), alertname: fast.alert, exp_alerts: [] }],
          exprs: [
            { expr: firing, eval_time: minutes(20), exp_samples: [{ labels: firing, value: 1 }] },
            bool(ind, 3_600_000, t.threshold, minutes(55), 1),
          ],
        };
      },
    },
    {
      // The SLO window holds only this half hour, so the budget left is exactly half.
      name: (tags) => `half the budget's error rate leaves half the budget: ${tags.join(", ")}`,
      part: (ind) => ({
        series: sliSeries(ctx, ind, repeat((ind.errorBudget / 2) * PER_MINUTE, 40), repeat(PER_MINUTE, 40)),
        alerts: [],
        exprs: [
          {
            expr: `round(${seriesText(RECORDS.sloBudgetRemaining, sloLabels(ind))}, 0.001)`,
            eval_time: minutes(30),
            exp_samples: [{ labels: `{${labelText(sloLabels(ind))}}`, value: 0.5 }],
          },
        ],
      }),
    },
  ];
}

/**
 * One test group per scenario with every indicator in it (each on its own series), which keeps promtool's
 * evaluation steps — its cost — independent of the number of SLOs. Indicators that read the same series
 * (two SLOs on one route) go to separate groups.
 */
function sloTests(ctx: Ctx): PromtoolTest[] {
  const tests: PromtoolTest[] = [];
  const inds = indicators(ctx.infra);
  const seriesKey = (ind: Indicator) =>
    `${ind.slo.kind}/${ind.slo.target}/${ind.sli === "availability" ? "5xx" : `le=${ind.slo.latencyP99Ms}`}`;
  for (const scenario of sloScenarios(ctx)) {
    const parts = inds.map((ind) => ({ ind, part: scenario.part(ind) })).filter((x) => x.part !== null);
    const batches: (typeof parts)[] = [];
    for (const x of parts) {
      const batch = batches.find(
        (b) =>
          !b.some(
            (y) =>
              seriesKey(y.ind) === seriesKey(x.ind) ||
              y.part!.series.some((s) => x.part!.series.some((t) => t.series === s.series)),
          ),
      );
      if (batch) batch.push(x);
      else batches.push([x]);
    }
    for (const batch of batches) {
      const alerts = new Map<string, AlertRuleTest>();
      for (const { part } of batch)
        for (const a of part!.alerts) {
          const key = `${a.eval_time}/${a.alertname}`;
          const prev = alerts.get(key);
          alerts.set(key, prev ? { ...prev, exp_alerts: [...prev.exp_alerts, ...a.exp_alerts] } : a);
        }
      tests.push({
        name: scenario.name(batch.map(({ ind }) => `${ind.slo.name} (${ind.sli})`)),
        interval: "1m",
        input_series: batch.flatMap(({ part }) => part!.series),
        ...(alerts.size ? { alert_rule_test: [...alerts.values()] } : {}),
        ...(batch.some(({ part }) => part!.exprs.length)
          ? { promql_expr_test: batch.flatMap(({ part }) => part!.exprs) }
          : {}),
      });
    }
  }
  return tests;
}

const labelText = (l: Labels) =>
  Object.keys(l)
    .sort()
    .map((k) => `${k}=${JSON.stringify(l[k])}`)
    .join(",");

// ───────────────────────────── operational alerts ─────────────────────────────

function operationalTests(ctx: Ctx): PromtoolTest[] {
  const { infra, ns } = ctx;
  const tests: PromtoolTest[] = [];
  const services = infra.workloads.filter((w): w is ServiceWorkloadIR => w.kind === "service");
  const running = runningWorkloads(infra);
  // A service scaled to zero has no target: the scenarios use one that runs.
  const gateway = infra.workloads.find((w) => w.kind === "gateway");
  const svc = services.find((s) => running.has(s.name)) ?? (gateway ? undefined : services[0]);
  // The workload the single-workload scenarios use: the first service, else the gateway.
  const subject = svc
    ? { name: svc.name, proxy: "sidecar" as const, port: svc.sidecar.admin, identity: svc.identity }
    : {
        name: "gateway",
        proxy: "gateway" as const,
        port: gateway!.kind === "gateway" ? gateway!.adminPort : 0,
        identity: gateway!.identity,
      };
  const target = targetLabels(ns, subject.name, subject.proxy, subject.port);

  // Certificates.
  const { renewBefore, floor } = certThresholds(infra);
  const cert = { ...target, identity: subject.identity };
  const certSeries = (start: number, step = 60): InputSeries => ({
    series: seriesText("meshgate_cert_expiry_seconds", cert),
    values: valuesText(Array.from({ length: 31 }, (_, i) => start - step * i)),
  });
  const overdue = alertRule(ctx, "MeshgateCertRenewalOverdue");
  const expiring = alertRule(ctx, "MeshgateCertExpiringSoon");
  const lateStart = renewBefore - 60;
  // Stays above 0 for the half hour (0 is a replaced identity, which the alerts ignore).
  const lateStep = Math.max(1, Math.min(60, Math.floor((lateStart - 1) / 31)));
  tests.push({
    name: "certificates: an SVID below renewBefore for 15 minutes is overdue; far above it, nothing fires",
    interval: "1m",
    input_series: [certSeries(lateStart, lateStep)],
    alert_rule_test: [
      { eval_time: "10m", alertname: overdue.alert, exp_alerts: [] },
      {
        eval_time: "20m",
        alertname: overdue.alert,
        exp_alerts: [expAlert(overdue, cert, lateStart - 20 * lateStep)],
      },
    ],
  });
  tests.push({
    name: "certificates: an SVID with twice renewBefore left raises nothing",
    interval: "1m",
    input_series: [certSeries(2 * renewBefore)],
    alert_rule_test: [
      { eval_time: "30m", alertname: overdue.alert, exp_alerts: [] },
      { eval_time: "30m", alertname: expiring.alert, exp_alerts: [] },
    ],
  });
  tests.push({
    name: "certificates: a replaced identity's series, left at 0 by the proxy, raises nothing",
    interval: "1m",
    input_series: [
      { series: seriesText("meshgate_cert_expiry_seconds", cert), values: valuesText(repeat(0, 31)) },
    ],
    alert_rule_test: [
      { eval_time: "30m", alertname: overdue.alert, exp_alerts: [] },
      { eval_time: "30m", alertname: expiring.alert, exp_alerts: [] },
    ],
  });
  // Falls below zero (expired) within the half hour.
  const floorStart = floor - 60;
  const step = Math.ceil(floor / 20);
  tests.push({
    name: "certificates: an SVID below the hard floor pages within a minute, and keeps paging once expired",
    interval: "1m",
    input_series: [certSeries(floorStart, step)],
    alert_rule_test: [
      {
        eval_time: "2m",
        alertname: expiring.alert,
        exp_alerts: [expAlert(expiring, cert, floorStart - 2 * step)],
      },
      {
        eval_time: "30m",
        alertname: expiring.alert,
        exp_alerts: [expAlert(expiring, cert, floorStart - 30 * step)],
      },
    ],
  });

  // Client certificates presented to external destinations: 14 days ahead, for an hour.
  const externalCert = alertRule(ctx, "MeshgateExternalCertExpiring");
  const extLabels = { ...target, external: "partner-api" };
  const extStart = EXTERNAL_CERT_WARN_SECONDS + 1800;
  tests.push({
    name: "external client certificates: below 14 days for an hour fires; a month left, or a series left at 0, raises nothing",
    interval: "1m",
    input_series: [
      {
        series: seriesText("meshgate_external_cert_expiry_seconds", extLabels),
        values: valuesText(Array.from({ length: 121 }, (_, i) => extStart - 60 * i)),
      },
      {
        series: seriesText("meshgate_external_cert_expiry_seconds", { ...extLabels, external: "fresh" }),
        values: valuesText(repeat(30 * 86_400, 121)),
      },
      // No longer presenting a certificate: left at 0 by the sidecar.
      {
        series: seriesText("meshgate_external_cert_expiry_seconds", { ...extLabels, external: "dropped" }),
        values: valuesText(repeat(0, 121)),
      },
    ],
    alert_rule_test: [
      // Below the threshold from 31m on: not yet an hour at 80m.
      { eval_time: "80m", alertname: externalCert.alert, exp_alerts: [] },
      {
        eval_time: "100m",
        alertname: externalCert.alert,
        exp_alerts: [expAlert(externalCert, extLabels, extStart - 60 * 100)],
      },
    ],
  });
  tests.push({
    name: "external client certificates: an expired one keeps firing",
    interval: "1m",
    input_series: [
      {
        series: seriesText("meshgate_external_cert_expiry_seconds", extLabels),
        values: valuesText(repeat(-3600, 91)),
      },
    ],
    alert_rule_test: [
      {
        eval_time: "90m",
        alertname: externalCert.alert,
        exp_alerts: [expAlert(externalCert, extLabels, -3600)],
      },
    ],
  });

  // Outlier ejections: by the destination cluster, across every proxy that ejects.
  const cluster = services.find((s) => s.name !== subject.name)?.name ?? subject.name;
  const ejections = alertRule(ctx, "MeshgateOutlierEjections");
  const ejectionLabels = { ...target, cluster };
  tests.push({
    name: `outlier ejections: one ejection of ${cluster} a minute fires; a single one does not`,
    interval: "1m",
    input_series: [
      {
        series: seriesText("meshgate_upstream_ejections_total", ejectionLabels),
        values: valuesText(cumulative(repeat(1, 20))),
      },
    ],
    alert_rule_test: [
      { eval_time: "5m", alertname: ejections.alert, exp_alerts: [] },
      {
        eval_time: "20m",
        alertname: ejections.alert,
        exp_alerts: [expAlert(ejections, { namespace: ns, cluster }, 10)],
      },
    ],
  });
  tests.push({
    name: "outlier ejections: a single ejection does not fire",
    interval: "1m",
    input_series: [
      {
        series: seriesText("meshgate_upstream_ejections_total", ejectionLabels),
        values: valuesText([0, 0, 0, 1, ...repeat(1, 27)]),
      },
    ],
    alert_rule_test: [{ eval_time: "20m", alertname: ejections.alert, exp_alerts: [] }],
  });

  // A stalled proxy: every 20 ms sample of its event loop late by more than the threshold — in the first
  // bucket whose lower bound reaches it, so p99 = lower + (upper − lower) × 0.99 — or on time (≤ 1 ms),
  // or late for 3 minutes only.
  const stalled = alertRule(ctx, "MeshgateProxyStalled");
  const bounds = EVENT_LOOP_DELAY_BUCKETS;
  const slow = bounds.findIndex(
    (_b, i) => i > 0 && bounds[i - 1]! >= ctx.thresholds.eventLoopDelayP99Seconds,
  );
  const late = slow > 0 ? (bounds[slow - 1]! + bounds[slow]!) / 2 : bounds.at(-1)! * 2;
  const p99 = slow > 0 ? bounds[slow - 1]! + (bounds[slow]! - bounds[slow - 1]!) * 0.99 : bounds.at(-1)!;
  const perMinute = 3000;
  const delays = (lateMinutes: (minute: number) => boolean): InputSeries[] =>
    [...bounds, Infinity].map((le) => ({
      series: seriesText("meshgate_event_loop_delay_seconds_bucket", {
        ...target,
        le: le === Infinity ? "+Inf" : String(le),
      }),
      values: valuesText(
        cumulative(
          Array.from({ length: 25 }, (_, i) => (le >= (lateMinutes(i) ? late : 0.001) ? perMinute : 0)),
        ),
      ),
    }));
  tests.push({
    name: `stalled proxy: an event loop ${promNumber(late)} s late for 20 minutes fires after 10`,
    interval: "1m",
    input_series: delays(() => true),
    alert_rule_test: [
      { eval_time: "5m", alertname: stalled.alert, exp_alerts: [] },
      {
        eval_time: "20m",
        alertname: stalled.alert,
        exp_alerts: [
          expAlert(
            stalled,
            { namespace: ns, proxy: target.proxy!, service: target.service!, instance: target.instance! },
            p99,
          ),
        ],
      },
    ],
  });
  tests.push({
    name: "stalled proxy: an event loop on time, or late for 3 minutes only, does not fire",
    interval: "1m",
    input_series: delays((i) => i >= 5 && i < 8),
    alert_rule_test: [
      { eval_time: "7m", alertname: stalled.alert, exp_alerts: [] },
      { eval_time: "20m", alertname: stalled.alert, exp_alerts: [] },
    ],
  });

  // Rate limiting, denials and reloads are gateway scenarios when there is a gateway.
  const gw = gateway
    ? targetLabels(ns, "gateway", "gateway", gateway.kind === "gateway" ? gateway.adminPort : 0)
    : null;
  const t = ctx.thresholds;
  if (gw) {
    const saturated = alertRule(ctx, "MeshgateRateLimitSaturated");
    const route = "a-route";
    const limited = (share: number): InputSeries[] => [
      {
        series: seriesText("meshgate_requests_total", { ...gw, route, code_class: "2xx" }),
        values: valuesText(cumulative(repeat(600 * (1 - share), 25))),
      },
      {
        series: seriesText("meshgate_requests_total", { ...gw, route, code_class: "4xx" }),
        values: valuesText(cumulative(repeat(600 * share, 25))),
      },
      {
        series: seriesText("meshgate_ratelimit_limited_total", { ...gw, route }),
        values: valuesText(cumulative(repeat(600 * share, 25))),
      },
    ];
    const high = Math.min(1, t.rateLimitedRatio * 2);
    tests.push({
      name: `rate limits: ${promNumber(high * 100)}% of a route's requests answered 429 for 10 minutes fire`,
      interval: "1m",
      input_series: limited(high),
      alert_rule_test: [
        { eval_time: "10m", alertname: saturated.alert, exp_alerts: [] },
        {
          eval_time: "20m",
          alertname: saturated.alert,
          exp_alerts: [expAlert(saturated, { namespace: ns, route }, high)],
        },
      ],
    });
    tests.push({
      name: `rate limits: ${promNumber((t.rateLimitedRatio / 10) * 100)}% answered 429 does not fire`,
      interval: "1m",
      input_series: limited(t.rateLimitedRatio / 10),
      alert_rule_test: [{ eval_time: "20m", alertname: saturated.alert, exp_alerts: [] }],
    });

    // Serving stale on upstream errors (RFC 5861 stale-if-error): sustained, by route.
    const stale = alertRule(ctx, "MeshgateServingStale");
    const staleSeries = (perMinute: number): InputSeries[] => [
      {
        series: seriesText("meshgate_cache_requests_total", { ...gw, route, result: "stale_if_error" }),
        values: valuesText(cumulative(repeat(perMinute, 25))),
      },
      {
        series: seriesText("meshgate_cache_requests_total", { ...gw, route, result: "hit" }),
        values: valuesText(cumulative(repeat(600, 25))),
      },
    ];
    const perMinute = Math.ceil(t.staleServedPer10m / 5); // twice the threshold per 10 minutes
    tests.push({
      name: `serving stale: ${perMinute} stale-if-error responses a minute fire`,
      interval: "1m",
      input_series: staleSeries(perMinute),
      alert_rule_test: [
        { eval_time: "5m", alertname: stale.alert, exp_alerts: [] },
        {
          eval_time: "20m",
          alertname: stale.alert,
          exp_alerts: [expAlert(stale, { namespace: ns, route }, perMinute * 10)],
        },
      ],
    });
    tests.push({
      name: "serving stale: hits alone, or a few stale-if-error responses, do not fire",
      interval: "1m",
      input_series: [
        ...staleSeries(0),
        {
          series: seriesText("meshgate_cache_requests_total", {
            ...gw,
            route: "b-route",
            result: "stale_if_error",
          }),
          values: valuesText([0, 0, 0, 1, 2, ...repeat(2, 20)]),
        },
      ],
      alert_rule_test: [{ eval_time: "20m", alertname: stale.alert, exp_alerts: [] }],
    });
  }

  // Authorization denials: at the first service's sidecar (the mesh), or at the gateway.
  const spike = alertRule(ctx, "MeshgateAuthzDenySpike");
  const deniedLabels =
    subject.proxy === "sidecar"
      ? { ...target, peer: "other", reason: "peer_not_allowed" }
      : { ...target, route: "a-route", reason: "scope" };
  const baseline = Math.max(1, (t.denyMinRps * 60) / (t.denySpikeFactor * 4));
  const burst = t.denyMinRps * 60 * 5; // per minute: 5× the minimum rate
  const day = 60; // an hour of history stands for the day: the baseline averages what there is
  const spikeLabels = { namespace: ns, proxy: subject.proxy, service: subject.name };
  tests.push({
    name: `authorization denials: a jump from ${promNumber(baseline)} to ${promNumber(burst)} a minute fires`,
    interval: "1m",
    input_series: [
      {
        series: seriesText("meshgate_authz_denied_total", deniedLabels),
        values: valuesText(cumulative([...repeat(baseline, day), ...repeat(burst, 10)])),
      },
    ],
    alert_rule_test: [
      { eval_time: minutes(day), alertname: spike.alert, exp_alerts: [] },
      {
        eval_time: minutes(day + 10),
        alertname: spike.alert,
        exp_alerts: [expAlert(spike, spikeLabels, burst / 60)],
      },
    ],
  });
  tests.push({
    name: `authorization denials: a steady ${promNumber(burst)} a minute is not a spike`,
    interval: "1m",
    input_series: [
      {
        series: seriesText("meshgate_authz_denied_total", deniedLabels),
        values: valuesText(cumulative(repeat(burst, day + 10))),
      },
    ],
    alert_rule_test: [{ eval_time: minutes(day + 10), alertname: spike.alert, exp_alerts: [] }],
  });
  tests.push({
    name: "authorization denials: denials from nothing fire",
    interval: "1m",
    input_series: [
      {
        series: seriesText("meshgate_authz_denied_total", deniedLabels),
        values: valuesText([...repeat(null as unknown as number, 60), ...cumulative(repeat(burst, 10))]),
      },
    ],
    alert_rule_test: [
      {
        eval_time: minutes(70),
        alertname: spike.alert,
        exp_alerts: [expAlert(spike, spikeLabels, burst / 60)],
      },
    ],
  });

  // Config reloads: the failure series is created at 0 (registerReloadsCounter); each failure increments it.
  const reload = alertRule(ctx, "MeshgateConfigReloadFailed");
  const reloadLabels = { ...target, result: "failure" };
  const reloadAlert = {
    namespace: ns,
    proxy: subject.proxy,
    service: subject.name,
    instance: target.instance!,
  };
  tests.push({
    name: "config reloads: the first failure fires for 15 minutes",
    interval: "1m",
    input_series: [
      {
        series: seriesText("meshgate_config_reloads_total", reloadLabels),
        values: valuesText([...repeat(0, 10), ...repeat(1, 40)]),
      },
    ],
    alert_rule_test: [
      { eval_time: "5m", alertname: reload.alert, exp_alerts: [] },
      { eval_time: "12m", alertname: reload.alert, exp_alerts: [expAlert(reload, reloadAlert, 1)] },
      { eval_time: "40m", alertname: reload.alert, exp_alerts: [] },
    ],
  });
  tests.push({
    name: "config reloads: another failure fires again; an old failure alone does not",
    interval: "1m",
    input_series: [
      {
        series: seriesText("meshgate_config_reloads_total", reloadLabels),
        values: valuesText([...repeat(1, 30), ...repeat(2, 20)]),
      },
    ],
    alert_rule_test: [
      { eval_time: "25m", alertname: reload.alert, exp_alerts: [] },
      { eval_time: "35m", alertname: reload.alert, exp_alerts: [expAlert(reload, reloadAlert, 1)] },
    ],
  });
  tests.push({
    name: "config reloads: a scrape gap after an old failure does not fire",
    interval: "1m",
    input_series: [
      {
        // Unreachable for 10 minutes (no samples), then scraped again: the series was there all along.
        series: seriesText("meshgate_config_reloads_total", reloadLabels),
        values: valuesText([...repeat(1, 30), ...repeat(null as unknown as number, 10), ...repeat(1, 40)]),
      },
    ],
    alert_rule_test: [
      { eval_time: "45m", alertname: reload.alert, exp_alerts: [] },
      { eval_time: "53m", alertname: reload.alert, exp_alerts: [] },
    ],
  });

  // Scrape health: one replica down, every replica down, no target at all (not for a mesh that runs nothing).
  if (!running.has(subject.name)) return tests;
  const down = alertRule(ctx, "MeshgateProxyDown");
  const allDown = alertRule(ctx, "MeshgateWorkloadDown");
  const missing = alertRule(ctx, "MeshgateTargetMissing");
  const replica = (i: number) => ({ ...target, instance: `${subject.name}-${i}:${subject.port}` });
  const upSeries = (labels: Labels, values: (number | null)[]): InputSeries => ({
    series: seriesText("up", labels),
    values: valuesText(values),
  });
  const everyOtherWorkload = infra.workloads
    .filter((w) => w.name !== subject.name && running.has(w.name))
    .map((w) =>
      upSeries(
        targetLabels(ns, w.name, w.kind === "gateway" ? "gateway" : "sidecar", adminPort(infra, w.name)),
        repeat(1, 16),
      ),
    );
  tests.push({
    name: `scrape health: one of two ${subject.name} replicas down fires ProxyDown, not WorkloadDown`,
    interval: "1m",
    input_series: [
      upSeries(replica(0), [...repeat(1, 5), ...repeat(0, 11)]),
      upSeries(replica(1), repeat(1, 16)),
      ...everyOtherWorkload,
    ],
    alert_rule_test: [
      { eval_time: "8m", alertname: down.alert, exp_alerts: [] },
      { eval_time: "15m", alertname: down.alert, exp_alerts: [expAlert(down, replica(0), 0)] },
      { eval_time: "15m", alertname: allDown.alert, exp_alerts: [] },
      { eval_time: "15m", alertname: missing.alert, exp_alerts: [] },
    ],
  });
  const workload = { namespace: ns, proxy: subject.proxy, service: subject.name };
  tests.push({
    name: `scrape health: every ${subject.name} replica down fires WorkloadDown`,
    interval: "1m",
    input_series: [
      upSeries(replica(0), [...repeat(1, 5), ...repeat(0, 11)]),
      upSeries(replica(1), [...repeat(1, 5), ...repeat(0, 11)]),
      ...everyOtherWorkload,
    ],
    alert_rule_test: [
      { eval_time: "15m", alertname: allDown.alert, exp_alerts: [expAlert(allDown, workload, 0)] },
    ],
  });
  tests.push({
    name: `scrape health: no target for ${subject.name} fires TargetMissing`,
    interval: "1m",
    input_series: everyOtherWorkload,
    alert_rule_test: [
      { eval_time: "3m", alertname: missing.alert, exp_alerts: [] },
      { eval_time: "10m", alertname: missing.alert, exp_alerts: [expAlert(missing, workload, 1)] },
    ],
  });
  return tests;
}

/** The unit tests of a mesh's rules (`promtool test rules FILE`). */
export function ruleTests(infra: InfraIR, rules: RulesResult, options: RuleTestsOptions): PromtoolTestFile {
  const alerts = rules.groups.flatMap((g) => g.rules.filter((r): r is AlertingRule => "alert" in r));
  const ctx: Ctx = {
    infra,
    ns: infra.namespace,
    alerts,
    thresholds: { ...DEFAULT_THRESHOLDS, ...options.thresholds },
  };
  const tests = [...sloTests(ctx), ...operationalTests(ctx)];
  return {
    rule_files: [options.ruleFile],
    evaluation_interval: "1m",
    group_eval_order: rules.groups.map((g) => g.name),
    tests,
  };
}

export { promDuration };
