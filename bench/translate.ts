/**
 * `npm run bench`: how long the spec pipeline takes on large generated specs.
 *
 * For each size the spec is generated and serialized to YAML once (not timed); then each measurement runs
 * once to warm up and several more times, and the median and minimum are reported:
 *   load       loadSpecText(yaml): YAML parse + validation
 *   parseSpec  parseSpec(raw): validation alone
 *   translate  translate(spec) alone
 *   pipeline   text → IR (loadSpecText + translate)
 * `load` is the first lap of each `pipeline` run (one clock read between the two steps), so the slow YAML
 * step is not run twice as often as needed and the whole bench stays within about a minute.
 *
 * Benchmarks are not pass/fail: a missed goal is reported, never turned into a non-zero exit.
 */
import { performance } from "node:perf_hooks";
import { loadSpecText } from "../components/spec/load.ts";
import { parseSpec } from "../components/spec/parse.ts";
import type { MeshSpec } from "../components/spec/schema.ts";
import { translate } from "../components/translate/translate.ts";
import { generateSpec } from "../testing/index.ts";
import { stringify } from "yaml";

interface Size {
  services: number;
  routes: number;
  runs: number;
}

const SIZES: Size[] = [
  { services: 100, routes: 1_000, runs: 7 },
  { services: 1_000, routes: 10_000, runs: 5 },
];
const GOAL_MS = 1_000;

let peakRss = process.memoryUsage().rss;
const sampleRss = () => {
  peakRss = Math.max(peakRss, process.memoryUsage().rss);
};

/**
 * Runs `fn` once to warm up, then `runs` times. `fn` calls `lap()` after each of its steps; the result
 * holds, per lap, the sorted times in ms from the start of the run to that lap.
 */
function measure(runs: number, fn: (lap: () => void) => unknown): number[][] {
  fn(() => {});
  sampleRss();
  const laps: number[][] = [];
  for (let i = 0; i < runs; i++) {
    const start = performance.now();
    let n = 0;
    fn(() => (laps[n++] ??= []).push(performance.now() - start));
    sampleRss();
  }
  return laps.map((times) => times.sort((a, b) => a - b));
}

const median = (sorted: number[]) => {
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
};
const fmt = (ms: number) => ms.toFixed(1);
const num = (n: number) => n.toLocaleString("en-US");

function expectOk<T extends { ok: boolean }>(result: T, what: string): T & { ok: true } {
  if (!result.ok) {
    const errors = (result as { errors?: unknown[] }).errors ?? [];
    throw new Error(`${what}: the generated spec is invalid: ${JSON.stringify(errors.slice(0, 3))}`);
  }
  return result as T & { ok: true };
}

const rows: string[][] = [];
const goals: string[] = [];
const started = performance.now();

for (const size of SIZES) {
  const label = `${num(size.services)} svc / ${num(size.routes)} routes`;
  const input = generateSpec({ services: size.services, routes: size.routes, seed: 1 });
  const text = stringify(input, { lineWidth: 0 });
  const loaded = expectOk(loadSpecText(text), label);
  const raw = loaded.raw;
  const spec: MeshSpec = loaded.spec;
  sampleRss();

  const row = (stage: string, times: number[]) =>
    rows.push([label, stage, fmt(median(times)), fmt(times[0]!), String(times.length)]);
  const [load, pipeline] = measure(size.runs, (lap) => {
    const result = expectOk(loadSpecText(text), label);
    lap();
    translate(result.spec);
    lap();
  });
  const [parse] = measure(size.runs, (lap) => {
    expectOk(parseSpec(raw), label);
    lap();
  });
  const [translated] = measure(size.runs, (lap) => {
    translate(spec);
    lap();
  });
  row("load (yaml + validate)", load!);
  row("parseSpec", parse!);
  row("translate", translated!);
  row("pipeline (text → IR)", pipeline!);
  const pipelineMedian = median(pipeline!);
  rows.push([label, `(yaml text: ${(text.length / 1024 / 1024).toFixed(1)} MiB)`, "", "", ""]);
  if (size.services === 1_000 && size.routes === 10_000) {
    goals.push(
      `goal: translate 1,000 services / 10,000 routes ≤ ${num(GOAL_MS)} ms — median end-to-end ${fmt(pipelineMedian)} ms (${pipelineMedian <= GOAL_MS ? "PASS" : "MISS"})`,
    );
  }
}

const header = ["size", "stage", "median ms", "min ms", "runs"];
const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
const line = (cells: string[]) =>
  cells.map((c, i) => (i >= 2 ? c.padStart(widths[i]!) : c.padEnd(widths[i]!))).join("  ");

console.log(`meshgate bench: spec pipeline (node ${process.version}, ${process.platform}/${process.arch})`);
console.log("");
console.log(line(header));
console.log(line(widths.map((w) => "-".repeat(w))));
for (const row of rows) console.log(line(row));
console.log("");
for (const goal of goals) console.log(goal);
console.log(
  `peak RSS: ${(peakRss / 1024 / 1024).toFixed(0)} MiB sampled (${(process.resourceUsage().maxRSS / 1024).toFixed(0)} MiB max reported by the OS)`,
);
console.log(`total bench time: ${((performance.now() - started) / 1000).toFixed(1)} s`);
