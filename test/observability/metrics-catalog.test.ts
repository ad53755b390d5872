/**
 * The conventions' metric catalog against what the proxies really expose, and every generated query
 * against the catalog:
 *
 * - a real `meshgate gateway --workers 2` process (primary and workers, real sockets), driven through
 *   routes that rate-limit, refuse a missing API key, cache, retry and eject, exposes on /metrics exactly
 *   the catalog's gateway families, with their types and label names;
 * - every metric the runtime's source registers is in the catalog; the sidecar's registrations are
 *   compared with the catalog as soon as the sidecar is in the tree (runtime/sidecar/);
 * - every selector in every generated rule and dashboard names a catalog series, a recording rule or
 *   `up`/`ALERTS`, with label matchers the series can carry (for the proxy the selector names).
 */
import { existsSync, readdirSync, readFileSync, statSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  grafanaDashboards,
  METRICS,
  METRIC_PREFIX,
  metricConvention,
  prometheusRules,
  readExpression,
  TARGET_LABELS,
  type Dashboard,
  type ProxyKind,
  type RecordingRule,
} from "../../components/observability/index.ts";
import { apiKeyHash } from "../../runtime/auth/index.ts";
import { generateSpec } from "../../testing/index.ts";
import { gatewayConfig, request, startUpstream, type Upstream } from "../support/gateway.ts";
import { infraOf, ROOT, shopInfra, startGatewayProcess, type GatewayProcess } from "./support.ts";

// ───────────────────────────── the exposition ─────────────────────────────

interface Exposition {
  types: Map<string, string>;
  /** Label names seen per family (`worker`, added by the primary's merge, left out). */
  labels: Map<string, Set<string>>;
}

function parseExposition(text: string): Exposition {
  const types = new Map<string, string>();
  const labels = new Map<string, Set<string>>();
  for (const line of text.split("\n")) {
    const t = /^# TYPE (\S+) (\S+)$/.exec(line);
    if (t) {
      types.set(t[1]!, t[2]!);
      continue;
    }
    if (line === "" || line.startsWith("#")) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? /.exec(line);
    if (!m) throw new Error(`unparsable sample line: ${line}`);
    const family = types.has(m[1]!) ? m[1]! : m[1]!.replace(/_(bucket|sum|count)$/, "");
    const names = [...(m[2] ?? "").matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="(?:[^"\\]|\\.)*"/g)].map((x) => x[1]!);
    labels.set(family, new Set(names.filter((n) => n !== "worker" && n !== "le")));
  }
  return { types, labels };
}

// ───────────────────────────── a real gateway ─────────────────────────────

const API_KEY = "catalog-test-key-0123456789abcdef";
let dir: string;
let gateway: GatewayProcess | null = null;
let app: Upstream;
let broken: Upstream;
let exposition: Exposition;
let metricsText: string;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "meshgate-catalog-"));
  app = await startUpstream((_req, res) => {
    res.writeHead(200, { "content-type": "application/json", "cache-control": "max-age=60" });
    res.end("{}");
  });
  broken = await startUpstream((_req, res) => {
    res.writeHead(503, { "content-type": "text/plain" });
    res.end("down");
  });
  const config = gatewayConfig(
    [
      {
        name: "limited",
        match: { path: "/limited" },
        to: "app",
        public: true,
        rateLimit: { requests: 2, per: "1m" },
      },
      { name: "keyed", match: { path: "/keyed" }, to: "app", auth: { apiKey: true } },
      { name: "cached", match: { path: "/cached" }, to: "app", public: true, cache: { ttl: "30s" } },
      { name: "flaky", match: { path: "/flaky" }, to: "broken", public: true },
    ],
    { app, broken },
    { apiKeys: { consumers: { partner: { keyHashes: [apiKeyHash(API_KEY)] } } } },
  );
  gateway = await startGatewayProcess(config, dir, 2);
  const url = gateway.url;
  for (let i = 0; i < 4; i++) await request(`${url}/limited`);
  await request(`${url}/keyed`);
  await request(`${url}/keyed`, { headers: { "x-api-key": API_KEY } });
  for (let i = 0; i < 3; i++) await request(`${url}/cached`);
  for (let i = 0; i < 8; i++) await request(`${url}/flaky`);
  await request(`${url}/nowhere`);
  const metrics = await request(`http://127.0.0.1:${gateway.admin}/metrics`);
  expect(metrics.status).toBe(200);
  metricsText = metrics.body;
  exposition = parseExposition(metrics.body);
}, 60_000);

afterAll(async () => {
  await gateway?.stop();
  await app?.close();
  await broken?.close();
  await rm(dir, { recursive: true, force: true });
});

/** The catalog's families a proxy kind registers in this setup (conditional ones per `only`). */
function expected(proxy: ProxyKind, skip: (only: string) => boolean) {
  return METRICS.filter((m) => m.labels[proxy] !== undefined && !(m.only?.[proxy] && skip(m.only[proxy]!)));
}

describe("the catalog against a running gateway", () => {
  it("lists_exactly_the_families_a_multi_worker_gateway_exposes", () => {
    // The gateway here has no mesh identity (svid), so identity metrics are not registered.
    const mine = expected("gateway", (only) => only.includes("mesh identity"));
    const exposed = [...exposition.types.keys()].filter((n) => n.startsWith(METRIC_PREFIX)).sort();
    expect(exposed).toEqual(mine.map((m) => m.name).sort());
    for (const m of mine) expect(exposition.types.get(m.name), m.name).toBe(m.type);
  });

  it("exposes_the_reload_failure_series_at_0_before_any_reload_failed", () => {
    // The reload alert is `increase(…{result="failure"}[15m]) > 0`: a series that first appeared at 1 would
    // hide a process's first failure. The primary and each worker create it at 0.
    const failures = metricsText.match(
      /^meshgate_config_reloads_total\{(?:worker="\d+",)?proxy="gateway",result="failure"\} \S+$/gm,
    );
    expect(failures?.sort()).toEqual([
      'meshgate_config_reloads_total{proxy="gateway",result="failure"} 0',
      'meshgate_config_reloads_total{worker="0",proxy="gateway",result="failure"} 0',
      'meshgate_config_reloads_total{worker="1",proxy="gateway",result="failure"} 0',
    ]);
  });

  it("names_the_labels_of_every_family_with_samples", () => {
    let checked = 0;
    for (const m of expected("gateway", (only) => only.includes("mesh identity"))) {
      const seen = exposition.labels.get(m.name);
      if (!seen) continue;
      checked++;
      expect([...seen].sort(), m.name).toEqual([...m.labels.gateway!].sort());
    }
    // The traffic above gives samples to the request, upstream, retry, ejection, rate-limit, cache and
    // authentication families (and more): the label check is not vacuous.
    for (const name of [
      "meshgate_requests_total",
      "meshgate_request_duration_seconds",
      "meshgate_upstream_requests_total",
      "meshgate_retries_total",
      "meshgate_upstream_ejections_total",
      "meshgate_ratelimit_limited_total",
      "meshgate_cache_requests_total",
      "meshgate_authz_denied_total",
      "meshgate_gateway_errors_total",
      "meshgate_gateway_workers_ready",
    ])
      expect(exposition.labels.has(name), `${name} has samples`).toBe(true);
    expect(checked).toBeGreaterThan(15);
  });
});

// ───────────────────────────── the runtime's source ─────────────────────────────

interface Registration {
  file: string;
  name: string;
  type: string;
  labels: string[] | null;
}

function tsFiles(d: string): string[] {
  return readdirSync(d).flatMap((n) => {
    const p = join(d, n);
    return statSync(p).isDirectory() ? tsFiles(p) : p.endsWith(".ts") ? [p] : [];
  });
}

/** Every `.counter("name", "help", ["labels"])` (gauge, histogram) with a literal name in runtime/. */
function registrations(): Registration[] {
  const out: Registration[] = [];
  for (const file of tsFiles(join(ROOT, "runtime"))) {
    const text = readFileSync(file, "utf8");
    const call =
      /\.(counter|gauge|histogram)\(\s*"([a-z0-9_]+)",\s*("(?:[^"\\]|\\.)*"(?:\s*\+\s*"(?:[^"\\]|\\.)*")*)\s*(?:,\s*\[([^\]]*)\])?/g;
    for (const m of text.matchAll(call)) {
      out.push({
        file: file.slice(ROOT.length),
        name: `${METRIC_PREFIX}${m[2]}`,
        type: m[1]!,
        labels: m[4] === undefined ? [] : [...m[4].matchAll(/"([a-z_]+)"/g)].map((x) => x[1]!),
      });
    }
  }
  // The doc comment's example in telemetry/metrics.ts is not a registration.
  return out.filter(
    (r) => !(r.file.endsWith("telemetry/metrics.ts") && r.name === "meshgate_requests_total"),
  );
}

const SIDECAR = existsSync(join(ROOT, "runtime/sidecar/server.ts"));

describe("the catalog against the runtime's source", () => {
  it("documents_every_metric_the_runtime_registers", () => {
    const regs = registrations();
    expect(regs.length).toBeGreaterThan(30);
    for (const r of regs) {
      const m = METRICS.find((x) => x.name === r.name);
      expect(m, `${r.name} (${r.file}) is not in the conventions' catalog`).toBeDefined();
      expect(m!.type, r.name).toBe(r.type);
    }
  });

  it("finds_every_family_the_running_gateway_exposes_in_the_source", () => {
    // The source scan above is checked against the honest source for the gateway.
    const names = new Set(registrations().map((r) => r.name));
    for (const family of exposition.types.keys())
      if (family.startsWith(METRIC_PREFIX)) expect(names).toContain(family);
  });

  it.skipIf(!SIDECAR)("matches_the_sidecars_registrations_with_the_catalog", () => {
    const regs = registrations().filter(
      (r) =>
        r.file.startsWith("runtime/sidecar/") ||
        r.file.endsWith("telemetry/identity.ts") ||
        r.file.endsWith("telemetry/client-cert.ts"),
    );
    const shared = ["telemetry/metrics.ts"];
    const fromSource = new Set([
      ...regs.map((r) => r.name),
      ...registrations()
        .filter((r) => shared.some((s) => r.file.endsWith(s)))
        .map((r) => r.name),
    ]);
    const mine = METRICS.filter((m) => m.labels.sidecar !== undefined).map((m) => m.name);
    expect([...fromSource].sort()).toEqual([...mine].sort());
    for (const r of regs) {
      const m = METRICS.find((x) => x.name === r.name)!;
      expect(r.labels, r.name).toEqual(m.labels.sidecar);
    }
  });
});

// ───────────────────────────── generated queries ─────────────────────────────

const SYNTHETIC = new Set(["up", "ALERTS"]);

/** The labels a recording rule's output carries: its first `by (…)` list (without `le`) and its rule labels. */
function recordedLabels(rule: RecordingRule): Set<string> {
  const { groupings } = readExpression(rule.expr);
  const by = groupings[0] ?? [];
  return new Set([...by.filter((l) => l !== "le"), ...Object.keys(rule.labels ?? {})]);
}

interface Query {
  where: string;
  expr: string;
}

function queriesOf(infras: Awaited<ReturnType<typeof shopInfra>>[]): {
  queries: Query[];
  records: Map<string, Set<string>>;
} {
  const queries: Query[] = [];
  const records = new Map<string, Set<string>>();
  for (const infra of infras) {
    for (const g of prometheusRules(infra).groups)
      for (const r of g.rules) {
        const where = `rule ${"record" in r ? r.record : r.alert} (${g.name})`;
        queries.push({ where, expr: r.expr });
        if ("record" in r) {
          const labels = recordedLabels(r);
          const prev = records.get(r.record);
          if (prev) for (const l of labels) prev.add(l);
          else records.set(r.record, labels);
        }
      }
    for (const { dashboard } of grafanaDashboards(infra)) queries.push(...panelQueries(dashboard));
  }
  return { queries, records };
}

function panelQueries(d: Dashboard): Query[] {
  return d.panels.flatMap((p) =>
    "targets" in p
      ? p.targets.map((t) => ({
          where: `dashboard ${d.uid}, panel "${p.title}"`,
          expr: t.expr.replaceAll("$__rate_interval", "5m"),
        }))
      : [],
  );
}

/** What is wrong with each selector of these queries (empty when every one names an existing series). */
function problemsOf(queries: readonly Query[], records: ReadonlyMap<string, ReadonlySet<string>>): string[] {
  const problems: string[] = [];
  for (const q of queries) {
    for (const s of readExpression(q.expr).selectors) {
      const convention = metricConvention(s.metric);
      if (convention) {
        const proxy = s.matchers.find((m) => m.label === "proxy" && m.op === "=")?.value as
          ProxyKind | undefined;
        if (proxy && !convention.labels[proxy]) {
          problems.push(`${q.where}: ${s.metric} is not emitted by the ${proxy}`);
          continue;
        }
        const own = proxy ? convention.labels[proxy]! : Object.values(convention.labels).flat();
        const allowed = new Set([...own, ...TARGET_LABELS, ...(s.metric.endsWith("_bucket") ? ["le"] : [])]);
        for (const m of s.matchers)
          if (!allowed.has(m.label))
            problems.push(
              `${q.where}: ${s.metric} has no label ${m.label}${proxy ? ` at the ${proxy}` : ""}`,
            );
        continue;
      }
      const recorded = records.get(s.metric);
      if (recorded) {
        for (const m of s.matchers)
          if (!recorded.has(m.label))
            problems.push(`${q.where}: the recorded ${s.metric} has no label ${m.label}`);
        continue;
      }
      if (SYNTHETIC.has(s.metric)) continue;
      problems.push(`${q.where}: ${s.metric} is neither emitted by a proxy nor recorded`);
    }
  }
  return problems;
}

describe("every generated query", () => {
  it("refers_only_to_series_the_proxies_emit_or_the_rules_record", async () => {
    const infras = [await shopInfra(), infraOf(generateSpec({ services: 12, routes: 20, seed: 5 }))];
    const { queries, records } = queriesOf(infras);
    expect(queries.length).toBeGreaterThan(200);
    expect(problemsOf(queries, records)).toEqual([]);
  });

  it("catches_a_query_on_a_series_nobody_emits", async () => {
    // The check itself can fail: a misspelt metric, a label of the other proxy, a sidecar-only metric at
    // the gateway, a label a recording rule does not keep.
    const { records } = queriesOf([await shopInfra()]);
    const bad = [
      "rate(meshgate_request_total[5m])",
      'meshgate_requests_total{proxy="gateway",direction="inbound"}',
      'meshgate_tls_handshakes_total{proxy="gateway"}',
      'route:meshgate_requests:rate5m{service="orders"}',
    ].map((expr) => ({ where: "test", expr }));
    expect(problemsOf(bad, records)).toEqual([
      "test: meshgate_request_total is neither emitted by a proxy nor recorded",
      "test: meshgate_requests_total has no label direction at the gateway",
      "test: meshgate_tls_handshakes_total is not emitted by the gateway",
      "test: the recorded route:meshgate_requests:rate5m has no label service",
    ]);
  });
});
