/**
 * The topology page live, end to end on 127.0.0.1: the shop example with a real gateway (a mesh member
 * with its own SVID) and a real sidecar per service (mTLS with SVIDs from a CA made here), small demo apps
 * that call their declared dependencies through their sidecars, and the topology handler mounted in an
 * admin server scraping every proxy's /metrics. Through the API: exact request counts per edge after
 * known traffic, certificate expiry per identity, the HTTP answers and their error codes. (The page in
 * Chromium is tested through `meshgate up`: browser.test.ts.)
 */
import http, { type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  createTopology,
  type TopologyHandler,
  type TopologyState,
} from "../../stacks/local/topology/index.ts";
import { until } from "../sidecar/support.ts";
import { request } from "../support/gateway.ts";
import { startShopMesh, type ShopMesh } from "../support/shop-mesh.ts";

const SVID_TTL_MS = 10 * 60_000;

let shop: ShopMesh;
let admin: http.Server;
let adminUrl: string;
let topology: TopologyHandler;

const json = (res: ServerResponse, status: number, body: unknown) => {
  const text = JSON.stringify(body);
  res.writeHead(status, { "content-type": "application/json", "content-length": Buffer.byteLength(text) });
  res.end(text);
};

/** The card processor, on 127.0.0.1: answers plain HTTP, and accepts the tunnels CONNECT opens. */
let processor: http.Server;
let processorPort: number;

beforeAll(async () => {
  processor = http.createServer((_req, res) => json(res, 200, { charged: true }));
  await new Promise<void>((r) => processor.listen(0, "127.0.0.1", r));
  processorPort = (processor.address() as AddressInfo).port;
  shop = await startShopMesh({
    svidTtlMs: SVID_TTL_MS,
    externals: { "card-processor": { host: "127.0.0.1", port: processorPort } },
  });
  topology = createTopology({
    spec: shop.spec,
    infra: shop.translated.infra,
    runtime: shop.translated.runtime,
    targets: shop.targets,
    scrapeIntervalMs: 500,
    // Long enough to hold the whole test, so counts are exact differences.
    windowMs: 120_000,
  });
  admin = http.createServer((req, res) => {
    if (!topology(req, res)) json(res, 404, { error: "not found" });
  });
  await new Promise<void>((r) => admin.listen(0, "127.0.0.1", r));
  adminUrl = `http://127.0.0.1:${(admin.address() as AddressInfo).port}`;
}, 60_000);

afterAll(async () => {
  topology?.close();
  await new Promise<void>((r) => (admin ? admin.close(() => r()) : r()));
  await shop?.stop();
  processor?.closeAllConnections();
  await new Promise<void>((r) => (processor ? processor.close(() => r()) : r()));
});

const traffic = (rounds: number) => shop.traffic(rounds);

const requestsOn = (s: TopologyState, edge: string) => s.stats[edge]?.requests ?? 0;

/** Scrapes until `check` holds on the state (the proxies count a request when its response ends). */
async function settle(check: (s: TopologyState) => boolean): Promise<TopologyState> {
  let last = topology.state();
  await until(
    async () => {
      await topology.scrape();
      last = topology.state();
      return check(last);
    },
    15_000,
    "topology numbers",
  );
  return last;
}

describe("the topology api", () => {
  it("counts_exactly_the_requests_sent_on_each_edge", async () => {
    await topology.scrape();
    await topology.scrape();
    const before = topology.state();
    await traffic(6);
    const edges = {
      "gateway->search": 6,
      "search->catalog": 6,
      "gateway->inventory": 6,
      "gateway->orders": 6,
      "orders->payments": 6,
      "orders->inventory": 6,
      "orders->users": 6,
    };
    const after = await settle((s) =>
      Object.entries(edges).every(([e, n]) => requestsOn(s, e) >= requestsOn(before, e) + n),
    );
    for (const [edge, n] of Object.entries(edges)) {
      expect(requestsOn(after, edge) - requestsOn(before, edge), edge).toBe(n);
      expect(after.stats[edge]!.errorRatio, edge).toBe(0);
      expect(after.stats[edge]!.p99, edge).toBeGreaterThan(0);
      expect(after.stats[edge]!.codes["2xx"], edge).toBeGreaterThan(0);
    }
    // catalog and catalog-v2 share list-products' 12 requests… and the gateway counts every request
    expect(
      requestsOn(after, "gateway->catalog") +
        requestsOn(after, "gateway->catalog-v2") -
        requestsOn(before, "gateway->catalog") -
        requestsOn(before, "gateway->catalog-v2"),
    ).toBe(6);
    expect(requestsOn(after, "internet->gateway") - requestsOn(before, "internet->gateway")).toBe(24);
    expect(after.targets.every((x) => x.up === true && x.error === null)).toBe(true);
  });

  it("counts_an_egress_edges_plain_http_requests_and_tunnels_together", async () => {
    await topology.scrape();
    const edge = "payments->card-processor";
    const before = topology.state();
    const proxy = shop.sidecars.get("payments")!.outboundUrl;
    const target = `http://127.0.0.1:${processorPort}`;
    // 3 plain-HTTP requests through payments' sidecar (absolute form, as HTTP_PROXY clients send them)…
    for (let i = 0; i < 3; i++) {
      const r = await new Promise<number>((resolve, reject) => {
        const u = new URL(proxy);
        const req = http.request({ host: u.hostname, port: u.port, path: `${target}/charges`, agent: false });
        req.on("response", (res) => res.resume().on("end", () => resolve(res.statusCode ?? 0)));
        req.on("error", reject);
        req.end();
      });
      expect(r).toBe(200);
    }
    // …and 2 tunnels (CONNECT), each closed after its answer.
    for (let i = 0; i < 2; i++) {
      const status = await new Promise<number>((resolve, reject) => {
        const u = new URL(proxy);
        const req = http.request({
          host: u.hostname,
          port: u.port,
          method: "CONNECT",
          path: `127.0.0.1:${processorPort}`,
          agent: false,
        });
        req.on("connect", (res, socket) => {
          socket.destroy();
          resolve(res.statusCode ?? 0);
        });
        req.on("error", reject);
        req.end();
      });
      expect(status).toBe(200);
    }
    const after = await settle((s) => requestsOn(s, edge) >= requestsOn(before, edge) + 5);
    const stats = after.stats[edge]!;
    expect(stats.requests - requestsOn(before, edge)).toBe(5);
    expect(stats.codes["2xx"]).toBeGreaterThan(0);
    expect(stats.codes.opened).toBeGreaterThan(0);
    expect(stats.errorRatio).toBe(0);
    expect(stats.p99).toBeGreaterThan(0);
  });

  it("reports_each_identity_certificate_expiry", () => {
    const s = topology.state();
    for (const w of ["gateway", ...shop.sidecars.keys()]) {
      const c = s.certificates[w]!;
      expect(c.identity, w).toBe(`spiffe://shop.example/ns/shop/sa/${w}`);
      expect(c.expiresInSeconds, w).toBeGreaterThan(SVID_TTL_MS / 1000 - 120);
      expect(c.expiresInSeconds, w).toBeLessThanOrEqual(SVID_TTL_MS / 1000);
    }
  });

  it("answers_http_errors_with_codes", async () => {
    const post = (body: string, type = "application/json") =>
      fetch(`${adminUrl}/api/explain`, { method: "POST", headers: { "content-type": type }, body });
    const bad = await post('{"from":"internet"}');
    expect(bad.status).toBe(400);
    expect(await bad.json()).toEqual({
      error: { code: "invalid_explain_request", message: "method: required" },
    });
    expect((await post("{", "application/json")).status).toBe(400);
    const unknown = await post(JSON.stringify({ from: "nobody", method: "GET", path: "/", to: "orders" }));
    expect(unknown.status).toBe(400);
    expect(((await unknown.json()) as { error: { message: string } }).error.message).toMatch(
      /^from: unknown caller "nobody"/,
    );
    expect((await post("x", "text/plain")).status).toBe(415);
    expect(
      (await post(JSON.stringify({ from: "internet", method: "GET", path: "/" + "a".repeat(20_000) })))
        .status,
    ).toBe(413);
    expect((await fetch(`${adminUrl}/api/explain`)).status).toBe(405);
    expect((await fetch(`${adminUrl}/api/topology`, { method: "DELETE" })).status).toBe(405);
    expect((await fetch(`${adminUrl}/elsewhere`)).status).toBe(404);
    const rebound = await request(`${adminUrl}/api/topology`, { headers: { host: "attacker.example:9901" } });
    expect([rebound.status, JSON.parse(rebound.body).error.code]).toEqual([403, "host_not_allowed"]);
    expect((await request(`${adminUrl}/api/topology`, { headers: { host: "localhost:9901" } })).status).toBe(
      200,
    );
    const page = await fetch(`${adminUrl}/`);
    expect(page.headers.get("content-type")).toBe("text/html; charset=utf-8");
    expect(page.headers.get("content-security-policy")).toContain("default-src 'none'");
    expect(await page.text()).not.toMatch(
      /<script[^>]+src=|<link[^>]+href=|https?:\/\/(?!www\.w3\.org\/2000\/svg)/,
    );
  });
});
