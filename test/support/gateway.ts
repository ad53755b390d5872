/**
 * Test harness for the gateway: real upstream servers on 127.0.0.1, a gateway config built from a spec
 * by translate() (so tests exercise the real contract), switched to static endpoints and plaintext
 * upstreams, and started on free ports with a captured log.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { writeFile } from "node:fs/promises";
import http, { type IncomingMessage, type ServerResponse } from "node:http";
import type { ClientHttp2Session, OutgoingHttpHeaders } from "node:http2";
import net, { type AddressInfo } from "node:net";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { Writable } from "node:stream";
import pino from "pino";
import { sealRuntimeConfig, type GatewayRuntimeConfig } from "../../runtime/contract/index.ts";
import { plaintextStatic, type LocalEndpoints } from "../../testing/static.ts";
import { startGateway, type GatewayHandle, type GatewayOptions } from "../../runtime/gateway/server.ts";
import { parseSpec } from "../../components/spec/parse.ts";
import { translate } from "../../components/translate/translate.ts";
import { freePort } from "./ports.ts";

export interface Upstream {
  readonly port: number;
  /** Every request the upstream received, in order. */
  readonly received: { method: string; url: string; headers: http.IncomingHttpHeaders; body: string }[];
  close(): Promise<void>;
}

export type UpstreamHandler = (req: IncomingMessage, res: ServerResponse, body: string) => void;

/** An upstream that records requests and answers with `handler` (default: 200 JSON echo of the path). */
export async function startUpstream(handler?: UpstreamHandler): Promise<Upstream> {
  const received: Upstream["received"] = [];
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      const body = Buffer.concat(chunks).toString();
      received.push({ method: req.method ?? "", url: req.url ?? "", headers: req.headers, body });
      if (handler) return handler(req, res, body);
      const out = JSON.stringify({ path: req.url, method: req.method });
      res.writeHead(200, { "content-type": "application/json", "content-length": Buffer.byteLength(out) });
      res.end(out);
    });
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  return {
    port: (server.address() as AddressInfo).port,
    received,
    close: () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}

type Loose = Record<string, unknown>;

/**
 * A gateway config from spec routes. Every mesh cluster is pointed at `upstreams[service]` (static
 * discovery, plaintext); `gateway` merges extra gateway-level spec fields; `external` declares external
 * destinations (spec `external`), which routes reach at their own host and port.
 */
export function gatewayConfig(
  routes: Loose[],
  upstreams: Record<string, Endpoints>,
  gateway: Loose = {},
  services?: Record<string, Loose>,
  external?: Record<string, Loose>,
): GatewayRuntimeConfig {
  const svc =
    services ??
    Object.fromEntries(
      Object.keys(upstreams).map((name) => [
        name,
        { image: `r/${name}:1`, port: 8080, allow: [{ from: ["gateway"] }] },
      ]),
    );
  const r = parseSpec({
    name: "t",
    trustDomain: "t.example",
    services: svc,
    ...(external ? { external } : {}),
    gateway: { hosts: ["127.0.0.1", "localhost"], ...gateway, routes },
  });
  if (!r.ok) throw new Error(r.errors.map((e) => `${e.path}: ${e.message}`).join("\n"));
  const config = translate(r.spec).runtime.gateway!;
  return plaintextStatic(config, upstreams);
}

/** A spec's https listener on 8443 (the test gateway binds a free port) serving one certificate for `hosts`. */
export function httpsListener(
  cert: { certFile: string; keyFile: string },
  hosts: readonly string[] = ["localhost"],
): Loose {
  return {
    name: "https",
    port: 8443,
    protocol: "https",
    tls: { certificates: [{ hosts, certFile: cert.certFile, keyFile: cert.keyFile }] },
  };
}

/** One upstream, several (a multi-endpoint cluster), or just a port (e.g. one nothing listens on). */
export type Endpoints = LocalEndpoints;
export { plaintextStatic };
/** A free port on 127.0.0.1 below the ephemeral range (see ./ports.ts). */
export { freePort };

export interface TestGateway extends GatewayHandle {
  readonly url: string;
  readonly adminUrl: string;
  /** Log lines (parsed JSON) the gateway wrote. */
  readonly logs: Record<string, unknown>[];
  readonly rawLog: () => string;
}

export async function startTestGateway(
  config: GatewayRuntimeConfig,
  configPath?: string,
  extra: Pick<GatewayOptions, "externalLookup" | "certificatePollMs"> = {},
): Promise<TestGateway> {
  const logs: Record<string, unknown>[] = [];
  let raw = "";
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      const text = chunk.toString();
      raw += text;
      for (const line of text.split("\n"))
        if (line.trim()) logs.push(JSON.parse(line) as Record<string, unknown>);
      cb();
    },
  });
  const logger = pino({ base: { proxy: "gateway" } }, sink);
  const handle = await startGateway({
    config,
    ...(configPath ? { configPath } : {}),
    host: "127.0.0.1",
    ports: { listeners: Object.fromEntries(config.listeners.map((l) => [l.name, 0])), admin: 0 },
    logger,
    ...extra,
  });
  const port = Object.values(handle.ports.listeners)[0]!;
  return Object.assign(handle, {
    url: `http://127.0.0.1:${port}`,
    adminUrl: `http://127.0.0.1:${handle.ports.admin}`,
    logs,
    rawLog: () => raw,
  });
}

/** A plain HTTP request with full control of headers (fetch would normalize them). */
export function request(
  url: string,
  opts: {
    method?: string;
    headers?: Record<string, string | string[]>;
    body?: string | Buffer;
    agent?: http.Agent;
  } = {},
): Promise<{ status: number; headers: http.IncomingHttpHeaders; body: string; complete: boolean }> {
  return new Promise((resolve, reject) => {
    // The path is sent exactly as written (a URL object would normalize "/../" and "%2e" away).
    const m = /^http:\/\/([^/:]+):([0-9]+)(.*)$/.exec(url);
    if (!m) throw new Error(`request() needs http://host:port/path, got ${url}`);
    const target = { hostname: m[1], port: Number(m[2]), path: m[3] || "/" };
    const req = http.request(
      { ...target, method: opts.method ?? "GET", headers: opts.headers, agent: opts.agent ?? false },
      (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (c: Buffer) => chunks.push(c));
        res.on("end", () =>
          resolve({
            status: res.statusCode ?? 0,
            headers: res.headers,
            body: Buffer.concat(chunks).toString(),
            complete: res.complete,
          }),
        );
        res.on("error", reject);
        res.on("aborted", () => reject(Object.assign(new Error("response aborted"), { code: "ABORTED" })));
      },
    );
    req.on("error", reject);
    if (opts.body !== undefined) req.end(opts.body);
    else req.end();
  });
}

export interface GatewayProcess {
  readonly url: string;
  readonly adminUrl: string;
  readonly child: ChildProcess;
  output(): string;
  stop(): Promise<void>;
}

const BIN = new URL("../../bin/meshgate.js", import.meta.url).pathname;

/**
 * Runs `meshgate gateway --workers N` as its own process (the primary forks the workers) on free ports (or
 * those given: a test that must name its URL beforehand), with `config` written to `dir/<name>.json`;
 * resolves once its admin listener is announced (20 s at most).
 */
export async function startGatewayProcess(
  dir: string,
  name: string,
  config: GatewayRuntimeConfig,
  workers = 1,
  ports?: { port: number; admin: number },
): Promise<GatewayProcess> {
  const { port, admin } = ports ?? { port: await freePort(), admin: await freePort() };
  const { hash: _h, ...rest } = config;
  const file = join(dir, `${name}.json`);
  await writeFile(
    file,
    JSON.stringify(
      sealRuntimeConfig<GatewayRuntimeConfig>({
        ...rest,
        listeners: rest.listeners.map((l) => ({ ...l, port })),
        admin: { port: admin },
      }),
    ),
  );
  const child = spawn(
    process.execPath,
    [BIN, "gateway", "--config", file, "--host", "127.0.0.1", "--workers", String(workers)],
    { stdio: ["ignore", "pipe", "pipe"] },
  );
  let out = "";
  child.stdout!.on("data", (c: Buffer) => (out += c.toString()));
  child.stderr!.on("data", (c: Buffer) => (out += c.toString()));
  const announced = `admin http://127.0.0.1:${admin}`;
  for (const end = Date.now() + 20_000; !out.includes(announced); await sleep(50)) {
    if (Date.now() > end || child.exitCode !== null) {
      child.kill("SIGKILL");
      throw new Error(`the gateway did not start within 20 s: ${out}`);
    }
  }
  return {
    url: `http://127.0.0.1:${port}`,
    adminUrl: `http://127.0.0.1:${admin}`,
    child,
    output: () => out,
    stop: async () => {
      if (child.exitCode !== null) return;
      const exited = new Promise<void>((r) => child.once("exit", () => r()));
      child.kill("SIGTERM");
      await Promise.race([exited, sleep(10_000)]);
      child.kill("SIGKILL");
    },
  };
}

/** One bodiless HTTP/2 request on `session` (the body is read and dropped), then the session is closed. */
export async function h2Status(session: ClientHttp2Session, headers: OutgoingHttpHeaders): Promise<number> {
  try {
    return await new Promise<number>((resolve, reject) => {
      const req = session.request(headers);
      req.on("response", (h) => resolve(Number(h[":status"])));
      req.on("error", reject);
      req.resume();
      req.end();
    });
  } finally {
    session.close();
  }
}

/**
 * A WebSocket upgrade written by hand to 127.0.0.1:`port` (`extra`: more header lines, each ending in
 * CRLF): the first line of the answer, or null when none came before the connection closed or `waitMs`.
 */
export function upgradeStatusLine(
  port: number,
  path: string,
  o: { extra?: string; waitMs?: number; method?: string } = {},
): Promise<string | null> {
  return new Promise((resolve) => {
    const socket = net.connect(port, "127.0.0.1");
    let raw = "";
    const done = (line: string | null) => {
      clearTimeout(timer);
      socket.destroy();
      resolve(line);
    };
    const timer = setTimeout(() => done(null), o.waitMs ?? 2000);
    socket.on("error", () => {});
    socket.on("close", () => done(null));
    socket.on("data", (d: Buffer) => {
      raw += d.toString("latin1");
      if (raw.includes("\r\n")) done(raw.split("\r\n")[0]!);
    });
    socket.write(
      `${o.method ?? "GET"} ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n` +
        `Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n${o.extra ?? ""}\r\n`,
    );
  });
}
