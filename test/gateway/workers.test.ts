/**
 * `meshgate gateway --workers 2`: both worker processes serve (merged metrics show each), a reload
 * reaches every worker — all of them or none —, a killed worker is restarted, and SIGTERM leaves no
 * process behind.
 */
import { execFile, spawn, spawnSync, type ChildProcess } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { sealRuntimeConfig, type GatewayRuntimeConfig } from "../../runtime/contract/index.ts";
import {
  freePort,
  gatewayConfig,
  request,
  startGatewayProcess,
  startUpstream,
  type Upstream,
} from "../support/gateway.ts";
import { Jar, loginAtIdp, startIdp } from "../auth/idp.ts";

const run = promisify(execFile);
const ROOT = new URL("../../", import.meta.url).pathname;
const PUBLIC = { public: true, rateLimit: { requests: 100000, per: "1s" } };
const PRIMARY_FIXTURE = "test/gateway/fixtures/workers-primary.ts";

let app: Upstream;
let dir: string;
beforeAll(async () => {
  app = await startUpstream();
  dir = await mkdtemp(join(tmpdir(), "meshgate-workers-"));
});
afterAll(async () => {
  await app.close();
  await rm(dir, { recursive: true, force: true });
});

async function until(check: () => Promise<boolean> | boolean, ms: number): Promise<void> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (
      await Promise.resolve()
        .then(check)
        .catch(() => false)
    )
      return;
    await sleep(50);
  }
  throw new Error(`not met within ${ms} ms`);
}

const children = async (pid: number): Promise<number[]> => {
  const { stdout } = await run("ps", ["-o", "pid=", "--ppid", String(pid)]).catch(() => ({ stdout: "" }));
  return stdout
    .split("\n")
    .map((l) => Number(l.trim()))
    .filter((n) => n > 0);
};

/**
 * A `meshgate gateway --workers 2` process on its own config file and ports; `write` rewrites the file
 * (route "v" plus `extra`, the listener on `listenOn`, the admin listener on `adminOn`), `out` is
 * everything it printed.
 */
async function workersGateway(
  file: string,
  fixture?: { env: Record<string, string> },
  env: Record<string, string> = {},
  /** In a process group of its own (as a terminal's foreground job), for signals to the whole group. */
  detached = false,
) {
  const [port, admin] = [await freePort(), await freePort()];
  const write = async (
    extra: Record<string, unknown>[] = [],
    listenOn = port,
    adminOn = admin,
    limits: Partial<GatewayRuntimeConfig["limits"]> = {},
  ) => {
    const c = gatewayConfig([{ name: "v", match: { path: "/v/**" }, to: "app", ...PUBLIC }, ...extra], {
      app,
    });
    const { hash: _h, ...rest } = c;
    await writeFile(
      join(dir, file),
      JSON.stringify(
        sealRuntimeConfig<GatewayRuntimeConfig>({
          ...rest,
          listeners: rest.listeners.map((l) => ({ ...l, port: listenOn })),
          admin: { port: adminOn },
          limits: { ...rest.limits, ...limits },
        }),
      ),
    );
  };
  await write();
  const args = ["gateway", "--config", join(dir, file), "--host", "127.0.0.1", "--workers", "2"];
  // `fixture`: the primary of test/gateway/fixtures/workers-primary.ts (workers whose start a test holds).
  const child = fixture
    ? spawn(process.execPath, [join(ROOT, PRIMARY_FIXTURE), join(dir, file), String(admin)], {
        stdio: ["ignore", "pipe", "pipe"],
        env: { ...process.env, ...fixture.env },
      })
    : spawn(process.execPath, [join(ROOT, "bin/meshgate.js"), ...args], {
        stdio: ["ignore", "pipe", "pipe"],
        env: { ...process.env, ...env },
        detached,
      });
  const g = { child, write, out: "", url: `http://127.0.0.1:${port}`, adminUrl: `http://127.0.0.1:${admin}` };
  child.stdout.on("data", (c: Buffer) => (g.out += c.toString()));
  child.stderr.on("data", (c: Buffer) => (g.out += c.toString()));
  const ready = fixture ? "READY" : `admin http://127.0.0.1:${admin}`;
  await until(() => g.out.includes(ready), 15_000).catch((err: Error) => {
    child.kill("SIGKILL");
    throw err;
  });
  return g;
}

describe("worker processes", () => {
  it("share_the_listeners_reload_together_restart_after_a_crash_and_stop_cleanly", async () => {
    const g = await workersGateway("gw.json");
    const { child, write, url, adminUrl } = g;
    try {
      const workers = await children(child.pid!);
      expect(workers).toHaveLength(2);

      // Both workers take connections (each request on a new connection).
      for (let i = 0; i < 60; i++) expect((await request(`${url}/v/${i}`)).status).toBe(200);
      const metrics = await (await fetch(`${adminUrl}/metrics`)).text();
      for (const w of ["0", "1"]) {
        expect(metrics).toMatch(
          new RegExp(
            `meshgate_requests_total\\{worker="${w}",proxy="gateway",route="v",code_class="2xx"\\} [1-9]`,
          ),
        );
      }
      expect(metrics).toContain("meshgate_gateway_workers_ready 2");

      // A changed file reaches every worker: every new connection sees the new route.
      await write([{ name: "late", match: { path: "/late" }, to: "app", ...PUBLIC }]);
      await until(async () => (await request(`${url}/late`)).status === 200, 5_000);
      for (let i = 0; i < 30; i++) expect((await request(`${url}/late`)).status).toBe(200);

      const served = (await (await fetch(`${adminUrl}/config`)).json()) as { hash: string };

      // A file that moves the admin port is refused by every worker (a restart applies it), and stays
      // refused: neither the supervisor's /config nor the worker restarted below takes it up.
      const movedAdmin = await freePort();
      await write(
        [{ name: "moved", match: { path: "/moved" }, to: "app", ...PUBLIC }],
        undefined,
        movedAdmin,
      );
      await until(
        async () =>
          (await fetch(`${adminUrl}/metrics`).then((r) => r.text())).includes(
            'meshgate_config_reloads_total{proxy="gateway",result="failure"} 1',
          ),
        5_000,
      );
      expect(g.out).toContain("E_RT_RELOAD_RESTART_REQUIRED");
      expect(((await (await fetch(`${adminUrl}/config`)).json()) as { hash: string }).hash).toBe(served.hash);

      // A crashed worker is restarted, and the gateway keeps serving meanwhile.
      process.kill(workers[0]!, "SIGKILL");
      await until(
        async () =>
          (await fetch(`${adminUrl}/metrics`).then((r) => r.text())).includes(
            "meshgate_gateway_worker_restarts_total 1",
          ),
        5_000,
      );
      await until(async () => (await fetch(`${adminUrl}/ready`)).status === 200, 10_000);
      expect(await children(child.pid!)).toHaveLength(2);
      for (let i = 0; i < 20; i++) expect((await request(`${url}/v/after`)).status).toBe(200);
      // Both workers — the restarted one too — serve the accepted config, not the refused one.
      for (let i = 0; i < 30; i++) {
        expect((await request(`${url}/late`)).status).toBe(200);
        expect((await request(`${url}/moved`)).status).toBe(404);
      }
      await expect(fetch(`http://127.0.0.1:${movedAdmin}/ready`)).rejects.toThrow();

      // A file that moves the listener to another port is applied by both workers: each binds the new
      // port (shared with SO_REUSEPORT) before the primary commits, and closes the old one after.
      const newPort = await freePort();
      await write([{ name: "moved", match: { path: "/moved" }, to: "app", ...PUBLIC }], newPort);
      await until(async () => (await request(`http://127.0.0.1:${newPort}/moved`)).status === 200, 5_000);
      for (let i = 0; i < 30; i++)
        expect((await request(`http://127.0.0.1:${newPort}/moved`)).status).toBe(200);
      await until(
        async () =>
          await request(`${url}/v/x`).then(
            () => false,
            () => true,
          ),
        5_000,
      );

      // A lower header limit on the kept port: each worker builds the listener's new stack in its prepare
      // phase and swaps it in on commit — every new connection, whichever worker takes it, answers 431.
      const big = { "x-big": "b".repeat(4096) };
      await write([{ name: "moved", match: { path: "/moved" }, to: "app", ...PUBLIC }], newPort, undefined, {
        maxHeaderBytes: 2048,
      });
      await until(
        async () => (await request(`http://127.0.0.1:${newPort}/moved`, { headers: big })).status === 431,
        5_000,
      );
      for (let i = 0; i < 30; i++) {
        expect((await request(`http://127.0.0.1:${newPort}/moved`, { headers: big })).status).toBe(431);
        expect((await request(`http://127.0.0.1:${newPort}/moved`)).status).toBe(200);
      }

      const all = await children(child.pid!);
      child.kill("SIGTERM");
      const code = await new Promise<number | null>((r) => child.on("exit", (c) => r(c)));
      expect(code).toBe(0);
      await sleep(200);
      for (const pid of all) expect(() => process.kill(pid, 0)).toThrow(); // no worker left behind
    } finally {
      child.kill("SIGKILL");
    }
  }, 60_000);
});

describe("worker reloads: every worker or none", () => {
  it("a_reload_one_worker_cannot_prepare_in_time_is_applied_by_none_and_the_next_reload_by_both", async () => {
    const g = await workersGateway("gw2.json");
    const { child, write, url, adminUrl } = g;
    const [first, second] = [0, 1];
    let stopped = 0;
    try {
      const workers = await children(child.pid!);
      expect(workers).toHaveLength(2);
      const served = ((await (await fetch(`${adminUrl}/config`)).json()) as { hash: string }).hash;

      // One worker is frozen (SIGSTOP) while the file changes: it cannot prepare the reload in time.
      stopped = workers[second]!;
      process.kill(stopped, "SIGSTOP");
      await write([{ name: "early", match: { path: "/early" }, to: "app", ...PUBLIC }]);
      await until(() => g.out.includes(`worker ${second} did not answer`), 10_000);
      process.kill(stopped, "SIGCONT");
      stopped = 0;
      // The primary survived the missing answer, and neither worker serves the aborted config — not the
      // one that prepared it, nor the frozen one once it catches up with its queued messages.
      await sleep(300);
      for (let i = 0; i < 30; i++) {
        expect((await request(`${url}/early`)).status).toBe(404);
        expect((await request(`${url}/v/${i}`)).status).toBe(200);
      }
      expect(((await (await fetch(`${adminUrl}/config`)).json()) as { hash: string }).hash).toBe(served);
      const metrics = await (await fetch(`${adminUrl}/metrics`)).text();
      expect(metrics).toContain('meshgate_config_reloads_total{proxy="gateway",result="failure"} 1');
      // The worker that prepared it counts the abort as its own failure, with the abort's code.
      expect(metrics).toMatch(
        new RegExp(`meshgate_config_reloads_total\\{worker="${first}",proxy="gateway",result="failure"\\} 1`),
      );
      expect(g.out).toContain("E_RT_RELOAD_ABORTED");

      // The next change reaches both.
      await write([{ name: "later", match: { path: "/later" }, to: "app", ...PUBLIC }]);
      await until(async () => (await request(`${url}/later`)).status === 200, 5_000);
      for (let i = 0; i < 30; i++) expect((await request(`${url}/later`)).status).toBe(200);
      const after = await (await fetch(`${adminUrl}/metrics`)).text();
      expect(after).toContain('meshgate_config_reloads_total{proxy="gateway",result="success"} 1');
      for (const w of [first, second])
        expect(after).toMatch(
          new RegExp(`meshgate_config_reloads_total\\{worker="${w}",proxy="gateway",result="success"\\} 1`),
        );

      child.kill("SIGTERM");
      expect(await new Promise<number | null>((r) => child.on("exit", (c) => r(c)))).toBe(0);
    } finally {
      if (stopped) process.kill(stopped, "SIGCONT");
      child.kill("SIGKILL");
    }
  }, 60_000);
});

describe("the primary's merged metrics", () => {
  /** The pid of worker `index` among the primary's children (its MESHGATE_WORKER). */
  const workerPid = async (primary: number, index: number): Promise<number> => {
    for (const pid of await children(primary)) {
      const env = await readFile(`/proc/${pid}/environ`, "utf8").catch(() => "");
      if (env.split("\0").includes(`MESHGATE_WORKER=${index}`)) return pid;
    }
    throw new Error(`no worker ${index}`);
  };
  const requestsOf = (text: string, worker: string) =>
    new RegExp(
      `^meshgate_requests_total\\{worker="${worker}",proxy="gateway",route="v",code_class="2xx"\\} (\\d+)$`,
      "m",
    ).exec(text)?.[1];

  it("serves_one_exposition_promtool_accepts_with_the_primary_s_families_merged_into_the_workers", async () => {
    // The primary counts reloads (config_reloads_total) and folds (metrics_label_overflow_total) as the
    // workers do: its exposition was appended to theirs, each such family with a second HELP and TYPE.
    const g = await workersGateway("promtool.json");
    try {
      for (let i = 0; i < 20; i++) expect((await request(`${g.url}/v/${i}`)).status).toBe(200);
      await g.write([{ name: "more", match: { path: "/more" }, to: "app", ...PUBLIC }]);
      await until(async () => (await request(`${g.url}/more`)).status === 200, 5_000);
      const text = await (await fetch(`${g.adminUrl}/metrics`)).text();
      expect(text.match(/^# TYPE meshgate_config_reloads_total counter$/gm)).toHaveLength(1);
      expect(text).toMatch(/^meshgate_config_reloads_total\{proxy="gateway",result="success"\} 1$/m);
      expect(text).toMatch(
        /^meshgate_config_reloads_total\{worker="1",proxy="gateway",result="success"\} 1$/m,
      );
      const r = spawnSync("promtool", ["check", "metrics"], { input: text, encoding: "utf8" });
      expect(r.status, `${r.stdout}${r.stderr}`).toBe(0);
      g.child.kill("SIGTERM");
      expect(await new Promise<number | null>((r) => g.child.on("exit", (c) => r(c)))).toBe(0);
    } finally {
      g.child.kill("SIGKILL");
    }
  }, 60_000);

  it("labels_each_worker_s_series_by_its_own_index_and_asks_only_workers_that_serve", async () => {
    // Worker 0 is killed and its replacement held before it serves: the scrape must keep showing worker
    // 1's series as worker="1" (not relabelled "0": a counter jump Prometheus reads as traffic), and must
    // not wait for — and fail on — a replacement that cannot answer yet.
    const hold = await mkdtemp(join(tmpdir(), "meshgate-hold-"));
    const g = await workersGateway("relabel.json", { env: { SLOW_START_DIR: hold } });
    try {
      for (let i = 0; i < 60; i++) expect((await request(`${g.url}/v/${i}`)).status).toBe(200);
      const before = await (await fetch(`${g.adminUrl}/metrics`)).text();
      const [zero, one] = [requestsOf(before, "0"), requestsOf(before, "1")];
      expect(zero !== undefined && one !== undefined).toBe(true);

      await writeFile(join(hold, "slow-start"), "");
      process.kill(await workerPid(g.child.pid!, 0), "SIGKILL");
      await until(() => !existsSync(join(hold, "slow-start")), 10_000); // the replacement is held
      const during = await fetch(`${g.adminUrl}/metrics`);
      const text = await during.text();
      expect([during.status, requestsOf(text, "1"), requestsOf(text, "0")]).toEqual([200, one, undefined]);
      expect(text).toContain("meshgate_gateway_workers_ready 1");

      await writeFile(join(hold, "go"), "");
      await until(async () => (await fetch(`${g.adminUrl}/ready`)).status === 200, 15_000);
      const after = await (await fetch(`${g.adminUrl}/metrics`)).text();
      expect(requestsOf(after, "1")).toBe(one);
      expect(after).toContain("meshgate_gateway_workers_ready 2");
    } finally {
      // A replacement still held would wait for its "go" file forever.
      for (const pid of await children(g.child.pid!)) process.kill(pid, "SIGKILL");
      g.child.kill("SIGKILL");
      await rm(hold, { recursive: true, force: true });
    }
  }, 60_000);
});

describe("the config the workers serve", () => {
  it("is_handed_to_workers_over_ipc_so_a_killed_primary_leaves_no_copy_of_it_on_disk", async () => {
    // The primary once kept the served config (secrets included) in $TMPDIR/meshgate-gateway-*, removed
    // at exit: a SIGKILLed primary left it behind. Now nothing is written there at all.
    const tmp = await mkdtemp(join(tmpdir(), "meshgate-primary-tmp-"));
    const g = await workersGateway("ipc.json", undefined, { TMPDIR: tmp });
    try {
      const workers = await children(g.child.pid!);
      expect(workers).toHaveLength(2);
      for (let i = 0; i < 10; i++) expect((await request(`${g.url}/v/${i}`)).status).toBe(200);
      // A worker killed now is restarted and asks for the config again: it serves the same routes.
      process.kill(workers[0]!, "SIGKILL");
      await until(async () => (await children(g.child.pid!)).length === 2, 10_000);
      await until(async () => (await fetch(`${g.adminUrl}/ready`)).status === 200, 15_000);
      for (let i = 0; i < 10; i++) expect((await request(`${g.url}/v/${i}`)).status).toBe(200);
      const after = await children(g.child.pid!);
      g.child.kill("SIGKILL");
      for (const pid of after) process.kill(pid, "SIGKILL");
      await new Promise((r) => (g.child.exitCode !== null ? r(null) : g.child.once("exit", r)));
      expect(await readdir(tmp)).toEqual([]);
    } finally {
      g.child.kill("SIGKILL");
      await rm(tmp, { recursive: true, force: true });
    }
  }, 60_000);
});

describe("signals to the whole process group", () => {
  it("keeps_the_workers_on_a_hang_up_the_primary_reloads_on", async () => {
    // A terminal's hang-up reaches every process of its foreground group: the primary reloads, and the
    // workers (which ended on Node's default SIGHUP action, each restarted after a backoff) stay.
    const g = await workersGateway("hup.json", undefined, {}, true);
    try {
      const before = await children(g.child.pid!);
      expect(before).toHaveLength(2);
      process.kill(-g.child.pid!, "SIGHUP");
      await until(() => g.out.includes('"event":"reloaded"'), 10_000);
      await sleep(1000); // past the first restart backoff (500 ms)
      expect(await children(g.child.pid!)).toEqual(before);
      expect(g.out).not.toContain("worker_exited");
      for (let i = 0; i < 10; i++) expect((await request(`${g.url}/v/${i}`)).status).toBe(200);
    } finally {
      for (const pid of await children(g.child.pid!)) process.kill(pid, "SIGKILL");
      g.child.kill("SIGKILL");
    }
  }, 60_000);
});

describe("a worker that becomes ready on an older config", () => {
  /**
   * Worker `victim` is killed; its replacement gets the accepted config, then (held by the fixture) starts
   * only after a reload the other worker applied alone — so it reports ready with the old config's hash.
   */
  async function restartedBehind(file: string, deaf: boolean) {
    const hold = await mkdtemp(join(tmpdir(), "meshgate-hold-"));
    const g = await workersGateway(file, { env: { SLOW_START_DIR: hold } });
    const workers = await children(g.child.pid!);
    expect(workers).toHaveLength(2);
    await writeFile(join(hold, "slow-start"), "");
    if (deaf) await writeFile(join(hold, "deaf"), "");
    process.kill(workers[1]!, "SIGKILL");
    // The replacement has copied the config it was started with (the primary restarts it after 500 ms).
    await until(() => !existsSync(join(hold, "slow-start")), 10_000);
    await g.write([{ name: "late", match: { path: "/late" }, to: "app", ...PUBLIC }]);
    await until(() => /"event":"reloaded".*"workers":1/.test(g.out), 10_000);
    await writeFile(join(hold, "go"), "");
    return { g, hold };
  }

  it("is_brought_to_the_accepted_config_so_every_worker_serves_it", async () => {
    const { g, hold } = await restartedBehind("behind.json", false);
    try {
      await until(() => g.out.includes('"event":"worker_caught_up"'), 10_000);
      // Fresh connections spread over both workers (SO_REUSEPORT): every one sees the new route.
      for (let i = 0; i < 30; i++) expect((await request(`${g.url}/late`)).status).toBe(200);
      expect(g.out).not.toContain("worker_behind");
    } finally {
      g.child.kill("SIGKILL");
      await rm(hold, { recursive: true, force: true });
    }
  });

  it("is_restarted_from_the_accepted_config_when_it_does_not_apply_it", async () => {
    const { g, hold } = await restartedBehind("behind-deaf.json", true);
    try {
      await until(() => /"event":"worker_behind".*did not answer/.test(g.out), 10_000);
      // Restarted (after its backoff) and given the config the primary accepted since.
      await until(async () => {
        for (let i = 0; i < 30; i++) if ((await request(`${g.url}/late`)).status !== 200) return false;
        return true;
      }, 15_000);
    } finally {
      g.child.kill("SIGKILL");
      await rm(hold, { recursive: true, force: true });
    }
  });
});

describe("worker processes and OIDC sessions", () => {
  it("a_logout_on_one_worker_ends_the_session_on_every_worker_and_on_a_restarted_one", async () => {
    const secret = "workers-oidc-client-secret-0123456789";
    process.env.MESHGATE_WORKERS_OIDC_SECRET = secret; // the spawned gateway inherits it
    const [port, admin] = [await freePort(), await freePort()];
    const url = `http://127.0.0.1:${port}`;
    const idp = await startIdp({ clientId: "gw", secret, redirectUris: [`${url}/app/oauth2/callback`] });
    const c = gatewayConfig(
      [
        {
          name: "app",
          match: { path: "/app/**" },
          to: "app",
          auth: { oidc: "sso" },
          rateLimit: PUBLIC.rateLimit,
        },
      ],
      { app },
      {
        oidc: {
          sso: {
            issuer: idp.issuer,
            clientId: "gw",
            clientSecretEnv: "MESHGATE_WORKERS_OIDC_SECRET",
            redirectPath: "/app/oauth2/callback",
          },
        },
      },
    );
    let child: ChildProcess | undefined;
    try {
      child = (await startGatewayProcess(dir, "oidc", c, 2, { port, admin })).child;
      // Each request on a new connection: the kernel spreads them over both workers.
      const visit = async (jar: Jar, path: string, method = "GET") => {
        const r = await request(`${url}${path}`, {
          method,
          headers: jar.cookies.size ? { cookie: jar.header() } : {},
        });
        jar.take(r.headers["set-cookie"]);
        return r;
      };
      const jar = new Jar();
      const first = await visit(jar, "/app/home");
      expect(first.status).toBe(302);
      const callback = new URL(await loginAtIdp(first.headers.location!, "alice"));
      expect((await visit(jar, callback.pathname + callback.search)).status).toBe(302);
      const stolen = `meshgate_session=${jar.cookies.get("meshgate_session")!}`;
      const replay = () => request(`${url}/app/home`, { method: "POST", headers: { cookie: stolen } });
      expect((await replay()).status).toBe(200);

      expect((await visit(jar, "/app/oauth2/logout", "POST")).status).toBe(302);
      // Relayed through the primary (a few milliseconds): then every worker refuses the copy.
      const allRefused = async () => {
        for (let i = 0; i < 40; i++) if ((await replay()).status !== 401) return false;
        return true;
      };
      await until(allRefused, 10_000);

      // A worker started after the logout learns it from the primary.
      const primary = child.pid!;
      const workers = await children(primary);
      expect(workers).toHaveLength(2);
      process.kill(workers[0]!, "SIGKILL");
      await until(async () => (await children(primary)).filter((p) => p !== workers[0]).length === 2, 10_000);
      await until(async () => (await fetch(`http://127.0.0.1:${admin}/ready`)).status === 200, 10_000);
      await until(allRefused, 10_000);
    } finally {
      child?.kill("SIGKILL");
      await idp.close();
      delete process.env.MESHGATE_WORKERS_OIDC_SECRET;
    }
  }, 60_000);
});
