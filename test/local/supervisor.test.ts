/**
 * The supervisor of `meshgate up` with real child processes (small Node scripts): prefixed output,
 * restart with exponential backoff, a crash loop reported loudly with the child's last lines, readiness
 * timeouts naming the laggard, and stop() leaving no process of any child's group behind.
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { alive, until } from "../support/procs.ts";
import { freePort } from "../support/ports.ts";
import {
  backoffDelay,
  Supervisor,
  SupervisorStartError,
  type SupervisedProcess,
} from "../../stacks/local/supervisor.ts";

let dir: string;
const running: Supervisor[] = [];
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "meshgate-supervisor-"));
});
afterEach(async () => {
  for (const s of running.splice(0)) await s.stop(true);
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** A Node child running `code`; ready when 127.0.0.1:port accepts. */
function node(name: string, code: string, port: number, phase = 0): SupervisedProcess {
  return {
    name,
    argv: [process.execPath, "-e", code],
    env: { PORT: String(port) },
    cwd: dir,
    ready: { kind: "tcp", port },
    phase,
  };
}
const SERVE = `require("node:net").createServer(()=>{}).listen(Number(process.env.PORT),"127.0.0.1",()=>console.log("serving"));`;

function supervise(
  procs: SupervisedProcess[],
  extra: Partial<ConstructorParameters<typeof Supervisor>[1]> = {},
) {
  const lines: string[] = [];
  const s = new Supervisor(procs, { out: (l) => lines.push(l), ...extra });
  running.push(s);
  return { s, lines };
}

describe("supervisor", () => {
  it.each([
    [1, 250],
    [2, 500],
    [3, 1000],
    [6, 8000],
    [7, 10000],
    [20, 10000],
  ])("backs_off_exponentially_up_to_the_cap (failure %i → %i ms)", (n, ms) => {
    expect(backoffDelay(n, 250, 10_000)).toBe(ms);
  });

  it("prefixes_each_line_with_the_process_name_and_starts_phases_in_order", async () => {
    const [a, b] = [await freePort(), await freePort()];
    const { s, lines } = supervise([
      node("gateway", `console.log("gw up at", Date.now()); ${SERVE}`, b, 1),
      node("orders", `console.log("first line"); console.error("to stderr"); ${SERVE}`, a, 0),
    ]);
    await s.start();
    expect(lines).toContain("[orders] first line");
    expect(lines).toContain("[orders] to stderr");
    expect(lines.findIndex((l) => l.startsWith("[orders] serving"))).toBeLessThan(
      lines.findIndex((l) => l.startsWith("[gateway] gw up")),
    );
    expect(s.status().map((x) => x.state)).toEqual(["ready", "ready"]);
  });

  it("restarts_a_crashed_child_with_growing_delays", async () => {
    const port = await freePort();
    const { s, lines } = supervise(
      [node("flaky", `console.log("start", Date.now()); process.exit(3);`, port)],
      {
        backoff: { baseMs: 60, maxMs: 1000 },
        crashLoop: { exits: 100, windowMs: 60_000 },
        readyTimeoutMs: 60_000,
      },
    );
    void s.start().catch(() => {});
    await until(() => lines.filter((l) => l.startsWith("[flaky] start")).length >= 4, 10_000);
    const starts = lines.filter((l) => l.startsWith("[flaky] start")).map((l) => Number(l.split(" ")[2]));
    const gaps = starts.slice(1).map((t, i) => t - starts[i]!);
    // each restart waits at least base × 2^(n−1): 60, 120, 240 ms
    expect(gaps[0]).toBeGreaterThanOrEqual(60);
    expect(gaps[1]).toBeGreaterThanOrEqual(120);
    expect(gaps[2]).toBeGreaterThanOrEqual(240);
    expect(lines.some((l) => l === "[supervisor] flaky exited (exit code 3); restart 1 in 60 ms")).toBe(true);
    expect(s.status()[0]!.restarts).toBeGreaterThanOrEqual(3);
  });

  it("reports_a_crash_loop_loudly_with_the_last_lines_and_fails_start_naming_the_process", async () => {
    const port = await freePort();
    const { s, lines } = supervise(
      [node("payments", `console.error("cannot open db: ECONNREFUSED"); process.exit(1);`, port)],
      {
        backoff: { baseMs: 20, maxMs: 50 },
        crashLoop: { exits: 3, windowMs: 10_000 },
        readyTimeoutMs: 1500,
      },
    );
    const err = await s.start().then(
      () => null,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(SupervisorStartError);
    expect((err as Error).message).toMatch(
      /^payments was not ready within 2 s \(nothing accepted on 127\.0\.0\.1:\d+; last exit: exit code 1, \d+ restarts\)/,
    );
    expect((err as Error).message).toContain("cannot open db: ECONNREFUSED");
    const loud = lines.find((l) => l.includes("CRASH LOOP"));
    expect(loud).toMatch(
      /^\[supervisor\] ✗ CRASH LOOP: payments exited \d+ times within 10 s \(last: exit code 1\)/,
    );
    expect(loud).toContain("    cannot open db: ECONNREFUSED");
    expect(s.status()[0]).toMatchObject({
      crashLoop: true,
      state: expect.stringMatching(/crash-loop|starting/),
    });
  });

  it("recovers_when_a_restarted_child_becomes_ready", async () => {
    const port = await freePort();
    const marker = join(dir, "once");
    const code = `const fs=require("node:fs"); if(!fs.existsSync(${JSON.stringify(marker)})){fs.writeFileSync(${JSON.stringify(marker)},"x"); process.exit(2);} ${SERVE}`;
    const { s } = supervise([node("once", code, port)], { backoff: { baseMs: 20, maxMs: 100 } });
    await s.start();
    expect(s.status()[0]).toMatchObject({
      state: "ready",
      restarts: 1,
      lastExit: "exit code 2",
      crashLoop: false,
    });
  });

  it("marks_a_child_restarted_after_start_ready_again_and_reports_each_change", async () => {
    const port = await freePort();
    let changes = 0;
    const { s, lines } = supervise([node("svc", SERVE, port)], {
      backoff: { baseMs: 20, maxMs: 100 },
      onChange: () => changes++,
    });
    await s.start();
    const first = s.status()[0]!;
    expect(first.state).toBe("ready");
    const before = changes;
    process.kill(first.pid!, "SIGKILL");
    await until(() => s.status()[0]!.restarts === 1 && s.status()[0]!.state === "ready", 10_000);
    expect(s.status()[0]!.pid).not.toBe(first.pid);
    expect(lines).toContain("[supervisor] svc exited (signal SIGKILL); restart 1 in 20 ms");
    expect(changes - before).toBeGreaterThanOrEqual(3); // exited (backoff), spawned (new pid), ready
  });

  it("stops_the_whole_process_group_leaving_no_grandchild", async () => {
    const port = await freePort();
    // The child forks a grandchild (as `sh -c` commands do) and prints its pid.
    const code = `const c=require("node:child_process").spawn("sleep",["300"],{stdio:"ignore"}); console.log("grandchild", c.pid); ${SERVE}`;
    const { s, lines } = supervise([node("forker", code, port)]);
    await s.start();
    await until(() => lines.some((l) => l.startsWith("[forker] grandchild")));
    const grandchild = Number(lines.find((l) => l.startsWith("[forker] grandchild"))!.split(" ")[2]);
    const pid = s.pids().forker!;
    expect(alive(pid) && alive(grandchild)).toBe(true);
    await s.stop();
    await until(() => !alive(grandchild) && !alive(pid), 3000);
    expect(s.status()[0]!.state).toBe("stopped");
  });

  it("kills_a_child_that_ignores_sigterm_after_the_stop_timeout", async () => {
    const port = await freePort();
    const code = `process.on("SIGTERM",()=>console.log("ignoring SIGTERM")); ${SERVE}`;
    const { s, lines } = supervise([node("stubborn", code, port)], { stopTimeoutMs: 300 });
    await s.start();
    const pid = s.pids().stubborn!;
    const t0 = Date.now();
    await s.stop();
    expect(Date.now() - t0).toBeGreaterThanOrEqual(290);
    expect(alive(pid)).toBe(false);
    expect(lines).toContain("[stubborn] ignoring SIGTERM");
    expect(lines).toContain("[supervisor] stubborn did not stop within 300 ms: SIGKILL");
  });

  it("kills_every_group_at_once_when_forced", async () => {
    const port = await freePort();
    const code = `process.on("SIGTERM",()=>{}); ${SERVE}`;
    const { s } = supervise([node("stubborn", code, port)], { stopTimeoutMs: 20_000 });
    await s.start();
    const pid = s.pids().stubborn!;
    const t0 = Date.now();
    await s.stop(true);
    expect(Date.now() - t0).toBeLessThan(5000);
    expect(alive(pid)).toBe(false);
  });

  it("does_not_restart_children_once_stopping", async () => {
    const port = await freePort();
    const { s, lines } = supervise([node("svc", SERVE, port)]);
    await s.start();
    await s.stop();
    await new Promise((r) => setTimeout(r, 400));
    expect(lines.some((l) => l.includes("restart"))).toBe(false);
    expect(s.status()[0]!.pid !== null && alive(s.status()[0]!.pid!)).toBe(false);
  });

  it("reconciles_to_a_new_set_stopping_the_removed_restarting_the_named_starting_the_new_and_leaving_the_rest", async () => {
    const [pa, pb, pc, pd] = [await freePort(), await freePort(), await freePort(), await freePort()];
    const { s, lines } = supervise([node("a", SERVE, pa), node("b", SERVE, pb), node("c", SERVE, pc)]);
    await s.start();
    const before = s.pids();
    await s.reconcile([node("a", SERVE, pa), node("c", SERVE, pc), node("d", SERVE, pd)], new Set(["c"]));
    const after = s.pids();
    expect(Object.keys(after)).toEqual(["a", "c", "d"]);
    expect(after.a).toBe(before.a); // untouched
    expect(after.c).not.toBe(before.c); // restarted
    expect(alive(before.b!)).toBe(false); // removed
    expect(alive(before.c!)).toBe(false);
    expect(s.status().map((c) => c.state)).toEqual(["ready", "ready", "ready"]);
    // Stopped on purpose: neither b nor the old c is reported or restarted as a crash.
    await new Promise((r) => setTimeout(r, 400));
    expect(lines.filter((l) => l.includes("restart"))).toEqual([]);
  });

  it("starts_nothing_a_reconcile_would_have_started_once_stopping", async () => {
    const [pa, pb] = [await freePort(), await freePort()];
    const { s } = supervise([node("a", SERVE, pa)]);
    await s.start();
    const old = s.pids().a!;
    const reconciling = s.reconcile([node("a", SERVE, pa), node("b", SERVE, pb)], new Set(["a"]));
    await s.stop(); // while a's old process is still being stopped
    await reconciling;
    await new Promise((r) => setTimeout(r, 300));
    expect(alive(old)).toBe(false);
    for (const pid of Object.values(s.pids())) expect(pid === null || !alive(pid)).toBe(true);
  });
});
