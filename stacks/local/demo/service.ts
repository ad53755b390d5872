/**
 * The built-in demo service of `meshgate up`: a small HTTP/1.1 app that stands in for a service without a
 * `local.command`. It answers the paths its allow rules and route policies declare with plausible JSON
 * (ids from the path), `/healthz`, and on every such request really calls each declared dependency
 * through its sidecar (the per-callee local port), so the mesh — mTLS, SPIFFE authorization, retries — is
 * used by every request that reaches it. The callees' answers are part of its response (`calls`).
 *
 * Debug route (on the app's own loopback port only, never through the mesh): `GET
 * /__meshgate/call?service=S&path=P[&method=M]` sends that request through the sidecar's outbound proxy
 * and answers exactly what came back (status, `x-meshgate-error`/`x-meshgate-denied`, body) — how the
 * end-to-end test shows a call the spec does not allow being refused by the callee's sidecar.
 */
import http from "node:http";
import type { DemoConfig } from "../plan.ts";

/** Calls along a cycle of declared dependencies stop at this depth. */
const MAX_DEPTH = 3;
const DEPTH_HEADER = "x-meshgate-demo-depth";
const PASS_ON = ["x-request-id", "traceparent", "tracestate"] as const;

interface CallResult {
  readonly status: number;
  readonly body: unknown;
}

/** Does a concrete path match a spec path pattern (`*`, `{x}` one segment, trailing `**` the rest)? */
export function matchPattern(pattern: string, path: string): Record<string, string> | null {
  const p = pattern.split("/").slice(1);
  const s = path.split("/").slice(1);
  const params: Record<string, string> = {};
  for (let i = 0; i < p.length; i++) {
    const seg = p[i]!;
    if (seg === "**") {
      if (i !== p.length - 1 || s.length < i + 1) return null;
      params.rest = s.slice(i).join("/");
      return params;
    }
    if (i >= s.length) return null;
    if (seg === "*") params[`p${i}`] = s[i]!;
    else if (/^\{[^}]+\}$/.test(seg)) params[seg.slice(1, -1)] = s[i]!;
    else if (seg !== s[i]) return null;
  }
  return p.length === s.length ? params : null;
}

function entity(service: string, id: string) {
  const noun = service.replace(/s$/, "");
  return {
    id,
    name: `${noun} ${id}`,
    displayName: `${noun[0]!.toUpperCase()}${noun.slice(1)} ${id}`,
    internalId: `${service}-${id}`,
    service,
  };
}

function call(
  target: { url: string; host?: string },
  method: string,
  path: string,
  headers: http.OutgoingHttpHeaders,
  body: string | null,
): Promise<CallResult & { headers: http.IncomingHttpHeaders; raw: string }> {
  return new Promise((resolve) => {
    const u = new URL(target.url);
    const req = http.request(
      {
        host: u.hostname,
        port: Number(u.port),
        method,
        path,
        agent: false,
        timeout: 10_000,
        headers: {
          ...headers,
          ...(target.host ? { host: target.host } : {}),
          ...(body !== null
            ? { "content-type": "application/json", "content-length": Buffer.byteLength(body) }
            : {}),
        },
      },
      (res) => {
        let raw = "";
        res.setEncoding("utf8");
        res.on("data", (c: string) => (raw += c));
        res.on("end", () => {
          let parsed: unknown = raw;
          try {
            parsed = JSON.parse(raw);
          } catch {
            /* not JSON: kept as text */
          }
          resolve({ status: res.statusCode ?? 0, body: parsed, headers: res.headers, raw });
        });
        res.on("error", () => resolve({ status: 0, body: "response error", headers: {}, raw: "" }));
      },
    );
    req.on("timeout", () => req.destroy(new Error("timeout")));
    req.on("error", (e) => resolve({ status: 0, body: e.message, headers: {}, raw: "" }));
    req.end(body ?? undefined);
  });
}

function send(
  res: http.ServerResponse,
  status: number,
  value: unknown,
  extra: http.OutgoingHttpHeaders = {},
) {
  const text = JSON.stringify(value);
  res.writeHead(status, {
    "content-type": "application/json",
    "content-length": Buffer.byteLength(text),
    ...extra,
  });
  res.end(text);
}

/** The demo service's HTTP server (not listening yet). */
export function createDemoServer(config: DemoConfig): http.Server {
  return http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => void handle(config, req, res, Buffer.concat(chunks).toString("utf8")));
  });
}

async function handle(
  config: DemoConfig,
  req: http.IncomingMessage,
  res: http.ServerResponse,
  body: string,
): Promise<void> {
  const url = new URL(req.url ?? "/", "http://demo");
  const path = url.pathname;
  const method = req.method ?? "GET";
  if (path === "/healthz") return send(res, 200, { status: "ok", service: config.service });

  if (path === "/__meshgate/call") {
    const service = url.searchParams.get("service");
    const target = url.searchParams.get("path") ?? "/";
    const m = (url.searchParams.get("method") ?? "GET").toUpperCase();
    if (!service || !target.startsWith("/"))
      return send(res, 400, { error: "give ?service=NAME&path=/PATH[&method=M]" });
    const r = await call(
      { url: config.outbound, host: service },
      m,
      target,
      {},
      m === "GET" || m === "HEAD" ? null : "{}",
    );
    const copy: http.OutgoingHttpHeaders = { "content-type": r.headers["content-type"] ?? "text/plain" };
    for (const h of ["x-meshgate-error", "x-meshgate-denied"])
      if (r.headers[h] !== undefined) copy[h] = r.headers[h];
    res.writeHead(r.status === 0 ? 502 : r.status, copy);
    res.end(r.raw);
    return;
  }

  let params: Record<string, string> | null = null;
  for (const p of config.paths) {
    params = matchPattern(p, path);
    if (params) break;
  }
  if (!params)
    return send(res, 404, {
      error: "not_found",
      service: config.service,
      message: `${config.service} (meshgate demo) serves ${config.paths.join(", ") || "nothing"}`,
    });

  // Call every declared dependency through the sidecar, unless a cycle brought us here too often.
  const depth = Number(req.headers[DEPTH_HEADER] ?? 0) || 0;
  const calls: Record<string, CallResult> = {};
  if (depth < MAX_DEPTH) {
    const headers: http.OutgoingHttpHeaders = { [DEPTH_HEADER]: String(depth + 1) };
    for (const h of PASS_ON) if (typeof req.headers[h] === "string") headers[h] = req.headers[h];
    const results = await Promise.all(
      config.calls.map((c) =>
        call(
          { url: c.url },
          c.method,
          c.path,
          headers,
          c.method === "GET" || c.method === "HEAD" ? null : JSON.stringify({ from: config.service }),
        ),
      ),
    );
    config.calls.forEach(
      (c, i) => (calls[c.service] = { status: results[i]!.status, body: results[i]!.body }),
    );
  }

  const values = Object.values(params);
  const subject =
    typeof req.headers["x-meshgate-subject"] === "string" ? req.headers["x-meshgate-subject"] : null;
  const id = values.length > 0 ? values[values.length - 1]! : null;
  if (method === "POST" || method === "PUT" || method === "PATCH") {
    let input: unknown;
    try {
      input = body ? JSON.parse(body) : null;
    } catch {
      return send(res, 400, { error: "bad_json", service: config.service });
    }
    return send(res, method === "POST" ? 201 : 200, {
      ...entity(config.service, id ?? "1001"),
      status: "created",
      received: input,
      calls,
    });
  }
  if (method === "DELETE") return send(res, 204, null);
  if (id !== null) return send(res, 200, { ...entity(config.service, id), calls });
  // The caller's own record (`/me`), else a collection: a short list.
  if (path === "/me" || path.endsWith("/me"))
    return send(res, 200, { ...entity(config.service, subject ?? "me"), calls });
  return send(res, 200, {
    service: config.service,
    items: [entity(config.service, "1"), entity(config.service, "2")],
    calls,
  });
}
