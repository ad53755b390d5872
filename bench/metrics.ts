/**
 * `node bench/metrics.ts`: the cost of the metrics hot path, in ns per call over 10M calls each:
 *   counter inc        a cached child's `inc()`
 *   histogram observe  a cached child's `observe(v)` with the default latency buckets, over a spread of
 *                      latencies from 0.1 ms to 20 s (so the linear bucket scan runs to varied depths)
 *   labels() lookup    a cache hit of `labels(route, code_class)`, what a caller that does not cache pays
 * Each measurement runs once to warm up, then 5 times; the median and minimum are reported.
 * Benchmarks are not pass/fail.
 */
import { DEFAULT_LATENCY_BUCKETS, MetricsRegistry } from "../runtime/telemetry/metrics.ts";

const CALLS = 10_000_000;
const RUNS = 5;

const registry = new MetricsRegistry({ prefix: "meshgate_" });
const requests = registry.counter("requests_total", "Requests handled.", ["route", "code_class"]);
const child = requests.labels("list-orders", "2xx");
const duration = registry.histogram(
  "request_duration_seconds",
  "Request duration in seconds.",
  ["route"],
  DEFAULT_LATENCY_BUCKETS,
);
const observer = duration.labels("list-orders");

// Latencies spread log-uniformly over 0.1 ms … 20 s; a power-of-two table so the index is a mask.
const SAMPLES = 1024;
const latencies = new Float64Array(SAMPLES);
for (let i = 0; i < SAMPLES; i++) latencies[i] = 1e-4 * Math.pow(2e5, ((i * 7919) % SAMPLES) / SAMPLES);

const routes = ["list-orders", "get-order", "create-order", "health"];
for (const r of routes) requests.labels(r, "2xx");

/** ns per call of `body(i)` for i in [0, CALLS), median and min over RUNS runs after one warm-up. */
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

const results: [string, { median: number; min: number }][] = [
  [
    "counter inc()",
    measure((n) => {
      for (let i = 0; i < n; i++) child.inc();
    }),
  ],
  [
    "histogram observe()",
    measure((n) => {
      for (let i = 0; i < n; i++) observer.observe(latencies[i & (SAMPLES - 1)]!);
    }),
  ],
  [
    "labels() cache hit",
    measure((n) => {
      for (let i = 0; i < n; i++) requests.labels(routes[i & 3]!, "2xx");
    }),
  ],
];

console.log(
  `meshgate bench: metrics hot path (node ${process.version}, ${process.platform}/${process.arch})`,
);
console.log(`${CALLS.toLocaleString("en-US")} calls per run, ${RUNS} runs after a warm-up`);
console.log("");
for (const [name, { median, min }] of results) {
  console.log(
    `${name.padEnd(22)} ${median.toFixed(2).padStart(7)} ns/call median  ${min.toFixed(2).padStart(7)} min`,
  );
}
// Reading the results keeps the loops' side effects observable.
const snap = observer.snapshot();
console.log("");
console.log(
  `(counter total ${child.get().toLocaleString("en-US")}, observations ${snap.count.toLocaleString("en-US")})`,
);
