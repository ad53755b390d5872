/**
 * What an access line keeps of a refused request's target and authority: never a credential — no
 * userinfo (a password may hold "/" or "@"), no query or fragment (tokens travel in both) — and the host
 * where one can be told.
 */
import { describe, expect, it } from "vitest";
import { loggedAuthority, loggedTarget } from "../../runtime/telemetry/logs.ts";

describe("loggedAuthority", () => {
  it.each([
    ["keeps_a_host_and_port", "api.example:443", "api.example:443"],
    ["drops_userinfo", "user:pw@api.example:443", "api.example:443"],
    ["drops_userinfo_holding_an_at_sign", "user:p@ss@api.example", "api.example"],
    ["drops_userinfo_holding_a_slash", "user:pa/ss@api.example:443", "api.example:443"],
    ["drops_a_query_after_a_connect_target", "h.example:443/x?access_token=SECRET", "h.example:443"],
    ["drops_a_query_holding_an_at_sign", "h.example:443/?token=abc@def", "h.example:443"],
    ["drops_a_fragment", "h.example:443#token=SECRET", "h.example:443"],
    ["drops_a_path", "h.example:443/private/x", "h.example:443"],
    ["cuts_at_the_limit", "a".repeat(300), "a".repeat(255)],
  ])("%s", (_claim, authority, logged) => {
    expect(loggedAuthority(authority)).toBe(logged);
  });
});

describe("loggedTarget", () => {
  it.each([
    ["keeps_a_path", "/api/x", "/api/x"],
    ["drops_a_query", "/api/x?access_token=SECRET", "/api/x"],
    ["drops_a_fragment", "/x#token=SECRET", "/x"],
    ["drops_a_fragment_before_a_query", "/x#a?token=SECRET", "/x"],
    ["drops_userinfo_of_an_absolute_target", "https://user:pw@h.example/x", "https://h.example/x"],
    ["drops_userinfo_holding_a_slash", "https://user:pa/ss@h.example/x", "https://h.example/x"],
    ["drops_userinfo_holding_an_at_sign", "http://u:p@ss@h.example/x?q=1", "http://h.example/x"],
    ["keeps_an_absolute_target_without_userinfo", "http://h.example/x?q=1", "http://h.example/x"],
    ["never_keeps_what_precedes_an_at_sign_in_the_path", "http://h.example/users/@me", "http://me"],
    ["cuts_at_200_characters", `/${"a".repeat(300)}`, `/${"a".repeat(199)}`],
  ])("%s", (_claim, target, logged) => {
    expect(loggedTarget(target)).toBe(logged);
  });
});
