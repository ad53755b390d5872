/**
 * A raw HTTP/2 client (h2c with prior knowledge) for tests that must send what Node's client refuses to:
 * header blocks written as HPACK literals exactly as given (uppercase names, CR/LF/NUL, connection-specific
 * headers, duplicate or misplaced pseudo-headers), DATA and RST_STREAM frames in one write or spaced out.
 * It reads back, per stream, the :status of each HEADERS frame (static-table or literal, Huffman digits)
 * and RST_STREAM codes — enough to tell a refusal from a forward.
 */
import net from "node:net";

function hpackInt(value: number, prefixBits: number, first: number): number[] {
  const max = (1 << prefixBits) - 1;
  if (value < max) return [first | value];
  const out = [first | max];
  value -= max;
  while (value >= 128) {
    out.push((value % 128) + 128);
    value = Math.floor(value / 128);
  }
  out.push(value);
  return out;
}
function str(s: string | Buffer): Buffer {
  const b = typeof s === "string" ? Buffer.from(s, "latin1") : s;
  return Buffer.concat([Buffer.from(hpackInt(b.length, 7, 0)), b]);
}
/** Literal header field without indexing, new name (RFC 7541 §6.2.2), for each pair in order. */
export function block(fields: [string, string][]): Buffer {
  return Buffer.concat(fields.flatMap(([n, v]) => [Buffer.from([0x00]), str(n), str(v)]));
}
export function frame(type: number, flags: number, stream: number, payload: Buffer): Buffer {
  const h = Buffer.alloc(9);
  h.writeUIntBE(payload.length, 0, 3);
  h[3] = type;
  h[4] = flags;
  h.writeUInt32BE(stream, 5);
  return Buffer.concat([h, payload]);
}
const PREFACE = Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
const STATIC_STATUS: Record<number, number> = { 8: 200, 9: 204, 10: 206, 11: 304, 12: 400, 13: 404, 14: 500 };
// Huffman codes of the digits (RFC 7541 Appendix B), enough to read a :status.
const DIGITS: [string, string][] = [
  ["00000", "0"],
  ["00001", "1"],
  ["00010", "2"],
  ["011001", "3"],
  ["011010", "4"],
  ["011011", "5"],
  ["011100", "6"],
  ["011101", "7"],
  ["011110", "8"],
  ["011111", "9"],
];
function huffDigits(b: Buffer): string {
  let bits = "";
  for (const x of b) bits += x.toString(2).padStart(8, "0");
  let out = "";
  let i = 0;
  while (out.length < 3) {
    const hit = DIGITS.find(([c]) => bits.startsWith(c, i));
    if (!hit) break;
    out += hit[1];
    i += hit[0].length;
  }
  return out;
}
function statusOf(blk: Buffer): number | string {
  const b0 = blk[0]!;
  if (b0 & 0x80) return STATIC_STATUS[b0 & 0x7f] ?? `idx${b0 & 0x7f}`;
  // literal with name index 8 (:status): 0x48 (with indexing) or 0x08 / 0x18
  if ((b0 & 0x3f) === 8 || (b0 & 0x0f) === 8) {
    const len = blk[1]! & 0x7f;
    const v = blk.subarray(2, 2 + len);
    return Number(blk[1]! & 0x80 ? huffDigits(v) : v.toString());
  }
  return `?${b0.toString(16)}`;
}

export interface RawH2Result {
  /** Per stream: the :status of its first HEADERS, "rst:<code>" on RST_STREAM. */
  streams: Record<number, (number | string)[]>;
  goaway: number | null;
  data: Record<number, string>;
}

/**
 * Sends the preface, an empty SETTINGS and `frames` (a number waits that many ms; consecutive buffers should
 * be concatenated by the caller when they must arrive in one read), then collects for `ms` — or, given
 * `settled`, until what was collected satisfies it (`ms` at most) and 300 ms more.
 */
export function rawH2(
  port: number,
  frames: (Buffer | number)[],
  ms = 600,
  /** Opens the connection and calls `ready` once it can be written (default: h2c on 127.0.0.1). */
  open: (port: number, ready: () => void) => net.Socket = (p, ready) => net.connect(p, "127.0.0.1", ready),
  settled?: (r: RawH2Result) => boolean,
): Promise<RawH2Result> {
  return new Promise((resolve) => {
    const res: RawH2Result = { streams: {}, goaway: null, data: {} };
    const s = open(port, () => {
      s.write(Buffer.concat([PREFACE, frame(4, 0, 0, Buffer.alloc(0))]));
      void (async () => {
        for (const f of frames) {
          if (typeof f === "number") await new Promise((r) => setTimeout(r, f));
          else s.write(f);
        }
      })();
    });
    let buf = Buffer.alloc(0);
    s.on("data", (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      while (buf.length >= 9) {
        const len = buf.readUIntBE(0, 3);
        if (buf.length < 9 + len) break;
        const type = buf[3]!;
        const flags = buf[4]!;
        const id = buf.readUInt32BE(5) & 0x7fffffff;
        const p = buf.subarray(9, 9 + len);
        buf = buf.subarray(9 + len);
        if (type === 4 && !(flags & 1)) s.write(frame(4, 1, 0, Buffer.alloc(0)));
        if (type === 1) {
          let blk = p;
          if (flags & 0x8) blk = blk.subarray(1, blk.length - blk[0]!);
          if (flags & 0x20) blk = blk.subarray(5);
          (res.streams[id] ??= []).push(statusOf(blk));
        }
        if (type === 0) res.data[id] = (res.data[id] ?? "") + p.toString("latin1");
        if (type === 3) (res.streams[id] ??= []).push(`rst:${p.readUInt32BE(0)}`);
        if (type === 7) res.goaway = p.readUInt32BE(4);
      }
      if (!lingering && settled?.(res)) {
        // Then 300 ms more for what may follow (a GOAWAY).
        lingering = true;
        clearTimeout(timer);
        setTimeout(() => (s.destroy(), resolve(res)), 300);
      }
    });
    s.on("error", () => {});
    let lingering = false;
    const timer = setTimeout(() => (s.destroy(), resolve(res)), ms);
  });
}

export const END_STREAM = 0x1;
export const END_HEADERS = 0x4;
/** RST_STREAM with `code` (default CANCEL). */
export function rst(stream: number, code = 8): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(code);
  return frame(3, 0, stream, b);
}
export const headers = (stream: number, fields: [string, string][], end = true) =>
  frame(1, END_HEADERS | (end ? END_STREAM : 0), stream, block(fields));
export const data = (stream: number, payload: string, end = true) =>
  frame(0, end ? END_STREAM : 0, stream, Buffer.from(payload, "latin1"));
