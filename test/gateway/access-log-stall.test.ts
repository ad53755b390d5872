/**
 * A stalled stdout — a log collector that stopped reading, so the pipe fills and the pending write waits —
 * against a real `meshgate gateway` process: requests keep being served, at most
 * ACCESS_LOG_MAX_BUFFER_BYTES of access lines wait in memory, every line that did not fit is counted
 * (`meshgate_access_log_dropped_total`), and once the collector reads again one `access_log_dropped` line
 * says how many went missing — so written + dropped is every request (runtime/telemetry/logs.ts).
 */
import { mkdtemp, rm } from "node:fs/promises";
import http from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ACCESS_LOG_MAX_BUFFER_BYTES } from "../../runtime/telemetry/logs.ts";
import {
  gatewayConfig,
  request,
  startGatewayProcess,
  startUpstream,
  type Upstream,
} from "../support/gateway.ts";
import { until } from "../sidecar/support.ts";

/** Requests sent while stdout is stalled: several times what the buffer and the pipe can hold. */
const REQUESTS = 6_000;
const CONCURRENCY = 8;
const PATH = "/v1/stalled-stdout";
/** What a stalled reader still takes in: the pipe (64 KiB) and the test's read buffer, generously. */
const STALLED_PIPE_BYTES = 256 * 1024;

let app: Upstream;
let dir: string;

beforeAll(async () => {
  app = await startUpstream();
  dir = await mkdtemp(join(tmpdir(), "meshgate-log-stall-"));
});
afterAll(async () => {
  await app.close();
  await rm(dir, { recursive: true, force: true });
});

function droppedMetric(exposition: string): number {
  const m = /^meshgate_access_log_dropped_total\{proxy="gateway"\} (\d+)$/m.exec(exposition);
  if (m === null) throw new Error(`no meshgate_access_log_dropped_total in:\n${exposition.slice(0, 2000)}`);
  return Number(m[1]);
}

describe("a stalled stdout", () => {
  it("keeps the gateway serving, bounds the waiting access lines, and accounts for every request as a line written or a line counted dropped", async () => {
    const config = gatewayConfig(
      [
        {
          name: "v1",
          match: { path: "/v1/**" },
          to: "app",
          public: true,
          rateLimit: { requests: 100000, per: "1s", scope: "replica" },
        },
      ],
      { app },
    );
    expect(config.telemetry.accessLog.enabled, "the claim needs access lines").toBe(true);
    const gw = await startGatewayProcess(dir, "stall", config);
    const agent = new http.Agent({ keepAlive: true, maxSockets: CONCURRENCY });
    try {
      expect(droppedMetric((await request(`${gw.adminUrl}/metrics`)).body)).toBe(0);
      gw.child.stdout!.pause(); // the collector stops reading: Node's buffer, then the pipe, then ours fill

      const statuses = new Map<number, number>();
      let next = 0;
      await Promise.all(
        Array.from({ length: CONCURRENCY }, async () => {
          while (next < REQUESTS) {
            next++;
            const { status } = await request(`${gw.url}${PATH}`, { agent });
            statuses.set(status, (statuses.get(status) ?? 0) + 1);
          }
        }),
      );
      expect(Object.fromEntries(statuses)).toEqual({ 200: REQUESTS });

      const dropped = droppedMetric((await request(`${gw.adminUrl}/metrics`)).body);
      expect(dropped, "lines dropped while stalled").toBeGreaterThan(0);

      gw.child.stdout!.resume(); // reading again: the buffer drains, then the notice follows
      await until(
        () => gw.output().includes('"event":"access_log_dropped"'),
        10_000,
        "the dropped-lines notice",
      );
      let written: string[] = [];
      await until(
        () => {
          const lines = gw.output().split("\n");
          written = lines.filter((l) => l.includes('"event":"access"') && l.includes(PATH));
          const noticed = lines
            .filter((l) => l.includes('"event":"access_log_dropped"'))
            .reduce((n, l) => n + (JSON.parse(l) as { dropped: number }).dropped, 0);
          return written.length + noticed === REQUESTS && noticed === dropped;
        },
        10_000,
        `written + dropped = ${REQUESTS}, ${dropped} dropped`,
      );
      // What got through while stalled is what the buffer, the pipe and Node's read buffer in this process
      // held: bounded, nowhere near the 6,000 lines sent.
      const writtenBytes = written.reduce((n, l) => n + Buffer.byteLength(l) + 1, 0);
      expect(writtenBytes).toBeLessThanOrEqual(ACCESS_LOG_MAX_BUFFER_BYTES + STALLED_PIPE_BYTES);
      // Served while stalled and after: the stall did not wedge the process.
      expect((await request(`${gw.url}${PATH}`, { agent })).status).toBe(200);
    } finally {
      agent.destroy();
      await gw.stop();
    }
  }, 60_000);
});
