/**
 * The benchmarks' fixed-rate load generator (bench/loadgen.c, compiled with the machine's C compiler)
 * against real Node servers on 127.0.0.1: it sends the rate it is asked for, spread over each period;
 * after a stall of its own process the schedule stays spread (h2load's does not); each framing it meets
 * ends a response where the response ends; failures are counted as such; latency from the time a
 * request was due counts the wait for a busy connection.
 */
import { spawn } from "node:child_process";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { buildLoadgen, fixedRate, parseLog, type FixedRatePass } from "../../bench/loadgen.ts";

const dir = mkdtempSync(join(os.tmpdir(), "meshgate-loadgen-test-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

let binary = "";
beforeAll(() => {
  const built = buildLoadgen(dir);
  if ("error" in built) throw new Error(built.error);
  binary = built.path;
});

/** Runs the generator to its end; resolves with stdout. `during` gets its pid once it started. */
function run(argv: readonly string[], timeoutMs: number, during?: (pid: number) => void): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(argv[0]!, argv.slice(1), { stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    child.stdout.on("data", (d: Buffer) => (out += d.toString()));
    child.stderr.on("data", (d: Buffer) => (out += d.toString()));
    const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
    if (child.pid !== undefined) during?.(child.pid);
    child.on("error", reject);
    child.on("exit", (code) => {
      clearTimeout(timer);
      if (code === 0) resolve(out);
      else reject(new Error(`loadgen exited ${code}: ${out}`));
    });
  });
}

async function serve(handler: http.RequestListener): Promise<{ port: number; close: () => Promise<void> }> {
  const server = http.createServer({ keepAliveTimeout: 30_000 }, handler);
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  return {
    port: (server.address() as AddressInfo).port,
    close: () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}

let n = 0;
async function pass(
  port: number,
  o: { rate: number; connections: number; seconds: number; headers?: string[] },
  during?: (pid: number) => void,
): Promise<FixedRatePass> {
  return fixedRate({
    binary,
    prefix: [],
    port,
    path: "/item",
    logFile: join(dir, `log-${n++}.tsv`),
    run: (argv, timeoutMs) => run(argv, timeoutMs, during),
    ...o,
  });
}

/**
 * The largest and the smallest share of the send times that fall in a `windowMs` window of the
 * `periodMs` period (0.5 ms steps, wrapping around): evenly spread sends give both ≈ windowMs / periodMs.
 */
function windowShares(
  starts: readonly number[],
  periodMs: number,
  windowMs: number,
): { max: number; min: number } {
  const bins = new Array<number>(periodMs * 2).fill(0);
  for (const s of starts) bins[Math.floor((s % (periodMs * 1000)) / 500)]!++;
  const shares = bins.map((_, i) => {
    let sum = 0;
    for (let j = 0; j < windowMs * 2; j++) sum += bins[(i + j) % bins.length]!;
    return sum / starts.length;
  });
  return { max: Math.max(...shares), min: Math.min(...shares) };
}

describe("a fixed-rate pass", () => {
  let ok: Awaited<ReturnType<typeof serve>>;
  beforeAll(async () => {
    ok = await serve((_req, res) => res.end('{"ok":true}'));
  });
  afterAll(() => ok.close());

  it("sends_the_rate_asked_for_over_the_time_asked_for", async () => {
    const r = await pass(ok.port, { rate: 400, connections: 4, seconds: 1 });
    expect(r.requests).toBe(400);
    expect(r.socketErrors + r.statusErrors).toBe(0);
    // ±10 %: a stall of a loaded machine at the start shortens the span the rate is computed over.
    expect(r.rps).toBeGreaterThan(360);
    expect(r.rps).toBeLessThan(440);
  });

  it("spreads_the_connections_over_the_period", async () => {
    // 10 connections × 100 req/s: one send every 1 ms; any 3 ms of the 10 ms period has ~30 % of them.
    const r = await pass(ok.port, { rate: 1000, connections: 10, seconds: 1 });
    const { max, min } = windowShares(r.starts, 10, 3);
    expect(max).toBeLessThan(0.45);
    expect(min).toBeGreaterThan(0.15);
  });

  it("keeps_the_schedule_spread_after_a_stall_of_its_own_process", async () => {
    // SIGSTOP for 60 ms (6 periods) at 0.4 s: every connection is late at once. A generator whose timers
    // restart from "now" sends from then on bunched in part of each period (half of it left empty, in the
    // mutation check of this test); this one catches up, then keeps the spread it had.
    let stoppedAt = 0;
    const r = await pass(ok.port, { rate: 1000, connections: 10, seconds: 1.2 }, (pid) => {
      setTimeout(() => {
        stoppedAt = Date.now();
        process.kill(pid, "SIGSTOP");
        setTimeout(() => process.kill(pid, "SIGCONT"), 60);
      }, 400);
    });
    expect(stoppedAt).toBeGreaterThan(0);
    const after = r.starts.filter((s) => s / 1000 > stoppedAt + 200);
    expect(after.length).toBeGreaterThan(300);
    const { max, min } = windowShares(after, 10, 3);
    expect(max).toBeLessThan(0.45);
    expect(min).toBeGreaterThan(0.15);
    expect(r.requests).toBe(1200); // the missed sends went late, none was dropped
  });

  it("sends_the_headers_it_is_given", async () => {
    const seen: string[] = [];
    const s = await serve((req, res) => {
      seen.push(String(req.headers.authorization));
      res.end("x");
    });
    try {
      const r = await pass(s.port, {
        rate: 100,
        connections: 1,
        seconds: 0.2,
        headers: ["Authorization: Bearer abc"],
      });
      expect(r.requests).toBe(20);
      expect(new Set(seen)).toEqual(new Set(["Bearer abc"]));
    } finally {
      await s.close();
    }
  });
});

it("a_port_nobody_listens_on_is_an_error_that_names_it", async () => {
  const s = await serve(() => {});
  const port = s.port;
  await s.close();
  await expect(pass(port, { rate: 100, connections: 1, seconds: 0.2 })).rejects.toThrow(
    new RegExp(`connect to 127\\.0\\.0\\.1:${port}: Connection refused`),
  );
});

describe("responses end where they end", () => {
  const cases: [string, http.RequestListener, { ok: number; status: number; socket: number }][] = [
    ["content_length", (_q, s) => s.end("0123456789"), { ok: 20, status: 0, socket: 0 }],
    [
      "chunked_in_several_writes",
      (_q, s) => {
        s.write("a".repeat(3000));
        setImmediate(() => {
          s.write("b".repeat(20_000));
          s.end("c");
        });
      },
      { ok: 20, status: 0, socket: 0 },
    ],
    [
      "no_content",
      (_q, s) => {
        s.statusCode = 204;
        s.end();
      },
      { ok: 20, status: 0, socket: 0 },
    ],
    [
      "connection_close_each_time",
      (_q, s) => {
        s.setHeader("Connection", "close");
        s.end("bye");
      },
      { ok: 20, status: 0, socket: 0 },
    ],
    [
      "a_5xx_is_a_status_error",
      (_q, s) => {
        s.statusCode = 503;
        s.end("no");
      },
      { ok: 0, status: 20, socket: 0 },
    ],
    [
      "a_response_cut_short_is_a_socket_error",
      (_q, s) => {
        s.setHeader("Content-Length", "100");
        s.write("only part");
        setImmediate(() => s.socket?.destroy());
      },
      { ok: 0, status: 0, socket: 20 },
    ],
  ];
  it.each(cases)("%s", async (_name, handler, want) => {
    const s = await serve(handler);
    try {
      const r = await pass(s.port, { rate: 100, connections: 1, seconds: 0.2 });
      expect(r.requests).toBe(20);
      expect({
        ok: r.requests - r.statusErrors - r.socketErrors,
        status: r.statusErrors,
        socket: r.socketErrors,
      }).toEqual(want);
    } finally {
      await s.close();
    }
  });
});

it("latency_from_the_due_time_counts_the_wait_for_a_busy_connection", async () => {
  // One connection due every 10 ms, each response 25 ms: from send ≈ 25 ms, from due grows request by
  // request (each goes when the previous ends).
  const s = await serve((_q, res) => setTimeout(() => res.end("slow"), 25));
  try {
    const r = await pass(s.port, { rate: 100, connections: 1, seconds: 0.3 });
    expect(r.p50).toBeGreaterThanOrEqual(24);
    expect(r.p50).toBeLessThan(60);
    expect(r.due.p99).toBeGreaterThan(r.p99 + 100);
  } finally {
    await s.close();
  }
});

describe("the request log", () => {
  it.each([
    ["percentiles_from_send_and_from_due", "1000000\t200\t1000\t1500\n1001000\t200\t3000\t3000\n", 2, 0, 0],
    ["status_0_is_a_socket_error", "1000000\t0\t5000\t5000\n", 1, 0, 1],
    ["a_4xx_is_a_status_error", "1000000\t404\t100\t100\n1000100\t200\t100\t100\n", 2, 1, 0],
  ])("%s", (_name, text, requests, statusErrors, socketErrors) => {
    const r = parseLog(text);
    expect([r.requests, r.statusErrors, r.socketErrors]).toEqual([requests, statusErrors, socketErrors]);
  });

  it("reads_send_and_due_latency_into_their_own_percentiles", () => {
    const r = parseLog("1000000\t200\t1000\t1500\n1001000\t200\t3000\t9000\n");
    expect([r.p50, r.p99]).toEqual([3, 3]);
    expect([r.due.p50, r.due.p99]).toEqual([9, 9]);
    expect(r.starts).toEqual([1000000, 1001000]);
  });

  it("refuses_a_malformed_line", () => {
    expect(() => parseLog("1000000\t200\n")).toThrow(/malformed line/);
  });
});
