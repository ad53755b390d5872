/**
 * The PROXY protocol parser's properties over generated headers (the tables in proxy-protocol.test.ts
 * name the cases): a header names the same client in version 1 as in version 2, whatever spelling of
 * the address the version 1 line uses; a decision never changes as more bytes arrive (what is refused
 * stays refused, what is accepted is accepted with the same length and source, and a header is never
 * accepted before its last byte); and whatever the bytes, the parser answers — it never throws.
 */
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { PROXY_V2_SIGNATURE, parseProxyHeader } from "../../runtime/net/proxy-protocol.ts";

const SEED = Number(process.env.FC_SEED ?? 20261205);

function v2(
  family: 1 | 2,
  src: number[],
  dst: number[],
  sport: number,
  dport: number,
  tlv: number[],
): Buffer {
  const n = src.length;
  const body = Buffer.alloc(2 * n + 4 + tlv.length);
  Buffer.from(src).copy(body, 0);
  Buffer.from(dst).copy(body, n);
  body.writeUInt16BE(sport, 2 * n);
  body.writeUInt16BE(dport, 2 * n + 2);
  Buffer.from(tlv).copy(body, 2 * n + 4);
  const head = Buffer.from([0x21, (family << 4) | 1, 0, 0]);
  head.writeUInt16BE(body.length, 2);
  return Buffer.concat([PROXY_V2_SIGNATURE, head, body]);
}

/** The 16 bytes as eight groups, in a spelling picked by `style` (all of them valid RFC 4291 text). */
function spell(bytes: number[], style: number): string {
  const groups = Array.from({ length: 8 }, (_, i) => (bytes[2 * i]! << 8) | bytes[2 * i + 1]!);
  const hex = groups.map((g) => (style & 1 ? g.toString(16).toUpperCase() : g.toString(16)));
  if (style & 2) return hex.map((h) => h.padStart(4, "0")).join(":"); // full, with leading zeros
  if (style & 4 && groups.slice(0, 6).every((g, i) => (i === 5 ? g === 0xffff : g === 0)))
    return `::${hex[5]}:${bytes.slice(12).join(".")}`; // IPv4-mapped, dotted
  // The first run of zero groups (any length ≥ 1) compressed — not always the longest.
  const start = groups.indexOf(0);
  if (start < 0) return hex.join(":");
  let end = start;
  while (end < 8 && groups[end] === 0) end++;
  return `${hex.slice(0, start).join(":")}::${hex.slice(end).join(":")}`;
}

const byte = fc.integer({ min: 0, max: 255 });
const port = fc.integer({ min: 0, max: 65535 });
const ipv4 = fc.array(byte, { minLength: 4, maxLength: 4 });
// Addresses with zero runs and IPv4-mapped ones come up often: that is where spellings differ.
const ipv6 = fc.oneof(
  fc.array(byte, { minLength: 16, maxLength: 16 }),
  fc.array(fc.constantFrom(0, 0, 0, 1, 255), { minLength: 16, maxLength: 16 }),
  ipv4.map((v4) => [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 255, 255, ...v4]),
);
const tlv = fc.array(byte, { maxLength: 12 });

/** A valid header (either version) and the source it must name; connection data follows it. */
const header = fc.oneof(
  fc.tuple(ipv4, ipv4, port, port).map(([s, d, sp, dp]) => ({
    v1: Buffer.from(`PROXY TCP4 ${s.join(".")} ${d.join(".")} ${sp} ${dp}\r\n`, "latin1"),
    v2: (t: number[]) => v2(1, s, d, sp, dp, t),
    port: sp,
  })),
  fc.tuple(ipv6, ipv6, port, port, fc.nat(7), fc.nat(7)).map(([s, d, sp, dp, ss, ds]) => ({
    v1: Buffer.from(`PROXY TCP6 ${spell(s, ss)} ${spell(d, ds)} ${sp} ${dp}\r\n`, "latin1"),
    v2: (t: number[]) => v2(2, s, d, sp, dp, t),
    port: sp,
  })),
);

describe("proxy protocol properties", () => {
  it("names_the_same_client_in_version_1_as_in_version_2_whatever_the_spelling", () => {
    fc.assert(
      fc.property(header, tlv, ({ v1, v2: build, port: p }, t) => {
        const one = parseProxyHeader(Buffer.concat([v1, Buffer.from("GET /")]));
        const two = parseProxyHeader(Buffer.concat([build(t), Buffer.from("GET /")]));
        expect(one, v1.toString("latin1")).toMatchObject({ kind: "ok", length: v1.length });
        expect(two).toMatchObject({ kind: "ok" });
        if (one.kind !== "ok" || two.kind !== "ok") return;
        expect(one.source, v1.toString("latin1")).toEqual(two.source);
        expect(one.source?.port).toBe(p);
      }),
      { numRuns: 2000, seed: SEED },
    );
  });

  it("never_decides_before_the_last_byte_nor_changes_a_decision_as_bytes_arrive", () => {
    // Valid headers, and the same with one byte changed, cut at every length.
    const bytes = fc
      .tuple(header, tlv, fc.boolean(), fc.nat(), byte, fc.boolean())
      .map(([h, t, version1, at, b, mutate]) => {
        const buf = Buffer.concat([version1 ? h.v1 : h.v2(t), Buffer.from("GET / HTTP/1.1\r\n")]);
        if (mutate) buf[at % buf.length] = b;
        return buf;
      });
    fc.assert(
      fc.property(bytes, (buf) => {
        const whole = parseProxyHeader(buf);
        let decided: ReturnType<typeof parseProxyHeader> | null = null;
        for (let n = 0; n <= buf.length; n++) {
          const r = parseProxyHeader(buf.subarray(0, n));
          if (decided !== null) {
            // A refusal stays a refusal (its reason may name what the later bytes show); an acceptance stays
            // the same acceptance.
            const where = `at ${n} of ${JSON.stringify(buf.toString("latin1"))}`;
            if (decided.kind === "invalid") expect(r.kind, where).toBe("invalid");
            else expect(r, where).toEqual(decided);
            continue;
          }
          if (r.kind === "ok") expect(n, "accepted before its last byte").toBe(r.length);
          if (r.kind !== "incomplete") decided = r;
        }
        const last = decided ?? { kind: "incomplete" };
        if (last.kind === "invalid") expect(whole.kind).toBe("invalid");
        else expect(last).toEqual(whole);
      }),
      { numRuns: 1000, seed: SEED },
    );
  });

  it("answers_any_bytes_without_throwing", () => {
    const noise = fc.oneof(
      fc.uint8Array({ maxLength: 200 }).map((a) => Buffer.from(a)),
      fc.uint8Array({ maxLength: 120 }).map((a) => Buffer.concat([Buffer.from("PROXY "), Buffer.from(a)])),
      fc.uint8Array({ maxLength: 120 }).map((a) => Buffer.concat([PROXY_V2_SIGNATURE, Buffer.from(a)])),
    );
    fc.assert(
      fc.property(noise, (buf) => {
        const r = parseProxyHeader(buf);
        expect(["ok", "invalid", "incomplete"]).toContain(r.kind);
        if (r.kind === "ok") expect(r.length).toBeLessThanOrEqual(buf.length);
      }),
      { numRuns: 3000, seed: SEED },
    );
  });
});
