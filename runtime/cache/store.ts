/**
 * Cache stores: the interface the HTTP cache engine uses (get, set with a TTL, delete, purge by URL, by
 * prefix or everything — each may answer synchronously or with a Promise, so a remote store such as
 * Redis fits), the bounded-memory LRU store, and a binary encoding of stored values for remote stores.
 *
 * Keys start with the URL (path and query), then a tab (see policy.ts primaryKey), so "every entry of a
 * URL" is the prefix `url + "\t"` and a prefix purge is a prefix match.
 */
import { hostOfKey, urlOfKey } from "./policy.ts";

export type MaybePromise<T> = T | Promise<T>;

/** A stored response: what a hit replays, and what freshness, age and revalidation read. */
export interface StoredResponse {
  readonly kind: "response";
  readonly status: number;
  /**
   * Response header fields to replay (lower-case names), without hop-by-hop fields, Age, Set-Cookie and
   * Content-Length (the body's length is sent).
   */
  readonly headers: Readonly<Record<string, string | string[]>>;
  readonly body: Buffer;
  /** When the request that produced (or last revalidated) it was sent, and its response received (ms). */
  readonly requestTime: number;
  readonly responseTime: number;
  /** RFC 9111 §4.2.3 corrected initial age, ms. */
  readonly initialAgeMs: number;
  /** RFC 9111 §4.2.1 freshness lifetime, ms. */
  readonly lifetimeMs: number;
  /** must-revalidate, proxy-revalidate, s-maxage or no-cache: never served stale. */
  readonly mustRevalidate: boolean;
  readonly etag: string | null;
  readonly lastModified: string | null;
  readonly date: string | null;
}

/** Under the primary key: the request headers that select a variant (route vary ∪ response Vary). */
export interface VaryRecord {
  readonly kind: "vary";
  readonly names: readonly string[];
}

export type StoredValue = StoredResponse | VaryRecord;

/** Which entries a purge removes. `host` narrows a URL or prefix purge to one host. */
export type PurgeRequest =
  | { readonly url: string; readonly host?: string }
  | { readonly prefix: string; readonly host?: string }
  | { readonly all: true };

export interface StoreStats {
  readonly entries: number;
  readonly bytes: number;
}

/**
 * Where the cache keeps entries. Implementations may answer synchronously (the memory store: a hit then
 * needs no `await`) or with a Promise (a remote store). `set` may refuse a value (returns false), e.g.
 * one larger than the whole store. TTLs are in ms; an expired value is never returned.
 */
export interface CacheStore {
  get(key: string): MaybePromise<StoredValue | undefined>;
  set(key: string, value: StoredValue, ttlMs: number): MaybePromise<boolean>;
  delete(key: string): MaybePromise<boolean>;
  /**
   * Removes every entry whose URL (path and query) starts with `prefix` (and whose host is `host`, when
   * given). Purges return the number of stored responses removed.
   */
  purgePrefix(prefix: string, host?: string): MaybePromise<number>;
  /** Removes every entry of one URL (all hosts, routes, principals and variants, or those of `host`). */
  purgeUrl(url: string, host?: string): MaybePromise<number>;
  purgeAll(): MaybePromise<number>;
  /**
   * The largest entry it stores (accounted bytes, at least the body): a larger value is refused by `set`.
   * The cache neither captures nor reports as stored a body above it.
   */
  readonly maxEntryBytes?: number;
  /** This process's view (a remote store may report what it last saw). */
  stats(): StoreStats;
  /** A remote store's copies in this process (RedisStore's local layer): whether it answers, and its size. */
  localStats?(): LocalLayerStats;
  close?(): MaybePromise<void>;
}

export interface LocalLayerStats extends StoreStats {
  /** The layer answers lookups now. */
  readonly active: boolean;
  /** Lookups the layer answered (since the store started; never reset). */
  readonly hits: number;
  /** Lookups made while the layer was on that it did not hold, sent on to Redis (never reset). */
  readonly misses: number;
}

/** Per-entry bookkeeping counted on top of key, headers and body (object, Map slot, index entry). */
export const ENTRY_OVERHEAD_BYTES = 512;

/** The bytes a value is accounted for: key, header names and values, body, and a fixed overhead. */
export function accountedBytes(key: string, value: StoredValue): number {
  let n = ENTRY_OVERHEAD_BYTES + key.length;
  if (value.kind === "vary") {
    for (const name of value.names) n += name.length;
    return n;
  }
  n += value.body.length;
  for (const name in value.headers) {
    n += name.length;
    const v = value.headers[name]!;
    if (typeof v === "string") n += v.length;
    else for (const x of v) n += x.length;
  }
  return n;
}

interface Slot {
  value: StoredValue;
  bytes: number;
  expiresAt: number;
  url: string;
  /** Read since it was inserted or last given a second chance (CLOCK). */
  used: boolean;
}

export interface MemoryStoreOptions {
  /** The byte budget (keys, headers, bodies and per-entry overhead). */
  readonly maxBytes: number;
  readonly now?: () => number;
  /** Called with the number of entries evicted to make room (not for expiry or purges). */
  readonly onEvict?: (count: number) => void;
}

/**
 * A bounded-memory LRU store. Every operation is synchronous. Recency is kept the CLOCK ("second chance")
 * way, the usual constant-time approximation of LRU: a lookup only marks its entry used (no reordering on
 * the hot path); inserting evicts from the oldest end until the budget holds, and an entry marked used
 * there is moved to the newest end once (marks cleared) instead of being evicted. Expired entries met
 * there are dropped first. An index by URL makes URL purges (and invalidations after unsafe methods)
 * cost the number of that URL's entries.
 */
export class MemoryStore implements CacheStore {
  readonly maxBytes: number;
  /** An entry is at most the whole budget. */
  get maxEntryBytes(): number {
    return this.maxBytes;
  }
  readonly #now: () => number;
  readonly #onEvict: ((count: number) => void) | undefined;
  /** Insertion order (with second chances) is recency order: the first key is the oldest. */
  readonly #slots = new Map<string, Slot>();
  /** The keys of each URL: the key itself while there is one (the usual case), a Set beyond. */
  readonly #byUrl = new Map<string, string | Set<string>>();
  #bytes = 0;
  /** Stored responses (the slots also hold Vary records). */
  #responses = 0;

  constructor(options: MemoryStoreOptions) {
    if (!(options.maxBytes >= 0)) throw new RangeError("MemoryStore maxBytes must be a non-negative number");
    this.maxBytes = options.maxBytes;
    this.#now = options.now ?? Date.now;
    this.#onEvict = options.onEvict;
  }

  get(key: string): StoredValue | undefined {
    const slot = this.#slots.get(key);
    if (slot === undefined) return undefined;
    if (slot.expiresAt <= this.#now()) {
      this.#remove(key, slot);
      return undefined;
    }
    slot.used = true;
    return slot.value;
  }

  /** Whether an unexpired value is held for `key` (without counting as a use). */
  has(key: string): boolean {
    const slot = this.#slots.get(key);
    return slot !== undefined && slot.expiresAt > this.#now();
  }

  /** Values held (responses and Vary records, expired ones not yet met included). */
  get size(): number {
    return this.#slots.size;
  }

  set(key: string, value: StoredValue, ttlMs: number): boolean {
    const bytes = accountedBytes(key, value);
    const old = this.#slots.get(key);
    if (old !== undefined) this.#remove(key, old);
    if (bytes > this.maxBytes || !(ttlMs > 0)) return false;
    const now = this.#now();
    const evicted = this.#bytes + bytes > this.maxBytes ? this.#makeRoom(bytes, now) : 0;
    const url = urlOfKey(key);
    this.#slots.set(key, { value, bytes, expiresAt: now + ttlMs, url, used: false });
    this.#bytes += bytes;
    if (value.kind === "response") this.#responses++;
    const keys = this.#byUrl.get(url);
    if (keys === undefined) this.#byUrl.set(url, key);
    else if (typeof keys === "string") this.#byUrl.set(url, new Set([keys, key]));
    else keys.add(key);
    if (evicted > 0) this.#onEvict?.(evicted);
    return true;
  }

  delete(key: string): boolean {
    const slot = this.#slots.get(key);
    if (slot === undefined) return false;
    this.#remove(key, slot);
    return true;
  }

  purgeUrl(url: string, host?: string): number {
    const keys = this.#byUrl.get(url);
    if (keys === undefined) return 0;
    let n = 0;
    for (const key of typeof keys === "string" ? [keys] : [...keys]) {
      if (host !== undefined && hostOfKey(key) !== host) continue;
      const slot = this.#slots.get(key)!;
      if (slot.value.kind === "response") n++;
      this.#remove(key, slot);
    }
    return n;
  }

  purgePrefix(prefix: string, host?: string): number {
    let n = 0;
    for (const url of [...this.#byUrl.keys()]) if (url.startsWith(prefix)) n += this.purgeUrl(url, host);
    return n;
  }

  purgeAll(): number {
    const n = this.#responses;
    this.#slots.clear();
    this.#byUrl.clear();
    this.#bytes = 0;
    this.#responses = 0;
    return n;
  }

  /** Stored responses (Vary records not counted) and accounted bytes (everything). */
  stats(): StoreStats {
    return { entries: this.#responses, bytes: this.#bytes };
  }

  /** Evicts from the oldest end until `bytes` fit; returns how many unexpired entries were evicted. */
  #makeRoom(bytes: number, now: number): number {
    let evicted = 0;
    // A Map iterator also visits entries moved to the end while it runs: each gets one second chance.
    const it = this.#slots.entries();
    while (this.#bytes + bytes > this.maxBytes) {
      const next = it.next();
      if (next.done) break;
      const [k, s] = next.value;
      if (s.used && s.expiresAt > now) {
        s.used = false;
        this.#slots.delete(k);
        this.#slots.set(k, s);
        continue;
      }
      if (s.expiresAt > now) evicted++;
      this.#remove(k, s);
    }
    return evicted;
  }

  #remove(key: string, slot: Slot): void {
    this.#slots.delete(key);
    this.#bytes -= slot.bytes;
    if (slot.value.kind === "response") this.#responses--;
    const keys = this.#byUrl.get(slot.url);
    if (keys === key) this.#byUrl.delete(slot.url);
    else if (typeof keys === "object") {
      keys.delete(key);
      if (keys.size === 1) this.#byUrl.set(slot.url, keys.values().next().value!);
    }
  }
}

// ─────────────────────────────────────── encoding for remote stores ───────────────────────────────────────

const MAGIC = 0x4d43; // "MC"
/** 2: the body's length is recorded (a value cut short is refused); values of version 1 are misses. */
const VERSION = 2;
const FIXED = 11;

/**
 * A stored value as bytes, for remote stores: a 2-byte magic, a version byte, a 4-byte length of a JSON
 * head (everything but the body), a 4-byte length of the body, the head, then the body bytes.
 */
export function encodeValue(value: StoredValue): Buffer {
  const { body, ...rest } = value.kind === "response" ? value : { ...value, body: Buffer.alloc(0) };
  const head = Buffer.from(JSON.stringify(rest), "utf8");
  const out = Buffer.allocUnsafe(FIXED + head.length + body.length);
  out.writeUInt16BE(MAGIC, 0);
  out.writeUInt8(VERSION, 2);
  out.writeUInt32BE(head.length, 3);
  out.writeUInt32BE(body.length, 7);
  head.copy(out, FIXED);
  body.copy(out, FIXED + head.length);
  return out;
}

/** The bytes say they are a value of this version (decodeValue refusing them means they are damaged). */
export function isCurrentEncoding(bytes: Buffer): boolean {
  return bytes.length >= 3 && bytes.readUInt16BE(0) === MAGIC && bytes.readUInt8(2) === VERSION;
}

/**
 * The value `encodeValue` wrote, or null for bytes it did not write (another version, corruption, a value
 * cut short or grown: its length is not the one recorded). The body is copied out of `bytes` unless
 * `copyBody` is false (the caller owns `bytes`, e.g. a Redis reply).
 */
export function decodeValue(bytes: Buffer, copyBody = true): StoredValue | null {
  if (bytes.length < FIXED || !isCurrentEncoding(bytes)) return null;
  const headLength = bytes.readUInt32BE(3);
  if (FIXED + headLength + bytes.readUInt32BE(7) !== bytes.length) return null;
  let head: Record<string, unknown>;
  try {
    head = JSON.parse(bytes.subarray(FIXED, FIXED + headLength).toString("utf8")) as Record<string, unknown>;
  } catch {
    return null;
  }
  if (head.kind === "vary" && Array.isArray(head.names)) {
    return { kind: "vary", names: head.names.map(String) };
  }
  if (head.kind !== "response") return null;
  const rest = bytes.subarray(FIXED + headLength);
  const body = copyBody ? Buffer.from(rest) : rest;
  return { ...(head as unknown as Omit<StoredResponse, "body">), body };
}
