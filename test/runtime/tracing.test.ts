/** Tracing: W3C Trace Context, parent-based ratio sampling, spans, and OTLP/HTTP JSON export to a real receiver. */
import http from "node:http";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import {
  MAX_ATTRIBUTE_LENGTH,
  NOOP_SPAN,
  NonRecordingSpan,
  Span,
  SpanKind,
  SpanStatusCode,
  Tracer,
  createTracer,
  encodeSpan,
  formatTraceparent,
  newSpanId,
  newTraceId,
  parseTraceparent,
  sanitizeTracestate,
  shouldSample,
  traceIdRatioSampled,
  type SpanDropReason,
  type TraceContext,
} from "../../runtime/telemetry/tracing.ts";

const T = "0af7651916cd43dd8448eb211c80319c";
const P = "b7ad6b7169203331";

// ---------------------------------------------------------------------------------------------------------
// A real OTLP/HTTP receiver.

interface OtlpValue {
  stringValue?: string;
  intValue?: string;
  doubleValue?: number | string;
  boolValue?: boolean;
}
interface OtlpAttribute {
  key: string;
  value: OtlpValue;
}
interface OtlpSpan {
  traceId: string;
  spanId: string;
  parentSpanId?: string;
  traceState?: string;
  name: string;
  kind: number;
  startTimeUnixNano: string;
  endTimeUnixNano: string;
  attributes: OtlpAttribute[];
  events?: { timeUnixNano: string; name: string; attributes: OtlpAttribute[] }[];
  status: { code: number; message?: string };
}
interface OtlpRequest {
  resourceSpans: {
    resource: { attributes: OtlpAttribute[] };
    scopeSpans: { scope: { name: string }; spans: OtlpSpan[] }[];
  }[];
}
interface Received {
  method: string | undefined;
  path: string | undefined;
  contentType: string | undefined;
  body: OtlpRequest;
}
interface Receiver {
  url: string;
  requests: Received[];
  close(): Promise<void>;
}

/** Answers the n-th request (1-based) with a status, or never ("hang"). */
async function startReceiver(answer: (n: number) => number | "hang" = () => 200): Promise<Receiver> {
  const requests: Received[] = [];
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      requests.push({
        method: req.method,
        path: req.url,
        contentType: req.headers["content-type"],
        body: JSON.parse(Buffer.concat(chunks).toString("utf8")) as OtlpRequest,
      });
      const how = answer(requests.length);
      if (how === "hang") return;
      res.writeHead(how, { "content-type": "application/json" });
      res.end("{}");
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    requests,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/** A port nothing listens on: bound, then released. */
async function closedPort(): Promise<number> {
  const server = http.createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

async function until(what: string, check: () => boolean, timeoutMs = 3000): Promise<void> {
  const start = Date.now();
  while (!check()) {
    if (Date.now() - start > timeoutMs) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

function attrs(list: readonly OtlpAttribute[]): Record<string, OtlpValue> {
  return Object.fromEntries(list.map((a) => [a.key, a.value]));
}

function spansOf(rx: Receiver): OtlpSpan[] {
  return rx.requests.flatMap((r) =>
    r.body.resourceSpans.flatMap((rs) => rs.scopeSpans.flatMap((s) => s.spans)),
  );
}

const SERVER_INIT = { method: "GET", path: "/orders/42" } as const;
const CLIENT_INIT = { method: "GET", serverAddress: "orders.shop.svc", serverPort: 8443 } as const;

// ---------------------------------------------------------------------------------------------------------

describe("W3C trace context", () => {
  const future = (version: string, rest = "") => `${version}-${T}-${P}-01${rest}`;
  const rows: [string, string | readonly string[] | undefined, TraceContext | null][] = [
    ["spec example, sampled", `00-${T}-${P}-01`, { traceId: T, parentId: P, flags: 1 }],
    [
      "spec example 2, sampled",
      "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
      { traceId: "4bf92f3577b34da6a3ce929d0e0e4736", parentId: "00f067aa0ba902b7", flags: 1 },
    ],
    ["spec example, not sampled", `00-${T}-${P}-00`, { traceId: T, parentId: P, flags: 0 }],
    ["unknown flag bits are parsed", `00-${T}-${P}-ff`, { traceId: T, parentId: P, flags: 0xff }],
    ["future version, 55 chars", future("01"), { traceId: T, parentId: P, flags: 1 }],
    [
      "future version, more fields",
      future("cc", "-what-the-future-will-be-like"),
      { traceId: T, parentId: P, flags: 1 },
    ],
    ["future version fe, trailing dash", future("fe", "-"), { traceId: T, parentId: P, flags: 1 }],
    ["one header line in an array", [`00-${T}-${P}-01`], { traceId: T, parentId: P, flags: 1 }],
    ["absent", undefined, null],
    ["empty", "", null],
    ["version ff", future("ff"), null],
    ["version 00 with an extra field", `00-${T}-${P}-01-extra`, null],
    ["version 00 with a trailing dash", `00-${T}-${P}-01-`, null],
    ["version 00 with trailing space", `00-${T}-${P}-01 `, null],
    ["future version: no dash after flags", future("01", "x"), null],
    ["future version shorter than 55", `01-${T}-${P}-1`, null],
    ["upper-case trace id", `00-${T.toUpperCase()}-${P}-01`, null],
    ["upper-case parent id", `00-${T}-${P.toUpperCase()}-01`, null],
    ["upper-case flags", `00-${T}-${P}-0A`, null],
    ["upper-case version", `0A-${T}-${P}-01`, null],
    ["all-zero trace id", `00-${"0".repeat(32)}-${P}-01`, null],
    ["all-zero parent id", `00-${T}-${"0".repeat(16)}-01`, null],
    ["trace id of 31 digits", `00-${T.slice(1)}-${P}-01x`, null],
    ["parent id of 15 digits", `00-${T}-${P.slice(1)}-01x`, null],
    ["non-hex in trace id", `00-${T.slice(0, 31)}g-${P}-01`, null],
    ["non-hex flags", `00-${T}-${P}-0g`, null],
    ["non-hex version", `0g-${T}-${P}-01`, null],
    ["underscores for dashes", `00_${T}_${P}_01`, null],
    ["missing flags", `00-${T}-${P}`, null],
    ["two headers joined", `00-${T}-${P}-01, 00-${T}-${P}-00`, null],
    ["two header lines", [`00-${T}-${P}-01`, `00-${T}-${P}-00`], null],
  ];

  it.each(rows)("parses_traceparent_strictly: %s", (_name, header, expected) => {
    expect(parseTraceparent(header)).toEqual(expected);
  });

  it("formats_a_version_00_traceparent_that_parses_back_keeping_only_the_sampled_flag", () => {
    expect(formatTraceparent({ traceId: T, parentId: P, flags: 1 })).toBe(`00-${T}-${P}-01`);
    expect(formatTraceparent({ traceId: T, parentId: P, flags: 0xfe })).toBe(`00-${T}-${P}-00`);
    const back = parseTraceparent(formatTraceparent({ traceId: T, parentId: P, flags: 0xff }));
    expect(back).toEqual({ traceId: T, parentId: P, flags: 1 });
  });

  const states: [string, string | readonly string[] | undefined, string | undefined][] = [
    ["one member", "congo=t61rcWkgMzE", "congo=t61rcWkgMzE"],
    [
      "two members, unchanged",
      "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE",
      "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE",
    ],
    ["OWS and an empty member", "rojo=1 , ,\tcongo=2", "rojo=1 , ,\tcongo=2"],
    ["multi-tenant key", "tenant@vendor=x", "tenant@vendor=x"],
    ["header lines joined", ["a=1", "b=2"], "a=1,b=2"],
    ["32 members", Array.from({ length: 32 }, (_, i) => `k${i}=v`).join(","), "32"],
    ["absent", undefined, undefined],
    ["empty", "", undefined],
    ["33 members", Array.from({ length: 33 }, (_, i) => `k${i}=v`).join(","), undefined],
    ["over 512 characters", `a=${"x".repeat(255)},b=${"y".repeat(255)}`, undefined],
    ["duplicated key", "a=1,a=2", undefined],
    ["upper-case key", "Congo=1", undefined],
    ["member without =", "a=1,b", undefined],
    ["= in a value", "a=x=y", undefined],
    // U+00A0 is whitespace to String.prototype.trim, not to the format (OWS is space and tab).
    ["a no-break space after a member", "a=1\u00a0", undefined],
    ["a no-break space before a member", "a=1,\u00a0b=2", undefined],
  ];

  it.each(states)("passes_tracestate_through_unchanged_only_when_valid: %s", (_name, header, expected) => {
    const out = sanitizeTracestate(header);
    if (expected === "32") expect(out).toBe(header);
    else expect(out).toBe(expected);
  });

  it("generates_non_zero_lower_case_hex_ids_of_16_and_8_bytes_without_collisions", () => {
    const traces = new Set<string>();
    const spans = new Set<string>();
    for (let i = 0; i < 10_000; i++) {
      traces.add(newTraceId());
      spans.add(newSpanId());
    }
    expect(traces.size).toBe(10_000);
    expect(spans.size).toBe(10_000);
    for (const id of traces) expect(id).toMatch(/^[0-9a-f]{32}$/);
    for (const id of spans) expect(id).toMatch(/^[0-9a-f]{16}$/);
  });
});

describe("tracer: context and sampling", () => {
  let rx: Receiver;
  beforeAll(async () => {
    rx = await startReceiver();
  });
  afterAll(async () => {
    await rx.close();
  });

  it("child_context_keeps_the_trace_id_and_changes_the_parent_id", async () => {
    const tracer = new Tracer({ serviceName: "gateway", sampling: 0, otlpEndpoint: rx.url });
    const server = tracer.startServerSpan(`00-${T}-${P}-01`, "congo=1", SERVER_INIT);
    expect(server).toBeInstanceOf(Span);
    expect((server as Span).parentSpanId).toBe(P);
    const out = parseTraceparent(server.traceparent())!;
    expect(out).toEqual({ traceId: T, parentId: server.spanId, flags: 1 });
    expect(out.parentId).not.toBe(P);
    expect(server.tracestate()).toBe("congo=1");

    const client = tracer.startClientSpan(server, CLIENT_INIT);
    expect((client as Span).parentSpanId).toBe(server.spanId);
    const upstream = parseTraceparent(client.traceparent())!;
    expect(upstream.traceId).toBe(T);
    expect(upstream.parentId).toBe(client.spanId);
    expect(new Set([P, server.spanId, client.spanId]).size).toBe(3);
    expect(client.tracestate()).toBe("congo=1");
    await tracer.shutdown();
  });

  it("an_invalid_traceparent_starts_a_new_trace_and_its_tracestate_is_ignored", async () => {
    const tracer = new Tracer({ serviceName: "gateway", sampling: 1, otlpEndpoint: rx.url });
    const span = tracer.startServerSpan(`00-${T.toUpperCase()}-${P}-01`, "congo=1", SERVER_INIT) as Span;
    expect(span.traceId).not.toBe(T.toUpperCase());
    expect(span.traceId).toMatch(/^[0-9a-f]{32}$/);
    expect(span.parentSpanId).toBe("");
    expect(span.tracestate()).toBeUndefined();
    await tracer.shutdown();
  });

  it("sampling_is_parent_based_a_sampled_parent_records_even_at_ratio_0", async () => {
    const tracer = new Tracer({ serviceName: "gateway", sampling: 0, otlpEndpoint: rx.url });
    expect(tracer.startServerSpan(`00-${T}-${P}-01`, undefined, SERVER_INIT).recording).toBe(true);
    expect(shouldSample({ traceId: T, parentId: P, flags: 1 }, T, 0)).toBe(true);
    await tracer.shutdown();
  });

  it("sampling_is_parent_based_an_unsampled_parent_does_not_record_at_ratio_1_but_propagates_its_trace", async () => {
    const tracer = new Tracer({ serviceName: "gateway", sampling: 1, otlpEndpoint: rx.url });
    const span = tracer.startServerSpan(`00-${T}-${P}-00`, "congo=1", SERVER_INIT);
    expect(span).toBeInstanceOf(NonRecordingSpan);
    expect(span.recording).toBe(false);
    expect(parseTraceparent(span.traceparent())).toEqual({ traceId: T, parentId: span.spanId, flags: 0 });
    expect(span.spanId).not.toBe(P);
    expect(span.tracestate()).toBe("congo=1");
    // Client spans of an unsampled span are the span itself: nothing more is allocated.
    expect(tracer.startClientSpan(span, CLIENT_INIT)).toBe(span);
    span.end({ statusCode: 200 });
    expect(shouldSample({ traceId: T, parentId: P, flags: 0 }, T, 1)).toBe(false);
    await tracer.flush();
    expect(tracer.stats().exported).toBe(0);
    await tracer.shutdown();
  });

  it.each([
    [0, 0, 0],
    [1, 10_000, 10_000],
    [0.5, 4_800, 5_200],
  ])("root_sampling_at_ratio_%s_samples_between_%i_and_%i_of_10k_trace_ids", async (ratio, min, max) => {
    const tracer = new Tracer({ serviceName: "gateway", sampling: ratio, otlpEndpoint: rx.url });
    const other = new Tracer({ serviceName: "sidecar", sampling: ratio, otlpEndpoint: rx.url });
    let sampled = 0;
    for (let i = 0; i < 10_000; i++) {
      const span = tracer.startServerSpan(undefined, undefined, SERVER_INIT);
      if (span.recording) sampled++;
      // Deterministic: the trace id alone decides, the same way on every hop.
      expect(traceIdRatioSampled(span.traceId, ratio)).toBe(span.recording);
      expect(shouldSample(null, span.traceId, ratio)).toBe(span.recording);
      const rootOnOtherHop = other.startServerSpan(undefined, undefined, SERVER_INIT);
      expect(rootOnOtherHop.recording).toBe(traceIdRatioSampled(rootOnOtherHop.traceId, ratio));
    }
    expect(sampled).toBeGreaterThanOrEqual(min);
    expect(sampled).toBeLessThanOrEqual(max);
    await Promise.all([tracer.shutdown(), other.shutdown()]);
  });

  it("root_sampling_compares_the_low_56_bits_of_the_trace_id_against_ratio_times_2_pow_56", () => {
    const id = (low56: string) => `0123456789abcdef01${low56}`;
    expect(traceIdRatioSampled(id("7fffffffffffff"), 0.5)).toBe(true);
    expect(traceIdRatioSampled(id("80000000000000"), 0.5)).toBe(false);
    expect(traceIdRatioSampled(id("00000000000000"), 0)).toBe(false);
    expect(traceIdRatioSampled(id("00000000000000"), 1e-9)).toBe(true);
    expect(traceIdRatioSampled(id("ffffffffffffff"), 1)).toBe(true);
    expect(traceIdRatioSampled(id("ffffffffffffff"), 0.999999)).toBe(false);
    // The high bits do not matter.
    expect(traceIdRatioSampled(`ffffffffffffffffff${"7fffffffffffff"}`, 0.5)).toBe(true);
    // Monotonic: sampled at a ratio means sampled at every higher ratio.
    for (let i = 0; i < 2_000; i++) {
      const t = newTraceId();
      if (traceIdRatioSampled(t, 0.25)) expect(traceIdRatioSampled(t, 0.5)).toBe(true);
    }
    expect(() => traceIdRatioSampled(T, 1.5)).toThrow(RangeError);
  });
});

describe("tracer: disabled and not recording", () => {
  it("disabled_tracing_allocates_no_spans_and_returns_the_shared_noop", async () => {
    const tracer = new Tracer({
      serviceName: "gateway",
      enabled: false,
      sampling: 1,
      otlpEndpoint: "http://127.0.0.1:9",
    });
    const fromConfig = createTracer({
      serviceName: "gateway",
      tracing: { enabled: false, sampling: 1, otlpEndpoint: null },
    });
    for (const t of [tracer, fromConfig]) {
      const span = t.startServerSpan(`00-${T}-${P}-01`, "congo=1", SERVER_INIT);
      expect(span).toBe(NOOP_SPAN);
      expect(t.startServerSpan(undefined, undefined, SERVER_INIT)).toBe(NOOP_SPAN);
      expect(t.startClientSpan(span, CLIENT_INIT)).toBe(NOOP_SPAN);
      // undefined: the proxy forwards the caller's trace headers untouched.
      expect(span.traceparent()).toBeUndefined();
      expect(span.tracestate()).toBeUndefined();
      span.setAttribute("http.route", "/x");
      span.addEvent("retry");
      span.end({ statusCode: 500, error: new Error("boom") });
      expect(t.exportUrl).toBeNull();
      await t.flush();
      await t.shutdown();
      expect(t.stats()).toEqual({
        queued: 0,
        exported: 0,
        droppedQueueFull: 0,
        droppedExportFailed: 0,
        droppedShutdown: 0,
        failedRequests: 0,
        failedBatches: 0,
        retries: 0,
      });
    }
    expect(Object.isFrozen(NOOP_SPAN)).toBe(true);
  });

  it("without_an_otlp_endpoint_traces_propagate_but_nothing_records", async () => {
    const tracer = createTracer({
      serviceName: "gateway",
      tracing: { enabled: true, sampling: 1, otlpEndpoint: null },
    });
    const span = tracer.startServerSpan(`00-${T}-${P}-01`, undefined, SERVER_INIT);
    expect(span).toBeInstanceOf(NonRecordingSpan);
    expect(parseTraceparent(span.traceparent())?.traceId).toBe(T);
    await tracer.shutdown();
  });

  it.each([
    ["keeps_a_sampled_callers_decision_when_this_hop_does_not_export", `00-${T}-${P}-01`, 0, "01"],
    ["keeps_an_unsampled_callers_decision", `00-${T}-${P}-00`, 1, "00"],
    ["propagates_its_own_sampled_root_decision_without_an_exporter", undefined, 1, "01"],
    ["propagates_its_own_unsampled_root_decision", undefined, 0, "00"],
  ])("%s", async (_claim, incoming, sampling, flags) => {
    // A hop without an OTLP endpoint records nothing, but a downstream hop that exports must see the
    // trace's sampling decision, not a cleared flag.
    const tracer = createTracer({
      serviceName: "gateway",
      tracing: { enabled: true, sampling, otlpEndpoint: null },
    });
    const server = tracer.startServerSpan(incoming, undefined, SERVER_INIT);
    const upstream = tracer.startClientSpan(server, CLIENT_INIT);
    expect(parseTraceparent(upstream.traceparent())?.flags).toBe(Number.parseInt(flags, 16));
    await tracer.shutdown();
  });

  it("refuses_a_bad_ratio_or_endpoint_at_construction", () => {
    expect(() => new Tracer({ serviceName: "s", sampling: -0.1, otlpEndpoint: null })).toThrow(RangeError);
    expect(() => new Tracer({ serviceName: "s", sampling: NaN, otlpEndpoint: null })).toThrow(RangeError);
    expect(() => new Tracer({ serviceName: "s", sampling: 1, otlpEndpoint: "collector:4318" })).toThrow(
      /http/,
    );
    expect(() => new Tracer({ serviceName: "s", sampling: 1, otlpEndpoint: "nope" })).toThrow(/not a URL/);
    expect(() => new Tracer({ serviceName: "s", sampling: 1, otlpEndpoint: null, maxQueue: 0 })).toThrow(
      RangeError,
    );
    const t = new Tracer({ serviceName: "s", sampling: 1, otlpEndpoint: "http://otel:4318/" });
    expect(t.exportUrl).toBe("http://otel:4318/v1/traces");
    const u = new Tracer({
      serviceName: "s",
      sampling: 1,
      otlpEndpoint: "http://otel:4318/prefix/v1/traces",
    });
    expect(u.exportUrl).toBe("http://otel:4318/prefix/v1/traces");
    void t.shutdown();
    void u.shutdown();
  });
});

describe("spans", () => {
  let rx: Receiver;
  let tracer: Tracer;
  beforeAll(async () => {
    rx = await startReceiver();
    tracer = new Tracer({
      serviceName: "gateway",
      sampling: 1,
      otlpEndpoint: rx.url,
      flushIntervalMs: 60_000,
    });
  });
  afterAll(async () => {
    await tracer.shutdown();
    await rx.close();
  });

  function ended(kind: "server" | "client", end: Parameters<Span["end"]>[0], method = "GET") {
    const server = tracer.startServerSpan(undefined, undefined, { method, path: "/p", route: "/p" });
    const span = kind === "server" ? server : tracer.startClientSpan(server, { ...CLIENT_INIT, method });
    span.end(end);
    return encodeSpan(span as Span) as unknown as OtlpSpan;
  }

  it("a_server_span_is_an_error_only_for_5xx_and_a_client_span_for_4xx_and_up", () => {
    const s404 = ended("server", { statusCode: 404 });
    expect(s404.status).toEqual({ code: SpanStatusCode.UNSET });
    expect(attrs(s404.attributes)["error.type"]).toBeUndefined();
    const s503 = ended("server", { statusCode: 503 });
    expect(s503.status).toEqual({ code: SpanStatusCode.ERROR });
    expect(attrs(s503.attributes)["error.type"]).toEqual({ stringValue: "503" });
    const c404 = ended("client", { statusCode: 404 });
    expect(c404.status).toEqual({ code: SpanStatusCode.ERROR });
    expect(attrs(c404.attributes)["error.type"]).toEqual({ stringValue: "404" });
    expect(ended("client", { statusCode: 200 }).status).toEqual({ code: SpanStatusCode.UNSET });
  });

  it("an_error_sets_status_error_with_its_message_and_error_type_from_its_code_or_name", () => {
    const refused = Object.assign(new Error("connect ECONNREFUSED 10.0.0.7:8443"), { code: "ECONNREFUSED" });
    const c = ended("client", { error: refused });
    expect(c.status).toEqual({ code: 2, message: "connect ECONNREFUSED 10.0.0.7:8443" });
    expect(attrs(c.attributes)["error.type"]).toEqual({ stringValue: "ECONNREFUSED" });
    const timeout = ended("client", { error: new DOMException("aborted", "TimeoutError") });
    expect(attrs(timeout.attributes)["error.type"]).toEqual({ stringValue: "TimeoutError" });
    const s = ended("server", {
      statusCode: 504,
      error: new Error("upstream timed out"),
      errorType: "timeout",
    });
    expect(s.status).toEqual({ code: 2, message: "upstream timed out" });
    expect(attrs(s.attributes)["error.type"]).toEqual({ stringValue: "timeout" });
    expect(attrs(s.attributes)["http.response.status_code"]).toEqual({ intValue: "504" });
  });

  it("names_spans_by_method_and_route_and_maps_unknown_methods_to__OTHER", () => {
    expect(ended("server", {}).name).toBe("GET /p");
    expect(ended("client", {}).name).toBe("GET");
    const other = ended("server", {}, "PURGE");
    expect(other.name).toBe("HTTP /p");
    expect(attrs(other.attributes)["http.request.method"]).toEqual({ stringValue: "_OTHER" });
    expect(attrs(other.attributes)["http.request.method_original"]).toEqual({ stringValue: "PURGE" });
  });

  it("encodes_attribute_values_by_type_and_bounds_attributes_events_and_string_length", () => {
    const span = tracer.startServerSpan(undefined, undefined, SERVER_INIT) as Span;
    span.setAttribute("x.int", 7);
    span.setAttribute("x.double", 0.25);
    span.setAttribute("x.bool", true);
    span.setAttribute("x.inf", Infinity);
    span.setAttribute("x.long", "a".repeat(5000));
    for (let i = 0; i < 100; i++) span.setAttribute(`x.many.${i}`, i);
    for (let i = 0; i < 40; i++) span.addEvent("retry", { attempt: i });
    span.end();
    span.setAttribute("x.after.end", 1);
    const o = encodeSpan(span) as unknown as OtlpSpan & {
      droppedAttributesCount: number;
      droppedEventsCount: number;
    };
    const a = attrs(o.attributes);
    expect(a["x.int"]).toEqual({ intValue: "7" });
    expect(a["x.double"]).toEqual({ doubleValue: 0.25 });
    expect(a["x.bool"]).toEqual({ boolValue: true });
    expect(a["x.inf"]).toEqual({ doubleValue: "Infinity" });
    expect(a["x.long"]!.stringValue).toHaveLength(MAX_ATTRIBUTE_LENGTH);
    expect(a["x.after.end"]).toBeUndefined();
    expect(o.attributes).toHaveLength(64);
    expect(o.droppedAttributesCount).toBeGreaterThan(0);
    expect(o.events).toHaveLength(32);
    expect(o.events![0]).toEqual({
      timeUnixNano: expect.stringMatching(/^\d+$/),
      name: "retry",
      attributes: [{ key: "attempt", value: { intValue: "0" } }],
    });
    expect(o.droppedEventsCount).toBe(8);
  });
});

describe("OTLP/HTTP JSON export", () => {
  let rx: Receiver;
  beforeAll(async () => {
    rx = await startReceiver();
  });
  beforeEach(() => {
    rx.requests.length = 0;
  });
  afterAll(async () => {
    await rx.close();
  });

  it("exports_a_server_span_with_two_client_children_to_a_real_otlp_receiver", async () => {
    const tracer = new Tracer({
      serviceName: "shop-gateway",
      sampling: 0,
      otlpEndpoint: rx.url,
      resource: { "deployment.environment.name": "test", "service.name": "ignored" },
    });
    const wallBefore = BigInt(Date.now()) * 1_000_000n;
    const server = tracer.startServerSpan(`00-${T}-${P}-01`, "congo=t61rcWkgMzE", {
      method: "GET",
      path: "/orders/42",
      scheme: "https",
      route: "/orders/{id}",
      meshgateRoute: "get-order",
      serverAddress: "shop.example.com",
      serverPort: 443,
      peerAddress: "203.0.113.7",
      peerPort: 51234,
    });
    const first = tracer.startClientSpan(server, {
      ...CLIENT_INIT,
      upstream: "orders",
      peerAddress: "10.0.0.7",
    });
    first.end({
      error: Object.assign(new Error("connect ECONNREFUSED 10.0.0.7:8443"), { code: "ECONNREFUSED" }),
    });
    const second = tracer.startClientSpan(server, {
      ...CLIENT_INIT,
      upstream: "orders",
      peerAddress: "10.0.0.8",
      resendCount: 1,
    });
    second.addEvent("response.headers");
    second.end({ statusCode: 200 });
    server.end({ statusCode: 200 });
    const wallAfter = BigInt(Date.now() + 1) * 1_000_000n;
    await tracer.flush();

    expect(rx.requests).toHaveLength(1);
    const req = rx.requests[0]!;
    expect(req.method).toBe("POST");
    expect(req.path).toBe("/v1/traces");
    expect(req.contentType).toBe("application/json");
    expect(req.body.resourceSpans).toHaveLength(1);
    const rs = req.body.resourceSpans[0]!;
    expect(attrs(rs.resource.attributes)).toEqual({
      "service.name": { stringValue: "shop-gateway" },
      "deployment.environment.name": { stringValue: "test" },
    });
    expect(rs.scopeSpans).toHaveLength(1);
    expect(rs.scopeSpans[0]!.scope.name).toBe("meshgate");
    const spans = rs.scopeSpans[0]!.spans;
    expect(spans).toHaveLength(3);
    for (const s of spans) {
      expect(s.traceId).toBe(T);
      expect(s.spanId).toMatch(/^[0-9a-f]{16}$/);
      expect(s.traceState).toBe("congo=t61rcWkgMzE");
      expect(s.startTimeUnixNano).toMatch(/^\d+$/);
      expect(s.endTimeUnixNano).toMatch(/^\d+$/);
    }
    const srv = spans.find((s) => s.kind === SpanKind.SERVER)!;
    const [c1, c2] = spans.filter((s) => s.kind === SpanKind.CLIENT);
    expect(srv.spanId).toBe(server.spanId);
    expect(srv.parentSpanId).toBe(P);
    expect(c1!.spanId).toBe(first.spanId);
    expect(c2!.spanId).toBe(second.spanId);
    expect(c1!.parentSpanId).toBe(srv.spanId);
    expect(c2!.parentSpanId).toBe(srv.spanId);
    expect([srv.kind, c1!.kind, c2!.kind]).toEqual([2, 3, 3]);
    expect([srv.name, c1!.name, c2!.name]).toEqual(["GET /orders/{id}", "GET", "GET"]);

    expect(attrs(srv.attributes)).toEqual({
      "http.request.method": { stringValue: "GET" },
      "url.path": { stringValue: "/orders/42" },
      "url.scheme": { stringValue: "https" },
      "http.route": { stringValue: "/orders/{id}" },
      "meshgate.route": { stringValue: "get-order" },
      "server.address": { stringValue: "shop.example.com" },
      "server.port": { intValue: "443" },
      "network.peer.address": { stringValue: "203.0.113.7" },
      "network.peer.port": { intValue: "51234" },
      "http.response.status_code": { intValue: "200" },
    });
    expect(srv.status).toEqual({ code: 0 });
    expect(attrs(c1!.attributes)).toEqual({
      "http.request.method": { stringValue: "GET" },
      "server.address": { stringValue: "orders.shop.svc" },
      "server.port": { intValue: "8443" },
      "meshgate.upstream": { stringValue: "orders" },
      "network.peer.address": { stringValue: "10.0.0.7" },
      "error.type": { stringValue: "ECONNREFUSED" },
    });
    expect(c1!.status).toEqual({ code: 2, message: "connect ECONNREFUSED 10.0.0.7:8443" });
    expect(attrs(c2!.attributes)["http.request.resend_count"]).toEqual({ intValue: "1" });
    expect(attrs(c2!.attributes)["http.response.status_code"]).toEqual({ intValue: "200" });
    expect(c2!.status).toEqual({ code: 0 });
    expect(c2!.events!.map((e) => e.name)).toEqual(["response.headers"]);

    const times = [
      srv.startTimeUnixNano,
      c1!.startTimeUnixNano,
      c1!.endTimeUnixNano,
      c2!.startTimeUnixNano,
      c2!.events![0]!.timeUnixNano,
      c2!.endTimeUnixNano,
      srv.endTimeUnixNano,
    ].map(BigInt);
    for (let i = 1; i < times.length; i++) expect(times[i]! >= times[i - 1]!).toBe(true);
    expect(times[0]! >= wallBefore - 5_000_000n).toBe(true); // anchored to the wall clock
    expect(times[times.length - 1]! <= wallAfter + 5_000_000n).toBe(true);

    expect(tracer.stats()).toMatchObject({ exported: 3, queued: 0, failedBatches: 0 });
    await tracer.shutdown();
  });

  it("sends_a_full_batch_at_once_and_a_partial_one_after_the_flush_interval", async () => {
    const bySize = new Tracer({
      serviceName: "g",
      sampling: 1,
      otlpEndpoint: rx.url,
      maxBatch: 2,
      flushIntervalMs: 60_000,
    });
    for (let i = 0; i < 5; i++) bySize.startServerSpan(undefined, undefined, SERVER_INIT).end();
    await until("two full batches", () => rx.requests.length === 2);
    expect(bySize.stats().queued).toBe(1);
    await bySize.flush();
    expect(rx.requests.map((r) => r.body.resourceSpans[0]!.scopeSpans[0]!.spans.length)).toEqual([2, 2, 1]);
    await bySize.shutdown();

    rx.requests.length = 0;
    const byTime = new Tracer({ serviceName: "g", sampling: 1, otlpEndpoint: rx.url, flushIntervalMs: 50 });
    byTime.startServerSpan(undefined, undefined, SERVER_INIT).end();
    await until("the interval flush", () => rx.requests.length === 1);
    expect(spansOf(rx)).toHaveLength(1);
    await byTime.shutdown();
  });

  it("a_full_queue_drops_the_newest_span_and_counts_it_without_throwing", async () => {
    const drops: [number, SpanDropReason][] = [];
    const tracer = new Tracer({
      serviceName: "g",
      sampling: 1,
      otlpEndpoint: rx.url,
      maxQueue: 5,
      flushIntervalMs: 60_000,
      onDrop: (n, reason) => {
        drops.push([n, reason]);
        throw new Error("a broken metrics callback");
      },
    });
    const ids: string[] = [];
    for (let i = 0; i < 8; i++) {
      const span = tracer.startServerSpan(undefined, undefined, SERVER_INIT);
      ids.push(span.spanId);
      expect(() => span.end()).not.toThrow();
    }
    expect(tracer.stats()).toMatchObject({ queued: 5, droppedQueueFull: 3 });
    expect(drops).toEqual([
      [1, "queue_full"],
      [1, "queue_full"],
      [1, "queue_full"],
    ]);
    await tracer.shutdown();
    expect(spansOf(rx).map((s) => s.spanId)).toEqual(ids.slice(0, 5));
  });

  it("a_receiver_answering_500_gets_one_retry_then_the_batch_is_counted_as_failed_and_nothing_throws", async () => {
    let status = 500;
    const failing = await startReceiver(() => status);
    const drops: [number, SpanDropReason][] = [];
    const errors: string[] = [];
    const tracer = new Tracer({
      serviceName: "g",
      sampling: 1,
      otlpEndpoint: failing.url,
      retryDelayMs: 10,
      onDrop: (n, reason) => drops.push([n, reason]),
      onExportError: (err, n) => errors.push(`${n}: ${err.message}`),
    });
    for (let i = 0; i < 3; i++)
      tracer.startServerSpan(undefined, undefined, SERVER_INIT).end({ statusCode: 200 });
    await expect(tracer.flush()).resolves.toBeUndefined();
    expect(failing.requests).toHaveLength(2);
    expect(failing.requests[1]!.body).toEqual(failing.requests[0]!.body);
    expect(tracer.stats()).toMatchObject({
      exported: 0,
      retries: 1,
      failedRequests: 2,
      failedBatches: 1,
      droppedExportFailed: 3,
    });
    expect(drops).toEqual([[3, "export_failed"]]);
    expect(errors).toEqual([`3: OTLP export to ${failing.url}/v1/traces answered HTTP 500`]);

    // The exporter keeps working once the receiver recovers.
    status = 200;
    tracer.startServerSpan(undefined, undefined, SERVER_INIT).end();
    await tracer.flush();
    expect(failing.requests).toHaveLength(3);
    expect(tracer.stats().exported).toBe(1);
    await tracer.shutdown();
    await failing.close();
  });

  it("an_endpoint_s_credentials_appear_in_no_error_neither_a_refused_endpoint_s_nor_a_failed_export_s", async () => {
    // Basic-auth OTLP gateways take https://user:token@…; the errors reach the reload's answer and the log.
    // A token with an unencoded "/" is what makes the URL unparseable.
    for (const otlpEndpoint of ["https://123456:glc_ab/cd+ef=@otlp.example.com/otlp", "ftp://u:glc_ab@x/"])
      expect(() => new Tracer({ serviceName: "s", sampling: 1, otlpEndpoint })).toThrow(
        expect.objectContaining({ message: expect.not.stringContaining("glc_ab") }) as Error,
      );
    const failing = await startReceiver(() => 500);
    const errors: string[] = [];
    const tracer = new Tracer({
      serviceName: "g",
      sampling: 1,
      otlpEndpoint: failing.url.replace("http://", "http://123456:glc_ab@"),
      retryDelayMs: 10,
      onExportError: (err) => errors.push(err.message),
    });
    tracer.startServerSpan(undefined, undefined, SERVER_INIT).end({ statusCode: 200 });
    await tracer.flush();
    expect(errors).toEqual([`OTLP export to ${failing.url}/v1/traces answered HTTP 500`]);
    await tracer.shutdown();
    await failing.close();
  });

  it("a_receiver_answering_400_is_not_retried", async () => {
    const rejecting = await startReceiver(() => 400);
    const tracer = new Tracer({
      serviceName: "g",
      sampling: 1,
      otlpEndpoint: rejecting.url,
      retryDelayMs: 10,
    });
    tracer.startServerSpan(undefined, undefined, SERVER_INIT).end();
    await tracer.flush();
    expect(rejecting.requests).toHaveLength(1);
    expect(tracer.stats()).toMatchObject({ retries: 0, failedBatches: 1, droppedExportFailed: 1 });
    await tracer.shutdown();
    await rejecting.close();
  });

  it("a_receiver_that_is_down_connection_refused_is_retried_once_and_counted_without_throwing", async () => {
    const port = await closedPort();
    const errors: unknown[] = [];
    const tracer = new Tracer({
      serviceName: "g",
      sampling: 1,
      otlpEndpoint: `http://127.0.0.1:${port}`,
      retryDelayMs: 10,
      onExportError: (err) => errors.push(err),
    });
    const span = tracer.startServerSpan(undefined, undefined, SERVER_INIT);
    expect(() => span.end()).not.toThrow();
    await expect(tracer.flush()).resolves.toBeUndefined();
    expect(tracer.stats()).toMatchObject({
      retries: 1,
      failedRequests: 2,
      failedBatches: 1,
      droppedExportFailed: 1,
    });
    expect(errors).toHaveLength(1);
    expect((errors[0] as NodeJS.ErrnoException).code).toBe("ECONNREFUSED");
    await expect(tracer.shutdown()).resolves.toBeUndefined();
  });

  it("a_receiver_that_never_answers_times_out_per_request", async () => {
    const silent = await startReceiver(() => "hang");
    const errors: string[] = [];
    const tracer = new Tracer({
      serviceName: "g",
      sampling: 1,
      otlpEndpoint: silent.url,
      exportTimeoutMs: 100,
      retryDelayMs: 0,
      onExportError: (err) => errors.push(err.message),
    });
    tracer.startServerSpan(undefined, undefined, SERVER_INIT).end();
    const start = performance.now();
    await tracer.flush();
    expect(performance.now() - start).toBeLessThan(2_000);
    expect(silent.requests).toHaveLength(2);
    expect(errors).toEqual([`OTLP export to ${silent.url}/v1/traces timed out after 100 ms`]);
    await tracer.shutdown();
    await silent.close();
  });

  it("shutdown_flushes_within_its_deadline_then_drops_the_rest_and_late_spans_as_shutdown", async () => {
    const silent = await startReceiver(() => "hang");
    const drops: [number, SpanDropReason][] = [];
    const tracer = new Tracer({
      serviceName: "g",
      sampling: 1,
      otlpEndpoint: silent.url,
      exportTimeoutMs: 10_000,
      maxBatch: 1,
      onDrop: (n, reason) => drops.push([n, reason]),
    });
    tracer.startServerSpan(undefined, undefined, SERVER_INIT).end(); // sent, never answered
    tracer.startServerSpan(undefined, undefined, SERVER_INIT).end(); // still queued at the deadline
    const late = tracer.startServerSpan(undefined, undefined, SERVER_INIT);
    const start = performance.now();
    await tracer.shutdown(200);
    expect(performance.now() - start).toBeLessThan(1_500);
    late.end();
    await new Promise((r) => setTimeout(r, 100));
    expect(silent.requests).toHaveLength(1);
    expect(tracer.stats()).toMatchObject({
      exported: 0,
      droppedExportFailed: 1,
      droppedShutdown: 2,
      queued: 0,
    });
    expect(drops).toEqual([
      [1, "export_failed"],
      [1, "shutdown"],
      [1, "shutdown"],
    ]);
    // After shutdown, traces still propagate but nothing records.
    expect(tracer.startServerSpan(undefined, undefined, SERVER_INIT)).toBeInstanceOf(NonRecordingSpan);
    await silent.close();
  });

  it("shutdown_exports_what_is_queued_to_a_healthy_receiver", async () => {
    const tracer = new Tracer({
      serviceName: "g",
      sampling: 1,
      otlpEndpoint: rx.url,
      flushIntervalMs: 60_000,
    });
    for (let i = 0; i < 3; i++) tracer.startServerSpan(undefined, undefined, SERVER_INIT).end();
    await tracer.shutdown();
    expect(spansOf(rx)).toHaveLength(3);
    expect(tracer.stats()).toMatchObject({ exported: 3, droppedShutdown: 0, queued: 0 });
  });
});
