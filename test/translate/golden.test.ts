/**
 * Golden files at the spec → IR boundary: every testdata/*.in.yaml is translated and compared with its
 * *.out.yaml (infra, runtime configs, diagnostics). UPDATE_GOLDEN=1 regenerates; review the diff.
 */
import { readdirSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { stringify } from "yaml";
import { loadSpecFile } from "../../components/spec/load.ts";
import { translate } from "../../components/translate/translate.ts";
import { expectGolden } from "../support/golden.ts";

const dir = join(import.meta.dirname, "testdata");
/** name → input; the example specs are pinned too, so a change to them shows up as an IR diff. */
const cases: [string, string][] = [
  ...readdirSync(dir)
    .filter((f) => f.endsWith(".in.yaml"))
    .map((f): [string, string] => [f.slice(0, -".in.yaml".length), join(dir, f)]),
  ["example-shop", join(import.meta.dirname, "../../examples/shop/mesh.yaml")],
];

describe("translate golden files", () => {
  it("has_cases", () => {
    expect(cases.length).toBeGreaterThanOrEqual(7);
  });

  it.each(cases)("translates_%s_as_recorded", async (name, input) => {
    const loaded = await loadSpecFile(input);
    if (!loaded.ok) throw new Error(loaded.errors.map((e) => `${e.path}: ${e.message}`).join("\n"));
    const out = stringify(translate(loaded.spec), { aliasDuplicateObjects: false, lineWidth: 0 });
    expectGolden(join(dir, `${name}.out.yaml`), out);
  });
});
