/**
 * A raw HTTP/1.1 keep-alive client for tests that must control when each request goes on one connection
 * (a drain that keeps idle connections for one more request, say): one request at a time, each response
 * read whole by its Content-Length, and whether the server closed the connection.
 */
import net from "node:net";
import { setTimeout as sleep } from "node:timers/promises";

/** A raw keep-alive connection: one request at a time, each response read whole (Content-Length). */
export async function rawConnection(url: string, host = "localhost") {
  const { hostname, port } = new URL(url);
  const socket = net.connect(Number(port), hostname);
  await new Promise<void>((r, reject) => socket.once("connect", r).once("error", reject));
  let buffered = "";
  let ended = false;
  const waiters: (() => void)[] = [];
  socket.setEncoding("latin1");
  socket.on("data", (d: string) => ((buffered += d), waiters.splice(0).forEach((w) => w())));
  socket.on("end", () => ((ended = true), waiters.splice(0).forEach((w) => w())));
  socket.on("error", () => ((ended = true), waiters.splice(0).forEach((w) => w())));
  const changed = () => new Promise<void>((r) => waiters.push(r));
  return {
    socket,
    /** Whether the server closed the connection (EOF or reset). */
    ended: () => ended,
    async get(path: string): Promise<{ status: number; head: string; body: string } | null> {
      buffered = "";
      socket.write(`GET ${path} HTTP/1.1\r\nHost: ${host}\r\n\r\n`);
      for (;;) {
        const end = buffered.indexOf("\r\n\r\n");
        if (end >= 0) {
          const head = buffered.slice(0, end);
          const length = Number(/content-length: *(\d+)/i.exec(head)?.[1] ?? 0);
          if (buffered.length >= end + 4 + length)
            return {
              status: Number(head.slice(9, 12)),
              head,
              body: buffered.slice(end + 4, end + 4 + length),
            };
        }
        if (ended) return null;
        await changed();
      }
    },
    async closed(withinMs: number): Promise<boolean> {
      const until = Date.now() + withinMs;
      while (!ended && Date.now() < until) await Promise.race([changed(), sleep(until - Date.now())]);
      return ended;
    },
  };
}
