/**
 * A gateway worker process, forked by the primary (workers.ts). It serves the listeners with
 * SO_REUSEPORT and no admin listener, and obeys the primary over IPC: reload a config text, render
 * metrics, purge or invalidate cached URLs, drain. In-process rate limits spend leases on the primary's buckets over the same channel.
 * It exits when the primary goes away.
 */
import { readFile } from "node:fs/promises";
import { processLoggers } from "../telemetry/logs.ts";
import type { PurgeRequest } from "../cache/store.ts";
import { loadRuntimeConfig } from "../contract/load.ts";
import { LeaseClient, type LeaseReply, type LeaseRequest } from "../ratelimit/lease.ts";
import { startGateway } from "./server.ts";

export type ToWorker =
  | { type: "reload"; id: number; text: string }
  | { type: "metrics"; id: number }
  | { type: "purge"; id: number; request: PurgeRequest }
  /** Another worker invalidated these URLs in its memory cache (RFC 9111 §4.4): do the same. */
  | { type: "invalidate"; host: string; urls: readonly string[] }
  | { type: "drain" }
  | LeaseReply;

export type FromWorker =
  | { type: "ready"; listeners: Record<string, number> }
  | LeaseRequest
  | { type: "reloaded"; id: number; ok: boolean; hash?: string; error?: string; code?: string }
  | { type: "metrics"; id: number; text: string }
  | { type: "purged"; id: number; purged: number; error?: string }
  /** This worker invalidated these URLs in its memory cache: relay to the others. */
  | { type: "invalidated"; host: string; urls: readonly string[] }
  | { type: "failed"; error: string; code?: string };

const send = (m: FromWorker) => process.send?.(m);

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

async function main(): Promise<void> {
  const configPath = process.env.MESHGATE_CONFIG ?? "";
  const host = process.env.MESHGATE_HOST || undefined;
  const index = Number(process.env.MESHGATE_WORKER ?? "0");
  const { log, access } = processLoggers("meshgate-gateway", { proxy: "gateway", worker: index });
  let gateway: Awaited<ReturnType<typeof startGateway>>;
  const leases = new LeaseClient((m) => send(m));
  try {
    const config = loadRuntimeConfig(await readFile(configPath, "utf8"), "gateway");
    gateway = await startGateway({
      config,
      configPath,
      ...(host ? { host } : {}),
      reusePort: true,
      admin: false,
      rateLimitLeases: leases,
      onCacheInvalidate: relayInvalidation,
      logger: log,
      accessLogger: access,
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
  process.on("message", (m: ToWorker) => {
    if (m.type === "ratelimit") {
      leases.receive(m);
    } else if (m.type === "reload") {
      void gateway
        .reload(m.text)
        .then((r) =>
          send(
            r.ok
              ? { type: "reloaded", id: m.id, ok: true, hash: r.hash }
              : { type: "reloaded", id: m.id, ok: false, error: r.error, code: r.code },
          ),
        );
    } else if (m.type === "metrics") {
      send({ type: "metrics", id: m.id, text: gateway.metrics.render() });
    } else if (m.type === "purge") {
      void gateway.purge(m.request).then(
        (purged) => send({ type: "purged", id: m.id, purged }),
        (err: Error) => send({ type: "purged", id: m.id, purged: 0, error: err.message }),
      );
    } else if (m.type === "invalidate") {
      void gateway.invalidateCached(m.host, m.urls);
    } else if (m.type === "drain") {
      void drain();
    }
  });
  process.on("disconnect", () => void drain());
  process.on("SIGTERM", () => void drain());
  process.on("SIGINT", () => {
    /* the primary decides; a terminal Ctrl-C reaches the whole process group */
  });
  send({ type: "ready", listeners: gateway.ports.listeners });
}

void main();
