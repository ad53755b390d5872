/**
 * gRPC through the gateway, end to end over HTTP/2 (h2c both sides): length-prefixed messages both ways
 * and the trailers (grpc-status, grpc-message, custom metadata) intact — also for a trailers-only error;
 * the gateway's own refusals as trailers-only answers with a mapped grpc-status; the client's
 * grpc-timeout enforced (DEADLINE_EXCEEDED) and the upstream told the deadline.
 */
import http2 from "node:http2";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { gatewayConfig, startTestGateway, type TestGateway } from "../support/gateway.ts";
import { answerSpecialMethod, grpcFrame, grpcStreamOutcome } from "../support/grpc.ts";

let upstream: http2.Http2Server;
let gw: TestGateway;
let seenHeaders: http2.IncomingHttpHeaders[] = [];
let ticksCancelled = false;

const frame = (payload: string) => grpcFrame(payload);
const unframe = (buf: Buffer) => buf.subarray(5, 5 + buf.readUInt32BE(1)).toString();

beforeAll(async () => {
  upstream = http2.createServer();
  upstream.on("stream", (stream, headers) => {
    seenHeaders.push(headers);
    const chunks: Buffer[] = [];
    stream.on("data", (c: Buffer) => chunks.push(c));
    stream.on("end", () => {
      // A stream the gateway reset before a whole message came (a body cut at its limit) ends too —
      // Node emits "aborted" after "end" — and gets no answer.
      if (Buffer.concat(chunks).length < 5) return;
      // Slow answers after 1.5 s (unless cancelled first); Missing is trailers-only (test/support/grpc.ts).
      if (answerSpecialMethod(stream, headers[":path"])) return;
      if (headers[":path"]?.endsWith("/Ticks")) {
        // A server stream that never ends by itself: a message every 100 ms until the call is cancelled.
        stream.respond({ ":status": 200, "content-type": "application/grpc" });
        const timer = setInterval(() => stream.destroyed || stream.write(frame("tick")), 100);
        stream.on("close", () => {
          clearInterval(timer);
          ticksCancelled = true;
        });
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
          timeout: "3s",
          retries: { perTryTimeout: "3s" },
          rateLimit: { requests: 1000, per: "1s" },
        },
        {
          name: "uploads-rpc",
          match: { path: "/shop.v1.Uploads/*", methods: ["POST"] },
          to: "orders",
          public: true,
          limits: { maxBodySize: "1KiB" },
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

const metric = async (pattern: RegExp): Promise<number> => {
  const m = pattern.exec(await (await fetch(`${gw.adminUrl}/metrics`)).text());
  return m ? Number(m[1]) : 0;
};

function call(
  method: string,
  message: string,
  extra: http2.OutgoingHttpHeaders = {},
  service = "shop.v1.Orders",
): Promise<{
  headers: http2.IncomingHttpHeaders;
  trailers: http2.IncomingHttpHeaders;
  data: Buffer;
  ms: number;
  endedWithHeaders: boolean;
}> {
  const started = performance.now();
  return new Promise((resolve, reject) => {
    const client = http2.connect(gw.url);
    client.on("error", reject);
    const req = client.request({
      ":method": "POST",
      ":path": `/${service}/${method}`,
      "content-type": "application/grpc",
      te: "trailers",
      ...extra,
    });
    let headers: http2.IncomingHttpHeaders = {};
    let trailers: http2.IncomingHttpHeaders = {};
    const chunks: Buffer[] = [];
    let endedWithHeaders = false;
    req.on("response", (h, flags) => {
      headers = h;
      endedWithHeaders = (flags & http2.constants.NGHTTP2_FLAG_END_STREAM) !== 0;
    });
    req.on("trailers", (t) => (trailers = t));
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      client.close();
      resolve({
        headers,
        trailers,
        data: Buffer.concat(chunks),
        ms: performance.now() - started,
        endedWithHeaders,
      });
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

  it.each([
    ["no_route", "shop.v1.Users", "Get", {}, "12", "no_route"],
    ["method_not_allowed", "shop.v1.Orders", "Get", { ":method": "PUT" }, "2", "method_not_allowed"],
  ])(
    "answers_its_own_refusal_%s_trailers_only_with_a_mapped_grpc_status",
    async (_claim, service, method, extra, grpcStatus, code) => {
      seenHeaders = [];
      const r = await call(method, "x", extra, service);
      expect(r.headers).toMatchObject({
        ":status": 200,
        "content-type": "application/grpc",
        "grpc-status": grpcStatus,
        "x-meshgate-error": code,
      });
      expect(r.headers["grpc-message"]).toBeTruthy();
      expect(r.endedWithHeaders).toBe(true);
      expect(r.data.length).toBe(0);
      expect(seenHeaders).toHaveLength(0);
    },
  );

  it("answers_a_streamed_body_over_the_route_limit_413_and_keeps_serving", async () => {
    // No Content-Length (gRPC clients send none): the body streams upstream and passes 1 KiB on the way.
    seenHeaders = [];
    const r = await call("Put", "x".repeat(4096), {}, "shop.v1.Uploads");
    expect(r.headers).toMatchObject({
      ":status": 200,
      "grpc-status": "2",
      "x-meshgate-error": "body_too_large",
    });
    expect(unframe((await call("Get", "order 8")).data)).toBe("reply to order 8");
  });

  it("ends_a_call_at_the_clients_grpc_timeout_with_deadline_exceeded", async () => {
    seenHeaders = [];
    const timeouts = () =>
      metric(/meshgate_gateway_errors_total\{proxy="gateway",code="upstream_timeout"\} (\d+)/);
    const before = await timeouts();
    const r = await call("Slow", "order 1", { "grpc-timeout": "200m" });
    expect(r.headers).toMatchObject({
      ":status": 200,
      "grpc-status": "4",
      "x-meshgate-error": "upstream_timeout",
    });
    expect(r.endedWithHeaders).toBe(true);
    expect(r.ms).toBeGreaterThanOrEqual(190);
    expect(r.ms).toBeLessThan(1400);
    expect(seenHeaders[0]?.["grpc-timeout"]).toBe("200m");
    // Counted as the timeout it is (the wire says HTTP 200 + grpc-status 4).
    expect(await timeouts()).toBe(before + 1);
    expect(
      await metric(/meshgate_requests_total\{proxy="gateway",route="orders-rpc",code_class="5xx"\} (\d+)/),
    ).toBeGreaterThanOrEqual(1);
  });

  it("ends_a_streaming_call_that_keeps_sending_at_its_deadline_with_a_reset_never_a_clean_end", async () => {
    // The deadline is the call's, not a silence's (gRPC over HTTP/2): a stream that sends every 100 ms
    // is still ended at grpc-timeout 500m, and the upstream's call is cancelled.
    ticksCancelled = false;
    const outcome = await grpcStreamOutcome(gw.url, "/shop.v1.Orders/Ticks", frame("tick me"), "500m");
    expect(outcome.how).toBe("reset");
    expect(outcome.bytes).toBeGreaterThan(0); // the head and messages went out before the deadline
    expect(outcome.ms).toBeGreaterThanOrEqual(450);
    const deadline = Date.now() + 3000;
    while (!ticksCancelled && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    expect(ticksCancelled).toBe(true);
  });

  it("ends_a_call_at_the_route_timeout_when_the_clients_deadline_is_longer", async () => {
    // Route timeout 3 s, the upstream answers after 1.5 s: a 1-minute client deadline does not extend it,
    // the upstream is told 3000m, and the call completes.
    seenHeaders = [];
    const r = await call("Slow", "order 2", { "grpc-timeout": "1M" });
    expect(r.trailers["grpc-status"]).toBe("0");
    expect(unframe(r.data)).toBe("late");
    expect(seenHeaders[0]?.["grpc-timeout"]).toBe("3000m");
  });

  it.each([
    ["a_shorter_client_deadline_is_forwarded_as_sent", { "grpc-timeout": "2S" }, "2S"],
    ["no_client_deadline_forwards_the_route_timeout", {}, "3000m"],
    [
      "a_malformed_client_deadline_is_replaced_by_the_route_timeout",
      { "grpc-timeout": "2 seconds" },
      "3000m",
    ],
  ])("tells_the_upstream_its_deadline_%s", async (_claim, extra, expected) => {
    seenHeaders = [];
    const r = await call("Get", "order 3", extra);
    expect(r.trailers["grpc-status"]).toBe("0");
    expect(seenHeaders[0]?.["grpc-timeout"]).toBe(expected);
  });
});
