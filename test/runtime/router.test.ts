/**
 * The Router against a naive reference matcher written here from the documented precedence (top of
 * runtime/decide/router.ts): for random route tables and requests the compact trie must give the same
 * result — route, captures, 405 with its Allow set, or 404 — and named edge cases (segments whose hashes
 * collide, empty, very long and non-ASCII segments, a 10,000-route table).
 */
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { GatewayRoute, type HttpMethod } from "../../runtime/contract/schema.ts";
import { Router, segmentHash, type RouterResult } from "../../runtime/decide/router.ts";

interface Condition {
  readonly name: string;
  readonly kind: "exact" | "prefix" | "regex" | "present" | "absent";
  readonly value: string | null;
}

interface RouteSpec {
  readonly name: string;
  readonly path: string;
  readonly methods?: readonly HttpMethod[];
  readonly hosts?: readonly string[];
  readonly headers?: readonly Condition[];
  readonly query?: readonly Condition[];
}

/** A complete contract route (what translate emits) for a match. */
function gatewayRoute(r: RouteSpec): GatewayRoute {
  return {
    name: r.name,
    match: {
      path: r.path,
      methods: [...(r.methods ?? [])],
      hosts: [...(r.hosts ?? [])],
      headers: [...(r.headers ?? [])],
      query: [...(r.query ?? [])],
    },
    action: { kind: "forward", backends: [{ cluster: "app", weight: 100 }], mirror: null, rewrite: null },
    auth: { public: true, anyOf: [], scopes: [], claims: [], consumers: [], groups: [], clientIps: [] },
    rateLimit: null,
    cache: null,
    transform: { request: null, response: null },
    fault: null,
    cors: null,
    timeoutMs: 15_000,
    retry: { attempts: 0, perTryTimeoutMs: 15_000, retryOn: [], backoff: { baseMs: 25, maxMs: 250 } },
    limits: { maxBodyBytes: 1_048_576, maxResponseBytes: null },
  };
}

interface Request {
  readonly host: string;
  readonly method: string;
  readonly path: string;
  readonly query: string;
  readonly headers: Readonly<Record<string, string>>;
}

type Outcome =
  | { kind: "matched"; name: string; captures: readonly string[] }
  | { kind: "method-not-allowed"; allow: readonly string[] }
  | { kind: "no-route" };

const viaRouter = (router: Router, req: Request): Outcome => outcome(router.match(req.host, query(req)));

function query(req: Request) {
  return {
    method: req.method,
    path: req.path,
    query: req.query,
    headers: { header: (name: string) => req.headers[name] },
  };
}

function outcome(r: RouterResult): Outcome {
  if (r.kind === "matched") return { kind: "matched", name: r.route.name, captures: [...r.captures] };
  if (r.kind === "method-not-allowed") return { kind: "method-not-allowed", allow: [...r.allow] };
  return { kind: "no-route" };
}

// ---- The reference: every route checked against the request, then ordered by the documented rules ----

/** "/" has no segments; otherwise the segments between the slashes ("/a/" has "a" and ""). */
const segmentsOf = (path: string): string[] => (path === "/" ? [] : path.slice(1).split("/"));

/** The captures when the pattern matches the path, else null. */
function referenceMatch(pattern: string, path: string): string[] | null {
  const pat = segmentsOf(pattern);
  const segs = segmentsOf(path);
  const captures: string[] = [];
  for (let i = 0; i < pat.length; i++) {
    const p = pat[i]!;
    if (p === "**") return captures;
    const s = segs[i];
    if (s === undefined) return null;
    if (p === "*" || p.startsWith("{")) {
      if (s === "") return null;
      captures.push(s);
    } else if (p !== s) return null;
  }
  return pat.length === segs.length ? captures : null;
}

/** Specificity at position i: literal 0, one segment 1, the pattern's end 2, `**` 3. */
function rank(pattern: string, i: number): number {
  const p = segmentsOf(pattern)[i];
  return p === undefined ? 2 : p === "**" ? 3 : p === "*" || p.startsWith("{") ? 1 : 0;
}

function bySpecificity(a: RouteSpec, b: RouteSpec): number {
  for (let i = 0; ; i++) {
    const d = rank(a.path, i) - rank(b.path, i);
    if (d !== 0) return d;
    if (rank(a.path, i) >= 2) return 0;
  }
}

function byPrecedence(a: RouteSpec, b: RouteSpec): number {
  const conditions = (r: RouteSpec) => (r.headers?.length ?? 0) + (r.query?.length ?? 0);
  return (
    bySpecificity(a, b) ||
    Number((b.methods?.length ?? 0) > 0) - Number((a.methods?.length ?? 0) > 0) ||
    conditions(b) - conditions(a) ||
    (a.name < b.name ? -1 : a.name > b.name ? 1 : 0)
  );
}

function holds(c: Condition, value: string | undefined): boolean {
  switch (c.kind) {
    case "exact":
      return value === (c.value ?? "");
    case "prefix":
      return value !== undefined && value.startsWith(c.value ?? "");
    case "regex":
      return value !== undefined && new RegExp(`^(?:${c.value ?? ""})$`).test(value);
    case "present":
      return value !== undefined;
    case "absent":
      return value === undefined;
  }
}

/** The host classes a request's host belongs to, best first: exact, wildcard suffixes longest first, none. */
function hostClasses(routes: readonly RouteSpec[], host: string): ((r: RouteSpec) => boolean)[] {
  const suffixes = [
    ...new Set(
      routes.flatMap((r) => (r.hosts ?? []).filter((h) => h.startsWith("*.")).map((h) => h.slice(1))),
    ),
  ]
    .filter((s) => host.endsWith(s) && host.length > s.length)
    .sort((a, b) => b.length - a.length);
  return [
    (r) => (r.hosts ?? []).includes(host),
    ...suffixes.map((s) => (r: RouteSpec) => (r.hosts ?? []).includes(`*${s}`)),
    (r) => (r.hosts ?? []).length === 0,
  ];
}

function reference(routes: readonly RouteSpec[], req: Request): Outcome {
  const allow = new Set<string>();
  const params = new URLSearchParams(req.query);
  for (const inClass of hostClasses(routes, req.host)) {
    const candidates = routes
      .filter(inClass)
      .map((r) => ({ r, captures: referenceMatch(r.path, req.path) }))
      .filter((c) => c.captures !== null)
      .sort((a, b) => byPrecedence(a.r, b.r));
    for (const { r, captures } of candidates) {
      if (!(r.headers ?? []).every((c) => holds(c, req.headers[c.name.toLowerCase()]))) continue;
      if (!(r.query ?? []).every((c) => holds(c, params.get(c.name) ?? undefined))) continue;
      const methods = r.methods ?? [];
      if (methods.length > 0 && !methods.includes(req.method as HttpMethod)) {
        for (const m of methods) allow.add(m);
        continue;
      }
      return { kind: "matched", name: r.name, captures: captures! };
    }
  }
  if (allow.size > 0) return { kind: "method-not-allowed", allow: [...allow].sort() };
  return { kind: "no-route" };
}

// ---- Random tables and requests: a small alphabet, so that prefixes are shared and patterns overlap ----

const LITERALS = ["a", "b", "ab", "ba", "7yzla", "e6apa"];
const SEGMENTS = [...LITERALS, "", "c", "é", "a".repeat(40)];
const METHODS: HttpMethod[] = ["GET", "POST", "PUT", "DELETE"];
const ROUTE_HOSTS = ["api.example", "t.example", "*.t.example", "*.a.t.example"];
const REQUEST_HOSTS = [
  "api.example",
  "t.example",
  "x.t.example",
  "x.a.t.example",
  "a.t.example",
  "other.example",
];

const conditionArb = (names: readonly string[]): fc.Arbitrary<Condition> =>
  fc.oneof(
    fc.record({
      name: fc.constantFrom(...names),
      kind: fc.constantFrom("exact" as const, "prefix" as const),
      value: fc.constantFrom("1", "12", "x"),
    }),
    fc.record({
      name: fc.constantFrom(...names),
      kind: fc.constant("regex" as const),
      value: fc.constant("1+|x"),
    }),
    fc.record({
      name: fc.constantFrom(...names),
      kind: fc.constantFrom("present" as const, "absent" as const),
      value: fc.constant(null),
    }),
  );

const patternArb: fc.Arbitrary<string> = fc
  .tuple(
    fc.array(fc.oneof({ weight: 4, arbitrary: fc.constantFrom(...LITERALS) }, fc.constantFrom("*", "{p}")), {
      maxLength: 4,
    }),
    fc.boolean(),
  )
  .map(([segs, rest]) => {
    let n = 0;
    const all = segs.map((s) => (s === "{p}" ? `{p${n++}}` : s));
    if (rest) all.push("**");
    return `/${all.join("/")}`;
  });

const routeArb = fc.record({
  path: patternArb,
  methods: fc.oneof(fc.constant([]), fc.subarray(METHODS, { minLength: 1 })),
  hosts: fc.oneof({ weight: 3, arbitrary: fc.constant([]) }, fc.subarray(ROUTE_HOSTS, { minLength: 1 })),
  headers: fc.oneof(
    { weight: 3, arbitrary: fc.constant([]) },
    fc.array(conditionArb(["X-A", "x-b"]), { maxLength: 2 }),
  ),
  query: fc.oneof({ weight: 4, arbitrary: fc.constant([]) }, fc.array(conditionArb(["v"]), { maxLength: 1 })),
});

/** Tables of up to 40 routes with unique names in a random order (the name breaks ties). */
const tableArb: fc.Arbitrary<RouteSpec[]> = fc
  .array(fc.tuple(routeArb, fc.nat(99)), { maxLength: 40 })
  .map((rs) => rs.map(([r, k], i) => ({ ...r, name: `r${k}-${i}` })));

const requestArb: fc.Arbitrary<Request> = fc.record({
  host: fc.constantFrom(...REQUEST_HOSTS),
  method: fc.constantFrom("GET", "POST", "PUT", "DELETE", "PATCH", "FOO"),
  path: fc
    .array(fc.constantFrom(...SEGMENTS), { maxLength: 5 })
    .map((segs) => (segs.length === 0 ? "/" : `/${segs.join("/")}`)),
  query: fc.constantFrom("", "v=1", "v=12", "v=x", "w=1"),
  headers: fc.record(
    { "x-a": fc.constantFrom("1", "11", "12", "x"), "x-b": fc.constantFrom("1", "x") },
    { requiredKeys: [] },
  ),
});

describe("Router against the reference matcher", () => {
  it("fixture_routes_satisfy_the_contract", () => {
    const route = gatewayRoute({
      name: "r",
      path: "/a/{p0}/**",
      methods: ["GET"],
      hosts: ["*.t.example"],
      headers: [{ name: "x-a", kind: "prefix", value: "1" }],
    });
    expect(GatewayRoute.parse(route)).toEqual(route);
  });

  it("agrees_on_random_tables_and_requests", () => {
    const seen = new Map<string, number>();
    fc.assert(
      fc.property(tableArb, fc.array(requestArb, { minLength: 1, maxLength: 20 }), (routes, requests) => {
        const router = new Router(routes.map(gatewayRoute));
        for (const req of requests) {
          const expected = reference(routes, req);
          seen.set(expected.kind, (seen.get(expected.kind) ?? 0) + 1);
          expect(viaRouter(router, req)).toEqual(expected);
        }
      }),
      { numRuns: 600 },
    );
    // The generators reach every outcome often (the property is not checked on 404s alone).
    for (const kind of ["matched", "method-not-allowed", "no-route"])
      expect(seen.get(kind) ?? 0, kind).toBeGreaterThan(200);
  });

  it("agrees_whatever_the_declaration_order", () => {
    const shuffledArb = tableArb.chain((t) =>
      fc.tuple(fc.constant(t), fc.shuffledSubarray(t, { minLength: t.length, maxLength: t.length })),
    );
    fc.assert(
      fc.property(shuffledArb, requestArb, ([routes, shuffled], req) => {
        const a = viaRouter(new Router(routes.map(gatewayRoute)), req);
        expect(viaRouter(new Router(shuffled.map(gatewayRoute)), req)).toEqual(a);
      }),
      { numRuns: 300 },
    );
  });
});

describe("Router edge cases", () => {
  // Pairs of distinct segments with the same segmentHash: a hash-table hit must still compare the text.
  const COLLIDING: [string, string][] = [
    ["7yzla", "e6apa"],
    ["gwzla", "16cpa"],
    ["e6vda", "7yepa"],
  ];

  it.each(COLLIDING)("segments_%s_and_%s_have_the_same_hash", (a, b) => {
    expect(a).not.toBe(b);
    expect(segmentHash(a, 0, a.length)).toBe(segmentHash(b, 0, b.length));
  });

  const get = (path: string, host = "h.example", method = "GET"): Request => ({
    host,
    method,
    path,
    query: "",
    headers: {},
  });

  const CASES: [claim: string, routes: RouteSpec[], request: Request, expected: Outcome][] = [
    [
      "a_colliding_segment_does_not_reach_its_twin_route",
      [
        { name: "x", path: "/api/7yzla" },
        { name: "other", path: "/api/other" },
      ],
      get("/api/e6apa"),
      { kind: "no-route" },
    ],
    [
      "colliding_siblings_each_reach_their_own_route",
      [
        { name: "x", path: "/api/7yzla/x" },
        { name: "y", path: "/api/e6apa/y" },
        { name: "z", path: "/api/gwzla" },
        { name: "w", path: "/api/16cpa" },
      ],
      get("/api/e6apa/y"),
      { kind: "matched", name: "y", captures: [] },
    ],
    [
      "a_colliding_single_child_is_compared_inline",
      [{ name: "x", path: "/7yzla" }],
      get("/e6apa"),
      { kind: "no-route" },
    ],
    [
      "a_colliding_segment_falls_back_to_the_wildcard",
      [
        { name: "x", path: "/api/7yzla" },
        { name: "w", path: "/api/gwzla" },
        { name: "any", path: "/api/{id}" },
      ],
      get("/api/e6apa"),
      { kind: "matched", name: "any", captures: ["e6apa"] },
    ],
    [
      "root_matches_root_only",
      [{ name: "root", path: "/" }],
      get("/"),
      { kind: "matched", name: "root", captures: [] },
    ],
    ["root_does_not_match_an_empty_segment", [{ name: "root", path: "/" }], get("//"), { kind: "no-route" }],
    [
      "a_param_never_matches_an_empty_segment",
      [{ name: "p", path: "/a/{id}" }],
      get("/a/"),
      { kind: "no-route" },
    ],
    [
      "a_star_never_matches_an_empty_segment",
      [{ name: "s", path: "/a/*" }],
      get("/a/"),
      { kind: "no-route" },
    ],
    [
      "rest_matches_zero_segments",
      [{ name: "rest", path: "/a/**" }],
      get("/a"),
      { kind: "matched", name: "rest", captures: [] },
    ],
    [
      "rest_matches_a_trailing_empty_segment",
      [
        { name: "rest", path: "/a/**" },
        { name: "a", path: "/a" },
      ],
      get("/a/"),
      { kind: "matched", name: "rest", captures: [] },
    ],
    [
      "root_rest_matches_root",
      [{ name: "all", path: "/**" }],
      get("/"),
      { kind: "matched", name: "all", captures: [] },
    ],
    [
      "a_literal_does_not_match_with_a_trailing_slash",
      [{ name: "a", path: "/a" }],
      get("/a/"),
      { kind: "no-route" },
    ],
    [
      "empty_inner_segments_skip_params_and_reach_rest",
      [
        { name: "p", path: "/a/{x}/b" },
        { name: "rest", path: "/a/**" },
      ],
      get("/a//b"),
      { kind: "matched", name: "rest", captures: [] },
    ],
    [
      "a_very_long_literal_matches_exactly",
      [
        { name: "long", path: `/${"x".repeat(5000)}` },
        { name: "other", path: "/y" },
      ],
      get(`/${"x".repeat(5000)}`),
      { kind: "matched", name: "long", captures: [] },
    ],
    [
      "a_very_long_segment_differing_in_its_last_char_does_not_match",
      [
        { name: "long", path: `/${"x".repeat(5000)}` },
        { name: "other", path: "/y" },
      ],
      get(`/${"x".repeat(4999)}z`),
      { kind: "no-route" },
    ],
    [
      "a_very_long_segment_is_captured_whole",
      [{ name: "p", path: "/a/{id}" }],
      get(`/a/${"z".repeat(70_000)}`),
      { kind: "matched", name: "p", captures: ["z".repeat(70_000)] },
    ],
    [
      "a_non_ascii_segment_is_captured_and_matches_no_literal",
      [
        { name: "lit", path: "/a/e" },
        { name: "lit2", path: "/a/f" },
        { name: "p", path: "/a/{id}" },
      ],
      get("/a/é"),
      { kind: "matched", name: "p", captures: ["é"] },
    ],
    [
      // U+0165 and "e" (U+0065) agree in their low byte: the comparison uses whole code units.
      "a_segment_equal_to_a_literal_in_low_bytes_only_does_not_match",
      [{ name: "lit", path: "/a/e" }],
      get("/a/ť"),
      { kind: "no-route" },
    ],
    [
      "a_surrogate_pair_segment_is_captured",
      [{ name: "p", path: "/{id}/x" }],
      get("/😀/x"),
      { kind: "matched", name: "p", captures: ["😀"] },
    ],
    [
      "method_refusals_collect_allow_across_patterns_and_hosts",
      [
        { name: "get", path: "/a/{id}", methods: ["GET"], hosts: ["h.example"] },
        { name: "put", path: "/a/b", methods: ["PUT", "DELETE"] },
        { name: "post", path: "/a/**", methods: ["POST"], hosts: ["*.example"] },
        { name: "other", path: "/c", methods: ["PATCH"] },
      ],
      get("/a/b", "h.example", "OPTIONS"),
      { kind: "method-not-allowed", allow: ["DELETE", "GET", "POST", "PUT"] },
    ],
    [
      // Only a config that bypassed the contract names such a method; Allow still lists it.
      "allow_lists_a_method_outside_the_contract",
      [
        { name: "odd", path: "/a", methods: ["GET", "PURGE" as HttpMethod] },
        { name: "del", path: "/a", methods: ["DELETE"] },
      ],
      get("/a", "h.example", "POST"),
      { kind: "method-not-allowed", allow: ["DELETE", "GET", "PURGE"] },
    ],
    [
      "an_exact_host_beats_a_more_specific_path_without_host",
      [
        { name: "hosted", path: "/**", hosts: ["h.example"] },
        { name: "literal", path: "/a/b" },
      ],
      get("/a/b"),
      { kind: "matched", name: "hosted", captures: [] },
    ],
    [
      "a_longer_wildcard_suffix_wins",
      [
        { name: "short", path: "/a", hosts: ["*.example"] },
        { name: "long", path: "/**", hosts: ["*.h.example"] },
      ],
      get("/a", "x.h.example"),
      { kind: "matched", name: "long", captures: [] },
    ],
    [
      "a_wildcard_host_does_not_match_its_bare_suffix",
      [{ name: "w", path: "/a", hosts: ["*.h.example"] }],
      get("/a", "h.example"),
      { kind: "no-route" },
    ],
    [
      "a_failed_literal_branch_leaves_no_captures_behind",
      [
        { name: "deep", path: "/{a}/x/{b}/y" },
        { name: "other", path: "/{a}/x/{b}/z/{c}" },
        { name: "wide", path: "/*/*/*/q" },
      ],
      get("/1/x/2/q"),
      { kind: "matched", name: "wide", captures: ["1", "x", "2"] },
    ],
  ];

  it.each(CASES)("%s", (_claim, routes, req, expected) => {
    expect(reference(routes, req)).toEqual(expected);
    expect(viaRouter(new Router(routes.map(gatewayRoute)), req)).toEqual(expected);
  });

  it.each([
    ["a_nested_quantifier", "(a+)+", "a".repeat(25) + "!"],
    ["an_ambiguous_alternation", "(a|a)*b", "a".repeat(24)],
  ])("matches_a_hostile_header_value_against_%s_in_linear_time", (_claim, regex, value) => {
    // A backtracking engine takes exponential time on these: 1.4 s and 0.8 s here (a few characters more
    // and it never ends); the linear engine well under a millisecond.
    const router = new Router([
      gatewayRoute({ name: "r", path: "/x", headers: [{ name: "x-t", kind: "regex", value: regex }] }),
    ]);
    const t = performance.now();
    expect(outcome(router.match("h.example", query({ ...get("/x"), headers: { "x-t": value } })))).toEqual({
      kind: "no-route",
    });
    expect(performance.now() - t).toBeLessThan(250);
  });

  it.each(["(a)\\1", "a(?=b)"])("refuses_%s_which_only_a_backtracking_engine_can_run", (regex) => {
    expect(
      () =>
        new Router([
          gatewayRoute({ name: "r", path: "/x", headers: [{ name: "x-t", kind: "regex", value: regex }] }),
        ]),
    ).toThrow(/linear/);
  });

  it("a_wide_node_finds_every_child_among_thousands", () => {
    // 5,000 siblings under one node (the hash table's probe chains and collisions), each with its route.
    const routes: RouteSpec[] = Array.from({ length: 5000 }, (_, i) => ({ name: `s${i}`, path: `/w/s${i}` }));
    routes.push(...COLLIDING.flat().map((seg) => ({ name: `c-${seg}`, path: `/w/${seg}` })));
    const router = new Router(routes.map(gatewayRoute));
    for (const r of routes)
      expect(viaRouter(router, get(r.path))).toEqual({ kind: "matched", name: r.name, captures: [] });
    for (const miss of ["/w/s5000", "/w/s", "/w/", "/w/s12/", "/w/S1", "/w/7yzl", "/w/7yzlaa"])
      expect(viaRouter(router, get(miss)), miss).toEqual({ kind: "no-route" });
  });

  it("agrees_on_a_10000_route_table", () => {
    // The bench's shapes: ten routes per resource group, 1,000 groups, over hosts and wildcard hosts.
    const routes: RouteSpec[] = [];
    for (let g = 0; g < 1000; g++) {
      const base = `/api/v${1 + (g % 2)}/r${g}`;
      routes.push(
        { name: `r${g}-s0`, path: `${base}/items`, methods: ["GET", "HEAD"] },
        { name: `r${g}-s1`, path: `${base}/items`, methods: ["POST"] },
        { name: `r${g}-s2`, path: `${base}/items/{id}`, methods: ["GET", "HEAD"] },
        { name: `r${g}-s3`, path: `${base}/items/{id}`, methods: ["PUT", "DELETE"] },
        { name: `r${g}-s4`, path: `${base}/items/{id}/reviews/{rid}` },
        { name: `r${g}-s5`, path: `${base}/*/status`, methods: ["GET"] },
        { name: `r${g}-s6`, path: `/static/r${g}/**` },
        { name: `r${g}-s7`, path: `${base}/search`, methods: ["GET"], hosts: ["api.example"] },
        { name: `r${g}-s8`, path: `/t/r${g}/{tenant}/**`, hosts: ["*.t.example"] },
        { name: `r${g}-s9`, path: `${base}/items/{id}/files/**`, methods: ["GET"] },
      );
    }
    const router = new Router(routes.map(gatewayRoute));
    expect(router.routes.length).toBe(10_000);
    const kinds = new Map<string, number>();
    fc.assert(
      fc.property(
        fc.nat(1199),
        fc.constantFrom(
          "/items",
          "/items/7",
          "/items/7/reviews/1",
          "/jobs/status",
          "/search",
          "/items/7/files/a/b",
          "/x",
        ),
        fc.constantFrom("static", "t", "api"),
        fc.constantFrom("GET", "POST", "PUT", "DELETE"),
        fc.constantFrom("h.example", "api.example", "x.t.example"),
        (g, tail, kind, method, host) => {
          const path =
            kind === "static"
              ? `/static/r${g}${tail}`
              : kind === "t"
                ? `/t/r${g}${tail}`
                : `/api/v${1 + (g % 2)}/r${g}${tail}`;
          const req: Request = { host, method, path, query: "", headers: {} };
          const expected = reference(routes, req);
          kinds.set(expected.kind, (kinds.get(expected.kind) ?? 0) + 1);
          expect(viaRouter(router, req)).toEqual(expected);
        },
      ),
      { numRuns: 400 },
    );
    for (const kind of ["matched", "method-not-allowed", "no-route"])
      expect(kinds.get(kind) ?? 0).toBeGreaterThan(20);
  });
});
