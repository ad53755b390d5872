/**
 * Request bodies as the gateway and the sidecar read them: whole (small bodies that a retry, a mirror or
 * a transform needs) or streamed, both failing with E_BODY_TOO_LARGE once more than `limit` bytes arrive.
 */
import type { IncomingMessage } from "node:http";
import type { Http2ServerRequest } from "node:http2";
import { Transform } from "node:stream";

/** A request on either HTTP version. */
export type BodySource = IncomingMessage | Http2ServerRequest;

const tooLarge = () => Object.assign(new Error("request body too large"), { code: "E_BODY_TOO_LARGE" });
const aborted = () => Object.assign(new Error("client aborted"), { code: "ECONNABORTED" });
const ignoreError = (): void => {};

/**
 * The client gave up on the request before its body was read: an HTTP/2 stream it reset (or whose
 * Content-Length its DATA contradicted, which nghttp2 resets) emits `aborted` and then `end` too — the end
 * of a truncated body, which must never be taken for a complete one. `aborted` may have been emitted before
 * the body was asked for (the handler awaited authentication, a rate limit, a delay), so the flag is read;
 * a request whose stream is gone before its body was read cannot have a body still to come either.
 */
const wasAborted = (req: BodySource) =>
  (req as { aborted?: boolean }).aborted === true || ("stream" in req && req.stream.destroyed);

/** Reads a whole (small) body, failing with E_BODY_TOO_LARGE past `limit`. */
export function readBody(req: BodySource, limit: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    if (wasAborted(req)) return reject(aborted());
    const chunks: Buffer[] = [];
    let seen = 0;
    req.on("data", (c: Buffer) => {
      seen += c.length;
      if (seen > limit) {
        req.pause();
        reject(tooLarge());
        return;
      }
      chunks.push(c);
    });
    req.on("end", () => (wasAborted(req) ? reject(aborted()) : resolve(Buffer.concat(chunks))));
    req.on("error", reject);
    req.on("aborted", () => reject(aborted()));
  });
}

/** Streams a request body, failing with E_BODY_TOO_LARGE once more than `limit` bytes arrive. */
export function limitBody(req: BodySource, limit: number): Transform {
  let seen = 0;
  const t = new Transform({
    transform(chunk: Buffer, _enc, cb) {
      seen += chunk.length;
      if (seen > limit) cb(tooLarge());
      else cb(null, chunk);
    },
  });
  // The stream is read only once forwarded. A request given up before its first attempt — the client left
  // while the proxy waited (authentication, a Redis rate limit, a fault delay) — is destroyed here with
  // nobody reading it, and an 'error' nobody listens to is an uncaught exception: the whole process ended.
  // Whoever reads the stream listens for its errors as before.
  t.on("error", ignoreError);
  req.on("error", (err) => t.destroy(err));
  req.on("aborted", () => t.destroy(aborted()));
  // Before the pipe's own end listener: a body that ended because the client aborted is not complete.
  req.on("end", () => {
    if (wasAborted(req)) t.destroy(aborted());
  });
  if (wasAborted(req)) t.destroy(aborted());
  return req.pipe(t);
}
