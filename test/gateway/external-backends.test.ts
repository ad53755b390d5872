/**
 * Gateway routes to external destinations (`to: { external }`), against real servers on 127.0.0.1: an
 * HTTPS partner that requires a client certificate from its own CA (made with openssl), and a plain HTTP
 * legacy system declared by address. The route's request reaches the partner over mutual TLS with the
 * destination's Host; a pair that cannot serve rejects the config whole (the previous one keeps serving)
 * or stops the gateway from starting; rotated files are presented on new connections; a name that
 * resolves to loopback is refused; WebSockets present the certificate too; metrics and logs name files,
 * never key material.
 */
import http from "node:http";
import https from "node:https";
import type { AddressInfo, Socket } from "node:net";
import type { TLSSocket } from "node:tls";
import { mkdtemp, readFile } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { sealRuntimeConfig, type GatewayRuntimeConfig } from "../../runtime/contract/index.ts";
import { createEgressLookup } from "../../runtime/net/lookup.ts";
import { startGateway } from "../../runtime/gateway/server.ts";
import { tempDir } from "../pki/support.ts";
import {
  answerWebSocket,
  ClientPairs,
  destroyClients,
  openWebSocket,
  outsideCa,
  type OutsideCa,
} from "../sidecar/outside.ts";
import { gatewayConfig, request, startTestGateway, type TestGateway } from "../support/gateway.ts";
import { until } from "../sidecar/support.ts";

let tmp: Awaited<ReturnType<typeof tempDir>>;
let serverCa: OutsideCa;
let partner: https.Server;
let partnerPort = 0;
let legacy: http.Server;
let legacyPort = 0;
/**
 * What the partner saw: the target, Host, the client certificate's CN (null: none presented), and which of
 * the headers that describe the client arrived (CLIENT_HEADERS, in that order).
 */
const seen: { url: string; host: string | undefined; cn: string | null; about: string[] }[] = [];
/** The headers in which the gateway may describe the client: its identity, then its address. */
const CLIENT_HEADERS = [
  "x-meshgate-subject",
  "x-meshgate-consumer",
  "x-meshgate-auth",
  "x-forwarded-for",
  "forwarded",
  "x-real-ip",
];
const IDENTITY = CLIENT_HEADERS.slice(0, 3);
const ADDRESS = CLIENT_HEADERS.slice(3);
const about = (req: http.IncomingMessage) => CLIENT_HEADERS.filter((h) => req.headers[h] !== undefined);
const legacySeen: { url: string; host: string | undefined; about: string[] }[] = [];
/** The legacy server's requests in progress now, the most at once, and its connections. */
/** `hold` > 0: a /slow request is answered once that many are open at once (or after 2 s), not after 50 ms. */
const legacyOpen = { now: 0, most: 0, connections: 0, hold: 0 };
const held: (() => void)[] = [];
/** Pairs issued by the partner CA, by name: their files. */
const pairs = new ClientPairs(() => tmp.dir);
let gw: TestGateway | undefined;

const KEY = "demo-key-external";
const KEY_HASH = "sha256:4d69a650142351223c17f19e9c0960aac044dfe875d0858750744ad2ca1ac0fd";

beforeAll(async () => {
  tmp = await tempDir("gateway-external");
  serverCa = await outsideCa(tmp.dir);
  const partnerCa = await outsideCa(await mkdtemp(join(tmp.dir, "partner-")));
  for (const [cn, eku] of [
    ["gateway-1", "clientAuth"],
    ["gateway-2", "clientAuth"],
    ["gateway-server-only", "serverAuth"],
  ] as const)
    pairs.set(cn, await partnerCa.client(cn, eku));
  partner = https.createServer(
    { ...(await serverCa.leaf("localhost")), requestCert: true, rejectUnauthorized: true, ca: partnerCa.pem },
    (req, res) => {
      const peer = (req.socket as TLSSocket).getPeerCertificate();
      seen.push({
        url: req.url ?? "",
        host: req.headers.host,
        cn: peer?.subject ? String(peer.subject.CN) : null,
        about: about(req),
      });
      // A new connection per request: each shows the certificate presented at that moment.
      res.writeHead(200, { "content-type": "text/plain", connection: "close" });
      res.end(`partner saw ${peer?.subject ? String(peer.subject.CN) : "nobody"}`);
    },
  );
  partner.on("upgrade", (req: http.IncomingMessage, socket: Socket, head: Buffer) => {
    const peer = (req.socket as TLSSocket).getPeerCertificate();
    seen.push({
      url: req.url ?? "",
      host: req.headers.host,
      cn: String(peer.subject.CN),
      about: about(req),
    });
    answerWebSocket(req, socket, head);
  });
  partner.on("tlsClientError", () => {});
  await new Promise<void>((r) => partner.listen(0, "127.0.0.1", r));
  partnerPort = (partner.address() as AddressInfo).port;
  legacy = http.createServer((req, res) => {
    legacySeen.push({ url: req.url ?? "", host: req.headers.host, about: about(req) });
    legacyOpen.most = Math.max(legacyOpen.most, ++legacyOpen.now);
    const done = () => {
      legacyOpen.now--;
      // /json: what it saw, for an aggregate part.
      if (req.url?.includes("/json"))
        res
          .setHeader("content-type", "application/json")
          .end(JSON.stringify({ host: req.headers.host, about: about(req) }));
      else res.end("legacy");
    };
    if (req.url?.includes("/slow") && legacyOpen.hold > 0) {
      held.push(done);
      if (legacyOpen.now >= legacyOpen.hold) for (const release of held.splice(0)) release();
      else
        setTimeout(() => {
          const i = held.indexOf(done);
          if (i >= 0) held.splice(i, 1)[0]!();
        }, 2000);
    } else if (req.url?.includes("/slow")) setTimeout(done, 50);
    else done();
  });
  legacy.on("connection", () => legacyOpen.connections++);
  await new Promise<void>((r) => legacy.listen(0, "127.0.0.1", r));
  legacyPort = (legacy.address() as AddressInfo).port;
}, 60_000);
afterEach(async () => {
  destroyClients();
  await gw?.drain();
  gw = undefined;
  seen.length = 0;
  legacySeen.length = 0;
});
afterAll(async () => {
  for (const s of [partner, legacy])
    await new Promise((r) => (s ? (s.closeAllConnections(), s.close(r)) : r(null)));
  await tmp?.cleanup();
});

const pairFiles = (of: string, as: string) => pairs.copy(of, as);

/**
 * The gateway's config from a spec: the partner (mutual TLS with `files`, told `share` about the client)
 * and the legacy system (at most `legacyMax` connections).
 */
function config(
  files: { certFile: string; keyFile: string } | null,
  legacyMax?: number,
  share?: { identity?: boolean; clientAddress?: boolean },
): GatewayRuntimeConfig {
  return gatewayConfig(
    [
      {
        name: "partner",
        match: { path: "/partner/{rest}" },
        to: { external: "partner" },
        rewrite: { path: "/v1/{rest}" },
        auth: { apiKey: true },
      },
      { name: "legacy", match: { path: "/legacy/**" }, to: { external: "legacy" }, auth: { apiKey: true } },
      {
        name: "legacy-named",
        match: { path: "/named/**" },
        to: { external: "legacy-named" },
        rewrite: { host: "legacy.internal.example" },
        auth: { apiKey: true },
      },
    ],
    {},
    { apiKeys: { consumers: { acme: { keyHashes: [KEY_HASH] } } } },
    {},
    {
      partner: {
        host: "localhost",
        port: partnerPort,
        tls: "originate",
        ca: serverCa.pem,
        ...(files ? { clientCertificate: files } : {}),
        ...(share ? { share } : {}),
        allow: [{ from: ["gateway"] }],
      },
      legacy: {
        host: "127.0.0.1",
        port: legacyPort,
        ...(legacyMax !== undefined ? { maxConnections: legacyMax } : {}),
        allow: [{ from: ["gateway"] }],
      },
      "legacy-named": { host: "legacy.test", port: legacyPort, allow: [{ from: ["gateway"] }] },
    },
  );
}

/** Every name resolves to 127.0.0.1 — as a DNS answer taken over would — through the egress rules. */
const rebinding = createEgressLookup((_host, _o, cb) => cb(null, [{ address: "127.0.0.1", family: 4 }]));

const start = async (c: GatewayRuntimeConfig) =>
  (gw = await startTestGateway(c, undefined, { externalLookup: rebinding }));
const get = (path: string) => request(`${gw!.url}${path}`, { headers: { "x-api-key": KEY } });
const metrics = async () => (await request(`${gw!.adminUrl}/metrics`)).body;

/**
 * Runs `body` against a gateway with one API-key `route` over a mesh service, orders (a server on
 * 127.0.0.1 that `answer`s), and the legacy destination.
 */
async function withMeshService(
  answer: http.RequestListener,
  route: Record<string, unknown>,
  body: () => Promise<void>,
): Promise<void> {
  const service = http.createServer(answer);
  await new Promise<void>((r) => service.listen(0, "127.0.0.1", r));
  try {
    await start(
      gatewayConfig(
        [{ ...route, auth: { apiKey: true } }],
        { orders: { port: (service.address() as AddressInfo).port } },
        { apiKeys: { consumers: { acme: { keyHashes: [KEY_HASH] } } } },
        undefined,
        { legacy: { host: "127.0.0.1", port: legacyPort, allow: [{ from: ["gateway"] }] } },
      ),
    );
    await body();
  } finally {
    await new Promise((r) => service.close(r));
  }
}

describe("gateway routes to external destinations", () => {
  it("forwards_over_mutual_tls_presenting_the_client_certificate_with_the_destinations_host", async () => {
    await start(config(await pairFiles("gateway-1", "a")));
    const r = await get("/partner/accounts?x=1");
    expect(r.status).toBe(200);
    expect(r.body).toBe("partner saw gateway-1");
    expect(seen).toEqual([
      { url: "/v1/accounts?x=1", host: `localhost:${partnerPort}`, cn: "gateway-1", about: [] },
    ]);
  });

  it.each([
    { shares: "nothing_by_default", share: undefined, about: [] },
    { shares: "identity", share: { identity: true }, about: IDENTITY },
    { shares: "client_address", share: { clientAddress: true }, about: ADDRESS },
    { shares: "both", share: { identity: true, clientAddress: true }, about: CLIENT_HEADERS },
  ])("tells_the_destination_about_the_client_exactly_what_it_shares: $shares", async ({ share, about }) => {
    await start(config(await pairFiles("gateway-1", "s"), undefined, share));
    // A client's own copies of these headers never pass: the gateway owns them.
    const r = await request(`${gw!.url}/partner/me`, {
      headers: { "x-api-key": KEY, "x-meshgate-subject": "forged", "x-forwarded-for": "198.51.100.7" },
    });
    expect(r.status).toBe(200);
    expect(seen.map((s) => s.about)).toEqual([about]);
  });

  it("sends_a_mesh_service_the_clients_identity_and_address_as_before", async () => {
    // The control of the table above: withholding is for destinations outside the mesh only (here the
    // legacy server stands in as a mesh service's endpoint).
    const c = gatewayConfig(
      [{ name: "orders", match: { path: "/orders/**" }, to: "orders", auth: { apiKey: true } }],
      { orders: { port: legacyPort } },
      { apiKeys: { consumers: { acme: { keyHashes: [KEY_HASH] } } } },
    );
    await start(c);
    expect((await get("/orders/1")).status).toBe(200);
    expect(legacySeen.map((s) => s.about)).toEqual([CLIENT_HEADERS]);
  });

  it("splits_between_a_destination_and_a_mesh_service_each_called_with_its_own_host_and_headers", async () => {
    // A migration off the legacy system: half the requests still go to it, half to the new service.
    const orders: { host: string | undefined; about: string[] }[] = [];
    const route = {
      name: "migrating",
      match: { path: "/accounts/**" },
      split: [
        { external: "legacy", weight: 50 },
        { service: "orders", weight: 50 },
      ],
    };
    const answer: http.RequestListener = (req, res) => {
      orders.push({ host: req.headers.host, about: about(req) });
      res.end("orders");
    };
    await withMeshService(answer, route, async () => {
      const bodies = [];
      for (let i = 0; i < 40; i++) bodies.push((await get("/accounts/7")).body);
      expect(new Set(bodies)).toEqual(new Set(["legacy", "orders"]));
      expect(legacySeen.length + orders.length).toBe(40);
      expect(new Set(legacySeen.map((s) => `${s.host} ${s.about.join(",")}`))).toEqual(
        new Set([`127.0.0.1:${legacyPort} `]),
      );
      expect(new Set(orders.map((s) => `${s.host} ${s.about.join(",")}`))).toEqual(
        new Set([`${new URL(gw!.url).host} ${CLIENT_HEADERS.join(",")}`]),
      );
    });
  });

  it("aggregates_a_destination_and_a_mesh_service_each_with_its_own_host_and_headers", async () => {
    const route = {
      name: "overview",
      match: { path: "/overview" },
      aggregate: {
        ledger: { external: "legacy", path: "/json/ledger" },
        profile: { service: "orders", path: "/profile" },
      },
    };
    const answer: http.RequestListener = (req, res) => {
      res
        .setHeader("content-type", "application/json")
        .end(JSON.stringify({ host: req.headers.host, about: about(req) }));
    };
    await withMeshService(answer, route, async () => {
      const r = await get("/overview");
      expect(r.status).toBe(200);
      expect(JSON.parse(r.body)).toEqual({
        ledger: { host: `127.0.0.1:${legacyPort}`, about: [] },
        profile: { host: new URL(gw!.url).host, about: CLIENT_HEADERS },
      });
    });
  });

  it("forwards_plain_http_to_a_destination_declared_by_address_with_its_host", async () => {
    await start(config(null));
    const r = await get("/legacy/a/b");
    expect(r.status).toBe(200);
    expect(legacySeen).toEqual([{ url: "/legacy/a/b", host: `127.0.0.1:${legacyPort}`, about: [] }]);
  });

  it("keeps_at_most_the_destinations_max_connections_open_to_it", async () => {
    await start(config(null, 1));
    Object.assign(legacyOpen, { most: 0, connections: 0 });
    const statuses = await Promise.all(
      Array.from({ length: 4 }, () => get("/legacy/slow").then((r) => r.status)),
    );
    expect(statuses).toEqual([200, 200, 200, 200]);
    expect([legacyOpen.most, legacyOpen.connections]).toEqual([1, 1]);
  });

  it("applies_a_changed_max_connections_on_reload", async () => {
    await start(config(null, 1));
    const slow = () => get("/legacy/slow").then((r) => r.status);
    // Four requests on the old pool of one connection: one running, three queued across the reload.
    const old = Array.from({ length: 4 }, slow);
    await until(async () => legacyOpen.now === 1, 5_000);
    expect(await gw!.reload(JSON.stringify(config(null, 4)))).toMatchObject({ ok: true });
    expect(await Promise.all(old)).toEqual([200, 200, 200, 200]);
    // Answered only once four are open at once (a loaded machine may not overlap four 50 ms answers).
    Object.assign(legacyOpen, { most: 0, connections: 0, hold: 4 });
    const statuses = await Promise.all(Array.from({ length: 4 }, slow)).finally(() => (legacyOpen.hold = 0));
    expect(statuses).toEqual([200, 200, 200, 200]);
    // Four connections at once: the new limit, not the old pool's one.
    expect([legacyOpen.most, legacyOpen.connections]).toEqual([4, 4]);
  });

  it("refuses_a_destination_name_that_resolves_to_loopback_before_any_byte_is_sent", async () => {
    await start(config(null));
    const r = await get("/named/x");
    expect(r.status).toBe(503);
    expect(r.headers["x-meshgate-error"]).toBe("upstream_connect_failure");
    expect(legacySeen).toEqual([]);
    // Refused by the egress rules (the name resolved, to loopback), not by a failed resolution.
    expect(gw!.logs).toContainEqual(
      expect.objectContaining({
        event: "upstream_error",
        route: "legacy-named",
        code: "E_RT_EGRESS_ADDRESS_REFUSED",
      }),
    );
  });

  it("without_a_client_certificate_the_partner_refuses_and_the_gateway_answers_an_error", async () => {
    await start(config(null));
    const r = await get("/partner/accounts");
    expect(r.status).toBeGreaterThanOrEqual(502);
    expect(seen).toEqual([]);
  });

  it("does_not_start_with_a_client_certificate_that_cannot_serve", async () => {
    const c = config(await pairFiles("gateway-server-only", "server-only"));
    await expect(
      startGateway({ config: c, host: "127.0.0.1", ports: { listeners: { http: 0 }, admin: 0 } }),
    ).rejects.toMatchObject({
      code: "E_RT_CLIENT_CERT_INVALID",
      message: expect.stringContaining("clusters[2].tls.clientCertificate"),
    });
  });

  it("rejects_a_reload_whose_client_certificate_cannot_serve_and_keeps_the_previous_pair", async () => {
    await start(config(await pairFiles("gateway-1", "b")));
    const result = await gw!.reload(JSON.stringify(config(await pairFiles("gateway-server-only", "b2"))));
    expect(result).toMatchObject({ ok: false, code: "E_RT_CLIENT_CERT_INVALID" });
    const r = await get("/partner/still");
    expect(r.body).toBe("partner saw gateway-1");
  });

  it("presents_a_rotated_pair_on_new_connections_without_a_reload", async () => {
    const files = await pairFiles("gateway-1", "c");
    await start(config(files));
    expect((await get("/partner/one")).body).toBe("partner saw gateway-1");
    await pairs.rotate(files, "gateway-2");
    await until(async () => (await get("/partner/two")).body === "partner saw gateway-2", 10_000);
    expect(await metrics()).toMatch(
      /meshgate_external_cert_reloads_total\{proxy="gateway",result="loaded"\} 2/,
    );
  });

  it("presents_the_client_certificate_on_websocket_upgrades", async () => {
    await start(config(await pairFiles("gateway-1", "d")));
    const port = Number(new URL(gw!.url).port);
    const ws = await openWebSocket(port, "/partner/ws", "127.0.0.1", { "x-api-key": KEY });
    expect(ws.status).toBe(101);
    ws.socket.destroy();
    expect(seen).toEqual([{ url: "/v1/ws", host: `localhost:${partnerPort}`, cn: "gateway-1", about: [] }]);
  });

  it("reports_the_certificates_expiry_and_never_logs_key_material", async () => {
    const files = await pairFiles("gateway-1", "e");
    await start(config(files));
    const m = await metrics();
    const expiry = /meshgate_external_cert_expiry_seconds\{proxy="gateway",external="partner"\} (\d+)/.exec(
      m,
    );
    expect(Number(expiry?.[1])).toBeGreaterThan(3600);
    expect(Number(expiry?.[1])).toBeLessThanOrEqual(86_400);
    const loaded = gw!.logs.find((l) => l.event === "external_cert_loaded");
    expect(loaded).toMatchObject({
      certFile: files.certFile,
      keyFile: files.keyFile,
      subject: "CN=gateway-1",
    });
    const key = await readFile(files.keyFile, "utf8");
    const body = key.split("\n").find((l) => l.length > 40)!;
    expect(gw!.rawLog()).not.toContain(body);
  });

  // The series is removed, not kept at 0: the dropped externals of many reloads would fill the gauge's 64
  // label sets and fold a live certificate's expiry into external="__overflow__", hiding it from the alert.
  it("a_reload_that_drops_the_route_keeps_serving_the_rest_and_removes_its_certificate_expiry", async () => {
    await start(config(await pairFiles("gateway-1", "f")));
    expect((await get("/legacy/x")).status).toBe(200);
    expect(await metrics()).toMatch(
      /meshgate_external_cert_expiry_seconds\{proxy="gateway",external="partner"\} [1-9]\d*\n/,
    );
    const next = config(null);
    const { hash: _h, ...rest } = next;
    const without = sealRuntimeConfig<GatewayRuntimeConfig>({
      ...rest,
      routes: rest.routes.filter((r) => r.name !== "partner"),
      clusters: rest.clusters.filter((c) => c.name !== "partner"),
    });
    expect(await gw!.reload(JSON.stringify(without))).toMatchObject({ ok: true });
    expect((await get("/partner/x")).status).toBe(404);
    expect((await get("/legacy/y")).status).toBe(200);
    expect(await metrics()).not.toMatch(/meshgate_external_cert_expiry_seconds\{[^}]*external="partner"/);
  });
});
