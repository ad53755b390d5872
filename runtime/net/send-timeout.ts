/**
 * The send timeout after the last write (nginx's `send_timeout` covers every write to a client, the last
 * ones too). A response is ended — the upstream's part done, its connection back in the pool; a cached
 * or static body written whole — while bytes of it still wait in user space for a client that stopped
 * reading: nothing watched them, so such a client held its connection (and those bytes) for as long as it
 * kept its TCP window shut, and one that pipelined requests held every response queued behind it.
 */

/** A response of either HTTP version, as far as the guard reads and ends it. */
export interface GuardedResponse {
  readonly writableEnded: boolean;
  readonly writableFinished: boolean;
  readonly writableLength: number;
  readonly destroyed: boolean;
  /** HTTP/2 (compatibility API): the stream whose queue holds the bytes. */
  readonly stream?: {
    readonly writableFinished: boolean;
    readonly writableLength: number;
    readonly destroyed: boolean;
  };
  once(event: "finish", listener: () => void): unknown;
  destroy(error?: Error): unknown;
}

export const SEND_TIMEOUT_CODE = "E_SEND_TIMEOUT";

export function sendTimeoutError(): Error {
  return Object.assign(new Error("the client read nothing of the response within the send timeout"), {
    code: SEND_TIMEOUT_CODE,
  });
}

/**
 * Watches what is left of a response whose writer is done: if its client takes none of it for `ms`
 * (the bytes waiting in user space do not shrink), the response is destroyed — the connection closed, an
 * HTTP/2 stream reset, never a clean end — and `onTimeout` is called. A client that keeps reading, however
 * slowly, is not cut. Costs nothing for an HTTP/1 response already handed to the kernel whole (the usual
 * case): no timer is armed then; an HTTP/2 one, whose frames nghttp2 sends after this turn, gets a timer
 * that its 'finish' clears. Call it when the writer is done, ended or about to end (a pipeline still flushing).
 */
export function guardSendTail(res: GuardedResponse, ms: number, onTimeout?: () => void): void {
  if (!(ms > 0)) return;
  const w = res.stream ?? res;
  if (w.destroyed || w.writableFinished || (res.writableEnded && w.writableLength === 0)) return;
  let left = w.writableLength;
  /** Ended at the last look: only then does an unchanged length mean a whole period without progress. */
  let ended = res.writableEnded;
  let timer: NodeJS.Timeout | null = null;
  const check = () => {
    timer = null;
    if (w.destroyed || w.writableFinished) return;
    const now = w.writableLength;
    // Not ended: its writer (a file, a cached body) still streams and watches its own writes. Ended for a
    // whole period: the bytes left only shrink as the client takes them.
    if (!ended || now !== left) {
      left = now;
      ended = res.writableEnded;
      timer = setTimeout(check, ms).unref();
      return;
    }
    onTimeout?.();
    res.destroy(sendTimeoutError());
  };
  const stop = () => {
    if (timer !== null) clearTimeout(timer);
    timer = null;
  };
  // One listener: a response closed without finishing (reset, destroyed) is seen by check(), at the latest
  // one period later. The timer never holds a draining process up.
  timer = setTimeout(check, ms).unref();
  res.once("finish", stop);
}
