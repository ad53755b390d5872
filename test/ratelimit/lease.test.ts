/**
 * Limits across worker processes: the primary's buckets (LeaseServer) and workers spending leases
 * (LeaseClient). First with two clients wired to one server in this process (a delayed in-memory
 * channel and an injected clock), then with two real child processes over the real IPC channel.
 */
import { fork, type ChildProcess } from "node:child_process";
import { setTimeout as sleep } from "node:timers/promises";
import { afterEach, describe, expect, it } from "vitest";
import { compilePolicy } from "../../runtime/ratelimit/bucket.ts";
import {
  LeaseClient,
  LeaseServer,
  type LeaseReply,
  type LeaseRequest,
} from "../../runtime/ratelimit/lease.ts";
import type { RateLimitDecision } from "../../runtime/ratelimit/local.ts";
import { primaryLeases } from "../../runtime/gateway/workers.ts";
import { MetricsRegistry } from "../../runtime/telemetry/metrics.ts";
import type { DoneMessage, StartMessage } from "./fixtures/load-worker.ts";

/** Two (or more) workers talking to one primary through a channel that answers after one macrotask. */
function cluster(
  n: number,
  clock: { t: number },
  opts: { idleMs?: number; timeoutMs?: number } = {},
  serverOpts: { policyIdleMs?: number } = {},
) {
  const server = new LeaseServer({ now: () => clock.t, ...serverOpts });
  let dropping = false;
  const clients: LeaseClient[] = [];
  const messages = { requests: 0 };
  for (let i = 0; i < n; i++) {
    const client: LeaseClient = new LeaseClient(
      (req: LeaseRequest) => {
        messages.requests++;
        if (dropping) return;
        const copy = JSON.parse(JSON.stringify(req)) as LeaseRequest; // what IPC does
        setImmediate(() => client.receive(JSON.parse(JSON.stringify(server.handle(copy, n))) as LeaseReply));
      },
      { now: () => clock.t, ...opts },
    );
    clients.push(client);
  }
  return {
    server,
    clients,
    messages,
    drop: () => {
      dropping = true;
    },
    close: () => clients.forEach((c) => c.close()),
  };
}

async function resolve(d: RateLimitDecision | Promise<RateLimitDecision>): Promise<RateLimitDecision> {
  return d instanceof Promise ? d : d;
}

const policy = compilePolicy({ requests: 100, periodMs: 1000, burst: 100 });
let open: { close: () => void }[] = [];
afterEach(() => {
  for (const c of open) c.close();
  open = [];
});

describe("leases between workers and the primary", () => {
  it("lets_one_worker_use_the_whole_limit", async () => {
    const clock = { t: 0 };
    const c = cluster(2, clock);
    open.push(c);
    const a = c.clients[0]!.limiter("r", policy);
    let allowed = 0;
    for (let i = 0; i < 150; i++) if ((await resolve(a.check("k"))).allowed) allowed++;
    expect(allowed).toBe(100);
  });

  it("admits_the_limit_exactly_across_two_workers", async () => {
    const clock = { t: 0 };
    const c = cluster(2, clock);
    open.push(c);
    const [a, b] = c.clients.map((cl) => cl.limiter("r", policy));
    let allowed = 0;
    // Both workers, interleaved and concurrent, over 3 simulated seconds.
    for (let step = 0; step < 300; step++) {
      clock.t = step * 10;
      const batch = await Promise.all(
        [...Array(4)].flatMap(() => [resolve(a!.check("k")), resolve(b!.check("k"))]),
      );
      allowed += batch.filter((d) => d.allowed).length;
    }
    // burst 100 + 100/s × 2.99 s; never more (every spent token was taken from the primary first).
    expect(allowed).toBeLessThanOrEqual(100 + 299);
    expect(allowed).toBeGreaterThanOrEqual(Math.floor((100 + 299) * 0.95));
  });

  it("answers_from_the_lease_synchronously_once_leased", async () => {
    const clock = { t: 0 };
    const c = cluster(2, clock);
    open.push(c);
    const a = c.clients[0]!.limiter("r", policy);
    const first = a.check("k");
    expect(first).toBeInstanceOf(Promise); // the first ask waits one round trip
    expect((await first).allowed).toBe(true);
    let sync = 0;
    for (let i = 0; i < 20; i++) {
      const d = a.check("k");
      if (!(d instanceof Promise)) sync++;
      await resolve(d);
    }
    expect(sync).toBeGreaterThanOrEqual(19); // prefetching keeps the lease topped up
  });

  it("refuses_synchronously_until_the_next_token_without_asking", async () => {
    const clock = { t: 0 };
    const c = cluster(1, clock);
    open.push(c);
    const a = c.clients[0]!.limiter("r", compilePolicy({ requests: 1, periodMs: 1000, burst: 1 }));
    expect((await resolve(a.check("k"))).allowed).toBe(true);
    const denied = await resolve(a.check("k"));
    expect(denied.allowed).toBe(false);
    const asked = c.messages.requests;
    clock.t = 400;
    const again = a.check("k");
    expect(again).not.toBeInstanceOf(Promise);
    expect((again as RateLimitDecision).allowed).toBe(false);
    expect((again as RateLimitDecision).retryAfterMs).toBe(600);
    expect(c.messages.requests).toBe(asked);
    clock.t = 1000;
    expect((await resolve(a.check("k"))).allowed).toBe(true);
  });

  it("gives_idle_leases_back_to_the_other_workers", async () => {
    const clock = { t: 0 };
    const c = cluster(2, clock, { idleMs: 100 });
    open.push(c);
    const p = compilePolicy({ requests: 10, periodMs: 3_600_000, burst: 10 }); // no refill to speak of
    const [a, b] = c.clients.map((cl) => cl.limiter("r", p));
    expect((await resolve(a!.check("k"))).allowed).toBe(true); // a leases more than it uses
    let bAllowed = 0;
    for (let i = 0; i < 10; i++) if ((await resolve(b!.check("k"))).allowed) bAllowed++;
    expect(bAllowed).toBeLessThan(9);
    clock.t = 200;
    c.clients[0]!.sweep(); // a's lease is idle: its tokens go back
    await sleep(5);
    // b holds a token reserved far ahead; a request after idleMs hands it back and asks again.
    expect((await resolve(b!.check("k"))).allowed).toBe(false);
    await sleep(5);
    for (let i = 0; i < 10; i++) if ((await resolve(b!.check("k"))).allowed) bAllowed++;
    expect(bAllowed).toBe(9); // all but the one a spent
  });

  it("fails_closed_when_the_primary_does_not_answer", async () => {
    const clock = { t: 0 };
    const c = cluster(1, clock, { timeoutMs: 50 });
    open.push(c);
    c.drop();
    const a = c.clients[0]!.limiter("r", policy);
    const pending = a.check("k");
    await sleep(5); // the ask is sent (and lost)
    clock.t = 60;
    c.clients[0]!.sweep();
    const d = await pending;
    expect(d.allowed).toBe(false);
    expect(d.storeError).toBe("unavailable");
  });

  it("serves_a_route_again_after_the_primary_dropped_its_idle_policy", async () => {
    // The primary drops a policy no worker used for policyIdleMs; the worker, which defined it once,
    // must define it again rather than be refused ("unknown policy") for ever.
    const clock = { t: 0 };
    const c = cluster(1, clock, { idleMs: 100 }, { policyIdleMs: 1000 });
    open.push(c);
    const a = c.clients[0]!.limiter("r", policy);
    expect((await resolve(a.check("k"))).allowed).toBe(true);
    clock.t = 5000;
    c.clients[0]!.sweep(); // the worker's lease is idle: given back
    await sleep(5);
    clock.t = 7000;
    c.server.sweep(); // the policy is idle on the primary: dropped
    expect(c.server.stats().policies).toBe(0);
    const after = [];
    for (let i = 0; i < 5; i++) after.push(await resolve(a.check("k")));
    expect(after.map((d) => d.allowed)).toEqual([true, true, true, true, true]);
    expect(c.server.stats().policies).toBe(1);
  });

  it.each([
    {
      claim: "keeps_the_spent_bucket_of_a_quiet_route_when_the_primary_sweeps_its_idle_policy",
      requests: 11, // 10 admitted, then refused
      quietMs: 12 * 60_000, // 11 minutes after the lease went back
      policies: 1,
      allowedAfter: false,
    },
    {
      claim: "drops_an_idle_policy_once_its_buckets_are_full_again",
      requests: 1,
      quietMs: 86_400_000,
      policies: 0,
      allowedAfter: true,
    },
  ])("$claim", async ({ requests, quietMs, policies, allowedAfter }) => {
    // 10 a day and nobody on the route for 11 minutes (past policyIdleMs): dropping the policy with its
    // buckets handed the client a full bucket again, 10 more after minutes instead of a day.
    const clock = { t: 0 };
    const c = cluster(1, clock, { idleMs: 100 }, { policyIdleMs: 600_000 });
    open.push(c);
    const a = c.clients[0]!.limiter("r", compilePolicy({ requests: 10, periodMs: 86_400_000, burst: 10 }));
    for (let i = 0; i < requests; i++) expect((await resolve(a.check("k"))).allowed).toBe(i < 10);
    clock.t = 60_000;
    c.clients[0]!.sweep(); // the worker's entry is idle: its lease (or reserved token) goes back
    await sleep(5);
    clock.t = quietMs;
    c.server.sweep();
    expect(c.server.stats().policies).toBe(policies);
    expect((await resolve(a.check("k"))).allowed).toBe(allowedAfter);
  });

  it("keeps_routes_and_keys_apart", async () => {
    const clock = { t: 0 };
    const c = cluster(1, clock);
    open.push(c);
    const one = compilePolicy({ requests: 1, periodMs: 60_000, burst: 1 });
    const r1 = c.clients[0]!.limiter("r1", one);
    const r2 = c.clients[0]!.limiter("r2", one);
    expect((await resolve(r1.check("k"))).allowed).toBe(true);
    expect((await resolve(r1.check("k"))).allowed).toBe(false);
    expect((await resolve(r1.check("other"))).allowed).toBe(true);
    expect((await resolve(r2.check("k"))).allowed).toBe(true);
    expect(c.server.stats()).toEqual({ policies: 2, keys: 3 });
  });
});

describe("the primary's buckets in its metrics", () => {
  // With --workers every bucket is the primary's: its evictions at the key cap are counted there.
  const ask = (id: number, keys: string[]): LeaseRequest => ({
    type: "ratelimit",
    id,
    policies: [{ id: "route-a", rate: 1, cost: 1, capacity: 10 }],
    ops: keys.map((k) => ["route-a", k, 1, 0, 0] as const),
  });
  const evictions = (metrics: MetricsRegistry) =>
    metrics
      .render()
      .split("\n")
      .filter((l) => l.startsWith("meshgate_ratelimit_evictions_total{"));

  it("counts_an_eviction_at_the_key_cap_in_ratelimit_evictions_total", () => {
    const metrics = new MetricsRegistry({ prefix: "meshgate_" });
    const clock = { t: 0 };
    const leases = primaryLeases(metrics, { maxKeys: 2, now: () => clock.t });
    leases.handle(ask(1, ["a", "b"]), 2);
    expect(evictions(metrics)).toEqual([]);
    clock.t += 60_000; // a and b are full again: dropping one loses nothing
    leases.handle(ask(2, ["c"]), 2);
    expect(evictions(metrics)).toEqual(['meshgate_ratelimit_evictions_total{proxy="gateway",kind="idle"} 1']);
  });
});

describe("leases across two real worker processes", () => {
  const FIXTURE = new URL("./fixtures/load-worker.ts", import.meta.url);

  async function runWorkers(
    start: Omit<StartMessage, "type" | "mode" | "startAt">,
    active: boolean[],
  ): Promise<{ done: DoneMessage[]; server: LeaseServer; ipcRequests: number; startAt: number }> {
    const server = new LeaseServer();
    const children: ChildProcess[] = active.map(() =>
      fork(FIXTURE, [], { stdio: ["ignore", "inherit", "inherit", "ipc"] }),
    );
    let ipcRequests = 0;
    // Every worker counts over the same window, which opens once all of them are ready (a fork can take
    // seconds on a loaded machine: a window fixed before would open without it).
    let startAt = 0;
    let ready = 0;
    const startAll = () => {
      startAt = Date.now() + 200;
      children.forEach((child, i) => {
        if (active[i]) child.send({ type: "start", mode: "lease", startAt, ...start } satisfies StartMessage);
      });
    };
    try {
      const done = await Promise.all(
        children.map(
          (child, i) =>
            new Promise<DoneMessage>((resolveDone, reject) => {
              child.on("message", (m: { type: string }) => {
                if (m.type === "ready") {
                  if (++ready === children.length) startAll();
                  if (!active[i])
                    resolveDone({
                      type: "done",
                      allowed: 0,
                      denied: 0,
                      storeErrors: 0,
                      sync: 0,
                      async: 0,
                      maxWaitMs: 0,
                      lastAt: 0,
                    });
                } else if (m.type === "ratelimit") {
                  ipcRequests++;
                  child.send(server.handle(m as LeaseRequest, children.length));
                } else if (m.type === "done") resolveDone(m as DoneMessage);
              });
              child.once("exit", (code) => reject(new Error(`worker exited with ${code}`)));
            }),
        ),
      );
      return { done, server, ipcRequests, startAt };
    } finally {
      for (const c of children) c.kill();
    }
  }

  /**
   * The most a limit of `requests` per second with a burst of `requests` admits: the burst plus the
   * refill over the window as the primary saw it, from its opening to the last decision that came back
   * (checks issued just before the end are decided after it; on a loaded machine that can be 100 ms).
   */
  const most = (requests: number, durationMs: number, startAt: number, done: DoneMessage[]) =>
    requests + (requests * Math.max(durationMs, Math.max(...done.map((d) => d.lastAt)) - startAt)) / 1000;

  it("holds_100_per_second_within_5_percent_across_two_workers_under_concurrent_load", async () => {
    const durationMs = 6000;
    const { done, ipcRequests, startAt } = await runWorkers(
      {
        limit: { requests: 100, periodMs: 1000, burst: 100 },
        key: "client",
        durationMs,
        concurrency: 200,
        paceMs: 10,
      },
      [true, true],
    );
    const allowed = done.reduce((s, d) => s + d.allowed, 0);
    const expected = 100 + (100 * durationMs) / 1000;
    expect(allowed).toBeGreaterThanOrEqual(expected * 0.95);
    expect(allowed).toBeLessThanOrEqual(most(100, durationMs, startAt, done) * 1.05);
    for (const d of done) {
      expect(d.storeErrors).toBe(0);
      expect(d.allowed).toBeGreaterThan(0); // both workers got a share
      expect(d.sync / (d.sync + d.async)).toBeGreaterThan(0.9); // most checks never wait
    }
    const checks = done.reduce((s, d) => s + d.sync + d.async, 0);
    expect(checks).toBeGreaterThan(20 * expected); // the limit was really under pressure
    expect(ipcRequests).toBeLessThan(checks / 5); // asks are batched and leased, not one per check
  }, 30_000);

  it("lets_a_client_on_one_worker_use_the_whole_limit", async () => {
    const durationMs = 3000;
    const { done, startAt } = await runWorkers(
      {
        limit: { requests: 100, periodMs: 1000, burst: 100 },
        key: "client",
        durationMs,
        concurrency: 100,
        paceMs: 10,
      },
      [true, false],
    );
    const expected = 100 + (100 * durationMs) / 1000;
    expect(done[0]!.allowed).toBeGreaterThanOrEqual(expected * 0.95);
    expect(done[0]!.allowed).toBeLessThanOrEqual(most(100, durationMs, startAt, done) * 1.05);
  }, 30_000);
});
