/**
 * Generated artefacts are committed and must be fresh: the JSON Schema, the spec reference and the
 * README's tables. When this fails, run `npm run schema` and commit the result.
 */
import { readFileSync, readdirSync } from "node:fs";
import { Ajv2020 } from "ajv/dist/2020.js";
import { describe, expect, it } from "vitest";
import { parse } from "yaml";
import { SpecErrorCatalog } from "../../components/spec/errors.ts";
import { RuntimeErrorCatalog } from "../../runtime/contract/errors.ts";
import { GatewayErrorCatalog } from "../../runtime/gateway/errors.ts";
import { PkiErrorCatalog } from "../../runtime/pki/errors.ts";
import { PolicyErrorCatalog } from "../../policies/errors.ts";
import { artefacts } from "../../scripts/generated.ts";

const ROOT = new URL("../../", import.meta.url);
const read = (p: string) => readFileSync(new URL(p, ROOT), "utf8");

describe("generated artefacts", () => {
  it.each(artefacts().map((a) => [a.path, a.content]))("%s_is_up_to_date", (path, content) => {
    expect(read(path), `${path} is stale: run npm run schema`).toBe(content);
  });

  it("readme_lists_every_error_code_and_no_other", () => {
    const readme = read("README.md");
    const listed = [...readme.matchAll(/^\| `([EW]_[A-Z_]+)` \|/gm)].map((m) => m[1]);
    const catalog = [
      ...Object.keys(SpecErrorCatalog),
      ...Object.keys(RuntimeErrorCatalog),
      ...Object.keys(PkiErrorCatalog),
      ...Object.keys(PolicyErrorCatalog),
    ];
    expect(listed.sort()).toEqual(catalog.sort());
  });

  it("readme_lists_every_gateway_error_code", () => {
    const readme = read("README.md");
    const listed = [...readme.matchAll(/^\| `([a-z_]+)` \| (?:[0-9]{3}|from the rule) \|/gm)].map(
      (m) => m[1],
    );
    expect(listed.sort()).toEqual(Object.keys(GatewayErrorCatalog).sort());
  });

  it("every_code_used_in_the_source_is_in_a_catalog", () => {
    const catalog = new Set([
      ...Object.keys(SpecErrorCatalog),
      ...Object.keys(RuntimeErrorCatalog),
      ...Object.keys(PkiErrorCatalog),
    ]);
    const files = [
      "components/spec/semantic.ts",
      "components/spec/load.ts",
      "components/spec/schema.ts",
      "components/translate/translate.ts",
      "runtime/contract/load.ts",
      "runtime/pki/spiffe.ts",
      "runtime/pki/cert.ts",
      "runtime/pki/ca.ts",
      "runtime/pki/bundle.ts",
      "runtime/pki/verify.ts",
      "runtime/pki/tls.ts",
      "runtime/pki/rotation.ts",
      "runtime/pki/files.ts",
      "cli/pki.ts",
    ];
    for (const f of files) {
      for (const m of read(f).matchAll(/"((?:E|W)_(?:SPEC|RT)_[A-Z_]+)"/g))
        expect(catalog, `${f} uses ${m[1]}`).toContain(m[1]);
    }
  });
});

it("every_policy_code_used_in_the_policies_is_in_the_policy_catalog", () => {
  const dir = new URL("policies/", ROOT).pathname;
  const files = readdirSync(dir, { recursive: true, encoding: "utf8" }).filter(
    (f) => f.endsWith(".ts") && !f.startsWith("pack/node_modules"),
  );
  expect(files.length).toBeGreaterThan(10);
  const used = new Set<string>();
  for (const f of files)
    for (const m of read(`policies/${f}`).matchAll(/"(E_POLICY_[A-Z_]+)"/g)) used.add(m[1]!);
  for (const code of used) expect(Object.keys(PolicyErrorCatalog), `policies/ uses ${code}`).toContain(code);
  expect(used.size).toBeGreaterThan(30);
});

describe("JSON Schema", () => {
  const schema = JSON.parse(read("schema/mesh.schema.json"));
  const validate = new Ajv2020({ strict: false, allErrors: true }).compile(schema);

  it("accepts_the_shop_example", () => {
    const ok = validate(parse(read("examples/shop/mesh.yaml")));
    expect(validate.errors ?? []).toEqual([]);
    expect(ok).toBe(true);
  });

  it("rejects_unknown_keys_like_the_validator_does", () => {
    const spec = parse(read("examples/shop/mesh.yaml"));
    spec.services.orders.timout = "2s";
    expect(validate(spec)).toBe(false);
    expect(validate.errors).toContainEqual(
      expect.objectContaining({ keyword: "additionalProperties", instancePath: "/services/orders" }),
    );
  });

  it("carries_duration_patterns_for_editors", () => {
    const spec = parse(read("examples/shop/mesh.yaml"));
    spec.mesh.defaults.timeout = "2 seconds";
    expect(validate(spec)).toBe(false);
    expect(validate.errors).toContainEqual(
      expect.objectContaining({ keyword: "pattern", instancePath: "/mesh/defaults/timeout" }),
    );
  });
});
