/**
 * The edge gateway: HTTP/1.1 listeners, decide() per request, forwarding through upstream pools, an admin
 * listener, atomic config reload and graceful drain.
 *
 * Per request: header hygiene → decide() (canonical path, route, rewrite) → CORS preflight answered →
 * authentication and authorization (runtime/auth: JWT, API key, client certificate, OIDC session;
 * authorize()) → rate limit → body limit → fault injection → the action: redirect, static,
 * aggregate, or forward (request transform; backend and endpoint choice) → on the response: response
 * transform, CORS headers, response size limit → access log and metrics. A reload compiles a whole new
 * state and swaps one reference; requests in flight keep the state they started with.
 */
import { createReloader, type PreparedReload, type ReloadResult } from "../contract/reload.ts";
import { RuntimeConfigError } from "../contract/errors.ts";
import {
  gatewayListenerChanges,
  identityChanged,
  restartFields,
  refuseRestartFields,
  type ListenerChanges,
} from "../contract/restart.ts";
import { guardSendTail } from "../net/send-timeout.ts";
import { limitBody, readBody } from "../upstream/body.ts";
import { randomUUID } from "node:crypto";
import { statSync } from "node:fs";
import http, { type OutgoingHttpHeaders, type ServerResponse } from "node:http";
import type { Http2ServerRequest } from "node:http2";
import type net from "node:net";
import type { AddressInfo, Socket } from "node:net";
import { setTimeout as sleep } from "node:timers/promises";
import pino, { type Logger } from "pino";
import { loadRuntimeConfig } from "../contract/load.ts";
import type { GatewayRuntimeConfig } from "../contract/schema.ts";
import type { ClientCertificateFiles } from "../upstream/client-cert.ts";
import {
  compileGateway,
  decide,
  type CompiledGateway,
  type GatewayRequestFacts,
  type RouteDecision,
} from "../decide/decide.ts";
import type { CompiledRoute } from "../decide/router.ts";
import { compileApim, decorateResponse, type RouteApim } from "../apim/index.ts";
import {
  aggregateRoute,
  answerPreflight,
  corsOrigin,
  prepareForResponseTransform,
  presetCorsHeaders,
  ResponseShaper,
  serveStaticRoute,
  templateContext,
  transformRequestBody,
  transformRequestHeaders,
  type ApimHost,
} from "../apim/pipeline.ts";
import { Authenticator } from "../auth/authenticator.ts";
import { caFingerprints, clientCertTlsOptions } from "../auth/clientcert.ts";
import { RequestFacts } from "../auth/facts.ts";
import { RevokedSessions } from "../auth/oidc.ts";
import { SharedRevocations, sharedRevocationsKey } from "../auth/shared-revocations.ts";
import type { AdmitResult, AuthObserver } from "../auth/types.ts";
import { parseCidr, principalId, type IpRange, type Principal } from "../decide/authorize.ts";
import { inboundDenyCodeOf } from "../decide/inbound.ts";
import { inheritClusterState, PoolCache, UpstreamCluster } from "../upstream/cluster.ts";
import { forwardTimeoutMs, grpcCallTimeoutMs, isGrpc } from "../upstream/grpc.ts";
import {
  decodeGrpcWebText,
  grpcWebCall,
  grpcWebRequestHeaders,
  grpcWebResponseHeaders,
  GrpcWebResponse,
} from "../upstream/grpc-web.ts";
import {
  closedStatus,
  logsUpstreamFailure,
  responseCompleted,
  upstreamFailure,
  writeLocalReply,
} from "../net/reply.ts";
import { respondTrailersOnly } from "../upstream/h2pool.ts";
import { mtlsConnector } from "../upstream/tls.ts";
import type { IdentityEvent, IdentitySource } from "../pki/identity.ts";
import { observedClientCertificates } from "../telemetry/client-cert.ts";
import { identityObserver } from "../telemetry/identity.ts";
import { loggedAuthority, loggedTarget } from "../telemetry/logs.ts";
import { egressLookup } from "../net/lookup.ts";
import { forward, type ForwardObserver } from "../upstream/forward.ts";
import { HttpCache, REVALIDATION_TARGET, type CacheExchange, type ResponseTarget } from "../cache/cache.ts";
import { registerCacheMetrics } from "../cache/metrics.ts";
import { credentialHeaders } from "../cache/policy.ts";
import { RedisStore, redisCachePrefix } from "../cache/redis-store.ts";
import { MemoryStore, type CacheStore, type PurgeRequest } from "../cache/store.ts";
import { RedisClient } from "../redis/client.ts";
import type { CancelToken } from "../upstream/h1pool.ts";
import {
  MetricsRegistry,
  registerAccessLogDropped,
  registerLifecycleMetrics,
  registerProcessMetrics,
  registerUpstreamMetrics,
  type CounterChild,
  type HistogramChild,
} from "../telemetry/metrics.ts";
import {
  createTracer,
  NOOP_SPAN,
  setTraceHeaders,
  type SpanLike,
  type Tracer,
} from "../telemetry/tracing.ts";
import { rateLimitHeaders, retryAfterSeconds } from "../ratelimit/headers.ts";
import type { LeaseClient } from "../ratelimit/lease.ts";
import { RateLimiters, type RateLimitPlan } from "../ratelimit/limiter.ts";
import {
  checkRequestHeaders,
  hostContradictsAuthority,
  requestId,
  upstreamRequestHeaders,
} from "../net/headers.ts";
import {
  forwardedHeader,
  notForwarded,
  NOT_FORWARDED,
  OWN_PREFIX,
  requestClientAddress,
  useTargetAuthority,
  withheldHeaders,
} from "./headers.ts";
import type { GatewayErrorCode } from "./errors.ts";
import {
  createListener,
  type ListenerStack,
  loadCertificates,
  type AnyRequest,
  type AnyResponse,
  type CertificateSet,
} from "./listeners.ts";
import { createAcceptor, discardStack, type Acceptor } from "../net/acceptor.ts";
import { createAdminServer } from "./admin.ts";
import { credentialHeaderName, REDACTED, redactConfig } from "./redact.ts";
import { exposedConfigHash, exposedReloadResult } from "../contract/exposed-hash.ts";
import { chooseBackend, handleUpgrade, type UpgradeObserver } from "./upgrade.ts";
import { peerAddress } from "../net/sniff.ts";
import { closeUnused, openChanged, retireForDrain, swapListeners, type PreparedSwap } from "../net/swap.ts";

export interface GatewayOptions {
  /** A loaded, validated config (loadRuntimeConfig). */
  config: GatewayRuntimeConfig;
  /** The file reload() reads. */
  configPath?: string;
  /** Address to bind; default "0.0.0.0". */
  host?: string;
  /** Port overrides (0 = any free port), by listener name and for the admin listener. */
  ports?: { listeners?: Record<string, number>; admin?: number };
  /** Bind listeners with SO_REUSEPORT, so several worker processes share them (the kernel balances). */
  reusePort?: boolean;
  /** Serve the admin listener (default true; workers leave it to their primary). */
  admin?: boolean;
  /** In a worker: in-process rate limits spend leases on the primary's buckets (shared by all workers). */
  rateLimitLeases?: LeaseClient;
  logger?: Logger;
  /** Where access lines go (default `logger`); the process entry passes a buffered one (telemetry/logs.ts). */
  accessLogger?: Logger;
  /** Access lines the buffered logger dropped so far (telemetry/logs.ts: a stalled stdout); counted in metrics. */
  accessLogDropped?: () => number;
  /**
   * In a worker with the memory cache store: called when an unsafe request invalidated URLs in this
   * process's cache, so the primary can relay it to the other workers (their invalidateCached).
   */
  onCacheInvalidate?: (host: string, urls: readonly string[]) => void;
  /**
   * In a worker: called when a logout here ended an OIDC session (the hash of its cookie, and when it
   * would have expired), so the primary can relay it to the other workers (their revokeSessions).
   */
  onSessionRevoked?: (key: string, until: number) => void;
  /**
   * Resolves the names of backends outside the mesh (clusters with an `address`, and `tls` clusters);
   * default the egress rules' lookup (net/lookup.ts: loopback, link-local and unspecified answers refused).
   */
  externalLookup?: net.LookupFunction;
  /**
   * How often certificate files are checked for a rotation — the client certificates backends are reached
   * with, the listeners' certificates and keys, the client-certificate CA files; default 1 s.
   */
  certificatePollMs?: number;
}

export type { ReloadResult } from "../contract/reload.ts";

export interface GatewayHandle {
  /** Bound ports by listener name, and the admin port. */
  readonly ports: { listeners: Record<string, number>; admin: number };
  readonly metrics: MetricsRegistry;
  /** The hash of the config now serving. */
  currentHash(): string;
  /** Validates and swaps in a new config (from `text`, or re-read from configPath); the old keeps serving on failure. */
  reload(text?: string): Promise<ReloadResult>;
  /**
   * A worker's first phase of a reload its primary coordinates: validates, checks and builds `text`
   * without swapping it in; no other reload runs until it is committed or aborted.
   */
  prepareReload(text: string): Promise<PreparedReload>;
  /** Stops accepting, finishes in-flight requests (up to the drain timeout), then closes everything. */
  drain(): Promise<void>;
  /** Removes cached responses (the admin listener's POST /cache/purge); resolves with how many. */
  purge(request: PurgeRequest): Promise<number>;
  /**
   * Applies an invalidation another process made (its onCacheInvalidate): removes the cached responses
   * of these URLs on `host`. Resolves with how many.
   */
  invalidateCached(host: string, urls: readonly string[]): Promise<number>;
  /** Applies logouts another process made (its onSessionRevoked): those sessions are refused here too. */
  revokeSessions(entries: readonly (readonly [string, number])[]): void;
}

/**
 * The response as the handler uses it. HTTP/1 responses and HTTP/2 compat responses share every member
 * used here (writeHead, end, destroy, headersSent, statusCode, writableFinished, events), so the handler
 * is written once against the HTTP/1 type; onRequest narrows once. (Whether a closed response went out
 * whole is responseCompleted's: an HTTP/2 stream the client reset reads as writableFinished.)
 */
type Response = ServerResponse;

interface State {
  readonly config: GatewayRuntimeConfig;
  readonly compiled: CompiledGateway;
  readonly clusters: ReadonlyMap<string, UpstreamCluster>;
  readonly tracer: Tracer;
  /** TLS certificates by listener name (https listeners), and the files they were read from. */
  readonly tls: LoadedTls;
  /** API-management settings (CORS, transforms, aggregate, static, limits) of the routes that have any. */
  readonly apim: ReadonlyMap<CompiledRoute, RouteApim>;
  /** The rate limiter of each route with a rateLimit. */
  readonly rateLimits: RateLimitPlan;
  /** Authentication and authorization for this config's routes. */
  readonly auth: Authenticator;
  /** The HTTP cache; kept across reloads while `cacheStore` is unchanged. */
  readonly cache: HttpCache;
  /** Some route caches: unsafe methods then invalidate (RFC 9111 §4.4). */
  readonly caching: boolean;
  /** Request headers holding credentials, for the cache: Authorization and the API-key header. */
  readonly credentialHeaders: readonly string[];
  /**
   * Headers some route's match conditions read (never the credentials the gateway checks): their values
   * go to the access line, so that a request can be decided again from its line (`meshgate replay`) —
   * REDACTED for a credential-like name (credentialHeaderName): [name, redacted].
   */
  readonly matchHeaders: readonly (readonly [name: string, redacted: boolean])[];
  /** Per route: the client request headers not copied upstream (headers.ts notForwarded; routes share sets). */
  readonly notForwarded: ReadonlyMap<CompiledRoute, ReadonlySet<string>>;
  /** `clientIp.trustedProxies` parsed (null: the hop count decides). */
  readonly trustedProxies: readonly IpRange[] | null;
  /** Per cluster outside the mesh: the headers it is not sent (headers.ts withheldHeaders); mesh clusters absent. */
  readonly withheld: ReadonlyMap<string, readonly string[]>;
}

/** Where a response keeps its Exchange, for the shared close listener. */
const EXCHANGE = Symbol("meshgate.exchange");

/**
 * One request's state, from arrival to the response's close: also the request facts decide() reads, so
 * that no per-request closure or facts object is needed.
 */
class Exchange implements GatewayRequestFacts {
  readonly state: State;
  readonly req: AnyRequest;
  readonly res: Response;
  readonly started = performance.now();
  readonly requestId: string;
  readonly client: string;
  readonly method: string;
  readonly target: string;
  host: string | undefined = undefined;
  routeName = "none";
  accessPath = "";
  outcome = "";
  upstreamKey = "";
  /** Who authenticated (also on a 403: the principal authorization refused), for the access line. */
  principal: Principal | null = null;
  /** The RateLimit-* fields of an admitted request on a limited route: every local reply carries them. */
  rateHeaders: Record<string, string> | null = null;
  span: SpanLike = NOOP_SPAN;
  /** Aborted when the client goes away before the response finished. */
  readonly cancel: CancelToken = { aborted: false, onabort: null };
  /** The handler has not returned yet (the access line waits for it: it sets upstream and outcome). */
  handling = true;
  /** The response closed: what the access line says of it, until it is written. */
  logged: { status: number; completed: boolean; seconds: number } | null = null;

  constructor(state: State, req: AnyRequest, res: Response, requestId: string, client: string) {
    this.state = state;
    this.req = req;
    this.res = res;
    this.requestId = requestId;
    this.client = client;
    this.method = req.method ?? "GET";
    this.target = req.url ?? "";
  }

  header(name: string): string | undefined {
    const v = this.req.headers[name];
    return Array.isArray(v) ? v[0] : v;
  }
}

const CODE_CLASSES = ["1xx", "2xx", "3xx", "4xx", "5xx"] as const;
const codeClassIndex = (status: number) => Math.min(Math.max(Math.floor(status / 100), 1), 5) - 1;

export async function startGateway(options: GatewayOptions): Promise<GatewayHandle> {
  const log = options.logger ?? pino({ name: "meshgate-gateway", base: { proxy: "gateway" } });
  const accessLog = options.accessLogger ?? log;
  const bindHost = options.host ?? "0.0.0.0";
  // The gateway's mesh identity (mTLS to clusters with tls.mode "mtls"); without one they fail closed.
  let identity: IdentitySource | null = null;
  const connectMtls = mtlsConnector({
    current: () => identity?.current() ?? null,
    ready: () => identity?.ready() ?? false,
  });
  const pools = new PoolCache({ connections: 1024, mtls: connectMtls });

  // ── metrics ──
  const metrics = new MetricsRegistry({ prefix: "meshgate_" });
  const stopProcessMetrics = registerProcessMetrics(metrics);
  const mRequests = metrics.counter(
    "requests_total",
    "Requests answered by the gateway, by route and status class.",
    ["proxy", "route", "code_class"],
  );
  const mDuration = metrics.histogram(
    "request_duration_seconds",
    "Time from request to response end, by route.",
    ["proxy", "route"],
  );
  const mErrors = metrics.counter(
    "gateway_errors_total",
    "Error responses the gateway generated itself, by error code.",
    ["proxy", "code"],
  );
  const mProxyRefused = metrics.counter(
    "gateway_proxy_protocol_refused_total",
    "Connections closed on a PROXY-protocol listener because they did not start with a valid PROXY header.",
    ["proxy", "listener"],
  );
  const {
    upstream: mUpstream,
    retries: mRetries,
    budget: mBudget,
    overflow: mOverflow,
    ejections: mEjections,
    health: mHealth,
    panic: mPanic,
  } = registerUpstreamMetrics(metrics);
  const lifecycle = registerLifecycleMetrics(metrics, "gateway");
  const mInFlight = lifecycle.inFlight;
  /** The client certificates external backends are reached with (mutual TLS), re-read when their files change. */
  const clientCerts = observedClientCertificates(
    metrics,
    "gateway",
    log,
    () =>
      state.config.clusters.flatMap((c) =>
        c.tls.mode === "tls" ? [{ external: c.service, files: c.tls.clientCertificate ?? null }] : [],
      ),
    options.certificatePollMs,
  );
  /** Names of backends outside the mesh resolve through this (loopback / link-local answers refused). */
  const externalLookup = options.externalLookup ?? egressLookup;
  /**
   * Pools to backends outside the mesh: names resolved by the egress rules, TLS verified for the
   * cluster's server name, the client certificate from `clientCerts` (connections fail closed without it).
   */
  const externalPools = new PoolCache({
    connections: 1024,
    lookup: externalLookup,
    clientCertificates: clientCerts,
  });
  const mMirrors = metrics.counter(
    "mirrored_requests_total",
    "Mirrored request copies, by outcome (success, 5xx, failure, no_endpoint, overflow: dropped at the shadow cluster's circuit breaker).",
    ["proxy", "cluster", "outcome"],
  );
  /** Metric children per route, looked up once per route instead of by label values per request. */
  const perRoute = new Map<string, { requests: (CounterChild | undefined)[]; duration: HistogramChild }>();
  const routeMetrics = (route: string) => {
    let m = perRoute.get(route);
    if (!m) {
      m = {
        requests: [], // created per status class on first use, so no zero-valued series appear
        duration: mDuration.labels("gateway", route),
      };
      perRoute.set(route, m);
    }
    return m;
  };
  const countRequest = (route: string, status: number) => {
    const m = routeMetrics(route);
    const i = codeClassIndex(status);
    (m.requests[i] ??= mRequests.labels("gateway", route, CODE_CLASSES[i]!)).inc();
    return m;
  };
  const mSpansDropped = metrics.counter("trace_spans_dropped_total", "Spans not exported, by reason.", [
    "proxy",
    "reason",
  ]);
  registerAccessLogDropped(metrics, "gateway", options.accessLogDropped);
  /** upstream_requests_total children by cluster and outcome, looked up once instead of per attempt. */
  const attemptChildren = new Map<string, Map<string, CounterChild>>();
  const observer: ForwardObserver = {
    attempt: (cluster, outcome) => {
      let byOutcome = attemptChildren.get(cluster);
      if (byOutcome === undefined) attemptChildren.set(cluster, (byOutcome = new Map()));
      let child = byOutcome.get(outcome);
      if (child === undefined)
        byOutcome.set(outcome, (child = mUpstream.labels("gateway", cluster, outcome)));
      child.inc();
    },
    retry: (cluster, reason) => mRetries.labels("gateway", cluster, reason).inc(),
    budgetExhausted: (cluster) => mBudget.labels("gateway", cluster).inc(),
    overflow: (cluster) => mOverflow.labels("gateway", cluster).inc(),
  };
  const mAuthn = metrics.counter("authn_total", "Authentication attempts, by mechanism and result.", [
    "proxy",
    "mechanism",
    "result",
  ]);
  const mAuthzDenied = metrics.counter(
    "authz_denied_total",
    "Requests refused by authentication or authorization, by route and reason (the unmet requirement).",
    ["proxy", "route", "reason"],
  );
  const mJwks = metrics.counter("jwks_fetches_total", "JWKS fetches, by provider and outcome.", [
    "proxy",
    "provider",
    "outcome",
  ]);
  /** Counter children by label pair, looked up once instead of per request. */
  const authChildren = new Map<string, CounterChild>();
  const authChild = (key: string, make: () => CounterChild) => {
    let c = authChildren.get(key);
    if (c === undefined) authChildren.set(key, (c = make()));
    return c;
  };
  /** authn_total children by mechanism then result (two lookups, no key string built per request). */
  const authnChildren = new Map<string, Map<string, CounterChild>>();
  // OIDC sessions ended by logout: kept across config reloads (each reload builds a new Authenticator).
  const revokedSessions = new RevokedSessions((key, until) => {
    options.onSessionRevoked?.(key, until);
    shared?.sync.publish(key, until);
  });
  /** Logouts shared with the other replicas through the Redis this config shares with them (or none). */
  let shared: { url: string; key: string; sync: SharedRevocations } | null = null;
  const shareRevocations = (config: GatewayRuntimeConfig) => {
    const store =
      config.rateLimitStore.kind === "redis"
        ? config.rateLimitStore
        : config.cacheStore.kind === "redis"
          ? config.cacheStore
          : null;
    const want =
      config.auth.oidc.length > 0 && store !== null
        ? {
            url: store.url,
            key: sharedRevocationsKey(config.mesh, config.namespace),
            // A poll reads everything up to now: a slow Redis gets more than one store timeout for it.
            timeoutMs: Math.max(store.timeoutMs, 1000),
          }
        : null;
    if (shared !== null && want !== null && shared.url === want.url && shared.key === want.key) return;
    if (shared !== null) void shared.sync.close();
    shared = null;
    if (want === null) return;
    const sync = new SharedRevocations({
      ...want,
      revoked: revokedSessions,
      onUnavailable: (e) =>
        log.warn(
          { event: "session_revocations_unavailable", server: sync.server, error: e.message },
          "logouts are not shared with the other replicas until Redis answers again (they end the session here)",
        ),
      onRecovered: () => log.info({ event: "session_revocations_recovered", server: sync.server }),
    });
    shared = { url: want.url, key: want.key, sync };
    log.info({ event: "session_revocations", kind: "redis", server: sync.server, key: want.key });
  };
  const authObserver: AuthObserver = {
    authn: (m, r) => {
      let byResult = authnChildren.get(m);
      if (byResult === undefined) authnChildren.set(m, (byResult = new Map()));
      let child = byResult.get(r);
      if (child === undefined) byResult.set(r, (child = mAuthn.labels("gateway", m, r)));
      child.inc();
    },
    authzDenied: (route, reason) =>
      authChild(`z\0${route}\0${reason}`, () => mAuthzDenied.labels("gateway", route, reason)).inc(),
    jwksFetch: (provider, outcome) => mJwks.labels("gateway", provider, outcome).inc(),
  };
  const mFaults = metrics.counter("faults_injected_total", "Faults injected by route fault rules.", [
    "proxy",
    "route",
    "kind",
  ]);
  const mParts = metrics.counter(
    "aggregate_parts_total",
    "Aggregate route parts, by route, part and outcome.",
    ["proxy", "route", "part", "outcome"],
  );
  const apimHost: ApimHost = {
    respondError: (req, res, status, code, message, extra) =>
      respondError(req, res, status, code, message, extra),
    countError: (code) => mErrors.labels("gateway", code).inc(),
    aggregateObserver: {
      ...observer,
      part: (route, part, outcome) => mParts.labels("gateway", route, part, outcome).inc(),
    },
    fileSendTimeout: {
      get ms() {
        return state.config.limits.idleTimeoutMs;
      },
      onTimeout: () =>
        log.warn({ event: "send_timeout", source: "static", timeoutMs: state.config.limits.idleTimeoutMs }),
    },
  };
  const mLimited = metrics.counter(
    "ratelimit_limited_total",
    "Requests refused with 429 by a route's rate limit.",
    ["proxy", "route"],
  );
  const mStoreErrors = metrics.counter(
    "ratelimit_store_errors_total",
    "Rate-limit checks the store could not answer (Redis, or the primary's leases), by reason and the fail mode that answered instead.",
    ["proxy", "reason", "mode"],
  );
  const mFailOpen = metrics.counter(
    "ratelimit_fail_open_total",
    "Requests admitted without a rate-limit answer because the store failed and fails open.",
    ["proxy", "route"],
  );
  const mEvictions = metrics.counter(
    "ratelimit_evictions_total",
    "In-process buckets dropped at the key cap: idle (full, nothing lost) or active.",
    ["proxy", "kind"],
  );
  const mRateLimitMode = metrics.gauge(
    "ratelimit_mode_info",
    "The rate-limit mode in effect (value 1): the store of fleet limits, and what they are divided by.",
    ["proxy", "store", "fleet_divisor"],
    { maxChildren: 8 },
  );
  /** When a store error of each reason was last logged (at most once a minute each). */
  const storeErrorLoggedAt = new Map<string, number>();
  const limiters = new RateLimiters({
    ...(options.rateLimitLeases ? { leases: options.rateLimitLeases } : {}),
    observer: {
      storeError: (reason, mode, error) => {
        mStoreErrors.labels("gateway", reason, mode).inc();
        // A lost connection is logged as ratelimit_redis_down. An error reply (NOAUTH, NOPERM, OOM, MOVED:
        // a Redis that accepts the connection but refuses every check) or a timeout is not an outage the
        // client sees: without this line a gateway whose log says ratelimit_redis_ready fails every check
        // open (or closed) with nothing but a counter to show for it.
        if (reason === "connection" || error === undefined) return;
        const now = performance.now();
        if (now - (storeErrorLoggedAt.get(reason) ?? -Infinity) < 60_000) return;
        storeErrorLoggedAt.set(reason, now);
        log.warn(
          {
            event: "ratelimit_store_error",
            reason,
            failMode: mode,
            error: error instanceof Error ? error.message : String(error),
          },
          `the rate-limit store failed a check (${reason}); requests are ${mode === "open" ? "admitted" : "refused"} while it does (logged at most once a minute)`,
        );
      },
      evicted: (kind) => mEvictions.labels("gateway", kind).inc(),
      redis: (e) => {
        if (e.type === "down")
          log.warn({
            event: "ratelimit_redis_down",
            server: e.server,
            error: e.error.message,
            retryInMs: e.retryInMs,
          });
        else log.info({ event: `ratelimit_redis_${e.type}`, server: e.server });
      },
    },
  });
  let rateLimitSummary = "";
  /** The label values (store, fleet_divisor) of the mode in effect: its series is the info gauge's only one. */
  let rateLimitModeLabels: readonly [string, string] | null = null;
  /** Makes a state's limiters the serving ones; logs the mode when it changed. */
  const activateRateLimits = (s: State) => {
    limiters.activate(s.rateLimits);
    const mode = s.rateLimits.mode;
    if (mode.summary === rateLimitSummary) return;
    rateLimitSummary = mode.summary;
    // The previous mode's series goes (an info gauge shows what is in effect): kept at 0, every past mode
    // took a child until the cap folded the serving one into store="__overflow__" (after 8 changes).
    if (rateLimitModeLabels !== null) mRateLimitMode.remove("gateway", ...rateLimitModeLabels);
    rateLimitModeLabels = [mode.store, String(mode.fleetDivisor)];
    mRateLimitMode.labels("gateway", ...rateLimitModeLabels).set(1);
    log.info(
      {
        event: "ratelimit_mode",
        store: mode.store,
        fleetDivisor: mode.fleetDivisor,
        workers: mode.workers,
        routes: mode.routes.length,
      },
      mode.summary,
    );
  };

  const cacheMetrics = registerCacheMetrics(metrics, "gateway");
  /** The cache for a config: the previous one while the store settings are the same. */
  function cacheFor(config: GatewayRuntimeConfig, previous: State | undefined): HttpCache {
    if (previous && JSON.stringify(previous.config.cacheStore) === JSON.stringify(config.cacheStore)) {
      previous.cache.sendTimeoutMs = config.limits.idleTimeoutMs;
      return previous.cache;
    }
    const sc = config.cacheStore;
    const store =
      sc.kind === "redis"
        ? redisCacheStore(sc, config)
        : new MemoryStore({ maxBytes: sc.maxBytes, onEvict: cacheMetrics.evicted });
    cacheMetrics.watch(store);
    cacheMetrics.available(true);
    // Only a process-local store needs invalidations relayed; a shared Redis store saw them already.
    const relay = sc.kind === "memory" ? options.onCacheInvalidate : undefined;
    const cache = new HttpCache({
      store,
      observer: cacheMetrics.observer,
      ...(relay !== undefined ? { onInvalidate: relay } : {}),
      // A stored body the client stops reading is cut at the send timeout, as a forwarded one is.
      onSendTimeout: () =>
        log.warn({ event: "send_timeout", source: "cache", timeoutMs: cache.sendTimeoutMs }),
    });
    cache.sendTimeoutMs = config.limits.idleTimeoutMs;
    return cache;
  }
  /** A Redis store with its own client; its outages are logged once each (never the URL's password). */
  function redisCacheStore(
    sc: Extract<GatewayRuntimeConfig["cacheStore"], { kind: "redis" }>,
    config: GatewayRuntimeConfig,
  ): RedisStore {
    let loadScripts = () => {};
    const client = new RedisClient({
      url: sc.url,
      commandTimeoutMs: Math.max(1, sc.timeoutMs),
      connectTimeoutMs: Math.max(1000, sc.timeoutMs),
      onEvent: (e) => {
        if (e.type === "ready") loadScripts();
      },
    });
    const server = client.target.server;
    const store = new RedisStore({
      client,
      maxBytes: sc.maxBytes,
      prefix: redisCachePrefix(config.mesh, config.namespace),
      ...(sc.localMaxBytes > 0
        ? {
            local: {
              maxBytes: sc.localMaxBytes,
              subscriber: (onMessage) =>
                new RedisClient({
                  url: sc.url,
                  // Off the request path: a ping may take longer than a lookup before the layer goes off.
                  commandTimeoutMs: Math.max(500, sc.timeoutMs),
                  connectTimeoutMs: Math.max(1000, sc.timeoutMs),
                  onMessage,
                }),
            },
          }
        : {}),
      observer: {
        local: (on, error) => {
          if (error !== undefined)
            log.warn(
              { event: "cache_local_layer", server, on, error: error.message },
              "Redis refused client tracking: every cache lookup is a round trip (gateway.cache.redis.localSize: 0B turns the layer off)",
            );
          else log.info({ event: "cache_local_layer", server, on });
        },
        evicted: cacheMetrics.evicted,
        unavailable: (e) => {
          cacheMetrics.available(false);
          log.warn(
            { event: "cache_store_unavailable", server, error: e.message },
            "the Redis cache store does not answer: requests go to the origin until it is back",
          );
        },
        recovered: () => {
          cacheMetrics.available(true);
          log.info({ event: "cache_store_recovered", server }, "the Redis cache store answers again");
        },
        replyError: (e) => log.warn({ event: "cache_store_error", server, error: e.message }),
        damaged: () => cacheMetrics.observer.storeError("damaged"),
      },
    });
    loadScripts = () => void store.loadScripts();
    void client.connect().catch(() => {}); // a failure shows as misses and one cache_store_unavailable
    log.info({
      event: "cache_store",
      kind: "redis",
      server,
      prefix: store.prefix,
      maxBytes: sc.maxBytes,
      timeoutMs: sc.timeoutMs,
      localMaxBytes: sc.localMaxBytes,
    });
    const large = config.routes.filter(
      (r) => r.cache !== null && r.cache.maxEntryBytes > store.maxEntryBytes,
    );
    if (large.length > 0)
      log.warn(
        { event: "cache_store", routes: large.map((r) => r.name), maxEntryBytes: store.maxEntryBytes },
        "responses larger than gateway.cache.maxSize / 16 are not stored in Redis: raise maxSize or lower these routes' maxEntrySize",
      );
    return store;
  }
  /** Stores replaced by a reload: closed once requests that started before it had time to finish. */
  const retiredStores = new Set<CacheStore>();
  const retireStore = (store: CacheStore, graceMs: number) => {
    retiredStores.add(store);
    setTimeout(() => {
      if (retiredStores.delete(store)) void store.close?.();
    }, graceMs).unref();
  };

  // The identity metrics (certificate expiry, identity reloads) exist once the gateway is a mesh member.
  let onIdentityEvent: ReturnType<typeof identityObserver> | null = null;
  /** The identity source of `config` (started: its files loaded, or their absence reported), or none. */
  const createIdentity = async (
    config: GatewayRuntimeConfig,
    also?: (event: IdentityEvent) => void,
  ): Promise<IdentitySource | null> => {
    if (config.svid === null) return null;
    const observe = (onIdentityEvent ??= identityObserver(
      metrics,
      "gateway",
      log,
      () => identity?.current() ?? null,
    ));
    const { IdentitySource } = await import("../pki/identity.ts"); // loads the PKI only for a mesh member
    const source = new IdentitySource(config.svid, {
      expectedId: config.identity,
      trustDomain: config.trustDomain,
      onEvent: also
        ? (event) => {
            also(event);
            observe(event);
          }
        : observe,
    });
    await source.start();
    return source;
  };
  identity = await createIdentity(options.config);

  // ── state ──
  async function buildState(config: GatewayRuntimeConfig, previous?: State): Promise<State> {
    // First: a client certificate that cannot serve rejects the config before anything starts.
    await clientCerts.prepare(clientCertificatesOf(config));
    try {
      return await buildChecked(config, previous);
    } catch (err) {
      // The pairs only the refused config named are forgotten (no longer polled).
      if (previous) clientCerts.retain(clientCertificatesOf(previous.config).map((c) => c.files));
      throw err;
    }
  }

  async function buildChecked(config: GatewayRuntimeConfig, previous?: State): Promise<State> {
    const trustedProxies = parseTrustedProxies(config);
    const compiled = compileGateway(config);
    const rateLimits = limiters.configure(config); // throws for limits that cannot be counted exactly
    const clusters = new Map<string, UpstreamCluster>();
    try {
      return await buildRest(config, compiled, rateLimits, clusters, previous, trustedProxies);
    } catch (err) {
      // A config refused part-way leaves nothing running: its clusters stop (timers, health checks)
      // and its limiters are dropped; the serving state is untouched.
      for (const c of clusters.values()) c.close();
      limiters.discard(rateLimits);
      throw err;
    }
  }

  async function buildRest(
    config: GatewayRuntimeConfig,
    compiled: CompiledGateway,
    rateLimits: RateLimitPlan,
    clusters: Map<string, UpstreamCluster>,
    previous: State | undefined,
    trustedProxies: readonly IpRange[] | null,
  ): Promise<State> {
    for (const c of config.clusters) {
      // A backend outside the mesh: its one endpoint is its address, reached through the external pools.
      const address = c.address ?? null;
      const discovery: typeof config.discovery =
        address !== null
          ? { kind: "static", endpoints: { [c.name]: [{ host: address, port: c.port }] } }
          : config.discovery;
      const outside = address !== null || c.tls.mode === "tls";
      const cluster = new UpstreamCluster(c, discovery, outside ? externalPools : pools, {
        onError: (m) => log.warn({ event: "discovery" }, m),
        onEjection: (cl, ep) => {
          mEjections.labels("gateway", cl).inc();
          log.warn({ event: "ejected", cluster: cl, endpoint: ep });
        },
        onHealthChange: (cl, ep, healthy) => {
          mHealth.labels("gateway", cl, String(healthy)).inc();
          log.warn({ event: "health", cluster: cl, endpoint: ep, healthy });
        },
        onPanic: (cl) => mPanic.labels("gateway", cl).inc(),
      });
      await cluster.start();
      clusters.set(c.name, cluster);
    }
    const apim = compileApim(config, compiled.router.routes, clusters);
    const tls = loadTls(config);
    const cache = cacheFor(config, previous);
    const tracer = createTracer(config.telemetry, {
      onDrop: (n, reason) => mSpansDropped.labels("gateway", reason).inc(n),
    });
    let auth: Authenticator;
    try {
      auth = new Authenticator(config, { observer: authObserver, log, revokedSessions });
    } catch (err) {
      void tracer.shutdown(0);
      if (cache !== previous?.cache) {
        // The refused config's new store goes; the serving one stays watched.
        void cache.store.close?.();
        if (previous) cacheMetrics.watch(previous.cache.store);
      }
      throw err;
    }
    auth.prefetch(); // last: nothing after it can refuse the config
    const caching = config.routes.some((r) => r.cache !== null);
    const credentials = credentialHeaders(
      config.auth.apiKeys?.header,
      config.auth.jwt.map((p) => p.tokenFrom.header),
    );
    const matchHeaders = conditionHeaders(config, auth);
    const skipSets = new Map<string, ReadonlySet<string>>();
    const skips = new Map<CompiledRoute, ReadonlySet<string>>();
    for (const r of compiled.router.routes) {
      const names = auth.droppedHeaders(r.config.auth);
      const key = names.join("\n");
      let set = skipSets.get(key);
      if (set === undefined) skipSets.set(key, (set = notForwarded(names)));
      skips.set(r, set);
    }
    const withheld = new Map<string, readonly string[]>();
    for (const c of config.clusters) {
      const names = withheldHeaders(c.share, auth.ownedHeaders);
      if (names !== null) withheld.set(c.name, names);
    }
    return {
      config,
      compiled,
      clusters,
      tls,
      tracer,
      apim,
      rateLimits,
      auth,
      cache,
      caching,
      credentialHeaders: credentials,
      matchHeaders,
      notForwarded: skips,
      trustedProxies,
      withheld,
    };
  }

  let state = await buildState(options.config);
  activateRateLimits(state);
  shareRevocations(state.config);
  lifecycle.info.labels("gateway", exposedConfigHash(state.config)).set(1);
  let draining = false;
  let inFlight = 0;
  let idleWaiters: (() => void)[] = [];
  const finished = () => {
    inFlight--;
    mInFlight.dec();
    if (inFlight === 0 && idleWaiters.length) {
      for (const w of idleWaiters) w();
      idleWaiters = [];
    }
  };

  /**
   * Whether a response ends its connection: while draining, HTTP/1.1 responses say `Connection: close`
   * (clients then reconnect elsewhere); HTTP/2 has no such header (RFC 9113 §8.2.2) — its connections
   * end with the GOAWAY that closing the server sends.
   */
  const closing = (req: AnyRequest): boolean => draining && !("stream" in req);

  // ── request handling ──
  function respondError(
    req: AnyRequest,
    res: Response,
    status: number,
    code: GatewayErrorCode,
    message: string,
    extra?: Record<string, string>,
  ): void {
    mErrors.labels("gateway", code).inc();
    // An admitted request's token is spent whatever answers it: its RateLimit-* fields go with the reply.
    const limit = (res as Response & { [EXCHANGE]?: Exchange })[EXCHANGE]?.rateHeaders;
    if (limit) extra = extra === undefined ? limit : { ...limit, ...extra };
    writeLocalReply(req, res, { status, code, message, extra }, "stream" in req, closing(req));
  }

  /**
   * The end of every exchange (the response's one "close" event; `this` is the response): the client's
   * departure cancels the upstream request, the spans end, the metrics and the access log are written.
   * One function for every request, so no closure is allocated per request.
   */
  function exchangeClosed(this: Response): void {
    const ex = (this as Response & { [EXCHANGE]?: Exchange })[EXCHANGE]!;
    const res = ex.res;
    // Destroyed with an error: the upstream side failed (the pool destroys the response it streams into).
    // Closed unfinished without one: the client went away, which cancels the upstream request.
    const completed = responseCompleted(res);
    if (!completed && !res.errored) {
      ex.cancel.aborted = true;
      ex.cancel.onabort?.();
    }
    const seconds = (performance.now() - ex.started) / 1000;
    const status = closedStatus(res); // 499 when the client left before any response
    ex.span.end({ statusCode: status });
    countRequest(ex.routeName, status).duration.observe(seconds);
    if (ex.state.config.telemetry.accessLog.enabled) {
      ex.logged = { status, completed, seconds };
      // The response can close before forward() returns (its end is written by the pool): the line
      // then waits for the handler, which knows the upstream and the outcome.
      if (!ex.handling) writeAccessLog(ex);
    }
    finished();
  }

  function writeAccessLog(ex: Exchange): void {
    const l = ex.logged!;
    ex.logged = null;
    const p = ex.principal;
    const names = ex.state.matchHeaders;
    accessLog.info({
      event: "access",
      requestId: ex.requestId,
      method: ex.req.method,
      path: ex.accessPath,
      host: ex.host === undefined ? undefined : loggedAuthority(ex.host),
      route: ex.routeName,
      status: l.status,
      completed: l.completed,
      durationMs: Math.round(l.seconds * 1e6) / 1e3,
      upstream: ex.upstreamKey || undefined,
      outcome: ex.outcome || undefined,
      client: ex.client,
      // The principal's identity and grants (never a credential): what authorization decided on.
      auth: p === null ? undefined : p.mechanism === "apiKey" ? "apiKey" : `${p.mechanism}:${p.provider}`,
      subject: p?.subject || undefined,
      consumer: p?.consumer ?? undefined,
      scopes: p !== null && p.scopes.length > 0 ? p.scopes.join(" ") : undefined,
      headers: names.length > 0 ? headerValues(ex.req, names) : undefined,
    });
  }

  /** The handler returned: an access line that waited for it is written now. */
  function handled(this: Response): void {
    const ex = (this as Response & { [EXCHANGE]?: Exchange })[EXCHANGE];
    if (ex === undefined) return;
    ex.handling = false;
    if (ex.logged !== null) writeAccessLog(ex);
    // Every writer is done (or still streaming a cached or static body under its own timer): what is left
    // for the client is under the send timeout too.
    else guardSendTail(this, ex.state.config.limits.idleTimeoutMs, () => sendTailTimedOut(ex));
  }

  function sendTailTimedOut(ex: Exchange): void {
    log.warn({
      event: "send_timeout",
      source: "response_end",
      requestId: ex.requestId,
      route: ex.routeName,
      timeoutMs: ex.state.config.limits.idleTimeoutMs,
    });
  }

  async function handle(req: AnyRequest, res: Response, scheme: "http" | "https"): Promise<void> {
    const current = state;
    const peer = peerAddress(req);
    const { client, trusted, forwardedFor, viaTrustedProxy } = requestClientAddress(
      req.headers,
      peer,
      current.config.clientIp,
      current.trustedProxies,
    );
    const ex = new Exchange(current, req, res, requestId(req.headers["x-request-id"], randomUUID), client);
    (res as Response & { [EXCHANGE]?: Exchange })[EXCHANGE] = ex;
    res.on("close", exchangeClosed);
    useTargetAuthority(req);
    const overH2 = "stream" in req;
    if (overH2 && (req as Http2ServerRequest).stream.destroyed) {
      // The client reset the stream (or nghttp2 did: a Content-Length its DATA contradicted) in the bytes
      // that carried its HEADERS: Node still emits the request, whose body then "ends" empty and whose
      // session (the client's address) is gone. Nothing is decided or forwarded for it.
      ex.outcome = "client_aborted";
      return;
    }
    // HTTP/2 carries the host in :authority, which is the target's authority when present (the compat API
    // also shows a Host header when one was sent; one that differs is refused below).
    const h2Authority = overH2 ? (req.headers[":authority"] as string | undefined) : undefined;
    const authority = h2Authority ?? req.headers.host;
    if (
      !overH2 &&
      (req.httpVersionMajor !== 1 || (req.httpVersionMinor !== 0 && req.httpVersionMinor !== 1))
    ) {
      noKeepAlive(res);
      return respondError(
        req,
        res,
        505,
        "http_version_not_supported",
        `HTTP/${req.httpVersion} is not supported`,
      );
    }
    if (hostContradictsAuthority(h2Authority, req.headers.host))
      return respondError(req, res, 400, "bad_host", "the Host header differs from :authority");
    const headerProblem = checkRequestHeaders(req.rawHeaders, req.httpVersionMinor, req.httpVersionMajor);
    if (headerProblem) {
      noKeepAlive(res);
      return respondError(req, res, 400, headerProblem.code, headerProblem.detail);
    }
    ex.host = authority;
    const d = decide(current.compiled, ex);
    const span = (ex.span = current.tracer.startServerSpan(
      req.headers.traceparent,
      req.headers.tracestate,
      d.kind === "route"
        ? {
            method: ex.method,
            path: d.path,
            scheme,
            route: d.route.source,
            meshgateRoute: d.route.name,
            serverAddress: d.host,
            peerAddress: peer,
          }
        : { method: ex.method, path: "", scheme, peerAddress: peer },
    ));
    if (d.kind === "reject") {
      ex.accessPath = d.code === "bad_request_target" ? "" : loggedTarget(req.url ?? "");
      ex.outcome = d.code;
      return respondError(
        req,
        res,
        d.status,
        d.code,
        d.detail,
        d.allow.length ? { allow: d.allow.join(", ") } : undefined,
      );
    }
    const routeName = (ex.routeName = d.route.name);
    ex.accessPath = d.path;
    const ap = current.apim.get(d.route);
    const origin = corsOrigin(ap, req);
    if (d.preflight) return answerPreflight(apimHost, req, res, ap!);
    if (ap?.cors) presetCorsHeaders(ap, origin, res);

    // Authentication and authorization (filter steps 4 and 5); public routes without client ranges skip both.
    let principal: Principal | null = null;
    if (!d.auth.public || d.auth.clientIps.length) {
      const facts = new RequestFacts(
        req,
        d.path,
        d.query,
        d.host,
        authority,
        scheme,
        client,
        viaTrustedProxy,
      );
      const admitted = current.auth.admit(routeName, d.auth, facts);
      const verdict = admitted instanceof Promise ? await admitted : admitted;
      if (verdict.kind !== "allow") return respondAuth(req, res, ex, verdict);
      principal = ex.principal = verdict.principal;
    }
    // Transform templates read the request and the principal.
    const tctx = ap?.needsContext ? templateContext(d, req, ex.requestId, client, principal) : null;

    // Rate limit: synchronous for in-process buckets, one round trip for Redis.
    const limiter = current.rateLimits.limiters.get(routeName);
    let rateHeaders: Record<string, string> | null = null;
    if (limiter !== undefined) {
      let rl = limiter.check(
        client,
        // Qualified by mechanism and provider (a subject is unique only within its issuer: an `alice` of a
        // second issuer cannot drain the first one's bucket), and for a client certificate by its SANs;
        // built only for a limit keyed by subject.
        limiter.keyKind === "subject" ? principalId(principal) || undefined : undefined,
        principal?.consumer ?? undefined,
        limiter.header === null
          ? undefined
          : // An identity header (x-meshgate-*, a forwardClaims header) counts what the upstream gets.
            current.auth.ownedHeaders.has(limiter.header)
            ? current.auth.identityHeaderValue(limiter.header, principal)
            : req.headers[limiter.header],
      );
      if (rl instanceof Promise) rl = await rl;
      rateHeaders = rateLimitHeaders(limiter.policy, rl);
      if (!rl.allowed) {
        if (rl.storeError !== null)
          return respondError(req, res, 503, "ratelimit_unavailable", "the rate-limit store is unavailable", {
            "retry-after": "1",
          });
        mLimited.labels("gateway", routeName).inc();
        return respondError(req, res, 429, "rate_limited", `the rate limit of route ${routeName} is spent`, {
          ...rateHeaders,
          "retry-after": String(retryAfterSeconds(rl)),
        });
      }
      if (rl.storeError !== null) mFailOpen.labels("gateway", routeName).inc();
      else {
        ex.rateHeaders = rateHeaders;
        if (d.action.kind !== "forward") for (const k in rateHeaders) res.setHeader(k, rateHeaders[k]!);
      }
    }

    const declared = req.headers["content-length"];
    const limit = d.route.config.limits.maxBodyBytes;
    if (declared !== undefined && Number(declared) > limit) {
      noKeepAlive(res);
      return respondError(req, res, 413, "body_too_large", `the request body exceeds ${limit} bytes`);
    }

    const fault = d.route.config.fault;
    if (fault?.abort && Math.random() * 100 < fault.abort.percent) {
      mFaults.labels("gateway", routeName, "abort").inc();
      return respondError(
        req,
        res,
        fault.abort.status,
        "fault_injected",
        "fault injected by the route's fault rule",
      );
    }
    if (fault?.delay && Math.random() * 100 < fault.delay.percent) {
      mFaults.labels("gateway", routeName, "delay").inc();
      await sleep(fault.delay.ms);
    }

    switch (d.action.kind) {
      case "redirect":
        return redirect(res, scheme, d, current.auth.upstreamPath(d.auth, d.upstreamPath));
      case "static":
        ex.outcome = await serveStaticRoute(apimHost, req, res, d, ap!, origin, tctx);
        return;
      case "aggregate": {
        const baseHeaders: Record<string, string | string[]> = {
          "x-forwarded-for": forwardedFor,
          "x-forwarded-proto": scheme,
          ...(authority ? { "x-forwarded-host": authority, host: authority } : {}),
          forwarded: forwardedHeader(trusted, peer, scheme, authority),
          "x-real-ip": client,
          "x-request-id": ex.requestId,
        };
        ex.outcome = await aggregateRoute(apimHost, req, res, d, ap!, origin, tctx, {
          baseHeaders,
          // The parts see the same authenticated principal as a forwarded request would, and no more of
          // the client's credentials: applied after each part's forwardHeaders copy.
          authHeaders: (h) => current.auth.upstreamHeaders(h, d.auth, principal),
          hashKey: client,
          span,
          tracer: current.tracer,
          cancel: ex.cancel,
          meshIdentityReady: identity?.ready() === true,
        });
        return;
      }
      case "forward":
        break;
    }

    const backend = chooseBackend(d.action.backends);
    const cluster = current.clusters.get(backend);
    if (!cluster) return respondError(req, res, 503, "no_cluster", `cluster ${backend} is not configured`);
    if (cluster.config.tls.mode === "mtls" && !identity?.ready()) {
      // mTLS to the mesh needs the gateway's own valid identity (svid): fail closed without one.
      ex.outcome = "no_identity";
      return respondError(
        req,
        res,
        503,
        "upstream_identity_unavailable",
        "mTLS to the mesh needs a workload identity",
      );
    }

    // The request headers as the upstream gets them, built once when first needed: the cache selects
    // variants by them (a Vary names what the upstream saw — X-Real-IP, a header a transform set from
    // another one — not what the client sent), and they are forwarded.
    let built: Record<string, string | string[]> | null = null;
    const forwardedHeaders = (): Record<string, string | string[]> => {
      if (built !== null) return built;
      const headers = (built = upstreamRequestHeaders(
        req.headers,
        current.notForwarded.get(d.route) ?? NOT_FORWARDED,
        OWN_PREFIX,
      ));
      current.auth.upstreamHeaders(headers, d.auth, principal);
      headers["x-forwarded-for"] = forwardedFor;
      headers["x-forwarded-proto"] = scheme;
      if (authority) headers["x-forwarded-host"] = authority;
      headers.forwarded = forwardedHeader(trusted, peer, scheme, authority);
      headers["x-real-ip"] = client;
      if (overH2 && authority && !headers.host) headers.host = authority;
      headers["x-request-id"] = ex.requestId;
      // rewrite.host, else a backend outside the mesh's own name (its authority), else the client's Host.
      const upstreamHost = d.upstreamHost ?? cluster.config.authority ?? null;
      if (upstreamHost !== null) headers.host = upstreamHost;
      const withheld = current.withheld.get(backend);
      if (withheld !== undefined) for (const name of withheld) delete headers[name];
      if (ap) {
        transformRequestHeaders(ap, headers, tctx);
        prepareForResponseTransform(ap, headers);
      }
      return headers;
    };

    // Cache lookup (GET/HEAD on a route with `cache`): a hit answers here; a miss may wait for a fill.
    let cacheExchange: CacheExchange | null = null;
    let revalidation: CacheExchange | null = null;
    const method = req.method ?? "GET";
    if (d.route.config.cache !== null && (method === "GET" || method === "HEAD")) {
      let c = current.cache.lookup({
        route: routeName,
        config: d.route.config.cache,
        method,
        host: d.host,
        path: d.path,
        // Without the route's query-parameter credentials (a JWT in `?access_token=`), as the upstream gets it.
        query: current.auth.credentialFreeQuery(d.auth, d.query),
        headers: req.headers,
        principal: principalId(principal),
        waitMs: d.timeoutMs,
        credentialHeaders: current.credentialHeaders,
        // HTTP/2 frames a body without Content-Length (a HEADERS frame that does not end the stream); a
        // declared empty one (content-length: 0, which nghttp2 holds the DATA frames to) is none.
        hasBody:
          overH2 &&
          !(req as Http2ServerRequest).stream.endAfterHeaders &&
          req.headers["content-length"] !== "0",
        // What the upstream is told of scheme and authority (X-Forwarded-Proto, Host, X-Forwarded-Host).
        origin: `${scheme}://${authority ?? ""}`,
        forwardedHeaders,
        // A body transform reshapes what the cache holds: no byte range of the stored body answers.
        ignoreRange: (ap?.response?.body ?? null) !== null,
      });
      if (c instanceof Promise) {
        c = await c;
        if (res.destroyed) {
          // The client left while waiting for another request's fill: nothing to forward for it.
          if (c.kind === "forward") c.exchange.finish();
          return;
        }
      }
      if (c.kind === "hit") {
        ex.outcome = `cache_${c.result}`;
        const extra = perResponseHeaders(rateHeaders, closing(req));
        if (!ap) current.cache.respond(c, res, extra);
        else {
          // The cache holds the upstream's response: the route's response shaping runs on hits as on misses.
          const shaper = new ResponseShaper(apimHost, ap, req, res, origin, tctx, ex.cancel);
          current.cache.respond(c, (st, h) => shaper.head(st, h), extra);
          ex.outcome = (await shaper.finish({ kind: "ok" })) ?? ex.outcome;
        }
        // A stale entry went to the client (RFC 5861 §3): the request is sent on in the background, built
        // exactly as a miss's, and its response refreshes the entry.
        if (c.revalidate === null) return;
        revalidation = c.revalidate;
      } else if (c.kind === "unsatisfiable")
        return respondError(req, res, 504, "not_cached", "only-if-cached: no stored response can answer");
      else cacheExchange = c.exchange;
    }
    const invalidates = current.caching && method !== "GET" && method !== "HEAD" && method !== "OPTIONS";

    const headers = forwardedHeaders();
    const upstreamPath = current.auth.upstreamPath(d.auth, d.upstreamPath);
    if (revalidation !== null) {
      revalidation.prepare(headers);
      return revalidateInBackground(
        revalidation,
        cluster,
        upstreamPath,
        headers,
        d.timeoutMs,
        d.retry,
        client,
      );
    }
    cacheExchange?.prepare(headers);
    // A browser's gRPC-Web call to a gRPC service is sent as the gRPC call it encodes (grpc-web.ts).
    const grpcWeb = cluster.config.protocol === "http2" ? grpcWebCall(req.headers["content-type"]) : null;
    if (grpcWeb !== null) grpcWebRequestHeaders(headers, grpcWeb);
    // A gRPC call's deadline: the client's grpc-timeout shortens the route's timeout (never extends it),
    // and the upstream is told the deadline the gateway enforces.
    const timeoutMs =
      grpcWeb !== null
        ? grpcCallTimeoutMs(req.headers, headers, d.timeoutMs)
        : forwardTimeoutMs(overH2, req.headers, headers, d.timeoutMs);
    // A gRPC call's deadline bounds the whole call, a stream that keeps sending included.
    const wholeCall = grpcWeb !== null || (overH2 && isGrpc(req.headers["content-type"]));

    // Small bodies of known length are buffered, so a retry or a mirror can replay them; larger or
    // chunked bodies stream through once (and are then never retried after they started).
    // HTTP/1 says a body comes with Content-Length or Transfer-Encoding; HTTP/2 with a HEADERS frame that
    // did not end the stream (gRPC bodies carry neither header).
    const hasBody = overH2
      ? !(req as Http2ServerRequest).stream.endAfterHeaders
      : declared !== undefined
        ? declared !== "0"
        : req.headers["transfer-encoding"] !== undefined;
    let body: Buffer | NodeJS.ReadableStream | null = null;
    const transformed =
      hasBody && ap?.request?.body ? await transformRequestBody(ap, req, headers, limit, tctx) : null;
    if (transformed !== null && transformed.kind !== "untouched") {
      if (transformed.kind === "aborted") return void res.destroy();
      if (transformed.kind === "error") {
        noKeepAlive(res);
        return respondError(req, res, transformed.status, transformed.code, transformed.message);
      }
      body = transformed.body;
    } else if (hasBody && grpcWeb?.mode === "text") {
      // The base64 form is read whole and checked before anything is sent (grpc-web.ts).
      let text: Buffer;
      try {
        text = await readBody(req, limit);
      } catch (err) {
        noKeepAlive(res);
        if ((err as { code?: string }).code === "E_BODY_TOO_LARGE")
          return respondError(req, res, 413, "body_too_large", `the request body exceeds ${limit} bytes`);
        return void res.destroy();
      }
      const decoded = decodeGrpcWebText(text);
      if (decoded === null)
        return respondError(req, res, 400, "bad_grpc_web_body", "the gRPC-Web text body is not base64");
      body = decoded;
    } else if (hasBody) {
      const mirror = d.action.mirror !== null;
      if (
        declared !== undefined &&
        Number(declared) <= REPLAY_BUFFER_BYTES &&
        (d.retry.attempts > 0 || mirror)
      ) {
        try {
          body = await readBody(req, limit);
        } catch (err) {
          noKeepAlive(res);
          if ((err as { code?: string }).code === "E_BODY_TOO_LARGE") {
            return respondError(req, res, 413, "body_too_large", `the request body exceeds ${limit} bytes`);
          }
          res.destroy();
          return;
        }
      } else {
        body = limitBody(req, limit);
      }
    }

    const mirror = d.action.mirror;
    if (mirror && (body === null || Buffer.isBuffer(body)) && Math.random() * 100 < mirror.percent) {
      const shadow = current.clusters.get(mirror.cluster);
      if (shadow)
        mirrorRequest(
          shadow,
          req.method ?? "GET",
          upstreamPath,
          headers,
          body,
          d.timeoutMs,
          client,
          current.tracer,
          span,
        );
    }

    // A HEAD the cache fills is sent as a GET (CacheExchange.upstreamMethod).
    const upstreamMethod = cacheExchange?.upstreamMethod ?? method;
    const upstreamSpan = current.tracer.startClientSpan(span, {
      method: upstreamMethod,
      upstream: backend,
    });
    setTraceHeaders(headers, upstreamSpan);
    // The client leaving cancels the upstream request (exchangeClosed); the failure is then the client's.
    // Header-only response shaping (transform headers, CORS) is done in place on the head; a body
    // transform, a size limit or a cache fill (which hands the head on later) needs the shaper.
    const shaper =
      ap !== undefined && (ap.shapesBody || cacheExchange !== null)
        ? new ResponseShaper(apimHost, ap, req, res, origin, tctx, ex.cancel)
        : null;
    // The callee's sidecar refused the request (403 with its x-meshgate-denied code): the access line says
    // so (`denied_mesh_<code>`), not `success` — replay reads the line as the refusal it was.
    let meshDenied = null as string | null; // set by the head callback (`as`: not narrowed to null)
    const result = await forward(
      cluster,
      {
        cancel: ex.cancel,
        method: upstreamMethod,
        path: upstreamPath,
        headers,
        body,
        timeoutMs,
        wholeCall,
        // nginx's send_timeout: a response the client stops reading for the idle timeout is cut.
        sendTimeoutMs: current.config.limits.idleTimeoutMs,
        retry: d.retry,
        hashKey: client,
        // Headers the route removes need not be parsed when nothing else reads the upstream's head.
        dropResponseHeaders: shaper === null && !invalidates ? (ap?.dropResponseHeaders ?? null) : null,
      },
      (status, upstreamHeaders, closeDelimited, trailersOnly) => {
        if (status === 403 && cluster.config.tls.mode === "mtls")
          meshDenied = inboundDenyCodeOf(upstreamHeaders["x-meshgate-denied"]);
        if (invalidates)
          void current.cache.invalidate(
            method,
            status,
            d.host,
            d.path,
            current.auth.credentialFreeQuery(d.auth, d.query),
            upstreamHeaders,
          );
        if (cacheExchange !== null)
          return cacheExchange.onHead(
            status,
            upstreamHeaders,
            shaper ? (st, h) => shaper.head(st, h) : res,
            !closeDelimited,
            perResponseHeaders(rateHeaders, closing(req)),
          );
        // The pools hand on end-to-end headers only (H1Pool strips hop-by-hop ones; HTTP/2 has none).
        // An answer that is not gRPC (an error page) keeps its own body: nothing to encode or frame.
        const webBody = grpcWeb !== null && grpcWebResponseHeaders(upstreamHeaders, grpcWeb);
        if (rateHeaders !== null) Object.assign(upstreamHeaders, rateHeaders); // the gateway's limit, not an upstream's
        if (shaper === null && ap !== undefined) decorateResponse(ap, origin, upstreamHeaders, tctx);
        if (trailersOnly && overH2 && !shaper) {
          // gRPC's trailers-only answer stays one HEADERS frame with END_STREAM (what gRPC clients need).
          const rest = respondTrailersOnly(res, status, upstreamHeaders);
          if (rest !== null) return rest;
        }
        if (draining && !overH2) upstreamHeaders.connection = "close";
        const target = shaper ? shaper.head(status, upstreamHeaders) : res.writeHead(status, upstreamHeaders);
        // gRPC-Web: the body in the browser's form, the trailers as its last frame.
        return webBody ? new GrpcWebResponse(target, grpcWeb.mode) : target;
      },
      observer,
    );
    // RFC 5861 §4: no response from upstream (refused, timed out, reset, no endpoint, breaker open) is
    // answered with the stored response when it allows that (an upstream 5xx is handled in onHead).
    if (
      cacheExchange !== null &&
      result.kind === "error" &&
      !result.headersSent &&
      !res.headersSent &&
      result.outcome !== "client_aborted" &&
      result.outcome !== "body_too_large"
    ) {
      const target: ResponseTarget = shaper ? (st, h) => shaper.head(st, h) : res;
      cacheExchange.serveStaleOnError(target, perResponseHeaders(rateHeaders, closing(req)), null);
    }
    cacheExchange?.finish();
    const upstreamKey = (ex.upstreamKey = result.endpoint?.key ?? "");
    if (upstreamKey) upstreamSpan.setAttribute("server.address", upstreamKey);
    if (result.attempts > 1) upstreamSpan.setAttribute("http.request.resend_count", result.attempts - 1);
    upstreamSpan.end(
      result.kind === "ok"
        ? { statusCode: result.status }
        : { error: result.error ?? new Error(result.outcome), errorType: result.outcome },
    );
    if (cacheExchange?.servedStale) {
      ex.outcome = (shaper ? await shaper.finish({ kind: "ok" }) : null) ?? "cache_stale_if_error";
      return;
    }
    const shaped = shaper ? await shaper.finish(result) : null;
    if (shaped !== null) {
      ex.outcome = shaped;
      return;
    }
    if (result.kind === "ok") {
      ex.outcome =
        meshDenied !== null
          ? `denied_mesh_${meshDenied}`
          : result.attempts > 1
            ? `success_after_${result.attempts - 1}_retries`
            : "success";
      return;
    }
    ex.outcome = result.outcome;
    if (result.outcome === "body_too_large" && !result.headersSent) {
      noKeepAlive(res);
      return respondError(req, res, 413, "body_too_large", `the request body exceeds ${limit} bytes`);
    }
    if ((result.headersSent && res.headersSent) || result.outcome === "client_aborted") {
      // The response started (never present a truncated body as complete), or the client left: reset.
      if (result.outcome === "send_timeout")
        log.warn({
          event: "send_timeout",
          requestId: ex.requestId,
          route: routeName,
          upstream: upstreamKey || undefined,
          timeoutMs: current.config.limits.idleTimeoutMs,
        });
      res.destroy(result.error ?? undefined);
      return;
    }
    const [status, code] = upstreamFailure(result.outcome);
    if (logsUpstreamFailure(result.outcome))
      log.warn({
        event: "upstream_error",
        requestId: ex.requestId,
        route: routeName,
        upstream: upstreamKey || undefined,
        outcome: result.outcome,
        attempts: result.attempts,
        code: result.error ? (result.error as { code?: string }).code : undefined,
      });
    respondError(req, res, status, code, `upstream ${backend}: ${result.outcome.replaceAll("_", " ")}`);
  }

  /**
   * Forwards a cache revalidation with no client waiting (RFC 5861 §3): a GET with the headers a miss
   * would have sent, its own cancel token (the client's exchange is over), the route's timeout and retry
   * plan; its response goes to the cache only. Failures leave the stored entry as it was.
   */
  function revalidateInBackground(
    revalidation: CacheExchange,
    cluster: UpstreamCluster,
    path: string,
    headers: Record<string, string | string[]>,
    timeoutMs: number,
    retry: RouteDecision["retry"],
    hashKey: string,
  ): void {
    void forward(
      cluster,
      {
        cancel: { aborted: false, onabort: null },
        method: "GET",
        path,
        headers,
        body: null,
        timeoutMs,
        retry,
        hashKey,
      },
      (status, upstreamHeaders, closeDelimited) =>
        revalidation.onHead(status, upstreamHeaders, REVALIDATION_TARGET, !closeDelimited),
      observer,
    )
      .then(
        (result) => {
          if (result.kind === "error" && logsUpstreamFailure(result.outcome))
            log.warn({
              event: "cache_revalidation_error",
              route: revalidation.request.route,
              outcome: result.outcome,
              attempts: result.attempts,
            });
        },
        // No client waits on it: a defect here is logged, never an unhandled rejection (which ends the process).
        (err: Error) =>
          log.error({
            event: "cache_revalidation_error",
            route: revalidation.request.route,
            message: err.message,
            stack: err.stack,
          }),
      )
      .finally(() => revalidation.finish());
  }

  /** Writes what authentication decided instead of forwarding: a deny, or a response (OIDC redirects). */
  function respondAuth(
    req: AnyRequest,
    res: Response,
    ex: Exchange,
    verdict: Exclude<AdmitResult, { kind: "allow" }>,
  ) {
    if (verdict.kind === "deny") {
      ex.outcome = `denied_${verdict.requirement}`;
      ex.principal = verdict.principal ?? null;
      if (verdict.reconnect) endConnectionAfter(req, res);
      return respondError(req, res, verdict.status, verdict.code, verdict.reason, verdict.headers);
    }
    ex.outcome = verdict.event;
    const headers: OutgoingHttpHeaders = {
      ...verdict.headers,
      "content-length": Buffer.byteLength(verdict.body),
    };
    if (closing(req)) headers.connection = "close";
    res.writeHead(verdict.status, headers);
    res.end(req.method === "HEAD" ? undefined : verdict.body);
  }

  /** A copy of the request to the mirror cluster: fire and forget, response discarded, never awaited. */
  function mirrorRequest(
    shadow: UpstreamCluster,
    method: string,
    path: string,
    headers: Record<string, string | string[]>,
    body: Buffer | null,
    timeoutMs: number,
    hashKey: string,
    tracer: Tracer,
    parent: SpanLike,
  ): void {
    const endpoint = shadow.pick(hashKey, Date.now());
    if (!endpoint) {
      mMirrors.labels("gateway", shadow.config.name, "no_endpoint").inc();
      return;
    }
    // A copy counts against the shadow cluster's circuit breaker like any request (as Envoy's shadowing
    // does): the pool's queue has no bound of its own, so a slow shadow would otherwise hold a copy — its
    // body included — of every request the route receives, and the service's own callers would wait
    // behind them in that queue. A copy beyond the limits is dropped, never waited for.
    const cb = shadow.config.circuitBreaker;
    if (shadow.active >= cb.maxRequests || endpoint.inFlight >= cb.maxConnections + cb.maxPendingRequests) {
      mMirrors.labels("gateway", shadow.config.name, "overflow").inc();
      return;
    }
    shadow.active++;
    endpoint.inFlight++;
    const host = typeof headers.host === "string" ? `${headers.host.replace(/:\d+$/, "")}-shadow` : undefined;
    const copy: Record<string, string | string[]> = {
      ...headers,
      ...(host ? { host } : {}),
      "x-meshgate-mirror": "1",
    };
    // The copy is an upstream request of its own: a CLIENT span under the request's server span, whose
    // context it carries (not the caller's headers as received), as the primary request's attempt does.
    const mirrorSpan = tracer.startClientSpan(parent, {
      method,
      upstream: shadow.config.name,
      serverAddress: endpoint.key,
    });
    setTraceHeaders(copy, mirrorSpan);
    endpoint.pool
      .request({
        method,
        path,
        headers: copy,
        body,
        headersTimeout: timeoutMs,
        totalTimeout: timeoutMs,
        bodyTimeout: timeoutMs,
      })
      .then(async (r) => {
        await r.body.dump();
        mirrorSpan.end({ statusCode: r.statusCode });
        mMirrors.labels("gateway", shadow.config.name, r.statusCode >= 500 ? "5xx" : "success").inc();
      })
      .catch((err: unknown) => {
        mirrorSpan.end({ error: err });
        mMirrors.labels("gateway", shadow.config.name, "failure").inc();
      })
      .finally(() => {
        shadow.active--;
        endpoint.inFlight--;
      });
  }

  function onRequest(req: AnyRequest, anyRes: AnyResponse, scheme: "http" | "https"): void {
    const res = anyRes as Response;
    inFlight++;
    mInFlight.inc();
    handle(req, res, scheme)
      .catch((err: Error) => {
        log.error({ event: "handler_error", message: err.message, stack: err.stack });
        if (!res.headersSent) respondError(req, res, 500, "internal_error", "internal gateway error");
        else res.destroy(err);
      })
      .then(handled.bind(res));
  }

  const upgrades: UpgradeObserver = {
    tunnels: new Set(),
    done: (route, status, code) => {
      countRequest(route, status);
      if (code === "rate_limited") mLimited.labels("gateway", route).inc();
      if (code) mErrors.labels("gateway", code).inc();
    },
    failOpen: (route) => mFailOpen.labels("gateway", route).inc(),
  };

  // ── listeners ──
  // Live listeners by name, each an acceptor (the bound socket) and its connection stack. A reload that
  // adds a listener or moves one to another port binds it before the config is accepted, and retires
  // removed and moved-away ones (stop accepting, drain) once it serves; one that keeps its port but
  // changes how it serves gets a new stack on the same socket (runtime/net/acceptor.ts).
  const listeners = new Map<string, Acceptor<ListenerStack>>();
  /** Retired listeners whose connections are still draining. */
  const retired = new Set<Acceptor<ListenerStack>>();
  const listenerPorts: Record<string, number> = {};
  const proxyRefusalLogged = new Map<string, number>();
  /**
   * When the client-certificate CAs change, the https listeners take new session-ticket keys: a client
   * resuming a TLS session made before would carry OpenSSL's verdict of then (`authorized`), given under
   * CAs that may no longer hold (a new handshake verifies against the CAs of now).
   */
  const clientCasChanged = (before: LoadedTls, after: LoadedTls) => {
    if (sameSet(before.clientCas, after.clientCas)) return;
    for (const l of listeners.values()) l.stack.rotateTicketKeys?.();
  };
  /**
   * Reads the listener certificates and the client-certificate CA files again (the config unchanged):
   * all or none — an unreadable file throws, naming it, and the ones in use stay.
   */
  const refreshCertificates = () => {
    const tls = loadTls(state.config);
    // The client-certificate CAs too: a connection verified under one removed since is checked again.
    state.auth.reloadClientCerts();
    const before = state.tls;
    state = { ...state, tls };
    clientCasChanged(before, tls);
  };
  /**
   * Certificate files are checked every `certificatePollMs` (1 s): a Secret renewed in place (Kubernetes
   * swaps the mounted files; cert-manager renews before expiry) is served without a reload or a restart.
   * A rotation that cannot be read yet (a file half-written, a key not matching) is logged and tried again
   * at the next change; the certificates in use keep serving.
   */
  let certificateCheckFailed = "";
  const checkCertificates = () => {
    if (draining) return;
    const stamp = fileStamp(state.tls.files);
    if (stamp === state.tls.stamp || stamp === certificateCheckFailed) return;
    try {
      refreshCertificates();
      certificateCheckFailed = "";
      log.info({ event: "certificates_reloaded" });
    } catch (err) {
      certificateCheckFailed = stamp;
      log.warn({ event: "certificates_reload_failed", error: (err as Error).message });
    }
  };
  /** Builds the connection stack of one listener of `config` (no socket: an acceptor hands it connections). */
  const buildStack = (l: GatewayRuntimeConfig["listeners"][number], config: GatewayRuntimeConfig) => {
    const stack = createListener(
      l,
      config.limits,
      onRequest,
      () => state.tls.certificates.get(l.name) ?? null,
      (_server, err, socket) => {
        // A client that resets or times out its own connection is not a parse error.
        if (err.code === "ECONNRESET" || err.code === "EPIPE") {
          socket.destroy();
          return;
        }
        // A response that closes the connection was already written for this request (e.g. a refused
        // Transfer-Encoding): the parser's later complaint about the same bytes gets no second response.
        if ((socket as Socket & { _httpMessage?: { headersSent?: boolean } })._httpMessage?.headersSent) {
          socket.destroy();
          return;
        }
        const status =
          err.code === "HPE_HEADER_OVERFLOW" ? 431 : err.code === "ERR_HTTP_REQUEST_TIMEOUT" ? 408 : 400;
        mErrors.labels("gateway", `parse_${status}`).inc();
        if (socket.writable && !socket.destroyed) {
          const reason = http.STATUS_CODES[status] ?? "Bad Request";
          socket.end(`HTTP/1.1 ${status} ${reason}\r\nconnection: close\r\ncontent-length: 0\r\n\r\n`);
        } else socket.destroy();
      },
      config.auth.clientCert.length > 0,
      (reason) => {
        mProxyRefused.labels("gateway", l.name).inc();
        // One line per listener and 10 s at most: whoever floods the port does not flood the log.
        const now = Date.now();
        if (now - (proxyRefusalLogged.get(l.name) ?? 0) < 10_000) return;
        proxyRefusalLogged.set(l.name, now);
        log.warn({ event: "proxy_protocol_refused", listener: l.name, reason });
      },
    );
    stack.http1?.on("upgrade", (req: http.IncomingMessage, socket: Socket, head: Buffer) => {
      if (draining) {
        socket.destroy();
        return;
      }
      handleUpgrade(
        state,
        req,
        socket,
        head,
        l.protocol === "https" ? "https" : "http",
        upgrades,
        randomUUID,
        identity === null ? null : connectMtls,
        { lookup: externalLookup, clientCertificates: clientCerts },
      );
    });
    return stack;
  };
  /** Creates and binds one listener of `config` (SO_REUSEPORT in a worker, so the workers share it). */
  const openListener = async (
    l: GatewayRuntimeConfig["listeners"][number],
    config: GatewayRuntimeConfig,
    port: number,
  ): Promise<Acceptor<ListenerStack>> => {
    const listener = createAcceptor(buildStack(l, config));
    listener.server.maxConnections = config.limits.maxConnections;
    await listen(listener.server, port, bindHost, options.reusePort === true);
    return listener;
  };
  for (const l of state.config.listeners) {
    const port = options.ports?.listeners?.[l.name] ?? l.port;
    const listener = await openListener(l, state.config, port);
    listenerPorts[l.name] = (listener.server.address() as AddressInfo).port;
    listeners.set(l.name, listener);
  }

  /** What a reload changes in the listeners: sockets bound for it, and new stacks for kept sockets. */
  interface ListenerSwap extends PreparedSwap<Acceptor<ListenerStack>, ListenerChanges> {
    readonly stacks: ReadonlyMap<string, ListenerStack>;
  }
  /**
   * Binds the listeners `next` adds (on their port, or a start-time override naming them) and moves (on
   * their new port), and builds the new stacks of those it rebuilds in place. Throws naming the listener
   * when one cannot be bound, having closed those it opened.
   */
  const prepareListeners = async (next: GatewayRuntimeConfig): Promise<ListenerSwap> => {
    const serving = new Set(state.config.listeners.map((l) => l.name));
    const changes = gatewayListenerChanges(state.config, next);
    const listenerOf = (name: string) => next.listeners.find((x) => x.name === name)!;
    const stacks = new Map(changes.rebuilt.map((name) => [name, buildStack(listenerOf(name), next)]));
    try {
      const swap = await openChanged(
        changes,
        (name) => {
          const l = listenerOf(name);
          const port = serving.has(name) ? l.port : (options.ports?.listeners?.[name] ?? l.port);
          return openListener(l, next, port);
        },
        (name) => `listeners.${name}`,
      );
      return { ...swap, stacks };
    } catch (err) {
      for (const s of stacks.values()) discardStack(s);
      throw err;
    }
  };
  /** Closes what a reload that does not serve (refused or aborted) prepared. */
  const discardListeners = (swap: ListenerSwap) => {
    for (const l of swap.opened.values()) closeUnused(l);
    for (const s of swap.stacks.values()) discardStack(s);
  };
  /** Swaps a reload's listeners in: the new ones serve, the old stop accepting and drain. */
  const swapIn = (swap: ListenerSwap, next: GatewayRuntimeConfig) => {
    const drainMs = next.limits.drainTimeoutMs;
    swapListeners(listeners, listenerPorts, retired, swap.retire, swap.opened, drainMs);
    for (const [name, stack] of swap.stacks) listeners.get(name)?.use(stack, drainMs);
    for (const l of listeners.values()) l.server.maxConnections = next.limits.maxConnections;
    const { added, removed, moved, rebuilt, settings } = swap.changes;
    if (added.length + removed.length + moved.length + rebuilt.length > 0)
      log.info({
        event: "listeners_changed",
        added,
        removed,
        moved,
        rebuilt,
        settings,
        listeners: listenerPorts,
      });
  };

  // ── admin ──
  const admin = createAdminServer({
    ready: () => !draining && (identity === null || identity.ready()),
    metrics: () => metrics.render(),
    config: () => redactConfig(state.config),
    reload: () => reload().then((r) => exposedReloadResult(r, state.config)),
    purge: (request) => state.cache.purge(request),
    hosts: () => state.config.admin.hosts,
  });
  let adminPort = 0;
  if (options.admin !== false) {
    await listen(admin, options.ports?.admin ?? state.config.admin.port, bindHost, false);
    adminPort = (admin.address() as AddressInfo).port;
  }
  log.info({
    event: "started",
    listeners: listenerPorts,
    admin: adminPort,
    hash: exposedConfigHash(state.config),
  });

  // ── reload and drain ──
  /**
   * Stops what a built state started that the serving one does not use (a config refused or aborted
   * after it was built): clusters (health checks, discovery), its tracer, authenticator and limiters, a
   * new cache store, and the pools only it used.
   */
  const discardState = (built: State) => {
    for (const c of built.clusters.values()) c.close();
    void built.tracer.shutdown(0);
    built.auth.close();
    limiters.discard(built.rateLimits);
    if (built.cache !== state.cache) {
      void built.cache.store.close?.();
      cacheMetrics.watch(state.cache.store);
    }
    keepPools(state);
  };
  /** Closes the pools and forgets the client certificates no cluster of `serving` uses. */
  const keepPools = (serving: State) => {
    const keep = new Set([...serving.clusters.values()].flatMap((c) => c.poolKeys()));
    void pools.retain(keep);
    void externalPools.retain(keep);
    clientCerts.retain(clientCertificatesOf(serving.config).map((c) => c.files));
  };
  /** A reload's new identity source (svid, identity or trustDomain changed), or none to swap in. */
  type IdentitySwap = { readonly source: IdentitySource | null } | null;
  const reload = createReloader<
    GatewayRuntimeConfig,
    { state: State; listeners: ListenerSwap; identity: IdentitySwap }
  >({
    proxy: "gateway",
    ...(options.configPath ? { configPath: options.configPath } : {}),
    metrics: lifecycle,
    log,
    current: () => state.config,
    load: (text) => loadRuntimeConfig(text, "gateway"),
    // Same config: certificate files may still have been rotated in place (Kubernetes Secrets).
    unchanged: async () => {
      refreshCertificates();
      await clientCerts.refresh();
    },
    check: (current, next) => refuseRestartFields("gateway", restartFields(current, next)),
    build: async (next) => {
      const built = await buildState(next, state);
      let listeners: ListenerSwap;
      try {
        listeners = await prepareListeners(next);
      } catch (err) {
        discardState(built);
        throw err;
      }
      // New identity files, or another identity: a new source, started now (its files loaded, or their
      // absence reported: mTLS clusters then fail closed, as at start); the old one serves until the swap.
      const refused: { last: { code: string; message: string } | null } = { last: null };
      const swap: IdentitySwap = identityChanged(state.config, next)
        ? {
            source: await createIdentity(next, (e) => {
              if (e.kind === "rejected") refused.last = e;
            }),
          }
        : null;
      // Other identity files that hold no valid identity while the serving one is valid: the reload is
      // refused, as the sidecar's is — swapping a working identity for none would fail every mTLS
      // cluster. (Leaving the mesh, svid null, is a reload like any other.)
      if (swap?.source && !swap.source.ready() && identity?.ready()) {
        swap.source.close();
        discardState(built);
        discardListeners(listeners);
        const why = refused.last;
        throw new Error(
          `svid: the new identity files hold no valid identity for ${next.identity}` +
            (why ? ` (${why.code}: ${why.message})` : "") +
            "; the current identity keeps serving",
        );
      }
      return { state: built, listeners, identity: swap };
    },
    buildFailed: () => limiters.discardPending(),
    // A built config that is not swapped in (a worker's prepared reload the primary aborted) stops what
    // it started, and the listeners it opened close.
    discard: (built) => {
      discardState(built.state);
      discardListeners(built.listeners);
      built.identity?.source?.close();
    },
    commit: (next, { state: built, listeners: swap, identity: newIdentity }) => {
      const previous = state;
      inheritClusterState(previous.clusters.values(), built.clusters.values());
      state = built; // the atomic swap: new requests see the new state, in-flight ones keep theirs
      swapIn(swap, next);
      clientCasChanged(previous.tls, built.tls);
      if (newIdentity) {
        // New mTLS connections present the new SVID; pooled ones keep the one they were made with.
        identity?.close();
        identity = newIdentity.source;
        log.info({ event: "identity_changed", identity: next.svid === null ? null : next.identity });
      }
      activateRateLimits(built);
      shareRevocations(built.config);
      for (const c of previous.clusters.values()) c.close();
      void previous.tracer.shutdown(2000);
      previous.auth.close();
      if (previous.cache !== built.cache) retireStore(previous.cache.store, next.limits.drainTimeoutMs);
      keepPools(built);
    },
  });

  async function drain(): Promise<void> {
    if (draining) return;
    draining = true;
    clearInterval(certificateTimer);
    log.info({ event: "draining", inFlight });
    const drainMs = state.config.limits.drainTimeoutMs;
    const deadline = Date.now() + drainMs;
    await retireForDrain([...listeners.values()], [...retired], drainMs);
    if (inFlight > 0) {
      await Promise.race([
        new Promise<void>((r) => idleWaiters.push(r)),
        sleep(Math.max(0, deadline - Date.now())),
      ]);
    }
    for (const l of [...listeners.values(), ...retired]) l.closeAll();
    for (const t of upgrades.tunnels) t.destroy();
    if (admin.listening) {
      admin.close();
      admin.closeAllConnections();
    }
    for (const c of state.clusters.values()) c.close();
    identity?.close();
    await state.tracer.shutdown(2000);
    state.auth.close();
    await pools.closeAll();
    await externalPools.closeAll();
    clientCerts.close();
    await limiters.close();
    await shared?.sync.close();
    await Promise.all([state.cache.store, ...retiredStores].map((s) => s.close?.()));
    retiredStores.clear();
    stopProcessMetrics();
    log.info({ event: "stopped" });
  }

  const certificateTimer = setInterval(checkCertificates, options.certificatePollMs ?? 1000);
  certificateTimer.unref();

  return {
    ports: { listeners: listenerPorts, admin: adminPort },
    metrics,
    currentHash: () => state.config.hash,
    reload,
    prepareReload: (text) => reload.prepare(text),
    drain,
    purge: (request) => state.cache.purge(request),
    invalidateCached: (host, urls) => state.cache.dropUrls(host, urls),
    revokeSessions: (entries) => revokedSessions.apply(entries, Date.now()),
  };
}

/** The client certificates a config's clusters present, with where the config names each. */
function clientCertificatesOf(
  config: GatewayRuntimeConfig,
): { files: ClientCertificateFiles; field: string }[] {
  return config.clusters.flatMap((c, i) =>
    c.tls.mode === "tls" && c.tls.clientCertificate
      ? [{ files: c.tls.clientCertificate, field: `clusters[${i}].tls.clientCertificate` }]
      : [],
  );
}

/** `clientIp.trustedProxies` parsed once per config (matched per request); throws naming a bad range. */
function parseTrustedProxies(config: GatewayRuntimeConfig): readonly IpRange[] | null {
  const list = config.clientIp.trustedProxies;
  if (list === undefined) return null;
  return list.map((text, i) => {
    const range = parseCidr(text);
    if (range === null)
      throw new RuntimeConfigError(
        "E_RT_CONFIG_INVALID",
        `${JSON.stringify(text)} is not a CIDR range; write one like "10.0.0.0/16"`,
        `clientIp.trustedProxies[${i}]`,
      );
    return range;
  });
}

/** What a config's TLS was read as: the listeners' certificates, the client CAs, and the files. */
interface LoadedTls {
  /** By listener name (https listeners). */
  readonly certificates: ReadonlyMap<string, CertificateSet>;
  /** Fingerprints of the client-certificate CAs every https listener verifies against (null: none). */
  readonly clientCas: ReadonlySet<string> | null;
  /** Listener certificates and keys, client-certificate CA files: what the periodic check watches. */
  readonly files: readonly string[];
  /** The files as they were just before they were read (fileStamp). */
  readonly stamp: string;
}

function loadTls(config: GatewayRuntimeConfig): LoadedTls {
  const files: string[] = [];
  for (const l of config.listeners)
    for (const c of l.tls?.certificates ?? []) files.push(c.certFile, c.keyFile);
  for (const p of config.auth.clientCert) files.push(p.caFile);
  // Stamped before reading: a file replaced while it is read is read again at the next check.
  const stamp = fileStamp(files);
  const clientCa = clientCertTlsOptions(config.auth.clientCert)?.ca ?? null;
  // One set for every listener: the client CAs each connection's handshake is verified against.
  const clientCas = clientCa ? caFingerprints(clientCa) : null;
  const certificates = new Map<string, CertificateSet>();
  for (const l of config.listeners)
    if (l.protocol === "https") certificates.set(l.name, loadCertificates(l, clientCa, clientCas));
  return { certificates, clientCas, files, stamp };
}

/**
 * What identifies the files' contents cheaply: inode, size and modification time of each (stat follows
 * symlinks, so Kubernetes' swap of its `..data` link changes the inode); a missing file counts too.
 */
function fileStamp(files: readonly string[]): string {
  let stamp = "";
  for (const f of files) {
    try {
      const s = statSync(f);
      stamp += `${f}:${s.ino}:${s.size}:${s.mtimeMs}\n`;
    } catch {
      stamp += `${f}:missing\n`;
    }
  }
  return stamp;
}

function sameSet(a: ReadonlySet<string> | null, b: ReadonlySet<string> | null): boolean {
  if (a === b) return true;
  if (a === null || b === null || a.size !== b.size) return false;
  for (const x of a) if (!b.has(x)) return false;
  return true;
}

/** Headers of one response that a cache never stores: the gateway's RateLimit-*, and Connection: close. */
function perResponseHeaders(
  rateHeaders: Record<string, string> | null,
  draining: boolean,
): Record<string, string> | undefined {
  if (!draining) return rateHeaders ?? undefined;
  return { ...rateHeaders, connection: "close" };
}

function noKeepAlive(res: Response): void {
  if ("shouldKeepAlive" in res) res.shouldKeepAlive = false;
}

/**
 * The connection ends once this answer is written: HTTP/1.1 with `Connection: close`, HTTP/2 with GOAWAY
 * (the session's other streams finish; the client opens a new connection for the next ones).
 */
function endConnectionAfter(req: AnyRequest, res: Response): void {
  if ("stream" in req) req.stream.session?.close();
  else noKeepAlive(res);
}

function listen(server: net.Server, port: number, host: string, reusePort: boolean): Promise<void> {
  return new Promise((resolve, reject) => {
    const onError = (err: Error & { code?: string }) => {
      reject(err.code === "EADDRINUSE" ? new Error(`port ${port} on ${host} is already in use`) : err);
    };
    server.once("error", onError);
    server.listen({ port, host, reusePort }, () => {
      server.off("error", onError);
      resolve();
    });
  });
}

/** Bodies up to this size are buffered when a retry or a mirror may need to replay them. */
const REPLAY_BUFFER_BYTES = 64 * 1024;

/**
 * Answers a redirect route. `pathAndQuery` is decide()'s upstreamPath (the canonical path, or the redirect
 * path with the captured {params}, and the query) without the route's query-parameter credentials: a
 * token read from `?access_token=` must not travel on to the Location's host, or into browser history.
 */
function redirect(res: Response, scheme: "http" | "https", d: RouteDecision, pathAndQuery: string): void {
  if (d.action.kind !== "redirect") return;
  const a = d.action;
  const target = a.scheme ?? scheme;
  const host = a.host ?? d.host;
  const defaultPort = (target === "https" && a.port === 443) || (target === "http" && a.port === 80);
  const port = a.port !== null && !defaultPort ? `:${a.port}` : "";
  // Built from the canonical path (never the raw target), so "//evil.example" cannot become the authority.
  res.writeHead(a.status, {
    location: `${target}://${host}${port}${pathAndQuery}`,
    "content-length": 0,
  });
  res.end();
}

/**
 * The headers route conditions read, lower-case, without credential headers (Authorization, Cookie, the
 * API-key header, a JWT provider's token header): they may go to access lines — with their values
 * REDACTED when the name is credential-like (a service-checked `x-api-key`).
 */
function conditionHeaders(
  config: GatewayRuntimeConfig,
  auth: Authenticator,
): (readonly [name: string, redacted: boolean])[] {
  const secret = new Set(["authorization", "proxy-authorization", "cookie", ...auth.ownedHeaders]);
  if (config.auth.apiKeys) secret.add(config.auth.apiKeys.header.toLowerCase());
  for (const p of config.auth.jwt) secret.add(p.tokenFrom.header.toLowerCase());
  const names = new Set<string>();
  for (const r of config.routes)
    for (const h of r.match.headers) if (!secret.has(h.name.toLowerCase())) names.add(h.name.toLowerCase());
  return [...names].sort().map((n) => [n, credentialHeaderName(n)] as const);
}

/**
 * The values of the named request headers that are present (first value, at most 256 characters;
 * REDACTED for a credential-like name: present, never its value).
 */
function headerValues(
  req: AnyRequest,
  names: readonly (readonly [name: string, redacted: boolean])[],
): Record<string, string> | undefined {
  let out: Record<string, string> | undefined;
  for (const [n, redacted] of names) {
    const v = req.headers[n];
    const first = Array.isArray(v) ? v[0] : v;
    if (typeof first === "string") (out ??= {})[n] = redacted ? REDACTED : first.slice(0, 256);
  }
  return out;
}
