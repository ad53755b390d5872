/**
 * The errors of the Redis client, one class per way a command can fail, each with a stable `code`:
 *
 * | class | code | when |
 * |---|---|---|
 * | `RedisConnectionError` | `E_REDIS_CONNECTION` | no connection (refused, reset, closed, not yet reconnected) |
 * | `RedisTimeoutError` | `E_REDIS_TIMEOUT` | no reply within the command (or connect) timeout |
 * | `RedisReplyError` | `E_REDIS_REPLY` | the server answered with an error reply (`-ERR …`, `-NOSCRIPT …`) |
 * | `RedisProtocolError` | `E_REDIS_PROTOCOL` | the server's bytes are not RESP2 (the connection is dropped) |
 * | `RedisOverloadError` | `E_REDIS_OVERLOAD` | too many commands waiting for a reply (`maxPending`) |
 * | `RedisClosedError` | `E_REDIS_CLOSED` | the client was closed by its owner |
 * | `RedisConfigError` | `E_REDIS_CONFIG` | the URL or an option is invalid (thrown by the constructor) |
 *
 * Messages name the server as `host:port` only: never the password of the URL.
 */

export type RedisErrorCode =
  | "E_REDIS_CONNECTION"
  | "E_REDIS_TIMEOUT"
  | "E_REDIS_REPLY"
  | "E_REDIS_PROTOCOL"
  | "E_REDIS_OVERLOAD"
  | "E_REDIS_CLOSED"
  | "E_REDIS_CONFIG";

/** The base class: `code` says which of the failures above it is. */
export class RedisError extends Error {
  readonly code: RedisErrorCode;
  constructor(code: RedisErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "RedisError";
    this.code = code;
  }
}

export class RedisConnectionError extends RedisError {
  /** The system error code behind it when there is one (`ECONNREFUSED`, `ECONNRESET`, …). */
  readonly errno: string | undefined;
  constructor(message: string, errno?: string, options?: { cause?: unknown }) {
    super("E_REDIS_CONNECTION", message, options);
    this.name = "RedisConnectionError";
    this.errno = errno;
  }
}

export class RedisTimeoutError extends RedisError {
  constructor(message: string) {
    super("E_REDIS_TIMEOUT", message);
    this.name = "RedisTimeoutError";
  }
}

/**
 * An error reply. `prefix` is its first word (`ERR`, `NOSCRIPT`, `WRONGTYPE`, `NOAUTH`, …), the
 * convention Redis uses for error kinds.
 */
export class RedisReplyError extends RedisError {
  readonly prefix: string;
  constructor(message: string) {
    super("E_REDIS_REPLY", message);
    this.name = "RedisReplyError";
    const space = message.indexOf(" ");
    this.prefix = space === -1 ? message : message.slice(0, space);
  }
}

export class RedisProtocolError extends RedisError {
  constructor(message: string) {
    super("E_REDIS_PROTOCOL", message);
    this.name = "RedisProtocolError";
  }
}

export class RedisOverloadError extends RedisError {
  constructor(message: string) {
    super("E_REDIS_OVERLOAD", message);
    this.name = "RedisOverloadError";
  }
}

export class RedisClosedError extends RedisError {
  constructor() {
    super("E_REDIS_CLOSED", "the Redis client was closed");
    this.name = "RedisClosedError";
  }
}

export class RedisConfigError extends RedisError {
  constructor(message: string) {
    super("E_REDIS_CONFIG", message);
    this.name = "RedisConfigError";
  }
}
