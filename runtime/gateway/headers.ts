/**
 * Header hygiene at the edge: what the gateway refuses, what it strips in both directions, and the
 * headers it owns (set after stripping, so a client's `Connection: x-forwarded-for` cannot remove them).
 */
import { isIP } from "node:net";
import { HOP_BY_HOP } from "../net/headers.ts";
import { inRanges, type IpRange } from "../decide/authorize.ts";
import { absoluteFormAuthority } from "../decide/canonical.ts";

/**
 * The gateway's header namespace: a client's `x-meshgate-*` request headers are never forwarded (the
 * gateway sets its own after the copy: the principal, `x-meshgate-mirror` on a mirrored copy, …), so no
 * client can tell an upstream what only the gateway or a sidecar may assert (`x-meshgate-peer`).
 */
export const OWN_PREFIX = "x-meshgate-";

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
  // A client certificate's description as Envoy forwards it: the gateway asserts none, and a client's
  // copy would read to an upstream as a verified peer (Envoy's default for it is `sanitize` too).
  "x-forwarded-client-cert",
]);

/**
 * RFC 9112 §3.2.2: a request with an absolute-form target (`GET http://api.example/x HTTP/1.1`) is for the
 * target's host, whatever its Host header says — decide() routes and authorizes it by that host, so it is
 * also the Host the upstream gets (and X-Forwarded-Host, Forwarded, the cache key): the received Host is
 * replaced, or a request routed as one host would reach the upstream as another. An invalid authority is
 * left to decide(), which refuses the target.
 */
export function useTargetAuthority(req: { url?: string; headers: { host?: string } }): void {
  const authority = req.url === undefined ? null : absoluteFormAuthority(req.url);
  if (authority !== null) req.headers.host = authority;
}

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

/**
 * Aliases of the forwarding headers the gateway owns, which frameworks read for the scheme, host or path
 * the client used: Rack's `X-Forwarded-Scheme` and `X-Forwarded-Ssl`, Spring's and Werkzeug's
 * `X-Forwarded-Prefix` (and `-Ssl`), IIS's and old Symfony's `X-Original-URL`/`X-Rewrite-URL`, Microsoft's
 * `Front-End-Https`, the rest of Traefik's list (`-Server`, `-Uri`, `-Method`), and the method overrides
 * (`X-HTTP-Method-Override`, `X-HTTP-Method`, `X-Method-Override`). A client's copy would
 * tell the upstream another origin or path than the one the gateway routed, authorized and keyed its cache
 * by (a redirect to https, or links to another prefix, cached for everyone: web cache poisoning). Client
 * values are dropped; unlike the owned headers, a route's request transform may still set them.
 */
const FORWARDING_ALIASES = [
  "x-forwarded-scheme",
  "x-forwarded-ssl",
  "x-forwarded-protocol",
  "x-url-scheme",
  "front-end-https",
  "x-forwarded-prefix",
  "x-forwarded-server",
  "x-forwarded-uri",
  "x-forwarded-method",
  "x-original-url",
  "x-rewrite-url",
  "x-original-host",
  "x-host",
  // The method the gateway routed and authorized is the request's: an override would turn an allowed POST
  // into a DELETE at an upstream that honours it (Rails, Express's method-override, Spring's filter).
  "x-http-method-override",
  "x-http-method",
  "x-method-override",
];

/** The names the gateway never forwards upstream: hop-by-hop, gateway-owned headers and their aliases. */
export const NOT_FORWARDED: ReadonlySet<string> = new Set([
  ...HOP_BY_HOP,
  ...GATEWAY_OWNED,
  ...FORWARDING_ALIASES,
]);

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

/** The headers in which the gateway tells an upstream the client's address. */
export const CLIENT_ADDRESS_HEADERS: readonly string[] = ["x-forwarded-for", "forwarded", "x-real-ip"];

/**
 * The headers the gateway leaves out of every request to a cluster, or null for none: a mesh service gets
 * everything; a backend outside the mesh (`share` set) gets the identity headers (`identity`: the principal
 * headers and forwardClaims headers) only when it shares identity, and the client's address only when it
 * shares that. Built once per config.
 */
export function withheldHeaders(
  share: { readonly identity: boolean; readonly clientAddress: boolean } | null | undefined,
  identity: Iterable<string>,
): readonly string[] | null {
  if (!share) return null;
  const names = [...(share.identity ? [] : identity), ...(share.clientAddress ? [] : CLIENT_ADDRESS_HEADERS)];
  return names.length === 0 ? null : names;
}

export interface ClientAddress {
  /** The client's address: the socket peer, or the first trusted entry. */
  readonly client: string;
  /**
   * The request came through the trusted proxies (hop count ≥ 1, or the peer is one of the trusted
   * ranges): headers they set, such as X-Forwarded-Proto, may be believed.
   */
  readonly viaTrustedProxy: boolean;
  /** The trusted entries, the client first (empty when the peer is the client). */
  readonly trusted: readonly string[];
  /** What to send on in X-Forwarded-For: the trusted entries followed by the socket peer. */
  readonly forwardedFor: string;
}

const NONE: readonly string[] = Object.freeze([]);

/**
 * The client address from the header the trusted proxies append to (`x-forwarded-for`, or RFC 7239
 * `forwarded` and its `for=` parameters). `trust` says who they are:
 *
 * - a hop count n: with 0, the socket peer (both headers are spoofable); with n, the n-th entry from the
 *   right. The peer is used when the header has fewer entries than trusted hops.
 * - CIDR ranges (`clientIp.trustedProxies`, like Envoy's `xff_trusted_cidrs` or nginx's `set_real_ip_from`
 *   with `real_ip_recursive`): when the socket peer is in them, the header is walked from the right over
 *   entries in them; the first entry outside them is the client (all inside: the leftmost). A peer
 *   outside them is the client, whatever the header says.
 *
 * Either way an entry on the walk that is not an IP address (`unknown`, an obfuscated `_id`, garbage)
 * makes the peer the client: the address keys rate limits and IP rules, so it must be an address. Also
 * returns the chain to forward: the trusted entries, the client first, followed by the socket peer.
 */
export function clientAddress(
  value: string | string[] | undefined,
  peer: string,
  trust: number | readonly IpRange[],
  header: "x-forwarded-for" | "forwarded" = "x-forwarded-for",
): ClientAddress {
  if (typeof trust !== "number") return behindTrustedRanges(value, peer, trust, header);
  const direct: ClientAddress = {
    client: peer,
    viaTrustedProxy: trust > 0,
    trusted: NONE,
    forwardedFor: peer,
  };
  if (trust === 0 || value === undefined) return direct;
  const entries = headerEntries(value, header);
  if (entries === null || entries.length < trust) return direct;
  const trusted = entries.slice(entries.length - trust);
  const client = trusted[0]!;
  // Every trusted entry must be an address: it is forwarded, and the first one keys limits and IP rules.
  for (const t of trusted) if (isIP(t) === 0) return direct;
  return { client, viaTrustedProxy: true, trusted, forwardedFor: [...trusted, peer].join(", ") };
}

/**
 * The client address of a request under a config's `clientIp`: reads the header it names and trusts the
 * parsed `trustedProxies` ranges when there are any, else the hop count (what the gateway and its upgrade
 * path both ask).
 */
export function requestClientAddress(
  headers: { readonly forwarded?: string | undefined; readonly "x-forwarded-for"?: string | undefined },
  peer: string,
  clientIp: { readonly trustedHops: number; readonly header: "x-forwarded-for" | "forwarded" },
  trustedProxies: readonly IpRange[] | null | undefined,
): ClientAddress {
  return clientAddress(
    clientIp.header === "forwarded" ? headers.forwarded : headers["x-forwarded-for"],
    peer,
    trustedProxies ?? clientIp.trustedHops,
    clientIp.header,
  );
}

function behindTrustedRanges(
  value: string | string[] | undefined,
  peer: string,
  ranges: readonly IpRange[],
  header: "x-forwarded-for" | "forwarded",
): ClientAddress {
  const fromProxy = inRanges(ranges, peer);
  const direct: ClientAddress = {
    client: peer,
    viaTrustedProxy: fromProxy,
    trusted: NONE,
    forwardedFor: peer,
  };
  if (!fromProxy || value === undefined) return direct;
  const entries = headerEntries(value, header);
  if (entries === null || entries.length === 0) return direct;
  let first = entries.length - 1;
  for (; first >= 0; first--) {
    const e = entries[first]!;
    if (isIP(e) === 0) return direct;
    if (!inRanges(ranges, e)) break;
  }
  const trusted = entries.slice(Math.max(first, 0));
  return { client: trusted[0]!, viaTrustedProxy: true, trusted, forwardedFor: [...trusted, peer].join(", ") };
}

/** The addresses a forwarding header lists, left to right; null when a Forwarded value is malformed. */
function headerEntries(value: string | string[], header: "x-forwarded-for" | "forwarded"): string[] | null {
  const text = Array.isArray(value) ? value.join(",") : value;
  return header === "forwarded" ? forwardedFor(text) : xffEntries(text);
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
