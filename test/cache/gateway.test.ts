/**
 * Caching end to end through the real gateway (translated spec → RuntimeConfig → startGateway) in front
 * of real upstreams: hits with Age and Cache-Status, metrics, POST /cache/purge on the admin listener
 * (single process and two worker processes), invalidation by an unsafe method on another route (and,
 * with two workers, in both),
 * coalescing, credentials bypass, only-if-cached, routes without cache untouched; the scheme and authority
 * the upstream is told kept apart in the key, per-principal entries of JWTs without `sub` never made and
 * of client certificates sharing a subject kept apart by their SANs,
 * variants selected by the headers as the upstream gets them, and ranges ignored where a body transform
 * reshapes the stored response.
 */
import { mkdtemp, rm } from "node:fs/promises";
import http from "node:http";
import http2 from "node:http2";
import https from "node:https";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { makeCa, makeCert, type Pem } from "../auth/pki.ts";
import { makeKey, nowS, signToken } from "../auth/support.ts";
import { selfSignedCert } from "../support/certs.ts";
import {
  gatewayConfig,
  httpsListener,
  request,
  startGatewayProcess,
  startTestGateway,
  startUpstream,
  type TestGateway,
  type Upstream,
} from "../support/gateway.ts";

const PUBLIC = { public: true, rateLimit: { requests: 100000, per: "1s" } };

let app: Upstream;
let gw: TestGateway;
const count = (url: string, method = "GET") =>
  app.received.filter((r) => r.url === url && r.method === method).length;

beforeAll(async () => {
  let version = 0;
  app = await startUpstream((req, res, body) => {
    if (req.method === "POST") {
      res.writeHead(201, { "content-length": 2 });
      return res.end("ok");
    }
    const slow = req.url?.startsWith("/slow");
    const out = JSON.stringify({
      path: req.url,
      version: ++version,
      auth: req.headers.authorization ?? null,
      body,
    });
    setTimeout(
      () => {
        res.writeHead(200, {
          "content-type": "application/json",
          "content-length": Buffer.byteLength(out),
          "cache-control": req.url?.startsWith("/items/ttl") ? "public" : "max-age=60",
        });
        res.end(out);
      },
      slow ? 150 : 0,
    );
  });
  gw = await startTestGateway(
    gatewayConfig(
      [
        {
          name: "items",
          match: { path: "/api/items/{id}", methods: ["GET", "HEAD"] },
          to: "app",
          rewrite: { path: "/items/{id}" },
          cache: { ttl: "30s" },
          ...PUBLIC,
        },
        {
          name: "items-write",
          match: { path: "/api/items/{id}", methods: ["POST"] },
          to: "app",
          rewrite: { path: "/items/{id}" },
          ...PUBLIC,
        },
        { name: "slow", match: { path: "/slow/**" }, to: "app", cache: { ttl: "30s" }, ...PUBLIC },
        { name: "plain", match: { path: "/plain/**" }, to: "app", ...PUBLIC },
      ],
      { app },
    ),
  );
});

afterAll(async () => {
  await gw.drain();
  await app.close();
});

describe("caching in the gateway", () => {
  it("serves_a_hit_with_age_and_cache_status_and_counts_it", async () => {
    const a = await request(`${gw.url}/api/items/1`);
    const b = await request(`${gw.url}/api/items/1`);
    expect(a.status).toBe(200);
    expect(b.body).toBe(a.body);
    expect(a.headers["cache-status"]).toBe("meshgate; fwd=miss; fwd-status=200; stored");
    expect(b.headers["cache-status"]).toMatch(/^meshgate; hit; ttl=(5[7-9]|60)$/);
    expect(b.headers.age).toMatch(/^[01]$/);
    expect(count("/items/1")).toBe(1);
    const metrics = await (await fetch(`${gw.adminUrl}/metrics`)).text();
    expect(metrics).toContain('meshgate_cache_requests_total{proxy="gateway",route="items",result="miss"} 1');
    expect(metrics).toContain('meshgate_cache_requests_total{proxy="gateway",route="items",result="hit"} 1');
    expect(metrics).toMatch(/meshgate_cache_entries\{proxy="gateway"\} [1-9]/);
    expect(metrics).toMatch(/meshgate_cache_stored_bytes\{proxy="gateway"\} [1-9]\d+/);
    const access = gw.logs.filter((l) => l.event === "access" && l.path === "/api/items/1");

    expect(access).toHaveLength(2);
    expect(access[1]!.outcome).toBe("cache_hit");
  });

  it("uses_the_route_ttl_when_the_response_has_no_freshness", async () => {
    await request(`${gw.url}/api/items/ttl`);
    const b = await request(`${gw.url}/api/items/ttl`);
    expect(b.headers["cache-status"]).toMatch(/^meshgate; hit; ttl=(2[7-9]|30)$/);
  });

  it("serves_head_from_the_get_entry", async () => {
    await request(`${gw.url}/api/items/h`);
    const h = await request(`${gw.url}/api/items/h`, { method: "HEAD" });
    expect(h.status).toBe(200);
    expect(h.body).toBe("");
    expect(h.headers["cache-status"]).toContain("hit");
    expect(count("/items/h", "HEAD")).toBe(0);
  });

  it("fills_the_cache_from_a_head_miss_sent_upstream_as_a_get", async () => {
    const h = await request(`${gw.url}/api/items/hm`, { method: "HEAD" });
    expect(h.status).toBe(200);
    expect(h.body).toBe("");
    expect(h.complete).toBe(true);
    expect(h.headers["cache-status"]).toBe("meshgate; fwd=miss; fwd-status=200; stored");
    expect(Number(h.headers["content-length"])).toBeGreaterThan(0);
    expect([count("/items/hm"), count("/items/hm", "HEAD")]).toEqual([1, 0]);
    const g = await request(`${gw.url}/api/items/hm`);
    expect(g.headers["cache-status"]).toMatch(/^meshgate; hit; ttl=/);
    expect(g.headers["content-length"]).toBe(h.headers["content-length"]);
    expect(count("/items/hm")).toBe(1);
  });

  it("answers_a_head_miss_over_h2c_with_the_head_alone", async () => {
    const client = http2.connect(gw.url);
    try {
      const h = await new Promise<{ headers: http2.IncomingHttpHeaders; body: string }>((resolve, reject) => {
        const stream = client.request({ ":method": "HEAD", ":path": "/api/items/h2" });
        let body = "";
        let headers: http2.IncomingHttpHeaders = {};
        stream.setEncoding("utf8");
        stream.on("response", (r) => (headers = r));
        stream.on("data", (c: string) => (body += c));
        stream.on("end", () => resolve({ headers, body }));
        stream.on("error", reject);
      });
      expect(h.headers[":status"]).toBe(200);
      expect(h.body).toBe("");
      expect(h.headers["cache-status"]).toBe("meshgate; fwd=miss; fwd-status=200; stored");
    } finally {
      client.close();
    }
    expect([count("/items/h2"), count("/items/h2", "HEAD")]).toEqual([1, 0]);
    expect((await request(`${gw.url}/api/items/h2`)).headers["cache-status"]).toMatch(/^meshgate; hit;/);
  });

  it("invalidates_after_a_post_to_the_same_url_on_another_route", async () => {
    const a = await request(`${gw.url}/api/items/2`);
    expect((await request(`${gw.url}/api/items/2`)).body).toBe(a.body);
    expect((await request(`${gw.url}/api/items/2`, { method: "POST", body: "{}" })).status).toBe(201);
    const c = await request(`${gw.url}/api/items/2`);
    expect(c.body).not.toBe(a.body);
    expect(c.headers["cache-status"]).toContain("fwd=miss");
  });

  it("makes_one_upstream_request_for_concurrent_misses", async () => {
    const all = await Promise.all(Array.from({ length: 50 }, () => request(`${gw.url}/slow/1`)));
    expect(new Set(all.map((r) => r.body)).size).toBe(1);
    expect(all.every((r) => r.status === 200)).toBe(true);
    expect(count("/slow/1")).toBe(1);
  });

  it("bypasses_requests_with_authorization", async () => {
    const a = await request(`${gw.url}/api/items/3`, { headers: { authorization: "Bearer abc" } });
    await request(`${gw.url}/api/items/3`, { headers: { authorization: "Bearer abc" } });
    const anon = await request(`${gw.url}/api/items/3`);
    expect(a.headers["cache-status"]).toContain("fwd=bypass");
    expect(JSON.parse(anon.body).auth).toBeNull();
    expect(count("/items/3")).toBe(3);
  });

  it("answers_only_if_cached_without_an_entry_with_504", async () => {
    const r = await request(`${gw.url}/api/items/none`, { headers: { "cache-control": "only-if-cached" } });
    expect(r.status).toBe(504);
    expect(r.headers["x-meshgate-error"]).toBe("not_cached");
    expect(count("/items/none")).toBe(0);
  });

  it("leaves_routes_without_cache_untouched", async () => {
    const r = await request(`${gw.url}/plain/1`);
    expect(r.headers["cache-status"]).toBeUndefined();
    await request(`${gw.url}/plain/1`);
    expect(count("/plain/1")).toBe(2);
  });
});

describe("POST /cache/purge", () => {
  const purge = (body: string, method = "POST") =>
    fetch(`${gw.adminUrl}/cache/purge`, { method, body: method === "POST" ? body : null }).then(
      async (r) => ({
        status: r.status,
        json: (await r.json()) as Record<string, unknown>,
      }),
    );

  it("purges_by_url_prefix_and_all", async () => {
    for (const p of ["/api/items/p1", "/api/items/p2", "/api/items/p2?x=1", "/slow/p3"])
      await request(`${gw.url}${p}`);
    // The client's URL (before the route's rewrite), canonicalized like request targets.
    expect(await purge(JSON.stringify({ url: "/api//items/%70%31" }))).toEqual({
      status: 200,
      json: { purged: 1 },
    });
    expect((await request(`${gw.url}/api/items/p1`)).headers["cache-status"]).toContain("fwd=miss");
    expect((await request(`${gw.url}/api/items/p2`)).headers["cache-status"]).toContain("hit");
    expect(await purge(JSON.stringify({ prefix: "/api/items/p2", host: "127.0.0.1" }))).toEqual({
      status: 200,
      json: { purged: 2 },
    });
    expect((await request(`${gw.url}/api/items/p2?x=1`)).headers["cache-status"]).toContain("fwd=miss");
    const all = await purge(JSON.stringify({ all: true }));
    expect(all.status).toBe(200);
    expect(all.json.purged).toBeGreaterThanOrEqual(3);
    expect((await request(`${gw.url}/slow/p3`)).headers["cache-status"]).toContain("fwd=miss");
  });

  it.each([
    { name: "refuses_a_body_that_is_not_json", body: "url=/x", error: /JSON/ },
    {
      name: "refuses_two_kinds_at_once",
      body: JSON.stringify({ url: "/a", all: true }),
      error: /exactly one/,
    },
    {
      name: "refuses_a_url_that_is_not_a_path",
      body: JSON.stringify({ url: "http://evil/" }),
      error: /path/,
    },
    {
      name: "refuses_a_dot_segment_above_root",
      body: JSON.stringify({ url: "/../x" }),
      error: /valid request target/,
    },
    {
      name: "refuses_unknown_fields",
      body: JSON.stringify({ url: "/a", hosts: "x" }),
      error: /unknown field/,
    },
    { name: "refuses_all_false", body: JSON.stringify({ all: false }), error: /must be true/ },
  ])("$name", async ({ body, error }) => {
    const r = await purge(body);
    expect(r.status).toBe(400);
    expect(String(r.json.error)).toMatch(error);
  });

  it("refuses_get", async () => {
    const r = await fetch(`${gw.adminUrl}/cache/purge`);
    expect(r.status).toBe(405);
    expect(r.headers.get("allow")).toBe("POST");
  });
});

describe("with the other response stages", () => {
  it("runs_transforms_cors_and_rate_limit_headers_on_hits_without_storing_them", async () => {
    const config = gatewayConfig(
      [
        {
          name: "shaped",
          match: { path: "/shaped/{id}", methods: ["GET"] },
          to: "app",
          cache: { ttl: "30s" },
          cors: { origins: ["https://a.example", "https://b.example"] },
          transform: {
            response: { headers: { set: { "x-shaped": "yes" } }, body: { drop: ["auth"] } },
          },
          public: true,
          rateLimit: { requests: 100, per: "1m" },
        },
      ],
      { app },
    );
    const g = await startTestGateway(config);
    try {
      const a = await request(`${g.url}/shaped/1`, { headers: { origin: "https://a.example" } });
      const b = await request(`${g.url}/shaped/1`, { headers: { origin: "https://b.example" } });
      expect(a.headers["cache-status"]).toContain("fwd=miss");
      expect(b.headers["cache-status"]).toContain("hit");
      expect(count("/shaped/1")).toBe(1);
      // Per request, on the hit too: CORS for this origin, the route's transforms, this request's limit.
      expect(a.headers["access-control-allow-origin"]).toBe("https://a.example");
      expect(b.headers["access-control-allow-origin"]).toBe("https://b.example");
      expect(b.headers["x-shaped"]).toBe("yes");
      expect(JSON.parse(b.body)).not.toHaveProperty("auth");
      expect(JSON.parse(b.body).path).toBe("/shaped/1");
      expect(Number(b.headers["ratelimit-remaining"])).toBeLessThan(Number(a.headers["ratelimit-remaining"]));
    } finally {
      await g.drain();
    }
  });
});

describe("credentials", () => {
  it("bypasses_requests_with_the_configured_api_key_header", async () => {
    const config = gatewayConfig(
      [{ name: "k", match: { path: "/k/**" }, to: "app", cache: { ttl: "30s" }, ...PUBLIC }],
      { app },
      { apiKeys: { header: "x-client-key", consumers: { c: { keyHashes: [`sha256:${"a".repeat(64)}`] } } } },
    );
    const g = await startTestGateway(config);
    try {
      const a = await request(`${g.url}/k/1`, { headers: { "x-client-key": "key-1" } });
      await request(`${g.url}/k/1`, { headers: { "x-client-key": "key-1" } });
      expect(a.headers["cache-status"]).toBe("meshgate; fwd=bypass; fwd-status=200; detail=authorization");
      expect(count("/k/1")).toBe(2);
    } finally {
      await g.drain();
    }
  });
});

describe("credentials in a jwt provider's token header", () => {
  // Authorization and the API-key header were credentials to the cache, a JWT provider's own token header
  // (`tokenFrom.header`) was not: on a public caching route a request carrying it was forwarded with it,
  // and the answer for that token stored and served to everyone.
  it("bypasses_requests_with_a_jwt_providers_token_header", async () => {
    const key = makeKey("k-hdr");
    const config = gatewayConfig(
      [{ name: "t", match: { path: "/t/**" }, to: "app", cache: { ttl: "30s" }, ...PUBLIC }],
      { app },
      {
        jwt: {
          main: {
            issuer: "https://id.test/",
            audiences: ["api"],
            jwks: { keys: [key.jwk] },
            algorithms: ["ES256"],
            tokenFrom: { header: "x-token", prefix: "" },
          },
        },
      },
    );
    const g = await startTestGateway(config);
    try {
      const a = await request(`${g.url}/t/1`, { headers: { "x-token": "alice-token" } });
      const anon = await request(`${g.url}/t/1`);
      expect(a.headers["cache-status"]).toBe("meshgate; fwd=bypass; fwd-status=200; detail=authorization");
      expect(anon.headers["cache-status"]).toBe("meshgate; fwd=miss; fwd-status=200; stored");
      expect(count("/t/1")).toBe(2);
    } finally {
      await g.drain();
    }
  });
});

describe("a GET whose body no header announces (HTTP/2)", () => {
  // HTTP/2 frames a body without Content-Length: a GET whose HEADERS frame leaves the stream open and
  // sends DATA was looked up and its answer — to a body the key does not hold — stored for everyone.
  async function h2Get(path: string, body: string | null): Promise<{ status: string; text: string }> {
    const client = http2.connect(gw.url);
    try {
      return await new Promise((resolve, reject) => {
        const stream = client.request({ ":method": "GET", ":path": path }, { endStream: body === null });
        let text = "";
        let status = "";
        stream.setEncoding("utf8");
        stream.on("response", (h) => (status = String(h["cache-status"])));
        stream.on("data", (c: string) => (text += c));
        stream.on("end", () => resolve({ status, text }));
        stream.on("error", reject);
        if (body !== null) stream.end(body);
      });
    } finally {
      client.close();
    }
  }

  it("bypasses_an_h2c_get_with_a_body_and_never_serves_its_answer_to_others", async () => {
    const attacker = await h2Get("/api/items/b1", "attacker-body");
    expect(attacker.status).toBe("meshgate; fwd=bypass; fwd-status=200; detail=request-body");
    expect(JSON.parse(attacker.text).body).toBe("attacker-body");
    const victim = await request(`${gw.url}/api/items/b1`);
    expect(victim.headers["cache-status"]).toBe("meshgate; fwd=miss; fwd-status=200; stored");
    expect(JSON.parse(victim.body).body).toBe("");
  });

  it("looks_up_an_h2c_get_whose_headers_end_the_stream", async () => {
    await request(`${gw.url}/api/items/b2`);
    expect((await h2Get("/api/items/b2", null)).status).toMatch(/^meshgate; hit; ttl=/);
  });
});

describe("whom per-principal entries belong to", () => {
  it("never_caches_per_principal_for_jwts_without_sub", async () => {
    const key = makeKey("k1");
    const iss = "https://id.test/";
    const config = gatewayConfig(
      [
        {
          name: "mine",
          match: { path: "/mine/**" },
          to: "app",
          auth: { jwt: "main" },
          cache: { ttl: "30s", perPrincipal: true },
          rateLimit: { requests: 100000, per: "1s" },
        },
      ],
      { app },
      {
        jwt: {
          main: {
            issuer: iss,
            audiences: ["api"],
            jwks: { keys: [key.jwk] },
            algorithms: ["ES256"],
            forwardClaims: { "x-client-id": "client_id" },
          },
        },
      },
    );
    const g = await startTestGateway(config);
    try {
      // Two clients whose tokens carry no `sub` (the upstream tells them apart by another claim).
      const as = async (client: string) =>
        request(`${g.url}/mine/1`, {
          headers: {
            authorization: `Bearer ${await signToken(key, { iss, aud: "api", exp: nowS() + 600, client_id: client })}`,
          },
        });
      const a = await as("alice-app");
      const b = await as("bob-app");
      expect(a.headers["cache-status"]).toBe("meshgate; fwd=bypass; fwd-status=200; detail=no-principal");
      expect(b.headers["cache-status"]).toBe("meshgate; fwd=bypass; fwd-status=200; detail=no-principal");
      expect(count("/mine/1")).toBe(2);
      expect(app.received.filter((r) => r.url === "/mine/1").map((r) => r.headers["x-client-id"])).toEqual([
        "alice-app",
        "bob-app",
      ]);
    } finally {
      await g.drain();
    }
  });
  it("keeps_client_certificates_sharing_a_subject_apart_by_their_sans", async () => {
    // SPIRE-style SVIDs: one subject for every workload, the identity in the URI SAN (what the provider
    // admits them by, and what the route forwards).
    const dir = await mkdtemp(join(tmpdir(), "meshgate-cache-svid-"));
    const ca = makeCa(dir, "ca", "/CN=Workload CA");
    const server = makeCert(dir, "server", ca, "/CN=localhost", {
      usage: "server",
      san: "DNS:localhost,IP:127.0.0.1",
    });
    const svid = (sa: string) =>
      makeCert(dir, sa, ca, "/C=US/O=SPIRE", { san: `URI:spiffe://t.example/ns/x/sa/${sa}` });
    const [a, b] = [svid("a"), svid("b")];
    const config = gatewayConfig(
      [
        {
          name: "svid",
          match: { path: "/svid/**" },
          to: "app",
          auth: { clientCert: "spire" },
          cache: { ttl: "30s", perPrincipal: true },
          transform: { request: { headers: { set: { "x-workload": "${principal.claims.sans}" } } } },
          rateLimit: { requests: 100000, per: "1s" },
        },
      ],
      { app },
      {
        listeners: [httpsListener(server)],
        clientCerts: {
          spire: {
            caFile: ca.certFile,
            sans: ["URI:spiffe://t.example/ns/x/sa/a", "URI:spiffe://t.example/ns/x/sa/b"],
          },
        },
      },
    );
    const g = await startTestGateway(config);
    const as = (c: Pem) =>
      new Promise<string | undefined>((resolve, reject) => {
        const r = https.request(
          {
            host: "127.0.0.1",
            port: g.ports.listeners.https,
            path: "/svid/1",
            ca: ca.cert,
            servername: "localhost",
            cert: c.cert,
            key: c.key,
            agent: false,
          },
          (res) => {
            res.resume();
            res.on("end", () => resolve(res.headers["cache-status"] as string | undefined));
          },
        );
        r.on("error", reject);
        r.end();
      });
    try {
      expect(await as(a)).toBe("meshgate; fwd=miss; fwd-status=200; stored");
      expect(await as(b)).toBe("meshgate; fwd=miss; fwd-status=200; stored");
      expect(await as(a)).toMatch(/^meshgate; hit;/);
      expect(app.received.filter((r) => r.url === "/svid/1").map((r) => r.headers["x-workload"])).toEqual([
        '["URI:spiffe://t.example/ns/x/sa/a"]',
        '["URI:spiffe://t.example/ns/x/sa/b"]',
      ]);
    } finally {
      await g.drain();
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe("a store smaller than a route's maxEntrySize", () => {
  it.each<[string, Record<string, string>, string | null]>([
    [
      "reports_a_declared_body_the_store_cannot_hold_as_too_large_not_stored",
      { "content-length": String(96 * 1024) },
      "meshgate; fwd=miss; fwd-status=200; detail=too-large",
    ],
    // Chunked: the head (and its Cache-Status) goes out before the size is known; the capture stops at
    // what the store holds and the response is counted as not stored.
    ["stops_capturing_a_chunked_body_the_store_cannot_hold", {}, null],
  ])("%s", async (_claim, framing, status) => {
    // maxSize 64KiB, maxEntrySize 1MiB (the default): a 96 KiB body cannot be stored, so it must not be
    // buffered whole for the store nor announced as stored.
    const big = await startUpstream((_req, res) => {
      res.writeHead(200, { "content-type": "text/plain", "cache-control": "max-age=60", ...framing });
      res.end("b".repeat(96 * 1024));
    });
    const g = await startTestGateway(
      gatewayConfig(
        [{ name: "big", match: { path: "/big/**" }, to: "app", cache: { ttl: "30s" }, ...PUBLIC }],
        { app: big },
        { cache: { maxSize: "64KiB" } },
      ),
    );
    try {
      for (let i = 0; i < 2; i++) {
        const r = await request(`${g.url}/big/1`);
        expect([r.status, r.body.length, r.complete]).toEqual([200, 96 * 1024, true]);
        expect(r.headers["cache-status"]).toMatch(/^meshgate; fwd=miss;/);
        if (status !== null) expect(r.headers["cache-status"]).toBe(status);
      }
      const metrics = await (await fetch(`${g.adminUrl}/metrics`)).text();
      expect(metrics).toContain(
        'meshgate_cache_not_stored_total{proxy="gateway",route="big",reason="too-large"} 2',
      );
    } finally {
      await g.drain();
      await big.close();
    }
  });
});

describe("per-principal entries of a token read from the query", () => {
  // A provider that reads its JWT from `?access_token=`: the upstream is sent the URL without it, and so
  // is the cache keyed — the token is no part of a key (Redis key names, the URL index), and a purge or an
  // invalidation of the URL reaches every principal's entry.
  const key = makeKey("kq");
  const iss = "https://id.query.test/";
  let g: TestGateway;
  beforeAll(async () => {
    g = await startTestGateway(
      gatewayConfig(
        [
          {
            name: "feed",
            match: { path: "/feed/**", methods: ["GET", "POST"] },
            to: "app",
            auth: { jwt: "main" },
            cache: { ttl: "30s", perPrincipal: true },
            rateLimit: { requests: 100000, per: "1s" },
          },
        ],
        { app },
        {
          jwt: {
            main: {
              issuer: iss,
              audiences: ["api"],
              jwks: { keys: [key.jwk] },
              algorithms: ["ES256"],
              tokenFrom: { query: "access_token" },
            },
          },
        },
      ),
    );
  });
  afterAll(() => g.drain());
  const token = () => signToken(key, { iss, aud: "api", sub: "alice", exp: nowS() + 600 });
  const get = async (path: string) =>
    (await request(`${g.url}${path}${path.includes("?") ? "&" : "?"}access_token=${await token()}`)).headers[
      "cache-status"
    ];

  it.each<[string, (path: string) => Promise<unknown>]>([
    [
      "purges_every_principals_entry_of_the_url_the_admin_names",
      async (path) => {
        const r = await fetch(`${g.adminUrl}/cache/purge`, {
          method: "POST",
          body: JSON.stringify({ url: path }),
        });
        expect(await r.json()).toEqual({ purged: 1 });
      },
    ],
    [
      "invalidates_them_after_an_unsafe_request_with_another_token",
      async (path) => {
        const r = await request(`${g.url}${path}?access_token=${await token()}`, {
          method: "POST",
          body: "{}",
        });
        expect(r.status).toBe(201);
      },
    ],
  ])("%s", async (claim, change) => {
    const path = `/feed/${claim}`;
    expect(await get(path)).toBe("meshgate; fwd=miss; fwd-status=200; stored");
    // Another token of the same principal: the same entry.
    expect(await get(path)).toMatch(/^meshgate; hit;/);
    await change(path);
    expect(await get(path)).toBe("meshgate; fwd=miss; fwd-status=200; stored");
    expect(count(path)).toBe(2);
    expect(app.received.filter((r) => r.url!.startsWith(path)).every((r) => r.url === path)).toBe(true);
  });
});

describe("the scheme and authority the upstream is told", () => {
  // An upstream that builds redirects and links from X-Forwarded-Proto and X-Forwarded-Host, as
  // frameworks behind a proxy do — and from their aliases where frameworks read those (Rack's
  // X-Forwarded-Ssl and -Scheme, Spring's and Werkzeug's X-Forwarded-Prefix, IIS's X-Original-URL).
  let linker: Upstream;
  let g: TestGateway;
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "meshgate-cache-origin-"));
    const cert = await selfSignedCert(dir, "srv", "localhost", "DNS:localhost");
    linker = await startUpstream((req, res) => {
      const h = req.headers;
      const scheme =
        h["x-forwarded-ssl"] === "on" ? "https" : String(h["x-forwarded-scheme"] ?? h["x-forwarded-proto"]);
      const path = `${String(h["x-forwarded-prefix"] ?? "")}${String(h["x-original-url"] ?? "")}`;
      const origin = `${scheme}://${String(h["x-forwarded-host"])}${path}`;
      if (req.url!.startsWith("/secure") && scheme !== "https") {
        res.writeHead(301, { location: `https://${String(req.headers["x-forwarded-host"])}${req.url}` });
        return res.end();
      }
      const out = JSON.stringify({ next: `${origin}/next` });
      res.writeHead(200, {
        "content-type": "application/json",
        "content-length": Buffer.byteLength(out),
        "cache-control": "max-age=60",
      });
      res.end(out);
    });
    g = await startTestGateway(
      gatewayConfig(
        [{ name: "pages", match: { path: "/**" }, to: "app", cache: { ttl: "30s" }, ...PUBLIC }],
        { app: linker },
        { listeners: [{ name: "http", port: 8080, protocol: "http" }, httpsListener(cert, ["localhost"])] },
      ),
    );
  });
  afterAll(async () => {
    await g.drain();
    await linker.close();
    await rm(dir, { recursive: true, force: true });
  });

  /** One request as raw text (Connection: close); the response's body. */
  const raw = (text: string): Promise<string> =>
    new Promise((resolve, reject) => {
      const s = net.connect(g.ports.listeners.http!, "127.0.0.1");
      let out = "";
      s.setEncoding("latin1");
      s.on("data", (d: string) => (out += d));
      s.on("end", () => resolve(out.slice(out.indexOf("\r\n\r\n") + 4)));
      s.on("error", reject);
      s.write(text);
    });
  const plain = (path: string) =>
    request(`http://127.0.0.1:${g.ports.listeners.http}${path}`, { headers: { host: "localhost" } });

  it.each([
    ["keeps_a_host_with_another_port_apart", "/p/port", "GET /p/port HTTP/1.1\r\nHost: localhost:1337"],
  ])("%s", async (_claim, path, head) => {
    const first = await raw(`${head}\r\nConnection: close\r\n\r\n`);
    expect(first).not.toContain("http://localhost/next");
    // Everyone else asking for the URL gets a response built for what their own request said.
    const other = await plain(path);
    expect(JSON.parse(other.body)).toEqual({ next: "http://localhost/next" });
    expect(other.headers["cache-status"]).toBe("meshgate; fwd=miss; fwd-status=200; stored");
  });

  it.each([
    ["never_lets_a_clients_x_forwarded_scheme_choose_everyones_scheme", "x-forwarded-scheme: https"],
    ["never_lets_a_clients_x_forwarded_ssl_choose_everyones_scheme", "x-forwarded-ssl: on"],
    ["never_lets_a_clients_x_forwarded_prefix_into_everyones_links", "x-forwarded-prefix: /evil"],
    ["never_lets_a_clients_x_original_url_into_everyones_links", "x-original-url: /admin"],
  ])("%s", async (claim, alias) => {
    // The aliases are not the gateway's to key by: they never reach the upstream, so the response (filled
    // by the request that carried one) is built for what every client of the URL is told.
    const path = `/p/${claim}`;
    const first = await raw(
      `GET ${path} HTTP/1.1\r\nHost: localhost\r\n${alias}\r\nConnection: close\r\n\r\n`,
    );
    expect(JSON.parse(first)).toEqual({ next: "http://localhost/next" });
    const other = await plain(path);
    expect(JSON.parse(other.body)).toEqual({ next: "http://localhost/next" });
  });

  it("fills_the_entry_of_an_absolute_form_targets_host_with_what_that_host_gets", async () => {
    // RFC 9112 §3.2.2: the target's host replaces the Host header, so the upstream built the response for
    // localhost (not for the evil.example it was sent as) and it is everyone's under localhost's key.
    const first = await raw(
      "GET http://localhost/p/absolute HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n",
    );
    expect(JSON.parse(first)).toEqual({ next: "http://localhost/next" });
    const other = await plain("/p/absolute");
    expect(JSON.parse(other.body)).toEqual({ next: "http://localhost/next" });
    expect(other.headers["cache-status"]).toMatch(/^meshgate; hit/);
  });

  it("never_serves_a_plain_http_requests_redirect_to_https_clients", async () => {
    const redirect = await plain("/secure/1");
    expect([redirect.status, redirect.headers["cache-status"]]).toEqual([
      301,
      "meshgate; fwd=miss; fwd-status=301; stored",
    ]);
    const secure = await new Promise<{ status: number; body: string }>((resolve, reject) => {
      const r = https.request(
        {
          host: "127.0.0.1",
          port: g.ports.listeners.https,
          path: "/secure/1",
          servername: "localhost",
          rejectUnauthorized: false,
          headers: { host: "localhost" },
        },
        (res) => {
          let body = "";
          res.setEncoding("utf8");
          res.on("data", (c: string) => (body += c));
          res.on("end", () => resolve({ status: res.statusCode!, body }));
        },
      );
      r.on("error", reject);
      r.end();
    });
    expect(secure.status).toBe(200);
    expect(JSON.parse(secure.body)).toEqual({ next: "https://localhost/next" });
  });
});

describe("variants by the headers the upstream gets (RFC 9111 §4.1)", () => {
  // The upstream varies on headers the gateway sets: the route's transform (X-Tenant from the client's
  // X-Org) and its own X-Real-IP. The client's copies of those names say nothing of what it saw.
  let tenants: Upstream;
  let g: TestGateway;
  beforeAll(async () => {
    tenants = await startUpstream((req, res) => {
      const out = JSON.stringify({ tenant: req.headers["x-tenant"] ?? null, ip: req.headers["x-real-ip"] });
      res.writeHead(200, {
        "content-type": "application/json",
        "content-length": Buffer.byteLength(out),
        "cache-control": "max-age=60",
        vary: req.url!.startsWith("/tenant") ? "X-Tenant" : "X-Real-IP",
      });
      res.end(out);
    });
    g = await startTestGateway(
      gatewayConfig(
        [
          {
            name: "tenant",
            match: { path: "/tenant/**" },
            to: "app",
            cache: { ttl: "30s" },
            transform: { request: { headers: { set: { "x-tenant": "${request.header.x-org}" } } } },
            ...PUBLIC,
          },
          { name: "geo", match: { path: "/geo/**" }, to: "app", cache: { ttl: "30s" }, ...PUBLIC },
        ],
        { app: tenants },
      ),
    );
  });
  afterAll(async () => {
    await g.drain();
    await tenants.close();
  });

  it("selects_by_a_header_the_routes_transform_sets", async () => {
    const as = (org: string, tenant?: string) =>
      request(`${g.url}/tenant/1`, { headers: { "x-org": org, ...(tenant ? { "x-tenant": tenant } : {}) } });
    expect(JSON.parse((await as("alpha")).body).tenant).toBe("alpha");
    // The same client headers but for X-Org, or the first tenant's name sent as X-Tenant itself.
    expect(JSON.parse((await as("beta")).body).tenant).toBe("beta");
    expect(JSON.parse((await as("beta", "alpha")).body).tenant).toBe("beta");
    const again = await as("alpha", "beta");
    expect([JSON.parse(again.body).tenant, again.headers["cache-status"]]).toEqual([
      "alpha",
      expect.stringMatching(/^meshgate; hit;/),
    ]);
  });

  it("selects_by_the_client_address_the_gateway_forwards", async () => {
    const from = (localAddress: string) =>
      new Promise<string>((resolve, reject) => {
        const r = http.request(
          {
            host: "127.0.0.1",
            port: g.ports.listeners.http,
            path: "/geo/1",
            localAddress,
            headers: { "x-real-ip": "10.9.9.9" },
          },
          (res) => {
            let body = "";
            res.setEncoding("utf8");
            res.on("data", (c: string) => (body += c));
            res.on("end", () => resolve(JSON.parse(body).ip as string));
          },
        );
        r.on("error", reject);
        r.end();
      });
    expect(await from("127.0.0.1")).toBe("127.0.0.1");
    expect(await from("127.0.0.2")).toBe("127.0.0.2");
    expect(await from("127.0.0.1")).toBe("127.0.0.1");
    expect(tenants.received.filter((r) => r.url === "/geo/1")).toHaveLength(2);
  });
});

/** Runs `meshgate gateway --workers 2` on a route caching GET/HEAD /w/** (and one for POST there). */
async function withTwoWorkers(test: (port: number, admin: number) => Promise<void>): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), "meshgate-cache-"));
  const config = gatewayConfig(
    [
      {
        name: "w",
        match: { path: "/w/**", methods: ["GET", "HEAD"] },
        to: "app",
        cache: { ttl: "60s" },
        ...PUBLIC,
      },
      { name: "w-write", match: { path: "/w/**", methods: ["POST"] }, to: "app", ...PUBLIC },
    ],
    { app },
  );
  const gw = await startGatewayProcess(dir, "gw", config, 2);
  try {
    await test(Number(new URL(gw.url).port), Number(new URL(gw.adminUrl).port));
  } finally {
    await gw.stop();
    await rm(dir, { recursive: true, force: true });
  }
}

describe("ranges from the cache (RFC 9110 §14)", () => {
  it("answers_a_range_request_from_a_stored_response_with_206", async () => {
    const full = await request(`${gw.url}/api/items/r1`);
    const size = Buffer.byteLength(full.body);
    const r = await request(`${gw.url}/api/items/r1`, { headers: { range: "bytes=2-9" } });
    expect(r.status).toBe(206);
    expect(r.body).toBe(full.body.slice(2, 10));
    expect(r.headers["content-range"]).toBe(`bytes 2-9/${size}`);
    expect(r.headers["content-length"]).toBe("8");
    expect(r.headers["cache-status"]).toMatch(/^meshgate; hit; ttl=\d+$/);
    const suffix = await request(`${gw.url}/api/items/r1`, { headers: { range: "bytes=-5" } });
    expect(suffix.status).toBe(206);
    expect(suffix.body).toBe(full.body.slice(-5));
    expect(count("/items/r1")).toBe(1);
  });

  it("answers_a_range_outside_the_stored_response_with_416", async () => {
    const full = await request(`${gw.url}/api/items/r2`);
    const size = Buffer.byteLength(full.body);
    const r = await request(`${gw.url}/api/items/r2`, { headers: { range: `bytes=${size}-` } });
    expect(r.status).toBe(416);
    expect(r.headers["content-range"]).toBe(`bytes */${size}`);
    expect(r.headers["x-meshgate-error"]).toBe("range_not_satisfiable");
    expect(count("/items/r2")).toBe(1);
  });

  it("answers_several_ranges_or_a_failed_if_range_with_the_whole_response", async () => {
    const full = await request(`${gw.url}/api/items/r3`);
    const multi = await request(`${gw.url}/api/items/r3`, { headers: { range: "bytes=0-1,4-5" } });
    expect(multi.status).toBe(200);
    expect(multi.body).toBe(full.body);
    const stale = await request(`${gw.url}/api/items/r3`, {
      headers: { range: "bytes=0-1", "if-range": '"another"' },
    });
    expect(stale.status).toBe(200);
    expect(stale.body).toBe(full.body);
    expect(count("/items/r3")).toBe(1);
  });

  it("answers_a_range_request_on_a_body_transform_route_with_the_whole_transformed_response", async () => {
    // A slice of the stored (untransformed) body can be a JSON document itself — here the nested object
    // whose field the route drops — and would pass the transform untouched.
    const doc = JSON.stringify({ user: { name: "ann", ssn: "123-45-6789" } });
    const inner = doc.indexOf('{"name"');
    const users = await startUpstream((_req, res) => {
      res.writeHead(200, {
        "content-type": "application/json",
        "content-length": Buffer.byteLength(doc),
        "cache-control": "max-age=60",
      });
      res.end(doc);
    });
    const g = await startTestGateway(
      gatewayConfig(
        [
          {
            name: "users",
            match: { path: "/users/**" },
            to: "app",
            cache: { ttl: "30s" },
            transform: { response: { body: { drop: ["user.ssn"] } } },
            ...PUBLIC,
          },
        ],
        { app: users },
      ),
    );
    try {
      const range = { range: `bytes=${inner}-${doc.length - 2}` };
      // On a miss (the range is not forwarded: the transform needs the whole document) and on the hit.
      for (const want of ["fwd=miss", "hit"]) {
        const r = await request(`${g.url}/users/1`, { headers: range });
        expect(r.status).toBe(200);
        expect(r.headers["cache-status"]).toContain(want);
        expect(r.headers["content-range"]).toBeUndefined();
        expect(JSON.parse(r.body)).toEqual({ user: { name: "ann" } });
      }
    } finally {
      await g.drain();
      await users.close();
    }
  });

  it("forwards_a_range_request_nothing_stored_answers_and_does_not_store_it", async () => {
    const r = await request(`${gw.url}/api/items/r4`, { headers: { range: "bytes=0-3" } });
    expect(r.headers["cache-status"]).toBe("meshgate; fwd=bypass; fwd-status=200; detail=range");
    const sent = app.received.filter((x) => x.url === "/items/r4");
    expect(sent).toHaveLength(1);
    expect(sent[0]!.headers.range).toBe("bytes=0-3");
    // The next full request is a miss: the forwarded range request stored nothing.
    const full = await request(`${gw.url}/api/items/r4`);
    expect(full.headers["cache-status"]).toBe("meshgate; fwd=miss; fwd-status=200; stored");
  });
});

describe("workers", () => {
  it("invalidates_a_url_in_every_worker_after_an_unsafe_request_through_one", async () => {
    await withTwoWorkers(async (port) => {
      // New connections spread over both workers; each worker fills its own cache once.
      for (let i = 0; i < 40; i++) expect((await request(`http://127.0.0.1:${port}/w/inv`)).status).toBe(200);
      expect(count("/w/inv")).toBe(2);
      // The POST goes through one worker; the primary relays the invalidation to the other.
      expect((await request(`http://127.0.0.1:${port}/w/inv`, { method: "POST", body: "x" })).status).toBe(
        201,
      );
      await sleep(100);
      // Both workers fetch again (without the relay, the other worker kept serving its entry: 3).
      for (let i = 0; i < 40; i++) await request(`http://127.0.0.1:${port}/w/inv`);
      expect(count("/w/inv")).toBe(4);
    });
  }, 60_000);

  it("purges_the_cache_of_every_worker", async () => {
    await withTwoWorkers(async (port, admin) => {
      for (let i = 0; i < 40; i++) expect((await request(`http://127.0.0.1:${port}/w/x`)).status).toBe(200);
      expect(count("/w/x")).toBe(2);
      const r = await fetch(`http://127.0.0.1:${admin}/cache/purge`, {
        method: "POST",
        body: '{"url":"/w/x"}',
      });
      expect(await r.json()).toEqual({ purged: 2 });
      for (let i = 0; i < 40; i++) await request(`http://127.0.0.1:${port}/w/x`);
      expect(count("/w/x")).toBe(4);
    });
  }, 60_000);
});
