/**
 * API management through a real gateway and real upstream sockets: CORS (preflights answered before
 * authentication, actual requests), request and response transforms (headers, JSON bodies, templates,
 * compressed bodies, invalid JSON), response size limits (a clean 502 before the head, a reset after),
 * bodies streamed untouched when no body transform applies, and aggregation with its failure policies.
 */
import http from "node:http";
import { setTimeout as sleep } from "node:timers/promises";
import zlib from "node:zlib";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { sealRuntimeConfig, type GatewayRuntimeConfig } from "../../runtime/contract/index.ts";
import { curl } from "../support/curl.ts";
import {
  gatewayConfig,
  request,
  startTestGateway,
  startUpstream,
  type TestGateway,
  type Upstream,
} from "../support/gateway.ts";

const PUBLIC = { public: true, rateLimit: { requests: 100000, per: "1s" } };
const ORIGIN = "https://app.example";

let app: Upstream;
let users: Upstream;
let chunky: Upstream;
let good: Upstream;
let slow: Upstream;
let broken: Upstream;
let html: Upstream;
let secure: Upstream;
let sink: http.Server;
let sinkPort = 0;
const uploads: { firstChunkAt: number; endAt: number; bytes: number; headers: http.IncomingHttpHeaders }[] =
  [];
let gw: TestGateway;

const sendJson = (
  res: http.ServerResponse,
  status: number,
  body: unknown,
  extra: http.OutgoingHttpHeaders = {},
) => {
  const text = JSON.stringify(body);
  res.writeHead(status, {
    "content-type": "application/json",
    "content-length": Buffer.byteLength(text),
    ...extra,
  });
  res.end(text);
};

const PROFILE = { internalId: 7, displayName: "Ada", secret: "s3cr3t", nested: { a: 1, b: 2 } };

beforeAll(async () => {
  app = await startUpstream((req, res, body) =>
    sendJson(
      res,
      200,
      { path: req.url, method: req.method, headers: req.headers, body },
      {
        "x-powered-by": "express",
        "access-control-allow-origin": "*",
        etag: '"upstream"',
      },
    ),
  );
  users = await startUpstream((req, res) => {
    switch (req.url) {
      case "/gz": {
        const gz = zlib.gzipSync(JSON.stringify(PROFILE));
        res.writeHead(200, {
          "content-type": "application/json",
          "content-encoding": "gzip",
          "content-length": gz.length,
        });
        return res.end(gz);
      }
      case "/bad":
        res.writeHead(200, { "content-type": "application/json" });
        return res.end('{"internalId": 7, "secret": ');
      case "/text":
        res.writeHead(200, { "content-type": "text/plain", "x-powered-by": "php" });
        return res.end("secret plain text");
      case "/big":
        return sendJson(res, 200, { ...PROFILE, blob: "x".repeat(4096) });
      case "/digest":
        return sendJson(res, 200, PROFILE, {
          etag: '"v1"',
          "accept-ranges": "bytes",
          "repr-digest": "sha-256=:AAAA:",
          "content-digest": "sha-256=:AAAA:",
        });
      case "/dup-type": {
        // Content-Type twice (a framework and a middleware both set it): Node writes both field lines.
        const text = JSON.stringify(PROFILE);
        res.setHeader("content-type", ["application/json", "application/json"]);
        res.writeHead(200, { "content-length": Buffer.byteLength(text) });
        return res.end(text);
      }
      case "/joined-type":
      case "/last-type": {
        // Two media types on one field line: Fetch reads the last one, so a browser takes both as JSON.
        const text = JSON.stringify(PROFILE);
        const type =
          req.url === "/joined-type" ? "application/json, application/json" : "text/plain, application/json";
        res.writeHead(200, { "content-type": type, "content-length": Buffer.byteLength(text) });
        return res.end(text);
      }
      case "/quoted-type": {
        // A comma inside a quoted parameter is one media type.
        const text = JSON.stringify(PROFILE);
        res.writeHead(200, {
          "content-type": 'application/json; profile="a,b"',
          "content-length": Buffer.byteLength(text),
        });
        return res.end(text);
      }
      case "/numbers": {
        const text =
          '{"id":12345678901234567890,"big":1e400,"price":1.10,"small":5e-324,"n":[1,2.50,-0],"secret":"s"}';
        res.writeHead(200, { "content-type": "application/json", "content-length": Buffer.byteLength(text) });
        return res.end(text);
      }
      case "/not-utf8": {
        const bytes = Buffer.concat([
          Buffer.from('{"name":"'),
          Buffer.from([0xff, 0xfe]),
          Buffer.from('","secret":1}'),
        ]);
        res.writeHead(200, { "content-type": "application/json", "content-length": bytes.length });
        return res.end(bytes);
      }
      case "/deflate-bomb": {
        const z = zlib.deflateSync(JSON.stringify({ ...PROFILE, blob: "x".repeat(200_000) }));
        res.writeHead(200, {
          "content-type": "application/json",
          "content-encoding": "deflate",
          "content-length": z.length,
        });
        return res.end(z);
      }
      case "/raw-deflate": {
        const z = zlib.deflateRawSync(JSON.stringify(PROFILE));
        res.writeHead(200, {
          "content-type": "application/json",
          "content-encoding": "deflate",
          "content-length": z.length,
        });
        return res.end(z);
      }
      default:
        return sendJson(res, 200, PROFILE, { etag: '"v1"' });
    }
  });
  chunky = await startUpstream((req, res) => {
    if (req.url!.endsWith("/declared")) {
      res.writeHead(200, { "content-type": "text/plain", "content-length": 4096 });
      return res.end("y".repeat(4096));
    }
    res.writeHead(200, { "content-type": "text/plain" });
    const chunks = req.url!.endsWith("/small") ? 2 : 10;
    let i = 0;
    const tick = () => {
      if (res.destroyed) return;
      if (i++ < chunks) {
        res.write("z".repeat(512));
        setTimeout(tick, 20);
      } else res.end();
    };
    tick();
  });
  good = await startUpstream((req, res) =>
    setTimeout(() => sendJson(res, 200, { ok: true, path: req.url }), 100),
  );
  slow = await startUpstream((_req, res) => setTimeout(() => sendJson(res, 200, { late: true }), 700));
  broken = await startUpstream((_req, res) => sendJson(res, 500, { error: "boom" }));
  html = await startUpstream((_req, res) => {
    res.writeHead(200, { "content-type": "text/html" });
    res.end("<p>hi</p>");
  });
  secure = await startUpstream();
  sink = http.createServer((req, res) => {
    const rec = { firstChunkAt: 0, endAt: 0, bytes: 0, headers: req.headers };
    req.on("data", (c: Buffer) => {
      if (rec.firstChunkAt === 0) rec.firstChunkAt = performance.now();
      rec.bytes += c.length;
    });
    req.on("end", () => {
      rec.endAt = performance.now();
      uploads.push(rec);
      sendJson(res, 200, { bytes: rec.bytes });
    });
  });
  await new Promise<void>((r) => sink.listen(0, "127.0.0.1", r));
  sinkPort = (sink.address() as { port: number }).port;

  const upstreams = { app, users, chunky, good, slow, broken, html, secure, sink: { port: sinkPort } };
  const services = Object.fromEntries(
    Object.keys(upstreams).map((name) => [
      name,
      {
        image: `r/${name}:1`,
        port: 8080,
        allow: [{ from: ["gateway"] }],
        circuitBreaker: { consecutive5xx: 100000 },
      },
    ]),
  );
  const part = (service: string, path: string, onError: string, timeout = "300ms") => ({
    service,
    path,
    onError,
    timeout,
  });
  const config = gatewayConfig(
    [
      {
        name: "items",
        match: { path: "/api/items", methods: ["GET", "POST"] },
        to: "app",
        cors: {
          origins: [ORIGIN, "https://*.preview.example"],
          credentials: true,
          headers: ["content-type", "x-tenant"],
          exposeHeaders: ["x-request-id"],
          maxAge: "5m",
        },
        ...PUBLIC,
      },
      {
        name: "narrow",
        match: { path: "/api/narrow", methods: ["GET", "PUT"] },
        to: "app",
        cors: { origins: [ORIGIN], methods: ["GET"] },
        ...PUBLIC,
      },
      {
        name: "private",
        match: { path: "/api/private", methods: ["GET"] },
        to: "app",
        auth: { jwt: "main" },
        cors: { origins: [ORIGIN], credentials: true },
      },
      {
        name: "orders",
        match: { path: "/api/orders/{id}", methods: ["POST"] },
        to: "app",
        rewrite: { path: "/orders/{id}" },
        limits: { maxBodySize: "1KiB" },
        transform: {
          request: {
            headers: {
              set: { "x-order": "order-${params.id}" },
              add: { "x-via": "meshgate" },
              remove: ["x-internal"],
            },
            body: {
              drop: ["password"],
              rename: { ref: "meta.externalReference" },
              set: { source: "web" },
              template: { orderId: "${params.id}", "meta.tenant": "${request.header.x-tenant}" },
            },
          },
          response: { headers: { remove: ["x-powered-by"], set: { "cache-control": "no-store" } } },
        },
        ...PUBLIC,
      },
      {
        name: "open",
        match: { path: "/api/open", methods: ["GET"] },
        to: "app",
        cors: { origins: ["*"] },
        ...PUBLIC,
      },
      {
        name: "tagged",
        match: { path: "/api/tagged", methods: ["GET"] },
        to: "app",
        transform: {
          request: { headers: { set: { "x-tag": "${request.query.tag}" } } },
          response: { headers: { set: { "x-tag": "${request.query.tag}" } } },
        },
        ...PUBLIC,
      },
      {
        name: "renamed",
        match: { path: "/api/renamed", methods: ["POST"] },
        to: "app",
        transform: { request: { body: { rename: { ref: "reference" } } } },
        ...PUBLIC,
      },
      {
        name: "me",
        match: { path: "/api/me/{variant}", methods: ["GET", "HEAD"] },
        to: "users",
        rewrite: { path: "/{variant}" },
        limits: { maxResponseSize: "2KiB" },
        transform: {
          response: {
            headers: { remove: ["x-powered-by"] },
            body: { drop: ["secret", "nested.a"], rename: { displayName: "name", internalId: "meta.id" } },
          },
        },
        ...PUBLIC,
      },
      {
        name: "limited",
        match: { path: "/limited/**" },
        to: "chunky",
        limits: { maxResponseSize: "2KiB" },
        ...PUBLIC,
      },
      {
        name: "upload",
        match: { path: "/upload", methods: ["POST"] },
        to: "sink",
        transform: { request: { headers: { set: { "x-upload": "streamed" } } } },
        retries: { attempts: 0 },
        ...PUBLIC,
      },
      {
        name: "upload-json",
        match: { path: "/upload-json", methods: ["POST"] },
        to: "sink",
        // Only a rename: a route that sets fields refuses non-JSON bodies (415) instead of streaming them.
        transform: { request: { body: { rename: { tag: "label" } } } },
        retries: { attempts: 0 },
        ...PUBLIC,
      },
      {
        name: "dash",
        match: { path: "/dash/{user}", methods: ["GET"] },
        aggregate: {
          items: part("good", "/items/{user}", "fail"),
          slow: part("slow", "/slow", "omit"),
          broken: part("broken", "/broken", "omit"),
          html: part("html", "/html", "default"),
        },
        transform: { response: { headers: { set: { "cache-control": "private" } } } },
        ...PUBLIC,
      },
      {
        name: "dash-query",
        match: { path: "/dash-query/{user}", methods: ["GET"] },
        aggregate: { items: part("good", "/items?user={user}&view=summary", "fail") },
        ...PUBLIC,
      },
      {
        name: "dash-fail",
        match: { path: "/dash-fail", methods: ["GET"] },
        aggregate: { items: part("good", "/items", "omit"), broken: part("broken", "/broken", "fail") },
        ...PUBLIC,
      },
      {
        name: "dash-timeout",
        match: { path: "/dash-timeout", methods: ["GET"] },
        aggregate: { items: part("good", "/items", "fail"), slow: part("slow", "/slow", "fail") },
        ...PUBLIC,
      },
      {
        name: "dash-mtls",
        match: { path: "/dash-mtls", methods: ["GET"] },
        aggregate: { items: part("good", "/items", "omit"), secure: part("secure", "/x", "omit") },
        ...PUBLIC,
      },
    ],
    upstreams,
    {
      jwt: {
        main: {
          issuer: "https://id.t.example/",
          audiences: ["t"],
          jwksUri: "https://id.t.example/jwks",
          algorithms: ["ES256"],
        },
      },
    },
    services,
  );
  // The "secure" cluster keeps mTLS (as translated for the mesh): the gateway has no identity for it yet.
  const { hash: _h, ...rest } = config;
  const withMtls = sealRuntimeConfig<GatewayRuntimeConfig>({
    ...rest,
    clusters: rest.clusters.map((c) =>
      c.name === "secure"
        ? { ...c, tls: { mode: "mtls" as const, serverIdentity: "spiffe://t.example/ns/t/sa/secure" } }
        : c,
    ),
  });
  gw = await startTestGateway(withMtls);
});

afterAll(async () => {
  await gw.drain();
  await Promise.all([app, users, chunky, good, slow, broken, html, secure].map((u) => u.close()));
  sink.closeAllConnections();
  sink.close();
});

const url = (path: string) => `${gw.url}${path}`;
const corsHeaders = (h: Record<string, string>) =>
  Object.keys(h).filter((k) => k.startsWith("access-control-"));

describe("cors preflights", () => {
  it("answers_an_allowed_preflight_with_204_and_never_forwards_it", async () => {
    const before = app.received.length;
    const r = await curl(url("/api/items"), [
      "-X",
      "OPTIONS",
      "-H",
      `Origin: ${ORIGIN}`,
      "-H",
      "Access-Control-Request-Method: POST",
      "-H",
      "Access-Control-Request-Headers: Content-Type, X-Tenant",
    ]);
    expect(r.status).toBe(204);
    expect(r.headers["access-control-allow-origin"]).toBe(ORIGIN);
    expect(r.headers["access-control-allow-methods"]).toBe("GET, POST");
    expect(r.headers["access-control-allow-headers"]).toBe("content-type, x-tenant");
    expect(r.headers["access-control-allow-credentials"]).toBe("true");
    expect(r.headers["access-control-max-age"]).toBe("300");
    expect(r.headers.vary).toContain("Origin");
    expect(app.received.length).toBe(before);
  });

  it("allows_a_subdomain_matching_a_pattern", async () => {
    const r = await curl(url("/api/items"), [
      "-X",
      "OPTIONS",
      "-H",
      "Origin: https://pr-7.preview.example",
      "-H",
      "Access-Control-Request-Method: GET",
    ]);
    expect(r.status).toBe(204);
    expect(r.headers["access-control-allow-origin"]).toBe("https://pr-7.preview.example");
  });

  it.each([
    ["denies_an_unlisted_origin", "https://evil.example", "POST", "content-type"],
    ["denies_a_lookalike_origin", "https://app.example.evil.com", "GET", ""],
    ["denies_a_method_outside_cors_methods", ORIGIN, "PUT", ""],
    ["denies_an_unlisted_request_header", ORIGIN, "POST", "authorization"],
  ])("%s_with_403_and_no_cors_headers", async (_claim, origin, method, headers) => {
    const before = app.received.length;
    const args = [
      "-X",
      "OPTIONS",
      "-H",
      `Origin: ${origin}`,
      "-H",
      `Access-Control-Request-Method: ${method}`,
    ];
    if (headers) args.push("-H", `Access-Control-Request-Headers: ${headers}`);
    const r = await curl(url(method === "PUT" ? "/api/narrow" : "/api/items"), args);
    expect(r.status).toBe(403);
    expect(r.headers["x-meshgate-error"]).toBe("cors_denied");
    expect(corsHeaders(r.headers)).toEqual([]);
    expect(app.received.length).toBe(before);
  });

  it("answers_a_preflight_for_a_method_no_route_accepts_as_a_plain_options_without_cors_headers", async () => {
    const r = await curl(url("/api/items"), [
      "-X",
      "OPTIONS",
      "-H",
      `Origin: ${ORIGIN}`,
      "-H",
      "Access-Control-Request-Method: DELETE",
    ]);
    expect(r.status).toBe(405);
    expect(corsHeaders(r.headers)).toEqual([]);
  });

  it("answers_the_preflight_of_an_authenticated_route_before_authentication", async () => {
    const r = await curl(url("/api/private"), [
      "-X",
      "OPTIONS",
      "-H",
      `Origin: ${ORIGIN}`,
      "-H",
      "Access-Control-Request-Method: GET",
    ]);
    expect(r.status).toBe(204);
    expect(r.headers["access-control-allow-origin"]).toBe(ORIGIN);
  });

  it("treats_options_without_a_request_method_as_a_plain_request", async () => {
    const r = await curl(url("/api/items"), ["-X", "OPTIONS", "-H", `Origin: ${ORIGIN}`]);
    expect(r.status).toBe(405);
  });
});

describe("cors on actual requests", () => {
  it("adds_the_cors_headers_for_an_allowed_origin_and_replaces_the_upstreams", async () => {
    const r = await curl(url("/api/items"), ["-H", `Origin: ${ORIGIN}`]);
    expect(r.status).toBe(200);
    expect(r.headers["access-control-allow-origin"]).toBe(ORIGIN);
    expect(r.headers["access-control-allow-credentials"]).toBe("true");
    expect(r.headers["access-control-expose-headers"]).toBe("x-request-id");
    expect(r.headers.vary).toBe("Origin");
  });

  it("forwards_a_disallowed_origin_without_cors_headers", async () => {
    const before = app.received.length;
    const r = await curl(url("/api/items"), ["-H", "Origin: https://evil.example"]);
    expect(r.status).toBe(200);
    expect(app.received.length).toBe(before + 1);
    expect(corsHeaders(r.headers)).toEqual([]);
    expect(r.headers.vary).toBe("Origin");
  });

  it("adds_cors_headers_to_a_413_the_gateway_answers", async () => {
    const r = await request(url("/api/items"), {
      method: "POST",
      headers: { origin: ORIGIN, "content-type": "text/plain", "content-length": String(2 * 1024 * 1024) },
    });
    expect(r.status).toBe(413);
    expect(r.headers["access-control-allow-origin"]).toBe(ORIGIN);
    expect(r.headers.vary).toBe("Origin");
  });

  it.each<[string, Record<string, string>]>([
    ["answers_star_to_any_origin_without_vary", { origin: "https://anyone.example" }],
    // Fetch, "CORS protocol and HTTP caches": `*` on the answer to a request without Origin too, or a CDN
    // in front that stored it (no Vary: Origin, nothing depends on it) serves every page a response the
    // browser hides.
    ["answers_star_to_a_request_without_an_origin_too", {}],
  ])("%s", async (_claim, headers) => {
    const r = await request(url("/api/open"), { headers });
    expect(r.status).toBe(200);
    expect([r.headers["access-control-allow-origin"], r.headers.vary]).toEqual(["*", undefined]);
  });

  it("adds_cors_headers_to_the_401_of_an_authenticated_route", async () => {
    const r = await curl(url("/api/private"), ["-H", `Origin: ${ORIGIN}`]);
    expect(r.status).toBe(401);
    expect(r.headers["access-control-allow-origin"]).toBe(ORIGIN);
  });
});

describe("request transforms", () => {
  it("transforms_headers_and_the_json_body_and_recomputes_content_length", async () => {
    const body = JSON.stringify({ ref: "R-1", password: "hunter2", item: "book" });
    const r = await request(url("/api/orders/42"), {
      method: "POST",
      headers: {
        "content-type": "application/json",
        "x-tenant": "acme",
        "x-internal": "1",
        "x-via": "client",
      },
      body,
    });
    expect(r.status).toBe(200);
    const seen = JSON.parse(r.body) as { path: string; headers: http.IncomingHttpHeaders; body: string };
    expect(seen.path).toBe("/orders/42");
    expect(seen.headers["x-order"]).toBe("order-42");
    expect(seen.headers["x-via"]).toBe("client, meshgate");
    expect(seen.headers["x-internal"]).toBeUndefined();
    expect(JSON.parse(seen.body)).toEqual({
      item: "book",
      meta: { externalReference: "R-1", tenant: "acme" },
      source: "web",
      orderId: "42",
    });
    expect(seen.headers["content-length"]).toBe(String(Buffer.byteLength(seen.body)));
    // Response side: the header transform, and the upstream's ETag kept (the body was not transformed).
    expect(r.headers["x-powered-by"]).toBeUndefined();
    expect(r.headers["cache-control"]).toBe("no-store");
  });

  it("decodes_a_gzip_request_body_before_transforming_it", async () => {
    const r = await request(url("/api/orders/7"), {
      method: "POST",
      headers: { "content-type": "application/json", "content-encoding": "gzip" },
      body: zlib.gzipSync(JSON.stringify({ password: "x", a: 1 })),
    });
    const seen = JSON.parse(r.body) as { headers: http.IncomingHttpHeaders; body: string };
    expect(JSON.parse(seen.body)).toEqual({ a: 1, source: "web", orderId: "7" });
    expect(seen.headers["content-encoding"]).toBeUndefined();
  });

  it("refuses_invalid_json_with_400_before_the_upstream", async () => {
    const before = app.received.length;
    const r = await request(url("/api/orders/1"), {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: '{"a":',
    });
    expect(r.status).toBe(400);
    expect(r.headers["x-meshgate-error"]).toBe("bad_json_body");
    expect(app.received.length).toBe(before);
  });

  it("refuses_a_chunked_json_body_over_the_limit_with_413", async () => {
    const r = await curl(url("/api/orders/1"), [
      "-H",
      "content-type: application/json",
      "-H",
      "transfer-encoding: chunked",
      "--data-binary",
      JSON.stringify({ big: "x".repeat(4096) }),
    ]);
    expect(r.status).toBe(413);
    expect(r.headers["x-meshgate-error"]).toBe("body_too_large");
  });

  // The route sets and templates fields the upstream trusts to be the gateway's: the same JSON sent as
  // another media type (or none) would reach an upstream that parses JSON anyway with the client's values.
  it.each<[string, string, Record<string, string>, number, string | null]>([
    [
      "refuses_a_text_plain_body_on_a_route_that_sets_fields",
      "/api/orders/1",
      { "content-type": "text/plain" },
      415,
      "unsupported_media_type",
    ],
    [
      "refuses_a_body_without_a_content_type_on_a_route_that_sets_fields",
      "/api/orders/1",
      {},
      415,
      "unsupported_media_type",
    ],
    [
      "refuses_a_form_body_on_a_route_that_sets_fields",
      "/api/orders/1",
      { "content-type": "application/x-www-form-urlencoded" },
      415,
      "unsupported_media_type",
    ],
    [
      "forwards_a_text_plain_body_untouched_on_a_route_that_only_renames",
      "/api/renamed",
      { "content-type": "text/plain" },
      200,
      null,
    ],
  ])("%s", async (_claim, path, headers, status, code) => {
    const before = app.received.length;
    const body = '{"orderId":"999","source":"client","password":"kept as text"}';
    const r = await request(url(path), { method: "POST", headers, body });
    expect(r.status).toBe(status);
    if (code !== null) {
      expect(r.headers["x-meshgate-error"]).toBe(code);
      expect(app.received.length).toBe(before);
    } else expect((JSON.parse(r.body) as { body: string }).body).toBe(body);
  });
});

describe("header templates with a value that cannot be a field value", () => {
  it.each<[string, string, string | undefined]>([
    ["sets_a_plain_query_value_both_ways", "tag=ok", "ok"],
    ["skips_a_value_with_a_control_character_instead_of_failing_the_forward", "tag=a%01b", undefined],
    ["skips_a_value_with_del_instead_of_failing_the_forward", "tag=a%7Fb", undefined],
    ["skips_a_value_with_an_escape_character", "tag=%1B%5B31m", undefined],
  ])("%s", async (_claim, query, tag) => {
    // A skipped operation, as for a missing value: never a 502 blamed on (and counted against) the
    // upstream, nor a 500 after it answered.
    const r = await request(url(`/api/tagged?${query}`));
    expect(r.status).toBe(200);
    const seen = JSON.parse(r.body) as { headers: http.IncomingHttpHeaders };
    expect([seen.headers["x-tag"], r.headers["x-tag"]]).toEqual([tag, tag]);
  });
});

describe("response transforms", () => {
  it("drops_and_renames_fields_and_recomputes_the_length", async () => {
    const r = await curl(url("/api/me/profile"));
    expect(r.status).toBe(200);
    expect(JSON.parse(r.text)).toEqual({ name: "Ada", nested: { b: 2 }, meta: { id: 7 } });
    expect(r.headers["content-length"]).toBe(String(r.body.length));
    expect(r.headers.etag).toBeUndefined();
    const sent = users.received.at(-1)!;
    expect(sent.headers["accept-encoding"]).toBe("identity");
  });

  it("never_forwards_a_range_to_a_transformed_response", async () => {
    const r = await curl(url("/api/me/profile"), ["-r", "0-3"]);
    expect(r.status).toBe(200);
    expect(users.received.at(-1)!.headers.range).toBeUndefined();
    expect(JSON.parse(r.text)).toHaveProperty("name", "Ada");
  });

  it("decodes_a_gzip_upstream_response_and_sends_it_transformed", async () => {
    const r = await curl(url("/api/me/gz"), ["-H", "Accept-Encoding: identity"]);
    expect(r.status).toBe(200);
    expect(r.headers["content-encoding"]).toBeUndefined();
    expect(JSON.parse(r.text)).toEqual({ name: "Ada", nested: { b: 2 }, meta: { id: 7 } });
  });

  it("answers_502_for_invalid_upstream_json_instead_of_leaking_it", async () => {
    const r = await curl(url("/api/me/bad"));
    expect(r.status).toBe(502);
    expect(r.headers["x-meshgate-error"]).toBe("response_transform_failed");
    expect(r.text).not.toContain("internalId");
  });

  it("passes_a_non_json_response_untouched", async () => {
    const r = await curl(url("/api/me/text"));
    expect(r.status).toBe(200);
    expect(r.text).toBe("secret plain text");
    expect(r.headers["x-powered-by"]).toBeUndefined();
  });

  it.each(["GET", "HEAD"])(
    "a transformed %s answer carries no validator, range support or digest of the upstream's bytes",
    async (method) => {
      const r = await request(url("/api/me/digest"), { method });
      expect(r.status).toBe(200);
      for (const h of ["etag", "accept-ranges", "repr-digest", "content-digest"])
        expect(r.headers[h], h).toBeUndefined();
    },
  );

  it.each([
    ["answers_502_for_a_repeated_content_type_instead_of_passing_the_dropped_fields", "/api/me/dup-type"],
    ["answers_502_for_two_json_types_on_one_content_type_line", "/api/me/joined-type"],
    ["answers_502_for_a_content_type_line_whose_last_type_is_json", "/api/me/last-type"],
  ])("%s", async (_claim, path) => {
    const r = await curl(url(path));
    expect(r.status).toBe(502);
    expect(r.headers["x-meshgate-error"]).toBe("response_transform_failed");
    expect(r.text).not.toContain("s3cr3t");
  });

  it("transforms_a_json_type_whose_quoted_parameter_holds_a_comma", async () => {
    const r = await curl(url("/api/me/quoted-type"));
    expect(r.status).toBe(200);
    expect(r.text).not.toContain("s3cr3t");
  });

  // A double cannot hold a 64-bit id or 1e400, and would print 1.10 as 1.1: dropping one field must not
  // rewrite another's digits.
  it("keeps_every_number_of_a_transformed_body_as_the_upstream_wrote_it", async () => {
    const r = await curl(url("/api/me/numbers"));
    expect(r.status).toBe(200);
    expect(r.text).toBe(
      '{"id":12345678901234567890,"big":1e400,"price":1.10,"small":5e-324,"n":[1,2.50,-0]}',
    );
  });

  it("answers_502_for_a_json_body_that_is_not_utf8_instead_of_replacing_its_bytes", async () => {
    const r = await curl(url("/api/me/not-utf8"));
    expect(r.status).toBe(502);
    expect(r.headers["x-meshgate-error"]).toBe("response_transform_failed");
  });

  it.each([
    [
      "answers_502_response_too_large_for_a_deflate_body_that_inflates_past_the_limit",
      "/api/me/deflate-bomb",
      502,
      "response_too_large",
    ],
    ["transforms_a_raw_deflate_body", "/api/me/raw-deflate", 200, undefined],
  ])("%s", async (_claim, path, status, code) => {
    const r = await curl(url(path), ["-H", "Accept-Encoding: identity"]);
    expect([r.status, r.headers["x-meshgate-error"]]).toEqual([status, code]);
  });

  it("answers_502_for_a_buffered_response_over_the_limit", async () => {
    const r = await curl(url("/api/me/big"));
    expect(r.status).toBe(502);
    expect(r.headers["x-meshgate-error"]).toBe("response_too_large");
  });
});

describe("response size limits", () => {
  it("passes_a_response_under_the_limit", async () => {
    const r = await curl(url("/limited/small"));
    expect(r.status).toBe(200);
    expect(r.body.length).toBe(1024);
    expect(r.exitCode).toBe(0);
  });

  it("answers_502_before_the_head_when_the_declared_length_is_over_the_limit", async () => {
    const r = await curl(url("/limited/declared"));
    expect(r.status).toBe(502);
    expect(r.headers["x-meshgate-error"]).toBe("response_too_large");
  });

  it("resets_a_streamed_response_that_goes_over_the_limit_never_a_clean_200", async () => {
    const r = await curl(url("/limited/stream"));
    expect(r.status).toBe(200); // the head went out before the limit was reached
    expect(r.exitCode).not.toBe(0); // … and the body is visibly incomplete
    expect(r.body.length).toBeLessThanOrEqual(2048);
    const metrics = await (await fetch(`${gw.adminUrl}/metrics`)).text();
    expect(metrics).toMatch(
      /meshgate_gateway_errors_total\{proxy="gateway",code="response_too_large"\} [1-9]/,
    );
  });
});

describe("streaming without a body transform", () => {
  async function slowUpload(
    path: string,
    contentType: string,
  ): Promise<{ clientEndAt: number; status: number }> {
    return new Promise((resolve, reject) => {
      const req = http.request(
        url(path),
        {
          method: "POST",
          agent: false,
          headers: { "content-type": contentType, "transfer-encoding": "chunked" },
        },
        (res) => {
          res.resume();
          res.once("end", () => resolve({ clientEndAt, status: res.statusCode ?? 0 }));
        },
      );
      req.once("error", reject);
      let clientEndAt = 0;
      void (async () => {
        for (let i = 0; i < 5; i++) {
          req.write(Buffer.alloc(64 * 1024, 97));
          await sleep(150);
        }
        clientEndAt = performance.now();
        req.end();
      })();
    });
  }

  it("streams_a_body_to_the_upstream_before_the_client_finished_sending_it", async () => {
    const { clientEndAt, status } = await slowUpload("/upload", "application/octet-stream");
    expect(status).toBe(200);
    const rec = uploads.at(-1)!;
    expect(rec.bytes).toBe(5 * 64 * 1024);
    expect(rec.headers["x-upload"]).toBe("streamed");
    // The first chunk reached the upstream ≥ 4 × 150 ms before the client sent its last one.
    expect(clientEndAt - rec.firstChunkAt).toBeGreaterThan(400);
  });

  it("streams_a_non_json_body_on_a_route_whose_json_body_transform_only_renames", async () => {
    const { clientEndAt } = await slowUpload("/upload-json", "text/csv");
    const rec = uploads.at(-1)!;
    expect(rec.bytes).toBe(5 * 64 * 1024);
    expect(clientEndAt - rec.firstChunkAt).toBeGreaterThan(400);
  });
});

describe("aggregation", () => {
  it("merges_parts_lists_degraded_ones_and_applies_route_headers", async () => {
    const t = performance.now();
    const r = await curl(url("/dash/u1"));
    const ms = performance.now() - t;
    expect(r.status).toBe(200);
    expect(r.headers["content-type"]).toBe("application/json");
    expect(r.headers["x-meshgate-partial"]).toBe("broken, html, slow");
    expect(r.headers["cache-control"]).toBe("private");
    expect(JSON.parse(r.text)).toEqual({ html: null, items: { ok: true, path: "/items/u1" } });
    expect(ms).toBeLessThan(650); // the slow part is cut at 300 ms; in sequence it would be ≥ 100 + 300 + …
  });

  it.each([
    ["an_encoded_ampersand", "/dash-query/bob%26admin=true", "/items?user=bob%26admin%3Dtrue&view=summary"],
    ["a_raw_ampersand", "/dash-query/bob&user=alice", "/items?user=bob%26user%3Dalice&view=summary"],
    ["a_plus", "/dash-query/a+b", "/items?user=a%2Bb&view=summary"],
    ["a_semicolon", "/dash-query/a;view=full", "/items?user=a%3Bview%3Dfull&view=summary"],
    ["an_escape_it_keeps", "/dash-query/a%3Fb%23c", "/items?user=a%3Fb%23c&view=summary"],
  ])("a path parameter with %s stays one value of the part's query", async (_claim, path, sent) => {
    const r = await request(url(path));
    expect(r.status).toBe(200);
    expect(JSON.parse(r.body)).toEqual({ items: { ok: true, path: sent } });
  });

  it("fails_with_502_naming_the_part", async () => {
    const r = await curl(url("/dash-fail"));
    expect(r.status).toBe(502);
    expect(r.headers["x-meshgate-error"]).toBe("aggregate_part_failed");
    expect(r.headers["x-meshgate-part"]).toBe("broken");
  });

  it("fails_with_504_naming_the_part_that_timed_out", async () => {
    const r = await curl(url("/dash-timeout"));
    expect(r.status).toBe(504);
    expect(r.headers["x-meshgate-error"]).toBe("aggregate_part_timeout");
    expect(r.headers["x-meshgate-part"]).toBe("slow");
  });

  it("fails_closed_with_503_for_a_part_that_needs_mesh_mtls", async () => {
    const before = good.received.length;
    const r = await curl(url("/dash-mtls"));
    expect(r.status).toBe(503);
    expect(r.headers["x-meshgate-error"]).toBe("upstream_identity_unavailable");
    expect(r.headers["x-meshgate-part"]).toBe("secure");
    expect(good.received.length).toBe(before);
  });

  it("counts_parts_by_outcome", async () => {
    const metrics = await (await fetch(`${gw.adminUrl}/metrics`)).text();
    expect(metrics).toMatch(
      /meshgate_aggregate_parts_total\{proxy="gateway",route="dash",part="slow",outcome="timeout"\} [1-9]/,
    );
    expect(metrics).toMatch(
      /meshgate_aggregate_parts_total\{proxy="gateway",route="dash",part="html",outcome="not_json"\} [1-9]/,
    );
  });
});
