/**
 * The Redis store's local layer (runtime/cache/redis-store.ts `local`) against a real redis-server: a
 * repeated lookup is answered in this process (synchronously, no command sent), and every change Redis
 * announces for a key — a store or a delete by another store, a purge, expiry, FLUSHDB — removes this
 * process's copy; its own stores and purges remove it at once. Fail closed: with the subscriber connection
 * or the store's own connection killed the layer is off and empty until tracking is confirmed again; a
 * server whose ACLs refuse tracking leaves it off (reported once) and the store works without it.
 */
import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { RedisStore, type RedisStoreObserver } from "../../runtime/cache/redis-store.ts";
import type { StoredValue } from "../../runtime/cache/store.ts";
import { RedisClient } from "../../runtime/redis/client.ts";
import { storedResponse as response, storeKey as key } from "./entries.ts";
import { startRedis, type TestRedis } from "../support/redis.ts";

const bodyOf = (v: StoredValue | undefined) => (v?.kind === "response" ? v.body.toString() : v);

let redis: TestRedis;
let admin: RedisClient;
const closers: (() => Promise<void>)[] = [];
let prefixes = 0;

const client = (url: string, onMessage?: ConstructorParameters<typeof RedisClient>[0]["onMessage"]) =>
  new RedisClient({
    url,
    commandTimeoutMs: 500,
    reconnect: { baseMs: 20, maxMs: 100 },
    ...(onMessage ? { onMessage } : {}),
  });

/** Two stores on one namespace, as two gateway replicas: `a` with a local layer, `b` without. */
async function pair(
  options: { url?: string; observer?: RedisStoreObserver; pingEveryMs?: number; maxAgeMs?: number } = {},
) {
  const url = options.url ?? redis.url;
  const prefix = `l${++prefixes}`;
  const a = new RedisStore({
    client: client(url),
    maxBytes: 64 * 1024 * 1024,
    prefix,
    local: {
      maxBytes: 1024 * 1024,
      pingEveryMs: options.pingEveryMs ?? 100,
      ...(options.maxAgeMs !== undefined ? { maxAgeMs: options.maxAgeMs } : {}),
      subscriber: (onMessage) => client(url, onMessage),
    },
    ...(options.observer ? { observer: options.observer } : {}),
  });
  const b = new RedisStore({ client: client(redis.url), maxBytes: 64 * 1024 * 1024, prefix });
  closers.push(
    () => a.close(),
    () => b.close(),
  );
  await a.client.connect();
  await until(() => a.localActive, "tracking confirmed");
  return { a, b };
}

async function until(check: () => boolean | Promise<boolean>, what: string, ms = 3000): Promise<void> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (await check()) return;
    await sleep(10);
  }
  throw new Error(`${what}: not within ${ms} ms`);
}

/** `s` answers `k` from its layer (a value, not a promise: no command was sent). */
function heldLocally(s: RedisStore, k: string): boolean {
  const r = s.get(k);
  if (!(r instanceof Promise)) return true;
  r.catch(() => {}); // the read it sent is not what is asked here
  return false;
}

/** `s.get(k)`, or null while the store fails fast (its breaker is open after a lost connection). */
async function read(s: RedisStore, k: string): Promise<string | undefined | null> {
  try {
    return bodyOf(await s.get(k)) as string | undefined;
  } catch {
    return null;
  }
}

/** Reads `k` through `a` until the layer holds it (the next read comes from it). */
async function fill(a: RedisStore, k: string): Promise<void> {
  // A late announcement of an earlier change (the machine may be loaded) can still drop the new copy:
  // conservative, so read again until the copy stays.
  await until(async () => {
    await a.get(k);
    return heldLocally(a, k);
  }, "the copy kept");
}

/** Kills the connections a filter of CLIENT LIST selects (`flags=P` subscribers, `flags=t` trackers). */
async function kill(flag: string): Promise<number> {
  const lines = String(await admin.call("CLIENT", "LIST")).split("\n");
  const ids = lines
    .filter((l) => new RegExp(`flags=\\S*${flag}`).test(l))
    .map((l) => /id=(\d+)/.exec(l)![1]!);
  for (const id of ids) await admin.call("CLIENT", "KILL", "ID", id);
  return ids.length;
}

beforeAll(async () => {
  redis = await startRedis();
  admin = client(redis.url);
}, 30_000);

afterAll(async () => {
  await Promise.all(closers.map((c) => c()));
  await admin.close();
  await redis.stop();
});

describe("the local layer in front of Redis", () => {
  it("answers_a_repeated_lookup_in_the_process_without_a_command", async () => {
    const { a, b } = await pair();
    await b.set(key("/1"), response("one"), 60_000);
    const first = a.get(key("/1"));
    expect(first).toBeInstanceOf(Promise);
    expect(bodyOf(await first)).toBe("one");
    const calls = async () =>
      Number(/cmdstat_get:calls=(\d+)/.exec(String(await admin.call("INFO", "commandstats")))?.[1] ?? 0);
    const before = await calls();
    const second = a.get(key("/1"));
    expect(second).not.toBeInstanceOf(Promise);
    expect(bodyOf(second as StoredValue)).toBe("one");
    expect(await calls()).toBe(before);
    expect(a.localStats().entries).toBe(1);
    // A miss is not kept: the next lookup asks Redis again.
    expect(await a.get(key("/none"))).toBeUndefined();
    expect(heldLocally(a, key("/none"))).toBe(false);
    // Counted for meshgate_cache_local_lookups_total: one answer in the process; three round trips (the
    // first read of /1, and /none twice — heldLocally looks it up again).
    expect(a.localStats()).toMatchObject({ hits: 1, misses: 3 });
  });

  it.each<[string, (s: { a: RedisStore; b: RedisStore }, k: string) => Promise<unknown>, string | undefined]>(
    [
      ["drops_a_copy_another_store_replaces", ({ b }, k) => b.set(k, response("two"), 60_000), "two"],
      ["drops_a_copy_another_store_deletes", ({ b }, k) => b.delete(k), undefined],
      ["drops_a_copy_another_store_purges_by_url", ({ b }, k) => b.purgeUrl(k.split("\t")[0]!), undefined],
      ["drops_a_copy_another_store_purges_by_prefix", ({ b }) => b.purgePrefix("/p"), undefined],
      ["drops_a_copy_another_store_purges_with_everything", ({ b }) => b.purgeAll(), undefined],
      ["drops_every_copy_when_the_database_is_flushed", () => admin.call("FLUSHDB"), undefined],
    ],
  )("%s", async (_claim, change, after) => {
    const s = await pair();
    const k = key("/p/1");
    await s.b.set(k, response("one"), 60_000);
    await fill(s.a, k);
    await change(s, k);
    // Announced on the subscriber connection: the copy goes within a moment, and the next read asks Redis.
    await until(() => !heldLocally(s.a, k), "the copy dropped");
    expect(bodyOf(await s.a.get(k))).toBe(after);
  });

  it("drops_a_copy_when_redis_expires_the_entry", async () => {
    const { a, b } = await pair({ maxAgeMs: 60_000 });
    await b.set(key("/exp"), response("brief"), 300);
    await fill(a, key("/exp"));
    await until(() => !heldLocally(a, key("/exp")), "the copy dropped on expiry", 5000);
    expect(await a.get(key("/exp"))).toBeUndefined();
  });

  it("keeps_a_copy_no_longer_than_max_age", async () => {
    const { a, b } = await pair({ maxAgeMs: 200 });
    await b.set(key("/age"), response("aged"), 60_000);
    await fill(a, key("/age"));
    await sleep(250);
    expect(heldLocally(a, key("/age"))).toBe(false);
  });

  it("drops_its_own_copies_at_once_on_its_own_store_delete_and_purge", async () => {
    const { a } = await pair();
    await a.set(key("/own"), response("one"), 60_000);
    await fill(a, key("/own"));
    // No waiting for the announcement: the very next lookup sees the change.
    await a.set(key("/own"), response("two"), 60_000);
    expect(bodyOf(await a.get(key("/own")))).toBe("two");
    await fill(a, key("/own"));
    await a.purgeUrl(urlOf("/own"));
    expect(await a.get(key("/own"))).toBeUndefined();
    await a.set(key("/own"), response("three"), 60_000);
    await fill(a, key("/own"));
    await a.delete(key("/own"));
    expect(await a.get(key("/own"))).toBeUndefined();
  });

  it.each([
    ["turns_off_and_empties_while_the_subscriber_connection_is_gone", "P"],
    ["turns_off_and_empties_while_its_own_connection_is_gone", "t"],
  ])("%s", async (_claim, flag) => {
    const events: boolean[] = [];
    const { a, b } = await pair({ observer: { local: (on) => events.push(on) } });
    await b.set(key("/k"), response("one"), 60_000);
    await fill(a, key("/k"));
    expect(await kill(flag)).toBeGreaterThan(0);
    // The observer's record, not a poll of localActive: the layer may go off and on again (reconnected,
    // tracking confirmed) between two polls of a loaded machine.
    await until(() => events.includes(false), "the layer off");
    expect(heldLocally(a, key("/k"))).toBe(false);
    expect(a.localStats().entries).toBe(0);
    // A change made meanwhile is not announced to anyone: the emptied layer cannot serve the old copy.
    await b.set(key("/k"), response("two"), 60_000);
    await until(() => a.localActive, "the layer on again");
    let seen: string | undefined | null = null;
    await until(async () => (seen = await read(a, key("/k"))) !== null, "a read after the outage");
    expect(seen).toBe("two");
    expect(heldLocally(a, key("/k"))).toBe(true);
    expect(events).toEqual([true, false, true]);
  });

  it("turns_off_at_once_when_the_subscriber_misses_a_ping", async () => {
    // A server that stops answering (SIGSTOP: the connections stay open, nothing is announced).
    const { a, b } = await pair({ pingEveryMs: 100 });
    await b.set(key("/ping"), response("one"), 60_000);
    await fill(a, key("/ping"));
    redis.pause();
    try {
      // The ping times out after the client's 500 ms: off before the 2 s stall timeout would notice.
      await until(() => !a.localActive, "the layer off", 1500);
      expect(heldLocally(a, key("/ping"))).toBe(false);
    } finally {
      redis.resume();
    }
    // Back on once the server answers again: reconnecting after the stall (the clients' backoff) took over
    // 3 s once in a full parallel run, so the wait is generous — the claim above is how fast it turns off.
    await until(() => a.localActive, "the layer on again", 10_000);
  });

  it("stays_off_and_reports_once_when_the_server_refuses_tracking", async () => {
    await admin.call("ACL", "SETUSER", "notrack", "on", ">pw", "~*", "&*", "+@all", "-client");
    const refused: string[] = [];
    const url = redis.url.replace("redis://", "redis://notrack:pw@");
    const prefix = `l${++prefixes}`;
    const a = new RedisStore({
      client: client(url),
      maxBytes: 64 * 1024 * 1024,
      prefix,
      local: { maxBytes: 1024 * 1024, pingEveryMs: 50, subscriber: (onMessage) => client(url, onMessage) },
      observer: { local: (on, error) => refused.push(`${on} ${error?.message ?? ""}`) },
    });
    closers.push(() => a.close());
    await until(() => refused.length > 0, "the refusal reported");
    await a.set(key("/r"), response("works"), 60_000);
    expect(bodyOf(await a.get(key("/r")))).toBe("works");
    expect(heldLocally(a, key("/r"))).toBe(false);
    await sleep(300); // several repair rounds: nothing more is reported
    expect(refused).toHaveLength(1);
    expect(refused[0]).toMatch(/^false NOPERM/);
    expect(a.localActive).toBe(false);
  });
});

/** The URL part of a test key. */
function urlOf(path: string): string {
  return key(path).split("\t")[0]!;
}
