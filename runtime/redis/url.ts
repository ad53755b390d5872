/**
 * `redis://[user:password@]host[:port][/db]` and `rediss://…` (TLS) URLs: parsed once, and shown in
 * logs and errors only in redacted form (`redis://host:port/db`), never with the password.
 */
import { RedisConfigError } from "./errors.ts";

export interface RedisTarget {
  readonly host: string;
  readonly port: number;
  readonly tls: boolean;
  /** ACL user (Redis 6+; authenticated even without a password, as a `nopass` user); absent = the default user. */
  readonly username: string | undefined;
  readonly password: string | undefined;
  readonly db: number;
  /** `host:port`, for messages. */
  readonly server: string;
}

/** Parses a Redis URL. Throws `RedisConfigError` naming the problem (never echoing the password). */
export function parseRedisUrl(url: string): RedisTarget {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw new RedisConfigError(
      "the Redis URL does not parse; write redis://[user:password@]host:port/db (percent-encode special characters of the password)",
    );
  }
  if (u.protocol !== "redis:" && u.protocol !== "rediss:")
    throw new RedisConfigError(
      `the Redis URL must start with redis:// or rediss:// (TLS), not ${u.protocol}//`,
    );
  const host = u.hostname.startsWith("[") ? u.hostname.slice(1, -1) : u.hostname;
  if (!host) throw new RedisConfigError(`the Redis URL ${redactRedisUrl(url)} has no host`);
  const port = u.port === "" ? 6379 : Number(u.port);
  const path = u.pathname === "" || u.pathname === "/" ? "0" : u.pathname.slice(1);
  if (!/^[0-9]{1,5}$/.test(path))
    throw new RedisConfigError(
      `the Redis URL ${redactRedisUrl(url)} has path /${path}; the path is the database number, e.g. /0`,
    );
  if (u.search || u.hash)
    throw new RedisConfigError(
      `the Redis URL ${redactRedisUrl(url)} has a query or fragment, which are not supported`,
    );
  let username: string | undefined;
  let password: string | undefined;
  try {
    username = u.username ? decodeURIComponent(u.username) : undefined;
    password = u.password ? decodeURIComponent(u.password) : undefined;
  } catch {
    throw new RedisConfigError("the Redis URL's user or password has a malformed percent-encoding");
  }
  const bracketed = host.includes(":") ? `[${host}]` : host;
  return {
    host,
    port,
    tls: u.protocol === "rediss:",
    username,
    password,
    db: Number(path),
    server: `${bracketed}:${port}`,
  };
}

/** The URL without user and password (`redis://host:port/db`), or a placeholder when it does not parse. */
export function redactRedisUrl(url: string): string {
  try {
    const u = new URL(url);
    return `${u.protocol}//${u.host}${u.pathname === "/" ? "" : u.pathname}`;
  } catch {
    return "<unparseable redis url>";
  }
}
