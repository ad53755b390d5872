/**
 * The request facts authentication reads, over a node:http / node:http2 request: one object per request on
 * routes that authenticate, with a method (not a closure) for header lookups.
 */
import type { IncomingHttpHeaders } from "node:http";
import type { TLSSocket } from "node:tls";
import type { AuthRequestFacts, TlsPeer } from "./types.ts";

/** The parts of an HTTP/1 or HTTP/2 compat request read here. */
export interface IncomingLike {
  readonly method?: string | undefined;
  readonly headers: IncomingHttpHeaders;
  readonly rawHeaders: string[];
  readonly socket: unknown;
  readonly stream?: { readonly session?: { readonly socket?: unknown } | undefined } | undefined;
}

export class RequestFacts implements AuthRequestFacts {
  readonly method: string;
  readonly path: string;
  readonly query: string;
  readonly host: string;
  readonly authority: string;
  readonly scheme: "http" | "https";
  readonly clientIp: string;
  readonly viaTrustedProxy: boolean;
  readonly rawHeaders: readonly string[];
  readonly tls: TlsPeer | null;
  readonly connection: object | null;
  private readonly headers: IncomingHttpHeaders;

  /** `path`, `query` and `host` are decide()'s canonical ones; `authority` the Host header as received. */
  constructor(
    req: IncomingLike,
    path: string,
    query: string,
    host: string,
    authority: string | undefined,
    scheme: "http" | "https",
    clientIp: string,
    viaTrustedProxy = false,
  ) {
    this.method = req.method ?? "GET";
    this.path = path;
    this.query = query;
    this.host = host;
    this.authority = authority ?? host;
    this.scheme = scheme;
    this.clientIp = clientIp;
    this.viaTrustedProxy = viaTrustedProxy;
    this.rawHeaders = req.rawHeaders;
    this.headers = req.headers;
    this.tls = scheme === "https" ? tlsPeerOf(req) : null;
    const connection = req.stream?.session ?? req.socket;
    this.connection = typeof connection === "object" ? connection : null;
  }

  header(name: string): string | undefined {
    const v = this.headers[name];
    return Array.isArray(v) ? v[0] : v;
  }
}

/** The TLS socket of a request: the request's own socket (HTTP/1) or its session's (HTTP/2). */
function tlsPeerOf(req: IncomingLike): TlsPeer | null {
  const socket = (req.stream?.session?.socket ?? req.socket) as Partial<TLSSocket> | null;
  return socket && typeof socket.getPeerX509Certificate === "function"
    ? (socket as TLSSocket as TlsPeer)
    : null;
}
