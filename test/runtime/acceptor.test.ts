/**
 * runtime/net/acceptor.ts on real sockets: one bound port whose connection stack is replaced without
 * closing the socket. New connections meet the new stack at once; the retired stack's connections finish
 * (HTTP/1: `Connection: close` on their next response; HTTP/2: GOAWAY) and are closed after the drain
 * time; a stack swapped in gets its HTTP/1 timeout checks started, and accepted sockets the options of the
 * stack's server.
 */
import http from "node:http";
import http2 from "node:http2";
import net, { type AddressInfo } from "node:net";
import { setTimeout as sleep } from "node:timers/promises";
import { afterEach, describe, expect, it } from "vitest";
import {
  createAcceptor,
  retireServers,
  type Acceptor,
  type ConnectionStack,
} from "../../runtime/net/acceptor.ts";

interface TestStack extends ConnectionStack {
  readonly label: string;
  readonly h1: http.Server;
}

/** An HTTP/1 stack answering its label; with `h2`, HTTP/2 (prior knowledge) instead. */
function stack(label: string, o: { headersTimeout?: number; h2?: boolean } = {}): TestStack {
  const h1 = http.createServer(
    { headersTimeout: o.headersTimeout ?? 60_000, requestTimeout: 0, connectionsCheckingInterval: 50 },
    (req, res) => {
      const delay = Number(new URL(req.url ?? "/", "http://x").searchParams.get("delay") ?? 0);
      setTimeout(() => res.end(label), delay);
    },
  );
  if (!o.h2)
    return {
      label,
      h1,
      server: h1,
      retire: () => retireServers([h1], []),
      closeIdle: () => h1.closeIdleConnections(),
      closeAll: () => h1.closeAllConnections(),
    };
  const sessions = new Set<http2.ServerHttp2Session>();
  const h2 = http2.createServer((_req, res) => setTimeout(() => res.end(label), 100));
  h2.on("session", (s: http2.ServerHttp2Session) => {
    sessions.add(s);
    s.on("close", () => sessions.delete(s));
  });
  return {
    label,
    h1,
    server: h2,
    retire: () => retireServers([], sessions),
    closeIdle: () => sessions.forEach((s) => s.close()),
    closeAll: () => sessions.forEach((s) => s.destroy()),
  };
}

const open: Acceptor<TestStack>[] = [];
afterEach(async () => {
  for (const a of open.splice(0)) {
    a.closeAll();
    await new Promise((r) => a.server.close(r));
  }
});

async function listening(first: TestStack): Promise<{ acceptor: Acceptor<TestStack>; port: number }> {
  const acceptor = createAcceptor(first);
  open.push(acceptor);
  await new Promise<void>((r) => acceptor.server.listen(0, "127.0.0.1", r));
  return { acceptor, port: (acceptor.server.address() as AddressInfo).port };
}

function get(
  port: number,
  path: string,
  agent: http.Agent | false = false,
): Promise<{ body: string; connection: string | undefined; localPort: number }> {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: "127.0.0.1", port, path, agent }, (res) => {
      let body = "";
      res.on("data", (c: Buffer) => (body += c.toString()));
      res.on("end", () =>
        resolve({ body, connection: res.headers.connection, localPort: req.socket!.localPort! }),
      );
    });
    req.on("error", reject);
  });
}

describe("an acceptor replaces its connection stack on the bound socket", () => {
  it("new_connections_meet_the_new_stack_at_once_on_the_same_port", async () => {
    const { acceptor, port } = await listening(stack("one"));
    expect((await get(port, "/")).body).toBe("one");
    acceptor.use(stack("two"), 5_000);
    expect(acceptor.stack.label).toBe("two");
    for (let i = 0; i < 5; i++) expect((await get(port, "/")).body).toBe("two");
  });

  it("a_kept_alive_connection_of_the_retired_stack_finishes_and_closes_after_its_next_response", async () => {
    const { acceptor, port } = await listening(stack("one"));
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    try {
      const inFlight = get(port, "/?delay=150", agent);
      await sleep(50);
      acceptor.use(stack("two"), 5_000);
      const first = await inFlight;
      expect(first).toMatchObject({ body: "one", connection: "keep-alive" }); // it started before the swap
      const second = await get(port, "/", agent);
      expect(second).toMatchObject({ body: "one", connection: "close", localPort: first.localPort });
      const third = await get(port, "/", agent);
      expect(third.body).toBe("two");
      expect(third.localPort).not.toBe(first.localPort);
    } finally {
      agent.destroy();
    }
  });

  it("closes_what_the_retired_stack_still_holds_after_the_drain_time", async () => {
    const { acceptor, port } = await listening(stack("one"));
    const idle = net.connect(port, "127.0.0.1");
    await new Promise((r) => idle.once("connect", r));
    const closed = new Promise((r) => idle.once("close", r));
    acceptor.use(stack("two"), 200);
    const started = Date.now();
    await closed;
    expect(Date.now() - started).toBeGreaterThanOrEqual(150);
    expect((await get(port, "/")).body).toBe("two");
  });

  it("sends_goaway_to_the_retired_stacks_http2_sessions_whose_open_streams_finish", async () => {
    const { acceptor, port } = await listening(stack("one", { h2: true }));
    const client = http2.connect(`http://127.0.0.1:${port}`);
    client.on("error", () => {});
    const goaway = new Promise((r) => client.once("goaway", r));
    const stream = client.request({ ":path": "/" });
    let body = "";
    stream.on("data", (c: Buffer) => (body += c.toString()));
    const ended = new Promise((r) => stream.on("end", r));
    await sleep(50); // the server has the stream (it answers after 100 ms)
    acceptor.use(stack("two", { h2: true }), 5_000);
    await goaway;
    await ended;
    expect(body).toBe("one");
    client.close();
  });

  it("starts_the_http1_timeout_checks_of_a_stack_swapped_in_after_listen", async () => {
    const { acceptor, port } = await listening(stack("one"));
    acceptor.use(stack("two", { headersTimeout: 300 }), 5_000);
    const socket = net.connect(port, "127.0.0.1");
    socket.write("GET / HTTP/1.1\r\nHost: x\r\n"); // the head never ends
    const started = Date.now();
    const text = await new Promise<string>((resolve) => {
      let t = "";
      socket.on("data", (c: Buffer) => (t += c.toString()));
      socket.on("close", () => resolve(t));
      socket.on("error", () => {});
    });
    expect(text).toMatch(/^HTTP\/1\.1 408 /);
    expect(Date.now() - started).toBeLessThan(2_000);
  });

  it("gives_accepted_sockets_the_options_of_the_stacks_server", async () => {
    const plainFront = net.createServer({ noDelay: false, allowHalfOpen: false });
    const h1 = stack("h1");
    const { acceptor } = await listening(h1);
    const options = (s: net.Server) => {
      const o = s as net.Server & { noDelay: boolean; allowHalfOpen: boolean };
      return [o.noDelay, o.allowHalfOpen];
    };
    expect(options(acceptor.server)).toEqual(options(h1.server)); // an HTTP server: half-open allowed
    acceptor.use({ ...stack("front"), server: plainFront }, 5_000);
    expect(options(acceptor.server)).toEqual([false, false]);
    plainFront.close();
  });
});
