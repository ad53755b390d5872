/**
 * Writables that throw a response body away: the body of a retryable 5xx being drained, a health
 * probe's, a mirrored copy's, the (empty) rest of a trailers-only answer.
 *
 * A pool destroys the writable it was handed with the error that failed the exchange (the upstream cut
 * the body, reset it, let it stall past the timeout, sent a malformed chunk, or the caller cancelled), and
 * reports the same error through the exchange's promise. A writable destroyed with an error emits
 * 'error': one that nobody listens to is thrown from the event, and ends the process. These writables
 * listen to their own errors, so the failure is only ever the promise's.
 */
import { Writable } from "node:stream";

const ignoreError = (): void => {};

/** Discards everything written; a failure of the exchange is the exchange's promise's, never thrown. */
export class Discard extends Writable {
  constructor() {
    super();
    this.on("error", ignoreError);
  }

  override _write(_chunk: unknown, _enc: BufferEncoding, cb: () => void): void {
    cb();
  }
}
/**
 * Discards a response body on the way to another attempt, within bounds: once more than `maxBytes` were
 * written, or a write comes at or after `deadline` (by `now`), `cut` is called — once — and the caller
 * gives the body up (its connection closed, its stream reset) rather than waiting for the rest. A silence
 * is bounded by the exchange's own body timeout.
 */
export class BoundedDiscard extends Discard {
  private seen = 0;
  private done = false;
  private readonly maxBytes: number;
  private readonly deadline: number;
  private readonly now: () => number;
  private readonly cut: () => void;

  constructor(maxBytes: number, deadline: number, now: () => number, cut: () => void) {
    super();
    this.maxBytes = maxBytes;
    this.deadline = deadline;
    this.now = now;
    this.cut = cut;
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, cb: () => void): void {
    this.seen += chunk.length;
    const over = !this.done && (this.seen > this.maxBytes || this.now() >= this.deadline);
    cb();
    if (over) {
      this.done = true;
      this.cut();
    }
  }
}
