/**
 * The bounded-memory LRU store (runtime/cache/store.ts): byte accounting, LRU eviction under the budget,
 * TTL expiry, purges by URL (all variants), by prefix and of everything, and the binary encoding a remote
 * store will use.
 */
import { describe, expect, it } from "vitest";
import { primaryKey } from "../../runtime/cache/policy.ts";
import {
  accountedBytes,
  decodeValue,
  encodeValue,
  ENTRY_OVERHEAD_BYTES,
  MemoryStore,
} from "../../runtime/cache/store.ts";
import { storedResponse as response, storeKey as key } from "./entries.ts";

describe("MemoryStore", () => {
  it("accounts_key_header_and_body_bytes", () => {
    const s = new MemoryStore({ maxBytes: 1 << 20 });
    const k = key("/a");
    const v = response("x".repeat(1000), { etag: '"abc"' });
    s.set(k, v, 1000);
    const expected =
      ENTRY_OVERHEAD_BYTES + k.length + 1000 + "content-type".length + "text/plain".length + 4 + 5;
    expect(accountedBytes(k, v)).toBe(expected);
    expect(s.stats()).toEqual({ entries: 1, bytes: expected });
  });

  it("evicts_least_recently_used_under_the_byte_budget", () => {
    const one = accountedBytes(key("/1"), response("x".repeat(100)));
    const evicted: number[] = [];
    const s = new MemoryStore({ maxBytes: one * 3, onEvict: (n) => evicted.push(n) });
    for (const p of ["/1", "/2", "/3"]) expect(s.set(key(p), response("x".repeat(100)), 60_000)).toBe(true);
    expect(s.get(key("/1"))).toBeDefined(); // /1 is now the most recently used
    s.set(key("/4"), response("x".repeat(100)), 60_000);
    expect(s.get(key("/2"))).toBeUndefined();
    for (const p of ["/1", "/3", "/4"]) expect(s.get(key(p))).toBeDefined();
    expect(evicted).toEqual([1]);
    expect(s.stats().bytes).toBeLessThanOrEqual(one * 3);
  });

  it("gives_a_used_entry_one_second_chance", () => {
    const one = accountedBytes(key("/1"), response("x".repeat(100)));
    const s = new MemoryStore({ maxBytes: one * 3 });
    for (const p of ["/1", "/2", "/3"]) s.set(key(p), response("x".repeat(100)), 60_000);
    s.get(key("/1"));
    s.get(key("/2"));
    s.set(key("/4"), response("x".repeat(100)), 60_000); // /1 and /2 were used: /3 goes
    expect([...["/1", "/2", "/3", "/4"]].map((p) => s.get(key(p)) !== undefined)).toEqual([
      true,
      true,
      false,
      true,
    ]);
    // The lookups just now marked /1, /2 and /4 used again; unused ones go first, then the oldest.
    s.set(key("/5"), response("x".repeat(100)), 60_000);
    expect(s.stats().entries).toBe(3);
    expect(s.get(key("/5"))).toBeDefined();
  });

  it("drops_expired_entries_first_without_counting_evictions", () => {
    let now = 0;
    const one = accountedBytes(key("/1"), response("x".repeat(100)));
    const evicted: number[] = [];
    const s = new MemoryStore({ maxBytes: one * 2, now: () => now, onEvict: (n) => evicted.push(n) });
    s.set(key("/1"), response("x".repeat(100)), 100);
    s.set(key("/2"), response("x".repeat(100)), 10_000);
    now = 200;
    s.set(key("/3"), response("x".repeat(100)), 10_000);
    expect(s.get(key("/2"))).toBeDefined();
    expect(s.get(key("/3"))).toBeDefined();
    expect(evicted).toEqual([]);
  });

  it("evicts_several_entries_to_fit_a_large_one", () => {
    const small = accountedBytes(key("/1"), response("x"));
    const s = new MemoryStore({ maxBytes: small * 4 });
    for (const p of ["/1", "/2", "/3", "/4"]) s.set(key(p), response("x"), 60_000);
    s.set(key("/big"), response("x".repeat(small * 2)), 60_000);
    expect(s.get(key("/big"))).toBeDefined();
    expect(s.stats().entries).toBe(1);
    expect(s.stats().bytes).toBeLessThanOrEqual(small * 4);
  });

  it("refuses_a_value_larger_than_the_whole_budget", () => {
    const s = new MemoryStore({ maxBytes: 2000 });
    s.set(key("/small"), response("x"), 60_000);
    expect(s.set(key("/huge"), response("x".repeat(3000)), 60_000)).toBe(false);
    expect(s.get(key("/small"))).toBeDefined(); // nothing was evicted for a value that cannot fit
  });

  it("replacing_a_key_releases_its_bytes", () => {
    const s = new MemoryStore({ maxBytes: 1 << 20 });
    s.set(key("/a"), response("x".repeat(1000)), 60_000);
    s.set(key("/a"), response("y"), 60_000);
    expect(s.stats()).toEqual({ entries: 1, bytes: accountedBytes(key("/a"), response("y")) });
  });

  it("expires_entries_after_their_ttl", () => {
    let now = 1000;
    const s = new MemoryStore({ maxBytes: 1 << 20, now: () => now });
    s.set(key("/a"), response("x"), 500);
    now = 1499;
    expect(s.get(key("/a"))).toBeDefined();
    now = 1500;
    expect(s.get(key("/a"))).toBeUndefined();
    expect(s.stats()).toEqual({ entries: 0, bytes: 0 });
  });

  it("purges_every_variant_and_host_of_a_url", () => {
    const s = new MemoryStore({ maxBytes: 1 << 20 });
    s.set(key("/a", "h1", "accept:json\n"), response("1"), 60_000);
    s.set(key("/a", "h1", "accept:xml\n"), response("2"), 60_000);
    s.set(primaryKey("/a", "", "h1", "r", null), { kind: "vary", names: ["accept"] }, 60_000);
    s.set(key("/a", "h2"), response("3"), 60_000);
    s.set(key("/ab", "h1"), response("4"), 60_000);
    s.set(`${primaryKey("/a", "q=1", "h1", "r", null)}\t`, response("5"), 60_000);
    expect(s.purgeUrl("/a", "h1")).toBe(2);
    expect(s.get(key("/a", "h2"))).toBeDefined();
    expect(s.purgeUrl("/a")).toBe(1);
    expect(s.get(key("/ab", "h1"))).toBeDefined();
    expect(s.get(`${primaryKey("/a", "q=1", "h1", "r", null)}\t`)).toBeDefined();
    expect(s.stats().entries).toBe(2);
  });

  it("purges_by_prefix_and_everything", () => {
    const s = new MemoryStore({ maxBytes: 1 << 20 });
    for (const p of ["/api/orders/1", "/api/orders/2", "/api/ordersx", "/api/users/1"]) {
      s.set(key(p), response(p), 60_000);
    }
    expect(s.purgePrefix("/api/orders/")).toBe(2);
    expect(s.get(key("/api/ordersx"))).toBeDefined();
    expect(s.purgePrefix("/api/orders")).toBe(1);
    expect(s.purgeAll()).toBe(1);
    expect(s.stats()).toEqual({ entries: 0, bytes: 0 });
  });
});

describe("encoding", () => {
  it("round_trips_a_stored_response", () => {
    const v = response("body \u00e9\u0000 bytes", { link: ["<a>", "<b>"] });
    expect(decodeValue(encodeValue(v))).toEqual(v);
  });
  it("round_trips_a_vary_record", () => {
    expect(decodeValue(encodeValue({ kind: "vary", names: ["accept", "x-tenant"] }))).toEqual({
      kind: "vary",
      names: ["accept", "x-tenant"],
    });
  });
  it("refuses_bytes_it_did_not_write", () => {
    expect(decodeValue(Buffer.from("hello world"))).toBeNull();
    const bad = encodeValue(response("x"));
    bad.writeUInt32BE(1 << 30, 3);
    expect(decodeValue(bad)).toBeNull();
  });
});
