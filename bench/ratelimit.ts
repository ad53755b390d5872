/**
 * `node bench/ratelimit.ts [--quick]`: the cost of a rate-limit check.
 *
 * In process (ns per check over 2M checks, median of 5 runs after a warm-up):
 *   local bucket          `LocalBuckets.check` on one hot key
 *   local, 10k keys       the same spread over 10,000 keys (map lookups miss the CPU cache more)
 *   route limiter (ip)    `RouteLimiter.check` with the key derived from a client address
 *   worker lease          `LeaseClient` on its synchronous path (tokens in hand; the primary in the same
 *                         process answers asks through setImmediate, as IPC would)
 *
 * Redis (a redis-server started on a free port of 127.0.0.1 for the run): EVALSHA of the token-bucket
 * script through one pipelined connection, at 1, 16 and 128 checks in flight: checks per second and
 * the latency percentiles of one check. Benchmarks are not pass/fail.
 */
import { performance } from "node:perf_hooks";
import { compilePolicy } from "../runtime/ratelimit/bucket.ts";
import { LeaseClient, LeaseServer } from "../runtime/ratelimit/lease.ts";
import { RateLimiters } from "../runtime/ratelimit/limiter.ts";
import { LocalBuckets } from "../runtime/ratelimit/local.ts";
import { RedisBuckets } from "../runtime/ratelimit/redis-store.ts";
import { RedisClient } from "../runtime/redis/client.ts";
import { gatewayConfig } from "../test/support/gateway.ts";
import { startRedis } from "../test/support/redis.ts";

const quick = process.argv.includes("--quick");
const CALLS = quick ? 200_000 : 2_000_000;
const RUNS = 5;

function measure(body: (n: number) => void): { median: number; min: number } {
  body(CALLS);
  const times: number[] = [];
  for (let r = 0; r < RUNS; r++) {
    const start = process.hrtime.bigint();
    body(CALLS);
    times.push(Number(process.hrtime.bigint() - start) / CALLS);
  }
  times.sort((a, b) => a - b);
  return { median: times[Math.floor(RUNS / 2)]!, min: times[0]! };
}

// A limit high enough that the hot key never runs dry (the check, not the refusal, is measured).
const policy = compilePolicy({ requests: 1_000_000_000, periodMs: 1000, burst: 1_000_000_000 });
let sink = 0;
let t = 0;

const local = new LocalBuckets(policy);
const spread = new LocalBuckets(policy);
const keys = Array.from({ length: 10_000 }, (_, i) => `i:10.0.${i >> 8}.${i & 255}`);

const registry = new RateLimiters();
const plan = registry.configure(
  gatewayConfig(
    [
      {
        name: "r",
        match: { path: "/r" },
        to: "app",
        public: true,
        rateLimit: { requests: 1_000_000_000, per: "1s", scope: "replica" },
      },
    ],
    { app: { port: 1 } },
  ),
);
registry.activate(plan);
const routeLimiter = plan.limiters.get("r")!;

const server = new LeaseServer();
const leaseClient: LeaseClient = new LeaseClient(
  (req) => setImmediate(() => leaseClient.receive(server.handle(req, 2))),
  { leaseMax: 4096 },
);
const leased = leaseClient.limiter("r", policy);

async function leasedRun(n: number): Promise<{ ns: number; sync: number }> {
  let sync = 0;
  const start = process.hrtime.bigint();
  for (let i = 0; i < n; i++) {
    const d = leased.check("i:10.0.0.1");
    if (d instanceof Promise) await d;
    else {
      sync++;
      if (d.allowed) sink++;
    }
  }
  return { ns: Number(process.hrtime.bigint() - start) / n, sync };
}

const rows: [string, string][] = [];
const fmt = (r: { median: number; min: number }) => `${r.median.toFixed(0)} ns (min ${r.min.toFixed(0)})`;
rows.push([
  "local bucket, one key",
  fmt(
    measure((n) => {
      for (let i = 0; i < n; i++) if (local.check("i:10.0.0.1", (t += 1) >> 20).allowed) sink++;
    }),
  ),
]);
rows.push([
  "local bucket, 10k keys",
  fmt(
    measure((n) => {
      for (let i = 0; i < n; i++) if (spread.check(keys[i % 10_000]!, (t += 1) >> 20).allowed) sink++;
    }),
  ),
]);
rows.push([
  "route limiter (ip key)",
  fmt(
    measure((n) => {
      for (let i = 0; i < n; i++) {
        const d = routeLimiter.check("203.0.113.7", undefined, undefined, undefined);
        if (!(d instanceof Promise) && d.allowed) sink++;
      }
    }),
  ),
]);
await leasedRun(CALLS);
const leasedRuns: { ns: number; sync: number }[] = [];
for (let r = 0; r < RUNS; r++) leasedRuns.push(await leasedRun(CALLS));
leasedRuns.sort((a, b) => a.ns - b.ns);
const mid = leasedRuns[Math.floor(RUNS / 2)]!;
rows.push([
  "worker lease (sync path)",
  `${mid.ns.toFixed(0)} ns (min ${leasedRuns[0]!.ns.toFixed(0)}), ${((100 * mid.sync) / CALLS).toFixed(2)} % synchronous`,
]);
leaseClient.close();

console.log("rate-limit check, in process");
for (const [name, v] of rows) console.log(`  ${name.padEnd(28)} ${v}`);

// ── Redis ──
const redis = await startRedis();
const client = new RedisClient({ url: redis.url, commandTimeoutMs: 2000 });
await client.connect();
const buckets = new RedisBuckets(client, "bench", policy, { failMode: "closed" });
console.log(`rate-limit check through Redis (redis-server ${redis.url.replace(/\/0$/, "")}, loopback)`);
for (const inflight of [1, 16, 128]) {
  const total = quick ? 5_000 : 50_000;
  const lat: number[] = [];
  let next = 0;
  const worker = async () => {
    while (next < total) {
      const i = next++;
      const s = performance.now();
      const d = await buckets.check(`i:10.1.${(i >> 8) & 255}.${i & 255}`);
      lat.push(performance.now() - s);
      if (d.storeError) throw new Error(`store error ${d.storeError}`);
    }
  };
  const started = performance.now();
  await Promise.all(Array.from({ length: inflight }, worker));
  const seconds = (performance.now() - started) / 1000;
  lat.sort((a, b) => a - b);
  const q = (p: number) => lat[Math.min(lat.length - 1, Math.floor(p * lat.length))]!.toFixed(3);
  console.log(
    `  ${String(inflight).padStart(3)} in flight: ${Math.round(total / seconds)
      .toString()
      .padStart(6)} checks/s, latency p50 ${q(0.5)} ms, p99 ${q(0.99)} ms, max ${q(1)} ms`,
  );
}
await client.close();
await redis.stop();
await registry.close();
if (sink < 0) console.log(sink);
