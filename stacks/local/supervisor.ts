/**
 * The supervisor of `meshgate up`: starts processes phase by phase (apps and sidecars, then the gateway,
 * then Prometheus), waits for each phase to be ready, prefixes every line a child prints with its name
 * (`[orders] …`, `[orders-sidecar] …`), restarts a child that exits with exponential backoff, reports a
 * crash loop loudly (with the child's last lines), and stops everything: SIGTERM to each child's process
 * group in reverse phase order, SIGKILL after a timeout, or at once when forced.
 *
 * Each child is spawned detached — the leader of its own process group — so a `sh -c` command and
 * whatever it forks are signalled together, and after a leader exits its group is killed, so no process
 * is left behind.
 */
import { spawn, type ChildProcess } from "node:child_process";
import http from "node:http";
import net from "node:net";
import { createInterface } from "node:readline";
import type { Readiness } from "./plan.ts";

/** What the supervisor needs of a planned process. */
export interface SupervisedProcess {
  readonly name: string;
  readonly argv: readonly string[];
  readonly env: Readonly<Record<string, string>>;
  readonly cwd: string;
  readonly ready: Readiness;
  readonly phase: number;
}

export interface SupervisorOptions {
  /** Receives every output line, already prefixed, and the supervisor's own messages. */
  readonly out: (line: string) => void;
  /** Restart delay: base × 2^(consecutive failures − 1), at most max. @default { baseMs: 250, maxMs: 10000 } */
  readonly backoff?: { readonly baseMs: number; readonly maxMs: number };
  /** This many exits within the window is a crash loop (reported loudly). @default { exits: 4, windowMs: 60000 } */
  readonly crashLoop?: { readonly exits: number; readonly windowMs: number };
  /** A child that ran this long before exiting restarts without backoff history. @default 30000 */
  readonly stableMs?: number;
  /** How long start() waits for a phase to be ready. @default 60000 */
  readonly readyTimeoutMs?: number;
  /** How long stop() waits for a phase after SIGTERM before SIGKILL. @default 15000 */
  readonly stopTimeoutMs?: number;
  /** Environment every child inherits (default process.env). */
  readonly baseEnv?: NodeJS.ProcessEnv;
  /** Called when a child's pid or state changed (`meshgate up` keeps state.json current with it). */
  readonly onChange?: () => void;
  /**
   * Told of each process group as its leader starts, and once the group is gone (after the leader exited
   * and what it left was killed): `meshgate up`'s lifeline (./lifeline.ts), which stops every group still
   * started if the launcher dies without stopping them.
   */
  readonly groups?: { started(pgid: number): void; ended(pgid: number): void };
}

export type ChildState = "starting" | "running" | "ready" | "backoff" | "crash-loop" | "stopped";

export interface ChildStatus {
  readonly name: string;
  readonly pid: number | null;
  readonly state: ChildState;
  readonly restarts: number;
  readonly lastExit: string | null;
  readonly crashLoop: boolean;
}

export class SupervisorStartError extends Error {
  override name = "SupervisorStartError";
  readonly code = "E_LOCAL_NOT_READY";
}

interface Child {
  spec: SupervisedProcess;
  /** Being stopped on purpose while the others run (reconcile): its exit is not a crash to restart. */
  retiring: boolean;
  proc: ChildProcess | null;
  pid: number | null;
  state: ChildState;
  restarts: number;
  failures: number;
  exits: number[];
  startedAt: number;
  lastExit: string | null;
  crashLoop: boolean;
  ready: boolean;
  tail: string[];
  timer: NodeJS.Timeout | null;
  exited: Promise<void>;
}

const TAIL = 12;

/** The delay before restart number `failures` (1-based): base × 2^(failures − 1), capped. */
export function backoffDelay(failures: number, baseMs: number, maxMs: number): number {
  return Math.min(maxMs, baseMs * 2 ** Math.max(0, failures - 1));
}

export class Supervisor {
  readonly #o: Required<Omit<SupervisorOptions, "baseEnv">> & { baseEnv: NodeJS.ProcessEnv };
  #children: Child[];
  #stopping = false;

  constructor(processes: readonly SupervisedProcess[], options: SupervisorOptions) {
    this.#o = {
      out: options.out,
      backoff: options.backoff ?? { baseMs: 250, maxMs: 10_000 },
      crashLoop: options.crashLoop ?? { exits: 4, windowMs: 60_000 },
      stableMs: options.stableMs ?? 30_000,
      readyTimeoutMs: options.readyTimeoutMs ?? 60_000,
      stopTimeoutMs: options.stopTimeoutMs ?? 15_000,
      baseEnv: options.baseEnv ?? process.env,
      onChange: options.onChange ?? (() => {}),
      groups: options.groups ?? { started: () => {}, ended: () => {} },
    };
    this.#children = processes.map((spec) => this.#child(spec));
  }

  #child(spec: SupervisedProcess): Child {
    return {
      spec,
      retiring: false,
      proc: null,
      pid: null,
      state: "stopped",
      restarts: 0,
      failures: 0,
      exits: [],
      startedAt: 0,
      lastExit: null,
      crashLoop: false,
      ready: false,
      tail: [],
      timer: null,
      exited: Promise.resolve(),
    };
  }

  /** Starts every phase in order and waits for each to be ready; rejects (naming the laggard) on timeout. */
  async start(): Promise<void> {
    const phases = [...new Set(this.#children.map((c) => c.spec.phase))].sort((a, b) => a - b);
    for (const phase of phases) {
      const mine = this.#children.filter((c) => c.spec.phase === phase);
      for (const c of mine) this.#spawn(c);
      await Promise.all(mine.map((c) => this.#waitReady(c)));
      if (this.#stopping) return;
    }
  }

  /**
   * Moves the running set to `next` (`meshgate up --watch` after a spec change): stops the processes
   * that are no longer planned and those named in `restart` (SIGTERM to the group, SIGKILL after
   * stopTimeoutMs), then starts the restarted and the new ones phase by phase and waits for each phase
   * to be ready. The others keep running untouched. Rejects (naming the laggard) when one is not ready.
   */
  async reconcile(next: readonly SupervisedProcess[], restart: ReadonlySet<string>): Promise<void> {
    const planned = new Map(next.map((p) => [p.name, p]));
    const leaving = this.#children.filter((c) => !planned.has(c.spec.name) || restart.has(c.spec.name));
    await this.#retire(leaving);
    const kept = new Map(this.#children.filter((c) => planned.has(c.spec.name)).map((c) => [c.spec.name, c]));
    const starting: Child[] = [];
    this.#children = next.map((spec) => {
      const old = kept.get(spec.name);
      if (old && !restart.has(spec.name)) return old;
      const c = this.#child(spec);
      if (old) c.restarts = old.restarts;
      starting.push(c);
      return c;
    });
    const phases = [...new Set(starting.map((c) => c.spec.phase))].sort((a, b) => a - b);
    for (const phase of phases) {
      const mine = starting.filter((c) => c.spec.phase === phase);
      for (const c of mine) this.#spawn(c);
      await Promise.all(mine.map((c) => this.#waitReady(c)));
      if (this.#stopping) return;
    }
  }

  /** Stops these children on purpose (no restart while the others run). */
  async #retire(children: readonly Child[]): Promise<void> {
    for (const c of children) {
      c.retiring = true;
      if (c.timer) clearTimeout(c.timer);
      c.timer = null;
    }
    await this.#terminate(children.filter((c) => c.proc));
  }

  /** SIGTERM to each child's group, SIGKILL (said) to those still running after stopTimeoutMs. */
  async #terminate(children: readonly Child[]): Promise<void> {
    for (const c of children) this.#signal(c, "SIGTERM");
    const timer = new Promise<"timeout">((r) =>
      setTimeout(() => r("timeout"), this.#o.stopTimeoutMs).unref(),
    );
    const done = await Promise.race([
      Promise.all(children.map((c) => c.exited)).then(() => "done" as const),
      timer,
    ]);
    if (done === "timeout") {
      for (const c of children)
        if (c.proc)
          this.#o.out(`[supervisor] ${c.spec.name} did not stop within ${this.#o.stopTimeoutMs} ms: SIGKILL`);
      for (const c of children) this.#signal(c, "SIGKILL");
      await Promise.all(children.map((c) => c.exited));
    }
  }

  /** Every child's status (for state.json, the admin server and tests). */
  status(): ChildStatus[] {
    return this.#children.map((c) => ({
      name: c.spec.name,
      pid: c.pid,
      state: c.state,
      restarts: c.restarts,
      lastExit: c.lastExit,
      crashLoop: c.crashLoop,
    }));
  }

  /** Sends `signal` to a running process's group (Prometheus's SIGHUP reload); false when it is not running. */
  signal(name: string, signal: NodeJS.Signals): boolean {
    const c = this.#children.find((x) => x.spec.name === name);
    if (!c || c.proc === null || c.pid === null) return false;
    this.#signal(c, signal);
    return true;
  }

  /** Pids of every process group leader ever started (alive or not), for leak checks. */
  pids(): Record<string, number | null> {
    return Object.fromEntries(this.#children.map((c) => [c.spec.name, c.pid]));
  }

  /**
   * Stops everything: SIGTERM to each group in reverse phase order, SIGKILL after stopTimeoutMs (at once
   * with `force`). Resolves when every child has exited.
   */
  async stop(force = false): Promise<void> {
    this.#stopping = true;
    for (const c of this.#children) if (c.timer) clearTimeout(c.timer);
    if (force) {
      for (const c of this.#children) this.#signal(c, "SIGKILL");
      await Promise.all(this.#children.map((c) => c.exited));
      return;
    }
    const phases = [...new Set(this.#children.map((c) => c.spec.phase))].sort((a, b) => b - a);
    for (const phase of phases)
      await this.#terminate(this.#children.filter((c) => c.spec.phase === phase && c.proc));
  }

  #signal(c: Child, signal: NodeJS.Signals): void {
    if (c.pid === null) return;
    try {
      process.kill(-c.pid, signal);
    } catch {
      /* the group is gone */
    }
  }

  #spawn(c: Child): void {
    // Once stopping, nothing starts (a reconcile that was under way when stop() came).
    if (this.#stopping) {
      c.state = "stopped";
      return;
    }
    const [cmd, ...args] = c.spec.argv;
    c.state = "starting";
    c.ready = false;
    c.startedAt = Date.now();
    let proc: ChildProcess;
    try {
      proc = spawn(cmd!, args, {
        cwd: c.spec.cwd,
        env: { ...this.#o.baseEnv, ...c.spec.env },
        detached: true,
        stdio: ["ignore", "pipe", "pipe"],
      });
    } catch (err) {
      this.#exited(c, `spawn failed: ${(err as Error).message}`);
      return;
    }
    c.proc = proc;
    c.pid = proc.pid ?? null;
    // Detached: the child leads a new process group whose id is its pid.
    if (c.pid !== null) this.#o.groups.started(c.pid);
    this.#o.onChange();
    let resolveExit!: () => void;
    c.exited = new Promise<void>((r) => (resolveExit = r));
    for (const stream of [proc.stdout!, proc.stderr!]) {
      const rl = createInterface({ input: stream, crlfDelay: Infinity });
      rl.on("line", (line) => {
        c.tail.push(line);
        if (c.tail.length > TAIL) c.tail.shift();
        this.#o.out(`[${c.spec.name}] ${line}`);
      });
    }
    let done = false;
    const finish = (why: string) => {
      if (done) return;
      done = true;
      // Whatever the leader left in its group goes with it.
      if (c.pid !== null) {
        try {
          process.kill(-c.pid, "SIGKILL");
        } catch {
          /* nothing left */
        }
        this.#o.groups.ended(c.pid);
      }
      c.proc = null;
      this.#exited(c, why);
      resolveExit();
    };
    proc.on("error", (err) => finish(`spawn failed: ${err.message}`));
    proc.on("exit", (code, signal) => finish(signal ? `signal ${signal}` : `exit code ${code}`));
  }

  #exited(c: Child, why: string): void {
    c.lastExit = why;
    c.ready = false;
    if (this.#stopping || c.retiring) {
      c.state = "stopped";
      this.#o.onChange();
      return;
    }
    const now = Date.now();
    if (now - c.startedAt >= this.#o.stableMs) c.failures = 0;
    c.failures++;
    c.exits = [...c.exits.filter((t) => now - t < this.#o.crashLoop.windowMs), now];
    const delay = backoffDelay(c.failures, this.#o.backoff.baseMs, this.#o.backoff.maxMs);
    if (c.exits.length >= this.#o.crashLoop.exits) {
      c.crashLoop = true;
      c.state = "crash-loop";
      this.#o.out(
        `[supervisor] ✗ CRASH LOOP: ${c.spec.name} exited ${c.exits.length} times within ${Math.round(this.#o.crashLoop.windowMs / 1000)} s (last: ${why}); restarting in ${delay} ms. Its last lines:\n${c.tail.map((l) => `    ${l}`).join("\n")}`,
      );
    } else {
      c.state = "backoff";
      this.#o.out(`[supervisor] ${c.spec.name} exited (${why}); restart ${c.restarts + 1} in ${delay} ms`);
    }
    this.#o.onChange();
    c.timer = setTimeout(() => {
      c.timer = null;
      if (this.#stopping) return;
      c.restarts++;
      this.#spawn(c);
      // A restart is ready again by the same check as at start (start() and reconcile() wait on their
      // own; this one only marks it): otherwise it stayed "starting" for good, in /api/status and state.json.
      if (c.proc) void this.#markReady(c, c.proc);
    }, delay);
  }

  /** Probes a restarted child until it is ready (then marks it), or until it exits or the stop. */
  async #markReady(c: Child, proc: ChildProcess): Promise<void> {
    while (!this.#stopping && c.proc === proc) {
      if (await probe(c.spec.ready)) {
        if (c.proc !== proc || this.#stopping || c.ready) return;
        c.ready = true;
        c.state = "ready";
        this.#o.onChange();
        return;
      }
      await new Promise((r) => setTimeout(r, 250));
    }
  }

  async #waitReady(c: Child): Promise<void> {
    const deadline = Date.now() + this.#o.readyTimeoutMs;
    while (!this.#stopping) {
      if (c.proc && (await probe(c.spec.ready))) {
        c.ready = true;
        c.state = "ready";
        this.#o.onChange();
        return;
      }
      if (Date.now() > deadline)
        throw new SupervisorStartError(
          `${c.spec.name} was not ready within ${Math.round(this.#o.readyTimeoutMs / 1000)} s (${describe(c.spec.ready)}; ${c.lastExit ? `last exit: ${c.lastExit}, ` : ""}${c.restarts} restarts). Its last lines:\n${c.tail.map((l) => `    ${l}`).join("\n")}`,
        );
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}

function describe(r: Readiness): string {
  return r.kind === "http" ? `GET ${r.url} never answered 200` : `nothing accepted on 127.0.0.1:${r.port}`;
}

/** One readiness probe: an HTTP GET answering 200, or a TCP connect that succeeds. */
export function probe(r: Readiness): Promise<boolean> {
  return new Promise((resolve) => {
    if (r.kind === "tcp") {
      const s = net.connect({ host: "127.0.0.1", port: r.port });
      s.setTimeout(1000);
      s.on("connect", () => {
        s.destroy();
        resolve(true);
      });
      s.on("timeout", () => {
        s.destroy();
        resolve(false);
      });
      s.on("error", () => resolve(false));
      return;
    }
    const req = http.get(r.url, { agent: false, timeout: 1000 }, (res) => {
      res.resume();
      resolve(res.statusCode === 200);
    });
    req.on("timeout", () => req.destroy());
    req.on("error", () => resolve(false));
  });
}
