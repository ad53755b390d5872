/**
 * Synthetic mesh specs for tests and benchmarks: `generateSpec({ services, routes, seed })` builds a large,
 * valid, realistic spec, deterministically (a seeded PRNG, never Math.random): the same options always give
 * a deep-equal spec, and a different seed gives a different one.
 *
 * The spec is consistent as well as valid: every declared call is admitted by an allow rule of the callee
 * (and nothing else is), the gateway is allowed exactly on the services its routes reach, public routes are
 * rate limited and retries only go on idempotent routes, so translate() emits no warnings for it.
 */
import { createHash } from "node:crypto";
import { stringify } from "yaml";
import type { MeshSpecInput } from "../components/spec/schema.ts";

export interface GenerateOptions {
  /** Number of services (`svc-0000`, `svc-0001`, …). At least 1. */
  services: number;
  /** Number of gateway routes. */
  routes: number;
  /** PRNG seed; default 1. */
  seed?: number;
}

type ServiceInput = MeshSpecInput["services"][string];
type GatewayInput = NonNullable<MeshSpecInput["gateway"]>;
type RouteInput = NonNullable<GatewayInput["routes"]>[number];
type AllowInput = NonNullable<ServiceInput["allow"]>[number];
type SloInput = NonNullable<NonNullable<NonNullable<MeshSpecInput["observability"]>["slos"]>>[number];

const GATEWAY = "gateway";
const ITEMS = "/api/v1/items";
const ITEM = "/api/v1/items/{id}";
const CONSUMERS = [
  { name: "acme-retail", groups: ["partners"] },
  { name: "globex", groups: ["partners", "bulk"] },
  { name: "initech", groups: ["partners"] },
  { name: "umbrella", groups: ["bulk"] },
] as const;

/** mulberry32: a tiny, fast, seedable 32-bit PRNG. Returns floats in [0, 1). */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

interface Rng {
  /** An integer in [min, max]. */
  int(min: number, max: number): number;
  /** True with probability p. */
  chance(p: number): boolean;
  pick<T>(items: readonly T[]): T;
  /** `count` distinct indices in [0, n), none equal to an index in `exclude`. */
  distinct(n: number, count: number, exclude: readonly number[]): number[];
}

function rng(seed: number): Rng {
  const next = mulberry32(seed);
  const int = (min: number, max: number) => min + Math.floor(next() * (max - min + 1));
  return {
    int,
    chance: (p) => next() < p,
    pick: (items) => items[int(0, items.length - 1)]!,
    distinct(n, count, exclude) {
      const out: number[] = [];
      const taken = new Set(exclude);
      const want = Math.min(count, n - taken.size);
      while (out.length < want) {
        const i = int(0, n - 1);
        if (taken.has(i)) continue;
        taken.add(i);
        out.push(i);
      }
      return out;
    },
  };
}

const serviceName = (i: number) => `svc-${String(i).padStart(4, "0")}`;
const sha256 = (text: string) => `sha256:${createHash("sha256").update(text).digest("hex")}`;

/** Builds a valid, deterministic spec with `services` services and `routes` gateway routes. */
export function generateSpec(options: GenerateOptions): MeshSpecInput {
  const { services: serviceCount, routes: routeCount, seed = 1 } = options;
  if (!Number.isInteger(serviceCount) || serviceCount < 1)
    throw new RangeError("services must be an integer ≥ 1");
  if (!Number.isInteger(routeCount) || routeCount < 0) throw new RangeError("routes must be an integer ≥ 0");
  const r = rng(seed);
  const names = Array.from({ length: serviceCount }, (_, i) => serviceName(i));

  // The call graph: every service calls 1–3 others; callers[j] lists who calls service j.
  const calls = names.map((_, i) => r.distinct(serviceCount, r.int(1, 3), [i]).sort((a, b) => a - b));
  const callers: number[][] = names.map(() => []);
  calls.forEach((callees, i) => callees.forEach((j) => callers[j]!.push(i)));

  // Gateway routes, in pairs over one resource: /r{p}/items and /r{p}/items/{id}.
  const gatewayTargets = new Set<number>();
  const routes: RouteInput[] = [];
  for (let n = 0; n < routeCount; n++) {
    routes.push(gatewayRoute(r, n, serviceCount, gatewayTargets));
  }

  const services: Record<string, ServiceInput> = {};
  names.forEach((name, i) => {
    services[name] = service(r, i, names, calls[i]!, callers[i]!, gatewayTargets.has(i));
  });

  const slos: SloInput[] = [];
  for (let n = 0; n < Math.min(routes.length, 3); n++) {
    slos.push({
      name: `route-${routes[n]!.name}`,
      route: routes[n]!.name,
      availability: 99.9,
      latencyP99: "250ms",
    });
  }
  for (let i = 0; i < Math.min(serviceCount, 3); i++) {
    slos.push({ name: `service-${names[i]}`, service: names[i]!, availability: 99.95, window: "28d" });
  }

  const gateway: GatewayInput = {
    replicas: 3,
    hosts: ["api.bench.example", "bench.example"],
    listeners: [
      { name: "http", port: 8080, protocol: "http" },
      {
        name: "https",
        port: 8443,
        protocol: "https",
        tls: {
          minVersion: "TLSv1.2",
          certificates: [{ hosts: ["api.bench.example", "bench.example"], secret: "bench-tls" }],
        },
      },
    ],
    clientIp: { trustedHops: 1 },
    limits: { maxHeaderSize: "16KiB", maxBodySize: "1MiB", headerTimeout: "10s" },
    jwt: {
      main: {
        issuer: "https://id.bench.example/",
        audiences: ["bench-api"],
        jwksUri: "https://id.bench.example/.well-known/jwks.json",
        algorithms: ["ES256"],
        forwardClaims: { "x-user": "sub" },
      },
    },
    apiKeys: {
      header: "x-api-key",
      consumers: Object.fromEntries(
        CONSUMERS.map((c, i) => [
          c.name,
          { keyHashes: [sha256(`meshgate-generated-key-${seed}-${i}`)], groups: [...c.groups] },
        ]),
      ),
    },
    rateLimitStore: { redis: { url: "redis://redis.bench.svc.cluster.local:6379", failMode: "open" } },
    cache: { maxSize: "128MiB" },
    routes,
  };

  return {
    name: "bench",
    trustDomain: "bench.example",
    mesh: {
      mtls: "strict",
      defaults: {
        timeout: "2s",
        retries: {
          attempts: 2,
          perTryTimeout: "500ms",
          on: ["connect-failure", "refused-stream", "reset", "503"],
        },
        circuitBreaker: { consecutive5xx: 5, baseEjection: "30s", maxEjectedPercent: 50 },
        loadBalancer: "least-request",
      },
    },
    services,
    gateway,
    observability: {
      metrics: { backend: "prometheus", scrapeInterval: "15s" },
      tracing: { sampling: 0.1, backend: "tempo" },
      logs: { access: true, level: "info" },
      slos,
    },
    targets: {
      local: { gatewayPort: 8080, adminPort: 9901 },
      kubernetes: { gatewayServiceType: "LoadBalancer" },
    },
  };
}

/** The same spec as YAML text (what a user would write in mesh.yaml). */
export function generateSpecYaml(options: GenerateOptions): string {
  return stringify(generateSpec(options), { lineWidth: 0 });
}

function service(
  r: Rng,
  i: number,
  names: readonly string[],
  calls: readonly number[],
  callers: readonly number[],
  routed: boolean,
): ServiceInput {
  const allow: AllowInput[] = [];
  if (callers.length > 0) {
    allow.push({
      from: callers.map((c) => names[c]!),
      methods: ["GET", "HEAD", "POST"],
      paths: [ITEMS, ITEM],
    });
  }
  if (routed) allow.push({ from: [GATEWAY], methods: ["GET", "HEAD", "POST"], paths: [ITEMS, ITEM] });

  const svc: ServiceInput = {
    image: `registry.example/${names[i]}:1.0.0`,
    port: r.pick([8080, 8080, 8080, 9090]),
    protocol: r.pick(["http", "http", "http2"] as const),
    replicas: r.int(1, 5),
    calls: calls.map((c) => names[c]!),
    allow,
    healthCheck: { path: "/healthz" },
    resources: { cpu: r.pick(["100m", "250m", "500m"]), memory: r.pick(["128Mi", "256Mi", "512Mi"]) },
  };
  if (r.chance(0.2)) svc.timeout = "3s";
  if (r.chance(0.15)) svc.circuitBreaker = { consecutive5xx: 3, maxEjectedPercent: 34 };
  if (r.chance(0.1)) svc.loadBalancer = "ring-hash";
  if (r.chance(0.1)) svc.limits = { maxBodySize: "64KiB" };
  if (r.chance(0.2)) {
    svc.routes = [
      {
        name: "create",
        match: { path: ITEMS, methods: ["POST"] },
        timeout: "3s",
        retries: { attempts: 1, on: ["connect-failure", "refused-stream"] },
      },
      {
        name: "get",
        match: { path: ITEM, methods: ["GET"] },
        retries: { attempts: 3, perTryTimeout: "300ms", on: ["connect-failure", "reset", "503", "504"] },
      },
    ];
  }
  return svc;
}

function gatewayRoute(r: Rng, n: number, serviceCount: number, targets: Set<number>): RouteInput {
  const pair = Math.floor(n / 2);
  const isItem = n % 2 === 1;
  const primary = pair % serviceCount;
  const path = isItem ? `/r${pair}/items/{id}` : `/r${pair}/items`;
  const write = !isItem && r.chance(0.2); // a create route: POST, no cache, no retries that resend bytes
  const methods = write ? (["POST"] as const) : (["GET", "HEAD"] as const);
  const route: RouteInput = {
    name: `r${pair}-${isItem ? "get" : write ? "create" : "list"}`,
    match: { path, methods: [...methods] },
  };

  // The action: to (most), split (canary), aggregate (GET fan-out).
  const roll = r.int(0, 99);
  const others = (count: number) => r.distinct(serviceCount, count, [primary]);
  if (roll < 10 && !write && serviceCount >= 2) {
    const parts = [primary, ...others(r.int(1, 2))];
    route.aggregate = Object.fromEntries(
      parts.map((s, k) => {
        const part = ["primary", "related", "extras"][k]!;
        return [
          part,
          k === 0
            ? { service: serviceName(s), path: ITEMS, onError: "fail" as const }
            : k === 1
              ? { service: serviceName(s), path: ITEMS, timeout: "300ms", onError: "omit" as const }
              : {
                  service: serviceName(s),
                  path: ITEMS,
                  timeout: "300ms",
                  onError: "default" as const,
                  default: [],
                },
        ];
      }),
    );
    parts.forEach((s) => targets.add(s));
  } else if (roll < 30 && serviceCount >= 2) {
    const rest = others(r.int(1, 2));
    const weights =
      rest.length === 1
        ? r.pick([
            [90, 10],
            [80, 20],
            [50, 50],
          ] as const)
        : ([70, 20, 10] as const);
    route.split = [primary, ...rest].map((s, k) => ({ service: serviceName(s), weight: weights[k]! }));
    route.rewrite = { path: isItem ? ITEM : ITEMS };
    [primary, ...rest].forEach((s) => targets.add(s));
  } else {
    route.to = serviceName(primary);
    route.rewrite = { path: isItem ? ITEM : ITEMS };
    targets.add(primary);
    if (!write && serviceCount >= 2 && r.chance(0.05)) {
      const [shadow] = others(1);
      route.mirror = { service: serviceName(shadow!), percent: 10 };
      targets.add(shadow!);
    }
  }

  // Authentication: JWT (half), API keys (a quarter), public (a quarter, always rate limited).
  const auth = r.int(0, 3);
  if (auth <= 1) {
    route.auth = { jwt: "main", scopes: [write ? "items:write" : "items:read"] };
    if (r.chance(0.4)) route.rateLimit = { requests: r.pick([50, 100, 200]), per: "1m", key: "subject" };
  } else if (auth === 2) {
    route.auth = { apiKey: true, groups: [r.pick(["partners", "bulk"])] };
    route.rateLimit = { requests: r.pick([500, 1000]), per: "1m", key: "consumer", scope: "fleet" };
  } else {
    route.public = true;
    route.rateLimit = { requests: r.pick([300, 600, 1200]), per: "1m", key: "ip", burst: 50 };
    if (r.chance(0.3)) route.cors = { origins: ["https://bench.example"], methods: [...methods] };
  }

  // Caching, timeouts and retries.
  // The draw happens for every read route (the rest of the spec stays as it was); an aggregate assembles its
  // answer, which the cache never sees: it gets none.
  if (!write && r.chance(0.3)) {
    const cache = { ttl: r.pick(["5s", "30s", "60s"]), vary: ["accept-language"] };
    if (route.aggregate === undefined) route.cache = cache;
  }
  if (r.chance(0.25)) route.timeout = r.pick(["1s", "1500ms", "5s"]);
  if (!write && r.chance(0.2)) {
    route.retries = { attempts: 3, perTryTimeout: "300ms", on: ["connect-failure", "reset", "503", "504"] };
  } else if (write && r.chance(0.3)) {
    route.retries = { attempts: 1, on: ["connect-failure", "refused-stream"] };
  }
  if (write && r.chance(0.3)) {
    route.limits = { maxBodySize: "256KiB" };
    route.transform = { request: { headers: { set: { "x-channel": "web" } } } };
  }
  return route;
}
