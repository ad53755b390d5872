/**
 * The HTTP/2 pool against a real h2c server on 127.0.0.1: retired by a reload (close), streams in progress
 * finish, a late stream (a retry of a request that began before the reload) is still served, and no
 * session stays open after; a response cut short — its stream reset, or the upstream's connection closed
 * mid-body — is a failure, and the body's target is never ended as if it were complete.
 */
import http2 from "node:http2";
import type { AddressInfo } from "node:net";
import { PassThrough, Writable } from "node:stream";
import { afterEach, describe, expect, it } from "vitest";
import { H2Pool, type StreamOptions } from "../../runtime/upstream/h2pool.ts";
import { END_HEADERS, END_STREAM, block, frame, rst } from "../support/raw-h2.ts";
import { startBlackhole, startRawH2Upstream, startScriptedH2Upstream } from "../support/raw-upstream.ts";

let server: http2.Http2Server | undefined;
afterEach(async () => {
  await new Promise((r) => (server ? server.close(r) : r(null)));
  server = undefined;
});

/** An h2c server answering each path after `delayMs`; counts its sessions open now and in all. */
async function h2c(delayMs: number) {
  const sessions = { open: 0, total: 0 };
  server = http2.createServer();
  server.on("session", (s) => {
    sessions.open++;
    sessions.total++;
    s.once("close", () => sessions.open--);
  });
  server.on("stream", (stream, headers) => {
    setTimeout(() => {
      stream.respond({ ":status": 200 });
      stream.end(String(headers[":path"]));
    }, delayMs);
  });
  await new Promise<void>((r) => server!.listen(0, "127.0.0.1", r));
  return { port: (server.address() as AddressInfo).port, sessions };
}

/** One exchange through the pool: the body, or the error's code. */
async function get(pool: H2Pool, path: string): Promise<string> {
  let body = "";
  try {
    await pool.stream(
      { method: "GET", path, headers: {}, body: null, headersTimeout: 2000, bodyTimeout: 2000 },
      () =>
        new Writable({
          write(chunk: Buffer, _e, cb) {
            body += chunk.toString();
            cb();
          },
        }),
    );
    return body;
  } catch (err) {
    return `error ${(err as { code?: string }).code}`;
  }
}

/** A GET streamed into a recorder: how it settled, the body that arrived, and whether the target was ended. */
async function recordGet(pool: H2Pool): Promise<{ outcome: string; body: string; ended: boolean }> {
  let body = "";
  let ended = false;
  const outcome = await pool
    .stream(
      { method: "GET", path: "/", headers: {}, body: null, headersTimeout: 2000, bodyTimeout: 2000 },
      () =>
        new Writable({
          write(chunk: Buffer, _e, cb) {
            body += chunk.toString();
            cb();
          },
          final(cb) {
            ended = true;
            cb();
          },
        }),
    )
    .then(
      () => "completed",
      (err: { code?: string }) => `error ${err.code}`,
    );
  return { outcome, body, ended };
}

const until = async (check: () => boolean) => {
  for (let i = 0; i < 100 && !check(); i++) await new Promise((r) => setTimeout(r, 20));
  return check();
};

/** A GET through `pool` to a black hole (no head can come): the code of the error it fails with. */
const failureOf = (pool: H2Pool, o: Partial<StreamOptions>): Promise<string | null> =>
  pool
    .stream(
      { method: "GET", path: "/", headers: {}, body: null, headersTimeout: 5000, bodyTimeout: 2000, ...o },
      () => {
        throw new Error("no head can come");
      },
    )
    .then(
      () => null,
      (e: { code?: string }) => e.code ?? null,
    );

// Node's http2 session destroyed while its socket still connects emits neither 'error' nor 'close': a
// connect timeout on the session left the attempt waiting for good. The pool connects the socket first.
describe("a connect that never completes ends in time", () => {
  it.each([
    ["ends_an_h2c_connect_at_the_connect_timeout_when_that_is_shorter", 200, 600, "UND_ERR_CONNECT_TIMEOUT"],
    ["ends_an_h2c_connect_at_the_total_timeout_when_that_is_shorter", 600, 200, "UND_ERR_HEADERS_TIMEOUT"],
    [
      "ends_an_h2c_connect_at_the_total_timeout_when_the_connect_timeout_is_0",
      0,
      200,
      "UND_ERR_HEADERS_TIMEOUT",
    ],
  ] as const)("%s", async (_claim, connectTimeoutMs, totalTimeout, expected) => {
    const hole = await startBlackhole();
    try {
      const pool = new H2Pool("127.0.0.1", hole.port, connectTimeoutMs);
      const t = performance.now();
      const code = await failureOf(pool, { totalTimeout });
      const ms = performance.now() - t;
      expect(code).toBe(expected);
      expect(ms).toBeGreaterThanOrEqual(190);
      expect(ms).toBeLessThan(900);
      await pool.close();
    } finally {
      hole.close();
    }
  });
});

describe("a caller that leaves while the session still connects", () => {
  it("fails_its_request_with_aborted_at_once_not_at_the_connect_or_total_timeout", async () => {
    const hole = await startBlackhole();
    try {
      const pool = new H2Pool("127.0.0.1", hole.port, 0); // the system's own connect timeout
      const cancel = { aborted: false, onabort: null as (() => void) | null };
      const pending = failureOf(pool, { totalTimeout: 5000, cancel });
      await new Promise((r) => setTimeout(r, 200));
      const t = performance.now();
      cancel.aborted = true;
      cancel.onabort?.();
      expect(await pending).toBe("UND_ERR_ABORTED");
      expect(performance.now() - t).toBeLessThan(200);
      expect(cancel.onabort).toBeNull(); // nothing of this request is left on the caller's token
      await pool.close();
    } finally {
      hole.close();
    }
  });
});

describe("a retired HTTP/2 pool", () => {
  it("finishes_its_streams_serves_a_late_one_and_leaves_no_session_open", async () => {
    const { port, sessions } = await h2c(80);
    const pool = new H2Pool("127.0.0.1", port, 1000);
    const running = get(pool, "/running");
    await until(() => sessions.open === 1);
    await pool.close();
    const late = get(pool, "/late");
    expect([await running, await late]).toEqual(["/running", "/late"]);
    expect(sessions.total).toBe(2);
    expect(await until(() => sessions.open === 0)).toBe(true);
  });
});

describe("a response cut short is a failure, never a complete response", () => {
  it.each([
    [
      "the stream reset (RST_STREAM)",
      (stream: http2.ServerHttp2Stream) => stream.destroy(new Error("reset")),
    ],
    [
      "the upstream's connection closed mid-body",
      (stream: http2.ServerHttp2Stream) => stream.session!.socket.destroy(),
    ],
  ])("%s", async (_claim, cut) => {
    server = http2.createServer();
    server.on("stream", (stream) => {
      stream.on("error", () => {});
      stream.respond({ ":status": 200 });
      stream.write("first half;");
      setTimeout(() => cut(stream), 50);
    });
    await new Promise<void>((r) => server!.listen(0, "127.0.0.1", r));
    const pool = new H2Pool("127.0.0.1", (server.address() as AddressInfo).port, 1000);
    const { outcome, body, ended } = await recordGet(pool);
    // The pool's own error (ECONNRESET) or the stream's (ERR_HTTP2_STREAM_ERROR): forward() maps both to "reset".
    expect({ outcome, body, ended }).toEqual({
      outcome: expect.stringMatching(/^error /),
      body: "first half;",
      ended: false,
    });
    await pool.close();
  });
});

// Node reports a stream the upstream reset with RST_STREAM(NO_ERROR) before END_STREAM as it reports one
// it ended: 'end', then 'close' with rstCode 0. Only END_STREAM (on DATA, the response HEADERS or the
// trailers) completes a response. Frames written by hand: Node's own server ends a stream before it
// resets it.
describe("a stream reset with NO_ERROR before END_STREAM is cut short, one ended with END_STREAM is whole", () => {
  const head = (id: number, end = false) =>
    frame(1, END_HEADERS | (end ? END_STREAM : 0), id, block([[":status", "200"]]));
  const dataFrame = (id: number, text: string, end = false) =>
    frame(0, end ? END_STREAM : 0, id, Buffer.from(text));
  const trailers = (id: number) => frame(1, END_HEADERS | END_STREAM, id, block([["grpc-status", "0"]]));
  const rows: [
    string,
    (id: number) => (Buffer | number)[],
    { outcome: string; body: string; ended: boolean },
  ][] = [
    [
      "rejects_a_body_cut_by_rst_stream_no_error",
      (id) => [head(id), dataFrame(id, "partial-"), 30, rst(id, 0)],
      { outcome: "error ECONNRESET", body: "partial-", ended: false },
    ],
    [
      "rejects_a_body_cut_by_rst_stream_no_error_in_the_same_read",
      (id) => [Buffer.concat([head(id), dataFrame(id, "partial-"), rst(id, 0)])],
      { outcome: "error ECONNRESET", body: "partial-", ended: false },
    ],
    [
      "rejects_a_head_followed_by_rst_stream_no_error",
      (id) => [head(id), 30, rst(id, 0)],
      { outcome: "error ECONNRESET", body: "", ended: false },
    ],
    [
      "completes_a_body_ended_by_end_stream",
      (id) => [head(id), dataFrame(id, "partial-"), 30, dataFrame(id, "end", true)],
      { outcome: "completed", body: "partial-end", ended: true },
    ],
    [
      "completes_a_body_ended_by_end_stream_then_rst_stream_no_error",
      (id) => [
        head(id),
        dataFrame(id, "partial-"),
        30,
        Buffer.concat([dataFrame(id, "end", true), rst(id, 0)]),
      ],
      { outcome: "completed", body: "partial-end", ended: true },
    ],
    [
      "completes_an_empty_response_ended_on_its_headers",
      (id) => [head(id, true)],
      { outcome: "completed", body: "", ended: true },
    ],
    [
      "completes_a_body_ended_by_trailers",
      (id) => [head(id), dataFrame(id, "body"), 30, trailers(id)],
      { outcome: "completed", body: "body", ended: true },
    ],
  ];
  it.each(rows)("%s", async (_claim, script, expected) => {
    const up = await startScriptedH2Upstream(script);
    const pool = new H2Pool("127.0.0.1", up.port, 1000);
    const { outcome, body, ended } = await recordGet(pool);
    expect({ outcome, body, ended }).toEqual(expected);
    await pool.close();
    up.close();
  });
});

describe("a response head the caller cannot take is a failure of that request alone", () => {
  it.each(["600", "999"])("refuses_status_%s_as_a_malformed_response", async (status) => {
    const up = await startRawH2Upstream(status);
    const pool = new H2Pool("127.0.0.1", up.port, 1000);
    let called = false;
    const outcome = await pool
      .stream({ method: "GET", path: "/", headers: {}, body: null, headersTimeout: 2000 }, () => {
        called = true;
        return new Writable({ write: (_c, _e, cb) => cb() });
      })
      .then(
        () => "completed",
        (err: { code?: string }) => `error ${err.code}`,
      );
    expect({ outcome, called }).toEqual({ outcome: "error UND_ERR_RESPONSE", called: false });
    await pool.close();
    up.close();
  });

  it("rejects_with_the_error_a_throwing_factory_raised_instead_of_throwing_it_in_the_session", async () => {
    const { port } = await h2c(0);
    const pool = new H2Pool("127.0.0.1", port, 1000);
    const outcome = await pool
      .stream({ method: "GET", path: "/", headers: {}, body: null, headersTimeout: 2000 }, () => {
        throw Object.assign(new RangeError("Invalid status code"), { code: "ERR_HTTP2_STATUS_INVALID" });
      })
      .then(
        () => "completed",
        (err: { code?: string }) => `error ${err.code}`,
      );
    expect(outcome).toBe("error ERR_HTTP2_STATUS_INVALID");
    // The session still serves the next request.
    expect(await get(pool, "/next")).toBe("/next");
    await pool.close();
  });
});

describe("a stream the upstream refused is REFUSED_STREAM (never processed: forward() may resend it)", () => {
  it.each([
    [
      "refused_by_rst_stream_with_refused_stream",
      { onStream: (stream: http2.ServerHttp2Stream) => stream.close(http2.constants.NGHTTP2_REFUSED_STREAM) },
    ],
    [
      "refused_by_a_goaway_below_its_stream_id",
      { onSession: (s: http2.ServerHttp2Session) => s.goaway(http2.constants.NGHTTP2_NO_ERROR, 0) },
    ],
  ])("%s", async (_claim, refuse) => {
    server = http2.createServer();
    server.on("session", (s) => ("onSession" in refuse ? refuse.onSession(s) : undefined));
    server.on("stream", (stream) => {
      stream.on("error", () => {});
      if ("onStream" in refuse) refuse.onStream(stream);
    });
    await new Promise<void>((r) => server!.listen(0, "127.0.0.1", r));
    const pool = new H2Pool("127.0.0.1", (server.address() as AddressInfo).port, 1000);
    const outcome = await pool
      .stream(
        { method: "POST", path: "/", headers: {}, body: Buffer.from("x"), headersTimeout: 2000 },
        () => new Writable({ write: (_c, _e, cb) => cb() }),
      )
      .then(
        () => "completed",
        (err: { code?: string }) => `error ${err.code}`,
      );
    expect(outcome).toBe("error REFUSED_STREAM");
    await pool.close();
  });
});

describe("a streamed request body that fails on its way upstream", () => {
  it("fails_the_request_with_the_bodys_error_and_resets_the_upstreams_stream_never_ending_it", async () => {
    const seen = { bytes: 0, rstCode: -1 };
    server = http2.createServer();
    server.on("stream", (stream) => {
      stream.on("error", () => {});
      stream.on("data", (d: Buffer) => (seen.bytes += d.length));
      stream.on("close", () => (seen.rstCode = stream.rstCode));
    });
    await new Promise<void>((r) => server!.listen(0, "127.0.0.1", r));
    const pool = new H2Pool("127.0.0.1", (server.address() as AddressInfo).port, 1000);
    // What runtime/upstream/body.ts limitBody does past the limit: the body stream fails.
    const body = new PassThrough();
    body.write("first part;");
    setTimeout(
      () => body.destroy(Object.assign(new Error("request body too large"), { code: "E_BODY_TOO_LARGE" })),
      50,
    );
    const outcome = await pool
      .stream(
        { method: "POST", path: "/", headers: {}, body, headersTimeout: 2000, bodyTimeout: 2000 },
        () => new Writable({ write: (_c, _e, cb) => cb() }),
      )
      .then(
        () => "completed",
        (err: { code?: string }) => `error ${err.code}`,
      );
    expect(outcome).toBe("error E_BODY_TOO_LARGE");
    expect(await until(() => seen.rstCode !== -1)).toBe(true);
    expect(seen).toEqual({ bytes: 11, rstCode: http2.constants.NGHTTP2_CANCEL });
    await pool.close();
  });
});

describe("a whole exchange (health checks, mirrored copies) settles under the stream's timeouts", () => {
  it.each([
    [
      "resolves_once_a_complete_response_ended",
      (stream: http2.ServerHttp2Stream) => {
        stream.respond({ ":status": 503 });
        stream.end("down");
      },
      "status 503",
    ],
    [
      "fails_a_response_whose_body_never_ends_at_its_body_timeout",
      (stream: http2.ServerHttp2Stream) => {
        stream.respond({ ":status": 200 });
        stream.write("so far so good");
      },
      "error UND_ERR_BODY_TIMEOUT",
    ],
    [
      "fails_a_response_whose_head_never_comes_at_its_headers_timeout",
      () => {},
      "error UND_ERR_HEADERS_TIMEOUT",
    ],
  ])("%s", async (_claim, answer, expected) => {
    const sessions = new Set<http2.ServerHttp2Session>();
    server = http2.createServer();
    server.on("session", (s) => sessions.add(s));
    server.on("stream", (stream) => {
      stream.on("error", () => {});
      answer(stream);
    });
    await new Promise<void>((r) => server!.listen(0, "127.0.0.1", r));
    const pool = new H2Pool("127.0.0.1", (server.address() as AddressInfo).port, 1000);
    let timer: NodeJS.Timeout | undefined;
    const outcome = await Promise.race([
      pool
        .request({ method: "GET", path: "/healthz", headersTimeout: 300, bodyTimeout: 300 })
        .then(async (r) => {
          await r.body.dump();
          return `status ${r.statusCode}`;
        })
        .catch((err: { code?: string }) => `error ${err.code}`),
      new Promise<string>((r) => (timer = setTimeout(() => r("still open after 5 s"), 5000))),
    ]);
    clearTimeout(timer);
    for (const s of sessions) s.destroy();
    await pool.close();
    expect(outcome).toBe(expected);
  });
});
