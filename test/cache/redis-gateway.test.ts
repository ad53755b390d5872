/**
 * The Redis cache store end to end: two real gateways (startGateway) sharing one real redis-server with a
 * password, in front of a real upstream. A fill through A is a hit on B; a POST through A invalidates what
 * B would serve; a purge on one admin listener purges for both; concurrent misses coalesce per gateway.
 * Authenticated requests with real JWTs (inline JWKS) and API keys: per-principal routes cache each
 * principal apart and never serve one to another, other routes neither serve nor store them. Redis killed
 * (SIGKILL) and paused (SIGSTOP) mid-test: requests are answered by the origin within the timeout, the
 * outage is logged once, caching resumes after recovery, and an invalidation made during the pause still
 * applies. The client is closed on reload (store settings changed) and at drain. No log line and no
 * /config holds the password.
 */
import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { apiKeyHash } from "../../runtime/auth/index.ts";
import { primaryKey } from "../../runtime/cache/policy.ts";
import { RedisStore, redisCachePrefix } from "../../runtime/cache/redis-store.ts";
import { sealRuntimeConfig, type GatewayRuntimeConfig } from "../../runtime/contract/index.ts";
import { RedisClient } from "../../runtime/redis/client.ts";
import { ISS, claims } from "../auth/corpus.ts";
import { makeKey, signToken, type TestKey } from "../auth/support.ts";
import {
  gatewayConfig,
  request as send,
  startTestGateway,
  startUpstream,
  type TestGateway,
  type Upstream,
} from "../support/gateway.ts";
import { startRedis, type TestRedis } from "../support/redis.ts";

const PASSWORD = "s3cr3t-cache-pw-0123";
const RATE = { rateLimit: { requests: 100000, per: "1s" } };
const KEY_PARTNER = "cache-partner-key-0123456789abcdef";
const KEY_OTHER = "cache-other-key-0123456789abcdef";

let redis: TestRedis;
let app: Upstream;
let signing: TestKey;
let config: GatewayRuntimeConfig;
let a: TestGateway;
let b: TestGateway;
/** Reads the gateways' entries (same default prefix) to wait for fills, which land after the response. */
let probe: RedisStore;
let admin: RedisClient;
const tokens: Record<string, string> = {};
let version = 0;

/**
 * A request with the Host every replica behind one load balancer sees: the key holds the authority the
 * upstream is told (the gateways listen on different ports here).
 */
const request = (url: string, opts: Parameters<typeof send>[1] = {}) =>
  send(url, { ...opts, headers: { host: "127.0.0.1", ...opts.headers } });
const ORIGIN = "http://127.0.0.1";

const count = (url: string, method = "GET") =>
  app.received.filter((r) => r.url === url && r.method === method).length;

function configWith(timeout: string): GatewayRuntimeConfig {
  return gatewayConfig(
    [
      {
        name: "items",
        match: { path: "/api/items/{id}", methods: ["GET", "HEAD"] },
        to: "app",
        cache: { ttl: "30s" },
        public: true,
        ...RATE,
      },
      {
        name: "items-write",
        match: { path: "/api/items/{id}", methods: ["POST"] },
        to: "app",
        public: true,
        ...RATE,
      },
      {
        name: "me",
        match: { path: "/me/**" },
        to: "app",
        auth: { jwt: "main" },
        cache: { ttl: "30s", perPrincipal: true },
        ...RATE,
      },
      {
        name: "jwt",
        match: { path: "/jwt/**" },
        to: "app",
        auth: { jwt: "main" },
        cache: { ttl: "30s" },
        ...RATE,
      },
      {
        name: "key",
        match: { path: "/key/**" },
        to: "app",
        auth: { apiKey: true },
        cache: { ttl: "30s" },
        ...RATE,
      },
      {
        name: "keypp",
        match: { path: "/keypp/**" },
        to: "app",
        auth: { apiKey: true },
        cache: { ttl: "30s", perPrincipal: true },
        ...RATE,
      },
    ],
    { app },
    {
      limits: { drainTimeout: "1s" },
      jwt: {
        main: { issuer: ISS, audiences: ["api"], jwks: { keys: [signing.jwk] }, algorithms: ["ES256"] },
      },
      apiKeys: {
        consumers: {
          partner: { keyHashes: [apiKeyHash(KEY_PARTNER)] },
          other: { keyHashes: [apiKeyHash(KEY_OTHER)] },
        },
      },
      cache: { maxSize: "16MiB", redis: { url: redis.url, timeout: timeout } },
    },
  );
}

beforeAll(async () => {
  redis = await startRedis({ password: PASSWORD });
  app = await startUpstream((req, res) => {
    if (req.method === "POST") {
      res.writeHead(201, { "content-length": 2 });
      return res.end("ok");
    }
    const out = JSON.stringify({
      path: req.url,
      version: ++version,
      subject: req.headers["x-meshgate-subject"] ?? null,
      consumer: req.headers["x-meshgate-consumer"] ?? null,
    });
    setTimeout(
      () => {
        res.writeHead(200, {
          "content-type": "application/json",
          "content-length": Buffer.byteLength(out),
          "cache-control": "max-age=60",
        });
        res.end(out);
      },
      req.url?.startsWith("/api/items/slow") ? 150 : 0,
    );
  });
  signing = makeKey("cache-k1");
  tokens.alice = await signToken(signing, claims({ sub: "alice" }));
  tokens.bob = await signToken(signing, claims({ sub: "bob" }));
  config = configWith("200ms");
  expect(config.cacheStore).toMatchObject({ kind: "redis", maxBytes: 16 * 1024 * 1024, timeoutMs: 200 });
  [a, b] = await Promise.all([startTestGateway(config), startTestGateway(config)]);
  admin = new RedisClient({ url: redis.url });
  probe = new RedisStore({
    client: new RedisClient({ url: redis.url }),
    maxBytes: 16 * 1024 * 1024,
    prefix: redisCachePrefix(config.mesh, config.namespace),
  });
  expect(probe.prefix).toBe("meshgate:cache:t:t");
}, 30_000);

afterAll(async () => {
  await Promise.all([a?.drain(), b?.drain()]);
  await Promise.all([probe?.close(), admin?.close()]);
  await app?.close();
  await redis?.stop();
});

const credentials = (who: string): Record<string, string> =>
  who === "partner"
    ? { "x-api-key": KEY_PARTNER }
    : who === "other"
      ? { "x-api-key": KEY_OTHER }
      : who === "anonymous"
        ? {}
        : { authorization: `Bearer ${tokens[who]}` };

async function until(check: () => Promise<boolean>, ms: number, what: string): Promise<void> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (await check().catch(() => false)) return;
    await sleep(20);
  }
  throw new Error(`${what}: not within ${ms} ms`);
}

/** Waits until the public entry of `url` on `route` is in Redis. */
const filled = (path: string, route = "items") =>
  until(
    async () => (await probe.get(primaryKey(path, "", "127.0.0.1", route, null, ORIGIN))) !== undefined,
    3000,
    `fill of ${path}`,
  );

/** Entries of a URL in Redis (its URL index exists while it has any). */
async function entriesOf(url: string): Promise<number> {
  let n = 0;
  let cursor = "0";
  do {
    const [next, keys] = (await admin.call(
      "SCAN",
      cursor,
      "MATCH",
      `${probe.prefix}:*:u:${url}`,
      "COUNT",
      1000,
    )) as [string, string[]];
    cursor = next;
    for (const k of keys) n += Number(await admin.call("HLEN", k));
  } while (cursor !== "0");
  return n;
}

const metric = async (gw: TestGateway, pattern: RegExp): Promise<number> => {
  const text = await (await fetch(`${gw.adminUrl}/metrics`)).text();
  const m = pattern.exec(text);
  return m ? Number(m[1]) : 0;
};

describe("two gateways sharing Redis", () => {
  it("serves_on_b_what_a_filled", async () => {
    const first = await request(`${a.url}/api/items/1`);
    expect(first.headers["cache-status"]).toBe("meshgate; fwd=miss; fwd-status=200; stored");
    await filled("/api/items/1");
    const hit = await request(`${b.url}/api/items/1`);
    expect(hit.headers["cache-status"]).toMatch(/^meshgate; hit; ttl=(5[7-9]|60)$/);
    expect(hit.body).toBe(first.body);
    expect(hit.headers.age).toMatch(/^[01]$/);
    expect(count("/api/items/1")).toBe(1);
    // HEAD on A from the same entry.
    const head = await request(`${a.url}/api/items/1`, { method: "HEAD" });
    expect(head.headers["cache-status"]).toContain("hit");
    expect(count("/api/items/1", "HEAD")).toBe(0);
  });

  it("answers_repeated_hits_on_b_from_its_local_layer_until_a_post_through_a", async () => {
    const gets = async () =>
      Number(/cmdstat_get:calls=(\d+)/.exec(String(await admin.call("INFO", "commandstats")))?.[1] ?? 0);
    const first = await request(`${a.url}/api/items/local`);
    await filled("/api/items/local");
    await request(`${b.url}/api/items/local`); // a round trip; B keeps what it read
    const lookups = (result: string) =>
      metric(
        b,
        new RegExp(
          `^meshgate_cache_local_lookups_total\\{proxy="gateway",result="${result}"\\} (\\d+)$`,
          "m",
        ),
      );
    const [hitsBefore, missesBefore] = [await lookups("hit"), await lookups("miss")];
    const before = await gets();
    for (let i = 0; i < 3; i++) {
      const hit = await request(`${b.url}/api/items/local`);
      expect(hit.headers["cache-status"]).toMatch(/^meshgate; hit;/);
      expect(hit.body).toBe(first.body);
    }
    expect(await gets()).toBe(before);
    expect(b.logs.some((l) => l.event === "cache_local_layer" && l.on === true)).toBe(true);
    expect(await metric(b, /^meshgate_cache_local_active\{proxy="gateway"\} (\d+)$/m)).toBe(1);
    expect(await metric(b, /^meshgate_cache_local_bytes\{proxy="gateway"\} (\d+)$/m)).toBeGreaterThan(512);
    // Every lookup of the three requests answered in the process (a request may look up more than one key).
    expect((await lookups("hit")) - hitsBefore).toBeGreaterThanOrEqual(3);
    expect(await lookups("miss")).toBe(missesBefore);
    // The POST through A changes the entry in Redis; Redis tells B, whose copy goes.
    expect((await request(`${a.url}/api/items/local`, { method: "POST", body: "{}" })).status).toBe(201);
    await until(
      async () =>
        (await request(`${b.url}/api/items/local`)).headers["cache-status"]?.includes("fwd=miss") === true,
      2000,
      "a miss on B after the POST",
    );
  });

  it("invalidates_on_b_after_a_post_through_a", async () => {
    const first = await request(`${a.url}/api/items/2`);
    await filled("/api/items/2");
    expect((await request(`${b.url}/api/items/2`)).body).toBe(first.body);
    expect((await request(`${a.url}/api/items/2`, { method: "POST", body: "{}" })).status).toBe(201);
    // B holds a copy in its local layer: it goes when Redis' announcement arrives (a moment after).
    let after = { body: "", headers: {} as Record<string, string | string[] | undefined> };
    await until(
      async () =>
        (after = await request(`${b.url}/api/items/2`)).headers["cache-status"]?.includes("fwd=miss") ===
        true,
      2000,
      "a miss on B after the POST",
    );
    expect(after.body).not.toBe(first.body);
  });

  it("purges_for_both_through_one_admin_listener", async () => {
    for (const p of ["/api/items/p1", "/api/items/p2"]) {
      await request(`${a.url}${p}`);
      await filled(p);
    }
    const r = await fetch(`${b.adminUrl}/cache/purge`, { method: "POST", body: '{"url":"/api/items/p1"}' });
    expect(await r.json()).toEqual({ purged: 1 });
    expect((await request(`${a.url}/api/items/p1`)).headers["cache-status"]).toContain("fwd=miss");
    expect((await request(`${a.url}/api/items/p2`)).headers["cache-status"]).toContain("hit");
    const all = await fetch(`${a.adminUrl}/cache/purge`, {
      method: "POST",
      body: '{"prefix":"/api/items/p"}',
    });
    expect(((await all.json()) as { purged: number }).purged).toBeGreaterThanOrEqual(1);
    expect((await request(`${b.url}/api/items/p2`)).headers["cache-status"]).toContain("fwd=miss");
  });

  it("coalesces_concurrent_misses_per_gateway", async () => {
    const all = await Promise.all(
      Array.from({ length: 20 }, (_, i) => request(`${(i % 2 === 0 ? a : b).url}/api/items/slow`)),
    );
    expect(all.every((r) => r.status === 200)).toBe(true);
    // One fill per process: coalescing does not cross gateways (a miss on each goes upstream once).
    expect(count("/api/items/slow")).toBeGreaterThanOrEqual(1);
    expect(count("/api/items/slow")).toBeLessThanOrEqual(2);
  });
});

describe("authenticated requests", () => {
  it.each([
    {
      name: "caches_each_jwt_subject_apart_on_a_per_principal_route",
      path: "/me/profile",
      who: ["alice", "bob"],
      shared: true,
    },
    {
      name: "caches_each_api_key_consumer_apart_on_a_per_principal_route",
      path: "/keypp/x",
      who: ["partner", "other"],
      shared: true,
    },
    {
      name: "neither_serves_nor_stores_jwt_requests_without_per_principal",
      path: "/jwt/x",
      who: ["alice", "bob"],
      shared: false,
    },
    {
      name: "neither_serves_nor_stores_api_key_requests_without_per_principal",
      path: "/key/x",
      who: ["partner", "other"],
      shared: false,
    },
  ])("$name", async ({ path, who, shared }) => {
    const [p1, p2] = who as [string, string];
    const principalOf = (body: string) => {
      const j = JSON.parse(body) as { subject: string | null; consumer: string | null };
      return j.consumer ?? j.subject;
    };
    const steps: [TestGateway, string][] = [
      [a, p1],
      [b, p1],
      [a, p2],
      [b, p2],
      [a, p1],
    ];
    const seen: { who: string; status: string; principal: string | null; body: string }[] = [];
    for (const [gw, w] of steps) {
      const r = await request(`${gw.url}${path}`, { headers: credentials(w) });
      expect(r.status).toBe(200);
      seen.push({
        who: w,
        status: String(r.headers["cache-status"]),
        principal: principalOf(r.body),
        body: r.body,
      });
      if (shared && r.headers["cache-status"]?.includes("stored"))
        await until(async () => (await entriesOf(path)) >= (w === p1 ? 1 : 2), 3000, "fill");
    }
    // Never another principal's response.
    for (const s of seen) expect(s.principal).toBe(s.who);
    if (shared) {
      expect(seen.map((s) => (s.status.includes("hit") ? "hit" : "miss"))).toEqual([
        "miss",
        "hit",
        "miss",
        "hit",
        "hit",
      ]);
      expect(seen[1]!.body).toBe(seen[0]!.body);
      expect(seen[3]!.body).toBe(seen[2]!.body);
      expect(seen[2]!.body).not.toBe(seen[0]!.body);
      expect(count(path)).toBe(2);
      expect(await entriesOf(path)).toBe(2);
    } else {
      for (const s of seen)
        expect(s.status).toBe("meshgate; fwd=bypass; fwd-status=200; detail=authorization");
      expect(count(path)).toBe(steps.length);
      expect(await entriesOf(path)).toBe(0);
    }
  });

  it("answers_an_anonymous_request_on_a_per_principal_route_with_401_and_no_entry", async () => {
    const r = await request(`${a.url}/me/anon`);
    expect(r.status).toBe(401);
    expect(await entriesOf("/me/anon")).toBe(0);
  });
});

describe("Redis failures", () => {
  it("answers_from_the_origin_while_redis_is_killed_and_caches_again_after_restart", async () => {
    const errorsBefore = await metric(
      a,
      /meshgate_cache_store_errors_total\{proxy="gateway",operation="get"\} (\d+)/,
    );
    await redis.kill();
    for (let i = 0; i < 5; i++) {
      const t = performance.now();
      const r = await request(`${a.url}/api/items/k${i}`);
      expect(r.status).toBe(200);
      expect(JSON.parse(r.body).path).toBe(`/api/items/k${i}`);
      expect(performance.now() - t).toBeLessThan(2000); // the origin answers; nothing waits for Redis
    }
    expect(
      await metric(a, /meshgate_cache_store_errors_total\{proxy="gateway",operation="get"\} (\d+)/),
    ).toBeGreaterThan(errorsBefore);
    expect(await metric(a, /meshgate_cache_store_available\{proxy="gateway"\} (\d+)/)).toBe(0);
    await redis.restart();
    // Each gateway finds Redis again at its next lookup once its breaker lets one through.
    let n = 0;
    await until(
      async () => {
        const path = `/api/items/back${n++}`;
        await request(`${a.url}${path}`);
        await request(`${b.url}${path}`);
        const [onA, onB] = [await request(`${a.url}${path}`), await request(`${b.url}${path}`)];
        return [onA, onB].every((r) => r.headers["cache-status"]?.includes("hit") === true);
      },
      10_000,
      "caching after the restart",
    );
    expect(await metric(a, /meshgate_cache_store_available\{proxy="gateway"\} (\d+)/)).toBe(1);
    const downs = a.logs.filter((l) => l.event === "cache_store_unavailable");
    expect(downs).toHaveLength(1);
    expect(a.logs.filter((l) => l.event === "cache_store_recovered")).toHaveLength(1);
  }, 30_000);

  it("answers_within_the_timeout_while_redis_is_paused_and_keeps_invalidations_made_meanwhile", async () => {
    const stale = await request(`${a.url}/api/items/inv`);
    await filled("/api/items/inv");
    const downsBefore = a.logs.filter((l) => l.event === "cache_store_unavailable").length;
    redis.pause();
    const times: number[] = [];
    try {
      for (let i = 0; i < 6; i++) {
        const t = performance.now();
        const r = await request(`${(i % 2 === 0 ? a : b).url}/api/items/z${i}`);
        times.push(performance.now() - t);
        expect(r.status).toBe(200);
      }
      // Invalidated through A while Redis cannot hear it.
      expect((await request(`${a.url}/api/items/inv`, { method: "POST", body: "{}" })).status).toBe(201);
    } finally {
      redis.resume();
    }
    // The timeout is 200 ms: the first lookups wait for it, then the breaker answers at once.
    expect(Math.max(...times)).toBeLessThan(1500);
    // A's next lookups find Redis back; A then replays the invalidation it could not make.
    let poke = 0;
    await until(
      async () => {
        await request(`${a.url}/api/items/poke${poke++}`);
        return (
          (await probe.get(primaryKey("/api/items/inv", "", "127.0.0.1", "items", null, ORIGIN))) ===
          undefined
        );
      },
      10_000,
      "the invalidation replayed after the pause",
    );
    const after = await request(`${b.url}/api/items/inv`);
    expect(after.body).not.toBe(stale.body);
    expect(a.logs.filter((l) => l.event === "cache_store_unavailable").length).toBe(downsBefore + 1);
    await request(`${a.url}/api/items/resumed`);
    await filled("/api/items/resumed");
    await until(
      async () =>
        (await request(`${b.url}/api/items/resumed`)).headers["cache-status"]?.includes("hit") === true,
      5000,
      "a hit on B after the pause",
    );
  }, 30_000);
});

describe("client lifecycle", () => {
  /**
   * The connections of the gateways' stores as "normal pubsub": each store has one, and one subscribed to
   * the invalidations of its local layer; both come and go together (the test's own clients count in
   * `normal` and stay).
   */
  const connections = async () => {
    const own = `id=${String(await admin.call("CLIENT", "ID"))} `;
    const count = async (type: string) =>
      String(await admin.call("CLIENT", "LIST", "TYPE", type))
        .split("\n")
        .filter((l) => l.trim() && !l.startsWith(own)).length;
    return `${await count("normal")} ${await count("pubsub")}`;
  };
  const plus = (base: string, n: number) =>
    base
      .split(" ")
      .map((c) => Number(c) + n)
      .join(" ");

  it("closes_the_client_on_reload_when_the_store_changes_and_at_drain", async () => {
    const base = await connections();
    const c = await startTestGateway(config);
    await until(async () => (await connections()) === plus(base, 1), 3000, "the new gateway's connections");
    // Another route set, the same store settings: the cache and its client are kept.
    const { hash: _hash, ...rest } = config;
    const fewer = sealRuntimeConfig<GatewayRuntimeConfig>({
      ...rest,
      routes: rest.routes.filter((r) => r.name !== "jwt"),
    });
    expect((await c.reload(JSON.stringify(fewer))).ok).toBe(true);
    expect(c.logs.filter((l) => l.event === "cache_store" && l.kind === "redis")).toHaveLength(1);
    // Another timeout: a new client; the old one goes after the drain timeout (1 s).
    expect((await c.reload(JSON.stringify(configWith("300ms")))).ok).toBe(true);
    expect(c.logs.filter((l) => l.event === "cache_store" && l.kind === "redis")).toHaveLength(2);
    await until(async () => (await connections()) === plus(base, 2), 3000, "both clients connected");
    await until(async () => (await connections()) === plus(base, 1), 4000, "the old client closed");
    await c.drain();
    await until(async () => (await connections()) === base, 3000, "the client closed at drain");
  }, 20_000);
});

describe("secrets", () => {
  it("keeps_the_password_out_of_every_log_line_and_config", async () => {
    for (const gw of [a, b]) {
      // The store was logged (with its server), and an outage too: the check below has lines to look at.
      expect(gw.logs.some((l) => l.event === "cache_store" && l.server === `127.0.0.1:${redis.port}`)).toBe(
        true,
      );
      expect(gw.logs.some((l) => l.event === "cache_store_unavailable")).toBe(true);
      expect(gw.rawLog()).not.toContain(PASSWORD);
      expect(gw.logs.some((l) => l.event === "cache_store" && l.configured === "redis")).toBe(false);
      const shown = await (await fetch(`${gw.adminUrl}/config`)).text();
      expect(shown).toContain("[redacted]");
      expect(shown).not.toContain(PASSWORD);
    }
  });
});
