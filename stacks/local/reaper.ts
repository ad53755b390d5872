/**
 * `node stacks/local/reaper.ts STATE_DIR [GRACE_MS]`: the lifeline of one `meshgate up`, started by
 * ./lifeline.ts before the first child, detached (its own process group and session: a terminal's Ctrl-C
 * or hangup never reaches it; it ignores SIGINT and SIGHUP all the same). Its stdin is a pipe from the
 * launcher, one line each: `+PGID` a process group the launcher started, `-PGID` one that ended, `bye`
 * the launcher's own stop finished.
 *
 * EOF after `bye`: it exits 0 and signals nothing. EOF without it means the launcher died (kill -9, the
 * OOM killer): every recorded group gets SIGTERM, those still there after GRACE_MS (5000) SIGKILL, and
 * it exits. It signals no group it was not told of. STATE_DIR only names the mesh it guards (in `ps`,
 * and for a sweep by command line). It imports nothing of the project: small, and quick to start.
 */
const GRACE_MS = /^[0-9]{1,6}$/.test(process.argv[3] ?? "") ? Number(process.argv[3]) : 5000;
const launcher = process.ppid;
const groups = new Set<number>();
let clean = false;
let pending = "";
let ended = false;

for (const signal of ["SIGINT", "SIGHUP"] as const) process.on(signal, () => {});
process.stderr.on("error", () => {}); // the launcher's terminal or pipe may be gone

function onLine(line: string): void {
  if (line === "bye") {
    clean = true;
    return;
  }
  const m = /^([+-])([1-9][0-9]{0,9})$/.exec(line);
  // Never 0 or 1 (kill(-0) is this process's own group, kill(-1) every process), nor its own group.
  if (!m || Number(m[2]) <= 1 || Number(m[2]) === process.pid) return;
  if (m[1] === "+") groups.add(Number(m[2]));
  else groups.delete(Number(m[2]));
}

/** Whether the group still has a process this user may signal. */
function exists(pgid: number): boolean {
  try {
    process.kill(-pgid, 0);
    return true;
  } catch {
    return false;
  }
}

function signal(pgid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(-pgid, sig);
  } catch {
    /* gone */
  }
}

async function reap(): Promise<void> {
  let left = [...groups].filter(exists);
  if (left.length > 0)
    process.stderr.write(
      `[reaper] meshgate up (pid ${launcher}) died: stopping ${left.length === 1 ? "the process group" : `the ${left.length} process groups`} it left (SIGTERM, SIGKILL after ${GRACE_MS / 1000} s)\n`,
    );
  for (const pgid of left) signal(pgid, "SIGTERM");
  const deadline = Date.now() + GRACE_MS;
  while (left.length > 0 && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 100));
    left = left.filter(exists);
  }
  for (const pgid of left) signal(pgid, "SIGKILL");
  process.exit(0);
}

function onEnd(): void {
  if (ended) return;
  ended = true;
  if (pending) onLine(pending.trim());
  if (clean) process.exit(0);
  void reap();
}

process.stdin.setEncoding("utf8");
process.stdin.on("data", (chunk: string) => {
  const lines = (pending + chunk).split("\n");
  pending = lines.pop() ?? "";
  for (const line of lines) onLine(line.trim());
});
process.stdin.on("end", onEnd);
process.stdin.on("error", onEnd);
