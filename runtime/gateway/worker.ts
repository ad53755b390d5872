/**
 * A gateway worker process, forked by the primary (workers.ts). It asks the primary for the config to
 * start from (never read from a file), serves the listeners with SO_REUSEPORT and no admin listener, and
 * obeys the primary over IPC: reload a config text, render metrics, purge or invalidate cached URLs, drain.
 * In-process rate limits spend leases on the primary's buckets over the same channel. Signals are the
 * primary's to act on (SIGINT, SIGHUP ignored here; SIGTERM drains). It exits when the primary goes away.
 */
import { processLoggers } from "../telemetry/logs.ts";
import type { PurgeRequest } from "../cache/store.ts";
import { loadRuntimeConfig } from "../contract/load.ts";
import type { PreparedReload, ReloadResult } from "../contract/reload.ts";
import { LeaseClient, type LeaseReply, type LeaseRequest } from "../ratelimit/lease.ts";
import { startGateway } from "./server.ts";

export type ToWorker =
  /** The answer to `config_request`: the config every serving worker serves (the one to start from). */
  | { type: "config"; text: string }
  /** Reload at once (a worker that started on an older config than the one every other worker serves). */
  | { type: "reload"; id: number; text: string }
  /** Phase 1 of a coordinated reload: validate, check and build, but do not swap yet. */
  | { type: "prepare"; id: number; text: string }
  /** Phase 2: every worker prepared — swap in the reload prepared under `prepared`. */
  | { type: "commit"; id: number; prepared: number }
  /** Some worker refused or did not answer: drop the reload prepared under `prepared` (or being prepared). */
  | { type: "abort"; prepared: number; reason: string }
  | { type: "metrics"; id: number }
  | { type: "purge"; id: number; request: PurgeRequest }
  /** Another worker invalidated these URLs in its memory cache (RFC 9111 §4.4): do the same. */
  | { type: "invalidate"; host: string; urls: readonly string[] }
  /** OIDC sessions other workers ended by logout (cookie hash, expiry): refuse them here too. */
  | { type: "revoke_sessions"; entries: readonly (readonly [string, number])[] }
  | { type: "drain" }
  | LeaseReply;

export type FromWorker =
  /** Sent once at start: which config to serve (answered by `config`). */
  | { type: "config_request" }
  | { type: "ready"; listeners: Record<string, number>; hash: string }
  | LeaseRequest
  | { type: "reloaded"; id: number; ok: boolean; hash?: string; error?: string; code?: string }
  | { type: "prepared"; id: number; ok: boolean; hash?: string; error?: string; code?: string }
  | { type: "committed"; id: number; ok: boolean; hash?: string; error?: string; code?: string }
  | { type: "metrics"; id: number; text: string }
  | { type: "purged"; id: number; purged: number; error?: string }
  /** This worker invalidated these URLs in its memory cache: relay to the others. */
  | { type: "invalidated"; host: string; urls: readonly string[] }
  /** A logout in this worker ended an OIDC session: relay to the others. */
  | { type: "session_revoked"; key: string; until: number }
  | { type: "failed"; error: string; code?: string };

const send = (m: FromWorker) => process.send?.(m);

/** A reload result as the fields of a reply. */
function outcome(r: ReloadResult): { ok: boolean; hash?: string; error?: string; code?: string } {
  return r.ok ? { ok: true, hash: r.hash } : { ok: false, error: r.error, code: r.code };
}

/**
 * Invalidations to relay, by host, gathered over one turn of the event loop: under write load one
 * message per host per turn instead of one per request.
 */
let invalidations: Map<string, Set<string>> | null = null;

function relayInvalidation(host: string, urls: readonly string[]): void {
  if (invalidations === null) {
    invalidations = new Map();
    setImmediate(flushInvalidations);
  }
  let set = invalidations.get(host);
  if (set === undefined) invalidations.set(host, (set = new Set()));
  for (const url of urls) set.add(url);
}

function flushInvalidations(): void {
  const batch = invalidations;
  invalidations = null;
  if (batch === null) return;
  for (const [host, urls] of batch) send({ type: "invalidated", host, urls: [...urls] });
}

/** The config to start from, asked of the primary (it keeps the accepted config in memory, not on disk). */
function startingConfig(): Promise<string> {
  return new Promise((resolve, reject) => {
    if (!process.send || !process.connected) {
      reject(
        new Error("a gateway worker is started by `meshgate gateway --workers N`, which sends it its config"),
      );
      return;
    }
    const onMessage = (m: ToWorker) => {
      if (m.type !== "config") return;
      process.off("message", onMessage);
      resolve(m.text);
    };
    process.on("message", onMessage);
    send({ type: "config_request" });
  });
}

async function main(): Promise<void> {
  const host = process.env.MESHGATE_HOST || undefined;
  const index = Number(process.env.MESHGATE_WORKER ?? "0");
  const { log, access, accessDropped } = processLoggers("meshgate-gateway", {
    proxy: "gateway",
    worker: index,
  });
  let gateway: Awaited<ReturnType<typeof startGateway>>;
  const leases = new LeaseClient((m) => send(m));
  try {
    const config = loadRuntimeConfig(await startingConfig(), "gateway");
    gateway = await startGateway({
      config,
      ...(host ? { host } : {}),
      reusePort: true,
      admin: false,
      rateLimitLeases: leases,
      onCacheInvalidate: relayInvalidation,
      onSessionRevoked: (key, until) => send({ type: "session_revoked", key, until }),
      logger: log,
      accessLogger: access,
      accessLogDropped: accessDropped,
    });
  } catch (err) {
    const e = err as Error & { code?: string };
    send({ type: "failed", error: e.message, ...(e.code ? { code: e.code } : {}) });
    process.exit(1);
  }
  let draining = false;
  const drain = async () => {
    if (draining) return;
    draining = true;
    await gateway.drain();
    leases.close(); // unused tokens go back to the primary
    process.exit(0);
  };
  /** Reloads prepared and not yet committed or aborted, by the primary's prepare id. */
  const prepared = new Map<number, PreparedReload>();
  /** Prepare ids being prepared now, and those of them aborted meanwhile (the primary stopped waiting). */
  const preparing = new Set<number>();
  const abortedEarly = new Map<number, string>();
  process.on("message", (m: ToWorker) => {
    if (m.type === "ratelimit") {
      leases.receive(m);
    } else if (m.type === "reload") {
      void gateway.reload(m.text).then((r) => send({ type: "reloaded", id: m.id, ...outcome(r) }));
    } else if (m.type === "prepare") {
      preparing.add(m.id);
      void gateway.prepareReload(m.text).then(
        (p) => {
          preparing.delete(m.id);
          const reason = abortedEarly.get(m.id);
          abortedEarly.delete(m.id);
          if (reason !== undefined) {
            p.abort(reason);
            return;
          }
          if (p.result.ok && p.result.changed) prepared.set(m.id, p);
          send({ type: "prepared", id: m.id, ...outcome(p.result) });
        },
        (err: Error) => {
          preparing.delete(m.id);
          abortedEarly.delete(m.id);
          send({ type: "prepared", id: m.id, ok: false, error: err.message });
        },
      );
    } else if (m.type === "commit") {
      const p = prepared.get(m.prepared);
      prepared.delete(m.prepared);
      if (p === undefined) {
        // Unchanged (nothing to swap) or already dropped: report the hash serving now.
        send({ type: "committed", id: m.id, ok: true, hash: gateway.currentHash() });
        return;
      }
      void p.commit().then((r) => send({ type: "committed", id: m.id, ...outcome(r) }));
    } else if (m.type === "abort") {
      const p = prepared.get(m.prepared);
      prepared.delete(m.prepared);
      if (p) p.abort(m.reason);
      else if (preparing.has(m.prepared)) abortedEarly.set(m.prepared, m.reason);
    } else if (m.type === "metrics") {
      send({ type: "metrics", id: m.id, text: gateway.metrics.render() });
    } else if (m.type === "purge") {
      void gateway.purge(m.request).then(
        (purged) => send({ type: "purged", id: m.id, purged }),
        (err: Error) => send({ type: "purged", id: m.id, purged: 0, error: err.message }),
      );
    } else if (m.type === "invalidate") {
      void gateway.invalidateCached(m.host, m.urls);
    } else if (m.type === "revoke_sessions") {
      gateway.revokeSessions(m.entries);
    } else if (m.type === "drain") {
      void drain();
    }
  });
  process.on("disconnect", () => void drain());
  process.on("SIGTERM", () => void drain());
  // The primary decides: a terminal's Ctrl-C and hang-up reach the whole process group. A worker ending on
  // SIGHUP (Node's default) cost every worker a restart while the primary only reloaded.
  const primaryDecides = () => {};
  process.on("SIGINT", primaryDecides);
  process.on("SIGHUP", primaryDecides);
  send({ type: "ready", listeners: gateway.ports.listeners, hash: gateway.currentHash() });
}

void main();
