/**
 * runtime/upstream/grpc-web.ts, the pieces: which content-types are gRPC-Web calls, the text form's
 * base64 (strict, several padded segments allowed), the trailer frame, and the response body in the
 * browser's form whatever the upstream's chunk sizes.
 */
import { PassThrough } from "node:stream";
import { describe, expect, it } from "vitest";
import {
  decodeGrpcWebText,
  grpcWebCall,
  GrpcWebResponse,
  grpcWebResponseHeaders,
  grpcWebTrailerFrame,
} from "../../runtime/upstream/grpc-web.ts";

describe("grpcWebCall: which content-types are gRPC-Web calls", () => {
  it.each([
    ["application/grpc-web", { mode: "binary", suffix: "" }],
    ["application/grpc-web+proto", { mode: "binary", suffix: "+proto" }],
    ["Application/GRPC-Web+Proto; charset=utf-8", { mode: "binary", suffix: "+proto" }],
    ["application/grpc-web-text", { mode: "text", suffix: "" }],
    ["application/grpc-web-text+proto", { mode: "text", suffix: "+proto" }],
    ["application/grpc", null],
    ["application/grpc+proto", null],
    ["application/grpc-webx", null],
    ["application/grpc-web+", null],
    ["application/json", null],
    [undefined, null],
  ])("%s → %j", (contentType, expected) => {
    expect(grpcWebCall(contentType)).toEqual(expected);
  });
});

describe("decodeGrpcWebText: strict base64, one or several padded segments", () => {
  const b64 = (s: string) => Buffer.from(s).toString("base64");
  it.each([
    ["one segment", b64("hello"), "hello"],
    ["two padded segments", b64("a") + b64("bb"), "abb"],
    ["three, the last unpadded", b64("a") + b64("b") + b64("ccc"), "abccc"],
    ["line breaks are ignored", `${b64("hello").slice(0, 4)}\r\n${b64("hello").slice(4)}`, "hello"],
    ["empty", "", ""],
  ])("%s decodes", (_claim, text, expected) => {
    expect(decodeGrpcWebText(Buffer.from(text))?.toString()).toBe(expected);
  });

  it.each([
    ["a character outside the alphabet", "AAAA@@@@"],
    ["a length not a multiple of 4", "AAAAA"],
    ["padding at the start of a quad", "=AAA"],
    ["padding before a letter in a quad", "A=AA"],
    ["URL-safe alphabet", "AA-_"],
  ])("%s is refused", (_claim, text) => {
    expect(decodeGrpcWebText(Buffer.from(text))).toBeNull();
  });
});

describe("the response in the browser's form", () => {
  it("the trailer frame is flag 0x80, the length, then lower-case name: value lines", () => {
    const f = grpcWebTrailerFrame({ "Grpc-Status": "0", "grpc-message": "OK" });
    const payload = "grpc-status: 0\r\ngrpc-message: OK\r\n";
    expect(f[0]).toBe(0x80);
    expect(f.readUInt32BE(1)).toBe(payload.length);
    expect(f.subarray(5).toString()).toBe(payload);
  });

  it.each([
    [
      "a gRPC type takes the call's form",
      "application/grpc+proto",
      "text",
      "application/grpc-web-text+proto",
    ],
    ["no suffix upstream keeps none", "application/grpc", "binary", "application/grpc-web"],
    ["an error page keeps its own type", "text/html", "binary", "text/html"],
  ] as const)("%s", (_claim, upstream, mode, expected) => {
    const headers: Record<string, string | undefined> = { "content-type": upstream, "content-length": "9" };
    grpcWebResponseHeaders(headers, { mode, suffix: "" });
    expect(headers).toEqual({ "content-type": expected });
  });

  const body = async (mode: "binary" | "text", chunks: Buffer[], trailers: Record<string, string> | null) => {
    const sink = new PassThrough();
    const out: Buffer[] = [];
    sink.on("data", (c: Buffer) => out.push(c));
    const ended = new Promise((r) => sink.on("end", r));
    const w = new GrpcWebResponse(sink, mode);
    for (const c of chunks) w.write(c);
    if (trailers) w.addTrailers(trailers);
    w.end();
    await ended;
    return Buffer.concat(out);
  };
  const data = Buffer.from("0123456789abcdefghij");
  const splits = [[20], [1, 19], [2, 2, 16], [4, 5, 11], [1, 1, 1, 17]];

  it.each(splits)("text: chunks of %j give one base64 text, padded only at the end", async (...sizes) => {
    const chunks: Buffer[] = [];
    let at = 0;
    for (const n of sizes) chunks.push(data.subarray(at, (at += n)));
    const trailers = { "grpc-status": "0" };
    const text = (await body("text", chunks, trailers)).toString("latin1");
    expect(text).toBe(Buffer.concat([data, grpcWebTrailerFrame(trailers)]).toString("base64"));
  });

  it("binary: the bytes as they came, then the trailer frame", async () => {
    const trailers = { "grpc-status": "13", "grpc-message": "boom" };
    expect(await body("binary", [data.subarray(0, 7), data.subarray(7)], trailers)).toEqual(
      Buffer.concat([data, grpcWebTrailerFrame(trailers)]),
    );
  });

  it("no trailers from upstream: no trailer frame is invented", async () => {
    expect(await body("binary", [data], null)).toEqual(data);
  });
});
