/**
 * The lifeline of `meshgate up`: its children lead their own process groups (spawned detached), so a
 * launcher killed with SIGKILL — which it cannot handle — would leave them all running on the mesh's ports.
 * Before the first child starts, `up` starts one small reaper (./reaper.ts, detached, under this Node) and
 * tells it, over its stdin, every process group the supervisor starts (`+PGID`) and every one that ended
 * (`-PGID`). Its orderly stop ends with `bye`; a pipe that closes without it (the launcher died) makes the
 * reaper stop every group it was told of (SIGTERM, SIGKILL after 5 s). It needs nothing of the children.
 */
import { spawn } from "node:child_process";
import type { Socket } from "node:net";
import { fileURLToPath } from "node:url";

const REAPER = fileURLToPath(new URL("./reaper.ts", import.meta.url));

/** How long close() waits for the reaper to exit after `bye`. */
const CLOSE_WAIT_MS = 2000;

export interface Lifeline {
  /** The reaper's pid (null when it could not be started). */
  readonly pid: number | null;
  /** A child started leading this process group. */
  started(pgid: number): void;
  /** This process group ended (the supervisor killed what its leader left). */
  ended(pgid: number): void;
  /** The launcher's own stop finished: `bye`, then waits (2 s at most) for the reaper to exit. */
  close(): Promise<void>;
}

/**
 * Starts the reaper for the mesh of `stateDir` (named on its command line). It keeps nothing of this
 * process alive (the child and the pipe are unref'd); a reaper that is gone — killed, or never started —
 * is reported once through `warn`, and writes to it are dropped (an EPIPE must not end the launcher).
 */
export function startLifeline(stateDir: string, warn: (line: string) => void): Lifeline {
  const proc = spawn(process.execPath, [REAPER, stateDir], {
    detached: true,
    stdio: ["pipe", "ignore", "inherit"],
  });
  let closing = false;
  let gone = false;
  const lost = (why: string) => {
    if (gone) return;
    gone = true;
    if (!closing)
      warn(
        `[up] ✗ the reaper${proc.pid ? ` (pid ${proc.pid})` : ""} ${why}: a launcher killed -9 now leaves its processes running (the next up on the state dir stops those naming it)`,
      );
  };
  proc.on("error", (err) => lost(`could not start (${err.message})`));
  proc.on("exit", (code, signal) => lost(`exited (${signal ? `signal ${signal}` : `exit code ${code}`})`));
  proc.unref();
  const stdin = proc.stdin!;
  (stdin as Socket).unref();
  stdin.on("error", () => {}); // EPIPE: the reaper is gone (said once, above)
  const send = (line: string) => {
    if (!closing && stdin.writable) stdin.write(`${line}\n`);
  };
  let closed: Promise<void> | null = null;
  return {
    pid: proc.pid ?? null,
    started: (pgid) => send(`+${pgid}`),
    ended: (pgid) => send(`-${pgid}`),
    close: () =>
      (closed ??= new Promise<void>((resolve) => {
        if (stdin.writable) stdin.end("bye\n");
        closing = true;
        if (gone || proc.pid === undefined || proc.exitCode !== null || proc.signalCode !== null)
          return resolve();
        // A timer, not a ref'd child: a reaper that never exits must not hold the launcher up.
        const timer = setTimeout(resolve, CLOSE_WAIT_MS);
        proc.once("exit", () => {
          clearTimeout(timer);
          resolve();
        });
      })),
  };
}
