/**
 * Hostile upstream responses through a real gateway: the shared tables of test/support/raw-upstream.ts
 * (the same rows test/upstream/h1pool.test.ts runs against H1Pool directly), answered byte for byte by a
 * raw `net` upstream and read back by a raw client socket that checks the response against its own
 * framing. The claim of every failure row: the client never gets a clean complete response — before the
 * head a 502 `upstream_reset` (504 `upstream_timeout` for a stall), after the head a connection closed
 * with the body short of its Content-Length or its chunked body without the last chunk. Positive
 * controls: every well-formed row arrives intact (status, byte-identical body, the upstream's headers
 * minus hop-by-hop ones), so the failure rows cannot pass because nothing gets through.
 */
import http2 from "node:http2";
import { END_HEADERS, block, frame, rst } from "../support/raw-h2.ts";
import net from "node:net";
import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import {
  freePort,
  gatewayConfig,
  startTestGateway,
  upgradeStatusLine,
  type TestGateway,
} from "../support/gateway.ts";
import {
  GOOD,
  MALFORMED,
  TRUNCATED,
  sendParts,
  startBlackhole,
  startRawH2Upstream,
  startRawUpstream,
  startScriptedH2Upstream,
  type GoodRow,
  type RawUpstream,
} from "../support/raw-upstream.ts";

const PUBLIC = { public: true, rateLimit: { requests: 100000, per: "1s" } };
/** The service, with outlier ejection out of the way: every case here fails on purpose, one after another. */
const APP = {
  app: {
    image: "r/app:1",
    port: 8080,
    allow: [{ from: ["gateway"] }],
    circuitBreaker: { consecutive5xx: 1_000_000 },
  },
};

/** Response headers a proxy never passes on as received (RFC 9110 §7.6.1). */
const HOP_BY_HOP = new Set([
  "connection",
  "keep-alive",
  "proxy-connection",
  "proxy-authenticate",
  "proxy-authorization",
  "te",
  "trailer",
  "transfer-encoding",
  "upgrade",
]);

interface Seen {
  /** Everything the gateway sent (latin1). */
  readonly raw: string;
  readonly status: number | null;
  readonly headers: Record<string, string[]>;
  /** The body as its framing delimits it (chunked decoded). */
  readonly body: string;
  readonly framing: "none" | "length" | "chunked" | "close";
  /** The response is complete by its own framing. */
  readonly complete: boolean;
  /** The gateway closed the connection. */
  readonly closed: boolean;
}

/** Parses one response as a client would; `complete` only when its framing says it ended. */
function parse(raw: string, method: string, closed: boolean): Seen {
  const end = raw.indexOf("\r\n\r\n");
  const statusMatch = /^HTTP\/1\.1 (\d{3}) /.exec(raw);
  const status = statusMatch ? Number(statusMatch[1]) : null;
  const base = { raw, status, closed, headers: {} as Record<string, string[]> };
  if (end < 0) return { ...base, body: "", framing: "none", complete: false };
  for (const line of raw.slice(0, end).split("\r\n").slice(1)) {
    const colon = line.indexOf(":");
    const name = line.slice(0, colon).toLowerCase();
    (base.headers[name] ??= []).push(line.slice(colon + 1).trim());
  }
  const rest = raw.slice(end + 4);
  if (method === "HEAD" || status === 204 || status === 304)
    return { ...base, body: "", framing: "none", complete: true };
  const cl = base.headers["content-length"];
  if (cl) {
    const n = Number(cl[0]);
    return { ...base, body: rest.slice(0, n), framing: "length", complete: rest.length >= n };
  }
  if (base.headers["transfer-encoding"]?.[0] === "chunked") {
    let body = "";
    let pos = 0;
    for (;;) {
      const eol = rest.indexOf("\r\n", pos);
      if (eol < 0) return { ...base, body, framing: "chunked", complete: false };
      const size = parseInt(rest.slice(pos, eol), 16);
      if (size === 0) {
        // Trailer section (none expected) then the final CRLF.
        const ok = rest.startsWith("\r\n", eol + 2);
        return { ...base, body, framing: "chunked", complete: ok };
      }
      if (rest.length < eol + 2 + size + 2) {
        body += rest.slice(eol + 2, eol + 2 + size);
        return { ...base, body, framing: "chunked", complete: false };
      }
      body += rest.slice(eol + 2, eol + 2 + size);
      pos = eol + 2 + size + 2;
    }
  }
  // Delimited by the close: a truncation would look complete — the gateway must never send this.
  return { ...base, body: rest, framing: "close", complete: closed };
}

/**
 * Sends one request on a fresh raw socket and reads until the response is complete by its framing
 * (plus a short settle, to see whether the gateway then closes), the gateway closes, or `timeoutMs`.
 */
function exchange(port: number, method: string, target: string, timeoutMs = 4000): Promise<Seen> {
  return new Promise((resolve) => {
    const socket = net.connect(port, "127.0.0.1");
    let raw = "";
    let done = false;
    let settle: NodeJS.Timeout | undefined;
    const finish = (closed: boolean) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      clearTimeout(settle);
      socket.destroy();
      resolve(parse(raw, method, closed));
    };
    const timer = setTimeout(() => finish(false), timeoutMs);
    socket.on("data", (d: Buffer) => {
      raw += d.toString("latin1");
      if (settle === undefined && parse(raw, method, false).complete)
        settle = setTimeout(() => finish(false), 100);
    });
    socket.on("error", () => {}); // a reset is a close
    socket.on("close", () => finish(true));
    socket.write(`${method} ${target} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n`);
  });
}

/** Requests received by the upstream for `target`. */
const hits = (up: RawUpstream, target: string) =>
  up.requests.filter((r) => r.startsWith(`${r.split(" ")[0]} ${target} `)).length;

let up: RawUpstream;
let gw: TestGateway;
let port: number;

const byName = <T extends { name: string }>(rows: readonly T[]) => new Map(rows.map((r) => [r.name, r]));
const good = byName(GOOD);
const malformed = byName(MALFORMED);
const truncated = byName(TRUNCATED);

beforeAll(async () => {
  // The upstream answers by path: /{c,t}/{good,bad,trunc,stall}/<row name>.
  up = await startRawUpstream(async (conn, request) => {
    const target = /^\S+ (\S+) /.exec(request)![1]!;
    const [, , kind, name] = target.split("/");
    const s = conn.socket;
    if (kind === "good") {
      const row = good.get(name!)!;
      await sendParts(s, [row.response]);
      if (row.closeAfter) s.end();
    } else if (kind === "bad") {
      s.write(malformed.get(name!)!.response); // and keeps the connection open
    } else if (kind === "trunc") {
      const row = truncated.get(name!)!;
      await sendParts(s, row.parts, 5);
      await sleep(5);
      if (row.end === "rst") s.resetAndDestroy();
      else s.end();
    } else if (kind === "stall") {
      if (name === "after-head") s.write("HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\nhello");
      else if (name === "mid-chunk") s.write("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhe");
      else if (name === "interim") s.write("HTTP/1.1 100 Continue\r\n\r\n");
      else if (name === "trickle") {
        // One byte every 40 ms: never idle for long, but the head takes about 2 s.
        const head = "HTTP/1.1 200 OK\r\nX-Slow: aaaaaaaaaaaaaaaaaaaa\r\nContent-Length: 2\r\n\r\nok";
        await sendParts(s, [...head], 40);
      }
      // "no-head": nothing at all
    }
  });
  gw = await startTestGateway(
    gatewayConfig(
      [
        {
          name: "c",
          match: { path: "/c/**" },
          to: "app",
          ...PUBLIC,
          timeout: "3s",
          retries: { attempts: 0 },
        },
        {
          name: "t",
          match: { path: "/t/**" },
          to: "app",
          ...PUBLIC,
          timeout: "300ms",
          retries: { attempts: 0 },
        },
      ],
      { app: { port: up.port } },
      {},
      APP,
    ),
  );
  port = Number(new URL(gw.url).port);
});

afterAll(async () => {
  await gw?.drain();
  await up?.close();
});

/** The upstream's headers the client must see unchanged: all but hop-by-hop ones. */
function expectHeadersPassed(row: GoodRow, seen: Seen): void {
  for (const [name, value] of Object.entries(row.headers)) {
    if (HOP_BY_HOP.has(name) || row.hop?.includes(name)) continue;
    expect(seen.headers[name], name).toEqual(Array.isArray(value) ? value : [value]);
  }
  for (const name of row.hop ?? []) expect(seen.headers[name], name).toBeUndefined();
  // Connection, Keep-Alive and Transfer-Encoding the client may see are the gateway's own (checked below).
  for (const name of row.absent ?? [])
    if (!HOP_BY_HOP.has(name)) expect(seen.headers[name], name).toBeUndefined();
  // Whatever Connection / Keep-Alive the client sees are the gateway's own, not the upstream's.
  expect(seen.headers["keep-alive"] ?? []).not.toContain("timeout=7");
  expect((seen.headers.connection ?? []).join()).not.toMatch(/x-secret/);
}

describe("well_formed_upstream_responses_arrive_intact", () => {
  for (const row of GOOD) {
    it(`passes_on_${row.name}`, async () => {
      const target = `/c/good/${row.name}`;
      const seen = await exchange(port, row.method, target);
      expect(seen.status).toBe(row.status);
      expect(seen.complete).toBe(true);
      expect(seen.framing).not.toBe("close");
      expect(seen.closed).toBe(false);
      expect(seen.body).toBe(row.body);
      expectHeadersPassed(row, seen);
      expect(hits(up, target)).toBe(1);
    });
  }
});

describe("malformed_upstream_responses_never_reach_the_client_as_complete", () => {
  for (const row of MALFORMED) {
    const target = `/c/bad/${row.name}`;
    if (row.phase === "head") {
      it(`answers_502_upstream_reset_for_${row.name}`, async () => {
        const seen = await exchange(port, "GET", target);
        expect(seen.status).toBe(502);
        expect(seen.headers["x-meshgate-error"]).toEqual(["upstream_reset"]);
        expect(seen.complete).toBe(true);
        expect(seen.body).not.toContain("hello");
        expect(hits(up, target)).toBe(1);
        const logged = gw.logs.find(
          (l) => l.event === "upstream_error" && typeof l.requestId === "string" && l.code === row.code,
        );
        expect(logged).toBeDefined();
      });
    } else {
      it(`resets_the_client_for_${row.name}`, async () => {
        const seen = await exchange(port, "GET", target);
        expect(seen.closed).toBe(true);
        expect(seen.complete).toBe(false);
        // Either the head went out (the upstream's 200, chunked, without its last chunk) or nothing did.
        if (seen.status !== null) {
          expect(seen.status).toBe(200);
          expect(seen.framing).toBe("chunked");
        } else expect(seen.raw).toBe("");
        expect(hits(up, target)).toBe(1);
      });
    }
  }
});

describe("truncated_upstream_responses_never_reach_the_client_as_complete", () => {
  for (const row of TRUNCATED) {
    const target = `/c/trunc/${row.name}`;
    if (row.phase === "head") {
      it(`answers_502_upstream_reset_on_${row.name}`, async () => {
        const seen = await exchange(port, "GET", target);
        expect(seen.status).toBe(502);
        expect(seen.headers["x-meshgate-error"]).toEqual(["upstream_reset"]);
        expect(hits(up, target)).toBe(1);
      });
    } else {
      it(`resets_the_client_on_${row.name}`, async () => {
        const seen = await exchange(port, "GET", target);
        expect(seen.closed).toBe(true);
        expect(seen.complete).toBe(false);
        if (seen.status !== null) {
          expect(seen.status).toBe(200);
          expect(["length", "chunked"]).toContain(seen.framing);
          // A Content-Length response is short of its length: the client can tell.
          if (seen.framing === "length")
            expect(seen.raw.length - seen.raw.indexOf("\r\n\r\n") - 4).toBeLessThan(
              Number(seen.headers["content-length"]![0]),
            );
        } else expect(seen.raw).toBe("");
      });
    }
  }

  it("passes_on_the_short_content_length_body_then_closes", async () => {
    const seen = await exchange(port, "GET", "/c/trunc/close_mid_content_length_body");
    expect(seen).toMatchObject({ status: 200, framing: "length", complete: false, closed: true });
    expect(seen.headers["content-length"]).toEqual(["11"]);
    expect(seen.body).toBe("hello");
  });

  it("passes_on_the_chunks_received_but_never_the_last_chunk", async () => {
    const seen = await exchange(port, "GET", "/c/trunc/close_before_the_last_chunk");
    expect(seen).toMatchObject({ status: 200, framing: "chunked", complete: false, closed: true });
    expect(seen.body).toBe("hello");
    expect(seen.raw).not.toMatch(/\r\n0\r\n\r\n$/);
  });
});

describe("stalled_upstreams", () => {
  it("answers_504_upstream_timeout_when_no_head_arrives", async () => {
    const t = performance.now();
    const seen = await exchange(port, "GET", "/t/stall/no-head");
    expect(seen.status).toBe(504);
    expect(seen.headers["x-meshgate-error"]).toEqual(["upstream_timeout"]);
    expect(performance.now() - t).toBeLessThan(2000);
  });

  it("answers_504_upstream_timeout_when_only_an_interim_response_arrives", async () => {
    const seen = await exchange(port, "GET", "/t/stall/interim");
    expect(seen.status).toBe(504);
    expect(seen.headers["x-meshgate-error"]).toEqual(["upstream_timeout"]);
  });

  it("answers_504_upstream_timeout_when_the_head_trickles_in_byte_by_byte", async () => {
    const t = performance.now();
    const seen = await exchange(port, "GET", "/t/stall/trickle");
    expect(seen.status).toBe(504);
    expect(seen.headers["x-meshgate-error"]).toEqual(["upstream_timeout"]);
    expect(performance.now() - t).toBeLessThan(1000);
  });

  it("resets_the_client_when_the_body_stalls_after_the_head", async () => {
    const seen = await exchange(port, "GET", "/t/stall/after-head");
    expect(seen).toMatchObject({
      status: 200,
      framing: "length",
      complete: false,
      closed: true,
      body: "hello",
    });
  });

  it("resets_the_client_when_a_chunked_body_stalls_mid_chunk", async () => {
    const seen = await exchange(port, "GET", "/t/stall/mid-chunk");
    expect(seen).toMatchObject({ status: 200, framing: "chunked", complete: false, closed: true });
  });
});

describe("retries_and_connect_failures", () => {
  const cleanup: (() => unknown)[] = [];
  afterEach(async () => {
    for (const f of cleanup.splice(0).reverse()) await f();
  });

  async function gatewayTo(upstreamPort: number, route: Record<string, unknown> = {}) {
    const g = await startTestGateway(
      gatewayConfig(
        [{ name: "r", match: { path: "/**" }, to: "app", ...PUBLIC, ...route }],
        { app: { port: upstreamPort } },
        {},
        APP,
      ),
    );
    cleanup.push(() => g.drain());
    return Number(new URL(g.url).port);
  }

  it("still_answers_502_when_every_retry_meets_a_malformed_head", async () => {
    const raw = await startRawUpstream((conn) => {
      conn.socket.write("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\nhello");
    });
    cleanup.push(() => raw.close());
    const p = await gatewayTo(raw.port, { retries: { attempts: 2, on: ["reset"] } });
    const seen = await exchange(p, "GET", "/x");
    expect(seen.status).toBe(502);
    expect(seen.headers["x-meshgate-error"]).toEqual(["upstream_reset"]);
    expect(raw.requests).toHaveLength(3);
  });

  it("retries_a_get_reset_before_the_head_and_delivers_the_clean_answer", async () => {
    const raw = await startRawUpstream((conn, _req, i) => {
      if (i === 0) conn.socket.resetAndDestroy();
      else conn.socket.write("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nclean");
    });
    cleanup.push(() => raw.close());
    const p = await gatewayTo(raw.port, { retries: { attempts: 1, on: ["reset"] } });
    const seen = await exchange(p, "GET", "/x");
    expect(seen).toMatchObject({ status: 200, body: "clean", complete: true });
    expect(raw.requests).toHaveLength(2);
  });

  it("never_retries_once_the_head_went_to_the_client", async () => {
    const raw = await startRawUpstream((conn) => {
      conn.socket.write("HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\nhello");
      setTimeout(() => conn.socket.resetAndDestroy(), 20);
    });
    cleanup.push(() => raw.close());
    const p = await gatewayTo(raw.port, { retries: { attempts: 2, on: ["reset"] } });
    const seen = await exchange(p, "GET", "/x");
    expect(seen).toMatchObject({
      status: 200,
      framing: "length",
      complete: false,
      closed: true,
      body: "hello",
    });
    await sleep(100);
    expect(raw.requests).toHaveLength(1);
  });

  it("answers_503_upstream_connect_failure_when_the_connect_times_out", async () => {
    const hole = await startBlackhole();
    cleanup.push(() => hole.close());
    const p = await gatewayTo(hole.port, { retries: { attempts: 0 } });
    const seen = await exchange(p, "GET", "/x", 8000);
    expect(seen.status).toBe(503);
    expect(seen.headers["x-meshgate-error"]).toEqual(["upstream_connect_failure"]);
  });

  /** The gateway in front of the blackhole, with the service's protocol and connectTimeout. */
  async function gatewayToHole(
    protocol: string,
    connectTimeout: string,
    gateway: Record<string, unknown> = {},
  ) {
    const hole = await startBlackhole();
    cleanup.push(() => hole.close());
    const g = await startTestGateway(
      gatewayConfig(
        [
          {
            name: "r",
            match: { path: "/**" },
            to: "app",
            ...PUBLIC,
            retries: { attempts: 0 },
            timeout: "1800ms",
          },
        ],
        { app: { port: hole.port } },
        gateway,
        { app: { ...APP.app, protocol, connectTimeout } },
      ),
    );
    cleanup.push(() => g.drain());
    return Number(new URL(g.url).port);
  }

  // A service's connectTimeout bounds the connect over HTTP/1.1 and HTTP/2 alike; 0s sets no timer of the
  // gateway's own (the system's: ~2 minutes of SYN retries on Linux), so the route's timeout ends the
  // request. Before, 0s meant 1 s for requests and an immediate 503 for a WebSocket upgrade.
  it.each([
    ["cuts_an_http1_connect_at_the_services_connect_timeout", "http", "300ms", 503, "upstream_connect_failure", 250, 1500],
    ["cuts_an_http2_connect_at_the_services_connect_timeout", "http2", "300ms", 503, "upstream_connect_failure", 250, 1500],
    ["leaves_an_http1_connect_to_the_system_at_0s_so_the_route_timeout_ends_it", "http", "0s", 504, "upstream_timeout", 1750, 3500],
    ["leaves_an_http2_connect_to_the_system_at_0s_so_the_route_timeout_ends_it", "http2", "0s", 504, "upstream_timeout", 1750, 3500],
  ] as const)("%s", async (_claim, protocol, connectTimeout, status, code, atLeast, below) => {
    const p = await gatewayToHole(protocol, connectTimeout);
    const t = performance.now();
    const seen = await exchange(p, "GET", "/x", 8000);
    const ms = performance.now() - t;
    expect(seen.status).toBe(status);
    expect(seen.headers["x-meshgate-error"]).toEqual([code]);
    expect(ms).toBeGreaterThanOrEqual(atLeast);
    expect(ms).toBeLessThan(below);
  }); // prettier-ignore

  // At 0s the connect is the system's, but the gateway's idle timeout still ends the wait with a 503 (the
  // client's connection was idle too: it is answered, not dropped).
  it.each([
    ["cuts_a_websocket_upgrades_connect_at_the_services_connect_timeout", "300ms", {}, "HTTP/1.1 503 Service Unavailable"],
    ["leaves_a_websocket_upgrades_connect_to_the_system_at_0s", "0s", {}, null],
    ["answers_503_when_a_websocket_upgrades_connect_outlasts_the_idle_timeout_at_0s", "0s", { limits: { idleTimeout: "1s" } }, "HTTP/1.1 503 Service Unavailable"],
  ] as const)("%s", async (_claim, connectTimeout, gateway, answer) => {
    const p = await gatewayToHole("http", connectTimeout, gateway);
    expect(await upgradeStatusLine(p, "/ws", { waitMs: 1500 })).toBe(answer);
  }); // prettier-ignore

  it("answers_503_upstream_connect_failure_when_the_connect_is_refused", async () => {
    const p = await gatewayTo(await freePort(), { retries: { attempts: 0 } });
    const t = performance.now();
    const seen = await exchange(p, "GET", "/x");
    expect(seen.status).toBe(503);
    expect(seen.headers["x-meshgate-error"]).toEqual(["upstream_connect_failure"]);
    expect(performance.now() - t).toBeLessThan(1000);
  });
});

// After the tables: these requests reach the same targets, and the table rows count their own hits.
describe("http2_clients", () => {
  /** One GET over h2c: the status and headers, or the stream's error. */
  const h2 = (path: string) =>
    new Promise<{ status?: number; headers?: http2.IncomingHttpHeaders; error?: string }>((resolve) => {
      const session = http2.connect(`http://127.0.0.1:${port}`);
      session.on("error", () => {});
      const stream = session.request({ ":path": path, ":method": "DELETE" });
      let out: { status?: number; headers?: http2.IncomingHttpHeaders } = {};
      stream.on("response", (h) => (out = { status: h[":status"], headers: h }));
      stream.resume();
      stream.on("end", () => resolve(out));
      stream.on("error", (e: Error & { code?: string }) => resolve({ ...out, error: e.code }));
      stream.on("close", () => session.close());
    });

  it("answers_an_http2_client_a_204_whose_upstream_sent_a_content_length", async () => {
    const r = await h2("/c/good/no_content_204_with_a_content_length_not_passed_on");
    expect(r.error).toBeUndefined();
    expect(r.status).toBe(204);
    expect(r.headers!["x-up"]).toBe("1");
    expect(r.headers!["content-length"]).toBeUndefined();
  });

  it("answers_an_http2_client_502_for_a_status_above_599_like_an_http1_client", async () => {
    expect((await h2("/c/bad/status_600")).status).toBe(502);
  });
});

describe("http2_upstreams", () => {
  it("answers_502_for_an_http2_upstreams_status_above_599_and_keeps_serving_other_requests", async () => {
    const h2up = await startRawH2Upstream("600");
    const g = await startTestGateway(
      gatewayConfig(
        [{ name: "c", match: { path: "/**" }, to: "app", ...PUBLIC, retries: { attempts: 0 } }],
        { app: { port: h2up.port } },
        {},
        { app: { image: "r/app:1", port: 8080, protocol: "http2", allow: [{ from: ["gateway"] }] } },
      ),
    );
    try {
      // Over HTTP/2 the gateway's writeHead throws for a 600: from the upstream session's event that was
      // an uncaught exception, ending the whole process.
      const session = http2.connect(g.url);
      session.on("error", () => {});
      const status = await new Promise<number | string>((resolve) => {
        const stream = session.request({ ":path": "/x" });
        stream.on("response", (h) => resolve(h[":status"]!));
        stream.on("error", (e: Error & { code?: string }) => resolve(String(e.code)));
        stream.resume();
        setTimeout(() => resolve("no answer"), 3000);
      });
      session.close();
      expect(status).toBe(502);
      const h1 = await fetch(`${g.url}/x`);
      expect(h1.status).toBe(502);
      expect(h1.headers.get("x-meshgate-error")).toBe("upstream_reset");
    } finally {
      await g.drain();
      h2up.close();
    }
  });
});

describe("http2_upstream_streams_cut_short", () => {
  // An HTTP/2 upstream that resets its stream with RST_STREAM(NO_ERROR) before END_STREAM cut the body
  // (Node reports it as an ended stream): the HTTP/1.1 client's response is cut too, never complete.
  it("never_completes_a_response_whose_upstream_stream_was_reset_with_no_error_mid_body", async () => {
    const up = await startScriptedH2Upstream((id) => [
      frame(1, END_HEADERS, id, block([[":status", "200"]])),
      frame(0, 0, id, Buffer.from("partial-")),
      50,
      rst(id, 0),
    ]);
    const g = await startTestGateway(
      gatewayConfig(
        [{ name: "r", match: { path: "/**" }, to: "app", ...PUBLIC, retries: { attempts: 0 } }],
        { app: { port: up.port } },
        {},
        { app: { ...APP.app, protocol: "http2" } },
      ),
    );
    try {
      const seen = await exchange(Number(new URL(g.url).port), "GET", "/r");
      expect(seen).toMatchObject({
        status: 200,
        framing: "chunked",
        body: "partial-",
        complete: false,
        closed: true,
      });
    } finally {
      await g.drain();
      up.close();
    }
  });
});
