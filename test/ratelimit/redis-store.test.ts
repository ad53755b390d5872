/**
 * The Redis store against a real redis-server: the Lua script's answers, its keys and their TTL, the
 * NOSCRIPT fallback, two processes sharing one bucket within 5 %, and the declared fail mode when Redis
 * is killed or stalls mid-test — answered within the timeout, counted, and recovered from.
 */
import { fork } from "node:child_process";
import net from "node:net";
import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { compilePolicy } from "../../runtime/ratelimit/bucket.ts";
import { RateLimiters, type RateLimitObserver, type RouteLimiter } from "../../runtime/ratelimit/limiter.ts";
import type { RateLimitDecision, StoreErrorReason } from "../../runtime/ratelimit/local.ts";
import { RedisBuckets, TOKEN_BUCKET_SCRIPT, redisBucketKey } from "../../runtime/ratelimit/redis-store.ts";
import { RedisClient, type RedisClientEvent } from "../../runtime/redis/client.ts";
import { gatewayConfig } from "../support/gateway.ts";
import { startRedis, type TestRedis } from "../support/redis.ts";
import type { DoneMessage, StartMessage } from "./fixtures/load-worker.ts";

let redis: TestRedis;
let client: RedisClient;
beforeAll(async () => {
  redis = await startRedis();
  client = new RedisClient({ url: redis.url, commandTimeoutMs: 500 });
  await client.connect();
});
afterAll(async () => {
  await client?.close();
  await redis?.stop();
});

describe("redis token bucket script", () => {
  it("allows_the_burst_then_refuses_with_the_time_to_the_next_token", async () => {
    const p = compilePolicy({ requests: 10, periodMs: 1000, burst: 10 });
    const b = new RedisBuckets(client, "burst-route", p, { failMode: "closed" });
    // Pipelined on one connection: Redis runs them in order, back to back. (One after the other, twelve
    // round trips can take longer than the 100 ms a token takes to refill on a loaded machine.)
    const results = await Promise.all(Array.from({ length: 12 }, () => b.check("k")));
    expect(results.map((r) => r.allowed)).toEqual([...Array(10).fill(true), false, false]);
    expect(results.slice(0, 10).map((r) => r.remaining)).toEqual([9, 8, 7, 6, 5, 4, 3, 2, 1, 0]);
    const denied = results[11]!;
    expect(denied.retryAfterMs).toBeGreaterThan(0);
    expect(denied.retryAfterMs).toBeLessThanOrEqual(100);
    expect(denied.resetMs).toBeGreaterThan(900);
    expect(denied.resetMs).toBeLessThanOrEqual(1000);
    expect(denied.storeError).toBeNull();
    await sleep(denied.retryAfterMs + 5);
    expect((await b.check("k")).allowed).toBe(true); // refilled by Redis' own clock
  });

  it("keeps_one_hash_tagged_key_per_bucket_with_a_ttl_and_integer_fields", async () => {
    // A limit whose units are large: written back with %d, never in exponent notation.
    const p = compilePolicy({ requests: 999_983, periodMs: 60_000_000, burst: 999_983 });
    expect(p.capacity).toBeGreaterThan(1e13);
    const b = new RedisBuckets(client, "ttl-route", p, { failMode: "closed" });
    await b.check("alice");
    const key = redisBucketKey("ttl-route", p, "alice");
    expect(key).toMatch(/^meshgate:rl:\{[A-Za-z0-9_-]{22}\}$/);
    const fields = (await client.call("HGETALL", key)) as string[];
    expect(fields[0]).toBe("u");
    expect(fields[1]).toMatch(/^[0-9]+$/);
    expect(Number(fields[1])).toBe(p.capacity - p.cost);
    expect(fields[2]).toBe("t");
    expect(fields[3]).toMatch(/^[0-9]{13}$/);
    const pttl = (await client.call("PTTL", key)) as number;
    expect(pttl).toBeGreaterThan(1000);
    expect(pttl).toBeLessThanOrEqual(Math.ceil(p.cost / p.rate) + 1000);
    // Different route, limit or key: a different bucket; the same: the same key in any process.
    expect(redisBucketKey("ttl-route", p, "bob")).not.toBe(key);
    expect(redisBucketKey("other-route", p, "alice")).not.toBe(key);
    expect(
      redisBucketKey("ttl-route", compilePolicy({ requests: 1, periodMs: 1000, burst: 1 }), "alice"),
    ).not.toBe(key);
    expect(redisBucketKey("ttl-route", p, "alice")).toBe(key);
  });

  it("lets_an_idle_bucket_expire", async () => {
    const p = compilePolicy({ requests: 10, periodMs: 100, burst: 10 });
    const b = new RedisBuckets(client, "expire-route", p, { failMode: "closed" });
    await b.check("k");
    const key = redisBucketKey("expire-route", p, "k");
    expect(await client.call("EXISTS", key)).toBe(1);
    expect((await client.call("PTTL", key)) as number).toBeLessThanOrEqual(1010);
    await sleep(1300);
    expect(await client.call("EXISTS", key)).toBe(0);
  });

  it("runs_again_after_script_flush", async () => {
    const p = compilePolicy({ requests: 5, periodMs: 60_000, burst: 5 });
    const b = new RedisBuckets(client, "flush-route", p, { failMode: "closed" });
    expect((await b.check("k")).allowed).toBe(true);
    await client.call("SCRIPT", "FLUSH");
    const d = await b.check("k");
    expect(d.storeError).toBeNull();
    expect(d.remaining).toBe(3);
    expect(await client.call("SCRIPT", "EXISTS", TOKEN_BUCKET_SCRIPT.sha1)).toEqual([1]);
  });
});

describe("two processes sharing one redis", () => {
  it("hold_100_per_second_within_5_percent_under_concurrent_load", async () => {
    const FIXTURE = new URL("./fixtures/load-worker.ts", import.meta.url);
    const durationMs = 6000;
    const start = (startAt: number): StartMessage => ({
      type: "start",
      mode: "redis",
      limit: { requests: 100, periodMs: 1000, burst: 100 },
      key: `shared-${startAt}`,
      startAt,
      durationMs,
      concurrency: 100,
      paceMs: 10,
      redisUrl: redis.url,
      // Generous: this test is about the shared count, not about a loaded machine's latency (two
      // processes of 100 loops each; a check that times out counts as a store error below).
      timeoutMs: 2000,
    });
    const children = [0, 1].map(() => fork(FIXTURE, [], { stdio: ["ignore", "inherit", "inherit", "ipc"] }));
    // Both count over one window, which opens once both are ready (a fork can take seconds on a loaded
    // machine: a window fixed before would open without it).
    let startAt = 0;
    let ready = 0;
    try {
      const done = await Promise.all(
        children.map(
          (child) =>
            new Promise<DoneMessage>((resolve, reject) => {
              child.on("message", (m: { type: string }) => {
                if (m.type === "ready" && ++ready === children.length) {
                  startAt = Date.now() + 500; // each connects to Redis first
                  for (const c of children) c.send(start(startAt));
                } else if (m.type === "done") resolve(m as DoneMessage);
              });
              child.once("exit", (code) => reject(new Error(`worker exited with ${code}`)));
            }),
        ),
      );
      const allowed = done.reduce((s, d) => s + d.allowed, 0);
      const expected = 100 + (100 * durationMs) / 1000;
      // At most the burst plus the refill over the window as Redis saw it: from its opening to the last
      // decision that came back (a check issued just before the end is decided after it).
      const windowMs = Math.max(durationMs, Math.max(...done.map((d) => d.lastAt)) - startAt);
      expect(allowed).toBeGreaterThanOrEqual(expected * 0.95);
      expect(allowed).toBeLessThanOrEqual((100 + (100 * windowMs) / 1000) * 1.05);
      for (const d of done) {
        expect(d.storeErrors).toBe(0);
        expect(d.allowed).toBeGreaterThan(0);
      }
      const checks = done.reduce((s, d) => s + d.sync + d.async, 0);
      expect(checks).toBeGreaterThan(10 * expected);
    } finally {
      for (const c of children) c.kill();
    }
  }, 30_000);
});

describe("redis dying mid-test", () => {
  let dying: TestRedis;
  beforeAll(async () => {
    dying = await startRedis();
  });
  afterAll(async () => {
    await dying?.stop();
  });

  function limiters(failMode: "open" | "closed", timeout = "100ms") {
    const errors: [StoreErrorReason, string][] = [];
    const events: RedisClientEvent[] = [];
    const observer: RateLimitObserver = {
      storeError: (reason, mode) => errors.push([reason, mode]),
      redis: (e) => events.push(e),
    };
    const config = gatewayConfig(
      [
        {
          name: "fleet",
          match: { path: "/f" },
          to: "app",
          public: true,
          rateLimit: { requests: 1000, per: "1s" },
        },
        {
          name: "local",
          match: { path: "/l" },
          to: "app",
          public: true,
          rateLimit: { requests: 1000, per: "1s", scope: "replica" },
        },
      ],
      { app: { port: 1 } },
      { rateLimitStore: { redis: { url: dying.url, failMode, timeout } } },
    );
    const registry = new RateLimiters({ observer, redis: { reconnect: { baseMs: 20, maxMs: 100 } } });
    const plan = registry.configure(config);
    registry.activate(plan);
    return { registry, plan, errors, events };
  }

  const timed = async (d: RateLimitDecision | Promise<RateLimitDecision>) => {
    const started = performance.now();
    const r = await d;
    return { ...r, ms: performance.now() - started };
  };

  /**
   * Checks `key` until Redis answers one (5 s at most) and returns that answer. Redis is up, but the
   * first check also connects and loads the script (several round trips), which a loaded machine can
   * take longer than the short timeouts below for.
   */
  const answered = async (fleet: RouteLimiter, key: string): Promise<RateLimitDecision | null> => {
    const end = Date.now() + 5000;
    let d: RateLimitDecision | null = null;
    while (Date.now() < end) {
      d = await fleet.check(key, undefined, undefined, undefined);
      if (d.storeError === null) break;
      await sleep(20);
    }
    return d;
  };

  it.each([
    ["open", true],
    ["closed", false],
  ] as const)(
    "fails_%s_when_redis_is_killed_then_recovers",
    async (failMode, allowedWhileDown) => {
      const { registry, plan, errors, events } = limiters(failMode);
      try {
        const fleet = plan.limiters.get("fleet")!;
        const local = plan.limiters.get("local")!;
        expect(fleet.store).toBe("redis");
        expect(local.store).toBe("local");
        expect(plan.mode.summary).toMatch(
          /through Redis at redis:\/\/127\.0\.0\.1:\d+\/0 \(fail (open|closed), timeout 100 ms\)/,
        );
        const ok = await answered(fleet, "10.0.0.1");
        expect(ok?.allowed).toBe(true);
        expect(ok?.storeError).toBeNull();

        await dying.kill();
        // Every check while Redis is gone answers by the fail mode, promptly, and is counted.
        const down = await Promise.all(
          Array.from({ length: 50 }, (_, i) =>
            timed(fleet.check(`10.0.1.${i}`, undefined, undefined, undefined)),
          ),
        );
        for (const d of down) {
          expect(d.allowed).toBe(allowedWhileDown);
          expect(d.storeError).toBe("connection");
          expect(d.ms).toBeLessThan(150);
        }
        expect(errors.length).toBeGreaterThanOrEqual(50);
        expect(new Set(errors.map(([, m]) => m))).toEqual(new Set([failMode]));
        // In-process limits do not depend on Redis.
        const l = local.check("10.0.0.1", undefined, undefined, undefined);
        expect(l).not.toBeInstanceOf(Promise);
        expect((l as RateLimitDecision).allowed).toBe(true);

        await dying.restart();
        const back = await answered(fleet, "10.0.0.2");
        expect(back?.storeError).toBeNull();
        expect(back?.allowed).toBe(true);
        expect(events.map((e) => e.type)).toEqual(expect.arrayContaining(["ready", "down"]));
      } finally {
        await registry.close();
      }
    },
    20_000,
  );

  it("answers_within_the_timeout_when_redis_stalls", async () => {
    // The timeout is long enough that a loaded machine's timer lateness (tens of ms) is small beside
    // it, and short enough that twice the timeout would fail the bound below.
    const { registry, plan, errors } = limiters("open", "250ms");
    try {
      const fleet = plan.limiters.get("fleet")!;
      expect((await answered(fleet, "10.0.0.1"))?.storeError).toBeNull();
      dying.pause();
      try {
        const stalled = await Promise.all(
          Array.from({ length: 20 }, (_, i) =>
            timed(fleet.check(`10.0.2.${i}`, undefined, undefined, undefined)),
          ),
        );
        for (const d of stalled) {
          expect(d.allowed).toBe(true);
          expect(d.storeError).toBe("timeout");
          expect(d.ms).toBeLessThan(250 + 200);
        }
        expect(errors.filter(([r]) => r === "timeout").length).toBeGreaterThanOrEqual(20);
      } finally {
        dying.resume();
      }
      expect((await answered(fleet, "10.0.0.3"))?.storeError).toBeNull();
    } finally {
      await registry.close();
    }
  }, 20_000);
});

describe("a broken redis server", () => {
  it("refuses_a_huge_bulk_reply_at_its_length_instead_of_buffering_it", async () => {
    // A server (or something else on its port) that answers with a 64 MiB bulk string: the limiter's
    // replies are a few integers, so the client drops the connection as soon as it reads the length,
    // answers by the fail mode, and never holds the body.
    const huge = 64 * 1024 * 1024;
    let written = 0;
    const sockets: net.Socket[] = [];
    const broken = net.createServer((s) => {
      sockets.push(s);
      s.on("error", () => {});
      s.once("data", async () => {
        s.write(`$${huge}\r\n`);
        const chunk = Buffer.alloc(64 * 1024, 0x61);
        while (written < huge && !s.destroyed) {
          written += chunk.length;
          if (!s.write(chunk)) await new Promise((r) => s.once("drain", r).once("close", r));
        }
      });
    });
    await new Promise<void>((r) => broken.listen(0, "127.0.0.1", r));
    const port = (broken.address() as net.AddressInfo).port;
    const errors: StoreErrorReason[] = [];
    const registry = new RateLimiters({
      observer: { storeError: (reason) => errors.push(reason) },
      redis: { reconnect: { baseMs: 5000, maxMs: 5000 } },
    });
    try {
      const plan = registry.configure(
        gatewayConfig(
          [
            {
              name: "fleet",
              match: { path: "/f" },
              to: "app",
              public: true,
              rateLimit: { requests: 10, per: "1s" },
            },
          ],
          { app: { port: 1 } },
          {
            rateLimitStore: {
              redis: { url: `redis://127.0.0.1:${port}/0`, failMode: "closed", timeout: "300ms" },
            },
          },
        ),
      );
      registry.activate(plan);
      const d = await plan.limiters.get("fleet")!.check("10.0.0.1", undefined, undefined, undefined);
      expect(d.allowed).toBe(false);
      expect(d.storeError).toBe("reply"); // a protocol error, not a timeout
      await sleep(300);
      expect(written).toBeLessThan(8 * 1024 * 1024);
    } finally {
      await registry.close();
      for (const s of sockets) s.destroy();
      broken.close();
    }
  });

  it("gives_the_eval_after_a_noscript_only_what_is_left_of_the_timeout", async () => {
    // A server that answers EVALSHA with NOSCRIPT after 600 ms, then never answers the EVAL: the check
    // ends at its 1000 ms timeout (docs/rate-limiting.md: no request waits longer), not 600 + 1000 ms.
    // (Long enough that a loaded machine's timer lateness is small beside the 600 ms told apart.)
    const sockets: net.Socket[] = [];
    const broken = net.createServer((s) => {
      sockets.push(s);
      s.on("error", () => {});
      let buf = Buffer.alloc(0);
      // Replies go out in order (another command, e.g. a SCRIPT LOAD, waits behind the late NOSCRIPT).
      let replied = Promise.resolve();
      const reply = (text: string, delayMs = 0) =>
        (replied = replied.then(() => sleep(delayMs)).then(() => void s.write(text)));
      s.on("data", (d: Buffer) => {
        buf = Buffer.concat([buf, d]);
        for (;;) {
          const cmd = nextCommand(buf);
          if (cmd === null) return;
          buf = buf.subarray(cmd.length);
          if (cmd.name === "EVALSHA") reply("-NOSCRIPT No matching script. Please use EVAL.\r\n", 600);
          else if (cmd.name === "EVAL")
            replied = new Promise(() => {}); // never answered, nor what follows
          else reply("+OK\r\n");
        }
      });
    });
    await new Promise<void>((r) => broken.listen(0, "127.0.0.1", r));
    const port = (broken.address() as net.AddressInfo).port;
    const registry = new RateLimiters({ redis: { reconnect: { baseMs: 5000, maxMs: 5000 } } });
    try {
      const plan = registry.configure(
        gatewayConfig(
          [
            {
              name: "n",
              match: { path: "/n" },
              to: "app",
              public: true,
              rateLimit: { requests: 10, per: "1s" },
            },
          ],
          { app: { port: 1 } },
          {
            rateLimitStore: {
              redis: { url: `redis://127.0.0.1:${port}/0`, failMode: "open", timeout: "1000ms" },
            },
          },
        ),
      );
      registry.activate(plan);
      const started = performance.now();
      const d = await plan.limiters.get("n")!.check("10.0.0.1", undefined, undefined, undefined);
      const waited = performance.now() - started;
      expect(d.storeError).toBe("timeout");
      expect(waited).toBeGreaterThanOrEqual(950);
      expect(waited).toBeLessThan(1500);
    } finally {
      await registry.close();
      for (const s of sockets) s.destroy();
      broken.close();
    }
  });
});

/** The name and byte length of the first whole RESP command in `buf`, or null when it is not all there. */
function nextCommand(buf: Buffer): { name: string; length: number } | null {
  const line = (at: number): [string, number] | null => {
    const end = buf.indexOf("\r\n", at);
    return end < 0 ? null : [buf.toString("latin1", at, end), end + 2];
  };
  const head = line(0);
  if (head === null) return null;
  let pos = head[1];
  let name = "";
  for (let i = 0; i < Number(head[0].slice(1)); i++) {
    const len = line(pos);
    if (len === null) return null;
    const n = Number(len[0].slice(1));
    if (buf.length < len[1] + n + 2) return null;
    if (i === 0) name = buf.toString("latin1", len[1], len[1] + n).toUpperCase();
    pos = len[1] + n + 2;
  }
  return { name, length: pos };
}
