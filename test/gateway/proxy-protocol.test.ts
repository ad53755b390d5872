/**
 * PROXY protocol listeners (gateway.listeners[].proxyProtocol) over real sockets: on every kind of listener
 * — plain HTTP with and without h2c sniffing, TLS with and without h2 — the client address a v1 or v2 header
 * names is the one the gateway forwards in X-Forwarded-For (so the one rate limits and logs use), over
 * HTTP/1.1 and HTTP/2; a v2 LOCAL header (a load balancer's health check) leaves the connection's own; a
 * connection without a valid header is closed with nothing forwarded and counted; a listener without the
 * option treats a PROXY header as a malformed request.
 */
import { mkdtemp, rm } from "node:fs/promises";
import http2 from "node:http2";
import { createConnection, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connect as tlsConnect, type TLSSocket } from "node:tls";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parseSpec } from "../../components/spec/parse.ts";
import { translate } from "../../components/translate/translate.ts";
import { sealRuntimeConfig, type GatewayRuntimeConfig } from "../../runtime/contract/index.ts";
import { PROXY_V2_SIGNATURE } from "../../runtime/net/proxy-protocol.ts";
import { selfSignedCert } from "../support/certs.ts";
import {
  gatewayConfig,
  h2Status,
  startTestGateway,
  startUpstream,
  type TestGateway,
  type Upstream,
} from "../support/gateway.ts";

let dir: string;
let up: Upstream;
let gw: TestGateway;
let served: GatewayRuntimeConfig;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "meshgate-proxy-protocol-"));
  const { certFile, keyFile } = await selfSignedCert(dir, "a", "localhost");
  const tls = { minVersion: "TLSv1.2", certificates: [{ hosts: ["localhost"], certFile, keyFile }] };
  up = await startUpstream();
  served = gatewayConfig(
    [{ name: "all", match: { path: "/**" }, to: "app", public: true }],
    { app: { port: up.port } },
    {
      limits: { headerTimeout: "1s" },
      listeners: [
        { name: "h1h2c", port: 8080, protocol: "http", http2: true, proxyProtocol: true },
        { name: "h1", port: 8081, protocol: "http", http2: false, proxyProtocol: true },
        { name: "tlsh2", port: 8443, protocol: "https", http2: true, tls, proxyProtocol: true },
        { name: "tlsh1", port: 8444, protocol: "https", http2: false, tls, proxyProtocol: true },
        { name: "plain", port: 8082, protocol: "http", http2: false },
        { name: "plainh2c", port: 8083, protocol: "http", http2: true },
        {
          name: "trusted",
          port: 8084,
          protocol: "http",
          http2: false,
          proxyProtocol: true,
          proxyProtocolSources: ["127.0.0.0/8"],
        },
        {
          name: "untrusted",
          port: 8085,
          protocol: "http",
          http2: false,
          proxyProtocol: true,
          proxyProtocolSources: ["192.0.2.0/24", "2001:db8::/32"],
        },
      ],
    },
  );
  gw = await startTestGateway(served);
});
afterAll(async () => {
  await gw.drain();
  await up.close();
  await rm(dir, { recursive: true, force: true });
});

const V1 = (client: string) => Buffer.from(`PROXY TCP4 ${client} 10.0.0.10 51000 443\r\n`);
/** A version 2 PROXY header for a TCP over IPv4 client, with one TLV (as AWS adds its VPC endpoint id). */
function V2(client: string): Buffer {
  const body = Buffer.alloc(12 + 5);
  Buffer.from(client.split(".").map(Number)).copy(body, 0);
  Buffer.from([10, 0, 0, 10]).copy(body, 4);
  body.writeUInt16BE(51000, 8);
  body.writeUInt16BE(443, 10);
  Buffer.from([0xea, 0x00, 0x02, 0x01, 0x78]).copy(body, 12);
  const head = Buffer.from([0x21, 0x11, 0, 0]);
  head.writeUInt16BE(body.length, 2);
  return Buffer.concat([PROXY_V2_SIGNATURE, head, body]);
}
const V2_LOCAL = Buffer.concat([PROXY_V2_SIGNATURE, Buffer.from([0x20, 0x00, 0, 0])]);

const TLS_LISTENERS = new Set(["tlsh2", "tlsh1"]);

/** A TCP connection to `listener` with `header` written first (null: none), ready for the protocol. */
async function open(
  listener: string,
  header: Buffer | null,
  alpn = "http/1.1",
  sni = true,
): Promise<Socket | TLSSocket> {
  const port = gw.ports.listeners[listener]!;
  const raw = createConnection(port, "127.0.0.1");
  await new Promise<void>((r, j) => raw.once("connect", r).once("error", j));
  if (header) raw.write(header);
  if (!TLS_LISTENERS.has(listener)) return raw;
  const s = tlsConnect({
    socket: raw,
    ...(sni ? { servername: "localhost" } : {}),
    rejectUnauthorized: false,
    ALPNProtocols: [alpn],
  });
  await new Promise<void>((r, j) =>
    s
      .once("secureConnect", r)
      .once("error", j)
      .once("close", () => j(new Error("closed"))),
  );
  return s;
}

/** One HTTP/1.1 request on a fresh connection; the raw response (empty when the gateway closed it). */
async function h1(listener: string, header: Buffer | null, path: string, oneWrite = false): Promise<string> {
  const request = `GET ${path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n`;
  let s: Socket | TLSSocket;
  if (oneWrite && header && !TLS_LISTENERS.has(listener)) {
    // The header and the request in one segment: the bytes after the header are the request's.
    s = createConnection(gw.ports.listeners[listener]!, "127.0.0.1");
    s.write(Buffer.concat([header, Buffer.from(request)]));
  } else {
    s = await open(listener, header);
    s.write(request);
  }
  return new Promise((resolve) => {
    let raw = "";
    s.on("data", (c: Buffer) => (raw += c.toString("latin1")));
    s.on("close", () => resolve(raw));
    s.on("error", () => {});
    setTimeout(() => s.destroy(), 5000);
  });
}

/** One HTTP/2 request (h2 over TLS by ALPN, or h2c with prior knowledge) after `header`. */
async function h2(listener: string, header: Buffer, path: string): Promise<number> {
  const s = await open(listener, header, "h2");
  const scheme = TLS_LISTENERS.has(listener) ? "https" : "http";
  return h2Status(http2.connect(`${scheme}://localhost`, { createConnection: () => s }), { ":path": path });
}

const forwardedFor = (path: string) => up.received.find((r) => r.url === path)?.headers["x-forwarded-for"];
const refused = async (listener: string) => {
  const text = await (await fetch(`${gw.adminUrl}/metrics`)).text();
  const m = new RegExp(
    `^meshgate_gateway_proxy_protocol_refused_total\\{proxy="gateway",listener="${listener}"\\} (\\d+)$`,
    "m",
  ).exec(text);
  return m ? Number(m[1]) : 0;
};

describe("PROXY protocol listeners", () => {
  const LISTENERS = ["h1h2c", "h1", "tlsh2", "tlsh1"];

  it.each(LISTENERS)("forwards_the_client_a_v1_header_names_on_%s", async (listener) => {
    const path = `/v1/${listener}`;
    const raw = await h1(listener, V1("203.0.113.7"), path);
    expect(raw.split("\r\n")[0]).toBe("HTTP/1.1 200 OK");
    expect(forwardedFor(path)).toBe("203.0.113.7");
  });

  it.each(LISTENERS)("forwards_the_client_a_v2_header_names_on_%s", async (listener) => {
    const path = `/v2/${listener}`;
    expect((await h1(listener, V2("198.51.100.23"), path)).split("\r\n")[0]).toBe("HTTP/1.1 200 OK");
    expect(forwardedFor(path)).toBe("198.51.100.23");
  });

  it.each(["h1h2c", "h1"])(
    "reads_a_request_sent_in_the_same_segment_as_the_header_on_%s",
    async (listener) => {
      const path = `/one-write/${listener}`;
      expect((await h1(listener, V1("203.0.113.8"), path, true)).split("\r\n")[0]).toBe("HTTP/1.1 200 OK");
      expect(forwardedFor(path)).toBe("203.0.113.8");
    },
  );

  // No server name: the TLS server's default context serves the handshake, behind the PROXY header too.
  it.each(["tlsh2", "tlsh1"])(
    "forwards_the_client_a_v1_header_names_to_a_tls_client_without_a_server_name_on_%s",
    async (listener) => {
      const path = `/nosni/${listener}`;
      const s = await open(listener, V1("203.0.113.21"), "http/1.1", false);
      s.write(`GET ${path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n`);
      const raw = await new Promise<string>((resolve) => {
        let text = "";
        s.on("data", (c: Buffer) => (text += c.toString("latin1")));
        s.on("close", () => resolve(text));
      });
      expect(raw.split("\r\n")[0]).toBe("HTTP/1.1 200 OK");
      expect(forwardedFor(path)).toBe("203.0.113.21");
    },
  );

  it.each(["h1h2c", "tlsh2"])("forwards_the_client_over_http2_on_%s", async (listener) => {
    const path = `/h2/${listener}`;
    expect(await h2(listener, V2("192.0.2.44"), path)).toBe(200);
    expect(forwardedFor(path)).toBe("192.0.2.44");
  });

  it.each(LISTENERS)("keeps_the_connection_address_for_a_v2_local_header_on_%s", async (listener) => {
    const path = `/local/${listener}`;
    expect((await h1(listener, V2_LOCAL, path)).split("\r\n")[0]).toBe("HTTP/1.1 200 OK");
    expect(forwardedFor(path)).toBe("127.0.0.1");
  });

  it.each(LISTENERS)("closes_a_connection_without_a_header_on_%s_forwarding_nothing", async (listener) => {
    const before = await refused(listener);
    const path = `/none/${listener}`;
    const raw = await (TLS_LISTENERS.has(listener)
      ? // A TLS client's first bytes are its ClientHello: the handshake fails, the connection is closed.
        open(listener, null).then(
          () => "handshake completed",
          () => "",
        )
      : h1(listener, null, path));
    expect(raw).toBe("");
    expect(up.received.some((r) => r.url === path)).toBe(false);
    expect(await refused(listener)).toBe(before + 1);
  });

  it("closes_a_connection_whose_header_is_malformed", async () => {
    const before = await refused("h1");
    const raw = await h1("h1", Buffer.from("PROXY TCP4 203.0.113.7 10.0.0.10 99999 443\r\n"), "/bad-port");
    expect(raw).toBe("");
    expect(up.received.some((r) => r.url === "/bad-port")).toBe(false);
    expect(await refused("h1")).toBe(before + 1);
    expect(gw.logs.some((l) => l.event === "proxy_protocol_refused" && l.listener === "h1")).toBe(true);
  });

  it("closes_a_connection_whose_header_does_not_arrive_within_the_header_timeout", async () => {
    const s = createConnection(gw.ports.listeners.h1!, "127.0.0.1");
    const started = performance.now();
    s.write("PROXY TCP4 203.0.113.7"); // never finished
    await new Promise<void>((r) => s.on("close", () => r()).on("error", () => {}));
    const ms = performance.now() - started;
    expect(ms).toBeGreaterThanOrEqual(900);
    expect(ms).toBeLessThan(3000);
  });

  it("forwards_the_connection_address_of_an_h2c_request_on_a_listener_without_the_option", async () => {
    const s = createConnection(gw.ports.listeners.plainh2c!, "127.0.0.1");
    await new Promise<void>((r) => s.once("connect", r));
    const session = http2.connect("http://localhost", { createConnection: () => s });
    expect(await h2Status(session, { ":path": "/plain-h2c" })).toBe(200);
    expect(forwardedFor("/plain-h2c")).toBe("127.0.0.1");
  });

  it("takes_the_header_from_a_connection_of_a_proxy_protocol_source", async () => {
    expect((await h1("trusted", V1("203.0.113.9"), "/trusted")).split("\r\n")[0]).toBe("HTTP/1.1 200 OK");
    expect(forwardedFor("/trusted")).toBe("203.0.113.9");
  });

  it("closes_a_connection_from_outside_the_proxy_protocol_sources_even_with_a_valid_header", async () => {
    const before = await refused("untrusted");
    expect(await h1("untrusted", V1("203.0.113.9"), "/untrusted")).toBe("");
    expect(up.received.some((r) => r.url === "/untrusted")).toBe(false);
    expect(await refused("untrusted")).toBe(before + 1);
  });

  it("applies_a_reload_that_narrows_the_sources_on_the_same_port_and_one_that_widens_them_again", async () => {
    // The listener keeps its socket and port; new connections meet the new sources at once.
    const { hash: _h, ...rest } = served;
    const narrowed = sealRuntimeConfig<GatewayRuntimeConfig>({
      ...rest,
      listeners: rest.listeners.map((l) =>
        l.name === "trusted" ? { ...l, proxyProtocolSources: ["192.0.2.0/24"] } : l,
      ),
    });
    const port = gw.ports.listeners["trusted"];
    try {
      expect(await gw.reload(JSON.stringify(narrowed))).toMatchObject({ ok: true, hash: narrowed.hash });
      expect(gw.ports.listeners["trusted"]).toBe(port);
      expect(gw.logs.find((l) => l.event === "listeners_changed")).toMatchObject({
        rebuilt: ["trusted"],
        settings: ["listeners.trusted.proxyProtocolSources"],
      });
      const before = await refused("trusted");
      expect(await h1("trusted", V1("203.0.113.9"), "/narrowed")).toBe("");
      expect(up.received.some((r) => r.url === "/narrowed")).toBe(false);
      expect(await refused("trusted")).toBe(before + 1);
    } finally {
      expect(await gw.reload(JSON.stringify(served))).toMatchObject({ ok: true, hash: served.hash });
    }
    expect((await h1("trusted", V1("203.0.113.10"), "/widened")).split("\r\n")[0]).toBe("HTTP/1.1 200 OK");
    expect(forwardedFor("/widened")).toBe("203.0.113.10");
  });

  it("treats_a_proxy_header_on_a_listener_without_the_option_as_a_malformed_request", async () => {
    const raw = await h1("plain", V1("203.0.113.7"), "/plain");
    expect(raw.split("\r\n")[0]).toBe("HTTP/1.1 400 Bad Request");
    expect(up.received.some((r) => r.url === "/plain")).toBe(false);
  });
});

describe("the spec of PROXY-protocol listeners", () => {
  const listeners = (l: Record<string, unknown>) => ({
    name: "t",
    trustDomain: "t.example",
    services: { app: { image: "r/app:1", port: 8080, allow: [{ from: ["gateway"] }] } },
    gateway: {
      hosts: ["t.example"],
      listeners: [{ name: "edge", port: 8080, protocol: "http", ...l }],
      routes: [
        {
          name: "all",
          match: { path: "/**" },
          to: "app",
          public: true,
          rateLimit: { requests: 10, per: "1s", key: "ip" },
        },
      ],
    },
  });

  it.each<[string, Record<string, unknown>, string, string]>([
    [
      "a_source_that_is_not_a_cidr",
      { proxyProtocol: true, proxyProtocolSources: ["10.0.0.0/33"] },
      "gateway.listeners[0].proxyProtocolSources[0]",
      "E_SPEC_INVALID_CIDR",
    ],
    [
      "sources_without_proxy_protocol",
      { proxyProtocolSources: ["10.0.0.0/20"] },
      "gateway.listeners[0].proxyProtocolSources",
      "E_SPEC_PROXY_PROTOCOL",
    ],
  ])("refuses_%s_naming_the_field", (_claim, l, path, code) => {
    const r = parseSpec(listeners(l));
    expect(r.ok).toBe(false);
    if (r.ok) return;
    expect(r.errors.map((e) => [e.path, e.code])).toEqual([[path, code]]);
  });

  it.each<[string, Record<string, unknown>, boolean]>([
    ["warns_when_any_source_may_send_the_header", { proxyProtocol: true }, true],
    ["is_quiet_with_sources", { proxyProtocol: true, proxyProtocolSources: ["10.0.0.0/20"] }, false],
    ["is_quiet_without_proxy_protocol", {}, false],
  ])("%s", (_claim, l, warns) => {
    const r = parseSpec(listeners(l));
    if (!r.ok) throw new Error(JSON.stringify(r.errors));
    const codes = translate(r.spec).diagnostics.map((d) => `${d.code} ${d.path}`);
    expect(codes.includes("W_SPEC_PROXY_PROTOCOL_ANY_SOURCE gateway.listeners[0]")).toBe(warns);
  });
});
