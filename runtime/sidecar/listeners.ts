/**
 * The sidecar's inbound listener: HTTP/1.1 and HTTP/2 (ALPN `h2`, `http/1.1`) over TLS 1.3 with a
 * required client certificate (OpenSSL refuses a handshake without one, or with one that does not chain
 * to the trust bundle, before any parsing), then the SPIFFE rules by the SVID verifier on each new
 * connection, before the connection goes to the HTTP/1 or the HTTP/2 server by the negotiated protocol.
 * In permissive mode the same port also accepts plaintext HTTP/1.1 and h2c with prior knowledge: the
 * first bytes decide (0x16 starts a TLS ClientHello, `PRI * HTTP/2.0` the HTTP/2 preface).
 *
 * The certificate is swapped on the live server (`setSecureContext`) when the identity changes: new
 * handshakes use the new SVID and bundle (and new session-ticket keys), established connections keep
 * theirs — but no longer than the peer's certificates: a connection is retired when the earliest notAfter
 * of the chain its peer was verified with passes, or when a new bundle no longer holds the root that
 * chain ended at (after a root rotation). Retiring stops it taking requests (HTTP/2: GOAWAY; HTTP/1.1:
 * closed when idle or upgraded to a tunnel, else `Connection: close` on the response in progress) and
 * closes it after RETIRE_GRACE_MS whatever is still running.
 *
 * None of these servers listens: the inbound port is bound by an acceptor (runtime/net/acceptor.ts) that
 * hands each connection to the current stack, so a reload that changes the mode or the inbound limits
 * builds a new stack and swaps it in on the same socket.
 */
import { fronting, H2_MAX_CONCURRENT_STREAMS, retireServers, type ConnectionStack } from "../net/acceptor.ts";
import { replaying, sniffPreface } from "../net/sniff.ts";
import type { TrustBundle } from "../pki/bundle.ts";
import { MESH_IDLE_MS, SESSION_MAX_AGE_MS } from "../upstream/tls.ts";
import { randomBytes } from "node:crypto";
import http, { type IncomingMessage, type ServerResponse } from "node:http";
import http2, { type Http2ServerRequest, type Http2ServerResponse } from "node:http2";
import https from "node:https";
import net, { type Socket } from "node:net";
import type tls from "node:tls";
import type { TLSSocket } from "node:tls";

/** A TLS record of type handshake: how every ClientHello starts. */
const TLS_HANDSHAKE = 0x16;
/** Idle HTTP/2 sessions are closed (GOAWAY) after this long; the callers' pools open a new one. */
const H2_IDLE_MS = 65_000;
/**
 * Idle HTTP/1.1 connections are kept this long (Node's default is 5 s): longer than mesh callers keep
 * theirs (MESH_IDLE_MS), so the caller closes first and no request crosses the server's close; the
 * `Keep-Alive: timeout` Node sends says so to callers that read it.
 */
const H1_IDLE_MS = MESH_IDLE_MS + 15_000;

export type InboundRequest = IncomingMessage | Http2ServerRequest;
export type InboundResponse = ServerResponse | Http2ServerResponse;

export interface InboundListenerOptions {
  readonly mode: "strict" | "permissive";
  readonly maxHeaderBytes: number;
  readonly headerTimeoutMs: number;
  /** The identity's server options (cert, key, ca); null before one is loaded (handshakes then fail). */
  readonly identity: tls.SecureContextOptions | null;
  /** Close keep-alive connections after this many requests (0 = never). */
  readonly maxRequestsPerSocket?: number;
  readonly onRequest: (req: InboundRequest, res: InboundResponse, mtls: boolean) => void;
  /** An HTTP/1.1 `Upgrade` request (WebSocket), after the connection's peer was verified. */
  readonly onUpgrade?: (req: IncomingMessage, socket: Socket, head: Buffer, mtls: boolean) => void;
  /**
   * A handshake completed: verify the peer, and return what it was verified as — or null, having destroyed
   * the socket, to refuse it. Runs before any request.
   */
  readonly onSecureConnection: (socket: TLSSocket) => PeerTrust | null;
  /** A verified connection was retired: its peer's chain expired, or the bundle dropped its root. */
  readonly onRetire?: (reason: RetireReason) => void;
  /** A handshake failed (no certificate, untrusted chain, protocol, timeout). */
  readonly onTlsError: (err: Error & { code?: string }) => void;
  /** A request could not be parsed (431, 408, 400 are answered here). */
  readonly onClientError: (err: Error & { code?: string }, socket: Socket) => void;
}

/** What a connection's peer was verified as: it serves that peer no longer than this holds. */
export interface PeerTrust {
  /** The earliest notAfter of the peer's verified chain (epoch ms). */
  readonly until: number;
  /** SHA-256 of the bundle root the chain ended at (hex). */
  readonly root: string;
}

export type RetireReason = "expired" | "untrusted";

/** The trust bundle, as far as retiring connections needs it (runtime/pki TrustBundle). */
export type RootSet = Pick<TrustBundle, "hasRoot">;

/**
 * How long a retired connection's exchanges in progress may still run before it is closed (as Envoy's
 * drain timeout after max_connection_duration): a long stream of a peer whose certificate expired is
 * cut then. Callers stop reusing a connection before the certificates on either side expire
 * (runtime/upstream/tls.ts EXPIRY_MARGIN_MS), so a retirement reaches a well-behaved caller's
 * connection only with a long exchange still running on it.
 */
export const RETIRE_GRACE_MS = 10_000;
/** setTimeout's longest delay; a longer wait is taken in steps. */
const MAX_TIMER_MS = 2 ** 31 - 1;

/** The servers behind the inbound port (a connection stack: runtime/net/acceptor.ts). */
export interface InboundListener extends ConnectionStack {
  /** The server an accepted connection is given to (never listens itself). */
  readonly server: net.Server;
  readonly tls: https.Server;
  readonly plain: http.Server | null;
  /** The HTTP/2 server of the TLS connections that negotiated h2. */
  readonly h2: http2.Http2Server;
  /**
   * Serves a new identity to new handshakes; established connections whose peer chain ended at a root
   * the new `bundle` no longer holds are retired.
   */
  setIdentity(options: tls.SecureContextOptions, bundle: RootSet): void;
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
    keepAliveTimeout: H1_IDLE_MS,
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
    ALPNProtocols: ["h2", "http/1.1"],
    handshakeTimeout: o.headerTimeoutMs,
    // Session tickets (TLS 1.3 resumption) are accepted this long; the peer's leaf is verified again
    // on every connection, resumed or not (onSecureConnection).
    sessionTimeout: SESSION_MAX_AGE_MS / 1000,
  };
  const secure = https.createServer({ ...httpOptions, ...tlsOptions }, (req, res) =>
    o.onRequest(req, res, true),
  );
  const sessions = new Set<http2.ServerHttp2Session>();
  const h2Options: http2.ServerOptions = {
    settings: {
      maxHeaderListSize: o.maxHeaderBytes,
      enablePush: false,
      maxConcurrentStreams: H2_MAX_CONCURRENT_STREAMS,
    },
    maxSessionMemory: 16,
  };
  const h2 = http2.createServer(h2Options, (req, res) => o.onRequest(req, res, true));
  trackSessions(h2, sessions);
  const leases = new Leases(o.onRetire ?? null);
  // The HTTP/1 server's own connection listener (https.Server registers it for "secureConnection") runs
  // only for connections that did not negotiate h2; every connection's peer is verified first.
  const http1Connection = secure.listeners("secureConnection")[0] as (socket: TLSSocket) => void;
  secure.removeAllListeners("secureConnection");
  secure.on("secureConnection", (socket: TLSSocket) => {
    const trust = o.onSecureConnection(socket);
    if (trust === null || socket.destroyed) return;
    if (socket.alpnProtocol === "h2") {
      // The server makes the connection's session synchronously, announcing it with "session".
      let session: http2.ServerHttp2Session | null = null;
      const take = (s: http2.ServerHttp2Session) => (session = s);
      h2.prependOnceListener("session", take);
      h2.emit("connection", socket);
      h2.off("session", take);
      leases.add(socket, trust, session);
    } else {
      http1Connection.call(secure, socket);
      leases.add(socket, trust, null);
    }
  });
  if (o.onUpgrade) {
    const onUpgrade = o.onUpgrade;
    secure.on("upgrade", (req: IncomingMessage, socket: Socket, head: Buffer) =>
      onUpgrade(req, socket, head, true),
    );
  }
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
      h2,
      setIdentity: (options, bundle) => {
        setIdentity(secure, options);
        leases.revalidate(bundle);
      },
      retire: () => retireServers([secure], sessions),
      closeIdle: () => {
        secure.closeIdleConnections();
        for (const s of sessions) s.close();
      },
      closeAll: () => {
        secure.closeAllConnections();
        for (const s of sessions) s.destroy();
      },
    };
  }

  // Permissive: plaintext HTTP/1.1 and h2c on the same port, told apart by the first bytes.
  const plain = http.createServer(httpOptions, (req, res) => o.onRequest(req, res, false));
  plain.on("clientError", (err: Error & { code?: string }, socket: Socket) => o.onClientError(err, socket));
  if (o.onUpgrade) {
    const onUpgrade = o.onUpgrade;
    plain.on("upgrade", (req: IncomingMessage, socket: Socket, head: Buffer) =>
      onUpgrade(req, socket, head, false),
    );
  }
  const plainH2 = http2.createServer(h2Options, (req, res) => o.onRequest(req, res, false));
  trackSessions(plainH2, sessions);
  const front = net.createServer({ noDelay: true }, (socket) => {
    const timer = setTimeout(() => socket.destroy(), o.headerTimeoutMs);
    socket.once("data", (first: Buffer) => {
      if (first[0] === TLS_HANDSHAKE) {
        clearTimeout(timer);
        socket.pause();
        // A TLS socket reads the native handle, which would skip bytes put back with unshift: give it
        // a stream that replays the first chunk, then relays the socket.
        secure.emit("connection", replaying(socket, first));
        socket.resume();
        return;
      }
      sniffPreface(socket, first, timer, plain, plainH2);
    });
    socket.on("error", () => socket.destroy());
  });
  return {
    // Both HTTP/1 servers' timeout checks start with the front (the TLS one's too: its connections arrive
    // through the front).
    server: fronting(front, plain, secure),
    tls: secure,
    plain,
    h2,
    setIdentity: (options, bundle) => {
      setIdentity(secure, options);
      leases.revalidate(bundle);
    },
    retire: () => retireServers([secure, plain], sessions),
    closeIdle: () => {
      secure.closeIdleConnections();
      plain.closeIdleConnections();
      for (const s of sessions) s.close();
    },
    closeAll: () => {
      secure.closeAllConnections();
      plain.closeAllConnections();
      for (const s of sessions) s.destroy();
    },
  };
}

/** The verified connections of an inbound listener, each retired when its peer's trust ends. */
class Leases {
  private readonly live = new Map<TLSSocket, Lease>();
  private readonly onRetire: ((reason: RetireReason) => void) | null;
  constructor(onRetire: ((reason: RetireReason) => void) | null) {
    this.onRetire = onRetire;
  }

  add(socket: TLSSocket, trust: PeerTrust, session: http2.ServerHttp2Session | null): void {
    const lease: Lease = { trust, session, timer: null, retired: false };
    this.live.set(socket, lease);
    const arm = () => {
      const wait = trust.until - Date.now();
      if (wait <= 0) return this.retire(socket, lease, "expired");
      lease.timer = setTimeout(arm, Math.min(wait + 1, MAX_TIMER_MS));
      lease.timer.unref();
    };
    arm();
    socket.once("close", () => {
      if (lease.timer !== null) clearTimeout(lease.timer);
      this.live.delete(socket);
    });
  }

  /** A new bundle: retires the connections whose peer chain ended at a root it no longer holds. */
  revalidate(bundle: RootSet): void {
    for (const [socket, lease] of this.live) {
      if (!bundle.hasRoot(lease.trust.root)) this.retire(socket, lease, "untrusted");
    }
  }

  private retire(socket: TLSSocket, lease: Lease, reason: RetireReason): void {
    if (lease.retired || socket.destroyed) return;
    lease.retired = true;
    if (lease.timer !== null) clearTimeout(lease.timer);
    this.onRetire?.(reason);
    lease.timer = setTimeout(() => socket.destroy(), RETIRE_GRACE_MS);
    lease.timer.unref();
    if (lease.session !== null) {
      // GOAWAY: streams already open finish, the caller opens a new connection for the next ones.
      lease.session.close();
      return;
    }
    const res = (socket as TLSSocket & { _httpMessage?: ServerResponse | null })._httpMessage;
    // Idle (or an upgraded tunnel, which no longer belongs to the HTTP server): closed now.
    if (!res) return void socket.destroy();
    // A response in progress: the last on this connection.
    if (!res.headersSent) res.setHeader("connection", "close");
    res.once("close", () => socket.end());
  }
}

interface Lease {
  readonly trust: PeerTrust;
  readonly session: http2.ServerHttp2Session | null;
  timer: NodeJS.Timeout | null;
  retired: boolean;
}

/** Counts HTTP/2 sessions (for drain) and closes idle ones. */
function trackSessions(server: http2.Http2Server, sessions: Set<http2.ServerHttp2Session>): void {
  server.on("session", (session: http2.ServerHttp2Session) => {
    sessions.add(session);
    session.setTimeout(H2_IDLE_MS, () => session.close());
    session.on("close", () => sessions.delete(session));
    session.on("error", () => session.destroy());
  });
}

/** A local (outbound) listener: HTTP/1.1 and h2c with prior knowledge on one port. */
export interface LocalListener {
  /** The server to listen on (it reads the first bytes, then hands the connection over). */
  readonly server: net.Server;
  readonly http1: http.Server;
  readonly h2: http2.Http2Server;
  /** Stops keeping connections (a moved or removed port): runtime/net/acceptor.ts `retireServers`. */
  retire(): void;
  closeIdle(): void;
  closeAll(): void;
}

/** How long a new local connection may take to send its first bytes. */
const LOCAL_FIRST_BYTES_MS = 30_000;

/**
 * The app's side of the sidecar (the proxy port and the per-service ports, 127.0.0.1): HTTP/1.1, and
 * HTTP/2 cleartext with prior knowledge — what gRPC clients send to a plaintext address — told apart by
 * the connection preface on the first bytes, as the gateway's h2c listener does. `onConnect` takes
 * HTTP/1 `CONNECT` requests (the proxy port's egress tunnels).
 */
export function createLocalListener(
  http1Options: http.ServerOptions,
  onRequest: (req: InboundRequest, res: InboundResponse) => void,
  onClientError: (err: Error & { code?: string }, socket: Socket) => void,
  onUpgrade?: (req: IncomingMessage, socket: Socket, head: Buffer) => void,
  onConnect?: (req: IncomingMessage, socket: Socket, head: Buffer) => void,
): LocalListener {
  const h1 = http.createServer(http1Options, onRequest);
  h1.on("clientError", onClientError);
  if (onUpgrade) h1.on("upgrade", onUpgrade);
  // Without a `connect` listener Node closes a CONNECT's connection without an answer.
  if (onConnect) h1.on("connect", onConnect);
  const sessions = new Set<http2.ServerHttp2Session>();
  const h2 = http2.createServer(
    {
      settings: { enablePush: false, maxConcurrentStreams: H2_MAX_CONCURRENT_STREAMS },
      maxSessionMemory: 16,
    },
    onRequest,
  );
  trackSessions(h2, sessions);
  const front = net.createServer({ noDelay: true }, (socket) => {
    const timer = setTimeout(() => socket.destroy(), LOCAL_FIRST_BYTES_MS);
    socket.once("data", (first: Buffer) => sniffPreface(socket, first, timer, h1, h2));
    socket.on("error", () => socket.destroy());
  });
  return {
    server: fronting(front, h1),
    http1: h1,
    h2,
    retire: () => retireServers([h1], sessions),
    closeIdle: () => {
      h1.closeIdleConnections();
      for (const s of sessions) s.close();
    },
    closeAll: () => {
      h1.closeAllConnections();
      for (const s of sessions) s.destroy();
    },
  };
}

/**
 * Serves a new identity to new handshakes, and new session-ticket keys with it: a session made under
 * the previous certificate or bundle is not resumed (its client gets a full handshake, checked by the
 * trust in force now), rather than resumed and then refused by the verifier after the handshake. Node 24's
 * setSecureContext happens to give the new context fresh keys already; they are set here so that the
 * guarantee does not rest on that.
 */
function setIdentity(secure: https.Server, options: tls.SecureContextOptions): void {
  secure.setSecureContext({ ...options, minVersion: "TLSv1.3" });
  secure.setTicketKeys(randomBytes(48));
}
