/**
 * HTTP/2, gRPC and WebSocket through the mesh, with real sidecars, real mTLS (SVIDs from runtime/pki) and
 * real apps on 127.0.0.1: gRPC unary and server-streaming calls app → sidecar → sidecar → gRPC app (h2c to
 * the local port, mTLS h2 between the sidecars, h2c to the app) with messages, trailers and non-OK
 * statuses intact; a denied call as PERMISSION_DENIED with the reason; a dead app as UNAVAILABLE; a reset
 * upstream stream surfaced as a reset; curl --http2 with an SVID on the inbound port; h2c in permissive
 * mode; gateway → sidecar gRPC (h2c and TLS h2 at the gateway); WebSocket echo app → sidecar → sidecar →
 * app and gateway → sidecar → app, and a denied upgrade.
 */
import { execFile } from "node:child_process";
import { readFileSync } from "node:fs";
import http2 from "node:http2";
import net, { type AddressInfo } from "node:net";
import { join } from "node:path";
import * as grpc from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import WebSocket, { WebSocketServer } from "ws";
import {
  sealRuntimeConfig,
  type GatewayRuntimeConfig,
  type SidecarRuntimeConfig,
} from "../../runtime/contract/index.ts";
import { loadSpecFile } from "../../components/spec/load.ts";
import { parseSpec } from "../../components/spec/parse.ts";
import { svidFiles, translate } from "../../components/translate/translate.ts";
import { EXPIRY_MARGIN_MS } from "../../runtime/upstream/tls.ts";
import { makeCa, tempDir, writeFiles, type TestCa } from "../pki/support.ts";
import {
  request,
  startTestGateway,
  startUpstream,
  type TestGateway,
  type Upstream,
} from "../support/gateway.ts";
import { grpcStreamOutcome } from "../support/grpc.ts";
import {
  localSidecar,
  metricValue,
  NS,
  spiffe,
  startTestSidecar,
  TD,
  until,
  writeIdentity,
  type TestSidecar,
} from "./support.ts";

const RPC = "/shop.notifications.v1.Notifier";
const RATE = { requests: 1000, per: "1s" };

function spec(mesh: Record<string, unknown> = {}) {
  const r = parseSpec({
    name: "mesh",
    namespace: NS,
    trustDomain: TD,
    mesh,
    services: {
      web: { image: "r/web:1", port: 8080, calls: ["notifications", "chat"] },
      notifications: {
        image: "r/notifications:1",
        port: 9090,
        protocol: "grpc",
        retries: { on: ["connect-failure", "refused-stream"] },
        allow: [
          {
            from: ["web", "gateway"],
            methods: ["POST"],
            paths: [`${RPC}/Send`, `${RPC}/Watch`, `${RPC}/Cut`, `${RPC}/Deadline`, `${RPC}/Stall`],
          },
        ],
      },
      chat: {
        image: "r/chat:1",
        port: 8080,
        allow: [{ from: ["web", "gateway"], methods: ["GET"], paths: ["/ws/**", "/plain"] }],
      },
    },
    gateway: {
      hosts: ["127.0.0.1", "localhost"],
      routes: [
        {
          name: "rpc",
          match: { path: `${RPC}/*`, methods: ["POST"] },
          to: "notifications",
          public: true,
          rateLimit: RATE,
        },
        { name: "ws", match: { path: "/ws/**" }, to: "chat", public: true, rateLimit: RATE },
        { name: "closed", match: { path: "/closed/**" }, to: "chat", public: true, rateLimit: RATE },
      ],
    },
  });
  if (!r.ok) throw new Error(r.errors.map((e) => `${e.path}: ${e.message}`).join("\n"));
  return translate(r.spec).runtime;
}

// ── a gRPC app (grpc-js, messages are raw bytes) ──
const bytes = { serialize: (b: Buffer) => b, deserialize: (b: Buffer) => b };
const method = (name: string, responseStream: boolean) => ({
  path: `${RPC}/${name}`,
  requestStream: false,
  responseStream,
  requestSerialize: bytes.serialize,
  requestDeserialize: bytes.deserialize,
  responseSerialize: bytes.serialize,
  responseDeserialize: bytes.deserialize,
});
const NOTIFIER = {
  Send: method("Send", false),
  Watch: method("Watch", true),
  Purge: method("Purge", false),
  Deadline: method("Deadline", false),
  Stall: method("Stall", false),
};

interface GrpcApp {
  port: number;
  peers: string[];
  close(): Promise<void>;
}

async function startGrpcApp(): Promise<GrpcApp> {
  const server = new grpc.Server();
  const peers: string[] = [];
  server.addService(NOTIFIER, {
    Send: (call: grpc.ServerUnaryCall<Buffer, Buffer>, cb: grpc.sendUnaryData<Buffer>) => {
      peers.push(String(call.metadata.get("x-meshgate-peer")[0] ?? ""));
      const text = call.request.toString();
      if (text === "fail") return cb({ code: grpc.status.NOT_FOUND, details: "no such user" });
      const trailer = new grpc.Metadata();
      trailer.set("x-order-version", "7");
      cb(null, Buffer.from(`sent ${text}`), trailer);
    },
    Watch: (call: grpc.ServerWritableStream<Buffer, Buffer>) => {
      for (let i = 1; i <= 3; i++) call.write(Buffer.from(`event ${i}`));
      call.emit("error", { code: grpc.status.ABORTED, details: "watch ended" });
    },
    Purge: (_call: grpc.ServerUnaryCall<Buffer, Buffer>, cb: grpc.sendUnaryData<Buffer>) =>
      cb(null, Buffer.from("purged")),
    // The deadline the app was given (from the grpc-timeout it received), in ms from now.
    Deadline: (call: grpc.ServerUnaryCall<Buffer, Buffer>, cb: grpc.sendUnaryData<Buffer>) => {
      const d = call.getDeadline();
      cb(null, Buffer.from(String((d instanceof Date ? d.getTime() : d) - Date.now())));
    },
    Stall: (_call: grpc.ServerUnaryCall<Buffer, Buffer>, cb: grpc.sendUnaryData<Buffer>) => {
      setTimeout(() => cb(null, Buffer.from("late")), 3000);
    },
  });
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (err, p) =>
      err ? reject(err) : resolve(p),
    ),
  );
  return { port, peers, close: () => new Promise((r) => server.tryShutdown(() => r())) };
}

interface UnaryResult {
  value: string | null;
  code: number;
  details: string;
  trailers: Record<string, unknown>;
}

function unary(
  target: string,
  name: string,
  message: string,
  authority?: string,
  deadlineMs = 8000,
): Promise<UnaryResult> {
  const client = new grpc.Client(
    target,
    grpc.credentials.createInsecure(),
    authority ? { "grpc.default_authority": authority } : {},
  );
  return new Promise((resolve) => {
    let value: string | null = null;
    const call = client.makeUnaryRequest(
      `${RPC}/${name}`,
      bytes.serialize,
      bytes.deserialize,
      Buffer.from(message),
      new grpc.Metadata(),
      { deadline: Date.now() + deadlineMs },
      (_err, v) => {
        if (v) value = v.toString();
      },
    );
    call.on("status", (s: grpc.StatusObject) => {
      client.close();
      resolve({ value, code: s.code, details: s.details, trailers: s.metadata.getMap() });
    });
  });
}

function serverStream(target: string): Promise<{ messages: string[]; code: number; details: string }> {
  const client = new grpc.Client(target, grpc.credentials.createInsecure());
  return new Promise((resolve) => {
    const messages: string[] = [];
    const call = client.makeServerStreamRequest(
      `${RPC}/Watch`,
      bytes.serialize,
      bytes.deserialize,
      Buffer.from("all"),
      new grpc.Metadata(),
      { deadline: Date.now() + 8000 },
    );
    call.on("data", (m: Buffer) => messages.push(m.toString()));
    call.on("error", () => {});
    call.on("status", (s: grpc.StatusObject) => {
      client.close();
      resolve({ messages, code: s.code, details: s.details });
    });
  });
}

/** curl, never throwing: the exit code, the status and the negotiated HTTP version. */
function curl(args: string[]): Promise<{ code: number; status: string; version: string; out: string }> {
  return new Promise((resolve) => {
    execFile(
      "curl",
      ["-sS", "--max-time", "10", "-o", "/dev/null", "-w", "%{http_code} %{http_version}", ...args],
      { encoding: "utf8" },
      (err, stdout, stderr) => {
        const [status = "", version = ""] = stdout.trim().split(" ");
        resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, status, version, out: stderr });
      },
    );
  });
}

/** Opens a WebSocket, sends `text`, resolves with the echo (or the refusal's status and headers). */
function wsEcho(
  url: string,
  text: string,
): Promise<{ echo?: string; status?: number; headers?: Record<string, unknown> }> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url);
    ws.on("open", () => ws.send(text));
    ws.on("message", (data: Buffer) => {
      ws.close();
      resolve({ echo: data.toString() });
    });
    ws.on("unexpected-response", (_req, res) => {
      resolve({ status: res.statusCode ?? 0, headers: res.headers });
      res.resume();
      ws.terminate();
    });
    ws.on("error", reject);
  });
}

let tmp: Awaited<ReturnType<typeof tempDir>>;
let ca: TestCa;
let runtime: ReturnType<typeof spec>;
let grpcApp: GrpcApp;
let wsApp: WebSocketServer;
const wsPaths: string[] = [];
let plainApp: Upstream;
let notifications: TestSidecar;
let chat: TestSidecar;
let web: TestSidecar;
let gateway: TestGateway;
let files: Record<string, string>;
const cleanups: (() => Promise<unknown>)[] = [];

const sidecarConfig = (name: string) => runtime.sidecars.find((s) => s.name === name)!;

async function sidecar(
  config: SidecarRuntimeConfig,
  appPort: number,
  endpoints: Record<string, number[]> = {},
): Promise<TestSidecar> {
  const dir = join(tmp.dir, `${config.name}-${cleanups.length}`);
  await writeIdentity(dir, await ca.issuer.issue(spiffe(config.name)), ca.bundle.toPem());
  const s = await startTestSidecar(localSidecar(config, { identityDir: dir, appPort, endpoints }));
  cleanups.push(() => s.drain());
  return s;
}

beforeAll(async () => {
  tmp = await tempDir("sidecar-h2mesh");
  ca = await makeCa(TD);
  runtime = spec();
  grpcApp = await startGrpcApp();
  cleanups.push(() => grpcApp.close());
  wsApp = new WebSocketServer({ host: "127.0.0.1", port: 0 });
  wsApp.on("connection", (socket, req) => {
    wsPaths.push(`${req.url} ${String(req.headers["x-meshgate-peer"])}`);
    socket.on("message", (data: Buffer) => socket.send(`echo ${data.toString()}`));
  });
  await new Promise((r) => wsApp.once("listening", r));
  cleanups.push(() => new Promise((r) => wsApp.close(r)));
  plainApp = await startUpstream();
  cleanups.push(() => plainApp.close());
  const wsPort = (wsApp.address() as AddressInfo).port;

  notifications = await sidecar(sidecarConfig("notifications"), grpcApp.port);
  chat = await sidecar(sidecarConfig("chat"), wsPort);
  web = await sidecar(sidecarConfig("web"), plainApp.port, {
    notifications: [notifications.ports.inbound],
    chat: [chat.ports.inbound],
  });

  const gwDir = join(tmp.dir, "gateway");
  await writeIdentity(gwDir, await ca.issuer.issue(spiffe("gateway")), ca.bundle.toPem());
  const client = await ca.issuer.issue(spiffe("web"));
  files = await writeFiles(tmp.dir, {
    "bundle.pem": ca.bundle.toPem(),
    "web.pem": client.chainPem,
    "web-key.pem": client.keyPem!.reveal(),
  });
  const { hash: _h, ...gw } = runtime.gateway!;
  gateway = await startTestGateway(
    sealRuntimeConfig<GatewayRuntimeConfig>({
      ...gw,
      listeners: gw.listeners.filter((l) => l.protocol === "http"),
      svid: { ...gw.svid!, ...svidFiles(gwDir) },
      discovery: {
        kind: "static",
        endpoints: {
          notifications: [{ host: "127.0.0.1", port: notifications.ports.inbound }],
          chat: [{ host: "127.0.0.1", port: chat.ports.inbound }],
        },
      },
    }),
  );
  cleanups.push(() => gateway.drain());
  await until(async () => (await fetch(`${gateway.adminUrl}/ready`)).ok, 5000, "gateway identity");
});

afterAll(async () => {
  for (const c of cleanups.reverse()) await c();
  await tmp?.cleanup();
});

const metrics = async (s: TestSidecar) => (await fetch(`${s.adminUrl}/metrics`)).text();
const local = (s: TestSidecar, service: string) => `127.0.0.1:${s.ports.services[service]}`;

describe("gRPC app to app through two sidecars", () => {
  it("carries_a_unary_call_with_its_trailers_and_the_callers_identity", async () => {
    const r = await unary(local(web, "notifications"), "Send", "hello");
    expect(r).toMatchObject({ value: "sent hello", code: grpc.status.OK });
    expect(r.trailers["x-order-version"]).toBe("7");
    expect(grpcApp.peers.at(-1)).toBe(spiffe("web"));

    const inbound = await metrics(notifications);
    expect(
      metricValue(inbound, "meshgate_requests_total", {
        direction: "inbound",
        peer: spiffe("web"),
        mtls: "true",
        code_class: "2xx",
      }),
    ).toBeGreaterThanOrEqual(1);
    const line = notifications.logs.find((l) => l.event === "access" && l.path === `${RPC}/Send`);
    expect(line).toMatchObject({ direction: "inbound", method: "POST", peer: spiffe("web"), mtls: true });
    const out = web.logs.find((l) => l.event === "access" && l.path === `${RPC}/Send`);
    expect(out).toMatchObject({ direction: "outbound", peer: "notifications", status: 200 });
    // The same fields as an HTTP/1 request's access line.
    expect(Object.keys(line!).sort()).toEqual(
      expect.arrayContaining(["requestId", "rule", "status", "durationMs", "upstream", "outcome"]),
    );
  });

  it("passes_a_non_ok_status_through", async () => {
    const r = await unary(local(web, "notifications"), "Send", "fail");
    expect(r).toMatchObject({ value: null, code: grpc.status.NOT_FOUND, details: "no such user" });
  });

  it("delivers_every_message_of_a_server_stream_and_its_final_status", async () => {
    const r = await serverStream(local(web, "notifications"));
    expect(r.messages).toEqual(["event 1", "event 2", "event 3"]);
    expect(r).toMatchObject({ code: grpc.status.ABORTED, details: "watch ended" });
  });

  it("answers_a_denied_call_with_permission_denied_and_the_reason", async () => {
    const r = await unary(local(web, "notifications"), "Purge", "x");
    expect(r.code).toBe(grpc.status.PERMISSION_DENIED);
    expect(r.trailers["x-meshgate-error"]).toBe("authz_denied");
    expect(r.trailers["x-meshgate-denied"]).toBe("path_not_allowed");
    const text = await metrics(notifications);
    expect(
      metricValue(text, "meshgate_authz_denied_total", { peer: spiffe("web"), reason: "path_not_allowed" }),
    ).toBe(1);
    // Counted by the HTTP status it stands for (the wire carries 200 + grpc-status 7).
    expect(
      metricValue(text, "meshgate_requests_total", { direction: "inbound", code_class: "4xx" }),
    ).toBeGreaterThanOrEqual(1);
  });

  it("answers_an_undeclared_destination_with_permission_denied", async () => {
    const r = await unary(`127.0.0.1:${web.ports.outbound}`, "Send", "x", "secrets");
    expect(r.code).toBe(grpc.status.PERMISSION_DENIED);
    expect(r.trailers["x-meshgate-error"]).toBe("destination_not_declared");
  });

  it("answers_unavailable_when_the_app_is_down_and_retries_a_dead_endpoint", async () => {
    // Nothing listens on port 1 (privileged; a freed ephemeral port could be taken by a later listener).
    const port = 1;
    const down = await sidecar(sidecarConfig("notifications"), port);
    const caller = await sidecar(sidecarConfig("web"), plainApp.port, {
      notifications: [down.ports.inbound],
    });
    const r = await unary(local(caller, "notifications"), "Send", "x");
    expect(r.code).toBe(grpc.status.UNAVAILABLE);
    expect(r.trailers["x-meshgate-error"]).toBe("upstream_connect_failure");

    // Two endpoints, one refusing connections: every call (a POST with a streamed body) succeeds, the
    // ones the balancer (random P2C) sends to the dead endpoint first by a retry on the connect failure.
    // Call until one was retried: 10 calls all avoiding it has a chance of 1/1024.
    const retrying = await sidecar(sidecarConfig("web"), plainApp.port, {
      notifications: [port, notifications.ports.inbound],
    });
    const retried = async () =>
      metricValue(await metrics(retrying), "meshgate_retries_total", { reason: "connect_failure" });
    for (let i = 0; i < 10 && (await retried()) < 1; i++) {
      const ok = await unary(local(retrying, "notifications"), "Send", `r${i}`);
      expect(ok).toMatchObject({ value: `sent r${i}`, code: grpc.status.OK });
    }
    expect(await retried()).toBeGreaterThanOrEqual(1);
  });

  it.each([
    // The route's timeout (mesh default 2 s) is shorter than the caller's 8 s: the app is told 2 s.
    ["a_longer_caller_deadline_reaches_the_app_cut_to_the_route_timeout", 8000, 1500, 2000],
    ["a_shorter_caller_deadline_reaches_the_app_as_sent", 700, 300, 700],
  ])("%s", async (_claim, deadlineMs, atLeast, atMost) => {
    const r = await unary(local(web, "notifications"), "Deadline", "x", undefined, deadlineMs);
    expect(r.code).toBe(grpc.status.OK);
    const remaining = Number(r.value);
    expect(remaining).toBeGreaterThanOrEqual(atLeast);
    expect(remaining).toBeLessThanOrEqual(atMost);
  });

  it("ends_a_call_the_app_does_not_answer_in_time_with_deadline_exceeded_from_the_sidecar", async () => {
    // The caller's own deadline is 8 s; the sidecar's per-try timeout (500 ms) ends the call first, as
    // DEADLINE_EXCEEDED with the sidecar's error code (a gRPC-generated one would carry no such metadata).
    const started = performance.now();
    const r = await unary(local(web, "notifications"), "Stall", "x");
    expect(r.code).toBe(grpc.status.DEADLINE_EXCEEDED);
    expect(r.trailers["x-meshgate-error"]).toBe("upstream_timeout");
    expect(performance.now() - started).toBeLessThan(2900);
  });

  it("surfaces_an_upstream_stream_reset_as_a_reset_never_a_clean_end", async () => {
    const resetting = http2.createServer();
    resetting.on("stream", (stream) => {
      stream.on("error", () => {});
      stream.respond({ ":status": 200, "content-type": "application/grpc" });
      // A message cut short, then RST_STREAM (destroy resets at once; close() would end cleanly first).
      stream.write(Buffer.from([0, 0, 0, 0, 9, 1, 2]), () => stream.destroy(new Error("app crashed")));
    });
    await new Promise<void>((r) => resetting.listen(0, "127.0.0.1", r));
    cleanups.push(() => new Promise((r) => resetting.close(r)));
    const callee = await sidecar(sidecarConfig("notifications"), (resetting.address() as AddressInfo).port);
    const caller = await sidecar(sidecarConfig("web"), plainApp.port, {
      notifications: [callee.ports.inbound],
    });
    const client = http2.connect(`http://${local(caller, "notifications")}`);
    const result = await new Promise<{ status: number; rst: number; ended: boolean; trailers: boolean }>(
      (resolve) => {
        const s = client.request({
          ":method": "POST",
          ":path": `${RPC}/Send`,
          "content-type": "application/grpc",
          te: "trailers",
        });
        let status = 0;
        let ended = false;
        let trailers = false;
        s.on("response", (h) => (status = Number(h[":status"])));
        s.on("trailers", () => (trailers = true));
        s.on("end", () => (ended = true));
        s.on("error", () => {});
        s.on("close", () => resolve({ status, rst: s.rstCode ?? 0, ended, trailers }));
        s.resume();
        s.end(Buffer.from([0, 0, 0, 0, 0]));
      },
    );
    client.close();
    expect(result.status).toBe(200);
    expect(result.trailers).toBe(false);
    expect(result.rst).toBe(http2.constants.NGHTTP2_INTERNAL_ERROR);
    // And a gRPC client sees the call fail (never OK).
    const r = await unary(local(caller, "notifications"), "Send", "x");
    expect(r.code).not.toBe(grpc.status.OK);
  });
});

describe("a gRPC call's deadline bounds the whole call through two sidecars", () => {
  it("ends_a_stream_that_keeps_sending_at_the_callers_grpc_timeout_with_a_reset_and_cancels_it_at_the_app", async () => {
    // The app streams a message every 100 ms and never ends; the caller's deadline is 500 ms.
    let cancelled = false;
    const ticking = http2.createServer();
    ticking.on("stream", (stream) => {
      stream.on("error", () => {});
      stream.respond({ ":status": 200, "content-type": "application/grpc" });
      const timer = setInterval(() => stream.destroyed || stream.write(Buffer.from([0, 0, 0, 0, 1, 7])), 100);
      stream.on("close", () => {
        clearInterval(timer);
        cancelled = true;
      });
    });
    await new Promise<void>((r) => ticking.listen(0, "127.0.0.1", r));
    cleanups.push(() => new Promise((r) => ticking.close(r)));
    const callee = await sidecar(sidecarConfig("notifications"), (ticking.address() as AddressInfo).port);
    const caller = await sidecar(sidecarConfig("web"), plainApp.port, {
      notifications: [callee.ports.inbound],
    });
    const result = await grpcStreamOutcome(
      `http://${local(caller, "notifications")}`,
      `${RPC}/Watch`,
      Buffer.from([0, 0, 0, 0, 0]),
      "500m",
    );
    expect(result.how).toBe("reset");
    expect(result.bytes).toBeGreaterThan(0);
    expect(result.ms).toBeGreaterThanOrEqual(450);
    const deadline = Date.now() + 3000;
    while (!cancelled && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    expect(cancelled).toBe(true);
  });
});

/**
 * An HTTP/2 mesh session failing under a POST: the caller's sidecar may resend it only when the callee
 * never took the stream. `fault` is applied by a relay between the caller's sidecar and `callee` (a TLS
 * record of the answer corrupted once the app saw the request) or by the callee itself.
 */
describe("a POST over an HTTP/2 mesh session is resent only when the callee never took it", () => {
  /** A TCP relay to `port` that corrupts the next bytes from upstream once `arm()` was called. */
  async function corruptingRelay(port: number) {
    let armed = false;
    const server = net.createServer((c) => {
      const u = net.connect(port, "127.0.0.1");
      c.pipe(u);
      u.on("data", (d: Buffer) => {
        if (armed) {
          armed = false;
          d = Buffer.from(d);
          d[5]! ^= 0xff; // the first record's first encrypted byte: it fails to decrypt, nothing is read
        }
        c.write(d);
      });
      u.on("end", () => c.end());
      u.on("error", () => c.destroy());
      c.on("error", () => u.destroy());
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    cleanups.push(() => new Promise((r) => server.close(r)));
    return { port: (server.address() as AddressInfo).port, arm: () => (armed = true) };
  }

  /** The notifications sidecar's stand-in over mTLS h2 (its SVID): refuses the first stream it gets. */
  async function refusingCallee(seen: string[]) {
    const svid = await ca.issuer.issue(spiffe("notifications"));
    const server = http2.createSecureServer({
      cert: svid.chainPem,
      key: svid.keyPem!.reveal(),
      ca: ca.bundle.toPem(),
      requestCert: true,
      rejectUnauthorized: true,
      minVersion: "TLSv1.3",
    });
    server.on("stream", (stream, headers) => {
      stream.on("error", () => {});
      if (seen.push(String(headers[":method"])) === 1)
        return stream.close(http2.constants.NGHTTP2_REFUSED_STREAM);
      stream.resume();
      stream.respond({ ":status": 200 });
      stream.end("taken");
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    cleanups.push(() => new Promise((r) => server.close(r)));
    return (server.address() as AddressInfo).port;
  }

  it.each([
    [
      "a_session_that_fails_once_the_app_saw_the_post_is_a_reset_never_a_resent_post",
      "corrupted",
      { status: 502, error: "upstream_reset", seen: ["POST"] },
    ],
    [
      "a_stream_the_callee_refused_unprocessed_is_resent",
      "refused",
      { status: 200, error: undefined, seen: ["POST", "POST"] },
    ],
  ])("%s", async (_claim, fault, expected) => {
    const seen: string[] = [];
    let calleePort: number;
    if (fault === "corrupted") {
      let relay: { port: number; arm: () => boolean } | null = null;
      const app = http2.createServer((req, res) => {
        seen.push(req.method);
        req.resume();
        req.on("end", () => {
          relay!.arm();
          setTimeout(() => res.end("done"), 50);
        });
      });
      await new Promise<void>((r) => app.listen(0, "127.0.0.1", r));
      cleanups.push(() => new Promise((r) => app.close(r)));
      const callee = await sidecar(sidecarConfig("notifications"), (app.address() as AddressInfo).port);
      relay = await corruptingRelay(callee.ports.inbound);
      calleePort = relay.port;
    } else calleePort = await refusingCallee(seen);
    const caller = await sidecar(sidecarConfig("web"), plainApp.port, { notifications: [calleePort] });
    // A small body with its length: buffered, so a retry could replay it (notifications retries on
    // connect-failure and refused-stream).
    const r = await request(`http://${local(caller, "notifications")}${RPC}/Send`, {
      method: "POST",
      headers: { "content-type": "application/octet-stream" },
      body: "charge the card",
    });
    expect({ status: r.status, error: r.headers["x-meshgate-error"], seen }).toEqual(expected);
  });
});

describe("a request body over the limit on its way to an HTTP/2 app", () => {
  it("is_answered_413_and_the_sidecar_keeps_serving", async () => {
    // No Content-Length: the body streams to the app and passes the callee's 1 KiB limit on the way.
    let received = 0;
    const app = http2.createServer((req, res) => {
      req.on("data", (d: Buffer) => (received += d.length));
      req.on("end", () => res.end("whole body"));
    });
    await new Promise<void>((r) => app.listen(0, "127.0.0.1", r));
    cleanups.push(() => new Promise((r) => app.close(r)));
    const dir = join(tmp.dir, "notifications-1kib");
    await writeIdentity(dir, await ca.issuer.issue(spiffe("notifications")), ca.bundle.toPem());
    const callee = await startTestSidecar(
      localSidecar(sidecarConfig("notifications"), {
        identityDir: dir,
        appPort: (app.address() as AddressInfo).port,
        edit: (c) => ({
          ...c,
          inbound: { ...c.inbound, limits: { ...c.inbound.limits, maxBodyBytes: 1024 } },
        }),
      }),
    );
    cleanups.push(() => callee.drain());
    const caller = await sidecar(sidecarConfig("web"), plainApp.port, {
      notifications: [callee.ports.inbound],
    });
    const post = (size: number) =>
      new Promise<{ status: number; error: unknown; body: string }>((resolve, reject) => {
        const client = http2.connect(`http://${local(caller, "notifications")}`);
        client.on("error", reject);
        const s = client.request({ ":method": "POST", ":path": `${RPC}/Send` });
        let status = 0;
        let error: unknown;
        let body = "";
        s.on("response", (h) => ((status = Number(h[":status"])), (error = h["x-meshgate-error"])));
        s.on("data", (d: Buffer) => (body += d.toString()));
        s.on("error", () => {});
        s.on("close", () => (client.close(), resolve({ status, error, body })));
        s.end(Buffer.alloc(size, 120));
      });
    expect(await post(4096)).toMatchObject({ status: 413, error: "body_too_large" });
    expect(received).toBeLessThan(4096);
    expect(await post(100)).toEqual({ status: 200, error: undefined, body: "whole body" });
  });
});

describe("an HTTP/2 mesh session and the certificates it was authenticated with", () => {
  it("is_replaced_by_a_new_session_a_second_before_the_callees_certificate_expires", async () => {
    const dir = join(tmp.dir, "notifications-short-lived");
    const short = await ca.issuer.issue(spiffe("notifications"), { ttlMs: 3500, clockSkewMs: 0 });
    await writeIdentity(dir, short, ca.bundle.toPem());
    const callee = await startTestSidecar(
      localSidecar(sidecarConfig("notifications"), {
        identityDir: dir,
        appPort: grpcApp.port,
        endpoints: {},
      }),
    );
    cleanups.push(() => callee.drain());
    const caller = await sidecar(sidecarConfig("web"), plainApp.port, {
      notifications: [callee.ports.inbound],
    });
    const send = async (text: string) =>
      expect(await unary(local(caller, "notifications"), "Send", text)).toMatchObject({
        value: `sent ${text}`,
        code: grpc.status.OK,
      });
    const handshakes = async () => metricValue(await metrics(callee), "meshgate_tls_handshakes_total");
    await send("a");
    // The callee renews; the session made before keeps carrying calls until its lease ends.
    const renewed = await ca.issuer.issue(spiffe("notifications"));
    await writeIdentity(dir, renewed, ca.bundle.toPem());
    await until(() => callee.identity()?.serial === renewed.serial, 5000, "callee reload");
    await send("b");
    expect(await handshakes()).toBe(1);
    await new Promise((r) => setTimeout(r, short.notAfter - EXPIRY_MARGIN_MS - Date.now() + 150));
    await send("c");
    expect(await handshakes()).toBe(2);
  }, 20_000);
});

describe("HTTP/2 on the inbound port", () => {
  it("serves_curl_http2_with_an_svid_and_refuses_it_without", async () => {
    const plain = await sidecar(sidecarConfig("chat"), plainApp.port);
    const as = ["--cert", files["web.pem"]!, "--key", files["web-key.pem"]!];
    const url = `https://127.0.0.1:${plain.ports.inbound}/plain?x=1`;
    const r = await curl(["--http2", "-k", ...as, url]);
    expect(r).toMatchObject({ code: 0, status: "200", version: "2" });
    const seen = plainApp.received.at(-1)!;
    expect(seen.url).toBe("/plain?x=1");
    expect(seen.headers["x-meshgate-peer"]).toBe(spiffe("web"));
    expect(seen.headers.host).toBe(`127.0.0.1:${plain.ports.inbound}`);
    // HTTP/1.1 on the same port still works; without a certificate the handshake is refused.
    expect(await curl(["--http1.1", "-k", ...as, url])).toMatchObject({ status: "200", version: "1.1" });
    expect((await curl(["--http2", "-k", url])).code).not.toBe(0);
    // Authorization per stream: a path no rule opens is refused on the same kind of connection.
    const denied = await curl(["--http2", "-k", ...as, `https://127.0.0.1:${plain.ports.inbound}/other`]);
    expect(denied).toMatchObject({ status: "403", version: "2" });
  });
});

describe("HTTP/2 streams per connection", () => {
  // SETTINGS_MAX_CONCURRENT_STREAMS was Node's default (2^32-1): one connection could hold any number of
  // requests in flight at the callee's sidecar (inbound) or the caller's (the app's local port).
  const remoteSettings = async (session: http2.ClientHttp2Session) => {
    try {
      return await new Promise<http2.Settings>((resolve, reject) => {
        session.once("remoteSettings", resolve);
        session.once("error", reject);
      });
    } finally {
      session.destroy();
    }
  };
  it.each([
    [
      "the_inbound_port_over_mtls",
      () =>
        http2.connect(`https://127.0.0.1:${web.ports.inbound}`, {
          cert: readFileSync(files["web.pem"]!),
          key: readFileSync(files["web-key.pem"]!),
          rejectUnauthorized: false,
        }),
    ],
    ["an_app_s_local_port_over_h2c", () => http2.connect(`http://${local(web, "notifications")}`)],
    ["the_proxy_port_over_h2c", () => http2.connect(`http://127.0.0.1:${web.ports.outbound}`)],
  ] as [string, () => http2.ClientHttp2Session][])("advertises_a_bounded_limit_on_%s", async (_c, open) => {
    expect((await remoteSettings(open())).maxConcurrentStreams).toBe(100);
  });
});

describe("h2c in permissive mode", () => {
  it("accepts_the_h2c_preface_on_the_inbound_port_without_identity", async () => {
    const permissive = spec({ mtls: "permissive" }).sidecars.find((s) => s.name === "chat")!;
    const plain = await sidecar(permissive, plainApp.port);
    const r = await curl(["--http2-prior-knowledge", `http://127.0.0.1:${plain.ports.inbound}/plain`]);
    expect(r).toMatchObject({ code: 0, status: "200", version: "2" });
    expect(plainApp.received.at(-1)!.headers["x-meshgate-peer"]).toBeUndefined();
    const h1 = await curl(["--http1.1", `http://127.0.0.1:${plain.ports.inbound}/plain`]);
    expect(h1).toMatchObject({ status: "200", version: "1.1" });
    expect(
      metricValue(await metrics(plain), "meshgate_requests_total", { direction: "inbound", mtls: "false" }),
    ).toBe(2);
    // RFC 9113 §8.3.1: :authority names the target; a Host header that differs is refused, not routed by.
    const seen = plainApp.received.length;
    const client = http2.connect(`http://127.0.0.1:${plain.ports.inbound}`);
    const status = await new Promise<number>((resolve, reject) => {
      const req = client.request({
        ":path": "/plain",
        ":authority": `127.0.0.1:${plain.ports.inbound}`,
        host: "other.example",
      });
      req.on("response", (h) => resolve(Number(h[":status"])));
      req.on("error", reject);
      req.resume();
      req.end();
    });
    client.close();
    expect(status).toBe(400);
    expect(plainApp.received.length).toBe(seen);
  });
});

describe("the gateway to a gRPC service behind its sidecar", () => {
  it("carries_unary_and_streaming_calls_over_mtls_h2_with_trailers", async () => {
    const target = gateway.url.slice("http://".length);
    const r = await unary(target, "Send", "from the edge");
    expect(r).toMatchObject({ value: "sent from the edge", code: grpc.status.OK });
    expect(r.trailers["x-order-version"]).toBe("7");
    expect(grpcApp.peers.at(-1)).toBe(spiffe("gateway"));
    const failed = await unary(target, "Send", "fail");
    expect(failed).toMatchObject({ code: grpc.status.NOT_FOUND, details: "no such user" });
    const s = await serverStream(target);
    expect(s.messages).toEqual(["event 1", "event 2", "event 3"]);
    expect(s.code).toBe(grpc.status.ABORTED);
    // The sidecar refuses a method no rule opens: PERMISSION_DENIED reaches the gateway's client.
    const denied = await unary(target, "Purge", "x");
    expect(denied.code).toBe(grpc.status.PERMISSION_DENIED);
    expect(denied.trailers["x-meshgate-denied"]).toBe("path_not_allowed");
    expect(
      metricValue(await metrics(notifications), "meshgate_requests_total", {
        direction: "inbound",
        peer: spiffe("gateway"),
        mtls: "true",
      }),
    ).toBeGreaterThanOrEqual(4);
  });
});

describe("WebSocket through the mesh", () => {
  it("echoes_app_to_app_through_two_sidecars_and_refuses_a_denied_upgrade", async () => {
    const r = await wsEcho(`ws://${local(web, "chat")}/ws/room1?x=1`, "hi");
    expect(r.echo).toBe("echo hi");
    expect(wsPaths.at(-1)).toBe(`/ws/room1?x=1 ${spiffe("web")}`);
    // Through the proxy port, by Host.
    const byHost = await new Promise<string>((resolve, reject) => {
      const ws = new WebSocket(`ws://127.0.0.1:${web.ports.outbound}/ws/room2`, {
        headers: { host: "chat" },
      });
      ws.on("open", () => ws.send("there"));
      ws.on("message", (d: Buffer) => {
        ws.close();
        resolve(d.toString());
      });
      ws.on("error", reject);
    });
    expect(byHost).toBe("echo there");

    const denied = await wsEcho(`ws://${local(web, "chat")}/private`, "x");
    expect(denied.status).toBe(403);
    expect(denied.headers!["x-meshgate-denied"]).toBe("path_not_allowed");
    const undeclared = await new Promise<number>((resolve) => {
      const ws = new WebSocket(`ws://127.0.0.1:${web.ports.outbound}/ws/x`, { headers: { host: "secrets" } });
      ws.on("unexpected-response", (_q, res) => {
        resolve(res.statusCode ?? 0);
        ws.terminate();
      });
      ws.on("error", () => {});
    });
    expect(undeclared).toBe(403);
    await until(async () => {
      const text = await metrics(chat);
      return (
        metricValue(text, "meshgate_requests_total", { direction: "inbound", code_class: "1xx" }) >= 2 &&
        metricValue(text, "meshgate_authz_denied_total", { reason: "path_not_allowed" }) === 1
      );
    });
    const line = chat.logs.find((l) => l.event === "access" && l.upgrade === "websocket" && l.status === 101);
    expect(line).toMatchObject({ direction: "inbound", peer: spiffe("web"), mtls: true, path: "/ws/room1" });
  });

  // A tunnel's lifetime was observed in meshgate_request_duration_seconds: every WebSocket that stayed open
  // counted as a request slower than any latency SLO (and the p99 panels showed how long chats last).
  it("counts_a_tunnel_as_a_request_but_never_its_lifetime_as_request_latency", async () => {
    const seen = async (s: TestSidecar, direction: string) => {
      const text = await metrics(s);
      return {
        tunnels: metricValue(text, "meshgate_requests_total", { direction, code_class: "1xx" }),
        observed: metricValue(text, "meshgate_request_duration_seconds_count", { direction }),
        withinOneSecond: metricValue(text, "meshgate_request_duration_seconds_bucket", {
          direction,
          le: "1",
        }),
      };
    };
    const before = [await seen(web, "outbound"), await seen(chat, "inbound")];
    const ws = new WebSocket(`ws://${local(web, "chat")}/ws/long`);
    await new Promise<void>((resolve, reject) => {
      ws.on("open", () => ws.send("still there"));
      ws.on("message", () => resolve());
      ws.on("error", reject);
    });
    await new Promise((r) => setTimeout(r, 1200)); // a conversation longer than the largest bound asked below
    ws.close();
    await until(
      async () =>
        (await seen(web, "outbound")).tunnels > before[0]!.tunnels &&
        (await seen(chat, "inbound")).tunnels > before[1]!.tunnels,
      5000,
      "both sidecars count the closed tunnel",
    );
    const after = [await seen(web, "outbound"), await seen(chat, "inbound")];
    for (const [i, side] of ["web outbound", "chat inbound"].entries()) {
      const slow =
        after[i]!.observed - before[i]!.observed - (after[i]!.withinOneSecond - before[i]!.withinOneSecond);
      expect(slow, `${side}: observations above 1s`).toBe(0);
    }
  });

  it("passes_a_half_close_on_and_closes_both_sides", async () => {
    // A raw tunnel: the client half-closes after its message; the app answers and then closes.
    const net = await import("node:net");
    const app = net.createServer({ allowHalfOpen: true }, (socket) => {
      let seen = "";
      let answered = false;
      socket.on("error", () => {});
      socket.on("data", (d: Buffer) => {
        seen += d.toString("latin1");
        if (!answered && seen.includes("\r\n\r\n")) {
          answered = true;
          socket.write(
            "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\n" +
              "sec-websocket-accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n", // RFC 6455 §1.3's example key
          );
        }
      });
      socket.on("end", () => socket.end(`got ${seen.slice(seen.indexOf("\r\n\r\n") + 4)}`));
    });
    await new Promise<void>((r) => app.listen(0, "127.0.0.1", r));
    cleanups.push(() => new Promise((r) => app.close(r)));
    const callee = await sidecar(sidecarConfig("chat"), (app.address() as AddressInfo).port);
    const caller = await sidecar(sidecarConfig("web"), plainApp.port, { chat: [callee.ports.inbound] });
    const text = await new Promise<string>((resolve, reject) => {
      const c = net.connect({ host: "127.0.0.1", port: caller.ports.services.chat!, allowHalfOpen: true });
      let got = "";
      c.on("connect", () =>
        c.write(
          "GET /ws/half HTTP/1.1\r\nhost: chat\r\nconnection: Upgrade\r\nupgrade: websocket\r\n" +
            "sec-websocket-version: 13\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        ),
      );
      c.on("data", (d: Buffer) => {
        got += d.toString("latin1");
        if (got.includes("101 Switching") && !c.writableEnded) c.end("payload");
      });
      c.on("end", () => resolve(got));
      c.on("error", reject);
    });
    expect(text).toBe(
      "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\n" +
        "sec-websocket-accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\ngot payload",
    );
  });

  it("relays_a_handshake_header_s_obs_text_as_the_bytes_the_caller_sent_through_both_sidecars", async () => {
    // Node's parser hands a byte 0x80–0xFF over as one character; the handshakes both sidecars write were
    // UTF-8, so "caf\xe9" reached the app as "caf\xc3\xa9". Written as latin1 now (upgradeHandshake).
    const net = await import("node:net");
    let handshake = "";
    const app = net.createServer((socket) => {
      socket.on("error", () => {});
      socket.on("data", (d: Buffer) => {
        handshake += d.toString("latin1");
        if (handshake.includes("\r\n\r\n")) socket.end("HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n");
      });
    });
    await new Promise<void>((r) => app.listen(0, "127.0.0.1", r));
    cleanups.push(() => new Promise((r) => app.close(r)));
    const callee = await sidecar(sidecarConfig("chat"), (app.address() as AddressInfo).port);
    const caller = await sidecar(sidecarConfig("web"), plainApp.port, { chat: [callee.ports.inbound] });
    const status = await new Promise<string>((resolve, reject) => {
      const c = net.connect({ host: "127.0.0.1", port: caller.ports.services.chat! });
      let got = "";
      c.on("connect", () =>
        c.write(
          Buffer.from(
            "GET /ws/name HTTP/1.1\r\nhost: chat\r\nconnection: Upgrade\r\nupgrade: websocket\r\n" +
              "sec-websocket-version: 13\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\nx-name: caf\xe9\r\n\r\n",
            "latin1",
          ),
        ),
      );
      c.on("data", (d: Buffer) => (got += d.toString("latin1")));
      c.on("close", () => resolve(got.split("\r\n")[0]!));
      c.on("error", reject);
    });
    expect(status).toBe("HTTP/1.1 404 Not Found");
    expect(handshake).toContain("x-name: caf\xe9\r\n");
  });

  // WebSocket smuggling: an upgrade the app does not accept leaves its connection speaking HTTP; a
  // request the caller pipelines after the handshake, or sends after the refusal, must never reach it
  // through a tunnel (it would skip authorization and carry forged peer headers).
  it.each([
    ["pipelined_with_the_handshake", true, "404"],
    ["sent_after_the_apps_refusal", false, "404"],
    // A 101 that does not answer the handshake (no Sec-WebSocket-Accept) proves no WebSocket server took
    // the connection: the caller gets 502 and nothing is tunnelled.
    ["pipelined_after_a_101_without_the_handshakes_accept", true, "101"],
  ] as const)(
    "never_tunnels_a_request_to_an_app_that_refused_the_upgrade: %s",
    async (_when, pipelined, answer) => {
      const net = await import("node:net");
      // An HTTP/1.1 app without WebSocket support that reads pipelined requests (heads only), as most
      // servers do: 404 to the upgrade, keep-alive, and its /private answers 200.
      const seen: string[] = [];
      const app = net.createServer((socket) => {
        let buffered = "";
        socket.on("error", () => {});
        socket.on("data", (d: Buffer) => {
          buffered += d.toString("latin1");
          for (let end = buffered.indexOf("\r\n\r\n"); end >= 0; end = buffered.indexOf("\r\n\r\n")) {
            const url = buffered.slice(0, end).split(" ")[1]!;
            buffered = buffered.slice(end + 4);
            seen.push(url);
            const body = url === "/private" ? "SECRET" : "no websocket here";
            if (url !== "/private" && answer === "101")
              socket.write(
                "HTTP/1.1 101 Switching Protocols\r\nconnection: Upgrade\r\nupgrade: websocket\r\n\r\n",
              );
            else
              socket.write(
                `HTTP/1.1 ${url === "/private" ? "200 OK" : "404 Not Found"}\r\ncontent-length: ${body.length}\r\n\r\n${body}`,
              );
          }
        });
      });
      await new Promise<void>((r) => app.listen(0, "127.0.0.1", r));
      cleanups.push(() => new Promise((r) => app.close(r)));
      const callee = await sidecar(sidecarConfig("chat"), (app.address() as AddressInfo).port);
      const caller = await sidecar(sidecarConfig("web"), plainApp.port, { chat: [callee.ports.inbound] });
      const handshake =
        "GET /ws/none HTTP/1.1\r\nhost: chat\r\nconnection: Upgrade\r\nupgrade: websocket\r\n" +
        "sec-websocket-version: 13\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";
      const smuggled = `GET /private HTTP/1.1\r\nhost: chat\r\nx-meshgate-peer: ${spiffe("admin")}\r\n\r\n`;
      const text = await new Promise<string>((resolve) => {
        const c = net.connect({ host: "127.0.0.1", port: caller.ports.services.chat! });
        let got = "";
        c.on("connect", () => c.write(pipelined ? handshake + smuggled : handshake));
        c.on("data", (d: Buffer) => {
          got += d.toString("latin1");
          if (!pipelined && got.includes("no websocket here") && !c.writableEnded) c.write(smuggled);
        });
        c.on("close", () => resolve(got));
        c.on("error", () => {});
        setTimeout(() => c.destroy(), 1500);
      });
      expect(text).toMatch(
        answer === "404" ? /^HTTP\/1\.1 404 / : /^HTTP\/1\.1 502 [^]*x-meshgate-error: upstream_bad_upgrade/,
      );
      expect(text).not.toContain("SECRET");
      expect(seen).toEqual(["/ws/none"]);
    },
  );

  it("carries_a_gateway_upgrade_to_an_mtls_service_through_its_sidecar", async () => {
    const r = await wsEcho(`${gateway.url.replace("http", "ws")}/ws/lobby`, "edge");
    expect(r.echo).toBe("echo edge");
    expect(wsPaths.at(-1)).toBe(`/ws/lobby ${spiffe("gateway")}`);
    // The chat sidecar refuses a path its rules do not open, even though the gateway routes it.
    const denied = await wsEcho(`${gateway.url.replace("http", "ws")}/closed/x`, "x");
    expect(denied.status).toBe(403);
    expect(denied.headers!["x-meshgate-denied"]).toBe("path_not_allowed");
  });
});

describe("the shop", () => {
  it("carries_orders_grpc_call_to_notifications_through_both_sidecars", async () => {
    const loaded = await loadSpecFile(new URL("../../examples/shop/mesh.yaml", import.meta.url).pathname);
    if (!loaded.ok) throw new Error(loaded.errors.map((e) => e.message).join("\n"));
    const shop = translate(loaded.spec).runtime.sidecars;
    const shopCa = await makeCa(loaded.spec.trustDomain);
    const start = async (name: string, appPort: number, endpoints: Record<string, number[]>) => {
      const config = shop.find((s) => s.name === name)!;
      const dir = join(tmp.dir, `shop-${name}`);
      await writeIdentity(dir, await shopCa.issuer.issue(config.identity), shopCa.bundle.toPem());
      const s = await startTestSidecar(localSidecar(config, { identityDir: dir, appPort, endpoints }));
      cleanups.push(() => s.drain());
      return s;
    };
    const callee = await start("notifications", grpcApp.port, {});
    const orders = await start("orders", plainApp.port, { notifications: [callee.ports.inbound] });
    const r = await unary(local(orders, "notifications"), "Send", "order 42 shipped");
    expect(r).toMatchObject({ value: "sent order 42 shipped", code: grpc.status.OK });
    expect(grpcApp.peers.at(-1)).toBe(shop.find((s) => s.name === "orders")!.identity);
    // The shop opens Send only: another method of the same service is refused by notifications' sidecar.
    const other = await unary(local(orders, "notifications"), "Watch", "x");
    expect(other.code).toBe(grpc.status.PERMISSION_DENIED);
    // No log line of these sidecars holds a private key (the upgrade and h2 paths log too).
    for (const s of [callee, orders, web, notifications, chat])
      expect(s.rawLog()).not.toMatch(/PRIVATE KEY|BEGIN/);
  });
});
