/**
 * RESP2, the Redis serialization protocol: the command encoder and an incremental reply parser.
 *
 * The parser takes TCP chunks as they come — a reply may be split anywhere, even inside `\r\n` or a
 * bulk string's length — and calls `onReply` once per complete top-level reply, in order. Its work is
 * linear in the bytes fed: nested arrays keep their progress on an explicit stack, and the body of a
 * bulk string — like a line whose end has not arrived — is collected chunk by chunk and joined once,
 * when it is complete.
 *
 * Replies map to: simple string → `string`; error → `RedisReplyError` (a value, not thrown, so that an
 * error inside an array — EXEC, a script's table — stays in place); integer → `number` (`bigint`
 * beyond 2^53); bulk string → `Buffer`; array → `RespValue[]`; null bulk and null array → `null`.
 */
import { RedisProtocolError, RedisReplyError } from "./errors.ts";

export type RespValue = string | number | bigint | Buffer | null | RedisReplyError | RespValue[];

/** A command argument: strings are sent as UTF-8, numbers in decimal. */
export type RedisArg = string | Buffer | number;

const CR = 13;
const LF = 10;
const EMPTY = Buffer.alloc(0);

/**
 * Encodes one command as a RESP array of bulk strings. All-text commands become one string (the
 * socket encodes it once); commands with a Buffer argument become one Buffer.
 */
export function encodeCommand(args: readonly RedisArg[]): string | Buffer {
  if (args.length === 0) throw new TypeError("a Redis command needs at least its name");
  let binary = false;
  for (const a of args) if (typeof a !== "string" && typeof a !== "number") binary = true;
  if (!binary) {
    let out = `*${args.length}\r\n`;
    for (const a of args) {
      const s = typeof a === "number" ? numberArg(a) : (a as string);
      out += `$${Buffer.byteLength(s)}\r\n${s}\r\n`;
    }
    return out;
  }
  const parts: Buffer[] = [Buffer.from(`*${args.length}\r\n`)];
  for (const a of args) {
    const b = Buffer.isBuffer(a) ? a : Buffer.from(typeof a === "number" ? numberArg(a) : a);
    parts.push(Buffer.from(`$${b.length}\r\n`), b, CRLF);
  }
  return Buffer.concat(parts);
}
const CRLF = Buffer.from("\r\n");

function numberArg(n: number): string {
  if (!Number.isFinite(n)) throw new TypeError(`a Redis argument must be a finite number, got ${n}`);
  return String(n);
}

export interface RespParserLimits {
  /** Longest bulk string accepted (Redis' own limit is 512 MiB). */
  readonly maxBulkBytes?: number;
  /** Most elements in one array. */
  readonly maxArrayLength?: number;
  /** Deepest nesting of arrays. */
  readonly maxDepth?: number;
  /** Longest simple-string, error or header line. */
  readonly maxLineBytes?: number;
}

interface Frame {
  readonly items: RespValue[];
  remaining: number;
}

/**
 * Incremental RESP2 parser. `feed()` throws `RedisProtocolError` on bytes that are not RESP2 (or
 * exceed the limits); the parser is then unusable, as the stream has lost its framing.
 */
export class RespParser {
  readonly #onReply: (value: RespValue) => void;
  readonly #maxBulk: number;
  readonly #maxArray: number;
  readonly #maxDepth: number;
  readonly #maxLine: number;
  #buf: Buffer = EMPTY;
  #pos = 0;
  /** Length of the bulk body being read (its header consumed), or -1. */
  #bulk = -1;
  /** The buffer ends inside a line (no LF yet): only a later chunk can end it. */
  #inLine = false;
  /** Chunks that arrived while a bulk body or a line was incomplete: joined once it is complete. */
  #pending: Buffer[] = [];
  #pendingBytes = 0;
  readonly #stack: Frame[] = [];
  #failed = false;

  constructor(onReply: (value: RespValue) => void, limits: RespParserLimits = {}) {
    this.#onReply = onReply;
    this.#maxBulk = limits.maxBulkBytes ?? 512 * 1024 * 1024;
    this.#maxArray = limits.maxArrayLength ?? 16 * 1024 * 1024;
    this.#maxDepth = limits.maxDepth ?? 64;
    this.#maxLine = limits.maxLineBytes ?? 64 * 1024;
  }

  /** Bytes received but not yet part of a complete reply (for tests and diagnostics). */
  get buffered(): number {
    return this.#buf.length - this.#pos + this.#pendingBytes;
  }

  /** True while a reply is partially received. */
  get midReply(): boolean {
    return this.#stack.length > 0 || this.#bulk >= 0 || this.buffered > 0;
  }

  /** Forgets any partial reply (after the connection that carried it is gone). */
  reset(): void {
    this.#buf = EMPTY;
    this.#pos = 0;
    this.#bulk = -1;
    this.#pending = [];
    this.#pendingBytes = 0;
    this.#inLine = false;
    this.#stack.length = 0;
    this.#failed = false;
  }

  feed(chunk: Buffer): void {
    if (this.#failed) throw new RedisProtocolError("the parser already failed; reset it");
    if (chunk.length === 0) return;
    if (this.#bulk >= 0) {
      this.#pending.push(chunk);
      this.#pendingBytes += chunk.length;
      if (this.#buf.length - this.#pos + this.#pendingBytes < this.#bulk + 2) return;
      this.#buf = Buffer.concat([this.#buf.subarray(this.#pos), ...this.#pending]);
      this.#pending = [];
      this.#pendingBytes = 0;
    } else if (this.#inLine) {
      // The LF that ends the line can only be in what arrives now (its CR may be the last byte before).
      if (chunk.indexOf(LF) === -1) {
        this.#pending.push(chunk);
        this.#pendingBytes += chunk.length;
        if (this.#buf.length - this.#pos + this.#pendingBytes > this.#maxLine) {
          this.#failed = true;
          throw new RedisProtocolError("reply line too long");
        }
        return;
      }
      const head = this.#buf.subarray(this.#pos);
      if (this.#pending.length === 0) this.#buf = Buffer.concat([head, chunk]);
      else {
        this.#buf = Buffer.concat([head, ...this.#pending, chunk]);
        this.#pending = [];
        this.#pendingBytes = 0;
      }
      this.#inLine = false;
    } else if (this.#pos < this.#buf.length) {
      this.#buf = Buffer.concat([this.#buf.subarray(this.#pos), chunk]);
    } else {
      this.#buf = chunk;
    }
    this.#pos = 0;
    try {
      this.#parse();
    } catch (err) {
      this.#failed = true;
      throw err;
    }
  }

  #parse(): void {
    const buf = this.#buf;
    for (;;) {
      if (this.#bulk >= 0) {
        const end = this.#pos + this.#bulk;
        if (buf.length < end + 2) return;
        if (buf[end] !== CR || buf[end + 1] !== LF)
          throw new RedisProtocolError("bulk string not ended by CRLF");
        const len = this.#bulk;
        // Small values are copied so they do not pin a large chunk; large ones are used in place.
        const value =
          len * 2 >= buf.length ? buf.subarray(this.#pos, end) : Buffer.from(buf.subarray(this.#pos, end));
        this.#pos = end + 2;
        this.#bulk = -1;
        this.#emit(value);
        continue;
      }
      if (this.#pos >= buf.length) {
        this.#buf = EMPTY;
        this.#pos = 0;
        return;
      }
      const lf = buf.indexOf(LF, this.#pos);
      if (lf === -1) {
        if (buf.length - this.#pos > this.#maxLine) throw new RedisProtocolError("reply line too long");
        this.#inLine = true;
        return;
      }
      if (lf - this.#pos > this.#maxLine) throw new RedisProtocolError("reply line too long");
      if (lf === this.#pos || buf[lf - 1] !== CR)
        throw new RedisProtocolError("reply line not ended by CRLF");
      const type = buf[this.#pos]!;
      const start = this.#pos + 1;
      const end = lf - 1; // the CR
      this.#pos = lf + 1;
      switch (type) {
        case 0x2b: // '+'
          this.#emit(buf.toString("utf8", start, end));
          break;
        case 0x2d: // '-'
          this.#emit(new RedisReplyError(buf.toString("utf8", start, end)));
          break;
        case 0x3a: // ':'
          this.#emit(parseInteger(buf, start, end));
          break;
        case 0x24: {
          // '$'
          const n = parseLength(buf, start, end);
          if (n === -1) this.#emit(null);
          else if (n > this.#maxBulk)
            throw new RedisProtocolError(`bulk string of ${n} bytes exceeds the limit`);
          else this.#bulk = n;
          break;
        }
        case 0x2a: {
          // '*'
          const n = parseLength(buf, start, end);
          if (n === -1) this.#emit(null);
          else if (n === 0) this.#emit([]);
          else if (n > this.#maxArray)
            throw new RedisProtocolError(`array of ${n} elements exceeds the limit`);
          else if (this.#stack.length >= this.#maxDepth)
            throw new RedisProtocolError("arrays nested too deep");
          else this.#stack.push({ items: [], remaining: n });
          break;
        }
        default:
          throw new RedisProtocolError(
            `unexpected reply type byte 0x${type.toString(16).padStart(2, "0")} (RESP3 is not spoken)`,
          );
      }
    }
  }

  #emit(value: RespValue): void {
    let v = value;
    const stack = this.#stack;
    while (stack.length > 0) {
      const top = stack[stack.length - 1]!;
      top.items.push(v);
      if (--top.remaining > 0) return;
      stack.pop();
      v = top.items;
    }
    this.#onReply(v);
  }
}

/** `-1` (null) or a non-negative length. */
function parseLength(buf: Buffer, start: number, end: number): number {
  if (end - start === 2 && buf[start] === 0x2d && buf[start + 1] === 0x31) return -1;
  if (start === end || end - start > 15) throw new RedisProtocolError("malformed length");
  let n = 0;
  for (let i = start; i < end; i++) {
    const d = buf[i]! - 0x30;
    if (d < 0 || d > 9) throw new RedisProtocolError("malformed length");
    n = n * 10 + d;
  }
  return n;
}

function parseInteger(buf: Buffer, start: number, end: number): number | bigint {
  let i = start;
  const negative = buf[i] === 0x2d;
  if (negative) i++;
  if (i === end || end - i > 19) throw new RedisProtocolError("malformed integer");
  if (end - i <= 15) {
    let n = 0;
    for (; i < end; i++) {
      const d = buf[i]! - 0x30;
      if (d < 0 || d > 9) throw new RedisProtocolError("malformed integer");
      n = n * 10 + d;
    }
    return negative ? -n : n;
  }
  const text = buf.toString("latin1", start, end);
  if (!/^-?[0-9]+$/.test(text)) throw new RedisProtocolError("malformed integer");
  const big = BigInt(text);
  return big >= BigInt(Number.MIN_SAFE_INTEGER) && big <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(big) : big;
}

/** A reply with bulk strings decoded as UTF-8 (errors and nulls stay as they are). */
export function decodeReply(v: RespValue): RespValue {
  if (Buffer.isBuffer(v)) return v.toString("utf8");
  if (Array.isArray(v)) return v.map(decodeReply);
  return v;
}
