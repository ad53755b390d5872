/**
 * The lifeline of `meshgate up` (stacks/local/lifeline.ts and the reaper it starts, reaper.ts) with real
 * processes: a pipe that closes without `bye` stops exactly the process groups the reaper was told of
 * (SIGTERM, then SIGKILL after the grace), `bye` stops none, SIGINT and SIGHUP do not end it, and the
 * launcher's side neither holds its process alive nor fails when the reaper is gone.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { once } from "node:events";
import { readFileSync } from "node:fs";
import { afterEach, describe, expect, it } from "vitest";
import { startLifeline } from "../../stacks/local/lifeline.ts";
import { running, until } from "../support/procs.ts";

const REAPER = new URL("../../stacks/local/reaper.ts", import.meta.url).pathname;
const LIFELINE = new URL("../../stacks/local/lifeline.ts", import.meta.url).pathname;

const started: ChildProcess[] = [];
afterEach(() => {
  for (const c of started.splice(0))
    try {
      process.kill(-c.pid!, "SIGKILL");
    } catch {
      /* gone */
    }
});

/** A detached idle Node process (so the leader of its own group), once it runs; ignoring SIGTERM if asked. */
async function group(ignoreTerm = false): Promise<ChildProcess & { pid: number }> {
  const code = `${ignoreTerm ? 'process.on("SIGTERM", () => {});' : ""}setInterval(() => {}, 1000);console.log("up")`;
  const c = spawn(process.execPath, ["-e", code], { detached: true, stdio: ["ignore", "pipe", "ignore"] });
  started.push(c);
  await once(c.stdout!, "data");
  return c as ChildProcess & { pid: number };
}

/** The reaper as `up` starts it, its stdin a pipe from this test: ending it is the launcher dying. */
function reaper(graceMs: number) {
  const c = spawn(process.execPath, [REAPER, "/tmp/meshgate-lifeline-test", String(graceMs)], {
    detached: true,
    stdio: ["pipe", "ignore", "pipe"],
  });
  started.push(c);
  let err = "";
  c.stderr!.on("data", (d: Buffer) => (err += d.toString()));
  const exited = new Promise<number | null>((r) => c.on("exit", (code) => r(code)));
  return { c, exited, err: () => err };
}

const exitOf = (c: ChildProcess) =>
  c.exitCode !== null || c.signalCode !== null
    ? Promise.resolve(c.signalCode ?? c.exitCode)
    : new Promise((r) => c.once("exit", (code, signal) => r(signal ?? code)));

describe("the reaper", () => {
  it("a_pipe_closed_without_bye_stops_each_group_it_was_told_of_and_only_those", async () => {
    const [term, stubborn, untold, ended] = await Promise.all([group(), group(true), group(), group()]);
    const r = reaper(300);
    r.c.stdin!.write(`+${term.pid}\n+${stubborn.pid}\n+${ended.pid}\n`);
    r.c.stdin!.end(`-${ended.pid}\n`); // no bye: the launcher died
    expect(await r.exited).toBe(0);
    expect(await exitOf(term)).toBe("SIGTERM");
    expect(await exitOf(stubborn)).toBe("SIGKILL"); // after the grace
    expect(r.err()).toContain("stopping the 2 process groups it left (SIGTERM, SIGKILL after 0.3 s)");
    expect(running(untold.pid)).toBe(true);
    expect(running(ended.pid)).toBe(true);
  });

  it("bye_then_eof_stops_nothing_and_SIGINT_or_SIGHUP_do_not_end_it", async () => {
    const g = await group();
    const r = reaper(300);
    r.c.stdin!.write(`+${g.pid}\n`);
    // Once it handles both (SigCgt: bit 1 SIGHUP, bit 2 SIGINT), as a terminal's Ctrl-C would come.
    const caught = () => {
      const line = readFileSync(`/proc/${r.c.pid}/status`, "utf8").match(/^SigCgt:\s*([0-9a-f]+)$/m);
      return line !== null && (BigInt(`0x${line[1]}`) & 3n) === 3n;
    };
    await until(caught);
    r.c.kill("SIGINT");
    r.c.kill("SIGHUP");
    await new Promise((res) => setTimeout(res, 200));
    expect(running(r.c.pid!)).toBe(true);
    r.c.stdin!.end("bye\n");
    expect(await r.exited).toBe(0);
    expect(r.err()).toBe("");
    expect(running(g.pid)).toBe(true);
  });
});

describe("startLifeline", () => {
  it("keeps_no_launcher_alive_and_a_launcher_that_ends_without_closing_it_takes_its_groups", async () => {
    const g = await group();
    // A launcher that starts the lifeline, registers the group and then has nothing left to do.
    const launcher = spawn(
      process.execPath,
      [
        "--input-type=module",
        "-e",
        `const { startLifeline } = await import(${JSON.stringify(LIFELINE)});
         startLifeline("/tmp/meshgate-lifeline-test", console.error).started(${g.pid});`,
      ],
      { stdio: "ignore" },
    );
    const at = performance.now();
    expect(await exitOf(launcher)).toBe(0);
    expect(performance.now() - at).toBeLessThan(3000); // not held by the reaper or its pipe
    expect(await exitOf(g)).toBe("SIGTERM");
  });

  it("a_reaper_killed_under_the_launcher_is_said_once_and_later_writes_do_no_harm", async () => {
    const g = await group();
    const warnings: string[] = [];
    const lifeline = startLifeline("/tmp/meshgate-lifeline-test", (w) => warnings.push(w));
    lifeline.started(g.pid);
    process.kill(lifeline.pid!, "SIGKILL");
    await until(() => warnings.length > 0);
    // Writes to the closed pipe (EPIPE): handled, not thrown.
    lifeline.ended(g.pid);
    lifeline.started(g.pid);
    await new Promise((r) => setTimeout(r, 100));
    await lifeline.close();
    expect(warnings).toEqual([
      `[up] ✗ the reaper (pid ${lifeline.pid}) exited (signal SIGKILL): a launcher killed -9 now leaves its processes running (the next up on the state dir stops those naming it)`,
    ]);
    expect(running(g.pid)).toBe(true);
  });
});
