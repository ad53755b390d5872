/**
 * Operating the gateway: the admin listener, atomic reload (an invalid config is rejected whole while the
 * old one keeps serving; 100 reloads under load fail no request), graceful drain, and the
 * `meshgate gateway` process driven by real signals.
 */
import { spawn } from "node:child_process";
import { mkdtemp, readFile, rename, rm, writeFile } from "node:fs/promises";
import http from "node:http";
import http2 from "node:http2";
import https from "node:https";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { exportJWK, generateKeyPair } from "jose";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { sealRuntimeConfig, type GatewayRuntimeConfig } from "../../runtime/contract/index.ts";
import { maskConfigHash } from "../../runtime/contract/exposed-hash.ts";
import {
  freePort,
  gatewayConfig,
  h2Status,
  request,
  startGatewayProcess,
  startTestGateway,
  startUpstream,
  type Upstream,
} from "../support/gateway.ts";
import { selfSignedCert } from "../support/certs.ts";
import { until } from "../sidecar/support.ts";
import { rawConnection } from "../support/raw-client.ts";
import { createAdminServer } from "../../runtime/gateway/admin.ts";

// Replica-scoped: the Redis store configured below (to check its redaction) is not reachable here, and
// fleet-scoped limits would answer by its fail mode (closed).
const PUBLIC = { public: true, rateLimit: { requests: 100000, per: "1s", scope: "replica" } };
const ROOT = new URL("../../", import.meta.url).pathname;

let app: Upstream;
let slow: Upstream;
let dir: string;
let cert: { hosts: string[]; certFile: string; keyFile: string };

beforeAll(async () => {
  app = await startUpstream();
  slow = await startUpstream((_req, res) => {
    setTimeout(() => {
      res.writeHead(200, { "content-type": "text/plain" });
      res.end("slow done");
    }, 400);
  });
  dir = await mkdtemp(join(tmpdir(), "meshgate-ops-"));
  cert = { hosts: ["localhost"], ...(await selfSignedCert(dir, "edge", "localhost")) };
});
afterAll(async () => {
  await Promise.all([app.close(), slow.close()]);
  await rm(dir, { recursive: true, force: true });
});

function config(extraRoutes: Record<string, unknown>[] = []): GatewayRuntimeConfig {
  return gatewayConfig(
    [
      { name: "v1", match: { path: "/v1/**" }, to: "app", ...PUBLIC },
      { name: "slow", match: { path: "/slow" }, to: "slow", ...PUBLIC },
      ...extraRoutes,
    ],
    { app, slow },
    {
      apiKeys: { consumers: { acme: { keyHashes: [`sha256:${"a".repeat(64)}`] } } },
      rateLimitStore: { redis: { url: "redis://user:hunter2@redis.internal:6379", failMode: "closed" } },
    },
  );
}

/**
 * One request loop per entry of `clients` (an agent, or undefined: a connection per request) against
 * `/v1/load` while 100 reloads alternate between `configs`; the statuses and errors they met.
 */
/** Requests the clients finish between two reloads of reloadsUnderLoad (at least). */
const REQUESTS_PER_RELOAD = 5;

async function reloadsUnderLoad(
  gw: Awaited<ReturnType<typeof startTestGateway>>,
  clients: readonly (http.Agent | undefined)[],
  configs: readonly GatewayRuntimeConfig[],
): Promise<{ statuses: Map<number, number>; errors: string[] }> {
  const statuses = new Map<number, number>();
  const errors: string[] = [];
  let stop = false;
  let completed = 0;
  const loop = async (agent: http.Agent | undefined) => {
    while (!stop) {
      try {
        const r = await request(`${gw.url}/v1/load`, agent ? { agent } : {});
        statuses.set(r.status, (statuses.get(r.status) ?? 0) + 1);
      } catch (err) {
        errors.push((err as Error & { code?: string }).code ?? (err as Error).message);
      }
      completed++;
    }
  };
  const loops = clients.map(loop);
  try {
    for (let i = 0; i < 100; i++) {
      const r = await gw.reload(JSON.stringify(configs[i % configs.length]));
      expect(r.ok).toBe(true);
      // Every reload happens under load: the next one waits until the clients have finished
      // REQUESTS_PER_RELOAD more requests (on a busy machine a fixed pause let reloads outrun them).
      const target = completed + REQUESTS_PER_RELOAD;
      await until(
        async () => completed >= target,
        5_000,
        `${REQUESTS_PER_RELOAD} requests after reload ${i + 1}`,
      );
    }
  } finally {
    stop = true;
    await Promise.all(loops);
  }
  return { statuses, errors };
}

/** The clusters, with "probed" health-checked every 100 ms (so a cluster left running shows upstream). */
function probedEvery100ms(clusters: GatewayRuntimeConfig["clusters"]): GatewayRuntimeConfig["clusters"] {
  const healthCheck = {
    path: "/healthz",
    intervalMs: 100,
    timeoutMs: 100,
    healthyThreshold: 1,
    unhealthyThreshold: 1,
  };
  return clusters.map((cl) => (cl.name === "probed" ? { ...cl, healthCheck } : cl));
}

describe("admin listener", () => {
  it("serves_live_ready_metrics_and_a_redacted_config", async () => {
    const gw = await startTestGateway(config());
    try {
      await request(`${gw.url}/v1/x`);
      expect((await fetch(`${gw.adminUrl}/live`)).status).toBe(200);
      expect((await fetch(`${gw.adminUrl}/ready`)).status).toBe(200);
      const metrics = await fetch(`${gw.adminUrl}/metrics`);
      expect(metrics.headers.get("content-type")).toContain("text/plain; version=0.0.4");
      const text = await metrics.text();
      expect(text).toMatch(/meshgate_requests_total\{proxy="gateway",route="v1",code_class="2xx"\} 1/);
      expect(text).toContain(
        'meshgate_request_duration_seconds_bucket{proxy="gateway",route="v1",le="+Inf"} 1',
      );
      expect(text).toMatch(
        // The config holds a Redis password: its hash is shown masked (see "the config hash it shows").
        new RegExp(`meshgate_config_info\\{proxy="gateway",hash="${maskConfigHash(gw.currentHash())}"\\} 1`),
      );
      const shown = await (await fetch(`${gw.adminUrl}/config`)).text();
      expect(shown).not.toContain("a".repeat(64));
      expect(shown).not.toContain("hunter2");
      expect(JSON.parse(shown).auth.apiKeys.consumers[0].keyHashes).toEqual(["[redacted]"]);
    } finally {
      await gw.drain();
    }
  });
});

// The sealed hash is an unsalted SHA-256 over the whole config: shown in config_info, /config and the start
// and reload lines, it let whoever reads a metric test guesses of a Redis password offline (recompute the
// hash of the config for each guess). A config with a credential shows an HMAC of it under a key of the
// process; one without shows the sealed hash (what the config-hash annotation and Docker label carry).
describe("admin listener: the config hash it shows", () => {
  const withRedis = (url: string | null, apiKeys = false) => {
    const { hash: _h, ...r } = config();
    return sealRuntimeConfig<GatewayRuntimeConfig>({
      ...r,
      auth: { ...r.auth, apiKeys: apiKeys ? r.auth.apiKeys : null },
      rateLimitStore: url === null ? { kind: "local", replicas: 1 } : { ...r.rateLimitStore, url },
    } as never);
  };
  const shown = async (gw: Awaited<ReturnType<typeof startTestGateway>>) => {
    const metrics = await (await fetch(`${gw.adminUrl}/metrics`)).text();
    const info = [...metrics.matchAll(/^meshgate_config_info\{proxy="gateway",hash="([^"]+)"\} 1$/gm)];
    const config = (await (await fetch(`${gw.adminUrl}/config`)).json()) as { hash: string };
    return { info: info.map((m) => m[1]), config: config.hash };
  };

  it.each<[string, string | null, boolean, boolean]>([
    [
      "is_no_guessing_oracle_for_a_redis_password_yet_changes_with_it",
      "redis://u:hunter2@redis.internal:6379",
      true,
      false,
    ],
    ["is_the_sealed_hash_for_a_config_without_credentials", null, false, false],
    // API-key hashes are written in the spec (the repository) and keys are random tokens: no secret to guess.
    ["is_the_sealed_hash_for_a_config_whose_only_secrets_are_api_key_hashes", null, false, true],
  ])("%s", async (_claim, url, masked, apiKeys) => {
    const first = withRedis(url, apiKeys);
    const gw = await startTestGateway(first);
    try {
      const before = await shown(gw);
      const started = gw.logs.find((l) => l.event === "started")!.hash as string;
      expect(before.info).toEqual([before.config]);
      expect(started).toBe(before.config);
      if (!masked) {
        expect(before.config).toBe(first.hash);
        return;
      }
      // Not the sealed hash (the value a guess of the password reproduces), nor anything derived from the
      // config alone.
      expect(before.config).not.toBe(first.hash);
      expect(before.config).toMatch(/^hmac-sha256:[0-9a-f]{64}$/);
      // Only the password changes: the shown hash changes too (the reload is visible), and is no oracle either.
      const next = withRedis("redis://u:hunter3@redis.internal:6379");
      expect((await gw.reload(JSON.stringify(next))).ok).toBe(true);
      const after = await shown(gw);
      expect(after.info).toEqual([after.config]);
      expect(after.config).not.toBe(before.config);
      expect(after.config).not.toBe(next.hash);
      expect(gw.logs.find((l) => l.event === "reloaded")!.hash).toBe(after.config);
      expect(gw.rawLog()).not.toContain(first.hash);
      expect(gw.rawLog()).not.toContain(next.hash);
    } finally {
      await gw.drain();
    }
  });
});

describe("admin listener: no secret in /config", () => {
  it("hides_private_jwk_members_symmetric_keys_and_url_credentials_keeping_public_keys_and_exact_urls", async () => {
    // An inline JWKS is meant to hold public keys; a key pair pasted whole, or an `oct` key, is accepted
    // (the runtime verifies with the public members only) and must not be published by /config. URLs may
    // carry credentials: OTLP gateways take basic auth as https://user:token@….
    const { privateKey } = await generateKeyPair("ES256", { extractable: true });
    const pair = { ...(await exportJWK(privateKey)), kid: "pair" };
    const base = gatewayConfig(
      [{ name: "v1", match: { path: "/v1/**" }, to: "app", ...PUBLIC }],
      { app },
      {
        jwt: {
          inline: {
            issuer: "https://idp.example",
            audiences: ["api"],
            algorithms: ["ES256"],
            jwks: { keys: [pair, { kty: "oct", kid: "sym", k: "c3ltbWV0cmljLXNlY3JldA" }] },
          },
          remote: {
            issuer: "https://idp2.example",
            audiences: ["api"],
            algorithms: ["ES256"],
            jwksUri: "https://jwks-user:jwks-pass@idp2.example/keys",
          },
        },
      },
    );
    const { hash: _h, ...rest } = base;
    const otlpEndpoint = "https://123456:glc_secret-token@otlp.example.com/otlp";
    // translate keeps only public members; a RuntimeConfig written by hand (or by an older translate) may
    // still hold the pair and the oct key: put them back as such a config would carry them.
    const keys = [pair, { kty: "oct", kid: "sym", k: "c3ltbWV0cmljLXNlY3JldA" }];
    const gw = await startTestGateway(
      sealRuntimeConfig<GatewayRuntimeConfig>({
        ...rest,
        auth: {
          ...rest.auth,
          jwt: rest.auth.jwt.map((p) => (p.jwks ? { ...p, jwks: { keys } } : p)),
        },
        telemetry: { ...rest.telemetry, tracing: { ...rest.telemetry.tracing, otlpEndpoint } },
      }),
    );
    try {
      const text = await (await fetch(`${gw.adminUrl}/config`)).text();
      for (const secret of [pair.d!, "c3ltbWV0cmljLXNlY3JldA", "glc_secret-token", "jwks-pass"])
        expect(text, secret).not.toContain(secret);
      const shown = JSON.parse(text) as GatewayRuntimeConfig;
      const [inline, remote] = shown.auth.jwt;
      expect(inline!.jwks!.keys[0]).toEqual({ ...pair, d: "[redacted]" });
      expect(inline!.jwks!.keys[1]).toEqual({ kty: "oct", kid: "sym", k: "[redacted]" });
      expect(inline!.issuer).toBe("https://idp.example");
      expect(remote!.jwksUri).toBe("https://%5Bredacted%5D:%5Bredacted%5D@idp2.example/keys");
      expect(shown.telemetry.tracing.otlpEndpoint).toBe(
        "https://%5Bredacted%5D:%5Bredacted%5D@otlp.example.com/otlp",
      );
    } finally {
      await gw.drain();
    }
  });
});

describe("admin listener: requests from a browser page", () => {
  // A page on any site can make the operator's browser POST to 127.0.0.1: a form, or a no-cors fetch with
  // a text/plain body (no preflight). Browsers always send Origin on such a request; curl, kubectl and the
  // local stack never do.
  const CASES: readonly { claim: string; path: string; init: RequestInit; status: number }[] = [
    {
      claim: "a cross-site purge of the whole cache (text/plain JSON) is refused",
      path: "/cache/purge",
      init: {
        method: "POST",
        headers: { origin: "https://evil.example", "content-type": "text/plain" },
        body: '{"all":true}',
      },
      status: 403,
    },
    {
      claim: "a cross-site form POST to /reload is refused",
      path: "/reload",
      init: {
        method: "POST",
        headers: { origin: "null", "content-type": "application/x-www-form-urlencoded" },
        body: "a=b",
      },
      status: 403,
    },
    {
      claim: "a purge without Origin (curl, kubectl) is served",
      path: "/cache/purge",
      init: { method: "POST", body: '{"all":true}' },
      status: 200,
    },
    {
      claim: "GET /reload changes nothing (404)",
      path: "/reload",
      init: { method: "GET" },
      status: 404,
    },
  ];
  for (const c of CASES) {
    it(c.claim, async () => {
      const gw = await startTestGateway(config());
      try {
        const before = gw.logs.length;
        const r = await fetch(`${gw.adminUrl}${c.path}`, c.init);
        expect(r.status).toBe(c.status);
        if (c.status !== 200)
          expect(gw.logs.slice(before).filter((l) => l.event === "reload_rejected")).toEqual([]);
      } finally {
        await gw.drain();
      }
    });
  }
});

describe("admin listener on 127.0.0.1: a page that rebinds its DNS name to the loopback", () => {
  // The page's fetches are same-origin for the browser once evil.example resolves to 127.0.0.1: it could
  // read what they answer. Its requests name its own host; curl, Prometheus and the local stack name the
  // loopback.
  const CASES: readonly { claim: string; path: string; host: (port: number) => string; status: number }[] = [
    { claim: "cannot read /config", path: "/config", host: (p) => `evil.example:${p}`, status: 403 },
    { claim: "cannot read /metrics", path: "/metrics", host: () => "evil.example", status: 403 },
    { claim: "127.0.0.1 reads /config", path: "/config", host: (p) => `127.0.0.1:${p}`, status: 200 },
    { claim: "localhost reads /metrics", path: "/metrics", host: (p) => `LOCALHOST:${p}`, status: 200 },
    { claim: "[::1] reads /config", path: "/config", host: () => "[::1]", status: 200 },
    { claim: "127.0.0.2 reads /metrics", path: "/metrics", host: (p) => `127.0.0.2:${p}`, status: 200 },
    {
      claim: "a name starting like a loopback address cannot read /config",
      path: "/config",
      host: (p) => `127.0.0.1.evil.example:${p}`,
      status: 403,
    },
    { claim: "a probe of /ready answers any Host", path: "/ready", host: () => "10.1.2.3:9901", status: 200 },
  ];
  it.each(CASES)("$claim", async ({ path, host, status }) => {
    const gw = await startTestGateway(config());
    try {
      const port = Number(new URL(gw.adminUrl).port);
      const r = await request(`${gw.adminUrl}${path}`, { headers: { host: host(port) } });
      expect(r.status).toBe(status);
    } finally {
      await gw.drain();
    }
  });
});

describe("admin listener with admin.hosts (Docker: published on the host's loopback, reached from the bridge)", () => {
  // Docker's port forward delivers a connection to 127.0.0.1:9901 on the container's bridge address, so the
  // loopback-connection rule alone never applies there: with `admin.hosts` the Host check holds on every
  // connection, answering the loopback names and the listed ones (Prometheus scrapes `gateway:9901`).
  const withHosts = (): GatewayRuntimeConfig => {
    const { hash: _h, ...rest } = config();
    return sealRuntimeConfig<GatewayRuntimeConfig>({ ...rest, admin: { ...rest.admin, hosts: ["gateway"] } });
  };
  const CASES: readonly { claim: string; path: string; host: (port: number) => string; status: number }[] = [
    { claim: "the listed name reads /metrics", path: "/metrics", host: (p) => `Gateway:${p}`, status: 200 },
    { claim: "the loopback reads /config", path: "/config", host: (p) => `127.0.0.1:${p}`, status: 200 },
    {
      claim: "a rebound name cannot read /config",
      path: "/config",
      host: (p) => `evil.example:${p}`,
      status: 403,
    },
    { claim: "a probe of /ready answers any Host", path: "/ready", host: () => "10.1.2.3:9901", status: 200 },
  ];
  it.each(CASES)("$claim", async ({ path, host, status }) => {
    const gw = await startTestGateway(withHosts());
    try {
      const port = Number(new URL(gw.adminUrl).port);
      const r = await request(`${gw.adminUrl}${path}`, { headers: { host: host(port) } });
      expect(r.status).toBe(status);
    } finally {
      await gw.drain();
    }
  });

  it.each([
    {
      claim: "refuses a rebound name on a connection to no loopback address",
      hosts: ["gateway"],
      status: 403,
    },
    { claim: "without admin.hosts such a connection answers any Host", hosts: undefined, status: 200 },
  ])("$claim", async ({ hosts, status }) => {
    // A Unix socket: a real connection whose local address is no loopback one, as the bridge's is.
    const dir = await mkdtemp(join(tmpdir(), "meshgate-admin-"));
    const path = join(dir, "admin.sock");
    const admin = createAdminServer({
      ready: () => true,
      metrics: () => "",
      config: () => ({ shown: true }),
      reload: () => Promise.resolve({ ok: true }),
      purge: () => Promise.resolve(0),
      hosts: () => hosts,
    });
    await new Promise<void>((r) => admin.listen(path, r));
    try {
      const got = await new Promise<number>((resolve, reject) =>
        http
          .get({ socketPath: path, path: "/config", headers: { host: "evil.example:9901" } }, (res) => {
            res.resume();
            resolve(res.statusCode ?? 0);
          })
          .on("error", reject),
      );
      expect(got).toBe(status);
    } finally {
      await new Promise((r) => admin.close(r));
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe("reload", () => {
  it("rejects_an_invalid_config_whole_and_keeps_serving_the_old_one", async () => {
    const gw = await startTestGateway(config());
    try {
      const before = gw.currentHash();
      const tampered = JSON.stringify({
        ...config([{ name: "new", match: { path: "/new" }, to: "app", ...PUBLIC }]),
        hosts: ["x"],
      });
      for (const bad of ["{not json", JSON.stringify({ version: 99 }), tampered]) {
        const r = await gw.reload(bad);
        expect(r.ok).toBe(false);
        expect(gw.currentHash()).toBe(before);
      }
      expect((await request(`${gw.url}/v1/still`)).status).toBe(200);
      const metrics = await (await fetch(`${gw.adminUrl}/metrics`)).text();
      expect(metrics).toContain('meshgate_config_reloads_total{proxy="gateway",result="failure"} 3');
      expect(gw.logs.filter((l) => l.event === "reload_rejected")).toHaveLength(3);
    } finally {
      await gw.drain();
    }
  });

  it("names_the_serving_config_s_hash_in_config_info_after_any_number_of_reloads", async () => {
    // A gateway reloaded more often than config_info kept hashes showed hash="__overflow__" as the config
    // serving: which config a replica runs (the runbook's first question) could no longer be read.
    const gw = await startTestGateway(config());
    try {
      for (let i = 0; i < 8; i++) {
        const next = config([{ name: `r${i}`, match: { path: `/r${i}` }, to: "app", ...PUBLIC }]);
        expect((await gw.reload(JSON.stringify(next))).ok).toBe(true);
        const metrics = await (await fetch(`${gw.adminUrl}/metrics`)).text();
        const serving = [...metrics.matchAll(/^meshgate_config_info\{proxy="gateway",hash="([^"]+)"\} 1$/gm)];
        expect([i, serving.map((m) => m[1])]).toEqual([i, [maskConfigHash(next.hash)]]);
        expect([i, metrics.includes(`hash="__overflow__"`)]).toEqual([i, false]);
      }
    } finally {
      await gw.drain();
    }
  });

  it("names_the_rate_limit_mode_in_effect_alone_after_any_number_of_reloads", async () => {
    // The previous mode's series stayed at 0: the info gauge listed every past mode, and after 8 changes
    // the one in effect folded into store="__overflow__".
    const withReplicas = (replicas: number) => {
      const { hash: _h, ...r } = config();
      return sealRuntimeConfig<GatewayRuntimeConfig>({
        ...r,
        rateLimitStore: { kind: "local", replicas },
      } as never);
    };
    const gw = await startTestGateway(withReplicas(1));
    try {
      for (let replicas = 2; replicas <= 11; replicas++) {
        expect((await gw.reload(JSON.stringify(withReplicas(replicas)))).ok).toBe(true);
        const metrics = await (await fetch(`${gw.adminUrl}/metrics`)).text();
        const modes = [...metrics.matchAll(/^meshgate_ratelimit_mode_info\{([^}]*)\} (\S+)$/gm)];
        expect([replicas, modes.map((m) => `${m[1]} ${m[2]}`)]).toEqual([
          replicas,
          [`proxy="gateway",store="local",fleet_divisor="${replicas}" 1`],
        ]);
      }
    } finally {
      await gw.drain();
    }
  });

  it("swaps_in_a_valid_config", async () => {
    const gw = await startTestGateway(config());
    try {
      expect((await request(`${gw.url}/new`)).status).toBe(404);
      const next = config([{ name: "new", match: { path: "/new" }, to: "app", ...PUBLIC }]);
      expect(await gw.reload(JSON.stringify(next))).toEqual({ ok: true, hash: next.hash, changed: true });
      expect((await request(`${gw.url}/new`)).status).toBe(200);
      expect(await gw.reload(JSON.stringify(next))).toEqual({ ok: true, hash: next.hash, changed: false });
    } finally {
      await gw.drain();
    }
  });

  it("stops_what_a_config_refused_part_way_started", async () => {
    // The refused config's cluster starts (and health-checks its endpoint every 100 ms) before its
    // client-certificate CA file fails to load: after the refusal, nothing of it may keep running.
    const probed = await startUpstream();
    const ca = await selfSignedCert(dir, "partners-ca", "partners CA");
    const build = (caFile: string, healthCheck: boolean): GatewayRuntimeConfig => {
      const c = gatewayConfig(
        [
          { name: "v1", match: { path: "/v1/**" }, to: "app", ...PUBLIC },
          { name: "p", match: { path: "/p" }, to: "probed", ...PUBLIC },
        ],
        { app, probed },
      );
      const { hash: _h, ...rest } = c;
      return sealRuntimeConfig<GatewayRuntimeConfig>({
        ...rest,
        clusters: healthCheck ? probedEvery100ms(c.clusters) : c.clusters,
        // Listeners request client certificates when a provider exists (bound at start): both have one.
        auth: { ...c.auth, clientCert: [{ name: "partners", caFile, subjects: [], sans: [] }] },
      });
    };
    const gw = await startTestGateway(build(ca.certFile, false));
    try {
      const refused = await gw.reload(JSON.stringify(build(join(dir, "missing.pem"), true)));
      expect(refused).toMatchObject({
        ok: false,
        code: "E_RT_CONFIG_INVALID",
        error: expect.stringContaining("missing.pem"),
      });
      expect(await quiet(probed)).toBe(true);
      expect((await request(`${gw.url}/v1/x`)).status).toBe(200);
    } finally {
      await gw.drain();
      await probed.close();
    }
  });

  it("stops_what_a_prepared_reload_started_when_it_is_aborted", async () => {
    // A worker's first phase builds the config (its cluster health-checks its endpoint every 100 ms);
    // the primary aborts it (another worker refused): nothing of it may keep running or serve.
    const probed = await startUpstream();
    const c = gatewayConfig(
      [
        { name: "v1", match: { path: "/v1/**" }, to: "app", ...PUBLIC },
        { name: "p", match: { path: "/p" }, to: "probed", ...PUBLIC },
      ],
      { app, probed },
    );
    const { hash: _h, ...rest } = c;
    const next = sealRuntimeConfig<GatewayRuntimeConfig>({
      ...rest,
      clusters: probedEvery100ms(c.clusters),
    });
    const gw = await startTestGateway(config());
    try {
      const prepared = await gw.prepareReload(JSON.stringify(next));
      expect(prepared.result).toMatchObject({ ok: true, changed: true });
      await waitFor(() => probed.received.length > 0, 5000); // the prepared cluster runs…
      expect((await request(`${gw.url}/p`)).status).toBe(404); // …but does not serve
      expect(prepared.abort("worker 1 refused it")).toMatchObject({ code: "E_RT_RELOAD_ABORTED" });
      expect(await quiet(probed)).toBe(true);
      expect((await request(`${gw.url}/v1/x`)).status).toBe(200);
      // Nothing is held: the next reload applies.
      expect(await gw.reload(JSON.stringify(next))).toMatchObject({ ok: true, changed: true });
      expect((await request(`${gw.url}/p`)).status).toBe(200);
    } finally {
      await gw.drain();
      await probed.close();
    }
  });

  it("applies_a_reload_that_moves_a_listener_and_adds_a_route_finishing_requests_on_the_old_port", async () => {
    const gw = await startTestGateway(config());
    try {
      const oldPort = gw.ports.listeners[Object.keys(gw.ports.listeners)[0]!]!;
      const newPort = await freePort();
      const next = config([{ name: "extra", match: { path: "/extra" }, to: "app", ...PUBLIC }]);
      const { hash: _h, ...rest } = next;
      const moved = sealRuntimeConfig<GatewayRuntimeConfig>({
        ...rest,
        listeners: rest.listeners.map((l, i) => (i === 0 ? { ...l, port: newPort } : l)),
      });
      const seen = slow.received.length;
      const inFlight = request(`${gw.url}/slow`); // 400 ms upstream, started on the old listener
      await waitFor(() => slow.received.length > seen, 5000); // under way (a fixed pause may not be)
      expect(await gw.reload(JSON.stringify(moved))).toMatchObject({ ok: true, changed: true });
      // The new port serves the whole new config; the old one accepts no new connection.
      expect((await request(`http://127.0.0.1:${newPort}/extra`)).status).toBe(200);
      expect((await request(`http://127.0.0.1:${newPort}/v1/x`)).status).toBe(200);
      await expect(request(`http://127.0.0.1:${oldPort}/v1/x`)).rejects.toThrow(/ECONNREFUSED/);
      expect(Object.values(gw.ports.listeners)).toEqual([newPort]);
      // The request that was under way on the old listener finished.
      expect(await inFlight).toMatchObject({ status: 200, body: "slow done" });
      expect(gw.logs.find((l) => l.event === "listeners_changed")).toMatchObject({
        moved: [Object.keys(gw.ports.listeners)[0]],
        added: [],
        removed: [],
      });
      const metrics = await (await fetch(`${gw.adminUrl}/metrics`)).text();
      expect(metrics).toMatch(/^meshgate_config_reloads_total\{proxy="gateway",result="success"\} 1$/m);
    } finally {
      await gw.drain();
    }
  });

  it("adds_a_listener_by_reload_and_removes_it_by_the_next", async () => {
    const gw = await startTestGateway(config());
    try {
      const extraPort = await freePort();
      const base = config();
      const { hash: _h, ...rest } = base;
      const withExtra = sealRuntimeConfig<GatewayRuntimeConfig>({
        ...rest,
        listeners: [...rest.listeners, { ...rest.listeners[0]!, name: "extra", port: extraPort }],
      });
      expect(await gw.reload(JSON.stringify(withExtra))).toMatchObject({ ok: true, changed: true });
      expect(gw.ports.listeners.extra).toBe(extraPort);
      expect((await request(`http://127.0.0.1:${extraPort}/v1/x`)).status).toBe(200);
      expect((await request(`${gw.url}/v1/x`)).status).toBe(200);
      expect(await gw.reload(JSON.stringify(base))).toMatchObject({ ok: true, changed: true });
      expect(gw.ports.listeners.extra).toBeUndefined();
      await expect(request(`http://127.0.0.1:${extraPort}/v1/x`)).rejects.toThrow(/ECONNREFUSED/);
      expect((await request(`${gw.url}/v1/x`)).status).toBe(200);
    } finally {
      await gw.drain();
    }
  });

  it("refuses_whole_a_reload_whose_new_port_is_taken_and_keeps_serving_on_the_old_one", async () => {
    const gw = await startTestGateway(config());
    const squatter = http.createServer().listen(0, "127.0.0.1");
    await new Promise((r) => squatter.once("listening", r));
    try {
      const taken = (squatter.address() as { port: number }).port;
      const next = config([{ name: "extra", match: { path: "/extra" }, to: "app", ...PUBLIC }]);
      const { hash: _h, ...rest } = next;
      const moved = sealRuntimeConfig<GatewayRuntimeConfig>({
        ...rest,
        listeners: rest.listeners.map((l, i) => (i === 0 ? { ...l, port: taken } : l)),
      });
      const r = await gw.reload(JSON.stringify(moved));
      expect(r).toMatchObject({
        ok: false,
        code: "E_RT_CONFIG_INVALID",
        error: expect.stringMatching(
          new RegExp(`^listeners\\.\\w+: port ${taken} on 127\\.0\\.0\\.1 is already in use`),
        ),
      });
      // Nothing of it serves (a reload applies all of a config or none of it).
      expect((await request(`${gw.url}/extra`)).status).toBe(404);
      expect((await request(`${gw.url}/v1/x`)).status).toBe(200);
      // The same route without moving the listener is applied.
      expect(await gw.reload(JSON.stringify(next))).toMatchObject({ ok: true, changed: true });
      expect((await request(`${gw.url}/extra`)).status).toBe(200);
    } finally {
      squatter.close();
      await gw.drain();
    }
  });

  it("refuses_a_reload_that_moves_the_admin_port_naming_it", async () => {
    const gw = await startTestGateway(config());
    try {
      const next = config([{ name: "extra", match: { path: "/extra" }, to: "app", ...PUBLIC }]);
      const { hash: _h, ...rest } = next;
      const r = await gw.reload(
        JSON.stringify(
          sealRuntimeConfig<GatewayRuntimeConfig>({ ...rest, admin: { port: rest.admin.port + 1 } }),
        ),
      );
      expect(r).toMatchObject({
        ok: false,
        code: "E_RT_RELOAD_RESTART_REQUIRED",
        error: expect.stringContaining("admin.port, which the gateway sets only when it starts"),
      });
      expect((await request(`${gw.url}/extra`)).status).toBe(404);
    } finally {
      await gw.drain();
    }
  });

  it("survives_100_reloads_under_load_with_no_failed_request", async () => {
    const gw = await startTestGateway(config());
    const agent = new http.Agent({ keepAlive: true, maxSockets: 16 });
    try {
      const { statuses, errors } = await reloadsUnderLoad(gw, Array(16).fill(agent), [
        config(),
        config([{ name: "extra", match: { path: "/extra" }, to: "app", ...PUBLIC }]),
      ]);
      expect(errors).toEqual([]);
      expect([...statuses.keys()]).toEqual([200]);
    } finally {
      agent.destroy();
      await gw.drain();
    }
  });
});

type Listener = GatewayRuntimeConfig["listeners"][number];
/** `base` with its (first) listener and limits edited, sealed: a config a reload would read. */
function edited(
  base: GatewayRuntimeConfig,
  listener: (l: Listener) => Listener,
  limits: Partial<GatewayRuntimeConfig["limits"]> = {},
): GatewayRuntimeConfig {
  const { hash: _h, ...rest } = base;
  return sealRuntimeConfig<GatewayRuntimeConfig>({
    ...rest,
    listeners: rest.listeners.map((l, i) => (i === 0 ? listener(l) : l)),
    limits: { ...rest.limits, ...limits },
  });
}

/**
 * One HTTPS GET (certificate not verified: the test's self-signed one), at most TLS `maxVersion`; `sni`
 * false: no server name, as a client connecting by IP address.
 */
function httpsStatus(
  port: number,
  path: string,
  maxVersion: "TLSv1.2" | "TLSv1.3" = "TLSv1.3",
  sni = true,
): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = https.request(
      {
        host: "127.0.0.1",
        ...(sni ? { servername: "localhost" } : {}),
        port,
        path,
        rejectUnauthorized: false,
        maxVersion,
        agent: false,
      },
      (res) => {
        res.resume();
        res.on("end", () => resolve(res.statusCode ?? 0));
      },
    );
    req.on("error", reject);
    req.end();
  });
}

/** One request over h2c with prior knowledge; rejects when the port does not speak HTTP/2. */
async function h2cStatus(port: number, path: string): Promise<number> {
  const session = http2.connect(`http://127.0.0.1:${port}`);
  session.on("error", () => {});
  try {
    return await h2Status(session, { ":path": path });
  } finally {
    session.destroy();
  }
}

describe("reload: a listener that keeps its port gets its new settings on the same socket", () => {
  const big = { "x-big": "b".repeat(4096) };
  it.each<{
    claim: string;
    start: (c: GatewayRuntimeConfig) => GatewayRuntimeConfig;
    next: (c: GatewayRuntimeConfig) => GatewayRuntimeConfig;
    before: (port: number) => Promise<void>;
    after: (port: number) => Promise<void>;
    settings: (name: string) => string[];
  }>([
    {
      claim: "http to https: new connections get TLS, plaintext is no longer served",
      start: (c) => c,
      next: (c) =>
        edited(c, (l) => ({ ...l, protocol: "https", tls: { minVersion: "TLSv1.2", certificates: [cert] } })),
      before: async (port) => expect((await request(`http://127.0.0.1:${port}/v1/a`)).status).toBe(200),
      after: async (port) => {
        expect(await httpsStatus(port, "/v1/b")).toBe(200);
        await expect(request(`http://127.0.0.1:${port}/v1/c`)).rejects.toThrow();
      },
      settings: (n) => [`listeners.${n}.protocol`, `listeners.${n}.tls.minVersion`],
    },
    {
      claim: "a TLS minimum raised from 1.2 to 1.3 refuses a TLS 1.2 client and serves a TLS 1.3 one",
      start: (c) =>
        edited(c, (l) => ({ ...l, protocol: "https", tls: { minVersion: "TLSv1.2", certificates: [cert] } })),
      next: (c) =>
        edited(c, (l) => ({ ...l, protocol: "https", tls: { minVersion: "TLSv1.3", certificates: [cert] } })),
      before: async (port) => expect(await httpsStatus(port, "/v1/a", "TLSv1.2")).toBe(200),
      after: async (port) => {
        await expect(httpsStatus(port, "/v1/b", "TLSv1.2")).rejects.toThrow(/protocol version|alert/i);
        expect(await httpsStatus(port, "/v1/c", "TLSv1.3")).toBe(200);
        // Without SNI too (the TLS server's default context, not the SNI callback's, serves those).
        await expect(httpsStatus(port, "/v1/b2", "TLSv1.2", false)).rejects.toThrow(
          /protocol version|alert/i,
        );
        expect(await httpsStatus(port, "/v1/c2", "TLSv1.3", false)).toBe(200);
      },
      settings: (n) => [`listeners.${n}.tls.minVersion`],
    },
    {
      claim: "a lower header limit answers 431 to a header the old limit let through",
      start: (c) => c,
      next: (c) => edited(c, (l) => l, { maxHeaderBytes: 2048 }),
      before: async (port) =>
        expect((await request(`http://127.0.0.1:${port}/v1/a`, { headers: big })).status).toBe(200),
      after: async (port) =>
        expect((await request(`http://127.0.0.1:${port}/v1/b`, { headers: big })).status).toBe(431),
      settings: () => ["limits.maxHeaderBytes"],
    },
    {
      claim: "HTTP/2 turned on serves h2c with prior knowledge beside HTTP/1.1",
      start: (c) => edited(c, (l) => ({ ...l, http2: false })),
      next: (c) => edited(c, (l) => ({ ...l, http2: true })),
      before: async (port) => {
        await expect(h2cStatus(port, "/v1/a")).rejects.toThrow();
      },
      after: async (port) => {
        expect(await h2cStatus(port, "/v1/b")).toBe(200);
        expect((await request(`http://127.0.0.1:${port}/v1/c`)).status).toBe(200);
      },
      settings: (n) => [`listeners.${n}.http2`],
    },
  ])("$claim", async ({ start, next, before, after, settings }) => {
    const base = start(config());
    const gw = await startTestGateway(base);
    try {
      const name = base.listeners[0]!.name;
      const port = gw.ports.listeners[name]!;
      await before(port);
      const target = next(base);
      expect(await gw.reload(JSON.stringify(target))).toMatchObject({ ok: true, hash: target.hash });
      expect(gw.ports.listeners[name]).toBe(port);
      expect(gw.logs.find((l) => l.event === "listeners_changed")).toMatchObject({
        rebuilt: [name],
        settings: settings(name),
        added: [],
        moved: [],
        removed: [],
      });
      await after(port);
    } finally {
      await gw.drain();
    }
  });

  it("finishes_a_request_under_way_on_the_old_settings_then_closes_that_connection_after_its_next_response", async () => {
    const base = config();
    const gw = await startTestGateway(base);
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    const name = base.listeners[0]!.name;
    try {
      const seen = slow.received.length;
      const inFlight = request(`${gw.url}/slow`, { agent }); // 400 ms upstream, on the old stack
      await waitFor(() => slow.received.length > seen, 5000); // under way (a fixed pause may not be)
      const next = edited(base, (l) => ({ ...l, http2: !l.http2 }));
      expect(await gw.reload(JSON.stringify(next))).toMatchObject({ ok: true, hash: next.hash });
      expect(gw.logs.find((l) => l.event === "listeners_changed")).toMatchObject({ rebuilt: [name] });
      const first = await inFlight;
      expect(first).toMatchObject({ status: 200, body: "slow done" });
      // The next request rides the same kept-alive connection (old settings) and is told it is its last.
      const second = await request(`${gw.url}/v1/again`, { agent });
      expect(second.status).toBe(200);
      expect(second.headers.connection).toBe("close");
      // Then a new connection, on the new stack: kept alive again.
      const third = await request(`${gw.url}/v1/new`, { agent });
      expect(third.status).toBe(200);
      expect(third.headers.connection).toBe("keep-alive");
    } finally {
      agent.destroy();
      await gw.drain();
    }
  });

  it("survives_100_same_port_rebuilds_under_load_with_no_failed_or_reset_request", async () => {
    // 8 clients that open a connection per request and 8 on kept-alive connections, while every reload
    // rebuilds the listener (HTTP/2 on and off, the header limit up and down) on its socket.
    const base = config();
    const gw = await startTestGateway(base);
    const agent = new http.Agent({ keepAlive: true, maxSockets: 8 });
    try {
      const { statuses, errors } = await reloadsUnderLoad(
        gw,
        [...Array<undefined>(8).fill(undefined), ...Array<http.Agent>(8).fill(agent)],
        [
          edited(base, (l) => ({ ...l, http2: true }), { maxHeaderBytes: 8192 }),
          edited(base, (l) => ({ ...l, http2: false }), { maxHeaderBytes: 16384 }),
        ],
      );
      expect(errors).toEqual([]);
      expect([...statuses.keys()]).toEqual([200]);
      expect(
        gw.logs.filter((l) => l.event === "listeners_changed" && (l.rebuilt as string[]).length === 1),
      ).toHaveLength(100);
    } finally {
      agent.destroy();
      await gw.drain();
    }
  });
});

describe("drain", () => {
  it("finishes_in_flight_requests_and_refuses_new_connections", async () => {
    const gw = await startTestGateway(config());
    const seen = slow.received.length;
    const inflight = request(`${gw.url}/slow`);
    await waitFor(() => slow.received.length > seen, 5000); // under way (a fixed pause may not be)
    const drained = gw.drain();
    await sleep(50);
    expect((await fetch(`${gw.adminUrl}/ready`).catch(() => ({ status: 0 }))).status).not.toBe(200);
    await expect(request(`${gw.url}/v1/after`)).rejects.toThrow();
    const r = await inflight;
    expect(r).toMatchObject({ status: 200, body: "slow done", complete: true });
    await drained;
  });

  it("answers_in_flight_http1_with_connection_close_and_h2_without_a_connection_header", async () => {
    const gw = await startTestGateway(
      gatewayConfig(
        [{ name: "slow", match: { path: "/slow" }, to: "slow", ...PUBLIC }],
        { slow },
        {
          listeners: [{ name: "http", port: 8080, protocol: "http", http2: true }],
        },
      ),
    );
    const warnings: string[] = [];
    const onWarning = (w: Error) => warnings.push(w.message);
    process.on("warning", onWarning);
    const seen = slow.received.length;
    const h1 = request(`${gw.url}/slow`);
    const client = http2.connect(gw.url);
    const h2 = new Promise<{ status: number; headers: http2.IncomingHttpHeaders; body: string }>(
      (resolve, reject) => {
        const stream = client.request({ ":path": "/slow" });
        let body = "";
        let headers: http2.IncomingHttpHeaders = {};
        stream.setEncoding("utf8");
        stream.on("response", (h) => (headers = h));
        stream.on("data", (c: string) => (body += c));
        stream.on("end", () => resolve({ status: Number(headers[":status"]), headers, body }));
        stream.on("error", reject);
      },
    );
    try {
      await waitFor(() => slow.received.length >= seen + 2, 5000); // both under way
      const drained = gw.drain();
      const [a, b] = await Promise.all([h1, h2]);
      expect(a).toMatchObject({ status: 200, body: "slow done", complete: true });
      expect(a.headers.connection).toBe("close");
      expect(b).toMatchObject({ status: 200, body: "slow done" });
      expect(b.headers.connection).toBeUndefined();
      expect(warnings.filter((m) => /connection header/i.test(m))).toEqual([]);
      await drained;
    } finally {
      process.off("warning", onWarning);
      client.close();
    }
  });
});

describe("drain keeps idle keep-alive connections for one more request", () => {
  it("a_kept_connection_s_next_request_within_the_grace_is_served_with_connection_close", async () => {
    const gw = await startTestGateway(config());
    const c = await rawConnection(gw.url);
    try {
      expect((await c.get("/v1/before"))?.status).toBe(200);
      const drained = gw.drain();
      await sleep(300); // the connection is idle, the client has not sent yet: closing it now would race
      expect(c.ended()).toBe(false);
      const r = await c.get("/v1/during");
      expect(r).toMatchObject({ status: 200 });
      expect(r!.head).toMatch(/\r\nconnection: close/i);
      expect(await c.closed(1000)).toBe(true);
      await drained;
    } finally {
      c.socket.destroy();
    }
  });

  it("an_idle_connection_that_sends_nothing_is_closed_after_the_grace_not_the_drain_timeout", async () => {
    const gw = await startTestGateway(config());
    const c = await rawConnection(gw.url);
    try {
      expect((await c.get("/v1/before"))?.status).toBe(200);
      const began = Date.now();
      await gw.drain();
      const took = Date.now() - began;
      expect(await c.closed(200)).toBe(true);
      expect(took).toBeGreaterThanOrEqual(900);
      expect(took).toBeLessThan(3000);
    } finally {
      c.socket.destroy();
    }
  });

  it("a_drain_with_no_connection_open_does_not_wait_for_the_grace", async () => {
    const gw = await startTestGateway(config());
    expect((await request(`${gw.url}/v1/x`)).status).toBe(200);
    const began = Date.now();
    await gw.drain();
    expect(Date.now() - began).toBeLessThan(500);
  });
});

describe("the meshgate gateway process", () => {
  /** The test config with its listener and admin on free ports, written to `name` for a gateway process. */
  const configOnFreePorts = async (name: string) => {
    const file = join(dir, name);
    const ports = await Promise.all([freePort(), freePort()]);
    const { hash: _x, ...r } = config();
    const sealed = sealRuntimeConfig<GatewayRuntimeConfig>({
      ...r,
      listeners: r.listeners.map((l) => ({ ...l, port: ports[0]! })),
      admin: { port: ports[1]! },
    });
    await writeFile(file, JSON.stringify(sealed));
    return { file, ports };
  };

  // The start line names the address --host bound (127.0.0.2 is loopback too, and not 127.0.0.1), with
  // one worker and with several (the primary prints it), and each listener's scheme: a TLS listener's
  // line said http:// (a script that curls it got a TLS alert back).
  it.each([["1"], ["2"]])(
    "prints_the_address_it_bound_and_each_listeners_scheme_with_%s_workers",
    async (workers) => {
      const file = join(dir, `bound-${workers}.json`);
      const ports = await Promise.all([freePort(), freePort(), freePort()]);
      const { hash: _x, ...r } = config();
      await writeFile(
        file,
        JSON.stringify(
          sealRuntimeConfig<GatewayRuntimeConfig>({
            ...r,
            listeners: [
              ...r.listeners.map((l) => ({ ...l, port: ports[0]! })),
              {
                name: "secure",
                port: ports[2]!,
                protocol: "https",
                http2: false,
                tls: { minVersion: "TLSv1.2", certificates: [cert] },
              },
            ],
            admin: { port: ports[1]! },
          }),
        ),
      );
      const args = ["gateway", "--config", file, "--host", "127.0.0.2", "--workers", workers];
      const child = spawn(process.execPath, [join(ROOT, "bin/meshgate.js"), ...args], {
        stdio: ["ignore", "pipe", "pipe"],
      });
      let out = "";
      child.stdout.on("data", (c: Buffer) => (out += c.toString()));
      child.stderr.on("data", (c: Buffer) => (out += c.toString()));
      try {
        await waitFor(() => /^admin http:\/\/\S+$/m.test(out), 15_000);
        expect(out).toContain(`gateway http http://127.0.0.2:${ports[0]}\n`);
        expect(out).toContain(`gateway secure https://127.0.0.2:${ports[2]}\n`);
        expect(out).toContain(`admin http://127.0.0.2:${ports[1]}\n`);
        expect((await request(`http://127.0.0.2:${ports[1]}/ready`)).status).toBe(200);
      } finally {
        child.kill("SIGKILL");
      }
    },
    30_000,
  );

  // admin.hosts (the Docker target's gateway): the listed name and the loopback are answered, another Host
  // is not — by the single process and by the primary of several workers.
  it.each([["1"], ["2"]])(
    "answers_the_admin_hosts_of_its_config_with_%s_workers",
    async (workers) => {
      const { file: plain, ports } = await configOnFreePorts(`admin-hosts-${workers}.json`);
      const { hash: _x, ...r } = JSON.parse(await readFile(plain, "utf8")) as GatewayRuntimeConfig;
      const sealed = sealRuntimeConfig<GatewayRuntimeConfig>({
        ...r,
        admin: { ...r.admin, hosts: ["gateway"] },
      });
      await writeFile(plain, JSON.stringify(sealed));
      const args = ["gateway", "--config", plain, "--host", "127.0.0.1", "--workers", workers];
      const child = spawn(process.execPath, [join(ROOT, "bin/meshgate.js"), ...args], {
        stdio: ["ignore", "pipe", "pipe"],
      });
      let out = "";
      child.stdout.on("data", (c: Buffer) => (out += c.toString()));
      child.stderr.on("data", (c: Buffer) => (out += c.toString()));
      try {
        await waitFor(() => /^admin http:\/\/\S+$/m.test(out), 15_000);
        const admin = `http://127.0.0.1:${ports[1]}/config`;
        expect((await request(admin, { headers: { host: `gateway:${ports[1]}` } })).status).toBe(200);
        expect((await request(admin, { headers: { host: `evil.example:${ports[1]}` } })).status).toBe(403);
      } finally {
        child.kill("SIGKILL");
      }
    },
    30_000,
  );

  // A streamed body is read only once forwarded: a client that left while the gateway waited before its
  // first attempt (here a fault delay; authentication or a Redis rate limit alike) had it destroyed with
  // nobody listening — an uncaught exception that ended the process and every request it served.
  it.each([
    ["an_http1_client_leaving_mid_body_while_the_gateway_waits", "h1"],
    ["an_h2_client_resetting_mid_body_while_the_gateway_waits", "h2"],
  ])(
    "survives_%s",
    async (_claim, protocol) => {
      const delayed = { name: "delayed", match: { path: "/delayed" }, to: "app", ...PUBLIC };
      const gw = await startGatewayProcess(
        dir,
        `left-mid-body-${protocol}`,
        config([{ ...delayed, fault: { delay: { duration: "300ms", percent: 100 } } }]),
      );
      try {
        const port = Number(new URL(gw.url).port);
        if (protocol === "h1") {
          const { connect } = await import("node:net");
          const s = connect(port, "127.0.0.1");
          s.on("error", () => {});
          s.write(
            "POST /delayed HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
          );
          await sleep(50);
          s.destroy();
        } else {
          const session = http2.connect(gw.url);
          session.on("error", () => {});
          const stream = session.request({ ":path": "/delayed", ":method": "POST" });
          stream.on("error", () => {});
          stream.write("hello");
          await sleep(50);
          stream.close(http2.constants.NGHTTP2_CANCEL);
          session.close();
        }
        // Sent after the one that left, so its delay ends after that one's: the process must still answer.
        const next = await request(`${gw.url}/delayed`, { method: "POST", body: "x" }).catch(
          (err: Error) => ({ status: 0, body: err.message }),
        );
        expect(next.status).toBe(200);
        expect(gw.child.exitCode).toBeNull();
        expect(gw.output()).not.toContain("client aborted");
      } finally {
        await gw.stop();
      }
    },
    30_000,
  );

  it("serves_reloads_on_file_change_and_sighup_and_exits_0_on_sigterm", async () => {
    const file = join(dir, "gateway.json");
    const base = config();
    // Listener ports must be real: pick free ones by binding port 0 first.
    const ports = await Promise.all([freePort(), freePort()]);
    const withPorts = (c: GatewayRuntimeConfig) => {
      const { hash: _x, ...r } = c;
      return sealRuntimeConfig<GatewayRuntimeConfig>({
        ...r,
        listeners: r.listeners.map((l) => ({ ...l, port: ports[0]! })),
        admin: { port: ports[1]! },
      });
    };
    await writeFile(file, JSON.stringify(withPorts(base)));
    const child = spawn(
      process.execPath,
      [join(ROOT, "bin/meshgate.js"), "gateway", "--config", file, "--host", "127.0.0.1"],
      {
        stdio: ["ignore", "pipe", "pipe"],
      },
    );
    let out = "";
    child.stdout.on("data", (c: Buffer) => (out += c.toString()));
    child.stderr.on("data", (c: Buffer) => (out += c.toString()));
    try {
      await waitFor(() => out.includes("admin http://127.0.0.1:"), 20_000);
      expect(out).toContain(`gateway http http://127.0.0.1:${ports[0]}`);
      const url = `http://127.0.0.1:${ports[0]}`;
      expect((await request(`${url}/v1/x`)).status).toBe(200);
      expect((await request(`${url}/late`)).status).toBe(404);

      // A changed file is picked up.
      await writeFile(
        file,
        JSON.stringify(withPorts(config([{ name: "late", match: { path: "/late" }, to: "app", ...PUBLIC }]))),
      );
      await waitFor(async () => (await request(`${url}/late`)).status === 200, 5_000);

      // An invalid file is refused; SIGHUP re-reads it and the old config keeps serving.
      await writeFile(file, "{ broken");
      child.kill("SIGHUP");
      await waitFor(() => out.includes("reload_rejected"), 5_000);
      expect((await request(`${url}/late`)).status).toBe(200);

      child.kill("SIGTERM");
      const code = await new Promise<number | null>((r) => child.on("exit", (c) => r(c)));
      expect(code).toBe(0);
      expect(out).toContain('"event":"stopped"');
    } finally {
      child.kill("SIGKILL");
    }
  }, 30_000);

  for (const workers of ["1", "2"]) {
    it(`picks_up_every_atomic_save_of_its_config_file_not_only_the_first_with_${workers}_worker(s)`, async () => {
      // Editors and config tools save by renaming a new file over the old one (a new inode each time);
      // a watch on the file itself followed the first inode and saw no save after the first.
      const g = await startGatewayProcess(dir, `atomic-${workers}`, config(), Number(workers));
      const file = join(dir, `atomic-${workers}.json`);
      const [port, admin] = [Number(new URL(g.url).port), Number(new URL(g.adminUrl).port)];
      const withRoutes = (n: number) => {
        const late = Array.from({ length: n }, (_, i) => ({
          name: `late${i + 1}`,
          match: { path: `/late${i + 1}` },
          to: "app",
          ...PUBLIC,
        }));
        const { hash: _x, ...r } = config(late);
        return JSON.stringify(
          sealRuntimeConfig<GatewayRuntimeConfig>({
            ...r,
            listeners: r.listeners.map((l) => ({ ...l, port })),
            admin: { port: admin },
          }),
        );
      };
      try {
        for (let n = 1; n <= 3; n++) {
          await writeFile(`${file}.tmp`, withRoutes(n));
          await rename(`${file}.tmp`, file);
          await waitFor(async () => (await request(`${g.url}/late${n}`)).status === 200, 5_000);
        }
      } finally {
        g.child.kill("SIGKILL");
      }
    }, 40_000);
  }

  it("writes_access_lines_in_batches_within_a_second_and_flushes_them_on_sigterm", async () => {
    expect(config().telemetry.accessLog.enabled).toBe(true);
    const { file, ports } = await configOnFreePorts("access.json");
    const child = spawn(
      process.execPath,
      [join(ROOT, "bin/meshgate.js"), "gateway", "--config", file, "--host", "127.0.0.1"],
      { stdio: ["ignore", "pipe", "pipe"] },
    );
    let out = "";
    child.stdout.on("data", (c: Buffer) => (out += c.toString()));
    child.stderr.on("data", (c: Buffer) => (out += c.toString()));
    const accessPaths = () =>
      out
        .split("\n")
        .filter((l) => l.includes('"event":"access"'))
        .map((l) => (JSON.parse(l) as { path: string }).path);
    try {
      await waitFor(() => out.includes("admin http://127.0.0.1:"), 20_000);
      const url = `http://127.0.0.1:${ports[0]}`;
      for (let i = 0; i < 5; i++) expect((await request(`${url}/v1/first-${i}`)).status).toBe(200);
      // Buffered, then written by the flush timer (1 s): all five lines, whole (the default two workers
      // each write their own, so only the order within a worker is kept).
      await waitFor(() => accessPaths().length === 5, 3_000);
      expect(accessPaths().sort()).toEqual([0, 1, 2, 3, 4].map((i) => `/v1/first-${i}`));
      for (let i = 0; i < 3; i++) expect((await request(`${url}/v1/last-${i}`)).status).toBe(200);
      // Exiting writes what the buffer holds: no line is lost with the process.
      child.kill("SIGTERM");
      // "close": the process exited and its stdout is read to the end.
      const code = await new Promise<number | null>((resolve) => child.on("close", (c) => resolve(c)));
      expect(code).toBe(0);
      expect(accessPaths().slice(5).sort()).toEqual([0, 1, 2].map((i) => `/v1/last-${i}`));
      expect(out).toContain('"event":"stopped"');
    } finally {
      child.kill("SIGKILL");
    }
  }, 30_000);

  it("exits_1_with_a_coded_error_for_an_invalid_config_file", async () => {
    const file = join(dir, "bad.json");
    await writeFile(file, JSON.stringify({ version: 1, kind: "gateway" }));
    const child = spawn(process.execPath, [join(ROOT, "bin/meshgate.js"), "gateway", "--config", file], {
      stdio: ["ignore", "pipe", "pipe"],
    });
    let err = "";
    child.stderr.on("data", (c: Buffer) => (err += c.toString()));
    const code = await new Promise<number | null>((r) => child.on("exit", (c) => r(c)));
    expect(code).toBe(1);
    expect(err).toMatch(/meshgate gateway: .* \[E_RT_CONFIG_INVALID\]/);
  });
});

/**
 * Whether `probed` (health-checked every 100 ms while a cluster runs) gets no request for 500 ms within
 * 10 s. (A probe sent just before the cluster stopped can arrive late on a loaded machine: one fixed
 * pause after another could count it.)
 */
async function quiet(probed: { received: unknown[] }): Promise<boolean> {
  for (const end = Date.now() + 10_000; Date.now() < end;) {
    const before = probed.received.length;
    await sleep(500);
    if (probed.received.length === before) return true;
  }
  return false;
}

async function waitFor(check: () => boolean | Promise<boolean>, timeoutMs: number): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (Date.now() < until) {
    try {
      if (await check()) return;
    } catch {
      /* not yet */
    }
    await sleep(50);
  }
  throw new Error(`condition not met within ${timeoutMs} ms`);
}
