/**
 * Prometheus recording and alerting rules from the IR — pure and deterministic:
 *
 * - recording rules: per route (gateway), per service (inbound at its sidecars), per mesh edge (outbound at
 *   the caller's sidecar) and per upstream cluster: request rate by status class, 5xx ratio and latency
 *   quantiles over 5 minutes;
 * - per SLO and indicator (availability, and latency when `latencyP99` is set): the error ratio over every
 *   window its burn-rate tiers need, the 5-minute good/bad rates and the error budget left in the SLO window;
 * - alerts: multi-window, multi-burn-rate SLO alerts (slo.ts), certificate expiry, outlier ejections,
 *   rate-limit saturation, authorization-deny spikes, config reload failures, proxies down or missing.
 *
 * Every series the rules read is in the conventions' catalog (conventions.ts); test/observability checks it.
 */
import type { InfraIR, SloIR } from "../translate/ir.ts";
import { leMatcher, promDuration, promNumber, selector, type MatcherValue } from "./promql.ts";
import { runningWorkloads } from "./scrape.ts";
import { formatWindow, sloTiers, windowsFor, type SloTier, type TierPlan } from "./slo.ts";

export interface RecordingRule {
  readonly record: string;
  readonly expr: string;
  readonly labels?: Readonly<Record<string, string>>;
}

export interface AlertingRule {
  readonly alert: string;
  readonly expr: string;
  readonly for?: string;
  readonly labels: Readonly<Record<string, string>>;
  readonly annotations: Readonly<Record<string, string>>;
}

export type Rule = RecordingRule | AlertingRule;

export interface RuleGroup {
  readonly name: string;
  readonly rules: readonly Rule[];
}

/** Alert thresholds that do not come from the spec. */
export interface AlertThresholds {
  /** MeshgateOutlierEjections: ejections of one cluster's endpoints within 10 minutes. */
  readonly ejectionsPer10m: number;
  /** MeshgateRateLimitSaturated: share of a route's requests answered 429 over 5 minutes. */
  readonly rateLimitedRatio: number;
  /** …and only on routes with at least this many requests per second. */
  readonly rateLimitMinRps: number;
  /** MeshgateAuthzDenySpike: denials per second over 5 minutes above this many times the last day's rate… */
  readonly denySpikeFactor: number;
  /** …and above this rate. */
  readonly denyMinRps: number;
  /** MeshgateServingStale: responses of one route served stale instead of an upstream error within 10 minutes. */
  readonly staleServedPer10m: number;
  /** MeshgateProxyStalled: the p99 of a proxy's event-loop delay over 5 minutes, in seconds. */
  readonly eventLoopDelayP99Seconds: number;
}

export const DEFAULT_THRESHOLDS: AlertThresholds = {
  ejectionsPer10m: 3,
  rateLimitedRatio: 0.1,
  rateLimitMinRps: 0.05,
  denySpikeFactor: 3,
  denyMinRps: 0.1,
  staleServedPer10m: 10,
  eventLoopDelayP99Seconds: 0.1,
};

export interface RulesOptions {
  /** Base of the `runbook_url` annotations; `#<alert name, lower case>` is appended. */
  readonly runbookUrl?: string;
  readonly thresholds?: Partial<AlertThresholds>;
}

export interface RulesResult {
  readonly groups: readonly RuleGroup[];
  /** Burn-rate tiers that were left out, by SLO (see slo.ts). */
  readonly diagnostics: readonly { readonly slo: string; readonly message: string }[];
}

export const DEFAULT_RUNBOOK_URL = "docs/observability.md";

/** The names of the recording rules, for the dashboards and the tests. */
export const RECORDS = {
  routeRequests: "route:meshgate_requests:rate5m",
  routeErrors: "route:meshgate_request_errors:ratio_rate5m",
  routeLatency: "route:meshgate_request_duration_seconds:quantile_rate5m",
  serviceRequests: "service:meshgate_inbound_requests:rate5m",
  serviceErrors: "service:meshgate_inbound_request_errors:ratio_rate5m",
  serviceLatency: "service:meshgate_inbound_request_duration_seconds:quantile_rate5m",
  edgeRequests: "edge:meshgate_requests:rate5m",
  edgeErrors: "edge:meshgate_request_errors:ratio_rate5m",
  edgeLatency: "edge:meshgate_request_duration_seconds:quantile_rate5m",
  upstreamAttempts: "upstream:meshgate_upstream_requests:rate5m",
  upstreamRetries: "upstream:meshgate_retries:rate5m",
  denials: "service:meshgate_authz_denied:rate5m",
  sloErrorRatio: (windowMs: number) => `slo:meshgate_sli_error:ratio_rate${promDuration(windowMs)}`,
  sloRequests: "slo:meshgate_sli_requests:rate5m",
  sloErrors: "slo:meshgate_sli_errors:rate5m",
  sloBudget: "slo:meshgate_error_budget:ratio",
  sloBudgetRemaining: "slo:meshgate_error_budget:remaining",
} as const;

/** The quantiles recorded per route, service and edge. */
export const QUANTILES = ["0.5", "0.9", "0.99"] as const;

const FIVE_MINUTES = 5 * 60_000;

/** One service level indicator of an SLO: what counts as a bad event, and the objective. */
export interface Indicator {
  readonly slo: SloIR;
  readonly sli: "availability" | "latency";
  /** The error budget as a ratio: 1 − availability/100, or 0.01 for a p99 latency objective. */
  readonly errorBudget: number;
  readonly plan: TierPlan;
}

/** The indicators of the IR's SLOs, in SLO order (availability first). */
export function indicators(infra: InfraIR): Indicator[] {
  const out: Indicator[] = [];
  for (const slo of infra.observability.slos) {
    const budget = Number((1 - slo.availability / 100).toPrecision(12));
    out.push({ slo, sli: "availability", errorBudget: budget, plan: sloTiers(budget, slo.windowMs) });
    if (slo.latencyP99Ms !== null)
      out.push({ slo, sli: "latency", errorBudget: 0.01, plan: sloTiers(0.01, slo.windowMs) });
  }
  return out;
}

/** The matchers that select an SLO's requests (route at the gateway, or inbound at a service's sidecars). */
export function sloMatchers(ns: string, slo: SloIR): Record<string, MatcherValue> {
  return slo.kind === "route"
    ? { namespace: ns, proxy: "gateway", route: slo.target }
    : { namespace: ns, proxy: "sidecar", service: slo.target, direction: "inbound" };
}

/** `route list-orders` / `service payments`: what an SLO measures, for texts. */
export function sloSubject(slo: SloIR): string {
  return slo.kind === "route" ? `route ${slo.target}` : `service ${slo.target}`;
}

/** `sum(rate(…[w]))` of the bad events and of all events of an indicator. */
function sliRates(ns: string, ind: Indicator, windowMs: number): { bad: string; total: string } {
  const m = sloMatchers(ns, ind.slo);
  const w = promDuration(windowMs);
  if (ind.sli === "availability") {
    return {
      bad: `sum(rate(${selector("meshgate_requests_total", { ...m, code_class: "5xx" })}[${w}]))`,
      total: `sum(rate(${selector("meshgate_requests_total", m)}[${w}]))`,
    };
  }
  const le = leMatcher(ind.slo.latencyP99Ms! / 1000);
  const total = `sum(rate(${selector("meshgate_request_duration_seconds_count", m)}[${w}]))`;
  const good = `sum(rate(${selector("meshgate_request_duration_seconds_bucket", { ...m, le })}[${w}]))`;
  return { bad: `(${total} - ${good})`, total };
}

const sloLabels = (ns: string, ind: Indicator) => ({ namespace: ns, slo: ind.slo.name, sli: ind.sli });

function sloRules(ns: string, inds: readonly Indicator[]): Rule[] {
  const rules: Rule[] = [];
  const windows = [...new Set([FIVE_MINUTES, ...windowsFor(inds.map((i) => i.plan))])].sort((a, b) => a - b);
  for (const ind of inds) {
    const labels = sloLabels(ns, ind);
    for (const w of windows) {
      const { bad, total } = sliRates(ns, ind, w);
      // No 5xx series yet reads as no errors; no traffic at all gives no ratio (and no alert).
      const numerator = ind.sli === "availability" ? `(${bad} or vector(0))` : bad;
      rules.push({ record: RECORDS.sloErrorRatio(w), expr: `${numerator} / ${total}`, labels });
    }
    const five = sliRates(ns, ind, FIVE_MINUTES);
    rules.push({ record: RECORDS.sloRequests, expr: five.total, labels });
    rules.push({
      record: RECORDS.sloErrors,
      expr: ind.sli === "availability" ? `${five.bad} or vector(0)` : five.bad,
      labels,
    });
    rules.push({ record: RECORDS.sloBudget, expr: `vector(${promNumber(ind.errorBudget)})`, labels });
    const sel = (name: string) => selector(name, { namespace: ns, slo: ind.slo.name, sli: ind.sli });
    const window = promDuration(ind.slo.windowMs);
    rules.push({
      record: RECORDS.sloBudgetRemaining,
      expr:
        `1 - (sum_over_time(${sel(RECORDS.sloErrors)}[${window}]) / ` +
        `sum_over_time(${sel(RECORDS.sloRequests)}[${window}])) / ${promNumber(ind.errorBudget)}`,
      labels,
    });
  }
  return rules;
}

/** RED recording rules: routes, services (inbound), edges (outbound), upstream clusters. */
function redRules(ns: string): Rule[] {
  const rules: Rule[] = [];
  const family = (
    requests: string,
    errors: string,
    latency: string,
    by: string[],
    matchers: Record<string, MatcherValue>,
  ) => {
    const g = by.join(", ");
    rules.push({
      record: requests,
      expr: `sum by (${g}, code_class) (rate(${selector("meshgate_requests_total", matchers)}[5m]))`,
    });
    const all = `sum by (${g}) (${selector(requests, { namespace: ns })})`;
    const bad = `sum by (${g}) (${selector(requests, { namespace: ns, code_class: "5xx" })})`;
    rules.push({ record: errors, expr: `(${bad} or ${all} * 0) / ${all}` });
    const buckets = `sum by (${g}, le) (rate(${selector("meshgate_request_duration_seconds_bucket", matchers)}[5m]))`;
    for (const q of QUANTILES)
      rules.push({ record: latency, expr: `histogram_quantile(${q}, ${buckets})`, labels: { quantile: q } });
  };
  family(RECORDS.routeRequests, RECORDS.routeErrors, RECORDS.routeLatency, ["namespace", "route"], {
    namespace: ns,
    proxy: "gateway",
  });
  family(RECORDS.serviceRequests, RECORDS.serviceErrors, RECORDS.serviceLatency, ["namespace", "service"], {
    namespace: ns,
    proxy: "sidecar",
    direction: "inbound",
  });
  family(RECORDS.edgeRequests, RECORDS.edgeErrors, RECORDS.edgeLatency, ["namespace", "service", "peer"], {
    namespace: ns,
    proxy: "sidecar",
    direction: "outbound",
  });
  rules.push({
    record: RECORDS.upstreamAttempts,
    expr: `sum by (namespace, service, cluster, outcome) (rate(${selector("meshgate_upstream_requests_total", { namespace: ns })}[5m]))`,
  });
  rules.push({
    record: RECORDS.upstreamRetries,
    expr: `sum by (namespace, service, cluster, reason) (rate(${selector("meshgate_retries_total", { namespace: ns })}[5m]))`,
  });
  rules.push({
    record: RECORDS.denials,
    expr: `sum by (namespace, proxy, service) (rate(${selector("meshgate_authz_denied_total", { namespace: ns })}[5m]))`,
  });
  return rules;
}

/** `250ms`, `1s`, `2.5s`. */
export const formatLatency = (ms: number) => (ms < 1000 ? `${ms}ms` : `${ms / 1000}s`);

const pct = (ratio: number) => `${promNumber(ratio * 100)}%`;

function tierText(t: SloTier): string {
  return `${Number(t.burnRate.toPrecision(3))}× the budget over ${formatWindow(t.longWindowMs)} and ${formatWindow(t.shortWindowMs)}`;
}

function burnAlerts(ns: string, inds: readonly Indicator[], runbook: (a: string) => string): AlertingRule[] {
  const alerts: AlertingRule[] = [];
  for (const speed of ["fast", "slow"] as const) {
    const alert = speed === "fast" ? "MeshgateSLOBudgetBurnFast" : "MeshgateSLOBudgetBurnSlow";
    for (const ind of inds) {
      const tiers = ind.plan.tiers.filter((t) => t.speed === speed);
      if (tiers.length === 0) continue;
      const sel = (w: number) =>
        selector(RECORDS.sloErrorRatio(w), { namespace: ns, slo: ind.slo.name, sli: ind.sli });
      const expr = tiers
        .map((t) => {
          const th = promNumber(t.threshold);
          return `(${sel(t.longWindowMs)} > ${th} and ${sel(t.shortWindowMs)} > ${th})`;
        })
        .join(" or ");
      const objective =
        ind.sli === "availability"
          ? `availability ${ind.slo.availability}%`
          : `99% of requests within ${formatLatency(ind.slo.latencyP99Ms!)}`;
      const bad =
        ind.sli === "availability"
          ? "5xx ratio"
          : `share of requests slower than ${formatLatency(ind.slo.latencyP99Ms!)}`;
      alerts.push({
        alert,
        expr,
        labels: { severity: tiers[0]!.severity, slo: ind.slo.name, sli: ind.sli },
        annotations: {
          summary: `SLO ${ind.slo.name} (${objective} over ${formatWindow(ind.slo.windowMs)}) is burning its error budget ${speed === "fast" ? "fast" : "slowly but steadily"}`,
          description:
            `The ${bad} of ${sloSubject(ind.slo)} is {{ $value | humanizePercentage }} (budget ${pct(ind.errorBudget)}): ` +
            `${tiers.map(tierText).join(", or ")}.`,
          runbook_url: runbook(alert),
        },
      });
    }
  }
  return alerts;
}

/** Every alert kind, with severity and a one-line summary (the docs' table; the runbooks follow it). */
export const ALERT_KINDS = [
  {
    alert: "MeshgateSLOBudgetBurnFast",
    severity: "critical",
    what: "an SLO spends 2% of its budget in 1h or 5% in 6h (and still does over the last 5m / 30m)",
  },
  {
    alert: "MeshgateSLOBudgetBurnSlow",
    severity: "warning",
    what: "an SLO spends 10% of its budget in 1d or in 3d (and still does over the last 2h / 6h)",
  },
  {
    alert: "MeshgateCertRenewalOverdue",
    severity: "warning",
    what: "a proxy's SVID expires in less than mesh.ca.renewBefore: renewal did not happen",
  },
  {
    alert: "MeshgateCertExpiringSoon",
    severity: "critical",
    what: "a proxy's SVID expires within min(1h, renewBefore/4), or has expired",
  },
  {
    alert: "MeshgateExternalCertExpiring",
    severity: "warning",
    what: "a client certificate sidecars or the gateway present to an external destination (mutual TLS) expires within 14 days, or has expired",
  },
  {
    alert: "MeshgateOutlierEjections",
    severity: "warning",
    what: "outlier detection keeps ejecting a cluster's endpoints",
  },
  {
    alert: "MeshgateRateLimitSaturated",
    severity: "warning",
    what: "a route answers a large share of its requests with 429",
  },
  {
    alert: "MeshgateServingStale",
    severity: "warning",
    what: "the gateway answers a route's requests with stale cached responses because the upstream fails (stale-if-error hides the outage from clients)",
  },
  {
    alert: "MeshgateAuthzDenySpike",
    severity: "warning",
    what: "authorization denials jump above their usual rate",
  },
  {
    alert: "MeshgateConfigReloadFailed",
    severity: "warning",
    what: "a proxy rejected a new config (the previous one keeps serving)",
  },
  {
    alert: "MeshgateProxyStalled",
    severity: "warning",
    what: "a proxy's event loop runs late, so every request it handles waits: it lacks CPU or collects garbage",
  },
  { alert: "MeshgateProxyDown", severity: "warning", what: "a proxy's metrics endpoint does not answer" },
  { alert: "MeshgateWorkloadDown", severity: "critical", what: "no replica of a workload's proxy answers" },
  {
    alert: "MeshgateTargetMissing",
    severity: "critical",
    what: "Prometheus finds no scrape target for a workload at all",
  },
] as const;

export type AlertName = (typeof ALERT_KINDS)[number]["alert"];

/** How long before a client certificate to an external expires its alert fires: 14 days, time to renew it. */
export const EXTERNAL_CERT_WARN_SECONDS = 14 * 86_400;

/** The certificate alerts' thresholds, in seconds: renewal overdue, and the hard floor. */
export function certThresholds(infra: InfraIR): { renewBefore: number; floor: number } {
  const renewBefore = Math.round(infra.ca.renewBeforeMs / 1000);
  return { renewBefore, floor: Math.min(3600, Math.round(renewBefore / 4)) };
}

function operationalAlerts(
  infra: InfraIR,
  t: AlertThresholds,
  runbook: (a: string) => string,
): AlertingRule[] {
  const ns = infra.namespace;
  const on = { namespace: ns };
  const { renewBefore, floor } = certThresholds(infra);
  // A proxy that replaces its identity by another SPIFFE ID sets the old one's series to 0 and keeps it:
  // exactly 0 is that, not a certificate (an expired one reads negative).
  // Every worker of a multi-worker gateway exposes the same certificate (its own `worker` series): one
  // alert per proxy and identity, the earliest expiry, not one per worker.
  const certSel = selector("meshgate_cert_expiry_seconds", on);
  const cert = (below: number) => `min without (worker) (${certSel} != 0) < ${below}`;
  const requests = `sum by (namespace, route) (rate(${selector("meshgate_requests_total", { ...on, proxy: "gateway" })}[5m]))`;
  const denied = selector(RECORDS.denials, on);
  const reloads = selector("meshgate_config_reloads_total", { ...on, result: "failure" });
  const reloadBy = "sum by (namespace, proxy, service, instance)";
  const up = selector("up", { ...on, proxy: { re: "gateway|sidecar" } });
  // A service scaled to zero has no target to find: expecting one would page until it is scaled up.
  const running = runningWorkloads(infra);
  const workloads = infra.workloads
    .filter((w) => running.has(w.name))
    .map((w) => ({
      service: w.name,
      proxy: w.kind === "gateway" ? "gateway" : "sidecar",
    }));
  const a = (
    alert: AlertName,
    expr: string,
    forDuration: string | null,
    severity: string,
    summary: string,
    description: string,
  ): AlertingRule => ({
    alert,
    expr,
    ...(forDuration ? { for: forDuration } : {}),
    labels: { severity },
    annotations: { summary, description, runbook_url: runbook(alert) },
  });
  const alerts = [
    a(
      "MeshgateCertRenewalOverdue",
      cert(renewBefore),
      "15m",
      "warning",
      "The SVID of {{ $labels.service }} ({{ $labels.proxy }}) was not renewed in time",
      `{{ $labels.identity }} expires in {{ $value | humanizeDuration }}; it is renewed ${formatWindow(renewBefore * 1000)} before expiry (mesh.ca.renewBefore) at the latest. Check the issuer that writes the identity files.`,
    ),
    a(
      "MeshgateCertExpiringSoon",
      cert(floor),
      "1m",
      "critical",
      "The SVID of {{ $labels.service }} ({{ $labels.proxy }}) is about to expire",
      `{{ $labels.identity }} expires in {{ $value | humanizeDuration }} (below ${formatWindow(floor * 1000)}). Once expired, mTLS to and from this proxy fails closed.`,
    ),
    a(
      "MeshgateExternalCertExpiring",
      // Exactly 0 is no certificate's expiry; one alert per proxy and external, not per gateway worker.
      `min without (worker) (${selector("meshgate_external_cert_expiry_seconds", on)} != 0) < ${EXTERNAL_CERT_WARN_SECONDS}`,
      "1h",
      "warning",
      "The client certificate {{ $labels.service }} presents to {{ $labels.external }} expires soon",
      "It expires in {{ $value | humanizeDuration }} (negative: it has expired, and the destination refuses the sidecar's connections). Renew it — replace the files or the Kubernetes Secret: the sidecars present the new certificate on their next connections, without a restart.",
    ),
    a(
      "MeshgateOutlierEjections",
      `sum by (namespace, cluster) (increase(${selector("meshgate_upstream_ejections_total", on)}[10m])) >= ${t.ejectionsPer10m}`,
      "5m",
      "warning",
      "Endpoints of {{ $labels.cluster }} are being ejected",
      "Outlier detection ejected endpoints of {{ $labels.cluster }} {{ $value | humanize }} times in 10 minutes (consecutive 5xx, resets, timeouts or connect failures).",
    ),
    a(
      "MeshgateRateLimitSaturated",
      `sum by (namespace, route) (rate(${selector("meshgate_ratelimit_limited_total", on)}[5m])) / ${requests} > ${promNumber(t.rateLimitedRatio)} and ${requests} > ${promNumber(t.rateLimitMinRps)}`,
      "10m",
      "warning",
      "Route {{ $labels.route }} rejects many requests with 429",
      `{{ $value | humanizePercentage }} of the requests to route {{ $labels.route }} are rate-limited (above ${pct(t.rateLimitedRatio)} for 10 minutes).`,
    ),
    a(
      "MeshgateServingStale",
      `sum by (namespace, route) (increase(${selector("meshgate_cache_requests_total", { ...on, proxy: "gateway", result: "stale_if_error" })}[10m])) >= ${t.staleServedPer10m}`,
      "5m",
      "warning",
      "Route {{ $labels.route }} is answered from stale cached responses: its upstream fails",
      "{{ $value | humanize }} responses of route {{ $labels.route }} in 10 minutes were stored copies served instead of an upstream error (stale-if-error). Clients do not see the failure; the upstream has it. The gateway's upstream_error log lines and meshgate_upstream_requests_total{outcome} say which endpoints fail and how.",
    ),
    a(
      "MeshgateAuthzDenySpike",
      `(${denied} > ${promNumber(t.denySpikeFactor)} * (avg_over_time(${denied}[1d] offset 30m) or ${denied} * 0)) and ${denied} > ${promNumber(t.denyMinRps)}`,
      "2m",
      "warning",
      "Authorization denials at {{ $labels.service }} ({{ $labels.proxy }}) spike",
      `{{ printf "%.3g" $value }} denials per second over 5 minutes, more than ${promNumber(t.denySpikeFactor)}× the average rate of the day before (up to 30 minutes ago).`,
    ),
    a(
      "MeshgateConfigReloadFailed",
      // The proxies create the failure series at 0, so a first failure is an increase too. (Reading the
      // series appearing instead — `unless … offset 15m` — fired on every scrape gap of over 5 minutes.)
      `${reloadBy} (increase(${reloads}[15m])) > 0`,
      null,
      "warning",
      "{{ $labels.service }} ({{ $labels.proxy }}, {{ $labels.instance }}) rejected a new config",
      "A config reload failed in the last 15 minutes; the previous config keeps serving. The proxy's log line reload_rejected names the error.",
    ),
    a(
      "MeshgateProxyStalled",
      `histogram_quantile(0.99, sum by (namespace, proxy, service, instance, le) (rate(${selector("meshgate_event_loop_delay_seconds_bucket", on)}[5m]))) > ${promNumber(t.eventLoopDelayP99Seconds)}`,
      "10m",
      "warning",
      "The {{ $labels.proxy }} of {{ $labels.service }} at {{ $labels.instance }} is stalled",
      `The p99 of its event loop's delay over 5 minutes is {{ $value | humanizeDuration }} (above ${promNumber(t.eventLoopDelayP99Seconds * 1000)} ms for 10 minutes): every request it handles waits about that long. It lacks CPU — a CPU limit that throttles it, or too few replicas or gateway workers for the load — or spends its time collecting garbage (meshgate_gc_duration_seconds, the dashboard's GC panel).`,
    ),
    a(
      "MeshgateProxyDown",
      `${up} == 0`,
      "5m",
      "warning",
      "The {{ $labels.proxy }} of {{ $labels.service }} at {{ $labels.instance }} is down",
      "Prometheus cannot scrape {{ $labels.instance }} (the proxy's admin port) for 5 minutes.",
    ),
    a(
      "MeshgateWorkloadDown",
      `max by (namespace, proxy, service) (${up}) == 0`,
      "2m",
      "critical",
      "Every {{ $labels.proxy }} of {{ $labels.service }} is down",
      "No replica of {{ $labels.service }} answers scrapes: it receives no traffic (mesh peers get 503).",
    ),
    a(
      "MeshgateTargetMissing",
      workloads
        .map((w) => `absent(${selector("up", { ...on, proxy: w.proxy, service: w.service })})`)
        .join(" or "),
      "5m",
      "critical",
      "Prometheus has no target for {{ $labels.service }} ({{ $labels.proxy }})",
      "No scrape target of {{ $labels.service }} exists: the workload is not deployed, or service discovery does not find it.",
    ),
  ];
  // Every service scaled to zero and no gateway: no target to expect (and `absent()` of nothing is no rule).
  return workloads.length > 0 ? alerts : alerts.filter((r) => r.alert !== "MeshgateTargetMissing");
}

/**
 * The rule groups for a mesh: `meshgate-<ns>-red` (RED recording rules), `meshgate-<ns>-slo` (SLI ratios
 * and budgets), `meshgate-<ns>-alerts`.
 */
export function prometheusRules(infra: InfraIR, options: RulesOptions = {}): RulesResult {
  const ns = infra.namespace;
  const thresholds = { ...DEFAULT_THRESHOLDS, ...options.thresholds };
  const base = options.runbookUrl ?? DEFAULT_RUNBOOK_URL;
  const runbook = (alert: string) => `${base}#${alert.toLowerCase()}`;
  const inds = indicators(infra);
  const groups: RuleGroup[] = [{ name: `meshgate-${ns}-red`, rules: redRules(ns) }];
  if (inds.length > 0) groups.push({ name: `meshgate-${ns}-slo`, rules: sloRules(ns, inds) });
  groups.push({
    name: `meshgate-${ns}-alerts`,
    rules: [...burnAlerts(ns, inds, runbook), ...operationalAlerts(infra, thresholds, runbook)],
  });
  const diagnostics = inds.flatMap((i) =>
    i.plan.omitted.map((message) => ({ slo: `${i.slo.name} (${i.sli})`, message })),
  );
  return { groups, diagnostics };
}
