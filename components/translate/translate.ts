/**
 * translate(spec) → { infra, runtime, diagnostics }.
 *
 * Pure and deterministic: no I/O, no clock, no randomness; every list canonically sorted. One translate
 * step per line in `translate()`, each reading the spec (and the context's precomputed policies) and
 * writing one part of the IR, so the order of the steps is the order of the output.
 */
import {
  sealRuntimeConfig,
  type Cluster,
  type GatewayRoute,
  type GatewayRuntimeConfig,
  type HttpMethod,
  type RetryPlan,
  type RouteAction,
  type RouteAuth,
  type SidecarRuntimeConfig,
  type Svid,
} from "../../runtime/contract/index.ts";
import { IDEMPOTENT_METHODS, PRINCIPAL_HEADERS } from "../../runtime/contract/schema.ts";
import { DEFAULTS, PROXY_PORTS } from "../spec/defaults.ts";
import type { Diagnostic } from "../spec/errors.ts";
import {
  HTTP_METHODS,
  type GatewayRouteSpec,
  type GatewaySpec,
  type MeshSpec,
  type RetriesOverrideSpec,
  type ServiceSpec,
} from "../spec/schema.ts";
import { formatDuration, parseDuration, parseSize } from "../spec/units.ts";
import { canonicalHost as egressHost } from "../../runtime/sidecar/egress.ts";
import { isPatternHost } from "../../runtime/decide/external.ts";
import { publicJwk } from "../../runtime/gateway/redact.ts";
import { segmentHash } from "../../runtime/decide/router.ts";

/** An external's host as the sidecar compares it (the spec checked it is one). */
const canonicalHost = (host: string): string => egressHost(host) ?? host;
import type {
  EdgeIR,
  EgressIR,
  ExternalIR,
  GatewayWorkloadIR,
  IdentityIR,
  InfraIR,
  ObservabilityIR,
  ServiceWorkloadIR,
  TargetsIR,
  TranslateResult,
  WorkloadIR,
} from "./ir.ts";
import { compareCodeUnits } from "../../runtime/contract/canonical.ts";

const DNS_TEMPLATE = "{service}.{namespace}.svc.cluster.local";

/**
 * Where a workload's identity files live, per target: the Kubernetes renderer mounts the workload's
 * identity Secret there, the local mode (`meshgate up`) writes them there. `{stateDir}` and `{workload}`
 * are filled by `identityDir`. The RuntimeConfigs translate() produces use the Kubernetes paths; the
 * local mode points its configs at its own.
 */
export const IDENTITY_DIRS = {
  kubernetes: "/etc/meshgate/identity",
  local: "{stateDir}/identities/{workload}",
} as const;

/** The files of an identity directory (the names `meshgate pki issue` writes, plus the known intermediates). */
export const IDENTITY_FILES = {
  cert: "svid.pem",
  key: "svid-key.pem",
  bundle: "bundle.pem",
  intermediates: "intermediates.pem",
} as const;

/** The identity directory of a workload for a target. */
export function identityDir(
  target: keyof typeof IDENTITY_DIRS,
  workload: string,
  stateDir = ".meshgate",
): string {
  return IDENTITY_DIRS[target]
    .replace("{stateDir}", stateDir.replace(/\/+$/, ""))
    .replace("{workload}", workload);
}

/** The `svid` file paths of a RuntimeConfig for an identity directory. */
export function svidFiles(
  dir: string,
): Pick<Svid, "certFile" | "keyFile" | "bundleFile" | "intermediatesFile"> {
  return {
    certFile: `${dir}/${IDENTITY_FILES.cert}`,
    keyFile: `${dir}/${IDENTITY_FILES.key}`,
    bundleFile: `${dir}/${IDENTITY_FILES.bundle}`,
    intermediatesFile: `${dir}/${IDENTITY_FILES.intermediates}`,
  };
}
const DNS_REFRESH_MS = 30_000;
const GATEWAY = "gateway";
/** Failures after which no byte of the request reached the upstream: always safe to retry. */
const NEVER_SENT: ReadonlySet<string> = new Set(["connect-failure", "refused-stream"]);

export function translate(spec: MeshSpec): TranslateResult {
  const ctx = new Context(spec);
  const identities = translateIdentities(ctx);
  const clusters = translateClusters(ctx);
  const sidecars = translateSidecars(ctx, clusters);
  const gateway = translateGateway(ctx, clusters);
  const workloads = translateWorkloads(ctx);
  const edges = translateEdges(ctx);
  const externals = translateExternals(ctx);
  const egress = translateEgress(ctx);
  const observability = translateObservability(ctx, workloads);
  const targets = translateTargets(ctx);
  const infra: InfraIR = {
    name: spec.name,
    namespace: ctx.namespace,
    trustDomain: spec.trustDomain,
    mtls: spec.mesh.mtls,
    ca: translateCa(ctx),
    workloads,
    identities,
    edges,
    externals,
    egress,
    observability,
    targets,
  };
  return { infra, runtime: { gateway, sidecars }, diagnostics: ctx.sortedDiagnostics() };
}

// ───────────── context: what several steps need, computed once ─────────────

interface EffectivePolicy {
  timeoutMs: number;
  connectTimeoutMs: number;
  retry: RetryPlan;
  circuitBreaker: Cluster["circuitBreaker"];
  outlierDetection: Cluster["outlierDetection"];
  loadBalancer: Cluster["loadBalancer"];
  retryBudget: Cluster["retryBudget"];
}

class Context {
  readonly spec: MeshSpec;
  readonly namespace: string;
  readonly serviceNames: string[];
  /** The external destinations' names, sorted. */
  readonly externalNames: string[];
  readonly policies = new Map<string, EffectivePolicy>();
  /** The mesh defaults with no service override: for routes that forward to no service. */
  readonly meshPolicy: EffectivePolicy;
  /** The local port of every service and every external destination with one host (localPorts()). */
  readonly localPorts: ReadonlyMap<string, number>;
  private readonly diagnostics: Diagnostic[] = [];

  constructor(spec: MeshSpec) {
    this.spec = spec;
    this.namespace = spec.namespace ?? spec.name;
    this.serviceNames = Object.keys(spec.services).sort();
    this.externalNames = Object.keys(spec.external).sort();
    this.meshPolicy = effectivePolicy(spec, undefined);
    const pinned = new Map<string, number>();
    for (const [name, x] of [...Object.entries(spec.services), ...Object.entries(spec.external)])
      if (x.localPort !== undefined) pinned.set(name, x.localPort);
    this.localPorts = localPorts(
      [...this.serviceNames, ...this.externalNames.filter((x) => !isPatternHost(spec.external[x]!.host))],
      pinned,
    );
    for (const name of this.serviceNames) this.policies.set(name, effectivePolicy(spec, this.service(name)));
  }

  service(name: string): ServiceSpec {
    return this.spec.services[name]!;
  }

  policy(name: string): EffectivePolicy {
    return this.policies.get(name)!;
  }

  spiffeId(workload: string): string {
    return `spiffe://${this.spec.trustDomain}/ns/${this.namespace}/sa/${workload}`;
  }

  /** The identity files of a workload's proxy (Kubernetes paths) and the CA timing. */
  svid(): Svid {
    const ca = this.spec.mesh.ca;
    return {
      ...svidFiles(identityDir("kubernetes", "")),
      renewBeforeMs: parseDuration(ca.renewBefore),
      clockSkewMs: parseDuration(ca.clockSkew),
      issuer: null,
    };
  }

  /** The per-service outbound port of a service: the same in every sidecar (null: none left). */
  localPort(service: string): number | null {
    return this.localPorts.get(service) ?? null;
  }

  /** The local TCP port of an external destination: the same in every sidecar (null: none left). */
  externalLocalPort(external: string): number | null {
    return this.localPorts.get(external) ?? null;
  }

  /** The mesh's services among a list of names (calls name services and external destinations). */
  servicesOf(names: readonly string[]): string[] {
    return names.filter((n) => this.spec.services[n] !== undefined);
  }

  /** The allow rules (spec locations) of an external destination that admit `caller`. */
  externalAllowedBy(external: string, caller: string): string[] {
    return this.spec.external[external]!.allow.flatMap((r, i) =>
      r.from.includes(caller) ? [`external.${external}.allow[${i}]`] : [],
    );
  }

  /** Does some allow rule of `callee` admit `caller`? */
  allows(callee: string, caller: string): boolean {
    return this.service(callee).allow.some((r) => r.from.includes(caller));
  }

  diagnose(d: Diagnostic): void {
    this.diagnostics.push(d);
  }

  sortedDiagnostics(): Diagnostic[] {
    return [...this.diagnostics].sort(
      (a, b) => compareCodeUnits(a.path, b.path) || compareCodeUnits(a.code, b.code),
    );
  }

  common() {
    return {
      version: 1 as const,
      mesh: this.spec.name,
      namespace: this.namespace,
      trustDomain: this.spec.trustDomain,
      mtls: this.spec.mesh.mtls,
      discovery: { kind: "dns" as const, template: DNS_TEMPLATE, refreshMs: DNS_REFRESH_MS },
    };
  }

  telemetry(serviceName: string) {
    const o = this.spec.observability;
    return {
      serviceName,
      metrics: { enabled: o.metrics.enabled, path: "/metrics" },
      tracing: {
        enabled: o.tracing.enabled,
        sampling: o.tracing.sampling,
        otlpEndpoint: o.tracing.otlpEndpoint ?? null,
      },
      accessLog: { enabled: o.logs.access },
    };
  }
}

function retryPlan(base: RetryPlan, override: RetriesOverrideSpec | undefined): RetryPlan {
  if (!override) return base;
  return {
    attempts: override.attempts ?? base.attempts,
    perTryTimeoutMs:
      override.perTryTimeout !== undefined ? parseDuration(override.perTryTimeout) : base.perTryTimeoutMs,
    retryOn: override.on ? sortedUnique(override.on) : base.retryOn,
    backoff: {
      baseMs:
        override.backoff?.base !== undefined ? parseDuration(override.backoff.base) : base.backoff.baseMs,
      maxMs: override.backoff?.max !== undefined ? parseDuration(override.backoff.max) : base.backoff.maxMs,
    },
  };
}

function effectivePolicy(spec: MeshSpec, svc: ServiceSpec | undefined): EffectivePolicy {
  const d = spec.mesh.defaults;
  const meshRetry: RetryPlan = {
    attempts: d.retries.attempts,
    perTryTimeoutMs: parseDuration(d.retries.perTryTimeout),
    retryOn: sortedUnique(d.retries.on),
    backoff: { baseMs: parseDuration(d.retries.backoff.base), maxMs: parseDuration(d.retries.backoff.max) },
  };
  const cb = { ...d.circuitBreaker, ...svc?.circuitBreaker };
  return {
    timeoutMs: parseDuration(svc?.timeout ?? d.timeout),
    connectTimeoutMs: parseDuration(svc?.connectTimeout ?? d.connectTimeout),
    retry: retryPlan(meshRetry, svc?.retries),
    retryBudget: {
      ratio: svc?.retries?.budget?.ratio ?? d.retries.budget.ratio,
      minPerSecond: svc?.retries?.budget?.minPerSecond ?? d.retries.budget.minPerSecond,
    },
    circuitBreaker: {
      maxConnections: cb.maxConnections,
      maxPendingRequests: cb.maxPendingRequests,
      maxRequests: cb.maxRequests,
    },
    outlierDetection: {
      consecutive5xx: cb.consecutive5xx,
      intervalMs: parseDuration(cb.interval),
      baseEjectionMs: parseDuration(cb.baseEjection),
      maxEjectedPercent: cb.maxEjectedPercent,
      panicThreshold: cb.panicThreshold,
    },
    loadBalancer: svc?.loadBalancer ?? d.loadBalancer,
  };
}

/**
 * The sidecars' local ports (one per service, one per external destination with one host), the same in
 * every sidecar: each name's port comes from a hash of the name into PROXY_PORTS.localPortRange, so
 * adding or removing a service or a destination leaves the others' ports as they were (and the other
 * workloads' configs, which would otherwise all change and roll). A name `pinned` to a port (the spec's
 * `localPort`, distinct and in the range: the spec checks) has it, and the hashed names go around the
 * pins. Names whose slots collide take the next free one, in the order of (slot, name): only a name in
 * the same run of taken slots can move another. Past the range's size the rest get none.
 */
export function localPorts(
  names: readonly string[],
  pinned: ReadonlyMap<string, number> = new Map(),
): Map<string, number> {
  const { first, size } = PROXY_PORTS.localPortRange;
  const taken = new Set<number>();
  const out = new Map<string, number>();
  for (const name of names) {
    const port = pinned.get(name);
    if (port === undefined) continue;
    taken.add(port - first);
    out.set(name, port);
  }
  const homes = names
    .filter((name) => !out.has(name))
    .map((name) => ({ name, home: (segmentHash(name, 0, name.length) >>> 0) % size }))
    .sort((a, b) => a.home - b.home || compareCodeUnits(a.name, b.name));
  for (const { name, home } of homes) {
    if (taken.size === size) break;
    let slot = home;
    while (taken.has(slot)) slot = (slot + 1) % size;
    taken.add(slot);
    out.set(name, first + slot);
  }
  return out;
}

// ───────────── steps ─────────────

function translateIdentities(ctx: Context): IdentityIR[] {
  const ttlMs = parseDuration(ctx.spec.mesh.ca.workloadTtl);
  const names = [...ctx.serviceNames, ...(ctx.spec.gateway ? [GATEWAY] : [])].sort();
  const local = ctx.spec.targets.local;
  return names.map((name) => ({
    name,
    spiffeId: ctx.spiffeId(name),
    serviceAccount: name,
    ttlMs,
    dirs: {
      kubernetes: identityDir("kubernetes", name),
      local: local ? identityDir("local", name, local.stateDir) : null,
    },
  }));
}

function translateClusters(ctx: Context): Map<string, Cluster> {
  const clusters = new Map<string, Cluster>();
  for (const name of ctx.serviceNames) {
    const svc = ctx.service(name);
    const p = ctx.policy(name);
    clusters.set(name, {
      name,
      service: name,
      namespace: ctx.namespace,
      port: PROXY_PORTS.sidecarInbound,
      protocol: svc.protocol === "http" ? "http1" : "http2",
      loadBalancer: p.loadBalancer,
      connectTimeoutMs: p.connectTimeoutMs,
      circuitBreaker: p.circuitBreaker,
      outlierDetection: p.outlierDetection,
      retryBudget: p.retryBudget,
      healthCheck: svc.healthCheck
        ? {
            path: svc.healthCheck.path,
            intervalMs: parseDuration(svc.healthCheck.interval),
            timeoutMs: parseDuration(svc.healthCheck.timeout),
            healthyThreshold: svc.healthCheck.healthyThreshold,
            unhealthyThreshold: svc.healthCheck.unhealthyThreshold,
          }
        : null,
      tls: { mode: "mtls", serverIdentity: ctx.spiffeId(name) },
    });
  }
  return clusters;
}

/** The externals a service's sidecar relays to: declared in its calls and allowed by their rules. */
function relayedExternals(ctx: Context, name: string): string[] {
  return sortedUnique(
    ctx
      .service(name)
      .calls.filter((c) => ctx.spec.external[c] !== undefined && ctx.externalAllowedBy(c, name).length > 0),
  );
}

/**
 * The headers that assert an end user (the gateway's principal headers and its JWT providers'
 * forwardClaims headers) and who may send them to a service: the gateway alone, when there is one.
 */
function principalHeaders(ctx: Context): SidecarRuntimeConfig["inbound"]["principalHeaders"] {
  const g = ctx.spec.gateway;
  const claims = Object.values(g?.jwt ?? {}).flatMap((p) => Object.keys(p.forwardClaims ?? {}));
  return {
    names: sortedUnique([...PRINCIPAL_HEADERS, ...claims.map((h) => h.toLowerCase())]),
    from: g ? [ctx.spiffeId(GATEWAY)] : [],
  };
}

function translateSidecars(ctx: Context, clusters: Map<string, Cluster>): SidecarRuntimeConfig[] {
  return ctx.serviceNames.map((name) => {
    const svc = ctx.service(name);
    const callees = sortedUnique(ctx.servicesOf(svc.calls));
    const externals = relayedExternals(ctx, name);
    diagnoseCalls(ctx, name);
    const config: Omit<SidecarRuntimeConfig, "hash"> = {
      ...ctx.common(),
      kind: "sidecar",
      name,
      identity: ctx.spiffeId(name),
      svid: ctx.svid(),
      admin: { port: PROXY_PORTS.sidecarAdmin },
      telemetry: ctx.telemetry(name),
      clusters: callees.map((c) => clusters.get(c)!),
      inbound: {
        port: PROXY_PORTS.sidecarInbound,
        appPort: svc.port,
        protocol: svc.protocol === "http" ? "http1" : "http2",
        authz: {
          default: "deny",
          rules: [
            ...svc.allow.map((rule, i) => ({
              source: `services.${name}.allow[${i}]`,
              from: sortedUnique(rule.from).map((peer) => ctx.spiffeId(peer)),
              methods: sortMethods(rule.methods ?? []),
              paths: sortedUnique(rule.paths ?? []),
            })),
            ...healthCheckRule(ctx, name),
          ],
        },
        limits: {
          maxHeaderBytes: parseSize(svc.limits.maxHeaderSize),
          maxBodyBytes: parseSize(svc.limits.maxBodySize),
          headerTimeoutMs: parseDuration(svc.limits.headerTimeout),
        },
        principalHeaders: principalHeaders(ctx),
      },
      outbound: {
        port: PROXY_PORTS.sidecarOutbound,
        services: callees.map((callee) => {
          const p = ctx.policy(callee);
          return {
            service: callee,
            cluster: callee,
            localPort: ctx.localPort(callee),
            timeoutMs: p.timeoutMs,
            retry: p.retry,
            routes: [...(ctx.service(callee).routes ?? [])]
              .sort((a, b) => compareCodeUnits(a.name, b.name))
              .map((r) => ({
                name: r.name,
                match: { path: r.match.path, methods: sortMethods(r.match.methods ?? []) },
                timeoutMs: r.timeout !== undefined ? parseDuration(r.timeout) : p.timeoutMs,
                retry: retryPlan(p.retry, r.retries),
              })),
          };
        }),
        external: externals.map((e) => {
          const x = ctx.spec.external[e]!;
          return {
            name: e,
            host: canonicalHost(x.host),
            port: x.port,
            // A wildcard or a range names no one host a local port could relay to.
            localPort: isPatternHost(x.host) ? null : ctx.externalLocalPort(e),
            connectTimeoutMs: parseDuration(x.connectTimeout ?? ctx.spec.mesh.defaults.connectTimeout),
            timeoutMs: parseDuration(x.timeout ?? ctx.spec.mesh.defaults.timeout),
            maxConnections: x.maxConnections ?? null,
            tls: x.tls,
            ca: x.ca ?? null,
            clientCertificate: clientCertificateFiles(x.clientCertificate),
          };
        }),
      },
    };
    return sealRuntimeConfig<SidecarRuntimeConfig>(config);
  });
}

function diagnoseCalls(ctx: Context, caller: string): void {
  ctx.service(caller).calls.forEach((callee, i) => {
    if (ctx.spec.services[callee] && !ctx.allows(callee, caller)) {
      ctx.diagnose({
        code: "W_SPEC_CALL_NOT_ALLOWED",
        severity: "warning",
        path: `services.${caller}.calls[${i}]`,
        message: `"${caller}" declares a call to "${callee}", but no allow rule of "${callee}" admits it: every such request gets 403`,
        hint: `add "${caller}" to an allow rule of services.${callee}, or remove the call`,
      });
    }
    if (ctx.spec.external[callee] && ctx.externalAllowedBy(callee, caller).length === 0) {
      ctx.diagnose({
        code: "W_SPEC_CALL_NOT_ALLOWED",
        severity: "warning",
        path: `services.${caller}.calls[${i}]`,
        message: `"${caller}" declares a call to the external destination "${callee}", but no allow rule of it admits "${caller}": its sidecar refuses every such connection`,
        hint: `add "${caller}" to an allow rule of external.${callee}, or remove the call`,
      });
    }
  });
}

/** The external destinations, sorted by name. */
function translateExternals(ctx: Context): ExternalIR[] {
  return ctx.externalNames.map((name) => {
    const x = ctx.spec.external[name]!;
    const files = clientCertificateFiles(x.clientCertificate);
    return {
      name,
      host: canonicalHost(x.host),
      port: x.port,
      tls: x.tls,
      clientCertificate: files && { secret: x.clientCertificate?.secret ?? null, ...files },
    };
  });
}

/**
 * Where a proxy reads a certificate and its key (a gateway listener's, an external's client certificate):
 * the files the spec names, or the Kubernetes TLS Secret's, mounted at /etc/meshgate/tls/<secret>.
 */
function certificateFiles(c: { secret?: string; certFile?: string; keyFile?: string }): {
  certFile: string;
  keyFile: string;
} {
  return {
    certFile: c.certFile ?? `/etc/meshgate/tls/${c.secret}/tls.crt`,
    keyFile: c.keyFile ?? `/etc/meshgate/tls/${c.secret}/tls.key`,
  };
}

/** An external's client certificate files; null without one. */
const clientCertificateFiles = (c: Parameters<typeof certificateFiles>[0] | undefined) =>
  c === undefined ? null : certificateFiles(c);

/**
 * Edges to external destinations that are declared (a service's calls; a gateway route's `to`) or allowed
 * (the destination's allow rules).
 */
function translateEgress(ctx: Context): EgressIR[] {
  const out: EgressIR[] = [];
  const routed = new Set((ctx.spec.gateway?.routes ?? []).flatMap(routeExternals));
  for (const external of ctx.externalNames) {
    const share = ctx.spec.external[external]!.share;
    if ((share.identity || share.clientAddress) && !routed.has(external))
      ctx.diagnose({
        code: "W_SPEC_SHARE_WITHOUT_ROUTE",
        severity: "warning",
        path: `external.${external}.share`,
        message: `"${external}" shares the client's ${[share.identity ? "identity" : "", share.clientAddress ? "address" : ""].filter(Boolean).join(" and ")} with no gateway route forwarding to it: sidecars relay what the apps send, and share has no effect there`,
        hint: `remove share, or add a gateway route with to: { external: ${external} }`,
      });
  }
  const callers = ctx.spec.gateway ? [...ctx.serviceNames, GATEWAY].sort(compareCodeUnits) : ctx.serviceNames;
  for (const from of callers) {
    const calls = from === GATEWAY ? [...routed] : ctx.service(from).calls;
    for (const external of ctx.externalNames) {
      const allowedBy = ctx.externalAllowedBy(external, from);
      const declared = calls.includes(external);
      if (!declared && allowedBy.length === 0) continue;
      const x = ctx.spec.external[external]!;
      if (from === GATEWAY && !declared)
        x.allow.forEach((rule, i) => {
          const j = rule.from.indexOf(GATEWAY);
          if (j >= 0)
            ctx.diagnose({
              code: "W_SPEC_ALLOW_WITHOUT_CALL",
              severity: "info",
              path: `external.${external}.allow[${i}].from[${j}]`,
              message: `"${external}" allows "gateway", which never routes to it`,
              hint: `remove the rule, or add a gateway route with to: { external: ${external} }`,
            });
        });
      out.push({
        from,
        external,
        host: canonicalHost(x.host),
        port: x.port,
        declared,
        allowed: allowedBy.length > 0,
        allowedBy,
      });
    }
  }
  return out;
}

function translateGateway(ctx: Context, clusters: Map<string, Cluster>): GatewayRuntimeConfig | null {
  const g = ctx.spec.gateway;
  if (!g) return null;
  const routes = [...g.routes]
    .sort((a, b) => compareCodeUnits(a.name, b.name))
    .map((r) => translateRoute(ctx, r));
  const used = new Set<string>();
  for (const r of routes) for (const c of routeClusters(r.action)) used.add(c);
  const listeners = gatewayListeners(g);
  listeners.forEach((l, i) => {
    if (l.proxyProtocol && !l.proxyProtocolSources)
      ctx.diagnose({
        code: "W_SPEC_PROXY_PROTOCOL_ANY_SOURCE",
        severity: "warning",
        path: `gateway.listeners[${i}]`,
        message: `listener "${l.name}" takes PROXY headers from any source: a client that reaches its port directly can name any address (IP rules, rate limits, logs)`,
        hint: "add proxyProtocolSources: the load balancers' CIDR ranges",
      });
  });
  const config: Omit<GatewayRuntimeConfig, "hash"> = {
    ...ctx.common(),
    kind: "gateway",
    name: GATEWAY,
    identity: ctx.spiffeId(GATEWAY),
    svid: ctx.svid(),
    admin: { port: PROXY_PORTS.gatewayAdmin },
    telemetry: ctx.telemetry(GATEWAY),
    clusters: [...used].sort().map((c) => clusters.get(c) ?? externalCluster(ctx, c)),
    hosts: sortedUnique(g.hosts.map((h) => h.toLowerCase())),
    listeners: [...listeners]
      .sort((a, b) => compareCodeUnits(a.name, b.name))
      .map((l) => ({
        name: l.name,
        port: l.port,
        protocol: l.protocol,
        http2: l.http2,
        ...(l.proxyProtocol ? { proxyProtocol: true as const } : {}),
        ...(l.proxyProtocol && l.proxyProtocolSources
          ? { proxyProtocolSources: sortedUnique(l.proxyProtocolSources) }
          : {}),
        tls: l.tls
          ? {
              minVersion: l.tls.minVersion,
              certificates: l.tls.certificates.map((c) => ({
                hosts: sortedUnique(c.hosts.map((h) => h.toLowerCase())),
                ...certificateFiles(c),
              })),
            }
          : null,
      })),
    clientIp: {
      trustedHops: g.clientIp.trustedHops,
      ...(g.clientIp.trustedProxies ? { trustedProxies: sortedUnique(g.clientIp.trustedProxies) } : {}),
      header: g.clientIp.header,
    },
    limits: {
      maxHeaderBytes: parseSize(g.limits.maxHeaderSize),
      maxBodyBytes: parseSize(g.limits.maxBodySize),
      headerTimeoutMs: parseDuration(g.limits.headerTimeout),
      requestTimeoutMs: parseDuration(g.limits.requestTimeout),
      idleTimeoutMs: parseDuration(g.limits.idleTimeout),
      maxConnections: g.limits.maxConnections,
      drainTimeoutMs: parseDuration(g.limits.drainTimeout),
    },
    auth: {
      jwt: Object.entries(g.jwt ?? {})
        .sort(([a], [b]) => compareCodeUnits(a, b))
        .map(([name, p]) => ({
          name,
          issuer: p.issuer,
          audiences: sortedUnique(p.audiences),
          algorithms: sortedUnique(p.algorithms),
          jwksUri: p.jwksUri ?? null,
          // A key pair pasted whole keeps only its public members: the private ones never reach a
          // RuntimeConfig (a ConfigMap, `meshgate translate`'s output, the Pulumi state).
          jwks: p.jwks ? { ...p.jwks, keys: p.jwks.keys.map(publicJwk) } : null,
          clockSkewMs: parseDuration(p.clockSkew),
          tokenFrom: {
            header: p.tokenFrom?.header ?? "authorization",
            prefix: p.tokenFrom?.prefix ?? "Bearer ",
            cookie: p.tokenFrom?.cookie ?? null,
            query: p.tokenFrom?.query ?? null,
          },
          forwardClaims: sortRecord(p.forwardClaims ?? {}),
        })),
      apiKeys: g.apiKeys
        ? {
            header: g.apiKeys.header,
            consumers: Object.entries(g.apiKeys.consumers)
              .sort(([a], [b]) => compareCodeUnits(a, b))
              .map(([name, c]) => ({
                name,
                keyHashes: sortedUnique(c.keyHashes),
                groups: sortedUnique(c.groups ?? []),
              })),
          }
        : null,
      clientCert: Object.entries(g.clientCerts ?? {})
        .sort(([a], [b]) => compareCodeUnits(a, b))
        .map(([name, c]) => ({
          name,
          caFile: c.caFile,
          subjects: sortedUnique(c.subjects ?? []),
          sans: sortedUnique(c.sans ?? []),
        })),
      oidc: Object.entries(g.oidc ?? {})
        .sort(([a], [b]) => compareCodeUnits(a, b))
        .map(([name, o]) => ({
          name,
          issuer: o.issuer,
          clientId: o.clientId,
          clientSecretEnv: o.clientSecretEnv,
          redirectPath: o.redirectPath,
          scopes: sortedUnique(o.scopes),
          cookieName: o.cookieName,
          sessionTtlMs: parseDuration(o.sessionTtl),
        })),
    },
    rateLimitStore: g.rateLimitStore
      ? {
          kind: "redis",
          url: g.rateLimitStore.redis.url,
          failMode: g.rateLimitStore.redis.failMode,
          timeoutMs: parseDuration(g.rateLimitStore.redis.timeout),
        }
      : { kind: "local", replicas: g.replicas },
    cacheStore: g.cache?.redis
      ? {
          kind: "redis",
          url: g.cache.redis.url,
          maxBytes: parseSize(g.cache.maxSize),
          timeoutMs: parseDuration(g.cache.redis.timeout),
          localMaxBytes: parseSize(g.cache.redis.localSize),
        }
      : { kind: "memory", maxBytes: parseSize(g.cache?.maxSize ?? "64MiB") },
    routes,
  };
  diagnoseGatewayRoutes(ctx);
  return sealRuntimeConfig<GatewayRuntimeConfig>(config);
}

function routeClusters(action: RouteAction): string[] {
  switch (action.kind) {
    case "forward":
      return [...action.backends.map((b) => b.cluster), ...(action.mirror ? [action.mirror.cluster] : [])];
    case "aggregate":
      return action.parts.map((p) => p.cluster);
    default:
      return [];
  }
}

/** The service a route's `to` names (undefined: none, or an external destination). */
export function toService(r: Pick<GatewayRouteSpec, "to">): string | undefined {
  if (r.to === undefined) return undefined;
  return typeof r.to === "string" ? r.to : "service" in r.to ? r.to.service : undefined;
}

/** The external destination a route's `to` names, if it names one. */
export function toExternal(r: Pick<GatewayRouteSpec, "to">): string | undefined {
  return r.to !== undefined && typeof r.to !== "string" && "external" in r.to ? r.to.external : undefined;
}

/**
 * The cluster of an external destination a gateway route forwards to: its one endpoint the declared host
 * and port (`address`: the name resolved on each connection, by the egress rules), TLS verified for the
 * host when it says `tls: originate` (with its client certificate), plain HTTP otherwise; never ejected
 * (it is the only endpoint); the mesh's connection limits and retry budget; what it is told about the
 * client (`share`).
 */
function externalCluster(ctx: Context, name: string): Cluster {
  const x = ctx.spec.external[name]!;
  const host = canonicalHost(x.host);
  const p = ctx.meshPolicy;
  return {
    name,
    service: name,
    namespace: "",
    port: x.port,
    protocol: "http1",
    loadBalancer: "round-robin",
    connectTimeoutMs: parseDuration(x.connectTimeout ?? ctx.spec.mesh.defaults.connectTimeout),
    circuitBreaker: {
      ...p.circuitBreaker,
      maxConnections: x.maxConnections ?? p.circuitBreaker.maxConnections,
    },
    outlierDetection: { ...p.outlierDetection, consecutive5xx: 2 ** 31 - 1, maxEjectedPercent: 0 },
    retryBudget: p.retryBudget,
    healthCheck: null,
    address: host,
    authority: externalAuthority(x),
    share: { identity: x.share.identity, clientAddress: x.share.clientAddress },
    tls:
      x.tls === "originate"
        ? {
            mode: "tls",
            serverName: host,
            ca: x.ca ?? null,
            clientCertificate: clientCertificateFiles(x.clientCertificate),
          }
        : { mode: "none" },
  };
}

/**
 * The Host an external destination is called with: its name, with the port unless it is the scheme's
 * default (an IPv6 address in brackets).
 */
function externalAuthority(x: { host: string; port: number; tls: "passthrough" | "originate" }): string {
  const host = canonicalHost(x.host);
  const name = host.includes(":") ? `[${host}]` : host;
  return x.port === (x.tls === "originate" ? 443 : 80) ? name : `${name}:${x.port}`;
}

type SplitEntry = NonNullable<GatewayRouteSpec["split"]>[number];

/** What a split entry sends its share to: a service or an external destination (by name). */
export function splitTarget(s: SplitEntry): string {
  return "service" in s ? s.service : s.external;
}

/** The external destinations a route calls: its `to`, its split's entries or its aggregate parts that name one. */
export function routeExternals(r: Pick<GatewayRouteSpec, "to" | "split" | "aggregate">): string[] {
  const to = toExternal(r);
  if (to !== undefined) return [to];
  return [
    ...(r.split ?? []).flatMap((s) => ("external" in s ? [s.external] : [])),
    ...Object.values(r.aggregate ?? {}).flatMap((p) => (p.external !== undefined ? [p.external] : [])),
  ];
}

/** A route's heaviest backend (ties by name): `to`, or the split entry with the largest weight. */
function primaryTarget(r: GatewayRouteSpec): { service: string } | { external: string } | undefined {
  if (r.to !== undefined) {
    const external = toExternal(r);
    return external !== undefined ? { external } : { service: toService(r)! };
  }
  if (r.split)
    return [...r.split].sort(
      (a, b) => b.weight - a.weight || compareCodeUnits(splitTarget(a), splitTarget(b)),
    )[0];
  return undefined;
}

/** The service whose timeout/retry policy a route inherits: its heaviest backend, when that is a service. */
function primaryService(r: GatewayRouteSpec): string | undefined {
  const p = primaryTarget(r);
  return p !== undefined && "service" in p ? p.service : undefined;
}

/**
 * The service's own route policy (`services.<s>.routes[]`) for what a gateway route sends it: the same
 * upstream path pattern (the rewrite, else the match; `{param}` and `*` alike) and a method set the
 * policy covers. A gateway route without its own timeout/retries inherits that policy, as a mesh caller
 * of the service would — so a POST route to a service whose create policy forbids retries never retries.
 */
function servicePolicyFor(ctx: Context, service: string, r: GatewayRouteSpec) {
  const routes = ctx.service(service).routes ?? [];
  if (routes.length === 0) return undefined;
  const wild = (p: string) => p.replace(/\{[A-Za-z_][A-Za-z0-9_]*\}/g, "*");
  const upstream = wild(r.rewrite?.path ?? r.match.path);
  const methods = r.match.methods ?? [];
  return [...routes]
    .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))
    .find(
      (p) =>
        wild(p.match.path) === upstream &&
        (p.match.methods === undefined ||
          p.match.methods.length === 0 ||
          (methods.length > 0 && methods.every((m) => p.match.methods!.includes(m)))),
    );
}

function translateRoute(ctx: Context, r: GatewayRouteSpec): GatewayRoute {
  const g = ctx.spec.gateway!;
  const primary = primaryService(r);
  const inherited = primary ? ctx.policy(primary) : undefined;
  const own = primary ? servicePolicyFor(ctx, primary, r) : undefined;
  // Without a service to inherit from: an external destination's own timeout, else the mesh default.
  const heaviest = primaryTarget(r);
  const external = heaviest !== undefined && "external" in heaviest ? heaviest.external : undefined;
  const defaultTimeout = parseDuration(
    (external !== undefined ? ctx.spec.external[external]!.timeout : undefined) ??
      ctx.spec.mesh.defaults.timeout,
  );
  const timeoutMs =
    r.timeout !== undefined
      ? parseDuration(r.timeout)
      : own?.timeout !== undefined
        ? parseDuration(own.timeout)
        : (inherited?.timeoutMs ?? defaultTimeout);
  const serviceRetry = (inherited ?? ctx.meshPolicy).retry;
  const baseRetry = own ? retryPlan(serviceRetry, own.retries) : serviceRetry;
  return {
    name: r.name,
    match: {
      path: r.match.path,
      methods: sortMethods(r.match.methods ?? []),
      hosts: sortedUnique((r.match.hosts ?? []).map((h) => h.toLowerCase())),
      headers: conditions(r.match.headers),
      query: conditions(r.match.query),
    },
    action: translateAction(ctx, r, timeoutMs),
    auth: translateAuth(r),
    rateLimit: r.rateLimit
      ? {
          requests: r.rateLimit.requests,
          periodMs: parseDuration(r.rateLimit.per),
          burst: r.rateLimit.burst ?? r.rateLimit.requests,
          key: r.rateLimit.key.startsWith("header:")
            ? { kind: "header", header: r.rateLimit.key.slice("header:".length) }
            : { kind: r.rateLimit.key as "ip" | "subject" | "consumer" | "route" },
          scope: r.rateLimit.scope,
        }
      : null,
    cache: r.cache
      ? {
          ttlMs: parseDuration(r.cache.ttl),
          vary: sortedUnique(r.cache.vary ?? []),
          perPrincipal: r.cache.perPrincipal,
          maxEntryBytes: parseSize(r.cache.maxEntrySize),
          staleWhileRevalidateMs: parseDuration(r.cache.staleWhileRevalidate),
          staleIfErrorMs: parseDuration(r.cache.staleIfError),
        }
      : null,
    transform: { request: transform(r.transform?.request), response: transform(r.transform?.response) },
    fault: r.fault
      ? {
          delay: r.fault.delay
            ? { ms: parseDuration(r.fault.delay.duration), percent: r.fault.delay.percent }
            : null,
          abort: r.fault.abort ? { status: r.fault.abort.status, percent: r.fault.abort.percent } : null,
        }
      : null,
    cors: r.cors
      ? {
          origins: sortedUnique(r.cors.origins),
          methods: sortMethods(r.cors.methods ?? r.match.methods ?? ["GET", "HEAD", "POST"]),
          headers: sortedUnique(r.cors.headers ?? []),
          exposeHeaders: sortedUnique(r.cors.exposeHeaders ?? []),
          credentials: r.cors.credentials,
          maxAgeSeconds: Math.floor(parseDuration(r.cors.maxAge) / 1000),
        }
      : null,
    timeoutMs,
    retry: retryPlan(baseRetry, r.retries),
    limits: {
      maxBodyBytes: parseSize(r.limits?.maxBodySize ?? g.limits.maxBodySize),
      maxResponseBytes: maxResponseBytes(r),
    },
  };
}

/** The route's response limit: as written, else the buffering default where the gateway buffers, else none. */
function maxResponseBytes(r: GatewayRouteSpec): number | null {
  if (r.limits?.maxResponseSize !== undefined) return parseSize(r.limits.maxResponseSize);
  const buffers = r.aggregate !== undefined || r.transform?.response?.body !== undefined;
  return buffers ? parseSize(DEFAULTS["gateway.routes.*.limits.maxResponseSize"].value) : null;
}

function translateAction(ctx: Context, r: GatewayRouteSpec, timeoutMs: number): RouteAction {
  if (r.redirect) {
    return {
      kind: "redirect",
      status: r.redirect.status,
      scheme: r.redirect.scheme ?? null,
      host: r.redirect.host ?? null,
      port: r.redirect.port ?? null,
      path: r.redirect.path ?? null,
    };
  }
  if (r.aggregate) {
    return {
      kind: "aggregate",
      parts: Object.entries(r.aggregate)
        .sort(([a], [b]) => compareCodeUnits(a, b))
        .map(([name, p]) => ({
          name,
          cluster: (p.service ?? p.external)!,
          method: p.method,
          path: p.path,
          timeoutMs: partTimeoutMs(ctx, p, timeoutMs),
          onError: p.onError,
          default: p.default ?? null,
          forwardHeaders: sortedUnique(p.forwardHeaders ?? []),
        })),
    };
  }
  if (r.static) {
    return {
      kind: "static",
      root: r.static.dir,
      index: r.static.index,
      spaFallback: r.static.spaFallback ?? null,
      precompressed: r.static.precompressed,
    };
  }
  const backends = r.split
    ? r.split
        .map((s) => ({ cluster: splitTarget(s), weight: s.weight }))
        .sort((a, b) => compareCodeUnits(a.cluster, b.cluster))
    : [{ cluster: toService(r) ?? toExternal(r)!, weight: 100 }];
  // An external destination is called by its own name (its cluster's authority) unless rewrite.host says.
  const host = r.rewrite?.host?.toLowerCase() ?? null;
  return {
    kind: "forward",
    backends,
    mirror: r.mirror ? { cluster: r.mirror.service, percent: r.mirror.percent } : null,
    rewrite: r.rewrite ? { path: r.rewrite.path ?? null, host } : null,
  };
}

/**
 * An aggregate part's timeout: its own, else the route's — or its external destination's when that is
 * shorter (an external's timeout bounds every call to it; it never stretches the route's).
 */
function partTimeoutMs(
  ctx: Context,
  p: NonNullable<GatewayRouteSpec["aggregate"]>[string],
  routeMs: number,
): number {
  if (p.timeout !== undefined) return parseDuration(p.timeout);
  const external = p.external !== undefined ? ctx.spec.external[p.external]!.timeout : undefined;
  return external !== undefined ? Math.min(parseDuration(external), routeMs) : routeMs;
}

function translateAuth(r: GatewayRouteSpec): RouteAuth {
  const a = r.auth;
  if (!a) {
    return {
      public: r.public === true,
      anyOf: [],
      scopes: [],
      claims: [],
      consumers: [],
      groups: [],
      clientIps: [],
    };
  }
  const jwts = typeof a.jwt === "string" ? [a.jwt] : (a.jwt ?? []);
  return {
    public: false,
    anyOf: [
      ...sortedUnique(jwts).map((provider) => ({ kind: "jwt" as const, provider })),
      ...(a.apiKey ? [{ kind: "apiKey" as const }] : []),
      ...(a.clientCert ? [{ kind: "clientCert" as const, provider: a.clientCert }] : []),
      ...(a.oidc ? [{ kind: "oidc" as const, provider: a.oidc }] : []),
    ],
    scopes: sortedUnique(a.scopes ?? []),
    claims: Object.entries(a.claims ?? {})
      .sort(([x], [y]) => compareCodeUnits(x, y))
      .map(([name, v]) => ({ name, values: sortedUnique(typeof v === "string" ? [v] : v) })),
    consumers: sortedUnique(a.consumers ?? []),
    groups: sortedUnique(a.groups ?? []),
    clientIps: sortedUnique(a.clientIps ?? []),
  };
}

function diagnoseGatewayRoutes(ctx: Context): void {
  ctx.spec.gateway!.routes.forEach((r, i) => {
    const base = `gateway.routes[${i}]`;
    const targets: [string, string][] = [];
    const to = toService(r);
    if (to !== undefined) targets.push([to, typeof r.to === "string" ? `${base}.to` : `${base}.to.service`]);
    r.split?.forEach((s, j) => {
      if ("service" in s) targets.push([s.service, `${base}.split[${j}].service`]);
    });
    if (r.mirror) targets.push([r.mirror.service, `${base}.mirror.service`]);
    for (const [part, p] of Object.entries(r.aggregate ?? {}))
      if (p.service !== undefined) targets.push([p.service, `${base}.aggregate.${part}.service`]);
    for (const [svc, path] of targets) {
      if (!ctx.allows(svc, GATEWAY)) {
        ctx.diagnose({
          code: "W_SPEC_CALL_NOT_ALLOWED",
          severity: "warning",
          path,
          message: `route "${r.name}" sends requests to "${svc}", but no allow rule of "${svc}" admits the gateway: they get 403`,
          hint: `add "gateway" to an allow rule of services.${svc}`,
        });
      }
    }
    const methods = r.match.methods ?? [];
    const retryOn = r.retries?.on ?? ctx.spec.mesh.defaults.retries.on;
    const retriesSentBytes = retryOn.some((o) => !NEVER_SENT.has(o));
    if (
      r.retries?.attempts &&
      retriesSentBytes &&
      methods.length > 0 &&
      methods.every((m) => !IDEMPOTENT_METHODS.has(m))
    ) {
      ctx.diagnose({
        code: "W_SPEC_RETRY_UNSAFE_METHOD",
        severity: "warning",
        path: `${base}.retries`,
        message: `route "${r.name}" only matches ${methods.join(", ")}: retries apply only when no byte reached the upstream`,
        hint: "remove retries, or make the upstream idempotent (e.g. with an Idempotency-Key) and accept that",
      });
    }
    if (r.split && r.timeout === undefined) {
      // The route takes its heaviest entry's timeout: with entries that differ, a lighter entry that needs
      // longer is cut short — and which entry is heaviest changes as the weights do.
      const of = (s: SplitEntry) =>
        "service" in s
          ? ctx.policy(s.service).timeoutMs
          : parseDuration(ctx.spec.external[s.external]!.timeout ?? ctx.spec.mesh.defaults.timeout);
      const timeouts = r.split.map((s) => `${splitTarget(s)} ${formatDuration(of(s))}`);
      if (new Set(r.split.map(of)).size > 1)
        ctx.diagnose({
          code: "W_SPEC_SPLIT_TIMEOUTS",
          severity: "warning",
          path: `${base}.split`,
          message: `route "${r.name}" splits between entries with different timeouts (${timeouts.join(", ")}) and sets none: every request gets the heaviest entry's`,
          hint: "give the route its own timeout, long enough for every entry",
        });
    }
    const rl = r.rateLimit;
    const g = ctx.spec.gateway;
    if (rl && rl.scope === "fleet" && g && !g.rateLimitStore && (rl.burst ?? rl.requests) < g.replicas) {
      ctx.diagnose({
        code: "W_SPEC_RATE_LIMIT_REPLICA_FLOOR",
        severity: "warning",
        path: `${base}.rateLimit`,
        message: `route "${r.name}": a burst of ${rl.burst ?? rl.requests} divided over ${g.replicas} replicas is below one token each; each replica allows 1, so the fleet allows bursts of ${g.replicas}`,
        hint: "raise burst to at least gateway.replicas, use scope: replica, or share the limit through rateLimitStore.redis",
      });
    }
    const unconstrained = r.auth ? unconstrainedMechanisms(r.auth) : [];
    if (unconstrained.length > 0)
      ctx.diagnose({
        code: "W_SPEC_AUTH_MECHANISM_UNCONSTRAINED",
        severity: "warning",
        path: `${base}.auth`,
        message: `route "${r.name}": ${unconstrained.join("; ")}`,
        hint: "split the route per mechanism (a header condition on the credential's header chooses between them), or constrain each mechanism it accepts",
      });
    if (r.public && !r.rateLimit) {
      ctx.diagnose({
        code: "W_SPEC_PUBLIC_ROUTE_UNLIMITED",
        severity: "warning",
        path: base,
        message: `public route "${r.name}" has no rate limit`,
        hint: "add rateLimit: { requests: …, per: …, key: ip }",
      });
    }
  });
}

function translateWorkloads(ctx: Context): WorkloadIR[] {
  const out: WorkloadIR[] = [];
  const g = ctx.spec.gateway;
  if (g) {
    const listeners = gatewayListeners(g);
    const gw: GatewayWorkloadIR = {
      kind: "gateway",
      name: GATEWAY,
      replicas: g.replicas,
      serviceAccount: GATEWAY,
      identity: ctx.spiffeId(GATEWAY),
      listeners: [...listeners]
        .sort((a, b) => compareCodeUnits(a.name, b.name))
        .map((l) => ({ name: l.name, port: l.port, protocol: l.protocol })),
      adminPort: PROXY_PORTS.gatewayAdmin,
      // The listeners' certificates, and the client certificates of the external backends routes forward to.
      tlsSecrets: sortedUnique([
        ...listeners.flatMap((l) => l.tls?.certificates.flatMap((c) => (c.secret ? [c.secret] : [])) ?? []),
        ...g.routes.flatMap(routeExternals).flatMap((x) => {
          const secret = ctx.spec.external[x]!.clientCertificate?.secret;
          return secret !== undefined ? [secret] : [];
        }),
      ]),
      oidcSecrets: Object.entries(g.oidc ?? {})
        .sort(([a], [b]) => compareCodeUnits(a, b))
        .map(([provider, o]) => ({ provider, env: o.clientSecretEnv, secret: o.secret ?? null })),
    };
    out.push(gw);
  }
  for (const name of ctx.serviceNames) {
    const svc = ctx.service(name);
    const w: ServiceWorkloadIR = {
      kind: "service",
      name,
      image: svc.image,
      appPort: svc.port,
      protocol: svc.protocol,
      replicas: svc.replicas,
      serviceAccount: name,
      identity: ctx.spiffeId(name),
      sidecar: {
        inbound: PROXY_PORTS.sidecarInbound,
        outbound: PROXY_PORTS.sidecarOutbound,
        admin: PROXY_PORTS.sidecarAdmin,
      },
      healthCheckPath: svc.healthCheck?.path ?? null,
      resources: svc.resources ?? null,
      env: sortRecord(svc.env ?? {}),
      tlsSecrets: sortedUnique(
        relayedExternals(ctx, name).flatMap((e) => {
          const secret = ctx.spec.external[e]!.clientCertificate?.secret;
          return secret !== undefined ? [secret] : [];
        }),
      ),
      local: svc.local
        ? {
            command:
              typeof svc.local.command === "string" ? ["sh", "-c", svc.local.command] : svc.local.command,
            env: sortRecord(svc.local.env ?? {}),
            cwd: svc.local.cwd ?? null,
          }
        : null,
    };
    out.push(w);
  }
  return out.sort((a, b) => compareCodeUnits(a.name, b.name));
}

/**
 * The active health checks of a service's callers go through its sidecar like any request (over mTLS,
 * with the caller's identity), so the sidecar admits exactly them: GET on `healthCheck.path`, from the
 * workloads that hold a cluster for the service (its declared callers and, when a route reaches it, the
 * gateway). Without it every probe is denied and the callers' clusters empty themselves.
 */
function healthCheckRule(ctx: Context, name: string): SidecarRuntimeConfig["inbound"]["authz"]["rules"] {
  const hc = ctx.service(name).healthCheck;
  if (!hc) return [];
  const probers = ctx.serviceNames.filter((s) => ctx.service(s).calls.includes(name));
  const routed = (ctx.spec.gateway?.routes ?? []).some(
    (r) =>
      toService(r) === name ||
      (r.split ?? []).some((x) => "service" in x && x.service === name) ||
      r.mirror?.service === name ||
      Object.values(r.aggregate ?? {}).some((p) => p.service === name),
  );
  if (routed) probers.push(GATEWAY);
  if (probers.length === 0) return [];
  return [
    {
      source: `services.${name}.healthCheck`,
      from: sortedUnique(probers).map((peer) => ctx.spiffeId(peer)),
      methods: ["GET"],
      paths: [hc.path],
    },
  ];
}

function translateEdges(ctx: Context): EdgeIR[] {
  const edges = new Map<string, EdgeIR>();
  const edge = (from: string, to: string) => {
    const key = `${from}\u0000${to}`;
    let e = edges.get(key);
    if (!e) {
      e = { from, to, port: PROXY_PORTS.sidecarInbound, declared: false, allowed: false, allowedBy: [] };
      edges.set(key, e);
    }
    return e;
  };
  for (const name of ctx.serviceNames) {
    const svc = ctx.service(name);
    for (const callee of ctx.servicesOf(svc.calls)) edge(name, callee).declared = true;
    svc.allow.forEach((rule, i) => {
      for (const peer of rule.from) {
        const e = edge(peer, name);
        e.allowed = true;
        e.allowedBy.push(`services.${name}.allow[${i}]`);
      }
    });
    if (svc.allow.length === 0) {
      ctx.diagnose({
        code: "W_SPEC_UNREACHABLE_SERVICE",
        severity: "info",
        path: `services.${name}.allow`,
        message: `no allow rule admits any caller of "${name}"`,
        hint: "add allow: [{ from: [<caller>] }] if anything should reach it",
      });
    }
  }
  const routed = new Set<string>();
  for (const r of ctx.spec.gateway?.routes ?? []) {
    const t: string[] = [];
    const to = toService(r);
    if (to !== undefined) t.push(to);
    for (const s of r.split ?? []) if ("service" in s) t.push(s.service);
    if (r.mirror) t.push(r.mirror.service);
    for (const p of Object.values(r.aggregate ?? {})) if (p.service !== undefined) t.push(p.service);
    for (const svc of t) {
      edge(GATEWAY, svc).declared = true;
      routed.add(svc);
    }
  }
  if (ctx.spec.gateway) {
    const e = edge("internet", GATEWAY);
    e.declared = true;
    e.allowed = true;
    e.port = gatewayListeners(ctx.spec.gateway)[0]!.port;
    e.allowedBy.push("gateway.listeners");
  }
  // Allow rules for peers that never call: reachable surface nobody needs.
  for (const name of ctx.serviceNames) {
    ctx.service(name).allow.forEach((rule, i) => {
      rule.from.forEach((peer, j) => {
        const calls =
          peer === GATEWAY ? routed.has(name) : (ctx.spec.services[peer]?.calls.includes(name) ?? true);
        if (!calls) {
          ctx.diagnose({
            code: "W_SPEC_ALLOW_WITHOUT_CALL",
            severity: "info",
            path: `services.${name}.allow[${i}].from[${j}]`,
            message: `"${name}" allows "${peer}", which never ${peer === GATEWAY ? "routes to it" : "declares a call to it"}`,
            hint:
              peer === GATEWAY
                ? "remove the rule, or add a gateway route"
                : `remove "${peer}" here, or add "${name}" to services.${peer}.calls`,
          });
        }
      });
    });
  }
  if (ctx.spec.mesh.mtls === "permissive") {
    ctx.diagnose({
      code: "W_SPEC_MTLS_PERMISSIVE",
      severity: "warning",
      path: "mesh.mtls",
      message: "mTLS is permissive: sidecars also accept plaintext, with no peer identity",
      hint: "switch to strict once every workload has a sidecar",
    });
  }
  return [...edges.values()]
    .map((e) => ({ ...e, allowedBy: sortedUnique(e.allowedBy) }))
    .sort((a, b) => compareCodeUnits(a.from, b.from) || compareCodeUnits(a.to, b.to));
}

function translateObservability(ctx: Context, workloads: WorkloadIR[]): ObservabilityIR {
  const o = ctx.spec.observability;
  // The bundled Prometheus keeps what the SLO rules read: a window past its retention reads less than
  // the window (the spec's old default, 15d retention under 30d windows, read half a window).
  const retentionMs = parseDuration(o.metrics.retention);
  if (o.metrics.enabled && o.metrics.backend !== "none")
    o.slos.forEach((s, i) => {
      if (parseDuration(s.window) <= retentionMs) return;
      ctx.diagnose({
        code: "W_SPEC_SLO_WINDOW_BEYOND_RETENTION",
        severity: "warning",
        path: `observability.slos[${i}].window`,
        message: `SLO ${s.name ?? s.route ?? s.service} has a ${s.window} window but metrics are kept ${o.metrics.retention}: its error budget is read over ${o.metrics.retention} only`,
        hint: `raise observability.metrics.retention to at least ${s.window}, or shorten the window`,
      });
    });
  return {
    metrics: {
      enabled: o.metrics.enabled,
      backend: o.metrics.backend,
      scrapeIntervalMs: parseDuration(o.metrics.scrapeInterval),
      retentionMs,
      targets: o.metrics.enabled
        ? workloads.map((w) =>
            w.kind === "gateway"
              ? { workload: w.name, kind: "gateway" as const, port: w.adminPort, path: "/metrics" }
              : { workload: w.name, kind: "sidecar" as const, port: w.sidecar.admin, path: "/metrics" },
          )
        : [],
    },
    tracing: {
      enabled: o.tracing.enabled,
      sampling: o.tracing.sampling,
      backend: o.tracing.backend,
      otlpEndpoint: o.tracing.otlpEndpoint ?? null,
    },
    logs: { access: o.logs.access, level: o.logs.level },
    grafana: { enabled: o.grafana.enabled },
    slos: o.slos
      .map((s) => {
        const kind = s.route !== undefined ? ("route" as const) : ("service" as const);
        const target = (s.route ?? s.service)!;
        return {
          name: s.name ?? `${target}-${kind}`,
          kind,
          target,
          availability: s.availability,
          latencyP99Ms: s.latencyP99 !== undefined ? parseDuration(s.latencyP99) : null,
          windowMs: parseDuration(s.window),
        };
      })
      .sort((a, b) => compareCodeUnits(a.name, b.name)),
  };
}

function translateTargets(ctx: Context): TargetsIR {
  const t = ctx.spec.targets;
  return {
    local: t.local ? { ...t.local } : null,
    kubernetes: t.kubernetes
      ? {
          gatewayServiceType: t.kubernetes.gatewayServiceType,
          gatewayExternalTrafficPolicy: t.kubernetes.gatewayExternalTrafficPolicy,
          gatewayDrainDelaySeconds: Math.ceil(parseDuration(t.kubernetes.gatewayDrainDelay) / 1000),
          serviceDrainDelaySeconds: Math.ceil(parseDuration(t.kubernetes.serviceDrainDelay) / 1000),
          runtimeImage: t.kubernetes.runtimeImage ?? null,
          gatewayVolumes: (t.kubernetes.gatewayVolumes ?? [])
            .map((v) => ({
              name: v.name,
              mountPath: v.mountPath,
              source:
                v.configMap !== undefined
                  ? { kind: "configMap" as const, name: v.configMap }
                  : v.secret !== undefined
                    ? { kind: "secret" as const, name: v.secret }
                    : { kind: "persistentVolumeClaim" as const, name: v.persistentVolumeClaim! },
            }))
            .sort((a, b) => compareCodeUnits(a.name, b.name)),
        }
      : null,
    aws: t.aws
      ? {
          region: t.aws.region,
          availabilityZones: t.aws.availabilityZones,
          cluster:
            "existing" in t.aws.cluster
              ? { kind: "existing", name: t.aws.cluster.existing }
              : {
                  kind: "create",
                  ...t.aws.cluster.create,
                  publicAccessCidrs: [...t.aws.cluster.create.publicAccessCidrs].sort(compareCodeUnits),
                },
          managedPrometheus: t.aws.managedPrometheus,
          certificateArn: t.aws.certificateArn ?? null,
        }
      : null,
    docker: t.docker
      ? { network: t.docker.network ?? ctx.spec.name, gatewayPort: t.docker.gatewayPort }
      : null,
  };
}

function translateCa(ctx: Context): InfraIR["ca"] {
  const ca = ctx.spec.mesh.ca;
  return {
    provider: ca.provider,
    rootValidityMs: parseDuration(ca.rootValidity),
    intermediateValidityMs: parseDuration(ca.intermediateValidity),
    workloadTtlMs: parseDuration(ca.workloadTtl),
    renewBeforeMs: parseDuration(ca.renewBefore),
    clockSkewMs: parseDuration(ca.clockSkew),
  };
}

type ListenerSpec = NonNullable<GatewaySpec["listeners"]>[number];
/** The gateway's listeners, or the documented default (DEFAULTS["gateway.listeners"]). */
function gatewayListeners(g: GatewaySpec): ListenerSpec[] {
  if (g.listeners) return g.listeners;
  return DEFAULTS["gateway.listeners"].value.map((l) => ({
    ...l,
    http2: DEFAULTS["gateway.listeners.*.http2"].value,
    proxyProtocol: DEFAULTS["gateway.listeners.*.proxyProtocol"].value,
  }));
}

// ───────────── canonical ordering helpers ─────────────

function sortedUnique<T extends string>(values: readonly T[]): T[] {
  return [...new Set(values)].sort();
}

const METHOD_ORDER = new Map<string, number>(HTTP_METHODS.map((m, i) => [m, i]));
function sortMethods(methods: readonly HttpMethod[]): HttpMethod[] {
  return [...new Set(methods)].sort((a, b) => METHOD_ORDER.get(a)! - METHOD_ORDER.get(b)!);
}

function sortRecord<V>(rec: Record<string, V>): Record<string, V> {
  return Object.fromEntries(Object.entries(rec).sort(([a], [b]) => compareCodeUnits(a, b)));
}

type Condition = string | { exact?: string; prefix?: string; regex?: string; present?: true; absent?: true };
function conditions(rec: Record<string, Condition> | undefined): GatewayRoute["match"]["headers"] {
  return Object.entries(rec ?? {})
    .sort(([a], [b]) => compareCodeUnits(a, b))
    .map(([name, c]) => {
      if (typeof c === "string") return { name, kind: "exact" as const, value: c };
      if (c.exact !== undefined) return { name, kind: "exact" as const, value: c.exact };
      if (c.prefix !== undefined) return { name, kind: "prefix" as const, value: c.prefix };
      if (c.regex !== undefined) return { name, kind: "regex" as const, value: c.regex };
      return { name, kind: c.present ? ("present" as const) : ("absent" as const), value: null };
    });
}

type TransformSpec = NonNullable<NonNullable<GatewayRouteSpec["transform"]>["request"]>;
function transform(t: TransformSpec | undefined): GatewayRoute["transform"]["request"] {
  if (!t) return null;
  return {
    headers: {
      add: sortRecord(t.headers?.add ?? {}),
      set: sortRecord(t.headers?.set ?? {}),
      remove: sortedUnique(t.headers?.remove ?? []),
    },
    body: t.body
      ? {
          rename: sortRecord(t.body.rename ?? {}),
          drop: sortedUnique(t.body.drop ?? []),
          set: sortRecord(t.body.set ?? {}),
          template: sortRecord(t.body.template ?? {}),
        }
      : null,
  };
}

/**
 * What a route's requirements leave open (docs/auth.md, Authorization): `scopes` and `claims` apply to
 * token principals (JWT, OIDC) only, `consumers` and `groups` to API-key principals only — a route that
 * also accepts another mechanism admits its callers without them (`{ jwt: main, apiKey: true, scopes:
 * [orders:write] }` admits an API key of any consumer). Each entry names the requirement and the
 * mechanisms it does not reach.
 */
function unconstrainedMechanisms(auth: NonNullable<GatewayRouteSpec["auth"]>): string[] {
  const accepts = {
    token: auth.jwt !== undefined || auth.oidc !== undefined,
    apiKey: auth.apiKey === true,
    clientCert: auth.clientCert !== undefined,
  };
  const out: string[] = [];
  const tokenRules = [
    auth.scopes?.length ? "scopes" : null,
    auth.claims && Object.keys(auth.claims).length ? "claims" : null,
  ].filter((x) => x !== null);
  if (tokenRules.length > 0) {
    const open = [
      accepts.apiKey ? "API keys" : null,
      accepts.clientCert ? "client certificates" : null,
    ].filter((x) => x !== null);
    if (open.length > 0)
      out.push(
        `${tokenRules.join(" and ")} apply to tokens only: ${open.join(" and ")} are admitted without them`,
      );
  }
  const keyRules = [
    auth.consumers?.length ? "consumers" : null,
    auth.groups?.length ? "groups" : null,
  ].filter((x) => x !== null);
  if (keyRules.length > 0) {
    const open = [accepts.token ? "tokens" : null, accepts.clientCert ? "client certificates" : null].filter(
      (x) => x !== null,
    );
    if (open.length > 0)
      out.push(
        `${keyRules.join(" and ")} apply to API keys only: ${open.join(" and ")} are admitted without them`,
      );
  }
  return out;
}
