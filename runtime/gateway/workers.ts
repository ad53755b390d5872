/**
 * The gateway primary for several workers: forks one worker process per core (each binds the listeners
 * with SO_REUSEPORT, so the kernel spreads connections), serves the admin listener itself (merged
 * metrics, readiness of all workers, the config), reloads every worker together — a config every worker
 * prepared is committed on all, one any worker refuses (or does not answer for) is aborted on all, and an
 * invalid config is rejected by the primary before any worker sees it —, restarts a crashed worker with backoff, drains every
 * worker on SIGTERM/SIGINT, and relays cache invalidations between workers (each worker's memory cache is
 * its own). It also owns the in-process rate-limit buckets: workers spend leases on them over IPC
 * (ratelimit/lease.ts), so a limit holds across all workers together.
 */
import { fork, type ChildProcess } from "node:child_process";
import { readFile } from "node:fs/promises";
import type { AddressInfo } from "node:net";
import pino from "pino";
import { loadRuntimeConfig } from "../contract/load.ts";
import {
  CONFIG_HASH_KEY_ENV,
  configHashKeyHex,
  exposedConfigHash,
  exposedReloadResult,
  maskConfigHash,
} from "../contract/exposed-hash.ts";
import { watchConfigFile } from "../contract/reload.ts";
import { LeaseServer, type LeaseServerOptions } from "../ratelimit/lease.ts";
import { rateLimitMode } from "../ratelimit/limiter.ts";
import type { GatewayRuntimeConfig } from "../contract/schema.ts";
import { mergeExpositions } from "../telemetry/merge.ts";
import { MetricsRegistry, registerReloadsCounter } from "../telemetry/metrics.ts";
import { createAdminServer } from "./admin.ts";
import { redactConfig } from "./redact.ts";
import type { FromWorker, ToWorker } from "./worker.ts";

export interface WorkersOptions {
  configPath: string;
  workers: number;
  host?: string;
  adminPort?: number;
  /**
   * What to fork for a worker: a module and its arguments. Default: ./worker.ts beside this file. The
   * bundled runtime (runtime/cli.ts → dist/meshgate.js) forks itself with `gateway-worker`.
   */
  workerEntry?: WorkerEntry;
  /** How long the primary waits for each worker's answer to a reload phase (default 5 s). */
  reloadTimeoutMs?: number;
  /** Called once every worker serves, with the listener ports and the admin port. */
  onReady?: (listeners: Record<string, number>, admin: number, config: GatewayRuntimeConfig) => void;
}

/** A module to fork as a gateway worker, with its arguments. */
export interface WorkerEntry {
  module: string | URL;
  args: string[];
}

/** How long the primary waits for each worker to prepare, then to commit, a reload. */
const RELOAD_TIMEOUT_MS = 5000;

interface Slot {
  index: number;
  child: ChildProcess | null;
  ready: boolean;
  restarts: number;
  listeners: Record<string, number>;
}

export async function runGatewayWorkers(opts: WorkersOptions): Promise<void> {
  const log = pino({ name: "meshgate-gateway", base: { proxy: "gateway", role: "primary" } });
  const initialText = await readFile(opts.configPath, "utf8");
  let config: GatewayRuntimeConfig = loadRuntimeConfig(initialText, "gateway");
  // Workers start from the config the workers serve, not from the file: a worker restarted after a crash
  // must not pick up a config the others refused (a new port, say). The primary keeps that text in memory
  // (replaced only when every worker accepted a reload) and hands it to each worker that asks over the IPC
  // channel — never a copy on disk, which a killed primary would leave behind with the config's secrets.
  let acceptedText = initialText;
  const metrics = new MetricsRegistry({ prefix: "meshgate_" });
  const mWorkers = metrics.gauge("gateway_workers_ready", "Worker processes serving.");
  const mRestarts = metrics.counter(
    "gateway_worker_restarts_total",
    "Worker processes restarted after an unexpected exit.",
  );
  const mReloads = registerReloadsCounter(metrics, "gateway");
  const slots: Slot[] = Array.from({ length: opts.workers }, (_, index) => ({
    index,
    child: null,
    ready: false,
    restarts: 0,
    listeners: {},
  }));
  let stopping = false;
  let nextId = 1;
  const leases = primaryLeases(metrics);
  const leaseSweep = setInterval(() => leases.sweep(), 60_000);
  leaseSweep.unref();
  const logRateLimitMode = () => {
    try {
      const mode = rateLimitMode(config, "leased");
      log.info(
        {
          event: "ratelimit_mode",
          store: mode.store,
          fleetDivisor: mode.fleetDivisor,
          workers: mode.workers,
          routes: mode.routes.length,
        },
        mode.summary,
      );
    } catch {
      // a limit that cannot be counted: the workers refuse the config and say why
    }
  };
  const pending = new Map<number, (m: FromWorker) => void>();
  /**
   * OIDC sessions a worker ended by logout (cookie hash → expiry): relayed to the other workers at once,
   * and given to a worker that (re)starts later. Bounded like each worker's own set.
   */
  const revokedSessions = new Map<string, number>();
  const liveRevocations = (): [string, number][] => {
    const now = Date.now();
    for (const [k, until] of revokedSessions) if (until <= now) revokedSessions.delete(k);
    return [...revokedSessions];
  };
  let readyResolve: (() => void) | null = null;
  let failed: ((e: Error) => void) | null = null;
  const allReady = new Promise<void>((resolve, reject) => {
    readyResolve = resolve;
    failed = reject;
  });

  const start = (slot: Slot) => {
    const entry = opts.workerEntry ?? { module: new URL("./worker.ts", import.meta.url), args: [] };
    const child = fork(entry.module, entry.args, {
      env: {
        ...process.env,
        MESHGATE_HOST: opts.host ?? "",
        MESHGATE_WORKER: String(slot.index),
        // One gateway shows one config hash: its workers mask a credential-holding config's hash with its key.
        [CONFIG_HASH_KEY_ENV]: configHashKeyHex(),
      },
      stdio: ["ignore", "inherit", "inherit", "ipc"],
    });
    slot.child = child;
    child.on("message", (m: FromWorker) => {
      if (m.type === "config_request") {
        if (child.connected) child.send({ type: "config", text: acceptedText } satisfies ToWorker);
      } else if (m.type === "ready") {
        slot.ready = true;
        slot.listeners = m.listeners;
        // Started from a copy a reload replaced meanwhile: bring it to the config the others serve. A
        // worker that cannot apply it is restarted, so it starts from that config (the copy now says it).
        if (m.hash !== config.hash && child.connected) catchUp(slot, child);
        // A worker that (re)started after some logouts learns them.
        const revoked = liveRevocations();
        if (revoked.length && child.connected) child.send({ type: "revoke_sessions", entries: revoked });
        mWorkers.set(slots.filter((s) => s.ready).length);
        if (slots.every((s) => s.ready)) readyResolve?.();
      } else if (m.type === "ratelimit") {
        if (child.connected) child.send(leases.handle(m, slots.filter((s) => s.child?.connected).length));
      } else if (m.type === "invalidated") {
        // Each worker's memory cache is its own: an invalidation reaches the others (best effort, at
        // once; a worker that is restarting starts with an empty cache anyway).
        const relay: ToWorker = { type: "invalidate", host: m.host, urls: m.urls };
        for (const other of slots) if (other !== slot && other.child?.connected) other.child.send(relay);
      } else if (m.type === "session_revoked") {
        // A logout ends the session on every worker, not only on the one that served it.
        if (revokedSessions.size >= 100_000) liveRevocations();
        while (revokedSessions.size >= 100_000) revokedSessions.delete(revokedSessions.keys().next().value!);
        revokedSessions.set(m.key, m.until);
        const relay: ToWorker = { type: "revoke_sessions", entries: [[m.key, m.until]] };
        for (const other of slots) if (other !== slot && other.child?.connected) other.child.send(relay);
      } else if (m.type === "failed") {
        failed?.(Object.assign(new Error(m.error), m.code ? { code: m.code } : {}));
      } else if ("id" in m) {
        pending.get(m.id)?.(m);
      }
    });
    child.on("exit", (code, signal) => {
      slot.ready = false;
      slot.child = null;
      mWorkers.set(slots.filter((s) => s.ready).length);
      if (stopping) return;
      slot.restarts++;
      mRestarts.inc();
      const delay = Math.min(30_000, 500 * 2 ** Math.min(slot.restarts - 1, 6));
      log.error(
        { event: "worker_exited", worker: slot.index, code, signal, restartInMs: delay },
        "worker exited; restarting",
      );
      setTimeout(() => {
        if (!stopping) start(slot);
      }, delay).unref();
    });
  };
  /** Sends a worker that became ready on an older config the accepted one; restarts it if it does not apply it. */
  const catchUp = (slot: Slot, child: ChildProcess) => {
    const id = nextId++;
    const wanted = config;
    const want = wanted.hash;
    const behind = (why: string) => {
      log.error(
        { event: "worker_behind", worker: slot.index, hash: exposedConfigHash(wanted), message: why },
        "a worker did not apply the accepted config; restarting it from that config",
      );
      child.kill("SIGKILL");
    };
    const waitMs = opts.reloadTimeoutMs ?? RELOAD_TIMEOUT_MS;
    const timer = setTimeout(() => {
      pending.delete(id);
      if (slot.child === child) behind(`did not answer within ${waitMs} ms`);
    }, waitMs);
    pending.set(id, (reply) => {
      clearTimeout(timer);
      pending.delete(id);
      const r = reply as Extract<FromWorker, { type: "reloaded" }>;
      if (!r.ok) behind(r.error ?? "refused it");
      else if (r.hash !== want && r.hash !== config.hash)
        behind(`serves ${r.hash === undefined ? "no config" : maskConfigHash(r.hash)}`);
      else
        log.info({
          event: "worker_caught_up",
          worker: slot.index,
          hash: exposedConfigHash(r.hash === want ? wanted : config),
        });
    });
    child.send({ type: "reload", id, text: acceptedText } satisfies ToWorker);
  };
  for (const slot of slots) start(slot);
  await allReady;

  /** One worker's answer to a question, or why there is none (it did not answer in time, or exited). */
  type Answer<T> = { slot: Slot; id: number; reply: T } | { slot: Slot; id: number; error: string };
  /** Asks the given workers (default: every connected one); never rejects — each answer says. */
  const askEach = <T extends FromWorker>(
    make: (id: number, slot: Slot) => ToWorker,
    timeoutMs = 5000,
    among: readonly Slot[] = slots.filter((s) => s.child?.connected),
  ): Promise<Answer<T>[]> =>
    Promise.all(
      among.map(
        (slot) =>
          new Promise<Answer<T>>((resolve) => {
            const id = nextId++;
            const child = slot.child;
            if (!child?.connected) {
              resolve({ slot, id, error: `worker ${slot.index} is not running` });
              return;
            }
            const timer = setTimeout(() => {
              pending.delete(id);
              resolve({ slot, id, error: `worker ${slot.index} did not answer within ${timeoutMs} ms` });
            }, timeoutMs);
            pending.set(id, (m) => {
              clearTimeout(timer);
              pending.delete(id);
              resolve({ slot, id, reply: m as T });
            });
            child.send(make(id, slot));
          }),
      ),
    );
  /** Asks every connected worker; rejects with the first missing answer. */
  const ask = async <T extends FromWorker>(make: (id: number) => ToWorker, timeoutMs = 5000): Promise<T[]> =>
    (await askEach<T>(make, timeoutMs)).map((a) => {
      if ("error" in a) throw new Error(a.error);
      return a.reply;
    });

  type Outcome = Extract<FromWorker, { type: "prepared" | "committed" }>;
  /**
   * A reload every serving worker applies, or none: each worker first prepares the config (validates,
   * checks, builds — without swapping it in); only when all prepared it does the primary make it the
   * accepted config (its own /config, the copy restarted workers start from) and tell each to commit.
   * One refusal or one worker that does not answer aborts it on all. A worker whose swap still fails is
   * restarted, so it starts from the accepted config like the others.
   */
  const reloadOnce = async (): Promise<{ ok: boolean; hash?: string; error?: string }> => {
    let text: string;
    let next: GatewayRuntimeConfig;
    try {
      text = await readFile(opts.configPath, "utf8");
      next = loadRuntimeConfig(text, "gateway");
    } catch (err) {
      mReloads.labels("gateway", "failure").inc();
      log.error(
        { event: "reload_rejected", message: (err as Error).message },
        "config rejected; workers keep the previous one",
      );
      return { ok: false, error: (err as Error).message };
    }
    const serving = slots.filter((s) => s.ready && s.child?.connected);
    const prepared = await askEach<Outcome>(
      (id) => ({ type: "prepare", id, text }),
      opts.reloadTimeoutMs ?? RELOAD_TIMEOUT_MS,
      serving,
    );
    const refusal = prepared.find((p) => "error" in p || !p.reply.ok);
    if (refusal) {
      const reason =
        "error" in refusal
          ? refusal.error
          : `worker ${refusal.slot.index} refused it: ${refusal.reply.error ?? "no reason given"}`;
      for (const p of prepared)
        if (p.slot.child?.connected)
          p.slot.child.send({ type: "abort", prepared: p.id, reason } satisfies ToWorker);
      mReloads.labels("gateway", "failure").inc();
      log.error(
        {
          event: "reload_rejected",
          hash: exposedConfigHash(next),
          ...("error" in refusal ? {} : { code: refusal.reply.code }),
          message: reason,
        },
        "config rejected; every worker keeps the previous one",
      );
      return { ok: false, error: reason };
    }
    // Every worker prepared it: it is the accepted config from here on (a worker restarted now starts from it).
    config = next;
    acceptedText = text;
    const committed = await askEach<Outcome>(
      (id, slot) => ({ type: "commit", id, prepared: prepared.find((p) => p.slot === slot)!.id }),
      opts.reloadTimeoutMs ?? RELOAD_TIMEOUT_MS,
      prepared.map((p) => p.slot),
    );
    const lagging = committed.filter((c) => "error" in c || !c.reply.ok || c.reply.hash !== next.hash);
    for (const c of lagging) {
      const why =
        "error" in c
          ? c.error
          : (c.reply.error ??
            `serves ${c.reply.hash === undefined ? "no config" : maskConfigHash(c.reply.hash)}`);
      log.error(
        { event: "worker_behind", worker: c.slot.index, hash: exposedConfigHash(next), message: why },
        "a worker did not apply the accepted config; restarting it from that config",
      );
      c.slot.child?.kill("SIGKILL");
    }
    mReloads.labels("gateway", lagging.length === 0 ? "success" : "failure").inc();
    log.info({
      event: "reloaded",
      hash: exposedConfigHash(next),
      workers: committed.length,
      restarted: lagging.length,
    });
    logRateLimitMode();
    return lagging.length === 0
      ? { ok: true, hash: next.hash }
      : { ok: false, hash: next.hash, error: `${lagging.length} worker(s) restarted to apply it` };
  };
  // Reloads run one after another (a file change and a SIGHUP at once); an unexpected throw is a refusal.
  let reloading: Promise<unknown> = Promise.resolve();
  const reload = (): Promise<{ ok: boolean; hash?: string; error?: string }> => {
    const run = reloading.then(reloadOnce, reloadOnce).catch((err: Error) => {
      mReloads.labels("gateway", "failure").inc();
      log.error(
        { event: "reload_rejected", message: err.message },
        "reload failed; workers keep their config",
      );
      return { ok: false, error: err.message };
    });
    reloading = run;
    return run;
  };

  const admin = createAdminServer({
    ready: () => !stopping && slots.every((s) => s.ready),
    config: () => redactConfig(config),
    reload: () => reload().then((r) => exposedReloadResult(r, config)),
    hosts: () => config.admin.hosts,
    // Every worker keeps its own memory cache: the purge goes to each, and the counts add up. With the
    // Redis store each worker purges the shared store (atomic per batch: the first one finds the entries).
    purge: async (request) => {
      const parts = await ask<Extract<FromWorker, { type: "purged" }>>((id) => ({
        type: "purge",
        id,
        request,
      }));
      const failed = parts.find((p) => p.error !== undefined);
      if (failed) throw new Error(failed.error);
      return parts.reduce((n, p) => n + p.purged, 0);
    },
    // Only serving workers are asked — a replacement still starting cannot answer yet, and waiting for it
    // failed the whole scrape —, and each worker's series carry its own index: numbered by position among
    // those answering, worker 1's counters were shown as worker="0" while worker 0 restarted (a jump
    // Prometheus reads as traffic, then a reset).
    metrics: async () => {
      const answers = await askEach<Extract<FromWorker, { type: "metrics" }>>(
        (id) => ({ type: "metrics", id }),
        2000,
        slots.filter((s) => s.ready && s.child?.connected),
      );
      // The primary's own families first, merged with the workers' (config_reloads_total is both):
      // appended as a second exposition, each shared family had two HELP and TYPE lines.
      const parts: { label: string | null; text: string }[] = [{ label: null, text: metrics.render() }];
      for (const a of answers) {
        if ("error" in a) throw new Error(a.error);
        parts.push({ label: String(a.slot.index), text: a.reply.text });
      }
      return mergeExpositions(parts);
    },
  });
  await new Promise<void>((resolve, reject) => {
    admin.once("error", reject);
    admin.listen(opts.adminPort ?? config.admin.port, opts.host ?? "0.0.0.0", () => resolve());
  });
  const adminPort = (admin.address() as AddressInfo).port;
  logRateLimitMode();
  log.info({
    event: "started",
    workers: slots.length,
    listeners: slots[0]!.listeners,
    admin: adminPort,
    hash: exposedConfigHash(config),
  });
  // The start lines last: whoever waits for them (a supervisor, a test) then has every line before.
  opts.onReady?.(slots[0]!.listeners, adminPort, config);

  const watcher = watchConfigFile(opts.configPath, () => void reload());
  process.on("SIGHUP", () => void reload());
  const stop = (signal: string) => {
    if (stopping) {
      log.warn({ event: "forced_exit", signal });
      for (const s of slots) s.child?.kill("SIGKILL");
      process.exit(1);
    }
    stopping = true;
    watcher.close();
    const exits = slots
      .filter((s) => s.child)
      .map((s) => new Promise<void>((r) => s.child!.once("exit", () => r())));
    for (const s of slots) s.child?.send({ type: "drain" } satisfies ToWorker);
    void Promise.race([
      Promise.all(exits),
      new Promise((r) => setTimeout(r, config.limits.drainTimeoutMs + 5000)),
    ]).then(() => {
      admin.close();
      log.info({ event: "stopped" });
      process.exit(0);
    });
  };
  process.on("SIGTERM", () => stop("SIGTERM"));
  process.on("SIGINT", () => stop("SIGINT"));
}

/**
 * The primary's rate-limit buckets (every worker spends leases taken from them), with their evictions
 * at the key cap counted in the primary's own `ratelimit_evictions_total` — with `--workers` the workers
 * hold no buckets, so the family their expositions carry never moved. Its series carry no `worker`
 * label when /metrics merges the workers' in: the buckets are the primary's.
 */
export function primaryLeases(
  metrics: MetricsRegistry,
  options: Omit<LeaseServerOptions, "onEvict"> = {},
): LeaseServer {
  const evictions = metrics.counter(
    "ratelimit_evictions_total",
    "In-process buckets dropped at the key cap: idle (full, nothing lost) or active.",
    ["proxy", "kind"],
  );
  return new LeaseServer({ ...options, onEvict: (kind) => evictions.labels("gateway", kind).inc() });
}
