/**
 * Last-resort cleanup for tests that start process trees (`meshgate up`): kills every process whose
 * command line mentions `marker` (a test's own temp directory), so a test that failed half-way — before
 * it learned its children's pids — leaves nothing running.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { readdirSync, readFileSync } from "node:fs";

/**
 * Waits for servers or processes started together; if any failed to start, stops the others before
 * throwing (with Promise.all, the ones that did start outlived the test). In the order given.
 */
export async function allStarted<T extends { stop(): Promise<void> }>(
  starts: readonly Promise<T>[],
): Promise<T[]> {
  const settled = await Promise.allSettled(starts);
  const up = settled.flatMap((r) => (r.status === "fulfilled" ? [r.value] : []));
  const failed = settled.find((r) => r.status === "rejected");
  if (failed) {
    await Promise.all(up.map((s) => s.stop()));
    throw failed.reason;
  }
  return up;
}

/** The pids (other than this process) whose command line contains `marker`. */
export function pidsMentioning(marker: string): number[] {
  const out: number[] = [];
  for (const entry of readdirSync("/proc")) {
    const pid = Number(entry);
    if (!Number.isInteger(pid) || pid === process.pid) continue;
    try {
      if (readFileSync(`/proc/${pid}/cmdline`, "utf8").includes(marker)) out.push(pid);
    } catch {
      /* gone */
    }
  }
  return out;
}

/** SIGKILLs every process whose command line mentions `marker`; returns how many were signalled. */
export function killProcessesMentioning(marker: string): number {
  let n = 0;
  for (const pid of pidsMentioning(marker))
    try {
      process.kill(pid, "SIGKILL");
      n++;
    } catch {
      /* gone */
    }
  return n;
}

/** Polls `check` every 20 ms until it holds; throws "timed out" after `ms`. */
export async function until(check: () => boolean, ms = 5000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) throw new Error("timed out");
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Whether a process with this pid exists. */
export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** The state and process group of a pid, from /proc/<pid>/stat; null when there is no such process. */
function stat(pid: number): { state: string; pgid: number } | null {
  try {
    const text = readFileSync(`/proc/${pid}/stat`, "utf8");
    const [state, , pgid] = text.slice(text.lastIndexOf(")") + 2).split(" ");
    return { state: state!, pgid: Number(pgid) };
  } catch {
    return null;
  }
}

/**
 * Whether this pid runs: unlike alive(), a zombie (exited, not yet reaped — an orphan waits for init,
 * which in a container may be slow or never) does not count.
 */
export function running(pid: number): boolean {
  const s = stat(pid);
  return s !== null && s.state !== "Z" && s.state !== "X";
}

/** The running processes (zombies excluded) of process group `pgid`. */
export function groupMembers(pgid: number): number[] {
  const out: number[] = [];
  for (const entry of readdirSync("/proc")) {
    const pid = Number(entry);
    if (!Number.isInteger(pid)) continue;
    const s = stat(pid);
    if (s !== null && s.pgid === pgid && s.state !== "Z" && s.state !== "X") out.push(pid);
  }
  return out;
}

/** A `meshgate up` process started by spawnUp: its exit code and everything it printed so far. */
export interface UpProcess {
  readonly child: ChildProcess;
  readonly exited: Promise<number | null>;
  output(): string;
}

/**
 * Spawns `node bin/meshgate.js up ARGS` and resolves once it printed its summary ("Ctrl-C drains");
 * rejects with its last output when it exits first or is not ready within `timeoutMs` (killing it).
 */
export async function spawnUp(args: readonly string[], cwd: string, timeoutMs: number): Promise<UpProcess> {
  const bin = new URL("../../bin/meshgate.js", import.meta.url).pathname;
  const child = spawn(process.execPath, [bin, "up", ...args], { cwd, stdio: ["ignore", "pipe", "pipe"] });
  let text = "";
  const up: UpProcess = {
    child,
    exited: new Promise((resolve) => child.on("exit", (code) => resolve(code))),
    output: () => text,
  };
  child.stdout!.on("data", (d: Buffer) => (text += d.toString()));
  child.stderr!.on("data", (d: Buffer) => (text += d.toString()));
  const deadline = Date.now() + timeoutMs;
  while (!text.includes("Ctrl-C drains")) {
    if (child.exitCode !== null)
      throw new Error(`meshgate up exited ${child.exitCode}:\n${text.slice(-3000)}`);
    if (Date.now() > deadline) {
      child.kill("SIGKILL");
      throw new Error(`meshgate up was not ready in ${timeoutMs / 1000} s:\n${text.slice(-3000)}`);
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  return up;
}
