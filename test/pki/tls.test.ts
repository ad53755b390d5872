/**
 * The verifier at real TLS endpoints on 127.0.0.1: a `tls.createServer` with `requestCert: true` and the
 * verifier in `secureConnection`, reached by curl and `openssl s_client` with a valid SVID, none, and a
 * foreign CA's SVID; and Node clients showing why the verifier exists (Node's hostname check ignores
 * URI SANs: it refuses valid SVIDs and accepts wrong peers).
 */
import { spawn } from "node:child_process";
import { once } from "node:events";
import type { AddressInfo } from "node:net";
import tls from "node:tls";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  peerChain,
  spiffeServerIdentity,
  SvidVerifier,
  toPem,
  verifyTlsPeer,
  type IssuedSvid,
  type PeerExpectation,
  type SvidVerdict,
} from "../../runtime/pki/index.ts";
import { forge, makeCa, tempDir, writeFiles, type TestCa } from "./support.ts";

const TD = "mesh.example";
const ORDERS = `spiffe://${TD}/ns/shop/sa/orders`;
const GATEWAY = `spiffe://${TD}/ns/shop/sa/gateway`;
const PAYMENTS = `spiffe://${TD}/ns/shop/sa/payments`;

let ca: TestCa;
let rogue: TestCa;
let tmp: Awaited<ReturnType<typeof tempDir>>;
let files: Record<string, string>;
let serverSvid: IssuedSvid;

interface Creds {
  chain: string;
  leaf: string;
  intermediate: string;
  key: string;
}
const creds: Record<string, Creds> = {};

beforeAll(async () => {
  tmp = await tempDir("pki-tls");
  [ca, rogue] = await Promise.all([makeCa(TD), makeCa(TD)]);
  serverSvid = await ca.issuer.issue(ORDERS, { dnsNames: ["localhost"] });
  const clients: Record<string, { svid: IssuedSvid | null; forged?: { pem: string; keyPem: string } }> = {
    gateway: { svid: await ca.issuer.issue(GATEWAY) },
    payments: { svid: await ca.issuer.issue(PAYMENTS) },
    foreign: { svid: await rogue.issuer.issue(GATEWAY) },
  };
  const written: Record<string, string> = { "bundle.pem": ca.bundle.toPem() };
  for (const [name, { svid }] of Object.entries(clients)) {
    written[`${name}-chain.pem`] = svid!.chainPem;
    written[`${name}-leaf.pem`] = svid!.certPem;
    written[`${name}-int.pem`] = svid!.chainPem.slice(svid!.certPem.length);
    written[`${name}-key.pem`] = svid!.keyPem!.reveal();
  }
  // a leaf from the trusted intermediate whose SPIFFE ID has a `..` segment: OpenSSL has no objection
  const dot = await forge(ca.intermediate, { uris: [`spiffe://${TD}/ns/shop/../sa/admin`] });
  const { exportPrivateKey } = await import("../../runtime/pki/index.ts");
  written["dotdot-leaf.pem"] = dot.pem;
  written["dotdot-int.pem"] = toPem(ca.intermediate.certificate.der, "CERTIFICATE");
  written["dotdot-chain.pem"] = dot.pem + written["dotdot-int.pem"];
  written["dotdot-key.pem"] = (await exportPrivateKey(dot.keys.privateKey)).reveal();
  files = await writeFiles(tmp.dir, written);
  for (const name of ["gateway", "payments", "foreign", "dotdot"])
    creds[name] = {
      chain: files[`${name}-chain.pem`]!,
      leaf: files[`${name}-leaf.pem`]!,
      intermediate: files[`${name}-int.pem`]!,
      key: files[`${name}-key.pem`]!,
    };
});
afterAll(async () => {
  await tmp.cleanup();
});

// ───────────── an mTLS server with the verifier ─────────────

interface MtlsServer {
  port: number;
  /** Every verdict the server reached, in order (a handshake OpenSSL refused reaches none). */
  verdicts: SvidVerdict[];
  /** `socket.authorized` (OpenSSL's chain check) of each connection that reached secureConnection. */
  opensslAuthorized: boolean[];
  close(): Promise<void>;
}

/**
 * `verifier-only`: OpenSSL asks for a certificate but lets every handshake through; the SVID verifier
 * alone decides. `openssl+verifier`: OpenSSL also refuses handshakes without a chain to the bundle.
 */
async function startMtlsServer(
  mode: "verifier-only" | "openssl+verifier",
  expect?: PeerExpectation,
): Promise<MtlsServer> {
  // Node drops the client's intermediates once OpenSSL verified the chain (nodejs/node#65579): the
  // verifier completes the leaf with the trust domain's known intermediate.
  const verifier = new SvidVerifier(ca.bundle, { intermediates: [ca.intermediate.certificate] });
  const verdicts: SvidVerdict[] = [];
  const opensslAuthorized: boolean[] = [];
  const server = tls.createServer({
    key: serverSvid.keyPem!.reveal(),
    cert: serverSvid.chainPem,
    ca: ca.bundle.toPem(),
    requestCert: true,
    rejectUnauthorized: mode === "openssl+verifier",
    minVersion: "TLSv1.3",
  });
  server.on("secureConnection", (socket) => {
    const verdict = verifyTlsPeer(socket, verifier, expect === undefined ? {} : { expect });
    verdicts.push(verdict);
    opensslAuthorized.push(socket.authorized);
    if (!verdict.ok) {
      socket.destroy();
      return;
    }
    let head = "";
    socket.on("data", (chunk: Buffer) => {
      head += chunk.toString("latin1");
      if (!head.includes("\r\n\r\n")) return;
      const body = `hello ${verdict.spiffeId}\n`;
      socket.end(
        `HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: ${body.length}\r\nconnection: close\r\n\r\n${body}`,
      );
    });
    socket.on("error", () => {});
  });
  server.on("tlsClientError", () => {});
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  return {
    port: (server.address() as AddressInfo).port,
    verdicts,
    opensslAuthorized,
    close: () => new Promise((r) => server.close(() => r())),
  };
}

function exec(
  cmd: string,
  args: string[],
  input = "",
): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(cmd, args, { stdio: ["pipe", "pipe", "pipe"], timeout: 10_000 });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d) => (stdout += d));
    child.stderr.on("data", (d) => (stderr += d));
    child.on("close", (code) => resolve({ code: code ?? -1, stdout, stderr }));
    child.stdin.end(input);
  });
}

const curl = (port: number, who: string | null) =>
  exec("curl", [
    "-sS", "--max-time", "5", "--cacert", files["bundle.pem"]!,
    "--resolve", `localhost:${port}:127.0.0.1`,
    ...(who ? ["--cert", creds[who]!.chain, "--key", creds[who]!.key] : []),
    `https://localhost:${port}/`,
  ]); // prettier-ignore

const sClient = (port: number, who: string | null) =>
  exec(
    "openssl",
    [
      "s_client", "-connect", `127.0.0.1:${port}`, "-servername", "localhost", "-CAfile", files["bundle.pem"]!,
      "-verify_return_error", "-quiet",
      ...(who ? ["-cert", creds[who]!.leaf, "-cert_chain", creds[who]!.intermediate, "-key", creds[who]!.key] : []),
    ],
    "GET / HTTP/1.0\r\nHost: localhost\r\n\r\n",
  ); // prettier-ignore

const CLIENTS = { curl, "openssl s_client": sClient };

describe.each(["verifier-only", "openssl+verifier"] as const)("mTLS server (%s)", (mode) => {
  let server: MtlsServer;
  beforeAll(async () => {
    server = await startMtlsServer(mode);
  });
  afterAll(async () => {
    await server.close();
  });

  describe.each(Object.entries(CLIENTS))("with %s", (_tool, connect) => {
    it("accepts_a_valid_svid_and_serves_200", async () => {
      const r = await connect(server.port, "gateway");
      expect(r.stdout).toContain(`hello ${GATEWAY}`);
      expect(server.verdicts.at(-1)).toMatchObject({ ok: true, spiffeId: GATEWAY });
    });

    it("refuses_a_client_without_certificate", async () => {
      const before = server.verdicts.length;
      const r = await connect(server.port, null);
      expect(r.stdout).not.toContain("hello");
      if (mode === "verifier-only")
        expect(server.verdicts.slice(before)).toEqual([
          expect.objectContaining({ ok: false, code: "E_RT_PKI_NO_CERTIFICATE" }),
        ]);
      else expect(server.verdicts.length).toBe(before); // OpenSSL refused the handshake first
    });

    it("refuses_an_svid_of_a_foreign_ca", async () => {
      const before = server.verdicts.length;
      const r = await connect(server.port, "foreign");
      expect(r.stdout).not.toContain("hello");
      if (mode === "verifier-only")
        expect(server.verdicts.slice(before)).toEqual([
          expect.objectContaining({ ok: false, code: "E_RT_PKI_UNTRUSTED_ISSUER" }),
        ]);
      else expect(server.verdicts.length).toBe(before);
    });

    it("refuses_a_leaf_with_a_dot_dot_id_that_openssl_accepted", async () => {
      const before = server.verdicts.length;
      const r = await connect(server.port, "dotdot");
      expect(r.stdout).not.toContain("hello");
      expect(server.verdicts.slice(before)).toEqual([
        expect.objectContaining({ ok: false, code: "E_RT_PKI_ID_DOT_SEGMENT" }),
      ]);
      if (mode === "openssl+verifier") expect(server.opensslAuthorized.at(-1)).toBe(true);
    });
  });
});

describe("mTLS server expecting one peer", () => {
  it("refuses_a_valid_svid_of_another_identity", async () => {
    const server = await startMtlsServer("openssl+verifier", new Set([GATEWAY]));
    try {
      expect((await curl(server.port, "gateway")).stdout).toContain(`hello ${GATEWAY}`);
      const r = await curl(server.port, "payments");
      expect(r.stdout).not.toContain("hello");
      expect(server.verdicts.at(-1)).toMatchObject({
        ok: false,
        code: "E_RT_PKI_UNEXPECTED_PEER",
        spiffeId: PAYMENTS,
      });
    } finally {
      await server.close();
    }
  });
});

// ───────────── Node clients: why the verifier exists ─────────────

/** A one-way TLS server presenting `svid`, answering every connection with a line. */
async function plainServer(svid: { keyPem: string; chainPem: string }) {
  const server = tls.createServer({ key: svid.keyPem, cert: svid.chainPem, minVersion: "TLSv1.3" }, (s) => {
    s.on("error", () => {});
    s.end("pong\n");
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  return {
    port: (server.address() as AddressInfo).port,
    close: () => new Promise<void>((r) => server.close(() => r())),
  };
}

function connectNode(
  port: number,
  options: tls.ConnectionOptions,
): Promise<{ ok: true; data: string; chain: number } | { ok: false; error: Error & { code?: string } }> {
  return new Promise((resolve) => {
    const socket = tls.connect({ host: "127.0.0.1", port, ca: ca.bundle.toPem(), ...options }, () => {
      const chain = peerChain(socket).length;
      let data = "";
      socket.on("data", (d: Buffer) => (data += d));
      socket.on("end", () => resolve({ ok: true, data, chain }));
    });
    socket.on("error", (error) => resolve({ ok: false, error }));
  });
}

describe("Node's hostname check against the verifier", () => {
  it("node_refuses_a_valid_uri_only_svid_that_the_verifier_accepts", async () => {
    const svid = await ca.issuer.issue(ORDERS); // the SPIFFE ID is its only SAN
    const server = await plainServer({ keyPem: svid.keyPem!.reveal(), chainPem: svid.chainPem });
    try {
      const byNode = await connectNode(server.port, { servername: "orders" });
      expect(byNode).toMatchObject({ ok: false, error: { code: "ERR_TLS_CERT_ALTNAME_INVALID" } });
      const byVerifier = await connectNode(server.port, {
        servername: "orders",
        checkServerIdentity: spiffeServerIdentity(ca.verifier, ORDERS),
      });
      expect(byVerifier).toMatchObject({ ok: true, data: "pong\n" });
      if (byVerifier.ok) expect(byVerifier.chain).toBeGreaterThanOrEqual(2);
    } finally {
      await server.close();
    }
  });

  it.each([
    ["another_service", PAYMENTS, "E_RT_PKI_UNEXPECTED_PEER"],
    ["a_dot_dot_id", `spiffe://${TD}/ns/shop/../sa/orders`, "E_RT_PKI_ID_DOT_SEGMENT"],
  ])("node_accepts_%s_with_a_matching_dns_name_that_the_verifier_refuses", async (_name, id, code) => {
    const made = await forge(ca.intermediate, { uris: [id], dns: ["localhost"] });
    const { exportPrivateKey } = await import("../../runtime/pki/index.ts");
    const server = await plainServer({
      keyPem: (await exportPrivateKey(made.keys.privateKey)).reveal(),
      chainPem: made.pem + toPem(ca.intermediate.certificate.der, "CERTIFICATE"),
    });
    try {
      const byNode = await connectNode(server.port, { servername: "localhost" });
      expect(byNode).toMatchObject({ ok: true, data: "pong\n" });
      const byVerifier = await connectNode(server.port, {
        servername: "localhost",
        checkServerIdentity: spiffeServerIdentity(ca.verifier, ORDERS),
      });
      expect(byVerifier).toMatchObject({ ok: false, error: { code } });
    } finally {
      await server.close();
    }
  });
});
