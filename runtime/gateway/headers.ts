/**
 * Header hygiene at the edge: what the gateway refuses, what it strips in both directions, and the
 * headers it owns (set after stripping, so a client's `Connection: x-forwarded-for` cannot remove them).
 */
import type { IncomingHttpHeaders, OutgoingHttpHeaders } from "node:http";

/** RFC 9110 §7.6.1 hop-by-hop headers, plus the legacy ones proxies must not forward. */
const HOP_BY_HOP = new Set([
  "connection",
  "keep-alive",
  "proxy-connection",
  "proxy-authenticate",
  "proxy-authorization",
  "te",
  "trailer",
  "transfer-encoding",
  "upgrade",
  "http2-settings",
]);

/** Headers only the gateway sets; a client's values are dropped. */
const GATEWAY_OWNED = new Set([
  "x-forwarded-for",
  "x-forwarded-proto",
  "x-forwarded-host",
  "x-forwarded-port",
  "forwarded",
  "x-real-ip",
  "x-request-id",
  "x-meshgate-route",
  "x-meshgate-client-ip",
]);

/** Request headers that must appear once: a duplicate is ambiguous between proxy and upstream. */
const SINGLETON = new Set([
  "host",
  "content-length",
  "content-type",
  "authorization",
  "x-api-key",
  "transfer-encoding",
  "x-forwarded-for",
  "x-forwarded-proto",
  "x-forwarded-host",
  "x-request-id",
  "cookie",
]);

export type HeaderProblem = {
  code: "duplicate_header" | "ambiguous_header_name" | "bad_transfer_encoding";
  detail: string;
};

/**
 * Checks the raw request headers once: singletons duplicated, names with "_" or "." (which some stacks
 * alias to dashes: `x_user_id` or `x.user.id` → `x-user-id`, forging an identity header), any
 * Transfer-Encoding other than exactly "chunked", and Transfer-Encoding in an HTTP/1.0 request
 * (RFC 9112 §6.1: faulty framing).
 */
export function checkRequestHeaders(rawHeaders: readonly string[], httpMinor = 1): HeaderProblem | null {
  let seen: Set<string> | null = null;
  for (let i = 0; i < rawHeaders.length; i += 2) {
    const name = rawHeaders[i]!.toLowerCase();
    if (name.includes("_") || name.includes(".")) {
      return {
        code: "ambiguous_header_name",
        detail: `header names with "_" or "." are refused (${rawHeaders[i]})`,
      };
    }
    if (name === "transfer-encoding" && httpMinor === 0) {
      return {
        code: "bad_transfer_encoding",
        detail: "Transfer-Encoding is not allowed in HTTP/1.0 requests",
      };
    }
    if (SINGLETON.has(name)) {
      seen ??= new Set();
      if (seen.has(name))
        return { code: "duplicate_header", detail: `header ${name} appears more than once` };
      seen.add(name);
      if (name === "transfer-encoding" && rawHeaders[i + 1]!.trim().toLowerCase() !== "chunked") {
        return { code: "bad_transfer_encoding", detail: "only Transfer-Encoding: chunked is accepted" };
      }
    }
  }
  return null;
}

/** Names listed in Connection headers (they are hop-by-hop for this connection). */
function connectionTokens(value: string | string[] | undefined): Set<string> | null {
  if (value === undefined) return null;
  const tokens = new Set<string>();
  for (const v of Array.isArray(value) ? value : [value]) {
    for (const t of v.split(",")) {
      const name = t.trim().toLowerCase();
      if (name) tokens.add(name);
    }
  }
  return tokens;
}

/** The request headers to send upstream: the client's, minus hop-by-hop and gateway-owned ones. */
export function upstreamRequestHeaders(
  headers: IncomingHttpHeaders | Record<string, string | string[] | undefined>,
): Record<string, string | string[]> {
  const listed = connectionTokens(headers.connection);
  const out: Record<string, string | string[]> = {};
  for (const name in headers) {
    // HTTP/2 pseudo-headers (:method, :path, :authority, :scheme) describe this hop only.
    if (name.charCodeAt(0) === 58 || HOP_BY_HOP.has(name) || GATEWAY_OWNED.has(name) || listed?.has(name))
      continue;
    const v = headers[name];
    if (v !== undefined) out[name] = v;
  }
  // "TE: trailers" is the one TE value allowed through (gRPC needs it).
  if (
    typeof headers.te === "string" &&
    headers.te
      .toLowerCase()
      .split(",")
      .some((t) => t.trim() === "trailers")
  ) {
    out.te = "trailers";
  }
  return out;
}

/** The response headers to send the client: the upstream's, minus hop-by-hop ones. */
export function downstreamResponseHeaders(
  headers: Record<string, string | string[] | undefined>,
): OutgoingHttpHeaders {
  const listed = connectionTokens(headers.connection);
  const out: OutgoingHttpHeaders = {};
  for (const name in headers) {
    if (HOP_BY_HOP.has(name) || listed?.has(name)) continue;
    const v = headers[name];
    if (v !== undefined) out[name] = v;
  }
  return out;
}

/**
 * The client address, trusting exactly `trustedHops` proxies in front of the gateway: with 0, the
 * socket peer (X-Forwarded-For is spoofable); with n, the n-th X-Forwarded-For entry from the right —
 * or the socket peer when the header has fewer entries. Also returns the chain to forward: the client
 * followed by the trusted proxies and the socket peer.
 */
export function clientAddress(
  xff: string | string[] | undefined,
  peer: string,
  trustedHops: number,
): { client: string; forwardedFor: string } {
  if (trustedHops === 0 || xff === undefined) return { client: peer, forwardedFor: peer };
  const entries = (Array.isArray(xff) ? xff.join(",") : xff)
    .split(",")
    .map((s) => s.trim())
    .filter(Boolean);
  if (entries.length < trustedHops) return { client: peer, forwardedFor: peer };
  const trusted = entries.slice(entries.length - trustedHops);
  return { client: trusted[0]!, forwardedFor: [...trusted, peer].join(", ") };
}

const REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/;

/** Keeps a well-formed client X-Request-Id (for correlation), else mints one. */
export function requestId(value: string | string[] | undefined, mint: () => string): string {
  return typeof value === "string" && REQUEST_ID.test(value) ? value : mint();
}
