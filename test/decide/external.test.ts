/**
 * The external-destination matcher the sidecar (CONNECT, plain HTTP) and the policy checks share: exact
 * hosts, wildcards over every name below a domain, and the precedence between them — a table of claims,
 * then properties over random names.
 */
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import {
  cidrProblem,
  compileExternalMatcher,
  hostCovers,
  wildcardCovers,
} from "../../runtime/decide/external.ts";

const entries = [
  { name: "exact", host: "api.corp.example", port: 443 },
  { name: "corp", host: "*.corp.example", port: 443 },
  { name: "corp-eu", host: "*.eu.corp.example", port: 443 },
  { name: "corp-80", host: "*.corp.example", port: 80 },
  { name: "v4", host: "10.1.2.3", port: 443 },
  { name: "v6", host: "2001:db8::1", port: 443 },
  { name: "net16", host: "10.20.0.0/16", port: 5432 },
  { name: "net24", host: "10.20.30.0/24", port: 5432 },
  { name: "db", host: "10.20.30.40", port: 5432 },
  { name: "v6net", host: "2001:db8:1::/48", port: 5432 },
];
const matcher = compileExternalMatcher(entries);

describe("external matcher", () => {
  it.each([
    ["an_exact_host_matches_itself", "api.corp.example", 443, "exact"],
    ["an_exact_host_wins_over_a_covering_wildcard", "api.corp.example", 443, "exact"],
    ["a_wildcard_covers_a_name_one_label_below", "files.corp.example", 443, "corp"],
    ["a_wildcard_covers_names_several_labels_below", "a.b.c.corp.example", 443, "corp"],
    ["the_longer_wildcard_wins", "db.eu.corp.example", 443, "corp-eu"],
    ["the_longer_wildcard_covers_deeper_names_too", "x.db.eu.corp.example", 443, "corp-eu"],
    ["a_wildcard_is_per_port", "files.corp.example", 80, "corp-80"],
    ["the_exact_host_at_another_port_falls_to_the_wildcard", "api.corp.example", 80, "corp-80"],
    ["a_wildcard_never_covers_its_domain", "corp.example", 443, null],
    ["a_wildcard_never_covers_a_lookalike", "evilcorp.example", 443, null],
    ["a_wildcard_never_covers_a_suffix_without_its_dot", "xcorp.example", 443, null],
    ["nothing_at_an_undeclared_port", "files.corp.example", 8443, null],
    ["an_ipv4_address_matches_exactly", "10.1.2.3", 443, "v4"],
    ["an_ipv6_address_matches_exactly", "2001:db8::1", 443, "v6"],
    ["an_undeclared_address_matches_nothing", "10.1.2.4", 443, null],
    ["a_range_holds_an_address_in_it", "10.20.1.2", 5432, "net16"],
    ["the_longer_prefix_wins", "10.20.30.7", 5432, "net24"],
    ["an_exact_address_wins_over_the_ranges_holding_it", "10.20.30.40", 5432, "db"],
    ["an_ipv4_range_holds_the_ipv4_mapped_form_of_its_addresses", "::ffff:a14:102", 5432, "net16"],
    ["a_range_is_per_port", "10.20.1.2", 443, null],
    ["a_range_never_holds_an_address_outside_it", "10.21.0.1", 5432, null],
    ["a_range_never_holds_a_name", "10.20.1.2.nip.example", 5432, null],
    ["an_ipv6_range_holds_its_addresses", "2001:db8:1:2::9", 5432, "v6net"],
    ["an_ipv6_range_holds_nothing_past_its_prefix", "2001:db8:2::1", 5432, null],
  ])("%s", (_claim, host, port, expected) => {
    expect(matcher.match(host, port)?.name ?? null).toBe(expected);
  });

  // A hand-written config (the runtime schema takes any host text) in another spelling: plain HTTP on the
  // proxy port compared it as written, CONNECT canonically — the same external allowed one way only.
  it.each([
    ["an_upper_case_name_matches_its_canonical_form", "API.Partner.example", "api.partner.example"],
    ["a_name_with_its_trailing_dot_matches_without_it", "api.partner.example.", "api.partner.example"],
    ["an_ipv6_address_not_written_canonically_matches_its_canonical_form", "2001:DB8:0:0::1", "2001:db8::1"],
  ])("%s", (_claim, declared, requested) => {
    const m = compileExternalMatcher([{ name: "x", host: declared, port: 80 }]);
    expect(m.match(requested, 80)?.name).toBe("x");
  });

  it("takes_the_first_of_two_equal_entries", () => {
    const m = compileExternalMatcher([
      { name: "a", host: "*.x.example", port: 1 },
      { name: "b", host: "*.x.example", port: 1 },
      { name: "c", host: "h.x.example", port: 1 },
      { name: "d", host: "h.x.example", port: 1 },
    ]);
    expect([m.match("y.x.example", 1)?.name, m.match("h.x.example", 1)?.name]).toEqual(["a", "c"]);
  });
});

describe("hostCovers", () => {
  it.each([
    ["an_exact_host_covers_itself", "api.x.example", "api.x.example", true],
    ["a_wildcard_covers_a_name_below", "*.x.example", "a.b.x.example", true],
    ["a_wildcard_covers_a_deeper_wildcard", "*.x.example", "*.a.x.example", true],
    ["a_deeper_wildcard_never_covers_a_wider_one", "*.a.x.example", "*.x.example", false],
    ["a_range_covers_an_address_in_it", "10.0.0.0/8", "10.1.2.3", true],
    ["a_range_covers_a_narrower_range", "10.0.0.0/8", "10.1.0.0/16", true],
    ["a_narrower_range_never_covers_a_wider_one", "10.1.0.0/16", "10.0.0.0/8", false],
    ["a_range_never_covers_a_name", "10.0.0.0/8", "ten.example", false],
    ["an_exact_address_covers_nothing_else", "10.1.2.3", "10.1.2.4", false],
  ])("%s", (_claim, pattern, host, expected) => {
    expect(hostCovers(pattern, host)).toBe(expected);
  });
});

describe("cidrProblem", () => {
  it.each([
    ["accepts_an_ipv4_range", "10.20.0.0/16", null],
    ["accepts_an_ipv6_range", "2001:db8::/48", null],
    ["accepts_a_single_address_range", "192.0.2.7/32", null],
    ["refuses_a_malformed_prefix", "10.20.0.0/33", "is not a CIDR range"],
    ["refuses_a_malformed_address", "10.20.0/16", "is not a CIDR range"],
    ["refuses_address_bits_past_the_prefix", "10.20.1.0/16", "address bits set past its /16 prefix"],
    ["refuses_an_ipv6_range_not_written_canonically", "2001:DB8:0::/48", "(2001:db8::/48)"],
    ["refuses_a_range_holding_loopback", "127.0.0.0/24", "(127.0.0.0/8)"],
    ["refuses_a_range_inside_link_local_metadata", "169.254.169.254/32", "(169.254.0.0/16)"],
    ["refuses_every_ipv4_address", "0.0.0.0/0", "loopback, link-local"],
    ["refuses_every_address", "::/0", "loopback, link-local"],
    ["refuses_the_ipv4_mapped_space", "::ffff:0:0/96", "loopback, link-local"],
    ["refuses_a_zone", "fe80::1%eth0/128", "is not a CIDR range"],
    ["refuses_a_range_holding_the_ipv6_metadata_endpoint", "fd00:ec2::/32", "(fd00:ec2::254/128)"],
    ["refuses_the_nat64_form_of_link_local", "64:ff9b::a9fe:a9fe/128", "(64:ff9b::a9fe:0/112)"],
    ["accepts_a_nat64_range_of_public_addresses", "64:ff9b::5db8:0/112", null],
    ["accepts_a_unique_local_range_beside_the_metadata_endpoint", "fd00:ec3::/32", null],
  ])("%s", (_claim, text, problem) => {
    const p = cidrProblem(text);
    if (problem === null) expect(p).toBeNull();
    else expect(p).toContain(problem);
  });
});

const label = fc.constantFrom("a", "b", "corp", "eu", "s3", "x1", "api");
const name = fc.array(label, { minLength: 1, maxLength: 4 }).map((l) => `${l.join(".")}.example`);
const entry = fc.record({
  host: fc.oneof(
    name,
    name.map((n) => `*.${n}`),
  ),
  port: fc.constantFrom(80, 443),
});

describe("external matcher properties", () => {
  it("a_match_always_reaches_the_host_asked_for", () => {
    fc.assert(
      fc.property(fc.array(entry, { maxLength: 8 }), name, fc.constantFrom(80, 443), (list, host, port) => {
        const e = compileExternalMatcher(list).match(host, port);
        if (e === undefined) return;
        expect(e.port).toBe(port);
        expect(e.host === host || wildcardCovers(e.host, host)).toBe(true);
      }),
    );
  });

  it("finds_a_destination_whenever_one_reaches_the_host", () => {
    fc.assert(
      fc.property(fc.array(entry, { maxLength: 8 }), name, fc.constantFrom(80, 443), (list, host, port) => {
        const reaches = list.some(
          (e) => e.port === port && (e.host === host || wildcardCovers(e.host, host)),
        );
        expect(compileExternalMatcher(list).match(host, port) !== undefined).toBe(reaches);
      }),
    );
  });

  it("the_choice_is_independent_of_declaration_order_between_distinct_destinations", () => {
    fc.assert(
      fc.property(
        fc.uniqueArray(entry, { maxLength: 8, selector: (e) => `${e.host}:${e.port}` }),
        name,
        fc.constantFrom(80, 443),
        (list, host, port) => {
          const forward = compileExternalMatcher(list).match(host, port);
          const backward = compileExternalMatcher([...list].reverse()).match(host, port);
          // Two wildcards of equal length cannot both cover one host unless they are the same wildcard.
          expect(backward).toBe(forward);
        },
      ),
    );
  });

  it("an_exact_host_always_wins", () => {
    fc.assert(
      fc.property(fc.array(entry, { maxLength: 8 }), name, fc.constantFrom(80, 443), (list, host, port) => {
        const m = compileExternalMatcher([...list, { host, port }]);
        expect(m.match(host, port)?.host).toBe(host);
      }),
    );
  });
});
