/**
 * `meshgate sidecar --config FILE` as a real process: prints its listeners and admin URL once ready,
 * reloads the config when the file changes and on SIGHUP (an invalid file is refused whole while the old
 * config keeps serving), picks up new identity files, drains in-flight requests on SIGTERM (/ready turns
 * false) and exits 0; an invalid config exits 1 with a coded error. Its output never holds a key.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { writeFile } from "node:fs/promises";
import https from "node:https";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { SidecarRuntimeConfig } from "../../runtime/contract/index.ts";
import { spiffeServerIdentity, type IssuedSvid } from "../../runtime/pki/index.ts";
import { makeCa, tempDir, type TestCa } from "../pki/support.ts";
import { freePort, startUpstream, type Upstream } from "../support/gateway.ts";
import { localSidecar, meshConfigs, spiffe, TD, until, writeIdentity } from "./support.ts";

const ROOT = new URL("../../", import.meta.url).pathname;

let tmp: Awaited<ReturnType<typeof tempDir>>;
let ca: TestCa;
let app: Upstream;
const keys: string[] = [];

beforeAll(async () => {
  tmp = await tempDir("sidecar-process");
  ca = await makeCa(TD);
  app = await startUpstream((req, res) => {
    const delay = req.url === "/orders/slow" ? 800 : 0;
    setTimeout(() => {
      res.writeHead(200, { "content-type": "text/plain", "content-length": 2 });
      res.end("ok");
    }, delay);
  });
});
afterAll(async () => {
  await app?.close();
  await tmp?.cleanup();
});

async function issue(name: string): Promise<IssuedSvid> {
  const s = await ca.issuer.issue(spiffe(name));
  keys.push(s.keyPem!.reveal());
  return s;
}

function ordersConfig(allowFrom: string[], dir: string): SidecarRuntimeConfig {
  const services = {
    orders: { image: "r/o:1", port: 8080, allow: [{ from: allowFrom, paths: ["/orders/**"] }] },
    web: { image: "r/w:1", port: 8080, calls: ["orders"] },
    billing: { image: "r/b:1", port: 8080, calls: ["orders"] },
  };
  return localSidecar(
    meshConfigs(services).find((c) => c.name === "orders")!,
    { identityDir: dir, appPort: app.port },
  );
}

function mtlsGet(port: number, client: IssuedSvid, path: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = https.request(
      {
        host: "127.0.0.1",
        port,
        path,
        headers: { host: "orders" },
        ca: ca.bundle.toPem(),
        cert: client.chainPem,
        key: client.keyPem!.reveal(),
        agent: false,
        checkServerIdentity: spiffeServerIdentity(ca.verifier, spiffe("orders")),
      },
      (res) => {
        res.resume();
        res.on("end", () => resolve(res.statusCode ?? 0));
      },
    );
    req.on("error", reject);
    req.end();
  });
}

function start(file: string, extra: string[] = []): { child: ChildProcess; out: () => string } {
  // --host 127.0.0.1 unless `extra` names its own (a flag given twice is a usage error).
  const host = extra.includes("--host") ? [] : ["--host", "127.0.0.1"];
  const child = spawn(
    process.execPath,
    [join(ROOT, "bin/meshgate.js"), "sidecar", "--config", file, ...host, ...extra],
    { stdio: ["ignore", "pipe", "pipe"] },
  );
  let out = "";
  child.stdout!.on("data", (c: Buffer) => (out += c.toString()));
  child.stderr!.on("data", (c: Buffer) => (out += c.toString()));
  return { child, out: () => out };
}

describe("the meshgate sidecar process", () => {
  it("serves_reloads_config_and_identity_drains_on_sigterm_and_exits_0", async () => {
    const dir = join(tmp.dir, "orders");
    const file = join(tmp.dir, "orders.json");
    await writeIdentity(dir, await issue("orders"), ca.bundle.toPem());
    await writeFile(file, JSON.stringify(ordersConfig(["web"], dir)));
    const [inbound, outbound, admin] = await Promise.all([freePort(), freePort(), freePort()]);
    const { child, out } = start(file, [
      "--inbound-port",
      String(inbound),
      "--outbound-port",
      String(outbound),
      "--admin-port",
      String(admin),
    ]);
    const web = await issue("web");
    const billing = await issue("billing");
    try {
      await until(() => out().includes(`admin http://127.0.0.1:${admin}`), 15_000, "startup lines");
      expect(out()).toContain(`sidecar orders inbound https://127.0.0.1:${inbound}`);
      expect(out()).toContain(`sidecar orders outbound http://127.0.0.1:${outbound}`);
      expect((await fetch(`http://127.0.0.1:${admin}/ready`)).status).toBe(200);
      expect(await mtlsGet(inbound, web, "/orders/1")).toBe(200);
      expect(await mtlsGet(inbound, billing, "/orders/1")).toBe(403);

      // A changed config file is picked up: billing is allowed now.
      await writeFile(file, JSON.stringify(ordersConfig(["web", "billing"], dir)));
      await until(
        async () => (await mtlsGet(inbound, billing, "/orders/2")) === 200,
        10_000,
        "config reload",
      );

      // An invalid file is refused (SIGHUP re-reads it); the last good config keeps serving.
      await writeFile(file, "{ broken");
      child.kill("SIGHUP");
      await until(() => out().includes("reload_rejected"), 10_000, "rejection");
      expect(await mtlsGet(inbound, billing, "/orders/3")).toBe(200);

      // New identity files are served without a restart.
      const renewed = await issue("orders");
      await writeIdentity(dir, renewed, ca.bundle.toPem());
      await until(
        async () =>
          (
            (await (await fetch(`http://127.0.0.1:${admin}/config`)).json()) as {
              identityStatus: { serial: string };
            }
          ).identityStatus.serial === renewed.serial,
        10_000,
        "identity reload",
      );

      // SIGTERM: the in-flight request finishes, /ready turns false, the process exits 0.
      const slow = mtlsGet(inbound, web, "/orders/slow");
      await new Promise((r) => setTimeout(r, 200));
      child.kill("SIGTERM");
      await until(
        async () =>
          (await fetch(`http://127.0.0.1:${admin}/ready`).catch(() => ({ status: 0 }))).status !== 200,
        5_000,
        "not ready while draining",
      );
      expect(await slow).toBe(200);
      const code = await new Promise<number | null>((r) => child.on("exit", (c) => r(c)));
      expect(code).toBe(0);
      expect(out()).toContain('"event":"stopped"');
      expect(out()).not.toContain("PRIVATE KEY");
      for (const k of keys) expect(out()).not.toContain(k.split("\n")[1]!);
    } finally {
      child.kill("SIGKILL");
    }
  }, 60_000);

  // The start lines name the address --host bound (127.0.0.2: loopback, and not 127.0.0.1), admin included.
  it.each([["127.0.0.2"]])(
    "prints_the_admin_address_it_bound_%s",
    async (host) => {
      const dir = join(tmp.dir, "orders-bound");
      const file = join(tmp.dir, "orders-bound.json");
      await writeIdentity(dir, await issue("orders"), ca.bundle.toPem());
      await writeFile(file, JSON.stringify(ordersConfig(["web"], dir)));
      const [inbound, outbound, admin] = await Promise.all([freePort(), freePort(), freePort()]);
      const ports = ["--inbound-port", String(inbound), "--outbound-port", String(outbound)];
      const { child, out } = start(file, [...ports, "--admin-port", String(admin), "--host", host]);
      try {
        await until(() => /^admin http:\/\/\S+$/m.test(out()), 15_000, "startup lines");
        expect(out()).toContain(`sidecar orders inbound https://${host}:${inbound}\n`);
        expect(out()).toContain(`admin http://${host}:${admin}\n`);
        expect((await fetch(`http://${host}:${admin}/ready`)).status).toBe(200);
      } finally {
        child.kill("SIGKILL");
      }
    },
    30_000,
  );

  it("exits_1_with_a_coded_error_for_an_invalid_config_file", async () => {
    const file = join(tmp.dir, "bad.json");
    await writeFile(file, JSON.stringify({ version: 1, kind: "sidecar" }));
    const { child, out } = start(file);
    const code = await new Promise<number | null>((r) => child.on("exit", (c) => r(c)));
    expect(code).toBe(1);
    expect(out()).toMatch(/meshgate sidecar: .* \[E_RT_CONFIG_INVALID\]/);
  });

  it("exits_1_when_given_a_gateway_config", async () => {
    const file = join(tmp.dir, "kind.json");
    const { hash: _h, ...rest } = ordersConfig(["web"], tmp.dir);
    await writeFile(file, JSON.stringify({ ...rest, kind: "gateway" }));
    const { child, out } = start(file);
    const code = await new Promise<number | null>((r) => child.on("exit", (c) => r(c)));
    expect(code).toBe(1);
    expect(out()).toMatch(/meshgate sidecar: .*\[E_RT_CONFIG_/);
  });

  it("exits_2_for_a_bad_port_argument", async () => {
    const { child, out } = start(join(tmp.dir, "none.json"), ["--inbound-port", "http"]);
    const code = await new Promise<number | null>((r) => child.on("exit", (c) => r(c)));
    expect(code).toBe(2);
    expect(out()).toContain("--inbound-port must be a port number");
  });
});
