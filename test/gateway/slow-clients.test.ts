/**
 * Slow clients at the edge: a request head trickled in (slowloris) is cut at the header timeout on every
 * kind of listener — plain HTTP with and without h2c sniffing, TLS with and without h2 — not up to 30 s
 * later or never (Node enforces these timeouts on an interval, which only runs once a server listens); a
 * TLS handshake never finished is cut at the header timeout too; and a request body trickled in is cut at
 * the request timeout, over HTTP/2 as over HTTP/1.1. A client that stops reading a large response is cut
 * at the send timeout (the idle timeout) and the upstream request cancelled; one that reads slowly is not.
 */
import { mkdtemp, rm } from "node:fs/promises";
import type { IncomingMessage, ServerResponse } from "node:http";
import http2 from "node:http2";
import { createConnection, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connect as tlsConnect } from "node:tls";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  gatewayConfig,
  request,
  startTestGateway,
  startUpstream,
  type TestGateway,
  type Upstream,
} from "../support/gateway.ts";
import { selfSignedCert } from "../support/certs.ts";
import { until } from "../sidecar/support.ts";
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
  // Each row is its own connection to the shared gateway, waiting on a timer: the rows run together.
  it.concurrent.each([
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
  it.concurrent.each([
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
  it.concurrent.each([
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

describe("slow readers", () => {
  // The send timeout is the idle timeout (1 s here): a response blocked on a client that reads none of it
  // for that long is cut; the route would wait 20 s for the upstream.
  const MiB = 1024 * 1024;
  let big: Upstream;
  let h2big: http2.Http2Server;
  let rgw: TestGateway;
  /** Per path: when the upstream got the request, when its response closed, and whether it finished. */
  const served = new Map<string, { at: number; closedAt: number; complete: boolean }>();

  /** Answers `?mb=N` mebibytes, written as fast as the gateway takes them. */
  function serveBig(
    req: IncomingMessage | http2.Http2ServerRequest,
    response: ServerResponse | http2.Http2ServerResponse,
  ): void {
    // What both response kinds share (their overloads do not unify).
    const res = response as ServerResponse;
    const url = req.url ?? "";
    const row = { at: performance.now(), closedAt: 0, complete: false };
    served.set(url, row);
    let left = Number(new URL(url, "http://x").searchParams.get("mb")) * MiB;
    res.writeHead(200, { "content-type": "application/octet-stream", "content-length": left });
    const chunk = Buffer.alloc(64 * 1024, 97);
    const pump = (): void => {
      while (left > 0) {
        const n = Math.min(chunk.length, left);
        left -= n;
        if (!res.write(n === chunk.length ? chunk : chunk.subarray(0, n)))
          return void res.once("drain", pump);
      }
      res.end();
    };
    res.on("close", () => {
      row.closedAt = performance.now();
      row.complete = "stream" in response ? response.stream.rstCode === 0 : response.writableFinished;
    });
    pump();
  }

  beforeAll(async () => {
    big = await startUpstream(serveBig);
    h2big = http2.createServer(serveBig);
    await new Promise<void>((r) => h2big.listen(0, "127.0.0.1", r));
    rgw = await startTestGateway(
      gatewayConfig(
        [
          {
            name: "h2up",
            match: { path: "/h2up/**" },
            to: "app2",
            public: true,
            timeout: "20s",
            retries: { attempts: 0, perTryTimeout: "20s" },
          },
          {
            name: "cached",
            match: { path: "/cached/**", methods: ["GET"] },
            to: "app",
            public: true,
            timeout: "20s",
            retries: { attempts: 0, perTryTimeout: "20s" },
            cache: { ttl: "10m", maxEntrySize: "40MiB" },
          },
          {
            name: "all",
            match: { path: "/**" },
            to: "app",
            public: true,
            timeout: "20s",
            retries: { attempts: 0, perTryTimeout: "20s" },
          },
        ],
        { app: { port: big.port }, app2: { port: (h2big.address() as { port: number }).port } },
        {
          limits: { idleTimeout: "1s" },
          cache: { maxSize: "100MiB" },
          listeners: [{ name: "h1h2c", port: 8080, protocol: "http", http2: true }],
        },
        {
          app: { image: "r/app:1", port: 8080, allow: [{ from: ["gateway"] }] },
          app2: { image: "r/app2:1", port: 8080, protocol: "http2", allow: [{ from: ["gateway"] }] },
        },
      ),
    );
  });
  afterAll(async () => {
    await rgw.drain();
    await big.close();
    await new Promise((r) => h2big.close(r));
  });

  const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

  /**
   * An HTTP/1.1 GET of `size` bytes read `perTick` bytes every 100 ms (0: none until 4 s later, then all):
   * how it ended ("all": the whole body arrived; "cut": the gateway closed the connection before).
   */
  function h1Reader(path: string, size: number, perTick: number): Promise<string> {
    return new Promise((resolve) => {
      const s = createConnection(rgw.ports.listeners.h1h2c!, "127.0.0.1");
      s.write(`GET ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n`);
      s.pause();
      let pre = Buffer.alloc(0);
      let body = -1;
      let timer: NodeJS.Timeout | undefined;
      const limit = setTimeout(() => done("timeout"), 12_000);
      const done = (how: string) => (clearInterval(timer), clearTimeout(limit), s.destroy(), resolve(how));
      const took = (c: Buffer) => {
        if (body < 0) {
          pre = Buffer.concat([pre, c]);
          const end = pre.indexOf("\r\n\r\n");
          if (end < 0) return;
          body = pre.length - (end + 4);
        } else body += c.length;
        if (body >= size) done("all");
      };
      s.on("error", () => {});
      s.on("end", () => done("cut"));
      s.on("close", () => done("cut"));
      if (perTick > 0)
        timer = setInterval(() => {
          const n = Math.min(perTick, s.readableLength);
          if (n > 0) took(s.read(n) as Buffer);
          else s.read(0); // asks the socket for more (a paused stream reads only when read)
        }, 100);
      else
        setTimeout(() => {
          s.on("data", took);
          s.resume();
        }, 4000);
    });
  }

  /**
   * HTTP/1.1 pipelining: every GET of `paths` sent at once (each answered with `size` bytes), nothing read
   * for 4 s, then everything: "all" when every byte of every response arrived, "cut" when the gateway
   * closed the connection first.
   */
  function h1Pipeliner(paths: readonly string[], size: number): Promise<string> {
    return new Promise((resolve) => {
      const s = createConnection(rgw.ports.listeners.h1h2c!, "127.0.0.1");
      s.write(paths.map((p) => `GET ${p} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n`).join(""));
      s.pause();
      let raw = Buffer.alloc(0);
      const limit = setTimeout(() => done("timeout"), 12_000);
      const done = (how: string) => (clearTimeout(limit), s.destroy(), resolve(how));
      /** Complete responses in `raw` (each head then `size` bytes of body). */
      const complete = () => {
        let at = 0;
        let n = 0;
        for (;;) {
          const end = raw.indexOf("\r\n\r\n", at);
          if (end < 0 || raw.length < end + 4 + size) return n;
          at = end + 4 + size;
          n++;
        }
      };
      s.on("error", () => {});
      s.on("end", () => done(complete() === paths.length ? "all" : "cut"));
      s.on("close", () => done(complete() === paths.length ? "all" : "cut"));
      setTimeout(() => {
        s.on("data", (c: Buffer) => {
          raw = Buffer.concat([raw, c]);
          if (complete() === paths.length) done("all");
        });
        s.resume();
      }, 4000);
    });
  }

  /** An HTTP/2 GET that never grants a WINDOW_UPDATE (its 64 KiB window is spent at once): what stream 1 got. */
  async function h2NoWindow(path: string): Promise<string> {
    const head = frame(
      1,
      END_HEADERS | END_STREAM,
      1,
      block([
        [":method", "GET"],
        [":scheme", "http"],
        [":authority", "127.0.0.1"],
        [":path", path],
      ]),
    );
    const r = await rawH2(rgw.ports.listeners.h1h2c!, [head], 4000);
    return (r.streams[1] ?? []).join(" ");
  }

  /** upstream_requests_total{outcome="send_timeout"}, summed over clusters. */
  const sendTimeouts = async () => {
    const text = await (await fetch(`${rgw.adminUrl}/metrics`)).text();
    const counts = text.matchAll(/upstream_requests_total\{[^}]*outcome="send_timeout"[^}]*\} (\d+)/g);
    return [...counts].reduce((sum, m) => sum + Number(m[1]), 0);
  };

  it.each([
    // The client never reads: the connection is cut (the 32 MiB never arrive: more than the sockets buffer)
    // and the upstream request aborted.
    [
      "cuts_an_http1_1_client_that_reads_none_of_a_32_mib_response",
      "/h1?mb=32",
      () => h1Reader("/h1?mb=32", 32 * MiB, 0),
      "cut",
      true,
    ],
    // The same behind an HTTP/2 upstream: its stream is cancelled.
    [
      "cuts_an_http1_1_client_that_reads_none_of_an_http2_upstreams_response",
      "/h2up/x?mb=32",
      () => h1Reader("/h2up/x?mb=32", 32 * MiB, 0),
      "cut",
      true,
    ],
    // HTTP/2: the stream is reset (RST_STREAM INTERNAL_ERROR), never ended cleanly.
    [
      "resets_an_http2_stream_whose_client_grants_no_flow_control_window",
      "/h2?mb=32",
      () => h2NoWindow("/h2?mb=32"),
      "200 rst:2",
      true,
    ],
    // Control: a slow client that keeps reading (64 KiB every 100 ms, 3 s for 2 MiB) gets it all.
    [
      "keeps_a_slow_client_that_reads_64_kib_every_100_ms",
      "/steady?mb=2",
      () => h1Reader("/steady?mb=2", 2 * MiB, 64 * 1024),
      "all",
      false,
    ],
  ] as [string, string, () => Promise<string>, string, boolean][])(
    "%s",
    async (_claim, path, run, seen, cut) => {
      const before = await sendTimeouts();
      const logged = rgw.logs.filter((l) => l.event === "send_timeout").length;
      const got = await run();
      await sleep(100);
      const row = served.get(path)!;
      expect(got).toBe(seen);
      expect(row.complete).toBe(!cut);
      if (cut) {
        // Cut within the send timeout (1 s after the client stopped taking bytes) plus slack.
        expect(row.closedAt - row.at).toBeGreaterThanOrEqual(900);
        expect(row.closedAt - row.at).toBeLessThan(3500);
        expect(await sendTimeouts()).toBe(before + 1);
        expect(rgw.logs.filter((l) => l.event === "send_timeout")).toHaveLength(logged + 1);
      } else {
        expect(await sendTimeouts()).toBe(before);
      }
    },
    15_000,
  );

  // Each response fits the sockets' buffer on its own (60 KiB, written in one write that never waits for
  // 'drain'), so no write ever armed the send timeout; pipelined, they fill the client's socket and the
  // last one ended with bytes still waiting — before, the connection stayed open for as long as the
  // client kept reading nothing (the upstream's part was done, nothing watched the rest).
  it("cuts_a_pipelining_http1_1_client_that_reads_none_of_its_responses_once_the_upstream_finished_them", async () => {
    const size = 60 * 1024;
    const paths = Array.from({ length: 200 }, (_, i) => `/pipe/${i}?mb=${size / MiB}`);
    const logged = rgw.logs.filter((l) => l.event === "send_timeout" && l.source === "response_end").length;
    const before = await sendTimeouts();
    expect(await h1Pipeliner(paths, size)).toBe("cut");
    // The upstream answered every request it got in full: the cut is the client's, at the gateway.
    const got = paths.map((p) => served.get(p)).filter((r) => r !== undefined);
    expect(got.length).toBeGreaterThan(0);
    expect(got.every((r) => r.complete)).toBe(true);
    await until(
      () => rgw.logs.filter((l) => l.event === "send_timeout" && l.source === "response_end").length > logged,
      2000,
    );
    expect(await sendTimeouts()).toBe(before); // no upstream attempt failed
  }, 20_000);

  it("resets_an_http2_stream_whose_finished_response_waits_on_a_spent_connection_window", async () => {
    // Stream 1 takes 60 KiB of the connection's 64 KiB window, which the client never replenishes; stream 3's
    // 60 KiB answer then ends (the upstream's part done) with all but 4 KiB waiting in the gateway. PINGs
    // keep the session from idling out: only the send timeout can end that stream.
    const size = 60 * 1024;
    const get = (id: number, path: string) =>
      frame(
        1,
        END_HEADERS | END_STREAM,
        id,
        block([
          [":method", "GET"],
          [":scheme", "http"],
          [":authority", "127.0.0.1"],
          [":path", path],
        ]),
      );
    const ping = frame(6, 0, 0, Buffer.alloc(8));
    const pings = Array.from({ length: 16 }, () => [200, ping]).flat();
    const r = await rawH2(
      rgw.ports.listeners.h1h2c!,
      [get(1, `/h2tail/a?mb=${size / MiB}`), 300, get(3, `/h2tail/b?mb=${size / MiB}`), ...pings],
      4000,
    );
    expect(r.streams[1]).toEqual([200]);
    expect(r.data[1]).toHaveLength(size);
    expect(r.streams[3]).toEqual([200, "rst:2"]);
    expect(served.get(`/h2tail/b?mb=${size / MiB}`)?.complete).toBe(true);
  }, 20_000);

  it("keeps_a_pipelining_http1_1_client_whose_responses_all_fit_the_socket_buffers", async () => {
    // Control: 8 × 60 KiB are taken by the kernel whole; nothing waits in the gateway, nothing is cut.
    const size = 60 * 1024;
    const paths = Array.from({ length: 8 }, (_, i) => `/fits/${i}?mb=${size / MiB}`);
    expect(await h1Pipeliner(paths, size)).toBe("all");
  }, 20_000);

  // A cache hit was written whole with end(body), outside the send timeout: a client that read none of a
  // large cached response kept its connection (and the body's memory) until the connection's own idle
  // handling. Each row first stores the response (read whole), then asks again.
  it.each([
    [
      "cuts_an_http1_1_client_that_reads_none_of_a_32_mib_cached_response",
      "/cached/a?mb=32",
      () => h1Reader("/cached/a?mb=32", 32 * MiB, 0),
      "cut",
    ],
    [
      "resets_an_http2_stream_of_a_cached_response_whose_client_grants_no_window",
      "/cached/b?mb=32",
      () => h2NoWindow("/cached/b?mb=32"),
      "200 rst:2",
    ],
    // Control: a client that keeps reading, slower than the socket could send, gets the whole hit.
    [
      "keeps_a_slow_client_that_reads_a_cached_response_64_kib_every_100_ms",
      "/cached/c?mb=2",
      () => h1Reader("/cached/c?mb=2", 2 * MiB, 64 * 1024),
      "all",
    ],
  ] as [string, string, () => Promise<string>, string][])(
    "%s",
    async (_claim, path, run, seen) => {
      // Host 127.0.0.1, as the readers below send it (the host is part of the cache key).
      const url = `http://127.0.0.1:${rgw.ports.listeners.h1h2c!}${path}`;
      await request(url, { headers: { host: "127.0.0.1" } });
      const hit = await request(url, { headers: { host: "127.0.0.1", range: "bytes=0-0" } });
      expect(hit.headers["cache-status"]).toMatch(/; hit/);
      const upstreamCalls = big.received.filter((r) => r.url === path).length;
      const logged = rgw.logs.filter((l) => l.event === "send_timeout").length;
      expect(await run()).toBe(seen);
      expect(big.received.filter((r) => r.url === path)).toHaveLength(upstreamCalls); // answered from the cache
      if (seen !== "all")
        await until(() => rgw.logs.filter((l) => l.event === "send_timeout").length === logged + 1, 2000);
    },
    20_000,
  );
});
