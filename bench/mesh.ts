/**
 * `npm run bench:mesh` (`node bench/mesh.ts [--quick] [--node-flags="…"]`): what the mesh costs — a client
 * calling a server directly, through two meshgate sidecars (client → web's sidecar, outbound → mTLS →
 * orders' sidecar, inbound → server), and through a pair of nginx instances doing the same mTLS hop
 * (`proxy_ssl_certificate` + `proxy_ssl_verify` on the calling side, `ssl_verify_client on` on the
 * serving side) with the same SVIDs, as the reference; in one run, the method of bench/gateway.ts:
 *
 * - server: nginx `return 200 '<104-byte JSON>'`, one worker, on CPU 1 with the load generator; the
 *   proxy pairs on CPU 0 (`taskset`), everything under `nice -n -15` when permitted; all on 127.0.0.1;
 * - load: a fixed 1,000 rps, open loop, with bench/loadgen.c (compiled with the machine's C compiler: 10
 *   keep-alive connections × 100 req/s on absolute schedules spread over each 10 ms); latency percentiles
 *   from the time each request was sent (and, in the log, from the time it was due); "added" = the
 *   pair's percentile minus the direct one in the same round; `--h2load` (or no C compiler) uses h2load
 *   over HTTP/1.1 instead (`--h1 -c10 -r1 --rate-period=1ms --rps=100`, started 1 ms apart; its clients
 *   line up after a stall of the load CPU);
 * - a second reference: a minimal Node mTLS pair (bench/node-proxy.mjs: Node's http/https with a
 *   keep-alive agent, the same SVIDs and flags as the sidecars, none of meshgate's work) — what any Node
 *   sidecar starts from on this machine;
 * - a floor: a raw-socket mTLS pair (bench/raw-pair.mjs: node:net/node:tls, messages framed by their
 *   Content-Length, one write each — no HTTP semantics) — what a Node process pays for the hop itself;
 * - warm-up: WARMUP_S (20 s) of the load per subject before the first round, until V8 has optimized
 *   the hot path (see WARMUP_S);
 * - rounds: direct, meshgate pair, nginx pair, Node pair, raw pair, one after the other, REPS times (interleaved, so that
 *   drift in the machine's load hits every subject alike); medians over the rounds; each measured run
 *   follows RUN_WARMUP_S of the same load, unmeasured: a subject's previous run ended up to a minute
 *   earlier, and the measure is the steady state at the rate, not the reconnection after a pause (a
 *   proxy that closed its idle upstream connections in the meantime would pay its handshakes inside the
 *   measured run — ~2 ms of CPU per side for an mTLS one in Node, several per connection at once);
 * - cost per proxy process: CPU from /proc/<pid>/stat over each run (→ cores per 1,000 rps) and RSS
 *   (VmRSS: idle 1 s after start, and the maximum sampled every 250 ms under load);
 * - noise: before each run the bench waits (bounded) for other processes to use ≤ 0.25 cores; it
 *   reports how busy the rest of the machine was during each run, and marks noisy runs `~`.
 *
 * The sidecars are the real `meshgate sidecar --config FILE` processes, with the SVIDs and bundle as
 * files (a CA made by runtime/pki), the per-service local port as the client's entry (what apps that
 * cannot use a proxy call), access logs off. Options: `--node-flags="…"` the sidecars' Node/V8 flags
 * (default: SIDECAR_NODE_FLAGS); `--no-ejection` (see NO_EJECTION); `--no-pin` no CPU pinning (for a
 * machine where CPU 0 is taken); `--rate=N` another fixed rate; `--keep` keeps the temp dir with every
 * log; `--h2load` the old fixed-rate generator; `--versus-flags="…"` an A/B of the sidecars' flags instead
 * of the report (see VERSUS; `--versus-entry=FILE` for another bundle). Goals are reported, never turned into a non-zero exit.
 *
 * Needs nginx and a C compiler, or h2load (`apt-get install -y nginx gcc nghttp2-client`; a dev-machine
 * benchmark, not CI).
 */
import { spawnSync } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import {
  sealRuntimeConfig,
  SIDECAR_NODE_FLAGS,
  type SidecarRuntimeConfig,
} from "../runtime/contract/index.ts";
import {
  certificatesToPem,
  createIntermediateCa,
  createRootCa,
  SvidIssuer,
  TrustBundle,
  type IssuedSvid,
} from "../runtime/pki/index.ts";
import { parseSpec } from "../components/spec/parse.ts";
import { svidFiles, translate } from "../components/translate/translate.ts";
import {
  describeHostReport,
  hostReport,
  startHostProbe,
  summarizeHost,
  type HostReport,
} from "./hostprobe.ts";
import { buildLoadgen, fixedRate } from "./loadgen.ts";
import { median, meshgateEntry, stallsBetween, table } from "./support.ts";
import {
  freePort,
  get,
  have,
  machineBusy,
  processes,
  ready as waitReady,
  TCK,
  treeRssKiB,
  treeStatusKiB,
  treeTicks,
  type Started,
} from "./procs.ts";

// ───────────── settings ─────────────

const QUICK = process.argv.includes("--quick");
const REPS = QUICK ? 1 : 3;
const DURATION_S = QUICK ? 5 : 15;
/**
 * Load before the first round, per subject. 20 s at the rate: V8 optimizes a function with TurboFan
 * after ~3,000 calls, so after 5 s (the earlier warm-up) the sidecars were still compiling ~100 functions
 * during the first measured round (`--trace-opt`), on background threads that share the pinned CPU —
 * its p99 read +5 to +8 ms against +1.4 in the later rounds. The measure is the steady state.
 */
const WARMUP_S = QUICK ? 2 : 20;
/** Unmeasured load just before each measured run (see the header: rounds). */
const RUN_WARMUP_S = 1;
/** Requests per second of the measured passes (`--rate=N`, a multiple of 100; default 1,000). */
const RATE = (() => {
  const arg = process.argv.find((a) => a.startsWith("--rate="));
  const n = arg ? Number(arg.slice("--rate=".length)) : 1000;
  if (!Number.isInteger(n) || n < 100 || n % 100 !== 0)
    throw new Error(`--rate must be a multiple of 100, got ${arg}`);
  return n;
})();
const RPS_PER_CLIENT = 100;
const NOISE_LIMIT = 0.25;
const QUIET_WAIT_S = 15;
const SLACK_S = QUICK ? 20 : 60;
const PATH = "/api/v1/items/42";
const ROOT = new URL("../", import.meta.url).pathname;
/** The sidecars' Node/V8 flags: `--node-flags="…"`, or those every deployment uses (SIDECAR_NODE_FLAGS). */
const NODE_FLAGS = (() => {
  const arg = process.argv.find((a) => a.startsWith("--node-flags="));
  return arg ? arg.slice("--node-flags=".length).split(/\s+/).filter(Boolean) : SIDECAR_NODE_FLAGS;
})();
const GOALS = { addedP50: 0.4, addedP99: 1.0, rssMiB: 50, coresPer1k: 0.15 };
/**
 * `--versus-flags="…"` and/or `--versus-entry=FILE`: instead of the report, an A/B — two meshgate pairs,
 * A with NODE_FLAGS and this run's bundle, B with these flags (default: A's) and this entry (default: A's;
 * e.g. a bundle of another revision, `npm run build` there and copy dist/meshgate.js), both on CPU 0 and
 * loaded at the same time at RATE each, so that the host's drift (tens of percent between passes on this
 * machine, more than most changes make) hits both alike; per round the cores per 1k rps of each sidecar
 * and B's over A's, medians over REPS rounds. Sequential passes cannot tell a 10 % change from the drift.
 */
const VERSUS = (() => {
  const value = (name: string) =>
    process.argv.find((a) => a.startsWith(`--${name}=`))?.slice(name.length + 3);
  const flags = value("versus-flags");
  const entry = value("versus-entry");
  if (flags === undefined && entry === undefined) return null;
  return {
    flags: flags === undefined ? null : flags.split(/\s+/).filter(Boolean),
    entry: entry ?? null,
  };
})();
/** The reference subject made of Node's own http/https (bench/node-proxy.mjs). */
const NODE_PAIR = "minimal Node pair";
/** The floor subject: a raw-socket mTLS pair with no HTTP semantics (bench/raw-pair.mjs). */
const RAW_PAIR = "raw socket pair";
/**
 * --no-ejection: web's sidecar never ejects orders (consecutive5xx 1e9). With one endpoint, outlier
 * detection may eject it (at least one host may always be ejected), and a stall of the loaded machine
 * during a run then turns into 30 s of 503s — a measurement of the machine, not of the proxy.
 */
const NO_EJECTION = process.argv.includes("--no-ejection");

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
  return JSON.stringify(base);
})();

// ───────────── processes (bench/procs.ts, shared with bench/gateway.ts) ─────────────

const log = (msg: string) => process.stderr.write(`[bench:mesh] ${msg}\n`);
const tmp = mkdtempSync(join(os.tmpdir(), "meshgate-bench-mesh-"));
const cpus = os.availableParallelism();
const PROXY_CPU = "0";
const LOAD_CPU = cpus >= 2 ? "1" : "0";

const procs = processes({
  label: "bench:mesh",
  tmp,
  loadCpu: LOAD_CPU,
  // --no-pin: no taskset (the scheduler places every process; for a machine where CPU 0 is busy).
  pin: !process.argv.includes("--no-pin"),
  // --keep: leave the temp dir (configs, SVIDs, every process's log) and print its path.
  keep: process.argv.includes("--keep"),
});
const { nice: NICE, taskset: TASKSET, prefix, start, stopAll } = procs;

/** Waits until `port` answers 200 with the server's body (15 s at most). */
const ready = (name: string, port: number, started: Started[]) =>
  waitReady(procs, { name, port, path: PATH, body: BODY }, started, 15_000);

/** Ticks of this bench's own tree (h2load, the server, every proxy). */
const oursTicks = () => treeTicks(process.pid);

let slackSpent = 0;
async function waitQuiet(): Promise<number> {
  const began = performance.now();
  for (;;) {
    const [b0, o0, t0] = [machineBusy(), oursTicks(), performance.now()];
    await sleep(500);
    const others =
      Math.max(0, machineBusy() - b0 - (oursTicks() - o0)) / TCK / ((performance.now() - t0) / 1000);
    const waited = (performance.now() - began) / 1000;
    if (others <= NOISE_LIMIT || waited >= QUIET_WAIT_S || slackSpent + waited >= SLACK_S) {
      slackSpent += Math.max(0, waited - 0.5);
      return others;
    }
  }
}

// ───────────── h2load at a fixed rate ─────────────

interface LoadResult {
  readonly requests: number;
  readonly rps: number;
  readonly p50: number;
  readonly p90: number;
  readonly p99: number;
  readonly errors: number;
  /** What the host-speed probe saw (measured passes; bench/hostprobe.ts). */
  readonly host?: HostReport;
  /** loadgen passes: the percentiles from the time each request was due (the others are from when it was sent). */
  readonly due?: { readonly p50: number; readonly p90: number; readonly p99: number };
}

/**
 * The fixed-rate generator: bench/loadgen.c (compiled here; absolute per-connection schedules; latency
 * from the time each request was sent, and from the time it was due), or with `--h2load` (or no C
 * compiler) h2load, whose clients line up into one burst per period after a stall of the load CPU
 * (bench/loadgen.ts).
 */
const LOADGEN = process.argv.includes("--h2load") ? null : buildLoadgen(tmp);
const LOADGEN_BINARY = LOADGEN && "path" in LOADGEN ? LOADGEN.path : null;
const FIXED: "loadgen" | "h2load" = LOADGEN_BINARY ? "loadgen" : "h2load";

/** `rate` requests per second for `seconds` over `rate / 100` keep-alive connections (FIXED's generator). */
async function load(port: number, seconds: number, rate = RATE, probed = false): Promise<LoadResult> {
  if (LOADGEN_BINARY === null) return h2load(port, seconds, rate, probed);
  const r = await fixedRate({
    binary: LOADGEN_BINARY,
    prefix: prefix(LOAD_CPU),
    port,
    path: PATH,
    rate,
    connections: Math.max(1, rate / RPS_PER_CLIENT),
    seconds,
    logFile: join(tmp, `loadgen-${port}.tsv`),
    run: (argv, timeoutMs) => procs.output(argv, timeoutMs),
    ...(probed
      ? { probe: { file: join(tmp, `hostprobe-${port}.json`), cpu: TASKSET ? LOAD_CPU : null, nice: NICE } }
      : {}),
  });
  return { ...r, errors: r.statusErrors + r.socketErrors };
}

/** h2load --h1 -c10 -r1 --rate-period=1ms --rps=100 for `seconds`; percentiles from its request log. */
async function h2load(port: number, seconds: number, rate = RATE, probed = false): Promise<LoadResult> {
  const clients = Math.max(1, rate / RPS_PER_CLIENT);
  const logFile = join(tmp, `h2load-${port}.tsv`);
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
    `--log-file=${logFile}`,
    `http://127.0.0.1:${port}${PATH}`,
  ];
  const probe = probed
    ? startHostProbe(seconds + 2, join(tmp, `hostprobe-${port}.json`), TASKSET ? LOAD_CPU : null, NICE)
    : null;
  const out = await procs.output(argv, (seconds + 20) * 1000);
  const probeResult = probe ? await probe.result() : null;
  let text: string;
  try {
    text = readFileSync(logFile, "utf8");
  } catch {
    throw new Error(`h2load wrote no request log:\n${out.trim()}`);
  }
  const starts: number[] = [];
  const durations: number[] = [];
  let errors = 0;
  for (const line of text.split("\n")) {
    if (!line) continue;
    const [startUs, status, us] = line.split("\t").map(Number) as [number, number, number];
    starts.push(startUs);
    durations.push(us);
    if (!(status >= 200 && status < 400)) errors++;
  }
  const m =
    /requests: (\d+) total, \d+ started, \d+ done, \d+ succeeded, \d+ failed, (\d+) errored, (\d+) timeout/.exec(
      out,
    );
  if (m) errors += Number(m[2]) + Number(m[3]) + Math.max(0, Number(m[1]) - durations.length);
  const host = probeResult ? hostReport(probeResult, starts, durations) : undefined;
  durations.sort((a, b) => a - b);
  const pct = (q: number) =>
    durations.length ? durations[Math.min(durations.length - 1, Math.floor(durations.length * q))]! / 1e3 : 0;
  let lo = Infinity;
  let hi = -Infinity;
  for (const s of starts) {
    lo = Math.min(lo, s);
    hi = Math.max(hi, s);
  }
  const span = starts.length > 1 ? (hi - lo) / 1e6 : seconds;
  return {
    host,
    requests: durations.length,
    rps: durations.length / Math.max(span, 1e-3),
    p50: pct(0.5),
    p90: pct(0.9),
    p99: pct(0.99),
    errors,
  };
}

// ───────────── the PKI and the configs ─────────────

interface Identity {
  readonly dir: string;
  readonly svid: IssuedSvid;
}

async function makeIdentities(): Promise<{ web: Identity; orders: Identity; bundlePem: string }> {
  const root = await createRootCa({ trustDomain: "bench.example" });
  const intermediate = await createIntermediateCa(root);
  const bundle = new TrustBundle("bench.example", [root.certificate]);
  const issuer = new SvidIssuer(intermediate);
  const write = async (name: string, dnsNames: string[]): Promise<Identity> => {
    // The DNS SAN is for nginx, whose proxy_ssl_verify checks a host name; SPIFFE verifiers ignore it.
    const svid = await issuer.issue(`spiffe://bench.example/ns/bench/sa/${name}`, { dnsNames });
    const dir = join(tmp, "identities", name);
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, "svid.pem"), svid.chainPem);
    writeFileSync(join(dir, "svid-key.pem"), svid.keyPem!.reveal(), { mode: 0o600 });
    writeFileSync(join(dir, "bundle.pem"), bundle.toPem());
    writeFileSync(join(dir, "intermediates.pem"), certificatesToPem([intermediate.certificate]));
    return { dir, svid };
  };
  return {
    web: await write("web", []),
    orders: await write("orders", ["orders"]),
    bundlePem: bundle.toPem(),
  };
}

function sidecarConfigs(ports: {
  server: number;
  webLocal: number;
  webOutbound: number;
  webInbound: number;
  webAdmin: number;
  ordersInbound: number;
  ordersOutbound: number;
  ordersAdmin: number;
  webDir: string;
  ordersDir: string;
}): { web: SidecarRuntimeConfig; orders: SidecarRuntimeConfig } {
  const r = parseSpec({
    name: "bench",
    namespace: "bench",
    trustDomain: "bench.example",
    services: {
      web: { image: "r/web:1", port: 8080, calls: ["orders"] },
      orders: {
        image: "r/orders:1",
        port: 8080,
        allow: [{ from: ["web"], methods: ["GET"], paths: ["/api/**"] }],
      },
    },
    observability: { logs: { access: false } },
  });
  if (!r.ok) throw new Error(r.errors.map((e) => `${e.path}: ${e.message}`).join("\n"));
  const sidecars = translate(r.spec).runtime.sidecars;
  const by = (name: string) => {
    const { hash: _h, ...c } = sidecars.find((s) => s.name === name)!;
    return c;
  };
  const web = by("web");
  const orders = by("orders");
  const clusters = NO_EJECTION
    ? web.clusters.map((c) => ({
        ...c,
        outlierDetection: { ...c.outlierDetection, consecutive5xx: 1_000_000_000 },
      }))
    : web.clusters;
  return {
    web: sealRuntimeConfig<SidecarRuntimeConfig>({
      ...web,
      clusters,
      svid: { ...web.svid, ...svidFiles(ports.webDir) },
      discovery: {
        kind: "static",
        endpoints: { orders: [{ host: "127.0.0.1", port: ports.ordersInbound }] },
      },
      admin: { port: ports.webAdmin },
      inbound: { ...web.inbound, port: ports.webInbound, appPort: ports.server },
      outbound: {
        port: ports.webOutbound,
        services: web.outbound.services.map((s) => ({ ...s, localPort: ports.webLocal })),
        external: [],
      },
    }),
    orders: sealRuntimeConfig<SidecarRuntimeConfig>({
      ...orders,
      svid: { ...orders.svid, ...svidFiles(ports.ordersDir) },
      discovery: { kind: "static", endpoints: {} },
      admin: { port: ports.ordersAdmin },
      inbound: { ...orders.inbound, port: ports.ordersInbound, appPort: ports.server },
      outbound: { ...orders.outbound, port: ports.ordersOutbound },
    }),
  };
}

const nginxTemp = (name: string) =>
  ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"]
    .map((k) => `  ${k}_temp_path ${join(tmp, `${name}-${k}`)};`)
    .join("\n");

function nginxHead(name: string): string {
  return `worker_processes 1;
pid ${join(tmp, `${name}.pid`)};
error_log ${join(tmp, `${name}-error.log`)} warn;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  keepalive_timeout 120s;
${nginxTemp(name)}`;
}

const serverConf = (port: number) => `${nginxHead("server")}
  server {
    listen 127.0.0.1:${port} reuseport backlog=4096;
    location / {
      default_type application/json;
      return 200 '${BODY}';
    }
  }
}
`;

/** The serving side of the nginx pair: mTLS with a required client certificate, then the server. */
const nginxInboundConf = (
  port: number,
  server: number,
  id: Identity,
  bundle: string,
) => `${nginxHead("nginx-in")}
  upstream app {
    server 127.0.0.1:${server};
    keepalive 64;
    keepalive_requests 1000000;
  }
  server {
    listen 127.0.0.1:${port} ssl reuseport backlog=4096;
    ssl_protocols TLSv1.3;
    ssl_certificate ${join(id.dir, "svid.pem")};
    ssl_certificate_key ${join(id.dir, "svid-key.pem")};
    ssl_client_certificate ${bundle};
    ssl_verify_client on;
    ssl_verify_depth 2;
    location / {
      proxy_pass http://app;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
`;

/** The calling side: plain HTTP in, mTLS out with the client SVID, verifying the server's chain and name. */
const nginxOutboundConf = (
  port: number,
  inbound: number,
  id: Identity,
  bundle: string,
) => `${nginxHead("nginx-out")}
  upstream orders {
    server 127.0.0.1:${inbound};
    keepalive 64;
    keepalive_requests 1000000;
  }
  server {
    listen 127.0.0.1:${port} reuseport backlog=4096;
    location / {
      proxy_pass https://orders;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_ssl_protocols TLSv1.3;
      proxy_ssl_certificate ${join(id.dir, "svid.pem")};
      proxy_ssl_certificate_key ${join(id.dir, "svid-key.pem")};
      proxy_ssl_trusted_certificate ${bundle};
      proxy_ssl_verify on;
      proxy_ssl_verify_depth 2;
      proxy_ssl_name orders;
      proxy_ssl_session_reuse on;
    }
  }
}
`;

function nginxArgs(conf: string, name: string): string[] {
  const file = join(tmp, `${name}.conf`);
  writeFileSync(file, conf);
  return ["nginx", "-p", tmp, "-e", join(tmp, `${name}-error.log`), "-c", file, "-g", "daemon off;"];
}

// ───────────── measurement ─────────────

interface Proxy {
  readonly label: string;
  readonly started: Started;
  rssColdKiB: number;
  rssMaxKiB: number;
  /** The most anonymous (private) memory sampled: what each further proxy process costs. */
  anonMaxKiB: number;
}

interface Subject {
  readonly name: string;
  readonly port: number;
  readonly proxies: Proxy[];
}

interface Run extends LoadResult {
  /** Cores each proxy used during the run, by label. */
  readonly cores: Record<string, number>;
  /** Cores the rest of the machine (outside this bench) used during the run. */
  readonly others: number;
  readonly noisy: boolean;
}

/**
 * Runs `load` while measuring the proxies: the cores each used (their process trees' CPU over the run),
 * their maximum RSS and private memory (sampled every 250 ms into each Proxy), and the cores the rest of
 * the machine (outside this bench) used.
 */
async function measuring<T>(
  proxies: readonly Proxy[],
  load: () => Promise<T>,
): Promise<{ result: T; cores: number[]; others: number }> {
  const before = proxies.map((x) => treeTicks(x.started.child.pid!));
  const [b0, o0, t0] = [machineBusy(), oursTicks(), performance.now()];
  const sampler = setInterval(() => {
    for (const x of proxies) {
      x.rssMaxKiB = Math.max(x.rssMaxKiB, treeRssKiB(x.started.child.pid!));
      x.anonMaxKiB = Math.max(x.anonMaxKiB, treeStatusKiB(x.started.child.pid!, "RssAnon"));
    }
  }, 250);
  const result = await load();
  clearInterval(sampler);
  const elapsed = (performance.now() - t0) / 1000;
  const cores = proxies.map((x, i) => (treeTicks(x.started.child.pid!) - before[i]!) / TCK / elapsed);
  const others = Math.max(0, machineBusy() - b0 - (oursTicks() - o0)) / TCK / elapsed;
  return { result, cores, others };
}

async function measuredRun(s: Subject, seconds: number): Promise<Run> {
  await waitQuiet();
  await load(s.port, RUN_WARMUP_S);
  const m = await measuring(s.proxies, () => load(s.port, seconds, RATE, true));
  const [r, others] = [m.result, m.others];
  const cores = Object.fromEntries(s.proxies.map((p, i) => [p.label, m.cores[i]!]));
  const run: Run = { ...r, cores, others, noisy: others > NOISE_LIMIT };
  log(
    `${s.name}: ${Math.round(r.rps)} rps, p50/p90/p99 ${r.p50.toFixed(3)}/${r.p90.toFixed(3)}/${r.p99.toFixed(3)} ms` +
      `${r.due ? ` (from due ${r.due.p50.toFixed(3)}/${r.due.p90.toFixed(3)}/${r.due.p99.toFixed(3)})` : ""}` +
      `${r.errors ? `, ${r.errors} errors` : ""}; ${Object.entries(cores)
        .map(([k, v]) => `${k} ${v.toFixed(3)} cores`)
        .join(", ")}; others ${others.toFixed(2)} cores${run.noisy ? " (noisy)" : ""}` +
      (r.host ? describeHostReport(r.host, 3) : ""),
  );
  return run;
}

function meshgateVersion(): string {
  const head = spawnSync("git", ["rev-parse", "--short", "HEAD"], { cwd: ROOT, encoding: "utf8" });
  if (head.status !== 0) return "?";
  const dirty = spawnSync("git", ["status", "--porcelain", "--", "runtime", "bin", "cli"], {
    cwd: ROOT,
    encoding: "utf8",
  });
  return `${head.stdout.trim()}${dirty.stdout.trim() ? " + uncommitted changes in runtime/" : ""}`;
}

const version = (argv: string[], pattern: RegExp) => {
  const r = spawnSync(argv[0]!, argv.slice(1), { encoding: "utf8" });
  return pattern.exec(`${r.stdout ?? ""}${r.stderr ?? ""}`)?.[1] ?? "?";
};

// ───────────── main ─────────────

async function main(): Promise<number> {
  const missing = ["nginx", ...(FIXED === "h2load" ? ["h2load"] : [])].filter((c) => !have(c));
  if (missing.length) {
    log(
      `missing ${missing.join(", ")}: apt-get install -y nginx nghttp2-client (a dev-machine benchmark, not CI)`,
    );
    return 1;
  }
  if (LOADGEN && "error" in LOADGEN) log(`${LOADGEN.error}; the fixed-rate passes use h2load`);
  const began = performance.now();
  const entry = await meshgateEntry(ROOT);
  const ids = await makeIdentities();
  const bundleFile = join(tmp, "bundle.pem");
  writeFileSync(bundleFile, ids.bundlePem);
  const p = {
    server: await freePort(),
    webLocal: await freePort(),
    webOutbound: await freePort(),
    webInbound: await freePort(),
    webAdmin: await freePort(),
    ordersInbound: await freePort(),
    ordersOutbound: await freePort(),
    ordersAdmin: await freePort(),
    nginxOut: await freePort(),
    nginxIn: await freePort(),
    nodeOut: await freePort(),
    nodeIn: await freePort(),
    rawOut: await freePort(),
    rawIn: await freePort(),
  };
  const server = start("server", nginxArgs(serverConf(p.server), "server"), LOAD_CPU);
  await ready("the server", p.server, [server]);
  if (VERSUS) return versus(entry, ids, p.server, began);

  // meshgate pair
  const configs = sidecarConfigs({ ...p, webDir: ids.web.dir, ordersDir: ids.orders.dir });
  const sidecar = (name: string, config: SidecarRuntimeConfig) => {
    const file = join(tmp, `${name}.json`);
    writeFileSync(file, JSON.stringify(config));
    return start(
      `sidecar-${name}`,
      [process.execPath, ...NODE_FLAGS, entry.path, "sidecar", "--config", file, "--host", "127.0.0.1"],
      PROXY_CPU,
    );
  };
  const ordersSidecar = sidecar("orders", configs.orders);
  const webSidecar = sidecar("web", configs.web);
  // nginx pair
  const nginxIn = start(
    "nginx-in",
    nginxArgs(nginxInboundConf(p.nginxIn, p.server, ids.orders, bundleFile), "nginx-in"),
    PROXY_CPU,
  );
  const nginxOut = start(
    "nginx-out",
    nginxArgs(nginxOutboundConf(p.nginxOut, p.nginxIn, ids.web, bundleFile), "nginx-out"),
    PROXY_CPU,
  );

  // The reference pairs, with the sidecars' flags: the minimal Node pair, Node's own cost for the hop
  // (bench/node-proxy.mjs), and the raw socket pair, the floor under it (bench/raw-pair.mjs).
  const referenceProxy = (
    script: "node-proxy" | "raw-pair",
    role: "outbound" | "inbound",
    listen: number,
    nextPort: number,
    id: Identity,
  ) =>
    start(
      `${script === "node-proxy" ? "node" : "raw"}-${role}`,
      [
        process.execPath,
        ...NODE_FLAGS,
        join(ROOT, `bench/${script}.mjs`),
        role,
        String(listen),
        String(nextPort),
        id.dir,
        bundleFile,
      ],
      PROXY_CPU,
    );
  const nodeIn = referenceProxy("node-proxy", "inbound", p.nodeIn, p.server, ids.orders);
  const nodeOut = referenceProxy("node-proxy", "outbound", p.nodeOut, p.nodeIn, ids.web);
  const rawIn = referenceProxy("raw-pair", "inbound", p.rawIn, p.server, ids.orders);
  const rawOut = referenceProxy("raw-pair", "outbound", p.rawOut, p.rawIn, ids.web);

  const proxy = (label: string, started: Started): Proxy => ({
    label,
    started,
    rssColdKiB: 0,
    rssMaxKiB: 0,
    anonMaxKiB: 0,
  });
  const subjects: Subject[] = [
    { name: "direct", port: p.server, proxies: [] },
    {
      name: "meshgate sidecars",
      port: p.webLocal,
      proxies: [proxy("outbound (web)", webSidecar), proxy("inbound (orders)", ordersSidecar)],
    },
    {
      name: "nginx pair",
      port: p.nginxOut,
      proxies: [proxy("outbound", nginxOut), proxy("inbound", nginxIn)],
    },
    {
      name: NODE_PAIR,
      port: p.nodeOut,
      proxies: [proxy("outbound", nodeOut), proxy("inbound", nodeIn)],
    },
    {
      name: RAW_PAIR,
      port: p.rawOut,
      proxies: [proxy("outbound", rawOut), proxy("inbound", rawIn)],
    },
  ];
  try {
    await ready("the meshgate pair", p.webLocal, [webSidecar, ordersSidecar]);
    await ready("the nginx pair", p.nginxOut, [nginxIn, nginxOut]);
    await ready("the minimal Node pair", p.nodeOut, [nodeIn, nodeOut]);
    await ready("the raw socket pair", p.rawOut, [rawIn, rawOut]);
  } catch (err) {
    log((err as Error).message);
    await stopAll();
    return 1;
  }
  await sleep(1000);
  for (const s of subjects)
    for (const x of s.proxies) x.rssColdKiB = x.rssMaxKiB = treeRssKiB(x.started.child.pid!);

  for (const s of subjects) {
    log(`${s.name}: warm-up ${WARMUP_S} s (1 s at 100 rps first: JIT, connections, the verifier's cache)`);
    await load(s.port, 1, 100);
    await load(s.port, WARMUP_S);
  }
  const runs = new Map<string, Run[]>(subjects.map((s) => [s.name, []]));
  for (let i = 0; i < REPS; i++)
    for (const s of subjects) runs.get(s.name)!.push(await measuredRun(s, DURATION_S));

  for (const x of subjects[1]!.proxies)
    if (runs.get("meshgate sidecars")!.some((r) => r.errors > 0)) {
      const warnings = readFileSync(x.started.logFile, "utf8")
        .split("\n")
        .filter((l) => /"level":(40|50|60)/.test(l));
      log(
        `${x.label}: ${warnings.length} warning/error log lines; the last ones:\n${warnings.slice(-8).join("\n")}`,
      );
    }
  const metricsText = (await get(p.webAdmin, "/metrics").catch(() => ({ body: "" }))).body;
  const inboundText = (await get(p.ordersAdmin, "/metrics").catch(() => ({ body: "" }))).body;
  await stopAll();

  // ── report ──
  const med = (name: string, f: (r: Run) => number) => median(runs.get(name)!.map(f));
  const direct = {
    p50: med("direct", (r) => r.p50),
    p90: med("direct", (r) => r.p90),
    p99: med("direct", (r) => r.p99),
  };
  const ms3 = (n: number) => n.toFixed(3);
  /**
   * The host-speed probe's view of the rounds (bench/hostprobe.ts): how much of them the host was slow,
   * and the added p99 over the requests that overlapped no slow interval — a diagnosis printed beside
   * the goal's measure, never in its place.
   */
  const steadyLines = (): string[] => {
    const [d, m, n] = ["direct", mg, "nginx pair"].map((name) =>
      summarizeHost(runs.get(name)!.map((r) => r.host)),
    );
    if (!d || !m || !n) return [];
    return [
      `  host probe: the host was slow (a fixed unit of work > 3× its usual time) for ${d.slow} / ${m.slow} / ${n.slow} of the direct / meshgate / nginx rounds; ` +
        `over the requests that overlapped no slow interval (${d.steady} / ${m.steady} / ${n.steady} of them) two sidecars add +${ms3(m.steadyP99 - d.steadyP99)} ms p99, the nginx pair +${ms3(n.steadyP99 - d.steadyP99)} ms — a diagnosis, not the goal's measure`,
    ];
  };
  const rows: string[][] = [];
  for (const s of subjects) {
    const rs = runs.get(s.name)!;
    const noisy = rs.some((r) => r.noisy) ? "~" : "";
    const p50 = med(s.name, (r) => r.p50);
    const p90 = med(s.name, (r) => r.p90);
    const p99 = med(s.name, (r) => r.p99);
    const rps = med(s.name, (r) => r.rps);
    const errors = rs.reduce((a, r) => a + r.errors, 0);
    rows.push([
      s.name,
      `${noisy}${Math.round(rps)}`,
      `${ms3(p50)} / ${ms3(p90)} / ${ms3(p99)}`,
      s.proxies.length ? `+${ms3(p50 - direct.p50)} / +${ms3(p99 - direct.p99)}` : "–",
      String(errors),
      "",
      "",
      "",
    ]);
    for (const x of s.proxies) {
      const coresPer1k = median(rs.map((r) => r.cores[x.label]! / (r.rps / 1000)));
      rows.push([
        `  ${x.label}`,
        "",
        "",
        "",
        "",
        coresPer1k.toFixed(3),
        `${(x.rssColdKiB / 1024).toFixed(0)} / ${(x.rssMaxKiB / 1024).toFixed(0)}`,
        (x.anonMaxKiB / 1024).toFixed(0),
      ]);
    }
  }
  const spread = (name: string, f: (r: Run) => number) => {
    const v = runs.get(name)!.map(f);
    return `${ms3(Math.min(...v))}–${ms3(Math.max(...v))}`;
  };
  const mg = "meshgate sidecars";
  const mgAdded50 = med(mg, (r) => r.p50) - direct.p50;
  const mgAdded99 = med(mg, (r) => r.p99) - direct.p99;
  const mgProxies = subjects[1]!.proxies;
  const verdict = (ok: boolean) => (ok ? "MET" : "MISSED");
  const othersAll = [...runs.values()].flat().map((r) => r.others);
  const handshakeFailures =
    /meshgate_tls_handshake_failures_total\{[^}]*\} (\d+)/.exec(inboundText)?.[1] ?? "0";
  const upstreamFailures = [
    ...metricsText.matchAll(/meshgate_upstream_requests_total\{[^}]*outcome="([^"]+)"\} (\d+)/g),
  ]
    .filter((m) => m[1] !== "success")
    .map((m) => `${m[1]} ${m[2]}`);
  /**
   * A reference pair beside the goals: the minimal Node pair (where any Node sidecar starts from on this
   * machine) and the raw socket pair (what a Node process pays for the hop itself).
   */
  const referenceLine = (name: string, what: string): string => {
    const pair = subjects.find((x) => x.name === name)!;
    const cores = pair.proxies.map((x) =>
      median(runs.get(name)!.map((r) => r.cores[x.label]! / (r.rps / 1000))).toFixed(3),
    );
    const mib = (kib: number) => (kib / 1024).toFixed(0);
    return (
      `${what} adds ` +
      `+${ms3(med(name, (r) => r.p50) - direct.p50)} ms p50 / +${ms3(med(name, (r) => r.p99) - direct.p99)} ms p99; ` +
      `${cores.join(" / ")} cores per 1k rps, ${pair.proxies.map((x) => mib(x.rssMaxKiB)).join(" / ")} MiB RSS ` +
      `(${pair.proxies.map((x) => mib(x.anonMaxKiB)).join(" / ")} private) per proxy (outbound / inbound)`
    );
  };
  const out = [
    `meshgate bench:mesh — client → server at a fixed ${RATE} rps: direct, through two meshgate sidecars (mTLS between them), and through an nginx mTLS pair, a minimal Node mTLS pair and a raw socket mTLS pair${QUICK ? " (--quick: 1 round × 5 s — a smoke run, not a measurement)" : ""}`,
    `sidecars run from ${entry.label}; node ${process.version} (sidecar flags: ${NODE_FLAGS.join(" ") || "none"}), nginx ${version(["nginx", "-v"], /nginx\/(\S+)/)}, load ${FIXED === "loadgen" ? "bench/loadgen.c" : `h2load ${version(["h2load", "--version"], /nghttp2\/(\S+)/)}`}; ${cpus} CPUs (${os.cpus()[0]?.model ?? "?"}); meshgate ${meshgateVersion()}`,
    `${TASKSET ? `proxy pairs on CPU ${PROXY_CPU}, ${FIXED} + server on CPU ${LOAD_CPU}` : "NOT pinned (--no-pin or no taskset)"} (server: nginx return 200, 104-byte JSON); nice -n -15: ${NICE ? "yes" : "not permitted"}; GET ${PATH}, keep-alive`,
    "",
    ...table(
      [
        "subject",
        "rps",
        "p50 / p90 / p99 ms",
        "added p50 / p99 ms",
        "errors",
        "cores/1k rps",
        "RSS idle/max MiB",
        "anon max MiB",
      ],
      rows,
      (i) => i >= 1,
    ),
    "",
    `goal: two sidecars add ≤ ${GOALS.addedP50} ms p50 — +${ms3(mgAdded50)} ms (${verdict(mgAdded50 <= GOALS.addedP50)}); nginx pair +${ms3(med("nginx pair", (r) => r.p50) - direct.p50)} ms`,
    `goal: two sidecars add ≤ ${GOALS.addedP99} ms p99 — +${ms3(mgAdded99)} ms (${verdict(mgAdded99 <= GOALS.addedP99)}); nginx pair +${ms3(med("nginx pair", (r) => r.p99) - direct.p99)} ms`,
    ...steadyLines(),
    referenceLine(
      NODE_PAIR,
      "reference: the minimal Node mTLS pair (Node's http/https and a keep-alive agent, none of meshgate's work)",
    ),
    referenceLine(
      RAW_PAIR,
      "floor: the raw socket mTLS pair (node:net/node:tls, Content-Length framing, one write per message, no HTTP semantics)",
    ),
    ...mgProxies.map((x) => {
      const c = median(runs.get(mg)!.map((r) => r.cores[x.label]! / (r.rps / 1000)));
      const rss = x.rssMaxKiB / 1024;
      return `goal: per sidecar ≤ ${GOALS.rssMiB} MiB RSS and ≤ ${GOALS.coresPer1k} cores per 1k rps — ${x.label}: ${rss.toFixed(0)} MiB (${verdict(rss <= GOALS.rssMiB)}; ${(x.anonMaxKiB / 1024).toFixed(0)} MiB of it private, the rest file pages of node and the bundle), ${c.toFixed(3)} cores (${verdict(c <= GOALS.coresPer1k)})`;
    }),
    "",
    ...(NO_EJECTION
      ? ["--no-ejection: web's sidecar ran with outlier detection that never ejects (consecutive5xx 1e9)."]
      : []),
    `notes: medians of ${REPS} round(s) × ${DURATION_S} s (direct, meshgate, nginx, Node, raw interleaved) after ${WARMUP_S} s warm-ups, each run right after ${RUN_WARMUP_S} s of the same load, unmeasured; added = subject minus direct percentiles;`,
    `  spread over rounds (p50, p99): direct ${spread("direct", (r) => r.p50)} / ${spread("direct", (r) => r.p99)} ms, meshgate ${spread(mg, (r) => r.p50)} / ${spread(mg, (r) => r.p99)} ms, nginx ${spread("nginx pair", (r) => r.p50)} / ${spread("nginx pair", (r) => r.p99)} ms;`,
    `  the rest of the machine used ${Math.min(...othersAll).toFixed(2)}–${Math.max(...othersAll).toFixed(2)} cores during the runs (noisy runs, > ${NOISE_LIMIT} cores, marked ~);`,
    FIXED === "loadgen"
      ? `  load: bench/loadgen.c, open loop: ${RATE / RPS_PER_CLIENT} keep-alive connections × ${RPS_PER_CLIENT} req/s on absolute schedules spread over the period; percentiles from the time each request was sent (the goals' measure), and from the time it was due (coordinated omission corrected, "from due" in the log); cores = /proc/<pid>/stat CPU over each run;`
      : `  load: h2load --h1 -c${RATE / RPS_PER_CLIENT} -r1 --rate-period=1ms --rps=${RPS_PER_CLIENT} (open loop), percentiles from its per-request log (its clients line up after a stall of the load CPU: bench/loadgen.ts); cores = /proc/<pid>/stat CPU over each run;`,
    `  the meshgate client enters through web's per-service local port (127.0.0.1:${p.webLocal}); orders' inbound refused ${handshakeFailures} handshakes; web's upstream attempts that failed: ${upstreamFailures.join(", ") || "none"};`,
    `  the nginx pair verifies chains and the host name "orders" (a DNS SAN in the same SVID), not SPIFFE IDs; meshgate verifies the SPIFFE ID on both sides.`,
    `  what stalled the sidecars over the whole run (their /metrics at the end; warm-ups included): web (outbound) ${stallsBetween("", metricsText, null)}; orders (inbound) ${stallsBetween("", inboundText, null)};`,
    `  total ${((performance.now() - began) / 1000).toFixed(0)} s`,
  ];
  console.log(out.join("\n"));
  return 0;
}

// ───────────── --versus-flags: an A/B of the sidecars' flags, loaded together ─────────────

interface Pair {
  readonly name: string;
  readonly flags: readonly string[];
  readonly entry: string;
  readonly port: number;
  readonly proxies: Proxy[];
}

async function versus(
  entry: { path: string; label: string },
  ids: { web: Identity; orders: Identity },
  serverPort: number,
  began: number,
): Promise<number> {
  const startPair = async (name: string, flags: readonly string[], entryPath: string): Promise<Pair> => {
    const ports = {
      server: serverPort,
      webLocal: await freePort(),
      webOutbound: await freePort(),
      webInbound: await freePort(),
      webAdmin: await freePort(),
      ordersInbound: await freePort(),
      ordersOutbound: await freePort(),
      ordersAdmin: await freePort(),
    };
    const configs = sidecarConfigs({ ...ports, webDir: ids.web.dir, ordersDir: ids.orders.dir });
    const one = (role: string, config: SidecarRuntimeConfig) => {
      const file = join(tmp, `${name}-${role}.json`);
      writeFileSync(file, JSON.stringify(config));
      const argv = [
        process.execPath,
        ...flags,
        entry.path,
        "sidecar",
        "--config",
        file,
        "--host",
        "127.0.0.1",
      ];
      return start(`sidecar-${name}-${role}`, argv, PROXY_CPU);
    };
    const orders = one("orders", configs.orders);
    const web = one("web", configs.web);
    await ready(`pair ${name}`, ports.webLocal, [web, orders]);
    const proxy = (label: string, started: Started): Proxy => ({
      label,
      started,
      rssColdKiB: treeRssKiB(started.child.pid!),
      rssMaxKiB: 0,
      anonMaxKiB: 0,
    });
    return {
      name,
      flags,
      entry: entryPath,
      port: ports.webLocal,
      proxies: [proxy("outbound (web)", web), proxy("inbound (orders)", orders)],
    };
  };
  let pairs: Pair[];
  try {
    pairs = [
      await startPair("A", NODE_FLAGS, entry.path),
      await startPair("B", VERSUS!.flags ?? NODE_FLAGS, VERSUS!.entry ?? entry.path),
    ];
  } catch (err) {
    log((err as Error).message);
    await stopAll();
    return 1;
  }
  for (const pair of pairs) {
    log(`pair ${pair.name}: warm-up ${WARMUP_S} s`);
    await load(pair.port, 1, 100);
    await load(pair.port, WARMUP_S);
  }
  interface Round {
    readonly load: LoadResult[];
    /** cores per 1k rps by pair, then by proxy (outbound, inbound). */
    readonly per1k: number[][];
    readonly others: number;
  }
  const rounds: Round[] = [];
  for (let i = 0; i < REPS && !procs.interrupted(); i++) {
    await waitQuiet();
    await Promise.all(pairs.map((pair) => load(pair.port, RUN_WARMUP_S)));
    const all = pairs.flatMap((pair) => pair.proxies);
    const m = await measuring(all, () => Promise.all(pairs.map((pair) => load(pair.port, DURATION_S))));
    const [results, cores, others] = [m.result, m.cores, m.others];
    const per1k = pairs.map((pair, k) =>
      pair.proxies.map((_, j) => cores[k * pair.proxies.length + j]! / (results[k]!.rps / 1000)),
    );
    rounds.push({ load: results, per1k, others });
    log(
      `round ${i + 1}: ` +
        pairs
          .map(
            (pair, k) =>
              `${pair.name} ${Math.round(results[k]!.rps)} rps p50/p99 ${results[k]!.p50.toFixed(3)}/${results[k]!.p99.toFixed(3)} ms, ` +
              `${per1k[k]!.map((c) => c.toFixed(3)).join(" / ")} cores per 1k rps${results[k]!.errors ? `, ${results[k]!.errors} errors` : ""}`,
          )
          .join("; ") +
        `; others ${others.toFixed(2)} cores`,
    );
  }
  await stopAll();
  if (rounds.length === 0) return 1;
  const ms3 = (n: number) => n.toFixed(3);
  const rows = pairs.flatMap((pair, k) => [
    [
      `${pair.name}: ${pair.entry === entry.path ? "" : `${pair.entry} `}${pair.flags.join(" ") || "(no flags)"}`,
      String(Math.round(median(rounds.map((r) => r.load[k]!.rps)))),
      `${ms3(median(rounds.map((r) => r.load[k]!.p50)))} / ${ms3(median(rounds.map((r) => r.load[k]!.p99)))}`,
      String(rounds.reduce((a, r) => a + r.load[k]!.errors, 0)),
      "",
      "",
      "",
    ],
    ...pair.proxies.map((x, j) => [
      `  ${x.label}`,
      "",
      "",
      "",
      median(rounds.map((r) => r.per1k[k]![j]!)).toFixed(3),
      `${(x.rssColdKiB / 1024).toFixed(0)} / ${(x.rssMaxKiB / 1024).toFixed(0)}`,
      (x.anonMaxKiB / 1024).toFixed(0),
    ]),
  ]);
  const ratio = (j: number) => median(rounds.map((r) => r.per1k[1]![j]! / r.per1k[0]![j]!));
  const spread = (j: number) => {
    const v = rounds.map((r) => r.per1k[1]![j]! / r.per1k[0]![j]!);
    return `${Math.min(...v).toFixed(2)}–${Math.max(...v).toFixed(2)}`;
  };
  const othersAll = rounds.map((r) => r.others);
  console.log(
    [
      `meshgate bench:mesh --versus-flags — two meshgate pairs loaded together, ${RATE} rps each, both on CPU ${PROXY_CPU}${QUICK ? " (--quick)" : ""}`,
      `sidecars run from ${entry.label}; node ${process.version}; meshgate ${meshgateVersion()}`,
      "",
      ...table(
        [
          "pair / sidecar",
          "rps",
          "p50 / p99 ms",
          "errors",
          "cores/1k rps",
          "RSS idle/max MiB",
          "anon max MiB",
        ],
        rows,
        (i) => i >= 1,
      ),
      "",
      ...pairs[0]!.proxies.map(
        (x, j) =>
          `B / A cores per 1k rps, ${x.label}: ${ratio(j).toFixed(3)}× (median of ${rounds.length} round(s); ${spread(j)})`,
      ),
      `notes: ${rounds.length} round(s) × ${DURATION_S} s, each after ${RUN_WARMUP_S} s of the same load; the rest of the machine used ${Math.min(...othersAll).toFixed(2)}–${Math.max(...othersAll).toFixed(2)} cores; total ${((performance.now() - began) / 1000).toFixed(0)} s`,
    ].join("\n"),
  );
  return 0;
}

process.exitCode = await main().catch(async (err: Error) => {
  log(`failed: ${err.stack ?? err.message}`);
  await stopAll();
  return 1;
});
