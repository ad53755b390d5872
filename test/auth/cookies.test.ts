/**
 * Cookie and query-parameter names as upstreams read them (runtime/auth/jwt.ts: cookieName, cookieValue,
 * queryName, credentialQueryName, queryValue): a credential cookie or parameter the gateway verifies and removes must be found under every
 * spelling some upstream framework reads as its name, or a second, unverified credential reaches that
 * upstream beside the verified one. End to end through the gateway: test/auth/gateway.test.ts.
 */
import { describe, expect, it } from "vitest";
import {
  cookieName,
  cookieValue,
  credentialQueryName,
  queryName,
  queryValue,
} from "../../runtime/auth/jwt.ts";

describe("cookieName", () => {
  it.each([
    { claim: "keeps_a_plain_name", raw: "tok", name: "tok" },
    { claim: "ignores_ascii_case_as_asp_net_core_does", raw: "ToK", name: "tok" },
    { claim: "trims_spaces_and_tabs", raw: " \ttok\t ", name: "tok" },
    { claim: "trims_next_line_as_python_does", raw: "\x85tok", name: "tok" },
    { claim: "trims_no_break_space", raw: "\xa0tok\xa0", name: "tok" },
    { claim: "trims_the_information_separators_python_calls_space", raw: "\x1ctok\x1f", name: "tok" },
    { claim: "decodes_percent_escapes_as_rack_does", raw: "t%6Fk", name: "tok" },
    { claim: "decodes_lower_case_escapes", raw: "%74ok", name: "tok" },
    { claim: "reads_a_php_array_as_its_name", raw: "tok[]", name: "tok" },
    { claim: "reads_php_s_dot_as_underscore", raw: "meshgate.session", name: "meshgate_session" },
    { claim: "reads_php_s_space_as_underscore", raw: "meshgate session", name: "meshgate_session" },
    { claim: "reads_a_plus_as_php_s_space", raw: "meshgate+session", name: "meshgate_session" },
    { claim: "skips_a_decoded_leading_space_as_php_does", raw: "%20tok", name: "tok" },
    { claim: "leaves_escapes_that_are_not_utf_8", raw: "t%FFk", name: "t%ffk" },
    { claim: "keeps_other_characters", raw: "tok-2", name: "tok-2" },
  ])("$claim", ({ raw, name }) => {
    expect(cookieName(raw)).toBe(name);
  });
});

describe("cookieValue", () => {
  it.each([
    { claim: "is_null_without_a_header", header: undefined, value: null },
    { claim: "is_null_without_the_cookie", header: "lang=de; toka=1", value: null },
    { claim: "reads_the_cookie_among_others", header: "lang=de; tok=abc.def; x=1", value: "abc.def" },
    { claim: "reads_it_under_another_spelling", header: "lang=de; TOK=abc", value: "abc" },
    { claim: "refuses_it_twice", header: "tok=a; tok=b", value: false },
    { claim: "refuses_it_twice_in_two_spellings", header: "tok=a; t%6Fk=b", value: false },
    { claim: "refuses_it_after_a_trimmed_next_line", header: "\x85tok=a; tok=b", value: false },
    { claim: "refuses_it_hidden_after_a_comma_in_another_pair", header: "lang=de, tok=b", value: false },
    { claim: "refuses_it_hidden_after_a_comma_in_its_own_value", header: "tok=a, tok=b", value: false },
    { claim: "refuses_it_hidden_in_a_nameless_pair", header: "x,tok=b", value: false },
    { claim: "keeps_a_comma_that_hides_no_pair_of_the_name", header: "tok=a; lang=de,fr", value: "a" },
    { claim: "keeps_a_comma_before_another_name", header: "tok=a; lang=de, x=1", value: "a" },
  ])("$claim", ({ header, value }) => {
    expect(cookieValue(header, "tok")).toBe(value);
  });
});

describe("queryName", () => {
  it.each([
    { claim: "skips_leading_spaces_as_php_does", raw: "%20%20access_token", name: "access_token" },
    { claim: "skips_a_leading_plus_as_php_does", raw: "+access_token", name: "access_token" },
    { claim: "keeps_a_name_needing_nothing_as_it_is", raw: "access_token", name: "access_token" },
  ])("$claim", ({ raw, name }) => {
    expect(queryName(raw)).toBe(name);
  });
});

describe("queryValue", () => {
  it.each([
    { claim: "reads_the_parameter", query: "a=1&access_token=abc&b=2", value: "abc" },
    { claim: "is_null_without_it", query: "a=1&b=2", value: null },
    { claim: "reads_an_escaped_spelling", query: "a=1&access%5Ftoken=abc", value: "abc" },
    { claim: "refuses_it_twice", query: "access_token=a&access_token=b", value: false },
    // Rack's and Python's (before 3.9.2) parsers split at ";" too: a pair hiding the name is ambiguous.
    {
      claim: "refuses_it_hidden_after_a_semicolon",
      query: "access_token=a&x=1;access_token=b",
      value: false,
    },
    { claim: "refuses_it_hidden_alone", query: "x=1;access_token=b", value: false },
    { claim: "refuses_it_hidden_without_a_value", query: "access_token=a&x=1;access_token", value: false },
    {
      claim: "refuses_an_escaped_spelling_hidden_after_a_semicolon",
      query: "x=1;access%5Ftoken=b",
      value: false,
    },
    { claim: "keeps_a_semicolon_that_hides_no_such_name", query: "access_token=a&x=1;y=2", value: "a" },
  ])("$claim", ({ query, value }) => {
    expect(queryValue(query, "access_token")).toBe(value);
  });
});

// A JWT provider's token parameter is read as ASP.NET Core reads Request.Query (SignalR and JwtBearer read
// `access_token` there): ASCII case ignored, as for cookies — `ACCESS_TOKEN` is the parameter too.
describe("credentialQueryName", () => {
  it.each([
    { claim: "ignores_ascii_case_as_asp_net_core_does", raw: "ACCESS_TOKEN", name: "access_token" },
    { claim: "ignores_mixed_case", raw: "Access_Token", name: "access_token" },
    { claim: "reads_an_escaped_upper_case_spelling", raw: "ACCESS%5FTOKEN", name: "access_token" },
    { claim: "reads_php_s_dotted_spelling_in_any_case", raw: "Access.Token", name: "access_token" },
    { claim: "keeps_a_plain_name", raw: "access_token", name: "access_token" },
  ])("$claim", ({ raw, name }) => {
    expect(credentialQueryName(raw)).toBe(name);
  });
});

describe("queryValue of a credential parameter", () => {
  it.each([
    { claim: "reads_the_parameter_in_another_letter_case", query: "a=1&Access_Token=abc", value: "abc" },
    {
      claim: "reads_it_configured_in_another_letter_case",
      query: "ACCESS_TOKEN=abc",
      value: "abc",
      name: "Access_Token",
    },
    { claim: "refuses_it_twice_in_two_letter_cases", query: "access_token=a&ACCESS_TOKEN=b", value: false },
    {
      claim: "refuses_it_twice_in_two_escaped_letter_cases",
      query: "access_token=a&ACCESS%5Ftoken=b",
      value: false,
    },
    {
      claim: "refuses_another_letter_case_hidden_after_a_semicolon",
      query: "access_token=a&x=1;Access_Token=b",
      value: false,
    },
    { claim: "is_null_without_it", query: "a=1&access_tokens=b", value: null },
  ])("$claim", ({ query, value, name = "access_token" }) => {
    expect(queryValue(query, name, credentialQueryName)).toBe(value);
  });
});
