/**
 * The external-destination matcher the sidecar (CONNECT, plain HTTP) and the policy checks share: exact
 * hosts, wildcards over every name below a domain, and the precedence between them — a table of claims,
 * then properties over random names.
 */
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { compileExternalMatcher, wildcardCovers } from "../../runtime/decide/external.ts";

const entries = [
  { name: "exact", host: "api.corp.example", port: 443 },
  { name: "corp", host: "*.corp.example", port: 443 },
  { name: "corp-eu", host: "*.eu.corp.example", port: 443 },
  { name: "corp-80", host: "*.corp.example", port: 80 },
  { name: "v4", host: "10.1.2.3", port: 443 },
  { name: "v6", host: "2001:db8::1", port: 443 },
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
  ])("%s", (_claim, host, port, expected) => {
    expect(matcher.match(host, port)?.name ?? null).toBe(expected);
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
