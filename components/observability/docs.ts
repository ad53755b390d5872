/**
 * The documentation tables rendered from the conventions' catalog and the alert kinds, so that the docs
 * cannot drift from what is generated (test/observability/docs.test.ts compares them with the docs).
 */
import { ACCESS_LOG_FIELDS, LABELS, METRICS, SPAN_ATTRIBUTES } from "./conventions.ts";
import { ALERT_KINDS, DEFAULT_THRESHOLDS, RECORDS, QUANTILES } from "./rules.ts";

const cell = (text: string) => text.replace(/\|/g, "\\|").replace(/\n/g, " ");
const table = (head: string[], rows: string[][]) =>
  [
    `| ${head.join(" | ")} |`,
    `|${head.map(() => "---").join("|")}|`,
    ...rows.map((r) => `| ${r.map(cell).join(" | ")} |`),
  ].join("\n");

function metricsTable(): string {
  return table(
    ["metric", "type", "gateway labels", "sidecar labels", "what"],
    METRICS.map((m) => [
      `\`${m.name}\``,
      m.type,
      m.labels.gateway ? (m.labels.gateway.length ? m.labels.gateway.join(", ") : "–") : "not emitted",
      m.labels.sidecar ? (m.labels.sidecar.length ? m.labels.sidecar.join(", ") : "–") : "not emitted",
      [
        m.help,
        ...Object.entries(m.only ?? {}).map(([p, w]) => `(${p}: only ${w})`),
        ...(m.deviation ? [`**Deviation:** ${m.deviation}`] : []),
      ].join(" "),
    ]),
  );
}

function labelsTable(): string {
  return table(
    ["label", "meaning", "bounded by", "set by"],
    LABELS.map((l) => [`\`${l.name}\``, l.meaning, l.bounded, l.target ? "the scrape config" : "the proxy"]),
  );
}

function spansTable(): string {
  return table(
    ["attribute", "OpenTelemetry HTTP conventions", "gateway", "sidecar"],
    SPAN_ATTRIBUTES.map((a) => [`\`${a.name}\``, a.semconv, a.gateway, a.sidecar]),
  );
}

function accessLogTable(): string {
  return table(
    ["field", "type", "meaning", "gateway", "sidecar"],
    ACCESS_LOG_FIELDS.map((f) => [`\`${f.name}\``, f.type, f.meaning, f.gateway, f.sidecar]),
  );
}

function recordsTable(): string {
  const rows: string[][] = [
    [RECORDS.routeRequests, "namespace, route, code_class", "gateway requests per second"],
    [RECORDS.routeErrors, "namespace, route", "share of 5xx (0 when none)"],
    [RECORDS.routeLatency, "namespace, route, quantile", `latency quantiles ${QUANTILES.join(", ")}`],
    [RECORDS.serviceRequests, "namespace, service, code_class", "requests arriving at a service's sidecars"],
    [RECORDS.serviceErrors, "namespace, service", "their share of 5xx"],
    [RECORDS.serviceLatency, "namespace, service, quantile", "their latency quantiles"],
    [
      RECORDS.edgeRequests,
      "namespace, service, peer, code_class",
      "calls from `service` to `peer`, at the caller's sidecar",
    ],
    [RECORDS.edgeErrors, "namespace, service, peer", "their share of 5xx"],
    [RECORDS.edgeLatency, "namespace, service, peer, quantile", "their latency quantiles"],
    [RECORDS.upstreamAttempts, "namespace, service, cluster, outcome", "upstream attempts of every proxy"],
    [RECORDS.upstreamRetries, "namespace, service, cluster, reason", "retries of every proxy"],
    [RECORDS.denials, "namespace, proxy, service", "authorization denials per second"],
    [
      "slo:meshgate_sli_error:ratio_rate<window>",
      "namespace, slo, sli",
      "an SLO's bad-event ratio over each window its alerts use (5m, 30m, 1h, 2h, 6h, 1d, 3d)",
    ],
    [
      `${RECORDS.sloRequests}, ${RECORDS.sloErrors}`,
      "namespace, slo, sli",
      "an SLO's events and bad events per second",
    ],
    [RECORDS.sloBudget, "namespace, slo, sli", "the error budget (a constant: 1 − availability, or 0.01)"],
    [
      RECORDS.sloBudgetRemaining,
      "namespace, slo, sli",
      "the share of the budget left in the SLO window (negative: overspent)",
    ],
  ];
  return table(
    ["recording rule", "labels", "what"],
    rows.map(([r, l, w]) => [`\`${r}\``, l!, w!]),
  );
}

function alertsTable(): string {
  const t = DEFAULT_THRESHOLDS;
  const when: Record<string, string> = {
    MeshgateSLOBudgetBurnFast:
      "error ratio > 14.4× budget over 1h and 5m, or > 6× over 6h and 30m (30-day SLO; scaled to other windows)",
    MeshgateSLOBudgetBurnSlow: "error ratio > 3× budget over 1d and 2h, or > 1× over 3d and 6h (30-day SLO)",
    MeshgateCertRenewalOverdue:
      "`meshgate_cert_expiry_seconds` (≠ 0; the earliest of a gateway's workers) < `mesh.ca.renewBefore` for 15m",
    MeshgateCertExpiringSoon:
      "`meshgate_cert_expiry_seconds` (≠ 0; the earliest of a gateway's workers) < min(1h, renewBefore / 4) for 1m",
    MeshgateExternalCertExpiring:
      "`meshgate_external_cert_expiry_seconds` (≠ 0; the earliest of a gateway's workers) < 14 days, for 1h",
    MeshgateOutlierEjections: `≥ ${t.ejectionsPer10m} ejections of one cluster in 10m, for 5m`,
    MeshgateRateLimitSaturated: `> ${t.rateLimitedRatio * 100}% of a route's requests answered 429 (and > ${t.rateLimitMinRps} req/s), for 10m`,
    MeshgateServingStale: `≥ ${t.staleServedPer10m} responses of one route served stale instead of an upstream error (stale-if-error) in 10m, for 5m`,
    MeshgateAuthzDenySpike: `denials/s over 5m > ${t.denySpikeFactor}× their average over the day before (up to 30m ago) and > ${t.denyMinRps}/s, for 2m`,
    MeshgateConfigReloadFailed: "a reload failed in the last 15m (the failure counter, created at 0, rose)",
    MeshgateProxyStalled: `p99 of \`meshgate_event_loop_delay_seconds\` over 5m > ${t.eventLoopDelayP99Seconds * 1000} ms, for 10m`,
    MeshgateProxyDown: "`up == 0` for 5m",
    MeshgateWorkloadDown: "every target of a workload `up == 0` for 2m",
    MeshgateTargetMissing:
      "no `up` series for a workload of the spec for 5m (not for a service scaled to `replicas: 0`)",
  };
  return table(
    ["alert", "severity", "fires when", "runbook"],
    ALERT_KINDS.map((a) => [
      `\`${a.alert}\``,
      a.severity,
      when[a.alert]!,
      `[runbook](#${a.alert.toLowerCase()})`,
    ]),
  );
}

/** The generated sections of docs/observability.md, by marker name. */
export function observabilityDocSections(): Record<string, string> {
  return {
    "observability-labels": labelsTable(),
    "observability-metrics": metricsTable(),
    "observability-spans": spansTable(),
    "observability-access-log": accessLogTable(),
    "observability-records": recordsTable(),
    "observability-alerts": alertsTable(),
  };
}
