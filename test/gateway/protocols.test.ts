/**
 * Listener protocols with real tools: TLS termination with SNI (certificates from openssl), HTTP/2 over
 * TLS by ALPN and HTTP/1.1 on the same port (curl), cleartext HTTP/2 with prior knowledge next to
 * HTTP/1.1 (curl --http2-prior-knowledge), and certificate rotation by reload and by the files alone.
 */
import { execFile } from "node:child_process";
import { copyFile, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import tls from "node:tls";
import { setTimeout as sleep } from "node:timers/promises";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { GatewayRuntimeConfig } from "../../runtime/contract/index.ts";
import { selfSignedCert } from "../support/certs.ts";
import {
  gatewayConfig,
  startTestGateway,
  startUpstream,
  type TestGateway,
  type Upstream,
} from "../support/gateway.ts";

const run = promisify(execFile);
const PUBLIC = { public: true, rateLimit: { requests: 100000, per: "1s" } };

let dir: string;
let app: Upstream;
let gw: TestGateway;
let httpsPort: number;
let h2cPort: number;

const cert = (name: string, cn: string, san: string) => selfSignedCert(dir, name, cn, san);

function config(
  a: { certFile: string; keyFile: string },
  b: { certFile: string; keyFile: string },
): GatewayRuntimeConfig {
  return gatewayConfig(
    [{ name: "all", match: { path: "/**" }, to: "app", ...PUBLIC }],
    { app },
    {
      hosts: ["a.test", "*.b.test", "127.0.0.1"],
      listeners: [
        {
          name: "https",
          port: 8443,
          protocol: "https",
          tls: {
            minVersion: "TLSv1.2",
            certificates: [
              { hosts: ["a.test"], ...a },
              { hosts: ["*.b.test"], ...b },
            ],
          },
        },
        { name: "http", port: 8080, protocol: "http", http2: true },
      ],
    },
  );
}

function peerCn(servername: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = tls.connect(
      {
        host: "127.0.0.1",
        port: httpsPort,
        servername,
        rejectUnauthorized: false,
        ALPNProtocols: ["http/1.1"],
      },
      () => {
        const cn = socket.getPeerCertificate().subject.CN;
        socket.end();
        resolve(String(Array.isArray(cn) ? cn[0] : cn));
      },
    );
    socket.on("error", reject);
  });
}

async function curl(args: string[]): Promise<{ version: string; body: string }> {
  const { stdout } = await run("curl", ["-sS", "--max-time", "5", "-w", "\n%{http_version}", ...args]);
  const lines = stdout.split("\n");
  return { version: lines.pop()!, body: lines.join("\n") };
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "meshgate-tls-"));
  app = await startUpstream((req, res) => {
    const out = JSON.stringify({
      path: req.url,
      proto: req.headers["x-forwarded-proto"],
      host: req.headers.host,
    });
    res.writeHead(200, { "content-type": "application/json", "content-length": Buffer.byteLength(out) });
    res.end(out);
  });
  const [a, b] = await Promise.all([
    cert("a", "a.test", "DNS:a.test"),
    cert("b", "wild.b.test", "DNS:*.b.test"),
  ]);
  gw = await startTestGateway(config(a, b));
  httpsPort = gw.ports.listeners.https!;
  h2cPort = gw.ports.listeners.http!;
});

afterAll(async () => {
  await gw.drain();
  await app.close();
  await rm(dir, { recursive: true, force: true });
});

describe("TLS", () => {
  it("selects_the_certificate_by_sni_with_exact_and_wildcard_hosts", async () => {
    expect(await peerCn("a.test")).toBe("a.test");
    expect(await peerCn("x.b.test")).toBe("wild.b.test");
    expect(await peerCn("unknown.test")).toBe("a.test"); // the first certificate is the default
  });

  it("serves_http2_negotiated_by_alpn", async () => {
    const r = await curl([
      "-k",
      "--http2",
      "--resolve",
      `a.test:${httpsPort}:127.0.0.1`,
      `https://a.test:${httpsPort}/v/1?x=2`,
    ]);
    expect(r.version).toBe("2");
    expect(JSON.parse(r.body)).toEqual({ path: "/v/1?x=2", proto: "https", host: `a.test:${httpsPort}` });
  });

  it("serves_http1_1_on_the_same_tls_port", async () => {
    const r = await curl([
      "-k",
      "--http1.1",
      "--resolve",
      `a.test:${httpsPort}:127.0.0.1`,
      `https://a.test:${httpsPort}/v`,
    ]);
    expect(r.version).toBe("1.1");
    expect(JSON.parse(r.body)).toMatchObject({ path: "/v", proto: "https" });
  });

  it("applies_decide_over_http2_too", async () => {
    const { stdout } = await run("curl", [
      "-sk",
      "--http2",
      "-o",
      "/dev/null",
      "-w",
      "%{http_code} %{http_version}",
      "--path-as-is",
      "--resolve",
      `a.test:${httpsPort}:127.0.0.1`,
      `https://a.test:${httpsPort}/../etc/passwd`,
    ]);
    expect(stdout).toBe("400 2");
  });

  it("rotates_certificates_on_reload_without_a_config_change", async () => {
    const before = await peerCn("a.test");
    await cert("a", "a-rotated.test", "DNS:a.test"); // rewrite the same files, as a Secret update does
    const r = await gw.reload(
      JSON.stringify(
        config(
          { certFile: join(dir, "a.crt"), keyFile: join(dir, "a.key") },
          { certFile: join(dir, "b.crt"), keyFile: join(dir, "b.key") },
        ),
      ),
    );
    expect(r).toMatchObject({ ok: true, changed: false });
    expect(before).toBe("a.test");
    expect(await peerCn("a.test")).toBe("a-rotated.test");
  });

  it("serves_a_certificate_renewed_in_place_without_a_reload", async () => {
    // What a Secret renewed by cert-manager looks like to the pod: the mounted files change, nobody
    // signals the gateway. The files are checked every second (certificatePollMs).
    expect(await peerCn("x.b.test")).toBe("wild.b.test");
    await cert("b", "renewed.b.test", "DNS:*.b.test");
    const deadline = Date.now() + 5000;
    while ((await peerCn("x.b.test")) !== "renewed.b.test" && Date.now() < deadline) await sleep(100);
    expect(await peerCn("x.b.test")).toBe("renewed.b.test");
    expect(gw.logs.some((l) => l.event === "certificates_reloaded")).toBe(true);
  });

  it("keeps_serving_the_old_certificate_while_a_renewal_is_half_written_then_takes_the_new_one", async () => {
    // The new certificate lands before its key: the pair does not match yet, so the one serving stays.
    const next = await cert("a-next", "next.a.test", "DNS:a.test");
    await copyFile(next.certFile, join(dir, "a.crt"));
    await sleep(1500);
    expect(await peerCn("a.test")).toBe("a-rotated.test");
    expect(gw.logs.some((l) => l.event === "certificates_reload_failed")).toBe(true);
    await copyFile(next.keyFile, join(dir, "a.key"));
    const deadline = Date.now() + 5000;
    while ((await peerCn("a.test")) !== "next.a.test" && Date.now() < deadline) await sleep(100);
    expect(await peerCn("a.test")).toBe("next.a.test");
  });

  it("rejects_a_reload_whose_certificate_is_unreadable_and_keeps_serving", async () => {
    const serving = await peerCn("a.test");
    const broken = config(
      { certFile: join(dir, "missing.crt"), keyFile: join(dir, "missing.key") },
      { certFile: join(dir, "b.crt"), keyFile: join(dir, "b.key") },
    );
    const r = await gw.reload(JSON.stringify(broken));
    expect(r.ok).toBe(false);
    expect(r.ok === false && r.error).toContain("missing.crt");
    expect(await peerCn("a.test")).toBe(serving);
  });
});

describe("cleartext", () => {
  it("serves_h2c_with_prior_knowledge", async () => {
    const r = await curl(["--http2-prior-knowledge", `http://127.0.0.1:${h2cPort}/h2c`]);
    expect(r.version).toBe("2");
    expect(JSON.parse(r.body)).toMatchObject({ path: "/h2c", proto: "http" });
  });

  it("serves_http1_1_on_the_same_port", async () => {
    const r = await curl(["--http1.1", `http://127.0.0.1:${h2cPort}/h1`]);
    expect(r.version).toBe("1.1");
    expect(JSON.parse(r.body)).toMatchObject({ path: "/h1" });
  });
});
