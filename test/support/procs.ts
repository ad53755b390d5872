/**
 * Last-resort cleanup for tests that start process trees (`meshgate up`): kills every process whose
 * command line mentions `marker` (a test's own temp directory), so a test that failed half-way — before
 * it learned its children's pids — leaves nothing running.
 */
import { readdirSync, readFileSync } from "node:fs";

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
