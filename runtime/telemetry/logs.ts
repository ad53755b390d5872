/**
 * The loggers of a proxy process (gateway, gateway worker, sidecar): one for events, one for access logs,
 * both JSON lines on stdout.
 *
 * - Events (started, reloads, drains, errors) are written at once, by one write(2) on the main thread:
 *   they are rare and someone may be waiting for them.
 * - Access lines are buffered and written in batches — when `ACCESS_LOG_BUFFER_BYTES` have gathered, every
 *   `ACCESS_LOG_FLUSH_MS`, and synchronously when the process exits — like Envoy's access log
 *   (`file_flush_interval` 1 s). Written line by line, every request cost a hand-off to libuv's thread
 *   pool (a futex wake-up, a write, a completion wake-up): measured on a sidecar at 1,000 rps, 2,476 writes
 *   from pool threads and ~2.2 futex calls per request; batched, one write per ~30 lines.
 *
 * Lines are whole in every write; the two streams interleave only between lines.
 *
 * A stalled stdout (a log collector that stopped reading: the pipe fills, the pending write waits) must not
 * grow the process without bound: at most `ACCESS_LOG_MAX_BUFFER_BYTES` of access lines wait, and a line
 * that would go past that is dropped and counted (`accessDropped()`, exposed as
 * `meshgate_access_log_dropped_total`) — the request is served either way, as Docker's non-blocking log
 * mode does (`max-buffer-size`, 1 MiB by default). Once lines flow again, one line
 * `{"event":"access_log_dropped","dropped":N}` says how many went missing since the last such line.
 * Events stay synchronous: on a stalled stdout the next event blocks, as every write does under Docker's
 * default (blocking) log mode.
 */
import pino, { type Logger } from "pino";

/** Access lines gathered before a write. */
export const ACCESS_LOG_BUFFER_BYTES = 8 * 1024;
/** The longest an access line waits in the buffer. */
export const ACCESS_LOG_FLUSH_MS = 1000;
/** Access lines (bytes) that may wait for a stalled stdout; past it lines are dropped and counted. */
export const ACCESS_LOG_MAX_BUFFER_BYTES = 1024 * 1024;

export interface ProcessLoggers {
  /** Events: written at once. */
  readonly log: Logger;
  /** Access lines: buffered (see the module comment). */
  readonly access: Logger;
  /** Access lines dropped so far because `ACCESS_LOG_MAX_BUFFER_BYTES` were waiting. */
  readonly accessDropped: () => number;
}

/**
 * The loggers of this process. `base` names it (`{ proxy: "gateway" }`, `{ proxy: "sidecar" }`, a worker
 * index…); `fd` is where lines go (default 1, stdout).
 */
export function processLoggers(name: string, base: Record<string, unknown>, fd = 1): ProcessLoggers {
  const events = pino.destination({ dest: fd, sync: true });
  const buffered = pino.destination({
    dest: fd,
    sync: false,
    minLength: ACCESS_LOG_BUFFER_BYTES,
    maxLength: ACCESS_LOG_MAX_BUFFER_BYTES,
  });
  let dropped = 0;
  let unreported = 0;
  // sonic-boom emits "drop" synchronously, inside the write that did not fit.
  buffered.on("drop", () => {
    dropped++;
    unreported++;
  });
  const log = pino({ name, base }, events);
  const access = pino({ name, base }, buffered);
  // An asynchronous flush: the write happens on libuv's pool, once per interval at most. At exit, pino
  // writes what is left synchronously (it registers every asynchronous destination for that).
  setInterval(() => {
    if (unreported > 0) {
      // Reported only when the notice itself fits (the stall is over); otherwise the next tick tries.
      const before = dropped;
      const n = unreported;
      access.warn({ event: "access_log_dropped", dropped: n, maxBufferBytes: ACCESS_LOG_MAX_BUFFER_BYTES });
      if (dropped === before) unreported -= n;
      else {
        dropped = before; // the notice is not an access line: it does not count
        unreported = n;
      }
    }
    buffered.flush();
  }, ACCESS_LOG_FLUSH_MS).unref();
  return { log, access, accessDropped: () => dropped };
}

/**
 * An authority as an access line shows it (the Host header or :authority, a CONNECT target): without
 * userinfo — a client that wrote `http://user:password@host/` (RFC 9110 §4.2.4 deprecates userinfo;
 * decide() and the CONNECT parser refuse it) must not find its password in the logs — without anything
 * that is no part of an authority (a refused CONNECT target `host:443/x?access_token=…` keeps
 * `host:443`), and at most `max` characters. A query or fragment goes first, then everything up to the
 * last "@" (a password may hold an unencoded "@" or "/"), then whatever follows a "/".
 */
export function loggedAuthority(authority: string, max = 255): string {
  const q = authority.search(/[?#]/);
  let a = q < 0 ? authority : authority.slice(0, q);
  const at = a.lastIndexOf("@");
  if (at >= 0) a = a.slice(at + 1);
  const slash = a.indexOf("/");
  return (slash < 0 ? a : a.slice(0, slash)).slice(0, max);
}

/** An absolute-form target's scheme and "://" (`https://`). */
const ABSOLUTE_SCHEME = /^[a-z][a-z0-9+.-]*:\/\//i;

/**
 * A refused request target as an access line shows it: without the query or fragment (a token in
 * either), without userinfo in an absolute-form target — everything between "://" and the last "@"
 * goes, since a password may hold an unencoded "/" or "@" — and at most 200 characters. (An accepted
 * request's line shows its canonical path instead.)
 */
export function loggedTarget(target: string): string {
  const q = target.search(/[?#]/);
  let t = q < 0 ? target : target.slice(0, q);
  const m = ABSOLUTE_SCHEME.exec(t);
  if (m !== null) {
    const at = t.lastIndexOf("@");
    if (at >= m[0].length) t = `${m[0]}${t.slice(at + 1)}`;
  }
  return t.slice(0, 200);
}
