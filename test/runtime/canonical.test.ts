/**
 * Request-target canonicalization (runtime/decide/canonical.ts): the one canonical path that is matched,
 * authorized, rate-limited and forwarded. A table of named cases (one claim per row, including the path
 * CVE classes of shared/notes/security.md), a table for canonicalHost, fast-check properties, and a
 * generated corpus of bypass variants checked against an independent reference resolver (RFC 3986 §5.2.4).
 */
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import {
  canonicalHost,
  canonicalizeTarget,
  type CanonicalTarget,
  type TargetRejectReason,
} from "../../runtime/decide/canonical.ts";
import { bypassCorpus, referencePath } from "../support/paths.ts";

type Want =
  | { readonly path: string; readonly query: string; readonly host: string | null }
  | { readonly reason: TargetRejectReason };

interface Row {
  readonly name: string;
  readonly target: string;
  readonly want: Want;
  readonly mergeSlashes?: boolean;
}

const ok = (path: string, query = "", host: string | null = null): Want => ({ path, query, host });
const no = (reason: TargetRejectReason): Want => ({ reason });
const row = (name: string, target: string, want: Want, mergeSlashes?: boolean): Row =>
  mergeSlashes === undefined ? { name, target, want } : { name, target, want, mergeSlashes };
const ch = (code: number): string => String.fromCharCode(code);

const rows: readonly Row[] = [
  // --- CVE classes (shared/notes/security.md, "Paths") ---
  row("resolves_envoy_cve_2019_9901_info_dotdot_private", "/info/../private", ok("/private")),
  row("rejects_envoy_cve_2021_29492_encoded_slash_dotdot_upper", "/public%2F..%2Fadmin", no("encoded_slash")),
  row("rejects_envoy_cve_2021_29492_encoded_slash_dotdot_lower", "/public%2f..%2fadmin", no("encoded_slash")),
  row("rejects_encoded_slash_upper_and_lower_case_mixed", "/a%2Fb%2fc", no("encoded_slash")),
  row("rejects_envoy_cve_2021_32779_fragment", "/admin#fragment", no("fragment")),
  row("rejects_envoy_cve_2021_32779_fragment_hiding_traversal", "/public#/../admin", no("fragment")),
  row("merges_istio_cve_2021_31920_double_slash", "//admin", ok("/admin")),
  row("rejects_istio_cve_2021_31920_encoded_slash", "/public%2Fadmin", no("encoded_slash")),
  row("rejects_istio_cve_2021_31920_encoded_backslash_upper", "/public%5Cadmin", no("encoded_backslash")),
  row("rejects_istio_cve_2021_31920_encoded_backslash_lower", "/public%5cadmin", no("encoded_backslash")),
  row("rejects_istio_cve_2021_39156_bare_fragment_mark", "/admin#", no("fragment")),
  row("rejects_istio_cve_2021_39156_fragment_after_query", "/public?x=1#/admin", no("fragment")),
  row("rejects_nginx_cve_2013_4547_raw_space", "/public /../admin", no("invalid_character")),
  row("rejects_nginx_cve_2013_4547_raw_space_before_nul", "/file \u0000.php", no("invalid_character")),
  row("resolves_kong_cve_2021_27306_public_dotdot_protected", "/public/../protected", ok("/protected")),
  row("merges_apisix_cve_2021_43557_double_slash_internal", "//internal/secret", ok("/internal/secret")),
  row(
    "keeps_apisix_double_slash_internal_when_unmerged",
    "//internal/secret",
    ok("//internal/secret"),
    false,
  ),
  row("merges_rou3_cve_2025_71399_double_slash_path", "//path", ok("/path")),
  row("keeps_rou3_double_slash_path_when_unmerged", "//path", ok("//path"), false),
  row("treats_origin_form_double_slash_as_path_not_host", "//evil.example/admin", ok("/evil.example/admin")),

  // --- Istio's must-not-normalize cases ---
  row("rejects_dotdot_with_parameters_at_root", "/..;/admin", no("dot_segment_with_parameters")),
  row("rejects_dotdot_with_parameters_after_public", "/public/..;/admin", no("dot_segment_with_parameters")),
  row("rejects_dotdot_with_named_parameter", "/public/..;x=1/admin", no("dot_segment_with_parameters")),
  row("rejects_dot_with_parameters", "/public/.;/admin", no("dot_segment_with_parameters")),
  row("rejects_encoded_dotdot_with_parameters", "/public/%2e%2e;/admin", no("dot_segment_with_parameters")),
  row("keeps_double_encoded_dotdot_literal", "/%252e%252e/admin", ok("/%252e%252e/admin")),
  row("keeps_double_encoded_dotdot_after_public", "/public/%252e%252e/admin", ok("/public/%252e%252e/admin")),
  row("keeps_double_encoded_slash_literal", "/public%252Fadmin", ok("/public%252Fadmin")),
  row("rejects_overlong_utf8_dot_lower", "/%c0%ae%c0%ae/admin", no("invalid_utf8")),
  row("rejects_overlong_utf8_dot_after_public", "/public/%C0%AE%C0%AE/admin", no("invalid_utf8")),
  row("keeps_upper_case_path", "/ADMIN", ok("/ADMIN")),
  row("keeps_mixed_case_path", "/Admin/Users", ok("/Admin/Users")),
  row("keeps_matrix_parameters", "/admin;a=b", ok("/admin;a=b")),
  row("keeps_matrix_parameters_mid_path", "/api;v=1/orders", ok("/api;v=1/orders")),
  row(
    "rejects_encoded_semicolon_after_dotdot_as_a_dot_segment_with_parameters",
    "/a/..%3B/b",
    no("dot_segment_with_parameters"),
  ),

  // --- dot segments ---
  row("removes_single_dot_segment", "/a/./b", ok("/a/b")),
  row("resolves_dotdot_segment", "/a/../b", ok("/b")),
  row("removes_encoded_dot_segment_lower", "/a/%2e/b", ok("/a/b")),
  row("removes_encoded_dot_segment_upper", "/a/%2E/b", ok("/a/b")),
  row("resolves_mixed_case_encoded_dotdot", "/a/%2E%2e/b", ok("/b")),
  row("resolves_dot_then_encoded_dot", "/a/.%2e/b", ok("/b")),
  row("resolves_encoded_dot_then_dot", "/a/%2e./b", ok("/b")),
  row("resolves_trailing_dot_keeping_slash", "/a/b/.", ok("/a/b/")),
  row("resolves_trailing_dotdot_keeping_slash", "/a/b/..", ok("/a/")),
  row("resolves_trailing_encoded_dotdot", "/a/b/%2e%2e", ok("/a/")),
  row("resolves_root_dot_to_root", "/.", ok("/")),
  row("resolves_root_dot_slash_to_root", "/./", ok("/")),
  row("resolves_two_dotdots", "/a/b/../../c", ok("/c")),
  row("resolves_dot_then_dotdot", "/a/./../b", ok("/b")),
  row("resolves_back_to_root", "/a/..", ok("/")),
  row("rejects_dotdot_at_root", "/..", no("dot_segment_above_root")),
  row("rejects_dotdot_above_root_before_path", "/../admin", no("dot_segment_above_root")),
  row("rejects_encoded_dotdot_above_root", "/%2e%2e/admin", no("dot_segment_above_root")),
  row("rejects_climbing_above_root_later", "/a/../../admin", no("dot_segment_above_root")),
  row("rejects_dotdot_above_root_after_dot", "/./../admin", no("dot_segment_above_root")),
  row("keeps_three_dots_as_literal", "/a/.../b", ok("/a/.../b")),
  row("keeps_dot_prefixed_name", "/a/.b", ok("/a/.b")),
  row("keeps_dotdot_prefixed_name", "/a/..b", ok("/a/..b")),
  row("keeps_dot_suffixed_name", "/a/b.", ok("/a/b.")),
  row("decodes_encoded_dot_inside_name", "/a%2Eb", ok("/a.b")),

  // --- slashes ---
  row("merges_inner_double_slash", "/a//b", ok("/a/b")),
  row("keeps_inner_double_slash_when_unmerged", "/a//b", ok("/a//b"), false),
  row("merges_triple_leading_slash", "///a", ok("/a")),
  row("keeps_triple_leading_slash_when_unmerged", "///a", ok("///a"), false),
  row("keeps_single_trailing_slash", "/a/", ok("/a/")),
  row("merges_double_trailing_slash_into_one", "/a//", ok("/a/")),
  row("keeps_double_trailing_slash_when_unmerged", "/a//", ok("/a//"), false),
  row("merges_before_resolving_dotdot", "/a//../b", ok("/b")),
  row("resolves_dotdot_against_empty_segment_when_unmerged", "/a//../b", ok("/a/b"), false),
  row("merges_double_slash_root", "//", ok("/")),
  row("keeps_double_slash_root_when_unmerged", "//", ok("//"), false),
  row("rejects_dotdot_above_root_after_merged_slash", "//../admin", no("dot_segment_above_root")),
  row("resolves_dotdot_against_leading_empty_segment_when_unmerged", "//../admin", ok("/admin"), false),
  row("keeps_root", "/", ok("/")),

  // --- unreserved escapes are decoded ---
  row("decodes_unreserved_upper_letter", "/%41dmin", ok("/Admin")),
  row("decodes_unreserved_lower_letters", "/%61%64%6d%69%6E", ok("/admin")),
  row("decodes_tilde_upper_hex", "/%7E", ok("/~")),
  row("decodes_tilde_lower_hex", "/%7e", ok("/~")),
  row("decodes_hyphen", "/a%2Db", ok("/a-b")),
  row("decodes_underscore", "/a%5Fb", ok("/a_b")),
  row("decodes_digit", "/v%31", ok("/v1")),

  // --- escaped sub-delims, ":" and "@" are decoded (upstreams decode them: /x%3Adelete is /x:delete) ---
  row("decodes_escaped_colon", "/a%3ab", ok("/a:b")),
  row("decodes_escaped_plus", "/a%2bb", ok("/a+b")),
  row(
    "decodes_an_escaped_colon_so_a_protected_literal_route_cannot_be_dodged",
    "/v1/x%3Adelete",
    ok("/v1/x:delete"),
  ),
  // --- other escapes are kept with upper-case hex ---
  row("keeps_escaped_space", "/a%20b", ok("/a%20b")),
  row("keeps_escaped_question_mark", "/a%3Fb", ok("/a%3Fb")),
  row("keeps_escaped_hash", "/a%23b", ok("/a%23b")),
  row("decodes_escaped_at", "/a%40b", ok("/a@b")),
  row("keeps_escaped_percent", "/100%25", ok("/100%25")),
  row("keeps_escaped_percent_before_hex_text", "/%2541", ok("/%2541")),
  row("decodes_escaped_semicolon", "/a%3bb", ok("/a;b")),
  row("refuses_escaped_c1_controls", "/a%C2%85b", no("encoded_control")),
  row("refuses_nul_in_the_query", "/a?x=%00", no("encoded_control")),
  row("keeps_an_escaped_newline_in_the_query", "/a?x=%0A", ok("/a", "x=%0A")),
  row("keeps_raw_sub_delims", "/a!$&'()*+,;=:@b", ok("/a!$&'()*+,;=:@b")),

  // --- malformed escapes ---
  row("rejects_lone_percent", "/%", no("bad_percent_encoding")),
  row("rejects_percent_with_one_hex_digit", "/%4", no("bad_percent_encoding")),
  row("rejects_percent_with_non_hex", "/%zz", no("bad_percent_encoding")),
  row("rejects_double_percent", "/%%", no("bad_percent_encoding")),
  row("rejects_percent_percent_hex", "/%%41", no("bad_percent_encoding")),
  row("rejects_second_digit_non_hex", "/%4g", no("bad_percent_encoding")),
  row("rejects_unicode_style_escape", "/%u002e%u002e/admin", no("bad_percent_encoding")),

  // --- escaped controls ---
  row("rejects_escaped_nul", "/admin%00.json", no("encoded_control")),
  row("rejects_escaped_line_feed_lower", "/a%0a", no("encoded_control")),
  row("rejects_escaped_carriage_return_upper", "/a%0D", no("encoded_control")),
  row("rejects_escaped_delete", "/a%7f", no("encoded_control")),
  row("rejects_escaped_tab", "/a%09b", no("encoded_control")),
  row("rejects_escaped_unit_separator", "/a%1F", no("encoded_control")),

  // --- raw characters outside RFC 3986 ---
  row("rejects_raw_e_acute", `/caf${ch(0xe9)}`, no("invalid_character")),
  row("rejects_raw_c1_control", `/a${ch(0x85)}`, no("invalid_character")),
  row("rejects_raw_no_break_space", `/a${ch(0xa0)}b`, no("invalid_character")),
  row("rejects_raw_fullwidth_solidus", `/public${ch(0xff0f)}admin`, no("invalid_character")),
  row("rejects_raw_kelvin_sign", `/${ch(0x212a)}`, no("invalid_character")),
  row("rejects_raw_surrogate_pair", `/${ch(0xd83d)}${ch(0xde00)}`, no("invalid_character")),
  row("rejects_raw_lone_surrogate", `/${ch(0xd800)}`, no("invalid_character")),
  row("rejects_raw_tab", "/a\tb", no("invalid_character")),
  row("rejects_raw_line_feed", "/a\nb", no("invalid_character")),
  row("rejects_raw_carriage_return", "/a\rb", no("invalid_character")),
  row("rejects_raw_nul", "/a\u0000", no("invalid_character")),
  row("rejects_raw_delete", "/a\u007f", no("invalid_character")),
  row("rejects_raw_double_quote", '/a"b', no("invalid_character")),
  row("rejects_raw_less_than", "/a<b", no("invalid_character")),
  row("rejects_raw_greater_than", "/a>b", no("invalid_character")),
  row("rejects_raw_backtick", "/a`b", no("invalid_character")),
  row("rejects_raw_open_brace", "/a{b", no("invalid_character")),
  row("rejects_raw_close_brace", "/a}b", no("invalid_character")),
  row("rejects_raw_pipe", "/a|b", no("invalid_character")),
  row("rejects_raw_caret", "/a^b", no("invalid_character")),
  row("rejects_raw_open_bracket", "/a[b", no("invalid_character")),
  row("rejects_raw_close_bracket", "/a]b", no("invalid_character")),

  // --- backslash ---
  row("rejects_raw_backslash", "/a\\b", no("backslash")),
  row("rejects_raw_backslash_traversal", "/public\\..\\admin", no("backslash")),
  row("rejects_escaped_backslash_lower", "/a%5cb", no("encoded_backslash")),

  // --- UTF-8 ---
  row("keeps_two_byte_utf8_escape", "/caf%C3%A9", ok("/caf%C3%A9")),
  row("uppercases_two_byte_utf8_escape", "/caf%c3%a9", ok("/caf%C3%A9")),
  row("keeps_three_byte_utf8_escape", "/%E2%82%AC", ok("/%E2%82%AC")),
  row("keeps_four_byte_utf8_escape", "/%F0%9F%98%80", ok("/%F0%9F%98%80")),
  row("rejects_overlong_two_byte_slash", "/%C0%AF", no("invalid_utf8")),
  row("rejects_overlong_two_byte_c1", "/%C1%BF", no("invalid_utf8")),
  row("rejects_overlong_three_byte_slash", "/%E0%80%AF", no("invalid_utf8")),
  row("rejects_utf8_encoded_surrogate", "/%ED%A0%80", no("invalid_utf8")),
  row("rejects_five_byte_sequence", "/%F8%88%80%80%80", no("invalid_utf8")),
  row("rejects_code_point_above_unicode", "/%F4%90%80%80", no("invalid_utf8")),
  row("rejects_lone_continuation_byte", "/%80", no("invalid_utf8")),
  row("rejects_truncated_two_byte_sequence", "/%C3", no("invalid_utf8")),
  row("rejects_lead_byte_followed_by_raw_ascii", "/%C3A", no("invalid_utf8")),
  row("rejects_truncated_four_byte_sequence", "/%F0%9F%98", no("invalid_utf8")),
  row("rejects_byte_ff", "/%FF", no("invalid_utf8")),

  // --- absolute-form ---
  row("takes_host_from_absolute_form", "http://Host:8080/a?b", ok("/a", "b", "host")),
  row("accepts_upper_case_scheme", "HTTP://EXAMPLE.com/A", ok("/A", "", "example.com")),
  row("accepts_https_scheme", "https://example.com/x", ok("/x", "", "example.com")),
  row("gives_root_path_to_absolute_form_without_path", "http://example.com", ok("/", "", "example.com")),
  row(
    "gives_root_path_to_absolute_form_with_only_query",
    "http://example.com?q=1",
    ok("/", "q=1", "example.com"),
  ),
  row("drops_trailing_dot_of_absolute_form_host", "http://example.com./a", ok("/a", "", "example.com")),
  row("accepts_ipv6_absolute_form_host", "http://[::1]:8080/a", ok("/a", "", "[::1]")),
  row(
    "canonicalizes_absolute_form_path",
    "http://example.com//public/../admin",
    ok("/admin", "", "example.com"),
  ),
  row(
    "rejects_absolute_form_climbing_above_root",
    "http://example.com/../admin",
    no("dot_segment_above_root"),
  ),
  row("rejects_absolute_form_fragment_without_path", "http://example.com#x", no("fragment")),
  row("rejects_userinfo", "http://u@h/", no("userinfo")),
  row("rejects_userinfo_with_password", "http://user:pass@example.com/", no("userinfo")),
  row("rejects_userinfo_spoofing_host", "http://example.com:80@evil.example/", no("userinfo")),
  row("rejects_absolute_form_host_with_underscore", "http://bad_host/", no("invalid_host")),
  row("rejects_absolute_form_empty_host", "http:///admin", no("invalid_host")),
  row("rejects_absolute_form_bad_port", "http://example.com:8x/", no("invalid_host")),
  row("rejects_absolute_form_backslash_in_authority", "http://example.com\\evil/", no("invalid_host")),
  row("rejects_absolute_form_encoded_host", "http://ex%61mple.com/", no("invalid_host")),
  row("rejects_other_scheme", "ftp://example.com/", no("unsupported_form")),
  row("rejects_scheme_with_single_slash", "http:/example.com/", no("unsupported_form")),

  // --- other forms ---
  row("rejects_empty_target", "", no("empty_target")),
  row("rejects_asterisk_form", "*", no("unsupported_form")),
  row("rejects_authority_form", "example.com:443", no("unsupported_form")),
  row("rejects_relative_path", "admin/users", no("unsupported_form")),
  row("rejects_query_only_target", "?x=1", no("unsupported_form")),
  row("rejects_leading_space", " /admin", no("unsupported_form")),

  // --- queries ---
  row("keeps_query_raw", "/a?b=1&c=2", ok("/a", "b=1&c=2")),
  row("keeps_encoded_slash_in_query", "/a?x=%2F..%2F", ok("/a", "x=%2F..%2F")),
  row("keeps_lower_case_hex_in_query", "/a?x=%2f%c3%a9", ok("/a", "x=%2f%c3%a9")),
  row("keeps_unreserved_escape_in_query", "/a?x=%41", ok("/a", "x=%41")),
  row("allows_question_mark_inside_query", "/a?next=/b?c", ok("/a", "next=/b?c")),
  row("keeps_empty_query_after_question_mark", "/a?", ok("/a", "")),
  row("canonicalizes_path_before_query", "/a/../b?x=../y", ok("/b", "x=../y")),
  row("rejects_fragment_in_query", "/a?b#c", no("fragment")),
  row("rejects_lone_percent_in_query", "/a?x=%", no("bad_percent_encoding")),
  row("rejects_malformed_escape_in_query", "/a?x=%zz", no("bad_percent_encoding")),
  row("rejects_truncated_escape_in_query", "/a?x=%4", no("bad_percent_encoding")),
  row("rejects_non_ascii_in_query", `/a?q=caf${ch(0xe9)}`, no("invalid_character")),
  row("rejects_space_in_query", "/a?q=a b", no("invalid_character")),
  row("rejects_backslash_in_query", "/a?q=a\\b", no("invalid_character")),
  row("rejects_angle_bracket_in_query", "/a?q=<script>", no("invalid_character")),
  row("rejects_bad_path_even_with_good_query", "/a%2Fb?x=1", no("encoded_slash")),
];

describe("canonicalizeTarget: named cases", () => {
  it("has_at_least_120_uniquely_named_rows", () => {
    expect(rows.length).toBeGreaterThanOrEqual(120);
    expect(new Set(rows.map((r) => r.name)).size).toBe(rows.length);
  });

  it.each(rows)("$name", ({ target, want, mergeSlashes }) => {
    const got = canonicalizeTarget(target, mergeSlashes === undefined ? {} : { mergeSlashes });
    if ("reason" in want) {
      expect(got.ok).toBe(false);
      if (!got.ok) {
        expect(got.reason).toBe(want.reason);
        expect(typeof got.detail).toBe("string");
      }
    } else {
      expect(got).toEqual({ ok: true, path: want.path, query: want.query, host: want.host });
    }
  });

  it("merges_slashes_by_default_and_when_asked", () => {
    expect(canonicalizeTarget("/a//b")).toEqual(canonicalizeTarget("/a//b", { mergeSlashes: true }));
  });
});

interface HostRow {
  readonly name: string;
  readonly raw: string | undefined;
  readonly want: string | null;
}

const label = (n: number, c = "a"): string => c.repeat(n);
/** A 253-character name of 63-character labels: the longest DNS name. */
const name253 = [label(63, "a"), label(63, "b"), label(63, "c"), label(61, "d")].join(".");

const hostRows: readonly HostRow[] = [
  // Found by review: each was once accepted or folded.
  { name: "refuses_unicode_that_case_folds_to_ascii_kelvin_sign", raw: "\u212Aey.com", want: null },
  { name: "refuses_a_label_longer_than_63", raw: `${label(64)}.com`, want: null },
  { name: "refuses_brackets_without_an_ipv6_address", raw: "[.]", want: null },
  { name: "refuses_an_ipv4_address_in_brackets", raw: "[1.2.3.4]", want: null },
  { name: "canonicalizes_ipv6_spellings", raw: "[0:0::1]:8080", want: "[::1]" },
  { name: "refuses_port_zero", raw: "example.com:0", want: null },
  { name: "refuses_a_port_above_65535", raw: "example.com:99999", want: null },
  { name: "lowercases_host", raw: "Example.COM", want: "example.com" },
  { name: "strips_port", raw: "example.com:8080", want: "example.com" },
  { name: "strips_trailing_dot", raw: "example.com.", want: "example.com" },
  { name: "strips_port_and_trailing_dot", raw: "Example.com.:443", want: "example.com" },
  { name: "accepts_single_label", raw: "localhost", want: "localhost" },
  { name: "accepts_hyphen_inside_label", raw: "a.b-c.d", want: "a.b-c.d" },
  { name: "accepts_punycode_label", raw: "xn--nxasmq6b.com", want: "xn--nxasmq6b.com" },
  { name: "accepts_ipv4", raw: "127.0.0.1", want: "127.0.0.1" },
  { name: "strips_port_from_ipv4", raw: "10.0.0.1:80", want: "10.0.0.1" },
  { name: "strips_port_from_ipv6", raw: "[::1]:8080", want: "[::1]" },
  { name: "accepts_bare_bracketed_ipv6", raw: "[::1]", want: "[::1]" },
  { name: "lowercases_ipv6", raw: "[2001:DB8::1]", want: "[2001:db8::1]" },
  { name: "accepts_63_character_label", raw: `${label(63)}.com`, want: `${label(63)}.com` },
  { name: "accepts_253_character_name", raw: name253, want: name253 },
  { name: "accepts_253_character_name_with_trailing_dot", raw: `${name253}.`, want: name253 },
  { name: "rejects_254_character_name", raw: `${name253}d`, want: null },
  { name: "rejects_very_long_raw_value", raw: `${label(300)}.com`, want: null },
  { name: "rejects_undefined", raw: undefined, want: null },
  { name: "rejects_empty", raw: "", want: null },
  { name: "rejects_lone_dot", raw: ".", want: null },
  { name: "rejects_underscore", raw: "a_b.example.com", want: null },
  { name: "rejects_inner_space", raw: "a b", want: null },
  { name: "rejects_leading_space", raw: " example.com", want: null },
  { name: "rejects_empty_label", raw: "a..b", want: null },
  { name: "rejects_leading_dot", raw: ".example.com", want: null },
  { name: "rejects_two_trailing_dots", raw: "example.com..", want: null },
  { name: "rejects_label_starting_with_hyphen", raw: "-a.com", want: null },
  { name: "rejects_label_ending_with_hyphen", raw: "a-.com", want: null },
  { name: "rejects_percent_encoded_host", raw: "exa%6Dple.com", want: null },
  { name: "rejects_userinfo_in_host", raw: "user@example.com", want: null },
  { name: "rejects_empty_port", raw: "example.com:", want: null },
  { name: "rejects_non_numeric_port", raw: "example.com:abc", want: null },
  { name: "rejects_six_digit_port", raw: "example.com:123456", want: null },
  { name: "rejects_negative_port", raw: "example.com:-1", want: null },
  { name: "rejects_two_ports", raw: "example.com:80:80", want: null },
  { name: "rejects_unbracketed_ipv6", raw: "::1", want: null },
  { name: "rejects_unclosed_ipv6_bracket", raw: "[::1", want: null },
  { name: "rejects_empty_brackets", raw: "[]", want: null },
  { name: "rejects_non_hex_ipv6", raw: "[zz::1]", want: null },
  { name: "rejects_garbage_after_ipv6", raw: "[::1]x", want: null },
  { name: "rejects_empty_port_after_ipv6", raw: "[::1]:", want: null },
  { name: "rejects_raw_non_ascii_host", raw: `caf${ch(0xe9)}.com`, want: null },
];

describe("canonicalHost: named cases", () => {
  it("has_at_least_20_uniquely_named_rows", () => {
    expect(hostRows.length).toBeGreaterThanOrEqual(20);
    expect(new Set(hostRows.map((r) => r.name)).size).toBe(hostRows.length);
  });

  it.each(hostRows)("$name", ({ raw, want }) => {
    expect(canonicalHost(raw)).toBe(want);
  });
});

// --- property tests ---

/** Interesting pieces, weighted by repetition: plain characters, dot forms, slashes and escapes. */
const PIECES: readonly string[] = [
  ..."/".repeat(6),
  ...Array<string>(3).fill("."),
  ...Array<string>(3).fill(".."),
  "%2e",
  "%2E",
  "%2e%2e",
  ".%2E",
  "%2f",
  "%2F",
  "%5c",
  "%25",
  "%252e",
  "%41",
  "%61",
  "%7e",
  "%2D",
  "%3a",
  "%3F",
  "%20",
  "%00",
  "%0a",
  "%7F",
  "%C3%A9",
  "%c3%a9",
  "%E2%82%AC",
  "%F0%9F%98%80",
  "%C0%AE",
  "%E0%80%AF",
  "%ED%A0%80",
  "%80",
  "%C3",
  ";",
  ";a=b",
  ...Array<string>(4).fill("a"),
  ...Array<string>(2).fill("B"),
  "admin",
  "public",
  "~",
  "-",
  "_",
  "!",
  "@",
  ":",
  "=",
  "?",
  "#",
  "%",
  "%4",
  "%zz",
  "\\",
  "//",
  ...Array<string>(2).fill("/./"),
  ...Array<string>(2).fill("/../"),
  " ",
  "\t",
  '"',
  "<",
  "{",
  "|",
  ch(0xe9),
];

const piecesArb = fc.array(fc.constantFrom(...PIECES), { maxLength: 16 }).map((p) => p.join(""));

/** Targets built from the pieces, mostly origin-form, some absolute-form, some with a query. */
const targetArb: fc.Arbitrary<string> = fc
  .tuple(
    fc.constantFrom("/", "/", "/", "/", "//", "http://example.com/", "HTTPS://Example.com:8443", ""),
    piecesArb,
    fc.option(
      fc.array(fc.constantFrom("a", "=", "&", "%2F", "%41", "?", "/", "%", "#", "b"), { maxLength: 6 }),
    ),
  )
  .map(([prefix, path, query]) => prefix + path + (query === null ? "" : `?${query.join("")}`));

const RUNS = 2_000;
const UNRESERVED = /^[A-Za-z0-9\-._~!$&'()*+,;=:@]$/; // what canonicalization decodes

/** The escapes of a canonical path, as [index, hex] pairs. */
function escapesOf(path: string): [number, string][] {
  const out: [number, string][] = [];
  for (let i = 0; i < path.length; i++) {
    if (path[i] === "%") {
      out.push([i, path.slice(i + 1, i + 3)]);
      i += 2;
    }
  }
  return out;
}

function accepted(r: CanonicalTarget): r is Extract<CanonicalTarget, { ok: true }> {
  return r.ok;
}

describe("canonicalizeTarget: properties", () => {
  it.each([true, false])("canonicalization_is_idempotent (mergeSlashes %s)", (mergeSlashes) => {
    let acceptedCount = 0;
    fc.assert(
      fc.property(targetArb, (target) => {
        const first = canonicalizeTarget(target, { mergeSlashes });
        if (!accepted(first)) return;
        acceptedCount++;
        const again = canonicalizeTarget(first.query ? `${first.path}?${first.query}` : first.path, {
          mergeSlashes,
        });
        expect(again).toEqual({ ok: true, path: first.path, query: first.query, host: null });
      }),
      { numRuns: RUNS },
    );
    expect(acceptedCount).toBeGreaterThan(RUNS / 10);
  });

  it.each([true, false])(
    "canonical_paths_have_no_dot_segments_or_forbidden_escapes (mergeSlashes %s)",
    (mergeSlashes) => {
      let acceptedCount = 0;
      fc.assert(
        fc.property(targetArb, (target) => {
          const r = canonicalizeTarget(target, { mergeSlashes });
          if (!accepted(r)) return;
          acceptedCount++;
          const { path, query } = r;
          expect(path.startsWith("/")).toBe(true);
          for (const seg of path.split("/")) expect(seg === "." || seg === "..").toBe(false);
          expect(path).not.toMatch(/%2F|%5C|%00/i);
          expect(path).not.toMatch(/[#\\?]/);
          expect(path).toMatch(/^[A-Za-z0-9\-._~!$&'()*+,;=:@/%]*$/);
          for (const [, hex] of escapesOf(path)) {
            expect(hex).toMatch(/^[0-9A-F]{2}$/);
            expect(UNRESERVED.test(String.fromCharCode(parseInt(hex, 16)))).toBe(false);
          }
          if (mergeSlashes) expect(path).not.toContain("//");
          expect(query).not.toContain("#");
        }),
        { numRuns: RUNS },
      );
      expect(acceptedCount).toBeGreaterThan(RUNS / 10);
    },
  );

  it("canonicalization_never_throws", () => {
    const anyString = fc.oneof(
      fc.string({ unit: "binary", maxLength: 64 }),
      fc.string({ unit: "grapheme", maxLength: 32 }),
      fc.string({
        unit: fc.constantFrom("/", ".", "%", "2", "e", "F", "C", "0", "?", "#", "\\", ":"),
        maxLength: 40,
      }),
      targetArb,
      fc.string({ maxLength: 40 }).map((s) => `http://${s}`),
    );
    fc.assert(
      fc.property(anyString, fc.boolean(), (s, mergeSlashes) => {
        const r = canonicalizeTarget(s, { mergeSlashes });
        expect(typeof r.ok).toBe("boolean");
        const h = canonicalHost(s);
        expect(h === null || typeof h === "string").toBe(true);
      }),
      { numRuns: RUNS * 2 },
    );
  });

  it("percent_decoding_unreserved_commutes", () => {
    let acceptedCount = 0;
    fc.assert(
      fc.property(
        targetArb,
        fc.boolean(),
        fc.array(fc.integer({ min: 0, max: 3 }), { minLength: 32, maxLength: 32 }),
        (target, mergeSlashes, choices) => {
          const r = canonicalizeTarget(target, { mergeSlashes });
          if (!accepted(r)) return;
          acceptedCount++;
          let encoded = "";
          for (let i = 0, k = 0; i < r.path.length; i++) {
            const c = r.path[i]!;
            if (c === "%") {
              encoded += r.path.slice(i, i + 3);
              i += 2;
              continue;
            }
            const choice = choices[k++ % choices.length]!;
            if (!UNRESERVED.test(c) || choice === 0) {
              encoded += c;
              continue;
            }
            const hex = c.charCodeAt(0).toString(16).padStart(2, "0");
            encoded += `%${choice === 1 ? hex.toUpperCase() : choice === 2 ? hex.toLowerCase() : hex[0]!.toUpperCase() + hex[1]!.toLowerCase()}`;
          }
          const again = canonicalizeTarget(encoded, { mergeSlashes });
          expect(again).toEqual({ ok: true, path: r.path, query: "", host: null });
        },
      ),
      { numRuns: RUNS },
    );
    expect(acceptedCount).toBeGreaterThan(RUNS / 10);
  });
});

describe("canonicalizeTarget: bypass corpus", () => {
  const corpus = bypassCorpus();

  it.each([true, false])(
    "every_accepted_variant_matches_the_reference_resolver (mergeSlashes %s)",
    (merge) => {
      expect(corpus.length).toBeGreaterThanOrEqual(600);
      let acceptedCount = 0;
      let rejectedCount = 0;
      let stricterThanReference = 0;
      let publicToAdmin = 0;
      const mismatches: string[] = [];
      for (const target of corpus) {
        const got = canonicalizeTarget(target, { mergeSlashes: merge });
        const ref = referencePath(target, merge);
        if (!got.ok) {
          rejectedCount++;
          if (ref !== null) stricterThanReference++;
          continue;
        }
        acceptedCount++;
        if (got.path !== ref) mismatches.push(`${target} -> ${got.path} (reference: ${String(ref)})`);
        if (target.startsWith("/public") && got.path.startsWith("/admin")) publicToAdmin++;
        if (
          target.startsWith("/public") &&
          got.path.startsWith("/admin") &&
          !(ref ?? "").startsWith("/admin")
        ) {
          mismatches.push(`${target} reaches /admin from /public without the reference agreeing`);
        }
      }
      console.log(
        `bypass corpus (mergeSlashes ${merge}): ${corpus.length} variants, ${acceptedCount} accepted, ${rejectedCount} rejected ` +
          `(${stricterThanReference} rejected although the reference resolves them; ` +
          `${publicToAdmin} accepted /public variants resolve under /admin, all as the reference does)`,
      );
      expect(mismatches).toEqual([]);
      expect(stricterThanReference).toBe(0);
      expect(acceptedCount + rejectedCount).toBe(corpus.length);
      expect(acceptedCount).toBeGreaterThan(0);
      expect(rejectedCount).toBeGreaterThan(0);
    },
  );
});
