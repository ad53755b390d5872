/**
 * gRPC through the gateway, end to end over HTTP/2 (h2c both sides): length-prefixed messages both ways
 * and the trailers (grpc-status, grpc-message, custom metadata) intact — also for a trailers-only error.
 */
import http2 from "node:http2";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { gatewayConfig, startTestGateway, type TestGateway } from "../support/gateway.ts";

let upstream: http2.Http2Server;
let gw: TestGateway;
let seenHeaders: http2.IncomingHttpHeaders[] = [];

const frame = (payload: string) => {
  const body = Buffer.from(payload);
  const head = Buffer.alloc(5);
  head.writeUInt32BE(body.length, 1);
  return Buffer.concat([head, body]);
};
const unframe = (buf: Buffer) => buf.subarray(5, 5 + buf.readUInt32BE(1)).toString();

beforeAll(async () => {
  upstream = http2.createServer();
  upstream.on("stream", (stream, headers) => {
    seenHeaders.push(headers);
    const chunks: Buffer[] = [];
    stream.on("data", (c: Buffer) => chunks.push(c));
    stream.on("end", () => {
      if (headers[":path"] === "/shop.v1.Orders/Missing") {
        // Trailers-only response: the status travels in the headers, with END_STREAM.
        stream.respond(
          {
            ":status": 200,
            "content-type": "application/grpc",
            "grpc-status": "5",
            "grpc-message": "not found",
          },
          { endStream: true },
        );
        return;
      }
      stream.respond({ ":status": 200, "content-type": "application/grpc" }, { waitForTrailers: true });
      stream.on("wantTrailers", () =>
        stream.sendTrailers({ "grpc-status": "0", "grpc-message": "OK", "x-order-version": "7" }),
      );
      stream.end(frame(`reply to ${unframe(Buffer.concat(chunks))}`));
    });
  });
  await new Promise<void>((r) => upstream.listen(0, "127.0.0.1", r));
  const port = (upstream.address() as AddressInfo).port;
  gw = await startTestGateway(
    gatewayConfig(
      [
        {
          name: "orders-rpc",
          match: { path: "/shop.v1.Orders/*", methods: ["POST"] },
          to: "orders",
          public: true,
          rateLimit: { requests: 1000, per: "1s" },
        },
      ],
      { orders: { port } },
      {},
      { orders: { image: "r/orders:1", port: 9090, protocol: "grpc", allow: [{ from: ["gateway"] }] } },
    ),
  );
});

afterAll(async () => {
  await gw.drain();
  await new Promise<void>((r) => upstream.close(() => r()));
});

function call(
  method: string,
  message: string,
): Promise<{ headers: http2.IncomingHttpHeaders; trailers: http2.IncomingHttpHeaders; data: Buffer }> {
  return new Promise((resolve, reject) => {
    const client = http2.connect(gw.url);
    client.on("error", reject);
    const req = client.request({
      ":method": "POST",
      ":path": `/shop.v1.Orders/${method}`,
      "content-type": "application/grpc",
      te: "trailers",
    });
    let headers: http2.IncomingHttpHeaders = {};
    let trailers: http2.IncomingHttpHeaders = {};
    const chunks: Buffer[] = [];
    req.on("response", (h) => (headers = h));
    req.on("trailers", (t) => (trailers = t));
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      client.close();
      resolve({ headers, trailers, data: Buffer.concat(chunks) });
    });
    req.on("error", reject);
    req.end(frame(message));
  });
}

describe("gRPC", () => {
  it("proxies_a_unary_call_with_trailers_intact", async () => {
    seenHeaders = [];
    const r = await call("Get", "order 7");
    expect(r.headers[":status"]).toBe(200);
    expect(r.headers["content-type"]).toBe("application/grpc");
    expect(unframe(r.data)).toBe("reply to order 7");
    expect(r.trailers).toMatchObject({ "grpc-status": "0", "grpc-message": "OK", "x-order-version": "7" });
    expect(seenHeaders[0]).toMatchObject({
      ":method": "POST",
      ":path": "/shop.v1.Orders/Get",
      te: "trailers",
      "content-type": "application/grpc",
    });
  });

  it("passes_a_trailers_only_error_status", async () => {
    const r = await call("Missing", "order 9");
    expect(r.headers).toMatchObject({ ":status": 200, "grpc-status": "5", "grpc-message": "not found" });
    expect(r.data.length).toBe(0);
  });
});
