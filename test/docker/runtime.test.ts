/**
 * The files DockerPlatform copies into the containers, run by the real runtime: the stack runs under
 * Pulumi's mocks with a tls provider that makes real certificates (test/support/tls-provider.ts), the
 * `uploads` of the orders sidecar and of the gateway are written under a temporary root exactly as the
 * provider would copy them (content, mode), and `meshgate sidecar` / `meshgate gateway` are started on them
 * as processes on 127.0.0.1. The sidecar must load the identity and become ready, admit the gateway's SVID
 * (as uploaded) to an allowed path and forward to the app, refuse it elsewhere; the gateway must load its
 * config and identity and become ready. Neither may log a private key.
 *
 * What differs from a container, and only this: the config's four identity paths and static roots point
 * under the temporary root, the sidecar's app port and the gateway's listener port are free ports, and the other
 * ports come from the CLI flags (the test asserts that nothing else in the config changes).
 */
import { spawn, type ChildProcess } from "node:child_process";
import { createHash } from "node:crypto";
import { chmod, mkdir, readFile, writeFile } from "node:fs/promises";
import http from "node:http";
import https from "node:https";
import type { AddressInfo } from "node:net";
import { dirname, join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type * as DockerModule from "../../components/docker/platform.ts";
import { sealRuntimeConfig, type RuntimeConfig } from "../../runtime/contract/index.ts";
import { tempDir } from "../pki/support.ts";
import { installMocks, mockState, runStack } from "../support/pulumi.ts";
import { emulatedTlsProvider } from "../support/tls-provider.ts";
import { ROOT, SHOP } from "./support.ts";
import { freePort } from "../support/ports.ts";

type Loose = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any
type Upload = { file: string; content?: string; source?: string; permissions: string };

const tls = emulatedTlsProvider(() => undefined);
let tmp: { dir: string; cleanup: () => Promise<void> };
const children: ChildProcess[] = [];
const output: string[] = [];
let uploads: Record<string, Upload[]>;
let app: http.Server;
let seen: string[] = [];

beforeAll(async () => {
  await installMocks("meshgate", "test", async (type, name, inputs) =>
    type === "docker:index/remoteImage:RemoteImage"
      ? { imageId: `sha256:${createHash("sha256").update(String(inputs.name)).digest("hex")}` }
      : tls(type, name, inputs),
  );
  const m: typeof DockerModule = await import("../../components/docker/platform.ts");
  const run = await runStack(() => {
    new m.DockerPlatform("shop", { spec: SHOP });
  });
  if (run.errors.length > 0) throw run.errors[0];
  uploads = Object.fromEntries(
    mockState.registered
      .filter((r) => r.type === "docker:index/container:Container")
      .map((r) => [r.inputs.name as string, (r.inputs.uploads ?? []) as Upload[]]),
  );
  tmp = await tempDir("meshgate-docker-runtime-");
  app = http.createServer((req, res) => {
    seen.push(`${req.method} ${req.url}`);
    res.writeHead(200, { "content-type": "application/json" }).end('{"app":"orders"}');
  });
  await new Promise<void>((r) => app.listen(0, "127.0.0.1", r));
}, 60_000);

afterAll(async () => {
  for (const c of children) if (c.exitCode === null) c.kill("SIGKILL");
  await new Promise<void>((r) => app?.close(() => r()));
  await tmp?.cleanup();
});

/** Writes a container's uploads under `root` (content and mode as the provider copies them). */
async function materialize(container: string): Promise<string> {
  const root = join(tmp.dir, container);
  for (const u of uploads[container]!) {
    const path = join(root, u.file);
    await mkdir(dirname(path), { recursive: true });
    await writeFile(path, u.source !== undefined ? await readFile(u.source) : u.content!);
    await chmod(path, parseInt(u.permissions, 8));
  }
  return root;
}

/** The uploaded config with its identity paths under `root` and the given edits; asserts nothing else moved. */
async function runConfig(root: string, edit: (c: Loose) => void): Promise<string> {
  const rendered = JSON.parse(
    await readFile(join(root, "etc/meshgate/config/config.json"), "utf8"),
  ) as RuntimeConfig;
  const { hash: _h, ...rest } = structuredClone(rendered);
  const svid = rest.svid!;
  for (const k of ["certFile", "keyFile", "bundleFile", "intermediatesFile"] as const)
    svid[k] = join(root, svid[k]!);
  for (const r of (rest as { routes?: { action: { kind: string; root?: string } }[] }).routes ?? [])
    if (r.action.kind === "static") r.action.root = join(root, r.action.root!);
  edit(rest);
  const sealed = sealRuntimeConfig(rest as never) as RuntimeConfig;
  const back = structuredClone(sealed) as Loose;
  for (const k of ["certFile", "keyFile", "bundleFile", "intermediatesFile"])
    back.svid[k] = back.svid[k].slice(root.length);
  for (const r of back.routes ?? [])
    if (r.action.kind === "static") r.action.root = r.action.root.slice(root.length);
  expect(Object.keys(back).sort()).toEqual(Object.keys(rendered).sort());
  for (const key of Object.keys(rendered))
    if (!["hash", "inbound", "listeners"].includes(key))
      expect(back[key], key).toEqual((rendered as Record<string, unknown>)[key]);
  const file = join(root, "run.json");
  await writeFile(file, JSON.stringify(sealed, null, 2));
  return file;
}

function start(args: string[], name: string): ChildProcess {
  const child = spawn(process.execPath, [join(ROOT, "bin/meshgate.js"), ...args], {
    cwd: tmp.dir,
    stdio: ["ignore", "pipe", "pipe"],
  });
  const i = output.push("") - 1;
  child.stdout!.on("data", (d: Buffer) => (output[i] += d.toString()));
  child.stderr!.on("data", (d: Buffer) => (output[i] += d.toString()));
  children.push(child);
  child.on("exit", (code) => (output[i] += `\n[${name} exited ${code}]`));
  return child;
}

async function ready(adminPort: number, child: ChildProcess, what: string): Promise<void> {
  const deadline = Date.now() + 20_000;
  for (;;) {
    const status = await fetch(`http://127.0.0.1:${adminPort}/ready`).then(
      (r) => r.status,
      () => 0,
    );
    if (status === 200) return;
    if (child.exitCode !== null || Date.now() > deadline)
      throw new Error(`${what} not ready (status ${status}):\n${output.join("\n").slice(-3000)}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** A plain GET with a Host header (fetch may not set one). */
function get(port: number, path: string, host: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: "127.0.0.1", port, path, headers: { host } }, (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (d: string) => (body += d));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on("error", reject);
    req.end();
  });
}

/** A request to the sidecar's inbound listener with the gateway's uploaded SVID. */
function meshRequest(port: number, path: string, gatewayRoot: Promise<string>): Promise<number> {
  return gatewayRoot.then(async (root) => {
    const read = (f: string) => readFile(join(root, "etc/meshgate/identity", f), "utf8");
    const [cert, key, ca] = await Promise.all([read("svid.pem"), read("svid-key.pem"), read("bundle.pem")]);
    return new Promise<number>((resolve, reject) => {
      const req = https.request(
        { host: "127.0.0.1", port, path, method: "GET", cert, key, ca, checkServerIdentity: () => undefined },
        (res) => {
          res.resume();
          res.on("end", () => resolve(res.statusCode ?? 0));
        },
      );
      req.on("error", reject);
      req.end();
    });
  });
}

describe("docker uploads under the real runtime", () => {
  let gatewayRoot: Promise<string>;

  it("starts_the_sidecar_on_its_uploaded_config_and_identity_and_enforces_mtls_authorization", async () => {
    gatewayRoot = materialize("shop-gateway");
    const root = await materialize("shop-orders-sidecar");
    const appPort = (app.address() as AddressInfo).port;
    const config = await runConfig(root, (c) => (c.inbound.appPort = appPort));
    const [inbound, outbound, admin] = [await freePort(), await freePort(), await freePort()];
    const child = start(
      [
        "sidecar",
        "--config",
        config,
        "--host",
        "127.0.0.1",
        "--inbound-port",
        String(inbound),
        "--outbound-port",
        String(outbound),
        "--admin-port",
        String(admin),
      ],
      "sidecar",
    );
    await ready(admin, child, "the orders sidecar");
    seen = [];
    expect(await meshRequest(inbound, "/orders/42", gatewayRoot)).toBe(200);
    expect(seen).toEqual(["GET /orders/42"]);
    expect(await meshRequest(inbound, "/admin/secrets", gatewayRoot)).toBe(403);
    expect(seen).toEqual(["GET /orders/42"]);
  }, 40_000);

  it("starts_the_gateway_on_its_uploaded_config_and_identity", async () => {
    const root = await gatewayRoot;
    const listener = await freePort();
    const config = await runConfig(root, (c) => {
      for (const l of c.listeners) l.port = listener;
    });
    const admin = await freePort();
    const child = start(
      ["gateway", "--config", config, "--host", "127.0.0.1", "--admin-port", String(admin), "--workers", "1"],
      "gateway",
    );
    await ready(admin, child, "the gateway");
    // The static site came along: the public SPA route answers from the uploaded files.
    const page = await get(listener, "/app/index.html", `localhost:${listener}`);
    expect(page.status, page.body).toBe(200);
    expect(page.body).toBe(await readFile(join(ROOT, "examples/shop/web/index.html"), "utf8"));
  }, 40_000);

  it("logs_no_private_key", () => {
    const all = output.join("\n");
    expect(all.length).toBeGreaterThan(0);
    expect(all).not.toMatch(/PRIVATE KEY/);
    for (const u of Object.values(uploads)
      .flat()
      .filter((x) => x.permissions === "0400"))
      expect(all).not.toContain(u.content!.split("\n")[1]);
  });
});
