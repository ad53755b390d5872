/**
 * gRPC answers for the errors a sidecar generates itself. A gRPC client reads a call's outcome from
 * `grpc-status`, not from the HTTP status, so a refusal of a gRPC request (content-type
 * `application/grpc…`) is a trailers-only response — HTTP 200, one HEADERS frame with END_STREAM — whose
 * `grpc-status` is mapped from the HTTP status the way gRPC's HTTP-to-gRPC status table and Envoy's local
 * replies map it (403 → 7 PERMISSION_DENIED, 503 → 14 UNAVAILABLE, …), with `grpc-message`, and the
 * sidecar's `x-meshgate-error` (and `x-meshgate-denied`) as metadata.
 */

/** gRPC status codes used here (https://grpc.github.io/grpc/core/md_doc_statuscodes.html). */
export const GrpcStatus = {
  UNKNOWN: 2,
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
 * `grpc-message` encoding (gRPC over HTTP/2, "Responses"): bytes outside printable ASCII, and `%`, are
 * percent-encoded from the UTF-8 of the message.
 */
export function encodeGrpcMessage(message: string): string {
  let plain = true;
  for (let i = 0; i < message.length; i++) {
    const c = message.charCodeAt(i);
    if (c < 0x20 || c > 0x7e || c === 0x25) {
      plain = false;
      break;
    }
  }
  if (plain) return message;
  let out = "";
  for (const byte of Buffer.from(message, "utf8")) {
    out +=
      byte < 0x20 || byte > 0x7e || byte === 0x25
        ? `%${byte.toString(16).toUpperCase().padStart(2, "0")}`
        : String.fromCharCode(byte);
  }
  return out;
}

/** The headers of a trailers-only gRPC error response for a sidecar error `code`. */
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
