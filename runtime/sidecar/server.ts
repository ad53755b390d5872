/**
 * The sidecar proxy: one per workload, next to the app.
 *
 * - **Inbound** (`inbound.port`, all interfaces): mTLS 1.3 with a required client certificate (strict;
 *   permissive also takes plaintext on the same port), the peer's SPIFFE ID verified by the PKI's SVID
 *   verifier (the connection retired when the peer's chain expires or the bundle drops its root),
 *   authorization by decideInbound() (deny by default; 403 + `x-meshgate-denied`), the service's
 *   inbound limits (431 / 413 / 408), then the request goes to the app on 127.0.0.1:`appPort` through the
 *   shared upstream code, with `x-meshgate-peer` and `x-forwarded-client-cert` set by the sidecar.
 * - **Outbound** (`outbound.port` and each service's `localPort`, 127.0.0.1 only): the app's plain HTTP
 *   request to a declared service (decideOutbound), forwarded with the cluster's load balancing, per-try
 *   and total timeouts, safe retries within the budget and outlier ejection (forward()), over mTLS with
 *   this workload's SVID to a server that must prove the destination's SPIFFE ID.
 * - **Egress** (egress.ts): `CONNECT host:port` on the proxy port and a TCP port per external with a
 *   `localPort` tunnel to the destinations outside the mesh the config declares (`outbound.external`),
 *   and to nothing else (deny by default).
 * - **Admin** (`admin.port`): /live, /ready (a valid identity is loaded and not draining), /metrics,
 *   /config (redacted), POST /reload.
 *
 * - **Protocols**: HTTP/1.1 and HTTP/2 on every port (inbound: ALPN h2 over mTLS, h2c in permissive mode;
 *   outbound: h2c with prior knowledge), HTTP/2 streams checked like HTTP/1 requests; gRPC refusals as
 *   trailers-only answers with a mapped grpc-status (upstream/grpc.ts); WebSocket upgrades tunnelled (upgrade.ts).
 *
 * The identity hot-reloads from files (IdentitySource); a config reload compiles a whole new state and
 * swaps one reference, as the gateway does; SIGTERM drains.
 */
import { createReloader, type ReloadResult } from "../contract/reload.ts";
import { createAcceptor, discardStack, type Acceptor } from "../net/acceptor.ts";
import {
  closeUnused,
  openChanged,
  retireForDrain,
  swapListeners,
  type PreparedSwap,
  type SwappableListener,
} from "../net/swap.ts";
import {
  identityChanged,
  refuseRestartFields,
  restartFields,
  sidecarListenerChanges,
  sidecarExternalPortChanges,
  sidecarLocalPortChanges,
  type LocalPortChanges,
  type PortChanges,
  type SidecarListenerChanges,
} from "../contract/restart.ts";
import { guardSendTail } from "../net/send-timeout.ts";
import { limitBody, readBody } from "../upstream/body.ts";
import { randomUUID } from "node:crypto";
import http, { type IncomingMessage, type ServerResponse } from "node:http";
import type { Http2ServerRequest } from "node:http2";
import net from "node:net";
import type { AddressInfo, Socket } from "node:net";
import { setTimeout as sleep } from "node:timers/promises";
import pino, { type Logger } from "pino";
import { loadRuntimeConfig } from "../contract/load.ts";
import type { Cluster, RetryPlan, SidecarRuntimeConfig } from "../contract/schema.ts";
import { isPatternHost } from "../decide/external.ts";
import { compileInbound, decideInbound, type CompiledInbound } from "../decide/inbound.ts";
import {
  compileOutbound,
  decideOutbound,
  type CompiledOutbound,
  type OutboundExternal,
  type OutboundRejectCode,
} from "../decide/outbound.ts";
import { createAdminServer } from "../gateway/admin.ts";
import { redactSidecarConfig } from "../gateway/redact.ts";
import { exposedConfigHash, exposedReloadResult } from "../contract/exposed-hash.ts";
import { egressLookup } from "../net/lookup.ts";
import {
  checkRequestHeaders,
  hostContradictsAuthority,
  requestId,
  upstreamRequestHeaders,
} from "../net/headers.ts";
import {
  IdentitySource,
  type IdentityEvent,
  type IdentityReload,
  type LoadedIdentity,
} from "../pki/identity.ts";
import { peerChain } from "../pki/tls.ts";
import {
  MetricsRegistry,
  registerAccessLogDropped,
  registerLifecycleMetrics,
  registerProcessMetrics,
  registerUpstreamMetrics,
  type CounterChild,
  type HistogramChild,
} from "../telemetry/metrics.ts";
import { observedClientCertificates } from "../telemetry/client-cert.ts";
import { identityObserver } from "../telemetry/identity.ts";
import { loggedTarget } from "../telemetry/logs.ts";
import {
  createTracer,
  NOOP_SPAN,
  setTraceHeaders,
  type SpanLike,
  type Tracer,
} from "../telemetry/tracing.ts";
import { inheritClusterState, PoolCache, UpstreamCluster } from "../upstream/cluster.ts";
import { forward, type ForwardObserver, type ForwardResult } from "../upstream/forward.ts";
import type { CancelToken } from "../upstream/h1pool.ts";
import { respondTrailersOnly } from "../upstream/h2pool.ts";
import { mtlsConnector, originateConnector } from "../upstream/tls.ts";
import type { ClientCertificateFiles } from "../upstream/client-cert.ts";
import type { SidecarErrorCode } from "./errors.ts";
import {
  compileExternals,
  Egress,
  sameTransport,
  type CompiledExternals,
  type EgressScope,
  type External,
  type ExternalListener,
} from "./egress.ts";
import { NOT_FORWARDED, PEER_HEADER, XFCC_HEADER, xfccValue } from "./headers.ts";
import { isWebSocketUpgrade, openTunnel, refuseUpgrade } from "./upgrade.ts";
import { forwardTimeoutMs, isGrpc, parseGrpcTimeout } from "../upstream/grpc.ts";
import {
  closedStatus,
  logsUpstreamFailure,
  responseCompleted,
  upstreamFailure,
  writeLocalReply,
} from "../net/reply.ts";
import { peerAddress } from "../net/sniff.ts";
import { upgradeHandshake } from "../net/upgrade.ts";
import {
  createInboundListener,
  createLocalListener,
  type InboundListener,
  type LocalListener,
  type InboundRequest,
  type InboundResponse,
} from "./listeners.ts";

export interface SidecarOptions {
  /** A loaded, validated config (loadRuntimeConfig). */
  config: SidecarRuntimeConfig;
  /** The file reload() reads. */
  configPath?: string;
  /** Address of the inbound and admin listeners; default "0.0.0.0". Outbound ports bind 127.0.0.1 only. */
  host?: string;
  /**
   * Port overrides (0 = any free port). `services`: per-service local ports by service name; `external`:
   * the local ports of externals by name.
   */
  ports?: {
    inbound?: number;
    outbound?: number;
    admin?: number;
    services?: Record<string, number>;
    external?: Record<string, number>;
  };
  logger?: Logger;
  /** Where access lines go (default `logger`); the process entry passes a buffered one (telemetry/logs.ts). */
  accessLogger?: Logger;
  /** Access lines the buffered logger dropped so far (telemetry/logs.ts: a stalled stdout); counted in metrics. */
  accessLogDropped?: () => number;
  /** How often the identity files are stat()ed besides fs.watch (default 1000 ms). */
  identityPollMs?: number;
  /** Close inbound keep-alive connections after this many requests (0 = never, the default). */
  maxRequestsPerSocket?: number;
  /** In-flight requests get this long to finish on drain (default 30 s). */
  drainTimeoutMs?: number;
  /**
   * How long a response may stay blocked on a client that reads none of it, while it is forwarded and
   * after the app's part ended (default 60 s, nginx's send_timeout).
   */
  sendTimeoutMs?: number;
  /**
   * Resolves the names of external destinations (plain HTTP, tunnels, local ports); default
   * net/lookup.ts egressLookup, which refuses loopback, link-local and unspecified answers.
   */
  externalLookup?: net.LookupFunction;
}

export type { ReloadResult } from "../contract/reload.ts";

export interface SidecarHandle {
  readonly ports: {
    inbound: number;
    outbound: number;
    admin: number;
    services: Record<string, number>;
    /** The local ports of externals, by name. */
    external: Record<string, number>;
  };
  readonly metrics: MetricsRegistry;
  /** A valid identity is loaded and the sidecar is not draining. */
  ready(): boolean;
  /** The identity serving now. */
  identity(): LoadedIdentity | null;
  currentHash(): string;
  /** Validates and swaps in a new config (from `text`, or re-read from configPath), and re-reads the identity. */
  reload(text?: string): Promise<ReloadResult>;
  /** Re-reads the identity files now. */
  reloadIdentity(): Promise<IdentityReload>;
  /** Stops accepting, finishes in-flight requests (up to the drain timeout), then closes everything. */
  drain(): Promise<void>;
}

/** A WebSocket tunnel with no byte in either direction for this long is closed. */
const TUNNEL_IDLE_MS = 300_000;
/** The inbound forward's total time: the callers' (shorter) timeouts end an exchange first. */
const INBOUND_TIMEOUT_MS = 300_000;
/**
 * How long a response may stay blocked on a client that reads none of it (nginx's send_timeout, 60 s by
 * default; the gateway's is its idle timeout): the exchange is then reset and the app's request cancelled.
 */
const SEND_TIMEOUT_MS = 60_000;
/** Bodies up to this size are buffered when a retry may need to replay them. */
const REPLAY_BUFFER_BYTES = 64 * 1024;
const NO_RETRY: RetryPlan = Object.freeze({
  attempts: 0,
  perTryTimeoutMs: 0,
  retryOn: [],
  backoff: Object.freeze({ baseMs: 0, maxMs: 0 }),
}) as RetryPlan;
/** Metric label of a peer that no allow rule names, and of a plaintext request. */
const OTHER_PEER = "other";
const NO_PEER = "none";

interface State {
  readonly config: SidecarRuntimeConfig;
  readonly inbound: CompiledInbound;
  readonly outbound: CompiledOutbound;
  /** Destination clusters by name. */
  readonly clusters: ReadonlyMap<string, UpstreamCluster>;
  /** The local app. */
  readonly app: UpstreamCluster;
  readonly tracer: Tracer;
  /** Destinations outside the mesh (`outbound.external`), as egress tunnels are opened under. */
  readonly egress: EgressScope;
  /** The same destinations as clusters, by name, for plain-HTTP requests forwarded to them. */
  readonly externals: ReadonlyMap<string, UpstreamCluster>;
  /**
   * Clusters of the names (or addresses) reached under wildcard (or range) externals, made on first use
   * (by external and host), least recently used first; at most MAX_WILDCARD_HOSTS.
   */
  readonly wildcardHosts: Map<string, UpstreamCluster>;
  /** The peers whose principal headers reach the app (inbound.principalHeaders.from). */
  readonly principalFrom: ReadonlySet<string>;
  /** NOT_FORWARDED and the principal headers: what the app is not sent of any other caller's headers. */
  readonly notForwardedUntrusted: ReadonlySet<string>;
}

/**
 * The caller's headers the app is not sent: hop-by-hop and sidecar-owned ones, and — unless the verified
 * peer may assert an end user (the gateway) — the principal headers, which a plaintext caller or any
 * other service could otherwise forge (`x-meshgate-subject: admin`).
 */
function inboundNotForwarded(s: State, peer: PeerInfo | null): ReadonlySet<string> {
  return peer !== null && s.principalFrom.has(peer.id) ? NOT_FORWARDED : s.notForwardedUntrusted;
}

/** Does an external reach its destinations the same way under two configs (transport, connect timeout)? */
const sameExternal = (a: External, b: External): boolean =>
  sameTransport(a, b) && a.connectTimeoutMs === b.connectTimeoutMs;

/** The most names under wildcard externals a state keeps a cluster (and a pool of connections) for. */
const MAX_WILDCARD_HOSTS = 256;

/** Whether the app's request has a body to forward (HTTP/2: the stream did not end with its headers). */
function requestHasBody(ex: Exchange): boolean {
  const req = ex.req;
  if (ex.h2) return !(req as unknown as Http2ServerRequest).stream.endAfterHeaders;
  const declared = req.headers["content-length"];
  return declared !== undefined ? declared !== "0" : req.headers["transfer-encoding"] !== undefined;
}

/** Every cluster a state started: destinations, externals and the app (closed together). */
const stateClusters = (s: State): UpstreamCluster[] => [
  ...s.clusters.values(),
  ...s.externals.values(),
  ...s.wildcardHosts.values(),
  s.app,
];

/** What the inbound side learned about a verified peer, kept on its TLS socket. */
interface PeerInfo {
  readonly id: string;
  readonly label: string;
  readonly xfcc: string;
}
const PEER = Symbol("meshgate.peer");
type PeerSocket = Socket & { [PEER]?: PeerInfo };
const EXCHANGE = Symbol("meshgate.exchange");

type Direction = "inbound" | "outbound";

/** One request, from arrival to the response's close (no per-request closures). */
class Exchange {
  readonly state: State;
  readonly direction: Direction;
  /** HTTP/2 requests and responses (the compat API) are handled through the API both share. */
  readonly req: IncomingMessage;
  readonly res: ServerResponse;
  /** The request came over HTTP/2 (a stream of a session). */
  readonly h2: boolean;
  readonly started = performance.now();
  readonly requestId: string;
  /** Metric label: the peer (inbound) or the destination service (outbound). */
  peer: string;
  /** Inbound: the caller's verified SPIFFE ID (null over plaintext), for the access line. */
  peerId: string | null = null;
  /** Over mTLS: inbound, the caller's connection; outbound, the connection to the destination's sidecar. */
  mtls: boolean;
  accessPath = "";
  /** Outbound to an external destination: the name or address connected to (for the access line). */
  accessHost = "";
  rule = "";
  outcome = "";
  upstreamKey = "";
  span: SpanLike = NOOP_SPAN;
  readonly cancel: CancelToken = { aborted: false, onabort: null };

  constructor(
    state: State,
    direction: Direction,
    req: IncomingMessage,
    res: ServerResponse,
    peer: string,
    mtls: boolean,
  ) {
    this.state = state;
    this.direction = direction;
    this.req = req;
    this.res = res;
    this.h2 = req.httpVersionMajor === 2;
    this.peer = peer;
    this.mtls = mtls;
    this.requestId = requestId(req.headers["x-request-id"], randomUUID);
  }
}

/** A WebSocket upgrade request, for its metrics and access line. */
class UpgradeRecord {
  readonly state: State;
  readonly direction: Direction;
  readonly req: IncomingMessage;
  readonly started = performance.now();
  readonly requestId: string;
  peer: string;
  peerId: string | null = null;
  mtls: boolean;
  path = "";
  /** To an external destination: the name or address connected to. */
  host = "";
  rule = "";

  constructor(state: State, direction: Direction, req: IncomingMessage, peer: string, mtls: boolean) {
    this.state = state;
    this.direction = direction;
    this.req = req;
    this.peer = peer;
    this.mtls = mtls;
    this.requestId = requestId(req.headers["x-request-id"], randomUUID);
  }
}

const CODE_CLASSES = ["1xx", "2xx", "3xx", "4xx", "5xx"] as const;
const codeClassIndex = (status: number) => Math.min(Math.max(Math.floor(status / 100), 1), 5) - 1;

/**
 * The one-endpoint clusters the sidecar makes itself (the app, an external destination): generous limits,
 * no ejection (there is nowhere else to go), no retry budget (their requests are not retried).
 */
const SINGLE_ENDPOINT = {
  loadBalancer: "round-robin",
  circuitBreaker: { maxConnections: 1024, maxPendingRequests: 1024, maxRequests: 4096 },
  outlierDetection: {
    consecutive5xx: 2 ** 31 - 1,
    intervalMs: 10_000,
    baseEjectionMs: 0,
    maxEjectedPercent: 0,
    panicThreshold: 0,
  },
  retryBudget: { ratio: 0, minPerSecond: 0 },
  healthCheck: null,
} as const satisfies Partial<Cluster>;

/** The app as an upstream cluster: one static endpoint, no TLS, never ejected (it is the only one). */
function appCluster(config: SidecarRuntimeConfig): Cluster {
  return {
    ...SINGLE_ENDPOINT,
    name: "app",
    service: config.name,
    namespace: config.namespace,
    port: config.inbound.appPort,
    // HTTP/2 services (gRPC) get h2c with prior knowledge, every stream on one session.
    protocol: config.inbound.protocol,
    connectTimeoutMs: 1000,
    tls: { mode: "none" },
  };
}

/**
 * The cluster plain-HTTP requests to an external destination are forwarded through: its one endpoint is
 * the declared host and port (a name is resolved on each connect); TLS when the sidecar originates it,
 * verified for the declared host; no retries and no ejection (one endpoint, and the app decides what
 * to repeat).
 */
function externalCluster(e: SidecarRuntimeConfig["outbound"]["external"][number], host: string): Cluster {
  return {
    ...SINGLE_ENDPOINT,
    name: e.name,
    service: e.name,
    namespace: "",
    port: e.port,
    protocol: "http1",
    connectTimeoutMs: e.connectTimeoutMs,
    // Its maxConnections bounds the pool too (requests past it queue, then overflow).
    circuitBreaker: {
      ...SINGLE_ENDPOINT.circuitBreaker,
      maxConnections: e.maxConnections ?? SINGLE_ENDPOINT.circuitBreaker.maxConnections,
    },
    tls:
      e.tls === "originate"
        ? { mode: "tls", serverName: host, ca: e.ca, clientCertificate: e.clientCertificate }
        : { mode: "none" },
  };
}

/** The client certificates a config's externals present, with where the config names each. */
function clientCertificatesOf(
  config: SidecarRuntimeConfig,
): { files: ClientCertificateFiles; field: string }[] {
  return config.outbound.external.flatMap((e, i) =>
    e.clientCertificate !== null
      ? [{ files: e.clientCertificate, field: `outbound.external[${i}].clientCertificate` }]
      : [],
  );
}

export async function startSidecar(options: SidecarOptions): Promise<SidecarHandle> {
  const log = options.logger ?? pino({ name: "meshgate-sidecar", base: { proxy: "sidecar" } });
  const accessLog = options.accessLogger ?? log;
  const bindHost = options.host ?? "0.0.0.0";
  const drainTimeoutMs = options.drainTimeoutMs ?? 30_000;
  const sendTimeoutMs = options.sendTimeoutMs ?? SEND_TIMEOUT_MS;
  /** Names of external destinations resolve through this (loopback / link-local answers refused). */
  const externalLookup = options.externalLookup ?? egressLookup;

  // ── metrics ──
  const metrics = new MetricsRegistry({ prefix: "meshgate_" });
  const stopProcessMetrics = registerProcessMetrics(metrics);
  const mRequests = metrics.counter(
    "requests_total",
    "Requests answered by the sidecar, by direction, peer (inbound: the caller's SPIFFE ID; outbound: the destination service), status class, and whether they came over mTLS.",
    ["proxy", "direction", "peer", "code_class", "mtls"],
  );
  const mDuration = metrics.histogram(
    "request_duration_seconds",
    "Time from request to response end, by direction and peer.",
    ["proxy", "direction", "peer"],
  );
  const mErrors = metrics.counter(
    "sidecar_errors_total",
    "Error responses the sidecar generated itself, by code.",
    ["proxy", "direction", "code"],
  );
  const mDenied = metrics.counter(
    "authz_denied_total",
    "Inbound requests denied by authorization, by service, peer (SPIFFE ID named by a rule, other, none) and reason.",
    ["proxy", "service", "peer", "reason"],
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
  const mHandshakes = metrics.counter(
    "tls_handshake_failures_total",
    "Inbound TLS connections refused: by OpenSSL (no_certificate, untrusted, protocol, timeout, other) or by the SVID verifier (its E_RT_PKI_* code).",
    ["proxy", "reason"],
  );
  const mHandshakesOk = metrics
    .counter("tls_handshakes_total", "Inbound mTLS connections whose peer was verified and accepted.", [
      "proxy",
    ])
    .labels("sidecar");
  const mResumed = metrics
    .counter(
      "tls_resumptions_total",
      "Inbound mTLS connections that resumed a TLS session (counted in tls_handshakes_total too; the peer's leaf is verified either way).",
      ["proxy"],
    )
    .labels("sidecar");
  const mRetired = metrics.counter(
    "tls_connections_retired_total",
    "Inbound mTLS connections retired because the peer's chain expired (expired) or a new bundle no longer holds its root (untrusted).",
    ["proxy", "reason"],
  );
  const lifecycle = registerLifecycleMetrics(metrics, "sidecar");
  const mInFlight = lifecycle.inFlight;
  const mSpansDropped = metrics.counter("trace_spans_dropped_total", "Spans not exported, by reason.", [
    "proxy",
    "reason",
  ]);
  registerAccessLogDropped(metrics, "sidecar", options.accessLogDropped);
  /** The client certificates externals present (mutual TLS), re-read when their files change. */
  const clientCerts = observedClientCertificates(
    metrics,
    "sidecar",
    log,
    () => state.config.outbound.external.map((e) => ({ external: e.name, files: e.clientCertificate })),
    options.identityPollMs,
  );
  const egress = new Egress({
    log,
    accessLog,
    metrics: {
      connections: metrics.counter(
        "egress_connections_total",
        "Connections to destinations outside the mesh (CONNECT tunnels and external local ports), by external and outcome (opened, failed).",
        ["proxy", "external", "outcome"],
      ),
      bytes: metrics.counter(
        "egress_bytes_total",
        "Bytes relayed to and from destinations outside the mesh, by external and direction (sent: app to external; received).",
        ["proxy", "external", "direction"],
      ),
      active: metrics.gauge(
        "egress_tunnels_active",
        "Tunnels to destinations outside the mesh open now, by external.",
        ["proxy", "external"],
      ),
    },
    countError: (code) => mErrors.labels("sidecar", "outbound", code).inc(),
    lookup: externalLookup,
    clientCertificates: clientCerts,
  });

  /** Request metric children by direction, peer label and mtls, looked up once. */
  const perPeer = new Map<string, { requests: (CounterChild | undefined)[]; duration: HistogramChild }>();
  const countRequest = (
    direction: Direction,
    peer: string,
    mtls: boolean,
    status: number,
    seconds: number | null,
  ) => {
    const key = `${direction}\u0000${peer}\u0000${mtls ? 1 : 0}`;
    let m = perPeer.get(key);
    if (m === undefined) {
      m = { requests: [], duration: mDuration.labels("sidecar", direction, peer) };
      perPeer.set(key, m);
    }
    const i = codeClassIndex(status);
    (m.requests[i] ??= mRequests.labels(
      "sidecar",
      direction,
      peer,
      CODE_CLASSES[i]!,
      mtls ? "true" : "false",
    )).inc();
    if (seconds !== null) m.duration.observe(seconds);
  };
  const attemptChildren = new Map<string, CounterChild>();
  const observer: ForwardObserver = {
    attempt: (cluster, outcome) => {
      const key = `${cluster}\u0000${outcome}`;
      let child = attemptChildren.get(key);
      if (child === undefined)
        attemptChildren.set(key, (child = mUpstream.labels("sidecar", cluster, outcome)));
      child.inc();
    },
    retry: (cluster, reason) => mRetries.labels("sidecar", cluster, reason).inc(),
    budgetExhausted: (cluster) => mBudget.labels("sidecar", cluster).inc(),
    overflow: (cluster) => mOverflow.labels("sidecar", cluster).inc(),
  };

  // ── identity ──
  const onIdentityEvent = identityObserver(
    metrics,
    "sidecar",
    log,
    () => identity.current(),
    (loaded) => applyIdentity(loaded),
  );
  let identity = createIdentity(options.config);
  /** The inbound listener (set once the identity source is up; a reload may move it). */
  let inbound: Acceptor<InboundListener> | null = null;
  /** Inbound and outbound listeners a reload moved away, still draining. */
  const retiredMain = new Set<SwappableListener>();
  /**
   * An identity loaded: the serving inbound stack takes it for new handshakes, and every stack whose
   * connections still serve — the serving one, those a reload rebuilt and those on a port a reload moved
   * away from, until they drain — retires the connections whose caller's root the new bundle dropped.
   */
  const applyIdentity = (loaded: Pick<LoadedIdentity, "serverOptions" | "bundle">) => {
    inbound?.forEachStack((s) => s.setIdentity(loaded.serverOptions, loaded.bundle));
    for (const l of retiredMain)
      if (isAcceptor(l)) l.forEachStack((s) => s.setIdentity(loaded.serverOptions, loaded.bundle));
  };
  function createIdentity(
    config: SidecarRuntimeConfig,
    also?: (event: IdentityEvent) => void,
  ): IdentitySource {
    return new IdentitySource(config.svid, {
      expectedId: config.identity,
      trustDomain: config.trustDomain,
      ...(options.identityPollMs !== undefined ? { pollIntervalMs: options.identityPollMs } : {}),
      onEvent: also
        ? (event) => {
            also(event);
            onIdentityEvent(event);
          }
        : onIdentityEvent,
    });
  }
  const connectMtls = mtlsConnector({ current: () => identity.current(), ready: () => identity.ready() });
  const pools = new PoolCache({ connections: 1024, mtls: connectMtls });
  /** The pools to external destinations: their names resolve through externalLookup. */
  const externalPools = new PoolCache({
    connections: 1024,
    lookup: externalLookup,
    clientCertificates: clientCerts,
  });

  /** Cluster events (ejections, health) of every state's clusters. */
  const events = {
    onError: (m: string) => log.warn({ event: "discovery" }, m),
    onEjection: (cl: string, ep: string) => {
      mEjections.labels("sidecar", cl).inc();
      log.warn({ event: "ejected", cluster: cl, endpoint: ep });
    },
    onHealthChange: (cl: string, ep: string, healthy: boolean) => {
      mHealth.labels("sidecar", cl, String(healthy)).inc();
      log.warn({ event: "health", cluster: cl, endpoint: ep, healthy });
    },
    onPanic: (cl: string) => mPanic.labels("sidecar", cl).inc(),
  };

  // ── state ──
  async function buildState(config: SidecarRuntimeConfig): Promise<State> {
    // First: a client certificate that cannot serve rejects the config before anything starts.
    await clientCerts.prepare(clientCertificatesOf(config));
    const inboundAuthz = compileInbound(config.inbound.authz, { permissive: config.mtls === "permissive" });
    const outbound = compileOutbound(config.outbound, config.namespace);
    const clusters = new Map<string, UpstreamCluster>();
    for (const s of config.outbound.services) {
      const c = config.clusters.find((x) => x.name === s.cluster);
      if (!c) throw new Error(`outbound service ${s.service}: cluster ${s.cluster} is not in clusters`);
    }
    for (const c of config.clusters) {
      const cluster = new UpstreamCluster(c, config.discovery, pools, events);
      await cluster.start();
      clusters.set(c.name, cluster);
    }
    const app = new UpstreamCluster(
      appCluster(config),
      { kind: "static", endpoints: { app: [{ host: "127.0.0.1", port: config.inbound.appPort }] } },
      pools,
      events,
    );
    await app.start();
    const tracer = createTracer(config.telemetry, {
      onDrop: (n, reason) => mSpansDropped.labels("sidecar", reason).inc(n),
    });
    const egressScope: EgressScope = {
      externals: compileExternals(config.outbound.external),
      service: config.name,
      accessLog: config.telemetry.accessLog.enabled,
    };
    const externals = new Map<string, UpstreamCluster>();
    for (const e of config.outbound.external) {
      if (isPatternHost(e.host)) continue; // a cluster per name or address reached, on first use (externalClusterOf)
      const cluster = new UpstreamCluster(
        externalCluster(e, e.host),
        { kind: "static", endpoints: { [e.name]: [{ host: e.host, port: e.port }] } },
        externalPools,
        events,
      );
      await cluster.start();
      externals.set(e.name, cluster);
    }
    return {
      config,
      inbound: inboundAuthz,
      outbound,
      clusters,
      app,
      tracer,
      egress: egressScope,
      externals,
      wildcardHosts: new Map(),
      principalFrom: new Set(config.inbound.principalHeaders.from),
      // Lower case, as Node gives header names (a hand-written config may name them otherwise).
      notForwardedUntrusted: new Set([
        ...NOT_FORWARDED,
        ...config.inbound.principalHeaders.names.map((n) => n.toLowerCase()),
      ]),
    };
  }
  const keepClientCertificates = (config: SidecarRuntimeConfig) =>
    clientCerts.retain(clientCertificatesOf(config).map((c) => c.files));

  /**
   * The cluster a plain-HTTP request (or a WebSocket) to an external goes through: the external's, or
   * under a wildcard external the one of the name the app called — made on first use, one endpoint
   * (resolved through the egress lookup), TLS verified for that name when the sidecar originates it.
   * Past MAX_WILDCARD_HOSTS names the least recently used one's cluster and idle connections go.
   */
  function externalClusterOf(s: State, d: OutboundExternal): UpstreamCluster | undefined {
    const exact = s.externals.get(d.external);
    if (exact !== undefined) return exact;
    const e = s.egress.externals.byName.get(d.external);
    if (e === undefined || !isPatternHost(e.host)) return undefined;
    const k = `${e.name}\u0000${d.destination}`;
    let c = s.wildcardHosts.get(k);
    if (c !== undefined) {
      s.wildcardHosts.delete(k); // most recently used last
      s.wildcardHosts.set(k, c);
      return c;
    }
    if (s.wildcardHosts.size >= MAX_WILDCARD_HOSTS) {
      const [oldKey, old] = s.wildcardHosts.entries().next().value!;
      s.wildcardHosts.delete(oldKey);
      old.close();
      void externalPools.release(old.poolKeys());
    }
    c = new UpstreamCluster(
      externalCluster(e, d.destination),
      { kind: "static", endpoints: { [e.name]: [{ host: d.destination, port: e.port }] } },
      externalPools,
      events,
    );
    void c.start(); // static endpoints: set before start() first awaits
    s.wildcardHosts.set(k, c);
    return c;
  }

  let state = await buildState(options.config);
  lifecycle.info.labels("sidecar", exposedConfigHash(state.config)).set(1);
  let draining = false;
  let inFlight = 0;
  let idleWaiters: (() => void)[] = [];

  /** A bounded metric label for a peer: a SPIFFE ID some rule names, or "other". */
  const peerLabel = (id: string) =>
    state.inbound.peers.has(id) || id === state.config.identity ? id : OTHER_PEER;

  // ── responses, the end of an exchange ──
  function respondError(
    ex: Exchange,
    status: number,
    code: SidecarErrorCode,
    message: string,
    extra?: Record<string, string>,
  ): void {
    mErrors.labels("sidecar", ex.direction, code).inc();
    writeLocalReply(ex.req, ex.res, { status, code, message, extra }, ex.h2, draining);
  }

  function exchangeClosed(this: InboundResponse): void {
    const ex = (this as InboundResponse & { [EXCHANGE]?: Exchange })[EXCHANGE]!;
    const res = ex.res;
    const completed = responseCompleted(res);
    if (!completed && !res.errored) {
      ex.cancel.aborted = true;
      ex.cancel.onabort?.();
    }
    const seconds = (performance.now() - ex.started) / 1000;
    // A gRPC local reply went out as 200 + grpc-status; statusCode keeps the HTTP status (writeLocalReply).
    const status = closedStatus(res); // 499 when the caller left before any response
    ex.span.end({ statusCode: status });
    countRequest(ex.direction, ex.peer, ex.mtls, status, seconds);
    if (ex.state.config.telemetry.accessLog.enabled) {
      accessLog.info({
        event: "access",
        direction: ex.direction,
        requestId: ex.requestId,
        method: ex.req.method,
        path: ex.accessPath,
        host: ex.accessHost || undefined,
        peer: ex.peer,
        peerId: ex.peerId ?? undefined,
        service: ex.state.config.name,
        mtls: ex.mtls,
        rule: ex.rule || undefined,
        status,
        completed,
        durationMs: Math.round(seconds * 1e6) / 1e3,
        upstream: ex.upstreamKey || undefined,
        outcome: ex.outcome || undefined,
      });
    }
    inFlight--;
    mInFlight.dec();
    if (inFlight === 0 && idleWaiters.length) {
      for (const w of idleWaiters) w();
      idleWaiters = [];
    }
  }

  function begin(ex: Exchange): void {
    inFlight++;
    mInFlight.inc();
    (ex.res as InboundResponse & { [EXCHANGE]?: Exchange })[EXCHANGE] = ex;
    ex.res.on("close", exchangeClosed);
  }

  /** HTTP version and header hygiene shared by both directions; false when answered. */
  function checkHead(ex: Exchange): boolean {
    const req = ex.req;
    if (
      !ex.h2 &&
      (req.httpVersionMajor !== 1 || (req.httpVersionMinor !== 0 && req.httpVersionMinor !== 1))
    ) {
      noKeepAlive(ex);
      respondError(ex, 505, "http_version_not_supported", `HTTP/${req.httpVersion} is not supported`);
      return false;
    }
    const problem = checkRequestHeaders(req.rawHeaders, req.httpVersionMinor, req.httpVersionMajor);
    if (problem) {
      noKeepAlive(ex);
      respondError(ex, 400, problem.code, problem.detail);
      return false;
    }
    if (ex.h2 && hostContradictsAuthority(req.headers[":authority"], req.headers.host)) {
      respondError(ex, 400, "bad_host", "the Host header differs from :authority");
      return false;
    }
    return true;
  }

  // ── inbound ──
  function onInbound(request: InboundRequest, response: InboundResponse, mtls: boolean): void {
    const req = request as IncomingMessage;
    const res = response as ServerResponse;
    const peerInfo = mtls ? (req.socket as PeerSocket)[PEER] : undefined;
    const ex = new Exchange(state, "inbound", req, res, peerInfo?.label ?? NO_PEER, mtls);
    ex.peerId = peerInfo?.id ?? null;
    begin(ex);
    handleInbound(ex, peerInfo ?? null).catch((err: Error) => failed(ex, err));
  }

  async function handleInbound(ex: Exchange, peer: PeerInfo | null): Promise<void> {
    const { req, res, state: current } = ex;
    if (!checkHead(ex)) return;
    const config = current.config;
    // HTTP/1's parser enforces the head limit; an HTTP/2 header list is measured here (RFC 9113 §6.5.2).
    if (ex.h2 && headerListSize(req.rawHeaders) > config.inbound.limits.maxHeaderBytes)
      return respondError(
        ex,
        431,
        "headers_too_large",
        `the request headers exceed ${config.inbound.limits.maxHeaderBytes} bytes`,
      );
    const d = decideInbound(current.inbound, {
      peer: peer?.id ?? null,
      method: req.method ?? "GET",
      target: req.url ?? "",
      host: ex.h2 ? authorityOf(req) : req.headers.host,
    });
    const span = (ex.span = current.tracer.startServerSpan(req.headers.traceparent, req.headers.tracestate, {
      method: req.method ?? "GET",
      path: d.kind === "allow" ? d.path : "",
      scheme: ex.mtls ? "https" : "http",
      ...(d.kind === "allow" ? { meshgateRoute: d.source } : {}),
      peerAddress: peerAddress(req),
      attributes: { "meshgate.direction": "inbound", ...(peer ? { "meshgate.peer": peer.id } : {}) },
    }));
    if (d.kind === "deny") {
      ex.accessPath = d.code === "bad_request_target" ? "" : loggedTarget(req.url ?? "");
      ex.outcome = `denied_${d.code}`;
      if (d.status === 403) {
        mDenied.labels("sidecar", config.name, ex.peer, d.code).inc();
        return respondError(ex, 403, "authz_denied", d.detail, { "x-meshgate-denied": d.code });
      }
      return respondError(ex, 400, d.code === "bad_host" ? "bad_host" : "bad_request_target", d.detail);
    }
    ex.accessPath = d.path;
    ex.rule = d.source;

    const limit = config.inbound.limits.maxBodyBytes;
    const declared = req.headers["content-length"];
    if (declared !== undefined && Number(declared) > limit) {
      noKeepAlive(ex);
      return respondError(ex, 413, "body_too_large", `the request body exceeds ${limit} bytes`);
    }
    const headers = upstreamRequestHeaders(req.headers, inboundNotForwarded(current, peer));
    headers["x-request-id"] = ex.requestId; // the caller's (when well-formed) or a new one, as logged
    if (peer !== null) {
      headers[PEER_HEADER] = peer.id;
      headers[XFCC_HEADER] = peer.xfcc;
    }
    if (ex.h2) headers.host = authorityOf(req)!;
    const hasBody = ex.h2
      ? !(req as unknown as Http2ServerRequest).stream.endAfterHeaders
      : declared !== undefined
        ? declared !== "0"
        : req.headers["transfer-encoding"] !== undefined;
    const body = hasBody ? limitBody(req, limit) : null;
    const upstreamSpan = current.tracer.startClientSpan(span, {
      method: req.method ?? "GET",
      upstream: "app",
    });
    setTraceHeaders(headers, upstreamSpan);
    const inboundDeadline =
      ex.h2 && isGrpc(req.headers["content-type"])
        ? parseGrpcTimeout(req.headers["grpc-timeout"] as string | undefined)
        : undefined;
    const result = await forward(
      current.app,
      {
        cancel: ex.cancel,
        method: req.method ?? "GET",
        path: d.upstreamTarget,
        headers,
        body,
        // A gRPC caller's deadline (grpc-timeout, forwarded as it is) ends the exchange at the app too,
        // a stream that keeps sending included.
        timeoutMs: Math.min(INBOUND_TIMEOUT_MS, inboundDeadline ?? INBOUND_TIMEOUT_MS),
        wholeCall: inboundDeadline !== undefined,
        sendTimeoutMs,
        retry: NO_RETRY,
        hashKey: "",
      },
      (status, upstreamHeaders, _closeDelimited, trailersOnly) => {
        // The pools hand on end-to-end headers only (H1Pool strips hop-by-hop ones).
        if (ex.h2) {
          if (trailersOnly) return respondTrailersOnly(res, status, upstreamHeaders) ?? res;
        } else if (draining) upstreamHeaders.connection = "close";
        res.writeHead(status, upstreamHeaders);
        return res;
      },
      observer,
    );
    finishForward(ex, result, upstreamSpan, "app", limit);
  }

  // ── outbound ──
  function onOutbound(request: InboundRequest, response: InboundResponse, service: string | null): void {
    const req = request as IncomingMessage;
    const res = response as ServerResponse;
    const ex = new Exchange(state, "outbound", req, res, service ?? NO_PEER, true);
    begin(ex);
    handleOutbound(ex, service).catch((err: Error) => failed(ex, err));
  }

  async function handleOutbound(ex: Exchange, service: string | null): Promise<void> {
    const { req, res, state: current } = ex;
    if (!checkHead(ex)) return;
    const method = req.method ?? "GET";
    const d = decideOutbound(current.outbound, {
      method,
      target: req.url ?? "",
      host: ex.h2 ? authorityOf(req) : req.headers.host,
      service,
      origin: req.headers.origin,
      fetchSite: req.headers["sec-fetch-site"] as string | undefined,
    });
    const span = (ex.span = current.tracer.startServerSpan(req.headers.traceparent, req.headers.tracestate, {
      method,
      path: d.kind === "reject" ? "" : d.path,
      scheme: "http",
      ...(d.kind === "route" && d.route !== null ? { meshgateRoute: d.route } : {}),
      ...(d.kind === "reject" ? {} : { serverAddress: d.host }),
      peerAddress: peerAddress(req),
      attributes: { "meshgate.direction": "outbound" },
    }));
    if (d.kind === "reject") {
      ex.accessPath = d.code === "bad_request_target" ? "" : loggedTarget(req.url ?? "");
      ex.outcome = `denied_${d.code}`;
      if (d.code === "browser_request" || d.code === "misdirected_request")
        logLocalRefusal(req, d.code, service, ex.requestId);
      return respondError(ex, d.status, d.code, d.detail);
    }
    if (d.kind === "external") return forwardExternal(ex, d, method, span);
    ex.peer = d.service;
    ex.accessPath = d.path;
    ex.rule = d.route ?? "";
    const cluster = current.clusters.get(d.cluster);
    if (cluster === undefined)
      return respondError(ex, 503, "no_healthy_upstream", `cluster ${d.cluster} is not configured`);
    if (cluster.config.tls.mode === "mtls" && !identity.ready()) {
      ex.outcome = "no_identity";
      return respondError(
        ex,
        503,
        "upstream_identity_unavailable",
        "no valid workload identity is loaded; mTLS to the mesh is impossible",
      );
    }
    const headers = upstreamRequestHeaders(req.headers, NOT_FORWARDED);
    headers.host = d.host;
    headers["x-request-id"] = ex.requestId; // the app's (when well-formed) or a new one, as logged
    const declared = req.headers["content-length"];
    const hasBody = requestHasBody(ex);
    let body: Buffer | NodeJS.ReadableStream | null = null;
    if (hasBody) {
      if (declared !== undefined && Number(declared) <= REPLAY_BUFFER_BYTES && d.retry.attempts > 0) {
        try {
          body = await readBody(req, REPLAY_BUFFER_BYTES);
        } catch {
          res.destroy();
          return;
        }
      } else body = req;
    }
    // A gRPC call's deadline: the app's grpc-timeout shortens the route's timeout (never extends it), and
    // the destination is told the deadline this sidecar enforces.
    const timeoutMs = forwardTimeoutMs(ex.h2, req.headers, headers, d.timeoutMs);
    const upstreamSpan = current.tracer.startClientSpan(span, { method, upstream: d.cluster });
    setTraceHeaders(headers, upstreamSpan);
    const result = await forward(
      cluster,
      {
        cancel: ex.cancel,
        method,
        path: d.upstreamTarget,
        headers,
        body,
        timeoutMs,
        // A gRPC call's deadline bounds the whole call, a stream that keeps sending included.
        wholeCall: ex.h2 && isGrpc(req.headers["content-type"]),
        sendTimeoutMs,
        retry: d.retry,
        hashKey: peerAddress(req),
      },
      (status, upstreamHeaders, _closeDelimited, trailersOnly) => {
        // The pools hand on end-to-end headers only (H1Pool strips hop-by-hop ones).
        if (ex.h2) {
          if (trailersOnly) return respondTrailersOnly(res, status, upstreamHeaders) ?? res;
        } else if (draining) upstreamHeaders.connection = "close";
        res.writeHead(status, upstreamHeaders);
        return res;
      },
      observer,
    );
    finishForward(ex, result, upstreamSpan, d.cluster, 0);
  }

  /**
   * A plain-HTTP request to a declared external destination: forwarded once (no retry, so the body
   * streams through unbuffered), over the TLS the sidecar originates when the external says so. The app's
   * end-to-end headers go as sent — no request ID or trace context of the mesh is added for a third party.
   */
  async function forwardExternal(
    ex: Exchange,
    d: OutboundExternal,
    method: string,
    span: SpanLike,
  ): Promise<void> {
    const { req, res, state: current } = ex;
    ex.peer = d.external;
    ex.mtls = false; // outside the mesh: no mTLS (TLS, when the sidecar originates it)
    ex.accessPath = d.path;
    ex.accessHost = d.destination;
    const cluster = externalClusterOf(current, d);
    if (cluster === undefined)
      return respondError(ex, 503, "no_healthy_upstream", `external ${d.external} is not configured`);
    const headers = upstreamRequestHeaders(req.headers, NOT_FORWARDED);
    headers.host = d.host;
    const upstreamSpan = current.tracer.startClientSpan(span, { method, upstream: d.external });
    const result = await forward(
      cluster,
      {
        cancel: ex.cancel,
        method,
        path: d.upstreamTarget,
        headers,
        body: requestHasBody(ex) ? req : null,
        timeoutMs: d.timeoutMs,
        sendTimeoutMs,
        retry: NO_RETRY,
        hashKey: "",
      },
      (status, upstreamHeaders) => {
        if (!ex.h2 && draining) upstreamHeaders.connection = "close";
        res.writeHead(status, upstreamHeaders);
        return res;
      },
      observer,
    );
    finishForward(ex, result, upstreamSpan, d.external, 0);
  }

  // ── WebSocket upgrades ──
  /** Open tunnels (closed on drain). */
  const tunnels = new Set<Socket>();

  /** Accounts for an upgrade that ended (or was refused): metrics and the access line. */
  function upgradeDone(
    u: UpgradeRecord,
    status: number,
    code: SidecarErrorCode | null,
    outcome: string,
    upstream = "",
  ): void {
    const seconds = (performance.now() - u.started) / 1000;
    // A tunnel's lifetime (minutes, hours) is no request latency: observed, it counted every WebSocket as
    // a request slower than any latency SLO. The handshake is counted in requests_total, as at the gateway.
    countRequest(u.direction, u.peer, u.mtls, status, status === 101 ? null : seconds);
    if (code !== null) mErrors.labels("sidecar", u.direction, code).inc();
    if (u.state.config.telemetry.accessLog.enabled)
      accessLog.info({
        event: "access",
        direction: u.direction,
        requestId: u.requestId,
        method: u.req.method,
        path: u.path,
        host: u.host || undefined,
        peer: u.peer,
        peerId: u.peerId ?? undefined,
        service: u.state.config.name,
        mtls: u.mtls,
        rule: u.rule || undefined,
        status,
        upgrade: "websocket",
        durationMs: Math.round(seconds * 1e6) / 1e3,
        upstream: upstream || undefined,
        outcome,
      });
  }

  function refuse(
    u: UpgradeRecord,
    socket: Socket,
    status: number,
    code: SidecarErrorCode,
    message: string,
    extra?: Record<string, string>,
  ): void {
    refuseUpgrade(socket, status, http.STATUS_CODES[status] ?? "Error", code, message, extra);
    upgradeDone(u, status, code, `refused_${code}`);
  }

  /** Header checks shared by both directions; false when refused. */
  function checkUpgrade(u: UpgradeRecord, socket: Socket): boolean {
    socket.on("error", () => socket.destroy());
    if (draining) {
      socket.destroy();
      return false;
    }
    if (!isWebSocketUpgrade(u.req)) {
      refuse(u, socket, 400, "bad_request_target", "only Upgrade: websocket is proxied");
      return false;
    }
    // RFC 6455 §4.1: the opening handshake is a GET, and the one sent on is: a POST allowed by a rule
    // would otherwise reach the app as a GET no rule allows (its answer relayed when it does not switch).
    if (u.req.method !== "GET") {
      refuse(u, socket, 400, "bad_upgrade", "a WebSocket opening handshake is a GET request (RFC 6455 §4.1)");
      return false;
    }
    const problem = checkRequestHeaders(u.req.rawHeaders, u.req.httpVersionMinor, u.req.httpVersionMajor);
    if (problem) {
      refuse(u, socket, 400, problem.code, problem.detail);
      return false;
    }
    return true;
  }

  function tunnel(
    u: UpgradeRecord,
    socket: Socket,
    head: Buffer,
    upstream: Socket,
    readyEvent: "connect" | "secureConnect",
    path: string,
    headers: Record<string, string | string[]>,
    upstreamName: string,
    connectTimeoutMs = 1000,
  ): void {
    headers.connection = "Upgrade";
    headers.upgrade = "websocket";
    const handshake = upgradeHandshake(path, headers);
    if (handshake === null) {
      // Unreachable from a parsed request (one byte per character): a guard, not a path.
      upstream.destroy();
      return refuse(u, socket, 500, "internal_error", "a handshake character outside one byte");
    }
    let badAnswer = false;
    openTunnel(
      socket,
      upstream,
      readyEvent,
      handshake,
      headers["sec-websocket-key"],
      head,
      { connectTimeoutMs, idleTimeoutMs: TUNNEL_IDLE_MS, tunnels },
      {
        failed: (err) => {
          if (err.code === "ECONNABORTED") return upgradeDone(u, 499, null, "client_aborted", upstreamName);
          const [status, code, outcome]: [number, SidecarErrorCode, string] =
            err.code === "E_RT_IDENTITY_UNAVAILABLE"
              ? [503, "upstream_identity_unavailable", "no_identity"]
              : [503, "upstream_connect_failure", "connect_failure"];
          log.warn({
            event: "upstream_error",
            direction: u.direction,
            requestId: u.requestId,
            upstream: upstreamName,
            outcome,
            code: err.code,
          });
          refuseUpgrade(
            socket,
            status,
            http.STATUS_CODES[status]!,
            code,
            `upstream ${upstreamName}: ${outcome}`,
          );
          upgradeDone(u, status, code, outcome, upstreamName);
        },
        badAnswer: (reason) => {
          badAnswer = true;
          refuseUpgrade(
            socket,
            502,
            "Bad Gateway",
            "upstream_bad_upgrade",
            `upstream ${upstreamName}: ${reason}`,
          );
        },
        closed: (status) =>
          badAnswer
            ? upgradeDone(u, 502, "upstream_bad_upgrade", "bad_upgrade_answer", upstreamName)
            : upgradeDone(
                u,
                status || 502,
                null,
                status === 101 ? "tunnel_closed" : "refused_upstream",
                upstreamName,
              ),
      },
    );
  }

  function onInboundUpgrade(req: IncomingMessage, socket: Socket, head: Buffer, mtls: boolean): void {
    const peer = mtls ? ((socket as PeerSocket)[PEER] ?? null) : null;
    const current = state;
    const u = new UpgradeRecord(current, "inbound", req, peer?.label ?? NO_PEER, mtls);
    u.peerId = peer?.id ?? null;
    if (!checkUpgrade(u, socket)) return;
    const d = decideInbound(current.inbound, {
      peer: peer?.id ?? null,
      method: req.method ?? "GET",
      target: req.url ?? "",
      host: req.headers.host,
    });
    if (d.kind === "deny") {
      u.path = d.code === "bad_request_target" ? "" : loggedTarget(req.url ?? "");
      if (d.status === 403) {
        mDenied.labels("sidecar", current.config.name, u.peer, d.code).inc();
        return refuse(u, socket, 403, "authz_denied", d.detail, { "x-meshgate-denied": d.code });
      }
      return refuse(u, socket, 400, d.code === "bad_host" ? "bad_host" : "bad_request_target", d.detail);
    }
    u.path = d.path;
    u.rule = d.source;
    const headers = upstreamRequestHeaders(req.headers, inboundNotForwarded(current, peer));
    headers["x-request-id"] = u.requestId;
    if (peer !== null) {
      headers[PEER_HEADER] = peer.id;
      headers[XFCC_HEADER] = peer.xfcc;
    }
    const upstream = net.connect({
      host: "127.0.0.1",
      port: current.config.inbound.appPort,
      noDelay: true,
      allowHalfOpen: true,
    });
    tunnel(u, socket, head, upstream, "connect", d.upstreamTarget, headers, "app");
  }

  function onOutboundUpgrade(
    req: IncomingMessage,
    socket: Socket,
    head: Buffer,
    service: string | null,
  ): void {
    const current = state;
    const u = new UpgradeRecord(current, "outbound", req, service ?? NO_PEER, true);
    if (!checkUpgrade(u, socket)) return;
    const d = decideOutbound(current.outbound, {
      method: req.method ?? "GET",
      target: req.url ?? "",
      host: req.headers.host,
      service,
      origin: req.headers.origin,
      fetchSite: req.headers["sec-fetch-site"] as string | undefined,
    });
    if (d.kind === "reject") {
      u.path = d.code === "bad_request_target" ? "" : loggedTarget(req.url ?? "");
      if (d.code === "browser_request" || d.code === "misdirected_request")
        logLocalRefusal(req, d.code, service, u.requestId);
      return refuse(u, socket, d.status, d.code, d.detail);
    }
    if (d.kind === "external") {
      // A WebSocket to a destination outside the mesh: the app's headers as sent, over the TLS the
      // sidecar originates when the external says so.
      u.peer = d.external;
      u.mtls = false;
      u.path = d.path;
      u.host = d.destination;
      const cluster = externalClusterOf(current, d);
      const endpoint = cluster?.pick("", Date.now());
      if (cluster === undefined || !endpoint)
        return refuse(u, socket, 503, "no_healthy_upstream", `external ${d.external} is not available`);
      const headers = upstreamRequestHeaders(req.headers, NOT_FORWARDED);
      headers.host = d.host;
      const tlsMode = cluster.config.tls;
      const upstream =
        tlsMode.mode === "tls"
          ? originateConnector(tlsMode, "http1", externalLookup, clientCerts)(endpoint.host, endpoint.port)
          : net.connect({
              host: endpoint.host,
              port: endpoint.port,
              lookup: externalLookup,
              noDelay: true,
              allowHalfOpen: true,
            });
      tunnel(
        u,
        socket,
        head,
        upstream,
        tlsMode.mode === "tls" ? "secureConnect" : "connect",
        d.upstreamTarget,
        headers,
        endpoint.key,
        cluster.config.connectTimeoutMs,
      );
      return;
    }
    u.peer = d.service;
    u.path = d.path;
    u.rule = d.route ?? "";
    const cluster = current.clusters.get(d.cluster);
    if (cluster === undefined)
      return refuse(u, socket, 503, "no_healthy_upstream", `cluster ${d.cluster} is not configured`);
    const mtlsCluster = cluster.config.tls;
    if (mtlsCluster.mode === "mtls" && !identity.ready())
      return refuse(
        u,
        socket,
        503,
        "upstream_identity_unavailable",
        "no valid workload identity is loaded; mTLS to the mesh is impossible",
      );
    const endpoint = cluster.pick(socket.remoteAddress ?? "", Date.now());
    if (!endpoint)
      return refuse(u, socket, 503, "no_healthy_upstream", `cluster ${d.cluster} has no available endpoint`);
    const headers = upstreamRequestHeaders(req.headers, NOT_FORWARDED);
    headers.host = d.host;
    headers["x-request-id"] = u.requestId;
    // WebSocket handshakes are HTTP/1.1: the callee's sidecar is reached with ALPN http/1.1 even when
    // the service speaks HTTP/2.
    const upstream =
      mtlsCluster.mode === "mtls"
        ? connectMtls(mtlsCluster.serverIdentity, "http1")(endpoint.host, endpoint.port)
        : net.connect({ host: endpoint.host, port: endpoint.port, noDelay: true, allowHalfOpen: true });
    tunnel(
      u,
      socket,
      head,
      upstream,
      mtlsCluster.mode === "mtls" ? "secureConnect" : "connect",
      d.upstreamTarget,
      headers,
      endpoint.key,
    );
  }

  /**
   * A refusal on an outbound port that is a web page's doing (a browser's request, a Host a local port
   * does not serve): logged with what identifies it — the headers that decided, cut short, never a
   * credential — and counted in sidecar_errors_total by its code (respondError, refuse).
   */
  function logLocalRefusal(
    req: IncomingMessage,
    code: OutboundRejectCode,
    service: string | null,
    requestId: string,
  ): void {
    log.warn({
      event: "outbound_refused",
      code,
      requestId,
      port: service === null ? "proxy" : service,
      host: clip(req.headers.host ?? (req.headers[":authority"] as string | undefined)),
      origin: clip(req.headers.origin),
      fetchSite: clip(req.headers["sec-fetch-site"] as string | undefined),
      remote: req.socket?.remoteAddress,
    });
  }

  // ── egress ──
  /** A CONNECT on the proxy port: a tunnel to a declared external, or a refusal (egress.ts). */
  function onOutboundConnect(req: IncomingMessage, socket: Socket, head: Buffer): void {
    if (draining) return void socket.destroy();
    egress.connect(state.egress, req.url ?? "", req.httpVersionMajor, socket, head);
  }

  function sendTailTimedOut(ex: Exchange): void {
    log.warn({
      event: "send_timeout",
      source: "response_end",
      direction: ex.direction,
      requestId: ex.requestId,
      timeoutMs: sendTimeoutMs,
    });
  }

  function finishForward(
    ex: Exchange,
    result: ForwardResult,
    span: SpanLike,
    upstream: string,
    limit: number,
  ): void {
    const res = ex.res;
    const upstreamKey = (ex.upstreamKey = result.endpoint?.key ?? "");
    if (upstreamKey) span.setAttribute("server.address", upstreamKey);
    if (result.attempts > 1) span.setAttribute("http.request.resend_count", result.attempts - 1);
    span.end(
      result.kind === "ok"
        ? { statusCode: result.status }
        : { error: result.error ?? new Error(result.outcome), errorType: result.outcome },
    );
    if (result.kind === "ok") {
      ex.outcome = result.attempts > 1 ? `success_after_${result.attempts - 1}_retries` : "success";
      // The pool ended the response: what of it still waits for the client is under the send timeout too.
      guardSendTail(res, sendTimeoutMs, () => sendTailTimedOut(ex));
      return;
    }
    ex.outcome = result.outcome;
    if (result.outcome === "body_too_large" && !result.headersSent) {
      noKeepAlive(ex);
      return respondError(ex, 413, "body_too_large", `the request body exceeds ${limit} bytes`);
    }
    if (result.headersSent || result.outcome === "client_aborted") {
      // Never a clean end for a truncated response: HTTP/1 loses the connection, HTTP/2 the stream
      // (RST_STREAM INTERNAL_ERROR: destroyed with an error, never Http2Stream#close, which ends first).
      res.destroy(result.error ?? new Error(result.outcome));
      return;
    }
    const [status, code] = upstreamFailure(result.outcome);
    if (logsUpstreamFailure(result.outcome))
      log.warn({
        event: "upstream_error",
        direction: ex.direction,
        requestId: ex.requestId,
        upstream: upstreamKey || upstream,
        outcome: result.outcome,
        attempts: result.attempts,
        code: result.error ? (result.error as { code?: string }).code : undefined,
      });
    respondError(ex, status, code, `upstream ${upstream}: ${result.outcome.replaceAll("_", " ")}`);
  }

  function failed(ex: Exchange, err: Error): void {
    log.error({ event: "handler_error", direction: ex.direction, message: err.message, stack: err.stack });
    if (!ex.res.headersSent) respondError(ex, 500, "internal_error", "internal sidecar error");
    else ex.res.destroy(err);
  }

  // ── listeners ──
  function onClientError(direction: Direction, err: Error & { code?: string }, socket: Socket): void {
    if (err.code === "ECONNRESET" || err.code === "EPIPE") {
      socket.destroy();
      return;
    }
    if ((socket as Socket & { _httpMessage?: { headersSent?: boolean } })._httpMessage?.headersSent) {
      socket.destroy();
      return;
    }
    const raw = (err as { rawPacket?: Buffer }).rawPacket;
    const [status, code]: [number, SidecarErrorCode] =
      err.code === "HPE_HEADER_OVERFLOW"
        ? [431, "headers_too_large"]
        : err.code === "ERR_HTTP_REQUEST_TIMEOUT"
          ? [408, "request_timeout"]
          : err.code === "HPE_INVALID_URL" &&
              direction === "outbound" &&
              raw?.subarray(0, 8).toString("latin1") === "CONNECT "
            ? [400, "egress_bad_authority"] // a target even Node's parser refuses (`h:1#x`)
            : [400, "bad_request_target"];
    mErrors.labels("sidecar", direction, code).inc();
    if (socket.writable && !socket.destroyed) {
      const body = JSON.stringify({ error: { code, message: http.STATUS_CODES[status] ?? "Bad Request" } });
      socket.end(
        `HTTP/1.1 ${status} ${http.STATUS_CODES[status] ?? "Bad Request"}\r\nconnection: close\r\n` +
          `content-type: application/json\r\nx-meshgate-error: ${code}\r\ncontent-length: ${Buffer.byteLength(body)}\r\n\r\n${body}`,
      );
    } else socket.destroy();
  }

  /** The inbound connection stack of `config` (mode, parser limits), with the identity loaded now. */
  const buildInbound = (config: SidecarRuntimeConfig): InboundListener =>
    createInboundListener({
      mode: config.mtls,
      maxHeaderBytes: config.inbound.limits.maxHeaderBytes,
      headerTimeoutMs: config.inbound.limits.headerTimeoutMs,
      identity: identity.current()?.serverOptions ?? null,
      ...(options.maxRequestsPerSocket ? { maxRequestsPerSocket: options.maxRequestsPerSocket } : {}),
      onRequest: onInbound,
      onUpgrade: onInboundUpgrade,
      onSecureConnection: (socket) => {
        // A resumed session carries the peer's leaf without its intermediates: the verifier builds the
        // path from the known intermediates, as for a full handshake (Node passes the leaf alone there
        // too), against the bundle and the clock of now.
        const current = identity.current();
        const v = current
          ? current.verifier.verify(peerChain(socket))
          : ({ ok: false, code: "E_RT_IDENTITY_UNAVAILABLE", reason: "no identity loaded" } as const);
        if (!v.ok) {
          mHandshakes.labels("sidecar", v.code).inc();
          log.warn({ event: "peer_refused", code: v.code, reason: v.reason, remote: socket.remoteAddress });
          socket.destroy();
          return null;
        }
        mHandshakesOk.inc();
        if (socket.isSessionReused()) mResumed.inc();
        (socket as unknown as PeerSocket)[PEER] = {
          id: v.spiffeId,
          label: peerLabel(v.spiffeId),
          // By= the identity this connection was served with (a reload may have changed it).
          xfcc: xfccValue(current!.spiffeId, v.spiffeId, v.fingerprint),
        };
        return { until: v.chainNotAfter, root: v.rootFingerprint };
      },
      onRetire: (reason) => mRetired.labels("sidecar", reason).inc(),
      onTlsError: (err) => mHandshakes.labels("sidecar", handshakeReason(err)).inc(),
      onClientError: (err, socket) => onClientError("inbound", err, socket),
    });

  await identity.start();
  // The inbound port: an acceptor whose stack a reload that changes the mode or the parser limits
  // replaces on the same socket (runtime/net/acceptor.ts).
  inbound = createAcceptor(buildInbound(options.config));
  const ports = {
    inbound: await listen(inbound.server, options.ports?.inbound ?? options.config.inbound.port, bindHost),
    outbound: 0,
    admin: 0,
    services: {} as Record<string, number>,
    external: {} as Record<string, number>,
  };
  const outboundClientError = (err: Error & { code?: string }, socket: Socket) =>
    onClientError("outbound", err, socket);
  const createOutbound = () =>
    createLocalListener(
      outboundServerOptions(),
      (req, res) => onOutbound(req, res, null),
      outboundClientError,
      (req, socket, head) => onOutboundUpgrade(req, socket, head, null),
      onOutboundConnect,
    );
  let outboundServer = createOutbound();
  ports.outbound = await listen(
    outboundServer.server,
    options.ports?.outbound ?? options.config.outbound.port,
    "127.0.0.1",
  );

  /** What a reload changes in the inbound and outbound listeners: sockets bound for it, a new stack. */
  interface MainSwap {
    readonly opened: ReadonlyMap<string, SwappableListener>;
    /** The inbound stack rebuilt on the kept socket (null: kept as it is, or moved with a new one). */
    readonly inboundStack: InboundListener | null;
    readonly changes: SidecarListenerChanges;
  }
  /**
   * Binds the inbound and outbound ports `next` moves (the inbound one with a stack of `next`) and builds
   * the inbound stack it rebuilds in place. A port that cannot be bound refuses the reload, naming it.
   */
  const prepareMain = async (next: SidecarRuntimeConfig): Promise<MainSwap> => {
    const changes = sidecarListenerChanges(state.config, next);
    const { opened } = await openChanged<SwappableListener, PortChanges>(
      { added: [], removed: [], moved: changes.moved },
      async (name) => {
        if (name === "outbound") {
          const l = createOutbound();
          await listen(l.server, next.outbound.port, "127.0.0.1");
          return l;
        }
        const a = createAcceptor(buildInbound(next));
        try {
          await listen(a.server, next.inbound.port, bindHost);
        } catch (err) {
          discardStack(a.stack);
          throw err;
        }
        return a;
      },
      (name) => `${name}.port`,
    );
    const inboundStack =
      !changes.moved.includes("inbound") && changes.inboundSettings.length > 0 ? buildInbound(next) : null;
    return { opened, inboundStack, changes };
  };
  const discardMain = (swap: MainSwap) => {
    for (const l of swap.opened.values()) closeUnused(l);
    if (swap.inboundStack) discardStack(swap.inboundStack);
  };
  /** Swaps a reload's inbound and outbound listeners in; the moved-away ones stop accepting and drain. */
  const swapMain = (swap: MainSwap) => {
    if (swap.inboundStack) inbound!.use(swap.inboundStack, drainTimeoutMs);
    const live = new Map<string, SwappableListener>([
      ["inbound", inbound!],
      ["outbound", outboundServer],
    ]);
    const bound: Record<string, number> = { inbound: ports.inbound, outbound: ports.outbound };
    swapListeners(live, bound, retiredMain, swap.changes.moved, swap.opened, drainTimeoutMs);
    inbound = live.get("inbound") as Acceptor<InboundListener>;
    outboundServer = live.get("outbound") as LocalListener;
    ports.inbound = bound.inbound!;
    ports.outbound = bound.outbound!;
    // The stack serving new handshakes holds the identity loaded last.
    const c = identity.current();
    if (c && (swap.inboundStack || swap.changes.moved.includes("inbound"))) applyIdentity(c);
    const { moved, inboundSettings } = swap.changes;
    if (moved.length + inboundSettings.length > 0)
      log.info({
        event: "listeners_changed",
        moved,
        rebuilt: inboundSettings.length > 0 ? ["inbound"] : [],
        settings: inboundSettings,
        inbound: ports.inbound,
        outbound: ports.outbound,
      });
  };
  // Per-service local ports by service; a reload binds added and moved ones before its config is
  // accepted, and closes removed and moved-away ones once it serves (their requests in flight finish).
  const serviceServers = new Map<string, LocalListener>();
  /** Retired local listeners whose connections are still draining. */
  const retiredLocals = new Set<LocalListener>();
  const servicePorts = ports.services;
  const openLocal = async (service: string, port: number): Promise<LocalListener> => {
    const server = createLocalListener(
      outboundServerOptions(),
      (req, res) => onOutbound(req, res, service),
      outboundClientError,
      (req, socket, head) => onOutboundUpgrade(req, socket, head, service),
    );
    await listen(server.server, port, "127.0.0.1");
    return server;
  };
  /** Binds the local ports the config starts with (a port option wins), recording each bound port. */
  async function bindInitial<L extends { readonly server: net.Server }>(
    wanted: readonly (readonly [name: string, port: number | null | undefined])[],
    open: (name: string, port: number) => Promise<L>,
    bound: Record<string, number>,
    servers: Map<string, L>,
  ): Promise<void> {
    for (const [name, port] of wanted) {
      if (port === null || port === undefined) continue;
      const server = await open(name, port);
      bound[name] = (server.server.address() as AddressInfo).port;
      servers.set(name, server);
    }
  }
  await bindInitial(
    options.config.outbound.services.map((s) => [
      s.service,
      options.ports?.services?.[s.service] ?? s.localPort,
    ]),
    openLocal,
    servicePorts,
    serviceServers,
  );
  type LocalSwap = PreparedSwap<LocalListener, LocalPortChanges>;
  /** Binds the per-service local ports `next` adds and moves; a port that cannot be bound refuses it. */
  const openChangedLocals = (next: SidecarRuntimeConfig): Promise<LocalSwap> =>
    openChanged(
      sidecarLocalPortChanges(state.config, next),
      (service) => openLocal(service, next.outbound.services.find((x) => x.service === service)!.localPort!),
      (service) => `outbound.services.${service}.localPort`,
    );
  const swapLocals = (swap: LocalSwap) => {
    swapListeners(serviceServers, servicePorts, retiredLocals, swap.retire, swap.opened, drainTimeoutMs);
    const { added, removed, moved } = swap.changes;
    if (added.length + removed.length + moved.length > 0)
      log.info({ event: "local_ports_changed", added, removed, moved, services: servicePorts });
  };
  // The local ports of externals, the same way: bound before a reload is accepted, removed and moved-away
  // ones closed once it serves (their tunnels go on while the external is still declared, up to the drain
  // timeout; a reload that drops the external closes them at once: egress.reconcile).
  const externalServers = new Map<string, ExternalListener>();
  const retiredExternal = new Set<ExternalListener>();
  const externalPorts = ports.external;
  const openExternal = (name: string, port: number): Promise<ExternalListener> =>
    egress.listen(name, port, () => (draining ? null : state.egress));
  await bindInitial(
    options.config.outbound.external.map((e) => [e.name, options.ports?.external?.[e.name] ?? e.localPort]),
    openExternal,
    externalPorts,
    externalServers,
  );
  type ExternalSwap = PreparedSwap<ExternalListener, LocalPortChanges>;
  /** Binds the external local ports `next` adds and moves; a port that cannot be bound refuses it. */
  const openChangedExternal = (next: SidecarRuntimeConfig): Promise<ExternalSwap> =>
    openChanged(
      sidecarExternalPortChanges(state.config, next),
      (name) => openExternal(name, next.outbound.external.find((x) => x.name === name)!.localPort!),
      (name) => `outbound.external.${name}.localPort`,
    );
  const swapExternal = (swap: ExternalSwap, externals: CompiledExternals) => {
    // Tunnels to externals the new config no longer declares (or moved to another host or port) end now.
    const cut = egress.reconcile(externals);
    swapListeners(externalServers, externalPorts, retiredExternal, swap.retire, swap.opened, drainTimeoutMs);
    const { added, removed, moved } = swap.changes;
    if (added.length + removed.length + moved.length > 0)
      log.info({ event: "external_ports_changed", added, removed, moved, external: externalPorts });
    if (cut.length > 0) log.info({ event: "egress_tunnels_closed", reason: "reload", external: cut });
  };

  // ── admin ──
  const admin = createAdminServer({
    ready: () => !draining && identity.ready(),
    metrics: () => metrics.render(),
    config: () => ({
      ...redactSidecarConfig(state.config),
      identityStatus: identityStatus(identity.current(), identity.ready()),
    }),
    reload: () => reload().then((r) => exposedReloadResult(r, state.config)),
    purge: () => Promise.reject(new Error("the sidecar has no HTTP cache")),
    hosts: () => state.config.admin.hosts,
  });
  ports.admin = await listen(admin, options.ports?.admin ?? options.config.admin.port, bindHost);
  log.info({
    event: "started",
    inbound: ports.inbound,
    outbound: ports.outbound,
    services: servicePorts,
    external: externalPorts,
    admin: ports.admin,
    mtls: options.config.mtls,
    ready: identity.ready(),
    hash: exposedConfigHash(state.config),
  });

  // ── reload and drain ──
  /** Stops what a built state that is not swapped in started: clusters, the app pool, the tracer. */
  const discardState = (built: State) => {
    for (const c of stateClusters(built)) c.close();
    void built.tracer.shutdown(2000);
  };
  interface Built {
    state: State;
    locals: LocalSwap;
    external: ExternalSwap;
    main: MainSwap;
  }
  const reload = createReloader<SidecarRuntimeConfig, Built>({
    proxy: "sidecar",
    ...(options.configPath ? { configPath: options.configPath } : {}),
    metrics: lifecycle,
    log,
    current: () => state.config,
    load: (text) => loadRuntimeConfig(text, "sidecar"),
    // Same config: the identity files may still have been rotated in place (Kubernetes Secrets).
    unchanged: async () => {
      await identity.reload();
      await clientCerts.refresh();
    },
    check: (current, next) => refuseRestartFields("sidecar", restartFields(current, next)),
    build: async (next) => {
      const built = await buildState(next);
      let locals: LocalSwap | null = null;
      let external: ExternalSwap | null = null;
      try {
        locals = await openChangedLocals(next);
        external = await openChangedExternal(next);
        return { state: built, locals, external, main: await prepareMain(next) };
      } catch (err) {
        discardState(built);
        for (const l of locals?.opened.values() ?? []) closeUnused(l);
        for (const l of external?.opened.values() ?? []) closeUnused(l);
        throw err;
      }
    },
    commit: async (next, { state: built, locals, external, main }) => {
      const previous = state;
      if (identityChanged(previous.config, next)) {
        // New identity files or another identity: a new source, swapped in once it loaded a valid
        // identity. One that cannot (files missing, another workload's SVID, expired) refuses the reload
        // while the serving identity is valid: swapping it for none would refuse every caller.
        const refused: { last: { code: string; message: string } | null } = { last: null };
        const fresh = createIdentity(next, (e) => {
          if (e.kind === "rejected") refused.last = e;
        });
        await fresh.start();
        if (!fresh.ready() && identity.ready()) {
          fresh.close();
          const why = refused.last;
          throw new Error(
            `svid: the new identity files hold no valid identity for ${next.identity}` +
              (why ? ` (${why.code}: ${why.message})` : "") +
              "; the current identity keeps serving",
          );
        }
        const old = identity;
        identity = fresh;
        old.close();
        const c = fresh.current();
        if (c) applyIdentity(c);
      } else await identity.reload();
      inheritClusterState(stateClusters(previous), stateClusters(built));
      state = built; // the atomic swap: new requests see the new state, in-flight ones keep theirs
      swapMain(main);
      swapLocals(locals);
      swapExternal(external, built.egress.externals);
      for (const c of stateClusters(previous)) c.close();
      void previous.tracer.shutdown(2000);
      const keep = new Set(stateClusters(built).flatMap((c) => c.poolKeys()));
      // Names reached under a wildcard or range the new config declares the same way keep their pooled
      // connections: the new state makes its clusters on first use, over the same pools.
      for (const c of previous.wildcardHosts.values()) {
        const was = previous.egress.externals.byName.get(c.config.name);
        const now = built.egress.externals.byName.get(c.config.name);
        if (was !== undefined && now !== undefined && sameExternal(was, now))
          for (const k of c.poolKeys()) keep.add(k);
      }
      void pools.retain(keep);
      void externalPools.retain(keep);
      keepClientCertificates(next);
    },
    discard: (built) => {
      discardState(built.state);
      keepClientCertificates(state.config);
      for (const l of built.locals.opened.values()) closeUnused(l);
      for (const l of built.external.opened.values()) closeUnused(l);
      discardMain(built.main);
    },
  });

  async function drain(): Promise<void> {
    if (draining) return;
    draining = true;
    log.info({ event: "draining", inFlight });
    const locals = [outboundServer, ...serviceServers.values()];
    const externalLocals = [...externalServers.values(), ...retiredExternal];
    const deadline = Date.now() + drainTimeoutMs;
    // External local ports stop accepting with the rest; their tunnels end with the WebSocket tunnels.
    for (const l of externalServers.values()) l.server.close();
    await retireForDrain([inbound!, ...locals], [...retiredLocals, ...retiredMain], drainTimeoutMs);
    if (inFlight > 0) {
      await Promise.race([
        new Promise<void>((r) => idleWaiters.push(r)),
        sleep(Math.max(0, deadline - Date.now())),
      ]);
    }
    inbound!.closeAll();
    for (const l of [...locals, ...retiredLocals, ...retiredMain]) l.closeAll();
    for (const t of tunnels) t.destroy();
    egress.closeAll("drained");
    for (const l of externalLocals) l.closeAll();
    admin.close();
    admin.closeAllConnections();
    identity.close();
    clientCerts.close();
    for (const c of stateClusters(state)) c.close();
    await state.tracer.shutdown(2000);
    await pools.closeAll();
    await externalPools.closeAll();
    stopProcessMetrics();
    log.info({ event: "stopped" });
  }

  return {
    ports,
    metrics,
    ready: () => !draining && identity.ready(),
    identity: () => identity.current(),
    currentHash: () => state.config.hash,
    reload,
    reloadIdentity: () => identity.reload(),
    drain,
  };
}

function outboundServerOptions(): http.ServerOptions {
  return {
    requireHostHeader: false, // a local port needs no Host; the proxy port refuses a request without one
    joinDuplicateHeaders: false,
    insecureHTTPParser: false,
    noDelay: true,
    keepAliveTimeout: 65_000,
  };
}

/** A bounded label for a failed inbound handshake. */
function handshakeReason(err: Error & { code?: string }): string {
  const text = `${err.code ?? ""} ${err.message}`.toUpperCase();
  if (text.includes("TIMEOUT")) return "timeout";
  if (text.includes("PEER DID NOT RETURN A CERTIFICATE") || text.includes("CERTIFICATE_REQUIRED"))
    return "no_certificate";
  if (text.includes("CERTIFICATE") || text.includes("UNKNOWN CA") || text.includes("VERIFY"))
    return "untrusted";
  if (
    text.includes("VERSION") ||
    text.includes("PROTOCOL") ||
    text.includes("WRONG_VERSION") ||
    text.includes("HTTP_REQUEST")
  )
    return "protocol";
  if (text.includes("ECONNRESET") || text.includes("SOCKET")) return "reset";
  return "other";
}

function identityStatus(c: LoadedIdentity | null, ready: boolean): unknown {
  if (!c) return { loaded: false, ready };
  return {
    loaded: true,
    ready,
    spiffeId: c.spiffeId,
    serial: c.serial,
    fingerprint: c.fingerprint,
    notBefore: new Date(c.notBefore).toISOString(),
    notAfter: new Date(c.notAfter).toISOString(),
    renewAt: new Date(c.renewAt).toISOString(),
    bundleRoots: c.bundle.roots.map((r) => r.subject),
    intermediates: c.intermediates.map((i) => i.subject),
  };
}

function listen(server: net.Server, port: number, host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const onError = (err: Error & { code?: string }) => {
      reject(err.code === "EADDRINUSE" ? new Error(`port ${port} on ${host} is already in use`) : err);
    };
    server.once("error", onError);
    server.listen({ port, host }, () => {
      server.off("error", onError);
      resolve((server.address() as AddressInfo).port);
    });
  });
}

/** Reads a whole (small) body, failing with E_BODY_TOO_LARGE past `limit`. */
/** HTTP/2 has no connection-wide keep-alive to refuse: only HTTP/1 responses close the connection. */
function noKeepAlive(ex: Exchange): void {
  if (!ex.h2) (ex.res as ServerResponse).shouldKeepAlive = false;
}

/** An HTTP/2 header list's size as SETTINGS_MAX_HEADER_LIST_SIZE counts it: name + value + 32 each. */
/** A header value for a log line: at most 128 characters. */
function clip(value: string | undefined): string | undefined {
  return value === undefined || value.length <= 128 ? value : `${value.slice(0, 128)}…`;
}

function headerListSize(raw: readonly string[]): number {
  let n = 0;
  for (let i = 0; i < raw.length; i += 2) n += raw[i]!.length + raw[i + 1]!.length + 32;
  return n;
}

/** The authority of an HTTP/2 request: `:authority`, or a Host header when the client sent none (checkHead refuses the two differing). */
function authorityOf(req: InboundRequest): string | undefined {
  return (req.headers[":authority"] as string | undefined) ?? req.headers.host;
}

/** A retired main listener that is the inbound acceptor (the outbound one is a local listener). */
function isAcceptor(l: SwappableListener): l is Acceptor<InboundListener> {
  return "forEachStack" in l;
}
