/**
 * The template language of transforms and the dotted field paths of body operations: what compiles,
 * what is refused (unknown variables, prototype paths, params the route does not capture), and what
 * renders — including the attempts to reach an object prototype through a template or a claim path.
 */
import { describe, expect, it } from "vitest";
import {
  compileTemplate,
  getPath,
  parseFieldPath,
  renderTemplate,
  renderTemplateValue,
  type TemplateContext,
} from "../../runtime/apim/template.ts";

const ctx = (over: Partial<TemplateContext> = {}): TemplateContext => ({
  params: { id: "42", sku: "a%20b" },
  method: "GET",
  path: "/api/orders/42",
  host: "api.example",
  query: "view=full&tag=a&tag=b",
  requestId: "req-1",
  clientIp: "203.0.113.9",
  header: (n) => ({ "x-tenant": "acme", "accept-language": "de" })[n],
  principal: {
    subject: "user-7",
    consumer: "globex",
    claims: { sub: "user-7", roles: ["admin", "ops"], org: { id: 9, name: "ACME" }, active: true },
  },
  ...over,
});

const compile = (source: string, params: string[] = ["id", "sku"]) => {
  const r = compileTemplate(source, { params });
  if (!r.ok) throw new Error(r.error);
  return r.value;
};

describe("template compilation", () => {
  it.each([
    ["rejects_an_unknown_root", "${process.env.HOME}", "not a template variable"],
    ["rejects_a_function_call", "${request.header.x-a()}", "not a lower-case header name"],
    ["rejects_an_expression", "${params.id + 1}", "not a parameter name"],
    ["rejects_an_unclosed_placeholder", "id-${params.id", "unclosed"],
    ["rejects_an_uncaptured_param", "${params.user}", "captures {id}, {sku}"],
    ["rejects_proto_in_a_claim_path", "${principal.claims.__proto__}", "forbidden segment"],
    ["rejects_constructor_in_a_claim_path", "${principal.claims.constructor.name}", "forbidden segment"],
    ["rejects_prototype_in_a_claim_path", "${principal.claims.a.prototype}", "forbidden segment"],
    ["rejects_an_empty_claim_segment", "${principal.claims.a..b}", "empty segment"],
    ["rejects_an_upper_case_header_name", "${request.header.X-Tenant}", "lower-case header"],
    ["rejects_a_whitespace_padded_placeholder", "${ params.id }", "not a template variable"],
    ["rejects_a_bare_root", "${params}", "not a template variable"],
    ["rejects_object_prototype_names_as_roots", "${toString}", "not a template variable"],
    ["rejects_proto_as_a_root", "${__proto__.x}", "not a template variable"],
  ])("%s", (_claim, source, error) => {
    const r = compileTemplate(source, { params: ["id", "sku"] });
    expect(r.ok).toBe(false);
    if (!r.ok) expect(r.error).toContain(error);
  });

  it("marks_a_template_without_placeholders_constant", () => {
    expect(compile("plain $ text").constant).toBe(true);
    expect(compile("a-${params.id}").constant).toBe(false);
  });

  it("treats_double_dollar_brace_as_a_literal", () => {
    const t = compile("cost: $${params.id} and ${params.id}");
    expect(renderTemplate(t, ctx())).toBe("cost: ${params.id} and 42");
  });
});

describe("template rendering", () => {
  it.each([
    ["renders_a_param", "order-${params.id}", "order-42"],
    ["renders_a_param_as_the_canonical_segment", "${params.sku}", "a%20b"],
    [
      "renders_the_method_path_host_and_id",
      "${request.method} ${request.path} ${request.host} ${request.id}",
      "GET /api/orders/42 api.example req-1",
    ],
    ["renders_a_request_header", "tenant=${request.header.x-tenant}", "tenant=acme"],
    ["renders_the_first_query_value", "${request.query.tag}", "a"],
    ["renders_the_client_ip", "${client.ip}", "203.0.113.9"],
    ["renders_the_subject_and_consumer", "${principal.subject}/${principal.consumer}", "user-7/globex"],
    ["renders_a_nested_claim", "${principal.claims.org.name}", "ACME"],
    ["renders_a_number_claim_as_text", "org-${principal.claims.org.id}", "org-9"],
    ["renders_a_list_claim_as_json_text", "roles=${principal.claims.roles}", 'roles=["admin","ops"]'],
    ["renders_a_boolean_claim_as_text", "${principal.claims.active}", "true"],
  ])("%s", (_claim, source, expected) => {
    expect(renderTemplate(compile(source), ctx())).toBe(expected);
  });

  it.each([
    ["skips_when_a_header_is_absent", "${request.header.x-missing}"],
    ["skips_when_a_query_value_is_absent", "${request.query.none}"],
    ["skips_when_a_claim_is_absent", "${principal.claims.org.missing}"],
    ["skips_when_a_claim_path_crosses_a_list", "${principal.claims.roles.length}"],
  ])("%s", (_claim, source) => {
    expect(renderTemplate(compile(source), ctx())).toBeUndefined();
  });

  it("skips_principal_variables_without_a_principal", () => {
    const c = ctx({ principal: null });
    expect(renderTemplate(compile("${principal.subject}"), c)).toBeUndefined();
    expect(renderTemplate(compile("${principal.claims.sub}"), c)).toBeUndefined();
  });

  it("never_reads_inherited_properties_of_claims", () => {
    // `toString` and `hasOwnProperty` exist on every object through its prototype: never as claims.
    for (const name of ["toString", "hasOwnProperty", "valueOf", "__defineGetter__"]) {
      expect(renderTemplate(compile(`\${principal.claims.${name}}`), ctx())).toBeUndefined();
    }
  });

  it("never_reads_inherited_properties_of_params", () => {
    const t = compileTemplate("${params.toString}", { params: ["toString"] });
    expect(t.ok).toBe(true);
    if (t.ok) expect(renderTemplate(t.value, ctx())).toBeUndefined();
  });

  it("keeps_the_json_type_of_a_whole_placeholder_value", () => {
    expect(renderTemplateValue(compile("${principal.claims.roles}"), ctx())).toEqual(["admin", "ops"]);
    expect(renderTemplateValue(compile("${principal.claims.org.id}"), ctx())).toBe(9);
    expect(renderTemplateValue(compile("id:${principal.claims.org.id}"), ctx())).toBe("id:9");
  });

  // The body a whole-placeholder value lands in is the request's own and later ops write into it; the
  // claims are the principal's, shared through the verified-token cache by every request it makes.
  it.each([
    [
      "hands_out_a_copy_of_an_object_claim",
      "${principal.claims.org}",
      (v: unknown) => ((v as { name: string }).name = "x"),
    ],
    [
      "hands_out_a_copy_of_a_list_claim",
      "${principal.claims.roles}",
      (v: unknown) => (v as string[]).push("x"),
    ],
  ])("%s", (_claim, text, write) => {
    const c = ctx();
    const before = structuredClone(c.principal!.claims);
    write(renderTemplateValue(compile(text), c));
    expect(c.principal!.claims).toEqual(before);
  });
});

describe("field paths", () => {
  it.each([
    ["rejects_an_empty_path", ""],
    ["rejects_a_leading_dot", ".a"],
    ["rejects_a_trailing_dot", "a."],
    ["rejects_proto", "__proto__"],
    ["rejects_nested_proto", "a.__proto__.polluted"],
    ["rejects_constructor_prototype", "constructor.prototype.polluted"],
    ["rejects_prototype", "a.prototype"],
    ["rejects_a_path_deeper_than_32_levels", Array.from({ length: 33 }, () => "a").join(".")],
  ])("%s", (_claim, path) => {
    expect(parseFieldPath(path).ok).toBe(false);
  });

  it("accepts_keys_with_any_character_but_dot", () => {
    const r = parseFieldPath("a b.$ref.x-y.日本");
    expect(r).toEqual({ ok: true, value: ["a b", "$ref", "x-y", "日本"] });
  });

  it("reads_own_properties_only", () => {
    const obj = JSON.parse('{"a":{"b":1},"__proto__":{"x":2}}') as unknown;
    expect(getPath(obj, ["a", "b"])).toBe(1);
    expect(getPath(obj, ["a", "toString"])).toBeUndefined();
    expect(getPath(obj, ["a", "b", "c"])).toBeUndefined();
    expect(getPath([1, 2], ["length"])).toBeUndefined();
  });
});
