/**
 * The sidecar's inbound listener: HTTP/1.1 over TLS 1.3 with a required client certificate (OpenSSL
 * refuses a handshake without one, or with one that does not chain to the trust bundle, before any
 * parsing), then the SPIFFE rules by the SVID verifier on each new connection. In permissive mode the
 * same port also accepts plaintext HTTP: the first byte decides (0x16 starts a TLS ClientHello).
 *
 * The certificate is swapped on the live server (`setSecureContext`) when the identity changes: new
 * handshakes use the new SVID and bundle, established connections keep theirs.
 */
import http, { type IncomingMessage, type ServerResponse } from "node:http";
import https from "node:https";
import net, { type Socket } from "node:net";
import { Duplex } from "node:stream";
import type tls from "node:tls";
import type { TLSSocket } from "node:tls";

/** A TLS record of type handshake: how every ClientHello starts. */
const TLS_HANDSHAKE = 0x16;

export interface InboundListenerOptions {
  readonly mode: "strict" | "permissive";
  readonly maxHeaderBytes: number;
  readonly headerTimeoutMs: number;
  /** The identity's server options (cert, key, ca); null before one is loaded (handshakes then fail). */
  readonly identity: tls.SecureContextOptions | null;
  /** Close keep-alive connections after this many requests (0 = never). */
  readonly maxRequestsPerSocket?: number;
  readonly onRequest: (req: IncomingMessage, res: ServerResponse, mtls: boolean) => void;
  /** A handshake completed: verify the peer (destroy the socket to refuse it). Runs before any request. */
  readonly onSecureConnection: (socket: TLSSocket) => void;
  /** A handshake failed (no certificate, untrusted chain, protocol, timeout). */
  readonly onTlsError: (err: Error & { code?: string }) => void;
  /** A request could not be parsed (431, 408, 400 are answered here). */
  readonly onClientError: (err: Error & { code?: string }, socket: Socket) => void;
}

export interface InboundListener {
  /** The server to listen on. */
  readonly server: net.Server;
  readonly tls: https.Server;
  readonly plain: http.Server | null;
  /** Serves a new identity to new handshakes. */
  setIdentity(options: tls.SecureContextOptions): void;
  closeIdle(): void;
  closeAll(): void;
}

export function createInboundListener(o: InboundListenerOptions): InboundListener {
  const httpOptions: http.ServerOptions = {
    maxHeaderSize: o.maxHeaderBytes,
    headersTimeout: o.headerTimeoutMs,
    // Node checks header and request timeouts on this interval (default 30 s): check often enough that
    // the header timeout holds within a fraction of itself.
    connectionsCheckingInterval: Math.max(100, Math.min(1000, Math.floor(o.headerTimeoutMs / 4))),
    // The whole request (head and body) within 5 minutes, as Node's default; the callers' own timeouts
    // are shorter and end the exchange first.
    requestTimeout: 300_000,
    requireHostHeader: true,
    joinDuplicateHeaders: false,
    insecureHTTPParser: false,
    noDelay: true,
  };
  const tlsOptions: https.ServerOptions = {
    ...(o.identity ?? {}),
    minVersion: "TLSv1.3",
    requestCert: true,
    rejectUnauthorized: true,
    ALPNProtocols: ["http/1.1"],
    handshakeTimeout: o.headerTimeoutMs,
  };
  const secure = https.createServer({ ...httpOptions, ...tlsOptions }, (req, res) =>
    o.onRequest(req, res, true),
  );
  secure.prependListener("secureConnection", (socket: TLSSocket) => o.onSecureConnection(socket));
  secure.on("tlsClientError", (err: Error & { code?: string }, socket: TLSSocket) => {
    o.onTlsError(err);
    socket.destroy();
  });
  secure.on("clientError", (err: Error & { code?: string }, socket: Socket) => o.onClientError(err, socket));
  if (o.maxRequestsPerSocket) secure.maxRequestsPerSocket = o.maxRequestsPerSocket;

  if (o.mode === "strict") {
    return {
      server: secure,
      tls: secure,
      plain: null,
      setIdentity: (options) => secure.setSecureContext({ ...options, minVersion: "TLSv1.3" }),
      closeIdle: () => secure.closeIdleConnections(),
      closeAll: () => secure.closeAllConnections(),
    };
  }

  // Permissive: plaintext HTTP on the same port, told apart by the first byte.
  const plain = http.createServer(httpOptions, (req, res) => o.onRequest(req, res, false));
  plain.on("clientError", (err: Error & { code?: string }, socket: Socket) => o.onClientError(err, socket));
  const front = net.createServer({ noDelay: true }, (socket) => {
    const timer = setTimeout(() => socket.destroy(), o.headerTimeoutMs);
    socket.once("data", (first: Buffer) => {
      clearTimeout(timer);
      socket.pause();
      if (first[0] === TLS_HANDSHAKE) {
        // A TLS socket reads the native handle, which would skip bytes put back with unshift: give it
        // a stream that replays the first chunk, then relays the socket.
        secure.emit("connection", replaying(socket, first));
      } else {
        socket.unshift(first);
        plain.emit("connection", socket);
      }
      socket.resume();
    });
    socket.on("error", () => socket.destroy());
  });
  return {
    server: front,
    tls: secure,
    plain,
    setIdentity: (options) => secure.setSecureContext({ ...options, minVersion: "TLSv1.3" }),
    closeIdle: () => {
      secure.closeIdleConnections();
      plain.closeIdleConnections();
    },
    closeAll: () => {
      secure.closeAllConnections();
      plain.closeAllConnections();
    },
  };
}

/** A duplex over `socket` that first yields `head` (bytes already read), carrying the peer address. */
function replaying(socket: Socket, head: Buffer): Duplex {
  const d = new Duplex({
    read() {
      socket.resume();
    },
    write(chunk: Buffer, _enc, cb) {
      socket.write(chunk, cb);
    },
    final(cb) {
      socket.end();
      cb();
    },
    destroy(err, cb) {
      socket.destroy(err ?? undefined);
      cb(err);
    },
  });
  d.push(head);
  socket.on("data", (chunk: Buffer) => {
    if (!d.push(chunk)) socket.pause();
  });
  socket.on("end", () => d.push(null));
  socket.on("close", () => d.destroy());
  socket.on("error", (err) => d.destroy(err));
  Object.defineProperties(d, {
    remoteAddress: { value: socket.remoteAddress },
    remotePort: { value: socket.remotePort },
    remoteFamily: { value: socket.remoteFamily },
    setTimeout: { value: (ms: number, cb?: () => void) => socket.setTimeout(ms, cb) },
    setNoDelay: { value: (v?: boolean) => socket.setNoDelay(v) },
    setKeepAlive: { value: (e?: boolean, d?: number) => socket.setKeepAlive(e, d) },
  });
  return d;
}
