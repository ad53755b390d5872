/**
 * The admin listener, shared by the single-process gateway and the multi-worker primary: /live, /ready,
 * /metrics (Prometheus text format), /config (redacted), POST /reload, POST /cache/purge. A POST carrying
 * an Origin header (a browser page's cross-site request) is refused with 403, and so is, on a connection
 * to a loopback address — or on any connection when the config lists `admin.hosts` — a request whose Host
 * names anything but the loopback (or one of those hosts): DNS rebinding.
 */
import http from "node:http";
import { isLoopbackHost } from "../auth/oidc.ts";
import { parsePurgeRequest, PURGE_BODY_LIMIT } from "../cache/purge.ts";
import type { PurgeRequest } from "../cache/store.ts";
import { EXPOSITION_CONTENT_TYPE } from "../telemetry/metrics.ts";

export interface AdminSources {
  /** Serving and not draining. */
  ready(): boolean;
  metrics(): string | Promise<string>;
  /** The config to show, already redacted. */
  config(): unknown;
  reload(): Promise<{ ok: boolean }>;
  /** Removes cached responses; resolves with how many were removed. */
  purge(request: PurgeRequest): Promise<number>;
  /**
   * The config's `admin.hosts`: Host names answered besides the loopback's, on every connection (an admin
   * published on the host's loopback through Docker's port forward sees the bridge as its local address).
   */
  hosts?(): readonly string[] | undefined;
}

/** A connection that arrived on a loopback address (127.0.0.0/8, ::1, their IPv4-mapped form). */
function arrivedOnLoopback(localAddress: string | undefined): boolean {
  if (localAddress === undefined) return false;
  const a = localAddress.startsWith("::ffff:") ? localAddress.slice(7) : localAddress;
  return a === "::1" || a.startsWith("127.");
}

/**
 * A Host header naming the loopback — `localhost`, `[::1]` or a 127.0.0.0/8 literal, any port — or none at
 * all (no browser sends a request without one).
 */
function loopbackHost(host: string | undefined, also: ReadonlySet<string> | null): boolean {
  if (host === undefined) return true;
  const colon = host.lastIndexOf(":");
  const name = (colon > host.lastIndexOf("]") ? host.slice(0, colon) : host).toLowerCase();
  return isLoopbackHost(name) || (also !== null && also.has(name));
}

/** `admin.hosts` as a set, made once per config (the array is the frozen config's). */
const hostSets = new WeakMap<readonly string[], ReadonlySet<string>>();
function hostSet(hosts: readonly string[]): ReadonlySet<string> {
  let set = hostSets.get(hosts);
  if (set === undefined) hostSets.set(hosts, (set = new Set(hosts)));
  return set;
}

export function createAdminServer(src: AdminSources): http.Server {
  return http.createServer((req, res) => {
    const path = (req.url ?? "/").split("?")[0];
    const send = (status: number, type: string, body: string) => {
      res.writeHead(status, { "content-type": type, "content-length": Buffer.byteLength(body) });
      res.end(body);
    };
    if (path === "/live") return send(200, "text/plain", "live\n");
    if (path === "/ready")
      return src.ready() ? send(200, "text/plain", "ready\n") : send(503, "text/plain", "not ready\n");
    // DNS rebinding: a web page in a browser on this machine (local mode binds the admin to 127.0.0.1)
    // can rebind its own name to 127.0.0.1 and read what it fetches as same-origin — the config, the
    // metrics. A connection to a loopback address names the loopback in its Host (curl, Prometheus and
    // the local stack do); the page's request names the page's host and is refused. Probes (/live,
    // /ready) show nothing and answer any Host.
    // With `admin.hosts` the check holds on every connection: Docker publishes the admin on the host's
    // 127.0.0.1, but its connections arrive on the container's bridge address.
    const hosts = src.hosts?.();
    const also = hosts === undefined ? null : hostSet(hosts);
    if (
      (also !== null || arrivedOnLoopback(req.socket.localAddress)) &&
      !loopbackHost(req.headers.host, also)
    ) {
      return send(
        403,
        "application/json",
        `${JSON.stringify({ error: "refused: the admin on a loopback address answers Host names of the loopback only (127.0.0.1, localhost, [::1])" })}\n`,
      );
    }
    if (path === "/config")
      return send(200, "application/json", `${JSON.stringify(src.config(), null, 2)}\n`);
    // A browser page (any site, on the operator's machine or a pod's neighbour) can POST here: a form or a
    // `no-cors` fetch with a text/plain body needs no preflight, so {"all":true} would purge the cache. Browsers
    // always send Origin on a cross-origin POST and the tools that call this API (curl, kubectl, the local
    // stack, Prometheus) never do: a state-changing request with one is refused.
    if (req.method === "POST" && req.headers.origin !== undefined) {
      return send(
        403,
        "application/json",
        `${JSON.stringify({ error: "refused: a request from a browser page (Origin header)" })}\n`,
      );
    }
    if (path === "/reload" && req.method === "POST") {
      void src.reload().then((r) => send(r.ok ? 200 : 422, "application/json", `${JSON.stringify(r)}\n`));
      return;
    }
    if (path === "/cache/purge") {
      if (req.method !== "POST") {
        res.setHeader("allow", "POST");
        return send(405, "application/json", `${JSON.stringify({ error: "use POST" })}\n`);
      }
      const chunks: Buffer[] = [];
      let size = 0;
      req.on("data", (c: Buffer) => {
        size += c.length;
        if (size <= PURGE_BODY_LIMIT) chunks.push(c);
      });
      req.on("end", () => {
        if (size > PURGE_BODY_LIMIT)
          return send(413, "application/json", `${JSON.stringify({ error: "purge request too large" })}\n`);
        const parsed = parsePurgeRequest(Buffer.concat(chunks).toString("utf8"));
        if (!parsed.ok) return send(400, "application/json", `${JSON.stringify({ error: parsed.error })}\n`);
        void src.purge(parsed.request).then(
          (purged) => send(200, "application/json", `${JSON.stringify({ purged })}\n`),
          (err: Error) => send(503, "application/json", `${JSON.stringify({ error: err.message })}\n`),
        );
      });
      return;
    }
    if (path === "/metrics") {
      void Promise.resolve()
        .then(() => src.metrics())
        .then(
          (text) => send(200, EXPOSITION_CONTENT_TYPE, text),
          (err: Error) => send(503, "text/plain", `${err.message}\n`),
        );
      return;
    }
    send(404, "text/plain", "not found\n");
  });
}
