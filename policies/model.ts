/**
 * MeshModel: indexes over one translated spec that several guardrails, the reachability relation and the
 * graph need — routes by name with their spec paths, what each gateway route sends to which service, the
 * retry/timeout plans of every caller → callee hop, the declared call graph. Built once per spec; the
 * expensive parts (the compiled gateway) only when asked for.
 */
import type { GatewayRouteSpec, MeshSpec } from "../components/spec/schema.ts";
import type { InfraIR, RuntimeConfigs } from "../components/translate/ir.ts";
import { routeExternals, splitTarget, toExternal } from "../components/translate/translate.ts";
import type {
  GatewayRoute,
  HttpMethod,
  RetryPlan,
  SidecarRuntimeConfig,
} from "../runtime/contract/schema.ts";
import { upstreamMethods } from "../runtime/cache/policy.ts";
import { IDEMPOTENT_METHODS } from "../runtime/contract/schema.ts";
import { compileGateway, type CompiledGateway } from "../runtime/decide/decide.ts";
import { admission, type Admission, type RequestSet } from "./patterns.ts";

export const GATEWAY = "gateway";
export const INTERNET = "internet";

/** One place a gateway route sends requests: a backend, a mirror, or an aggregate part. */
export interface RouteTarget {
  /** The service (or, with `external`, the external destination) the target names. */
  service: string;
  /** An external destination (`to: { external }`): reached by the gateway itself, no sidecar admits it. */
  external: boolean;
  kind: "backend" | "mirror" | "part";
  /** The part's name for aggregate parts. */
  part: string | null;
  /** The methods the upstream sees (empty = every method). */
  methods: HttpMethod[];
  /** The upstream path pattern (the rewrite, the part's path, or the route's own pattern). */
  path: string;
  /** The longest one attempt may take (the per-try timeout when the route retries, else its timeout). */
  attemptMs: number;
  /** Spec path of this target in the route (`gateway.routes[2].split[1].service`). */
  source: string;
}

/**
 * One retry/timeout plan a caller applies to a callee: the callee's default, or one of its per-route
 * policies (`services.<callee>.routes`), as the caller's sidecar RuntimeConfig carries them.
 */
export interface HopPlan {
  /** "default", or the name of the callee's route policy. */
  label: string;
  /** The callee-side spec path that sets this plan (`services.payments.routes[0]`, `services.payments`). */
  source: string;
  /** The route policy's match, null for the default. */
  match: { path: string; methods: HttpMethod[] } | null;
  timeoutMs: number;
  retry: RetryPlan;
}

export class MeshModel {
  readonly spec: MeshSpec;
  readonly infra: InfraIR;
  readonly runtime: RuntimeConfigs;
  readonly serviceNames: readonly string[];
  /** The destinations outside the mesh (spec `external`), sorted. */
  readonly externalNames: readonly string[];
  readonly routes: readonly GatewayRoute[];
  private readonly routeIndex = new Map<string, number>();
  private readonly sidecars = new Map<string, SidecarRuntimeConfig>();
  private readonly identities = new Map<string, string>();
  private readonly callerMap = new Map<string, string[]>();
  private readonly calleeMap = new Map<string, string[]>();
  private readonly externalCallMap = new Map<string, string[]>();
  private compiled: CompiledGateway | null | undefined;
  private targetCache = new Map<string, RouteTarget[]>();

  constructor(spec: MeshSpec, infra: InfraIR, runtime: RuntimeConfigs) {
    this.spec = spec;
    this.infra = infra;
    this.runtime = runtime;
    this.serviceNames = Object.keys(spec.services).sort();
    this.externalNames = Object.keys(spec.external).sort();
    this.routes = runtime.gateway?.routes ?? [];
    spec.gateway?.routes.forEach((r, i) => this.routeIndex.set(r.name, i));
    for (const s of runtime.sidecars) this.sidecars.set(s.name, s);
    for (const id of infra.identities) this.identities.set(id.spiffeId, id.name);
    for (const name of this.serviceNames) this.callerMap.set(name, []);
    // `calls` names services and external destinations (never the same name: the spec checks); the
    // call graph is over services, external destinations are its leaves (externalCalls).
    for (const name of this.serviceNames) {
      const calls = spec.services[name]!.calls;
      const callees = calls.filter((c) => Object.hasOwn(spec.services, c));
      this.calleeMap.set(name, callees);
      const externals = calls.filter((c) => Object.hasOwn(spec.external, c));
      this.externalCallMap.set(name, externals);
      for (const callee of callees) this.callerMap.get(callee)!.push(name);
    }
    // The gateway's routes to external destinations are its declared calls to them.
    this.externalCallMap.set(
      GATEWAY,
      [...new Set((spec.gateway?.routes ?? []).flatMap(routeExternals))].sort(),
    );
  }

  /** The spec's route of a name. */
  specRoute(name: string): GatewayRouteSpec | undefined {
    const i = this.routeIndex.get(name);
    return i === undefined ? undefined : this.spec.gateway?.routes[i];
  }

  /** `gateway.routes[i]` of a route name (the spec's order, not the RuntimeConfig's sorted order). */
  routePath(name: string): string {
    const i = this.routeIndex.get(name);
    return i === undefined ? "gateway.routes" : `gateway.routes[${i}]`;
  }

  /** `gateway.routes[i].<field>` when the spec sets the field, else the route's path (it inherits). */
  routeField(name: string, field: string): string {
    const i = this.routeIndex.get(name);
    if (i === undefined) return "gateway.routes";
    const r = this.spec.gateway!.routes[i]! as Record<string, unknown>;
    return r[field] !== undefined ? `gateway.routes[${i}].${field}` : `gateway.routes[${i}]`;
  }

  /** `services.<name>.<field>` when the spec sets it, else `services.<name>`. */
  serviceField(name: string, field: string): string {
    const s = this.spec.services[name] as Record<string, unknown> | undefined;
    return s && s[field] !== undefined ? `services.${name}.${field}` : `services.${name}`;
  }

  sidecar(name: string): SidecarRuntimeConfig | undefined {
    return this.sidecars.get(name);
  }

  /** The workload name of a SPIFFE ID of this mesh. */
  identityName(spiffeId: string): string | undefined {
    return this.identities.get(spiffeId);
  }

  spiffeId(workload: string): string {
    return `spiffe://${this.infra.trustDomain}/ns/${this.infra.namespace}/sa/${workload}`;
  }

  /** The services `name` declares it calls (not its external destinations: externalCalls). */
  callees(name: string): readonly string[] {
    return this.calleeMap.get(name) ?? [];
  }

  /** The external destinations `name` declares it calls (whether or not their allow rules admit it). */
  externalCalls(name: string): readonly string[] {
    return this.externalCallMap.get(name) ?? [];
  }

  /** Is `name` an external destination of this spec (not a service)? */
  isExternal(name: string): boolean {
    return Object.hasOwn(this.spec.external, name);
  }

  /** The services that declare a call to `name`. */
  callers(name: string): readonly string[] {
    return this.callerMap.get(name) ?? [];
  }

  /** The compiled gateway that decide() runs (compiled on first use), or null without a gateway. */
  gateway(): CompiledGateway | null {
    if (this.compiled === undefined)
      this.compiled = this.runtime.gateway ? compileGateway(this.runtime.gateway) : null;
    return this.compiled;
  }

  /** Where a gateway route sends requests, and with which per-attempt time. */
  targets(route: GatewayRoute): RouteTarget[] {
    let t = this.targetCache.get(route.name);
    if (t === undefined) {
      t = computeTargets(this, route);
      this.targetCache.set(route.name, t);
    }
    return t;
  }

  private outboundCache = new Map<
    string,
    Map<string, SidecarRuntimeConfig["outbound"]["services"][number]>
  >();
  private outbound(caller: string) {
    let m = this.outboundCache.get(caller);
    if (!m) {
      m = new Map((this.sidecars.get(caller)?.outbound.services ?? []).map((s) => [s.service, s]));
      this.outboundCache.set(caller, m);
    }
    return m;
  }

  private admissionCache = new Map<string, Admission>();
  /**
   * Whether `callee`'s allow rules admit a request set from `caller` (cached: many routes send the same
   * methods and path to a service).
   */
  admits(callee: string, caller: string, set: RequestSet): Admission {
    const key = `${callee}\u0000${caller}\u0000${set.methods.join(",")}\u0000${set.path}`;
    let a = this.admissionCache.get(key);
    if (a === undefined) {
      a = admission(this.sidecars.get(callee)?.inbound.authz.rules ?? [], this.spiffeId(caller), set);
      this.admissionCache.set(key, a);
    }
    return a;
  }

  /** The plans `caller`'s sidecar applies to calls to `callee` (default first), or [] when it has none. */
  hopPlans(caller: string, callee: string): HopPlan[] {
    const out = this.outbound(caller).get(callee);
    if (!out) return [];
    const specRoutes = this.spec.services[callee]?.routes ?? [];
    return [
      {
        label: "default",
        source: `services.${callee}`,
        match: null,
        timeoutMs: out.timeoutMs,
        retry: out.retry,
      },
      ...out.routes.map((r) => {
        const i = specRoutes.findIndex((s) => s.name === r.name);
        return {
          label: r.name,
          source: i >= 0 ? `services.${callee}.routes[${i}]` : `services.${callee}.routes`,
          match: r.match,
          timeoutMs: r.timeoutMs,
          retry: r.retry,
        };
      }),
    ];
  }
}

/** Failures after which no byte of the request reached the upstream (runtime/upstream/resilience.ts). */
const NEVER_SENT: ReadonlySet<string> = new Set(["connect-failure", "refused-stream"]);

/**
 * How many attempts of one request may reach the upstream under a plan: 1 + attempts when the plan retries
 * failures after bytes were sent and the request may be idempotent (the proxies retry nothing else after
 * sending); 1 otherwise (retries of connect failures never reached the service). `methods` empty = any.
 */
export function reachingAttempts(retry: RetryPlan, methods: readonly HttpMethod[]): number {
  if (retry.attempts === 0) return 1;
  if (!retry.retryOn.some((o) => !NEVER_SENT.has(o))) return 1;
  if (methods.length > 0 && !methods.some((m) => IDEMPOTENT_METHODS.has(m))) return 1;
  return 1 + retry.attempts;
}

/** The longest one attempt may take under a plan and a total timeout (as runtime/upstream/forward.ts). */
export function attemptMs(timeoutMs: number, retry: RetryPlan): number {
  return retry.attempts > 0 && retry.perTryTimeoutMs > 0
    ? Math.min(retry.perTryTimeoutMs, timeoutMs)
    : timeoutMs;
}

/**
 * The longest a caller waits on one hop: every attempt at its per-try timeout plus the largest backoff
 * between them (full jitter: below min(max, base × 2^retry)), capped by the total timeout.
 */
export function hopWorstMs(timeoutMs: number, retry: RetryPlan): number {
  return Math.min(timeoutMs, planWorstMs(retry, timeoutMs));
}

/** per-try × attempts + backoff, uncapped (with no per-try timeout an attempt may take the whole timeout). */
export function planWorstMs(retry: RetryPlan, timeoutMs: number): number {
  if (retry.attempts === 0 || retry.perTryTimeoutMs === 0) return timeoutMs;
  let backoff = 0;
  for (let r = 0; r < retry.attempts; r++)
    backoff += Math.min(retry.backoff.maxMs, retry.backoff.baseMs * 2 ** r);
  return (retry.attempts + 1) * retry.perTryTimeoutMs + backoff;
}

function computeTargets(model: MeshModel, route: GatewayRoute): RouteTarget[] {
  const base = model.routePath(route.name);
  const specRoute = model.specRoute(route.name);
  const a = route.action;
  const perAttempt = attemptMs(route.timeoutMs, route.retry);
  if (a.kind === "forward") {
    const path = a.rewrite?.path ?? route.match.path;
    const methods = route.match.methods;
    // A caching route's HEAD misses go upstream as GETs (runtime/cache: upstreamMethods); the mirror gets
    // the client's method.
    const sent = route.cache === null ? methods : upstreamMethods(methods);
    const source = (service: string) => {
      if (specRoute?.split) {
        const j = specRoute.split.findIndex((s) => splitTarget(s) === service);
        if (j >= 0) return `${base}.split[${j}].${"service" in specRoute.split[j]! ? "service" : "external"}`;
      }
      return specRoute && toExternal(specRoute) !== undefined ? `${base}.to.external` : `${base}.to`;
    };
    const out: RouteTarget[] = a.backends.map((b) => ({
      service: b.cluster,
      external: model.isExternal(b.cluster),
      kind: "backend",
      part: null,
      methods: sent,
      path,
      attemptMs: perAttempt,
      source: source(b.cluster),
    }));
    if (a.mirror)
      out.push({
        service: a.mirror.cluster,
        external: false,
        kind: "mirror",
        part: null,
        methods,
        path,
        attemptMs: perAttempt,
        source: `${base}.mirror.service`,
      });
    return out;
  }
  if (a.kind === "aggregate") {
    return a.parts.map((p) => ({
      service: p.cluster,
      external: model.isExternal(p.cluster),
      kind: "part",
      part: p.name,
      methods: [p.method],
      path: p.path.split("?")[0]!,
      attemptMs: attemptMs(p.timeoutMs, route.retry),
      source: `${base}.aggregate.${p.name}`,
    }));
  }
  return [];
}
