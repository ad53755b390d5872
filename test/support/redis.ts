/**
 * A real `redis-server` for tests: started on a free port of 127.0.0.1 (never 6379) in its own temp
 * directory, with persistence off (`--save "" --appendonly no`), waited for until it answers PING, and
 * stopped (or SIGKILLed, or restarted on the same port) by the test.
 *
 *   const redis = await startRedis();           // redis.url = "redis://127.0.0.1:<port>/0"
 *   await redis.kill();                          // SIGKILL: the server dies mid-test
 *   await redis.restart();                       // same port, empty data set
 *   await redis.stop();                          // in afterAll
 */
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import net from "node:net";
import tls from "node:tls";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { freeBlock, freePort } from "./ports.ts";

/** The server binary: `$REDIS_SERVER`, else `redis-server` on the PATH (Debian: /usr/bin/redis-server). */
export const REDIS_SERVER = process.env.REDIS_SERVER ?? "redis-server";

export interface TestRedis {
  readonly port: number;
  /** `redis://127.0.0.1:<port>/0` (with the password when one was set). */
  readonly url: string;
  readonly pid: () => number;
  /** Output of the server (for failed-start messages). */
  readonly output: () => string;
  /** SIGKILL, and wait for the process to be gone. */
  kill(): Promise<void>;
  /** SIGSTOP / SIGCONT: the server stalls (connections stay open, nothing is answered). */
  pause(): void;
  resume(): void;
  /** Starts again on the same port (after kill or stop). */
  restart(): Promise<void>;
  /** SIGTERM, wait, remove the temp dir. Idempotent. */
  stop(): Promise<void>;
}

export interface StartRedisOptions {
  /** `requirepass` for the default user. */
  readonly password?: string;
  /** Serve TLS only (`rediss://`), with this certificate (self-signed is fine; clients pass it as `ca`). */
  readonly tls?: { readonly certFile: string; readonly keyFile: string };
  /** Extra server arguments (e.g. `["--enable-debug-command", "local"]`). */
  readonly args?: readonly string[];
}

export async function startRedis(options: StartRedisOptions = {}): Promise<TestRedis> {
  const dir = await mkdtemp(join(tmpdir(), "meshgate-redis-"));
  // A cluster node also listens on a bus port, by default port + 10,000 — inside the ephemeral range
  // (32768+), where one of the suite's client sockets can hold it (EADDRINUSE at start, seen in a full
  // run): the bus gets the next port of a free pair from below that range.
  const cluster = (options.args ?? []).includes("--cluster-enabled");
  const port = cluster ? await freeBlock(2) : await freePort();
  const busPort = port + 1;
  let child: ChildProcess | null = null;
  let out = "";
  let exited: Promise<void> = Promise.resolve();

  const launch = async () => {
    const args = [
      ...(options.tls
        ? [
            "--port",
            "0",
            "--tls-port",
            String(port),
            "--tls-cert-file",
            options.tls.certFile,
            "--tls-key-file",
            options.tls.keyFile,
            "--tls-ca-cert-file",
            options.tls.certFile,
            "--tls-auth-clients",
            "no",
          ]
        : ["--port", String(port)]),
      "--bind",
      "127.0.0.1",
      "--save",
      "",
      "--appendonly",
      "no",
      "--dir",
      dir,
      "--daemonize",
      "no",
      "--loglevel",
      "warning",
      ...(options.password ? ["--requirepass", options.password] : []),
      ...(cluster ? ["--cluster-port", String(busPort)] : []),
      ...(options.args ?? []),
    ];
    const c = spawn(REDIS_SERVER, args, { cwd: dir, stdio: ["ignore", "pipe", "pipe"] });
    child = c;
    c.stdout!.on("data", (d: Buffer) => (out += d.toString()));
    c.stderr!.on("data", (d: Buffer) => (out += d.toString()));
    exited = new Promise<void>((r) => c.once("exit", () => r()));
    const deadline = Date.now() + 10_000;
    while (Date.now() < deadline) {
      if (c.exitCode !== null) throw new Error(`redis-server exited at start: ${out}`);
      if (await answersPing(port, options.password, options.tls !== undefined)) return;
      await sleep(20);
    }
    c.kill("SIGKILL");
    throw new Error(`redis-server on port ${port} did not answer within 10 s: ${out}`);
  };
  await launch();

  const stopWith = async (signal: NodeJS.Signals) => {
    const c = child;
    if (!c || c.exitCode !== null || c.signalCode !== null) return;
    if (signal === "SIGTERM") c.kill("SIGCONT"); // a paused server cannot handle SIGTERM
    c.kill(signal);
    await Promise.race([exited, sleep(5000)]);
    if (c.exitCode === null && c.signalCode === null) {
      c.kill("SIGKILL");
      await exited;
    }
  };
  let stopped = false;
  return {
    port,
    url: `${options.tls ? "rediss" : "redis"}://${options.password ? `:${encodeURIComponent(options.password)}@` : ""}127.0.0.1:${port}/0`,
    pid: () => child?.pid ?? 0,
    output: () => out,
    kill: () => stopWith("SIGKILL"),
    pause: () => void child?.kill("SIGSTOP"),
    resume: () => void child?.kill("SIGCONT"),
    restart: async () => {
      await stopWith("SIGKILL");
      await launch();
    },
    stop: async () => {
      if (stopped) return;
      stopped = true;
      await stopWith("SIGTERM");
      await rm(dir, { recursive: true, force: true });
    },
  };
}

/** One PING over a fresh connection (with AUTH first when there is a password). */
function answersPing(port: number, password: string | undefined, overTls: boolean): Promise<boolean> {
  return new Promise((resolve) => {
    // The helper only checks liveness; the client under test verifies the certificate.
    const s = overTls
      ? tls.connect({ port, host: "127.0.0.1", rejectUnauthorized: false })
      : net.connect({ port, host: "127.0.0.1" });
    let got = "";
    const done = (ok: boolean) => {
      s.destroy();
      resolve(ok);
    };
    s.setTimeout(500, () => done(false));
    s.on("error", () => done(false));
    s.once(overTls ? "secureConnect" : "connect", () => {
      if (password) s.write(`*2\r\n$4\r\nAUTH\r\n$${Buffer.byteLength(password)}\r\n${password}\r\n`);
      s.write("*1\r\n$4\r\nPING\r\n");
    });
    s.on("data", (d: Buffer) => {
      got += d.toString();
      if (got.includes("+PONG\r\n")) done(true);
      else if (got.includes("-")) done(false);
    });
  });
}
