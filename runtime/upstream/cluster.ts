/**
 * Upstream clusters: endpoint discovery (static lists, or DNS re-resolved on an interval), load
 * balancing (round-robin, least-request by power of two choices, ring-hash on the client address), and
 * one connection pool per endpoint (H1Pool, or H2Pool for HTTP/2 services), kept across config reloads
 * while the endpoint stays.
 *
 * Shared by the gateway and (with the mesh issue) the sidecar's outbound side: one implementation.
 */
import { lookup, resolve4, resolve6 } from "node:dns/promises";
import net from "node:net";
import type { Writable } from "node:stream";
import { H1Pool, type CancelToken } from "./h1pool.ts";
import { H2Pool } from "./h2pool.ts";
import { connectionReusable, MESH_IDLE_MS, originateConnector, type MtlsConnect } from "./tls.ts";
import { clientCertificateKey, type ClientCertificateStore } from "./client-cert.ts";
import type { Cluster, GatewayRuntimeConfig } from "../contract/schema.ts";
import { RetryBudget, available, newHealth, recordResult, type EndpointHealth } from "./resilience.ts";
import { compareCodeUnits } from "../contract/canonical.ts";

/** What the forwarding engine needs of an endpoint's connections: H1Pool (HTTP/1.1) or H2Pool. */
export interface UpstreamPool {
  stream(
    opts: {
      method: string;
      path: string;
      headers: Record<string, string | string[]>;
      body: Buffer | NodeJS.ReadableStream | null;
      headersTimeout: number;
      /** The time left of the whole request: a new connection must open within it too. 0: none. */
      totalTimeout?: number;
      bodyTimeout: number;
      /**
       * Time the response may stay blocked on its target (a write refused, no 'drain' since): the client
       * stopped reading. 0: none. Armed only on backpressure, never per write.
       */
      sendTimeout?: number;
      /** HTTP/2 pools: time the whole exchange may take, its body included (a gRPC call's deadline). 0: none. */
      callTimeout?: number;
      cancel?: CancelToken;
      /** Response headers the pool may leave out of the head it hands on (HTTP/1 does; HTTP/2 ignores it). */
      dropResponseHeaders?: ReadonlySet<string> | null;
    },
    factory: (data: {
      statusCode: number;
      headers: Record<string, string | string[] | undefined>;
      /** The body ends with the connection (HTTP/1 without Content-Length or chunked framing). */
      closeDelimited?: boolean;
      /** HTTP/2: the response is its HEADERS frame alone (gRPC trailers-only). */
      endStream?: boolean;
    }) => Writable,
  ): Promise<unknown>;
  request(opts: {
    method: string;
    path: string;
    headers?: Record<string, string | string[]>;
    body?: Buffer | null;
    headersTimeout: number;
    totalTimeout?: number;
    bodyTimeout: number;
    /** Time the whole exchange may take, its body included (a health probe's timeout). 0 or absent: none. */
    callTimeout?: number;
  }): Promise<{ statusCode: number; body: { dump(): Promise<unknown> } }>;
  readonly stats: { readonly pending: number };
  close(): Promise<void>;
}

export interface Endpoint {
  readonly key: string;
  readonly host: string;
  readonly port: number;
  readonly pool: UpstreamPool;
  /** Requests in flight on this endpoint (least-request balancing, drain). */
  inFlight: number;
  readonly health: EndpointHealth;
  /** Active health checks: consecutive probe results. */
  probeSuccesses: number;
  probeFailures: number;
}

export interface ClusterEvents {
  onError(message: string): void;
  onEjection(cluster: string, endpoint: string): void;
  onHealthChange(cluster: string, endpoint: string, healthy: boolean): void;
  /** A request was balanced across every endpoint because too few were available (panic routing). */
  onPanic?(cluster: string): void;
}

type Discovery = GatewayRuntimeConfig["discovery"];

export interface PoolCacheOptions {
  /** The connection limit of an HTTP/1.1 pool whose cluster sets no `circuitBreaker.maxConnections` (0). */
  connections: number;
  /**
   * Opens mTLS connections to clusters with `tls.mode: "mtls"`, verifying that the server is
   * `serverIdentity` (runtime/upstream/tls.ts). Without it such clusters fail closed: every connection
   * attempt fails with E_RT_IDENTITY_UNAVAILABLE.
   */
  mtls?: MtlsConnect;
  /**
   * Resolves the endpoint names of `tls` clusters and of plain HTTP/1.1 ones (the sidecar's pools to
   * external destinations: net/lookup.ts egressLookup); the system's resolver when absent.
   */
  lookup?: net.LookupFunction;
  /**
   * The client certificates `tls` clusters with a `clientCertificate` present (mutual TLS). Without it,
   * or without the pair loaded in it, such clusters fail closed: every connection fails at once.
   */
  clientCertificates?: ClientCertificateStore;
}

/**
 * The PoolCache key of an endpoint of a cluster: address, protocol, what the pool is built with (an
 * HTTP/1.1 pool's connection limit, the connect timeout — a reload that changes one gets a pool that
 * applies it, and the old one retires: H1Pool.close) and the TLS: the server identity for mTLS.
 */
export function poolKey(endpointKey: string, cluster: Cluster): string {
  const tls = cluster.tls;
  // An HTTP/2 pool is one session: no connection limit to apply.
  const limit = cluster.protocol === "http1" ? `/max:${cluster.circuitBreaker.maxConnections}` : "";
  const base = `${endpointKey}/${cluster.protocol}${limit}/connect:${cluster.connectTimeoutMs}`;
  if (tls.mode === "mtls") return `${base}/mtls:${tls.serverIdentity}`;
  if (tls.mode === "tls")
    return `${base}/tls:${tls.serverName}:${tls.ca === null ? "system" : fnv1a(tls.ca)}${
      tls.clientCertificate ? `:client:${fnv1a(clientCertificateKey(tls.clientCertificate))}` : ""
    }`;
  return base;
}

/** Plain TCP connections whose host is resolved by `lookup`. */
const plainConnector =
  (lookup: net.LookupFunction) =>
  (host: string, port: number): net.Socket =>
    net.connect({ host, port, lookup, noDelay: true });

/** Pools by "host:port", shared by every cluster and kept across reloads. */
export class PoolCache {
  private readonly pools = new Map<string, UpstreamPool>();
  private readonly options: PoolCacheOptions;
  constructor(options: PoolCacheOptions) {
    this.options = options;
  }

  get(host: string, port: number, cluster: Cluster): UpstreamPool {
    const key = poolKey(`${host}:${port}`, cluster);
    let pool = this.pools.get(key);
    if (!pool && cluster.protocol === "http2") {
      const tls = cluster.tls;
      pool = new H2Pool(
        host,
        port,
        cluster.connectTimeoutMs,
        tls.mode === "mtls"
          ? (this.options.mtls ?? noIdentity)(tls.serverIdentity, "http2")
          : tls.mode === "tls"
            ? originateConnector(tls, "http2", this.options.lookup, this.options.clientCertificates)
            : undefined,
        tls.mode === "mtls" ? connectionReusable : undefined,
      );
      this.pools.set(key, pool);
    }
    if (!pool) {
      const tls = cluster.tls;
      pool = new H1Pool(host, port, {
        maxConnections: cluster.circuitBreaker.maxConnections || this.options.connections,
        connectTimeoutMs: cluster.connectTimeoutMs,
        ...(tls.mode === "mtls"
          ? {
              connect: (this.options.mtls ?? noIdentity)(tls.serverIdentity),
              readyEvent: "secureConnect" as const,
              keepAliveMs: MESH_IDLE_MS,
              reusable: connectionReusable,
            }
          : tls.mode === "tls"
            ? {
                connect: originateConnector(
                  tls,
                  "http1",
                  this.options.lookup,
                  this.options.clientCertificates,
                ),
                readyEvent: "secureConnect" as const,
              }
            : this.options.lookup !== undefined
              ? { connect: plainConnector(this.options.lookup) }
              : {}),
      });
      this.pools.set(key, pool);
    }
    return pool;
  }

  /** Closes pools no cluster uses any more (after a reload); keys from UpstreamCluster.poolKeys(). */
  async retain(keys: ReadonlySet<string>): Promise<void> {
    const stale = [...this.pools.entries()].filter(([k]) => !keys.has(k));
    for (const [k] of stale) this.pools.delete(k);
    await Promise.allSettled(stale.map(([, p]) => p.close()));
  }

  /** Closes the pools of these keys now (a cluster made on demand was evicted); in-flight requests finish. */
  async release(keys: readonly string[]): Promise<void> {
    const gone = keys.flatMap((k) => {
      const p = this.pools.get(k);
      this.pools.delete(k);
      return p === undefined ? [] : [p];
    });
    await Promise.allSettled(gone.map((p) => p.close()));
  }

  async closeAll(): Promise<void> {
    const all = [...this.pools.values()];
    this.pools.clear();
    await Promise.allSettled(all.map((p) => p.close()));
  }
}

export class UpstreamCluster {
  readonly config: Cluster;
  /** Retries to this cluster are paid from one budget. */
  readonly budget: RetryBudget;
  /** Requests in flight to this cluster (circuit breaker: maxRequests). */
  active = 0;
  private endpoints: Endpoint[] = [];
  private rr = 0;
  private ring: { hashes: Uint32Array; owners: Endpoint[] } | null = null;
  private timer: NodeJS.Timeout | null = null;
  /** Resolutions failed in a row (the next one is retried sooner: resolveAndSchedule). */
  private dnsFailures = 0;
  private probeTimer: NodeJS.Timeout | null = null;
  private closed = false;
  /** Until when some endpoint may be unavailable (ejected); 0 = none, so pick() takes the fast path. */
  private degradedUntil = 0;
  private activeUnhealthy = 0;
  /** Endpoints with a health probe in flight. */
  private readonly probing = new Set<Endpoint>();
  private readonly discovery: Discovery;
  private readonly pools: PoolCache;
  private readonly events: ClusterEvents;

  constructor(config: Cluster, discovery: Discovery, pools: PoolCache, events: ClusterEvents) {
    this.config = config;
    this.discovery = discovery;
    this.pools = pools;
    this.events = events;
    this.budget = new RetryBudget(config.retryBudget);
  }

  /** Resolves endpoints once (and starts periodic DNS re-resolution). */
  async start(): Promise<void> {
    if (this.discovery.kind === "static") {
      this.setEndpoints(this.discovery.endpoints[this.config.name] ?? []);
    } else {
      await this.resolveAndSchedule();
    }
    const hc = this.config.healthCheck;
    if (hc) {
      this.probeTimer = setInterval(() => void this.probeAll(), Math.max(100, hc.intervalMs));
      this.probeTimer.unref();
      void this.probeAll();
    }
  }

  /** Active health checks: GET healthCheck.path on every endpoint; 2xx within the timeout is healthy. */
  private async probeAll(): Promise<void> {
    const hc = this.config.healthCheck;
    if (!hc || this.closed) return;
    await Promise.all(
      this.endpoints.map(async (e) => {
        // At most one probe per endpoint at a time: a round that finds the last one still open skips it
        // (that one fails at its own timeout) rather than opening another connection.
        if (this.probing.has(e)) return;
        this.probing.add(e);
        const ok = await e.pool
          .request({
            method: "GET",
            path: hc.path,
            headersTimeout: hc.timeoutMs,
            totalTimeout: hc.timeoutMs, // a connect that hangs is a failed probe, not a stalled round
            bodyTimeout: hc.timeoutMs,
            // A probe is a whole exchange: a body still coming (even trickling) at its timeout fails it.
            callTimeout: hc.timeoutMs,
          })
          .then(async (r) => {
            await r.body.dump();
            return r.statusCode >= 200 && r.statusCode < 300;
          })
          // A probe that never got one of the pool's connections (every one busy, e.g. with long streams)
          // learnt nothing of the endpoint: neither a success nor a failure.
          .catch((err: { code?: string }) => (err.code === "UND_ERR_QUEUE_TIMEOUT" ? null : false))
          .finally(() => this.probing.delete(e));
        // The endpoint left meanwhile (DNS replaced it, the cluster closed): its result is nobody's, and
        // counted it would skew activeUnhealthy — the count pick() trusts to skip the health filter.
        if (ok === null || this.closed || !this.endpoints.includes(e)) return;
        if (ok) {
          e.probeFailures = 0;
          e.probeSuccesses++;
          if (!e.health.activeHealthy && e.probeSuccesses >= hc.healthyThreshold)
            this.setActiveHealth(e, true);
        } else {
          e.probeSuccesses = 0;
          e.probeFailures++;
          if (e.health.activeHealthy && e.probeFailures >= hc.unhealthyThreshold)
            this.setActiveHealth(e, false);
        }
      }),
    );
  }

  private setActiveHealth(e: Endpoint, healthy: boolean): void {
    e.health.activeHealthy = healthy;
    this.activeUnhealthy += healthy ? -1 : 1;
    this.events.onHealthChange(this.config.name, e.key, healthy);
  }

  /**
   * Resolves the cluster's DNS name and schedules the next resolution when the shortest record TTL
   * expires (between 1 s and discovery.refreshMs). Names DNS does not answer (e.g. from /etc/hosts)
   * fall back to the system resolver and the refresh interval. A failed resolution is retried after 1 s,
   * then 2, 4, … up to the refresh interval (Envoy's dns_failure_refresh_rate): a service whose pods
   * become ready just after the proxy started — its headless name answering nothing yet — is reachable
   * within seconds, not a whole refresh interval later.
   */
  private async resolveAndSchedule(): Promise<void> {
    if (this.discovery.kind !== "dns" || this.closed) return;
    const maxMs = Math.max(1000, this.discovery.refreshMs);
    const name = this.discovery.template
      .replaceAll("{service}", this.config.service)
      .replaceAll("{namespace}", this.config.namespace);
    let nextMs = maxMs;
    try {
      const records = (
        await Promise.all([
          resolve4(name, { ttl: true }).catch(() => []),
          resolve6(name, { ttl: true }).catch(() => []),
        ])
      ).flat();
      if (records.length > 0) {
        this.setEndpoints(records.map((r) => ({ host: r.address, port: this.config.port })));
        nextMs = Math.min(maxMs, Math.max(1000, Math.min(...records.map((r) => r.ttl)) * 1000));
      } else {
        const addrs = await lookup(name, { all: true });
        this.setEndpoints(addrs.map((a) => ({ host: a.address, port: this.config.port })));
      }
      this.dnsFailures = 0;
    } catch (err) {
      // Keep the last known endpoints: a DNS hiccup must not empty a cluster.
      nextMs = Math.min(maxMs, 1000 * 2 ** Math.min(this.dnsFailures, 30));
      this.dnsFailures++;
      this.events.onError(
        `cluster ${this.config.name}: resolving ${name} failed (${(err as Error).message})`,
      );
    }
    if (this.closed) return;
    this.timer = setTimeout(() => void this.resolveAndSchedule(), nextMs);
    this.timer.unref();
  }

  private setEndpoints(list: readonly { host: string; port: number }[]): void {
    const old = new Map(this.endpoints.map((e) => [e.key, e]));
    this.endpoints = [...list]
      .map(({ host, port }) => {
        const key = `${host}:${port}`;
        return (
          old.get(key) ?? {
            key,
            host,
            port,
            pool: this.pools.get(host, port, this.config),
            inFlight: 0,
            health: newHealth(),
            probeSuccesses: 0,
            probeFailures: 0,
          }
        );
      })
      .sort((a, b) => compareCodeUnits(a.key, b.key));
    this.activeUnhealthy = this.endpoints.filter((e) => !e.health.activeHealthy).length;
    this.ring = null;
  }

  /** Endpoints ejected by outlier detection right now. */
  ejectedCount(nowMs: number): number {
    if (this.degradedUntil <= nowMs) return 0;
    let n = 0;
    for (const e of this.endpoints) if (e.health.ejectedUntil > nowMs) n++;
    return n;
  }

  /** Records an attempt's result for outlier detection (a failure: 5xx, reset, timeout, connect failure). */
  record(e: Endpoint, failed: boolean, nowMs: number): void {
    const od = this.config.outlierDetection;
    if (recordResult(e.health, failed, od, nowMs, this.ejectedCount(nowMs), this.endpoints.length)) {
      this.degradedUntil = Math.max(this.degradedUntil, e.health.ejectedUntil);
      this.events.onEjection(this.config.name, e.key);
    }
  }

  endpointKeys(): string[] {
    return this.endpoints.map((e) => e.key);
  }

  /** The PoolCache keys of this cluster's endpoints. */
  poolKeys(): string[] {
    return this.endpoints.map((e) => poolKey(e.key, this.config));
  }

  /**
   * Chooses an available endpoint (not ejected, not failing active checks), preferring one other than
   * `avoid` (a retry's previous endpoint); null when the cluster has no endpoint. When fewer than
   * `outlierDetection.panicThreshold` percent of the endpoints are available, any endpoint may be chosen (panic routing).
   * `hashKey` feeds ring-hash.
   */
  pick(hashKey: string, nowMs: number, avoid?: Endpoint): Endpoint | null {
    let eps = this.endpoints;
    if (this.degradedUntil > nowMs || this.activeUnhealthy > 0) {
      const up = eps.filter((e) => available(e.health, nowMs));
      // Panic routing (Envoy's healthy_panic_threshold, same default of 50 %): with fewer endpoints
      // available than the threshold, the health signals are trusted less than the endpoints — one
      // ejected endpoint of one, or a check failing everywhere at once, must not turn the whole cluster
      // into 503s for the ejection time. panicThreshold 0 keeps failing fast.
      if (up.length * 100 < eps.length * this.config.outlierDetection.panicThreshold) {
        if (eps.length > 0) this.events.onPanic?.(this.config.name);
        if (this.config.loadBalancer === "ring-hash" && eps.length > 0)
          return this.ringPick(hashKey, nowMs, true, avoid);
      } else {
        eps = up;
        if (this.config.loadBalancer === "ring-hash") return this.ringPick(hashKey, nowMs, false, avoid);
      }
    }
    if (avoid && eps.length > 1) eps = eps.filter((e) => e !== avoid);
    if (eps.length === 0) return null;
    if (eps.length === 1) return eps[0]!;
    switch (this.config.loadBalancer) {
      case "round-robin":
        return eps[this.rr++ % eps.length]!;
      case "least-request": {
        // Power of two choices: two distinct random endpoints, the one with fewer requests in flight.
        const i = Math.floor(Math.random() * eps.length);
        let j = Math.floor(Math.random() * (eps.length - 1));
        if (j >= i) j++;
        const a = eps[i]!;
        const b = eps[j]!;
        return b.inFlight < a.inFlight ? b : a;
      }
      case "ring-hash":
        return this.ringPick(hashKey, nowMs, false, avoid);
    }
  }

  /**
   * The ring owner of the key, or the next available owner clockwise when it is unavailable; in panic,
   * the owner whatever its health. `avoid` (a retry's previous endpoint) is passed over for the next
   * owner clockwise, and taken only when no other is available — a retry of a key must not go back to
   * the endpoint that just failed it.
   */
  private ringPick(key: string, nowMs: number, panic = false, avoid?: Endpoint): Endpoint | null {
    if (!this.ring) this.ring = buildRing(this.endpoints);
    const h = ringHash(key);
    const { hashes, owners } = this.ring;
    let lo = 0;
    let hi = hashes.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (hashes[mid]! < h) lo = mid + 1;
      else hi = mid;
    }
    let fallback: Endpoint | null = null;
    for (let k = 0; k < owners.length; k++) {
      const owner = owners[(lo + k) % owners.length]!;
      if (!panic && !available(owner.health, nowMs)) continue;
      if (owner !== avoid) return owner;
      fallback = owner;
    }
    return fallback;
  }

  /**
   * Takes over the outlier-detection and health-check state of `previous` (the same cluster in the config
   * a reload replaces) for every endpoint both have: an ejected endpoint stays ejected until its ejection
   * ends, its ejection count (the next ejection's length) and failure run carry on, and an endpoint active
   * health checks found unhealthy stays out until probes find it healthy — as Envoy keeps the state of a
   * cluster a config update leaves unchanged. Without it every reload (a route added) sent traffic back to
   * endpoints just ejected.
   */
  inheritFrom(previous: UpstreamCluster): void {
    const before = new Map(previous.endpoints.map((e) => [e.key, e]));
    for (const e of this.endpoints) {
      const was = before.get(e.key);
      if (was === undefined) continue;
      Object.assign(e.health, was.health);
      e.probeSuccesses = was.probeSuccesses;
      e.probeFailures = was.probeFailures;
    }
    this.activeUnhealthy = this.endpoints.filter((e) => !e.health.activeHealthy).length;
    this.degradedUntil = Math.max(this.degradedUntil, previous.degradedUntil);
  }

  close(): void {
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    if (this.probeTimer) clearInterval(this.probeTimer);
  }
}

/**
 * At a reload's swap: each cluster of `next` takes over the endpoint state of the cluster of `previous`
 * with its name and the same config (UpstreamCluster.inheritFrom). A cluster whose config changed starts
 * afresh — its thresholds or endpoints may mean something else now.
 */
export function inheritClusterState(
  previous: Iterable<UpstreamCluster>,
  next: Iterable<UpstreamCluster>,
): void {
  const byName = new Map<string, UpstreamCluster>();
  for (const c of previous) byName.set(c.config.name, c);
  for (const c of next) {
    const was = byName.get(c.config.name);
    if (was !== undefined && was !== c && JSON.stringify(was.config) === JSON.stringify(c.config))
      c.inheritFrom(was);
  }
}

/** The connector of a PoolCache without mTLS: every connection fails closed. */
function noIdentity(): (host: string, port: number) => net.Socket {
  return () => {
    const socket = new net.Socket();
    process.nextTick(() =>
      socket.destroy(
        Object.assign(new Error("mTLS to the mesh needs a workload identity; none is configured"), {
          code: "E_RT_IDENTITY_UNAVAILABLE",
        }),
      ),
    );
    return socket;
  };
}

const VNODES = 100;

function buildRing(endpoints: readonly Endpoint[]): { hashes: Uint32Array; owners: Endpoint[] } {
  const points: [number, Endpoint][] = [];
  for (const e of endpoints) for (let v = 0; v < VNODES; v++) points.push([ringHash(`${e.key}#${v}`), e]);
  points.sort((a, b) => a[0] - b[0]);
  return { hashes: Uint32Array.from(points.map((p) => p[0])), owners: points.map((p) => p[1]) };
}

/** FNV-1a, 32-bit: a fast hash of a string (keys of pools). */
export function fnv1a(text: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}

/**
 * A position on the ring: FNV-1a finished with murmur3's fmix32. FNV-1a alone barely spreads strings
 * that differ only in their last characters — an endpoint's points (`10.244.1.17:8080#0` … `#99`), the
 * addresses of one subnet — so an endpoint's points bunched up, and its share of the keys was anything
 * from a third to twice its due; the finalizer spreads every bit over the whole ring.
 */
function ringHash(text: string): number {
  let h = fnv1a(text);
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}
