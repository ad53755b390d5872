/**
 * `meshgate up SPEC --watch` for real: one `meshgate up` process on a small mesh (two demo services and
 * the gateway), whose spec file the test edits as a user would. Each saved change is applied to the
 * running mesh — a new route by reloading the gateway in place, a new service by issuing its identity
 * and starting its app and sidecar, a removed one by stopping them — while an invalid spec, or a change
 * `meshgate up` cannot make while running, is refused and the mesh keeps serving the previous spec.
 */
import type { ChildProcess } from "node:child_process";
import { once } from "node:events";
import { chmod, mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import net from "node:net";
import { basename, join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parse, stringify } from "yaml";
import { freeBlock } from "../support/ports.ts";
import {
  alive,
  groupMembers,
  killProcessesMentioning,
  pidsMentioning,
  running,
  spawnUp,
} from "../support/procs.ts";
import { saveTiny, TINY, type RawSpec } from "../support/tiny-mesh.ts";

interface State {
  reaperPid: number;
  processes: { name: string; pid: number; state: string }[];
}

let dir: string;
let child: ChildProcess;
let output: () => string = () => "";
let base: number;
let exited: Promise<number | null>;
const specFile = () => join(dir, "mesh.yaml");
const gw = (path: string) => `http://127.0.0.1:${base}${path}`;
const status = async (path: string) =>
  (await fetch(gw(path), { signal: AbortSignal.timeout(5000) }).then((r) => r.status)) as number;
/** The pid of every supervised process, from `<stateDir>/state.json` (rewritten after each apply). */
const pids = async (): Promise<Record<string, number>> =>
  Object.fromEntries(
    (JSON.parse(await readFile(join(dir, "state", "state.json"), "utf8")) as State).processes.map((p) => [
      p.name,
      p.pid,
    ]),
  );

const save = (edit: (raw: RawSpec) => void) => saveTiny(specFile(), output, edit);

const ROUTE_ROOT = {
  name: "hello",
  match: { path: "/hello", methods: ["GET"] },
  to: "web",
  rewrite: { path: "/web" },
  public: true,
  rateLimit: { requests: 100, per: "1s", key: "ip" },
};
const ZETA = {
  image: "example/zeta:1",
  port: 8080,
  allow: [{ from: ["gateway", "web"], methods: ["GET"], paths: ["/zeta"] }],
};
const ROUTE_ZETA = {
  name: "zeta",
  match: { path: "/zeta", methods: ["GET"] },
  to: "zeta",
  public: true,
  rateLimit: { requests: 100, per: "1s", key: "ip" },
};

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "meshgate-watch-"));
  base = await freeBlock(40);
  await writeFile(specFile(), TINY);
  const args = [specFile(), "--watch", "--no-prometheus"].concat(
    ["--port", String(base), "--admin-port", String(base + 1)], // --port: --gateway-port's short name
    ["--port-base", String(base + 10), "--state-dir", join(dir, "state")],
  );
  const up = await spawnUp(args, dir, 60_000);
  child = up.child;
  exited = up.exited;
  output = up.output;
}, 90_000);

afterAll(async () => {
  if (child && child.exitCode === null) child.kill("SIGKILL");
  if (dir) killProcessesMentioning(dir);
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe("meshgate up --watch", () => {
  it("says_it_watches_the_spec", () => {
    expect(output()).toContain(`[watch] watching ${specFile()}`);
  });

  it("a_new_route_is_served_after_the_gateway_reloads_in_place_and_no_process_restarts", async () => {
    const before = await pids();
    expect(await status("/hello")).toBe(404);
    const out = await save((raw) => raw.gateway.routes.push(ROUTE_ROOT));
    expect(out).toContain("[watch] ✓ applied: reloaded gateway\n");
    expect(await status("/hello")).toBe(200);
    expect(await pids()).toEqual(before);
  }, 30_000);

  it("an_invalid_spec_is_refused_with_its_errors_and_the_mesh_keeps_serving", async () => {
    const out = await save((raw) => {
      raw.gateway.routes.push(ROUTE_ROOT, { ...ROUTE_ZETA, to: "nowhere" });
    });
    expect(out).toMatch(/\[watch\] ✗ .*nowhere/s);
    expect(out).toContain("[E_SPEC_INVALID] — the running mesh keeps the previous spec");
    expect(await status("/hello")).toBe(200);
  }, 30_000);

  it("a_config_the_gateway_refuses_keeps_the_previous_spec_served_without_a_restart_and_a_later_change_applies", async () => {
    const before = await pids();
    const gatewayFile = join(dir, "state", "run", "gateway.json");
    const good = await readFile(gatewayFile, "utf8");
    let polling = true;
    const statuses: number[] = [];
    const poll = (async () => {
      while (polling) {
        statuses.push(await status("/hello").catch(() => 0));
        await new Promise((r) => setTimeout(r, 50));
      }
    })();
    try {
      const out = await save((raw) => {
        raw.gateway.routes.push(ROUTE_ROOT, {
          name: "files",
          match: { path: "/files/**", methods: ["GET"] },
          static: { dir: join(dir, "no-such-dir") },
          public: true,
        });
      });
      expect(out).toMatch(
        /\[watch\] ✗ gateway refused its new config \(E_RT_CONFIG_INVALID\): .*no-such-dir/,
      );
      expect(out).toContain("[E_LOCAL_CONFIG_REFUSED] — the running mesh keeps the previous spec");
      expect(out).not.toContain("restarting gateway");
      // The previous config is back on disk: a later restart (a crash) reads a config that works.
      expect(await readFile(gatewayFile, "utf8")).toBe(good);
      await new Promise((r) => setTimeout(r, 500));
    } finally {
      polling = false;
      await poll;
    }
    expect(statuses.length).toBeGreaterThan(0);
    expect(statuses.every((s) => s === 200)).toBe(true);
    expect(await pids()).toEqual(before);
    // The next good change is applied against the previous spec.
    const out = await save((raw) =>
      raw.gateway.routes.push(ROUTE_ROOT, {
        ...ROUTE_ROOT,
        name: "hi",
        match: { path: "/hi", methods: ["GET"] },
      }),
    );
    expect(out).toContain("[watch] ✓ applied: reloaded gateway\n");
    expect(await status("/hi")).toBe(200);
    expect(await status("/hello")).toBe(200);
    expect(await pids()).toEqual(before);
  }, 60_000);

  it("a_new_service_whose_port_is_taken_is_refused_naming_the_port_and_nothing_starts", async () => {
    const state = JSON.parse(await readFile(join(dir, "state", "state.json"), "utf8")) as {
      processes: { ports: Record<string, number> }[];
    };
    // New processes take ports above every port the running mesh uses: the new app's comes first.
    const next =
      Math.max(...state.processes.flatMap((p) => Object.values(p.ports)).filter((p) => p > base + 9)) + 1;
    const squatter = net.createServer().listen(next, "127.0.0.1");
    await once(squatter, "listening");
    try {
      const before = await pids();
      const out = await save((raw) => {
        raw.services.zeta = ZETA;
        raw.gateway.routes.push(ROUTE_ROOT, ROUTE_ZETA);
      });
      expect(out).toContain(
        `[watch] ✗ port ${next} (zeta app) is already in use: free it and save the spec again [E_LOCAL_PORT_TAKEN]`,
      );
      expect(await pids()).toEqual(before);
      expect(await status("/zeta")).toBe(404);
    } finally {
      squatter.close();
    }
  }, 30_000);

  it("a_new_service_gets_an_identity_and_its_processes_and_only_they_start", async () => {
    const before = await pids();
    const out = await save((raw) => {
      raw.services.zeta = ZETA;
      raw.gateway.routes.push(ROUTE_ROOT, ROUTE_ZETA);
    });
    expect(out).toContain("[watch] starting zeta-sidecar: new in the spec");
    expect(out).toMatch(/\[watch\] ✓ applied: reloaded gateway; started zeta-sidecar, zeta\n/);
    // Through the gateway and zeta's new sidecar, over mTLS with the SVID issued for it.
    expect(await status("/zeta")).toBe(200);
    const after = await pids();
    for (const [name, pid] of Object.entries(before)) expect(after[name]).toBe(pid);
    expect(alive(after.zeta!)).toBe(true);
    expect(alive(after["zeta-sidecar"]!)).toBe(true);
  }, 60_000);

  it("a_new_call_reloads_the_callers_sidecar_which_binds_its_new_local_port_without_a_restart", async () => {
    const before = await pids();
    const out = await save((raw) => {
      raw.services.zeta = ZETA;
      raw.services.web.calls = ["api", "zeta"];
      raw.gateway.routes.push(ROUTE_ROOT, ROUTE_ZETA);
    });
    expect(out).toMatch(/\[watch\] ✓ applied: reloaded web-sidecar; restarted web\n/);
    const after = await pids();
    expect(after["web-sidecar"]).toBe(before["web-sidecar"]);
    expect(after.web).not.toBe(before.web); // its environment names the new port
    const state = JSON.parse(await readFile(join(dir, "state", "state.json"), "utf8")) as {
      processes: { name: string; ports: Record<string, number> }[];
    };
    const local = state.processes.find((p) => p.name === "web-sidecar")!.ports["to-zeta"]!;
    // The app's plain HTTP to its new local port: through web's sidecar and zeta's, over mTLS.
    const r = await fetch(`http://127.0.0.1:${local}/zeta`, { signal: AbortSignal.timeout(5000) });
    expect(r.status).toBe(200);
  }, 60_000);

  it("a_changed_caller_restarts_its_sidecar_reloads_and_a_removed_service_stops", async () => {
    const before = await pids();
    const out = await save((raw) => {
      raw.gateway.routes.push(ROUTE_ROOT);
      raw.services.web.allow[0].paths.push("/web2");
    });
    // web no longer calls zeta: its environment loses the local port (and its demo config the call).
    expect(out).toContain("[watch] restarting web: its environment changed");
    expect(out).toMatch(
      /\[watch\] ✓ applied: reloaded gateway, web-sidecar; restarted web; stopped zeta-sidecar, zeta\n/,
    );
    const after = await pids();
    expect(after.web).not.toBe(before.web);
    expect(after["web-sidecar"]).toBe(before["web-sidecar"]);
    expect(after.zeta).toBeUndefined();
    expect(alive(before.zeta!)).toBe(false);
    expect(alive(before["zeta-sidecar"]!)).toBe(false);
    expect(await status("/hello")).toBe(200);
    expect(await status("/zeta")).toBe(404);
  }, 60_000);

  it("a_change_meshgate_up_holds_is_refused_naming_it", async () => {
    const out = await save((raw) => {
      raw.trustDomain = "other.test";
      raw.gateway.routes.push(ROUTE_ROOT);
      raw.services.web.allow[0].paths.push("/web2");
    });
    expect(out).toContain("(trustDomain): stop it and run it again [E_LOCAL_RESTART_REQUIRED]");
    expect(await status("/hello")).toBe(200);
  }, 30_000);

  it("a_saved_spec_that_changes_nothing_the_mesh_runs_says_so_and_touches_nothing", async () => {
    const before = await pids();
    const out = await save((raw) => {
      raw.gateway.routes.push(ROUTE_ROOT);
      raw.services.web.allow[0].paths.push("/web2");
      raw.services.web.allow[0].methods = ["GET"]; // the same as before, written differently
    });
    expect(out).toContain("[watch] the spec changed nothing the mesh runs");
    expect(await pids()).toEqual(before);
  }, 30_000);

  it("a_permissive_mesh_reloads_every_proxy_in_place_and_a_sidecar_port_then_takes_plaintext", async () => {
    const before = await pids();
    const state = JSON.parse(await readFile(join(dir, "state", "state.json"), "utf8")) as {
      processes: { name: string; ports: Record<string, number> }[];
    };
    const inbound = state.processes.find((p) => p.name === "api-sidecar")!.ports.inbound!;
    const plaintext = () =>
      fetch(`http://127.0.0.1:${inbound}/api/x`, { signal: AbortSignal.timeout(5000) }).then((r) => r.status);
    await expect(plaintext()).rejects.toThrow(); // strict: TLS only
    const out = await save((raw) => {
      raw.gateway.routes.push(ROUTE_ROOT);
      raw.services.web.allow[0].paths.push("/web2");
      raw.mesh = { mtls: "permissive" };
    });
    expect(out).toMatch(/\[watch\] ✓ applied: reloaded api-sidecar, gateway, web-sidecar\n/);
    expect(await pids()).toEqual(before);
    // The same socket now serves plaintext too (permissive: authorized by the rules' methods and paths).
    expect(await plaintext()).toBe(200);
    expect(await status("/hello")).toBe(200);
  }, 30_000);

  it("stops_every_process_on_SIGINT_and_its_reaper_exits_stopping_nothing", async () => {
    const last = await pids();
    const { reaperPid } = JSON.parse(await readFile(join(dir, "state", "state.json"), "utf8")) as State;
    expect(running(reaperPid)).toBe(true);
    child.kill("SIGINT");
    expect(await exited).toBe(0);
    // Told `bye` after the stop, the reaper exits before the launcher does, and signals nothing.
    expect(running(reaperPid)).toBe(false);
    expect(output()).not.toContain("[reaper]");
    await new Promise((r) => setTimeout(r, 300));
    for (const pid of Object.values(last)) expect(alive(pid)).toBe(false);
    expect(pidsMentioning(join(dir, "state"))).toEqual([]);
  }, 30_000);
});

describe("meshgate up --watch stopped while a change is applied", () => {
  // A Prometheus stand-in that never reports the reload a SIGHUP asks for: the apply waits (10 s at
  // most) for it, and Ctrl-C comes meanwhile. `up` stops without waiting it out (it used to exit only
  // after those 10 s), and the apply never marks the stopped mesh running.
  const FAKE_PROMETHEUS = `#!${process.execPath}
const addr = process.argv.find((a) => a.startsWith("--web.listen-address=")).split("=")[1];
process.on("SIGHUP", () => console.log("SIGHUP: not reloading"));
require("node:http")
  .createServer((req, res) => res.end(req.url === "/-/ready" ? "ready" : "prometheus_config_last_reload_successful 1\\nprometheus_config_last_reload_success_timestamp_seconds 1\\n"))
  .listen(Number(addr.split(":")[1]), "127.0.0.1", () => console.log("fake prometheus"));
`;

  it("exits_at_once_and_state_json_says_not_running_when_stopped_while_an_apply_waits_for_a_reload", async () => {
    const top = await mkdtemp(join(tmpdir(), "meshgate-watch-stop-"));
    const path = process.env.PATH;
    try {
      await mkdir(join(top, "bin"));
      await writeFile(join(top, "bin", "prometheus"), FAKE_PROMETHEUS);
      await chmod(join(top, "bin", "prometheus"), 0o755);
      await writeFile(join(top, "mesh.yaml"), TINY);
      const b = await freeBlock(40);
      process.env.PATH = `${join(top, "bin")}:${path}`;
      const up = await spawnUp(
        [join(top, "mesh.yaml"), "--watch", "--port", String(b), "--admin-port", String(b + 1),
          "--port-base", String(b + 10), "--state-dir", join(top, "state")],
        top,
        60_000,
      ); // prettier-ignore
      process.env.PATH = path;
      try {
        expect(up.output()).toContain("[prometheus] fake prometheus");
        const raw = parse(TINY) as RawSpec;
        raw.observability = { slos: [{ name: "api-up", service: "api", availability: 99.5 }] };
        await writeFile(join(top, "mesh.yaml"), stringify(raw));
        const deadline = Date.now() + 30_000;
        while (!up.output().includes("[prometheus] SIGHUP: not reloading")) {
          if (Date.now() > deadline) throw new Error(`no SIGHUP:\n${up.output()}`);
          await new Promise((r) => setTimeout(r, 50));
        }
        up.child.kill("SIGINT"); // while the apply waits for Prometheus's reload
        const stoppedAt = performance.now();
        expect(await up.exited).toBe(0);
        // The apply stops waiting for the reload (10 s at most) once `up` stops: it exits at once.
        expect(performance.now() - stoppedAt).toBeLessThan(6000);
        expect(up.output()).toContain("[watch] stopped while applying the change");
        expect(up.output()).not.toContain("refused its new config");
        const state = JSON.parse(await readFile(join(top, "state", "state.json"), "utf8")) as {
          running: boolean;
          processes: { pid: number }[];
        };
        expect(state.running).toBe(false);
        for (const p of state.processes) expect(p.pid === null || !alive(p.pid)).toBe(true);
      } finally {
        if (up.child.exitCode === null) up.child.kill("SIGKILL");
      }
    } finally {
      process.env.PATH = path;
      killProcessesMentioning(top);
      await rm(top, { recursive: true, force: true });
    }
  }, 90_000);
});

/** A user's app for `local.command`: answers 200 on $PORT (and dies of SIGTERM, as most do). */
const APP = `import http from "node:http";
http.createServer((req, res) => res.end("ok")).listen(Number(process.env.PORT), "127.0.0.1");
`;

/** Whether a TCP connection to 127.0.0.1:port is accepted ("connected") or else its error code. */
const connect = (port: number) =>
  new Promise<string>((resolve) => {
    const s = net.connect(port, "127.0.0.1");
    s.on("connect", () => {
      s.destroy();
      resolve("connected");
    });
    s.on("error", (e: NodeJS.ErrnoException) => resolve(e.code ?? "error"));
  });

describe("meshgate up after a launcher killed -9", () => {
  // Its children are spawned detached — each leads its own process group — so they outlived it, holding
  // the mesh's ports until the next `up` on the state dir stopped those whose command line names it (a
  // user's command need not: it ran on). Its reaper, told every group over a pipe, sees the pipe close
  // without `bye` and stops them all.
  it("a_launcher_killed_with_SIGKILL_takes_every_child_with_it", async () => {
    const top = await mkdtemp(join(tmpdir(), "meshgate-lifeline-"));
    const marker = basename(top); // api's command names it (not the state dir): the sweep below finds it
    try {
      await writeFile(join(top, "app.mjs"), APP);
      const raw = parse(TINY) as RawSpec;
      // A shell and its own child, as `sh -c "python app.py"` would be.
      raw.services.api.local = { command: `${process.execPath} app.mjs ${marker} & wait` };
      await writeFile(join(top, "mesh.yaml"), stringify(raw));
      const b = await freeBlock(40);
      const up = await spawnUp(
        [join(top, "mesh.yaml"), "--no-prometheus", "--port", String(b), "--admin-port", String(b + 1),
          "--port-base", String(b + 10), "--state-dir", join(top, "state")],
        top,
        60_000,
      ); // prettier-ignore
      const state = JSON.parse(await readFile(join(top, "state", "state.json"), "utf8")) as State;
      const api = state.processes.find((p) => p.name === "api")!.pid;
      expect(await readFile(`/proc/${api}/cmdline`, "utf8")).not.toContain(join(top, "state"));
      expect(groupMembers(api)).toHaveLength(2); // sh and its node
      expect(await connect(b)).toBe("connected");
      up.child.kill("SIGKILL");
      await up.exited;
      // Every process of every group the launcher started, by name.
      const left = () =>
        Object.fromEntries(
          state.processes.flatMap((p) => (groupMembers(p.pid).length ? [[p.name, groupMembers(p.pid)]] : [])),
        );
      const deadline = Date.now() + 10_000;
      while (Object.keys(left()).length > 0 && Date.now() < deadline)
        await new Promise((r) => setTimeout(r, 100));
      expect(left()).toEqual({});
      for (const p of state.processes) expect(running(p.pid)).toBe(false);
      expect(await connect(b)).toBe("ECONNREFUSED");
      expect(await connect(b + 1)).toBe("ECONNREFUSED");
      expect(up.output()).toContain(
        `[reaper] meshgate up (pid ${up.child.pid}) died: stopping the ${state.processes.length} process groups it left (SIGTERM, SIGKILL after 5 s)`,
      );
      const exitDeadline = Date.now() + 2000;
      while (running(state.reaperPid) && Date.now() < exitDeadline)
        await new Promise((r) => setTimeout(r, 50));
      expect(running(state.reaperPid)).toBe(false);
    } finally {
      killProcessesMentioning(marker);
      await rm(top, { recursive: true, force: true });
    }
  }, 90_000);

  // With its reaper killed first, the launcher killed -9 left its children running, state.json said
  // running, and the next `up` took the stale lock and then failed with E_LOCAL_PORT_TAKEN.
  it("the_next_up_on_the_state_dir_stops_the_processes_it_left_and_starts", async () => {
    const top = await mkdtemp(join(tmpdir(), "meshgate-killed-"));
    try {
      await writeFile(join(top, "mesh.yaml"), TINY);
      const b = await freeBlock(40);
      const args = [join(top, "mesh.yaml"), "--no-prometheus", "--port", String(b), "--admin-port",
        String(b + 1), "--port-base", String(b + 10), "--state-dir", join(top, "state")]; // prettier-ignore
      const first = await spawnUp(args, top, 60_000);
      const state = JSON.parse(await readFile(join(top, "state", "state.json"), "utf8")) as State;
      const left = state.processes.map((p) => p.pid);
      expect(left.length).toBeGreaterThan(0);
      process.kill(state.reaperPid, "SIGKILL");
      const warned = `[up] ✗ the reaper (pid ${state.reaperPid}) exited (signal SIGKILL): a launcher killed -9 now leaves its processes running`;
      const deadline = Date.now() + 5000;
      while (!first.output().includes(warned) && Date.now() < deadline)
        await new Promise((r) => setTimeout(r, 50));
      expect(first.output()).toContain(warned);
      first.child.kill("SIGKILL");
      await first.exited;
      await new Promise((r) => setTimeout(r, 300));
      for (const pid of left) expect(alive(pid)).toBe(true); // the defect's premise: they outlive it
      const second = await spawnUp(args, top, 60_000);
      try {
        expect(second.output()).toMatch(
          new RegExp(
            `\\[up\\] stopping ${left.length} processes left running by a meshgate up that died \\(pid ${first.child.pid}\\): `,
          ),
        );
        expect(second.output()).not.toContain("E_LOCAL_PORT_TAKEN");
        for (const pid of left) expect(alive(pid)).toBe(false);
        const r = await fetch(`http://127.0.0.1:${b}/web/1`, { signal: AbortSignal.timeout(5000) });
        expect(r.status).toBe(200);
        second.child.kill("SIGINT");
        expect(await second.exited).toBe(0);
      } finally {
        if (second.child.exitCode === null) second.child.kill("SIGKILL");
      }
      await new Promise((r) => setTimeout(r, 300));
      expect(pidsMentioning(top)).toEqual([]);
    } finally {
      killProcessesMentioning(top);
      await rm(top, { recursive: true, force: true });
    }
  }, 150_000);
});
