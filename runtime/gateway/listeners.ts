/**
 * Listeners: plain HTTP/1.1; HTTP/1.1 with cleartext HTTP/2 on the same port (h2c with prior knowledge:
 * the first bytes are sniffed for the HTTP/2 preface and the socket handed to the right server); and
 * TLS with SNI (a certificate per host set, wildcards allowed) and ALPN offering h2 and http/1.1.
 *
 * Certificates are read at config load and at every reload; the SNI callback reads the current set, so
 * a reload rotates certificates on a live listener without dropping connections.
 */
import { readFileSync } from "node:fs";
import http, { type IncomingMessage, type ServerResponse } from "node:http";
import http2, { type Http2ServerRequest, type Http2ServerResponse } from "node:http2";
import https from "node:https";
import net, { type Socket } from "node:net";
import tls, { type SecureContext } from "node:tls";
import { sniffPreface } from "../net/sniff.ts";
import type { GatewayRuntimeConfig } from "../contract/schema.ts";

type ListenerConfig = GatewayRuntimeConfig["listeners"][number];
type Limits = GatewayRuntimeConfig["limits"];

export type AnyRequest = IncomingMessage | Http2ServerRequest;
export type AnyResponse = ServerResponse | Http2ServerResponse;
export type Handler = (req: AnyRequest, res: AnyResponse, scheme: "http" | "https") => void;

export interface CertificateSet {
  /** The context for a server name (exact host, then the longest wildcard, then the first certificate). */
  contextFor(serverName: string): SecureContext;
}

/**
 * Loads a listener's certificates into secure contexts (throws with the file name when one is unreadable).
 * `clientCa`: the CA certificates client certificates are verified against (runtime/auth/clientcert.ts).
 */
export function loadCertificates(
  l: ListenerConfig,
  clientCa: readonly string[] | null = null,
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
    return {
      hosts: c.hosts,
      context: tls.createSecureContext({
        cert,
        key,
        minVersion: l.tls!.minVersion,
        ...(clientCa ? { ca: [...clientCa] } : {}),
      }),
    };
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

export interface Listener {
  readonly name: string;
  /** The server that accepts connections (listen/close on this one). */
  readonly server: net.Server;
  /** HTTP/1 servers behind it (for clientError handling and closing idle connections). */
  readonly http1: http.Server | null;
  closeIdle(): void;
  closeAll(): void;
}

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
): Listener {
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
  const h2Settings: http2.Settings = { maxHeaderListSize: limits.maxHeaderBytes, enablePush: false };
  const sessions = new Set<http2.ServerHttp2Session>();
  const trackSessions = (s: http2.Http2Server | http2.Http2SecureServer) => {
    s.on("session", (session: http2.ServerHttp2Session) => {
      sessions.add(session);
      session.setTimeout(limits.idleTimeoutMs, () => session.close());
      session.on("close", () => sessions.delete(session));
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
      ...(requestClientCerts ? { requestCert: true, rejectUnauthorized: false } : {}),
      SNICallback: (servername, cb) => {
        try {
          cb(null, certs().contextFor(servername));
        } catch (err) {
          cb(err as Error);
        }
      },
    };
    if (l.http2) {
      const server = http2.createSecureServer(
        { ...tlsOptions, allowHTTP1: true, settings: h2Settings, maxSessionMemory: 16 },
        (req, res) => handler(req, res, "https"),
      );
      trackSessions(server);
      server.setTimeout(limits.requestTimeoutMs);
      // HTTP/1.1 over this TLS port (allowHTTP1) is served by Node's HTTP/1 machinery with its own
      // timeouts (60 s for headers by default): give it the listener's.
      const h1Timeouts = server as unknown as {
        headersTimeout: number;
        requestTimeout: number;
        connectionsCheckingInterval: number;
      };
      h1Timeouts.headersTimeout = limits.headerTimeoutMs;
      h1Timeouts.requestTimeout = limits.requestTimeoutMs;
      h1Timeouts.connectionsCheckingInterval = http1Options.connectionsCheckingInterval!;
      return {
        name: l.name,
        server,
        http1: null,
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
    return {
      name: l.name,
      server,
      http1: server,
      closeIdle: () => server.closeIdleConnections(),
      closeAll: () => server.closeAllConnections(),
    };
  }

  const h1 = http.createServer(http1Options, (req, res) => handler(req, res, "http"));
  h1.on("clientError", (err: Error & { code?: string }, socket: Socket) => onClientError(h1, err, socket));
  if (!l.http2) {
    return {
      name: l.name,
      server: h1,
      http1: h1,
      closeIdle: () => h1.closeIdleConnections(),
      closeAll: () => h1.closeAllConnections(),
    };
  }

  // HTTP/1.1 and h2c on one port: read until the first bytes decide, then hand the socket over.
  const h2 = http2.createServer({ settings: h2Settings }, (req, res) => handler(req, res, "http"));
  trackSessions(h2);
  const front = net.createServer({ noDelay: true }, (socket) => {
    const timer = setTimeout(() => socket.destroy(), limits.headerTimeoutMs);
    sniffPreface(socket, Buffer.alloc(0), timer, h1, h2);
    socket.on("error", () => socket.destroy());
  });
  // The HTTP/1 server never listens itself (the front does): Node starts the timer that enforces its
  // header and request timeouts when a server starts listening, so start it with the front — without it
  // a slow client could hold a connection forever. Closing the front stops it again.
  front.on("listening", () => h1.emit("listening"));
  front.on("close", () => h1.close());
  return {
    name: l.name,
    server: front,
    http1: h1,
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
