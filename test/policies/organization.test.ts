/**
 * An organization's policy: the policy file (severities per code or guardrail, limits; strict parsing with
 * positions and did-you-mean) and rule modules in TypeScript (validated before they run; a rule that throws
 * or reports an undeclared code fails closed).
 */
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { GUARDRAILS } from "../../policies/guardrails/index.ts";
import { loadPolicyFile, parsePolicyText } from "../../policies/policy-file.ts";
import { loadRuleModules } from "../../policies/rules.ts";
import { runGuardrails } from "../../policies/run.ts";
import { inputOf, routeIndex, shopRaw, ROOT } from "./support.ts";

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "meshgate-org-"));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

const parseOk = (text: string) => {
  const r = parsePolicyText(text, "p.yaml", GUARDRAILS);
  if (!r.ok) throw new Error(JSON.stringify(r.errors));
  return r.policy;
};
const parseErrors = (text: string) => {
  const r = parsePolicyText(text, "p.yaml", GUARDRAILS);
  if (r.ok) throw new Error("expected errors");
  return r.errors;
};

describe("policy file", () => {
  it("reads_severities_guardrail_names_and_limits", () => {
    const p = parseOk(
      "rules:\n  E_POLICY_RETRY_AMPLIFICATION: warning\n  observability: off\nlimits:\n  maxRetryAmplification: 8\n  maxWorkloadTtl: 72h\n",
    );
    expect(p.rules).toEqual({ E_POLICY_RETRY_AMPLIFICATION: "warning", observability: "off" });
    expect(p.limits).toEqual({ maxRetryAmplification: 8, maxWorkloadTtlMs: 72 * 3_600_000 });
  });

  it("keeps_the_default_limits_for_an_empty_file", () => {
    expect(parseOk("").limits).toEqual({ maxRetryAmplification: 10, maxWorkloadTtlMs: 7 * 86_400_000 });
  });

  it.each([
    [
      "refuses_an_unknown_key_with_position_and_did_you_mean",
      "rules: {}\nlimit:\n  maxRetryAmplification: 8\n",
      { path: "limit", message: 'unknown key "limit" (did you mean "limits"?)', line: 2, column: 1 },
    ],
    [
      "refuses_an_unknown_limit",
      "limits:\n  maxRetryAmplifcation: 8\n",
      {
        path: "limits.maxRetryAmplifcation",
        message: 'unknown key "maxRetryAmplifcation" (did you mean "maxRetryAmplification"?)',
        line: 2,
        column: 3,
      },
    ],
    [
      "refuses_an_unknown_code_with_did_you_mean",
      "rules:\n  E_POLICY_RETRY_AMPLIFICATON: warning\n",
      {
        path: "rules.E_POLICY_RETRY_AMPLIFICATON",
        message: 'unknown rule "E_POLICY_RETRY_AMPLIFICATON" (did you mean "E_POLICY_RETRY_AMPLIFICATION"?)',
        line: 2,
        column: 3,
      },
    ],
    [
      "refuses_an_unknown_severity",
      "rules:\n  E_POLICY_CALL_CYCLE: fatal\n",
      {
        path: "rules.E_POLICY_CALL_CYCLE",
        message: 'severity "fatal" is not one of error, warning, info, off',
        line: 2,
        column: 3,
      },
    ],
    [
      "refuses_a_limit_below_one",
      "limits:\n  maxRetryAmplification: 0\n",
      { path: "limits.maxRetryAmplification", line: 2, column: 3 },
    ],
    [
      "refuses_a_ttl_that_is_not_a_duration",
      "limits:\n  maxWorkloadTtl: soon\n",
      {
        path: "limits.maxWorkloadTtl",
        message: 'not a duration (write e.g. "24h", "7d")',
        line: 2,
        column: 3,
      },
    ],
    ["refuses_yaml_that_does_not_parse", "rules: [unclosed\n", { path: "", line: 2 }],
    [
      "refuses_a_duplicate_key",
      "rules:\n  E_POLICY_CALL_CYCLE: off\n  E_POLICY_CALL_CYCLE: error\n",
      { path: "", line: 3 },
    ],
  ])("%s", (_claim, text, expected) => {
    const errors = parseErrors(text);
    expect(errors[0]).toMatchObject({ code: "E_POLICY_FILE_INVALID", file: "p.yaml", ...expected });
  });

  it("reports_a_missing_file_with_its_own_code", async () => {
    const r = await loadPolicyFile(join(dir, "nope.yaml"), GUARDRAILS);
    expect(r.ok).toBe(false);
    if (!r.ok)
      expect(r.errors[0]).toMatchObject({
        code: "E_POLICY_FILE_NOT_FOUND",
        message: expect.stringContaining("ENOENT"),
      });
  });
});

describe("severity overrides and limits", () => {
  const shop = inputOf(shopRaw());
  const check = (name: string, policyText: string) =>
    runGuardrails(shop, { policy: parseOk(policyText) }).find((c) => c.name === name)!;

  it("fails_retry_amplification_by_default", () => {
    const c = check("retry-amplification", "");
    expect(c.passed).toBe(false);
    expect(c.violations.map((v) => v.severity)).toEqual(["error", "error", "error"]);
  });

  it("passes_a_check_whose_codes_are_lowered_to_warning", () => {
    const c = check("retry-amplification", "rules: { E_POLICY_RETRY_AMPLIFICATION: warning }");
    expect(c.passed).toBe(true);
    expect(c.violations.map((v) => v.severity)).toEqual(["warning", "warning", "warning"]);
  });

  it("drops_violations_of_codes_turned_off", () => {
    expect(check("public-rate-limit", "rules: { E_POLICY_RATE_LIMIT_FAIL_OPEN: off }").violations).toEqual(
      [],
    );
  });

  it("applies_a_guardrail_name_to_all_its_codes_and_a_code_entry_wins_over_it", () => {
    const c = check("timeout-budget", "rules: { timeout-budget: info, E_POLICY_TIMEOUT_BUDGET: warning }");
    expect(c.passed).toBe(true);
    expect(
      new Set(c.violations.filter((v) => v.code === "E_POLICY_TIMEOUT_BUDGET").map((v) => v.severity)),
    ).toEqual(new Set(["warning"]));
    expect(
      new Set(c.violations.filter((v) => v.code !== "E_POLICY_TIMEOUT_BUDGET").map((v) => v.severity)),
    ).toEqual(new Set(["info"]));
  });

  it("promotes_an_info_to_an_error_that_fails", () => {
    const c = check("public-rate-limit", "rules: { E_POLICY_RATE_LIMIT_FAIL_OPEN: error }");
    expect(c.passed).toBe(false);
  });

  it("raises_the_amplification_limit", () => {
    const raw = shopRaw();
    expect(check("retry-amplification", "limits: { maxRetryAmplification: 16 }").violations).toEqual([]);
    expect(
      check("retry-amplification", "limits: { maxRetryAmplification: 15 }").violations.map((v) => v.path),
    ).toEqual([`gateway.routes[${routeIndex(raw, "get-order")}].retries`]);
  });

  it("lowers_the_workload_ttl_limit", () => {
    const c = check("certificates", "limits: { maxWorkloadTtl: 12h }");
    expect(c.violations.map((v) => v.code)).toEqual(["E_POLICY_CERT_TTL_TOO_LONG"]);
    expect(c.violations[0]!.message).toContain("24h, longer than the 12h allowed");
  });
});

const RULE = (body: string) => `export default ${body};\n`;
const OWNER_RULE = `{
  name: "owner-env",
  description: "every service names its team in env.OWNER",
  codes: { E_ACME_NO_OWNER: { severity: "error", text: "a service has no OWNER" } },
  check: ({ spec }) => Object.entries(spec.services)
    .filter(([, s]) => !s.env?.OWNER)
    .map(([name]) => ({ code: "E_ACME_NO_OWNER", path: "services." + name + ".env", message: name + " has no OWNER", fix: "set env.OWNER" })),
}`;

describe("rule modules", () => {
  const write = async (name: string, text: string) => {
    const file = join(dir, name);
    await writeFile(file, text);
    return file;
  };

  it("runs_an_organization_rule_with_the_builtins", async () => {
    const file = await write(
      "owner.ts",
      `import type { Guardrail } from "meshgate/policies";\n${RULE(`(${OWNER_RULE}) satisfies Guardrail`)}`,
    );
    const r = await loadRuleModules([file], GUARDRAILS);
    if (!r.ok) throw new Error(JSON.stringify(r.errors));
    const raw = shopRaw();
    raw.services.orders.env = { OWNER: "team-orders" };
    const checks = runGuardrails(inputOf(raw), { rules: r.guardrails });
    const owner = checks.at(-1)!;
    expect(checks).toHaveLength(GUARDRAILS.length + 1);
    expect(owner.name).toBe("owner-env");
    expect(owner.passed).toBe(false);
    expect(owner.violations.map((v) => v.path)).not.toContain("services.orders.env");
    expect(owner.violations).toContainEqual(
      expect.objectContaining({
        code: "E_ACME_NO_OWNER",
        severity: "error",
        guardrail: "owner-env",
        path: "services.payments.env",
      }),
    );
  });

  it("loads_the_example_rule_module_and_the_policy_file_can_promote_its_code", async () => {
    const r = await loadRuleModules([`${ROOT}examples/shop/policy/rules.ts`], GUARDRAILS);
    if (!r.ok) throw new Error(JSON.stringify(r.errors));
    const p = await loadPolicyFile(`${ROOT}examples/shop/policy/meshgate-policy.yaml`, [
      ...GUARDRAILS,
      ...r.guardrails,
    ]);
    if (!p.ok) throw new Error(JSON.stringify(p.errors));
    const c = runGuardrails(inputOf(shopRaw()), { rules: r.guardrails, policy: p.policy }).at(-1)!;
    expect(c.name).toBe("shop-health-checks");
    expect(c.violations.length).toBeGreaterThan(0);
    expect(new Set(c.violations.map((v) => v.severity))).toEqual(new Set(["error"]));
  });

  it("accepts_a_list_of_guardrails_as_the_default_export", async () => {
    const second = OWNER_RULE.replace('"owner-env"', '"owner-env-2"').replace(
      /E_ACME_NO_OWNER/g,
      "E_ACME_NO_OWNER_2",
    );
    const file = await write("list.mjs", RULE(`[${OWNER_RULE}, ${second}]`));
    const r = await loadRuleModules([file], GUARDRAILS);
    expect(r.ok && r.guardrails.map((g) => g.name)).toEqual(["owner-env", "owner-env-2"]);
  });

  it.each([
    [
      "refuses_a_module_that_does_not_import",
      "broken.mjs",
      "export default {",
      "E_POLICY_RULES_LOAD",
      "importing",
    ],
    [
      "refuses_a_module_without_a_guardrail",
      "empty.mjs",
      "export const x = 1;\n",
      "E_POLICY_RULES_INVALID",
      "exports no guardrail",
    ],
    [
      "refuses_a_guardrail_without_codes",
      "nocodes.mjs",
      RULE(`{ name: "x", description: "d", codes: {}, check: () => [] }`),
      "E_POLICY_RULES_INVALID",
      "declares no codes",
    ],
    [
      "refuses_a_lower_case_code",
      "lower.mjs",
      RULE(
        `{ name: "x", description: "d", codes: { e_x: { severity: "error", text: "t" } }, check: () => [] }`,
      ),
      "E_POLICY_RULES_INVALID",
      "not upper-case",
    ],
    [
      "refuses_a_name_that_is_not_kebab_case",
      "name.mjs",
      RULE(
        `{ name: "My Rule", description: "d", codes: { E_X_Y: { severity: "error", text: "t" } }, check: () => [] }`,
      ),
      "E_POLICY_RULES_INVALID",
      "kebab-case",
    ],
    [
      "refuses_a_built_in_name",
      "clash.mjs",
      RULE(
        `{ name: "strict-mtls", description: "d", codes: { E_X_Y: { severity: "error", text: "t" } }, check: () => [] }`,
      ),
      "E_POLICY_RULES_INVALID",
      "already a built-in guardrail",
    ],
    [
      "refuses_a_built_in_code",
      "code.mjs",
      RULE(
        `{ name: "mine", description: "d", codes: { E_POLICY_CALL_CYCLE: { severity: "error", text: "t" } }, check: () => [] }`,
      ),
      "E_POLICY_RULES_INVALID",
      "already declared by built-in guardrail",
    ],
    [
      "refuses_an_unknown_severity",
      "sev.mjs",
      RULE(
        `{ name: "mine", description: "d", codes: { E_X_Y: { severity: "fatal", text: "t" } }, check: () => [] }`,
      ),
      "E_POLICY_RULES_INVALID",
      "needs { severity",
    ],
  ])("%s", async (_claim, name, text, code, message) => {
    const r = await loadRuleModules([await write(name, text)], GUARDRAILS);
    expect(r.ok).toBe(false);
    if (!r.ok) expect(r.errors[0]).toMatchObject({ code, message: expect.stringContaining(message) });
  });

  it.each([
    [
      "fails_closed_when_a_rule_throws",
      `check: () => { throw new Error("boom"); }`,
      'guardrail "mine" threw: boom',
    ],
    [
      "fails_closed_when_a_rule_reports_an_undeclared_code",
      `check: () => [{ code: "E_OTHER_CODE", path: "", message: "m", fix: "f" }]`,
      "undeclared code",
    ],
    ["fails_closed_when_a_rule_returns_no_list", `check: () => 42`, "not an array"],
  ])("%s", async (_claim, check, message) => {
    const file = await write(
      `${_claim}.mjs`,
      RULE(`{ name: "mine", description: "d", codes: { E_X_Y: { severity: "info", text: "t" } }, ${check} }`),
    );
    const r = await loadRuleModules([file], GUARDRAILS);
    if (!r.ok) throw new Error(JSON.stringify(r.errors));
    const c = runGuardrails(inputOf(shopRaw()), { rules: r.guardrails }).at(-1)!;
    expect(c.passed).toBe(false);
    expect(c.violations[0]).toMatchObject({
      code: "E_POLICY_RULE_FAILED",
      severity: "error",
      message: expect.stringContaining(message),
    });
  });
});
