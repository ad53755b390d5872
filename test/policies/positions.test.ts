/**
 * Positions of spec paths: the fast line scanner agrees with the full YAML parser on every path of real
 * specs (lines everywhere; columns wherever the path is a block-style key or item — inside a one-line flow
 * collection the scanner points at the collection's key), and hands anything else to the parser.
 */
import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { parse, stringify } from "yaml";
import { lineLocator, locatorFor, yamlLocator } from "../../policies/positions.ts";
import { generateSpecYaml } from "../../testing/generate.ts";
import { MINI_FILE, SHOP_FILE } from "./support.ts";

function everyPath(text: string): string[] {
  const out: string[] = [];
  const walk = (v: unknown, p: string) => {
    if (p) out.push(p);
    if (Array.isArray(v)) v.forEach((x, i) => walk(x, `${p}[${i}]`));
    else if (v && typeof v === "object") for (const [k, x] of Object.entries(v)) walk(x, p ? `${p}.${k}` : k);
  };
  walk(parse(text), "");
  return out;
}

describe("positions", () => {
  it.each([
    ["the_shop_example", readFileSync(SHOP_FILE, "utf8")],
    ["the_guardrail_base_spec", readFileSync(MINI_FILE, "utf8")],
    ["a_generated_spec_of_100_services_and_1000_routes", generateSpecYaml({ services: 100, routes: 1000 })],
    ["the_shop_as_the_yaml_package_writes_it", stringify(parse(readFileSync(SHOP_FILE, "utf8")))],
  ])("scanner_agrees_with_the_parser_on_every_path_of_%s", (_claim, text) => {
    const fast = lineLocator(text);
    expect(fast).not.toBeNull();
    const slow = yamlLocator(text);
    const paths = everyPath(text);
    expect(paths.length).toBeGreaterThan(100);
    const lines = paths.filter((p) => fast!(p)?.line !== slow(p)?.line);
    expect(lines).toEqual([]);
  });

  it.each([
    ["gateway.routes[5].retries", 281, 7],
    ["gateway.routes[5]", 270, 7],
    ["services.orders.calls", 74, 5],
    ["mesh.ca.renewBefore", 19, 5],
    ["gateway.routes[7].aggregate.featured.service", 314, 13],
    ["services.orders.timeout", 75, 5],
    ["services.users.timeout", 129, 3],
  ])("places_%s_at_%i_%i", (path, line, column) => {
    const text = readFileSync(SHOP_FILE, "utf8");
    expect(yamlLocator(text)(path)).toEqual({ line, column });
    if (path !== "gateway.routes[7].aggregate.featured.service")
      expect(lineLocator(text)!(path)).toEqual({ line, column });
    else expect(lineLocator(text)!(path)!.line).toBe(line);
  });

  it.each([
    ["a_bare_dash_item", "a:\n  -\n    b: 1\n"],
    ["an_anchor", "a: &x 1\nb: *x\n"],
    ["a_flow_collection_over_two_lines", "a: [1,\n  2]\n"],
    ["a_quoted_scalar_over_two_lines", 'a: "one\n  two"\n'],
    ["a_json_document", '{ "name": "x" }\n'],
    ["two_documents", "a: 1\n---\nb: 2\n"],
  ])("leaves_%s_to_the_parser", (_claim, text) => {
    expect(lineLocator(text)).toBeNull();
    expect(locatorFor(text)("a")).toEqual(yamlLocator(text)("a"));
  });

  it("skips_block_scalars_and_reads_compact_sequences", () => {
    const text =
      "a:\n  text: |\n    b: not a key\n    - not an item\n  list:\n  - x: 1\n  - y: 2\n  after: 3\n";
    const fast = lineLocator(text)!;
    expect(fast("a.list[1].y")).toEqual({ line: 7, column: 5 });
    expect(fast("a.after")).toEqual({ line: 8, column: 3 });
    expect(fast("a.text.b")).toEqual({ line: 2, column: 3 });
  });
});
