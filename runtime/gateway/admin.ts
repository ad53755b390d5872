/**
 * The admin listener, shared by the single-process gateway and the multi-worker primary: /live, /ready,
 * /metrics (Prometheus text format), /config (redacted), POST /reload, POST /cache/purge. A POST carrying
 * an Origin header (a browser page's cross-site request) is refused with 403.
 */
import http from "node:http";
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
