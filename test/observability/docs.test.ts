/**
 * docs/observability.md against the code: its generated tables (metrics, labels, spans, access log,
 * recording rules, alerts) equal what components/observability/docs.ts renders — UPDATE_GOLDEN=1 rewrites
 * them — and every alert kind the rules generate has a runbook section.
 */
import { readFileSync, writeFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { observabilityDocSections } from "../../components/observability/docs.ts";
import { ALERT_KINDS, prometheusRules } from "../../components/observability/index.ts";
import { shopInfra } from "./support.ts";

const DOC = new URL("../../docs/observability.md", import.meta.url).pathname;

function withSections(text: string): string {
  let out = text;
  for (const [name, body] of Object.entries(observabilityDocSections())) {
    const re = new RegExp(
      `(<!-- BEGIN GENERATED: ${name} -->\\n)[\\s\\S]*?(<!-- END GENERATED: ${name} -->)`,
    );
    if (!re.test(out)) throw new Error(`${DOC} has no generated section ${name}`);
    out = out.replace(re, (_m, begin: string, end: string) => `${begin}\n${body}\n\n${end}`);
  }
  return out;
}

describe("docs/observability.md", () => {
  it("holds_the_current_generated_tables", () => {
    const text = readFileSync(DOC, "utf8");
    const expected = withSections(text);
    if (process.env.UPDATE_GOLDEN === "1") writeFileSync(DOC, expected);
    else
      expect(
        text,
        "stale generated tables: run UPDATE_GOLDEN=1 npx vitest run test/observability/docs.test.ts",
      ).toBe(expected);
  });

  it("has_a_runbook_for_every_alert_kind_the_rules_generate", async () => {
    const text = readFileSync(DOC, "utf8");
    const generated = new Set(
      prometheusRules(await shopInfra()).groups.flatMap((g) =>
        g.rules.flatMap((r) => ("alert" in r ? [r.alert] : [])),
      ),
    );
    expect([...generated].sort()).toEqual(ALERT_KINDS.map((a) => a.alert).sort());
    for (const a of ALERT_KINDS) expect(text, a.alert).toContain(`\n### ${a.alert}\n`);
  });
});
