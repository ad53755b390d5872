/**
 * The RuntimeConfig contract: what one proxy (the gateway, or one service's sidecar) does.
 *
 * This file is the single source of truth for the shape: `translate()` in components/ produces values of
 * these types, and the data plane loads them with `loadRuntimeConfig()`. All durations are integer
 * milliseconds (`…Ms`), all sizes integer bytes (`…Bytes`); every list is canonically sorted by the
 * translator so that the same spec always gives byte-identical configs.
 */
import { z } from "zod";

export const RUNTIME_CONFIG_VERSION = 1;

const ms = z.number().int().nonnegative();
/**
 * setTimeout's longest delay. A duration the proxies arm as a timer (a timeout, an interval, a delay) is
 * refused above it: Node fires a longer timer after 1 ms (TimeoutOverflowWarning), which would turn a huge
 * timeout into an immediate one. Durations that are no timers (TTLs, lifetimes) stay unbounded.
 */
export const MAX_TIMER_MS = 2_147_483_647;
const timerMs = ms.max(MAX_TIMER_MS);
const bytes = z.number().int().nonnegative();
const port = z.number().int().min(1).max(65535);
const percent = z.number().min(0).max(100);

/** Every method the proxies route, in canonical order (RFC 9110 §9 and PATCH, RFC 5789). */
export const HTTP_METHODS = [
  "GET",
  "HEAD",
  "POST",
  "PUT",
  "PATCH",
  "DELETE",
  "OPTIONS",
  "TRACE",
  "CONNECT",
] as const;
export const HttpMethod = z.enum(HTTP_METHODS);
export type HttpMethod = z.infer<typeof HttpMethod>;

/** Methods that RFC 9110 §9.2.2 calls idempotent: the only ones retried after bytes were sent. */
export const IDEMPOTENT_METHODS: ReadonlySet<HttpMethod> = new Set([
  "GET",
  "HEAD",
  "PUT",
  "DELETE",
  "OPTIONS",
  "TRACE",
]);

export const RetryOn = z.enum([
  "connect-failure",
  "refused-stream",
  "reset",
  "timeout",
  "5xx",
  "502",
  "503",
  "504",
  "429",
]);
export type RetryOn = z.infer<typeof RetryOn>;

export const RetryPlan = z.strictObject({
  /** Retries after the first attempt (0 = never retry). */
  attempts: z.number().int().min(0).max(10),
  perTryTimeoutMs: timerMs,
  retryOn: z.array(RetryOn),
  backoff: z.strictObject({ baseMs: timerMs, maxMs: timerMs }),
});
export type RetryPlan = z.infer<typeof RetryPlan>;

export const CircuitBreaker = z.strictObject({
  maxConnections: z.number().int().positive(),
  maxPendingRequests: z.number().int().positive(),
  maxRequests: z.number().int().positive(),
});

export const OutlierDetection = z.strictObject({
  consecutive5xx: z.number().int().positive(),
  intervalMs: ms,
  baseEjectionMs: ms,
  maxEjectedPercent: percent,
  /** Percent of available endpoints below which a cluster balances across all of them (0 = never). */
  panicThreshold: percent,
});

/**
 * Retry budget of a cluster (Finagle/Linkerd): retries to it may add at most `ratio` of its requests in
 * a 10-second window, plus `minPerSecond`. One budget per destination, whichever route retries.
 */
export const RetryBudget = z.strictObject({
  ratio: z.number().min(0).max(1),
  minPerSecond: z.number().int().nonnegative(),
});
export type RetryBudget = z.infer<typeof RetryBudget>;

export const LoadBalancer = z.enum(["round-robin", "least-request", "ring-hash"]);

export const HealthCheck = z.strictObject({
  path: z.string(),
  intervalMs: timerMs,
  timeoutMs: timerMs,
  healthyThreshold: z.number().int().positive(),
  unhealthyThreshold: z.number().int().positive(),
});

/** An upstream cluster: one mesh service, reached through its sidecar's inbound port with mTLS. */
/** A client certificate's PEM files: the certificate (leaf first, then its chain) and its private key. */
export const ClientCertificateFiles = z.strictObject({
  certFile: z.string().min(1),
  keyFile: z.string().min(1),
});

export const Cluster = z.strictObject({
  name: z.string(),
  service: z.string(),
  namespace: z.string(),
  port: port,
  protocol: z.enum(["http1", "http2"]),
  loadBalancer: LoadBalancer,
  connectTimeoutMs: timerMs,
  circuitBreaker: CircuitBreaker,
  outlierDetection: OutlierDetection,
  retryBudget: RetryBudget,
  healthCheck: HealthCheck.nullable(),
  /**
   * A backend outside the mesh (the gateway's route to an external destination): the cluster's one
   * endpoint is this DNS name or IP address at `port`, resolved on each connection by the egress rules
   * (loopback, link-local and unspecified answers refused) instead of `discovery`. Absent or null = a mesh
   * service, found by `discovery`.
   */
  address: z.string().min(1).nullable().optional(),
  /**
   * The Host a backend outside the mesh is called with (its name, with the port unless it is the scheme's
   * default) when the route's rewrite.host does not say otherwise. Absent or null = the client's Host.
   */
  authority: z.string().min(1).nullable().optional(),
  /**
   * What the gateway sends a backend outside the mesh about the client: `identity` (the principal headers
   * and forwardClaims headers) and `clientAddress` (X-Forwarded-For, Forwarded, X-Real-IP). Absent or null
   * = a mesh service, which gets both.
   */
  share: z.strictObject({ identity: z.boolean(), clientAddress: z.boolean() }).nullable().optional(),
  tls: z.discriminatedUnion("mode", [
    z.strictObject({ mode: z.literal("mtls"), serverIdentity: z.string() }),
    z.strictObject({ mode: z.literal("none") }),
    /**
     * TLS to a server outside the mesh: its certificate must verify against `ca` (PEM; null = the
     * system's roots) and name `serverName` (also sent as SNI; an IP address is checked against the
     * certificate's IP addresses and not sent).
     */
    z.strictObject({
      mode: z.literal("tls"),
      serverName: z.string(),
      ca: z.string().nullable(),
      /** The certificate presented to the server (mutual TLS); absent or null = none. */
      clientCertificate: ClientCertificateFiles.nullable().optional(),
    }),
  ]),
});
export type Cluster = z.infer<typeof Cluster>;

/** How endpoints of a cluster are found. Targets set this: Kubernetes DNS by default, static ports locally. */
export const Discovery = z.discriminatedUnion("kind", [
  z.strictObject({ kind: z.literal("dns"), template: z.string(), refreshMs: timerMs }),
  z.strictObject({
    kind: z.literal("static"),
    endpoints: z.record(z.string(), z.array(z.strictObject({ host: z.string(), port: port }))),
  }),
]);

export const Telemetry = z.strictObject({
  serviceName: z.string(),
  metrics: z.strictObject({ enabled: z.boolean(), path: z.string() }),
  tracing: z.strictObject({
    enabled: z.boolean(),
    sampling: z.number().min(0).max(1),
    otlpEndpoint: z.string().nullable(),
  }),
  accessLog: z.strictObject({ enabled: z.boolean() }),
});

export const Admin = z.strictObject({
  port: port,
  /**
   * Host names (lower case, no port) the admin answers besides the loopback's (127.0.0.0/8, `localhost`,
   * `[::1]`), checked on **every** connection for all but `/live` and `/ready`. Absent: a connection to a
   * loopback address answers the loopback names only, others any Host. Set where the admin is published
   * on the host's loopback through a port forward (Docker), whose connections arrive from a bridge
   * address, so that a page rebinding its DNS name to 127.0.0.1 is refused there too.
   */
  hosts: z
    .array(
      z
        .string()
        .min(1)
        .max(253)
        .regex(/^[a-z0-9.-]+$/, "a lower-case host name without a port"),
    )
    .min(1)
    .optional(),
});

const HeaderMatch = z.strictObject({
  name: z.string(),
  kind: z.enum(["exact", "prefix", "regex", "present", "absent"]),
  value: z.string().nullable(),
});

export const RouteMatch = z.strictObject({
  /** Path pattern: literal segments, `*` (one segment), `{name}` (one captured segment), trailing `**`. */
  path: z.string(),
  /** Empty = every method. */
  methods: z.array(HttpMethod),
  /** Empty = every host the listener serves. Lower-case; `*.example.com` wildcards allowed. */
  hosts: z.array(z.string()),
  headers: z.array(HeaderMatch),
  query: z.array(HeaderMatch),
});
export type RouteMatch = z.infer<typeof RouteMatch>;

const Backend = z.strictObject({ cluster: z.string(), weight: z.number().int().min(0).max(100) });

export const RouteAction = z.discriminatedUnion("kind", [
  z.strictObject({
    kind: z.literal("forward"),
    backends: z.array(Backend).min(1),
    mirror: z.strictObject({ cluster: z.string(), percent: percent }).nullable(),
    rewrite: z.strictObject({ path: z.string().nullable(), host: z.string().nullable() }).nullable(),
  }),
  z.strictObject({
    kind: z.literal("redirect"),
    status: z.union([z.literal(301), z.literal(302), z.literal(303), z.literal(307), z.literal(308)]),
    scheme: z.enum(["http", "https"]).nullable(),
    host: z.string().nullable(),
    port: port.nullable(),
    path: z.string().nullable(),
  }),
  z.strictObject({
    kind: z.literal("aggregate"),
    parts: z
      .array(
        z.strictObject({
          name: z.string(),
          cluster: z.string(),
          method: HttpMethod,
          path: z.string(),
          timeoutMs: timerMs,
          onError: z.enum(["fail", "omit", "default"]),
          default: z.unknown(),
          /** Client request headers copied to this part (cookies and credentials only when listed here). */
          forwardHeaders: z.array(z.string()),
        }),
      )
      .min(1),
  }),
  z.strictObject({
    kind: z.literal("static"),
    root: z.string(),
    index: z.array(z.string()),
    spaFallback: z.string().nullable(),
    precompressed: z.boolean(),
  }),
]);
export type RouteAction = z.infer<typeof RouteAction>;

const AuthMechanism = z.discriminatedUnion("kind", [
  z.strictObject({ kind: z.literal("jwt"), provider: z.string() }),
  z.strictObject({ kind: z.literal("apiKey") }),
  z.strictObject({ kind: z.literal("clientCert"), provider: z.string() }),
  z.strictObject({ kind: z.literal("oidc"), provider: z.string() }),
]);

/** What a route requires of the caller. `public: false` with no mechanism never happens (translate refuses it). */
export const RouteAuth = z.strictObject({
  public: z.boolean(),
  /** Any one of these authenticates the request. */
  anyOf: z.array(AuthMechanism),
  scopes: z.array(z.string()),
  claims: z.array(z.strictObject({ name: z.string(), values: z.array(z.string()) })),
  consumers: z.array(z.string()),
  groups: z.array(z.string()),
  clientIps: z.array(z.string()),
});
export type RouteAuth = z.infer<typeof RouteAuth>;

export const RateLimit = z.strictObject({
  requests: z.number().int().positive(),
  periodMs: z.number().int().positive(),
  burst: z.number().int().positive(),
  key: z.discriminatedUnion("kind", [
    z.strictObject({ kind: z.enum(["ip", "subject", "consumer", "route"]) }),
    z.strictObject({ kind: z.literal("header"), header: z.string() }),
  ]),
  /** `fleet`: the limit holds across all gateway replicas (Redis, or divided per replica without one). */
  scope: z.enum(["replica", "fleet"]),
});

/** Header operations, applied remove → set → add. Values of add/set are templates (`${params.id}`). */
const HeaderOps = z.strictObject({
  add: z.record(z.string(), z.string()),
  set: z.record(z.string(), z.string()),
  remove: z.array(z.string()),
});
/**
 * JSON body operations on dotted paths (`a.b.c`), applied drop → rename → set → template: `set` values
 * are literal JSON, `template` values are templates rendered per request.
 */
const BodyOps = z.strictObject({
  rename: z.record(z.string(), z.string()),
  drop: z.array(z.string()),
  set: z.record(z.string(), z.unknown()),
  template: z.record(z.string(), z.string()),
});
const Transform = z.strictObject({ headers: HeaderOps, body: BodyOps.nullable() });

export const GatewayRoute = z.strictObject({
  name: z.string(),
  match: RouteMatch,
  action: RouteAction,
  auth: RouteAuth,
  rateLimit: RateLimit.nullable(),
  cache: z
    .strictObject({
      ttlMs: ms,
      vary: z.array(z.string()),
      perPrincipal: z.boolean(),
      maxEntryBytes: bytes,
      /** RFC 5861 windows used when the response names none (0 = only what the origin says). */
      staleWhileRevalidateMs: ms,
      staleIfErrorMs: ms,
    })
    .nullable(),
  transform: z.strictObject({ request: Transform.nullable(), response: Transform.nullable() }),
  fault: z
    .strictObject({
      delay: z.strictObject({ ms: timerMs, percent: percent }).nullable(),
      abort: z.strictObject({ status: z.number().int().min(200).max(599), percent: percent }).nullable(),
    })
    .nullable(),
  cors: z
    .strictObject({
      origins: z.array(z.string()),
      methods: z.array(HttpMethod),
      headers: z.array(z.string()),
      exposeHeaders: z.array(z.string()),
      credentials: z.boolean(),
      maxAgeSeconds: z.number().int().nonnegative(),
    })
    .nullable(),
  timeoutMs: timerMs,
  retry: RetryPlan,
  limits: z.strictObject({
    maxBodyBytes: bytes,
    /**
     * Upstream response bodies larger than this are refused (502 before the head was sent, a reset
     * after). null = streamed responses are not limited; routes that buffer responses (aggregate, a
     * response body transform) always have a limit.
     */
    maxResponseBytes: bytes.nullable(),
  }),
});
export type GatewayRoute = z.infer<typeof GatewayRoute>;

export const JwtProvider = z.strictObject({
  name: z.string(),
  issuer: z.string(),
  audiences: z.array(z.string()).min(1),
  algorithms: z.array(z.string()).min(1),
  jwksUri: z.string().nullable(),
  jwks: z.strictObject({ keys: z.array(z.record(z.string(), z.unknown())) }).nullable(),
  clockSkewMs: ms,
  tokenFrom: z.strictObject({
    header: z.string(),
    prefix: z.string(),
    cookie: z.string().nullable(),
    query: z.string().nullable(),
  }),
  forwardClaims: z.record(z.string(), z.string()),
});

export const ApiKeys = z.strictObject({
  header: z.string(),
  consumers: z.array(
    z.strictObject({ name: z.string(), keyHashes: z.array(z.string()).min(1), groups: z.array(z.string()) }),
  ),
});

export const ClientCertProvider = z.strictObject({
  name: z.string(),
  caFile: z.string(),
  subjects: z.array(z.string()),
  sans: z.array(z.string()),
});

export const OidcProvider = z.strictObject({
  name: z.string(),
  issuer: z.string(),
  clientId: z.string(),
  clientSecretEnv: z.string(),
  redirectPath: z.string(),
  scopes: z.array(z.string()),
  cookieName: z.string(),
  sessionTtlMs: ms,
});

export const Listener = z.strictObject({
  name: z.string(),
  port: port,
  protocol: z.enum(["http", "https"]),
  http2: z.boolean(),
  /**
   * Every connection starts with a PROXY protocol header (v1 or v2) naming the client's address; one
   * without it is closed (runtime/net/proxy-protocol.ts). Absent: no header.
   */
  proxyProtocol: z.literal(true).optional(),
  /** CIDR ranges a PROXY header is taken from (a connection from elsewhere is closed). Absent: any. */
  proxyProtocolSources: z.array(z.string()).min(1).optional(),
  tls: z
    .strictObject({
      minVersion: z.enum(["TLSv1.2", "TLSv1.3"]),
      certificates: z
        .array(z.strictObject({ hosts: z.array(z.string()), certFile: z.string(), keyFile: z.string() }))
        .min(1),
    })
    .nullable(),
});

/**
 * A proxy's workload identity on disk (an X.509-SVID, its key, the trust bundle) and the CA timing it
 * works with. The files are re-read when they change (Kubernetes swaps a mounted Secret's directory
 * atomically; the local mode writes each file atomically), so the paths, not the contents, are config.
 * Where they live depends on the target: a Kubernetes Secret mounted at `/etc/meshgate/identity/`, or
 * `<stateDir>/identities/<workload>/` in local mode.
 */
export const Svid = z.strictObject({
  /** PEM: the leaf SVID, then the intermediates it presents (what the proxy sends in a handshake). */
  certFile: z.string().min(1),
  /** PEM: the leaf's PKCS#8 private key. */
  keyFile: z.string().min(1),
  /** PEM: the trust bundle of the trust domain (one or more roots). */
  bundleFile: z.string().min(1),
  /**
   * PEM: intermediates of the trust domain that peers' leaves may be issued by, besides the proxy's own
   * (an intermediate rotation adds the new one here first). A missing file counts as empty.
   */
  intermediatesFile: z.string().min(1).nullable(),
  /** Renew (or warn) this long before the leaf expires, but never later than half-way through it. */
  renewBeforeMs: ms,
  /** notBefore of issued certificates is backdated by this much. */
  clockSkewMs: ms,
  /**
   * Development only: a CA directory (`meshgate pki init`) whose intermediate the proxy uses to issue its
   * own SVID at renewal time and write it to the files above. Null in production: the issuer (the local
   * mode, cert-manager, Pulumi) writes the files and the proxy only reads them.
   */
  issuer: z.strictObject({ caDir: z.string().min(1), workloadTtlMs: z.number().int().positive() }).nullable(),
});
export type Svid = z.infer<typeof Svid>;

const Common = {
  version: z.literal(RUNTIME_CONFIG_VERSION),
  mesh: z.string(),
  name: z.string(),
  namespace: z.string(),
  trustDomain: z.string(),
  identity: z.string(),
  mtls: z.enum(["strict", "permissive"]),
  discovery: Discovery,
  admin: Admin,
  telemetry: Telemetry,
  clusters: z.array(Cluster),
  /** sha256 of the canonical JSON of everything else; set by `sealRuntimeConfig`. */
  hash: z.string().regex(/^sha256:[0-9a-f]{64}$/),
};

export const GatewayRuntimeConfig = z.strictObject({
  ...Common,
  kind: z.literal("gateway"),
  /** The gateway's mesh identity, for mTLS to clusters with `tls.mode: "mtls"`; null = none (those fail closed). */
  svid: Svid.nullable(),
  hosts: z.array(z.string()),
  listeners: z.array(Listener).min(1),
  clientIp: z.strictObject({
    trustedHops: z.number().int().min(0).max(10),
    /**
     * The trusted proxies' addresses (CIDR ranges), instead of a hop count: the client is the rightmost
     * entry that is not one of them, provided the connection comes from one. Absent: hop count only.
     */
    trustedProxies: z.array(z.string()).min(1).optional(),
    /** The header trusted proxies append the client address to. */
    header: z.enum(["x-forwarded-for", "forwarded"]),
  }),
  limits: z.strictObject({
    maxHeaderBytes: bytes,
    maxBodyBytes: bytes,
    headerTimeoutMs: timerMs,
    requestTimeoutMs: timerMs,
    idleTimeoutMs: timerMs,
    maxConnections: z.number().int().positive(),
    drainTimeoutMs: timerMs,
  }),
  auth: z.strictObject({
    jwt: z.array(JwtProvider),
    apiKeys: ApiKeys.nullable(),
    clientCert: z.array(ClientCertProvider),
    oidc: z.array(OidcProvider),
  }),
  rateLimitStore: z.discriminatedUnion("kind", [
    z.strictObject({ kind: z.literal("local"), replicas: z.number().int().positive() }),
    z.strictObject({
      kind: z.literal("redis"),
      url: z.string(),
      failMode: z.enum(["open", "closed"]),
      timeoutMs: timerMs,
    }),
  ]),
  cacheStore: z.discriminatedUnion("kind", [
    z.strictObject({ kind: z.literal("memory"), maxBytes: bytes }),
    z.strictObject({
      kind: z.literal("redis"),
      url: z.string(),
      maxBytes: bytes,
      timeoutMs: timerMs,
      /** The local layer in each process (0 = none): RedisStore `local`. */
      localMaxBytes: bytes,
    }),
  ]),
  routes: z.array(GatewayRoute),
});
export type GatewayRuntimeConfig = z.infer<typeof GatewayRuntimeConfig>;

export const AuthzRule = z.strictObject({
  /** Where the rule came from in the spec, for explanations (`services.orders.allow[0]`). */
  source: z.string(),
  /** Allowed peer SPIFFE IDs. */
  from: z.array(z.string()).min(1),
  /** Empty = every method. */
  methods: z.array(HttpMethod),
  /** Path patterns; empty = every path. */
  paths: z.array(z.string()),
});
export type AuthzRule = z.infer<typeof AuthzRule>;

export const ServiceRoutePolicy = z.strictObject({
  name: z.string(),
  match: z.strictObject({ path: z.string(), methods: z.array(HttpMethod) }),
  timeoutMs: timerMs,
  retry: RetryPlan,
});

/**
 * Headers the gateway sets from the principal it authenticated (its clients' copies are removed on every
 * route); upstreams read the end user from them. A sidecar passes them to its app only from the peers its
 * config names (SidecarRuntimeConfig.inbound.principalHeaders).
 */
export const PRINCIPAL_HEADERS = [
  "x-meshgate-subject",
  "x-meshgate-consumer",
  "x-meshgate-groups",
  "x-meshgate-scopes",
  "x-meshgate-auth",
] as const;

export const SidecarRuntimeConfig = z.strictObject({
  ...Common,
  kind: z.literal("sidecar"),
  /** The workload's identity: served on the inbound listener, presented on outbound connections. */
  svid: Svid,
  inbound: z.strictObject({
    port: port,
    appPort: port,
    protocol: z.enum(["http1", "http2"]),
    /** Deny-by-default: a request is allowed only when a rule below matches it. */
    authz: z.strictObject({ default: z.literal("deny"), rules: z.array(AuthzRule) }),
    limits: z.strictObject({ maxHeaderBytes: bytes, maxBodyBytes: bytes, headerTimeoutMs: timerMs }),
    /**
     * The headers that assert an end user — PRINCIPAL_HEADERS and every JWT provider's forwardClaims
     * headers, lower-case, sorted — reach the app only from the peers in `from` (the gateway's SPIFFE ID;
     * empty without a gateway). From any other caller, mTLS or plaintext, they are dropped: an allowed
     * caller must not be able to say which user its request is for.
     */
    principalHeaders: z.strictObject({ names: z.array(z.string()), from: z.array(z.string()) }),
  }),
  outbound: z.strictObject({
    /** The HTTP proxy port on 127.0.0.1: `GET http://orders/x` (absolute form) or `Host: orders`. */
    port: port,
    services: z.array(
      z.strictObject({
        service: z.string(),
        cluster: z.string(),
        /**
         * A port on 127.0.0.1 that forwards every request to this service, for apps that cannot use an
         * HTTP proxy (`http://127.0.0.1:<localPort>/…`); null = only through the proxy port.
         */
        localPort: port.nullable(),
        timeoutMs: timerMs,
        retry: RetryPlan,
        routes: z.array(ServiceRoutePolicy),
      }),
    ),
    /**
     * Destinations outside the mesh this workload may reach (spec `external`, whose allow rules admit
     * it and which it calls), sorted by name; every other destination outside the mesh is refused.
     * Reached by `CONNECT <host>:<port>` on the proxy port (HTTPS_PROXY), by plain HTTP requests to
     * `http://<host>:<port>/…` on the proxy port (HTTP_PROXY; forwarded, or over TLS the sidecar
     * originates), or through `localPort`: a TCP port on 127.0.0.1 relayed to host:port, for clients that
     * cannot use a proxy (databases).
     */
    external: z.array(
      z
        .strictObject({
          name: z.string(),
          /**
           * A lower-case DNS name, an IPv4 / IPv6 address (no brackets), or a wildcard `*.<name>`: every name
           * below <name> (decide/external.ts), or a CIDR range `10.20.0.0/16` / `2001:db8::/48`: connected
           * to by the name or address the app asked for.
           */
          host: z.string().min(1),
          port: port,
          localPort: port.nullable(),
          connectTimeoutMs: timerMs,
          /** Total time for a plain HTTP request forwarded to it (requests are never retried). */
          timeoutMs: timerMs,
          /**
           * The most connections this sidecar keeps to it at once (Istio's connectionPool.tcp.maxConnections):
           * its CONNECT tunnels and local-port relays together — one past it is refused (503
           * `egress_overflow`; a local-port connection is closed) — and, apart, its pooled plain-HTTP
           * connections (requests past it queue, then overflow). null = no limit of its own.
           */
          maxConnections: z.number().int().positive().nullable(),
          /**
           * `passthrough`: the app does TLS itself (CONNECT), plain HTTP is forwarded in the clear.
           * `originate`: the sidecar opens TLS to host:port, verifying its certificate for `host` — plain
           * HTTP requests (`http://<host>/…`) and the local port's bytes travel inside it; CONNECT tunnels
           * stay the app's own TLS.
           */
          tls: z.enum(["passthrough", "originate"]),
          /** PEM certificates the originated TLS trusts instead of the system's roots; null = the system's. */
          ca: z.string().nullable(),
          /**
           * The client certificate the originated TLS presents (mutual TLS to a partner): PEM files, read
           * when the config loads and re-read when they change (runtime/upstream/client-cert.ts); null = none.
           */
          clientCertificate: ClientCertificateFiles.nullable(),
        })
        // A wildcard host (`*.example.com`) or a range (`10.20.0.0/16`) names no one destination a local
        // port could relay to.
        .refine((e) => !((e.host.startsWith("*.") || e.host.includes("/")) && e.localPort !== null), {
          message:
            "an external with a wildcard host or a CIDR range has no local port (localPort must be null)",
          path: ["localPort"],
        })
        .refine((e) => e.clientCertificate === null || e.tls === "originate", {
          message:
            "a client certificate is presented only on TLS the sidecar originates (tls must be originate)",
          path: ["clientCertificate"],
        }),
    ),
  }),
});
export type SidecarRuntimeConfig = z.infer<typeof SidecarRuntimeConfig>;

export const RuntimeConfig = z.discriminatedUnion("kind", [GatewayRuntimeConfig, SidecarRuntimeConfig]);
export type RuntimeConfig = z.infer<typeof RuntimeConfig>;
