/**
 * A small Redis client over one TCP (or TLS) connection, with no dependencies.
 *
 *   const redis = new RedisClient({ url: "redis://:secret@127.0.0.1:6379/0", commandTimeoutMs: 50 });
 *   await redis.command(["SET", "k", "v"]);               // → "OK"
 *   await redis.call("GET", "k");                         // → "v"  (bulk strings decoded as UTF-8)
 *   await redis.command(["GET", "k"], { buffers: true }); // → <Buffer 76>
 *   await redis.evalScript(script, ["key"], [1, 2]);      // EVALSHA, EVAL on NOSCRIPT
 *   await redis.close();
 *
 * Behaviour:
 * - **Pipelining.** Commands are written as they are issued (writes of one tick go out in one segment)
 *   and answered in order; nothing waits for the previous reply.
 * - **Timeouts.** Every command has `commandTimeoutMs` from the moment it is issued; a late reply is
 *   read and discarded so the order of the others stays right. A connection on which the oldest command
 *   has waited `stallTimeoutMs` without a reply is dropped and reconnected (a stalled server).
 *   One timer serves all commands: deadlines are issued in order, so only the oldest is watched.
 * - **Connection.** The first command (or `connect()`) connects, within `connectTimeoutMs`, then sends
 *   `AUTH` and `SELECT` from the URL before anything else. When the connection is lost every pending
 *   command fails (`RedisConnectionError`; it may or may not have run), and the client reconnects
 *   after a capped, jittered exponential backoff (which starts over only once a connection was
 *   answered, so a server that accepts and closes at once is not reconnected to in a loop). While it is
 *   down, commands fail at once — a caller with a fallback (a rate limiter's fail mode) never waits for a
 *   dead server.
 * - **Errors** are typed (errors.ts). An error reply rejects only its own command — except `READONLY`:
 *   the server is a replica (after a failover, the old primary), so the connection is dropped and
 *   reconnected, which resolves the URL's host again (backing off while it still leads to a replica).
 * - **Pub/sub.** After `SUBSCRIBE` (one channel per command) the connection receives messages
 *   (`["message", channel, payload]`), which go to `onMessage` instead of answering a command; only
 *   `SUBSCRIBE`, `UNSUBSCRIBE` and `PING` may be sent on it then (Redis' rule). A new connection is not
 *   subscribed: subscribe again on its `ready` event.
 */
import { createHash } from "node:crypto";
import net from "node:net";
import { performance } from "node:perf_hooks";
import tls from "node:tls";
import {
  RedisClosedError,
  RedisConfigError,
  RedisConnectionError,
  RedisError,
  RedisOverloadError,
  RedisProtocolError,
  RedisReplyError,
  RedisTimeoutError,
} from "./errors.ts";
import { RespParser, decodeReply, encodeCommand, type RedisArg, type RespValue } from "./resp.ts";
import { parseRedisUrl, type RedisTarget } from "./url.ts";

export interface RedisClientOptions {
  /** `redis://[user:password@]host[:port][/db]`, or `rediss://` for TLS. */
  readonly url: string;
  /** Connect (TCP, TLS) within this; default 1000. */
  readonly connectTimeoutMs?: number;
  /** Every command is answered within this or fails with RedisTimeoutError; default 1000. */
  readonly commandTimeoutMs?: number;
  /** The connection is dropped when its oldest command has waited this long; default max(1000, 4 × commandTimeoutMs). */
  readonly stallTimeoutMs?: number;
  /** Reconnect backoff: base × 2^attempt, capped, with jitter (half to full); default 100 ms … 5 s. */
  readonly reconnect?: { readonly baseMs?: number; readonly maxMs?: number };
  /** Commands waiting for a reply before new ones fail with RedisOverloadError; default 10,000. */
  readonly maxPending?: number;
  /**
   * Largest bulk string accepted in a reply; a longer one is refused as soon as its length is read
   * (`RedisProtocolError`, the connection is dropped) instead of being buffered. Default 512 MiB
   * (Redis' own limit): a caller whose replies are small bounds what a broken server can make it hold.
   */
  readonly maxReplyBytes?: number;
  /** Extra TLS options for `rediss://` (e.g. `ca` for a private CA). */
  readonly tls?: tls.ConnectionOptions;
  /** Connection events, for logs and metrics. Messages never hold the password. */
  readonly onEvent?: (event: RedisClientEvent) => void;
  /** Pub/sub messages of a subscribed connection: the channel and the payload (bulk strings decoded). */
  readonly onMessage?: (channel: string, payload: RespValue) => void;
}

export type RedisClientEvent =
  | { readonly type: "ready"; readonly server: string }
  | { readonly type: "down"; readonly server: string; readonly error: RedisError; readonly retryInMs: number }
  | { readonly type: "closed"; readonly server: string };

export type RedisClientState = "idle" | "connecting" | "ready" | "down" | "closed";

/** A Lua script with its SHA1, for `evalScript`. */
export class RedisScript {
  readonly source: string;
  readonly sha1: string;
  constructor(source: string) {
    this.source = source;
    this.sha1 = createHash("sha1").update(source).digest("hex");
  }
}

interface Pending {
  resolve: (v: RespValue) => void;
  reject: (e: Error) => void;
  readonly deadline: number;
  readonly buffers: boolean;
  /** Timed out (rejected); its reply will be discarded when it arrives. */
  settled: boolean;
  /** Internal handshake command (AUTH/SELECT): an error reply drops the connection. */
  readonly handshake: boolean;
}

const NOOP = () => {};

/**
 * A write refused by a read-only replica: `READONLY …` (also from a script, Redis 7), or a script error
 * quoting it (`ERR Error running script … -READONLY …`, Redis 6).
 */
function isReadOnlyReply(e: RedisReplyError): boolean {
  return e.prefix === "READONLY" || (e.prefix === "ERR" && e.message.includes(" -READONLY "));
}

/** A pub/sub message: `["message", channel, payload]`. */
function isMessage(v: RespValue): v is RespValue[] {
  if (!Array.isArray(v) || v.length !== 3) return false;
  const kind = v[0];
  return Buffer.isBuffer(kind)
    ? kind.length === 7 && kind.toString("latin1") === "message"
    : kind === "message";
}

export class RedisClient {
  readonly target: RedisTarget;
  readonly #connectTimeoutMs: number;
  readonly #commandTimeoutMs: number;
  readonly #stallTimeoutMs: number;
  readonly #baseMs: number;
  readonly #maxMs: number;
  readonly #maxPending: number;
  readonly #tls: tls.ConnectionOptions | undefined;
  readonly #onEvent: (e: RedisClientEvent) => void;
  readonly #onMessage: ((channel: string, payload: RespValue) => void) | null;
  /** Further event listeners (watch()). */
  readonly #watchers = new Set<(e: RedisClientEvent) => void>();
  /** This connection sent SUBSCRIBE: arrays starting with "message" are messages, not replies. */
  #subscribed = false;

  #state: RedisClientState = "idle";
  #socket: net.Socket | null = null;
  #parser: RespParser;
  /** Commands written and awaiting a reply, oldest first (an array with a moving head). */
  #q: (Pending | undefined)[] = [];
  #head = 0;
  /** Index of the oldest command not yet timed out. */
  #scan = 0;
  #timer: NodeJS.Timeout | null = null;
  #timerAt = Infinity;
  #connectTimer: NodeJS.Timeout | null = null;
  #reconnectTimer: NodeJS.Timeout | null = null;
  #attempt = 0;
  #lastError: RedisError | null = null;
  /** The error that ended the current connection (set before destroy()). */
  #closeReason: RedisError | null = null;
  #handshakesLeft = 0;
  #corked = false;
  #readyWaiters: { resolve: () => void; reject: (e: Error) => void }[] = [];
  #closed: Promise<void> | null = null;
  /** Connections dropped in a row for answering READONLY (a replica); see #onReply. */
  #readOnlyDrops = 0;
  /** When the current connection became ready. */
  #readyAt = 0;

  constructor(options: RedisClientOptions) {
    this.target = parseRedisUrl(options.url);
    const positive = (name: string, v: number | undefined, d: number) => {
      const n = v ?? d;
      if (!(Number.isFinite(n) && n > 0))
        throw new RedisConfigError(`${name} must be a positive number, got ${v}`);
      return n;
    };
    this.#connectTimeoutMs = positive("connectTimeoutMs", options.connectTimeoutMs, 1000);
    this.#commandTimeoutMs = positive("commandTimeoutMs", options.commandTimeoutMs, 1000);
    this.#stallTimeoutMs = Math.max(
      this.#commandTimeoutMs,
      positive("stallTimeoutMs", options.stallTimeoutMs, Math.max(1000, 4 * this.#commandTimeoutMs)),
    );
    this.#baseMs = positive("reconnect.baseMs", options.reconnect?.baseMs, 100);
    this.#maxMs = Math.max(this.#baseMs, positive("reconnect.maxMs", options.reconnect?.maxMs, 5000));
    this.#maxPending = positive("maxPending", options.maxPending, 10_000);
    this.#tls = options.tls;
    this.#onEvent = options.onEvent ?? NOOP;
    this.#onMessage = options.onMessage ?? null;
    this.#parser = new RespParser((v) => this.#onReply(v), {
      maxBulkBytes: positive("maxReplyBytes", options.maxReplyBytes, 512 * 1024 * 1024),
    });
  }

  get state(): RedisClientState {
    return this.#state;
  }

  /** Calls `listener` with every connection event from now on (besides `onEvent`); returns the unwatch. */
  watch(listener: (event: RedisClientEvent) => void): () => void {
    this.#watchers.add(listener);
    return () => this.#watchers.delete(listener);
  }

  #emit(e: RedisClientEvent): void {
    this.#onEvent(e);
    for (const w of this.#watchers) w(e);
  }

  /** Commands issued and not yet answered (timed-out ones included until their reply arrives). */
  get pending(): number {
    return this.#q.length - this.#head;
  }

  /** Connects (if not connected) and resolves once AUTH/SELECT succeeded; rejects on this attempt's failure. */
  connect(): Promise<void> {
    if (this.#state === "closed") return Promise.reject(new RedisClosedError());
    if (this.#state === "ready") return Promise.resolve();
    const p = new Promise<void>((resolve, reject) => this.#readyWaiters.push({ resolve, reject }));
    if (this.#state === "idle" || this.#state === "down") this.#open();
    return p;
  }

  /** Sends one command; bulk strings in the reply are decoded as UTF-8 unless `buffers`. */
  command(args: readonly RedisArg[], options?: { readonly buffers?: boolean }): Promise<RespValue> {
    const state = this.#state;
    if (state !== "ready" && state !== "connecting") {
      if (state === "closed") return Promise.reject(new RedisClosedError());
      if (state === "idle") this.#open();
      else {
        const last = this.#lastError;
        return Promise.reject(
          new RedisConnectionError(
            `not connected to Redis at ${this.target.server} (reconnecting)${last ? `: ${last.message}` : ""}`,
            last instanceof RedisConnectionError ? last.errno : undefined,
          ),
        );
      }
    }
    if (this.#q.length - this.#head >= this.#maxPending)
      return Promise.reject(
        new RedisOverloadError(
          `${this.#maxPending} Redis commands already wait for a reply from ${this.target.server}`,
        ),
      );
    let payload: string | Buffer;
    try {
      payload = encodeCommand(args);
    } catch (err) {
      return Promise.reject(err as Error);
    }
    if (this.#onMessage !== null && String(args[0]).toUpperCase() === "SUBSCRIBE") this.#subscribed = true;
    return new Promise<RespValue>((resolve, reject) => {
      this.#push({
        resolve,
        reject,
        deadline: performance.now() + this.#commandTimeoutMs,
        buffers: options?.buffers === true,
        settled: false,
        handshake: false,
      });
      this.#write(payload);
    });
  }

  /** `command()` with the arguments spread. */
  call(...args: RedisArg[]): Promise<RespValue> {
    return this.command(args);
  }

  /**
   * Runs a Lua script by its SHA1 (`EVALSHA`); when the server does not have it (`NOSCRIPT`, after a
   * restart or `SCRIPT FLUSH`) sends the source with `EVAL`, which also caches it again. Both share one
   * command timeout: the whole call fails with RedisTimeoutError once it is spent.
   */
  async evalScript(
    script: RedisScript,
    keys: readonly RedisArg[],
    args: readonly RedisArg[],
    options?: { readonly buffers?: boolean },
  ): Promise<RespValue> {
    const issued = performance.now();
    try {
      return await this.command(["EVALSHA", script.sha1, keys.length, ...keys, ...args], options);
    } catch (err) {
      if (!(err instanceof RedisReplyError && err.prefix === "NOSCRIPT")) throw err;
    }
    // One deadline for both round trips: the EVAL gets what the EVALSHA left of the command timeout, so
    // a caller never waits longer than that (a fresh timeout would let it wait twice as long).
    const left = issued + this.#commandTimeoutMs - performance.now();
    const timedOut = () =>
      new RedisTimeoutError(
        `Redis at ${this.target.server} did not answer within ${this.#commandTimeoutMs} ms`,
      );
    if (left <= 0) throw timedOut();
    const reply = this.command(["EVAL", script.source, keys.length, ...keys, ...args], options);
    let timer: NodeJS.Timeout | undefined;
    const expired = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(timedOut()), Math.ceil(left));
    });
    reply.catch(() => {}); // a rejection after the deadline has no one waiting for it
    try {
      return await Promise.race([reply, expired]);
    } finally {
      clearTimeout(timer);
    }
  }

  /**
   * Drops the current connection as if it had failed (pending commands fail, the client reconnects after
   * its backoff): for a caller whose connection state is no longer known, e.g. a subscription that timed
   * out and may or may not have happened.
   */
  drop(reason: string): void {
    const socket = this.#socket;
    if (socket === null || this.#state === "closed") return;
    this.#closeReason ??= new RedisConnectionError(`Redis at ${this.target.server}: ${reason}`);
    socket.destroy();
  }

  /** Closes the connection; pending commands fail with RedisClosedError. Idempotent. */
  close(): Promise<void> {
    if (this.#closed) return this.#closed;
    this.#state = "closed";
    this.#clearTimers();
    const closedError = new RedisClosedError();
    for (const w of this.#readyWaiters.splice(0)) w.reject(closedError);
    const socket = this.#socket;
    this.#closed = new Promise<void>((resolve) => {
      if (!socket || socket.destroyed) {
        this.#failAll(closedError);
        resolve();
        return;
      }
      this.#closeReason = closedError;
      socket.once("close", () => resolve());
      socket.destroy();
    });
    this.#emit({ type: "closed", server: this.target.server });
    return this.#closed;
  }

  // ── connection ──

  #open(): void {
    if (this.#reconnectTimer) {
      clearTimeout(this.#reconnectTimer);
      this.#reconnectTimer = null;
    }
    this.#state = "connecting";
    this.#closeReason = null;
    this.#subscribed = false;
    this.#parser.reset();
    const t = this.target;
    const socket = t.tls
      ? tls.connect({
          host: t.host,
          port: t.port,
          ...(net.isIP(t.host) ? {} : { servername: t.host }),
          ...this.#tls,
        })
      : net.connect({ host: t.host, port: t.port });
    socket.setNoDelay(true);
    this.#socket = socket;
    // The connect timeout covers TCP, TLS and the AUTH/SELECT handshake.
    this.#connectTimer = setTimeout(() => {
      this.#connectTimer = null;
      this.#closeReason = new RedisTimeoutError(
        `connecting to Redis at ${t.server} (with AUTH/SELECT) took longer than ${this.#connectTimeoutMs} ms`,
      );
      socket.destroy();
    }, this.#connectTimeoutMs);
    socket.once(t.tls ? "secureConnect" : "connect", () => {
      if (this.#handshakesLeft === 0) this.#becomeReady();
    });
    socket.on("data", (chunk: Buffer) => {
      try {
        this.#parser.feed(chunk);
      } catch (err) {
        this.#closeReason =
          err instanceof RedisError
            ? err
            : new RedisProtocolError(`reply handling failed: ${(err as Error).message}`);
        socket.destroy();
      }
    });
    socket.on("error", (err: Error & { code?: string }) => {
      this.#closeReason ??= new RedisConnectionError(
        `Redis at ${t.server}: ${err.code ?? err.message}`,
        err.code,
        { cause: err },
      );
    });
    socket.once("close", () => this.#onClose(socket));
    // AUTH and SELECT go first; commands issued meanwhile are queued behind them on the same socket.
    this.#handshakesLeft = 0;
    // A user without a password is an ACL user with `nopass` (any password, even an empty one, is
    // accepted); one that has a password refuses the empty one. Never the default user instead.
    if (t.username !== undefined) this.#handshake(["AUTH", t.username, t.password ?? ""]);
    else if (t.password !== undefined) this.#handshake(["AUTH", t.password]);
    if (t.db !== 0) this.#handshake(["SELECT", t.db]);
  }

  #handshake(args: RedisArg[]): void {
    this.#handshakesLeft++;
    const command = String(args[0]);
    this.#push({
      resolve: () => {
        if (--this.#handshakesLeft === 0 && this.#state === "connecting") this.#becomeReady();
      },
      reject: (err) => {
        // An AUTH failure names the command, never the password.
        this.#closeReason =
          err instanceof RedisReplyError
            ? new RedisConnectionError(`Redis at ${this.target.server} refused ${command}: ${err.message}`)
            : err instanceof RedisError
              ? err
              : new RedisConnectionError(err.message);
        this.#socket?.destroy();
      },
      deadline: Infinity, // the connect timer watches the handshake
      buffers: false,
      settled: false,
      handshake: true,
    });
    this.#write(encodeCommand(args));
  }

  #becomeReady(): void {
    if (this.#connectTimer) clearTimeout(this.#connectTimer);
    this.#connectTimer = null;
    this.#state = "ready";
    this.#readyAt = performance.now();
    // The backoff restarts only once the server answered (#onReply): a proxy whose Redis is gone
    // accepts and closes at once, and must not be reconnected to every base delay.
    this.#lastError = null;
    this.#emit({ type: "ready", server: this.target.server });
    for (const w of this.#readyWaiters.splice(0)) w.resolve();
  }

  #onClose(socket: net.Socket): void {
    if (socket !== this.#socket) return;
    this.#socket = null;
    this.#corked = false;
    if (this.#connectTimer) {
      clearTimeout(this.#connectTimer);
      this.#connectTimer = null;
    }
    const reason =
      this.#closeReason ?? new RedisConnectionError(`Redis at ${this.target.server} closed the connection`);
    this.#closeReason = null;
    this.#failAll(reason);
    this.#parser.reset();
    if (this.#state === "closed") return;
    this.#lastError = reason;
    for (const w of this.#readyWaiters.splice(0)) w.reject(reason);
    const cap = Math.min(this.#maxMs, this.#baseMs * 2 ** Math.min(this.#attempt, 30));
    const delay = Math.round(cap / 2 + (Math.random() * cap) / 2);
    this.#attempt++;
    this.#state = "down";
    this.#reconnectTimer = setTimeout(() => {
      this.#reconnectTimer = null;
      if (this.#state === "down") this.#open();
    }, delay);
    this.#emit({ type: "down", server: this.target.server, error: reason, retryInMs: delay });
  }

  // ── commands ──

  #push(p: Pending): void {
    this.#q.push(p);
    if (!p.handshake) this.#arm(p.deadline);
  }

  #write(payload: string | Buffer): void {
    const socket = this.#socket!;
    if (!this.#corked) {
      this.#corked = true;
      socket.cork();
      process.nextTick(this.#uncork);
    }
    socket.write(payload);
  }

  readonly #uncork = (): void => {
    if (!this.#corked) return;
    this.#corked = false;
    this.#socket?.uncork();
  };

  #onReply(v: RespValue): void {
    // The connection is being dropped (a failed AUTH, a stall): its remaining commands fail with the reason.
    if (this.#closeReason) return;
    if (this.#subscribed && isMessage(v)) {
      this.#onMessage!(String(decodeReply(v[1]!)), decodeReply(v[2]!));
      return;
    }
    const p = this.#q[this.#head];
    if (p === undefined) throw new RedisProtocolError("a reply arrived for no command");
    this.#q[this.#head] = undefined;
    this.#head++;
    if (this.#scan < this.#head) this.#scan = this.#head;
    if (this.#head === this.#q.length) {
      this.#q.length = 0;
      this.#head = 0;
      this.#scan = 0;
    } else if (this.#head >= 1024 && this.#head * 2 >= this.#q.length) {
      this.#q = this.#q.slice(this.#head);
      this.#scan -= this.#head;
      this.#head = 0;
    }
    if (v instanceof RedisReplyError) {
      if (!p.settled) p.reject(v);
      if (isReadOnlyReply(v)) this.#dropReadOnly(v);
      return;
    }
    // The server answers: a later loss reconnects from the base delay — unless the last connections were
    // dropped for answering READONLY and this one has not yet been up for a whole backoff cap (a replica
    // answers reads and SCRIPT LOAD: reconnecting to it must back off like any failing server).
    if (this.#readOnlyDrops === 0 || performance.now() - this.#readyAt >= this.#maxMs) {
      this.#readOnlyDrops = 0;
      this.#attempt = 0;
    }
    if (p.settled) return; // timed out earlier
    p.resolve(p.buffers ? v : decodeReply(v));
  }

  /**
   * The server refused a write as a read-only replica: after a failover the name in the URL points to the
   * new primary, but this connection still goes to the old one, and every write on it would fail for as
   * long as it lives. Drop it (the commands behind fail as a lost connection; the fail mode answers
   * them) and reconnect, which resolves the name again.
   */
  #dropReadOnly(reply: RedisReplyError): void {
    const socket = this.#socket;
    if (socket === null || this.#closeReason !== null) return;
    this.#readOnlyDrops++;
    this.#closeReason = new RedisConnectionError(
      `Redis at ${this.target.server} is a read-only replica (${reply.message.slice(0, 80)}); reconnecting to reach the primary`,
    );
    socket.destroy();
  }

  #failAll(err: Error): void {
    const q = this.#q;
    const head = this.#head;
    this.#q = [];
    this.#head = 0;
    this.#scan = 0;
    if (this.#timer) {
      clearTimeout(this.#timer);
      this.#timer = null;
      this.#timerAt = Infinity;
    }
    for (let i = head; i < q.length; i++) {
      const p = q[i];
      if (p && !p.settled) {
        p.settled = true;
        p.reject(err);
      }
    }
  }

  // ── timeouts ──

  #arm(at: number): void {
    if (this.#timer !== null) {
      if (at >= this.#timerAt) return;
      clearTimeout(this.#timer);
    }
    this.#timerAt = at;
    this.#timer = setTimeout(this.#onTimer, Math.max(0, Math.ceil(at - performance.now())));
  }

  readonly #onTimer = (): void => {
    this.#timer = null;
    this.#timerAt = Infinity;
    const now = performance.now();
    const q = this.#q;
    while (this.#scan < q.length) {
      const p = q[this.#scan]!;
      if (!p.handshake) {
        if (p.deadline > now) break;
        if (!p.settled) {
          p.settled = true;
          p.reject(
            new RedisTimeoutError(
              `Redis at ${this.target.server} did not answer within ${this.#commandTimeoutMs} ms`,
            ),
          );
        }
      }
      this.#scan++;
    }
    if (this.#head >= q.length) return;
    const oldest = q[this.#head]!;
    if (oldest.handshake) {
      // The connect timer watches the handshake; look again at the next deadline.
      if (this.#scan < q.length) this.#arm(q[this.#scan]!.deadline);
      return;
    }
    // The oldest command's issue time: its deadline minus the timeout it was given.
    const issued = oldest.deadline - this.#commandTimeoutMs;
    if (now - issued >= this.#stallTimeoutMs && this.#socket) {
      this.#closeReason = new RedisTimeoutError(
        `Redis at ${this.target.server} answered nothing for ${this.#stallTimeoutMs} ms; reconnecting`,
      );
      this.#socket.destroy();
      return;
    }
    const next = this.#scan < q.length ? q[this.#scan]!.deadline : Infinity;
    this.#arm(Math.min(next, issued + this.#stallTimeoutMs));
  };

  #clearTimers(): void {
    for (const t of [this.#timer, this.#connectTimer, this.#reconnectTimer]) if (t) clearTimeout(t);
    this.#timer = this.#connectTimer = this.#reconnectTimer = null;
    this.#timerAt = Infinity;
  }
}
