/**
 * Header hygiene in the sidecar. Both directions forward the headers they received minus the hop-by-hop
 * ones (RFC 9110 §7.6.1, and any a Connection header lists: net/headers.ts upstreamRequestHeaders) and
 * the headers the sidecar owns: the peer identity it asserts to the app (`x-meshgate-peer`,
 * `x-forwarded-client-cert`) is set by the inbound side only after mTLS verified it; a value sent by anyone
 * else is dropped, never forwarded. Correlation headers (x-request-id, traceparent, x-forwarded-*) pass
 * through: the sidecar is not an edge.
 */
import { HOP_BY_HOP } from "../net/headers.ts";

/** Headers only the sidecar sets (on the inbound side, for the app). */
export const PEER_HEADER = "x-meshgate-peer";
export const XFCC_HEADER = "x-forwarded-client-cert";

/** The names the sidecar never forwards as received: hop-by-hop and sidecar-owned headers. */
export const NOT_FORWARDED: ReadonlySet<string> = new Set([...HOP_BY_HOP, PEER_HEADER, XFCC_HEADER]);

/**
 * Envoy's `x-forwarded-client-cert` format for a verified peer: `By=<this workload's ID>;Hash=<SHA-256 of
 * the peer's leaf, hex>;URI=<peer's SPIFFE ID>`. SPIFFE IDs hold no `;`, `,` or `"` (their grammar), so
 * no quoting is needed.
 */
export function xfccValue(own: string, peerId: string, peerFingerprint: string): string {
  return `By=${own};Hash=${peerFingerprint};URI=${peerId}`;
}
