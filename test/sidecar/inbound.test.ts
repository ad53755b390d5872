/**
 * The sidecar's inbound listener over real TLS, reached by curl and `openssl s_client` (independent
 * clients): a valid SVID gets the app's 200; no certificate, a foreign CA's SVID, TLS 1.2, plaintext and
 * a CA certificate posing as a peer are refused at the handshake; an identity of the trust domain that no
 * rule admits gets 403 with the reason; the service's limits (431, 413, 408) hold; the app receives the
 * canonical path and the peer headers the sidecar owns. Permissive mode takes plaintext on the same port.
 * A reload changes the mode and the limits on the same socket and moves the port; the admin port it
 * refuses whole.
 */
import { execFile } from "node:child_process";
import { X509Certificate } from "node:crypto";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import tls from "node:tls";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { exportPrivateKey, toPem, type IssuedSvid } from "../../runtime/pki/index.ts";
import { forge, makeCa, tempDir, writeFiles, type TestCa } from "../pki/support.ts";
import type { SidecarRuntimeConfig } from "../../runtime/contract/index.ts";
import { freePort, startUpstream, type Upstream } from "../support/gateway.ts";
import { rawConnection } from "../support/raw-client.ts";
import {
  localSidecar,
  meshConfigs,
  metricValue,
  spiffe,
  startTestSidecar,
  TD,
  writeIdentity,
  type TestSidecar,
} from "./support.ts";

interface CurlResult {
  code: number;
  status: string;
  headers: string;
  body: string;
  stderr: string;
}

/** curl with full control; never throws: the exit code is part of the result. */
function curl(args: string[], input?: string): Promise<CurlResult> {
  return new Promise((resolve) => {
    const child = execFile(
      "curl",
      ["-sS", "--max-time", "10", "-D", "-", "-w", "\n%{http_code}", ...args],
      { encoding: "utf8" },
      (err, stdout, stderr) => {
        const code = err ? ((err as { code?: number }).code ?? 1) : 0;
        const lines = stdout.split("\n");
        const status = lines.pop() ?? "";
        const text = lines.join("\n");
        const split = text.indexOf("\r\n\r\n");
        resolve({
          code: typeof code === "number" ? code : 1,
          status,
          headers: split >= 0 ? text.slice(0, split) : text,
          body: split >= 0 ? text.slice(split + 4) : "",
          stderr,
        });
      },
    );
    if (input !== undefined) child.stdin?.end(input);
  });
}

/** `openssl s_client` sending one request; returns stdout and the exit code. */
function sClient(port: number, args: string[], request: string): Promise<{ code: number; out: string }> {
  return new Promise((resolve) => {
    const child = execFile(
      "openssl",
      ["s_client", "-connect", `127.0.0.1:${port}`, "-quiet", "-verify_return_error", ...args],
      { encoding: "utf8", timeout: 10_000 },
      (err, stdout, stderr) =>
        resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, out: `${stdout}\n${stderr}` }),
    );
    child.stdin?.end(request);
  });
}

let tmp: Awaited<ReturnType<typeof tempDir>>;
let ca: TestCa;
let rogue: TestCa;
let app: Upstream;
let strict: TestSidecar;
let permissive: TestSidecar;
let files: Record<string, string>;
const svids: Record<string, IssuedSvid> = {};

const SERVICES = {
  orders: {
    image: "r/orders:1",
    port: 8080,
    allow: [
      { from: ["web"], methods: ["GET", "PUT"], paths: ["/orders/**"] },
      { from: ["admin"], methods: ["GET"] },
    ],
    limits: { maxHeaderSize: "4KiB", maxBodySize: "1KiB", headerTimeout: "1s" },
  },
  web: { image: "r/web:1", port: 8080, calls: ["orders"] },
  admin: { image: "r/admin:1", port: 8080, calls: ["orders"] },
  stranger: { image: "r/stranger:1", port: 8080 },
};

beforeAll(async () => {
  tmp = await tempDir("sidecar-inbound");
  [ca, rogue] = await Promise.all([makeCa(TD), makeCa(TD)]);
  app = await startUpstream();
  const serverSvid = await ca.issuer.issue(spiffe("orders"), { dnsNames: ["localhost"] });
  await writeIdentity(join(tmp.dir, "orders"), serverSvid, ca.bundle.toPem());
  svids.web = await ca.issuer.issue(spiffe("web"));
  svids.stranger = await ca.issuer.issue(spiffe("stranger"));
  svids.foreign = await rogue.issuer.issue(spiffe("web"));
  const written: Record<string, string> = {
    "bundle.pem": ca.bundle.toPem(),
    "ca-as-peer.pem": toPem(ca.intermediate.certificate.der, "CERTIFICATE"),
    "ca-as-peer-key.pem": (await exportPrivateKey(ca.intermediate.privateKey)).reveal(),
  };
  for (const [name, s] of Object.entries(svids)) {
    written[`${name}.pem`] = s.chainPem;
    written[`${name}-leaf.pem`] = s.certPem;
    written[`${name}-int.pem`] = s.chainPem.slice(s.certPem.length);
    written[`${name}-key.pem`] = s.keyPem!.reveal();
  }
  // A leaf of the trusted intermediate whose SPIFFE ID has a `..` segment: OpenSSL accepts it.
  const dot = await forge(ca.intermediate, { uris: [`spiffe://${TD}/ns/shop/../sa/web`] });
  written["dotdot.pem"] = dot.pem + toPem(ca.intermediate.certificate.der, "CERTIFICATE");
  written["dotdot-key.pem"] = (await exportPrivateKey(dot.keys.privateKey)).reveal();
  files = await writeFiles(tmp.dir, written);

  const [orders] = meshConfigs(SERVICES).filter((c) => c.name === "orders");
  strict = await startTestSidecar(
    localSidecar(orders!, { identityDir: join(tmp.dir, "orders"), appPort: app.port }),
  );
  const [ordersPermissive] = meshConfigs(SERVICES, { mtls: "permissive" }).filter((c) => c.name === "orders");
  permissive = await startTestSidecar(
    localSidecar(ordersPermissive!, { identityDir: join(tmp.dir, "orders"), appPort: app.port }),
  );
});

afterAll(async () => {
  await Promise.all([strict?.drain(), permissive?.drain()]);
  await app?.close();
  await tmp?.cleanup();
});

const url = (s: TestSidecar, path: string) => `https://localhost:${s.ports.inbound}${path}`;
const as = (name: string) => [
  "--cert",
  files[`${name}.pem`]!,
  "--key",
  files[`${name}-key.pem`]!,
  "--cacert",
  files["bundle.pem"]!,
];
const metrics = async (s: TestSidecar) => (await fetch(`${s.adminUrl}/metrics`)).text();
const lastReceived = () => app.received[app.received.length - 1]!;

describe("inbound mTLS with curl and openssl", () => {
  it("curl_with_a_valid_svid_gets_200_from_the_app", async () => {
    const r = await curl([...as("web"), url(strict, "/orders/1")]);
    expect(r.status).toBe("200");
    expect(JSON.parse(r.body)).toEqual({ path: "/orders/1", method: "GET" });
    expect(lastReceived().headers["x-meshgate-peer"]).toBe(spiffe("web"));
    expect(lastReceived().headers["x-forwarded-client-cert"]).toBe(
      `By=${spiffe("orders")};Hash=${svidFingerprint(svids.web!)};URI=${spiffe("web")}`,
    );
  });

  // RFC 6455 §4.1: an opening handshake is a GET, and the one the sidecar sends the app is. A PUT upgrade
  // was authorized as the PUT web may send and reached the app as a GET (answered 200, relayed): a method
  // the rules did not authorize for this request. Refused before deciding; the app receives nothing.
  it.each([
    ["refuses_a_put_upgrade_from_an_allowed_peer_before_authorizing_it", "PUT"],
    ["refuses_a_post_upgrade_before_authorizing_it", "POST"],
  ])("%s", async (_claim, method) => {
    const seen = app.received.length;
    const r = await curl([
      ...as("web"),
      "-X",
      method,
      "--http1.1",
      "-H",
      "Connection: Upgrade",
      "-H",
      "Upgrade: websocket",
      "-H",
      "Sec-WebSocket-Version: 13",
      "-H",
      "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
      url(strict, "/orders/1"),
    ]);
    expect(r.status).toBe("400");
    expect(r.headers).toMatch(/^x-meshgate-error: bad_upgrade\r?$/m);
    expect(app.received.length).toBe(seen);
  });

  it("openssl_s_client_with_a_valid_svid_gets_200", async () => {
    const r = await sClient(
      strict.ports.inbound,
      [
        "-cert",
        files["web-leaf.pem"]!,
        "-cert_chain",
        files["web-int.pem"]!,
        "-key",
        files["web-key.pem"]!,
        "-CAfile",
        files["bundle.pem"]!,
      ],
      "GET /orders/2 HTTP/1.1\r\nHost: orders\r\nConnection: close\r\n\r\n",
    );
    expect(r.out).toMatch(/^HTTP\/1\.1 200 /m);
    expect(lastReceived().url).toBe("/orders/2");
  });

  it("curl_without_a_certificate_is_refused_at_the_handshake", async () => {
    const before = metricValue(await metrics(strict), "meshgate_tls_handshake_failures_total");
    const r = await curl(["--cacert", files["bundle.pem"]!, url(strict, "/orders/1")]);
    expect(r.code).not.toBe(0);
    expect(r.status).toBe("000");
    expect(metricValue(await metrics(strict), "meshgate_tls_handshake_failures_total")).toBeGreaterThan(
      before,
    );
  });

  it("openssl_s_client_without_a_certificate_is_refused", async () => {
    const seen = app.received.length;
    const r = await sClient(
      strict.ports.inbound,
      ["-CAfile", files["bundle.pem"]!],
      "GET /orders/3 HTTP/1.1\r\nHost: orders\r\nConnection: close\r\n\r\n",
    );
    expect(r.out).not.toMatch(/HTTP\/1\.1 200/);
    expect(r.out).toMatch(/alert|error/i);
    expect(app.received.length).toBe(seen);
  });

  it("an_svid_of_a_foreign_ca_is_refused", async () => {
    const r = await curl([...as("foreign"), url(strict, "/orders/1")]);
    expect(r.code).not.toBe(0);
    expect(r.status).toBe("000");
  });

  it("a_ca_certificate_posing_as_a_peer_is_refused", async () => {
    const seen = app.received.length;
    const r = await curl([
      "--cert",
      files["ca-as-peer.pem"]!,
      "--key",
      files["ca-as-peer-key.pem"]!,
      "--cacert",
      files["bundle.pem"]!,
      url(strict, "/orders/1"),
    ]);
    expect(r.status).toBe("000");
    expect(app.received.length).toBe(seen);
  });

  it("an_svid_openssl_accepts_but_spiffe_forbids_is_refused_by_the_verifier", async () => {
    const reason = { reason: "E_RT_PKI_ID_DOT_SEGMENT" };
    const before = metricValue(await metrics(strict), "meshgate_tls_handshake_failures_total", reason);
    const r = await curl([...as("dotdot"), url(strict, "/orders/1")]);
    expect(r.status).toBe("000");
    expect(metricValue(await metrics(strict), "meshgate_tls_handshake_failures_total", reason)).toBe(
      before + 1,
    );
    expect(strict.logs.some((l) => l.event === "peer_refused" && l.code === "E_RT_PKI_ID_DOT_SEGMENT")).toBe(
      true,
    );
  });

  it("tls_1_2_is_refused", async () => {
    const r = await curl([...as("web"), "--tls-max", "1.2", url(strict, "/orders/1")]);
    expect(r.code).not.toBe(0);
    expect(r.status).toBe("000");
  });

  it("plaintext_is_refused_in_strict_mode", async () => {
    const r = await curl([`http://127.0.0.1:${strict.ports.inbound}/orders/1`]);
    expect(r.status).not.toBe("200");
  });
});

describe("inbound authorization", () => {
  it.each([
    ["denies_an_identity_no_rule_admits", "stranger", "GET", "/orders/1", "peer_not_allowed", "other"],
    [
      "denies_a_method_the_rules_do_not_list",
      "web",
      "DELETE",
      "/orders/1",
      "method_not_allowed",
      spiffe("web"),
    ],
    ["denies_a_path_the_rules_do_not_list", "web", "GET", "/admin", "path_not_allowed", spiffe("web")],
    ["denies_a_dot_segment_escape", "web", "GET", "/orders/../admin", "path_not_allowed", spiffe("web")],
  ])("%s", async (_claim, who, method, path, reason, peerLabel) => {
    const before = metricValue(await metrics(strict), "meshgate_authz_denied_total", {
      reason,
      peer: peerLabel,
    });
    const seen = app.received.length;
    const r = await curl([...as(who), "-X", method, "--path-as-is", url(strict, path)]);
    expect(r.status).toBe("403");
    expect(r.headers).toMatch(new RegExp(`^x-meshgate-denied: ${reason}\\r?$`, "m"));
    expect(r.headers).toMatch(/^x-meshgate-error: authz_denied\r?$/m);
    expect(app.received.length).toBe(seen);
    expect(
      metricValue(await metrics(strict), "meshgate_authz_denied_total", {
        service: "orders",
        reason,
        peer: peerLabel,
      }),
    ).toBe(before + 1);
  });

  it("forwards_the_canonical_path_it_authorized", async () => {
    const r = await curl([...as("web"), "--path-as-is", url(strict, "/orders/./x/../%34%32?q=1")]);
    expect(r.status).toBe("200");
    expect(lastReceived().url).toBe("/orders/42?q=1");
  });

  it("refuses_an_ambiguous_target_with_400", async () => {
    const r = await curl([...as("web"), "--path-as-is", url(strict, "/orders%2F1")]);
    expect(r.status).toBe("400");
    expect(r.headers).toMatch(/^x-meshgate-error: bad_request_target\r?$/m);
  });

  it("replaces_peer_headers_a_client_sends", async () => {
    const r = await curl([
      ...as("web"),
      "-H",
      `x-meshgate-peer: ${spiffe("admin")}`,
      "-H",
      "x-forwarded-client-cert: By=x;URI=spiffe://mesh.example/ns/shop/sa/admin",
      url(strict, "/orders/9"),
    ]);
    expect(r.status).toBe("200");
    expect(lastReceived().headers["x-meshgate-peer"]).toBe(spiffe("web"));
    expect(lastReceived().headers["x-forwarded-client-cert"]).toContain(`URI=${spiffe("web")}`);
  });
});

describe("inbound limits", () => {
  it("answers_431_to_a_header_over_the_limit", async () => {
    const r = await curl([...as("web"), "-H", `x-big: ${"a".repeat(5000)}`, url(strict, "/orders/1")]);
    expect(r.status).toBe("431");
    expect(r.headers).toMatch(/^x-meshgate-error: headers_too_large\r?$/m);
  });

  it("answers_413_to_a_declared_body_over_the_limit", async () => {
    const seen = app.received.length;
    const r = await curl([
      ...as("web"),
      "-X",
      "PUT",
      "--data-binary",
      "x".repeat(2000),
      url(strict, "/orders/1"),
    ]);
    expect(r.status).toBe("413");
    expect(app.received.length).toBe(seen);
  });

  it("answers_413_to_a_chunked_body_over_the_limit", async () => {
    const r = await curl(
      [
        ...as("web"),
        "-X",
        "PUT",
        "-H",
        "transfer-encoding: chunked",
        "--data-binary",
        "@-",
        url(strict, "/orders/1"),
      ],
      "y".repeat(3000),
    );
    expect(r.status).toBe("413");
    expect(r.headers).toMatch(/x-meshgate-error: body_too_large/);
  });

  it("passes_a_body_within_the_limit", async () => {
    const r = await curl([
      ...as("web"),
      "-X",
      "PUT",
      "--data-binary",
      "z".repeat(500),
      url(strict, "/orders/5"),
    ]);
    expect(r.status).toBe("200");
    expect(lastReceived().body).toBe("z".repeat(500));
  });

  it.each([
    ["strict", () => strict],
    ["permissive (mTLS through the first-bytes front)", () => permissive],
  ])("answers_408_when_the_head_does_not_arrive_within_the_header_timeout: %s", async (_mode, sidecar) => {
    const socket = tls.connect({
      port: sidecar().ports.inbound,
      host: "127.0.0.1",
      servername: "localhost",
      ca: ca.bundle.toPem(),
      cert: svids.web!.chainPem,
      key: svids.web!.keyPem!.reveal(),
    });
    await new Promise<void>((r, j) => socket.once("secureConnect", () => r()).once("error", j));
    socket.write("GET /orders/1 HTTP/1.1\r\nHost: orders\r\n");
    const started = Date.now();
    const response = await new Promise<string>((resolve) => {
      let text = "";
      socket.on("data", (d: Buffer) => (text += d.toString()));
      socket.on("close", () => resolve(text));
      socket.on("error", () => undefined);
    });
    expect(response).toMatch(/^HTTP\/1\.1 408 /);
    expect(Date.now() - started).toBeLessThan(4000);
  });
});

describe("permissive mode", () => {
  it("accepts_plaintext_on_the_same_port_and_marks_it", async () => {
    const r = await curl([`http://127.0.0.1:${permissive.ports.inbound}/orders/7`]);
    expect(r.status).toBe("200");
    expect(lastReceived().url).toBe("/orders/7");
    expect(lastReceived().headers["x-meshgate-peer"]).toBeUndefined();
    const text = await metrics(permissive);
    expect(
      metricValue(text, "meshgate_requests_total", { direction: "inbound", mtls: "false", peer: "none" }),
    ).toBe(1);
  });

  it("still_serves_mtls_on_the_same_port", async () => {
    const r = await curl([...as("web"), url(permissive, "/orders/8")]);
    expect(r.status).toBe("200");
    expect(lastReceived().headers["x-meshgate-peer"]).toBe(spiffe("web"));
    const text = await metrics(permissive);
    expect(
      metricValue(text, "meshgate_requests_total", { direction: "inbound", mtls: "true" }),
    ).toBeGreaterThanOrEqual(1);
  });

  it("authorizes_plaintext_by_the_rules_methods_and_paths", async () => {
    const get = await curl([`http://127.0.0.1:${permissive.ports.inbound}/reports`]);
    expect(get.status).toBe("200"); // admin's rule: GET on any path
    const del = await curl([`http://127.0.0.1:${permissive.ports.inbound}/reports`, "-X", "DELETE"]);
    expect(del.status).toBe("403");
    expect(del.headers).toMatch(/^x-meshgate-denied: method_not_allowed\r?$/m);
  });

  it("refuses_a_foreign_svid_in_permissive_mode_too", async () => {
    const r = await curl([...as("foreign"), url(permissive, "/orders/1")]);
    expect(r.status).toBe("000");
  });
});

describe("principal headers (the end user the gateway authenticated)", () => {
  const FORGED = ["-H", "x-meshgate-subject: admin", "-H", "x-meshgate-scopes: orders:admin"];
  let trusting: TestSidecar;
  beforeAll(async () => {
    // A sidecar whose config names web as a peer that may assert the user (as translate names the gateway).
    const [orders] = meshConfigs(SERVICES).filter((c) => c.name === "orders");
    trusting = await startTestSidecar(
      localSidecar(orders!, {
        identityDir: join(tmp.dir, "orders"),
        appPort: app.port,
        edit: (c) => ({
          ...c,
          inbound: {
            ...c.inbound,
            principalHeaders: { ...c.inbound.principalHeaders, from: [spiffe("web")] },
          },
        }),
      }),
    );
  });
  afterAll(() => trusting?.drain());

  it.each([
    // Any allowed caller could otherwise tell the app which user its request is for.
    [
      "drops_them_from_a_mesh_peer_that_is_not_the_gateway",
      () => [...as("web"), url(strict, "/orders/5")],
      undefined,
    ],
    [
      "drops_them_from_a_plaintext_caller_in_permissive_mode",
      () => [`http://127.0.0.1:${permissive.ports.inbound}/orders/5`],
      undefined,
    ],
    ["passes_them_from_a_peer_the_config_names", () => [...as("web"), url(trusting, "/orders/5")], "admin"],
  ] as const)("%s", async (_claim, target, expected) => {
    const r = await curl([...FORGED, ...target()]);
    expect(r.status).toBe("200");
    expect(lastReceived().headers["x-meshgate-subject"]).toBe(expected);
    expect(lastReceived().headers["x-meshgate-scopes"]).toBe(
      expected === undefined ? undefined : "orders:admin",
    );
  });
});

describe("principal header names written in upper case (a hand-written config)", () => {
  let upper: TestSidecar;
  beforeAll(async () => {
    const [orders] = meshConfigs(SERVICES).filter((c) => c.name === "orders");
    upper = await startTestSidecar(
      localSidecar(orders!, {
        identityDir: join(tmp.dir, "orders"),
        appPort: app.port,
        edit: (c) => ({
          ...c,
          inbound: {
            ...c.inbound,
            principalHeaders: {
              ...c.inbound.principalHeaders,
              names: c.inbound.principalHeaders.names.map((n) => n.toUpperCase()),
            },
          },
        }),
      }),
    );
  });
  afterAll(() => upper?.drain());

  it("still_drops_them_from_a_mesh_peer_that_is_not_the_gateway", async () => {
    const r = await curl([
      "-H",
      "x-meshgate-subject: admin",
      "-H",
      "x-meshgate-scopes: orders:admin",
      ...as("web"),
      url(upper, "/orders/5"),
    ]);
    expect(r.status).toBe("200");
    expect([
      lastReceived().headers["x-meshgate-subject"],
      lastReceived().headers["x-meshgate-scopes"],
    ]).toEqual([undefined, undefined]);
  });
});

describe("drain", () => {
  it("serves_a_kept_connection_s_next_request_with_connection_close_then_closes_the_idle_rest_after_the_grace", async () => {
    const [config] = meshConfigs(SERVICES, { mtls: "permissive" }).filter((c) => c.name === "orders");
    const s = await startTestSidecar(
      localSidecar(config!, { identityDir: join(tmp.dir, "orders"), appPort: app.port }),
    );
    const base = `http://127.0.0.1:${s.ports.inbound}`;
    const busy = await rawConnection(base, "orders");
    const quiet = await rawConnection(base, "orders");
    try {
      expect((await busy.get("/orders/1"))?.status).toBe(200);
      expect((await quiet.get("/orders/2"))?.status).toBe(200);
      const began = Date.now();
      const drained = s.drain();
      await sleep(300);
      expect(busy.ended()).toBe(false); // closing it now would race a client about to send
      const r = await busy.get("/orders/3");
      expect(r?.status).toBe(200);
      expect(r!.head).toMatch(/\r\nconnection: close/i);
      expect(await busy.closed(1000)).toBe(true);
      await drained;
      expect(await quiet.closed(500)).toBe(true); // never sent again: closed after the grace, not the drain timeout
      expect(Date.now() - began).toBeGreaterThanOrEqual(900);
      expect(Date.now() - began).toBeLessThan(3000);
    } finally {
      busy.socket.destroy();
      quiet.socket.destroy();
    }
  });
});

function svidFingerprint(s: IssuedSvid): string {
  return new X509Certificate(s.der).fingerprint256.replace(/:/g, "").toLowerCase();
}

describe("reloads change how the inbound port serves", () => {
  const configFor = (
    mtls: "strict" | "permissive",
    edit: (c: Omit<SidecarRuntimeConfig, "hash">) => Omit<SidecarRuntimeConfig, "hash"> = (c) => c,
  ) =>
    localSidecar(
      meshConfigs(SERVICES, { mtls }).find((c) => c.name === "orders")!,
      {
        identityDir: join(tmp.dir, "orders"),
        appPort: app.port,
        edit,
      },
    );
  const plaintext = (port: number, path: string) => curl([`http://127.0.0.1:${port}${path}`]);

  it("turns_strict_to_permissive_and_back_on_the_same_socket", async () => {
    const sidecar = await startTestSidecar(configFor("strict"));
    try {
      const port = sidecar.ports.inbound;
      expect((await plaintext(port, "/orders/1")).status).not.toBe("200");
      const permissiveConfig = configFor("permissive");
      expect(await sidecar.reload(JSON.stringify(permissiveConfig))).toMatchObject({
        ok: true,
        hash: permissiveConfig.hash,
      });
      expect(sidecar.ports.inbound).toBe(port);
      expect(sidecar.logs.find((l) => l.event === "listeners_changed")).toMatchObject({
        rebuilt: ["inbound"],
        settings: ["mtls"],
        moved: [],
      });
      expect((await plaintext(port, "/orders/2")).status).toBe("200");
      expect((await curl([...as("web"), url(sidecar, "/orders/3")])).status).toBe("200");
      // Back to strict: plaintext must stop, and mTLS keeps serving with the identity loaded.
      expect(await sidecar.reload(JSON.stringify(configFor("strict")))).toMatchObject({ ok: true });
      expect((await plaintext(port, "/orders/4")).status).not.toBe("200");
      expect(app.received.some((r) => r.url === "/orders/4")).toBe(false);
      expect((await curl([...as("web"), url(sidecar, "/orders/5")])).status).toBe("200");
      expect(
        metricValue(await metrics(sidecar), "meshgate_config_reloads_total", { result: "success" }),
      ).toBe(2);
    } finally {
      await sidecar.drain();
    }
  });

  it("answers_431_under_a_lowered_header_limit_on_the_same_socket", async () => {
    const sidecar = await startTestSidecar(configFor("strict"));
    try {
      const header = ["-H", `x-big: ${"a".repeat(2500)}`];
      expect((await curl([...as("web"), ...header, url(sidecar, "/orders/6")])).status).toBe("200");
      const lowered = configFor("strict", (c) => ({
        ...c,
        inbound: { ...c.inbound, limits: { ...c.inbound.limits, maxHeaderBytes: 2048 } },
      }));
      expect(await sidecar.reload(JSON.stringify(lowered))).toMatchObject({ ok: true });
      expect((await curl([...as("web"), ...header, url(sidecar, "/orders/7")])).status).toBe("431");
      expect((await curl([...as("web"), url(sidecar, "/orders/8")])).status).toBe("200");
    } finally {
      await sidecar.drain();
    }
  });

  it("moves_the_inbound_port_serving_mtls_on_the_new_one_and_refusing_on_the_old", async () => {
    const sidecar = await startTestSidecar(configFor("strict"));
    try {
      const old = sidecar.ports.inbound;
      const port = await freePort();
      const moved = configFor("strict", (c) => ({ ...c, inbound: { ...c.inbound, port } }));
      expect(await sidecar.reload(JSON.stringify(moved))).toMatchObject({ ok: true });
      expect(sidecar.ports.inbound).toBe(port);
      expect((await curl([...as("web"), url(sidecar, "/orders/9")])).status).toBe("200");
      const refused = await curl([...as("web"), `https://localhost:${old}/orders/10`]);
      expect(refused.code).toBe(7); // curl: failed to connect
      expect(sidecar.logs.find((l) => l.event === "listeners_changed")).toMatchObject({
        moved: ["inbound"],
        inbound: port,
      });
    } finally {
      await sidecar.drain();
    }
  });

  it("refuses_a_reload_that_moves_the_admin_port_naming_it", async () => {
    const sidecar = await startTestSidecar(configFor("strict"));
    try {
      const hash = sidecar.currentHash();
      const r = await sidecar.reload(
        JSON.stringify(configFor("permissive", (c) => ({ ...c, admin: { port: c.admin.port + 1 } }))),
      );
      expect(r).toMatchObject({
        ok: false,
        code: "E_RT_RELOAD_RESTART_REQUIRED",
        error: expect.stringMatching(/changes admin\.port, .*restart the sidecar/),
      });
      // Refused whole: the mode it also changed is not applied either.
      expect(sidecar.currentHash()).toBe(hash);
      expect((await plaintext(sidecar.ports.inbound, "/orders/11")).status).not.toBe("200");
      expect(
        metricValue(await metrics(sidecar), "meshgate_config_reloads_total", { result: "failure" }),
      ).toBe(1);
    } finally {
      await sidecar.drain();
    }
  });
});
