/**
 * Shared helpers of the observability tests: specs to IR, the generated bundle on disk, and promtool (the
 * real one: `.ci/run` installs the prometheus Debian package).
 */
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { mkdir, writeFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import { loadSpecFile } from "../../components/spec/load.ts";
import { parseSpec } from "../../components/spec/parse.ts";
import type { MeshSpecInput } from "../../components/spec/schema.ts";
import type { InfraIR } from "../../components/translate/ir.ts";
import { translate } from "../../components/translate/translate.ts";
import type { GeneratedFile } from "../../components/observability/index.ts";
import { sealRuntimeConfig, type GatewayRuntimeConfig } from "../../runtime/contract/index.ts";
import { freePort } from "../support/gateway.ts";

export const ROOT = new URL("../../", import.meta.url).pathname;

/** The IR of a spec document; throws with the errors when it is invalid. */
export function infraOf(doc: MeshSpecInput | Record<string, unknown>): InfraIR {
  const r = parseSpec(doc);
  if (!r.ok) throw new Error(r.errors.map((e) => `${e.path}: ${e.message}`).join("\n"));
  return translate(r.spec).infra;
}

export async function shopInfra(): Promise<InfraIR> {
  const loaded = await loadSpecFile(join(ROOT, "examples/shop/mesh.yaml"));
  if (!loaded.ok) throw new Error("the shop example is invalid");
  return translate(loaded.spec).infra;
}

export async function writeFiles(dir: string, files: readonly GeneratedFile[]): Promise<void> {
  for (const f of files) {
    const path = join(dir, ...f.path.split("/"));
    await mkdir(dirname(path), { recursive: true });
    await writeFile(path, f.content);
  }
}

/** Runs promtool; output is stdout and stderr together. */
export function promtool(args: string[], cwd?: string): { status: number | null; output: string } {
  const r = spawnSync("promtool", args, { cwd, encoding: "utf8", maxBuffer: 64 * 1024 * 1024 });
  if (r.error) {
    throw new Error(
      (r.error as NodeJS.ErrnoException).code === "ENOENT"
        ? "promtool is not on PATH: .ci/run must install the prometheus package (apt-get install -y prometheus)"
        : `could not run promtool: ${r.error.message}`,
    );
  }
  return { status: r.status, output: `${r.stdout}${r.stderr}` };
}

/** Runs promtool without blocking (several can run side by side); output is stdout and stderr together. */
export function promtoolAsync(
  args: string[],
  cwd?: string,
): Promise<{ status: number | null; output: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn("promtool", args, { cwd });
    let output = "";
    child.stdout.on("data", (c: Buffer) => (output += c.toString()));
    child.stderr.on("data", (c: Buffer) => (output += c.toString()));
    child.on("error", reject);
    child.on("close", (status) => resolve({ status, output }));
  });
}

/** A small valid spec to vary: two services, a gateway with two routes. */
export function smallSpec(extra: { observability?: unknown; gateway?: boolean; mesh?: unknown } = {}) {
  return {
    name: "tiny",
    trustDomain: "tiny.example",
    ...(extra.mesh ? { mesh: extra.mesh } : {}),
    services: {
      api: {
        image: "r/api:1",
        port: 8080,
        calls: ["db"],
        ...(extra.gateway === false ? {} : { allow: [{ from: ["gateway"] }] }),
      },
      db: { image: "r/db:1", port: 5432, allow: [{ from: ["api"] }] },
    },
    ...(extra.gateway === false
      ? {}
      : {
          gateway: {
            hosts: ["tiny.example"],
            routes: [
              {
                name: "items",
                match: { path: "/items" },
                to: "api",
                public: true,
                rateLimit: { requests: 10, per: "1s" },
              },
              {
                name: "health",
                match: { path: "/health" },
                to: "api",
                public: true,
                rateLimit: { requests: 10, per: "1s" },
              },
            ],
          },
        }),
    ...(extra.observability ? { observability: extra.observability } : {}),
  };
}

export async function waitFor(
  check: () => boolean | Promise<boolean>,
  ms: number,
  what: string,
): Promise<void> {
  const end = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

export interface GatewayProcess {
  readonly url: string;
  readonly admin: number;
  readonly output: () => string;
  stop(): Promise<void>;
}

/**
 * `meshgate gateway --workers N` as a real process on free ports (the config's listeners and admin are
 * rewritten), serving once it printed its admin URL.
 */
export async function startGatewayProcess(
  config: GatewayRuntimeConfig,
  dir: string,
  workers = 2,
): Promise<GatewayProcess> {
  const [port, admin] = [await freePort(), await freePort()];
  const { hash: _h, ...rest } = config;
  const sealed = sealRuntimeConfig<GatewayRuntimeConfig>({
    ...rest,
    listeners: rest.listeners.map((l) => ({ ...l, port })),
    admin: { port: admin },
  });
  const file = join(dir, `gateway-${port}.json`);
  await writeFile(file, JSON.stringify(sealed));
  let out = "";
  const child: ChildProcess = spawn(
    process.execPath,
    [
      join(ROOT, "bin/meshgate.js"),
      "gateway",
      "--config",
      file,
      "--host",
      "127.0.0.1",
      "--workers",
      String(workers),
    ],
    { stdio: ["ignore", "pipe", "pipe"] },
  );
  child.stdout!.on("data", (c: Buffer) => (out += c.toString()));
  child.stderr!.on("data", (c: Buffer) => (out += c.toString()));
  const stop = async () => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise((r) => child.once("exit", r));
    child.kill("SIGTERM");
    await exited;
  };
  try {
    await waitFor(
      () => out.includes(`admin http://127.0.0.1:${admin}`) || child.exitCode !== null,
      20_000,
      "the gateway",
    );
    if (child.exitCode !== null) throw new Error(`the gateway exited: ${out}`);
  } catch (err) {
    await stop();
    throw err;
  }
  return { url: `http://127.0.0.1:${port}`, admin, output: () => out, stop };
}
