/**
 * The mesh spec: zod strict schemas for the whole vocabulary (mesh, services, gateway, observability,
 * targets). Unknown keys are errors everywhere. Defaults come from `DEFAULTS` (defaults.ts). Checks that
 * look at one field live here; checks across fields and references live in semantic.ts, which runs even
 * when this schema fails, so that one run reports every error of a file.
 */
import { z } from "zod";
import { HTTP_METHODS } from "../../runtime/contract/schema.ts";
import { DEFAULTS, PROXY_PORTS } from "./defaults.ts";
import { DURATION_PATTERN, SIZE_PATTERN, parseDuration, parseSize } from "./units.ts";

// ───────────────────────────── formats ─────────────────────────────

/** A pattern-checked string format and the error code a mismatch reports. */
export interface StringFormat {
  readonly pattern: RegExp;
  readonly code:
    | "E_SPEC_INVALID_DURATION"
    | "E_SPEC_INVALID_SIZE"
    | "E_SPEC_INVALID_NAME"
    | "E_SPEC_INVALID_HOST"
    | "E_SPEC_INVALID_TRUST_DOMAIN"
    | "E_SPEC_INVALID_KEY_HASH"
    | "E_SPEC_INVALID_IMAGE"
    | "E_SPEC_INVALID_VALUE";
  readonly message: string;
  readonly hint: string;
}

export const FORMATS = {
  duration: {
    pattern: new RegExp(DURATION_PATTERN),
    code: "E_SPEC_INVALID_DURATION",
    message: "not a duration",
    hint: 'write a number and a unit: "500ms", "2s", "1m30s", "24h", "10y"',
  },
  size: {
    pattern: new RegExp(SIZE_PATTERN),
    code: "E_SPEC_INVALID_SIZE",
    message: "not a size",
    hint: 'write a number and a unit: "512B", "16KiB", "1MiB", "1GiB"',
  },
  name: {
    pattern: /^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$/,
    code: "E_SPEC_INVALID_NAME",
    message: "not a DNS label",
    hint: "use lower-case letters, digits and '-', starting with a letter, at most 63 characters (e.g. \"orders-v2\")",
  },
  host: {
    pattern: /^(\*\.)?([a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?\.)*[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/,
    code: "E_SPEC_INVALID_HOST",
    message: "not a host name",
    hint: 'write a lower-case DNS name such as "api.shop.example", or "*.shop.example" for a wildcard',
  },
  trustDomain: {
    pattern: /^(?=[a-z0-9._-]*[a-z0-9])[a-z0-9._-]{1,255}$/,
    code: "E_SPEC_INVALID_TRUST_DOMAIN",
    message: "not a SPIFFE trust domain",
    hint: 'use lower-case letters, digits, ".", "_" and "-" only, e.g. "shop.example"',
  },
  keyHash: {
    pattern: /^sha256:[0-9a-f]{64}$/,
    code: "E_SPEC_INVALID_KEY_HASH",
    message: "not an API-key hash",
    hint: 'store "sha256:" + the hex SHA-256 of the key, e.g. `printf %s "$KEY" | sha256sum`',
  },
  image: {
    // registry/name[:tag][@sha256:digest], with a tag or a digest required (":latest" is refused separately).
    pattern:
      /^(?:[a-z0-9.-]+(?::[0-9]+)?\/)?[a-z0-9]+(?:[._-][a-z0-9]+)*(?:\/[a-z0-9]+(?:[._-][a-z0-9]+)*)*(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}|@sha256:[0-9a-f]{64}|:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}@sha256:[0-9a-f]{64})$/,
    code: "E_SPEC_INVALID_IMAGE",
    message: "not a pinned image reference",
    hint: 'write registry/name:tag or name@sha256:<digest>, e.g. "ghcr.io/acme/orders:1.4.2"',
  },
  headerName: {
    pattern: /^[a-z0-9!#$%&'*+.^_`|~-]+$/,
    code: "E_SPEC_INVALID_VALUE",
    message: "not a lower-case HTTP header name",
    hint: 'write header names in lower case, e.g. "x-request-id"',
  },
} as const satisfies Record<string, StringFormat>;

const fmt = (f: StringFormat) => z.string().regex(f.pattern, { error: f.message });

/**
 * The longest duration and the largest size a spec may hold: beyond them a value is no exact integer of
 * milliseconds or bytes (the proxies refuse such a config at start, and a certificate cannot end there).
 */
export const MAX_DURATION = "1000y";
export const MAX_SIZE = "1048576GiB";
const boundedBy = (max: string, parse: (v: string) => number, pattern: RegExp, hint?: string) =>
  [
    (v: string) => !pattern.test(v) || parse(v) <= parse(max),
    {
      error: `must be at most ${max}`,
      params: { code: "E_SPEC_OUT_OF_RANGE", hint: hint ?? `use a value of at most ${max}` },
    },
  ] as const;

/**
 * The longest duration a proxy arms as a timer (a timeout, an interval, a delay). Node's timers hold at
 * most 2^31−1 ms (about 24.8 days): a longer one fires after 1 ms (TimeoutOverflowWarning), so a 30d
 * timeout would be an immediate one. Lifetimes and windows that are no timers (cache TTLs, certificate
 * lifetimes, SLO windows) keep MAX_DURATION.
 */
export const MAX_TIMER = "24d";
const duration = (opts?: { description?: string; positive?: boolean; timer?: boolean }) => {
  let s = fmt(FORMATS.duration).refine(
    ...(opts?.timer
      ? boundedBy(
          MAX_TIMER,
          parseDuration,
          FORMATS.duration.pattern,
          `the proxies arm this as a timer, which holds at most about 24.8 days; use a value of at most ${MAX_TIMER}`,
        )
      : boundedBy(MAX_DURATION, parseDuration, FORMATS.duration.pattern)),
  );
  // A rate the generated Prometheus config and rules are written in: 0 (or under 1ms) has no meaning there.
  if (opts?.positive)
    s = s.refine((v) => !FORMATS.duration.pattern.test(v) || parseDuration(v) >= 1, {
      error: "must be at least 1ms",
      params: { code: "E_SPEC_OUT_OF_RANGE", hint: "give a duration above 0, e.g. 15s" },
    });
  return opts?.description ? s.describe(opts.description) : s;
};
/** A duration with an upper bound that meshgate enforces whatever the spec says. */
const boundedDuration = (max: string, description: string) =>
  fmt(FORMATS.duration)
    .refine((v) => !FORMATS.duration.pattern.test(v) || parseDuration(v) <= parseDuration(max), {
      error: `must be at most ${max}`,
      params: { code: "E_SPEC_LIMIT_TOO_LOOSE", hint: `meshgate refuses more than ${max} here; lower it` },
    })
    .describe(description);
const size = (description?: string) => {
  const s = fmt(FORMATS.size).refine(...boundedBy(MAX_SIZE, parseSize, FORMATS.size.pattern));
  return description ? s.describe(description) : s;
};
const name = () => fmt(FORMATS.name);
const host = () => fmt(FORMATS.host);
const headerName = () => fmt(FORMATS.headerName);
const port = () => z.number().int().min(1).max(65535);
const percent = () => z.number().min(0).max(100);

export { HTTP_METHODS };
const Method = z.enum(HTTP_METHODS);

/** Path patterns: `/a/b` exact, `*` one segment, `{name}` one captured segment, trailing `**` any rest. */
const PathPattern = z.string().describe("Path pattern: literal segments, `*`, `{param}`, trailing `**`.");

/** Asymmetric JWS algorithms only: `none` and HMAC (`HS*`) are refused (RFC 8725, alg confusion). */
export const JWT_ALGORITHMS = [
  "RS256",
  "RS384",
  "RS512",
  "PS256",
  "PS384",
  "PS512",
  "ES256",
  "ES384",
  "ES512",
  "EdDSA",
] as const;

// ───────────────────────────── mesh ─────────────────────────────

export const RETRY_ON = [
  "connect-failure",
  "refused-stream",
  "reset",
  "timeout",
  "5xx",
  "502",
  "503",
  "504",
  "429",
] as const;

/** Retry policy; every field optional in overrides (merged over the defaults). */
const RetriesShape = {
  attempts: z.number().int().min(0).max(10).describe("Retries after the first attempt (0 disables retries)."),
  perTryTimeout: duration({ description: "Timeout of each attempt.", timer: true }),
  on: z.array(z.enum(RETRY_ON)).describe("Failures that may be retried."),
  backoff: z
    .strictObject({ base: duration({ timer: true }), max: duration({ timer: true }) })
    .partial()
    .describe("Jittered exponential backoff between attempts."),
};
/** Route-level retry overrides: a budget belongs to the destination service, not to a route. */
const RetriesOverride = z.strictObject(RetriesShape).partial();
/** Service-level retry policy: may also set the service's retry budget. */
const ServiceRetries = z
  .strictObject({
    ...RetriesShape,
    budget: z
      .strictObject({
        ratio: z
          .number()
          .min(0)
          .max(1)
          .describe("Retries to this service may add at most this fraction of requests."),
        minPerSecond: z
          .number()
          .int()
          .min(0)
          .describe("Retries always allowed per second regardless of ratio."),
      })
      .partial()
      .describe("The service's retry budget, shared by every caller and route that retries to it."),
  })
  .partial();

const CircuitBreakerOverride = z
  .strictObject({
    maxConnections: z.number().int().positive(),
    maxPendingRequests: z.number().int().positive(),
    maxRequests: z.number().int().positive(),
    consecutive5xx: z.number().int().positive().describe("Consecutive 5xx that eject an endpoint."),
    interval: duration(),
    baseEjection: duration({
      description:
        "First ejection time; multiplied by the ejection count, up to 300 s (or this time when longer).",
    }),
    maxEjectedPercent: percent(),
    panicThreshold: percent().describe(
      "Below this percentage of available endpoints, requests go to every endpoint, available or not (panic routing); 0 fails fast instead.",
    ),
  })
  .partial();

const LoadBalancer = z.enum(["round-robin", "least-request", "ring-hash"]);

const D = DEFAULTS;

const MeshDefaults = z.strictObject({
  timeout: duration({ description: "Total time for one call, retries included.", timer: true }).default(
    D["mesh.defaults.timeout"].value,
  ),
  connectTimeout: duration({
    description:
      "Time to open a connection to a service or an external destination. `0s`: no timeout of meshgate's own — the system's (on Linux about 2 minutes of SYN retries).",
    timer: true,
  }).default(D["mesh.defaults.connectTimeout"].value),
  retries: z
    .strictObject({
      attempts: RetriesShape.attempts.default(D["mesh.defaults.retries.attempts"].value),
      perTryTimeout: RetriesShape.perTryTimeout.default(D["mesh.defaults.retries.perTryTimeout"].value),
      on: RetriesShape.on.default([...D["mesh.defaults.retries.on"].value]),
      backoff: z
        .strictObject({
          base: duration({ timer: true }).default(D["mesh.defaults.retries.backoff.base"].value),
          max: duration({ timer: true }).default(D["mesh.defaults.retries.backoff.max"].value),
        })
        .prefault({}),
      budget: z
        .strictObject({
          ratio: z.number().min(0).max(1).default(D["mesh.defaults.retries.budget.ratio"].value),
          minPerSecond: z.number().int().min(0).default(D["mesh.defaults.retries.budget.minPerSecond"].value),
        })
        .prefault({}),
    })
    .prefault({}),
  circuitBreaker: z
    .strictObject({
      maxConnections: z
        .number()
        .int()
        .positive()
        .default(D["mesh.defaults.circuitBreaker.maxConnections"].value),
      maxPendingRequests: z
        .number()
        .int()
        .positive()
        .default(D["mesh.defaults.circuitBreaker.maxPendingRequests"].value),
      maxRequests: z.number().int().positive().default(D["mesh.defaults.circuitBreaker.maxRequests"].value),
      consecutive5xx: z
        .number()
        .int()
        .positive()
        .default(D["mesh.defaults.circuitBreaker.consecutive5xx"].value),
      interval: duration().default(D["mesh.defaults.circuitBreaker.interval"].value),
      baseEjection: duration().default(D["mesh.defaults.circuitBreaker.baseEjection"].value),
      maxEjectedPercent: percent().default(D["mesh.defaults.circuitBreaker.maxEjectedPercent"].value),
      panicThreshold: percent().default(D["mesh.defaults.circuitBreaker.panicThreshold"].value),
    })
    .prefault({}),
  loadBalancer: LoadBalancer.default(D["mesh.defaults.loadBalancer"].value),
});

const Mesh = z.strictObject({
  mtls: z
    .enum(["strict", "permissive"])
    .default(D["mesh.mtls"].value)
    .describe("strict: mTLS required on every hop. permissive: plaintext also accepted (migrations only)."),
  ca: z
    .strictObject({
      provider: z.enum(["meshgate", "cert-manager"]).default(D["mesh.ca.provider"].value),
      rootValidity: duration().default(D["mesh.ca.rootValidity"].value),
      intermediateValidity: duration().default(D["mesh.ca.intermediateValidity"].value),
      workloadTtl: duration({ description: "Lifetime of workload SVIDs." }).default(
        D["mesh.ca.workloadTtl"].value,
      ),
      renewBefore: duration({ description: "Renew an SVID when this much lifetime is left." }).default(
        D["mesh.ca.renewBefore"].value,
      ),
      clockSkew: duration().default(D["mesh.ca.clockSkew"].value),
    })
    .prefault({}),
  defaults: MeshDefaults.prefault({}),
});

// ───────────────────────────── services ─────────────────────────────

const AllowRule = z.strictObject({
  from: z
    .array(z.string())
    .min(1)
    .describe('Callers allowed: service names or "gateway". Everything else is denied.'),
  methods: z.array(Method).optional().describe("Allowed methods; omitted = every method."),
  paths: z.array(PathPattern).optional().describe("Allowed path patterns; omitted = every path."),
});

const ServiceRoute = z.strictObject({
  name: name(),
  match: z.strictObject({ path: PathPattern, methods: z.array(Method).optional() }),
  timeout: duration({ timer: true }).optional(),
  retries: RetriesOverride.optional(),
});

const HealthCheck = z.strictObject({
  path: PathPattern,
  interval: duration({ timer: true }).default("10s"),
  timeout: duration({ timer: true }).default("1s"),
  healthyThreshold: z.number().int().positive().default(2),
  unhealthyThreshold: z.number().int().positive().default(3),
});

const LOCAL_PORTS = PROXY_PORTS.localPortRange;
/** A pinned local port of the sidecars (Consul's local_bind_port): in the range the hashed ones use. */
const localPort = (what: string) =>
  z
    .number()
    .int()
    .min(LOCAL_PORTS.first)
    .max(LOCAL_PORTS.first + LOCAL_PORTS.size - 1)
    .optional()
    .describe(
      `The port on 127.0.0.1 at which every caller's sidecar offers ${what}, instead of the one a hash of the name picks (for an app that hard-codes it); ${LOCAL_PORTS.first}–${LOCAL_PORTS.first + LOCAL_PORTS.size - 1}, one name per port.`,
    );

const Service = z.strictObject({
  image: fmt(FORMATS.image).describe("Container image, pinned by tag or digest."),
  port: port().describe("Port the application listens on (inside its pod, on localhost)."),
  localPort: localPort("this service"),
  protocol: z.enum(["http", "http2", "grpc"]).default(D["services.*.protocol"].value),
  replicas: z.number().int().min(0).max(1000).default(D["services.*.replicas"].value),
  calls: z
    .array(z.string())
    .default([])
    .describe(
      "Declared dependencies: the services and external destinations this one calls (the call graph).",
    ),
  allow: z.array(AllowRule).default([]).describe("Inbound authorization rules; deny by default."),
  routes: z.array(ServiceRoute).optional().describe("Per-route timeout/retry overrides that callers apply."),
  timeout: duration({ timer: true }).optional(),
  connectTimeout: duration({
    description:
      "Time to open a connection to this service; default mesh.defaults.connectTimeout. `0s`: no timeout of meshgate's own — the system's (on Linux about 2 minutes of SYN retries); a call's `timeout` still ends it.",
    timer: true,
  }).optional(),
  retries: ServiceRetries.optional(),
  circuitBreaker: CircuitBreakerOverride.optional(),
  loadBalancer: LoadBalancer.optional(),
  healthCheck: HealthCheck.optional(),
  limits: z
    .strictObject({
      maxHeaderSize: size().default(D["services.*.limits.maxHeaderSize"].value),
      maxBodySize: size().default(D["services.*.limits.maxBodySize"].value),
      headerTimeout: boundedDuration("15s", "Time the sidecar allows for request headers.").default(
        D["services.*.limits.headerTimeout"].value,
      ),
    })
    .prefault({}),
  resources: z
    .strictObject({
      cpu: z.string().regex(/^[0-9]+(\.[0-9]+)?m?$/, { error: 'not a CPU quantity (e.g. "250m", "1")' }),
      memory: z
        .string()
        .regex(/^[0-9]+(Ki|Mi|Gi|K|M|G)?$/, { error: 'not a memory quantity (e.g. "256Mi")' }),
    })
    .optional(),
  env: z.record(z.string(), z.string()).optional(),
  local: z
    .strictObject({
      command: z.union([z.string(), z.array(z.string()).min(1)]),
      env: z.record(z.string(), z.string()).optional(),
      cwd: z.string().optional(),
    })
    .optional()
    .describe("How `meshgate up` runs this service locally; omitted = the built-in demo service."),
});

// ───────────────────────────── external ─────────────────────────────

const ExternalAllowRule = z.strictObject({
  from: z
    .array(z.string())
    .min(1)
    .describe("Services allowed to reach this destination. Everything else is denied."),
});

const External = z
  .strictObject({
    host: z
      .string()
      .describe(
        "The destination: a lower-case DNS name, an IPv4 / IPv6 address, or a wildcard `*.<domain>` — every name below " +
          "the domain (`*.s3.amazonaws.com`: `b.s3.amazonaws.com`, `x.b.s3.amazonaws.com`; not the domain itself), reached " +
          "by CONNECT and plain HTTP (no local port) — or a CIDR range such as `10.20.0.0/16`: every address in it (no local " +
          "port; none that is loopback, link-local or unspecified). An exact host wins over a pattern, a longer wildcard or " +
          "prefix over a shorter.",
      ),
    port: port().describe("The destination's TCP port."),
    localPort: localPort("a TCP relay to this destination (one host only: not a wildcard or a range)"),
    connectTimeout: duration({
      description:
        "Time to open the connection; default mesh.defaults.connectTimeout. `0s`: no timeout of meshgate's own — the system's (on Linux about 2 minutes of SYN retries).",
      timer: true,
    }).optional(),
    timeout: duration({
      description:
        "Total time for a plain HTTP request forwarded to it (never retried); default mesh.defaults.timeout.",
      timer: true,
    }).optional(),
    maxConnections: z
      .number()
      .int()
      .min(1)
      .max(65535)
      .optional()
      .describe(
        "The most connections each caller's sidecar keeps to it at once (Istio's connectionPool.tcp.maxConnections): its CONNECT tunnels and local-port relays together — one more is refused (503 egress_overflow; a local-port connection is closed) — and, apart, its pooled plain-HTTP connections, past which requests queue; for the gateway, its pooled connections for routes to it. Omitted: no limit of its own (the pools' 1024).",
      ),
    tls: z
      .enum(["passthrough", "originate"])
      .default("passthrough")
      .describe(
        "`passthrough`: the app does TLS itself (CONNECT through HTTPS_PROXY); plain HTTP to it is forwarded as " +
          "it is. `originate`: the sidecar opens TLS to it and verifies its certificate for `host` — the app " +
          "calls `http://<host>/…` through HTTP_PROXY (or writes to the local port) and the bytes leave encrypted.",
      ),
    ca: z
      .string()
      .optional()
      .describe(
        "PEM certificates the originated TLS trusts instead of the system's roots (a private CA); only with `tls: originate`.",
      ),
    clientCertificate: z
      .strictObject({
        secret: name()
          .optional()
          .describe(
            "A Kubernetes TLS Secret (tls.crt, tls.key) in the services' namespace, mounted read-only into the sidecars of its callers; on Docker, the secret's files come from the platform's tlsCertificates.",
          ),
        certFile: z
          .string()
          .min(1)
          .optional()
          .describe("The certificate's PEM file (leaf first, then its chain) as the sidecar sees it."),
        keyFile: z.string().min(1).optional().describe("Its private key's PEM file (unencrypted)."),
      })
      .optional()
      .describe(
        "The certificate the sidecar presents on the TLS it originates (mutual TLS to a partner that authenticates callers by certificate); only with `tls: originate`. Either `secret`, or both `certFile` and `keyFile`. The files are re-read when they change (a renewed Secret): new connections present the new certificate.",
      ),
    share: z
      .strictObject({
        identity: z
          .boolean()
          .default(D["external.*.share.identity"].value)
          .describe(
            "Send the authenticated principal: x-meshgate-subject, -consumer, -groups, -scopes, -auth and the jwt providers' forwardClaims headers.",
          ),
        clientAddress: z
          .boolean()
          .default(D["external.*.share.clientAddress"].value)
          .describe("Send the client's address: X-Forwarded-For, Forwarded, X-Real-IP."),
      })
      .prefault({})
      .describe(
        "What the gateway's routes to it send about the client besides the request itself. A mesh service gets all of it; a third party gets none of it unless you say so here.",
      ),
    allow: z
      .array(ExternalAllowRule)
      .default([])
      .describe("Which services may reach it (their sidecars relay the connection); deny by default."),
  })
  .describe(
    "A destination outside the mesh (a database, a SaaS API). Callers list it in `calls`; their sidecars relay " +
      "CONNECT tunnels, plain HTTP requests and a local TCP port to it, and nothing else outside the mesh.",
  );

// ───────────────────────────── gateway ─────────────────────────────

const HeaderCondition = z.union(
  [
    z.string(),
    z.strictObject({
      exact: z.string().optional(),
      prefix: z.string().optional(),
      regex: z.string().optional(),
      present: z.literal(true).optional(),
      absent: z.literal(true).optional(),
    }),
  ],
  {
    error:
      'expected a string (exact match) or one of {exact|prefix|regex: "…"} / {present: true} / {absent: true}',
  },
);

const RouteMatch = z.strictObject({
  path: PathPattern,
  methods: z.array(Method).optional().describe("Omitted = every method."),
  hosts: z.array(host()).optional().describe("Omitted = every gateway host."),
  headers: z.record(headerName(), HeaderCondition).optional(),
  query: z.record(z.string(), HeaderCondition).optional(),
});

const ServiceTarget = z.union(
  [
    z.string(),
    z.strictObject({ service: z.string() }),
    z.strictObject({
      external: z
        .string()
        .describe(
          "An external destination (spec `external`) whose allow rules name `gateway`: a backend outside the mesh (a partner's API, a legacy system), reached at its host and port — with TLS verified for its host when it says `tls: originate` (and its client certificate, for mutual TLS), plain HTTP otherwise. Host is set to the destination's unless rewrite.host says otherwise; what it is told about the client is its `share`.",
        ),
    }),
  ],
  {
    error: 'expected a service name, { service: "<name>" } or { external: "<name>" }',
  },
);

const HeaderOps = z
  .strictObject({
    add: z
      .record(headerName(), z.string())
      .describe("Append a value (templates allowed: ${params.id}, ${request.header.x}, …)."),
    set: z.record(headerName(), z.string()).describe("Replace the header's value (templates allowed)."),
    remove: z.array(headerName()),
  })
  .partial()
  .describe("Applied remove → set → add. Hop-by-hop and gateway-owned headers are refused.");
const BodyOps = z
  .strictObject({
    rename: z.record(z.string(), z.string()).describe("JSON field renames: { from: to } (dotted paths)."),
    drop: z.array(z.string()).describe("JSON fields to remove (dotted paths)."),
    set: z.record(z.string(), z.unknown()).describe("JSON fields to set to literal values (dotted paths)."),
    template: z
      .record(z.string(), z.string())
      .describe('JSON fields to set to a rendered template, e.g. { userId: "${params.id}" }.'),
  })
  .partial()
  .describe("JSON body mapping (application/json and +json only), applied drop → rename → set → template.");
const Transform = z.strictObject({ headers: HeaderOps.optional(), body: BodyOps.optional() });

const AuthRequirement = z.strictObject({
  jwt: z
    .union([z.string(), z.array(z.string()).min(1)])
    .optional()
    .describe("JWT provider name(s)."),
  apiKey: z.literal(true).optional().describe("Accept an API key from gateway.apiKeys."),
  clientCert: z.string().optional().describe("mTLS client-certificate provider name."),
  oidc: z.string().optional().describe("OIDC login provider name (browser routes)."),
  scopes: z.array(z.string()).optional().describe("Every scope must be in the token's scope/scp claim."),
  claims: z
    .record(z.string(), z.union([z.string(), z.array(z.string()).min(1)]))
    .optional()
    .describe("Claim name → accepted value(s)."),
  consumers: z.array(z.string()).optional().describe("API-key consumers allowed."),
  groups: z.array(z.string()).optional().describe("API-key consumer groups allowed."),
  clientIps: z.array(z.string()).optional().describe("Client IP ranges (CIDR) allowed."),
});

const RateLimitKey = z.union(
  [z.enum(["ip", "subject", "consumer", "route"]), z.string().regex(/^header:[a-z0-9!#$%&'*+.^_`|~-]+$/)],
  { error: 'expected ip, subject, consumer, route, or "header:<lower-case-name>"' },
);

const AggregatePart = z.strictObject({
  service: z.string().optional().describe("The service this part calls (or external)."),
  external: z
    .string()
    .optional()
    .describe(
      "An external destination whose allow rules name `gateway` (a partner's API) this part calls instead of a service: its own Host, TLS and `share`, as for `to: { external }`.",
    ),
  path: z.string().regex(/^\//, { error: "must start with /" }),
  method: z.enum(["GET", "HEAD"]).default(D["gateway.routes.*.aggregate.*.method"].value),
  timeout: duration({ timer: true }).optional(),
  onError: z.enum(["fail", "omit", "default"]).default(D["gateway.routes.*.aggregate.*.onError"].value),
  default: z.unknown().optional().describe("Value used when onError is default."),
  forwardHeaders: z
    .array(headerName())
    .optional()
    .describe("Client headers copied to this part; cookies and authorization only when listed."),
});

const GatewayRoute = z.strictObject({
  name: name(),
  match: RouteMatch,
  to: ServiceTarget.optional().describe(
    "Forward to one service (a name, or { service }), or to an external destination ({ external }).",
  ),
  split: z
    .array(
      z.union(
        [
          z.strictObject({ service: z.string(), weight: z.number().int().min(0).max(100) }),
          z.strictObject({
            external: z
              .string()
              .describe(
                "An external destination whose allow rules name `gateway`, as in `to: { external }`: a legacy system or partner that takes this share while a service takes over (its own Host, TLS and `share`).",
              ),
            weight: z.number().int().min(0).max(100),
          }),
        ],
        { error: 'expected { service: "<name>", weight: N } or { external: "<name>", weight: N }' },
      ),
    )
    .min(2)
    .optional()
    .describe(
      "Weighted split across services and external destinations; weights add up to 100 (a migration off a system outside the mesh shifts weight from its entry to the service's).",
    ),
  mirror: z
    .strictObject({ service: z.string(), percent: percent().default(100) })
    .optional()
    .describe("Copy requests to another service; its responses are discarded."),
  redirect: z
    .strictObject({
      scheme: z.enum(["http", "https"]).optional(),
      host: host().optional(),
      port: port().optional(),
      path: z.string().regex(/^\//, { error: "must start with /" }).optional(),
      status: z
        .union([z.literal(301), z.literal(302), z.literal(303), z.literal(307), z.literal(308)])
        .default(D["gateway.routes.*.redirect.status"].value),
    })
    .optional(),
  aggregate: z
    .record(name(), AggregatePart)
    .optional()
    .describe("Fan out in parallel and merge JSON by part name."),
  static: z
    .strictObject({
      dir: z.string().min(1),
      index: z.array(z.string()).default([...D["gateway.routes.*.static.index"].value]),
      spaFallback: z.string().optional(),
      precompressed: z.boolean().default(D["gateway.routes.*.static.precompressed"].value),
    })
    .optional(),
  rewrite: z
    .strictObject({
      path: z.string().regex(/^\//, { error: "must start with /" }).optional(),
      host: host().optional(),
    })
    .optional()
    .describe("Rewrite before forwarding; the path may use the match's {params}."),
  public: z.boolean().optional().describe("Say true to serve this route without authentication."),
  auth: AuthRequirement.optional(),
  rateLimit: z
    .strictObject({
      requests: z.number().int().positive(),
      per: duration(),
      burst: z.number().int().positive().optional(),
      key: RateLimitKey.default(D["gateway.routes.*.rateLimit.key"].value),
      scope: z.enum(["replica", "fleet"]).default(D["gateway.routes.*.rateLimit.scope"].value),
    })
    .optional(),
  cache: z
    .strictObject({
      ttl: duration(),
      vary: z.array(headerName()).optional(),
      perPrincipal: z.boolean().default(D["gateway.routes.*.cache.perPrincipal"].value),
      maxEntrySize: size().default(D["gateway.routes.*.cache.maxEntrySize"].value),
      staleWhileRevalidate: duration().default(D["gateway.routes.*.cache.staleWhileRevalidate"].value),
      staleIfError: duration().default(D["gateway.routes.*.cache.staleIfError"].value),
    })
    .optional(),
  transform: z.strictObject({ request: Transform.optional(), response: Transform.optional() }).optional(),
  fault: z
    .strictObject({
      delay: z.strictObject({ duration: duration({ timer: true }), percent: percent() }).optional(),
      abort: z.strictObject({ status: z.number().int().min(200).max(599), percent: percent() }).optional(),
    })
    .optional(),
  cors: z
    .strictObject({
      origins: z.array(z.string()).min(1),
      methods: z.array(Method).optional(),
      headers: z.array(headerName()).optional(),
      exposeHeaders: z.array(headerName()).optional(),
      credentials: z.boolean().default(D["gateway.routes.*.cors.credentials"].value),
      maxAge: duration().default(D["gateway.routes.*.cors.maxAge"].value),
    })
    .optional(),
  timeout: duration({ timer: true }).optional(),
  retries: RetriesOverride.optional(),
  limits: z
    .strictObject({
      maxBodySize: size("Request body limit (413 above it)."),
      maxResponseSize: size("Upstream response body limit (502, or a reset once the response started)."),
    })
    .partial()
    .optional(),
});

const JwtProvider = z.strictObject({
  issuer: z.string().describe("Required `iss` claim value."),
  audiences: z.array(z.string()).min(1).describe("Accepted `aud` values; one must match."),
  jwksUri: z.string().optional().describe("HTTPS URL of the JWKS (cached, refreshed on unknown kid)."),
  jwks: z
    .strictObject({ keys: z.array(z.record(z.string(), z.unknown())).min(1) })
    .optional()
    .describe("Inline public JWKS."),
  algorithms: z.array(z.enum(JWT_ALGORITHMS)).min(1).describe("Pinned algorithms; none and HS* are refused."),
  clockSkew: boundedDuration("5m", "Allowed clock skew for exp/nbf.").default(
    D["gateway.jwt.*.clockSkew"].value,
  ),
  tokenFrom: z
    .strictObject({
      header: headerName().optional(),
      prefix: z.string().optional(),
      cookie: z.string().optional(),
      query: z.string().optional().describe("Only when set: tokens in URLs end up in logs."),
    })
    .optional(),
  forwardClaims: z
    .record(headerName(), z.string())
    .optional()
    .describe("Header → claim: forwarded upstream in gateway-owned headers."),
});

const Listener = z.strictObject({
  name: name(),
  port: port(),
  protocol: z.enum(["http", "https"]),
  http2: z.boolean().default(D["gateway.listeners.*.http2"].value),
  proxyProtocol: z
    .boolean()
    .default(D["gateway.listeners.*.proxyProtocol"].value)
    .describe(
      "Every connection starts with a PROXY protocol header (v1 or v2, as an AWS NLB with proxy protocol v2, HAProxy or most cloud load balancers send it): the client's address it names is the one rate limits, X-Forwarded-For and logs use. A connection without a valid header is closed — turn it on only for a port that nothing but the load balancer reaches.",
    ),
  proxyProtocolSources: z
    .array(z.string())
    .min(1)
    .optional()
    .describe(
      "The load balancers' addresses (CIDR ranges) a PROXY header is taken from: a connection from elsewhere is closed. Without it, any client that reaches the port can name any address (a warning says so).",
    ),
  tls: z
    .strictObject({
      minVersion: z.enum(["TLSv1.2", "TLSv1.3"]).default(D["gateway.listeners.*.tls.minVersion"].value),
      certificates: z
        .array(
          z.strictObject({
            hosts: z.array(host()).min(1),
            secret: name().optional().describe("Kubernetes TLS Secret name."),
            certFile: z.string().optional(),
            keyFile: z.string().optional(),
          }),
        )
        .min(1),
    })
    .optional(),
});

const Gateway = z.strictObject({
  replicas: z.number().int().min(1).max(100).default(D["gateway.replicas"].value),
  hosts: z.array(host()).min(1).describe("Host names the gateway serves."),
  listeners: z.array(Listener).min(1).optional(),
  clientIp: z
    .strictObject({
      trustedHops: z
        .number()
        .int()
        .min(0)
        .max(10)
        .default(D["gateway.clientIp.trustedHops"].value)
        .describe("Proxies in front of the gateway whose forwarding entries are trusted."),
      trustedProxies: z
        .array(z.string())
        .min(1)
        .optional()
        .describe(
          "The addresses (CIDR ranges) of the proxies in front of the gateway, instead of trustedHops: the client is the rightmost header entry that is not one of them, provided the connection comes from one (a connection from elsewhere is its own client). Fits paths with a varying number of proxies (a CDN in front of some requests, not others).",
        ),
      header: z
        .enum(["x-forwarded-for", "forwarded"])
        .default(D["gateway.clientIp.header"].value)
        .describe(
          "The header the trusted proxies append the client address to: X-Forwarded-For, or RFC 7239 Forwarded (for=).",
        ),
    })
    .prefault({}),
  limits: z
    .strictObject({
      maxHeaderSize: size().default(D["gateway.limits.maxHeaderSize"].value),
      maxBodySize: size().default(D["gateway.limits.maxBodySize"].value),
      headerTimeout: boundedDuration(
        "15s",
        "Time allowed to receive request headers; a new connection's first ones from its start (its TLS handshake and HTTP/2 preface included).",
      ).default(D["gateway.limits.headerTimeout"].value),
      requestTimeout: duration({ timer: true }).default(D["gateway.limits.requestTimeout"].value),
      idleTimeout: duration({ timer: true }).default(D["gateway.limits.idleTimeout"].value),
      maxConnections: z.number().int().positive().default(D["gateway.limits.maxConnections"].value),
      drainTimeout: duration({ timer: true }).default(D["gateway.limits.drainTimeout"].value),
    })
    .prefault({}),
  jwt: z.record(name(), JwtProvider).optional(),
  apiKeys: z
    .strictObject({
      header: headerName().default(D["gateway.apiKeys.header"].value),
      consumers: z.record(
        name(),
        z.strictObject({
          keyHashes: z.array(fmt(FORMATS.keyHash)).min(1),
          groups: z.array(name()).optional(),
        }),
      ),
    })
    .optional(),
  clientCerts: z
    .record(
      name(),
      z.strictObject({
        caFile: z.string().min(1),
        subjects: z.array(z.string()).optional(),
        sans: z.array(z.string()).optional(),
      }),
    )
    .optional(),
  oidc: z
    .record(
      name(),
      z.strictObject({
        issuer: z.string(),
        clientId: z.string().min(1),
        clientSecretEnv: z
          .string()
          .regex(/^[A-Z_][A-Z0-9_]*$/, { error: "not an environment variable name" }),
        secret: name()
          .optional()
          .describe(
            "Kubernetes Secret holding the client secret under the key client-secret: the chart sets clientSecretEnv from it (required when the chart renders the gateway).",
          ),
        redirectPath: z.string().regex(/^\//, { error: "must start with /" }),
        scopes: z.array(z.string()).default(["openid"]),
        cookieName: z
          .string()
          .regex(/^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,64}$/, {
            error: "not a cookie name (RFC 6265 token: letters, digits and !#$%&'*+-.^_`|~, at most 64)",
          })
          .default("meshgate_session"),
        sessionTtl: duration().default(D["gateway.oidc.*.sessionTtl"].value),
      }),
    )
    .optional(),
  rateLimitStore: z
    .strictObject({
      redis: z.strictObject({
        url: z.string(),
        failMode: z
          .enum(["open", "closed"])
          .describe(
            "What happens when Redis is unreachable: open = allow, closed = 503. No default: choose.",
          ),
        timeout: duration({ timer: true }).default("50ms"),
      }),
    })
    .optional()
    .describe("Omitted = in-process limits (fleet limits divided by gateway.replicas)."),
  cache: z
    .strictObject({
      maxSize: size().default(D["gateway.cache.maxSize"].value),
      redis: z
        .strictObject({
          url: z.string(),
          timeout: duration({ timer: true }).default(D["gateway.cache.redis.timeout"].value),
          localSize: size()
            .default(D["gateway.cache.redis.localSize"].value)
            .describe(
              "A local layer per gateway process in front of Redis, kept coherent by Redis' client tracking; 0B = every lookup is a round trip.",
            ),
        })
        .optional()
        .describe("A cache shared by every gateway replica (Redis ≥ 7); omitted = process memory."),
    })
    .optional(),
  routes: z.array(GatewayRoute).default([]),
});

// ───────────────────────────── observability & targets ─────────────────────────────

const Observability = z.strictObject({
  metrics: z
    .strictObject({
      enabled: z.boolean().default(D["observability.metrics.enabled"].value),
      backend: z
        .enum(["prometheus", "prometheus-operator", "none"])
        .default(D["observability.metrics.backend"].value),
      scrapeInterval: duration({ positive: true }).default(D["observability.metrics.scrapeInterval"].value),
      retention: duration({ positive: true }).default(D["observability.metrics.retention"].value),
    })
    .prefault({}),
  tracing: z
    .strictObject({
      enabled: z.boolean().default(D["observability.tracing.enabled"].value),
      sampling: z.number().min(0).max(1).default(D["observability.tracing.sampling"].value),
      backend: z.enum(["tempo", "jaeger", "none"]).default(D["observability.tracing.backend"].value),
      otlpEndpoint: z.string().optional().describe("Send spans here instead of the bundled collector."),
    })
    .prefault({}),
  logs: z
    .strictObject({
      access: z.boolean().default(D["observability.logs.access"].value),
      level: z.enum(["debug", "info", "warn", "error"]).default(D["observability.logs.level"].value),
    })
    .prefault({}),
  grafana: z
    .strictObject({ enabled: z.boolean().default(D["observability.grafana.enabled"].value) })
    .prefault({}),
  slos: z
    .array(
      z.strictObject({
        name: name().optional(),
        route: z.string().optional(),
        service: z.string().optional(),
        availability: z.number().gt(0).lt(100).describe("Target percentage of non-5xx responses, e.g. 99.9."),
        latencyP99: duration().optional(),
        window: duration({ positive: true }).default(D["observability.slos.*.window"].value),
      }),
    )
    .default([]),
});

/** A volume of the gateway pod: exactly one source, mounted read-only at an absolute path. */
const GatewayVolume = z
  .strictObject({
    name: name(),
    mountPath: z.string().regex(/^(?!.*\/\.\.?(\/|$))\/[^\0]*$/, {
      error: "must be an absolute path without . or .. segments",
    }),
    configMap: name().optional().describe("A ConfigMap (each key a file)."),
    secret: name().optional().describe("A Secret (each key a file)."),
    persistentVolumeClaim: name().optional().describe("A PersistentVolumeClaim (mounted read-only)."),
  })
  .refine(
    (v) => [v.configMap, v.secret, v.persistentVolumeClaim].filter((x) => x !== undefined).length === 1,
    { error: "needs exactly one of configMap, secret, persistentVolumeClaim" },
  );

const Targets = z.strictObject({
  local: z
    .strictObject({
      gatewayPort: port().default(D["targets.local.gatewayPort"].value),
      adminPort: port().default(D["targets.local.adminPort"].value),
      stateDir: z.string().default(D["targets.local.stateDir"].value),
    })
    .optional(),
  kubernetes: z
    .strictObject({
      gatewayServiceType: z
        .enum(["LoadBalancer", "ClusterIP", "NodePort"])
        .default(D["targets.kubernetes.gatewayServiceType"].value),
      gatewayExternalTrafficPolicy: z
        .enum(["Local", "Cluster"])
        .default(D["targets.kubernetes.gatewayExternalTrafficPolicy"].value)
        .describe(
          "The gateway Service's externalTrafficPolicy (LoadBalancer and NodePort types): Local keeps the client's source address — with Cluster, kube-proxy replaces it with a node's, and every client looks the same to per-IP rate limits, IP allow-lists and logs — at the price of spreading load per node rather than per pod.",
        ),
      gatewayDrainDelay: boundedDuration(
        "60s",
        "How long a stopping gateway pod keeps serving before it drains (a preStop sleep, whole seconds rounded up): Kubernetes removes the pod from Service endpoints and load balancers while it stops, and connections sent in that window would otherwise be refused. 0s turns it off.",
      ).default(D["targets.kubernetes.gatewayDrainDelay"].value),
      serviceDrainDelay: boundedDuration(
        "60s",
        "How long a stopping service pod's app keeps serving before it gets SIGTERM (a preStop sleep on the app container, whole seconds rounded up): callers' sidecars send to the pod until they re-resolve the headless Service, and an app that stops at once would fail those requests. Its sidecar (a native sidecar) stops after the app. 0s turns it off.",
      ).default(D["targets.kubernetes.serviceDrainDelay"].value),
      runtimeImage: fmt(FORMATS.image).optional(),
      gatewayVolumes: z
        .array(GatewayVolume)
        .optional()
        .describe(
          "Volumes mounted read-only into the gateway container: static route directories, CA files, certificate files.",
        ),
    })
    .optional(),
  aws: z
    .strictObject({
      region: z
        .string()
        .regex(/^[a-z]{2}(-[a-z]+)+-[0-9]$/, { error: 'not an AWS region (e.g. "eu-west-1")' }),
      availabilityZones: z.number().int().min(2).max(3).default(3),
      cluster: z.union([
        z.strictObject({ existing: z.string().min(1) }),
        z.strictObject({
          create: z.strictObject({
            version: z.string().default("1.33"),
            instanceType: z.string().default("m7g.large"),
            minNodes: z.number().int().min(1).default(2),
            maxNodes: z.number().int().min(1).default(6),
            publicEndpoint: z
              .boolean()
              .default(true)
              .describe(
                "Whether the cluster's API endpoint is reachable from the internet (always with IAM authentication). false keeps it private to the VPC: `pulumi up` (and kubectl) must then run where the VPC is reachable — a runner inside it, a VPN or a bastion.",
              ),
            publicAccessCidrs: z
              .array(z.string())
              .min(1)
              .default(["0.0.0.0/0"])
              .describe(
                "The IPv4 ranges (CIDR) allowed to reach the public API endpoint, e.g. your office's and your CI runners' egress addresses. The default, 0.0.0.0/0, is EKS's: any address, IAM authentication still required.",
              ),
          }),
        }),
      ]),
      managedPrometheus: z.boolean().default(true),
      certificateArn: z.string().optional(),
    })
    .optional(),
  docker: z
    .strictObject({
      network: name().optional(),
      gatewayPort: port().default(8080),
    })
    .optional(),
});

// ───────────────────────────── root ─────────────────────────────

export const MeshSpecSchema = z
  .strictObject({
    $schema: z.string().optional().describe("Path or URL of the JSON Schema (for editors)."),
    name: name().describe("Name of the mesh; also the default namespace."),
    namespace: name().optional(),
    trustDomain: fmt(FORMATS.trustDomain).describe(
      "SPIFFE trust domain: spiffe://<trustDomain>/ns/<ns>/sa/<service>.",
    ),
    mesh: Mesh.prefault({}),
    services: z.record(name(), Service).describe("The workloads of the mesh, by name."),
    external: z
      .record(name(), External)
      .default({})
      .describe("Destinations outside the mesh that services may reach, by name (deny by default)."),
    gateway: Gateway.optional(),
    observability: Observability.prefault({}),
    targets: Targets.prefault({}),
  })
  .describe("meshgate mesh spec: the edge gateway, the sidecar mesh and observability in one document.");

/** The spec as written (defaults optional): what `defineMesh` accepts and YAML files contain. */
export type MeshSpecInput = z.input<typeof MeshSpecSchema>;
/** The spec after parsing, with every default filled in. */
export type MeshSpec = z.output<typeof MeshSpecSchema>;
export type ServiceSpec = MeshSpec["services"][string];
export type ExternalSpec = MeshSpec["external"][string];
export type GatewaySpec = NonNullable<MeshSpec["gateway"]>;
export type GatewayRouteSpec = GatewaySpec["routes"][number];
export type RetriesOverrideSpec = z.output<typeof RetriesOverride>;
export type ServiceRetriesSpec = z.output<typeof ServiceRetries>;
