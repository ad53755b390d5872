/**
 * `meshgate sidecar --config FILE`: the process a workload's sidecar container runs. Prints its listeners
 * and admin URL once serving; reloads on SIGHUP and when FILE changes (an invalid config is rejected
 * whole and the old one keeps serving; the identity files are watched on their own); drains and exits on
 * SIGTERM/SIGINT (a second signal forces the exit).
 */
import { urlHost } from "../net/acceptor.ts";
import { reloadAndDrainOnSignals } from "../contract/reload.ts";
import { readFile } from "node:fs/promises";
import { loadRuntimeConfig } from "../contract/load.ts";
import { processLoggers } from "../telemetry/logs.ts";
import { startSidecar } from "./server.ts";

export interface RunSidecarOptions {
  configPath: string;
  /** Address of the inbound and admin listeners (outbound ports always bind 127.0.0.1). */
  host?: string;
  inboundPort?: number;
  outboundPort?: number;
  adminPort?: number;
}

export async function runSidecar(opts: RunSidecarOptions): Promise<void> {
  const { log, access, accessDropped } = processLoggers("meshgate-sidecar", { proxy: "sidecar" });
  const config = loadRuntimeConfig(await readFile(opts.configPath, "utf8"), "sidecar");
  const sidecar = await startSidecar({
    config,
    configPath: opts.configPath,
    ...(opts.host ? { host: opts.host } : {}),
    ports: {
      ...(opts.inboundPort !== undefined ? { inbound: opts.inboundPort } : {}),
      ...(opts.outboundPort !== undefined ? { outbound: opts.outboundPort } : {}),
      ...(opts.adminPort !== undefined ? { admin: opts.adminPort } : {}),
    },
    logger: log,
    accessLogger: access,
    accessLogDropped: accessDropped,
  });
  const p = sidecar.ports;
  process.stdout.write(
    [
      `sidecar ${config.name} inbound ${config.mtls === "strict" ? "https" : "http+https"}://${urlHost(opts.host ?? "0.0.0.0")}:${p.inbound}`,
      `sidecar ${config.name} outbound http://127.0.0.1:${p.outbound}`,
      ...Object.entries(p.services).map(
        ([s, port]) => `sidecar ${config.name} to ${s} http://127.0.0.1:${port}`,
      ),
      ...Object.entries(p.external).map(
        ([e, port]) => `sidecar ${config.name} to external ${e} tcp://127.0.0.1:${port}`,
      ),
      `admin http://${urlHost(opts.host ?? "0.0.0.0")}:${p.admin}`,
      "",
    ].join("\n"),
  );

  reloadAndDrainOnSignals(opts.configPath, sidecar, log);
}
