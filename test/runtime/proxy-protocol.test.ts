/**
 * The PROXY protocol header parser (runtime/net/proxy-protocol.ts), table by table: version 1 and 2 headers
 * that name a client, those that leave the connection's own address (LOCAL, UNKNOWN, UNSPEC, AF_UNIX),
 * beginnings that need more bytes, and malformed headers — each refused with its reason.
 */
import { describe, expect, it } from "vitest";
import {
  PROXY_V1_MAX,
  PROXY_V2_MAX,
  PROXY_V2_SIGNATURE,
  parseProxyHeader,
} from "../../runtime/net/proxy-protocol.ts";

/** A version 2 header: version/command byte, family/transport byte, the address block and TLVs. */
function v2(verCmd: number, famProto: number, body: Buffer | number[] = []): Buffer {
  const b = Buffer.from(body);
  const head = Buffer.alloc(4);
  head[0] = verCmd;
  head[1] = famProto;
  head.writeUInt16BE(b.length, 2);
  return Buffer.concat([PROXY_V2_SIGNATURE, head, b]);
}
const ipv4Block = (src: number[], dst: number[], sport: number, dport: number) => {
  const b = Buffer.alloc(12);
  Buffer.from(src).copy(b, 0);
  Buffer.from(dst).copy(b, 4);
  b.writeUInt16BE(sport, 8);
  b.writeUInt16BE(dport, 10);
  return b;
};
const ipv6Block = (src: number[], sport: number) => {
  const b = Buffer.alloc(36);
  Buffer.from(src).copy(b, 0);
  b.writeUInt16BE(sport, 32);
  b.writeUInt16BE(443, 34);
  return b;
};
const AFTER = Buffer.from("GET / HTTP/1.1\r\n");

describe("PROXY protocol headers that name the client", () => {
  it.each<[string, Buffer, { address: string; port: number; family: string }]>([
    [
      "v1_tcp4",
      Buffer.from("PROXY TCP4 203.0.113.7 10.0.0.1 5555 443\r\n"),
      { address: "203.0.113.7", port: 5555, family: "IPv4" },
    ],
    [
      "v1_tcp6",
      Buffer.from("PROXY TCP6 2001:db8::7 2001:db8::1 65535 443\r\n"),
      { address: "2001:db8::7", port: 65535, family: "IPv6" },
    ],
    // Written as version 2 writes the same bytes (RFC 5952), whatever the line's spelling.
    [
      "v1_tcp6_spelled_in_full_in_upper_case",
      Buffer.from("PROXY TCP6 2001:0DB8:0000:0000:0000:0000:0000:0007 ::1 1 2\r\n"),
      { address: "2001:db8::7", port: 1, family: "IPv6" },
    ],
    [
      "v1_tcp6_ipv4_mapped_in_hex",
      Buffer.from("PROXY TCP6 ::FFFF:0102:0304 ::1 1 2\r\n"),
      { address: "::ffff:1.2.3.4", port: 1, family: "IPv6" },
    ],
    [
      "v1_port_0",
      Buffer.from("PROXY TCP4 1.2.3.4 5.6.7.8 0 80\r\n"),
      { address: "1.2.3.4", port: 0, family: "IPv4" },
    ],
    [
      "v2_tcp4",
      v2(0x21, 0x11, ipv4Block([198, 51, 100, 9], [10, 0, 0, 1], 40000, 443)),
      { address: "198.51.100.9", port: 40000, family: "IPv4" },
    ],
    [
      "v2_tcp4_with_tlvs_after_the_addresses",
      v2(0x21, 0x11, [
        ...ipv4Block([198, 51, 100, 9], [10, 0, 0, 1], 1, 2),
        0xea,
        0x00,
        0x03,
        0x01,
        0x76,
        0x70,
      ]),
      { address: "198.51.100.9", port: 1, family: "IPv4" },
    ],
    [
      "v2_tcp6_compressed",
      v2(0x21, 0x21, ipv6Block([0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7], 8080)),
      { address: "2001:db8::7", port: 8080, family: "IPv6" },
    ],
    [
      "v2_tcp6_without_zero_run",
      v2(0x21, 0x21, ipv6Block([0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 2, 0, 3, 0, 4, 0, 5, 0, 6], 1)),
      { address: "2001:db8:1:2:3:4:5:6", port: 1, family: "IPv6" },
    ],
    [
      "v2_tcp6_ipv4_mapped",
      v2(0x21, 0x21, ipv6Block([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 203, 0, 113, 7], 2)),
      { address: "::ffff:203.0.113.7", port: 2, family: "IPv6" },
    ],
  ])("reads_%s", (_name, header, source) => {
    // The connection's own bytes follow the header: the length says where they start.
    const r = parseProxyHeader(Buffer.concat([header, AFTER]));
    expect(r).toEqual({ kind: "ok", length: header.length, source });
  });
});

describe("PROXY protocol headers that leave the connection's own address", () => {
  it.each<[string, Buffer]>([
    ["v1_unknown", Buffer.from("PROXY UNKNOWN\r\n")],
    [
      "v1_unknown_with_addresses",
      Buffer.from("PROXY UNKNOWN ffff:f...f:ffff ffff:f...f:ffff 65535 65535\r\n"),
    ],
    ["v2_local_health_check", v2(0x20, 0x00)],
    ["v2_local_with_addresses_ignored", v2(0x20, 0x11, ipv4Block([1, 2, 3, 4], [5, 6, 7, 8], 1, 2))],
    ["v2_proxy_unspec", v2(0x21, 0x00)],
    ["v2_proxy_af_unix", v2(0x21, 0x31, Buffer.alloc(216))],
  ])("reads_%s", (_name, header) => {
    expect(parseProxyHeader(Buffer.concat([header, AFTER]))).toEqual({
      kind: "ok",
      length: header.length,
      source: null,
    });
  });
});

describe("beginnings that need more bytes", () => {
  const full = v2(0x21, 0x11, ipv4Block([1, 2, 3, 4], [5, 6, 7, 8], 1, 2));
  it.each<[string, Buffer]>([
    ["nothing", Buffer.alloc(0)],
    ["part_of_proxy", Buffer.from("PRO")],
    ["a_v1_line_without_its_end", Buffer.from("PROXY TCP4 1.2.3.4 5.6.7.8 1 2")],
    ["a_v1_line_ending_in_cr", Buffer.from("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r")],
    ["part_of_the_v2_signature", PROXY_V2_SIGNATURE.subarray(0, 7)],
    ["a_v2_header_without_its_length", full.subarray(0, 15)],
    ["a_v2_header_without_all_its_addresses", full.subarray(0, full.length - 1)],
  ])("waits_for_%s", (_name, bytes) => {
    expect(parseProxyHeader(bytes)).toEqual({ kind: "incomplete" });
  });
});

describe("malformed headers", () => {
  it.each<[string, Buffer, RegExp]>([
    ["an_http_request", Buffer.from("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), /does not start with a PROXY/],
    ["tls_client_hello", Buffer.from([0x16, 0x03, 0x01, 0x02, 0x00]), /does not start with a PROXY/],
    ["lower_case_proxy", Buffer.from("proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n"), /does not start with a PROXY/],
    ["v1_unknown_protocol", Buffer.from("PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n"), /unknown version 1 protocol/],
    ["v1_missing_a_port", Buffer.from("PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n"), /needs: PROXY/],
    ["v1_double_space", Buffer.from("PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n"), /needs: PROXY/],
    ["v1_tcp4_with_an_ipv6_source", Buffer.from("PROXY TCP4 ::1 5.6.7.8 1 2\r\n"), /not IPv4/],
    ["v1_tcp6_with_an_ipv4_source", Buffer.from("PROXY TCP6 1.2.3.4 ::1 1 2\r\n"), /not IPv6/],
    ["v1_tcp6_with_a_zone", Buffer.from("PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n"), /scoped or unreadable/],
    ["v1_address_with_leading_zero", Buffer.from("PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n"), /not IPv4/],
    ["v1_address_out_of_range", Buffer.from("PROXY TCP4 1.2.3.256 5.6.7.8 1 2\r\n"), /not IPv4/],
    ["v1_port_above_65535", Buffer.from("PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n"), /port that is not one/],
    [
      "v1_port_with_leading_zero",
      Buffer.from("PROXY TCP4 1.2.3.4 5.6.7.8 080 2\r\n"),
      /port that is not one/,
    ],
    ["v1_negative_port", Buffer.from("PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n"), /port that is not one/],
    ["v1_bare_lf", Buffer.from("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\nGET"), /control byte/],
    ["v1_nul_byte", Buffer.from("PROXY TCP4 1.2.3.4\x00 5.6.7.8 1 2\r\n"), /control byte/],
    ["v1_longer_than_107_bytes", Buffer.from(`PROXY UNKNOWN ${"a".repeat(PROXY_V1_MAX)}`), /longer than 107/],
    [
      "v1_line_ending_past_107_bytes",
      Buffer.from(`PROXY UNKNOWN ${"a".repeat(PROXY_V1_MAX)}\r\n`),
      /longer than 107/,
    ],
    [
      "v2_version_1",
      v2(0x11, 0x11, ipv4Block([1, 2, 3, 4], [5, 6, 7, 8], 1, 2)),
      /unknown PROXY protocol version 1/,
    ],
    ["v2_version_3", v2(0x31, 0x11, ipv4Block([1, 2, 3, 4], [5, 6, 7, 8], 1, 2)), /version 3/],
    [
      "v2_command_2",
      v2(0x22, 0x11, ipv4Block([1, 2, 3, 4], [5, 6, 7, 8], 1, 2)),
      /unknown version 2 command 2/,
    ],
    ["v2_udp_over_ipv4", v2(0x21, 0x12, ipv4Block([1, 2, 3, 4], [5, 6, 7, 8], 1, 2)), /other than TCP/],
    ["v2_ipv4_addresses_cut_short", v2(0x21, 0x11, Buffer.alloc(11)), /shorter than its addresses/],
    ["v2_ipv6_addresses_cut_short", v2(0x21, 0x21, Buffer.alloc(35)), /shorter than its addresses/],
    ["v2_unknown_family", v2(0x21, 0x41, Buffer.alloc(12)), /unknown version 2 address family 4/],
    [
      "v2_longer_than_the_bound",
      (() => {
        const h = v2(0x21, 0x11, ipv4Block([1, 2, 3, 4], [5, 6, 7, 8], 1, 2));
        h.writeUInt16BE(PROXY_V2_MAX, 14); // declares more than the bound: refused before it is buffered
        return h.subarray(0, 16);
      })(),
      /longer than 4096/,
    ],
  ])("refuses_%s", (_name, bytes, reason) => {
    const r = parseProxyHeader(bytes);
    expect(r.kind).toBe("invalid");
    expect(r.kind === "invalid" ? r.reason : "").toMatch(reason);
  });
});
