/**
 * authorize() (runtime/decide/authorize.ts): the pure authorization decision. A table of claims (401 vs
 * 403, each requirement kind, per-mechanism applicability), CIDR parsing and matching checked against
 * Node's own BlockList as an independent reference, fast-check properties (adding a requirement never turns
 * a deny into an allow; authorize never throws), and decideAndAuthorize() on a translated config.
 */
import fc from "fast-check";
import { BlockList, isIP } from "node:net";
import { describe, expect, it } from "vitest";
import type { RouteAuth } from "../../runtime/contract/index.ts";
import {
  authorize,
  compileGateway,
  compileRouteAuth,
  decideAndAuthorize,
  inRanges,
  parseCidr,
  type Principal,
} from "../../runtime/decide/index.ts";
import { parseSpec } from "../../components/spec/parse.ts";
import { translate } from "../../components/translate/translate.ts";

const auth = (over: Partial<RouteAuth> = {}): RouteAuth => ({
  public: false,
  anyOf: [
    { kind: "jwt", provider: "main" },
    { kind: "apiKey" },
    { kind: "clientCert", provider: "partners" },
  ],
  scopes: [],
  claims: [],
  consumers: [],
  groups: [],
  clientIps: [],
  ...over,
});

const jwt = (over: Partial<Principal> = {}): Principal => ({
  mechanism: "jwt",
  provider: "main",
  subject: "alice",
  consumer: null,
  groups: [],
  scopes: ["orders:read"],
  claims: { sub: "alice", tenant: "acme", roles: ["admin", "ops"], level: 3, realm_access: { roles: ["x"] } },
  expiresAt: null,
  ...over,
});
const key = (consumer: string, groups: string[] = []): Principal => ({
  mechanism: "apiKey",
  provider: "apiKeys",
  subject: consumer,
  consumer,
  groups,
  scopes: [],
  claims: {},
  expiresAt: null,
});
const cert: Principal = {
  mechanism: "clientCert",
  provider: "partners",
  subject: "CN=partner-a",
  consumer: null,
  groups: [],
  scopes: [],
  claims: {},
  expiresAt: null,
};

type Want = "allow" | `401 ${string}` | `403 ${string}`;
const rows: [string, RouteAuth, Principal | null, string, Want][] = [
  ["allows_public_route_without_principal", auth({ public: true, anyOf: [] }), null, "10.0.0.1", "allow"],
  [
    "denies_public_route_outside_its_client_ranges",
    auth({ public: true, anyOf: [], clientIps: ["192.168.0.0/16"] }),
    null,
    "10.0.0.1",
    "403 client_ip",
  ],
  ["denies_missing_principal_with_401", auth(), null, "10.0.0.1", "401 authentication"],
  ["allows_jwt_principal_without_requirements", auth(), jwt(), "10.0.0.1", "allow"],
  [
    "denies_principal_of_another_jwt_provider_with_401",
    auth(),
    jwt({ provider: "other" }),
    "10.0.0.1",
    "401 mechanism",
  ],
  [
    "denies_api_key_principal_on_jwt_only_route_with_401",
    auth({ anyOf: [{ kind: "jwt", provider: "main" }] }),
    key("shop"),
    "10.0.0.1",
    "401 mechanism",
  ],
  [
    "denies_oidc_principal_on_route_without_that_provider",
    auth(),
    jwt({ mechanism: "oidc", provider: "main" }),
    "10.0.0.1",
    "401 mechanism",
  ],
  ["allows_granted_scope", auth({ scopes: ["orders:read"] }), jwt(), "10.0.0.1", "allow"],
  ["denies_missing_scope_with_403", auth({ scopes: ["orders:write"] }), jwt(), "10.0.0.1", "403 scope"],
  [
    "denies_when_one_of_two_scopes_is_missing",
    auth({ scopes: ["orders:read", "orders:write"] }),
    jwt(),
    "10.0.0.1",
    "403 scope",
  ],
  [
    "allows_claim_with_accepted_string_value",
    auth({ claims: [{ name: "tenant", values: ["acme", "globex"] }] }),
    jwt(),
    "10.0.0.1",
    "allow",
  ],
  [
    "denies_claim_with_other_value",
    auth({ claims: [{ name: "tenant", values: ["globex"] }] }),
    jwt(),
    "10.0.0.1",
    "403 claim",
  ],
  [
    "denies_absent_claim",
    auth({ claims: [{ name: "department", values: ["it"] }] }),
    jwt(),
    "10.0.0.1",
    "403 claim",
  ],
  [
    "allows_array_claim_holding_an_accepted_element",
    auth({ claims: [{ name: "roles", values: ["ops"] }] }),
    jwt(),
    "10.0.0.1",
    "allow",
  ],
  [
    "allows_numeric_claim_by_its_string_form",
    auth({ claims: [{ name: "level", values: ["3"] }] }),
    jwt(),
    "10.0.0.1",
    "allow",
  ],
  [
    "allows_nested_claim_by_dotted_path",
    auth({ claims: [{ name: "realm_access.roles", values: ["x"] }] }),
    jwt(),
    "10.0.0.1",
    "allow",
  ],
  [
    "denies_object_claim_value",
    auth({ claims: [{ name: "realm_access", values: ["[object Object]"] }] }),
    jwt(),
    "10.0.0.1",
    "403 claim",
  ],
  [
    "applies_scopes_to_oidc_sessions",
    auth({ anyOf: [{ kind: "oidc", provider: "sso" }], scopes: ["admin"] }),
    jwt({ mechanism: "oidc", provider: "sso" }),
    "10.0.0.1",
    "403 scope",
  ],
  ["allows_listed_consumer", auth({ consumers: ["shop"] }), key("shop"), "10.0.0.1", "allow"],
  [
    "denies_unlisted_consumer_with_403",
    auth({ consumers: ["shop"] }),
    key("blog"),
    "10.0.0.1",
    "403 consumer",
  ],
  [
    "allows_consumer_in_listed_group",
    auth({ groups: ["partners"] }),
    key("blog", ["partners"]),
    "10.0.0.1",
    "allow",
  ],
  [
    "denies_consumer_of_another_group",
    auth({ groups: ["partners"] }),
    key("blog", ["internal"]),
    "10.0.0.1",
    "403 consumer",
  ],
  [
    "treats_consumers_and_groups_as_one_allow_list",
    auth({ consumers: ["shop"], groups: ["partners"] }),
    key("blog", ["partners"]),
    "10.0.0.1",
    "allow",
  ],
  [
    "does_not_apply_scopes_to_api_key_principals",
    auth({ scopes: ["orders:read"], consumers: ["shop"] }),
    key("shop"),
    "10.0.0.1",
    "allow",
  ],
  ["does_not_apply_consumers_to_jwt_principals", auth({ consumers: ["shop"] }), jwt(), "10.0.0.1", "allow"],
  ["admits_client_cert_principal_of_listed_provider", auth({ scopes: ["x"] }), cert, "10.0.0.1", "allow"],
  ["allows_client_inside_ipv4_range", auth({ clientIps: ["10.0.0.0/8"] }), jwt(), "10.200.3.4", "allow"],
  [
    "denies_client_outside_ipv4_range_with_403",
    auth({ clientIps: ["10.0.0.0/8"] }),
    jwt(),
    "11.0.0.1",
    "403 client_ip",
  ],
  [
    "matches_ipv4_mapped_client_against_ipv4_range",
    auth({ clientIps: ["127.0.0.0/8"] }),
    jwt(),
    "::ffff:127.0.0.1",
    "allow",
  ],
  [
    "matches_ipv4_client_against_ipv4_mapped_range",
    auth({ clientIps: ["::ffff:10.0.0.0/104"] }),
    jwt(),
    "10.1.2.3",
    "allow",
  ],
  [
    "allows_client_inside_ipv6_range",
    auth({ clientIps: ["2001:db8::/32"] }),
    jwt(),
    "2001:db8:1::5",
    "allow",
  ],
  [
    "denies_client_outside_ipv6_range",
    auth({ clientIps: ["2001:db8::/32"] }),
    jwt(),
    "2001:db9::1",
    "403 client_ip",
  ],
  [
    "does_not_match_ipv6_client_against_ipv4_range",
    auth({ clientIps: ["0.0.0.0/0"] }),
    jwt(),
    "2001:db8::1",
    "403 client_ip",
  ],
  ["matches_every_address_with_ipv6_slash_zero", auth({ clientIps: ["::/0"] }), jwt(), "10.0.0.1", "allow"],
  [
    "denies_malformed_client_address",
    auth({ clientIps: ["0.0.0.0/0"] }),
    jwt(),
    "not-an-ip",
    "403 client_ip",
  ],
  [
    "allows_client_matching_any_of_several_ranges",
    auth({ clientIps: ["10.0.0.0/8", "192.168.1.7"] }),
    jwt(),
    "192.168.1.7",
    "allow",
  ],
  [
    "checks_client_ranges_before_authentication",
    auth({ clientIps: ["10.0.0.0/8"] }),
    null,
    "11.0.0.1",
    "403 client_ip",
  ],
  [
    "answers_a_caller_outside_the_ranges_alike_with_a_credential_of_another_mechanism",
    auth({ clientIps: ["10.0.0.0/8"], anyOf: [{ kind: "jwt", provider: "main" }] }),
    key("acme"),
    "11.0.0.1",
    "403 client_ip",
  ],
  [
    "still_asks_a_caller_inside_the_ranges_to_authenticate",
    auth({ clientIps: ["10.0.0.0/8"] }),
    null,
    "10.0.0.1",
    "401 authentication",
  ],
];

describe("authorize: named cases", () => {
  it.each(rows)("%s", (_name, a, principal, ip, want) => {
    const d = authorize(a, principal, ip);
    if (want === "allow") {
      expect(d).toEqual({ kind: "allow", principal });
      return;
    }
    if (d.kind !== "deny") throw new Error(`expected a deny, got ${JSON.stringify(d)}`);
    const [status, requirement] = want.split(" ");
    expect(d.status).toBe(Number(status));
    expect(d.code).toBe(status === "401" ? "unauthenticated" : "forbidden");
    expect(d.requirement).toBe(requirement);
    expect(d.reason.length).toBeGreaterThan(10);
  });

  it("names_the_unmet_requirement_in_the_reason", () => {
    const scope = authorize(auth({ scopes: ["orders:write"] }), jwt(), "1.2.3.4");
    expect(scope).toMatchObject({ reason: "missing scope orders:write" });
    const claim = authorize(auth({ claims: [{ name: "tenant", values: ["x"] }] }), jwt(), "1.2.3.4");
    expect(claim).toMatchObject({ reason: expect.stringContaining("claim tenant") });
    const none = authorize(auth(), null, "1.2.3.4");
    expect(none).toMatchObject({ reason: expect.stringContaining("jwt main, apiKey, clientCert partners") });
  });

  it("compiles_a_route_once_and_reuses_it", () => {
    const a = auth({ clientIps: ["10.0.0.0/8"] });
    expect(compileRouteAuth(a)).toBe(compileRouteAuth(a));
    expect(authorize(compileRouteAuth(a), jwt(), "10.0.0.1").kind).toBe("allow");
  });

  it("refuses_to_compile_a_malformed_range", () => {
    expect(() => compileRouteAuth(auth({ clientIps: ["10.0.0.0/33"] }))).toThrow(/clientIps/);
  });
});

describe("CIDR parsing and matching", () => {
  it.each([
    ["10.0.0.0/8", true],
    ["0.0.0.0/0", true],
    ["192.168.1.1", true],
    ["2001:db8::/32", true],
    ["::/0", true],
    ["::1", true],
    ["::ffff:10.0.0.0/104", true],
    ["1:2:3:4:5:6:7:8/128", true],
    ["1:2:3:4:5:6:7::/112", true],
    ["10.0.0.0/33", false],
    ["10.0.0/8", false],
    ["010.0.0.0/8", false],
    ["256.0.0.0/8", false],
    ["10.0.0.0/08", false],
    ["10.0.0.0/", false],
    ["2001:db8::/129", false],
    ["2001:db8:::/32", false],
    ["1:2:3:4:5:6:7:8:9/128", false],
    ["1::2::3", false],
    ["fe80::1%eth0/64", false],
    ["12345::/16", false],
    ["", false],
    ["example.com/8", false],
  ])("parses_%s_as_valid_%s", (text, valid) => {
    expect(parseCidr(text) !== null).toBe(valid);
    expect(parseCidr(text) !== null).toBe(referenceCidrValid(text));
  });

  const v4 = fc.tuple(fc.nat(255), fc.nat(255), fc.nat(255), fc.nat(255)).map((p) => p.join("."));
  const v6 = fc.ipV6();
  it("matches_like_node_blocklist_for_random_ranges_and_addresses", () => {
    fc.assert(
      fc.property(
        fc.oneof(
          fc.tuple(v4, fc.nat(32)).map(([a, n]) => ({ a, n, t: "ipv4" as const })),
          fc.tuple(v6, fc.nat(128)).map(([a, n]) => ({ a, n, t: "ipv6" as const })),
        ),
        fc.oneof(
          v4,
          v6,
          v4.map((a) => `::ffff:${a}`),
        ),
        (range, ip) => {
          const r = parseCidr(`${range.a}/${range.n}`);
          expect(r).not.toBeNull();
          const list = new BlockList();
          list.addSubnet(range.a, range.n, range.t);
          const reference = list.check(ip, isIP(ip) === 4 ? "ipv4" : "ipv6");
          expect(inRanges([r!], ip)).toBe(reference);
        },
      ),
      { numRuns: 3000 },
    );
  });

  it("matches_an_address_inside_its_own_prefix_range", () => {
    fc.assert(
      fc.property(fc.oneof(v4, v6), fc.nat(128), (ip, n) => {
        const bits = isIP(ip) === 4 ? n % 33 : n;
        expect(inRanges([parseCidr(`${ip}/${bits}`)!], ip)).toBe(true);
      }),
      { numRuns: 2000 },
    );
  });
});

/** An independent validity check: node:net's isIP for the address, a plain regex for the prefix. */
function referenceCidrValid(text: string): boolean {
  const [addr, bits, extra] = text.split("/");
  if (extra !== undefined || addr === undefined) return false;
  const version = isIP(addr);
  if (version === 0 || addr.includes("%")) return false;
  if (version === 4 && !addr.split(".").every((p) => p === "0" || !p.startsWith("0"))) return false;
  if (bits === undefined) return true;
  return /^(0|[1-9][0-9]{0,2})$/.test(bits) && Number(bits) <= (version === 4 ? 32 : 128);
}

describe("authorize: properties", () => {
  const scopeArb = fc.constantFrom("a", "b", "c", "d");
  const claimArb = fc.record({
    name: fc.constantFrom("tenant", "roles", "level", "missing", "realm_access.roles"),
    values: fc.array(fc.constantFrom("acme", "ops", "3", "x", "other"), { minLength: 1, maxLength: 3 }),
  });
  const rangeArb = fc.constantFrom("10.0.0.0/8", "192.168.0.0/16", "2001:db8::/32", "::/0", "127.0.0.1");
  const principalArb = fc.oneof(
    fc.record({ scopes: fc.subarray(["a", "b", "c", "d"]) }).map((p) => jwt(p)),
    fc
      .record({ c: fc.constantFrom("shop", "blog"), g: fc.subarray(["partners", "internal"]) })
      .map(({ c, g }) => key(c, g)),
    fc.constant(cert),
    fc.constant(null),
  );
  const authArb = fc.record({
    public: fc.boolean(),
    anyOf: fc.subarray(
      [
        { kind: "jwt" as const, provider: "main" },
        { kind: "apiKey" as const },
        { kind: "clientCert" as const, provider: "partners" },
      ],
      { minLength: 1 },
    ),
    scopes: fc.subarray(["a", "b", "c", "d"]),
    claims: fc.array(claimArb, { maxLength: 2 }),
    consumers: fc.subarray(["shop", "blog"]),
    groups: fc.subarray(["partners", "internal"]),
    clientIps: fc.subarray(["10.0.0.0/8", "192.168.0.0/16", "2001:db8::/32"]),
  });
  const ipArb = fc.constantFrom(
    "10.1.1.1",
    "192.168.3.3",
    "2001:db8::7",
    "::ffff:10.9.9.9",
    "8.8.8.8",
    "junk",
  );

  const tighten = fc.oneof(
    scopeArb.map((s) => (a: RouteAuth) => ({ ...a, scopes: [...a.scopes, s] })),
    claimArb.map((c) => (a: RouteAuth) => ({ ...a, claims: [...a.claims, c] })),
    rangeArb.map((r) => (a: RouteAuth) => (a.clientIps.length ? a : { ...a, clientIps: [r] })),
    fc.constant((a: RouteAuth) => ({ ...a, clientIps: a.clientIps.slice(1) })),
    fc.constant((a: RouteAuth) =>
      a.consumers.length || a.groups.length ? a : { ...a, consumers: ["shop"] },
    ),
    fc.constant((a: RouteAuth) => ({ ...a, consumers: a.consumers.slice(1), groups: a.groups.slice(1) })),
    fc.constant((a: RouteAuth) => ({ ...a, anyOf: a.anyOf.slice(1) })),
    fc.constant((a: RouteAuth) => ({ ...a, public: false })),
  );

  it("adding_a_requirement_never_turns_a_deny_into_an_allow", () => {
    let denies = 0;
    fc.assert(
      fc.property(authArb, principalArb, ipArb, tighten, (a, p, ip, t) => {
        const tightened = t(a);
        // Removing the last range widens (no ranges = every address): only shrink a non-empty list to
        // another non-empty one, and only drop the last consumer/group entry when others remain.
        if (a.clientIps.length && !tightened.clientIps.length) return;
        if (
          (a.consumers.length || a.groups.length) &&
          !tightened.consumers.length &&
          !tightened.groups.length
        )
          return;
        const before = authorize(a, p, ip);
        const after = authorize(tightened, p, ip);
        if (before.kind === "deny") {
          denies++;
          expect(after.kind).toBe("deny");
        }
      }),
      { numRuns: 5000 },
    );
    expect(denies).toBeGreaterThan(500);
  });

  it("denies_every_request_without_a_principal_on_a_non_public_route", () => {
    fc.assert(
      fc.property(authArb, ipArb, (a, ip) => {
        const d = authorize({ ...a, public: false }, null, ip);
        const outside = compileRouteAuth(a).ranges.length > 0 && !inRanges(compileRouteAuth(a).ranges, ip);
        expect(d).toMatchObject(
          outside
            ? { kind: "deny", status: 403, code: "forbidden", requirement: "client_ip" }
            : { kind: "deny", status: 401, code: "unauthenticated" },
        );
      }),
    );
  });

  it("never_throws_and_answers_allow_or_a_401_or_403_deny", () => {
    fc.assert(
      fc.property(authArb, principalArb, fc.oneof(ipArb, fc.string()), (a, p, ip) => {
        const d = authorize(a, p, ip);
        if (d.kind === "deny") expect([401, 403]).toContain(d.status);
        else expect(d.principal).toBe(p);
      }),
      { numRuns: 3000 },
    );
  });
});

describe("decideAndAuthorize", () => {
  const r = parseSpec({
    name: "t",
    trustDomain: "t.example",
    services: { app: { image: "r/app:1", port: 8080, allow: [{ from: ["gateway"] }] } },
    gateway: {
      hosts: ["api.example"],
      jwt: {
        main: {
          issuer: "https://id.example/",
          audiences: ["api"],
          jwksUri: "https://id.example/jwks.json",
          algorithms: ["ES256"],
        },
      },
      routes: [
        {
          name: "orders",
          match: { path: "/api/orders/**" },
          to: "app",
          auth: { jwt: "main", scopes: ["orders:read"] },
        },
        { name: "health", match: { path: "/health" }, to: "app", public: true },
      ],
    },
  });
  if (!r.ok) throw new Error(r.errors.map((e) => e.message).join("\n"));
  const gw = compileGateway(translate(r.spec).runtime.gateway!);
  const facts = (target: string) => ({ method: "GET", target, host: "api.example", header: () => undefined });

  it.each([
    ["allows_token_with_scope_on_canonical_path", "/api/orders/1", jwt(), "route allow"],
    [
      "denies_traversal_to_protected_route_without_principal",
      "/health/../api/orders/1",
      null,
      "route deny 401",
    ],
    ["denies_token_without_scope", "/api/orders/1", jwt({ scopes: [] }), "route deny 403"],
    ["allows_public_route_without_principal", "/health", null, "route allow"],
    ["rejects_encoded_slash_before_authorization", "/health%2F..%2Fapi/orders", jwt(), "reject 400"],
    ["rejects_unknown_path", "/nope", jwt(), "reject 404"],
  ])("%s", (_n, target, principal, want) => {
    const v = decideAndAuthorize(gw, facts(target), principal, "10.0.0.1");
    const got =
      v.kind === "reject"
        ? `reject ${v.decision.status}`
        : `route ${v.authz.kind}${v.authz.kind === "deny" ? ` ${v.authz.status}` : ""}`;
    expect(got).toBe(want);
  });
});
