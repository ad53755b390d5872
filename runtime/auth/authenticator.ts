/**
 * The gateway's one entry point for authentication and authorization: an Authenticator built once per config
 * (at load and at each reload) from `config.auth`, closed when the config is replaced.
 *
 * `admit(routeName, auth, facts)` runs steps 4 and 5 of the filter order — the route's `auth.anyOf`
 * mechanisms (any one authenticates: JWT providers, API key, client certificate, OIDC session), then
 * `authorize()` from runtime/decide — and returns a value: allow (with the principal), deny (401/403/503 with
 * `WWW-Authenticate` challenges per RFC 6750), or a response to write (OIDC login redirect, callback, logout).
 * It answers synchronously whenever no I/O is needed (public routes, verified-token cache hits, API keys,
 * client certificates, OIDC sessions) and with a promise otherwise (a first JWT verification, a JWKS fetch,
 * an OIDC login or callback). Failures are values with reasons; nothing is thrown for a request.
 *
 * `upstreamHeaders(headers, auth, principal)` then edits the headers sent upstream: the principal in
 * gateway-owned headers (client copies of them are always removed, on every route), and the credentials the
 * route accepts removed (bearer token header, API-key header, OIDC cookies): upstreams receive the verified
 * identity, never a replayable credential.
 */
import { PRINCIPAL_HEADERS, type GatewayRuntimeConfig, type RouteAuth } from "../contract/schema.ts";
import {
  authorize,
  compileRouteAuth,
  inRanges,
  type CompiledRouteAuth,
  type Principal,
} from "../decide/authorize.ts";
import { headerValue } from "../net/headers.ts";
import { ApiKeyVerifier } from "./apikeys.ts";
import { ClientCertVerifier } from "./clientcert.ts";
import {
  JwtVerifier,
  commaSmuggles,
  cookieName,
  credentialQueryName,
  decodeToken,
  semicolonSmuggles,
  type JwtOptions,
} from "./jwt.ts";
import { OidcClient, type OidcDeny, type OidcOptions, type RevokedSessions } from "./oidc.ts";
import {
  NO_OBSERVER,
  failure,
  type AdmitResult,
  type AuthFailure,
  type AuthLog,
  type AuthObserver,
  type AuthRequestFacts,
  type AuthResponse,
} from "./types.ts";

/** Headers the gateway sets from the principal; a client's copies are removed from every request. */
export { PRINCIPAL_HEADERS };

/** Every header name the gateway owns for identity: PRINCIPAL_HEADERS plus every jwt provider's forwardClaims header, lower-case. */
export function identityHeaders(config: GatewayRuntimeConfig): Set<string> {
  const owned = new Set<string>(PRINCIPAL_HEADERS);
  for (const p of config.auth.jwt) for (const h of Object.keys(p.forwardClaims)) owned.add(h.toLowerCase());
  return owned;
}

export interface AuthenticatorOptions {
  readonly observer?: AuthObserver;
  readonly log?: AuthLog;
  readonly now?: () => number;
  readonly jwt?: JwtOptions;
  readonly oidc?: OidcOptions;
  /** Sessions ended by logout: one set the gateway keeps across config reloads. */
  readonly revokedSessions?: RevokedSessions;
}

/** What authentication concluded, before authorization. */
export type AuthnOutcome =
  | { readonly kind: "principal"; readonly principal: Principal }
  | {
      readonly kind: "none";
      readonly failure: AuthFailure | null;
      readonly headers?: Readonly<Record<string, string>>;
    }
  | AuthResponse;

interface RoutePlan {
  readonly compiled: CompiledRouteAuth;
  readonly jwt: readonly JwtVerifier[];
  readonly apiKey: ApiKeyVerifier | null;
  readonly certs: readonly ClientCertVerifier[];
  readonly oidc: readonly OidcClient[];
  /** Unknown providers named by the route (a hand-written config): the route then fails closed. */
  readonly missing: readonly string[];
  /** WWW-Authenticate for 401 without credentials. */
  readonly challenge: string | null;
  /** Credential headers removed upstream. */
  readonly stripHeaders: readonly string[];
  /** Credential cookies removed upstream. */
  readonly stripCookies: readonly string[];
  /** Each of stripCookies split at "_" (mentions' cheap pre-check), computed once per plan. */
  readonly stripCookieParts: readonly (readonly string[])[];
  /** Credential query parameters removed upstream, as credentialQueryName reads them (any letter case). */
  readonly stripQuery: readonly string[];
}

const noop = () => {};
/** The challenge of a 401 on a route a client certificate can authenticate (no registered scheme exists). */
export const CLIENT_CERT_CHALLENGE = 'ClientCert realm="meshgate"';
/** The challenge of a 401 on an OIDC route (a request that is not a page navigation: it cannot log in). */
export const OIDC_CHALLENGE = 'OIDC realm="meshgate"';
const SILENT: AuthLog = { warn: noop, error: noop, info: noop };

export class Authenticator {
  private readonly jwt = new Map<string, JwtVerifier>();
  private readonly apiKey: ApiKeyVerifier | null;
  private readonly certs = new Map<string, ClientCertVerifier>();
  private readonly oidc = new Map<string, OidcClient>();
  private readonly plans = new WeakMap<RouteAuth, RoutePlan>();
  private readonly observer: AuthObserver;
  /** Every header name the gateway owns for identity: fixed names plus every forwardClaims header. */
  readonly ownedHeaders: ReadonlySet<string>;
  /** ownedHeaders as a list (walked per request without an iterator). */
  private readonly ownedList: readonly string[];
  private readonly forwarded = new WeakMap<Principal, readonly (readonly [string, string])[]>();
  /**
   * The credential cookies the gateway reads: every OIDC provider's session and pending login, and every
   * JWT provider's `tokenFrom.cookie`. The browser sends them with every request to the host, so they are
   * removed upstream on every route, not only on the provider's — a public route's upstream, or one of a
   * route that takes another mechanism, must not receive a replayable session or bearer token.
   */
  private readonly credentialCookies: readonly string[];

  /** Builds every provider (throws, naming the field, when a provider cannot work: unreadable CA file, missing secret). */
  constructor(config: GatewayRuntimeConfig, opts: AuthenticatorOptions = {}) {
    this.observer = opts.observer ?? NO_OBSERVER;
    const log = opts.log ?? SILENT;
    const now = opts.now;
    for (const p of config.auth.jwt)
      this.jwt.set(p.name, new JwtVerifier(p, { ...opts.jwt, ...(now ? { now } : {}) }, this.observer, log));
    const owned = identityHeaders(config);
    this.ownedHeaders = owned;
    this.ownedList = [...owned];
    this.apiKey = config.auth.apiKeys ? new ApiKeyVerifier(config.auth.apiKeys) : null;
    for (const c of config.auth.clientCert)
      this.certs.set(c.name, new ClientCertVerifier(c, config.auth.clientCert.length === 1, now));
    this.credentialCookies = [
      ...config.auth.oidc.flatMap((o) => [o.cookieName, `${o.cookieName}_login`]),
      ...config.auth.jwt.flatMap((p) => (p.tokenFrom.cookie ? [p.tokenFrom.cookie] : [])),
    ];
    for (const o of config.auth.oidc)
      this.oidc.set(
        o.name,
        new OidcClient(
          o,
          {
            ...opts.jwt,
            ...opts.oidc,
            ...(now ? { now } : {}),
            ...(opts.revokedSessions ? { revoked: opts.revokedSessions } : {}),
          },
          this.observer,
          log,
        ),
      );
    for (const r of config.routes) {
      const missing = this.plan(r.auth).missing;
      if (missing.length)
        throw new Error(
          `route ${r.name}: auth names unknown providers (${missing.join(", ")}); define them under gateway auth`,
        );
    }
  }

  /**
   * Reads the client-certificate providers' CA files again (rotated in place, the config unchanged): all
   * or none — an unreadable file throws, naming it, and the CAs in use stay.
   */
  reloadClientCerts(): void {
    const commits = [...this.certs.values()].map((v) => v.prepareReload());
    for (const commit of commits) commit();
  }

  /** Starts fetching remote JWKS and OIDC discovery documents (never throws, never blocks). */
  prefetch(): void {
    for (const v of this.jwt.values()) v.keys.prefetch();
    for (const o of this.oidc.values()) o.prefetch();
  }

  /** Stops background fetches; in-flight requests finish with what they have. */
  close(): void {
    for (const v of this.jwt.values()) v.keys.close();
    for (const o of this.oidc.values()) o.close();
  }

  /** The JWT provider by name (for diagnostics and tests: JWKS fetch counts, cache size). */
  jwtProvider(name: string): JwtVerifier | undefined {
    return this.jwt.get(name);
  }

  /** API-key verifier (for diagnostics and tests). */
  apiKeys(): ApiKeyVerifier | null {
    return this.apiKey;
  }

  /** Steps 4 and 5: authenticate with the route's mechanisms, then authorize. */
  admit(route: string, auth: RouteAuth, facts: AuthRequestFacts): AdmitResult | Promise<AdmitResult> {
    const plan = this.plan(auth);
    if (auth.public) return this.authorized(route, plan, null, facts);
    // A caller outside the route's client ranges is refused before any credential is looked at (authorize()
    // checks the ranges first): no 401-versus-403 oracle for stolen keys, no JWKS fetch, no OIDC login.
    const ranges = plan.compiled.ranges;
    if (ranges.length && !inRanges(ranges, facts.clientIp)) return this.authorized(route, plan, null, facts);
    const outcome = this.authenticate(auth, facts);
    return outcome instanceof Promise
      ? outcome.then((o) => this.conclude(route, plan, o, facts))
      : this.conclude(route, plan, outcome, facts);
  }

  /** Step 4 alone: the route's mechanisms, any one of which authenticates. */
  authenticate(auth: RouteAuth, facts: AuthRequestFacts): AuthnOutcome | Promise<AuthnOutcome> {
    const plan = this.plan(auth);
    if (plan.missing.length)
      return {
        kind: "none",
        failure: failure("config", `the route names unknown auth providers: ${plan.missing.join(", ")}`, 503),
      };
    for (const o of plan.oidc) {
      if (facts.path === o.callbackPath) return o.callback(facts).then((r) => this.oidcResult(r));
      if (facts.path === o.logoutPath && (facts.method === "GET" || facts.method === "POST")) {
        const r = o.logout(facts);
        this.observer.authn("oidc", "success");
        return r;
      }
    }
    const state: Attempt = { best: null };
    const jwt = plan.jwt.length ? this.jwtStep(plan, facts, state) : null;
    if (jwt instanceof Promise) return jwt.then((p) => (p ? principal(p) : this.rest(plan, facts, state)));
    if (jwt) return principal(jwt);
    return this.rest(plan, facts, state);
  }

  /**
   * Edits the headers going upstream: removes client copies of identity headers (every route), removes the
   * route's credentials, and sets the principal's headers. Values are percent-encoded UTF-8 where they hold
   * characters outside visible ASCII (and "%" itself), so upstreams decode them with decodeURIComponent.
   */
  upstreamHeaders(headers: Record<string, string | string[]>, auth: RouteAuth, p: Principal | null): void {
    // Headers copied without droppedHeaders() (see there) lose them here.
    const owned = this.ownedList;
    for (let i = 0; i < owned.length; i++) if (owned[i]! in headers) delete headers[owned[i]!];
    const plan = this.plan(auth);
    const strip = plan.stripHeaders;
    for (let i = 0; i < strip.length; i++) if (strip[i]! in headers) delete headers[strip[i]!];
    if (
      plan.stripCookies.length &&
      headers.cookie !== undefined &&
      mentions(headers.cookie, plan.stripCookieParts)
    ) {
      const kept = withoutCookies(headers.cookie, plan.stripCookies);
      if (kept) headers.cookie = kept;
      else delete headers.cookie;
    }
    if (!p) return;
    let pairs = this.forwarded.get(p);
    if (!pairs) {
      pairs = this.principalHeaders(p);
      this.forwarded.set(p, pairs);
    }
    for (let i = 0; i < pairs.length; i++) headers[pairs[i]![0]] = pairs[i]![1];
  }

  /**
   * The value the upstream gets in identity header `name` (one of ownedHeaders) for principal `p`:
   * the principal's, never the client's copy, which upstreamHeaders() removes. Undefined when the
   * principal has none (no principal, or no such claim). A rate limit keyed by such a header counts this
   * value: keyed by the client's copy, any client could name a fresh bucket per request.
   */
  identityHeaderValue(name: string, p: Principal | null): string | undefined {
    if (!p) return undefined;
    let pairs = this.forwarded.get(p);
    if (!pairs) {
      pairs = this.principalHeaders(p);
      this.forwarded.set(p, pairs);
    }
    for (let i = 0; i < pairs.length; i++) if (pairs[i]![0] === name) return pairs[i]![1];
    return undefined;
  }

  /**
   * The request headers upstreamHeaders() removes for a route (identity headers of every route, and the
   * route's credential headers): a proxy that leaves them out while copying the client's headers saves
   * the deletes (which turn a header object into a slow dictionary).
   */
  droppedHeaders(auth: RouteAuth): readonly string[] {
    return [...this.ownedList, ...this.plan(auth).stripHeaders];
  }

  /** The upstream path and query without the route's query-parameter credentials (when a JWT provider reads one). */
  upstreamPath(auth: RouteAuth, pathAndQuery: string): string {
    const plan = this.plan(auth);
    const q = pathAndQuery.indexOf("?");
    if (!plan.stripQuery.length || q < 0) return pathAndQuery;
    const kept = pathAndQuery
      .slice(q + 1)
      .split("&")
      .filter(
        (pair) =>
          !plan.stripQuery.includes(credentialQueryName(nameOf(pair))) &&
          !semicolonSmuggles(pair, plan.stripQuery, credentialQueryName),
      );
    return kept.length ? `${pathAndQuery.slice(0, q)}?${kept.join("&")}` : pathAndQuery.slice(0, q);
  }

  /**
   * A canonical query without the route's query-parameter credentials (the same one when it has none):
   * what the HTTP cache keys and invalidates by, so a bearer token never sits in a cache key (nor in the
   * Redis store's URL index) and a purge or an invalidation of the URL reaches every principal's entry.
   */
  credentialFreeQuery(auth: RouteAuth, query: string): string {
    if (query.length === 0 || this.plan(auth).stripQuery.length === 0) return query;
    return this.upstreamPath(auth, `?${query}`).slice(1);
  }

  // ── internals ──

  private plan(auth: RouteAuth): RoutePlan {
    const hit = this.plans.get(auth);
    if (hit) return hit;
    const missing: string[] = [];
    const jwt: JwtVerifier[] = [];
    const certs: ClientCertVerifier[] = [];
    const oidc: OidcClient[] = [];
    let apiKey: ApiKeyVerifier | null = null;
    const challenges: string[] = [];
    const stripHeaders = new Set<string>();
    const stripCookies = new Set<string>();
    const stripQuery = new Set<string>();
    for (const c of this.credentialCookies) stripCookies.add(c);
    for (const m of auth.anyOf) {
      if (m.kind === "jwt") {
        const v = this.jwt.get(m.provider);
        if (!v) missing.push(`jwt ${m.provider}`);
        else {
          jwt.push(v);
          stripHeaders.add(v.config.tokenFrom.header.toLowerCase());
          if (v.config.tokenFrom.cookie) stripCookies.add(v.config.tokenFrom.cookie);
          if (v.config.tokenFrom.query) stripQuery.add(credentialQueryName(v.config.tokenFrom.query));
        }
      } else if (m.kind === "apiKey") {
        if (!this.apiKey) missing.push("apiKey");
        else {
          apiKey = this.apiKey;
          stripHeaders.add(this.apiKey.header);
        }
      } else if (m.kind === "clientCert") {
        const v = this.certs.get(m.provider);
        if (!v) missing.push(`clientCert ${m.provider}`);
        else certs.push(v);
      } else {
        const v = this.oidc.get(m.provider);
        if (!v) missing.push(`oidc ${m.provider}`);
        else {
          oidc.push(v);
          stripCookies.add(v.config.cookieName);
          stripCookies.add(`${v.config.cookieName}_login`);
        }
      }
    }
    // RFC 9110 §11.6.1: a 401 carries at least one challenge. Bearer (RFC 6750) for tokens; mechanisms
    // without a registered scheme get one named after the spec's mechanism, as Kong's `Key realm=…`.
    if (jwt.length) challenges.push('Bearer realm="meshgate"');
    if (apiKey) challenges.push(`ApiKey realm="meshgate", header="${apiKey.header}"`);
    if (certs.length) challenges.push(CLIENT_CERT_CHALLENGE);
    if (oidc.length) challenges.push(OIDC_CHALLENGE);
    const names = [...new Set([...stripCookies].map(cookieName))];
    const plan: RoutePlan = {
      compiled: compileRouteAuth(auth),
      jwt,
      apiKey,
      certs,
      oidc,
      missing,
      challenge: challenges.length ? challenges.join(", ") : null,
      stripHeaders: [...stripHeaders],
      stripCookies: names,
      stripCookieParts: names.map((n) => n.split("_")),
      stripQuery: [...stripQuery],
    };
    this.plans.set(auth, plan);
    return plan;
  }

  /** JWT providers of the route: a principal (sync on a cache hit), null, or a promise of either. */
  private jwtStep(
    plan: RoutePlan,
    facts: AuthRequestFacts,
    state: Attempt,
  ): Principal | null | Promise<Principal | null> {
    if (plan.jwt.length === 1) {
      // One provider (the usual route): no list of readers to build.
      const v = plan.jwt[0]!;
      const t = v.extract(facts);
      if (t === null) return null;
      if (typeof t !== "string") {
        this.note(state, t);
        return null;
      }
      const hit = v.cachedOn(facts.connection, t); // TokenCache: a JWT is its own key
      if (hit) {
        this.observer.authn("jwt", "cached");
        return hit;
      }
      return this.verifyJwt(t, plan.jwt, state);
    }
    let token: string | null = null;
    let readers: JwtVerifier[] | null = null;
    for (const v of plan.jwt) {
      const t = v.extract(facts);
      if (t === null) continue;
      if (typeof t !== "string") {
        this.note(state, t);
        continue;
      }
      if (token !== null && t !== token) continue; // providers reading another place: first token wins
      token = t;
      (readers ??= []).push(v);
    }
    if (token === null || !readers) return null;
    for (const v of readers) {
      const hit = v.cachedOn(facts.connection, token);
      if (hit) {
        this.observer.authn("jwt", "cached");
        return hit;
      }
    }
    return this.verifyJwt(token, readers, state);
  }

  /** A token no reader has cached: decoded, then verified by the readers trusting its issuer. */
  private verifyJwt(
    token: string,
    readers: readonly JwtVerifier[],
    state: Attempt,
  ): Principal | null | Promise<Principal | null> {
    const key = token; // TokenCache: a JWT is its own key
    const decoded = decodeToken(token);
    if ("kind" in decoded) {
      this.observer.authn("jwt", "failure");
      this.note(state, decoded);
      return null;
    }
    const iss = decoded.payload.iss;
    const candidates = readers.filter((v) => v.issuer === iss);
    if (candidates.length === 0) {
      this.observer.authn("jwt", "failure");
      this.note(
        state,
        failure("jwt", "the token's issuer is not accepted on this route", 401, "invalid_token"),
      );
      return null;
    }
    const t = token;
    return (async () => {
      for (const v of candidates) {
        const r = await v.verify(t, decoded, key);
        if (!("kind" in r)) {
          this.observer.authn("jwt", "success");
          return r;
        }
        this.observer.authn("jwt", r.status === 503 ? "unavailable" : "failure");
        this.note(state, r);
      }
      return null;
    })();
  }

  /** API key, client certificates, OIDC session — all synchronous — then the login redirect when it applies. */
  private rest(
    plan: RoutePlan,
    facts: AuthRequestFacts,
    state: Attempt,
  ): AuthnOutcome | Promise<AuthnOutcome> {
    if (plan.apiKey) {
      const r = plan.apiKey.authenticate(facts);
      if (r !== null) {
        if ("kind" in r) {
          this.observer.authn("apiKey", "failure");
          this.note(state, r);
        } else {
          this.observer.authn("apiKey", "success");
          return principal(r);
        }
      }
    }
    for (const c of plan.certs) {
      const r = c.authenticate(facts.tls);
      if (r === null) continue;
      if ("kind" in r) {
        this.observer.authn("clientCert", "failure");
        this.note(state, r);
      } else {
        this.observer.authn("clientCert", "success");
        return principal(r);
      }
    }
    let sessionFailed = false;
    for (const o of plan.oidc) {
      const r = o.session(facts);
      if (r === null) continue;
      if ("kind" in r) {
        this.observer.authn("oidc", "failure");
        sessionFailed = true;
        this.note(state, r);
      } else {
        this.observer.authn("oidc", "success");
        return principal(r);
      }
    }
    // A browser without a (valid) session is sent to log in, unless another mechanism found a reason to refuse
    // outright (a certificate not allowed, a provider down).
    const first = plan.oidc[0];
    if (
      first &&
      (facts.method === "GET" || facts.method === "HEAD") &&
      !(state.best && state.best.status !== 401)
    ) {
      const clear = sessionFailed ? first.clearSession(facts) : undefined;
      return first.login(facts).then((r): AuthnOutcome => {
        if (r.kind === "respond") {
          if (!clear) return r;
          const pending = r.headers["set-cookie"] as string;
          return { ...r, headers: { ...r.headers, "set-cookie": [pending, clear] } };
        }
        this.note(state, r);
        return { kind: "none", failure: state.best };
      });
    }
    return { kind: "none", failure: state.best };
  }

  private oidcResult(r: AuthResponse | OidcDeny): AuthnOutcome {
    if (r.kind === "respond") {
      this.observer.authn("oidc", "success");
      return r;
    }
    this.observer.authn("oidc", r.status === 503 ? "unavailable" : "failure");
    return { kind: "none", failure: r, ...(r.headers ? { headers: r.headers } : {}) };
  }

  /** Keeps the most telling failure: 403 beats 503, which beats 401. */
  private note(state: Attempt, f: AuthFailure): void {
    const rank = (x: AuthFailure) => (x.status === 403 ? 3 : x.status === 503 ? 2 : 1);
    if (!state.best || rank(f) > rank(state.best)) state.best = f;
  }

  private conclude(route: string, plan: RoutePlan, o: AuthnOutcome, facts: AuthRequestFacts): AdmitResult {
    if (o.kind === "respond") return o;
    if (o.kind === "principal") return this.authorized(route, plan, o.principal, facts);
    const f = o.failure;
    const headers: Record<string, string> = { ...o.headers };
    if (!f || f.status === 401) {
      const challenge = this.challenge(plan, f);
      if (challenge) headers["www-authenticate"] = challenge;
    }
    this.observer.authzDenied(route, f?.status === 503 ? "unavailable" : "authentication");
    if (!f) {
      return {
        kind: "deny",
        status: 401,
        code: "unauthenticated",
        requirement: "authentication",
        reason: `this route requires authentication (${plan.compiled.describe})`,
        headers,
      };
    }
    return {
      kind: "deny",
      status: f.status,
      code: f.code,
      requirement: f.status === 503 ? "unavailable" : "authentication",
      reason: f.reason,
      headers,
      ...(f.reconnect ? { reconnect: true as const } : {}),
    };
  }

  private authorized(
    route: string,
    plan: RoutePlan,
    p: Principal | null,
    facts: AuthRequestFacts,
  ): AdmitResult {
    const d = authorize(plan.compiled, p, facts.clientIp);
    if (d.kind === "allow") return d;
    this.observer.authzDenied(route, d.requirement);
    const headers: Record<string, string> = {};
    if (d.status === 401) {
      const c = this.challenge(plan, null);
      if (c) headers["www-authenticate"] = c;
    } else if (d.requirement === "scope" && p?.mechanism === "jwt") {
      headers["www-authenticate"] =
        `Bearer realm="meshgate", error="insufficient_scope", scope="${quoted(plan.compiled.auth.scopes.join(" "))}"`;
    }
    return {
      kind: "deny",
      status: d.status,
      code: d.code,
      requirement: d.requirement,
      reason: d.reason,
      headers,
      principal: p,
    };
  }

  /** The WWW-Authenticate challenges of a 401 on a route with this `auth` (null: none applies). */
  challengeFor(auth: RouteAuth): string | null {
    return this.plan(auth).challenge;
  }

  /** RFC 6750 §3 challenge: no error code without credentials; invalid_token / invalid_request otherwise. */
  private challenge(plan: RoutePlan, f: AuthFailure | null): string | null {
    if (!plan.challenge) return null;
    if (f?.mechanism === "jwt" && f.bearerError) {
      const bearer = `Bearer realm="meshgate", error="${f.bearerError}", error_description="${quoted(f.reason)}"`;
      return plan.challenge.replace('Bearer realm="meshgate"', bearer);
    }
    return plan.challenge;
  }

  private principalHeaders(p: Principal): [string, string][] {
    const out: [string, string][] = [
      ["x-meshgate-auth", `${p.mechanism}${p.mechanism === "apiKey" ? "" : `:${p.provider}`}`],
    ];
    if (p.subject) out.push(["x-meshgate-subject", headerValue(p.subject)]);
    if (p.consumer) out.push(["x-meshgate-consumer", headerValue(p.consumer)]);
    if (p.groups.length) out.push(["x-meshgate-groups", headerValue(p.groups.join(","))]);
    if (p.scopes.length) out.push(["x-meshgate-scopes", headerValue(p.scopes.join(" "))]);
    if (p.mechanism === "jwt") {
      const v = this.jwt.get(p.provider);
      for (const [header, claim] of Object.entries(v?.config.forwardClaims ?? {})) {
        const value = p.claims[claim];
        if (value === undefined || value === null) continue;
        out.push([
          header.toLowerCase(),
          headerValue(typeof value === "string" ? value : JSON.stringify(value)),
        ]);
      }
    }
    return out;
  }
}

/** The most telling failure seen so far while trying a route's mechanisms. */
interface Attempt {
  best: AuthFailure | null;
}

const principal = (p: Principal): AuthnOutcome => ({ kind: "principal", principal: p });

/** Text inside a quoted-string: no quotes, backslashes or control characters. */
function quoted(s: string): string {
  let out = "";
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c >= 0x20 && c < 0x7f && c !== 0x22 && c !== 0x5c) out += s[i];
  }
  return out;
}

/**
 * A Cookie header without the named cookies ("" when nothing is left): `names` as cookieName reads them,
 * and every pair that holds one of them after a comma (commaSmuggles).
 */
function withoutCookies(value: string | string[], names: readonly string[]): string {
  const all = Array.isArray(value) ? value.join("; ") : value;
  return all
    .split(";")
    .map((c) => c.trim())
    .filter((c) => c && !names.includes(cookieName(nameOf(c))) && !commaSmuggles(c, 0, c.length, names))
    .join("; ");
}

/**
 * Whether a Cookie header may hold one of the names, given split at "_" (cookieName spellings: a cheap test before rewriting
 * it). Lower-cased, a spelling holds every "_"-separated part of its name literally unless it is
 * percent-encoded — PHP reads ".", " " and "[" as "_", a "+" is a space — so a header with every part of
 * a name, or with a "%", is rewritten.
 */
function mentions(value: string | string[], nameParts: readonly (readonly string[])[]): boolean {
  const text = (typeof value === "string" ? value : value.join(";")).toLowerCase();
  if (text.includes("%")) return true;
  for (let i = 0; i < nameParts.length; i++) {
    const parts = nameParts[i]!;
    let all = true;
    for (let j = 0; all && j < parts.length; j++) all = text.includes(parts[j]!);
    if (all) return true;
  }
  return false;
}

/** The name of a "name=value" pair (the whole text when it has no "="). */
function nameOf(pair: string): string {
  const eq = pair.indexOf("=");
  return eq < 0 ? pair : pair.slice(0, eq);
}
