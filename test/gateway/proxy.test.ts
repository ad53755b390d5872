/**
 * The gateway's proxy path against real upstream sockets: forwarding, rewrites, header hygiene, client
 * addresses, body limits, upstream faults (refused, stalled, killed mid-body), redirects, fail-closed
 * auth and identity, weighted splits and fault injection.
 */
import net from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  freePort,
  gatewayConfig,
  request,
  startTestGateway,
  startUpstream,
  type TestGateway,
  type Upstream,
} from "../support/gateway.ts";

const PUBLIC = { public: true, rateLimit: { requests: 1000, per: "1s" } };

let app: Upstream;
let other: Upstream;
let chunked: Upstream;
let killer: Upstream;
let staller: Upstream;
let gw: TestGateway;
let refusedPort: number;

beforeAll(async () => {
  app = await startUpstream((req, res, body) => {
    const out = JSON.stringify({ path: req.url, method: req.method, body, headers: req.headers });
    res.writeHead(200, {
      "content-type": "application/json",
      "content-length": Buffer.byteLength(out),
      connection: "x-upstream-secret",
      "x-upstream-secret": "hop",
      "keep-alive": "timeout=5",
      "x-app": "kept",
    });
    res.end(out);
  });
  other = await startUpstream((_req, res) => {
    res.writeHead(200, { "content-type": "text/plain" });
    res.end("other");
  });
  chunked = await startUpstream((_req, res) => {
    res.writeHead(200, { "content-type": "text/plain" });
    res.write("part1;");
    setTimeout(() => res.end("part2"), 20);
  });
  killer = await startUpstream((req, res) => {
    if (req.url?.startsWith("/cl")) {
      res.writeHead(200, { "content-length": "1000" });
      res.write("x".repeat(100));
    } else {
      res.writeHead(200, { "content-type": "text/plain" });
      res.write("first chunk");
    }
    setTimeout(() => res.socket?.destroy(), 30);
  });
  staller = await startUpstream(() => {
    /* never answers */
  });
  const dead = await freePort();
  refusedPort = dead;
  const config = gatewayConfig(
    [
      {
        name: "orders",
        match: { path: "/api/orders/{id}" },
        to: "app",
        rewrite: { path: "/orders/{id}" },
        ...PUBLIC,
      },
      { name: "echo", match: { path: "/echo/**" }, to: "app", ...PUBLIC, limits: { maxBodySize: "1KiB" } },
      {
        name: "service-keyed",
        match: { path: "/keyed", headers: { "x-auth-token": { present: true }, "x-canary": "on" } },
        to: "app",
        ...PUBLIC,
      },
      {
        name: "authentication-keyed",
        match: { path: "/keyed-authn", headers: { "x-authentication": { present: true }, "x-canary": "on" } },
        to: "app",
        ...PUBLIC,
      },
      {
        // Swagger's petstore key header, an OAuth access token: the spec refuses header names with "_"
        // (E_SPEC_AMBIGUOUS_HEADER_NAME) as the gateway refuses requests carrying them, so the names are set
        // below in the runtime config, as a hand-written one may: the route never matches, but its names
        // are logged on every line.
        name: "underscore-keyed",
        match: { path: "/keyed-underscore", headers: { "x-underscore-probe": { present: true } } },
        to: "app",
        ...PUBLIC,
      },
      { name: "echo-v2", match: { path: "/echo/**", query: { apiVersion: "2" } }, to: "other", ...PUBLIC },
      { name: "stream", match: { path: "/stream" }, to: "chunked", ...PUBLIC },
      { name: "killed", match: { path: "/killed/**" }, to: "killer", ...PUBLIC },
      { name: "stalled", match: { path: "/stalled" }, to: "staller", ...PUBLIC, timeout: "300ms" },
      { name: "refused", match: { path: "/refused" }, to: "dead", ...PUBLIC },
      { name: "private", match: { path: "/private" }, to: "app", auth: { jwt: "main" } },
      { name: "moved", match: { path: "/old/**" }, redirect: { path: "/new", status: 308 }, ...PUBLIC },
      {
        name: "moved-item",
        match: { path: "/items/{id}" },
        redirect: { path: "/new/items/{id}", status: 301 },
        ...PUBLIC,
      },
      {
        name: "moved-keep",
        match: { path: "/keep/**" },
        redirect: { scheme: "https", host: "www.t.example" },
        ...PUBLIC,
      },
      {
        name: "split",
        match: { path: "/split" },
        split: [
          { service: "app", weight: 80 },
          { service: "other", weight: 20 },
        ],
        ...PUBLIC,
      },
      {
        name: "broken",
        match: { path: "/broken" },
        to: "app",
        ...PUBLIC,
        fault: { abort: { status: 503, percent: 100 } },
      },
      {
        name: "slowed",
        match: { path: "/slowed" },
        to: "app",
        ...PUBLIC,
        fault: { delay: { duration: "150ms", percent: 100 } },
      },
      {
        name: "dash",
        match: { path: "/dash" },
        aggregate: { a: { service: "app", path: "/a" } },
        ...PUBLIC,
      },
      { name: "only-get", match: { path: "/only-get", methods: ["GET"] }, to: "app", ...PUBLIC },
    ],
    { app, other, chunked, killer, staller, dead: { port: dead } },
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
  );
  const underscore = config.routes.find((r) => r.name === "underscore-keyed")!;
  Object.assign(underscore, {
    match: {
      ...underscore.match,
      headers: ["api_key", "access_token"].map((name) => ({ name, kind: "present", value: null })),
    },
  });
  gw = await startTestGateway(config);
});

afterAll(async () => {
  await gw.drain();
  await Promise.all([app, other, chunked, killer, staller].map((u) => u.close()));
});

describe("forwarding", () => {
  it("forwards_the_rewritten_canonical_path_with_the_query", async () => {
    const r = await request(`${gw.url}/api/./orders//%37?expand=1`);
    expect(r.status).toBe(200);
    expect(JSON.parse(r.body)).toMatchObject({ path: "/orders/7?expand=1", method: "GET" });
  });

  it("streams_request_bodies_to_the_upstream", async () => {
    const r = await request(`${gw.url}/echo/x`, {
      method: "POST",
      body: "hello=world",
      headers: { "content-type": "text/plain" },
    });
    expect(JSON.parse(r.body)).toMatchObject({ method: "POST", body: "hello=world" });
  });

  it("streams_chunked_responses_through", async () => {
    const r = await request(`${gw.url}/stream`);
    expect(r).toMatchObject({ status: 200, body: "part1;part2", complete: true });
  });

  it("strips_hop_by_hop_headers_in_both_directions", async () => {
    const r = await request(`${gw.url}/echo/h`, {
      headers: {
        connection: "keep-alive, x-client-secret",
        "x-client-secret": "s",
        "keep-alive": "timeout=1",
        "x-plain": "p",
      },
    });
    const seen = JSON.parse(r.body).headers as Record<string, string>;
    expect(seen["x-client-secret"]).toBeUndefined();
    expect(seen["keep-alive"]).toBeUndefined();
    expect(seen["x-plain"]).toBe("p");
    expect(r.headers["x-upstream-secret"]).toBeUndefined();
    expect(r.headers["keep-alive"]).not.toBe("timeout=5"); // Node's own keep-alive header, not the upstream's
    expect(r.headers["x-app"]).toBe("kept");
  });

  it("gateway_owned_headers_survive_connection_tricks_and_replace_client_values", async () => {
    const r = await request(`${gw.url}/echo/o`, {
      headers: {
        connection: "close, x-forwarded-for, x-request-id, x-forwarded-proto",
        "x-forwarded-for": "6.6.6.6",
        "x-forwarded-proto": "https",
        forwarded: "for=6.6.6.6;proto=https",
        "x-real-ip": "6.6.6.6",
      },
    });
    const seen = JSON.parse(r.body).headers as Record<string, string>;
    expect(seen["x-forwarded-for"]).toBe("127.0.0.1");
    expect(seen["x-forwarded-proto"]).toBe("http");
    expect(seen.forwarded).toBe(`for=127.0.0.1;proto=http;host="127.0.0.1:${new URL(gw.url).port}"`);
    expect(seen["x-real-ip"]).toBe("127.0.0.1"); // the gateway's value (the peer), not the client's
    expect(seen["x-request-id"]).toMatch(/^[0-9a-f-]{36}$/);
  });

  // Connection may nominate hop-by-hop headers, never Host: the request was routed and cache-keyed by its
  // Host, and without one the pool named the endpoint's address (a virtual-hosting upstream answering
  // for another site, cached under this one's key).
  it.each([
    ["keeps_the_host_a_connection_header_nominates", "host"],
    ["keeps_the_host_a_connection_header_nominates_in_another_case_among_others", "close, X-Plain , HOST"],
  ])("%s", async (_claim, connection) => {
    const host = `127.0.0.1:${new URL(gw.url).port}`; // not the upstream's address, which the pool names
    const r = await request(`${gw.url}/echo/host`, { headers: { host, connection, "x-plain": "p" } });
    const seen = JSON.parse(r.body).headers as Record<string, string>;
    expect([seen.host, seen["x-forwarded-host"]]).toEqual([host, host]);
  });

  // x-meshgate-* is the gateway's namespace (as x-envoy-* is Envoy's), and X-Forwarded-Client-Cert says a
  // peer certificate was verified: a client's copies would assert to an upstream outside the mesh what
  // only the gateway or a sidecar may.
  it.each([
    ["drops_a_clients_x_meshgate_peer", "x-meshgate-peer", "spiffe://mesh.example/ns/shop/sa/admin"],
    ["drops_a_clients_x_forwarded_client_cert", "x-forwarded-client-cert", "By=spiffe://x;URI=spiffe://y"],
    ["drops_a_clients_x_meshgate_mirror", "x-meshgate-mirror", "1"],
    ["drops_any_client_header_in_the_gateways_namespace", "x-meshgate-anything", "v"],
  ])("%s", async (_claim, name, value) => {
    const r = await request(`${gw.url}/echo/own`, { headers: { [name]: value, "x-plain": "p" } });
    const seen = JSON.parse(r.body).headers as Record<string, string>;
    expect([seen[name], seen["x-plain"]]).toEqual([undefined, "p"]);
  });

  it.each(["x-http-method-override", "x-http-method", "x-method-override"])(
    "never_lets_a_client_turn_its_authorized_method_into_another_with_%s",
    async (name) => {
      const r = await request(`${gw.url}/echo/m`, {
        method: "POST",
        body: "{}",
        headers: { "content-type": "application/json", [name]: "DELETE", "x-plain": "p" },
      });
      const seen = JSON.parse(r.body) as { method: string; headers: Record<string, string> };
      expect([seen.method, seen.headers[name], seen.headers["x-plain"]]).toEqual(["POST", undefined, "p"]);
    },
  );

  it("tells_the_upstream_the_host_of_an_absolute_form_target_not_the_received_host", async () => {
    // RFC 9112 §3.2.2: the target's host replaces Host. The request was routed by the target's host; the
    // upstream (and a cache keyed by what it was told) got the client's Host before.
    const { port } = new URL(gw.url);
    const socket = net.connect(Number(port), "127.0.0.1");
    socket.write(
      `GET http://127.0.0.1:${port}/echo/abs HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n`,
    );
    let text = "";
    for await (const chunk of socket) text += String(chunk);
    expect(text.slice(0, 12)).toBe("HTTP/1.1 200");
    const seen = JSON.parse(text.slice(text.indexOf("\r\n\r\n") + 4)).headers as Record<string, string>;
    expect(seen.host).toBe(`127.0.0.1:${port}`);
    expect(seen["x-forwarded-host"]).toBe(`127.0.0.1:${port}`);
    expect(seen.forwarded).toContain(`host="127.0.0.1:${port}"`);
  });

  it("keeps_a_well_formed_client_request_id_and_replaces_a_malformed_one", async () => {
    const kept = JSON.parse(
      (await request(`${gw.url}/echo/id`, { headers: { "x-request-id": "abc-123" } })).body,
    );
    expect(kept.headers["x-request-id"]).toBe("abc-123");
    const replaced = JSON.parse(
      (await request(`${gw.url}/echo/id`, { headers: { "x-request-id": "a b<script>" } })).body,
    );
    expect(replaced.headers["x-request-id"]).toMatch(/^[0-9a-f-]{36}$/);
  });

  it("matches_query_parameter_names_as_written", async () => {
    expect((await request(`${gw.url}/echo/v?apiVersion=2`)).body).toBe("other");
    const lower = await request(`${gw.url}/echo/v?apiversion=2`);
    expect(JSON.parse(lower.body)).toMatchObject({ path: "/echo/v?apiversion=2" });
  });

  it("splits_by_weight", async () => {
    const counts = { app: 0, other: 0 };
    for (let i = 0; i < 400; i++) {
      const r = await request(`${gw.url}/split`, { agent: undefined });
      if (r.body === "other") counts.other++;
      else counts.app++;
    }
    // 80/20 with 400 draws: the 99.99% band is roughly ±8 points.
    expect(counts.other / 400).toBeGreaterThan(0.12);
    expect(counts.other / 400).toBeLessThan(0.28);
  });
});

describe("limits and refusals", () => {
  it("refuses_a_declared_body_over_the_route_limit_with_413_before_reading_it", async () => {
    const before = app.received.length;
    const r = await request(`${gw.url}/echo/big`, { method: "POST", body: "x".repeat(2000) });
    expect(r.status).toBe(413);
    expect(JSON.parse(r.body)).toEqual({
      error: { code: "body_too_large", message: "the request body exceeds 1024 bytes" },
    });
    expect(app.received.length).toBe(before);
  });

  it("refuses_a_chunked_body_that_grows_over_the_limit", async () => {
    const r = await request(`${gw.url}/echo/big`, {
      method: "POST",
      headers: { "transfer-encoding": "chunked" },
      body: "y".repeat(5000),
    }).catch((e: Error) => ({ status: 0, body: e.message }));
    // Either the 413 arrives, or the connection is cut mid-upload: never a 2xx.
    expect([413, 0]).toContain(r.status);
  });

  it.each([
    ["answers_404_json_for_an_unknown_path", "/nope", 404, "no_route"],
    ["answers_400_for_an_encoded_slash", "/echo/a%2Fb", 400, "bad_request_target"],
    ["answers_400_for_a_path_above_root", "/../etc/passwd", 400, "bad_request_target"],
  ])("%s", async (_claim, path, status, code) => {
    const r = await request(`${gw.url}${path}`);
    expect(r.status).toBe(status);
    expect(r.headers["x-meshgate-error"]).toBe(code);
    expect(JSON.parse(r.body).error.code).toBe(code);
  });

  it("answers_405_with_allow", async () => {
    const r = await request(`${gw.url}/only-get`, { method: "DELETE" });
    expect(r.status).toBe(405);
    expect(r.headers.allow).toBe("GET");
  });

  it("answers_404_for_a_host_it_does_not_serve", async () => {
    const r = await request(`${gw.url}/echo/x`, { headers: { host: "evil.example" } });
    expect(r.status).toBe(404);
    expect(r.headers["x-meshgate-error"]).toBe("host_not_served");
  });

  it("fails_closed_on_routes_that_require_authentication", async () => {
    const before = app.received.length;
    const r = await request(`${gw.url}/private`, { headers: { authorization: "Bearer anything" } });
    expect(r.status).toBe(401);
    expect(r.headers["www-authenticate"]).toContain("Bearer");
    expect(app.received.length).toBe(before);
  });

  it("serves_aggregate_routes_through_the_upstream_clusters", async () => {
    const r = await request(`${gw.url}/dash`);
    expect(r.status).toBe(200);
    expect(JSON.parse(r.body)).toMatchObject({ a: { path: "/a", method: "GET" } });
  });
});

describe("upstream faults", () => {
  it("answers_a_refused_connection_fast_with_503", async () => {
    const t = performance.now();
    const r = await request(`${gw.url}/refused`);
    expect(r.status).toBe(503);
    expect(r.headers["x-meshgate-error"]).toBe("upstream_connect_failure");
    expect(performance.now() - t).toBeLessThan(1000);
    void refusedPort;
  });

  it("answers_a_stalled_upstream_with_504_at_the_route_timeout", async () => {
    const t = performance.now();
    const r = await request(`${gw.url}/stalled`);
    const elapsed = performance.now() - t;
    expect(r.status).toBe(504);
    expect(elapsed).toBeGreaterThanOrEqual(280);
    expect(elapsed).toBeLessThan(2000);
  });

  it.each([
    ["surfaces_a_content_length_body_cut_short_as_a_failure", "/killed/cl"],
    ["surfaces_a_chunked_body_cut_short_as_a_failure", "/killed/chunked"],
  ])("%s", async (_claim, path) => {
    const outcome = await request(`${gw.url}${path}`).then(
      (r) => ({ ok: true, complete: r.complete, status: r.status }),
      (e: Error & { code?: string }) => ({ ok: false, code: e.code ?? e.message }),
    );
    // Never a complete, clean response: the client sees an aborted or incomplete transfer.
    if (outcome.ok) expect(outcome).toMatchObject({ complete: false });
    else expect(outcome.ok).toBe(false);
  });

  it("counts_upstream_outcomes_in_metrics", async () => {
    const text = await (await fetch(`${gw.adminUrl}/metrics`)).text();
    expect(text).toMatch(
      /meshgate_upstream_requests_total\{proxy="gateway",cluster="dead",outcome="connect_failure"\} [1-9]/,
    );
    expect(text).toMatch(
      /meshgate_upstream_requests_total\{proxy="gateway",cluster="staller",outcome="timeout"\} [1-9]/,
    );
    expect(text).toMatch(
      /meshgate_upstream_requests_total\{proxy="gateway",cluster="killer",outcome="reset"\} [1-9]/,
    );
  });
});

describe("redirects and faults", () => {
  it("redirects_with_a_location_built_from_the_canonical_path", async () => {
    const r = await request(`${gw.url}/old/x?y=1`);
    expect(r.status).toBe(308);
    expect(r.headers.location).toBe("http://127.0.0.1/new?y=1");
  });

  it("fills_the_redirect_path_with_the_captured_params", async () => {
    const r = await request(`${gw.url}/items/%41b?y=1`);
    expect(r.status).toBe(301);
    expect(r.headers.location).toBe("http://127.0.0.1/new/items/Ab?y=1");
  });

  it("keeps_the_canonical_path_when_the_redirect_changes_scheme_and_host", async () => {
    const r = await request(`${gw.url}/keep//evil.example/%2e%2e/x`);
    expect(r.status).toBe(302);
    expect(r.headers.location).toBe("https://www.t.example/keep/x");
  });

  it("injects_aborts", async () => {
    const r = await request(`${gw.url}/broken`);
    expect(r.status).toBe(503);
    expect(r.headers["x-meshgate-error"]).toBe("fault_injected");
  });

  it("injects_delays", async () => {
    const t = performance.now();
    const r = await request(`${gw.url}/slowed`);
    expect(r.status).toBe(200);
    expect(performance.now() - t).toBeGreaterThanOrEqual(140);
  });
});

describe("logs", () => {
  it("writes_one_json_access_line_per_request_without_credentials", async () => {
    await request(`${gw.url}/private`, {
      headers: { authorization: "Bearer sekret-token-value", cookie: "sid=sekret-cookie" },
    });
    await request(`${gw.url}/echo/log?token=sekret-query`, { headers: { "x-api-key": "sekret-key" } });
    const access = gw.logs.filter((l) => l.event === "access");
    expect(access.length).toBeGreaterThan(10);
    expect(access.at(-1)).toMatchObject({
      method: "GET",
      path: "/echo/log",
      route: "echo",
      status: 200,
      completed: true,
      // The response closes before the handler returns; the line still names the upstream and outcome.
      upstream: expect.stringMatching(/^127\.0\.0\.1:\d+$/),
      outcome: "success",
    });
    for (const secret of ["sekret-token-value", "sekret-cookie", "sekret-query", "sekret-key"]) {
      expect(gw.rawLog()).not.toContain(secret);
    }
  });

  // A route may test a credential its service checks itself: the line shows it present, never its value
  // (replay still decides presence conditions; value conditions on it are skipped, test/policies).
  it.each([
    [
      "logs_a_service_checked_credential_header_a_route_reads_as_present_never_its_value",
      "/keyed",
      200,
      "service-keyed",
      { "x-auth-token": "sekret-service-token" },
    ],
    [
      "logs_an_x_authentication_header_a_route_reads_as_present_never_its_value",
      "/keyed-authn",
      200,
      "authentication-keyed",
      { "x-authentication": "sekret-scheme-credential" },
    ],
    [
      "logs_credential_headers_named_with_underscores_as_present_never_their_values_when_refusing_them",
      "/keyed-underscore",
      400,
      "none",
      { api_key: "sekret-petstore-key", access_token: "sekret-access-token" },
    ],
  ])("%s", async (claim, path, status, route, secrets) => {
    const r = await request(`${gw.url}${path}`, {
      headers: { ...secrets, "x-canary": "on", "x-request-id": claim },
    });
    expect(r.status).toBe(status);
    const line = gw.logs.find((l) => l.event === "access" && l.requestId === claim);
    const redacted = Object.fromEntries(Object.keys(secrets).map((k) => [k, "[redacted]"]));
    expect(line).toMatchObject({ route, headers: redacted });
    for (const secret of Object.values(secrets)) expect(gw.rawLog()).not.toContain(secret);
  });

  // Node's statusCode is 200 until a response is written: a client that gave up on a stalled upstream was
  // logged, traced and counted (requests_total, so the availability SLO) as a 200 it never received.
  it.each([
    ["http1_client_that_left_before_any_response", "h1"],
    ["h2_client_that_reset_its_stream_before_any_response", "h2"],
  ])("counts_and_logs_a_%s_as_499_not_200", async (_name, protocol) => {
    const requestId = `client-left-${protocol}`;
    const { port } = new URL(gw.url);
    if (protocol === "h1") {
      const socket = net.connect(Number(port), "127.0.0.1");
      socket.write(`GET /stalled HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Request-Id: ${requestId}\r\n\r\n`);
      await new Promise((r) => setTimeout(r, 50));
      socket.destroy();
    } else {
      const http2 = await import("node:http2");
      const session = http2.connect(`http://127.0.0.1:${port}`);
      session.on("error", () => {});
      const stream = session.request({ ":path": "/stalled", "x-request-id": requestId });
      stream.on("error", () => {});
      await new Promise((r) => setTimeout(r, 50));
      stream.close(http2.constants.NGHTTP2_CANCEL);
      session.close();
    }
    const line = () => gw.logs.find((l) => l.event === "access" && l.requestId === requestId);
    for (const end = Date.now() + 5000; line() === undefined && Date.now() < end;)
      await new Promise((r) => setTimeout(r, 20));
    expect(line()).toMatchObject({ route: "stalled", status: 499, completed: false });
    // The stalled route never answers 2xx: no request of it may be counted as one.
    const metrics = await (await fetch(`${gw.adminUrl}/metrics`)).text();
    expect(metrics).not.toMatch(
      /meshgate_requests_total\{proxy="gateway",route="stalled",code_class="2xx"\}/,
    );
    expect(metrics).toMatch(
      /meshgate_requests_total\{proxy="gateway",route="stalled",code_class="4xx"\} [1-9]/,
    );
  });

  // RFC 9110 §4.2.4: userinfo is deprecated and decide() refuses it (400), but the line still names the host
  // the request was for: as received, it held the password.
  it.each([
    ["an_absolute_form_target_s_password", "http://alice:userinfo-pw-1@127.0.0.1/echo/u", "127.0.0.1"],
    ["a_password_holding_an_at_sign", "http://alice:userinfo@pw-2@127.0.0.1/echo/u", "127.0.0.1"],
    ["a_host_header_s_userinfo", "/echo/u", "127.0.0.1"],
  ])("logs_the_host_of_a_refused_request_without_%s", async (_name, target, host) => {
    const { port } = new URL(gw.url);
    const socket = net.connect(Number(port), "127.0.0.1");
    const hostHeader = target.startsWith("/") ? "bob:userinfo-pw-3@127.0.0.1" : "127.0.0.1";
    socket.write(`GET ${target} HTTP/1.1\r\nHost: ${hostHeader}\r\nConnection: close\r\n\r\n`);
    let text = "";
    for await (const chunk of socket) text += String(chunk);
    expect(text.slice(0, 12)).toBe("HTTP/1.1 400");
    const line = gw.logs.filter((l) => l.event === "access").at(-1);
    expect(line).toMatchObject({ status: 400, host });
    expect(gw.rawLog()).not.toMatch(/userinfo-pw|userinfo@pw/);
  });
});
