/**
 * Support for the egress tests: servers outside the mesh (an HTTPS server with a certificate from a CA
 * made with openssl), externals to declare, sidecars of `web` started with them, and raw TCP clients.
 * Everything listens and connects on 127.0.0.1.
 */
import { createHash } from "node:crypto";
import { copyFile, readFile, rename, writeFile } from "node:fs/promises";
import http from "node:http";
import https from "node:https";
import net, { type AddressInfo, type Socket } from "node:net";
import { join } from "node:path";
import type { SidecarRuntimeConfig } from "../../runtime/contract/index.ts";
import type { SidecarOptions } from "../../runtime/sidecar/server.ts";
import { makeCa, run, type TestCa } from "../pki/support.ts";
import { freePort, request } from "../support/gateway.ts";
import {
  localSidecar,
  meshConfigs,
  spiffe,
  startTestSidecar,
  TD,
  writeIdentity,
  type TestSidecar,
} from "./support.ts";

export type External = SidecarRuntimeConfig["outbound"]["external"][number];

// ───────────────────────────── servers outside the mesh ─────────────────────────────

/** A CA made with openssl (not the mesh's): it signs server certificates for DNS names. */
export interface OutsideCa {
  readonly caFile: string;
  /** The CA certificate (PEM), what an external's `ca` trusts. */
  readonly pem: string;
  /** A key and a certificate for `dnsName` (its only SAN), signed by this CA (made once per name). */
  leaf(dnsName: string): Promise<{ key: Buffer; cert: Buffer }>;
  /** The files of a client certificate `/CN=<cn>` with extended key usage `eku`, signed by this CA. */
  client(cn: string, eku?: string): Promise<{ certFile: string; keyFile: string }>;
}

const EC = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];

export async function outsideCa(dir: string): Promise<OutsideCa> {
  const p = (f: string) => join(dir, f);
  await run("openssl", [
    "req",
    "-x509",
    ...EC,
    "-keyout",
    p("ca.key"),
    "-out",
    p("ca.pem"),
    "-subj",
    "/CN=egress test CA",
    "-days",
    "1",
  ]);
  const leaves = new Map<string, Promise<{ key: Buffer; cert: Buffer }>>();
  /** Signs `/CN=<name>` with the extensions given; the files are <name>.key and <name>.pem. */
  const sign = async (name: string, extensions: string) => {
    await writeFile(p(`${name}.ext`), `basicConstraints=CA:FALSE\n${extensions}`);
    await run("openssl", [
      "req",
      ...EC,
      "-keyout",
      p(`${name}.key`),
      "-out",
      p(`${name}.csr`),
      "-subj",
      `/CN=${name}`,
    ]);
    await run("openssl", [
      "x509",
      "-req",
      "-in",
      p(`${name}.csr`),
      "-CA",
      p("ca.pem"),
      "-CAkey",
      p("ca.key"),
      "-CAcreateserial",
      "-out",
      p(`${name}.pem`),
      "-days",
      "1",
      "-extfile",
      p(`${name}.ext`),
    ]);
    return { certFile: p(`${name}.pem`), keyFile: p(`${name}.key`) };
  };
  const issue = async (dnsName: string) => {
    const f = await sign(dnsName, `subjectAltName=DNS:${dnsName}\nextendedKeyUsage=serverAuth\n`);
    return { key: await readFile(f.keyFile), cert: await readFile(f.certFile) };
  };
  return {
    caFile: p("ca.pem"),
    pem: await readFile(p("ca.pem"), "utf8"),
    leaf: (dnsName) => {
      let l = leaves.get(dnsName);
      if (l === undefined) leaves.set(dnsName, (l = issue(dnsName)));
      return l;
    },
    client: (cn, eku = "clientAuth") => sign(cn, `extendedKeyUsage=${eku}\n`),
  };
}

/** Files of a client certificate and its key. */
export interface PairFiles {
  readonly certFile: string;
  readonly keyFile: string;
}

/**
 * Client certificate pairs by name (issued by `OutsideCa.client`), copied to fresh files a test may
 * rotate, and rotated in place as Kubernetes updates a mounted Secret (new files renamed over the old).
 */
export class ClientPairs extends Map<string, PairFiles> {
  readonly #dir: () => string;
  /** `dir` (read when a pair is copied): where copies go. */
  constructor(dir: () => string) {
    super();
    this.#dir = dir;
  }

  /** Copies the pair `of` to fresh files named `as`. */
  async copy(of: string, as: string): Promise<PairFiles> {
    const from = this.get(of)!;
    const to = { certFile: join(this.#dir(), `${as}.crt`), keyFile: join(this.#dir(), `${as}.key.pem`) };
    await copyFile(from.certFile, to.certFile);
    await copyFile(from.keyFile, to.keyFile);
    return to;
  }

  /** Replaces `files` with the pair `of`: the key first, then the certificate, each renamed into place. */
  async rotate(files: PairFiles, of: string): Promise<void> {
    const from = this.get(of)!;
    for (const [src, dst] of [
      [from.keyFile, files.keyFile],
      [from.certFile, files.certFile],
    ] as const) {
      await copyFile(src, `${dst}.new`);
      await rename(`${dst}.new`, dst);
    }
  }
}

export interface HTTPSOutside {
  readonly port: number;
  readonly caFile: string;
  /** The CA its certificate comes from. */
  readonly ca: OutsideCa;
  readonly server: https.Server;
  /** TCP connections accepted so far. */
  connections: number;
  close(): Promise<void>;
}

/** What a server outside the mesh answers unless a test says otherwise. */
export const helloFromOutside: http.RequestListener = (_req, res) => {
  res.writeHead(200, { "content-type": "text/plain" });
  res.end("hello from outside the mesh\n");
};

/**
 * A real HTTPS server for `dnsName` (default `localhost`), its certificate from `o.ca` (or a new CA made
 * with openssl in `dir`), answering with `handler`.
 */
export async function httpsOutside(
  dir: string,
  handler: http.RequestListener = helloFromOutside,
  o: { ca?: OutsideCa; dnsName?: string } = {},
): Promise<HTTPSOutside> {
  const ca = o.ca ?? (await outsideCa(dir));
  const server = https.createServer(await ca.leaf(o.dnsName ?? "localhost"), handler);
  const s = {
    port: 0,
    caFile: ca.caFile,
    ca,
    server,
    connections: 0,
    close: () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
  server.on("connection", () => s.connections++);
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  s.port = (server.address() as AddressInfo).port;
  return s;
}

/** A request a server outside the mesh received. */
export interface SeenRequest {
  readonly method: string;
  /** The request target as received. */
  readonly url: string;
  readonly headers: http.IncomingHttpHeaders;
}

/**
 * Answers a WebSocket handshake with 101 and echoes every byte after it (no framing: the tests send
 * raw bytes through the tunnel).
 */
export function answerWebSocket(req: http.IncomingMessage, socket: Socket, head: Buffer): void {
  const accept = createHash("sha1")
    .update(`${String(req.headers["sec-websocket-key"])}258EAFA5-E914-47DA-95CA-C5AB0DC85B11`)
    .digest("base64");
  socket.on("error", () => socket.destroy());
  socket.write(
    `HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\nsec-websocket-accept: ${accept}\r\n\r\n`,
  );
  if (head.length > 0) socket.write(head);
  socket.pipe(socket);
}

export interface HTTPOutside {
  readonly port: number;
  /** TCP connections accepted so far. */
  connections: number;
  /** Requests (and WebSocket handshakes) received, in order. */
  readonly requests: SeenRequest[];
  /** What it answers requests with (a test may swap it; `reset` puts `helloFromOutside` back). */
  handler: http.RequestListener;
  reset(): void;
  close(): Promise<void>;
}

/**
 * A plain HTTP server outside the mesh: it records every request, answers with `handler`, and answers a
 * WebSocket handshake with 101 and an echo of the bytes that follow.
 */
export async function httpOutside(): Promise<HTTPOutside> {
  /** Every socket of the server: close() ends WebSocket tunnels too (closeAllConnections does not). */
  const sockets = new Set<Socket>();
  const seen = (req: http.IncomingMessage) =>
    s.requests.push({ method: req.method ?? "", url: req.url ?? "", headers: req.headers });
  const server = http.createServer((req, res) => {
    seen(req);
    s.handler(req, res);
  });
  const s: HTTPOutside = {
    port: 0,
    connections: 0,
    requests: [],
    handler: helloFromOutside,
    reset: () => {
      s.handler = helloFromOutside;
      s.requests.length = 0;
    },
    close: () =>
      new Promise<void>((r) => {
        for (const c of sockets) c.destroy();
        server.close(() => r());
      }),
  };
  server.on("connection", (c: Socket) => {
    s.connections++;
    sockets.add(c);
    c.once("close", () => sockets.delete(c));
  });
  server.on("upgrade", (req: http.IncomingMessage, socket: Socket, head: Buffer) => {
    seen(req);
    answerWebSocket(req, socket, head);
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  (s as { port: number }).port = (server.address() as AddressInfo).port;
  return s;
}

// ───────────────────────────── externals and sidecars ─────────────────────────────

/** An external destination: plain TCP (passthrough) unless `o` says otherwise. */
export const external = (name: string, host: string, port: number, o: Partial<External> = {}): External => ({
  name,
  host,
  port,
  localPort: null,
  connectTimeoutMs: 1000,
  timeoutMs: 2000,
  maxConnections: null,
  tls: "passthrough",
  ca: null,
  clientCertificate: null,
  ...o,
});

export interface Egress {
  sidecar: TestSidecar;
  /** The sidecar's config with other externals (for reload). */
  configWith(externals: External[]): SidecarRuntimeConfig;
  metrics(): Promise<string>;
}

/** Starts sidecars of `web` (which calls `orders`) with externals declared; `stopAll` drains them. */
export interface EgressSidecars {
  start(
    externals: External[],
    o?: { accessLog?: boolean; externalLookup?: SidecarOptions["externalLookup"] },
  ): Promise<Egress>;
  stopAll(): Promise<void>;
}

export async function egressSidecars(dir: string): Promise<EgressSidecars> {
  const ca: TestCa = await makeCa(TD);
  const base = meshConfigs({
    web: { image: "r/web:1", port: 8080, calls: ["orders"] },
    orders: { image: "r/orders:1", port: 8080, allow: [{ from: ["web"] }] },
  }).find((c) => c.name === "web")!;
  const stops: (() => Promise<void>)[] = [];
  let n = 0;
  return {
    start: async (externals, o = {}) => {
      const identityDir = join(dir, `web-${n++}`);
      await writeIdentity(identityDir, await ca.issuer.issue(spiffe("web")), ca.bundle.toPem());
      const appPort = await freePort();
      const configWith = (list: External[]) =>
        localSidecar(base, {
          identityDir,
          appPort,
          edit: (c) => ({
            ...c,
            outbound: { ...c.outbound, external: [...list].sort((a, b) => a.name.localeCompare(b.name)) },
            telemetry: { ...c.telemetry, accessLog: { enabled: o.accessLog ?? true } },
          }),
        });
      const sidecar = await startTestSidecar(
        configWith(externals),
        o.externalLookup ? { externalLookup: o.externalLookup } : {},
      );
      stops.push(() => sidecar.drain());
      return {
        sidecar,
        configWith,
        metrics: async () => (await request(`${sidecar.adminUrl}/metrics`)).body,
      };
    },
    stopAll: async () => {
      for (const stop of stops.splice(0).reverse()) await stop();
    },
  };
}

// ───────────────────────────── clients ─────────────────────────────

/** Every client socket `dial` opened (destroyed after each test, so that drains do not wait for them). */
const clients = new Set<Socket>();

/** A TCP connection to 127.0.0.1:port (half-open allowed). */
export function dial(port: number): Socket {
  const c = net.connect({ port, host: "127.0.0.1", allowHalfOpen: true });
  clients.add(c);
  return c;
}

export function destroyClients(): void {
  for (const c of clients) c.destroy();
  clients.clear();
}

/** Reads from `socket` until `n` bytes arrived (starting with `have`). */
export function readBytes(socket: Socket, n: number, have: Buffer = Buffer.alloc(0)): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    let buf = have;
    if (buf.length >= n) return resolve(buf);
    const onData = (c: Buffer) => {
      buf = Buffer.concat([buf, c]);
      if (buf.length >= n) {
        socket.off("data", onData);
        socket.pause();
        resolve(buf);
      }
    };
    socket.on("data", onData);
    socket.once("error", reject);
    socket.resume();
  });
}

/** Everything `socket` sends until its end (FIN). */
export function readToEnd(socket: Socket, have: Buffer = Buffer.alloc(0)): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks = [have];
    socket.on("data", (c: Buffer) => chunks.push(c));
    socket.once("end", () => resolve(Buffer.concat(chunks)));
    socket.once("error", reject);
    socket.resume();
  });
}

/** The sidecar ended the connection: its FIN (the socket is half-open here) or a reset arrived. */
export const ended = (socket: Socket) =>
  socket.readableEnded || socket.destroyed
    ? Promise.resolve()
    : new Promise<void>((r) => {
        socket.once("end", () => r());
        socket.once("close", () => r());
        socket.on("error", () => {});
        socket.resume();
      });

/** `p`, or a rejection naming `what` after `ms`: no await of a test waits for ever. */
export function within<T>(p: Promise<T>, what: string, ms = 5000): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
  });
  return Promise.race([p, late]).finally(() => clearTimeout(timer));
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A raw WebSocket handshake on a proxy's port (with extra `headers`); resolves with the status and the socket after the head. */
export async function openWebSocket(
  port: number,
  target: string,
  host: string,
  headers: Record<string, string> = {},
): Promise<{ status: number; socket: Socket; rest: Buffer }> {
  const socket = dial(port);
  socket.write(
    `GET ${target} HTTP/1.1\r\nhost: ${host}\r\nconnection: Upgrade\r\nupgrade: websocket\r\n` +
      Object.entries(headers)
        .map(([k, v]) => `${k}: ${v}\r\n`)
        .join("") +
      "sec-websocket-version: 13\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
  );
  let buf: Buffer = Buffer.alloc(0);
  while (buf.indexOf("\r\n\r\n") < 0) buf = await within(readBytes(socket, buf.length + 1, buf), "the 101");
  const end = buf.indexOf("\r\n\r\n");
  return {
    status: Number(buf.subarray(0, end).toString("latin1").split(" ")[1]),
    socket,
    rest: buf.subarray(end + 4),
  };
}
