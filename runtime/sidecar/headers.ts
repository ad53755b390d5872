/**
 * Header hygiene in the sidecar. Both directions forward the headers they received minus the hop-by-hop
 * ones (RFC 9110 §7.6.1, and any a Connection header lists) and the headers the sidecar owns: the peer
 * identity it asserts to the app (`x-meshgate-peer`, `x-forwarded-client-cert`) is set by the inbound
 * side only after mTLS verified it; a value sent by anyone else is dropped, never forwarded.
 * Correlation headers (x-request-id, traceparent, x-forwarded-*) pass through: the sidecar is not an edge.
 */
import type { IncomingHttpHeaders } from "node:http";

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

/** Headers only the sidecar sets (on the inbound side, for the app). */
export const PEER_HEADER = "x-meshgate-peer";
export const XFCC_HEADER = "x-forwarded-client-cert";
const SIDECAR_OWNED = new Set([PEER_HEADER, XFCC_HEADER]);

/**
 * The request headers to forward: the received ones minus hop-by-hop and sidecar-owned headers, and
 * minus HTTP/2 pseudo-headers (`:path`, `:authority`, …: the pools set their own from the decision).
 */
export function forwardedRequestHeaders(headers: IncomingHttpHeaders): Record<string, string | string[]> {
  const connection = headers.connection;
  const listed = connection === undefined ? null : connectionTokens(connection);
  const out: Record<string, string | string[]> = {};
  for (const name in headers) {
    if (HOP_BY_HOP.has(name) || SIDECAR_OWNED.has(name) || listed?.has(name) || name.charCodeAt(0) === 58)
      continue;
    const v = headers[name];
    if (v !== undefined) out[name] = v;
  }
  // "TE: trailers" is the one TE value allowed through (gRPC needs it).
  if (typeof headers.te === "string" && /(?:^|,)\s*trailers\s*(?:,|$)/i.test(headers.te)) out.te = "trailers";
  return out;
}

function connectionTokens(value: string | string[]): Set<string> {
  const tokens = new Set<string>();
  for (const v of Array.isArray(value) ? value : [value]) {
    for (const t of v.split(",")) {
      const name = t.trim().toLowerCase();
      if (name) tokens.add(name);
    }
  }
  return tokens;
}

/**
 * Envoy's `x-forwarded-client-cert` format for a verified peer: `By=<this workload's ID>;Hash=<SHA-256 of
 * the peer's leaf, hex>;URI=<peer's SPIFFE ID>`. SPIFFE IDs hold no `;`, `,` or `"` (their grammar), so
 * no quoting is needed.
 */
export function xfccValue(own: string, peerId: string, peerFingerprint: string): string {
  return `By=${own};Hash=${peerFingerprint};URI=${peerId}`;
}
