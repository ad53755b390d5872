/**
 * Rate limits end to end through a real gateway: 429 with Retry-After and the JSON error body, the
 * RateLimit-* headers, keys (client address with trusted hops, header), no bypass through path
 * variants or a WebSocket upgrade; a single process, `--workers 2` (leases on the primary's buckets),
 * and two gateway processes sharing one Redis — within 5 % under concurrent load; Redis killed under a
 * running gateway gives the declared fail mode, counted in the metrics, and never logs the password.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import http from "node:http";
import { createConnection } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  freePort,
  gatewayConfig,
  request,
  startGatewayProcess,
  type GatewayProcess,
  startTestGateway,
  startUpstream,
  upgradeStatusLine,
  type TestGateway,
  type Upstream,
} from "../support/gateway.ts";
import { makeKey, nowS, signToken } from "../auth/support.ts";
import { allStarted } from "../support/procs.ts";
import { startRedis, type TestRedis } from "../support/redis.ts";

let app: Upstream;
/** An upstream in its own process, for the load tests. */
let remote: { port: number; child: ChildProcess };
let dir: string;
beforeAll(async () => {
  app = await startUpstream();
  dir = await mkdtemp(join(tmpdir(), "meshgate-rl-"));
  const child = spawn(process.execPath, [new URL("./fixtures/upstream.ts", import.meta.url).pathname], {
    stdio: ["ignore", "pipe", "inherit"],
  });
  const port = await new Promise<number>((resolve, reject) => {
    let out = "";
    child.stdout!.on("data", (d: Buffer) => {
      out += d.toString();
      const m = /port (\d+)/.exec(out);
      if (m) resolve(Number(m[1]));
    });
    child.once("exit", (c) => reject(new Error(`upstream exited with ${c}`)));
  });
  remote = { port, child };
});
afterAll(async () => {
  remote?.child.kill();
  await app.close();
  await rm(dir, { recursive: true, force: true });
});

const route = (
  name: string,
  path: string,
  rateLimit: Record<string, unknown>,
  extra: Record<string, unknown> = {},
) => ({
  name,
  match: { path },
  to: "app",
  public: true,
  rateLimit,
  ...extra,
});

describe("rate limits in a single gateway process", () => {
  let gw: TestGateway;
  const ISSUER = "https://id.rl.test/";
  const jwtKey = makeKey("rl");
  beforeAll(async () => {
    gw = await startTestGateway(
      gatewayConfig(
        [
          route("five", "/five/**", { requests: 5, per: "1m", scope: "replica" }),
          // Admitted, then answered by the gateway itself: nothing listens on `down`; `small` takes 1 KiB.
          route("down", "/down", { requests: 5, per: "1m", scope: "replica" }, { to: "down" }),
          route(
            "small",
            "/small",
            { requests: 5, per: "1m", scope: "replica" },
            { limits: { maxBodySize: "1KiB" } },
          ),
          route("tenant", "/tenant", { requests: 2, per: "1m", key: "header:x-tenant", scope: "replica" }),
          route("whole", "/whole", { requests: 3, per: "1m", key: "route", scope: "replica" }),
          // Keyed by identity headers the gateway sets (a forwardClaims header, a principal header).
          ...(["x-org", "x-meshgate-subject"] as const).map((h) => ({
            ...route(h, `/${h}`, { requests: 2, per: "1m", key: `header:${h}`, scope: "replica" }),
            public: undefined,
            auth: { jwt: "main" },
          })),
          {
            name: "redirect",
            match: { path: "/old" },
            redirect: { path: "/new" },
            public: true,
            rateLimit: { requests: 1, per: "1m", scope: "replica" },
          },
        ],
        { app, down: { port: await freePort() } },
        {
          clientIp: { trustedHops: 1 },
          jwt: {
            main: {
              issuer: ISSUER,
              audiences: ["api"],
              jwks: { keys: [jwtKey.jwk] },
              algorithms: ["ES256"],
              forwardClaims: { "x-org": "tenant" },
            },
          },
        },
      ),
    );
  });
  afterAll(async () => {
    await gw.drain();
  });

  it("answers_429_with_retry_after_and_ratelimit_headers_after_the_burst", async () => {
    const ok = [];
    for (let i = 0; i < 5; i++)
      ok.push(await request(`${gw.url}/five/x`, { headers: { "x-forwarded-for": "198.51.100.1" } }));
    expect(ok.map((r) => r.status)).toEqual([200, 200, 200, 200, 200]);
    expect(ok.map((r) => r.headers["ratelimit-remaining"])).toEqual(["4", "3", "2", "1", "0"]);
    expect(ok[0]!.headers["ratelimit-limit"]).toBe("5");
    expect(ok[0]!.headers["ratelimit-policy"]).toBe("5;w=60");
    expect(Number(ok[0]!.headers["ratelimit-reset"])).toBeGreaterThanOrEqual(12);
    const limited = await request(`${gw.url}/five/x`, { headers: { "x-forwarded-for": "198.51.100.1" } });
    expect(limited.status).toBe(429);
    expect(limited.headers["x-meshgate-error"]).toBe("rate_limited");
    expect(limited.headers["content-type"]).toBe("application/json");
    expect(JSON.parse(limited.body)).toEqual({
      error: { code: "rate_limited", message: "the rate limit of route five is spent" },
    });
    const retryAfter = Number(limited.headers["retry-after"]);
    expect(Number.isInteger(retryAfter)).toBe(true);
    expect(retryAfter).toBeGreaterThanOrEqual(1);
    expect(retryAfter).toBeLessThanOrEqual(12);
    expect(limited.headers["ratelimit-remaining"]).toBe("0");
    expect(app.received.filter((r) => r.url === "/five/x")).toHaveLength(5); // refused ones never went upstream
    const metrics = await (await fetch(`${gw.adminUrl}/metrics`)).text();
    expect(metrics).toMatch(/meshgate_ratelimit_limited_total\{proxy="gateway",route="five"\} 1/);
    expect(metrics).toMatch(
      /meshgate_ratelimit_mode_info\{proxy="gateway",store="local",fleet_divisor="2"\} 1/,
    );
  });

  it("keys_the_client_by_the_trusted_hop_not_by_spoofed_entries", async () => {
    // trustedHops 1: the last X-Forwarded-For entry is the client; entries before it are the client's own.
    for (let i = 0; i < 5; i++)
      expect(
        (await request(`${gw.url}/five/y`, { headers: { "x-forwarded-for": `10.9.9.${i}, 198.51.100.2` } }))
          .status,
      ).toBe(200);
    expect(
      (await request(`${gw.url}/five/y`, { headers: { "x-forwarded-for": "10.9.9.99, 198.51.100.2" } }))
        .status,
    ).toBe(429);
    expect(
      (await request(`${gw.url}/five/y`, { headers: { "x-forwarded-for": "198.51.100.3" } })).status,
    ).toBe(200);
  });

  it("refuses_every_path_variant_of_a_spent_route_bucket", async () => {
    const variants = ["/whole", "//whole", "/./whole", "/x/../whole", "/%77hole", "/whole?q=1", "/whole/"];
    const statuses: number[] = [];
    for (const v of variants) statuses.push((await request(`${gw.url}${v}`)).status);
    // Three admitted in total (the route's one bucket), then 429 whatever the spelling ("/whole/" is no route).
    expect(statuses.filter((s) => s === 200)).toHaveLength(3);
    expect(statuses.filter((s) => s !== 200 && s !== 429 && s !== 404)).toEqual([]);
    for (const v of ["/whole", "//whole", "/./whole", "/%77hole"])
      expect((await request(`${gw.url}${v}`)).status).toBe(429);
  });

  it("keys_by_the_chosen_header_and_falls_back_to_the_client_address", async () => {
    const t = (tenant?: string) =>
      request(`${gw.url}/tenant`, {
        headers: { "x-forwarded-for": "198.51.100.9", ...(tenant ? { "x-tenant": tenant } : {}) },
      }).then((r) => r.status);
    expect([await t("a"), await t("a"), await t("a")]).toEqual([200, 200, 429]);
    expect([await t("b"), await t("b"), await t("b")]).toEqual([200, 200, 429]);
    expect([await t(), await t(), await t()]).toEqual([200, 200, 429]); // no header: the client's bucket
    expect(await t("i:198.51.100.9")).toBe(200); // a header value cannot name the address bucket
  });

  it.each([
    {
      claim: "keys_a_forward_claims_header_by_the_verified_claim_not_the_clients_copy",
      header: "x-org",
      // alice and bob share tenant acme; carol is globex.
      who: [
        ["alice", "acme"],
        ["alice", "acme"],
        ["bob", "acme"],
        ["carol", "globex"],
      ],
      expected: [200, 200, 429, 200],
    },
    {
      claim: "keys_a_principal_header_by_the_principals_subject_not_the_clients_copy",
      header: "x-meshgate-subject",
      who: [
        ["dave", "acme"],
        ["dave", "acme"],
        ["dave", "acme"],
        ["erin", "acme"],
      ],
      expected: [200, 200, 429, 200],
    },
  ])("$claim", async ({ header, who, expected }) => {
    const statuses: number[] = [];
    for (const [i, [sub, tenant]] of who.entries()) {
      const token = await signToken(jwtKey, { iss: ISSUER, aud: "api", sub, tenant, exp: nowS() + 600 });
      // Every request sends its own copy of the header: a fresh bucket each time if the copy were the key.
      const r = await request(`${gw.url}/${header}`, {
        headers: { authorization: `Bearer ${token}`, [header]: `spoofed-${i}` },
      });
      statuses.push(r.status);
    }
    expect(statuses).toEqual(expected);
    // A WebSocket upgrade by the first principal, with a copy of its own, counts in the spent bucket too.
    const [sub, tenant] = who[0]!;
    const token = await signToken(jwtKey, { iss: ISSUER, aud: "api", sub, tenant, exp: nowS() + 600 });
    const line = await upgradeStatusLine(Number(new URL(gw.url).port), `/${header}`, {
      extra: `Authorization: Bearer ${token}\r\n${header}: spoofed-ws\r\n`,
    });
    expect(line).toBe("HTTP/1.1 429 Too Many Requests");
  });

  it.each([
    {
      claim: "sends_ratelimit_headers_on_the_gateways_answer_when_the_upstream_is_unreachable",
      path: "/down",
      body: undefined,
      status: 503,
      code: "upstream_connect_failure",
    },
    {
      claim: "sends_ratelimit_headers_on_a_413_for_an_admitted_request",
      path: "/small",
      body: "x".repeat(4096),
      status: 413,
      code: "body_too_large",
    },
  ])("$claim", async ({ path, body, status, code }) => {
    // The request was admitted and its token spent: the local reply says what is left, as an upstream's would.
    const r = await request(`${gw.url}${path}`, {
      method: body === undefined ? "GET" : "POST",
      headers: { "x-forwarded-for": "198.51.100.20" },
      ...(body === undefined ? {} : { body }),
    });
    expect(r.status).toBe(status);
    expect(r.headers["x-meshgate-error"]).toBe(code);
    expect(r.headers["ratelimit-limit"]).toBe("5");
    expect(r.headers["ratelimit-remaining"]).toBe("4");
    expect(r.headers["ratelimit-policy"]).toBe("5;w=60");
  });

  it("sends_ratelimit_headers_on_a_redirect_and_limits_it", async () => {
    const first = await request(`${gw.url}/old`);
    expect(first.status).toBe(302);
    expect(first.headers["ratelimit-limit"]).toBe("1");
    expect(first.headers["ratelimit-remaining"]).toBe("0");
    expect((await request(`${gw.url}/old`)).status).toBe(429);
  });

  it("counts_a_websocket_upgrade_like_any_request", async () => {
    const upgrade = () =>
      new Promise<string>((resolve) => {
        const s = createConnection(Number(new URL(gw.url).port), "127.0.0.1", () =>
          s.write(
            "GET /five/ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
              "X-Forwarded-For: 198.51.100.77\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
          ),
        );
        let got = "";
        s.on("data", (d: Buffer) => {
          got += d.toString();
          if (got.includes("\r\n\r\n")) {
            s.destroy();
            resolve(got);
          }
        });
        s.on("error", () => resolve(got));
      });
    for (let i = 0; i < 5; i++)
      await request(`${gw.url}/five/ws`, { headers: { "x-forwarded-for": "198.51.100.77" } });
    const refused = await upgrade();
    expect(refused).toMatch(/^HTTP\/1\.1 429 Too Many Requests\r\n/);
    expect(refused).toMatch(/retry-after: \d+\r\n/);
    expect(refused).toContain("x-meshgate-error: rate_limited");
  });
});

// ── processes ──

const WARM = route("warm", "/warm", { requests: 1_000_000, per: "1s", scope: "replica" });

async function until(check: () => Promise<boolean> | boolean, ms: number): Promise<void> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (
      await Promise.resolve()
        .then(check)
        .catch(() => false)
    )
      return;
    await sleep(50);
  }
  throw new Error(`not met within ${ms} ms`);
}

/**
 * Hundreds of concurrent requests over keep-alive connections for a bounded time: each loop sends a
 * request, waits for the answer, pauses `paceMs`. Counts answers by status and error code, and how many
 * the rate limit admitted (every answer but `rate_limited` and `ratelimit_unavailable`: an admitted
 * request may still fail upstream on a loaded machine, which is not the limiter's doing). The window
 * opens once every loop has opened its connection, and `windowMs` is how long it lasted as the gateway
 * saw it: until the last answer came back (a request sent just before the end is decided after it).
 */
async function load(
  urls: string[],
  opts: { concurrency: number; paceMs: number; durationMs: number; path: string },
  /** A route without a tight limit: one request per loop before the window opens the connections. */
  warmPath = "/warm",
): Promise<{ byStatus: Record<string, number>; admitted: number; perUrl: number[]; windowMs: number }> {
  const agents = urls.map(() => new http.Agent({ keepAlive: true, maxSockets: opts.concurrency }));
  const byStatus: Record<string, number> = {};
  const perUrl = urls.map(() => 0);
  let admitted = 0;
  let lastAt = 0;
  const loops = Array.from({ length: opts.concurrency }, (_, i) => i % urls.length);
  // Opening 200 connections can take longer than a second on a loaded machine: the window waits for it.
  await Promise.all(loops.map((u) => request(`${urls[u]}${warmPath}`, { agent: agents[u]! })));
  const startAt = Date.now();
  const end = startAt + opts.durationMs;
  const loop = async (u: number) => {
    while (Date.now() < end) {
      const r = await request(`${urls[u]}${opts.path}`, {
        agent: agents[u]!,
        headers: { "x-forwarded-for": "203.0.113.50" },
      }).catch(() => ({ status: 0, headers: {} as http.IncomingHttpHeaders }));
      lastAt = Date.now();
      const code = r.headers["x-meshgate-error"];
      const key = code ? `${r.status} ${String(code)}` : String(r.status);
      byStatus[key] = (byStatus[key] ?? 0) + 1;
      if (r.status !== 0 && code !== "rate_limited" && code !== "ratelimit_unavailable") {
        admitted++;
        perUrl[u]!++;
      }
      await sleep(opts.paceMs);
    }
  };
  await Promise.all(loops.map(loop));
  for (const a of agents) a.destroy();
  return { byStatus, admitted, perUrl, windowMs: Math.max(opts.durationMs, lastAt - startAt) };
}

/** The most a limit of `requests` per second with a burst of `requests` admits over `windowMs`. */
const most = (requests: number, windowMs: number) => requests + (requests * windowMs) / 1000;

describe("rate limits across worker processes", () => {
  it("holds_100_per_second_within_5_percent_across_two_workers", async () => {
    const gw = await startGatewayProcess(
      dir,
      "workers",
      gatewayConfig([route("hot", "/hot", { requests: 100, per: "1s", scope: "replica" }), WARM], {
        app: remote,
      }),
      2,
    );
    try {
      const durationMs = 6000;
      const { byStatus, admitted, windowMs } = await load([gw.url], {
        concurrency: 200,
        paceMs: 100,
        durationMs,
        path: "/hot",
      });
      const expected = most(100, durationMs);
      expect(admitted).toBeGreaterThanOrEqual(expected * 0.95);
      expect(admitted).toBeLessThanOrEqual(most(100, windowMs) * 1.05);
      expect(byStatus["429 rate_limited"]).toBeGreaterThan(2 * expected); // the limit was under pressure
      expect(byStatus["503 ratelimit_unavailable"]).toBeUndefined();
      // Both workers served and refused (the connections were spread over them).
      const metrics = await (await fetch(`${gw.adminUrl}/metrics`)).text();
      for (const w of ["0", "1"]) {
        expect(metrics).toMatch(
          new RegExp(`meshgate_ratelimit_limited_total\\{worker="${w}",proxy="gateway",route="hot"\\} [1-9]`),
        );
        expect(metrics).toMatch(
          new RegExp(
            `meshgate_requests_total\\{worker="${w}",proxy="gateway",route="hot",code_class="2xx"\\} [1-9]`,
          ),
        );
      }
      expect(gw.output()).toContain("shared by the workers through the primary");
    } finally {
      await gw.stop();
    }
  }, 40_000);

  it("lets_one_connection_on_one_worker_use_the_whole_limit", async () => {
    const gw = await startGatewayProcess(
      dir,
      "one-worker",
      gatewayConfig([route("hot", "/hot", { requests: 50, per: "1s", scope: "replica" })], { app: remote }),
      2,
    );
    try {
      const durationMs = 4000;
      // One keep-alive connection: every request lands on the same worker.
      const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
      let ok = 0;
      let lastAt = 0;
      const startAt = Date.now();
      const end = startAt + durationMs;
      const loops = Array.from({ length: 20 }, async () => {
        while (Date.now() < end) {
          if ((await request(`${gw.url}/hot`, { agent })).status === 200) ok++;
          lastAt = Date.now();
          await sleep(5);
        }
      });
      await Promise.all(loops);
      agent.destroy();
      const expected = most(50, durationMs);
      expect(ok).toBeGreaterThanOrEqual(expected * 0.95);
      // The requests queue on the one connection: the last ones are decided after the window's end.
      expect(ok).toBeLessThanOrEqual(most(50, Math.max(durationMs, lastAt - startAt)) * 1.05);
    } finally {
      await gw.stop();
    }
  }, 40_000);
});

describe("rate limits shared through redis", () => {
  let redis: TestRedis;
  const PASSWORD = "rl-pa55word-never-logged";
  beforeAll(async () => {
    redis = await startRedis({ password: PASSWORD });
  });
  afterAll(async () => {
    await redis?.stop();
  });

  const redisConfig = (failMode: "open" | "closed", requests = 100, timeout = "100ms", name = "fleet") =>
    gatewayConfig(
      [route(name, "/fleet", { requests, per: "1s" }), WARM],
      { app: remote },
      {
        rateLimitStore: { redis: { url: redis.url, failMode, timeout } },
      },
    );

  it("holds_100_per_second_within_5_percent_across_two_gateway_processes", async () => {
    const [a, b] = (await allStarted([
      // A generous timeout: this test is about the shared count, not about a loaded machine's latency.
      startGatewayProcess(dir, "redis-a", redisConfig("closed", 100, "1s")),
      startGatewayProcess(dir, "redis-b", redisConfig("closed", 100, "1s")),
    ])) as [GatewayProcess, GatewayProcess];
    try {
      const durationMs = 6000;
      const { byStatus, admitted, perUrl, windowMs } = await load([a.url, b.url], {
        concurrency: 200,
        paceMs: 100,
        durationMs,
        path: "/fleet",
      });
      const expected = most(100, durationMs);
      expect(admitted).toBeGreaterThanOrEqual(expected * 0.95);
      expect(admitted).toBeLessThanOrEqual(most(100, windowMs) * 1.05);
      expect(byStatus["429 rate_limited"]).toBeGreaterThan(2 * expected);
      expect(byStatus["503 ratelimit_unavailable"]).toBeUndefined(); // Redis answered every check
      expect(perUrl[0]).toBeGreaterThan(0.25 * expected); // each process admitted its share of one limit
      expect(perUrl[1]).toBeGreaterThan(0.25 * expected);
      for (const g of [a, b]) {
        expect(g.output()).toMatch(
          /through Redis at redis:\/\/127\.0\.0\.1:\d+\/0 \(fail closed, timeout 1000 ms\)/,
        );
        expect(g.output()).not.toContain(PASSWORD);
      }
    } finally {
      await Promise.all([a.stop(), b.stop()]);
    }
  }, 60_000);

  it.each([
    ["open", 200, null],
    ["closed", 503, "ratelimit_unavailable"],
  ] as const)(
    "fails_%s_when_redis_dies_under_a_running_gateway_then_recovers",
    async (failMode, status, code) => {
      const gw = await startTestGateway(redisConfig(failMode, 3, "100ms", `fleet-${failMode}`));
      try {
        const ask = () => request(`${gw.url}/fleet`, { headers: { "x-forwarded-for": "192.0.2.1" } });
        expect((await ask()).status).toBe(200);
        await redis.kill();
        const started = performance.now();
        const during = await Promise.all(Array.from({ length: 20 }, ask));
        expect(performance.now() - started).toBeLessThan(2000);
        for (const r of during) {
          expect(r.status).toBe(status);
          if (code) {
            expect(r.headers["x-meshgate-error"]).toBe(code);
            expect(r.headers["retry-after"]).toBe("1");
          } else expect(r.headers["ratelimit-limit"]).toBeUndefined(); // unknown while the store is down
        }
        const metrics = await (await fetch(`${gw.adminUrl}/metrics`)).text();
        expect(metrics).toMatch(
          new RegExp(
            `meshgate_ratelimit_store_errors_total\\{proxy="gateway",reason="connection",mode="${failMode}"\\} (1[0-9]|[2-9][0-9])`,
          ),
        );
        if (failMode === "open")
          expect(metrics).toMatch(
            /meshgate_ratelimit_fail_open_total\{proxy="gateway",route="fleet-open"\} 20/,
          );
        await redis.restart();
        await until(async () => (await ask()).headers["ratelimit-limit"] === "3", 10_000);
        // Enforced again: the fresh server's bucket runs out. (At once: one after the other, four requests
        // can take long enough on a loaded machine for the 3-per-second bucket to refill between them.)
        const after = (await Promise.all(Array.from({ length: 4 }, ask))).map((r) => r.status);
        expect(after).toContain(429);
        expect(gw.rawLog()).toContain("ratelimit_redis_down");
        expect(gw.rawLog()).not.toContain(PASSWORD);
      } finally {
        await gw.drain();
      }
    },
    30_000,
  );

  it("logs_why_a_store_whose_connection_is_ready_fails_every_check", async () => {
    // The URL lacks the password: Redis accepts the connection (ratelimit_redis_ready) and answers every
    // check NOAUTH, and fail open admits them all. The log must say so (once a minute), not only "ready".
    const gw = await startTestGateway(
      gatewayConfig(
        [route("fleet-noauth", "/fleet", { requests: 1, per: "1m" })],
        { app },
        {
          rateLimitStore: {
            redis: { url: `redis://127.0.0.1:${redis.port}/0`, failMode: "open", timeout: "500ms" },
          },
        },
      ),
    );
    try {
      const statuses = [];
      for (let i = 0; i < 3; i++) statuses.push((await request(`${gw.url}/fleet`)).status);
      expect(statuses).toEqual([200, 200, 200]);
      const lines = gw.logs.filter((l) => l.event === "ratelimit_store_error");
      expect(lines).toHaveLength(1);
      expect(lines[0]).toMatchObject({ level: 40, reason: "reply", failMode: "open" });
      expect(String(lines[0]!.error)).toMatch(/^NOAUTH /);
      expect(gw.logs.some((l) => l.event === "ratelimit_redis_ready")).toBe(true);
    } finally {
      await gw.drain();
    }
  });

  it("counts_a_websocket_upgrade_admitted_by_fail_open", async () => {
    // Nothing listens where the store points: every check fails, and `open` admits it, counted per route.
    const gw = await startTestGateway(
      gatewayConfig(
        [route("fleet-ws", "/fleet", { requests: 1, per: "1m" })],
        { app },
        {
          rateLimitStore: {
            redis: { url: `redis://127.0.0.1:${await freePort()}/0`, failMode: "open", timeout: "100ms" },
          },
        },
      ),
    );
    try {
      const status = await upgradeStatusLine(Number(new URL(gw.url).port), "/fleet");
      expect(status).toBe("HTTP/1.1 200 OK"); // admitted: the upstream's answer (it refuses the upgrade)
      const metrics = await (await fetch(`${gw.adminUrl}/metrics`)).text();
      expect(metrics).toMatch(/meshgate_ratelimit_fail_open_total\{proxy="gateway",route="fleet-ws"\} 1\n/);
    } finally {
      await gw.drain();
    }
  });

  it.each([
    {
      claim: "keeps_in_process_buckets_when_a_reload_changes_the_redis_timeout",
      before: { fleet: true, timeout: "100ms" },
      after: { fleet: true, timeout: "250ms" },
    },
    {
      claim: "keeps_in_process_buckets_when_a_reload_adds_the_first_fleet_route",
      before: { fleet: false, timeout: "100ms" },
      after: { fleet: true, timeout: "100ms" },
    },
  ])("$claim", async ({ before, after }) => {
    // The limit of a replica-scoped route did not change: its in-process buckets must survive the reload,
    // or every client gets a fresh bucket at each change of the Redis store's settings.
    const config = (o: { fleet: boolean; timeout: string }) =>
      gatewayConfig(
        [
          route("replica", "/replica", { requests: 2, per: "1m", scope: "replica" }),
          ...(o.fleet ? [route("fleet-reload", "/fleet", { requests: 100, per: "1s" })] : []),
        ],
        { app },
        { rateLimitStore: { redis: { url: redis.url, failMode: "open", timeout: o.timeout } } },
      );
    const gw = await startTestGateway(config(before));
    try {
      const ask = async () => (await request(`${gw.url}/replica`)).status;
      expect([await ask(), await ask(), await ask()]).toEqual([200, 200, 429]);
      const next = config(after);
      expect(await gw.reload(JSON.stringify(next))).toMatchObject({ ok: true, changed: true });
      expect(await ask()).toBe(429);
    } finally {
      await gw.drain();
    }
  });
});
