/**
 * OIDC authorization-code login (runtime/auth/oidc.ts) through the Authenticator, against a real issuer
 * (oidc-provider on 127.0.0.1, PKCE required) whose login and consent pages are walked with plain HTTP: the
 * full browser flow ends with a session cookie that authenticates later requests; tampered cookies, expired
 * sessions, wrong state, replayed codes, missing or foreign PKCE verifiers are refused.
 */
import { generateKeyPairSync } from "node:crypto";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { SignJWT } from "jose";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { GatewayRuntimeConfig, RouteAuth } from "../../runtime/contract/index.ts";
import {
  Authenticator,
  OIDC_CHALLENGE,
  type AdmitResult,
  type AuthResponse,
} from "../../runtime/auth/index.ts";
import { RevokedSessions } from "../../runtime/auth/oidc.ts";
import { deriveKey, seal, unseal } from "../../runtime/auth/seal.ts";
import type { Principal } from "../../runtime/decide/index.ts";
import { gatewayConfig } from "../support/gateway.ts";
import { fetchRaw, loginAtIdp, startIdp, type Idp } from "./idp.ts";
import { capturedLogger, facts } from "./support.ts";

const SECRET = "s3cret-client-secret-for-the-test-0123456789";
const ENV = { MESHGATE_TEST_OIDC_SECRET: SECRET };
const AUTHORITY = "127.0.0.1:8080";
const CALLBACK = "/app/oauth2/callback";
const RATE = { rateLimit: { requests: 1000, per: "1s" } };

let idp: Idp;
let config: GatewayRuntimeConfig;
let auth: Authenticator;
let clock = Date.now();
const log = capturedLogger();

function buildConfig(issuer: string): GatewayRuntimeConfig {
  return gatewayConfig(
    [
      { name: "app", match: { path: "/app/**" }, to: "app", auth: { oidc: "sso" }, ...RATE },
      {
        name: "verified",
        match: { path: "/verified/**" },
        to: "app",
        auth: { oidc: "sso", claims: { email_verified: "true" }, scopes: ["email"] },
        ...RATE,
      },
      {
        name: "admin",
        match: { path: "/admin/**" },
        to: "app",
        auth: { oidc: "sso", scopes: ["admin"] },
        ...RATE,
      },
    ],
    { app: { port: 1 } },
    {
      oidc: {
        sso: {
          issuer,
          clientId: "gw",
          clientSecretEnv: "MESHGATE_TEST_OIDC_SECRET",
          redirectPath: CALLBACK,
          scopes: ["openid", "email"],
          sessionTtl: "1h",
        },
      },
    },
  );
}

const routeAuth = (name: string): RouteAuth => config.routes.find((r) => r.name === name)!.auth;

/** One request as the browser makes it to the gateway (path with query, and the gateway's cookies). */
function visit(
  url: string,
  cookies: Map<string, string>,
  o: {
    method?: string;
    a?: Authenticator;
    route?: string;
    scheme?: "http" | "https";
    host?: string;
    headers?: Record<string, string>;
    viaTrustedProxy?: boolean;
  } = {},
): AdmitResult | Promise<AdmitResult> {
  const [path, query = ""] = url.split("?");
  const route = o.route ?? path!.split("/")[1]!;
  const cookie = [...cookies].map(([k, v]) => `${k}=${v}`).join("; ");
  return (o.a ?? auth).admit(
    route,
    routeAuth(route),
    facts({
      path: path!,
      query,
      method: o.method ?? "GET",
      headers: { ...o.headers, ...(cookie ? { cookie } : {}) },
      authority: o.host ? o.host : AUTHORITY,
      host: o.host ?? "127.0.0.1",
      scheme: o.scheme ?? "http",
      ...(o.viaTrustedProxy !== undefined ? { viaTrustedProxy: o.viaTrustedProxy } : {}),
    }),
  );
}

/** Applies Set-Cookie headers of a gateway response to the browser's cookies. */
function store(cookies: Map<string, string>, r: AdmitResult): void {
  if (r.kind === "allow") return;
  const set = r.headers["set-cookie"];
  for (const c of Array.isArray(set) ? set : set ? [set] : []) {
    const [pair] = (c as string).split(";");
    const eq = pair!.indexOf("=");
    const name = pair!.slice(0, eq);
    const value = pair!.slice(eq + 1);
    if (/Max-Age=0/.test(c as string)) cookies.delete(name);
    else cookies.set(name, value);
  }
}

function asResponse(r: AdmitResult): AuthResponse {
  if (r.kind !== "respond") throw new Error(`expected a response, got ${JSON.stringify(r)}`);
  return r;
}

/** The whole login: gateway redirect, issuer pages, callback. Returns the callback URL and the browser's cookies. */
async function startLogin(as = "alice", start = "/app/page?x=1", a = auth) {
  const cookies = new Map<string, string>();
  const first = asResponse(await visit(start, cookies, { a }));
  store(cookies, first);
  const callback = await loginAtIdp(first.headers.location as string, as);
  return { cookies, callback: new URL(callback), first };
}

async function login(as = "alice", start = "/app/page?x=1", a = auth) {
  const { cookies, callback } = await startLogin(as, start, a);
  const done = asResponse(await visit(callback.pathname + callback.search, cookies, { a, route: "app" }));
  store(cookies, done);
  return { cookies, done, callback };
}

beforeAll(async () => {
  idp = await startIdp({ clientId: "gw", secret: SECRET, redirectUris: [`http://${AUTHORITY}${CALLBACK}`] });
  config = buildConfig(idp.issuer);
  auth = new Authenticator(config, { oidc: { env: ENV }, now: () => clock, log: log.logger });
});

afterAll(async () => {
  auth.close();
  await idp.close();
});

describe("browser login", () => {
  it.each([
    {
      claim: "ignores_x_forwarded_proto_from_a_client_that_did_not_come_through_a_trusted_proxy",
      via: false,
      scheme: "http",
    },
    {
      claim: "takes_the_external_scheme_from_x_forwarded_proto_set_by_a_trusted_proxy",
      via: true,
      scheme: "https",
    },
  ])("$claim", async ({ via, scheme }) => {
    const r = asResponse(
      await visit("/app/page", new Map(), {
        headers: { "x-forwarded-proto": "https" },
        viaTrustedProxy: via,
      }),
    );
    const loc = new URL(r.headers.location as string);
    expect(loc.searchParams.get("redirect_uri")).toBe(`${scheme}://${AUTHORITY}${CALLBACK}`);
  });

  it("redirects_to_the_issuer_with_state_nonce_and_pkce_s256", async () => {
    const r = asResponse(await visit("/app/page?x=1", new Map()));
    expect(r.status).toBe(302);
    const loc = new URL(r.headers.location as string);
    expect(loc.origin + loc.pathname).toBe(`${idp.issuer}/auth`);
    expect(Object.fromEntries(loc.searchParams)).toMatchObject({
      response_type: "code",
      client_id: "gw",
      redirect_uri: `http://${AUTHORITY}${CALLBACK}`,
      scope: "openid email",
      code_challenge_method: "S256",
    });
    expect(loc.searchParams.get("state")).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(loc.searchParams.get("nonce")).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(loc.searchParams.get("code_challenge")).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(r.headers["set-cookie"]).toMatch(
      /^meshgate_session_login=v1\.[A-Za-z0-9_-]+; Path=\/app\/oauth2\/callback; Max-Age=600; HttpOnly; SameSite=Lax$/,
    );
    expect(r.headers["cache-control"]).toBe("no-store");
  });

  it("completes_the_flow_and_the_session_cookie_authenticates_later_requests", async () => {
    const { cookies, done } = await login("alice");
    expect(done.status).toBe(302);
    expect(done.headers.location).toBe("/app/page?x=1");
    const setCookies = done.headers["set-cookie"] as string[];
    expect(setCookies[0]).toMatch(
      /^meshgate_session=v1\.[A-Za-z0-9_-]+; Path=\/; Max-Age=3600; HttpOnly; SameSite=Lax$/,
    );
    expect(setCookies[1]).toMatch(/^meshgate_session_login=; Path=\/app\/oauth2\/callback; Max-Age=0/);
    expect(cookies.has("meshgate_session_login")).toBe(false);
    const later = visit("/app/page?x=1", cookies);
    expect(later).not.toBeInstanceOf(Promise); // a session is checked without I/O
    expect(later).toMatchObject({
      kind: "allow",
      principal: {
        mechanism: "oidc",
        provider: "sso",
        subject: "alice",
        claims: { email: "alice@example.com" },
      },
    });
    const claimed = await visit("/verified/x", cookies);
    expect(claimed.kind).toBe("allow");
    const up: Record<string, string | string[]> = {
      cookie: `a=1; meshgate_session=${cookies.get("meshgate_session")}`,
    };
    auth.upstreamHeaders(up, routeAuth("app"), (later as { principal: Principal }).principal);
    expect(up).toMatchObject({ cookie: "a=1", "x-meshgate-subject": "alice", "x-meshgate-auth": "oidc:sso" });
  });

  it("answers_403_for_a_session_without_the_required_scope", async () => {
    const { cookies } = await login("bob");
    expect(await visit("/admin/x", cookies)).toMatchObject({
      kind: "deny",
      status: 403,
      reason: "missing scope admin",
    });
  });

  it("sets_secure_cookies_except_on_plaintext_loopback", async () => {
    const https = asResponse(await visit("/app/x", new Map(), { scheme: "https" }));
    expect(https.headers["set-cookie"]).toMatch(/; Secure$/);
    const remote = asResponse(await visit("/app/x", new Map(), { host: "app.example" }));
    expect(remote.headers["set-cookie"]).toMatch(/; Secure$/);
  });

  it("answers_401_instead_of_a_redirect_for_requests_that_are_not_navigations", async () => {
    expect(await visit("/app/x", new Map(), { method: "POST" })).toMatchObject({
      kind: "deny",
      status: 401,
      headers: { "www-authenticate": OIDC_CHALLENGE }, // RFC 9110 §11.6.1: a 401 carries a challenge
    });
  });

  it("clears_the_session_on_logout", async () => {
    const { cookies } = await login("carol");
    const out = asResponse(await visit("/app/oauth2/logout", cookies));
    expect(out.headers["set-cookie"]).toMatch(/^meshgate_session=; Path=\/; Max-Age=0/);
    store(cookies, out);
    expect((await visit("/app/x", cookies)).kind).toBe("respond"); // sent to log in again
  });
});

describe("refusals", () => {
  it("refuses_a_tampered_session_cookie", async () => {
    const { cookies } = await login("dave");
    const v = cookies.get("meshgate_session")!;
    const i = Math.floor(v.length / 2);
    cookies.set("meshgate_session", v.slice(0, i) + (v[i] === "A" ? "B" : "A") + v.slice(i + 1));
    expect(await visit("/app/x", cookies, { method: "POST" })).toMatchObject({
      kind: "deny",
      status: 401,
      reason: "the session cookie is invalid",
    });
    const get = asResponse(await visit("/app/x", cookies));
    expect(get.headers.location).toContain("/auth?"); // a browser is sent to log in, and the bad cookie cleared
    expect((get.headers["set-cookie"] as string[]).some((c) => /^meshgate_session=; /.test(c))).toBe(true);
  });

  it("refuses_a_session_sealed_with_another_clients_secret", async () => {
    const otherIdpClient = new Authenticator(config, {
      oidc: { env: { MESHGATE_TEST_OIDC_SECRET: `${SECRET}-other` } },
    });
    const { cookies } = await login("erin");
    expect(await visit("/app/x", cookies, { method: "POST", a: otherIdpClient })).toMatchObject({
      reason: "the session cookie is invalid",
    });
    otherIdpClient.close();
  });

  it("refuses_an_expired_session", async () => {
    const { cookies } = await login("frank");
    expect((await visit("/app/x", cookies)).kind).toBe("allow");
    clock += 3600_000 + 1000;
    try {
      expect(await visit("/app/x", cookies, { method: "POST" })).toMatchObject({
        status: 401,
        reason: "the session expired",
      });
    } finally {
      clock = Date.now();
    }
  });

  it("refuses_a_callback_with_the_wrong_state", async () => {
    const { cookies, callback } = await startLogin("gina");
    callback.searchParams.set("state", "A".repeat(43));
    const r = await visit(callback.pathname + callback.search, cookies, { route: "app" });
    expect(r).toMatchObject({
      kind: "deny",
      status: 401,
      reason: "the callback's state does not match the pending login",
    });
  });

  it("refuses_a_replayed_code_here_and_at_the_issuer_from_another_replica", async () => {
    const { cookies, callback } = await startLogin("hank");
    const pending = cookies.get("meshgate_session_login")!;
    const target = callback.pathname + callback.search;
    expect((await visit(target, cookies, { route: "app" })).kind).toBe("respond");
    const replay = new Map([["meshgate_session_login", pending]]);
    expect(await visit(target, replay, { route: "app" })).toMatchObject({
      kind: "deny",
      reason: "this login was already completed (replayed callback)",
    });
    // Another replica (same client secret, its own memory): the issuer itself refuses the used code.
    const replica = new Authenticator(config, { oidc: { env: ENV } });
    expect(await visit(target, replay, { route: "app", a: replica })).toMatchObject({
      kind: "deny",
      status: 401,
      reason: "the issuer refused the code exchange (invalid_grant)",
    });
    replica.close();
  });

  it("refuses_a_callback_without_the_pending_login_that_holds_the_pkce_verifier", async () => {
    const { callback } = await startLogin("ivan");
    const r = await visit(callback.pathname + callback.search, new Map(), { route: "app" });
    expect(r).toMatchObject({
      kind: "deny",
      status: 401,
      reason: expect.stringContaining("no pending login"),
    });
  });

  it("relies_on_an_issuer_that_refuses_a_code_exchange_without_a_verifier", async () => {
    const { callback } = await startLogin("judy");
    const r = await fetchRaw(`${idp.issuer}/token`, {
      method: "POST",
      headers: {
        "content-type": "application/x-www-form-urlencoded",
        authorization: `Basic ${Buffer.from(`gw:${SECRET}`).toString("base64")}`,
      },
      body: new URLSearchParams({
        grant_type: "authorization_code",
        code: callback.searchParams.get("code")!,
        redirect_uri: `http://${AUTHORITY}${CALLBACK}`,
      }).toString(),
    });
    expect(r.status).toBe(400);
    expect(JSON.parse(r.body).error).toMatch(/invalid_(grant|request)/);
  });

  it("refuses_a_code_injected_into_another_login_whose_verifier_does_not_match", async () => {
    const a = await startLogin("kate");
    const b = await startLogin("mallory");
    // The victim's pending login and state, the attacker's code: the verifier cannot match the code's challenge.
    const injected = new URL(b.callback.toString());
    injected.searchParams.set("state", a.callback.searchParams.get("state")!);
    const r = await visit(injected.pathname + injected.search, a.cookies, { route: "app" });
    expect(r).toMatchObject({
      kind: "deny",
      status: 401,
      reason: "the issuer refused the code exchange (invalid_grant)",
    });
  });

  it("refuses_a_session_value_presented_as_the_pending_login", async () => {
    const { cookies } = await login("leo");
    const { callback } = await startLogin("leo");
    const swapped = new Map([["meshgate_session_login", cookies.get("meshgate_session")!]]);
    const r = await visit(callback.pathname + callback.search, swapped, { route: "app" });
    expect(r).toMatchObject({ kind: "deny", reason: "the pending login cookie is invalid" });
  });

  it("refuses_the_login_when_the_issuer_reports_an_error", async () => {
    const { cookies } = await startLogin("nina");
    // RFC 9207: the issuer names itself in error responses too (oidc-provider does).
    const iss = encodeURIComponent(idp.issuer);
    const r = await visit(`${CALLBACK}?error=access_denied&state=x&iss=${iss}`, cookies, { route: "app" });
    expect(r).toMatchObject({ kind: "deny", reason: "the issuer refused the login (access_denied)" });
  });

  it("answers_503_when_the_issuer_is_unreachable", async () => {
    const down = buildConfig("http://127.0.0.1:9/");
    const a = new Authenticator(down, { oidc: { env: ENV } });
    expect(await a.admit("app", down.routes[0]!.auth, facts({ path: "/app/x" }))).toMatchObject({
      kind: "deny",
      status: 503,
      code: "auth_unavailable",
    });
    a.close();
  });

  it("refuses_to_build_without_the_client_secret_env_var", () => {
    expect(() => new Authenticator(config, { oidc: { env: {} } })).toThrow(
      /MESHGATE_TEST_OIDC_SECRET is not set/,
    );
  });

  it("never_logs_the_client_secret_or_a_cookie", () => {
    const text = log.text();
    expect(text).not.toContain(SECRET);
    expect(text).not.toContain("v1.");
  });
});

/**
 * Other spellings of a sealed value that Node's base64url decoder reads as the same bytes. A logout revokes
 * the hash of the cookie's exact text, so each of these must fail to unseal — else a copy of a logged-out
 * cookie would work again under another spelling (and one session could fill the revocation store).
 */
const RESPELLINGS: readonly { spelling: string; of: (v: string) => string }[] = [
  { spelling: "plus_and_slash", of: (v) => v.replaceAll("-", "+").replaceAll("_", "/") },
  { spelling: "padded", of: (v) => v + "=".repeat((4 - ((v.length - 3) % 4)) % 4 || 1) },
  { spelling: "trailing_dot", of: (v) => `${v}.` },
  {
    // set unused bits in the last character, or a lone character (no bits of its own) after a full quantum
    spelling: "non_canonical_trailing_bits",
    of: (v) => {
      if ((v.length - 3) % 4 === 0) return `${v}A`;
      const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
      return v.slice(0, -1) + alphabet[alphabet.indexOf(v.at(-1)!) | 1];
    },
  },
];

describe("one spelling per sealed cookie", () => {
  const key = deriveKey("seal-test-secret", "salt", "info");

  // Values whose sealed bytes leave 0, 1 and 2 bytes over a whole 3-byte quantum: every tail shape.
  it.each(
    RESPELLINGS.flatMap(({ spelling, of }) =>
      [0, 1, 2].map((extra) => ({ claim: `unseal_refuses_the_${spelling}_spelling_${extra}`, of, extra })),
    ),
  )("$claim", ({ of, extra }) => {
    const value = { sub: `alice${"x".repeat(extra)}` };
    let v = seal(key, "session:sso", value);
    while (of(v) === v) v = seal(key, "session:sso", value); // a value without "-" or "_" has no plus/slash twin
    expect(unseal(key, "session:sso", v)).toEqual(value);
    const other = of(v);
    // The same bytes to Node's decoder, and refused.
    expect(Buffer.from(other.slice(3), "base64url").equals(Buffer.from(v.slice(3), "base64url"))).toBe(true);
    expect(unseal(key, "session:sso", other)).toBeNull();
  });

  it.each(RESPELLINGS.map((r) => ({ ...r, claim: `a_logged_out_session_stays_refused_as_${r.spelling}` })))(
    "$claim",
    async ({ of }) => {
      const revoked = new RevokedSessions();
      const a = new Authenticator(config, { oidc: { env: ENV }, now: () => clock, revokedSessions: revoked });
      try {
        const { cookies } = await login("grace", "/app/page?x=1", a);
        const v = cookies.get("meshgate_session")!;
        const respelled = new Map([["meshgate_session", of(v)]]);
        expect(respelled.get("meshgate_session")).not.toBe(v);
        const post = { method: "POST", a };
        // The canonical spelling works; the other spelling is not the session.
        expect(await visit("/app/x", cookies, post)).toMatchObject({
          kind: "allow",
          principal: { subject: "grace" },
        });
        expect(await visit("/app/x", respelled, post)).toMatchObject({
          kind: "deny",
          reason: "the session cookie is invalid",
        });
        // A logout presenting the other spelling revokes nothing (no entry per spelling to fill the store).
        await visit("/app/oauth2/logout", respelled, { a });
        expect(revoked.size).toBe(0);
        expect((await visit("/app/x", cookies, post)).kind).toBe("allow");
        // The real logout: the session is refused in both spellings.
        await visit("/app/oauth2/logout", new Map(cookies), { a });
        expect(revoked.size).toBe(1);
        expect(await visit("/app/x", cookies, post)).toMatchObject({
          kind: "deny",
          reason: "the session was ended by logout",
        });
        expect(await visit("/app/x", respelled, post)).toMatchObject({ kind: "deny", status: 401 });
      } finally {
        a.close();
      }
    },
  );
});

/**
 * id_tokens a real issuer would not send, from a minimal issuer on 127.0.0.1 (discovery, JWKS, and a token
 * endpoint answering with the id_token the case builds for the login's nonce).
 */
describe("id_token claims", () => {
  const { privateKey, publicKey } = generateKeyPairSync("rsa", { modulusLength: 2048 });
  const jwk = { ...publicKey.export({ format: "jwk" }), kid: "k1", alg: "RS256", use: "sig" };
  let server: http.Server;
  let issuer = "";
  let claimsFor: (nonce: string) => Record<string, unknown> = () => ({});
  let grantedScope: string | undefined;
  let nonce = "";
  let fake: Authenticator;
  let fakeConfig: GatewayRuntimeConfig;

  beforeAll(async () => {
    server = http.createServer(async (req, res) => {
      for await (const _ of req);
      res.setHeader("content-type", "application/json");
      if (req.url === "/.well-known/openid-configuration")
        res.end(
          JSON.stringify({
            issuer,
            authorization_endpoint: `${issuer}/auth`,
            token_endpoint: `${issuer}/token`,
            jwks_uri: `${issuer}/jwks`,
          }),
        );
      else if (req.url === "/jwks") res.end(JSON.stringify({ keys: [jwk] }));
      else {
        const idToken = await new SignJWT(claimsFor(nonce))
          .setProtectedHeader({ alg: "RS256", kid: "k1" })
          .sign(privateKey);
        res.end(JSON.stringify({ id_token: idToken, token_type: "Bearer", scope: grantedScope }));
      }
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    issuer = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    fakeConfig = buildConfig(issuer);
    fake = new Authenticator(fakeConfig, { oidc: { env: ENV } });
  });

  afterAll(async () => {
    fake.close();
    server.closeAllConnections();
    await new Promise((r) => server.close(r));
  });

  const s = () => Math.floor(Date.now() / 1000);

  /** The login through the fake issuer: the gateway's redirect, then its callback with the code. */
  async function fakeLogin() {
    const first = asResponse(await fake.admit("app", fakeConfig.routes[0]!.auth, facts({ path: "/app/x" })));
    const loc = new URL(first.headers.location as string);
    nonce = loc.searchParams.get("nonce")!;
    const pending = (first.headers["set-cookie"] as string).split(";")[0]!;
    return fake.admit(
      "app",
      fakeConfig.routes[0]!.auth,
      facts({
        path: CALLBACK,
        query: `code=c&state=${loc.searchParams.get("state")}`,
        headers: { cookie: pending },
      }),
    );
  }

  it.each([
    {
      claim: "refuses_a_session_whose_sub_does_not_fit_in_a_cookie",
      sub: "u".repeat(3000),
      scope: undefined,
    },
    {
      claim: "refuses_a_session_whose_granted_scope_does_not_fit_in_a_cookie",
      sub: "alice",
      scope: Array.from({ length: 300 }, (_, i) => `api://orders/scope-${i}`).join(" "),
    },
  ])("$claim", async ({ sub, scope }) => {
    claimsFor = (n) => ({ iss: issuer, aud: "gw", sub, nonce: n, iat: s(), exp: s() + 60 });
    grantedScope = scope;
    try {
      const done = await fakeLogin();
      // A Set-Cookie over the browsers' 4096 bytes is dropped silently: the user would loop through the
      // issuer forever. The login is refused with a reason instead, and no session cookie is set.
      expect(done).toMatchObject({
        kind: "deny",
        status: 401,
        reason: expect.stringContaining("does not fit in a cookie"),
      });
      const set = (done as { headers: Record<string, unknown> }).headers["set-cookie"];
      expect(String(set)).not.toMatch(/meshgate_session=v1/);
    } finally {
      grantedScope = undefined;
    }
  });

  it.each([
    { claim: "admits_an_id_token_issued_to_this_client", over: {}, ok: true },
    {
      claim: "admits_several_audiences_with_azp_this_client",
      over: { aud: ["gw", "x"], azp: "gw" },
      ok: true,
    },
    { claim: "refuses_several_audiences_without_azp", over: { aud: ["gw", "x"] }, ok: false },
    { claim: "refuses_an_azp_naming_another_client", over: { azp: "other-client" }, ok: false },
    {
      claim: "refuses_an_azp_naming_another_client_with_aud_a_one_element_array",
      over: { aud: ["gw"], azp: "other" },
      ok: false,
    },
    { claim: "refuses_a_sub_that_is_not_a_string", over: { sub: 42 }, ok: false },
  ])("$claim", async ({ over, ok }) => {
    claimsFor = (n) => ({ iss: issuer, aud: "gw", sub: "alice", nonce: n, iat: s(), exp: s() + 60, ...over });
    const first = asResponse(await fake.admit("app", fakeConfig.routes[0]!.auth, facts({ path: "/app/x" })));
    const loc = new URL(first.headers.location as string);
    nonce = loc.searchParams.get("nonce")!;
    const pending = (first.headers["set-cookie"] as string).split(";")[0]!;
    const done = await fake.admit(
      "app",
      fakeConfig.routes[0]!.auth,
      facts({
        path: CALLBACK,
        query: `code=c&state=${loc.searchParams.get("state")}`,
        headers: { cookie: pending },
      }),
    );
    if (ok) expect(done).toMatchObject({ kind: "respond", status: 302, headers: { location: "/app/x" } });
    else expect(done).toMatchObject({ kind: "deny", status: 401 });
  });
});
