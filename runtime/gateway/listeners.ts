/**
 * Listeners: plain HTTP/1.1; HTTP/1.1 with cleartext HTTP/2 on the same port (h2c with prior knowledge:
 * the first bytes are sniffed for the HTTP/2 preface and the socket handed to the right server); and
 * TLS with SNI (a certificate per host set, wildcards allowed; the first one for a client that names no
 * host or one no certificate lists) and ALPN offering h2 and http/1.1.
 *
 * Certificates are read at config load and at every reload; the SNI callback reads the current set, so
 * a reload rotates certificates on a live listener without dropping connections.
 *
 * With `proxyProtocol`, every mode gets a front that reads the PROXY header first (bounded by the header
 * timeout), closes a connection without a valid one, and gives the servers behind it the socket with the
 * client's address as its remote address — what rate limits, X-Forwarded-For and logs use.
 *
 * None of these servers listens: a listener's port is bound by an acceptor (runtime/net/acceptor.ts) that
 * hands each connection to the listener's current stack, so a reload that changes how the port serves
 * builds a new stack and swaps it in without closing the socket.
 */
import { randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import http, { type IncomingMessage, type ServerResponse } from "node:http";
import http2, { type Http2ServerRequest, type Http2ServerResponse } from "node:http2";
import https from "node:https";
import net, { type Socket } from "node:net";
import tls, { type SecureContext, type TLSSocket } from "node:tls";
import type { Duplex } from "node:stream";
import { markHandshakeClientCas } from "../auth/clientcert.ts";
import { inRanges, parseCidr, type IpRange } from "../decide/authorize.ts";
import { parseProxyHeader, type ProxiedSource } from "../net/proxy-protocol.ts";
import { replaying, sniffPreface } from "../net/sniff.ts";
import { writeLocalReply, type ReplyResponse } from "../net/reply.ts";
import type { GatewayErrorCode } from "./errors.ts";
import type { GatewayRuntimeConfig } from "../contract/schema.ts";
import { fronting, H2_MAX_CONCURRENT_STREAMS, retireServers, type ConnectionStack } from "../net/acceptor.ts";

type ListenerConfig = GatewayRuntimeConfig["listeners"][number];
type Limits = GatewayRuntimeConfig["limits"];

export type AnyRequest = IncomingMessage | Http2ServerRequest;
export type AnyResponse = ServerResponse | Http2ServerResponse;
export type Handler = (req: AnyRequest, res: AnyResponse, scheme: "http" | "https") => void;

/** What emits the HTTP/1.1 upgrade requests of a listener. */
export interface UpgradeSource {
  on(event: "upgrade", listener: (req: IncomingMessage, socket: Socket, head: Buffer) => void): unknown;
}

export interface CertificateSet {
  /** The context for a server name (exact host, then the longest wildcard, then the first certificate). */
  contextFor(serverName: string): SecureContext;
  /**
   * The fingerprints of the client CAs these contexts verify client certificates against (null: none asked
   * for), put on each connection at its handshake (runtime/auth/clientcert.ts markHandshakeClientCas).
   */
  readonly clientCas: ReadonlySet<string> | null;
  /**
   * What the default context is made of (the first certificate, its key, the client CAs): a client that
   * sends no server name (one that connects by IP address) gets no SNI callback, so the TLS server's own
   * context serves it — set from these (tls.Server#setSecureContext) when the set changes.
   */
  readonly defaultOptions: tls.SecureContextOptions;
}

/**
 * Loads a listener's certificates into secure contexts (throws with the file name when one is unreadable).
 * `clientCa`: the CA certificates client certificates are verified against (runtime/auth/clientcert.ts);
 * `clientCas`: their fingerprints, the mark each connection gets (one set shared by every listener).
 */
export function loadCertificates(
  l: ListenerConfig,
  clientCa: readonly string[] | null,
  clientCas: ReadonlySet<string> | null,
): CertificateSet {
  if (!l.tls) throw new Error(`listener ${l.name}: https without tls`);
  const entries = l.tls.certificates.map((c) => {
    let cert: Buffer;
    let key: Buffer;
    try {
      cert = readFileSync(c.certFile);
      key = readFileSync(c.keyFile);
    } catch (err) {
      throw new Error(
        `listener ${l.name}: cannot read certificate ${c.certFile} / key ${c.keyFile} (${(err as Error).message})`,
        { cause: err },
      );
    }
    const options: tls.SecureContextOptions = {
      cert,
      key,
      minVersion: l.tls!.minVersion,
      ...(clientCa ? { ca: [...clientCa] } : {}),
    };
    return { hosts: c.hosts, options, context: tls.createSecureContext(options) };
  });
  const exact = new Map<string, SecureContext>();
  const wildcard: [string, SecureContext][] = [];
  for (const e of entries) {
    for (const h of e.hosts) {
      if (h.startsWith("*.")) wildcard.push([h.slice(1), e.context]);
      else if (!exact.has(h)) exact.set(h, e.context);
    }
  }
  wildcard.sort((a, b) => b[0].length - a[0].length);
  const fallback = entries[0]!.context;
  return {
    clientCas,
    defaultOptions: entries[0]!.options,
    contextFor(serverName: string): SecureContext {
      const name = serverName.toLowerCase();
      const hit = exact.get(name);
      if (hit) return hit;
      for (const [suffix, ctx] of wildcard)
        if (name.endsWith(suffix) && name.length > suffix.length) return ctx;
      return fallback;
    },
  };
}

/**
 * The servers behind one listener's port, built per config (runtime/net/acceptor.ts): a reload that
 * changes how the port serves builds a new one and the listener's acceptor hands it the new connections.
 */
export interface ListenerStack extends ConnectionStack {
  readonly name: string;
  /**
   * The server HTTP/1.1 requests arrive on, for its `upgrade` events (WebSocket): the HTTP/1 server, or the
   * HTTP/2 TLS server, which serves HTTP/1.1 clients (allowHTTP1) with Node's HTTP/1 machinery and emits
   * their upgrades itself.
   */
  readonly http1: UpgradeSource | null;
  /**
   * https: new session-ticket keys, so that no TLS session made before is resumed — a resumed session
   * keeps the client-certificate verdict of its first handshake, which the client CAs of now may no
   * longer give (called when they change).
   */
  readonly rotateTicketKeys?: () => void;
}

/** Gives a socket (or the stream a server reads) the client's address a PROXY header named. */
function stamp(s: Socket | Duplex, source: ProxiedSource): void {
  Object.defineProperties(s, {
    remoteAddress: { value: source.address, configurable: true },
    remotePort: { value: source.port, configurable: true },
    remoteFamily: { value: source.family, configurable: true },
  });
}

/**
 * A front that reads each connection's PROXY header, then hands the socket (paused), the bytes read past
 * the header and the header's source to `next`. A connection whose first bytes are not a valid header,
 * or whose header does not arrive within the header timeout, is closed; `onInvalid` hears why.
 */
function proxyProtocolFront(
  l: ListenerConfig,
  limits: Limits,
  next: (socket: Socket, rest: Buffer, source: ProxiedSource | null, timer: NodeJS.Timeout) => void,
  onInvalid: (reason: string) => void,
): net.Server {
  // The load balancers a header is taken from (validated CIDRs: the spec refuses others).
  const from: IpRange[] | null = l.proxyProtocolSources
    ? l.proxyProtocolSources.flatMap((c) => parseCidr(c) ?? [])
    : null;
  return net.createServer({ noDelay: true }, (socket) => {
    if (from !== null && !inRanges(from, socket.remoteAddress ?? "")) {
      onInvalid("the connection does not come from a proxyProtocolSources address");
      socket.destroy();
      return;
    }
    const timer = setTimeout(() => socket.destroy(), limits.headerTimeoutMs);
    socket.on("error", () => socket.destroy());
    let seen: Buffer = Buffer.alloc(0);
    const onData = (chunk: Buffer) => {
      seen = seen.length === 0 ? chunk : Buffer.concat([seen, chunk]);
      const h = parseProxyHeader(seen);
      if (h.kind === "incomplete") return;
      socket.off("data", onData);
      socket.pause();
      if (h.kind === "invalid") {
        clearTimeout(timer);
        onInvalid(h.reason);
        socket.destroy();
        return;
      }
      next(socket, seen.subarray(h.length), h.source, timer);
    };
    socket.on("data", onData);
  });
}

/**
 * The TLS server reads a PROXY connection through a stream that replays the bytes read past the header
 * (TLS reads a socket's native handle, so unshifted bytes would be lost); that stream carries the client's
 * address, and the TLS socket gets it once the handshake is done. Node keeps the stream a TLS socket wraps
 * at `_handle._parentWrap.stream` (internal, stable since Node 8): when that changes, PROXY connections
 * over TLS are closed with an error logged, never served with the load balancer's address.
 */
function proxiedTls(server: tls.Server, onInvalid: (reason: string) => void) {
  const sources = new WeakMap<Duplex, ProxiedSource>();
  server.prependListener("secureConnection", (s: tls.TLSSocket) => {
    const inner = (s as unknown as { _handle?: { _parentWrap?: { stream?: Duplex } } })._handle?._parentWrap
      ?.stream;
    if (inner === undefined) {
      onInvalid("the TLS socket's stream is not reachable (Node internals changed): connection closed");
      s.destroy();
      return;
    }
    const source = sources.get(inner);
    if (source !== undefined) stamp(s, source);
  });
  return (socket: Socket, rest: Buffer, source: ProxiedSource | null, timer: NodeJS.Timeout) => {
    clearTimeout(timer); // the TLS server's handshake timeout takes over
    const stream = replaying(socket, rest);
    // A TLS socket over a stream knows no address: give it the connection's own when the header names none.
    sources.set(
      stream,
      source ?? {
        address: socket.remoteAddress ?? "",
        port: socket.remotePort ?? 0,
        family: socket.remoteFamily === "IPv6" ? "IPv6" : "IPv4",
      },
    );
    server.emit("connection", stream);
  };
}

/** The answer to an HTTP/2 request whose body is late (runtime/gateway/errors.ts). */
const REQUEST_TIMEOUT = Object.freeze({
  status: 408,
  code: "request_timeout" satisfies GatewayErrorCode,
  message: "the request body did not arrive within the request timeout",
});

/**
 * HTTP/2 requests get the request timeout Node gives HTTP/1.1 ones (limits.requestTimeout: the whole
 * request, its body included) — nghttp2 has none, and the session's idle timeout does not end a session
 * with a stream open: a body trickled a byte at a time held its stream, its upstream request and a drain
 * for as long as the route's timeout allowed. A request whose body has not ended in time is answered 408 (a reset when its
 * response has begun) and the client is told to stop sending (RST_STREAM NO_ERROR, RFC 9113 §8.1).
 * Requests without a body are never tracked; the others are checked on the interval Node checks HTTP/1.1
 * timeouts on, so no timer is made per request. Returns what to call with each HTTP/2 response.
 */
function h2RequestTimeouts(timeoutMs: number, intervalMs: number): (res: Http2ServerResponse) => void {
  if (timeoutMs <= 0) return () => {}; // none, as Node reads 0 for HTTP/1.1 (the spec refuses it)
  // The responses whose request is still being received, with when it started (insertion order).
  const receiving = new Map<Http2ServerResponse, number>();
  let sweeper: NodeJS.Timeout | null = null;
  function forget(this: Http2ServerResponse): void {
    receiving.delete(this);
  }
  const sweep = () => {
    const now = performance.now();
    for (const [res, since] of receiving) {
      const stream = res.stream;
      if (stream.destroyed || stream.closed || stream.state.remoteClose) {
        receiving.delete(res); // the body ended (or the stream is gone)
        continue;
      }
      if (now - since < timeoutMs) continue;
      receiving.delete(res);
      if (res.headersSent) {
        stream.close(http2.constants.NGHTTP2_CANCEL);
        continue;
      }
      // A gRPC call gets it in its form (trailers-only, grpc-status from 408) like every local reply.
      writeLocalReply(res.req, res as unknown as ReplyResponse, REQUEST_TIMEOUT, true, false);
      stream.close(http2.constants.NGHTTP2_NO_ERROR);
    }
    if (receiving.size === 0 && sweeper !== null) {
      clearInterval(sweeper);
      sweeper = null;
    }
  };
  return (res) => {
    if (res.stream.endAfterHeaders) return;
    receiving.set(res, performance.now());
    res.once("close", forget);
    sweeper ??= setInterval(sweep, intervalMs).unref();
  };
}

/** Marks a handshake whose client CAs are not known: its chain must anchor in the CAs of now. */
const UNKNOWN_CLIENT_CAS: ReadonlySet<string> = new Set([
  "(not a fingerprint: the handshake's CAs are not known)",
]);

/**
 * A client that sends no server name (one connecting by IP address, a load balancer's health check) gets no
 * SNI callback: the TLS server's own context serves it. That context follows the listener's certificates —
 * the first certificate, as for a name no certificate lists — set again whenever they change. Its handshake
 * is marked with the client CAs of the set it was served with (markHandshakeClientCas), as the SNI callback
 * marks the others.
 */
function defaultContextFollows(
  server: tls.Server,
  certs: () => CertificateSet,
  requestClientCerts: boolean,
): void {
  let serving: CertificateSet | null = null;
  // The set each connection was handed with (for the mark): only when client certificates are asked for.
  const setOf = requestClientCerts ? new WeakMap<object, CertificateSet>() : null;
  server.prependListener("connection", (connection: Duplex) => {
    let set: CertificateSet;
    try {
      set = certs();
    } catch {
      return; // none loaded: the handshake fails, as the SNI callback's does
    }
    if (set !== serving) {
      // The session-ticket keys stay (new ones only when the client CAs change: rotateTicketKeys).
      server.setSecureContext({ ...set.defaultOptions, ticketKeys: server.getTicketKeys() });
      serving = set;
    }
    setOf?.set(connection, set);
  });
  if (setOf === null) return;
  server.prependListener("secureConnection", (s: TLSSocket) => {
    if (s.servername) return; // the SNI callback marked it
    // The connection the TLS socket reads: the socket, or the stream a PROXY front hands over.
    const inner = s as unknown as { _parent?: object; _handle?: { _parentWrap?: { stream?: object } } };
    const set =
      (inner._parent && setOf.get(inner._parent)) ??
      (inner._handle?._parentWrap?.stream && setOf.get(inner._handle._parentWrap.stream));
    if (!set) markHandshakeClientCas(s, UNKNOWN_CLIENT_CAS);
    else if (set.clientCas !== null) markHandshakeClientCas(s, set.clientCas);
  });
}

/**
 * The stack of one listener: what serves the connections its acceptor hands over. None of its servers
 * listens; the acceptor emits `listening` on `server` when it starts serving (Node's HTTP/1 timeout checks
 * start then) and `close` when it stops.
 */
export function createListener(
  l: ListenerConfig,
  limits: Limits,
  handler: Handler,
  certificates: () => CertificateSet | null,
  onClientError: (server: http.Server, err: Error & { code?: string }, socket: Socket) => void,
  /**
   * Ask TLS clients for a certificate without refusing the handshake (routes decide: runtime/auth). Set when
   * the config at start has client-certificate providers.
   */
  requestClientCerts = false,
  /** A connection refused for its PROXY header (the reason; never the bytes). */
  onProxyRefused: (reason: string) => void = () => {},
): ListenerStack {
  const http1Options: http.ServerOptions = {
    maxHeaderSize: limits.maxHeaderBytes,
    headersTimeout: limits.headerTimeoutMs,
    requestTimeout: limits.requestTimeoutMs,
    // Node checks the header and request timeouts on this interval (30 s by default): a slow client could
    // hold a connection up to that much past its limit. A quarter of the header timeout, at most 1 s.
    connectionsCheckingInterval: Math.max(100, Math.min(1000, Math.floor(limits.headerTimeoutMs / 4))),
    keepAliveTimeout: limits.idleTimeoutMs,
    requireHostHeader: true,
    joinDuplicateHeaders: false,
    insecureHTTPParser: false,
    noDelay: true,
  };
  const h2Settings: http2.Settings = {
    maxHeaderListSize: limits.maxHeaderBytes,
    enablePush: false,
    maxConcurrentStreams: H2_MAX_CONCURRENT_STREAMS,
  };
  const h2Timed = h2RequestTimeouts(limits.requestTimeoutMs, http1Options.connectionsCheckingInterval!);
  const sessions = new Set<http2.ServerHttp2Session>();
  const trackSessions = (s: http2.Http2Server | http2.Http2SecureServer) => {
    s.on("session", (session: http2.ServerHttp2Session) => {
      sessions.add(session);
      session.setTimeout(limits.idleTimeoutMs, () => session.close());
      // Its first request head within the header timeout, as Node's HTTP/1 server wants of a new connection:
      // a session that sent no preface, or trickles its first header block, was held for the idle timeout.
      const first = setTimeout(() => session.destroy(), limits.headerTimeoutMs);
      session.once("stream", () => clearTimeout(first));
      session.on("close", () => {
        clearTimeout(first);
        sessions.delete(session);
      });
    });
  };

  if (l.protocol === "https") {
    const certs = () => {
      const c = certificates();
      if (!c) throw new Error(`listener ${l.name}: no certificates loaded`);
      return c;
    };
    const tlsOptions: tls.TlsOptions = {
      minVersion: l.tls?.minVersion ?? "TLSv1.2",
      // A handshake not done is a request head not received: the header timeout bounds it (Node's default
      // of 120 s let a client that never finished its ClientHello hold a connection that long).
      handshakeTimeout: limits.headerTimeoutMs,
      ...(requestClientCerts ? { requestCert: true, rejectUnauthorized: false } : {}),
      // Node calls it as a method of the TLS socket: the connection learns the client CAs it is verified
      // against, which a later reload may remove (the client-certificate verifier then checks again).
      SNICallback(this: TLSSocket | undefined, servername, cb) {
        try {
          const set = certs();
          if (set.clientCas !== null && this) markHandshakeClientCas(this, set.clientCas);
          cb(null, set.contextFor(servername));
        } catch (err) {
          cb(err as Error);
        }
      },
    };
    if (l.http2) {
      const server = http2.createSecureServer(
        { ...tlsOptions, allowHTTP1: true, settings: h2Settings, maxSessionMemory: 16 },
        (req, res) => {
          // HTTP/1.1 requests on this port have Node's request timeout (set below).
          if (req.httpVersionMajor === 2) h2Timed(res);
          handler(req, res, "https");
        },
      );
      trackSessions(server);
      defaultContextFollows(server, certs, requestClientCerts);
      server.setTimeout(limits.requestTimeoutMs);
      // HTTP/1.1 over this TLS port (allowHTTP1) is served by Node's HTTP/1 machinery with its own
      // timeouts (60 s for headers, 5 s keep-alive by default): give it the listener's.
      const h1Timeouts = server as unknown as {
        headersTimeout: number;
        requestTimeout: number;
        keepAliveTimeout: number;
        connectionsCheckingInterval: number;
      };
      h1Timeouts.headersTimeout = limits.headerTimeoutMs;
      h1Timeouts.keepAliveTimeout = limits.idleTimeoutMs;
      h1Timeouts.requestTimeout = limits.requestTimeoutMs;
      h1Timeouts.connectionsCheckingInterval = http1Options.connectionsCheckingInterval!;
      return {
        name: l.name,
        server: l.proxyProtocol
          ? fronting(
              proxyProtocolFront(l, limits, proxiedTls(server, onProxyRefused), onProxyRefused),
              server,
            )
          : server,
        // Without an upgrade listener here, an HTTP/1.1 WebSocket handshake over TLS would be served as a
        // plain request (its Upgrade header stripped): wss:// through the default listener would not work.
        http1: server,
        rotateTicketKeys: () => server.setTicketKeys(randomBytes(48)),
        retire: () => retireServers([server], sessions),
        closeIdle: () => sessions.forEach((s) => s.close()),
        closeAll: () => sessions.forEach((s) => s.destroy()),
      };
    }
    const server = https.createServer({ ...http1Options, ...tlsOptions }, (req, res) =>
      handler(req, res, "https"),
    );
    server.on("clientError", (err: Error & { code?: string }, socket: Socket) =>
      onClientError(server, err, socket),
    );
    // A failed TLS handshake (timed out, not TLS, no shared version) is no HTTP error: Node's https server
    // hands it to clientError, whose 400 went to a TLS socket still in its handshake — a timed-out one was
    // never written nor closed. It is closed now, as the HTTP/2 server closes it.
    server.removeAllListeners("tlsClientError");
    server.on("tlsClientError", (_err: Error, socket: Duplex) => socket.destroy());
    defaultContextFollows(server, certs, requestClientCerts);
    return {
      name: l.name,
      server: l.proxyProtocol
        ? fronting(proxyProtocolFront(l, limits, proxiedTls(server, onProxyRefused), onProxyRefused), server)
        : server,
      http1: server,
      rotateTicketKeys: () => server.setTicketKeys(randomBytes(48)),
      retire: () => retireServers([server], []),
      closeIdle: () => server.closeIdleConnections(),
      closeAll: () => server.closeAllConnections(),
    };
  }

  const h1 = http.createServer(http1Options, (req, res) => handler(req, res, "http"));
  h1.on("clientError", (err: Error & { code?: string }, socket: Socket) => onClientError(h1, err, socket));
  if (!l.http2) {
    const toH1 = (socket: Socket, rest: Buffer, source: ProxiedSource | null, timer: NodeJS.Timeout) => {
      clearTimeout(timer); // the HTTP/1 server's header timeout takes over
      if (source !== null) stamp(socket, source);
      if (rest.length > 0) socket.unshift(rest);
      h1.emit("connection", socket);
      socket.resume();
    };
    return {
      name: l.name,
      server: l.proxyProtocol ? fronting(proxyProtocolFront(l, limits, toH1, onProxyRefused), h1) : h1,
      http1: h1,
      retire: () => retireServers([h1], []),
      closeIdle: () => h1.closeIdleConnections(),
      closeAll: () => h1.closeAllConnections(),
    };
  }

  // HTTP/1.1 and h2c on one port: read until the first bytes decide, then hand the socket over.
  const h2 = http2.createServer({ settings: h2Settings }, (req, res) => {
    h2Timed(res);
    handler(req, res, "http");
  });
  trackSessions(h2);
  const front = l.proxyProtocol
    ? proxyProtocolFront(
        l,
        limits,
        (socket, rest, source, timer) => {
          if (source !== null) stamp(socket, source);
          socket.resume();
          sniffPreface(socket, rest, timer, h1, h2);
        },
        onProxyRefused,
      )
    : net.createServer({ noDelay: true }, (socket) => {
        const timer = setTimeout(() => socket.destroy(), limits.headerTimeoutMs);
        sniffPreface(socket, Buffer.alloc(0), timer, h1, h2);
        socket.on("error", () => socket.destroy());
      });
  return {
    name: l.name,
    server: fronting(front, h1),
    http1: h1,
    retire: () => retireServers([h1], sessions),
    closeIdle: () => {
      h1.closeIdleConnections();
      sessions.forEach((s) => s.close());
    },
    closeAll: () => {
      h1.closeAllConnections();
      sessions.forEach((s) => s.destroy());
    },
  };
}
