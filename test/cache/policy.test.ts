/**
 * The pure caching policy (runtime/cache/policy.ts), table-driven: each row is a claim and cites the
 * section of RFC 9111 (HTTP Caching), RFC 9110 (HTTP Semantics) or RFC 9211 (Cache-Status) it follows,
 * or says where the gateway chose within the room the RFC leaves.
 */
import { describe, expect, it } from "vitest";
import {
  appendCacheStatus,
  cacheStatusMember,
  currentAgeMs,
  entryRange,
  freshenHeaders,
  hostOfKey,
  freshnessLifetimeMs,
  initialAgeMs,
  isServerError,
  longestStaleMs,
  mayServeOnError,
  mayServeWhileRevalidating,
  noneMatchHits,
  notModified,
  notModifiedSelects,
  notStorable,
  parseAgeSeconds,
  parseCacheControl,
  parseHttpDate,
  parseVary,
  primaryKey,
  requestBypass,
  requestCacheControl,
  reuse,
  secondaryKey,
  staleWindowsMs,
  urlOfKey,
  type CacheControl,
  type FreshnessFacts,
  type HeaderBag,
  type NotStoredReason,
  type StorableInput,
  credentialHeaders,
  upstreamMethod,
  upstreamMethods,
} from "../../runtime/cache/policy.ts";

const T0 = Date.UTC(2026, 0, 1, 12, 0, 0);
const httpDate = (ms: number) => new Date(ms).toUTCString();

describe("parseCacheControl", () => {
  const rows: { name: string; value: string | string[]; want: Partial<CacheControl> }[] = [
    // RFC 9111 §5.2: directive names are case-insensitive.
    {
      name: "parses_directive_names_case_insensitively",
      value: "Max-Age=60, PUBLIC",
      want: { maxAge: 60, public: true },
    },
    // RFC 9111 §5.2: quoted-string arguments may hold commas.
    {
      name: "keeps_commas_inside_quoted_arguments",
      value: 'no-cache="set-cookie, x-a", max-age=5',
      want: { noCache: true, maxAge: 5 },
    },
    // RFC 9111 §4.2.1: more than one max-age → the response should be considered stale.
    { name: "treats_duplicate_max_age_as_stale", value: "max-age=60, max-age=120", want: { maxAge: 0 } },
    // RFC 9111 §4.2.1: invalid freshness information → stale.
    { name: "treats_invalid_max_age_as_stale", value: "max-age=soon", want: { maxAge: 0 } },
    { name: "treats_negative_s_maxage_as_stale", value: "s-maxage=-5", want: { sMaxAge: 0 } },
    // RFC 9111 §5.2: recipients accept the quoted form of a token argument.
    { name: "accepts_quoted_delta_seconds", value: 'max-age="30"', want: { maxAge: 30 } },
    // RFC 9111 §1.2.2: delta-seconds beyond 2^31 are taken as 2^31.
    { name: "caps_delta_seconds_at_2_pow_31", value: "max-age=99999999999", want: { maxAge: 2147483648 } },
    // RFC 9111 §5.2.1.2: max-stale without a value accepts any staleness.
    { name: "reads_max_stale_without_value_as_unbounded", value: "max-stale", want: { maxStale: Infinity } },
    // RFC 9110 §5.3: several field lines are one comma-separated list.
    {
      name: "combines_several_field_lines",
      value: ["private", "max-age=10"],
      want: { private: true, maxAge: 10 },
    },
    // RFC 9111 §5.2.2.7: the qualified form of private is handled as unqualified (allowed by the RFC).
    { name: "treats_qualified_private_as_private", value: 'private="x-user"', want: { private: true } },
    { name: "ignores_unknown_directives", value: "immutable, foo=bar, no-store", want: { noStore: true } },
    {
      name: "reads_request_directives",
      value: "only-if-cached, min-fresh=5, max-stale=30",
      want: { onlyIfCached: true, minFresh: 5, maxStale: 30 },
    },
    // RFC 5861 §3, §4: delta-seconds arguments.
    {
      name: "reads_stale_while_revalidate_and_stale_if_error",
      value: "max-age=60, stale-while-revalidate=30, stale-if-error=86400",
      want: { maxAge: 60, staleWhileRevalidate: 30, staleIfError: 86400 },
    },
    // RFC 5861 §3: the argument is required; an invalid one grants nothing.
    {
      name: "ignores_stale_directives_without_a_valid_argument",
      value: "stale-while-revalidate, stale-if-error=soon",
      want: { staleWhileRevalidate: null, staleIfError: null },
    },
  ];
  it.each(rows)("$name", ({ value, want }) => {
    expect(parseCacheControl(value)).toMatchObject(want);
  });

  it("pragma_no_cache_means_no_cache_without_cache_control", () => {
    // RFC 9111 §5.4: Pragma: no-cache is no-cache only when Cache-Control is absent.
    expect(requestCacheControl(undefined, "no-cache").noCache).toBe(true);
    expect(requestCacheControl("max-age=60", "no-cache").noCache).toBe(false);
    expect(requestCacheControl(undefined, undefined).noCache).toBe(false);
  });
});

describe("requestBypass", () => {
  const rows: {
    name: string;
    method: string;
    headers: HeaderBag;
    principal?: string;
    perPrincipal?: boolean;
    credentials?: string[];
    hasBody?: boolean;
    want: ReturnType<typeof requestBypass>;
  }[] = [
    { name: "looks_up_a_plain_get", method: "GET", headers: {}, want: null },
    { name: "looks_up_a_plain_head", method: "HEAD", headers: {}, want: null },
    // RFC 9111 §2: the cache serves GET (and HEAD from GET responses); other methods pass.
    { name: "bypasses_post", method: "POST", headers: {}, want: "method" },
    // RFC 9111 §3.5 (stricter: the shared cache never holds responses to credentialed requests).
    {
      name: "bypasses_authorization_header_on_shared_route",
      method: "GET",
      headers: { authorization: "Bearer x" },
      want: "authorization",
    },
    {
      name: "bypasses_gateway_authenticated_principal_on_shared_route",
      method: "GET",
      headers: {},
      principal: "alice",
      want: "authorization",
    },
    {
      name: "caches_principal_on_per_principal_route",
      method: "GET",
      headers: { authorization: "Bearer x" },
      principal: "alice",
      perPrincipal: true,
      want: null,
    },
    {
      name: "bypasses_authorization_without_principal_on_per_principal_route",
      method: "GET",
      headers: { authorization: "Bearer x" },
      perPrincipal: true,
      want: "no-principal",
    },
    {
      // A principal without a subject (a JWT without `sub`) names no one: keyed by it, every such
      // principal would share one entry.
      name: "bypasses_a_principal_without_a_subject_on_per_principal_route",
      method: "GET",
      headers: { authorization: "Bearer x" },
      principal: "",
      perPrincipal: true,
      want: "no-principal",
    },
    {
      name: "bypasses_a_principal_without_a_subject_on_shared_route",
      method: "GET",
      headers: {},
      principal: "",
      want: "authorization",
    },
    {
      name: "bypasses_a_configured_api_key_header",
      method: "GET",
      headers: { "x-api-key": "k" },
      credentials: ["authorization", "x-api-key"],
      want: "authorization",
    },
    {
      name: "looks_up_an_unconfigured_api_key_header",
      method: "GET",
      headers: { "x-api-key": "k" },
      want: null,
    },
    // RFC 9111 §3.4 is not implemented (partial responses are not stored), but a stored 200 answers a
    // range (entryRange): range requests are looked up; the engine bypasses the store when it forwards.
    { name: "looks_up_range_requests", method: "GET", headers: { range: "bytes=0-9" }, want: null },
    // RFC 9110 §13.1.1/§13.1.4: If-Match/If-Unmodified-Since are for the origin to evaluate.
    { name: "bypasses_if_match", method: "GET", headers: { "if-match": '"a"' }, want: "precondition" },
    {
      name: "bypasses_get_with_body",
      method: "GET",
      headers: { "content-length": "5" },
      want: "request-body",
    },
    { name: "looks_up_get_with_empty_body", method: "GET", headers: { "content-length": "0" }, want: null },
    // HTTP/2: a body framed by DATA frames alone (no Content-Length, no Transfer-Encoding).
    {
      name: "bypasses_get_with_a_body_no_header_announces",
      method: "GET",
      headers: {},
      hasBody: true,
      want: "request-body",
    },
    {
      name: "bypasses_head_with_a_body_no_header_announces",
      method: "HEAD",
      headers: {},
      hasBody: true,
      want: "request-body",
    },
  ];
  it.each(rows)("$name", ({ method, headers, principal, perPrincipal, credentials, hasBody, want }) => {
    expect(
      requestBypass(method, headers, principal ?? null, perPrincipal ?? false, credentials, hasBody),
    ).toBe(want);
  });
});

describe("the method a forwarded request is sent with (HEAD fills with GET)", () => {
  const principalRoute = { principal: "alice", perPrincipal: true };
  const apiKeys = { credentials: credentialHeaders("X-Api-Key") };
  it.each<
    [
      string,
      string,
      HeaderBag,
      string,
      { principal?: string; perPrincipal?: boolean; credentials?: readonly string[] }?,
    ]
  >([
    ["sends_a_head_that_may_fill_as_a_get", "HEAD", {}, "GET"],
    ["sends_a_get_as_a_get", "GET", {}, "GET"],
    ["sends_a_post_as_a_post", "POST", {}, "POST"],
    ["sends_a_head_with_no_store_as_a_head", "HEAD", { "cache-control": "no-store" }, "HEAD"],
    ["sends_a_head_with_no_cache_as_a_get", "HEAD", { pragma: "no-cache" }, "GET"],
    [
      "sends_a_head_with_credentials_on_a_shared_route_as_a_head",
      "HEAD",
      { authorization: "Bearer x" },
      "HEAD",
    ],
    [
      "sends_a_head_with_the_gateways_api_key_header_as_a_head",
      "HEAD",
      { "x-api-key": "k" },
      "HEAD",
      apiKeys,
    ],
    [
      "sends_a_head_of_a_principal_on_a_per_principal_route_as_a_get",
      "HEAD",
      { authorization: "Bearer x" },
      "GET",
      principalRoute,
    ],
    ["sends_a_head_with_a_precondition_as_a_head", "HEAD", { "if-match": '"a"' }, "HEAD"],
  ])("%s", (_claim, method, headers, want, o = {}) => {
    expect(upstreamMethod(method, headers, o.principal ?? null, o.perPrincipal ?? false, o.credentials)).toBe(
      want,
    );
  });

  it.each<[string, string[], string[]]>([
    ["adds_get_to_a_route_matching_head_alone", ["HEAD"], ["HEAD", "GET"]],
    ["keeps_a_route_matching_get_and_head", ["GET", "HEAD"], ["GET", "HEAD"]],
    ["keeps_a_route_matching_every_method", [], []],
    ["keeps_a_route_without_head", ["POST"], ["POST"]],
  ])("%s", (_claim, methods, want) => {
    expect(upstreamMethods(methods)).toEqual(want);
  });

  it.each<[string, string | undefined, string[], string[]]>([
    ["names_authorization_without_an_api_key_header", undefined, [], ["authorization"]],
    ["adds_the_api_key_header_in_lower_case", "X-Api-Key", [], ["authorization", "x-api-key"]],
    ["names_authorization_once_when_it_carries_api_keys", "Authorization", [], ["authorization"]],
    [
      "adds_the_jwt_providers_token_headers",
      undefined,
      ["x-token", "authorization"],
      ["authorization", "x-token"],
    ],
    ["names_a_header_both_carry_once", "X-Token", ["x-token"], ["authorization", "x-token"]],
  ])("%s", (_claim, header, tokenHeaders, want) => {
    expect(credentialHeaders(header, tokenHeaders)).toEqual(want);
  });
});

describe("notStorable", () => {
  const base: StorableInput = {
    method: "GET",
    status: 200,
    request: parseCacheControl(undefined),
    response: parseCacheControl(undefined),
    headers: { "content-length": "10" },
    routeTtlMs: 30_000,
    maxEntryBytes: 1024,
    framed: true,
  };
  const res = (
    cc: string | undefined,
    headers: HeaderBag = {},
    more: Partial<StorableInput> = {},
  ): StorableInput => ({
    ...base,
    response: parseCacheControl(cc),
    headers: { "content-length": "10", ...(cc ? { "cache-control": cc } : {}), ...headers },
    ...more,
  });
  const etag = { etag: '"v1"' };
  const rows: { name: string; input: StorableInput; want: NotStoredReason | null }[] = [
    // RFC 9111 §3 + §4.2.2: 200 is heuristically cacheable; the route TTL is the heuristic.
    { name: "stores_200_without_directives_with_route_ttl", input: res(undefined), want: null },
    { name: "stores_200_with_max_age", input: res("max-age=60"), want: null },
    // RFC 9111 §3: a HEAD response has no body to store.
    { name: "does_not_store_head_responses", input: res("max-age=60", {}, { method: "HEAD" }), want: "head" },
    // RFC 9111 §5.2.1.5: request no-store.
    {
      name: "does_not_store_when_request_says_no_store",
      input: res("max-age=60", {}, { request: parseCacheControl("no-store") }),
      want: "request-no-store",
    },
    // RFC 9111 §5.2.2.5.
    { name: "does_not_store_no_store", input: res("no-store, max-age=60"), want: "no-store" },
    // RFC 9111 §5.2.2.3: must-understand overrides no-store for an understood status.
    {
      name: "stores_no_store_with_must_understand_for_understood_status",
      input: res("must-understand, no-store, max-age=60"),
      want: null,
    },
    // RFC 9111 §5.2.2.7: shared caches never store private.
    { name: "does_not_store_private", input: res("private, max-age=60"), want: "private" },
    { name: "does_not_store_qualified_private", input: res('private="x-user", max-age=60'), want: "private" },
    // Gateway choice (as Envoy, Varnish, nginx).
    {
      name: "does_not_store_set_cookie",
      input: res("max-age=60", { "set-cookie": "a=b" }),
      want: "set-cookie",
    },
    // RFC 9111 §4.1: Vary: * never matches.
    { name: "does_not_store_vary_star", input: res("max-age=60", { vary: "Accept, *" }), want: "vary-star" },
    {
      name: "stores_vary_on_named_headers",
      input: res("max-age=60", { vary: "Accept-Encoding" }),
      want: null,
    },
    // Gateway choice (as Envoy): only the RFC 9110 §15.1 heuristic codes and 302/303/307.
    {
      name: "does_not_store_500_even_with_max_age",
      input: res("max-age=60", {}, { status: 500 }),
      want: "status",
    },
    { name: "does_not_store_206", input: res("max-age=60", {}, { status: 206 }), want: "status" },
    { name: "does_not_store_304", input: res("max-age=60", {}, { status: 304 }), want: "status" },
    { name: "stores_501_heuristically", input: res(undefined, {}, { status: 501 }), want: null },
    { name: "stores_404_heuristically", input: res(undefined, {}, { status: 404 }), want: null },
    // RFC 9111 §3: 302 needs explicit freshness (or public).
    {
      name: "does_not_store_302_without_freshness",
      input: res(undefined, {}, { status: 302 }),
      want: "no-freshness",
    },
    { name: "stores_302_with_max_age", input: res("max-age=60", {}, { status: 302 }), want: null },
    { name: "stores_302_marked_public", input: res("public", {}, { status: 302 }), want: null },
    // Route TTL 0 and nothing explicit: nothing to reuse without validation, and nothing to validate with.
    {
      name: "does_not_store_without_freshness_or_validator",
      input: res(undefined, {}, { routeTtlMs: 0 }),
      want: "no-freshness",
    },
    {
      name: "stores_zero_ttl_response_with_validator",
      input: res(undefined, etag, { routeTtlMs: 0 }),
      want: null,
    },
    { name: "does_not_store_max_age_0_without_validator", input: res("max-age=0"), want: "no-freshness" },
    { name: "stores_max_age_0_with_validator", input: res("max-age=0", etag), want: null },
    // RFC 5861: a response stale on arrival may still be served stale, so it is worth storing.
    {
      name: "stores_max_age_0_without_validator_that_may_be_served_on_error",
      input: res("max-age=0, stale-if-error=60"),
      want: null,
    },
    {
      name: "stores_max_age_0_without_validator_under_a_route_stale_default",
      input: res("max-age=0", {}, { stale: { staleWhileRevalidateMs: 10_000, staleIfErrorMs: 0 } }),
      want: null,
    },
    // RFC 9111 §5.3: an invalid Expires ("0") means already expired.
    {
      name: "does_not_store_expired_without_validator",
      input: res(undefined, { expires: "0" }),
      want: "no-freshness",
    },
    // RFC 9111 §5.2.2.4: no-cache → store, but always revalidate: only useful with a validator.
    { name: "does_not_store_no_cache_without_validator", input: res("no-cache"), want: "no-freshness" },
    {
      name: "stores_no_cache_with_validator",
      input: res("no-cache", { "last-modified": httpDate(T0) }),
      want: null,
    },
    // RFC 9111 §3.3/§3.4: incomplete responses are never stored; a close-delimited end cannot be told apart.
    {
      name: "does_not_store_close_delimited_body",
      input: res("max-age=60", {}, { framed: false }),
      want: "unframed",
    },
    {
      name: "does_not_store_declared_length_over_max_entry",
      input: res("max-age=60", { "content-length": "2048" }),
      want: "too-large",
    },
  ];
  it.each(rows)("$name", ({ input, want }) => {
    expect(notStorable(input)).toBe(want);
  });
});

describe("freshnessLifetimeMs", () => {
  const date = httpDate(T0);
  const rows: {
    name: string;
    status?: number;
    cc?: string;
    headers?: HeaderBag;
    ttl?: number;
    want: number;
  }[] = [
    // RFC 9111 §4.2.1: s-maxage (shared caches) over max-age over Expires.
    { name: "prefers_s_maxage_over_max_age", cc: "max-age=60, s-maxage=10", want: 10_000 },
    {
      name: "prefers_max_age_over_expires",
      cc: "max-age=60",
      headers: { date, expires: httpDate(T0 + 5_000) },
      want: 60_000,
    },
    { name: "uses_expires_minus_date", headers: { date, expires: httpDate(T0 + 90_000) }, want: 90_000 },
    // RFC 9111 §4.2.1: without Date, the time the response was received.
    {
      name: "uses_response_time_when_date_is_absent",
      headers: { expires: httpDate(T0 + 20_000) },
      want: 20_000,
    },
    // RFC 9111 §5.3: an invalid Expires means expired.
    { name: "treats_invalid_expires_as_expired", headers: { expires: "0" }, want: 0 },
    { name: "never_negative_for_past_expires", headers: { date, expires: httpDate(T0 - 60_000) }, want: 0 },
    // RFC 9111 §4.2.2: heuristic freshness (the route TTL) only without explicit freshness.
    { name: "fills_in_route_ttl_without_explicit_freshness", ttl: 30_000, want: 30_000 },
    { name: "route_ttl_does_not_cap_explicit_max_age", cc: "max-age=3600", ttl: 30_000, want: 3_600_000 },
    { name: "route_ttl_does_not_extend_explicit_max_age", cc: "max-age=5", ttl: 30_000, want: 5_000 },
    { name: "no_heuristic_for_302", status: 302, ttl: 30_000, want: 0 },
    { name: "heuristic_for_public_302", status: 302, cc: "public", ttl: 30_000, want: 30_000 },
    // RFC 9111 §5.2.2.4: no-cache → every reuse is validated.
    { name: "no_cache_has_zero_lifetime", cc: "no-cache, max-age=60", want: 0 },
  ];
  it.each(rows)("$name", ({ status, cc, headers, ttl, want }) => {
    expect(freshnessLifetimeMs(status ?? 200, parseCacheControl(cc), headers ?? {}, T0, ttl ?? 30_000)).toBe(
      want,
    );
  });
});

describe("age", () => {
  // RFC 9111 §4.2.3 age calculation.
  const rows: { name: string; age: number; date: number | null; req: number; res: number; want: number }[] = [
    {
      name: "apparent_age_is_response_time_minus_date",
      age: 0,
      date: T0 - 5_000,
      req: T0,
      res: T0,
      want: 5_000,
    },
    {
      name: "corrected_age_adds_response_delay_to_upstream_age",
      age: 3,
      date: T0,
      req: T0 - 200,
      res: T0,
      want: 3_200,
    },
    {
      name: "takes_the_larger_of_apparent_and_corrected_age",
      age: 1,
      date: T0 - 10_000,
      req: T0,
      res: T0,
      want: 10_000,
    },
    {
      name: "clock_skew_future_date_gives_no_apparent_age",
      age: 0,
      date: T0 + 60_000,
      req: T0,
      res: T0,
      want: 0,
    },
    { name: "missing_date_gives_no_apparent_age", age: 2, date: null, req: T0, res: T0, want: 2_000 },
  ];
  it.each(rows)("$name", ({ age, date, req, res, want }) => {
    expect(initialAgeMs(age, date, req, res)).toBe(want);
  });

  it("current_age_adds_resident_time", () => {
    // RFC 9111 §4.2.3: current_age = corrected_initial_age + resident_time.
    const e: FreshnessFacts = {
      lifetimeMs: 60_000,
      initialAgeMs: 3_000,
      responseTime: T0,
      mustRevalidate: false,
    };
    expect(currentAgeMs(e, T0 + 7_000)).toBe(10_000);
  });

  it.each([
    // RFC 9111 §5.1: Age is delta-seconds; invalid values are ignored.
    { name: "reads_age_seconds", value: "10", want: 10 },
    { name: "ignores_non_numeric_age", value: "ten", want: 0 },
    { name: "ignores_negative_age", value: "-1", want: 0 },
    { name: "ignores_age_listed_twice", value: ["1", "2"], want: 0 },
  ])("$name", ({ value, want }) => {
    expect(parseAgeSeconds(value)).toBe(want);
  });
});

describe("reuse", () => {
  const facts = (lifetime: number, age: number, mustRevalidate = false): FreshnessFacts => ({
    lifetimeMs: lifetime,
    initialAgeMs: age,
    responseTime: T0,
    mustRevalidate,
  });
  const rows: {
    name: string;
    e: FreshnessFacts;
    req?: string;
    pragma?: string;
    want: ReturnType<typeof reuse>;
  }[] = [
    // RFC 9111 §4.2: fresh when lifetime > current age.
    { name: "serves_fresh_entry", e: facts(60_000, 10_000), want: "fresh" },
    { name: "validates_stale_entry", e: facts(60_000, 60_000), want: "validate" },
    // RFC 9111 §5.2.1.4.
    { name: "request_no_cache_forces_validation", e: facts(60_000, 0), req: "no-cache", want: "validate" },
    // RFC 9111 §5.4.
    {
      name: "request_pragma_no_cache_forces_validation",
      e: facts(60_000, 0),
      pragma: "no-cache",
      want: "validate",
    },
    // RFC 9111 §5.2.1.1: age must not exceed the request's max-age.
    {
      name: "request_max_age_0_validates_aged_entry",
      e: facts(60_000, 1_000),
      req: "max-age=0",
      want: "validate",
    },
    {
      name: "request_max_age_accepts_younger_entry",
      e: facts(60_000, 1_000),
      req: "max-age=5",
      want: "fresh",
    },
    // RFC 9111 §5.2.1.3.
    {
      name: "request_min_fresh_validates_entry_expiring_soon",
      e: facts(60_000, 55_000),
      req: "min-fresh=10",
      want: "validate",
    },
    // RFC 9111 §5.2.1.2 and §4.2.4.
    {
      name: "request_max_stale_accepts_stale_entry",
      e: facts(60_000, 70_000),
      req: "max-stale=30",
      want: "stale-allowed",
    },
    {
      name: "request_max_stale_limit_is_kept",
      e: facts(60_000, 100_000),
      req: "max-stale=30",
      want: "validate",
    },
    {
      name: "must_revalidate_refuses_max_stale",
      e: facts(60_000, 70_000, true),
      req: "max-stale",
      want: "validate",
    },
  ];
  it.each(rows)("$name", ({ e, req, pragma, want }) => {
    expect(reuse(e, requestCacheControl(req, pragma), T0)).toBe(want);
  });
});

describe("entryRange (RFC 9110 §14, §13.1.5)", () => {
  const etag = '"v1"';
  const lm = httpDate(T0);
  const rows: {
    name: string;
    range?: string;
    ifRange?: string;
    etag?: string | null;
    want: ReturnType<typeof entryRange>;
  }[] = [
    { name: "answers_the_whole_response_without_range", want: { kind: "none" } },
    { name: "answers_a_first_last_range", range: "bytes=0-3", want: { kind: "range", start: 0, end: 3 } },
    {
      name: "answers_an_open_range_to_the_end",
      range: "bytes=90-",
      want: { kind: "range", start: 90, end: 99 },
    },
    { name: "answers_a_suffix_range", range: "bytes=-10", want: { kind: "range", start: 90, end: 99 } },
    {
      name: "clamps_a_last_position_past_the_end",
      range: "bytes=95-500",
      want: { kind: "range", start: 95, end: 99 },
    },
    { name: "refuses_a_range_past_the_end", range: "bytes=100-", want: { kind: "unsatisfiable" } },
    // §14.2: a server may ignore Range; several ranges get the whole response (no multipart/byteranges).
    {
      name: "answers_several_ranges_with_the_whole_response",
      range: "bytes=0-1,5-6",
      want: { kind: "none" },
    },
    { name: "ignores_another_unit", range: "items=0-3", want: { kind: "none" } },
    { name: "ignores_a_malformed_range", range: "bytes=5-2", want: { kind: "none" } },
    // §13.1.5: If-Range.
    {
      name: "serves_the_range_when_if_range_names_the_etag",
      range: "bytes=0-3",
      ifRange: etag,
      want: { kind: "range", start: 0, end: 3 },
    },
    {
      name: "serves_the_whole_response_when_if_range_names_another_etag",
      range: "bytes=0-3",
      ifRange: '"v0"',
      want: { kind: "none" },
    },
    {
      name: "never_validates_with_a_weak_etag",
      range: "bytes=0-3",
      ifRange: 'W/"v1"',
      want: { kind: "none" },
    },
    {
      name: "serves_the_range_when_if_range_is_the_last_modified_date",
      range: "bytes=0-3",
      ifRange: lm,
      want: { kind: "range", start: 0, end: 3 },
    },
    {
      name: "serves_the_whole_response_for_another_date",
      range: "bytes=0-3",
      ifRange: httpDate(T0 - 1000),
      want: { kind: "none" },
    },
    {
      name: "serves_the_whole_response_when_no_etag_is_stored",
      range: "bytes=0-3",
      ifRange: etag,
      etag: null,
      want: { kind: "none" },
    },
  ];
  it.each(rows)("$name", ({ range, ifRange, etag: e, want }) => {
    expect(entryRange(range, ifRange, e === undefined ? etag : e, lm, 100)).toEqual(want);
  });
});

describe("serving stale (RFC 5861)", () => {
  const route = (swr: number, sie: number) => ({ staleWhileRevalidateMs: swr, staleIfErrorMs: sie });
  const windows: {
    name: string;
    cc: string;
    route?: ReturnType<typeof route>;
    want: { whileRevalidateMs: number; ifErrorMs: number; forbidden: boolean };
  }[] = [
    {
      name: "takes_the_windows_the_origin_names",
      cc: "max-age=60, stale-while-revalidate=30, stale-if-error=600",
      want: { whileRevalidateMs: 30_000, ifErrorMs: 600_000, forbidden: false },
    },
    {
      name: "prefers_the_origin_windows_to_the_route_defaults",
      cc: "max-age=60, stale-if-error=5",
      route: route(10_000, 60_000),
      want: { whileRevalidateMs: 10_000, ifErrorMs: 5_000, forbidden: false },
    },
    {
      name: "fills_in_the_route_defaults_when_the_origin_names_none",
      cc: "max-age=60",
      route: route(10_000, 60_000),
      want: { whileRevalidateMs: 10_000, ifErrorMs: 60_000, forbidden: false },
    },
    // RFC 9111 §4.2.4, §5.2.2.2, §5.2.2.4, §5.2.2.8: explicit prohibitions win over any permission.
    {
      name: "must_revalidate_forbids_serving_stale",
      cc: "max-age=60, must-revalidate, stale-if-error=600",
      route: route(10_000, 60_000),
      want: { whileRevalidateMs: 0, ifErrorMs: 0, forbidden: true },
    },
    {
      name: "proxy_revalidate_forbids_serving_stale",
      cc: "max-age=60, proxy-revalidate, stale-while-revalidate=30",
      want: { whileRevalidateMs: 0, ifErrorMs: 0, forbidden: true },
    },
    {
      name: "no_cache_forbids_serving_stale",
      cc: "no-cache, stale-if-error=600",
      want: { whileRevalidateMs: 0, ifErrorMs: 0, forbidden: true },
    },
    // Gateway choice (as CDNs): the origin's explicit permission overrides s-maxage's implied
    // proxy-revalidate (RFC 9111 §5.2.2.10); the route's defaults do not.
    {
      name: "s_maxage_with_an_explicit_window_keeps_it",
      cc: "s-maxage=60, stale-while-revalidate=30",
      route: route(10_000, 60_000),
      want: { whileRevalidateMs: 30_000, ifErrorMs: 0, forbidden: false },
    },
    {
      name: "s_maxage_without_a_window_forbids_the_route_defaults",
      cc: "s-maxage=60",
      route: route(10_000, 60_000),
      want: { whileRevalidateMs: 0, ifErrorMs: 0, forbidden: true },
    },
    {
      name: "nothing_named_means_no_window",
      cc: "max-age=60",
      want: { whileRevalidateMs: 0, ifErrorMs: 0, forbidden: false },
    },
  ];
  it.each(windows)("$name", ({ cc, route: r, want }) => {
    expect(staleWindowsMs(parseCacheControl(cc), r ?? route(0, 0))).toEqual(want);
  });

  it("longest_stale_is_the_larger_window", () => {
    expect(
      longestStaleMs(
        staleWindowsMs(parseCacheControl("stale-while-revalidate=30, stale-if-error=5"), route(0, 0)),
      ),
    ).toBe(30_000);
  });

  const facts = (lifetime: number, age: number): FreshnessFacts => ({
    lifetimeMs: lifetime,
    initialAgeMs: age,
    responseTime: T0,
    mustRevalidate: false,
  });
  const swr = staleWindowsMs(parseCacheControl("max-age=60, stale-while-revalidate=30"), route(0, 0));
  const whileRevalidating: { name: string; e: FreshnessFacts; req?: string; want: boolean }[] = [
    { name: "serves_an_entry_stale_within_the_window", e: facts(60_000, 80_000), want: true },
    { name: "serves_at_the_window_edge", e: facts(60_000, 90_000), want: true },
    { name: "refuses_an_entry_stale_beyond_the_window", e: facts(60_000, 90_001), want: false },
    // RFC 5861 §3 applies to stale responses; a fresh one is a plain hit.
    { name: "does_not_apply_to_a_fresh_entry", e: facts(60_000, 59_000), want: false },
    // The request asks for an answer from the origin (RFC 9111 §5.2.1): it gets one.
    { name: "refuses_a_request_that_says_no_cache", e: facts(60_000, 80_000), req: "no-cache", want: false },
    {
      name: "refuses_a_request_max_age_the_entry_exceeds",
      e: facts(60_000, 80_000),
      req: "max-age=70",
      want: false,
    },
    { name: "refuses_a_request_with_min_fresh", e: facts(60_000, 80_000), req: "min-fresh=1", want: false },
  ];
  it.each(whileRevalidating)("while_revalidating_$name", ({ e, req, want }) => {
    expect(mayServeWhileRevalidating(e, swr, requestCacheControl(req, undefined), T0)).toBe(want);
  });

  const sie = staleWindowsMs(parseCacheControl("max-age=60, stale-if-error=300"), route(0, 0));
  const none = staleWindowsMs(parseCacheControl("max-age=60"), route(0, 0));
  const forbidden = staleWindowsMs(parseCacheControl("max-age=60, must-revalidate"), route(0, 0));
  const onError: {
    name: string;
    e: FreshnessFacts;
    w: typeof sie;
    req?: string;
    want: boolean;
  }[] = [
    { name: "serves_an_entry_stale_within_the_window", e: facts(60_000, 300_000), w: sie, want: true },
    { name: "refuses_an_entry_stale_beyond_the_window", e: facts(60_000, 360_001), w: sie, want: false },
    // RFC 5861 §4: "regardless of other freshness information" — a request's no-cache included.
    {
      name: "serves_despite_a_request_no_cache",
      e: facts(60_000, 100_000),
      w: sie,
      req: "no-cache",
      want: true,
    },
    { name: "refuses_without_any_window", e: facts(60_000, 61_000), w: none, want: false },
    // RFC 5861 §4: the request directive is a permission of its own.
    {
      name: "serves_within_the_request_window",
      e: facts(60_000, 100_000),
      w: none,
      req: "stale-if-error=60",
      want: true,
    },
    {
      name: "refuses_beyond_the_request_window",
      e: facts(60_000, 130_000),
      w: none,
      req: "stale-if-error=60",
      want: false,
    },
    // RFC 9111 §4.2.4: a response that forbids stale serving refuses the request's permission too.
    {
      name: "refuses_what_the_response_forbids",
      e: facts(60_000, 61_000),
      w: forbidden,
      req: "stale-if-error=60",
      want: false,
    },
  ];
  it.each(onError)("on_error_$name", ({ e, w, req, want }) => {
    expect(mayServeOnError(e, w, requestCacheControl(req, undefined), T0)).toBe(want);
  });

  it.each([
    [500, true],
    [502, true],
    [503, true],
    [504, true],
    [501, false],
    [505, false],
    [404, false],
  ])("counts_%i_as_an_error_%s", (status, want) => {
    expect(isServerError(status)).toBe(want);
  });
});

describe("keys and Vary", () => {
  it("primary_key_starts_with_the_url", () => {
    // The URL first, so purges by URL and prefix are prefix matches.
    expect(urlOfKey(primaryKey("/a/b", "x=1", "api.example", "r", null))).toBe("/a/b?x=1");
    expect(urlOfKey(primaryKey("/a/b", "", "api.example", "r", null))).toBe("/a/b");
    // Purges by host read the canonical host, whatever authority the key also holds.
    expect(hostOfKey(primaryKey("/a", "", "api.example", "r", null, "https://API.example:8443"))).toBe(
      "api.example",
    );
  });

  it.each([
    // RFC 9111 §2: the key is the target URI (host included) — plus route and principal here.
    {
      name: "host_is_part_of_the_key",
      a: ["/p", "", "a.example", "r", null],
      b: ["/p", "", "b.example", "r", null],
    },
    { name: "query_is_part_of_the_key", a: ["/p", "x=1", "h", "r", null], b: ["/p", "x=2", "h", "r", null] },
    { name: "route_is_part_of_the_key", a: ["/p", "", "h", "r1", null], b: ["/p", "", "h", "r2", null] },
    {
      name: "principal_is_part_of_the_key",
      a: ["/p", "", "h", "r", "alice"],
      b: ["/p", "", "h", "r", "bob"],
    },
    { name: "principal_and_anonymous_differ", a: ["/p", "", "h", "r", ""], b: ["/p", "", "h", "r", null] },
    // What the upstream is told of scheme and authority (it builds redirects and links from them).
    {
      name: "scheme_is_part_of_the_key",
      a: ["/p", "", "h", "r", null, "http://h"],
      b: ["/p", "", "h", "r", null, "https://h"],
    },
    {
      name: "forwarded_authority_is_part_of_the_key",
      a: ["/p", "", "h", "r", null, "http://h"],
      b: ["/p", "", "h", "r", null, "http://h:1337"],
    },
    // Length prefixes: a principal holding the separator cannot forge another route's or principal's key.
    {
      name: "separator_in_principal_cannot_forge_a_key",
      a: ["/p", "", "h", "r\t1:x", "y"],
      b: ["/p", "", "h", "r", "x\t1:y"],
    },
  ] as { name: string; a: Parameters<typeof primaryKey>; b: Parameters<typeof primaryKey> }[])(
    "$name",
    ({ a, b }) => {
      expect(primaryKey(...a)).not.toBe(primaryKey(...b));
    },
  );

  it.each([
    // RFC 9111 §4.1: field names are case-insensitive; the list is a set.
    {
      name: "parses_vary_names_lower_cased_unique_sorted",
      value: "Accept-Encoding, accept-language ,ACCEPT-ENCODING",
      want: ["accept-encoding", "accept-language"],
    },
    { name: "parses_vary_star", value: "Accept, *", want: "*" },
    { name: "parses_absent_vary_as_empty", value: undefined, want: [] },
  ] as { name: string; value: string | undefined; want: string[] | "*" }[])("$name", ({ value, want }) => {
    expect(parseVary(value)).toEqual(want);
  });

  const same = (names: string[], a: HeaderBag, b: HeaderBag) =>
    secondaryKey(names, a) === secondaryKey(names, b);
  it.each([
    // RFC 9111 §4.1: normalized by combining field lines and normalizing whitespace...
    {
      name: "vary_ignores_whitespace_around_commas",
      names: ["accept-language"],
      a: { "accept-language": "en, fr" },
      b: { "accept-language": "en,fr" },
      want: true,
    },
    {
      name: "vary_combines_field_lines",
      names: ["x-tenant"],
      a: { "x-tenant": ["a", "b"] },
      b: { "x-tenant": "a, b" },
      want: true,
    },
    // ...and case where the field's values are case-insensitive.
    {
      name: "vary_ignores_case_of_accept_language",
      names: ["accept-language"],
      a: { "accept-language": "EN" },
      b: { "accept-language": "en" },
      want: true,
    },
    {
      name: "vary_keeps_case_of_other_headers",
      names: ["x-tenant"],
      a: { "x-tenant": "A" },
      b: { "x-tenant": "a" },
      want: false,
    },
    { name: "vary_tells_absent_from_empty", names: ["x-tenant"], a: {}, b: { "x-tenant": "" }, want: false },
    {
      name: "vary_tells_different_values_apart",
      names: ["accept-encoding"],
      a: { "accept-encoding": "gzip" },
      b: { "accept-encoding": "br" },
      want: false,
    },
    {
      name: "vary_ignores_unnamed_headers",
      names: ["accept"],
      a: { accept: "x", "x-other": "1" },
      b: { accept: "x" },
      want: true,
    },
  ] as { name: string; names: string[]; a: HeaderBag; b: HeaderBag; want: boolean }[])(
    "$name",
    ({ names, a, b, want }) => {
      expect(same(names, a, b)).toBe(want);
    },
  );

  it("secondary_key_hashes_credential_headers", () => {
    // Gateway choice: a Vary on Cookie or Authorization never puts a credential into a key.
    const k = secondaryKey(["cookie"], { cookie: "sid=s3cr3t-session" });
    expect(k).not.toContain("s3cr3t");
    expect(k).not.toBe(secondaryKey(["cookie"], { cookie: "sid=other" }));
    expect(k).toBe(secondaryKey(["cookie"], { cookie: "sid=s3cr3t-session" }));
  });
});

describe("conditionals", () => {
  it.each([
    // RFC 9110 §5.6.7: the three HTTP-date forms are the same instant.
    { name: "parses_imf_fixdate", value: "Sun, 06 Nov 1994 08:49:37 GMT" },
    { name: "parses_rfc_850_date", value: "Sunday, 06-Nov-94 08:49:37 GMT" },
    { name: "parses_asctime_date_as_utc", value: "Sun Nov  6 08:49:37 1994" },
  ])("$name", ({ value }) => {
    expect(parseHttpDate(value)).toBe(Date.UTC(1994, 10, 6, 8, 49, 37));
  });
  it("rejects_invalid_http_dates", () => {
    expect(parseHttpDate("yesterday")).toBeNull();
    expect(parseHttpDate("Sun, 06 Foo 1994 08:49:37 GMT")).toBeNull();
    expect(parseHttpDate("0")).toBeNull();
  });

  it.each([
    // RFC 9110 §13.1.2: If-None-Match uses weak comparison; "*" matches any current representation.
    { name: "if_none_match_weak_tag_matches_strong", inm: 'W/"a"', etag: '"a"', want: true },
    { name: "if_none_match_matches_one_of_a_list", inm: '"x", "a"', etag: 'W/"a"', want: true },
    { name: "if_none_match_star_matches_existing", inm: "*", etag: '"a"', want: true },
    { name: "if_none_match_other_tag_does_not_match", inm: '"b"', etag: '"a"', want: false },
    { name: "if_none_match_without_stored_etag_does_not_match", inm: '"a"', etag: null, want: false },
  ])("$name", ({ inm, etag, want }) => {
    expect(noneMatchHits(inm, etag)).toBe(want);
  });

  const lm = httpDate(T0);
  it.each([
    // RFC 9110 §13.2.2: If-None-Match takes precedence; If-Modified-Since only without it.
    {
      name: "if_none_match_takes_precedence_over_if_modified_since",
      req: { "if-none-match": '"b"', "if-modified-since": httpDate(T0 + 1000) },
      etag: '"a"',
      want: false,
    },
    // RFC 9110 §13.1.3.
    {
      name: "if_modified_since_after_last_modified_is_not_modified",
      req: { "if-modified-since": httpDate(T0 + 1000) },
      etag: null,
      want: true,
    },
    {
      name: "if_modified_since_before_last_modified_is_modified",
      req: { "if-modified-since": httpDate(T0 - 1000) },
      etag: null,
      want: false,
    },
    {
      name: "invalid_if_modified_since_is_ignored",
      req: { "if-modified-since": "last week" },
      etag: null,
      want: false,
    },
    { name: "no_conditional_is_not_a_304", req: {}, etag: '"a"', want: false },
  ])("$name", ({ req, etag, want }) => {
    expect(notModified(req, 200, etag, lm, null)).toBe(want);
  });
  it("conditionals_apply_only_to_200", () => {
    // RFC 9110 §13.2.1: preconditions are evaluated for a 2xx selected representation.
    expect(notModified({ "if-none-match": '"a"' }, 404, '"a"', null, null)).toBe(false);
  });
  it("if_modified_since_uses_date_when_no_last_modified", () => {
    // RFC 9111 §4.3.2: without Last-Modified, the Date of the stored response.
    expect(notModified({ "if-modified-since": httpDate(T0 + 1000) }, 200, null, null, httpDate(T0))).toBe(
      true,
    );
  });

  it("freshening_replaces_fields_except_framing_and_cookies", () => {
    // RFC 9111 §3.2: fields of the 304 replace stored ones, except Content-Length (and per-client fields).
    const out = freshenHeaders(
      { "content-type": "text/plain", "cache-control": "max-age=1", etag: '"a"' },
      { "cache-control": "max-age=60", "content-length": "0", "set-cookie": "x=1", "x-new": "n" },
    );
    expect(out).toEqual({
      "content-type": "text/plain",
      "cache-control": "max-age=60",
      etag: '"a"',
      "x-new": "n",
    });
  });

  it.each([
    // RFC 9111 §4.3.4: the 304's validator selects the stored response to update.
    { name: "not_modified_with_same_etag_selects", stored: '"a"', got: 'W/"a"', want: true },
    { name: "not_modified_with_other_etag_does_not_select", stored: '"a"', got: '"b"', want: false },
    { name: "not_modified_without_etag_selects_the_one_stored", stored: '"a"', got: undefined, want: true },
    { name: "not_modified_etag_without_stored_etag_does_not_select", stored: null, got: '"a"', want: false },
  ])("$name", ({ stored, got, want }) => {
    expect(notModifiedSelects(stored, got)).toBe(want);
  });
});

describe("Cache-Status", () => {
  it.each([
    // RFC 9211 §2.1 hit, §2.4 ttl.
    { name: "formats_hit_with_ttl", p: { hit: true, ttl: 12 }, want: "meshgate; hit; ttl=12" },
    // RFC 9211 §2.2 fwd, §2.3 fwd-status, §2.5 stored.
    {
      name: "formats_miss_stored",
      p: { fwd: "miss", fwdStatus: 200, stored: true },
      want: "meshgate; fwd=miss; fwd-status=200; stored",
    },
    // RFC 9211 §2.6 collapsed, §2.8 detail.
    {
      name: "formats_collapsed",
      p: { fwd: "miss", fwdStatus: 200, collapsed: true, ttl: 5 },
      want: "meshgate; fwd=miss; fwd-status=200; ttl=5; collapsed",
    },
    {
      name: "formats_bypass_detail",
      p: { fwd: "bypass", detail: "authorization" },
      want: "meshgate; fwd=bypass; detail=authorization",
    },
  ] as const)("$name", ({ p, want }) => {
    expect(cacheStatusMember("meshgate", p)).toBe(want);
  });
  it("appends_to_the_upstream_cache_status", () => {
    // RFC 9211 §2: members are ordered from the origin towards the client.
    expect(appendCacheStatus("origin-cache; hit", "meshgate; fwd=stale")).toBe(
      "origin-cache; hit, meshgate; fwd=stale",
    );
    expect(appendCacheStatus(undefined, "meshgate; hit")).toBe("meshgate; hit");
  });
});
