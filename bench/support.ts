/**
 * Helpers shared by the benchmarks: gateway RuntimeConfigs built from spec routes (parseSpec → translate →
 * testing/static.ts, as the tests do), and plain-text tables.
 */
import type { GatewayRuntimeConfig } from "../runtime/contract/index.ts";
import { plaintextStatic } from "../testing/static.ts";
import { parseSpec } from "../components/spec/parse.ts";
import { translate } from "../components/translate/translate.ts";

type Loose = Record<string, unknown>;

export interface SpecGatewayOptions {
  /** Spec `gateway.routes`. */
  routes: Loose[];
  /** Upstream port per service name; every service's endpoints become 127.0.0.1:<port>. */
  upstreams: Record<string, number>;
  /** Host names the gateway serves; default 127.0.0.1 and localhost. */
  hosts?: string[];
  /** Extra gateway-level spec fields (listeners, limits, …). */
  gateway?: Loose;
  /** Spec `observability`. */
  observability?: Loose;
  /** Extra spec fields for every service (circuitBreaker, …). */
  service?: Loose;
}

/**
 * A gateway RuntimeConfig from spec routes: parseSpec + translate, then every cluster switched to static
 * endpoints on 127.0.0.1 and plaintext (testing/static.ts, which the tests use too).
 */
export function specGatewayConfig(o: SpecGatewayOptions): GatewayRuntimeConfig {
  const services = Object.fromEntries(
    Object.keys(o.upstreams).map((name) => [
      name,
      { image: `r/${name}:1`, port: 8080, allow: [{ from: ["gateway"] }], ...o.service },
    ]),
  );
  const r = parseSpec({
    name: "bench",
    trustDomain: "bench.example",
    services,
    gateway: { hosts: o.hosts ?? ["127.0.0.1", "localhost"], ...o.gateway, routes: o.routes },
    ...(o.observability ? { observability: o.observability } : {}),
  });
  if (!r.ok) {
    const shown = r.errors.slice(0, 5).map((e) => `${e.path}: ${e.message}`);
    throw new Error(`the generated spec is invalid:\n${shown.join("\n")}`);
  }
  const config = translate(r.spec).runtime.gateway;
  if (!config) throw new Error("translate produced no gateway config");
  return plaintextStatic(
    config,
    Object.fromEntries(Object.entries(o.upstreams).map(([n, port]) => [n, { port }])),
  );
}

export const median = (values: readonly number[]): number => {
  const s = [...values].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
};

/** Where one worker-scaling run's CPU went, per request (µs of CPU time) and in all (cores busy). */
export interface ScalingCost {
  /** The proxy's process tree (primary and workers). */
  readonly proxyUs: number;
  /** Everything else the machine ran: wrk, the upstream, kernel work not charged to a process. */
  readonly restUs: number;
  /** Cores busy on the whole machine. */
  readonly busyCores: number;
}

/** CPU counters at one instant: the time (ms), the machine's busy ticks and the proxy tree's ticks. */
export interface CpuSample {
  readonly t: number;
  readonly busy: number;
  readonly proxy: number;
}

/** Per-request costs of one run of `requests` requests from the samples around it (see ScalingCost). */
export function scalingCost(
  a: CpuSample,
  b: CpuSample,
  requests: number,
  ticksPerSecond: number,
): ScalingCost {
  if (!(requests > 0) || !(b.t > a.t)) throw new RangeError("a run needs requests and a duration");
  const us = (ticks: number) => (ticks / ticksPerSecond) * 1e6;
  const proxy = b.proxy - a.proxy;
  return {
    proxyUs: us(proxy) / requests,
    restUs: us(Math.max(0, b.busy - a.busy - proxy)) / requests,
    busyCores: (b.busy - a.busy) / ticksPerSecond / ((b.t - a.t) / 1000),
  };
}

/** The field-wise median of several runs' costs. */
export function medianCost(costs: readonly ScalingCost[]): ScalingCost {
  return {
    proxyUs: median(costs.map((c) => c.proxyUs)),
    restUs: median(costs.map((c) => c.restUs)),
    busyCores: median(costs.map((c) => c.busyCores)),
  };
}

/**
 * The most 2 workers can gain over 1 on `cores` cores shared with the load generator, when the proxy's
 * cost per request stays what it is with 1 worker (P1): 1 worker serves at most 1 / P1 requests a
 * second (its one core saturated), 2 workers at most cores / (P1 + R2) — every core busy with the proxy
 * or the rest (R2: wrk, the upstream and the kernel per request, measured at 2 workers) — and never
 * more than `cores`×.
 */
export function scalingBound(one: ScalingCost, two: ScalingCost, cores: number): number {
  return Math.min(cores, (cores * one.proxyUs) / (one.proxyUs + two.restUs));
}

/** Renders rows as an aligned table; columns listed in `right` are right-aligned. */
export function table(header: string[], rows: string[][], right: (i: number) => boolean): string[] {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)));
  const line = (cells: string[]) =>
    cells
      .map((c, i) => (right(i) ? c.padStart(widths[i]!) : c.padEnd(widths[i]!)))
      .join("  ")
      .trimEnd();
  return [line(header), line(widths.map((w) => "-".repeat(w))), ...rows.map(line)];
}

/**
 * The meshgate entry the benchmarks run: the runtime bundle (dist/meshgate.js, built here with the options
 * of `npm run build`) — what the runtime image runs — or, with `--source`, bin/meshgate.js (TypeScript
 * sources through Node's type stripping, as `npm start` runs them). Returns the path and a label.
 */
export async function meshgateEntry(root: string): Promise<{ path: string; label: string }> {
  if (process.argv.includes("--source"))
    return { path: `${root}bin/meshgate.js`, label: "sources (bin/meshgate.js, type stripping)" };
  const { build } = await import("esbuild");
  const { runtimeBundleOptions } = await import("../scripts/build.ts");
  const outfile = `${root}dist/meshgate.js`;
  await build(runtimeBundleOptions(outfile));
  return { path: outfile, label: "the runtime bundle (dist/meshgate.js, as in the runtime image)" };
}

/**
 * What stalled a meshgate proxy between two scrapes of its /metrics (the process metrics of
 * runtime/telemetry/metrics.ts; `before` "" for everything since it started): GC pauses (count, total,
 * and their share of `seconds` when given) and the event-loop delay's p99 and maximum as the bucket
 * bounds that hold them.
 */
export function stallsBetween(before: string, after: string, seconds: number | null): string {
  const read = (text: string) => {
    const gc = { count: 0, sum: 0 };
    const loop = new Map<number, number>();
    for (const line of text.split("\n")) {
      const g = /^meshgate_gc_duration_seconds_(sum|count)\{[^}]*\} (\S+)$/.exec(line);
      if (g) gc[g[1] as "sum" | "count"] += Number(g[2]);
      const l = /^meshgate_event_loop_delay_seconds_bucket\{(?:[^}]*,)?le="([^"]+)"[^}]*\} (\S+)$/.exec(line);
      if (l) {
        const le = l[1] === "+Inf" ? Infinity : Number(l[1]);
        loop.set(le, (loop.get(le) ?? 0) + Number(l[2]));
      }
    }
    return { gc, loop };
  };
  const a = read(before);
  const b = read(after);
  const gcMs = (b.gc.sum - a.gc.sum) * 1000;
  const deltas = [...b.loop]
    .map(([le, n]) => [le, n - (a.loop.get(le) ?? 0)] as const)
    .sort((x, y) => x[0] - y[0]);
  const total = deltas.at(-1)?.[1] ?? 0;
  const bound = (q: number) => {
    const le = deltas.find(([, n]) => n >= q * total)?.[0];
    return le === undefined ? "?" : le === Infinity ? "> 10 s" : `≤ ${le * 1000} ms`;
  };
  return (
    `meshgate GC ${b.gc.count - a.gc.count} pauses, ${gcMs.toFixed(1)} ms${seconds === null ? "" : ` (${(gcMs / (seconds * 10)).toFixed(2)} % of the pass)`}, ` +
    `event-loop delay p99 ${bound(0.99)}, max ${bound(1)} (${total} samples)`
  );
}
