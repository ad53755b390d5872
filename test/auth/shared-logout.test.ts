/**
 * OIDC logouts across gateway replicas (runtime/auth/shared-revocations.ts), with a real Redis and real
 * gateways on 127.0.0.1: a session cookie is sealed, so every replica with the client secret accepts it;
 * a logout on one replica must end it on all of them — those running, those started later, and those
 * that could not hear it while Redis was down.
 */
import { Writable } from "node:stream";
import pino from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { GatewayRuntimeConfig } from "../../runtime/contract/index.ts";
import { startGateway, type GatewayHandle } from "../../runtime/gateway/server.ts";
import { nextStreamId, sharedRevocationsKey } from "../../runtime/auth/shared-revocations.ts";
import { RedisClient } from "../../runtime/redis/client.ts";
import { freePort, gatewayConfig, request, startUpstream, type Upstream } from "../support/gateway.ts";
import { startRedis, type TestRedis } from "../support/redis.ts";
import { until } from "../sidecar/support.ts";
import { Jar, loginAtIdp, startIdp, type Idp } from "./idp.ts";

const SECRET = "shared-logout-oidc-client-secret-0123456789";
const REDIS_PASSWORD = "revocations-pa55word-never-logged";

interface Replica {
  readonly url: string;
  readonly gw: GatewayHandle;
  readonly raw: () => string;
}

let app: Upstream;
let idp: Idp;
let redis: TestRedis;
let config: GatewayRuntimeConfig;
/** The same gateway without a shared store: nothing to share logouts through. */
let alone: GatewayRuntimeConfig;
const ports: number[] = [];
const running: Replica[] = [];

async function replica(port: number, cfg = config): Promise<Replica> {
  let raw = "";
  const sink = new Writable({
    write(chunk: Buffer, _e, cb) {
      raw += chunk.toString();
      cb();
    },
  });
  const gw = await startGateway({
    config: cfg,
    host: "127.0.0.1",
    ports: { listeners: { [config.listeners[0]!.name]: port }, admin: 0 },
    logger: pino({}, sink),
  });
  const r = { url: `http://127.0.0.1:${port}`, gw, raw: () => raw };
  running.push(r);
  return r;
}

beforeAll(async () => {
  app = await startUpstream();
  redis = await startRedis({ password: REDIS_PASSWORD });
  for (let i = 0; i < 3; i++) ports.push(await freePort());
  idp = await startIdp({
    clientId: "gw",
    secret: SECRET,
    redirectUris: ports.map((p) => `http://127.0.0.1:${p}/app/oauth2/callback`),
  });
  process.env.MESHGATE_SHARED_LOGOUT_SECRET = SECRET;
  const gateway = (store: object) =>
    gatewayConfig(
      [
        {
          name: "app",
          match: { path: "/app/**" },
          to: "app",
          auth: { oidc: "sso" },
          rateLimit: { requests: 100_000, per: "1s" },
        },
      ],
      { app },
      {
        oidc: {
          sso: {
            issuer: idp.issuer,
            clientId: "gw",
            clientSecretEnv: "MESHGATE_SHARED_LOGOUT_SECRET",
            redirectPath: "/app/oauth2/callback",
          },
        },
        ...store,
      },
    );
  config = gateway({ rateLimitStore: { redis: { url: redis.url, failMode: "open", timeout: "500ms" } } });
  alone = gateway({});
});

afterAll(async () => {
  for (const r of running.splice(0)) await r.gw.drain();
  await idp?.close();
  await redis?.stop();
  await app?.close();
  delete process.env.MESHGATE_SHARED_LOGOUT_SECRET;
});

async function visit(base: string, jar: Jar, path: string, method = "GET") {
  const r = await request(`${base}${path}`, {
    method,
    headers: jar.cookies.size ? { cookie: jar.header() } : {},
  });
  jar.take(r.headers["set-cookie"]);
  return r;
}

/** Logs in at `at`; returns the browser's jar and a copy of its session cookie (what a thief kept). */
async function login(at: Replica, user: string): Promise<{ jar: Jar; stolen: string }> {
  const jar = new Jar();
  const first = await visit(at.url, jar, "/app/home");
  expect(first.status).toBe(302);
  const callback = new URL(await loginAtIdp(first.headers.location!, user));
  expect((await visit(at.url, jar, callback.pathname + callback.search)).status).toBe(302);
  return { jar, stolen: `meshgate_session=${jar.cookies.get("meshgate_session")!}` };
}

/** The status a copy of the cookie gets at `r` (POST: no login redirect, 401 when refused). */
async function replay(r: Replica, stolen: string): Promise<number> {
  return (await request(`${r.url}/app/home`, { method: "POST", headers: { cookie: stolen } })).status;
}

describe("OIDC logouts shared through the replicas' Redis", () => {
  it("a_logout_on_one_replica_ends_the_session_on_every_running_replica_and_on_one_started_later", async () => {
    const [a, b] = [await replica(ports[0]!), await replica(ports[1]!)];
    const { jar, stolen } = await login(a, "alice");
    expect(await replay(a, stolen)).toBe(200);
    expect(await replay(b, stolen)).toBe(200); // the same secret: every replica accepts the session

    expect((await visit(a.url, jar, "/app/oauth2/logout", "POST")).status).toBe(302);
    expect(await replay(a, stolen)).toBe(401); // at once where it happened
    const t0 = Date.now();
    await until(async () => (await replay(b, stolen)) === 401, 5000);
    // A poll a second: the other replica refuses it within about that (generous for a loaded machine).
    expect(Date.now() - t0).toBeLessThan(4000);

    // A replica started after the logout reads the stream when it starts.
    const c = await replica(ports[2]!);
    await until(async () => (await replay(c, stolen)) === 401, 5000);

    // A replica without the shared store accepts the copy; reloaded with it, it reads the stream too.
    const d = await replica(await freePort(), alone);
    expect(await replay(d, stolen)).toBe(200);
    expect(d.raw()).not.toContain('"event":"session_revocations"');
    expect(await d.gw.reload(JSON.stringify(config))).toMatchObject({ ok: true });
    await until(async () => (await replay(d, stolen)) === 401, 5000);

    // What Redis holds: the cookie's hash and its expiry, never the cookie or the user.
    const client = new RedisClient({ url: redis.url });
    try {
      const entries = JSON.stringify(
        await client.command(["XRANGE", sharedRevocationsKey(config.mesh, config.namespace), "-", "+"]),
      );
      expect(entries).toMatch(/"s","[A-Za-z0-9_-]{43}","u","\d+"/); // base64url SHA-256
      expect(entries).not.toContain(stolen.slice("meshgate_session=".length));
      expect(entries).not.toContain("alice");
    } finally {
      await client.close();
    }
    for (const r of [a, b, c]) {
      expect(r.raw()).toContain('"event":"session_revocations"');
      expect(r.raw()).not.toContain(REDIS_PASSWORD);
    }
  });

  it("a_logout_while_redis_is_down_ends_the_session_here_at_once_and_everywhere_once_redis_is_back", async () => {
    const [a, b] = running.length >= 2 ? running : [await replica(ports[0]!), await replica(ports[1]!)];
    const { jar, stolen } = await login(a!, "bob");
    expect(await replay(b!, stolen)).toBe(200);
    await redis.kill();
    expect((await visit(a!.url, jar, "/app/oauth2/logout", "POST")).status).toBe(302);
    expect(await replay(a!, stolen)).toBe(401);
    await until(() => a!.raw().includes('"event":"session_revocations_unavailable"'), 5000);
    expect(await replay(b!, stolen)).toBe(200); // not heard yet: Redis is down
    await redis.restart();
    // The logout a kept is written once Redis answers, and b reads it on its next poll.
    await until(async () => (await replay(b!, stolen)) === 401, 10_000);
    await until(() => a!.raw().includes('"event":"session_revocations_recovered"'), 5000);
    expect(a!.raw().match(/"event":"session_revocations_unavailable"/g)).toHaveLength(1);
  });
});

describe("the stream's ids", () => {
  it.each([
    ["1700000000000-0", "1700000000000-1"],
    ["1700000000000-41", "1700000000000-42"],
    ["5-18446744073709551615", "6-0"],
  ])("the_read_after_%s_starts_at_%s", (id, next) => {
    expect(nextStreamId(id)).toBe(next);
  });
});
