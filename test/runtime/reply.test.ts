/**
 * runtime/net/reply.ts, the local-reply writer of the gateway and the sidecar, over real HTTP/1.1 and
 * HTTP/2 (h2c) servers on 127.0.0.1: JSON for HTTP callers, trailers-only for gRPC and gRPC-Web callers, a reset once
 * a response head is out, and the status every upstream failure answers with. The proxies' own tests run
 * it through their servers.
 */
import http from "node:http";
import http2 from "node:http2";
import type { AddressInfo } from "node:net";
import { afterEach, describe, expect, it } from "vitest";
import {
  upstreamFailure,
  writeLocalReply,
  type LocalReply,
  type ReplyForm,
  type ReplyResponse,
} from "../../runtime/net/reply.ts";
import type { ForwardOutcome } from "../../runtime/upstream/forward.ts";

const closers: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const c of closers.splice(0)) await c();
});

interface Served {
  form: ReplyForm | null;
  statusCode: number;
}

/**
 * A server whose every request is answered by writeLocalReply; `before` starts a response first, and the
 * reply then comes once that head is on the wire.
 */
async function serve(
  h2: boolean,
  reply: LocalReply,
  close = false,
  before?: (res: ReplyResponse & { write(s: string): unknown }) => void,
): Promise<{ port: number; served: Served }> {
  const served: Served = { form: null, statusCode: 0 };
  const handler = (req: http.IncomingMessage | http2.Http2ServerRequest, res: unknown) => {
    const r = res as ReplyResponse & { write(s: string): unknown };
    const answer = () => {
      served.form = writeLocalReply(req, r, reply, h2, close);
      served.statusCode = r.statusCode;
    };
    if (before === undefined) return answer();
    before(r);
    setTimeout(answer, 50);
  };
  const server = h2 ? http2.createServer(handler) : http.createServer(handler);
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  closers.push(
    () =>
      new Promise<void>((resolve) => {
        if ("closeAllConnections" in server) server.closeAllConnections();
        server.close(() => resolve());
      }),
  );
  return { port: (server.address() as AddressInfo).port, served };
}

interface H1Answer {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: string;
  complete: boolean;
  error: string | null;
}

function h1(port: number, method = "GET", headers: http.OutgoingHttpHeaders = {}): Promise<H1Answer> {
  return new Promise((resolve) => {
    const req = http.request(
      {
        host: "127.0.0.1",
        port,
        method,
        path: "/",
        agent: false,
        headers: { connection: "keep-alive", ...headers },
      },
      (res) => {
        let body = "";
        res.setEncoding("utf8");
        res.on("data", (c: string) => (body += c));
        res.on("end", () =>
          resolve({
            status: res.statusCode!,
            headers: res.headers,
            body,
            complete: res.complete,
            error: null,
          }),
        );
        res.on("error", (e) =>
          resolve({ status: res.statusCode!, headers: res.headers, body, complete: false, error: e.message }),
        );
      },
    );
    req.on("error", (e) => resolve({ status: 0, headers: {}, body: "", complete: false, error: e.message }));
    req.end();
  });
}

interface H2Answer {
  headers: http2.IncomingHttpHeaders;
  body: string;
  /** The stream ended with END_STREAM (not reset). */
  ended: boolean;
  rstCode: number;
}

async function h2(port: number, headers: http2.OutgoingHttpHeaders): Promise<H2Answer> {
  const session = http2.connect(`http://127.0.0.1:${port}`);
  try {
    return await new Promise<H2Answer>((resolve, reject) => {
      session.on("error", reject);
      const stream = session.request({ ":method": "POST", ":path": "/svc/Method", ...headers });
      let got: http2.IncomingHttpHeaders = {};
      let body = "";
      let ended = false;
      stream.on("response", (h) => (got = h));
      stream.setEncoding("utf8");
      stream.on("data", (c: string) => (body += c));
      stream.on("end", () => (ended = true));
      stream.on("error", () => {});
      stream.on("close", () => resolve({ headers: got, body, ended, rstCode: stream.rstCode ?? 0 }));
      stream.end();
    });
  } finally {
    session.close();
  }
}

const DENIED: LocalReply = {
  status: 403,
  code: "authz_denied",
  message: "no allow rule admits spiffe://x/ns/a/sa/b",
  extra: { "x-meshgate-denied": "no_rule" },
};

describe("writeLocalReply answers an HTTP/1.1 caller", () => {
  it("with the JSON error body, its length, the code header and the extra headers", async () => {
    const { port, served } = await serve(false, DENIED);
    const a = await h1(port);
    expect(a.status).toBe(403);
    expect(JSON.parse(a.body)).toEqual({ error: { code: DENIED.code, message: DENIED.message } });
    expect(a.headers["content-type"]).toBe("application/json");
    expect(Number(a.headers["content-length"])).toBe(Buffer.byteLength(a.body));
    expect(a.headers["x-meshgate-error"]).toBe("authz_denied");
    expect(a.headers["x-meshgate-denied"]).toBe("no_rule");
    expect(a.headers.connection).toBe("keep-alive");
    expect(served).toEqual({ form: "json", statusCode: 403 });
  });

  it("with the same head and no body to a HEAD request", async () => {
    const { port } = await serve(false, DENIED);
    const get = await h1(port);
    const head = await h1(port, "HEAD");
    expect(head.status).toBe(403);
    expect(head.body).toBe("");
    expect(head.headers["content-length"]).toBe(get.headers["content-length"]);
  });

  it("with Connection: close when the reply ends the connection (draining)", async () => {
    const { port } = await serve(false, DENIED, true);
    expect((await h1(port)).headers.connection).toBe("close");
  });

  it("by resetting a response whose head was already sent, never by ending it cleanly", async () => {
    const { port, served } = await serve(
      false,
      { status: 502, code: "upstream_reset", message: "reset" },
      false,
      (res) => {
        res.writeHead(200, { "content-type": "text/plain" });
        res.write("partial");
      },
    );
    const a = await h1(port);
    expect(a.status).toBe(200);
    expect(a.complete).toBe(false);
    expect(a.body).not.toContain("upstream_reset");
    expect(served.form).toBe("reset");
  });
});

describe("writeLocalReply answers an HTTP/2 caller", () => {
  it("that speaks gRPC with a trailers-only 200 whose grpc-status maps the HTTP status", async () => {
    const { port, served } = await serve(true, DENIED, true);
    const a = await h2(port, { "content-type": "application/grpc", te: "trailers" });
    expect(a.headers[":status"]).toBe(200);
    expect(a.headers["grpc-status"]).toBe("7"); // PERMISSION_DENIED
    expect(a.headers["grpc-message"]).toBe(DENIED.message);
    expect(a.headers["x-meshgate-error"]).toBe("authz_denied");
    expect(a.headers["x-meshgate-denied"]).toBe("no_rule");
    expect(a.body).toBe("");
    expect(a.ended).toBe(true);
    // Metrics and access logs count the HTTP status, not the 200 on the wire.
    expect(served).toEqual({ form: "grpc", statusCode: 403 });
  });

  it("that does not speak gRPC with the JSON body, and no Connection header even when draining", async () => {
    const { port, served } = await serve(true, DENIED, true);
    const a = await h2(port, { "content-type": "application/json" });
    expect(a.headers[":status"]).toBe(403);
    expect(a.headers.connection).toBeUndefined();
    expect(JSON.parse(a.body)).toEqual({ error: { code: DENIED.code, message: DENIED.message } });
    expect(served.form).toBe("json");
  });

  it("by resetting the stream when the head was already sent (gRPC or not)", async () => {
    const { port, served } = await serve(true, DENIED, false, (res) => {
      res.writeHead(200, { "content-type": "application/grpc" });
      res.write("x");
    });
    const a = await h2(port, { "content-type": "application/grpc" });
    expect(a.headers[":status"]).toBe(200);
    expect(a.ended).toBe(false);
    expect(a.rstCode).not.toBe(0);
    expect(served.form).toBe("reset");
  });
});

describe("writeLocalReply answers a gRPC-Web caller in its trailers-only form", () => {
  it("over HTTP/1.1: 200, the mapped grpc-status in the headers, its content-type, no body", async () => {
    const { port, served } = await serve(false, DENIED, true);
    const a = await h1(port, "POST", { "content-type": "application/grpc-web+proto" });
    expect(a.status).toBe(200);
    expect(a.headers["grpc-status"]).toBe("7"); // PERMISSION_DENIED
    expect(a.headers["grpc-message"]).toBe(DENIED.message);
    expect(a.headers["x-meshgate-error"]).toBe("authz_denied");
    expect(a.headers["x-meshgate-denied"]).toBe("no_rule");
    expect(a.headers["content-type"]).toBe("application/grpc-web+proto");
    expect(a.headers["content-length"]).toBe("0");
    expect(a.headers.connection).toBe("close");
    expect(a.body).toBe("");
    // Metrics and access logs count the HTTP status, not the 200 on the wire.
    expect(served).toEqual({ form: "grpc", statusCode: 403 });
  });

  it("over HTTP/2, in the text form", async () => {
    const { port, served } = await serve(true, DENIED);
    const a = await h2(port, { "content-type": "application/grpc-web-text" });
    expect(a.headers[":status"]).toBe(200);
    expect(a.headers["grpc-status"]).toBe("7");
    expect(a.headers["content-type"]).toBe("application/grpc-web-text");
    expect(a.body).toBe("");
    expect(a.ended).toBe(true);
    expect(served).toEqual({ form: "grpc", statusCode: 403 });
  });
});

describe("upstreamFailure answers each failed forward with its status and code", () => {
  const cases: [ForwardOutcome, number, string][] = [
    ["timeout", 504, "upstream_timeout"],
    ["connect_failure", 503, "upstream_connect_failure"],
    ["no_endpoint", 503, "no_healthy_upstream"],
    ["overflow", 503, "upstream_overflow"],
    ["reset", 502, "upstream_reset"],
    ["body_too_large", 502, "upstream_reset"],
  ];
  it.each(cases)("%s → %i %s", (outcome, status, code) => {
    expect(upstreamFailure(outcome)).toEqual([status, code]);
  });
});
