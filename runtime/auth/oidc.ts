/**
 * OIDC authorization-code login for browser routes (OpenID Connect Core 1.0 §3.1, RFC 7636 PKCE), against any
 * standards-compliant issuer, expressed as values the gateway writes:
 *  - a valid session cookie → the principal (synchronous: the cookie is opened with AES-GCM once, then
 *    found by the hash of its value in a bounded cache until the session ends);
 *  - no session on a GET/HEAD page navigation → a redirect to the issuer's authorization endpoint, with a
 *    pending-login cookie (state, nonce, PKCE S256 verifier, where to return), sealed and scoped to the
 *    callback path (script and API requests get 401);
 *  - the callback (`redirectPath`) → the RFC 9207 `iss` parameter checked, state checked against the
 *    pending cookie (constant time, single use),
 *    the code exchanged at the token endpoint (client secret from the env var `clientSecretEnv`, sent with
 *    client_secret_basic, or client_secret_post when the issuer supports only that), the id_token verified
 *    with jose against the issuer's JWKS (iss, aud = clientId, azp, exp, nonce, pinned asymmetric
 *    algorithms), then a redirect back with the session cookie;
 *  - logout (`logout` beside redirectPath: /oauth2/callback → /oauth2/logout) → the session cookie cleared
 *    and the session revoked (RevokedSessions: copies of the cookie are refused by this process, and by
 *    the other workers of a multi-worker gateway once the primary relays it). A revocation is the hash of
 *    the cookie's text, which holds because a sealed value unseals in its one canonical spelling only
 *    (seal.ts): no other spelling of a logged-out cookie is a session.
 *
 * Cookies: HttpOnly, SameSite=Lax, Path=/ (the pending one: Path=redirectPath, 10 minutes), Secure unless the
 * request came over plaintext HTTP to a loopback host (local development; browsers treat localhost as a
 * secure context). Values are sealed with AES-256-GCM under a key derived with HKDF-SHA256 from the client
 * secret: every replica and worker that has the same secret accepts the same sessions, with no extra key to
 * distribute, and rotating the client secret ends all sessions. The secret and the tokens are never logged.
 */
import { createHash, randomBytes, timingSafeEqual } from "node:crypto";
import { jwtVerify } from "jose";
import { request } from "undici";
import type { Principal } from "../decide/authorize.ts";
import { isLoopbackName } from "../decide/outbound.ts";
import { deepFreeze } from "../contract/canonical.ts";
import { JwksStore, type JwksOptions, safeUri } from "./jwks.ts";
import { TokenCache, cookieValue, queryValue, tokenHash } from "./jwt.ts";
import { deriveKey, seal, unseal } from "./seal.ts";
import {
  failure,
  type AuthFailure,
  type AuthLog,
  type AuthObserver,
  type AuthRequestFacts,
  type AuthResponse,
  type OidcProviderConfig,
} from "./types.ts";

/** Pending logins expire after this long (the user has to finish logging in at the issuer). */
export const PENDING_LOGIN_MS = 600_000;
/** Clock skew allowed for the id_token's exp/iat. */
const ID_TOKEN_SKEW_S = 60;
/** Claims of the id_token not kept in the session (protocol artefacts). */
const DROPPED_CLAIMS = new Set([
  "nonce",
  "at_hash",
  "c_hash",
  "s_hash",
  "auth_time",
  "iat",
  "exp",
  "nbf",
  "jti",
  "sid",
  "azp",
  "acr",
  "amr",
]);
/** Sealed session cookies stay below the 4096-byte browser limit. */
const MAX_COOKIE_BYTES = 3800;

export interface OidcOptions extends JwksOptions {
  /** Where the client secret is read from (default process.env). */
  readonly env?: Readonly<Record<string, string | undefined>>;
  readonly now?: () => number;
  /** Sessions ended by logout; the gateway passes one set to every config it loads (default: a new one). */
  readonly revoked?: RevokedSessions;
}

/**
 * Session cookies ended by logout (hash of the cookie value → when the session would have expired), kept
 * by the gateway across config reloads: a copy of a logged-out cookie is refused by this process until it
 * would have expired anyway. Bounded: past 100 000 live entries the oldest are forgotten first.
 * `onRevoke` hears the logouts made here (not those applied from elsewhere), so a primary can relay them
 * to its other workers. Only hashes travel, never a cookie.
 */
export class RevokedSessions {
  private readonly map = new Map<string, number>();
  private readonly onRevoke: ((key: string, until: number) => void) | undefined;
  constructor(onRevoke?: (key: string, until: number) => void) {
    this.onRevoke = onRevoke;
  }
  get size(): number {
    return this.map.size;
  }
  has(key: string): boolean {
    return this.map.has(key);
  }
  add(key: string, until: number, now: number): void {
    if (this.map.size >= 1000) {
      for (const [k, t] of this.map) if (t <= now) this.map.delete(k);
      while (this.map.size >= 100_000) {
        const oldest = this.map.keys().next();
        if (oldest.done) break;
        this.map.delete(oldest.value);
      }
    }
    this.map.set(key, until);
  }
  /** A logout in this process: recorded, and told to `onRevoke`. */
  revoke(key: string, until: number, now: number): void {
    this.add(key, until, now);
    this.onRevoke?.(key, until);
  }
  /** Revocations another process made (relayed): recorded, not told again. */
  apply(entries: readonly (readonly [string, number])[], now: number): void {
    for (const [key, until] of entries)
      if (typeof key === "string" && typeof until === "number" && until > now) this.add(key, until, now);
  }
}

interface Discovery {
  readonly authorizationEndpoint: string;
  readonly tokenEndpoint: string;
  readonly jwks: JwksStore;
  readonly algorithms: string[];
  readonly basicAuth: boolean;
  /** RFC 9207: the issuer names itself in every authorization response (`iss` parameter). */
  readonly issParameter: boolean;
}

interface Pending {
  readonly st: string;
  readonly n: string;
  readonly v: string;
  readonly r: string;
  readonly exp: number;
}

interface Session {
  readonly p: string;
  readonly sub: string;
  readonly scp: string[];
  readonly c: Record<string, unknown>;
  readonly exp: number;
}

/** The outcome of an OIDC step that refuses: a deny with optional extra headers (a cleared cookie). */
export interface OidcDeny extends AuthFailure {
  readonly headers?: Readonly<Record<string, string>>;
}

export class OidcClient {
  readonly name: string;
  readonly config: OidcProviderConfig;
  readonly callbackPath: string;
  readonly logoutPath: string;
  private readonly secret: string;
  private readonly key: Buffer;
  private readonly pendingCookie: string;
  /** The pending-login cookie's Path: the callback, or "/" for a `__Host-` name (RFC 6265bis §4.1.3.2). */
  private readonly pendingPath: string;
  /** Cookie names with a `__Secure-` / `__Host-` prefix are always Secure (browsers drop them otherwise). */
  private readonly prefixed: boolean;
  private readonly now: () => number;
  private readonly opts: OidcOptions;
  private readonly observer: AuthObserver;
  private readonly log: AuthLog;
  private discovery: Discovery | null = null;
  private discovering: Promise<Discovery | null> | null = null;
  private lastDiscoveryAttempt = Number.NEGATIVE_INFINITY;
  /** States already redeemed (single use within this process), until their pending login expires. */
  private readonly consumed = new Map<string, number>();
  private readonly abort = new AbortController();
  /** Opened session cookies by the hash of their value, until the session ends (AES-GCM once per cookie). */
  private readonly sessions = new TokenCache(10_000);
  /**
   * Sessions ended by logout in this process: a copy of the cookie kept by someone else stops working
   * here too, until the session would have expired anyway.
   */
  private readonly revoked: RevokedSessions;

  constructor(cfg: OidcProviderConfig, opts: OidcOptions, observer: AuthObserver, log: AuthLog) {
    const env = opts.env ?? process.env;
    const secret = env[cfg.clientSecretEnv];
    if (!secret)
      throw new Error(
        `oidc.${cfg.name}: the client secret environment variable ${cfg.clientSecretEnv} is not set (set it to the client secret the issuer gave ${cfg.clientId})`,
      );
    if (!cfg.redirectPath.startsWith("/") || cfg.redirectPath.startsWith("//"))
      throw new Error(`oidc.${cfg.name}.redirectPath: must be an absolute path`);
    if (!/^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,64}$/.test(cfg.cookieName))
      throw new Error(
        `oidc.${cfg.name}.cookieName: not a cookie name (an RFC 6265 token of at most 64 characters)`,
      );
    this.name = cfg.name;
    this.config = cfg;
    this.secret = secret;
    this.key = deriveKey(secret, "meshgate-oidc-session-v1", `${cfg.name}\0${cfg.issuer}\0${cfg.clientId}`);
    this.pendingCookie = `${cfg.cookieName}_login`;
    this.callbackPath = cfg.redirectPath;
    const hostPrefix = /^__host-/i.test(cfg.cookieName);
    this.pendingPath = hostPrefix ? "/" : cfg.redirectPath;
    this.prefixed = hostPrefix || /^__secure-/i.test(cfg.cookieName);
    this.logoutPath = `${cfg.redirectPath.slice(0, cfg.redirectPath.lastIndexOf("/"))}/logout`;
    this.now = opts.now ?? Date.now;
    this.opts = opts;
    this.revoked = opts.revoked ?? new RevokedSessions();
    this.observer = observer;
    this.log = log;
    if (secret.length < 16)
      log.warn(
        { event: "oidc_weak_secret", provider: cfg.name, env: cfg.clientSecretEnv },
        "the OIDC client secret is short; session cookies are sealed with a key derived from it",
      );
  }

  /** Starts discovery ahead of the first login (never throws). */
  prefetch(): void {
    void this.discover();
  }

  close(): void {
    this.abort.abort();
    this.discovery?.jwks.close();
  }

  /** The session's principal: null when there is no session cookie, a failure when it is invalid or expired. */
  session(facts: AuthRequestFacts): Principal | null | AuthFailure {
    const v = cookieValue(facts.header("cookie"), this.config.cookieName);
    if (v === null) return null;
    if (v === false) return failure("oidc", "the session cookie appears more than once");
    const now = this.now();
    const key = tokenHash(v);
    if (this.revoked.size !== 0 && this.revoked.has(key))
      return failure("oidc", "the session was ended by logout");
    const hit = this.sessions.get(key, now);
    if (hit) return hit;
    const s = unseal(this.key, `session:${this.name}`, v) as Session | null;
    if (!s || s.p !== this.name || typeof s.sub !== "string" || typeof s.exp !== "number")
      return failure("oidc", "the session cookie is invalid");
    if (s.exp <= now) return failure("oidc", "the session expired");
    const principal: Principal = Object.freeze({
      mechanism: "oidc" as const,
      provider: this.name,
      subject: s.sub,
      consumer: null,
      groups: Object.freeze([]) as readonly string[],
      scopes: Object.freeze(Array.isArray(s.scp) ? s.scp.filter((x) => typeof x === "string") : []),
      claims: deepFreeze(s.c && typeof s.c === "object" ? s.c : {}),
      expiresAt: s.exp,
    });
    this.sessions.set(key, principal);
    return principal;
  }

  /** The login redirect for a request without a session (GET/HEAD only: other methods get 401). */
  async login(facts: AuthRequestFacts): Promise<AuthResponse | AuthFailure> {
    if (facts.method !== "GET" && facts.method !== "HEAD")
      return failure("oidc", "no session; log in with a browser navigation (GET) first");
    // A script's request (fetch/XHR, an API client) cannot follow a redirect to the issuer's login page:
    // it gets 401, and the pending login of a page navigation in progress is not overwritten.
    if (!isNavigation(facts))
      return failure(
        "oidc",
        "no session; API and script requests get 401, log in with a browser navigation first",
      );
    const d = await this.discover();
    if (!d) return failure("oidc", `the issuer of OIDC provider ${this.name} is unavailable`, 503);
    const state = randomBytes(32).toString("base64url");
    const nonce = randomBytes(32).toString("base64url");
    const verifier = randomBytes(32).toString("base64url");
    const challenge = createHash("sha256").update(verifier).digest("base64url");
    const path = facts.path.startsWith("//") ? "/" : facts.path;
    const pending: Pending = {
      st: state,
      n: nonce,
      v: verifier,
      r: path + (facts.query ? `?${facts.query}` : ""),
      exp: this.now() + PENDING_LOGIN_MS,
    };
    // A long query (or path) would make the pending cookie one a browser drops without a word, and the
    // callback would then find no login to finish: the way back loses its query (then its path) instead.
    let sealedPending = seal(this.key, `pending:${this.name}`, pending);
    if (sealedPending.length > MAX_COOKIE_BYTES)
      sealedPending = seal(this.key, `pending:${this.name}`, { ...pending, r: path });
    if (sealedPending.length > MAX_COOKIE_BYTES)
      sealedPending = seal(this.key, `pending:${this.name}`, { ...pending, r: "/" });
    const scopes = ["openid", ...this.config.scopes.filter((x) => x !== "openid")];
    const url = new URL(d.authorizationEndpoint);
    url.searchParams.set("response_type", "code");
    url.searchParams.set("client_id", this.config.clientId);
    url.searchParams.set("redirect_uri", this.redirectUri(facts));
    url.searchParams.set("scope", scopes.join(" "));
    url.searchParams.set("state", state);
    url.searchParams.set("nonce", nonce);
    url.searchParams.set("code_challenge", challenge);
    url.searchParams.set("code_challenge_method", "S256");
    return {
      kind: "respond",
      status: 302,
      event: "login_redirect",
      headers: {
        location: url.toString(),
        "cache-control": "no-store",
        "set-cookie": this.cookie(facts, this.pendingCookie, sealedPending, {
          path: this.pendingPath,
          maxAgeS: PENDING_LOGIN_MS / 1000,
        }),
      },
      body: "",
    };
  }

  /** The callback from the issuer: a redirect back with the session cookie, or a refusal. */
  async callback(facts: AuthRequestFacts): Promise<AuthResponse | OidcDeny> {
    const clearPending = {
      "set-cookie": this.cookie(facts, this.pendingCookie, "", { path: this.pendingPath, maxAgeS: 0 }),
      "cache-control": "no-store",
    };
    const refuse = (reason: string, status: 401 | 503 = 401): OidcDeny => ({
      ...failure("oidc", reason, status),
      headers: clearPending,
    });
    if (facts.method !== "GET") return refuse("the login callback must be a GET");
    const raw = cookieValue(facts.header("cookie"), this.pendingCookie);
    if (raw === null || raw === false)
      return refuse("no pending login for this callback (missing or repeated login cookie)");
    const pending = unseal(this.key, `pending:${this.name}`, raw) as Pending | null;
    if (
      !pending ||
      typeof pending.st !== "string" ||
      typeof pending.v !== "string" ||
      typeof pending.n !== "string"
    )
      return refuse("the pending login cookie is invalid");
    if (pending.exp <= this.now()) return refuse("the pending login expired");
    // RFC 9207 §2.4: an authorization response (success or error) naming another issuer is refused — a
    // mix-up attack sends the code of one issuer to the callback of another — and so is one without `iss`
    // from an issuer that says it always sends it.
    const d = await this.discover();
    if (!d) return refuse(`the issuer of OIDC provider ${this.name} is unavailable`, 503);
    const iss = queryValue(facts.query, "iss");
    if (iss !== null || d.issParameter) {
      if (iss !== this.config.issuer)
        return refuse(
          iss === null
            ? "the callback lacks the issuer's iss parameter (RFC 9207)"
            : "the callback's iss parameter names another issuer (RFC 9207)",
        );
    }
    const issuerError = queryValue(facts.query, "error");
    if (typeof issuerError === "string")
      return refuse(
        `the issuer refused the login${/^[a-z_]{1,64}$/.test(issuerError) ? ` (${issuerError})` : ""}`,
      );
    const state = queryValue(facts.query, "state");
    const code = queryValue(facts.query, "code");
    if (typeof state !== "string" || typeof code !== "string" || !code || code.length > 4096)
      return refuse("the callback lacks state or code");
    if (!safeEqual(state, pending.st)) return refuse("the callback's state does not match the pending login");
    this.pruneConsumed();
    if (this.consumed.has(pending.st)) return refuse("this login was already completed (replayed callback)");
    this.consumed.set(pending.st, pending.exp);

    const exchanged = await this.exchange(d, facts, code, pending.v);
    if (!("tokens" in exchanged)) return { ...exchanged, headers: clearPending };
    const tokens = exchanged.tokens;
    const idToken = tokens.id_token;
    if (typeof idToken !== "string") return refuse("the token response has no id_token");
    const checked = await this.verifyIdToken(d, idToken, pending.n);
    if (!("claims" in checked)) return { ...checked, headers: clearPending };
    const verified = checked.claims;

    const scopeText = typeof tokens.scope === "string" ? tokens.scope : this.config.scopes.join(" ");
    const claims: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(verified)) if (!DROPPED_CLAIMS.has(k)) claims[k] = v;
    const session: Session = {
      p: this.name,
      sub: verified.sub as string,
      scp: scopeText.split(" ").filter(Boolean),
      c: claims,
      exp: this.now() + this.config.sessionTtlMs,
    };
    let sealed = seal(this.key, `session:${this.name}`, session);
    if (sealed.length > MAX_COOKIE_BYTES) {
      // Too many claims for a cookie: keep the identity and the common claims.
      const small: Record<string, unknown> = {};
      for (const k of [
        "sub",
        "iss",
        "aud",
        "email",
        "email_verified",
        "name",
        "preferred_username",
        "groups",
        "roles",
      ])
        if (k in claims) small[k] = claims[k];
      sealed = seal(this.key, `session:${this.name}`, { ...session, c: small });
      if (sealed.length > MAX_COOKIE_BYTES)
        sealed = seal(this.key, `session:${this.name}`, { ...session, c: { sub: session.sub } });
      // Still too large (a very long sub or granted scope): a browser would drop the cookie without a
      // word and the user would go round the login forever. Refuse it plainly instead.
      if (sealed.length > MAX_COOKIE_BYTES) {
        this.log.warn(
          { event: "oidc_session_too_large", provider: this.name, bytes: sealed.length },
          "the OIDC session does not fit in a cookie (sub or granted scope too long); the login is refused",
        );
        return refuse(
          `the session does not fit in a cookie (${sealed.length} bytes sealed, at most ${MAX_COOKIE_BYTES}): the id_token's sub or the granted scope is too long`,
        );
      }
    }
    const returnTo =
      typeof pending.r === "string" && pending.r.startsWith("/") && !pending.r.startsWith("//")
        ? pending.r
        : "/";
    return {
      kind: "respond",
      status: 302,
      event: "callback",
      headers: {
        location: returnTo,
        "cache-control": "no-store",
        "set-cookie": [
          this.cookie(facts, this.config.cookieName, sealed, {
            path: "/",
            maxAgeS: Math.floor(this.config.sessionTtlMs / 1000),
          }),
          clearPending["set-cookie"],
        ],
      },
      body: "",
    };
  }

  /**
   * Clears the session cookie and sends the browser to "/". A valid session presented is also revoked in
   * this process: a copy of its cookie no longer authenticates here.
   */
  logout(facts: AuthRequestFacts): AuthResponse {
    const v = cookieValue(facts.header("cookie"), this.config.cookieName);
    if (typeof v === "string" && v !== "") this.revoke(v);
    return {
      kind: "respond",
      status: 302,
      event: "logout",
      headers: {
        location: "/",
        "cache-control": "no-store",
        "set-cookie": this.clearSession(facts),
      },
      body: "",
    };
  }

  /** The Set-Cookie that removes the session cookie from the browser (nothing revoked). */
  clearSession(facts: AuthRequestFacts): string {
    return this.cookie(facts, this.config.cookieName, "", { path: "/", maxAgeS: 0 });
  }

  /** Ends a session in this process (its cookie, when valid and not expired, is refused from now on). */
  private revoke(v: string): void {
    const key = tokenHash(v);
    const now = this.now();
    let exp = this.sessions.get(key, now)?.expiresAt ?? null;
    if (exp === null) {
      const s = unseal(this.key, `session:${this.name}`, v) as Session | null;
      if (!s || s.p !== this.name || typeof s.exp !== "number") return;
      exp = s.exp;
    }
    if (exp <= now) return;
    this.sessions.delete(key);
    this.revoked.revoke(key, exp, now);
  }

  /** A Set-Cookie value: HttpOnly, SameSite=Lax, Secure unless plaintext to a loopback host. */
  private cookie(
    facts: AuthRequestFacts,
    name: string,
    value: string,
    o: { path: string; maxAgeS: number },
  ): string {
    const secure = this.prefixed || this.externalScheme(facts) === "https" || !isLoopbackHost(facts.host);
    return `${name}=${value}; Path=${o.path}; Max-Age=${o.maxAgeS}; HttpOnly; SameSite=Lax${secure ? "; Secure" : ""}`;
  }

  private externalScheme(facts: AuthRequestFacts): "http" | "https" {
    if (facts.viaTrustedProxy === true) {
      const proto = facts.header("x-forwarded-proto");
      if (proto === "https" || proto === "http") return proto;
    }
    return facts.scheme;
  }

  private redirectUri(facts: AuthRequestFacts): string {
    return `${this.externalScheme(facts)}://${facts.authority.toLowerCase()}${this.callbackPath}`;
  }

  private pruneConsumed(): void {
    const now = this.now();
    if (this.consumed.size < 1000) return;
    for (const [k, exp] of this.consumed) if (exp <= now) this.consumed.delete(k);
    while (this.consumed.size >= 100_000) {
      const oldest = this.consumed.keys().next();
      if (oldest.done) break;
      this.consumed.delete(oldest.value);
    }
  }

  /** Discovery (OpenID Connect Discovery 1.0 §4), once; retried at most every 30 s after a failure. */
  private discover(): Promise<Discovery | null> {
    if (this.discovery) return Promise.resolve(this.discovery);
    if (this.discovering) return this.discovering;
    if (this.now() - this.lastDiscoveryAttempt < (this.opts.minRefetchIntervalMs ?? 30_000))
      return Promise.resolve(null);
    this.lastDiscoveryAttempt = this.now();
    this.discovering = this.fetchDiscovery()
      .then(
        (d) => {
          this.discovery = d;
          return d;
        },
        (err: Error) => {
          this.log.warn(
            {
              event: "oidc_discovery_failed",
              provider: this.name,
              issuer: safeUri(this.config.issuer),
              error: err.message,
            },
            "OIDC discovery failed; logins are refused until it succeeds",
          );
          return null;
        },
      )
      .finally(() => {
        this.discovering = null;
      });
    return this.discovering;
  }

  private async fetchDiscovery(): Promise<Discovery> {
    const base = this.config.issuer.replace(/\/$/, "");
    const doc = await getJson(
      `${base}/.well-known/openid-configuration`,
      this.opts.timeoutMs ?? 5000,
      this.abort.signal,
    );
    if (doc.issuer !== this.config.issuer)
      throw new Error("the discovery document's issuer differs from the configured issuer");
    const endpoint = (k: string): string => {
      const v = doc[k];
      if (typeof v !== "string" || !allowedUrl(v))
        throw new Error(`the discovery document's ${k} is missing or not https`);
      return v;
    };
    const methods = doc.code_challenge_methods_supported;
    if (Array.isArray(methods) && !methods.includes("S256"))
      throw new Error("the issuer does not support PKCE S256");
    const supported = Array.isArray(doc.id_token_signing_alg_values_supported)
      ? (doc.id_token_signing_alg_values_supported as unknown[]).filter(
          (a): a is string => typeof a === "string",
        )
      : ["RS256"];
    const algorithms = supported.filter((a) => /^(RS|PS|ES)(256|384|512)$|^EdDSA$/.test(a));
    if (algorithms.length === 0)
      throw new Error("the issuer signs id_tokens with no asymmetric algorithm meshgate accepts");
    const auth = doc.token_endpoint_auth_methods_supported;
    const basicAuth =
      !Array.isArray(auth) || auth.includes("client_secret_basic") || !auth.includes("client_secret_post");
    const jwksUri = endpoint("jwks_uri");
    const jwks = new JwksStore(
      {
        name: `oidc:${this.name}`,
        issuer: this.config.issuer,
        audiences: [this.config.clientId],
        algorithms,
        jwksUri,
        jwks: null,
        clockSkewMs: ID_TOKEN_SKEW_S * 1000,
        tokenFrom: { header: "authorization", prefix: "Bearer ", cookie: null, query: null },
        forwardClaims: {},
      },
      this.opts,
      this.observer,
      this.log,
      () => {},
    );
    return {
      authorizationEndpoint: endpoint("authorization_endpoint"),
      tokenEndpoint: endpoint("token_endpoint"),
      jwks,
      algorithms,
      basicAuth,
      issParameter: doc.authorization_response_iss_parameter_supported === true,
    };
  }

  /** The code exchange (RFC 6749 §4.1.3 with the PKCE verifier). */
  private async exchange(
    d: Discovery,
    facts: AuthRequestFacts,
    code: string,
    verifier: string,
  ): Promise<{ tokens: Record<string, unknown> } | AuthFailure> {
    const form = new URLSearchParams({
      grant_type: "authorization_code",
      code,
      redirect_uri: this.redirectUri(facts),
      code_verifier: verifier,
      client_id: this.config.clientId,
    });
    const headers: Record<string, string> = {
      "content-type": "application/x-www-form-urlencoded",
      accept: "application/json",
    };
    if (d.basicAuth) {
      // RFC 6749 §2.3.1: client id and secret are form-urlencoded before Basic encoding.
      const id = encodeURIComponent(this.config.clientId);
      const secret = encodeURIComponent(this.secret);
      headers.authorization = `Basic ${Buffer.from(`${id}:${secret}`).toString("base64")}`;
    } else form.set("client_secret", this.secret);
    try {
      const timeout = this.opts.timeoutMs ?? 5000;
      const res = await request(d.tokenEndpoint, {
        method: "POST",
        headers,
        body: form.toString(),
        headersTimeout: timeout,
        bodyTimeout: timeout,
        signal: AbortSignal.any([this.abort.signal, AbortSignal.timeout(timeout)]),
      });
      const text = await readCapped(res.body, 256 * 1024);
      let body: Record<string, unknown> = {};
      try {
        body = JSON.parse(text) as Record<string, unknown>;
      } catch {
        /* not JSON */
      }
      if (res.statusCode !== 200) {
        const err =
          typeof body.error === "string" && /^[a-z_]{1,64}$/.test(body.error)
            ? body.error
            : `HTTP ${res.statusCode}`;
        return failure("oidc", `the issuer refused the code exchange (${err})`);
      }
      return { tokens: body };
    } catch (err) {
      this.log.warn(
        { event: "oidc_token_endpoint_failed", provider: this.name, error: (err as Error).message },
        "the OIDC token endpoint could not be reached",
      );
      return failure("oidc", `the token endpoint of OIDC provider ${this.name} is unavailable`, 503);
    }
  }

  private async verifyIdToken(
    d: Discovery,
    idToken: string,
    nonce: string,
  ): Promise<{ claims: Record<string, unknown> } | AuthFailure> {
    let header: { alg?: unknown; kid?: unknown };
    try {
      header = JSON.parse(
        Buffer.from(idToken.split(".")[0] ?? "", "base64url").toString("utf8"),
      ) as typeof header;
    } catch {
      return failure("oidc", "the id_token is malformed");
    }
    if (typeof header.alg !== "string" || !d.algorithms.includes(header.alg))
      return failure("oidc", "the id_token's algorithm is not allowed");
    const found = await d.jwks.lookup(typeof header.kid === "string" ? header.kid : undefined, header.alg);
    if (found.kind !== "key")
      return failure(
        "oidc",
        "no key of the issuer verifies the id_token",
        found.kind === "unavailable" ? 503 : 401,
      );
    try {
      let payload: Record<string, unknown> | undefined;
      // Every key with the id_token's kid is tried (a JWKS may publish one kid twice).
      for (let i = 0; payload === undefined; i++) {
        try {
          ({ payload } = await jwtVerify(idToken, found.keys[i]!, {
            algorithms: d.algorithms,
            issuer: this.config.issuer,
            audience: this.config.clientId,
            requiredClaims: ["exp", "iat", "sub"],
            clockTolerance: ID_TOKEN_SKEW_S,
            currentDate: new Date(this.now()),
          }));
        } catch (err) {
          const code = (err as { code?: string }).code;
          if (code !== "ERR_JWS_SIGNATURE_VERIFICATION_FAILED" || i + 1 >= found.keys.length) throw err;
        }
      }
      if (typeof payload.nonce !== "string" || !safeEqual(payload.nonce, nonce))
        return failure("oidc", "the id_token's nonce does not match the login");
      // OIDC Core §3.1.3.7 (4, 5): with several audiences azp must be present, and an azp that is present
      // must be this client (an id_token issued to another client that merely lists this one is not ours).
      if (
        (Array.isArray(payload.aud) && payload.aud.length > 1 && payload.azp === undefined) ||
        (payload.azp !== undefined && payload.azp !== this.config.clientId)
      )
        return failure("oidc", "the id_token's azp is not this client");
      // §2: sub is a string; a session without one is unusable (every request would be sent to log in again).
      if (typeof payload.sub !== "string" || payload.sub === "")
        return failure("oidc", "the id_token's sub is not a non-empty string");
      return { claims: payload as Record<string, unknown> };
    } catch (err) {
      return failure("oidc", `the id_token did not verify (${(err as { code?: string }).code ?? "invalid"})`);
    }
  }
}

function safeEqual(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}

/**
 * Whether a request without a session may be a page navigation, which is sent to log in: not when it says
 * it is a script's (Sec-Fetch-Mode other than navigate, X-Requested-With), asks for JSON rather than HTML,
 * or carries a bearer token — as oauth2-proxy answers such requests 401 (Envoy's OAuth2 filter:
 * deny_redirect_matcher).
 */
function isNavigation(facts: AuthRequestFacts): boolean {
  const mode = facts.header("sec-fetch-mode");
  if (mode !== undefined && mode !== "navigate") return false;
  if (facts.header("x-requested-with")?.toLowerCase() === "xmlhttprequest") return false;
  // A bearer token is an API client's (a browser sends Basic credentials on navigations by itself).
  if (/^bearer /i.test(facts.header("authorization") ?? "")) return false;
  const accept = facts.header("accept")?.toLowerCase();
  return !(accept !== undefined && accept.includes("json") && !accept.includes("text/html"));
}

/**
 * Loopback names: plain-HTTP development where a Secure cookie would be dropped by some clients. The
 * outbound decision's isLoopbackName, plus a bare `::1` (a URL's hostname keeps the brackets, a Host
 * header's name may not).
 */
export function isLoopbackHost(host: string): boolean {
  return host === "::1" || isLoopbackName(host);
}

function allowedUrl(v: string): boolean {
  try {
    const u = new URL(v);
    return u.protocol === "https:" || (u.protocol === "http:" && isLoopbackHost(u.hostname));
  } catch {
    return false;
  }
}

async function getJson(
  url: string,
  timeoutMs: number,
  signal: AbortSignal,
): Promise<Record<string, unknown>> {
  const res = await request(url, {
    method: "GET",
    headers: { accept: "application/json" },
    headersTimeout: timeoutMs,
    bodyTimeout: timeoutMs,
    signal: AbortSignal.any([signal, AbortSignal.timeout(timeoutMs)]),
  });
  if (res.statusCode !== 200) {
    await res.body.dump();
    throw new Error(`HTTP ${res.statusCode} from ${safeUri(url)}`);
  }
  const doc = JSON.parse(await readCapped(res.body, 512 * 1024)) as unknown;
  if (typeof doc !== "object" || doc === null || Array.isArray(doc)) throw new Error("not a JSON object");
  return doc as Record<string, unknown>;
}

async function readCapped(body: AsyncIterable<unknown> & { destroy(): void }, max: number): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const c of body) {
    size += (c as Buffer).length;
    if (size > max) {
      body.destroy();
      throw new Error(`response larger than ${max} bytes`);
    }
    chunks.push(c as Buffer);
  }
  return Buffer.concat(chunks).toString("utf8");
}
