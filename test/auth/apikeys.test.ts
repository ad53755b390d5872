/**
 * API keys (runtime/auth/apikeys.ts) through the Authenticator: the right key, a wrong key, a repeated key
 * header, a consumer outside the route's groups, malformed keys, and the constant-time compare path with
 * several consumers whose key digests share a bucket (every candidate compared, the right one chosen).
 */
import { createHash, randomBytes } from "node:crypto";
import { describe, expect, it } from "vitest";
import type { GatewayRuntimeConfig, RouteAuth } from "../../runtime/contract/index.ts";
import { Authenticator, apiKeyHash } from "../../runtime/auth/index.ts";
import { gatewayConfig } from "../support/gateway.ts";
import { countingObserver, facts } from "./support.ts";

const RATE = { rateLimit: { requests: 1000, per: "1s" } };

/** Keys whose SHA-256 digests start with the same byte: they land in one comparison bucket. */
function collidingKeys(n: number): string[] {
  const byByte = new Map<number, string[]>();
  for (;;) {
    const k = randomBytes(24).toString("base64url");
    const b = createHash("sha256").update(k).digest()[0]!;
    const list = byByte.get(b) ?? [];
    list.push(k);
    byByte.set(b, list);
    if (list.length === n) return list;
  }
}

const [shopKey, blogKey, partnerKey, strayKey] = collidingKeys(4) as [string, string, string, string];
const counts = countingObserver();

function build(header = "x-api-key"): GatewayRuntimeConfig {
  return gatewayConfig(
    [
      { name: "any", match: { path: "/any" }, to: "app", auth: { apiKey: true }, ...RATE },
      {
        name: "partners",
        match: { path: "/partners" },
        to: "app",
        auth: { apiKey: true, groups: ["partners"] },
        ...RATE,
      },
      {
        name: "shop-only",
        match: { path: "/shop-only" },
        to: "app",
        auth: { apiKey: true, consumers: ["shop"] },
        ...RATE,
      },
    ],
    { app: { port: 1 } },
    {
      apiKeys: {
        header,
        consumers: {
          shop: { keyHashes: [apiKeyHash(shopKey)], groups: ["partners", "retail"] },
          blog: { keyHashes: [apiKeyHash(blogKey)], groups: ["internal"] },
          partner: {
            keyHashes: [apiKeyHash(partnerKey), apiKeyHash("second-key-of-partner-0001")],
            groups: ["partners"],
          },
          ...Object.fromEntries(
            Array.from({ length: 40 }, (_, i) => [
              `c${i}`,
              { keyHashes: [apiKeyHash(`filler-key-${i}-abcdef`)] },
            ]),
          ),
        },
      },
    },
  );
}

const config = build();
const auth = new Authenticator(config, { observer: counts.observer });
const routeAuth = (c: GatewayRuntimeConfig, name: string): RouteAuth =>
  c.routes.find((r) => r.name === name)!.auth;
const admit = (route: string, headers: Record<string, string | string[]>, a = auth, c = config) =>
  a.admit(route, routeAuth(c, route), facts({ path: `/${route}`, headers }));

describe("API keys", () => {
  it("admits_the_right_key_as_its_consumer_synchronously", () => {
    const d = admit("any", { "x-api-key": shopKey });
    expect(d).not.toBeInstanceOf(Promise);
    expect(d).toMatchObject({
      kind: "allow",
      principal: { mechanism: "apiKey", subject: "shop", consumer: "shop", groups: ["partners", "retail"] },
    });
    expect(counts.authn.get("apiKey:success")).toBeGreaterThan(0);
  });

  it("admits_every_key_of_a_consumer", () => {
    expect(admit("any", { "x-api-key": "second-key-of-partner-0001" })).toMatchObject({
      kind: "allow",
      principal: { consumer: "partner" },
    });
  });

  it.each([
    ["refuses_a_wrong_key", { "x-api-key": "not-a-key-of-anyone" }, "unknown API key"],
    ["refuses_a_wrong_key_in_a_populated_bucket", { "x-api-key": strayKey }, "unknown API key"],
    ["refuses_a_key_differing_in_case", { "x-api-key": shopKey.toUpperCase() }, "unknown API key"],
    [
      "refuses_a_key_with_trailing_whitespace_kept_by_the_client",
      { "x-api-key": `${shopKey} ` },
      "unknown API key",
    ],
    ["refuses_a_repeated_key_header", { "x-api-key": [shopKey, blogKey] }, "appears more than once"],
    [
      "refuses_a_repeated_key_header_in_other_casing",
      { "x-api-key": shopKey, "X-Api-Key": blogKey },
      "appears more than once",
    ],
    ["refuses_an_empty_key", { "x-api-key": "" }, "malformed API key"],
    ["refuses_an_oversized_key", { "x-api-key": "k".repeat(600) }, "malformed API key"],
    ["refuses_a_joined_key_list", { "x-api-key": `${shopKey}, ${blogKey}` }, "malformed API key"],
    ["refuses_a_request_without_a_key", {}, "requires authentication"],
    ["refuses_the_key_in_another_header", { authorization: `Bearer ${shopKey}` }, "requires authentication"],
  ])("%s", (_name, headers, reason) => {
    const d = admit("any", headers);
    expect(d).toMatchObject({ kind: "deny", status: 401, code: "unauthenticated" });
    if (d instanceof Promise || d.kind !== "deny") return;
    expect(d.reason).toContain(reason);
    expect(d.headers["www-authenticate"]).toBe('ApiKey realm="meshgate", header="x-api-key"');
  });

  it("answers_403_for_a_consumer_outside_the_routes_groups", () => {
    expect(admit("partners", { "x-api-key": blogKey })).toMatchObject({
      kind: "deny",
      status: 403,
      code: "forbidden",
    });
    expect(admit("partners", { "x-api-key": shopKey })).toMatchObject({ kind: "allow" });
    expect(admit("partners", { "x-api-key": partnerKey })).toMatchObject({ kind: "allow" });
    expect(counts.denied.get("partners:consumer")).toBe(1);
  });

  it("answers_403_for_a_consumer_not_listed_on_the_route", () => {
    expect(admit("shop-only", { "x-api-key": partnerKey })).toMatchObject({
      status: 403,
      reason: expect.stringContaining("partner"),
    });
    expect(admit("shop-only", { "x-api-key": shopKey })).toMatchObject({ kind: "allow" });
  });

  it("compares_every_candidate_of_the_bucket_in_constant_time", () => {
    const verifier = auth.apiKeys()!;
    const bucket = createHash("sha256").update(shopKey).digest()[0]!;
    const inBucket = config.auth
      .apiKeys!.consumers.flatMap((c) => c.keyHashes)
      .filter((h) => parseInt(h.slice(7, 9), 16) === bucket).length;
    expect(inBucket).toBeGreaterThanOrEqual(3);
    // shop, blog, partner and the stray key share the first digest byte: three stored candidates there.
    for (const [key, consumer] of [
      [shopKey, "shop"],
      [blogKey, "blog"],
      [partnerKey, "partner"],
    ] as const) {
      const before = verifier.comparisons;
      expect(admit("any", { "x-api-key": key })).toMatchObject({ principal: { consumer } });
      expect(verifier.comparisons - before).toBe(inBucket);
    }
    const before = verifier.comparisons;
    expect(admit("any", { "x-api-key": strayKey })).toMatchObject({ kind: "deny" });
    expect(verifier.comparisons - before).toBe(inBucket);
  });

  it("strips_the_key_and_forwards_the_consumer_upstream", () => {
    const d = admit("any", { "x-api-key": shopKey });
    if (d instanceof Promise || d.kind !== "allow") throw new Error("expected allow");
    const up: Record<string, string | string[]> = {
      "x-api-key": shopKey,
      "x-meshgate-consumer": "forged",
      a: "1",
    };
    auth.upstreamHeaders(up, routeAuth(config, "any"), d.principal);
    expect(up).toEqual({
      a: "1",
      "x-meshgate-auth": "apiKey",
      "x-meshgate-subject": "shop",
      "x-meshgate-consumer": "shop",
      "x-meshgate-groups": "partners,retail",
    });
  });

  it("refuses_a_repeated_custom_key_header", () => {
    const c = build("apikey");
    const a = new Authenticator(c);
    expect(admit("any", { apikey: shopKey }, a, c)).toMatchObject({ kind: "allow" });
    expect(admit("any", { apikey: [shopKey, shopKey] }, a, c)).toMatchObject({
      kind: "deny",
      reason: "the apikey header appears more than once",
    });
  });

  it("refuses_a_malformed_stored_hash_at_build", () => {
    const bad = {
      ...config,
      auth: {
        ...config.auth,
        apiKeys: { header: "x-api-key", consumers: [{ name: "x", keyHashes: ["md5:00"], groups: [] }] },
      },
    };
    expect(() => new Authenticator(bad)).toThrow(/sha256/);
  });
});
