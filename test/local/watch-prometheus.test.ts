/**
 * `meshgate up SPEC --watch` with the real Prometheus: a saved spec that changes its rules (a new SLO) or
 * its scrape targets (a new service) reloads it in place with SIGHUP — same process, the new rule group
 * and target loaded — instead of restarting it.
 */
import type { ChildProcess } from "node:child_process";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { freeBlock } from "../support/ports.ts";
import { killProcessesMentioning, spawnUp } from "../support/procs.ts";
import { saveTiny, TINY, type RawSpec } from "../support/tiny-mesh.ts";

let dir: string;
let child: ChildProcess;
let output: () => string = () => "";
let prometheus: string;

const specFile = () => join(dir, "mesh.yaml");
const prometheusPid = async () =>
  (
    JSON.parse(await readFile(join(dir, "state", "state.json"), "utf8")) as {
      processes: { name: string; pid: number }[];
    }
  ).processes.find((p) => p.name === "prometheus")!.pid;
const api = async <T>(path: string): Promise<T> =>
  ((await (await fetch(`${prometheus}${path}`, { signal: AbortSignal.timeout(5000) })).json()) as { data: T })
    .data;

const save = (edit: (raw: RawSpec) => void) => saveTiny(specFile(), output, edit);

const SLO = { slos: [{ name: "api-up", service: "api", availability: 99.5 }] };

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "meshgate-watch-prom-"));
  const base = await freeBlock(40);
  await writeFile(specFile(), TINY);
  const args = [specFile(), "--watch"].concat(
    ["--port", String(base), "--admin-port", String(base + 1)],
    ["--port-base", String(base + 10), "--state-dir", join(dir, "state")],
  );
  const up = await spawnUp(args, dir, 90_000);
  child = up.child;
  output = up.output;
  prometheus = /^prometheus (http:\/\/\S+)$/m.exec(output())![1]!;
}, 120_000);

afterAll(async () => {
  if (child && child.exitCode === null) child.kill("SIGINT");
  await new Promise((r) => setTimeout(r, 500));
  if (child && child.exitCode === null) child.kill("SIGKILL");
  if (dir) killProcessesMentioning(dir);
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe("meshgate up --watch with Prometheus", () => {
  it("a_new_slo_reloads_prometheus_by_sighup_and_its_rules_are_loaded_in_the_same_process", async () => {
    const pid = await prometheusPid();
    const before = await api<{ groups: { name: string }[] }>("/api/v1/rules");
    expect(before.groups.some((g) => /api-up/.test(JSON.stringify(g)))).toBe(false);
    const out = await save((raw) => (raw.observability = SLO));
    expect(out).toMatch(/\[watch\] ✓ applied: reloaded prometheus\n/);
    expect(await prometheusPid()).toBe(pid);
    const after = await api<{ groups: { name: string; rules: { name: string }[] }[] }>("/api/v1/rules");
    expect(JSON.stringify(after.groups)).toContain("api-up");
  }, 60_000);

  it("a_new_service_reloads_prometheus_which_then_scrapes_its_sidecar", async () => {
    const pid = await prometheusPid();
    const out = await save((raw) => {
      raw.observability = SLO;
      raw.services.zeta = {
        image: "example/zeta:1",
        port: 8080,
        allow: [{ from: ["web"], methods: ["GET"], paths: ["/zeta"] }],
      };
    });
    expect(out).toMatch(/\[watch\] ✓ applied: reloaded prometheus; started zeta-sidecar, zeta\n/);
    expect(await prometheusPid()).toBe(pid);
    // Prometheus applies new targets after its discovery throttle (~5 s): poll.
    const scraped = async () =>
      JSON.stringify(
        (await api<{ activeTargets: { labels: Record<string, string> }[] }>("/api/v1/targets")).activeTargets,
      );
    const deadline = Date.now() + 20_000;
    while (!(await scraped()).includes("zeta") && Date.now() < deadline)
      await new Promise((r) => setTimeout(r, 250));
    expect(await scraped()).toContain("zeta");
  }, 60_000);
});
