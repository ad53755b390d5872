/**
 * Egress through the sidecar, with real sockets on 127.0.0.1: `CONNECT host:port` on the proxy port to a
 * declared external (a TCP echo server; a real HTTPS server reached by curl through the tunnel), deny by
 * default (403 with nothing connected), strict authorities (400), connect failures (502) and timeouts
 * (504), the per-external local TCP port with a binary exchange and a half-close, reload (tunnels to a
 * dropped external closed at once, local ports added and removed), drain, metrics and access lines.
 */
import { spawn, type ChildProcess } from "node:child_process";
import net, { type AddressInfo, type Socket } from "node:net";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { run, tempDir } from "../pki/support.ts";
import { freePort, request } from "../support/gateway.ts";
import {
  destroyClients,
  dial,
  egressSidecars,
  ended,
  external as ext,
  httpOutside,
  httpsOutside,
  readBytes,
  readToEnd,
  type EgressSidecars,
  type External,
  type HTTPSOutside,
} from "./outside.ts";
import { metricValue, until } from "./support.ts";

// ───────────────────────────── servers outside the mesh ─────────────────────────────

/**
 * A TCP server that echoes every byte and, on the client's FIN, writes `BYE` and ends its side; `RST!`
 * makes it reset the connection.
 */
interface EchoServer {
  readonly port: number;
  /** Connections accepted so far. */
  connections: number;
  /** FINs received from clients. */
  ends: number;
  readonly sockets: Set<Socket>;
  close(): Promise<void>;
}

const BYE = Buffer.from("BYE");

async function echoServer(): Promise<EchoServer> {
  const sockets = new Set<Socket>();
  const s: EchoServer = {
    port: 0,
    connections: 0,
    ends: 0,
    sockets,
    close: () =>
      new Promise<void>((r) => {
        for (const c of sockets) c.destroy();
        server.close(() => r());
      }),
  };
  const server = net.createServer({ allowHalfOpen: true }, (c) => {
    s.connections++;
    sockets.add(c);
    c.on("close", () => sockets.delete(c));
    c.on("error", () => c.destroy());
    c.on("data", (d: Buffer) => (d.toString() === "RST!" ? c.resetAndDestroy() : c.write(d)));
    c.on("end", () => {
      s.ends++;
      c.end(BYE);
    });
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  (s as { port: number }).port = (server.address() as AddressInfo).port;
  return s;
}

/**
 * A listening socket whose accept queue is full (a process that stopped accepting): the kernel drops
 * further SYNs, so a connect to it hangs until the caller's timeout — a blackhole that stays on this
 * machine. The child blocks its event loop (Atomics.wait) so that it never accepts; two connections fill
 * its backlog of 1.
 */
async function blackhole(): Promise<{ port: number; close: () => void }> {
  const child: ChildProcess = spawn(
    process.execPath,
    [
      "-e",
      `const s = require("node:net").createServer();
       s.listen({ port: 0, host: "127.0.0.1", backlog: 1 }, () => {
         process.stdout.write(s.address().port + "\\n");
         const until = Date.now() + 120000; // never accepts; gone after 2 minutes if nobody kills it
         setTimeout(() => { while (Date.now() < until) Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 10000); process.exit(0); }, 20);
       });`,
    ],
    { stdio: ["ignore", "pipe", "inherit"] },
  );
  const port = await new Promise<number>((r) =>
    child.stdout!.once("data", (d: Buffer) => r(Number(`${d}`.trim()))),
  );
  await new Promise((r) => setTimeout(r, 150));
  const fillers: Socket[] = [];
  for (let i = 0; i < 3; i++) {
    const c = net.connect(port, "127.0.0.1");
    c.on("error", () => {});
    fillers.push(c);
  }
  // The third filler stays in SYN_SENT: the queue is full.
  const third = await new Promise<string>((r) => {
    fillers[2]!.once("connect", () => r("connected"));
    setTimeout(() => r("pending"), 300);
  });
  if (third !== "pending") throw new Error("the blackhole's backlog did not fill");
  return {
    port,
    close: () => {
      for (const c of fillers) c.destroy();
      child.kill();
    },
  };
}

// ───────────────────────────── clients ─────────────────────────────

interface ConnectReply {
  status: number;
  headers: Record<string, string>;
  body: string;
  socket: Socket;
  /** Bytes after the 200's head (already relayed from the external). */
  rest: Buffer;
}

/** Sends `CONNECT authority HTTP/1.1` (and `after` in the same write) and reads the answer's head. */
function connectTo(port: number, authority: string, after: Buffer = Buffer.alloc(0)): Promise<ConnectReply> {
  return new Promise((resolve, reject) => {
    const socket = dial(port);
    let buf = Buffer.alloc(0);
    let settled = false;
    const onData = (chunk: Buffer) => {
      buf = Buffer.concat([buf, chunk]);
      const end = buf.indexOf("\r\n\r\n");
      if (end < 0) return;
      socket.off("data", onData);
      const [line, ...fields] = buf.subarray(0, end).toString("latin1").split("\r\n");
      const status = Number(line!.split(" ")[1]);
      const headers = Object.fromEntries(
        fields.map((f) => [f.slice(0, f.indexOf(":")).toLowerCase(), f.slice(f.indexOf(":") + 1).trim()]),
      );
      const rest = buf.subarray(end + 4);
      if (status === 200) {
        settled = true;
        socket.pause();
        return resolve({ status, headers, body: "", socket, rest });
      }
      const chunks: Buffer[] = [rest];
      socket.on("data", (c: Buffer) => chunks.push(c));
      socket.on("end", () => {
        settled = true;
        resolve({ status, headers, body: Buffer.concat(chunks).toString(), socket, rest: Buffer.alloc(0) });
      });
    };
    socket.on("data", onData);
    socket.on("error", (err) => {
      if (!settled) reject(err);
    });
    socket.on("close", () => {
      if (!settled) reject(new Error(`CONNECT ${authority}: closed without an answer`));
    });
    socket.write(Buffer.concat([Buffer.from(`CONNECT ${authority} HTTP/1.1\r\nhost: x\r\n\r\n`), after]));
  });
}

/** `bytes` with every byte value, so that the relay is proven binary-safe. */
const binary = (n: number, seed = 0) =>
  Buffer.from(Array.from({ length: n }, (_, i) => (i * 7 + seed) & 0xff));

const errorOf = (r: ConnectReply) => JSON.parse(r.body) as { error: { code: string; message: string } };

// ───────────────────────────── the sidecar ─────────────────────────────

let tmp: Awaited<ReturnType<typeof tempDir>>;
let sidecars: EgressSidecars;
let echo: EchoServer;
/** Never declared under its own address and port: a CONNECT that reached it would show here. */
let trap: EchoServer;
let web: HTTPSOutside;
let hole: Awaited<ReturnType<typeof blackhole>>;
/** A port nothing listens on. */
let refusedPort: number;

beforeAll(async () => {
  tmp = await tempDir("sidecar-egress");
  sidecars = await egressSidecars(tmp.dir);
  echo = await echoServer();
  trap = await echoServer();
  web = await httpsOutside(tmp.dir);
  hole = await blackhole();
  refusedPort = await freePort();
}, 30_000);
afterEach(async () => {
  destroyClients();
  await sidecars?.stopAll();
});
afterAll(async () => {
  hole?.close();
  await echo?.close();
  await trap?.close();
  await web?.close();
  await tmp?.cleanup();
});

/** The externals most tests declare. */
const declared = (): External[] => [
  ext("echo", "127.0.0.1", echo.port, { localPort: 15201 }),
  ext("outside", "localhost", web.port),
  ext("refused", "127.0.0.1", refusedPort, { localPort: 15202 }),
  ext("slow", "127.0.0.1", hole.port, { connectTimeoutMs: 200 }),
];

const start = (externals: External[] = declared(), o: { accessLog?: boolean } = {}) =>
  sidecars.start(externals, o);

// ───────────────────────────── tests ─────────────────────────────

describe("CONNECT to a declared external", () => {
  it("relays_bytes_both_ways_to_a_declared_tcp_external_including_bytes_sent_with_the_connect", async () => {
    const { sidecar } = await start();
    const first = Buffer.from("sent-with-the-CONNECT|");
    const r = await connectTo(sidecar.ports.outbound, `127.0.0.1:${echo.port}`, first);
    expect(r.status).toBe(200);
    const back = await readBytes(r.socket, first.length, r.rest);
    expect(back.equals(first)).toBe(true);
    const payload = binary(64 * 1024);
    r.socket.write(payload);
    expect((await readBytes(r.socket, payload.length)).equals(payload)).toBe(true);
    r.socket.end();
    expect((await readToEnd(r.socket)).equals(BYE)).toBe(true);
  });

  it("curl_through_the_proxy_reaches_a_real_https_server_with_tls_end_to_end", async () => {
    const { sidecar } = await start();
    const { stdout } = await run(
      "curl",
      [
        "-sS",
        "--max-time",
        "10",
        "--noproxy",
        "",
        "--proxytunnel",
        "--proxy",
        `http://127.0.0.1:${sidecar.ports.outbound}`,
        "--cacert",
        web.caFile,
        `https://localhost:${web.port}/`,
      ],
      { env: { PATH: process.env.PATH ?? "/usr/bin:/bin" } },
    );
    expect(stdout).toBe("hello from outside the mesh\n");
  });

  it.each([
    ["matches_a_dns_name_case_insensitively", (p: number) => `LocalHost:${p}`],
    ["matches_a_dns_name_with_a_trailing_dot", (p: number) => `localhost.:${p}`],
  ])("%s", async (_name, authority) => {
    const { sidecar } = await start();
    const r = await connectTo(sidecar.ports.outbound, authority(web.port));
    expect(r.status).toBe(200);
    r.socket.destroy();
  });

  it("matches_an_ipv6_literal_by_its_canonical_form", async () => {
    const v6 = net.createServer((c) => c.end("v6"));
    await new Promise<void>((r) => v6.listen(0, "::1", r));
    const port = (v6.address() as AddressInfo).port;
    try {
      const { sidecar } = await start([ext("v6", "::1", port)]);
      const r = await connectTo(sidecar.ports.outbound, `[0:0:0:0:0:0:0:1]:${port}`);
      expect(r.status).toBe(200);
      expect((await readToEnd(r.socket, r.rest)).toString()).toBe("v6");
    } finally {
      v6.close();
    }
  });
});

describe("CONNECT deny by default", () => {
  const rows: [string, () => string][] = [
    // 127.0.0.1:<echo> is declared; the same address by another name is not (names compare as written).
    ["denies_another_name_for_a_declared_address", () => `localhost:${echo.port}`],
    ["denies_a_declared_host_with_another_port", () => `127.0.0.1:${trap.port}`],
    ["denies_a_mesh_service_name", () => `orders:${trap.port}`],
    ["denies_a_mesh_service_name_on_its_port", () => "orders:8080"],
    ["denies_an_undeclared_ipv6_literal", () => `[::1]:${trap.port}`],
    ["denies_the_ipv4_mapped_ipv6_form_of_a_declared_address", () => `[::ffff:127.0.0.1]:${echo.port}`],
    ["denies_an_undeclared_host", () => "api.example.com:443"],
  ];
  it.each(rows)("%s", async (_name, authority) => {
    const { sidecar, metrics } = await start();
    const before = [echo.connections, trap.connections, web.connections];
    const r = await connectTo(sidecar.ports.outbound, authority());
    expect(r.status).toBe(403);
    expect(r.headers["x-meshgate-error"]).toBe("egress_denied");
    const { error } = errorOf(r);
    expect(error.code).toBe("egress_denied");
    expect(error.message).toContain("declare it under `external` and allow this service");
    // Nothing was connected: no server saw a connection.
    await new Promise((res) => setTimeout(res, 50));
    expect([echo.connections, trap.connections, web.connections]).toEqual(before);
    expect(
      metricValue(await metrics(), "meshgate_sidecar_errors_total", {
        direction: "outbound",
        code: "egress_denied",
      }),
    ).toBe(1);
  });
});

describe("CONNECT authorities", () => {
  const rows: [string, (p: number) => string][] = [
    ["refuses_a_missing_port", () => "127.0.0.1"],
    ["refuses_an_empty_port", () => "127.0.0.1:"],
    ["refuses_port_0", () => "127.0.0.1:0"],
    ["refuses_port_70000", () => "127.0.0.1:70000"],
    ["refuses_a_signed_port", (p) => `127.0.0.1:+${p}`],
    ["refuses_userinfo", (p) => `u@127.0.0.1:${p}`],
    ["refuses_a_path", (p) => `127.0.0.1:${p}/x`],
    ["refuses_a_query", (p) => `127.0.0.1:${p}?x`],
    ["refuses_a_fragment_node_parser_rejects", (p) => `127.0.0.1:${p}#x`],
    ["refuses_an_absolute_uri", (p) => `http://127.0.0.1:${p}/`],
    ["refuses_an_empty_host", (p) => `:${p}`],
    ["refuses_an_unclosed_ipv6_bracket", (p) => `[::1:${p}`],
    ["refuses_ipv6_without_a_port", () => "[::1]"],
    ["refuses_an_unbracketed_ipv6", (p) => `::1:${p}`],
    ["refuses_an_ipv6_zone_id", (p) => `[fe80::1%25eth0]:${p}`],
    ["refuses_a_short_ipv4_form", (p) => `127.1:${p}`],
    ["refuses_a_label_with_a_leading_hyphen", (p) => `-bad.example:${p}`],
    ["refuses_an_asterisk", () => "*"],
  ];
  it.each(rows)("%s", async (_name, authority) => {
    const { sidecar } = await start();
    const before = echo.connections;
    const r = await connectTo(sidecar.ports.outbound, authority(echo.port));
    expect(r.status).toBe(400);
    expect(r.headers["x-meshgate-error"]).toBe("egress_bad_authority");
    expect(errorOf(r).error.code).toBe("egress_bad_authority");
    expect(echo.connections).toBe(before);
  });
});

describe("CONNECT refusals in the access log", () => {
  // A proxy URL with credentials (HTTPS_PROXY=http://u:p@…) or a target with userinfo: the line names the
  // target the app asked for, never the password it wrote.
  it.each<[string, (p: number) => string, (p: number) => string]>([
    [
      "logs_a_userinfo_target_without_its_password",
      (p) => `app:egress-pw-1@127.0.0.1:${p}`,
      (p) => `127.0.0.1:${p}`,
    ],
    [
      "logs_a_password_holding_an_at_sign_without_it",
      (p) => `app:egress@pw-2@127.0.0.1:${p}`,
      (p) => `127.0.0.1:${p}`,
    ],
    [
      "logs_a_password_longer_than_the_shown_target_without_it",
      (p) => `app:${"egress-pw-3".repeat(30)}@127.0.0.1:${p}`,
      (p) => `127.0.0.1:${p}`,
    ],
  ])("%s", async (_name, authority, logged) => {
    const { sidecar } = await start();
    const r = await connectTo(sidecar.ports.outbound, authority(echo.port));
    expect(r.status).toBe(400);
    await until(() => sidecar.logs.some((l) => l.event === "egress"));
    expect(sidecar.logs.find((l) => l.event === "egress")).toMatchObject({
      via: "connect",
      target: logged(echo.port),
      outcome: "denied_egress_bad_authority",
    });
    expect(JSON.stringify(sidecar.logs)).not.toMatch(/egress-pw|egress@pw/);
  });
});

describe("CONNECT connect failures", () => {
  it("answers_502_egress_connect_failed_when_the_external_refuses", async () => {
    const { sidecar } = await start();
    const r = await connectTo(sidecar.ports.outbound, `127.0.0.1:${refusedPort}`);
    expect(r.status).toBe(502);
    expect(r.headers["x-meshgate-error"]).toBe("egress_connect_failed");
    expect(errorOf(r).error.message).toContain("ECONNREFUSED");
  });

  it("answers_504_egress_connect_timeout_after_connect_timeout_ms_to_a_blackhole", async () => {
    const { sidecar } = await start();
    const t0 = performance.now();
    const r = await connectTo(sidecar.ports.outbound, `127.0.0.1:${hole.port}`);
    const ms = performance.now() - t0;
    expect(r.status).toBe(504);
    expect(r.headers["x-meshgate-error"]).toBe("egress_connect_timeout");
    expect(ms).toBeGreaterThanOrEqual(190);
    expect(ms).toBeLessThan(2000);
  });
});

describe("external local ports", () => {
  it("relays_a_binary_exchange_and_passes_a_half_close_on_with_the_reply_still_arriving", async () => {
    const { sidecar } = await start();
    const port = sidecar.ports.external.echo!;
    const ends = echo.ends;
    const c = dial(port);
    await new Promise((r) => c.once("connect", r));
    const payload = binary(200_000, 3);
    c.end(payload); // the request, then FIN: the echo server answers after it saw the end
    const reply = await readToEnd(c);
    expect(reply.subarray(0, payload.length).equals(payload)).toBe(true);
    expect(reply.subarray(payload.length).equals(BYE)).toBe(true);
    expect(echo.ends).toBe(ends + 1);
    // Both directions ended: the connection closes whole.
    await new Promise((r) => (c.closed ? r(null) : c.once("close", r)));
  });

  it("closes_the_apps_connection_when_the_external_refuses", async () => {
    const { sidecar, metrics } = await start();
    const c = dial(sidecar.ports.external.refused!);
    const got = await readToEnd(c).catch((e: NodeJS.ErrnoException) => e.code ?? "error");
    expect(got === "ECONNRESET" || (Buffer.isBuffer(got) && got.length === 0)).toBe(true);
    await until(
      async () =>
        metricValue(await metrics(), "meshgate_egress_connections_total", {
          external: "refused",
          outcome: "failed",
        }) === 1,
      3000,
      "the failed connection counted",
    );
  });

  it("opens_no_port_for_an_external_without_local_port", async () => {
    const { sidecar } = await start();
    expect(Object.keys(sidecar.ports.external).sort()).toEqual(["echo", "refused"]);
  });
});

describe("connection limits (maxConnections)", () => {
  const limited = () => [ext("echo", "127.0.0.1", echo.port, { localPort: 15201, maxConnections: 2 })];

  it("refuses_a_connect_past_the_limit_with_503_and_takes_one_again_when_a_tunnel_closes", async () => {
    const e = await start(limited());
    const before = echo.connections;
    const [a, b] = [
      await connectTo(e.sidecar.ports.outbound, `127.0.0.1:${echo.port}`),
      await connectTo(e.sidecar.ports.outbound, `127.0.0.1:${echo.port}`),
    ];
    expect([a.status, b.status]).toEqual([200, 200]);
    const third = await connectTo(e.sidecar.ports.outbound, `127.0.0.1:${echo.port}`);
    expect(third.status).toBe(503);
    expect(errorOf(third).error.code).toBe("egress_overflow");
    expect(errorOf(third).error.message).toContain("maxConnections (2)");
    expect(echo.connections - before).toBe(2); // the refused one was never connected
    a.socket.end();
    await readToEnd(a.socket);
    await until(
      async () => (await connectTo(e.sidecar.ports.outbound, `127.0.0.1:${echo.port}`)).status === 200,
    );
    expect(
      metricValue(await e.metrics(), "meshgate_egress_connections_total", {
        external: "echo",
        outcome: "overflow",
      }),
    ).toBe(1);
  });

  it("counts_local_port_relays_with_tunnels_and_closes_one_past_the_limit_unconnected", async () => {
    const e = await start(limited());
    const before = echo.connections;
    const tunnel = await connectTo(e.sidecar.ports.outbound, `127.0.0.1:${echo.port}`);
    expect(tunnel.status).toBe(200);
    const relay = dial(e.sidecar.ports.external.echo!);
    relay.write("x");
    expect((await readBytes(relay, 1)).toString()).toBe("x");
    const refused = dial(e.sidecar.ports.external.echo!);
    refused.write("y");
    expect((await readToEnd(refused)).length).toBe(0); // closed with nothing relayed
    expect(echo.connections - before).toBe(2);
    expect(e.sidecar.logs).toContainEqual(
      expect.objectContaining({
        event: "egress",
        external: "echo",
        via: "local",
        outcome: "denied_egress_overflow",
      }),
    );
  });

  it("bounds_the_pooled_plain_http_connections_to_it", async () => {
    const http1 = await httpOutside();
    try {
      const e = await start([ext("plain", "127.0.0.1", http1.port, { maxConnections: 1 })]);
      let open = 0;
      let most = 0;
      http1.handler = (_req, res) => {
        most = Math.max(most, ++open);
        setTimeout(() => {
          open--;
          res.end("slow");
        }, 50);
      };
      const statuses = await Promise.all(
        Array.from({ length: 4 }, () =>
          // Absolute form, as an HTTP_PROXY client sends it.
          request(`http://127.0.0.1:${e.sidecar.ports.outbound}http://127.0.0.1:${http1.port}/x`, {
            headers: { host: `127.0.0.1:${http1.port}` },
          }).then((r) => r.status),
        ),
      );
      expect(statuses).toEqual([200, 200, 200, 200]);
      expect(most).toBe(1);
      expect(http1.connections).toBe(1);
    } finally {
      await http1.close();
    }
  });
});

describe("reload", () => {
  it("closes_tunnels_to_a_dropped_external_at_once_and_follows_its_local_port", async () => {
    const e = await start([ext("echo", "127.0.0.1", echo.port, { localPort: 15201 })]);
    const { sidecar } = e;
    const viaConnect = await connectTo(sidecar.ports.outbound, `127.0.0.1:${echo.port}`);
    expect(viaConnect.status).toBe(200);
    const oldLocal = sidecar.ports.external.echo!;
    const viaLocal = dial(oldLocal);
    viaLocal.write("ping");
    expect((await readBytes(viaLocal, 4)).toString()).toBe("ping");

    // Dropped: both tunnels close now, the next CONNECT is denied, the local port is gone.
    const t0 = performance.now();
    expect(await sidecar.reload(JSON.stringify(e.configWith([])))).toMatchObject({ ok: true, changed: true });
    await Promise.all([ended(viaConnect.socket), ended(viaLocal)]);
    expect(performance.now() - t0).toBeLessThan(1000);
    expect((await connectTo(sidecar.ports.outbound, `127.0.0.1:${echo.port}`)).status).toBe(403);
    expect(sidecar.ports.external.echo).toBeUndefined();
    await expect(
      new Promise((res, rej) => net.connect(oldLocal, "127.0.0.1").once("connect", res).once("error", rej)),
    ).rejects.toThrow(/ECONNREFUSED/);
    expect(sidecar.logs.find((l) => l.event === "egress_tunnels_closed")).toMatchObject({
      reason: "reload",
      external: ["echo"],
    });
    expect(
      sidecar.logs.filter((l) => l.event === "egress" && l.outcome === "removed_by_reload").map((l) => l.via),
    ).toEqual(expect.arrayContaining(["connect", "local"]));

    // Added back, on a port of the config: CONNECT and the local port both relay again.
    const port = await freePort();
    expect(
      await sidecar.reload(
        JSON.stringify(e.configWith([ext("echo", "127.0.0.1", echo.port, { localPort: port })])),
      ),
    ).toMatchObject({ ok: true, changed: true });
    expect(sidecar.ports.external.echo).toBe(port);
    const again = await connectTo(sidecar.ports.outbound, `127.0.0.1:${echo.port}`);
    expect(again.status).toBe(200);
    const local = dial(port);
    local.write("pong");
    expect((await readBytes(local, 4)).toString()).toBe("pong");
    expect(
      sidecar.logs.find((l) => l.event === "external_ports_changed" && (l.added as string[]).length),
    ).toMatchObject({ added: ["echo"], external: { echo: port } });

    // Same name, another port: open tunnels to the old target close; the local port now reaches the new one.
    expect(
      await sidecar.reload(
        JSON.stringify(e.configWith([ext("echo", "127.0.0.1", trap.port, { localPort: port })])),
      ),
    ).toMatchObject({ ok: true, changed: true });
    await Promise.all([ended(again.socket), ended(local)]);
    const trapped = trap.connections;
    const moved = dial(port);
    moved.write("x");
    await readBytes(moved, 1);
    expect(trap.connections).toBe(trapped + 1);
    moved.destroy();

    // A local port someone else holds refuses the whole reload, naming the field.
    const squatter = net.createServer().listen(0, "127.0.0.1");
    await new Promise((r) => squatter.once("listening", r));
    const taken = (squatter.address() as AddressInfo).port;
    expect(
      await sidecar.reload(
        JSON.stringify(e.configWith([ext("echo", "127.0.0.1", trap.port, { localPort: taken })])),
      ),
    ).toMatchObject({
      ok: false,
      code: "E_RT_CONFIG_INVALID",
      error: expect.stringContaining("outbound.external.echo.localPort"),
    });
    squatter.close();
    expect(sidecar.ports.external.echo).toBe(port);
  });

  it("keeps_tunnels_whose_external_the_new_config_still_declares", async () => {
    const e = await start([ext("echo", "127.0.0.1", echo.port)]);
    const t = await connectTo(e.sidecar.ports.outbound, `127.0.0.1:${echo.port}`);
    expect(t.status).toBe(200);
    // Another timeout and a new external: the tunnel to echo goes on.
    const next = [
      ext("echo", "127.0.0.1", echo.port, { connectTimeoutMs: 5000 }),
      ext("more", "localhost", web.port),
    ];
    expect(await e.sidecar.reload(JSON.stringify(e.configWith(next)))).toMatchObject({
      ok: true,
      changed: true,
    });
    t.socket.write("still");
    expect((await readBytes(t.socket, 5, t.rest)).toString()).toBe("still");
    t.socket.destroy();
  });
});

describe("tunnel failures", () => {
  it.each([
    ["closes_the_apps_side_when_the_external_resets", "external_reset"],
    ["closes_the_externals_side_when_the_app_resets", "client_reset"],
  ])("%s", async (_name, outcome) => {
    const { sidecar } = await start();
    const t = await connectTo(sidecar.ports.outbound, `127.0.0.1:${echo.port}`);
    t.socket.write("ping");
    await readBytes(t.socket, 4, t.rest);
    const [server] = [...echo.sockets].slice(-1);
    const serverClosed = new Promise((r) => server!.once("close", r));
    if (outcome === "external_reset") t.socket.write("RST!");
    else t.socket.resetAndDestroy();
    await Promise.all([ended(t.socket), serverClosed]);
    await until(() => sidecar.logs.some((l) => l.event === "egress" && l.via === "connect"));
    expect(sidecar.logs.find((l) => l.event === "egress")).toMatchObject({ outcome });
  });
});

describe("drain", () => {
  it("ends_open_tunnels_like_websocket_tunnels_and_logs_them_drained", async () => {
    const e = await start();
    const t = await connectTo(e.sidecar.ports.outbound, `127.0.0.1:${echo.port}`);
    const local = dial(e.sidecar.ports.external.echo!);
    local.write("a");
    await readBytes(local, 1);
    await e.sidecar.drain();
    await Promise.all([ended(t.socket), ended(local)]);
    await until(
      () => e.sidecar.logs.filter((l) => l.event === "egress" && l.outcome === "drained").length === 2,
    );
  });
});

describe("metrics and access lines", () => {
  it("counts_opened_failed_bytes_and_active_tunnels_and_logs_one_line_per_tunnel_without_payload", async () => {
    const { sidecar, metrics } = await start();
    const marker = Buffer.from("PAYLOAD-MARKER-never-logged-0123456789");
    const t = await connectTo(sidecar.ports.outbound, `127.0.0.1:${echo.port}`);
    t.socket.write(marker);
    await readBytes(t.socket, marker.length, t.rest);
    const local = dial(sidecar.ports.external.echo!);
    local.write(binary(1000));
    await readBytes(local, 1000);
    let text = await metrics();
    expect(metricValue(text, "meshgate_egress_tunnels_active", { proxy: "sidecar", external: "echo" })).toBe(
      2,
    );

    // Half-closes from the app: the echo server answers BYE to each, then both tunnels end.
    t.socket.end();
    local.end();
    await Promise.all([readToEnd(t.socket), readToEnd(local)]);
    await Promise.all([ended(t.socket), ended(local)]);
    await connectTo(sidecar.ports.outbound, `127.0.0.1:${refusedPort}`); // 502
    await connectTo(sidecar.ports.outbound, `127.0.0.1:${trap.port}`); // 403
    await until(
      async () => metricValue(await metrics(), "meshgate_egress_tunnels_active", { external: "echo" }) === 0,
      3000,
      "no tunnel active",
    );
    text = await metrics();
    const m = (name: string, labels: Record<string, string>) =>
      metricValue(text, `meshgate_${name}`, { proxy: "sidecar", ...labels });
    expect(m("egress_connections_total", { external: "echo", outcome: "opened" })).toBe(2);
    expect(m("egress_connections_total", { external: "echo", outcome: "failed" })).toBe(0);
    expect(m("egress_connections_total", { external: "refused", outcome: "failed" })).toBe(1);
    expect(m("egress_bytes_total", { external: "echo", direction: "sent" })).toBe(marker.length + 1000);
    expect(m("egress_bytes_total", { external: "echo", direction: "received" })).toBe(
      marker.length + 1000 + 2 * BYE.length,
    );
    expect(m("sidecar_errors_total", { direction: "outbound", code: "egress_connect_failed" })).toBe(1);
    expect(m("sidecar_errors_total", { direction: "outbound", code: "egress_denied" })).toBe(1);
    // Denied targets are no label value: only declared externals have series.
    expect(text).not.toContain(`external="127.0.0.1`);

    await until(() => sidecar.logs.filter((l) => l.event === "egress").length === 4);
    const lines = sidecar.logs.filter((l) => l.event === "egress");
    expect(lines.find((l) => l.via === "connect" && l.external === "echo")).toMatchObject({
      proxy: "sidecar",
      service: "web",
      external: "echo",
      target: `127.0.0.1:${echo.port}`,
      via: "connect",
      status: 200,
      bytesSent: marker.length,
      bytesReceived: marker.length + BYE.length,
      durationMs: expect.any(Number),
      outcome: "closed",
    });
    expect(lines.find((l) => l.via === "local")).toMatchObject({
      external: "echo",
      via: "local",
      bytesSent: 1000,
      bytesReceived: 1000 + BYE.length,
      outcome: "closed",
    });
    expect(lines.find((l) => l.external === "refused")).toMatchObject({
      status: 502,
      outcome: "connect_failed",
      bytesSent: 0,
    });
    expect(lines.find((l) => l.outcome === "denied_egress_denied")).toMatchObject({
      target: `127.0.0.1:${trap.port}`,
      status: 403,
    });
    expect(sidecar.rawLog()).not.toContain(marker.toString());
  });

  it("writes_no_egress_line_with_access_logs_off_and_still_counts", async () => {
    const { sidecar, metrics } = await start(declared(), { accessLog: false });
    const t = await connectTo(sidecar.ports.outbound, `127.0.0.1:${echo.port}`);
    t.socket.destroy();
    await until(
      async () => metricValue(await metrics(), "meshgate_egress_tunnels_active", { external: "echo" }) === 0,
      3000,
      "the tunnel closed",
    );
    expect(metricValue(await metrics(), "meshgate_egress_connections_total", { outcome: "opened" })).toBe(1);
    expect(sidecar.logs.filter((l) => l.event === "egress")).toEqual([]);
  });
});
