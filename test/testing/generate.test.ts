import { describe, expect, it } from "vitest";
import { parseSpec } from "../../components/spec/parse.ts";
import { translate } from "../../components/translate/translate.ts";
import { generateSpec } from "../../testing/index.ts";

const SIZE = { services: 50, routes: 200 };

describe("generateSpec", () => {
  it("generates_a_valid_spec", () => {
    const result = parseSpec(generateSpec(SIZE));
    expect(result.errors).toEqual([]);
    expect(result.ok).toBe(true);
  });

  it("is_deterministic_for_a_seed", () => {
    expect(generateSpec({ ...SIZE, seed: 7 })).toEqual(generateSpec({ ...SIZE, seed: 7 }));
    expect(generateSpec(SIZE)).toEqual(generateSpec({ ...SIZE, seed: 1 }));
    expect(generateSpec({ ...SIZE, seed: 8 })).not.toEqual(generateSpec({ ...SIZE, seed: 7 }));
  });

  it("generated_spec_translates_without_call_warnings", () => {
    const result = parseSpec(generateSpec(SIZE));
    if (!result.ok) throw new Error(`invalid spec: ${JSON.stringify(result.errors.slice(0, 3))}`);
    const codes = translate(result.spec).diagnostics.map((d) => d.code);
    expect(codes).not.toContain("W_SPEC_CALL_NOT_ALLOWED");
  });

  it("honours_the_requested_sizes", () => {
    for (const size of [SIZE, { services: 1, routes: 0 }, { services: 3, routes: 7 }]) {
      const spec = generateSpec(size);
      expect(Object.keys(spec.services)).toHaveLength(size.services);
      expect(spec.gateway?.routes).toHaveLength(size.routes);
      const parsed = parseSpec(spec);
      expect(parsed.errors).toEqual([]);
    }
  });
});
