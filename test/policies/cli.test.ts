/** `meshgate verify | graph | diff` as users run them: real processes, real files, a real git repository. */
import { execFile } from "node:child_process";
import { copyFile, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { stringify } from "yaml";
import { expectGolden } from "../support/golden.ts";
import { ROOT, shopRaw } from "./support.ts";

/** The shop before its retry/timeout fixes, relative to the repo (what the CLI prints). */
const SHOP_REL = "test/policies/testdata/shop-unsafe.yaml";

const run = promisify(execFile);
const BIN = join(ROOT, "bin/meshgate.js");
const GOLDEN = join(ROOT, "test/policies/testdata");

interface Result {
  code: number;
  stdout: string;
  stderr: string;
}

async function meshgate(args: string[], cwd = ROOT): Promise<Result> {
  try {
    const { stdout, stderr } = await run(process.execPath, [BIN, ...args], {
      cwd,
      maxBuffer: 64 * 1024 * 1024,
    });
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code: number; stdout: string; stderr: string };
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}

let dir: string;
let payments: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "meshgate-policy-cli-"));
  const raw = shopRaw();
  raw.services.payments.allow.push({ from: ["users"], methods: ["POST"], paths: ["/payments"] });
  raw.services.users.calls = ["payments"];
  payments = join(dir, "payments-opened.yaml");
  await writeFile(payments, stringify(raw));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe("meshgate verify", () => {
  it("exits_0_when_every_guardrail_passes", async () => {
    const r = await meshgate(["verify", "policies/guardrails/mini.yaml"]);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain("14 passed, 0 failed (0 errors, 0 warnings, 0 info)");
  });

  it("exits_1_and_prints_every_violation_with_position_and_fix_for_the_shop", async () => {
    const r = await meshgate(["verify", SHOP_REL]);
    expect(r.code).toBe(1);
    expect(r.stdout).toMatch(
      /^test\/policies\/testdata\/shop-unsafe\.yaml:281:7: error: gateway\.routes\[5\]\.retries: one request on route "get-order" may cause 16 attempts at "payments"/m,
    );
    expectGolden(join(GOLDEN, "shop.verify.txt"), r.stdout);
  });

  it("prints_json_with_every_check", async () => {
    const r = await meshgate(["verify", SHOP_REL, "--format", "json"]);
    expect(r.code).toBe(1);
    const report = JSON.parse(r.stdout);
    expect(report).toMatchObject({ file: SHOP_REL, ok: false, passed: 11, failed: 3 });
    expect(report.checks).toHaveLength(14);
    expect(report.checks[8].violations[0]).toMatchObject({
      code: "E_POLICY_RETRY_AMPLIFICATION",
      severity: "error",
      line: 254,
      column: 7,
    });
  });

  it("applies_a_policy_file_and_rule_modules", async () => {
    const r = await meshgate([
      "verify",
      SHOP_REL,
      "--policy",
      "examples/shop/policy/meshgate-policy.yaml",
      "--rules",
      "examples/shop/policy/rules.ts",
    ]);
    expect(r.code).toBe(1);
    expect(r.stdout).toContain("✗ shop-health-checks (5 errors)");
    expect(r.stdout).not.toContain("E_POLICY_RATE_LIMIT_FAIL_OPEN");
    expect(r.stdout).toContain("11 passed, 4 failed");
  });

  it("exits_1_for_an_invalid_spec_with_its_errors", async () => {
    const file = join(dir, "broken.yaml");
    await writeFile(
      file,
      "name: x\ntrustDomain: x.example\nservices: { a: { image: r/a:1, port: 80, timout: 2s } }\n",
    );
    const r = await meshgate(["verify", file]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain("[E_SPEC_UNKNOWN_KEY]");
    expect(r.stderr).toContain("guardrails run on valid specs");
  });

  it.each([
    ["exits_2_for_an_invalid_policy_file", ["--policy", "POLICY"], "rules.E_POLICY_NOPE: unknown rule"],
    [
      "exits_2_for_a_missing_policy_file",
      ["--policy", "/nonexistent/policy.yaml"],
      "[E_POLICY_FILE_NOT_FOUND]",
    ],
    ["exits_2_for_a_missing_rule_module", ["--rules", "/nonexistent/rules.ts"], "[E_POLICY_RULES_LOAD]"],
    ["exits_2_for_an_unknown_format", ["--format", "xml"], "--format must be one of text, json"],
    ["exits_2_for_an_unknown_option", ["--strict"], "Unknown option '--strict'"],
  ])("%s", async (_claim, extra, message) => {
    const policy = join(dir, "bad-policy.yaml");
    await writeFile(policy, "rules:\n  E_POLICY_NOPE: off\n");
    const r = await meshgate([
      "verify",
      "policies/guardrails/mini.yaml",
      ...extra.map((a) => (a === "POLICY" ? policy : a)),
    ]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain(message);
  });
});

describe("meshgate graph", () => {
  it.each([
    ["mermaid", "shop.graph.mmd"],
    ["dot", "shop.graph.dot"],
  ])("draws_the_shop_as_%s_deterministically", async (format, golden) => {
    const [a, b] = [
      await meshgate(["graph", "examples/shop/mesh.yaml", "--format", format]),
      await meshgate(["graph", "examples/shop/mesh.yaml", "--format", format]),
    ];
    expect(a.code).toBe(0);
    expect(a.stdout).toBe(b.stdout);
    expectGolden(join(GOLDEN, golden), a.stdout);
  });
});

describe("meshgate diff", () => {
  const label = (s: string) => s.replaceAll(payments, "HEAD.yaml");

  it("reports_payments_opened_to_users_as_markdown", async () => {
    const r = await meshgate(["diff", "examples/shop/mesh.yaml", payments]);
    expect(r.code).toBe(0);
    expectGolden(join(GOLDEN, "shop-payments.diff.md"), label(r.stdout));
  });

  it("exits_1_with_fail_on_widen_when_access_widened", async () => {
    const r = await meshgate([
      "diff",
      "examples/shop/mesh.yaml",
      payments,
      "--fail-on",
      "widen",
      "--format",
      "json",
    ]);
    expect(r.code).toBe(1);
    expect(JSON.parse(r.stdout).widened).toEqual([
      expect.objectContaining({ from: "users", to: ["payments"] }),
    ]);
  });

  it("exits_1_with_fail_on_widen_when_an_external_destination_moves_to_another_host", async () => {
    const raw = shopRaw();
    raw.external["card-processor"].host = "api.evil.example";
    const moved = join(dir, "card-processor-moved.yaml");
    await writeFile(moved, stringify(raw));
    const r = await meshgate(["diff", SHOP_REL, moved, "--fail-on", "widen", "--format", "json"]);
    expect(r.code).toBe(1);
    const d = JSON.parse(r.stdout);
    expect(d.widened).toEqual([
      expect.objectContaining({
        from: "payments",
        to: ["card-processor"],
        grants: "TCP api.evil.example:443",
        egress: true,
      }),
    ]);
    expect(d.externals.changed).toEqual([
      { name: "card-processor", before: "api.stripe.com:443", after: "api.evil.example:443" },
    ]);
  });

  it("exits_0_with_fail_on_widen_when_access_only_narrowed", async () => {
    const r = await meshgate([
      "diff",
      payments,
      "examples/shop/mesh.yaml",
      "--fail-on",
      "widen",
      "--format",
      "json",
    ]);
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout).narrowed).toEqual([
      expect.objectContaining({ from: "users", to: ["payments"] }),
    ]);
  });

  it("reads_the_base_from_a_git_revision", async () => {
    const repo = join(dir, "repo");
    const git = (...args: string[]) =>
      run("git", ["-c", "user.email=t@example.invalid", "-c", "user.name=t", ...args], { cwd: repo });
    await run("git", ["init", "-q", repo]);
    await copyFile(join(ROOT, "examples/shop/mesh.yaml"), join(repo, "mesh.yaml"));
    await git("add", "mesh.yaml");
    await git("commit", "-qm", "shop");
    await copyFile(payments, join(repo, "mesh.yaml"));
    const r = await meshgate(["diff", "HEAD:mesh.yaml", "mesh.yaml", "--format", "json"], repo);
    expect(r.code).toBe(0);
    const d = JSON.parse(r.stdout);
    expect(d.base).toBe("HEAD:mesh.yaml");
    expect(d.widened).toEqual([
      expect.objectContaining({ from: "users", to: ["payments"], grants: "POST /payments" }),
    ]);
    expect(await readFile(join(repo, "mesh.yaml"), "utf8")).toContain("users");
  });

  it("exits_1_naming_the_side_and_the_field_when_one_spec_is_invalid", async () => {
    const raw = shopRaw();
    raw.services.payments.allow[0].methds = ["POST"];
    const broken = join(dir, "broken-head.yaml");
    await writeFile(broken, stringify(raw));
    const r = await meshgate(["diff", SHOP_REL, broken]);
    expect(r.code).toBe(1);
    expect(r.stdout).toBe("");
    expect(r.stderr).toContain("services.payments.allow[0].methds");
    expect(r.stderr).toContain(`✗ ${broken}: 1 error`);
    expect(r.stderr).not.toContain(`✗ ${SHOP_REL}`);
  });

  it.each([
    [
      "exits_2_for_a_revision_git_does_not_know",
      ["nope:examples/shop/mesh.yaml", "examples/shop/mesh.yaml"],
      "cannot read nope:examples/shop/mesh.yaml from git",
    ],
    ["exits_2_without_head", ["examples/shop/mesh.yaml"], "give BASE and HEAD"],
    [
      "exits_2_for_an_unknown_fail_on",
      ["examples/shop/mesh.yaml", "examples/shop/mesh.yaml", "--fail-on", "narrow"],
      "--fail-on must be one of widen",
    ],
  ])("%s", async (_claim, args, message) => {
    const r = await meshgate(["diff", ...args]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain(message);
  });
});
