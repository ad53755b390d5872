/**
 * The Redis client against a real redis-server: pipelining order, big values over many TCP chunks,
 * error replies, EVALSHA with the NOSCRIPT fallback, AUTH and SELECT from the URL, reconnection after
 * the server restarts, timeouts on a stalled server, and no password in any message.
 */
import { mkdtemp, readFile, rm } from "node:fs/promises";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { RedisClient, RedisScript, type RedisClientEvent } from "../../runtime/redis/client.ts";
import {
  RedisClosedError,
  RedisConfigError,
  RedisConnectionError,
  RedisOverloadError,
  RedisReplyError,
  RedisTimeoutError,
} from "../../runtime/redis/errors.ts";
import { parseRedisUrl, redactRedisUrl } from "../../runtime/redis/url.ts";
import { freePort } from "../support/gateway.ts";
import { selfSignedCert } from "../support/certs.ts";
import { startRedis, type TestRedis } from "../support/redis.ts";

let redis: TestRedis;
const clients: RedisClient[] = [];
const client = (opts: Partial<ConstructorParameters<typeof RedisClient>[0]> = {}) => {
  const c = new RedisClient({ url: redis.url, ...opts });
  clients.push(c);
  return c;
};

beforeAll(async () => {
  redis = await startRedis({ args: ["--enable-debug-command", "local"] });
});
afterAll(async () => {
  await Promise.all(clients.map((c) => c.close()));
  await redis?.stop();
});

async function until(check: () => Promise<boolean> | boolean, ms: number): Promise<void> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (
      await Promise.resolve()
        .then(check)
        .catch(() => false)
    )
      return;
    await sleep(25);
  }
  throw new Error(`not met within ${ms} ms`);
}

describe("redis client against redis-server", () => {
  it("sets_and_gets_text_and_binary_values", async () => {
    const c = client();
    expect(await c.call("SET", "t:text", "héllo")).toBe("OK");
    expect(await c.call("GET", "t:text")).toBe("héllo");
    const binary = Buffer.from([0, 255, 13, 10, 36, 42]);
    await c.command(["SET", "t:bin", binary]);
    expect((await c.command(["GET", "t:bin"], { buffers: true })) as Buffer).toEqual(binary);
    expect(await c.call("GET", "t:missing")).toBeNull();
    expect(await c.call("INCRBY", "t:n", 5)).toBe(5);
    expect(await c.call("RPUSH", "t:list", "a", "b")).toBe(2);
    expect(await c.call("LRANGE", "t:list", 0, -1)).toEqual(["a", "b"]);
  });

  it("answers_ten_thousand_pipelined_commands_in_order", async () => {
    const c = client();
    await c.connect();
    const replies = await Promise.all(Array.from({ length: 10_000 }, () => c.call("INCR", "t:seq")));
    expect(replies).toEqual(Array.from({ length: 10_000 }, (_, i) => i + 1));
    // Mixed reply kinds interleaved keep their order too.
    const mixed = await Promise.all([
      c.call("SET", "t:m", "1"),
      c.call("GET", "t:m"),
      c.call("EXISTS", "t:m", "t:none"),
      c.call("GET", "t:none"),
      c.call("ECHO", "x"),
    ]);
    expect(mixed).toEqual(["OK", "1", 1, null, "x"]);
  });

  it("round_trips_an_8_mib_value_split_over_many_tcp_chunks", async () => {
    const c = client({ commandTimeoutMs: 10_000 });
    const big = Buffer.alloc(8 * 1024 * 1024);
    for (let i = 0; i < big.length; i++) big[i] = (i * 31) & 0xff;
    await c.command(["SET", "t:big", big]);
    const [got, after] = await Promise.all([c.command(["GET", "t:big"], { buffers: true }), c.call("PING")]);
    expect((got as Buffer).equals(big)).toBe(true);
    expect(after).toBe("PONG");
  });

  it("rejects_only_the_command_with_an_error_reply", async () => {
    const c = client();
    await c.call("SET", "t:str", "x");
    const results = await Promise.allSettled([
      c.call("PING"),
      c.call("LPUSH", "t:str", "y"),
      c.call("NOSUCHCOMMAND"),
      c.call("GET", "t:str"),
    ]);
    expect(results[0]).toEqual({ status: "fulfilled", value: "PONG" });
    const wrongType = (results[1] as PromiseRejectedResult).reason as RedisReplyError;
    expect(wrongType).toBeInstanceOf(RedisReplyError);
    expect(wrongType.prefix).toBe("WRONGTYPE");
    expect(wrongType.code).toBe("E_REDIS_REPLY");
    expect(((results[2] as PromiseRejectedResult).reason as RedisReplyError).prefix).toBe("ERR");
    expect(results[3]).toEqual({ status: "fulfilled", value: "x" });
  });

  it("falls_back_to_eval_after_script_flush_and_caches_the_script_again", async () => {
    const c = client();
    const script = new RedisScript("return {KEYS[1], ARGV[1], redis.call('INCR', KEYS[1])}");
    await c.call("SCRIPT", "FLUSH");
    expect(await c.call("SCRIPT", "EXISTS", script.sha1)).toEqual([0]);
    expect(await c.evalScript(script, ["t:script"], ["a"])).toEqual(["t:script", "a", 1]);
    expect(await c.call("SCRIPT", "EXISTS", script.sha1)).toEqual([1]);
    expect(await c.evalScript(script, ["t:script"], ["b"])).toEqual(["t:script", "b", 2]);
    await c.call("SCRIPT", "FLUSH");
    // Several in flight at once all hit NOSCRIPT and all fall back.
    const all = await Promise.all([1, 2, 3].map((i) => c.evalScript(script, ["t:script"], [String(i)])));
    expect(all.map((r) => (r as unknown[])[2]).sort()).toEqual([3, 4, 5]);
    // A script error is an error reply, not a fallback loop.
    const bad = new RedisScript("return redis.call('NOSUCH')");
    await expect(c.evalScript(bad, [], [])).rejects.toBeInstanceOf(RedisReplyError);
  });

  it("selects_the_database_of_the_url", async () => {
    const db3 = client({ url: redis.url.replace(/\/0$/, "/3") });
    await db3.call("SET", "t:db", "three");
    expect(await client().call("GET", "t:db")).toBeNull();
    expect(await db3.call("GET", "t:db")).toBe("three");
  });

  it("times_out_a_command_behind_debug_sleep_and_keeps_later_replies_in_order", async () => {
    const c = client({ commandTimeoutMs: 100, stallTimeoutMs: 5000 });
    await c.connect();
    // A sleep long enough that the commands below are all sent while it lasts, on a loaded machine too.
    const sleeping = c.call("DEBUG", "SLEEP", "1.5");
    const started = performance.now();
    const ping = c.call("PING");
    await expect(ping).rejects.toBeInstanceOf(RedisTimeoutError);
    expect(performance.now() - started).toBeLessThan(300);
    await expect(sleeping).rejects.toBeInstanceOf(RedisTimeoutError);
    // While the server sleeps, newer commands time out as well.
    await expect(c.call("ECHO", "during")).rejects.toBeInstanceOf(RedisTimeoutError);
    // Until the server wakes up, every command times out (its late reply discarded in turn).
    await until(async () => (await c.call("ECHO", "awake")) === "awake", 5000);
    // The late replies (OK, PONG, …) arrived and were discarded; the next commands get their own replies.
    await c.call("SET", "t:after-sleep", "right");
    expect(await c.call("GET", "t:after-sleep")).toBe("right");
    expect(await c.call("ECHO", "in-order")).toBe("in-order");
    expect(c.state).toBe("ready");
  });

  it("refuses_at_once_when_nothing_listens", async () => {
    const port = await freePort();
    // A reconnect delay of 1-2 s: a command that waited for it could not pass for one refused at once.
    const c = client({ url: `redis://127.0.0.1:${port}`, reconnect: { baseMs: 2000, maxMs: 4000 } });
    const started = performance.now();
    const err = (await c.call("PING").catch((e: unknown) => e)) as RedisConnectionError;
    expect(err).toBeInstanceOf(RedisConnectionError);
    expect(err.errno).toBe("ECONNREFUSED");
    expect(performance.now() - started).toBeLessThan(500);
    // While down, commands fail without waiting.
    const t = performance.now();
    await expect(c.call("PING")).rejects.toBeInstanceOf(RedisConnectionError);
    expect(performance.now() - t).toBeLessThan(500);
  });

  it("times_out_on_a_server_that_accepts_and_never_answers_then_drops_the_stalled_connection", async () => {
    const sockets: net.Socket[] = [];
    let accepted = 0;
    const silent = net.createServer((s) => {
      accepted++;
      sockets.push(s);
    });
    await new Promise<void>((r) => silent.listen(0, "127.0.0.1", r));
    const port = (silent.address() as net.AddressInfo).port;
    const events: RedisClientEvent[] = [];
    const c = client({
      url: `redis://127.0.0.1:${port}`,
      commandTimeoutMs: 80,
      stallTimeoutMs: 300,
      reconnect: { baseMs: 20, maxMs: 40 },
      onEvent: (e) => events.push(e),
    });
    try {
      const started = performance.now();
      await expect(c.call("PING")).rejects.toBeInstanceOf(RedisTimeoutError);
      const waited = performance.now() - started;
      expect(waited).toBeGreaterThanOrEqual(75);
      expect(waited).toBeLessThan(250);
      // The stalled connection is dropped and a new one is opened.
      await until(() => accepted >= 2, 2000);
      expect(events.some((e) => e.type === "down" && e.error instanceof RedisTimeoutError)).toBe(true);
    } finally {
      await c.close();
      for (const s of sockets) s.destroy();
      silent.close();
    }
  });

  it("backs_off_from_a_server_that_accepts_and_closes_every_connection_at_once", async () => {
    // A TCP proxy whose Redis is gone (or a server at maxclients) accepts and closes: a connection that
    // never answered a command must not reset the backoff, or the client reconnects every base delay.
    let accepted = 0;
    const slam = net.createServer((s) => {
      accepted++;
      s.destroy();
    });
    await new Promise<void>((r) => slam.listen(0, "127.0.0.1", r));
    const port = (slam.address() as net.AddressInfo).port;
    const downs: number[] = [];
    const c = client({
      url: `redis://127.0.0.1:${port}`,
      reconnect: { baseMs: 20, maxMs: 320 },
      onEvent: (e) => {
        if (e.type === "down") downs.push(e.retryInMs);
      },
    });
    try {
      void c.connect().catch(() => {});
      await sleep(1500);
      // 10-20, 20-40, 40-80, 80-160, then 160-320 ms apart: at most a dozen in 1.5 s (not ~100).
      expect(accepted).toBeLessThanOrEqual(13);
      // And it does go on reconnecting, with growing delays (a loaded machine's late timers can leave
      // fewer attempts than that in the first 1.5 s: wait for them).
      await until(() => accepted >= 4 && Math.max(...downs) >= 160, 10_000);
    } finally {
      await c.close();
      slam.close();
    }
  });

  it("times_out_the_connect_handshake_when_auth_gets_no_answer", async () => {
    const silent = net.createServer(() => {});
    await new Promise<void>((r) => silent.listen(0, "127.0.0.1", r));
    const port = (silent.address() as net.AddressInfo).port;
    const c = client({ url: `redis://:pw@127.0.0.1:${port}`, connectTimeoutMs: 150, commandTimeoutMs: 1000 });
    try {
      const started = performance.now();
      await expect(c.connect()).rejects.toBeInstanceOf(RedisTimeoutError);
      expect(performance.now() - started).toBeLessThan(600);
    } finally {
      await c.close();
      silent.close();
    }
  });

  it("reconnects_after_the_server_restarts", async () => {
    const events: RedisClientEvent[] = [];
    const c = client({ reconnect: { baseMs: 20, maxMs: 200 }, onEvent: (e) => events.push(e) });
    await c.call("SET", "t:restart", "before");
    const inflight = c.call("DEBUG", "SLEEP", "1").catch((e: unknown) => e);
    await sleep(50);
    await redis.kill();
    expect(await inflight).toBeInstanceOf(RedisConnectionError); // lost with the connection
    await expect(c.call("PING")).rejects.toBeInstanceOf(RedisConnectionError);
    expect(c.state).toBe("down");
    await redis.restart();
    await until(async () => (await c.call("PING")) === "PONG", 5000);
    expect(c.state).toBe("ready");
    expect(await c.call("GET", "t:restart")).toBeNull(); // a new, empty server
    expect(events.map((e) => e.type)).toEqual(expect.arrayContaining(["ready", "down"]));
  });

  it("fails_pending_commands_on_close_and_refuses_new_ones", async () => {
    const c = client();
    await c.connect();
    const pending = c.call("DEBUG", "SLEEP", "0.2");
    await c.close();
    await expect(pending).rejects.toBeInstanceOf(RedisClosedError);
    await expect(c.call("PING")).rejects.toBeInstanceOf(RedisClosedError);
    await expect(c.connect()).rejects.toBeInstanceOf(RedisClosedError);
    expect(c.state).toBe("closed");
  });

  it("delivers_pubsub_messages_apart_from_the_replies_it_still_answers_in_order", async () => {
    const got: [string, unknown][] = [];
    const sub = client({ onMessage: (channel, payload) => got.push([channel, payload]) });
    const pub = client();
    expect(await sub.call("SUBSCRIBE", "news")).toEqual(["subscribe", "news", 1]);
    // Messages arriving between replies do not take a command's place.
    const pings = [sub.call("PING"), pub.call("PUBLISH", "news", "a"), sub.call("PING")];
    expect(await Promise.all(pings)).toEqual([["pong", ""], 1, ["pong", ""]]);
    await pub.call("PUBLISH", "news", "b");
    await until(() => got.length === 2, 2000);
    expect(got).toEqual([
      ["news", "a"],
      ["news", "b"],
    ]);
    // A tracking announcement carries a list of keys, or null for a flush.
    const tracked = client();
    const other = client({ onMessage: (channel, payload) => got.push([channel, payload]) });
    const otherId = Number(await other.call("CLIENT", "ID"));
    await other.call("SUBSCRIBE", "__redis__:invalidate");
    await tracked.call("CLIENT", "TRACKING", "ON", "REDIRECT", otherId);
    await tracked.call("GET", "tracked-key");
    await pub.call("SET", "tracked-key", "v");
    await until(() => got.length === 3, 2000);
    expect(got[2]).toEqual(["__redis__:invalidate", ["tracked-key"]]);
  });

  it("tells_watchers_of_ready_and_down_and_reconnects_after_drop", async () => {
    const seen: string[] = [];
    const c = client({ reconnect: { baseMs: 10, maxMs: 20 } });
    const unwatch = c.watch((e) => seen.push(e.type));
    await c.connect();
    const first = Number(await c.call("CLIENT", "ID"));
    const pending = c.call("DEBUG", "SLEEP", "0.1");
    c.drop("a test drops it");
    await expect(pending).rejects.toThrow(/a test drops it/);
    await until(() => c.state === "ready", 2000);
    expect(Number(await c.call("CLIENT", "ID"))).toBeGreaterThan(first);
    expect(seen).toEqual(["ready", "down", "ready"]);
    unwatch();
    await c.close();
    expect(seen).toEqual(["ready", "down", "ready"]);
  });

  it("drops_the_connection_to_a_primary_demoted_to_replica_and_reconnects", async () => {
    // After a failover the URL's name leads to the new primary, but an open connection still goes to the
    // old one, now a replica: every write on it fails READONLY for as long as it lives.
    const events: RedisClientEvent[] = [];
    const c = client({ reconnect: { baseMs: 10, maxMs: 40 }, onEvent: (e) => events.push(e) });
    const admin = client();
    await c.call("SET", "t:ro", "1");
    const first = Number(await c.call("CLIENT", "ID"));
    await admin.call("REPLICAOF", "127.0.0.1", await freePort()); // a primary that is not there: read-only
    try {
      const script = new RedisScript("return redis.call('SET', KEYS[1], ARGV[1])");
      const err = (await c.evalScript(script, ["t:ro"], ["2"]).catch((e: unknown) => e)) as RedisReplyError;
      expect(err).toBeInstanceOf(RedisReplyError);
      expect(err.prefix).toBe("READONLY");
      await until(
        () => events.some((e) => e.type === "down" && /read-only replica/.test(e.error.message)),
        2000,
      );
      await admin.call("REPLICAOF", "NO", "ONE");
      await until(async () => (await c.call("SET", "t:ro", "3")) === "OK", 3000);
      expect(Number(await c.call("CLIENT", "ID"))).toBeGreaterThan(first); // a new connection
    } finally {
      await admin.call("REPLICAOF", "NO", "ONE");
    }
  });

  it("drops_the_connection_on_a_redis_6_script_error_quoting_readonly", async () => {
    // Redis 6 wraps the refusal of a write inside a script in a script error.
    let accepted = 0;
    const replica = net.createServer((s) => {
      accepted++;
      s.on("data", () =>
        s.write(
          "-ERR Error running script (call to f_0a1b): @user_script:36: @user_script: 36: -READONLY You can't write against a read only replica. \r\n",
        ),
      );
    });
    await new Promise<void>((r) => replica.listen(0, "127.0.0.1", r));
    const port = (replica.address() as net.AddressInfo).port;
    const c = client({ url: `redis://127.0.0.1:${port}`, reconnect: { baseMs: 10, maxMs: 40 } });
    try {
      await expect(c.call("EVALSHA", "0a1b", 0)).rejects.toBeInstanceOf(RedisReplyError);
      await until(() => accepted >= 2, 2000);
    } finally {
      await c.close();
      replica.close();
    }
  });

  it("refuses_commands_beyond_max_pending", async () => {
    const c = client({ maxPending: 10 });
    await c.connect();
    const calls = Array.from({ length: 12 }, () => c.call("PING"));
    const settled = await Promise.allSettled(calls);
    expect(settled.filter((s) => s.status === "fulfilled")).toHaveLength(10);
    const refused = settled.filter((s) => s.status === "rejected") as PromiseRejectedResult[];
    expect(refused).toHaveLength(2);
    expect(refused[0]!.reason).toBeInstanceOf(RedisOverloadError);
  });
});

describe("redis client auth", () => {
  let secured: TestRedis;
  beforeAll(async () => {
    secured = await startRedis({ password: "s3cr3t-pa$$" });
  });
  afterAll(async () => {
    await secured?.stop();
  });

  it("authenticates_with_the_url_password", async () => {
    const c = client({ url: secured.url });
    expect(await c.call("PING")).toBe("PONG");
    const acl = client({ url: secured.url.replace("redis://:", "redis://default:") });
    expect(await acl.call("PING")).toBe("PONG");
  });

  it("reports_a_wrong_password_without_revealing_it", async () => {
    const events: RedisClientEvent[] = [];
    const c = client({
      url: `redis://:wrong-password-123@127.0.0.1:${secured.port}`,
      onEvent: (e) => events.push(e),
      reconnect: { baseMs: 1000, maxMs: 1000 },
    });
    const err = (await c.connect().catch((e: unknown) => e)) as Error;
    expect(err).toBeInstanceOf(RedisConnectionError);
    expect(err.message).toMatch(/AUTH/);
    const everything = JSON.stringify([
      err.message,
      err.stack,
      events.map((e) => ("error" in e ? e.error.message : e)),
    ]);
    expect(everything).not.toContain("wrong-password-123");
  });

  it("authenticates_as_the_url_user_when_it_has_no_password", async () => {
    // An ACL user without a password (`nopass`) is named by the URL alone: the connection must be that
    // user, not the default one (which may hold every right), and a user that needs a password is refused.
    // On a server whose default user needs no password (Redis' default):
    const admin = client();
    await admin.call("ACL", "SETUSER", "limiter", "on", "nopass", "~rl:*", "+@all");
    await admin.call("ACL", "SETUSER", "guarded", "on", ">guarded-pw", "~*", "+@all");
    const c = client({ url: `redis://limiter@127.0.0.1:${redis.port}` });
    expect(await c.call("ACL", "WHOAMI")).toBe("limiter");
    await expect(c.call("SET", "other:key", "v")).rejects.toThrow(/NOPERM/);
    const g = client({ url: `redis://guarded@127.0.0.1:${redis.port}`, reconnect: { baseMs: 1000 } });
    await expect(g.connect()).rejects.toThrow(/refused AUTH: WRONGPASS/);
  });

  it("answers_noauth_without_a_password", async () => {
    const c = client({ url: `redis://127.0.0.1:${secured.port}` });
    const err = (await c.call("GET", "x").catch((e: unknown) => e)) as RedisReplyError;
    expect(err).toBeInstanceOf(RedisReplyError);
    expect(err.prefix).toBe("NOAUTH");
  });
});

describe("redis client over tls", () => {
  let dir: string;
  let secure: TestRedis;
  let ca: Buffer;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "meshgate-redis-tls-"));
    const { certFile, keyFile } = await selfSignedCert(
      dir,
      "redis",
      "localhost",
      "DNS:localhost,IP:127.0.0.1",
    );
    ca = await readFile(certFile);
    secure = await startRedis({ tls: { certFile, keyFile }, password: "tls-pw" });
  });
  afterAll(async () => {
    await secure?.stop();
    await rm(dir, { recursive: true, force: true });
  });

  it("speaks_rediss_with_the_certificate_verified", async () => {
    expect(secure.url.startsWith("rediss://")).toBe(true);
    const c = client({ url: secure.url, tls: { ca } });
    expect(await c.call("SET", "t:tls", "yes")).toBe("OK");
    expect(await c.call("GET", "t:tls")).toBe("yes");
    const byName = client({ url: secure.url.replace("127.0.0.1", "localhost"), tls: { ca } });
    expect(await byName.call("GET", "t:tls")).toBe("yes");
  });

  it("refuses_a_server_certificate_it_cannot_verify", async () => {
    const c = client({ url: secure.url, reconnect: { baseMs: 1000, maxMs: 1000 } });
    const err = (await c.call("PING").catch((e: unknown) => e)) as RedisConnectionError;
    expect(err).toBeInstanceOf(RedisConnectionError);
    expect(err.errno).toMatch(/SELF_SIGNED|UNABLE_TO_VERIFY|DEPTH_ZERO/);
  });
});

describe("redis urls", () => {
  it.each([
    ["redis://127.0.0.1:6390", { host: "127.0.0.1", port: 6390, db: 0, tls: false, password: undefined }],
    ["redis://localhost", { host: "localhost", port: 6379, db: 0 }],
    ["redis://:p%40ss@h:1/2", { host: "h", port: 1, db: 2, password: "p@ss", username: undefined }],
    ["redis://u:p@h/15", { username: "u", password: "p", db: 15 }],
    ["redis://[::1]:7000/1", { host: "::1", port: 7000, db: 1, server: "[::1]:7000" }],
    ["rediss://cache.example:6380", { tls: true, host: "cache.example", port: 6380 }],
  ])("parses_%s", (url, expected) => {
    expect(parseRedisUrl(url)).toMatchObject(expected);
  });

  it.each([
    ["http://h:1", /redis:\/\/ or rediss:\/\//],
    ["redis://:secret@h:1/x", /database number/],
    ["redis://:secret@h:1/0?x=1", /query/],
    ["not a url", /does not parse/],
  ])("refuses_%s_without_echoing_the_password", (url, message) => {
    let err: unknown;
    try {
      parseRedisUrl(url);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(RedisConfigError);
    expect((err as Error).message).toMatch(message);
    expect((err as Error).message).not.toContain("secret");
  });

  it("redacts_user_and_password", () => {
    expect(redactRedisUrl("redis://user:secret@h:1/2")).toBe("redis://h:1/2");
    expect(redactRedisUrl("rediss://:secret@h")).toBe("rediss://h");
  });
});
