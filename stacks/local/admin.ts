/**
 * The local admin server of `meshgate up` (port `targets.local.adminPort`, 127.0.0.1 only):
 *
 * | path | what |
 * |---|---|
 * | `/` | an index of the running mesh (the topology page mounts here when it lands) |
 * | `/.well-known/jwks.json` | the dev token issuer's public keys (the local gateway's JWT providers fetch it) |
 * | `/api/plan` | the local plan as JSON (API-key hashes, URL credentials and environment values redacted; it never holds a private key) |
 * | `/api/status` | every supervised process: pid, state, restarts, crash loop |
 * | `/healthz` | 200 while the launcher runs |
 *
 * Like the topology page, every route but the JWKS and `/healthz` answers only for the loopback Host
 * names (403 `host_not_allowed` otherwise): a web page that rebinds its DNS name to 127.0.0.1 must not
 * read the plan (configs, file paths, the apps' environment) or the processes.
 *
 * **Mount point**: `handlers` is an array the server tries in order before its own routes; a handler
 * returns true when it answered. The topology page (`topologyHandler({ plan, spec, … })`) is pushed
 * there (`admin.handlers.unshift(handler)`).
 */
import http from "node:http";
import type { LocalPlan } from "./plan.ts";
import type { ChildStatus } from "./supervisor.ts";
import { LOOPBACK_HOSTS } from "./topology/index.ts";

/** Answers a request (and returns true) or leaves it to the next handler (false). */
export type AdminHandler = (req: http.IncomingMessage, res: http.ServerResponse) => boolean;

export interface LocalAdminOptions {
  /** The plan to show, or a function giving the running one (it changes under `meshgate up --watch`). */
  readonly plan: LocalPlan | (() => LocalPlan);
  readonly jwks: { readonly keys: readonly object[] };
  readonly status: () => readonly ChildStatus[];
}

export interface LocalAdmin {
  /** The mount point: tried in order before the built-in routes. */
  readonly handlers: AdminHandler[];
  readonly server: http.Server;
  listen(port: number): Promise<number>;
  close(): Promise<void>;
}

function json(res: http.ServerResponse, status: number, value: unknown, cache = "no-store"): void {
  const body = JSON.stringify(value, null, 2);
  res.writeHead(status, {
    "content-type": "application/json",
    "content-length": Buffer.byteLength(body),
    "cache-control": cache,
    "x-content-type-options": "nosniff",
  });
  res.end(body);
}

/** What stands for a secret value in `/api/plan`. */
const REDACTED = "[redacted]";

/**
 * A URL's user and password in any text (a JSON config, a Prometheus YAML config): the scheme, then
 * everything up to an `@` that holds no `/`, `?`, `#`, quote or space (JSON escapes `\x` included).
 */
const URL_USERINFO = /\b([a-z][a-z0-9+.-]*:\/\/)(?:[^\s"'<>/?#@\\]|\\.)+@/gi;

/**
 * The plan as the admin server shows it, to any local user (the run files are 0600 because a config may
 * hold a credential): in file contents, API-key hashes and the user and password of every URL (an OTLP
 * endpoint, a Redis store, a JWKS URL) replaced by a marker; every process's environment values
 * replaced by a marker (a service's `local.env` may hold a password; the names stay). The topology page
 * does not read it (it has its own `/api/topology`).
 */
export function publicPlan(plan: LocalPlan): unknown {
  return {
    ...plan,
    processes: plan.processes.map((p) => ({
      ...p,
      env: Object.fromEntries(Object.keys(p.env ?? {}).map((k) => [k, REDACTED])),
    })),
    files: plan.files.map((f) => ({
      path: f.path,
      content: f.content
        .replace(/"sha256:[0-9a-f]{64}"/g, `"${REDACTED}"`)
        .replace(URL_USERINFO, `$1${REDACTED}@`),
    })),
  };
}

/** The index page's Content-Security-Policy: its inline style, nothing else. */
const INDEX_CSP =
  "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

const escape = (s: string) =>
  s.replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]!);

function index(plan: LocalPlan, status: readonly ChildStatus[]): string {
  const rows = status
    .map(
      (s) =>
        `<tr><td>${escape(s.name)}</td><td>${s.pid ?? ""}</td><td>${escape(s.state)}${s.crashLoop ? " ⚠ crash loop" : ""}</td><td>${s.restarts}</td></tr>`,
    )
    .join("\n");
  const links = [
    plan.urls.gateway
      ? `<li>gateway: <a href="${escape(plan.urls.gateway)}">${escape(plan.urls.gateway)}</a></li>`
      : "",
    `<li>JWKS: <a href="/.well-known/jwks.json">/.well-known/jwks.json</a></li>`,
    `<li>plan: <a href="/api/plan">/api/plan</a>, status: <a href="/api/status">/api/status</a></li>`,
    plan.urls.prometheus
      ? `<li>Prometheus: <a href="${escape(plan.urls.prometheus)}">${escape(plan.urls.prometheus)}</a></li>`
      : "",
  ].join("\n");
  return `<!doctype html>
<html><head><meta charset="utf-8"><title>meshgate · ${escape(plan.mesh)}</title>
<style>body{font:14px system-ui,sans-serif;margin:2em}table{border-collapse:collapse}td,th{padding:2px 10px;border-bottom:1px solid #ddd;text-align:left}</style>
</head><body>
<h1>meshgate up · ${escape(plan.mesh)}</h1>
<ul>${links}</ul>
<table><tr><th>process</th><th>pid</th><th>state</th><th>restarts</th></tr>
${rows}
</table>
</body></html>
`;
}

export function createLocalAdmin(o: LocalAdminOptions): LocalAdmin {
  const plan = () => (typeof o.plan === "function" ? o.plan() : o.plan);
  const handlers: AdminHandler[] = [];
  const server = http.createServer((req, res) => {
    try {
      for (const h of handlers) if (h(req, res)) return;
    } catch {
      if (!res.headersSent) json(res, 500, { error: "internal_error" });
      return;
    }
    const path = (req.url ?? "/").split("?")[0];
    if (req.method !== "GET" && req.method !== "HEAD") return json(res, 405, { error: "method_not_allowed" });
    // Public by nature (the gateway fetches the JWKS; a liveness probe shows nothing): any Host.
    if (path !== "/.well-known/jwks.json" && path !== "/healthz") {
      const host = (req.headers.host ?? "").toLowerCase().replace(/:[0-9]+$/, "");
      if (!LOOPBACK_HOSTS.includes(host)) return json(res, 403, { error: "host_not_allowed" });
    }
    switch (path) {
      case "/healthz":
        return json(res, 200, { status: "ok" });
      case "/.well-known/jwks.json":
        return json(res, 200, o.jwks, "public, max-age=300");
      case "/api/plan":
        return json(res, 200, publicPlan(plan()));
      case "/api/status":
        return json(res, 200, o.status());
      case "/": {
        const body = index(plan(), o.status());
        res.writeHead(200, {
          "content-type": "text/html; charset=utf-8",
          "content-length": Buffer.byteLength(body),
          "cache-control": "no-store",
          "x-content-type-options": "nosniff",
          // No script at all, and never framed (as the topology page).
          "content-security-policy": INDEX_CSP,
          "x-frame-options": "DENY",
        });
        return void res.end(body);
      }
      default:
        return json(res, 404, { error: "not_found" });
    }
  });
  return {
    handlers,
    server,
    listen: (port) =>
      new Promise((resolve, reject) => {
        server.once("error", reject);
        server.listen(port, "127.0.0.1", () => {
          server.off("error", reject);
          resolve((server.address() as { port: number }).port);
        });
      }),
    close: () =>
      new Promise((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
