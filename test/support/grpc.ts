/**
 * A gRPC test service's pieces, shared by the gateway's and the sidecars' gRPC tests: length-prefixed frames,
 * two methods with special answers, and a client that tells how a streaming call ended.
 */
import http2, { type ServerHttp2Stream } from "node:http2";

/** One length-prefixed message (flag 0), or another frame kind (gRPC-Web trailers: 0x80). */
export function grpcFrame(payload: string | Buffer, flag = 0): Buffer {
  const body = Buffer.isBuffer(payload) ? payload : Buffer.from(payload);
  const head = Buffer.alloc(5);
  head[0] = flag;
  head.writeUInt32BE(body.length, 1);
  return Buffer.concat([head, body]);
}

/**
 * Answers the special methods, once the request has ended: `Slow` after 1.5 s (unless the call is
 * cancelled first), `Missing` trailers-only (`grpc-status: 5`, the status in the headers, END_STREAM).
 * False for any other method (the caller answers).
 */
export function answerSpecialMethod(stream: ServerHttp2Stream, path: string | undefined): boolean {
  if (path?.endsWith("/Slow")) {
    const timer = setTimeout(() => {
      if (stream.destroyed) return;
      stream.respond({ ":status": 200, "content-type": "application/grpc" }, { waitForTrailers: true });
      stream.on("wantTrailers", () => stream.sendTrailers({ "grpc-status": "0" }));
      stream.end(grpcFrame("late"));
    }, 1500);
    stream.on("close", () => clearTimeout(timer));
    return true;
  }
  if (path?.endsWith("/Missing")) {
    stream.respond(
      { ":status": 200, "content-type": "application/grpc", "grpc-status": "5", "grpc-message": "not found" },
      { endStream: true },
    );
    return true;
  }
  return false;
}

/** How a streaming call ended for its client: reset, ended cleanly, closed, or still streaming at `giveUpMs`. */
export interface StreamOutcome {
  how: "reset" | "ended cleanly" | "closed" | "still streaming";
  /** Milliseconds from the request to that outcome. */
  ms: number;
  /** Response body bytes read before it. */
  bytes: number;
}

/**
 * Sends one gRPC call over HTTP/2 to `origin` (`http://host:port`) with `grpc-timeout` and `body`, reads
 * whatever comes, and tells how it ended (giving up after `giveUpMs`); the session is closed after.
 */
export async function grpcStreamOutcome(
  origin: string,
  path: string,
  body: Buffer,
  grpcTimeout: string,
  giveUpMs = 2500,
): Promise<StreamOutcome> {
  const started = performance.now();
  const client = http2.connect(origin);
  client.on("error", () => {});
  const outcome = await new Promise<StreamOutcome>((resolve) => {
    const req = client.request({
      ":method": "POST",
      ":path": path,
      "content-type": "application/grpc",
      te: "trailers",
      "grpc-timeout": grpcTimeout,
    });
    let bytes = 0;
    let settled = false;
    const done = (how: StreamOutcome["how"]) => {
      if (settled) return;
      settled = true;
      resolve({ how, ms: performance.now() - started, bytes });
    };
    req.on("data", (c: Buffer) => (bytes += c.length));
    req.on("end", () => done("ended cleanly"));
    req.on("close", () => done(req.rstCode ? "reset" : "closed"));
    req.on("error", () => {});
    setTimeout(() => done("still streaming"), giveUpMs);
    req.end(body);
  });
  client.destroy();
  return outcome;
}
