/**
 * `node bench/auth.ts`: the cost per request of authentication and authorization (Authenticator.admit):
 * a JWT verified-token cache hit (the synchronous path every request after the first takes), a full JWT
 * verification (ES256 and RS256 with jose: decode, key lookup, signature, claims — the cache cleared before
 * each call), an API key, an OIDC session cookie (AES-GCM open), authorize() with client IP ranges, and the
 * principal headers set upstream. µs per operation, median of RUNS runs after a warm-up.
 *
 * Benchmarks are not pass/fail: the numbers are reported, never turned into a non-zero exit.
 */
import { generateKeyPairSync } from "node:crypto";
import { performance } from "node:perf_hooks";
import { SignJWT } from "jose";
import { Authenticator, apiKeyHash, type AuthRequestFacts } from "../runtime/auth/index.ts";
import type { RouteAuth } from "../runtime/contract/index.ts";
import { authorize, type Principal } from "../runtime/decide/index.ts";
import { median, specGatewayConfig, table } from "./support.ts";

const RUNS = 7;
const RATE = { rateLimit: { requests: 1000, per: "1s" } };

const ec = generateKeyPairSync("ec", { namedCurve: "P-256" });
const rsa = generateKeyPairSync("rsa", { modulusLength: 2048 });
const jwk = (k: typeof ec.publicKey, kid: string, alg: string) => ({
  ...k.export({ format: "jwk" }),
  kid,
  alg,
  use: "sig",
});
const API_KEY = "bench-api-key-0123456789abcdef";
process.env.MESHGATE_BENCH_OIDC_SECRET = "bench-oidc-client-secret-0123456789";

const config = specGatewayConfig({
  upstreams: { app: 1 },
  routes: [
    { name: "es", match: { path: "/es" }, to: "app", auth: { jwt: "es", scopes: ["read"] }, ...RATE },
    { name: "rs", match: { path: "/rs" }, to: "app", auth: { jwt: "rs" }, ...RATE },
    { name: "key", match: { path: "/key" }, to: "app", auth: { apiKey: true, groups: ["g"] }, ...RATE },
    { name: "sso", match: { path: "/sso" }, to: "app", auth: { oidc: "sso" }, ...RATE },
    {
      name: "ips",
      match: { path: "/ips" },
      to: "app",
      auth: { jwt: "es", clientIps: ["10.0.0.0/8", "192.168.0.0/16", "2001:db8::/32"] },
      ...RATE,
    },
  ],
  gateway: {
    jwt: {
      es: {
        issuer: "https://id.bench/",
        audiences: ["api"],
        jwks: { keys: [jwk(ec.publicKey, "es-1", "ES256")] },
        algorithms: ["ES256"],
        forwardClaims: { "x-user-email": "email" },
      },
      rs: {
        issuer: "https://rs.bench/",
        audiences: ["api"],
        jwks: { keys: [jwk(rsa.publicKey, "rs-1", "RS256")] },
        algorithms: ["RS256"],
      },
    },
    apiKeys: {
      consumers: Object.fromEntries([
        ["bench", { keyHashes: [apiKeyHash(API_KEY)], groups: ["g"] }],
        ...Array.from({ length: 500 }, (_, i) => [`c${i}`, { keyHashes: [apiKeyHash(`other-key-${i}`)] }]),
      ]),
    },
    oidc: {
      sso: {
        issuer: "http://127.0.0.1:9/",
        clientId: "bench",
        clientSecretEnv: "MESHGATE_BENCH_OIDC_SECRET",
        redirectPath: "/oauth2/callback",
      },
    },
  },
});
const auth = new Authenticator(config);
const routeAuth = (name: string): RouteAuth => config.routes.find((r) => r.name === name)!.auth;

const now = Math.floor(Date.now() / 1000);
const claims = {
  iss: "https://id.bench/",
  aud: "api",
  sub: "alice",
  exp: now + 3600,
  scope: "read write",
  email: "a@b.c",
};
const esToken = await new SignJWT(claims)
  .setProtectedHeader({ alg: "ES256", kid: "es-1" })
  .sign(ec.privateKey);
const rsToken = await new SignJWT({ ...claims, iss: "https://rs.bench/" })
  .setProtectedHeader({ alg: "RS256", kid: "rs-1" })
  .sign(rsa.privateKey);

function facts(path: string, headers: Record<string, string>, clientIp = "10.1.2.3"): AuthRequestFacts {
  const raw = Object.entries(headers).flat();
  return {
    method: "GET",
    path,
    query: "",
    host: "127.0.0.1",
    authority: "127.0.0.1:8080",
    scheme: "http",
    clientIp,
    header: (n) => headers[n],
    rawHeaders: raw,
    tls: null,
  };
}

// An OIDC session cookie, minted through the module's own sealing (the same code a callback runs).
const { seal, deriveKey } = await import("../runtime/auth/seal.ts");
const oidcKey = deriveKey(
  process.env.MESHGATE_BENCH_OIDC_SECRET!,
  "meshgate-oidc-session-v1",
  `sso\0http://127.0.0.1:9/\0bench`,
);
const session = seal(oidcKey, "session:sso", {
  p: "sso",
  sub: "alice",
  scp: ["openid"],
  c: { sub: "alice" },
  exp: Date.now() + 3600_000,
});

const esFacts = facts("/es", { authorization: `Bearer ${esToken}` });
const rsFacts = facts("/rs", { authorization: `Bearer ${rsToken}` });
const ipFacts = facts("/ips", { authorization: `Bearer ${esToken}` });
const keyFacts = facts("/key", { "x-api-key": API_KEY });
const ssoFacts = facts("/sso", { cookie: `a=1; meshgate_session=${session}` });
const es = routeAuth("es");

const must = (r: unknown) => {
  const v = r as { kind: string };
  if (v.kind !== "allow") throw new Error(`benchmark request not allowed: ${JSON.stringify(r)}`);
};

// Warm up and check each path once.
must(await auth.admit("es", es, esFacts));
must(await auth.admit("rs", routeAuth("rs"), rsFacts));
must(await auth.admit("ips", routeAuth("ips"), ipFacts));
must(auth.admit("key", routeAuth("key"), keyFacts));
must(auth.admit("sso", routeAuth("sso"), ssoFacts));
const hit = auth.admit("es", es, esFacts);
if (hit instanceof Promise) throw new Error("a cache hit must be synchronous");
const principal = (hit as { principal: Principal }).principal;

function syncRun(n: number, f: () => unknown): number {
  const t = performance.now();
  for (let i = 0; i < n; i++) f();
  return ((performance.now() - t) * 1000) / n;
}
async function asyncRun(n: number, f: () => Promise<unknown> | unknown): Promise<number> {
  const t = performance.now();
  for (let i = 0; i < n; i++) await f();
  return ((performance.now() - t) * 1000) / n;
}

const esCache = auth.jwtProvider("es")!.cache;
const rsCache = auth.jwtProvider("rs")!.cache;
const cases: [string, () => Promise<number> | number][] = [
  ["jwt cache hit (sync)", () => syncRun(200_000, () => auth.admit("es", es, esFacts))],
  [
    "jwt cache hit + clientIps (sync)",
    () => syncRun(200_000, () => auth.admit("ips", routeAuth("ips"), ipFacts)),
  ],
  [
    "jwt verify ES256 (cache cleared)",
    () =>
      asyncRun(3_000, () => {
        esCache.clear();
        return auth.admit("es", es, esFacts);
      }),
  ],
  [
    "jwt verify RS256 (cache cleared)",
    () =>
      asyncRun(2_000, () => {
        rsCache.clear();
        return auth.admit("rs", routeAuth("rs"), rsFacts);
      }),
  ],
  [
    "api key, 501 consumers (sync)",
    () => syncRun(200_000, () => auth.admit("key", routeAuth("key"), keyFacts)),
  ],
  ["oidc session cookie (sync)", () => syncRun(100_000, () => auth.admit("sso", routeAuth("sso"), ssoFacts))],
  ["authorize() alone", () => syncRun(1_000_000, () => authorize(es, principal, "10.1.2.3"))],
  [
    "principal headers upstream",
    () =>
      syncRun(500_000, () => {
        const h: Record<string, string | string[]> = { authorization: "x", accept: "*/*" };
        auth.upstreamHeaders(h, es, principal);
      }),
  ],
];

const results = new Map<string, number[]>();
for (let run = 0; run < RUNS; run++) {
  for (const [name, f] of cases) {
    const us = await f();
    results.set(name, [...(results.get(name) ?? []), us]);
  }
}
auth.close();
const rows = cases.map(([name]) => {
  const v = results.get(name)!;
  return [name, median(v).toFixed(2), Math.min(...v).toFixed(2), (1e6 / median(v)).toFixed(0)];
});
console.log(`Authenticator.admit() per request (node ${process.version}, median and min of ${RUNS} runs)\n`);
console.log(table(["path", "µs/op median", "µs/op min", "ops/s"], rows, (i) => i > 0).join("\n"));
