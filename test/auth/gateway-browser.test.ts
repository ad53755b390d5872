/**
 * Client certificates and OIDC login end to end through a real gateway: an https listener asking for client
 * certificates (openssl-made CAs and leaves; allowed subject 200, other subject 403, no certificate 401,
 * untrusted CA 401, public routes unaffected), and the OIDC browser flow against oidc-provider with plain
 * HTTP requests (redirect, issuer login, callback, session cookie on later requests, logout, tampering).
 */
import { once } from "node:events";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import https from "node:https";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Writable } from "node:stream";
import pino from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { OIDC_CHALLENGE } from "../../runtime/auth/index.ts";
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
import { curl } from "../support/curl.ts";
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
  /** The gateway's config; `requests` changes the app route's rate limit (a config to reload to). */
  const oidcConfig = (requests = 100000) =>
    gatewayConfig(
      [
        {
          name: "app",
          match: { path: "/app/**" },
          to: "app",
          auth: { oidc: "sso" },
          rateLimit: { requests, per: "1s" },
        },
        { name: "public", match: { path: "/" }, to: "app", public: true, ...RATE },
        { name: "pub", match: { path: "/pub/**" }, to: "app", public: true, ...RATE },
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

  beforeAll(async () => {
    const port = await freePort();
    base = `http://127.0.0.1:${port}`;
    idp = await startIdp({ clientId: "gw", secret: SECRET, redirectUris: [`${base}/app/oauth2/callback`] });
    process.env.MESHGATE_E2E_OIDC_SECRET = SECRET;
    const config = oidcConfig();
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
  async function visit(jar: Jar, path: string, method = "GET", headers: Record<string, string> = {}) {
    const r = await request(`${base}${path}`, {
      method,
      headers: { ...headers, ...(jar.cookies.size ? { cookie: jar.header() } : {}) },
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

  it("challenges_every_401_without_a_session_with_the_oidc_scheme_a_fetch_and_a_websocket_upgrade_alike", async () => {
    // RFC 9110 §11.6.1: a 401 carries at least one challenge. A fetch cannot follow a login redirect…
    const fetched = await visit(new Jar(), "/app/data", "GET", { "sec-fetch-mode": "cors" });
    expect([fetched.status, fetched.headers["www-authenticate"]]).toEqual([401, OIDC_CHALLENGE]);
    // …and neither can an upgrade: a navigation-looking one (no Sec-Fetch-Mode) gets 401, not a redirect.
    const socket = net.connect(Number(new URL(base).port), "127.0.0.1");
    await once(socket, "connect");
    socket.write(
      "GET /app/ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
        "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    );
    let head = "";
    socket.setEncoding("latin1");
    for await (const chunk of socket) {
      head += chunk as string;
      if (head.includes("\r\n\r\n")) break;
    }
    socket.destroy();
    expect(head).toMatch(/^HTTP\/1\.1 401 /);
    expect(head).toContain(`\r\nwww-authenticate: ${OIDC_CHALLENGE}\r\n`);
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

  it("keeps_the_session_cookie_from_the_upstreams_of_routes_that_do_not_use_the_provider", async () => {
    const { jar } = await login("erin");
    jar.cookies.set("theme", "dark"); // the app's own cookie still goes through
    const r = await visit(jar, "/pub/page");
    expect(r.status).toBe(200);
    const seen = app.received.at(-1)!;
    expect(seen.url).toBe("/pub/page");
    expect(seen.headers.cookie).toBe("theme=dark");
  });

  it("refuses_a_copy_of_the_session_cookie_after_logout", async () => {
    const { jar } = await login("frank");
    const stolen = jar.cookies.get("meshgate_session")!;
    const copy = new Jar();
    copy.cookies.set("meshgate_session", stolen);
    expect((await visit(copy, "/app/home")).status).toBe(200);
    expect((await visit(jar, "/app/oauth2/logout", "POST")).status).toBe(302);
    const before = app.received.length;
    const replayed = await visit(copy, "/app/home", "POST");
    expect(replayed.status).toBe(401);
    expect(JSON.parse(replayed.body).error.message).toContain("ended by logout");
    const navigated = await visit(copy, "/app/home");
    expect(navigated.status).toBe(302);
    expect(navigated.headers.location).toContain(`${idp.issuer}/auth?`);
    // A config reload builds new providers: the logout still holds.
    expect(await gw.reload(JSON.stringify(oidcConfig(99999)))).toMatchObject({ ok: true });
    copy.cookies.set("meshgate_session", stolen); // the 302 above told the browser to drop it
    const afterReload = await visit(copy, "/app/home", "POST");
    expect(afterReload.status).toBe(401);
    expect(JSON.parse(afterReload.body).error.message).toContain("ended by logout");
    expect(app.received.length).toBe(before);
  });

  it.each<{ claim: string; headers: Record<string, string>; status: number }>([
    {
      claim: "sends_a_browser_navigation_to_log_in",
      headers: { accept: "text/html,*/*;q=0.8", "sec-fetch-mode": "navigate" },
      status: 302,
    },
    { claim: "sends_a_request_without_hints_to_log_in", headers: {}, status: 302 },
    {
      claim: "sends_a_navigation_with_basic_credentials_of_an_outer_proxy_to_log_in",
      headers: {
        accept: "text/html",
        authorization: `Basic ${Buffer.from("staging:pw").toString("base64")}`,
      },
      status: 302,
    },
    { claim: "answers_401_to_a_json_request", headers: { accept: "application/json" }, status: 401 },
    { claim: "answers_401_to_an_xhr", headers: { "x-requested-with": "XMLHttpRequest" }, status: 401 },
    { claim: "answers_401_to_a_fetch", headers: { accept: "*/*", "sec-fetch-mode": "cors" }, status: 401 },
    {
      claim: "answers_401_to_a_request_with_a_bearer_token",
      headers: { authorization: "Bearer abc" },
      status: 401,
    },
  ])("$claim", async ({ headers, status }) => {
    const r = await visit(new Jar(), "/app/api/orders", "GET", headers);
    expect(r.status).toBe(status);
    if (status === 401) {
      expect(r.headers["x-meshgate-error"]).toBe("unauthenticated");
      expect(r.headers["set-cookie"]).toBeUndefined(); // a login in progress in another tab keeps its state
    } else expect(r.headers.location).toContain(`${idp.issuer}/auth?`);
  });

  it.each([
    {
      claim: "refuses_a_callback_whose_iss_names_another_issuer",
      iss: "https://evil.example" as string | null,
      reason: "names another issuer",
    },
    {
      claim: "refuses_a_callback_without_iss_from_an_issuer_that_sends_it",
      iss: null,
      reason: "lacks the issuer's iss",
    },
  ])("$claim", async ({ iss, reason }) => {
    const jar = new Jar();
    const first = await visit(jar, "/app/x");
    const callback = new URL(await loginAtIdp(first.headers.location!, "gina"));
    expect(callback.searchParams.get("iss")).toBe(idp.issuer); // RFC 9207: the issuer names itself
    if (iss === null) callback.searchParams.delete("iss");
    else callback.searchParams.set("iss", iss);
    const tokenRequests = idp.tokenRequests;
    const r = await visit(jar, callback.pathname + callback.search);
    expect(r.status).toBe(401);
    expect(JSON.parse(r.body).error.message).toContain(reason);
    expect(idp.tokenRequests).toBe(tokenRequests); // the code was not sent anywhere
    expect(jar.cookies.has("meshgate_session")).toBe(false);
  });

  it.each([
    {
      claim: "completes_a_login_started_at_a_url_with_a_long_query",
      start: `/app/search?q=${"x".repeat(3500)}`,
      back: "/app/search",
    },
    { claim: "completes_a_login_started_at_a_long_path", start: `/app/${"p".repeat(3500)}`, back: "/" },
  ])("$claim", async ({ start, back }) => {
    // curl's cookie engine as the browser: it drops a cookie over 4096 bytes, as browsers do.
    const jar = join(dir, "long-return.jar");
    rmSync(jar, { force: true });
    const first = await curl(`${base}${start}`, ["-b", jar, "-c", jar]);
    expect(first.status).toBe(302);
    expect(readFileSync(jar, "utf8")).toContain("meshgate_session_login");
    const callback = new URL(await loginAtIdp(first.headers.location!, "ivy"));
    const done = await curl(`${base}${callback.pathname}${callback.search}`, ["-b", jar, "-c", jar]);
    expect(done.status).toBe(302);
    expect(done.headers.location).toBe(back);
    expect(readFileSync(jar, "utf8")).toMatch(/\tmeshgate_session\tv1\./);
  });

  it("keeps_the_client_secret_and_cookies_out_of_the_logs", async () => {
    await fetchRaw(`${base}/app/x`);
    expect(raw.length).toBeGreaterThan(0);
    expect(raw).not.toContain(SECRET);
    expect(raw).not.toContain("v1.");
  });
});

/**
 * A `__Host-` session cookie name (RFC 6265bis §4.1.3.2: Secure, Path=/, no Domain — or the client drops
 * the cookie) at an https listener, with curl's cookie engine as the browser: the pending login and the
 * session must both be stored, or the login can never complete.
 */
describe("OIDC with a __Host- cookie name at an https listener", () => {
  let idp: Idp;
  let gw: GatewayHandle;
  let origin: string;
  let port: number;
  let ca: Pem;

  beforeAll(async () => {
    port = await freePort();
    origin = `https://localhost:${port}`;
    ca = makeCa(dir, "host-prefix-ca", "/CN=Host Prefix CA");
    const server = makeCert(dir, "host-prefix-gw", ca, "/CN=localhost", {
      usage: "server",
      san: "DNS:localhost",
    });
    idp = await startIdp({ clientId: "gw", secret: SECRET, redirectUris: [`${origin}/app/oauth2/callback`] });
    process.env.MESHGATE_E2E_HOST_OIDC_SECRET = SECRET;
    const config = gatewayConfig(
      [{ name: "app", match: { path: "/app/**" }, to: "app", auth: { oidc: "sso" }, ...RATE }],
      { app },
      {
        listeners: [httpsListener(server)],
        oidc: {
          sso: {
            issuer: idp.issuer,
            clientId: "gw",
            clientSecretEnv: "MESHGATE_E2E_HOST_OIDC_SECRET",
            redirectPath: "/app/oauth2/callback",
            cookieName: "__Host-sso",
          },
        },
      },
    );
    gw = await startGateway({
      config,
      host: "127.0.0.1",
      ports: { listeners: { https: port }, admin: 0 },
      logger: pino({ level: "silent" }),
    });
  });

  afterAll(async () => {
    await gw.drain();
    await idp.close();
    delete process.env.MESHGATE_E2E_HOST_OIDC_SECRET;
  });

  it("stores_the_pending_login_and_the_session_and_completes_the_login", async () => {
    const jar = join(dir, "host-prefix.jar");
    const tls = ["--cacert", ca.certFile, "--resolve", `localhost:${port}:127.0.0.1`, "-b", jar, "-c", jar];
    const stored = () => readFileSync(jar, "utf8");
    const first = await curl(`${origin}/app/home`, tls);
    expect(first.status).toBe(302);
    expect(first.headers["set-cookie"]).toMatch(/^__Host-sso_login=v1\.[^;]+; Path=\/; .*; Secure$/);
    expect(stored()).toContain("__Host-sso_login");
    const callback = new URL(await loginAtIdp(first.headers.location!, "hana"));
    const done = await curl(`${origin}${callback.pathname}${callback.search}`, tls);
    expect(done.status).toBe(302);
    expect(stored()).toMatch(/\t__Host-sso\tv1\./);
    const later = await curl(`${origin}/app/home`, tls);
    expect(later.status).toBe(200);
    expect(app.received.at(-1)!.headers["x-meshgate-subject"]).toBe("hana");
  });
});
