/**
 * WebSocket through the gateway: a real `ws` server upstream, Node's WebSocket client, the same decide()
 * and fail-closed rules as any request.
 */
import { createConnection } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { WebSocketServer, type WebSocket as WsSocket } from "ws";
import { makeKey, nowS, signToken } from "../auth/support.ts";
import { freePort, gatewayConfig, startTestGateway, type TestGateway } from "../support/gateway.ts";

const PUBLIC = { public: true, rateLimit: { requests: 100000, per: "1s" } };

const key = makeKey("ws-key");
let wss: WebSocketServer;
let wsPort: number;
let gw: TestGateway;
const handshakes: { url: string; headers: Record<string, string | string[] | undefined> }[] = [];

beforeAll(async () => {
  wsPort = await freePort();
  wss = new WebSocketServer({ host: "127.0.0.1", port: wsPort });
  wss.on("connection", (socket: WsSocket, req) => {
    handshakes.push({ url: req.url ?? "", headers: req.headers });
    socket.on("message", (data, isBinary) =>
      socket.send(isBinary ? data : `echo:${data.toString()}`, { binary: isBinary }),
    );
  });
  await new Promise<void>((r) => wss.on("listening", () => r()));
  gw = await startTestGateway(
    gatewayConfig(
      [
        {
          name: "ws",
          match: { path: "/ws/{room}" },
          to: "chat",
          rewrite: { path: "/rooms/{room}" },
          ...PUBLIC,
        },
        { name: "private", match: { path: "/private" }, to: "chat", auth: { jwt: "main" } },
        {
          name: "secure",
          match: { path: "/secure/{room}" },
          to: "chat",
          auth: { jwt: "inline", scopes: ["chat"] },
          rateLimit: { requests: 100000, per: "1s" },
        },
      ],
      { chat: { port: wsPort } },
      {
        jwt: {
          main: {
            issuer: "https://id.t.example/",
            audiences: ["t"],
            jwksUri: "https://id.t.example/jwks",
            algorithms: ["ES256"],
          },
          inline: {
            issuer: "https://id.t.example/",
            audiences: ["t"],
            jwks: { keys: [key.jwk] },
            algorithms: ["ES256"],
          },
        },
      },
    ),
  );
});

afterAll(async () => {
  await gw.drain();
  await new Promise<void>((r) => wss.close(() => r()));
});

function open(path: string): Promise<WebSocket> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`${gw.url.replace("http", "ws")}${path}`);
    ws.onopen = () => resolve(ws);
    ws.onerror = () => reject(new Error(`could not open ${path}`));
  });
}

/** The raw response status of an upgrade request written by hand. */
function upgradeStatus(path: string, extra = ""): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = createConnection(Number(new URL(gw.url).port), "127.0.0.1", () => {
      s.write(
        `GET ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n` +
          `Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n${extra}\r\n`,
      );
    });
    let out = "";
    s.on("data", (c: Buffer) => (out += c.toString("latin1")));
    s.on("close", () => resolve(out.split("\r\n")[0]!));
    s.on("error", reject);
    setTimeout(() => s.destroy(), 2000);
  });
}

describe("websocket", () => {
  it("echoes_text_and_binary_messages_through_the_rewritten_path", async () => {
    const ws = await open("/ws/lobby");
    const text = new Promise<string>((r) => (ws.onmessage = (e) => r(String(e.data))));
    ws.send("hello");
    expect(await text).toBe("echo:hello");
    ws.binaryType = "arraybuffer";
    const bin = new Promise<Uint8Array>(
      (r) => (ws.onmessage = (e) => r(new Uint8Array(e.data as ArrayBuffer))),
    );
    ws.send(new Uint8Array([1, 2, 3]));
    expect([...(await bin)]).toEqual([1, 2, 3]);
    ws.close();
    const last = handshakes.at(-1)!;
    expect(last.url).toBe("/rooms/lobby");
    expect(last.headers["x-forwarded-for"]).toBe("127.0.0.1");
  });

  it.each([
    ["refuses_an_upgrade_to_a_route_that_requires_auth", "/private", "", "HTTP/1.1 401 Unauthorized"],
    ["refuses_an_upgrade_with_no_route", "/nowhere", "", "HTTP/1.1 404 Not Found"],
    ["refuses_an_upgrade_whose_path_is_ambiguous", "/ws/a%2Fb", "", "HTTP/1.1 400 Bad Request"],
    [
      "refuses_a_duplicated_singleton_header_on_upgrade",
      "/ws/x",
      "Authorization: a\r\nAuthorization: b\r\n",
      "HTTP/1.1 400 Bad Request",
    ],
  ])("%s", async (_claim, path, extra, statusLine) => {
    const before = handshakes.length;
    expect(await upgradeStatus(path, extra)).toBe(statusLine);
    expect(handshakes.length).toBe(before);
  });

  const token = (scope: string) =>
    signToken(key, { iss: "https://id.t.example/", aud: "t", sub: "alice", scope, exp: nowS() + 300 });

  it("admits_an_upgrade_with_a_valid_token_and_passes_the_principal_not_the_token", async () => {
    const before = handshakes.length;
    const line = await upgradeStatus("/secure/r1", `Authorization: Bearer ${await token("chat")}\r\n`);
    expect(line).toBe("HTTP/1.1 101 Switching Protocols");
    const seen = handshakes[before]!;
    expect(seen.url).toBe("/secure/r1");
    expect(seen.headers["x-meshgate-subject"]).toBe("alice");
    expect(seen.headers.authorization).toBeUndefined();
  });

  it.each([
    ["refuses_an_upgrade_without_a_token_on_an_authenticated_route", "", "HTTP/1.1 401 Unauthorized"],
    ["refuses_an_upgrade_whose_token_lacks_the_scope", "other", "HTTP/1.1 403 Forbidden"],
  ])("%s", async (_claim, scope, statusLine) => {
    const before = handshakes.length;
    const extra = scope ? `Authorization: Bearer ${await token(scope)}\r\n` : "";
    expect(await upgradeStatus("/secure/r2", extra)).toBe(statusLine);
    expect(handshakes.length).toBe(before);
  });

  it("counts_the_tunnel_in_the_request_metrics", async () => {
    const ws = await open("/ws/metrics");
    ws.close();
    await new Promise((r) => setTimeout(r, 100));
    const text = await (await fetch(`${gw.adminUrl}/metrics`)).text();
    expect(text).toMatch(/meshgate_requests_total\{proxy="gateway",route="ws",code_class="1xx"\} [1-9]/);
  });
});
