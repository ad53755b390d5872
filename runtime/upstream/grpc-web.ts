/**
 * gRPC-Web at the gateway (grpc/grpc PROTOCOL-WEB.md), what Envoy's `grpc_web` filter does: a browser's
 * gRPC-Web call (HTTP/1.1 or HTTP/2, `application/grpc-web[+proto]` or, base64-encoded,
 * `application/grpc-web-text[+proto]`) is sent to a gRPC service as the gRPC call it encodes, and the
 * answer comes back in the browser's form — the trailers (`grpc-status`, `grpc-message`, metadata) as a
 * last length-prefixed frame with the 0x80 flag inside the body, which a browser can read where it
 * cannot read HTTP trailers.
 *
 * - The messages themselves are the same length-prefixed frames in both protocols: the binary form
 *   passes through untouched; the text form is decoded (request) and encoded (response) as base64.
 * - A trailers-only answer (the status in the response headers, no body) stays one: gRPC-Web clients
 *   read the status from the headers then.
 * - A text-form request body is read whole and checked before anything is sent (browsers send gRPC-Web
 *   requests whole: unary and server-streaming calls); a body that is not base64 is refused.
 */
import { Writable } from "node:stream";
import { isGrpc } from "./grpc.ts";

/** How a gRPC-Web body is carried: as binary frames, or base64 text. */
export type GrpcWebMode = "binary" | "text";

export interface GrpcWebCall {
  readonly mode: GrpcWebMode;
  /** The content-type's suffix after `grpc-web` / `grpc-web-text`: "" or e.g. "+proto". */
  readonly suffix: string;
}

const BINARY = "application/grpc-web";
const TEXT = "application/grpc-web-text";

/**
 * The gRPC-Web call a request content-type names, or null: `application/grpc-web`,
 * `application/grpc-web+proto`, `application/grpc-web-text`, `application/grpc-web-text+proto` (any
 * `+format`; case-insensitive; parameters after `;` ignored).
 */
export function grpcWebCall(contentType: string | undefined): GrpcWebCall | null {
  if (contentType === undefined || contentType.length < BINARY.length) return null;
  const type = contentType.split(";", 1)[0]!.trim().toLowerCase();
  const mode: GrpcWebMode | null = type.startsWith(TEXT) ? "text" : type.startsWith(BINARY) ? "binary" : null;
  if (mode === null) return null;
  const suffix = type.slice(mode === "text" ? TEXT.length : BINARY.length);
  if (suffix !== "" && !/^\+[a-z0-9._-]{1,32}$/.test(suffix)) return null;
  return { mode, suffix };
}

/** The content-type of a gRPC-Web answer in the call's form, with `suffix` (default: the call's). */
export function grpcWebContentType(call: GrpcWebCall, suffix = call.suffix): string {
  return `${call.mode === "text" ? TEXT : BINARY}${suffix}`;
}

/**
 * The upstream request's headers for the gRPC call: `content-type: application/grpc<suffix>`,
 * `te: trailers`; the length goes when the body changes size (text form), and the browser-only
 * `x-grpc-web` marker is not forwarded.
 */
export function grpcWebRequestHeaders(headers: Record<string, string | string[]>, call: GrpcWebCall): void {
  headers["content-type"] = `application/grpc${call.suffix}`;
  headers.te = "trailers";
  delete headers["x-grpc-web"];
  if (call.mode === "text") delete headers["content-length"];
}

/**
 * The response headers for the browser: the gRPC content-type back in the call's form (a response that is
 * not gRPC — an upstream's HTTP error page — keeps its own), no length (the body gains the trailer frame;
 * base64 changes its size). Returns false for an answer that declares a type other than gRPC: its body is
 * then sent as it is (GrpcWebResponse would base64 an error page still labelled text/html).
 */
export function grpcWebResponseHeaders(
  headers: Record<string, string | string[] | undefined>,
  call: GrpcWebCall,
): boolean {
  const type = headers["content-type"];
  delete headers["content-length"];
  if (typeof type === "string" && isGrpc(type)) {
    const suffix = type.slice("application/grpc".length).split(";", 1)[0]!.trim();
    headers["content-type"] = grpcWebContentType(call, suffix.startsWith("+") ? suffix : call.suffix);
    return true;
  }
  return type === undefined;
}

/** Base64 in groups of four; a group with padding ends a segment, and another may follow. */
const BASE64_SEGMENTS = /^(?:[A-Za-z0-9+/]{4}|[A-Za-z0-9+/]{3}=|[A-Za-z0-9+/]{2}==)*$/;

/**
 * Decodes a text-form request body: base64, possibly several padded segments one after another (a
 * client may encode each message on its own), each decoded on its own. Null when it is not base64 —
 * Node's decoder would skip the characters it does not know and forward something else than the client
 * sent.
 */
export function decodeGrpcWebText(body: Buffer): Buffer | null {
  const text = body.toString("latin1").replace(/[\r\n]/g, "");
  if (!BASE64_SEGMENTS.test(text)) return null;
  return Buffer.concat(text.split(/(?<==)(?!=)/).map((segment) => Buffer.from(segment, "base64")));
}

/** The trailer frame: flag 0x80, a 4-byte length, then `name: value\r\n` lines (names lower-case). */
export function grpcWebTrailerFrame(trailers: Record<string, string>): Buffer {
  let text = "";
  for (const [name, value] of Object.entries(trailers)) text += `${name.toLowerCase()}: ${value}\r\n`;
  const payload = Buffer.from(text, "latin1");
  const head = Buffer.alloc(5);
  head[0] = 0x80;
  head.writeUInt32BE(payload.length, 1);
  return Buffer.concat([head, payload]);
}

/** Where the browser's response body goes: what a proxy writes a response to. */
export interface ResponseSink {
  write(chunk: Buffer): boolean;
  end(): unknown;
  once(event: "drain", listener: () => void): unknown;
  destroy(error?: Error): unknown;
}

/**
 * The response body in the browser's form: the upstream's frames (base64 in the text form, kept
 * unpadded until the end, so the body is one base64 text), and at the end the trailers the pool hands
 * over (`addTrailers`, as to an HTTP response) as the trailer frame. A response that ends without
 * trailers gets no trailer frame: the client reports the missing status, nothing is invented.
 */
export class GrpcWebResponse extends Writable {
  private trailers: Record<string, string> | null = null;
  /** Text form: the 0–2 bytes not yet encoded (base64 encodes 3 at a time). */
  private pending: Buffer = Buffer.alloc(0);

  private readonly sink: ResponseSink;
  private readonly mode: GrpcWebMode;

  constructor(sink: ResponseSink, mode: GrpcWebMode) {
    super();
    this.sink = sink;
    this.mode = mode;
  }

  /** The upstream's trailers (called before end, as on an HTTP response). */
  addTrailers(trailers: Record<string, string>): void {
    this.trailers = { ...trailers };
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    const out = this.encode(chunk, false);
    if (out.length === 0 || this.sink.write(out)) callback();
    else this.sink.once("drain", () => callback());
  }

  override _final(callback: (error?: Error | null) => void): void {
    const frame = this.trailers !== null ? grpcWebTrailerFrame(this.trailers) : Buffer.alloc(0);
    const out = this.encode(frame, true);
    if (out.length > 0) this.sink.write(out);
    this.sink.end();
    callback();
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    if (error) this.sink.destroy(error);
    callback(error);
  }

  private encode(chunk: Buffer, last: boolean): Buffer {
    if (this.mode === "binary") return chunk;
    const all = this.pending.length ? Buffer.concat([this.pending, chunk]) : chunk;
    const whole = last ? all.length : all.length - (all.length % 3);
    this.pending = Buffer.from(all.subarray(whole));
    return whole === 0 ? Buffer.alloc(0) : Buffer.from(all.subarray(0, whole).toString("base64"), "latin1");
  }
}
