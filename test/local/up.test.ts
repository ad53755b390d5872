/**
 * `meshgate up` on the shop example, end to end, as a user runs it: one real `meshgate up` process (19
 * children: 9 demo services, 9 sidecars, the gateway; Prometheus too when installed) on non-default
 * ports with a temporary state dir and 30 s SVIDs (so renewal happens during the test), poked with real
 * curl and openssl. The cases share the one spawn; the last one stops it with SIGINT and checks that
 * no child is left.
 */
import { execFile, type ChildProcess } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdtemp, readFile, readdir, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { curl } from "../support/curl.ts";
import { freeBlock } from "../support/ports.ts";
import { alive, killProcessesMentioning, spawnUp } from "../support/procs.ts";

const run = promisify(execFile);
const ROOT = new URL("../../", import.meta.url).pathname;
const BIN = join(ROOT, "bin/meshgate.js");
const PROMETHEUS = existsSync("/usr/bin/prometheus");

interface State {
  launcherPid: number;
  urls: { gateway: string; admin: string; prometheus: string | null };
  caDir: string;
  processes: { name: string; role: string; pid: number; state: string; ports: Record<string, number> }[];
  identities: { workload: string; cert: string; key: string; bundle: string }[];
}

let dir: string;
let child: ChildProcess;
let output: () => string = () => "";
let state: State;
let base: number;
let exited: Promise<number | null>;
const gatewayPort = () => base;
const adminPort = () => base + 1;
const tokens: string[] = [];

const proc = (name: string) => state.processes.find((p) => p.name === name)!;
const gw = (path: string) => `${state.urls.gateway}${path}`;

async function token(sub: string, scopes: string[]): Promise<string> {
  const { stdout } = await run(process.execPath, [
    BIN,
    "token",
    "--sub",
    sub,
    ...scopes.flatMap((s) => ["--scope", s]),
    "--state-dir",
    dir,
  ]);
  const t = stdout.trim();
  tokens.push(t);
  return t;
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "meshgate-up-"));
  base = await freeBlock(60);
  const args = [
    "examples/shop/mesh.yaml",
    "--gateway-port",
    String(gatewayPort()),
    "--admin-port",
    String(adminPort()),
    "--port-base",
    String(base + 10),
    "--state-dir",
    dir,
    "--svid-ttl",
    "30s",
    ...(PROMETHEUS ? [] : ["--no-prometheus"]),
  ];
  // A loose umask (002, many desktop distributions' default): whatever `up` creates must still pass its own
  // state-dir check (no group or other write) on the next run — run/ was created 0775 under it.
  const umask = process.umask(0o002);
  let up: Awaited<ReturnType<typeof spawnUp>>;
  try {
    up = await spawnUp(args, ROOT, 90_000);
  } finally {
    process.umask(umask);
  }
  child = up.child;
  exited = up.exited;
  output = up.output;
  state = JSON.parse(await readFile(join(dir, "state.json"), "utf8")) as State;
  // The gateway's first mTLS connections to each sidecar: on a loaded machine the very first request
  // through a cold path may exceed the shop's per-try timeouts (504); wait until the path answers.
  const t = await token("warm-up", ["orders:read"]);
  for (const [path, args] of [
    ["/api/products", []],
    ["/api/orders", ["-H", `Authorization: Bearer ${t}`]],
  ] as const) {
    const until = Date.now() + 20_000;
    while ((await curl(gw(path), [...args])).status !== 200 && Date.now() < until)
      await new Promise((r) => setTimeout(r, 250));
  }
}, 130_000);

afterAll(async () => {
  if (child && child.exitCode === null) {
    child.kill("SIGKILL");
    for (const p of state?.processes ?? [])
      try {
        process.kill(-p.pid, "SIGKILL");
      } catch {
        /* gone */
      }
  }
  // Whatever is left (e.g. setup failed before the state was read): every process of this state dir.
  if (dir) killProcessesMentioning(dir);
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe("meshgate up on the shop example", () => {
  it("prints_the_gateway_and_admin_urls_and_curl_lines_once_ready", async () => {
    expect(output()).toContain(`gateway http://127.0.0.1:${gatewayPort()}\n`);
    expect(output()).toContain(`admin http://127.0.0.1:${adminPort()}\n`);
    expect(output()).toMatch(/curl -i http:\/\/127\.0\.0\.1:\d+\/api\/products/);
    expect(output()).toMatch(/\[orders-sidecar\] /);
    expect(output()).toMatch(/\[orders\] demo service orders/);
    expect(state.processes.filter((p) => p.role === "sidecar")).toHaveLength(9);
    const jwks = (await (await fetch(`${state.urls.admin}/.well-known/jwks.json`)).json()) as {
      keys: Record<string, unknown>[];
    };
    expect(jwks.keys).toHaveLength(1);
    expect(jwks.keys[0]).not.toHaveProperty("d");
    const plan = await (await fetch(`${state.urls.admin}/api/plan`)).text();
    expect(plan).not.toMatch(/sha256:[0-9a-f]{64}/);
    expect(plan).not.toContain("PRIVATE KEY");
  });

  it("answers_401_without_a_token_and_200_with_a_meshgate_token", async () => {
    const anonymous = await curl(gw("/api/orders"));
    expect(anonymous.status).toBe(401);
    expect(anonymous.headers["x-meshgate-error"]).toBe("unauthenticated");
    const t = await token("alice", ["orders:read"]);
    const ok = await curl(gw("/api/orders"), ["-H", `Authorization: Bearer ${t}`]);
    expect(ok.status).toBe(200);
    expect(JSON.parse(ok.text).items).toHaveLength(2);
    const wrongScope = await curl(gw("/api/orders"), [
      "-H",
      `Authorization: Bearer ${await token("alice", ["catalog:read"])}`,
    ]);
    expect(wrongScope.status).toBe(403);
  });

  it("answers_an_api_key_route_with_the_dev_key_of_a_consumer", async () => {
    const key = (await readFile(join(dir, "api-keys", "acme-retail"), "utf8")).trim();
    const r = await curl(gw("/partner/stock/sku-9"), ["-H", `x-api-key: ${key}`]);
    expect(r.status).toBe(200);
    expect(JSON.parse(r.text)).toMatchObject({ id: "sku-9", service: "inventory" });
    expect((await curl(gw("/partner/stock/sku-9"), ["-H", "x-api-key: wrong"])).status).toBe(401);
  });

  it("serves_an_aggregated_response", async () => {
    const t = await token("bob", ["orders:read"]);
    const r = await curl(gw("/api/dashboard"), ["-H", `Authorization: Bearer ${t}`]);
    expect(r.status).toBe(200);
    const body = JSON.parse(r.text) as Record<string, { id?: string; items?: unknown[] }>;
    expect(Object.keys(body).sort()).toEqual(["featured", "orders", "profile"]);
    expect(body.profile!.id).toBe("bob"); // users' /me answered for the token's subject
    expect(body.orders!.items).toHaveLength(2);
  });

  it("rate_limits_with_429_and_retry_after", async () => {
    // create-order: 20/min with a burst of 5, keyed by subject (one local replica: not divided).
    const t = await token("rate-limited-carol", ["orders:write"]);
    const statuses: number[] = [];
    let limited;
    const started = Date.now();
    // The burst of 5 passes; then 429 — unless a slow machine lets a token refill (one per 3 s), which
    // admits one more request per 3 s elapsed: bounded, so a limiter that does not limit still fails.
    for (let i = 0; i < 12 && !limited; i++) {
      const r = await curl(gw("/api/orders"), [
        "-X",
        "POST",
        "-H",
        `Authorization: Bearer ${t}`,
        "-H",
        "content-type: application/json",
        "--data",
        '{"sku":"a-1"}',
      ]);
      statuses.push(r.status);
      if (r.status === 429) limited = r;
    }
    const refills = Math.floor((Date.now() - started) / 3000);
    expect(statuses.slice(0, 5)).toEqual([201, 201, 201, 201, 201]);
    expect(limited).toBeDefined();
    expect(statuses.filter((s) => s === 201).length).toBeLessThanOrEqual(5 + refills);
    expect(Number(limited!.headers["retry-after"])).toBeGreaterThan(0);
    expect(limited!.headers["x-meshgate-error"]).toBe("rate_limited");
  });

  it("calls_other_services_through_the_mesh_and_the_callees_sidecar_denies_what_the_spec_does_not_allow", async () => {
    // orders answers after calling payments, inventory, notifications and users through its sidecar.
    const t = await token("dave", ["orders:read"]);
    const r = await curl(gw("/api/orders"), ["-H", `Authorization: Bearer ${t}`]);
    expect(r.status).toBe(200);
    const calls = JSON.parse(r.text).calls as Record<string, { status: number }>;
    expect(Object.fromEntries(Object.entries(calls).map(([k, v]) => [k, v.status]))).toEqual({
      inventory: 200,
      notifications: 201,
      payments: 200,
      users: 200,
    });
    // users allows orders GET /users/* only: GET /me from orders is refused by users' sidecar.
    const ordersApp = proc("orders").ports.app;
    const debug = (service: string, path: string) =>
      curl(
        `http://127.0.0.1:${ordersApp}/__meshgate/call?service=${service}&path=${encodeURIComponent(path)}`,
      );
    const allowed = await debug("users", "/users/dave");
    expect(allowed.status).toBe(200);
    const denied = await debug("users", "/me");
    expect(denied.status).toBe(403);
    expect(denied.headers["x-meshgate-error"]).toBe("authz_denied");
    expect(denied.headers["x-meshgate-denied"]).toBe("path_not_allowed");
    const metrics = await (
      await fetch(`http://127.0.0.1:${proc("users-sidecar").ports.admin}/metrics`)
    ).text();
    expect(metrics).toMatch(/meshgate_authz_denied_total\{[^}]*reason="path_not_allowed"[^}]*\} [1-9]/);
    // catalog is not among orders' declared calls: its own sidecar refuses before any connection.
    const undeclared = await debug("catalog", "/products");
    expect(undeclared.status).toBe(403);
    expect(undeclared.headers["x-meshgate-error"]).toBe("destination_not_declared");
  });

  it("issues_sidecar_certificates_that_openssl_verifies_and_serves_them", async () => {
    const id = state.identities.find((i) => i.workload === "payments")!;
    const inter = join(dir, "identities", "payments", "intermediates.pem");
    const { stdout } = await run("openssl", [
      "verify",
      "-x509_strict",
      "-CAfile",
      join(state.caDir, "root.pem"),
      "-untrusted",
      inter,
      id.cert,
    ]);
    expect(stdout.trim()).toBe(`${id.cert}: OK`);
    // The chain the live payments sidecar presents, checked by openssl as a client with orders' SVID.
    const orders = state.identities.find((i) => i.workload === "orders")!;
    const s = await run("sh", [
      "-c",
      `out=$(echo | openssl s_client -connect 127.0.0.1:${proc("payments-sidecar").ports.inbound} -CAfile ${join(state.caDir, "root.pem")} -cert ${orders.cert} -key ${orders.key} -verify_return_error -tls1_3 2>&1); ` +
        `echo "$out" | grep "Verify return code"; echo "$out" | openssl x509 -noout -ext subjectAltName`,
    ]);
    expect(s.stdout).toContain("Verify return code: 0 (ok)");
    expect(s.stdout).toContain("spiffe://shop.example/ns/shop/sa/payments");
  });

  it("renews_svids_while_running", async () => {
    // 30 s SVIDs renew at half-life: by now (≥ 15 s after start) every identity was renewed at least once.
    const deadline = Date.now() + 20_000;
    while (!output().includes("[ca] renewed orders's SVID") && Date.now() < deadline)
      await new Promise((r) => setTimeout(r, 250));
    expect(output()).toContain("[ca] renewed orders's SVID");
    // The sidecar picks the new files up on its next watch event or poll (≤ 1 s): wait for it.
    let loaded = 0;
    while (loaded < 2 && Date.now() < deadline + 5000) {
      const metrics = await (
        await fetch(`http://127.0.0.1:${proc("orders-sidecar").ports.admin}/metrics`)
      ).text();
      loaded = Number(
        /meshgate_identity_reloads_total\{[^}]*result="loaded"[^}]*\} (\d+)/.exec(metrics)?.[1],
      );
      if (loaded < 2) await new Promise((r) => setTimeout(r, 250));
    }
    expect(loaded).toBeGreaterThanOrEqual(2);
  }, 30_000);

  it.skipIf(!PROMETHEUS)(
    "runs_prometheus_scraping_every_proxy",
    async () => {
      expect(state.urls.prometheus).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
      expect(output()).toContain(`prometheus ${state.urls.prometheus}`);
      const deadline = Date.now() + 25_000;
      let targets: { health: string; labels: Record<string, string> }[] = [];
      while (Date.now() < deadline) {
        const r = (await (await fetch(`${state.urls.prometheus}/api/v1/targets`)).json()) as {
          data: { activeTargets: { health: string; labels: Record<string, string> }[] };
        };
        targets = r.data.activeTargets;
        if (targets.length === 10 && targets.every((t) => t.health === "up")) break;
        await new Promise((r) => setTimeout(r, 500));
      }
      expect(targets.map((t) => `${t.labels.service}:${t.health}`).sort()).toEqual(
        [
          "catalog",
          "catalog-v2",
          "gateway",
          "inventory",
          "notifications",
          "orders",
          "payments",
          "search",
          "search-next",
          "users",
        ]
          .map((s) => `${s}:up`)
          .sort(),
      );
    },
    30_000,
  );

  it("leaves_nothing_in_its_state_dir_writable_by_group_or_others_under_a_loose_umask", async () => {
    const loose: string[] = [];
    const walk = async (d: string): Promise<void> => {
      for (const e of await readdir(d, { withFileTypes: true })) {
        const path = join(d, e.name);
        if (((await stat(path)).mode & 0o022) !== 0) loose.push(path.slice(dir.length + 1));
        // Prometheus makes its own data dirs with the umask's modes: their 0700 parent keeps others out.
        if (e.isDirectory() && e.name !== "prometheus-data") await walk(path);
      }
    };
    await walk(dir);
    expect(loose).toEqual([]);
    // The generated configs may hold credentials: readable by this user only.
    expect((await stat(join(dir, "run", "gateway.json"))).mode & 0o777).toBe(0o600);
    if (PROMETHEUS) expect((await stat(join(dir, "prometheus-data"))).mode & 0o777).toBe(0o700);
  });

  it("restarts_a_killed_process_and_api_status_and_state_json_follow_its_new_pid_until_ready", async () => {
    type Status = { name: string; pid: number; state: string; restarts: number };
    const old = proc("catalog").pid;
    process.kill(old, "SIGKILL");
    const written = async () => JSON.parse(await readFile(join(dir, "state.json"), "utf8")) as State;
    const deadline = Date.now() + 30_000;
    let live: Status | undefined;
    let file: State["processes"][number] | undefined;
    while (Date.now() < deadline) {
      const status = (await (await fetch(`${state.urls.admin}/api/status`)).json()) as Status[];
      live = status.find((x) => x.name === "catalog");
      file = (await written()).processes.find((x) => x.name === "catalog");
      const restarted = live !== undefined && live.pid !== old && live.state === "ready";
      if (restarted && file?.pid === live!.pid && file.state === "ready") break;
      await new Promise((r) => setTimeout(r, 250));
    }
    expect(output()).toContain("[supervisor] catalog exited (signal SIGKILL); restart 1 in 250 ms");
    expect(live).toMatchObject({ state: "ready", restarts: 1 });
    expect(live!.pid).not.toBe(old);
    expect(alive(live!.pid)).toBe(true);
    expect(file).toMatchObject({ pid: live!.pid, state: "ready" });
    state = await written(); // the last case checks every pid it lists is gone after the stop
  }, 40_000);

  it("refuses_a_taken_port_naming_it_and_the_field_to_change", async () => {
    const other = await mkdtemp(join(tmpdir(), "meshgate-up-taken-"));
    try {
      const r = await run(
        process.execPath,
        [
          BIN,
          "up",
          "examples/shop/mesh.yaml",
          "--gateway-port",
          String(gatewayPort()),
          "--admin-port",
          String(base + 2),
          "--port-base",
          String(base + 10 + 200),
          "--state-dir",
          other,
          "--no-prometheus",
        ],
        { cwd: ROOT },
      ).then(
        () => ({ code: 0, stderr: "" }),
        (e: { code: number; stderr: string }) => e,
      );
      expect(r.code).toBe(1);
      expect(r.stderr).toContain(
        `port ${gatewayPort()} (gateway http) is already in use: change targets.local.gatewayPort (or --gateway-port)`,
      );
      expect(r.stderr).toContain("[E_LOCAL_PORT_TAKEN]");
      expect(existsSync(join(other, "ca"))).toBe(false); // nothing was started
    } finally {
      await rm(other, { recursive: true, force: true });
    }
  });

  it("stops_every_process_on_sigint_and_leaves_no_child_and_no_secret_in_its_output", async () => {
    const pids = state.processes.map((p) => p.pid);
    expect(pids.every(alive)).toBe(true);
    child.kill("SIGINT");
    expect(await exited).toBe(0);
    expect(output()).toContain("[up] stopped");
    const left = pids.filter(alive);
    expect(left).toEqual([]);
    // No secret ever reached the console: private keys, the dev API keys, the tokens.
    expect(output()).not.toContain("PRIVATE KEY");
    for (const f of await readdir(join(dir, "api-keys")))
      expect(output()).not.toContain((await readFile(join(dir, "api-keys", f), "utf8")).trim());
    for (const t of tokens) expect(output()).not.toContain(t.split(".")[2]!);
    const final = JSON.parse(await readFile(join(dir, "state.json"), "utf8")) as { running: boolean };
    expect(final.running).toBe(false);
  }, 40_000);
});
