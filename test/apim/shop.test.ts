/**
 * The shop example end to end: its spec translated as `meshgate translate` does, served by a real
 * gateway in front of local upstreams. The shop's static single-page app, CORS, transforms and the
 * dashboard aggregate run as written. Authentication is not in the runtime yet, so the routes that
 * require it answer 401 as they must; to exercise their transforms and aggregation anyway, this test
 * serves a copy of the config in which those routes are opened (nothing else changed).
 */
import type http from "node:http";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadSpecFile } from "../../components/spec/load.ts";
import { translate } from "../../components/translate/translate.ts";
import { sealRuntimeConfig, type GatewayRuntimeConfig } from "../../runtime/contract/index.ts";
import { curl } from "../support/curl.ts";
import {
  plaintextStatic,
  request,
  startTestGateway,
  startUpstream,
  type TestGateway,
  type Upstream,
} from "../support/gateway.ts";

const HOST = "api.shop.example";
const OPENED = ["me", "dashboard", "create-order", "partner-bulk-orders"];

let catalog: Upstream;
let users: Upstream;
let orders: Upstream;
let other: Upstream;
let strict: TestGateway;
let opened: TestGateway;

const json = (res: http.ServerResponse, body: unknown, extra: http.OutgoingHttpHeaders = {}) => {
  const text = JSON.stringify(body);
  res.writeHead(200, {
    "content-type": "application/json",
    "content-length": Buffer.byteLength(text),
    ...extra,
  });
  res.end(text);
};

function withoutTls(config: GatewayRuntimeConfig): GatewayRuntimeConfig {
  const { hash: _h, ...rest } = config;
  return sealRuntimeConfig<GatewayRuntimeConfig>({
    ...rest,
    listeners: rest.listeners.filter((l) => l.protocol === "http"),
  });
}

function openRoutes(config: GatewayRuntimeConfig, names: readonly string[]): GatewayRuntimeConfig {
  const { hash: _h, ...rest } = config;
  return sealRuntimeConfig<GatewayRuntimeConfig>({
    ...rest,
    routes: rest.routes.map((r) =>
      names.includes(r.name)
        ? {
            ...r,
            auth: {
              public: true,
              anyOf: [],
              scopes: [],
              claims: [],
              consumers: [],
              groups: [],
              clientIps: [],
            },
          }
        : r,
    ),
  });
}

beforeAll(async () => {
  catalog = await startUpstream((req, res) => {
    if (req.url === "/products/featured") {
      setTimeout(() => json(res, [{ sku: "late" }]), 600); // past the part's 300 ms timeout
      return;
    }
    json(res, [{ sku: "p-1" }], { "access-control-allow-origin": "*" });
  });
  users = await startUpstream((_req, res) =>
    json(
      res,
      { internalId: "u-123", displayName: "Ada", email: "ada@shop.example" },
      { "x-powered-by": "users/3.1" },
    ),
  );
  orders = await startUpstream((req, res, body) =>
    json(res, { path: req.url, method: req.method, body, channel: req.headers["x-channel"] ?? null }),
  );
  other = await startUpstream();
  const loaded = await loadSpecFile(new URL("../../examples/shop/mesh.yaml", import.meta.url).pathname);
  if (!loaded.ok) throw new Error(loaded.errors.map((e) => e.message).join("\n"));
  const translated = withoutTls(translate(loaded.spec).runtime.gateway!);
  const upstreams = Object.fromEntries(
    translated.clusters.map((c) => [
      c.name,
      c.name.startsWith("catalog")
        ? catalog
        : c.name === "users"
          ? users
          : c.name === "orders"
            ? orders
            : other,
    ]),
  );
  strict = await startTestGateway(plaintextStatic(translated, upstreams));
  opened = await startTestGateway(plaintextStatic(openRoutes(translated, OPENED), upstreams));
});

afterAll(async () => {
  await strict.drain();
  await opened.drain();
  await Promise.all([catalog, users, orders, other].map((u) => u.close()));
});

describe("the shop as written", () => {
  it("serves_the_single_page_app_and_its_fallback", async () => {
    const index = await curl(`${strict.url}/app/`, ["-H", `Host: ${HOST}`]);
    expect(index.status).toBe(200);
    expect(index.text).toContain("<h1>Shop</h1>");
    expect(index.headers["content-type"]).toBe("text/html; charset=utf-8");
    const deep = await curl(`${strict.url}/app/orders/42`, [
      "-H",
      `Host: ${HOST}`,
      "-H",
      "Accept: text/html",
    ]);
    expect(deep.status).toBe(200);
    expect(deep.text).toBe(index.text);
    const revalidated = await curl(`${strict.url}/app/`, [
      "-H",
      `Host: ${HOST}`,
      "-H",
      `If-None-Match: ${index.headers.etag}`,
    ]);
    expect(revalidated.status).toBe(304);
    expect((await curl(`${strict.url}/app`, ["-H", `Host: ${HOST}`])).headers.location).toBe("/app/");
  });

  it("answers_the_product_list_preflight_and_decorates_the_actual_request", async () => {
    const pre = await curl(`${strict.url}/api/products`, [
      "-X",
      "OPTIONS",
      "-H",
      `Host: ${HOST}`,
      "-H",
      "Origin: https://shop.example",
      "-H",
      "Access-Control-Request-Method: GET",
    ]);
    expect(pre.status).toBe(204);
    expect(pre.headers["access-control-allow-methods"]).toBe("GET, HEAD");
    const r = await curl(`${strict.url}/api/products`, [
      "-H",
      `Host: ${HOST}`,
      "-H",
      "Origin: https://shop.example",
    ]);
    expect(r.status).toBe(200);
    expect(r.headers["access-control-allow-origin"]).toBe("https://shop.example");
    const foreign = await curl(`${strict.url}/api/products`, [
      "-H",
      `Host: ${HOST}`,
      "-H",
      "Origin: https://evil.example",
    ]);
    expect(foreign.headers["access-control-allow-origin"]).toBeUndefined(); // the upstream's "*" is replaced too
  });

  it("answers_401_with_cors_headers_on_the_authenticated_orders_list", async () => {
    const r = await curl(`${strict.url}/api/orders`, [
      "-H",
      `Host: ${HOST}`,
      "-H",
      "Origin: https://shop.example",
    ]);
    expect(r.status).toBe(401);
    expect(r.headers["access-control-allow-origin"]).toBe("https://shop.example");
    expect(r.headers["access-control-allow-credentials"]).toBe("true");
  });

  it("keeps_the_dashboard_closed_without_authentication", async () => {
    const before = users.received.length;
    expect((await curl(`${strict.url}/api/dashboard`, ["-H", `Host: ${HOST}`])).status).toBe(401);
    expect(users.received.length).toBe(before);
  });
});

describe("the shop's authenticated routes, opened", () => {
  it("aggregates_the_dashboard_with_the_featured_default", async () => {
    const t = performance.now();
    const r = await curl(`${opened.url}/api/dashboard`, ["-H", `Host: ${HOST}`]);
    expect(r.status).toBe(200);
    expect(performance.now() - t).toBeLessThan(550);
    expect(r.headers["x-meshgate-partial"]).toBe("featured");
    const body = JSON.parse(r.text) as Record<string, unknown>;
    expect(body.featured).toEqual([]);
    expect(body.orders).toMatchObject({ path: "/orders", method: "GET" });
    expect(body.profile).toMatchObject({ displayName: "Ada" });
  });

  it("transforms_the_me_response", async () => {
    const r = await curl(`${opened.url}/api/me`, ["-H", `Host: ${HOST}`]);
    expect(r.status).toBe(200);
    expect(JSON.parse(r.text)).toEqual({ name: "Ada", email: "ada@shop.example" });
    expect(r.headers["x-powered-by"]).toBeUndefined();
  });

  it("sets_the_channel_header_on_created_orders", async () => {
    const r = await request(`${opened.url}/api/orders`, {
      method: "POST",
      headers: { host: HOST, "content-type": "application/json" },
      body: '{"items":[1]}',
    });
    const seen = JSON.parse(r.body) as { channel: string; body: string };
    expect(seen.channel).toBe("web");
    expect(JSON.parse(seen.body)).toEqual({ items: [1] });
  });

  it("maps_the_partner_order_body", async () => {
    const r = await request(`${opened.url}/partner/orders`, {
      method: "POST",
      headers: { host: HOST, "content-type": "application/json" },
      body: JSON.stringify({ ref: "PO-77", lines: 3 }),
    });
    const seen = JSON.parse(r.body) as { channel: string; body: string; path: string };
    expect(seen.path).toBe("/orders");
    expect(seen.channel).toBe("partner");
    expect(JSON.parse(seen.body)).toEqual({ externalReference: "PO-77", lines: 3, source: "partner-api" });
  });
});
