/**
 * WebSocket through the gateway: a real `ws` server upstream, Node's WebSocket client, the same decide()
 * and fail-closed rules as any request; and a raw upstream that answers the upgrade with anything but a
 * valid 101, which must never leave a tunnel the client could send further requests through; and wss://
 * through an https listener that also serves HTTP/2.
 */
import { mkdtemp, rm } from "node:fs/promises";
import { createConnection, createServer, type AddressInfo, type Server } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { WebSocket as WsClient, WebSocketServer, type WebSocket as WsSocket } from "ws";
import { makeKey, nowS, signToken } from "../auth/support.ts";
import { selfSignedCert } from "../support/certs.ts";
import {
  freePort,
  gatewayConfig,
  httpsListener,
  startTestGateway,
  upgradeStatusLine,
  type TestGateway,
} from "../support/gateway.ts";
import { startRawUpstream, type RawUpstream } from "../support/raw-upstream.ts";
import { upgradeHandshake } from "../../runtime/net/upgrade.ts";

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
        {
          name: "per-user",
          match: { path: "/per-user" },
          to: "chat",
          auth: { jwt: ["inline", "partner"] },
          rateLimit: { requests: 1, per: "1m", key: "subject" },
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
          partner: {
            issuer: "https://partner.t.example/",
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

/** The status line the gateway answers an upgrade request written by hand with (null: none). */
const upgradeStatus = (path: string, extra = "", method = "GET") =>
  upgradeStatusLine(Number(new URL(gw.url).port), path, { extra, method });

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

  // RFC 6455 §4.1: the opening handshake is a GET, and the handshake the gateway sends upstream is one — a
  // POST upgrade was matched and authorized as a POST (a public one) and reached the upstream as a GET
  // (one needing a token), its answer relayed. Refused before routing: nothing reaches the upstream.
  it.each([
    ["refuses_a_post_upgrade_before_routing_it", "POST", "/ws/r9"],
    ["refuses_a_put_upgrade_before_routing_it", "PUT", "/ws/r9"],
    ["refuses_a_post_upgrade_to_an_authenticated_route_with_400_not_a_tunnel", "POST", "/secure/r9"],
    ["refuses_an_options_upgrade_before_routing_it", "OPTIONS", "/ws/r9"],
  ])("%s", async (_claim, method, path) => {
    const before = handshakes.length;
    expect(await upgradeStatus(path, "Content-Length: 0\r\n", method)).toBe("HTTP/1.1 400 Bad Request");
    expect(handshakes.length).toBe(before);
  });

  /** The status code the gateway answers a request (`http`) or an upgrade (`ws`) with on /per-user. */
  async function perUserStatus(via: "http" | "ws", iss: "inline" | "partner", sub: string): Promise<number> {
    const t = await signToken(key, {
      iss: iss === "inline" ? "https://id.t.example/" : "https://partner.t.example/",
      aud: "t",
      sub,
      exp: nowS() + 300,
    });
    if (via === "http") {
      const r = await fetch(`${gw.url}/per-user`, { headers: { authorization: `Bearer ${t}` } });
      await r.arrayBuffer();
      return r.status;
    }
    return new Promise((resolve, reject) => {
      const s = createConnection(Number(new URL(gw.url).port), "127.0.0.1", () => {
        s.write(
          "GET /per-user HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n" +
            "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n" +
            `Authorization: Bearer ${t}\r\n\r\n`,
        );
      });
      let out = "";
      s.on("data", (c: Buffer) => {
        out += c.toString("latin1");
        const m = /^HTTP\/1\.1 (\d{3}) /.exec(out);
        if (m) {
          s.destroy();
          resolve(Number(m[1]));
        }
      });
      s.on("error", reject);
      s.on("close", () => reject(new Error(`no status line: ${JSON.stringify(out)}`)));
    });
  }

  // A rate limit keyed by subject buckets a principal by mechanism, provider and subject, on upgrades as on
  // requests: keyed by the bare `sub`, an upgrade shared the bucket of every issuer's user of that name, and
  // a subject spelled like a request's key (`jwt/inline/erin`) drew on that user's bucket. (The ws server
  // answers a plain GET 426: admitted; 429: limited.)
  it.each([
    {
      claim: "keeps_the_upgrade_buckets_of_one_subject_from_two_issuers_apart",
      steps: [
        ["ws", "inline", "dana"],
        ["ws", "partner", "dana"],
        ["ws", "inline", "dana"],
      ],
      statuses: [101, 101, 429],
    },
    {
      claim: "an_upgrade_by_a_subject_spelled_like_another_principals_key_draws_on_its_own_bucket",
      steps: [
        ["http", "inline", "erin"],
        ["ws", "partner", "jwt/inline/erin"],
      ],
      statuses: [426, 101],
    },
    {
      claim: "a_principals_requests_and_upgrades_share_its_bucket",
      steps: [
        ["http", "inline", "frank"],
        ["ws", "inline", "frank"],
      ],
      statuses: [426, 429],
    },
  ] as const)("$claim", async ({ steps, statuses }) => {
    const got: number[] = [];
    for (const [via, iss, sub] of steps) got.push(await perUserStatus(via, iss, sub));
    expect(got).toEqual(statuses);
  });

  it("counts_the_tunnel_in_the_request_metrics", async () => {
    const ws = await open("/ws/metrics");
    ws.close();
    await new Promise((r) => setTimeout(r, 100));
    const text = await (await fetch(`${gw.adminUrl}/metrics`)).text();
    expect(text).toMatch(/meshgate_requests_total\{proxy="gateway",route="ws",code_class="1xx"\} [1-9]/);
  });
});

describe("an upstream that does not switch protocols gets no tunnel", () => {
  // A raw upstream answering each request with what its path names, and serving further requests on the
  // same connection, as any HTTP/1.1 server does after an ordinary response.
  const KEY = "dGhlIHNhbXBsZSBub25jZQ==";
  const ACCEPT = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="; // RFC 6455 §1.3's example for KEY
  const answers: Record<string, string> = {
    "/refuse/404": "HTTP/1.1 404 Not Found\r\ncontent-length: 9\r\n\r\nnot found",
    "/refuse/200": "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
    "/refuse/426": "HTTP/1.1 426 Upgrade Required\r\nsec-websocket-version: 13\r\ncontent-length: 0\r\n\r\n",
    "/refuse/101-no-accept":
      "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n",
    "/refuse/101-wrong-accept":
      "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\nsec-websocket-accept: AAAAAAAAAAAAAAAAAAAAAAAAAAA=\r\n\r\n",
    "/refuse/101-not-websocket": `HTTP/1.1 101 Switching Protocols\r\nupgrade: h2c\r\nconnection: upgrade\r\nsec-websocket-accept: ${ACCEPT}\r\n\r\n`,
  };
  let raw: RawUpstream;
  let gw2: TestGateway;
  beforeAll(async () => {
    raw = await startRawUpstream((conn, request) => {
      const path = request.split(" ")[1]!;
      conn.socket.write(answers[path] ?? `HTTP/1.1 200 OK\r\ncontent-length: ${path.length}\r\n\r\n${path}`);
    });
    gw2 = await startTestGateway(
      gatewayConfig([{ name: "refuse", match: { path: "/refuse/**" }, to: "chat", ...PUBLIC }], {
        chat: { port: raw.port },
      }),
    );
  });
  afterAll(async () => {
    await gw2.drain();
    await raw.close();
  });

  /** Writes the upgrade (and `smuggled` with it, or after the answer arrived), collects what comes back. */
  function exchange(path: string, smuggled: string, later: boolean): Promise<string> {
    return new Promise((resolve) => {
      const s = createConnection(Number(new URL(gw2.url).port), "127.0.0.1", () => {
        s.write(
          `GET ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n` +
            `Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: ${KEY}\r\n\r\n${later ? "" : smuggled}`,
        );
      });
      let out = "";
      let sent = !later;
      s.on("data", (c: Buffer) => {
        out += c.toString("latin1");
        if (!sent && !s.destroyed) s.write(smuggled);
        sent = true;
      });
      s.on("error", () => {});
      s.on("close", () => resolve(out));
      setTimeout(() => s.destroy(), 1000);
    });
  }

  it.each([
    [
      "a_404_is_relayed_and_bytes_sent_with_the_upgrade_never_reach_the_upstream",
      "/refuse/404",
      false,
      "HTTP/1.1 404 Not Found",
    ],
    [
      "a_404_is_relayed_and_bytes_sent_after_it_never_reach_the_upstream",
      "/refuse/404",
      true,
      "HTTP/1.1 404 Not Found",
    ],
    ["a_200_is_relayed_and_the_connection_then_ends", "/refuse/200", true, "HTTP/1.1 200 OK"],
    ["a_426_is_relayed", "/refuse/426", false, "HTTP/1.1 426 Upgrade Required"],
    [
      "a_101_without_sec_websocket_accept_is_refused",
      "/refuse/101-no-accept",
      true,
      "HTTP/1.1 502 Bad Gateway",
    ],
    [
      "a_101_with_another_sec_websocket_accept_is_refused",
      "/refuse/101-wrong-accept",
      true,
      "HTTP/1.1 502 Bad Gateway",
    ],
    ["a_101_to_another_protocol_is_refused", "/refuse/101-not-websocket", false, "HTTP/1.1 502 Bad Gateway"],
  ])("%s", async (_claim, path, later, statusLine) => {
    const before = raw.requests.length;
    const out = await exchange(path, "GET /internal/admin HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", later);
    await new Promise((r) => setTimeout(r, 100));
    expect(out.split("\r\n")[0]).toBe(statusLine);
    expect(out).not.toContain("/internal/admin");
    expect(raw.requests.slice(before).map((r) => r.split("\r\n")[0])).toEqual([`GET ${path} HTTP/1.1`]);
  });

  it("relays_a_header_value_s_obs_text_as_the_bytes_the_client_sent", async () => {
    // Node's parser hands a byte 0x80–0xFF over as one character; the handshake was written as UTF-8, so
    // "caf\xe9" reached the upstream as "caf\xc3\xa9" (H1Pool writes latin1: both now send the byte).
    const before = raw.conns.length;
    await new Promise<void>((resolve) => {
      const s = createConnection(Number(new URL(gw2.url).port), "127.0.0.1", () =>
        s.write(
          Buffer.from(
            "GET /refuse/404 HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n" +
              `Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: ${KEY}\r\nX-Name: caf\xe9\r\n\r\n`,
            "latin1",
          ),
        ),
      );
      s.on("error", () => {});
      s.on("data", () => s.destroy());
      s.on("close", () => resolve());
      setTimeout(() => s.destroy(), 1000);
    });
    expect(raw.conns.length).toBe(before + 1);
    expect(raw.conns[before]!.data).toContain("x-name: caf\xe9\r\n");
  });

  it("a_valid_101_still_opens_the_tunnel", async () => {
    answers["/refuse/ok"] =
      `HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\nsec-websocket-accept: ${ACCEPT}\r\n\r\n`;
    const before = raw.requests.length;
    const out = await exchange("/refuse/ok", "GET /after-switch HTTP/1.1\r\nHost: x\r\n\r\n", true);
    expect(out.split("\r\n")[0]).toBe("HTTP/1.1 101 Switching Protocols");
    // Past a 101 the bytes are the tunnel's: they reach the upstream untouched.
    await new Promise((r) => setTimeout(r, 100));
    expect(raw.requests.slice(before).map((r) => r.split("\r\n")[0])).toEqual([
      "GET /refuse/ok HTTP/1.1",
      "GET /after-switch HTTP/1.1",
    ]);
  });
});

describe("handshake bytes (gateway and sidecar tunnels)", () => {
  it.each([
    ["keeps_obs_text_as_one_byte_each", "x-a: caf\xe9\r\n", "x-a: caf\xe9\r\n"],
    ["refuses_a_character_beyond_one_byte_whose_low_byte_is_lf", "x-a: 1\u010ax-injected: 1\r\n", null],
    ["refuses_a_character_beyond_one_byte_anywhere", "x-a: \u20ac\r\n", null],
  ])("%s", (_claim, line, sent) => {
    // One serializer for both proxies (runtime/net/upgrade.ts).
    const [name, value] = line.slice(0, -2).split(": ") as [string, string];
    const bytes = upgradeHandshake("/", { [name]: value });
    expect(bytes === null ? null : bytes.toString("latin1").split("\r\n")[1] + "\r\n").toBe(sent);
    expect(bytes === null ? null : bytes.toString("latin1")).toBe(
      sent === null ? null : `GET / HTTP/1.1\r\n${sent}\r\n`,
    );
  });
});

describe("wss through an https listener serving HTTP/2 and HTTP/1.1 (the default)", () => {
  let dir: string;
  let gw3: TestGateway;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "meshgate-wss-"));
    const cert = await selfSignedCert(dir, "wss", "localhost", "DNS:localhost");
    gw3 = await startTestGateway(
      gatewayConfig(
        [
          {
            name: "ws",
            match: { path: "/ws/{room}" },
            to: "chat",
            rewrite: { path: "/rooms/{room}" },
            ...PUBLIC,
          },
          { name: "private", match: { path: "/private" }, to: "chat", auth: { jwt: "inline" } },
        ],
        { chat: { port: wsPort } },
        {
          listeners: [httpsListener(cert)],
          jwt: {
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
    await gw3.drain();
    await rm(dir, { recursive: true, force: true });
  });

  const wssUrl = (path: string) => `wss://localhost:${gw3.ports.listeners.https}${path}`;

  it("echoes_through_the_tunnel", async () => {
    const before = handshakes.length;
    const ws = new WsClient(wssUrl("/ws/tls"), { rejectUnauthorized: false });
    await new Promise<void>((resolve, reject) => ws.on("open", () => resolve()).on("error", reject));
    const echoed = new Promise<string>((r) => ws.once("message", (d) => r(String(d))));
    ws.send("over tls");
    expect(await echoed).toBe("echo:over tls");
    ws.close();
    expect(handshakes[before]?.url).toBe("/rooms/tls");
  });

  it("refuses_an_upgrade_to_a_route_that_requires_auth", async () => {
    const before = handshakes.length;
    const ws = new WsClient(wssUrl("/private"), { rejectUnauthorized: false });
    const status = await new Promise<number>((resolve) => {
      ws.on("unexpected-response", (_req, res) => resolve(res.statusCode ?? 0));
      ws.on("open", () => resolve(101));
      ws.on("error", () => resolve(-1));
    });
    ws.terminate();
    expect(status).toBe(401);
    expect(handshakes.length).toBe(before);
  });
});

describe("an upgrade on a split route goes where the weights say", () => {
  // Backends are held sorted by name: a tunnel to the first one would reach a retired backend of weight 0
  // (or a canary's 10 %) on every upgrade, where `explain` and the split send none (or a tenth).
  const hits = { alpha: 0, beta: 0 };
  const servers: WebSocketServer[] = [];
  let gw4: TestGateway;

  beforeAll(async () => {
    const serve = async (name: keyof typeof hits) => {
      const port = await freePort();
      const s = new WebSocketServer({ host: "127.0.0.1", port });
      s.on("connection", (socket: WsSocket) => {
        hits[name]++;
        socket.close();
      });
      await new Promise<void>((r) => s.on("listening", () => r()));
      servers.push(s);
      return port;
    };
    const [a, b] = [await serve("alpha"), await serve("beta")];
    gw4 = await startTestGateway(
      gatewayConfig(
        [
          {
            name: "moved",
            match: { path: "/moved" },
            split: [
              { service: "alpha", weight: 0 },
              { service: "beta", weight: 100 },
            ],
            ...PUBLIC,
          },
        ],
        { alpha: { port: a }, beta: { port: b } },
      ),
    );
  });
  afterAll(async () => {
    await gw4.drain();
    for (const s of servers) await new Promise<void>((r) => s.close(() => r()));
  });

  it("never_opens_a_tunnel_to_a_backend_of_weight_0", async () => {
    for (let i = 0; i < 5; i++) {
      const ws = new WsClient(`${gw4.url.replace("http", "ws")}/moved`);
      await new Promise<void>((r) => ws.on("close", () => r()).on("error", () => r()));
    }
    expect(hits).toEqual({ alpha: 0, beta: 5 });
  });
});

describe("a tunnel ends one direction at a time", () => {
  // A raw WebSocket server that, once switched, writes what its path names and then half-closes (FIN):
  // "/tunnel/half" a short farewell, "/tunnel/bulk" 4 MiB; it keeps reading what the client sends after.
  const KEY = "dGhlIHNhbXBsZSBub25jZQ==";
  const ACCEPT = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="; // RFC 6455 §1.3's example for KEY
  const BULK = Buffer.alloc(4 * 1024 * 1024, "x");
  BULK.write("last", BULK.length - 4);
  const afterFin: Record<string, string> = {};
  let server: Server;
  let gw5: TestGateway;
  beforeAll(async () => {
    server = createServer({ allowHalfOpen: true }, (socket) => {
      let head = "";
      let path = "";
      socket.on("data", (c: Buffer) => {
        if (path !== "") return void (afterFin[path] += c.toString("latin1"));
        head += c.toString("latin1");
        if (!head.includes("\r\n\r\n")) return;
        path = head.split(" ")[1]!;
        afterFin[path] = "";
        socket.write(
          `HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\nsec-websocket-accept: ${ACCEPT}\r\n\r\n`,
        );
        socket.end(path === "/tunnel/bulk" ? BULK : "farewell");
      });
      socket.on("end", () => socket.end());
      socket.on("error", () => {});
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    gw5 = await startTestGateway(
      gatewayConfig([{ name: "tunnel", match: { path: "/tunnel/**" }, to: "chat", ...PUBLIC }], {
        chat: { port: (server.address() as AddressInfo).port },
      }),
    );
  });
  afterAll(async () => {
    await gw5.drain();
    await new Promise<void>((r) => server.close(() => r()));
  });

  /**
   * Upgrades `path`, reads the tunnel (pausing after each chunk when `slow`), and once the upstream's FIN
   * arrived sends `late` and half-closes. Resolves with the bytes after the 101's head.
   */
  function tunnel(path: string, slow: boolean, late: string): Promise<Buffer> {
    return new Promise((resolve) => {
      const s = createConnection({
        port: Number(new URL(gw5.url).port),
        host: "127.0.0.1",
        allowHalfOpen: true,
      });
      s.write(
        `GET ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n` +
          `Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: ${KEY}\r\n\r\n`,
      );
      const chunks: Buffer[] = [];
      s.on("data", (c: Buffer) => {
        chunks.push(c);
        if (!slow) return;
        s.pause();
        setTimeout(() => s.resume(), 2);
      });
      s.on("end", () => s.end(late));
      s.on("error", () => {});
      s.on("close", () => {
        const all = Buffer.concat(chunks);
        resolve(all.subarray(all.indexOf("\r\n\r\n") + 4));
      });
      setTimeout(() => s.destroy(), 8000);
    });
  }

  it.each([
    [
      "the_upstreams_fin_is_a_half_close_the_client_still_sends_and_the_upstream_reads_it",
      "/tunnel/half",
      false,
      Buffer.from("farewell"),
    ],
    [
      "after_4_MiB_and_the_upstreams_fin_a_slow_client_gets_every_byte_and_may_still_answer",
      "/tunnel/bulk",
      true,
      BULK,
    ],
  ])("%s", async (_claim, path, slow, expected) => {
    const got = await tunnel(path, slow, "client's last word");
    expect(got.length).toBe(expected.length);
    expect(got.equals(expected)).toBe(true);
    const deadline = Date.now() + 3000;
    while (afterFin[path] !== "client's last word" && Date.now() < deadline)
      await new Promise((r) => setTimeout(r, 20));
    expect(afterFin[path]).toBe("client's last word");
  });
});
