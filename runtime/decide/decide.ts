/**
 * decide(): the pure decision for one request at the gateway — the single source of truth shared by the
 * gateway (per request), the policies (on synthetic requests, before deploy) and the tests.
 *
 * Given the compiled config and the request facts it returns a value: the route with everything the
 * proxy needs (canonical path, captured params, upstream path after rewrite, auth requirement, backends,
 * timeout and retry plan), or a reject with its HTTP status, a stable code and the reason. It never throws
 * for a request, never reads the clock or randomness, and does no I/O.
 */
import {
  HTTP_METHODS,
  type GatewayRuntimeConfig,
  type RetryPlan,
  type RouteAction,
  type RouteAuth,
} from "../contract/schema.ts";
import { canonicalHost, canonicalizeTarget, type TargetRejectReason } from "./canonical.ts";
import { paramsOf, Router, type CompiledRoute } from "./router.ts";

export type RejectCode =
  "bad_method" | "bad_request_target" | "bad_host" | "host_not_served" | "no_route" | "method_not_allowed";

export interface RejectDecision {
  readonly kind: "reject";
  readonly status: 400 | 404 | 405;
  readonly code: RejectCode;
  /** For bad_request_target: which canonicalization rule refused the target. */
  readonly reason: TargetRejectReason | null;
  readonly detail: string;
  /** For method_not_allowed: the methods the path accepts. */
  readonly allow: readonly string[];
}

export interface RouteDecision {
  readonly kind: "route";
  readonly route: CompiledRoute;
  /** Canonical host (lower-case, no port). */
  readonly host: string;
  /** The canonical path: what was matched, and what authorization and rate limits see. */
  readonly path: string;
  readonly query: string;
  readonly params: Readonly<Record<string, string>>;
  /**
   * Path and query sent upstream (the canonical path, or the rewrite with params substituted); for a
   * redirect route, the path and query of its Location (the redirect path with params substituted).
   */
  readonly upstreamPath: string;
  /** Host header sent upstream when the route rewrites it, else null (keep the client's). */
  readonly upstreamHost: string | null;
  readonly action: RouteAction;
  readonly auth: RouteAuth;
  readonly timeoutMs: number;
  readonly retry: RetryPlan;
  /**
   * A CORS preflight for this route: an OPTIONS with Origin and Access-Control-Request-Method, routed
   * as the method it asks about, on a route with `cors`. The gateway answers it before authentication.
   */
  readonly preflight: boolean;
}

export type Decision = RouteDecision | RejectDecision;

/** The facts of a request that decide() reads. */
export interface GatewayRequestFacts {
  readonly method: string;
  /** The raw request target as received (`req.url`). */
  readonly target: string;
  /** The Host header (or :authority), raw. */
  readonly host: string | undefined;
  /** Header lookup by lower-case name (first value). */
  readonly header: (name: string) => string | undefined;
}

export interface CompiledGateway {
  readonly config: GatewayRuntimeConfig;
  readonly router: Router;
  readonly mergeSlashes: boolean;
  /** Gateway hosts; empty = every host. */
  readonly exactHosts: ReadonlySet<string>;
  readonly wildcardSuffixes: readonly string[];
}

/** Compiles a gateway config once (at load and at each reload); decide() then only reads it. */
export function compileGateway(config: GatewayRuntimeConfig): CompiledGateway {
  return {
    config,
    router: new Router(config.routes),
    mergeSlashes: true,
    exactHosts: new Set(config.hosts.filter((h) => !h.startsWith("*."))),
    wildcardSuffixes: config.hosts.filter((h) => h.startsWith("*.")).map((h) => h.slice(1)),
  };
}

const reject = (
  status: RejectDecision["status"],
  code: RejectCode,
  detail: string,
  reason: TargetRejectReason | null = null,
  allow: readonly string[] = [],
): RejectDecision => ({ kind: "reject", status, code, reason, detail, allow });

/** The methods the proxies route (one Set lookup for almost every request). */
const KNOWN_METHODS: ReadonlySet<string> = new Set<string>(HTTP_METHODS);
/** An RFC 9110 §9.1 method token without lower-case letters. */
const UPPER_METHOD_TOKEN = /^[!#$%&'*+.^_`|~0-9A-Z-]+$/;

/**
 * Why a method is refused, or null. Methods are case-sensitive (RFC 9110 §9.1): `get` is not GET, and the
 * proxies' HTTP/1.1 parser refuses it (400). The same rule here refuses it over HTTP/2 (whose `:method` Node
 * passes through as sent) and in `meshgate explain`, so every path gives one verdict.
 */
export function methodProblem(method: string): string | null {
  if (KNOWN_METHODS.has(method) || UPPER_METHOD_TOKEN.test(method)) return null;
  return `the method ${JSON.stringify(method.slice(0, 32))} is not an upper-case token (methods are case-sensitive, RFC 9110 §9.1)`;
}

export function decide(gw: CompiledGateway, facts: GatewayRequestFacts): Decision {
  const badMethod = methodProblem(facts.method);
  if (badMethod !== null) return reject(400, "bad_method", badMethod);
  const target = canonicalizeTarget(facts.target, { mergeSlashes: gw.mergeSlashes });
  if (!target.ok) return reject(400, "bad_request_target", target.detail, target.reason);
  const host = target.host ?? canonicalHost(facts.host);
  if (host === null) return reject(400, "bad_host", "missing or malformed Host header");
  if (!servesHost(gw, host))
    return reject(404, "host_not_served", `this gateway does not serve host ${host}`);

  // The facts are the header source: the router calls facts.header() as a method (the gateway's
  // Exchange implements it as one), and only for routes with header conditions.
  const query = { method: facts.method, path: target.path, query: target.query, headers: facts };
  let match = gw.router.match(host, query);
  let preflight = false;
  if (facts.method === "OPTIONS") {
    // A CORS preflight belongs to the route of the request it announces (the route may not accept
    // OPTIONS at all); only a route with cors answers preflights, others see a plain OPTIONS.
    const requested = facts.header("access-control-request-method");
    if (requested !== undefined && facts.header("origin") !== undefined) {
      const announced = gw.router.match(host, { ...query, method: requested });
      if (announced.kind === "matched" && announced.route.config.cors !== null) {
        match = announced;
        preflight = true;
      }
    }
  }
  if (match.kind === "no-route")
    return reject(404, "no_route", `no route matches ${facts.method} ${target.path}`);
  if (match.kind === "method-not-allowed") {
    return reject(
      405,
      "method_not_allowed",
      `${facts.method} is not allowed on ${target.path}`,
      null,
      match.allow,
    );
  }
  const route = match.route;
  const template = route.rewrite;
  const upstreamPathOnly = template ? fill(template, match.captures) : target.path;
  return new Routed(
    route,
    host,
    target.path,
    target.query,
    match.captures,
    target.query ? `${upstreamPathOnly}?${target.query}` : upstreamPathOnly,
    preflight,
  );
}

/**
 * A route decision. Everything is read from the compiled route (one object per route, so a lookup among
 * 10,000 routes touches little memory); `params` is built from the captures on first read, since only
 * templates and explanations read the names.
 */
class Routed implements RouteDecision {
  readonly kind = "route" as const;
  readonly route: CompiledRoute;
  readonly host: string;
  readonly path: string;
  readonly query: string;
  readonly upstreamPath: string;
  readonly preflight: boolean;
  readonly #captures: readonly string[];
  #params: Readonly<Record<string, string>> | null = null;

  constructor(
    route: CompiledRoute,
    host: string,
    path: string,
    query: string,
    captures: readonly string[],
    upstreamPath: string,
    preflight: boolean,
  ) {
    this.route = route;
    this.host = host;
    this.path = path;
    this.query = query;
    this.#captures = captures;
    this.upstreamPath = upstreamPath;
    this.preflight = preflight;
  }

  get params(): Readonly<Record<string, string>> {
    return (this.#params ??= paramsOf(this.route, this.#captures));
  }
  get upstreamHost(): string | null {
    return this.route.rewriteHost;
  }
  get action(): RouteAction {
    return this.route.action;
  }
  get auth(): RouteAuth {
    return this.route.auth;
  }
  get timeoutMs(): number {
    return this.route.timeoutMs;
  }
  get retry(): RetryPlan {
    return this.route.retry;
  }
}

function servesHost(gw: CompiledGateway, host: string): boolean {
  if (gw.exactHosts.size === 0 && gw.wildcardSuffixes.length === 0) return true;
  if (gw.exactHosts.has(host)) return true;
  for (const suffix of gw.wildcardSuffixes)
    if (host.endsWith(suffix) && host.length > suffix.length) return true;
  return false;
}

function fill(template: readonly (string | number)[], captures: readonly string[]): string {
  let out = "";
  for (let i = 0; i < template.length; i++) {
    const part = template[i]!;
    out += typeof part === "string" ? part : (captures[part] ?? "");
  }
  return out;
}
