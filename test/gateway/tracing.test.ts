/**
 * Traces through the gateway: a server span per request and a client span for the upstream call, both
 * exported over OTLP/HTTP to a real receiver, with the client span's context propagated upstream.
 */
import http from "node:http";
import type { AddressInfo } from "node:net";
import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  gatewayConfig,
  request,
  startTestGateway,
  startUpstream,
  type TestGateway,
  type Upstream,
} from "../support/gateway.ts";

interface OtlpSpan {
  traceId: string;
  spanId: string;
  parentSpanId?: string;
  kind: number;
  name: string;
  attributes: { key: string; value: Record<string, unknown> }[];
}

let receiver: http.Server;
const spans: OtlpSpan[] = [];
let app: Upstream;
let shadow: Upstream;
/** The trace headers of each copy the mirror received. */
const mirrored: { traceparent?: string; tracestate?: string }[] = [];
let gw: TestGateway;

beforeAll(async () => {
  receiver = http.createServer((req, res) => {
    let body = "";
    req.on("data", (c: Buffer) => (body += c.toString()));
    req.on("end", () => {
      const doc = JSON.parse(body) as { resourceSpans: { scopeSpans: { spans: OtlpSpan[] }[] }[] };
      for (const rs of doc.resourceSpans) for (const ss of rs.scopeSpans) spans.push(...ss.spans);
      res.writeHead(200, { "content-type": "application/json" });
      res.end("{}");
    });
  });
  await new Promise<void>((r) => receiver.listen(0, "127.0.0.1", r));
  const otlp = `http://127.0.0.1:${(receiver.address() as AddressInfo).port}`;
  app = await startUpstream((req, res) => {
    res.writeHead(200, { "content-type": "text/plain" });
    res.end(String(req.headers.traceparent ?? ""));
  });
  shadow = await startUpstream((req, res) => {
    const h = req.headers;
    mirrored.push({
      ...(typeof h.traceparent === "string" ? { traceparent: h.traceparent } : {}),
      ...(typeof h.tracestate === "string" ? { tracestate: h.tracestate } : {}),
    });
    res.writeHead(200);
    res.end();
  });
  const config = gatewayConfig(
    [
      {
        name: "traced",
        match: { path: "/t/{id}" },
        to: "app",
        public: true,
        rateLimit: { requests: 1000, per: "1s" },
      },
      {
        name: "mirrored",
        match: { path: "/m" },
        to: "app",
        mirror: { service: "shadow", percent: 100 },
        public: true,
      },
    ],
    { app, shadow },
  );
  gw = await startTestGateway({
    ...config,
    telemetry: { ...config.telemetry, tracing: { enabled: true, sampling: 1, otlpEndpoint: otlp } },
  } as typeof config);
});

afterAll(async () => {
  await gw.drain();
  await app.close();
  await shadow.close();
  receiver.close();
});

async function waitForSpans(n: number): Promise<void> {
  for (let i = 0; i < 60 && spans.length < n; i++) await sleep(100);
}

describe("tracing", () => {
  it("exports_a_server_and_a_client_span_and_propagates_the_client_context", async () => {
    const r = await request(`${gw.url}/t/42`);
    const upstreamTraceparent = r.body;
    expect(upstreamTraceparent).toMatch(/^00-[0-9a-f]{32}-[0-9a-f]{16}-01$/);
    await waitForSpans(2);
    const [, traceId, parentId] = upstreamTraceparent.split("-");
    const server = spans.find((s) => s.kind === 2 && s.traceId === traceId)!;
    const client = spans.find((s) => s.kind === 3 && s.traceId === traceId)!;
    expect(server).toBeDefined();
    expect(client.spanId).toBe(parentId);
    expect(client.parentSpanId).toBe(server.spanId);
    expect(server.name).toBe("GET /t/{id}");
    const attrs = Object.fromEntries(server.attributes.map((a) => [a.key, Object.values(a.value)[0]]));
    expect(attrs).toMatchObject({
      "http.request.method": "GET",
      "url.path": "/t/42",
      "meshgate.route": "traced",
      "http.response.status_code": "200", // int64 is a string in OTLP JSON
    });
  });

  it("continues_an_incoming_trace", async () => {
    const incoming = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    const r = await request(`${gw.url}/t/7`, { headers: { traceparent: incoming } });
    expect(r.body.split("-")[1]).toBe("4bf92f3577b34da6a3ce929d0e0e4736");
    await waitForSpans(4);
    const server = spans.find((s) => s.kind === 2 && s.traceId === "4bf92f3577b34da6a3ce929d0e0e4736")!;
    expect(server.parentSpanId).toBe("00f067aa0ba902b7");
  });

  it("propagates_the_trace_to_a_mirror_copy_under_a_client_span_of_the_gateway", async () => {
    // A mirrored copy is an upstream request like the primary one: its own CLIENT span under the request's
    // server span, whose context (never the caller's headers as received) goes with the copy — for a new
    // trace and for an incoming one.
    const cases: Record<string, string>[] = [
      {},
      {
        traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        tracestate: "congo=t61rcWkgMzE",
      },
    ];
    const copies: { traceId: string; tracestate: string | undefined; copy: (typeof mirrored)[number] }[] = [];
    for (const headers of cases) {
      mirrored.length = 0;
      const r = await request(`${gw.url}/m`, { headers });
      for (let i = 0; i < 50 && mirrored.length === 0; i++) await sleep(20);
      expect(mirrored).toHaveLength(1);
      copies.push({ traceId: r.body.split("-")[1]!, tracestate: headers.tracestate, copy: mirrored[0]! });
    }
    for (const { traceId, tracestate, copy } of copies) {
      expect(copy.traceparent).toMatch(new RegExp(`^00-${traceId}-[0-9a-f]{16}-01$`));
      expect(copy.tracestate).toBe(tracestate);
    }
    const ids = copies.map((c) => c.copy.traceparent!.split("-")[2]);
    for (let i = 0; i < 60 && !ids.every((id) => spans.some((s) => s.spanId === id)); i++) await sleep(100);
    copies.forEach(({ traceId }, i) => {
      const client = spans.find((s) => s.spanId === ids[i]);
      expect(client?.kind).toBe(3);
      expect(client?.parentSpanId).toBe(spans.find((s) => s.kind === 2 && s.traceId === traceId)?.spanId);
    });
  });
});
