/**
 * WebSocket upgrades (RFC 6455 over HTTP/1.1): the same checks and decide() as any request — header
 * hygiene, canonical path and route, authentication and authorization, rate limit — then a tunnel to an endpoint of the
 * route's backend: the handshake request is re-serialized from the canonical path and the filtered
 * headers, and once the upstream has switched protocols (a 101 with `Upgrade: websocket` and the
 * handshake's Sec-WebSocket-Accept) bytes flow both ways untouched until either side closes or the
 * connection idles past the listener's idle timeout. Any other answer is relayed to the client and ends
 * the connection: no byte the client sends after its handshake reaches an upstream that did not switch.
 * Only `Upgrade: websocket` is accepted. A cluster with
 * `tls.mode: "mtls"` (a mesh service) is reached over mTLS with the gateway's identity (ALPN http/1.1, the
 * server proving the cluster's SPIFFE ID), through the service's sidecar, which authorizes the upgrade.
 */
import { STATUS_CODES, type IncomingMessage } from "node:http";
import net, { type Socket } from "node:net";
import { OIDC_CHALLENGE, type Authenticator } from "../auth/authenticator.ts";
import { RequestFacts } from "../auth/facts.ts";
import type { AdmitResult } from "../auth/types.ts";
import type { GatewayRuntimeConfig } from "../contract/schema.ts";
import { principalId, type IpRange, type Principal } from "../decide/authorize.ts";
import { decide, type CompiledGateway, type RouteDecision } from "../decide/decide.ts";
import { rateLimitHeaders, retryAfterSeconds } from "../ratelimit/headers.ts";
import type { RateLimitPlan } from "../ratelimit/limiter.ts";
import type { RateLimitDecision } from "../ratelimit/local.ts";
import type { UpstreamCluster } from "../upstream/cluster.ts";
import type { ClientCertificateStore } from "../upstream/client-cert.ts";
import { originateConnector, type MtlsConnect } from "../upstream/tls.ts";
import type { GatewayErrorCode } from "./errors.ts";
import { checkRequestHeaders, requestId, upstreamRequestHeaders } from "../net/headers.ts";
import { readUpgradeAnswer, upgradeHandshake } from "../net/upgrade.ts";
import {
  forwardedHeader,
  NOT_FORWARDED,
  OWN_PREFIX,
  requestClientAddress,
  useTargetAuthority,
  type ClientAddress,
} from "./headers.ts";

export interface UpgradeContext {
  readonly config: GatewayRuntimeConfig;
  readonly compiled: CompiledGateway;
  readonly clusters: ReadonlyMap<string, UpstreamCluster>;
  /** Route rate limits: an upgrade counts like any request. */
  readonly rateLimits?: RateLimitPlan;
  /** Authentication and authorization: an upgrade is admitted like any request. */
  readonly auth?: Authenticator;
  /** `clientIp.trustedProxies` parsed (null: the hop count decides). */
  readonly trustedProxies?: readonly IpRange[] | null;
  /** Per cluster outside the mesh: the headers it is not sent (headers.ts withheldHeaders). */
  readonly withheld?: ReadonlyMap<string, readonly string[]>;
}

/** Opens mTLS connections for clusters with `tls.mode: "mtls"`; without it they fail closed (503). */
export type UpgradeMtls = MtlsConnect | null;

/**
 * How backends outside the mesh are reached (clusters with an `address`, `tls` clusters): their names
 * resolved by `lookup` (the egress rules), the client certificates of mutual TLS from `clientCertificates`.
 */
export interface UpgradeOutside {
  readonly lookup?: net.LookupFunction;
  readonly clientCertificates?: ClientCertificateStore;
}

export interface UpgradeObserver {
  /** Called when the tunnel ends (or the upgrade is refused), with the route and the status. */
  done(route: string, status: number, code: GatewayErrorCode | null): void;
  /** An upgrade the rate-limit store could not count, admitted by its fail mode `open`. */
  failOpen?(route: string): void;
  tunnels: Set<Socket>;
}

function refuse(socket: Socket, status: number, code: GatewayErrorCode, message: string, extra = ""): void {
  const body = JSON.stringify({ error: { code, message } });
  socket.end(
    `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? "Error"}\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\n` +
      `x-meshgate-error: ${code}\r\nconnection: close\r\n${extra}\r\n${body}`,
  );
}

export function handleUpgrade(
  ctx: UpgradeContext,
  req: IncomingMessage,
  socket: Socket,
  head: Buffer,
  scheme: "http" | "https",
  observer: UpgradeObserver,
  mintId: () => string,
  mtls: UpgradeMtls = null,
  outside: UpgradeOutside = {},
): void {
  socket.on("error", () => socket.destroy());
  const fail = (status: number, code: GatewayErrorCode, message: string, route = "none", extra = "") => {
    refuse(socket, status, code, message, extra);
    observer.done(route, status, code);
  };
  if ((req.headers.upgrade ?? "").toLowerCase() !== "websocket") {
    return fail(400, "bad_request_target", "only Upgrade: websocket is supported");
  }
  // RFC 6455 §4.1: the opening handshake is a GET — and the handshake sent upstream is one, so a route
  // would otherwise be matched and authorized for one method (a public POST) and reach the upstream as
  // another (a GET that needs a token), its answer relayed when the upstream does not switch.
  if (req.method !== "GET") {
    return fail(400, "bad_upgrade", "a WebSocket opening handshake is a GET request (RFC 6455 §4.1)");
  }
  const problem = checkRequestHeaders(req.rawHeaders, req.httpVersionMinor, req.httpVersionMajor);
  if (problem) return fail(400, problem.code, problem.detail);
  useTargetAuthority(req);
  const d = decide(ctx.compiled, {
    method: req.method ?? "GET",
    target: req.url ?? "",
    host: req.headers.host,
    header: (n) => {
      const v = req.headers[n];
      return Array.isArray(v) ? v[0] : v;
    },
  });
  if (d.kind === "reject") {
    return fail(d.status, d.code, d.detail, "none", d.allow.length ? `allow: ${d.allow.join(", ")}\r\n` : "");
  }
  const route = d.route.name;
  if (d.action.kind !== "forward")
    return fail(400, "action_unavailable", "WebSocket upgrades need a forwarding route", route);
  // By weight, as any request: the first backend (by name) may be a canary's 10 % or a retired 0 %.
  const backend = chooseBackend(d.action.backends);
  const cluster = ctx.clusters.get(backend);
  if (!cluster) return fail(503, "no_cluster", `cluster ${backend} is not configured`, route);
  if (cluster.config.tls.mode === "mtls" && mtls === null) {
    return fail(503, "upstream_identity_unavailable", "mTLS to the mesh needs a workload identity", route);
  }
  const peer = socket.remoteAddress ?? "";
  const addr = requestClientAddress(req.headers, peer, ctx.config.clientIp, ctx.trustedProxies);
  const client = addr.client;
  // Authentication and authorization, as for any request (an OIDC login redirect cannot answer an
  // upgrade: without a session it is refused like any unauthenticated request).
  if (!d.auth.public || d.auth.clientIps.length > 0) {
    if (!ctx.auth) {
      return fail(401, "unauthenticated", "this route requires authentication", route, BEARER);
    }
    const facts = new RequestFacts(
      req,
      d.path,
      d.query,
      d.host,
      req.headers.host,
      scheme,
      client,
      addr.viaTrustedProxy,
    );
    const admitted = ctx.auth.admit(route, d.auth, facts);
    const admit = (verdict: AdmitResult) => {
      if (verdict.kind === "allow") return limit(verdict.principal);
      if (verdict.kind === "respond") {
        // The route's challenges (an OIDC route's, and a token's when the route takes one too).
        const challenge = ctx.auth!.challengeFor(d.auth) ?? OIDC_CHALLENGE;
        return fail(
          401,
          "unauthenticated",
          "this route requires a login session",
          route,
          `www-authenticate: ${challenge}\r\n`,
        );
      }
      let extra = "";
      for (const [k, v] of Object.entries(verdict.headers ?? {})) extra += `${k}: ${String(v)}\r\n`;
      fail(verdict.status, verdict.code, verdict.reason, route, extra);
    };
    if (admitted instanceof Promise) admitted.then(admit).catch(() => socket.destroy());
    else admit(admitted);
    return;
  }
  limit(null);

  function limit(principal: Principal | null): void {
    const tunnel = () =>
      openTunnel(
        ctx,
        req,
        socket,
        head,
        scheme,
        observer,
        mintId,
        d as RouteDecision,
        cluster!,
        addr,
        peer,
        fail,
        principal,
        mtls,
        outside,
      );
    rateLimit(principal, tunnel);
  }

  function rateLimit(principal: Principal | null, tunnel: () => void): void {
    const limiter = ctx.rateLimits?.limiters.get(route);
    if (limiter === undefined) return tunnel();
    const limited = (rl: RateLimitDecision) => {
      if (rl.allowed) {
        if (rl.storeError !== null) observer.failOpen?.(route);
        return tunnel();
      }
      if (rl.storeError !== null)
        return fail(
          503,
          "ratelimit_unavailable",
          "the rate-limit store is unavailable",
          route,
          "retry-after: 1\r\n",
        );
      let extra = `retry-after: ${retryAfterSeconds(rl)}\r\n`;
      for (const [k, v] of Object.entries(rateLimitHeaders(limiter.policy, rl) ?? {}))
        extra += `${k}: ${v}\r\n`;
      fail(429, "rate_limited", `the rate limit of route ${route} is spent`, route, extra);
    };
    const rl = limiter.check(
      client,
      // The subject as a plain request's bucket names it (mechanism, provider, a certificate's SANs): an
      // upgrade counts in that bucket, and an `alice` of another issuer has her own.
      limiter.keyKind === "subject" ? principalId(principal) || undefined : undefined,
      principal?.consumer ?? undefined,
      limiter.header === null
        ? undefined
        : // An identity header counts the principal's value, as for a plain request (never the client's copy).
          ctx.auth?.ownedHeaders.has(limiter.header)
          ? ctx.auth.identityHeaderValue(limiter.header, principal)
          : req.headers[limiter.header],
    );
    if (rl instanceof Promise) rl.then(limited).catch(() => socket.destroy());
    else limited(rl);
  }
}

const BEARER = 'www-authenticate: Bearer realm="meshgate"\r\n';

/**
 * A split's backend for one request, by weight (a backend of weight 0 never gets one); shared by plain
 * requests and WebSocket upgrades, so a tunnel lands where `explain` and the split's weights say.
 * Weights are integers (the config schema's): the draw is an integer in [0, total) and every step of the
 * walk is exact, so no rounding can land a draw on a backend of weight 0. `random` is for tests.
 */
export function chooseBackend(
  backends: readonly { cluster: string; weight: number }[],
  random: () => number = Math.random,
): string {
  if (backends.length === 1) return backends[0]!.cluster;
  const total = backends.reduce((s, b) => s + b.weight, 0);
  let x = Math.min(total - 1, Math.floor(random() * total));
  for (const b of backends) {
    x -= b.weight;
    if (x < 0) return b.cluster;
  }
  // Only when every weight is 0 (the spec refuses that: a split's weights sum to 100).
  return backends[backends.length - 1]!.cluster;
}

/** The tunnel of an accepted upgrade: connect, replay the handshake, then pipe both ways. */
function openTunnel(
  ctx: UpgradeContext,
  req: IncomingMessage,
  socket: Socket,
  head: Buffer,
  scheme: "http" | "https",
  observer: UpgradeObserver,
  mintId: () => string,
  d: RouteDecision,
  cluster: UpstreamCluster,
  addr: ClientAddress,
  peer: string,
  fail: (status: number, code: GatewayErrorCode, message: string, route?: string, extra?: string) => void,
  principal: Principal | null,
  mtls: UpgradeMtls,
  outside: UpgradeOutside,
): void {
  const { client, trusted, forwardedFor } = addr;
  const route = d.route.name;
  const backend = cluster.config.name;
  if (socket.destroyed) return; // the client left while the rate limit was checked
  const endpoint = cluster.pick(client, Date.now());
  if (!endpoint)
    return fail(503, "no_healthy_upstream", `cluster ${backend} has no available endpoint`, route);

  const headers = upstreamRequestHeaders(req.headers, NOT_FORWARDED, OWN_PREFIX);
  ctx.auth?.upstreamHeaders(headers, d.auth, principal);
  headers.connection = "Upgrade";
  headers.upgrade = "websocket";
  headers["x-forwarded-for"] = forwardedFor;
  headers["x-forwarded-proto"] = scheme;
  if (req.headers.host) headers["x-forwarded-host"] = req.headers.host;
  headers.forwarded = forwardedHeader(trusted, peer, scheme, req.headers.host);
  headers["x-real-ip"] = client;
  headers["x-request-id"] = requestId(req.headers["x-request-id"], mintId);
  const upstreamHost = d.upstreamHost ?? cluster.config.authority ?? null;
  if (upstreamHost !== null) headers.host = upstreamHost;
  for (const name of ctx.withheld?.get(backend) ?? []) delete headers[name];
  const path = ctx.auth ? ctx.auth.upstreamPath(d.auth, d.upstreamPath) : d.upstreamPath;
  const handshake = upgradeHandshake(path, headers);
  // Unreachable from a parsed request (one byte per character): a guard, not a path.
  if (handshake === null) return fail(500, "internal_error", "a handshake character outside one byte", route);

  const tlsMode = cluster.config.tls;
  const upstream =
    tlsMode.mode === "mtls" && mtls !== null
      ? mtls(tlsMode.serverIdentity, "http1")(endpoint.host, endpoint.port)
      : tlsMode.mode === "tls"
        ? originateConnector(
            tlsMode,
            "http1",
            outside.lookup,
            outside.clientCertificates,
          )(endpoint.host, endpoint.port)
        : net.connect({
            host: endpoint.host,
            port: endpoint.port,
            noDelay: true,
            ...((cluster.config.address ?? null) !== null && outside.lookup
              ? { lookup: outside.lookup }
              : {}),
          });
  const connectFailed = () =>
    upstream.destroy(Object.assign(new Error("connect timeout"), { code: "ETIMEDOUT" }));
  // 0: no timer of the gateway's own (the system's connect timeout; the idle timeout still ends the wait).
  const connectTimer =
    cluster.config.connectTimeoutMs > 0
      ? setTimeout(connectFailed, cluster.config.connectTimeoutMs)
      : undefined;
  let status = 0;
  let connected = false;
  /** The client's connection ends by itself (an answer being flushed): the upstream's close leaves it be. */
  let ending = false;
  const key = req.headers["sec-websocket-key"];
  upstream.once(tlsMode.mode === "none" ? "connect" : "secureConnect", () => {
    connected = true;
    clearTimeout(connectTimer);
    observer.tunnels.add(socket);
    upstream.write(handshake);
    // Nothing more of the client's goes upstream until the upstream has switched protocols: an upstream
    // that refuses the upgrade with an ordinary response keeps its connection an HTTP/1.1 one, and bytes
    // relayed into it would be requests no route admitted (WebSocket smuggling, as nginx and Envoy avoid
    // by tunnelling only after a 101).
    readUpgradeAnswer(upstream, key, (answer) => {
      if (answer.kind === "switched") {
        status = 101;
        // A FIN from one side ends only that direction (as in the sidecar's tunnels): the other side may
        // still send, and what the upstream wrote before its FIN still reaches a client that reads slowly.
        socket.allowHalfOpen = true;
        upstream.allowHalfOpen = true;
        socket.write(answer.bytes);
        if (head.length) upstream.write(head);
        upstream.pipe(socket);
        socket.pipe(upstream);
        return;
      }
      if (answer.kind === "invalid") {
        // A 101 that is not this handshake's (no Upgrade: websocket, or another Sec-WebSocket-Accept) does
        // not prove a WebSocket server took the connection; a malformed answer proves nothing: no tunnel.
        status = 502;
        ending = true;
        observer.tunnels.delete(socket);
        fail(502, "upstream_bad_upgrade", `upstream ${backend}: ${answer.reason}`, route);
        upstream.destroy();
        return;
      }
      // The upstream refused the upgrade: its answer goes to the client, and the connection ends with it
      // (by its Content-Length; else when the upstream closes or idles out). The client's bytes are dropped.
      status = answer.status;
      ending = true;
      socket.resume();
      socket.on("data", () => {});
      let rest = answer.contentLength === null ? Infinity : answer.headEnd + answer.contentLength;
      const relay = (b: Buffer) => {
        if (b.length >= rest) {
          upstream.off("data", relay);
          socket.end(b.subarray(0, rest)); // its close destroys the upstream connection
          return;
        }
        rest -= b.length;
        socket.write(b);
      };
      upstream.on("data", relay);
      upstream.on("end", () => socket.end());
      relay(answer.bytes);
    });
  });
  const idle = ctx.config.limits.idleTimeoutMs;
  const close = () => {
    socket.destroy();
    upstream.destroy();
  };
  // An idle tunnel closes both sides; a refusal's relayed answer still flushes (ending). Still connecting
  // (a connect timeout of 0, the system's own), the idle timeout fails the connect: the client gets 503.
  socket.setTimeout(idle, () => (connected ? close() : connectFailed()));
  upstream.setTimeout(idle, () => (!connected ? connectFailed() : ending ? upstream.destroy() : close()));
  upstream.on("error", (err: Error & { code?: string }) => {
    clearTimeout(connectTimer);
    if (!connected) {
      if (err.code === "E_RT_IDENTITY_UNAVAILABLE")
        fail(503, "upstream_identity_unavailable", "no valid mesh identity is loaded", route);
      else {
        // A failed mTLS handshake (including a server proving another SPIFFE ID) sent nothing.
        const refused =
          err.code === "ECONNREFUSED" ||
          err.code === "ETIMEDOUT" ||
          (err.code !== undefined &&
            (err.code.startsWith("ERR_SSL_") ||
              err.code.startsWith("ERR_TLS_") ||
              err.code.startsWith("E_RT_PKI_")));
        fail(
          refused ? 503 : 502,
          refused ? "upstream_connect_failure" : "upstream_reset",
          `upstream ${backend}: ${err.code ?? err.message}`,
          route,
        );
      }
      upstream.destroy();
      return;
    }
    close();
  });
  // A side that ended cleanly (its FIN read, no error) lets the other flush what it still holds (end);
  // an error, a reset or an idle timeout closes both at once (destroy).
  socket.on("close", (hadError) => {
    if (status === 101 && !hadError && socket.readableEnded) upstream.end();
    else upstream.destroy();
    if (connected && observer.tunnels.delete(socket)) observer.done(route, status || 502, null);
  });
  upstream.on("close", (hadError) =>
    ending || (status === 101 && !hadError && upstream.readableEnded) ? socket.end() : socket.destroy(),
  );
}
