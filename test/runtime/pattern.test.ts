/** Path patterns: the grammar shared by routes, allow rules and per-route policies. */
import { describe, expect, it } from "vitest";
import { isPatternError, parsePathPattern } from "../../runtime/decide/pattern.ts";

describe("path patterns", () => {
  it.each([
    ["/", [], []],
    ["/orders", [{ kind: "literal", value: "orders" }], []],
    ["/orders/*", [{ kind: "literal", value: "orders" }, { kind: "any" }], []],
    [
      "/orders/{id}/items/{item}",
      [
        { kind: "literal", value: "orders" },
        { kind: "param", name: "id" },
        { kind: "literal", value: "items" },
        { kind: "param", name: "item" },
      ],
      ["id", "item"],
    ],
    ["/static/**", [{ kind: "literal", value: "static" }, { kind: "rest" }], []],
    ["/**", [{ kind: "rest" }], []],
    [
      "/shop.v1.Notifier/Send",
      [
        { kind: "literal", value: "shop.v1.Notifier" },
        { kind: "literal", value: "Send" },
      ],
      [],
    ],
    [
      "/a-b_c~d/x:y@z",
      [
        { kind: "literal", value: "a-b_c~d" },
        { kind: "literal", value: "x:y@z" },
      ],
      [],
    ],
  ])("accepts_%s", (source, segments, params) => {
    const p = parsePathPattern(source);
    expect(isPatternError(p)).toBe(false);
    if (!isPatternError(p)) {
      expect(p.segments).toEqual(segments);
      expect(p.params).toEqual(params);
    }
  });

  it.each([
    ["rejects_a_pattern_without_leading_slash", "orders", "must start with"],
    ["rejects_empty_segments", "/a//b", "empty segment"],
    ["rejects_a_trailing_slash", "/a/", 'ends with "/"'],
    ["rejects_dot_segments", "/a/../b", '".." segment'],
    ["rejects_single_dot_segments", "/a/./b", '"." segment'],
    ["rejects_percent_encoding", "/a%2Fb", '"%"'],
    ["rejects_query_strings", "/a?b=1", '"?"'],
    ["rejects_fragments", "/a#b", '"#"'],
    ["rejects_backslashes", "/a\\b", '"\\"'],
    ["rejects_spaces", "/a b", "spaces"],
    ["rejects_double_star_before_the_end", "/a/**/b", "last segment"],
    ["rejects_a_repeated_param", "/{id}/{id}", "appears twice"],
    ["rejects_mixed_param_segments", "/v{version}", "may only use"],
    ["rejects_semicolon_params", "/a;jsessionid=1", "may only use"],
    ["rejects_partial_wildcards", "/a*", "may only use"],
  ])("%s", (_claim, source, message) => {
    const p = parsePathPattern(source);
    expect(isPatternError(p) && p.error).toContain(message);
  });
});
