/**
 * Loading specs from real files: YAML, JSON and TypeScript modules, the loading error codes, and the
 * line:column every error carries when the spec came from text.
 */
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parse as parseYaml } from "yaml";
import type { SpecError } from "../../components/spec/errors.ts";
import { fastLoad, loadSpecFile, loadSpecText, loadWithPositions } from "../../components/spec/load.ts";
import { generateSpecYaml } from "../../testing/index.ts";

/** The fast reader exactly as load.ts configures it. */
const fastRead = fastLoad;

const SHOP_YAML = fileURLToPath(new URL("../../examples/shop/mesh.yaml", import.meta.url));
const DEFINE_TS = fileURLToPath(new URL("../../components/spec/define.ts", import.meta.url));

let dir: string;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "meshgate-load-"));
});

afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** Writes a file into the temporary directory and returns its path. */
async function write(name: string, text: string): Promise<string> {
  const file = join(dir, name);
  await writeFile(file, text, "utf8");
  return file;
}

/** The only error of a failed load (loading errors are always alone). */
function onlyError(result: { ok: boolean; errors: readonly SpecError[] }): SpecError {
  expect(result.ok).toBe(false);
  expect(result.errors).toHaveLength(1);
  return result.errors[0]!;
}

const TINY_MODULE = (importPath: string) => `import { defineMesh } from ${JSON.stringify(importPath)};

export default defineMesh({
  name: "tiny",
  trustDomain: "tiny.example",
  services: {
    web: { image: "ghcr.io/acme/web:1.0.0", port: 8080 },
    api: { image: "ghcr.io/acme/api:2.1.0", port: 8080, allow: [{ from: ["web"] }] },
  },
});
`;

describe("loading files", () => {
  it("loads_the_shop_example_yaml", async () => {
    const result = await loadSpecFile(SHOP_YAML);
    expect(result.errors).toEqual([]);
    expect(result.ok).toBe(true);
    if (!result.ok) return;
    expect(Object.keys(result.spec.services)).toHaveLength(9);
    expect(result.file).toBe(SHOP_YAML);
  });

  it("loads_json_specs_too", async () => {
    const raw: unknown = parseYaml(await readFile(SHOP_YAML, "utf8"));
    const file = await write("shop.json", JSON.stringify(raw, null, 2));
    const result = await loadSpecFile(file);
    expect(result.errors).toEqual([]);
    expect(result.ok).toBe(true);
    if (!result.ok) return;
    expect(Object.keys(result.spec.services)).toHaveLength(9);
  });

  it("loads_a_typescript_module_exporting_defineMesh", async () => {
    const file = await write("tiny.ts", TINY_MODULE(DEFINE_TS));
    const result = await loadSpecFile(file);
    expect(result.errors).toEqual([]);
    expect(result.ok).toBe(true);
    if (!result.ok) return;
    expect(result.spec.name).toBe("tiny");
    expect(Object.keys(result.spec.services).sort()).toEqual(["api", "web"]);
  });

  it("validates_a_typescript_module_like_yaml", async () => {
    const file = await write(
      "tiny-invalid.ts",
      TINY_MODULE(DEFINE_TS).replace('allow: [{ from: ["web"] }]', 'allow: [{ from: ["wbe"] }]'),
    );
    const result = await loadSpecFile(file);
    expect(result.ok).toBe(false);
    expect(result.errors).toContainEqual(
      expect.objectContaining({ code: "E_SPEC_UNKNOWN_REFERENCE", path: "services.api.allow[0].from[0]" }),
    );
  });

  it("rejects_a_module_without_defineMesh_default_export", async () => {
    const plain = await write(
      "plain.ts",
      'export default { name: "tiny", trustDomain: "tiny.example", services: {} };\n',
    );
    expect(onlyError(await loadSpecFile(plain)).code).toBe("E_SPEC_MODULE_EXPORT");
    const noDefault = await write("no-default.mjs", 'export const name = "tiny";\n');
    const error = onlyError(await loadSpecFile(noDefault));
    expect(error.code).toBe("E_SPEC_MODULE_EXPORT");
    expect(error.hint).toContain("defineMesh");
  });

  it("reports_a_module_that_throws", async () => {
    const file = await write(
      "throws.ts",
      'const fail = (): never => {\n  throw new Error("no spec today");\n};\nexport default fail();\n',
    );
    const error = onlyError(await loadSpecFile(file));
    expect(error.code).toBe("E_SPEC_MODULE_LOAD");
    expect(error.message).toContain("no spec today");
  });

  it("reports_missing_file", async () => {
    const error = onlyError(await loadSpecFile(join(dir, "missing.yaml")));
    expect(error.code).toBe("E_SPEC_FILE_NOT_FOUND");
    expect(error.message).toContain("ENOENT");
  });

  it("reports_missing_module_file", async () => {
    expect(onlyError(await loadSpecFile(join(dir, "missing.ts"))).code).toBe("E_SPEC_FILE_NOT_FOUND");
  });

  it("rejects_unknown_extension", async () => {
    const file = await write("spec.toml", 'name = "shop"\n');
    const error = onlyError(await loadSpecFile(file));
    expect(error.code).toBe("E_SPEC_FILE_TYPE");
    expect(error.message).toContain(".toml");
  });
});

describe("loading text", () => {
  const HEAD = "name: shop\ntrustDomain: shop.example\n";

  it("reports_yaml_syntax_error_with_line_and_column", () => {
    // Line 2: the value of trustDomain (column 14) holds a second ": ", a nested compact mapping.
    const error = onlyError(loadSpecText("name: shop\ntrustDomain: shop.example: x\nservices: {}\n"));
    expect(error).toMatchObject({ code: "E_SPEC_YAML_SYNTAX", path: "", line: 2, column: 14 });
    expect(error.message).not.toMatch(/line \d+, column \d+/);
  });

  it("rejects_duplicate_keys", () => {
    const error = onlyError(loadSpecText(`${HEAD}name: other\nservices: {}\n`));
    expect(error).toMatchObject({ code: "E_SPEC_DUPLICATE_KEY", line: 3, column: 1 });
  });

  it("hints_to_quote_params_in_flow_lists", () => {
    const text = [
      HEAD.trimEnd(),
      "services:",
      "  orders:",
      "    image: ghcr.io/acme/orders:1.0.0",
      "    port: 8080",
      "    allow:",
      "      - from: [gateway]",
      "        paths: [/a/{id}]",
      "",
    ].join("\n");
    const error = onlyError(loadSpecText(text));
    expect(error.code).toBe("E_SPEC_YAML_SYNTAX");
    expect(error.line).toBe(9);
    expect(error.hint).toMatch(/quote/i);
    expect(error.hint).toContain('"/orders/{id}"');
  });

  it("does_not_hint_quoting_for_other_syntax_errors", () => {
    const error = onlyError(loadSpecText("name: shop\n\ttrustDomain: shop.example\n"));
    expect(error.code).toBe("E_SPEC_YAML_SYNTAX");
    expect(error.hint).not.toMatch(/quote/i);
  });

  it("errors_carry_the_line_of_the_offending_node", () => {
    const text = [
      HEAD.trimEnd(), //                        lines 1-2
      "services:", //                           line 3
      "  orders:", //                           line 4
      "    image: ghcr.io/acme/orders:1.0.0", // line 5
      "    port: 8080", //                      line 6
      "    timout: 2s", //                      line 7: unknown key at column 5
      "    calls: [paymnts]", //                line 8: unknown reference at column 13
      "  payments:", //                         line 9
      "    image: ghcr.io/acme/payments:1.0.0",
      "    port: 8080",
      "",
    ].join("\n");
    const result = loadSpecText(text);
    expect(result.ok).toBe(false);
    expect(result.errors).toContainEqual(
      expect.objectContaining({
        code: "E_SPEC_UNKNOWN_KEY",
        path: "services.orders.timout",
        line: 7,
        column: 5,
      }),
    );
    expect(result.errors).toContainEqual(
      expect.objectContaining({
        code: "E_SPEC_UNKNOWN_REFERENCE",
        path: "services.orders.calls[0]",
        line: 8,
        column: 13,
      }),
    );
  });

  it("errors_on_a_missing_field_point_at_the_parent", () => {
    const text = `${HEAD}services:\n  orders:\n    port: 8080\n`;
    const result = loadSpecText(text);
    expect(result.errors).toContainEqual(
      expect.objectContaining({
        code: "E_SPEC_MISSING_FIELD",
        path: "services.orders.image",
        line: 5,
        column: 5,
      }),
    );
  });

  it("errors_in_json_carry_lines_too", () => {
    const json = JSON.stringify(
      {
        name: "shop",
        trustDomain: "shop.example",
        services: { orders: { image: "ghcr.io/acme/orders:1.0.0", port: "8080" } },
      },
      null,
      2,
    );
    const line = json.split("\n").findIndex((l) => l.includes('"port"')) + 1;
    const result = loadSpecText(json);
    expect(result.errors).toContainEqual(
      expect.objectContaining({ code: "E_SPEC_INVALID_TYPE", path: "services.orders.port", line }),
    );
  });

  it("errors_are_sorted_by_position", () => {
    // Semantic errors (unknown references) come before structural ones (bad duration, unknown key) in the
    // file, although parseSpec computes the structural ones first.
    const text = [
      HEAD.trimEnd(),
      "services:",
      "  orders:",
      "    image: ghcr.io/acme/orders:1.0.0",
      "    port: 8080",
      "    calls: [paymnts, orders]", //   line 7: unknown reference, then self reference
      "    allow:",
      "      - from: [nobody]", //         line 9: unknown reference
      "  payments:",
      "    image: ghcr.io/acme/payments:1.0.0",
      "    port: 8080",
      "    timeout: 5 seconds", //         line 13: bad duration
      "    replicas: -1", //               line 14: out of range
      "    timout: 2s", //                 line 15: unknown key
      "",
    ].join("\n");
    const result = loadSpecText(text);
    expect(result.ok).toBe(false);
    const positions = result.errors.map((e) => [e.line, e.column]);
    expect(positions.every(([line, column]) => typeof line === "number" && typeof column === "number")).toBe(
      true,
    );
    const sorted = [...positions].sort(([l1, c1], [l2, c2]) => l1! - l2! || c1! - c2!);
    expect(positions).toEqual(sorted);
    expect(result.errors.map((e) => e.code)).toEqual([
      "E_SPEC_UNKNOWN_REFERENCE",
      "E_SPEC_SELF_REFERENCE",
      "E_SPEC_UNKNOWN_REFERENCE",
      "E_SPEC_INVALID_DURATION",
      "E_SPEC_OUT_OF_RANGE",
      "E_SPEC_UNKNOWN_KEY",
    ]);
    expect(result.errors.map((e) => e.line)).toEqual([7, 7, 9, 13, 14, 15]);
  });
});

describe("the two YAML readers", () => {
  const TESTDATA = fileURLToPath(new URL("../translate/testdata/", import.meta.url));

  it("read_every_example_and_fixture_as_the_same_document", async () => {
    const { readdir } = await import("node:fs/promises");
    const files = [
      SHOP_YAML,
      ...(await readdir(TESTDATA)).filter((f) => f.endsWith(".in.yaml")).map((f) => join(TESTDATA, f)),
    ];
    expect(files.length).toBeGreaterThanOrEqual(7);
    for (const file of files) {
      const text = await readFile(file, "utf8");
      const fast = loadSpecText(text);
      const slow = loadWithPositions(text);
      expect(fast.ok, file).toBe(true);
      expect(fast.raw, file).toEqual(slow.raw);
      expect(fast.ok && slow.ok && fast.spec).toEqual(slow.ok && slow.spec);
    }
  });

  it("read_a_large_generated_spec_as_the_same_document", () => {
    const text = generateSpecYaml({ services: 60, routes: 300, seed: 3 });
    expect(loadSpecText(text).raw).toEqual(loadWithPositions(text).raw);
  });

  it.each([
    ["yaml_1_2_scalars", "a: on\nb: yes\nc: 0o17\nd: 1e3\ne: ~\nf: .inf\ng: 012\nh: '503'\ni: 2001-01-01\n"],
    ["flow_collections", "a: [1, 'x', {b: c}]\nd: {e: [f, g]}\n"],
    ["block_scalars", "a: |\n  line1\n  line2\nb: >-\n  folded\n  text\n"],
    // js-yaml alone reads 0b binary and signed hex/octal as numbers; YAML 1.2 core (and `yaml`) as strings.
    ["integer_forms", "a: 0b1111101000\nb: +0x1F90\nc: -0o17\nd: 0x1F90\ne: 0o17\nf: +12\ng: -0\nh: 007\n"],
  ])("agree_on_%s", (_name, text) => {
    const slow = loadWithPositions(text).raw;
    const fast = fastRead(text);
    expect(fast).toEqual(slow);
  });

  it.each(["0b1111101000", "+0x1F90", "-0o17620"])(
    "a_port_written_%s_is_refused_whatever_else_the_spec_holds",
    (port) => {
      const text = `name: t\ntrustDomain: t.example\nservices:\n  a:\n    image: r/a:1.0.0\n    port: ${port}\n`;
      for (const result of [loadSpecText(text), loadWithPositions(text)])
        expect(result.errors).toContainEqual(
          expect.objectContaining({ code: "E_SPEC_INVALID_TYPE", path: "services.a.port" }),
        );
    },
  );

  it("bounds_alias_expansion_instead_of_crashing", () => {
    const lines = ["a: &a [x, x, x, x, x, x, x, x, x, x]"];
    for (let i = 0; i < 8; i++) {
      const prev = String.fromCharCode(97 + i);
      lines.push(
        `${String.fromCharCode(98 + i)}: &${String.fromCharCode(98 + i)} [${Array(10).fill(`*${prev}`).join(", ")}]`,
      );
    }
    const result = loadSpecText(lines.join("\n"));
    expect(result.ok).toBe(false);
    expect(result.errors[0]).toMatchObject({
      code: "E_SPEC_YAML_SYNTAX",
      message: expect.stringContaining("too many aliases"),
    });
  });

  it("still_reads_specs_that_use_anchors", () => {
    const text = [
      "name: anchors",
      "trustDomain: anchors.example",
      "services:",
      "  a: &svc",
      "    image: registry.example/a:1.0.0",
      "    port: 8080",
      "  b: *svc",
    ].join("\n");
    const result = loadSpecText(text);
    expect(result.errors).toEqual([]);
    expect(result.ok && Object.keys(result.spec.services)).toEqual(["a", "b"]);
  });
});
