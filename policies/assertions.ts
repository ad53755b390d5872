/**
 * Traffic decisions before deploy: what the deployed proxies will decide for one request, layer by layer,
 * with the very code they run (runtime/decide) on the RuntimeConfigs translate() gives them.
 *
 * A request comes from `internet` (optionally with a token's claims and scopes, an API-key consumer and a
 * client address) and enters at the gateway, or from a mesh workload (`from: orders`, or `from: gateway`)
 * and goes through the caller's sidecar to the callee's; or from a service to a destination outside the mesh
 * (`from: payments, to: card-processor`, an external destination of the spec), which the caller's sidecar
 * relays as a TCP tunnel (CONNECT host:port) when the service calls the destination and one of its allow
 * rules names the service. The layers, in the order the packets meet them:
 *
 *  - `edge` — the gateway's decide(): canonical request target, host, route (400/404/405 otherwise);
 *  - `authentication` — which of the caller's credentials the route accepts (401 when none);
 *  - `authorization` — the gateway's authorize(): client ranges, scopes, claims, consumers, groups (403);
 *  - `outbound` — a mesh caller's sidecar, decideOutbound(): only declared destinations (403); for an
 *    external destination, only one it calls and whose allow rules name it (403 egress_denied, the rule
 *    or the call that is missing named); the method and path travel inside the tunnel, unseen;
 *  - `mesh` — the callee's sidecar, decideInbound() with the caller's SPIFFE ID (the gateway's for
 *    internet requests): deny by default (403);
 *  - `network` — the open L4 edges (networkEdges(), egressEdges(): what the NetworkPolicies open; for an
 *    external DNS name that is every address on its port — only the sidecar checks the name).
 *
 * explainRequest() returns the decision with every step that produced it; the traffic assertions
 * (assertion-file.ts), `meshgate explain`, `meshgate replay` and the vitest matchers are built on it.
 *
 * A token is taken as valid (signature, issuer, audience and expiry verify): the assertion is about what
 * the token's claims and scopes grant. Client certificates and OIDC sessions are not modelled as caller
 * credentials: routes that accept only those answer 401 to the callers assertions can describe.
 */
import type { GatewayRuntimeConfig, SidecarRuntimeConfig } from "../runtime/contract/schema.ts";
import { API_KEY_PROVIDER, authorize, mechanismKey, type Principal } from "../runtime/decide/authorize.ts";
import {
  decide,
  methodProblem,
  type GatewayRequestFacts,
  type RouteDecision,
} from "../runtime/decide/decide.ts";
import { compileInbound, decideInbound, type CompiledInbound } from "../runtime/decide/inbound.ts";
import { compileOutbound, decideOutbound, type CompiledOutbound } from "../runtime/decide/outbound.ts";
import { compileTemplate } from "../runtime/decide/router.ts";
import { scopesOf } from "../runtime/auth/jwt.ts";
import { credentialHeaders, upstreamMethod } from "../runtime/cache/policy.ts";
import { canonicalHost as egressHost, compileExternals } from "../runtime/sidecar/egress.ts";
import { GATEWAY, INTERNET, type MeshModel } from "./model.ts";
import {
  egressEdges,
  networkEdge,
  networkEdges,
  type EgressNetworkEdge,
  type NetworkEdge,
} from "./network.ts";
import { destinationOf } from "./reachability.ts";
import { hostCovers, isCidrHost, isPatternHost, isWildcardHost } from "../runtime/decide/external.ts";
import type { PolicyInput } from "./run.ts";

/** The layers a request meets, in order. */
export const LAYERS = ["edge", "authentication", "authorization", "outbound", "mesh", "network"] as const;
export type Layer = (typeof LAYERS)[number];

/** One request, as an assertion, `meshgate explain` or a matcher describes it. */
export interface TrafficRequest {
  /** `internet`, a service of the mesh, or `gateway`. */
  from: string;
  /**
   * Mesh callers: the callee (required) — a service, or for a service an external destination. Internet
   * callers: optional, the service the route must send the request to (an expectation, checked against the
   * route's targets).
   */
  to?: string;
  /** Default GET. As sent: methods are case-sensitive (`get` is refused as the proxies refuse it). */
  method?: string;
  /** The request target as sent: path and optional query (`/api/orders/7?x=1`). */
  path: string;
  /**
   * Internet: the Host header (default: the gateway's first host; under a wildcard, a name it covers).
   * Mesh: default the callee's name; to an external destination: the host of the CONNECT (default the
   * destination's).
   */
  host?: string;
  /** To an external destination: the port of the CONNECT (default the destination's). */
  port?: number;
  /** Other request headers (route header conditions); lower-case names. Never credentials. */
  headers?: Record<string, string>;
  /** Internet: the claims of a (valid) token the caller presents. */
  claims?: Record<string, unknown>;
  /** Internet: scopes the token grants (added to the claims' `scope`/`scp`). Implies a token. */
  scopes?: string[];
  /** Internet: the JWT provider that issued the token (default: the gateway's only provider). */
  provider?: string;
  /** Internet: the API-key consumer whose key the caller presents. */
  consumer?: string;
  /** Internet: the client address as the gateway sees it (default 198.51.100.10, TEST-NET-2). */
  clientIp?: string;
  /**
   * Mesh (`from` a service, `to` a service): a pod of the caller that bypasses its sidecar — plain HTTP, no
   * client certificate, so no peer identity. A strict sidecar refuses the connection (its TLS handshake
   * fails); a permissive one authorizes it by its allow rules' methods and paths alone.
   */
  plaintext?: boolean;
}

/** One step of a decision: what one layer concluded, and the rule behind it. */
export interface DecisionStep {
  layer: Layer;
  outcome: "pass" | "deny";
  /** Who decided: `gateway`, `orders (sidecar)`, `network`. */
  at: string;
  /** The spec path of the rule that decided (`gateway.routes[5]`, `services.orders.allow[0]`), or "". */
  rule: string;
  detail: string;
}

/** The decision for one request. */
export interface TrafficDecision {
  verdict: "allow" | "deny";
  /** The layer that refused the request, or (allow) the last layer it passed. */
  layer: Layer;
  /** The status the caller receives when denied (or a redirect's status); null when an upstream answers. */
  status: number | null;
  /** The stable code of a denial (`no_route`, `unauthenticated`, `forbidden`, `peer_not_allowed`, …). */
  code: string | null;
  /** Internet: the gateway route; mesh: the caller's per-route policy of the callee (null: its defaults). */
  route: string | null;
  /**
   * Mesh: the callee's allow rule that admitted the request (to an external destination: its allow rule,
   * `external.card-processor.allow[0]`). Internet: null.
   */
  rule: string | null;
  /** The services the request reaches (backends, aggregate parts; not mirrors). */
  targets: string[];
  /** What the gateway does with an allowed internet request: forward, aggregate, redirect, static. */
  action: string | null;
  steps: DecisionStep[];
  /** The request as evaluated (defaults filled in). */
  request: ResolvedRequest;
}

/** A request with its defaults. */
export interface ResolvedRequest {
  from: string;
  to: string | null;
  method: string;
  path: string;
  host: string;
  headers: Record<string, string>;
  credentials: string;
  clientIp: string | null;
  /** To an external destination: the port the app asks its sidecar for. */
  port?: number;
}

/** The default client address of internet requests (TEST-NET-2, RFC 5737). */
export const DEFAULT_CLIENT_IP = "198.51.100.10";

/** A request that cannot be evaluated (unknown service, consumer or provider): names the field and the fix. */
export class TrafficRequestError extends Error {
  readonly field: string;
  constructor(field: string, message: string) {
    super(`${field}: ${message}`);
    this.name = "TrafficRequestError";
    this.field = field;
  }
}

/** What explainRequest() prepares once per mesh (compiled sidecars, open L4 edges). */
interface Prepared {
  inbound: Map<string, CompiledInbound>;
  outbound: Map<string, CompiledOutbound>;
  network: NetworkEdge[];
  egress: EgressNetworkEdge[];
}
const prepared = new WeakMap<MeshModel, Prepared>();

function prepare(model: MeshModel): Prepared {
  let p = prepared.get(model);
  if (!p) {
    p = {
      inbound: new Map(),
      outbound: new Map(),
      network: networkEdges(model.infra),
      egress: egressEdges(model.infra),
    };
    prepared.set(model, p);
  }
  return p;
}

function inboundOf(model: MeshModel, s: SidecarRuntimeConfig): CompiledInbound {
  const p = prepare(model);
  let c = p.inbound.get(s.name);
  if (!c)
    p.inbound.set(s.name, (c = compileInbound(s.inbound.authz, { permissive: s.mtls === "permissive" })));
  return c;
}

function outboundOf(model: MeshModel, s: SidecarRuntimeConfig): CompiledOutbound {
  const p = prepare(model);
  let c = p.outbound.get(s.name);
  if (!c) p.outbound.set(s.name, (c = compileOutbound(s.outbound, s.namespace)));
  return c;
}

const modelOf = (m: MeshModel | PolicyInput): MeshModel => ("model" in m ? m.model : m);

/** The problems that keep a request from being evaluated on this mesh ([] when it can be). */
export function requestProblems(mesh: MeshModel | PolicyInput, r: TrafficRequest): TrafficRequestError[] {
  const model = modelOf(mesh);
  const out: TrafficRequestError[] = [];
  const services = model.serviceNames;
  const known = (name: string) => services.includes(name);
  const gw = model.runtime.gateway;
  if (typeof r.path !== "string" || r.path === "")
    out.push(new TrafficRequestError("path", "give the request target (a path such as /api/orders/7)"));
  if (r.from === INTERNET) {
    if (!gw)
      out.push(new TrafficRequestError("from", "internet requests need a gateway; this mesh has none"));
    if (r.plaintext === true)
      out.push(
        new TrafficRequestError(
          "plaintext",
          "a plaintext caller is a pod of a service calling another service past its sidecar: from a service, to a service",
        ),
      );
    // `to` of an internet request: what the route reaches — a service, or an external destination a
    // gateway route forwards to (to: { external }).
    if (r.to !== undefined && model.isExternal(r.to)) {
      if (!model.externalCalls(GATEWAY).includes(r.to))
        out.push(
          new TrafficRequestError(
            "to",
            `${JSON.stringify(r.to)} is a destination outside the mesh that no gateway route forwards to: services reach it (from: <service>), the internet only through a route (to: { external })`,
          ),
        );
    } else if (r.to !== undefined && !known(r.to))
      out.push(
        new TrafficRequestError(
          "to",
          `unknown service ${JSON.stringify(r.to)} (services: ${services.join(", ")})`,
        ),
      );
    // The port a sidecar is asked to CONNECT to; an internet request reaches the gateway's listener, and a
    // route to an external destination uses the destination's declared port.
    if (r.port !== undefined)
      out.push(
        new TrafficRequestError(
          "port",
          "a port is given only for a service's request to a destination outside the mesh (from: <service>, to: <external>)",
        ),
      );
    const token = r.claims !== undefined || r.scopes !== undefined || r.provider !== undefined;
    if (token && gw) {
      const providers = gw.auth.jwt.map((p) => p.name);
      if (r.provider !== undefined && !providers.includes(r.provider))
        out.push(
          new TrafficRequestError(
            "provider",
            `unknown JWT provider ${JSON.stringify(r.provider)} (providers: ${providers.join(", ") || "none"})`,
          ),
        );
      else if (r.provider === undefined && providers.length !== 1)
        out.push(
          new TrafficRequestError(
            "provider",
            providers.length === 0
              ? "the request carries a token, but the gateway defines no JWT provider"
              : `the gateway has several JWT providers (${providers.join(", ")}): name the token's provider`,
          ),
        );
    }
    if (r.consumer !== undefined && gw) {
      const consumers = gw.auth.apiKeys?.consumers.map((c) => c.name) ?? [];
      if (!consumers.includes(r.consumer))
        out.push(
          new TrafficRequestError(
            "consumer",
            `unknown API-key consumer ${JSON.stringify(r.consumer)} (consumers: ${consumers.join(", ") || "none"})`,
          ),
        );
    }
  } else {
    if (r.from !== GATEWAY && !known(r.from))
      out.push(
        new TrafficRequestError(
          "from",
          `unknown caller ${JSON.stringify(r.from)}: write internet, gateway or a service (${services.join(", ")})`,
        ),
      );
    if (r.from === GATEWAY && !gw) out.push(new TrafficRequestError("from", "this mesh has no gateway"));
    if (r.to === undefined)
      out.push(new TrafficRequestError("to", "a mesh request needs the callee: to: <service>"));
    else if (model.isExternal(r.to)) {
      if (r.from === GATEWAY)
        out.push(
          new TrafficRequestError(
            "from",
            `the gateway reaches an external destination only through a route (to: { external }): ask from internet with the route's path, or from a service`,
          ),
        );
    } else if (!known(r.to))
      out.push(
        new TrafficRequestError(
          "to",
          `unknown service ${JSON.stringify(r.to)} (services: ${services.join(", ")})${
            model.externalNames.length > 0
              ? ` or external destination (${model.externalNames.join(", ")})`
              : ""
          }`,
        ),
      );
    if (r.port !== undefined && (r.to === undefined || !model.isExternal(r.to)))
      out.push(new TrafficRequestError("port", "a port is given only for a destination outside the mesh"));
    else if (r.port !== undefined && !(Number.isInteger(r.port) && r.port >= 1 && r.port <= 65535))
      out.push(new TrafficRequestError("port", "the port must be a number from 1 to 65535"));
    if (r.plaintext === true && (r.from === GATEWAY || (r.to !== undefined && model.isExternal(r.to))))
      out.push(
        new TrafficRequestError(
          "plaintext",
          "a plaintext caller is a pod of a service calling another service past its sidecar: from a service, to a service",
        ),
      );
    for (const f of ["claims", "scopes", "provider", "consumer", "clientIp"] as const)
      if (r[f] !== undefined)
        out.push(
          new TrafficRequestError(
            f,
            "credentials and client addresses apply to internet requests only (a mesh caller is its SPIFFE ID)",
          ),
        );
  }
  return out;
}

/**
 * The decision the deployed proxies make for one request, and each rule that produced it. Throws a
 * TrafficRequestError when the request names something the mesh does not have.
 */
export function explainRequest(mesh: MeshModel | PolicyInput, request: TrafficRequest): TrafficDecision {
  const model = modelOf(mesh);
  const problems = requestProblems(model, request);
  if (problems.length > 0) throw problems[0]!;
  if (request.from === INTERNET) return fromInternet(model, request);
  return model.isExternal(request.to!) ? toExternal(model, request) : fromMesh(model, request);
}

/** Request facts decide() reads, over a plain header record. */
class Facts implements GatewayRequestFacts {
  readonly method: string;
  readonly target: string;
  readonly host: string | undefined;
  private readonly headers: Record<string, string>;
  constructor(method: string, target: string, host: string, headers: Record<string, string>) {
    this.method = method;
    this.target = target;
    this.host = host;
    this.headers = headers;
  }
  header(name: string): string | undefined {
    return this.headers[name];
  }
}

const lower = (h: Record<string, string> | undefined): Record<string, string> =>
  Object.fromEntries(Object.entries(h ?? {}).map(([k, v]) => [k.toLowerCase(), String(v)]));

/** The principal the caller's credentials establish on a route, as the gateway's Authenticator would. */
function principalFor(
  gw: GatewayRuntimeConfig,
  accepts: ReadonlySet<string>,
  r: TrafficRequest,
): { principal: Principal | null; detail: string } {
  const tried: string[] = [];
  // The Authenticator tries the route's JWT providers first, then the API key (then certificates, OIDC).
  const token = r.claims !== undefined || r.scopes !== undefined || r.provider !== undefined;
  if (token) {
    const provider = r.provider ?? gw.auth.jwt[0]!.name;
    if (accepts.has(mechanismKey("jwt", provider))) {
      // The gateway refuses a token whose `sub` is not a string (runtime/auth/jwt.ts, RFC 7519 §4.1.2)
      // whatever else it grants: such claims authenticate nobody.
      if (r.claims?.sub !== undefined && typeof r.claims.sub !== "string")
        return {
          principal: null,
          detail: `the token (jwt ${provider}) is invalid: its sub claim is not a string`,
        };
      const claims: Record<string, unknown> = { ...(r.claims ?? {}) };
      const scopes = [...new Set([...scopesOf(claims), ...(r.scopes ?? [])])];
      if (r.scopes !== undefined) claims.scope = scopes.join(" ");
      const subject = typeof claims.sub === "string" ? claims.sub : "";
      const principal: Principal = {
        mechanism: "jwt",
        provider,
        subject,
        consumer: null,
        groups: [],
        scopes,
        claims,
        expiresAt: null,
      };
      return {
        principal,
        detail: `token of jwt ${provider} accepted: subject ${subject || "(none)"}, scopes ${scopes.join(" ") || "(none)"}`,
      };
    }
    tried.push(`the token (jwt ${provider}) is not accepted here`);
  }
  if (r.consumer !== undefined) {
    if (accepts.has("apiKey")) {
      const c = gw.auth.apiKeys!.consumers.find((x) => x.name === r.consumer)!;
      const principal: Principal = {
        mechanism: "apiKey",
        provider: API_KEY_PROVIDER,
        subject: c.name,
        consumer: c.name,
        groups: c.groups,
        scopes: [],
        claims: {},
        expiresAt: null,
      };
      return {
        principal,
        detail: `API key of consumer ${c.name} accepted (groups ${c.groups.join(", ") || "none"})`,
      };
    }
    tried.push(`API keys are not accepted here`);
  }
  return { principal: null, detail: tried.length ? tried.join("; ") : "no credentials presented" };
}

/** What stands for a credential's value in the headers of a modelled request (never a real token or key). */
const TOKEN_PLACEHOLDER = "header.payload.signature";
const API_KEY_PLACEHOLDER = "api-key";

/**
 * The headers the gateway receives from an internet caller: the request's own, plus the credentials it
 * presents where the gateway reads them — the token in its provider's header after the scheme prefix
 * (`authorization: Bearer …`), the API key in the key header. Route conditions may name those headers (a
 * route for the callers that send an API key, `x-api-key: { present: true }`), and the router sees them
 * before any authentication: without them the engine chose another route than the gateway does. The
 * values are placeholders (a condition on a credential's value is not decided before deploy); a header
 * the request itself names is kept as given.
 */
function wireHeaders(
  gw: GatewayRuntimeConfig,
  r: TrafficRequest,
  headers: Record<string, string>,
): Record<string, string> {
  const token = r.claims !== undefined || r.scopes !== undefined || r.provider !== undefined;
  const provider = token
    ? gw.auth.jwt.find((p) => p.name === (r.provider ?? gw.auth.jwt[0]?.name))
    : undefined;
  const keyHeader = r.consumer !== undefined ? gw.auth.apiKeys?.header.toLowerCase() : undefined;
  if (provider === undefined && keyHeader === undefined) return headers;
  const out = { ...headers };
  if (provider !== undefined) {
    const name = provider.tokenFrom.header.toLowerCase();
    const prefix = provider.tokenFrom.prefix;
    out[name] ??= `${prefix}${prefix === "" || prefix.endsWith(" ") ? "" : " "}${TOKEN_PLACEHOLDER}`;
  }
  if (keyHeader !== undefined) out[keyHeader] ??= API_KEY_PLACEHOLDER;
  return out;
}

function credentialsText(r: TrafficRequest): string {
  const parts: string[] = [];
  if (r.claims !== undefined || r.scopes !== undefined || r.provider !== undefined) {
    const sub = typeof r.claims?.sub === "string" ? ` sub ${r.claims.sub}` : "";
    const scopes = [...new Set([...scopesOf(r.claims ?? {}), ...(r.scopes ?? [])])];
    parts.push(
      `token${r.provider ? ` (${r.provider})` : ""}${sub}${scopes.length ? ` scopes ${scopes.join(" ")}` : ""}`,
    );
  }
  if (r.consumer !== undefined) parts.push(`API key of ${r.consumer}`);
  return parts.length ? parts.join(" + ") : "anonymous";
}

/**
 * The host a request to `to` names when the assertion gives none: a service's name, an external's host —
 * for a wildcard external one name it covers (`*.s3.amazonaws.com` → `example.s3.amazonaws.com`), for a
 * range its first address.
 */
function externalHostOf(model: MeshModel, to: string): string {
  const host = model.infra.externals.find((x) => x.name === to)?.host;
  if (host === undefined) return to;
  if (isCidrHost(host)) return host.slice(0, host.indexOf("/"));
  return isWildcardHost(host) ? `example${host.slice(1)}` : host;
}

/**
 * The Host of an internet request that names none: the gateway's first exact host, else a name its first
 * wildcard covers (`*.shop.example` → `example.shop.example`: the gateway serves no `localhost` then, and a
 * request to an unserved host would make every `expect: deny` hold), else `localhost` (every host served).
 */
function defaultGatewayHost(hosts: readonly string[]): string {
  const exact = hosts.find((h) => !h.startsWith("*."));
  if (exact !== undefined) return exact;
  return hosts.length > 0 ? `example${hosts[0]!.slice(1)}` : "localhost";
}

function resolve(model: MeshModel, r: TrafficRequest): ResolvedRequest {
  const internet = r.from === INTERNET;
  return {
    from: r.from,
    to: r.to ?? null,
    method: r.method ?? "GET",
    path: r.path,
    host:
      r.host ??
      (internet ? defaultGatewayHost(model.runtime.gateway?.hosts ?? []) : externalHostOf(model, r.to!)),
    headers: lower(r.headers),
    credentials: internet
      ? credentialsText(r)
      : r.plaintext === true
        ? "plaintext: no client certificate"
        : (model.sidecar(r.from)?.identity ?? model.runtime.gateway?.identity ?? r.from),
    clientIp: internet ? (r.clientIp ?? DEFAULT_CLIENT_IP) : null,
  };
}

function fromInternet(model: MeshModel, r: TrafficRequest): TrafficDecision {
  const gw = model.runtime.gateway!;
  const compiled = model.gateway()!;
  const req = resolve(model, r);
  const steps: DecisionStep[] = [];
  const out = (
    verdict: "allow" | "deny",
    layer: Layer,
    status: number | null,
    code: string | null,
    route: string | null,
    targets: string[] = [],
    action: string | null = null,
  ): TrafficDecision => ({
    verdict,
    layer,
    status,
    code,
    route,
    rule: null,
    targets,
    action,
    steps,
    request: req,
  });

  const wire = wireHeaders(gw, r, req.headers);
  const d = decide(compiled, new Facts(req.method, req.path, req.host, wire));
  if (d.kind === "reject") {
    steps.push({
      layer: "edge",
      outcome: "deny",
      at: GATEWAY,
      rule: "",
      detail: `${d.status} ${d.code}: ${d.detail}`,
    });
    return out("deny", "edge", d.status, d.code, null);
  }
  const routeName = d.route.name;
  const routeRule = model.routePath(routeName);
  const upstream = d.action.kind === "forward" ? ` → upstream ${d.upstreamPath}` : "";
  steps.push({
    layer: "edge",
    outcome: "pass",
    at: GATEWAY,
    rule: routeRule,
    detail: `route ${routeName} matches ${req.method} ${d.host} ${d.path}${upstream}`,
  });
  if (d.preflight) {
    steps.push({
      layer: "edge",
      outcome: "pass",
      at: GATEWAY,
      rule: `${routeRule}.cors`,
      detail: "a CORS preflight: the gateway answers it before authentication",
    });
    return out("allow", "edge", 204, null, routeName, [], "preflight");
  }
  const authRule = model.routeField(routeName, "auth") === routeRule ? routeRule : `${routeRule}.auth`;
  const authPath = d.auth.public ? `${routeRule}.public` : authRule;
  let principal: Principal | null = null;
  if (d.auth.public) {
    steps.push({
      layer: "authentication",
      outcome: "pass",
      at: GATEWAY,
      rule: authPath,
      detail: "public route: no credentials required",
    });
  } else {
    const accepts = new Set(d.auth.anyOf.map((m) => mechanismKey(m.kind, "provider" in m ? m.provider : "")));
    const p = principalFor(gw, accepts, r);
    principal = p.principal;
    if (principal === null) {
      const z = authorize(d.auth, null, req.clientIp!);
      if (z.kind === "deny" && z.status === 403) {
        // The client ranges are checked before any credential: the same 403 with a credential or none.
        steps.push({
          layer: "authorization",
          outcome: "deny",
          at: GATEWAY,
          rule: authPath,
          detail: `${z.status} ${z.code} (${z.requirement}): ${z.reason}, before any credential is looked at`,
        });
        return out("deny", "authorization", z.status, z.code, routeName);
      }
      const detail = z.kind === "deny" ? `${z.reason} — ${p.detail}` : p.detail;
      steps.push({
        layer: "authentication",
        outcome: "deny",
        at: GATEWAY,
        rule: authPath,
        detail: `401 unauthenticated: ${detail}`,
      });
      return out("deny", "authentication", 401, "unauthenticated", routeName);
    }
    steps.push({ layer: "authentication", outcome: "pass", at: GATEWAY, rule: authPath, detail: p.detail });
  }
  const z = authorize(d.auth, principal, req.clientIp!);
  if (z.kind === "deny") {
    const layer: Layer = z.status === 401 ? "authentication" : "authorization";
    steps.push({
      layer,
      outcome: "deny",
      at: GATEWAY,
      rule: authPath,
      detail: `${z.status} ${z.code} (${z.requirement}): ${z.reason}`,
    });
    return out("deny", layer, z.status, z.code, routeName);
  }
  steps.push({
    layer: "authorization",
    outcome: "pass",
    at: GATEWAY,
    rule: authPath,
    detail: grantsText(d, principal, req.clientIp!),
  });

  const action = d.action;
  if (action.kind === "redirect" || action.kind === "static") {
    const what =
      action.kind === "redirect"
        ? `the gateway answers ${action.status} (redirect${action.path ? ` to ${action.path}` : ""})`
        : `the gateway serves files from ${action.root}`;
    steps.push({ layer: "edge", outcome: "pass", at: GATEWAY, rule: routeRule, detail: what });
    return out(
      "allow",
      "authorization",
      action.kind === "redirect" ? action.status : null,
      null,
      routeName,
      [],
      action.kind,
    );
  }
  // What the gateway sends upstream: the backends (weight > 0) and the mirror, or every aggregate part.
  const hops: {
    service: string;
    method: string;
    target: string;
    kind: "backend" | "mirror" | "part";
    decisive: boolean;
    what: string;
  }[] = [];
  if (action.kind === "forward") {
    // A HEAD the route's cache fills is sent as a GET (the gateway's cache: upstreamMethod).
    const cached = d.route.config.cache;
    const sent =
      cached === null
        ? req.method
        : upstreamMethod(
            req.method,
            wire,
            principal === null ? null : principal.subject,
            cached.perPrincipal,
            credentialHeaders(gw.auth.apiKeys?.header),
          );
    for (const b of action.backends)
      if (b.weight > 0)
        hops.push({
          service: b.cluster,
          method: sent,
          target: d.upstreamPath,
          kind: "backend",
          decisive: true,
          what: action.backends.length > 1 ? `backend ${b.cluster} (weight ${b.weight})` : b.cluster,
        });
    if (action.mirror)
      hops.push({
        service: action.mirror.cluster,
        method: req.method,
        target: d.upstreamPath,
        kind: "mirror",
        decisive: false,
        what: `mirror ${action.mirror.cluster}`,
      });
  } else {
    for (const p of action.parts) {
      let path = "";
      for (const part of compileTemplate(p.path))
        path +=
          typeof part === "string" ? part : Object.hasOwn(d.params, part.param) ? d.params[part.param] : "";
      hops.push({
        service: p.cluster,
        method: p.method,
        target: path,
        kind: "part",
        decisive: p.onError === "fail",
        what: `part ${p.name} (${p.cluster}, onError ${p.onError})`,
      });
    }
  }
  const gatewayId = gw.identity;
  const net = prepare(model).network;
  const targets: string[] = [];
  let denied: TrafficDecision | null = null;
  const meshSteps: DecisionStep[] = [];
  const netSteps: DecisionStep[] = [];
  const ingress = networkEdge(net, INTERNET, GATEWAY);
  netSteps.push(
    ingress
      ? {
          layer: "network",
          outcome: "pass",
          at: "network",
          rule: ingress.source,
          detail: `internet → gateway :${ingress.ports.join(",")} open`,
        }
      : {
          layer: "network",
          outcome: "deny",
          at: "network",
          rule: "",
          detail: "no ingress to the gateway is open",
        },
  );
  for (const h of hops) {
    if (h.kind !== "mirror") targets.push(h.service);
    if (model.isExternal(h.service)) {
      // A route to an external destination: the gateway itself opens the connection (no sidecar admits
      // it; the destination's allow rules name the gateway, which the spec checks), then the egress edge.
      const stepsOf = externalHop(model, h.service, h.what);
      meshSteps.push(stepsOf.mesh);
      netSteps.push(stepsOf.network);
      if (stepsOf.network.outcome === "deny" && h.decisive && denied === null)
        denied = out("deny", "network", 503, "network_denied", routeName, [], action.kind);
      continue;
    }
    const s = model.sidecar(h.service);
    const inbound = s
      ? decideInbound(inboundOf(model, s), {
          peer: gatewayId,
          method: h.method,
          target: h.target,
          host: h.service,
        })
      : null;
    const label = `${h.service} (sidecar)`;
    if (inbound === null || inbound.kind === "deny") {
      const detail =
        inbound === null
          ? `${h.service} has no sidecar`
          : `${inbound.status} ${inbound.code}: ${inbound.detail}`;
      meshSteps.push({
        layer: "mesh",
        outcome: "deny",
        at: label,
        rule: `services.${h.service}.allow`,
        detail: `${h.what}: ${detail}${h.decisive ? "" : h.kind === "mirror" ? " (the mirror's answer is discarded)" : " (the part is left out or defaulted)"}`,
      });
      if (h.decisive && denied === null) {
        // A denied backend answers the client 403; a denied aggregate part fails the whole answer (502).
        denied = out(
          "deny",
          "mesh",
          h.kind === "part" ? 502 : 403,
          inbound?.kind === "deny" ? inbound.code : "no_sidecar",
          routeName,
          [],
          action.kind,
        );
      }
    } else {
      meshSteps.push({
        layer: "mesh",
        outcome: "pass",
        at: label,
        rule: inbound.source,
        detail: `${h.what}: admits ${gatewayId} to ${h.method} ${inbound.path}`,
      });
    }
    const edge = networkEdge(net, GATEWAY, h.service);
    if (edge)
      netSteps.push({
        layer: "network",
        outcome: "pass",
        at: "network",
        rule: edge.source,
        detail: `gateway → ${h.service} :${edge.ports.join(",")} open`,
      });
    else {
      netSteps.push({
        layer: "network",
        outcome: "deny",
        at: "network",
        rule: "",
        detail: `gateway → ${h.service}: no open edge (default deny)`,
      });
      if (h.decisive && denied === null)
        denied = out(
          "deny",
          "network",
          h.kind === "part" ? 502 : 503,
          "network_denied",
          routeName,
          [],
          action.kind,
        );
    }
  }
  steps.push(...meshSteps, ...netSteps);
  if (!ingress) return out("deny", "network", null, "network_denied", routeName, [], action.kind);
  if (denied) return { ...denied, steps };
  return out("allow", "network", null, null, routeName, [...new Set(targets)], action.kind);
}

/** The steps of a gateway route's hop to an external destination: how the gateway reaches it, and its egress edge. */
function externalHop(
  model: MeshModel,
  name: string,
  what: string,
): { mesh: DecisionStep; network: DecisionStep } {
  const cluster = model.runtime.gateway?.clusters.find((c) => c.name === name);
  const where = cluster ? `${cluster.address}:${cluster.port}` : name;
  const tls = cluster?.tls;
  const how =
    tls?.mode === "tls"
      ? tls.clientCertificate
        ? `over mutual TLS verified for ${tls.serverName}, presenting the client certificate ${tls.clientCertificate.certFile}`
        : `over TLS verified for ${tls.serverName}`
      : "over plain HTTP";
  const ir = model.infra.egress.find((e) => e.from === GATEWAY && e.external === name);
  const rule = ir?.allowedBy.join(", ") ?? `external.${name}.allow`;
  const mesh: DecisionStep = {
    layer: "mesh",
    outcome: "pass",
    at: `${name} (external)`,
    rule,
    detail: `${what}: ${rule} admits the gateway; it forwards to ${where} ${how}, ${sharedText(cluster?.share)}`,
  };
  return { mesh, network: egressNetworkStep(model, GATEWAY, name, where) };
}

/** What the gateway sends a backend outside the mesh about the client (the cluster's `share`). */
function sharedText(share: { identity: boolean; clientAddress: boolean } | null | undefined): string {
  if (!share) return "with the client's identity and address";
  if (share.identity && share.clientAddress) return "with the client's identity and address (shared)";
  if (share.identity) return "with the client's identity (shared), not its address";
  if (share.clientAddress) return "with the client's address (shared), not its identity";
  return "without the client's identity or address";
}

/**
 * The network step of an egress edge from `from` (a service's sidecar, or the gateway) to an external
 * destination: the NetworkPolicy's peers and port, or a denial naming `target`.
 */
function egressNetworkStep(model: MeshModel, from: string, name: string, target: string): DecisionStep {
  const edge = prepare(model).egress.find((e) => e.from === from && e.to === name);
  if (!edge)
    return {
      layer: "network",
      outcome: "deny",
      at: "network",
      rule: "",
      detail: `${from} → ${target}: no open egress (default deny)`,
    };
  return {
    layer: "network",
    outcome: "pass",
    at: "network",
    rule: edge.source,
    detail: `${from} → ${edge.peers.join(", ")} :${edge.port} open${
      edge.peers.includes("0.0.0.0/0")
        ? ` (a NetworkPolicy cannot name ${edge.host}: every address on port ${edge.port} is open to the pods of ${from}; only ${from === GATEWAY ? "the gateway" : "its sidecar"} checks the name)`
        : ""
    }`,
  };
}

function grantsText(d: RouteDecision, p: Principal | null, clientIp: string): string {
  const a = d.auth;
  const parts: string[] = [];
  if (a.clientIps.length) parts.push(`client ${clientIp} in ${a.clientIps.join(", ")}`);
  if (p && (p.mechanism === "jwt" || p.mechanism === "oidc")) {
    if (a.scopes.length) parts.push(`scopes ${a.scopes.join(" ")} granted`);
    if (a.claims.length) parts.push(`claims ${a.claims.map((c) => c.name).join(", ")} hold`);
  }
  if (p?.mechanism === "apiKey" && (a.consumers.length || a.groups.length))
    parts.push(
      `consumer ${p.consumer} admitted (${[...a.consumers.map((c) => `consumer ${c}`), ...a.groups.map((g) => `group ${g}`)].join(", ")})`,
    );
  if (parts.length === 0)
    return a.public ? "public: everyone admitted" : "every authenticated caller admitted";
  return parts.join("; ");
}

function fromMesh(model: MeshModel, r: TrafficRequest): TrafficDecision {
  const req = resolve(model, r);
  const steps: DecisionStep[] = [];
  const net = prepare(model).network;
  const callee = r.to!;
  const out = (
    verdict: "allow" | "deny",
    layer: Layer,
    status: number | null,
    code: string | null,
    route: string | null,
    rule: string | null = null,
  ): TrafficDecision => ({
    verdict,
    layer,
    status,
    code,
    route,
    rule,
    targets: verdict === "allow" ? [callee] : [],
    action: null,
    steps,
    request: req,
  });

  let target = req.path;
  let host = req.host;
  let route: string | null = null;
  let peer: string | null;
  const s = model.sidecar(callee)!;
  // The first proxy the request meets refuses a method that is not an upper-case token: its HTTP/1.1
  // parser does (400, no response code of its own), as the gateway's does.
  const badMethod = methodProblem(req.method);
  if (badMethod !== null) {
    const first = r.plaintext === true || r.from === GATEWAY ? callee : r.from;
    const layer: Layer = r.plaintext === true || r.from === GATEWAY ? "mesh" : "outbound";
    steps.push({
      layer,
      outcome: "deny",
      at: `${first} (sidecar)`,
      rule: "",
      detail: `400 bad_method: ${badMethod}`,
    });
    return out("deny", layer, 400, "bad_method", null);
  }
  if (r.plaintext === true) {
    peer = null;
    if (s.mtls !== "permissive") {
      // A strict sidecar serves only mTLS: the plaintext request fails its TLS handshake (no HTTP answer).
      steps.push({
        layer: "mesh",
        outcome: "deny",
        at: `${callee} (sidecar)`,
        rule: "mesh.mtls",
        detail: "mTLS is strict: a plaintext connection fails the sidecar's TLS handshake (no peer identity)",
      });
      return out("deny", "mesh", null, "no_peer_identity", null);
    }
  } else if (r.from === GATEWAY) {
    peer = model.runtime.gateway!.identity;
  } else {
    const caller = model.sidecar(r.from)!;
    peer = caller.identity;
    const o = decideOutbound(outboundOf(model, caller), {
      method: req.method,
      target: req.path,
      host: req.host,
      service: null,
    });
    if (o.kind === "reject") {
      steps.push({
        layer: "outbound",
        outcome: "deny",
        at: `${r.from} (sidecar)`,
        rule: `services.${r.from}.calls`,
        detail: `${o.status} ${o.code}: ${o.detail}`,
      });
      return out("deny", "outbound", o.status, o.code, null);
    }
    if (o.kind === "external" || o.service !== callee) {
      steps.push({
        layer: "outbound",
        outcome: "deny",
        at: `${r.from} (sidecar)`,
        rule: `services.${r.from}.calls`,
        detail: `host ${req.host} ${o.kind === "external" ? `is the external destination ${o.external}` : `resolves to ${o.service}`}, not ${callee}`,
      });
      return out("deny", "outbound", 403, "destination_mismatch", null);
    }
    route = o.route;
    target = o.upstreamTarget;
    host = o.host;
    steps.push({
      layer: "outbound",
      outcome: "pass",
      at: `${r.from} (sidecar)`,
      rule: `services.${r.from}.calls`,
      detail: `${callee} is a declared call; ${o.route ? `route policy ${o.route}` : "the service's default policy"} (timeout ${o.timeoutMs}ms, ${o.retry.attempts} retries)`,
    });
  }
  const inbound = decideInbound(inboundOf(model, s), { peer, method: req.method, target, host });
  if (inbound.kind === "deny") {
    steps.push({
      layer: "mesh",
      outcome: "deny",
      at: `${callee} (sidecar)`,
      rule: `services.${callee}.allow`,
      detail: `${inbound.status} ${inbound.code}: ${inbound.detail}`,
    });
    return out("deny", "mesh", inbound.status, inbound.code, route);
  }
  steps.push({
    layer: "mesh",
    outcome: "pass",
    at: `${callee} (sidecar)`,
    rule: inbound.source,
    detail: `admits ${peer ?? "a plaintext caller (permissive mTLS: by the rules' methods and paths alone)"} to ${req.method} ${inbound.path}`,
  });
  const edge = networkEdge(net, r.from, callee);
  if (!edge) {
    steps.push({
      layer: "network",
      outcome: "deny",
      at: "network",
      rule: "",
      detail: `${r.from} → ${callee}: no open edge (default deny)`,
    });
    return out("deny", "network", null, "network_denied", route, inbound.source);
  }
  steps.push({
    layer: "network",
    outcome: "pass",
    at: "network",
    rule: edge.source,
    detail: `${r.from} → ${callee} :${edge.ports.join(",")} open`,
  });
  return out("allow", "network", null, null, route, inbound.source);
}

/** A CONNECT host as the sidecar compares it (its own canonicalHost), brackets of an IPv6 address removed. */
function connectHost(host: string): string {
  const h = host.startsWith("[") && host.endsWith("]") ? host.slice(1, -1) : host;
  return egressHost(h) ?? h.toLowerCase();
}

/**
 * A service's tunnel to a destination outside the mesh: its sidecar relays `CONNECT host:port` only to a
 * destination its config lists (`outbound.external`: declared in `calls` and named by an allow rule of the
 * destination), then the NetworkPolicy's egress to the destination's address and port. The request itself
 * (method, path, headers) travels inside the tunnel, where the sidecar does not look.
 */
function toExternal(model: MeshModel, r: TrafficRequest): TrafficDecision {
  const steps: DecisionStep[] = [];
  const name = r.to!;
  const ext = model.infra.externals.find((x) => x.name === name)!;
  const req: ResolvedRequest = { ...resolve(model, r), port: r.port ?? ext.port };
  const at = `${r.from} (sidecar)`;
  const out = (
    verdict: "allow" | "deny",
    layer: Layer,
    status: number | null,
    code: string | null,
    rule: string | null = null,
  ): TrafficDecision => ({
    verdict,
    layer,
    status,
    code,
    route: null,
    rule,
    targets: verdict === "allow" ? [name] : [],
    action: null,
    steps,
    request: req,
  });
  const deny = (rule: string, detail: string, code = "egress_denied") => {
    steps.push({ layer: "outbound", outcome: "deny", at, rule, detail: `403 ${code}: ${detail}` });
    return out("deny", "outbound", 403, code);
  };

  const host = connectHost(req.host);
  const port = req.port!;
  const target = destinationOf({ host, port });
  // The sidecar's own matching (exact hosts, then the most specific pattern).
  const relays = model.sidecar(r.from)!.outbound.external;
  const relayed = compileExternals(relays).byTarget.match(host, port);
  const allowedBy = model.spec.external[name]!.allow.flatMap((a, i) =>
    a.from.includes(r.from) ? [`external.${name}.allow[${i}]`] : [],
  );
  if (relayed === undefined) {
    if (
      port !== ext.port ||
      !(isPatternHost(ext.host) ? hostCovers(ext.host, host) : target === destinationOf(ext))
    )
      return deny(
        `services.${r.from}.calls`,
        `CONNECT ${target} names no destination ${r.from} may reach (${name} is ${destinationOf(ext)})`,
      );
    if (!model.externalCalls(r.from).includes(name))
      return deny(
        `services.${r.from}.calls`,
        `${name} (${destinationOf(ext)}) is not a declared call of ${r.from}: its sidecar relays nothing there`,
      );
    if (allowedBy.length === 0)
      return deny(
        `external.${name}.allow`,
        `no allow rule of external.${name} names ${r.from}: its sidecar refuses CONNECT ${target}`,
      );
    return deny(
      `services.${r.from}.calls`,
      `the sidecar config of ${r.from} does not list ${name} (deploy the configs translate() produces)`,
    );
  }
  if (relayed.name !== name)
    return deny(
      `services.${r.from}.calls`,
      `CONNECT ${target} is the destination ${relayed.name}, not ${name}`,
      "destination_mismatch",
    );
  const rule = allowedBy[0] ?? null;
  steps.push({
    layer: "outbound",
    outcome: "pass",
    at,
    rule: rule ?? `services.${r.from}.calls`,
    detail: `${name} is a declared call and ${rule ?? "an allow rule"} admits ${r.from}: CONNECT ${target} is relayed (connect timeout ${relayed.connectTimeoutMs}ms; ${req.method} ${req.path} travels inside the tunnel, unseen; plain HTTP to it is forwarded${
      relayed.tls !== "originate"
        ? ""
        : relayed.clientCertificate !== null
          ? ` over the mutual TLS the sidecar originates, presenting the client certificate ${relayed.clientCertificate.certFile}`
          : " over the TLS the sidecar originates"
    })`,
  });
  const network = egressNetworkStep(model, r.from, name, target);
  steps.push(network);
  return network.outcome === "deny"
    ? out("deny", "network", null, "network_denied", rule)
    : out("allow", "network", null, null, rule);
}

/** The text form of a decision: the request, one line per step, the verdict. */
export function formatDecision(d: TrafficDecision): string {
  const r = d.request;
  const who =
    r.from === INTERNET
      ? `internet (${r.credentials}, client ${r.clientIp})`
      : `${r.from} (${r.credentials})`;
  const lines = [`${r.method} ${r.host} ${r.path} from ${who}${r.to ? ` to ${r.to}` : ""}`];
  const width = Math.max(...LAYERS.map((l) => l.length));
  for (const s of d.steps)
    lines.push(
      `  ${s.outcome === "pass" ? "✓" : "✗"} ${s.layer.padEnd(width)}  ${s.at}${s.rule ? ` [${s.rule}]` : ""}: ${s.detail}`,
    );
  lines.push(verdictLine(d));
  return lines.join("\n");
}

/** "ALLOW via route get-order → orders" / "DENY at authorization: 403 forbidden (route get-order)". */
export function verdictLine(d: TrafficDecision): string {
  if (d.verdict === "allow") {
    const via = d.route ? ` via route ${d.route}` : "";
    const to = d.targets.length ? ` → ${d.targets.join(", ")}` : d.action ? ` (${d.action})` : "";
    const rule = d.rule ? ` (${d.rule})` : "";
    return `ALLOW${via}${to}${rule}`;
  }
  return `DENY at ${d.layer}: ${d.status ?? "no answer"} ${d.code ?? ""}${d.route ? ` (route ${d.route})` : ""}`.replace(
    /\s+\(/,
    " (",
  );
}
