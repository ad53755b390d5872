/**
 * JWT authentication (runtime/auth/jwt.ts, jwks.ts) through the Authenticator: a corpus of forged and broken
 * tokens (each answered 401), honest tokens (allowed, principal headers, synchronous cache hits), the remote
 * JWKS served by a real HTTP server on 127.0.0.1 (its fetches counted: caching, Cache-Control bounds,
 * refresh on unknown kid, one fetch for a stampede, the refetch rate limit, an unreachable JWKS), and every
 * log line captured and searched for tokens and keys.
 */
import { pbkdf2 } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { GatewayRuntimeConfig, RouteAuth } from "../../runtime/contract/index.ts";
import { Authenticator, type AdmitResult } from "../../runtime/auth/index.ts";
import { gatewayConfig } from "../support/gateway.ts";
import { ISS, claims, forgedTokens } from "./corpus.ts";
import {
  capturedLogger,
  countingObserver,
  facts,
  makeKey,
  nowS,
  signToken,
  startJwksServer,
  type JwksServer,
  type TestKey,
} from "./support.ts";
import { selfSignedCert } from "../support/certs.ts";

const RATE = { rateLimit: { requests: 1000, per: "1s" } };

let main: TestKey;
let rotated: TestKey;
let rsa: TestKey;
let other: TestKey;
let attacker: TestKey;
let attackerRsa: TestKey;
let jwks: JwksServer;
let attackerServer: JwksServer;
let config: GatewayRuntimeConfig;
let auth: Authenticator;
let dir: string;
let attackerCertB64: string;
const log = capturedLogger();
const counts = countingObserver();

function buildConfig(jwksUri: string): GatewayRuntimeConfig {
  return gatewayConfig(
    [
      { name: "main", match: { path: "/main" }, to: "app", auth: { jwt: "main" }, ...RATE },
      { name: "rsa", match: { path: "/rsa" }, to: "app", auth: { jwt: "rsa" }, ...RATE },
      {
        name: "scoped",
        match: { path: "/scoped" },
        to: "app",
        auth: { jwt: "main", scopes: ["orders:write"] },
        ...RATE,
      },
      { name: "both", match: { path: "/both" }, to: "app", auth: { jwt: ["main", "other"] }, ...RATE },
      { name: "cq", match: { path: "/cq" }, to: "app", auth: { jwt: "cq" }, ...RATE },
    ],
    { app: { port: 1 } },
    {
      jwt: {
        main: {
          issuer: ISS,
          audiences: ["api", "api2"],
          jwksUri,
          algorithms: ["ES256"],
          clockSkew: "30s",
          forwardClaims: { "x-user-email": "email", "x-tenant": "tenant" },
        },
        rsa: {
          issuer: "https://rsa.test/",
          audiences: ["api"],
          jwks: { keys: [rsa.jwk] },
          algorithms: ["RS256"],
        },
        other: {
          issuer: "https://other.test/",
          audiences: ["api"],
          jwks: { keys: [other.jwk] },
          algorithms: ["ES256"],
        },
        cq: {
          issuer: "https://cq.test/",
          audiences: ["api"],
          jwks: { keys: [main.jwk] },
          algorithms: ["ES256"],
          tokenFrom: { cookie: "tok", query: "access_token" },
        },
      },
    },
  );
}

const routeAuth = (name: string): RouteAuth => config.routes.find((r) => r.name === name)!.auth;
const bearer = (token: string, route = "main") =>
  facts({ path: `/${route}`, headers: { authorization: `Bearer ${token}` } });

async function admit(
  route: string,
  f = facts({ path: `/${route}` }),
  a: Authenticator = auth,
): Promise<AdmitResult> {
  return a.admit(route, routeAuth(route), f);
}

beforeAll(async () => {
  main = makeKey("main-1");
  rotated = makeKey("main-2");
  rsa = makeKey("rsa-1", "RS256");
  other = makeKey("other-1");
  attacker = makeKey("attacker-1");
  attackerRsa = makeKey("attacker-rsa", "RS256");
  jwks = await startJwksServer([main.jwk]);
  attackerServer = await startJwksServer([attacker.jwk]);
  config = buildConfig(jwks.url);
  auth = new Authenticator(config, {
    observer: counts.observer,
    log: log.logger,
    jwt: { minRefetchIntervalMs: 200, minTtlMs: 100 },
  });
  dir = mkdtempSync(join(tmpdir(), "meshgate-jwt-"));
  const { certFile } = await selfSignedCert(dir, "c", "attacker");
  attackerCertB64 = readFileSync(certFile, "utf8").replace(/-----[^-]+-----|\s/g, "");
});

afterAll(async () => {
  auth.close();
  await jwks.close();
  await attackerServer.close();
  rmSync(dir, { recursive: true, force: true });
});

const presented: string[] = [];
const corpus = forgedTokens(() => ({
  main,
  rsa,
  other,
  attacker,
  attackerRsa,
  attackerUrl: attackerServer.url,
  attackerCertB64,
}));

describe("forged and broken tokens", () => {
  it("has_at_least_30_cases", () => {
    expect(corpus.length).toBeGreaterThanOrEqual(30);
    expect(new Set(corpus.map(([n]) => n)).size).toBe(corpus.length);
  });

  it.each(corpus)("%s", async (_name, reason, forge) => {
    const attackerFetches = attackerServer.fetches;
    const { token, headers, query, route = "main" } = await forge();
    if (token) presented.push(token);
    const d = await admit(
      route,
      token ? bearer(token, route) : facts({ path: `/${route}`, headers: headers ?? {}, query: query ?? "" }),
    );
    expect(d).toMatchObject({ kind: "deny", status: 401, code: "unauthenticated" });
    if (d.kind !== "deny") return;
    expect(d.reason.length).toBeGreaterThan(5);
    expect(d.reason).toContain(reason);
    if (token) expect(d.reason).not.toContain(token.slice(0, 20));
    expect(d.headers["www-authenticate"]).toMatch(/^Bearer realm="meshgate"/);
    // Headers such as jku, x5u or a kid holding a URL never make the gateway fetch anything.
    expect(attackerServer.fetches).toBe(attackerFetches);
  });
});

describe("honest tokens", () => {
  it("allows_a_valid_token_and_forwards_the_principal", async () => {
    const token = await signToken(main, claims({ email: "alice@example.com", tenant: "acme\nx" }));
    const d = await admit("main", bearer(token));
    expect(d.kind).toBe("allow");
    if (d.kind !== "allow") return;
    expect(d.principal).toMatchObject({
      mechanism: "jwt",
      provider: "main",
      subject: "alice",
      scopes: ["orders:read"],
    });
    const up: Record<string, string | string[]> = {
      authorization: `Bearer ${token}`,
      "x-meshgate-subject": "forged",
      "x-user-email": "forged@example.com",
      accept: "*/*",
    };
    auth.upstreamHeaders(up, routeAuth("main"), d.principal);
    expect(up).toEqual({
      accept: "*/*",
      "x-meshgate-auth": "jwt:main",
      "x-meshgate-subject": "alice",
      "x-meshgate-scopes": "orders:read",
      "x-user-email": "alice@example.com",
      "x-tenant": "acme%0Ax",
    });
  });

  it("strips_client_identity_headers_on_public_routes_too", () => {
    const up: Record<string, string | string[]> = {
      "x-meshgate-subject": "forged",
      "x-tenant": "forged",
      a: "1",
    };
    auth.upstreamHeaders(up, { ...routeAuth("main"), public: true, anyOf: [] }, null);
    expect(up).toEqual({ a: "1" });
  });

  it("accepts_exp_within_the_clock_skew_and_a_lower_case_scheme", async () => {
    const token = await signToken(main, claims({ exp: nowS() - 10 }));
    const d = await admit("main", facts({ path: "/main", headers: { authorization: `bearer   ${token}` } }));
    expect(d.kind).toBe("allow");
  });

  it("accepts_any_configured_audience_in_an_array", async () => {
    const d = await admit("main", bearer(await signToken(main, claims({ aud: ["x", "api2"] }))));
    expect(d.kind).toBe("allow");
  });

  it("answers_a_cache_hit_synchronously", async () => {
    const token = await signToken(main, claims({ sub: "sync" }));
    const first = auth.admit("main", routeAuth("main"), bearer(token));
    expect(first).toBeInstanceOf(Promise);
    expect((await first).kind).toBe("allow");
    const second = auth.admit("main", routeAuth("main"), bearer(token));
    expect(second).not.toBeInstanceOf(Promise);
    expect((second as AdmitResult).kind).toBe("allow");
    expect(counts.authn.get("jwt:cached")).toBeGreaterThan(0);
  });

  it("answers_a_repeated_token_on_a_connection_from_its_memo_and_no_other_token", async () => {
    const conn = {};
    const on = (token: string) => ({ ...bearer(token), connection: conn });
    const a = await signToken(main, claims({ sub: "memo-a" }));
    const b = await signToken(main, claims({ sub: "memo-b" }));
    expect(await auth.admit("main", routeAuth("main"), on(a))).toMatchObject({
      kind: "allow",
      principal: { subject: "memo-a" },
    });
    const again = auth.admit("main", routeAuth("main"), on(a));
    expect(again).not.toBeInstanceOf(Promise);
    expect(again).toMatchObject({ kind: "allow", principal: { subject: "memo-a" } });
    // Another token on the same connection is verified on its own, never answered from the memo.
    const other = auth.admit("main", routeAuth("main"), on(b));
    expect(other).toBeInstanceOf(Promise);
    expect(await other).toMatchObject({ kind: "allow", principal: { subject: "memo-b" } });
    // A token of the same length with one character changed is a different token: 401.
    const i = a.lastIndexOf(".") - 3;
    const tampered = `${a.slice(0, i)}${a[i] === "A" ? "B" : "A"}${a.slice(i + 1)}`;
    expect(tampered).toHaveLength(a.length);
    expect(await auth.admit("main", routeAuth("main"), on(tampered))).toMatchObject({
      kind: "deny",
      status: 401,
    });
  });

  it("forgets_the_connection_memo_when_the_provider_cache_is_cleared", async () => {
    const a = new Authenticator(config);
    const conn = {};
    const token = await signToken(main, claims({ sub: "memo-clear" }));
    const f = { ...bearer(token), connection: conn };
    expect((await a.admit("main", routeAuth("main"), f)).kind).toBe("allow");
    expect(a.admit("main", routeAuth("main"), f)).not.toBeInstanceOf(Promise);
    a.jwtProvider("main")!.cache.clear(); // what a change of the provider's keys does
    const after = a.admit("main", routeAuth("main"), f);
    expect(after).toBeInstanceOf(Promise);
    expect((await after).kind).toBe("allow");
    a.close();
  });

  it("does_not_serve_a_memoized_token_past_its_expiry", async () => {
    let clock = Date.now();
    const a = new Authenticator(config, { now: () => clock });
    const token = await signToken(main, claims({ exp: nowS() + 2 }));
    const f = { ...bearer(token), connection: {} };
    expect((await a.admit("main", routeAuth("main"), f)).kind).toBe("allow");
    expect(a.admit("main", routeAuth("main"), f)).not.toBeInstanceOf(Promise);
    clock += 3000 + 31_000; // past exp and the skew
    const late = a.admit("main", routeAuth("main"), f);
    expect(late).toBeInstanceOf(Promise);
    expect(await late).toMatchObject({ kind: "deny", status: 401, reason: "token expired" });
    a.close();
  });

  it("does_not_serve_a_cached_token_past_its_expiry", async () => {
    let clock = Date.now();
    const a = new Authenticator(config, { now: () => clock });
    const token = await signToken(main, claims({ exp: nowS() + 2 }));
    expect((await a.admit("main", routeAuth("main"), bearer(token))).kind).toBe("allow");
    expect(a.admit("main", routeAuth("main"), bearer(token))).not.toBeInstanceOf(Promise);
    clock += 3000 + 31_000; // past exp and the skew
    const late = a.admit("main", routeAuth("main"), bearer(token));
    expect(late).toBeInstanceOf(Promise);
    expect(await late).toMatchObject({ kind: "deny", status: 401, reason: "token expired" });
    a.close();
  });

  it("answers_403_with_insufficient_scope_for_a_token_without_the_scope", async () => {
    const d = await admit("scoped", bearer(await signToken(main, claims()), "scoped"));
    expect(d).toMatchObject({
      kind: "deny",
      status: 403,
      code: "forbidden",
      reason: "missing scope orders:write",
    });
    if (d.kind === "deny")
      expect(d.headers["www-authenticate"]).toBe(
        'Bearer realm="meshgate", error="insufficient_scope", scope="orders:write"',
      );
    expect(counts.denied.get("scoped:scope")).toBeGreaterThan(0);
  });

  it("chooses_the_provider_by_issuer_on_a_route_with_two", async () => {
    const a = await admit("both", bearer(await signToken(main, claims()), "both"));
    const b = await admit(
      "both",
      bearer(await signToken(other, claims({ iss: "https://other.test/" })), "both"),
    );
    expect(a).toMatchObject({ kind: "allow", principal: { provider: "main" } });
    expect(b).toMatchObject({ kind: "allow", principal: { provider: "other" } });
  });

  it("reads_tokens_from_a_configured_cookie_or_query_parameter", async () => {
    const t = await signToken(main, claims({ iss: "https://cq.test/" }));
    expect((await admit("cq", facts({ path: "/cq", headers: { cookie: `a=1; tok=${t}; b=2` } }))).kind).toBe(
      "allow",
    );
    expect((await admit("cq", facts({ path: "/cq", query: `x=1&access_token=${t}` }))).kind).toBe("allow");
    expect(auth.upstreamPath(routeAuth("cq"), `/cq?x=1&access_token=${t}&y=2`)).toBe("/cq?x=1&y=2");
    const up: Record<string, string | string[]> = { cookie: `a=1; tok=${t}; b=2` };
    auth.upstreamHeaders(up, routeAuth("cq"), null);
    expect(up.cookie).toBe("a=1; b=2");
  });

  // ASP.NET Core reads the query ignoring case (SignalR and JwtBearer read `access_token` there): every
  // letter case of the token parameter is removed upstream and from the cache key (credentialFreeQuery).
  it.each([
    { claim: "strips_the_query_token_from_the_cache_key_in_any_letter_case", name: "Access_Token" },
    { claim: "strips_an_upper_case_query_token_from_the_cache_key", name: "ACCESS_TOKEN" },
    { claim: "strips_an_escaped_mixed_case_query_token_from_the_cache_key", name: "access%5FTOKEN" },
    { claim: "strips_a_mixed_case_query_token_hidden_after_a_semicolon", name: "x=1;Access_Token" },
  ])("$claim", async ({ name }) => {
    const t = await signToken(main, claims({ iss: "https://cq.test/" }));
    expect(auth.credentialFreeQuery(routeAuth("cq"), `a=1&${name}=${t}&b=2`)).toBe("a=1&b=2");
    expect(auth.upstreamPath(routeAuth("cq"), `/cq?a=1&${name}=${t}&b=2`)).toBe("/cq?a=1&b=2");
  });

  it("admits_a_query_token_in_another_letter_case_and_keeps_other_parameters", async () => {
    const t = await signToken(main, claims({ iss: "https://cq.test/" }));
    expect((await admit("cq", facts({ path: "/cq", query: `ACCESS_TOKEN=${t}` }))).kind).toBe("allow");
    expect(auth.credentialFreeQuery(routeAuth("cq"), "access_tokens=1&b=2")).toBe("access_tokens=1&b=2");
  });

  it("answers_401_without_error_code_when_no_token_is_presented", async () => {
    const d = await admit("main");
    expect(d).toMatchObject({ kind: "deny", status: 401, requirement: "authentication" });
    if (d.kind === "deny") expect(d.headers["www-authenticate"]).toBe('Bearer realm="meshgate"');
  });

  it("answers_invalid_token_challenges_per_rfc_6750", async () => {
    const d = await admit("main", bearer(await signToken(main, claims({ exp: nowS() - 3600 }))));
    if (d.kind !== "deny") throw new Error("expected a deny");
    expect(d.headers["www-authenticate"]).toBe(
      'Bearer realm="meshgate", error="invalid_token", error_description="token expired"',
    );
  });
});

describe("remote JWKS", () => {
  it("fetches_once_and_serves_later_tokens_from_the_cached_set", async () => {
    const server = await startJwksServer([main.jwk]);
    server.cacheControl = "max-age=3600";
    const a = new Authenticator(buildConfig(server.url), { jwt: { minTtlMs: 100 } });
    for (let i = 0; i < 5; i++)
      expect(
        (await a.admit("main", routeAuth("main"), bearer(await signToken(main, claims({ sub: `u${i}` })))))
          .kind,
      ).toBe("allow");
    expect(server.fetches).toBe(1);
    a.close();
    await server.close();
  });

  it("refetches_in_the_background_after_a_short_max_age_and_ignores_a_long_one_within_bounds", async () => {
    const short = await startJwksServer([main.jwk]);
    short.cacheControl = "public, max-age=0";
    const long = await startJwksServer([main.jwk]);
    long.cacheControl = "max-age=3600";
    const opts = { jwt: { minTtlMs: 150, maxTtlMs: 60_000 } };
    const a = new Authenticator(buildConfig(short.url), opts);
    const b = new Authenticator(buildConfig(long.url), opts);
    for (const x of [a, b])
      expect((await x.admit("main", routeAuth("main"), bearer(await signToken(main, claims())))).kind).toBe(
        "allow",
      );
    await new Promise((r) => setTimeout(r, 250));
    for (const x of [a, b])
      expect(
        (await x.admit("main", routeAuth("main"), bearer(await signToken(main, claims({ sub: "later" })))))
          .kind,
      ).toBe("allow");
    // The refresh runs in the background: wait for it to reach the server (a loaded machine can take
    // longer than a fixed pause), then for nothing more.
    for (const end = Date.now() + 5000; short.fetches < 2 && Date.now() < end;)
      await new Promise((r) => setTimeout(r, 10));
    expect(short.fetches).toBe(2); // max-age 0 clamped up to 150 ms, then a stale-while-revalidate refresh
    expect(long.fetches).toBe(1);
    a.close();
    b.close();
    await short.close();
    await long.close();
  });

  it("refreshes_on_an_unknown_kid_and_accepts_a_rotated_key", async () => {
    const server = await startJwksServer([main.jwk]);
    const a = new Authenticator(buildConfig(server.url), { jwt: { minRefetchIntervalMs: 100 } });
    expect((await a.admit("main", routeAuth("main"), bearer(await signToken(main, claims())))).kind).toBe(
      "allow",
    );
    expect(server.fetches).toBe(1);
    server.keys = [main.jwk, rotated.jwk];
    await new Promise((r) => setTimeout(r, 120));
    expect((await a.admit("main", routeAuth("main"), bearer(await signToken(rotated, claims())))).kind).toBe(
      "allow",
    );
    expect(server.fetches).toBe(2);
    a.close();
    await server.close();
  });

  it("makes_one_fetch_for_a_stampede_of_unknown_kids", async () => {
    const server = await startJwksServer([main.jwk]);
    const a = new Authenticator(buildConfig(server.url), { jwt: { minRefetchIntervalMs: 60_000 } });
    expect((await a.admit("main", routeAuth("main"), bearer(await signToken(main, claims())))).kind).toBe(
      "allow",
    );
    server.delayMs = 50;
    const tokens = await Promise.all(
      Array.from({ length: 50 }, (_, i) => signToken(makeKeyCached(i), claims())),
    );
    const results = await Promise.all(tokens.map((t) => a.admit("main", routeAuth("main"), bearer(t))));
    expect(results.every((r) => r.kind === "deny" && r.status === 401)).toBe(true);
    // The first fetch at start; the interval has not passed since, so the stampede causes none.
    expect(server.fetches).toBe(1);
    a.close();
    await server.close();
  });

  it("joins_concurrent_unknown_kid_tokens_to_one_in_flight_fetch", async () => {
    const server = await startJwksServer([main.jwk]);
    const a = new Authenticator(buildConfig(server.url), { jwt: { minRefetchIntervalMs: 100 } });
    expect((await a.admit("main", routeAuth("main"), bearer(await signToken(main, claims())))).kind).toBe(
      "allow",
    );
    await new Promise((r) => setTimeout(r, 120));
    server.keys = [main.jwk, rotated.jwk];
    server.delayMs = 80;
    const tokens = await Promise.all(
      Array.from({ length: 40 }, (_, i) => signToken(i % 2 ? rotated : makeKeyCached(i), claims())),
    );
    const results = await Promise.all(tokens.map((t) => a.admit("main", routeAuth("main"), bearer(t))));
    expect(results.filter((r) => r.kind === "allow").length).toBe(20);
    expect(server.fetches).toBe(2);
    a.close();
    await server.close();
  });

  it("rate_limits_refetches_for_unknown_kids", async () => {
    const server = await startJwksServer([main.jwk]);
    // An interval that the five tries below (signed beforehand) stay well within on a loaded machine.
    const a = new Authenticator(buildConfig(server.url), { jwt: { minRefetchIntervalMs: 1000 } });
    const unknown = await Promise.all(Array.from({ length: 6 }, () => signToken(attacker, claims())));
    expect((await a.admit("main", routeAuth("main"), bearer(await signToken(main, claims())))).kind).toBe(
      "allow",
    );
    for (let i = 0; i < 5; i++) await a.admit("main", routeAuth("main"), bearer(unknown[i]!));
    expect(server.fetches).toBe(1);
    await new Promise((r) => setTimeout(r, 1020));
    await a.admit("main", routeAuth("main"), bearer(unknown[5]!));
    expect(server.fetches).toBe(2);
    a.close();
    await server.close();
  });

  it("answers_503_while_the_jwks_is_unreachable_and_recovers", async () => {
    const server = await startJwksServer([main.jwk]);
    server.status = 500;
    const captured = capturedLogger();
    const a = new Authenticator(buildConfig(server.url), {
      log: captured.logger,
      jwt: { minRefetchIntervalMs: 50 },
    });
    const d = await a.admit("main", routeAuth("main"), bearer(await signToken(main, claims())));
    expect(d).toMatchObject({ kind: "deny", status: 503, code: "auth_unavailable" });
    expect(captured.lines().some((l) => l.event === "jwks_fetch_failed")).toBe(true);
    server.status = 200;
    await new Promise((r) => setTimeout(r, 60));
    expect((await a.admit("main", routeAuth("main"), bearer(await signToken(main, claims())))).kind).toBe(
      "allow",
    );
    a.close();
    await server.close();
  });

  it("keeps_serving_with_the_previous_keys_when_a_refresh_fails", async () => {
    const server = await startJwksServer([main.jwk]);
    server.cacheControl = "max-age=0";
    const a = new Authenticator(buildConfig(server.url), { jwt: { minTtlMs: 50, minRefetchIntervalMs: 10 } });
    expect((await a.admit("main", routeAuth("main"), bearer(await signToken(main, claims())))).kind).toBe(
      "allow",
    );
    server.status = 503;
    await new Promise((r) => setTimeout(r, 80));
    expect(
      (await a.admit("main", routeAuth("main"), bearer(await signToken(main, claims({ sub: "b" }))))).kind,
    ).toBe("allow");
    a.close();
    await server.close();
  });

  it("retries_a_failed_background_refresh_no_sooner_than_the_refetch_interval", async () => {
    // Left stale after a failed refresh, every token not yet cached started another fetch as soon as the
    // previous one failed: a request-paced retry storm against an issuer that is already failing.
    const server = await startJwksServer([main.jwk]);
    server.cacheControl = "max-age=0";
    // An interval that the ten requests below (signed beforehand) stay well within on a loaded machine.
    const a = new Authenticator(buildConfig(server.url), {
      jwt: { minTtlMs: 50, minRefetchIntervalMs: 1000 },
    });
    const tokens = await Promise.all(
      Array.from({ length: 11 }, (_, i) => signToken(main, claims({ sub: i < 10 ? `u${i}` : "later" }))),
    );
    expect((await a.admit("main", routeAuth("main"), bearer(await signToken(main, claims())))).kind).toBe(
      "allow",
    );
    server.status = 503;
    await new Promise((r) => setTimeout(r, 80));
    for (let i = 0; i < 10; i++) {
      expect((await a.admit("main", routeAuth("main"), bearer(tokens[i]!))).kind).toBe("allow");
      await new Promise((r) => setTimeout(r, 5));
    }
    expect(server.fetches).toBe(2); // the first fetch, and one failed refresh
    server.status = 200;
    await new Promise((r) => setTimeout(r, 1020));
    await a.admit("main", routeAuth("main"), bearer(tokens[10]!));
    // The retry runs in the background: wait for it to reach the server.
    for (const end = Date.now() + 5000; server.fetches < 3 && Date.now() < end;)
      await new Promise((r) => setTimeout(r, 10));
    expect(server.fetches).toBe(3); // retried once the interval passed
    a.close();
    await server.close();
  });

  it("drops_cached_verifications_when_their_key_is_removed", async () => {
    const server = await startJwksServer([main.jwk, rotated.jwk]);
    const a = new Authenticator(buildConfig(server.url), { jwt: { minRefetchIntervalMs: 10 } });
    const token = await signToken(rotated, claims());
    expect((await a.admit("main", routeAuth("main"), bearer(token))).kind).toBe("allow");
    expect(a.admit("main", routeAuth("main"), bearer(token))).not.toBeInstanceOf(Promise);
    server.keys = [main.jwk];
    await new Promise((r) => setTimeout(r, 20));
    await a.admit("main", routeAuth("main"), bearer(await signToken(attacker, claims()))); // unknown kid → refetch
    const after = await a.admit("main", routeAuth("main"), bearer(token));
    expect(after).toMatchObject({ kind: "deny", status: 401 });
    a.close();
    await server.close();
  });

  it("does_not_cache_a_verification_under_way_when_its_key_was_removed", async () => {
    // The signature check runs on libuv's thread pool. With the pool busy, a refresh that withdraws the key
    // lands between the key lookup and the check: the verification still answers (the key was the issuer's
    // when it began) but must not be stored — stored after the refresh had cleared the cache, the
    // withdrawn key's token went on verifying from the cache until it expired.
    const server = await startJwksServer([main.jwk, rotated.jwk]);
    const a = new Authenticator(buildConfig(server.url), { jwt: { minRefetchIntervalMs: 10 } });
    expect((await a.admit("main", routeAuth("main"), bearer(await signToken(main, claims())))).kind).toBe(
      "allow",
    );
    const token = await signToken(rotated, claims({ sub: "in-flight" }));
    const unknownKid = await signToken(attacker, claims());
    server.keys = [main.jwk];
    await new Promise((r) => setTimeout(r, 20));
    const threads = Number(process.env.UV_THREADPOOL_SIZE ?? 4);
    const busy = Array.from(
      { length: threads },
      () => new Promise((r) => pbkdf2("p", "s", 2_000_000, 64, "sha256", r)), // ~0.5 s each
    );
    const refetch = a.admit("main", routeAuth("main"), bearer(unknownKid)); // unknown kid: a refresh starts
    const inFlight = a.admit("main", routeAuth("main"), bearer(token)); // key found; its check waits for the pool
    expect(await refetch).toMatchObject({ kind: "deny", status: 401 });
    expect(server.fetches).toBe(2); // the refresh withdrew the key while the check waited
    expect((await inFlight).kind).toBe("allow");
    await Promise.all(busy);
    await new Promise((r) => setTimeout(r, 20));
    expect(await a.admit("main", routeAuth("main"), bearer(token))).toMatchObject({
      kind: "deny",
      status: 401,
    });
    a.close();
    await server.close();
  });

  // The issuer keeps the key material but narrows the algorithms it may verify: tokens verified earlier under
  // a withdrawn algorithm must not keep passing from the cache (the key's identity once ignored its algs).
  it.each([
    { claim: "drops_cached_verifications_when_a_refresh_restricts_their_key_to_another_alg", alg: undefined },
    { claim: "drops_cached_verifications_when_a_refresh_moves_their_key_to_another_alg", alg: "RS256" },
  ])("$claim", async ({ alg }) => {
    const key = makeKey("rsa-narrowed", "RS256");
    const stranger = makeKey("rsa-stranger", "RS256");
    const { alg: _alg, ...material } = key.jwk;
    const server = await startJwksServer([alg === undefined ? material : { ...material, alg }]);
    const pinned = gatewayConfig(
      [{ name: "r", match: { path: "/r" }, to: "app", auth: { jwt: "r" }, ...RATE }],
      { app: { port: 1 } },
      {
        jwt: {
          r: { issuer: ISS, audiences: ["api"], jwksUri: server.url, algorithms: ["RS256", "PS256"] },
        },
      },
    );
    const a = new Authenticator(pinned, { jwt: { minRefetchIntervalMs: 10 } });
    const r = (t: string) => a.admit("r", pinned.routes[0]!.auth, bearer(t, "r"));
    try {
      const cached = await signToken(key, claims());
      expect((await r(cached)).kind).toBe("allow");
      expect(r(cached)).not.toBeInstanceOf(Promise); // served from the cache
      server.keys = [{ ...material, alg: "PS256" }];
      await new Promise((res) => setTimeout(res, 20));
      await r(await signToken(stranger, claims())); // unknown kid → refetch
      expect(server.fetches).toBe(2);
      for (const t of [cached, await signToken(key, claims({ sub: "fresh" }))])
        expect(await r(t)).toMatchObject({ kind: "deny", status: 401 });
    } finally {
      a.close();
      await server.close();
    }
  });

  // The issuer withdrew the last usable key: taken as a failed fetch, the withdrawn key went on verifying
  // for good (every refresh "failed" alike), while a key withdrawn beside a usable one stopped at once.
  it.each([
    { claim: "stops_verifying_with_keys_withdrawn_by_an_empty_set", keys: () => [] },
    { claim: "stops_verifying_with_keys_replaced_by_unpinned_algorithms", keys: () => [rsa.jwk] },
    {
      claim: "stops_verifying_with_a_key_republished_for_encryption",
      keys: () => [{ ...main.jwk, use: "enc" }],
    },
  ])("$claim", async ({ keys }) => {
    const server = await startJwksServer([main.jwk]);
    const captured = capturedLogger();
    const a = new Authenticator(buildConfig(server.url), {
      log: captured.logger,
      jwt: { minRefetchIntervalMs: 10 },
    });
    const token = await signToken(main, claims());
    const fresh = await signToken(main, claims({ sub: "fresh" }));
    expect((await a.admit("main", routeAuth("main"), bearer(token))).kind).toBe("allow");
    server.keys = keys();
    await new Promise((r) => setTimeout(r, 20));
    await a.admit("main", routeAuth("main"), bearer(await signToken(attacker, claims()))); // unknown kid → refetch
    expect(server.fetches).toBe(2);
    for (const t of [token, fresh])
      expect(await a.admit("main", routeAuth("main"), bearer(t))).toMatchObject({
        kind: "deny",
        status: 401,
      });
    expect(captured.lines().some((l) => l.event === "jwks_unusable")).toBe(true);
    // A set with a usable key again is taken up at the next refresh.
    server.keys = [main.jwk];
    await new Promise((r) => setTimeout(r, 20));
    await a.admit("main", routeAuth("main"), bearer(await signToken(attacker, claims())));
    expect((await a.admit("main", routeAuth("main"), bearer(fresh))).kind).toBe("allow");
    a.close();
    await server.close();
  });

  it.each([
    ["a_user_and_password", "idp-reader:s3cret", "Basic aWRwLXJlYWRlcjpzM2NyZXQ="],
    [
      "percent_encoded_ones_decoded_first",
      "idp%40corp:p%3Ass%2Fw",
      `Basic ${Buffer.from("idp@corp:p:ss/w").toString("base64")}`,
    ],
    ["a_user_without_password", "reader@", "Basic cmVhZGVyOg=="],
  ])(
    "fetches_a_jwks_uri_carrying_%s_with_basic_auth_and_never_in_the_target",
    async (_n, userinfo, expected) => {
      const server = await startJwksServer([main.jwk]);
      server.requireAuthorization = expected;
      const uri = server.url.replace(
        "http://",
        `http://${userinfo.endsWith("@") ? userinfo : `${userinfo}@`}`,
      );
      const a = new Authenticator(buildConfig(uri), { jwt: { minTtlMs: 100 } });
      try {
        const result = await a.admit("main", routeAuth("main"), bearer(await signToken(main, claims())));
        expect(result.kind).toBe("allow");
        expect(server.requests).toEqual([{ target: "/jwks.json", authorization: expected }]);
      } finally {
        a.close();
        await server.close();
      }
    },
  );

  it("verifies_inline_keys_without_any_fetch", async () => {
    const before = jwks.fetches;
    const d = await admit("rsa", bearer(await signToken(rsa, claims({ iss: "https://rsa.test/" })), "rsa"));
    expect(d.kind).toBe("allow");
    expect(jwks.fetches).toBe(before);
  });

  it("refuses_a_provider_that_pins_hmac_or_none", () => {
    const bad = {
      ...config,
      auth: { ...config.auth, jwt: [{ ...config.auth.jwt[0]!, algorithms: ["HS256"] }] },
    };
    expect(() => new Authenticator(bad)).toThrow(/HS256 is refused/);
  });
});

describe("keys sharing one kid", () => {
  // A JWKS may publish one kid twice (a rotation that reused it): every key with the kid is tried, as Envoy's
  // jwt_authn and jose's local JWKS do; a token signed by none of them still fails.
  let twinKeys: TestKey[] = [];
  const twins = () =>
    twinKeys.length ? twinKeys : (twinKeys = [makeKey("twin"), makeKey("twin"), makeKey("twin")]);
  it.each([
    ["remote", 0, "allow"],
    ["remote", 1, "allow"],
    ["remote", 2, "deny"],
    ["inline", 0, "allow"],
    ["inline", 1, "allow"],
    ["inline", 2, "deny"],
  ] as const)(
    "a_%s_set_verifies_a_token_signed_by_key_%i_of_the_twins_as_%s",
    async (where, signer, want) => {
      const [a, b, c] = twins();
      const server = await startJwksServer([a!.jwk, b!.jwk]);
      const base = buildConfig(server.url);
      const cfg =
        where === "remote"
          ? base
          : {
              ...base,
              auth: {
                ...base.auth,
                jwt: base.auth.jwt.map((p) =>
                  p.name === "main" ? { ...p, jwksUri: null, jwks: { keys: [a!.jwk, b!.jwk] } } : p,
                ),
              },
            };
      const x = new Authenticator(cfg as GatewayRuntimeConfig);
      const d = await x.admit(
        "main",
        routeAuth("main"),
        bearer(await signToken([a, b, c][signer]!, claims())),
      );
      expect(d.kind).toBe(want);
      if (d.kind === "deny") expect(d.reason).toContain("signature verification failed");
      x.close();
      await server.close();
    },
  );
});

describe("logs", () => {
  it("never_contain_a_token_or_key_from_the_corpus", () => {
    const text = log.text();
    expect(presented.length).toBeGreaterThan(25);
    for (const t of presented) {
      for (const part of t.split(".").filter((p) => p.length > 12)) expect(text).not.toContain(part);
    }
    for (const k of [main, rotated, rsa, other, attacker, attackerRsa]) {
      const priv = k.privateKey.export({ format: "jwk" }) as { d: string };
      expect(text).not.toContain(priv.d);
      expect(text).not.toContain(k.publicPem.split("\n")[1]!);
    }
  });
});

const extraKeys = new Map<number, TestKey>();
function makeKeyCached(i: number): TestKey {
  let k = extraKeys.get(i % 8);
  if (!k) {
    k = makeKey(`unknown-${i % 8}`);
    extraKeys.set(i % 8, k);
  }
  return k;
}
