/**
 * Aggregation against real upstream sockets: three failing parts (one slow past its timeout, one
 * answering 500, one answering non-JSON) beside healthy ones, under each onError policy; parts run in
 * parallel (total ≈ the slowest part, not the sum); forwarded headers; response bounds; a client span
 * per part under the server span, exported to a real OTLP receiver.
 */
import http from "node:http";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { aggregate, type AggregateObserver, type PartOutcome } from "../../runtime/apim/aggregate.ts";
import { compileApim, type RouteApim } from "../../runtime/apim/index.ts";
import type { GatewayRuntimeConfig } from "../../runtime/contract/schema.ts";
import { compileGateway } from "../../runtime/decide/decide.ts";
import { createTracer, NOOP_SPAN, type Tracer } from "../../runtime/telemetry/tracing.ts";
import { PoolCache, UpstreamCluster } from "../../runtime/upstream/cluster.ts";
import type { CancelToken } from "../../runtime/upstream/h1pool.ts";
import { gatewayConfig, startUpstream, type Upstream } from "../support/gateway.ts";

const SLOW_MS = 600;
const PART_TIMEOUT = "250ms";
const OK_DELAY_MS = 150;

let good: Upstream;
let profile: Upstream;
let slow: Upstream;
let broken: Upstream;
let html: Upstream;
let big: Upstream;
let medium: Upstream;
let pools: PoolCache;
const clusters = new Map<string, UpstreamCluster>();
let config: GatewayRuntimeConfig;
let apim: Map<string, RouteApim>;

const json = (res: http.ServerResponse, status: number, body: unknown) => {
  const text = JSON.stringify(body);
  res.writeHead(status, { "content-type": "application/json", "content-length": Buffer.byteLength(text) });
  res.end(text);
};

const part = (service: string, path: string, onError: string, extra: Record<string, unknown> = {}) => ({
  service,
  path,
  onError,
  timeout: PART_TIMEOUT,
  ...extra,
});

beforeAll(async () => {
  good = await startUpstream((req, res) => {
    setTimeout(() => json(res, 200, { items: [1, 2, 3], path: req.url }), OK_DELAY_MS);
  });
  profile = await startUpstream((req, res) => {
    setTimeout(() => json(res, 200, { name: "Ada", headers: req.headers }), OK_DELAY_MS);
  });
  slow = await startUpstream((_req, res) => {
    setTimeout(() => json(res, 200, { late: true }), SLOW_MS);
  });
  broken = await startUpstream((_req, res) => json(res, 500, { error: "boom" }));
  html = await startUpstream((_req, res) => {
    res.writeHead(200, { "content-type": "text/html" });
    res.end("<html>not json</html>");
  });
  medium = await startUpstream((_req, res) => {
    setTimeout(() => json(res, 200, { medium: true }), 300);
  });
  big = await startUpstream((_req, res) => {
    res.writeHead(200, { "content-type": "application/json" });
    res.end(JSON.stringify({ blob: "x".repeat(8192) }));
  });
  const base = { public: true, rateLimit: { requests: 1000, per: "1s" }, retries: { attempts: 0 } };
  config = gatewayConfig(
    [
      {
        name: "omit",
        match: { path: "/omit/{user}", methods: ["GET"] },
        aggregate: {
          items: part("good", "/items", "fail"),
          profile: part("profile", "/profiles/{user}", "fail", {
            forwardHeaders: ["accept-language", "authorization"],
          }),
          slow: part("slow", "/slow", "omit"),
          broken: part("broken", "/broken", "omit"),
          html: part("html", "/html", "omit"),
        },
        transform: { request: { headers: { set: { "x-agg": "user-${params.user}" } } } },
        ...base,
      },
      {
        name: "defaults",
        match: { path: "/defaults", methods: ["GET"] },
        aggregate: {
          items: part("good", "/items", "fail"),
          slow: part("slow", "/slow", "default", { default: { late: false } }),
          broken: part("broken", "/broken", "default", { default: [] }),
          html: part("html", "/html", "default", { default: null }),
        },
        ...base,
      },
      {
        name: "fail-slow",
        match: { path: "/fail-slow", methods: ["GET"] },
        // items has room (2 s) so that only slow can time out, however busy the machine.
        aggregate: {
          items: part("good", "/items", "fail", { timeout: "2s" }),
          slow: part("slow", "/slow", "fail"),
        },
        ...base,
      },
      {
        name: "fail-broken",
        match: { path: "/fail-broken", methods: ["GET"] },
        aggregate: { slow: part("slow", "/slow", "omit"), broken: part("broken", "/broken", "fail") },
        ...base,
      },
      {
        name: "fail-html",
        match: { path: "/fail-html", methods: ["GET"] },
        aggregate: { items: part("good", "/items", "omit"), html: part("html", "/html", "fail") },
        ...base,
      },
      {
        name: "bounded",
        match: { path: "/bounded", methods: ["GET"] },
        aggregate: { big: part("big", "/big", "fail"), items: part("good", "/items", "omit") },
        limits: { maxResponseSize: "4KiB" },
        ...base,
      },
      {
        name: "parallel",
        match: { path: "/parallel", methods: ["GET"] },
        aggregate: {
          a: part("good", "/a", "fail"),
          b: part("profile", "/b", "fail"),
          c: part("medium", "/c", "fail", { timeout: "2s" }),
        },
        ...base,
      },
      {
        name: "heads",
        match: { path: "/heads", methods: ["GET"] },
        aggregate: {
          exists: part("good", "/items", "fail", { method: "HEAD" }),
          gone: part("broken", "/broken", "default", { method: "HEAD", default: false }),
        },
        ...base,
      },
    ],
    { good, profile, slow, broken, html, big, medium },
    {},
    // Failures are the point of these tests: outlier detection must not eject the failing upstreams.
    Object.fromEntries(
      ["good", "profile", "slow", "broken", "html", "big", "medium"].map((name) => [
        name,
        {
          image: `r/${name}:1`,
          port: 8080,
          allow: [{ from: ["gateway"] }],
          circuitBreaker: { consecutive5xx: 100000 },
        },
      ]),
    ),
  );
  pools = new PoolCache({ connections: 64 });
  const events = { onError: () => {}, onEjection: () => {}, onHealthChange: () => {} };
  for (const c of config.clusters) {
    const cluster = new UpstreamCluster(c, config.discovery, pools, events);
    await cluster.start();
    clusters.set(c.name, cluster);
  }
  const compiled = compileGateway(config);
  const byRoute = compileApim(config, compiled.router.routes, clusters);
  apim = new Map([...byRoute].map(([r, a]) => [r.name, a]));
});

afterAll(async () => {
  for (const c of clusters.values()) c.close();
  await pools.closeAll();
  for (const u of [good, profile, slow, broken, html, big, medium]) await u.close();
});

interface Recorded {
  parts: Record<string, PartOutcome>;
}

function observer(rec: Recorded): AggregateObserver {
  return {
    attempt: () => {},
    retry: () => {},
    budgetExhausted: () => {},
    overflow: () => {},
    part: (_route, name, outcome) => {
      rec.parts[name] = outcome;
    },
  };
}

const NOOP_TRACER = createTracer({
  serviceName: "t",
  tracing: { enabled: false, sampling: 0, otlpEndpoint: null },
});

async function run(
  route: string,
  params: Record<string, string> = {},
  clientHeaders: http.IncomingHttpHeaders = {},
  opts: { tracer?: Tracer; cancel?: CancelToken } = {},
) {
  const agg = apim.get(route)!.aggregate!;
  const rec: Recorded = { parts: {} };
  const started = performance.now();
  const result = await aggregate(
    agg,
    {
      params,
      clientHeaders,
      baseHeaders: { "x-request-id": "req-agg-1", "x-forwarded-for": "203.0.113.7", host: "api.example" },
      retry: config.routes.find((r) => r.name === route)!.retry,
      hashKey: "203.0.113.7",
      cancel: opts.cancel ?? { aborted: false, onabort: null },
      span: NOOP_SPAN,
      tracer: opts.tracer ?? NOOP_TRACER,
      templateContext: {
        params,
        method: "GET",
        path: `/${route}`,
        host: "api.example",
        query: "",
        requestId: "req-agg-1",
        clientIp: "203.0.113.7",
        header: (n) => clientHeaders[n] as string | undefined,
        principal: null,
      },
    },
    observer(rec),
  );
  return { result, rec, ms: performance.now() - started };
}

describe("partial-failure policies", () => {
  it("omits_failed_parts_and_lists_them_as_degraded", async () => {
    const { result, rec, ms } = await run("omit", { user: "u7" });
    expect(result.kind).toBe("ok");
    if (result.kind !== "ok") return;
    const body = JSON.parse(result.body.toString()) as Record<string, { items?: number[]; name?: string }>;
    expect(Object.keys(body)).toEqual(["items", "profile"]);
    expect(body.items!.items).toEqual([1, 2, 3]);
    expect(body.profile!.name).toBe("Ada");
    expect(result.degraded).toEqual(["broken", "html", "slow"]);
    expect(rec.parts).toEqual({
      items: "success",
      profile: "success",
      slow: "timeout",
      broken: "error_status",
      html: "not_json",
    });
    // Parallel: the slowest part is cut at its 250 ms timeout; sequential would take ≥ 150+150+250.
    expect(ms).toBeLessThan(450);
  });

  it("uses_declared_defaults_for_failed_parts", async () => {
    const { result, rec } = await run("defaults");
    expect(result.kind).toBe("ok");
    if (result.kind !== "ok") return;
    expect(JSON.parse(result.body.toString())).toEqual({
      broken: [],
      html: null,
      items: { items: [1, 2, 3], path: "/items" },
      slow: { late: false },
    });
    expect(result.degraded).toEqual(["broken", "html", "slow"]);
    expect(rec.parts.slow).toBe("timeout");
  });

  it("fails_with_504_naming_the_part_that_timed_out", async () => {
    const { result, ms } = await run("fail-slow");
    expect(result).toMatchObject({
      kind: "error",
      status: 504,
      code: "aggregate_part_timeout",
      part: "slow",
    });
    if (result.kind === "error") expect(result.message).toContain("aggregate part slow");
    expect(ms).toBeLessThan(SLOW_MS);
  });

  it("fails_with_502_at_once_when_a_fail_part_answers_500_and_cancels_the_others", async () => {
    const { result, rec, ms } = await run("fail-broken");
    expect(result).toMatchObject({
      kind: "error",
      status: 502,
      code: "aggregate_part_failed",
      part: "broken",
    });
    if (result.kind === "error") expect(result.message).toContain("answered 500");
    // It does not wait for the slow part (600 ms): it answers as soon as the 500 arrives.
    expect(ms).toBeLessThan(200);
    await new Promise((r) => setTimeout(r, 50));
    expect(rec.parts.slow).toBe("cancelled");
  });

  it("fails_with_502_when_a_fail_part_answers_non_json", async () => {
    const { result } = await run("fail-html");
    expect(result).toMatchObject({ kind: "error", status: 502, code: "aggregate_part_failed", part: "html" });
    if (result.kind === "error") expect(result.message).toContain("text/html, not JSON");
  });

  it("answers_true_for_a_successful_head_part", async () => {
    const { result } = await run("heads");
    expect(result.kind === "ok" && JSON.parse(result.body.toString())).toEqual({ exists: true, gone: false });
  });
});

describe("parallelism", () => {
  it("takes_about_as_long_as_the_slowest_part_not_the_sum", async () => {
    // Parts of 150 ms, 150 ms and 300 ms: in parallel ≈ 300 ms; one after the other it would be 600 ms.
    const times: number[] = [];
    for (let i = 0; i < 3; i++) {
      const { result, ms } = await run("parallel");
      expect(result.kind).toBe("ok");
      times.push(ms);
    }
    const best = Math.min(...times);
    expect(best).toBeGreaterThanOrEqual(295);
    expect(best).toBeLessThan(450);
  });
});

describe("part requests", () => {
  it("sends_the_gateway_headers_the_listed_client_headers_and_the_request_transform_only", async () => {
    const before = profile.received.length;
    await run(
      "omit",
      { user: "u9" },
      {
        "accept-language": "de",
        authorization: "Bearer listed",
        cookie: "session=secret",
        "x-custom": "not-listed",
      },
    );
    const got = profile.received.slice(before).at(-1)!;
    expect(got.url).toBe("/profiles/u9");
    expect(got.headers["x-request-id"]).toBe("req-agg-1");
    expect(got.headers["x-forwarded-for"]).toBe("203.0.113.7");
    expect(got.headers["accept-language"]).toBe("de");
    expect(got.headers.authorization).toBe("Bearer listed");
    expect(got.headers["x-agg"]).toBe("user-u9");
    expect(got.headers.accept).toBe("application/json");
    expect(got.headers.cookie).toBeUndefined();
    expect(got.headers["x-custom"]).toBeUndefined();
    // Parts without forwardHeaders get no credentials at all.
    const items = good.received.at(-1)!;
    expect(items.headers.authorization).toBeUndefined();
    expect(items.headers["accept-language"]).toBeUndefined();
  });
});

describe("bounds", () => {
  it("fails_a_part_whose_answer_exceeds_the_route_limit", async () => {
    const { result, rec } = await run("bounded");
    expect(result).toMatchObject({ kind: "error", status: 502, code: "aggregate_part_failed", part: "big" });
    expect(rec.parts.big).toBe("too_large");
  });

  it("answers_cancelled_when_the_client_goes_away", async () => {
    const cancel: CancelToken = { aborted: false, onabort: null };
    setTimeout(() => {
      cancel.aborted = true;
      cancel.onabort?.();
    }, 50);
    const { result, rec, ms } = await run("fail-slow", {}, {}, { cancel });
    expect(result).toEqual({ kind: "cancelled" });
    expect(ms).toBeLessThan(200);
    await new Promise((r) => setTimeout(r, 50));
    expect(rec.parts.slow).toBe("cancelled");
  });
});

describe("tracing", () => {
  it("exports_a_client_span_per_part_under_the_server_span", async () => {
    const spans: {
      spanId: string;
      parentSpanId?: string;
      kind: number;
      attributes: { key: string; value: { stringValue?: string } }[];
    }[] = [];
    const receiver = http.createServer((req, res) => {
      let body = "";
      req.on("data", (c: Buffer) => (body += c.toString()));
      req.on("end", () => {
        const doc = JSON.parse(body) as { resourceSpans: { scopeSpans: { spans: typeof spans }[] }[] };
        for (const rs of doc.resourceSpans) for (const ss of rs.scopeSpans) spans.push(...ss.spans);
        res.writeHead(200, { "content-type": "application/json" });
        res.end("{}");
      });
    });
    await new Promise<void>((r) => receiver.listen(0, "127.0.0.1", r));
    const tracer = createTracer({
      serviceName: "gateway",
      tracing: {
        enabled: true,
        sampling: 1,
        otlpEndpoint: `http://127.0.0.1:${(receiver.address() as AddressInfo).port}`,
      },
    });
    const server = tracer.startServerSpan(undefined, undefined, { method: "GET", path: "/defaults" });
    const agg = apim.get("defaults")!.aggregate!;
    const before = good.received.length;
    await aggregate(
      agg,
      {
        params: {},
        clientHeaders: {},
        baseHeaders: {},
        retry: config.routes[0]!.retry,
        hashKey: "x",
        cancel: { aborted: false, onabort: null },
        span: server,
        tracer,
        templateContext: null,
      },
      observer({ parts: {} }),
    );
    server.end({ statusCode: 200 });
    await tracer.flush();
    await tracer.shutdown(1000);
    receiver.close();
    const clientSpans = spans.filter((s) => s.kind === 3);
    const names = clientSpans
      .map((s) => s.attributes.find((a) => a.key === "meshgate.aggregate.part")?.value.stringValue)
      .sort();
    expect(names).toEqual(["broken", "html", "items", "slow"]);
    for (const s of clientSpans) expect(s.parentSpanId).toBe(server.spanId);
    // Each part carries its own span's context upstream.
    const sent = good.received.slice(before).at(-1)!.headers.traceparent as string;
    const itemsSpan = clientSpans.find((s) =>
      s.attributes.some((a) => a.key === "meshgate.aggregate.part" && a.value.stringValue === "items"),
    )!;
    expect(sent).toContain(itemsSpan.spanId);
  });
});
