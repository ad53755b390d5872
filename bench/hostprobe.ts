/**
 * Host-speed probe for the fixed-rate passes. On this kind of VM the whole guest is periodically slowed
 * by its host (measured: every ~1.5–2 s, 100–200 ms in which a compute loop runs at 7–60 % of its speed,
 * on both vCPUs at once, with nothing else running). A proxy falls behind during such an episode in
 * proportion to its CPU cost per request, so the episodes, not the proxy's own behaviour, set much of a
 * p99. The probe tells them apart: a small process (bench/hostprobe-worker.mjs, `node --jitless`, on the
 * load CPU, at a higher priority than the load generator) times a fixed ~50 µs unit every 2 ms; a unit
 * taking more than `factor` × its usual time marks a slow interval. A pass then reports how much of it
 * was slow, and its latency percentiles also over the requests that did not overlap a slow interval
 * ("steady host"). That second figure is a diagnosis, printed next to the measured one, never instead.
 *
 * Limits: on the load CPU, the probe sees episodes of the whole VM, not those of the proxy's CPU alone
 * (observed once: both sidecars on CPU 0 stalled for 280 ms while the probe on CPU 1 ran at full speed);
 * a second probe on the proxy's CPU was tried and is too noisy there (the proxies' network softirqs
 * interrupt its units). A slowdown under 3× is not counted either. So a "steady-host" p99 still holds
 * some host effects — it is an upper bound of what the proxy itself adds.
 */
import { spawn } from "node:child_process";
import { readFileSync, rmSync } from "node:fs";
import { median } from "./support.ts";

export interface ProbeResult {
  /** The probe's usual unit time (10th percentile), µs. */
  readonly baseUs: number;
  /** [start ms since the epoch, duration µs] per unit. */
  readonly samples: readonly number[];
}

/** Slow intervals [start, end] in ms since the epoch, merged when they are less than `mergeMs` apart. */
export function slowIntervals(probe: ProbeResult, factor = 3, mergeMs = 10): [number, number][] {
  const out: [number, number][] = [];
  const s = probe.samples;
  for (let i = 0; i + 1 < s.length; i += 2) {
    const start = s[i]!;
    const us = s[i + 1]!;
    if (us <= factor * probe.baseUs) continue;
    const end = start + us / 1000;
    const last = out[out.length - 1];
    if (last !== undefined && start - last[1] < mergeMs) last[1] = Math.max(last[1], end);
    else out.push([start, end]);
  }
  return out;
}

/** Total ms covered by intervals. */
export const coveredMs = (intervals: readonly (readonly [number, number])[]): number =>
  intervals.reduce((n, [a, b]) => n + (b - a), 0);

/**
 * The requests (start ms since the epoch, duration ms) that did not overlap a slow interval — widened by
 * `marginMs` on each side, since the probe samples every few ms.
 */
export function steadyRequests(
  starts: readonly number[],
  durations: readonly number[],
  intervals: readonly (readonly [number, number])[],
  marginMs = 2,
): number[] {
  const kept: number[] = [];
  // Requests and intervals are both walked in start order.
  const order = starts.map((_, i) => i).sort((a, b) => starts[a]! - starts[b]!);
  let k = 0;
  for (const i of order) {
    const a = starts[i]!;
    const b = a + durations[i]!;
    while (k < intervals.length && intervals[k]![1] + marginMs < a) k++;
    let overlaps = false;
    for (let j = k; j < intervals.length && intervals[j]![0] - marginMs <= b; j++) {
      if (intervals[j]![1] + marginMs >= a) {
        overlaps = true;
        break;
      }
    }
    if (!overlaps) kept.push(durations[i]!);
  }
  return kept;
}

export interface HostProbe {
  /** Waits for the probe to finish (it runs for the seconds it was given) and reads its samples. */
  result(): Promise<ProbeResult | null>;
  kill(): void;
}

/**
 * Starts the probe for `seconds` on `cpu` (taskset), niced to -20 when permitted (above the load
 * generator's -15: it must not wait behind it, or it would measure the load, not the host).
 */
export function startHostProbe(seconds: number, file: string, cpu: string | null, nice: boolean): HostProbe {
  rmSync(file, { force: true });
  const worker = new URL("./hostprobe-worker.mjs", import.meta.url).pathname;
  const argv = [
    ...(cpu !== null ? ["taskset", "-c", cpu] : []),
    ...(nice ? ["nice", "-n", "-20"] : []),
    process.execPath,
    "--jitless",
    worker,
    String(seconds),
    file,
  ];
  const child = spawn(argv[0]!, argv.slice(1), { stdio: "ignore" });
  const done = new Promise<void>((resolve) => child.on("close", () => resolve()));
  return {
    async result() {
      await done;
      try {
        return JSON.parse(readFileSync(file, "utf8")) as ProbeResult;
      } catch {
        return null;
      }
    },
    kill: () => child.kill("SIGKILL"),
  };
}

/** What the probe saw during one fixed-rate pass. */
export interface HostReport {
  /** Time of the pass (first request start to last request end) in slow intervals, ms. */
  readonly slowMs: number;
  /** Length of the pass, ms. */
  readonly passMs: number;
  /** Share of the requests that did not overlap a slow interval. */
  readonly steadyShare: number;
  /** Latency percentiles (ms) of those requests. */
  readonly steadyP50: number;
  readonly steadyP99: number;
}

/** A pass's host report from the probe and the load generator's per-request log (µs since the epoch, µs). */
export function hostReport(
  probe: ProbeResult,
  startsUs: readonly number[],
  durationsUs: readonly number[],
): HostReport {
  const starts = startsUs.map((us) => us / 1000);
  const durations = durationsUs.map((us) => us / 1000);
  let first = Infinity;
  let last = -Infinity;
  for (let i = 0; i < starts.length; i++) {
    first = Math.min(first, starts[i]!);
    last = Math.max(last, starts[i]! + durations[i]!);
  }
  const intervals = slowIntervals(probe);
  const within = intervals
    .map(([a, b]): [number, number] => [Math.max(a, first), Math.min(b, last)])
    .filter(([a, b]) => b > a);
  const kept = steadyRequests(starts, durations, intervals).sort((a, b) => a - b);
  const pct = (q: number) =>
    kept.length ? kept[Math.min(kept.length - 1, Math.floor(kept.length * q))]! : 0;
  return {
    slowMs: coveredMs(within),
    passMs: Number.isFinite(first) ? last - first : 0,
    steadyShare: starts.length ? kept.length / starts.length : 0,
    steadyP50: pct(0.5),
    steadyP99: pct(0.99),
  };
}

/** One pass's report for the bench log: `; host slow … ms, steady-host p50/p99 … ms (… % of requests)`. */
export function describeHostReport(h: HostReport, digits: number): string {
  return `; host slow ${Math.round(h.slowMs)} of ${Math.round(h.passMs)} ms, steady-host p50/p99 ${h.steadyP50.toFixed(digits)}/${h.steadyP99.toFixed(digits)} ms (${(h.steadyShare * 100).toFixed(1)} % of requests)`;
}

/** A subject's passes summarized (medians): how much of them the host was slow, and the steady requests. */
export interface HostSummary {
  /** Share of the pass in slow intervals, as "x.y %". */
  readonly slow: string;
  /** Share of the requests that overlapped no slow interval, as "x.y %". */
  readonly steady: string;
  /** p99 (ms) of those requests. */
  readonly steadyP99: number;
}

/** The medians over the passes that carry a host report; null when none does. */
export function summarizeHost(reports: readonly (HostReport | undefined)[]): HostSummary | null {
  const h = reports.filter((r): r is HostReport => r !== undefined);
  if (h.length === 0) return null;
  const percent = (x: number) => `${(x * 100).toFixed(1)} %`;
  return {
    slow: percent(median(h.map((x) => x.slowMs / Math.max(1, x.passMs)))),
    steady: percent(median(h.map((x) => x.steadyShare))),
    steadyP99: median(h.map((x) => x.steadyP99)),
  };
}
