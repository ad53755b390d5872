/**
 * `meshgate gateway --config FILE`: the process containers run. Reloads on SIGHUP and when the file
 * changes (Kubernetes updates mounted ConfigMaps in place); drains and exits on SIGTERM/SIGINT.
 */
import { reloadAndDrainOnSignals } from "../contract/reload.ts";
import { urlHost } from "../net/acceptor.ts";
import { readFile } from "node:fs/promises";
import { processLoggers } from "../telemetry/logs.ts";
import { loadRuntimeConfig } from "../contract/load.ts";
import { startGateway } from "./server.ts";
import type { WorkerEntry } from "./workers.ts";
import type { GatewayRuntimeConfig } from "../contract/schema.ts";

export interface RunGatewayOptions {
  configPath: string;
  host?: string;
  adminPort?: number;
  /** Worker processes; 1 serves in this process. */
  workers?: number;
  /** What to fork for each worker (default: worker.ts; the bundled runtime forks itself). */
  workerEntry?: WorkerEntry;
}

export async function runGateway(opts: RunGatewayOptions): Promise<void> {
  if ((opts.workers ?? 1) > 1) {
    const { runGatewayWorkers } = await import("./workers.ts");
    await runGatewayWorkers({
      configPath: opts.configPath,
      workers: opts.workers!,
      ...(opts.host ? { host: opts.host } : {}),
      ...(opts.adminPort !== undefined ? { adminPort: opts.adminPort } : {}),
      ...(opts.workerEntry ? { workerEntry: opts.workerEntry } : {}),
      onReady: (listeners, admin, config) => printReady(listeners, admin, opts.host, config),
    });
    return;
  }
  const { log, access, accessDropped } = processLoggers("meshgate-gateway", { proxy: "gateway" });
  const config = loadRuntimeConfig(await readFile(opts.configPath, "utf8"), "gateway");
  const gateway = await startGateway({
    config,
    configPath: opts.configPath,
    ...(opts.host ? { host: opts.host } : {}),
    ...(opts.adminPort !== undefined ? { ports: { admin: opts.adminPort } } : {}),
    logger: log,
    accessLogger: access,
    accessLogDropped: accessDropped,
  });
  printReady(gateway.ports.listeners, gateway.ports.admin, opts.host, config);

  reloadAndDrainOnSignals(opts.configPath, gateway, log);
}

/**
 * The start lines: the address the listeners and the admin listener are bound to (--host, default every
 * IPv4 address), each listener with its own scheme (a TLS listener's URL is https://).
 */
function readyLines(
  listeners: Record<string, number>,
  admin: number,
  host: string | undefined,
  config: Pick<GatewayRuntimeConfig, "listeners">,
): string {
  const at = urlHost(host ?? "0.0.0.0");
  const scheme = new Map(config.listeners.map((l) => [l.name, l.protocol]));
  return `${Object.entries(listeners)
    .map(([name, port]) => `gateway ${name} ${scheme.get(name) ?? "http"}://${at}:${port}`)
    .join("\n")}\nadmin http://${at}:${admin}\n`;
}

function printReady(
  listeners: Record<string, number>,
  admin: number,
  host: string | undefined,
  config: Pick<GatewayRuntimeConfig, "listeners">,
): void {
  process.stdout.write(readyLines(listeners, admin, host, config));
}
