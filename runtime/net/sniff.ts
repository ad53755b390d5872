/**
 * The first bytes of a connection decide who serves it: plaintext HTTP/1.1 or HTTP/2 with prior
 * knowledge (h2c) on one port — the gateway's plaintext listeners and the sidecar's local and inbound
 * listeners share this.
 */
import type http from "node:http";
import type http2 from "node:http2";
import type { Socket } from "node:net";
import { Duplex } from "node:stream";

/** The client address of each h2c session, as its connection had it (see peerAddress). */
const sessionPeers = new WeakMap<object, string>();

/**
 * The client address of a request: its socket's, or for a request of an h2c session the one its
 * connection had — HTTP/2 serves such a session over the replaying stream below, which it wraps in a
 * socket of its own that knows no address (so `req.socket.remoteAddress` is undefined there).
 */
export function peerAddress(req: {
  readonly socket: { readonly remoteAddress?: string | undefined } | null;
  readonly stream?: { readonly session?: object | undefined } | undefined;
}): string {
  const session = req.stream?.session;
  if (session !== undefined) {
    const peer = sessionPeers.get(session);
    if (peer !== undefined) return peer;
  }
  return req.socket?.remoteAddress ?? "";
}

/** The HTTP/2 connection preface (RFC 9113 §3.4). */
export const H2_PREFACE = Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");

/**
 * Reads a plaintext connection's first bytes until they are, or cannot be, the HTTP/2 preface, then hands
 * the socket to the HTTP/2 server (h2c with prior knowledge) or to the HTTP/1 server. `first` was read
 * already; `timer` bounds the wait (cleared here once decided).
 */
export function sniffPreface(
  socket: Socket,
  first: Buffer,
  timer: NodeJS.Timeout,
  h1: http.Server,
  h2: http2.Http2Server,
): void {
  let seen = first;
  const decide = (): boolean => {
    const n = Math.min(seen.length, H2_PREFACE.length);
    const prefix = seen.subarray(0, n).equals(H2_PREFACE.subarray(0, n));
    if (prefix && seen.length < H2_PREFACE.length) return false; // could still be the preface
    clearTimeout(timer);
    socket.pause();
    if (prefix) {
      // HTTP/2 sessions read a socket's native handle, so unshifted bytes would be lost: give the HTTP/2
      // server a stream that replays what was read, then relays the socket. The server creates the session
      // within emit: it gets the connection's client address then.
      const peer = socket.remoteAddress ?? "";
      const onSession = (session: object) => sessionPeers.set(session, peer);
      h2.once("session", onSession);
      try {
        h2.emit("connection", replaying(socket, seen));
      } finally {
        h2.off("session", onSession);
      }
    } else {
      socket.unshift(seen);
      h1.emit("connection", socket);
    }
    socket.resume();
    return true;
  };
  if (decide()) return;
  const onData = (chunk: Buffer) => {
    seen = Buffer.concat([seen, chunk]);
    if (decide()) socket.off("data", onData);
  };
  socket.on("data", onData);
}

/** A duplex over `socket` that first yields `head` (bytes already read), carrying the peer address. */
export function replaying(socket: Socket, head: Buffer): Duplex {
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
