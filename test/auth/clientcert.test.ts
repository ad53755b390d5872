/**
 * Client certificates at the edge (runtime/auth/clientcert.ts) over real TLS: an https server built with
 * clientCertTlsOptions() and certificates made by openssl. Allowed subjects and SANs pass, other subjects get
 * 403, no certificate 401, an untrusted CA 401 (the handshake itself succeeds, so routes without certificate
 * requirements keep working), a certificate of another provider's CA 401, chains through an intermediate,
 * and a kept connection whose certificate expired since its handshake 401; at a real gateway, a kept
 * connection whose CA a reload or a CA file rotated in place removed 401, and one whose CA stays 200.
 */
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import http2 from "node:http2";
import https from "node:https";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { setTimeout as sleep } from "node:timers/promises";
import { join } from "node:path";
import tls, { type TLSSocket } from "node:tls";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { GatewayRuntimeConfig } from "../../runtime/contract/index.ts";
import {
  Authenticator,
  CLIENT_CERT_CHALLENGE,
  clientCertTlsOptions,
  parseDn,
} from "../../runtime/auth/index.ts";
import {
  gatewayConfig,
  httpsListener,
  startTestGateway,
  startUpstream,
  type Upstream,
} from "../support/gateway.ts";
import { makeCa as makePkiCa } from "../pki/support.ts";
import { makeCa, makeCert, type Pem } from "./pki.ts";
import { facts } from "./support.ts";

const RATE = { rateLimit: { requests: 1000, per: "1s" } };

let dir: string;
let server: https.Server;
let port: number;
let ca1: Pem;
let certs: Record<string, Pem & { chain?: string }>;
let config: GatewayRuntimeConfig;
let auth: Authenticator;
let singleServer: https.Server;
let singlePort: number;
let singleAuth: Authenticator;
let serverCert: Pem;

/** An https server with the listener options for client certificates, answering with admit()'s verdict. */
async function serve(
  cfg: GatewayRuntimeConfig,
  a: Authenticator,
  serverCert: Pem,
): Promise<{ server: https.Server; port: number }> {
  const s = https.createServer(
    {
      ...clientCertTlsOptions(cfg.auth.clientCert)!,
      cert: serverCert.cert,
      key: serverCert.key,
      minVersion: "TLSv1.3",
    },
    (req, res) => {
      const route = (req.url ?? "/").slice(1);
      const r = cfg.routes.find((x) => x.name === route)!;
      const d = a.admit(route, r.auth, facts({ path: req.url!, tls: req.socket as TLSSocket }));
      if (d instanceof Promise) throw new Error("client certificates must be checked synchronously");
      const body = JSON.stringify(
        d.kind === "allow" ? { subject: d.principal?.subject ?? null, claims: d.principal?.claims } : d,
      );
      res.writeHead(d.kind === "allow" ? 200 : d.kind === "deny" ? d.status : 500, {
        "content-type": "application/json",
      });
      res.end(body);
    },
  );
  await new Promise<void>((r) => s.listen(0, "127.0.0.1", r));
  return { server: s, port: (s.address() as AddressInfo).port };
}

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "meshgate-mtls-"));
  ca1 = makeCa(dir, "ca1", "/O=Acme/CN=Partners CA");
  const ca2 = makeCa(dir, "ca2", "/O=B Corp/CN=B CA");
  const ca3 = makeCa(dir, "ca3", "/CN=Untrusted CA");
  const inter = makeCert(dir, "inter", ca1, "/O=Acme/CN=Partners Issuing CA", { ca: true });
  const inter2 = makeCert(dir, "inter2", ca1, "/O=Acme/CN=Partners Issuing CA 2", { ca: true });
  const bundle = join(dir, "partners-bundle.pem");
  writeFileSync(bundle, ca1.cert + inter.cert);
  serverCert = makeCert(dir, "server", ca1, "/CN=localhost", {
    usage: "server",
    san: "DNS:localhost,IP:127.0.0.1",
  });
  const c = (name: string, issuer: Pem, subject: string, san?: string) =>
    makeCert(dir, name, issuer, subject, san ? { san } : {});
  certs = {
    a: c("a", ca1, "/O=Acme/CN=partner-a"),
    b: c("b", ca1, "/CN=partner-b", "URI:spiffe://partners.test/ns/x/sa/b"),
    c: { ...c("c", inter, "/CN=partner-c"), chain: inter.cert },
    c2: { ...c("c2", inter2, "/CN=partner-c"), chain: inter2.cert },
    d: c("d", ca1, "/CN=someone", "DNS:D.Partner.Test"),
    ip: c("ip", ca1, "/CN=ip-client", "IP:10.0.0.7"),
    other: c("other", ca1, "/O=Acme/CN=other"),
    superset: c("superset", ca1, "/O=Acme/OU=Sales/CN=partner-a"),
    injected: c("injected", ca1, "/CN=partner-a, O=Acme"),
    sanNear: c(
      "sanNear",
      ca1,
      "/CN=near",
      "URI:spiffe://partners.test/ns/x/sa/b/extra,DNS:evil.d.partner.test",
    ),
    bcorp: c("bcorp", ca2, "/O=Acme/CN=partner-a"),
    untrusted: c("untrusted", ca3, "/O=Acme/CN=partner-a"),
  };
  config = gatewayConfig(
    [
      {
        name: "partners",
        match: { path: "/partners" },
        to: "app",
        auth: { clientCert: "partners" },
        ...RATE,
      },
      { name: "bcorp", match: { path: "/bcorp" }, to: "app", auth: { clientCert: "bcorp" }, ...RATE },
      {
        name: "rootonly",
        match: { path: "/rootonly" },
        to: "app",
        auth: { clientCert: "rootonly" },
        ...RATE,
      },
      { name: "open", match: { path: "/open" }, to: "app", public: true, ...RATE },
    ],
    { app: { port: 1 } },
    {
      clientCerts: {
        partners: {
          caFile: bundle,
          subjects: ["CN=partner-a, o=Acme", "partner-c"],
          sans: ["URI:spiffe://partners.test/ns/x/sa/b", "DNS:d.partner.test", "IP:10.0.0.7"],
        },
        bcorp: { caFile: ca2.certFile },
        rootonly: { caFile: ca1.certFile, subjects: ["partner-c"] },
      },
    },
  );
  auth = new Authenticator(config);
  ({ server, port } = await serve(config, auth, serverCert));
  const single = gatewayConfig(
    [
      {
        name: "partners",
        match: { path: "/partners" },
        to: "app",
        auth: { clientCert: "partners" },
        ...RATE,
      },
    ],
    { app: { port: 1 } },
    { clientCerts: { partners: { caFile: ca1.certFile, subjects: ["partner-c"] } } },
  );
  singleAuth = new Authenticator(single);
  ({ server: singleServer, port: singlePort } = await serve(single, singleAuth, serverCert));
});

afterAll(async () => {
  for (const s of [server, singleServer]) {
    s.closeAllConnections();
    await new Promise<void>((r) => s.close(() => r()));
  }
  auth.close();
  singleAuth.close();
  rmSync(dir, { recursive: true, force: true });
});

function call(
  path: string,
  client?: Pem & { chain?: string },
  to = port,
  agent: https.Agent | false = false,
): Promise<{ status: number; body: Record<string, unknown>; reused: boolean }> {
  return new Promise((resolve, reject) => {
    const req = https.request(
      {
        host: "127.0.0.1",
        port: to,
        path,
        ca: ca1.cert,
        servername: "localhost",
        agent,
        ...(client ? { cert: client.chain ? client.cert + client.chain : client.cert, key: client.key } : {}),
      },
      (res) => {
        let text = "";
        res.on("data", (c: Buffer) => (text += c.toString()));
        res.on("end", () =>
          resolve({
            status: res.statusCode ?? 0,
            body: JSON.parse(text) as Record<string, unknown>,
            reused: req.reusedSocket,
          }),
        );
      },
    );
    req.on("error", reject);
    req.end();
  });
}

describe("client certificates over real TLS", () => {
  it.each([
    ["admits_an_allowed_subject_dn_in_any_order_and_type_case", "/partners", "a", 200],
    ["admits_an_allowed_uri_san", "/partners", "b", 200],
    ["admits_a_chain_through_an_intermediate_held_in_the_providers_ca_file", "/partners", "c", 200],
    ["admits_a_chain_completed_from_another_providers_intermediate_up_to_its_root", "/rootonly", "c", 200],
    [
      "answers_401_for_a_client_sent_intermediate_no_ca_file_holds_on_a_shared_listener",
      "/partners",
      "c2",
      401,
    ],
    ["admits_an_allowed_dns_san_case_insensitively", "/partners", "d", 200],
    ["admits_an_allowed_ip_san", "/partners", "ip", 200],
    ["answers_403_for_another_subject_of_the_trusted_ca", "/partners", "other", 403],
    ["answers_403_for_a_subject_with_extra_attributes", "/partners", "superset", 403],
    ["answers_403_for_a_common_name_hiding_a_comma", "/partners", "injected", 403],
    ["answers_403_for_sans_that_only_resemble_allowed_ones", "/partners", "sanNear", 403],
    ["answers_401_without_a_certificate", "/partners", undefined, 401],
    ["answers_401_for_a_certificate_of_an_untrusted_ca", "/partners", "untrusted", 401],
    ["answers_401_for_a_certificate_of_another_providers_ca", "/partners", "bcorp", 401],
    ["admits_any_certificate_of_a_provider_without_rules", "/bcorp", "bcorp", 200],
    ["answers_401_for_partners_on_the_other_providers_route", "/bcorp", "a", 401],
    ["serves_routes_without_requirements_to_clients_without_certificates", "/open", undefined, 200],
    ["serves_routes_without_requirements_to_clients_with_untrusted_certificates", "/open", "untrusted", 200],
  ])("%s", async (_name, path, who, status) => {
    const r = await call(path, who ? certs[who] : undefined);
    expect(r.status).toBe(status);
  });

  it("admits_a_chain_through_an_intermediate_when_the_provider_is_the_listeners_only_one", async () => {
    expect((await call("/partners", certs.c, singlePort)).status).toBe(200);
    expect((await call("/partners", certs.a, singlePort)).status).toBe(403);
    expect((await call("/partners", certs.bcorp, singlePort)).status).toBe(401);
  });

  it.each([
    ["without_a_certificate", undefined],
    ["with_a_certificate_of_an_untrusted_ca", "untrusted"],
    ["with_a_certificate_of_another_providers_ca", "bcorp"],
  ])("challenges_a_401_%s_with_the_client_certificate_scheme", async (_name, who) => {
    // RFC 9110 §11.6.1: a 401 carries at least one challenge; client certificates have no registered scheme.
    const r = await call("/partners", who ? certs[who] : undefined);
    expect([r.status, r.body.headers]).toEqual([401, { "www-authenticate": CLIENT_CERT_CHALLENGE }]);
  });

  it("names_the_reason_of_each_refusal", async () => {
    expect((await call("/partners", certs.untrusted)).body.reason).toMatch(/did not verify \([A-Z_]+\)/);
    expect((await call("/partners", certs.bcorp)).body.reason).toContain(
      "not issued by a CA in the caFile of provider partners",
    );
    expect((await call("/partners", certs.other)).body.reason).toContain("subject is not allowed");
    expect((await call("/partners")).body.reason).toContain("requires authentication");
  });

  it("makes_the_subject_dn_and_sans_the_principal", async () => {
    const r = await call("/partners", certs.b);
    expect(r.body.subject).toBe("CN=partner-b");
    expect(r.body.claims).toMatchObject({ cn: "partner-b", sans: ["URI:spiffe://partners.test/ns/x/sa/b"] });
    expect((r.body.claims as { fingerprint256: string }).fingerprint256).toMatch(
      /^([0-9A-F]{2}:){31}[0-9A-F]{2}$/,
    );
  });

  it("refuses_requests_on_a_kept_connection_once_its_client_certificate_expired", async () => {
    // A 2.5 s certificate (runtime/pki: the openssl CLI here counts validity in days).
    const pki = await makePkiCa("partners.test", { skewMs: 0 });
    const short = await pki.issuer.issue("spiffe://partners.test/ns/x/sa/short", {
      ttlMs: 2500,
      clockSkewMs: 0,
    });
    const caFile = join(dir, "short-ca.pem");
    writeFileSync(caFile, pki.bundle.toPem());
    const cfg = gatewayConfig(
      [{ name: "short", match: { path: "/short" }, to: "app", auth: { clientCert: "short" }, ...RATE }],
      { app: { port: 1 } },
      { clientCerts: { short: { caFile } } },
    );
    const a = new Authenticator(cfg);
    const { server: s, port: p } = await serve(cfg, a, serverCert);
    const agent = new https.Agent({ keepAlive: true, maxSockets: 1 });
    try {
      const client = { cert: short.chainPem, key: short.keyPem!.reveal(), certFile: "", keyFile: "" };
      const first = await call("/short", client, p, agent);
      expect([first.status, first.reused]).toEqual([200, false]);
      await new Promise((r) => setTimeout(r, short.notAfter - Date.now() + 300));
      const second = await call("/short", client, p, agent);
      expect([second.status, second.reused]).toEqual([401, true]);
      expect(second.body.reason).toContain("client certificate expired since the connection was made");
    } finally {
      agent.destroy();
      s.closeAllConnections();
      await new Promise<void>((r) => s.close(() => r()));
      a.close();
    }
  }, 10_000);

  it("refuses_to_build_with_an_unreadable_ca_file", () => {
    const bad = {
      ...config,
      auth: {
        ...config.auth,
        clientCert: [{ name: "x", caFile: join(dir, "missing.pem"), subjects: [], sans: [] }],
      },
    };
    expect(() => new Authenticator(bad)).toThrow(/clientCerts\.x: cannot read caFile/);
  });

  it("refuses_to_build_with_a_malformed_san_rule", () => {
    const bad = {
      ...config,
      auth: {
        ...config.auth,
        clientCert: [{ name: "x", caFile: ca1.certFile, subjects: [], sans: ["spiffe://x"] }],
      },
    };
    expect(() => new Authenticator(bad)).toThrow(/sans\[0\]/);
  });
});

describe("parseDn", () => {
  it.each([
    [
      "CN=a, O=Acme",
      [
        ["CN", "a"],
        ["O", "Acme"],
      ],
    ],
    [
      "cn=a,o=Acme",
      [
        ["CN", "a"],
        ["O", "Acme"],
      ],
    ],
    ["CN=Acme\\, Inc", [["CN", "Acme, Inc"]]],
    [
      "CN=a+OU=x",
      [
        ["CN", "a"],
        ["OU", "x"],
      ],
    ],
    ["CN=caf\\C3\\A9", [["CN", "café"]]],
    ["2.5.4.3=a", [["2.5.4.3", "a"]]],
  ])("parses_%s", (text, want) => {
    expect(parseDn(text)).toEqual(want);
  });

  it.each(["", "=a", "CN", "C N=a", "CN=a\\"])("refuses_%s", (text) => {
    expect(parseDn(text)).toBeNull();
  });
});

/**
 * A gateway config: an https listener whose one route, /partners, needs a certificate of provider partners
 * (CAs from `caFile`, subject partner-a), answered by `app`.
 */
function partnersAtTheGateway(app: Upstream, caFile: string, http2 = false): GatewayRuntimeConfig {
  return gatewayConfig(
    [
      {
        name: "partners",
        match: { path: "/partners" },
        to: "app",
        auth: { clientCert: "partners" },
        ...RATE,
      },
    ],
    { app },
    {
      listeners: [{ ...httpsListener(serverCert), ...(http2 ? { http2: true } : {}) }],
      clientCerts: { partners: { caFile, subjects: ["CN=partner-a, o=Acme"] } },
    },
  );
}

describe("client certificates at the gateway, across changes of the client CAs", () => {
  // OpenSSL verifies a client certificate once, at the handshake, against the CAs of then. A partner that
  // keeps its connection open must lose access (and the connection) when its CA is removed — by a reload naming another CA file
  // or by the file rotated in place — and keep it when a CA is only added beside its own.
  // A client that sends no server name (it connects by IP) is served by the TLS server's default context,
  // not through the SNI callback: its handshake must be marked with its client CAs all the same.
  it.each([
    ["refuses_a_kept_connection_once_a_reload_names_a_ca_file_without_its_ca", "other-file", 401, true],
    ["refuses_a_kept_connection_once_its_ca_file_is_rotated_in_place_without_its_ca", "in-place", 401, true],
    [
      "refuses_a_kept_connection_once_its_ca_file_is_rotated_in_place_with_no_reload_at_all",
      "files-only",
      401,
      true,
    ],
    ["keeps_admitting_a_kept_connection_when_a_ca_is_added_beside_its_own", "added", 200, true],
    [
      "refuses_a_kept_connection_without_sni_once_a_reload_names_a_ca_file_without_its_ca",
      "other-file",
      401,
      false,
    ],
    [
      "refuses_a_kept_connection_without_sni_once_its_ca_file_is_rotated_in_place_with_no_reload_at_all",
      "files-only",
      401,
      false,
    ],
    ["keeps_admitting_a_kept_connection_without_sni_when_a_ca_is_added_beside_its_own", "added", 200, false],
  ] as const)("%s", async (_claim, change, after, sni) => {
    const app = await startUpstream();
    const caFile = join(dir, `rotating-${change}-${sni}.pem`);
    writeFileSync(caFile, ca1.cert);
    const other = makeCa(dir, `other-${change}-${sni}`, "/CN=Next Partners CA");
    const cfg = (file: string) => partnersAtTheGateway(app, file);
    // The files are checked every 100 ms here (1 s by default): the files-only row needs no reload.
    const gw = await startTestGateway(cfg(caFile), undefined, { certificatePollMs: 100 });
    const agent = new https.Agent({ keepAlive: true, maxSockets: 1 });
    const get = (): Promise<{ status: number; reused: boolean; connection: string | undefined }> =>
      new Promise((resolve, reject) => {
        const req = https.request(
          {
            host: "127.0.0.1",
            port: gw.ports.listeners.https,
            path: "/partners",
            ca: ca1.cert,
            ...(sni ? { servername: "localhost" } : {}),
            cert: certs.a!.cert,
            key: certs.a!.key,
            agent,
          },
          (res) => {
            res.resume();
            res.on("end", () =>
              resolve({
                status: res.statusCode ?? 0,
                reused: req.reusedSocket,
                connection: res.headers.connection,
              }),
            );
          },
        );
        req.on("error", reject);
        req.end();
      });
    try {
      expect(await get()).toEqual({ status: 200, reused: false, connection: "keep-alive" });
      if (change === "other-file") {
        const file = join(dir, `rotating-${change}-${sni}-next.pem`);
        writeFileSync(file, other.cert);
        expect(await gw.reload(JSON.stringify(cfg(file)))).toMatchObject({ ok: true, changed: true });
      } else if (change === "files-only") {
        writeFileSync(caFile, other.cert);
        await sleep(600);
      } else {
        writeFileSync(caFile, change === "added" ? ca1.cert + other.cert : other.cert);
        expect(await gw.reload(JSON.stringify(cfg(caFile)))).toMatchObject({ ok: true, changed: false });
      }
      // A refusal closes the connection: the client's next one is verified against the CAs of now.
      expect(await get()).toEqual({
        status: after,
        reused: true,
        connection: after === 401 ? "close" : "keep-alive",
      });
    } finally {
      agent.destroy();
      await gw.drain();
      await app.close();
    }
  });
  it("ends_an_http2_session_whose_ca_was_removed_after_answering_401", async () => {
    const app = await startUpstream();
    const caFile = join(dir, "rotating-h2.pem");
    writeFileSync(caFile, ca1.cert);
    const other = makeCa(dir, "other-h2", "/CN=Next Partners CA");
    const gw = await startTestGateway(partnersAtTheGateway(app, caFile, true));
    const session = http2.connect(`https://127.0.0.1:${gw.ports.listeners.https}`, {
      servername: "localhost",
      ca: ca1.cert,
      cert: certs.a!.cert,
      key: certs.a!.key,
    });
    session.on("error", () => {});
    const goaway = new Promise<void>((resolve) => session.once("goaway", () => resolve()));
    const get = (): Promise<number> =>
      new Promise((resolve, reject) => {
        const stream = session.request({ ":path": "/partners", ":authority": "localhost" });
        stream.on("response", (h) => resolve(Number(h[":status"])));
        stream.on("error", reject);
        stream.resume();
        stream.end();
      });
    try {
      expect(await get()).toBe(200);
      writeFileSync(caFile, other.cert);
      expect(await gw.reload(JSON.stringify(partnersAtTheGateway(app, caFile, true)))).toMatchObject({
        ok: true,
        changed: false,
      });
      expect(await get()).toBe(401);
      const late = sleep(2000).then(() => Promise.reject(new Error("no GOAWAY within 2 s")));
      await Promise.race([goaway, late]);
    } finally {
      session.destroy();
      await gw.drain();
      await app.close();
    }
  });
});

describe("client certificates at the gateway, TLS sessions resumed across changes of the client CAs", () => {
  // A resumed TLS session keeps OpenSSL's verdict of its first handshake: once a CA is removed, a client
  // must not resume a session made under it (the https listeners take new ticket keys); while the CAs stay,
  // sessions resume as before.
  it.each([
    ["refuses_a_session_resumed_from_before_its_ca_was_removed", true, { resumed: false, status: 401 }],
    ["resumes_sessions_across_a_reload_that_keeps_the_client_cas", false, { resumed: true, status: 200 }],
  ] as const)("%s", async (_claim, remove, after) => {
    const app = await startUpstream();
    const caFile = join(dir, `resumed-${String(remove)}.pem`);
    writeFileSync(caFile, ca1.cert);
    const other = makeCa(dir, `resumed-other-${String(remove)}`, "/CN=Next Partners CA");
    const cfg = partnersAtTheGateway(app, caFile);
    const gw = await startTestGateway(cfg);
    let session: Buffer | undefined;
    /** One request on a new connection, offering the last session the gateway gave. */
    const get = (): Promise<{ resumed: boolean; status: number }> =>
      new Promise((resolve, reject) => {
        const socket = tls.connect({
          host: "127.0.0.1",
          port: gw.ports.listeners.https,
          servername: "localhost",
          ca: ca1.cert,
          cert: certs.a!.cert,
          key: certs.a!.key,
          ALPNProtocols: ["http/1.1"],
          ...(session ? { session } : {}),
        });
        let text = "";
        socket.on("session", (s: Buffer) => (session = s));
        socket.on("secureConnect", () =>
          socket.write("GET /partners HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n"),
        );
        socket.on("data", (d: Buffer) => (text += d.toString("latin1")));
        socket.on("end", () =>
          resolve({ resumed: socket.isSessionReused(), status: Number(text.slice(9, 12)) }),
        );
        socket.on("error", reject);
      });
    try {
      expect(await get()).toEqual({ resumed: false, status: 200 });
      expect(await get()).toEqual({ resumed: true, status: 200 }); // the server does resume sessions
      if (remove) writeFileSync(caFile, other.cert);
      expect(await gw.reload(JSON.stringify(cfg))).toMatchObject({ ok: true, changed: false });
      expect(await get()).toEqual(after);
    } finally {
      await gw.drain();
      await app.close();
    }
  });
});
