/**
 * `npm run bench:gateway` (`node bench/gateway.ts [--quick]`): the meshgate gateway next to nginx, HAProxy
 * and `@fastify/http-proxy`, in one run, against the same upstream — the method of
 * shared/notes/benchmarking.md:
 *
 * - upstream: nginx `return 200 '<104-byte JSON>'`, one worker, on CPU 1, with wrk; each proxy alone on
 *   CPU 0 (`taskset`), everything under `nice -n -15` when permitted, and the session's autogroup at
 *   nice -15 (restored at exit) so that other sessions' processes rank below; all on 127.0.0.1, keep-alive;
 * - proxies: nginx (1 worker, `upstream` with `keepalive 64`), HAProxy (`nbthread 1`, `http-reuse
 *   always`), a minimal fastify app with `@fastify/http-proxy` (bench/fastify-proxy.ts, 1 process), the
 *   minimal Node proxy (bench/node-proxy.mjs: `http.createServer` + `http.request` over a keep-alive
 *   agent, 1 process — Node's own cost, none of a gateway's work) and `meshgate gateway --config <file> --workers 1` twice: the bare route (one public `/**` route,
 *   plaintext, static discovery, access logs off) and the full route (the same with a JWT checked
 *   against an inline key and a scope, a rate limit keyed by the token's subject, request and response
 *   header transforms; wrk and the fixed-rate generator send the bearer token); the configs are built
 *   from a spec by parseSpec + translate, as the gateway tests do;
 * - per proxy: a warm-up, then max throughput `wrk -t1 -c64 --latency` (REPS runs, median), and two
 *   fixed-rate passes, ~1000 and ~5000 rps (REPS runs each, median per percentile), open loop with
 *   bench/loadgen.c (compiled with the machine's C compiler: 10 / 50 keep-alive connections × 100 req/s
 *   on absolute schedules spread over each 10 ms; percentiles from the time each request was sent, and
 *   also from the time it was due, where a stall counts for every request it delays); the ~1k pass is
 *   also reported as latency added over the same pass straight to the upstream. `--h2load` (or no C
 *   compiler) uses h2load instead (`--h1`, the same clients, started 1 ms apart; its clients line up
 *   after a stall of the load CPU — bench/loadgen.ts); without either the passes fall back to wrk with a
 *   Lua `delay()` (closed loop);
 * - cost: proxy CPU from /proc/<pid>/stat over each run (whole process tree) → vCPU per 1000 rps at
 *   ~1000 rps; RSS: max VmRSS (tree total) sampled every 250 ms, and once idle after start ("cold");
 * - noise: before each run the bench waits for a quiet machine; a run during which other processes
 *   (anything outside this bench's process tree: /proc/stat busy time minus the tree's) used more than
 *   0.25 cores is discarded and repeated — at most MAX_RETRIES times per run, and waiting plus repeating
 *   take at most SLACK_S seconds in all, so the run stays bounded; a noisy run kept after that is marked
 *   `~` in the table.
 *
 * - loaded together: two proxies on CPU 0, each loaded by its own wrk -c64 at the same time (REPS runs),
 *   so the host's drift — tens of percent between the sequential passes above — hits both alike: the
 *   full route against the bare one, meshgate's bare route against nginx and against
 *   @fastify/http-proxy (and, as a reference without a goal, against the minimal Node proxy); those
 *   three goals use the median of the per-run rps ratios (the sequential ratios are printed beside them);
 * - worker scaling: meshgate (`--workers 1` / `2`), the minimal Node proxy the goal names
 *   (bench/node-proxy.mjs: `node:cluster`, `http.request` over a keep-alive agent) and nginx
 *   (`worker_processes 1` / `2`) unpinned, with `wrk -t2 -c64` on every CPU as well (the load generator
 *   shares the cores); both configurations run at once, each warmed up, then measured alternately in
 *   ABBA order (drift cancels), median rps; `--no-scaling` skips it, `--only-scaling` runs it alone.
 *
 * `--quick`: 1 run of 5 s per measurement, 2 s warm-up (a smoke run, about 2 minutes; the full run
 * takes 6–8). `--no-ejection`: meshgate's outlier detection never ejects (for measuring around a gateway
 * that ejects its only upstream when clients disconnect mid-request — the notes show when that
 * happens). A run with more than 1 % errors is marked `!` and left out of the medians when other runs
 * are clean; the gateway's own error counters (admin /metrics) are printed with it.
 *
 * `--h2load`: the fixed-rate passes with h2load instead of bench/loadgen.c (the numbers of earlier runs).
 *
 * Needs nginx, haproxy, wrk and a C compiler or h2load (`apt-get install -y nginx haproxy wrk gcc`;
 * a dev-machine benchmark, not CI). Every child (nginx, haproxy, node, wrk, the load generator) runs in
 * its own process group, with its config, pid and log files in a temp dir, and is stopped at exit, on
 * Ctrl-C too.
 * Benchmarks are not pass/fail: a missed goal is reported, never turned into a non-zero exit.
 */
import { spawnSync } from "node:child_process";
import { generateKeyPairSync } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { SignJWT } from "jose";
import {
  describeHostReport,
  hostReport,
  startHostProbe,
  summarizeHost,
  type HostReport,
} from "./hostprobe.ts";
import { buildLoadgen, fixedRate } from "./loadgen.ts";
import {
  median,
  medianCost,
  meshgateEntry,
  stallsBetween,
  scalingBound,
  scalingCost,
  specGatewayConfig,
  table,
  type ScalingCost,
} from "./support.ts";
import {
  allProcs,
  freePort,
  get,
  have,
  machineBusy,
  processes,
  ready as waitReady,
  TCK,
  treeRssKiB,
  treeTicks,
  type Started,
} from "./procs.ts";

// ───────────── settings ─────────────

const QUICK = process.argv.includes("--quick");
const REPS = QUICK ? 1 : 3;
const DURATION_S = QUICK ? 5 : 10;
const WARMUP_S = QUICK ? 2 : 3;
const NO_EJECTION = process.argv.includes("--no-ejection");
/** `--no-scaling`: skip the worker-scaling pass (1 vs 2 workers, unpinned). */
const SCALING = !process.argv.includes("--no-scaling");
/** `--only-scaling`: run the worker-scaling pass alone (its own report; no throughput or latency passes). */
const ONLY_SCALING = process.argv.includes("--only-scaling");
/**
 * `--versus-entry=FILE`: instead of the report, an A/B of two builds — this run's bundle (A) and FILE (B,
 * e.g. a bundle of another revision: `npm run build` there, copy dist/meshgate.js), the bare route of each
 * loaded together on CPU 0 (REPS runs); B's rps over A's is the ratio of their costs per request,
 * whatever the host's speed (sequential passes drift by tens of percent on this machine).
 */
const VERSUS_ENTRY =
  process.argv.find((a) => a.startsWith("--versus-entry="))?.slice("--versus-entry=".length) ?? null;
/**
 * `--versus-flags="…"`: instead of the report, an A/B of Node/V8 flags — this tree's bundle with the usual
 * flags (A: `--node-flags`, default none) and with these (B). Two measures: throughput, the bare routes
 * loaded together on CPU 0 (REPS runs, B's rps over A's as with `--versus-entry`); and the 5k rps
 * fixed-rate pass, each gateway alone on CPU 0 in turn (the other idle), in ABBA order over VERSUS_ROUNDS
 * rounds so that the host's drift hits both alike — the median of each one's p50/p99 and CPU.
 */
const VERSUS_FLAGS = (() => {
  const arg = process.argv.find((a) => a.startsWith("--versus-flags="));
  return arg ? arg.slice("--versus-flags=".length).split(/\s+/).filter(Boolean) : null;
})();
/** ABBA rounds of the `--versus-flags` latency phase (each round: one pass of A and one of B). */
const VERSUS_ROUNDS = QUICK ? 2 : 6;
/** `--node-flags="…"`: Node/V8 flags for meshgate's processes (default: none — Node's own settings). */
const MESHGATE_NODE_FLAGS = (() => {
  const arg = process.argv.find((a) => a.startsWith("--node-flags="));
  return arg ? arg.slice("--node-flags=".length).split(/\s+/).filter(Boolean) : [];
})();
const NOISE_LIMIT = 0.25; // cores used by other processes during a run
const MAX_ERROR_RATE = 0.01; // a run with more failed requests is marked failed (!)
const MAX_RETRIES = 2; // per run
/** Extra time the whole bench may spend waiting for a quiet machine and repeating noisy runs. */
const SLACK_S = QUICK ? 30 : 80;
const QUIET_WAIT_S = 20; // at most, before one run
const PATH = "/api/v1/items/42";
const FIXED_DELAY_MS = 10;
const C_MAX = 64;
const C_1K = 10;
const C_5K = 50;
const ROOT = new URL("../", import.meta.url).pathname;
/** Worker scaling: warm-up per configuration, ABBA blocks (4 runs each), and each run's length. */
const SCALING_WARMUP_S = QUICK ? 2 : 8;
const SCALING_ROUNDS = QUICK ? 1 : 2;
const SCALING_RUN_S = QUICK ? 3 : 5;
const GOALS = { vsNginx: 0.3, vsFastify: 1.5, p99VsNginx: 1.5, fullVsBare: 0.85, twoWorkers: 1.4 };

const BODY = (() => {
  const base = {
    id: 42,
    name: "meshgate bench item",
    price: 12.5,
    tags: ["alpha", "beta"],
    ok: true,
    pad: "",
  };
  base.pad = "x".repeat(104 - JSON.stringify(base).length);
  const text = JSON.stringify(base);
  if (Buffer.byteLength(text) !== 104) throw new Error("the response body must be 104 bytes");
  return text;
})();

// ───────────── processes ─────────────

const log = (msg: string) => process.stderr.write(`[bench] ${msg}\n`);
const tmp = mkdtempSync(join(os.tmpdir(), "meshgate-bench-"));
const cpus = os.availableParallelism();
const PROXY_CPU = "0";
const LOAD_CPU = cpus >= 2 ? "1" : "0";

const procs = processes({ label: "bench", tmp, loadCpu: LOAD_CPU, pin: true, autogroup: true });
const { nice: NICE, autogroup: AUTOGROUP, taskset: TASKSET, prefix, start, stop } = procs;
/** Set by Ctrl-C (or another stop signal): nothing more is measured or reported. */
const interrupted = () => procs.interrupted();

/** Waits until the proxy answers 200 with the upstream's body (10 s at most). */
const ready = (name: string, port: number, s: Started | null, headers: readonly string[] = []) =>
  waitReady(procs, { name, port, path: PATH, body: BODY, headers }, s ? [s] : [], 10_000);

interface Snapshot {
  readonly t: number;
  readonly busy: number;
  readonly ours: number;
  readonly proxy: number;
}

function snapshot(proxyPid: number | null): Snapshot {
  const procs = allProcs();
  return {
    t: performance.now(),
    busy: machineBusy(),
    ours: treeTicks(process.pid, procs),
    proxy: proxyPid === null ? 0 : treeTicks(proxyPid, procs),
  };
}

/** Cores used by processes outside this bench's tree between two snapshots. */
const othersCores = (a: Snapshot, b: Snapshot) =>
  Math.max(0, b.busy - a.busy - (b.ours - a.ours)) / TCK / ((b.t - a.t) / 1000);

let slackSpent = 0;

/** Waits (within the slack budget) until other processes use at most NOISE_LIMIT cores. */
async function waitQuiet(proxyPid: number | null): Promise<number> {
  const began = performance.now();
  let others: number;
  for (;;) {
    const a = snapshot(proxyPid);
    await sleep(500);
    others = othersCores(a, snapshot(proxyPid));
    if (others <= NOISE_LIMIT) break;
    const waited = (performance.now() - began) / 1000;
    if (waited >= QUIET_WAIT_S || slackSpent + waited >= SLACK_S) {
      log(`the machine is not quiet (others use ${others.toFixed(2)} cores); running anyway`);
      break;
    }
  }
  slackSpent += Math.max(0, (performance.now() - began) / 1000 - 0.5);
  return others;
}

// ───────────── wrk ─────────────

interface WrkResult {
  readonly rps: number;
  readonly requests: number;
  /** Latency percentiles in ms. */
  readonly p50: number;
  readonly p90: number;
  readonly p99: number;
  /** Connect, read, write errors and timeouts. */
  readonly socketErrors: number;
  /** Responses with a status ≥ 400. */
  readonly statusErrors: number;
  /** Fixed-rate passes: what the host-speed probe saw (bench/hostprobe.ts). */
  readonly host?: HostReport;
  /** loadgen passes: the percentiles from the time each request was due (the others are from when it was sent). */
  readonly due?: { readonly p50: number; readonly p90: number; readonly p99: number };
}

const DONE_LUA = `
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("MGBENCH requests=%d duration_us=%d p50=%d p90=%d p99=%d socket=%d status=%d\\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), e.connect + e.read + e.write + e.timeout, e.status))
end
`;
const DELAY_LUA = `function delay()\n  return ${FIXED_DELAY_MS}\nend\n${DONE_LUA}`;
const doneScript = join(tmp, "done.lua");
const delayScript = join(tmp, "delay.lua");
writeFileSync(doneScript, DONE_LUA);
writeFileSync(delayScript, DELAY_LUA);

const H2LOAD = have("h2load");
/**
 * The fixed-rate passes' generator: bench/loadgen.c (compiled here; absolute per-connection schedules;
 * latency from the time each request was sent, and from the time it was due), or with `--h2load` (or no
 * C compiler) h2load — whose clients line up into one burst per period after a stall of the load CPU
 * (bench/loadgen.ts) — or, with neither, wrk with a delay script (closed loop).
 */
const LOADGEN = process.argv.includes("--h2load") ? null : buildLoadgen(tmp);
const LOADGEN_BINARY = LOADGEN && "path" in LOADGEN ? LOADGEN.path : null;
const FIXED: "loadgen" | "h2load" | "wrk" = LOADGEN_BINARY ? "loadgen" : H2LOAD ? "h2load" : "wrk";
/** Requests per second each client (keep-alive connection) sends in the fixed-rate passes. */
const RPS_PER_CLIENT = 100;

/** A fixed-rate pass with the generator chosen (FIXED), `rate / 100` keep-alive connections. */
async function fixedRatePass(
  port: number,
  rate: number,
  seconds: number,
  headers: readonly string[] = [],
): Promise<WrkResult> {
  if (LOADGEN_BINARY === null) return h2load(port, rate, seconds, headers);
  return fixedRate({
    binary: LOADGEN_BINARY,
    prefix: prefix(LOAD_CPU),
    port,
    path: PATH,
    rate,
    connections: Math.max(1, Math.round(rate / RPS_PER_CLIENT)),
    seconds,
    headers,
    logFile: join(tmp, `loadgen-${port}-${rate}.tsv`),
    run: (argv, timeoutMs) => procs.output(argv, timeoutMs),
    probe: { file: join(tmp, `hostprobe-${port}-${rate}.json`), cpu: TASKSET ? LOAD_CPU : null, nice: NICE },
  });
}

/**
 * A fixed-rate (open-loop) pass with h2load over HTTP/1.1: `rate / 100` keep-alive clients, each sending
 * 100 requests per second on its own schedule; clients start 1 ms apart so the load is spread over each
 * 10 ms period instead of arriving in one burst. Latency percentiles come from h2load's per-request log
 * (the time from sending a request to the end of its response).
 */
async function h2load(
  port: number,
  rate: number,
  seconds: number,
  headers: readonly string[] = [],
): Promise<WrkResult> {
  const clients = Math.max(1, Math.round(rate / RPS_PER_CLIENT));
  const logFile = join(tmp, `h2load-${port}-${rate}.tsv`);
  rmSync(logFile, { force: true });
  const argv = [
    ...prefix(LOAD_CPU),
    "h2load",
    "--h1",
    `-c${clients}`,
    `-n${clients * RPS_PER_CLIENT * seconds}`,
    "-r1",
    "--rate-period=1ms",
    `--rps=${RPS_PER_CLIENT}`,
    "-T5",
    ...headers.flatMap((h) => ["-H", h]),
    `--log-file=${logFile}`,
    `http://127.0.0.1:${port}${PATH}`,
  ];
  // The probe runs on the load CPU for the whole pass (h2load starts its clients over the first second).
  const probe = startHostProbe(
    seconds + 2,
    join(tmp, `hostprobe-${port}-${rate}.json`),
    TASKSET ? LOAD_CPU : null,
    NICE,
  );
  const out = await procs.output(argv, (seconds + 20) * 1000);
  const probed = await probe.result();
  let text: string;
  try {
    text = readFileSync(logFile, "utf8");
  } catch {
    throw new Error(`h2load wrote no request log:\n${out.trim()}`);
  }
  const starts: number[] = [];
  const durations: number[] = [];
  let statusErrors = 0;
  for (const line of text.split("\n")) {
    if (!line) continue;
    const [start, status, us] = line.split("\t").map(Number) as [number, number, number];
    starts.push(start);
    durations.push(us);
    if (!(status >= 200 && status < 400)) statusErrors++;
  }
  const m =
    /requests: (\d+) total, \d+ started, \d+ done, \d+ succeeded, (\d+) failed, (\d+) errored, (\d+) timeout/.exec(
      out,
    );
  const socketErrors = m ? Number(m[3]) + Number(m[4]) + Math.max(0, Number(m[1]) - durations.length) : 0;
  const host = probed === null ? undefined : hostReport(probed, starts, durations);
  durations.sort((a, b) => a - b);
  const pct = (q: number) =>
    durations.length ? durations[Math.min(durations.length - 1, Math.floor(durations.length * q))]! / 1e3 : 0;
  const span = starts.length > 1 ? (Math.max(...starts) - Math.min(...starts)) / 1e6 : seconds;
  return {
    host,
    rps: durations.length / Math.max(span, 1e-3),
    requests: durations.length,
    p50: pct(0.5),
    p90: pct(0.9),
    p99: pct(0.99),
    socketErrors,
    statusErrors,
  };
}

async function wrk(
  port: number,
  connections: number,
  seconds: number,
  script: string,
  headers: readonly string[] = [],
  spread: { cpus: string; threads: number } = { cpus: LOAD_CPU, threads: 1 },
): Promise<WrkResult> {
  const argv = [
    ...prefix(spread.cpus),
    "wrk",
    `-t${spread.threads}`,
    `-c${connections}`,
    `-d${seconds}s`,
    "--latency",
    "--timeout",
    "5s",
    "-s",
    script,
    ...headers.flatMap((h) => ["-H", h]),
    `http://127.0.0.1:${port}${PATH}`,
  ];
  const out = await procs.output(argv, (seconds + 20) * 1000);
  const m =
    /MGBENCH requests=(\d+) duration_us=(\d+) p50=(\d+) p90=(\d+) p99=(\d+) socket=(\d+) status=(\d+)/.exec(
      out,
    );
  if (!m) throw new Error(`wrk printed no result:\n${out.trim()}`);
  const [requests, us, p50, p90, p99, socketErrors, statusErrors] = m.slice(1).map(Number) as [
    number,
    number,
    number,
    number,
    number,
    number,
    number,
  ];
  return {
    rps: requests / (us / 1e6),
    requests,
    p50: p50 / 1e3,
    p90: p90 / 1e3,
    p99: p99 / 1e3,
    socketErrors,
    statusErrors,
  };
}

// ───────────── measurement ─────────────

interface Run extends WrkResult {
  /** vCPU used by the proxy tree during the run. */
  readonly vcpu: number;
  readonly others: number;
  readonly noisy: boolean;
  /** More than MAX_ERROR_RATE of the requests failed: the run measures errors, not proxying. */
  readonly failed: boolean;
}

let discarded = 0;
let noisyKept = 0;

/**
 * One load run on a quiet machine; repeated (bounded) when other processes used > NOISE_LIMIT cores.
 * `load`: wrk with `connections` and a script (closed loop), or a fixed rate (h2load, open loop).
 */
async function measuredRun(
  label: string,
  port: number,
  proxyPid: number | null,
  load: { connections: number; script: string } | { rate: number },
  headers: readonly string[] = [],
  metrics?: () => Promise<string>,
): Promise<Run> {
  for (let attempt = 0; ; attempt++) {
    await waitQuiet(proxyPid);
    const scrape = async () => (metrics ? await metrics().catch(() => null) : null);
    const before = await scrape();
    const a = snapshot(proxyPid);
    const r =
      "rate" in load
        ? await fixedRatePass(port, load.rate, DURATION_S, headers)
        : await wrk(port, load.connections, DURATION_S, load.script, headers);
    const b = snapshot(proxyPid);
    const after = await scrape();
    const seconds = (b.t - a.t) / 1000;
    const others = othersCores(a, b);
    const vcpu = (b.proxy - a.proxy) / TCK / seconds;
    const noisy = others > NOISE_LIMIT;
    const failed = (r.statusErrors + r.socketErrors) / Math.max(1, r.requests) > MAX_ERROR_RATE;
    log(
      `${label}: ${Math.round(r.rps).toLocaleString("en-US")} rps, p50/p90/p99 ${r.p50.toFixed(2)}/${r.p90.toFixed(2)}/${r.p99.toFixed(2)} ms` +
        `${r.due ? ` (from due ${r.due.p50.toFixed(2)}/${r.due.p90.toFixed(2)}/${r.due.p99.toFixed(2)})` : ""}` +
        `${r.statusErrors ? `, ${r.statusErrors} responses ≥ 400` : ""}${r.socketErrors ? `, ${r.socketErrors} socket errors` : ""}, proxy ${vcpu.toFixed(2)} vCPU, others ${others.toFixed(2)} cores${noisy ? " (noisy)" : ""}` +
        (r.host ? describeHostReport(r.host, 2) : "") +
        (before !== null && after !== null ? `; ${stallsBetween(before, after, seconds)}` : ""),
    );
    if (!noisy || failed) return { ...r, vcpu, others, noisy, failed };
    if (attempt < MAX_RETRIES && slackSpent + DURATION_S <= SLACK_S) {
      slackSpent += DURATION_S;
      discarded++;
      log(`${label}: discarded, repeating`);
      continue;
    }
    noisyKept++;
    return { ...r, vcpu, others, noisy, failed };
  }
}

interface Result {
  readonly name: string;
  readonly error?: string;
  readonly max: Run[];
  readonly fixed1k: Run[];
  readonly fixed5k: Run[];
  readonly rssColdMiB: number | null;
  readonly rssLoadMiB: number | null;
  /** What the proxy itself reported about errors, after the runs. */
  readonly diagnostics: string[];
}

interface Subject {
  readonly name: string;
  /** Request headers every load generator sends (e.g. the full route's bearer token). */
  readonly headers?: readonly string[];
  /** Starts the proxy (started null: the upstream itself, for the direct passes). */
  readonly start: () => Promise<{
    port: number;
    started: Started | null;
    diagnose?: () => Promise<string[]>;
    /** The proxy's /metrics text (meshgate's admin listener), scraped around each pass. */
    metrics?: () => Promise<string>;
  }>;
  readonly maxReps: number;
}

async function measure(subject: Subject): Promise<Result> {
  const max: Run[] = [];
  const fixed1k: Run[] = [];
  const fixed5k: Run[] = [];
  let started: Started | null = null;
  let sampler: NodeJS.Timeout | null = null;
  let rssCold: number | null = null;
  let rssMax = 0;
  let diagnose: (() => Promise<string[]>) | undefined;
  const diagnostics = async () => (diagnose ? await diagnose().catch(() => []) : []);
  try {
    const s = await subject.start();
    diagnose = s.diagnose;
    started = s.started;
    await ready(subject.name, s.port, started, subject.headers);
    const pid = started?.child.pid ?? null;
    if (pid !== null) {
      await sleep(1000);
      rssCold = treeRssKiB(pid);
      rssMax = rssCold;
      sampler = setInterval(() => (rssMax = Math.max(rssMax, treeRssKiB(pid))), 250);
    }
    log(`${subject.name}: warm-up ${WARMUP_S} s`);
    const headers = subject.headers ?? [];
    await wrk(s.port, C_MAX, WARMUP_S, doneScript, headers);
    for (let i = 0; i < subject.maxReps; i++) {
      const load = { connections: C_MAX, script: doneScript };
      max.push(
        await measuredRun(`${subject.name} c${C_MAX} #${i + 1}`, s.port, pid, load, headers, s.metrics),
      );
    }
    const at1k = FIXED !== "wrk" ? { rate: 1000 } : { connections: C_1K, script: delayScript };
    const at5k = FIXED !== "wrk" ? { rate: 5000 } : { connections: C_5K, script: delayScript };
    for (let i = 0; i < REPS; i++)
      fixed1k.push(
        await measuredRun(`${subject.name} ~1k rps #${i + 1}`, s.port, pid, at1k, headers, s.metrics),
      );
    for (let i = 0; i < REPS; i++)
      fixed5k.push(
        await measuredRun(`${subject.name} ~5k rps #${i + 1}`, s.port, pid, at5k, headers, s.metrics),
      );
    return {
      name: subject.name,
      max,
      fixed1k,
      fixed5k,
      rssColdMiB: rssCold === null ? null : rssCold / 1024,
      rssLoadMiB: pid === null ? null : rssMax / 1024,
      diagnostics: await diagnostics(),
    };
  } catch (err) {
    if (!interrupted()) log(`${subject.name}: failed: ${(err as Error).message}`);
    return {
      name: subject.name,
      error: (err as Error).message.split("\n")[0]!,
      max,
      fixed1k,
      fixed5k,
      rssColdMiB: null,
      rssLoadMiB: null,
      diagnostics: await diagnostics(),
    };
  } finally {
    if (sampler) clearInterval(sampler);
    if (started) await stop(started);
  }
}

// ───────────── configs ─────────────

function nginxTempPaths(name: string): string {
  return ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"]
    .map((k) => `  ${k}_temp_path ${join(tmp, `${name}-${k}`)};`)
    .join("\n");
}

function upstreamConf(port: number): string {
  return `worker_processes 1;
pid ${join(tmp, "upstream.pid")};
error_log ${join(tmp, "upstream-error.log")} warn;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  keepalive_timeout 120s;
${nginxTempPaths("upstream")}
  server {
    listen 127.0.0.1:${port} reuseport backlog=4096;
    location / {
      default_type application/json;
      return 200 '${BODY}';
    }
  }
}
`;
}

function nginxProxyConf(port: number, upstream: number, workers = 1): string {
  return `worker_processes ${workers};
pid ${join(tmp, `nginx-${port}.pid`)};
error_log ${join(tmp, "nginx-error.log")} warn;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  keepalive_timeout 120s;
${nginxTempPaths("nginx")}
  upstream backend {
    server 127.0.0.1:${upstream};
    keepalive 64;
    keepalive_requests 1000000;
  }
  server {
    listen 127.0.0.1:${port} reuseport backlog=4096;
    location / {
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
`;
}

function haproxyConf(port: number, upstream: number): string {
  return `global
  nbthread 1
  maxconn 4096
  pidfile ${join(tmp, "haproxy.pid")}

defaults
  mode http
  http-reuse always
  timeout connect 5s
  timeout client 60s
  timeout server 60s

frontend bench
  bind 127.0.0.1:${port}
  default_backend upstream

backend upstream
  server up 127.0.0.1:${upstream}
`;
}

/**
 * The full route's credentials: an ES256 key (its public JWK inline in the gateway's config, so no JWKS
 * fetch) and one token for subject "bench" with the route's scope, valid for the whole run.
 */
const FULL = await (async () => {
  const { privateKey, publicKey } = generateKeyPairSync("ec", { namedCurve: "P-256" });
  const jwk = { ...publicKey.export({ format: "jwk" }), kid: "bench", alg: "ES256", use: "sig" };
  const token = await new SignJWT({ scope: "items:read" })
    .setProtectedHeader({ alg: "ES256", kid: "bench" })
    .setIssuer("https://id.bench.example/")
    .setAudience("bench")
    .setSubject("bench")
    .setExpirationTime("2h")
    .sign(privateKey);
  return { jwk, headers: [`Authorization: Bearer ${token}`] };
})();

/**
 * meshgate's config: the bare route (public, forward only), or the full route — everything of the API
 * management part in a request's path: a JWT checked against an inline key with a scope requirement,
 * a rate limit keyed by the token's subject (in process, far above the load), a request and a response
 * header transform, and the metrics (always on).
 */
function meshgateConf(port: number, upstream: number, full = false): string {
  const route = full
    ? {
        name: "all",
        match: { path: "/**" },
        to: "upstream",
        auth: { jwt: "bench", scopes: ["items:read"] },
        rateLimit: { requests: 1_000_000, per: "1s", key: "subject", scope: "replica" },
        transform: {
          request: { headers: { set: { "x-bench-subject": "${principal.subject}" } } },
          response: { headers: { remove: ["server"] } },
        },
      }
    : { name: "all", match: { path: "/**" }, to: "upstream", public: true };
  const config = specGatewayConfig({
    routes: [route],
    upstreams: { upstream },
    gateway: {
      listeners: [{ name: "http", port, protocol: "http" }],
      ...(full
        ? {
            jwt: {
              bench: {
                issuer: "https://id.bench.example/",
                audiences: ["bench"],
                jwks: { keys: [FULL.jwk] },
                algorithms: ["ES256"],
              },
            },
          }
        : {}),
    },
    observability: { logs: { access: false } },
    // --no-ejection: outlier detection that never ejects (see the note the report prints).
    ...(NO_EJECTION ? { service: { circuitBreaker: { consecutive5xx: 1_000_000_000 } } } : {}),
  });
  return `${JSON.stringify(config, null, 2)}\n`;
}

/** The gateway's own error counters (admin /metrics), for the notes when wrk saw errors. */
async function meshgateErrors(adminPort: number): Promise<string[]> {
  const text = (await get(adminPort, "/metrics")).body;
  const shown: string[] = [];
  for (const line of text.split("\n")) {
    const m =
      /^meshgate_(gateway_errors_total|upstream_requests_total|upstream_ejections_total)\{([^}]*)\} (\S+)$/.exec(
        line,
      );
    if (!m || Number(m[3]) === 0 || /outcome="success"/.test(m[2]!)) continue;
    const labels = m[2]!.replace(/proxy="gateway",?/, "").replaceAll('"', "");
    shown.push(`${m[1]}{${labels}} ${m[3]}`);
  }
  return shown.length ? [`meshgate /metrics: ${shown.join(", ")}`] : [];
}

function nginxArgs(conf: string, name: string): string[] {
  const file = join(tmp, `${name}.conf`);
  writeFileSync(file, conf);
  return ["nginx", "-p", tmp, "-e", join(tmp, `${name}-error.log`), "-c", file, "-g", "daemon off;"];
}

function version(argv: string[], pattern: RegExp): string {
  const r = spawnSync(argv[0]!, argv.slice(1), { encoding: "utf8" });
  return pattern.exec(`${r.stdout ?? ""}${r.stderr ?? ""}`)?.[1] ?? "?";
}

/** The commit measured, and whether runtime/ had uncommitted changes. */
function meshgateVersion(): string {
  const head = spawnSync("git", ["rev-parse", "--short", "HEAD"], { cwd: ROOT, encoding: "utf8" });
  if (head.status !== 0) return "?";
  const dirty = spawnSync("git", ["status", "--porcelain", "--", "runtime", "bin", "cli"], {
    cwd: ROOT,
    encoding: "utf8",
  });
  return `${head.stdout.trim()}${dirty.stdout.trim() ? " + uncommitted changes in runtime/" : ""}`;
}

function packageVersion(name: string): string {
  try {
    const pkg = JSON.parse(readFileSync(join(ROOT, "node_modules", name, "package.json"), "utf8")) as {
      version: string;
    };
    return pkg.version;
  } catch {
    return "?";
  }
}

// ───────────── report ─────────────

const num = (n: number) => Math.round(n).toLocaleString("en-US");
const ms = (n: number) => n.toFixed(2);
/** `!` when a run failed (too many errors), `~` when a noisy run was kept. */
const mark = (runs: Run[]) => (runs.some((r) => r.failed) ? "!" : runs.some((r) => r.noisy) ? "~" : "");
/** The runs a median is taken over: those that did not fail, unless all did. */
const usable = (runs: Run[]) => (runs.some((r) => !r.failed) ? runs.filter((r) => !r.failed) : runs);

interface Summary {
  readonly rps: number | null;
  readonly vcpuMax: number | null;
  readonly p1k: [number, number, number] | null;
  readonly rps1k: number | null;
  readonly vcpuPer1k: number | null;
  readonly p5k: [number, number, number] | null;
  readonly rps5k: number | null;
}

function summarize(r: Result): Summary {
  const pick = (runs: Run[], f: (x: Run) => number) => (runs.length ? median(usable(runs).map(f)) : null);
  const fixed1k = usable(r.fixed1k);
  return {
    rps: pick(r.max, (x) => x.rps),
    vcpuMax: pick(r.max, (x) => x.vcpu),
    p1k: fixed1k.length
      ? [
          median(fixed1k.map((x) => x.p50)),
          median(fixed1k.map((x) => x.p90)),
          median(fixed1k.map((x) => x.p99)),
        ]
      : null,
    rps1k: pick(r.fixed1k, (x) => x.rps),
    vcpuPer1k: pick(r.fixed1k, (x) => x.vcpu / (x.rps / 1000)),
    p5k: r.fixed5k.length
      ? [
          median(usable(r.fixed5k).map((x) => x.p50)),
          median(usable(r.fixed5k).map((x) => x.p90)),
          median(usable(r.fixed5k).map((x) => x.p99)),
        ]
      : null,
    rps5k: pick(r.fixed5k, (x) => x.rps),
  };
}

/** Why a goal cannot be judged: every run of a pass failed. */
function invalid(...passes: Run[][]): string | null {
  for (const runs of passes) {
    if (runs.length > 0 && runs.every((r) => r.failed))
      return "not valid: every run failed with errors, see the notes";
  }
  return null;
}

function report(
  results: Result[],
  meta: string[],
  scaling: readonly Scaling[],
  paired: readonly Paired[],
): void {
  const direct = summarize(results[0]!);
  const byName = new Map(results.map((r) => [r.name, summarize(r)]));
  const nginx = byName.get("nginx");
  const added = (s: Summary) =>
    s.p1k && direct.p1k ? (s.p1k.map((v, i) => v - direct.p1k![i]!) as [number, number, number]) : null;
  const nginxAdded = nginx ? added(nginx) : null;
  const rows = results.map((r, i) => {
    const s = summarize(r);
    if (r.error) return [r.name, `failed: ${r.error}`, ...Array<string>(10).fill("")];
    const isDirect = i === 0;
    const a = added(s);
    return [
      r.name,
      s.rps === null ? "–" : `${mark(r.max)}${num(s.rps)}${isDirect && r.max.length === 1 ? "¹" : ""}`,
      isDirect || !nginx?.rps || s.rps === null ? "–" : `${(s.rps / nginx.rps).toFixed(2)}×`,
      isDirect || s.vcpuMax === null ? "–" : s.vcpuMax.toFixed(2),
      s.rps1k === null ? "–" : `${mark(r.fixed1k)}${num(s.rps1k)}`,
      s.p1k ? s.p1k.map(ms).join(" / ") : "–",
      isDirect || !a ? "–" : a.map(ms).join(" / "),
      // A ratio to an added p99 ≤ 0 (the direct pass's own p99 was the higher: host noise) means nothing.
      isDirect || !a || !nginxAdded
        ? "–"
        : nginxAdded[2] > 0
          ? `${(a[2] / nginxAdded[2]).toFixed(2)}×`
          : "n/a",
      s.rps5k === null ? "–" : `${mark(r.fixed5k)}${num(s.rps5k)}`,
      s.p5k === null ? "–" : s.p5k.map(ms).join(" / "),
      isDirect || s.vcpuPer1k === null ? "–" : s.vcpuPer1k.toFixed(3),
      r.rssColdMiB === null || r.rssLoadMiB === null
        ? "–"
        : `${r.rssColdMiB.toFixed(0)} / ${r.rssLoadMiB.toFixed(0)}`,
    ];
  });
  const header = [
    "proxy",
    `max rps c${C_MAX}`,
    "×nginx",
    "vCPU@max",
    "@~1k: rps",
    "p50/p90/p99 ms",
    "added p50/p90/p99 ms",
    "added p99 ×nginx",
    "@~5k: rps",
    "p50/p90/p99 ms ",
    "vCPU/1k rps",
    "RSS cold/load MiB",
  ];
  const out = [
    `meshgate bench: gateway vs nginx, HAProxy, @fastify/http-proxy${QUICK ? " (--quick: 1 run × 5 s — a smoke run, not a measurement)" : ""}`,
    ...meta,
    "",
    ...table(header, rows, (i) => i >= 1),
    "",
  ];
  const mg = byName.get("meshgate");
  const fastify = byName.get("@fastify/http-proxy");
  const raw = (name: string) => results.find((r) => r.name === name);
  const [mgRaw, nginxRaw, fastifyRaw] = [raw("meshgate"), raw("nginx"), raw("@fastify/http-proxy")];
  const verdict = (ok: boolean, why: string | null) => why ?? (ok ? "PASS" : "MISS");
  if (mg?.rps && nginx?.rps) {
    const x = mg.rps / nginx.rps;
    const why = invalid(mgRaw!.max, nginxRaw!.max);
    out.push(
      `1 worker bare vs nginx, sequential passes (the table's rows): meshgate ${num(mg.rps)} rps vs nginx ${num(nginx.rps)} = ${x.toFixed(2)}× (${verdict(x >= GOALS.vsNginx, why)}; the measure with both loaded together, below, is the goal's)`,
    );
  } else out.push("1 worker bare vs nginx, sequential passes — not measured");
  if (mg?.rps && fastify?.rps) {
    const x = mg.rps / fastify.rps;
    const why = invalid(mgRaw!.max, fastifyRaw!.max);
    out.push(
      `vs @fastify/http-proxy, sequential passes (the table's rows): meshgate ${num(mg.rps)} rps vs ${num(fastify.rps)} = ${x.toFixed(2)}× (${verdict(x >= GOALS.vsFastify, why)}; the measure with both loaded together, below, is the goal's)`,
    );
  } else out.push("vs @fastify/http-proxy, sequential passes — not measured");
  const full = byName.get("meshgate full route");
  if (mg?.rps && full?.rps) {
    const x = full.rps / mg.rps;
    const why = invalid(mgRaw!.max, raw("meshgate full route")!.max);
    out.push(
      `full route vs bare, sequential passes (the table's rows): ${num(full.rps)} vs ${num(mg.rps)} rps = ${x.toFixed(2)}× (${verdict(x >= GOALS.fullVsBare, why)}; the measure with both loaded together, below, is the goal's)`,
    );
  } else out.push(`goal: full route ≥ ${GOALS.fullVsBare}× the bare route — not measured`);
  const mgAdded = mg ? added(mg) : null;
  if (mgAdded && nginxAdded && mg?.p1k && nginx?.p1k) {
    const x = mgAdded[2] / nginxAdded[2];
    const why =
      invalid(mgRaw!.fixed1k, nginxRaw!.fixed1k, results[0]!.fixed1k) ??
      (nginxAdded[2] > 0
        ? null
        : "NOT COMPARABLE: nginx's added p99 ≤ 0, the direct pass's own p99 was the higher (host noise)");
    out.push(
      `goal: p99 at fixed rate (~1000 rps, latency added over direct) ≤ ${GOALS.p99VsNginx}× nginx's — meshgate +${ms(mgAdded[2])} ms vs nginx +${ms(nginxAdded[2])} ms${nginxAdded[2] > 0 ? ` = ${x.toFixed(2)}×` : ""} (${verdict(x <= GOALS.p99VsNginx, why)}); ` +
        `client-seen p99 ${ms(mg.p1k[2])} vs ${ms(nginx.p1k[2])} ms = ${(mg.p1k[2] / nginx.p1k[2]).toFixed(2)}×`,
    );
    const steady = steadyLine(usable(mgRaw!.fixed1k), usable(nginxRaw!.fixed1k), "~1k rps");
    if (steady) out.push(`  ${steady}`);
  } else out.push("goal: p99 at fixed rate ≤ 1.5× nginx's — not measured");
  if (mg?.p5k && nginx?.p5k) {
    const x = mg.p5k[2] / nginx.p5k[2];
    const why = invalid(mgRaw!.fixed5k, nginxRaw!.fixed5k);
    out.push(
      `goal: p99 at a fixed ${FIXED !== "wrk" ? "" : "~"}5k rps ≤ ${GOALS.p99VsNginx}× nginx's — meshgate ${ms(mg.p5k[2])} ms vs nginx ${ms(nginx.p5k[2])} ms = ${x.toFixed(2)}× (${verdict(x <= GOALS.p99VsNginx, why)})`,
    );
    const steady = steadyLine(usable(mgRaw!.fixed5k), usable(nginxRaw!.fixed5k), "~5k rps");
    if (steady) out.push(`  ${steady}`);
  }
  out.push(
    "",
    `notes: medians of ${REPS} run(s) × ${DURATION_S} s after a ${WARMUP_S} s warm-up; "added" = proxied minus direct percentiles of the same pass;`,
    FIXED === "loadgen"
      ? `  ~1k and ~5k rps = bench/loadgen.c, open loop: 10 / 50 keep-alive connections × ${RPS_PER_CLIENT} req/s each on absolute schedules spread over the period; percentiles from the time each request was sent (the goals' measure), and from the time it was due (coordinated omission corrected, "from due" in the log);`
      : FIXED === "h2load"
        ? `  ~1k and ~5k rps = h2load --h1 open loop: 10 / 50 keep-alive clients × ${RPS_PER_CLIENT} req/s each, started 1 ms apart; percentiles from its per-request log (its clients line up after a stall of the load CPU: bench/loadgen.ts);`
        : `  ~1k rps = wrk -t1 -c${C_1K} with a ${FIXED_DELAY_MS} ms Lua delay() per request; ~5k rps = -c${C_5K}, same delay: closed-loop (h2load is not installed), an approximation of a fixed rate;`,
    `  vCPU = proxy process tree CPU from /proc/<pid>/stat over the run; RSS = sum of VmRSS over the tree (cold: idle 1 s after start; load: max sampled every 250 ms);`,
    `  ${discarded} run(s) discarded for noise (others > ${NOISE_LIMIT} cores), ${noisyKept} noisy run(s) kept (marked ~)${results[0]!.max.length === 1 ? "; ¹ direct max rps: 1 run (wrk and upstream share CPU 1)" : ""}.`,
  );
  if (NO_EJECTION) {
    out.push(
      "  --no-ejection: meshgate ran with outlier detection that never ejects (circuitBreaker.consecutive5xx 1e9).",
    );
  }
  for (const r of results) {
    const runs = [...r.max, ...r.fixed1k, ...r.fixed5k];
    const requests = runs.reduce((s, x) => s + x.requests, 0);
    const status = runs.reduce((s, x) => s + x.statusErrors, 0);
    const socket = runs.reduce((s, x) => s + x.socketErrors, 0);
    if (status + socket === 0) continue;
    const failed = runs.filter((x) => x.failed).length;
    out.push(
      `  ${r.name}: ${num(status)} responses ≥ 400 and ${num(socket)} socket errors in ${num(requests)} requests; ` +
        `${failed} of ${runs.length} runs failed (> ${MAX_ERROR_RATE * 100} % errors, marked !; medians use the others when there are any)`,
    );
    for (const d of r.diagnostics) out.push(`    ${d}`);
  }
  out.push(...pairedReport(paired));
  out.push(...scalingReport(scaling));
  console.log(out.join("\n"));
}

// ───────────── worker scaling ─────────────

/**
 * The host-speed probe's view of the fixed-rate passes (bench/hostprobe.ts): how much of them the host was slow,
 * and the p99 over the requests that overlapped no slow interval — a diagnosis printed beside the goal's
 * measure, never in its place.
 */
function steadyLine(mg: readonly Run[], nginx: readonly Run[], rate: string): string | null {
  const a = summarizeHost(mg.map((r) => r.host));
  const b = summarizeHost(nginx.map((r) => r.host));
  if (a === null || b === null) return null;
  return (
    `host probe: the host was slow (a fixed unit of work > 3× its usual time) for ${a.slow} of meshgate's ${rate} passes and ${b.slow} of nginx's; ` +
    `over the requests that overlapped no slow interval (${a.steady} / ${b.steady} of them) p99 meshgate ${ms(a.steadyP99)} ms vs nginx ${ms(b.steadyP99)} ms = ${(a.steadyP99 / b.steadyP99).toFixed(2)}× — a diagnosis, not the goal's measure`
  );
}

/** Every CPU (taskset list), for the scaling pass. */
const ALL_CPUS = cpus >= 2 ? `0-${cpus - 1}` : "0";

interface Scaling {
  readonly name: string;
  /** Median rps with 1 and with 2 workers (null: failed). */
  readonly one: number | null;
  readonly two: number | null;
  /** Median CPU cost per request with 1 and with 2 workers (null: failed). */
  readonly costOne: ScalingCost | null;
  readonly costTwo: ScalingCost | null;
  readonly error?: string;
}

/**
 * Worker scaling on this machine as it is: the proxy with 1 and then 2 workers, unpinned (every CPU), and
 * wrk with 2 threads on every CPU too — the load generator shares the cores, as the issue's goal says
 * (a minimal Node proxy gains ~1.45×; nginx gains nothing, the machine is saturated either way). The
 * 1- and 2-worker runs alternate, REPS rounds, median rps each.
 */
async function workerScaling(
  subjects: readonly { name: string; start: (workers: 1 | 2, port: number) => Started }[],
): Promise<Scaling[]> {
  const out: Scaling[] = [];
  for (const subject of subjects) {
    if (interrupted()) break;
    const rps: Record<1 | 2, number[]> = { 1: [], 2: [] };
    const costs: Record<1 | 2, ScalingCost[]> = { 1: [], 2: [] };
    const running: Started[] = [];
    try {
      // Both configurations run for the whole pass (an idle one costs nothing) and are warmed up once —
      // long enough for the JIT's compiler threads, which share the two CPUs, to settle; the measured
      // runs then alternate in ABBA order, so a host drifting during the pass moves both alike.
      const ports: Record<1 | 2, number> = { 1: await freePort(), 2: await freePort() };
      for (const workers of [1, 2] as const) {
        const started = subject.start(workers, ports[workers]);
        running.push(started);
        await ready(`${subject.name} ×${workers}`, ports[workers], started);
        await wrk(ports[workers], C_MAX, SCALING_WARMUP_S, doneScript, [], { cpus: ALL_CPUS, threads: 2 });
      }
      const order: (1 | 2)[] = [];
      for (let i = 0; i < SCALING_ROUNDS; i++)
        order.push(...(i % 2 === 0 ? ([1, 2, 2, 1] as const) : ([2, 1, 1, 2] as const)));
      for (const [i, workers] of order.entries()) {
        if (interrupted()) break;
        const pid = running[workers - 1]!.child.pid ?? null;
        await waitQuiet(pid);
        const before = snapshot(pid);
        const r = await wrk(ports[workers], C_MAX, SCALING_RUN_S, doneScript, [], {
          cpus: ALL_CPUS,
          threads: 2,
        });
        const cost = scalingCost(before, snapshot(pid), r.requests, TCK);
        rps[workers].push(r.rps);
        costs[workers].push(cost);
        log(
          `${subject.name} ${workers} worker(s), run ${i + 1} of ${order.length}: ${num(r.rps)} rps; ` +
            `CPU per request: proxy ${cost.proxyUs.toFixed(1)} µs, the rest ${cost.restUs.toFixed(1)} µs; ${cost.busyCores.toFixed(2)} cores busy`,
        );
      }
      out.push({
        name: subject.name,
        one: median(rps[1]),
        two: median(rps[2]),
        costOne: medianCost(costs[1]),
        costTwo: medianCost(costs[2]),
      });
    } catch (err) {
      out.push({
        name: subject.name,
        one: null,
        two: null,
        costOne: null,
        costTwo: null,
        error: (err as Error).message.split("\n")[0]!,
      });
    } finally {
      for (const r of running) await stop(r);
    }
  }
  return out;
}

function scalingReport(rows: readonly Scaling[]): string[] {
  if (rows.length === 0) return [];
  const lines = [
    "",
    `worker scaling (${ALL_CPUS === "0" ? "1 CPU" : `CPUs ${ALL_CPUS}`} shared by the proxy and wrk -t2 -c${C_MAX}; both configurations running, warmed up ${SCALING_WARMUP_S} s each, then ${SCALING_ROUNDS * 4} runs of ${SCALING_RUN_S} s in ABBA order; medians):`,
    ...table(
      [
        "proxy",
        "1 worker rps",
        "2 workers rps",
        "2 / 1",
        "proxy µs/req 1 → 2",
        "rest µs/req 1 → 2",
        "cores busy 1 → 2",
        "bound",
      ],
      rows.map((r) => {
        if (r.error) return [r.name, `failed: ${r.error}`, "", "", "", "", "", ""];
        const [a, b] = [r.costOne!, r.costTwo!];
        return [
          r.name,
          num(r.one!),
          num(r.two!),
          `${(r.two! / r.one!).toFixed(2)}×`,
          `${a.proxyUs.toFixed(1)} → ${b.proxyUs.toFixed(1)}`,
          `${a.restUs.toFixed(1)} → ${b.restUs.toFixed(1)}`,
          `${a.busyCores.toFixed(2)} → ${b.busyCores.toFixed(2)}`,
          `${scalingBound(a, b, cpus).toFixed(2)}×`,
        ];
      }),
      (i) => i >= 1 && i <= 3,
    ),
    `  µs/req = CPU time per request from /proc (the proxy's process tree; "rest" = everything else the machine ran: wrk, the`,
    `  upstream, the kernel); bound = ${cpus}·P1 / (P1 + R2), the most 2 workers can gain when the machine's ${cpus} cores are`,
    `  saturated and the proxy's own cost per request P1 does not rise, with R2 the rest's cost per request at 2 workers.`,
  ];
  const mg = rows.find((r) => r.name === "meshgate");
  if (mg && !mg.error) {
    lines.push(
      `goal: 2 workers ≥ ${GOALS.twoWorkers}× 1 worker — ${(mg.two! / mg.one!).toFixed(2)}× (${mg.two! / mg.one! >= GOALS.twoWorkers ? "PASS" : "MISS"})`,
    );
    const bound = scalingBound(mg.costOne!, mg.costTwo!, cpus);
    if (bound < GOALS.twoWorkers)
      lines.push(
        `  the load generator and upstream cost ${mg.costTwo!.restUs.toFixed(1)} µs per request against meshgate's ${mg.costOne!.proxyUs.toFixed(1)} µs: ` +
          `on ${cpus} shared cores 2 workers cannot exceed ${bound.toFixed(2)}× even without contention (the goal needs the rest ≤ ` +
          `${(((cpus - GOALS.twoWorkers) / GOALS.twoWorkers) * mg.costOne!.proxyUs).toFixed(1)} µs; a proxy that costs more per request scales better here)`,
      );
  }
  return lines;
}

/** Two proxies loaded at the same time (see loadedTogether): each run's rps of `a` and of `b`. */
interface Paired {
  /** The subjects' names, as in the table. */
  readonly a: string;
  readonly b: string;
  readonly rpsA: number[];
  readonly rpsB: number[];
  readonly error?: string;
}

/** Starts two subjects (each pushed to `running` for the caller to stop) and waits until both answer. */
async function startPair(a: Subject, b: Subject, running: Started[]) {
  const sa = await a.start();
  if (sa.started) running.push(sa.started);
  const sb = await b.start();
  if (sb.started) running.push(sb.started);
  await ready(a.name, sa.port, sa.started, a.headers);
  await ready(b.name, sb.port, sb.started, b.headers);
  return [sa, sb] as const;
}

/**
 * Two proxies' costs against each other, immune to the host's drift: both run on the proxy CPU and are
 * loaded at the same time (one wrk -c64 each, on the load CPU), so the scheduler shares CPU 0 between
 * two always-busy processes and each one's rps is the CPU share over its cost per request — the ratio
 * of the rps is the ratio of the costs, and a slower or faster host moves both alike. REPS runs after a
 * warm-up; the goals use the median of the per-run ratios. (The table's rows come from the sequential
 * passes, minutes apart; this machine's speed moves by ±20–30 % over minutes.) Used for the full route
 * against the bare one, and for meshgate's bare route against nginx and @fastify/http-proxy.
 */
async function loadedTogether(a: Subject, b: Subject): Promise<Paired> {
  const out: Paired = { a: a.name, b: b.name, rpsA: [], rpsB: [] };
  const running: Started[] = [];
  try {
    const [sa, sb] = await startPair(a, b, running);
    const both = (seconds: number) =>
      Promise.all([
        wrk(sa.port, C_MAX, seconds, doneScript, a.headers ?? []),
        wrk(sb.port, C_MAX, seconds, doneScript, b.headers ?? []),
      ]);
    await both(WARMUP_S);
    for (let round = 0; round < REPS && !interrupted(); round++) {
      await waitQuiet(sa.started?.child.pid ?? null);
      const [ra, rb] = await both(DURATION_S);
      log(
        `${a.name} vs ${b.name}, loaded together #${round + 1}: ${num(ra.rps)} / ${num(rb.rps)} rps = ${(ra.rps / rb.rps).toFixed(2)}×`,
      );
      out.rpsA.push(ra.rps);
      out.rpsB.push(rb.rps);
    }
    return out;
  } catch (err) {
    return { ...out, error: (err as Error).message.split("\n")[0]! };
  } finally {
    for (const r of running) await stop(r);
  }
}

/**
 * The 5k rps fixed-rate pass for two subjects started side by side, each measured alone in turn (the other
 * idle) in ABBA order: `rounds` passes each, so drift over the run hits both alike.
 */
async function alternating(
  a: Subject,
  b: Subject,
  rounds: number,
): Promise<{ a: Run[]; b: Run[]; error?: string }> {
  const out = { a: [] as Run[], b: [] as Run[] };
  const running: Started[] = [];
  try {
    const [sa, sb] = await startPair(a, b, running);
    const subjects = [
      { s: a, port: sa.port, pid: sa.started?.child.pid ?? null, runs: out.a, metrics: sa.metrics },
      { s: b, port: sb.port, pid: sb.started?.child.pid ?? null, runs: out.b, metrics: sb.metrics },
    ];
    for (const x of subjects) await wrk(x.port, C_MAX, WARMUP_S, doneScript, x.s.headers ?? []);
    for (let round = 0; round < rounds && !interrupted(); round++) {
      const order = round % 2 === 0 ? subjects : [...subjects].reverse();
      for (const x of order) {
        const label = `${x.s.name} ~5k rps #${x.runs.length + 1}`;
        x.runs.push(await measuredRun(label, x.port, x.pid, { rate: 5000 }, x.s.headers ?? [], x.metrics));
      }
    }
    return out;
  } catch (err) {
    return { ...out, error: (err as Error).message.split("\n")[0]! };
  } finally {
    for (const r of running) await stop(r);
  }
}

/** The median ratio a / b of a pair's runs, with each run's figures; null when nothing was measured. */
function pairedRatio(p: Paired | undefined): { x: number; runs: string } | null {
  if (p === undefined || p.error !== undefined || p.rpsA.length === 0) return null;
  const ratios = p.rpsA.map((a, i) => a / p.rpsB[i]!);
  return {
    x: median(ratios),
    runs: p.rpsA.map((a, i) => `${num(a)}/${num(p.rpsB[i]!)} = ${ratios[i]!.toFixed(2)}×`).join(", "),
  };
}

/** The report of the loaded-together pairs: one line of runs and one goal line each. */
function pairedReport(pairs: readonly Paired[]): string[] {
  if (pairs.length === 0) return [];
  const out = [
    "",
    `loaded together (both proxies on CPU ${PROXY_CPU}, one wrk -c${C_MAX} each at the same time, ${REPS} run(s) × ${DURATION_S} s; the ratio of the rps is the ratio of the costs per request, whatever the host's speed):`,
  ];
  const goals: Record<string, (x: number) => string> = {
    "meshgate full route/meshgate": (x) =>
      `goal: full route (JWT + rate limit + header transforms + metrics) ≥ ${GOALS.fullVsBare}× the bare route — median ${x.toFixed(2)}× (${x >= GOALS.fullVsBare ? "PASS" : "MISS"})`,
    "meshgate/nginx": (x) =>
      `goal: 1 worker bare ≥ ${GOALS.vsNginx.toFixed(2)}× nginx — median ${x.toFixed(2)}× (${x >= GOALS.vsNginx ? "PASS" : "MISS"})`,
    "meshgate/@fastify/http-proxy": (x) =>
      `goal: ≥ ${GOALS.vsFastify}× @fastify/http-proxy — median ${x.toFixed(2)}× (${x >= GOALS.vsFastify ? "PASS" : "MISS"})`,
    "meshgate/minimal Node proxy": (x) =>
      `reference (no goal): meshgate's bare route costs ${(1 / x).toFixed(2)}× what Node's own http.createServer + http.request proxy costs per request — median ${x.toFixed(2)}× its rps`,
  };
  for (const p of pairs) {
    const r = pairedRatio(p);
    if (r === null) {
      out.push(`  ${p.a} vs ${p.b}: failed: ${p.error ?? "nothing measured"}`);
      continue;
    }
    out.push(`  ${p.a} / ${p.b}: ${r.runs}`);
    const goal = goals[`${p.a}/${p.b}`];
    if (goal) out.push(goal(r.x));
  }
  return out;
}

// ───────────── main ─────────────

async function main(): Promise<number> {
  const missing = ["nginx", "haproxy", "wrk"].filter((c) => !have(c));
  if (missing.length) {
    log(
      `missing ${missing.join(", ")}: apt-get install -y nginx haproxy wrk (a dev-machine benchmark, not CI)`,
    );
    return 1;
  }
  const began = performance.now();
  if (LOADGEN && "error" in LOADGEN) log(`${LOADGEN.error}; the fixed-rate passes use ${FIXED}`);
  if (cpus < 2) log(`only ${cpus} CPU: proxies, wrk and the upstream share it`);
  const upPort = await freePort();
  const upstream = start("upstream", nginxArgs(upstreamConf(upPort), "upstream"), LOAD_CPU);
  await ready("upstream nginx", upPort, upstream);

  const entry = await meshgateEntry(ROOT);
  /** `meshgate gateway` with a config file, on 127.0.0.1, with MESHGATE_NODE_FLAGS (admin port 0: any). */
  const gatewayArgv = (
    file: string,
    adminPort: number,
    workers: number,
    entryPath = entry.path,
    flags: readonly string[] = MESHGATE_NODE_FLAGS,
  ) => [
    process.execPath,
    ...flags,
    entryPath,
    "gateway",
    "--config",
    file,
    "--host",
    "127.0.0.1",
    "--admin-port",
    String(adminPort),
    "--workers",
    String(workers),
  ];
  const meta = [
    `meshgate runs from ${entry.label}`,
    `node ${process.version}, nginx ${version(["nginx", "-v"], /nginx\/(\S+)/)}, HAProxy ${version(["haproxy", "-v"], /version (\S+)/)}, ` +
      `wrk ${version(["wrk", "-v"], /wrk (\S+)/)}, fastify ${packageVersion("fastify")}, @fastify/http-proxy ${packageVersion("@fastify/http-proxy")}; ` +
      `${cpus} CPUs (${os.cpus()[0]?.model ?? "?"}), kernel ${os.release()}; meshgate ${meshgateVersion()}`,
    `proxy alone on CPU ${PROXY_CPU}, wrk + upstream (nginx return 200, 104-byte JSON, 1 worker) on CPU ${LOAD_CPU}${TASKSET ? "" : " (taskset missing: NOT pinned)"}; ` +
      `nice -n -15: ${NICE ? "yes" : "not permitted"}; session autogroup nice: ${AUTOGROUP === null ? "not available" : `-15 (was ${AUTOGROUP})`}; GET ${PATH} over keep-alive on 127.0.0.1`,
  ];

  const subjects: Subject[] = [
    { name: "direct (upstream)", start: async () => ({ port: upPort, started: null }), maxReps: 1 },
    {
      name: "nginx",
      maxReps: REPS,
      start: async () => {
        const port = await freePort();
        return { port, started: start("nginx", nginxArgs(nginxProxyConf(port, upPort), "nginx"), PROXY_CPU) };
      },
    },
    {
      name: "HAProxy",
      maxReps: REPS,
      start: async () => {
        const port = await freePort();
        const file = join(tmp, "haproxy.cfg");
        writeFileSync(file, haproxyConf(port, upPort));
        return { port, started: start("haproxy", ["haproxy", "-f", file, "-db"], PROXY_CPU) };
      },
    },
    {
      name: "@fastify/http-proxy",
      maxReps: REPS,
      start: async () => {
        const port = await freePort();
        const argv = [process.execPath, join(ROOT, "bench/fastify-proxy.ts"), String(port), String(upPort)];
        return { port, started: start("fastify", argv, PROXY_CPU, { cwd: ROOT }) };
      },
    },
    {
      name: "minimal Node proxy",
      maxReps: REPS,
      start: async () => {
        const port = await freePort();
        const argv = [
          process.execPath,
          join(ROOT, "bench/node-proxy.mjs"),
          "http",
          String(port),
          String(upPort),
          "1",
        ];
        return { port, started: start("node-proxy", argv, PROXY_CPU, { cwd: ROOT }) };
      },
    },
    {
      name: "meshgate",
      maxReps: REPS,
      start: async () => {
        const port = await freePort();
        const admin = await freePort();
        const file = join(tmp, "meshgate.json");
        writeFileSync(file, meshgateConf(port, upPort));
        return {
          port,
          started: start("meshgate", gatewayArgv(file, admin, 1), PROXY_CPU, { cwd: ROOT }),
          diagnose: () => meshgateErrors(admin),
          metrics: async () => (await get(admin, "/metrics")).body,
        };
      },
    },
    {
      name: "meshgate full route",
      headers: FULL.headers,
      maxReps: REPS,
      start: async () => {
        const port = await freePort();
        const admin = await freePort();
        const file = join(tmp, "meshgate-full.json");
        writeFileSync(file, meshgateConf(port, upPort, true));
        return {
          port,
          started: start("meshgate-full", gatewayArgv(file, admin, 1), PROXY_CPU, { cwd: ROOT }),
          diagnose: () => meshgateErrors(admin),
          metrics: async () => (await get(admin, "/metrics")).body,
        };
      },
    },
  ];

  if (VERSUS_ENTRY !== null) {
    const bare = subjects.find((x) => x.name === "meshgate")!;
    const versus: Subject = {
      name: `meshgate B (${VERSUS_ENTRY})`,
      maxReps: REPS,
      start: async () => {
        const port = await freePort();
        const file = join(tmp, "meshgate-versus.json");
        writeFileSync(file, meshgateConf(port, upPort));
        const argv = gatewayArgv(file, await freePort(), 1, VERSUS_ENTRY);
        return { port, started: start("meshgate-versus", argv, PROXY_CPU, { cwd: ROOT }) };
      },
    };
    const pair = await loadedTogether(versus, bare);
    if (pair.error !== undefined || pair.rpsA.length === 0) {
      log(`the A/B failed: ${pair.error ?? "no run"}`);
      return 1;
    }
    const ratios = pair.rpsA.map((b, i) => b / pair.rpsB[i]!);
    console.log(
      [
        `meshgate bench:gateway --versus-entry — the bare route of two builds loaded together on CPU ${PROXY_CPU}, wrk -c${C_MAX} each`,
        `A: ${entry.path} (this tree); B: ${VERSUS_ENTRY}; node ${process.version}; meshgate ${meshgateVersion()}`,
        ...ratios.map(
          (r, i) =>
            `  run ${i + 1}: B ${num(pair.rpsA[i]!)} / A ${num(pair.rpsB[i]!)} rps = ${r.toFixed(3)}×`,
        ),
        `B / A throughput (= A's cost per request over B's): ${median(ratios).toFixed(3)}× (median of ${ratios.length} run(s); ${Math.min(...ratios).toFixed(3)}–${Math.max(...ratios).toFixed(3)})`,
      ].join("\n"),
    );
    return 0;
  }

  if (VERSUS_FLAGS !== null) {
    const flagged = (name: string, flags: readonly string[]): Subject => ({
      name,
      maxReps: REPS,
      start: async () => {
        const port = await freePort();
        const file = join(tmp, `meshgate-${name}.json`);
        writeFileSync(file, meshgateConf(port, upPort));
        const admin = await freePort();
        const argv = gatewayArgv(file, admin, 1, entry.path, flags);
        return {
          port,
          started: start(`meshgate-${name}`, argv, PROXY_CPU, { cwd: ROOT }),
          metrics: async () => (await get(admin, "/metrics")).body,
        };
      },
    });
    const a = flagged("A", MESHGATE_NODE_FLAGS);
    const b = flagged("B", VERSUS_FLAGS);
    const pair = await loadedTogether(b, a);
    if (pair.error !== undefined || pair.rpsA.length === 0) {
      log(`the A/B failed: ${pair.error ?? "no run"}`);
      return 1;
    }
    const latency = await alternating(a, b, VERSUS_ROUNDS);
    if (latency.error !== undefined) {
      log(`the latency A/B failed: ${latency.error}`);
      return 1;
    }
    const ratios = pair.rpsA.map((x, i) => x / pair.rpsB[i]!);
    const flagsText = (f: readonly string[]) => (f.length ? f.join(" ") : "(none: Node's defaults)");
    const line = (name: string, runs: readonly Run[]) => {
      const m = (k: "p50" | "p99") => median(runs.map((r) => r[k]));
      const cores = median(runs.map((r) => r.vcpu / (r.rps / 1000)));
      return `  ${name}: p50 ${m("p50").toFixed(2)} ms, p99 ${m("p99").toFixed(2)} ms (runs ${runs.map((r) => r.p99.toFixed(2)).join(", ")}), ${cores.toFixed(3)} cores per 1k rps`;
    };
    console.log(
      [
        `meshgate bench:gateway --versus-flags — one bundle (${entry.path}), two sets of Node/V8 flags; node ${process.version}; meshgate ${meshgateVersion()}`,
        `A: ${flagsText(MESHGATE_NODE_FLAGS)}`,
        `B: ${flagsText(VERSUS_FLAGS)}`,
        `throughput, the bare routes loaded together on CPU ${PROXY_CPU} (wrk -c${C_MAX} each):`,
        ...ratios.map(
          (r, i) =>
            `  run ${i + 1}: B ${num(pair.rpsA[i]!)} / A ${num(pair.rpsB[i]!)} rps = ${r.toFixed(3)}×`,
        ),
        `  B / A: ${median(ratios).toFixed(3)}× (median of ${ratios.length}; ${Math.min(...ratios).toFixed(3)}–${Math.max(...ratios).toFixed(3)})`,
        `~5k rps fixed rate, each alone on CPU ${PROXY_CPU}, ABBA × ${VERSUS_ROUNDS} rounds of ${DURATION_S} s (medians):`,
        line("A", latency.a),
        line("B", latency.b),
      ].join("\n"),
    );
    return 0;
  }

  const results: Result[] = [];
  const paired: Paired[] = [];
  if (!ONLY_SCALING) {
    for (const subject of subjects) if (!interrupted()) results.push(await measure(subject));
    if (results[0]!.error) log("the direct passes failed: added latencies cannot be computed");
    const bareSubject = subjects.find((x) => x.name === "meshgate")!;
    const fullSubject = subjects.find((x) => x.name === "meshgate full route")!;
    const nginxSubject = subjects.find((x) => x.name === "nginx")!;
    const fastifySubject = subjects.find((x) => x.name === "@fastify/http-proxy")!;
    const nodeSubject = subjects.find((x) => x.name === "minimal Node proxy")!;
    for (const [a, b] of [
      [fullSubject, bareSubject],
      [bareSubject, nginxSubject],
      [bareSubject, fastifySubject],
      [bareSubject, nodeSubject],
    ] as const)
      if (!interrupted()) paired.push(await loadedTogether(a, b));
  }
  const scaling =
    SCALING || ONLY_SCALING
      ? await workerScaling([
          {
            name: "meshgate",
            start: (workers, port) => {
              const file = join(tmp, `meshgate-scaling-${port}.json`);
              writeFileSync(file, meshgateConf(port, upPort));
              const argv = gatewayArgv(file, 0, workers);
              return start(`meshgate-x${workers}`, argv, ALL_CPUS, { cwd: ROOT });
            },
          },
          {
            name: "minimal Node proxy",
            start: (workers, port) => {
              const script = join(ROOT, "bench/node-proxy.mjs");
              const argv = [process.execPath, script, "http", String(port), String(upPort), String(workers)];
              return start(`node-proxy-x${workers}`, argv, ALL_CPUS, { cwd: ROOT });
            },
          },
          {
            name: "nginx",
            start: (workers, port) =>
              start(
                `nginx-x${workers}`,
                nginxArgs(nginxProxyConf(port, upPort, workers), `nginx-x${workers}`),
                ALL_CPUS,
              ),
          },
        ])
      : [];
  await stop(upstream);
  meta.push(`bench time ${((performance.now() - began) / 1000).toFixed(0)} s`);
  if (interrupted()) return 0;
  if (ONLY_SCALING) console.log([...meta, ...scalingReport(scaling)].join("\n"));
  else report(results, meta, scaling, paired);
  return 0;
}

const code = await main().catch((err: Error) => {
  log(`error: ${err.stack ?? err.message}`);
  return 1;
});
await procs.stopAll();
process.exitCode = code;
