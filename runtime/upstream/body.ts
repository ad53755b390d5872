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

/** Reads a whole (small) body, failing with E_BODY_TOO_LARGE past `limit`. */
export function readBody(req: BodySource, limit: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
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
    req.on("end", () => resolve(Buffer.concat(chunks)));
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
  req.on("error", (err) => t.destroy(err));
  req.on("aborted", () => t.destroy(aborted()));
  return req.pipe(t);
}
