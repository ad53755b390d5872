/**
 * HTTP/1.1 connections to one upstream endpoint: a keep-alive pool with a strict response parser,
 * written for the proxy's hot path (no per-request closures beyond one promise, no AbortController,
 * the response body handed on as it arrives with backpressure).
 *
 * Why not undici: the proxy needs a small slice of an HTTP client — one request per connection at a time,
 * bodies streamed through — and measured on this path undici's general machinery (its wasm parser
 * callbacks, request objects, abort signals) cost about as much CPU as everything else the gateway does.
 *
 * The parser refuses what could desynchronize the connection or be read two ways: a response with both
 * Transfer-Encoding and Content-Length, differing or malformed Content-Length values, obs-folded header
 * lines, bare LF or CR, control characters, a header block over 64 KiB, malformed chunk framing. A
 * connection is reused only after a response that ended exactly where its framing said, whose request
 * was fully written, and that did not say `Connection: close`; anything else closes it. Errors carry the
 * codes the forwarding engine classifies (shared with H2Pool): connect failures keep the socket's code
 * (`ECONNREFUSED`, …) or `UND_ERR_CONNECT_TIMEOUT`; `UND_ERR_HEADERS_TIMEOUT` / `UND_ERR_BODY_TIMEOUT`;
 * `UND_ERR_QUEUE_TIMEOUT` for a request that waited its total (else headers) timeout for a connection
 * (nothing sent);
 * `UND_ERR_SOCKET` for a connection closed before the response completed; `UND_ERR_RESPONSE` for a
 * malformed response; `UND_ERR_ABORTED` when the caller cancelled.
 */
import net from "node:net";
import type { Writable } from "node:stream";
import { sendTimeoutError } from "../net/send-timeout.ts";
import { Discard } from "./discard.ts";

/** Cancellation without AbortController: the caller sets `aborted` and calls `onabort` when it gives up. */
export interface CancelToken {
  aborted: boolean;
  onabort: (() => void) | null;
}

export interface H1StreamOptions {
  method: string;
  /** Origin-form target: path and query. */
  path: string;
  headers?: Record<string, string | string[]> | null;
  /** A Buffer (sent with Content-Length), a stream (Content-Length when the headers give one, else chunked), or none. */
  body?: Buffer | NodeJS.ReadableStream | null;
  /**
   * Time allowed from the end of the request until the response head is complete (interim responses
   * included); a silence that long ends it too. Without a `totalTimeout`, a request that waits for a
   * connection (every one busy) waits at most this long (UND_ERR_QUEUE_TIMEOUT), and the wait is taken
   * from it; with one, the wait is bounded by that instead and this starts once a connection is its.
   */
  headersTimeout: number;
  /**
   * The time left of the whole request (its route's timeout) when this attempt starts. A new connection
   * must open within it as well as within the pool's connect timeout — whichever runs out first ends the
   * connect: UND_ERR_HEADERS_TIMEOUT for this one, UND_ERR_CONNECT_TIMEOUT for the other (0 sets none:
   * the system's) — and the head must then come within what it leaves. A wait for a busy connection is
   * bounded by it too (UND_ERR_QUEUE_TIMEOUT). As in Envoy, the headers (per-try) timeout starts once the
   * request has a connection: neither the connect nor the wait counts against it. 0 or absent: only the
   * connect timeout bounds the connect, and the headers timeout the wait.
   */
  totalTimeout?: number;
  /** Time allowed between body bytes. */
  bodyTimeout: number;
  /**
   * Time the response may stay blocked on its sink (a write refused, no 'drain' since): the client
   * stopped reading, and the request fails with E_SEND_TIMEOUT. 0 or absent: none.
   */
  sendTimeout?: number;
  cancel?: CancelToken;
  /**
   * Response headers to leave out while parsing the head (lower-case names; a route's `remove`
   * transform): cheaper than deleting them from the parsed object afterwards.
   */
  dropResponseHeaders?: ReadonlySet<string> | null;
}

export type ResponseHeaders = Record<string, string | string[]>;

/**
 * Receives the response head — its end-to-end headers: hop-by-hop ones, and those the Connection header
 * names, are removed — and returns where the body goes (ended when the response completes).
 * `closeDelimited`: the body ends when the connection closes (no Content-Length, not chunked), so a
 * truncated body cannot be told from a complete one (a cache must not store it).
 */
export type H1Factory = (data: {
  statusCode: number;
  headers: ResponseHeaders;
  closeDelimited: boolean;
}) => Writable;

export interface H1PoolOptions {
  /** At most this many connections; more requests wait in a queue. */
  maxConnections: number;
  connectTimeoutMs: number;
  /** An idle connection is closed after this long (shortened by the upstream's `Keep-Alive: timeout`). */
  keepAliveMs?: number;
  /** Opens the transport (plain TCP by default; TLS origination plugs in here). */
  connect?: (host: string, port: number) => net.Socket;
  /**
   * The socket event after which requests are written: "connect" (TCP, the default), or "secureConnect"
   * for TLS origination — so that the connect timeout covers the handshake, and a failed handshake
   * fails the request as a connect failure (nothing was sent).
   */
  readyEvent?: "connect" | "secureConnect";
  /**
   * Whether an established connection may take another request (checked before each reuse and while it
   * is idle); one that may not is closed once its current exchange ends. mTLS origination passes
   * `connectionReusable` (runtime/upstream/tls.ts): never past the certificates it was authenticated with.
   */
  reusable?: (socket: net.Socket) => boolean;
}

const MAX_HEAD_BYTES = 64 * 1024;
const MAX_CHUNK_LINE = 4096;
const DEFAULT_KEEPALIVE_MS = 4000;
/** How often idle connections are checked against their keep-alive time (the close comes ≤ this late). */
const SWEEP_MS = 250;
const CRLFCRLF = Buffer.from("\r\n\r\n");

/** Request headers this hop never forwards as given: framing and connection management are the pool's. */
const NOT_FORWARDED = new Set([
  "connection",
  "keep-alive",
  "proxy-connection",
  "transfer-encoding",
  "content-length",
  "te",
  "upgrade",
  "expect",
  "http2-settings",
]);

/**
 * Response headers that describe this connection only (RFC 9110 §7.6.1, plus legacy ones): read for
 * framing and connection management, never handed to the caller's response.
 */
const HOP_BY_HOP_RESPONSE = new Set([
  "connection",
  "keep-alive",
  "proxy-connection",
  "proxy-authenticate",
  "transfer-encoding",
  "te",
  "trailer",
  "upgrade",
  "http2-settings",
]);

const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
const LOWER_TOKEN = /^[!#$%&'*+\-.^_`|~0-9a-z]+$/;
const DIGITS = /^[0-9]{1,15}$/;
// Header values may hold HTAB, visible ASCII and obs-text; any other control character is refused.
/* eslint-disable no-control-regex -- matching control characters is the point */
const BAD_VALUE = /[\x00-\x08\x0a-\x1f\x7f]/;
// What the pool writes: the same, and no character beyond one byte — the head is written as latin1, which
// keeps only a character's low byte (U+010A would become an LF: a header injected).
const BAD_REQUEST_VALUE = /[\x00-\x08\x0a-\x1f\x7f\u0100-\uffff]/;
// A request target is ASCII (RFC 3986): llhttp refuses obs-text in one (HPE_INVALID_URL), and a wider
// character would be cut to its low byte.
const BAD_TARGET = /[\x00-\x20\x7f-\uffff]/;
/* eslint-enable no-control-regex */
// A chunk size, then extensions as llhttp takes them (RFC 9112 §7.1.1 without its bad whitespace, which
// llhttp refuses): `;name`, `;name=token`, `;name="quoted"` (or `;name=`). Anything else is refused.
const CHUNK_SIZE =
  /^([0-9A-Fa-f]{1,13})(?:;[!#$%&'*+\-.^_`|~0-9A-Za-z]+(?:=(?:[!#$%&'*+\-.^_`|~0-9A-Za-z]+|"(?:[\t \x21\x23-\x5b\x5d-\x7e\x80-\xff]|\\[\t \x21-\x7e\x80-\xff])*")?)?)*$/;
// Status codes are 100–599 (RFC 9110 §15): a 6xx–9xx has no class a client can fall back to (an HTTP/2
// downstream cannot even send one), so it is a malformed response like any other bad status line.
const STATUS_LINE = /^HTTP\/1\.([01]) ([1-5][0-9][0-9])(?: [^\r\n]*)?$/;

function fail(message: string, code: string): Error {
  return Object.assign(new Error(message), { code });
}

/**
 * Shared with H2Pool: a new connection must open within the pool's connect timeout and the request's
 * total timeout (`totalTimeout`, 0 or absent: none) — true when the total one is what ends the connect.
 */
export function connectEndedByTotal(connectTimeoutMs: number, totalTimeout: number): boolean {
  return totalTimeout > 0 && (connectTimeoutMs === 0 || totalTimeout < connectTimeoutMs);
}

/** The failure of a connect still under way when the request's total timeout ran out (a timeout). */
export const connectPastTotal = (): Error =>
  fail("no connection to the upstream within the request's timeout", "UND_ERR_HEADERS_TIMEOUT");

/**
 * The time the response head may take once the request has a connection: the headers (per-try) timeout,
 * at most what the connect or the wait for a busy connection (`spentMs`) left of the total timeout (0 or
 * absent: no total; a headers timeout of 0: none).
 */
export function headTimeAfterConnect(headersTimeout: number, totalTimeout: number, spentMs: number): number {
  if (totalTimeout <= 0) return headersTimeout;
  const left = Math.max(1, Math.ceil(totalTimeout - spentMs));
  return headersTimeout === 0 || left < headersTimeout ? left : headersTimeout;
}

const S = {
  IDLE: 0,
  HEAD: 1,
  BODY_LENGTH: 2,
  CHUNK_SIZE: 3,
  CHUNK_DATA: 4,
  CHUNK_CRLF: 5,
  TRAILERS: 6,
  BODY_CLOSE: 7,
} as const;
type ParseState = (typeof S)[keyof typeof S];

const HEAD_FAILED = 0;
const HEAD_INTERIM = 1;
const HEAD_DONE = 2;
const HEAD_BODY = 3;
type HeadOutcome = typeof HEAD_FAILED | typeof HEAD_INTERIM | typeof HEAD_DONE | typeof HEAD_BODY;

interface Pending {
  /** Replaced once, when it leaves the queue: its headers timeout is what the wait left of it. */
  opts: H1StreamOptions;
  readonly factory: H1Factory;
  readonly resolve: () => void;
  readonly reject: (err: Error) => void;
  /** The connection serving it, once it left the queue. */
  conn: Conn | null;
  /** The request body stream failed before it was being written (queued, or connecting). */
  bodyError: Error | null;
  /** Its body stream is being written (pipeBody owns the body's errors from then on). */
  streaming: boolean;
  /** Armed while it waits in the queue for a connection (its total, else headers timeout): UND_ERR_QUEUE_TIMEOUT. */
  queueTimer: NodeJS.Timeout | null;
  /** When it entered the queue (performance.now() ms). */
  queuedAt: number;
}

/** One upstream connection; carries the state of the request it serves (one at a time). */
class Conn {
  readonly socket: net.Socket;
  readonly pool: H1Pool;
  connected = false;
  closed = false;
  req: Pending | null = null;
  state: ParseState = S.IDLE;
  /** Head bytes gathered so far, when the head spans several reads. */
  head: Buffer | null = null;
  remaining = 0;
  line = "";
  crlfSeen = 0;
  sink: Writable | null = null;
  sinkBlocked = false;
  /** Armed while the sink refuses writes (sendTimeout), cleared by its 'drain'. */
  sendTimer: NodeJS.Timeout | null = null;
  /** The response may leave the connection open (keep-alive, known framing). */
  reusable = true;
  /** The request (head and body) was written completely. */
  requestWritten = false;
  /** When the response head must be complete (performance.now() ms): headersTimeout after the request. */
  headDeadline = Infinity;
  noBody = false;
  idleMs: number;
  /** When the connection last became idle (performance.now() ms), for the pool's idle sweep. */
  idleSince = 0;
  /** When its connect began (performance.now() ms), for the head time the first request has left. */
  connectStartedAt = 0;
  /** The socket's inactivity timeout now set (changed only when a request needs another value). */
  timeoutMs = -1;
  bodyStream: NodeJS.ReadableStream | null = null;

  constructor(pool: H1Pool, socket: net.Socket) {
    this.pool = pool;
    this.socket = socket;
    this.idleMs = pool.keepAliveMs;
    socket.on(pool.readyEvent, () => this.onConnect());
    socket.on("data", (d: Buffer) => this.onData(d));
    socket.on("end", () => this.onEnd());
    socket.on("error", (err: Error) => this.onClose(err));
    socket.on("close", () => this.onClose(null));
    socket.on("timeout", () => this.onTimeout());
  }

  private onConnect(): void {
    this.connected = true;
    this.socket.setNoDelay(true);
    const p = this.req;
    if (p === null) return this.pool.release(this);
    const h = p.opts.headersTimeout;
    const head = headTimeAfterConnect(h, p.opts.totalTimeout ?? 0, performance.now() - this.connectStartedAt);
    if (head !== h) p.opts = { ...p.opts, headersTimeout: head };
    this.send();
  }

  /** Starts the request on this connection (connected or not). */
  start(p: Pending): void {
    p.conn = this;
    this.req = p;
    this.state = S.HEAD;
    this.head = null;
    this.reusable = true;
    this.requestWritten = false;
    this.sink = null;
    this.sinkBlocked = false;
    this.noBody = p.opts.method === "HEAD";
    const cancel = p.opts.cancel;
    if (cancel) cancel.onabort = () => this.abort(fail("request aborted", "UND_ERR_ABORTED"));
    if (this.connected) return this.send();
    // The connect counts against the time left of the whole request: with a connect timeout of 0 (the
    // system's own) or a longer one, the request still ends at its route's timeout.
    const c = this.pool.connectTimeoutMs;
    const t = p.opts.totalTimeout ?? 0;
    this.connectStartedAt = performance.now();
    this.armTimeout(connectEndedByTotal(c, t) ? t : c);
  }

  private send(): void {
    const p = this.req!;
    const o = p.opts;
    if (p.bodyError !== null) return this.abort(p.bodyError);
    if (BAD_TARGET.test(o.path) || o.path.length === 0) {
      this.abort(fail(`invalid request target ${JSON.stringify(o.path)}`, "UND_ERR_INVALID_ARG"));
      return;
    }
    if (!TOKEN.test(o.method)) {
      this.abort(fail(`invalid method ${JSON.stringify(o.method.slice(0, 32))}`, "UND_ERR_INVALID_ARG"));
      return;
    }
    let head = `${o.method} ${o.path} HTTP/1.1\r\n`;
    let hasHost = false;
    let declaredLength: string | undefined;
    const headers = o.headers;
    if (headers) {
      for (const name in headers) {
        const value = headers[name]!;
        // Names are compared lower-case (a "Content-Length" must not slip past as a second framing).
        let lower = name;
        if (!LOWER_TOKEN.test(name)) {
          if (!TOKEN.test(name)) {
            return this.abort(
              fail(`invalid header name ${JSON.stringify(name.slice(0, 32))}`, "UND_ERR_INVALID_ARG"),
            );
          }
          lower = name.toLowerCase();
        }
        if (NOT_FORWARDED.has(lower)) {
          if (lower === "content-length" && typeof value === "string") declaredLength = value;
          continue;
        }
        if (lower === "host") hasHost = true;
        if (typeof value === "string") {
          if (BAD_REQUEST_VALUE.test(value)) return this.abort(badHeader(name));
          head += `${name}: ${value}\r\n`;
        } else {
          for (const v of value) {
            if (BAD_REQUEST_VALUE.test(v)) return this.abort(badHeader(name));
            head += `${name}: ${v}\r\n`;
          }
        }
      }
    }
    if (!hasHost) head += `host: ${this.pool.authority}\r\n`;
    const body = o.body ?? null;
    const s = this.socket;
    this.armTimeout(o.headersTimeout > 0 ? o.headersTimeout : 0);
    if (body === null) {
      if (declaredLength !== undefined && declaredLength !== "0") {
        return this.abort(fail("content-length without a body", "UND_ERR_REQ_CONTENT_LENGTH_MISMATCH"));
      }
      // A method that defines a body semantics gets an explicit empty one (RFC 9110 §8.6).
      if (o.method === "POST" || o.method === "PUT" || o.method === "PATCH") head += "content-length: 0\r\n";
      s.write(`${head}\r\n`, "latin1");
      this.written();
    } else if (Buffer.isBuffer(body)) {
      s.cork();
      s.write(`${head}content-length: ${body.length}\r\n\r\n`, "latin1");
      if (body.length > 0) s.write(body);
      s.uncork();
      this.written();
    } else {
      if (declaredLength !== undefined && !DIGITS.test(declaredLength)) {
        return this.abort(fail("invalid request content-length", "UND_ERR_INVALID_ARG"));
      }
      const length = declaredLength !== undefined ? Number(declaredLength) : -1;
      s.write(
        `${head}${length >= 0 ? `content-length: ${length}` : "transfer-encoding: chunked"}\r\n\r\n`,
        "latin1",
      );
      p.streaming = true;
      this.pipeBody(body, length);
    }
  }

  private written(): void {
    this.requestWritten = true;
    const t = this.req!.opts.headersTimeout;
    this.headDeadline = t > 0 ? performance.now() + t : Infinity;
  }

  /**
   * The head is still incomplete: fails the request once the headers timeout has passed since the
   * request was written — the socket's idle timer alone never fires for a head trickled byte by byte or
   * an endless run of interim responses (when the bytes stop, that timer ends it: < 2× the timeout).
   */
  private headLate(): boolean {
    if (!this.requestWritten || performance.now() < this.headDeadline) return false;
    this.abort(fail("no response head within the timeout", "UND_ERR_HEADERS_TIMEOUT"));
    return true;
  }

  /** Streams a request body with backpressure; Content-Length is checked, otherwise chunked. */
  private pipeBody(body: NodeJS.ReadableStream, length: number): void {
    this.bodyStream = body;
    const s = this.socket;
    let sent = 0;
    const chunked = length < 0;
    const onData = (chunk: Buffer | string) => {
      if (this.bodyStream !== body) return;
      const buf = typeof chunk === "string" ? Buffer.from(chunk) : chunk;
      if (buf.length === 0) return;
      sent += buf.length;
      if (!chunked && sent > length) {
        cleanup();
        this.abort(
          fail("request body longer than its content-length", "UND_ERR_REQ_CONTENT_LENGTH_MISMATCH"),
        );
        return;
      }
      let ok: boolean;
      if (chunked) {
        s.cork();
        s.write(`${buf.length.toString(16)}\r\n`, "latin1");
        s.write(buf);
        ok = s.write("\r\n", "latin1");
        s.uncork();
      } else ok = s.write(buf);
      if (!ok) {
        body.pause();
        s.once("drain", () => {
          if (this.bodyStream === body) body.resume();
        });
      }
    };
    const onEnd = () => {
      cleanup();
      if (this.bodyStream !== body) return;
      this.bodyStream = null;
      if (!chunked && sent !== length) {
        this.abort(
          fail("request body shorter than its content-length", "UND_ERR_REQ_CONTENT_LENGTH_MISMATCH"),
        );
        return;
      }
      if (chunked) s.write("0\r\n\r\n", "latin1");
      this.written();
    };
    const onError = (err: Error) => {
      cleanup();
      if (this.bodyStream !== body) return;
      this.bodyStream = null;
      this.abort(err);
    };
    const cleanup = () => {
      body.removeListener("data", onData);
      body.removeListener("end", onEnd);
      body.removeListener("error", onError);
    };
    body.on("data", onData);
    body.on("end", onEnd);
    body.on("error", onError);
    body.resume();
  }

  private onData(data: Buffer): void {
    if (this.req === null) {
      // Bytes nobody asked for (requests are never pipelined): the connection cannot be trusted any more.
      this.closed = true;
      this.socket.destroy();
      this.pool.forget(this);
      return;
    }
    if (this.state !== S.HEAD) return this.parseBody(data, 0);
    let buf = data;
    let prior = 0;
    if (this.head !== null) {
      prior = this.head.length;
      buf = Buffer.concat([this.head, data]);
      this.head = null;
    }
    for (;;) {
      const end = buf.indexOf(CRLFCRLF, prior > 3 ? prior - 3 : 0);
      if (end < 0 || end > MAX_HEAD_BYTES) {
        if (buf.length > MAX_HEAD_BYTES) {
          this.abort(fail("response head larger than 64 KiB", "UND_ERR_HEADERS_OVERFLOW"));
          return;
        }
        // Lines ended by a bare LF or CR never show the blank line: refuse now, not at the timeout.
        if (hasBareLineEnd(buf, prior > 0 ? prior - 1 : 0)) {
          this.protocolError("bare LF or CR in the head");
          return;
        }
        if (this.headLate()) return;
        this.head = buf;
        return;
      }
      const rest = end + 4;
      const outcome = this.onHead(buf.toString("latin1", 0, end), buf.length > rest);
      if (outcome === HEAD_FAILED || outcome === HEAD_DONE) return;
      if (outcome === HEAD_INTERIM) {
        // Interim response (100 Continue, 103 Early Hints): skipped; the final one follows.
        if (this.headLate() || buf.length === rest) return;
        buf = buf.subarray(rest);
        prior = 0;
        continue;
      }
      const req = this.req!;
      if (rest < buf.length) this.parseBody(buf, rest);
      // The body continues past this read: from now on the body timeout applies (most responses end in
      // the read that brought their head, and then the timer is left as it is).
      if (this.req === req) {
        const bt = req.opts.bodyTimeout;
        this.armTimeout(bt > 0 ? bt : 0);
      }
      return;
    }
  }

  /**
   * Parses the head text and hands it to the factory. `more`: bytes follow the head in the same read
   * (after a response without a body they are unsolicited, so the connection is not reused).
   */
  private onHead(text: string, more: boolean): HeadOutcome {
    let eol = text.indexOf("\r\n");
    const statusLine = eol < 0 ? text : text.slice(0, eol);
    const m = STATUS_LINE.exec(statusLine);
    if (!m) return this.protocolError(`malformed status line ${JSON.stringify(statusLine.slice(0, 64))}`);
    const minor = m[1];
    const status = Number(m[2]);
    const headers: ResponseHeaders = {};
    const drop = this.req!.opts.dropResponseHeaders ?? null;
    let contentLength = -1;
    let te: string | null = null;
    let connection = "";
    let keepAlive = "";
    let pos = eol < 0 ? text.length : eol + 2;
    const n = text.length;
    while (pos < n) {
      eol = text.indexOf("\r\n", pos);
      const end = eol < 0 ? n : eol;
      const colon = text.indexOf(":", pos);
      if (colon <= pos || colon >= end) return this.protocolError("malformed header line");
      const known = headerName(text.slice(pos, colon));
      if (known === null) return this.protocolError("malformed header name (or obs-fold)");
      const value = trimOws(text.slice(colon + 1, end));
      pos = end + 2;
      if (BAD_VALUE.test(value)) return this.protocolError("control character in a header");
      const name = known.lower;
      switch (known.kind) {
        case NAME_PLAIN:
          if (drop !== null && drop.has(name)) continue;
          break;
        case NAME_CONTENT_LENGTH: {
          if (!DIGITS.test(value)) return this.protocolError("malformed content-length");
          // A second Content-Length is refused even when it repeats the first: RFC 9110 §8.6 allows either,
          // and llhttp and nginx refuse it.
          if (contentLength >= 0) return this.protocolError("repeated content-length");
          contentLength = Number(value);
          break;
        }
        case NAME_TRANSFER_ENCODING:
          te = te === null ? value : `${te}, ${value}`;
          continue; // hop-by-hop: read for framing, never handed on
        case NAME_CONNECTION:
          connection = connection ? `${connection},${value}` : value;
          continue;
        case NAME_KEEP_ALIVE:
          keepAlive = value;
          continue;
        default:
          continue; // other hop-by-hop headers describe this connection only (RFC 9110 §7.6.1)
      }
      const prev = headers[name];
      if (prev === undefined) headers[name] = value;
      else if (typeof prev === "string") headers[name] = [prev, value];
      else prev.push(value);
    }
    const tokens = connection ? connection.toLowerCase() : "";
    if (status < 200) {
      if (status === 101) return this.protocolError("unexpected 101 Switching Protocols");
      // HTTP/1.0 has no interim responses, and one that closes the connection leaves the final response
      // nowhere to come: llhttp reads the bytes after either as data after the connection's end.
      if (minor === "0" || tokens.includes("close"))
        return this.protocolError("interim response ending the connection");
      return HEAD_INTERIM;
    }
    if (minor === "0" ? !tokens.includes("keep-alive") : tokens.includes("close")) this.reusable = false;
    // Headers the Connection header names are hop-by-hop too.
    if (tokens !== "") {
      for (const t of tokens.split(",")) {
        const listed = trimOws(t);
        if (listed !== "" && listed !== "close" && listed !== "keep-alive" && listed !== "content-length")
          delete headers[listed];
      }
    }
    if (keepAlive) {
      const t = /(?:^|,)\s*timeout\s*=\s*(\d+)/i.exec(keepAlive);
      if (t) {
        this.idleMs = Math.max(0, Math.min(this.pool.keepAliveMs, Number(t[1]) * 1000 - 1000));
        // timeout ≤ 1 s leaves no margin before the upstream's own close (and setTimeout(0) would
        // disable the idle timer): the connection is not reused.
        if (this.idleMs === 0) this.reusable = false;
      }
    }
    if (te !== null) {
      // RFC 9112 §6.3: both framings at once may be an attempt at response splitting — an error here,
      // even on a response without a body (llhttp refuses it there too; the bytes after it are someone's).
      if (contentLength >= 0) return this.protocolError("both transfer-encoding and content-length");
      // Only "chunked" is decoded; another transfer coding (gzip, deflate, …) would reach the client as
      // undeclared encoded bytes, so it is refused. So is an empty list element: RFC 9110 §5.6.1 says to
      // ignore it, but llhttp reads "chunked," as a body delimited by the close — two parsers framing one
      // response two ways is how desynchronization starts (test/upstream/h1pool-differential.test.ts).
      const codings = te.toLowerCase().split(",").map(trimOws);
      let chunks = 0;
      for (const c of codings) {
        if (c === "") return this.protocolError("empty element in transfer-encoding");
        if (c !== "chunked") return this.protocolError(`unsupported transfer-coding "${c.slice(0, 32)}"`);
        chunks++;
      }
      if (chunks > 1) return this.protocolError("chunked applied twice");
    }
    if (this.noBody || status === 204 || status === 304) {
      if (status === 204) {
        if (te !== null || contentLength > 0) this.reusable = false;
        // RFC 9110 §8.6: a 204 never carries Content-Length — an HTTP/2 client treats a non-zero one on a
        // response without DATA as a malformed stream (nghttp2: PROTOCOL_ERROR), losing the answer.
        delete headers["content-length"];
      }
      this.noBody = true;
    } else if (te !== null) {
      // RFC 9112 §6.1: in an HTTP/1.0 message it is faulty framing — the message is read, the connection closed.
      if (minor === "0") this.reusable = false;
      this.state = S.CHUNK_SIZE;
      this.line = "";
    } else if (contentLength >= 0) {
      this.state = S.BODY_LENGTH;
      this.remaining = contentLength;
    } else {
      this.state = S.BODY_CLOSE;
      this.reusable = false;
    }
    const req = this.req!;
    let sink: Writable;
    try {
      sink = req.factory({ statusCode: status, headers, closeDelimited: this.state === S.BODY_CLOSE });
    } catch (err) {
      this.abort(err as Error);
      return HEAD_FAILED;
    }
    if (this.req !== req) return HEAD_FAILED; // the factory's writable failed the request
    this.sink = sink;
    if (this.noBody || (this.state === S.BODY_LENGTH && this.remaining === 0)) {
      if (more) this.reusable = false;
      this.state = S.IDLE;
      this.complete(null);
      return HEAD_DONE;
    }
    return HEAD_BODY;
  }

  private protocolError(message: string): typeof HEAD_FAILED {
    this.abort(fail(`malformed upstream response: ${message}`, "UND_ERR_RESPONSE"));
    return HEAD_FAILED;
  }

  private parseBody(data: Buffer, off: number): void {
    while (off < data.length && this.req !== null) {
      switch (this.state) {
        case S.BODY_LENGTH: {
          const n = data.length - off;
          if (n < this.remaining) {
            this.remaining -= n;
            this.write(off === 0 ? data : data.subarray(off));
            return;
          }
          const last = data.subarray(off, off + this.remaining);
          if (off + this.remaining < data.length) this.reusable = false; // bytes after the response
          this.remaining = 0;
          this.complete(last);
          return;
        }
        case S.BODY_CLOSE:
          this.write(off === 0 ? data : data.subarray(off));
          return;
        case S.CHUNK_SIZE:
        case S.TRAILERS: {
          const nl = data.indexOf(10, off);
          const end = nl < 0 ? data.length : nl + 1;
          this.line += data.toString("latin1", off, end);
          off = end;
          if (this.line.length > MAX_CHUNK_LINE) {
            this.protocolError("chunk line too long");
            return;
          }
          if (nl < 0) return;
          if (!this.line.endsWith("\r\n") || this.line.indexOf("\r") !== this.line.length - 2) {
            this.protocolError("chunk line not ended by CRLF");
            return;
          }
          const line = this.line.slice(0, -2);
          this.line = "";
          if (this.state === S.TRAILERS) {
            if (line === "") {
              if (off < data.length) this.reusable = false;
              this.complete(null);
              return;
            }
            const colon = line.indexOf(":");
            if (colon <= 0 || !TOKEN.test(line.slice(0, colon)) || BAD_VALUE.test(line)) {
              this.protocolError("malformed trailer line");
              return;
            }
            // A length among the trailers contradicts the chunked framing (RFC 9110 §6.5.1); llhttp refuses it.
            if (colon === 14 && line.slice(0, 14).toLowerCase() === "content-length") {
              this.protocolError("content-length in the trailers");
              return;
            }
            continue;
          }
          const m = CHUNK_SIZE.exec(line);
          if (!m) {
            this.protocolError("malformed chunk size");
            return;
          }
          const size = parseInt(m[1]!, 16);
          if (size === 0) this.state = S.TRAILERS;
          else {
            this.remaining = size;
            this.state = S.CHUNK_DATA;
          }
          continue;
        }
        case S.CHUNK_DATA: {
          const n = Math.min(this.remaining, data.length - off);
          this.write(data.subarray(off, off + n));
          off += n;
          this.remaining -= n;
          if (this.remaining === 0) {
            this.state = S.CHUNK_CRLF;
            this.crlfSeen = 0;
          }
          continue;
        }
        case S.CHUNK_CRLF: {
          const expected = this.crlfSeen === 0 ? 13 : 10;
          if (data[off] !== expected) {
            this.protocolError("chunk data not followed by CRLF");
            return;
          }
          off++;
          if (++this.crlfSeen === 2) {
            this.state = S.CHUNK_SIZE;
            this.line = "";
          }
          continue;
        }
        default:
          return;
      }
    }
  }

  private write(chunk: Buffer): void {
    const sink = this.sink;
    if (chunk.length === 0 || sink === null) return;
    const more = sink.write(chunk);
    // The sink may have cancelled the request from inside write() (its consumer gave up).
    if (!more && !this.sinkBlocked && this.sink === sink) {
      this.sinkBlocked = true;
      this.socket.pause();
      // A sink of an earlier request (the connection reused since) draining late changes nothing here.
      sink.once("drain", () => {
        if (this.sink === sink) this.onSinkDrain();
      });
      const st = this.req!.opts.sendTimeout;
      if (st !== undefined && st > 0) this.sendTimer = setTimeout(() => this.onSendTimeout(), st);
    }
  }

  private onSinkDrain(): void {
    this.clearSendTimer();
    this.sinkBlocked = false;
    if (!this.closed) this.socket.resume();
  }

  private clearSendTimer(): void {
    if (this.sendTimer !== null) {
      clearTimeout(this.sendTimer);
      this.sendTimer = null;
    }
  }

  /** The sink took no write for the send timeout: its reader is gone or stalled. */
  private onSendTimeout(): void {
    this.sendTimer = null;
    if (this.sinkBlocked && this.req !== null) this.abort(sendTimeoutError());
  }

  /** The response ended where its framing said. */
  private complete(last: Buffer | null): void {
    const req = this.req!;
    const sink = this.sink!;
    this.detach();
    if (last !== null && last.length > 0) sink.end(last);
    else sink.end();
    if (this.reusable && this.requestWritten && this.bodyStream === null) {
      this.state = S.IDLE;
      this.pool.release(this);
    } else {
      this.bodyStream = null;
      this.closed = true;
      this.socket.destroy();
      this.pool.forget(this);
    }
    req.resolve();
  }

  private detach(): void {
    const req = this.req;
    if (req?.opts.cancel) req.opts.cancel.onabort = null;
    this.req = null;
    this.sink = null;
    this.clearSendTimer();
    if (this.sinkBlocked) this.socket.resume();
    this.sinkBlocked = false;
  }

  /** Fails the current request and closes the connection. */
  abort(err: Error): void {
    const req = this.req;
    const sink = this.sink;
    this.detach();
    this.bodyStream = null;
    this.state = S.IDLE;
    if (!this.closed) {
      this.closed = true;
      this.socket.destroy();
      this.pool.forget(this);
    }
    if (sink !== null && !sink.destroyed) sink.destroy(err);
    req?.reject(err);
  }

  private onEnd(): void {
    if (this.req !== null && this.state === S.BODY_CLOSE) {
      // A body delimited by the connection's end is complete now.
      this.reusable = false;
      this.complete(null);
      return;
    }
    this.onClose(null);
  }

  private onClose(err: Error | null): void {
    if (this.req !== null) {
      const phase = this.sink === null ? "before the response head" : "before the response completed";
      const e = err && (err as { code?: string }).code && !this.connected ? err : null;
      this.abort(
        e ??
          Object.assign(fail(`upstream closed the connection ${phase}`, "UND_ERR_SOCKET"), {
            cause: err ?? undefined,
            ...(err && (err as { code?: string }).code
              ? { socketCode: (err as { code?: string }).code }
              : {}),
          }),
      );
      return;
    }
    if (!this.closed) {
      this.closed = true;
      this.socket.destroy();
      this.pool.forget(this);
    }
  }

  /**
   * Sets the socket's inactivity timeout, only when it differs from the one set: re-arming creates a
   * timer, and on the hot path consecutive requests of a route need the same value.
   */
  armTimeout(ms: number): void {
    if (ms === this.timeoutMs) return;
    this.timeoutMs = ms;
    this.socket.setTimeout(ms);
  }

  private onTimeout(): void {
    // An idle connection keeps its last request's timeout armed; the pool's sweep closes it when its
    // keep-alive time is up, so a timeout without a request means nothing (the timer re-arms on the
    // next request's first write).
    if (this.req === null) return;
    if (!this.connected)
      this.abort(
        connectEndedByTotal(this.pool.connectTimeoutMs, this.req.opts.totalTimeout ?? 0)
          ? connectPastTotal()
          : fail("connect timeout", "UND_ERR_CONNECT_TIMEOUT"),
      );
    else if (this.sink === null)
      this.abort(fail("no response head within the timeout", "UND_ERR_HEADERS_TIMEOUT"));
    else this.abort(fail("response body stalled past the timeout", "UND_ERR_BODY_TIMEOUT"));
  }
}

function badHeader(name: string): Error {
  return fail(`header ${name} holds a control character or one beyond a byte`, "UND_ERR_INVALID_ARG");
}

/** An LF not preceded by CR, or a CR followed by something else than LF, at or after `from`. */
function hasBareLineEnd(buf: Buffer, from: number): boolean {
  for (let i = buf.indexOf(10, from); i >= 0; i = buf.indexOf(10, i + 1))
    if (i === 0 || buf[i - 1] !== 13) return true;
  for (let i = buf.indexOf(13, from); i >= 0; i = buf.indexOf(13, i + 1))
    if (i + 1 < buf.length && buf[i + 1] !== 10) return true;
  return false;
}

const NAME_PLAIN = 0;
const NAME_CONTENT_LENGTH = 1;
const NAME_TRANSFER_ENCODING = 2;
const NAME_CONNECTION = 3;
const NAME_KEEP_ALIVE = 4;
const NAME_HOP_BY_HOP = 5;

interface KnownName {
  readonly lower: string;
  readonly kind: number;
}

/** Response header names as received → validated, lower-cased and classified; bounded. */
const NAMES = new Map<string, KnownName>();
const NAMES_MAX = 1024;

/** The lower-case name and its class, or null when it is not a token (a space, obs-fold, …). */
function headerName(raw: string): KnownName | null {
  const known = NAMES.get(raw);
  if (known !== undefined) return known;
  if (!TOKEN.test(raw)) return null;
  const lower = raw.toLowerCase();
  const kind =
    lower === "content-length"
      ? NAME_CONTENT_LENGTH
      : lower === "transfer-encoding"
        ? NAME_TRANSFER_ENCODING
        : lower === "connection"
          ? NAME_CONNECTION
          : lower === "keep-alive"
            ? NAME_KEEP_ALIVE
            : HOP_BY_HOP_RESPONSE.has(lower)
              ? NAME_HOP_BY_HOP
              : NAME_PLAIN;
  const entry = { lower, kind };
  if (NAMES.size < NAMES_MAX) NAMES.set(raw, entry);
  return entry;
}

function trimOws(s: string): string {
  let a = 0;
  let b = s.length;
  while (a < b && (s.charCodeAt(a) === 32 || s.charCodeAt(a) === 9)) a++;
  while (b > a && (s.charCodeAt(b - 1) === 32 || s.charCodeAt(b - 1) === 9)) b--;
  return a === 0 && b === s.length ? s : s.slice(a, b);
}

export class H1Pool {
  readonly host: string;
  readonly port: number;
  readonly authority: string;
  readonly maxConnections: number;
  readonly connectTimeoutMs: number;
  readonly keepAliveMs: number;
  readonly readyEvent: "connect" | "secureConnect";
  private readonly connectFn: (host: string, port: number) => net.Socket;
  private readonly reusable: ((socket: net.Socket) => boolean) | null;
  private readonly idle: Conn[] = [];
  private readonly all = new Set<Conn>();
  private readonly queue: Pending[] = [];
  private closed = false;
  private sweeper: NodeJS.Timeout | null = null;
  /** Requests waiting for a connection. */
  readonly stats = { pending: 0, connections: 0 };

  constructor(host: string, port: number, options: H1PoolOptions) {
    this.host = host;
    this.port = port;
    this.authority = `${host.includes(":") ? `[${host}]` : host}:${port}`;
    this.maxConnections = Math.max(1, options.maxConnections);
    this.connectTimeoutMs = options.connectTimeoutMs;
    this.keepAliveMs = options.keepAliveMs ?? DEFAULT_KEEPALIVE_MS;
    this.connectFn = options.connect ?? ((h, p) => net.connect({ host: h, port: p }));
    this.readyEvent = options.readyEvent ?? "connect";
    this.reusable = options.reusable ?? null;
  }

  /** Sends the request; the response body goes to the factory's writable. Resolves when it completed. */
  stream(opts: H1StreamOptions, factory: H1Factory): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      if (opts.cancel?.aborted) return reject(fail("request aborted", "UND_ERR_ABORTED"));
      const p: Pending = {
        opts,
        factory,
        resolve,
        reject,
        conn: null,
        bodyError: null,
        streaming: false,
        queueTimer: null,
        queuedAt: 0,
      };
      const body = opts.body;
      if (body && !Buffer.isBuffer(body)) {
        // The body can fail (too large, client gone) while the request waits for a connection.
        body.once("error", (err: Error) => {
          if (p.streaming) return;
          p.bodyError = err;
          if (p.conn !== null) {
            if (p.conn.req === p) p.conn.abort(err);
          } else this.unqueue(p, err);
        });
      }
      this.dispatch(p);
    });
  }

  /**
   * A whole exchange whose body is discarded (health checks, mirrored copies). `callTimeout` bounds the
   * whole of it, the body included (a body that trickles never meets the body timeout, a silence's):
   * past it the connection is closed and the request fails — UND_ERR_HEADERS_TIMEOUT before the head,
   * UND_ERR_BODY_TIMEOUT after it.
   */
  async request(opts: {
    method: string;
    path: string;
    headers?: Record<string, string | string[]>;
    body?: Buffer | null;
    headersTimeout: number;
    totalTimeout?: number;
    bodyTimeout: number;
    callTimeout?: number;
  }): Promise<{ statusCode: number; body: { dump(): Promise<void> } }> {
    let statusCode = 0;
    const callTimeout = opts.callTimeout ?? 0;
    const cancel: CancelToken = { aborted: false, onabort: null };
    let timedOut = false;
    const timer =
      callTimeout > 0
        ? setTimeout(() => {
            timedOut = true;
            cancel.aborted = true;
            cancel.onabort?.();
          }, callTimeout)
        : null;
    try {
      await this.stream(
        {
          method: opts.method,
          path: opts.path,
          headers: opts.headers ?? null,
          body: opts.body ?? null,
          headersTimeout: opts.headersTimeout,
          totalTimeout: opts.totalTimeout,
          bodyTimeout: opts.bodyTimeout,
          cancel,
        },
        (d) => {
          statusCode = d.statusCode;
          return new Discard();
        },
      );
    } catch (err) {
      if (!timedOut) throw err;
      throw statusCode === 0
        ? fail("no response head within the timeout", "UND_ERR_HEADERS_TIMEOUT")
        : fail("response not complete within the timeout", "UND_ERR_BODY_TIMEOUT");
    } finally {
      if (timer !== null) clearTimeout(timer);
    }
    return { statusCode, body: { dump: () => Promise.resolve() } };
  }

  private dispatch(p: Pending): void {
    let conn = this.idle.pop();
    while (conn !== undefined && this.reusable !== null && !this.reusable(conn.socket)) {
      this.discard(conn);
      conn = this.idle.pop();
    }
    if (conn !== undefined) return conn.start(p);
    if (this.all.size < this.maxConnections) return this.open().start(p);
    this.queue.push(p);
    this.stats.pending = this.queue.length;
    const cancel = p.opts.cancel;
    if (cancel) cancel.onabort = () => this.unqueue(p, fail("request aborted", "UND_ERR_ABORTED"));
    // Every connection is busy (a long stream can hold one for hours): the wait for one is bounded by what
    // is left of the whole request (as Envoy's pending requests wait within the route timeout), else by the
    // time the caller gave the response head — a request, a health probe, never waits without bound.
    const total = p.opts.totalTimeout ?? 0;
    const t = total > 0 ? total : p.opts.headersTimeout;
    if (t > 0) {
      p.queuedAt = performance.now();
      p.queueTimer = setTimeout(
        () =>
          this.unqueue(p, fail("no connection to the upstream became free in time", "UND_ERR_QUEUE_TIMEOUT")),
        t,
      );
    }
  }

  /** Fails a request still waiting in the queue. */
  private unqueue(p: Pending, err: Error): void {
    const i = this.queue.indexOf(p);
    if (i < 0) return;
    this.queue.splice(i, 1);
    this.stats.pending = this.queue.length;
    if (p.opts.cancel) p.opts.cancel.onabort = null;
    if (p.queueTimer !== null) clearTimeout(p.queueTimer);
    p.queueTimer = null;
    p.reject(err);
  }

  /**
   * The next request of the queue, taken to be started. With a total timeout, the wait is taken from that
   * and the headers timeout starts now (capped by what the total has left); without, the wait is taken
   * from the headers timeout.
   */
  private dequeue(): Pending | undefined {
    const p = this.queue.shift();
    if (p === undefined) return undefined;
    this.stats.pending = this.queue.length;
    if (p.opts.cancel) p.opts.cancel.onabort = null;
    if (p.queueTimer !== null) {
      clearTimeout(p.queueTimer);
      p.queueTimer = null;
      const waited = performance.now() - p.queuedAt;
      const t = p.opts.totalTimeout ?? 0;
      p.opts =
        t > 0
          ? {
              ...p.opts,
              headersTimeout: headTimeAfterConnect(p.opts.headersTimeout, t, waited),
              totalTimeout: Math.max(1, Math.ceil(t - waited)),
            }
          : { ...p.opts, headersTimeout: Math.max(1, Math.ceil(p.opts.headersTimeout - waited)) };
    }
    return p;
  }

  private open(): Conn {
    const conn = new Conn(this, this.connectFn(this.host, this.port));
    this.all.add(conn);
    this.stats.connections = this.all.size;
    return conn;
  }

  /** Closes a connection no request uses, and opens another for waiting requests. */
  private discard(conn: Conn): void {
    conn.closed = true;
    conn.socket.destroy();
    this.forget(conn);
  }

  /**
   * A connection is free: serve the queue, else keep it idle until its keep-alive time runs out — unless
   * the pool closed (nothing is kept idle) or the connection may not be reused.
   */
  release(conn: Conn): void {
    if (this.reusable !== null && !this.reusable(conn.socket)) return this.discard(conn);
    const next = this.dequeue();
    if (next !== undefined) return conn.start(next);
    if (this.closed) return this.discard(conn);
    conn.idleSince = performance.now();
    this.idle.push(conn);
    if (this.sweeper === null) {
      this.sweeper = setInterval(() => this.sweep(), SWEEP_MS);
      this.sweeper.unref();
    }
  }

  /** Closes idle connections past their keep-alive time or no longer reusable; stops when none is idle. */
  private sweep(): void {
    const now = performance.now();
    for (let i = this.idle.length - 1; i >= 0; i--) {
      const c = this.idle[i]!;
      if (now - c.idleSince < c.idleMs && (this.reusable === null || this.reusable(c.socket))) continue;
      this.idle.splice(i, 1);
      this.discard(c);
    }
    if (this.idle.length === 0 && this.sweeper !== null) {
      clearInterval(this.sweeper);
      this.sweeper = null;
    }
  }

  /** A connection closed: drop it, and open another for waiting requests. */
  forget(conn: Conn): void {
    this.all.delete(conn);
    this.stats.connections = this.all.size;
    const i = this.idle.indexOf(conn);
    if (i >= 0) this.idle.splice(i, 1);
    if (this.queue.length > 0 && this.all.size < this.maxConnections) this.open().start(this.dequeue()!);
  }

  /**
   * Retires the pool (a reload left no cluster using it, or its limits changed): idle connections close
   * now, busy ones once no request waits for them. Requests still queued are served, and a request that
   * still reaches it (a retry of a request that started before the reload) gets a connection of its own:
   * nothing fails for the reload, and nothing stays open after.
   */
  async close(): Promise<void> {
    this.closed = true;
    if (this.sweeper !== null) {
      clearInterval(this.sweeper);
      this.sweeper = null;
    }
    for (const c of this.idle.splice(0)) {
      c.closed = true;
      c.socket.destroy();
      this.all.delete(c);
    }
    this.stats.connections = this.all.size;
  }
}
