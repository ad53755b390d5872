/**
 * The generated Grafana dashboards and provisioning files: strict schema (grafana-schema.ts), a layout
 * that Grafana renders as laid out (no overlaps, inside the 24-column grid), consistent ids and datasource
 * references, and the panels the issue asks for.
 */
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { parse, stringify } from "yaml";
import {
  bundlePaths,
  grafanaDashboardProvider,
  grafanaDashboards,
  grafanaDatasources,
  indicators,
  observabilityFiles,
  PROMETHEUS_DATASOURCE_UID,
  type Dashboard,
  type Panel,
} from "../../components/observability/index.ts";
import type { InfraIR } from "../../components/translate/ir.ts";
import { generateSpec } from "../../testing/index.ts";
import {
  DashboardProvisioningSchema,
  DashboardSchema,
  DatasourceProvisioningSchema,
} from "./grafana-schema.ts";
import { infraOf, promtool, shopInfra, smallSpec } from "./support.ts";

async function meshes(): Promise<{ name: string; infra: InfraIR }[]> {
  return [
    { name: "shop", infra: await shopInfra() },
    { name: "generated", infra: infraOf(generateSpec({ services: 20, routes: 40, seed: 9 })) },
    {
      name: "no-gateway",
      infra: infraOf(
        smallSpec({ gateway: false, observability: { tracing: { backend: "jaeger", enabled: true } } }),
      ),
    },
  ];
}

function overlaps(a: Panel["gridPos"], b: Panel["gridPos"]): boolean {
  return a.x < b.x + b.w && b.x < a.x + a.w && a.y < b.y + b.h && b.y < a.y + a.h;
}

describe("grafana dashboards", () => {
  it("pass_the_strict_dashboard_schema", async () => {
    for (const { name, infra } of await meshes()) {
      for (const { dashboard } of grafanaDashboards(infra)) {
        const r = DashboardSchema.safeParse(JSON.parse(JSON.stringify(dashboard)));
        expect(r.success, `${name} ${dashboard.uid}: ${r.error?.message}`).toBe(true);
      }
    }
  });

  it("the_schema_refuses_what_grafana_would_not_load_as_meant", async () => {
    const [first] = grafanaDashboards(await shopInfra());
    const d = JSON.parse(JSON.stringify(first!.dashboard)) as Record<string, unknown> & {
      panels: Record<string, unknown>[];
    };
    const broken: [string, (x: typeof d) => void][] = [
      ["an unknown top-level key", (x) => (x.style = "dark")],
      ["a panel wider than the grid", (x) => ((x.panels[1]!.gridPos as { w: number }).w = 25)],
      [
        "a misspelt panel option",
        (x) => ((x.panels[1]!.options as Record<string, unknown>).colourMode = "value"),
      ],
      ["a query without expr", (x) => delete (x.panels[1]!.targets as Record<string, unknown>[])[0]!.expr],
      ["an unknown panel type", (x) => (x.panels[1]!.type = "graph")],
    ];
    for (const [what, breakIt] of broken) {
      const copy = structuredClone(d);
      breakIt(copy);
      expect(DashboardSchema.safeParse(copy).success, what).toBe(false);
    }
  });

  it("lay_out_panels_inside_the_grid_without_overlap_and_with_unique_ids", async () => {
    for (const { name, infra } of await meshes()) {
      const uids = new Set<string>();
      for (const { file, dashboard } of grafanaDashboards(infra)) {
        expect(file).toBe(`${dashboard.uid}.json`);
        expect(uids.has(dashboard.uid), `${name}: duplicate uid ${dashboard.uid}`).toBe(false);
        uids.add(dashboard.uid);
        const ids = dashboard.panels.map((p) => p.id);
        expect(new Set(ids).size, `${dashboard.uid}: panel ids`).toBe(ids.length);
        dashboard.panels.forEach((p, i) => {
          expect(p.gridPos.x + p.gridPos.w, `${dashboard.uid} ${p.title}`).toBeLessThanOrEqual(24);
          for (const q of dashboard.panels.slice(i + 1))
            expect(
              overlaps(p.gridPos, q.gridPos),
              `${dashboard.uid}: "${p.title}" overlaps "${q.title}"`,
            ).toBe(false);
        });
      }
    }
  });

  it("query_the_datasource_variable_which_defaults_to_the_provisioned_prometheus", async () => {
    const infra = await shopInfra();
    const provisioned = grafanaDatasources(infra).datasources.find((d) => d.isDefault)!;
    expect(provisioned).toMatchObject({ uid: PROMETHEUS_DATASOURCE_UID, type: "prometheus" });
    for (const { dashboard } of grafanaDashboards(infra)) {
      const variable = dashboard.templating.list.find((v) => v.name === "datasource")!;
      expect(variable).toMatchObject({
        type: "datasource",
        query: "prometheus",
        current: { value: provisioned.uid },
      });
      for (const p of dashboard.panels) {
        if (p.type === "row") continue;
        expect(p.datasource).toEqual({ type: "prometheus", uid: "${datasource}" });
        expect(new Set(p.targets.map((t) => t.refId)).size).toBe(p.targets.length);
        for (const t of p.targets) expect(t.datasource).toEqual(p.datasource);
      }
    }
  });

  it("give_the_overview_edge_red_metrics_top_routes_and_every_slos_budget", async () => {
    const infra = await shopInfra();
    const [overview] = grafanaDashboards(infra).map((d) => d.dashboard);
    const titles = overview!.panels.map((p) => p.title);
    for (const t of [
      "Requests",
      "5xx ratio",
      "p99 latency",
      "Top 10 routes by requests",
      "Routes",
      "Burn rate (5m) by SLO",
    ])
      expect(titles).toContain(t);
    const budgets = overview!.panels.filter((p) => p.title.startsWith("Budget left: "));
    expect(budgets.map((p) => p.title)).toEqual(
      indicators(infra).map((i) => `Budget left: ${i.slo.name} (${i.sli})`),
    );
    expect(budgets).toHaveLength(5);
  });

  it("give_each_service_inbound_outbound_retries_ejections_denies_and_cert_expiry", async () => {
    const infra = await shopInfra();
    const dashboards = grafanaDashboards(infra).map((d) => d.dashboard);
    const services = infra.workloads.filter((w) => w.kind === "service").map((w) => w.name);
    for (const svc of services) {
      const d = dashboards.find((x) => x.uid === `meshgate-shop-service-${svc}`) as Dashboard;
      expect(d, svc).toBeDefined();
      const exprs = d.panels.flatMap((p) => ("targets" in p ? p.targets.map((t) => t.expr) : []));
      for (const needle of [
        'direction="inbound"',
        "edge:meshgate_requests:rate5m",
        "meshgate_retries_total",
        "meshgate_upstream_ejections_total",
        "meshgate_authz_denied_total",
        "meshgate_cert_expiry_seconds",
      ])
        expect(
          exprs.some((e) => e.includes(needle) && e.includes(`service="${svc}"`)),
          `${svc}: ${needle}`,
        ).toBe(true);
    }
    const payments = dashboards.find((x) => x.uid === "meshgate-shop-service-payments")!;
    expect(payments.panels.map((p) => p.title)).toContain(
      "Budget left: payments-availability (availability)",
    );
  });
});

/**
 * Panel queries evaluated by a real Prometheus engine (`promtool test rules`, promql_expr_test) on series
 * shaped as the proxies expose them after scraping: the number a panel shows is the one the claim says.
 */
describe("grafana panels evaluated by promtool", () => {
  const ORDERS = { namespace: "shop", service: "orders", proxy: "sidecar", job: "meshgate-shop-sidecar" };
  const series = (name: string, labels: Record<string, string>) =>
    `${name}{${Object.entries(labels)
      .map(([k, v]) => `${k}="${v}"`)
      .join(",")}}`;
  it.each([
    {
      // A proxy that changed its SPIFFE ID keeps the old identity's series at exactly 0 (the alerts skip
      // it): the panel showed 0 — expired, red — next to a certificate with a day left.
      claim: "certificate_expiry_ignores_the_series_of_a_replaced_identity",
      dashboard: "meshgate-shop-service-orders",
      panel: "Certificate expires in",
      input: [
        {
          series: series("meshgate_cert_expiry_seconds", {
            ...ORDERS,
            instance: "10.0.0.1:15000",
            identity: "spiffe://shop.example/ns/shop/sa/orders-old",
          }),
          values: "0x10",
        },
        {
          series: series("meshgate_cert_expiry_seconds", {
            ...ORDERS,
            instance: "10.0.0.1:15000",
            identity: "spiffe://shop.example/ns/shop/sa/orders",
          }),
          values: "86400x10",
        },
        {
          series: series("meshgate_cert_expiry_seconds", {
            ...ORDERS,
            instance: "10.0.0.2:15000",
            identity: "spiffe://shop.example/ns/shop/sa/orders",
          }),
          values: "7200x10",
        },
      ],
      expected: 7200,
    },
  ])("$claim", async ({ dashboard, panel, input, expected }) => {
    const d = grafanaDashboards(await shopInfra()).find((x) => x.dashboard.uid === dashboard)!.dashboard;
    const p = d.panels.find((x) => x.title === panel) as Panel & { targets: { expr: string }[] };
    expect(p, `${dashboard}: panel ${panel}`).toBeDefined();
    const dir = await mkdtemp(join(tmpdir(), "meshgate-panels-"));
    try {
      const file = join(dir, "panel.test.yml");
      await writeFile(
        file,
        stringify({
          rule_files: [],
          evaluation_interval: "1m",
          tests: [
            {
              interval: "1m",
              input_series: input,
              promql_expr_test: [
                {
                  expr: p.targets[0]!.expr,
                  eval_time: "5m",
                  exp_samples: [{ labels: "{}", value: expected }],
                },
              ],
            },
          ],
        }),
      );
      const r = promtool(["test", "rules", file], dir);
      expect(r.output).toContain("SUCCESS");
      expect(r.status).toBe(0);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe("grafana provisioning", () => {
  it("passes_the_provisioning_schemas", async () => {
    for (const { name, infra } of await meshes()) {
      const bundle = observabilityFiles(infra);
      const p = bundlePaths(infra.namespace);
      const ds = parse(bundle.files.find((f) => f.path === p.datasources)!.content);
      const prov = parse(bundle.files.find((f) => f.path === p.dashboardProvider)!.content);
      expect(DatasourceProvisioningSchema.safeParse(ds).error?.message, name).toBeUndefined();
      expect(DashboardProvisioningSchema.safeParse(prov).error?.message, name).toBeUndefined();
    }
  });

  it("provisions_the_trace_store_of_the_spec", async () => {
    const types = (infra: InfraIR) => grafanaDatasources(infra).datasources.map((d) => d.type);
    expect(types(await shopInfra())).toEqual(["prometheus", "tempo"]);
    expect(types(infraOf(smallSpec({ observability: { tracing: { backend: "jaeger" } } })))).toEqual([
      "prometheus",
      "jaeger",
    ]);
    expect(types(infraOf(smallSpec({ observability: { tracing: { enabled: false } } })))).toEqual([
      "prometheus",
    ]);
  });

  it("takes_urls_and_paths_from_the_options", async () => {
    const infra = await shopInfra();
    expect(grafanaDatasources(infra, { prometheusUrl: "http://127.0.0.1:9090" }).datasources[0]!.url).toBe(
      "http://127.0.0.1:9090",
    );
    expect(grafanaDashboardProvider(infra, { dashboardsPath: "/d" }).providers[0]!.options.path).toBe("/d");
  });
});
