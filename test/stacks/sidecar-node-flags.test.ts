/**
 * The sidecar's Node/V8 flags (runtime/contract/node-flags.ts) reach every way a sidecar is started —
 * on Node's command line, never in NODE_OPTIONS (which refuses `--no-memory-reducer`: Node would exit
 * with status 9 before the sidecar runs) — and the runtime image's entrypoint the renderers extend is
 * the one runtime/Dockerfile declares.
 */
import { spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { planDocker } from "../../components/docker/plan.ts";
import { listStaticFiles } from "../../components/docker/platform.ts";
import { synthesize } from "../../components/kubernetes/index.ts";
import { RUNTIME_ENTRYPOINT, SIDECAR_ENTRYPOINT } from "../../components/kubernetes/model.ts";
import { loadSpecFile } from "../../components/spec/load.ts";
import { translate } from "../../components/translate/translate.ts";
import { SIDECAR_NODE_FLAGS } from "../../runtime/contract/index.ts";
import { planLocal } from "../../stacks/local/plan.ts";

type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

const ROOT = new URL("../../", import.meta.url).pathname;
const NODE = "/usr/bin/node";

async function shop() {
  const loaded = await loadSpecFile(join(ROOT, "examples/shop/mesh.yaml"));
  if (!loaded.ok) throw new Error("the shop example is invalid");
  return loaded.spec;
}

/** Per sidecar of the shop: the argv up to the `sidecar` subcommand, and its environment's names. */
type Started = { name: string; argv: readonly string[]; env: readonly string[] };

const STARTS: { how: string; sidecars: () => Promise<Started[]> }[] = [
  {
    how: "kubernetes (native sidecar container: command + args)",
    sidecars: async () =>
      synthesize(translate(await shop()))
        .filter((o: Json) => o.kind === "Deployment")
        .flatMap((o: Json) =>
          (o.spec.template.spec.initContainers ?? [])
            .filter((c: Json) => c.name === "meshgate-sidecar")
            .map((c: Json) => ({
              name: o.metadata.name,
              argv: [...(c.command ?? []), ...(c.args ?? [])],
              env: (c.env ?? []).map((e: Json) => e.name),
            })),
        ),
  },
  {
    how: "docker (entrypoint + command)",
    sidecars: async () => {
      const result = translate(await shop());
      const listed = listStaticFiles(result, ROOT);
      if (Array.isArray(listed)) throw new Error(listed.map((e) => e.reason).join("; "));
      const r = planDocker(result, { staticFiles: listed });
      if (!r.ok) throw new Error(r.errors.map((e) => `${e.field}: ${e.message}`).join("; "));
      return r.plan.containers
        .filter((c) => c.role === "sidecar")
        .map((c) => ({
          name: c.workload!,
          argv: [...(c.entrypoint ?? RUNTIME_ENTRYPOINT), ...c.command],
          env: Object.keys(c.env),
        }));
    },
  },
  {
    how: "local processes (meshgate up)",
    sidecars: async () => {
      const spec = await shop();
      const r = planLocal(spec, translate(spec), {
        cwd: "/work/app",
        specDir: join(ROOT, "examples/shop"),
        node: NODE,
        packageRoot: "/opt/meshgate",
        devApiKeyHashes: { "acme-retail": `sha256:${"a".repeat(64)}`, globex: `sha256:${"b".repeat(64)}` },
        prometheus: "/usr/bin/prometheus",
      });
      if (!r.ok) throw new Error(r.error.message);
      return r.plan.processes
        .filter((p) => p.role === "sidecar")
        .map((p) => ({ name: p.workload!, argv: p.argv, env: Object.keys(p.env) }));
    },
  },
];

describe("sidecar node flags", () => {
  it.each(STARTS)("starts_every_sidecar_with_the_flags_on_nodes_command_line: $how", async ({ sidecars }) => {
    const started = await sidecars();
    expect(started.length).toBeGreaterThanOrEqual(8);
    for (const s of started) {
      const sub = s.argv.indexOf("sidecar");
      expect(sub, s.name).toBeGreaterThan(1);
      const nodeArgs = s.argv.slice(1, sub - 1);
      expect(nodeArgs, `${s.name}: node's own arguments`).toEqual([...SIDECAR_NODE_FLAGS]);
      expect(s.argv[sub - 1], s.name).toMatch(/meshgate\.js$/);
      expect(s.env, `${s.name}: no NODE_OPTIONS`).not.toContain("NODE_OPTIONS");
    }
  });

  it("node_runs_with_the_flags_on_its_command_line", () => {
    const r = spawnSync(
      process.execPath,
      [...SIDECAR_NODE_FLAGS, "-e", "process.stdout.write(JSON.stringify(process.execArgv))"],
      { encoding: "utf8", env: { ...process.env, NODE_OPTIONS: "" } },
    );
    expect(r.stderr).toBe("");
    expect(r.status).toBe(0);
    expect(JSON.parse(r.stdout).slice(0, SIDECAR_NODE_FLAGS.length)).toEqual([...SIDECAR_NODE_FLAGS]);
  });

  it("the_renderers_extend_the_entrypoint_runtime_dockerfile_declares", () => {
    const dockerfile = readFileSync(join(ROOT, "runtime/Dockerfile"), "utf8");
    const line = dockerfile.split("\n").find((l) => l.startsWith("ENTRYPOINT "));
    expect(JSON.parse(line!.slice("ENTRYPOINT ".length))).toEqual([...RUNTIME_ENTRYPOINT]);
    expect(SIDECAR_ENTRYPOINT).toEqual([RUNTIME_ENTRYPOINT[0], ...SIDECAR_NODE_FLAGS, RUNTIME_ENTRYPOINT[1]]);
  });
});
