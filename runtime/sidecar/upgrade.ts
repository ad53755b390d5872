/**
 * WebSocket tunnels through the sidecar (RFC 6455 over HTTP/1.1). The request was authorized by the
 * caller (decideInbound / decideOutbound); here the handshake is re-serialized from the decided target and
 * the filtered headers, written to the upstream connection (the app, or the callee's sidecar over mTLS)
 * once it is established, and from then on bytes flow both ways untouched. Bounded: an idle timeout on
 * both sockets; a half-close (FIN) on one side is passed on as a half-close to the other, and a close or
 * an error on either side closes both.
 */
import type { IncomingMessage } from "node:http";
import type { Socket } from "node:net";
import { readUpgradeAnswer } from "../net/upgrade.ts";

/** Refuses an upgrade on the raw socket with a JSON error body (and closes the connection). */
export function refuseUpgrade(
  socket: Socket,
  status: number,
  reason: string,
  code: string,
  message: string,
  extra: Record<string, string> = {},
): void {
  if (socket.destroyed || !socket.writable) return void socket.destroy();
  const body = JSON.stringify({ error: { code, message } });
  let head =
    `HTTP/1.1 ${status} ${reason}\r\ncontent-type: application/json\r\n` +
    `content-length: ${Buffer.byteLength(body)}\r\nx-meshgate-error: ${code}\r\nconnection: close\r\n`;
  for (const [k, v] of Object.entries(extra)) head += `${k}: ${v}\r\n`;
  socket.end(`${head}\r\n${body}`);
}

export interface TunnelEvents {
  /** The upstream connection could not be established (nothing was relayed). */
  failed(err: Error & { code?: string }): void;
  /**
   * The upstream's answer was no WebSocket handshake answer and no ordinary response (a 101 with another
   * Sec-WebSocket-Accept, a malformed head): nothing was relayed to the client; it is to be refused.
   */
  badAnswer(reason: string): void;
  /** The tunnel ended; `status` is the upstream's handshake answer (101, or a refusal), 0 if none came. */
  closed(status: number): void;
}

/**
 * Pipes `client` and `upstream` (a connecting socket; `readyEvent` is "connect" for TCP, "secureConnect"
 * for TLS) once the upstream is ready: first the handshake and the bytes already read (`head`).
 */
export function openTunnel(
  client: Socket,
  upstream: Socket,
  readyEvent: "connect" | "secureConnect",
  handshake: Buffer,
  key: string | string[] | undefined,
  head: Buffer,
  o: { connectTimeoutMs: number; idleTimeoutMs: number; tunnels: Set<Socket> },
  events: TunnelEvents,
): void {
  let status = 0;
  let connected = false;
  let done = false;
  let refusing = false;
  // A FIN (or TLS close_notify) from one side ends only that direction: the other may still answer.
  client.allowHalfOpen = true;
  upstream.allowHalfOpen = true;
  // 0: no timeout of the proxy's own (an external's `connectTimeoutMs: 0` leaves it to the system).
  const connectTimer =
    o.connectTimeoutMs > 0
      ? setTimeout(
          () => upstream.destroy(Object.assign(new Error("connect timeout"), { code: "ETIMEDOUT" })),
          o.connectTimeoutMs,
        )
      : undefined;
  const finish = () => {
    if (done) return;
    done = true;
    clearTimeout(connectTimer);
    o.tunnels.delete(client);
    // A refusal being written (badAnswer) closes the client's connection once it is flushed.
    if (refusing && !client.writableFinished) client.once("finish", () => client.destroy());
    else client.destroy();
    upstream.destroy();
    if (connected) events.closed(status);
  };
  upstream.once(readyEvent, () => {
    connected = true;
    clearTimeout(connectTimer);
    if (client.destroyed) return finish();
    o.tunnels.add(client);
    upstream.write(handshake);
    // Nothing of the client's goes upstream until the upstream switched protocols (101): until then
    // that connection still speaks HTTP, and a request pipelined after the handshake (in `head`, or sent
    // after a refusal) would reach it unchecked — no authorization, forged peer headers (WebSocket
    // smuggling). nginx likewise tunnels only after a 101. The client's socket stays paused meanwhile.
    readUpgradeAnswer(upstream, key, (answer) => {
      if (answer.kind === "invalid") {
        // A 101 that does not answer this handshake, or a malformed answer: no tunnel.
        status = 502;
        refusing = true;
        events.badAnswer(answer.reason);
        return finish();
      }
      client.write(answer.bytes);
      if (answer.kind === "switched") {
        status = 101;
        if (head.length) upstream.write(head);
        upstream.pipe(client);
        client.pipe(upstream);
        return;
      }
      // Refused: the rest of its answer goes to the client, then both close; the upstream gets a FIN
      // (no further request) and the client's bytes are dropped.
      status = answer.status;
      upstream.end();
      upstream.pipe(client);
      client.resume();
    });
  });
  client.setTimeout(o.idleTimeoutMs, () => (finish(), client.destroy()));
  upstream.setTimeout(o.idleTimeoutMs, finish);
  upstream.on("error", (err: Error & { code?: string }) => {
    if (connected) return finish();
    if (done) return;
    done = true;
    clearTimeout(connectTimer);
    upstream.destroy();
    events.failed(err);
  });
  client.on("error", finish);
  upstream.on("close", () => {
    if (connected) finish();
  });
  client.on("close", () => {
    if (connected) finish();
    else if (!done) {
      // The client left before the upstream connected: give up the connection attempt.
      done = true;
      clearTimeout(connectTimer);
      upstream.destroy();
      events.failed(Object.assign(new Error("client closed"), { code: "ECONNABORTED" }));
    }
  });
}

/** The request asks for a WebSocket (the only upgrade proxied). */
export function isWebSocketUpgrade(req: IncomingMessage): boolean {
  const u = req.headers.upgrade;
  return typeof u === "string" && u.toLowerCase() === "websocket";
}
