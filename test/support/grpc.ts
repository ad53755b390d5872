/**
 * A gRPC test service's pieces, shared by the gateway's gRPC and gRPC-Web tests: length-prefixed frames,
 * and two methods with special answers.
 */
import type { ServerHttp2Stream } from "node:http2";

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
