/**
 * The runtime bundle as the image runs it: built with esbuild from scripts/build.ts's options into a
 * temporary directory, started as `node <bundle> gateway --config <file>` (one process, and a primary
 * that forks itself for two workers), serving a request to a real upstream on 127.0.0.1. The bundle
 * holds the data plane only: no Pulumi, cdk8s, spec tooling or CLI code.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtemp, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { build, type Metafile } from "esbuild";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { sealRuntimeConfig, type GatewayRuntimeConfig } from "../../runtime/contract/index.ts";
import { runtimeBundleOptions } from "../../scripts/build.ts";
import { freePort, gatewayConfig, request, startUpstream, type Upstream } from "../support/gateway.ts";

let dir: string;
let bundle: string;
let metafile: Metafile;
let upstream: Upstream;
const children: ChildProcess[] = [];

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "meshgate-bundle-"));
  bundle = join(dir, "meshgate.js");
  const started = performance.now();
  const result = await build(runtimeBundleOptions(bundle));
  const buildMs = performance.now() - started;
  metafile = result.metafile!;
  upstream = await startUpstream();
  const { size } = await stat(bundle);
  console.log(`runtime bundle: ${(size / 1024).toFixed(0)} KiB, built in ${buildMs.toFixed(0)} ms`);
});

afterAll(async () => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill("SIGKILL");
  await upstream?.close();
  await rm(dir, { recursive: true, force: true });
});

interface Started {
  child: ChildProcess;
  /** Milliseconds from spawn to the `admin http://…` line (everything serving). */
  readyMs: number;
  stdout: () => string;
  stderr: () => string;
}

/** Spawns the bundle and waits for its ready line (the admin URL), or its exit. */
function startBundle(args: string[]): Promise<Started> {
  const t0 = performance.now();
  const child = spawn(process.execPath, [bundle, ...args], { cwd: dir, stdio: ["ignore", "pipe", "pipe"] });
  children.push(child);
  let out = "";
  let err = "";
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no ready line in 20 s:\n${out}\n${err}`)), 20_000);
    child.stderr!.on("data", (d: Buffer) => (err += d.toString()));
    child.stdout!.on("data", (d: Buffer) => {
      out += d.toString();
      if (/^admin http:\/\/\S+:\d+$/m.test(out)) {
        clearTimeout(timer);
        resolve({ child, readyMs: performance.now() - t0, stdout: () => out, stderr: () => err });
      }
    });
    child.on("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`exited with ${code} before serving:\n${out}\n${err}`));
    });
  });
}

function stop(child: ChildProcess): Promise<number | null> {
  return new Promise((resolve) => {
    if (child.exitCode !== null) return resolve(child.exitCode);
    child.once("exit", (code) => resolve(code));
    child.kill("SIGTERM");
  });
}

/** A gateway config with one public route to the upstream, on a free listener port. */
async function configFile(): Promise<{ path: string; port: number }> {
  const translated = gatewayConfig(
    [
      {
        name: "orders",
        match: { path: "/api/orders" },
        to: "orders",
        rewrite: { path: "/orders" },
        public: true,
      },
    ],
    { orders: { port: upstream.port } },
  );
  const { hash: _hash, ...rest } = translated;
  const port = await freePort();
  const config = sealRuntimeConfig<GatewayRuntimeConfig>({
    ...rest,
    listeners: rest.listeners.map((l) => ({ ...l, port })),
  });
  const path = join(dir, `gateway-${port}.json`);
  await writeFile(path, JSON.stringify(config));
  return { path, port };
}

describe("runtime bundle", () => {
  it("contains_the_data_plane_only", async () => {
    const inputs = Object.keys(metafile.inputs);
    const forbidden = inputs.filter((p) =>
      /node_modules\/(@pulumi\/|cdk8s|constructs\/|yaml\/|js-yaml\/|kubernetes-models|ajv\/)|(^|\/)(components|policies|stacks|cli|bin)\//.test(
        p,
      ),
    );
    expect(forbidden).toEqual([]);
    expect(inputs).toContain("runtime/gateway/server.ts");
    expect(inputs).toContain("runtime/sidecar/server.ts");
    const text = await readFile(bundle, "utf8");
    for (const marker of ["@pulumi/", "cdk8s", "ComponentResource", "pulumi:pulumi:Stack"])
      expect(text.includes(marker), marker).toBe(false);
  });

  it.each([
    ["one_process", ["--workers", "1"]],
    ["a_primary_forking_itself_for_two_workers", ["--workers", "2"]],
  ])("serves_a_request_through_the_bundled_gateway_as_%s", async (_name, workerArgs) => {
    const { path, port } = await configFile();
    const admin = await freePort();
    const before = upstream.received.length;
    const gw = await startBundle(["gateway", "--config", path, "--admin-port", String(admin), ...workerArgs]);
    console.log(`bundled gateway ${workerArgs.join(" ")}: serving ${gw.readyMs.toFixed(0)} ms after spawn`);
    // No --host: bound to every IPv4 address, and the start line says so.
    expect(gw.stdout()).toContain(`gateway http http://0.0.0.0:${port}`);
    const res = await request(`http://127.0.0.1:${port}/api/orders`, { headers: { host: "localhost" } });
    expect(res.status).toBe(200);
    expect(JSON.parse(res.body)).toEqual({ path: "/orders", method: "GET" });
    expect(upstream.received.slice(before).map((r) => r.url)).toEqual(["/orders"]);
    const ready = await request(`http://127.0.0.1:${admin}/ready`);
    expect(ready.status).toBe(200);
    expect(await stop(gw.child)).toBe(0);
  });

  it.each([
    ["no_command", [], 2, /Usage:/],
    ["an_unknown_command", ["validate", "x.yaml"], 2, /unknown command "validate"/],
    ["a_missing_config", ["gateway"], 2, /missing --config FILE/],
    [
      "a_bad_port",
      ["sidecar", "--config", "x.json", "--inbound-port", "99999"],
      2,
      /--inbound-port must be a port/,
    ],
    ["an_unknown_option", ["gateway", "--config", "x.json", "--spec", "y"], 2, /Unknown option '--spec'/],
    // parseArgs keeps the last of a repeated flag: the runtime's command line refuses it, as meshgate's does.
    [
      "a_flag_given_twice",
      ["gateway", "--config", "a.json", "--config", "b.json"],
      2,
      /--config given twice/,
    ],
    [
      "a_missing_config_file",
      ["sidecar", "--config", "/nonexistent/meshgate.json"],
      1,
      /meshgate sidecar: .*ENOENT/,
    ],
  ] as const)("exits_with_usage_or_start_errors_on_%s", async (_name, args, code, message) => {
    const child = spawn(process.execPath, [bundle, ...args], { stdio: ["ignore", "pipe", "pipe"] });
    children.push(child);
    let text = "";
    child.stdout!.on("data", (d: Buffer) => (text += d.toString()));
    child.stderr!.on("data", (d: Buffer) => (text += d.toString()));
    const exit = await new Promise<number | null>((r) => child.on("exit", (c) => r(c)));
    expect(exit).toBe(code);
    expect(text).toMatch(message);
  });
});
