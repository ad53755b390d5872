/**
 * Wildcard external destinations (`*.corp.test`, runtime/decide/external.ts) through the sidecar, with real
 * sockets on 127.0.0.1: a resolver scripted for the test answers 127.0.0.1 for every `.test` name (the
 * default egress lookup refuses loopback), so a name the sidecar wrongly let through would show as a
 * connection. CONNECT and plain HTTP (absolute-form and Host header) reach the name the app asked for,
 * canonical, one label deep or more, at the declared port only — never the domain itself, a lookalike, an
 * address or another port; an exact host wins over a wildcard and the longer wildcard over the shorter,
 * whatever the declaration order; TLS the sidecar originates is verified for the name asked for, one
 * connection per name; more names than the sidecar keeps clusters for are all answered, the evicted
 * names' connections closed; WebSockets; the contract refuses a wildcard with a local port.
 */
import { randomBytes } from "node:crypto";
import type { LookupAddress } from "node:dns";
import http from "node:http";
import type { AddressInfo, LookupFunction, Socket } from "node:net";
import type { TLSSocket } from "node:tls";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import {
  loadRuntimeConfig,
  RuntimeConfigError,
  sealRuntimeConfig,
  validateRuntimeConfig,
  type SidecarRuntimeConfig,
} from "../../runtime/contract/index.ts";
import { tempDir } from "../pki/support.ts";
import {
  answerWebSocket,
  destroyClients,
  dial,
  egressSidecars,
  external,
  httpOutside,
  httpsOutside,
  readBytes,
  openWebSocket,
  readToEnd,
  sleep,
  within,
  type EgressSidecars,
  type External,
  type HTTPOutside,
  type HTTPSOutside,
} from "./outside.ts";
import { meshConfigs, metricValue, NS, TD, until } from "./support.ts";
import { parseSpec } from "../../components/spec/parse.ts";
import { policyInput, type PolicyInput } from "../../policies/run.ts";
import { parseAccessLog, replay } from "../../policies/replay.ts";

// ───────────────────────────── the test's resolver ─────────────────────────────

/** The names the sidecar asked the resolver for, in order. */
const asked: string[] = [];

/**
 * Every name ending in `.test` (`corp.test`, `evilcorp.test`, `a.other.test`, …) is 127.0.0.1, so that a
 * destination the sidecar must refuse would still be reachable were it let through; other names are
 * unknown.
 */
const lookup = ((
  hostname: string,
  options: { all?: boolean },
  callback: (err: NodeJS.ErrnoException | null, address: string | LookupAddress[], family?: number) => void,
) => {
  asked.push(hostname);
  setImmediate(() => {
    if (!hostname.endsWith(".test"))
      return callback(
        Object.assign(new Error(`getaddrinfo ENOTFOUND ${hostname}`), { code: "ENOTFOUND" }),
        "",
        0,
      );
    if (options.all) callback(null, [{ address: "127.0.0.1", family: 4 }]);
    else callback(null, "127.0.0.1", 4);
  });
}) as unknown as LookupFunction;

// ───────────────────────────── servers outside the mesh ─────────────────────────────

let tmp: Awaited<ReturnType<typeof tempDir>>;
let sidecars: EgressSidecars;
/** A plain HTTP server for every name under corp.test (declared as `*.corp.test` at its port). */
let corp: HTTPOutside;
/** Never declared at its port: a request or a tunnel that reached it would show in its connections. */
let trap: HTTPOutside;
/** An HTTPS server whose certificate names `*.corp.test` (one label below corp.test only). */
let wildTls: HTTPSOutside;
/** An HTTPS server whose certificate, from the same CA, names only `a.corp.test`. */
let oneTls: HTTPSOutside;
/** An HTTPS server whose certificate, from the same CA, names `*.eu.corp.test`. */
let euTls: HTTPSOutside;

interface TlsSeen {
  readonly server: string;
  readonly url: string;
  readonly host: string | undefined;
  readonly servername: string | false | null | undefined;
}
/** Requests the HTTPS servers received. */
const tlsSeen: TlsSeen[] = [];

const seenOverTls = (server: string, req: http.IncomingMessage): void => {
  tlsSeen.push({
    server,
    url: req.url ?? "",
    host: req.headers.host,
    servername: (req.socket as TLSSocket).servername,
  });
};

const answerOverTls =
  (server: string): http.RequestListener =>
  (req, res) => {
    seenOverTls(server, req);
    res.writeHead(200, { "content-type": "text/plain", "x-outside": server });
    res.end(`${server}: ${req.method} ${req.url}`);
  };

beforeAll(async () => {
  tmp = await tempDir("sidecar-egress-wildcard");
  sidecars = await egressSidecars(tmp.dir);
  corp = await httpOutside();
  trap = await httpOutside();
  wildTls = await httpsOutside(tmp.dir, answerOverTls("wild"), { dnsName: "*.corp.test" });
  oneTls = await httpsOutside(tmp.dir, answerOverTls("one"), { ca: wildTls.ca, dnsName: "a.corp.test" });
  euTls = await httpsOutside(tmp.dir, answerOverTls("eu"), { ca: wildTls.ca, dnsName: "*.eu.corp.test" });
  wildTls.server.on("upgrade", (req: http.IncomingMessage, socket: Socket, head: Buffer) => {
    seenOverTls("wild", req);
    answerWebSocket(req, socket, head);
  });
}, 30_000);
afterEach(async () => {
  destroyClients();
  await sidecars?.stopAll();
  corp?.reset();
  trap?.reset();
  tlsSeen.length = 0;
  asked.length = 0;
});
afterAll(async () => {
  await corp?.close();
  await trap?.close();
  await wildTls?.close();
  await oneTls?.close();
  await euTls?.close();
  await tmp?.cleanup();
});

/** `corp`: every name under corp.test at corp's port, plain. */
const wildcard = (o: Partial<External> = {}) => external("corp", "*.corp.test", corp.port, o);

const start = (externals: External[] = [wildcard()]) => sidecars.start(externals, { externalLookup: lookup });

/** Connections every server outside the mesh accepted so far. */
const connections = () => [
  corp.connections,
  trap.connections,
  wildTls.connections,
  oneTls.connections,
  euTls.connections,
];

// ───────────────────────────── clients ─────────────────────────────

interface Reply {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: string;
}

/**
 * One request to the sidecar's proxy port with `target` written as given (absolute-form or a path) and the
 * headers as given (without `host`, Node sends the sidecar's own address).
 */
function send(port: number, target: string, headers: http.OutgoingHttpHeaders = {}): Promise<Reply> {
  const reply = new Promise<Reply>((resolve, reject) => {
    const req = http.request({ host: "127.0.0.1", port, path: target, headers, agent: false });
    req.on("error", reject);
    req.on("response", (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("end", () =>
        resolve({
          status: res.statusCode ?? 0,
          headers: res.headers,
          body: Buffer.concat(chunks).toString(),
        }),
      );
      res.on("error", reject);
    });
    req.end();
  });
  return within(reply, `GET ${target}`);
}

const errorCode = (r: { body: string }) => (JSON.parse(r.body) as { error: { code: string } }).error.code;

interface ConnectReply {
  status: number;
  body: string;
  socket: Socket;
  /** Bytes after the 200's head. */
  rest: Buffer;
}

/** Sends `CONNECT authority HTTP/1.1` and reads the answer's head (and a refusal's body). */
function connectTo(port: number, authority: string): Promise<ConnectReply> {
  const reply = new Promise<ConnectReply>((resolve, reject) => {
    const socket = dial(port);
    let buf = Buffer.alloc(0);
    const onData = (chunk: Buffer) => {
      buf = Buffer.concat([buf, chunk]);
      const end = buf.indexOf("\r\n\r\n");
      if (end < 0) return;
      socket.off("data", onData);
      const status = Number(buf.subarray(0, end).toString("latin1").split(" ")[1]);
      const rest = buf.subarray(end + 4);
      if (status === 200) {
        socket.pause();
        return resolve({ status, body: "", socket, rest });
      }
      readToEnd(socket, rest).then((b) => resolve({ status, body: b.toString(), socket, rest }), reject);
    };
    socket.on("data", onData);
    socket.once("error", reject);
    socket.write(`CONNECT ${authority} HTTP/1.1\r\nhost: ${authority}\r\n\r\n`);
  });
  return within(reply, `CONNECT ${authority}`);
}

const accessLines = (logs: Record<string, unknown>[]) => logs.filter((l) => l.event === "access");
const egressLines = (logs: Record<string, unknown>[]) => logs.filter((l) => l.event === "egress");

// ───────────────────────────── CONNECT ─────────────────────────────

describe("CONNECT under a wildcard", () => {
  it.each([
    ["connect_under_a_wildcard_reaches_the_name_asked_for", "a.corp.test", "a.corp.test"],
    ["connect_under_a_wildcard_reaches_a_name_several_labels_deep", "x.y.a.corp.test", "x.y.a.corp.test"],
    [
      "connect_under_a_wildcard_reaches_the_canonical_name_of_one_in_capitals_with_a_trailing_dot",
      "API.Corp.Test.",
      "api.corp.test",
    ],
  ])("%s", async (_name, written, name) => {
    const { sidecar, metrics } = await start();
    const t = await connectTo(sidecar.ports.outbound, `${written}:${corp.port}`);
    expect(t.status).toBe(200);
    // HTTP through the tunnel: the server outside sees the bytes the app sent.
    t.socket.write(`GET /through HTTP/1.1\r\nhost: ${name}\r\nconnection: close\r\n\r\n`);
    const reply = (await within(readToEnd(t.socket, t.rest), "the reply through the tunnel")).toString();
    expect(reply).toMatch(/^HTTP\/1\.1 200 /);
    expect(reply).toContain("hello from outside the mesh");
    t.socket.end(); // the server's FIN came through; the app's closes the tunnel
    expect(corp.requests).toMatchObject([{ url: "/through", headers: { host: name } }]);
    expect(asked).toEqual([name]);
    await until(() => egressLines(sidecar.logs).length === 1, 3000, "the egress line");
    expect(egressLines(sidecar.logs)[0]).toMatchObject({
      external: "corp",
      target: `${name}:${corp.port}`,
      via: "connect",
      status: 200,
    });
    expect(
      metricValue(await metrics(), "meshgate_egress_connections_total", {
        external: "corp",
        outcome: "opened",
      }),
    ).toBe(1);
  });

  it.each([
    ["connect_refuses_the_wildcards_domain_itself", () => `corp.test:${corp.port}`],
    ["connect_refuses_a_lookalike_domain", () => `evilcorp.test:${corp.port}`],
    ["connect_refuses_a_name_ending_in_the_domain_without_a_dot", () => `xcorp.test:${corp.port}`],
    ["connect_refuses_another_domain", () => `a.other.test:${corp.port}`],
    ["connect_refuses_an_address_at_the_wildcards_port", () => `127.0.0.1:${corp.port}`],
    ["connect_refuses_a_covered_name_at_another_port", () => `a.corp.test:${trap.port}`],
  ])("%s_with_403_egress_denied_and_nothing_connected", async (_name, authority) => {
    const { sidecar } = await start();
    const before = connections();
    const r = await connectTo(sidecar.ports.outbound, authority());
    expect(r.status).toBe(403);
    expect(errorCode(r)).toBe("egress_denied");
    await sleep(50);
    expect(connections()).toEqual(before);
    expect(asked).toEqual([]);
  });

  it("a_failed_connect_under_a_wildcard_names_the_name_asked_for_by_every_way_in", async () => {
    // The test's resolver knows no name under corp.invalid.
    const { sidecar, metrics } = await start([external("gone", "*.corp.invalid", corp.port)]);
    const before = connections();
    const t = await connectTo(sidecar.ports.outbound, `a.corp.invalid:${corp.port}`);
    expect(t.status).toBe(502);
    expect(errorCode(t)).toBe("egress_connect_failed");
    expect(t.body).toContain(`external gone (a.corp.invalid:${corp.port})`);
    const r = await send(sidecar.ports.outbound, `http://b.corp.invalid:${corp.port}/`);
    expect(r.status).toBe(503);
    expect(errorCode(r)).toBe("upstream_connect_failure");
    expect(asked).toEqual(["a.corp.invalid", "b.corp.invalid"]);
    expect(connections()).toEqual(before);
    await until(() => egressLines(sidecar.logs).length === 1, 3000, "the egress line");
    expect(sidecar.logs.find((l) => l.event === "egress_error")).toMatchObject({
      external: "gone",
      target: `a.corp.invalid:${corp.port}`,
      code: "ENOTFOUND",
    });
    expect(egressLines(sidecar.logs)[0]).toMatchObject({
      target: `a.corp.invalid:${corp.port}`,
      status: 502,
    });
    expect(
      metricValue(await metrics(), "meshgate_egress_connections_total", {
        external: "gone",
        outcome: "failed",
      }),
    ).toBe(1);
  });

  it("connect_refuses_the_wildcard_itself_as_a_target_with_400_and_nothing_connected", async () => {
    const { sidecar } = await start();
    const before = connections();
    const r = await connectTo(sidecar.ports.outbound, `*.corp.test:${corp.port}`);
    expect(r.status).toBe(400);
    expect(errorCode(r)).toBe("egress_bad_authority");
    await sleep(50);
    expect(connections()).toEqual(before);
    expect(asked).toEqual([]);
  });
});

// ───────────────────────────── plain HTTP ─────────────────────────────

describe("plain HTTP under a wildcard", () => {
  it.each([
    [
      "forwards_an_absolute_form_request_to_the_name_asked_for_with_its_host_header",
      () => `http://A.Corp.Test:${corp.port}/x/../y?q=1`,
      () => undefined,
      "a.corp.test",
    ],
    [
      "forwards_an_absolute_form_request_to_a_name_several_labels_deep",
      () => `http://x.y.a.corp.test.:${corp.port}/x/../y?q=1`,
      () => undefined,
      "x.y.a.corp.test",
    ],
    [
      "forwards_an_origin_form_request_named_by_its_host_header",
      () => "/x/../y?q=1",
      () => `Deep.B.corp.test:${corp.port}`,
      "deep.b.corp.test",
    ],
  ])("%s", async (_name, target, host: () => string | undefined, name) => {
    const { sidecar, metrics } = await start();
    const h = host();
    const r = await send(sidecar.ports.outbound, target(), h === undefined ? {} : { host: h });
    expect(r.status).toBe(200);
    expect(r.body).toBe("hello from outside the mesh\n");
    expect(corp.requests).toHaveLength(1);
    expect(corp.requests[0]).toMatchObject({
      method: "GET",
      url: "/y?q=1",
      headers: { host: `${name}:${corp.port}` },
    });
    expect(asked).toEqual([name]);
    await until(() => accessLines(sidecar.logs).length === 1);
    expect(accessLines(sidecar.logs)[0]).toMatchObject({
      direction: "outbound",
      peer: "corp",
      mtls: false,
      path: "/y",
      status: 200,
    });
    expect(
      metricValue(await metrics(), "meshgate_requests_total", {
        proxy: "sidecar",
        direction: "outbound",
        peer: "corp",
        code_class: "2xx",
      }),
    ).toBe(1);
  });

  it("keeps_one_upstream_connection_per_name_and_reuses_it_for_that_name", async () => {
    const { sidecar } = await start();
    const before = corp.connections;
    for (const name of ["a.corp.test", "b.corp.test", "a.corp.test", "b.corp.test"])
      expect((await send(sidecar.ports.outbound, `http://${name}:${corp.port}/`)).status).toBe(200);
    expect(corp.requests.map((q) => q.headers.host)).toEqual(
      ["a", "b", "a", "b"].map((l) => `${l}.corp.test:${corp.port}`),
    );
    expect(corp.connections).toBe(before + 2);
  });

  it("keeps_a_names_pooled_connection_across_a_reload_that_leaves_its_wildcard_alone", async () => {
    const e = await start();
    const port = e.sidecar.ports.outbound;
    const before = corp.connections;
    expect((await send(port, `http://a.corp.test:${corp.port}/1`)).status).toBe(200);
    // Another external added: corp is declared the same way, its names keep their connections.
    const other = external("other", "other.test", trap.port);
    expect(await e.sidecar.reload(JSON.stringify(e.configWith([wildcard(), other])))).toMatchObject({
      ok: true,
      changed: true,
    });
    expect((await send(port, `http://a.corp.test:${corp.port}/2`)).status).toBe(200);
    expect(corp.connections).toBe(before + 1);
    // corp's connect timeout changed: a new state of its own, new connections.
    expect(
      await e.sidecar.reload(JSON.stringify(e.configWith([wildcard({ connectTimeoutMs: 2500 }), other]))),
    ).toMatchObject({ ok: true, changed: true });
    expect((await send(port, `http://a.corp.test:${corp.port}/3`)).status).toBe(200);
    expect(corp.connections).toBe(before + 2);
  });

  type Row = [
    name: string,
    target: () => string,
    host: () => string | undefined,
    status: number,
    code: string,
  ];
  const rows: Row[] = [
    [
      "refuses_the_wildcards_domain_itself",
      () => `http://corp.test:${corp.port}/`,
      () => undefined,
      403,
      "destination_not_declared",
    ],
    [
      "refuses_a_lookalike_domain",
      () => `http://evilcorp.test:${corp.port}/`,
      () => undefined,
      403,
      "destination_not_declared",
    ],
    [
      "refuses_another_domain",
      () => `http://b.other.test:${corp.port}/`,
      () => undefined,
      403,
      "destination_not_declared",
    ],
    [
      "refuses_an_address_at_the_wildcards_port",
      () => `http://127.0.0.1:${corp.port}/`,
      () => undefined,
      403,
      "destination_not_declared",
    ],
    [
      "refuses_a_covered_name_at_another_port",
      () => `http://a.corp.test:${trap.port}/`,
      () => undefined,
      403,
      "destination_not_declared",
    ],
    // No port means 80, which a passthrough wildcard at another port does not answer to.
    [
      "refuses_a_covered_name_with_the_port_omitted",
      () => "http://a.corp.test/",
      () => undefined,
      403,
      "destination_not_declared",
    ],
    [
      "refuses_a_host_header_naming_the_domain_itself",
      () => "/",
      () => `corp.test:${corp.port}`,
      403,
      "destination_not_declared",
    ],
    [
      "refuses_a_host_header_naming_the_wildcard_itself",
      () => "/",
      () => `*.corp.test:${corp.port}`,
      400,
      "bad_host",
    ],
  ];
  it.each(rows)("%s_with_nothing_connected", async (_name, target, host, status, code) => {
    const { sidecar } = await start();
    const before = connections();
    const h = host();
    const r = await send(sidecar.ports.outbound, target(), h === undefined ? {} : { host: h });
    expect(r.status).toBe(status);
    expect(r.headers["x-meshgate-error"]).toBe(code);
    expect(errorCode(r)).toBe(code);
    await sleep(50);
    expect(connections()).toEqual(before);
    expect(asked).toEqual([]);
  });
});

// ───────────────────────────── precedence ─────────────────────────────

describe("precedence", () => {
  // configWith sorts externals by name: each order puts the less specific one first, then last.
  it.each([
    ["an_exact_host_wins_over_a_wildcard_declared_before_it", "corp", "pinned"],
    ["an_exact_host_wins_over_a_wildcard_declared_after_it", "z-corp", "pinned"],
  ])("connect_%s", async (_name, wild, exact) => {
    const { sidecar, metrics } = await start([
      external(wild, "*.corp.test", corp.port),
      external(exact, "api.corp.test", corp.port),
    ]);
    for (const name of ["api.corp.test", "www.corp.test"]) {
      const t = await connectTo(sidecar.ports.outbound, `${name}:${corp.port}`);
      expect(t.status).toBe(200);
      t.socket.end();
    }
    await until(() => egressLines(sidecar.logs).length === 2, 3000, "the egress lines");
    expect(
      egressLines(sidecar.logs)
        .map((l) => `${String(l.target)} ${String(l.external)}`)
        .sort(),
    ).toEqual([`api.corp.test:${corp.port} ${exact}`, `www.corp.test:${corp.port} ${wild}`]);
    const text = await metrics();
    for (const e of [wild, exact])
      expect(
        metricValue(text, "meshgate_egress_connections_total", { external: e, outcome: "opened" }),
        e,
      ).toBe(1);
  });

  it.each([
    ["the_longer_wildcard_wins_declared_after_the_shorter", "corp", "zone-eu"],
    ["the_longer_wildcard_wins_declared_before_the_shorter", "corp", "a-zone-eu"],
  ])("plain_http_%s", async (_name, shorter, longer) => {
    const { sidecar, metrics } = await start([
      external(shorter, "*.corp.test", corp.port),
      external(longer, "*.eu.corp.test", corp.port),
    ]);
    // eu.corp.test itself is not below *.eu.corp.test, but is below *.corp.test.
    for (const name of ["x.eu.corp.test", "y.x.eu.corp.test", "eu.corp.test", "x.us.corp.test"])
      expect((await send(sidecar.ports.outbound, `http://${name}:${corp.port}/`)).status, name).toBe(200);
    await until(() => accessLines(sidecar.logs).length === 4);
    expect(accessLines(sidecar.logs).map((l) => l.peer)).toEqual([longer, longer, shorter, shorter]);
    const text = await metrics();
    const requests = (peer: string) =>
      metricValue(text, "meshgate_requests_total", { direction: "outbound", peer });
    expect([requests(longer), requests(shorter)]).toEqual([2, 2]);
  });

  // With TLS the sidecar originates, `http://<name>/` (port 80) reaches every such external: which one
  // takes a name shows in which server (each at its own port, with its own certificate) gets the request.
  it("plain_http_on_port_80_goes_to_the_server_of_the_exact_host_then_of_the_longest_wildcard", async () => {
    const originate = (name: string, host: string, s: HTTPSOutside) =>
      external(name, host, s.port, { tls: "originate", ca: s.ca.pem });
    const { sidecar } = await start([
      originate("corp", "*.corp.test", wildTls),
      originate("eu", "*.eu.corp.test", euTls),
      originate("pinned", "a.corp.test", oneTls),
    ]);
    for (const name of ["a.corp.test", "b.corp.test", "x.eu.corp.test"])
      expect((await send(sidecar.ports.outbound, `http://${name}/p`)).status, name).toBe(200);
    expect(tlsSeen).toEqual([
      { server: "one", url: "/p", host: `a.corp.test:${oneTls.port}`, servername: "a.corp.test" },
      { server: "wild", url: "/p", host: `b.corp.test:${wildTls.port}`, servername: "b.corp.test" },
      { server: "eu", url: "/p", host: `x.eu.corp.test:${euTls.port}`, servername: "x.eu.corp.test" },
    ]);
  });
});

// ───────────────────────────── TLS the sidecar originates ─────────────────────────────

describe("TLS the sidecar originates under a wildcard", () => {
  const originating = (s: HTTPSOutside) =>
    start([external("corp", "*.corp.test", s.port, { tls: "originate", ca: s.ca.pem })]);

  it.each([
    [
      "verifies_a_wildcard_certificate_for_the_name_asked_for_with_the_port_omitted",
      () => wildTls,
      "a.corp.test",
      () => "/s?q=1",
    ],
    [
      "verifies_a_wildcard_certificate_for_the_name_asked_for_at_the_declared_port",
      () => wildTls,
      "b.corp.test",
      () => `:${wildTls.port}/s?q=1`,
    ],
    ["verifies_a_certificate_naming_only_the_name_asked_for", () => oneTls, "a.corp.test", () => "/s?q=1"],
  ])("%s", async (_name, server, name, rest) => {
    const s = server();
    const { sidecar } = await originating(s);
    const r = await send(sidecar.ports.outbound, `http://${name}${rest()}`);
    expect(r.status).toBe(200);
    expect(r.body).toBe(`${s === wildTls ? "wild" : "one"}: GET /s?q=1`);
    expect(tlsSeen).toEqual([
      { server: s === wildTls ? "wild" : "one", url: "/s?q=1", host: `${name}:${s.port}`, servername: name },
    ]);
    expect(asked).toEqual([name]);
  });

  // A failed verification is a connection that could not be opened: the server is reached (TCP) but
  // never gets a request.
  it.each([
    // *.corp.test in a certificate covers one label only.
    [
      "answers_503_and_sends_nothing_for_a_name_two_labels_below_a_wildcard_certificate",
      () => wildTls,
      "x.a.corp.test",
    ],
    ["answers_503_and_sends_nothing_for_a_name_the_certificate_does_not_name", () => oneTls, "b.corp.test"],
  ])("%s", async (_name, server, name) => {
    const s = server();
    const { sidecar } = await originating(s);
    const before = s.connections;
    const r = await send(sidecar.ports.outbound, `http://${name}/secret?token=t`);
    expect(r.status).toBe(503);
    expect(errorCode(r)).toBe("upstream_connect_failure");
    expect(s.connections).toBe(before + 1);
    expect(tlsSeen).toEqual([]);
    await until(() => accessLines(sidecar.logs).length === 1);
    expect(sidecar.logs.find((l) => l.event === "upstream_error")).toMatchObject({
      code: "ERR_TLS_CERT_ALTNAME_INVALID",
    });
    expect(accessLines(sidecar.logs)[0]).toMatchObject({ peer: "corp", mtls: false, status: 503 });
  });

  it("never_sends_a_request_for_another_domain_and_never_a_names_request_over_another_names_connection", async () => {
    const { sidecar } = await originating(wildTls);
    const before = connections();
    const denied = await send(sidecar.ports.outbound, "http://b.other.test/");
    expect(denied.status).toBe(403);
    expect(errorCode(denied)).toBe("destination_not_declared");
    expect(connections()).toEqual(before);
    expect(asked).toEqual([]);
    const tlsBefore = wildTls.connections;
    for (const name of ["a.corp.test", "b.corp.test", "a.corp.test"])
      expect((await send(sidecar.ports.outbound, `http://${name}/n`)).status).toBe(200);
    // Each name over its own connection, verified (and sent SNI) for it.
    expect(tlsSeen.map((s) => s.servername)).toEqual(["a.corp.test", "b.corp.test", "a.corp.test"]);
    expect(tlsSeen.map((s) => s.host)).toEqual(["a", "b", "a"].map((l) => `${l}.corp.test:${wildTls.port}`));
    expect(wildTls.connections).toBe(tlsBefore + 2);
  });
});

// ───────────────────────────── many names ─────────────────────────────

/** A plain HTTP server that knows which of its connections are still open, by the Host they served. */
async function hostTracker(): Promise<{
  port: number;
  open: Set<Socket>;
  hostOf: Map<Socket, string>;
  requests: number;
  close(): Promise<void>;
}> {
  const open = new Set<Socket>();
  const hostOf = new Map<Socket, string>();
  const server = http.createServer((req, res) => {
    t.requests++;
    if (!hostOf.has(req.socket)) hostOf.set(req.socket, req.headers.host ?? "");
    res.end(`for ${req.headers.host}`);
  });
  // The sidecar's idle connections are closed by the sidecar, never by this server.
  server.keepAliveTimeout = 60_000;
  server.on("connection", (c: Socket) => {
    open.add(c);
    c.once("close", () => open.delete(c));
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const t = {
    port: (server.address() as AddressInfo).port,
    open,
    hostOf,
    requests: 0,
    close: () =>
      new Promise<void>((r) => {
        for (const c of open) c.destroy();
        server.close(() => r());
      }),
  };
  return t;
}

describe("many names under a wildcard", () => {
  it("answers_300_distinct_names_and_again_the_evicted_ones_closing_their_connections", async () => {
    const s = await hostTracker();
    try {
      const { sidecar, metrics } = await start([external("corp", "*.corp.test", s.port)]);
      const names = Array.from({ length: 300 }, (_, i) => `n${i}.corp.test`);
      const t0 = performance.now();
      // In batches of 20: each name's first request makes its cluster.
      for (let i = 0; i < names.length; i += 20)
        await Promise.all(
          names.slice(i, i + 20).map(async (name) => {
            const r = await send(sidecar.ports.outbound, `http://${name}:${s.port}/`);
            expect(r.status, name).toBe(200);
            expect(r.body).toBe(`for ${name}:${s.port}`);
          }),
        );
      const ms = performance.now() - t0;
      expect(s.requests).toBe(300);
      // Well within the pools' idle keep-alive (4 s), the connections gone are the ones eviction closed
      // (on a machine too slow for that, idle sweeps would close them too, and this proves nothing).
      if (ms < 3000) {
        await until(() => s.open.size <= 256, 2000, "the evicted names' connections closed");
        expect(s.open.size).toBe(256);
        // The names used last (after the first three batches) kept theirs.
        const openHosts = new Set([...s.open].map((c) => s.hostOf.get(c)));
        for (const name of names.slice(60)) expect(openHosts.has(`${name}:${s.port}`), name).toBe(true);
      }
      // The evicted names are answered again.
      for (const name of names.slice(0, 5))
        expect((await send(sidecar.ports.outbound, `http://${name}:${s.port}/again`)).status).toBe(200);
      expect(s.requests).toBe(305);
      expect(
        metricValue(await metrics(), "meshgate_requests_total", {
          direction: "outbound",
          peer: "corp",
          code_class: "2xx",
        }),
      ).toBe(305);
    } finally {
      destroyClients();
      await sidecars.stopAll();
      await s.close();
    }
  });
});

// ───────────────────────────── WebSocket ─────────────────────────────

describe("WebSocket under a wildcard", () => {
  it.each([
    ["tunnels_a_websocket_to_the_name_asked_for", false],
    ["tunnels_a_websocket_inside_tls_verified_for_the_name_asked_for", true],
  ])("%s", async (_name, originate) => {
    const { sidecar } = await start([
      originate
        ? external("corp", "*.corp.test", wildTls.port, { tls: "originate", ca: wildTls.ca.pem })
        : wildcard(),
    ]);
    const port = originate ? wildTls.port : corp.port;
    const ws = await openWebSocket(
      sidecar.ports.outbound,
      `http://chat.corp.test:${port}/chat?room=1`,
      `127.0.0.1:${sidecar.ports.outbound}`,
    );
    expect(ws.status).toBe(101);
    const payload = randomBytes(4096);
    ws.socket.write(payload);
    expect((await within(readBytes(ws.socket, payload.length, ws.rest), "the echo")).equals(payload)).toBe(
      true,
    );
    if (originate)
      expect(tlsSeen).toEqual([
        { server: "wild", url: "/chat?room=1", host: `chat.corp.test:${port}`, servername: "chat.corp.test" },
      ]);
    else
      expect(corp.requests).toMatchObject([
        { url: "/chat?room=1", headers: { host: `chat.corp.test:${port}`, upgrade: "websocket" } },
      ]);
    expect(asked).toEqual(["chat.corp.test"]);
    ws.socket.end();
    await until(() => accessLines(sidecar.logs).length === 1, 3000, "the access line");
    expect(accessLines(sidecar.logs)[0]).toMatchObject({ peer: "corp", upgrade: "websocket", status: 101 });
  });

  it("refuses_a_websocket_to_a_name_the_certificate_does_not_cover_before_the_server_sees_it", async () => {
    const { sidecar } = await start([
      external("corp", "*.corp.test", wildTls.port, { tls: "originate", ca: wildTls.ca.pem }),
    ]);
    const ws = await openWebSocket(
      sidecar.ports.outbound,
      `http://x.chat.corp.test/chat`,
      `127.0.0.1:${sidecar.ports.outbound}`,
    );
    expect(ws.status).toBe(503);
    expect((await within(readToEnd(ws.socket, ws.rest), "the refusal's body")).toString()).toContain(
      '"code":"upstream_connect_failure"',
    );
    expect(tlsSeen).toEqual([]);
    await until(() => sidecar.logs.some((l) => l.event === "upstream_error"), 3000, "the upstream error");
    expect(sidecar.logs.find((l) => l.event === "upstream_error")).toMatchObject({
      code: "ERR_TLS_CERT_ALTNAME_INVALID",
    });
  });

  it("refuses_a_websocket_to_the_wildcards_domain_itself_with_nothing_connected", async () => {
    const { sidecar } = await start();
    const before = connections();
    const ws = await openWebSocket(
      sidecar.ports.outbound,
      `http://corp.test:${corp.port}/chat`,
      `127.0.0.1:${sidecar.ports.outbound}`,
    );
    expect(ws.status).toBe(403);
    expect((await within(readToEnd(ws.socket, ws.rest), "the refusal's body")).toString()).toContain(
      '"code":"destination_not_declared"',
    );
    expect(connections()).toEqual(before);
    expect(asked).toEqual([]);
  });
});

// ───────────────────────────── the contract ─────────────────────────────

describe("the runtime contract", () => {
  const web = () =>
    meshConfigs({
      web: { image: "r/web:1", port: 8080, calls: ["orders"] },
      orders: { image: "r/orders:1", port: 8080, allow: [{ from: ["web"] }] },
    }).find((c) => c.name === "web")!;
  const withExternals = (list: External[]): SidecarRuntimeConfig => {
    const { hash: _h, ...rest } = web();
    return sealRuntimeConfig<SidecarRuntimeConfig>({
      ...rest,
      outbound: { ...rest.outbound, external: list },
    });
  };
  const refusal = (f: () => unknown) => {
    try {
      f();
    } catch (e) {
      return e;
    }
    return null;
  };

  it("refuses_a_wildcard_external_with_a_local_port_naming_the_field", () => {
    const config = withExternals([
      external("api", "api.example.com", 443, { localPort: 15501 }),
      external("corp", "*.corp.test", 443, { localPort: 15502 }),
    ]);
    for (const e of [
      refusal(() => validateRuntimeConfig(config)),
      refusal(() => loadRuntimeConfig(JSON.stringify(config))),
    ]) {
      expect(e).toBeInstanceOf(RuntimeConfigError);
      expect(e).toMatchObject({ code: "E_RT_CONFIG_INVALID", path: "outbound.external[1].localPort" });
      expect((e as Error).message).toContain("wildcard host");
    }
  });

  it("refuses_a_range_external_with_a_local_port_naming_the_field", () => {
    const e = refusal(() =>
      validateRuntimeConfig(withExternals([external("net", "10.20.0.0/16", 5432, { localPort: 15501 })])),
    );
    expect(e).toMatchObject({ code: "E_RT_CONFIG_INVALID", path: "outbound.external[0].localPort" });
    expect((e as Error).message).toContain("CIDR range");
  });

  it("accepts_a_wildcard_external_without_a_local_port_and_an_exact_one_with_one", () => {
    const config = withExternals([
      external("api", "api.example.com", 443, { localPort: 15501 }),
      external("corp", "*.corp.test", 443),
    ]);
    expect(loadRuntimeConfig(JSON.stringify(config), "sidecar").outbound.external.map((e) => e.host)).toEqual(
      ["api.example.com", "*.corp.test"],
    );
  });

  it("a_running_sidecar_refuses_a_reload_giving_a_wildcard_a_local_port_and_keeps_serving", async () => {
    const e = await start();
    const r = await e.sidecar.reload(JSON.stringify(e.configWith([wildcard({ localPort: 15503 })])));
    expect(r).toMatchObject({ ok: false, code: "E_RT_CONFIG_INVALID" });
    expect(e.sidecar.ports.external).toEqual({});
    expect((await send(e.sidecar.ports.outbound, `http://a.corp.test:${corp.port}/still`)).status).toBe(200);
  });
});

// ───────────────────────────── ranges (CIDR) ─────────────────────────────

describe("range destinations", () => {
  /** `net`: the addresses of a range at corp's port, plain (the runtime contract takes loopback ranges). */
  const range = (cidr: string) => external("net", cidr, corp.port);

  it("connect_under_a_range_reaches_the_address_asked_for_without_a_lookup", async () => {
    const { sidecar } = await start([range("127.0.0.0/30")]);
    const t = await connectTo(sidecar.ports.outbound, `127.0.0.1:${corp.port}`);
    expect(t.status).toBe(200);
    t.socket.write(`GET /ranged HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n\r\n`);
    const reply = (await within(readToEnd(t.socket, t.rest), "the reply through the tunnel")).toString();
    expect(reply).toMatch(/^HTTP\/1\.1 200 /);
    t.socket.end();
    expect(corp.requests).toMatchObject([{ url: "/ranged" }]);
    expect(asked).toEqual([]);
    await until(() => egressLines(sidecar.logs).length === 1, 3000, "the egress line");
    expect(egressLines(sidecar.logs)[0]).toMatchObject({ external: "net", target: `127.0.0.1:${corp.port}` });
  });

  it("forwards_plain_http_under_a_range_to_the_address_asked_for", async () => {
    const { sidecar, metrics } = await start([range("127.0.0.0/30")]);
    const r = await send(sidecar.ports.outbound, `http://127.0.0.1:${corp.port}/r?q=1`);
    expect(r.status).toBe(200);
    expect(corp.requests).toMatchObject([{ url: "/r?q=1", headers: { host: `127.0.0.1:${corp.port}` } }]);
    expect(
      metricValue(await metrics(), "meshgate_requests_total", { direction: "outbound", peer: "net" }),
    ).toBe(1);
  });

  it.each([
    ["connect_refuses_an_address_outside_the_range", () => `127.0.0.9:${corp.port}`, 403],
    ["connect_refuses_an_address_of_the_range_at_another_port", () => `127.0.0.1:${trap.port}`, 403],
    ["connect_refuses_a_name_under_a_range", () => `a.corp.test:${corp.port}`, 403],
  ])("%s_with_nothing_connected", async (_name, authority, status) => {
    const { sidecar } = await start([range("127.0.0.0/30")]);
    const before = connections();
    const r = await connectTo(sidecar.ports.outbound, authority());
    expect(r.status).toBe(status);
    expect(errorCode(r)).toBe("egress_denied");
    await sleep(50);
    expect(connections()).toEqual(before);
    expect(asked).toEqual([]);
  });

  it("an_exact_address_wins_over_a_range_and_the_longer_prefix_over_the_shorter", async () => {
    const { sidecar } = await start([
      external("wide", "127.0.0.0/8", corp.port),
      external("narrow", "127.0.0.0/29", corp.port),
      external("one", "127.0.0.2", corp.port),
    ]);
    for (const [address, name] of [
      ["127.0.0.1", "narrow"],
      ["127.0.0.2", "one"],
      ["127.0.0.10", "wide"],
    ] as const) {
      const t = await connectTo(sidecar.ports.outbound, `${address}:${corp.port}`);
      // 127.0.0.10 and .2 may not answer (nothing listens there): the decision is what is checked.
      t.socket.destroy();
      await until(
        () => egressLines(sidecar.logs).some((l) => l.target === `${address}:${corp.port}`),
        3000,
        `the egress line of ${address}`,
      );
      expect(egressLines(sidecar.logs).find((l) => l.target === `${address}:${corp.port}`)).toMatchObject({
        external: name,
      });
    }
  });
});

// ───────────────────────────── replay of the sidecar's egress log ─────────────────────────────

describe("meshgate replay of tunnels and requests outside the mesh", () => {
  /** The spec the test sidecar's config comes from, with `corp` as given. */
  const specWith = (corpHost: string): PolicyInput => {
    const r = parseSpec({
      name: "mesh",
      namespace: NS,
      trustDomain: TD,
      services: {
        web: { image: "r/web:1", port: 8080, calls: ["orders", "corp"] },
        orders: { image: "r/orders:1", port: 8080, allow: [{ from: ["web"] }] },
      },
      external: { corp: { host: corpHost, port: corp.port, allow: [{ from: ["web"] }] } },
    });
    if (!r.ok) throw new Error(r.errors.map((e) => e.message).join("; "));
    return policyInput(r.spec);
  };

  it("reproduces_the_logged_tunnels_and_lists_those_a_narrower_host_would_refuse", async () => {
    const { sidecar } = await start();
    for (const name of ["a.corp.test", "b.corp.test"]) {
      const t = await connectTo(sidecar.ports.outbound, `${name}:${corp.port}`);
      expect(t.status).toBe(200);
      t.socket.end();
    }
    const denied = await connectTo(sidecar.ports.outbound, `corp.test:${corp.port}`);
    expect(denied.status).toBe(403);
    expect((await send(sidecar.ports.outbound, `http://b.corp.test:${corp.port}/p`)).status).toBe(200);
    await until(() => egressLines(sidecar.logs).length === 3, 3000, "three egress lines");
    await until(() => accessLines(sidecar.logs).length === 1, 3000, "the access line");
    const log = sidecar.logs.map((l) => JSON.stringify(l)).join("\n");
    const { requests } = parseAccessLog(log);
    expect(requests).toHaveLength(4);

    // Under the spec the config came from, every logged outcome is reproduced.
    const same = replay(requests, specWith("*.corp.test"));
    expect([same.replayed, same.changed, same.skipped]).toEqual([4, [], []]);

    // Narrowed to one name: the tunnel and the request to b.corp.test would be refused, nothing else.
    const narrowed = replay(requests, specWith("a.corp.test"));
    expect(narrowed.changed.map((c) => [c.request, c.before.verdict, c.after.verdict]).sort()).toEqual([
      [`CONNECT b.corp.test:${corp.port} from web`, "allow", "deny"],
      ["GET b.corp.test /p from web to corp", "allow", "deny"],
    ]);

    // Moved to the domain's own name (which no wildcard covers): the refused tunnel would now go through.
    const exact = replay(requests, specWith("corp.test"));
    // (In log order: a tunnel's line is written when it closes.)
    expect(exact.changed.map((c) => [c.request, c.before.verdict, c.after.verdict]).sort()).toEqual([
      [`CONNECT a.corp.test:${corp.port} from web`, "allow", "deny"],
      [`CONNECT b.corp.test:${corp.port} from web`, "allow", "deny"],
      [`CONNECT corp.test:${corp.port} from web`, "deny", "allow"],
      ["GET b.corp.test /p from web to corp", "allow", "deny"],
    ]);
  });
});
