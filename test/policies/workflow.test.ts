/**
 * The pull-request preview workflow (.github/workflows/meshgate-preview.yml). GitHub Actions cannot run
 * here, so: the file is valid YAML with the expected trigger, permissions and steps; its diff step's shell
 * script runs for real against a real git repository with a base branch; and its comment script runs
 * against a stand-in for GitHub's REST client, creating the comment once and updating it after.
 */
import { execFile } from "node:child_process";
import * as fs from "node:fs";
import { copyFile, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parse, stringify } from "yaml";
import { ROOT, shopRaw } from "./support.ts";

const run = promisify(execFile);
type Loose = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any
const workflow = parse(await readFile(join(ROOT, ".github/workflows/meshgate-preview.yml"), "utf8")) as Loose;
const steps = workflow.jobs.preview.steps as Loose[];
const step = (name: RegExp) => {
  const s = steps.find((x) => name.test(x.name));
  if (!s) throw new Error(`no step matching ${name}`);
  return s;
};

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "meshgate-workflow-"));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe("meshgate-preview workflow", () => {
  it("runs_on_pull_requests_with_permission_to_comment", () => {
    expect(Object.keys(workflow.on)).toEqual(["pull_request"]);
    expect(workflow.permissions).toEqual({ contents: "read", "pull-requests": "write" });
  });

  it("has_the_expected_steps_in_order", () => {
    expect(steps.map((s) => s.uses ?? s.run?.split("\n")[0])).toEqual([
      "actions/checkout@v4",
      "actions/setup-node@v4",
      "npm ci",
      'git fetch --no-tags --quiet origin "$BASE_REF"',
      "pulumi/actions@v6",
      "set -o pipefail",
      "actions/github-script@v7",
      'echo "pulumi preview failed (a mandatory policy of the meshgate pack, or the preview itself): see the comment" >&2',
    ]);
    expect(step(/^Check out/).with["fetch-depth"]).toBe(0);
    expect(step(/^Set up Node/).with["node-version"]).toBe(24);
  });

  it("previews_with_the_policy_pack_and_diffs_against_the_base_branch", () => {
    expect(step(/^pulumi preview/).run).toContain(
      "pulumi preview --diff --policy-pack policies/pack --stack",
    );
    expect(step(/^pulumi preview/)["continue-on-error"]).toBe(true);
    expect(step(/^meshgate diff/).run).toContain(
      '$MESHGATE diff "origin/$BASE_REF:$MESHGATE_SPEC" "$MESHGATE_SPEC" --format markdown',
    );
    expect(step(/^meshgate diff/).env.BASE_REF).toBe("${{ github.base_ref }}");
    expect(step(/^Fail when/).if).toBe("steps.preview.outcome == 'failure'");
  });

  it("skips_the_pulumi_steps_without_a_token_as_in_forks", () => {
    expect(workflow.jobs.preview.env.PULUMI_ACCESS_TOKEN).toBe("${{ secrets.PULUMI_ACCESS_TOKEN }}");
    expect(step(/^Install the Pulumi CLI/).if).toBe("env.PULUMI_ACCESS_TOKEN != ''");
    expect(step(/^pulumi preview/).if).toBe("env.PULUMI_ACCESS_TOKEN != ''");
  });

  it("diff_step_writes_the_markdown_against_a_real_base_branch", async () => {
    const origin = join(dir, "origin");
    const work = join(dir, "work");
    const git = (cwd: string, ...args: string[]) =>
      run("git", ["-c", "user.email=t@example.invalid", "-c", "user.name=t", ...args], { cwd });
    await run("git", ["init", "-q", "-b", "main", origin]);
    await copyFile(join(ROOT, "examples/shop/mesh.yaml"), join(origin, "mesh.yaml"));
    await git(origin, "add", "mesh.yaml");
    await git(origin, "commit", "-qm", "shop");
    await run("git", ["clone", "-q", origin, work]);
    const raw = shopRaw();
    raw.services.payments.allow.push({ from: ["users"], methods: ["POST"], paths: ["/payments"] });
    await writeFile(join(work, "mesh.yaml"), stringify(raw));
    const env = {
      ...process.env,
      BASE_REF: "main",
      MESHGATE_SPEC: "mesh.yaml",
      MESHGATE: `${process.execPath} ${join(ROOT, "bin/meshgate.js")}`,
    };
    await run("bash", ["-e", "-c", step(/^meshgate diff/).run], { cwd: work, env });
    const md = await readFile(join(work, "meshgate-diff.md"), "utf8");
    expect(md).toContain("### meshgate diff: `origin/main:mesh.yaml` → `mesh.yaml`");
    expect(md).toContain(
      "| `users` | `payments` | POST /payments | mesh | new edge (services.payments.allow[2]) |",
    );

    await run("bash", ["-e", "-c", step(/^meshgate diff/).run], {
      cwd: work,
      env: { ...env, MESHGATE_SPEC: "new.yaml" },
    });
    expect(await readFile(join(work, "meshgate-diff.md"), "utf8")).toContain(
      "new.yaml is new on this branch",
    );
  });

  it("comment_script_creates_one_comment_then_updates_it", async () => {
    const comments: { id: number; body: string }[] = [{ id: 1, body: "an unrelated comment" }];
    const calls: string[] = [];
    const github = {
      paginate: async (fn: (a: Loose) => Promise<{ data: unknown[] }>, args: Loose) => (await fn(args)).data,
      rest: {
        issues: {
          listComments: async (a: Loose) => (
            calls.push(`list #${a.issue_number}`),
            { data: structuredClone(comments) }
          ),
          createComment: async (a: Loose) => (
            calls.push("create"),
            comments.push({ id: comments.length + 1, body: a.body })
          ),
          updateComment: async (a: Loose) => (
            calls.push(`update ${a.comment_id}`),
            (comments.find((c) => c.id === a.comment_id)!.body = a.body)
          ),
        },
      },
    };
    const context = { repo: { owner: "acme", repo: "shop" }, issue: { number: 7 } };
    const s = step(/^Post or update/);
    const script = new Function(
      "github",
      "context",
      "require",
      `return (async () => {\n${s.with.script}\n})();`,
    );
    const requireFs = (m: string) => (m === "fs" ? fs : undefined);
    const diffFile = join(dir, "meshgate-diff.md");
    const saved = { ...process.env };
    Object.assign(process.env, {
      DIFF_FILE: diffFile,
      PREVIEW_FILE: join(dir, "none.txt"),
      PREVIEW_OUTCOME: "",
    });
    try {
      await writeFile(diffFile, "<!-- meshgate-diff -->\nfirst");
      await script(github, context, requireFs);
      await writeFile(diffFile, "<!-- meshgate-diff -->\nsecond");
      await script(github, context, requireFs);
    } finally {
      process.env = saved;
    }
    expect(calls).toEqual(["list #7", "create", "list #7", "update 2"]);
    expect(comments).toHaveLength(2);
    expect(comments[1]!.body).toMatch(/^<!-- meshgate-preview -->\n<!-- meshgate-diff -->\nsecond\n/);
    expect(comments[1]!.body).toContain("pulumi preview did not run (no PULUMI_ACCESS_TOKEN secret)");
  });
});
