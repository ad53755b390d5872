/**
 * examples/migration: a route moving off a legacy system outside the mesh (split with an external entry),
 * an aggregate part from it, and what it is told about the client — checked with the proxies' own
 * decision code, as `meshgate verify` and `meshgate diff` run it.
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { parse } from "yaml";
import { parseSpec } from "../../components/spec/parse.ts";
import { translate } from "../../components/translate/translate.ts";
import { parseAssertionText, runAssertions } from "../../policies/assertion-file.ts";
import { explainRequest, formatDecision } from "../../policies/assertions.ts";
import { semanticDiff } from "../../policies/diff.ts";
import { runGuardrails } from "../../policies/run.ts";
import { inputOf, ROOT } from "./support.ts";

const DIR = join(ROOT, "examples/migration");
type Raw = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any
const raw = () => parse(readFileSync(join(DIR, "mesh.yaml"), "utf8")) as Raw;

describe("the migration example", () => {
  it("is_valid_without_warnings_and_passes_every_guardrail", () => {
    const parsed = parseSpec(raw());
    expect(parsed.ok).toBe(true);
    if (!parsed.ok) return;
    expect(translate(parsed.spec).diagnostics).toEqual([]);
    expect(runGuardrails(inputOf(raw())).flatMap((c) => c.violations)).toEqual([]);
  });

  it("passes_its_assertions_and_a_wrong_one_fails", () => {
    const text = readFileSync(join(DIR, "assertions.yaml"), "utf8");
    const wrong = [
      "  - name: the overview never reaches the legacy system",
      "    from: internet",
      "    path: /api/overview/7",
      "    scopes: [accounts:read]",
      "    expect: allow",
      "    to: billing",
    ].join("\n");
    const parsed = parseAssertionText(`${text}\n${wrong}\n`, "assertions.yaml");
    if (!parsed.ok) throw new Error(JSON.stringify(parsed.errors));
    const results = runAssertions(inputOf(raw()), parsed.set.assertions, parsed.set);
    expect(results.map((r) => r.passed)).toEqual([true, true, true, true, true, false]);
  });

  it("tells_the_legacy_system_who_the_caller_is_but_not_where_from", () => {
    const d = explainRequest(inputOf(raw()), {
      from: "internet",
      path: "/api/accounts/7",
      scopes: ["accounts:read"],
    });
    expect(d).toMatchObject({ verdict: "allow", route: "get-account" });
    const text = formatDecision(d);
    expect(text).toContain(
      "backend legacy-accounts (weight 90): external.legacy-accounts.allow[0] admits the gateway; it forwards to accounts.legacy.bank.example:443 over TLS verified for accounts.legacy.bank.example, with the client's identity (shared), not its address",
    );
    expect(text).toContain("backend accounts (weight 10): admits spiffe://bank.example/ns/bank/sa/gateway");
    const cluster = translate(
      (parseSpec(raw()) as { spec: Parameters<typeof translate>[0] }).spec,
    ).runtime.gateway!.clusters.find((c) => c.name === "legacy-accounts");
    expect(cluster).toMatchObject({
      authority: "accounts.legacy.bank.example",
      share: { identity: true, clientAddress: false },
    });
  });

  it("shows_the_next_step_of_the_migration_as_a_change_of_backends_in_meshgate_diff", () => {
    const next = raw();
    next.gateway.routes[0].split = [
      { external: "legacy-accounts", weight: 50 },
      { service: "accounts", weight: 50 },
    ];
    const d = semanticDiff(inputOf(raw()), inputOf(next));
    expect(d.settings).toEqual([
      {
        scope: "route",
        name: "get-account",
        field: "backends",
        before: "accounts 10%, legacy-accounts (external) 90%",
        after: "accounts 50%, legacy-accounts (external) 50%",
      },
    ]);
    expect([d.widened, d.narrowed]).toEqual([[], []]);
  });
});
