/**
 * The written conventions against what a running gateway emits: its access-log lines follow the access-log
 * schema (ACCESS_LOG_FIELDS), its spans carry the attributes the span table says (SPAN_ATTRIBUTES), and
 * the metric catalog follows the Prometheus naming rules or documents how it deviates.
 */
import http from "node:http";
import type { AddressInfo } from "node:net";
import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  ACCESS_LOG_FIELDS,
  LABELS,
  METRICS,
  METRIC_PREFIX,
  SPAN_ATTRIBUTES,
} from "../../components/observability/index.ts";
import {
  gatewayConfig,
  request,
  startTestGateway,
  startUpstream,
  type TestGateway,
  type Upstream,
} from "../support/gateway.ts";

interface OtlpSpan {
  kind: number;
  name: string;
  attributes: { key: string; value: Record<string, unknown> }[];
}

const SECRET = "s3cr3t-token-never-logged";
let receiver: http.Server;
const spans: OtlpSpan[] = [];
let app: Upstream;
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
    res.writeHead(req.url?.startsWith("/items/0") ? 503 : 200, { "content-type": "application/json" });
    res.end("{}");
  });
  const config = gatewayConfig(
    [
      {
        name: "items",
        match: { path: "/items/{id}" },
        to: "app",
        public: true,
        rateLimit: { requests: 1000, per: "1s" },
        retries: { attempts: 1 },
      },
    ],
    { app },
  );
  gw = await startTestGateway({
    ...config,
    telemetry: { ...config.telemetry, tracing: { enabled: true, sampling: 1, otlpEndpoint: otlp } },
  } as typeof config);
  await request(`${gw.url}/items/42?token=${SECRET}`, { headers: { authorization: `Bearer ${SECRET}` } });
  await request(`${gw.url}/items/0`); // 503, retried once
  await request(`${gw.url}/nowhere`);
  for (let i = 0; i < 60 && spans.length < 4; i++) await sleep(100);
});

afterAll(async () => {
  await gw.drain();
  await app.close();
  receiver.close();
});

describe("the access-log schema", () => {
  it("describes_every_field_of_the_gateways_access_lines_with_its_type", () => {
    const lines = gw.logs.filter((l) => l.event === "access");
    expect(lines).toHaveLength(3);
    const fields = new Map(ACCESS_LOG_FIELDS.filter((f) => f.gateway !== "no").map((f) => [f.name, f]));
    for (const line of lines) {
      for (const [key, value] of Object.entries(line)) {
        const f = fields.get(key);
        expect(f, `access-log field ${key} is not in the schema`).toBeDefined();
        expect(typeof value, key).toBe(f!.type);
      }
      for (const f of fields.values())
        if (f.gateway === "always") expect(line, f.name).toHaveProperty(f.name);
    }
    expect(lines.map((l) => [l.route, l.status])).toEqual([
      ["items", 200],
      ["items", 503],
      ["none", 404],
    ]);
  });

  it("never_logs_the_query_or_credentials", () => {
    expect(gw.rawLog()).not.toContain(SECRET);
  });
});

describe("the span conventions", () => {
  /** Where the table says the gateway sets an attribute: server span, client span, both, neither. */
  const kinds = (text: string) => ({
    server: text.includes("both") || text.startsWith("server"),
    client: text.includes("both") || text.includes("client"),
  });
  const conditional = (semconv: string) => /conditionally|on a resend/.test(semconv);

  it("lists_every_attribute_the_gateways_spans_carry_on_their_kind", () => {
    expect(spans.length).toBeGreaterThanOrEqual(4);
    const table = new Map(SPAN_ATTRIBUTES.map((a) => [a.name, a]));
    for (const span of spans) {
      const kind = span.kind === 2 ? "server" : span.kind === 3 ? "client" : "other";
      expect(kind).not.toBe("other");
      for (const { key } of span.attributes) {
        const a = table.get(key);
        expect(a, `span attribute ${key} is not in the conventions`).toBeDefined();
        expect(kinds(a!.gateway)[kind as "server" | "client"], `${key} on a ${kind} span`).toBe(true);
      }
    }
  });

  it("sets_every_unconditional_attribute_the_table_promises", () => {
    const routed = spans.filter((s) => s.kind === 2 && s.name === "GET /items/{id}");
    const clients = spans.filter((s) => s.kind === 3);
    expect(routed.length).toBeGreaterThanOrEqual(2);
    expect(clients.length).toBeGreaterThanOrEqual(2);
    for (const a of SPAN_ATTRIBUTES) {
      if (conditional(a.semconv) || a.gateway === "not set") continue;
      const k = kinds(a.gateway);
      if (k.server)
        for (const s of routed)
          expect(
            s.attributes.map((x) => x.key),
            `${a.name} (server)`,
          ).toContain(a.name);
      if (k.client)
        for (const s of clients)
          expect(
            s.attributes.map((x) => x.key),
            `${a.name} (client)`,
          ).toContain(a.name);
    }
    // The retried request's client span says so.
    expect(clients.some((s) => s.attributes.some((x) => x.key === "http.request.resend_count"))).toBe(true);
  });
});

describe("the metric naming rules", () => {
  const UNIT_SUFFIXES = ["_seconds", "_bytes", "_total", "_info", "_ratio"];

  it("hold_for_every_metric_or_the_catalog_names_the_deviation", () => {
    for (const m of METRICS) {
      const breaks: string[] = [];
      if (!m.name.startsWith(METRIC_PREFIX)) breaks.push("no meshgate_ prefix");
      if (!/^[a-z][a-z0-9_]*$/.test(m.name)) breaks.push("not snake_case");
      if (m.type === "counter" && !m.name.endsWith("_total")) breaks.push("a counter without _total");
      if (m.type !== "counter" && m.name.endsWith("_total")) breaks.push("_total on a non-counter");
      if (m.unit === "seconds" && !/_seconds(_total)?$/.test(m.name)) breaks.push("seconds without _seconds");
      if (m.unit === "bytes" && !/_bytes(_total)?$/.test(m.name)) breaks.push("bytes without _bytes");
      if (m.unit === "info" && !m.name.endsWith("_info")) breaks.push("an info metric without _info");
      if (/_(ms|milliseconds|kb|mb)(_|$)/.test(m.name)) breaks.push("a non-base unit");
      if (m.name.startsWith(`${METRIC_PREFIX}process_`))
        breaks.push("process metrics are unprefixed by convention");
      if (
        m.unit === "seconds" &&
        m.type === "gauge" &&
        !m.name.endsWith("_timestamp_seconds") &&
        m.name.includes("expiry")
      )
        breaks.push("a time-until gauge instead of a timestamp");
      for (const labels of Object.values(m.labels))
        for (const l of labels!)
          if (!LABELS.some((x) => x.name === l)) breaks.push(`label ${l} is not in the vocabulary`);
      if (breaks.length > 0) expect(m.deviation, `${m.name}: ${breaks.join(", ")}`).toBeDefined();
      expect(
        UNIT_SUFFIXES.some((s) => m.name.endsWith(s)) || m.type === "gauge",
        `${m.name} has a unit suffix`,
      ).toBe(true);
    }
  });
});
