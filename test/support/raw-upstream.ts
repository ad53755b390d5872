/**
 * Hostile HTTP/1.1 upstreams for tests: a raw `net` server on 127.0.0.1 that answers each request with
 * exact bytes (split into chunks at chosen points, so that the client's parser meets them across TCP
 * reads), counts connections and records who closed each one. Also the shared tables of well-formed,
 * malformed and truncated responses that the H1Pool tests and the gateway tests both run, and an h2c
 * upstream written frame by frame (for what Node's own HTTP/2 server refuses to send).
 */
import { spawn, type ChildProcess } from "node:child_process";
import net from "node:net";
import type { AddressInfo } from "node:net";
import { setTimeout as sleep } from "node:timers/promises";
import { frame } from "./raw-h2.ts";

/** One accepted connection, as the raw server saw it. */
export interface RawConn {
  /** Accept order, from 0. */
  readonly id: number;
  readonly socket: net.Socket;
  /** Every byte received on this connection (latin1: one character per byte). */
  data: string;
  /** Complete requests received on this connection, in order. */
  readonly requests: string[];
  /** The client ended (or reset) the connection, and when (ms after accept); -1 while open. */
  peerClosedAt: number;
  /** The socket is gone (either side). */
  closed: boolean;
  readonly acceptedAt: number;
}

/**
 * Answers one request. `index` counts requests across the whole server, from 0. A reply that returns
 * without writing leaves the request unanswered (the connection stays open).
 */
export type Reply = (conn: RawConn, request: string, index: number) => void | Promise<void>;

export interface RawUpstream {
  readonly port: number;
  readonly conns: RawConn[];
  /** Every complete request received, in arrival order. */
  readonly requests: string[];
  /** Connections currently open. */
  open(): number;
  /** Resolves true once the client closed `conn` (false after `ms`). */
  waitPeerClose(conn: RawConn, ms?: number): Promise<boolean>;
  /** Resolves once `n` connections were accepted (false after `ms`). */
  waitConns(n: number, ms?: number): Promise<boolean>;
  close(): Promise<void>;
}

/** Length of the first complete request in `data` (head and body by its framing), or -1. */
export function requestLength(data: string): number {
  const end = data.indexOf("\r\n\r\n");
  if (end < 0) return -1;
  const head = data.slice(0, end + 2);
  const cl = /\r\ncontent-length: *(\d+)\r\n/i.exec(head);
  if (cl) return data.length >= end + 4 + Number(cl[1]) ? end + 4 + Number(cl[1]) : -1;
  if (/\r\ntransfer-encoding: *chunked\r\n/i.test(head)) {
    // The test bodies never hold a "0\r\n\r\n" of their own, so the first one ends the body.
    const last = data.indexOf("0\r\n\r\n", end + 4);
    return last < 0 ? -1 : last + 5;
  }
  return end + 4;
}

export async function startRawUpstream(reply: Reply): Promise<RawUpstream> {
  const conns: RawConn[] = [];
  const requests: string[] = [];
  const server = net.createServer((socket) => {
    socket.setNoDelay(true);
    const conn: RawConn = {
      id: conns.length,
      socket,
      data: "",
      requests: [],
      peerClosedAt: -1,
      closed: false,
      acceptedAt: performance.now(),
    };
    conns.push(conn);
    let pending = "";
    socket.on("data", (d: Buffer) => {
      const text = d.toString("latin1");
      conn.data += text;
      pending += text;
      for (;;) {
        const n = requestLength(pending);
        if (n < 0) return;
        const request = pending.slice(0, n);
        pending = pending.slice(n);
        conn.requests.push(request);
        const index = requests.length;
        requests.push(request);
        void Promise.resolve(reply(conn, request, index)).catch(() => socket.destroy());
      }
    });
    const peerGone = () => {
      if (conn.peerClosedAt < 0) conn.peerClosedAt = performance.now() - conn.acceptedAt;
    };
    socket.on("end", peerGone);
    socket.on("error", peerGone);
    socket.on("close", () => {
      conn.closed = true;
    });
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const poll = async (ok: () => boolean, ms: number): Promise<boolean> => {
    const until = performance.now() + ms;
    while (!ok()) {
      if (performance.now() > until) return false;
      await sleep(5);
    }
    return true;
  };
  return {
    port: (server.address() as AddressInfo).port,
    conns,
    requests,
    open: () => conns.filter((c) => !c.closed).length,
    waitPeerClose: (conn, ms = 1000) => poll(() => conn.peerClosedAt >= 0, ms),
    waitConns: (n, ms = 1000) => poll(() => conns.length >= n, ms),
    close: () =>
      new Promise<void>((r) => {
        for (const c of conns) c.socket.destroy();
        server.close(() => r());
      }),
  };
}

const bytes = (p: string | Buffer): Buffer => (typeof p === "string" ? Buffer.from(p, "latin1") : p);

/**
 * Writes the parts one by one (Nagle is off). Between two parts it waits for `settled` when given — the
 * client's next read, so that each part provably reaches the client's parser in a read of its own —
 * else `gapMs`. Stops if the socket went away.
 */
export async function sendParts(
  socket: net.Socket,
  parts: readonly (string | Buffer)[],
  gapMs = 2,
  settled?: () => Promise<unknown>,
) {
  for (let i = 0; i < parts.length; i++) {
    if (socket.destroyed) return;
    const read = i < parts.length - 1 ? settled?.() : undefined;
    socket.write(bytes(parts[i]!));
    if (read) await read;
    else if (i < parts.length - 1) await sleep(gapMs);
  }
}

/** `text` cut at one offset: two reads. */
export const splitAt = (text: string, at: number): string[] => [text.slice(0, at), text.slice(at)];

/** `text` one byte per read. */
export const byteByByte = (text: string): string[] => [...text];

/** `text` in at most `n` parts of equal size. */
export function inParts(text: string, n: number): string[] {
  const size = Math.max(1, Math.ceil(text.length / n));
  const out: string[] = [];
  for (let i = 0; i < text.length; i += size) out.push(text.slice(i, i + size));
  return out;
}

// ── Response tables (latin1 strings: one character per byte) ──

/** A well-formed response and what a correct client makes of it. */
export interface GoodRow {
  readonly name: string;
  readonly method: string;
  readonly response: string;
  readonly status: number;
  readonly body: string;
  /** Headers the client must see with these values (lower-case names). */
  readonly headers: Record<string, string | string[]>;
  /** Header names the client must not see (from an interim response, or not allowed in this one). */
  readonly absent?: readonly string[];
  /** The connection may serve the next request. */
  readonly reused: boolean;
  /** The upstream closes after the response (the body is delimited by the close). */
  readonly closeAfter?: boolean;
  /** Headers the upstream marks hop-by-hop (named in Connection): a proxy must not pass them on. */
  readonly hop?: readonly string[];
}

const HELLO = "hello world";
const TE = "Transfer-Encoding: chunked\r\n";
const CL = `Content-Length: ${HELLO.length}\r\n`;
const CHUNKED_BODY =
  '5;ext=1;q="a b"\r\nhello\r\n1\r\n \r\n5;last\r\nworld\r\n0\r\nX-Trailer: t\r\nX-Other: 2\r\n\r\n';

export const GOOD: readonly GoodRow[] = [
  {
    name: "content_length_body",
    method: "GET",
    response: `HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-Up: 1\r\n${CL}\r\n${HELLO}`,
    status: 200,
    body: HELLO,
    headers: { "content-type": "text/plain", "x-up": "1", "content-length": "11" },
    reused: true,
  },
  {
    name: "content_length_zero",
    method: "GET",
    response: "HTTP/1.1 200 OK\r\nX-Up: 1\r\nContent-Length: 0\r\n\r\n",
    status: 200,
    body: "",
    headers: { "x-up": "1" },
    reused: true,
  },
  {
    name: "chunked_body_with_extensions_and_trailers",
    method: "GET",
    response: `HTTP/1.1 200 OK\r\nX-Up: 1\r\nTransfer-Encoding: chunked\r\n\r\n${CHUNKED_BODY}`,
    status: 200,
    body: HELLO,
    headers: { "x-up": "1" },
    reused: true,
  },
  {
    name: "chunked_body_with_upper_case_hex_and_leading_zeros",
    method: "GET",
    response: "HTTP/1.1 200 OK\r\nTransfer-Encoding: Chunked\r\n\r\n00A\r\n0123456789\r\n0000\r\n\r\n",
    status: 200,
    body: "0123456789",
    headers: {},
    reused: true,
  },
  {
    name: "body_until_close",
    method: "GET",
    response: `HTTP/1.1 200 OK\r\nX-Up: 1\r\n\r\n${HELLO}`,
    status: 200,
    body: HELLO,
    headers: { "x-up": "1" },
    reused: false,
    closeAfter: true,
  },
  {
    name: "head_response_with_content_length_and_no_body",
    method: "HEAD",
    response: `HTTP/1.1 200 OK\r\n${CL}\r\n`,
    status: 200,
    body: "",
    headers: { "content-length": "11" },
    reused: true,
  },
  {
    name: "head_response_with_transfer_encoding_and_no_body",
    method: "HEAD",
    response: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
    status: 200,
    body: "",
    headers: {},
    absent: ["transfer-encoding"],
    reused: true,
  },
  {
    name: "no_content_204_without_body",
    method: "DELETE",
    response: "HTTP/1.1 204 No Content\r\nX-Up: 1\r\n\r\n",
    status: 204,
    body: "",
    headers: { "x-up": "1" },
    reused: true,
  },
  {
    // RFC 9110 §8.6: no Content-Length in a 204 — an HTTP/2 client refuses one that is not 0.
    name: "no_content_204_with_a_content_length_not_passed_on",
    method: "DELETE",
    response: "HTTP/1.1 204 No Content\r\nX-Up: 1\r\nContent-Length: 5\r\n\r\n",
    status: 204,
    body: "",
    headers: { "x-up": "1" },
    absent: ["content-length"],
    reused: false,
  },
  {
    name: "not_modified_304_with_content_length_and_no_body",
    method: "GET",
    response: `HTTP/1.1 304 Not Modified\r\nETag: "v1"\r\n${CL}\r\n`,
    status: 304,
    body: "",
    headers: { etag: '"v1"' },
    reused: true,
  },
  {
    name: "continue_100_then_200",
    method: "POST",
    response: `HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n${CL}\r\n${HELLO}`,
    status: 200,
    body: HELLO,
    headers: {},
    reused: true,
  },
  {
    name: "early_hints_103_then_200",
    method: "GET",
    response: `HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\nHTTP/1.1 200 OK\r\nX-Up: 1\r\n${CL}\r\n${HELLO}`,
    status: 200,
    body: HELLO,
    headers: { "x-up": "1" },
    absent: ["link"],
    reused: true,
  },
  {
    name: "two_interim_responses_then_chunked_200",
    method: "GET",
    response: `HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n${CHUNKED_BODY}`,
    status: 200,
    body: HELLO,
    headers: {},
    absent: ["link"],
    reused: true,
  },
  {
    name: "connection_close_response",
    method: "GET",
    response: `HTTP/1.1 200 OK\r\nConnection: close\r\n${CL}\r\n${HELLO}`,
    status: 200,
    body: HELLO,
    headers: {},
    reused: false,
  },
  {
    name: "http10_response_without_keep_alive",
    method: "GET",
    response: `HTTP/1.0 200 OK\r\n${CL}\r\n${HELLO}`,
    status: 200,
    body: HELLO,
    headers: {},
    reused: false,
  },
  {
    name: "http10_response_with_keep_alive_and_content_length",
    method: "GET",
    response: `HTTP/1.0 200 OK\r\nConnection: keep-alive\r\n${CL}\r\n${HELLO}`,
    status: 200,
    body: HELLO,
    headers: {},
    reused: true,
  },
  {
    name: "http10_body_until_close",
    method: "GET",
    response: `HTTP/1.0 200 OK\r\nConnection: keep-alive\r\n\r\n${HELLO}`,
    status: 200,
    body: HELLO,
    headers: {},
    reused: false,
    closeAfter: true,
  },
  {
    // RFC 9112 §6.1: Transfer-Encoding in an HTTP/1.0 message is faulty framing: process, then close.
    name: "http10_chunked_response_with_keep_alive",
    method: "GET",
    response: `HTTP/1.0 200 OK\r\nConnection: keep-alive\r\n${TE}\r\n5\r\nhello\r\n0\r\n\r\n`,
    status: 200,
    body: "hello",
    headers: {},
    reused: false,
  },
  {
    name: "whitespace_around_header_values",
    method: "GET",
    response: `HTTP/1.1 200 OK\r\nContent-Length: \t 11 \t\r\nX-Up:1\r\n\r\n${HELLO}`,
    status: 200,
    body: HELLO,
    headers: { "x-up": "1" },
    reused: true,
  },
  {
    name: "hop_by_hop_headers",
    method: "GET",
    response: `HTTP/1.1 200 OK\r\nConnection: x-secret\r\nX-Secret: 1\r\nKeep-Alive: timeout=7\r\nProxy-Authenticate: Basic\r\nX-Up: 1\r\n${CL}\r\n${HELLO}`,
    status: 200,
    body: HELLO,
    // The pool hands on end-to-end headers only: hop-by-hop ones and those Connection names are removed.
    headers: { "x-up": "1" },
    absent: ["x-secret", "keep-alive", "connection", "proxy-authenticate"],
    hop: ["x-secret", "proxy-authenticate"],
    reused: true,
  },
  {
    name: "status_line_without_reason_phrase",
    method: "GET",
    response: `HTTP/1.1 201\r\n${CL}\r\n${HELLO}`,
    status: 201,
    body: HELLO,
    headers: {},
    reused: true,
  },
  {
    name: "repeated_headers_and_obs_text",
    method: "GET",
    response: `HTTP/1.1 200 OK\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\nX-Name: caf\xe9\r\n${CL}\r\n${HELLO}`,
    status: 200,
    body: HELLO,
    headers: { "set-cookie": ["a=1", "b=2"], "x-name": "caf\xe9" },
    reused: true,
  },
  {
    name: "binary_body_with_every_byte_value",
    method: "GET",
    response: `HTTP/1.1 200 OK\r\nContent-Length: 256\r\n\r\n${String.fromCharCode(...Array.from({ length: 256 }, (_, i) => i))}`,
    status: 200,
    body: String.fromCharCode(...Array.from({ length: 256 }, (_, i) => i)),
    headers: {},
    reused: true,
  },
];

/** Where a bad response goes wrong: before the head was handed on, or inside the body. */
export type Phase = "head" | "body";

export interface BadRow {
  readonly name: string;
  readonly response: string;
  readonly code: string;
  readonly phase: Phase;
  /** The method of the request (default GET). */
  readonly method?: string;
}

const OK = "HTTP/1.1 200 OK\r\n";
const bad = (name: string, response: string, phase: Phase, code = "UND_ERR_RESPONSE"): BadRow => ({
  name,
  response,
  code,
  phase,
});

/** Malformed responses: each must fail with its code, never hand on a complete response. */
export const MALFORMED: readonly BadRow[] = [
  // Framing conflicts (response splitting / desync).
  bad("both_content_length_and_transfer_encoding", `${OK}Content-Length: 5\r\n${TE}\r\n0\r\n\r\n`, "head"),
  bad("transfer_encoding_then_content_length", `${OK}${TE}Content-Length: 5\r\n\r\nhello`, "head"),
  // Even identical: RFC 9110 §8.6 allows accepting it, but llhttp (Node's client) and nginx refuse it.
  bad(
    "repeated_identical_content_length",
    `${OK}Content-Length: 5\r\nContent-Length: 5\r\n\r\nhello`,
    "head",
  ),
  bad("two_different_content_lengths", `${OK}Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!`, "head"),
  bad("content_length_with_plus_sign", `${OK}Content-Length: +5\r\n\r\nhello`, "head"),
  bad("content_length_with_minus_sign", `${OK}Content-Length: -5\r\n\r\nhello`, "head"),
  bad("content_length_with_inner_space", `${OK}Content-Length: 1 1\r\n\r\n${HELLO}`, "head"),
  bad("content_length_in_hex", `${OK}Content-Length: 0x5\r\n\r\nhello`, "head"),
  bad("content_length_empty", `${OK}Content-Length: \r\n\r\nhello`, "head"),
  bad("content_length_as_list", `${OK}Content-Length: 5, 5\r\n\r\nhello`, "head"),
  bad("content_length_overflowing", `${OK}Content-Length: 18446744073709551621\r\n\r\nhello`, "head"),
  bad("content_length_of_sixteen_digits", `${OK}Content-Length: 1000000000000005\r\n\r\nhello`, "head"),
  bad("transfer_encoding_chunked_twice", `${OK}Transfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n`, "head"),
  bad("transfer_encoding_chunked_in_two_lines", `${OK}${TE}${TE}\r\n0\r\n\r\n`, "head"),
  // Transfer codings other than chunked would reach the client as undeclared encoded bytes.
  bad(
    "transfer_coding_gzip_before_chunked",
    `${OK}Transfer-Encoding: gzip, chunked\r\n\r\n3\r\n\x1f\x8b\x08\r\n0\r\n\r\n`,
    "head",
  ),
  bad(
    "transfer_coding_gzip_after_chunked",
    `${OK}Transfer-Encoding: chunked, gzip\r\n\r\n5\r\nhello\r\n0\r\n\r\n`,
    "head",
  ),
  bad("transfer_coding_identity", `${OK}Transfer-Encoding: identity\r\n\r\nhello`, "head"),
  bad("transfer_encoding_empty", `${OK}Transfer-Encoding: \r\n\r\nhello`, "head"),
  // RFC 9110 §5.6.1 would ignore empty list elements, but llhttp reads "chunked," as not chunked (a body
  // delimited by the close): a response two parsers frame differently is refused.
  // Framing headers are checked on responses without a body too (llhttp does): the bytes after them are someone's.
  bad(
    "both_framings_on_a_304",
    "HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
    "head",
  ),
  bad("transfer_coding_gzip_on_a_204", "HTTP/1.1 204 No Content\r\nTransfer-Encoding: gzip\r\n\r\n", "head"),
  // HTTP/1.0 has no interim responses; one that closes the connection leaves the final one nowhere to come.
  bad("interim_response_in_http_1_0", `HTTP/1.0 100 Continue\r\n\r\n${OK}Content-Length: 0\r\n\r\n`, "head"),
  bad(
    "interim_response_closing_the_connection",
    `HTTP/1.1 100 Continue\r\nConnection: close\r\n\r\n${OK}Content-Length: 0\r\n\r\n`,
    "head",
  ),
  bad(
    "transfer_encoding_with_a_trailing_empty_element",
    `${OK}Transfer-Encoding: chunked,\r\n\r\n0\r\n\r\n`,
    "head",
  ),
  bad(
    "transfer_encoding_with_a_leading_empty_element",
    `${OK}Transfer-Encoding: , chunked\r\n\r\n0\r\n\r\n`,
    "head",
  ),
  // Header syntax.
  bad("obs_fold_header_line", `${OK}X-A: a\r\n b\r\nContent-Length: 0\r\n\r\n`, "head"),
  bad("obs_fold_with_tab", `${OK}X-A: a\r\n\tb\r\nContent-Length: 0\r\n\r\n`, "head"),
  bad("bare_lf_line_endings", "HTTP/1.1 200 OK\nContent-Length: 5\n\nhello", "head"),
  bad("bare_lf_inside_the_head", `${OK}X-A: a\nContent-Length: 0\r\n\r\n`, "head"),
  bad("bare_lf_ending_the_head", `${OK}Content-Length: 5\r\n\nhello`, "head"),
  bad("bare_cr_line_endings", "HTTP/1.1 200 OK\rContent-Length: 5\r\rhello", "head"),
  bad("bare_cr_inside_a_header_value", `${OK}X-A: a\rb\r\nContent-Length: 0\r\n\r\n`, "head"),
  bad("nul_in_a_header_value", `${OK}X-A: a\x00b\r\nContent-Length: 0\r\n\r\n`, "head"),
  bad("control_character_in_a_header_value", `${OK}X-A: a\x01b\r\nContent-Length: 0\r\n\r\n`, "head"),
  bad("del_in_a_header_value", `${OK}X-A: a\x7fb\r\nContent-Length: 0\r\n\r\n`, "head"),
  bad("space_before_colon", `${OK}Content-Length : 5\r\n\r\nhello`, "head"),
  bad("tab_before_colon", `${OK}X-A\t: 1\r\nContent-Length: 0\r\n\r\n`, "head"),
  bad("empty_header_name", `${OK}: x\r\nContent-Length: 0\r\n\r\n`, "head"),
  bad("header_line_without_colon", `${OK}NoColon\r\nContent-Length: 0\r\n\r\n`, "head"),
  bad("header_name_with_a_separator", `${OK}X(A): 1\r\nContent-Length: 0\r\n\r\n`, "head"),
  // Status line.
  bad("two_digit_status", "HTTP/1.1 20 OK\r\nContent-Length: 0\r\n\r\n", "head"),
  bad("four_digit_status", "HTTP/1.1 2000 OK\r\nContent-Length: 0\r\n\r\n", "head"),
  bad("status_600", "HTTP/1.1 600 Weird\r\nContent-Length: 2\r\n\r\nok", "head"),
  bad("status_999", "HTTP/1.1 999 Weird\r\nContent-Length: 2\r\n\r\nok", "head"),
  bad("http2_version_in_status_line", "HTTP/2 200\r\nContent-Length: 0\r\n\r\n", "head"),
  bad("http12_version_in_status_line", "HTTP/1.2 200 OK\r\nContent-Length: 0\r\n\r\n", "head"),
  bad("icy_status_line", "ICY 200 OK\r\nContent-Length: 0\r\n\r\n", "head"),
  bad("lower_case_protocol_name", "http/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", "head"),
  bad("missing_status_code", "HTTP/1.1 OK\r\nContent-Length: 0\r\n\r\n", "head"),
  bad("double_space_before_status", "HTTP/1.1  200 OK\r\nContent-Length: 0\r\n\r\n", "head"),
  bad("status_glued_to_reason", "HTTP/1.1 200OK\r\nContent-Length: 0\r\n\r\n", "head"),
  bad("empty_status_line", "\r\nContent-Length: 0\r\n\r\n", "head"),
  bad(
    "switching_protocols_without_upgrade_request",
    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nConnection: upgrade\r\n\r\n",
    "head",
  ),
  // Chunked framing (fails after the head went to the sink).
  bad("chunk_size_not_hex", `${OK}${TE}\r\nzz\r\nhello\r\n0\r\n\r\n`, "body"),
  bad("chunk_size_with_0x_prefix", `${OK}${TE}\r\n0x5\r\nhello\r\n0\r\n\r\n`, "body"),
  bad("chunk_size_negative", `${OK}${TE}\r\n-5\r\nhello\r\n0\r\n\r\n`, "body"),
  bad("chunk_size_with_fourteen_hex_digits", `${OK}${TE}\r\n00000000000005\r\nhello\r\n0\r\n\r\n`, "body"),
  bad("chunk_size_empty", `${OK}${TE}\r\n\r\nhello\r\n0\r\n\r\n`, "body"),
  bad("chunk_size_with_inner_space", `${OK}${TE}\r\n5 5\r\nhello\r\n0\r\n\r\n`, "body"),
  // Extensions as llhttp takes them (RFC 9112 §7.1.1 without bad whitespace): anything else is refused.
  bad("chunk_extension_after_whitespace", `${OK}${TE}\r\n5 ;a\r\nhello\r\n0\r\n\r\n`, "body"),
  bad("chunk_extension_without_a_name", `${OK}${TE}\r\n5;\r\nhello\r\n0\r\n\r\n`, "body"),
  bad("chunk_extension_with_spaces_around_equals", `${OK}${TE}\r\n5;a = b\r\nhello\r\n0\r\n\r\n`, "body"),
  bad("chunk_extension_value_with_a_space", `${OK}${TE}\r\n5;a=b c\r\nhello\r\n0\r\n\r\n`, "body"),
  bad(
    "chunk_extension_quoted_value_with_a_control_character",
    `${OK}${TE}\r\n5;a="\x01"\r\nhello\r\n0\r\n\r\n`,
    "body",
  ),
  bad(
    "chunk_extension_with_text_after_a_quoted_value",
    `${OK}${TE}\r\n5;a="b"c\r\nhello\r\n0\r\n\r\n`,
    "body",
  ),
  bad("chunk_size_line_over_4096_bytes", `${OK}${TE}\r\n5;${"x".repeat(4100)}\r\nhello\r\n0\r\n\r\n`, "body"),
  bad("chunk_data_longer_than_its_size", `${OK}${TE}\r\n5\r\nhelloXX\r\n0\r\n\r\n`, "body"),
  bad("chunk_data_followed_by_bare_lf", `${OK}${TE}\r\n5\r\nhello\n0\r\n\r\n`, "body"),
  bad("chunk_size_line_ending_with_bare_lf", `${OK}${TE}\r\n5\nhello\r\n0\r\n\r\n`, "body"),
  bad("last_chunk_line_ending_with_bare_lf", `${OK}${TE}\r\n5\r\nhello\r\n0\n\r\n`, "body"),
  bad("chunk_size_line_with_bare_cr", `${OK}${TE}\r\n5\r;x\r\nhello\r\n0\r\n\r\n`, "body"),
  bad("trailer_without_colon", `${OK}${TE}\r\n5\r\nhello\r\n0\r\nNoColon\r\n\r\n`, "body"),
  bad("trailer_with_space_before_colon", `${OK}${TE}\r\n5\r\nhello\r\n0\r\nX-T : 1\r\n\r\n`, "body"),
  bad("trailer_obs_fold", `${OK}${TE}\r\n5\r\nhello\r\n0\r\nX-T: 1\r\n folded\r\n\r\n`, "body"),
  bad("trailer_ending_with_bare_lf", `${OK}${TE}\r\n5\r\nhello\r\n0\r\nX-T: 1\n\r\n`, "body"),
  bad("trailer_with_nul_in_value", `${OK}${TE}\r\n5\r\nhello\r\n0\r\nX-T: a\x00b\r\n\r\n`, "body"),
  bad(
    "content_length_among_the_trailers",
    `${OK}${TE}\r\n5\r\nhello\r\n0\r\nContent-Length: 5\r\n\r\n`,
    "body",
  ),
  bad("trailer_with_empty_name", `${OK}${TE}\r\n5\r\nhello\r\n0\r\n: x\r\n\r\n`, "body"),
  // Size.
  bad(
    "head_over_64_kib_in_one_header",
    `${OK}X-Big: ${"a".repeat(70 * 1024)}\r\nContent-Length: 0\r\n\r\n`,
    "head",
    "UND_ERR_HEADERS_OVERFLOW",
  ),
  bad(
    "head_over_64_kib_in_many_headers",
    `${OK}${"X-Many: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n".repeat(2000)}Content-Length: 0\r\n\r\n`,
    "head",
    "UND_ERR_HEADERS_OVERFLOW",
  ),
  bad(
    "head_over_64_kib_without_end",
    `${OK}X-Big: ${"a".repeat(70 * 1024)}`,
    "head",
    "UND_ERR_HEADERS_OVERFLOW",
  ),
];

/** A response cut short: the parts written, then how the upstream leaves. */
export interface TruncatedRow {
  readonly name: string;
  readonly parts: readonly string[];
  readonly end: "fin" | "rst";
  readonly phase: Phase;
}

const trunc = (name: string, parts: string[], end: "fin" | "rst", phase: Phase): TruncatedRow => ({
  name,
  parts,
  end,
  phase,
});

export const TRUNCATED: readonly TruncatedRow[] = [
  trunc("close_before_any_response_byte", [], "fin", "head"),
  trunc("reset_before_any_response_byte", [], "rst", "head"),
  trunc("close_in_the_status_line", ["HTTP/1.1 20"], "fin", "head"),
  trunc("close_in_the_head", [`${OK}Content-Length: 11\r\n`], "fin", "head"),
  trunc("close_after_an_interim_response", ["HTTP/1.1 100 Continue\r\n\r\n"], "fin", "head"),
  trunc("close_right_after_a_content_length_head", [`${OK}${CL}\r\n`], "fin", "body"),
  trunc("close_right_after_a_chunked_head", [`${OK}${TE}\r\n`], "fin", "body"),
  trunc("close_mid_content_length_body", [`${OK}${CL}\r\nhello`], "fin", "body"),
  trunc("close_one_byte_short_of_content_length", [`${OK}${CL}\r\n`, HELLO.slice(0, -1)], "fin", "body"),
  trunc("close_mid_chunk_size_line", [`${OK}${TE}\r\n5\r\nhello\r\n`, "5"], "fin", "body"),
  trunc("close_mid_chunk_data", [`${OK}${TE}\r\n5\r\nhel`], "fin", "body"),
  trunc("close_between_chunk_data_and_its_crlf", [`${OK}${TE}\r\n5\r\nhello`], "fin", "body"),
  trunc("close_before_the_last_chunk", [`${OK}${TE}\r\n5\r\nhello\r\n`], "fin", "body"),
  trunc("close_in_the_trailers", [`${OK}${TE}\r\n5\r\nhello\r\n0\r\nX-T: 1\r\n`], "fin", "body"),
  trunc("close_before_the_final_crlf", [`${OK}${TE}\r\n5\r\nhello\r\n0\r\n`], "fin", "body"),
  trunc("reset_in_the_head", [`${OK}Content-Length: 11\r\n`], "rst", "head"),
  trunc("reset_mid_content_length_body", [`${OK}${CL}\r\n`, "hello"], "rst", "body"),
  trunc("reset_mid_chunked_body", [`${OK}${TE}\r\n`, "5\r\nhello\r\n"], "rst", "body"),
  trunc("reset_mid_body_until_close", [`${OK}\r\n`, "hello"], "rst", "body"),
];

/**
 * An address whose connect neither succeeds nor is refused: a listener in a child Node process whose
 * event loop is blocked right after listen (so it never accepts), with a backlog of 1 that filler
 * connections fill up — the kernel then drops further SYNs, and a connect hangs until the client's own
 * timeout. Works offline on loopback, without privileges.
 */
export async function startBlackhole(): Promise<{ port: number; close(): void }> {
  const code =
    'const s=require("net").createServer();s.listen({port:0,host:"127.0.0.1",backlog:1},()=>' +
    'process.stdout.write(s.address().port+"\\n",()=>Atomics.wait(new Int32Array(new SharedArrayBuffer(4)),0,0)))';
  const child: ChildProcess = spawn(process.execPath, ["-e", code], { stdio: ["ignore", "pipe", "inherit"] });
  const port = await new Promise<number>((resolve, reject) => {
    child.once("error", reject);
    child.stdout!.once("data", (d: Buffer) => resolve(Number(d.toString().trim())));
  });
  const fillers: net.Socket[] = [];
  const close = () => {
    for (const f of fillers) f.destroy();
    child.kill("SIGKILL");
  };
  // Fill the accept queue: connect until a connect no longer completes.
  for (let i = 0; i < 8; i++) {
    const f = net.connect(port, "127.0.0.1");
    f.on("error", () => {});
    fillers.push(f);
    const connected = await new Promise<boolean>((r) => {
      const t = setTimeout(() => r(false), 300);
      f.once("connect", () => {
        clearTimeout(t);
        r(true);
      });
    });
    if (!connected) return { port, close };
  }
  close();
  throw new Error("blackhole: the listener kept accepting connections");
}

/**
 * A hand-written h2c upstream (Node's own server refuses to send a status outside 200–599): every
 * request is answered with one HEADERS frame, `:status: <status>` and END_STREAM.
 */
export async function startRawH2Upstream(status: string): Promise<{ port: number; close(): void }> {
  // HPACK: literal without indexing, name :status (static index 8).
  const block = Buffer.concat([Buffer.from([0x08, status.length]), Buffer.from(status, "latin1")]);
  return startScriptedH2Upstream((id) => [frame(1, 0x5, id, block)]); // HEADERS, END_HEADERS | END_STREAM
}

/**
 * A hand-written h2c upstream that answers each request (its HEADERS frame, stream `id`) with the frames
 * `script(id)` gives, written as given (a number waits that many ms): what Node's own server cannot send,
 * e.g. a RST_STREAM(NO_ERROR) in the middle of a body (its `close(0)` ends the stream first).
 */
export async function startScriptedH2Upstream(
  script: (id: number) => (Buffer | number)[],
): Promise<{ port: number; close(): void }> {
  const sockets = new Set<net.Socket>();
  const raw = net.createServer((s) => {
    sockets.add(s);
    s.once("close", () => sockets.delete(s));
    let buf = Buffer.alloc(0);
    let prefaced = false;
    s.on("error", () => {});
    s.on("data", (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      if (!prefaced) {
        if (buf.length < 24) return;
        buf = buf.subarray(24); // the client preface
        prefaced = true;
        s.write(frame(4, 0, 0, Buffer.alloc(0))); // SETTINGS
      }
      while (buf.length >= 9) {
        const len = buf.readUIntBE(0, 3);
        if (buf.length < 9 + len) return;
        const [type, flags] = [buf[3]!, buf[4]!];
        const id = buf.readUInt32BE(5) & 0x7fffffff;
        buf = buf.subarray(9 + len);
        if (type === 4 && !(flags & 1)) s.write(frame(4, 1, 0, Buffer.alloc(0))); // SETTINGS ACK
        if (type === 1)
          void (async () => {
            for (const f of script(id)) {
              if (typeof f === "number") await sleep(f);
              else if (!s.destroyed) s.write(f);
            }
          })();
      }
    });
  });
  await new Promise<void>((r) => raw.listen(0, "127.0.0.1", r));
  return {
    port: (raw.address() as AddressInfo).port,
    close: () => {
      for (const s of sockets) s.destroy();
      raw.close();
    },
  };
}
