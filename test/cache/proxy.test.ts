/**
 * The cache engine over real sockets: a caching proxy (harness.ts: HttpCache + the gateway's forward())
 * in front of a real upstream on 127.0.0.1 that counts what it receives. Hits with Age, misses stored,
 * Vary variants apart, what is never stored, credentials, stale → conditional request → 304 → 200 from
 * the cache, request coalescing (counted at the upstream), truncation, LRU eviction, purge, HEAD, and
 * invalidation after unsafe methods.
 */
import http from "node:http";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { request, startUpstream, type Upstream } from "../support/gateway.ts";
import { primaryKey } from "../../runtime/cache/policy.ts";
import type { StoredResponse } from "../../runtime/cache/store.ts";
import { ROUTE, startCacheProxy, type CacheProxy } from "./harness.ts";

let upstream: Upstream;
let proxy: CacheProxy;
const flakyCalls = new Map<string, number>();
const invCalls = new Map<string, number>();

/** The upstream's Date follows the proxy's (movable) clock, as an origin in sync with the gateway. */
const date = () => new Date(proxy.now()).toUTCString();
const send = (res: http.ServerResponse, status: number, headers: Record<string, string>, body: string) => {
  res.writeHead(status, { date: date(), "content-length": String(Buffer.byteLength(body)), ...headers });
  res.end(body);
};

beforeAll(async () => {
  upstream = await startUpstream((req, res) => {
    const url = req.url ?? "/";
    const [, kind] = url.split("/");
    const h = req.headers;
    switch (kind) {
      case "fresh":
        return send(
          res,
          200,
          { "cache-control": "max-age=60", age: "5", "content-type": "text/plain" },
          `fresh ${url}`,
        );
      case "vary":
        return send(
          res,
          200,
          { "cache-control": "max-age=60", vary: "Accept-Language" },
          `lang=${h["accept-language"] ?? "none"}`,
        );
      case "tenant":
        return send(res, 200, { "cache-control": "max-age=60" }, `tenant=${h["x-tenant"] ?? "none"}`);
      case "nostore":
        return send(res, 200, { "cache-control": "no-store" }, "nostore");
      case "private":
        return send(res, 200, { "cache-control": "private, max-age=60" }, "private");
      case "cookie":
        return send(res, 200, { "cache-control": "max-age=60", "set-cookie": "sid=1" }, "cookie");
      case "error":
        return send(res, 500, { "cache-control": "max-age=60" }, "boom");
      case "auth":
        return send(res, 200, { "cache-control": "max-age=60" }, `for ${h.authorization ?? "anonymous"}`);
      case "me":
        return send(res, 200, { "cache-control": "max-age=60" }, `hello ${h["x-principal"] ?? "anonymous"}`);
      case "etag":
        if (h["if-none-match"] === '"v1"') {
          // The 304 extends freshness: its Date is second-granular, so a max-age=1 here
          // could already be spent by the time the next request arrives.
          res.writeHead(304, {
            date: date(),
            "cache-control": "max-age=60",
            etag: '"v1"',
            "x-refreshed": "yes",
          });
          return res.end();
        }
        return send(
          res,
          200,
          { "cache-control": "max-age=1", etag: '"v1"', "content-type": "text/plain" },
          "versioned",
        );
      case "badetag":
        if (h["if-none-match"]) {
          res.writeHead(304, { date: date(), etag: '"other"' });
          return res.end();
        }
        return send(res, 200, { "cache-control": "max-age=1", etag: '"v1"' }, "first");
      case "lastmod":
        if (h["if-modified-since"] === "Wed, 01 Jan 2025 00:00:00 GMT") {
          res.writeHead(304, { date: date(), "cache-control": "max-age=1" });
          return res.end();
        }
        return send(
          res,
          200,
          { "cache-control": "max-age=1", "last-modified": "Wed, 01 Jan 2025 00:00:00 GMT" },
          "dated",
        );
      case "slow":
        setTimeout(() => send(res, 200, { "cache-control": "max-age=60" }, `slow ${url}`), 200);
        return;
      case "slownostore":
        setTimeout(() => send(res, 200, { "cache-control": "no-store" }, "nostore"), 100);
        return;
      case "slowvary":
        setTimeout(
          () => send(res, 200, { "cache-control": "max-age=60", vary: "x-v" }, `v=${h["x-v"] ?? "none"}`),
          100,
        );
        return;
      case "flaky": {
        const n = (flakyCalls.get(url) ?? 0) + 1;
        flakyCalls.set(url, n);
        if (n === 1) {
          setTimeout(() => res.socket?.destroy(), 100);
          return;
        }
        return send(res, 200, { "cache-control": "max-age=60" }, "recovered");
      }
      case "trunc":
        res.writeHead(200, { "content-length": "1000", "cache-control": "max-age=60" });
        res.write("x".repeat(100));
        setTimeout(() => res.socket?.destroy(), 30);
        return;
      case "truncchunk":
        res.writeHead(200, { "cache-control": "max-age=60" });
        res.write("y".repeat(100));
        setTimeout(() => res.socket?.destroy(), 30);
        return;
      case "nodate":
        res.sendDate = false;
        res.writeHead(200, { "content-length": "6", "cache-control": "max-age=60" });
        return res.end("nodate");
      case "closedelim":
        // An HTTP/1.0-style body that ends with the connection (no Content-Length, not chunked).
        res.socket!.end(
          "HTTP/1.1 200 OK\r\ncache-control: max-age=60\r\nconnection: close\r\n\r\nuntil-close",
        );
        return;
      case "lru":
        return send(res, 200, { "cache-control": "max-age=60" }, url.at(-1)!.repeat(1000));
      case "big":
        res.writeHead(200, { "cache-control": "max-age=60" });
        res.write("b".repeat(1500));
        res.end("b".repeat(1500));
        return;
      case "drip":
        res.writeHead(200, { "cache-control": "max-age=60" });
        res.write("first;");
        setTimeout(() => res.end("last"), 300);
        return;
      case "inv": {
        if (req.method !== "GET") return send(res, h["x-fail"] ? 409 : 201, {}, "changed");
        const n = (invCalls.get(url) ?? 0) + 1;
        invCalls.set(url, n);
        return send(res, 200, { "cache-control": "max-age=60" }, `version ${n}`);
      }
      default:
        return send(res, 200, { "cache-control": "max-age=60" }, `body of ${url}`);
    }
  });
  const routes = Object.fromEntries(
    [
      "fresh",
      "vary",
      "nostore",
      "private",
      "cookie",
      "auth",
      "etag",
      "lastmod",
      "slow",
      "slownostore",
      "slowvary",
      "flaky",
      "trunc",
      "truncchunk",
      "p",
      "q",
      "h",
      "inv",
      "drip",
      "nodate",
      "badetag",
      "closedelim",
      "error",
    ].map((n) => [n, ROUTE]),
  );
  proxy = await startCacheProxy(upstream.port, {
    ...routes,
    tenant: { ...ROUTE, vary: ["x-tenant"] },
    me: { ...ROUTE, perPrincipal: true },
    big: { ...ROUTE, maxEntryBytes: 1024 },
    bigdeclared: { ...ROUTE, maxEntryBytes: 10 },
  });
});

afterAll(async () => {
  await proxy.close();
  await upstream.close();
});

/** Requests the upstream received for a path (and method). */
const hits = (url: string, method = "GET") =>
  upstream.received.filter((r) => r.url === url && r.method === method).length;
const get = (path: string, headers: Record<string, string> = {}, method = "GET") =>
  request(`${proxy.url}${path}`, { method, headers });

describe("hits and misses", () => {
  it("stores_a_miss_and_serves_the_hit_with_age", async () => {
    const a = await get("/fresh/1");
    expect(a.status).toBe(200);
    expect(a.headers["cache-status"]).toBe("meshgate; fwd=miss; fwd-status=200; stored");
    expect(a.headers.age).toBe("5"); // the upstream's own Age passes through on a miss
    proxy.advance(3000);
    const b = await get("/fresh/1");
    expect(b.body).toBe("fresh /fresh/1");
    expect(b.headers["content-type"]).toBe("text/plain");
    // RFC 9111 §4.2.3: the upstream's Age (5 s) + response delay + 3 s resident.
    expect(Number(b.headers.age)).toBeGreaterThanOrEqual(8);
    expect(Number(b.headers.age)).toBeLessThan(10);
    expect(b.headers["cache-status"]).toMatch(/^meshgate; hit; ttl=(51|52)$/);
    expect(hits("/fresh/1")).toBe(1);
  });

  it("keeps_vary_variants_apart", async () => {
    const en1 = await get("/vary/1", { "accept-language": "en" });
    const fr1 = await get("/vary/1", { "accept-language": "fr" });
    const en2 = await get("/vary/1", { "accept-language": "EN" }); // case-insensitive field (RFC 9111 §4.1)
    const fr2 = await get("/vary/1", { "accept-language": "fr" });
    const none = await get("/vary/1");
    expect([en1.body, fr1.body, en2.body, fr2.body, none.body]).toEqual([
      "lang=en",
      "lang=fr",
      "lang=en",
      "lang=fr",
      "lang=none",
    ]);
    expect(fr1.headers["cache-status"]).toContain("fwd=vary-miss");
    expect(en2.headers["cache-status"]).toContain("hit");
    expect(fr2.headers["cache-status"]).toContain("hit");
    expect(hits("/vary/1")).toBe(3);
  });

  it("keeps_route_vary_variants_apart_without_a_vary_header", async () => {
    const a = await get("/tenant/1", { "x-tenant": "a" });
    const b = await get("/tenant/1", { "x-tenant": "b" });
    const a2 = await get("/tenant/1", { "x-tenant": "a" });
    expect([a.body, b.body, a2.body]).toEqual(["tenant=a", "tenant=b", "tenant=a"]);
    expect(hits("/tenant/1")).toBe(2);
  });

  it.each([
    { name: "does_not_store_no_store", path: "/nostore/1", detail: "no-store" },
    { name: "does_not_store_private", path: "/private/1", detail: "private" },
    { name: "does_not_store_set_cookie", path: "/cookie/1", detail: "set-cookie" },
  ])("$name", async ({ path, detail }) => {
    const a = await get(path);
    const b = await get(path);
    expect(a.status).toBe(200);
    expect(b.headers["cache-status"]).toBe(`meshgate; fwd=miss; fwd-status=200; detail=${detail}`);
    expect(hits(path)).toBe(2);
  });

  it("stores_a_response_without_date_with_the_time_it_was_received", async () => {
    // RFC 9110 §6.6.1.
    await get("/nodate/1");
    const stored = proxy.store.get(primaryKey("/nodate/1", "", "127.0.0.1", "nodate", null));
    expect(stored?.kind).toBe("response");
    const date = Date.parse((stored as StoredResponse).headers.date as string);
    expect(Math.abs(date - proxy.now())).toBeLessThan(2000);
  });

  it("serves_head_from_a_get_entry", async () => {
    const g = await get("/h/1");
    const h = await get("/h/1", {}, "HEAD");
    expect(h.status).toBe(200);
    expect(h.body).toBe("");
    expect(h.headers["content-length"]).toBe(String(g.body.length));
    expect(h.headers["cache-status"]).toContain("hit");
    expect(hits("/h/1")).toBe(1);
    expect(hits("/h/1", "HEAD")).toBe(0);
  });

  it("fills_the_cache_from_a_head_miss_with_a_get", async () => {
    // nginx's proxy_cache_convert_head, Varnish's builtin: the HEAD goes upstream as a GET.
    const h = await get("/h/2", {}, "HEAD");
    expect(h.status).toBe(200);
    expect(h.body).toBe("");
    expect(h.headers["content-length"]).toBe(String("body of /h/2".length));
    expect(h.headers["cache-status"]).toBe("meshgate; fwd=miss; fwd-status=200; stored");
    expect(hits("/h/2", "HEAD")).toBe(0);
    expect(hits("/h/2")).toBe(1);
    const g = await get("/h/2");
    expect(g.body).toBe("body of /h/2");
    expect(g.headers["cache-status"]).toMatch(/^meshgate; hit; ttl=/);
    expect((await get("/h/2", {}, "HEAD")).headers["cache-status"]).toMatch(/^meshgate; hit; ttl=/);
    expect(hits("/h/2")).toBe(1);
  });

  it("sends_a_head_with_no_store_upstream_as_a_head", async () => {
    const h = await get("/h/3", { "cache-control": "no-store" }, "HEAD");
    expect(h.status).toBe(200);
    expect(h.body).toBe("");
    expect(h.headers["cache-status"]).toContain("detail=head");
    expect(hits("/h/3", "HEAD")).toBe(1);
    expect(hits("/h/3")).toBe(0);
    expect((await get("/h/3")).headers["cache-status"]).toContain("fwd=miss");
  });

  it("answers_a_head_miss_that_may_not_be_stored_with_the_head_alone", async () => {
    const h = await get("/private/h", {}, "HEAD");
    expect(h.status).toBe(200);
    expect(h.body).toBe("");
    expect(h.headers["content-length"]).toBe("7");
    expect(h.headers["cache-status"]).toContain("detail=private");
    expect(hits("/private/h")).toBe(1);
    expect(hits("/private/h", "HEAD")).toBe(0);
    // The connection carries on: the dropped body was read to its end.
    expect((await get("/private/h")).body).toBe("private");
  });

  it.each([
    // A streamed body is found too large after its head went out: its Cache-Status could not say so.
    ["sends_heads_as_heads_for_a_while_after_a_streamed_get_too_large_to_store", "/big/h", "stored"],
    [
      "sends_heads_as_heads_for_a_while_after_a_declared_get_too_large_to_store",
      "/bigdeclared/h",
      "detail=too-large",
    ],
  ])("%s", async (_claim, path, firstStatus) => {
    // One full download per key and minute, not one per HEAD.
    expect((await get(path, {}, "HEAD")).headers["cache-status"]).toContain(firstStatus);
    const second = await get(path, {}, "HEAD");
    expect(second.status).toBe(200);
    expect(second.headers["cache-status"]).toContain("detail=head");
    expect([hits(path), hits(path, "HEAD")]).toEqual([1, 1]);
    proxy.advance(61_000);
    try {
      await get(path, {}, "HEAD");
      expect([hits(path), hits(path, "HEAD")]).toEqual([2, 1]);
    } finally {
      proxy.advance(-61_000); // the other claims' entries stay fresh
    }
  });

  it.each([
    ["a_private_response", "/private/hp", "detail=private"],
    ["a_no_store_response", "/nostore/hp", "detail=no-store"],
    ["a_response_setting_a_cookie", "/cookie/hp", "detail=set-cookie"],
  ])("sends_heads_as_heads_for_a_while_after_%s", async (_claim, path, firstDetail) => {
    // The same GET would not be stored next time either: later HEADs need not download the body.
    expect((await get(path, {}, "HEAD")).headers["cache-status"]).toContain(firstDetail);
    expect((await get(path, {}, "HEAD")).headers["cache-status"]).toContain("detail=head");
    expect([hits(path), hits(path, "HEAD")]).toEqual([1, 1]);
  });

  it.each([
    ["an_upstream_error", "/error/hp", "fwd-status=500; detail=status"],
    ["a_request_saying_no_store", "/fresh/hp-request", "detail=head"],
  ])("keeps_converting_heads_after_%s", async (_claim, path, firstDetail) => {
    // Transient or the request's own choice: the next HEAD may fill the cache, so it goes as a GET.
    const first = path.includes("request")
      ? await get(path, { "cache-control": "no-store" }, "HEAD")
      : await get(path, {}, "HEAD");
    expect(first.headers["cache-status"]).toContain(firstDetail);
    await get(path, {}, "HEAD");
    expect(hits(path, "HEAD")).toBe(path.includes("request") ? 1 : 0);
    expect(hits(path)).toBe(path.includes("request") ? 1 : 2);
  });

  it("revalidates_a_stale_entry_for_a_head_with_a_conditional_get", async () => {
    await get("/etag/h");
    proxy.advance(5_000);
    const h = await get("/etag/h", {}, "HEAD");
    expect(h.status).toBe(200);
    expect(h.body).toBe("");
    expect(h.headers["x-refreshed"]).toBe("yes");
    expect(h.headers["cache-status"]).toContain("fwd=stale; fwd-status=304");
    const sent = upstream.received.filter((r) => r.url === "/etag/h");
    expect(sent.map((r) => [r.method, r.headers["if-none-match"] ?? null])).toEqual([
      ["GET", null],
      ["GET", '"v1"'],
    ]);
  });

  it("lets_a_get_wait_for_the_fill_of_a_head_miss", async () => {
    const [h, g] = await Promise.all([get("/slow/h", {}, "HEAD"), get("/slow/h")]);
    expect(h.body).toBe("");
    expect(g.body).toBe("slow /slow/h");
    expect(hits("/slow/h")).toBe(1);
    expect(hits("/slow/h", "HEAD")).toBe(0);
  });

  it("answers_a_client_conditional_against_a_fresh_entry_with_304", async () => {
    const a = await get("/etag/c");
    const b = await get("/etag/c", { "if-none-match": '"v1"' });
    expect(a.status).toBe(200);
    expect(b.status).toBe(304);
    expect(b.body).toBe("");
    expect(b.headers.etag).toBe('"v1"');
    expect(b.headers["cache-status"]).toContain("hit");
    expect(hits("/etag/c")).toBe(1);
  });

  it("answers_a_client_conditional_on_a_miss_with_304_and_still_stores", async () => {
    // The client's conditional is not forwarded: the cache fetches the full response and answers it.
    const a = await get("/etag/d", { "if-none-match": '"v1"' });
    expect(a.status).toBe(304);
    expect(upstream.received.find((r) => r.url === "/etag/d")!.headers["if-none-match"]).toBeUndefined();
    const b = await get("/etag/d");
    expect(b.status).toBe(200);
    expect(b.body).toBe("versioned");
    expect(b.headers["cache-status"]).toContain("hit");
    expect(hits("/etag/d")).toBe(1);
  });

  it("answers_only_if_cached_miss_with_504", async () => {
    const a = await get("/fresh/only", { "cache-control": "only-if-cached" });
    expect(a.status).toBe(504);
    expect(hits("/fresh/only")).toBe(0);
  });

  it("revalidates_when_the_request_says_no_cache", async () => {
    await get("/etag/n");
    const b = await get("/etag/n", { "cache-control": "no-cache" });
    expect(b.status).toBe(200);
    expect(b.body).toBe("versioned");
    expect(b.headers["cache-status"]).toMatch(/^meshgate; fwd=request; fwd-status=304; ttl=\d+$/);
    expect(upstream.received.filter((r) => r.url === "/etag/n")[1]!.headers["if-none-match"]).toBe('"v1"');
  });
});

describe("credentials", () => {
  it("bypasses_requests_with_authorization_on_a_shared_route", async () => {
    const a = await get("/auth/1", { authorization: "Bearer token-a" });
    const b = await get("/auth/1", { authorization: "Bearer token-a" });
    const anon = await get("/auth/1");
    expect(a.body).toBe("for Bearer token-a");
    expect(b.headers["cache-status"]).toBe("meshgate; fwd=bypass; fwd-status=200; detail=authorization");
    expect(anon.body).toBe("for anonymous"); // never the credentialed response
    expect(hits("/auth/1")).toBe(3);
  });

  it("bypasses_gateway_authenticated_principals_on_a_shared_route", async () => {
    await get("/auth/2", { "x-test-principal": "alice" });
    await get("/auth/2", { "x-test-principal": "alice" });
    expect(hits("/auth/2")).toBe(2);
  });

  it("keeps_per_principal_entries_apart", async () => {
    const seq = ["alice", "alice", "bob", "bob", "alice", "bob"];
    const bodies: string[] = [];
    for (const p of seq)
      bodies.push((await get("/me/1", { "x-test-principal": p, authorization: `Bearer ${p}` })).body);
    expect(bodies).toEqual(seq.map((p) => `hello ${p}`));
    const anon = await get("/me/1");
    expect(anon.body).toBe("hello anonymous");
    expect(hits("/me/1")).toBe(3); // alice, bob, anonymous: one fill each
  });
});

describe("revalidation", () => {
  it("revalidates_a_stale_entry_with_if_none_match_and_serves_200_from_the_cache", async () => {
    const a = await get("/etag/1");
    expect(a.body).toBe("versioned");
    proxy.advance(2000); // max-age=1: now stale
    const before = proxy.results.length;
    const b = await get("/etag/1");
    expect(b.status).toBe(200);
    expect(b.body).toBe("versioned");
    expect(b.headers["x-refreshed"]).toBe("yes"); // stored headers updated from the 304 (RFC 9111 §4.3.4)
    expect(b.headers["cache-status"]).toMatch(/^meshgate; fwd=stale; fwd-status=304; ttl=(59|60)$/);
    const sent = upstream.received.filter((r) => r.url === "/etag/1");
    expect(sent).toHaveLength(2);
    expect(sent[1]!.headers["if-none-match"]).toBe('"v1"');
    expect(proxy.results.slice(before)).toEqual(["revalidated"]);
    // Freshened: the next request is a hit again.
    const c = await get("/etag/1");
    expect(c.headers["cache-status"]).toContain("hit");
    expect(c.headers["x-refreshed"]).toBe("yes");
    expect(hits("/etag/1")).toBe(2);
  });

  it("drops_the_entry_when_a_304_names_another_representation", async () => {
    // RFC 9111 §4.3.4: a 304 whose validator selects no stored response updates nothing.
    await get("/badetag/1");
    proxy.advance(2000);
    const b = await get("/badetag/1");
    expect(b.status).toBe(502);
    expect(b.headers["x-meshgate-error"]).toBe("upstream_bad_revalidation");
    const c = await get("/badetag/1");
    expect(c.body).toBe("first");
    expect(c.headers["cache-status"]).toContain("fwd=miss");
  });

  it("revalidates_with_if_modified_since_from_last_modified", async () => {
    await get("/lastmod/1");
    proxy.advance(2000);
    const b = await get("/lastmod/1");
    expect(b.body).toBe("dated");
    expect(b.headers["cache-status"]).toContain("fwd-status=304");
    expect(upstream.received.filter((r) => r.url === "/lastmod/1")[1]!.headers["if-modified-since"]).toBe(
      "Wed, 01 Jan 2025 00:00:00 GMT",
    );
  });
});

describe("coalescing", () => {
  it("makes_one_upstream_request_for_100_concurrent_misses", async () => {
    const before = proxy.results.length;
    const all = await Promise.all(Array.from({ length: 100 }, () => get("/slow/1")));
    expect(all.every((r) => r.status === 200 && r.body === "slow /slow/1")).toBe(true);
    expect(hits("/slow/1")).toBe(1);
    const results = proxy.results.slice(before);
    expect(results.filter((r) => r === "miss")).toHaveLength(1);
    expect(results.filter((r) => r === "coalesced")).toHaveLength(99);
    expect(all.filter((r) => String(r.headers["cache-status"]).includes("collapsed"))).toHaveLength(99);
  });

  it("releases_waiters_to_go_upstream_when_the_fill_is_not_storable", async () => {
    const all = await Promise.all(Array.from({ length: 10 }, () => get("/slownostore/1")));
    expect(all.every((r) => r.status === 200 && r.body === "nostore")).toBe(true);
    expect(hits("/slownostore/1")).toBe(10);
  });

  it("releases_waiters_to_go_upstream_when_the_fill_fails", async () => {
    const all = await Promise.all(Array.from({ length: 10 }, () => get("/flaky/1")));
    const statuses = all.map((r) => r.status).sort();
    // Only the request that met the failure sees it; the waiters fetch for themselves.
    expect(statuses.filter((s) => s === 502)).toHaveLength(1);
    expect(all.filter((r) => r.status === 200 && r.body === "recovered")).toHaveLength(9);
    expect(hits("/flaky/1")).toBeGreaterThanOrEqual(2);
  });

  it("serves_waiters_only_the_variant_that_matches_them", async () => {
    const headers = ["a", "b", "a", "b", "a"].map((v) => ({ "x-v": v }));
    const all = await Promise.all(headers.map((h) => get("/slowvary/1", h)));
    expect(all.map((r) => r.body)).toEqual(headers.map((h) => `v=${h["x-v"]}`));
  });
});

describe("streaming", () => {
  it("does_not_store_a_truncated_body_and_the_client_sees_the_truncation", async () => {
    await expect(get("/trunc/1")).rejects.toMatchObject({
      code: expect.stringMatching(/ABORTED|ECONNRESET/),
    });
    await expect(get("/trunc/1")).rejects.toBeTruthy();
    expect(hits("/trunc/1")).toBe(2);
    await expect(get("/truncchunk/1")).rejects.toBeTruthy();
    await expect(get("/truncchunk/1")).rejects.toBeTruthy();
    expect(hits("/truncchunk/1")).toBe(2);
  });

  it("does_not_store_when_the_client_leaves_mid_body", async () => {
    await new Promise<void>((resolve, reject) => {
      const r = http.get(`${proxy.url}/drip/2`, { agent: false }, (res) => {
        res.once("data", () => {
          r.destroy();
          resolve();
        });
      });
      r.on("error", (e: Error & { code?: string }) => (e.code === "ECONNRESET" ? resolve() : reject(e)));
    });
    await new Promise((r) => setTimeout(r, 400)); // past the upstream's end
    const again = await get("/drip/2");
    expect(again.body).toBe("first;last");
    expect(again.headers["cache-status"]).toContain("fwd=miss");
    expect(hits("/drip/2")).toBe(2);
  });

  it("does_not_store_a_close_delimited_body", async () => {
    // RFC 9111 §3.3: its truncation could not be told from its end.
    const a = await get("/closedelim/1");
    expect(a.body).toBe("until-close");
    expect(a.headers["cache-status"]).toBe("meshgate; fwd=miss; fwd-status=200; detail=unframed");
    await get("/closedelim/1");
    expect(hits("/closedelim/1")).toBe(2);
  });

  it("streams_a_body_over_max_entry_bytes_uncached", async () => {
    const a = await get("/big/1");
    expect(a.body).toBe("b".repeat(3000));
    expect(a.complete).toBe(true);
    const b = await get("/big/1");
    expect(b.body).toBe("b".repeat(3000));
    expect(hits("/big/1")).toBe(2);
    expect(proxy.notStored).toContain("too-large");
  });

  it("passes_the_first_byte_of_a_miss_before_the_body_completes", async () => {
    const started = performance.now();
    const { first, end, body } = await new Promise<{ first: number; end: number; body: string }>(
      (resolve, reject) => {
        http
          .get(`${proxy.url}/drip/1`, { agent: false }, (res) => {
            let first = 0;
            let body = "";
            res.on("data", (c: Buffer) => {
              if (!first) first = performance.now() - started;
              body += c.toString();
            });
            res.on("end", () => resolve({ first, end: performance.now() - started, body }));
          })
          .on("error", reject);
      },
    );
    expect(body).toBe("first;last");
    expect(first).toBeLessThan(200);
    expect(end).toBeGreaterThanOrEqual(290);
    const again = await get("/drip/1");
    expect(again.headers["cache-status"]).toContain("hit");
    expect(again.body).toBe("first;last");
  });
});

describe("purge and invalidation", () => {
  it("purges_by_url_prefix_and_everything", async () => {
    for (const p of ["/p/a", "/p/a?x=1", "/p/b", "/q/c"]) await get(p);
    expect(await proxy.cache.purge({ url: "/p/a" })).toBe(1);
    expect((await get("/p/a")).headers["cache-status"]).toContain("fwd=miss");
    expect((await get("/p/a?x=1")).headers["cache-status"]).toContain("hit");
    expect((await get("/p/b")).headers["cache-status"]).toContain("hit");
    expect(await proxy.cache.purge({ prefix: "/p/" })).toBe(3);
    expect((await get("/p/b")).headers["cache-status"]).toContain("fwd=miss");
    expect((await get("/q/c")).headers["cache-status"]).toContain("hit");
    expect(await proxy.cache.purge({ all: true })).toBeGreaterThanOrEqual(2);
    expect((await get("/q/c")).headers["cache-status"]).toContain("fwd=miss");
    expect(proxy.store.stats().entries).toBe(1);
  });

  it("invalidates_a_url_after_a_successful_unsafe_method", async () => {
    expect((await get("/inv/1")).body).toBe("version 1");
    expect((await get("/inv/1")).body).toBe("version 1");
    expect((await get("/inv/1", {}, "POST")).status).toBe(201);
    expect((await get("/inv/1")).body).toBe("version 2");
  });

  it("keeps_the_entry_after_a_failed_unsafe_method", async () => {
    await get("/inv/2");
    expect((await get("/inv/2", { "x-fail": "1" }, "DELETE")).status).toBe(409);
    expect((await get("/inv/2")).body).toBe("version 1");
  });
});

describe("eviction", () => {
  it("evicts_least_recently_used_entries_under_the_byte_bound", async () => {
    const small = await startCacheProxy(upstream.port, { lru: ROUTE }, { maxBytes: 5000 });
    try {
      for (const p of ["/lru/1", "/lru/2", "/lru/3", "/lru/4"]) {
        const r = await request(`${small.url}${p}`);
        expect(r.body).toBe(p.at(-1)!.repeat(1000));
        expect(small.store.stats().bytes).toBeLessThanOrEqual(5000);
      }
      expect(small.store.stats().entries).toBe(3);
      const four = await request(`${small.url}/lru/4`);
      expect(four.headers["cache-status"]).toContain("hit");
      const one = await request(`${small.url}/lru/1`);
      expect(one.headers["cache-status"]).toContain("fwd=miss");
      expect(hits("/lru/1")).toBe(2);
    } finally {
      await small.close();
    }
  });
});

describe("bookkeeping", () => {
  it("leaves_no_fill_behind", async () => {
    // Every fill of the tests above (stored, not storable, failed, truncated, client gone) was settled.
    await new Promise((r) => setTimeout(r, 50));
    expect(proxy.cache.inFlightFills).toBe(0);
  });
});
