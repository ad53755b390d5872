/**
 * Slow clients at the edge: a request head trickled in (slowloris) is cut at the header timeout on every
 * kind of listener — plain HTTP with and without h2c sniffing, TLS with and without h2 — not up to 30 s
 * later or never (Node enforces these timeouts on an interval, which only runs once a server listens); a
 * TLS handshake never finished is cut at the header timeout too; and a request body trickled in is cut at
 * the request timeout, over HTTP/2 as over HTTP/1.1.
 */
import { mkdtemp, rm } from "node:fs/promises";
import { createConnection, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connect as tlsConnect } from "node:tls";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  gatewayConfig,
  startTestGateway,
  startUpstream,
  type TestGateway,
  type Upstream,
} from "../support/gateway.ts";
import { selfSignedCert } from "../support/certs.ts";
import { data, END_HEADERS, END_STREAM, frame, block, rawH2 } from "../support/raw-h2.ts";

let dir: string;
let up: Upstream;
let gw: TestGateway;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "meshgate-slow-"));
  const { certFile, keyFile } = await selfSignedCert(dir, "a", "127.0.0.1", "IP:127.0.0.1");
  const tls = { minVersion: "TLSv1.2", certificates: [{ hosts: ["localhost"], certFile, keyFile }] };
  up = await startUpstream();
  gw = await startTestGateway(
    gatewayConfig(
      [
        {
          name: "all",
          match: { path: "/**" },
          to: "app",
          public: true,
          // Longer than the request timeout: what cuts a slow upload is the listener, not the route.
          timeout: "20s",
          retries: { attempts: 0, perTryTimeout: "20s" },
        },
      ],
      { app: { port: up.port } },
      {
        limits: { headerTimeout: "1s", requestTimeout: "3s" },
        listeners: [
          { name: "h1h2c", port: 8080, protocol: "http", http2: true },
          { name: "h1", port: 8081, protocol: "http", http2: false },
          { name: "tlsh2", port: 8443, protocol: "https", http2: true, tls },
          { name: "tlsh1", port: 8444, protocol: "https", http2: false, tls },
        ],
      },
    ),
  );
});
afterAll(async () => {
  await gw.drain();
  await up.close();
  await rm(dir, { recursive: true, force: true });
});

/** Trickles a request head that never completes, one byte every 200 ms; resolves when the gateway closes. */
function trickle(open: () => Socket): Promise<{ raw: string; closedAfterMs: number }> {
  const started = performance.now();
  return new Promise((resolve, reject) => {
    const s = open();
    let raw = "";
    let i = 0;
    const head = `GET /x HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ${"a".repeat(40)}`;
    const timer = setInterval(() => {
      if (i < head.length && !s.destroyed) s.write(head[i++]!);
    }, 200);
    s.on("data", (c: Buffer) => (raw += c.toString("latin1")));
    s.on("close", () => {
      clearInterval(timer);
      resolve({ raw, closedAfterMs: performance.now() - started });
    });
    s.on("error", reject);
    setTimeout(() => s.destroy(), 8000);
  });
}

describe("slow clients", () => {
  it.each([
    ["cuts_a_trickled_head_on_an_http_listener_with_h2c", "h1h2c", false],
    ["cuts_a_trickled_head_on_an_http_listener", "h1", false],
    ["cuts_a_trickled_head_on_a_tls_listener_with_h2", "tlsh2", true],
    ["cuts_a_trickled_head_on_a_tls_listener", "tlsh1", true],
  ])("%s", async (_claim, listener, tls) => {
    const port = gw.ports.listeners[listener as string]!;
    const { raw, closedAfterMs } = await trickle(() =>
      tls
        ? tlsConnect({
            port,
            host: "127.0.0.1",
            servername: "localhost",
            rejectUnauthorized: false,
            ALPNProtocols: ["http/1.1"],
          })
        : createConnection(port, "127.0.0.1"),
    );
    expect(raw.split("\r\n")[0]).toBe("HTTP/1.1 408 Request Timeout");
    expect(closedAfterMs).toBeGreaterThanOrEqual(900);
    expect(closedAfterMs).toBeLessThan(3000);
    expect(up.received).toHaveLength(0);
  });
});

describe("slow HTTP/2 sessions", () => {
  const PREFACE = Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
  const tlsH2 = (port: number) =>
    tlsConnect({
      port,
      host: "127.0.0.1",
      servername: "localhost",
      rejectUnauthorized: false,
      ALPNProtocols: ["h2"],
    });

  // What the session is sent, 200 ms apart: nothing; the preface alone; the preface, SETTINGS and its ACK,
  // then a HEADERS frame a byte at a time (nghttp2 bounds a block's CONTINUATION frames, not its bytes).
  const headers = frame(
    1,
    END_HEADERS | END_STREAM,
    1,
    block([
      [":method", "GET"],
      [":scheme", "https"],
      [":authority", "127.0.0.1"],
      [":path", "/h2/slow-head"],
      ["x-slow", "a".repeat(40)],
    ]),
  );
  const trickled = [
    Buffer.concat([PREFACE, frame(4, 0, 0, Buffer.alloc(0)), frame(4, 1, 0, Buffer.alloc(0))]),
    ...Array.from(headers, (b) => Buffer.from([b])),
  ];
  it.each([
    ["cuts_a_session_that_never_sends_the_preface_on_a_tls_listener_with_h2", "tlsh2", []],
    ["cuts_a_session_that_sends_only_the_preface_on_an_http_listener_with_h2c", "h1h2c", [PREFACE]],
    ["cuts_a_trickled_first_headers_frame_on_an_http_listener_with_h2c", "h1h2c", trickled],
    ["cuts_a_trickled_first_headers_frame_on_a_tls_listener_with_h2", "tlsh2", trickled],
  ] as [string, string, Buffer[]][])("%s", async (_claim, listener, frames) => {
    const port = gw.ports.listeners[listener]!;
    const started = performance.now();
    const closedAfterMs = await new Promise<number>((resolve) => {
      const s = listener === "tlsh2" ? tlsH2(port) : createConnection(port, "127.0.0.1");
      let i = 0;
      const timer = setInterval(() => {
        if (i < frames.length && !s.destroyed) s.write(frames[i++]!);
      }, 200);
      s.on("data", () => {});
      s.on("close", () => (clearInterval(timer), resolve(performance.now() - started)));
      s.on("error", () => {});
      setTimeout(() => s.destroy(), 8000);
    });
    expect(closedAfterMs).toBeGreaterThanOrEqual(900);
    expect(closedAfterMs).toBeLessThan(3000);
    expect(up.received.filter((r) => r.url === "/h2/slow-head")).toHaveLength(0);
  });
});

describe("slow handshakes", () => {
  // A TLS handshake that never completes (a ClientHello trickled in, or nothing at all) is a request head
  // not received: it gets the header timeout too, not Node's TLS handshake timeout (120 s).
  it.each([
    ["cuts_a_tls_handshake_that_never_starts_at_the_header_timeout_on_a_tls_listener_with_h2", "tlsh2", ""],
    ["cuts_a_tls_handshake_that_never_starts_at_the_header_timeout_on_a_tls_listener", "tlsh1", ""],
    [
      "cuts_a_trickled_client_hello_at_the_header_timeout_on_a_tls_listener_with_h2",
      "tlsh2",
      "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
    ],
    [
      "cuts_a_trickled_client_hello_at_the_header_timeout_on_a_tls_listener",
      "tlsh1",
      "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
    ],
    // Not TLS at all: the handshake fails at once, and the connection must close (it stayed open).
    ["closes_a_plaintext_request_to_a_tls_listener_with_h2", "tlsh2", "GET / HTTP/1.1\r\n\r\n"],
    ["closes_a_plaintext_request_to_a_tls_listener", "tlsh1", "GET / HTTP/1.1\r\n\r\n"],
  ])("%s", async (_claim, listener, hello) => {
    const started = performance.now();
    const closedAfterMs = await new Promise<number>((resolve) => {
      const s = createConnection(gw.ports.listeners[listener]!, "127.0.0.1");
      let i = 0;
      const timer = setInterval(() => {
        if (i < hello.length && !s.destroyed) s.write(Buffer.from(hello[i++]!, "latin1"));
      }, 200);
      s.on("close", () => (clearInterval(timer), resolve(performance.now() - started)));
      s.on("error", () => {});
      setTimeout(() => s.destroy(), 6000);
    });
    // The plaintext rows fail at their first byte; the others wait for the 1 s header timeout.
    if (!hello.startsWith("GET")) expect(closedAfterMs).toBeGreaterThanOrEqual(900);
    expect(closedAfterMs).toBeLessThan(3000);
  });
});

describe("slow uploads", () => {
  const tlsOpen = (port: number, ready: () => void, alpn: string) =>
    tlsConnect(
      { port, host: "127.0.0.1", servername: "localhost", rejectUnauthorized: false, ALPNProtocols: [alpn] },
      ready,
    );

  /** An HTTP/1.1 upload of 100 bytes sent a byte every 200 ms; the status line the gateway answers. */
  function h1Upload(open: (ready: () => void) => Socket, path: string): Promise<string> {
    return new Promise((resolve) => {
      let raw = "";
      let timer: NodeJS.Timeout | undefined;
      const s = open(() => {
        s.write(`POST ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n\r\n`);
        timer = setInterval(() => !s.destroyed && s.write("a"), 200);
      });
      s.on("data", (c: Buffer) => (raw += c.toString("latin1")));
      s.on("error", () => {});
      setTimeout(() => (clearInterval(timer), s.destroy(), resolve(raw.split("\r\n")[0]!)), 5000);
    });
  }

  /** The same over HTTP/2 (one DATA frame of one byte every 200 ms); what stream 1 received. */
  async function h2Upload(
    open: (port: number, ready: () => void) => Socket,
    port: number,
    path: string,
    fields: [string, string][] = [],
  ): Promise<string> {
    const head = frame(
      1,
      END_HEADERS,
      1,
      block([
        [":method", "POST"],
        [":scheme", "https"],
        [":authority", "127.0.0.1"],
        [":path", path],
        ["content-length", "100"],
        ...fields,
      ]),
    );
    const trickle = Array.from({ length: 25 }, () => [200, data(1, "a", false)]).flat();
    const r = await rawH2(port, [head, ...trickle], 5000, open);
    return (r.streams[1] ?? []).join(" ");
  }

  // The request timeout is 3 s; each upload would take 20 s; the route waits 20 s for the upstream.
  it.concurrent.each([
    [
      "cuts_a_trickled_http2_body_at_the_request_timeout_on_an_http_listener_with_h2c",
      () =>
        h2Upload((p, ready) => createConnection(p, "127.0.0.1", ready), gw.ports.listeners.h1h2c!, "/u/1"),
      "408 rst:0",
    ],
    [
      "cuts_a_trickled_http2_body_at_the_request_timeout_on_a_tls_listener_with_h2",
      () => h2Upload((p, ready) => tlsOpen(p, ready, "h2"), gw.ports.listeners.tlsh2!, "/u/2"),
      "408 rst:0",
    ],
    [
      // Answered in gRPC's form, as every local reply to a gRPC call: trailers-only, HTTP 200.
      "cuts_a_trickled_grpc_call_at_the_request_timeout_with_a_trailers_only_answer",
      () =>
        h2Upload((p, ready) => createConnection(p, "127.0.0.1", ready), gw.ports.listeners.h1h2c!, "/u/g", [
          ["content-type", "application/grpc"],
        ]),
      "200 rst:0",
    ],
    [
      "cuts_a_trickled_http1_1_body_at_the_request_timeout_on_a_tls_listener_with_h2",
      () => h1Upload((ready) => tlsOpen(gw.ports.listeners.tlsh2!, ready, "http/1.1"), "/u/3"),
      "HTTP/1.1 408 Request Timeout",
    ],
    [
      "cuts_a_trickled_http1_1_body_at_the_request_timeout_on_an_http_listener",
      () => h1Upload((ready) => createConnection(gw.ports.listeners.h1!, "127.0.0.1", ready), "/u/4"),
      "HTTP/1.1 408 Request Timeout",
    ],
  ] as [string, () => Promise<string>, string][])("%s", async (_claim, upload, answer) => {
    expect(await upload()).toBe(answer);
    expect(up.received.filter((r) => r.url.startsWith("/u/"))).toHaveLength(0);
  });
});
