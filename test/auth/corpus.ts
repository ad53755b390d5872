/**
 * The corpus of forged and broken tokens (RFC 8725 attack classes and malformed input), shared by the
 * Authenticator tests (test/auth/jwt.test.ts) and the end-to-end gateway tests (test/auth/gateway.test.ts).
 * Each entry names the claim it makes, the reason the refusal must give, and builds the request parts.
 */
import { MAX_TOKEN_BYTES } from "../../runtime/auth/index.ts";
import { hmacWith, nowS, rawToken, signToken, signWith, type TestKey } from "./support.ts";

export const ISS = "https://id.test/";

export interface CorpusKeys {
  readonly main: TestKey;
  readonly rsa: TestKey;
  readonly other: TestKey;
  readonly attacker: TestKey;
  readonly attackerRsa: TestKey;
  /** A URL the attacker controls (its fetch count must stay unchanged). */
  readonly attackerUrl: string;
  /** The attacker's certificate (base64 DER) for x5c. */
  readonly attackerCertB64: string;
}

/** What one corpus entry sends: a bearer token, or explicit headers/query; on route main unless named. */
export interface Forged {
  readonly token?: string;
  readonly headers?: Record<string, string>;
  readonly query?: string;
  readonly route?: "main" | "rsa" | "cq";
}

export type Forge = () => Promise<Forged>;

/** Claims of an honest token of provider main (issuer ISS, audience api), with overrides. */
export const claims = (over: Record<string, unknown> = {}) => ({
  iss: ISS,
  aud: "api",
  sub: "alice",
  exp: nowS() + 600,
  iat: nowS(),
  scope: "orders:read",
  ...over,
});

type Entry = [name: string, reason: string, forge: Forge];

/**
 * Forged or broken tokens: every one must be answered 401 on its route. `keys` is read when a case runs
 * (test files list the cases before their beforeAll made the keys).
 */
export function forgedTokens(keys: () => CorpusKeys): Entry[] {
  return entries({} as CorpusKeys).map(([name, reason], i): Entry => [
    name,
    reason,
    () => entries(keys())[i]![2](),
  ]);
}

function entries(ctx: CorpusKeys): Entry[] {
  const { main, rsa, other, attacker, attackerRsa, attackerCertB64 } = ctx;
  return [
    [
      "rejects_alg_none_without_signature",
      "segments must be non-empty base64url",
      async () => ({
        token: rawToken(`{"alg":"none","kid":"main-1"}`, JSON.stringify(claims()), () => ""),
      }),
    ],
    [
      "rejects_alg_none_with_a_signature",
      "algorithm is not allowed",
      async () => ({
        token: rawToken(`{"alg":"none","kid":"main-1"}`, JSON.stringify(claims()), signWith(main)),
      }),
    ],
    [
      "rejects_alg_none_in_other_casing",
      "algorithm is not allowed",
      async () => ({
        token: rawToken(`{"alg":"NoNe"}`, JSON.stringify(claims()), () => "AAAA"),
      }),
    ],
    [
      "rejects_hs256_signed_with_the_ec_public_key_pem",
      "algorithm is not allowed",
      async () => ({
        token: rawToken(`{"alg":"HS256","kid":"main-1"}`, JSON.stringify(claims()), hmacWith(main.publicPem)),
      }),
    ],
    [
      "rejects_hs256_signed_with_the_rsa_public_key_pem",
      "algorithm is not allowed",
      async () => ({
        route: "rsa",
        token: rawToken(
          `{"alg":"HS256","kid":"rsa-1"}`,
          JSON.stringify(claims({ iss: "https://rsa.test/" })),
          hmacWith(rsa.publicPem),
        ),
      }),
    ],
    [
      "rejects_hs256_signed_with_the_rsa_public_jwk_text",
      "algorithm is not allowed",
      async () => ({
        route: "rsa",
        token: rawToken(
          `{"alg":"HS256","kid":"rsa-1"}`,
          JSON.stringify(claims({ iss: "https://rsa.test/" })),
          hmacWith(JSON.stringify(rsa.jwk)),
        ),
      }),
    ],
    [
      "rejects_rs256_token_to_an_es256_only_provider",
      "algorithm is not allowed",
      async () => ({
        token: await signToken(attackerRsa, claims(), { kid: "main-1" }),
      }),
    ],
    [
      "rejects_es256_token_to_an_rs256_only_provider",
      "algorithm is not allowed",
      async () => ({
        route: "rsa",
        token: await signToken(attacker, claims({ iss: "https://rsa.test/" }), { kid: "rsa-1" }),
      }),
    ],
    [
      "rejects_unknown_kid",
      "no key of the provider has the token's kid",
      async () => ({ token: await signToken(attacker, claims()) }),
    ],
    [
      "rejects_kid_path_traversal",
      "no key of the provider has the token's kid",
      async () => ({ token: await signToken(attacker, claims(), { kid: "../../dev/null" }) }),
    ],
    [
      "rejects_kid_sql_injection",
      "no key of the provider has the token's kid",
      async () => ({ token: await signToken(attacker, claims(), { kid: "' OR 1=1 --" }) }),
    ],
    [
      "rejects_kid_url",
      "no key of the provider has the token's kid",
      async () => ({ token: await signToken(attacker, claims(), { kid: ctx.attackerUrl }) }),
    ],
    [
      "rejects_empty_kid",
      "kid must be a short string",
      async () => ({ token: await signToken(main, claims(), { kid: "" }) }),
    ],
    [
      "rejects_numeric_kid",
      "kid must be a short string",
      async () => ({
        token: rawToken(`{"alg":"ES256","kid":1}`, JSON.stringify(claims()), signWith(main)),
      }),
    ],
    [
      "rejects_jku_pointing_at_the_attackers_jwks",
      "no key of the provider has the token's kid",
      async () => ({
        token: await signToken(attacker, claims(), { jku: ctx.attackerUrl }),
      }),
    ],
    [
      "rejects_x5u_pointing_at_the_attackers_certificate",
      "no key of the provider has the token's kid",
      async () => ({
        token: await signToken(attacker, claims(), { x5u: ctx.attackerUrl }),
      }),
    ],
    [
      "rejects_embedded_jwk_of_the_attacker",
      "signature verification failed",
      async () => ({
        token: await signToken(attacker, claims(), {
          kid: undefined,
          jwk: { kty: "EC", crv: "P-256", x: attacker.jwk.x, y: attacker.jwk.y },
        }),
      }),
    ],
    [
      "rejects_embedded_jwk_with_a_trusted_kid",
      "signature verification failed",
      async () => ({
        token: await signToken(attacker, claims(), {
          kid: "main-1",
          jwk: { kty: "EC", crv: "P-256", x: attacker.jwk.x, y: attacker.jwk.y },
        }),
      }),
    ],
    [
      "rejects_x5c_with_the_attackers_certificate",
      "signature verification failed",
      async () => ({
        token: await signToken(attacker, claims(), { kid: "main-1", x5c: [attackerCertB64] }),
      }),
    ],
    [
      "rejects_expired_token",
      "token expired",
      async () => ({ token: await signToken(main, claims({ exp: nowS() - 3600 })) }),
    ],
    [
      "rejects_exp_just_past_the_clock_skew",
      "token expired",
      async () => ({ token: await signToken(main, claims({ exp: nowS() - 32 })) }),
    ],
    [
      "rejects_future_nbf",
      "not yet valid",
      async () => ({ token: await signToken(main, claims({ nbf: nowS() + 3600 })) }),
    ],
    [
      "rejects_nbf_just_beyond_the_clock_skew",
      "not yet valid",
      async () => ({ token: await signToken(main, claims({ nbf: nowS() + 35 })) }),
    ],
    [
      "rejects_wrong_iss",
      "issuer is not accepted",
      async () => ({ token: await signToken(main, claims({ iss: "https://evil.test/" })) }),
    ],
    [
      "rejects_iss_with_trailing_difference",
      "issuer is not accepted",
      async () => ({ token: await signToken(main, claims({ iss: "https://id.test" })) }),
    ],
    [
      "rejects_wrong_aud",
      "audience is not accepted",
      async () => ({ token: await signToken(main, claims({ aud: "other-api" })) }),
    ],
    [
      "rejects_missing_exp",
      "no exp claim",
      async () => {
        const { exp: _e, ...c } = claims();
        return { token: await signToken(main, c) };
      },
    ],
    [
      "rejects_missing_iss",
      "issuer is not accepted",
      async () => {
        const { iss: _i, ...c } = claims();
        return { token: await signToken(main, c) };
      },
    ],
    [
      "rejects_missing_aud",
      "no aud claim",
      async () => {
        const { aud: _a, ...c } = claims();
        return { token: await signToken(main, c) };
      },
    ],
    [
      "rejects_exp_as_a_string",
      "exp claim is invalid",
      async () => ({ token: await signToken(main, claims({ exp: String(nowS() + 600) })) }),
    ],
    [
      "rejects_sub_that_is_not_a_string",
      "token sub claim is invalid",
      async () => ({ token: await signToken(main, claims({ sub: 42 })) }),
    ],
    [
      "rejects_tampered_payload",
      "signature verification failed",
      async () => {
        const [h, , s] = (await signToken(main, claims())).split(".");
        return {
          token: `${h}.${Buffer.from(JSON.stringify(claims({ sub: "admin", scope: "orders:write" }))).toString("base64url")}.${s}`,
        };
      },
    ],
    [
      "rejects_tampered_header",
      "signature verification failed",
      async () => {
        const [, p, s] = (await signToken(main, claims())).split(".");
        return {
          token: `${Buffer.from(`{"alg":"ES256","kid":"main-1","typ":"JWT"}`).toString("base64url")}.${p}.${s}`,
        };
      },
    ],
    [
      "rejects_truncated_signature",
      "signature verification failed",
      async () => ({ token: (await signToken(main, claims())).slice(0, -10) }),
    ],
    [
      "rejects_signature_of_another_key_under_a_trusted_kid",
      "signature verification failed",
      async () => ({
        token: await signToken(attacker, claims(), { kid: "main-1" }),
      }),
    ],
    [
      "rejects_extra_segments",
      "three segments",
      async () => ({ token: `${await signToken(main, claims())}.AAAA` }),
    ],
    [
      "rejects_five_segment_jwe_shape",
      "three segments",
      async () => ({ token: "eyJhbGciOiJkaXIifQ.a.b.c.d" }),
    ],
    ["rejects_empty_token", "empty token", async () => ({ headers: { authorization: "Bearer " } })],
    [
      "rejects_non_base64url_characters",
      "segments must be non-empty base64url",
      async () => ({ token: (await signToken(main, claims())).replace(/-/g, "+").replace(/_/g, "/") + "==" }),
    ],
    [
      "rejects_a_signature_with_non_zero_unused_bits",
      "segments must be non-empty base64url",
      async () => {
        const t = await signToken(main, claims());
        const abc = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        return { token: t.slice(0, -1) + abc[abc.indexOf(t.at(-1)!) ^ 1] };
      },
    ],
    [
      "rejects_a_segment_with_a_lone_last_character",
      "segments must be non-empty base64url",
      async () => ({ token: `${await signToken(main, claims())}AAA` }), // 86 + 3: one character too many
    ],
    [
      "rejects_whitespace_inside_the_token",
      "segments must be non-empty base64url",
      async () => {
        const t = await signToken(main, claims());
        return { token: `${t.slice(0, 20)} ${t.slice(20)}` };
      },
    ],
    [
      "rejects_token_valid_for_another_provider",
      "issuer is not accepted",
      async () => ({
        token: await signToken(other, claims({ iss: "https://other.test/" })),
      }),
    ],
    [
      "rejects_token_of_a_provider_with_the_same_key_but_another_issuer",
      "issuer is not accepted",
      async () => ({
        token: await signToken(main, claims({ iss: "https://cq.test/" })),
      }),
    ],
    [
      "rejects_crit_with_an_unknown_extension",
      "unsupported critical header parameter",
      async () => ({
        token: rawToken(
          `{"alg":"ES256","kid":"main-1","crit":["urn:example:must-understand"],"urn:example:must-understand":true}`,
          JSON.stringify(claims()),
          signWith(main),
        ),
      }),
    ],
    [
      "rejects_crit_b64_false",
      "malformed token",
      async () => ({
        token: rawToken(
          `{"alg":"ES256","kid":"main-1","crit":["b64"],"b64":false}`,
          JSON.stringify(claims()),
          signWith(main),
        ),
      }),
    ],
    [
      "rejects_duplicate_claims",
      "payload: duplicate member names",
      async () => ({
        token: rawToken(
          `{"alg":"ES256","kid":"main-1"}`,
          JSON.stringify(claims()).replace(/^\{/, `{"sub":"a",`).replace(`"sub":"alice"`, `"sub":"b"`),
          signWith(main),
        ),
      }),
    ],
    [
      "rejects_duplicate_claims_hidden_by_escapes",
      "payload: duplicate member names",
      async () => ({
        token: rawToken(
          `{"alg":"ES256","kid":"main-1"}`,
          JSON.stringify(claims()).replace(/^\{/, `{"s\\u0075b":"admin",`),
          signWith(main),
        ),
      }),
    ],
    [
      "rejects_duplicate_header_members",
      "header: duplicate member names",
      async () => ({
        token: rawToken(
          `{"alg":"none","kid":"main-1","alg":"ES256"}`,
          JSON.stringify(claims()),
          signWith(main),
        ),
      }),
    ],
    [
      "rejects_payload_that_is_not_an_object",
      "payload: not a JSON object",
      async () => ({
        token: rawToken(`{"alg":"ES256","kid":"main-1"}`, `["not","claims"]`, signWith(main)),
      }),
    ],
    [
      "rejects_header_that_is_not_json",
      "header: not JSON",
      async () => ({
        token: rawToken(`alg=ES256`, JSON.stringify(claims()), signWith(main)),
      }),
    ],
    [
      "rejects_huge_token_beyond_the_bound",
      "exceeds 8192 bytes",
      async () => ({
        token: await signToken(main, claims({ pad: "x".repeat(MAX_TOKEN_BYTES) })),
      }),
    ],
    [
      "rejects_wrong_prefix",
      "expected scheme",
      async () => ({
        headers: { authorization: `Basic ${await signToken(main, claims())}` },
      }),
    ],
    [
      "rejects_token_in_the_query_when_not_configured",
      "requires authentication",
      async () => ({
        query: `access_token=${await signToken(main, claims())}`,
      }),
    ],
    [
      "rejects_token_in_a_cookie_when_not_configured",
      "requires authentication",
      async () => ({
        headers: { cookie: `tok=${await signToken(main, claims())}` },
      }),
    ],
    [
      "rejects_token_presented_in_two_places",
      "more than one place",
      async () => {
        const t = await signToken(main, claims({ iss: "https://cq.test/" }));
        return {
          route: "cq",
          query: `access_token=${t}`,
          headers: { cookie: `tok=${t}` },
        };
      },
    ],
    [
      "rejects_token_in_a_repeated_query_parameter",
      "appears more than once",
      async () => {
        const t = await signToken(main, claims({ iss: "https://cq.test/" }));
        return { route: "cq", query: `access_token=${t}&access_token=${t}` };
      },
    ],
    // `access%5Ftoken` is `access_token` to every query parser upstream: read as another parameter, its
    // token (never verified) went upstream beside the verified one.
    [
      "rejects_token_in_a_query_parameter_repeated_under_an_escaped_name",
      "appears more than once",
      async () => {
        const t = await signToken(main, claims({ iss: "https://cq.test/" }));
        return { route: "cq", query: `access_token=${t}&access%5Ftoken=forged.x.y` };
      },
    ],
    // `access_token%5B%5D` (`access_token[]`; a raw bracket is refused as a target) is `access_token` to
    // PHP, Rack and qs (an array): the same parameter, repeated.
    [
      "rejects_token_in_a_query_parameter_repeated_as_an_array",
      "appears more than once",
      async () => {
        const t = await signToken(main, claims({ iss: "https://cq.test/" }));
        return { route: "cq", query: `access_token=${t}&access_token%5B%5D=forged.x.y` };
      },
    ],
    // `access_token%5B0%5D` (`access_token[0]`) is `access_token` to PHP, Rack and qs (an array): the same
    // parameter, repeated.
    [
      "rejects_token_in_a_query_parameter_repeated_as_an_indexed_array",
      "appears more than once",
      async () => {
        const t = await signToken(main, claims({ iss: "https://cq.test/" }));
        return { route: "cq", query: `access_token=${t}&access_token%5B0%5D=forged.x.y` };
      },
    ],
    // `access.token` is `access_token` to PHP (dots in names become underscores): the same parameter,
    // repeated.
    [
      "rejects_token_in_a_query_parameter_repeated_as_a_php_dotted_name",
      "appears more than once",
      async () => {
        const t = await signToken(main, claims({ iss: "https://cq.test/" }));
        return { route: "cq", query: `access_token=${t}&access.token=forged.x.y` };
      },
    ],
    // `access+token` is `access_token` to PHP (a space in a name becomes an underscore): the same
    // parameter, repeated.
    [
      "rejects_token_in_a_query_parameter_repeated_as_a_php_spaced_name",
      "appears more than once",
      async () => {
        const t = await signToken(main, claims({ iss: "https://cq.test/" }));
        return { route: "cq", query: `access_token=${t}&access+token=forged.x.y` };
      },
    ],
    // `access%5Btoken` (`access[token`) is `access_token` to PHP (an unclosed bracket becomes an
    // underscore): the same parameter, repeated.
    [
      "rejects_token_in_a_query_parameter_repeated_as_a_php_unclosed_bracket",
      "appears more than once",
      async () => {
        const t = await signToken(main, claims({ iss: "https://cq.test/" }));
        return { route: "cq", query: `access_token=${t}&access%5Btoken=forged.x.y` };
      },
    ],
    // `ACCESS_TOKEN` is `access_token` to ASP.NET Core (Request.Query ignores case; SignalR and JwtBearer
    // read `access_token` there): the same parameter, repeated — its token never verified went upstream.
    [
      "rejects_token_in_a_query_parameter_repeated_in_another_letter_case",
      "appears more than once",
      async () => {
        const t = await signToken(main, claims({ iss: "https://cq.test/" }));
        return { route: "cq", query: `access_token=${t}&ACCESS_TOKEN=forged.x.y` };
      },
    ],
    [
      "rejects_token_in_a_query_parameter_repeated_in_mixed_case_after_a_semicolon",
      "appears more than once",
      async () => {
        const t = await signToken(main, claims({ iss: "https://cq.test/" }));
        return { route: "cq", query: `access_token=${t}&x=1;Access_Token=forged.x.y` };
      },
    ],
    [
      "rejects_token_presented_in_a_cookie_and_a_query_parameter_under_an_escaped_name",
      "more than one place",
      async () => {
        const t = await signToken(main, claims({ iss: "https://cq.test/" }));
        return { route: "cq", query: `access%5ftoken=forged.x.y`, headers: { cookie: `tok=${t}` } };
      },
    ],
  ];
}
