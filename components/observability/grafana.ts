/**
 * Grafana dashboards (the classic dashboard JSON model, schemaVersion 39) and provisioning files from the
 * IR — pure and deterministic:
 *
 * - `meshgate-<ns>-overview`: the edge's RED metrics, top routes, the mesh's services, every SLO's error
 *   budget left and burn rate, scrape health;
 * - `meshgate-<ns>-gateway`: routes, authentication and denials, rate limits, cache, upstream clusters
 *   (attempts, retries, ejections), reloads, certificate, process;
 * - `meshgate-<ns>-service-<name>` per service: inbound (by caller), outbound edges (by callee), retries,
 *   ejections, circuit breaking, denials, mTLS handshakes, certificate expiry, its SLOs, process.
 *
 * Queries read the recording rules (rules.ts) where one exists, and otherwise only series in the
 * conventions' catalog; panels use the `datasource` variable, which defaults to the provisioned
 * Prometheus (uid `meshgate-prometheus`).
 */
import { createHash } from "node:crypto";
import type { InfraIR, ServiceWorkloadIR } from "../translate/ir.ts";
import { selector, type MatcherValue } from "./promql.ts";
import { RECORDS, indicators, sloSubject, formatLatency, type Indicator } from "./rules.ts";
import { formatWindow } from "./slo.ts";

export const PROMETHEUS_DATASOURCE_UID = "meshgate-prometheus";
export const GRAFANA_SCHEMA_VERSION = 39;

// ───────────────────────────── the JSON model (the fields emitted) ─────────────────────────────

export interface DataSourceRef {
  readonly type: string;
  readonly uid: string;
}

export interface Target {
  readonly refId: string;
  readonly expr: string;
  readonly legendFormat: string;
  readonly range: boolean;
  readonly instant: boolean;
  readonly format?: "time_series" | "table";
  readonly editorMode: "code";
  readonly datasource: DataSourceRef;
}

export interface GridPos {
  readonly h: number;
  readonly w: number;
  readonly x: number;
  readonly y: number;
}

export interface Threshold {
  readonly color: string;
  /** null is −Infinity (the first step), as Grafana writes it. */
  readonly value: number | null;
}

export interface FieldConfigSource {
  readonly defaults: {
    readonly unit?: string;
    readonly decimals?: number;
    readonly min?: number;
    readonly max?: number;
    readonly color?: { readonly mode: "palette-classic" | "thresholds" };
    readonly thresholds?: { readonly mode: "absolute"; readonly steps: readonly Threshold[] };
    readonly custom?: Readonly<Record<string, unknown>>;
  };
  readonly overrides: readonly never[];
}

export interface Panel {
  readonly id: number;
  readonly type: "timeseries" | "stat" | "table";
  readonly title: string;
  readonly description?: string;
  readonly gridPos: GridPos;
  readonly datasource: DataSourceRef;
  readonly targets: readonly Target[];
  readonly fieldConfig: FieldConfigSource;
  readonly options: Readonly<Record<string, unknown>>;
  readonly transformations?: readonly {
    readonly id: string;
    readonly options: Readonly<Record<string, unknown>>;
  }[];
}

export interface RowPanel {
  readonly id: number;
  readonly type: "row";
  readonly title: string;
  readonly collapsed: false;
  readonly gridPos: GridPos;
  readonly panels: readonly never[];
}

export interface Dashboard {
  readonly uid: string;
  readonly title: string;
  readonly description: string;
  readonly tags: readonly string[];
  readonly timezone: "browser";
  readonly editable: boolean;
  readonly graphTooltip: 1;
  readonly time: { readonly from: string; readonly to: string };
  readonly refresh: string;
  readonly schemaVersion: number;
  readonly version: number;
  readonly links: readonly Record<string, unknown>[];
  readonly annotations: { readonly list: readonly Record<string, unknown>[] };
  readonly templating: { readonly list: readonly Record<string, unknown>[] };
  readonly panels: readonly (Panel | RowPanel)[];
}

// ───────────────────────────── building blocks ─────────────────────────────

const DS: DataSourceRef = { type: "prometheus", uid: "${datasource}" };

interface Query {
  readonly expr: string;
  readonly legend?: string;
  /** An instant query (tables, stats of the current value). */
  readonly instant?: boolean;
}

interface PanelSpec {
  readonly type: Panel["type"];
  readonly title: string;
  readonly description?: string;
  readonly queries: readonly Query[];
  readonly unit?: string;
  readonly w?: number;
  readonly h?: number;
  readonly min?: number;
  readonly max?: number;
  /** Stat thresholds: [color, from-value] after the base color. */
  readonly thresholds?: { readonly base: string; readonly steps: readonly (readonly [string, number])[] };
  readonly stack?: boolean;
  /** Table columns renamed from `Value #<refId>`. */
  readonly columns?: readonly string[];
}

type Section = { readonly row: string; readonly panels: readonly PanelSpec[] };

const REF_IDS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ";

function target(q: Query, i: number, table: boolean): Target {
  return {
    refId: REF_IDS[i]!,
    expr: q.expr,
    legendFormat: q.legend ?? "__auto",
    range: !q.instant,
    instant: q.instant ?? false,
    ...(table ? { format: "table" as const } : {}),
    editorMode: "code",
    datasource: DS,
  };
}

function panelOptions(spec: PanelSpec): Record<string, unknown> {
  switch (spec.type) {
    case "timeseries":
      return {
        legend: { displayMode: "list", placement: "bottom", showLegend: true, calcs: [] },
        tooltip: { mode: "multi", sort: "desc" },
      };
    case "stat":
      return {
        reduceOptions: { calcs: ["lastNotNull"], fields: "", values: false },
        orientation: "auto",
        textMode: "auto",
        colorMode: spec.thresholds ? "background" : "value",
        graphMode: "area",
        justifyMode: "auto",
        wideLayout: true,
        showPercentChange: false,
        percentChangeColorMode: "standard",
      };
    case "table":
      return { showHeader: true, frameIndex: 0, cellHeight: "sm" };
  }
}

function fieldConfig(spec: PanelSpec): FieldConfigSource {
  const custom =
    spec.type === "timeseries"
      ? {
          drawStyle: "line",
          lineWidth: 1,
          fillOpacity: spec.stack ? 30 : 10,
          showPoints: "never",
          spanNulls: false,
          stacking: { mode: spec.stack ? "normal" : "none", group: "A" },
        }
      : spec.type === "table"
        ? { align: "auto", inspect: false, cellOptions: { type: "auto" } }
        : undefined;
  return {
    defaults: {
      ...(spec.unit ? { unit: spec.unit } : {}),
      ...(spec.min !== undefined ? { min: spec.min } : {}),
      ...(spec.max !== undefined ? { max: spec.max } : {}),
      color: { mode: spec.thresholds ? "thresholds" : "palette-classic" },
      ...(spec.thresholds
        ? {
            thresholds: {
              mode: "absolute" as const,
              steps: [
                { color: spec.thresholds.base, value: null },
                ...spec.thresholds.steps.map(([color, value]) => ({ color, value })),
              ],
            },
          }
        : {}),
      ...(custom ? { custom } : {}),
    },
    overrides: [],
  };
}

/** Lays sections out on Grafana's 24-column grid: a row header, then panels left to right. */
function layout(sections: readonly Section[]): (Panel | RowPanel)[] {
  const out: (Panel | RowPanel)[] = [];
  let id = 1;
  let y = 0;
  for (const section of sections) {
    if (section.panels.length === 0) continue;
    out.push({
      id: id++,
      type: "row",
      title: section.row,
      collapsed: false,
      gridPos: { h: 1, w: 24, x: 0, y },
      panels: [],
    });
    y += 1;
    let x = 0;
    let rowHeight = 0;
    for (const spec of section.panels) {
      const w = spec.w ?? 12;
      const h = spec.h ?? 8;
      if (x + w > 24) {
        x = 0;
        y += rowHeight;
        rowHeight = 0;
      }
      const table = spec.type === "table";
      out.push({
        id: id++,
        type: spec.type,
        title: spec.title,
        ...(spec.description ? { description: spec.description } : {}),
        gridPos: { h, w, x, y },
        datasource: DS,
        targets: spec.queries.map((q, i) => target(q, i, table)),
        fieldConfig: fieldConfig(spec),
        options: panelOptions(spec),
        ...(table
          ? {
              transformations: [
                { id: "merge", options: {} },
                {
                  id: "organize",
                  options: {
                    excludeByName: { Time: true },
                    renameByName: Object.fromEntries(
                      (spec.columns ?? []).map((c, i) => [`Value #${REF_IDS[i]}`, c]),
                    ),
                  },
                },
              ],
            }
          : {}),
      });
      x += w;
      rowHeight = Math.max(rowHeight, h);
    }
    y += rowHeight;
  }
  return out;
}

/** A uid of at most 40 characters: readable when it fits, else a stable hash. */
function uid(name: string): string {
  return name.length <= 40
    ? name
    : `meshgate-${createHash("sha256").update(name).digest("hex").slice(0, 16)}`;
}

function dashboard(
  infra: InfraIR,
  key: string,
  title: string,
  description: string,
  sections: readonly Section[],
): Dashboard {
  const ns = infra.namespace;
  return {
    uid: uid(`meshgate-${ns}-${key}`),
    title,
    description,
    tags: ["meshgate", ns],
    timezone: "browser",
    editable: true,
    graphTooltip: 1,
    time: { from: "now-6h", to: "now" },
    refresh: "30s",
    schemaVersion: GRAFANA_SCHEMA_VERSION,
    version: 1,
    links: [
      {
        title: `meshgate ${ns}`,
        type: "dashboards",
        icon: "external link",
        tooltip: "",
        tags: ["meshgate", ns],
        asDropdown: true,
        targetBlank: false,
        includeVars: true,
        keepTime: true,
      },
    ],
    annotations: {
      list: [
        {
          builtIn: 1,
          datasource: { type: "grafana", uid: "-- Grafana --" },
          enable: true,
          hide: true,
          iconColor: "rgba(0, 211, 255, 1)",
          name: "Annotations & Alerts",
          type: "dashboard",
        },
      ],
    },
    templating: {
      list: [
        {
          type: "datasource",
          name: "datasource",
          label: "Prometheus",
          query: "prometheus",
          current: { text: "Prometheus (meshgate)", value: PROMETHEUS_DATASOURCE_UID },
          hide: 0,
          refresh: 1,
          regex: "",
          includeAll: false,
          multi: false,
          options: [],
          skipUrlSync: false,
        },
      ],
    },
    panels: layout(sections),
  };
}

// ───────────────────────────── queries ─────────────────────────────

const RATE = "$__rate_interval";

/** `sum by (labels) (rate(metric{…}[$__rate_interval]))`. */
function rateBy(by: string, metric: string, m: Record<string, MatcherValue>): string {
  return `sum by (${by}) (rate(${selector(metric, m)}[${RATE}]))`;
}

function quantile(q: string, by: string, m: Record<string, MatcherValue>): string {
  const g = by ? `${by}, le` : "le";
  return `histogram_quantile(${q}, sum by (${g}) (rate(${selector("meshgate_request_duration_seconds_bucket", m)}[${RATE}])))`;
}

const GOOD_RATIO = {
  base: "red",
  steps: [
    ["orange", 0],
    ["yellow", 0.25],
    ["green", 0.5],
  ] as const,
};

function sloPanels(ns: string, inds: readonly Indicator[]): PanelSpec[] {
  const panels: PanelSpec[] = inds.map((ind) => ({
    type: "stat",
    title: `Budget left: ${ind.slo.name} (${ind.sli})`,
    description:
      `${sloSubject(ind.slo)}: ${ind.sli === "availability" ? `availability ${ind.slo.availability}%` : `99% within ${formatLatency(ind.slo.latencyP99Ms!)}`}` +
      ` over ${formatWindow(ind.slo.windowMs)}. The share of the error budget not yet spent in the window (negative: overspent).`,
    queries: [
      {
        expr: selector(RECORDS.sloBudgetRemaining, { namespace: ns, slo: ind.slo.name, sli: ind.sli }),
        legend: `${ind.slo.name} ${ind.sli}`,
      },
    ],
    unit: "percentunit",
    w: 6,
    h: 5,
    thresholds: GOOD_RATIO,
  }));
  if (inds.length > 0)
    panels.push({
      type: "timeseries",
      title: "Burn rate (5m) by SLO",
      description:
        "The error ratio over 5 minutes divided by the error budget: 1 spends the budget exactly over the SLO window; the pages fire at 14.4× (1h) and 6× (6h) for a 30-day SLO.",
      queries: [
        {
          expr: `(${selector(RECORDS.sloErrors, { namespace: ns })} / ${selector(RECORDS.sloRequests, { namespace: ns })}) / on (namespace, slo, sli) ${selector(RECORDS.sloBudget, { namespace: ns })}`,
          legend: "{{slo}} {{sli}}",
        },
      ],
      unit: "x",
      w: 24,
    });
  return panels;
}

function overview(infra: InfraIR): Dashboard {
  const ns = infra.namespace;
  const on = { namespace: ns };
  const gw = { namespace: ns, proxy: "gateway" };
  const hasGateway = infra.workloads.some((w) => w.kind === "gateway");
  const routeRate = selector(RECORDS.routeRequests, on);
  const sections: Section[] = [];
  if (hasGateway)
    sections.push({
      row: "Edge (gateway)",
      panels: [
        {
          type: "stat",
          title: "Requests",
          queries: [{ expr: `sum(${routeRate})` }],
          unit: "reqps",
          w: 6,
          h: 4,
        },
        {
          type: "stat",
          title: "5xx ratio",
          queries: [
            {
              expr: `sum(${selector(RECORDS.routeRequests, { ...on, code_class: "5xx" })}) / sum(${routeRate})`,
            },
          ],
          unit: "percentunit",
          w: 6,
          h: 4,
        },
        {
          type: "stat",
          title: "p99 latency",
          queries: [{ expr: quantile("0.99", "", gw) }],
          unit: "s",
          w: 6,
          h: 4,
        },
        {
          type: "stat",
          title: "Rate-limited",
          queries: [{ expr: `sum(rate(${selector("meshgate_ratelimit_limited_total", on)}[${RATE}]))` }],
          unit: "reqps",
          w: 6,
          h: 4,
        },
        {
          type: "timeseries",
          title: "Requests by status class",
          queries: [{ expr: `sum by (code_class) (${routeRate})`, legend: "{{code_class}}" }],
          unit: "reqps",
          stack: true,
        },
        {
          type: "timeseries",
          title: "Latency",
          queries: ["0.5", "0.9", "0.99"].map((q) => ({
            expr: quantile(q, "", gw),
            legend: `p${Number(q) * 100}`,
          })),
          unit: "s",
        },
        {
          type: "timeseries",
          title: "Top 10 routes by requests",
          queries: [{ expr: `topk(10, sum by (route) (${routeRate}))`, legend: "{{route}}" }],
          unit: "reqps",
        },
        {
          type: "timeseries",
          title: "Top 10 routes by 5xx ratio",
          queries: [{ expr: `topk(10, ${selector(RECORDS.routeErrors, on)})`, legend: "{{route}}" }],
          unit: "percentunit",
        },
        {
          type: "table",
          title: "Routes",
          description: "Request rate, 5xx ratio and p99 latency per route over the last 5 minutes.",
          queries: [
            { expr: `sum by (route) (${routeRate})`, instant: true },
            { expr: `sum by (route) (${selector(RECORDS.routeErrors, on)})`, instant: true },
            {
              expr: `sum by (route) (${selector(RECORDS.routeLatency, { ...on, quantile: "0.99" })})`,
              instant: true,
            },
          ],
          columns: ["req/s", "5xx ratio", "p99 (s)"],
          w: 24,
          h: 9,
        },
      ],
    });
  sections.push({ row: "SLOs", panels: sloPanels(ns, indicators(infra)) });
  const svcRate = selector(RECORDS.serviceRequests, on);
  sections.push({
    row: "Mesh",
    panels: [
      {
        type: "timeseries",
        title: "Inbound requests by service",
        queries: [{ expr: `sum by (service) (${svcRate})`, legend: "{{service}}" }],
        unit: "reqps",
        w: 8,
      },
      {
        type: "timeseries",
        title: "Inbound 5xx ratio by service",
        queries: [{ expr: selector(RECORDS.serviceErrors, on), legend: "{{service}}" }],
        unit: "percentunit",
        w: 8,
      },
      {
        type: "timeseries",
        title: "Inbound p99 latency by service",
        queries: [
          { expr: selector(RECORDS.serviceLatency, { ...on, quantile: "0.99" }), legend: "{{service}}" },
        ],
        unit: "s",
        w: 8,
      },
      {
        type: "table",
        title: "Edges (caller → callee)",
        description: "Requests between services as the caller's sidecar sees them.",
        queries: [
          { expr: `sum by (service, peer) (${selector(RECORDS.edgeRequests, on)})`, instant: true },
          { expr: `sum by (service, peer) (${selector(RECORDS.edgeErrors, on)})`, instant: true },
          {
            expr: `sum by (service, peer) (${selector(RECORDS.edgeLatency, { ...on, quantile: "0.99" })})`,
            instant: true,
          },
        ],
        columns: ["req/s", "5xx ratio", "p99 (s)"],
        w: 16,
        h: 9,
      },
      {
        type: "stat",
        title: "Proxies up",
        queries: [
          { expr: `sum(${selector("up", { ...on, proxy: { re: "gateway|sidecar" } })})`, legend: "up" },
          {
            expr: `count(${selector("up", { ...on, proxy: { re: "gateway|sidecar" } })} == 0) or vector(0)`,
            legend: "down",
          },
        ],
        w: 8,
        h: 9,
      },
    ],
  });
  return dashboard(
    infra,
    "overview",
    `meshgate ${ns}: overview`,
    `The ${ns} mesh: the edge's requests, errors and latency, its SLOs, and every service's inbound traffic.`,
    sections,
  );
}

function gatewayDashboard(infra: InfraIR): Dashboard {
  const ns = infra.namespace;
  const on = { namespace: ns };
  const gw = { namespace: ns, proxy: "gateway" };
  const routeRate = selector(RECORDS.routeRequests, on);
  const sections: Section[] = [
    {
      row: "Routes",
      panels: [
        {
          type: "timeseries",
          title: "Requests by route",
          queries: [{ expr: `sum by (route) (${routeRate})`, legend: "{{route}}" }],
          unit: "reqps",
        },
        {
          type: "timeseries",
          title: "5xx ratio by route",
          queries: [{ expr: selector(RECORDS.routeErrors, on), legend: "{{route}}" }],
          unit: "percentunit",
        },
        {
          type: "timeseries",
          title: "p99 latency by route",
          queries: [
            { expr: selector(RECORDS.routeLatency, { ...on, quantile: "0.99" }), legend: "{{route}}" },
          ],
          unit: "s",
        },
        {
          type: "timeseries",
          title: "Errors the gateway answered itself",
          queries: [{ expr: rateBy("code", "meshgate_gateway_errors_total", gw), legend: "{{code}}" }],
          unit: "reqps",
        },
      ],
    },
    {
      row: "Authentication, authorization, rate limits",
      panels: [
        {
          type: "timeseries",
          title: "Authentication by mechanism and result",
          queries: [
            {
              expr: rateBy("mechanism, result", "meshgate_authn_total", gw),
              legend: "{{mechanism}} {{result}}",
            },
          ],
          unit: "reqps",
          w: 8,
        },
        {
          type: "timeseries",
          title: "Denied by route and reason",
          queries: [
            {
              expr: rateBy("route, reason", "meshgate_authz_denied_total", gw),
              legend: "{{route}} {{reason}}",
            },
          ],
          unit: "reqps",
          w: 8,
        },
        {
          type: "timeseries",
          title: "Rate-limited by route",
          queries: [{ expr: rateBy("route", "meshgate_ratelimit_limited_total", gw), legend: "{{route}}" }],
          unit: "reqps",
          w: 8,
        },
        {
          type: "timeseries",
          title: "Rate-limit store errors and fail-open admissions",
          queries: [
            {
              expr: rateBy("reason, mode", "meshgate_ratelimit_store_errors_total", gw),
              legend: "store error {{reason}} ({{mode}})",
            },
            {
              expr: rateBy("route", "meshgate_ratelimit_fail_open_total", gw),
              legend: "fail-open {{route}}",
            },
          ],
          unit: "reqps",
        },
        {
          type: "timeseries",
          title: "JWKS fetches",
          queries: [
            {
              expr: rateBy("provider, outcome", "meshgate_jwks_fetches_total", gw),
              legend: "{{provider}} {{outcome}}",
            },
          ],
          unit: "reqps",
        },
      ],
    },
    {
      row: "Cache",
      panels: [
        {
          type: "timeseries",
          title: "Cache results by route",
          w: 12,
          queries: [
            {
              expr: rateBy("route, result", "meshgate_cache_requests_total", gw),
              legend: "{{route}} {{result}}",
            },
          ],
          unit: "reqps",
        },
        {
          type: "timeseries",
          title: "Cache size",
          queries: [{ expr: `sum(${selector("meshgate_cache_stored_bytes", gw)})`, legend: "bytes" }],
          unit: "bytes",
          w: 8,
        },
        {
          type: "stat",
          title: "Cache store available",
          description: "1 while every replica's cache store answers; 0 during a Redis outage (lookups miss).",
          queries: [{ expr: `min(${selector("meshgate_cache_store_available", gw)})` }],
          w: 4,
          thresholds: { base: "red", steps: [["green", 1]] },
        },
        {
          type: "timeseries",
          title: "Redis local layer hit ratio",
          description:
            "Share of cache store lookups answered in the gateway process without a round trip to Redis (the Redis store's local layer; empty with the memory store or localSize 0B).",
          queries: [
            {
              expr: `sum(rate(${selector("meshgate_cache_local_lookups_total", { ...gw, result: "hit" })}[${RATE}])) / sum(rate(${selector("meshgate_cache_local_lookups_total", gw)}[${RATE}]))`,
              legend: "hit ratio",
            },
          ],
          unit: "percentunit",
          w: 12,
        },
      ],
    },
    ...upstreamSections(gw),
    ...proxySections(gw),
  ];
  return dashboard(
    infra,
    "gateway",
    `meshgate ${ns}: gateway`,
    `The ${ns} edge gateway: routes, authentication, rate limits, cache, upstream clusters and the proxy itself.`,
    sections,
  );
}

/** Upstream clusters as a proxy sees them: attempts, retries, the budget, ejections, overflow. */
function upstreamSections(m: Record<string, MatcherValue>): Section[] {
  return [
    {
      row: "Upstream clusters",
      panels: [
        {
          type: "timeseries",
          title: "Upstream attempts by cluster and outcome",
          queries: [
            {
              expr: rateBy("cluster, outcome", "meshgate_upstream_requests_total", m),
              legend: "{{cluster}} {{outcome}}",
            },
          ],
          unit: "reqps",
        },
        {
          type: "timeseries",
          title: "Retries by cluster and reason",
          queries: [
            {
              expr: rateBy("cluster, reason", "meshgate_retries_total", m),
              legend: "{{cluster}} {{reason}}",
            },
          ],
          unit: "reqps",
        },
        {
          type: "timeseries",
          title: "Retries refused by the budget",
          queries: [
            { expr: rateBy("cluster", "meshgate_retry_budget_exhausted_total", m), legend: "{{cluster}}" },
          ],
          unit: "reqps",
          w: 8,
        },
        {
          type: "timeseries",
          title: "Outlier ejections",
          queries: [
            {
              expr: `sum by (cluster) (increase(${selector("meshgate_upstream_ejections_total", m)}[${RATE}]))`,
              legend: "{{cluster}}",
            },
          ],
          unit: "short",
          w: 8,
        },
        {
          type: "timeseries",
          title: "Circuit breaker refusals",
          queries: [
            { expr: rateBy("cluster", "meshgate_upstream_overflow_total", m), legend: "{{cluster}}" },
          ],
          unit: "reqps",
          w: 8,
        },
      ],
    },
  ];
}

/** The proxy itself: certificate, reloads, in flight, memory, CPU, dropped spans, event-loop delay, GC. */
function proxySections(m: Record<string, MatcherValue>): Section[] {
  return [
    {
      row: "Proxy",
      panels: [
        {
          type: "stat",
          title: "Certificate expires in",
          description: "The serving SVID's remaining lifetime (lowest replica).",
          // Exactly 0 is an identity the proxy replaced (its series stays at 0, as the alerts know): left
          // in, the panel showed 0 — expired, red — for as long as the proxy ran after the change.
          queries: [{ expr: `min(${selector("meshgate_cert_expiry_seconds", m)} != 0)` }],
          unit: "s",
          w: 6,
          h: 5,
          thresholds: {
            base: "red",
            steps: [
              ["orange", 3600],
              ["green", 4 * 3600],
            ],
          },
        },
        {
          type: "stat",
          title: "Config reload failures (1h)",
          queries: [
            {
              expr: `sum(increase(${selector("meshgate_config_reloads_total", { ...m, result: "failure" })}[1h])) or vector(0)`,
            },
          ],
          w: 6,
          h: 5,
          thresholds: { base: "green", steps: [["red", 1]] },
        },
        {
          type: "timeseries",
          title: "Requests in flight",
          queries: [
            {
              expr: `sum by (instance) (${selector("meshgate_requests_in_flight", m)})`,
              legend: "{{instance}}",
            },
          ],
          w: 12,
          h: 5,
        },
        {
          type: "timeseries",
          title: "Resident memory",
          queries: [
            {
              expr: `sum by (instance) (${selector("meshgate_process_resident_memory_bytes", m)})`,
              legend: "{{instance}}",
            },
          ],
          unit: "bytes",
          w: 8,
        },
        {
          type: "timeseries",
          title: "CPU",
          queries: [
            { expr: rateBy("instance", "meshgate_process_cpu_seconds_total", m), legend: "{{instance}}" },
          ],
          unit: "percentunit",
          w: 8,
        },
        {
          type: "timeseries",
          title: "Telemetry dropped",
          queries: [
            { expr: rateBy("reason", "meshgate_trace_spans_dropped_total", m), legend: "spans: {{reason}}" },
            { expr: rateBy("proxy", "meshgate_access_log_dropped_total", m), legend: "access lines" },
          ],
          unit: "short",
          w: 8,
        },
        {
          type: "timeseries",
          title: "Event loop delay (p99)",
          queries: [
            {
              expr: `histogram_quantile(0.99, sum by (instance, le) (rate(${selector("meshgate_event_loop_delay_seconds_bucket", m)}[${RATE}])))`,
              legend: "{{instance}}",
            },
          ],
          unit: "s",
          w: 12,
        },
        {
          type: "timeseries",
          title: "Time in garbage collection",
          queries: [
            {
              expr: rateBy("instance, kind", "meshgate_gc_duration_seconds_sum", m),
              legend: "{{instance}} {{kind}}",
            },
          ],
          unit: "percentunit",
          w: 12,
        },
      ],
    },
  ];
}

function serviceDashboard(infra: InfraIR, svc: ServiceWorkloadIR): Dashboard {
  const ns = infra.namespace;
  const me = { namespace: ns, proxy: "sidecar", service: svc.name };
  const inbound = { ...me, direction: "inbound" };
  const callers = infra.edges.filter((e) => e.to === svc.name && e.allowed).map((e) => e.from);
  const callees = infra.edges.filter((e) => e.from === svc.name && e.declared).map((e) => e.to);
  const edges = { namespace: ns, service: svc.name };
  const inds = indicators(infra).filter((i) => i.slo.kind === "service" && i.slo.target === svc.name);
  const sections: Section[] = [
    {
      row: "Inbound",
      panels: [
        {
          type: "stat",
          title: "Requests",
          queries: [
            { expr: `sum(${selector(RECORDS.serviceRequests, { namespace: ns, service: svc.name })})` },
          ],
          unit: "reqps",
          w: 6,
          h: 4,
        },
        {
          type: "stat",
          title: "5xx ratio",
          queries: [
            { expr: `sum(${selector(RECORDS.serviceErrors, { namespace: ns, service: svc.name })})` },
          ],
          unit: "percentunit",
          w: 6,
          h: 4,
        },
        {
          type: "stat",
          title: "p99 latency",
          queries: [
            {
              expr: `sum(${selector(RECORDS.serviceLatency, { namespace: ns, service: svc.name, quantile: "0.99" })})`,
            },
          ],
          unit: "s",
          w: 6,
          h: 4,
        },
        {
          type: "stat",
          title: "Replicas up",
          queries: [{ expr: `sum(${selector("up", me)})` }],
          w: 6,
          h: 4,
        },
        {
          type: "timeseries",
          title: "Inbound requests by caller",
          description: `Callers allowed by the spec: ${callers.join(", ") || "none"}. A caller is its SPIFFE ID when an allow rule names it, else "other".`,
          queries: [{ expr: rateBy("peer", "meshgate_requests_total", inbound), legend: "{{peer}}" }],
          unit: "reqps",
        },
        {
          type: "timeseries",
          title: "Inbound requests by status class",
          queries: [
            {
              expr: `sum by (code_class) (${selector(RECORDS.serviceRequests, { namespace: ns, service: svc.name })})`,
              legend: "{{code_class}}",
            },
          ],
          unit: "reqps",
          stack: true,
        },
        {
          type: "timeseries",
          title: "Inbound latency",
          queries: ["0.5", "0.99"].map((q) => ({
            expr: quantile(q, "", inbound),
            legend: `p${Number(q) * 100}`,
          })),
          unit: "s",
        },
        {
          type: "timeseries",
          title: "Errors the sidecar answered itself",
          queries: [
            {
              expr: rateBy("direction, code", "meshgate_sidecar_errors_total", me),
              legend: "{{direction}} {{code}}",
            },
          ],
          unit: "reqps",
        },
      ],
    },
    {
      row: "Outbound edges",
      panels: [
        {
          type: "timeseries",
          title: "Requests by callee",
          description: `Declared calls: ${callees.join(", ") || "none"}.`,
          queries: [{ expr: `sum by (peer) (${selector(RECORDS.edgeRequests, edges)})`, legend: "{{peer}}" }],
          unit: "reqps",
          w: 8,
        },
        {
          type: "timeseries",
          title: "5xx ratio by callee",
          queries: [{ expr: selector(RECORDS.edgeErrors, edges), legend: "{{peer}}" }],
          unit: "percentunit",
          w: 8,
        },
        {
          type: "timeseries",
          title: "p99 latency by callee",
          queries: [
            { expr: selector(RECORDS.edgeLatency, { ...edges, quantile: "0.99" }), legend: "{{peer}}" },
          ],
          unit: "s",
          w: 8,
        },
      ],
    },
    ...upstreamSections(me),
    {
      row: "Security",
      panels: [
        {
          type: "timeseries",
          title: "Denied by caller and reason",
          queries: [
            {
              expr: rateBy("peer, reason", "meshgate_authz_denied_total", me),
              legend: "{{peer}} {{reason}}",
            },
          ],
          unit: "reqps",
        },
        {
          type: "timeseries",
          title: "mTLS handshakes",
          queries: [
            {
              expr: `sum(rate(${selector("meshgate_tls_handshakes_total", me)}[${RATE}]))`,
              legend: "accepted",
            },
            {
              expr: `sum(rate(${selector("meshgate_tls_resumptions_total", me)}[${RATE}]))`,
              legend: "of them resumed",
            },
            {
              expr: rateBy("reason", "meshgate_tls_handshake_failures_total", me),
              legend: "refused {{reason}}",
            },
            {
              expr: rateBy("reason", "meshgate_tls_connections_retired_total", me),
              legend: "connections retired {{reason}}",
            },
          ],
          unit: "short",
        },
        {
          type: "timeseries",
          title: "Identity file loads",
          queries: [{ expr: rateBy("result", "meshgate_identity_reloads_total", me), legend: "{{result}}" }],
          unit: "short",
        },
      ],
    },
    { row: "SLOs", panels: sloPanels(ns, inds).filter((p) => p.type === "stat") },
    ...proxySections(me),
  ];
  return dashboard(
    infra,
    `service-${svc.name}`,
    `meshgate ${ns}: ${svc.name}`,
    `Service ${svc.name} of the ${ns} mesh, as its sidecars see it: inbound traffic, calls to other services, resilience, security.`,
    sections,
  );
}

export interface GeneratedDashboard {
  /** File name: `<uid>.json`. */
  readonly file: string;
  readonly dashboard: Dashboard;
}

/** Every dashboard of a mesh: the overview, the gateway's (when there is one), one per service. Pure. */
export function grafanaDashboards(infra: InfraIR): GeneratedDashboard[] {
  const out = [overview(infra)];
  if (infra.workloads.some((w) => w.kind === "gateway")) out.push(gatewayDashboard(infra));
  for (const w of infra.workloads) if (w.kind === "service") out.push(serviceDashboard(infra, w));
  return out.map((dashboard) => ({ file: `${dashboard.uid}.json`, dashboard }));
}

// ───────────────────────────── provisioning ─────────────────────────────

export interface GrafanaOptions {
  /** The Prometheus URL Grafana's server reaches. @default "http://prometheus:9090" */
  readonly prometheusUrl?: string;
  /** Tempo's query URL (tracing backend tempo). @default "http://tempo:3200" */
  readonly tempoUrl?: string;
  /** Jaeger's query URL (tracing backend jaeger). @default "http://jaeger-query:16686" */
  readonly jaegerUrl?: string;
  /** Where the dashboard JSON files are mounted in the Grafana container. @default "/var/lib/grafana/dashboards/meshgate-<ns>" */
  readonly dashboardsPath?: string;
}

export interface DatasourceProvisioning {
  readonly apiVersion: 1;
  readonly datasources: readonly {
    readonly name: string;
    readonly uid: string;
    readonly type: "prometheus" | "tempo" | "jaeger";
    readonly access: "proxy";
    readonly url: string;
    readonly isDefault: boolean;
    readonly editable: false;
    readonly jsonData: Readonly<Record<string, unknown>>;
  }[];
}

export interface DashboardProvisioning {
  readonly apiVersion: 1;
  readonly providers: readonly {
    readonly name: string;
    readonly orgId: 1;
    readonly folder: string;
    readonly type: "file";
    readonly disableDeletion: true;
    readonly allowUiUpdates: false;
    readonly updateIntervalSeconds: number;
    readonly options: { readonly path: string; readonly foldersFromFilesStructure: false };
  }[];
}

/** Grafana's datasource provisioning file: Prometheus, and the trace store when tracing is on. Pure. */
export function grafanaDatasources(infra: InfraIR, options: GrafanaOptions = {}): DatasourceProvisioning {
  const o = infra.observability;
  const datasources: DatasourceProvisioning["datasources"][number][] = [
    {
      name: "Prometheus (meshgate)",
      uid: PROMETHEUS_DATASOURCE_UID,
      type: "prometheus",
      access: "proxy",
      url: options.prometheusUrl ?? "http://prometheus:9090",
      isDefault: true,
      editable: false,
      jsonData: { timeInterval: `${o.metrics.scrapeIntervalMs / 1000}s`, httpMethod: "POST" },
    },
  ];
  if (o.tracing.enabled && o.tracing.backend === "tempo")
    datasources.push({
      name: "Tempo (meshgate)",
      uid: "meshgate-tempo",
      type: "tempo",
      access: "proxy",
      url: options.tempoUrl ?? "http://tempo:3200",
      isDefault: false,
      editable: false,
      jsonData: { nodeGraph: { enabled: true }, serviceMap: { datasourceUid: PROMETHEUS_DATASOURCE_UID } },
    });
  if (o.tracing.enabled && o.tracing.backend === "jaeger")
    datasources.push({
      name: "Jaeger (meshgate)",
      uid: "meshgate-jaeger",
      type: "jaeger",
      access: "proxy",
      url: options.jaegerUrl ?? "http://jaeger-query:16686",
      isDefault: false,
      editable: false,
      jsonData: {},
    });
  return { apiVersion: 1, datasources };
}

/** Grafana's dashboard provider file: the generated dashboards from one folder, read-only. Pure. */
export function grafanaDashboardProvider(
  infra: InfraIR,
  options: GrafanaOptions = {},
): DashboardProvisioning {
  const ns = infra.namespace;
  return {
    apiVersion: 1,
    providers: [
      {
        name: `meshgate-${ns}`,
        orgId: 1,
        folder: `meshgate ${ns}`,
        type: "file",
        disableDeletion: true,
        allowUiUpdates: false,
        updateIntervalSeconds: 30,
        options: {
          path: options.dashboardsPath ?? `/var/lib/grafana/dashboards/meshgate-${ns}`,
          foldersFromFilesStructure: false,
        },
      },
    ],
  };
}
