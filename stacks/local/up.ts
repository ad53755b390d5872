/**
 * `meshgate up SPEC`: the whole mesh on this machine. Loads and translates the spec, plans every process
 * (./plan.ts), checks that every port is free, writes the configs, opens the dev CA and issues every
 * SVID (./ca.ts; renewed at half-life while running), opens the dev token issuer (./issuer.ts), starts
 * the local admin server (./admin.ts), then the supervised processes (./supervisor.ts), writes
 * `<stateDir>/state.json` and prints a summary with ready-to-paste curl lines. `stop()` (SIGINT/SIGTERM
 * in the CLI) drains and stops everything; `stop(true)` kills at once.
 */
import { createHash, randomBytes } from "node:crypto";
import { existsSync, watch } from "node:fs";
import { mkdir, readFile, writeFile } from "node:fs/promises";
import net from "node:net";
import { basename, delimiter, dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { loadSpecFile } from "../../components/spec/load.ts";
import { formatSpecError } from "../../components/spec/errors.ts";
import type { MeshSpec } from "../../components/spec/schema.ts";
import type { TranslateResult } from "../../components/translate/ir.ts";
import { translate } from "../../components/translate/translate.ts";
import { writeFileAtomic } from "../../runtime/pki/index.ts";
import { createLocalAdmin, type LocalAdmin } from "./admin.ts";
import { IdentityKeeper, openDevCa } from "./ca.ts";
import { openDevIssuer, writeIssuerInfo } from "./issuer.ts";
import { fillPattern, planLocal, type DemoConfig, type LocalPlan } from "./plan.ts";
import { Supervisor } from "./supervisor.ts";
import { createTopology, scrapeTargetsOf } from "./topology/index.ts";
import { isEmpty, newPorts, planChanges, prometheusReload } from "./watch.ts";

/** The repository (package) root: bin/meshgate.js and stacks/local/demo live below it. */
export const PACKAGE_ROOT = fileURLToPath(new URL("../../", import.meta.url));

export interface UpOptions {
  readonly specPath: string;
  readonly cwd?: string;
  readonly gatewayPort?: number;
  readonly adminPort?: number;
  readonly stateDir?: string;
  readonly portBase?: number;
  readonly svidTtlMs?: number;
  /** false: never start Prometheus; true: start it when installed (else print how to get it). */
  readonly prometheus?: boolean;
  /** The Prometheus binary to look for. @default the first `prometheus` on PATH, else /usr/bin/prometheus */
  readonly prometheusBin?: string;
  readonly out: (line: string) => void;
  readonly err: (line: string) => void;
  /** Supervisor timing (tests shorten it). */
  readonly stopTimeoutMs?: number;
  /**
   * Watch the spec file and apply each change to the running mesh (`apply()`; see ./watch.ts). @default false
   */
  readonly watch?: boolean;
  /**
   * Aborted (the first Ctrl-C while starting): stops every process started so far and rejects with
   * E_LOCAL_INTERRUPTED. The children lead their own process groups, so a terminal's SIGINT never reaches
   * them: a launcher that died of that signal here would leave them running, holding their ports.
   */
  readonly signal?: AbortSignal;
}

/** The outcome of applying a changed spec to the running mesh. */
export type ApplyReport =
  | {
      readonly ok: true;
      /** Nothing differed from the running plan. */
      readonly unchanged: boolean;
      readonly reloaded: readonly string[];
      readonly restarted: readonly string[];
      readonly added: readonly string[];
      readonly removed: readonly string[];
    }
  | { readonly ok: false; readonly code: string; readonly message: string };

export interface UpHandle {
  /** The running plan (a changed spec applied by `apply()` replaces it). */
  readonly plan: LocalPlan;
  readonly supervisor: Supervisor;
  readonly admin: LocalAdmin;
  readonly keeper: IdentityKeeper;
  /**
   * Reads the spec file again and applies what changed to the running mesh: proxies reload their new
   * configs in place, processes whose definition changed restart, new ones start, removed ones stop. An
   * invalid spec, or a change `meshgate up` cannot apply while running, changes nothing. Applies run one
   * after another (the watcher calls it on every change of the file).
   */
  apply(): Promise<ApplyReport>;
  /** Drains and stops everything (force: SIGKILL at once). Safe to call twice. */
  stop(force?: boolean): Promise<void>;
}

/** An error `meshgate up` reports as one clear line (and exit 1). */
export class UpError extends Error {
  override name = "UpError";
  readonly code: string;
  constructor(code: string, message: string) {
    super(message);
    this.code = code;
  }
}

function findPrometheus(explicit: string | undefined): string | null {
  if (explicit) return existsSync(explicit) ? explicit : null;
  for (const dir of (process.env.PATH ?? "").split(delimiter)) {
    const p = join(dir, "prometheus");
    if (dir && existsSync(p)) return p;
  }
  return existsSync("/usr/bin/prometheus") ? "/usr/bin/prometheus" : null;
}

/** Tries to bind `port` on 127.0.0.1; resolves the error code when it cannot. */
export function portFree(port: number): Promise<string | null> {
  return new Promise((resolve) => {
    const s = net.createServer();
    s.once("error", (e: NodeJS.ErrnoException) => resolve(e.code ?? "error"));
    s.listen({ port, host: "127.0.0.1", exclusive: true }, () => s.close(() => resolve(null)));
  });
}

/** One dev API key per consumer, made once (0600) and reused: the key's sha256 joins the consumer's hashes. */
async function devApiKeys(dir: string, consumers: readonly string[]): Promise<Record<string, string>> {
  const hashes: Record<string, string> = {};
  if (consumers.length === 0) return hashes;
  await mkdir(dir, { recursive: true, mode: 0o700 });
  for (const c of consumers) {
    const path = join(dir, c);
    let key = (await readFile(path, "utf8").catch(() => "")).trim();
    if (!key) {
      key = `mgdev_${randomBytes(24).toString("base64url")}`;
      await writeFileAtomic(path, `${key}\n`, 0o600);
    }
    hashes[c] = `sha256:${createHash("sha256").update(key).digest("hex")}`;
  }
  return hashes;
}

const time = (ms: number) => new Date(ms).toISOString().replace(/\.\d+Z$/, "Z");

/** Starts the local mesh; resolves once everything is ready (see the module comment). */
export async function up(o: UpOptions): Promise<UpHandle> {
  const cwd = o.cwd ?? process.cwd();
  const loaded = await loadSpecFile(resolve(cwd, o.specPath));
  if (!loaded.ok)
    throw new UpError(
      "E_SPEC_INVALID",
      `${loaded.errors.map((e) => formatSpecError(e, o.specPath)).join("\n")}\n✗ ${o.specPath}: ${loaded.errors.length} errors`,
    );
  const spec = loaded.spec;
  const translated = translate(spec);
  const stateDir = resolve(cwd, o.stateDir ?? spec.targets.local?.stateDir ?? ".meshgate");

  let prometheus: string | null = null;
  if (o.prometheus !== false) {
    prometheus = findPrometheus(o.prometheusBin);
    if (!prometheus)
      o.out(
        "[up] Prometheus is not installed: `apt-get install prometheus` (Debian/Ubuntu) or put a `prometheus` binary on PATH, and rerun (--no-prometheus silences this)",
      );
  }

  await mkdir(stateDir, { recursive: true, mode: 0o755 });
  /** The plan of a spec, with this run's options (the same for every change `apply()` makes). */
  const planFor = async (s: MeshSpec, t: TranslateResult, running?: LocalPlan) => {
    const names = Object.keys(s.gateway?.apiKeys?.consumers ?? {}).sort();
    return planLocal(s, t, {
      cwd,
      specDir: dirname(resolve(cwd, o.specPath)),
      node: process.execPath,
      packageRoot: PACKAGE_ROOT,
      stateDir: o.stateDir ?? s.targets.local?.stateDir ?? ".meshgate",
      prometheus,
      devApiKeyHashes: await devApiKeys(join(stateDir, "api-keys"), names),
      ...(o.gatewayPort !== undefined ? { gatewayPort: o.gatewayPort } : {}),
      ...(o.adminPort !== undefined ? { adminPort: o.adminPort } : {}),
      ...(o.portBase !== undefined ? { portBase: o.portBase } : {}),
      ...(o.svidTtlMs !== undefined ? { svidTtlMs: o.svidTtlMs } : {}),
      ...(running ? { running } : {}),
    });
  };
  const planned = await planFor(spec, translated);
  if (!planned.ok) throw new UpError(planned.error.code, planned.error.message);
  let plan = planned.plan;

  // Every port must be free before anything starts: name the port, its owner and the field to change.
  const wanted: [number, string, string][] = [
    [plan.ports.admin, "the local admin server", "targets.local.adminPort (or --admin-port N)"],
  ];
  for (const p of plan.processes)
    for (const [what, port] of Object.entries(p.ports))
      wanted.push([port, `${p.name} ${what}`, p.portFields[port] ?? "--port-base"]);
  const taken = await firstTaken(wanted);
  if (taken)
    throw new UpError(
      "E_LOCAL_PORT_TAKEN",
      `port ${taken.port} (${taken.what}) is ${taken.why}: change ${taken.field}${taken.field === "--port-base" ? " N to move the local port range" : ""}`,
    );
  await writeFiles(plan.files);
  for (const note of plan.notes) o.out(`[up] note: ${note}`);

  // The dev CA and every identity, before any proxy starts.
  const { ca, created, renewedIntermediate } = await openDevCa(plan.caDir, plan.trustDomain, {
    rootValidityMs: translated.infra.ca.rootValidityMs,
    intermediateValidityMs: translated.infra.ca.intermediateValidityMs,
    clockSkewMs: plan.clockSkewMs,
  });
  o.out(
    `[ca] ${created ? "created" : "reusing"} the dev CA in ${plan.caDir}${renewedIntermediate ? " (new intermediate)" : ""}; SVIDs live ${Math.round(plan.svidTtlMs / 1000)} s and renew at half-life`,
  );
  const keeper = new IdentityKeeper(ca, {
    ttlMs: plan.svidTtlMs,
    clockSkewMs: plan.clockSkewMs,
    sink: {
      issued: (e) => {
        if (e.renewal)
          o.out(`[ca] renewed ${e.workload}'s SVID (serial ${e.serial}, expires ${time(e.notAfter)})`);
      },
      failed: (e) =>
        o.err(`[ca] ✗ renewing ${e.workload}'s SVID failed: ${e.error.message}; retrying in 5 s`),
    },
  });
  await keeper.start(plan.identities);

  const { issuer } = await openDevIssuer(join(stateDir, "issuer"));
  await writeIssuerInfo(join(stateDir, "issuer"), {
    issuer: plan.issuer.url,
    jwksUri: plan.issuer.jwksUri,
    providers: plan.issuer.providers,
  });

  const supervisor = new Supervisor(plan.processes, {
    out: o.out,
    ...(o.stopTimeoutMs !== undefined ? { stopTimeoutMs: o.stopTimeoutMs } : {}),
  });
  const admin = createLocalAdmin({ plan: () => plan, jwks: issuer.jwks, status: () => supervisor.status() });
  // The live topology page at / (and /topology), scraping every proxy's admin listener.
  const topologyOf = (s: MeshSpec, t: TranslateResult, p: LocalPlan) =>
    createTopology({
      spec: s,
      infra: t.infra,
      runtime: t.runtime,
      targets: scrapeTargetsOf(p.processes),
      links: [
        { label: "processes", href: "/api/status" },
        { label: "plan", href: "/api/plan" },
        { label: "JWKS", href: "/.well-known/jwks.json" },
        ...(p.urls.prometheus ? [{ label: "Prometheus", href: p.urls.prometheus }] : []),
      ],
    });
  let topology = topologyOf(spec, translated, plan);
  admin.handlers.push(topology);
  try {
    await admin.listen(plan.ports.admin);
  } catch (err) {
    keeper.stop();
    topology.close();
    throw new UpError(
      "E_LOCAL_PORT_TAKEN",
      `port ${plan.ports.admin} (the local admin server) is not available (${(err as NodeJS.ErrnoException).code}): change targets.local.adminPort (or --admin-port N)`,
    );
  }

  let stopping: Promise<void> | null = null;
  let stopWatching = () => {};
  const stop = (force = false): Promise<void> => {
    stopWatching();
    if (force) return supervisor.stop(true).then(() => finish());
    stopping ??= supervisor.stop(false).then(() => finish());
    return stopping;
  };
  let finished = false;
  const finish = async () => {
    if (finished) return;
    finished = true;
    keeper.stop();
    topology.close();
    await admin.close();
    await writeState(plan, supervisor, keeper, false).catch(() => {});
  };

  const interrupted = async () => {
    await stop();
    return new UpError(
      "E_LOCAL_INTERRUPTED",
      "interrupted while starting: every started process was stopped",
    );
  };
  const onAbort = () => void stop();
  o.signal?.addEventListener("abort", onAbort, { once: true });
  try {
    if (!o.signal?.aborted) await supervisor.start();
  } catch (err) {
    if (o.signal?.aborted) throw await interrupted();
    await stop();
    throw new UpError((err as { code?: string }).code ?? "E_LOCAL_NOT_READY", (err as Error).message);
  }
  if (o.signal?.aborted) throw await interrupted();
  await warmUp(plan);
  o.signal?.removeEventListener("abort", onAbort);
  if (o.signal?.aborted) throw await interrupted();
  await writeState(plan, supervisor, keeper, true);

  /** One apply (see UpHandle.apply): validate, plan, compare, then change only what differs. */
  const applyOnce = async (): Promise<ApplyReport> => {
    const refuse = (code: string, message: string): ApplyReport => {
      o.err(`[watch] ✗ ${message} [${code}] — the running mesh keeps the previous spec`);
      return { ok: false, code, message };
    };
    const next = await loadSpecFile(resolve(cwd, o.specPath), { fresh: true });
    if (!next.ok)
      return refuse(
        "E_SPEC_INVALID",
        `${next.errors.map((e) => formatSpecError(e, o.specPath)).join("\n")}\n${o.specPath}: ${next.errors.length} errors`,
      );
    const nextTranslated = translate(next.spec);
    const nextPlanned = await planFor(next.spec, nextTranslated, plan);
    if (!nextPlanned.ok) return refuse(nextPlanned.error.code, nextPlanned.error.message);
    const nextPlan = nextPlanned.plan;
    const change = planChanges(plan, nextPlan);
    if (change.restartUp.length > 0)
      return refuse(
        "E_LOCAL_RESTART_REQUIRED",
        `the change moves what meshgate up holds while it runs (${change.restartUp.join(", ")}): stop it and run it again`,
      );
    if (isEmpty(change)) {
      o.out("[watch] the spec changed nothing the mesh runs");
      return { ok: true, unchanged: true, reloaded: [], restarted: [], added: [], removed: [] };
    }
    const taken = await firstTaken(newPorts(plan, nextPlan));
    if (taken)
      return refuse(
        "E_LOCAL_PORT_TAKEN",
        `port ${taken.port} (${taken.what}) is ${taken.why}: free it and save the spec again${taken.field === "--port-base" ? "" : `, or change ${taken.field}`}`,
      );

    await keeper.add(change.identities, change.retiredIdentities);
    await writeFiles(change.files);
    // Proxies reload their new config in place and Prometheus its config and rules; one that needs a
    // restart for it (a proxy's admin port) or fails to reload gets one.
    const restart = new Map(change.restart.map((r) => [r.name, r.why]));
    const reloaded: string[] = [];
    await Promise.all(
      change.reload.map(async (r) => {
        const result =
          r.kind === "admin"
            ? await reloadProxy(r.url)
            : await reloadBySighup(r.metricsUrl, () => supervisor.signal(r.name, "SIGHUP"));
        if (result.ok) reloaded.push(r.name);
        else if (result.code === "E_RT_RELOAD_RESTART_REQUIRED")
          restart.set(r.name, `its new config changes what it binds at start (${result.error})`);
        else {
          restart.set(r.name, `it refused its new config in place (${result.error})`);
          o.err(
            `[watch] ${r.name} refused its new config: ${result.error} [${result.code ?? "?"}]; restarting it`,
          );
        }
      }),
    );
    for (const [name, why] of restart) o.out(`[watch] restarting ${name}: ${why}`);
    for (const name of change.removed) o.out(`[watch] stopping ${name}: no longer in the spec`);
    for (const name of change.added) o.out(`[watch] starting ${name}: new in the spec`);
    plan = nextPlan;
    topology.close();
    const replaced = admin.handlers.indexOf(topology);
    topology = topologyOf(next.spec, nextTranslated, nextPlan);
    admin.handlers.splice(replaced, 1, topology);
    try {
      await supervisor.reconcile(nextPlan.processes, new Set(restart.keys()));
    } catch (err) {
      await writeState(plan, supervisor, keeper, true).catch(() => {});
      return refuse((err as { code?: string }).code ?? "E_LOCAL_NOT_READY", (err as Error).message);
    }
    await writeState(plan, supervisor, keeper, true);
    const report = {
      ok: true as const,
      unchanged: false,
      reloaded: reloaded.sort(),
      restarted: [...restart.keys()].sort(),
      added: [...change.added],
      removed: [...change.removed],
    };
    const parts = [
      report.reloaded.length ? `reloaded ${report.reloaded.join(", ")}` : "",
      report.restarted.length ? `restarted ${report.restarted.join(", ")}` : "",
      report.added.length ? `started ${report.added.join(", ")}` : "",
      report.removed.length ? `stopped ${report.removed.join(", ")}` : "",
    ].filter(Boolean);
    o.out(`[watch] ✓ applied: ${parts.length ? parts.join("; ") : `${change.files.length} files rewritten`}`);
    return report;
  };
  let applying: Promise<unknown> = Promise.resolve();
  const apply = (): Promise<ApplyReport> => {
    const run = applying.then(applyOnce, applyOnce).catch((err: Error) => {
      o.err(`[watch] ✗ applying the change failed: ${err.message}`);
      return { ok: false as const, code: "E_LOCAL_APPLY", message: err.message };
    });
    applying = run;
    return run;
  };
  if (o.watch) {
    const specFile = resolve(cwd, o.specPath);
    let timer: NodeJS.Timeout | null = null;
    // Editors replace files (rename): watch the directory, and match the file's name.
    const watcher = watch(dirname(specFile), (_event, name) => {
      if (name !== null && name !== basename(specFile)) return;
      if (timer) clearTimeout(timer);
      timer = setTimeout(() => {
        if (stopping === null) void apply();
      }, 300);
    });
    stopWatching = () => {
      watcher.close();
      if (timer) clearTimeout(timer);
    };
    o.out(`[watch] watching ${o.specPath}: a saved change is applied to the running mesh`);
  }
  // The summary is the last thing printed: its closing line ("Ctrl-C drains") says everything is up.
  for (const line of summary(plan)) o.out(line);
  return {
    get plan() {
      return plan;
    },
    supervisor,
    admin,
    keeper,
    apply,
    stop,
  };
}

/** Asks a proxy's admin listener to reload its config file; its answer (ok, or the error and code). */
async function reloadProxy(url: string): Promise<{ ok: boolean; error?: string; code?: string }> {
  try {
    const res = await fetch(url, { method: "POST", signal: AbortSignal.timeout(10_000) });
    return (await res.json()) as { ok: boolean; error?: string; code?: string };
  } catch (err) {
    return { ok: false, error: `its admin listener did not answer (${(err as Error).message})` };
  }
}

/**
 * Sends SIGHUP (Prometheus re-reads its config and rules) and watches its reload metrics until they say
 * the reload completed or failed, 10 s at most (watch.ts `prometheusReload`).
 */
async function reloadBySighup(
  metricsUrl: string,
  signal: () => boolean,
): Promise<{ ok: boolean; error?: string; code?: string }> {
  const askedAt = Date.now();
  if (!signal()) return { ok: false, error: "it is not running" };
  const deadline = askedAt + 10_000;
  for (;;) {
    const text = await fetch(metricsUrl, { signal: AbortSignal.timeout(2000) })
      .then((r) => r.text())
      .catch(() => "");
    const state = prometheusReload(text, askedAt);
    if (state === "reloaded") return { ok: true };
    if (state === "failed")
      return { ok: false, error: "its reload failed (prometheus_config_last_reload_successful 0)" };
    if (Date.now() > deadline) return { ok: false, error: "its reload did not complete within 10 s" };
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Writes planned files (atomically, 0644), creating their directories. */
async function writeFiles(files: readonly { path: string; content: string }[]): Promise<void> {
  for (const f of files) {
    await mkdir(dirname(f.path), { recursive: true });
    await writeFileAtomic(f.path, f.content, 0o644);
  }
}

/**
 * The first of these ports (port, owner, the field that sets it) that is not free, with why; the ports
 * the spec names are checked first (their fields are what a user changes), then the range.
 */
async function firstTaken(
  wanted: [number, string, string][],
): Promise<{ port: number; what: string; field: string; why: string } | null> {
  const ordered = [...wanted].sort((a, b) => Number(a[2] === "--port-base") - Number(b[2] === "--port-base"));
  for (const [port, what, field] of ordered) {
    const code = await portFree(port);
    if (code)
      return { port, what, field, why: code === "EADDRINUSE" ? "already in use" : `not available (${code})` };
  }
  return null;
}
/**
 * One request to every demo service that declares calls (the first path it serves), straight to its
 * app: each of its calls opens the sidecar-to-sidecar mTLS connections and warms both sidecars, so the
 * first user request does not pay every handshake of its fan-out at once (on a busy machine that can
 * exceed a route's per-try timeout). Failures are ignored: it is an optimisation, not a check.
 */
async function warmUp(plan: LocalPlan): Promise<void> {
  const gets: Promise<void>[] = [];
  for (const f of plan.files) {
    if (!f.path.includes("/run/demo/")) continue;
    const demo = JSON.parse(f.content) as DemoConfig;
    const path = demo.paths.find((p) => !p.includes("**"));
    if (demo.calls.length === 0 || path === undefined) continue;
    gets.push(
      fetch(`http://127.0.0.1:${demo.port}${fillPattern(path, "warm-up")}`, {
        signal: AbortSignal.timeout(5000),
      })
        .then((r) => r.arrayBuffer())
        .then(
          () => {},
          () => {},
        ),
    );
  }
  await Promise.all(gets);
}

/** `<stateDir>/state.json`: every process with pid and ports, the CA bundle, each identity's files. */
async function writeState(plan: LocalPlan, sup: Supervisor, keeper: IdentityKeeper, running: boolean) {
  const status = new Map(sup.status().map((s) => [s.name, s]));
  const state = {
    mesh: plan.mesh,
    running,
    launcherPid: process.pid,
    urls: plan.urls,
    caBundle: join(plan.caDir, "bundle.pem"),
    caDir: plan.caDir,
    processes: plan.processes.map((p) => ({
      name: p.name,
      role: p.role,
      workload: p.workload,
      pid: status.get(p.name)?.pid ?? null,
      state: status.get(p.name)?.state ?? null,
      ports: p.ports,
    })),
    identities: plan.identities.map((i) => ({
      workload: i.workload,
      spiffeId: i.spiffeId,
      cert: join(i.dir, "svid.pem"),
      key: join(i.dir, "svid-key.pem"),
      bundle: join(i.dir, "bundle.pem"),
      ...keeper.current()[i.workload],
    })),
    svidRenewals: keeper.renewals,
  };
  await writeFile(join(plan.stateDir, "state.json"), `${JSON.stringify(state, null, 2)}\n`);
}

/** The lines printed once everything is ready (the `gateway …` and `admin …` lines are stable for scripts). */
export function summary(plan: LocalPlan): string[] {
  const lines = ["", `✓ ${plan.mesh} is up: ${plan.processes.length} processes`];
  if (plan.urls.gateway) lines.push(`gateway ${plan.urls.gateway}`);
  lines.push(`admin ${plan.urls.admin}`);
  lines.push(`  topology   ${plan.urls.topology}`);
  lines.push(`  JWKS       ${plan.urls.jwks} (the dev token issuer, iss ${plan.issuer.url})`);
  if (plan.urls.prometheus) lines.push(`prometheus ${plan.urls.prometheus}`);
  lines.push(`  state      ${join(plan.stateDir, "state.json")}`);
  if (plan.examples.length > 0) {
    lines.push("", "Try:");
    for (const e of plan.examples) lines.push(`  # ${e.what}: ${e.route}`, `  ${e.command}`);
  }
  lines.push("", "Ctrl-C drains and stops everything (twice: at once).", "");
  return lines;
}
