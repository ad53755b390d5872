/**
 * `node bench/auth-gateway.ts [--quick]`: what authentication costs a real gateway — the throughput of a JWT
 * route (ES256 bearer token, a verified-token cache hit per request, the principal headers set upstream,
 * metrics on) next to the bare public route of the same gateway, and an API-key route, as a ratio (issue 4's
 * goal: the full route keeps ≥ 0.85× the bare route's throughput; rate limiting is measured by its own bench).
 *
 * One `meshgate gateway --workers 1` process pinned to CPU 0 (`taskset` when available), a node upstream
 * answering 104 bytes and `wrk -t1 -c32` on the other CPU; the routes are measured interleaved (bare, jwt,
 * key, bare, …) so that machine noise hits them alike; the median of the rounds is reported, next to the
 * gateway process tree's CPU time per request (/proc/<pid>/stat), which other load barely disturbs.
 * Needs wrk. Benchmarks are not pass/fail: the ratio is reported, never turned into a non-zero exit.
 */
import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import { generateKeyPairSync } from "node:crypto";
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { SignJWT } from "jose";
import { apiKeyHash } from "../runtime/auth/index.ts";
import { median, specGatewayConfig, table } from "./support.ts";

const QUICK = process.argv.includes("--quick");
const ROUNDS = QUICK ? 2 : 5;
const SECONDS = QUICK ? 3 : 6;
const ROOT = new URL("../", import.meta.url).pathname;
const BODY = JSON.stringify({ id: 42, name: "meshgate bench item", pad: "x".repeat(64) });
const API_KEY = "bench-key-0123456789abcdef";
const hasTaskset = (() => {
  try {
    execFileSync("taskset", ["-c", "0", "true"]);
    return true;
  } catch {
    return false;
  }
})();
const pin = (cpu: number): string[] => (hasTaskset ? ["taskset", "-c", String(cpu)] : []);

const upstream = http.createServer((_req, res) => {
  res.writeHead(200, { "content-type": "application/json", "content-length": Buffer.byteLength(BODY) });
  res.end(BODY);
});
await new Promise<void>((r) => upstream.listen(0, "127.0.0.1", r));
const upPort = (upstream.address() as AddressInfo).port;

const freePort = async () => {
  const s = http.createServer();
  await new Promise<void>((r) => s.listen(0, "127.0.0.1", r));
  const p = (s.address() as AddressInfo).port;
  await new Promise<void>((r) => s.close(() => r()));
  return p;
};

const ec = generateKeyPairSync("ec", { namedCurve: "P-256" });
const jwk = { ...ec.publicKey.export({ format: "jwk" }), kid: "k1", alg: "ES256", use: "sig" };
const token = await new SignJWT({
  iss: "https://id.bench/",
  aud: "api",
  sub: "alice",
  scope: "items:read",
  exp: Math.floor(Date.now() / 1000) + 3600,
})
  .setProtectedHeader({ alg: "ES256", kid: "k1" })
  .sign(ec.privateKey);

const port = await freePort();
const admin = await freePort();
const RATE = { rateLimit: { requests: 1_000_000, per: "1s" } };
const config = specGatewayConfig({
  routes: [
    { name: "bare", match: { path: "/bare/**" }, to: "upstream", public: true, ...RATE },
    {
      name: "jwt",
      match: { path: "/jwt/**" },
      to: "upstream",
      auth: { jwt: "main", scopes: ["items:read"] },
      ...RATE,
    },
    { name: "key", match: { path: "/key/**" }, to: "upstream", auth: { apiKey: true }, ...RATE },
  ],
  upstreams: { upstream: upPort },
  gateway: {
    listeners: [{ name: "http", port, protocol: "http" }],
    jwt: {
      main: {
        issuer: "https://id.bench/",
        audiences: ["api"],
        jwks: { keys: [jwk] },
        algorithms: ["ES256"],
        forwardClaims: { "x-user": "sub" },
      },
    },
    apiKeys: { consumers: { bench: { keyHashes: [apiKeyHash(API_KEY)], groups: ["g"] } } },
  },
  observability: { logs: { access: false } },
});
const tmp = mkdtempSync(join(tmpdir(), "meshgate-auth-bench-"));
const file = join(tmp, "gateway.json");
writeFileSync(file, JSON.stringify(config));

const children = new Set<ChildProcess>();
const gateway = spawn(
  ...((): [string, string[]] => {
    const argv = [...pin(0), process.execPath, join(ROOT, "bin/meshgate.js"), "gateway", "--config", file];
    argv.push("--host", "127.0.0.1", "--admin-port", String(admin), "--workers", "1");
    return [argv[0]!, argv.slice(1)];
  })(),
  { stdio: "ignore", detached: true },
);
children.add(gateway);
const cleanup = () => {
  for (const c of children) {
    try {
      process.kill(-c.pid!, "SIGKILL");
    } catch {
      /* gone */
    }
  }
  upstream.close();
  rmSync(tmp, { recursive: true, force: true });
};
process.on("SIGINT", () => {
  cleanup();
  process.exit(130);
});

async function ready(): Promise<void> {
  for (let i = 0; i < 100; i++) {
    const ok = await new Promise<boolean>((r) =>
      http
        .get({ host: "127.0.0.1", port: admin, path: "/ready" }, (res) => {
          res.resume();
          r(res.statusCode === 200);
        })
        .on("error", () => r(false)),
    );
    if (ok) return;
    await sleep(100);
  }
  throw new Error("the gateway did not become ready");
}

/** CPU ticks (utime + stime) of the gateway's process tree, from /proc. */
function gatewayTicks(): number {
  const procs: { pid: number; ppid: number; ticks: number }[] = [];
  for (const name of readdirSync("/proc")) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const text = readFileSync(`/proc/${name}/stat`, "utf8");
      const f = text.slice(text.lastIndexOf(")") + 2).split(" ");
      procs.push({ pid: Number(name), ppid: Number(f[1]), ticks: Number(f[11]) + Number(f[12]) });
    } catch {
      /* gone */
    }
  }
  const inTree = new Set([gateway.pid!]);
  let grew = true;
  while (grew) {
    grew = false;
    for (const p of procs)
      if (!inTree.has(p.pid) && inTree.has(p.ppid)) {
        inTree.add(p.pid);
        grew = true;
      }
  }
  return procs.filter((p) => inTree.has(p.pid)).reduce((sum, p) => sum + p.ticks, 0);
}
const TICK_US = 1e6 / Number(execFileSync("getconf", ["CLK_TCK"]).toString().trim() || 100);

function wrk(
  path: string,
  headers: string[],
  seconds: number,
): Promise<{ rps: number; non2xx: number; cpuUsPerRequest: number }> {
  const argv = [
    ...pin(1),
    "wrk",
    "-t1",
    "-c32",
    `-d${seconds}s`,
    ...headers.flatMap((h) => ["-H", h]),
    `http://127.0.0.1:${port}${path}`,
  ];
  const ticksBefore = gatewayTicks();
  return new Promise((resolve, reject) => {
    const child = spawn(argv[0]!, argv.slice(1), { stdio: ["ignore", "pipe", "pipe"], detached: true });
    children.add(child);
    let out = "";
    child.stdout!.setEncoding("utf8").on("data", (c: string) => (out += c));
    child.on("close", () => {
      children.delete(child);
      const rps = /Requests\/sec:\s+([\d.]+)/.exec(out);
      if (!rps) return reject(new Error(`wrk printed no result:\n${out}`));
      const bad = /Non-2xx or 3xx responses:\s+(\d+)/.exec(out);
      const requests = Number(/(\d+) requests in/.exec(out)?.[1] ?? 0);
      const cpuUs = (gatewayTicks() - ticksBefore) * TICK_US;
      resolve({
        rps: Number(rps[1]),
        non2xx: bad ? Number(bad[1]) : 0,
        cpuUsPerRequest: requests ? cpuUs / requests : NaN,
      });
    });
  });
}

const subjects: [string, string, string[]][] = [
  ["bare public route", "/bare/items/42", []],
  [
    "jwt route (cache hit, scope check, principal headers)",
    "/jwt/items/42",
    [`authorization: Bearer ${token}`],
  ],
  ["api-key route", "/key/items/42", [`x-api-key: ${API_KEY}`]],
];

try {
  await ready();
  for (const [, path, headers] of subjects) await wrk(path, headers, 1); // warm-up
  const rps = new Map<string, number[]>();
  const cpu = new Map<string, number[]>();
  for (let round = 0; round < ROUNDS; round++) {
    for (const [name, path, headers] of subjects) {
      const r = await wrk(path, headers, SECONDS);
      if (r.non2xx > 0) throw new Error(`${name}: ${r.non2xx} non-2xx responses`);
      rps.set(name, [...(rps.get(name) ?? []), r.rps]);
      cpu.set(name, [...(cpu.get(name) ?? []), r.cpuUsPerRequest]);
    }
  }
  const bare = median(rps.get(subjects[0]![0])!);
  const bareCpu = median(cpu.get(subjects[0]![0])!);
  const rows = subjects.map(([name]) => {
    const m = median(rps.get(name)!);
    const c = median(cpu.get(name)!);
    const runs = rps.get(name)!.map((x) => x.toFixed(0));
    return [
      name,
      m.toFixed(0),
      (m / bare).toFixed(3),
      c.toFixed(1),
      (bareCpu / c).toFixed(3),
      runs.join(" "),
    ];
  });
  console.log(
    `meshgate gateway, 1 worker${hasTaskset ? " on CPU 0" : ""}, wrk -t1 -c32, ${ROUNDS} rounds × ${SECONDS} s interleaved (node ${process.version})\n`,
  );
  console.log(
    table(
      ["route", "req/s median", "× bare", "gateway CPU µs/req", "× bare (by CPU)", "req/s runs"],
      rows,
      (i) => i >= 1 && i <= 4,
    ).join("\n"),
  );
  console.log(
    "\n× bare (by CPU) = the bare route's gateway CPU per request ÷ this route's: the throughput ratio a CPU-bound\n" +
      "gateway reaches, measured from /proc, so other processes' load on the machine barely moves it.",
  );
} finally {
  cleanup();
}
