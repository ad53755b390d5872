/**
 * Slow clients at the edge: a request head trickled in (slowloris) is cut at the header timeout on every
 * kind of listener — plain HTTP with and without h2c sniffing, TLS with and without h2 — not up to 30 s
 * later or never (Node enforces these timeouts on an interval, which only runs once a server listens).
 */
import { mkdtemp, rm } from "node:fs/promises";
import { createConnection, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connect as tlsConnect } from "node:tls";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  gatewayConfig,
  startTestGateway,
  startUpstream,
  type TestGateway,
  type Upstream,
} from "../support/gateway.ts";
import { selfSignedCert } from "../support/certs.ts";

let dir: string;
let up: Upstream;
let gw: TestGateway;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "meshgate-slow-"));
  const { certFile, keyFile } = await selfSignedCert(dir, "a", "127.0.0.1", "IP:127.0.0.1");
  const tls = { minVersion: "TLSv1.2", certificates: [{ hosts: ["localhost"], certFile, keyFile }] };
  up = await startUpstream();
  gw = await startTestGateway(
    gatewayConfig(
      [{ name: "all", match: { path: "/**" }, to: "app", public: true }],
      { app: { port: up.port } },
      {
        limits: { headerTimeout: "1s" },
        listeners: [
          { name: "h1h2c", port: 8080, protocol: "http", http2: true },
          { name: "h1", port: 8081, protocol: "http", http2: false },
          { name: "tlsh2", port: 8443, protocol: "https", http2: true, tls },
          { name: "tlsh1", port: 8444, protocol: "https", http2: false, tls },
        ],
      },
    ),
  );
});
afterAll(async () => {
  await gw.drain();
  await up.close();
  await rm(dir, { recursive: true, force: true });
});

/** Trickles a request head that never completes, one byte every 200 ms; resolves when the gateway closes. */
function trickle(open: () => Socket): Promise<{ raw: string; closedAfterMs: number }> {
  const started = performance.now();
  return new Promise((resolve, reject) => {
    const s = open();
    let raw = "";
    let i = 0;
    const head = `GET /x HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ${"a".repeat(40)}`;
    const timer = setInterval(() => {
      if (i < head.length && !s.destroyed) s.write(head[i++]!);
    }, 200);
    s.on("data", (c: Buffer) => (raw += c.toString("latin1")));
    s.on("close", () => {
      clearInterval(timer);
      resolve({ raw, closedAfterMs: performance.now() - started });
    });
    s.on("error", reject);
    setTimeout(() => s.destroy(), 8000);
  });
}

describe("slow clients", () => {
  it.each([
    ["cuts_a_trickled_head_on_an_http_listener_with_h2c", "h1h2c", false],
    ["cuts_a_trickled_head_on_an_http_listener", "h1", false],
    ["cuts_a_trickled_head_on_a_tls_listener_with_h2", "tlsh2", true],
    ["cuts_a_trickled_head_on_a_tls_listener", "tlsh1", true],
  ])("%s", async (_claim, listener, tls) => {
    const port = gw.ports.listeners[listener as string]!;
    const { raw, closedAfterMs } = await trickle(() =>
      tls
        ? tlsConnect({
            port,
            host: "127.0.0.1",
            servername: "localhost",
            rejectUnauthorized: false,
            ALPNProtocols: ["http/1.1"],
          })
        : createConnection(port, "127.0.0.1"),
    );
    expect(raw.split("\r\n")[0]).toBe("HTTP/1.1 408 Request Timeout");
    expect(closedAfterMs).toBeGreaterThanOrEqual(900);
    expect(closedAfterMs).toBeLessThan(3000);
    expect(up.received).toHaveLength(0);
  });
});
