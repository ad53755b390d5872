/**
 * The fixed-rate load generator of the benchmarks (bench/loadgen.c, compiled here with the machine's C
 * compiler): open loop, keep-alive HTTP/1.1, each connection on an absolute schedule — so the load stays
 * spread over each period after a stall of the load CPU. h2load's `--rps` timers restart from "now" when
 * they fire late (libev), so one stall of the load CPU lines every client up at the same instant and the
 * "fixed rate" arrives from then on as one burst per period: measured here, 50 clients at 5,000 rps went
 * from starts spread over the 10 ms period to 80 % of them in the same 2 ms, and a proxy's p50 from 0.5 to
 * 3 ms, until the end of the pass.
 *
 * Latency is reported two ways: from the time a request was sent to the end of its response (h2load's
 * and wrk's figure, the one the benchmarks' goals were set with), and from the time it was due (wrk2's,
 * corrected for coordinated omission: a request that waits for its busy connection counts the wait — a
 * stall of the proxy counts for every request due during it).
 */
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { hostReport, startHostProbe, type HostReport } from "./hostprobe.ts";

/** One fixed-rate pass, as the request log says. */
export interface FixedRatePass {
  /** Requests answered (any status) or failed, in the log. */
  readonly requests: number;
  /** Requests per second over the span of the send times. */
  readonly rps: number;
  /** Percentiles in ms from the time each request was sent. */
  readonly p50: number;
  readonly p90: number;
  readonly p99: number;
  /** Percentiles in ms from the time each request was due (corrected for coordinated omission). */
  readonly due: { readonly p50: number; readonly p90: number; readonly p99: number };
  /** Responses outside 2xx–3xx. */
  readonly statusErrors: number;
  /** Requests that got no response (reset, closed, timed out). */
  readonly socketErrors: number;
  /** Per request, µs since the epoch when it was sent, and µs from then to its response's end. */
  readonly starts: readonly number[];
  readonly durations: readonly number[];
  /** What the host-speed probe saw during the pass (when one ran: FixedRateOptions.probe). */
  readonly host?: HostReport;
}

const SOURCE = new URL("./loadgen.c", import.meta.url).pathname;

/**
 * Compiles bench/loadgen.c into `dir` (once per source text) and returns the binary's path, or null with
 * the reason when there is no C compiler.
 */
export function buildLoadgen(dir: string): { path: string } | { error: string } {
  const source = readFileSync(SOURCE);
  const binary = join(dir, `loadgen-${createHash("sha256").update(source).digest("hex").slice(0, 12)}`);
  if (existsSync(binary)) return { path: binary };
  for (const cc of ["cc", "gcc", "clang"]) {
    try {
      execFileSync(cc, ["-O2", "-Wall", "-o", binary, SOURCE], { stdio: "pipe" });
      return { path: binary };
    } catch (err) {
      const e = err as NodeJS.ErrnoException & { stderr?: Buffer };
      if (e.code === "ENOENT") continue;
      return { error: `${cc} failed on bench/loadgen.c: ${e.stderr?.toString().trim() ?? e.message}` };
    }
  }
  return { error: "no C compiler (cc, gcc, clang): apt-get install -y gcc libc6-dev" };
}

export interface FixedRateOptions {
  /** The compiled generator (buildLoadgen). */
  readonly binary: string;
  /** What runs it (e.g. `taskset -c 1 nice -n -15`); empty for nothing. */
  readonly prefix: readonly string[];
  readonly port: number;
  readonly path: string;
  /** Requests per second, over every connection. */
  readonly rate: number;
  /** Keep-alive connections (each sends rate / connections per second). */
  readonly connections: number;
  readonly seconds: number;
  readonly headers?: readonly string[];
  /** Where the request log goes. */
  readonly logFile: string;
  /** Runs the generator to its end and resolves with its stdout (procs.output). */
  readonly run: (argv: readonly string[], timeoutMs: number) => Promise<string>;
  /** A host-speed probe beside the generator for the pass (bench/hostprobe.ts): its file, CPU and nice. */
  readonly probe?: { readonly file: string; readonly cpu: string | null; readonly nice: boolean };
}

/** Runs one pass (with the host-speed probe beside it, when asked) and reads its request log. */
export async function fixedRate(o: FixedRateOptions): Promise<FixedRatePass> {
  rmSync(o.logFile, { force: true });
  const probe = o.probe ? startHostProbe(o.seconds + 2, o.probe.file, o.probe.cpu, o.probe.nice) : null;
  const argv = [
    ...o.prefix,
    o.binary,
    "127.0.0.1",
    String(o.port),
    o.path,
    String(o.rate),
    String(o.connections),
    String(o.seconds),
    o.logFile,
    ...(o.headers ?? []),
  ];
  const out = await o.run(argv, (o.seconds + 20) * 1000);
  const probed = probe ? await probe.result() : null;
  let text: string;
  try {
    text = readFileSync(o.logFile, "utf8");
  } catch {
    throw new Error(`loadgen wrote no request log:\n${out.trim()}`);
  }
  const pass = parseLog(text);
  return probed ? { ...pass, host: hostReport(probed, pass.starts, pass.durations) } : pass;
}

/** The request log (`sent µs \t status \t µs from send \t µs from due`, a line each) as a pass. */
export function parseLog(text: string): FixedRatePass {
  const starts: number[] = [];
  const durations: number[] = [];
  const fromDue: number[] = [];
  let statusErrors = 0;
  let socketErrors = 0;
  let first = Infinity;
  let last = -Infinity;
  for (const line of text.split("\n")) {
    if (!line) continue;
    const [sentUs, status, sentLatency, dueLatency] = line.split("\t").map(Number) as [
      number,
      number,
      number,
      number,
    ];
    if (![sentUs, status, sentLatency, dueLatency].every(Number.isFinite))
      throw new Error(`loadgen log: a malformed line: ${JSON.stringify(line)}`);
    first = Math.min(first, sentUs);
    last = Math.max(last, sentUs);
    starts.push(sentUs);
    durations.push(sentLatency);
    fromDue.push(dueLatency);
    if (status === 0) socketErrors++;
    else if (!(status >= 200 && status < 400)) statusErrors++;
  }
  const pct = (sorted: readonly number[], q: number) =>
    sorted.length ? sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * q))]! / 1e3 : 0;
  const sent = [...durations].sort((a, b) => a - b);
  fromDue.sort((a, b) => a - b);
  const span = starts.length > 1 ? (last - first) / 1e6 : 1;
  return {
    requests: starts.length,
    rps: starts.length / Math.max(span, 1e-3),
    p50: pct(sent, 0.5),
    p90: pct(sent, 0.9),
    p99: pct(sent, 0.99),
    due: { p50: pct(fromDue, 0.5), p90: pct(fromDue, 0.9), p99: pct(fromDue, 0.99) },
    statusErrors,
    socketErrors,
    starts,
    durations,
  };
}
