/**
 * `node --expose-gc bench/cache.ts [--quick]`: what the HTTP cache costs.
 *
 * 1. CPU of a hit inside the gateway process: HttpCache.lookup() + respond() over a MemoryStore of 10,000
 *    entries, into a response stub (so only the cache's own work is timed: key, directives, freshness,
 *    header object, Age and Cache-Status) — ns per hit, without and with a Vary header.
 * 2. Memory per entry: 20,000 stored responses (typical headers, bodies of 100 B and 1 KiB built as the
 *    tee builds them), heap + ArrayBuffer growth per entry next to the bytes the store accounts for.
 * 3. Over sockets: a real gateway (startGateway in this process, access log off) in front of an upstream
 *    in another process, `wrk -t1 -c32` on a cached route (every request a hit) and on the same route
 *    uncached (every request forwarded): requests/s, this process's CPU time per request (the gateway's
 *    cost, independent of other load on the machine) and latency. Skipped when wrk is not installed.
 *    With redis-server on the PATH, a third case: the cached route of a second gateway whose cache is
 *    the Redis store (every request a hit: one GET to a local redis-server), with redis-server's own CPU
 *    time per request (from /proc) next to the gateway's.
 *
 * `--sockets`: part 3 only. Benchmarks are not pass/fail; the numbers are printed. The machine is shared:
 * run it when it is quiet (part 3 is the most sensitive to other load).
 */
import { execFile, spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import type { OutgoingHttpHeaders, ServerResponse } from "node:http";
import { promisify } from "node:util";
import pino from "pino";
import { HttpCache, type CacheRequest, type RouteCache } from "../runtime/cache/cache.ts";
import { primaryKey } from "../runtime/cache/policy.ts";
import { MemoryStore, type StoredResponse } from "../runtime/cache/store.ts";
import { startGateway } from "../runtime/gateway/server.ts";
import { startRedis, type TestRedis } from "../test/support/redis.ts";
import { median, specGatewayConfig, table } from "./support.ts";

const QUICK = process.argv.includes("--quick");
const RUNS = QUICK ? 3 : 7;
const HITS_PER_RUN = 200_000;

const gc = (globalThis as { gc?: () => void }).gc;
/** wrk runs as a child process while this process serves the gateway: never a synchronous spawn. */
const exec = promisify(execFile);

/** A received chunk (as from a socket read); entries copy from it, as the tee's Buffer.concat does. */
const CHUNK = Buffer.alloc(64 * 1024, "x");

function entry(body: number, now: number): StoredResponse {
  const chunk = CHUNK.subarray(0, Math.ceil(body / 2));
  return {
    kind: "response",
    status: 200,
    headers: {
      "content-type": "application/json",
      "cache-control": "max-age=3600",
      date: new Date(now).toUTCString(),
      etag: `"${Math.random().toString(36).slice(2, 12)}"`,
      vary: "accept-encoding",
      "x-request-id": "5f0c6f1e-1d3b-4e55-9a7e-8d2b6c1e4f00",
    },
    body: Buffer.concat([chunk, chunk], body), // as the tee builds bodies (pooled below 4 KiB)
    requestTime: now,
    responseTime: now,
    initialAgeMs: 0,
    lifetimeMs: 3_600_000,
    mustRevalidate: false,
    etag: '"e"',
    lastModified: null,
    date: null,
  };
}

// ── 1. CPU per hit ──
function hitCost(): string[][] {
  const rows: string[][] = [];
  for (const vary of [false, true]) {
    const store = new MemoryStore({ maxBytes: 1 << 30 });
    const cache = new HttpCache({ store });
    const route: RouteCache = {
      ttlMs: 60_000,
      vary: vary ? ["accept-encoding"] : [],
      perPrincipal: false,
      maxEntryBytes: 1 << 20,
      staleWhileRevalidateMs: 0,
      staleIfErrorMs: 0,
    };
    const now = Date.now();
    const N = 10_000;
    const requests: CacheRequest[] = [];
    for (let i = 0; i < N; i++) {
      const headers = {
        host: "api.example",
        accept: "*/*",
        "accept-encoding": "gzip, br",
        "user-agent": "bench",
      };
      const path = `/api/v1/items/${i}`;
      const primary = primaryKey(path, "", "api.example", "items", null);
      if (vary) {
        store.set(primary, { kind: "vary", names: ["accept-encoding"] }, 3_600_000);
        store.set(`${primary}\taccept-encoding:gzip,br\n`, entry(200, now), 3_600_000);
      } else store.set(primary, entry(200, now), 3_600_000);
      requests.push({
        route: "items",
        config: route,
        method: "GET",
        host: "api.example",
        path,
        query: "",
        headers,
        principal: null,
      });
    }
    let sink = 0;
    const res = {
      writeHead(status: number, h: OutgoingHttpHeaders) {
        sink += status + (h.age as string).length;
        return this;
      },
      end(b?: Buffer) {
        sink += b ? b.length : 0;
        return this;
      },
    } as unknown as ServerResponse;
    // CPU time of this process (user + system), not wall time: on a shared machine the wall clock also
    // counts the time other processes had the core.
    const run = () => {
      const t0 = process.cpuUsage();
      for (let i = 0; i < HITS_PER_RUN; i++) {
        const d = cache.lookup(requests[i % N]!);
        if (d instanceof Promise || d.kind !== "hit") throw new Error("expected a hit");
        cache.respond(d, res);
      }
      const t = process.cpuUsage(t0);
      return ((t.user + t.system) * 1e3) / HITS_PER_RUN;
    };
    for (let i = 0; i < 3; i++) run();
    const ns = Array.from({ length: RUNS }, run);
    rows.push([
      vary ? "hit, Vary: accept-encoding" : "hit, no Vary",
      median(ns).toFixed(0),
      Math.min(...ns).toFixed(0),
    ]);
    if (sink === 0) throw new Error("unreachable");
  }
  return rows;
}

// ── 2. memory per entry ──
function memoryPerEntry(): string[][] {
  if (!gc) return [["(run with node --expose-gc)", "", "", ""]];
  const rows: string[][] = [];
  for (const body of [100, 1024]) {
    const N = 20_000;
    const now = Date.now();
    gc();
    gc();
    const before = process.memoryUsage();
    const store = new MemoryStore({ maxBytes: 1 << 30 });
    for (let i = 0; i < N; i++) {
      const key = primaryKey(`/api/v1/items/${i}`, "page=2&sort=name", "api.example", "items", null);
      store.set(key, entry(body, now), 3_600_000);
    }
    gc();
    gc();
    const after = process.memoryUsage();
    const real = (after.heapUsed - before.heapUsed + (after.arrayBuffers - before.arrayBuffers)) / N;
    const accounted = store.stats().bytes / N;
    rows.push([`${body} B body`, real.toFixed(0), accounted.toFixed(0), (real / accounted).toFixed(2)]);
    if (store.stats().entries !== N) throw new Error("entries missing");
    store.purgeAll(); // the next size starts from an empty heap even if this store object lingers
  }
  return rows;
}

// ── 3. over sockets ──
async function overSockets(): Promise<string[][]> {
  try {
    await exec("wrk", ["--version"]);
  } catch (err) {
    if ((err as { code?: string }).code === "ENOENT") return [["(wrk not installed)", "", "", "", ""]];
  }
  // The upstream runs in its own process, so this process's CPU time is the gateway's alone.
  const upstream = spawn(
    process.execPath,
    [
      "-e",
      `const body = JSON.stringify({ id: 42, name: "item", tags: ["a", "b"], price: 9.99, stock: 12 });
       const s = require("node:http").createServer((_q, r) => {
         r.writeHead(200, { "content-type": "application/json", "content-length": Buffer.byteLength(body),
           "cache-control": "max-age=3600" });
         r.end(body);
       });
       s.listen(0, "127.0.0.1", () => console.log(s.address().port));`,
    ],
    { stdio: ["ignore", "pipe", "inherit"] },
  );
  const port = await new Promise<number>((resolve) =>
    upstream.stdout!.once("data", (b: Buffer) => resolve(Number(b.toString().trim()))),
  );
  const PUBLIC = { public: true, rateLimit: { requests: 1_000_000, per: "1s" } };
  const config = specGatewayConfig({
    routes: [
      { name: "cached", match: { path: "/cached/**" }, to: "app", cache: { ttl: "1h" }, ...PUBLIC },
      { name: "plain", match: { path: "/plain/**" }, to: "app", ...PUBLIC },
    ],
    upstreams: { app: port },
    observability: { logs: { access: false } },
  });
  const start = (c: typeof config) =>
    startGateway({
      config: c,
      host: "127.0.0.1",
      ports: { listeners: Object.fromEntries(c.listeners.map((l) => [l.name, 0])), admin: 0 },
      logger: pino({ level: "warn" }),
    });
  const gw = await start(config);
  const url = `http://127.0.0.1:${Object.values(gw.ports.listeners)[0]}`;
  const cases: [name: string, url: string, redisPid: number, connections: number][] = [
    ["cached route (hits)", `${url}/cached/items/42`, 0, 32],
    ["same route uncached (forwarded)", `${url}/plain/items/42`, 0, 32],
    ["cached route (hits), 1 connection", `${url}/cached/items/42`, 0, 1],
  ];
  let redis: TestRedis | null = null;
  const redisGateways: Awaited<ReturnType<typeof start>>[] = [];
  try {
    redis = await startRedis();
    // With the local layer (the default, 16MiB) and without it (every hit a GET to Redis).
    for (const [label, localSize] of [
      ["Redis store + local layer", "16MiB"],
      ["Redis store, no local layer", "0B"],
    ] as const) {
      const g = await start(
        specGatewayConfig({
          routes: [
            { name: "cached", match: { path: "/cached/**" }, to: "app", cache: { ttl: "1h" }, ...PUBLIC },
          ],
          upstreams: { app: port },
          gateway: { cache: { redis: { url: redis.url, localSize } } },
          observability: { logs: { access: false } },
        }),
      );
      redisGateways.push(g);
      const redisUrl = `http://127.0.0.1:${Object.values(g.ports.listeners)[0]}/cached/items/42`;
      cases.push([`cached route, ${label} (hits)`, redisUrl, redis.pid(), 32]);
      cases.push([`cached route, ${label} (hits), 1 connection`, redisUrl, redis.pid(), 1]);
    }
  } catch (err) {
    console.log(`(no Redis case: ${(err as Error).message})`);
  }
  const seconds = QUICK ? 3 : 8;
  const rows: string[][] = [];
  try {
    for (const [name, target, redisPid, connections] of cases) {
      await exec("wrk", ["-t1", `-c${connections}`, "-d2s", target]); // warm-up
      const redis0 = redisPid ? processCpuUs(redisPid) : 0;
      const cpu0 = process.cpuUsage();
      const { stdout: out } = await exec("wrk", [
        "-t1",
        `-c${connections}`,
        `-d${seconds}s`,
        "--latency",
        target,
      ]);
      if (!/Requests\/sec/.test(out) || /Non-2xx/.test(out)) console.log(out);
      const rps = /Requests\/sec:\s+([\d.]+)/.exec(out)?.[1] ?? "?";
      const total = Number(/(\d+) requests in/.exec(out)?.[1] ?? "0");
      const cpu = process.cpuUsage(cpu0);
      const redisUs = redisPid ? processCpuUs(redisPid) - redis0 : NaN;
      const usPerRequest = total > 0 ? (cpu.user + cpu.system) / total : NaN;
      const p50 = /^\s+50%\s+(\S+)\s*$/m.exec(out)?.[1] ?? "?";
      const p99 = /^\s+99%\s+(\S+)\s*$/m.exec(out)?.[1] ?? "?";
      rows.push([
        name,
        Number(rps).toFixed(0),
        usPerRequest.toFixed(1),
        redisPid ? (redisUs / total).toFixed(1) : "",
        p50,
        p99,
      ]);
    }
  } finally {
    await gw.drain();
    for (const g of redisGateways) await g.drain();
    await redis?.stop();
    upstream.kill();
  }
  return rows;
}

/** A process' user + system CPU time (µs) from /proc (Linux; clock ticks of 10 ms). */
function processCpuUs(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(fields[11]) + Number(fields[12])) * 10_000;
}

const right = (i: number) => i > 0;
// Sockets first: the in-process parts leave a large heap and call sites shaped by stubs behind them.
console.log("\nOver sockets (one gateway process, wrk -t1 -c32 unless said):");
for (const l of table(
  ["case", "req/s", "gateway CPU µs/req", "redis-server CPU µs/req", "p50", "p99"],
  await overSockets(),
  right,
))
  console.log(`  ${l}`);
if (!process.argv.includes("--sockets")) {
  console.log("\nCPU per hit (HttpCache.lookup + respond, 10,000 entries), ns of process CPU time:");
  for (const l of table(["case", "median", "min"], hitCost(), right)) console.log(`  ${l}`);
  console.log("\nMemory per entry (20,000 entries; headers as below; key ~70 chars), bytes:");
  for (const l of table(["body", "heap+buffers", "accounted", "ratio"], memoryPerEntry(), right))
    console.log(`  ${l}`);
}
