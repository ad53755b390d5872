/**
 * decideOutbound(): where the sidecar's outbound side sends an app's request — pure, shared with the
 * policy checks. The app calls `http://<service>/…` through the sidecar (absolute-form target, or
 * origin-form with `Host: <service>`), or sends anything to a service's local port under a Host naming
 * the loopback or that service (another is 421: DNS rebinding). A browser page's request (Origin, or
 * Sec-Fetch-Site naming another site) is refused on every outbound port (403). Only the services
 * the caller declares in `calls` (the config's `outbound.services`) are reachable; every other
 * destination is refused (fail closed). The matching per-route policy (`outbound.services[].routes`,
 * most specific path first, as the router orders them) gives the timeout and retry plan.
 *
 * A plain-HTTP request whose authority names a declared external destination (`outbound.external`:
 * `http://<host>:<port>/…`, port 80 when omitted; an external whose TLS the sidecar originates is also
 * `http://<host>/…`) is forwarded to it, once, within the external's timeout — never retried: the app
 * knows which of its calls to a third party are safe to repeat. A wildcard external (`*.example.com`)
 * takes every name below it, a range (`10.20.0.0/16`) every address in it (decide/external.ts: an exact
 * host first, then the most specific pattern), and the request goes to the host the app named.
 */
import type { RetryPlan, SidecarRuntimeConfig } from "../contract/schema.ts";
import { parseIpv4 } from "./authorize.ts";
import { canonicalHost, canonicalizeTarget, type TargetRejectReason } from "./canonical.ts";
import { compileExternalMatcher, isPatternHost, type ExternalMatcher } from "./external.ts";
import { comparePatterns, isPatternError, matchPath, parsePathPattern, type PathPattern } from "./pattern.ts";

export type OutboundRejectCode =
  | "bad_request_target"
  | "bad_host"
  | "unsupported_scheme"
  | "destination_not_declared"
  | "browser_request"
  | "misdirected_request";

export interface OutboundFacts {
  readonly method: string;
  /** The raw request target (`req.url`): origin-form, or absolute-form when the app uses a proxy. */
  readonly target: string;
  /** The Host header, raw. */
  readonly host: string | undefined;
  /** The service whose local port the request arrived on; null on the proxy port. */
  readonly service: string | null;
  /** The Origin header, raw (a browser page's request); absent for server-side clients. */
  readonly origin?: string | undefined;
  /** The Sec-Fetch-Site header, raw (browsers send it; Node's fetch does not). */
  readonly fetchSite?: string | undefined;
}

export interface OutboundRoute {
  readonly kind: "route";
  readonly service: string;
  readonly cluster: string;
  /** The canonical path, and what is sent upstream (path and query). */
  readonly path: string;
  readonly query: string;
  readonly upstreamTarget: string;
  /** The Host header sent upstream: the canonical host the app named, or the service's name. */
  readonly host: string;
  /** The per-route policy that matched, or null for the service's defaults. */
  readonly route: string | null;
  readonly timeoutMs: number;
  readonly retry: RetryPlan;
}

export interface OutboundReject {
  readonly kind: "reject";
  readonly status: 400 | 403 | 421;
  readonly code: OutboundRejectCode;
  readonly targetReason: TargetRejectReason | null;
  readonly detail: string;
}

/** A plain-HTTP request to a declared external destination. */
export interface OutboundExternal {
  readonly kind: "external";
  readonly external: string;
  /** The canonical path, and what is sent upstream (path and query). */
  readonly path: string;
  readonly query: string;
  readonly upstreamTarget: string;
  /**
   * The host the sidecar connects to (and verifies originated TLS for): the external's, or for a
   * wildcard or range external the canonical name or address the app called.
   */
  readonly destination: string;
  /** The Host header sent: the destination, with its port unless that is the scheme's default. */
  readonly host: string;
  readonly timeoutMs: number;
}

export type OutboundDecision = OutboundRoute | OutboundExternal | OutboundReject;

type ExternalEntry = SidecarRuntimeConfig["outbound"]["external"][number];

interface CompiledPolicy {
  readonly name: string;
  readonly pattern: PathPattern;
  readonly methods: ReadonlySet<string> | null;
  readonly timeoutMs: number;
  readonly retry: RetryPlan;
}

interface CompiledService {
  readonly service: string;
  readonly cluster: string;
  readonly timeoutMs: number;
  readonly retry: RetryPlan;
  /** Most specific first. */
  readonly policies: readonly CompiledPolicy[];
}

export interface CompiledOutbound {
  /** Services by every host name that reaches them: `svc`, `svc.ns`, `svc.ns.svc`, `svc.ns.svc.cluster.local`. */
  readonly byHost: ReadonlyMap<string, CompiledService>;
  readonly byName: ReadonlyMap<string, CompiledService>;
  /**
   * External destinations by the host and port plain-HTTP requests name them with (the declared port;
   * port 80 too for one whose TLS the sidecar originates).
   */
  readonly externals: ExternalMatcher<OutboundExternalTarget>;
}

interface OutboundExternalTarget {
  readonly name: string;
  /** The external's host (canonical, a wildcard or a range) and the port it is reached at through the sidecar. */
  readonly host: string;
  readonly port: number;
  /** The declared port, where the sidecar connects. */
  readonly externalPort: number;
  readonly tls: ExternalEntry["tls"];
  readonly timeoutMs: number;
}

/** A host as authorities write it: an IPv6 address in brackets. */
const authorityHost = (host: string) => (host.includes(":") ? `[${host}]` : host);

/**
 * The host and ports that reach each external: `host:port`; one whose TLS the sidecar originates also
 * `host:80` (`http://host/…`), unless another external declares that port (the matcher takes the first
 * of equal entries, and these come after every declared port).
 */
function compileExternalTargets(list: readonly ExternalEntry[]): ExternalMatcher<OutboundExternalTarget> {
  const target = (e: ExternalEntry, port: number): OutboundExternalTarget => ({
    name: e.name,
    host: e.host,
    port,
    externalPort: e.port,
    tls: e.tls,
    timeoutMs: e.timeoutMs,
  });
  return compileExternalMatcher([
    ...list.map((e) => target(e, e.port)),
    ...list.filter((e) => e.tls === "originate").map((e) => target(e, 80)),
  ]);
}

/** The Host header of a request to `host` at the external's port: the port unless the scheme's default. */
function externalHostHeader(host: string, e: OutboundExternalTarget): string {
  return e.externalPort === (e.tls === "originate" ? 443 : 80)
    ? authorityHost(host)
    : `${authorityHost(host)}:${e.externalPort}`;
}

/** The port of a well-formed authority (canonicalHost accepted it): its digits after the host, or 80. */
function authorityPort(authority: string): number {
  const colon = authority.lastIndexOf(":");
  if (colon < 0 || colon < authority.lastIndexOf("]")) return 80;
  const digits = authority.slice(colon + 1);
  return digits.length === 0 ? 80 : Number(digits);
}

const ABSOLUTE_AUTHORITY = /^http:\/\/([^/?#]*)/i;

/** Compiles `outbound` once; throws naming the route when a path pattern is malformed. */
export function compileOutbound(
  outbound: SidecarRuntimeConfig["outbound"],
  namespace: string,
): CompiledOutbound {
  const byHost = new Map<string, CompiledService>();
  const byName = new Map<string, CompiledService>();
  for (const s of outbound.services) {
    const policies = s.routes
      .map((r): CompiledPolicy => {
        const pattern = parsePathPattern(r.match.path);
        if (isPatternError(pattern))
          throw new Error(`outbound ${s.service} route ${r.name}: ${pattern.error}`);
        return {
          name: r.name,
          pattern,
          methods: r.match.methods.length > 0 ? new Set(r.match.methods) : null,
          timeoutMs: r.timeoutMs,
          retry: r.retry,
        };
      })
      .sort(
        (a, b) =>
          comparePatterns(a.pattern, b.pattern) ||
          Number(b.methods !== null) - Number(a.methods !== null) ||
          (a.name < b.name ? -1 : a.name > b.name ? 1 : 0),
      );
    const compiled: CompiledService = {
      service: s.service,
      cluster: s.cluster,
      timeoutMs: s.timeoutMs,
      retry: s.retry,
      policies,
    };
    byName.set(s.service, compiled);
    const base = s.service.toLowerCase();
    for (const h of [
      base,
      `${base}.${namespace}`,
      `${base}.${namespace}.svc`,
      `${base}.${namespace}.svc.cluster.local`,
    ])
      byHost.set(h, compiled);
  }
  return { byHost, byName, externals: compileExternalTargets(outbound.external) };
}

const HTTPS_TARGET = /^https:\/\//i;

const reject = (
  status: 400 | 403 | 421,
  code: OutboundRejectCode,
  detail: string,
  targetReason: TargetRejectReason | null = null,
): OutboundReject => ({ kind: "reject", status, code, targetReason, detail });

/**
 * A loopback name in canonical form (canonicalHost): `localhost`, `[::1]` or a 127.0.0.0/8 dotted quad.
 * No regular expression: it runs per request on a local port (after the map lookup of the service's names).
 */
export function isLoopbackName(host: string): boolean {
  if (host === "localhost" || host === "127.0.0.1" || host === "[::1]") return true;
  if (!host.startsWith("127.")) return false;
  const v4 = parseIpv4(host);
  return v4 !== null && v4 >>> 24 === 127;
}

/**
 * A request a browser page made: it carries Origin (every cross-origin request but a plain GET/HEAD
 * navigation, every WebSocket handshake, and same-origin POSTs), or Sec-Fetch-Site naming another site.
 * Server-side clients send neither (Node's fetch sends `sec-fetch-mode: cors` and no Sec-Fetch-Site or
 * Origin; curl, Go, Python, gRPC nothing of the kind). The outbound ports send what they receive with the
 * workload's identity: a page on any site must not use them (cross-site requests, DNS rebinding).
 */
function browserRequest(facts: OutboundFacts): string | null {
  if (facts.origin !== undefined)
    return "a request from a browser page (Origin header) is refused: the sidecar's outbound ports serve the app, with the workload's identity";
  const site = facts.fetchSite;
  if (site !== undefined && site !== "same-origin" && site !== "none")
    return `a request from a browser page (Sec-Fetch-Site: ${site.length > 32 ? `${site.slice(0, 32)}…` : site}) is refused: the sidecar's outbound ports serve the app, with the workload's identity`;
  return null;
}

export function decideOutbound(c: CompiledOutbound, facts: OutboundFacts): OutboundDecision {
  const target = facts.target;
  const browser = browserRequest(facts);
  if (browser !== null) return reject(403, "browser_request", browser);
  // An https:// absolute-form target would mean TLS from the app to this hop: the sidecar originates
  // mTLS itself, so the app speaks plain HTTP to it.
  if (HTTPS_TARGET.test(target))
    return reject(
      400,
      "unsupported_scheme",
      "the sidecar originates TLS itself: call http://<service>/… through it, not https:// (HTTPS to a destination outside the mesh goes through CONNECT: set HTTPS_PROXY)",
    );
  const t = canonicalizeTarget(target);
  if (!t.ok) return reject(400, "bad_request_target", t.detail, t.reason);
  const named = t.host ?? canonicalHost(facts.host);
  let svc: CompiledService | undefined;
  let host: string;
  if (facts.service !== null) {
    svc = c.byName.get(facts.service);
    if (svc === undefined)
      return reject(
        403,
        "destination_not_declared",
        `${facts.service} is not a declared call of this service`,
      );
    // A local port serves one service: a Host naming it, or the loopback the app dialled (any port). Any
    // other name is a request meant for another server — a page whose DNS name was rebound to 127.0.0.1
    // names its own host — and is refused (421, RFC 9110 §15.5.20). No Host at all (HTTP/1.0) is no
    // browser's request.
    if (named !== null && c.byHost.get(named) === svc) host = named;
    else if (named === null ? facts.host === undefined : isLoopbackName(named)) host = svc.service;
    else if (named === null) return reject(400, "bad_host", "malformed Host header");
    else
      return reject(
        421,
        "misdirected_request",
        `the local port of ${svc.service} answers Host names of the loopback (127.0.0.1, localhost, [::1]) and of ${svc.service} only, not ${named}`,
      );
  } else {
    if (named === null) return reject(400, "bad_host", "missing or malformed Host header (which service?)");
    svc = c.byHost.get(named);
    if (svc === undefined) {
      const authority = ABSOLUTE_AUTHORITY.exec(target)?.[1] ?? facts.host ?? "";
      // Externals name an IPv6 address without brackets; the Host-header rules keep them.
      const bare = named.charCodeAt(0) === 91 /* [ */ ? named.slice(1, -1) : named;
      const e = c.externals.match(bare, authorityPort(authority));
      if (e !== undefined) {
        const destination = isPatternHost(e.host) ? bare : e.host;
        return {
          kind: "external",
          external: e.name,
          path: t.path,
          query: t.query,
          upstreamTarget: t.query ? `${t.path}?${t.query}` : t.path,
          destination,
          host: externalHostHeader(destination, e),
          timeoutMs: e.timeoutMs,
        };
      }
    }
    if (svc === undefined)
      return reject(
        403,
        "destination_not_declared",
        `${named} is not a service this one declares in calls (undeclared destinations are refused)`,
      );
    host = named;
  }
  const upstreamTarget = t.query ? `${t.path}?${t.query}` : t.path;
  const policies = svc.policies;
  for (let i = 0; i < policies.length; i++) {
    const p = policies[i]!;
    if (p.methods !== null && !p.methods.has(facts.method)) continue;
    if (!matchPath(p.pattern, t.path)) continue;
    return {
      kind: "route",
      service: svc.service,
      cluster: svc.cluster,
      path: t.path,
      query: t.query,
      upstreamTarget,
      host,
      route: p.name,
      timeoutMs: p.timeoutMs,
      retry: p.retry,
    };
  }
  return {
    kind: "route",
    service: svc.service,
    cluster: svc.cluster,
    path: t.path,
    query: t.query,
    upstreamTarget,
    host,
    route: null,
    timeoutMs: svc.timeoutMs,
    retry: svc.retry,
  };
}
