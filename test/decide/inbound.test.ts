/**
 * decideInbound(): the sidecar's deny-by-default authorization, on configs translated from specs (so the
 * tests exercise the real contract). Tables of allowed and denied requests with their codes, the
 * canonical path as the authorized (and forwarded) path, and fast-check properties: removing a rule never
 * turns a deny into an allow, an unlisted peer is always denied, adding a rule never turns an allow into
 * a deny, and matchPath agrees with the Router on every pattern.
 */
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import type {
  AuthzRule,
  GatewayRoute,
  HttpMethod,
  SidecarRuntimeConfig,
} from "../../runtime/contract/index.ts";
import {
  compileInbound,
  decideInbound,
  INBOUND_DENY_CODES,
  type InboundDecision,
} from "../../runtime/decide/inbound.ts";
import { isPatternError, matchPath, parsePathPattern } from "../../runtime/decide/pattern.ts";
import { Router } from "../../runtime/decide/router.ts";
import { parseSpec } from "../../components/spec/parse.ts";
import { translate } from "../../components/translate/translate.ts";

const TD = "shop.example";
const id = (sa: string) => `spiffe://${TD}/ns/shop/sa/${sa}`;

function ordersSidecar(): SidecarRuntimeConfig {
  const r = parseSpec({
    name: "shop",
    trustDomain: TD,
    services: {
      orders: {
        image: "r/orders:1",
        port: 8080,
        allow: [
          { from: ["gateway"], methods: ["GET", "POST"], paths: ["/orders", "/orders/*"] },
          { from: ["web"], methods: ["GET"], paths: ["/orders/{id}/status"] },
          { from: ["billing"], paths: ["/internal/**"] },
          { from: ["admin"] },
        ],
      },
      web: { image: "r/web:1", port: 8080, calls: ["orders"] },
      billing: { image: "r/billing:1", port: 8080, calls: ["orders"] },
      admin: { image: "r/admin:1", port: 8080, calls: ["orders"] },
      stranger: { image: "r/stranger:1", port: 8080 },
    },
    gateway: {
      hosts: ["api.shop.example"],
      routes: [
        {
          name: "o",
          match: { path: "/api/**" },
          to: "orders",
          public: true,
          rateLimit: { requests: 1, per: "1s" },
        },
      ],
    },
  });
  if (!r.ok) throw new Error(r.errors.map((e) => `${e.path}: ${e.message}`).join("\n"));
  return translate(r.spec).runtime.sidecars.find((s) => s.name === "orders")!;
}

const compiled = compileInbound(ordersSidecar().inbound.authz);
const decide = (peer: string | null, method: string, target: string, host: string | undefined = "orders") =>
  decideInbound(compiled, { peer, method, target, host });
const verdict = (d: InboundDecision) => (d.kind === "allow" ? `allow ${d.source}` : `${d.status} ${d.code}`);

describe("decideInbound", () => {
  it.each([
    ["allows_gateway_get_on_listed_path", id("gateway"), "GET", "/orders", "allow services.orders.allow[0]"],
    [
      "allows_gateway_post_one_segment_below",
      id("gateway"),
      "POST",
      "/orders/42",
      "allow services.orders.allow[0]",
    ],
    ["allows_param_pattern", id("web"), "GET", "/orders/42/status", "allow services.orders.allow[1]"],
    [
      "allows_rest_pattern_at_any_depth",
      id("billing"),
      "DELETE",
      "/internal/a/b/c",
      "allow services.orders.allow[2]",
    ],
    [
      "allows_rest_pattern_with_zero_segments",
      id("billing"),
      "GET",
      "/internal",
      "allow services.orders.allow[2]",
    ],
    [
      "allows_rule_without_methods_or_paths",
      id("admin"),
      "PATCH",
      "/anything?x=1",
      "allow services.orders.allow[3]",
    ],
    ["denies_unlisted_peer", id("stranger"), "GET", "/orders", "403 peer_not_allowed"],
    [
      "denies_peer_of_another_trust_domain",
      "spiffe://evil.example/ns/shop/sa/gateway",
      "GET",
      "/orders",
      "403 peer_not_allowed",
    ],
    ["denies_plaintext_request", null, "GET", "/orders", "403 no_peer_identity"],
    ["denies_unlisted_method", id("gateway"), "DELETE", "/orders", "403 method_not_allowed"],
    [
      "denies_method_outside_every_rule_of_peer",
      id("web"),
      "POST",
      "/orders/42/status",
      "403 method_not_allowed",
    ],
    ["denies_unlisted_path", id("gateway"), "GET", "/orders/42/items", "403 path_not_allowed"],
    ["denies_star_on_empty_segment", id("gateway"), "GET", "/orders/", "403 path_not_allowed"],
    ["denies_prefix_that_is_not_a_segment", id("billing"), "GET", "/internals", "403 path_not_allowed"],
    [
      "authorizes_the_canonical_path_after_dot_segments",
      id("gateway"),
      "GET",
      "/internal/../orders/7",
      "allow services.orders.allow[0]",
    ],
    [
      "denies_dot_segment_escape_to_unlisted_path",
      id("gateway"),
      "GET",
      "/orders/../internal/x",
      "403 path_not_allowed",
    ],
    [
      "decodes_unreserved_escapes_before_matching",
      id("gateway"),
      "GET",
      "/%6Frders",
      "allow services.orders.allow[0]",
    ],
    ["refuses_encoded_slash_with_400", id("gateway"), "GET", "/orders%2F42", "400 bad_request_target"],
    [
      "refuses_dot_segment_above_root_with_400",
      id("admin"),
      "GET",
      "/../etc/passwd",
      "400 bad_request_target",
    ],
    ["refuses_fragment_with_400", id("admin"), "GET", "/orders#x", "400 bad_request_target"],
    ["refuses_target_before_looking_at_peer", null, "GET", "/a%00", "400 bad_request_target"],
  ])("%s", (_claim, peer, method, target, expected) => {
    expect(verdict(decide(peer, method, target))).toBe(expected);
  });

  it("refuses_a_malformed_host_with_400", () => {
    expect(verdict(decide(id("admin"), "GET", "/", "bad host"))).toBe("400 bad_host");
    const noHost = (target: string) =>
      decideInbound(compiled, { peer: id("admin"), method: "GET", target, host: undefined });
    expect(verdict(noHost("/"))).toBe("400 bad_host");
    expect(verdict(noHost("http://orders/x"))).toBe("allow services.orders.allow[3]");
  });

  it("forwards_the_canonical_path_it_authorized", () => {
    const d = decide(id("gateway"), "GET", "//orders/./%34%32?b=1&a=2");
    expect(d).toMatchObject({
      kind: "allow",
      path: "/orders/42",
      query: "b=1&a=2",
      upstreamTarget: "/orders/42?b=1&a=2",
    });
  });

  it("names_the_canonicalization_rule_of_a_refused_target", () => {
    expect(decide(id("gateway"), "GET", "/a%2fb")).toMatchObject({
      code: "bad_request_target",
      targetReason: "encoded_slash",
    });
  });

  it("lists_every_deny_code_it_returns", () => {
    for (const [peer, target, host] of [
      [null, "/x", "h"],
      [id("stranger"), "/x", "h"],
      [id("gateway"), "/x", "h"],
      [id("gateway"), "%", "h"],
      [id("gateway"), "/orders", ""],
    ] as const) {
      const d = decide(peer, "DELETE", target, host);
      if (d.kind === "deny") expect(INBOUND_DENY_CODES).toContain(d.code);
    }
  });

  it("rejects_a_malformed_rule_pattern_naming_the_rule", () => {
    expect(() =>
      compileInbound({
        default: "deny",
        rules: [{ source: "services.x.allow[3]", from: [id("a")], methods: [], paths: ["/a//b"] }],
      }),
    ).toThrow(/services\.x\.allow\[3\]\.paths\[0\]/);
  });
});

// ───────────── properties ─────────────

const PEERS = ["a", "b", "c", "d"].map(id);
const METHODS: HttpMethod[] = ["GET", "POST", "PUT", "DELETE"];
const SEGMENTS = ["x", "y", "z"];

const patternArb = fc
  .tuple(fc.array(fc.constantFrom("x", "y", "*", "{p}"), { maxLength: 3 }), fc.boolean())
  .map(([segs, rest]) => {
    const named = segs.map((s, i) => (s === "{p}" ? `{p${i}}` : s));
    const all = rest ? [...named, "**"] : named;
    return all.length === 0 ? "/" : `/${all.join("/")}`;
  });

const ruleArb = (i: number) =>
  fc
    .record({
      from: fc.uniqueArray(fc.constantFrom(...PEERS), { minLength: 1, maxLength: 3 }),
      methods: fc.uniqueArray(fc.constantFrom(...METHODS), { maxLength: 2 }),
      paths: fc.uniqueArray(patternArb, { maxLength: 2 }),
    })
    .map((r): AuthzRule => ({ source: `services.s.allow[${i}]`, ...r }));

const rulesArb = fc
  .integer({ min: 0, max: 5 })
  .chain((n) => fc.tuple(...Array.from({ length: n }, (_, i) => ruleArb(i))));

const pathArb = fc
  .array(fc.constantFrom(...SEGMENTS, ""), { maxLength: 4 })
  .map((segs) => `/${segs.join("/")}`);

const requestArb = fc.record({
  peer: fc.option(fc.constantFrom(...PEERS, id("unlisted")), { nil: null }),
  method: fc.constantFrom(...METHODS, "PATCH"),
  target: pathArb,
});

const authz = (rules: readonly AuthzRule[]) => compileInbound({ default: "deny", rules: [...rules] });

describe("decideInbound properties", () => {
  it("removing_a_rule_never_turns_a_deny_into_an_allow", () => {
    let flipped = 0; // allows that the removal turned into denies: the property is not vacuous
    fc.assert(
      fc.property(rulesArb, fc.nat(), requestArb, (rules, k, req) => {
        const full = decideInbound(authz(rules), { ...req, host: "s" });
        if (rules.length === 0) return;
        const fewer = rules.filter((_, i) => i !== k % rules.length);
        const less = decideInbound(authz(fewer), { ...req, host: "s" });
        if (full.kind === "deny") expect(less.kind).toBe("deny");
        else if (less.kind === "deny") flipped++;
      }),
      { numRuns: 2000 },
    );
    expect(flipped).toBeGreaterThan(20);
  });

  it("adding_a_rule_never_turns_an_allow_into_a_deny", () => {
    fc.assert(
      fc.property(rulesArb, ruleArb(9), requestArb, (rules, extra, req) => {
        const before = decideInbound(authz(rules), { ...req, host: "s" });
        const after = decideInbound(authz([...rules, extra]), { ...req, host: "s" });
        if (before.kind === "allow") expect(after).toEqual(before);
      }),
      { numRuns: 2000 },
    );
  });

  it("an_unlisted_peer_is_always_denied", () => {
    fc.assert(
      fc.property(rulesArb, requestArb, (rules, req) => {
        const listed = new Set(rules.flatMap((r) => r.from));
        const d = decideInbound(authz(rules), { ...req, host: "s" });
        if (req.peer === null || !listed.has(req.peer)) expect(d.kind).toBe("deny");
      }),
      { numRuns: 2000 },
    );
  });

  it("an_allow_names_a_rule_that_lists_peer_method_and_path", () => {
    let allowed = 0;
    fc.assert(
      fc.property(rulesArb, requestArb, (rules, req) => {
        const d = decideInbound(authz(rules), { ...req, host: "s" });
        if (d.kind !== "allow") return;
        allowed++;
        const rule = rules.find((r) => r.source === d.source)!;
        expect(rule.from).toContain(req.peer);
        if (rule.methods.length > 0) expect(rule.methods).toContain(req.method);
        if (rule.paths.length > 0)
          expect(rule.paths.some((p) => matchPath(parsePathPattern(p) as never, d.path))).toBe(true);
      }),
      { numRuns: 2000 },
    );
    expect(allowed).toBeGreaterThan(100);
  });

  it("match_path_agrees_with_the_router", () => {
    const route = (path: string): GatewayRoute =>
      ({
        name: "r",
        match: { path, methods: [], hosts: [], headers: [], query: [] },
        action: { kind: "redirect", status: 301, scheme: null, host: null, port: null, path: null },
      }) as unknown as GatewayRoute;
    fc.assert(
      fc.property(patternArb, pathArb, (pattern, path) => {
        const parsed = parsePathPattern(pattern);
        if (isPatternError(parsed)) throw new Error(parsed.error);
        const router = new Router([route(pattern)]);
        const viaRouter =
          router.match("h", { method: "GET", path, query: "", headers: { header: () => undefined } }).kind ===
          "matched";
        expect(matchPath(parsed, path)).toBe(viaRouter);
      }),
      { numRuns: 3000 },
    );
  });
});

describe("decideInbound in permissive mode", () => {
  const permissive = compileInbound(ordersSidecar().inbound.authz, { permissive: true });
  const plain = (method: string, target: string) =>
    verdict(decideInbound(permissive, { peer: null, method, target, host: "orders" }));

  it.each([
    ["authorizes_plaintext_by_the_rules_paths", "GET", "/orders/1", "allow services.orders.allow[0]"],
    ["authorizes_plaintext_by_a_rule_without_paths", "PATCH", "/anything", "allow services.orders.allow[3]"],
  ])("%s", (_claim, method, target, expected) => {
    expect(plain(method, target)).toBe(expected);
  });

  it("still_authorizes_mtls_peers_by_identity", () => {
    expect(
      verdict(
        decideInbound(permissive, { peer: id("stranger"), method: "GET", target: "/orders", host: "o" }),
      ),
    ).toBe("403 peer_not_allowed");
  });

  it("denies_plaintext_when_no_rule_exists", () => {
    const none = compileInbound({ default: "deny", rules: [] }, { permissive: true });
    expect(verdict(decideInbound(none, { peer: null, method: "GET", target: "/", host: "o" }))).toBe(
      "403 no_peer_identity",
    );
  });

  it("plaintext_is_allowed_only_where_some_peer_is_allowed", () => {
    fc.assert(
      fc.property(rulesArb, requestArb, (rules, req) => {
        const c = compileInbound({ default: "deny", rules: [...rules] }, { permissive: true });
        const d = decideInbound(c, { ...req, peer: null, host: "s" });
        if (d.kind !== "allow") return;
        const someone = PEERS.some(
          (p) => decideInbound(authz(rules), { ...req, peer: p, host: "s" }).kind === "allow",
        );
        expect(someone).toBe(true);
      }),
      { numRuns: 1000 },
    );
  });
});
