/**
 * An HTTP/2 upstream "pool" for clusters that speak HTTP/2 (gRPC services): one multiplexed session per
 * endpoint — cleartext (h2c with prior knowledge), or over the connection a `connect` function opens (mTLS
 * origination with ALPN h2, runtime/upstream/tls.ts) — reopened when it closes or receives GOAWAY. It offers the slice of undici's Pool
 * interface the forwarding engine uses (`stream`, `request`, `stats`, `close`), and forwards response
 * trailers (gRPC's `grpc-status`) to the downstream response.
 */
import http2, {
  type ClientHttp2Session,
  type ClientHttp2Stream,
  type IncomingHttpHeaders,
  type ServerHttp2Stream,
} from "node:http2";
import net from "node:net";
import type { Writable } from "node:stream";
import { connectPastTotal, headTimeAfterConnect, type CancelToken } from "./h1pool.ts";
import { Discard } from "./discard.ts";
import { sendTimeoutError } from "../net/send-timeout.ts";

export interface StreamOptions {
  method: string;
  path: string;
  headers?: Record<string, string | string[]> | null;
  body?: Buffer | NodeJS.ReadableStream | string | null;
  headersTimeout?: number;
  /**
   * The time left of the whole request when this attempt starts: a session still to be connected must be
   * within it (UND_ERR_HEADERS_TIMEOUT past it; the connect goes on for later streams), and the head must
   * then come within what it leaves. 0 or absent: only the connect timeout bounds the connect.
   */
  totalTimeout?: number;
  bodyTimeout?: number;
  /** Time the response may stay blocked on its target (no 'drain'): E_SEND_TIMEOUT. 0 or absent: none. */
  sendTimeout?: number;
  /**
   * Time the whole exchange may take, a streaming response included (a gRPC call's deadline), whatever
   * arrives meanwhile: the stream is then cancelled (UND_ERR_BODY_TIMEOUT once its head is in). 0 or
   * absent: none (bodyTimeout alone bounds the silences between body bytes).
   */
  callTimeout?: number;
  cancel?: CancelToken;
}

type Factory = (data: {
  statusCode: number;
  headers: Record<string, string | string[] | undefined>;
  opaque: unknown;
  /** The response is its HEADERS frame alone (END_STREAM): gRPC's trailers-only form. */
  endStream: boolean;
}) => Writable;

const FORBIDDEN = new Set([
  "host",
  "connection",
  "keep-alive",
  "proxy-connection",
  "transfer-encoding",
  "upgrade",
]);

function error(message: string, code: string): Error {
  return Object.assign(new Error(message), { code });
}

/**
 * Why a stream that was sent failed, in the codes the forwarding engine classifies: `REFUSED_STREAM` when
 * the upstream refused it — RST_STREAM with that code, or a GOAWAY below its id (RFC 9113 §8.7: never
 * processed, so safe to retry whatever the method; Node reports both as ERR_HTTP2_STREAM_ERROR) — and
 * otherwise a reset (ECONNRESET, the cause kept): the session's connection failing under a sent stream
 * keeps that connection's code (EHOSTUNREACH, a TLS record error, …), which must never read as a connect
 * failure — the request went out, and a POST resent then could run twice.
 */
function streamFailure(stream: ClientHttp2Stream, err: Error & { code?: string }): Error {
  if (stream.rstCode === http2.constants.NGHTTP2_REFUSED_STREAM)
    return error("stream refused", "REFUSED_STREAM");
  return Object.assign(error(`stream failed: ${err.message}`, "ECONNRESET"), {
    cause: err,
    ...(err.code !== undefined ? { socketCode: err.code } : {}),
  });
}

export class H2Pool {
  private readonly origin: string;
  private readonly authority: string;
  private readonly connectTimeoutMs: number;
  private readonly connectFn: ((host: string, port: number) => net.Socket) | null;
  private readonly host: string;
  private readonly port: number;
  private session: ClientHttp2Session | null = null;
  /** The TLS connection under `session` (null for h2c). */
  private sessionSocket: net.Socket | null = null;
  private readonly reusable: ((socket: net.Socket) => boolean) | null;
  private connecting: Promise<ClientHttp2Session> | null = null;
  private closed = false;
  readonly stats = { pending: 0 };

  /**
   * `connect`: opens the session's connection (a TLS socket negotiating ALPN h2); without it the session
   * is cleartext h2c. The connect timeout covers the TLS handshake: a failed handshake fails the attempt
   * before any stream was opened (a connect failure). `reusable`: whether the session's TLS connection
   * may take another stream (`connectionReusable` of runtime/upstream/tls.ts); when it may not, the
   * session is closed gracefully — its streams finish — and the next stream opens a new one.
   */
  constructor(
    host: string,
    port: number,
    connectTimeoutMs: number,
    connect?: (host: string, port: number) => net.Socket,
    reusable?: (socket: net.Socket) => boolean,
  ) {
    this.reusable = reusable ?? null;
    this.host = host;
    this.port = port;
    this.authority = `${host.includes(":") ? `[${host}]` : host}:${port}`;
    this.connectFn = connect ?? null;
    this.origin = `${connect ? "https" : "http"}://${this.authority}`;
    this.connectTimeoutMs = connectTimeoutMs;
  }

  /** The session new streams may use now, or null (a session that may not be reused is closed). */
  private live(): ClientHttp2Session | null {
    const session = this.session;
    if (session && !session.closed && !session.destroyed) {
      const socket = this.sessionSocket;
      if (socket === null || this.reusable === null || this.reusable(socket)) return session;
      this.session = null;
      session.close();
    }
    return null;
  }

  private connect(): Promise<ClientHttp2Session> {
    const session = this.live();
    if (session) return Promise.resolve(session);
    if (this.connecting) return this.connecting;
    const connecting = this.connectFn
      ? this.secureSocket().then((socket) => this.startSession(socket))
      : this.plainSocket().then((socket) => this.startSession(socket));
    this.connecting = connecting;
    connecting.then(
      () => {
        if (this.connecting === connecting) this.connecting = null;
      },
      () => {
        if (this.connecting === connecting) this.connecting = null;
      },
    );
    return connecting;
  }

  /**
   * The connect timer (`connectTimeoutMs`); none for 0, which leaves the connect to the system's own
   * timeout, as an HTTP/1.1 pool (a socket timeout of 0) and the sidecar's tunnels do.
   */
  private connectTimer(onTimeout: () => void): NodeJS.Timeout | undefined {
    return this.connectTimeoutMs > 0 ? setTimeout(onTimeout, this.connectTimeoutMs) : undefined;
  }

  /**
   * `socket` once it is established ('connect' for h2c, 'secureConnect' for TLS), within the connect
   * timeout; the session starts only then — Node's http2 session destroyed while its socket still
   * connects emits neither 'error' nor 'close', so a connect timeout on the session would leave the
   * attempt waiting for good.
   */
  private established(socket: net.Socket, ready: "connect" | "secureConnect"): Promise<net.Socket> {
    return new Promise((resolve, reject) => {
      const timer = this.connectTimer(() =>
        socket.destroy(error("connect timeout", "UND_ERR_CONNECT_TIMEOUT")),
      );
      const onError = (err: Error) => {
        clearTimeout(timer);
        socket.destroy();
        reject(err);
      };
      socket.once("error", onError);
      socket.once(ready, () => {
        clearTimeout(timer);
        socket.off("error", onError);
        resolve(socket);
      });
    });
  }

  /** The TCP connection of an h2c session. */
  private plainSocket(): Promise<net.Socket> {
    return this.established(net.connect({ host: this.host, port: this.port, noDelay: true }), "connect");
  }

  /**
   * The TLS connection of an mTLS session, established (handshake done, the server's SPIFFE ID verified)
   * before the session starts, so that a failed handshake, or a server that did not select h2, fails the
   * attempt as a connect failure with nothing sent.
   */
  private async secureSocket(): Promise<net.Socket> {
    const socket = await this.established(this.connectFn!(this.host, this.port), "secureConnect");
    const alpn = (socket as net.Socket & { alpnProtocol?: string | false }).alpnProtocol;
    if (alpn !== "h2") {
      socket.destroy();
      throw error(`the server did not select ALPN h2 (${String(alpn)})`, "ERR_TLS_ALPN_NOT_H2");
    }
    return socket;
  }

  /** Starts a session over an established connection (TCP for h2c, TLS for mTLS). */
  private startSession(socket: net.Socket): Promise<ClientHttp2Session> {
    return new Promise<ClientHttp2Session>((resolve, reject) => {
      // Small frames go out at once (no Nagle delay).
      socket.setNoDelay(true);
      const s = http2.connect(this.origin, {
        settings: { enablePush: false },
        createConnection: () => socket,
      });
      const timer = this.connectTimer(() => s.destroy(error("connect timeout", "UND_ERR_CONNECT_TIMEOUT")));
      s.once("connect", () => {
        clearTimeout(timer);
        this.session = s;
        this.sessionSocket = this.connectFn ? socket : null;
        resolve(s);
      });
      s.once("error", (err) => {
        clearTimeout(timer);
        if (this.session === s) this.session = null;
        reject(err);
      });
      const forget = () => {
        if (this.session === s) this.session = null;
      };
      s.on("goaway", forget);
      s.on("close", forget);
    });
  }

  /**
   * The session for a new stream — the live one, or one connected within the request's total timeout
   * (with a connect timeout of 0, the system's own, or a longer one the request still ends at its
   * route's timeout) and before the caller cancels (UND_ERR_ABORTED: a client that left) — and the head
   * time left: the headers timeout, at most what the connect left. The connect itself goes on for later
   * streams either way.
   */
  private async sessionFor(opts: StreamOptions): Promise<{ session: ClientHttp2Session; headMs: number }> {
    const h = opts.headersTimeout ?? 0;
    const live = this.live();
    if (live) return { session: live, headMs: h };
    const t = opts.totalTimeout ?? 0;
    const cancel = opts.cancel ?? null;
    if (cancel?.aborted) throw error("request aborted", "UND_ERR_ABORTED");
    const startedAt = performance.now();
    this.stats.pending++;
    let timer: NodeJS.Timeout | undefined;
    try {
      const session = await new Promise<ClientHttp2Session>((resolve, reject) => {
        if (t > 0) timer = setTimeout(() => reject(connectPastTotal()), t);
        if (cancel) cancel.onabort = () => reject(error("request aborted", "UND_ERR_ABORTED"));
        this.connect().then(resolve, reject);
      });
      return { session, headMs: headTimeAfterConnect(h, t, performance.now() - startedAt) };
    } finally {
      clearTimeout(timer);
      if (cancel) cancel.onabort = null;
      this.stats.pending--;
    }
  }

  private async open(
    opts: StreamOptions,
  ): Promise<{ stream: ClientHttp2Stream; headMs: number; eof: EofWatch }> {
    const { session, headMs } = await this.sessionFor(opts);
    const headers: http2.OutgoingHttpHeaders = {
      ":method": opts.method,
      ":path": opts.path,
      ":authority": this.authority,
    };
    for (const [name, value] of Object.entries(opts.headers ?? {})) {
      if (name === "host") headers[":authority"] = Array.isArray(value) ? value[0]! : value;
      else if (!FORBIDDEN.has(name)) headers[name] = value;
    }
    const body = opts.body ?? null;
    const stream = session.request(headers, { endStream: body === null });
    const eof = watchEof(stream);
    // A retired pool still serves a late stream (a retry of a request that began before the reload) on a
    // session of its own, closed gracefully once the stream ends.
    if (this.closed) stream.once("close", () => session.close());
    if (body !== null) {
      if (typeof body === "string" || Buffer.isBuffer(body)) stream.end(body);
      else (body as NodeJS.ReadableStream).pipe(stream);
    }
    return { stream, headMs, eof };
  }

  /** Streams the response into the writable the factory returns; resolves with the trailers. */
  async stream(opts: StreamOptions, factory: Factory): Promise<{ trailers: IncomingHttpHeaders }> {
    // A streamed body can fail (over the body limit, the client gone) while the session connects or while
    // it is sent: that error is this request's — forward() answers 413 or counts the client's abort — and
    // the upstream's stream is reset, so the part already sent is never taken for a whole body. (Unheard,
    // the error would be thrown from the body's own event and end the process.)
    const body = opts.body;
    const source = body != null && typeof body !== "string" && !Buffer.isBuffer(body) ? body : null;
    let bodyFailed: Error | null = null;
    let onBodyError: ((err: Error) => void) | null = null;
    if (source !== null)
      source.on("error", (err: Error) => {
        bodyFailed ??= err;
        onBodyError?.(err);
      });
    const { stream, headMs, eof } = await this.open(opts);
    if (bodyFailed !== null) {
      stream.close(http2.constants.NGHTTP2_CANCEL);
      throw bodyFailed;
    }
    const cancel = opts.cancel;
    if (cancel) {
      if (cancel.aborted) stream.close(http2.constants.NGHTTP2_CANCEL);
      else cancel.onabort = () => stream.close(http2.constants.NGHTTP2_CANCEL);
      stream.once("close", () => {
        cancel.onabort = null;
      });
    }
    return new Promise((resolve, reject) => {
      let out: Writable | null = null;
      let trailers: IncomingHttpHeaders = {};
      const headersTimer = headMs
        ? setTimeout(() => stream.close(http2.constants.NGHTTP2_CANCEL), headMs)
        : null;
      let timedOut = false;
      if (headersTimer) headersTimer.unref();
      const callTimer = opts.callTimeout
        ? setTimeout(() => {
            timedOut = true;
            stream.close(http2.constants.NGHTTP2_CANCEL);
          }, opts.callTimeout)
        : null;
      if (opts.bodyTimeout)
        stream.setTimeout(opts.bodyTimeout, () => {
          timedOut = true;
          stream.close(http2.constants.NGHTTP2_CANCEL);
        });
      /** The response was refused (or its head could not be handed on): the stream is cancelled. */
      let failure: Error | null = null;
      const fail = (err: Error) => {
        failure = err;
        stream.close(http2.constants.NGHTTP2_CANCEL);
        stream.resume(); // body bytes already received are dropped: the stream can then close
        reject(err);
      };
      let completed = false;
      /** The target refused a write and has not drained since. */
      let blocked = false;
      /** Armed while blocked (opts.sendTimeout): the client stopped reading. */
      let sendTimer: NodeJS.Timeout | null = null;
      const sendTimeout = opts.sendTimeout ?? 0;
      const onSendTimeout = () => {
        sendTimer = null;
        if (!completed && failure === null) fail(sendTimeoutError());
      };
      stream.once("response", (h, flags) => {
        if (headersTimer) clearTimeout(headersTimer);
        const status = Number(h[":status"]);
        // nghttp2 takes any three digits; status codes are 100–599 (RFC 9110 §15) and interim ones never
        // come here. A 6xx–9xx is malformed as in H1Pool — an HTTP/2 downstream cannot even send one.
        if (!(status >= 200 && status <= 599))
          return fail(error(`malformed upstream response: status ${h[":status"]}`, "UND_ERR_RESPONSE"));
        const rest: Record<string, string | string[] | undefined> = {};
        for (const [k, v] of Object.entries(h))
          if (k.charCodeAt(0) !== 58) rest[k] = v as string | string[] | undefined;
        const endStream = (flags & http2.constants.NGHTTP2_FLAG_END_STREAM) !== 0;
        // This runs in the session's event, not under the caller's promise: a throw here (the caller's
        // writeHead refusing the head) would be an uncaught exception that ends the process.
        try {
          out = factory({ statusCode: status, headers: rest, opaque: null, endStream });
        } catch (err) {
          return fail(err as Error);
        }
        stream.on("data", (chunk: Buffer) => {
          if (!out!.write(chunk) && !blocked) {
            blocked = true;
            stream.pause();
            // Armed only on backpressure, never per write.
            if (sendTimeout > 0) sendTimer = setTimeout(onSendTimeout, sendTimeout);
            out!.once("drain", () => {
              blocked = false;
              if (sendTimer !== null) clearTimeout(sendTimer);
              sendTimer = null;
              stream.resume();
            });
          }
        });
      });
      stream.on("trailers", (t) => {
        trailers = t;
      });
      onBodyError = (err) => {
        if (!completed && failure === null) fail(err);
      };
      stream.once("end", () => {
        if (headersTimer) clearTimeout(headersTimer);
        // Node ends the readable side of a stream whose session died (the upstream's connection closed
        // mid-response) as well, with a reset code: that response is truncated, never complete — the close
        // handler rejects it, and the target is not ended. A complete one was closed with NO_ERROR — and
        // ended by the upstream's END_STREAM: a RST_STREAM(NO_ERROR) before it ends the readable side too,
        // with the same code, but the response is cut (see watchEof).
        if (stream.rstCode !== http2.constants.NGHTTP2_NO_ERROR || failure !== null || eof.truncated) return;
        completed = true;
        const rest: Record<string, string> = {};
        for (const [k, v] of Object.entries(trailers))
          if (k.charCodeAt(0) !== 58 && v !== undefined) rest[k] = String(v);
        const target = out as (Writable & { addTrailers?: (t: Record<string, string>) => void }) | null;
        if (target && Object.keys(rest).length && typeof target.addTrailers === "function")
          target.addTrailers(rest);
        target?.end();
        resolve({ trailers });
      });
      stream.once("close", () => {
        if (headersTimer) clearTimeout(headersTimer);
        if (callTimer) clearTimeout(callTimer);
        if (sendTimer !== null) clearTimeout(sendTimer);
        const code = stream.rstCode;
        if (completed || failure !== null) return;
        const e =
          headersTimer && out === null && code === http2.constants.NGHTTP2_CANCEL
            ? error("headers timeout", "UND_ERR_HEADERS_TIMEOUT")
            : timedOut
              ? error("body timeout", "UND_ERR_BODY_TIMEOUT")
              : code === http2.constants.NGHTTP2_REFUSED_STREAM
                ? error("stream refused", "REFUSED_STREAM")
                : error(`stream reset (${code})`, "ECONNRESET");
        reject(e);
      });
      stream.once("error", (err) => reject(streamFailure(stream, err)));
    });
  }

  /**
   * A whole exchange whose body is discarded (health checks, mirrored copies), as H1Pool's: it settles
   * once the response ended, under the same timeouts as stream() — the head's, and the body's between
   * DATA frames — so a response whose body never ends fails, instead of holding its stream (and the
   * caller's counters) for as long as the upstream keeps it open.
   */
  async request(opts: StreamOptions): Promise<{ statusCode: number; body: { dump(): Promise<void> } }> {
    let statusCode = 0;
    await this.stream(opts, (d) => {
      statusCode = d.statusCode;
      return new Discard();
    });
    return { statusCode, body: { dump: () => Promise.resolve() } };
  }

  /**
   * Retires the pool (a reload left no cluster using it, or its settings changed): the session closes
   * gracefully — its streams finish — and a stream that still reaches the pool gets a session that closes
   * after it (open), so nothing fails for the reload and nothing stays open.
   */
  async close(): Promise<void> {
    this.closed = true;
    const s = this.session;
    this.session = null;
    if (s && !s.closed) await new Promise<void>((r) => s.close(() => r()));
  }
}

/** Whether a stream's readable side ended without the upstream's END_STREAM. */
interface EofWatch {
  readonly truncated: boolean;
}

/**
 * Tells a stream the upstream ended (END_STREAM: on DATA, on the response's HEADERS, on trailers) from one
 * it reset with RST_STREAM(NO_ERROR) before ending it — which Node reports alike: 'end', then 'close' with
 * rstCode 0. Node's http2 core pushes the readable side's EOF on END_STREAM while the stream is still
 * open (onStreamRead → push(null)), and closes the stream only afterwards; on RST_STREAM (or any close
 * before END_STREAM) onStreamClose first marks the stream closed (closeStream), then pushes EOF. So a
 * stream already closed when its first EOF is pushed was cut: `truncated`. Installed on the instance,
 * before any frame of the stream can be read.
 */
function watchEof(stream: ClientHttp2Stream): EofWatch {
  const watch = { truncated: false };
  const push = stream.push;
  let seen = false;
  stream.push = function (chunk: unknown, encoding?: BufferEncoding): boolean {
    if (chunk === null && !seen) {
      seen = true;
      watch.truncated = stream.closed;
    }
    return push.call(this, chunk, encoding);
  };
  return watch;
}

/**
 * Answers an HTTP/2 downstream with a trailers-only response (one HEADERS frame with END_STREAM) when
 * the upstream's response was one — what gRPC clients require of a status-only answer (a status in
 * headers followed by an empty DATA frame is "a call ended without gRPC status" to them). Returns the
 * writable for the (empty) rest, or null when `res` is not an HTTP/2 response that can still do it.
 */
export function respondTrailersOnly(
  res: unknown,
  status: number,
  headers: Record<string, string | string[] | undefined>,
): Writable | null {
  const stream = (res as { stream?: ServerHttp2Stream }).stream;
  if (stream === undefined || stream.headersSent || stream.destroyed) return null;
  const out: http2.OutgoingHttpHeaders = { ":status": status };
  for (const k in headers) if (headers[k] !== undefined) out[k] = headers[k];
  stream.respond(out, { endStream: true });
  return new Discard();
}
