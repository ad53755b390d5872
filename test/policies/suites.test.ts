/**
 * Every guardrail beside its cases: each folder under policies/guardrails/ holds the guardrail (index.ts)
 * and a suite.yaml with at least one allowed and two disallowed fixture specs, and every case passes.
 */
import { existsSync, readdirSync, statSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { GUARDRAILS } from "../../policies/guardrails/index.ts";
import { caseKind, loadSuite, runCase, type Suite } from "../../policies/suite.ts";

const DIR = new URL("../../policies/guardrails/", import.meta.url).pathname;
const folders = readdirSync(DIR)
  .filter((f) => statSync(join(DIR, f)).isDirectory())
  .sort();
const suites = new Map<string, Suite>();
for (const f of folders)
  if (existsSync(join(DIR, f, "suite.yaml"))) suites.set(f, await loadSuite(join(DIR, f)));

const snake = (s: string) => s.replace(/[^a-z0-9]+/gi, "_").toLowerCase();

describe("guardrail folders", () => {
  it("every_registered_guardrail_has_its_folder_and_every_folder_is_registered", () => {
    expect(folders).toEqual(GUARDRAILS.map((g) => g.name).sort());
  });

  it.each(folders)("%s_has_a_guardrail_module_and_a_suite", (f) => {
    expect(existsSync(join(DIR, f, "index.ts")), `${f}/index.ts`).toBe(true);
    expect(existsSync(join(DIR, f, "suite.yaml")), `${f}/suite.yaml`).toBe(true);
    expect(suites.get(f)!.guardrail).toBe(f);
  });

  it.each(folders)("%s_has_at_least_one_allowed_and_two_disallowed_cases", (f) => {
    const cases = suites.get(f)?.cases ?? [];
    expect(cases.filter((c) => caseKind(c) === "allowed").length).toBeGreaterThanOrEqual(1);
    expect(cases.filter((c) => caseKind(c) === "disallowed").length).toBeGreaterThanOrEqual(2);
  });

  it.each(folders)("%s_suite_covers_every_code_of_the_guardrail", (f) => {
    const g = GUARDRAILS.find((x) => x.name === f)!;
    const asserted = new Set(suites.get(f)!.cases.flatMap((c) => c.assertions.map((a) => a.code)));
    // Codes only a hand-edited RuntimeConfig can trigger are covered by test/policies/integrity.test.ts.
    const irOnly = new Set([
      "E_POLICY_CLUSTER_PLAINTEXT",
      "E_POLICY_ROUTE_UNAUTHENTICATED",
      "E_POLICY_DANGLING_REFERENCE",
      "E_POLICY_METRICS_TARGET_MISSING",
    ]);
    for (const code of Object.keys(g.codes))
      if (!irOnly.has(code)) expect(asserted, `${f} never asserts ${code}`).toContain(code);
  });
});

const cases = [...suites].flatMap(([f, s]) => s.cases.map((c) => ({ f, c })));

describe("guardrail suites", () => {
  it.each(
    cases.map(
      ({ f, c }) =>
        [`${snake(f)}_${caseKind(c) === "allowed" ? "accepts" : "flags"}_${snake(c.name)}`, f, c] as const,
    ),
  )("%s", async (_claim, f, c) => {
    const g = GUARDRAILS.find((x) => x.name === f)!;
    const result = await runCase(join(DIR, f), c, g);
    expect(result.failures).toEqual([]);
    expect(result.ok).toBe(true);
  });
});
