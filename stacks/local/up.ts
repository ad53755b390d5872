/**
 * `meshgate up SPEC`: the whole mesh on this machine. Loads and translates the spec, plans every process
 * (./plan.ts), checks that every port is free, writes the configs, opens the dev CA and issues every
 * SVID (./ca.ts; renewed at half-life while running), opens the dev token issuer (./issuer.ts), starts
 * the local admin server (./admin.ts), then the supervised processes (./supervisor.ts), writes
 * `<stateDir>/state.json` and prints a summary with ready-to-paste curl lines. `stop()` (SIGINT/SIGTERM
 * in the CLI) drains and stops everything; `stop(true)` kills at once. A launcher killed -9 cannot stop
 * anything: its lifeline (./lifeline.ts), started before the first child, then stops every process group.
 */
import { createHash, randomBytes } from "node:crypto";
import { existsSync, watch } from "node:fs";
import { mkdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import net from "node:net";
import { basename, delimiter, dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { loadSpecFile } from "../../components/spec/load.ts";
import { formatSpecError } from "../../components/spec/errors.ts";
import type { MeshSpec } from "../../components/spec/schema.ts";
import type { TranslateResult } from "../../components/translate/ir.ts";
import { translate } from "../../components/translate/translate.ts";
import { PkiError, writeFileAtomic } from "../../runtime/pki/index.ts";
import { createLocalAdmin, type LocalAdmin } from "./admin.ts";
import { DevCaError, IdentityKeeper, openDevCa } from "./ca.ts";
import { IssuerError, openDevIssuer, writeIssuerInfo, type DevIssuer } from "./issuer.ts";
import { startLifeline, type Lifeline } from "./lifeline.ts";
import { fillPattern, planLocal, type DemoConfig, type LocalPlan } from "./plan.ts";
import { Supervisor } from "./supervisor.ts";
import { createTopology, scrapeTargetsOf } from "./topology/index.ts";
import { isEmpty, newPorts, planChanges, prometheusReload, type PlannedReload } from "./watch.ts";

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
  /**
   * Aborted (a second Ctrl-C while starting): kills every process started so far at once (SIGKILL to
   * each group) instead of waiting out the stop timeout of one that ignores SIGTERM.
   */
  readonly force?: AbortSignal;
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

/** The lock of a state directory (`<stateDir>/up.lock`, holding the launcher's pid). */
interface StateLock {
  release(): Promise<void>;
}

export const LOCK_FILE = "up.lock";

/** Whether `pid` is a running `meshgate up` (best effort: a process we cannot inspect counts as one). */
async function upRunning(pid: number): Promise<boolean> {
  if (pid === process.pid) return true;
  try {
    process.kill(pid, 0);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "EPERM") return false;
  }
  // A pid reused by another program after a crash or a reboot is no meshgate: its lock is stale.
  const cmdline = await readFile(`/proc/${pid}/cmdline`, "utf8").catch(() => null);
  return cmdline === null || cmdline.includes("meshgate");
}

/**
 * Takes `<stateDir>/up.lock` for this launcher. A second `meshgate up` on the same state dir (other
 * ports) would rewrite the running mesh's configs (which its proxies reload), its identities and its
 * state.json: refused (E_LOCAL_STATE_LOCKED) while the holder runs; a lock left by one that died is taken.
 */
async function lockStateDir(stateDir: string, say: (line: string) => void): Promise<StateLock> {
  const path = join(stateDir, LOCK_FILE);
  for (let attempt = 0; ; attempt++) {
    try {
      await writeFile(path, `${process.pid}\n`, { flag: "wx", mode: 0o644 });
      let released: Promise<void> | null = null;
      return { release: () => (released ??= rm(path, { force: true })) };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
    }
    const text = await readFile(path, "utf8").catch(() => "");
    const pid = /^[1-9][0-9]*$/.test(text.trim()) ? Number(text.trim()) : null;
    if (attempt > 0 || (pid !== null && (await upRunning(pid))))
      throw new UpError(
        "E_LOCAL_STATE_LOCKED",
        `the state dir ${stateDir} is in use by another meshgate up${pid !== null ? ` (pid ${pid})` : ""}: stop it, or pass another --state-dir (if none runs, delete ${path})`,
      );
    await stopLeftovers(stateDir, pid, say);
    await rm(path, { force: true });
  }
}

/**
 * The processes a `meshgate up` that died left running on this state dir (its children are spawned
 * detached and outlive it: its reaper, ./lifeline.ts, stops them unless it was killed too), from its
 * state.json: those whose pid still runs a command line naming the state dir (a pid reused by another
 * program does not). They hold the mesh's ports, so the next `up` would fail with E_LOCAL_PORT_TAKEN:
 * each is sent SIGTERM (they drain), then SIGKILL after 5 s.
 */
async function stopLeftovers(stateDir: string, launcher: number | null, say: (line: string) => void) {
  const text = await readFile(join(stateDir, "state.json"), "utf8").catch(() => null);
  if (text === null) return;
  let processes: unknown;
  try {
    processes = (JSON.parse(text) as { processes?: unknown }).processes;
  } catch {
    return;
  }
  if (!Array.isArray(processes)) return;
  const dir = resolve(stateDir);
  const left: { name: string; pid: number }[] = [];
  for (const p of processes as { name?: unknown; pid?: unknown }[]) {
    if (!Number.isInteger(p.pid) || (p.pid as number) <= 1 || p.pid === process.pid) continue;
    const cmdline = await readFile(`/proc/${p.pid as number}/cmdline`, "utf8").catch(() => "");
    if (cmdline.replace(/\0/g, " ").includes(dir)) left.push({ name: String(p.name), pid: p.pid as number });
  }
  if (left.length === 0) return;
  say(
    `[up] stopping ${left.length} processes left running by a meshgate up that died${launcher !== null ? ` (pid ${launcher})` : ""}: ${left.map((l) => `${l.name} (pid ${l.pid})`).join(", ")}`,
  );
  const signal = (pid: number, sig: NodeJS.Signals | 0) => {
    try {
      process.kill(pid, sig);
      return true;
    } catch {
      return false; // gone
    }
  };
  for (const l of left) signal(l.pid, "SIGTERM");
  const deadline = Date.now() + 5000;
  let running = left;
  while (running.length > 0 && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 100));
    running = running.filter((l) => signal(l.pid, 0));
  }
  for (const l of running) signal(l.pid, "SIGKILL");
  while (running.length > 0 && Date.now() < deadline + 2000) {
    await new Promise((r) => setTimeout(r, 50));
    running = running.filter((l) => signal(l.pid, 0));
  }
}

/**
 * The state dir and the directories in it that hold trust and configuration (the CA, the identities,
 * the token issuer, the dev API keys, the proxies' configs) must be this user's and writable by no one
 * else: another user who can write there can plant a CA of their own (every sidecar then trusts it and
 * `up` issues SVIDs from a key they know) or a proxy config. Refused (E_LOCAL_STATE_DIR), like ssh's
 * StrictModes, before anything is read or written.
 */
async function checkStateDir(stateDir: string): Promise<void> {
  const uid = process.getuid?.();
  for (const dir of [
    stateDir,
    ...["ca", "identities", "issuer", "api-keys", "run"].map((d) => join(stateDir, d)),
  ]) {
    const st = await stat(dir).catch(() => null);
    if (st === null) continue;
    const fix = `or pass another --state-dir`;
    if (uid !== undefined && st.uid !== uid)
      throw new UpError(
        "E_LOCAL_STATE_DIR",
        `${dir} belongs to uid ${st.uid}, not to this user (uid ${uid}): whoever owns it can replace the dev CA, the keys or the proxies' configs; use a state dir of your own (chown it), ${fix}`,
      );
    if ((st.mode & 0o022) !== 0)
      throw new UpError(
        "E_LOCAL_STATE_DIR",
        `${dir} is writable by other users (mode ${(st.mode & 0o7777).toString(8).padStart(4, "0")}): they could replace the dev CA, the keys or the proxies' configs; chmod go-w ${dir}, ${fix}`,
      );
  }
}

/** Starts the local mesh; resolves once everything is ready (see the module comment). */
export async function up(o: UpOptions): Promise<UpHandle> {
  const held: { lock: StateLock | null } = { lock: null };
  try {
    return await startUp(o, held);
  } catch (err) {
    await held.lock?.release();
    throw err;
  }
}

async function startUp(o: UpOptions, held: { lock: StateLock | null }): Promise<UpHandle> {
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
  await checkStateDir(stateDir);
  held.lock = await lockStateDir(stateDir, o.err);
  const lock = held.lock;
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
  // Prometheus creates its data dirs with the umask's modes: under a 0700 parent, others reach none of them.
  await mkdir(join(stateDir, "prometheus-data"), { recursive: true, mode: 0o700 });
  for (const note of plan.notes) o.out(`[up] note: ${note}`);

  // The dev CA and every identity, before any proxy starts. A CA of another mesh, or one damaged on disk,
  // is the user's to resolve: one coded line, never a stack trace.
  const { ca, created, renewedIntermediate } = await openDevCa(plan.caDir, plan.trustDomain, {
    rootValidityMs: translated.infra.ca.rootValidityMs,
    intermediateValidityMs: translated.infra.ca.intermediateValidityMs,
    clockSkewMs: plan.clockSkewMs,
  }).catch((err: Error & { code?: string }) => {
    if (err instanceof DevCaError) throw new UpError(err.code, err.message);
    throw new UpError(
      "E_LOCAL_CA",
      `the dev CA in ${plan.caDir} cannot be used (${err.message}${err.code ? ` [${err.code}]` : ""}): delete ${plan.caDir} to make a new one (every SVID is issued again; trust its new root.pem)`,
    );
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
  let issuer: DevIssuer;
  try {
    await keeper.start(plan.identities);
    ({ issuer } = await openDevIssuer(join(stateDir, "issuer")));
    await writeIssuerInfo(join(stateDir, "issuer"), {
      issuer: plan.issuer.url,
      jwksUri: plan.issuer.jwksUri,
      providers: plan.issuer.providers,
    });
  } catch (err) {
    // The renewal timers would keep this process alive after the error, renewing forever.
    keeper.stop();
    if (err instanceof IssuerError) throw new UpError(err.code, err.message);
    if (err instanceof PkiError) throw new UpError(err.code, `issuing the SVIDs failed: ${err.message}`);
    throw err;
  }

  // Before the first child: if this launcher dies (kill -9), the reaper stops every group it started.
  const lifeline = startLifeline(stateDir, o.err);
  const supervisor = new Supervisor(plan.processes, {
    out: o.out,
    onChange: () => refreshState(),
    groups: lifeline,
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
    await lifeline.close();
    throw new UpError(
      "E_LOCAL_PORT_TAKEN",
      `port ${plan.ports.admin} (the local admin server) is not available (${(err as NodeJS.ErrnoException).code}): change targets.local.adminPort (or --admin-port N)`,
    );
  }

  let stopping: Promise<void> | null = null;
  let stopWatching = () => {};
  let stopRequested = false;
  // Once the mesh is up, state.json follows every restart (a new pid, backoff, crash loop, ready again):
  // a script that signals a pid from it must not hit a process that is gone. One write at a time.
  let live = false;
  let writing: Promise<void> | null = null;
  let dirty = false;
  function refreshState(): void {
    if (!live || stopRequested) return;
    if (writing) {
      dirty = true;
      return;
    }
    writing = writeState(plan, supervisor, keeper, lifeline, true)
      .catch(() => {})
      .finally(() => {
        writing = null;
        if (dirty) {
          dirty = false;
          refreshState();
        }
      });
  }
  const stop = (force = false): Promise<void> => {
    stopRequested = true;
    stopWatching();
    if (force) return supervisor.stop(true).then(() => finish());
    stopping ??= supervisor.stop(false).then(() => finish());
    return stopping;
  };
  let finished = false;
  const finish = async () => {
    if (finished) return;
    finished = true;
    // Every child has exited: the reaper has nothing left to stop.
    await lifeline.close();
    keeper.stop();
    topology.close();
    await admin.close();
    await writing;
    await writeState(plan, supervisor, keeper, lifeline, false).catch(() => {});
    await lock.release();
  };

  const interrupted = async () => {
    await stop(o.force?.aborted === true);
    return new UpError(
      "E_LOCAL_INTERRUPTED",
      "interrupted while starting: every started process was stopped",
    );
  };
  const onAbort = () => void stop();
  const onForce = () => void stop(true);
  o.signal?.addEventListener("abort", onAbort, { once: true });
  o.force?.addEventListener("abort", onForce, { once: true });
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
  o.force?.removeEventListener("abort", onForce);
  if (o.signal?.aborted) throw await interrupted();
  await writeState(plan, supervisor, keeper, lifeline, true);
  // A signal while state.json was written (the listeners are off: a stop racing this write could be
  // overtaken by it and leave "running: true") is seen here. From here to the return nothing awaits, and
  // the caller holds the handle before any later signal is handled: no Ctrl-C falls between the two.
  if (o.signal?.aborted) throw await interrupted();
  live = true;

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
    // restart for it (a proxy's admin port), or does not answer, or fails to reload (Prometheus) gets one.
    // A proxy that answers it refuses its new config for any other reason (E_RT_CONFIG_INVALID: a static
    // dir that does not exist, …) keeps serving its previous one: a restart would read the same file and
    // fail, so the whole change is rolled back below and the mesh keeps the previous spec.
    const restart = new Map(change.restart.map((r) => [r.name, r.why]));
    const reloaded: PlannedReload[] = [];
    const refused: string[] = [];
    await Promise.all(
      change.reload.map(async (r) => {
        const result =
          r.kind === "admin"
            ? await reloadProxy(r.url)
            : await reloadBySighup(
                r.metricsUrl,
                () => supervisor.signal(r.name, "SIGHUP"),
                () => stopRequested,
              );
        if (result.ok) reloaded.push(r);
        else if (stopRequested)
          return; // its process is stopping or gone: the apply ends below
        else if (result.code === "E_RT_RELOAD_RESTART_REQUIRED")
          restart.set(r.name, `its new config changes what it binds at start (${result.error})`);
        else if (r.kind === "admin" && result.code !== undefined)
          refused.push(`${r.name} refused its new config (${result.code}): ${result.error}`);
        else {
          restart.set(r.name, `it refused its new config in place (${result.error})`);
          o.err(
            `[watch] ${r.name} refused its new config: ${result.error} [${result.code ?? "?"}]; restarting it`,
          );
        }
      }),
    );
    if (refused.length > 0 && !stopRequested) {
      // The previous files go back (a later restart after a crash reads a config that works), those
      // that did reload read them again, and identities the change re-issued or retired are the previous
      // ones again; the plan stays the running one.
      const previous = new Map(plan.files.map((f) => [f.path, f]));
      await writeFiles(change.files.flatMap((f) => previous.get(f.path) ?? []));
      const touched = new Set([...change.retiredIdentities, ...change.identities.map((i) => i.workload)]);
      await keeper.add(
        plan.identities.filter((i) => touched.has(i.workload)),
        change.identities
          .map((i) => i.workload)
          .filter((w) => !plan.identities.some((i) => i.workload === w)),
      );
      await Promise.all(
        reloaded.map((r) =>
          r.kind === "admin"
            ? reloadProxy(r.url)
            : reloadBySighup(
                r.metricsUrl,
                () => supervisor.signal(r.name, "SIGHUP"),
                () => stopRequested,
              ),
        ),
      );
      return refuse("E_LOCAL_CONFIG_REFUSED", refused.sort().join("; "));
    }
    // Stopped meanwhile (Ctrl-C): the apply ends here — nothing restarts, and no reload is waited out.
    if (stopRequested) {
      o.out("[watch] stopped while applying the change");
      return {
        ok: false,
        code: "E_LOCAL_INTERRUPTED",
        message: "up was stopped while the change was applied",
      };
    }
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
      if (!stopRequested) await writeState(plan, supervisor, keeper, lifeline, true).catch(() => {});
      return refuse((err as { code?: string }).code ?? "E_LOCAL_NOT_READY", (err as Error).message);
    }
    // A change still being applied when `up` was stopped (Ctrl-C) never marks the stopped mesh running.
    if (!stopRequested) await writeState(plan, supervisor, keeper, lifeline, true);
    const report = {
      ok: true as const,
      unchanged: false,
      reloaded: reloaded.map((r) => r.name).sort(),
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
 * the reload completed or failed, 10 s at most (watch.ts `prometheusReload`), or `up` is stopping.
 */
async function reloadBySighup(
  metricsUrl: string,
  signal: () => boolean,
  stopping: () => boolean,
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
    if (stopping()) return { ok: false, error: "up is stopping" };
    await new Promise((r) => setTimeout(r, 100));
  }
}

/**
 * Writes planned files (atomically), creating their directories 0700 — never group-writable, whatever the
 * umask (a umask of 002 made run/ 0775, which the next `up` refuses: checkStateDir) — and the files 0600:
 * a proxy's config may hold a credential (a Redis password, an OTLP token), and every reader of these files
 * (the proxies, the demo services, Prometheus) runs as this user.
 */
async function writeFiles(files: readonly { path: string; content: string }[]): Promise<void> {
  for (const f of files) {
    await mkdir(dirname(f.path), { recursive: true, mode: 0o700 });
    await writeFileAtomic(f.path, f.content, 0o600);
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
async function writeState(
  plan: LocalPlan,
  sup: Supervisor,
  keeper: IdentityKeeper,
  lifeline: Lifeline,
  running: boolean,
) {
  const status = new Map(sup.status().map((s) => [s.name, s]));
  const state = {
    mesh: plan.mesh,
    running,
    launcherPid: process.pid,
    reaperPid: lifeline.pid,
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
  // Atomically: it is rewritten at every restart, and a script may read it at any moment.
  await writeFileAtomic(join(plan.stateDir, "state.json"), `${JSON.stringify(state, null, 2)}\n`, 0o644);
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
