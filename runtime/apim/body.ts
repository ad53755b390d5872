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

/**
 * True when a Content-Type value lists more than one media type (a comma outside a quoted string):
 * `application/json, text/html` is one field line that a browser reads by the Fetch standard's rule — the
 * last type — and a JSON check reads as no JSON at all. Ambiguous, like a repeated field.
 */
export function listsMediaTypes(contentType: string | string[] | undefined): boolean {
  if (Array.isArray(contentType)) return contentType.length > 1 || listsMediaTypes(contentType[0]);
  if (typeof contentType !== "string" || !contentType.includes(",")) return false;
  let quoted = false;
  for (let i = 0; i < contentType.length; i++) {
    const c = contentType[i];
    if (quoted && c === "\\") i++;
    else if (c === '"') quoted = !quoted;
    else if (c === "," && !quoted) return true;
  }
  return false;
}

const UTF8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

/**
 * A JSON body's text: strict UTF-8 (RFC 8259 §8.1: JSON exchanged between systems is UTF-8) — invalid
 * bytes throw (TypeError), never become U+FFFD in a clean answer; a BOM is kept, so JSON.parse refuses it.
 */
export function utf8Text(body: Buffer): string {
  return UTF8.decode(body);
}

type RawJson = { readonly rawJSON: string };
const RAW = JSON as unknown as { rawJSON(text: string): RawJson; isRawJSON(v: unknown): v is RawJson };

/**
 * JSON.parse keeping the text of every number a double would change (12345678901234567890, 1e400 —
 * Infinity, 1.10): such a number is kept as raw JSON (JSON.rawJSON) and serialized exactly as it came, so
 * a transform that drops one field never rewrites another's digits (a 64-bit id, a price).
 */
export function parseJsonExact(text: string): unknown {
  return JSON.parse(text, keepNumberText);
}

function keepNumberText(this: unknown, _key: string, value: unknown, context?: { source?: string }): unknown {
  return typeof value === "number" && context?.source !== undefined && String(value) !== context.source
    ? RAW.rawJSON(context.source)
    : value;
}

/** True for a number parseJsonExact kept as its text. */
export const isRawJson = (v: unknown): boolean => RAW.isRawJSON(v);

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
  // "deflate" is zlib-wrapped (RFC 9110 §8.4.1.2); some servers send it raw. Only a stream that is not
  // zlib-wrapped is retried raw: one over the limit is too large either way (not "corrupt").
  else if (enc === "deflate")
    decode = (b, o) =>
      inflate(b, o).catch((err: unknown) =>
        (err as { code?: string }).code === "ERR_BUFFER_TOO_LARGE" || err instanceof RangeError
          ? Promise.reject(err)
          : inflateRaw(b, o),
      );
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

const ignore = () => {};

/**
 * A Writable that keeps what it is given, up to `limit` bytes. One byte more sets `failure` (a
 * BodyError "too_large"), drops the rest and calls `onOverflow` once — the caller cancels the upstream
 * request there. It never fails a write itself: the upstream pools neither wait for nor listen to their
 * sink's errors, so the outcome is read from `failure` after `done()`.
 */
export class BoundedCollector extends Writable {
  readonly limit: number;
  private readonly chunks: Buffer[] = [];
  private size = 0;
  private readonly onOverflow: (() => void) | null;
  /** Set when the body went over the limit. */
  failure: BodyError | null = null;
  private readonly settled: Promise<void>;

  constructor(limit: number, onOverflow?: () => void) {
    super();
    this.limit = limit;
    this.onOverflow = onOverflow ?? null;
    // A pool that aborts destroys its sink with the reason: that is reported by forward(), not here.
    this.on("error", ignore);
    this.settled = new Promise<void>((resolve) => {
      this.once("finish", resolve);
      this.once("close", resolve);
    });
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    if (this.failure !== null) {
      cb();
      return;
    }
    this.size += chunk.length;
    if (this.size > this.limit) {
      this.failure = new BodyError("too_large", `the body exceeds ${this.limit} bytes`);
      this.chunks.length = 0;
      // Not from inside the pool's write(): cancelling there would re-enter its parser.
      if (this.onOverflow !== null) process.nextTick(this.onOverflow);
    } else this.chunks.push(chunk);
    cb();
  }

  /** Resolves once the body ended (or the collector was destroyed). */
  done(): Promise<void> {
    return this.settled;
  }

  /** The bytes collected. */
  body(): Buffer {
    return this.chunks.length === 1 ? this.chunks[0]! : Buffer.concat(this.chunks, this.size);
  }

  get bytes(): number {
    return this.size;
  }
}

/**
 * A pass-through to `dest` (the client response) that counts bytes: once more than `limit` went by it
 * sets `exceeded`, stops passing bytes on and calls `onExceeded` once — the caller cancels the upstream
 * request and resets the response (its head is out, so it must not look complete). Backpressure is
 * passed on; trailers too (gRPC).
 */
export class LimitedWritable extends Writable {
  private readonly dest: Writable;
  private readonly limit: number;
  private readonly onExceeded: () => void;
  private seen = 0;
  exceeded = false;

  constructor(dest: Writable, limit: number, onExceeded: () => void) {
    super();
    this.dest = dest;
    this.limit = limit;
    this.onExceeded = onExceeded;
    this.on("error", ignore);
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    if (this.exceeded) {
      cb();
      return;
    }
    this.seen += chunk.length;
    if (this.seen > this.limit) {
      this.exceeded = true;
      process.nextTick(this.onExceeded); // not from inside the pool's write() (re-entrancy)
      cb();
      return;
    }
    if (this.dest.write(chunk) || this.dest.destroyed) cb();
    else this.dest.once("drain", () => cb());
  }

  override _final(cb: (err?: Error | null) => void): void {
    if (!this.exceeded) this.dest.end();
    cb();
  }

  /** HTTP/2 upstreams hand trailers to their sink; they belong to the client response. */
  addTrailers(trailers: Record<string, string>): void {
    (this.dest as Writable & { addTrailers?: (t: Record<string, string>) => void }).addTrailers?.(trailers);
  }
}
