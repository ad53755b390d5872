/**
 * The admin listener, shared by the single-process gateway and the multi-worker primary: /live, /ready,
 * /metrics (Prometheus text format), /config (redacted), POST /reload.
 */
import http from "node:http";
import { EXPOSITION_CONTENT_TYPE } from "../telemetry/metrics.ts";

export interface AdminSources {
  /** Serving and not draining. */
  ready(): boolean;
  metrics(): string | Promise<string>;
  /** The config to show, already redacted. */
  config(): unknown;
  reload(): Promise<{ ok: boolean }>;
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
    if (path === "/reload" && req.method === "POST") {
      void src.reload().then((r) => send(r.ok ? 200 : 422, "application/json", `${JSON.stringify(r)}\n`));
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
