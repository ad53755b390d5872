/**
 * Plain HTTP to destinations outside the mesh through the sidecar, with real sockets on 127.0.0.1: requests
 * on the proxy port (absolute-form, or origin-form named by Host) to a declared external are forwarded once
 * with the app's end-to-end headers and the external's Host, bodies streamed both ways; deny by default
 * with nothing connected; no retry; the external's timeout; truncated responses never made whole; TLS the
 * sidecar originates (verified against the external's CA, for its host) on the proxy port and on the
 * external's local port (half-closes passed on both ways); reload between passthrough and origination;
 * WebSockets; metrics and access lines.
 */
import { createHash, randomBytes } from "node:crypto";
import http from "node:http";
import type { AddressInfo, Socket } from "node:net";
import tls, { type TLSSocket } from "node:tls";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { tempDir } from "../pki/support.ts";
import {
  answerWebSocket,
  destroyClients,
  dial,
  egressSidecars,
  ended,
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
import { metricValue, until } from "./support.ts";

// ───────────────────────────── servers outside the mesh ─────────────────────────────

let tmp: Awaited<ReturnType<typeof tempDir>>;
let sidecars: EgressSidecars;
/** A plain HTTP external (declared as `api`). */
let api: HTTPOutside;
/** Never declared: a request that reached it would show in its connections. */
let trap: HTTPOutside;
/** An HTTPS server for `localhost` (declared as `site`), its certificate from a test CA. */
let web: HTTPSOutside;
/** An HTTPS server whose certificate, from the same CA, names `other.example`. */
let other: HTTPSOutside;
/** A raw TLS server for `localhost`: greets, half-closes, then records what the client still sends. */
let greeter: tls.Server;
let greeterPort: number;

interface TlsSeen {
  readonly server: string;
  readonly method: string;
  readonly url: string;
  readonly headers: http.IncomingHttpHeaders;
  readonly encrypted: boolean;
  readonly servername: string | false | null | undefined;
}
/** Requests (and WebSocket handshakes) the HTTPS servers received. */
const tlsSeen: TlsSeen[] = [];
/** What the greeter received from each client after its own FIN, with the SNI it was sent. */
const greeted: { servername: string | false | null | undefined; bytes: string }[] = [];

const seenOverTls = (server: string, req: http.IncomingMessage): void => {
  const socket = req.socket as TLSSocket;
  tlsSeen.push({
    server,
    method: req.method ?? "",
    url: req.url ?? "",
    headers: req.headers,
    encrypted: socket.encrypted,
    servername: socket.servername,
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
  tmp = await tempDir("sidecar-egress-http");
  sidecars = await egressSidecars(tmp.dir);
  api = await httpOutside();
  trap = await httpOutside();
  web = await httpsOutside(tmp.dir, answerOverTls("site"));
  other = await httpsOutside(tmp.dir, answerOverTls("other"), { ca: web.ca, dnsName: "other.example" });
  for (const [name, s] of [
    ["site", web],
    ["other", other],
  ] as const)
    s.server.on("upgrade", (req: http.IncomingMessage, socket: Socket, head: Buffer) => {
      seenOverTls(name, req);
      answerWebSocket(req, socket, head);
    });
  greeter = tls.createServer({ ...(await web.ca.leaf("localhost")), allowHalfOpen: true }, (s) => {
    s.on("error", () => s.destroy());
    const chunks: Buffer[] = [];
    s.on("data", (d: Buffer) => chunks.push(d));
    s.on("end", () => {
      greeted.push({ servername: s.servername, bytes: Buffer.concat(chunks).toString() });
      s.destroy();
    });
    s.end("HELLO");
  });
  await new Promise<void>((r) => greeter.listen(0, "127.0.0.1", r));
  greeterPort = (greeter.address() as AddressInfo).port;
}, 30_000);
afterEach(async () => {
  destroyClients();
  await sidecars?.stopAll();
  api?.reset();
  trap?.reset();
  tlsSeen.length = 0;
  greeted.length = 0;
});
afterAll(async () => {
  await api?.close();
  await trap?.close();
  await web?.close();
  await other?.close();
  await new Promise((r) => (greeter ? greeter.close(r) : r(null)));
  await tmp?.cleanup();
});

/** `api`, plain; `site`, TLS the sidecar originates, trusting the test CA, with a local port. */
const declared = (o: { api?: Partial<External>; site?: Partial<External> } = {}): External[] => [
  external("api", "127.0.0.1", api.port, o.api),
  external("site", "localhost", web.port, {
    tls: "originate",
    ca: web.ca.pem,
    localPort: 15402,
    ...o.site,
  }),
];

const start = (externals: External[] = declared()) => sidecars.start(externals);

/** Certificates TLS the sidecar originates refuses: where `site` then points, and the TLS error code. */
const REFUSED_CERTIFICATES: [string, () => { port: number; ca: string | null }, string][] = [
  // ca null: the system's roots, which do not know the test CA.
  [
    "the_system_roots_do_not_trust_it",
    () => ({ port: web.port, ca: null }),
    "UNABLE_TO_VERIFY_LEAF_SIGNATURE",
  ],
  ["it_names_another_host", () => ({ port: other.port, ca: web.ca.pem }), "ERR_TLS_CERT_ALTNAME_INVALID"],
];

// ───────────────────────────── clients ─────────────────────────────

interface Reply {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: Buffer;
  /** The response ended cleanly (its framing complete). */
  complete: boolean;
  /** The client's error when the response broke off (ECONNRESET, aborted, …). */
  error: string | null;
}

/**
 * One request to 127.0.0.1:port with `target` written as given (absolute-form or a path) and the headers as
 * given (without `host`, Node sends the sidecar's own address); `body` writes the request body.
 */
function send(
  port: number,
  target: string,
  o: {
    method?: string;
    headers?: http.OutgoingHttpHeaders;
    body?: (req: http.ClientRequest) => Promise<void>;
  } = {},
): Promise<Reply> {
  const reply = new Promise<Reply>((resolve, reject) => {
    const req = http.request({
      host: "127.0.0.1",
      port,
      method: o.method ?? "GET",
      path: target,
      headers: o.headers,
      agent: false,
    });
    req.on("error", reject);
    req.on("response", (res) => {
      const chunks: Buffer[] = [];
      const done = (error: string | null) =>
        resolve({
          status: res.statusCode ?? 0,
          headers: res.headers,
          body: Buffer.concat(chunks),
          complete: error === null && res.complete,
          error,
        });
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("end", () => done(null));
      res.on("error", (e: NodeJS.ErrnoException) => done(e.code ?? e.message));
      res.on("aborted", () => done("aborted"));
    });
    if (o.body) o.body(req).catch((e: Error) => req.destroy(e));
    else req.end();
  });
  return within(reply, `${o.method ?? "GET"} ${target}`);
}

const errorCode = (r: Reply) => (JSON.parse(r.body.toString()) as { error: { code: string } }).error.code;

/** Reads `socket` until `text` arrived; resolves with everything read. */
function readUntil(socket: Socket, text: string): Promise<string> {
  let got = "";
  return within(
    new Promise<string>((resolve, reject) => {
      const onData = (d: Buffer) => {
        got += d.toString("latin1");
        if (!got.includes(text)) return;
        socket.off("data", onData);
        resolve(got);
      };
      socket.on("data", onData);
      socket.once("error", reject);
      socket.once("close", () => reject(new Error(`closed before ${JSON.stringify(text)}: ${got}`)));
      socket.resume();
    }),
    `reading ${JSON.stringify(text)}`,
  );
}

/** One plaintext HTTP/1.1 request on a local port, then the app's FIN; everything until the sidecar's end. */
async function overLocalPort(port: number, target: string): Promise<string> {
  const c = dial(port);
  c.end(`GET ${target} HTTP/1.1\r\nhost: localhost\r\n\r\n`);
  return (await within(readToEnd(c), `GET ${target} through local port ${port}`)).toString("latin1");
}

const accessLines = (logs: Record<string, unknown>[]) => logs.filter((l) => l.event === "access");

// ───────────────────────────── tests ─────────────────────────────

describe("plain HTTP to a declared external", () => {
  const APP_HEADERS = {
    "x-app": "a1",
    authorization: "Bearer app-token",
    cookie: "session=s1",
    "proxy-authorization": "Basic cHJveHk6c2VjcmV0",
    "x-meshgate-peer": "spiffe://mesh.example/ns/shop/sa/admin",
    "x-forwarded-client-cert": "By=spiffe://mesh.example/ns/shop/sa/admin;URI=x",
    connection: "keep-alive, x-hop",
    "x-hop": "listed in Connection",
    "keep-alive": "timeout=5",
  };
  const RAW_TARGET = "/a/./b/../c//d/%7Euser?x=1&y=%2F";
  const CANONICAL = "/a/c/d/~user?x=1&y=%2F";

  it.each([
    // Without a Host header of its own, Node sends the proxy's address: the external must not see it.
    [
      "forwards_an_absolute_form_request_with_the_canonical_target_and_the_externals_host",
      (p: number) => `http://127.0.0.1:${p}${RAW_TARGET}`,
      (): Record<string, string> => ({}),
    ],
    [
      "forwards_an_origin_form_request_named_by_its_host_header",
      () => RAW_TARGET,
      () => ({ host: `127.0.0.1:${api.port}` }),
    ],
  ])("%s", async (_name, target, host) => {
    const { sidecar } = await start();
    api.handler = (_req, res) => {
      res.writeHead(201, { "content-type": "text/plain", "x-outside": "yes", "set-cookie": "k=v" });
      res.end("made outside");
    };
    const r = await send(sidecar.ports.outbound, target(api.port), {
      headers: { ...APP_HEADERS, ...host() },
    });
    expect(r.status).toBe(201);
    expect(r.headers["x-outside"]).toBe("yes");
    expect(r.headers["set-cookie"]).toEqual(["k=v"]);
    expect(r.body.toString()).toBe("made outside");
    expect(r.complete).toBe(true);

    expect(api.requests).toHaveLength(1);
    const seen = api.requests[0]!;
    expect(seen.url).toBe(CANONICAL);
    expect(seen.headers.host).toBe(`127.0.0.1:${api.port}`);
    expect(seen.headers).toMatchObject({
      "x-app": "a1",
      authorization: "Bearer app-token",
      cookie: "session=s1",
    });
    for (const name of [
      "proxy-authorization",
      "x-meshgate-peer",
      "x-forwarded-client-cert",
      "x-hop",
      "keep-alive",
      // Nothing of the mesh is added for a third party.
      "x-request-id",
      "traceparent",
      "x-forwarded-for",
    ])
      expect(seen.headers[name], name).toBeUndefined();

    await until(() => accessLines(sidecar.logs).length === 1);
    expect(accessLines(sidecar.logs)[0]).toMatchObject({
      direction: "outbound",
      peer: "api",
      mtls: false,
      path: "/a/c/d/~user",
      status: 201,
      completed: true,
    });
  });

  it.each([
    ["streams_a_chunked_post_body_to_the_external_intact_before_the_app_finishes_it", false],
    ["streams_a_content_length_post_body_to_the_external_intact_before_the_app_finishes_it", true],
  ])("%s", async (_name, withLength) => {
    const { sidecar } = await start();
    const body = randomBytes(300 * 1024);
    let received = 0;
    api.handler = (req, res) => {
      const hash = createHash("sha256");
      req.on("data", (d: Buffer) => {
        received += d.length;
        hash.update(d);
      });
      req.on("end", () => {
        res.writeHead(200, { "content-type": "application/json" });
        res.end(
          JSON.stringify({
            bytes: received,
            sha256: hash.digest("hex"),
            te: req.headers["transfer-encoding"],
          }),
        );
      });
    };
    const first = body.subarray(0, 16 * 1024);
    const r = await send(sidecar.ports.outbound, `http://127.0.0.1:${api.port}/upload`, {
      method: "POST",
      headers: {
        "content-type": "application/octet-stream",
        ...(withLength ? { "content-length": String(body.length) } : {}),
      },
      body: async (req) => {
        req.write(first);
        // The first chunk reaches the external while the app still holds the rest: nothing buffers it whole.
        await until(() => received >= first.length, 3000, "the first chunk at the external");
        for (let i = first.length; i < body.length; i += 50 * 1024)
          req.write(body.subarray(i, i + 50 * 1024));
        req.end();
      },
    });
    expect(r.status).toBe(200);
    expect(JSON.parse(r.body.toString())).toEqual({
      bytes: body.length,
      sha256: createHash("sha256").update(body).digest("hex"),
      ...(withLength ? {} : { te: "chunked" }),
    });
    expect(api.requests[0]!.headers["content-length"]).toBe(withLength ? String(body.length) : undefined);
  });

  it("forwards_to_an_ipv6_external_named_in_any_form_of_its_address_with_a_bracketed_host", async () => {
    const seen: string[] = [];
    const v6 = http.createServer((req, res) => {
      seen.push(`${req.url} ${req.headers.host}`);
      res.end("over ipv6");
    });
    await new Promise<void>((r) => v6.listen(0, "::1", r));
    const port = (v6.address() as AddressInfo).port;
    try {
      const { sidecar } = await start([external("v6", "::1", port)]);
      for (const target of [`http://[::1]:${port}/a`, `http://[0:0:0:0:0:0:0:1]:${port}/b`]) {
        const r = await send(sidecar.ports.outbound, target);
        expect(r.status).toBe(200);
        expect(r.body.toString()).toBe("over ipv6");
      }
      expect(seen).toEqual([`/a [::1]:${port}`, `/b [::1]:${port}`]);
    } finally {
      await new Promise((r) => v6.close(r));
    }
  });
});

describe("refused targets in the access log", () => {
  // An app that put a partner's credentials in the URL (https://user:password@…) and sent it through the
  // proxy port: refused (the sidecar originates TLS itself), and the line names the target — never the
  // password, nor the query.
  it.each([
    [
      "logs_a_refused_https_target_without_its_userinfo",
      (p: number) => `https://app:http-pw-1@127.0.0.1:${p}/x`,
      (p: number) => `https://127.0.0.1:${p}/x`,
    ],
    [
      "logs_a_refused_https_target_without_a_password_holding_an_at_sign",
      (p: number) => `https://app:http@pw-2@127.0.0.1:${p}/x?key=http-pw-3`,
      (p: number) => `https://127.0.0.1:${p}/x`,
    ],
  ])("%s", async (_name, target, logged) => {
    const { sidecar } = await start();
    const r = await send(sidecar.ports.outbound, target(api.port));
    expect([r.status, errorCode(r)]).toEqual([400, "unsupported_scheme"]);
    await until(() => accessLines(sidecar.logs).length === 1);
    expect(accessLines(sidecar.logs)[0]).toMatchObject({
      direction: "outbound",
      status: 400,
      path: logged(api.port),
    });
    expect(JSON.stringify(sidecar.logs)).not.toMatch(/http-pw|http@pw/);
  });
});

describe("deny by default", () => {
  type Row = [
    name: string,
    port: "proxy" | "orders",
    target: () => string,
    host: () => string | undefined,
    status: number,
    code: string,
  ];
  const rows: Row[] = [
    // Names compare as written: another name for the declared address is another destination.
    [
      "refuses_another_name_for_a_declared_address",
      "proxy",
      () => `http://localhost:${api.port}/`,
      () => undefined,
      403,
      "destination_not_declared",
    ],
    [
      "refuses_a_declared_host_at_another_port",
      "proxy",
      () => `http://127.0.0.1:${trap.port}/`,
      () => undefined,
      403,
      "destination_not_declared",
    ],
    [
      "refuses_a_host_header_naming_a_declared_host_at_another_port",
      "proxy",
      () => "/",
      () => `127.0.0.1:${trap.port}`,
      403,
      "destination_not_declared",
    ],
    // No port means 80, which only an external whose TLS the sidecar originates also answers to.
    [
      "refuses_an_omitted_port_for_a_passthrough_external_on_another_port",
      "proxy",
      () => "http://127.0.0.1/",
      () => undefined,
      403,
      "destination_not_declared",
    ],
    [
      "refuses_an_https_absolute_form_to_a_declared_external",
      "proxy",
      () => `https://127.0.0.1:${api.port}/`,
      () => undefined,
      400,
      "unsupported_scheme",
    ],
    [
      "refuses_an_https_absolute_form_to_an_external_whose_tls_the_sidecar_originates",
      "proxy",
      () => `https://localhost:${web.port}/`,
      () => undefined,
      400,
      "unsupported_scheme",
    ],
    // A service's local port reaches that service only (here without endpoints), whatever the target names.
    [
      "sends_an_absolute_form_on_a_service_local_port_to_the_service_never_the_external",
      "orders",
      () => `http://127.0.0.1:${api.port}/`,
      () => undefined,
      503,
      "no_healthy_upstream",
    ],
    [
      "sends_a_host_header_on_a_service_local_port_to_the_service_never_the_external",
      "orders",
      () => "/",
      () => `127.0.0.1:${api.port}`,
      503,
      "no_healthy_upstream",
    ],
  ];
  it.each(rows)("%s", async (_name, via, target, host, status, code) => {
    const { sidecar } = await start();
    const port = via === "proxy" ? sidecar.ports.outbound : sidecar.ports.services.orders!;
    const before = [api.connections, trap.connections, web.connections, other.connections];
    const h = host();
    const r = await send(port, target(), { headers: h === undefined ? {} : { host: h } });
    expect(r.status).toBe(status);
    expect(r.headers["x-meshgate-error"]).toBe(code);
    expect(errorCode(r)).toBe(code);
    await sleep(50);
    expect([api.connections, trap.connections, web.connections, other.connections]).toEqual(before);
  });
});

describe("no retry", () => {
  const rows: [string, string, http.RequestListener, number, string | null][] = [
    [
      "passes_a_503_of_the_external_on_after_one_attempt_for_a_get",
      "GET",
      (_req, res) => {
        res.writeHead(503, { "content-type": "text/plain" });
        res.end("busy outside");
      },
      503,
      null,
    ],
    [
      "answers_502_after_one_attempt_when_the_external_resets_a_get",
      "GET",
      (req) => req.socket.destroy(),
      502,
      "upstream_reset",
    ],
    [
      "answers_502_after_one_attempt_when_the_external_resets_a_put",
      "PUT",
      (req) => req.socket.destroy(),
      502,
      "upstream_reset",
    ],
  ];
  it.each(rows)("%s", async (_name, method, handler, status, code) => {
    const { sidecar, metrics } = await start();
    // A first request leaves a pooled connection: the failing ones go over it, then over fresh ones.
    await send(sidecar.ports.outbound, `http://127.0.0.1:${api.port}/warm`);
    api.handler = handler;
    for (let i = 1; i <= 2; i++) {
      const r = await send(sidecar.ports.outbound, `http://127.0.0.1:${api.port}/once/${i}`, { method });
      expect(r.status).toBe(status);
      if (code === null) expect(r.body.toString()).toBe("busy outside");
      else expect(errorCode(r)).toBe(code);
    }
    await sleep(100); // a late retry would show here
    expect(api.requests.map((q) => `${q.method} ${q.url}`)).toEqual([
      "GET /warm",
      `${method} /once/1`,
      `${method} /once/2`,
    ]);
    const text = await metrics();
    expect(metricValue(text, "meshgate_upstream_requests_total", { cluster: "api" })).toBe(3);
    expect(metricValue(text, "meshgate_retries_total", { cluster: "api" })).toBe(0);
  });
});

describe("the external's timeout", () => {
  it.each([
    ["answers_504_upstream_timeout_near_timeout_ms_when_the_external_sends_no_head", false],
    ["breaks_the_response_off_near_timeout_ms_when_the_externals_body_stalls", true],
  ])("%s", async (_name, headFirst) => {
    const { sidecar } = await start(declared({ api: { timeoutMs: 400 } }));
    let upstreamClosed = false;
    api.handler = (req, res) => {
      req.socket.once("close", () => (upstreamClosed = true));
      if (headFirst) {
        res.writeHead(200, { "content-type": "text/plain", "content-length": "100" });
        res.write("only the beginning");
      }
    };
    const t0 = performance.now();
    const r = await send(sidecar.ports.outbound, `http://127.0.0.1:${api.port}/stall`);
    const ms = performance.now() - t0;
    expect(ms).toBeGreaterThanOrEqual(350);
    expect(ms).toBeLessThan(2500);
    if (headFirst) {
      expect(r.status).toBe(200);
      expect(r.complete).toBe(false);
      expect(r.body.toString()).toBe("only the beginning");
    } else {
      expect(r.status).toBe(504);
      expect(errorCode(r)).toBe("upstream_timeout");
    }
    // The sidecar gave the stalled exchange up at the external too.
    await until(() => upstreamClosed, 3000, "the external's connection closed");
    expect(api.requests).toHaveLength(1);
  });
});

describe("truncated responses", () => {
  it.each([
    ["never_completes_a_response_whose_content_length_the_external_does_not_send", true],
    ["never_completes_a_chunked_response_the_external_cuts_off", false],
  ])("%s", async (_name, withLength) => {
    const { sidecar } = await start();
    api.handler = (req, res) => {
      res.writeHead(200, {
        "content-type": "application/octet-stream",
        ...(withLength ? { "content-length": "1000" } : {}),
      });
      res.write(Buffer.alloc(100, 0x61));
      setTimeout(() => req.socket.destroy(), 30);
    };
    const r = await send(sidecar.ports.outbound, `http://127.0.0.1:${api.port}/cut`);
    expect(r.status).toBe(200);
    expect(r.complete).toBe(false);
    expect(r.error).not.toBeNull();
    expect(r.body.length).toBeLessThan(1000);
    await until(() => accessLines(sidecar.logs).length === 1);
    expect(accessLines(sidecar.logs)[0]).toMatchObject({ peer: "api", completed: false });
  });
});

describe("TLS the sidecar originates", () => {
  it.each([
    [
      "originates_tls_for_http_localhost_with_the_port_omitted",
      () => "http://localhost/secure?q=1",
      "localhost",
    ],
    [
      "originates_tls_for_http_localhost_at_the_declared_port",
      () => `http://localhost:${web.port}/secure?q=1`,
      undefined, // Node sends the proxy's address: the server must see its own
    ],
    [
      "originates_tls_for_an_origin_form_request_with_a_host_header_in_capitals",
      () => "/secure?q=1",
      "LOCALHOST",
    ],
  ])("%s", async (_name, target, host) => {
    const { sidecar } = await start();
    const r = await send(sidecar.ports.outbound, target(), {
      headers: { ...(host === undefined ? {} : { host }), "proxy-authorization": "Basic c2VjcmV0" },
    });
    expect(r.status).toBe(200);
    expect(r.body.toString()).toBe("site: GET /secure?q=1");
    expect(tlsSeen).toHaveLength(1);
    expect(tlsSeen[0]).toMatchObject({
      server: "site",
      encrypted: true,
      servername: "localhost",
      url: "/secure?q=1",
    });
    expect(tlsSeen[0]!.headers.host).toBe(`localhost:${web.port}`);
    expect(tlsSeen[0]!.headers["proxy-authorization"]).toBeUndefined();
    await until(() => accessLines(sidecar.logs).length === 1);
    expect(accessLines(sidecar.logs)[0]).toMatchObject({
      peer: "site",
      mtls: false,
      status: 200,
      path: "/secure",
    });
  });

  // A failed verification is a connection that could not be opened (runtime/upstream/tls.ts): answered
  // like any connect failure, and the server's request handler never runs.
  it.each(REFUSED_CERTIFICATES)(
    "answers_503_upstream_connect_failure_and_sends_nothing_when_%s",
    async (_name, trust, tlsCode) => {
      const { port, ca } = trust();
      const { sidecar } = await start([external("site", "localhost", port, { tls: "originate", ca })]);
      const connections = web.connections + other.connections;
      const r = await send(sidecar.ports.outbound, `http://localhost:${port}/secret?token=t`, {
        method: "POST",
        headers: { "content-type": "text/plain" },
        body: async (req) => void req.end("a body that must not leave unverified"),
      });
      expect(r.status).toBe(503);
      expect(errorCode(r)).toBe("upstream_connect_failure");
      // The server was reached (a TCP connection) but never got a request.
      expect(web.connections + other.connections).toBe(connections + 1);
      expect(tlsSeen).toEqual([]);
      await until(() => accessLines(sidecar.logs).length === 1);
      expect(sidecar.logs.find((l) => l.event === "upstream_error")).toMatchObject({ code: tlsCode });
      expect(accessLines(sidecar.logs)[0]).toMatchObject({ peer: "site", mtls: false, status: 503 });
    },
  );
});

describe("an external's local port with TLS the sidecar originates", () => {
  it("carries_a_plaintext_http_exchange_inside_tls_and_answers_after_the_apps_half_close", async () => {
    const { sidecar } = await start();
    const reply = await overLocalPort(sidecar.ports.external.site!, "/raw?x=1");
    expect(reply).toMatch(/^HTTP\/1\.1 200 /);
    expect(reply.endsWith("\r\nsite: GET /raw?x=1\r\n0\r\n\r\n")).toBe(true); // the last chunk: complete
    expect(tlsSeen).toMatchObject([{ encrypted: true, servername: "localhost", url: "/raw?x=1" }]);
  });

  it("passes_the_externals_half_close_on_and_still_delivers_the_apps_bytes_after_it", async () => {
    const { sidecar } = await start([
      external("greeter", "localhost", greeterPort, { tls: "originate", ca: web.ca.pem, localPort: 15403 }),
    ]);
    const c = dial(sidecar.ports.external.greeter!);
    // The greeter's FIN arrives as a FIN; the app's direction stays open.
    expect((await within(readToEnd(c), "the greeting")).toString()).toBe("HELLO");
    c.end("sent after the greeter's FIN");
    await until(() => greeted.length === 1, 3000, "the greeter's record");
    expect(greeted[0]).toEqual({ servername: "localhost", bytes: "sent after the greeter's FIN" });
  });

  it.each(REFUSED_CERTIFICATES)(
    "closes_the_apps_connection_with_no_bytes_when_%s",
    async (_name, trust, tlsCode) => {
      const { port, ca } = trust();
      const { sidecar, metrics } = await start([
        external("site", "localhost", port, { tls: "originate", ca, localPort: 15404 }),
      ]);
      const c = dial(sidecar.ports.external.site!);
      c.write("GET /never HTTP/1.1\r\nhost: localhost\r\n\r\n");
      const got = await within(
        readToEnd(c).catch((e: NodeJS.ErrnoException) => e.code ?? "error"),
        "the app's connection closed",
      );
      expect(got === "ECONNRESET" || (Buffer.isBuffer(got) && got.length === 0)).toBe(true);
      expect(tlsSeen).toEqual([]);
      await until(() => sidecar.logs.some((l) => l.event === "egress"));
      expect(sidecar.logs.find((l) => l.event === "egress_error")).toMatchObject({
        external: "site",
        via: "local",
        outcome: "connect_failed",
        code: tlsCode,
      });
      expect(sidecar.logs.find((l) => l.event === "egress")).toMatchObject({
        outcome: "connect_failed",
        bytesReceived: 0,
      });
      expect(
        metricValue(await metrics(), "meshgate_egress_connections_total", {
          external: "site",
          outcome: "failed",
        }),
      ).toBe(1);
    },
  );
});

describe("reload", () => {
  it("closes_open_local_port_tunnels_when_the_tls_or_the_ca_of_an_external_changes_and_follows_the_new_mode", async () => {
    const passthrough = [external("site", "localhost", web.port, { localPort: 15405 })];
    const e = await start(passthrough);
    const { sidecar } = e;
    const local = sidecar.ports.external.site!;

    // Passthrough: the app does TLS itself over the local port; plain HTTP on the proxy port goes in the clear.
    const raw = dial(local);
    const own = tls.connect({ socket: raw, servername: "localhost", ca: web.ca.pem });
    own.on("error", () => {});
    own.write("GET /own HTTP/1.1\r\nhost: localhost\r\n\r\n");
    await readUntil(own, "site: GET /own");
    const clear = await send(sidecar.ports.outbound, `http://localhost:${web.port}/clear`);
    expect(clear.status).toBe(502);

    // → originate: the app's own TLS tunnel closes; the local port and the proxy port now originate TLS.
    const originate = [
      external("site", "localhost", web.port, { localPort: 15405, tls: "originate", ca: web.ca.pem }),
    ];
    expect(await sidecar.reload(JSON.stringify(e.configWith(originate)))).toMatchObject({
      ok: true,
      changed: true,
    });
    await within(ended(own), "the passthrough tunnel closed", 1000);
    expect(sidecar.ports.external.site).toBe(local);
    expect(await overLocalPort(local, "/after")).toContain("\r\nsite: GET /after\r\n0\r\n\r\n");
    expect(
      (await send(sidecar.ports.outbound, `http://localhost/proxied`, { headers: { host: "localhost" } }))
        .status,
    ).toBe(200);
    expect(tlsSeen.slice(-2)).toMatchObject([
      { url: "/after", encrypted: true, servername: "localhost" },
      { url: "/proxied", encrypted: true },
    ]);

    // Another CA (here: the system's roots): an open originated tunnel closes, the next one fails verification.
    const kept = dial(local);
    kept.write("GET /kept HTTP/1.1\r\nhost: localhost\r\n\r\n");
    await readUntil(kept, "site: GET /kept");
    const systemRoots = [
      external("site", "localhost", web.port, { localPort: 15405, tls: "originate", ca: null }),
    ];
    expect(await sidecar.reload(JSON.stringify(e.configWith(systemRoots)))).toMatchObject({
      ok: true,
      changed: true,
    });
    await within(ended(kept), "the originated tunnel closed", 1000);
    const refused = dial(local);
    refused.write("GET /refused HTTP/1.1\r\nhost: localhost\r\n\r\n");
    const got = await within(
      readToEnd(refused).catch(() => Buffer.alloc(0)),
      "the untrusted tunnel closed",
    );
    expect(got.length).toBe(0);
    expect(tlsSeen.map((s) => s.url)).not.toContain("/refused");

    const removed = sidecar.logs.filter((l) => l.event === "egress" && l.outcome === "removed_by_reload");
    expect(removed).toHaveLength(2);
    expect(sidecar.logs.filter((l) => l.event === "egress_tunnels_closed")).toMatchObject([
      { reason: "reload", external: ["site"] },
      { reason: "reload", external: ["site"] },
    ]);

    // The CA and the keys never reach the log (configs with and without the CA were loaded).
    const log = sidecar.rawLog();
    expect(log).not.toContain("BEGIN");
    expect(log).not.toContain(web.ca.pem.split("\n")[1]!);
    expect(log).not.toContain("PRIVATE KEY");
  });
});

describe("WebSocket to an external", () => {
  it.each([
    [
      "tunnels_a_websocket_to_a_plain_external_through_the_proxy_port",
      () => `127.0.0.1:${api.port}`,
      "api",
      {},
    ],
    ["tunnels_a_websocket_inside_tls_the_sidecar_originates", () => `localhost:${web.port}`, "site", {}],
    [
      "tunnels_a_websocket_to_an_external_whose_connect_timeout_is_0_the_systems_own",
      () => `127.0.0.1:${api.port}`,
      "api",
      { api: { connectTimeoutMs: 0 } },
    ],
  ])("%s", async (_name, authority, name, edit) => {
    const { sidecar } = await start(declared(edit));
    const ws = await openWebSocket(
      sidecar.ports.outbound,
      `http://${authority()}/chat?room=1`,
      `127.0.0.1:${sidecar.ports.outbound}`,
    );
    expect(ws.status).toBe(101);
    const payload = randomBytes(4096);
    ws.socket.write(payload);
    expect((await within(readBytes(ws.socket, payload.length, ws.rest), "the echo")).equals(payload)).toBe(
      true,
    );
    const seen = name === "api" ? api.requests[0] : tlsSeen[0];
    expect(seen).toMatchObject({ url: "/chat?room=1", headers: { host: authority(), upgrade: "websocket" } });
    if (name === "site") expect(tlsSeen[0]).toMatchObject({ encrypted: true, servername: "localhost" });
    ws.socket.end();
    await until(() => accessLines(sidecar.logs).length === 1, 3000, "the access line");
    expect(accessLines(sidecar.logs)[0]).toMatchObject({
      peer: name,
      mtls: false,
      upgrade: "websocket",
      status: 101,
    });
  });

  it("refuses_a_websocket_whose_external_certificate_does_not_verify_before_the_server_sees_it", async () => {
    const { sidecar } = await start([
      external("site", "localhost", web.port, { tls: "originate", ca: null }),
    ]);
    const ws = await openWebSocket(sidecar.ports.outbound, `http://localhost:${web.port}/chat`, "localhost");
    expect(ws.status).toBe(503);
    expect((await within(readToEnd(ws.socket, ws.rest), "the refusal's body")).toString()).toContain(
      '"code":"upstream_connect_failure"',
    );
    expect(tlsSeen).toEqual([]);
    await until(() => accessLines(sidecar.logs).length === 1, 3000, "the access line");
    expect(sidecar.logs.find((l) => l.event === "upstream_error")).toMatchObject({
      code: "UNABLE_TO_VERIFY_LEAF_SIGNATURE",
    });
    expect(accessLines(sidecar.logs)[0]).toMatchObject({ peer: "site", mtls: false, status: 503 });
  });
});

describe("metrics", () => {
  it("counts_requests_by_external_without_mtls_and_one_upstream_attempt_per_request", async () => {
    const { sidecar, metrics } = await start();
    const out = sidecar.ports.outbound;
    await send(out, `http://127.0.0.1:${api.port}/1`);
    await send(out, `http://127.0.0.1:${api.port}/2`);
    api.handler = (_req, res) => res.writeHead(503).end();
    await send(out, `http://127.0.0.1:${api.port}/3`);
    await send(out, `http://localhost:${web.port}/4`);
    await until(() => accessLines(sidecar.logs).length === 4);
    const text = await metrics();
    const requests = (labels: Record<string, string>) =>
      metricValue(text, "meshgate_requests_total", { proxy: "sidecar", direction: "outbound", ...labels });
    expect(requests({ peer: "api", mtls: "false" })).toBe(3);
    expect(requests({ peer: "api", mtls: "false", code_class: "2xx" })).toBe(2);
    expect(requests({ peer: "api", mtls: "false", code_class: "5xx" })).toBe(1);
    expect(requests({ peer: "site", mtls: "false", code_class: "2xx" })).toBe(1);
    expect(requests({ mtls: "true" })).toBe(0);
    const attempts = (labels: Record<string, string>) =>
      metricValue(text, "meshgate_upstream_requests_total", { proxy: "sidecar", ...labels });
    expect(attempts({ cluster: "api", outcome: "success" })).toBe(2);
    expect(attempts({ cluster: "api", outcome: "5xx" })).toBe(1);
    expect(attempts({ cluster: "site", outcome: "success" })).toBe(1);
    expect(metricValue(text, "meshgate_retries_total", { cluster: "api" })).toBe(0);
    // The externals' metrics name them, never the addresses the app wrote.
    expect(text).not.toContain(`127.0.0.1:${api.port}`);
  });
});
