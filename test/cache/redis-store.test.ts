/**
 * The Redis cache store (runtime/cache/redis-store.ts) against real redis-servers: a standalone one and a
 * one-node Redis Cluster (every slot assigned, so Redis refuses any script that touches keys of two slots):
 * get/set, binary and large values, TTL expiry, purges by URL (all variants and hosts), by prefix and of
 * everything (past the batch sizes), the byte budget with CLOCK eviction, accounted bytes against
 * `MEMORY USAGE`, key names without principals, two stores sharing one server; then failures on a server
 * of its own: killed, paused (SIGSTOP) and back — fast failures while the breaker is open, one report per
 * outage, purges remembered and replayed on recovery.
 */
import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { primaryKey } from "../../runtime/cache/policy.ts";
import {
  allocatedBytes,
  partitionOf,
  REDIS_PARTITIONS,
  REDIS_STORE_SCRIPTS,
  RedisStore,
  RedisStoreUnavailableError,
  type RedisStoreObserver,
} from "../../runtime/cache/redis-store.ts";
import { encodeValue, type StoredResponse } from "../../runtime/cache/store.ts";
import { storedResponse as response } from "./entries.ts";
import { RedisClient } from "../../runtime/redis/client.ts";
import { allStarted } from "../support/procs.ts";
import { startRedis, type TestRedis } from "../support/redis.ts";

const key = (path: string, host = "h", variant = "", principal: string | null = null, query = "") =>
  `${primaryKey(path, query, host, "r", principal)}\t${variant}`;

const servers: TestRedis[] = [];
const clients: RedisClient[] = [];
let prefixes = 0;

function client(url: string, commandTimeoutMs = 500): RedisClient {
  const c = new RedisClient({ url, commandTimeoutMs, reconnect: { baseMs: 20, maxMs: 200 } });
  clients.push(c);
  return c;
}

/** A store in a namespace of its own. */
function storeOn(
  url: string,
  options: Partial<ConstructorParameters<typeof RedisStore>[0]> & { timeoutMs?: number } = {},
): RedisStore {
  const { timeoutMs, ...rest } = options;
  return new RedisStore({
    client: rest.client ?? client(url, timeoutMs),
    maxBytes: 64 * 1024 * 1024,
    prefix: `t${++prefixes}`,
    ...rest,
  });
}

/** Every key of a namespace (SCAN is fine in a test). */
async function keysOf(c: RedisClient, prefix: string): Promise<string[]> {
  const out: string[] = [];
  let cursor = "0";
  do {
    const [next, keys] = (await c.call("SCAN", cursor, "MATCH", `${prefix}:*`, "COUNT", 1000)) as [
      string,
      string[],
    ];
    cursor = next;
    out.push(...keys);
  } while (cursor !== "0");
  return out;
}

let standalone: TestRedis;
let cluster: TestRedis;

beforeAll(async () => {
  // A failed start of one stops the other (with Promise.all, it outlived the suite).
  [standalone, cluster] = (await allStarted([
    startRedis(),
    startRedis({ args: ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"] }),
  ])) as [TestRedis, TestRedis];
  servers.push(standalone, cluster);
  const c = client(cluster.url);
  await c.call("CLUSTER", "ADDSLOTSRANGE", 0, 16383);
  for (let i = 0; i < 200; i++) {
    if (String(await c.call("CLUSTER", "INFO")).includes("cluster_state:ok")) return;
    await sleep(25);
  }
  throw new Error("the one-node cluster did not come up");
}, 30_000);

afterAll(async () => {
  await Promise.all(clients.map((c) => c.close()));
  await Promise.all(servers.map((s) => s.stop()));
});

describe.each([
  { server: "standalone", url: () => standalone.url },
  { server: "cluster", url: () => cluster.url },
])("RedisStore on a $server server", ({ url }) => {
  it("stores_and_reads_binary_responses_and_vary_records", async () => {
    const s = storeOn(url());
    const bytes = Buffer.from(Array.from({ length: 512 }, (_, i) => i % 256)); // every byte, CRLF, NUL
    const v = response(bytes, { link: ["<a>", "<b>"], "x-t": "é\u0000" });
    expect(await s.set(key("/bin"), v, 60_000)).toBe(true);
    expect(await s.get(key("/bin"))).toEqual(v);
    expect(await s.set(key("/bin", "h", "", null, "x=1"), { kind: "vary", names: ["accept"] }, 60_000)).toBe(
      true,
    );
    expect(await s.get(key("/bin", "h", "", null, "x=1"))).toEqual({ kind: "vary", names: ["accept"] });
    expect(await s.get(key("/none"))).toBeUndefined();
    expect(s.stats()).toMatchObject({ entries: 1 });
  });

  it("stores_a_large_value_and_refuses_one_over_the_entry_bound", async () => {
    const s = storeOn(url());
    const big = response(Buffer.alloc(3 * 1024 * 1024 + 7, 0xab));
    expect(await s.set(key("/big"), big, 60_000)).toBe(true);
    expect(((await s.get(key("/big"))) as StoredResponse).body.equals(big.body)).toBe(true);
    // The partition budget is 64 MiB / 16 = 4 MiB: a larger value is refused, and replaces nothing.
    expect(s.maxEntryBytes).toBe(4 * 1024 * 1024);
    expect(await s.set(key("/big"), response(Buffer.alloc(5 * 1024 * 1024)), 60_000)).toBe(false);
    expect(await s.get(key("/big"))).toBeUndefined();
    const small = storeOn(url(), { maxEntryBytes: 2000 });
    expect(await small.set(key("/x"), response("x".repeat(1500)), 60_000)).toBe(false);
    expect(await small.set(key("/x"), response("x".repeat(100)), 60_000)).toBe(true);
  });

  it("expires_entries_after_their_ttl", async () => {
    const s = storeOn(url());
    // Long enough that the two round trips below come back before it ends on a loaded machine too.
    await s.set(key("/ttl"), response("t"), 1000);
    const pttl = Number(await s.client.call("PTTL", s.entryKey(key("/ttl"))));
    expect(pttl).toBeGreaterThan(0);
    expect(pttl).toBeLessThanOrEqual(1000);
    expect(await s.get(key("/ttl"))).toBeDefined();
    await sleep(1100);
    expect(await s.get(key("/ttl"))).toBeUndefined();
  });

  it("purges_every_variant_and_host_of_a_url", async () => {
    const s = storeOn(url());
    await s.set(key("/a", "h1", "accept:json\n"), response("1"), 60_000);
    await s.set(key("/a", "h1", "accept:xml\n"), response("2"), 60_000);
    await s.set(primaryKey("/a", "", "h1", "r", null), { kind: "vary", names: ["accept"] }, 60_000);
    await s.set(key("/a", "h2"), response("3"), 60_000);
    await s.set(key("/a", "h1", "", "5:alice"), response("alice's"), 60_000);
    await s.set(key("/ab", "h1"), response("4"), 60_000);
    await s.set(key("/a", "h1", "", null, "q=1"), response("5"), 60_000);
    expect(await s.purgeUrl("/a", "h1")).toBe(3);
    expect(await s.get(primaryKey("/a", "", "h1", "r", null))).toBeUndefined();
    expect(await s.get(key("/a", "h2"))).toBeDefined();
    expect(await s.purgeUrl("/a")).toBe(1);
    expect(await s.get(key("/ab", "h1"))).toBeDefined();
    expect(await s.get(key("/a", "h1", "", null, "q=1"))).toBeDefined();
    expect(await s.purgeUrl("/a")).toBe(0);
    expect(s.stats().entries).toBe(2);
  });

  it("purges_by_prefix_and_everything", async () => {
    const s = storeOn(url());
    for (const p of ["/api/orders/1", "/api/orders/2", "/api/ordersx", "/api/users/1"])
      await s.set(key(p), response(p), 60_000);
    await s.set(key("/api/orders/3", "other"), response("other host"), 60_000);
    expect(await s.purgePrefix("/api/orders/", "h")).toBe(2);
    expect(await s.get(key("/api/orders/3", "other"))).toBeDefined();
    expect(await s.get(key("/api/ordersx"))).toBeDefined();
    expect(await s.purgePrefix("/api/orders")).toBe(2);
    expect(await s.purgeAll()).toBe(1);
    expect(s.stats()).toEqual({ entries: 0, bytes: 0 });
    expect(await keysOf(s.client, s.prefix)).toEqual(
      expect.not.arrayContaining([expect.stringMatching(/:(e|u):/)]),
    );
  });

  it("purges_past_the_batch_sizes", async () => {
    const s = storeOn(url(), { timeoutMs: 10_000 }); // 1,600 pipelined stores on a shared machine
    // 600 URLs under one prefix (over every partition), 700 principals' entries of one URL.
    const puts: Promise<boolean>[] = [];
    for (let i = 0; i < 600; i++) puts.push(s.set(key(`/many/${i}`), response("m"), 60_000));
    for (let i = 0; i < 700; i++) puts.push(s.set(key("/me", "h", "", `u${i}`), response("me"), 60_000));
    for (let i = 0; i < 300; i++) puts.push(s.set(key(`/rest/${i}`), response("r"), 60_000));
    expect((await Promise.all(puts)).every(Boolean)).toBe(true);
    expect(new Set(Array.from({ length: 600 }, (_, i) => partitionOf(`/many/${i}`))).size).toBe(
      REDIS_PARTITIONS,
    );
    expect(await s.purgeUrl("/me")).toBe(700);
    expect(await s.purgePrefix("/many/")).toBe(600);
    expect(await s.get(key("/rest/7"))).toBeDefined();
    expect(await s.purgeAll()).toBe(300);
    expect(await keysOf(s.client, s.prefix)).toEqual(
      expect.not.arrayContaining([expect.stringMatching(/:(e|u):/)]),
    );
  });

  it("keeps_each_partition_within_its_budget_evicting_the_oldest", async () => {
    const evicted: number[] = [];
    const body = "x".repeat(4000);
    // Keys of one URL share a partition; the budget holds four of these entries.
    const one = storeOn(url()).accountedBytes(key("/p", "h0"), encodeValue(response(body)).length);
    const s = storeOn(url(), {
      maxBytes: one * 4 * REDIS_PARTITIONS + 100,
      observer: { evicted: (n) => evicted.push(n) },
    });
    for (let i = 0; i < 6; i++) expect(await s.set(key("/p", `h${i}`), response(body), 60_000)).toBe(true);
    expect(evicted.reduce((a, b) => a + b, 0)).toBe(2);
    const present = await Promise.all(Array.from({ length: 6 }, (_, i) => s.get(key("/p", `h${i}`))));
    expect(present.map((v) => v !== undefined)).toEqual([false, false, true, true, true, true]);
    expect(s.stats().bytes).toBeLessThanOrEqual(s.partitionBytes);
    expect(s.stats().entries).toBe(4);
  });

  it("drops_expired_entries_first_without_counting_evictions", async () => {
    const evicted: number[] = [];
    const body = "x".repeat(4000);
    const one = storeOn(url()).accountedBytes(key("/p", "h0"), encodeValue(response(body)).length);
    const s = storeOn(url(), {
      maxBytes: one * 2 * REDIS_PARTITIONS + 100,
      observer: { evicted: (n) => evicted.push(n) },
    });
    await s.set(key("/p", "short"), response(body), 100);
    await s.set(key("/p", "long"), response(body), 60_000);
    await sleep(200);
    expect(await s.set(key("/p", "new"), response(body), 60_000)).toBe(true);
    expect(await s.get(key("/p", "long"))).toBeDefined();
    expect(await s.get(key("/p", "new"))).toBeDefined();
    expect(evicted).toEqual([]);
  });

  it("accounts_at_least_what_redis_uses", async () => {
    for (const size of [0, 1000, 20_000]) {
      const s = storeOn(url());
      for (let i = 0; i < 200; i++)
        await s.set(key(`/acct/${i}`, "api.example.com"), response(Buffer.alloc(size, 1)), 60_000);
      let used = 0;
      for (const k of await keysOf(s.client, s.prefix))
        used += Number(await s.client.call("MEMORY", "USAGE", k, "SAMPLES", 0));
      const accounted = s.stats().bytes;
      expect(accounted).toBeGreaterThanOrEqual(used);
      expect(accounted).toBeLessThan(used * 1.3);
    }
  });

  it("names_no_principal_or_header_value_in_keys", async () => {
    const s = storeOn(url());
    await s.set(
      key("/me", "h", "authorization:secret-token\n", "jwt/main/alice@example.com"),
      response("a"),
      60_000,
    );
    const keys = await keysOf(s.client, s.prefix);
    expect(keys.length).toBeGreaterThan(0);
    expect(keys.join("\n")).not.toMatch(/alice|secret-token/);
  });

  it("shares_entries_between_stores_on_one_server", async () => {
    const a = storeOn(url());
    const b = storeOn(url(), { prefix: a.prefix });
    await a.set(key("/shared"), response("from a"), 60_000);
    expect(((await b.get(key("/shared"))) as StoredResponse).body.toString()).toBe("from a");
    expect(await b.purgeUrl("/shared")).toBe(1);
    expect(await a.get(key("/shared"))).toBeUndefined();
  });

  // A value changed inside Redis (written over by something else): a miss, never a shorter body served as
  // the whole one; one of this format whose length is not the one recorded is counted as damaged.
  it.each([
    ["reads_a_value_cut_short_by_a_byte_as_a_miss", (v: Buffer) => v.subarray(0, v.length - 1), 1],
    ["reads_a_value_cut_to_half_its_body_as_a_miss", (v: Buffer) => v.subarray(0, v.length - 2048), 1],
    ["reads_a_value_grown_by_a_byte_as_a_miss", (v: Buffer) => Buffer.concat([v, Buffer.from("x")]), 1],
    // The format before the body's length was recorded (version 1): a miss after an upgrade, not damage.
    [
      "reads_a_value_of_the_previous_format_as_an_uncounted_miss",
      (v: Buffer) => Buffer.concat([Buffer.from([0x4d, 0x43, 1]), v.subarray(3, 7), v.subarray(11)]),
      0,
    ],
  ] as [string, (v: Buffer) => Buffer, number][])("%s", async (_claim, change, counted) => {
    let damaged = 0;
    const s = storeOn(url(), { observer: { damaged: () => damaged++ } });
    const raw = client(url());
    const k = key("/cut");
    expect(await s.set(k, response(Buffer.alloc(4096, 0x61)), 60_000)).toBe(true);
    const stored = (await raw.command(["GET", s.entryKey(k)], { buffers: true })) as Buffer;
    expect(await raw.command(["SET", s.entryKey(k), change(stored), "KEEPTTL"])).toBe("OK");
    expect(await s.get(k)).toBeUndefined();
    expect(damaged).toBe(counted);
  });
});

describe("RedisStore scripts", () => {
  it("loads_its_scripts_so_stores_need_no_noscript_round_trip", async () => {
    const s = storeOn(standalone.url);
    await s.client.call("SCRIPT", "FLUSH");
    const shas = REDIS_STORE_SCRIPTS.map((x) => x.sha1);
    expect(await s.client.call("SCRIPT", "EXISTS", ...shas)).toEqual(shas.map(() => 0));
    await s.loadScripts();
    expect(await s.client.call("SCRIPT", "EXISTS", ...shas)).toEqual(shas.map(() => 1));
  });
});

describe("RedisStore eviction order", () => {
  const body = "x".repeat(4000);
  const budgetFor = (entries: number) =>
    storeOn(standalone.url).accountedBytes(key("/p", "h0"), encodeValue(response(body)).length) *
      entries *
      REDIS_PARTITIONS +
    100;

  it("gives_an_entry_read_since_it_was_queued_a_second_chance", async () => {
    const s = storeOn(standalone.url, { maxBytes: budgetFor(3) });
    for (const h of ["h0", "h1", "h2"]) await s.set(key("/p", h), response(body), 60_000);
    await sleep(2100); // Redis' access clock counts seconds
    expect(await s.get(key("/p", "h0"))).toBeDefined();
    await s.set(key("/p", "h3"), response(body), 60_000);
    const present = await Promise.all(["h0", "h1", "h2", "h3"].map((h) => s.get(key("/p", h))));
    expect(present.map((v) => v !== undefined)).toEqual([true, false, true, true]);
  });

  it("evicts_oldest_first_under_an_lfu_policy", async () => {
    const s = storeOn(standalone.url, { maxBytes: budgetFor(3) });
    await s.client.call("CONFIG", "SET", "maxmemory-policy", "allkeys-lfu");
    try {
      for (const h of ["h0", "h1", "h2"]) await s.set(key("/p", h), response(body), 60_000);
      expect(await s.get(key("/p", "h0"))).toBeDefined();
      expect(await s.set(key("/p", "h3"), response(body), 60_000)).toBe(true);
      const present = await Promise.all(["h0", "h1", "h2", "h3"].map((h) => s.get(key("/p", h))));
      expect(present.map((v) => v !== undefined)).toEqual([false, true, true, true]);
    } finally {
      await s.client.call("CONFIG", "SET", "maxmemory-policy", "noeviction");
    }
  });
});

describe("RedisStore on Redis Cluster", () => {
  it("keeps_each_partition_in_one_slot_and_spreads_partitions_over_slots", async () => {
    const s = storeOn(cluster.url);
    for (let i = 0; i < 200; i++) await s.set(key(`/slot/${i}`, "h", "", `p${i}`), response("s"), 60_000);
    const slots = new Map<string, Set<number>>();
    for (const k of await keysOf(s.client, s.prefix)) {
      const base = /^[^{]*\{mgc\d+\}/.exec(k)![0];
      const set = slots.get(base) ?? new Set<number>();
      set.add(Number(await s.client.call("CLUSTER", "KEYSLOT", k)));
      slots.set(base, set);
    }
    expect([...slots.values()].every((set) => set.size === 1)).toBe(true);
    expect(new Set([...slots.values()].map((set) => [...set][0])).size).toBe(slots.size);
    expect(slots.size).toBe(REDIS_PARTITIONS);
  });

  it("has_its_cross_slot_access_refused_by_redis", async () => {
    // The guard the tests rely on: a #!lua script touching two slots fails on this server.
    const c = client(cluster.url);
    await expect(
      c.call("EVAL", "#!lua\nredis.call('GET', KEYS[1]); return redis.call('GET', '{other}x')", 1, "{mgc0}x"),
    ).rejects.toThrow(/same slot/);
  });
});

describe("allocatedBytes", () => {
  it.each([
    [1, 16],
    [16, 16],
    [17, 32],
    [129, 160],
    [100, 112],
    [1000, 1024],
    [10_500, 12_288],
    [1_048_577, 1_310_720],
  ])("rounds_%i_up_to_%i", (n, expected) => {
    expect(allocatedBytes(n)).toBe(expected);
  });
});

describe("RedisStore when Redis fails", () => {
  let redis: TestRedis;
  beforeAll(async () => {
    redis = await startRedis();
    servers.push(redis);
  });

  function observed(): { observer: RedisStoreObserver; events: string[] } {
    const events: string[] = [];
    return {
      events,
      observer: {
        unavailable: (e) => events.push(`down:${e.name}`),
        recovered: () => events.push("up"),
        replyError: (e) => events.push(`reply:${e.message}`),
      },
    };
  }

  async function until(check: () => Promise<boolean>, ms: number): Promise<void> {
    const end = Date.now() + ms;
    while (Date.now() < end) {
      if (await check().catch(() => false)) return;
      await sleep(25);
    }
    throw new Error(`not met within ${ms} ms`);
  }

  it("fails_fast_while_paused_reports_once_and_replays_purges_on_recovery", async () => {
    const { observer, events } = observed();
    const s = storeOn(redis.url, { timeoutMs: 100, breakMs: 300, observer });
    await s.set(key("/inv"), response("old"), 60_000);
    redis.pause();
    try {
      let t = performance.now();
      await expect(s.get(key("/inv"))).rejects.toThrow(/did not answer within 100 ms/);
      expect(performance.now() - t).toBeLessThan(400);
      // The breaker is open: a lookup fails synchronously, a store at once.
      t = performance.now();
      expect(() => s.get(key("/inv"))).toThrow(RedisStoreUnavailableError);
      await expect(s.set(key("/x"), response("x"), 60_000)).rejects.toThrow(RedisStoreUnavailableError);
      // An invalidation during the outage fails, and is remembered.
      await expect(s.purgeUrl("/inv")).rejects.toThrow();
      expect(s.pendingPurges).toBe(1);
      expect(performance.now() - t).toBeLessThan(50);
      await sleep(350);
      await expect(s.get(key("/inv"))).rejects.toThrow(); // half-open: it tries again, times out
    } finally {
      redis.resume();
    }
    await until(async () => (await s.get(key("/nothing"))) === undefined, 5000);
    // Recovered: the remembered purge ran, so the resumed server does not serve the invalidated entry.
    await until(async () => s.pendingPurges === 0 && (await s.get(key("/inv"))) === undefined, 5000);
    expect(events).toEqual(["down:RedisTimeoutError", "up"]);
  });

  it("serves_no_entry_invalidated_during_the_outage_even_before_its_purge_is_replayed", async () => {
    const s = storeOn(redis.url, { timeoutMs: 100, breakMs: 200 });
    await s.set(key("/inv2"), response("old"), 60_000);
    await s.set(key("/inv2", "other"), response("old"), 60_000);
    await s.set(key("/kept"), response("kept"), 60_000);
    redis.pause();
    try {
      await expect(s.get(key("/inv2"))).rejects.toThrow(/did not answer/);
      await expect(s.purgeUrl("/inv2", "h")).rejects.toThrow();
      expect(s.pendingPurges).toBe(1);
    } finally {
      redis.resume();
    }
    await sleep(250); // the breaker lets operations through again
    // The first lookups after the outage, pipelined: the first answer ends the outage and starts the
    // replay, but the lookup of the purged entry was sent before the purge ran, so it must be a miss
    // (other hosts and URLs are served as before).
    const [kept, other, first] = await Promise.all([
      s.get(key("/kept")),
      s.get(key("/inv2", "other")),
      s.get(key("/inv2")),
    ]);
    expect(first).toBeUndefined();
    expect((other as StoredResponse).body.toString()).toBe("old");
    expect((kept as StoredResponse).body.toString()).toBe("kept");
    await until(async () => s.pendingPurges === 0, 5000);
    expect(await s.get(key("/inv2"))).toBeUndefined();
  });

  it("fails_at_once_while_killed_and_stores_again_after_a_restart", async () => {
    const { observer, events } = observed();
    const s = storeOn(redis.url, { timeoutMs: 200, breakMs: 100, observer });
    await s.set(key("/k"), response("k"), 60_000);
    await redis.kill();
    const t = performance.now();
    for (let i = 0; i < 5; i++) {
      try {
        await s.get(key("/k"));
        throw new Error("answered by a dead server");
      } catch (err) {
        expect((err as Error).message).not.toBe("answered by a dead server");
      }
    }
    expect(performance.now() - t).toBeLessThan(1000);
    await redis.restart();
    await until(async () => (await s.set(key("/k"), response("again"), 60_000)) === true, 10_000);
    expect(((await s.get(key("/k"))) as StoredResponse).body.toString()).toBe("again");
    expect(events[0]).toMatch(/^down:/);
    expect(events.filter((e) => e.startsWith("down:"))).toHaveLength(1);
    expect(events.at(-1)).toBe("up");
  });

  it("reports_a_refusing_server_without_opening_the_breaker", async () => {
    const { observer, events } = observed();
    const c = client(redis.url);
    const s = storeOn(redis.url, { client: c, observer });
    await c.call("CONFIG", "SET", "maxmemory", "1");
    try {
      await expect(s.set(key("/oom"), response("x"), 60_000)).rejects.toThrow(/OOM/);
      await expect(s.set(key("/oom"), response("x"), 60_000)).rejects.toThrow(/OOM/);
      expect(await s.get(key("/oom"))).toBeUndefined(); // reads still work
      expect(s.unavailable).toBe(false);
      expect(events).toHaveLength(1);
      expect(events[0]).toMatch(/^reply:OOM/);
    } finally {
      await c.call("CONFIG", "SET", "maxmemory", "0");
    }
  });
});
