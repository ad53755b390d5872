/**
 * gRPC at the proxies (gateway and sidecar):
 *
 * - Answers for the errors a proxy generates itself. A gRPC client reads a call's outcome from
 *   `grpc-status`, not from the HTTP status, so a refusal of a gRPC request (content-type
 *   `application/grpc…`, over HTTP/2) is a trailers-only response — HTTP 200, one HEADERS frame with
 *   END_STREAM — whose `grpc-status` is mapped from the HTTP status the way gRPC's HTTP-to-gRPC status
 *   table and Envoy's local replies map it (403 → 7 PERMISSION_DENIED, 503 → 14 UNAVAILABLE, …), except
 *   that a timed-out upstream is 4 DEADLINE_EXCEEDED (the call's deadline passed; UNAVAILABLE would
 *   invite the client to retry a call the server may still be running), with `grpc-message`, and the
 *   proxy's `x-meshgate-error` (and its other headers: `x-meshgate-denied`, `retry-after`, …) as metadata.
 * - The client's deadline (`grpc-timeout`, gRPC over HTTP/2 "Requests"): it shortens the route's timeout,
 *   never extends it, and the upstream is told the deadline the proxy enforces.
 */
import type { IncomingHttpHeaders } from "node:http";
import { headerValue } from "../net/headers.ts";

/** gRPC status codes used here (https://grpc.github.io/grpc/core/md_doc_statuscodes.html). */
export const GrpcStatus = {
  UNKNOWN: 2,
  DEADLINE_EXCEEDED: 4,
  PERMISSION_DENIED: 7,
  UNIMPLEMENTED: 12,
  INTERNAL: 13,
  UNAVAILABLE: 14,
  UNAUTHENTICATED: 16,
} as const;

/** Is this request gRPC (content-type `application/grpc`, `application/grpc+proto`, …)? */
export function isGrpc(contentType: string | undefined): boolean {
  return (
    contentType !== undefined &&
    contentType.length >= 16 &&
    contentType.slice(0, 16).toLowerCase() === "application/grpc" &&
    (contentType.length === 16 || contentType[16] === "+" || contentType[16] === ";")
  );
}

/** The gRPC status of an HTTP status (gRPC's doc/http-grpc-status-mapping.md, as Envoy applies it). */
export function grpcStatusOf(httpStatus: number): number {
  switch (httpStatus) {
    case 400:
      return GrpcStatus.INTERNAL;
    case 401:
      return GrpcStatus.UNAUTHENTICATED;
    case 403:
      return GrpcStatus.PERMISSION_DENIED;
    case 404:
      return GrpcStatus.UNIMPLEMENTED;
    case 429:
    case 502:
    case 503:
    case 504:
      return GrpcStatus.UNAVAILABLE;
    default:
      return GrpcStatus.UNKNOWN;
  }
}

/**
 * The gRPC status of a proxy's own error answer: the HTTP status mapped (grpcStatusOf), except an
 * upstream timeout, which is DEADLINE_EXCEEDED.
 */
export function grpcStatusFor(httpStatus: number, code: string): number {
  return code === "upstream_timeout" ? GrpcStatus.DEADLINE_EXCEEDED : grpcStatusOf(httpStatus);
}

/** Milliseconds per grpc-timeout unit (H hours, M minutes, S seconds, m ms, u µs, n ns). */
const GRPC_TIMEOUT_UNIT_MS: Readonly<Record<string, number>> = {
  H: 3_600_000,
  M: 60_000,
  S: 1000,
  m: 1,
  u: 1e-3,
  n: 1e-6,
};

/**
 * A `grpc-timeout` value in milliseconds (rounded up, so 500u is 1 ms, never 0), or undefined when the
 * value is absent or not 1–8 ASCII digits and one unit letter — a malformed deadline is ignored (the
 * route's timeout still applies), as gRPC servers and Envoy do.
 */
export function parseGrpcTimeout(value: string | undefined): number | undefined {
  if (value === undefined || value.length < 2 || value.length > 9) return undefined;
  const unit = GRPC_TIMEOUT_UNIT_MS[value[value.length - 1]!];
  if (unit === undefined) return undefined;
  let n = 0;
  for (let i = 0; i < value.length - 1; i++) {
    const c = value.charCodeAt(i) - 48;
    if (c < 0 || c > 9) return undefined;
    n = n * 10 + c;
  }
  return Math.ceil(n * unit);
}

/** Milliseconds as a `grpc-timeout` value (at most 8 digits: milliseconds, else whole seconds up). */
export function formatGrpcTimeout(ms: number): string {
  const whole = Math.max(0, Math.ceil(ms));
  return whole <= 99_999_999 ? `${whole}m` : `${Math.min(99_999_999, Math.ceil(whole / 1000))}S`;
}

/**
 * The timeout of a gRPC call through a proxy: the route's, shortened by the client's `grpc-timeout`.
 * `upstreamHeader` is the `grpc-timeout` to send upstream when it must differ from the client's — the
 * route's timeout when that is the shorter one (or the client sent none), so the server knows when the
 * proxy gives up; undefined means forward the client's header as it is.
 */
export function grpcDeadline(
  routeTimeoutMs: number,
  header: string | undefined,
): { readonly timeoutMs: number; readonly upstreamHeader: string | undefined } {
  const client = parseGrpcTimeout(header);
  if (client !== undefined && client <= routeTimeoutMs)
    return { timeoutMs: client, upstreamHeader: undefined };
  return { timeoutMs: routeTimeoutMs, upstreamHeader: formatGrpcTimeout(routeTimeoutMs) };
}

/**
 * The timeout of a request a proxy forwards: the route's, or for a gRPC call over HTTP/2 its deadline
 * (grpcDeadline) — then `upstreamHeaders["grpc-timeout"]` is set when the upstream must be told another
 * deadline than the client's.
 */
export function forwardTimeoutMs(
  h2: boolean,
  requestHeaders: IncomingHttpHeaders,
  upstreamHeaders: Record<string, string | string[]>,
  routeTimeoutMs: number,
): number {
  if (!h2 || !isGrpc(requestHeaders["content-type"])) return routeTimeoutMs;
  return grpcCallTimeoutMs(requestHeaders, upstreamHeaders, routeTimeoutMs);
}

/**
 * The timeout of a request known to be a gRPC call (or a gRPC-Web one): its deadline (grpcDeadline), with
 * `upstreamHeaders["grpc-timeout"]` set when the upstream must be told another deadline than the client's.
 */
export function grpcCallTimeoutMs(
  requestHeaders: IncomingHttpHeaders,
  upstreamHeaders: Record<string, string | string[]>,
  routeTimeoutMs: number,
): number {
  const deadline = grpcDeadline(routeTimeoutMs, requestHeaders["grpc-timeout"] as string | undefined);
  if (deadline.upstreamHeader !== undefined) upstreamHeaders["grpc-timeout"] = deadline.upstreamHeader;
  return deadline.timeoutMs;
}

/** `grpc-message` encoding (gRPC over HTTP/2, "Responses"): the gateway's header-value percent-encoding. */
export const encodeGrpcMessage: (message: string) => string = headerValue;

/** The headers of a trailers-only gRPC error response for a proxy error `code`. */
export function grpcTrailersOnly(
  grpcStatus: number,
  message: string,
  code: string,
  extra?: Record<string, string>,
): Record<string, string> {
  return {
    "content-type": "application/grpc",
    "grpc-status": String(grpcStatus),
    "grpc-message": encodeGrpcMessage(message),
    "x-meshgate-error": code,
    ...extra,
  };
}
