/** The pattern algebra and the auth order the diff and calls-allow rest on. */
import { describe, expect, it } from "vitest";
import type { AuthzRule, RouteAuth } from "../../runtime/contract/schema.ts";
import { admission, patternContains, patternsOverlap } from "../../policies/patterns.ts";
import { HTTP_METHODS } from "../../runtime/contract/schema.ts";
import { authCovers, uncovered } from "../../policies/reachability.ts";

describe("path patterns", () => {
  it.each([
    ["/a/**", "/a/b/c", true],
    ["/a/**", "/a", true],
    ["/a/**", "/a/**", true],
    ["/a/*", "/a/b", true],
    ["/a/*", "/a/{id}", true],
    ["/a/{id}", "/a/*", true],
    ["/a/*", "/a/**", false],
    ["/a/*", "/a", false],
    ["/a/b", "/a/*", false],
    ["/**", "/", true],
    ["/", "/a", false],
    ["/a/*/c", "/a/b/c", true],
    ["/a/*/c", "/a/b/d", false],
  ])("contains_%s_over_%s_is_%s", (outer, inner, expected) => {
    expect(patternContains(outer, inner)).toBe(expected);
  });

  it.each([
    ["/a/*", "/a/b", true],
    ["/a/*", "/b/*", false],
    ["/a/**", "/a/b/*/d", true],
    ["/a/*", "/a/b/c", false],
    ["/a/{x}/c", "/a/b/*", true],
    ["/x", "/x/**", true],
  ])("overlap_of_%s_and_%s_is_%s", (x, y, expected) => {
    expect(patternsOverlap(x, y)).toBe(expected);
    expect(patternsOverlap(y, x)).toBe(expected);
  });

  const rule = (
    methods: AuthzRule["methods"],
    paths: string[],
    from = ["spiffe://m/ns/m/sa/gateway"],
  ): AuthzRule => ({
    source: "services.x.allow[0]",
    from,
    methods,
    paths,
  });
  it.each([
    ["admits_everything_a_rule_without_restrictions_names", [rule([], [])], [], "/any/**", "all"],
    ["admits_a_route_inside_a_wider_pattern", [rule(["GET"], ["/orders/**"])], ["GET"], "/orders/*", "all"],
    [
      "admits_part_of_a_route_that_also_posts",
      [rule(["GET"], ["/orders/**"])],
      ["GET", "POST"],
      "/orders/*",
      "some",
    ],
    [
      "admits_part_of_a_route_with_a_wider_path",
      [rule(["GET"], ["/orders/*"])],
      ["GET"],
      "/orders/**",
      "some",
    ],
    ["admits_none_of_a_disjoint_path", [rule(["GET"], ["/orders/*"])], ["GET"], "/users/*", "none"],
    ["admits_none_for_another_peer", [rule([], [], ["spiffe://m/ns/m/sa/web"])], ["GET"], "/x", "none"],
    [
      "admits_methods_split_over_two_rules",
      [rule(["GET"], ["/x"]), rule(["POST"], ["/x"])],
      ["GET", "POST"],
      "/x",
      "all",
    ],
  ] as const)("%s", (_claim, rules, methods, path, expected) => {
    expect(admission(rules, "spiffe://m/ns/m/sa/gateway", { methods, path })).toBe(expected);
  });
});

const auth = (over: Partial<RouteAuth>): RouteAuth => ({
  public: false,
  anyOf: [{ kind: "jwt", provider: "main" }],
  scopes: [],
  claims: [],
  consumers: [],
  groups: [],
  clientIps: [],
  ...over,
});

describe("auth order", () => {
  it.each([
    ["public_covers_everything", auth({ public: true, anyOf: [] }), auth({ scopes: ["a"] }), true],
    ["nothing_but_public_covers_public", auth({}), auth({ public: true, anyOf: [] }), false],
    ["fewer_scopes_cover_more", auth({ scopes: ["a"] }), auth({ scopes: ["a", "b"] }), true],
    ["more_scopes_do_not_cover_fewer", auth({ scopes: ["a", "b"] }), auth({ scopes: ["a"] }), false],
    [
      "more_mechanisms_cover_fewer",
      auth({ anyOf: [{ kind: "jwt", provider: "main" }, { kind: "apiKey" }] }),
      auth({}),
      true,
    ],
    [
      "fewer_mechanisms_do_not_cover_more",
      auth({}),
      auth({ anyOf: [{ kind: "jwt", provider: "main" }, { kind: "apiKey" }] }),
      false,
    ],
    [
      "any_consumer_covers_a_listed_one",
      auth({ anyOf: [{ kind: "apiKey" }] }),
      auth({ anyOf: [{ kind: "apiKey" }], consumers: ["a"] }),
      true,
    ],
    [
      "a_listed_consumer_does_not_cover_any",
      auth({ anyOf: [{ kind: "apiKey" }], consumers: ["a"] }),
      auth({ anyOf: [{ kind: "apiKey" }] }),
      false,
    ],
    // authorize() admits a listed consumer OR a member of a listed group: one allow-list, not two limits.
    [
      "groups_alone_do_not_cover_the_same_groups_with_a_consumer_added",
      auth({ anyOf: [{ kind: "apiKey" }], groups: ["bulk"] }),
      auth({ anyOf: [{ kind: "apiKey" }], groups: ["bulk"], consumers: ["acme"] }),
      false,
    ],
    [
      "consumers_alone_do_not_cover_the_same_consumers_with_a_group_added",
      auth({ anyOf: [{ kind: "apiKey" }], consumers: ["acme"] }),
      auth({ anyOf: [{ kind: "apiKey" }], consumers: ["acme"], groups: ["bulk"] }),
      false,
    ],
    [
      "a_consumer_and_a_group_cover_the_consumer_alone",
      auth({ anyOf: [{ kind: "apiKey" }], consumers: ["acme"], groups: ["bulk"] }),
      auth({ anyOf: [{ kind: "apiKey" }], consumers: ["acme"] }),
      true,
    ],
    [
      "no_consumers_or_groups_cover_any_list",
      auth({ anyOf: [{ kind: "apiKey" }] }),
      auth({ anyOf: [{ kind: "apiKey" }], consumers: ["acme"], groups: ["bulk"] }),
      true,
    ],
    [
      "a_wider_claim_set_covers_a_narrower",
      auth({ claims: [{ name: "tier", values: ["gold", "silver"] }] }),
      auth({ claims: [{ name: "tier", values: ["gold"] }] }),
      true,
    ],
  ])("%s", (_claim, weak, strong, expected) => {
    expect(authCovers(weak, strong)).toBe(expected);
  });

  it("lists_the_methods_a_wildcard_grant_loses", () => {
    expect(
      uncovered([{ method: "*", path: "/x" }], [{ method: "GET", path: "/x" }]).map((g) => g.method),
    ).toEqual(["HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT"]);
    expect(uncovered([{ method: "GET", path: "/x/*" }], [{ method: "*", path: "/x/**" }])).toEqual([]);
  });

  // An empty method list admits any upper-case token (PROPFIND, PURGE), not just the nine names.
  it("never_lets_the_nine_method_names_cover_any_method", () => {
    const nine = HTTP_METHODS.map((method) => ({ method, path: "/x" }));
    expect(uncovered([{ method: "*", path: "/x" }], nine)).toEqual([{ method: "*", path: "/x" }]);
  });
});
