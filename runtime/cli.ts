/**
 * The data plane's own command line: `gateway` and `sidecar` only, with the same options and exit codes
 * as `meshgate gateway|sidecar` (cli/main.ts), but without the spec tooling, Pulumi or cdk8s. It is the
 * entry of the runtime bundle (`npm run build` → dist/meshgate.js) that the runtime image runs:
 *
 *   node /app/meshgate.js gateway --config /etc/meshgate/config.json
 *   node /app/meshgate.js sidecar --config /etc/meshgate/config.json
 *
 * A multi-worker gateway forks this same file with the internal `gateway-worker` command, so the bundle
 * is one file. Exit codes: 0 done, 1 the process could not start (bad config, port in use), 2 usage.
 */
import { availableParallelism } from "node:os";
import { fileURLToPath } from "node:url";
import { OptionValueError, parseCommandLine, portFlag } from "./args.ts";

const USAGE = {
  gateway: "gateway --config FILE [--host ADDR] [--admin-port PORT] [--workers N|auto]",
  sidecar:
    "sidecar --config FILE [--host ADDR] [--inbound-port PORT] [--outbound-port PORT] [--admin-port PORT]",
} as const;

/** The internal command a gateway primary forks its workers with. */
export const WORKER_COMMAND = "gateway-worker";

export interface RuntimeIo {
  out(text: string): void;
  err(text: string): void;
}

const processIo: RuntimeIo = {
  out: (t) => process.stdout.write(t.endsWith("\n") ? t : `${t}\n`),
  err: (t) => process.stderr.write(t.endsWith("\n") ? t : `${t}\n`),
};

class UsageError extends Error {}

const HELP = [
  "meshgate runtime — the gateway and sidecar processes",
  "",
  "Usage:",
  `  meshgate ${USAGE.gateway}`,
  `  meshgate ${USAGE.sidecar}`,
  "",
  "FILE is a RuntimeConfig (meshgate translate SPEC --out DIR writes DIR/gateway.json and",
  "DIR/sidecars/<service>.json). Both reload on SIGHUP and when FILE changes, and drain on SIGTERM/SIGINT.",
].join("\n");

const port = (name: string, value: unknown) => portFlag(name, value);

/**
 * Runs a runtime command. Resolves with the exit code when the command ends by itself (usage errors,
 * start failures, help); a serving process never resolves — signals end it.
 */
export async function runtimeMain(argv: readonly string[], io: RuntimeIo = processIo): Promise<number> {
  const [command, ...rest] = argv;
  if (command === WORKER_COMMAND) {
    await import("./gateway/worker.ts"); // serves until the primary tells it to drain
    return new Promise<number>(() => {});
  }
  if (!command || command === "--help" || command === "-h" || command === "help") {
    io.out(HELP);
    return command ? 0 : 2;
  }
  if (command !== "gateway" && command !== "sidecar") {
    io.err(
      `meshgate: unknown command ${JSON.stringify(command)} (this runtime build has gateway and sidecar)\n\n${HELP}`,
    );
    return 2;
  }
  try {
    const { values, positionals } = parseCommandLine({
      args: [...rest],
      allowPositionals: true,
      options:
        command === "gateway"
          ? {
              config: { type: "string" },
              host: { type: "string" },
              "admin-port": { type: "string" },
              workers: { type: "string", default: "auto" },
              help: { type: "boolean", short: "h" },
            }
          : {
              config: { type: "string" },
              host: { type: "string" },
              "inbound-port": { type: "string" },
              "outbound-port": { type: "string" },
              "admin-port": { type: "string" },
              help: { type: "boolean", short: "h" },
            },
    });
    if (values.help) {
      io.out(`Usage: meshgate ${USAGE[command]}`);
      return 0;
    }
    if (positionals.length > 0) throw new UsageError(`unexpected argument ${JSON.stringify(positionals[0])}`);
    if (typeof values.config !== "string") throw new UsageError("missing --config FILE");
    const host = typeof values.host === "string" ? { host: values.host } : {};
    const admin = values["admin-port"] !== undefined ? port("admin-port", values["admin-port"]) : undefined;
    try {
      if (command === "gateway") {
        const workersArg = String(values.workers);
        if (workersArg !== "auto" && !/^[1-9][0-9]{0,2}$/.test(workersArg))
          throw new UsageError(
            `--workers must be auto or a number from 1, got ${JSON.stringify(workersArg)}`,
          );
        const { runGateway } = await import("./gateway/main.ts");
        await runGateway({
          configPath: values.config,
          workers: workersArg === "auto" ? availableParallelism() : Number(workersArg),
          workerEntry: { module: fileURLToPath(import.meta.url), args: [WORKER_COMMAND] },
          ...host,
          ...(admin !== undefined ? { adminPort: admin } : {}),
        });
      } else {
        const v = values as Record<string, unknown>;
        const inbound = v["inbound-port"] !== undefined ? port("inbound-port", v["inbound-port"]) : undefined;
        const outbound =
          v["outbound-port"] !== undefined ? port("outbound-port", v["outbound-port"]) : undefined;
        const { runSidecar } = await import("./sidecar/main.ts");
        await runSidecar({
          configPath: values.config,
          ...host,
          ...(inbound !== undefined ? { inboundPort: inbound } : {}),
          ...(outbound !== undefined ? { outboundPort: outbound } : {}),
          ...(admin !== undefined ? { adminPort: admin } : {}),
        });
      }
    } catch (err) {
      if (err instanceof UsageError || err instanceof OptionValueError) throw err;
      const e = err as Error & { code?: string };
      io.err(`meshgate ${command}: ${e.message}${e.code ? ` [${e.code}]` : ""}`);
      return 1;
    }
    return new Promise<number>(() => {}); // serves until a signal ends the process
  } catch (err) {
    if (err instanceof UsageError || (err as NodeJS.ErrnoException).code?.startsWith("ERR_PARSE_ARGS")) {
      io.err(`meshgate ${command}: ${(err as Error).message}\nUsage: meshgate ${USAGE[command]}`);
      return 2;
    }
    throw err;
  }
}

if (import.meta.main) {
  const code = await runtimeMain(process.argv.slice(2));
  process.exit(code);
}
