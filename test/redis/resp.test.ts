/**
 * The RESP2 parser fed the way TCP delivers: whole, byte by byte, split at every position, in random
 * chunks; big bulk strings in linear time; malformed input refused. And the command encoder.
 */
import { describe, expect, it } from "vitest";
import { RedisProtocolError, RedisReplyError } from "../../runtime/redis/errors.ts";
import { RespParser, encodeCommand, type RespValue } from "../../runtime/redis/resp.ts";

const b = (s: string) => Buffer.from(s, "latin1");

/** Replies and what they parse to (bulk strings as Buffers). */
const CASES: [string, string, RespValue][] = [
  ["simple_string", "+OK\r\n", "OK"],
  ["empty_simple_string", "+\r\n", ""],
  ["utf8_simple_string", "+h\u00c3\u00a9\r\n", "hé"],
  ["error", "-ERR unknown command 'FOO'\r\n", new RedisReplyError("ERR unknown command 'FOO'")],
  ["integer", ":42\r\n", 42],
  ["negative_integer", ":-7\r\n", -7],
  ["zero", ":0\r\n", 0],
  ["max_safe_integer", ":9007199254740991\r\n", 9007199254740991],
  ["integer_beyond_2_53_as_bigint", ":9223372036854775807\r\n", 9223372036854775807n],
  ["bulk", "$5\r\nhello\r\n", b("hello")],
  ["empty_bulk", "$0\r\n\r\n", b("")],
  ["null_bulk", "$-1\r\n", null],
  ["binary_bulk_with_crlf_inside", "$6\r\na\r\n\r\nb\r\n", b("a\r\n\r\nb")],
  ["array", "*2\r\n$3\r\nfoo\r\n:1\r\n", [b("foo"), 1]],
  ["empty_array", "*0\r\n", []],
  ["null_array", "*-1\r\n", null],
  ["nested_arrays", "*3\r\n*2\r\n:1\r\n*1\r\n+x\r\n*0\r\n$-1\r\n", [[1, ["x"]], [], null]],
  [
    "error_inside_array",
    "*2\r\n+OK\r\n-WRONGTYPE Operation against a key holding the wrong kind of value\r\n",
    ["OK", new RedisReplyError("WRONGTYPE Operation against a key holding the wrong kind of value")],
  ],
];

const STREAM = CASES.map((c) => c[1]).join("");
const EXPECTED = CASES.map((c) => c[2]);

function parseAll(chunks: Buffer[]): RespValue[] {
  const out: RespValue[] = [];
  const p = new RespParser((v) => out.push(v));
  for (const c of chunks) p.feed(c);
  expect(p.midReply).toBe(false);
  return out;
}

const normalize = (v: RespValue): unknown =>
  v instanceof RedisReplyError
    ? { error: v.message, prefix: v.prefix }
    : Array.isArray(v)
      ? v.map(normalize)
      : Buffer.isBuffer(v)
        ? { bulk: v.toString("latin1") }
        : v;

describe("resp parser", () => {
  it.each(CASES)("parses_%s_whole", (_name, wire, value) => {
    expect(parseAll([b(wire)]).map(normalize)).toEqual([normalize(value)]);
  });

  it.each(CASES)("parses_%s_fed_byte_by_byte", (_name, wire, value) => {
    const bytes = b(wire);
    const chunks = [...bytes].map((x) => Buffer.from([x]));
    expect(parseAll(chunks).map(normalize)).toEqual([normalize(value)]);
  });

  it("parses_a_stream_of_every_case_split_at_every_position", () => {
    const all = b(STREAM);
    for (let i = 0; i <= all.length; i++) {
      const got = parseAll([all.subarray(0, i), all.subarray(i)]);
      expect(got.map(normalize)).toEqual(EXPECTED.map(normalize));
    }
  });

  it("parses_a_stream_in_random_chunks_in_order", () => {
    const all = Buffer.concat(Array.from({ length: 50 }, () => b(STREAM)));
    let seed = 7;
    const rand = () => (seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
    for (let round = 0; round < 20; round++) {
      const chunks: Buffer[] = [];
      for (let i = 0; i < all.length;) {
        const n = 1 + Math.floor(rand() * 40);
        chunks.push(all.subarray(i, i + n));
        i += n;
      }
      const got = parseAll(chunks);
      expect(got).toHaveLength(EXPECTED.length * 50);
      expect(got.slice(-EXPECTED.length).map(normalize)).toEqual(EXPECTED.map(normalize));
    }
  });

  it("parses_a_64_kib_bulk_string_fed_byte_by_byte", () => {
    const body = Buffer.alloc(64 * 1024, "xyz");
    const wire = Buffer.concat([b(`$${body.length}\r\n`), body, b("\r\n+after\r\n")]);
    const out: RespValue[] = [];
    const p = new RespParser((v) => out.push(v));
    for (let i = 0; i < wire.length; i++) p.feed(wire.subarray(i, i + 1));
    expect(out).toHaveLength(2);
    expect((out[0] as Buffer).equals(body)).toBe(true);
    expect(out[1]).toBe("after");
  });

  it("joins_a_big_bulk_string_once_in_linear_time", () => {
    // 32 MiB in 1 KiB chunks: joining on every chunk would copy ~512 GiB; linear work takes milliseconds.
    const body = Buffer.alloc(32 * 1024 * 1024, 7);
    const wire = Buffer.concat([b(`*2\r\n$${body.length}\r\n`), body, b("\r\n:1\r\n")]);
    const out: RespValue[] = [];
    const p = new RespParser((v) => out.push(v));
    const started = performance.now();
    for (let i = 0; i < wire.length; i += 1024) p.feed(wire.subarray(i, i + 1024));
    const ms = performance.now() - started;
    expect(out).toHaveLength(1);
    const [value, one] = out[0] as [Buffer, number];
    expect(value.length).toBe(body.length);
    expect(value.equals(body)).toBe(true);
    expect(one).toBe(1);
    expect(ms).toBeLessThan(2000);
  });

  it("joins_a_long_reply_line_once_in_linear_time", () => {
    // A 256 KiB error line in 4-byte chunks (a server trickling it): joining on every chunk would copy
    // ~8 GiB and block the event loop for seconds; linear work takes milliseconds.
    const text = "ERR " + "e".repeat(256 * 1024);
    const wire = b(`-${text}\r\n+after\r\n`);
    const out: RespValue[] = [];
    const p = new RespParser((v) => out.push(v), { maxLineBytes: 512 * 1024 });
    const started = performance.now();
    for (let i = 0; i < wire.length; i += 4) p.feed(wire.subarray(i, i + 4));
    const ms = performance.now() - started;
    expect(out).toEqual([new RedisReplyError(text), "after"]);
    expect(ms).toBeLessThan(1000);
    // The line limit still holds for a line that arrives in pieces.
    const q = new RespParser(() => {}, { maxLineBytes: 100 });
    expect(() => {
      for (let i = 0; i < 30; i++) q.feed(b("+aaaaaaa"));
    }).toThrow(RedisProtocolError);
  });

  it.each([
    ["unknown_type_byte", "?what\r\n"],
    ["resp3_map", "%1\r\n+a\r\n+b\r\n"],
    ["bare_lf_line_end", "+OK\n"],
    ["bulk_without_crlf_after_body", "$3\r\nabcde\r\n"],
    ["malformed_length", "$1x\r\nab\r\n"],
    ["negative_length_other_than_minus_one", "$-2\r\n"],
    ["malformed_integer", ":12a\r\n"],
    ["empty_integer", ":\r\n"],
  ])("refuses_%s", (_name, wire) => {
    const p = new RespParser(() => {});
    expect(() => p.feed(b(wire))).toThrow(RedisProtocolError);
    expect(() => p.feed(b("+OK\r\n"))).toThrow(RedisProtocolError); // framing is lost: stays failed
    p.reset();
    const out: RespValue[] = [];
    const q = new RespParser((v) => out.push(v));
    q.feed(b("+OK\r\n"));
    expect(out).toEqual(["OK"]);
  });

  it.each([
    ["bulk_over_limit", "$2000\r\n", { maxBulkBytes: 1000 }],
    ["array_over_limit", "*2000\r\n", { maxArrayLength: 1000 }],
    ["nesting_too_deep", "*1\r\n".repeat(5), { maxDepth: 4 }],
    ["line_too_long_without_end", "+" + "a".repeat(200), { maxLineBytes: 100 }],
  ])("refuses_%s", (_name, wire, limits) => {
    const p = new RespParser(() => {}, limits);
    expect(() => p.feed(b(wire))).toThrow(RedisProtocolError);
  });
});

describe("resp encoder", () => {
  it.each([
    ["text_command", ["SET", "k", "v"], "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n"],
    ["numbers_in_decimal", ["EXPIRE", "k", 10], "*3\r\n$6\r\nEXPIRE\r\n$1\r\nk\r\n$2\r\n10\r\n"],
    ["utf8_length_in_bytes", ["SET", "é", ""], "*3\r\n$3\r\nSET\r\n$2\r\né\r\n$0\r\n\r\n"],
    [
      "buffer_argument",
      ["SET", Buffer.from([0, 13, 10]), "x"],
      "*3\r\n$3\r\nSET\r\n$3\r\n\0\r\n\r\n$1\r\nx\r\n",
    ],
  ] as [string, (string | number | Buffer)[], string][])("encodes_%s", (_name, args, wire) => {
    const out = encodeCommand(args);
    expect(Buffer.from(out as never).toString("utf8")).toBe(wire);
  });

  it.each([[[]], [["SET", Number.NaN]], [["X", Infinity]]] as [(string | number)[]][])(
    "refuses_an_unencodable_command_%#",
    (args) => {
      expect(() => encodeCommand(args)).toThrow(TypeError);
    },
  );

  it("round_trips_through_the_parser_as_an_array_of_bulk_strings", () => {
    const out: RespValue[] = [];
    new RespParser((v) => out.push(v)).feed(Buffer.from(encodeCommand(["HSET", "h", "f", 1.5]) as string));
    expect(normalize(out[0]!)).toEqual([{ bulk: "HSET" }, { bulk: "h" }, { bulk: "f" }, { bulk: "1.5" }]);
  });
});
