/**
 * Authentication and authorization end to end through a real gateway (test/support/gateway.ts harness):
 * the forged-token corpus answered 401 with nothing reaching the upstream, honest tokens forwarded with the
 * principal in gateway-owned headers and the credential removed, API keys, authorization denials (403) and
 * their metrics, every log line free of tokens and keys, and the path-bypass corpus (≥ 600 variants) against
 * three protected routes — no bypass, and the path the upstream receives is the canonical path that was
 * authorized, for every accepted request.
 */
import http from "node:http";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { apiKeyHash } from "../../runtime/auth/index.ts";
import { sealRuntimeConfig, type GatewayRuntimeConfig } from "../../runtime/contract/index.ts";
import { canonicalizeTarget } from "../../runtime/decide/index.ts";
import {
  gatewayConfig,
  request,
  startTestGateway,
  startUpstream,
  type TestGateway,
  type Upstream,
} from "../support/gateway.ts";
import { bypassCorpus } from "../support/paths.ts";
import { ISS, claims, forgedTokens } from "./corpus.ts";
import { makeKey, signToken, startJwksServer, type JwksServer, type TestKey } from "./support.ts";
import { selfSignedCert } from "../support/certs.ts";

const RATE = { rateLimit: { requests: 100000, per: "1s" } };
const API_KEY = "e2e-partner-key-0123456789abcdef";

let main: TestKey;
let rsa: TestKey;
let other: TestKey;
let attacker: TestKey;
let attackerRsa: TestKey;
let jwks: JwksServer;
let attackerServer: JwksServer;
let attackerCertB64: string;
let app: Upstream;
let gw: TestGateway;
let config: GatewayRuntimeConfig;
let dir: string;
const agent = new http.Agent({ keepAlive: true, maxSockets: 8 });

beforeAll(async () => {
  main = makeKey("main-1");
  rsa = makeKey("rsa-1", "RS256");
  other = makeKey("other-1");
  attacker = makeKey("attacker-1");
  attackerRsa = makeKey("attacker-rsa", "RS256");
  jwks = await startJwksServer([main.jwk]);
  attackerServer = await startJwksServer([attacker.jwk]);
  dir = mkdtempSync(join(tmpdir(), "meshgate-auth-e2e-"));
  const { certFile } = await selfSignedCert(dir, "c", "attacker");
  attackerCertB64 = readFileSync(certFile, "utf8").replace(/-----[^-]+-----|\s/g, "");
  app = await startUpstream();
  config = gatewayConfig(
    [
      // The token corpus' routes.
      { name: "main", match: { path: "/main" }, to: "app", auth: { jwt: "main" }, ...RATE },
      { name: "rsa", match: { path: "/rsa" }, to: "app", auth: { jwt: "rsa" }, ...RATE },
      { name: "cq", match: { path: "/cq" }, to: "app", auth: { jwt: "cq" }, ...RATE },
      {
        name: "cq-moved",
        match: { path: "/cq-moved" },
        redirect: { host: "elsewhere.example", path: "/new" },
        auth: { jwt: "cq" },
        ...RATE,
      },
      // The path corpus' routes: three protected prefixes and a public one.
      {
        name: "admin",
        match: { path: "/admin/**" },
        to: "app",
        auth: { jwt: "main", claims: { role: "admin" } },
        ...RATE,
      },
      {
        name: "orders",
        match: { path: "/api/orders/**" },
        to: "app",
        auth: { jwt: "main", scopes: ["orders:read"] },
        ...RATE,
      },
      {
        name: "partner-api",
        match: { path: "/api/**" },
        to: "app",
        auth: { apiKey: true, groups: ["partners"] },
        ...RATE,
      },
      { name: "public", match: { path: "/public/**" }, to: "app", public: true, ...RATE },
      {
        name: "mine",
        match: { path: "/mine" },
        to: "app",
        auth: { jwt: ["main", "cq"] },
        cache: { ttl: "30s", perPrincipal: true },
        ...RATE,
      },
      {
        name: "per-user",
        match: { path: "/per-user" },
        to: "app",
        auth: { jwt: ["main", "cq"] },
        rateLimit: { requests: 1, per: "1m", key: "subject" },
      },
      // Aggregate parts that copy the client's cookies, Authorization and API-key header.
      {
        name: "agg-me",
        match: { path: "/agg-me", methods: ["GET"] },
        auth: { jwt: ["main", "cq"] },
        aggregate: { me: { service: "app", path: "/me", forwardHeaders: ["cookie", "authorization"] } },
        ...RATE,
      },
      {
        name: "agg-partner",
        match: { path: "/agg-partner", methods: ["GET"] },
        auth: { apiKey: true },
        aggregate: { me: { service: "app", path: "/partner", forwardHeaders: ["x-api-key"] } },
        ...RATE,
      },
      {
        name: "internal",
        match: { path: "/internal" },
        to: "app",
        auth: { jwt: "main", clientIps: ["10.0.0.0/8"] },
        ...RATE,
      },
    ],
    { app },
    {
      jwt: {
        main: {
          issuer: ISS,
          audiences: ["api"],
          jwksUri: jwks.url,
          algorithms: ["ES256"],
          forwardClaims: { "x-user-email": "email" },
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
      apiKeys: {
        consumers: {
          partner: { keyHashes: [apiKeyHash(API_KEY)], groups: ["partners"] },
          loner: { keyHashes: [apiKeyHash("e2e-loner-key-0123456789")] },
        },
      },
    },
  );
  gw = await startTestGateway(config);
});

afterAll(async () => {
  agent.destroy();
  await gw.drain();
  await app.close();
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

describe("forged tokens through the gateway", () => {
  it.each(corpus)("%s", async (_name, _reason, forge) => {
    const before = app.received.length;
    const { token, headers, query, route = "main" } = await forge();
    if (token) presented.push(token);
    const r = await request(`${gw.url}/${route}${query ? `?${query}` : ""}`, {
      headers: token ? { authorization: `Bearer ${token}` } : (headers ?? {}),
      agent,
    });
    expect(r.status).toBe(401);
    expect(r.headers["x-meshgate-error"]).toBe("unauthenticated");
    expect(r.headers["www-authenticate"]).toMatch(/^Bearer realm="meshgate"/);
    expect(app.received.length).toBe(before);
  });

  it("fetched_nothing_from_the_attackers_server", () => {
    expect(attackerServer.fetches).toBe(0);
  });
});

describe("honest requests through the gateway", () => {
  it("forwards_a_valid_token_with_the_principal_and_without_the_credential", async () => {
    const token = await signToken(main, claims({ email: "alice@example.com" }));
    const r = await request(`${gw.url}/main`, {
      headers: {
        authorization: `Bearer ${token}`,
        "x-meshgate-subject": "forged-admin",
        "x-user-email": "forged@example.com",
        "x-meshgate-groups": "admins",
      },
      agent,
    });
    expect(r.status).toBe(200);
    const seen = app.received.at(-1)!.headers;
    expect(seen["x-meshgate-subject"]).toBe("alice");
    expect(seen["x-meshgate-auth"]).toBe("jwt:main");
    expect(seen["x-meshgate-scopes"]).toBe("orders:read");
    expect(seen["x-user-email"]).toBe("alice@example.com");
    expect(seen["x-meshgate-groups"]).toBeUndefined();
    expect(seen.authorization).toBeUndefined();
  });

  it("strips_client_identity_headers_on_public_routes", async () => {
    const r = await request(`${gw.url}/public/x`, {
      headers: {
        "x-meshgate-subject": "forged",
        "x-user-email": "forged@example.com",
        authorization: "Basic abc",
      },
      agent,
    });
    expect(r.status).toBe(200);
    const seen = app.received.at(-1)!.headers;
    expect(seen["x-meshgate-subject"]).toBeUndefined();
    expect(seen["x-user-email"]).toBeUndefined();
    expect(seen.authorization).toBe("Basic abc"); // public routes take no credential, so none is removed
  });

  it.each([
    { claim: "removes_a_query_token_from_the_upstream_path", name: "access_token" },
    // The name as the upstream's query parser reads it: left in, an escaped spelling reached the upstream.
    { claim: "reads_and_removes_a_query_token_under_a_percent_escaped_name", name: "access%5Ftoken" },
    { claim: "reads_and_removes_a_query_token_under_a_lower_case_escape", name: "%61ccess%5ftoken" },
    // Framework spellings the upstream reads as access_token (PHP, Rack, qs; a raw "[" is refused as a target).
    { claim: "reads_and_removes_a_query_token_sent_as_an_escaped_array", name: "access_token%5B%5D" },
    { claim: "reads_and_removes_a_query_token_under_php_s_dotted_spelling", name: "access.token" },
    // PHP skips a name's leading spaces, an escaped one too.
    { claim: "reads_and_removes_a_query_token_under_a_name_with_a_leading_space", name: "%20access_token" },
    // ASP.NET Core reads the query ignoring case: ACCESS_TOKEN is access_token there.
    { claim: "reads_and_removes_a_query_token_under_an_upper_case_name", name: "ACCESS_TOKEN" },
    { claim: "reads_and_removes_a_query_token_under_a_mixed_case_escaped_name", name: "Access%5FToken" },
  ])("$claim", async ({ name }) => {
    const t = await signToken(main, claims({ iss: "https://cq.test/" }));
    const r = await request(`${gw.url}/cq?a=1&${name}=${t}&b=2`, { agent });
    expect(r.status).toBe(200);
    expect(app.received.at(-1)!.headers["x-meshgate-auth"]).toBe("jwt:cq");
    expect(app.received.at(-1)!.url).toBe("/cq?a=1&b=2");
  });

  it.each([
    {
      claim: "beside_a_token",
      query: (valid: string, forged: string) => `access_token=${valid}&x=1;access_token=${forged}`,
    },
    { claim: "alone", query: (valid: string) => `x=1;access_token=${valid}` },
  ])("refuses_a_query_token_hidden_after_a_semicolon_$claim", async ({ query }) => {
    // Rack and Python before 3.9.2 (CVE-2021-23336) split a query at ";": "x=1;access_token=…" holds the
    // token parameter for them and not for the gateway's "&" split — ambiguous, so refused.
    const valid = await signToken(main, claims({ iss: "https://cq.test/" }));
    const forged = await signToken(attacker, claims({ iss: "https://cq.test/", sub: "mallory" }));
    const before = app.received.length;
    const r = await request(`${gw.url}/cq?${query(valid, forged)}`, { agent });
    expect(r.status).toBe(401);
    expect(app.received.length).toBe(before);
  });

  it.each([
    { claim: "removes_a_query_token_from_a_redirect_location", name: "access_token" },
    { claim: "removes_a_query_token_under_an_escaped_name_from_a_redirect_location", name: "access%5Ftoken" },
    { claim: "removes_a_query_token_under_a_mixed_case_name_from_a_redirect_location", name: "Access_Token" },
  ])("$claim", async ({ name }) => {
    const t = await signToken(main, claims({ iss: "https://cq.test/" }));
    const r = await request(`${gw.url}/cq-moved?a=1&${name}=${t}&b=2`, { agent });
    expect(r.status).toBe(302);
    expect(r.headers.location).toBe("http://elsewhere.example/new?a=1&b=2");
  });

  it("answers_403_for_a_token_without_the_scope_and_counts_it", async () => {
    const token = await signToken(main, claims({ scope: "profile" }));
    const r = await request(`${gw.url}/api/orders/1`, {
      headers: { authorization: `Bearer ${token}` },
      agent,
    });
    expect(r.status).toBe(403);
    expect(r.headers["x-meshgate-error"]).toBe("forbidden");
    expect(r.headers["www-authenticate"]).toBe(
      'Bearer realm="meshgate", error="insufficient_scope", scope="orders:read"',
    );
    expect(JSON.parse(r.body).error.message).toBe("missing scope orders:read");
  });

  // The ranges come before any credential: were they checked after authentication, a caller anywhere could
  // tell a good token (403) from a bad one (401) — an oracle for stolen credentials.
  it.each([
    ["a_valid_token", async () => `Bearer ${await signToken(main, claims())}`],
    ["a_forged_token", async () => `Bearer ${(await signToken(main, claims())).slice(0, -4)}AAAA`],
    ["no_credential", async () => null],
  ])("answers_the_same_403_outside_the_routes_client_ranges_with_%s", async (_claim, credential) => {
    const authorization = await credential();
    const r = await request(`${gw.url}/internal`, {
      headers: authorization ? { authorization } : {},
      agent,
    });
    expect([r.status, r.headers["x-meshgate-error"], r.headers["www-authenticate"]]).toEqual([
      403,
      "forbidden",
      undefined,
    ]);
  });

  it("admits_an_api_key_of_an_allowed_group_and_strips_it", async () => {
    const r = await request(`${gw.url}/api/catalog`, { headers: { "x-api-key": API_KEY }, agent });
    expect(r.status).toBe(200);
    const seen = app.received.at(-1)!.headers;
    expect(seen["x-api-key"]).toBeUndefined();
    expect(seen["x-meshgate-consumer"]).toBe("partner");
    expect(seen["x-meshgate-groups"]).toBe("partners");
  });

  it.each([
    { claim: "a_token_cookie", path: "/agg-me", cookie: true, key: false },
    { claim: "a_bearer_token", path: "/agg-me", cookie: false, key: false },
    { claim: "an_api_key", path: "/agg-partner", cookie: false, key: true },
  ])(
    "an aggregate part listing the client's headers never gets the route's credential: $claim",
    async ({ path, cookie, key }) => {
      const token = await signToken(main, claims(cookie ? { iss: "https://cq.test/" } : {}));
      const headers: Record<string, string> = key
        ? { "x-api-key": API_KEY }
        : cookie
          ? { cookie: `tok=${token}; lang=de` }
          : { authorization: `Bearer ${token}`, cookie: "lang=de" };
      const before = app.received.length;
      const r = await request(`${gw.url}${path}`, { headers, agent });
      expect(r.status).toBe(200);
      const seen = app.received.slice(before).at(-1)!.headers;
      // What a forwarded request gets: the principal, the app's own cookies, no replayable credential.
      expect(seen["x-meshgate-auth"]).toBe(key ? "apiKey" : cookie ? "jwt:cq" : "jwt:main");
      expect(seen["x-api-key"]).toBeUndefined();
      expect(seen.authorization).toBeUndefined();
      expect(seen.cookie).toBe(key ? undefined : "lang=de");
    },
  );

  it.each([
    ["a_public_route", "/public/page", {}, "none"],
    ["a_route_of_another_jwt_provider", "/main", { authorization: "Bearer MAIN" }, "jwt:main"],
    ["a_route_of_the_api_key", "/api/partners", { "x-api-key": API_KEY }, "apiKey"],
  ])(
    "keeps_a_jwt_providers_token_cookie_from_the_upstream_of_%s",
    async (_name, path, extra: Record<string, string>, auth) => {
      // The browser sends the cq provider's `tok` cookie with every request to the host: only the gateway
      // may read it, whichever route the request takes (as the OIDC session cookie).
      const cookieToken = await signToken(main, claims({ iss: "https://cq.test/" }));
      const headers: Record<string, string> = { cookie: `tok=${cookieToken}; lang=de` };
      for (const [k, v] of Object.entries(extra))
        headers[k] = v === "Bearer MAIN" ? `Bearer ${await signToken(main, claims())}` : v;
      const before = app.received.length;
      const r = await request(`${gw.url}${path}`, { headers, agent });
      expect(r.status).toBe(200);
      const seen = app.received.slice(before).at(-1)!.headers;
      expect(seen["x-meshgate-auth"] ?? "none").toBe(auth);
      expect(seen.cookie).toBe("lang=de");
    },
  );

  // Spellings of the `tok` cookie that some upstream reads as `tok`: ASP.NET Core compares cookie names
  // ignoring case, Django strips Python's whitespace (U+0085 and U+00A0 too: "Cookie Chaos", PortSwigger
  // 2025), Rack and PHP before 7.4.11 percent-decode names, PHP reads ".", " " and "[" as "_", RFC 2965
  // parsers (Jetty's legacy mode) split pairs at ",". A second token under any of them beside the verified
  // one would reach such an upstream unverified: the gateway reads them all as the cookie (a repeated
  // cookie is refused) and removes them all from what it forwards.
  const SPELLINGS = [
    { claim: "in_another_case", pair: (t: string) => `TOK=${t}` },
    { claim: "under_a_percent_escaped_name", pair: (t: string) => `t%6Fk=${t}` },
    { claim: "after_a_next_line_character", pair: (t: string) => `\x85tok=${t}` },
    { claim: "after_a_no_break_space", pair: (t: string) => `\xa0tok=${t}` },
    { claim: "as_a_php_array", pair: (t: string) => `tok[]=${t}` },
    { claim: "after_a_comma_inside_another_cookie", pair: (t: string) => `lang=fr, tok=${t}` },
  ];

  it.each(SPELLINGS)("refuses_a_second_token_cookie_spelled_$claim", async ({ pair }) => {
    const valid = await signToken(main, claims({ iss: "https://cq.test/" }));
    const forged = await signToken(attacker, claims({ iss: "https://cq.test/", sub: "mallory" }));
    const before = app.received.length;
    for (const cookie of [`tok=${valid}; ${pair(forged)}`, `${pair(forged)}; tok=${valid}`]) {
      const r = await request(`${gw.url}/cq`, { headers: { cookie }, agent });
      expect(r.status, cookie.slice(0, 12)).toBe(401);
    }
    expect(app.received.length).toBe(before);
  });

  it.each(SPELLINGS)(
    "removes_from_what_a_public_route_forwards_a_token_cookie_spelled_$claim",
    async ({ pair }) => {
      const forged = await signToken(attacker, claims({ iss: "https://cq.test/", sub: "mallory" }));
      const r = await request(`${gw.url}/public/page`, {
        headers: { cookie: `${pair(forged)}; lang=de` },
        agent,
      });
      expect(r.status).toBe(200);
      expect(app.received.at(-1)!.headers.cookie).toBe("lang=de");
    },
  );

  it.each([
    ["refuses_a_wrong_api_key", { "x-api-key": "nope-nope-nope" }, 401, "unauthenticated"],
    [
      "refuses_an_api_key_outside_the_routes_groups",
      { "x-api-key": "e2e-loner-key-0123456789" },
      403,
      "forbidden",
    ],
    [
      "refuses_a_duplicated_api_key_header_at_hygiene",
      { "x-api-key": [API_KEY, API_KEY] },
      400,
      "duplicate_header",
    ],
  ])("%s", async (_n, headers, status, code) => {
    const before = app.received.length;
    const r = await request(`${gw.url}/api/catalog`, { headers, agent });
    expect(r.status).toBe(status);
    expect(r.headers["x-meshgate-error"]).toBe(code);
    expect(app.received.length).toBe(before);
  });

  it("serves_cache_hits_and_verifications_alike", async () => {
    const token = await signToken(main, claims({ sub: "repeat" }));
    for (let i = 0; i < 20; i++) {
      const r = await request(`${gw.url}/main`, { headers: { authorization: `Bearer ${token}` }, agent });
      expect(r.status).toBe(200);
    }
    expect(jwks.fetches).toBe(1);
  });

  it.each([
    {
      claim: "keeps_per_principal_cache_entries_apart_for_tokens_with_a_subject",
      subs: ["ann", "bob"],
      upstream: 2,
    },
    // A token without `sub` leaves the principal without a subject: keyed by it, every such caller shared one
    // entry (client b was served client a's response), so these requests bypass the cache.
    {
      claim: "bypasses_the_per_principal_cache_for_bearer_tokens_without_a_subject",
      subs: [null, null],
      upstream: 2,
    },
    {
      claim: "bypasses_the_per_principal_cache_for_cookie_tokens_without_a_subject",
      subs: [null, null],
      upstream: 2,
      cookie: true,
    },
    { claim: "serves_a_per_principal_cache_hit_to_the_same_subject", subs: ["cy", "cy"], upstream: 1 },
  ])("$claim", async ({ subs, upstream, cookie }) => {
    const path = `/mine?case=${Math.random().toString(36).slice(2)}`;
    const before = app.received.filter((r) => r.url.startsWith("/mine")).length;
    for (const [i, sub] of subs.entries()) {
      const { sub: _, ...rest } = claims({
        client_id: `client-${i}`,
        ...(cookie ? { iss: "https://cq.test/" } : {}),
      });
      const token = await signToken(main, sub === null ? rest : { ...rest, sub });
      const r = await request(`${gw.url}${path}`, {
        headers: cookie ? { cookie: `tok=${token}` } : { authorization: `Bearer ${token}` },
        agent,
      });
      expect(r.status).toBe(200);
    }
    expect(app.received.filter((r) => r.url.startsWith("/mine")).length - before).toBe(upstream);
  });

  it("keeps_rate_limit_buckets_of_the_same_subject_from_two_issuers_apart", async () => {
    // `sub` is unique only per issuer: keyed by the bare subject, dana of the cookie issuer shared (and could
    // drain) the bucket of dana of the main one.
    const statuses: number[] = [];
    for (const iss of [undefined, "https://cq.test/", undefined]) {
      const token = await signToken(main, claims({ sub: "dana", ...(iss ? { iss } : {}) }));
      const r = await request(`${gw.url}/per-user`, {
        headers: iss ? { cookie: `tok=${token}` } : { authorization: `Bearer ${token}` },
        agent,
      });
      statuses.push(r.status);
    }
    expect(statuses).toEqual([200, 200, 429]);
  });

  it("exposes_authn_and_authz_metrics", async () => {
    const r = await request(`${gw.adminUrl}/metrics`);
    expect(r.body).toMatch(/meshgate_authn_total\{proxy="gateway",mechanism="jwt",result="cached"\} [1-9]/);
    expect(r.body).toMatch(/meshgate_authn_total\{proxy="gateway",mechanism="jwt",result="failure"\} [1-9]/);
    expect(r.body).toMatch(/meshgate_authz_denied_total\{proxy="gateway",route="orders",reason="scope"\} 1/);
    expect(r.body).toMatch(
      /meshgate_authz_denied_total\{proxy="gateway",route="main",reason="authentication"\} [1-9]/,
    );
    expect(r.body).toMatch(
      /meshgate_jwks_fetches_total\{proxy="gateway",provider="main",outcome="success"\} 1/,
    );
  });
});

describe("path corpus against protected routes", () => {
  const targets = bypassCorpus();

  /** What may reach the upstream for a canonical path, given the caller's grants. */
  function allowed(path: string, grants: { token: boolean; key: boolean }): boolean {
    if (path === "/public" || path.startsWith("/public/")) return true;
    if (path === "/admin" || path.startsWith("/admin/")) return false; // nobody here has role admin
    if (path === "/api/orders" || path.startsWith("/api/orders/")) return grants.token;
    if (path === "/api" || path.startsWith("/api/")) return grants.key;
    return false;
  }

  it.each([
    ["anonymous", {}, { token: false, key: false }],
    ["with_a_token_holding_orders_read", "token", { token: true, key: false }],
    ["with_a_partner_api_key", { "x-api-key": API_KEY }, { token: false, key: true }],
  ] as const)(
    "no_variant_bypasses_authorization_and_upstreams_receive_the_authorized_path_%s",
    async (_who, creds, grants) => {
      expect(targets.length).toBeGreaterThanOrEqual(600);
      const headers: Record<string, string> =
        creds === "token" ? { authorization: `Bearer ${await signToken(main, claims())}` } : { ...creds };
      const bypasses: string[] = [];
      const mismatches: string[] = [];
      const statuses = new Map<number, number>();
      let accepted = 0;
      for (let i = 0; i < targets.length; i += 16) {
        await Promise.all(
          targets.slice(i, i + 16).map(async (target, k) => {
            const id = `${_who}-${i + k}`;
            const r = await request(`${gw.url}${target}`, {
              headers: { ...headers, "x-corpus-id": id },
              agent,
            });
            statuses.set(r.status, (statuses.get(r.status) ?? 0) + 1);
            const got = app.received.find((x) => x.headers["x-corpus-id"] === id);
            if (!got) {
              expect([400, 401, 403, 404]).toContain(r.status);
              return;
            }
            accepted++;
            const canonical = canonicalizeTarget(target, { mergeSlashes: true });
            if (!canonical.ok) {
              bypasses.push(`${target}: reached the upstream although canonicalization refuses it`);
              return;
            }
            const want = canonical.query ? `${canonical.path}?${canonical.query}` : canonical.path;
            if (got.url !== want) mismatches.push(`${target}: upstream got ${got.url}, authorized ${want}`);
            if (!allowed(canonical.path, grants))
              bypasses.push(`${target} → ${canonical.path} reached the upstream`);
          }),
        );
      }
      console.log(
        `path corpus (${_who}): ${targets.length} variants, ${accepted} forwarded, statuses ${JSON.stringify(Object.fromEntries(statuses))}`,
      );
      expect(bypasses).toEqual([]);
      expect(mismatches).toEqual([]);
      expect(accepted).toBeGreaterThan(0);
    },
  );
});

describe("reload", () => {
  it("rejects_a_config_whose_auth_cannot_work_and_keeps_serving_the_old_one", async () => {
    const current = JSON.parse((await request(`${gw.adminUrl}/config`)).body) as Record<string, unknown>;
    expect(current.hash).toBe(gw.currentHash());
    const token = await signToken(main, claims());
    const broken = structuredClone(config) as typeof config & { hash?: string };
    broken.auth.oidc = [
      {
        name: "sso",
        issuer: "https://sso.example/",
        clientId: "gw",
        clientSecretEnv: "MESHGATE_TEST_UNSET_SECRET_ENV",
        redirectPath: "/sso/callback",
        scopes: ["openid"],
        cookieName: "meshgate_session",
        sessionTtlMs: 3_600_000,
      },
    ];
    const { hash: _h, ...rest } = broken;
    const r = await gw.reload(JSON.stringify(sealRuntimeConfig(rest)));
    expect(r).toMatchObject({
      ok: false,
      error: expect.stringContaining("MESHGATE_TEST_UNSET_SECRET_ENV is not set"),
    });
    expect(gw.currentHash()).toBe(config.hash);
    const ok = await request(`${gw.url}/main`, { headers: { authorization: `Bearer ${token}` }, agent });
    expect(ok.status).toBe(200);
  });
});

describe("logs", () => {
  it("contain_no_token_key_or_secret", async () => {
    expect(presented.length).toBeGreaterThan(25);
    const text = gw.rawLog();
    expect(gw.logs.filter((l) => l.event === "access").length).toBeGreaterThan(presented.length);
    for (const t of presented)
      for (const part of t.split(".").filter((p) => p.length > 12)) expect(text).not.toContain(part);
    expect(text).not.toContain(API_KEY);
    for (const k of [main, rsa, other, attacker, attackerRsa]) {
      expect(text).not.toContain((k.privateKey.export({ format: "jwk" }) as { d: string }).d);
    }
  });
});
