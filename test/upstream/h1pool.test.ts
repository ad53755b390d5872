/**
 * H1Pool against hostile upstreams: raw `net` servers on 127.0.0.1 that answer with exact bytes, split
 * across TCP reads at chosen points (every byte, byte by byte). Each case claims the exact outcome —
 * resolved with the exact body bytes the sink received, or rejected with the exact error code and the
 * sink destroyed, never finished — and what happened to the connection (reused, or closed by the pool),
 * counted at the raw server. The tables of responses live in test/support/raw-upstream.ts and are shared
 * with the gateway tests (test/gateway/upstream-framing.test.ts).
 */
import net from "node:net";
import { PassThrough, Writable } from "node:stream";
import { setTimeout as sleep } from "node:timers/promises";
import { afterEach, describe, expect, it } from "vitest";
import {
  H1Pool,
  type CancelToken,
  type H1PoolOptions,
  type H1StreamOptions,
  type ResponseHeaders,
} from "../../runtime/upstream/h1pool.ts";
import { freePort } from "../support/gateway.ts";
import {
  GOOD,
  MALFORMED,
  TRUNCATED,
  byteByByte,
  inParts,
  sendParts,
  splitAt,
  startBlackhole,
  startRawUpstream,
  type RawConn,
  type RawUpstream,
  type Reply,
} from "../support/raw-upstream.ts";

const cleanup: (() => unknown)[] = [];
afterEach(async () => {
  for (const f of cleanup.splice(0).reverse()) await f();
});

async function upstream(reply: Reply): Promise<RawUpstream> {
  const u = await startRawUpstream(reply);
  cleanup.push(() => u.close());
  return u;
}

interface Client {
  readonly pool: H1Pool;
  /** The pool's sockets, in the order it opened them. */
  readonly sockets: net.Socket[];
  /** `data` events seen on the pool's sockets (each is one TCP read handed to the parser). */
  reads(): number;
  /** Resolves after the pool's next read was parsed (or after 500 ms, e.g. once the pool closed). */
  nextRead(): Promise<void>;
}

/** A pool whose transport is a plain net.connect, observed (sockets kept, reads counted). */
function client(port: number, options: Partial<H1PoolOptions> = {}, host = "127.0.0.1"): Client {
  const sockets: net.Socket[] = [];
  let reads = 0;
  let waiters: (() => void)[] = [];
  const pool = new H1Pool(host, port, {
    maxConnections: 4,
    connectTimeoutMs: 1000,
    ...options,
    connect: (h, p) => {
      const s = net.connect({ host: h, port: p });
      sockets.push(s);
      s.on("data", () => {
        reads++;
        // Runs before the pool's own listener: let that one parse the read first.
        const w = waiters;
        waiters = [];
        if (w.length > 0) setImmediate(() => w.forEach((f) => f()));
      });
      return s;
    },
  });
  cleanup.push(async () => {
    await pool.close();
    for (const s of sockets) s.destroy();
  });
  return {
    pool,
    sockets,
    reads: () => reads,
    nextRead: () =>
      new Promise<void>((resolve) => {
        const t = setTimeout(resolve, 500);
        waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      }),
  };
}

interface Outcome {
  readonly result: "resolved" | "rejected";
  /** The rejection's `code`. */
  readonly code: string | undefined;
  readonly status: number | null;
  readonly headers: ResponseHeaders | null;
  /** Every byte the sink received (latin1). */
  readonly body: string;
  /** none: no head reached the factory; finished: ended normally; destroyed: failed; open: neither. */
  readonly sink: "none" | "finished" | "destroyed" | "open";
  readonly sinkError: string | undefined;
}

const codeOf = (e: unknown): string | undefined => (e as { code?: string }).code;

/** Runs one request through the pool into a recording sink and reports what happened. */
async function run(
  pool: H1Pool,
  opts: Partial<H1StreamOptions> = {},
  onBody?: (received: number) => void,
): Promise<Outcome> {
  let status: number | null = null;
  let headers: ResponseHeaders | null = null;
  let sink: Writable | null = null;
  let finished = false;
  let sinkError: string | undefined;
  const chunks: Buffer[] = [];
  let received = 0;
  let result: Outcome["result"] = "resolved";
  let code: string | undefined;
  try {
    await pool.stream(
      { method: "GET", path: "/", headers: null, headersTimeout: 1000, bodyTimeout: 1000, ...opts },
      (d) => {
        status = d.statusCode;
        headers = d.headers;
        sink = new Writable({
          write(c: Buffer, _e, cb) {
            chunks.push(c);
            received += c.length;
            onBody?.(received);
            cb();
          },
          final(cb) {
            finished = true;
            cb();
          },
        });
        sink.on("error", (e) => (sinkError = codeOf(e)));
        return sink;
      },
    );
  } catch (err) {
    result = "rejected";
    code = codeOf(err);
  }
  await new Promise((r) => setImmediate(r));
  const s = sink as Writable | null;
  return {
    result,
    code,
    status,
    headers,
    body: Buffer.concat(chunks).toString("latin1"),
    sink: s === null ? "none" : finished ? "finished" : s.destroyed ? "destroyed" : "open",
    sinkError,
  };
}

const waitFor = async (ok: () => boolean, ms = 1000): Promise<boolean> => {
  const until = performance.now() + ms;
  while (!ok()) {
    if (performance.now() > until) return false;
    await sleep(5);
  }
  return true;
};

const okResponse = (body: string, extra = "") =>
  `HTTP/1.1 200 OK\r\n${extra}Content-Length: ${Buffer.byteLength(body, "latin1")}\r\n\r\n${body}`;

// ── 1. Well-formed responses ──

type Mode = "from_one_read" | "split_at_every_byte" | "byte_by_byte";

describe("well_formed_responses", () => {
  for (const row of GOOD) {
    for (const mode of ["from_one_read", "split_at_every_byte", "byte_by_byte"] as Mode[]) {
      it(`delivers_${row.name}_${mode}`, async () => {
        const text = row.response;
        const plans: string[][] =
          mode === "from_one_read"
            ? [[text], [text], [text]]
            : mode === "byte_by_byte"
              ? [byteByByte(text)]
              : Array.from({ length: text.length - 1 }, (_, i) => splitAt(text, i + 1));
        const up = await upstream(async (conn, _req, i) => {
          await sendParts(conn.socket, plans[i]!, 2, () => c.nextRead());
          if (row.closeAfter) conn.socket.end();
        });
        const c: Client = client(up.port);
        for (const plan of plans) {
          const before = c.reads();
          const o = await run(c.pool, { method: row.method });
          expect(o).toMatchObject({
            result: "resolved",
            status: row.status,
            body: row.body,
            sink: "finished",
          });
          expect(o.headers).toMatchObject(row.headers);
          for (const name of row.absent ?? []) expect(o.headers).not.toHaveProperty(name);
          // Each part reached the parser in a read of its own (the split is real).
          expect(c.reads() - before).toBe(plan.length);
          if (!row.reused) expect(await waitFor(() => c.pool.stats.connections === 0)).toBe(true);
        }
        expect(up.requests).toHaveLength(plans.length);
        if (row.reused) {
          expect(up.conns).toHaveLength(1);
          expect(c.pool.stats.connections).toBe(1);
          expect(up.conns[0]!.peerClosedAt).toBe(-1);
        } else {
          expect(up.conns).toHaveLength(plans.length);
          for (const conn of up.conns) expect(conn.requests).toHaveLength(1);
          if (!row.closeAfter) for (const conn of up.conns) expect(await up.waitPeerClose(conn)).toBe(true);
        }
      });
    }
  }

  it("reuses_one_connection_for_fifty_sequential_requests", async () => {
    const up = await upstream((conn, req) => {
      conn.socket.write(okResponse(/^GET (\S+)/.exec(req)![1]!));
    });
    const c = client(up.port);
    for (let i = 0; i < 50; i++)
      expect(await run(c.pool, { path: `/n/${i}` })).toMatchObject({ body: `/n/${i}`, sink: "finished" });
    expect(up.conns).toHaveLength(1);
    expect(up.conns[0]!.requests).toHaveLength(50);
  });

  it("leaves_out_the_response_headers_it_is_asked_to_drop_and_keeps_the_framing", async () => {
    const up = await upstream((conn) => {
      conn.socket.write(
        "HTTP/1.1 200 OK\r\nServer: up/1.0\r\nX-Keep: 1\r\nX-Powered-By: a\r\nX-Powered-By: b\r\nContent-Length: 5\r\n\r\nhello",
      );
    });
    const c = client(up.port);
    const dropped = await run(c.pool, { dropResponseHeaders: new Set(["server", "x-powered-by"]) });
    expect(dropped).toMatchObject({ result: "resolved", status: 200, body: "hello", sink: "finished" });
    expect(dropped.headers).toEqual({ "x-keep": "1", "content-length": "5" });
    // Framing headers are never dropped (the pool reads them), and the next request keeps every header.
    const framed = await run(c.pool, { dropResponseHeaders: new Set(["content-length"]) });
    expect(framed).toMatchObject({ body: "hello", sink: "finished" });
    expect(framed.headers).toMatchObject({ "content-length": "5" });
    const kept = await run(c.pool);
    expect(kept.headers).toMatchObject({ server: "up/1.0", "x-powered-by": ["a", "b"] });
    expect(up.conns).toHaveLength(1);
  });

  it("closes_an_idle_connection_after_its_keep_alive_time", async () => {
    const up = await upstream((conn) => {
      conn.socket.write(okResponse("ok"));
    });
    const c = client(up.port, { keepAliveMs: 300 });
    await run(c.pool);
    const done = performance.now() - up.conns[0]!.acceptedAt;
    expect(await up.waitPeerClose(up.conns[0]!, 2000)).toBe(true);
    const idle = up.conns[0]!.peerClosedAt - done;
    expect(idle).toBeGreaterThanOrEqual(250);
    expect(idle).toBeLessThan(1000);
    expect(c.pool.stats.connections).toBe(0);
  });

  /** The upstream says how long it keeps an idle connection and then closes it itself. */
  const keepAliveCase = (timeout: number) => async () => {
    let upstreamClosedFirst = false;
    const up = await upstream((conn) => {
      conn.socket.write(okResponse("ok", `Keep-Alive: timeout=${timeout}\r\n`));
      setTimeout(() => {
        if (conn.peerClosedAt >= 0) return;
        upstreamClosedFirst = true;
        conn.socket.end();
      }, timeout * 1000).unref();
    });
    const c = client(up.port, { keepAliveMs: 10_000 });
    expect(await run(c.pool)).toMatchObject({ result: "resolved", body: "ok" });
    expect(await up.waitPeerClose(up.conns[0]!, timeout * 1000 + 500)).toBe(true);
    expect(upstreamClosedFirst).toBe(false);
    expect(up.conns[0]!.peerClosedAt).toBeLessThan(timeout * 1000 - 300);
    // The next request gets a fresh connection and succeeds.
    expect(await run(c.pool)).toMatchObject({ result: "resolved", body: "ok" });
    expect(up.conns).toHaveLength(2);
  };
  it("closes_before_the_upstream_keep_alive_timeout_of_two_seconds", keepAliveCase(2), 10_000);
  it("closes_before_the_upstream_keep_alive_timeout_of_one_second", keepAliveCase(1), 10_000);
});

// ── 2. Malformed responses ──

describe("malformed_responses", () => {
  for (const row of MALFORMED) {
    for (const mode of ["in_one_read", "across_reads"] as const) {
      it(`rejects_${row.name}_${mode}`, async () => {
        const parts = mode === "in_one_read" ? [row.response] : inParts(row.response, 40);
        // The upstream keeps the connection open: the failure must come from the parser, not a close.
        const up = await upstream((conn) => sendParts(conn.socket, parts, 2, () => c.nextRead()));
        const c: Client = client(up.port);
        const o = await run(c.pool, { method: row.method ?? "GET" });
        expect(o.result).toBe("rejected");
        expect(o.code).toBe(row.code);
        if (row.phase === "head") expect(o.sink).toBe("none");
        else expect(o).toMatchObject({ sink: "destroyed", sinkError: row.code, status: 200 });
        expect(await up.waitPeerClose(up.conns[0]!)).toBe(true);
        expect(c.pool.stats.connections).toBe(0);
      });
    }
  }

  it("rejects_a_101_switching_protocols_to_a_request_that_asked_for_an_upgrade", async () => {
    // The pool strips Upgrade, so no request of its can have asked: a 101 is always unsolicited.
    const up = await upstream((conn) => {
      conn.socket.write(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
      );
    });
    const c = client(up.port);
    const o = await run(c.pool, { headers: { upgrade: "websocket", connection: "upgrade" } });
    expect(o).toMatchObject({ result: "rejected", code: "UND_ERR_RESPONSE", sink: "none" });
    expect(up.requests[0]).not.toMatch(/upgrade/i);
  });

  it("hands_on_a_head_of_just_under_64_kib", async () => {
    const filler = "a".repeat(64 * 1024 - 200);
    const up = await upstream((conn) => {
      conn.socket.write(okResponse("ok", `X-Big: ${filler}\r\n`));
    });
    const c = client(up.port);
    const o = await run(c.pool);
    expect(o).toMatchObject({ result: "resolved", body: "ok" });
    expect(o.headers!["x-big"]).toBe(filler);
  });
});

// ── 3. Truncation and resets ──

describe("truncated_responses", () => {
  for (const row of TRUNCATED) {
    it(`fails_on_${row.name}`, async () => {
      const up = await upstream(async (conn) => {
        await sendParts(conn.socket, row.parts, 5, () => c.nextRead());
        if (row.parts.length > 0) await c.nextRead();
        if (row.end === "rst") conn.socket.resetAndDestroy();
        else conn.socket.end();
      });
      const c: Client = client(up.port);
      const o = await run(c.pool);
      expect(o.result).toBe("rejected");
      expect(o.code).toBe("UND_ERR_SOCKET");
      if (row.phase === "head") expect(o.sink).toBe("none");
      else expect(o).toMatchObject({ sink: "destroyed", sinkError: "UND_ERR_SOCKET" });
      expect(c.pool.stats.connections).toBe(0);
    });
  }

  it("serves_the_next_request_on_a_new_connection_after_a_truncation", async () => {
    const up = await upstream((conn, _req, i) => {
      if (i === 0) {
        conn.socket.write("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhel");
        conn.socket.end();
      } else conn.socket.write(okResponse("second"));
    });
    const c = client(up.port);
    expect(await run(c.pool)).toMatchObject({ code: "UND_ERR_SOCKET", body: "hel", sink: "destroyed" });
    expect(await run(c.pool)).toMatchObject({ result: "resolved", body: "second" });
    expect(up.conns).toHaveLength(2);
  });

  it("fails_the_request_when_an_idle_connection_closes_as_it_is_reused", async () => {
    // The upstream closes right after the first response: the second request either finds the
    // connection gone (new one) or meets the close — never a made-up response.
    const up = await upstream((conn, _req, i) => {
      conn.socket.write(okResponse(`r${i}`));
      conn.socket.end();
    });
    const c = client(up.port);
    expect(await run(c.pool)).toMatchObject({ result: "resolved", body: "r0" });
    const o = await run(c.pool);
    if (o.result === "resolved") expect(o.body).toBe("r1");
    else expect(o).toMatchObject({ code: "UND_ERR_SOCKET", sink: "none" });
  });
});

// ── 4. Timeouts and connect failures ──

describe("timeouts", () => {
  const timed = async (pool: H1Pool, opts: Partial<H1StreamOptions>) => {
    const t = performance.now();
    const o = await run(pool, opts);
    return { o, ms: performance.now() - t };
  };

  it("fails_with_headers_timeout_when_no_head_arrives", async () => {
    const up = await upstream(() => {});
    const c = client(up.port);
    const { o, ms } = await timed(c.pool, { headersTimeout: 200 });
    expect(o).toMatchObject({ result: "rejected", code: "UND_ERR_HEADERS_TIMEOUT", sink: "none" });
    expect(ms).toBeGreaterThanOrEqual(190);
    expect(ms).toBeLessThan(900);
    expect(await up.waitPeerClose(up.conns[0]!)).toBe(true);
  });

  it("fails_with_headers_timeout_when_the_head_stalls_half_way", async () => {
    const up = await upstream((conn) => {
      conn.socket.write("HTTP/1.1 200 OK\r\nContent-Le");
    });
    const c = client(up.port);
    const { o } = await timed(c.pool, { headersTimeout: 200 });
    expect(o).toMatchObject({ result: "rejected", code: "UND_ERR_HEADERS_TIMEOUT", sink: "none" });
  });

  it("fails_with_headers_timeout_when_only_an_interim_response_arrives", async () => {
    const up = await upstream((conn) => {
      conn.socket.write("HTTP/1.1 100 Continue\r\n\r\n");
    });
    const c = client(up.port);
    const { o } = await timed(c.pool, { headersTimeout: 200 });
    expect(o).toMatchObject({ result: "rejected", code: "UND_ERR_HEADERS_TIMEOUT", sink: "none" });
  });

  it("fails_with_headers_timeout_when_the_head_trickles_in_past_it", async () => {
    // One byte every 40 ms never leaves the connection idle for 300 ms, but the head takes 2 s.
    const head = "HTTP/1.1 200 OK\r\nX-Slow: aaaaaaaaaaaaaaaaaaaa\r\nContent-Length: 2\r\n\r\nok";
    const up = await upstream((conn) => sendParts(conn.socket, byteByByte(head), 40));
    const c = client(up.port);
    const { o, ms } = await timed(c.pool, { headersTimeout: 300 });
    expect(o).toMatchObject({ result: "rejected", code: "UND_ERR_HEADERS_TIMEOUT", sink: "none" });
    expect(ms).toBeLessThan(800);
    expect(await up.waitPeerClose(up.conns[0]!)).toBe(true);
  });

  it("fails_with_headers_timeout_when_interim_responses_keep_coming", async () => {
    const interims = Array.from({ length: 40 }, () => "HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n");
    const up = await upstream((conn) => sendParts(conn.socket, [...interims, okResponse("late")], 50));
    const c = client(up.port);
    const { o, ms } = await timed(c.pool, { headersTimeout: 300 });
    expect(o).toMatchObject({ result: "rejected", code: "UND_ERR_HEADERS_TIMEOUT", sink: "none" });
    expect(ms).toBeLessThan(800);
  });

  it("counts_the_headers_timeout_from_the_end_of_a_streamed_request_body", async () => {
    // The upload takes longer than the headers timeout; the head arrives promptly after it.
    const up = await upstream((conn) => {
      conn.socket.write(okResponse("ok"));
    });
    const c = client(up.port);
    const body = new PassThrough();
    const pending = timed(c.pool, { method: "POST", body, headersTimeout: 200 });
    for (let i = 0; i < 5; i++) {
      body.write("x");
      await sleep(80);
    }
    body.end();
    const { o } = await pending;
    expect(o).toMatchObject({ result: "resolved", body: "ok" });
  });

  it("fails_with_body_timeout_when_the_body_stalls_after_the_head", async () => {
    const up = await upstream((conn) => {
      conn.socket.write("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhel");
    });
    const c = client(up.port);
    const { o, ms } = await timed(c.pool, { headersTimeout: 5000, bodyTimeout: 200 });
    expect(o).toMatchObject({
      result: "rejected",
      code: "UND_ERR_BODY_TIMEOUT",
      sink: "destroyed",
      sinkError: "UND_ERR_BODY_TIMEOUT",
      body: "hel",
    });
    expect(ms).toBeGreaterThanOrEqual(190);
    expect(ms).toBeLessThan(900);
    expect(await up.waitPeerClose(up.conns[0]!)).toBe(true);
  });

  it("fails_with_body_timeout_when_a_chunked_body_stalls_mid_chunk", async () => {
    const up = await upstream((conn) => {
      conn.socket.write("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhe");
    });
    const c = client(up.port);
    const { o } = await timed(c.pool, { bodyTimeout: 200 });
    expect(o).toMatchObject({
      result: "rejected",
      code: "UND_ERR_BODY_TIMEOUT",
      sink: "destroyed",
      body: "he",
    });
  });

  it("times_the_body_between_bytes_not_in_total", async () => {
    const parts = ["HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\n", "a", "b", "c", "d", "e", "f"];
    const up = await upstream((conn) => sendParts(conn.socket, parts, 80));
    const c = client(up.port);
    const { o, ms } = await timed(c.pool, { headersTimeout: 200, bodyTimeout: 200 });
    expect(o).toMatchObject({ result: "resolved", body: "abcdef", sink: "finished" });
    expect(ms).toBeGreaterThan(400);
  });

  it("fails_with_connect_timeout_against_an_address_that_never_answers", async () => {
    const hole = await startBlackhole();
    cleanup.push(() => hole.close());
    const c = client(hole.port, { connectTimeoutMs: 200 });
    const { o, ms } = await timed(c.pool, {});
    expect(o).toMatchObject({ result: "rejected", code: "UND_ERR_CONNECT_TIMEOUT", sink: "none" });
    expect(ms).toBeGreaterThanOrEqual(190);
    expect(ms).toBeLessThan(900);
    expect(c.pool.stats.connections).toBe(0);
  });

  // A new connection must open within the pool's connect timeout and within what is left of the whole
  // request (totalTimeout): whichever runs out first ends it; 0 sets no connect timer of the pool's own.
  it.each([
    ["ends_a_connect_at_the_connect_timeout_when_that_is_shorter", 200, 600, "UND_ERR_CONNECT_TIMEOUT"],
    ["ends_a_connect_at_the_total_timeout_when_that_is_shorter", 600, 200, "UND_ERR_HEADERS_TIMEOUT"],
    ["ends_a_connect_at_the_total_timeout_when_the_connect_timeout_is_0", 0, 200, "UND_ERR_HEADERS_TIMEOUT"],
  ] as const)("%s", async (_claim, connectTimeoutMs, totalTimeout, code) => {
    const hole = await startBlackhole();
    cleanup.push(() => hole.close());
    const c = client(hole.port, { connectTimeoutMs });
    const { o, ms } = await timed(c.pool, { headersTimeout: 5000, totalTimeout });
    expect(o).toMatchObject({ result: "rejected", code, sink: "none" });
    expect(ms).toBeGreaterThanOrEqual(190);
    expect(ms).toBeLessThan(900);
    expect(c.pool.stats.connections).toBe(0);
  });

  /** A pool to `port` whose transport completes its connect 300 ms late. */
  const lateConnect = (port: number) => {
    const pool = new H1Pool("127.0.0.1", port, {
      maxConnections: 1,
      connectTimeoutMs: 1000,
      connect: (h, p) => {
        const s = new net.Socket();
        const t = setTimeout(() => s.connect({ host: h, port: p }), 300);
        s.once("close", () => clearTimeout(t));
        return s;
      },
    });
    cleanup.push(() => pool.close());
    return pool;
  };

  // The headers (per-try) timeout starts once connected, as Envoy's per_try_timeout does; the total one
  // runs from the start, and the head gets at most what the connect left of it.
  it.each([
    ["starts_the_headers_timeout_once_connected", 400, 5000, 690, 950],
    ["gives_the_head_what_the_connect_left_of_the_total_timeout", 5000, 600, 590, 850],
  ] as const)("%s", async (_claim, headersTimeout, totalTimeout, atLeast, below) => {
    const up = await upstream(() => {}); // never answers
    const { o, ms } = await timed(lateConnect(up.port), { headersTimeout, totalTimeout });
    expect(o).toMatchObject({ result: "rejected", code: "UND_ERR_HEADERS_TIMEOUT", sink: "none" });
    expect(up.requests).toHaveLength(1); // sent once connected, then unanswered
    expect(ms).toBeGreaterThanOrEqual(atLeast);
    expect(ms).toBeLessThan(below);
  });

  it("fails_with_econnrefused_when_nothing_listens", async () => {
    const c = client(await freePort());
    const { o, ms } = await timed(c.pool, {});
    expect(o).toMatchObject({ result: "rejected", code: "ECONNREFUSED", sink: "none" });
    expect(ms).toBeLessThan(500);
    expect(c.pool.stats.connections).toBe(0);
  });
});

// ── 5. Cancellation ──

describe("cancellation", () => {
  const token = (): CancelToken => ({ aborted: false, onabort: null });
  const cancel = (t: CancelToken) => {
    t.aborted = true;
    t.onabort?.();
  };

  it("aborts_a_request_waiting_in_the_queue", async () => {
    // The first answer comes late enough that the second is still queued when it is cancelled, on a
    // loaded machine too.
    const up = await upstream(async (conn) => {
      await sleep(600);
      conn.socket.write(okResponse("first"));
    });
    const c = client(up.port, { maxConnections: 1 });
    const first = run(c.pool);
    const t = token();
    const second = run(c.pool, { cancel: t, path: "/second" });
    await sleep(20);
    expect(c.pool.stats.pending).toBe(1);
    cancel(t);
    expect(await second).toMatchObject({ result: "rejected", code: "UND_ERR_ABORTED", sink: "none" });
    expect(c.pool.stats.pending).toBe(0);
    expect(await first).toMatchObject({ result: "resolved", body: "first" });
    await sleep(30);
    expect(up.requests).toHaveLength(1);
    expect(up.conns).toHaveLength(1);
  });

  it("aborts_a_request_while_connecting", async () => {
    const hole = await startBlackhole();
    cleanup.push(() => hole.close());
    const c = client(hole.port, { connectTimeoutMs: 5000 });
    const t = token();
    const started = performance.now();
    const pending = run(c.pool, { cancel: t });
    await sleep(50);
    cancel(t);
    expect(await pending).toMatchObject({ result: "rejected", code: "UND_ERR_ABORTED", sink: "none" });
    expect(performance.now() - started).toBeLessThan(500);
    expect(c.pool.stats.connections).toBe(0);
    expect(c.sockets[0]!.destroyed).toBe(true);
  });

  it("aborts_a_request_waiting_for_the_head_and_closes_the_connection", async () => {
    const up = await upstream(() => {});
    const c = client(up.port);
    const t = token();
    const pending = run(c.pool, { cancel: t });
    expect(await up.waitConns(1)).toBe(true);
    await waitFor(() => up.requests.length === 1);
    cancel(t);
    expect(await pending).toMatchObject({ result: "rejected", code: "UND_ERR_ABORTED", sink: "none" });
    expect(await up.waitPeerClose(up.conns[0]!)).toBe(true);
    expect(c.pool.stats.connections).toBe(0);
  });

  it("aborts_mid_body_destroys_the_sink_and_never_reuses_the_connection", async () => {
    const up = await upstream((conn, _req, i) => {
      if (i === 0) conn.socket.write("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nfirst-bytes");
      else conn.socket.write(okResponse("next"));
    });
    const c = client(up.port);
    const t = token();
    const o = await run(c.pool, { cancel: t }, () => setImmediate(() => cancel(t)));
    expect(o).toMatchObject({
      result: "rejected",
      code: "UND_ERR_ABORTED",
      sink: "destroyed",
      sinkError: "UND_ERR_ABORTED",
      body: "first-bytes",
    });
    expect(await up.waitPeerClose(up.conns[0]!)).toBe(true);
    expect(await run(c.pool)).toMatchObject({ result: "resolved", body: "next" });
    expect(up.conns).toHaveLength(2);
  });

  it("rejects_an_already_cancelled_request_without_connecting", async () => {
    const up = await upstream(() => {});
    const c = client(up.port);
    const t = token();
    t.aborted = true;
    expect(await run(c.pool, { cancel: t })).toMatchObject({ result: "rejected", code: "UND_ERR_ABORTED" });
    await sleep(30);
    expect(up.conns).toHaveLength(0);
    expect(c.sockets).toHaveLength(0);
  });

  it("clears_the_cancel_hook_once_the_response_completed", async () => {
    const up = await upstream((conn) => {
      conn.socket.write(okResponse("ok"));
    });
    const c = client(up.port);
    const t = token();
    expect(await run(c.pool, { cancel: t })).toMatchObject({ result: "resolved", body: "ok" });
    expect(t.onabort).toBeNull();
    expect(c.pool.stats.connections).toBe(1);
    expect(await run(c.pool)).toMatchObject({ result: "resolved", body: "ok" });
    expect(up.conns).toHaveLength(1);
  });
});

// ── 6. The request side ──

describe("request_side", () => {
  const reply = (conn: RawConn) => {
    conn.socket.write(okResponse("ok"));
  };

  it("sends_a_buffer_body_with_its_content_length", async () => {
    const up = await upstream(reply);
    const c = client(up.port);
    const o = await run(c.pool, {
      method: "POST",
      path: "/p?q=1",
      headers: { "x-a": "1" },
      body: Buffer.from("hello"),
    });
    expect(o.body).toBe("ok");
    expect(up.conns[0]!.data).toBe(
      `POST /p?q=1 HTTP/1.1\r\nx-a: 1\r\nhost: 127.0.0.1:${up.port}\r\ncontent-length: 5\r\n\r\nhello`,
    );
  });

  it("sends_an_explicit_empty_body_for_a_post_without_one", async () => {
    const up = await upstream(reply);
    const c = client(up.port);
    await run(c.pool, { method: "POST" });
    expect(up.conns[0]!.data).toBe(
      `POST / HTTP/1.1\r\nhost: 127.0.0.1:${up.port}\r\ncontent-length: 0\r\n\r\n`,
    );
  });

  it("sends_a_stream_body_with_its_declared_content_length_as_is", async () => {
    const up = await upstream(reply);
    const c = client(up.port);
    const body = new PassThrough();
    const o = run(c.pool, { method: "PUT", headers: { "content-length": "10" }, body });
    body.write("hello");
    await sleep(10);
    body.end("world");
    expect((await o).body).toBe("ok");
    expect(up.conns[0]!.data).toBe(
      `PUT / HTTP/1.1\r\nhost: 127.0.0.1:${up.port}\r\ncontent-length: 10\r\n\r\nhelloworld`,
    );
    expect(c.pool.stats.connections).toBe(1);
  });

  it("sends_a_stream_body_without_length_chunked", async () => {
    const up = await upstream(reply);
    const c = client(up.port);
    const body = new PassThrough();
    const o = run(c.pool, { method: "POST", body });
    body.write("abc");
    await sleep(10);
    body.write("de");
    await sleep(10);
    body.end();
    expect((await o).body).toBe("ok");
    expect(up.conns[0]!.data).toBe(
      `POST / HTTP/1.1\r\nhost: 127.0.0.1:${up.port}\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n`,
    );
    expect(c.pool.stats.connections).toBe(1);
  });

  it("fails_a_stream_body_shorter_than_its_content_length_and_closes", async () => {
    const up = await upstream(reply);
    const c = client(up.port);
    const body = new PassThrough();
    const o = run(c.pool, { method: "POST", headers: { "content-length": "10" }, body });
    body.end("hello");
    expect(await o).toMatchObject({ result: "rejected", code: "UND_ERR_REQ_CONTENT_LENGTH_MISMATCH" });
    expect(await up.waitPeerClose(up.conns[0]!)).toBe(true);
    expect(up.requests).toHaveLength(0);
    expect(c.pool.stats.connections).toBe(0);
  });

  it("fails_a_stream_body_longer_than_its_content_length_without_sending_the_excess", async () => {
    const up = await upstream(() => {});
    const c = client(up.port);
    const body = new PassThrough();
    const o = run(c.pool, { method: "POST", headers: { "content-length": "3" }, body });
    body.write("ab");
    await sleep(10);
    body.end("cdef");
    expect(await o).toMatchObject({ result: "rejected", code: "UND_ERR_REQ_CONTENT_LENGTH_MISMATCH" });
    expect(await up.waitPeerClose(up.conns[0]!)).toBe(true);
    expect(up.conns[0]!.data.endsWith("\r\n\r\nab")).toBe(true);
    expect(c.pool.stats.connections).toBe(0);
  });

  it("fails_a_declared_content_length_without_a_body", async () => {
    const up = await upstream(reply);
    const c = client(up.port);
    const o = await run(c.pool, { method: "POST", headers: { "content-length": "5" } });
    expect(o).toMatchObject({ result: "rejected", code: "UND_ERR_REQ_CONTENT_LENGTH_MISMATCH" });
    expect(up.conns[0]?.data ?? "").toBe("");
  });

  it("refuses_a_stream_body_whose_declared_content_length_is_not_a_number", async () => {
    const up = await upstream(reply);
    const c = client(up.port);
    const body = new PassThrough();
    const o = run(c.pool, { method: "POST", headers: { "content-length": "abc" }, body });
    body.end("0\r\n\r\nGET /smuggled HTTP/1.1\r\nhost: x\r\n\r\n");
    expect(await o).toMatchObject({ result: "rejected", code: "UND_ERR_INVALID_ARG" });
    await sleep(30);
    expect(up.conns.map((x) => x.data).join("")).toBe("");
  });

  it("fails_a_request_whose_body_stream_errors_while_it_is_queued", async () => {
    // The first answer comes late enough that the second is still queued when its body fails, on a
    // loaded machine too.
    const up = await upstream(async (conn, req) => {
      await sleep(600);
      conn.socket.write(okResponse(/^\S+ (\S+)/.exec(req)![1]!));
    });
    const c = client(up.port, { maxConnections: 1 });
    const first = run(c.pool, { path: "/first" });
    const body = new PassThrough();
    const second = run(c.pool, { method: "POST", path: "/second", body });
    await sleep(20);
    body.destroy(Object.assign(new Error("client went away"), { code: "ECONNABORTED" }));
    expect(await second).toMatchObject({ result: "rejected", code: "ECONNABORTED", sink: "none" });
    expect(c.pool.stats.pending).toBe(0);
    expect(await first).toMatchObject({ result: "resolved", body: "/first" });
    await sleep(30);
    expect(up.requests).toHaveLength(1);
  });

  it("fails_a_request_whose_body_stream_errors_mid_upload_and_closes", async () => {
    const up = await upstream(reply);
    const c = client(up.port);
    const body = new PassThrough();
    const o = run(c.pool, { method: "POST", body });
    body.write("partial");
    await sleep(20);
    body.destroy(Object.assign(new Error("too large"), { code: "E_BODY_TOO_LARGE" }));
    expect(await o).toMatchObject({ result: "rejected", code: "E_BODY_TOO_LARGE", sink: "none" });
    expect(await up.waitPeerClose(up.conns[0]!)).toBe(true);
    expect(up.requests).toHaveLength(0);
    expect(c.pool.stats.connections).toBe(0);
  });

  it("does_not_reuse_a_connection_answered_before_its_request_body_was_written", async () => {
    // The upstream answers as soon as it has the head (e.g. a 413) while the upload goes on.
    const server = net.createServer((s) => {
      s.once("data", () => s.write("HTTP/1.1 413 Payload Too Large\r\nContent-Length: 3\r\n\r\nbig"));
      s.on("error", () => {});
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    cleanup.push(() => new Promise((r) => server.close(r)));
    const c = client((server.address() as net.AddressInfo).port);
    const body = new PassThrough();
    body.write("first part");
    const o = await run(c.pool, { method: "POST", body });
    expect(o).toMatchObject({ result: "resolved", status: 413, body: "big", sink: "finished" });
    expect(c.pool.stats.connections).toBe(0);
    expect(c.sockets[0]!.destroyed).toBe(true);
    body.end();
  });

  const refused: [string, Partial<H1StreamOptions>][] = [
    ["refuses_a_header_value_with_cr_lf", { headers: { "x-a": "1\r\nx-injected: 1" } }],
    ["refuses_a_header_value_with_a_bare_lf", { headers: { "x-a": "1\nx-injected: 1" } }],
    ["refuses_a_header_value_with_nul", { headers: { "x-a": "a\x00b" } }],
    ["refuses_a_bad_value_among_repeated_header_values", { headers: { "x-a": ["ok", "b\rc"] } }],
    ["refuses_a_header_name_with_cr_lf", { headers: { "x-a\r\nx-injected": "1" } }],
    ["refuses_a_header_name_with_a_colon", { headers: { "x-a: 1\r\nx-b": "2" } }],
    ["refuses_an_empty_header_name", { headers: { "": "1" } }],
    ["refuses_a_request_target_with_a_space", { path: "/a b" }],
    ["refuses_a_request_target_with_a_control_character", { path: "/a\x01" }],
    ["refuses_a_request_target_with_cr_lf", { path: "/a\r\nx-injected: 1" }],
    ["refuses_an_empty_request_target", { path: "" }],
    ["refuses_a_method_that_is_not_a_token", { method: "GET / HTTP/1.1\r\nx-injected: 1\r\nx:" }],
    // The head is written as latin1, which keeps a character's low byte: U+010A would go out as an LF.
    [
      "refuses_a_header_value_with_a_character_beyond_one_byte",
      { headers: { "x-a": "1\u010d\u010ax-injected: 1" } },
    ],
    ["refuses_a_request_target_with_a_character_beyond_one_byte", { path: "/a\u010ab" }],
    ["refuses_a_request_target_with_obs_text", { path: "/caf\xe9" }],
  ];
  for (const [name, opts] of refused) {
    it(`${name}_before_writing_anything`, async () => {
      const up = await upstream(reply);
      const c = client(up.port);
      const o = await run(c.pool, opts);
      expect(o).toMatchObject({ result: "rejected", code: "UND_ERR_INVALID_ARG", sink: "none" });
      await sleep(30);
      expect(up.conns.map((x) => x.data).join("")).toBe("");
      expect(c.pool.stats.connections).toBe(0);
    });
  }

  it("writes_obs_text_as_the_bytes_the_client_sent_not_as_utf_8", async () => {
    // Node's parsers hand header bytes 0x80–0xFF over one character per byte; they go out the same way.
    const up = await upstream(reply);
    const c = client(up.port);
    const o = await run(c.pool, { headers: { "x-a": "caf\xe9" } });
    expect(o).toMatchObject({ result: "resolved" });
    expect(up.conns[0]!.data).toContain("GET / HTTP/1.1\r\nx-a: caf\xe9\r\n");
  });

  it("never_forwards_hop_by_hop_or_framing_headers_as_given", async () => {
    const up = await upstream(reply);
    const c = client(up.port);
    await run(c.pool, {
      method: "POST",
      body: Buffer.from("hi"),
      headers: {
        connection: "close, x-kept",
        "keep-alive": "timeout=1",
        "proxy-connection": "keep-alive",
        "transfer-encoding": "chunked",
        te: "trailers",
        upgrade: "websocket",
        expect: "100-continue",
        "content-length": "99",
        "http2-settings": "AAA",
        "x-kept": "1",
      },
    });
    expect(up.conns[0]!.data).toBe(
      `POST / HTTP/1.1\r\nx-kept: 1\r\nhost: 127.0.0.1:${up.port}\r\ncontent-length: 2\r\n\r\nhi`,
    );
    expect(c.pool.stats.connections).toBe(1);
  });

  it("never_forwards_framing_headers_given_in_mixed_case", async () => {
    const up = await upstream(reply);
    const c = client(up.port);
    await run(c.pool, {
      method: "POST",
      body: Buffer.from("hi"),
      headers: {
        "Content-Length": "99",
        "Transfer-Encoding": "chunked",
        Connection: "close",
        Host: "svc.internal",
        "X-Kept": "1",
      },
    });
    expect(up.conns[0]!.data).toBe(
      "POST / HTTP/1.1\r\nHost: svc.internal\r\nX-Kept: 1\r\ncontent-length: 2\r\n\r\nhi",
    );
  });

  it("keeps_the_callers_host_and_adds_none", async () => {
    const up = await upstream(reply);
    const c = client(up.port);
    await run(c.pool, { headers: { host: "svc.internal:8080", "x-a": ["1", "2"] } });
    expect(up.conns[0]!.data).toBe("GET / HTTP/1.1\r\nhost: svc.internal:8080\r\nx-a: 1\r\nx-a: 2\r\n\r\n");
  });
});

// ── 7. Unsolicited bytes ──

describe("unsolicited_bytes", () => {
  const extra: [string, string][] = [
    ["after_a_content_length_body", `${okResponse("ok")}HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nevil`],
    [
      "after_a_chunked_body",
      "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\nHTTP/1.1 200 OK\r\n\r\n",
    ],
    ["after_a_204", "HTTP/1.1 204 No Content\r\n\r\nok"],
  ];
  for (const [name, response] of extra) {
    it(`completes_but_does_not_reuse_a_connection_with_bytes_${name}`, async () => {
      const up = await upstream((conn, _req, i) => {
        conn.socket.write(i === 0 ? response : okResponse("clean"));
      });
      const c = client(up.port);
      const o = await run(c.pool);
      expect(o).toMatchObject({ result: "resolved", sink: "finished" });
      expect(o.body).toBe(o.status === 204 ? "" : "ok");
      expect(await up.waitPeerClose(up.conns[0]!)).toBe(true);
      expect(await run(c.pool)).toMatchObject({ result: "resolved", body: "clean" });
      expect(up.conns).toHaveLength(2);
    });
  }

  it("drops_an_idle_connection_that_receives_bytes_and_uses_a_new_one", async () => {
    const up = await upstream((conn, _req, i) => {
      conn.socket.write(okResponse(`r${i}`));
      if (i === 0)
        setTimeout(() => conn.socket.write("HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nevil"), 30);
    });
    const c = client(up.port);
    expect(await run(c.pool)).toMatchObject({ result: "resolved", body: "r0" });
    expect(await up.waitPeerClose(up.conns[0]!)).toBe(true);
    expect(c.pool.stats.connections).toBe(0);
    expect(await run(c.pool)).toMatchObject({ result: "resolved", body: "r1" });
    expect(up.conns).toHaveLength(2);
  });
});

// ── 8. Pool limits ──

describe("pool_limits", () => {
  const echo = (delayMs: number) => async (conn: RawConn, req: string) => {
    await sleep(delayMs);
    conn.socket.write(okResponse(/^GET (\S+)/.exec(req)![1]!));
  };

  it("opens_at_most_max_connections_and_queues_the_rest", async () => {
    let peak = 0;
    const up = await upstream(async (conn, req) => {
      peak = Math.max(peak, up.open());
      await echo(40)(conn, req);
    });
    const c = client(up.port, { maxConnections: 2 });
    const all = Array.from({ length: 5 }, (_, i) => run(c.pool, { path: `/${i}` }));
    expect(c.pool.stats.pending).toBe(3);
    const outcomes = await Promise.all(all);
    expect(outcomes.map((o) => o.body)).toEqual(["/0", "/1", "/2", "/3", "/4"]);
    expect(up.conns).toHaveLength(2);
    expect(peak).toBeLessThanOrEqual(2);
    expect(c.pool.stats).toEqual({ pending: 0, connections: 2 });
  });

  it("serves_queued_requests_first_in_first_out", async () => {
    const up = await upstream(echo(10));
    const c = client(up.port, { maxConnections: 1 });
    const all = Array.from({ length: 5 }, (_, i) => run(c.pool, { path: `/${i}` }));
    const pendingSeen: number[] = [c.pool.stats.pending];
    for (const p of all) {
      await p;
      pendingSeen.push(c.pool.stats.pending);
    }
    expect(up.requests.map((r) => /^GET (\S+)/.exec(r)![1])).toEqual(["/0", "/1", "/2", "/3", "/4"]);
    expect(pendingSeen).toEqual([4, 3, 2, 1, 0, 0]);
    expect(up.conns).toHaveLength(1);
  });

  // The wait for a busy connection is bounded by the total timeout (Envoy's pending requests wait within
  // the route timeout), or — without one, as for a caller that sets none — by the headers timeout.
  it.each([
    ["its_headers_timeout_without_a_total_timeout", { headersTimeout: 300 }],
    ["its_total_timeout_not_its_headers_timeout", { headersTimeout: 5000, totalTimeout: 300 }],
  ] as [string, Partial<H1StreamOptions>][])(
    "fails_a_request_still_waiting_for_a_connection_at_%s_without_sending_it",
    async (_claim, timeouts) => {
      // The one connection is held by a response that keeps streaming (a chunk every 50 ms, never the last).
      const up = await upstream((conn, req) => {
        if (!req.startsWith("GET /stream ")) return void conn.socket.write(okResponse("quick"));
        conn.socket.write("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
        const t = setInterval(() => conn.socket.destroyed || conn.socket.write("5\r\ntick\n\r\n"), 50);
        conn.socket.once("close", () => clearInterval(t));
      });
      const c = client(up.port, { maxConnections: 1 });
      const streaming = run(c.pool, { path: "/stream" });
      let timer: NodeJS.Timeout | undefined;
      const started = performance.now();
      const queued = await Promise.race([
        run(c.pool, { path: "/queued", ...timeouts }),
        new Promise<string>((r) => (timer = setTimeout(() => r("still queued after 5 s"), 5000))),
      ]);
      clearTimeout(timer);
      expect(queued).toMatchObject({ result: "rejected", code: "UND_ERR_QUEUE_TIMEOUT", sink: "none" });
      expect(performance.now() - started).toBeGreaterThanOrEqual(250);
      expect(c.pool.stats.pending).toBe(0);
      expect(up.requests).toHaveLength(1);
      // The stream goes on, untouched; a request queued behind it gets the connection once it is free.
      const next = run(c.pool, { path: "/next", headersTimeout: 5000 });
      c.sockets[0]!.destroy();
      expect(await streaming).toMatchObject({
        result: "rejected",
        code: "UND_ERR_SOCKET",
        sink: "destroyed",
      });
      expect(await next).toMatchObject({ result: "resolved", body: "quick" });
      expect(up.requests.map((r) => /^GET (\S+)/.exec(r)![1])).toEqual(["/stream", "/next"]);
    },
  );

  it("starts_the_headers_timeout_once_a_busy_connection_is_free_within_the_total_timeout", async () => {
    // As Envoy's per-try timeout: each answer takes 600 ms, so the second request waits ~600 ms for the
    // connection, then gets its head 600 ms later — within its 900 ms headers timeout counted from then,
    // and within its 3 s total. Counted from the queue (below, without a total) the wait would spend it.
    const up = await upstream(async (conn) => {
      await sleep(600);
      conn.socket.write(okResponse("late"));
    });
    const c = client(up.port, { maxConnections: 1 });
    const first = run(c.pool, { path: "/first", headersTimeout: 5000, totalTimeout: 5000 });
    const second = run(c.pool, { path: "/second", headersTimeout: 900, totalTimeout: 3000 });
    expect(await first).toMatchObject({ result: "resolved", body: "late" });
    expect(await second).toMatchObject({ result: "resolved", body: "late" });
  });

  it("takes_the_wait_for_a_connection_from_the_time_the_head_may_take_after_it_without_a_total_timeout", async () => {
    // Each answer takes 1 s: the second request waits ~1 s for the connection, then would get its head
    // 1 s after it was sent — 2 s in all, past its headers timeout of 1.5 s (500 ms either side).
    const up = await upstream(async (conn) => {
      await sleep(1000);
      conn.socket.write(okResponse("late"));
    });
    const c = client(up.port, { maxConnections: 1 });
    const first = run(c.pool, { path: "/first", headersTimeout: 5000 });
    const second = run(c.pool, { path: "/second", headersTimeout: 1500 });
    expect(await first).toMatchObject({ result: "resolved", body: "late" });
    expect(await second).toMatchObject({ result: "rejected", code: "UND_ERR_HEADERS_TIMEOUT", sink: "none" });
    expect(up.requests).toHaveLength(2);
  });

  it("serves_queued_requests_after_close_and_keeps_no_connection_open_after", async () => {
    // A reload retires the pool: nothing that reached it fails for that, and nothing stays open.
    const up = await upstream(echo(80));
    const c = client(up.port, { maxConnections: 1 });
    const running = run(c.pool, { path: "/running" });
    const queued = [run(c.pool, { path: "/q1" }), run(c.pool, { path: "/q2" })];
    await sleep(20);
    await c.pool.close();
    expect(await running).toMatchObject({ result: "resolved", body: "/running" });
    for (const [i, q] of queued.entries())
      expect(await q).toMatchObject({ result: "resolved", body: `/q${i + 1}` });
    expect(await up.waitPeerClose(up.conns[0]!)).toBe(true);
    // A late request (a retry of one that started before the reload) gets a connection of its own.
    expect(await run(c.pool, { path: "/late" })).toMatchObject({ result: "resolved", body: "/late" });
    expect(up.conns).toHaveLength(2);
    expect(await up.waitPeerClose(up.conns[1]!)).toBe(true);
    expect(c.pool.stats).toEqual({ pending: 0, connections: 0 });
  });
});

// ── 9. Backpressure ──

describe("backpressure", () => {
  const SIZE = 5 * 1024 * 1024;
  const payload = Buffer.alloc(SIZE);
  for (let i = 0; i < SIZE; i += 4) payload.writeUInt32BE(i, i);

  /**
   * Streams 5 MiB into a sink that takes 2 ms per chunk. Reports the largest gap between what the
   * pool's socket had read from the kernel and what the sink had processed: the bytes the pool held.
   */
  async function slowSink(highWaterMark: number) {
    const up = await upstream(async (conn) => {
      const s = conn.socket;
      s.write(`HTTP/1.1 200 OK\r\nContent-Length: ${SIZE}\r\n\r\n`);
      for (let off = 0; off < SIZE; off += 64 * 1024) {
        if (!s.write(payload.subarray(off, off + 64 * 1024))) await new Promise((r) => s.once("drain", r));
      }
    });
    const c = client(up.port);
    const got: Buffer[] = [];
    let processed = 0;
    let maxHeld = 0;
    let finished = false;
    await c.pool.stream(
      { method: "GET", path: "/big", headers: null, headersTimeout: 5000, bodyTimeout: 5000 },
      () =>
        new Writable({
          highWaterMark,
          write(chunk: Buffer, _e, cb) {
            got.push(chunk);
            setTimeout(() => {
              processed += chunk.length;
              maxHeld = Math.max(maxHeld, c.sockets[0]!.bytesRead - processed);
              cb();
            }, 2);
          },
          final(cb) {
            finished = true;
            cb();
          },
        }),
    );
    await waitFor(() => finished, 10_000);
    return { body: Buffer.concat(got), maxHeld };
  }

  it("delivers_5_mib_to_a_slow_sink_complete_and_in_order_holding_a_bounded_amount", async () => {
    const { body, maxHeld } = await slowSink(16 * 1024);
    expect(body.equals(payload)).toBe(true);
    expect(maxHeld).toBeLessThan(512 * 1024);
  });

  it("holds_far_more_when_the_sink_never_signals_backpressure", async () => {
    // Control for the measure above: the same slow sink with a huge buffer never says "full", the pool
    // keeps reading, and the gap grows into megabytes — so the bound above is the pool pausing.
    const { body, maxHeld } = await slowSink(64 * 1024 * 1024);
    expect(body.equals(payload)).toBe(true);
    expect(maxHeld).toBeGreaterThan(2 * 1024 * 1024);
  });
});

// ── 10. Whole exchanges whose body is discarded (health probes, mirrored copies) ──

describe("discarded_bodies", () => {
  /** Errors thrown from an event while `f` runs (and a little after): an unheard 'error' ends the process. */
  async function uncaught(f: () => Promise<unknown>): Promise<unknown[]> {
    const seen: unknown[] = [];
    const onUncaught = (e: unknown) => seen.push(e);
    process.on("uncaughtException", onUncaught);
    try {
      await f();
      await sleep(50);
    } finally {
      process.removeListener("uncaughtException", onUncaught);
    }
    return seen;
  }
  const partial = (conn: RawConn) => {
    conn.socket.write("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial");
  };
  const failures: { name: string; reply: Reply; code: string }[] = [
    {
      name: "a_body_the_upstream_cuts",
      reply: (conn) => {
        partial(conn);
        setTimeout(() => conn.socket.destroy(), 20);
      },
      code: "UND_ERR_SOCKET",
    },
    {
      name: "a_body_the_upstream_resets",
      reply: (conn) => {
        partial(conn);
        setTimeout(() => conn.socket.resetAndDestroy(), 20);
      },
      code: "UND_ERR_SOCKET",
    },
    { name: "a_body_that_stalls_past_the_body_timeout", reply: partial, code: "UND_ERR_BODY_TIMEOUT" },
    {
      name: "a_malformed_chunk",
      reply: (conn) => {
        conn.socket.write("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\nzz\r\n");
      },
      code: "UND_ERR_RESPONSE",
    },
  ];
  for (const row of failures) {
    it(`rejects_${row.name}_without_throwing_from_the_discarding_sink`, async () => {
      const up = await upstream(row.reply);
      const c = client(up.port);
      let code: string | undefined;
      const thrown = await uncaught(() =>
        c.pool
          .request({
            method: "GET",
            path: "/healthz",
            headersTimeout: 500,
            totalTimeout: 500,
            bodyTimeout: 150,
          })
          .catch((e: unknown) => (code = codeOf(e))),
      );
      expect(thrown).toEqual([]);
      expect(code).toBe(row.code);
      expect(c.pool.stats.connections).toBe(0);
    });
  }
});

describe("whole_exchange_timeout", () => {
  it("fails_a_body_that_trickles_past_the_call_timeout_and_closes_its_connection", async () => {
    const timers: NodeJS.Timeout[] = [];
    cleanup.push(() => timers.forEach(clearInterval));
    const up = await upstream((conn) => {
      conn.socket.write("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
      timers.push(setInterval(() => conn.socket.destroyed || conn.socket.write("1\r\nx\r\n"), 20));
    });
    const c = client(up.port);
    const t = performance.now();
    const code = await c.pool
      .request({ method: "GET", path: "/healthz", headersTimeout: 200, bodyTimeout: 200, callTimeout: 200 })
      .then(
        () => "resolved",
        (e: unknown) => codeOf(e),
      );
    expect(code).toBe("UND_ERR_BODY_TIMEOUT");
    expect(performance.now() - t).toBeLessThan(600);
    expect(await up.waitPeerClose(up.conns[0]!)).toBe(true);
    expect(c.pool.stats.connections).toBe(0);
  });

  it("fails_with_headers_timeout_when_no_head_comes_within_the_call_timeout", async () => {
    const up = await upstream(() => {});
    const c = client(up.port);
    const code = await c.pool
      .request({ method: "GET", path: "/healthz", headersTimeout: 5000, bodyTimeout: 5000, callTimeout: 150 })
      .then(
        () => "resolved",
        (e: unknown) => codeOf(e),
      );
    expect(code).toBe("UND_ERR_HEADERS_TIMEOUT");
  });

  it("completes_an_exchange_that_ends_within_the_call_timeout_and_keeps_its_connection", async () => {
    const up = await upstream((conn) => {
      conn.socket.write(okResponse("ok"));
    });
    const c = client(up.port);
    for (let i = 0; i < 2; i++) {
      const r = await c.pool.request({
        method: "GET",
        path: "/healthz",
        headersTimeout: 500,
        bodyTimeout: 500,
        callTimeout: 500,
      });
      expect(r.statusCode).toBe(200);
    }
    expect(up.conns).toHaveLength(1);
  });
});
