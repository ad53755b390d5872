/**
 * Mutual TLS to destinations outside the mesh (`clientCertificate` of an external whose TLS the sidecar
 * originates), against a real HTTPS server on 127.0.0.1 that requires a client certificate from a partner
 * CA made with openssl: the certificate is presented on plain HTTP through the proxy port, on the external's
 * local port and on WebSockets; without it the partner refuses; a pair that cannot serve rejects the config
 * (the previous one keeps serving) or stops the sidecar from starting; rotated files are picked up by new
 * connections, a broken rotation is refused and the previous pair keeps serving; expiry gauge and reload
 * counter; no key material in the logs.
 */
import http from "node:http";
import https from "node:https";
import type { AddressInfo, Socket } from "node:net";
import type { TLSSocket } from "node:tls";
import { copyFile, mkdtemp, readFile, rename, rm } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { tempDir } from "../pki/support.ts";
import {
  answerWebSocket,
  ClientPairs,
  destroyClients,
  dial,
  egressSidecars,
  external,
  openWebSocket,
  outsideCa,
  readToEnd,
  within,
  type EgressSidecars,
  type External,
  type OutsideCa,
} from "./outside.ts";
import { metricValue, until } from "./support.ts";

let tmp: Awaited<ReturnType<typeof tempDir>>;
let sidecars: EgressSidecars;
let serverCa: OutsideCa;
let partner: https.Server;
let partnerPort = 0;
/** The client certificate subject CN the partner saw on each request (null: none presented). */
const seen: { url: string; cn: string | null }[] = [];
/** Pairs issued by the partner CA (or a stranger), by name: their files. */
const pairs = new ClientPairs(() => tmp.dir);
const pairFiles = (of: string, as: string) => pairs.copy(of, as);
const rotate = (files: { certFile: string; keyFile: string }, of: string) => pairs.rotate(files, of);

beforeAll(async () => {
  tmp = await tempDir("sidecar-egress-mtls");
  sidecars = await egressSidecars(tmp.dir);
  serverCa = await outsideCa(tmp.dir);
  const partnerCa = await outsideCa(await mkdtemp(join(tmp.dir, "partner-")));
  const strangerCa = await outsideCa(await mkdtemp(join(tmp.dir, "stranger-")));
  for (const [cn, ca, eku] of [
    ["payments-1", partnerCa, "clientAuth"],
    ["payments-2", partnerCa, "clientAuth"],
    ["payments-server-only", partnerCa, "serverAuth"],
    ["stranger-1", strangerCa, "clientAuth"],
  ] as const)
    pairs.set(cn, await ca.client(cn, eku));
  partner = https.createServer(
    {
      ...(await serverCa.leaf("localhost")),
      requestCert: true,
      rejectUnauthorized: true,
      ca: partnerCa.pem,
    },
    (req, res) => {
      const peer = (req.socket as TLSSocket).getPeerCertificate();
      const cn = peer && peer.subject ? String(peer.subject.CN) : null;
      seen.push({ url: req.url ?? "", cn });
      // Every request on a new connection: each shows the certificate presented at that moment.
      res.writeHead(200, { "content-type": "text/plain", connection: "close" });
      res.end(`partner saw ${cn}`);
    },
  );
  partner.on("upgrade", (req: http.IncomingMessage, socket: Socket, head: Buffer) => {
    const peer = (req.socket as TLSSocket).getPeerCertificate();
    seen.push({ url: req.url ?? "", cn: peer?.subject ? String(peer.subject.CN) : null });
    answerWebSocket(req, socket, head);
  });
  partner.on("tlsClientError", () => {});
  await new Promise<void>((r) => partner.listen(0, "127.0.0.1", r));
  partnerPort = (partner.address() as AddressInfo).port;
}, 60_000);
afterEach(async () => {
  destroyClients();
  await sidecars?.stopAll();
  seen.length = 0;
});
afterAll(async () => {
  await new Promise((r) => (partner ? (partner.closeAllConnections(), partner.close(r)) : r(null)));
  await tmp?.cleanup();
});

/** `partner` (localhost), TLS the sidecar originates, trusting the server CA, with a local port. */
const partnerExternal = (o: Partial<External> = {}): External =>
  external("partner", "localhost", partnerPort, {
    tls: "originate",
    ca: serverCa.pem,
    localPort: 15502,
    ...o,
  });

/** GET http://localhost:<partner>/<path> through the sidecar's proxy port. */
function viaProxy(sidecarPort: number, path: string): Promise<{ status: number; body: string }> {
  return within(
    new Promise((resolve, reject) => {
      const req = http.request({
        host: "127.0.0.1",
        port: sidecarPort,
        path: `http://localhost:${partnerPort}${path}`,
        agent: false,
      });
      req.on("error", reject);
      req.on("response", (res) => {
        let body = "";
        res.on("data", (d: Buffer) => (body += d.toString()));
        res.on("end", () => resolve({ status: res.statusCode ?? 0, body }));
      });
      req.end();
    }),
    `GET ${path} through the proxy port`,
  );
}

describe("presenting the client certificate", () => {
  it("presents_it_on_plain_http_through_the_proxy_port_on_the_local_port_and_on_websockets", async () => {
    const e = await sidecars.start([partnerExternal({ clientCertificate: pairs.get("payments-1")! })]);
    const { sidecar } = e;
    const r = await viaProxy(sidecar.ports.outbound, "/v1/charges");
    expect(r).toEqual({ status: 200, body: "partner saw payments-1" });

    const local = dial(sidecar.ports.external.partner!);
    local.end("GET /local HTTP/1.1\r\nhost: localhost\r\n\r\n");
    expect((await within(readToEnd(local), "the local port's answer")).toString()).toContain(
      "partner saw payments-1",
    );

    const ws = await openWebSocket(sidecar.ports.outbound, `http://localhost:${partnerPort}/ws`, "localhost");
    expect(ws.status).toBe(101);
    ws.socket.destroy();

    expect(seen).toEqual([
      { url: "/v1/charges", cn: "payments-1" },
      { url: "/local", cn: "payments-1" },
      { url: "/ws", cn: "payments-1" },
    ]);
    // A pair loaded: logged with subject, serial and expiry; its expiry gauge near one day; no key material.
    expect(sidecar.logs.find((l) => l.event === "external_cert_loaded")).toMatchObject({
      certFile: pairs.get("payments-1")!.certFile,
      subject: "CN=payments-1",
    });
    const metrics = await e.metrics();
    const left = metricValue(metrics, "meshgate_external_cert_expiry_seconds", {
      proxy: "sidecar",
      external: "partner",
    });
    expect(left).toBeGreaterThan(86_400 - 600);
    expect(left).toBeLessThanOrEqual(86_400);
    const key = await readFile(pairs.get("payments-1")!.keyFile, "utf8");
    expect(sidecar.rawLog()).not.toContain("PRIVATE KEY");
    expect(sidecar.rawLog()).not.toContain(key.split("\n")[1]!);
  });

  it("is_refused_by_the_partner_without_one_so_the_certificate_is_what_admits_the_sidecar", async () => {
    const { sidecar } = await sidecars.start([partnerExternal()]);
    const r = await viaProxy(sidecar.ports.outbound, "/no-cert");
    expect(r.status).toBe(502);
    expect(seen).toEqual([]);
  });

  it("is_refused_by_the_partner_when_another_ca_signed_it", async () => {
    const { sidecar } = await sidecars.start([
      partnerExternal({ clientCertificate: pairs.get("stranger-1")! }),
    ]);
    expect((await viaProxy(sidecar.ports.outbound, "/stranger")).status).toBe(502);
    expect(seen).toEqual([]);
  });
});

describe("a pair that cannot serve", () => {
  const garbage = join("/nonexistent", "missing.pem");
  it.each([
    [
      "rejects_a_certificate_file_that_does_not_exist",
      () => ({ certFile: garbage, keyFile: pairs.get("payments-1")!.keyFile }),
      "outbound.external[0].clientCertificate.certFile",
      "cannot be read (ENOENT)",
    ],
    [
      "rejects_a_key_that_is_not_the_certificates",
      () => ({ certFile: pairs.get("payments-1")!.certFile, keyFile: pairs.get("payments-2")!.keyFile }),
      "outbound.external[0].clientCertificate.keyFile",
      "is not the key of the certificate",
    ],
    [
      "rejects_a_certificate_not_for_client_authentication",
      () => pairs.get("payments-server-only")!,
      "outbound.external[0].clientCertificate.certFile",
      "lacks clientAuth",
    ],
    [
      "rejects_a_certificate_file_without_a_certificate",
      () => ({ certFile: pairs.get("payments-1")!.keyFile, keyFile: pairs.get("payments-1")!.keyFile }),
      "outbound.external[0].clientCertificate.certFile",
      "holds no PEM certificate",
    ],
    [
      "rejects_a_key_file_without_a_key",
      () => ({ certFile: pairs.get("payments-1")!.certFile, keyFile: pairs.get("payments-1")!.certFile }),
      "outbound.external[0].clientCertificate.keyFile",
      "holds no PEM private key",
    ],
  ])("%s_and_keeps_the_previous_config_serving", async (_claim, files, path, message) => {
    const e = await sidecars.start([partnerExternal({ clientCertificate: pairs.get("payments-1")! })]);
    const r = await e.sidecar.reload(
      JSON.stringify(e.configWith([partnerExternal({ clientCertificate: files() })])),
    );
    expect(r).toMatchObject({ ok: false, code: "E_RT_CLIENT_CERT_INVALID" });
    if (r.ok) return;
    expect(r.error).toContain(`${path}: `);
    expect(r.error).toContain(message);
    // Files and fields are named; no key material is quoted.
    for (const pair of ["payments-1", "payments-2"])
      expect(r.error).not.toContain((await readFile(pairs.get(pair)!.keyFile, "utf8")).split("\n")[1]!);
    expect(await viaProxy(e.sidecar.ports.outbound, "/still")).toEqual({
      status: 200,
      body: "partner saw payments-1",
    });
  });

  it("stops_the_sidecar_from_starting_with_one", async () => {
    await expect(
      sidecars.start([
        partnerExternal({
          clientCertificate: { certFile: garbage, keyFile: pairs.get("payments-1")!.keyFile },
        }),
      ]),
    ).rejects.toMatchObject({ code: "E_RT_CLIENT_CERT_INVALID" });
  });

  it("is_refused_by_the_contract_on_an_external_whose_tls_the_app_does", async () => {
    const e = await sidecars.start([partnerExternal()]);
    const r = await e.sidecar.reload(
      JSON.stringify(
        e.configWith([
          partnerExternal({ tls: "passthrough", ca: null, clientCertificate: pairs.get("payments-1")! }),
        ]),
      ),
    );
    expect(r).toMatchObject({ ok: false, code: "E_RT_CONFIG_INVALID" });
    if (!r.ok) expect(r.error).toContain("clientCertificate");
  });
});

describe("rotation", () => {
  it("presents_rotated_files_on_new_connections_and_keeps_the_previous_pair_when_a_rotation_is_broken", async () => {
    const files = await pairFiles("payments-1", "rotating");
    const e = await sidecars.start([partnerExternal({ clientCertificate: files })]);
    const { sidecar } = e;
    expect((await viaProxy(sidecar.ports.outbound, "/before")).body).toBe("partner saw payments-1");

    // Renewed in place: the next connections present the new certificate, with no reload.
    await rotate(files, "payments-2");
    await until(() => sidecar.logs.filter((l) => l.event === "external_cert_loaded").length === 2, 5000);
    expect((await viaProxy(sidecar.ports.outbound, "/after")).body).toBe("partner saw payments-2");
    expect(sidecar.logs.filter((l) => l.event === "external_cert_loaded").at(-1)).toMatchObject({
      subject: "CN=payments-2",
    });

    // A broken rotation (the key of another certificate): refused, the previous pair keeps serving.
    const other = pairs.get("payments-1")!;
    await copyFile(other.keyFile, `${files.keyFile}.new`);
    await rename(`${files.keyFile}.new`, files.keyFile);
    await until(() => sidecar.logs.some((l) => l.event === "external_cert_rejected"), 5000);
    expect(sidecar.logs.find((l) => l.event === "external_cert_rejected")).toMatchObject({
      code: "E_RT_CLIENT_CERT_INVALID",
      keptPrevious: true,
    });
    expect((await viaProxy(sidecar.ports.outbound, "/broken")).body).toBe("partner saw payments-2");
    const metrics = await e.metrics();
    expect(
      metricValue(metrics, "meshgate_external_cert_reloads_total", { proxy: "sidecar", result: "loaded" }),
    ).toBe(2);
    expect(
      metricValue(metrics, "meshgate_external_cert_reloads_total", { proxy: "sidecar", result: "rejected" }),
    ).toBe(1);
    // Refused once, not on every poll while the files stay broken.
    await new Promise((r) => setTimeout(r, 600));
    expect(sidecar.logs.filter((l) => l.event === "external_cert_rejected")).toHaveLength(1);
    expect(sidecar.rawLog()).not.toContain("PRIVATE KEY");
  });

  it("refuses_files_that_disappear_once_and_keeps_presenting_the_pair_it_holds", async () => {
    const files = await pairFiles("payments-1", "vanishing");
    const { sidecar } = await sidecars.start([partnerExternal({ clientCertificate: files })]);
    await rm(files.keyFile);
    await until(() => sidecar.logs.some((l) => l.event === "external_cert_rejected"), 5000);
    expect(sidecar.logs.find((l) => l.event === "external_cert_rejected")!.reason).toContain(
      "outbound.external[0].clientCertificate.keyFile: ",
    );
    await new Promise((r) => setTimeout(r, 600));
    expect(sidecar.logs.filter((l) => l.event === "external_cert_rejected")).toHaveLength(1);
    expect((await viaProxy(sidecar.ports.outbound, "/held")).body).toBe("partner saw payments-1");
  });

  it("starts_a_new_pool_when_a_reload_names_other_files_and_removes_the_expiry_when_none_is_named", async () => {
    const e = await sidecars.start([partnerExternal({ clientCertificate: pairs.get("payments-1")! })]);
    expect((await viaProxy(e.sidecar.ports.outbound, "/one")).body).toBe("partner saw payments-1");
    expect(
      await e.sidecar.reload(
        JSON.stringify(e.configWith([partnerExternal({ clientCertificate: pairs.get("payments-2")! })])),
      ),
    ).toMatchObject({ ok: true, changed: true });
    expect((await viaProxy(e.sidecar.ports.outbound, "/two")).body).toBe("partner saw payments-2");
    const labels = { proxy: "sidecar", external: "partner" };
    expect(metricValue(await e.metrics(), "meshgate_external_cert_expiry_seconds", labels)).toBeGreaterThan(
      0,
    );
    expect(await e.sidecar.reload(JSON.stringify(e.configWith([partnerExternal()])))).toMatchObject({
      ok: true,
    });
    // Without a certificate any more its expiry series is removed (kept at 0, the dropped externals of
    // many reloads would fill the gauge's label sets and fold a live certificate's expiry into overflow).
    expect(await e.metrics()).not.toMatch(/meshgate_external_cert_expiry_seconds\{[^}]*external="partner"/);
  });
});
