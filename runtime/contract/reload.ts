/**
 * The one config-reload procedure of the gateway and the sidecar (SIGHUP, a changed file, the admin
 * API): reloads run one after another; the new RuntimeConfig is read (from the text given, or re-read
 * from the config file), validated whole and built before it replaces anything — an invalid config, or
 * one whose state cannot be built, is rejected with its code and the old one keeps serving. Each attempt
 * is counted in `meshgate_config_reloads_total{proxy,result}` (success, unchanged, failure), and a
 * swap moves `meshgate_config_info{proxy,hash}` from the old hash (its series removed) to the new one (1).
 *
 * What differs between the proxies is given as hooks: what an unchanged config still refreshes
 * (certificate files rotated in place), how the new state is built, and the swap itself.
 */
import { realpathSync, statSync, watch, type FSWatcher } from "node:fs";
import { readFile } from "node:fs/promises";
import { basename, dirname } from "node:path";
import type { Logger } from "pino";
import { RuntimeConfigError } from "./errors.ts";
import { exposedConfigHash } from "./exposed-hash.ts";

/** The outcome of one reload, as the admin API and the handles return it. */
export type ReloadResult =
  { ok: true; hash: string; changed: boolean } | { ok: false; error: string; code: string };

export interface ReloaderOptions<C extends { readonly hash: string }, S> {
  /** The proxy label of the metrics. */
  readonly proxy: "gateway" | "sidecar";
  /** Where a reload without text reads the config from; none → such a reload is rejected. */
  readonly configPath?: string;
  /** The proxy's lifecycle metrics (telemetry/metrics.ts registerLifecycleMetrics). */
  readonly metrics: {
    /** `meshgate_config_reloads_total`, labelled (proxy, result). */
    readonly reloads: { labels(proxy: string, result: string): { inc(): void } };
    /** `meshgate_config_info`, labelled (proxy, hash). */
    readonly info: {
      labels(proxy: string, hash: string): { set(value: number): void };
      remove(proxy: string, hash: string): boolean;
    };
  };
  readonly log: Logger;
  /** The config serving now. */
  current(): C;
  /** Parses and validates the text (loadRuntimeConfig); throws a RuntimeConfigError. */
  load(text: string): C;
  /** The config is unchanged (same hash): refresh what can change without it (certificate files). */
  unchanged(next: C): Promise<void>;
  /**
   * Refuses a new config the running proxy cannot apply (a setting bound when it started): throws a
   * RuntimeConfigError, whose code the rejection keeps. Runs before anything of the new config is built.
   */
  check?(current: C, next: C): void;
  /** Builds the state of a new config; throwing rejects it (nothing swapped). */
  build(next: C): Promise<S>;
  /** Called when build threw, to undo what it started. */
  buildFailed?(): void;
  /**
   * Swaps the built state in and retires the previous one. Throwing before the swap rejects the reload
   * (the previous state keeps serving); once swapped, nothing may throw.
   */
  commit(next: C, built: S): Promise<void> | void;
  /** Releases a built state that was not swapped in (commit threw): its pools, timers, exporters. */
  discard?(built: S): void;
}

/**
 * A reload validated, checked and built but not yet swapped in (a gateway worker's first phase: the
 * primary commits it only when every worker prepared the same config). Until it is committed or
 * aborted no other reload of this proxy runs; one left open longer than the hold time is aborted.
 */
export interface PreparedReload {
  /**
   * The outcome so far: a refusal (nothing to commit — commit and abort return it as is), an unchanged
   * config (already refreshed), or `ok` with the hash commit would serve.
   */
  readonly result: ReloadResult;
  /** Swaps the prepared state in (the swap itself may still refuse: its result says). */
  commit(): Promise<ReloadResult>;
  /** Releases the prepared state; the previous config keeps serving (counted as a failure). */
  abort(reason: string): ReloadResult;
}

/** The reload function of one proxy, and its two phases for a fleet of workers that must agree. */
export interface Reloader {
  /** Reloads from the text given, or re-reads the config file: prepare and commit in one step. */
  (text?: string): Promise<ReloadResult>;
  /** Validates, checks and builds the config without swapping it in (see PreparedReload). */
  prepare(text?: string, holdMs?: number): Promise<PreparedReload>;
}

/** How long a prepared reload may hold the reload queue before it is aborted (its primary went away). */
export const PREPARED_HOLD_MS = 30_000;

/** A reload staged up to its swap: `apply` swaps it in, `release` drops it; both absent when nothing to swap. */
interface Staged {
  readonly result: ReloadResult;
  readonly apply?: () => Promise<ReloadResult>;
  readonly release?: () => void;
}

/** The reload function of one proxy: call it with a config's text, or without to re-read the file. */
export function createReloader<C extends { readonly hash: string }, S>(o: ReloaderOptions<C, S>): Reloader {
  const { reloads, info } = o.metrics;
  /** A rejection: counted, logged (never the config itself), and the old config keeps serving. */
  const reject = (message: string, code: string, consequence: string): ReloadResult => {
    reloads.labels(o.proxy, "failure").inc();
    o.log.error({ event: "reload_rejected", code, message }, consequence);
    return { ok: false, error: message, code };
  };

  /** A config refused before anything of it was built, with the code its error carries. */
  const refused = (err: unknown): ReloadResult => {
    const e = err as Error & { code?: string };
    return reject(
      e.message,
      e.code ?? "E_RT_CONFIG_INVALID",
      "config rejected; the previous config keeps serving",
    );
  };

  /** Everything up to the swap: load, unchanged refresh, check, build. */
  async function stage(text?: string): Promise<Staged> {
    let next: C;
    try {
      if (text === undefined) {
        if (!o.configPath)
          throw Object.assign(new Error("no config file to reload from"), { code: "E_RT_CONFIG_JSON" });
        text = await readFile(o.configPath, "utf8");
      }
      next = o.load(text);
    } catch (err) {
      return { result: refused(err) };
    }
    const before = o.current();
    const previous = before.hash;
    if (next.hash === previous) {
      try {
        await o.unchanged(next);
      } catch (err) {
        const message = (err as Error).message;
        return {
          result: reject(
            message,
            "E_RT_CONFIG_INVALID",
            "certificates unreadable; the previous ones keep serving",
          ),
        };
      }
      reloads.labels(o.proxy, "unchanged").inc();
      return { result: { ok: true, hash: next.hash, changed: false } };
    }
    try {
      o.check?.(o.current(), next);
    } catch (err) {
      return { result: refused(err) };
    }
    let built: S;
    try {
      built = await o.build(next);
    } catch (err) {
      o.buildFailed?.();
      // A build failure is the config's (a file it names that cannot be read, …): E_RT_CONFIG_INVALID
      // unless it is a runtime error with its own code (a client certificate that cannot serve).
      const message = (err as Error).message;
      const code = err instanceof RuntimeConfigError ? err.code : "E_RT_CONFIG_INVALID";
      return {
        result: reject(message, code, "config rejected; the previous config keeps serving"),
      };
    }
    const apply = async (): Promise<ReloadResult> => {
      try {
        await o.commit(next, built);
      } catch (err) {
        // The swap could not happen (a new identity that does not start): the previous state keeps serving.
        o.discard?.(built);
        const message = (err as Error).message;
        return reject(
          message,
          "E_RT_CONFIG_INVALID",
          "config not applied; the previous config keeps serving",
        );
      }
      // Only the serving hash has a series: kept at 0, every past hash took a child until the cap folded
      // the serving one into hash="__overflow__" (after 4 reloads).
      info.labels(o.proxy, exposedConfigHash(next)).set(1);
      if (previous !== next.hash) info.remove(o.proxy, exposedConfigHash(before));
      reloads.labels(o.proxy, "success").inc();
      o.log.info({ event: "reloaded", hash: exposedConfigHash(next) });
      return { ok: true, hash: next.hash, changed: true };
    };
    return { result: { ok: true, hash: next.hash, changed: true }, apply, release: () => o.discard?.(built) };
  }

  // Each reload runs after the one before, whatever that one's outcome (even an unexpected throw).
  let tail: Promise<unknown> = Promise.resolve();
  const enqueue = <T>(job: () => Promise<T>): Promise<T> => {
    const run = tail.then(job, job);
    tail = run.catch(() => undefined);
    return run;
  };

  const reload = (text?: string) =>
    enqueue(async () => {
      const staged = await stage(text);
      return staged.apply ? staged.apply() : staged.result;
    });

  const prepare = (text?: string, holdMs = PREPARED_HOLD_MS): Promise<PreparedReload> =>
    new Promise<PreparedReload>((handOut, fail) => {
      // The queue's job ends only when the prepared reload is committed or aborted: nothing interleaves.
      void enqueue(async () => {
        let staged: Staged;
        try {
          staged = await stage(text);
        } catch (err) {
          fail(err);
          return;
        }
        const { apply, release } = staged;
        if (!apply || !release) {
          const settled = () => staged.result;
          handOut({ result: staged.result, commit: async () => settled(), abort: settled });
          return;
        }
        await new Promise<void>((done) => {
          let open = true;
          const close = () => {
            open = false;
            clearTimeout(timer);
            done();
          };
          const abort = (reason: string): ReloadResult => {
            if (!open) return closedResult;
            close();
            release();
            return reject(
              reason,
              "E_RT_RELOAD_ABORTED",
              "prepared config aborted; the previous config keeps serving",
            );
          };
          let closedResult: ReloadResult = {
            ok: false,
            error: "this prepared reload was already committed or aborted",
            code: "E_RT_RELOAD_ABORTED",
          };
          const timer = setTimeout(
            () => abort(`not committed within ${holdMs} ms (the primary that prepared it did not answer)`),
            holdMs,
          );
          timer.unref();
          handOut({
            result: staged.result,
            commit: async () => {
              if (!open) return closedResult;
              open = false;
              clearTimeout(timer);
              try {
                closedResult = await apply();
                return closedResult;
              } finally {
                done();
              }
            },
            abort,
          });
        });
      });
    });

  return Object.assign(reload, { prepare });
}

/**
 * A serving proxy process's signals: a change of its config file (debounced 100 ms) and SIGHUP reload;
 * SIGTERM and SIGINT drain, then exit 0; a second SIGTERM/SIGINT during the drain exits 1 at once.
 */
export function reloadAndDrainOnSignals(
  configPath: string,
  proxy: { reload(): Promise<unknown>; drain(): Promise<void> },
  log: Logger,
): void {
  const watcher = watchConfigFile(configPath, () => void proxy.reload());
  process.on("SIGHUP", () => void proxy.reload());
  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) {
      log.warn({ event: "forced_exit", signal });
      process.exit(1);
    }
    stopping = true;
    watcher.close();
    void proxy.drain().then(() => process.exit(0));
  };
  process.on("SIGTERM", () => stop("SIGTERM"));
  process.on("SIGINT", () => stop("SIGINT"));
}

/** What identifies the config file's contents cheaply: inode, size, mtime (stat follows symlinks). */
function fileSignature(path: string): string {
  try {
    const s = statSync(path);
    return `${s.ino}:${s.size}:${s.mtimeMs}`;
  } catch {
    return "missing";
  }
}

/**
 * Calls `changed` (debounced 100 ms) when the config file's contents may have changed. Directories are
 * watched, not the file: a watch on a file follows its inode, and both an editor's atomic save (write a
 * temporary file, rename it over) and Kubernetes' update of a mounted ConfigMap (a new timestamped
 * directory, the `..data` symlink renamed over, the old directory removed) replace the inode — a file
 * watch saw the first replacement and nothing ever again. Watched: the directory of the path (the file or
 * the symlink replaced there) and, when the path is a symlink, the directory of the file it resolves to
 * now (written in place there), re-resolved after each change. Events on other names are ignored, and an
 * event counts only when the file's signature (stat through the symlinks) changed.
 */
export function watchConfigFile(configPath: string, changed: () => void): { close(): void } {
  const linkDir = dirname(configPath);
  const watchers = new Map<string, FSWatcher>();
  let names = new Set<string>();
  let seen = fileSignature(configPath);
  let timer: NodeJS.Timeout | null = null;
  let closed = false;

  const onEvent = (_event: string, name: string | Buffer | null) => {
    if (name !== null && !names.has(String(name))) return;
    if (timer) clearTimeout(timer);
    timer = setTimeout(check, 100);
  };
  /** Watches the path's directory and the current target's; forgets a target directory no longer used. */
  const track = () => {
    let real = configPath;
    try {
      real = realpathSync(configPath);
    } catch {
      // Missing for now (between a removal and its replacement): the path's directory still tells.
    }
    names = new Set([basename(configPath), basename(real), "..data"]);
    const dirs = new Set([linkDir, dirname(real)]);
    for (const [dir, w] of watchers)
      if (!dirs.has(dir)) {
        w.close();
        watchers.delete(dir);
      }
    for (const dir of dirs) {
      if (watchers.has(dir)) continue;
      try {
        const w = watch(dir, onEvent);
        w.on("error", () => {
          w.close();
          watchers.delete(dir);
        });
        watchers.set(dir, w);
      } catch (err) {
        // The path's own directory must be watchable (as the file had to be before); a target directory
        // that just went away is resolved again at the next change.
        if (dir === linkDir) throw err;
      }
    }
  };
  function check(): void {
    timer = null;
    if (closed) return;
    track();
    const now = fileSignature(configPath);
    if (now === seen) return;
    seen = now;
    changed();
  }

  track();
  return {
    close: () => {
      closed = true;
      if (timer) clearTimeout(timer);
      for (const w of watchers.values()) w.close();
      watchers.clear();
    },
  };
}
