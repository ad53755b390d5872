/**
 * The `meshgate` command. Exit codes: 0 success, 1 the spec (or check) failed, 2 usage error.
 */
import { chmod, mkdir, writeFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import type { ParseArgsConfig } from "node:util";
import { parseCommandLine, portFlag } from "../runtime/args.ts";
import type { LoadResult } from "../components/spec/load.ts";
import type { Diagnostic } from "../components/spec/errors.ts";
import type { TranslateResult } from "../components/translate/ir.ts";
import { fileProblem, pkiCommand } from "./pki.ts";
import { POLICY_COMMANDS } from "./policies.ts";

/** The spec machinery (zod schemas, YAML) loads on first use, so `--help` and usage errors start fast. */
async function specTools() {
  const [{ loadSpecFile }, { formatSpecError }, { translate }, { stringify }] = await Promise.all([
    import("../components/spec/load.ts"),
    import("../components/spec/errors.ts"),
    import("../components/translate/translate.ts"),
    import("yaml"),
  ]);
  return { loadSpecFile, formatSpecError, translate, stringify };
}

export interface Command {
  summary: string;
  usage: string;
  details: string;
  /** Positional arguments the command takes (default 1). */
  maxPositionals?: number;
  options: NonNullable<ParseArgsConfig["options"]>;
  run(positionals: string[], values: Record<string, unknown>, io: Io): Promise<number>;
}

export interface Io {
  out(text: string): void;
  err(text: string): void;
}

const processIo: Io = {
  out: (t) => process.stdout.write(t.endsWith("\n") ? t : `${t}\n`),
  err: (t) => process.stderr.write(t.endsWith("\n") ? t : `${t}\n`),
};

class UsageError extends Error {}

const help = { type: "boolean", short: "h" } as const;
/** `meshgate up`'s options (its code loads lazily from stacks/local/cli.ts). */
const LOCAL_UP_OPTIONS = {
  "gateway-port": { type: "string" },
  port: { type: "string" },
  "admin-port": { type: "string" },
  "state-dir": { type: "string" },
  "port-base": { type: "string" },
  "svid-ttl": { type: "string" },
  "no-prometheus": { type: "boolean" },
  watch: { type: "boolean" },
} as const;

const COMMANDS: Record<string, Command> = {
  validate: {
    summary: "check a spec: every error at once, with path, position and fix",
    usage: "meshgate validate SPEC [--format text|json]",
    details:
      "SPEC is a .yaml/.yml/.json file, or a .ts/.js module whose default export is defineMesh({...}).\n" +
      "Exit 0 when valid (warnings are printed but do not fail), 1 when invalid.",
    options: { format: { type: "string", default: "text" }, help },
    async run([file], values, io) {
      const format = formatOption(values.format, ["text", "json"]);
      const { loadSpecFile, translate } = await specTools();
      const loaded = await loadSpecFile(requireSpec(file));
      const translated = loaded.ok ? translate(loaded.spec) : undefined;
      if (format === "json") {
        io.out(
          JSON.stringify(
            {
              file: loaded.file,
              valid: loaded.ok,
              errors: loaded.errors,
              diagnostics: translated?.diagnostics ?? [],
              ...(translated ? { summary: summarize(translated) } : {}),
            },
            null,
            2,
          ),
        );
        return loaded.ok ? 0 : 1;
      }
      if (!loaded.ok || !translated) return printErrors(loaded, io, await specTools());
      printDiagnostics(translated.diagnostics, loaded.file, io);
      const s = summarize(translated);
      io.out(
        `✓ ${loaded.file} is valid: ${plural(s.services, "service")}, ${plural(s.gatewayRoutes, "gateway route")}, ` +
          `${plural(s.allowedEdges, "allowed edge")}, ${plural(s.warnings, "warning")}`,
      );
      return 0;
    },
  },
  translate: {
    summary: "print the IR (what to deploy, what every proxy does), or write the proxies' configs",
    usage: "meshgate translate SPEC [--format yaml|json] [--part all|infra|runtime|diagnostics] [--out DIR]",
    details:
      "Without --out, prints the chosen part. With --out DIR, writes DIR/gateway.json and\n" +
      "DIR/sidecars/<service>.json (the files `meshgate gateway|sidecar --config` read) and DIR/infra.json.",
    options: {
      format: { type: "string", default: "yaml" },
      part: { type: "string", default: "all" },
      out: { type: "string" },
      help,
    },
    async run([file], values, io) {
      const format = formatOption(values.format, ["yaml", "json"]);
      const part = formatOption(values.part, ["all", "infra", "runtime", "diagnostics"]);
      const tools = await specTools();
      const { loadSpecFile, translate, stringify } = tools;
      const loaded = await loadSpecFile(requireSpec(file));
      if (!loaded.ok) return printErrors(loaded, io, tools);
      const result = translate(loaded.spec);
      if (typeof values.out === "string") {
        const written = await writeConfigs(result, values.out);
        printDiagnostics(result.diagnostics, loaded.file, io);
        io.out(`wrote ${written.length} files to ${values.out}:\n${written.map((f) => `  ${f}`).join("\n")}`);
        return 0;
      }
      const value = part === "all" ? result : result[part as "infra" | "runtime" | "diagnostics"];
      io.out(
        format === "json"
          ? JSON.stringify(value, null, 2)
          : stringify(value, { aliasDuplicateObjects: false, lineWidth: 0 }),
      );
      return 0;
    },
  },
  observability: {
    summary: "write the Prometheus config, rules, rule tests and Grafana dashboards generated from a spec",
    usage:
      "meshgate observability SPEC --out DIR [--scrape kubernetes|static] [--target WORKLOAD=HOST:PORT …]\n" +
      "       [--runbook-url URL] [--prometheus-url URL]",
    details:
      "Writes DIR/prometheus/prometheus.yml (scrape jobs for every proxy's admin port and the rule file),\n" +
      "DIR/prometheus/rules/meshgate-<ns>.rules.yml (recording rules, SLO burn-rate alerts, operational alerts),\n" +
      "DIR/prometheus/tests/meshgate-<ns>.test.yml (check them: promtool test rules <that file>),\n" +
      "DIR/grafana/provisioning/{datasources,dashboards}/meshgate-<ns>.yml and DIR/grafana/dashboards/*.json.\n" +
      "--scrape kubernetes (the default) finds the proxies by pod labels; --scrape static needs one --target\n" +
      "per workload (repeat it for replicas): the host:port of its proxy's admin listener.",
    options: {
      out: { type: "string" },
      scrape: { type: "string", default: "kubernetes" },
      target: { type: "string", multiple: true },
      "runbook-url": { type: "string" },
      "prometheus-url": { type: "string" },
      help,
    },
    async run([file], values, io) {
      if (typeof values.out !== "string") throw new UsageError("missing --out DIR");
      const mode = formatOption(values.scrape, ["kubernetes", "static"]);
      const targets = (values.target as string[] | undefined) ?? [];
      if (mode === "kubernetes" && targets.length > 0)
        throw new UsageError(
          "--target is for --scrape static (Kubernetes finds the proxies by their pod labels)",
        );
      const addresses: Record<string, string[]> = {};
      for (const t of targets) {
        const m = /^([a-z0-9-]+)=([^\s=]+:[0-9]{1,5})$/.exec(t);
        if (!m) throw new UsageError(`--target must be WORKLOAD=HOST:PORT, got ${JSON.stringify(t)}`);
        (addresses[m[1]!] ??= []).push(m[2]!);
      }
      const tools = await specTools();
      const loaded = await tools.loadSpecFile(requireSpec(file));
      if (!loaded.ok) return printErrors(loaded, io, tools);
      const result = tools.translate(loaded.spec);
      const { observabilityFiles, ObservabilityInputError } =
        await import("../components/observability/index.ts");
      const known = new Set(result.infra.observability.metrics.targets.map((x) => x.workload));
      const unknown = Object.keys(addresses).filter((w) => !known.has(w));
      if (unknown.length > 0)
        throw new UsageError(
          `--target names no scraped workload: ${unknown.join(", ")} (known: ${[...known].join(", ")})`,
        );
      let bundle;
      try {
        bundle = observabilityFiles(result.infra, {
          scrape: mode === "static" ? { kind: "static", addresses } : { kind: "kubernetes" },
          ...(typeof values["runbook-url"] === "string" ? { runbookUrl: values["runbook-url"] } : {}),
          ...(typeof values["prometheus-url"] === "string"
            ? { grafana: { prometheusUrl: values["prometheus-url"] } }
            : {}),
        });
      } catch (err) {
        if (err instanceof ObservabilityInputError) throw new UsageError(err.message);
        throw err;
      }
      const written: string[] = [];
      for (const f of bundle.files) {
        const path = join(values.out, ...f.path.split("/"));
        await mkdir(dirname(path), { recursive: true });
        await writeFile(path, f.content);
        written.push(path);
      }
      for (const note of bundle.notes) io.err(`${loaded.file}: note: ${note}`);
      io.out(`wrote ${written.length} files to ${values.out}:\n${written.map((f) => `  ${f}`).join("\n")}`);
      return 0;
    },
  },
  synth: {
    summary: "write the Kubernetes manifests of a spec (the cdk8s chart): one YAML file per object",
    usage:
      "meshgate synth SPEC --out DIR [--target kubernetes] [--observability bundled|operator|none]\n" +
      "       [--observability-namespace NS] [--identities secrets|cert-manager] [--ca-secret NAME]\n" +
      "       [--runtime-image IMAGE]",
    details:
      "Writes DIR/<kind>-<name>.yaml for every object of the chart and DIR/kustomization.yaml listing them\n" +
      "(kubectl apply -k DIR). The output is byte-for-byte stable; files of an earlier synth that the chart no\n" +
      "longer holds are removed (only files meshgate wrote). Defaults come from the spec: --observability from\n" +
      "observability.metrics.backend, --identities from mesh.ca.provider (secrets: create the Secrets the\n" +
      "manifests name; cert-manager: --ca-secret names the CA Secret the Issuer signs with, default meshgate-ca).",
    options: {
      out: { type: "string" },
      target: { type: "string", default: "kubernetes" },
      observability: { type: "string" },
      "observability-namespace": { type: "string" },
      identities: { type: "string" },
      "ca-secret": { type: "string" },
      "runtime-image": { type: "string" },
      help,
    },
    async run([file], values, io) {
      if (typeof values.out !== "string") throw new UsageError("missing --out DIR");
      formatOption(values.target, ["kubernetes"]);
      const str = (k: string) => (typeof values[k] === "string" ? (values[k] as string) : undefined);
      const observability = str("observability");
      if (observability !== undefined) formatOption(observability, ["bundled", "operator", "none"]);
      const identities = str("identities");
      if (identities !== undefined) formatOption(identities, ["secrets", "cert-manager"]);
      if (str("ca-secret") !== undefined && identities !== "cert-manager")
        throw new UsageError("--ca-secret goes with --identities cert-manager");
      const tools = await specTools();
      const loaded = await tools.loadSpecFile(requireSpec(file));
      if (!loaded.ok) return printErrors(loaded, io, tools);
      const result = tools.translate(loaded.spec);
      const k8s = await import("../components/kubernetes/index.ts");
      let files;
      try {
        files = k8s.manifestFiles(
          k8s.synthesize(result, {
            ...(observability ? { observability: observability as "bundled" | "operator" | "none" } : {}),
            ...(str("observability-namespace")
              ? { observabilityNamespace: str("observability-namespace")! }
              : {}),
            ...(identities === "secrets" ? { identities: { mode: "secrets" as const } } : {}),
            ...(identities === "cert-manager"
              ? {
                  identities: {
                    mode: "cert-manager" as const,
                    caSecretName: str("ca-secret") ?? k8s.DEFAULT_CA_SECRET,
                  },
                }
              : {}),
            ...(str("runtime-image") ? { runtimeImage: str("runtime-image")! } : {}),
          }),
        );
      } catch (err) {
        if (err instanceof k8s.ChartInputError) throw new UsageError(err.message);
        throw err;
      }
      const written = await k8s.writeManifests(values.out, files);
      printDiagnostics(result.diagnostics, loaded.file, io);
      io.out(
        `wrote ${written.written} files to ${values.out} (kubectl apply -k ${values.out})` +
          (written.removed.length > 0 ? `; removed ${written.removed.join(", ")}` : ""),
      );
      return 0;
    },
  },
  gateway: {
    summary: "run the edge gateway from a RuntimeConfig file (what the gateway container runs)",
    usage: "meshgate gateway --config FILE [--host ADDR] [--admin-port PORT] [--workers N|auto]",
    details:
      "FILE is a gateway RuntimeConfig (meshgate translate SPEC --out DIR writes DIR/gateway.json).\n" +
      "Prints the listener and admin URLs once serving. Reloads on SIGHUP and when FILE changes (an invalid\n" +
      "file is rejected whole and the old config keeps serving); SIGTERM/SIGINT drain in-flight requests\n" +
      "and exit; a second signal forces the exit. --workers runs that many processes sharing the\n" +
      "listeners (SO_REUSEPORT); the default, auto, is one per CPU core.",
    options: {
      config: { type: "string" },
      workers: { type: "string", default: "auto" },
      host: { type: "string" },
      "admin-port": { type: "string" },
      help,
    },
    async run(_positionals, values, io) {
      if (typeof values.config !== "string") throw new UsageError("missing --config FILE");
      const adminPort =
        values["admin-port"] === undefined ? undefined : portFlag("admin-port", values["admin-port"]);
      const workersArg = String(values.workers);
      if (workersArg !== "auto" && !/^[1-9][0-9]{0,2}$/.test(workersArg)) {
        throw new UsageError(`--workers must be auto or a number from 1, got ${JSON.stringify(workersArg)}`);
      }
      const { availableParallelism } = await import("node:os");
      const workers = workersArg === "auto" ? availableParallelism() : Number(workersArg);
      const { runGateway } = await import("../runtime/gateway/main.ts");
      try {
        await runGateway({
          configPath: values.config,
          workers,
          ...(typeof values.host === "string" ? { host: values.host } : {}),
          ...(adminPort !== undefined ? { adminPort } : {}),
        });
      } catch (err) {
        const e = err as Error & { code?: string };
        io.err(`meshgate gateway: ${e.message}${e.code ? ` [${e.code}]` : ""}`);
        return 1;
      }
      return new Promise<number>(() => {}); // serves until a signal ends the process
    },
  },
  up: {
    summary: "run the whole mesh on this machine: gateway, a sidecar per service, the services, a dev CA",
    usage:
      "meshgate up SPEC [--gateway-port|--port N] [--admin-port N] [--state-dir DIR] [--port-base N] [--svid-ttl 10m] [--no-prometheus] [--watch]",
    details:
      "Starts each service (its local.command, or the built-in demo service), a sidecar per service with\n" +
      "SVIDs from a dev CA in the state dir (renewed at half-life), the gateway, and Prometheus when installed;\n" +
      "prints `gateway URL`, `admin URL` and curl lines once ready, and writes STATE_DIR/state.json.\n" +
      "`meshgate token` signs JWTs the local gateway accepts. SIGINT/SIGTERM/SIGHUP drain and stop every process;\n" +
      "a second signal kills them at once. With --watch, each saved change of SPEC is applied to the running\n" +
      "mesh: proxies reload in place, changed processes restart, new ones start. Details: docs/local.md.",
    async run([file], values, io) {
      const { upCommand, LocalUsageError } = await import("../stacks/local/cli.ts");
      return upCommand(file, values, io).catch((err: unknown) => {
        throw err instanceof LocalUsageError ? new UsageError(err.message) : err;
      });
    },
    options: { ...LOCAL_UP_OPTIONS, help },
  },
  token: {
    summary: "print a JWT signed by the dev issuer of `meshgate up` (local mode)",
    usage:
      "meshgate token [--sub S] [--scope S]… [--aud A] [--ttl 1h] [--claim NAME=VALUE]… [--state-dir DIR]",
    details:
      "Signs an ES256 token with the key in STATE_DIR/issuer (made by `meshgate up`): iss is the local\n" +
      "issuer, aud the first audience of the spec's first JWT provider unless --aud. Defaults: --sub alice,\n" +
      "--ttl 1h (at most 30d), --state-dir .meshgate.",
    maxPositionals: 0,
    async run(_positionals, values, io) {
      const { tokenCommand, LocalUsageError } = await import("../stacks/local/cli.ts");
      return tokenCommand(values, io).catch((err: unknown) => {
        throw err instanceof LocalUsageError ? new UsageError(err.message) : err;
      });
    },
    options: {
      sub: { type: "string", default: "alice" },
      scope: { type: "string", multiple: true },
      aud: { type: "string" },
      ttl: { type: "string", default: "1h" },
      claim: { type: "string", multiple: true },
      "state-dir": { type: "string", default: ".meshgate" },
      help,
    },
  },
  ...POLICY_COMMANDS,
  sidecar: {
    summary: "run a workload's sidecar proxy from a RuntimeConfig file (what the sidecar container runs)",
    usage:
      "meshgate sidecar --config FILE [--host ADDR] [--inbound-port PORT] [--outbound-port PORT] [--admin-port PORT]",
    details:
      "FILE is a sidecar RuntimeConfig (meshgate translate SPEC --out DIR writes DIR/sidecars/<service>.json).\n" +
      "Serves mTLS inbound (peers verified by SPIFFE ID, deny-by-default authorization, then the app on\n" +
      "127.0.0.1:appPort), the outbound proxy for the app on 127.0.0.1 (and a local port per declared\n" +
      "service), and the admin listener. Prints the URLs once serving; /ready is true once a valid identity\n" +
      "is loaded from the svid files (watched: new files are picked up without a restart). Reloads on SIGHUP\n" +
      "and when FILE changes; SIGTERM/SIGINT drain and exit; a second signal forces the exit.",
    options: {
      config: { type: "string" },
      host: { type: "string" },
      "inbound-port": { type: "string" },
      "outbound-port": { type: "string" },
      "admin-port": { type: "string" },
      help,
    },
    async run(_positionals, values, io) {
      if (typeof values.config !== "string") throw new UsageError("missing --config FILE");
      const ports: Record<string, number> = {};
      for (const name of ["inbound-port", "outbound-port", "admin-port"] as const) {
        const v = values[name];
        if (v !== undefined) ports[name] = portFlag(name, v);
      }
      const { runSidecar } = await import("../runtime/sidecar/main.ts");
      try {
        await runSidecar({
          configPath: values.config,
          ...(typeof values.host === "string" ? { host: values.host } : {}),
          ...(ports["inbound-port"] !== undefined ? { inboundPort: ports["inbound-port"] } : {}),
          ...(ports["outbound-port"] !== undefined ? { outboundPort: ports["outbound-port"] } : {}),
          ...(ports["admin-port"] !== undefined ? { adminPort: ports["admin-port"] } : {}),
        });
      } catch (err) {
        const e = err as Error & { code?: string };
        io.err(`meshgate sidecar: ${e.message}${e.code ? ` [${e.code}]` : ""}`);
        return 1;
      }
      return new Promise<number>(() => {}); // serves until a signal ends the process
    },
  },
};

/** Command groups with subcommands of their own (`meshgate pki init|issue|…`); they parse their arguments. */
const GROUPS: Record<string, { summary: string; dispatch(args: string[], io: Io): Promise<number> }> = {
  pki: pkiCommand,
};

function requireSpec(file: string | undefined): string {
  if (!file) throw new UsageError("missing SPEC (a .yaml, .json or .ts spec file)");
  return file;
}

function formatOption(value: unknown, allowed: string[]): string {
  if (typeof value !== "string" || !allowed.includes(value)) {
    throw new UsageError(`expected one of ${allowed.join(", ")}, got ${JSON.stringify(value)}`);
  }
  return value;
}

const plural = (n: number, word: string) => `${n} ${word}${n === 1 ? "" : "s"}`;

function printErrors(
  loaded: LoadResult,
  io: Io,
  { formatSpecError }: Awaited<ReturnType<typeof specTools>>,
): number {
  if (loaded.ok) return 0;
  for (const e of loaded.errors) io.err(formatSpecError(e, loaded.file));
  io.err(`✗ ${loaded.file}: ${plural(loaded.errors.length, "error")}`);
  return 1;
}

function printDiagnostics(diagnostics: Diagnostic[], file: string, io: Io): void {
  for (const d of diagnostics) {
    io.err(`${file}: ${d.severity}: ${d.path}: ${d.message} [${d.code}]\n    fix: ${d.hint}`);
  }
}

function summarize(r: TranslateResult) {
  return {
    services: r.runtime.sidecars.length,
    gatewayRoutes: r.runtime.gateway?.routes.length ?? 0,
    identities: r.infra.identities.length,
    allowedEdges: r.infra.edges.filter((e) => e.allowed).length,
    warnings: r.diagnostics.filter((d) => d.severity === "warning").length,
    infos: r.diagnostics.filter((d) => d.severity === "info").length,
  };
}

/**
 * `translate --out`: the IR and every proxy's RuntimeConfig. A config that holds a credential (a user or
 * password in a Redis, OTLP, JWKS or OIDC URL — what the chart puts in a Secret) is written readable by its
 * owner only (0600), and so is infra.json when any does (it carries the same URLs); a wider file left by an
 * earlier run is narrowed before the credential is written into it.
 */
async function writeConfigs(result: TranslateResult, dir: string): Promise<string[]> {
  const { configHoldsCredentials } = await import("../components/kubernetes/workloads.ts");
  await mkdir(join(dir, "sidecars"), { recursive: true });
  const configs = [...(result.runtime.gateway ? [result.runtime.gateway] : []), ...result.runtime.sidecars];
  const files: [string, unknown, boolean][] = [
    ["infra.json", result.infra, configs.some(configHoldsCredentials)],
  ];
  for (const c of configs)
    files.push([
      c.kind === "gateway" ? "gateway.json" : join("sidecars", `${c.name}.json`),
      c,
      configHoldsCredentials(c),
    ]);
  for (const [name, value, secret] of files) {
    const path = join(dir, name);
    const content = `${JSON.stringify(value, null, 2)}\n`;
    if (!secret) {
      await writeFile(path, content);
      continue;
    }
    await chmod(path, 0o600).catch((err: NodeJS.ErrnoException) => {
      if (err.code !== "ENOENT") throw err;
    });
    await writeFile(path, content, { mode: 0o600 });
  }
  return files.map(([name]) => join(dir, name));
}

function mainHelp(): string {
  const width = Math.max(...[...Object.keys(COMMANDS), ...Object.keys(GROUPS)].map((c) => c.length));
  return [
    "meshgate — one spec for the edge gateway, the sidecar mesh and observability",
    "",
    "Usage: meshgate <command> [options]",
    "",
    "Commands:",
    ...Object.entries(COMMANDS).map(([name, c]) => `  ${name.padEnd(width)}  ${c.summary}`),
    ...Object.entries(GROUPS).map(([name, g]) => `  ${name.padEnd(width)}  ${g.summary}`),
    "",
    "Run `meshgate <command> --help` for a command's options.",
  ].join("\n");
}

function commandHelp(name: string, c: Command): string {
  return [`meshgate ${name} — ${c.summary}`, "", `Usage: ${c.usage}`, "", c.details].join("\n");
}

export async function main(argv: string[], io: Io = processIo): Promise<number> {
  const [name, ...rest] = argv;
  if (!name || name === "--help" || name === "-h") {
    io.out(mainHelp());
    return name ? 0 : 2;
  }
  // `meshgate help [COMMAND [SUBCOMMAND]]`: the same text as `meshgate COMMAND [SUBCOMMAND] --help`.
  if (name === "help") {
    const [topic, ...sub] = rest;
    if (topic === undefined) {
      io.out(mainHelp());
      return 0;
    }
    if (COMMANDS[topic] && sub.length === 0) {
      io.out(commandHelp(topic, COMMANDS[topic]));
      return 0;
    }
    if (GROUPS[topic] && sub.length <= 1) return GROUPS[topic].dispatch([...sub, "--help"], io);
    io.err(`meshgate help: no command ${JSON.stringify([topic, ...sub].join(" "))}\n\n${mainHelp()}`);
    return 2;
  }
  const group = GROUPS[name];
  if (group) return group.dispatch(rest, io);
  const command = COMMANDS[name];
  if (!command) {
    io.err(`meshgate: unknown command ${JSON.stringify(name)}\n\n${mainHelp()}`);
    return 2;
  }
  try {
    const { values, positionals } = parseCommandLine({
      args: rest,
      options: command.options,
      allowPositionals: true,
    });
    if (values.help) {
      io.out(commandHelp(name, command));
      return 0;
    }
    const max = command.maxPositionals ?? 1;
    if (positionals.length > max)
      throw new UsageError(`unexpected argument ${JSON.stringify(positionals[max])}`);
    return await command.run(positionals, values, io);
  } catch (err) {
    if (err instanceof UsageError || (err as NodeJS.ErrnoException).code?.startsWith("ERR_PARSE_ARGS")) {
      io.err(`meshgate ${name}: ${(err as Error).message}\nUsage: ${command.usage}`);
      return 2;
    }
    const problem = fileProblem(err);
    if (problem !== null) {
      io.err(`meshgate ${name}: ${problem}`);
      return 1;
    }
    throw err;
  }
}
