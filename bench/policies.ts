/**
 * `npm run bench:policies`: guardrails (`meshgate verify`) and the semantic diff (`meshgate diff`) on a
 * generated spec of 1,000 services and 10,000 routes. The goal: verify + diff ≤ 2 s.
 *
 * The base spec is generateSpec({ services: 1000, routes: 10000 }); the head is the same spec with a change
 * a pull request would make (a service opened to a new caller, a route made public, a timeout raised). Both
 * are parsed and translated once, outside the timing (`npm run bench` measures that pipeline); every run
 * starts from fresh indexes (MeshModel: the compiled gateway, route targets, admissions are rebuilt). After
 * one warm-up run (the first, cold, run — what a one-shot `meshgate verify` process pays — is reported too):
 *   verify        runGuardrails(head): all 13 built-in guardrails
 *   diff          semanticDiff(base, head) reusing verify's head results: the guardrails on the base,
 *                 the reachability relation of both sides, and the comparison
 *   verify + diff the two together (the goal)
 *   diff alone    semanticDiff(base, head) as `meshgate diff` runs it (guardrails on both sides)
 * Each is reported as median, min and max over the runs, with the CPU time of verify + diff (less sensitive
 * than wall time to other processes); the load average before and after says how busy the machine was. Benchmarks are not pass/fail: a missed goal is reported, never a non-zero exit.
 */
import { loadavg } from "node:os";
import { performance } from "node:perf_hooks";
import { parseSpec } from "../components/spec/parse.ts";
import type { MeshSpecInput } from "../components/spec/schema.ts";
import { semanticDiff } from "../policies/diff.ts";
import { MeshModel } from "../policies/model.ts";
import { policyInput, runGuardrails } from "../policies/run.ts";
import { generateSpec } from "../testing/index.ts";

const SERVICES = 1_000;
const ROUTES = 10_000;
const RUNS = 7;
const GOAL_MS = 2_000;

const load = () =>
  loadavg()
    .map((l) => l.toFixed(2))
    .join(" ");
const loadBefore = load();
const started = performance.now();

const baseRaw = generateSpec({ services: SERVICES, routes: ROUTES, seed: 1 });
const headRaw = structuredClone(baseRaw) as MeshSpecInput & { services: Record<string, any> }; // eslint-disable-line @typescript-eslint/no-explicit-any
headRaw.services["svc-0001"]!.allow!.push({
  from: ["svc-0002"],
  methods: ["POST"],
  paths: ["/api/v1/items"],
});
headRaw.services["svc-0002"]!.timeout = "4s";
const route = headRaw.gateway!.routes!.find((r) => r.auth !== undefined && r.match.methods?.includes("GET"))!;
delete route.auth;
route.public = true;
route.rateLimit = { requests: 100, per: "1m", key: "ip" };

const parsed = [parseSpec(baseRaw), parseSpec(headRaw)];
for (const p of parsed)
  if (!p.ok) throw new Error(`the generated spec is invalid: ${JSON.stringify(p.errors.slice(0, 3))}`);
const [baseInput, headInput] = parsed.map((p) =>
  policyInput((p as { ok: true; spec: Parameters<typeof policyInput>[0] }).spec),
) as [ReturnType<typeof policyInput>, ReturnType<typeof policyInput>];

interface Sample {
  verify: number;
  diff: number;
  total: number;
  diffAlone: number;
  /** CPU time of verify + diff (user + system, all threads): less sensitive to other load than wall time. */
  cpu: number;
}
let facts = "";
/** A PolicyInput with a fresh MeshModel: its caches (compiled gateway, route targets, admissions) are rebuilt. */
const fresh = (i: typeof baseInput) => ({ ...i, model: new MeshModel(i.spec, i.infra, i.runtime) });

function once(): Sample {
  const [base, head] = [fresh(baseInput), fresh(headInput)];
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  const checks = runGuardrails(head);
  const t1 = performance.now();
  const d = semanticDiff(base, head, { checks: { head: checks } });
  const t2 = performance.now();
  const c1 = process.cpuUsage(c0);
  const alone = semanticDiff(fresh(baseInput), fresh(headInput));
  const t3 = performance.now();
  const violations = checks.reduce((n, c) => n + c.violations.length, 0);
  facts =
    `verify: ${checks.filter((c) => !c.passed).length} of ${checks.length} guardrails fail, ${violations} violations; ` +
    `diff: ${d.widened.length} widened, ${d.narrowed.length} narrowed, ${d.settings.length} setting changes, ` +
    `${d.violations.added.length} new violations (diff alone agrees: ${JSON.stringify(alone.widened) === JSON.stringify(d.widened)})`;
  return {
    verify: t1 - t0,
    diff: t2 - t1,
    total: t2 - t0,
    diffAlone: t3 - t2,
    cpu: (c1.user + c1.system) / 1000,
  };
}

const cold = once();
const samples: Sample[] = [];
for (let i = 0; i < RUNS; i++) samples.push(once());

const stats = (pick: (s: Sample) => number) => {
  const v = samples.map(pick).sort((a, b) => a - b);
  return { median: v[Math.floor(v.length / 2)]!, min: v[0]!, max: v[v.length - 1]! };
};
const rows: [string, (s: Sample) => number][] = [
  ["verify (13 guardrails, head)", (s) => s.verify],
  ["diff (reusing verify's head results)", (s) => s.diff],
  ["verify + diff", (s) => s.total],
  ["diff alone (as `meshgate diff`)", (s) => s.diffAlone],
  ["verify + diff, CPU time", (s) => s.cpu],
];
const fmt = (ms: number) => ms.toFixed(0).padStart(7);
console.log(
  `meshgate bench: policies on ${SERVICES.toLocaleString("en-US")} services / ${ROUTES.toLocaleString("en-US")} routes (node ${process.version}, ${process.platform}/${process.arch})`,
);
console.log("");
console.log(`${"stage".padEnd(38)}  median ms   min ms   max ms   cold ms`);
for (const [name, pick] of rows) {
  const s = stats(pick);
  console.log(`${name.padEnd(38)}  ${fmt(s.median)}  ${fmt(s.min)}  ${fmt(s.max)}  ${fmt(pick(cold))}`);
}
console.log("");
console.log(facts);
// End to end as the two commands run it in one process (informational; parse and translate dominate):
// both specs parsed from their documents and translated, then verify + diff.
const e0 = performance.now();
const [eb, eh] = [parseSpec(baseRaw), parseSpec(headRaw)].map((p) =>
  policyInput((p as { ok: true; spec: Parameters<typeof policyInput>[0] }).spec),
) as [typeof baseInput, typeof headInput];
const endChecks = runGuardrails(eh);
semanticDiff(eb, eh, { checks: { head: endChecks } });
const endToEnd = performance.now() - e0;
console.log(`end to end (parse + translate both specs, then verify + diff): ${endToEnd.toFixed(0)} ms`);
const total = stats((s) => s.total);
const cpu = stats((s) => s.cpu);
console.log(
  `goal: verify + diff on ${SERVICES.toLocaleString("en-US")} services / ${ROUTES.toLocaleString("en-US")} routes ≤ ${GOAL_MS.toLocaleString("en-US")} ms — median ${total.median.toFixed(0)} ms wall (${cpu.median.toFixed(0)} ms CPU), cold ${cold.total.toFixed(0)} ms (${total.median <= GOAL_MS ? "PASS" : "MISS"})`,
);
console.log(
  `load average before: ${loadBefore}, after: ${load()} (${(await import("node:os")).availableParallelism()} cores)`,
);
console.log(`total bench time: ${((performance.now() - started) / 1000).toFixed(1)} s`);
