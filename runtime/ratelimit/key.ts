/**
 * Which bucket a request counts against, from facts the gateway already established:
 *
 * | key kind | bucket per | when the fact is missing |
 * |---|---|---|
 * | `ip` | client address (trusted-hop aware); IPv6 by its /64 | — (always known) |
 * | `subject` | authenticated principal's subject (the gateway qualifies it by mechanism and provider) | the client address |
 * | `consumer` | API-key consumer | the client address |
 * | `header` | value of the named request header | the client address |
 * | `route` | the route: one bucket for everyone | — |
 *
 * A missing subject, consumer or header falls back to the client address rather than to one shared
 * bucket (which one client could exhaust for everyone) or to no limit (which dropping the header would
 * buy): every request is limited by something that is not the client's free choice. Each kind has its
 * own prefix, so a header value can never name another kind's bucket. Values longer than 64 characters
 * are replaced by their SHA-256, bounding the memory a key can take. The client address is the one
 * `clientAddress()` computed (X-Forwarded-For only as far as `trustedHops` or `trustedProxies` allow), so it is not
 * spoofable; the header kind is exactly as spoofable as the header the spec chose — except an identity
 * header the gateway sets (x-meshgate-*, a forwardClaims header), for which the gateway passes the
 * principal's value, not the client's copy (which it removes before forwarding).
 */
import { createHash } from "node:crypto";
import { isIP } from "node:net";
import { PRINCIPAL_HEADERS } from "../contract/schema.ts";
import { reservedHeader } from "../gateway/headers.ts";

export type KeyKind = "ip" | "subject" | "consumer" | "header" | "route";

/** Longest value used as-is in a key; longer ones are hashed. */
export const MAX_KEY_VALUE = 64;

/** The key for one request. `header` is the chosen header's value (undefined when absent). */
export function rateLimitKey(
  kind: KeyKind,
  client: string,
  subject: string | undefined,
  consumer: string | undefined,
  header: string | string[] | undefined,
): string {
  switch (kind) {
    case "ip":
      return `i:${clientKey(client)}`;
    case "route":
      return "r";
    case "subject":
      return subject ? `s:${bounded(subject)}` : `i:${clientKey(client)}`;
    case "consumer":
      return consumer ? `c:${bounded(consumer)}` : `i:${clientKey(client)}`;
    case "header": {
      // Node joins repeated headers with ", ": the joined value is the key (repeating changes the key,
      // it cannot remove it).
      const v = Array.isArray(header) ? header.join(", ") : header;
      return v ? `h:${bounded(v)}` : `i:${clientKey(client)}`;
    }
  }
}

function bounded(v: string): string {
  return v.length <= MAX_KEY_VALUE ? v : `#${createHash("sha256").update(v).digest("base64url")}`;
}

/**
 * The client address as a key: IPv4 as is (also when IPv4-mapped IPv6), IPv6 by its /64 prefix — one
 * host usually owns a whole /64, so per-address buckets would let it rotate addresses at will.
 * Anything else (a trusted proxy passing junk) is bounded like any value.
 */
export function clientKey(address: string): string {
  // IPv4 (the common case) needs no normalization: anything without ':' is used as it is (bounded).
  if (!address.includes(":")) return address.length <= MAX_KEY_VALUE ? address : bounded(address);
  if (isIP(address) === 6) {
    const lower = address.toLowerCase();
    // The spelling Node gives IPv4 peers of a dual-stack socket: answered without expanding the groups.
    const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/.exec(lower);
    if (mapped) return mapped[1]!;
    const groups = expandIpv6(lower);
    if (groups) {
      // Every other spelling of an IPv4-mapped address (::ffff:102:304, 0:0:0:0:0:ffff:1.2.3.4, …) is
      // that IPv4 address too, not one /64 shared by every IPv4 client spelled so.
      if (groups[5] === "ffff" && groups.slice(0, 5).every((g) => g === "0")) {
        const hi = parseInt(groups[6]!, 16);
        const lo = parseInt(groups[7]!, 16);
        return `${hi >> 8}.${hi & 255}.${lo >> 8}.${lo & 255}`;
      }
      return `${groups.slice(0, 4).join(":")}::/64`;
    }
  }
  return bounded(address);
}

/** The 8 groups of an IPv6 address (without zone), as lower-case hex without leading zeros. */
function expandIpv6(address: string): string[] | null {
  const noZone = address.split("%")[0]!;
  let head: string[];
  let tail: string[];
  const dbl = noZone.indexOf("::");
  if (dbl === -1) {
    head = noZone.split(":");
    tail = [];
  } else {
    head = noZone.slice(0, dbl) === "" ? [] : noZone.slice(0, dbl).split(":");
    tail = noZone.slice(dbl + 2) === "" ? [] : noZone.slice(dbl + 2).split(":");
  }
  const toGroups = (parts: string[]): string[] | null => {
    const out: string[] = [];
    for (const part of parts) {
      if (part.includes(".")) {
        const o = part.split(".").map(Number);
        if (o.length !== 4) return null;
        out.push(((o[0]! << 8) | o[1]!).toString(16), ((o[2]! << 8) | o[3]!).toString(16));
      } else out.push(parseInt(part, 16).toString(16));
    }
    return out;
  };
  const h = toGroups(head);
  const t = toGroups(tail);
  if (!h || !t || h.length + t.length > 8) return null;
  return [...h, ...Array<string>(8 - h.length - t.length).fill("0"), ...t];
}

/**
 * A header the gateway owns and drops or replaces before forwarding (X-Forwarded-For, X-Request-Id, …):
 * not a key. The principal headers are keyed by the principal's value (the gateway passes it), so they are.
 */
export function ownedByTheGateway(header: string): boolean {
  return (
    reservedHeader(header) === "owned by the gateway" &&
    !(PRINCIPAL_HEADERS as readonly string[]).includes(header.toLowerCase())
  );
}
