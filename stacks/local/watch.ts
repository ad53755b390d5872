/**
 * `meshgate up --watch`: what a changed spec means for the running local mesh. `planChanges` compares
 * the running plan with the plan of the changed spec and returns the change as a value — pure, so every
 * rule below is a row of a table test:
 *
 * - settings `meshgate up` itself holds for its whole run (the state dir and the dev CA in it, the trust
 *   domain, the local admin server's port, the SVID lifetime and clock skew) cannot change under it:
 *   such a change is refused, naming the settings, and nothing is applied;
 * - a file whose content changed, or a new file, is rewritten;
 * - a process no longer planned is stopped, a new one started (its identity issued first);
 * - a process whose command, environment, working directory, ports or readiness check changed is
 *   restarted, and so is one that reads a changed file without reloading it itself (a demo service's
 *   config);
 * - Prometheus, whose config or rules changed, is sent SIGHUP (it re-reads both; `meshgate up` checks
 *   its reload metrics and restarts it if the reload failed);
 * - a proxy whose config file changed and nothing else is reloaded in place (its admin `POST /reload`),
 *   and so is one whose only other change is the ports its config names (the gateway's listeners, the
 *   sidecar's inbound, outbound and local ports: the proxies bind and close those on reload); one that
 *   answers that the change needs a restart (`E_RT_RELOAD_RESTART_REQUIRED`: its admin port) is
 *   restarted by the caller.
 */
import type { LocalPlan, PlannedFile, PlannedIdentity, PlannedProcess } from "./plan.ts";

/** A change of the running local mesh (see the module comment). */
export interface PlanChanges {
  /** The settings of `meshgate up` itself that changed: nothing is applied, restart `meshgate up`. */
  readonly restartUp: readonly string[];
  /** New files and files whose content changed. */
  readonly files: readonly PlannedFile[];
  /**
   * Identities of workloads the running mesh does not have yet, or whose SPIFFE ID changed: issued
   * before their processes start or restart.
   */
  readonly identities: readonly PlannedIdentity[];
  /** Workloads no longer planned: their SVIDs are no longer renewed. */
  readonly retiredIdentities: readonly string[];
  readonly added: readonly string[];
  readonly removed: readonly string[];
  /** Processes to restart, each with why. */
  readonly restart: readonly { readonly name: string; readonly why: string }[];
  /** Processes to reload in place (only files they reload themselves changed), and how. */
  readonly reload: readonly PlannedReload[];
}

/** A process reloaded in place: a proxy asked on its admin listener, or Prometheus sent SIGHUP. */
export type PlannedReload =
  | { readonly name: string; readonly kind: "admin"; readonly url: string }
  | { readonly name: string; readonly kind: "sighup"; readonly metricsUrl: string };

/** A change with nothing to do. */
export const NO_CHANGES: PlanChanges = Object.freeze({
  restartUp: [],
  files: [],
  identities: [],
  retiredIdentities: [],
  added: [],
  removed: [],
  restart: [],
  reload: [],
});

/** What of a process a restart applies (everything but what only reporting reads). */
function definition(p: PlannedProcess): string {
  return JSON.stringify([p.role, p.workload, p.argv, p.env, p.cwd, p.ports, p.ready, p.phase, p.reads]);
}

/**
 * A proxy whose only change is ports its config file names, other than its admin port (the gateway's
 * listener, a sidecar's inbound, outbound and per-service `to-<callee>` ports): the proxy binds the new
 * ones and closes the old ones on reload (runtime/contract/restart.ts), so it is reloaded, not
 * restarted. Its readiness check reads the admin port, which stays.
 */
function onlyReloadablePortsDiffer(a: PlannedProcess, b: PlannedProcess): boolean {
  if (a.role !== b.role || (a.role !== "gateway" && a.role !== "sidecar")) return false;
  const fixed = (p: PlannedProcess) =>
    definition({ ...p, ports: p.ports.admin === undefined ? {} : { admin: p.ports.admin } });
  return fixed(a) === fixed(b);
}

/** The part of a definition that differs, for the "why" of a restart. */
function whatDiffers(a: PlannedProcess, b: PlannedProcess): string {
  const parts: [string, unknown, unknown][] = [
    ["ports", a.ports, b.ports],
    ["command", a.argv, b.argv],
    ["environment", a.env, b.env],
    ["working directory", a.cwd, b.cwd],
    ["readiness check", a.ready, b.ready],
  ];
  const changed = parts.filter(([, x, y]) => JSON.stringify(x) !== JSON.stringify(y)).map(([n]) => n);
  return `its ${changed.length > 0 ? changed.join(", ") : "definition"} changed`;
}

/** The running plan → the changed spec's plan, as a change (see the module comment). */
export function planChanges(running: LocalPlan, next: LocalPlan): PlanChanges {
  const restartUp: string[] = [];
  const held: [string, unknown, unknown][] = [
    ["targets.local.stateDir (or --state-dir)", running.stateDir, next.stateDir],
    ["trustDomain", running.trustDomain, next.trustDomain],
    ["targets.local.adminPort (or --admin-port)", running.ports.admin, next.ports.admin],
    ["the SVID lifetime (--svid-ttl)", running.svidTtlMs, next.svidTtlMs],
    ["mesh.ca.clockSkew", running.clockSkewMs, next.clockSkewMs],
  ];
  for (const [name, a, b] of held) if (a !== b) restartUp.push(name);
  if (restartUp.length > 0) return { ...NO_CHANGES, restartUp };

  const before = new Map(running.files.map((f) => [f.path, f.content]));
  const files = next.files.filter((f) => before.get(f.path) !== f.content);
  const changedFiles = new Set(files.map((f) => f.path));

  const known = new Map(running.identities.map((i) => [i.workload, JSON.stringify(i)]));
  const identities = next.identities.filter((i) => known.get(i.workload) !== JSON.stringify(i));
  const stillPlanned = new Set(next.identities.map((i) => i.workload));
  const retiredIdentities = running.identities.map((i) => i.workload).filter((w) => !stillPlanned.has(w));

  const old = new Map(running.processes.map((p) => [p.name, p]));
  const planned = new Set(next.processes.map((p) => p.name));
  const added: string[] = [];
  const restart: { name: string; why: string }[] = [];
  const reload: PlannedReload[] = [];
  for (const p of next.processes) {
    const was = old.get(p.name);
    if (!was) {
      added.push(p.name);
      continue;
    }
    if (definition(was) !== definition(p) && !onlyReloadablePortsDiffer(was, p)) {
      restart.push({ name: p.name, why: whatDiffers(was, p) });
      continue;
    }
    const read = p.reads.filter((f) => changedFiles.has(f));
    if (read.length === 0) continue;
    if (p.reload === "admin" && p.ports.admin !== undefined)
      reload.push({ name: p.name, kind: "admin", url: `http://127.0.0.1:${p.ports.admin}/reload` });
    else if (p.reload === "sighup" && p.ports.http !== undefined)
      reload.push({ name: p.name, kind: "sighup", metricsUrl: `http://127.0.0.1:${p.ports.http}/metrics` });
    else restart.push({ name: p.name, why: `it reads ${read.join(", ")}, which changed` });
  }
  const removed = running.processes.filter((p) => !planned.has(p.name)).map((p) => p.name);
  return { restartUp, files, identities, retiredIdentities, added, removed, restart, reload };
}

/** The change has nothing to do. */
export function isEmpty(c: PlanChanges): boolean {
  return Object.values(c).every((list: readonly unknown[]) => list.length === 0);
}

/** Ports the next plan's processes bind that no running process holds (to check they are free first). */
export function newPorts(running: LocalPlan, next: LocalPlan): [number, string, string][] {
  const held = new Set(running.processes.flatMap((p) => Object.values(p.ports)));
  const out: [number, string, string][] = [];
  for (const p of next.processes)
    for (const [what, port] of Object.entries(p.ports))
      if (!held.has(port)) out.push([port, `${p.name} ${what}`, p.portFields[port] ?? "--port-base"]);
  return out;
}

/** What Prometheus's own metrics say of a reload asked for at `askedAt` (ms since the epoch). */
export type PrometheusReload = "reloaded" | "failed" | "pending";

/**
 * Reads `prometheus_config_last_reload_successful` and `…_last_reload_success_timestamp_seconds` from
 * Prometheus's `/metrics`: a failed last reload is `failed`; a successful one that completed in or after
 * the second the SIGHUP was sent is `reloaded` (the timestamp has whole seconds); anything else (the
 * signal not handled yet, the metrics missing) is `pending`.
 */
export function prometheusReload(metricsText: string, askedAt: number): PrometheusReload {
  const value = (name: string): number | null => {
    const m = new RegExp(`^${name} (\\S+)$`, "m").exec(metricsText);
    return m ? Number(m[1]) : null;
  };
  const ok = value("prometheus_config_last_reload_successful");
  const at = value("prometheus_config_last_reload_success_timestamp_seconds");
  if (ok === 0) return "failed";
  if (ok === 1 && at !== null && at >= Math.floor(askedAt / 1000)) return "reloaded";
  return "pending";
}
