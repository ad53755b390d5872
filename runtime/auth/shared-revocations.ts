/**
 * Logouts shared by every replica of a gateway through its Redis (the rate-limit or cache store it
 * already shares with them): an OIDC session ended on one replica is refused by all of them — the
 * session cookie is sealed, not looked up, so without this a copy of a logged-out cookie kept working on
 * every replica but the one that saw the logout (and on that one after a restart).
 *
 * - Each logout is appended to a Redis stream (`XADD <prefix> MAXLEN ~ 100000 * s <hash> u <until>`):
 *   the SHA-256 hash of the cookie (base64url) and when the session would have expired. Never the cookie.
 * - Each replica reads the whole stream when it starts (so a replica started after a logout refuses the
 *   session too), then polls what was appended since the last entry it read, every `pollMs`
 *   (default 1 s: a logout reaches the other replicas within about that). Polling a stream needs no
 *   subscription to keep alive and misses nothing across reconnects: it goes on from the last entry read.
 * - Redis down: logouts still end the session on this replica (and its workers); the ones not yet
 *   written are kept (at most `MAX_UNSENT`) and written once Redis answers again. One `unavailable` per
 *   outage, one `recovered` after it.
 */
import { RedisClient } from "../redis/client.ts";
import type { RespValue } from "../redis/resp.ts";
import type { RevokedSessions } from "./oidc.ts";

/** Stream entries kept (approximately: Redis trims whole nodes), as many as RevokedSessions holds. */
export const SHARED_REVOCATIONS_MAX_ENTRIES = 100_000;
/** Logouts kept for a Redis that does not answer, written once it does. */
export const MAX_UNSENT = 10_000;
/** Entries read per XRANGE. */
const PAGE = 1000;

export interface SharedRevocationsOptions {
  /** The Redis the replicas share (`redis://…`, `rediss://…`). */
  readonly url: string;
  /** The stream's key (one per mesh and namespace: replicas of one gateway). */
  readonly key: string;
  /** Every command is answered within this. */
  readonly timeoutMs: number;
  /** The set the gateway checks sessions against. */
  readonly revoked: RevokedSessions;
  /** How often the stream is read for other replicas' logouts; default 1000 ms. */
  readonly pollMs?: number;
  readonly now?: () => number;
  /** Outages, once each (the message never holds the URL's password). */
  readonly onUnavailable?: (error: Error) => void;
  readonly onRecovered?: () => void;
}

/** The stream's key for a gateway of `mesh` in `namespace` (no hash tags: one key). */
export function sharedRevocationsKey(mesh: string, namespace: string): string {
  return `meshgate:sessions-revoked:${mesh}:${namespace}`.replace(/[{}]/g, "");
}

const MAX_SEQ = 2n ** 64n - 1n;

/** The entry ID just after `id` ("ms-seq"): XRANGE's start is inclusive, and "(" needs Redis 6.2. */
export function nextStreamId(id: string): string {
  const dash = id.indexOf("-");
  const ms = BigInt(id.slice(0, dash));
  const seq = BigInt(id.slice(dash + 1));
  return seq === MAX_SEQ ? `${ms + 1n}-0` : `${ms}-${seq + 1n}`;
}

export class SharedRevocations {
  readonly server: string;
  readonly #client: RedisClient;
  readonly #o: SharedRevocationsOptions;
  readonly #now: () => number;
  readonly #timer: NodeJS.Timeout;
  /** Where the next read starts ("-" until the first entry was read). */
  #from = "-";
  #unsent: [string, number][] = [];
  #polling = false;
  #down = false;
  #closed = false;

  constructor(o: SharedRevocationsOptions) {
    this.#o = o;
    this.#now = o.now ?? Date.now;
    this.#client = new RedisClient({
      url: o.url,
      commandTimeoutMs: Math.max(1, o.timeoutMs),
      connectTimeoutMs: Math.max(1000, o.timeoutMs),
    });
    this.server = this.#client.target.server;
    this.#timer = setInterval(() => void this.poll(), o.pollMs ?? 1000);
    this.#timer.unref();
    void this.poll();
  }

  /** A logout here: written to the stream (or kept until Redis answers). */
  publish(hash: string, until: number): void {
    if (this.#closed) return;
    this.#unsent.push([hash, until]);
    if (this.#unsent.length > MAX_UNSENT) this.#unsent.shift();
    void this.poll();
  }

  /**
   * Writes what waits, then reads what other replicas appended (all of it the first time). Resolves when
   * done or failed; one runs at a time (a call during another is dropped: the next tick does it).
   */
  async poll(): Promise<void> {
    if (this.#polling || this.#closed) return;
    this.#polling = true;
    try {
      while (this.#unsent.length > 0) {
        const [hash, until] = this.#unsent[0]!;
        if (until > this.#now()) {
          await this.#client.command([
            "XADD", this.#o.key, "MAXLEN", "~", SHARED_REVOCATIONS_MAX_ENTRIES, "*", "s", hash, "u", until,
          ]); // prettier-ignore
        }
        this.#unsent.shift();
      }
      for (;;) {
        const page = await this.#client.command(["XRANGE", this.#o.key, this.#from, "+", "COUNT", PAGE]);
        const entries = streamEntries(page);
        const now = this.#now();
        const live: [string, number][] = [];
        for (const [id, hash, until] of entries) {
          this.#from = nextStreamId(id);
          if (until > now) live.push([hash, until]);
        }
        this.#o.revoked.apply(live, now);
        if (entries.length < PAGE) break;
      }
      if (this.#down) {
        this.#down = false;
        this.#o.onRecovered?.();
      }
    } catch (err) {
      if (!this.#down && !this.#closed) {
        this.#down = true;
        this.#o.onUnavailable?.(err as Error);
      }
    } finally {
      this.#polling = false;
    }
  }

  async close(): Promise<void> {
    this.#closed = true;
    clearInterval(this.#timer);
    await this.#client.close();
  }
}

/**
 * XRANGE's reply as [id, hash, until]. An entry without our fields (not written by a gateway) comes back
 * with until 0, so that its id still moves the read on and nothing is applied from it.
 */
function streamEntries(reply: RespValue): [string, string, number][] {
  const out: [string, string, number][] = [];
  if (!Array.isArray(reply)) return out;
  for (const e of reply) {
    if (!Array.isArray(e) || typeof e[0] !== "string" || !Array.isArray(e[1])) continue;
    const fields = e[1] as RespValue[];
    let hash: string | null = null;
    let until = Number.NaN;
    for (let i = 0; i + 1 < fields.length; i += 2) {
      if (fields[i] === "s" && typeof fields[i + 1] === "string") hash = fields[i + 1] as string;
      else if (fields[i] === "u") until = Number(fields[i + 1]);
    }
    out.push([e[0], hash ?? "", hash === null ? 0 : until]);
  }
  return out;
}
