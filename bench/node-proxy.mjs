/**
 * The minimal Node proxy, the reference for what Node itself costs — none of a gateway's or a sidecar's
 * work (no routing, header rules, authorization, telemetry, retries): `http.createServer` forwarding
 * every request to one next hop with `http.request` / `https.request` over a keep-alive agent and
 * piping the answer back. Plain JavaScript (no type stripping at start), so its RSS is Node's own.
 *
 *   node bench/node-proxy.mjs http <listen port> <upstream port> [workers]
 *     bench:gateway's reference (and the proxy the worker-scaling goal names): plain HTTP both ways;
 *     with workers > 1, `node:cluster` (the primary only forks), else one process serves.
 *   node bench/node-proxy.mjs outbound|inbound <listen port> <next port> <identity dir> <bundle file>
 *     bench:mesh's minimal mTLS pair. outbound: HTTP in, TLS 1.3 out with the client SVID, verifying
 *     the server's chain against the bundle and the host name "orders" (the DNS SAN the nginx pair checks
 *     too); inbound: TLS 1.3 in with a required, verified client certificate, HTTP to the server. The
 *     identity dir holds svid.pem (leaf and intermediate) and svid-key.pem, as bench/mesh.ts writes them.
 */
import cluster from "node:cluster";
import { readFileSync } from "node:fs";
import http from "node:http";
import https from "node:https";
import { join } from "node:path";

const USAGE = [
  "usage: node bench/node-proxy.mjs http <listen port> <upstream port> [workers]",
  "       node bench/node-proxy.mjs outbound|inbound <listen port> <next port> <identity dir> <bundle file>",
].join("\n");

const [mode, listenArg, nextArg, ...rest] = process.argv.slice(2);
const listen = Number(listenArg);
const next = Number(nextArg);
if (!["http", "outbound", "inbound"].includes(mode) || !listen || !next) {
  process.stderr.write(`${USAGE}\n`);
  process.exit(2);
}
const workers = mode === "http" ? Number(rest[0] ?? 1) : 1;
const [dir, bundleFile] = rest;
if (!(workers >= 1) || (mode !== "http" && (!dir || !bundleFile))) {
  process.stderr.write(`${USAGE}\n`);
  process.exit(2);
}

if (cluster.isPrimary && workers > 1) {
  for (let i = 0; i < workers; i++) cluster.fork();
  let listening = 0;
  cluster.on("listening", () => {
    if (++listening === workers)
      process.stdout.write(`node proxy ×${workers} 127.0.0.1:${listen} -> ${next}\n`);
  });
  cluster.on("exit", (_worker, code) => {
    process.stderr.write(`node proxy: a worker exited (${code})\n`);
    process.exit(1);
  });
  const stop = () => {
    cluster.removeAllListeners("exit");
    for (const w of Object.values(cluster.workers ?? {})) w?.kill();
    process.exit(0);
  };
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
} else {
  const tls =
    mode === "http"
      ? null
      : {
          cert: readFileSync(join(dir, "svid.pem")),
          key: readFileSync(join(dir, "svid-key.pem")),
          ca: readFileSync(bundleFile),
          minVersion: "TLSv1.3",
        };
  const agent =
    mode === "outbound"
      ? new https.Agent({ ...tls, keepAlive: true, maxSockets: 256, servername: "orders" })
      : new http.Agent({ keepAlive: true, maxSockets: 256 });
  const request = mode === "outbound" ? https.request : http.request;

  /** Forwards one request to the next hop and pipes the answer back; an upstream failure is a 502. */
  const forward = (req, res) => {
    const up = request(
      { host: "127.0.0.1", port: next, method: req.method, path: req.url, headers: req.headers, agent },
      (upRes) => {
        res.writeHead(upRes.statusCode ?? 502, upRes.headers);
        upRes.pipe(res);
      },
    );
    up.on("error", () => {
      if (!res.headersSent) res.writeHead(502).end();
      else res.destroy();
    });
    req.pipe(up);
  };

  const server =
    mode === "inbound"
      ? https.createServer({ ...tls, requestCert: true, rejectUnauthorized: true }, forward)
      : http.createServer(forward);
  server.keepAliveTimeout = 60_000;
  server.listen(listen, "127.0.0.1", () => {
    if (cluster.isPrimary) process.stdout.write(`node proxy (${mode}) 127.0.0.1:${listen} -> ${next}\n`);
  });
  if (cluster.isPrimary) {
    const stop = () => server.close(() => process.exit(0));
    process.on("SIGTERM", stop);
    process.on("SIGINT", stop);
  }
}
