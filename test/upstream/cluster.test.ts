/**
 * Ring-hash balancing of an UpstreamCluster, called directly (no connection opens: a pool connects on its
 * first request): the keys — client addresses — spread evenly over the endpoints whatever their
 * addresses, an ejected endpoint's keys (and only those) move to the next endpoint of the ring and come
 * back after, an added endpoint takes about its share and nothing else moves, and a retry of a key goes
 * where the key would go with its owner ejected — never back to the owner that just failed it. And the
 * active health checks of a DNS cluster (real probes to 127.0.0.x, answers from a DNS server on
 * 127.0.0.1): a probe of an endpoint DNS removed meanwhile changes nothing of the endpoints left.
 */
import dgram from "node:dgram";
import type * as DnsPromises from "node:dns/promises";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { setTimeout as sleep } from "node:timers/promises";
import { afterEach, describe, expect, it, vi } from "vitest";
import { PoolCache, UpstreamCluster, type Endpoint } from "../../runtime/upstream/cluster.ts";
import { gatewayConfig } from "../support/gateway.ts";
import { startBlackhole } from "../support/raw-upstream.ts";

// DNS discovery asks node:dns/promises' default resolver, whose servers a test cannot point elsewhere
// (its named exports keep the system's): here they ask, over UDP, the DNS server the test starts.
const dnsServer = vi.hoisted(() => ({ port: 0 }));
vi.mock("node:dns/promises", async (importOriginal) => {
  const real = await importOriginal<typeof DnsPromises>();
  const resolver = () => {
    const r = new real.Resolver({ timeout: 1000, tries: 1 });
    r.setServers([`127.0.0.1:${dnsServer.port}`]);
    return r;
  };
  return {
    ...real,
    resolve4: ((name: string, options: { ttl: true }) =>
      resolver().resolve4(name, options)) as typeof real.resolve4,
    resolve6: ((name: string, options: { ttl: true }) =>
      resolver().resolve6(name, options)) as typeof real.resolve6,
  };
});

const cleanup: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const f of cleanup.splice(0).reverse()) await f();
});

const RING_HASH = gatewayConfig(
  [{ name: "r", match: { path: "/r" }, to: "app", public: true, rateLimit: { requests: 1, per: "1s" } }],
  { app: { port: 8080 } },
  {},
  { app: { image: "r/app:1", port: 8080, loadBalancer: "ring-hash", allow: [{ from: ["gateway"] }] } },
).clusters.find((c) => c.name === "app")!;

async function ring(addresses: readonly string[]): Promise<UpstreamCluster> {
  const pools = new PoolCache({ connections: 8 });
  const endpoints = addresses.map((a) => {
    const colon = a.lastIndexOf(":");
    return { host: a.slice(0, colon), port: Number(a.slice(colon + 1)) };
  });
  const cluster = new UpstreamCluster(RING_HASH, { kind: "static", endpoints: { app: endpoints } }, pools, {
    onError: () => {},
    onEjection: () => {},
    onHealthChange: () => {},
  });
  await cluster.start();
  cleanup.push(async () => {
    cluster.close();
    await pools.closeAll();
  });
  return cluster;
}

/** The addresses of clients of one network: 10.1.0.1 … 10.1.39.254 (10 160 keys). */
const CLIENTS = Array.from({ length: 40 * 254 }, (_, i) => `10.1.${Math.floor(i / 254)}.${(i % 254) + 1}`);
const NOW = 1_000_000;

const owners = (c: UpstreamCluster, now = NOW): Endpoint[] => CLIENTS.map((k) => c.pick(k, now)!);

const FOUR_PODS = ["10.244.1.17:8080", "10.244.2.9:8080", "10.244.3.41:8080", "10.244.1.18:8080"];

describe("ring-hash spreads the keys evenly over the endpoints", () => {
  it.each([
    ["four_pods_of_three_nodes", FOUR_PODS],
    ["three_ports_of_one_host", ["127.0.0.1:40001", "127.0.0.1:40002", "127.0.0.1:40003"]],
    ["eight_consecutive_pod_addresses", Array.from({ length: 8 }, (_, i) => `10.244.0.${10 + i}:8080`)],
    ["three_consecutive_addresses", ["10.0.0.1:8080", "10.0.0.2:8080", "10.0.0.3:8080"]],
  ])(
    "gives_every_endpoint_of_%s_between_three_quarters_and_five_quarters_of_its_share",
    async (_n, addresses) => {
      const c = await ring(addresses);
      const counts = new Map<string, number>();
      for (const e of owners(c)) counts.set(e.key, (counts.get(e.key) ?? 0) + 1);
      const fair = CLIENTS.length / addresses.length;
      const shares = addresses.map((a) => Math.round(((counts.get(a) ?? 0) / fair) * 100) / 100);
      expect(
        shares.every((s) => s >= 0.75 && s <= 1.25),
        `shares of the fair share: ${shares.join(", ")}`,
      ).toBe(true);
    },
  );
});

describe("ring-hash moves only the keys it must", () => {
  it("moves_only_the_keys_of_an_ejected_endpoint_and_gives_them_back_when_its_ejection_ends", async () => {
    const c = await ring(FOUR_PODS);
    const before = owners(c);
    const ejected = before.find((e) => e.key === FOUR_PODS[0])!;
    for (let i = 0; i < RING_HASH.outlierDetection.consecutive5xx; i++) c.record(ejected, true, NOW);
    const during = owners(c);
    const moved = CLIENTS.filter((_, i) => during[i] !== before[i]);
    expect(moved.length).toBe(before.filter((e) => e === ejected).length);
    expect(during.includes(ejected)).toBe(false);
    const after = owners(c, NOW + RING_HASH.outlierDetection.baseEjectionMs + 1);
    expect(after.every((e, i) => e === before[i])).toBe(true);
  });

  it("gives_an_added_endpoint_about_its_share_taken_from_the_others_and_moves_nothing_else", async () => {
    const four = owners(await ring(FOUR_PODS)).map((e) => e.key);
    const five = owners(await ring([...FOUR_PODS, "10.244.2.30:8080"])).map((e) => e.key);
    const moved = five.filter((k, i) => k !== four[i]);
    expect(new Set(moved)).toEqual(new Set(["10.244.2.30:8080"]));
    expect(moved.length / CLIENTS.length).toBeGreaterThan(0.75 / 5);
    expect(moved.length / CLIENTS.length).toBeLessThan(1.25 / 5);
  });

  it("retries_a_key_on_the_endpoint_it_would_move_to_were_its_owner_ejected_never_on_the_owner", async () => {
    const c = await ring(FOUR_PODS);
    const owner = owners(c);
    const retries = CLIENTS.map((k, i) => c.pick(k, NOW, owner[i])!.key);
    // Each owner ejected in turn (a ring of its own): its keys' retries go where that ejection sends them.
    for (const address of FOUR_PODS) {
      const ejected = await ring(FOUR_PODS);
      const e = owners(ejected).find((x) => x.key === address)!;
      for (let i = 0; i < RING_HASH.outlierDetection.consecutive5xx; i++) ejected.record(e, true, NOW);
      const moved = owners(ejected);
      const mine = CLIENTS.flatMap((_, i) => (owner[i]!.key === address ? [i] : []));
      expect(mine.length).toBeGreaterThan(0);
      expect(mine.every((i) => retries[i] === moved[i]!.key && retries[i] !== address)).toBe(true);
    }
  });
});

/** A DNS server on 127.0.0.1 answering A queries for `name` with `addresses()` (TTL 1 s), nothing else. */
async function startDns(name: string, addresses: () => readonly string[]) {
  const socket = dgram.createSocket("udp4");
  socket.on("message", (q, peer) => {
    let off = 12;
    const labels: string[] = [];
    while (q[off]! > 0) {
      labels.push(q.toString("latin1", off + 1, off + 1 + q[off]!));
      off += q[off]! + 1;
    }
    const found = labels.join(".").toLowerCase() === name;
    const answers = found && q.readUInt16BE(off + 1) === 1 ? addresses() : [];
    const head = Buffer.alloc(12);
    q.copy(head, 0, 0, 2);
    head.writeUInt16BE(found ? 0x8180 : 0x8183, 2); // a response, recursion available; NXDOMAIN if not found
    head.writeUInt16BE(1, 4);
    head.writeUInt16BE(answers.length, 6);
    const records = answers.map((a) => {
      const r = Buffer.alloc(16);
      r.writeUInt16BE(0xc00c, 0); // the question's name
      r.writeUInt16BE(1, 2); // A
      r.writeUInt16BE(1, 4); // IN
      r.writeUInt32BE(1, 6); // TTL 1 s
      r.writeUInt16BE(4, 10);
      a.split(".").forEach((b, i) => (r[12 + i] = Number(b)));
      return r;
    });
    socket.send(Buffer.concat([head, q.subarray(12, off + 5), ...records]), peer.port, peer.address);
  });
  await new Promise<void>((r) => socket.bind(0, "127.0.0.1", r));
  cleanup.push(() => new Promise<void>((r) => socket.close(() => r())));
  return socket.address().port;
}

async function serve(host: string, port: number, handler: http.RequestListener): Promise<number> {
  const s = http.createServer(handler);
  await new Promise<void>((r) => s.listen(port, host, r));
  cleanup.push(() => {
    s.closeAllConnections();
    return new Promise<void>((r) => s.close(() => r()));
  });
  return (s.address() as AddressInfo).port;
}

async function until(check: () => boolean): Promise<void> {
  for (const end = Date.now() + 15_000; !check(); await sleep(20))
    if (Date.now() > end) throw new Error("not met within 15 s");
}

/** A round-robin cluster probing /healthz every 100 ms (one failure or success flips an endpoint), started. */
async function probed(
  timeoutMs: number,
  discovery: ConstructorParameters<typeof UpstreamCluster>[1],
  edit: Partial<typeof RING_HASH> = {},
): Promise<UpstreamCluster> {
  const pools = new PoolCache({ connections: 8 });
  const cluster = new UpstreamCluster(
    {
      ...RING_HASH,
      loadBalancer: "round-robin",
      ...edit,
      healthCheck: {
        path: "/healthz",
        intervalMs: 100,
        timeoutMs,
        healthyThreshold: 1,
        unhealthyThreshold: 1,
      },
    },
    discovery,
    pools,
    { onError: () => {}, onEjection: () => {}, onHealthChange: () => {} },
  );
  cleanup.push(async () => {
    cluster.close();
    await pools.closeAll();
  });
  await cluster.start();
  return cluster;
}

/** The distinct endpoints (as `f` names them) of `n` picks. */
const picked = (cluster: UpstreamCluster, n: number, f: (e: Endpoint) => string): string[] =>
  [...new Set(Array.from({ length: n }, () => { const e = cluster.pick("", Date.now()); return e ? f(e) : "none"; }))].sort(); // prettier-ignore

describe("active health checks of endpoints DNS replaces", () => {
  it("ignores_a_late_probe_result_of_an_endpoint_dns_removed_and_keeps_an_unhealthy_new_one_out", async () => {
    // x: fails its probes (out), then recovers slowly (3 s a probe); y: healthy; z: never healthy.
    let xRecovering = false;
    const seen = { zProbedAt: 0, slowProbes: 0, xAnsweredSinceZ: 0 };
    const port = await serve("127.0.0.2", 0, (_req, res) => {
      if (!xRecovering) return void res.writeHead(503).end();
      seen.slowProbes++;
      setTimeout(() => {
        res.end("ok");
        if (seen.zProbedAt > 0) seen.xAnsweredSinceZ++;
      }, 3000);
    });
    await serve("127.0.0.3", port, (_req, res) => res.end("ok"));
    await serve("127.0.0.4", port, (_req, res) => {
      seen.zProbedAt ||= Date.now();
      res.writeHead(503).end();
    });
    let answer = ["127.0.0.2", "127.0.0.3"];
    dnsServer.port = await startDns("app.mesh.example", () => answer);
    const cluster = await probed(
      5000,
      { kind: "dns", template: "{service}.mesh.example", refreshMs: 1000 },
      { port },
    );
    const hosts = (n: number) => picked(cluster, n, (e) => e.host);
    await until(() => hosts(10).join() === "127.0.0.3");
    // x starts recovering, and DNS replaces it with z while x's probes are out.
    xRecovering = true;
    await until(() => seen.slowProbes >= 2);
    answer = ["127.0.0.3", "127.0.0.4"];
    // z failed its probe, and x's probe still open at the swap (one per endpoint at a time) came back
    // since, late: its result is given time to be taken.
    await until(() => seen.zProbedAt > 0 && seen.xAnsweredSinceZ >= 1);
    await sleep(200);
    expect(hosts(20)).toEqual(["127.0.0.3"]);
  }, 60_000);
});

describe("active health checks of an endpoint whose connect hangs", () => {
  // With connectTimeout 0 (the system's own, ~2 minutes) a probe's connect still ends at the probe's
  // timeout: the endpoint is marked unhealthy, and the probe rounds of the others go on.
  it("marks_it_unhealthy_at_the_probes_timeout_when_the_connect_timeout_is_0", async () => {
    const hole = await startBlackhole();
    cleanup.push(async () => hole.close());
    let probes = 0;
    const port = await serve("127.0.0.1", 0, (_req, res) => {
      probes++;
      res.end("ok");
    });
    const t = Date.now();
    const cluster = await probed(
      300,
      {
        kind: "static",
        endpoints: {
          app: [
            { host: "127.0.0.1", port },
            { host: "127.0.0.1", port: hole.port },
          ],
        },
      },
      { connectTimeoutMs: 0 },
    );
    await until(() => picked(cluster, 10, (e) => String(e.port)).join() === String(port));
    expect(Date.now() - t).toBeLessThan(3000);
    const before = probes;
    await until(() => probes >= before + 3); // rounds go on: none waits for the hanging connect
  }, 30_000);
});

describe("DNS discovery after a failed resolution", () => {
  it("retries_a_failed_first_resolution_within_seconds_not_after_the_refresh_interval", async () => {
    // A headless service whose pods are not ready yet answers no address; a refresh interval of 60 s must
    // not keep the cluster empty for a minute after they are (Envoy's dns_failure_refresh_rate).
    let answer: string[] = [];
    dnsServer.port = await startDns("late.mesh.example", () => answer);
    const errors: string[] = [];
    const pools = new PoolCache({ connections: 8 });
    const cluster = new UpstreamCluster(
      { ...RING_HASH, service: "late", loadBalancer: "round-robin" },
      { kind: "dns", template: "{service}.mesh.example", refreshMs: 60_000 },
      pools,
      { onError: (m) => errors.push(m), onEjection: () => {}, onHealthChange: () => {} },
    );
    cleanup.push(async () => {
      cluster.close();
      await pools.closeAll();
    });
    await cluster.start();
    await until(() => errors.length >= 1);
    expect(cluster.pick("", Date.now())).toBeNull();
    answer = ["127.0.0.5"];
    await until(() => cluster.pick("", Date.now())?.host === "127.0.0.5"); // 15 s at most, against 60
  }, 30_000);
});
