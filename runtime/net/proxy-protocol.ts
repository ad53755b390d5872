/**
 * The PROXY protocol (HAProxy's, versions 1 and 2): a load balancer that forwards TCP — an AWS Network Load
 * Balancer terminating TLS, HAProxy, most cloud load balancers — writes the client's address in front of
 * the connection's first byte. A listener configured for it requires the header on every connection (a
 * connection without one is closed): accepting it only sometimes would let any client that reaches the port
 * name its own address. Pure: `parseProxyHeader` decides from the bytes read so far.
 *
 * Spec: https://www.haproxy.org/download/2.9/doc/proxy-protocol.txt
 */
import { isIPv4, isIPv6 } from "node:net";
import { parseIpInto } from "../decide/authorize.ts";

/** The address a header names (null: use the connection's own — v2 LOCAL, UNKNOWN, UNSPEC, AF_UNIX). */
export interface ProxiedSource {
  readonly address: string;
  readonly port: number;
  readonly family: "IPv4" | "IPv6";
}

export type ProxyHeader =
  /** Not decided yet: read more (the bytes so far are a valid beginning). */
  | { readonly kind: "incomplete" }
  | { readonly kind: "invalid"; readonly reason: string }
  /** `length`: the header's bytes (the connection's own data follows them). */
  | { readonly kind: "ok"; readonly length: number; readonly source: ProxiedSource | null };

/** The version 2 signature (12 bytes). */
export const PROXY_V2_SIGNATURE = Buffer.from([
  0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a,
]);
const V1_PREFIX = Buffer.from("PROXY ");
/** A version 1 line is at most 107 bytes with its CRLF. */
export const PROXY_V1_MAX = 107;
/**
 * Most bytes a version 2 header may take here (16 + addresses + TLVs). The spec lets a sender use up to
 * 64 KiB of TLVs; load balancers send far less (AWS: a VPC endpoint id), and a listener should not buffer
 * 64 KiB per connection before it knows anything.
 */
export const PROXY_V2_MAX = 4096;

const INCOMPLETE: ProxyHeader = Object.freeze({ kind: "incomplete" });
const invalid = (reason: string): ProxyHeader => ({ kind: "invalid", reason });

/** Whether `buf` is a prefix of `of` (or `of` of `buf`'s start). */
function startsLike(buf: Buffer, of: Buffer): boolean {
  const n = Math.min(buf.length, of.length);
  return buf.subarray(0, n).equals(of.subarray(0, n));
}

/** Decides a connection's PROXY header from its first bytes. */
export function parseProxyHeader(buf: Buffer): ProxyHeader {
  if (buf.length === 0) return INCOMPLETE;
  if (startsLike(buf, PROXY_V2_SIGNATURE)) return buf.length < 16 ? INCOMPLETE : parseV2(buf);
  if (startsLike(buf, V1_PREFIX)) return buf.length < V1_PREFIX.length ? INCOMPLETE : parseV1(buf);
  return invalid("the connection does not start with a PROXY protocol header");
}

const PORT = /^(?:0|[1-9]\d{0,4})$/;

function parseV1(buf: Buffer): ProxyHeader {
  const end = buf.indexOf("\r\n");
  if (end === -1) {
    if (buf.length >= PROXY_V1_MAX) return invalid(`a version 1 header is longer than ${PROXY_V1_MAX} bytes`);
    // A bare LF or any byte outside printable ASCII is never part of a header.
    for (const b of buf)
      if (b !== 0x0d && (b < 0x20 || b > 0x7e)) return invalid("a version 1 header holds a control byte");
    return INCOMPLETE;
  }
  if (end + 2 > PROXY_V1_MAX) return invalid(`a version 1 header is longer than ${PROXY_V1_MAX} bytes`);
  const line = buf.subarray(0, end).toString("latin1");
  if (/[^\x20-\x7e]/.test(line)) return invalid("a version 1 header holds a control byte");
  const parts = line.split(" ");
  const length = end + 2;
  if (parts[1] === "UNKNOWN") return { kind: "ok", length, source: null };
  if (parts.length !== 6)
    return invalid("a version 1 header needs: PROXY TCP4|TCP6 <src> <dst> <sport> <dport>");
  const [, proto, src, dst, sport, dport] = parts as [string, string, string, string, string, string];
  const check = proto === "TCP4" ? isIPv4 : proto === "TCP6" ? isIPv6 : null;
  if (check === null)
    return invalid(`unknown version 1 protocol ${JSON.stringify(proto)} (TCP4, TCP6 or UNKNOWN)`);
  if (!check(src) || !check(dst))
    return invalid(
      `a version 1 ${proto} header names an address that is not ${proto === "TCP4" ? "IPv4" : "IPv6"}`,
    );
  for (const p of [sport, dport])
    if (!PORT.test(p) || Number(p) > 65535)
      return invalid(`a version 1 header names a port that is not one (${JSON.stringify(p)})`);
  if (proto === "TCP4")
    return { kind: "ok", length, source: { address: src, port: Number(sport), family: "IPv4" } };
  // One client, one address text: an IPv6 address is written as version 2 writes it (RFC 5952), whatever
  // spelling the line used (0:0:0:0:0:0:0:1, 0000::1, upper case) — logs, the forwarded headers and
  // `${client.ip}` templates see the text. A zone belongs to a link of the sender's, not to a client's address.
  const words: [number, number, number, number] = [0, 0, 0, 0];
  if (src.includes("%") || !parseIpInto(src, words))
    return invalid("a version 1 TCP6 header names a scoped or unreadable IPv6 address");
  const bytes = Buffer.alloc(16);
  for (let i = 0; i < 4; i++) bytes.writeUInt32BE(words[i]! >>> 0, 4 * i);
  return { kind: "ok", length, source: { address: ipv6(bytes), port: Number(sport), family: "IPv6" } };
}

function parseV2(buf: Buffer): ProxyHeader {
  const verCmd = buf[12]!;
  if (verCmd >> 4 !== 2) return invalid(`unknown PROXY protocol version ${verCmd >> 4}`);
  const command = verCmd & 0x0f;
  if (command > 1) return invalid(`unknown version 2 command ${command} (LOCAL or PROXY)`);
  const famProto = buf[13]!;
  const length = 16 + buf.readUInt16BE(14);
  if (length > PROXY_V2_MAX)
    return invalid(`a version 2 header of ${length} bytes is longer than ${PROXY_V2_MAX}`);
  if (buf.length < length) return INCOMPLETE;
  // LOCAL: the load balancer's own connection (a health check); the addresses, if any, are ignored.
  if (command === 0) return { kind: "ok", length, source: null };
  const family = famProto >> 4;
  const transport = famProto & 0x0f;
  if (family === 0) return { kind: "ok", length, source: null }; // UNSPEC: use the connection's own
  if (transport !== 1) return invalid("a version 2 header names a transport other than TCP (STREAM)");
  if (family === 3) return { kind: "ok", length, source: null }; // AF_UNIX: no network address
  const body = buf.subarray(16, length);
  if (family === 1) {
    if (body.length < 12) return invalid("a version 2 TCP over IPv4 header is shorter than its addresses");
    return {
      kind: "ok",
      length,
      source: { address: [...body.subarray(0, 4)].join("."), port: body.readUInt16BE(8), family: "IPv4" },
    };
  }
  if (family === 2) {
    if (body.length < 36) return invalid("a version 2 TCP over IPv6 header is shorter than its addresses");
    return {
      kind: "ok",
      length,
      source: { address: ipv6(body.subarray(0, 16)), port: body.readUInt16BE(32), family: "IPv6" },
    };
  }
  return invalid(`unknown version 2 address family ${family}`);
}

/** An IPv6 address as Node writes a peer's (RFC 5952: lower case, longest zero run as `::`). */
function ipv6(b: Buffer): string {
  const groups: number[] = [];
  for (let i = 0; i < 16; i += 2) groups.push(b.readUInt16BE(i));
  // An IPv4-mapped address is written as Node writes it for a dual-stack socket.
  if (groups.slice(0, 5).every((g) => g === 0) && groups[5] === 0xffff)
    return `::ffff:${b[12]}.${b[13]}.${b[14]}.${b[15]}`;
  let best = -1;
  let bestLen = 1;
  for (let i = 0; i < 8;) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLen) [best, bestLen] = [i, j - i];
    i = j;
  }
  const hex = groups.map((g) => g.toString(16));
  if (best === -1) return hex.join(":");
  return `${hex.slice(0, best).join(":")}::${hex.slice(best + bestLen).join(":")}`;
}
