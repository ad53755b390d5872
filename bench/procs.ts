/**
 * The process and /proc helpers bench/gateway.ts and bench/mesh.ts share: starting pinned, niced child
 * processes in their own process groups with their output in log files, stopping them (all of them on
 * exit or on a stop signal), waiting until a proxy answers, and reading CPU ticks and memory of process
 * trees from /proc.
 */
import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import { closeSync, openSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import http from "node:http";
import type { AddressInfo } from "node:net";
import os from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";

/** Whether `cmd` is on the PATH. */
export function have(cmd: string): boolean {
  try {
    execFileSync("sh", ["-c", `command -v ${cmd}`], { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
}

// ───────────── child processes ─────────────

export interface Started {
  readonly name: string;
  readonly child: ChildProcess;
  readonly logFile: string;
  /** Resolves with the exit code (or signal) when the process ends. */
  readonly exited: Promise<string>;
}

export interface ProcessesOptions {
  /** The log lines' prefix, e.g. `bench:mesh`. */
  readonly label: string;
  /** The temp dir: log files, configs; removed at exit unless `keep`. */
  readonly tmp: string;
  /** The CPU this bench process (and the load generator) runs on. */
  readonly loadCpu: string;
  /** Pin with taskset (when installed). */
  readonly pin: boolean;
  /** Keep the temp dir at exit and say where it is. */
  readonly keep?: boolean;
  /**
   * Raise the session's autogroup to nice -15 while the bench runs (restored at exit): with the
   * kernel's autogroup scheduling, nice only ranks processes of one session, and a busy process of
   * another session (a terminal, a CI job) would still get an equal share of the CPU.
   */
  readonly autogroup?: boolean;
}

/** The child processes of one bench run. */
export interface Processes {
  /** nice -n -15 is permitted (tried on this process). */
  readonly nice: boolean;
  /** taskset is installed and pinning is wanted. */
  readonly taskset: boolean;
  /** The session's autogroup nice before the bench raised it, or null (not available, not asked). */
  readonly autogroup: string | null;
  /** Set by a stop signal (Ctrl-C): nothing more is measured or reported. */
  readonly interrupted: () => boolean;
  /** `taskset -c cpu nice -n -15`, as far as permitted. */
  prefix(cpu: string): string[];
  /** Starts `argv` pinned to `cpu`, in its own process group, output to `<tmp>/<name>.log`. */
  start(name: string, argv: string[], cpu: string, opts?: { cwd?: string }): Started;
  /** Whether the process is still running. */
  running(s: Started): boolean;
  /**
   * Runs a load generator in its own process group to its end and resolves with its stdout and stderr;
   * its group is killed after `timeoutMs`.
   */
  output(argv: readonly string[], timeoutMs: number): Promise<string>;
  /** SIGTERM to the process group, SIGKILL after 3 s. */
  stop(s: Started): Promise<void>;
  /** Every child process stopped (SIGTERM, then SIGKILL after 3 s). */
  stopAll(): Promise<void>;
}

function signalGroup(child: ChildProcess, signal: NodeJS.Signals): void {
  if (child.pid === undefined) return;
  try {
    process.kill(-child.pid, signal);
  } catch {
    try {
      child.kill(signal);
    } catch {
      /* gone */
    }
  }
}

function raiseAutogroup(): string | null {
  try {
    const before = /nice (-?\d+)/.exec(readFileSync("/proc/self/autogroup", "utf8"))?.[1];
    if (before === undefined) return null;
    writeFileSync("/proc/self/autogroup", "-15");
    process.on("exit", () => {
      try {
        writeFileSync("/proc/self/autogroup", before);
      } catch {
        /* the session is gone */
      }
    });
    return before;
  } catch {
    return null;
  }
}

/**
 * The process set of a bench: renices and pins this process, and installs the exit and stop-signal
 * handlers that stop every child and remove the temp dir.
 */
export function processes(o: ProcessesOptions): Processes {
  const log = (msg: string) => process.stderr.write(`[${o.label}] ${msg}\n`);
  const children = new Set<ChildProcess>();
  const nice = (() => {
    try {
      os.setPriority(-15);
      return true;
    } catch {
      return false;
    }
  })();
  const autogroup = o.autogroup ? raiseAutogroup() : null;
  const taskset = o.pin && have("taskset");
  if (taskset) {
    try {
      execFileSync("taskset", ["-a", "-cp", o.loadCpu, String(process.pid)], { stdio: "ignore" });
    } catch {
      /* not pinned: the bench process only samples /proc */
    }
  }
  let interrupted = false;
  const prefix = (cpu: string) => [
    ...(taskset ? ["taskset", "-c", cpu] : []),
    ...(nice ? ["nice", "-n", "-15"] : []),
  ];

  const stopAll = async () => {
    for (const c of children) signalGroup(c, "SIGTERM");
    const deadline = Date.now() + 3000;
    while (children.size > 0 && Date.now() < deadline) await sleep(50);
    for (const c of children) signalGroup(c, "SIGKILL");
  };
  process.on("exit", () => {
    for (const c of children) signalGroup(c, "SIGKILL");
    if (o.keep) process.stderr.write(`[${o.label}] kept ${o.tmp}\n`);
    else rmSync(o.tmp, { recursive: true, force: true });
  });
  for (const [sig, code] of [
    ["SIGINT", 130],
    ["SIGTERM", 143],
    ["SIGHUP", 129],
  ] as const) {
    process.on(sig, () => {
      interrupted = true;
      log(`${sig}: stopping every child process`);
      void stopAll().then(() => process.exit(code));
    });
  }

  return {
    nice,
    taskset,
    autogroup,
    interrupted: () => interrupted,
    prefix,
    start(name, argv, cpu, opts = {}) {
      const logFile = join(o.tmp, `${name}.log`);
      const fd = openSync(logFile, "a");
      const [cmd, ...args] = [...prefix(cpu), ...argv];
      const child = spawn(cmd!, args, { cwd: opts.cwd ?? o.tmp, detached: true, stdio: ["ignore", fd, fd] });
      closeSync(fd);
      children.add(child);
      const exited = new Promise<string>((resolve) => {
        child.on("exit", (code, signal) => {
          children.delete(child);
          resolve(signal ?? String(code));
        });
        child.on("error", (err) => {
          children.delete(child);
          resolve(err.message);
        });
      });
      return { name, child, logFile, exited };
    },
    running: (s) => children.has(s.child),
    async output(argv, timeoutMs) {
      const child = spawn(argv[0]!, argv.slice(1), { detached: true, stdio: ["ignore", "pipe", "pipe"] });
      children.add(child);
      let out = "";
      child.stdout.setEncoding("utf8").on("data", (c: string) => (out += c));
      child.stderr.setEncoding("utf8").on("data", (c: string) => (out += c));
      const killer = setTimeout(() => signalGroup(child, "SIGKILL"), timeoutMs);
      await new Promise<void>((resolve) => child.on("close", () => resolve()));
      clearTimeout(killer);
      children.delete(child);
      return out;
    },
    async stop(s) {
      if (!children.has(s.child)) return;
      signalGroup(s.child, "SIGTERM");
      const done = await Promise.race([s.exited.then(() => true), sleep(3000).then(() => false)]);
      if (!done) {
        signalGroup(s.child, "SIGKILL");
        await Promise.race([s.exited, sleep(1000)]);
      }
    },
    stopAll,
  };
}

/** The last lines of a log file ("" when unreadable). */
export function tail(file: string, lines = 15): string {
  try {
    return readFileSync(file, "utf8").trimEnd().split("\n").slice(-lines).join("\n");
  } catch {
    return "";
  }
}

// ───────────── HTTP ─────────────

/** A port free on 127.0.0.1 now. */
export async function freePort(): Promise<number> {
  const s = http.createServer();
  await new Promise<void>((r) => s.listen(0, "127.0.0.1", r));
  const port = (s.address() as AddressInfo).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

/** One GET to 127.0.0.1 (2-s timeout); `headers` as `name: value` lines. */
export function get(
  port: number,
  path: string,
  headers: readonly string[] = [],
): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const h = Object.fromEntries(
      headers.map((l) => [l.slice(0, l.indexOf(":")), l.slice(l.indexOf(":") + 1).trim()]),
    );
    const req = http.get(
      { host: "127.0.0.1", port, path, agent: false, timeout: 2000, headers: h },
      (res) => {
        let body = "";
        res.setEncoding("utf8");
        res.on("data", (c: string) => (body += c));
        res.on("end", () => resolve({ status: res.statusCode ?? 0, body }));
        res.on("error", reject);
      },
    );
    req.on("timeout", () => req.destroy(new Error("timeout")));
    req.on("error", reject);
  });
}

/**
 * Waits until `port` answers GET `path` with 200 and `body`; fails early when one of `procs` exits
 * (with the end of its log), and after `timeoutMs`.
 */
export async function ready(
  procs: Processes,
  what: { name: string; port: number; path: string; body: string; headers?: readonly string[] },
  started: readonly Started[],
  timeoutMs: number,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last = "";
  while (Date.now() < deadline) {
    for (const s of started)
      if (!procs.running(s)) throw new Error(`${s.name} exited at start:\n${tail(s.logFile)}`);
    try {
      const r = await get(what.port, what.path, what.headers);
      if (r.status === 200 && r.body === what.body) return;
      last = `status ${r.status}, body ${JSON.stringify(r.body.slice(0, 200))}`;
    } catch (err) {
      last = (err as Error).message;
    }
    await sleep(100);
  }
  throw new Error(
    `${what.name} did not answer 200 with the expected body within ${timeoutMs / 1000} s (${last})`,
  );
}

// ───────────── /proc ─────────────

/** Clock ticks per second of /proc's CPU times. */
export const TCK = (() => {
  try {
    return Number(execFileSync("getconf", ["CLK_TCK"], { encoding: "utf8" }).trim()) || 100;
  } catch {
    return 100;
  }
})();

export interface ProcInfo {
  readonly pid: number;
  readonly ppid: number;
  /** utime + stime + cutime + cstime, in ticks. */
  readonly ticks: number;
}

export function readProc(pid: number | string): ProcInfo | null {
  try {
    const text = readFileSync(`/proc/${pid}/stat`, "utf8");
    const f = text.slice(text.lastIndexOf(")") + 2).split(" ");
    return {
      pid: Number(pid),
      ppid: Number(f[1]),
      ticks: Number(f[11]) + Number(f[12]) + Number(f[13]) + Number(f[14]),
    };
  } catch {
    return null;
  }
}

/** Every process of the machine. */
export function allProcs(): ProcInfo[] {
  const out: ProcInfo[] = [];
  for (const name of readdirSync("/proc")) {
    if (name.charCodeAt(0) < 48 || name.charCodeAt(0) > 57) continue;
    const p = readProc(name);
    if (p) out.push(p);
  }
  return out;
}

/** `root` and all its descendants (taskset and nice exec themselves, nginx forks workers). */
export function tree(root: number, procs: ProcInfo[] = allProcs()): ProcInfo[] {
  const byParent = new Map<number, ProcInfo[]>();
  for (const p of procs) byParent.set(p.ppid, [...(byParent.get(p.ppid) ?? []), p]);
  const self = procs.find((p) => p.pid === root);
  if (!self) return [];
  const out = [self];
  for (let i = 0; i < out.length; i++) out.push(...(byParent.get(out[i]!.pid) ?? []));
  return out;
}

/** CPU ticks of a process tree. */
export const treeTicks = (root: number, procs?: ProcInfo[]) =>
  tree(root, procs).reduce((s, p) => s + p.ticks, 0);

/** A /proc/<pid>/status field (kB) summed over the process tree: VmRSS, or RssAnon (private memory). */
export function treeStatusKiB(root: number, field: "VmRSS" | "RssAnon"): number {
  let kib = 0;
  for (const p of tree(root)) {
    try {
      const m = new RegExp(`${field}:\\s+(\\d+)`).exec(readFileSync(`/proc/${p.pid}/status`, "utf8"));
      if (m) kib += Number(m[1]);
    } catch {
      /* exited */
    }
  }
  return kib;
}

export const treeRssKiB = (root: number) => treeStatusKiB(root, "VmRSS");

/** Busy ticks of the whole machine (user, nice, system, irq, softirq, steal). */
export function machineBusy(): number {
  const f = readFileSync("/proc/stat", "utf8").split("\n")[0]!.trim().split(/\s+/).slice(1).map(Number);
  return f[0]! + f[1]! + f[2]! + f[5]! + f[6]! + f[7]!;
}
