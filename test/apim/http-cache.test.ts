/**
 * The pure HTTP pieces of static serving as tables: Range parsing, validators and preconditions
 * (If-None-Match, If-Modified-Since, If-Range), Accept-Encoding qualities, and the mapping of canonical
 * paths onto files (traversal attempts: `..`, encoded, dotfiles, NUL, backslashes).
 */
import { describe, expect, it } from "vitest";
import {
  encodingQuality,
  ifRangeHolds,
  makeEtag,
  noneMatch,
  notModified,
  parseRange,
} from "../../runtime/apim/http-cache.ts";
import { contentTypeOf, mapStaticPath } from "../../runtime/apim/static.ts";

describe("range parsing", () => {
  it.each([
    ["parses_a_closed_range", "bytes=0-99", 1000, { kind: "range", start: 0, end: 99 }],
    ["parses_an_open_range", "bytes=900-", 1000, { kind: "range", start: 900, end: 999 }],
    ["parses_a_suffix_range", "bytes=-100", 1000, { kind: "range", start: 900, end: 999 }],
    ["clamps_a_suffix_longer_than_the_file", "bytes=-5000", 1000, { kind: "range", start: 0, end: 999 }],
    ["clamps_an_end_past_the_file", "bytes=500-5000", 1000, { kind: "range", start: 500, end: 999 }],
    ["parses_a_single_byte", "bytes=5-5", 1000, { kind: "range", start: 5, end: 5 }],
    ["accepts_the_unit_in_any_case", "Bytes=0-0", 10, { kind: "range", start: 0, end: 0 }],
    ["accepts_spaces_around_the_spec", "bytes= 1-2 ", 10, { kind: "range", start: 1, end: 2 }],
    ["refuses_a_start_at_the_end", "bytes=1000-", 1000, { kind: "unsatisfiable" }],
    ["refuses_a_start_past_the_end", "bytes=2000-3000", 1000, { kind: "unsatisfiable" }],
    ["refuses_a_zero_suffix", "bytes=-0", 1000, { kind: "unsatisfiable" }],
    ["refuses_any_range_of_an_empty_file", "bytes=0-", 0, { kind: "unsatisfiable" }],
    ["refuses_a_suffix_of_an_empty_file", "bytes=-1", 0, { kind: "unsatisfiable" }],
    ["treats_a_huge_start_as_unsatisfiable", "bytes=99999999999999999999-", 1000, { kind: "unsatisfiable" }],
    ["ignores_a_missing_header", undefined, 1000, { kind: "none" }],
    ["ignores_another_unit", "items=0-1", 1000, { kind: "none" }],
    ["ignores_a_reversed_range", "bytes=10-5", 1000, { kind: "none" }],
    ["ignores_several_ranges", "bytes=0-1,5-6", 1000, { kind: "none" }],
    ["ignores_a_non_numeric_range", "bytes=a-b", 1000, { kind: "none" }],
    ["ignores_a_negative_start", "bytes=--5", 1000, { kind: "none" }],
    ["ignores_a_spec_without_dash", "bytes=5", 1000, { kind: "none" }],
    ["ignores_a_lone_dash", "bytes=-", 1000, { kind: "none" }],
    ["ignores_plus_signs", "bytes=+1-2", 1000, { kind: "none" }],
  ] as const)("%s", (_claim, header, size, expected) => {
    expect(parseRange(header, size)).toEqual(expected);
  });
});

describe("validators and preconditions", () => {
  const mtime = Date.UTC(2026, 0, 2, 3, 4, 5, 678);
  const etag = makeEtag(1234, mtime, null);
  const lastModified = new Date(mtime).toUTCString();

  it("makes_distinct_strong_etags_per_coding", () => {
    expect(etag).toMatch(/^"[0-9a-f]+-[0-9a-f]+"$/);
    expect(makeEtag(1234, mtime, "br")).not.toBe(etag);
    expect(makeEtag(1234, mtime + 1000, null)).not.toBe(etag);
    expect(makeEtag(1235, mtime, null)).not.toBe(etag);
  });

  it.each([
    ["matches_the_same_tag", () => etag, true],
    ["matches_the_weak_form_of_the_tag", () => `W/${etag}`, true],
    ["matches_a_tag_in_a_list", () => `"other", ${etag}`, true],
    ["matches_star", () => "*", true],
    ["refuses_another_tag", () => '"other"', false],
    ["refuses_a_malformed_list", () => "abc", false],
  ])("if_none_match_%s", (_claim, header, expected) => {
    expect(noneMatch(header(), etag)).toBe(expected);
  });

  it.each([
    ["answers_304_for_a_matching_etag", etag, undefined, true],
    ["answers_304_for_an_unchanged_date", undefined, lastModified, true],
    ["answers_304_for_a_later_date", undefined, new Date(mtime + 60_000).toUTCString(), true],
    ["answers_200_for_an_earlier_date", undefined, new Date(mtime - 60_000).toUTCString(), false],
    ["answers_200_for_an_invalid_date", undefined, "yesterday", false],
    ["lets_if_none_match_win_over_the_date", '"other"', lastModified, false],
    ["answers_200_without_preconditions", undefined, undefined, false],
  ])("%s", (_claim, inm, ims, expected) => {
    expect(notModified(inm, ims, etag, mtime)).toBe(expected);
  });

  it.each([
    ["holds_without_if_range", undefined, true],
    ["holds_for_the_same_strong_etag", etag, true],
    ["fails_for_a_weak_etag", `W/${etag}`, false],
    ["fails_for_another_etag", '"other"', false],
    ["holds_for_the_exact_last_modified_date", lastModified, true],
    ["fails_for_another_date", new Date(mtime + 1000).toUTCString(), false],
    ["fails_for_garbage", "garbage", false],
  ])("if_range_%s", (_claim, header, expected) => {
    expect(ifRangeHolds(header, etag, mtime)).toBe(expected);
  });
});

describe("accept-encoding", () => {
  it.each([
    ["gives_q1_to_a_listed_coding", "gzip, br", "br", 1],
    ["reads_a_q_value", "gzip;q=0.5, br;q=0.8", "gzip", 0.5],
    ["refuses_a_coding_with_q0", "br;q=0, gzip", "br", 0],
    ["uses_star_for_unlisted_codings", "*;q=0.3", "br", 0.3],
    ["prefers_the_explicit_value_over_star", "br;q=0, *", "br", 0],
    ["gives_0_without_a_header", undefined, "gzip", 0],
    ["gives_0_to_unlisted_codings", "deflate", "gzip", 0],
    ["gives_0_for_a_malformed_q", "br;q=abc", "br", 0],
  ])("%s", (_claim, header, coding, q) => {
    expect(encodingQuality(header, coding)).toBe(q);
  });
});

describe("static path mapping", () => {
  it.each([
    [
      "maps_the_rest_after_the_prefix",
      "/app/js/main.js",
      1,
      { segments: ["js", "main.js"], directory: false },
    ],
    ["maps_the_prefix_itself_to_the_root", "/app", 1, { segments: [], directory: false }],
    ["maps_the_prefix_with_a_slash_to_the_root_directory", "/app/", 1, { segments: [], directory: true }],
    ["maps_a_trailing_slash_to_a_directory", "/app/docs/", 1, { segments: ["docs"], directory: true }],
    [
      "maps_the_whole_path_without_a_rest_pattern",
      "/favicon.ico",
      0,
      { segments: ["favicon.ico"], directory: false },
    ],
    ["decodes_percent_escapes", "/app/my%20file.txt", 1, { segments: ["my file.txt"], directory: false }],
    ["decodes_utf8", "/app/%E6%97%A5.txt", 1, { segments: ["日.txt"], directory: false }],
    ["refuses_a_dot_dot_segment", "/app/../etc/passwd", 1, null],
    ["refuses_a_dot_segment", "/app/./x", 1, null],
    ["refuses_an_encoded_dot_dot", "/app/%2e%2e/secret", 1, null],
    ["refuses_an_encoded_slash", "/app/a%2F..%2F..%2Fetc", 1, null],
    ["refuses_an_encoded_backslash", "/app/..%5C..%5Cetc", 1, null],
    ["refuses_a_nul", "/app/index.html%00.png", 1, null],
    ["refuses_a_control_character", "/app/a%0Ab", 1, null],
    ["refuses_a_dotfile", "/app/.env", 1, null],
    ["refuses_a_dot_directory", "/app/.git/config", 1, null],
    ["refuses_an_encoded_dotfile", "/app/%2Ehtpasswd", 1, null],
    ["refuses_an_empty_segment", "/app/a//b", 1, null],
    ["refuses_a_malformed_escape", "/app/%E0%A4", 1, null],
    ["refuses_a_relative_path", "app/x", 0, null],
  ] as const)("%s", (_claim, path, prefix, expected) => {
    expect(mapStaticPath(path, prefix)).toEqual(expected);
  });

  it.each([
    ["index.html", "text/html; charset=utf-8"],
    ["app.JS", "text/javascript; charset=utf-8"],
    ["data.json", "application/json"],
    ["logo.svg", "image/svg+xml"],
    ["font.woff2", "font/woff2"],
    ["archive.tar.unknown", "application/octet-stream"],
    ["Makefile", "application/octet-stream"],
    ["x.constructor", "application/octet-stream"],
  ])("gives_%s_its_content_type", (name, type) => {
    expect(contentTypeOf(name)).toBe(type);
  });
});
