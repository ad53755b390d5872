/**
 * Header hygiene both proxies share: the hop-by-hop headers never forwarded (RFC 9110 §7.6.1, and any a
 * Connection header lists), the request-head checks every request passes before it is routed (singleton
 * headers, ambiguous names, Transfer-Encoding), request ids, and header-value encoding. What each proxy
 * owns on top (the gateway's X-Forwarded-* and principal headers, the sidecar's peer identity) lives
 * beside it (gateway/headers.ts, sidecar/headers.ts).
 */
import type { IncomingHttpHeaders } from "node:http";

/** RFC 9110 §7.6.1 hop-by-hop headers, plus the legacy ones proxies must not forward. */
export const HOP_BY_HOP: ReadonlySet<string> = new Set([
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
 * (RFC 9112 §6.1: faulty framing). Over HTTP/2 (`httpMajor` 2) a Cookie may come in several fields
 * (RFC 9113 §8.2.3: browsers split it into crumbs for HPACK); Node joins them with "; ", which is the one
 * Cookie header an HTTP/1.1 upstream must get.
 */
export function checkRequestHeaders(
  rawHeaders: readonly string[],
  httpMinor = 1,
  httpMajor = 1,
): HeaderProblem | null {
  let seen = 0;
  for (let i = 0; i < rawHeaders.length; i += 2) {
    const raw = rawHeaders[i]!;
    const info = nameInfo(raw);
    if (info === AMBIGUOUS) {
      return { code: "ambiguous_header_name", detail: `header names with "_" or "." are refused (${raw})` };
    }
    if (info === 0 || (info === COOKIE_BIT && httpMajor === 2)) continue;
    if (info === TE_BIT && httpMinor === 0) {
      return {
        code: "bad_transfer_encoding",
        detail: "Transfer-Encoding is not allowed in HTTP/1.0 requests",
      };
    }
    if ((seen & info) !== 0) {
      return { code: "duplicate_header", detail: `header ${raw.toLowerCase()} appears more than once` };
    }
    seen |= info;
    if (info === TE_BIT && rawHeaders[i + 1]!.trim().toLowerCase() !== "chunked") {
      return { code: "bad_transfer_encoding", detail: "only Transfer-Encoding: chunked is accepted" };
    }
  }
  return null;
}

/**
 * RFC 9113 §8.3.1: over HTTP/2 the target's authority is `:authority`, and a Host header that differs
 * makes the request malformed — a hop before this one routing on one and this proxy on the other would
 * disagree about which host the request is for. True when `host` contradicts `authority` (case aside).
 */
export function hostContradictsAuthority(authority: unknown, host: string | undefined): boolean {
  return (
    typeof authority === "string" && host !== undefined && host.toLowerCase() !== authority.toLowerCase()
  );
}

/** One bit per singleton header (SINGLETON, in order); AMBIGUOUS for names with "_" or "."; 0 otherwise. */
const SINGLETON_BITS = new Map([...SINGLETON].map((name, i) => [name, 1 << i] as const));
const TE_BIT = SINGLETON_BITS.get("transfer-encoding")!;
const COOKIE_BIT = SINGLETON_BITS.get("cookie")!;
const AMBIGUOUS = -1;
/** Header names as received → their check class; bounded, so random names cannot grow it. */
const NAME_INFO = new Map<string, number>();
const NAME_INFO_MAX = 2048;

function nameInfo(raw: string): number {
  let info = NAME_INFO.get(raw);
  if (info !== undefined) return info;
  const name = raw.toLowerCase();
  info = name.includes("_") || name.includes(".") ? AMBIGUOUS : (SINGLETON_BITS.get(name) ?? 0);
  if (NAME_INFO.size < NAME_INFO_MAX) NAME_INFO.set(raw, info);
  return info;
}

/**
 * Names listed in Connection headers (they are hop-by-hop for this connection) — but never `host`: the
 * Host a request was routed, authorized and cache-keyed by is the Host the next hop gets, so a client's
 * `Connection: host` cannot make the proxy forward it without one (the pool would then name the endpoint's
 * address, and a virtual-hosting upstream answer for another site, cached under this one's key).
 */
function connectionTokens(value: string | string[] | undefined): Set<string> | null {
  if (value === undefined) return null;
  const tokens = new Set<string>();
  for (const v of Array.isArray(value) ? value : [value]) {
    for (const t of v.split(",")) {
      const name = t.trim().toLowerCase();
      if (name && name !== "host") tokens.add(name);
    }
  }
  return tokens;
}

/**
 * The request headers to send upstream: the client's, minus HTTP/2 pseudo-headers, the names a Connection
 * header lists (Host excepted), the names of `skip` (hop-by-hop headers and the proxy's own: the gateway's
 * notForwarded(), the sidecar's NOT_FORWARDED) and, with `ownPrefix`, every name in the proxy's own
 * namespace (the gateway drops a client's `x-meshgate-*`, as Envoy drops an external client's
 * `x-envoy-*`); `TE: trailers` is kept.
 */
export function upstreamRequestHeaders(
  headers: IncomingHttpHeaders | Record<string, string | string[] | undefined>,
  skip: ReadonlySet<string>,
  ownPrefix: string | null = null,
): Record<string, string | string[]> {
  const listed = connectionTokens(headers.connection);
  const out: Record<string, string | string[]> = {};
  for (const name in headers) {
    // HTTP/2 pseudo-headers (:method, :path, :authority, :scheme) describe this hop only.
    if (name.charCodeAt(0) === 58 || skip.has(name) || listed?.has(name)) continue;
    if (ownPrefix !== null && name.startsWith(ownPrefix)) continue;
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

const REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/;

/** Keeps a well-formed client X-Request-Id (for correlation), else mints one. */
export function requestId(value: string | string[] | undefined, mint: () => string): string {
  return typeof value === "string" && REQUEST_ID.test(value) ? value : mint();
}

/**
 * A header value from any text: visible ASCII kept, everything else (and "%") percent-encoded as UTF-8.
 * Used for the principal headers the gateway sets and for gRPC's `grpc-message` (whose encoding rule is
 * the same: gRPC over HTTP/2, "Responses").
 */
export function headerValue(s: string): string {
  let plain = true;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x20 || c > 0x7e || c === 0x25) {
      plain = false;
      break;
    }
  }
  if (plain) return s;
  let out = "";
  for (const b of Buffer.from(s, "utf8")) {
    out +=
      b < 0x20 || b > 0x7e || b === 0x25
        ? `%${b.toString(16).toUpperCase().padStart(2, "0")}`
        : String.fromCharCode(b);
  }
  return out;
}
