/**
 * explainRequest(): the decision for one request and every rule that produced it, layer by layer, with
 * the code the proxies run (runtime/decide) on the translated config:
 *
 * - a caller from the **internet** goes through the gateway: `route` (decide(): canonical target, host,
 *   route), `authentication` and `authorization` (authorize() with the principal the caller presents:
 *   verified token claims, or an API-key consumer), the route's `ratelimit` (stated, not evaluated: it
 *   depends on traffic), then `inbound` at each service the route sends to (decideInbound() with the
 *   gateway's SPIFFE ID, on the path the gateway forwards);
 * - a **mesh** caller (a service, or `gateway`) goes through its own sidecar, `outbound` (decideOutbound():
 *   is the destination a declared call, which per-route policy applies), then `inbound` at the callee's
 *   sidecar (decideInbound() with the caller's SPIFFE ID).
 *
 * The outcome is `deny` as soon as one step that the response depends on denies: a mirror's answer is
 * discarded and an aggregate part with `onError: omit|default` is replaced, so their denials are shown
 * but do not decide. Token signatures, expiry and rate-limit state are not modelled: the claims given
 * are taken as those of a valid token.
 */
import type { GatewayRoute } from "../runtime/contract/schema.ts";
import {
  authorize,
  compileInbound,
  compileOutbound,
  decide,
  decideInbound,
  decideOutbound,
  type CompiledInbound,
  type CompiledOutbound,
  type Principal,
} from "../runtime/decide/index.ts";
import { GATEWAY, INTERNET, type MeshModel } from "./model.ts";

/** One request to explain. */
export interface ExplainRequest {
  /** `internet`, or the workload that calls: a service name or `gateway`. */
  readonly from: string;
  readonly method: string;
  /** The request target as sent (`/api/orders?x=1`); canonicalized as the proxies do. */
  readonly path: string;
  /** Internet: the Host header (default: the gateway's first host). Mesh: the destination service. */
  readonly host?: string;
  /** Mesh callers: the destination service when `host` does not name it. */
  readonly to?: string;
  /** Request headers (lower-case names) that route conditions may read. */
  readonly headers?: Readonly<Record<string, string>>;
  /** Internet: the claims of a verified token (`scope`/`scp` give the scopes). */
  readonly claims?: Readonly<Record<string, unknown>>;
  /** Internet: the JWT provider that verified the token (default: the first one the route accepts). */
  readonly provider?: string;
  /** Internet: an API-key consumer. */
  readonly consumer?: string;
  /** Internet: the client address (default 192.0.2.10). */
  readonly clientIp?: string;
}

export type ExplainLayer =
  "request" | "route" | "authentication" | "authorization" | "ratelimit" | "outbound" | "inbound";

export interface ExplainStep {
  readonly layer: ExplainLayer;
  /** The spec location of the rule that decided this step (`gateway.routes[4].auth`, `services.orders.allow[0]`). */
  readonly rule: string;
  /** allow / deny, or info for a step that states a fact without deciding. */
  readonly result: "allow" | "deny" | "info";
  readonly reason: string;
  /** Whether the outcome depends on this step (false for a mirror or a part whose errors are replaced). */
  readonly decisive: boolean;
}

export interface Explanation {
  readonly outcome: "allow" | "deny";
  /** The status a denial answers with (null when allowed). */
  readonly status: number | null;
  /** The gateway route, or the callee's per-route policy (`default` for its defaults); null if none. */
  readonly route: string | null;
  /** The layer of the first decisive denial (null when allowed). */
  readonly deniedBy: ExplainLayer | null;
  readonly steps: readonly ExplainStep[];
}

const DEFAULT_CLIENT_IP = "192.0.2.10";

const inboundCache = new WeakMap<MeshModel, Map<string, CompiledInbound>>();
const outboundCache = new WeakMap<MeshModel, Map<string, CompiledOutbound>>();

function inboundOf(model: MeshModel, service: string): CompiledInbound | null {
  let m = inboundCache.get(model);
  if (!m) inboundCache.set(model, (m = new Map()));
  let c = m.get(service);
  if (!c) {
    const sidecar = model.sidecar(service);
    if (!sidecar) return null;
    c = compileInbound(sidecar.inbound.authz, { permissive: sidecar.mtls === "permissive" });
    m.set(service, c);
  }
  return c;
}

function outboundOf(model: MeshModel, service: string): CompiledOutbound | null {
  let m = outboundCache.get(model);
  if (!m) outboundCache.set(model, (m = new Map()));
  let c = m.get(service);
  if (!c) {
    const sidecar = model.sidecar(service);
    if (!sidecar) return null;
    c = compileOutbound(sidecar.outbound, model.infra.namespace);
    m.set(service, c);
  }
  return c;
}

/** Explains one request against a translated spec. Pure; never throws for a request. */
export function explainRequest(model: MeshModel, request: ExplainRequest): Explanation {
  return request.from === INTERNET ? explainInternet(model, request) : explainMesh(model, request);
}

function finish(steps: ExplainStep[], route: string | null, status: number | null): Explanation {
  const denial = steps.find((s) => s.decisive && s.result === "deny");
  return {
    outcome: denial ? "deny" : "allow",
    status: denial ? status : null,
    route,
    deniedBy: denial?.layer ?? null,
    steps,
  };
}

const step = (
  layer: ExplainLayer,
  rule: string,
  result: ExplainStep["result"],
  reason: string,
  decisive = true,
): ExplainStep => ({ layer, rule, result, reason, decisive });

function explainInternet(model: MeshModel, r: ExplainRequest): Explanation {
  const gw = model.gateway();
  if (!gw) return finish([step("route", "gateway", "deny", "the spec has no gateway")], null, 404);
  const headers = lowerKeys(r.headers);
  const host = r.host ?? gw.config.hosts.find((h) => !h.startsWith("*.")) ?? "localhost";
  const d = decide(gw, {
    method: r.method,
    target: r.path,
    host,
    header: (name) => headers[name],
  });
  if (d.kind === "reject") {
    const rule = d.code === "host_not_served" ? "gateway.hosts" : "gateway.routes";
    const reason =
      d.code === "method_not_allowed" ? `${d.detail} (allowed: ${d.allow.join(", ")})` : d.detail;
    return finish([step("route", rule, "deny", `${d.code}: ${reason}`)], null, d.status);
  }
  const route = d.route.config;
  const routePath = model.routePath(route.name);
  const steps: ExplainStep[] = [
    step(
      "route",
      routePath,
      "allow",
      `${r.method} ${d.path} on ${d.host} matches route ${route.name} (${route.match.path})${
        d.upstreamPath !== (d.query ? `${d.path}?${d.query}` : d.path)
          ? `, forwarded as ${d.upstreamPath}`
          : ""
      }`,
    ),
  ];
  const authRule = model.routeField(route.name, route.auth.public ? "public" : "auth");
  const principal = principalFor(model, route, r);
  if (typeof principal === "string") {
    steps.push(step("authentication", authRule, "deny", principal));
    return finish(steps, route.name, 401);
  }
  const authz = authorize(route.auth, principal, r.clientIp ?? DEFAULT_CLIENT_IP);
  const who = principal ? describePrincipal(principal) : "no credentials";
  if (route.auth.public) {
    steps.push(step("authentication", authRule, "allow", "public route: no credentials required"));
  } else if (
    authz.kind === "deny" &&
    (authz.requirement === "authentication" || authz.requirement === "mechanism")
  ) {
    steps.push(step("authentication", authRule, "deny", `${who}: ${authz.reason}`));
    return finish(steps, route.name, authz.status);
  } else {
    steps.push(
      step("authentication", authRule, "allow", `${who} is accepted (${acceptedMechanisms(route)})`),
    );
  }
  if (authz.kind === "deny") {
    steps.push(step("authorization", authRule, "deny", authz.reason));
    return finish(steps, route.name, authz.status);
  }
  steps.push(step("authorization", authRule, "allow", requirementsText(route)));
  if (route.rateLimit)
    steps.push(
      step(
        "ratelimit",
        model.routeField(route.name, "rateLimit"),
        "info",
        `${route.rateLimit.requests} requests per ${route.rateLimit.periodMs / 1000} s by ${rateKey(route.rateLimit.key)}` +
          " (not evaluated: it depends on traffic; over it the gateway answers 429)",
        false,
      ),
    );

  const a = d.action;
  let status: number | null = null;
  const gatewayId = model.spiffeId(GATEWAY);
  const inboundStep = (service: string, method: string, target: string, label: string, decisive: boolean) => {
    const c = inboundOf(model, service);
    if (!c) {
      steps.push(
        step("inbound", `services.${service}`, "deny", `${service} has no sidecar config`, decisive),
      );
      return;
    }
    const res = decideInbound(c, { peer: gatewayId, method, target, host: service });
    if (res.kind === "allow")
      steps.push(
        step(
          "inbound",
          res.source,
          "allow",
          `${label}: ${service} admits the gateway to ${method} ${res.path}`,
          decisive,
        ),
      );
    else {
      steps.push(
        step(
          "inbound",
          `services.${service}.allow`,
          "deny",
          `${label}: ${service}'s sidecar answers ${res.status} ${res.code}: ${res.detail}`,
          decisive,
        ),
      );
      if (decisive && status === null) status = res.status;
    }
  };
  if (a.kind === "forward") {
    const method = d.preflight ? "OPTIONS" : r.method;
    for (const b of a.backends)
      inboundStep(
        b.cluster,
        method,
        d.upstreamPath,
        a.backends.length > 1 ? `backend ${b.cluster} (weight ${b.weight})` : `backend ${b.cluster}`,
        true,
      );
    if (a.mirror)
      inboundStep(
        a.mirror.cluster,
        method,
        d.upstreamPath,
        `mirror ${a.mirror.cluster} (${a.mirror.percent}%, answer discarded)`,
        false,
      );
  } else if (a.kind === "aggregate") {
    for (const p of a.parts)
      inboundStep(
        p.cluster,
        p.method,
        p.path,
        `part ${p.name} (onError: ${p.onError})`,
        p.onError === "fail",
      );
  } else {
    steps.push(
      step(
        "route",
        routePath,
        "info",
        a.kind === "redirect"
          ? `the gateway answers a ${a.status} redirect`
          : "the gateway serves static files",
        false,
      ),
    );
  }
  return finish(steps, route.name, status);
}

/** The principal the caller presents, null for none, or why it cannot be one of this spec. */
function principalFor(model: MeshModel, route: GatewayRoute, r: ExplainRequest): Principal | null | string {
  const gw = model.runtime.gateway!;
  if (r.consumer !== undefined) {
    const c = gw.auth.apiKeys?.consumers.find((x) => x.name === r.consumer);
    if (!c) return `API-key consumer ${r.consumer} is not in gateway.apiKeys.consumers`;
    return principal("apiKey", "apiKeys", c.name, c.name, c.groups, [], {});
  }
  if (r.claims !== undefined) {
    const accepted = route.auth.anyOf
      .filter((m) => m.kind === "jwt")
      .map((m) => ("provider" in m ? m.provider : ""));
    const provider = r.provider ?? accepted[0] ?? gw.auth.jwt[0]?.name;
    if (provider === undefined) return "the gateway has no JWT provider (gateway.jwt)";
    if (!gw.auth.jwt.some((p) => p.name === provider))
      return `JWT provider ${provider} is not in gateway.jwt`;
    const claims = r.claims;
    const sub = typeof claims.sub === "string" ? claims.sub : "";
    return principal("jwt", provider, sub, null, [], scopesOf(claims), claims);
  }
  return null;
}

function principal(
  mechanism: Principal["mechanism"],
  provider: string,
  subject: string,
  consumer: string | null,
  groups: readonly string[],
  scopes: readonly string[],
  claims: Readonly<Record<string, unknown>>,
): Principal {
  return { mechanism, provider, subject, consumer, groups, scopes, claims, expiresAt: null };
}

/** `scope` (space-separated) and `scp` (array or space-separated), as the gateway reads a token. */
function scopesOf(claims: Readonly<Record<string, unknown>>): string[] {
  const out: string[] = [];
  for (const v of [claims.scope, claims.scp]) {
    if (typeof v === "string") for (const s of v.split(" ")) if (s) out.push(s);
    if (Array.isArray(v)) for (const s of v) if (typeof s === "string" && s) out.push(s);
  }
  return out;
}

function describePrincipal(p: Principal): string {
  if (p.mechanism === "apiKey") return `API-key consumer ${p.consumer}`;
  const scopes = p.scopes.length ? ` with scopes ${p.scopes.join(" ")}` : " without scopes";
  return `${p.mechanism} ${p.provider} token${p.subject ? ` of ${p.subject}` : ""}${scopes}`;
}

const rateKey = (k: NonNullable<GatewayRoute["rateLimit"]>["key"]) =>
  k.kind === "header" ? `header ${k.header}` : k.kind;

function acceptedMechanisms(route: GatewayRoute): string {
  return route.auth.anyOf.map((m) => ("provider" in m ? `${m.kind} ${m.provider}` : m.kind)).join(", ");
}

function requirementsText(route: GatewayRoute): string {
  const a = route.auth;
  const parts: string[] = [];
  if (a.scopes.length) parts.push(`scopes ${a.scopes.join(", ")}`);
  if (a.claims.length) parts.push(`claims ${a.claims.map((c) => c.name).join(", ")}`);
  if (a.consumers.length || a.groups.length)
    parts.push(`consumers/groups ${[...a.consumers, ...a.groups].join(", ")}`);
  if (a.clientIps.length) parts.push(`client IPs ${a.clientIps.join(", ")}`);
  return parts.length ? `meets ${parts.join("; ")}` : "no further requirements";
}

function explainMesh(model: MeshModel, r: ExplainRequest): Explanation {
  const from = r.from;
  const steps: ExplainStep[] = [];
  const known = from === GATEWAY ? model.runtime.gateway !== null : model.sidecar(from) !== undefined;
  if (!known) {
    steps.push(
      step("request", "services", "deny", `${from} is neither internet, gateway nor a service of this spec`),
    );
    return finish(steps, null, 403);
  }
  let callee: string;
  let target = r.path;
  let route: string | null = null;
  if (from === GATEWAY) {
    const to = r.to ?? r.host;
    if (to === undefined || model.sidecar(to) === undefined) {
      steps.push(
        step(
          "request",
          "services",
          "deny",
          `name the destination service (to): ${to ?? "none given"} is not a service`,
        ),
      );
      return finish(steps, null, 403);
    }
    callee = to;
  } else {
    const out = outboundOf(model, from)!;
    const d = decideOutbound(out, { method: r.method, target: r.path, host: r.to ?? r.host, service: null });
    if (d.kind === "reject") {
      steps.push(
        step(
          "outbound",
          model.serviceField(from, "calls"),
          "deny",
          `${from}'s sidecar answers ${d.status} ${d.code}: ${d.detail}`,
        ),
      );
      return finish(steps, null, d.status);
    }
    callee = d.service;
    target = d.upstreamTarget;
    route = d.route ?? "default";
    const specRoutes = model.spec.services[callee]?.routes ?? [];
    const i = d.route === null ? -1 : specRoutes.findIndex((x) => x.name === d.route);
    const rule = i >= 0 ? `services.${callee}.routes[${i}]` : `services.${callee}`;
    steps.push(
      step(
        "outbound",
        rule,
        "allow",
        `${callee} is a declared call of ${from} (${model.serviceField(from, "calls")}); ` +
          `${d.route === null ? "the service's defaults" : `route policy ${d.route}`}: timeout ${d.timeoutMs} ms, ` +
          `${d.retry.attempts} retr${d.retry.attempts === 1 ? "y" : "ies"}`,
      ),
    );
  }
  const c = inboundOf(model, callee)!;
  const res = decideInbound(c, { peer: model.spiffeId(from), method: r.method, target, host: callee });
  if (res.kind === "allow") {
    steps.push(step("inbound", res.source, "allow", `${callee} admits ${from} to ${r.method} ${res.path}`));
    return finish(steps, route, null);
  }
  steps.push(
    step(
      "inbound",
      `services.${callee}.allow`,
      "deny",
      `${callee}'s sidecar answers ${res.status} ${res.code}: ${res.detail}`,
    ),
  );
  return finish(steps, route, res.status);
}

function lowerKeys(h: Readonly<Record<string, string>> | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(h ?? {})) out[k.toLowerCase()] = v;
  return out;
}
