/**
 * Local replies: the answers a proxy writes itself instead of forwarding (a deny, a limit, an upstream
 * failure). One writer for the gateway and the sidecar, so both answer every client the same way:
 *
 * - a gRPC call over HTTP/2 gets a trailers-only response (HTTP 200 and `grpc-status` mapped from the
 *   HTTP status, as Envoy's local replies) — gRPC clients read the outcome from grpc-status only;
 * - a gRPC-Web call (HTTP/1.1 or HTTP/2) gets the same in its form: HTTP 200, the status in the
 *   headers, no body (clients map a bare HTTP status each their own way; the header is exact);
 * - everything else gets `{"error":{"code","message"}}` with `x-meshgate-error: <code>` (no body for HEAD);
 * - a response whose head already went out cannot carry a reply: it is reset, never ended cleanly
 *   (a truncated response must not look complete).
 */
import type { OutgoingHttpHeaders } from "node:http";
import type { ForwardOutcome } from "../upstream/forward.ts";
import { grpcStatusFor, grpcTrailersOnly, isGrpc } from "../upstream/grpc.ts";
import { grpcWebCall, grpcWebContentType } from "../upstream/grpc-web.ts";
import { respondTrailersOnly } from "../upstream/h2pool.ts";

/** What writeLocalReply needs of a request: HTTP/1 and HTTP/2 compatibility requests both fit. */
export interface ReplyRequest {
  readonly method?: string | undefined;
  readonly headers: { readonly "content-type"?: string | undefined };
}

/** What writeLocalReply needs of a response: HTTP/1 and HTTP/2 compatibility responses both fit. */
export interface ReplyResponse {
  readonly headersSent: boolean;
  statusCode: number;
  writeHead(status: number, headers: OutgoingHttpHeaders): unknown;
  end(body?: string): unknown;
  destroy(error?: Error): unknown;
}

export interface LocalReply {
  readonly status: number;
  /** The stable error code (the proxy's catalog): `x-meshgate-error` and the body's `code`. */
  readonly code: string;
  readonly message: string;
  /** More response headers (Retry-After, WWW-Authenticate, x-meshgate-denied, …). */
  readonly extra?: Readonly<Record<string, string>> | undefined;
}

/** What responseCompleted reads: HTTP/1 and HTTP/2 compatibility responses both fit. */
export interface ClosedResponse {
  readonly writableFinished: boolean;
  /** The HTTP/2 stream of a compatibility response. */
  readonly stream?: { readonly rstCode?: number | undefined };
}

/**
 * Whether a response that closed went out whole: HTTP/1, every byte handed to the socket; HTTP/2, the
 * stream closed without RST_STREAM (rstCode 0, trailers-only answers included). Node reports a stream the
 * client reset as writableFinished: read that way, a request nobody answered was logged as completed, and
 * its upstream request — the client gone — was never cancelled.
 */
export function responseCompleted(res: ClosedResponse): boolean {
  const stream = res.stream;
  return stream === undefined ? res.writableFinished : stream.rstCode === 0;
}

/**
 * The status a closed exchange is counted and logged with: its response's, or 499 (nginx's "client closed
 * request") when no response head went out — the client left first, and Node's statusCode would still read
 * its default 200, a success nobody received.
 */
export function closedStatus(res: { readonly headersSent: boolean; readonly statusCode: number }): number {
  return res.headersSent ? res.statusCode : 499;
}

/** How the reply went out: JSON, gRPC (or gRPC-Web) trailers-only, or a reset (the head was already sent). */
export type ReplyForm = "json" | "grpc" | "reset";

/**
 * Writes a local reply. `h2`: the exchange is HTTP/2 (gRPC replies need it); `close`: an HTTP/1.1
 * response that ends its connection (`Connection: close`, while draining). The response's statusCode is
 * the reply's status whatever the form, so metrics and access logs count the HTTP status even when a
 * gRPC caller received 200 + grpc-status.
 */
export function writeLocalReply(
  req: ReplyRequest,
  res: ReplyResponse,
  reply: LocalReply,
  h2: boolean,
  close: boolean,
): ReplyForm {
  const { status, code, message, extra } = reply;
  if (res.headersSent) {
    res.destroy(new Error(`local reply ${code} after the response head was sent`));
    return "reset";
  }
  if (h2 && isGrpc(req.headers["content-type"])) {
    res.statusCode = status;
    const headers = grpcTrailersOnly(grpcStatusFor(status, code), message, code, extra);
    if (respondTrailersOnly(res, 200, headers) !== null) return "grpc";
  }
  const web = grpcWebCall(req.headers["content-type"]);
  if (web !== null) {
    const headers: OutgoingHttpHeaders = {
      ...grpcTrailersOnly(grpcStatusFor(status, code), message, code, extra),
      "content-type": grpcWebContentType(web),
      "content-length": 0,
    };
    if (close && !h2) headers.connection = "close";
    res.writeHead(200, headers);
    // The head is written: statusCode now only tells the metrics and the access log what the reply was.
    res.statusCode = status;
    res.end();
    return "grpc";
  }
  const body = JSON.stringify({ error: { code, message } });
  const headers: OutgoingHttpHeaders = {
    "content-type": "application/json",
    "content-length": Buffer.byteLength(body),
    "x-meshgate-error": code,
  };
  if (close && !h2) headers.connection = "close";
  if (extra !== undefined) for (const k in extra) headers[k] = extra[k];
  res.writeHead(status, headers);
  res.end(req.method === "HEAD" ? undefined : body);
  return "json";
}

/** The error codes upstreamFailure answers with; both proxies' catalogs define them. */
export type UpstreamFailureCode =
  | "upstream_timeout"
  | "upstream_connect_failure"
  | "no_healthy_upstream"
  | "upstream_overflow"
  | "upstream_reset";

/**
 * The local reply for a forward that failed before any response head reached the client: 504 on a
 * timeout, 503 when no connection could be opened, no endpoint is available or the breaker is open, 502
 * when the upstream reset or closed before a complete head (or the exchange failed otherwise after the
 * upstream answered: the request body overran its limit once the upstream's head was in).
 */
export function upstreamFailure(outcome: ForwardOutcome): readonly [number, UpstreamFailureCode] {
  switch (outcome) {
    case "timeout":
      return [504, "upstream_timeout"];
    case "connect_failure":
      return [503, "upstream_connect_failure"];
    case "no_endpoint":
      return [503, "no_healthy_upstream"];
    case "overflow":
      return [503, "upstream_overflow"];
    default:
      return [502, "upstream_reset"];
  }
}

/** Fast failures (no endpoint, breaker open) are counted, not logged one line each: that would flood the log during an incident. */
export const logsUpstreamFailure = (outcome: ForwardOutcome): boolean =>
  outcome !== "no_endpoint" && outcome !== "overflow";
