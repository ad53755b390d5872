/**
 * Resilience against real upstream sockets: retries only when safe and inside the budget, per-try
 * timeouts, outlier ejection, the circuit breaker, active health checks and mirroring.
 */
import http from "node:http";
import http2 from "node:http2";
import type { AddressInfo } from "node:net";
import { setTimeout as sleep } from "node:timers/promises";
import { afterEach, describe, expect, it } from "vitest";
import {
  freePort,
  gatewayConfig,
  request,
  startTestGateway,
  startUpstream,
  type Endpoints,
  type TestGateway,
  type Upstream,
} from "../support/gateway.ts";
import { startRawUpstream, type RawUpstream, type Reply } from "../support/raw-upstream.ts";

const PUBLIC = { public: true, rateLimit: { requests: 100000, per: "1s" } };

const cleanup: (() => Promise<void>)[] = [];
afterEach(async () => {
  await Promise.all(cleanup.splice(0).map((f) => f()));
});

async function upstream(handler?: Parameters<typeof startUpstream>[0]): Promise<Upstream> {
  const u = await startUpstream(handler);
  cleanup.push(() => u.close());
  return u;
}

const answer = (status: number, body = String(status)) =>
  upstream((_req, res) => {
    res.writeHead(status, { "content-type": "text/plain", "content-length": Buffer.byteLength(body) });
    res.end(body);
  });

async function gateway(
  routes: Record<string, unknown>[],
  upstreams: Record<string, Endpoints>,
  services: Record<string, Record<string, unknown>> = {},
): Promise<TestGateway> {
  const svc = Object.fromEntries(
    Object.keys(upstreams).map((n) => [
      n,
      { image: `r/${n}:1`, port: 8080, allow: [{ from: ["gateway"] }], ...services[n] },
    ]),
  );
  const gw = await startTestGateway(gatewayConfig(routes, upstreams, {}, svc));
  cleanup.push(() => gw.drain());
  return gw;
}

const metric = async (gw: TestGateway, pattern: RegExp): Promise<number> => {
  const m = pattern.exec(await (await fetch(`${gw.adminUrl}/metrics`)).text());
  return m ? Number(m[1]) : 0;
};

/** The promise's value, or null when it has not settled within `ms` (its timer cleared either way). */
async function within<T>(p: Promise<T>, ms: number): Promise<T | null> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([p, new Promise<null>((r) => (timer = setTimeout(() => r(null), ms)))]);
  } finally {
    clearTimeout(timer);
  }
}

async function rawUpstream(reply: Reply): Promise<RawUpstream> {
  const u = await startRawUpstream(reply);
  cleanup.push(() => u.close());
  return u;
}

/** Errors thrown from an event while `f` runs (and a little after): an unheard 'error' ends the process. */
async function uncaught(f: () => Promise<unknown>, settleMs = 100): Promise<unknown[]> {
  const seen: unknown[] = [];
  const onUncaught = (e: unknown) => seen.push(e);
  process.on("uncaughtException", onUncaught);
  try {
    await f();
    await sleep(settleMs);
  } finally {
    process.removeListener("uncaughtException", onUncaught);
  }
  return seen;
}

/** A 503 whose body (100 bytes announced) the upstream cuts after 7; 200 "ok" to the rest. */
const cutsA503Body = (): Reply => (conn, req) => {
  if (req.startsWith("GET /r")) {
    conn.socket.write("HTTP/1.1 503 Service Unavailable\r\ncontent-length: 100\r\n\r\npartial");
    setTimeout(() => conn.socket.destroy(), 20);
  } else conn.socket.write("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok");
};

/** An h2c upstream answering `answer(path)`; its sessions are destroyed on cleanup. */
async function h2Upstream(answer: (stream: http2.ServerHttp2Stream, path: string) => void) {
  const server = http2.createServer();
  const sessions = new Set<http2.ServerHttp2Session>();
  server.on("session", (s) => {
    sessions.add(s);
    s.once("close", () => sessions.delete(s));
  });
  server.on("stream", (stream, headers) => {
    stream.on("error", () => {});
    answer(stream, String(headers[":path"]));
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  cleanup.push(async () => {
    for (const s of sessions) s.destroy();
    await new Promise((r) => server.close(r));
  });
  return { port: (server.address() as AddressInfo).port };
}

/** Polls `check` every 50 ms until it holds; fails after `ms`. */
async function until(check: () => boolean | Promise<boolean>, ms = 10_000): Promise<void> {
  for (const end = Date.now() + ms; !(await check()); await sleep(50))
    if (Date.now() > end) throw new Error(`not met within ${ms} ms`);
}

describe("retries", () => {
  it("survives_a_retryable_503_whose_body_is_cut_and_answers_from_the_retry", async () => {
    const bad = await rawUpstream(cutsA503Body());
    const good = await answer(200, "ok");
    const gw = await gateway(
      [{ name: "r", match: { path: "/r" }, to: "app", ...PUBLIC, retries: { attempts: 2, on: ["503"] } }],
      { app: [bad, good] },
      { app: { loadBalancer: "round-robin" } },
    );
    const statuses: number[] = [];
    const thrown = await uncaught(async () => {
      for (let i = 0; i < 4; i++) statuses.push((await request(`${gw.url}/r`)).status);
    });
    expect(thrown).toEqual([]);
    expect(statuses).toEqual([200, 200, 200, 200]);
    expect(bad.requests.length).toBeGreaterThan(0);
  });

  it("ends_within_the_route_timeout_while_a_retryable_503_body_trickles", async () => {
    // The 503's body keeps coming, a byte every 100 ms, for 5 s: draining it must not outlast the route.
    const timers: NodeJS.Timeout[] = [];
    cleanup.push(async () => timers.forEach(clearInterval));
    const up = await rawUpstream((conn) => {
      conn.socket.write("HTTP/1.1 503 Service Unavailable\r\ntransfer-encoding: chunked\r\n\r\n");
      const t = setInterval(() => conn.socket.destroyed || conn.socket.write("1\r\nx\r\n"), 100);
      timers.push(t);
      setTimeout(() => clearInterval(t), 5000);
    });
    const gw = await gateway(
      [
        {
          name: "r",
          match: { path: "/r" },
          to: "app",
          ...PUBLIC,
          timeout: "1s",
          retries: { attempts: 1, perTryTimeout: "500ms", on: ["503"] },
        },
      ],
      { app: up },
    );
    const t = performance.now();
    const r = await request(`${gw.url}/r`);
    expect(performance.now() - t).toBeLessThan(1800);
    expect(r.status).toBe(504);
    // The drained connection was given up, not left open.
    await until(() => up.conns.every((c) => c.closed));
  });

  it("gives_up_a_retryable_503_body_past_64_kib_and_retries_at_once", async () => {
    // A 503 announcing 8 MiB and sending them slowly: the retry must not wait for the whole body.
    const big = Buffer.alloc(256 * 1024, 0x61);
    const bad = await rawUpstream((conn) => {
      conn.socket.write(`HTTP/1.1 503 Service Unavailable\r\ncontent-length: ${32 * big.length}\r\n\r\n`);
      let sent = 0;
      const more = () => {
        if (conn.socket.destroyed || sent++ >= 32) return;
        conn.socket.write(big);
        setTimeout(more, 200);
      };
      more();
    });
    const good = await answer(200, "ok");
    const gw = await gateway(
      [{ name: "r", match: { path: "/r" }, to: "app", ...PUBLIC, retries: { attempts: 2, on: ["503"] } }],
      { app: [bad, good] },
      { app: { loadBalancer: "round-robin" } },
    );
    for (let i = 0; i < 4; i++) {
      const t = performance.now();
      expect(await request(`${gw.url}/r`)).toMatchObject({ status: 200, body: "ok" });
      expect(performance.now() - t).toBeLessThan(1500);
    }
    expect(bad.requests.length).toBeGreaterThan(0);
    await until(() => bad.conns.every((c) => c.closed));
  });

  it("resets_an_http2_retryable_503_stream_past_64_kib_and_retries_at_once", async () => {
    const timers: NodeJS.Timeout[] = [];
    cleanup.push(async () => timers.forEach(clearInterval));
    let reset = 0;
    const big = Buffer.alloc(256 * 1024, 0x61);
    const bad = await h2Upstream((stream) => {
      stream.respond({ ":status": 503 });
      stream.once("close", () => stream.rstCode === http2.constants.NGHTTP2_CANCEL && reset++);
      stream.write(big);
      timers.push(setInterval(() => stream.destroyed || stream.write(big), 200));
    });
    const good = await h2Upstream((stream) => {
      stream.respond({ ":status": 200 });
      stream.end("ok");
    });
    const gw = await gateway(
      [{ name: "r", match: { path: "/r" }, to: "app", ...PUBLIC, retries: { attempts: 2, on: ["503"] } }],
      { app: [bad, good] },
      { app: { protocol: "http2", loadBalancer: "round-robin" } },
    );
    for (let i = 0; i < 4; i++) {
      const t = performance.now();
      expect(await request(`${gw.url}/r`)).toMatchObject({ status: 200, body: "ok" });
      expect(performance.now() - t).toBeLessThan(1500);
    }
    await until(() => reset > 0);
  });

  it("survives_a_client_leaving_while_a_retryable_503_is_drained", async () => {
    // The 503's body never ends: the client gives up while the gateway drains it.
    const bad = await rawUpstream((conn) => {
      conn.socket.write("HTTP/1.1 503 Service Unavailable\r\ncontent-length: 100\r\n\r\npartial");
    });
    const gw = await gateway(
      [{ name: "r", match: { path: "/r" }, to: "app", ...PUBLIC, retries: { attempts: 1, on: ["503"] } }],
      { app: bad },
    );
    const thrown = await uncaught(async () => {
      const ac = new AbortController();
      const pending = fetch(`${gw.url}/r`, { signal: ac.signal }).catch(() => null);
      await until(() => bad.requests.length === 1);
      await sleep(50);
      ac.abort();
      await pending;
      await until(() => bad.conns.every((c) => c.closed));
    });
    expect(thrown).toEqual([]);
  });

  it("retries_a_503_of_a_get_on_another_endpoint", async () => {
    const bad = await answer(503);
    const good = await answer(200, "ok");
    const gw = await gateway(
      [{ name: "r", match: { path: "/r" }, to: "app", ...PUBLIC, retries: { attempts: 2, on: ["503"] } }],
      { app: [bad, good] },
      { app: { loadBalancer: "round-robin" } },
    );
    for (let i = 0; i < 6; i++)
      expect(await request(`${gw.url}/r`)).toMatchObject({ status: 200, body: "ok" });
    expect(bad.received.length).toBeGreaterThan(0);
    expect(
      await metric(gw, /meshgate_retries_total\{proxy="gateway",cluster="app",reason="5xx"\} (\d+)/),
    ).toBe(bad.received.length);
  });

  it("never_retries_a_post_whose_bytes_reached_the_upstream", async () => {
    const bad = await answer(503);
    const gw = await gateway(
      [
        {
          name: "w",
          match: { path: "/w" },
          to: "app",
          ...PUBLIC,
          retries: { attempts: 3, on: ["5xx", "reset"] },
        },
      ],
      { app: bad },
    );
    const r = await request(`${gw.url}/w`, {
      method: "POST",
      body: "{}",
      headers: { "content-type": "application/json" },
    });
    expect(r.status).toBe(503);
    expect(bad.received).toHaveLength(1);
  });

  it("retries_a_post_after_a_connect_failure_because_no_byte_was_sent", async () => {
    const dead = await freePort();
    const good = await upstream();
    const gw = await gateway(
      [
        {
          name: "w",
          match: { path: "/w" },
          to: "app",
          ...PUBLIC,
          retries: { attempts: 1, on: ["connect-failure"] },
        },
      ],
      { app: [{ port: dead }, good] },
      { app: { loadBalancer: "round-robin" } },
    );
    for (let i = 0; i < 4; i++) {
      const r = await request(`${gw.url}/w`, {
        method: "POST",
        body: `{"n":${i}}`,
        headers: { "content-type": "application/json" },
      });
      expect(r.status).toBe(200);
    }
    expect(good.received.map((q) => q.body)).toEqual(['{"n":0}', '{"n":1}', '{"n":2}', '{"n":3}']);
  });

  it("retries_after_a_per_try_timeout_within_the_total_timeout", async () => {
    const stalled = await upstream(() => {
      /* never answers */
    });
    const good = await answer(200, "ok");
    const gw = await gateway(
      [
        {
          name: "t",
          match: { path: "/t", methods: ["GET"] },
          to: "app",
          ...PUBLIC,
          timeout: "2s",
          retries: { attempts: 1, perTryTimeout: "150ms", on: ["timeout"] },
        },
      ],
      { app: [stalled, good] },
      { app: { loadBalancer: "round-robin" } },
    );
    for (let i = 0; i < 2; i++) {
      const t = performance.now();
      expect(await request(`${gw.url}/t`)).toMatchObject({ status: 200, body: "ok" });
      expect(performance.now() - t).toBeLessThan(1500);
    }
  });

  it("keeps_retries_within_the_budget_under_100_percent_5xx", async () => {
    const bad = await answer(503);
    const gw = await gateway(
      [
        {
          name: "b",
          match: { path: "/b" },
          to: "app",
          ...PUBLIC,
          retries: { attempts: 3, on: ["503"], backoff: { base: "1ms", max: "1ms" } },
        },
      ],
      { app: bad },
      {
        app: {
          retries: { budget: { ratio: 0.2, minPerSecond: 0 } },
          circuitBreaker: { consecutive5xx: 100000 },
        },
      },
    );
    for (let i = 0; i < 100; i++) expect((await request(`${gw.url}/b`)).status).toBe(503);
    const retries = bad.received.length - 100;
    // 20% of 100 originals; without the budget 3 retries each would have sent 300 more.
    expect(retries).toBeGreaterThan(0);
    expect(retries).toBeLessThanOrEqual(21);
    expect(
      await metric(gw, /meshgate_retry_budget_exhausted_total\{proxy="gateway",cluster="app"\} (\d+)/),
    ).toBeGreaterThan(50);
  });
});

describe("retries of a ring-hash cluster", () => {
  it("retries_a_503_on_the_next_endpoint_of_the_ring_not_on_the_one_that_failed_it", async () => {
    // Whichever endpoint owns the client's key answers the first request 503; every later one is 200.
    const answered: string[] = [];
    const handler = (name: string) => (_req: http.IncomingMessage, res: http.ServerResponse) => {
      res.statusCode = answered.length === 0 ? 503 : 200;
      answered.push(`${name} ${res.statusCode}`);
      res.end(String(res.statusCode));
    };
    // Three endpoints: with two, avoiding the one that failed leaves a single choice whatever the balancer.
    const [a, b, c] = [
      await upstream(handler("a")),
      await upstream(handler("b")),
      await upstream(handler("c")),
    ];
    const gw = await gateway(
      [
        {
          name: "r",
          match: { path: "/r" },
          to: "app",
          ...PUBLIC,
          retries: { attempts: 1, on: ["503"], backoff: { base: "1ms", max: "1ms" } },
        },
      ],
      { app: [a, b, c] },
      { app: { loadBalancer: "ring-hash" } },
    );
    expect(await request(`${gw.url}/r`)).toMatchObject({ status: 200, body: "200" });
    const owner = answered[0]!.split(" ")[0]!;
    // The retry went on to another endpoint, not back to the owner that had just failed the key.
    expect(answered).toEqual([`${owner} 503`, expect.stringMatching(/^[abc] 200$/)]);
    expect(answered[1]!.startsWith(owner)).toBe(false);
    // One 5xx ejects nothing: the key stays with its owner.
    for (let i = 0; i < 3; i++) expect((await request(`${gw.url}/r`)).status).toBe(200);
    expect(answered.slice(2)).toEqual([`${owner} 200`, `${owner} 200`, `${owner} 200`]);
  });
});

describe("outlier detection and the circuit breaker", () => {
  it("ejects_an_endpoint_after_consecutive_5xx_and_routes_around_it", async () => {
    const bad = await answer(500);
    const good = await answer(200, "ok");
    const gw = await gateway(
      [{ name: "o", match: { path: "/o" }, to: "app", ...PUBLIC, retries: { attempts: 0 } }],
      { app: [bad, good] },
      {
        app: {
          loadBalancer: "round-robin",
          circuitBreaker: { consecutive5xx: 3, maxEjectedPercent: 50, baseEjection: "30s" },
        },
      },
    );
    const statuses: number[] = [];
    for (let i = 0; i < 30; i++) statuses.push((await request(`${gw.url}/o`)).status);
    expect(bad.received).toHaveLength(3);
    expect(statuses.slice(10).every((s) => s === 200)).toBe(true);
    expect(await metric(gw, /meshgate_upstream_ejections_total\{proxy="gateway",cluster="app"\} (\d+)/)).toBe(
      1,
    );
  });

  it("opens_when_every_endpoint_fails_answering_503_without_reaching_the_upstream_when_panic_is_off", async () => {
    const bad = await answer(500);
    const gw = await gateway(
      [{ name: "o", match: { path: "/o" }, to: "app", ...PUBLIC, retries: { attempts: 0 } }],
      { app: bad },
      { app: { circuitBreaker: { consecutive5xx: 5, baseEjection: "30s", panicThreshold: 0 } } },
    );
    for (let i = 0; i < 5; i++) expect((await request(`${gw.url}/o`)).status).toBe(500);
    const after = await request(`${gw.url}/o`);
    expect(after.status).toBe(503);
    expect(after.headers["x-meshgate-error"]).toBe("no_healthy_upstream");
    expect(bad.received).toHaveLength(5);
  });

  // The retry of a discarded 5xx found no endpoint (the 5xx ejected the only one; panic routing off): the
  // answer is the cluster's state, 503 no_healthy_upstream — not 502 upstream_reset, which told dashboards
  // and clients of a reset nobody saw.
  it("answers_503_no_healthy_upstream_when_the_retry_of_a_5xx_finds_no_endpoint", async () => {
    const bad = await answer(503);
    const gw = await gateway(
      [{ name: "o", match: { path: "/o" }, to: "app", ...PUBLIC, retries: { attempts: 1, on: ["5xx"] } }],
      { app: bad },
      { app: { circuitBreaker: { consecutive5xx: 1, baseEjection: "30s", panicThreshold: 0 } } },
    );
    const r = await request(`${gw.url}/o`);
    expect([r.status, r.headers["x-meshgate-error"]]).toEqual([503, "no_healthy_upstream"]);
    expect(bad.received).toHaveLength(1);
  });

  it("keeps_sending_to_the_only_endpoint_once_it_is_ejected_by_default_panic_routing", async () => {
    // Envoy's healthy_panic_threshold (50 %): one ejected endpoint of one is 0 % available, so the
    // ejection must not turn into 30 s of 503s for a service that may already have recovered.
    let fail = true;
    const app = await upstream((_req, res) => {
      res.statusCode = fail ? 500 : 200;
      res.end(fail ? "down" : "up");
    });
    const gw = await gateway(
      [{ name: "o", match: { path: "/o" }, to: "app", ...PUBLIC, retries: { attempts: 0 } }],
      { app },
      { app: { circuitBreaker: { consecutive5xx: 3, baseEjection: "30s" } } },
    );
    for (let i = 0; i < 3; i++) expect((await request(`${gw.url}/o`)).status).toBe(500);
    expect(await metric(gw, /meshgate_upstream_ejections_total\{proxy="gateway",cluster="app"\} (\d+)/)).toBe(
      1,
    );
    fail = false;
    expect(await request(`${gw.url}/o`)).toMatchObject({ status: 200, body: "up" });
    expect(await metric(gw, /meshgate_upstream_panic_total\{proxy="gateway",cluster="app"\} (\d+)/)).toBe(1);
  });

  it("balances_across_every_endpoint_when_fewer_than_the_threshold_are_available", async () => {
    const bad = [await answer(500), await answer(500)];
    const good = await answer(200, "ok");
    const gw = await gateway(
      [{ name: "o", match: { path: "/o" }, to: "app", ...PUBLIC, retries: { attempts: 0 } }],
      { app: [bad[0]!, bad[1]!, good] },
      {
        app: {
          loadBalancer: "round-robin",
          circuitBreaker: {
            consecutive5xx: 2,
            baseEjection: "30s",
            maxEjectedPercent: 100,
            panicThreshold: 50,
          },
        },
      },
    );
    // Round-robin: two rounds eject both failing endpoints (1 of 3 available: 33 % < 50 %).
    for (let i = 0; i < 6; i++) await request(`${gw.url}/o`);
    expect(await metric(gw, /meshgate_upstream_ejections_total\{proxy="gateway",cluster="app"\} (\d+)/)).toBe(
      2,
    );
    const before = bad[0]!.received.length + bad[1]!.received.length;
    const panicBefore = await metric(
      gw,
      /meshgate_upstream_panic_total\{proxy="gateway",cluster="app"\} (\d+)/,
    );
    const statuses: number[] = [];
    for (let i = 0; i < 9; i++) statuses.push((await request(`${gw.url}/o`)).status);
    // In panic every endpoint takes its share again, the ejected ones included.
    expect(bad[0]!.received.length + bad[1]!.received.length - before).toBe(6);
    expect(statuses.filter((s) => s === 200)).toHaveLength(3);
    expect(
      (await metric(gw, /meshgate_upstream_panic_total\{proxy="gateway",cluster="app"\} (\d+)/)) -
        panicBefore,
    ).toBe(9);
  });

  it("routes_around_ejected_endpoints_while_at_least_the_threshold_is_available", async () => {
    const bad = await answer(500);
    const good = [await answer(200, "a"), await answer(200, "b")];
    const gw = await gateway(
      [{ name: "o", match: { path: "/o" }, to: "app", ...PUBLIC, retries: { attempts: 0 } }],
      { app: [bad, good[0]!, good[1]!] },
      {
        app: {
          loadBalancer: "round-robin",
          circuitBreaker: {
            consecutive5xx: 2,
            baseEjection: "30s",
            maxEjectedPercent: 100,
            panicThreshold: 50,
          },
        },
      },
    );
    for (let i = 0; i < 6; i++) await request(`${gw.url}/o`);
    const before = bad.received.length;
    for (let i = 0; i < 10; i++) expect((await request(`${gw.url}/o`)).status).toBe(200);
    expect(bad.received.length).toBe(before); // 2 of 3 available (67 %): no panic
    expect(await metric(gw, /meshgate_upstream_panic_total\{proxy="gateway",cluster="app"\} (\d+)/)).toBe(0);
  });

  it("keeps_an_ejected_endpoint_ejected_across_a_reload_that_leaves_its_cluster_unchanged_not_one_that_changes_it", async () => {
    const bad = await answer(500);
    const good = [await answer(200, "a"), await answer(200, "b")];
    const breaker = (consecutive5xx: number) => ({
      loadBalancer: "round-robin",
      circuitBreaker: { consecutive5xx, baseEjection: "30s", maxEjectedPercent: 100, panicThreshold: 50 },
    });
    const config = (routes: string[], consecutive5xx: number) =>
      gatewayConfig(
        routes.map((name) => ({
          name,
          match: { path: `/${name}` },
          to: "app",
          ...PUBLIC,
          retries: { attempts: 0 },
        })),
        { app: [bad, good[0]!, good[1]!] },
        {},
        {
          app: { image: "r/app:1", port: 8080, allow: [{ from: ["gateway"] }], ...breaker(consecutive5xx) },
        },
      );
    const gw = await startTestGateway(config(["o"], 2));
    cleanup.push(() => gw.drain());
    for (let i = 0; i < 6; i++) await request(`${gw.url}/o`);
    expect(await metric(gw, /meshgate_upstream_ejections_total\{proxy="gateway",cluster="app"\} (\d+)/)).toBe(
      1,
    );

    // A route added: the cluster is the same, its ejected endpoint stays out (was: back at once).
    expect(await gw.reload(JSON.stringify(config(["o", "p"], 2)))).toMatchObject({ ok: true });
    const ejected = bad.received.length;
    for (let i = 0; i < 9; i++) expect((await request(`${gw.url}/${i % 2 ? "p" : "o"}`)).status).toBe(200);
    expect(bad.received.length).toBe(ejected);

    // The cluster's own config changed: it starts afresh, and the endpoint takes its share again.
    expect(await gw.reload(JSON.stringify(config(["o", "p"], 3)))).toMatchObject({ ok: true });
    for (let i = 0; i < 6; i++) await request(`${gw.url}/o`);
    expect(bad.received.length).toBeGreaterThan(ejected);
  });

  it("never_counts_clients_that_disconnect_against_the_upstream", async () => {
    const slow = await upstream((_req, res) => setTimeout(() => res.end("slow"), 100));
    const gw = await gateway(
      [{ name: "s", match: { path: "/s" }, to: "app", ...PUBLIC, retries: { attempts: 0 } }],
      { app: slow },
      { app: { circuitBreaker: { consecutive5xx: 5, baseEjection: "30s" } } },
    );
    // Six impatient clients: each sends a request and disconnects after 30 ms.
    await Promise.all(
      Array.from({ length: 6 }, async () => {
        const { createConnection } = await import("node:net");
        const s = createConnection(Number(new URL(gw.url).port), "127.0.0.1");
        s.write("GET /s HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
        await sleep(30);
        s.destroy();
      }),
    );
    // Each abort is counted when the gateway sees the client gone: wait for the six (a fixed pause can be
    // too short on a loaded machine).
    await until(
      async () =>
        (await metric(
          gw,
          /meshgate_upstream_requests_total\{proxy="gateway",cluster="app",outcome="client_aborted"\} (\d+)/,
        )) >= 6,
    );
    expect(await request(`${gw.url}/s`)).toMatchObject({ status: 200, body: "slow" });
    expect(await metric(gw, /meshgate_upstream_ejections_total\{proxy="gateway",cluster="app"\} (\d+)/)).toBe(
      0,
    );
    expect(
      await metric(
        gw,
        /meshgate_upstream_requests_total\{proxy="gateway",cluster="app",outcome="client_aborted"\} (\d+)/,
      ),
    ).toBe(6);
  });

  // Node reports an HTTP/2 stream the client reset as writableFinished: the gateway took the reset for a
  // completed response and let the upstream request run to its end (a client resetting streams as fast as
  // it opens them kept that many upstream requests busy), logged "success" and "completed".
  it.each([
    ["an_http1_client_that_disconnects", "h1"],
    ["an_h2_client_that_resets_its_stream", "h2"],
  ])("cancels_the_upstream_request_of_%s", async (_name, protocol) => {
    let closedUnanswered = 0;
    let answered = 0;
    const slow = await upstream((_req, res) => {
      const timer = setTimeout(() => {
        answered++;
        res.end("late");
      }, 3000);
      res.on("close", () => {
        if (!res.writableFinished) {
          clearTimeout(timer);
          closedUnanswered++;
        }
      });
    });
    const gw = await gateway(
      [{ name: "s", match: { path: "/s" }, to: "app", ...PUBLIC, timeout: "10s", retries: { attempts: 0 } }],
      { app: slow },
    );
    const port = Number(new URL(gw.url).port);
    if (protocol === "h1") {
      const { createConnection } = await import("node:net");
      const s = createConnection(port, "127.0.0.1");
      s.on("error", () => {});
      s.write("GET /s HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
      await until(() => slow.received.length === 1);
      s.destroy();
    } else {
      const http2 = await import("node:http2");
      const session = http2.connect(gw.url);
      session.on("error", () => {});
      const stream = session.request({ ":path": "/s" });
      stream.on("error", () => {});
      await until(() => slow.received.length === 1);
      stream.close(http2.constants.NGHTTP2_CANCEL);
      cleanup.push(async () => void session.close());
    }
    await until(() => closedUnanswered + answered > 0);
    expect({ closedUnanswered, answered }).toEqual({ closedUnanswered: 1, answered: 0 });
    await until(
      async () =>
        (await metric(
          gw,
          /meshgate_upstream_requests_total\{proxy="gateway",cluster="app",outcome="client_aborted"\} (\d+)/,
        )) === 1,
    );
  });

  it("refuses_requests_beyond_max_requests_with_503_overflow", async () => {
    const slow = await upstream((_req, res) => setTimeout(() => res.end("slow"), 300));
    const gw = await gateway(
      [{ name: "s", match: { path: "/s" }, to: "app", ...PUBLIC, retries: { attempts: 0 } }],
      { app: slow },
      { app: { circuitBreaker: { maxRequests: 2 } } },
    );
    const results = await Promise.all(Array.from({ length: 6 }, () => request(`${gw.url}/s`)));
    const statuses = results.map((r) => r.status).sort();
    expect(statuses.filter((s) => s === 200)).toHaveLength(2);
    expect(results.filter((r) => r.headers["x-meshgate-error"] === "upstream_overflow")).toHaveLength(4);
  });

  it("answers_504_to_a_request_that_no_connection_frees_for_within_its_timeout_and_ejects_no_one", async () => {
    // A response that keeps streaming holds the cluster's one connection for as long as it lasts.
    const app = await upstream((req, res) => {
      if (req.url !== "/stream") return void res.end("quick");
      res.writeHead(200, { "content-type": "text/plain" });
      const timer = setInterval(() => res.write("tick\n"), 100);
      res.on("close", () => clearInterval(timer));
    });
    const gw = await gateway(
      [{ name: "s", match: { path: "/**" }, to: "app", ...PUBLIC, timeout: "1s", retries: { attempts: 0 } }],
      { app },
      { app: { circuitBreaker: { maxConnections: 1, consecutive5xx: 1, baseEjection: "30s" } } },
    );
    const stream = await new Promise<http.IncomingMessage>((resolve, reject) =>
      http.get(`${gw.url}/stream`, { agent: false }, resolve).on("error", reject),
    );
    cleanup.push(async () => void stream.destroy());
    // Waiting for the connection is bounded by the route's timeout like the rest of the exchange.
    const queued = await within(request(`${gw.url}/quick`), 10_000);
    expect(queued).toMatchObject({ status: 504, headers: { "x-meshgate-error": "upstream_timeout" } });
    expect(app.received.map((r) => r.url)).toEqual(["/stream"]);
    // The gateway's own wait is not the endpoint's failure (consecutive5xx 1 would have ejected it).
    expect(await metric(gw, /meshgate_upstream_ejections_total\{proxy="gateway",cluster="app"\} (\d+)/)).toBe(
      0,
    );
  });

  it("serves_a_request_that_waited_for_a_busy_connection_longer_than_its_per_try_timeout_within_the_route_timeout", async () => {
    // As Envoy's per_try_timeout, which starts when the pool hands the request a connection: each answer
    // takes 400 ms on the cluster's one connection, so the second request waits ~400 ms for it and then
    // 400 ms for its head — within its 700 ms per-try timeout from then, and its 3 s route timeout. When
    // the wait counted against the per-try timeout, it was a 504 after 700 ms. (A retry plan makes the
    // per-try timeout apply; it retries only a connect failure.)
    const slow = await upstream((_req, res) => setTimeout(() => res.end("slow"), 400));
    const gw = await gateway(
      [
        {
          name: "s",
          match: { path: "/s" },
          to: "app",
          ...PUBLIC,
          timeout: "3s",
          retries: { attempts: 1, perTryTimeout: "700ms", on: ["connect-failure"] },
        },
      ],
      { app: slow },
      { app: { circuitBreaker: { maxConnections: 1 } } },
    );
    const results = await Promise.all([request(`${gw.url}/s`), request(`${gw.url}/s`)]);
    expect(results.map((r) => r.status)).toEqual([200, 200]);
    expect(slow.received).toHaveLength(2);
  });

  it("takes_an_http2_endpoint_out_when_its_health_check_answers_but_never_ends_the_body", async () => {
    const h2 = (name: string, hangs: boolean) =>
      h2Upstream((stream, path) => {
        stream.respond({ ":status": 200 });
        if (hangs && path === "/healthz") stream.write("so far so good");
        else stream.end(name);
      });
    const gw = await gateway(
      [{ name: "h", match: { path: "/h" }, to: "app", ...PUBLIC }],
      { app: [await h2("sick", true), await h2("well", false)] },
      {
        app: {
          protocol: "http2",
          loadBalancer: "round-robin",
          healthCheck: { path: "/healthz", interval: "100ms", timeout: "200ms", unhealthyThreshold: 2 },
        },
      },
    );
    // A probe is a whole exchange: a body still open at the probe's timeout is a failed probe.
    await until(async () => {
      for (let i = 0; i < 10; i++) if ((await request(`${gw.url}/h`)).body !== "well") return false;
      return true;
    });
    const bodies = new Set<string>();
    for (let i = 0; i < 10; i++) bodies.add((await request(`${gw.url}/h`)).body);
    expect([...bodies]).toEqual(["well"]);
  });

  it("takes_an_endpoint_out_whose_health_check_body_is_cut_and_survives_it", async () => {
    const sick = await rawUpstream((conn, req) => {
      if (req.startsWith("GET /healthz")) {
        conn.socket.write("HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\npartial");
        setTimeout(() => conn.socket.destroy(), 20);
      } else conn.socket.write("HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nsick");
    });
    const well = await answer(200, "well");
    const thrown = await uncaught(async () => {
      const gw = await gateway(
        [{ name: "h", match: { path: "/h" }, to: "app", ...PUBLIC }],
        { app: [sick, well] },
        {
          app: {
            loadBalancer: "round-robin",
            healthCheck: { path: "/healthz", interval: "100ms", timeout: "500ms", unhealthyThreshold: 2 },
          },
        },
      );
      await until(async () => {
        for (let i = 0; i < 10; i++) if ((await request(`${gw.url}/h`)).body !== "well") return false;
        return true;
      });
    });
    expect(thrown).toEqual([]);
  });

  it("takes_an_endpoint_out_whose_health_check_body_trickles_past_the_probe_timeout_with_one_probe_open_at_a_time", async () => {
    const timers: NodeJS.Timeout[] = [];
    cleanup.push(async () => timers.forEach(clearInterval));
    const probes = (u: RawUpstream) => u.conns.filter((c) => c.requests[0]?.startsWith("GET /healthz"));
    const sick = await rawUpstream((conn, req) => {
      if (req.startsWith("GET /healthz")) {
        // A 200 whose chunked body never ends: a byte every 50 ms, never a silence the body timeout sees.
        conn.socket.write("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n");
        timers.push(setInterval(() => conn.socket.destroyed || conn.socket.write("1\r\nx\r\n"), 50));
      } else conn.socket.write("HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nsick");
    });
    const well = await answer(200, "well");
    const started = performance.now();
    const gw = await gateway(
      [{ name: "h", match: { path: "/h" }, to: "app", ...PUBLIC }],
      { app: [sick, well] },
      {
        app: {
          loadBalancer: "round-robin",
          healthCheck: { path: "/healthz", interval: "100ms", timeout: "500ms", unhealthyThreshold: 2 },
        },
      },
    );
    let mostOpen = 0;
    const sampler = setInterval(() => {
      mostOpen = Math.max(mostOpen, probes(sick).filter((c) => !c.closed).length);
    }, 20);
    cleanup.push(async () => clearInterval(sampler));
    await until(async () => {
      for (let i = 0; i < 10; i++) if ((await request(`${gw.url}/h`)).body !== "well") return false;
      return true;
    });
    await sleep(1000);
    clearInterval(sampler);
    // One probe at a time, each ended at its 500 ms timeout (the next may open as the upstream sees the
    // last one close): never a connection per 100 ms round, five of them open at once.
    expect(mostOpen).toBeLessThanOrEqual(2);
    // Each probe holds its connection for its timeout: at most one new probe per 500 ms.
    expect(probes(sick).length).toBeLessThanOrEqual(Math.ceil((performance.now() - started) / 500) + 2);
  });

  it("takes_an_endpoint_out_when_its_active_health_check_fails", async () => {
    const sick = await upstream((req, res) => {
      res.writeHead(req.url === "/healthz" ? 503 : 200);
      res.end("sick");
    });
    const well = await answer(200, "well");
    const gw = await gateway(
      [{ name: "h", match: { path: "/h" }, to: "app", ...PUBLIC }],
      { app: [sick, well] },
      {
        app: {
          loadBalancer: "round-robin",
          healthCheck: { path: "/healthz", interval: "100ms", unhealthyThreshold: 2 },
        },
      },
    );
    // Probes every 100 ms, out after two failures: wait until ten answers in a row come from the healthy
    // endpoint (a loaded machine's timers run late), then ten more must too.
    await until(async () => {
      for (let i = 0; i < 10; i++) if ((await request(`${gw.url}/h`)).body !== "well") return false;
      return true;
    });
    const bodies = new Set<string>();
    for (let i = 0; i < 10; i++) bodies.add((await request(`${gw.url}/h`)).body);
    expect([...bodies]).toEqual(["well"]);
  });
});

describe("mirroring", () => {
  it("survives_a_mirror_that_cuts_its_response_mid_body", async () => {
    const primary = await answer(200, "primary");
    const shadow = await rawUpstream((conn) => {
      conn.socket.write("HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\npartial");
      setTimeout(() => conn.socket.destroy(), 20);
    });
    const gw = await gateway(
      [
        {
          name: "m",
          match: { path: "/m" },
          to: "app",
          mirror: { service: "shadow", percent: 100 },
          ...PUBLIC,
        },
      ],
      { app: primary, shadow },
    );
    const thrown = await uncaught(async () => {
      expect(await request(`${gw.url}/m`)).toMatchObject({ status: 200, body: "primary" });
      await until(() => shadow.conns.length === 1 && shadow.conns[0]!.closed);
    });
    expect(thrown).toEqual([]);
  });

  it("copies_requests_to_the_mirror_and_never_waits_for_it", async () => {
    const primary = await answer(200, "primary");
    // A shadow far slower than a loaded machine can make the primary's answer.
    const shadow = await upstream((_req, res) => setTimeout(() => res.end("shadow"), 1500));
    const gw = await gateway(
      [
        {
          name: "m",
          match: { path: "/m" },
          to: "app",
          mirror: { service: "shadow", percent: 100 },
          ...PUBLIC,
        },
      ],
      { app: primary, shadow },
    );
    const t = performance.now();
    const r = await request(`${gw.url}/m?q=1`, { headers: { host: "127.0.0.1" } });
    expect(r).toMatchObject({ status: 200, body: "primary" });
    expect(performance.now() - t).toBeLessThan(1000);
    await until(() => shadow.received.length > 0);
    expect(shadow.received).toHaveLength(1);
    expect(shadow.received[0]).toMatchObject({ url: "/m?q=1" });
    expect(shadow.received[0]!.headers).toMatchObject({ host: "127.0.0.1-shadow", "x-meshgate-mirror": "1" });
  });

  it("frees_the_shadow_clusters_circuit_breaker_of_a_copy_whose_http2_answer_never_ends", async () => {
    const primary = await answer(200, "primary");
    // The shadow answers every copy's head, then never ends its body.
    let copies = 0;
    const shadow = await h2Upstream((stream) => {
      copies++;
      stream.respond({ ":status": 200 });
      stream.write("so far so good");
    });
    const gw = await gateway(
      [
        {
          name: "m",
          match: { path: "/m" },
          to: "app",
          mirror: { service: "shadow", percent: 100 },
          ...PUBLIC,
          timeout: "300ms",
        },
      ],
      { app: primary, shadow },
      { shadow: { protocol: "http2", circuitBreaker: { maxRequests: 1 } } },
    );
    // One copy at a time: the next one goes only once the open one has failed at the route's timeout.
    await until(async () => {
      expect(await request(`${gw.url}/m`)).toMatchObject({ status: 200, body: "primary" });
      return copies >= 2;
    });
    expect(
      await metric(gw, /meshgate_mirrored_requests_total\{[^}]*outcome="failure"\} (\d+)/),
    ).toBeGreaterThanOrEqual(1);
  });

  it("drops_copies_beyond_the_shadow_clusters_circuit_breaker_instead_of_queueing_them", async () => {
    const primary = await answer(200, "primary");
    const shadow = await upstream((_req, res) => setTimeout(() => res.end("shadow"), 500));
    const gw = await gateway(
      [
        {
          name: "m",
          match: { path: "/m" },
          to: "app",
          mirror: { service: "shadow", percent: 100 },
          ...PUBLIC,
        },
      ],
      { app: primary, shadow },
      { shadow: { circuitBreaker: { maxConnections: 1, maxPendingRequests: 1 } } },
    );
    const answers = await Promise.all(
      Array.from({ length: 20 }, () => request(`${gw.url}/m`, { headers: { host: "127.0.0.1" } })),
    );
    for (const r of answers) expect(r).toMatchObject({ status: 200, body: "primary" });
    // One copy on the connection and one waiting: the 18 others are dropped, not queued (they would all
    // reach the shadow, 500 ms apart, long after their requests were answered). Once the second has
    // arrived (on a loaded machine it can take longer than 1 s), a third would within 500 ms.
    await until(() => shadow.received.length >= 2);
    await sleep(600);
    expect(shadow.received).toHaveLength(2);
    expect(await metric(gw, /meshgate_mirrored_requests_total\{[^}]*outcome="overflow"\} (\d+)/)).toBe(18);
  });
});
