/**
 * Route transforms: header operations (remove → set → add, reserved headers refused at compile), JSON
 * body operations (drop → rename → set → template) as a table, and prototype-pollution attempts through
 * body contents and operations.
 */
import { describe, expect, it } from "vitest";
import type { GatewayRoute } from "../../runtime/contract/schema.ts";
import {
  applyBodyOps,
  applyHeaderOps,
  compileTransform,
  transformJson,
  TransformCompileError,
  type CompiledTransform,
  type HeaderBag,
} from "../../runtime/apim/transform.ts";
import type { TemplateContext } from "../../runtime/apim/template.ts";

type T = NonNullable<GatewayRoute["transform"]["request"]>;
const headerOps = (h: Partial<T["headers"]>): T => ({
  headers: { add: {}, set: {}, remove: [], ...h },
  body: null,
});
const bodyOps = (b: Partial<NonNullable<T["body"]>>): T => ({
  headers: { add: {}, set: {}, remove: [] },
  body: { rename: {}, drop: [], set: {}, template: {}, ...b },
});

const ctx: TemplateContext = {
  params: { id: "42" },
  method: "POST",
  path: "/api/orders/42",
  host: "api.example",
  query: "",
  requestId: "req-1",
  clientIp: "203.0.113.9",
  header: (n) => ({ "x-tenant": "acme", "x-evil": "a\r\nset-cookie: pwned=1" })[n],
  principal: { subject: "user-7", claims: { roles: ["admin"] } },
};

const compile = (t: T, owned?: string[]): CompiledTransform => {
  const c = compileTransform(t, "transform.request", { params: ["id"], ownedHeaders: new Set(owned ?? []) });
  if (c === null) throw new Error("nothing compiled");
  return c;
};

describe("header operations", () => {
  it.each([
    [
      "refuses_setting_x_forwarded_for",
      headerOps({ set: { "x-forwarded-for": "1.1.1.1" } }),
      "owned by the gateway",
    ],
    ["refuses_adding_x_request_id", headerOps({ add: { "x-request-id": "forged" } }), "owned by the gateway"],
    ["refuses_removing_forwarded", headerOps({ remove: ["forwarded"] }), "owned by the gateway"],
    [
      "refuses_the_meshgate_namespace",
      headerOps({ set: { "x-meshgate-subject": "root" } }),
      "owned by the gateway",
    ],
    ["refuses_a_hop_by_hop_header", headerOps({ set: { "transfer-encoding": "chunked" } }), "hop-by-hop"],
    ["refuses_connection", headerOps({ remove: ["connection"] }), "hop-by-hop"],
    ["refuses_content_length", headerOps({ set: { "content-length": "0" } }), "recomputed"],
    ["refuses_host", headerOps({ set: { host: "internal" } }), "rewrite.host"],
    ["refuses_a_bad_template", headerOps({ set: { "x-a": "${nope}" } }), "not a template variable"],
  ])("%s", (_claim, t, message) => {
    expect(() => compile(t)).toThrow(TransformCompileError);
    expect(() => compile(t)).toThrow(message);
  });

  it("refuses_a_principal_header_named_by_forward_claims", () => {
    expect(() => compile(headerOps({ set: { "x-shop-user": "admin" } }), ["x-shop-user"])).toThrow(
      "principal header",
    );
  });

  it("compiles_nothing_for_an_empty_transform", () => {
    expect(compileTransform(headerOps({}), "t", { params: [] })).toBeNull();
    expect(compileTransform(null, "t", { params: [] })).toBeNull();
  });

  it("applies_remove_then_set_then_add", () => {
    const c = compile(
      headerOps({
        remove: ["x-internal", "x-both"],
        set: { "x-both": "set", "x-channel": "web" },
        add: { "x-both": "added", "x-via": "meshgate" },
      }),
    );
    const h: HeaderBag = { "x-internal": "secret", "x-both": "old", "x-via": "proxy-a", "x-keep": "1" };
    applyHeaderOps(c.headers!, h, ctx);
    expect(h).toEqual({
      "x-both": ["set", "added"],
      "x-channel": "web",
      "x-via": ["proxy-a", "meshgate"],
      "x-keep": "1",
    });
  });

  it("renders_templates_in_header_values", () => {
    const c = compile(
      headerOps({
        set: { "x-order": "order-${params.id}", "x-user": "${principal.subject}@${request.header.x-tenant}" },
      }),
    );
    expect(c.headers!.usesContext).toBe(true);
    const h: HeaderBag = {};
    applyHeaderOps(c.headers!, h, ctx);
    expect(h).toEqual({ "x-order": "order-42", "x-user": "user-7@acme" });
  });

  it("skips_a_header_whose_template_has_no_value", () => {
    const c = compile(
      headerOps({ set: { "x-c": "${request.header.x-absent}" }, add: { "x-d": "${principal.consumer}" } }),
    );
    const h: HeaderBag = { "x-c": "kept" };
    applyHeaderOps(c.headers!, h, ctx);
    expect(h).toEqual({ "x-c": "kept" });
  });

  it("never_writes_a_rendered_value_with_cr_or_lf", () => {
    // A client header copied through a template cannot smuggle a second header line.
    const c = compile(headerOps({ set: { "x-copied": "${request.header.x-evil}" } }));
    const h: HeaderBag = {};
    applyHeaderOps(c.headers!, h, ctx);
    expect(h).toEqual({});
  });
});

interface BodyRow {
  claim: string;
  ops: Partial<NonNullable<T["body"]>>;
  input: unknown;
  output: unknown;
}

const BODY_ROWS: BodyRow[] = [
  {
    claim: "drops_a_top_level_field",
    ops: { drop: ["secret"] },
    input: { a: 1, secret: "s" },
    output: { a: 1 },
  },
  {
    claim: "drops_a_nested_field",
    ops: { drop: ["user.password"] },
    input: { user: { name: "n", password: "p" } },
    output: { user: { name: "n" } },
  },
  { claim: "ignores_dropping_a_missing_field", ops: { drop: ["a.b.c"] }, input: { a: 1 }, output: { a: 1 } },
  {
    claim: "renames_a_field",
    ops: { rename: { displayName: "name" } },
    input: { displayName: "Ada", id: 1 },
    output: { id: 1, name: "Ada" },
  },
  {
    claim: "renames_into_a_new_nested_object",
    ops: { rename: { ref: "meta.externalReference" } },
    input: { ref: "R-1" },
    output: { meta: { externalReference: "R-1" } },
  },
  {
    claim: "renames_out_of_a_nested_object",
    ops: { rename: { "a.b": "c" } },
    input: { a: { b: 1, k: 2 } },
    output: { a: { k: 2 }, c: 1 },
  },
  {
    claim: "ignores_renaming_a_missing_field",
    ops: { rename: { x: "y" } },
    input: { a: 1 },
    output: { a: 1 },
  },
  {
    claim: "drops_before_renaming",
    ops: { drop: ["internal_id"], rename: { internal_id: "id" } },
    input: { internal_id: 5 },
    output: {},
  },
  {
    claim: "sets_literal_json_values",
    ops: { set: { source: "partner-api", "meta.version": 2, "meta.flags": { beta: true } } },
    input: { meta: { a: 1 } },
    output: { source: "partner-api", meta: { a: 1, version: 2, flags: { beta: true } } },
  },
  {
    claim: "overwrites_an_existing_value_with_set",
    ops: { set: { a: null } },
    input: { a: { deep: 1 } },
    output: { a: null },
  },
  {
    claim: "skips_set_through_a_non_object",
    ops: { set: { "a.b": 1, "list.x": 2 } },
    input: { a: "text", list: [1] },
    output: { a: "text", list: [1] },
  },
  {
    claim: "renders_templates_into_the_body",
    ops: {
      template: {
        orderId: "${params.id}",
        "meta.by": "${principal.subject}",
        roles: "${principal.claims.roles}",
      },
    },
    input: {},
    output: { orderId: "42", meta: { by: "user-7" }, roles: ["admin"] },
  },
  {
    claim: "skips_a_template_without_a_value",
    ops: { template: { consumer: "${principal.consumer}" } },
    input: { a: 1 },
    output: { a: 1 },
  },
  {
    claim: "passes_a_top_level_array_unchanged",
    ops: { drop: ["a"] },
    input: [{ a: 1 }],
    output: [{ a: 1 }],
  },
  { claim: "passes_a_top_level_string_unchanged", ops: { set: { a: 1 } }, input: "text", output: "text" },
];

describe("body operations", () => {
  it.each(BODY_ROWS)("$claim", ({ ops, input, output }) => {
    const c = compile(bodyOps(ops));
    const r = transformJson(c.body!, Buffer.from(JSON.stringify(input)), ctx);
    expect(r.ok).toBe(true);
    if (r.ok) expect(JSON.parse(r.body.toString())).toEqual(output);
  });

  it("refuses_invalid_json", () => {
    const c = compile(bodyOps({ drop: ["a"] }));
    for (const bad of ['{"a":', "\uFEFF{}", "{} trailing", "{'a':1}", "NaN"]) {
      expect(transformJson(c.body!, Buffer.from(bad), ctx)).toEqual({ ok: false, reason: "invalid_json" });
    }
  });

  it("keeps_the_text_of_numbers_a_double_would_change_and_never_walks_into_them", () => {
    const c = compile(bodyOps({ drop: ["secret"], set: { "id.x": 1, "price.y": 2 } }));
    const text = '{"id":12345678901234567890,"price":1.10,"ok":2,"secret":1}';
    const r = transformJson(c.body!, Buffer.from(text), ctx);
    expect(r).toEqual({ ok: true, body: Buffer.from('{"id":12345678901234567890,"price":1.10,"ok":2}') });
  });

  it("refuses_bytes_that_are_not_utf8", () => {
    const c = compile(bodyOps({ drop: ["a"] }));
    const bad = Buffer.concat([Buffer.from('{"a":"'), Buffer.from([0xc3, 0x28]), Buffer.from('"}')]);
    expect(transformJson(c.body!, bad, ctx)).toEqual({ ok: false, reason: "invalid_json" });
  });

  it("keeps_an_empty_body_empty", () => {
    const c = compile(bodyOps({ set: { a: 1 } }));
    const r = transformJson(c.body!, Buffer.alloc(0), ctx);
    expect(r).toEqual({ ok: true, body: Buffer.alloc(0) });
  });

  it("clones_literal_values_per_request", () => {
    const c = compile(bodyOps({ set: { meta: { tags: ["a"] } }, template: { "meta.id": "${params.id}" } }));
    const first = applyBodyOps(c.body!, {}, ctx) as { meta: { tags: string[]; id: string } };
    first.meta.tags.push("mutated");
    const second = applyBodyOps(c.body!, {}, ctx);
    expect(second).toEqual({ meta: { tags: ["a"], id: "42" } });
  });
});

describe("prototype pollution", () => {
  it.each([
    ["refuses_dropping_through_proto", bodyOps({ drop: ["__proto__.isAdmin"] })],
    [
      "refuses_setting_through_constructor_prototype",
      bodyOps({ set: { "constructor.prototype.isAdmin": true } }),
    ],
    ["refuses_renaming_into_proto", bodyOps({ rename: { a: "__proto__.isAdmin" } })],
    ["refuses_a_template_target_under_prototype", bodyOps({ template: { "x.prototype.y": "${params.id}" } })],
  ])("%s", (_claim, t) => {
    expect(() => compile(t)).toThrow("forbidden segment");
  });

  it("leaves_object_prototype_untouched_by_a_body_with_a_proto_key", () => {
    const c = compile(bodyOps({ rename: { payload: "data" }, set: { "data.extra": 1 } }));
    const body = '{"payload":{"__proto__":{"isAdmin":true},"constructor":{"prototype":{"isAdmin":true}}}}';
    const r = transformJson(c.body!, Buffer.from(body), ctx);
    expect(r.ok).toBe(true);
    expect(({} as Record<string, unknown>).isAdmin).toBeUndefined();
    expect(Object.prototype).not.toHaveProperty("isAdmin");
    // The "__proto__" key stays an ordinary own key of the data, carried through as data.
    if (r.ok)
      expect(r.body.toString()).toBe(
        '{"data":{"__proto__":{"isAdmin":true},"constructor":{"prototype":{"isAdmin":true}},"extra":1}}',
      );
  });

  it("does_not_follow_an_inherited_property_when_creating_intermediates", () => {
    // "toString" is inherited by every object: set must create an own object, not write into the function.
    const c = compile(bodyOps({ set: { "toString.polluted": 1 } }));
    const out = applyBodyOps(c.body!, {}, ctx);
    expect(out).toEqual({ toString: { polluted: 1 } });
    expect((Object.prototype.toString as unknown as Record<string, unknown>).polluted).toBeUndefined();
  });
});
