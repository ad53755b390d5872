/**
 * Client certificates and OIDC login end to end through a real gateway: an https listener asking for client
 * certificates (openssl-made CAs and leaves; allowed subject 200, other subject 403, no certificate 401,
 * untrusted CA 401, public routes unaffected), and the OIDC browser flow against oidc-provider with plain
 * HTTP requests (redirect, issuer login, callback, session cookie on later requests, logout, tampering).
 */
import { mkdtempSync, rmSync } from "node:fs";
import https from "node:https";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Writable } from "node:stream";
import pino from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startGateway, type GatewayHandle } from "../../runtime/gateway/server.ts";
import {
  freePort,
  gatewayConfig,
  httpsListener,
  request,
  startTestGateway,
  startUpstream,
  type TestGateway,
  type Upstream,
} from "../support/gateway.ts";
import { Jar, fetchRaw, loginAtIdp, startIdp, type Idp } from "./idp.ts";
import { makeCa, makeCert, type Pem } from "./pki.ts";

const RATE = { rateLimit: { requests: 100000, per: "1s" } };
const SECRET = "e2e-oidc-client-secret-0123456789abcdef";

let dir: string;
let app: Upstream;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "meshgate-browser-e2e-"));
  app = await startUpstream();
});

afterAll(async () => {
  await app.close();
  rmSync(dir, { recursive: true, force: true });
});

describe("client certificates at a gateway https listener", () => {
  let gw: TestGateway;
  let port: number;
  let ca: Pem;
  let certs: Record<string, Pem>;

  beforeAll(async () => {
    ca = makeCa(dir, "ca", "/O=Acme/CN=Partners CA");
    const untrustedCa = makeCa(dir, "evil-ca", "/CN=Evil CA");
    const server = makeCert(dir, "gw", ca, "/CN=localhost", { usage: "server", san: "DNS:localhost" });
    certs = {
      allowed: makeCert(dir, "allowed", ca, "/O=Acme/CN=partner-a"),
      other: makeCert(dir, "other", ca, "/O=Acme/CN=someone-else"),
      untrusted: makeCert(dir, "untrusted", untrustedCa, "/O=Acme/CN=partner-a"),
    };
    const config = gatewayConfig(
      [
        {
          name: "partners",
          match: { path: "/partners/**" },
          to: "app",
          auth: { clientCert: "partners" },
          ...RATE,
        },
        { name: "open", match: { path: "/open" }, to: "app", public: true, ...RATE },
      ],
      { app },
      {
        listeners: [httpsListener(server)],
        clientCerts: { partners: { caFile: ca.certFile, subjects: ["CN=partner-a, O=Acme"] } },
      },
    );
    gw = await startTestGateway(config);
    port = gw.ports.listeners.https!;
  });

  afterAll(async () => {
    await gw.drain();
  });

  function call(path: string, client?: Pem): Promise<{ status: number; headers: Record<string, unknown> }> {
    return new Promise((resolve, reject) => {
      const req = https.request(
        {
          host: "127.0.0.1",
          port,
          path,
          servername: "localhost",
          ca: ca.cert,
          agent: false,
          headers: { host: "localhost" },
          ...(client ? { cert: client.cert, key: client.key } : {}),
        },
        (res) => {
          res.resume();
          res.on("end", () => resolve({ status: res.statusCode ?? 0, headers: res.headers }));
        },
      );
      req.on("error", reject);
      req.end();
    });
  }

  it.each([
    ["forwards_a_certificate_with_an_allowed_subject", "/partners/x", "allowed", 200],
    ["answers_403_for_another_subject", "/partners/x", "other", 403],
    ["answers_401_without_a_certificate", "/partners/x", undefined, 401],
    ["answers_401_for_a_certificate_of_an_untrusted_ca", "/partners/x", "untrusted", 401],
    ["serves_public_routes_without_a_certificate", "/open", undefined, 200],
    ["serves_public_routes_to_untrusted_certificates", "/open", "untrusted", 200],
  ])("%s", async (_n, path, who, status) => {
    const r = await call(path, who ? certs[who] : undefined);
    expect(r.status).toBe(status);
  });

  it("passes_the_certificate_subject_upstream", async () => {
    expect((await call("/partners/y", certs.allowed)).status).toBe(200);
    const seen = app.received.at(-1)!;
    expect(seen.url).toBe("/partners/y");
    expect(seen.headers["x-meshgate-subject"]).toBe("O=Acme, CN=partner-a");
    expect(seen.headers["x-meshgate-auth"]).toBe("clientCert:partners");
  });
});

describe("OIDC login through the gateway", () => {
  let idp: Idp;
  let gw: GatewayHandle;
  let base: string;
  let raw = "";

  beforeAll(async () => {
    const port = await freePort();
    base = `http://127.0.0.1:${port}`;
    idp = await startIdp({ clientId: "gw", secret: SECRET, redirectUris: [`${base}/app/oauth2/callback`] });
    process.env.MESHGATE_E2E_OIDC_SECRET = SECRET;
    const config = gatewayConfig(
      [
        { name: "app", match: { path: "/app/**" }, to: "app", auth: { oidc: "sso" }, ...RATE },
        { name: "public", match: { path: "/" }, to: "app", public: true, ...RATE },
      ],
      { app },
      {
        oidc: {
          sso: {
            issuer: idp.issuer,
            clientId: "gw",
            clientSecretEnv: "MESHGATE_E2E_OIDC_SECRET",
            redirectPath: "/app/oauth2/callback",
            scopes: ["openid", "email"],
          },
        },
      },
    );
    const sink = new Writable({
      write(chunk: Buffer, _e, cb) {
        raw += chunk.toString();
        cb();
      },
    });
    gw = await startGateway({
      config,
      host: "127.0.0.1",
      ports: { listeners: { [config.listeners[0]!.name]: port }, admin: 0 },
      logger: pino({}, sink),
    });
  });

  afterAll(async () => {
    await gw.drain();
    await idp.close();
    delete process.env.MESHGATE_E2E_OIDC_SECRET;
  });

  /** A browser visit to the gateway: the jar's cookies sent, Set-Cookie taken. */
  async function visit(jar: Jar, path: string, method = "GET") {
    const r = await request(`${base}${path}`, {
      method,
      headers: jar.cookies.size ? { cookie: jar.header() } : {},
    });
    jar.take(r.headers["set-cookie"]);
    return r;
  }

  async function login(user: string) {
    const jar = new Jar();
    const first = await visit(jar, "/app/home?tab=2");
    expect(first.status).toBe(302);
    const callback = new URL(await loginAtIdp(first.headers.location!, user));
    expect(callback.origin).toBe(base);
    const done = await visit(jar, callback.pathname + callback.search);
    return { jar, done };
  }

  it("logs_in_and_the_session_cookie_authenticates_later_requests", async () => {
    const { jar, done } = await login("alice");
    expect(done.status).toBe(302);
    expect(done.headers.location).toBe("/app/home?tab=2");
    expect(jar.cookies.has("meshgate_session")).toBe(true);
    const before = app.received.length;
    const r = await visit(jar, "/app/home?tab=2");
    expect(r.status).toBe(200);
    expect(app.received.length).toBe(before + 1);
    const seen = app.received.at(-1)!;
    expect(seen.url).toBe("/app/home?tab=2");
    expect(seen.headers["x-meshgate-subject"]).toBe("alice");
    expect(seen.headers.cookie).toBeUndefined(); // the session cookie is the gateway's, not the app's
  });

  it("refuses_a_tampered_session_cookie", async () => {
    const { jar } = await login("bob");
    const v = jar.cookies.get("meshgate_session")!;
    jar.cookies.set("meshgate_session", `${v.slice(0, 20)}${v[20] === "x" ? "y" : "x"}${v.slice(21)}`);
    const before = app.received.length;
    expect((await visit(jar, "/app/home", "POST")).status).toBe(401);
    const again = await visit(jar, "/app/home");
    expect(again.status).toBe(302);
    expect(again.headers.location).toContain(`${idp.issuer}/auth?`);
    expect(app.received.length).toBe(before);
  });

  it("refuses_a_replayed_callback", async () => {
    const jar = new Jar();
    const first = await visit(jar, "/app/x");
    const callback = new URL(await loginAtIdp(first.headers.location!, "carol"));
    const pending = jar.header();
    expect((await visit(jar, callback.pathname + callback.search)).status).toBe(302);
    const replay = await request(`${base}${callback.pathname}${callback.search}`, {
      headers: { cookie: pending },
    });
    expect(replay.status).toBe(401);
    expect(replay.headers["x-meshgate-error"]).toBe("unauthenticated");
  });

  it("logs_out", async () => {
    const { jar } = await login("dave");
    const out = await visit(jar, "/app/oauth2/logout");
    expect(out.status).toBe(302);
    expect(jar.cookies.has("meshgate_session")).toBe(false);
    expect((await visit(jar, "/app/home", "POST")).status).toBe(401);
  });

  it("keeps_the_client_secret_and_cookies_out_of_the_logs", async () => {
    await fetchRaw(`${base}/app/x`);
    expect(raw.length).toBeGreaterThan(0);
    expect(raw).not.toContain(SECRET);
    expect(raw).not.toContain("v1.");
  });
});
