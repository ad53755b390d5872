/**
 * Issue 9's end-to-end check on the local example: the shop on 127.0.0.1 (a real gateway and a real
 * sidecar per service with mTLS, demo apps calling through their sidecars; test/support/shop-mesh.ts), a
 * real Prometheus (/usr/bin/prometheus) with the generated configuration and rules scraping every proxy
 * every second, and an OTLP/HTTP receiver every proxy exports spans to. Through Prometheus' HTTP API:
 * every gateway and sidecar target is up, and the request, retry and deny series carry the conventions'
 * labels with the values the traffic implies. At the receiver: a request through gateway → search →
 * catalog is one trace whose spans chain parent to child across the three workloads.
 */
import { spawn, type ChildProcess } from "node:child_process";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { bundlePaths, observabilityFiles } from "../../components/observability/index.ts";
import { seriesLabels } from "../../components/observability/conventions.ts";
import type { InfraIR } from "../../components/translate/ir.ts";
import { freePort, request } from "../support/gateway.ts";
import { SHOP_HOST, startShopMesh, type ShopMesh } from "../support/shop-mesh.ts";
import { waitFor, writeFiles } from "./support.ts";

interface Span {
  service: string;
  traceId: string;
  spanId: string;
  parentSpanId: string;
  kind: number;
  name: string;
}

const SERVER = 2;
const CLIENT = 3;

/** An OTLP/HTTP JSON receiver on 127.0.0.1 keeping every span with its resource's service.name. */
async function startReceiver(): Promise<{ url: string; spans: Span[]; close(): Promise<void> }> {
  const spans: Span[] = [];
  type Attr = { key: string; value: { stringValue?: string } };
  type Body = {
    resourceSpans: { resource: { attributes: Attr[] }; scopeSpans: { spans: Omit<Span, "service">[] }[] }[];
  };
  const server = http.createServer((req, res) => {
    let body = "";
    req.on("data", (d: Buffer) => (body += d.toString()));
    req.on("end", () => {
      const parsed = JSON.parse(body) as Body;
      for (const rs of parsed.resourceSpans) {
        const service = rs.resource.attributes.find((a) => a.key === "service.name")?.value.stringValue ?? "";
        for (const ss of rs.scopeSpans)
          for (const s of ss.spans)
            spans.push({
              service,
              traceId: s.traceId,
              spanId: s.spanId,
              parentSpanId: s.parentSpanId,
              kind: s.kind,
              name: s.name,
            });
      }
      res.writeHead(200, { "content-type": "application/json" });
      res.end("{}");
    });
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    spans,
    close: () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}

let dir: string;
let receiver: Awaited<ReturnType<typeof startReceiver>>;
let shop: ShopMesh;
let prometheus: ChildProcess | null = null;
let promUrl: string;
let promLog = "";

async function api<T>(path: string): Promise<T> {
  const r = await request(`${promUrl}${path}`);
  const body = JSON.parse(r.body) as { status: string; data: T; error?: string };
  if (body.status !== "success") throw new Error(`${path}: ${body.error}`);
  return body.data;
}
type Series = Record<string, string>[];
const series = (match: string) => api<Series>(`/api/v1/series?match[]=${encodeURIComponent(match)}`);

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "meshgate-local-e2e-"));
  receiver = await startReceiver();
  shop = await startShopMesh({ tracing: { otlpEndpoint: receiver.url } });
  // The shop scrapes every 15 s; the test's Prometheus every second.
  const base = shop.translated.infra;
  const infra: InfraIR = {
    ...base,
    observability: {
      ...base.observability,
      metrics: { ...base.observability.metrics, scrapeIntervalMs: 1000 },
    },
  };
  const bundle = observabilityFiles(infra, {
    scrape: {
      kind: "static",
      addresses: Object.fromEntries(shop.targets.map((t) => [t.workload, [new URL(t.adminUrl).host]])),
    },
  });
  await writeFiles(dir, bundle.files);
  const port = await freePort();
  promUrl = `http://127.0.0.1:${port}`;
  prometheus = spawn(
    "prometheus",
    [
      `--config.file=${join(dir, bundlePaths(infra.namespace).prometheusConfig)}`,
      `--storage.tsdb.path=${join(dir, "tsdb")}`,
      `--web.listen-address=127.0.0.1:${port}`,
      "--log.level=warn",
    ],
    { stdio: ["ignore", "pipe", "pipe"] },
  );
  prometheus.on("error", (e) => (promLog += `spawn error: ${e.message} (.ci/run installs prometheus)\n`));
  prometheus.stdout!.on("data", (c: Buffer) => (promLog += c.toString()));
  prometheus.stderr!.on("data", (c: Buffer) => (promLog += c.toString()));
  await waitFor(
    async () => {
      if (prometheus!.exitCode !== null || promLog.includes("spawn error"))
        throw new Error(`prometheus exited: ${promLog}`);
      return (await request(`${promUrl}/-/ready`).catch(() => ({ status: 0 }))).status === 200;
    },
    30_000,
    "prometheus to be ready",
  );

  // Traffic: every route kind the harness sends, a retried failure, and denials at both layers.
  await shop.traffic(3);
  const flaky = await request(`${shop.gateway.url}/api/search?q=flaky`, { headers: { host: SHOP_HOST } });
  expect(JSON.parse(flaky.body)).toMatchObject({ calls: { catalog: 503 } }); // after search's sidecar retried
  const noToken = await request(`${shop.gateway.url}/api/orders`, { headers: { host: SHOP_HOST } });
  expect(noToken.status).toBe(401);
  // orders may read /users/* but not /me: users' sidecar refuses orders' identity
  const orders = shop.sidecars.get("orders")!;
  const denied = await request(`http://127.0.0.1:${orders.ports.outbound}/me`, {
    headers: { host: "users" },
  });
  expect(denied.status).toBe(403);
}, 90_000);

afterAll(async () => {
  if (prometheus && prometheus.exitCode === null) {
    const exited = new Promise((r) => prometheus!.once("exit", r));
    prometheus.kill("SIGTERM");
    await exited;
  }
  await shop?.stop();
  await receiver?.close();
  await rm(dir, { recursive: true, force: true });
});

interface Target {
  labels: Record<string, string>;
  scrapePool: string;
  health: string;
  lastError: string;
}

describe("the local example under a real Prometheus", () => {
  it("scrapes_every_gateway_and_sidecar_target_up", async () => {
    const expected = shop.targets.map((t) => t.workload).sort();
    let targets: Target[] = [];
    await waitFor(
      async () => {
        targets = (await api<{ activeTargets: Target[] }>("/api/v1/targets?state=active")).activeTargets;
        return targets.length === expected.length && targets.every((t) => t.health === "up");
      },
      20_000,
      "every target up",
    ).catch(() => {
      throw new Error(
        `targets: ${JSON.stringify(targets.map((t) => [t.labels.service, t.health, t.lastError]))}`,
      );
    });
    expect(targets.map((t) => t.labels.service).sort()).toEqual(expected);
    for (const t of targets) {
      const proxy = t.labels.service === "gateway" ? "gateway" : "sidecar";
      expect(t.labels).toMatchObject({ namespace: "shop", proxy, job: `meshgate-shop-${proxy}` });
    }
    const up = await api<{ result: { metric: Record<string, string>; value: [number, string] }[] }>(
      `/api/v1/query?query=${encodeURIComponent('up{namespace="shop"}')}`,
    );
    expect(up.result.map((r) => [r.metric.service, r.value[1]]).sort()).toEqual(
      expected.map((w) => [w, "1"]),
    );
  });

  /** The series of `match` once Prometheus has them; each one's labels within the conventions. */
  async function conventionalSeries(name: string, match: string): Promise<Series> {
    let found: Series = [];
    await waitFor(
      async () => (found = await series(`${name}{namespace="shop",${match}}`)).length > 0,
      20_000,
      `${name}{${match}}`,
    );
    for (const s of found) {
      const { __name__, ...labels } = s;
      const allowed = seriesLabels(__name__!, s.proxy as "gateway" | "sidecar")!;
      for (const l of Object.keys(labels)) expect(allowed, `${__name__} label ${l}`).toContain(l);
      for (const l of ["namespace", "service", "proxy", "job", "instance"]) expect(labels).toHaveProperty(l);
    }
    return found;
  }

  it("has_request_series_labelled_by_route_direction_peer_and_status_class", async () => {
    const gw = await conventionalSeries(
      "meshgate_requests_total",
      'proxy="gateway",route="partner-bulk-orders"',
    );
    expect(gw[0]).toMatchObject({ service: "gateway", code_class: "2xx" });
    const outbound = await conventionalSeries(
      "meshgate_requests_total",
      'proxy="sidecar",service="orders",direction="outbound",peer="payments"',
    );
    expect(outbound[0]).toMatchObject({ code_class: "2xx", mtls: "true" }); // the hop to payments is mTLS
    const inbound = await conventionalSeries(
      "meshgate_requests_total",
      'proxy="sidecar",service="payments",direction="inbound"',
    );
    expect(inbound[0]).toMatchObject({ peer: "spiffe://shop.example/ns/shop/sa/orders", mtls: "true" });
    await conventionalSeries("meshgate_request_duration_seconds_bucket", 'proxy="sidecar",service="catalog"');
  });

  it("has_a_retry_series_for_the_retried_503", async () => {
    const retries = await conventionalSeries("meshgate_retries_total", 'service="search",cluster="catalog"');
    expect(retries[0]).toMatchObject({ proxy: "sidecar", reason: "5xx" });
  });

  it("has_deny_series_at_the_gateway_and_at_the_callee_sidecar", async () => {
    const gw = await conventionalSeries("meshgate_authz_denied_total", 'proxy="gateway",route="list-orders"');
    expect(gw[0]).toMatchObject({ reason: "authentication" });
    const sidecar = await conventionalSeries(
      "meshgate_authz_denied_total",
      'proxy="sidecar",service="users"',
    );
    expect(sidecar[0]).toMatchObject({
      peer: "spiffe://shop.example/ns/shop/sa/orders",
      reason: "path_not_allowed",
    });
  });
});

describe("a trace across the mesh", () => {
  it("links_gateway_search_and_catalog_spans_as_one_trace", async () => {
    const traceId = "5c1e0d4a8b7f6e5d4c3b2a1908f7e6d5";
    const parent = "a1b2c3d4e5f60718";
    const r = await request(`${shop.gateway.url}/api/search?q=trace`, {
      headers: { host: SHOP_HOST, traceparent: `00-${traceId}-${parent}-01` },
    });
    expect(r.status).toBe(200);
    const of = () => receiver.spans.filter((s) => s.traceId === traceId);
    const child = (spans: Span[], p: Span | string, service: string, kind: number) =>
      spans.find(
        (s) =>
          s.parentSpanId === (typeof p === "string" ? p : p.spanId) &&
          s.service === service &&
          s.kind === kind,
      );
    // gateway: server → client (to search) | search's sidecar: inbound server → client (app) | app → search's
    // sidecar: outbound server → client (to catalog) | catalog's sidecar: inbound server → client (app)
    const chain = (spans: Span[]) => {
      const out: (Span | undefined)[] = [];
      let at: Span | string = parent;
      for (const [service, kind] of [
        ["gateway", SERVER],
        ["gateway", CLIENT],
        ["search", SERVER],
        ["search", CLIENT],
        ["search", SERVER],
        ["search", CLIENT],
        ["catalog", SERVER],
        ["catalog", CLIENT],
      ] as const) {
        const next: Span | undefined = child(spans, at, service, kind);
        out.push(next);
        if (!next) break;
        at = next;
      }
      return out;
    };
    await waitFor(
      () => chain(of()).length === 8 && chain(of()).every(Boolean),
      15_000,
      "the trace's spans",
    ).catch(() => {
      throw new Error(`spans of the trace: ${JSON.stringify(of())}`);
    });
    const spans = chain(of()) as Span[];
    expect(new Set(spans.map((s) => s.spanId)).size).toBe(8);
    expect(spans.map((s) => s.name)).toEqual([
      "GET /api/search",
      "GET",
      "GET",
      "GET",
      "GET",
      "GET",
      "GET",
      "GET",
    ]);
  });
});
