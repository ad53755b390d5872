/**
 * Certificates at run time: the identity files hot-reload (renamed files, and the Kubernetes `..data`
 * symlink swap) without dropping in-flight requests, new connections use the new SVID on both sides,
 * an invalid set of files is refused while the old identity keeps serving, /ready follows the identity
 * (false before it exists and after it expired), renewal is announced, and the development issuer
 * re-issues the sidecar's own SVID. TLS sessions resume between sidecars, and no connection outlives the
 * certificates (or the roots) it was authenticated with, on either side — nor one still draining after a
 * reload rebuilt or moved the inbound port. No log line, metric or /config
 * output ever holds a private key.
 */
import { X509Certificate } from "node:crypto";
import { mkdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import http from "node:http";
import https from "node:https";
import http2 from "node:http2";
import { join } from "node:path";
import tls from "node:tls";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import type { SidecarRuntimeConfig } from "../../runtime/contract/index.ts";
import { EXPIRY_MARGIN_MS } from "../../runtime/upstream/tls.ts";
import {
  certificatesToPem,
  createIntermediateCa,
  createRootCa,
  exportPrivateKey,
  IdentitySource,
  TrustBundle,
  writeCaDirectory,
  type IdentityEvent,
  type IssuedSvid,
} from "../../runtime/pki/index.ts";
import { svidFiles } from "../../components/translate/translate.ts";
import { forge, makeCa, tempDir, type TestCa } from "../pki/support.ts";
import { freePort, startUpstream, type Upstream, type UpstreamHandler } from "../support/gateway.ts";
import {
  localSidecar,
  meshConfigs,
  metricValue,
  spiffe,
  startTestSidecar,
  TD,
  until,
  writeIdentity,
  writeIdentityKubernetesStyle,
  type TestSidecar,
} from "./support.ts";

const SERVICES = {
  web: { image: "r/web:1", port: 8080, calls: ["orders"] },
  // Generous timeouts: these tests are about identities; on a busy machine twenty concurrent handshakes
  // plus the app's 300 ms may exceed the default per-try timeout (500 ms).
  orders: {
    image: "r/orders:1",
    port: 8080,
    allow: [{ from: ["web"] }],
    timeout: "10s",
    connectTimeout: "5s",
    retries: { perTryTimeout: "10s" },
  },
};

let tmp: Awaited<ReturnType<typeof tempDir>>;
let ca: TestCa;
let configs: SidecarRuntimeConfig[];
const stops: (() => Promise<void>)[] = [];
const keysSeen: string[] = [];
const config = (name: string) => configs.find((c) => c.name === name)!;

beforeAll(async () => {
  tmp = await tempDir("sidecar-identity");
  ca = await makeCa(TD, { skewMs: 0 });
  configs = meshConfigs(SERVICES);
});
afterEach(async () => {
  for (const stop of stops.splice(0).reverse()) await stop();
});
afterAll(async () => {
  await tmp?.cleanup();
});

async function issue(service: string, ttlMs?: number): Promise<IssuedSvid> {
  const svid = await ca.issuer.issue(spiffe(service), ttlMs ? { ttlMs, clockSkewMs: 0 } : {});
  keysSeen.push(svid.keyPem!.reveal());
  return svid;
}

let n = 0;
async function instance(
  service: string,
  o: {
    handler?: UpstreamHandler;
    svid?: IssuedSvid | null;
    endpoints?: Record<string, number[]>;
    maxRequestsPerSocket?: number;
    edit?: (c: Omit<SidecarRuntimeConfig, "hash">) => Omit<SidecarRuntimeConfig, "hash">;
  } = {},
): Promise<{ app: Upstream; sidecar: TestSidecar; dir: string }> {
  const app = await startUpstream(o.handler);
  const dir = join(tmp.dir, `${service}-${n++}`);
  await mkdir(dir, { recursive: true });
  if (o.svid !== null) await writeIdentity(dir, o.svid ?? (await issue(service)), ca.bundle.toPem());
  const sidecar = await startTestSidecar(
    localSidecar(config(service), {
      identityDir: dir,
      appPort: app.port,
      endpoints: o.endpoints ?? {},
      ...(o.edit ? { edit: o.edit } : {}),
    }),
    o.maxRequestsPerSocket ? { maxRequestsPerSocket: o.maxRequestsPerSocket } : {},
  );
  stops.push(async () => {
    await sidecar.drain();
    await app.close();
    expectNoKeys(sidecar);
  });
  return { app, sidecar, dir };
}

/** The serial of the certificate a fresh TLS handshake with the sidecar's inbound port is served. */
async function servedSerial(s: TestSidecar, client: IssuedSvid): Promise<string> {
  const socket = tls.connect({
    host: "127.0.0.1",
    port: s.ports.inbound,
    ca: ca.bundle.toPem(),
    cert: client.chainPem,
    key: client.keyPem!.reveal(),
    checkServerIdentity: () => undefined,
  });
  await new Promise<void>((r, j) => socket.once("secureConnect", () => r()).once("error", j));
  const serial = socket.getPeerCertificate().serialNumber.toLowerCase();
  socket.destroy();
  return serial;
}

function viaProxy(port: number, url: string): Promise<{ status: number; headers: http.IncomingHttpHeaders }> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: "127.0.0.1", port, path: url, agent: false }, (res) => {
      res.resume();
      res.on("end", () => resolve({ status: res.statusCode ?? 0, headers: res.headers }));
    });
    req.on("error", reject);
    req.end();
  });
}

const metrics = async (s: TestSidecar) => (await fetch(`${s.adminUrl}/metrics`)).text();
const readyStatus = async (s: TestSidecar) => (await fetch(`${s.adminUrl}/ready`)).status;
const fingerprint = (s: IssuedSvid) =>
  new X509Certificate(s.der).fingerprint256.replace(/:/g, "").toLowerCase();

/** No private key anywhere in what the sidecar printed. */
function expectNoKeys(s: TestSidecar): void {
  const raw = s.rawLog();
  expect(raw).not.toContain("PRIVATE KEY");
  for (const k of keysSeen) {
    const body = k.split("\n").slice(1, 3).join("");
    expect(raw).not.toContain(body.slice(0, 40));
  }
}

describe("hot reload of identity files", () => {
  it("is_not_ready_before_the_identity_exists_and_becomes_ready_when_it_appears", async () => {
    const { sidecar, dir } = await instance("orders", { svid: null });
    expect(sidecar.ready()).toBe(false);
    expect(await readyStatus(sidecar)).toBe(503);
    expect((await fetch(`${sidecar.adminUrl}/live`)).status).toBe(200);
    await writeIdentity(dir, await issue("orders"), ca.bundle.toPem());
    await until(() => sidecar.ready(), 5000, "ready");
    expect(await readyStatus(sidecar)).toBe(200);
    const text = await metrics(sidecar);
    const expiry = metricValue(text, "meshgate_cert_expiry_seconds", { identity: spiffe("orders") });
    expect(expiry).toBeGreaterThan(86_000);
    expect(expiry).toBeLessThanOrEqual(86_400);
  });

  // An issuer that does not clamp its leaves (cert-manager's CA issuer) can sign a leaf that outlives
  // its intermediate: the identity ends with the intermediate (/ready false, no mTLS), and the expiry
  // gauge the alerts read must say so, not the leaf's later notAfter.
  it("reports_the_expiry_of_the_chain_when_its_intermediate_ends_before_the_leaf", async () => {
    const root = await createRootCa({ trustDomain: TD, clockSkewMs: 0 });
    const shortInt = await createIntermediateCa(root, { validityMs: 3_600_000, clockSkewMs: 0 });
    const leaf = await forge(shortInt, { uris: [spiffe("orders")], notAfter: Date.now() + 86_400_000 });
    const dir = join(tmp.dir, `short-intermediate-${n++}`);
    await mkdir(dir, { recursive: true });
    await writeFile(join(dir, "bundle.pem"), certificatesToPem([root.certificate]));
    await writeFile(join(dir, "svid-key.pem"), (await exportPrivateKey(leaf.keys.privateKey)).reveal());
    await writeFile(join(dir, "svid.pem"), leaf.pem + certificatesToPem([shortInt.certificate]));
    const app = await startUpstream();
    const sidecar = await startTestSidecar(
      localSidecar(config("orders"), { identityDir: dir, appPort: app.port }),
    );
    stops.push(async () => {
      await sidecar.drain();
      await app.close();
    });
    expect(sidecar.ready()).toBe(true);
    const expiry = metricValue(await metrics(sidecar), "meshgate_cert_expiry_seconds", {
      identity: spiffe("orders"),
    });
    expect(expiry).toBeGreaterThan(3000);
    expect(expiry).toBeLessThanOrEqual(3600);
  });

  it("serves_new_svids_to_new_connections_without_dropping_in_flight_requests", async () => {
    const orders = await instance("orders", {
      // every request on a new connection, so the caller's current SVID is visible in each XFCC
      maxRequestsPerSocket: 1,
      handler: (_req, res) => {
        setTimeout(() => {
          res.writeHead(200, { "content-length": 2 });
          res.end("ok");
        }, 300);
      },
    });
    const webSvid = await issue("web");
    const web = await instance("web", {
      svid: webSvid,
      endpoints: { orders: [orders.sidecar.ports.inbound] },
    });
    const caller = await issue("web");
    const oldServerSerial = await servedSerial(orders.sidecar, caller);

    const inFlight = Array.from({ length: 20 }, (_, i) =>
      viaProxy(web.sidecar.ports.outbound, `http://orders/f/${i}`),
    );
    await new Promise((r) => setTimeout(r, 100));
    const newOrders = await issue("orders");
    const newWeb = await issue("web");
    await writeIdentity(orders.dir, newOrders, ca.bundle.toPem());
    await writeIdentity(web.dir, newWeb, ca.bundle.toPem());
    const results = await Promise.all(inFlight);
    expect(results.map((r) => r.status)).toEqual(Array(20).fill(200));

    await until(() => orders.sidecar.identity()?.serial === newOrders.serial, 5000, "orders reload");
    await until(() => web.sidecar.identity()?.serial === newWeb.serial, 5000, "web reload");
    expect(await servedSerial(orders.sidecar, caller)).toBe(newOrders.serial);
    expect(oldServerSerial).not.toBe(newOrders.serial);
    // The outbound side: a new connection presents the new SVID (the XFCC hash is the peer's leaf).
    expect((await viaProxy(web.sidecar.ports.outbound, "http://orders/after")).status).toBe(200);
    expect(orders.app.received.at(-1)!.headers["x-forwarded-client-cert"]).toContain(
      `Hash=${fingerprint(newWeb)}`,
    );
    expect(
      metricValue(await metrics(orders.sidecar), "meshgate_identity_reloads_total", { result: "loaded" }),
    ).toBe(2);
  });

  it("picks_up_a_kubernetes_style_symlink_swap", async () => {
    const dir = join(tmp.dir, "k8s-orders");
    const first = await issue("orders");
    await writeIdentityKubernetesStyle(dir, { svid: first, bundlePem: ca.bundle.toPem() });
    const app = await startUpstream();
    const sidecar = await startTestSidecar(
      localSidecar(config("orders"), { identityDir: dir, appPort: app.port }),
      {
        identityPollMs: 60_000, // the watcher alone must see the swap
      },
    );
    stops.push(async () => {
      await sidecar.drain();
      await app.close();
    });
    expect(sidecar.identity()?.serial).toBe(first.serial);
    const second = await issue("orders");
    await writeIdentityKubernetesStyle(dir, { svid: second, bundlePem: ca.bundle.toPem() });
    await until(() => sidecar.identity()?.serial === second.serial, 5000, "symlink swap");
    expect(await servedSerial(sidecar, await issue("web"))).toBe(second.serial);
  });

  it.each([
    [
      "refuses_a_certificate_written_without_its_key",
      async (dir: string) => writeFile(join(dir, "svid.pem"), (await issue("orders")).chainPem),
      "E_RT_PKI_KEY_MISMATCH",
    ],
    [
      "refuses_a_half_written_certificate",
      async (dir: string) => {
        const pem = (await issue("orders")).chainPem;
        await writeFile(join(dir, "svid.pem"), pem.slice(0, Math.floor(pem.length / 3)));
      },
      "E_RT_PKI_PEM",
    ],
    [
      "refuses_an_svid_of_another_workload",
      async (dir: string) => writeIdentity(dir, await issue("web"), ca.bundle.toPem()),
      "E_RT_IDENTITY_MISMATCH",
    ],
    [
      "refuses_an_svid_of_a_foreign_ca",
      async (dir: string) => {
        const rogue = await makeCa(TD);
        const svid = await rogue.issuer.issue(spiffe("orders"));
        keysSeen.push(svid.keyPem!.reveal());
        await writeIdentity(dir, svid, ca.bundle.toPem());
      },
      "E_RT_PKI_UNTRUSTED_ISSUER",
    ],
    [
      "refuses_a_bundle_that_is_not_a_root",
      async (dir: string) => writeFile(join(dir, "bundle.pem"), (await issue("orders")).certPem),
      "E_RT_PKI_NOT_A_CA",
    ],
    // PEM parsing skips a block without its END line: a file read mid-write would load as the blocks
    // written so far — a chain without its intermediate (every peer's OpenSSL refuses the leaf), a
    // bundle without the root a rotation still needs (its callers refused, their connections retired).
    [
      "refuses_a_certificate_file_whose_intermediate_is_cut_off",
      async (dir: string) => {
        const next = await issue("orders");
        const intermediate = next.chainPem.slice(next.certPem.length);
        await writeFile(join(dir, "svid-key.pem"), next.keyPem!.reveal());
        await writeFile(join(dir, "svid.pem"), next.certPem + intermediate.slice(0, intermediate.length / 2));
      },
      "E_RT_PKI_PEM",
    ],
    [
      "refuses_a_bundle_whose_last_root_is_cut_off",
      async (dir: string) => {
        const other = (await makeCa(TD)).bundle.toPem();
        await writeFile(join(dir, "bundle.pem"), ca.bundle.toPem() + other.slice(0, other.length / 2));
      },
      "E_RT_PKI_PEM",
    ],
    // Peers hold the bundle's roots alone: the chain must verify as presented, whatever intermediates
    // the sidecar knows for verifying others.
    [
      "refuses_a_certificate_file_without_its_intermediate_though_intermediates_pem_holds_it",
      async (dir: string) => {
        const next = await issue("orders");
        await writeFile(join(dir, "intermediates.pem"), next.chainPem.slice(next.certPem.length));
        await writeFile(join(dir, "svid-key.pem"), next.keyPem!.reveal());
        await writeFile(join(dir, "svid.pem"), next.certPem);
      },
      "E_RT_PKI_UNTRUSTED_ISSUER",
    ],
  ])("%s_and_keeps_serving_the_old_identity", async (_claim, corrupt, code) => {
    const original = await issue("orders");
    const { sidecar, dir } = await instance("orders", { svid: original });
    const caller = await issue("web");
    await corrupt(dir);
    await until(
      () => sidecar.logs.some((l) => l.event === "identity_rejected" && l.code === code),
      5000,
      `rejection ${code}`,
    );
    expect(sidecar.identity()?.serial).toBe(original.serial);
    expect(sidecar.ready()).toBe(true);
    expect(await servedSerial(sidecar, caller)).toBe(original.serial);
    expect(
      metricValue(await metrics(sidecar), "meshgate_identity_reloads_total", { result: "rejected" }),
    ).toBeGreaterThanOrEqual(1);
    // Then a good set of files is loaded again.
    const fixed = await issue("orders");
    await writeIdentity(dir, fixed, ca.bundle.toPem());
    await until(() => sidecar.identity()?.serial === fixed.serial, 5000, "recovery");
  });

  // A config reload that names other identity files (or another SPIFFE ID) starts a new identity source;
  // one that cannot load an identity is refused whole, as docs/sidecar.md says: the serving identity
  // must not be swapped for none (every caller refused, every call 503).
  it.each<{
    claim: string;
    files: (dir: string) => Promise<void>;
    as: string;
    accepted: boolean;
    code?: string;
  }>([
    {
      claim: "a_config_naming_identity_files_that_do_not_exist_is_refused",
      files: async () => {},
      as: "orders",
      accepted: false,
      code: "E_RT_IDENTITY_FILE",
    },
    {
      claim: "a_config_naming_files_that_hold_another_workloads_svid_is_refused",
      files: async (dir) => writeIdentity(dir, await issue("web"), ca.bundle.toPem()),
      as: "orders",
      accepted: false,
      code: "E_RT_IDENTITY_MISMATCH",
    },
    {
      claim: "a_config_naming_files_whose_svid_expired_is_refused",
      files: async (dir) => {
        const short = await issue("orders", 1000);
        await writeIdentity(dir, short, ca.bundle.toPem());
        await until(() => Date.now() > short.notAfter, 3000, "the short leaf's expiry");
      },
      as: "orders",
      accepted: false,
      code: "E_RT_PKI_EXPIRED",
    },
    {
      claim: "a_config_naming_valid_files_of_another_identity_is_served_and_named_in_xfcc",
      files: async (dir) => writeIdentity(dir, await issue("orders-v2"), ca.bundle.toPem()),
      as: "orders-v2",
      accepted: true,
    },
  ])("$claim", async ({ files, as, accepted, code }) => {
    const original = await issue("orders");
    const { sidecar, app } = await instance("orders", { svid: original });
    const dir = join(tmp.dir, `reload-${n++}`);
    await mkdir(dir, { recursive: true });
    await files(dir);
    const next = localSidecar(config("orders"), {
      identityDir: dir,
      appPort: app.port,
      edit: (c) => ({ ...c, identity: spiffe(as) }),
    });
    await metrics(sidecar); // a scrape shows the serving identity's expiry before the reload
    const r = await sidecar.reload(JSON.stringify(next));
    expect(r.ok).toBe(accepted);
    if (!accepted) expect(r.ok ? "" : r.error).toContain(code);
    expect(sidecar.ready()).toBe(true);
    const served = accepted ? sidecar.identity()! : original;
    expect(sidecar.identity()?.serial).toBe(served.serial);
    // A caller still gets through, and the app is told which identity received it.
    const caller = await issue("web");
    const status = await new Promise<number>((resolve, reject) => {
      const req = https.request(
        {
          host: "127.0.0.1",
          port: sidecar.ports.inbound,
          path: "/x",
          ca: ca.bundle.toPem(),
          cert: caller.chainPem,
          key: caller.keyPem!.reveal(),
          checkServerIdentity: () => undefined,
          agent: false,
        },
        (res) => {
          res.resume();
          res.on("end", () => resolve(res.statusCode ?? 0));
        },
      );
      req.on("error", reject);
      req.end();
    });
    expect(status).toBe(200);
    expect(app.received.at(-1)!.headers["x-forwarded-client-cert"]).toBe(
      `By=${spiffe(accepted ? as : "orders")};Hash=${fingerprint(caller)};URI=${spiffe("web")}`,
    );
    // The expiry gauge follows the identity serving; a replaced identity's series is left at 0 (what the
    // alerts ignore), not frozen at its last value.
    const text = await metrics(sidecar);
    const expiry = (sa: string) =>
      metricValue(text, "meshgate_cert_expiry_seconds", { identity: spiffe(sa) });
    expect(expiry(accepted ? as : "orders")).toBeGreaterThan(80_000);
    if (accepted) expect(expiry("orders")).toBe(0);
  });

  it("announces_renewal_and_is_not_ready_once_the_svid_expired", async () => {
    const short = await issue("orders", 3000);
    const { sidecar, dir } = await instance("orders", { svid: short });
    const web = await instance("web", {
      svid: await issue("web", 3000),
      endpoints: { orders: [sidecar.ports.inbound] },
    });
    expect(sidecar.ready()).toBe(true);
    // renewal time of a 3 s leaf with renewBefore 8h: half-way (1.5 s)
    await until(() => sidecar.logs.some((l) => l.event === "identity_renewal_due"), 4000, "renewal warning");
    await until(() => !sidecar.ready(), 5000, "expiry");
    expect(await readyStatus(sidecar)).toBe(503);
    expect(sidecar.logs.some((l) => l.event === "identity_expired")).toBe(true);
    expect(
      metricValue(await metrics(sidecar), "meshgate_cert_expiry_seconds", { identity: spiffe("orders") }),
    ).toBeLessThanOrEqual(0);
    // An expired identity never originates mTLS.
    await until(() => !web.sidecar.ready(), 5000, "web expiry");
    const r = await viaProxy(web.sidecar.ports.outbound, "http://orders/x");
    expect(r.status).toBe(503);
    expect(r.headers["x-meshgate-error"]).toBe("upstream_identity_unavailable");
    // New files make it ready again.
    await writeIdentity(dir, await issue("orders"), ca.bundle.toPem());
    await until(() => sidecar.ready(), 5000, "ready again");
  });

  it("shows_identity_status_in_config_without_key_material", async () => {
    const svid = await issue("orders");
    const { sidecar } = await instance("orders", { svid });
    const text = await (await fetch(`${sidecar.adminUrl}/config`)).text();
    const body = JSON.parse(text) as {
      identityStatus: { serial: string; ready: boolean };
      svid: { keyFile: string };
    };
    expect(body.identityStatus).toMatchObject({ serial: svid.serial, ready: true });
    expect(body.svid.keyFile).toMatch(/svid-key\.pem$/);
    expect(text).not.toContain("PRIVATE KEY");
    expect(text).not.toContain(svid.keyPem!.reveal().split("\n")[1]!);
  });

  it("shows_the_otlp_endpoint_in_config_without_its_credentials", async () => {
    // https://user:token@… is how basic-auth OTLP gateways are configured (Node sends it as Authorization).
    const otlpEndpoint = "https://123456:glc_secret-token@otlp.example.com/otlp";
    const { sidecar } = await instance("orders", {
      edit: (c) => ({
        ...c,
        telemetry: { ...c.telemetry, tracing: { ...c.telemetry.tracing, otlpEndpoint } },
      }),
    });
    const text = await (await fetch(`${sidecar.adminUrl}/config`)).text();
    expect(text).not.toContain("glc_secret-token");
    expect((JSON.parse(text) as SidecarRuntimeConfig).telemetry.tracing.otlpEndpoint).toBe(
      "https://%5Bredacted%5D:%5Bredacted%5D@otlp.example.com/otlp",
    );
  });
});

/** A TLS 1.3 connection to an inbound port presenting `client`, offering `alpn` (and `session`). */
function mtlsTo(port: number, client: IssuedSvid, alpn: string, session?: Buffer): tls.TLSSocket {
  return tls.connect({
    host: "127.0.0.1",
    port,
    ca: ca.bundle.toPem(),
    cert: client.chainPem,
    key: client.keyPem!.reveal(),
    minVersion: "TLSv1.3",
    ALPNProtocols: [alpn],
    checkServerIdentity: () => undefined,
    ...(session ? { session } : {}),
  });
}

/** A raw mTLS connection to an inbound port as `client`, offering `session`; resolves once it settled. */
async function rawMtls(
  port: number,
  client: IssuedSvid,
  session?: Buffer,
): Promise<{ resumed: boolean; sessions: Buffer[]; answer: string; closed: boolean }> {
  const sessions: Buffer[] = [];
  const socket = mtlsTo(port, client, "http/1.1", session);
  socket.on("session", (s: Buffer) => sessions.push(s));
  let answer = "";
  socket.on("data", (d: Buffer) => (answer += d.toString()));
  const resumed = await new Promise<boolean>((r, j) =>
    socket.once("secureConnect", () => r(socket.isSessionReused())).once("error", j),
  );
  socket.write("GET /r HTTP/1.1\r\nhost: orders\r\n\r\n");
  const closed = await new Promise<boolean>((r) => {
    socket.once("close", () => r(true));
    socket.on("error", () => {});
    setTimeout(() => r(false), 1500);
  });
  socket.destroy();
  return { resumed, sessions, answer, closed };
}

describe("TLS session resumption between sidecars", () => {
  /** orders closes each connection after one request, so every call through web opens a new one. */
  async function pair(webSvid: IssuedSvid) {
    const orders = await instance("orders", { maxRequestsPerSocket: 1 });
    const web = await instance("web", {
      svid: webSvid,
      endpoints: { orders: [orders.sidecar.ports.inbound] },
    });
    const call = async (path: string) => {
      const r = await viaProxy(web.sidecar.ports.outbound, `http://orders${path}`);
      expect(r.status).toBe(200);
      return orders.app.received.at(-1)!.headers;
    };
    const counts = async () => {
      const text = await metrics(orders.sidecar);
      return {
        handshakes: metricValue(text, "meshgate_tls_handshakes_total"),
        resumed: metricValue(text, "meshgate_tls_resumptions_total"),
      };
    };
    return { orders, web, call, counts };
  }

  it("resumes_the_session_on_each_new_connection_and_still_verifies_and_names_the_peer", async () => {
    const webSvid = await issue("web");
    const { call, counts } = await pair(webSvid);
    for (let i = 0; i < 4; i++) {
      const headers = await call(`/r/${i}`);
      expect(headers["x-meshgate-peer"]).toBe(spiffe("web"));
      expect(headers["x-forwarded-client-cert"]).toContain(`Hash=${fingerprint(webSvid)}`);
    }
    expect(await counts()).toEqual({ handshakes: 4, resumed: 3 });
  });

  it.each([
    ["makes_a_full_handshake_after_the_caller_renewed_its_svid", "web"],
    // The callee's new ticket keys refuse the session made under its previous certificate.
    ["makes_a_full_handshake_after_the_callee_changed_its_identity", "orders"],
  ] as const)("%s", async (_claim, renewing) => {
    const webSvid = await issue("web");
    const { web, orders, call, counts } = await pair(webSvid);
    await call("/a");
    await call("/b");
    const renewed = await issue(renewing);
    const side = renewing === "web" ? web : orders;
    await writeIdentity(side.dir, renewed, ca.bundle.toPem());
    await until(() => side.sidecar.identity()?.serial === renewed.serial, 5000, `${renewing} reload`);
    const caller = renewing === "web" ? renewed : webSvid;
    expect((await call("/c"))["x-forwarded-client-cert"]).toContain(`Hash=${fingerprint(caller)}`);
    expect(await counts()).toEqual({ handshakes: 3, resumed: 1 });
  });

  it("refuses_a_resumed_session_whose_peer_certificate_expired_since", async () => {
    const { sidecar } = await instance("orders");
    const client = await issue("web", 2500);
    const first = await rawMtls(sidecar.ports.inbound, client);
    expect(first.answer).toMatch(/^HTTP\/1\.1 200/);
    expect(first.sessions.length).toBeGreaterThan(0);
    await new Promise((r) => setTimeout(r, client.notAfter - Date.now() + 1200));
    // OpenSSL resumes the session (it does not look at the certificate again); the verifier does.
    const again = await rawMtls(sidecar.ports.inbound, client, first.sessions.at(-1));
    expect(again.resumed).toBe(true);
    expect(again.closed).toBe(true);
    expect(again.answer).toBe("");
    const text = await metrics(sidecar);
    expect(metricValue(text, "meshgate_tls_resumptions_total")).toBe(0);
    expect(metricValue(text, "meshgate_tls_handshake_failures_total", { reason: "E_RT_PKI_EXPIRED" })).toBe(
      1,
    );
  }, 15_000);
});

/** A raw HTTP/1.1 mTLS connection to an inbound port as `client`, kept open: what it read, and when it closed. */
async function keptMtls(port: number, client: IssuedSvid) {
  const socket = mtlsTo(port, client, "http/1.1");
  const seen = { answer: "", closedAt: 0 };
  socket.on("data", (d: Buffer) => (seen.answer += d.toString()));
  socket.on("error", () => {});
  const closed = new Promise<void>((r) =>
    socket.once("close", () => {
      seen.closedAt = Date.now();
      r();
    }),
  );
  await new Promise<void>((r, j) => socket.once("secureConnect", () => r()).once("error", j));
  return { socket, seen, closed };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, Math.max(0, ms)));

describe("mesh connections live no longer than the certificates they were authenticated with", () => {
  const retired = async (s: TestSidecar, reason: string) =>
    metricValue(await metrics(s), "meshgate_tls_connections_retired_total", { reason });

  it("closes_an_idle_inbound_connection_when_the_callers_chain_expires", async () => {
    const { sidecar } = await instance("orders");
    const client = await issue("web", 2500);
    const c = await keptMtls(sidecar.ports.inbound, client);
    c.socket.write("GET /r HTTP/1.1\r\nhost: orders\r\n\r\n");
    await until(() => c.seen.answer.includes("\r\n\r\n"), 3000, "the first response");
    expect(c.seen.answer).toMatch(/^HTTP\/1\.1 200/);
    await c.closed;
    // Kept for Node's 75 s keep-alive otherwise; closed once the leaf's notAfter passed.
    expect(c.seen.closedAt).toBeGreaterThanOrEqual(client.notAfter);
    expect(c.seen.closedAt).toBeLessThan(client.notAfter + 1500);
    expect(await retired(sidecar, "expired")).toBe(1);
  }, 15_000);

  it("lets_a_response_in_progress_at_expiry_complete_as_the_last_on_its_http1_connection", async () => {
    const client = await issue("web", 2500);
    const { sidecar } = await instance("orders", {
      handler: (_req, res) =>
        void sleep(client.notAfter - Date.now() + 600).then(() => {
          res.setHeader("content-type", "text/plain");
          res.end("x".repeat(100_000));
        }),
    });
    const c = await keptMtls(sidecar.ports.inbound, client);
    c.socket.write("GET /slow HTTP/1.1\r\nhost: orders\r\n\r\n");
    await c.closed;
    const [head, body] = c.seen.answer.split("\r\n\r\n") as [string, string];
    expect(head).toMatch(/^HTTP\/1\.1 200/);
    expect(head.toLowerCase()).toContain("connection: close");
    expect(body).toBe("x".repeat(100_000));
    expect(c.seen.closedAt).toBeGreaterThan(client.notAfter);
    expect(await retired(sidecar, "expired")).toBe(1);
  }, 15_000);

  it("sends_goaway_to_an_http2_session_at_expiry_and_lets_its_open_stream_finish", async () => {
    const client = await issue("web", 2500);
    const { sidecar } = await instance("orders", {
      handler: (_req, res) => void sleep(client.notAfter - Date.now() + 600).then(() => res.end("done")),
    });
    const session = http2.connect(`https://127.0.0.1:${sidecar.ports.inbound}`, {
      createConnection: () => mtlsTo(sidecar.ports.inbound, client, "h2"),
    });
    session.on("error", () => {});
    let goawayAt = 0;
    session.once("goaway", () => (goawayAt = Date.now()));
    const closed = new Promise<void>((r) => session.once("close", () => r()));
    const stream = session.request({ ":path": "/slow", ":authority": "orders" });
    let status = 0;
    let body = "";
    stream.on("response", (h) => (status = Number(h[":status"])));
    stream.on("data", (d: Buffer) => (body += d.toString()));
    await new Promise<void>((r, j) => stream.once("end", () => r()).once("error", j));
    expect([status, body]).toEqual([200, "done"]);
    expect(goawayAt).toBeGreaterThanOrEqual(client.notAfter);
    await closed;
    expect(await retired(sidecar, "expired")).toBe(1);
  }, 15_000);

  it.each([
    ["stops_reusing_a_connection_a_second_before_the_callees_certificate_expires", "orders"],
    ["stops_reusing_a_connection_a_second_before_the_callers_certificate_expires", "web"],
  ] as const)(
    "%s",
    async (_claim, shortLived) => {
      const short = await issue(shortLived, 3500);
      const orders = await instance("orders", shortLived === "orders" ? { svid: short } : {});
      const web = await instance("web", {
        ...(shortLived === "web" ? { svid: short } : {}),
        endpoints: { orders: [orders.sidecar.ports.inbound] },
      });
      const call = async (path: string) => {
        expect((await viaProxy(web.sidecar.ports.outbound, `http://orders${path}`)).status).toBe(200);
        return orders.app.received.at(-1)!.headers;
      };
      const handshakes = async () =>
        metricValue(await metrics(orders.sidecar), "meshgate_tls_handshakes_total");
      await call("/a");
      // The short-lived side renews; the connection made before keeps serving until its lease ends.
      const side = shortLived === "web" ? web : orders;
      const renewed = await issue(shortLived);
      await writeIdentity(side.dir, renewed, ca.bundle.toPem());
      await until(() => side.sidecar.identity()?.serial === renewed.serial, 5000, `${shortLived} reload`);
      await call("/b");
      expect(await handshakes()).toBe(1);
      await sleep(short.notAfter - EXPIRY_MARGIN_MS - Date.now() + 150);
      const headers = await call("/c");
      expect(await handshakes()).toBe(2);
      if (shortLived === "web")
        expect(headers["x-forwarded-client-cert"]).toContain(`Hash=${fingerprint(renewed)}`);
      expect(await retired(orders.sidecar, "expired")).toBe(0);
    },
    20_000,
  );

  describe("through a staged root rotation", () => {
    let next: TestCa;
    let both: string;
    let intermediates: string;
    beforeAll(async () => {
      next = await makeCa(TD, { skewMs: 0 });
      both = new TrustBundle(TD, [ca.root.certificate, next.root.certificate]).toPem();
      intermediates = certificatesToPem([ca.intermediate.certificate, next.intermediate.certificate]);
    });
    const fromNext = async (service: string) => {
      const svid = await next.issuer.issue(spiffe(service), {});
      keysSeen.push(svid.keyPem!.reveal());
      return svid;
    };

    async function rotatingPair() {
      const orders = await instance("orders", { svid: null });
      await writeIdentity(orders.dir, await issue("orders"), both, intermediates);
      const web = await instance("web", {
        svid: null,
        endpoints: { orders: [orders.sidecar.ports.inbound] },
      });
      await writeIdentity(web.dir, await issue("web"), both, intermediates);
      for (const s of [orders, web])
        await until(async () => (await readyStatus(s.sidecar)) === 200, 5000, "ready");
      const call = async (path: string) =>
        expect((await viaProxy(web.sidecar.ports.outbound, `http://orders${path}`)).status).toBe(200);
      const handshakes = async () =>
        metricValue(await metrics(orders.sidecar), "meshgate_tls_handshakes_total");
      /** Writes an identity issued by the new root, with `bundle`, and waits until it serves. */
      const move = async (s: { dir: string; sidecar: TestSidecar }, service: string, bundle: string) => {
        const svid = await fromNext(service);
        await writeIdentity(s.dir, svid, bundle, intermediates);
        await until(() => s.sidecar.identity()?.serial === svid.serial, 5000, `${service} reload`);
      };
      return { orders, web, call, handshakes, move };
    }

    // Each side in turn drops the old root from its bundle while the other has moved to the new one.
    it.each([
      ["does_not_reuse_a_connection_to_a_server_whose_root_the_callers_new_bundle_dropped", "web"],
      ["retires_an_inbound_connection_whose_callers_root_the_servers_new_bundle_dropped", "orders"],
    ] as const)("%s", async (_claim, dropping) => {
      const pair = await rotatingPair();
      const other = dropping === "web" ? "orders" : "web";
      await pair.call("/a");
      // The other side moves to the new root, trusting both: the connection stays in use.
      await pair.move(pair[other], other, both);
      await pair.call("/b");
      expect(await pair.handshakes()).toBe(1);
      // The dropping side moves to the new root alone: the connection authenticated through the old one
      // is done (the caller stops reusing it; the callee closes it at once).
      await pair.move(pair[dropping], dropping, next.bundle.toPem());
      const expected = dropping === "orders" ? 1 : 0;
      await until(
        async () => (await retired(pair.orders.sidecar, "untrusted")) === expected,
        3000,
        "retired",
      );
      await sleep(100);
      await pair.call("/c");
      expect(await pair.handshakes()).toBe(2);
    });

    // A reload that rebuilds orders' inbound stack (another header limit) or moves its port: web's idle
    // connection, made before, stays with the old stack while it drains (30 s) — its next request would
    // still be served there.
    it.each([
      [
        "retires_a_connection_draining_on_a_rebuilt_inbound_stack_whose_callers_root_the_new_bundle_dropped",
        "rebuilt",
      ],
      [
        "retires_a_connection_draining_on_a_moved_inbound_port_whose_callers_root_the_new_bundle_dropped",
        "moved",
      ],
    ] as const)("%s", async (_claim, change) => {
      const pair = await rotatingPair();
      await pair.call("/a");
      const port = await freePort();
      const reloaded = localSidecar(config("orders"), {
        identityDir: pair.orders.dir,
        appPort: pair.orders.app.port,
        edit: (c) =>
          change === "moved"
            ? { ...c, inbound: { ...c.inbound, port } }
            : {
                ...c,
                inbound: {
                  ...c.inbound,
                  limits: { ...c.inbound.limits, maxHeaderBytes: c.inbound.limits.maxHeaderBytes + 1024 },
                },
              },
      });
      expect(await pair.orders.sidecar.reload(JSON.stringify(reloaded))).toMatchObject({
        ok: true,
        changed: true,
      });
      expect(pair.orders.sidecar.logs.find((l) => l.event === "listeners_changed")).toMatchObject(
        change === "moved" ? { moved: ["inbound"] } : { rebuilt: ["inbound"] },
      );
      // Orders drops the old root: the draining stack's connection is retired too (closed now, being
      // idle), not kept for the rest of the drain to serve web's next request.
      await pair.move(pair.web, "web", both);
      await pair.move(pair.orders, "orders", next.bundle.toPem());
      await until(async () => (await retired(pair.orders.sidecar, "untrusted")) === 1, 3000, "retired");
      if (change === "rebuilt") {
        // Web's next call needs a new connection (web's endpoint is still the port that serves).
        await sleep(100);
        await pair.call("/c");
        expect(await pair.handshakes()).toBe(2);
      }
    });
  });
});

describe("the development issuer", () => {
  it("issues_its_own_svid_from_a_ca_directory_and_renews_it", async () => {
    const caDir = join(tmp.dir, "dev-ca");
    const root = await createRootCa({ trustDomain: TD, clockSkewMs: 0 });
    const intermediate = await createIntermediateCa(root, { clockSkewMs: 0 });
    await writeCaDirectory(caDir, { root, intermediate });
    const { sidecar, dir } = await instance("orders", {
      svid: null,
      edit: (c) => ({ ...c, svid: { ...c.svid, clockSkewMs: 0, issuer: { caDir, workloadTtlMs: 4000 } } }),
    });
    expect(sidecar.ready()).toBe(true);
    const first = sidecar.identity()!;
    expect(first.notAfter - first.notBefore).toBeLessThanOrEqual(4000);
    expect((await stat(join(dir, "svid-key.pem"))).mode & 0o777).toBe(0o600);
    const bundle = TrustBundle.fromPem(TD, await readFile(join(dir, "bundle.pem"), "utf8"));
    expect(bundle.roots[0]!.fingerprint).toBe(root.certificate.fingerprint);
    // renewal at half-life (2 s): a new SVID, written to the files and served
    await until(() => (sidecar.identity()?.serial ?? first.serial) !== first.serial, 6000, "renewal");
    expect(sidecar.ready()).toBe(true);
    expect(sidecar.logs.filter((l) => l.event === "identity_issued").length).toBeGreaterThanOrEqual(2);
    expect(sidecar.rawLog()).not.toContain("PRIVATE KEY");
  });

  it("renews_at_half_life_from_the_ca_it_read_while_the_directory_is_briefly_unreadable", async () => {
    const caDir = join(tmp.dir, `dev-ca-gone-${n++}`);
    const root = await createRootCa({ trustDomain: TD, clockSkewMs: 0 });
    await writeCaDirectory(caDir, {
      root,
      intermediate: await createIntermediateCa(root, { clockSkewMs: 0 }),
    });
    const { sidecar } = await instance("orders", {
      svid: null,
      edit: (c) => ({ ...c, svid: { ...c.svid, clockSkewMs: 0, issuer: { caDir, workloadTtlMs: 4000 } } }),
    });
    const first = sidecar.identity()!;
    await rm(caDir, { recursive: true });
    await until(() => (sidecar.identity()?.serial ?? first.serial) !== first.serial, 6000, "renewal");
    expect(sidecar.ready()).toBe(true);
  });

  // The CA directory is read at each issuance: one missing when the sidecar starts (written a moment
  // later) is read again at the next try, and a CA directory rotated since is issued from.
  it.each([
    ["issues_once_a_ca_directory_missing_at_start_appears", "missing"],
    ["issues_once_a_ca_directory_damaged_at_start_is_repaired", "damaged"],
  ] as const)("%s", async (_claim, state) => {
    const caDir = join(tmp.dir, `dev-ca-${state}-${n++}`);
    if (state === "damaged") {
      await mkdir(caDir, { recursive: true });
      await writeFile(join(caDir, "intermediate.pem"), "-----BEGIN CERTIFICATE-----\nAAAA");
    }
    const { sidecar } = await instance("orders", {
      svid: null,
      edit: (c) => ({ ...c, svid: { ...c.svid, clockSkewMs: 0, issuer: { caDir, workloadTtlMs: 60_000 } } }),
    });
    expect(sidecar.ready()).toBe(false);
    expect(sidecar.logs.some((l) => l.event === "identity_issue_failed")).toBe(true);
    const root = await createRootCa({ trustDomain: TD, clockSkewMs: 0 });
    const intermediate = await createIntermediateCa(root, { clockSkewMs: 0 });
    if (state === "damaged") await rm(caDir, { recursive: true });
    await writeCaDirectory(caDir, { root, intermediate });
    await until(() => sidecar.ready(), 10_000, "an SVID issued from the CA directory");
    expect(sidecar.identity()!.intermediates.map((c) => c.fingerprint)).toContain(
      intermediate.certificate.fingerprint,
    );
  });
});

describe("IdentitySource", () => {
  it("falls_back_to_polling_when_the_directory_does_not_exist_yet", async () => {
    const dir = join(tmp.dir, "later", "identity");
    const events: IdentityEvent[] = [];
    const source = new IdentitySource(
      { ...svidFiles(dir), renewBeforeMs: 3_600_000, clockSkewMs: 0, issuer: null },
      { expectedId: spiffe("orders"), trustDomain: TD, pollIntervalMs: 100, onEvent: (e) => events.push(e) },
    );
    await source.start();
    expect(source.ready()).toBe(false);
    expect(events.map((e) => e.kind)).toEqual(["rejected"]);
    await writeIdentity(dir, await issue("orders"), ca.bundle.toPem());
    await until(() => source.ready(), 3000, "poll");
    source.close();
    // A missing file is reported once per change, not once per poll.
    expect(events.filter((e) => e.kind === "rejected").length).toBeLessThanOrEqual(3);
    expect(
      JSON.stringify(events.map((e) => ({ ...e, identity: undefined, previous: undefined }))),
    ).not.toContain("PRIVATE");
  });

  it("takes_an_svid_refused_as_not_yet_valid_once_its_not_before_passes_without_another_file_change", async () => {
    // Issued by a machine whose clock runs 1.5 s ahead, not backdated: refused when read, valid soon.
    const dir = join(tmp.dir, "not-yet-valid");
    const svid = await ca.issuer.issue(spiffe("orders"), { now: Date.now() + 1500, clockSkewMs: 0 });
    keysSeen.push(svid.keyPem!.reveal());
    await writeIdentity(dir, svid, ca.bundle.toPem());
    const events: IdentityEvent[] = [];
    const source = new IdentitySource(
      { ...svidFiles(dir), renewBeforeMs: 3_600_000, clockSkewMs: 0, issuer: null },
      { expectedId: spiffe("orders"), trustDomain: TD, pollIntervalMs: 100, onEvent: (e) => events.push(e) },
    );
    try {
      await source.start();
      expect(source.ready()).toBe(false);
      expect(events.map((e) => (e.kind === "rejected" ? e.code : e.kind))).toEqual([
        "E_RT_PKI_NOT_YET_VALID",
      ]);
      await until(() => source.ready(), 4000, "the SVID's notBefore");
      expect(source.current()!.serial).toBe(svid.serial);
    } finally {
      source.close();
    }
  });

  it("keeps_the_peer_verifier_across_leaf_renewals_and_replaces_it_when_the_bundle_changes", async () => {
    const dir = join(tmp.dir, "verifier");
    await writeIdentity(dir, await issue("orders"), ca.bundle.toPem());
    const source = new IdentitySource(
      { ...svidFiles(dir), renewBeforeMs: 3_600_000, clockSkewMs: 0, issuer: null },
      { expectedId: spiffe("orders"), trustDomain: TD, pollIntervalMs: 100 },
    );
    await source.start();
    const v1 = source.current()!.verifier;
    await writeIdentity(dir, await issue("orders"), ca.bundle.toPem());
    expect((await source.reload()).ok).toBe(true);
    expect(source.current()!.verifier).toBe(v1);
    const other = await createRootCa({ trustDomain: TD });
    await writeFile(join(dir, "bundle.pem"), ca.bundle.withRoot(other.certificate).toPem());
    expect((await source.reload()).ok).toBe(true);
    expect(source.current()!.verifier).not.toBe(v1);
    expect(source.current()!.bundle.roots).toHaveLength(2);
    source.close();
  });
});
