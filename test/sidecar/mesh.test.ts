/**
 * app → sidecar (outbound) → sidecar (inbound, mTLS) → app, with real sidecars and apps on 127.0.0.1:
 * the three ways an app addresses a service (proxy absolute-form, Host header, local port), undeclared
 * destinations refused, a server proving the wrong SPIFFE ID refused, retries on a killed endpoint within
 * the budget (and none once it is spent), outlier ejection, per-route timeouts, W3C trace context across
 * both hops, and no mTLS without an identity.
 */
import http from "node:http";
import http2 from "node:http2";
import net from "node:net";
import { join } from "node:path";
import { chromium } from "playwright-core";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import type { SidecarRuntimeConfig } from "../../runtime/contract/index.ts";
import { makeCa, tempDir, type TestCa } from "../pki/support.ts";
import {
  freePort,
  h2Status,
  request,
  startUpstream,
  type Upstream,
  type UpstreamHandler,
} from "../support/gateway.ts";
import {
  localSidecar,
  meshConfigs,
  metricValue,
  spiffe,
  startTestSidecar,
  TD,
  until,
  writeIdentity,
  type TestSidecar,
} from "./support.ts";

const SERVICES = {
  web: { image: "r/web:1", port: 8080, calls: ["orders", "payments"] },
  orders: {
    image: "r/orders:1",
    port: 8080,
    allow: [{ from: ["web"] }],
    loadBalancer: "round-robin",
    circuitBreaker: { consecutive5xx: 2, baseEjection: "30s", maxEjectedPercent: 50 },
    routes: [
      {
        name: "slow",
        match: { path: "/slow" },
        timeout: "300ms",
        retries: { attempts: 0, perTryTimeout: "300ms" },
      },
    ],
  },
  payments: {
    image: "r/payments:1",
    port: 8080,
    allow: [{ from: ["web"] }],
    loadBalancer: "round-robin",
    retries: { budget: { ratio: 0, minPerSecond: 0 } },
  },
  secrets: { image: "r/secrets:1", port: 8080, allow: [{ from: ["web"] }] },
};

let tmp: Awaited<ReturnType<typeof tempDir>>;
let ca: TestCa;
let configs: SidecarRuntimeConfig[];
const stops: (() => Promise<void>)[] = [];
const config = (name: string) => configs.find((c) => c.name === name)!;

beforeAll(async () => {
  tmp = await tempDir("sidecar-mesh");
  ca = await makeCa(TD);
  configs = meshConfigs(SERVICES);
});
afterEach(async () => {
  for (const stop of stops.splice(0).reverse()) await stop();
});
afterAll(async () => {
  await tmp?.cleanup();
});

let n = 0;
/** A service instance: its app and its sidecar (with a fresh SVID for `identity`, default its own). */
/** web's sidecar config calling orders at `endpoints`, by the per-service local port (null: none) for orders. */
const webWithOrdersPort = (dir: string, appPort: number, endpoints: number[]) => (port: number | null) =>
  localSidecar(config("web"), {
    identityDir: dir,
    appPort,
    endpoints: { orders: endpoints },
    edit: (c) => ({
      ...c,
      outbound: {
        ...c.outbound,
        services: c.outbound.services.map((x) => (x.service === "orders" ? { ...x, localPort: port } : x)),
      },
    }),
  });

async function instance(
  service: string,
  o: {
    handler?: UpstreamHandler;
    identity?: string;
    endpoints?: Record<string, number[]>;
    noIdentity?: boolean;
    tracing?: { otlpEndpoint: string };
    sendTimeoutMs?: number;
  } = {},
): Promise<{ app: Upstream; sidecar: TestSidecar }> {
  const app = await startUpstream(o.handler);
  const dir = join(tmp.dir, `${service}-${n++}`);
  if (!o.noIdentity)
    await writeIdentity(dir, await ca.issuer.issue(spiffe(o.identity ?? service)), ca.bundle.toPem());
  const cfg = config(service);
  const sidecar = await startTestSidecar(
    localSidecar(o.identity && o.identity !== service ? { ...cfg, identity: spiffe(o.identity) } : cfg, {
      identityDir: dir,
      appPort: app.port,
      endpoints: o.endpoints ?? {},
      ...(o.tracing
        ? {
            edit: (c) => ({
              ...c,
              telemetry: {
                ...c.telemetry,
                tracing: { enabled: true, sampling: 1, otlpEndpoint: o.tracing!.otlpEndpoint },
              },
            }),
          }
        : {}),
    }),
    o.sendTimeoutMs !== undefined ? { sendTimeoutMs: o.sendTimeoutMs } : {},
  );
  stops.push(async () => {
    await sidecar.drain();
    await app.close();
  });
  return { app, sidecar };
}

/** A GET through a sidecar's outbound proxy port in absolute form (what HTTP_PROXY clients send). */
function viaProxy(
  port: number,
  url: string,
  headers: Record<string, string> = {},
): Promise<{ status: number; headers: http.IncomingHttpHeaders; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request(
      { host: "127.0.0.1", port, method: "GET", path: url, headers, agent: false },
      (res) => {
        let body = "";
        res.on("data", (d: Buffer) => (body += d.toString()));
        res.on("end", () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
      },
    );
    req.on("error", reject);
    req.end();
  });
}

const metrics = async (s: TestSidecar) => (await fetch(`${s.adminUrl}/metrics`)).text();

describe("app to app through two sidecars", () => {
  it("reaches_a_declared_service_in_all_three_addressing_modes", async () => {
    const orders = await instance("orders");
    const web = await instance("web", { endpoints: { orders: [orders.sidecar.ports.inbound] } });
    const out = web.sidecar.ports.outbound;

    const proxied = await viaProxy(out, "http://orders/orders/1?x=1", { "x-request-id": "req-42" });
    expect(proxied.status).toBe(200);
    expect(JSON.parse(proxied.body)).toEqual({ path: "/orders/1?x=1", method: "GET" });
    expect(orders.app.received.at(-1)!.headers["x-request-id"]).toBe("req-42");

    const byHost = await request(`http://127.0.0.1:${out}/orders/2`, {
      headers: { host: "orders.shop.svc.cluster.local" },
    });
    expect(byHost.status).toBe(200);
    expect(orders.app.received.at(-1)!.headers.host).toBe("orders.shop.svc.cluster.local");

    const local = await request(`http://127.0.0.1:${web.sidecar.ports.services.orders}/orders/3`);
    expect(local.status).toBe(200);
    expect(orders.app.received.at(-1)!.url).toBe("/orders/3");
    expect(orders.app.received.at(-1)!.headers.host).toBe("orders");
    expect(orders.app.received.at(-1)!.headers["x-meshgate-peer"]).toBe(spiffe("web"));
    // Without one from the app, the first sidecar mints the id that both sidecars log and the app sees.
    const minted = String(orders.app.received.at(-1)!.headers["x-request-id"]);
    expect(minted).toMatch(/^[0-9a-f-]{36}$/);
    expect(web.sidecar.logs.some((l) => l.event === "access" && l.requestId === minted)).toBe(true);
    expect(orders.sidecar.logs.some((l) => l.event === "access" && l.requestId === minted)).toBe(true);

    const text = await metrics(web.sidecar);
    expect(
      metricValue(text, "meshgate_requests_total", {
        direction: "outbound",
        peer: "orders",
        code_class: "2xx",
      }),
    ).toBe(3);
    const inbound = await metrics(orders.sidecar);
    expect(
      metricValue(inbound, "meshgate_requests_total", {
        direction: "inbound",
        peer: spiffe("web"),
        mtls: "true",
      }),
    ).toBe(3);
  });

  it("keeps_an_idle_mtls_connection_between_sidecars_past_nodes_5_s_keep_alive", async () => {
    const orders = await instance("orders");
    const web = await instance("web", { endpoints: { orders: [orders.sidecar.ports.inbound] } });
    const url = `http://127.0.0.1:${web.sidecar.ports.services.orders}/orders/1`;
    expect((await request(url)).status).toBe(200);
    // Longer than Node's default server keep-alive (5 s) and the plain pools' 4 s: a mesh connection
    // idle this long is still there, so the next call pays no handshake.
    await new Promise((r) => setTimeout(r, 5600));
    expect((await request(url)).status).toBe(200);
    const handshakes = metricValue(await metrics(orders.sidecar), "meshgate_tls_handshakes_total");
    expect(handshakes).toBe(1);
  }, 15_000);

  it("adds_moves_and_removes_a_per_service_local_port_by_reload", async () => {
    const orders = await instance("orders", {
      handler: (req, res) => setTimeout(() => res.end("done"), req.url?.startsWith("/delayed") ? 250 : 0),
    });
    const app = await startUpstream();
    const dir = join(tmp.dir, `web-${n++}`);
    await writeIdentity(dir, await ca.issuer.issue(spiffe("web")), ca.bundle.toPem());
    const withPort = webWithOrdersPort(dir, app.port, [orders.sidecar.ports.inbound]);
    const web = await startTestSidecar(withPort(null));
    stops.push(async () => {
      await web.drain();
      await app.close();
    });
    const atStart = web.ports.services.orders!; // bound by the test's port override
    expect((await request(`http://127.0.0.1:${atStart}/orders/1`)).status).toBe(200);

    // Added: the new port serves, the one bound at start is closed.
    const first = await freePort();
    expect(await web.reload(JSON.stringify(withPort(first)))).toMatchObject({ ok: true, changed: true });
    expect(web.ports.services.orders).toBe(first);
    expect((await request(`http://127.0.0.1:${first}/orders/2`)).status).toBe(200);
    await expect(request(`http://127.0.0.1:${atStart}/orders/x`)).rejects.toThrow(/ECONNREFUSED/);

    // Moved, with a request under way on the old port: it finishes; the old port takes no new connection.
    const second = await freePort();
    const slow = request(`http://127.0.0.1:${first}/delayed`);
    await new Promise((r) => setTimeout(r, 50));
    expect(await web.reload(JSON.stringify(withPort(second)))).toMatchObject({ ok: true, changed: true });
    expect((await request(`http://127.0.0.1:${second}/orders/3`)).status).toBe(200);
    await expect(request(`http://127.0.0.1:${first}/orders/x`)).rejects.toThrow(/ECONNREFUSED/);
    expect((await slow).status).toBe(200);
    expect(
      web.logs.find((l) => l.event === "local_ports_changed" && (l.moved as string[]).length),
    ).toMatchObject({
      moved: ["orders"],
    });

    // A port someone else holds refuses the whole reload, naming the field.
    const squatter = net.createServer().listen(0, "127.0.0.1");
    await new Promise((r) => squatter.once("listening", r));
    const taken = (squatter.address() as net.AddressInfo).port;
    expect(await web.reload(JSON.stringify(withPort(taken)))).toMatchObject({
      ok: false,
      code: "E_RT_CONFIG_INVALID",
      error: expect.stringContaining("outbound.services.orders.localPort"),
    });
    squatter.close();
    expect((await request(`http://127.0.0.1:${second}/orders/4`)).status).toBe(200);

    // Removed.
    expect(await web.reload(JSON.stringify(withPort(null)))).toMatchObject({ ok: true, changed: true });
    expect(web.ports.services.orders).toBeUndefined();
    await expect(request(`http://127.0.0.1:${second}/orders/x`)).rejects.toThrow(/ECONNREFUSED/);
    // The proxy port still reaches orders.
    expect((await viaProxy(web.ports.outbound, "http://orders/orders/5")).status).toBe(200);
  });

  it("moves_the_outbound_proxy_port_by_reload_and_refuses_a_taken_one_naming_it", async () => {
    const orders = await instance("orders");
    const app = await startUpstream();
    const dir = join(tmp.dir, `web-${n++}`);
    await writeIdentity(dir, await ca.issuer.issue(spiffe("web")), ca.bundle.toPem());
    const withOutbound = (port: number | null) =>
      localSidecar(config("web"), {
        identityDir: dir,
        appPort: app.port,
        endpoints: { orders: [orders.sidecar.ports.inbound] },
        edit: (c) => (port === null ? c : { ...c, outbound: { ...c.outbound, port } }),
      });
    const web = await startTestSidecar(withOutbound(null));
    stops.push(async () => {
      await web.drain();
      await app.close();
    });
    const atStart = web.ports.outbound;
    expect((await viaProxy(atStart, "http://orders/orders/1")).status).toBe(200);
    const port = await freePort();
    expect(await web.reload(JSON.stringify(withOutbound(port)))).toMatchObject({ ok: true, changed: true });
    expect(web.ports.outbound).toBe(port);
    expect((await viaProxy(port, "http://orders/orders/2")).status).toBe(200);
    await expect(viaProxy(atStart, "http://orders/orders/x")).rejects.toThrow(/ECONNREFUSED/);
    expect(web.logs.find((l) => l.event === "listeners_changed")).toMatchObject({
      moved: ["outbound"],
      outbound: port,
    });

    const squatter = net.createServer().listen(0, "127.0.0.1");
    await new Promise((r) => squatter.once("listening", r));
    const taken = (squatter.address() as net.AddressInfo).port;
    expect(await web.reload(JSON.stringify(withOutbound(taken)))).toMatchObject({
      ok: false,
      code: "E_RT_CONFIG_INVALID",
      error: expect.stringContaining("outbound.port"),
    });
    squatter.close();
    expect((await viaProxy(port, "http://orders/orders/3")).status).toBe(200);
  });

  it("refuses_an_undeclared_destination", async () => {
    const secrets = await instance("secrets");
    const web = await instance("web", { endpoints: { orders: [secrets.sidecar.ports.inbound] } });
    const r = await viaProxy(web.sidecar.ports.outbound, "http://secrets/x");
    expect(r.status).toBe(403);
    expect(r.headers["x-meshgate-error"]).toBe("destination_not_declared");
    const outside = await viaProxy(web.sidecar.ports.outbound, "http://example.com/x");
    expect(outside.status).toBe(403);
    expect(secrets.app.received).toHaveLength(0);
  });

  it("refuses_a_server_that_proves_another_spiffe_id", async () => {
    // "orders" endpoints point at a sidecar that holds payments' SVID (a hijacked address).
    const impostor = await instance("payments");
    const web = await instance("web", { endpoints: { orders: [impostor.sidecar.ports.inbound] } });
    const r = await viaProxy(web.sidecar.ports.outbound, "http://orders/orders/1");
    expect(r.status).toBe(503);
    expect(r.headers["x-meshgate-error"]).toBe("upstream_connect_failure");
    expect(impostor.app.received).toHaveLength(0);
    expect(
      web.sidecar.logs.some((l) => l.event === "upstream_error" && l.code === "E_RT_PKI_UNEXPECTED_PEER"),
    ).toBe(true);
    expect(
      metricValue(await metrics(web.sidecar), "meshgate_upstream_requests_total", {
        outcome: "connect_failure",
      }),
    ).toBeGreaterThan(0);
  });

  it("fails_closed_without_an_identity", async () => {
    const orders = await instance("orders");
    const web = await instance("web", {
      endpoints: { orders: [orders.sidecar.ports.inbound] },
      noIdentity: true,
    });
    expect(web.sidecar.ready()).toBe(false);
    expect((await fetch(`${web.sidecar.adminUrl}/ready`)).status).toBe(503);
    const r = await viaProxy(web.sidecar.ports.outbound, "http://orders/x");
    expect(r.status).toBe(503);
    expect(r.headers["x-meshgate-error"]).toBe("upstream_identity_unavailable");
    expect(orders.app.received).toHaveLength(0);
  });

  it("continues_the_w3c_trace_across_both_hops", async () => {
    const collector = await startCollector();
    const traced = { otlpEndpoint: collector.url };
    const orders = await instance("orders", { tracing: traced });
    const web = await instance("web", {
      endpoints: { orders: [orders.sidecar.ports.inbound] },
      tracing: traced,
    });
    const traceId = "4bf92f3577b34da6a3ce929d0e0e4736";
    const parent = "00f067aa0ba902b7";
    const r = await viaProxy(web.sidecar.ports.outbound, "http://orders/t", {
      traceparent: `00-${traceId}-${parent}-01`,
      tracestate: "vendor=1",
    });
    expect(r.status).toBe(200);
    const seen = orders.app.received.at(-1)!.headers;
    expect(seen.tracestate).toBe("vendor=1");
    const m = /^00-([0-9a-f]{32})-([0-9a-f]{16})-01$/.exec(String(seen.traceparent));
    expect(m?.[1]).toBe(traceId);
    await web.sidecar.drain(); // flushes the spans
    await orders.sidecar.drain();
    const spans = collector.spans();
    await collector.close();
    // app → [web: server → client] → [orders: server → client] → app, one trace, each span the parent of the next
    const byParent = new Map(spans.map((s) => [s.parentSpanId, s]));
    const webServer = byParent.get(parent)!;
    const webClient = byParent.get(webServer.spanId)!;
    const ordersServer = byParent.get(webClient.spanId)!;
    const ordersClient = byParent.get(ordersServer.spanId)!;
    expect([webServer.kind, webClient.kind, ordersServer.kind, ordersClient.kind]).toEqual([2, 3, 2, 3]);
    for (const s of [webServer, webClient, ordersServer, ordersClient]) expect(s.traceId).toBe(traceId);
    expect(m?.[2]).toBe(ordersClient.spanId);
  });

  it("records_the_apps_address_on_an_h2c_request_through_the_outbound_port", async () => {
    // HTTP/2 over cleartext runs on a replaying stream whose own socket knows no address: the sidecar
    // must still see the app's (span peer, ring-hash key).
    const collector = await startCollector();
    const traced = { otlpEndpoint: collector.url };
    const orders = await instance("orders");
    const web = await instance("web", {
      endpoints: { orders: [orders.sidecar.ports.inbound] },
      tracing: traced,
    });
    const session = http2.connect(`http://127.0.0.1:${web.sidecar.ports.outbound}`);
    expect(await h2Status(session, { ":path": "/h2c", ":authority": "orders" })).toBe(200);
    await web.sidecar.drain(); // flushes the spans
    const spans = collector.spans();
    await collector.close();
    const server = spans.find((x) => x.kind === 2)!;
    const peer = server.attributes?.find((a) => a.key === "network.peer.address")?.value.stringValue;
    expect(peer).toBe("127.0.0.1");
  });
});

interface ExportedSpan {
  traceId: string;
  spanId: string;
  parentSpanId: string;
  kind: number;
  attributes?: { key: string; value: { stringValue?: string } }[];
}

/** An OTLP/HTTP JSON collector on 127.0.0.1 that keeps every span it receives. */
async function startCollector(): Promise<{ url: string; spans(): ExportedSpan[]; close(): Promise<void> }> {
  const spans: ExportedSpan[] = [];
  const server = http.createServer((req, res) => {
    let body = "";
    req.on("data", (d: Buffer) => (body += d.toString()));
    req.on("end", () => {
      const doc = JSON.parse(body) as {
        resourceSpans: { scopeSpans: { spans: ExportedSpan[] }[] }[];
      };
      for (const rs of doc.resourceSpans) for (const ss of rs.scopeSpans) spans.push(...ss.spans);
      res.writeHead(200, { "content-type": "application/json" });
      res.end("{}");
    });
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  return {
    url: `http://127.0.0.1:${(server.address() as { port: number }).port}`,
    spans: () => spans,
    close: () => new Promise<void>((r) => server.close(() => r())),
  };
}

describe("resilience through the shared upstream code", () => {
  it("retries_a_killed_endpoint_within_the_budget", async () => {
    const a = await instance("orders");
    const b = await instance("orders");
    const web = await instance("web", {
      endpoints: { orders: [a.sidecar.ports.inbound, b.sidecar.ports.inbound] },
    });
    await b.sidecar.drain(); // its port now refuses connections
    const statuses: number[] = [];
    for (let i = 0; i < 10; i++)
      statuses.push((await viaProxy(web.sidecar.ports.outbound, `http://orders/k/${i}`)).status);
    expect(statuses).toEqual(Array(10).fill(200));
    expect(a.app.received).toHaveLength(10);
    const text = await metrics(web.sidecar);
    expect(
      metricValue(text, "meshgate_retries_total", { cluster: "orders", reason: "connect_failure" }),
    ).toBeGreaterThan(0);
  });

  it("does_not_retry_once_the_budget_is_spent", async () => {
    const a = await instance("payments");
    const b = await instance("payments");
    const web = await instance("web", {
      endpoints: { payments: [a.sidecar.ports.inbound, b.sidecar.ports.inbound] },
    });
    await b.sidecar.drain();
    const statuses: number[] = [];
    for (let i = 0; i < 12; i++)
      statuses.push((await viaProxy(web.sidecar.ports.outbound, `http://payments/p/${i}`)).status);
    // payments' budget is ratio 0 + 0/s: a request that picks the dead endpoint fails, it is not retried.
    expect(statuses.filter((s) => s === 503).length).toBeGreaterThan(0);
    expect(statuses.filter((s) => s === 200).length).toBe(a.app.received.length);
    const text = await metrics(web.sidecar);
    expect(
      metricValue(text, "meshgate_retry_budget_exhausted_total", { cluster: "payments" }),
    ).toBeGreaterThan(0);
    expect(metricValue(text, "meshgate_retries_total", { cluster: "payments" })).toBe(0);
  });

  it("ejects_an_endpoint_that_keeps_failing", async () => {
    const good = await instance("orders");
    const bad = await instance("orders", {
      handler: (_req, res) => {
        res.writeHead(500, { "content-length": 0 });
        res.end();
      },
    });
    const web = await instance("web", {
      endpoints: { orders: [good.sidecar.ports.inbound, bad.sidecar.ports.inbound] },
    });
    const statuses: number[] = [];
    for (let i = 0; i < 12; i++)
      statuses.push((await viaProxy(web.sidecar.ports.outbound, `http://orders/e/${i}`)).status);
    // Round-robin: the bad endpoint answers 500 (not retried: 500 is not in retryOn) until its second
    // consecutive failure ejects it; everything after goes to the good endpoint.
    expect(bad.app.received).toHaveLength(2);
    expect(statuses.filter((s) => s === 500)).toHaveLength(2);
    expect(statuses.slice(4)).toEqual(Array(8).fill(200));
    expect(
      metricValue(await metrics(web.sidecar), "meshgate_upstream_ejections_total", { cluster: "orders" }),
    ).toBe(1);
    expect(web.sidecar.logs.some((l) => l.event === "ejected")).toBe(true);
  });

  it("keeps_an_ejected_endpoint_ejected_across_a_reload_that_leaves_its_cluster_unchanged", async () => {
    const good = await instance("orders");
    const bad = await instance("orders", {
      handler: (_req, res) => {
        res.writeHead(500, { "content-length": 0 });
        res.end();
      },
    });
    const app = await startUpstream();
    const dir = join(tmp.dir, `web-${n++}`);
    await writeIdentity(dir, await ca.issuer.issue(spiffe("web")), ca.bundle.toPem());
    const withPort = webWithOrdersPort(dir, app.port, [
      good.sidecar.ports.inbound,
      bad.sidecar.ports.inbound,
    ]);
    const web = await startTestSidecar(withPort(null));
    stops.push(async () => {
      await web.drain();
      await app.close();
    });
    for (let i = 0; i < 6; i++) await viaProxy(web.ports.outbound, `http://orders/e/${i}`);
    expect(bad.app.received).toHaveLength(2); // ejected by its second consecutive 500
    // A per-service local port added: the orders cluster is the same, its ejected endpoint stays out.
    expect(await web.reload(JSON.stringify(withPort(await freePort())))).toMatchObject({
      ok: true,
      changed: true,
    });
    const statuses: number[] = [];
    for (let i = 0; i < 8; i++)
      statuses.push((await viaProxy(web.ports.outbound, `http://orders/r/${i}`)).status);
    expect(statuses).toEqual(Array(8).fill(200));
    expect(bad.app.received).toHaveLength(2);
  });

  it("applies_the_per_route_timeout", async () => {
    const orders = await instance("orders", {
      handler: (req, res) => {
        const delay = req.url === "/slow" ? 1500 : 0;
        setTimeout(() => {
          res.writeHead(200, { "content-length": 2 });
          res.end("ok");
        }, delay);
      },
    });
    const web = await instance("web", { endpoints: { orders: [orders.sidecar.ports.inbound] } });
    const started = Date.now();
    const r = await viaProxy(web.sidecar.ports.outbound, "http://orders/slow");
    expect(r.status).toBe(504);
    expect(r.headers["x-meshgate-error"]).toBe("upstream_timeout");
    expect(Date.now() - started).toBeLessThan(1200);
    expect((await viaProxy(web.sidecar.ports.outbound, "http://orders/fast")).status).toBe(200);
  });

  it("passes_a_403_of_the_callee_through_with_its_reason", async () => {
    const orders = await instance("orders");
    // payments' sidecar calls nothing, so point a payments-identity caller at orders: orders denies it.
    const caller = await instance("web", {
      identity: "payments",
      endpoints: { orders: [orders.sidecar.ports.inbound] },
    });
    const r = await viaProxy(caller.sidecar.ports.outbound, "http://orders/x");
    expect(r.status).toBe(403);
    expect(r.headers["x-meshgate-denied"]).toBe("peer_not_allowed");
    expect(orders.app.received).toHaveLength(0);
  });
});

describe("a caller that leaves before any response", () => {
  // Node's statusCode is 200 until a response is written: the exchange was counted (requests_total, so a
  // service's availability SLO), traced and logged as a 200 that nobody received.
  it.each([
    ["outbound_at_the_callers_sidecar", "web", "outbound"],
    ["inbound_at_the_callees_sidecar", "orders", "inbound"],
  ])("is_counted_and_logged_as_499_not_200_%s", async (_name, side, direction) => {
    const orders = await instance("orders", { handler: () => {} }); // never answers
    const web = await instance("web", { endpoints: { orders: [orders.sidecar.ports.inbound] } });
    const socket = net.connect(web.sidecar.ports.services.orders!, "127.0.0.1");
    socket.on("error", () => {});
    socket.write("GET /stall HTTP/1.1\r\nHost: orders\r\n\r\n");
    // Both sidecars hold the exchange once the app has the request; then the caller goes.
    await until(() => orders.app.received.length === 1, 5000, "the app got the request");
    socket.destroy();
    const sidecar = side === "web" ? web.sidecar : orders.sidecar;
    const line = () => sidecar.logs.find((l) => l.event === "access" && l.direction === direction);
    await until(() => line() !== undefined, 5000, `the ${direction} access line`);
    expect(line()).toMatchObject({ path: "/stall", status: 499, completed: false });
    const text = await metrics(sidecar);
    expect(metricValue(text, "meshgate_requests_total", { direction, code_class: "2xx" })).toBe(0);
    expect(metricValue(text, "meshgate_requests_total", { direction, code_class: "4xx" })).toBe(1);
  });
});

describe("a caller that stops reading", () => {
  // Each 60 KiB answer fits the socket buffers on its own (one write, never a wait for 'drain', so the
  // forward's send timer never armed); pipelined, they fill the caller's socket and the last one ended with
  // bytes waiting in the sidecar. Before, nothing watched them: the connection stayed open as long as the
  // caller read nothing.
  it("is_cut_at_the_send_timeout_after_the_app_finished_its_responses", async () => {
    const size = 60 * 1024;
    const orders = await instance("orders", {
      handler: (_req, res) => res.writeHead(200, { "content-length": size }).end(Buffer.alloc(size, 97)),
    });
    const web = await instance("web", {
      endpoints: { orders: [orders.sidecar.ports.inbound] },
      sendTimeoutMs: 1000,
    });
    const socket = net.connect(web.sidecar.ports.services.orders!, "127.0.0.1");
    socket.on("error", () => {});
    const closed = new Promise<number>((r) => socket.once("close", () => r(performance.now())));
    socket.write("GET /orders/x HTTP/1.1\r\nHost: orders\r\n\r\n".repeat(200));
    socket.pause();
    const started = performance.now();
    await until(() => orders.app.received.length >= 10, 5000, "the app got requests");
    // Nothing read for 4 s, then everything: the sidecar must have closed the connection by then.
    await new Promise((r) => setTimeout(r, 4000));
    let got = 0;
    socket.on("data", (c: Buffer) => (got += c.length));
    socket.resume();
    const at = await Promise.race([closed, new Promise<number>((r) => setTimeout(() => r(-1), 8000))]);
    expect(at).toBeGreaterThan(0);
    expect(got).toBeLessThan(200 * size);
    expect(at - started).toBeLessThan(12_000);
    const cut = web.sidecar.logs.filter(
      (l) => l.event === "access" && l.direction === "outbound" && l.completed === false,
    );
    expect(cut.length).toBeGreaterThan(0);
    expect(cut[0]).toMatchObject({ status: 200, outcome: "success" }); // the app's part was complete
    expect(web.sidecar.logs.find((l) => l.event === "send_timeout")).toMatchObject({
      source: "response_end",
      direction: "outbound",
      timeoutMs: 1000,
    });
  }, 30_000);
});

describe("the sidecar's admin on 127.0.0.1 and a page that rebinds its DNS name to the loopback", () => {
  it.each([
    ["refuses_config_to_the_pages_host", "/config", "evil.example", 403],
    ["refuses_metrics_to_the_pages_host", "/metrics", "evil.example", 403],
    ["serves_config_to_the_loopback", "/config", "127.0.0.1", 200],
    ["answers_ready_probes_whatever_the_host", "/ready", "evil.example", 200],
  ])("%s", async (_claim, path, host, status) => {
    const { sidecar } = await instance("orders");
    const r = await request(`${sidecar.adminUrl}${path}`, {
      headers: { host: `${host}:${sidecar.ports.admin}` },
    });
    expect(r.status).toBe(status);
  });
});

describe("the outbound ports and a browser page (cross-site requests, DNS rebinding)", () => {
  // A page on any site can send requests to 127.0.0.1:<port>, and once its own DNS name resolves to
  // 127.0.0.1 read the answers as same-origin: each would carry this workload's mTLS identity.
  it.each([
    {
      claim: "refuses_a_cross_site_fetch_on_a_local_port",
      port: "local",
      headers: (_p: number) => ({ origin: "https://evil.example", "sec-fetch-site": "cross-site" }),
      status: 403,
      code: "browser_request",
    },
    {
      claim: "refuses_a_no_cors_request_without_origin_on_a_local_port",
      port: "local",
      headers: (_p: number) => ({ "sec-fetch-site": "cross-site", "sec-fetch-mode": "no-cors" }),
      status: 403,
      code: "browser_request",
    },
    {
      claim: "refuses_a_rebound_host_on_a_local_port",
      port: "local",
      headers: (p: number) => ({ host: `evil.example:${p}`, "sec-fetch-site": "same-origin" }),
      status: 421,
      code: "misdirected_request",
    },
    {
      claim: "refuses_a_browser_on_the_proxy_port",
      port: "proxy",
      headers: (_p: number) => ({ host: "orders", origin: "https://evil.example" }),
      status: 403,
      code: "browser_request",
    },
    {
      claim: "refuses_a_rebound_host_on_the_proxy_port",
      port: "proxy",
      headers: (p: number) => ({ host: `evil.example:${p}` }),
      status: 403,
      code: "destination_not_declared",
    },
    {
      claim: "serves_the_headers_node_fetch_sends",
      port: "local",
      headers: (p: number) => ({
        host: `127.0.0.1:${p}`,
        "sec-fetch-mode": "cors",
        "accept-language": "*",
        "user-agent": "node",
      }),
      status: 200,
      code: undefined,
    },
    {
      claim: "serves_localhost_on_a_local_port",
      port: "local",
      headers: (p: number) => ({ host: `localhost:${p}` }),
      status: 200,
      code: undefined,
    },
  ])("$claim", async ({ port, headers, status, code }) => {
    const orders = await instance("orders");
    const web = await instance("web", { endpoints: { orders: [orders.sidecar.ports.inbound] } });
    const p = port === "local" ? web.sidecar.ports.services.orders! : web.sidecar.ports.outbound;
    const r = await request(`http://127.0.0.1:${p}/orders/1`, { headers: headers(p) });
    expect(r.status).toBe(status);
    expect(r.headers["x-meshgate-error"]).toBe(code);
    expect(orders.app.received).toHaveLength(status === 200 ? 1 : 0);
    if (code === "browser_request" || code === "misdirected_request") {
      expect(
        metricValue(await metrics(web.sidecar), "meshgate_sidecar_errors_total", {
          direction: "outbound",
          code,
        }),
      ).toBe(1);
      expect(web.sidecar.logs.find((l) => l.event === "outbound_refused")).toMatchObject({ code });
    }
  });

  it("serves_nodes_fetch_on_a_local_port", async () => {
    const orders = await instance("orders");
    const web = await instance("web", { endpoints: { orders: [orders.sidecar.ports.inbound] } });
    const r = await fetch(`http://127.0.0.1:${web.sidecar.ports.services.orders}/orders/1`, {
      method: "POST",
      body: "{}",
      headers: { "content-type": "application/json" },
    });
    expect(r.status).toBe(200);
    expect(orders.app.received).toHaveLength(1);
  });

  it("refuses_a_browser_websocket_handshake_on_a_local_port", async () => {
    const orders = await instance("orders");
    const web = await instance("web", { endpoints: { orders: [orders.sidecar.ports.inbound] } });
    const port = web.sidecar.ports.services.orders!;
    const answer = await new Promise<string>((resolve, reject) => {
      const s = net.connect(port, "127.0.0.1", () =>
        s.write(
          `GET /ws HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n` +
            "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n" +
            "Origin: https://evil.example\r\n\r\n",
        ),
      );
      let got = "";
      s.on("data", (d: Buffer) => (got += d.toString()));
      s.on("close", () => resolve(got));
      s.on("error", reject);
    });
    expect(answer).toMatch(/^HTTP\/1\.1 403 /);
    expect(answer.toLowerCase()).toContain("x-meshgate-error: browser_request");
    expect(orders.app.received).toHaveLength(0);
  });
});

describe("headless Chromium against a local port", () => {
  it("refuses_a_page_of_another_origin_and_a_rebound_name", async () => {
    const orders = await instance("orders");
    const web = await instance("web", { endpoints: { orders: [orders.sidecar.ports.inbound] } });
    const local = web.sidecar.ports.services.orders!;
    // The attacker's page, on another origin (another port of 127.0.0.1).
    const page = http.createServer((_req, res) => {
      res.writeHead(200, { "content-type": "text/html" });
      res.end("<!doctype html><title>page</title>");
    });
    await new Promise<void>((r) => page.listen(0, "127.0.0.1", r));
    const pagePort = (page.address() as net.AddressInfo).port;
    // evil.example resolves to 127.0.0.1: the state of a DNS rebinding once the name was rebound.
    const browser = await chromium.launch({
      executablePath: "/usr/bin/chromium",
      args: ["--host-resolver-rules=MAP evil.example 127.0.0.1"],
    });
    try {
      const tab = await browser.newPage();
      await tab.goto(`http://127.0.0.1:${pagePort}/`);
      const sent = await tab.evaluate(async (url) => {
        const out: string[] = [];
        // A blind POST (no preflight) and a CORS GET: Chromium sends Origin and Sec-Fetch-Site: same-site.
        await fetch(`${url}/orders/1`, { method: "POST", mode: "no-cors", body: "x" }).then(
          (r) => out.push(`no-cors ${r.type}`),
          (e: Error) => out.push(`no-cors ${e.name}`),
        );
        await fetch(`${url}/orders/2`).then(
          (r) => out.push(`cors ${r.status}`),
          (e: Error) => out.push(`cors ${e.name}`),
        );
        return out;
      }, `http://127.0.0.1:${local}`);
      expect(sent).toEqual(["no-cors opaque", "cors TypeError"]);
      // The rebound name: the page's own origin is now the local port, its Host names evil.example.
      const rebound = await tab.goto(`http://evil.example:${local}/orders/3`);
      expect(rebound?.status()).toBe(421);
      expect(await rebound?.text()).toContain("misdirected_request");
    } finally {
      await browser.close();
      await new Promise((r) => page.close(r));
    }
    expect(orders.app.received).toHaveLength(0);
    const text = await metrics(web.sidecar);
    expect(
      metricValue(text, "meshgate_sidecar_errors_total", { direction: "outbound", code: "browser_request" }),
    ).toBe(2);
    expect(
      metricValue(text, "meshgate_sidecar_errors_total", {
        direction: "outbound",
        code: "misdirected_request",
      }),
    ).toBeGreaterThanOrEqual(1); // Chromium retries a 421 once on a new connection (RFC 9110 allows it)
  }, 60_000);
});
