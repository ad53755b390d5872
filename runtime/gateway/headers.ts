/**
 * Header hygiene at the edge: what the gateway refuses, what it strips in both directions, and the
 * headers it owns (set after stripping, so a client's `Connection: x-forwarded-for` cannot remove them).
 */
import type { IncomingHttpHeaders } from "node:http";
import { isIP } from "node:net";

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
  // The authenticated principal (runtime/auth: PRINCIPAL_HEADERS); forwardClaims headers are removed there.
  "x-meshgate-subject",
  "x-meshgate-consumer",
  "x-meshgate-groups",
  "x-meshgate-scopes",
  "x-meshgate-auth",
]);

/**
 * Why a header may not be changed by a route's transform, or null when it may: hop-by-hop headers
 * describe one connection, gateway-owned ones are set by the gateway alone (after stripping the
 * client's), `x-meshgate-*` is the gateway's namespace, Content-Length is recomputed, and Host is
 * changed only by `rewrite.host`.
 */
export function reservedHeader(name: string): string | null {
  const n = name.toLowerCase();
  if (HOP_BY_HOP.has(n)) return "a hop-by-hop header";
  if (GATEWAY_OWNED.has(n) || n.startsWith("x-meshgate-")) return "owned by the gateway";
  if (n === "content-length") return "recomputed by the gateway";
  if (n === "host") return "changed only by rewrite.host";
  return null;
}

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
  let seen = 0;
  for (let i = 0; i < rawHeaders.length; i += 2) {
    const raw = rawHeaders[i]!;
    const info = nameInfo(raw);
    if (info === AMBIGUOUS) {
      return { code: "ambiguous_header_name", detail: `header names with "_" or "." are refused (${raw})` };
    }
    if (info === 0) continue;
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

/** One bit per singleton header (SINGLETON, in order); AMBIGUOUS for names with "_" or "."; 0 otherwise. */
const SINGLETON_BITS = new Map([...SINGLETON].map((name, i) => [name, 1 << i] as const));
const TE_BIT = SINGLETON_BITS.get("transfer-encoding")!;
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

/** The names upstreamRequestHeaders always leaves out: hop-by-hop and gateway-owned headers. */
const NOT_FORWARDED: ReadonlySet<string> = new Set([...HOP_BY_HOP, ...GATEWAY_OWNED]);

/**
 * The names to leave out of a request sent upstream: hop-by-hop and gateway-owned headers plus `extra`
 * (a route's credential headers and identity headers, which would otherwise be deleted after the copy).
 * Built once per route, so the copy asks one set per header.
 */
export function notForwarded(extra: Iterable<string>): ReadonlySet<string> {
  const names = new Set(NOT_FORWARDED);
  for (const n of extra) names.add(n.toLowerCase());
  return names;
}

/**
 * The request headers to send upstream: the client's, minus hop-by-hop and gateway-owned ones (and the
 * other names of `skip`, from notForwarded()).
 */
export function upstreamRequestHeaders(
  headers: IncomingHttpHeaders | Record<string, string | string[] | undefined>,
  skip: ReadonlySet<string> = NOT_FORWARDED,
): Record<string, string | string[]> {
  const listed = connectionTokens(headers.connection);
  const out: Record<string, string | string[]> = {};
  for (const name in headers) {
    // HTTP/2 pseudo-headers (:method, :path, :authority, :scheme) describe this hop only.
    if (name.charCodeAt(0) === 58 || skip.has(name) || listed?.has(name)) continue;
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

export interface ClientAddress {
  /** The client's address: the socket peer, or the first trusted entry. */
  readonly client: string;
  /** The trusted entries, the client first (empty when the peer is the client). */
  readonly trusted: readonly string[];
  /** What to send on in X-Forwarded-For: the trusted entries followed by the socket peer. */
  readonly forwardedFor: string;
}

const NONE: readonly string[] = Object.freeze([]);

/**
 * The client address, trusting exactly `trustedHops` proxies in front of the gateway, from the header those
 * proxies append to (`x-forwarded-for`, or RFC 7239 `forwarded` and its `for=` parameters): with 0, the
 * socket peer (both headers are spoofable); with n, the n-th entry from the right. The peer is used when
 * the header has fewer entries than trusted hops, or when the trusted entry is not an IP address
 * (`unknown`, an obfuscated `_id`, garbage): the address is used for rate limits and IP rules, so it must
 * be an address. Also returns the chain to forward: the trusted entries followed by the socket peer.
 */
export function clientAddress(
  value: string | string[] | undefined,
  peer: string,
  trustedHops: number,
  header: "x-forwarded-for" | "forwarded" = "x-forwarded-for",
): ClientAddress {
  const direct: ClientAddress = { client: peer, trusted: NONE, forwardedFor: peer };
  if (trustedHops === 0 || value === undefined) return direct;
  const text = Array.isArray(value) ? value.join(",") : value;
  const entries = header === "forwarded" ? forwardedFor(text) : xffEntries(text);
  if (entries === null || entries.length < trustedHops) return direct;
  const trusted = entries.slice(entries.length - trustedHops);
  const client = trusted[0]!;
  // Every trusted entry must be an address: it is forwarded, and the first one keys limits and IP rules.
  for (const t of trusted) if (isIP(t) === 0) return direct;
  return { client, trusted, forwardedFor: [...trusted, peer].join(", ") };
}

function xffEntries(text: string): string[] {
  return text
    .split(",")
    .map((s) => s.trim())
    .filter(Boolean);
}

const FORWARDED_TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;

/**
 * The `for=` node of each element of an RFC 7239 Forwarded value, in order, as a bare address: quotes,
 * IPv6 brackets and ports removed. An element without `for` yields "" (not an address). Returns null when
 * the value is malformed (so nothing in it is trusted).
 */
export function forwardedFor(text: string): string[] | null {
  const out: string[] = [];
  let i = 0;
  const n = text.length;
  for (;;) {
    // One forwarded-element: pairs separated by ";".
    let node = "";
    let first = true;
    for (;;) {
      while (i < n && (text[i] === " " || text[i] === "\t")) i++;
      if (!first || i < n) {
        const eq = text.indexOf("=", i);
        if (eq < 0) return null;
        const name = text.slice(i, eq).trim().toLowerCase();
        if (!FORWARDED_TOKEN.test(name)) return null;
        i = eq + 1;
        let value: string;
        if (text[i] === '"') {
          let j = i + 1;
          value = "";
          while (j < n && text[j] !== '"') {
            if (text[j] === "\\") j++;
            if (j < n) value += text[j];
            j++;
          }
          if (j >= n) return null;
          i = j + 1;
        } else {
          let j = i;
          while (j < n && text[j] !== ";" && text[j] !== "," && text[j] !== " " && text[j] !== "\t") j++;
          value = text.slice(i, j);
          if (!FORWARDED_TOKEN.test(value)) return null;
          i = j;
        }
        if (name === "for") node = value;
      }
      first = false;
      while (i < n && (text[i] === " " || text[i] === "\t")) i++;
      if (i < n && text[i] === ";") {
        i++;
        continue;
      }
      break;
    }
    out.push(bareAddress(node));
    if (i >= n) return out;
    if (text[i] !== ",") return null;
    i++;
  }
}

/** "192.0.2.1:8080" → "192.0.2.1"; "[2001:db8::1]:443" → "2001:db8::1"; anything else unchanged. */
function bareAddress(node: string): string {
  if (node.startsWith("[")) {
    const close = node.indexOf("]");
    return close > 0 ? node.slice(1, close) : node;
  }
  const colon = node.indexOf(":");
  return colon > 0 && node.indexOf(":", colon + 1) < 0 ? node.slice(0, colon) : node;
}

/**
 * RFC 7239 `Forwarded` sent upstream: one element per trusted hop, then this hop's (the peer it received
 * the request from, the scheme and the host). The client's own value was dropped as gateway-owned; the
 * trusted entries are re-serialized from the addresses parsed, never copied through.
 */
export function forwardedHeader(
  trusted: readonly string[],
  peer: string,
  scheme: string,
  host: string | undefined,
): string {
  const hostValue =
    host && /^[A-Za-z0-9.:[\]-]+$/.test(host) ? `;host=${host.includes(":") ? `"${host}"` : host}` : "";
  const own = `for=${forNode(peer)};proto=${scheme}${hostValue}`;
  if (trusted.length === 0) return own;
  let out = "";
  for (const t of trusted) out += `for=${forNode(t)}, `;
  return out + own;
}

const forNode = (address: string) => (address.includes(":") ? `"[${address}]"` : address);

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
