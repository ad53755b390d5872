/**
 * gRPC-Web through the gateway (runtime/upstream/grpc-web.ts), over real sockets: a browser's call over
 * HTTP/1.1 — binary or base64 text — reaches a gRPC service (h2c) as the gRPC call it encodes, and the
 * answer comes back with the trailers as the body's last frame; a trailers-only answer keeps its status
 * in the headers; the call's grpc-timeout is enforced; the gateway's own refusals (a text body that is
 * not base64 — before anything is sent —, no route, the deadline) come in the gRPC-Web trailers-only form;
 * a service that is not gRPC gets the request as the browser sent it.
 */
import http from "node:http";
import http2 from "node:http2";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { gatewayConfig, startTestGateway, type TestGateway } from "../support/gateway.ts";
import { answerSpecialMethod, grpcFrame } from "../support/grpc.ts";

let grpcServer: http2.Http2Server;
let plainServer: http.Server;
let gw: TestGateway;
const seen: http2.IncomingHttpHeaders[] = [];
const plainSeen: { contentType: string | undefined; body: string }[] = [];

const frame = grpcFrame;

/** The frames of a gRPC-Web body: data frames (flag 0) and the trailer frame (flag 0x80). */
function frames(body: Buffer): { flag: number; payload: string }[] {
  const out: { flag: number; payload: string }[] = [];
  let i = 0;
  while (i + 5 <= body.length) {
    const length = body.readUInt32BE(i + 1);
    out.push({ flag: body[i]!, payload: body.subarray(i + 5, i + 5 + length).toString("latin1") });
    i += 5 + length;
  }
  expect(i, "the body ends on a frame boundary").toBe(body.length);
  return out;
}

beforeAll(async () => {
  grpcServer = http2.createServer();
  grpcServer.on("stream", (stream, headers) => {
    seen.push(headers);
    const chunks: Buffer[] = [];
    stream.on("data", (c: Buffer) => chunks.push(c));
    stream.on("end", () => {
      // Slow answers after 1.5 s (unless cancelled first); Missing is trailers-only (test/support/grpc.ts).
      if (answerSpecialMethod(stream, headers[":path"])) return;
      if (headers[":path"] === "/shop.v1.Orders/Plain") {
        // Not a gRPC answer: an HTTP error page in front of the service.
        stream.respond({ ":status": 404, "content-type": "text/plain" });
        stream.end("no such method");
        return;
      }
      if (headers[":path"] === "/shop.v1.Orders/Cut") {
        // One message, then the service's connection dies: no trailers, the call did not complete.
        stream.respond({ ":status": 200, "content-type": "application/grpc" });
        stream.write(grpcFrame("partial"));
        setTimeout(() => stream.session?.socket.destroy(), 50);
        return;
      }
      // Echo every request frame back (two messages when the client sent two), then the trailers.
      const request = Buffer.concat(chunks);
      const replies: Buffer[] = [];
      for (let i = 0; i + 5 <= request.length;) {
        const length = request.readUInt32BE(i + 1);
        replies.push(frame(`reply to ${request.subarray(i + 5, i + 5 + length).toString()}`));
        i += 5 + length;
      }
      stream.respond(
        { ":status": 200, "content-type": String(headers["content-type"]) },
        { waitForTrailers: true },
      );
      stream.on("wantTrailers", () =>
        stream.sendTrailers({ "grpc-status": "0", "grpc-message": "OK", "x-order-version": "7" }),
      );
      stream.end(Buffer.concat(replies));
    });
  });
  await new Promise<void>((r) => grpcServer.listen(0, "127.0.0.1", r));
  plainServer = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      plainSeen.push({
        contentType: req.headers["content-type"],
        body: Buffer.concat(chunks).toString("latin1"),
      });
      res.writeHead(200, { "content-type": "application/grpc-web+proto" });
      res.end(frame("from a gRPC-Web server"));
    });
  });
  await new Promise<void>((r) => plainServer.listen(0, "127.0.0.1", r));
  gw = await startTestGateway(
    gatewayConfig(
      [
        {
          name: "orders-rpc",
          match: { path: "/shop.v1.Orders/*", methods: ["POST"] },
          to: "orders",
          public: true,
          timeout: "3s",
          // The README's route for a browser on another origin.
          cors: {
            origins: ["https://shop.example"],
            headers: ["content-type", "x-grpc-web", "x-user-agent", "grpc-timeout"],
            exposeHeaders: ["grpc-status", "grpc-message"],
          },
        },
        {
          name: "legacy-rpc",
          match: { path: "/shop.v1.Legacy/*", methods: ["POST"] },
          to: "legacy",
          public: true,
        },
      ],
      {
        orders: { port: (grpcServer.address() as AddressInfo).port },
        legacy: { port: (plainServer.address() as AddressInfo).port },
      },
      {},
      {
        orders: { image: "r/orders:1", port: 9090, protocol: "grpc", allow: [{ from: ["gateway"] }] },
        legacy: { image: "r/legacy:1", port: 8080, allow: [{ from: ["gateway"] }] },
      },
    ),
  );
});

afterAll(async () => {
  await gw.drain();
  await new Promise<void>((r) => grpcServer.close(() => r()));
  await new Promise<void>((r) => plainServer.close(() => r()));
});

/** A browser's gRPC-Web call: HTTP/1.1 POST with the given content-type and body. */
function call(
  path: string,
  contentType: string,
  body: Buffer | string,
  extra: Record<string, string> = {},
): Promise<{ status: number; headers: http.IncomingHttpHeaders; body: Buffer; ms: number }> {
  const started = performance.now();
  const url = new URL(path, gw.url);
  return new Promise((resolve, reject) => {
    const req = http.request(
      url,
      {
        method: "POST",
        headers: {
          "content-type": contentType,
          "x-grpc-web": "1",
          "content-length": Buffer.byteLength(body),
          ...extra,
        },
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (c: Buffer) => chunks.push(c));
        res.on("end", () =>
          resolve({
            status: res.statusCode!,
            headers: res.headers,
            body: Buffer.concat(chunks),
            ms: performance.now() - started,
          }),
        );
        res.on("error", reject);
      },
    );
    req.on("error", reject);
    req.end(body);
  });
}

const metric = async (pattern: RegExp): Promise<number> => {
  const m = pattern.exec(await (await fetch(`${gw.adminUrl}/metrics`)).text());
  return m ? Number(m[1]) : 0;
};

const TRAILERS = "grpc-status: 0\r\ngrpc-message: OK\r\nx-order-version: 7\r\n";

describe("a gRPC-Web call reaches a gRPC service as the gRPC call it encodes", () => {
  it.each([
    {
      claim: "binary (+proto): frames pass through, the trailers come back as the last frame",
      contentType: "application/grpc-web+proto",
      body: frame("hello"),
      upstreamType: "application/grpc+proto",
      responseType: "application/grpc-web+proto",
      text: false,
      replies: ["reply to hello"],
    },
    {
      claim: "binary without a format suffix",
      contentType: "application/grpc-web",
      body: frame("plain"),
      upstreamType: "application/grpc",
      responseType: "application/grpc-web",
      text: false,
      replies: ["reply to plain"],
    },
    {
      claim: "text: base64 decoded on the way in, the answer base64 on the way out",
      contentType: "application/grpc-web-text",
      body: frame("over text").toString("base64"),
      upstreamType: "application/grpc",
      responseType: "application/grpc-web-text",
      text: true,
      replies: ["reply to over text"],
    },
    {
      claim: "text of two padded base64 segments (one per message) is read as both messages",
      contentType: "application/grpc-web-text+proto",
      body: frame("a").toString("base64") + frame("bb").toString("base64"),
      upstreamType: "application/grpc+proto",
      responseType: "application/grpc-web-text+proto",
      text: true,
      replies: ["reply to a", "reply to bb"],
    },
  ])("$claim", async ({ contentType, body, upstreamType, responseType, text, replies }) => {
    const before = seen.length;
    const r = await call("/shop.v1.Orders/Get", contentType, body);
    expect(r.status).toBe(200);
    expect(r.headers["content-type"]).toBe(responseType);
    const upstream = seen[before]!;
    expect(upstream["content-type"]).toBe(upstreamType);
    expect(upstream.te).toBe("trailers");
    expect(upstream["x-grpc-web"]).toBeUndefined();
    const raw = text ? Buffer.from(r.body.toString("latin1"), "base64") : r.body;
    if (text) expect(r.body.toString("latin1")).toMatch(/^[A-Za-z0-9+/]*={0,2}$/);
    expect(frames(raw)).toEqual([
      ...replies.map((payload) => ({ flag: 0, payload })),
      { flag: 0x80, payload: TRAILERS },
    ]);
  });
});

describe("what a gRPC-Web call gets besides a normal answer", () => {
  it("a browser on another origin: the preflight admits the gRPC-Web headers, the answer exposes the status", async () => {
    const preflight = await fetch(new URL("/shop.v1.Orders/Get", gw.url), {
      method: "OPTIONS",
      headers: {
        origin: "https://shop.example",
        "access-control-request-method": "POST",
        "access-control-request-headers": "content-type,x-grpc-web,x-user-agent,grpc-timeout",
      },
    });
    expect(preflight.status).toBe(204);
    expect(preflight.headers.get("access-control-allow-origin")).toBe("https://shop.example");
    expect(preflight.headers.get("access-control-allow-headers")).toContain("x-grpc-web");
    const r = await call("/shop.v1.Orders/Missing", "application/grpc-web+proto", frame("x"), {
      origin: "https://shop.example",
    });
    expect(r.headers["access-control-allow-origin"]).toBe("https://shop.example");
    expect(r.headers["access-control-expose-headers"]).toContain("grpc-status");
    expect(r.headers["grpc-status"]).toBe("5");
  });

  it("over HTTP/2 (h2c): the answer in the browser's form, and a trailers-only one as one HEADERS frame", async () => {
    const session = http2.connect(gw.url);
    const h2call = (path: string) =>
      new Promise<{ headers: http2.IncomingHttpHeaders; body: Buffer; endedWithHeaders: boolean }>(
        (resolve, reject) => {
          const req = session.request({
            ":method": "POST",
            ":path": path,
            "content-type": "application/grpc-web+proto",
            "x-grpc-web": "1",
          });
          let headers: http2.IncomingHttpHeaders = {};
          let endedWithHeaders = false;
          const chunks: Buffer[] = [];
          req.on("response", (h, flags) => {
            headers = h;
            endedWithHeaders = (flags & http2.constants.NGHTTP2_FLAG_END_STREAM) !== 0;
          });
          req.on("data", (c: Buffer) => chunks.push(c));
          req.on("end", () => resolve({ headers, body: Buffer.concat(chunks), endedWithHeaders }));
          req.on("error", reject);
          req.end(frame("over h2"));
        },
      );
    try {
      const ok = await h2call("/shop.v1.Orders/Get");
      expect(ok.headers[":status"]).toBe(200);
      expect(ok.headers["content-type"]).toBe("application/grpc-web+proto");
      expect(frames(ok.body)).toEqual([
        { flag: 0, payload: "reply to over h2" },
        { flag: 0x80, payload: TRAILERS },
      ]);
      const missing = await h2call("/shop.v1.Orders/Missing");
      expect(missing.headers[":status"]).toBe(200);
      expect(missing.headers["grpc-status"]).toBe("5");
      expect(missing.headers["content-type"]).toBe("application/grpc-web+proto");
      expect(missing.endedWithHeaders).toBe(true);
      expect(missing.body.length).toBe(0);
    } finally {
      session.close();
    }
  });

  it("a trailers-only answer keeps its status in the headers and has no body", async () => {
    const r = await call("/shop.v1.Orders/Missing", "application/grpc-web+proto", frame("x"));
    expect(r.status).toBe(200);
    expect(r.headers["grpc-status"]).toBe("5");
    expect(r.headers["grpc-message"]).toBe("not found");
    expect(r.headers["content-type"]).toBe("application/grpc-web+proto");
    expect(r.body.length).toBe(0);
  });

  it("the call's grpc-timeout is enforced: DEADLINE_EXCEEDED well before the slow answer, the deadline sent upstream", async () => {
    const before = seen.length;
    const timeouts = await metric(
      /meshgate_requests_total\{proxy="gateway",route="orders-rpc",code_class="5xx"\} (\d+)/,
    );
    const r = await call("/shop.v1.Orders/Slow", "application/grpc-web+proto", frame("x"), {
      "grpc-timeout": "200m",
    });
    expect(r.ms).toBeLessThan(1200);
    expect(seen[before]!["grpc-timeout"]).toBe("200m");
    // The gateway's own answer in the gRPC-Web form: 200, the status in the headers, no body.
    expect(r.status).toBe(200);
    expect(r.headers["grpc-status"]).toBe("4");
    expect(r.headers["x-meshgate-error"]).toBe("upstream_timeout");
    expect(r.headers["content-type"]).toBe("application/grpc-web+proto");
    expect(r.body.length).toBe(0);
    // Metrics count the HTTP status the reply stands for (504), as for gRPC.
    expect(
      await metric(/meshgate_requests_total\{proxy="gateway",route="orders-rpc",code_class="5xx"\} (\d+)/),
    ).toBe(timeouts + 1);
  });

  it.each([
    {
      claim: "a text body that is not base64: INTERNAL (400 bad_grpc_web_body), nothing sent",
      path: "/shop.v1.Orders/Get",
      contentType: "application/grpc-web-text",
      body: "AAAA@@@@",
      grpcStatus: "13",
      code: "bad_grpc_web_body",
    },
    {
      claim: "no route: UNIMPLEMENTED (404 no_route), in the text form's content-type",
      path: "/shop.v1.Nowhere/Get",
      contentType: "application/grpc-web-text+proto",
      body: frame("x").toString("base64"),
      grpcStatus: "12",
      code: "no_route",
    },
  ])("$claim", async ({ path, contentType, body, grpcStatus, code }) => {
    const before = seen.length;
    const r = await call(path, contentType, body);
    expect(r.status).toBe(200);
    expect(r.headers["grpc-status"]).toBe(grpcStatus);
    expect(r.headers["x-meshgate-error"]).toBe(code);
    expect(r.headers["content-type"]).toBe(contentType);
    expect(r.body.length).toBe(0);
    expect(seen.length).toBe(before);
  });

  it("the service's connection dying mid-answer resets the browser's response: never a clean end, no trailer frame", async () => {
    const url = new URL("/shop.v1.Orders/Cut", gw.url);
    const outcome = await new Promise<{ status: number; body: Buffer; complete: boolean }>((resolve) => {
      const req = http.request(
        url,
        { method: "POST", headers: { "content-type": "application/grpc-web+proto" } },
        (res) => {
          const chunks: Buffer[] = [];
          res.on("data", (c: Buffer) => chunks.push(c));
          const done = () =>
            resolve({ status: res.statusCode!, body: Buffer.concat(chunks), complete: res.complete });
          res.on("end", done);
          res.on("error", done);
          res.on("aborted", done);
        },
      );
      req.on("error", () => resolve({ status: 0, body: Buffer.alloc(0), complete: false }));
      req.end(frame("x"));
    });
    expect(outcome.status).toBe(200);
    expect(outcome.complete).toBe(false);
    expect(outcome.body.includes(Buffer.from([0x80]))).toBe(false);
  });

  it.each(["application/grpc-web-text", "application/grpc-web"])(
    "an answer that is not gRPC reaches a %s call as it was sent: its own type, body neither encoded nor framed",
    async (contentType) => {
      const body = frame("x");
      const r = await call(
        "/shop.v1.Orders/Plain",
        contentType,
        contentType.endsWith("text") ? body.toString("base64") : body,
      );
      expect(r.status).toBe(404);
      expect(r.headers["content-type"]).toBe("text/plain");
      expect(r.body.toString("latin1")).toBe("no such method");
    },
  );

  it("a service that is not gRPC gets the gRPC-Web request as the browser sent it", async () => {
    const r = await call("/shop.v1.Legacy/Get", "application/grpc-web+proto", frame("as is"));
    expect(r.status).toBe(200);
    expect(plainSeen.at(-1)).toEqual({
      contentType: "application/grpc-web+proto",
      body: frame("as is").toString("latin1"),
    });
    expect(frames(r.body)).toEqual([{ flag: 0, payload: "from a gRPC-Web server" }]);
  });
});
