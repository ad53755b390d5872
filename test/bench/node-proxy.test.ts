/**
 * bench/node-proxy.mjs, the benches' minimal Node reference, and bench/raw-pair.mjs, bench:mesh's floor,
 * run for real on 127.0.0.1: each must proxy (a reference that fails every request would make the
 * benches' comparisons meaningless) and each mTLS pair must really require and verify certificates, as
 * the nginx pair and the sidecars do.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import http from "node:http";
import https from "node:https";
import type { AddressInfo } from "node:net";
import os from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createIntermediateCa, createRootCa, SvidIssuer, TrustBundle } from "../../runtime/pki/index.ts";
import { freePort } from "../support/ports.ts";

const SCRIPT = new URL("../../bench/node-proxy.mjs", import.meta.url).pathname;
const RAW = new URL("../../bench/raw-pair.mjs", import.meta.url).pathname;
const tmp = mkdtempSync(join(os.tmpdir(), "meshgate-node-proxy-"));
const children: ChildProcess[] = [];
let upstream: http.Server;
let upstreamPort = 0;

/** Starts the script and resolves once it printed its listening line. */
function run(args: string[], script = SCRIPT): Promise<ChildProcess> {
  const child = spawn(process.execPath, [script, ...args], { stdio: ["ignore", "pipe", "pipe"] });
  children.push(child);
  return new Promise((resolve, reject) => {
    let err = "";
    child.stderr!.on("data", (d: Buffer) => (err += d));
    child.stdout!.once("data", () => resolve(child));
    child.once("exit", (code) => reject(new Error(`${script} exited ${code}: ${err}`)));
  });
}

function get(port: number, path: string): Promise<{ status: number; body: string; echoed: string }> {
  return new Promise((resolve, reject) => {
    http
      .get({ host: "127.0.0.1", port, path, agent: false }, (res) => {
        let body = "";
        res.on("data", (d: Buffer) => (body += d));
        res.on("end", () =>
          resolve({ status: res.statusCode!, body, echoed: String(res.headers["x-echo-path"] ?? "") }),
        );
      })
      .on("error", reject);
  });
}

let ids: { web: string; orders: string; stranger: string; bundle: string };

beforeAll(async () => {
  upstream = http.createServer((req, res) => {
    res.setHeader("x-echo-path", req.url ?? "");
    if (req.url === "/chunked") {
      res.write("hello from ");
      res.end("upstream"); // no Content-Length: chunked
      return;
    }
    res.end("hello from upstream");
  });
  await new Promise<void>((r) => upstream.listen(0, "127.0.0.1", r));
  upstreamPort = (upstream.address() as AddressInfo).port;

  const root = await createRootCa({ trustDomain: "bench.example" });
  const issuer = new SvidIssuer(await createIntermediateCa(root));
  const foreign = new SvidIssuer(
    await createIntermediateCa(await createRootCa({ trustDomain: "bench.example" })),
  );
  const bundle = join(tmp, "bundle.pem");
  writeFileSync(bundle, new TrustBundle("bench.example", [root.certificate]).toPem());
  const write = async (name: string, from: SvidIssuer, dnsNames: string[]) => {
    const svid = await from.issue(`spiffe://bench.example/ns/bench/sa/${name}`, { dnsNames });
    const dir = join(tmp, name);
    mkdirSync(dir);
    writeFileSync(join(dir, "svid.pem"), svid.chainPem);
    writeFileSync(join(dir, "svid-key.pem"), svid.keyPem!.reveal(), { mode: 0o600 });
    return dir;
  };
  ids = {
    web: await write("web", issuer, []),
    orders: await write("orders", issuer, ["orders"]),
    stranger: await write("stranger", foreign, []),
    bundle,
  };
});

afterAll(async () => {
  for (const c of children) c.kill("SIGKILL");
  await new Promise<void>((r) => upstream.close(() => r()));
  rmSync(tmp, { recursive: true, force: true });
});

/** The clients every inbound side must refuse (as the nginx pair and the sidecars do). */
const REFUSED = [
  { claim: "without a client certificate", dir: null },
  { claim: "with a certificate from a CA outside the bundle", dir: "stranger" as const },
];

describe("bench/node-proxy.mjs, the minimal Node reference", () => {
  it.each([{ workers: "1" }, { workers: "2" }])(
    "http mode with $workers worker(s) forwards the request and returns the upstream's answer",
    async ({ workers }) => {
      const port = await freePort();
      await run(["http", String(port), String(upstreamPort), workers]);
      for (let i = 0; i < 4; i++)
        expect(await get(port, `/api/v1/items/${i}`)).toEqual({
          status: 200,
          body: "hello from upstream",
          echoed: `/api/v1/items/${i}`,
        });
    },
  );

  it("the mTLS pair carries a request from plain HTTP through TLS 1.3 to the server", async () => {
    const [inbound, outbound] = [await freePort(), await freePort()];
    await run(["inbound", String(inbound), String(upstreamPort), ids.orders, ids.bundle]);
    await run(["outbound", String(outbound), String(inbound), ids.web, ids.bundle]);
    expect(await get(outbound, "/x")).toEqual({ status: 200, body: "hello from upstream", echoed: "/x" });
  });

  it.each(REFUSED)("the inbound side refuses a client $claim", async ({ dir }) => {
    expect(await inboundOutcome(SCRIPT, dir)).toMatch(/^refused: /);
  });

  it("a usage error exits 2 and names the usage", async () => {
    expect(await usageError(SCRIPT)).toContain("usage: node bench/node-proxy.mjs http");
  });
});

describe("bench/raw-pair.mjs, the floor under the Node pair", () => {
  it("carries requests from plain HTTP through TLS 1.3 to the server", async () => {
    const [inbound, outbound] = [await freePort(), await freePort()];
    await run(["inbound", String(inbound), String(upstreamPort), ids.orders, ids.bundle], RAW);
    await run(["outbound", String(outbound), String(inbound), ids.web, ids.bundle], RAW);
    for (const path of ["/x", "/api/v1/items/42", "/y?z=1"])
      expect(await get(outbound, path)).toEqual({ status: 200, body: "hello from upstream", echoed: path });
  });

  it("answers 502 to a response it cannot frame, never a truncated 200", async () => {
    const [inbound, outbound] = [await freePort(), await freePort()];
    await run(["inbound", String(inbound), String(upstreamPort), ids.orders, ids.bundle], RAW);
    await run(["outbound", String(outbound), String(inbound), ids.web, ids.bundle], RAW);
    expect((await get(outbound, "/chunked")).status).toBe(502);
  });

  it.each(REFUSED)("the inbound side refuses a client $claim", async ({ dir }) => {
    expect(await inboundOutcome(RAW, dir)).toMatch(/^refused: /);
  });

  it("a usage error exits 2 and names the usage", async () => {
    expect(await usageError(RAW)).toContain("usage: node bench/raw-pair.mjs outbound|inbound");
  });
});

/** What a client with `dir`'s certificate (or none) gets from `script`'s inbound side. */
async function inboundOutcome(script: string, dir: "stranger" | null): Promise<string> {
  const inbound = await freePort();
  await run(["inbound", String(inbound), String(upstreamPort), ids.orders, ids.bundle], script);
  return new Promise<string>((resolve) => {
    const req = https.get(
      {
        host: "127.0.0.1",
        port: inbound,
        path: "/",
        agent: false,
        ca: readFileSync(ids.bundle),
        servername: "orders",
        ...(dir
          ? {
              cert: readFileSync(join(ids[dir], "svid.pem")),
              key: readFileSync(join(ids[dir], "svid-key.pem")),
            }
          : {}),
      },
      (res) => resolve(`answered ${res.statusCode}`),
    );
    req.on("error", (err) => resolve(`refused: ${(err as NodeJS.ErrnoException).code ?? err.message}`));
  });
}

/** The stderr of `script` run with bad arguments, which must exit 2. */
async function usageError(script: string): Promise<string> {
  const child = spawn(process.execPath, [script, "tcp", "1"], { stdio: ["ignore", "ignore", "pipe"] });
  let err = "";
  child.stderr.on("data", (d: Buffer) => (err += d));
  const code = await new Promise<number | null>((r) => child.once("exit", r));
  expect(code).toBe(2);
  return err;
}
