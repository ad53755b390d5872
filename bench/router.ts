/**
 * `node bench/router.ts`: the cost of decide() — canonicalization, host check, route lookup, rewrite — as
 * the number of gateway routes grows (10, 1,000 and 10,000 routes, and 10,000 with "hot" targets).
 *
 * Each config is built from spec routes through parseSpec + translate (as the gateway tests do) with a
 * realistic mix: literal paths, `{param}` and `*` segments, `**` tails, routes split by method, and
 * routes bound to an exact host or a wildcard host. Routes come in groups of ten shapes over one
 * resource (`/api/v1/r<g>/items`, `/api/v1/r<g>/items/{id}`, `/static/r<g>/**`, …).
 *
 * The 10,000 request targets have the same make-up for every size (drawn by a seeded PRNG; the resource
 * group is scaled into the config's range): about 70 % route (some percent-encoded or with dot segments
 * that canonicalize to a route), 405s, 404s (unknown paths and unknown groups), hosts not served, and
 * targets refused by canonicalization. ns per decide() call = one pass over the 10,000 targets, repeated;
 * the runs of the sizes are interleaved (so drift hits them alike), after a warm-up; median and minimum
 * of RUNS runs are reported, with a breakdown into canonicalization alone and Router.match alone. The
 * "hot" row uses the 10,000-route config with targets confined to 10 resource groups: when it costs what
 * 10 routes cost, the growth of the full row comes from cache misses over a large working set, not from
 * the lookup's algorithm.
 *
 * The process pins itself to one CPU when `taskset` is available (CPU 0, or ROUTER_BENCH_CPU). Benchmarks
 * are not pass/fail: a missed goal is reported, never turned into a non-zero exit.
 */
import { mulberry32 } from "../testing/generate.ts";
import { execFileSync } from "node:child_process";
import { performance } from "node:perf_hooks";
import type { GatewayRuntimeConfig } from "../runtime/contract/index.ts";
import { canonicalHost, canonicalizeTarget } from "../runtime/decide/canonical.ts";
import { compileGateway, decide, type CompiledGateway } from "../runtime/decide/decide.ts";
import type { RouteQuery } from "../runtime/decide/router.ts";
import { median, specGatewayConfig, table } from "./support.ts";

/** Route counts; `hot` restricts the targets to the first 10 resource groups (same make-up otherwise). */
const SIZES: { routes: number; hot?: boolean }[] = [
  { routes: 10 },
  { routes: 1_000 },
  { routes: 10_000 },
  { routes: 10_000, hot: true },
];
const HOT_GROUPS = 10;
const TARGETS = 10_000;
const PASSES_PER_RUN = 10; // 100,000 decide() calls per run
const RUNS = 7;
const WARMUP_PASSES = 30;
const GOAL_RATIO = 1.5;
const SERVICES = ["catalog", "orders", "users", "media", "search"];
const HOSTS = ["api.bench.example", "bench.example", "*.tenant.bench.example"];
const PUBLIC = { public: true, rateLimit: { requests: 1000, per: "1s" } };

function pinSelf(): string {
  const cpu = process.env.ROUTER_BENCH_CPU ?? "0";
  try {
    execFileSync("taskset", ["-a", "-cp", cpu, String(process.pid)], { stdio: "ignore" });
    return `pinned to CPU ${cpu}`;
  } catch {
    return "not pinned (taskset unavailable)";
  }
}

/** mulberry32, the same seedable PRNG the spec generator uses (floats in [0, 1)). */
const prng = mulberry32;

const version = (g: number) => `v${1 + (g % 2)}`;

/** Route number n: shape n % 10 of resource group floor(n / 10). */
function specRoute(n: number): Record<string, unknown> {
  const g = Math.floor(n / 10);
  const base = `/api/${version(g)}/r${g}`;
  const to = SERVICES[g % SERVICES.length]!;
  const name = `r${g}-s${n % 10}`;
  switch (n % 10) {
    case 0:
      return { name, match: { path: `${base}/items`, methods: ["GET", "HEAD"] }, to, ...PUBLIC };
    case 1:
      return { name, match: { path: `${base}/items`, methods: ["POST"] }, to, ...PUBLIC };
    case 2:
      return {
        name,
        match: { path: `${base}/items/{id}`, methods: ["GET", "HEAD"] },
        to,
        rewrite: { path: "/items/{id}" },
        ...PUBLIC,
      };
    case 3:
      return { name, match: { path: `${base}/items/{id}`, methods: ["PUT", "DELETE"] }, to, ...PUBLIC };
    case 4:
      return { name, match: { path: `${base}/items/{id}/reviews/{rid}` }, to, ...PUBLIC };
    case 5:
      return { name, match: { path: `${base}/*/status`, methods: ["GET"] }, to, ...PUBLIC };
    case 6:
      return { name, match: { path: `/static/r${g}/**` }, to, ...PUBLIC };
    case 7:
      return {
        name,
        match: { path: `${base}/search`, methods: ["GET"], hosts: ["api.bench.example"] },
        to,
        ...PUBLIC,
      };
    case 8:
      return {
        name,
        match: { path: `/t/r${g}/{tenant}/**`, hosts: ["*.tenant.bench.example"] },
        to,
        ...PUBLIC,
      };
    default:
      return {
        name,
        match: { path: `${base}/items/{id}/files/**`, methods: ["GET"] },
        to,
        rewrite: { path: "/files/{id}" },
        ...PUBLIC,
      };
  }
}

function buildConfig(routes: number): GatewayRuntimeConfig {
  return specGatewayConfig({
    routes: Array.from({ length: routes }, (_, n) => specRoute(n)),
    upstreams: Object.fromEntries(SERVICES.map((s, i) => [s, 9000 + i])),
    hosts: HOSTS,
    observability: { logs: { access: false } },
  });
}

interface Target {
  readonly method: string;
  readonly target: string;
  readonly host: string;
}

/**
 * The 10,000 targets for a config of `routes` routes (same make-up for every size), spread over all its
 * resource groups, or over the first HOT_GROUPS only when `hot`.
 */
function buildTargets(routes: number, hot = false): Target[] {
  const rnd = prng(7);
  const all = Math.max(1, Math.floor(routes / 10));
  const groups = hot ? Math.min(all, HOT_GROUPS) : all;
  const out: Target[] = [];
  for (let i = 0; i < TARGETS; i++) {
    const g = Math.floor(rnd() * groups);
    const base = `/api/${version(g)}/r${g}`;
    const id = 1 + Math.floor(rnd() * 99_999);
    const x = rnd();
    const t = (method: string, target: string, host = "bench.example") => out.push({ method, target, host });
    // ~70 % route
    if (x < 0.1) t("GET", `${base}/items?page=${id % 7}&limit=50`);
    else if (x < 0.15) t("POST", `${base}/items`);
    else if (x < 0.27) t("GET", `${base}/items/${id}`);
    else if (x < 0.32) t("PUT", `${base}/items/${id}`, "api.bench.example");
    else if (x < 0.37) t("GET", `${base}/items/${id}/reviews/${id % 13}`);
    else if (x < 0.41) t("GET", `${base}/jobs/status`);
    else if (x < 0.48) t("GET", `/static/r${g}/css/app.${id}.css`);
    else if (x < 0.52) t("GET", `${base}/search?q=item${id}`, "api.bench.example");
    else if (x < 0.56) t("GET", `/t/r${g}/acme/dash/${id}`, `acme-${id % 5}.tenant.bench.example`);
    else if (x < 0.62) t("GET", `${base}/items/${id}/files/a/b/c.png`);
    else if (x < 0.66)
      t("GET", `${base}/./items/%3${id % 10}${id}`); // decoded + dot segment
    else if (x < 0.7) t("GET", `${base}//items/${id}/reviews/../reviews/1`, "BENCH.example:8080");
    // ~30 % refused
    else if (x < 0.76)
      t("POST", `${base}/items/${id}`); // 405
    else if (x < 0.8)
      t("DELETE", `${base}/jobs/status`); // 405
    else if (x < 0.86)
      t("GET", `${base}/unknown/${id}`); // 404
    else if (x < 0.9)
      t("GET", `/api/v1/r${all + g}/items`); // 404: no such group
    else if (x < 0.93)
      t("GET", `${base}/search`); // 404: host-bound route on another host
    else if (x < 0.96)
      t("GET", `${base}/items`, "evil.example"); // 404 host_not_served
    else t("GET", `${base}/items/%2F..%2Fadmin`); // 400 encoded slash
  }
  return out;
}

const NO_HEADERS = (): string | undefined => undefined;
const NO_HEADER_SOURCE = { header: NO_HEADERS };

/** One pass: decide() for every target; returns a checksum so the work cannot be optimized away. */
function pass(gw: CompiledGateway, targets: readonly Target[]): number {
  let sum = 0;
  for (let i = 0; i < targets.length; i++) {
    const t = targets[i]!;
    const d = decide(gw, { method: t.method, target: t.target, host: t.host, header: NO_HEADERS });
    sum += d.kind === "route" ? d.upstreamPath.length : d.status;
  }
  return sum;
}

/** One pass of canonicalization alone (canonicalizeTarget + canonicalHost), for the breakdown. */
function canonicalPass(targets: readonly Target[]): number {
  let sum = 0;
  for (let i = 0; i < targets.length; i++) {
    const t = targets[i]!;
    const c = canonicalizeTarget(t.target, { mergeSlashes: true });
    sum += c.ok ? c.path.length + (canonicalHost(t.host)?.length ?? 0) : 1;
  }
  return sum;
}

interface Lookup {
  readonly host: string;
  readonly q: RouteQuery;
}

/** One pass of Router.match alone over pre-canonicalized targets, for the breakdown. */
function matchPass(gw: CompiledGateway, lookups: readonly Lookup[]): number {
  let sum = 0;
  for (let i = 0; i < lookups.length; i++) {
    const l = lookups[i]!;
    sum += gw.router.match(l.host, l.q).kind.length;
  }
  return sum;
}

interface Case {
  readonly routes: number;
  readonly label: string;
  readonly compiled: CompiledGateway;
  readonly targets: readonly Target[];
  readonly lookups: readonly Lookup[];
  readonly compileMs: number;
  readonly mix: string;
  readonly times: number[];
  readonly canonicalTimes: number[];
  readonly matchTimes: number[];
}

const num = (n: number) => n.toLocaleString("en-US");
const started = performance.now();
const pinned = pinSelf();
const configs = new Map<number, GatewayRuntimeConfig>();
const cases: Case[] = SIZES.map(({ routes, hot }) => {
  const config = configs.get(routes) ?? buildConfig(routes);
  configs.set(routes, config);
  if (config.routes.length !== routes)
    throw new Error(`expected ${routes} routes, got ${config.routes.length}`);
  const compileTimes: number[] = [];
  let compiled = compileGateway(config);
  for (let i = 0; i < 5; i++) {
    const s = performance.now();
    compiled = compileGateway(config);
    compileTimes.push(performance.now() - s);
  }
  const targets = buildTargets(routes, hot);
  const counts = new Map<string, number>();
  for (const t of targets) {
    const d = decide(compiled, { method: t.method, target: t.target, host: t.host, header: NO_HEADERS });
    const key = d.kind === "route" ? "route" : String(d.status);
    counts.set(key, (counts.get(key) ?? 0) + 1);
  }
  const mix = ["route", "400", "404", "405"]
    .map((k) => `${k} ${(((counts.get(k) ?? 0) / targets.length) * 100).toFixed(0)}%`)
    .join(", ");
  const lookups: Lookup[] = [];
  for (const t of targets) {
    const c = canonicalizeTarget(t.target, { mergeSlashes: true });
    const host = canonicalHost(t.host);
    if (c.ok && host !== null)
      lookups.push({
        host,
        q: { method: t.method, path: c.path, query: c.query, headers: NO_HEADER_SOURCE },
      });
  }
  return {
    routes,
    label: hot ? `${num(routes)} (hot)` : num(routes),
    compiled,
    targets,
    lookups,
    compileMs: median(compileTimes),
    mix,
    times: [],
    canonicalTimes: [],
    matchTimes: [],
  };
});

let checksum = 0;
/** ns per item of PASSES_PER_RUN passes of `body` over `items` items. */
function timed(items: number, body: () => number): number {
  const s = process.hrtime.bigint();
  for (let p = 0; p < PASSES_PER_RUN; p++) checksum += body();
  return Number(process.hrtime.bigint() - s) / (PASSES_PER_RUN * items);
}
for (const c of cases) {
  for (let p = 0; p < WARMUP_PASSES; p++) {
    checksum += pass(c.compiled, c.targets) + canonicalPass(c.targets) + matchPass(c.compiled, c.lookups);
  }
}
for (let r = 0; r < RUNS; r++) {
  for (const c of cases) {
    c.times.push(timed(c.targets.length, () => pass(c.compiled, c.targets)));
    c.canonicalTimes.push(timed(c.targets.length, () => canonicalPass(c.targets)));
    c.matchTimes.push(timed(c.lookups.length, () => matchPass(c.compiled, c.lookups)));
  }
}

const base = cases[0]!;
const baseCost = median(base.times);
const rows = cases.map((c) => [
  c.label,
  median(c.times).toFixed(0),
  Math.min(...c.times).toFixed(0),
  `${(median(c.times) / baseCost).toFixed(2)}×`,
  median(c.canonicalTimes).toFixed(0),
  median(c.matchTimes).toFixed(0),
  c.compileMs.toFixed(1),
  c.mix,
]);

console.log(
  `meshgate bench: decide() cost by route count (node ${process.version}, ${process.platform}/${process.arch}, ${pinned})`,
);
console.log(
  `${num(TARGETS)} request targets per size, ${num(PASSES_PER_RUN * TARGETS)} calls per run, median of ${RUNS} runs after ${WARMUP_PASSES} warm-up passes`,
);
console.log("");
for (const l of table(
  [
    "routes",
    "ns/decide (median)",
    "min",
    "vs 10 routes",
    "of which: canonicalize",
    "router.match",
    "compile ms",
    "decision mix",
  ],
  rows,
  (i) => i >= 1 && i <= 6,
))
  console.log(l);
console.log(
  `(hot: the same targets confined to the first ${HOT_GROUPS} resource groups — the trie walk of a 10,000-route config when the part it touches stays in cache)`,
);
console.log("");
const last = cases.find((c) => c.label === num(10_000))!;
const ratio = median(last.times) / baseCost;
console.log(
  `goal: cost(${num(last.routes)} routes) / cost(${num(base.routes)} routes) ≤ ${GOAL_RATIO}× — ${ratio.toFixed(2)}× (${ratio <= GOAL_RATIO ? "PASS" : "MISS"})`,
);
console.log(
  `(checksum ${checksum % 1_000_000}; total bench time ${((performance.now() - started) / 1000).toFixed(1)} s)`,
);
