/**
 * JWT bearer tokens (RFC 7519, RFC 8725) verified with `jose` against one provider's keys.
 *
 * Per provider: algorithms pinned (`algorithms` always passed to jose; none and HS* refused at build), `iss`,
 * `aud` and `exp` required, `nbf` honoured, clock skew bounded by `clockSkewMs` (at most 5 minutes), keys by
 * exact `kid` from the configured JWKS only (jwks.ts), `crit` per RFC 7515 §4.1.11 (jose understands only
 * `b64`, and refuses unencoded payloads in JWTs), duplicate member names refused, tokens larger than
 * MAX_TOKEN_BYTES refused before any decoding.
 *
 * Tokens come from the configured header with its prefix (scheme compared case-insensitively), and from a
 * cookie or a query parameter only when the provider names one; a token in more than one place is refused
 * (RFC 6750 §2). Verified tokens are cached per provider, keyed by the token text, until their `exp`
 * (bounded entries, oldest evicted first): a cache hit is synchronous.
 */
import { hash } from "node:crypto";
import { jwtVerify, type CryptoKey } from "jose";
import type { Principal } from "../decide/authorize.ts";
import { deepFreeze } from "../contract/canonical.ts";
import { parseStrictJson } from "./json.ts";
import { ASYMMETRIC_ALGORITHMS, JwksStore, type JwksOptions } from "./jwks.ts";
import {
  failure,
  type AuthFailure,
  type AuthLog,
  type AuthObserver,
  type AuthRequestFacts,
  type JwtProviderConfig,
} from "./types.ts";

/** Tokens longer than this are refused before decoding (a JWT from a real issuer is 0.5–2 KiB). */
export const MAX_TOKEN_BYTES = 8192;
/** The most clock skew a provider may allow (the spec refuses more). */
export const MAX_CLOCK_SKEW_MS = 300_000;

export interface JwtOptions extends JwksOptions {
  /** Verified-token cache entries per provider. Default 10 000. */
  readonly cacheEntries?: number;
}

/**
 * The SHA-256 of a secret value: the cache key of long-lived secrets (OIDC session cookies), which are
 * then never kept in memory. Bearer tokens are keyed by themselves instead (see `TokenCache`).
 */
export const tokenHash = (token: string): string => hash("sha256", token, "base64url");

/**
 * A bounded map of verified tokens: key → principal until its expiry. Oldest entries are evicted first.
 * JWTs are keyed by the token text itself, as Envoy's jwt_authn cache does: a lookup is one string hash
 * and compare, no SHA-256 per request (≈ 3 µs of the gateway's ≈ 50 µs per request). Entries live at most
 * until the token expires, the cache is bounded (`cacheEntries`) and nothing in it is ever logged.
 */
export class TokenCache {
  private readonly map = new Map<string, Principal>();
  private readonly max: number;
  /** Counts clear() calls: a principal remembered elsewhere is valid only within its generation. */
  generation = 0;
  constructor(max: number) {
    this.max = Math.max(1, max);
  }
  /** The principal for a token hash, if cached and not expired at `now`. Synchronous. */
  get(key: string, now: number): Principal | undefined {
    const p = this.map.get(key);
    if (p === undefined) return undefined;
    if (p.expiresAt !== null && p.expiresAt <= now) {
      this.map.delete(key);
      return undefined;
    }
    return p;
  }
  set(key: string, principal: Principal): void {
    if (this.map.size >= this.max && !this.map.has(key)) {
      const oldest = this.map.keys().next();
      if (!oldest.done) this.map.delete(oldest.value);
    }
    this.map.set(key, principal);
  }
  delete(key: string): void {
    this.map.delete(key);
  }
  clear(): void {
    this.map.clear();
    this.generation++;
  }
  get size(): number {
    return this.map.size;
  }
}

/** A token decoded (not verified) once, shared by the providers of a route. */
export interface DecodedToken {
  readonly header: Readonly<Record<string, unknown>>;
  readonly payload: Readonly<Record<string, unknown>>;
}

const B64URL_SEGMENT = /^[A-Za-z0-9_-]+$/;

/**
 * Shape checks before any key is involved: size, three base64url segments, JSON objects without duplicate
 * members in header and payload. Returns the decoded parts or a failure (reasons are fixed strings).
 */
export function decodeToken(token: string): DecodedToken | AuthFailure {
  if (token.length === 0) return failure("jwt", "empty token", 401, "invalid_request");
  if (token.length > MAX_TOKEN_BYTES)
    return failure("jwt", `token exceeds ${MAX_TOKEN_BYTES} bytes`, 401, "invalid_request");
  const first = token.indexOf(".");
  const second = first < 0 ? -1 : token.indexOf(".", first + 1);
  if (second < 0 || token.indexOf(".", second + 1) >= 0)
    return failure("jwt", "malformed token: a JWS compact token has three segments", 401, "invalid_token");
  const h = token.slice(0, first);
  const p = token.slice(first + 1, second);
  const s = token.slice(second + 1);
  if (
    !B64URL_SEGMENT.test(h) ||
    !B64URL_SEGMENT.test(p) ||
    !B64URL_SEGMENT.test(s) ||
    !canonicalBase64url(h) ||
    !canonicalBase64url(p) ||
    !canonicalBase64url(s)
  )
    return failure("jwt", "malformed token: segments must be non-empty base64url", 401, "invalid_token");
  const header = decodeJsonSegment(h, "header");
  if ("kind" in header) return header;
  const payload = decodeJsonSegment(p, "payload");
  if ("kind" in payload) return payload;
  return { header: header.value, payload: payload.value };
}

const B64URL_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/**
 * The one encoding of its bytes (RFC 4648 §3.5): a length that leaves no lone character and zero unused
 * bits in the last one. Decoders drop those bits, so without this check every signature had up to 16
 * spellings that verify alike — the same token as distinct strings (distinct cache entries, and past any
 * comparison of token text).
 */
function canonicalBase64url(segment: string): boolean {
  const rest = segment.length % 4;
  if (rest === 0) return true;
  if (rest === 1) return false;
  const last = B64URL_ALPHABET.indexOf(segment[segment.length - 1]!);
  return (last & (rest === 2 ? 0x0f : 0x03)) === 0;
}

function decodeJsonSegment(
  segment: string,
  what: "header" | "payload",
): { value: Record<string, unknown> } | AuthFailure {
  const text = Buffer.from(segment, "base64url").toString("utf8");
  if (text.includes("\uFFFD"))
    return failure("jwt", `malformed token ${what}: not UTF-8`, 401, "invalid_token");
  const r = parseStrictJson(text);
  if (!r.ok) {
    const why =
      r.problem === "duplicate_member"
        ? "duplicate member names"
        : r.problem === "too_deep"
          ? "nested too deep"
          : "not JSON";
    return failure("jwt", `malformed token ${what}: ${why}`, 401, "invalid_token");
  }
  if (typeof r.value !== "object" || r.value === null || Array.isArray(r.value))
    return failure("jwt", `malformed token ${what}: not a JSON object`, 401, "invalid_token");
  return { value: r.value as Record<string, unknown> };
}

/** One JWT provider: token extraction, the verified-token cache, verification with jose. */
export class JwtVerifier {
  readonly name: string;
  readonly issuer: string;
  readonly config: JwtProviderConfig;
  readonly keys: JwksStore;
  readonly cache: TokenCache;
  /** Per connection (socket or HTTP/2 session): the last token answered from the cache (see cachedOn). */
  private readonly lastOnConnection = new WeakMap<
    object,
    { token: string; principal: Principal; generation: number }
  >();
  private readonly headerName: string;
  private readonly prefixLower: string;
  private readonly skewSeconds: number;
  private readonly now: () => number;
  private readonly verifyOptions: {
    algorithms: string[];
    issuer: string;
    audience: string[];
    requiredClaims: string[];
    clockTolerance: number;
  };

  constructor(cfg: JwtProviderConfig, opts: JwtOptions, observer: AuthObserver, log: AuthLog) {
    for (const a of cfg.algorithms) {
      if (!ASYMMETRIC_ALGORITHMS.has(a))
        throw new Error(
          `JWT provider ${cfg.name}: algorithm ${a} is refused (pin asymmetric ones: ${[...ASYMMETRIC_ALGORITHMS].join(", ")})`,
        );
    }
    if (cfg.audiences.length === 0) throw new Error(`JWT provider ${cfg.name}: audiences must not be empty`);
    if (!cfg.issuer) throw new Error(`JWT provider ${cfg.name}: issuer must not be empty`);
    this.name = cfg.name;
    this.issuer = cfg.issuer;
    this.config = cfg;
    this.now = opts.now ?? Date.now;
    this.cache = new TokenCache(opts.cacheEntries ?? 10_000);
    this.keys = new JwksStore(cfg, opts, observer, log, () => this.cache.clear());
    this.headerName = cfg.tokenFrom.header.toLowerCase();
    this.prefixLower = cfg.tokenFrom.prefix.toLowerCase();
    this.skewSeconds = Math.min(cfg.clockSkewMs, MAX_CLOCK_SKEW_MS) / 1000;
    this.verifyOptions = {
      algorithms: [...cfg.algorithms],
      issuer: cfg.issuer,
      audience: [...cfg.audiences],
      requiredClaims: ["exp", "iss", "aud"],
      clockTolerance: this.skewSeconds,
    };
  }

  /** The token this provider reads from the request: a string, null when none is present, or a failure. */
  extract(facts: Pick<AuthRequestFacts, "header" | "query">): string | null | AuthFailure {
    let token: string | null = null;
    let places = 0;
    const h = facts.header(this.headerName);
    if (h !== undefined) {
      if (!startsWithLower(h, this.prefixLower))
        return failure(
          "jwt",
          `the ${this.headerName} header does not carry a token with the expected scheme`,
          401,
          "invalid_request",
        );
      let i = this.prefixLower.length;
      while (h.charCodeAt(i) === 32) i++;
      token = i === 0 ? h : h.slice(i);
      places++;
    }
    const { cookie, query: param } = this.config.tokenFrom;
    if (cookie !== null) {
      const v = cookieValue(facts.header("cookie"), cookie);
      if (v === false)
        return failure("jwt", "the token cookie appears more than once", 401, "invalid_request");
      if (v !== null) {
        token = v;
        places++;
      }
    }
    if (param !== null && facts.query) {
      const v = queryValue(facts.query, param, credentialQueryName);
      if (v === false)
        return failure("jwt", "the token query parameter appears more than once", 401, "invalid_request");
      if (v !== null) {
        token = v;
        places++;
      }
    }
    if (places > 1)
      return failure("jwt", "a token was presented in more than one place", 401, "invalid_request");
    return token;
  }

  /** A cached verification of the token with this key (the token itself), valid now. Synchronous. */
  cached(key: string): Principal | undefined {
    return this.cache.get(key, this.now());
  }

  /**
   * cached(), remembering per connection the last token and its principal: a client sends the same token
   * on a keep-alive connection, and comparing it with the last one (a memcmp) is cheaper than hashing a
   * JWT of a few hundred characters for the cache. Only an equal token, unexpired, from the cache's
   * current generation (no key change since) is answered from the memo.
   */
  cachedOn(connection: object | null | undefined, token: string): Principal | undefined {
    if (connection === null || connection === undefined) return this.cached(token);
    const memo = this.lastOnConnection.get(connection);
    if (memo !== undefined && memo.token === token && memo.generation === this.cache.generation) {
      const p = memo.principal;
      if (p.expiresAt === null || p.expiresAt > this.now()) return p;
    }
    const p = this.cached(token);
    if (p === undefined) return undefined;
    if (memo !== undefined) {
      memo.token = token;
      memo.principal = p;
      memo.generation = this.cache.generation;
    } else this.lastOnConnection.set(connection, { token, principal: p, generation: this.cache.generation });
    return p;
  }

  /** Full verification (keys, signature, claims); caches and returns the principal. */
  async verify(token: string, decoded: DecodedToken, key: string): Promise<Principal | AuthFailure> {
    const { header } = decoded;
    const alg = header.alg;
    if (typeof alg !== "string" || !this.verifyOptions.algorithms.includes(alg))
      return failure("jwt", "token algorithm is not allowed for this provider", 401, "invalid_token");
    const kid = header.kid;
    if (kid !== undefined && (typeof kid !== "string" || kid.length === 0 || kid.length > 256))
      return failure("jwt", "malformed token: kid must be a short string", 401, "invalid_token");
    // Keys removed while this verification is under way (a refresh between the lookup and the signature
    // check) clear the cache; the result must not be stored after that clear, or a token of a withdrawn key
    // would go on verifying from the cache until it expires.
    const generation = this.cache.generation;
    const found = await this.keys.lookup(kid, alg);
    if (found.kind === "unavailable")
      return failure("jwt", `the keys of JWT provider ${this.name} are unavailable`, 503);
    if (found.kind === "unknown_kid")
      return failure("jwt", "no key of the provider has the token's kid", 401, "invalid_token");
    if (found.kind === "no_kid")
      return failure("jwt", "the token has no kid and the provider has several keys", 401, "invalid_token");
    return this.check(token, found.keys, key, generation);
  }

  /**
   * Verifies with each candidate key in turn (several keys may share the token's kid): a signature that does
   * not verify moves on to the next; any other failure (claims, expiry) is the token's own and ends the search.
   */
  private async check(
    token: string,
    candidates: readonly CryptoKey[],
    key: string,
    generation: number,
  ): Promise<Principal | AuthFailure> {
    let payload: Record<string, unknown> | undefined;
    for (let i = 0; payload === undefined; i++) {
      try {
        ({ payload } = await jwtVerify(token, candidates[i]!, {
          ...this.verifyOptions,
          currentDate: new Date(this.now()),
        }));
      } catch (err) {
        const e = err as Error & { code?: string; claim?: string; reason?: string };
        if (e.code === "ERR_JWS_SIGNATURE_VERIFICATION_FAILED" && i + 1 < candidates.length) continue;
        return failure("jwt", joseReason(e), 401, "invalid_token");
      }
    }
    // RFC 7519 §4.1.2: `sub` is a string. Another type would leave the principal without a subject while
    // upstreams (forwardClaims) and logs saw a value: refused like any malformed claim.
    if (payload.sub !== undefined && typeof payload.sub !== "string")
      return failure("jwt", "token sub claim is invalid", 401, "invalid_token");
    const exp = payload.exp as number;
    const principal: Principal = Object.freeze({
      mechanism: "jwt" as const,
      provider: this.name,
      subject: typeof payload.sub === "string" ? payload.sub : "",
      consumer: null,
      groups: Object.freeze([]) as readonly string[],
      scopes: Object.freeze(scopesOf(payload)),
      // Frozen through and through: the principal is cached and shared by every request of the token,
      // and a nested claim changed by one request (a body template's object) would change it for all.
      claims: deepFreeze(payload),
      expiresAt: exp * 1000,
    });
    if (this.cache.generation === generation) this.cache.set(key, principal);
    return principal;
  }
}

/** jose's error → a fixed reason (never the token, never claim values). */
function joseReason(err: Error & { code?: string; claim?: string; reason?: string }): string {
  switch (err.code) {
    case "ERR_JWT_EXPIRED":
      return "token expired";
    case "ERR_JWT_CLAIM_VALIDATION_FAILED": {
      const claim = ["iss", "aud", "exp", "nbf", "iat", "sub"].includes(err.claim ?? "") ? err.claim : "a";
      if (err.reason === "missing") return `token has no ${claim} claim`;
      if (claim === "nbf") return "token not yet valid (nbf)";
      if (claim === "iss") return "token issuer is not the provider's";
      if (claim === "aud") return "token audience is not accepted";
      return `token ${claim} claim is invalid`;
    }
    case "ERR_JWS_SIGNATURE_VERIFICATION_FAILED":
      return "token signature verification failed";
    case "ERR_JOSE_ALG_NOT_ALLOWED":
      return "token algorithm is not allowed for this provider";
    case "ERR_JOSE_NOT_SUPPORTED":
      return "token uses an unsupported critical header parameter or algorithm";
    case "ERR_JWS_INVALID":
    case "ERR_JWT_INVALID":
      return "malformed token";
    default:
      return "token verification failed";
  }
}

/** Granted scopes: `scope` (space-separated, RFC 8693 §4.2) and `scp` (array or space-separated). */
export function scopesOf(payload: Readonly<Record<string, unknown>>): string[] {
  const out: string[] = [];
  for (const v of [payload.scope, payload.scp]) {
    if (typeof v === "string") {
      for (const s of v.split(" ")) if (s) out.push(s);
    } else if (Array.isArray(v)) {
      for (const s of v) if (typeof s === "string" && s) out.push(s);
    }
  }
  return out;
}

/** `value` starts with `prefixLower`, compared ASCII case-insensitively, without allocating. */
function startsWithLower(value: string, prefixLower: string): boolean {
  if (value.length < prefixLower.length) return false;
  for (let i = 0; i < prefixLower.length; i++) {
    let c = value.charCodeAt(i);
    if (c >= 65 && c <= 90) c += 32;
    if (c !== prefixLower.charCodeAt(i)) return false;
  }
  return true;
}

/**
 * The value of cookie `name` in a Cookie header: null when absent, false when it appears twice — under
 * any spelling an upstream reads as the name (cookieName), or smuggled after a "," inside another pair.
 */
export function cookieValue(header: string | undefined, name: string): string | null | false {
  if (!header) return null;
  const want = cookieName(name);
  let found: string | null = null;
  let start = 0;
  while (start < header.length) {
    let end = header.indexOf(";", start);
    if (end < 0) end = header.length;
    const eq = header.indexOf("=", start);
    if (eq > start && eq < end && cookieName(header.slice(start, eq)) === want) {
      if (found !== null) return false;
      found = header.slice(eq + 1, end).trim();
    }
    if (commaSmuggles(header, start, end, [want])) return false;
    start = end + 1;
  }
  return found;
}

/** Whitespace some parser trims from a cookie name's edges: JavaScript's, and Python's U+001C–U+001F, U+0085. */
const edgeSpace = (c: string): boolean => {
  const code = c.charCodeAt(0);
  return (code >= 0x1c && code <= 0x1f) || code === 0x85 || c.trim() === "";
};

/**
 * A cookie's name as the most lenient upstream reads it, for comparing with the credential cookies the
 * gateway owns: trimmed of any whitespace (Django strips Python's, which takes U+0085 and U+00A0 — the
 * "Cookie Chaos" prefix bypass), percent-decoded and with PHP's "_" for ".", " " and "[" (queryName: Rack
 * and PHP before 7.4.11 decode names; PHP still maps those characters), ASCII case ignored (ASP.NET
 * Core's cookie collection). Read raw, `TOK=…`, `t%6Fk=…` or `\x85tok=…` was not the `tok` cookie here
 * but is upstream: a second, never verified token passed beside the verified one.
 */
export function cookieName(name: string): string {
  let start = 0;
  let end = name.length;
  while (start < end && edgeSpace(name[start]!)) start++;
  while (end > start && edgeSpace(name[end - 1]!)) end--;
  return queryName(start === 0 && end === name.length ? name : name.slice(start, end)).toLowerCase();
}

/**
 * Whether the pair header[start, end) hides a pair named one of `names` (cookieName spellings) after a
 * comma: RFC 2965 parsers (Jetty's legacy compliance mode, old servlet containers) split pairs at ",".
 */
export function commaSmuggles(header: string, start: number, end: number, names: readonly string[]): boolean {
  return hiddenPair(header, start, end, ",", names, cookieName, true);
}

/**
 * Whether a query pair hides a parameter named one of `names` (spellings as `read` gives them, queryName
 * unless told) after a ";": Rack's and Python's parsers before 3.9.2 (CVE-2021-23336) split a query at ";"
 * as well as "&".
 */
export function semicolonSmuggles(
  pair: string,
  names: readonly string[],
  read: (name: string) => string = queryName,
): boolean {
  return pair.includes(";") && hiddenPair(pair, 0, pair.length, ";", names, read, false);
}

/**
 * Whether text[start, end) holds, after a `sep`, a piece whose name (up to its "=", read by `read`) is
 * one of `names`; a piece without "=" counts by its whole text unless `needsEquals`.
 */
function hiddenPair(
  text: string,
  start: number,
  end: number,
  sep: string,
  names: readonly string[],
  read: (name: string) => string,
  needsEquals: boolean,
): boolean {
  let at = text.indexOf(sep, start);
  while (at >= 0 && at < end) {
    const next = text.indexOf(sep, at + 1);
    const stop = next >= 0 && next < end ? next : end;
    const eq = text.indexOf("=", at + 1);
    const nameEnd = eq > at && eq < stop ? eq : needsEquals ? -1 : stop;
    if (nameEnd >= 0 && names.includes(read(text.slice(at + 1, nameEnd)))) return true;
    at = next;
  }
  return false;
}

/**
 * The value of query parameter `name` (percent-decoded): null when absent, false when repeated (a pair
 * hiding it after a ";" counts: semicolonSmuggles) or malformed.
 * Names are compared as `read` gives them — a query parser's reading (queryName) unless told: then
 * `access%5Ftoken` is the parameter too; with credentialQueryName, `ACCESS_TOKEN` as well.
 */
export function queryValue(
  query: string,
  name: string,
  read: (name: string) => string = queryName,
): string | null | false {
  const want = read(name);
  let found: string | null = null;
  for (const pair of query.split("&")) {
    if (semicolonSmuggles(pair, [want], read)) return false;
    const eq = pair.indexOf("=");
    const k = eq < 0 ? pair : pair.slice(0, eq);
    if (read(k) !== want) continue;
    if (found !== null) return false;
    try {
      found = decodeURIComponent(eq < 0 ? "" : pair.slice(eq + 1));
    } catch {
      return false;
    }
  }
  return found;
}

/**
 * A query parameter's name as the upstream's query parser reads it (URLSearchParams, Express, Django, Rails:
 * application/x-www-form-urlencoded, "+" a space and percent-escapes decoded). Compared raw, `access%5Ftoken`
 * was not the token parameter here but is `access_token` upstream: a second, never verified token passed
 * beside the verified one (and past the one-place rule of RFC 6750 §2). Framework spellings of a name are
 * that name too: `access_token[]`, `access_token[0]`, `access_token[k]` (PHP, Rack/Rails, Express's qs: an
 * array or map under `access_token`), and PHP's `access.token`, `access token` and `access[token` (PHP turns
 * dots, spaces and an unclosed "[" in names into "_", after skipping leading spaces: ` access_token` and
 * `%20access_token` are `access_token` there). A name needing none of this is returned as it is (no
 * allocation), and so is a name whose escapes are not UTF-8 (it decodes to no configured name).
 */
export function queryName(name: string): string {
  let n = name;
  if (n.includes("%") || n.includes("+")) {
    try {
      n = decodeURIComponent(n.replaceAll("+", " "));
    } catch {
      return name;
    }
  }
  // PHP skips leading spaces of a name (php_register_variable_ex), a decoded `%20` too.
  if (n.charCodeAt(0) === 32) n = n.replace(/^ +/, "");
  const bracket = n.indexOf("[");
  if (bracket > 0)
    n = n.indexOf("]", bracket) < 0 ? `${n.slice(0, bracket)}_${n.slice(bracket + 1)}` : n.slice(0, bracket);
  return n.includes(".") || n.includes(" ") ? n.replace(/[. ]/g, "_") : n;
}

/**
 * A query parameter's name as the most lenient upstream reads it, for comparing with the token parameter
 * of a JWT provider (tokenFrom.query): queryName, and ASCII case ignored — ASP.NET Core reads
 * Request.Query case-insensitively (SignalR and JwtBearer read `access_token` there), as it does cookies
 * (cookieName). Read case-sensitively, `ACCESS_TOKEN=…` beside `access_token=…` was a second, never
 * verified token passed upstream, and `Access_Token=…` stayed in the HTTP cache's key.
 */
export function credentialQueryName(name: string): string {
  return queryName(name).toLowerCase();
}
