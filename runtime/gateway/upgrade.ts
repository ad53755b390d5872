/**
 * WebSocket upgrades (RFC 6455 over HTTP/1.1): the same checks and decide() as any request — header
 * hygiene, canonical path and route, authentication requirement — then a tunnel to an endpoint of the
 * route's backend: the handshake request is re-serialized from the canonical path and the filtered
 * headers, and from then on bytes flow both ways untouched until either side closes or the connection
 * idles past the listener's idle timeout. Only `Upgrade: websocket` is accepted.
 */
import type { IncomingMessage } from "node:http";
import net, { type Socket } from "node:net";
import type { GatewayRuntimeConfig } from "../contract/schema.ts";
import { decide, type CompiledGateway, type RouteDecision } from "../decide/decide.ts";
import { rateLimitHeaders, retryAfterSeconds } from "../ratelimit/headers.ts";
import type { RateLimitPlan } from "../ratelimit/limiter.ts";
import type { RateLimitDecision } from "../ratelimit/local.ts";
import type { UpstreamCluster } from "../upstream/cluster.ts";
import type { GatewayErrorCode } from "./errors.ts";
import {
  checkRequestHeaders,
  clientAddress,
  forwardedHeader,
  requestId,
  upstreamRequestHeaders,
} from "./headers.ts";

export interface UpgradeContext {
  readonly config: GatewayRuntimeConfig;
  readonly compiled: CompiledGateway;
  readonly clusters: ReadonlyMap<string, UpstreamCluster>;
  /** Route rate limits: an upgrade counts like any request. */
  readonly rateLimits?: RateLimitPlan;
}

export interface UpgradeObserver {
  /** Called when the tunnel ends (or the upgrade is refused), with the route and the status. */
  done(route: string, status: number, code: GatewayErrorCode | null): void;
  tunnels: Set<Socket>;
}

function refuse(socket: Socket, status: number, code: GatewayErrorCode, message: string, extra = ""): void {
  const body = JSON.stringify({ error: { code, message } });
  socket.end(
    `HTTP/1.1 ${status} ${statusText(status)}\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\n` +
      `x-meshgate-error: ${code}\r\nconnection: close\r\n${extra}\r\n${body}`,
  );
}

const statusText = (s: number) =>
  ({
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    405: "Method Not Allowed",
    429: "Too Many Requests",
    502: "Bad Gateway",
    503: "Service Unavailable",
  })[s] ?? "Error";

export function handleUpgrade(
  ctx: UpgradeContext,
  req: IncomingMessage,
  socket: Socket,
  head: Buffer,
  scheme: "http" | "https",
  observer: UpgradeObserver,
  mintId: () => string,
): void {
  socket.on("error", () => socket.destroy());
  const fail = (status: number, code: GatewayErrorCode, message: string, route = "none", extra = "") => {
    refuse(socket, status, code, message, extra);
    observer.done(route, status, code);
  };
  if ((req.headers.upgrade ?? "").toLowerCase() !== "websocket") {
    return fail(400, "bad_request_target", "only Upgrade: websocket is supported");
  }
  const problem = checkRequestHeaders(req.rawHeaders, req.httpVersionMinor);
  if (problem) return fail(400, problem.code, problem.detail);
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
  if (!d.auth.public) {
    return fail(
      401,
      "unauthenticated",
      "this route requires authentication",
      route,
      'www-authenticate: Bearer realm="meshgate"\r\n',
    );
  }
  if (d.action.kind !== "forward")
    return fail(400, "action_unavailable", "WebSocket upgrades need a forwarding route", route);
  const backend = d.action.backends[0]!.cluster;
  const cluster = ctx.clusters.get(backend);
  if (!cluster) return fail(503, "no_cluster", `cluster ${backend} is not configured`, route);
  if (cluster.config.tls.mode === "mtls") {
    return fail(503, "upstream_identity_unavailable", "mTLS to the mesh needs a workload identity", route);
  }
  const peer = socket.remoteAddress ?? "";
  const clientIp = ctx.config.clientIp;
  const addr = clientAddress(
    clientIp.header === "forwarded" ? req.headers.forwarded : req.headers["x-forwarded-for"],
    peer,
    clientIp.trustedHops,
    clientIp.header,
  );
  const client = addr.client;
  const tunnel = () =>
    openTunnel(ctx, req, socket, head, scheme, observer, mintId, d, cluster, addr, peer, fail);
  const limiter = ctx.rateLimits?.limiters.get(route);
  if (limiter === undefined) return tunnel();
  const limited = (rl: RateLimitDecision) => {
    if (rl.allowed) return tunnel();
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
    undefined,
    undefined,
    limiter.header === null ? undefined : req.headers[limiter.header],
  );
  if (rl instanceof Promise) rl.then(limited).catch(() => socket.destroy());
  else limited(rl);
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
  addr: ReturnType<typeof clientAddress>,
  peer: string,
  fail: (status: number, code: GatewayErrorCode, message: string, route?: string, extra?: string) => void,
): void {
  const { client, trusted, forwardedFor } = addr;
  const route = d.route.name;
  const backend = cluster.config.name;
  if (socket.destroyed) return; // the client left while the rate limit was checked
  const endpoint = cluster.pick(client, Date.now());
  if (!endpoint)
    return fail(503, "no_healthy_upstream", `cluster ${backend} has no available endpoint`, route);

  const headers = upstreamRequestHeaders(req.headers);
  headers.connection = "Upgrade";
  headers.upgrade = "websocket";
  headers["x-forwarded-for"] = forwardedFor;
  headers["x-forwarded-proto"] = scheme;
  if (req.headers.host) headers["x-forwarded-host"] = req.headers.host;
  headers.forwarded = forwardedHeader(trusted, peer, scheme, req.headers.host);
  headers["x-real-ip"] = client;
  headers["x-request-id"] = requestId(req.headers["x-request-id"], mintId);
  if (d.upstreamHost) headers.host = d.upstreamHost;
  let handshake = `GET ${d.upstreamPath} HTTP/1.1\r\n`;
  for (const [name, value] of Object.entries(headers)) {
    for (const v of Array.isArray(value) ? value : [value]) handshake += `${name}: ${v}\r\n`;
  }
  handshake += "\r\n";

  const upstream = net.connect({ host: endpoint.host, port: endpoint.port, noDelay: true });
  const connectTimer = setTimeout(
    () => upstream.destroy(Object.assign(new Error("connect timeout"), { code: "ETIMEDOUT" })),
    cluster.config.connectTimeoutMs,
  );
  let status = 0;
  let connected = false;
  upstream.once("connect", () => {
    connected = true;
    clearTimeout(connectTimer);
    observer.tunnels.add(socket);
    upstream.write(handshake);
    if (head.length) upstream.write(head);
    upstream.once("data", (chunk: Buffer) => {
      const m = /^HTTP\/1\.[01] (\d{3})/.exec(chunk.subarray(0, 16).toString("latin1"));
      status = m ? Number(m[1]) : 502;
    });
    upstream.pipe(socket);
    socket.pipe(upstream);
  });
  const idle = ctx.config.limits.idleTimeoutMs;
  socket.setTimeout(idle, () => socket.destroy());
  upstream.setTimeout(idle, () => upstream.destroy());
  const close = () => {
    socket.destroy();
    upstream.destroy();
  };
  upstream.on("error", (err: Error & { code?: string }) => {
    clearTimeout(connectTimer);
    if (!connected) {
      const refused = err.code === "ECONNREFUSED" || err.code === "ETIMEDOUT";
      fail(
        refused ? 503 : 502,
        refused ? "upstream_connect_failure" : "upstream_reset",
        `upstream ${backend}: ${err.code ?? err.message}`,
        route,
      );
      upstream.destroy();
      return;
    }
    close();
  });
  socket.on("close", () => {
    upstream.destroy();
    if (connected && observer.tunnels.delete(socket)) observer.done(route, status || 502, null);
  });
  upstream.on("close", () => socket.destroy());
}
