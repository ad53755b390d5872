/**
 * Bodies the gateway has to look at: JSON media-type detection, bounded collection of a streamed body,
 * bounded decoding of a compressed one, and a byte-counting pass-through that enforces a response limit.
 * Everything is bounded: no body is held in memory beyond the limit its route declares.
 */
import { Writable } from "node:stream";
import { promisify } from "node:util";
import zlib from "node:zlib";

const MEDIA_JSON = /^[a-z0-9!#$&^_.+-]+\/(?:json|[a-z0-9!#$&^_.+-]+\+json)$/;

/**
 * True for `application/json` and any `…/…+json` media type (parameters such as charset ignored).
 * Other `…/json` types (`text/json`) count too: some servers still send them.
 */
export function isJsonMediaType(contentType: string | string[] | undefined): boolean {
  if (typeof contentType !== "string") return false;
  const semi = contentType.indexOf(";");
  const type = (semi < 0 ? contentType : contentType.slice(0, semi)).trim().toLowerCase();
  return MEDIA_JSON.test(type);
}

/** Why a body could not be collected or decoded. */
export type BodyFailure = "too_large" | "unsupported_encoding" | "corrupt_encoding";

export class BodyError extends Error {
  readonly failure: BodyFailure;
  readonly code: string;
  constructor(failure: BodyFailure, message: string) {
    super(message);
    this.failure = failure;
    this.code = failure === "too_large" ? "E_BODY_TOO_LARGE" : "E_BODY_ENCODING";
  }
}

type Decoder = (buf: Buffer, opts: zlib.ZlibOptions | zlib.BrotliOptions) => Promise<Buffer>;
const gunzip = promisify(zlib.gunzip) as Decoder;
const inflate = promisify(zlib.inflate) as Decoder;
const inflateRaw = promisify(zlib.inflateRaw) as Decoder;
const brotli = promisify(zlib.brotliDecompress) as Decoder;
const zstd = (
  typeof (zlib as { zstdDecompress?: unknown }).zstdDecompress === "function"
    ? promisify((zlib as unknown as { zstdDecompress: typeof zlib.gunzip }).zstdDecompress)
    : null
) as Decoder | null;

/**
 * Decodes a body sent with `Content-Encoding` (gzip, deflate, br, zstd; identity or none as is) into at
 * most `limit` bytes — a decompression bomb stops at the limit. Runs on the libuv thread pool.
 */
export async function decodeContent(
  body: Buffer,
  encoding: string | string[] | undefined,
  limit: number,
): Promise<Buffer> {
  const enc =
    typeof encoding === "string" ? encoding.trim().toLowerCase() : encoding === undefined ? "" : null;
  if (enc === "" || enc === "identity") return body;
  const opts = { maxOutputLength: Math.max(1, limit) };
  let decode: Decoder | null = null;
  if (enc === "gzip" || enc === "x-gzip") decode = gunzip;
  else if (enc === "deflate") decode = (b, o) => inflate(b, o).catch(() => inflateRaw(b, o));
  else if (enc === "br") decode = brotli;
  else if (enc === "zstd") decode = zstd;
  if (decode === null)
    throw new BodyError("unsupported_encoding", `content-encoding ${String(encoding)} is not supported`);
  try {
    const out = await decode(body, opts);
    if (out.length > limit) throw new RangeError("too large");
    return out;
  } catch (err) {
    if (err instanceof RangeError || (err as { code?: string }).code === "ERR_BUFFER_TOO_LARGE")
      throw new BodyError("too_large", `the decoded body exceeds ${limit} bytes`);
    throw new BodyError("corrupt_encoding", `the ${enc} body does not decode`);
  }
}

/**
 * A Writable that keeps what it is given, up to `limit` bytes; one byte more fails the write with a
 * BodyError("too_large") (the producer — undici — then aborts the upstream response). `onFinish` runs
 * once the whole body arrived, before the stream finishes; its rejection fails the stream.
 */
export class BoundedCollector extends Writable {
  readonly limit: number;
  private readonly chunks: Buffer[] = [];
  private size = 0;
  private readonly onFinish: ((body: Buffer) => Promise<void> | void) | null;
  /** Set when the collector failed (too large, or onFinish threw). */
  failure: Error | null = null;

  constructor(limit: number, onFinish?: (body: Buffer) => Promise<void> | void) {
    super();
    this.limit = limit;
    this.onFinish = onFinish ?? null;
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    this.size += chunk.length;
    if (this.size > this.limit) {
      this.failure = new BodyError("too_large", `the body exceeds ${this.limit} bytes`);
      cb(this.failure);
      return;
    }
    this.chunks.push(chunk);
    cb();
  }

  override _final(cb: (err?: Error | null) => void): void {
    if (this.onFinish === null) {
      cb();
      return;
    }
    let done: Promise<void> | void;
    try {
      done = this.onFinish(this.body());
    } catch (err) {
      this.failure = err as Error;
      cb(err as Error);
      return;
    }
    if (done instanceof Promise) {
      done.then(
        () => cb(),
        (err: Error) => {
          this.failure = err;
          cb(err);
        },
      );
    } else cb();
  }

  /** The bytes collected so far. */
  body(): Buffer {
    return this.chunks.length === 1 ? this.chunks[0]! : Buffer.concat(this.chunks, this.size);
  }

  get bytes(): number {
    return this.size;
  }
}

/**
 * A pass-through to `dest` that counts bytes and fails once more than `limit` went by: the producer
 * aborts, and the caller resets the response (its head is already out, so it must not look complete).
 * Backpressure is passed on: a write completes when `dest` accepted it.
 */
export class LimitedWritable extends Writable {
  private readonly dest: Writable;
  private readonly limit: number;
  private seen = 0;
  exceeded = false;

  constructor(dest: Writable, limit: number) {
    super();
    this.dest = dest;
    this.limit = limit;
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    this.seen += chunk.length;
    if (this.seen > this.limit) {
      this.exceeded = true;
      cb(new BodyError("too_large", `the response exceeds ${this.limit} bytes`));
      return;
    }
    if (this.dest.write(chunk)) cb();
    else this.dest.once("drain", () => cb());
  }

  override _final(cb: (err?: Error | null) => void): void {
    this.dest.end(() => cb());
  }

  override _destroy(err: Error | null, cb: (err?: Error | null) => void): void {
    cb(err);
  }
}
