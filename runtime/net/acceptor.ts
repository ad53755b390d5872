/**
 * A bound port whose connection handling a reload can replace without closing the socket — Envoy's
 * listener update, for a Node proxy. An *acceptor* owns the listening socket; a *stack* (the servers a
 * connection meets after accept: a PROXY-protocol front, TLS, the HTTP/1 and HTTP/2 servers) never
 * listens itself: the acceptor hands it each accepted connection. A reload that changes how a port
 * serves (protocol, HTTP/2, TLS minimum version, PROXY protocol, parser limits, the mTLS mode) builds a
 * new stack beside the serving one; `use` makes the new stack take every connection accepted from then
 * on, while connections the old stack holds finish their requests: HTTP/2 sessions get GOAWAY at once,
 * each HTTP/1 response on them from then on says `Connection: close` (an idle keep-alive connection is
 * not closed under a client that may be sending on it — it closes after its next response), and whatever
 * is still open after the drain timeout is closed. The socket is never closed, so no connection is reset or refused by
 * the change (a second SO_REUSEPORT socket was measured to reset 397 of 1,931 connections).
 */
import net, { type Socket } from "node:net";

/**
 * The streams one HTTP/2 connection may have open at once (SETTINGS_MAX_CONCURRENT_STREAMS; RFC 9113 §6.5.2
 * recommends no fewer than 100). Clients wait for a stream to close; one that opens more anyway loses the
 * connection (nghttp2: PROTOCOL_ERROR, which §5.1.2 allows). Node's default (2^32-1) let one connection
 * hold any number of requests in flight, past what maxConnections bounds. Gateway and sidecar listeners
 * (inbound, and the app's local ports) all advertise it.
 */
export const H2_MAX_CONCURRENT_STREAMS = 100;

/** The servers behind a port, as a proxy builds them per config. */
export interface ConnectionStack {
  /**
   * The server an accepted connection is given to (emitted as its `connection`); it never listens. Its
   * socket options (`noDelay`, `allowHalfOpen`, …) are the ones accepted sockets are created with.
   */
  readonly server: net.Server;
  /** Closes idle keep-alive connections and HTTP/2 sessions (GOAWAY); busy ones finish. */
  closeIdle(): void;
  /** Closes every connection now. */
  closeAll(): void;
  /**
   * Stops keeping connections: HTTP/2 sessions get GOAWAY (their open streams finish), every HTTP/1
   * response from now on closes its connection (`retireServers`).
   */
  retire(): void;
}

export interface Acceptor<S extends ConnectionStack> {
  /** The listening socket (listen and close this one). */
  readonly server: net.Server;
  /** The stack new connections go to. */
  readonly stack: S;
  /**
   * New connections go to `next` from now on; the previous stack is retired: its HTTP/1 responses close
   * their connection, its idle connections close now and the rest after `drainMs`.
   */
  use(next: S, drainMs: number): void;
  /** Retires the serving stack too (the whole listener is going away: moved or removed). */
  retire(): void;
  /** Closes idle connections of the serving and the retired stacks. */
  closeIdle(): void;
  /** Closes every connection of the serving and the retired stacks. */
  closeAll(): void;
  /**
   * Calls `fn` for the serving stack and each retired one still draining (whose connections, though no
   * longer accepted here, still serve: a new trust bundle must reach them too).
   */
  forEachStack(fn: (stack: S) => void): void;
}

/** Accepted sockets get the options the stack's first server would have given them. */
function adoptSocketOptions(acceptor: net.Server, from: net.Server): void {
  const a = acceptor as net.Server & SocketOptions;
  const f = from as net.Server & SocketOptions;
  a.noDelay = f.noDelay;
  a.allowHalfOpen = f.allowHalfOpen;
  a.keepAlive = f.keepAlive;
  a.keepAliveInitialDelay = f.keepAliveInitialDelay;
  a.highWaterMark = f.highWaterMark;
}
/** net.Server's per-connection options (public properties, read at each accept). */
interface SocketOptions {
  noDelay: boolean;
  allowHalfOpen: boolean;
  keepAlive: boolean;
  keepAliveInitialDelay: number;
  highWaterMark: number;
}

/** A response on a retired stack's connection is its last (HTTP/1: `Connection: close`). */
function lastOnConnection(req: { httpVersionMajor: number }, res: { shouldKeepAlive: boolean }): void {
  if (req.httpVersionMajor === 1) res.shouldKeepAlive = false;
}

/**
 * A stack's `retire`: every HTTP/1 request `requestServers` emit from now on is its connection's last,
 * and the HTTP/2 `sessions` get GOAWAY.
 */
export function retireServers(
  requestServers: readonly net.Server[],
  sessions: Iterable<{ close(): void }>,
): void {
  for (const s of requestServers) s.prependListener("request", lastOnConnection);
  for (const session of sessions) session.close();
}

/**
 * A front (a server that reads a connection's first bytes, then hands it on) with the `inner` servers
 * behind it, which never listen themselves: Node starts an HTTP/1 server's header and request timeout
 * checks when it emits `listening` — without them a slow client could hold a connection forever — so they
 * start when the front does, and stop when it closes.
 */
export function fronting(front: net.Server, ...inner: net.Server[]): net.Server {
  front.on("listening", () => inner.forEach((s) => s.emit("listening")));
  front.on("close", () => inner.forEach((s) => s.close()));
  return front;
}

/** Stops a stack that never served (a refused or aborted reload's): its servers' timers; it holds no connection. */
export function discardStack(stack: ConnectionStack): void {
  stack.server.close();
  stack.closeAll();
}

/** Starts a stack's HTTP/1 timeout checks: Node starts them when a server emits `listening`. */
function start(stack: ConnectionStack): void {
  stack.server.emit("listening");
}

/** Stops a stack's timers (its servers' `close`; they never listened, so nothing else closes). */
function stop(stack: ConnectionStack): void {
  stack.server.close();
}

export function createAcceptor<S extends ConnectionStack>(first: S): Acceptor<S> {
  let current = first;
  const retired = new Set<S>();
  const server = net.createServer((socket: Socket) => current.server.emit("connection", socket));
  adoptSocketOptions(server, first.server);
  server.on("listening", () => start(current));
  // The socket closes once its connections are gone: stop every stack's timers.
  server.on("close", () => {
    stop(current);
    for (const s of retired) stop(s);
  });
  return {
    server,
    get stack() {
      return current;
    },
    use(next, drainMs) {
      const old = current;
      if (next === old) return;
      adoptSocketOptions(server, next.server);
      if (server.listening) start(next);
      current = next;
      retired.add(old);
      old.retire();
      setTimeout(() => {
        old.closeAll();
        stop(old);
        retired.delete(old);
      }, drainMs).unref();
    },
    retire() {
      current.retire();
    },
    closeIdle() {
      current.closeIdle();
      for (const s of retired) s.closeIdle();
    },
    closeAll() {
      current.closeAll();
      for (const s of retired) s.closeAll();
    },
    forEachStack(fn) {
      fn(current);
      for (const s of retired) fn(s);
    },
  };
}

/** A bind address as a URL writes it (the proxies' start lines): an IPv6 address in brackets. */
export function urlHost(host: string): string {
  return host.includes(":") && !host.startsWith("[") ? `[${host}]` : host;
}
