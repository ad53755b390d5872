/**
 * Bounded bodies: JSON media types, decoding of compressed bodies stopped at the limit (a decompression
 * bomb never expands past it), the collecting sink and the byte-counting response limiter.
 */
import { PassThrough } from "node:stream";
import zlib from "node:zlib";
import { describe, expect, it } from "vitest";
import {
  BodyError,
  BoundedCollector,
  LimitedWritable,
  decodeContent,
  isJsonMediaType,
  listsMediaTypes,
} from "../../runtime/apim/body.ts";

describe("json media types", () => {
  it.each([
    ["application/json", true],
    ["application/json; charset=utf-8", true],
    ["Application/JSON", true],
    ["application/problem+json", true],
    ["application/vnd.api+json;v=2", true],
    ["text/json", true],
    ["text/html", false],
    ["application/jsonp", false],
    ["application/x-ndjson", false],
    ["multipart/form-data; boundary=json", false],
    [undefined, false],
  ])("treats_%s_as_json_%s", (type, expected) => {
    expect(isJsonMediaType(type)).toBe(expected);
  });
});

describe("content types listing several media types", () => {
  it.each<[string, string | string[] | undefined, boolean]>([
    ["one_type", "application/json", false],
    ["one_type_with_parameters", "application/json; charset=utf-8", false],
    ["a_comma_inside_a_quoted_parameter", 'application/json; profile="a,b"', false],
    ["an_escaped_quote_before_a_quoted_comma", 'application/json; p="a\\",b"', false],
    ["two_types_on_one_line", "application/json, application/json", true],
    ["a_last_type_that_is_json", "text/plain, application/json", true],
    ["a_comma_after_the_parameters", "application/json; charset=utf-8, text/html", true],
    ["two_field_lines", ["application/json", "application/json"], true],
    ["one_field_line_in_a_list", ["application/json"], false],
    ["no_content_type", undefined, false],
  ])("%s", (_claim, type, expected) => {
    expect(listsMediaTypes(type)).toBe(expected);
  });
});

describe("decoding", () => {
  const text = Buffer.from(JSON.stringify({ a: "x".repeat(1000) }));
  it.each([
    ["gzip", zlib.gzipSync(text)],
    ["x-gzip", zlib.gzipSync(text)],
    ["deflate", zlib.deflateSync(text)],
    ["deflate", zlib.deflateRawSync(text)],
    ["br", zlib.brotliCompressSync(text)],
    ["identity", text],
  ])("decodes_%s", async (encoding, body) => {
    expect((await decodeContent(body, encoding, 10_000)).equals(text)).toBe(true);
  });

  it("stops_a_decompression_bomb_at_the_limit", async () => {
    const bomb = zlib.gzipSync(Buffer.alloc(64 * 1024 * 1024)); // 64 MiB of zeros in ~64 KiB
    expect(bomb.length).toBeLessThan(128 * 1024);
    const before = process.memoryUsage().arrayBuffers;
    await expect(decodeContent(bomb, "gzip", 1024 * 1024)).rejects.toMatchObject({ failure: "too_large" });
    expect(process.memoryUsage().arrayBuffers - before).toBeLessThan(32 * 1024 * 1024);
  });

  it.each([
    ["refuses_an_unknown_coding", "compress", "unsupported_encoding"],
    ["refuses_a_list_of_codings", "gzip, br", "unsupported_encoding"],
    ["refuses_a_corrupt_body", "gzip", "corrupt_encoding"],
  ])("%s", async (_claim, encoding, failure) => {
    await expect(decodeContent(Buffer.from("not compressed"), encoding, 1000)).rejects.toMatchObject({
      failure,
    });
  });
});

describe("collector", () => {
  it("collects_up_to_the_limit", async () => {
    const c = new BoundedCollector(10);
    c.write(Buffer.from("12345"));
    c.end(Buffer.from("67890"));
    await c.done();
    expect(c.failure).toBeNull();
    expect(c.body().toString()).toBe("1234567890");
  });

  it("reports_one_byte_over_the_limit_and_calls_the_overflow_hook_once", async () => {
    let calls = 0;
    const c = new BoundedCollector(10, () => calls++);
    c.write(Buffer.from("1234567890"));
    c.write(Buffer.from("1"));
    c.end(Buffer.from("more"));
    await c.done();
    await new Promise((r) => process.nextTick(r));
    expect(c.failure).toBeInstanceOf(BodyError);
    expect(calls).toBe(1);
    expect(c.body().length).toBe(0);
  });

  it("survives_being_destroyed_with_an_error", async () => {
    const c = new BoundedCollector(10);
    c.destroy(new Error("upstream reset"));
    await c.done();
    expect(c.destroyed).toBe(true);
  });
});

describe("response limiter", () => {
  it("passes_bytes_through_and_ends_the_destination", async () => {
    const dest = new PassThrough();
    const chunks: Buffer[] = [];
    dest.on("data", (c: Buffer) => chunks.push(c));
    const l = new LimitedWritable(dest, 10, () => {});
    l.write("hello");
    l.end("world");
    await new Promise((r) => dest.once("end", r));
    expect(Buffer.concat(chunks).toString()).toBe("helloworld");
    expect(l.exceeded).toBe(false);
  });

  it("stops_passing_bytes_once_over_the_limit_and_never_ends_the_destination", async () => {
    const dest = new PassThrough();
    const chunks: Buffer[] = [];
    dest.on("data", (c: Buffer) => chunks.push(c));
    let exceeded = 0;
    const l = new LimitedWritable(dest, 10, () => exceeded++);
    l.write("0123456789");
    l.write("X");
    l.end("Y");
    await new Promise((r) => l.once("finish", r));
    await new Promise((r) => process.nextTick(r));
    expect(Buffer.concat(chunks).toString()).toBe("0123456789");
    expect(exceeded).toBe(1);
    expect(dest.writableEnded).toBe(false);
  });
});
