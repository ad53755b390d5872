/**
 * authorize(): the pure authorization decision for one request at the gateway — shared by the gateway (per
 * request, after authentication), the policies (on synthetic requests with a given principal, before
 * deploy) and the tests. No I/O, no clock, no randomness.
 *
 * The rule, in order:
 *  1. client IP ranges (`clientIps`, IPv4 and IPv6 CIDRs; IPv4-mapped IPv6 addresses match IPv4 ranges and
 *     the other way round) come first, for every route and every caller → 403 `forbidden`: a caller outside
 *     them learns nothing about the route's authentication (a 401 for a bad credential and a 403 for a good
 *     one would let anyone anywhere test stolen API keys or tokens), and the gateway checks them before it
 *     authenticates at all (no JWKS fetch, no OIDC login for such a caller);
 *  2. a public route admits everyone else;
 *  3. no principal → 401 `unauthenticated`; a principal from a mechanism the route does not accept → 401;
 *  4. scopes and claims constrain principals that carry them — tokens (`jwt`, `oidc`): every listed scope
 *     must be granted, and every listed claim must hold one of its accepted values → 403;
 *  5. consumers and groups constrain API-key principals: when either list is non-empty the consumer must be
 *     listed or belong to a listed group (the two lists are one allow-list of who) → 403.
 * A client-certificate principal is constrained by its provider's allowed subjects/SANs (checked when it
 * authenticates) and by the client IP ranges; scopes/claims/consumers do not apply to it, as the spec refuses
 * them on routes without jwt/oidc (or apiKey).
 *
 * Client IP ranges are compiled once per RouteAuth (memoized by object identity: configs are frozen), so a
 * request parses only its own address, and only when the route has ranges.
 */
import type { GatewayRuntimeConfig, RouteAuth } from "../contract/schema.ts";
import { decide, type CompiledGateway, type Decision, type GatewayRequestFacts } from "./decide.ts";

/** The authentication mechanisms (RouteAuth.anyOf kinds). */
export type AuthMechanismKind = RouteAuth["anyOf"][number]["kind"];

/** The provider name API-key principals carry (API keys have one gateway-wide consumer list). */
export const API_KEY_PROVIDER = "apiKeys";

/** Who made the request, as authentication established it. A plain, frozen value. */
export interface Principal {
  readonly mechanism: AuthMechanismKind;
  /** The JWT / OIDC / client-certificate provider's name; `apiKeys` for API keys. */
  readonly provider: string;
  /** `sub` for tokens and sessions, the consumer name for API keys, the subject DN for certificates. */
  readonly subject: string;
  /** The API-key consumer, else null. */
  readonly consumer: string | null;
  /** The API-key consumer's groups (empty for other mechanisms). */
  readonly groups: readonly string[];
  /** Granted scopes (`scope` / `scp` of a token, the token response's scope for OIDC). */
  readonly scopes: readonly string[];
  /** Verified claims (tokens, sessions) or certificate facts; never secrets. */
  readonly claims: Readonly<Record<string, unknown>>;
  /** Epoch milliseconds after which the principal is void (token `exp`, session end); null = none. */
  readonly expiresAt: number | null;
}

/**
 * Who a principal is, for a per-principal cache entry and a rate-limit bucket keyed by subject (requests
 * and WebSocket upgrades alike): who authenticated, through which provider — the subject, and for a client
 * certificate its SANs too (SPIFFE SVIDs share one subject, such as `C=US, O=SPIRE`, and are told apart by
 * their URI SAN alone). "" for a principal that nothing identifies (a JWT without `sub`): it bypasses the
 * cache (requestBypass) and is limited by its client address, as every such principal would otherwise
 * share one entry or bucket.
 */
export function principalId(p: Principal | null): string | null {
  if (p === null) return null;
  const sans = p.mechanism === "clientCert" ? p.claims.sans : undefined;
  // JSON: no SAN value can pose as a list of others.
  const id = Array.isArray(sans) && sans.length > 0 ? JSON.stringify([p.subject, sans]) : p.subject;
  return id ? `${p.mechanism}/${p.provider}/${id}` : "";
}

/** Which requirement of the route refused the request: a bounded label for metrics. */
export type AuthzRequirement = "authentication" | "mechanism" | "client_ip" | "scope" | "claim" | "consumer";

export type AuthzDecision =
  | { readonly kind: "allow"; readonly principal: Principal | null }
  | {
      readonly kind: "deny";
      readonly status: 401 | 403;
      readonly code: "unauthenticated" | "forbidden";
      readonly requirement: AuthzRequirement;
      /** Names the unmet requirement (no secrets: scope, claim and range names come from the config). */
      readonly reason: string;
    };

/** A route's requirements, prepared once. */
export interface CompiledRouteAuth {
  readonly auth: RouteAuth;
  readonly ranges: readonly IpRange[];
  readonly consumers: ReadonlySet<string>;
  readonly groups: ReadonlySet<string>;
  readonly claims: readonly {
    readonly name: string;
    readonly path: readonly string[];
    readonly values: ReadonlySet<string>;
  }[];
  /** For 401 reasons: "jwt main, apiKey". */
  readonly describe: string;
}

/** An address range as four 32-bit words (IPv4 as IPv4-mapped IPv6, ::ffff:a.b.c.d) and a prefix length. */
export interface IpRange {
  readonly words: readonly [number, number, number, number];
  readonly bits: number;
  readonly text: string;
}

const compiledCache = new WeakMap<RouteAuth, CompiledRouteAuth>();

/** The key of a mechanism in `accepts`. */
export const mechanismKey = (kind: AuthMechanismKind, provider: string): string =>
  kind === "apiKey" ? "apiKey" : `${kind}:${provider}`;

/**
 * Compiles a route's requirements (parses its CIDRs once). Throws for a malformed range: the spec check
 * refuses those before a config exists, so this only guards hand-written configs at load time.
 */
export function compileRouteAuth(auth: RouteAuth): CompiledRouteAuth {
  const hit = compiledCache.get(auth);
  if (hit) return hit;
  const ranges = auth.clientIps.map((text) => {
    const r = parseCidr(text);
    if (!r) throw new Error(`auth.clientIps: ${JSON.stringify(text)} is not an IPv4 or IPv6 CIDR range`);
    return r;
  });
  const compiled: CompiledRouteAuth = {
    auth,
    ranges,
    consumers: new Set(auth.consumers),
    groups: new Set(auth.groups),
    claims: auth.claims.map((c) => ({ name: c.name, path: c.name.split("."), values: new Set(c.values) })),
    describe: auth.anyOf.map((m) => ("provider" in m ? `${m.kind} ${m.provider}` : m.kind)).join(", "),
  };
  compiledCache.set(auth, compiled);
  return compiled;
}

/** Whether one of the route's mechanisms (`anyOf`) is the principal's, compared field by field (no key string). */
function accepted(auth: RouteAuth, p: Principal): boolean {
  const list = auth.anyOf;
  for (let i = 0; i < list.length; i++) {
    const m = list[i]!;
    if (m.kind === p.mechanism && (m.kind === "apiKey" || m.provider === p.provider)) return true;
  }
  return false;
}

const deny = (
  status: 401 | 403,
  requirement: AuthzRequirement,
  reason: string,
): AuthzDecision & { kind: "deny" } => ({
  kind: "deny",
  status,
  code: status === 401 ? "unauthenticated" : "forbidden",
  requirement,
  reason,
});

/**
 * Decides whether `principal` (null: nobody authenticated) calling from `clientIp` may use a route with
 * requirements `auth`. Pure; never throws for a request.
 */
export function authorize(
  auth: RouteAuth | CompiledRouteAuth,
  principal: Principal | null,
  clientIp: string,
): AuthzDecision {
  const c = "ranges" in auth ? auth : compileRouteAuth(auth);
  const a = c.auth;
  if (c.ranges.length && !inRanges(c.ranges, clientIp))
    return deny(403, "client_ip", `client address ${safeIp(clientIp)} is not in the route's clientIps`);
  if (a.public) return { kind: "allow", principal };
  if (!principal) return deny(401, "authentication", `this route requires authentication (${c.describe})`);
  if (!accepted(a, principal))
    return deny(
      401,
      "mechanism",
      `credentials from ${principal.mechanism} ${principal.provider} are not accepted here (${c.describe})`,
    );
  if (principal.mechanism === "jwt" || principal.mechanism === "oidc") {
    for (const scope of a.scopes)
      if (!principal.scopes.includes(scope)) return deny(403, "scope", `missing scope ${scope}`);
    for (const claim of c.claims) {
      if (!claimHolds(principal.claims, claim.name, claim.path, claim.values))
        return deny(403, "claim", `claim ${claim.name} does not hold an accepted value`);
    }
  } else if (principal.mechanism === "apiKey" && (c.consumers.size || c.groups.size)) {
    const consumer = principal.consumer ?? "";
    let admitted = c.consumers.has(consumer);
    for (let i = 0; !admitted && i < principal.groups.length; i++)
      admitted = c.groups.has(principal.groups[i]!);
    if (!admitted)
      return deny(403, "consumer", `consumer ${consumer} is not among the route's consumers or groups`);
  }
  return { kind: "allow", principal };
}

/**
 * A claim holds when its value (or, for an array, one of its elements) is a string, number or boolean whose
 * string form is accepted. The name is looked up as a top-level claim first, then as a dotted path into
 * nested objects (`realm_access.roles`).
 */
function claimHolds(
  claims: Readonly<Record<string, unknown>>,
  name: string,
  path: readonly string[],
  values: ReadonlySet<string>,
): boolean {
  let v: unknown = Object.hasOwn(claims, name) ? claims[name] : undefined;
  if (v === undefined && path.length > 1) {
    v = claims;
    for (const p of path) {
      if (typeof v !== "object" || v === null || Array.isArray(v) || !Object.hasOwn(v, p)) return false;
      v = (v as Record<string, unknown>)[p];
    }
  }
  if (Array.isArray(v)) {
    for (const x of v) if (scalarIn(x, values)) return true;
    return false;
  }
  return scalarIn(v, values);
}

function scalarIn(v: unknown, values: ReadonlySet<string>): boolean {
  return (typeof v === "string" || typeof v === "number" || typeof v === "boolean") && values.has(String(v));
}

/** The address for a reason string: only IP characters (the value comes from the socket, but be strict). */
const safeIp = (ip: string): string => (/^[0-9A-Fa-f:.]{1,45}$/.test(ip) ? ip : "(malformed)");

// ── IP addresses and ranges ──

/** Scratch words for the address under test (decide-time code is synchronous: no reentrancy). */
const scratch: [number, number, number, number] = [0, 0, 0, 0];

/** True when `ip` (IPv4, IPv6, IPv4-mapped IPv6, optionally with a `%zone`) lies in one of `ranges`. */
export function inRanges(ranges: readonly IpRange[], ip: string): boolean {
  if (!parseIpInto(ip, scratch)) return false;
  for (const r of ranges) if (rangeHas(r, scratch)) return true;
  return false;
}

/** Does range `r` hold the address whose words (parseIpInto) are `w`? */
export function rangeHas(r: IpRange, w: readonly number[]): boolean {
  let bits = r.bits;
  for (let i = 0; i < 4; i++) {
    if (bits <= 0) return true;
    const mask = bits >= 32 ? 0xffffffff : (0xffffffff << (32 - bits)) >>> 0;
    if ((w[i]! & mask) >>> 0 !== r.words[i]) return false;
    bits -= 32;
  }
  return true;
}

/** Parses "a.b.c.d/n" or "x:…:y/n" (or a bare address: /32, /128). Null when malformed. */
export function parseCidr(text: string): IpRange | null {
  const slash = text.indexOf("/");
  const addr = slash < 0 ? text : text.slice(0, slash);
  if (addr.includes("%")) return null;
  const words: [number, number, number, number] = [0, 0, 0, 0];
  const v4 = parseIpv4(addr);
  let bits: number;
  if (v4 !== null) {
    words[2] = 0xffff;
    words[3] = v4;
    bits = 128;
    if (slash >= 0) {
      const n = prefixLength(text.slice(slash + 1), 32);
      if (n === null) return null;
      bits = 96 + n;
    }
  } else {
    if (!parseIpv6(addr, words)) return null;
    bits = 128;
    if (slash >= 0) {
      const n = prefixLength(text.slice(slash + 1), 128);
      if (n === null) return null;
      bits = n;
    }
  }
  // Host bits beyond the prefix are cleared, so comparisons are plain equality under the mask.
  let rest = bits;
  for (let i = 0; i < 4; i++) {
    const mask = rest >= 32 ? 0xffffffff : rest <= 0 ? 0 : (0xffffffff << (32 - rest)) >>> 0;
    words[i] = (words[i]! & mask) >>> 0;
    rest -= 32;
  }
  return { words, bits, text };
}

function prefixLength(s: string, max: number): number | null {
  if (!/^(0|[1-9][0-9]{0,2})$/.test(s)) return null;
  const n = Number(s);
  return n <= max ? n : null;
}

/** Parses an address into `out` (IPv4 → ::ffff:a.b.c.d). A `%zone` suffix is ignored. */
export function parseIpInto(ip: string, out: [number, number, number, number]): boolean {
  const pct = ip.indexOf("%");
  const addr = pct < 0 ? ip : ip.slice(0, pct);
  const v4 = parseIpv4(addr);
  if (v4 !== null) {
    out[0] = 0;
    out[1] = 0;
    out[2] = 0xffff;
    out[3] = v4;
    return true;
  }
  return parseIpv6(addr, out);
}

/** Dotted-quad IPv4 (decimal, no leading zeros) → unsigned 32-bit, else null. */
export function parseIpv4(s: string): number | null {
  let value = 0;
  let part = 0;
  let digits = 0;
  let dots = 0;
  for (let i = 0; i <= s.length; i++) {
    const c = i < s.length ? s.charCodeAt(i) : 46; // a final "." closes the last part
    if (c >= 48 && c <= 57) {
      if (digits > 0 && part === 0) return null; // leading zero
      part = part * 10 + (c - 48);
      if (++digits > 3 || part > 255) return null;
    } else if (c === 46) {
      if (digits === 0) return null;
      value = (value * 256 + part) >>> 0;
      part = 0;
      digits = 0;
      if (i < s.length && ++dots > 3) return null;
    } else return null;
  }
  return dots === 3 ? value : null;
}

/** RFC 4291 §2.2 text forms (with `::` and a trailing dotted quad) → four words; false when malformed. */
function parseIpv6(s: string, out: [number, number, number, number]): boolean {
  if (s.length < 2 || s.length > 45) return false;
  const groups: number[] = [];
  let gap = -1;
  let i = 0;
  if (s.startsWith("::")) {
    gap = 0;
    i = 2;
  } else if (s.charCodeAt(0) === 58) return false;
  while (i < s.length) {
    // A dotted quad may end the address (::ffff:1.2.3.4, 64:ff9b::192.0.2.1).
    if (s.indexOf(":", i) < 0 && s.indexOf(".", i) >= 0) {
      const v4 = parseIpv4(s.slice(i));
      if (v4 === null) return false;
      groups.push(v4 >>> 16, v4 & 0xffff);
      break;
    }
    let j = i;
    let g = 0;
    while (j < s.length && j - i < 5) {
      const c = s.charCodeAt(j);
      const d = c >= 48 && c <= 57 ? c - 48 : c >= 97 && c <= 102 ? c - 87 : c >= 65 && c <= 70 ? c - 55 : -1;
      if (d < 0) break;
      g = g * 16 + d;
      j++;
    }
    if (j === i || j - i > 4) return false;
    groups.push(g);
    if (j === s.length) break;
    if (s.charCodeAt(j) !== 58) return false;
    if (s.charCodeAt(j + 1) === 58) {
      if (gap >= 0) return false;
      gap = groups.length;
      i = j + 2;
    } else {
      i = j + 1;
      if (i === s.length) return false; // trailing single ":"
    }
  }
  if (gap < 0 ? groups.length !== 8 : groups.length > 7) return false;
  const full = new Array<number>(8).fill(0);
  if (gap < 0) for (let k = 0; k < 8; k++) full[k] = groups[k]!;
  else {
    for (let k = 0; k < gap; k++) full[k] = groups[k]!;
    const tail = groups.length - gap;
    for (let k = 0; k < tail; k++) full[8 - tail + k] = groups[gap + k]!;
  }
  for (let k = 0; k < 4; k++) out[k] = ((full[2 * k]! << 16) | full[2 * k + 1]!) >>> 0;
  return true;
}

// ── decide() + authorize() for policies ──

export type AuthorizedDecision =
  | { readonly kind: "reject"; readonly decision: Decision & { kind: "reject" } }
  | {
      readonly kind: "route";
      readonly decision: Decision & { kind: "route" };
      readonly authz: AuthzDecision;
    };

/**
 * The whole pure verdict for a synthetic request: decide() (canonical path, host, route), then authorize()
 * with the given principal and client address. Policies call this to verify access rules before deploy
 * with the very code the gateway runs.
 */
export function decideAndAuthorize(
  gw: CompiledGateway,
  facts: GatewayRequestFacts,
  principal: Principal | null,
  clientIp: string,
): AuthorizedDecision {
  const d = decide(gw, facts);
  if (d.kind === "reject") return { kind: "reject", decision: d };
  return { kind: "route", decision: d, authz: authorize(d.auth, principal, clientIp) };
}

/** Compiles every route's requirements of a config (at load), so the first request pays nothing. */
export function compileAllRouteAuth(config: GatewayRuntimeConfig): void {
  for (const r of config.routes) compileRouteAuth(r.auth);
}
