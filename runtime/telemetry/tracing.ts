/**
 * Distributed tracing for the gateway and the sidecar proxies, without the OpenTelemetry SDK: W3C Trace
 * Context propagation, parent-based ratio sampling, a minimal span model carrying the OpenTelemetry HTTP
 * semantic-convention attributes, and a batching OTLP/HTTP JSON exporter.
 *
 *   const tracer = createTracer(config.telemetry, { onDrop: (n, reason) => dropped.labels(reason).inc(n) });
 *   const span = tracer.startServerSpan(req.headers.traceparent, req.headers.tracestate, { method, path });
 *   span.setAttribute("http.route", "/orders/{id}");         // the span's name becomes "GET /orders/{id}"
 *   const attempt = tracer.startClientSpan(span, { method, serverAddress, serverPort, upstream: "orders" });
 *   const tp = attempt.traceparent();                          // undefined: forward the incoming headers as received
 *   attempt.end({ statusCode: 200 });                           // or { error } on a failure
 *   span.end({ statusCode: 200 });
 *   await tracer.shutdown();                                    // flushes, within a deadline
 *
 * Three kinds of span, one interface (`SpanLike`):
 * - tracing disabled: every call returns the shared `NOOP_SPAN`; nothing is allocated, nothing is parsed,
 *   and `traceparent()` is undefined so the proxy forwards the caller's trace headers untouched;
 * - enabled but not sampled (or no OTLP endpoint): a `NonRecordingSpan` (trace id, span id, tracestate) so
 *   the trace id and the "not sampled" decision still reach the next hop; client spans reuse it;
 * - sampled: a `Span`, queued for export when it ends.
 *
 * Never throws into the request path: exports run off the caller's stack, failures are counted (and
 * reported through `onDrop` / `onExportError`), callbacks that throw are ignored. Memory is bounded: at most
 * `maxQueue` ended spans wait, plus the one batch (≤ `maxBatch`) being sent; a span keeps ≤ 64 attributes,
 * ≤ 32 events and strings ≤ 1,024 characters.
 */
import { randomFillSync } from "node:crypto";
import http from "node:http";
import https from "node:https";
import { performance } from "node:perf_hooks";

// ---------------------------------------------------------------------------------------------------------
// W3C Trace Context (https://www.w3.org/TR/trace-context/).

/** A parsed `traceparent`: lower-case hex ids and the trace-flags byte. */
export interface TraceContext {
  readonly traceId: string;
  readonly parentId: string;
  readonly flags: number;
}

/** The `sampled` bit of trace-flags. */
export const FLAG_SAMPLED = 0x01;

const TRACEPARENT_HEAD = /^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}/;
const ZERO_TRACE_ID = "0".repeat(32);
const ZERO_SPAN_ID = "0".repeat(16);

/**
 * Parses a `traceparent` header, or returns null when it is absent or invalid (the caller then starts a
 * new trace and ignores `tracestate`). Version `00` must be exactly 55 characters; a higher version
 * (`01`–`fe`) must be at least 55, and anything after the first four fields must start with "-". Hex is
 * lower-case only; version `ff`, an all-zero trace id and an all-zero parent id are invalid. Several
 * header lines (an array, or values joined by ", ") are invalid.
 */
export function parseTraceparent(value: string | readonly string[] | undefined): TraceContext | null {
  if (typeof value !== "string") {
    if (value === undefined || value.length !== 1) return null;
    value = value[0]!;
  }
  const n = value.length;
  if (n < 55 || !TRACEPARENT_HEAD.test(value)) return null;
  const version = value.slice(0, 2);
  if (version === "ff") return null;
  if (version === "00" ? n !== 55 : n > 55 && value.charCodeAt(55) !== 0x2d /* - */) return null;
  const traceId = value.slice(3, 35);
  const parentId = value.slice(36, 52);
  if (traceId === ZERO_TRACE_ID || parentId === ZERO_SPAN_ID) return null;
  return { traceId, parentId, flags: parseInt(value.slice(53, 55), 16) };
}

/**
 * A version-00 `traceparent`. Only the sampled bit of `flags` is kept: the other bits are undefined in
 * version 00, which requires them to be sent as zero.
 */
export function formatTraceparent(ctx: TraceContext): string {
  return `00-${ctx.traceId}-${ctx.parentId}-${ctx.flags & FLAG_SAMPLED ? "01" : "00"}`;
}

const TRACESTATE_MAX_LENGTH = 512;
const OWS_AROUND = /^[ \t]+|[ \t]+$/g;
const TRACESTATE_MAX_MEMBERS = 32;
// key "=" value (W3C Trace Context §3.3.1): a simple key, or tenant@system; a value of printable ASCII
// without "," and "=", not ending in a space.
const TRACESTATE_MEMBER =
  /^(?:[a-z][a-z0-9_\-*/]{0,255}|[a-z0-9][a-z0-9_\-*/]{0,240}@[a-z][a-z0-9_\-*/]{0,13})=[\x20-\x2b\x2d-\x3c\x3e-\x7e]{0,255}[\x21-\x2b\x2d-\x3c\x3e-\x7e]$/;

/**
 * The `tracestate` to forward: the header as received (several lines joined by ","), or undefined when it
 * is absent, empty, longer than 512 characters, has more than 32 list members, a malformed member or a
 * duplicated key. Only meaningful next to a valid `traceparent`.
 */
export function sanitizeTracestate(value: string | readonly string[] | undefined): string | undefined {
  if (value === undefined) return undefined;
  const text = typeof value === "string" ? value : value.join(",");
  if (text.length === 0 || text.length > TRACESTATE_MAX_LENGTH) return undefined;
  const keys: string[] = [];
  for (const raw of text.split(",")) {
    // OWS is space and tab only: String.prototype.trim also strips U+00A0 (a Latin-1 byte a header may
    // carry), which passed a member the format refuses — and the header was forwarded as received.
    const member = raw.replace(OWS_AROUND, "");
    if (member === "") continue; // empty list members are allowed
    if (keys.length === TRACESTATE_MAX_MEMBERS || !TRACESTATE_MEMBER.test(member)) return undefined;
    const key = member.slice(0, member.indexOf("="));
    if (keys.includes(key)) return undefined;
    keys.push(key);
  }
  return keys.length === 0 ? undefined : text;
}

// Ids come from a pool refilled by one randomFillSync call per 4 KiB: 256 trace ids or 512 span ids.
const ID_POOL_SIZE = 4096;
const idPool = Buffer.allocUnsafe(ID_POOL_SIZE);
let idPoolOffset = ID_POOL_SIZE;

function randomHex(bytes: number): string {
  for (;;) {
    if (idPoolOffset + bytes > ID_POOL_SIZE) {
      randomFillSync(idPool);
      idPoolOffset = 0;
    }
    const start = idPoolOffset;
    const end = (idPoolOffset += bytes);
    for (let i = start; i < end; i++) {
      if (idPool[i] !== 0) return idPool.toString("hex", start, end);
    }
    // All zero (an invalid id): draw again.
  }
}

/** A random, non-zero 16-byte trace id in lower-case hex. */
export function newTraceId(): string {
  return randomHex(16);
}

/** A random, non-zero 8-byte span id in lower-case hex. */
export function newSpanId(): string {
  return randomHex(8);
}

// ---------------------------------------------------------------------------------------------------------
// Sampling.

const TWO_28 = 2 ** 28;

/** The ratio threshold, ceil(ratio × 2^56), split in two 28-bit halves so it compares without BigInt. */
interface RatioThreshold {
  readonly hi: number;
  readonly lo: number;
}

function ratioThreshold(ratio: number): RatioThreshold {
  if (typeof ratio !== "number" || !(ratio >= 0 && ratio <= 1)) {
    throw new RangeError(`sampling ratio must be a number in [0, 1], got ${ratio}`);
  }
  const t = Math.ceil(ratio * 2 ** 56); // exact: scaling by a power of two
  const hi = Math.floor(t / TWO_28);
  return { hi, lo: t - hi * TWO_28 };
}

function belowThreshold(traceId: string, t: RatioThreshold): boolean {
  // The low 56 bits of the trace id: hex digits 18–31, read as two 28-bit numbers.
  const hi = parseInt(traceId.slice(18, 25), 16);
  return hi < t.hi || (hi === t.hi && parseInt(traceId.slice(25, 32), 16) < t.lo);
}

/**
 * The ratio decision for a root trace: sampled when the low 56 bits of the trace id are below
 * `ratio × 2^56` (as OpenTelemetry's TraceIdRatioBased), so every hop that sees the same trace id decides
 * the same, and a trace sampled at some ratio is sampled at every higher ratio.
 */
export function traceIdRatioSampled(traceId: string, ratio: number): boolean {
  return belowThreshold(traceId, ratioThreshold(ratio));
}

/** Parent-based sampling: the parent's sampled flag when there is a parent, else the trace-id ratio. */
export function shouldSample(parent: TraceContext | null, traceId: string, ratio: number): boolean {
  return parent !== null ? (parent.flags & FLAG_SAMPLED) !== 0 : traceIdRatioSampled(traceId, ratio);
}

// ---------------------------------------------------------------------------------------------------------
// Time: Unix nanoseconds from the monotonic clock, anchored to the wall clock once.

/**
 * The wall clock and the monotonic clock read together: the pair whose monotonic reads around
 * `Date.now()` are closest (a few tries), so a process preempted between the two reads — a busy host —
 * does not shift every span by the time it was off the CPU.
 */
function anchorClocks(): readonly [unixNs: bigint, hrtime: bigint] {
  let best: readonly [bigint, bigint] = [0n, 0n];
  let bestGap = -1n;
  for (let i = 0; i < 8; i++) {
    const before = process.hrtime.bigint();
    const wall = BigInt(Date.now()) * 1_000_000n;
    const after = process.hrtime.bigint();
    const gap = after - before;
    if (bestGap < 0n || gap < bestGap) {
      best = [wall, before + gap / 2n];
      bestGap = gap;
    }
    if (gap < 50_000n) break; // 50 µs: well inside Date.now()'s own millisecond
  }
  return best;
}

const [ANCHOR_UNIX_NS, ANCHOR_HRTIME] = anchorClocks();

/** Nanoseconds since the Unix epoch: monotonic within the process (anchored to `Date.now()` at load). */
export function nowUnixNano(): bigint {
  return ANCHOR_UNIX_NS + (process.hrtime.bigint() - ANCHOR_HRTIME);
}

// ---------------------------------------------------------------------------------------------------------
// Spans.

/** OTLP `Span.SpanKind`. */
export const SpanKind = { INTERNAL: 1, SERVER: 2, CLIENT: 3 } as const;
export type SpanKind = (typeof SpanKind)[keyof typeof SpanKind];

/** OTLP `Status.StatusCode`. */
export const SpanStatusCode = { UNSET: 0, OK: 1, ERROR: 2 } as const;
export type SpanStatusCode = (typeof SpanStatusCode)[keyof typeof SpanStatusCode];

/** Integers are exported as `intValue`, other numbers as `doubleValue`. */
export type AttributeValue = string | number | boolean;
export type Attributes = Readonly<Record<string, AttributeValue>>;

export const MAX_ATTRIBUTES_PER_SPAN = 64;
export const MAX_EVENTS_PER_SPAN = 32;
/** Longer string attribute values are truncated to this many UTF-16 units. */
export const MAX_ATTRIBUTE_LENGTH = 1024;

/** What a request looked like, for `startServerSpan`. */
export interface ServerSpanInit {
  /** `http.request.method`; a method outside RFC 9110 + PATCH becomes `_OTHER` (+ `http.request.method_original`). */
  readonly method: string;
  /** `url.path`, without the query. */
  readonly path: string;
  /** `url.scheme`. */
  readonly scheme?: string;
  /** `http.route`: the matched path pattern (low cardinality; it names the span). Can be set later. */
  readonly route?: string;
  /** `meshgate.route`: the name of the matched meshgate route. */
  readonly meshgateRoute?: string;
  /** `server.address` / `server.port`: the host and port the client addressed. */
  readonly serverAddress?: string;
  readonly serverPort?: number;
  /** `network.peer.address` / `network.peer.port`: the socket's remote end. */
  readonly peerAddress?: string;
  readonly peerPort?: number;
  readonly attributes?: Attributes;
}

/** One request to an upstream (one per attempt), for `startClientSpan`. */
export interface ClientSpanInit {
  readonly method: string;
  /** `server.address` / `server.port`: the upstream endpoint. */
  readonly serverAddress?: string;
  readonly serverPort?: number;
  /** `url.full` — redact secrets (query, userinfo) before passing it. */
  readonly url?: string;
  /** `meshgate.upstream`: the cluster name. */
  readonly upstream?: string;
  /** `network.peer.address` / `network.peer.port`: the resolved endpoint, if different. */
  readonly peerAddress?: string;
  readonly peerPort?: number;
  /** `http.request.resend_count`: 1 for the first retry, …; omitted when 0. */
  readonly resendCount?: number;
  readonly attributes?: Attributes;
}

/** How a span ended. Status: ERROR with `error`, or for a status code ≥ 500 (server) / ≥ 400 (client). */
export interface SpanEnd {
  /** `http.response.status_code`. */
  readonly statusCode?: number;
  /** The failure: its message becomes the status message, its `code` or `name` the `error.type`. */
  readonly error?: unknown;
  /** `error.type` when the error alone does not say it well, e.g. "timeout" or "circuit_open". */
  readonly errorType?: string;
}

/** What the gateway code sees of every span, recording or not. */
export interface SpanLike {
  /** True for a sampled span that will be exported. */
  readonly recording: boolean;
  /** "" for the no-op span. */
  readonly traceId: string;
  readonly spanId: string;
  /** The `traceparent` to send on a request made inside this span; undefined when tracing is disabled. */
  traceparent(): string | undefined;
  /** The `tracestate` to send with it, if any. */
  tracestate(): string | undefined;
  setAttribute(key: string, value: AttributeValue): void;
  addEvent(name: string, attributes?: Attributes): void;
  /** Ends the span (later calls are ignored). */
  end(result?: SpanEnd): void;
}

/**
 * Sets the trace context of a request made inside `span` on its headers: `traceparent`, and `tracestate` or
 * none (a client's copy never goes on beside the span's). Untouched when tracing is disabled.
 */
export function setTraceHeaders(headers: Record<string, string | string[]>, span: SpanLike): void {
  const traceparent = span.traceparent();
  if (traceparent === undefined) return;
  headers.traceparent = traceparent;
  const tracestate = span.tracestate();
  if (tracestate) headers.tracestate = tracestate;
  else delete headers.tracestate;
}

/** The span of disabled tracing: shared, stateless, every method a no-op. */
export class NoopSpan implements SpanLike {
  readonly recording = false;
  readonly traceId = "";
  readonly spanId = "";
  traceparent(): undefined {
    return undefined;
  }
  tracestate(): undefined {
    return undefined;
  }
  setAttribute(_key: string, _value: AttributeValue): void {}
  addEvent(_name: string, _attributes?: Attributes): void {}
  end(_result?: SpanEnd): void {}
}

/** The one no-op span. */
export const NOOP_SPAN: NoopSpan = Object.freeze(new NoopSpan());

/**
 * A span this process does not record — unsampled, or sampled while nothing exports (no OTLP endpoint,
 * or shutting down). It still propagates its trace id and the trace's sampling decision, so a downstream
 * hop that exports keeps a sampled trace whole.
 */
export class NonRecordingSpan implements SpanLike {
  readonly recording = false;
  readonly traceId: string;
  readonly spanId: string;
  readonly #traceState: string | undefined;
  readonly #flags: string;

  constructor(traceId: string, spanId: string, traceState: string | undefined, sampled = false) {
    this.traceId = traceId;
    this.spanId = spanId;
    this.#traceState = traceState;
    this.#flags = sampled ? "01" : "00";
  }

  traceparent(): string {
    return `00-${this.traceId}-${this.spanId}-${this.#flags}`;
  }
  tracestate(): string | undefined {
    return this.#traceState;
  }
  setAttribute(_key: string, _value: AttributeValue): void {}
  addEvent(_name: string, _attributes?: Attributes): void {}
  end(_result?: SpanEnd): void {}
}

export interface SpanEvent {
  readonly name: string;
  readonly timeUnixNano: bigint;
  readonly attributes: Attributes | undefined;
}

const KNOWN_METHODS = new Set([
  "GET",
  "HEAD",
  "POST",
  "PUT",
  "DELETE",
  "CONNECT",
  "OPTIONS",
  "TRACE",
  "PATCH",
]);

/** A sampled span. Created by a `Tracer`; exported when it ends. */
export class Span implements SpanLike {
  readonly recording = true;
  readonly kind: SpanKind;
  readonly traceId: string;
  readonly spanId: string;
  /** "" for a root span. */
  readonly parentSpanId: string;
  readonly traceState: string | undefined;
  readonly startTimeUnixNano: bigint;
  /** 0n until the span ends. */
  endTimeUnixNano = 0n;
  statusCode: SpanStatusCode = SpanStatusCode.UNSET;
  statusMessage = "";
  readonly attributes = new Map<string, AttributeValue>();
  droppedAttributesCount = 0;
  events: SpanEvent[] | undefined;
  droppedEventsCount = 0;
  #name: string | undefined;
  readonly #onEnd: (span: Span) => void;

  /** @internal Use `Tracer.startServerSpan` / `startClientSpan`. */
  constructor(
    kind: SpanKind,
    traceId: string,
    parentSpanId: string,
    traceState: string | undefined,
    onEnd: (span: Span) => void,
  ) {
    this.kind = kind;
    this.traceId = traceId;
    this.spanId = newSpanId();
    this.parentSpanId = parentSpanId;
    this.traceState = traceState;
    this.#onEnd = onEnd;
    this.startTimeUnixNano = nowUnixNano();
  }

  get ended(): boolean {
    return this.endTimeUnixNano !== 0n;
  }

  /** `{method} {http.route}` (or `{method}`; `HTTP` for an unknown method), unless set by `updateName`. */
  get name(): string {
    if (this.#name !== undefined) return this.#name;
    const m = this.attributes.get("http.request.method");
    const method = m === undefined || m === "_OTHER" ? "HTTP" : String(m);
    const route = this.kind === SpanKind.SERVER ? this.attributes.get("http.route") : undefined;
    return route === undefined ? method : `${method} ${route}`;
  }

  updateName(name: string): void {
    if (!this.ended) this.#name = name;
  }

  traceparent(): string {
    return `00-${this.traceId}-${this.spanId}-01`;
  }

  tracestate(): string | undefined {
    return this.traceState;
  }

  setAttribute(key: string, value: AttributeValue): void {
    if (this.ended) return;
    const attributes = this.attributes;
    if (attributes.size >= MAX_ATTRIBUTES_PER_SPAN && !attributes.has(key)) {
      this.droppedAttributesCount++;
      return;
    }
    attributes.set(
      key,
      typeof value === "string" && value.length > MAX_ATTRIBUTE_LENGTH
        ? value.slice(0, MAX_ATTRIBUTE_LENGTH)
        : value,
    );
  }

  setAttributes(attributes: Attributes): void {
    for (const key in attributes) this.setAttribute(key, attributes[key]!);
  }

  addEvent(name: string, attributes?: Attributes): void {
    if (this.ended) return;
    const events = (this.events ??= []);
    if (events.length >= MAX_EVENTS_PER_SPAN) {
      this.droppedEventsCount++;
      return;
    }
    events.push({ name, timeUnixNano: nowUnixNano(), attributes });
  }

  /** Sets the status; a later ERROR is kept over UNSET, OK is final. Mostly done by `end()`. */
  setStatus(code: SpanStatusCode, message = ""): void {
    if (this.ended || this.statusCode === SpanStatusCode.OK) return;
    this.statusCode = code;
    this.statusMessage = code === SpanStatusCode.ERROR ? message : "";
  }

  end(result?: SpanEnd): void {
    if (this.ended) return;
    if (result !== undefined) {
      const { statusCode, error, errorType } = result;
      let failedStatus = false;
      if (statusCode !== undefined) {
        this.setAttribute("http.response.status_code", statusCode);
        failedStatus = statusCode >= (this.kind === SpanKind.SERVER ? 500 : 400);
      }
      // error.type: the caller's word, else the error's code or name, else the failing status code.
      const type =
        errorType ??
        (error !== undefined ? errorTypeOf(error) : failedStatus ? String(statusCode) : undefined);
      if (type !== undefined) {
        this.setAttribute("error.type", type);
        // The status message is the error's; a failing status code alone leaves it empty (semconv).
        this.setStatus(SpanStatusCode.ERROR, error !== undefined ? errorMessageOf(error) : "");
      }
    }
    this.endTimeUnixNano = nowUnixNano();
    this.#onEnd(this);
  }
}

function errorTypeOf(error: unknown): string {
  if (typeof error === "object" && error !== null) {
    const code = (error as { code?: unknown }).code;
    if (typeof code === "string" && code !== "") return code;
    const name = (error as { name?: unknown }).name;
    if (typeof name === "string" && name !== "" && name !== "Error") return name;
  }
  return typeof error === "string" && error !== "" ? error : "_OTHER";
}

function errorMessageOf(error: unknown): string {
  const message =
    typeof error === "object" && error !== null ? (error as { message?: unknown }).message : error;
  const text = typeof message === "string" ? message : String(message);
  return text.length > MAX_ATTRIBUTE_LENGTH ? text.slice(0, MAX_ATTRIBUTE_LENGTH) : text;
}

function setMethod(span: Span, method: string): void {
  if (KNOWN_METHODS.has(method)) {
    span.setAttribute("http.request.method", method);
  } else {
    span.setAttribute("http.request.method", "_OTHER");
    span.setAttribute("http.request.method_original", method);
  }
}

// ---------------------------------------------------------------------------------------------------------
// OTLP/HTTP JSON encoding (opentelemetry-proto ExportTraceServiceRequest, JSON mapping).

interface OtlpAnyValue {
  stringValue?: string;
  intValue?: string;
  doubleValue?: number | string;
  boolValue?: boolean;
}

interface OtlpKeyValue {
  key: string;
  value: OtlpAnyValue;
}

function anyValue(v: AttributeValue): OtlpAnyValue {
  if (typeof v === "string") return { stringValue: v };
  if (typeof v === "boolean") return { boolValue: v };
  if (Number.isSafeInteger(v)) return { intValue: String(v) };
  // The JSON mapping spells non-finite doubles as strings.
  return { doubleValue: Number.isFinite(v) ? v : v > 0 ? "Infinity" : v < 0 ? "-Infinity" : "NaN" };
}

function keyValues(attributes: Iterable<readonly [string, AttributeValue]>): OtlpKeyValue[] {
  const out: OtlpKeyValue[] = [];
  for (const [key, value] of attributes) out.push({ key, value: anyValue(value) });
  return out;
}

/** One span in the OTLP JSON encoding: hex ids, decimal-string nanoseconds, integer enums. */
export function encodeSpan(span: Span): Record<string, unknown> {
  const o: Record<string, unknown> = { traceId: span.traceId, spanId: span.spanId };
  if (span.traceState !== undefined) o.traceState = span.traceState;
  if (span.parentSpanId !== "") o.parentSpanId = span.parentSpanId;
  o.name = span.name;
  o.kind = span.kind;
  o.startTimeUnixNano = span.startTimeUnixNano.toString();
  o.endTimeUnixNano = span.endTimeUnixNano.toString();
  o.attributes = keyValues(span.attributes);
  if (span.droppedAttributesCount > 0) o.droppedAttributesCount = span.droppedAttributesCount;
  if (span.events !== undefined) {
    o.events = span.events.map((e) => ({
      timeUnixNano: e.timeUnixNano.toString(),
      name: e.name,
      attributes: e.attributes === undefined ? [] : keyValues(Object.entries(e.attributes)),
    }));
  }
  if (span.droppedEventsCount > 0) o.droppedEventsCount = span.droppedEventsCount;
  o.status =
    span.statusMessage === ""
      ? { code: span.statusCode }
      : { code: span.statusCode, message: span.statusMessage };
  return o;
}

/** The instrumentation scope named in every export. */
export const SCOPE_NAME = "meshgate";

/** A whole `ExportTraceServiceRequest` body: one resource, one scope, these spans. */
export function encodeExportRequest(resource: Attributes, spans: readonly Span[]): string {
  return JSON.stringify({
    resourceSpans: [
      {
        resource: { attributes: keyValues(Object.entries(resource)) },
        scopeSpans: [{ scope: { name: SCOPE_NAME }, spans: spans.map(encodeSpan) }],
      },
    ],
  });
}

// ---------------------------------------------------------------------------------------------------------
// The tracer: sampling, span creation, the export queue.

/** Why spans were dropped instead of exported. */
export type SpanDropReason = "queue_full" | "export_failed" | "shutdown";

export interface TracerOptions {
  readonly serviceName: string;
  /** Default true. When false every span is `NOOP_SPAN`. */
  readonly enabled?: boolean;
  /** Root-trace sampling ratio in [0, 1]. */
  readonly sampling: number;
  /** The OTLP/HTTP base URL; `/v1/traces` is appended (unless present). null: propagate, record nothing. */
  readonly otlpEndpoint: string | null;
  /** Extra resource attributes; `service.name` is always `serviceName`. */
  readonly resource?: Readonly<Record<string, string>>;
  /** Extra request headers for the collector, e.g. authorization. */
  readonly headers?: Readonly<Record<string, string>>;
  /** Ended spans waiting for export; the newest is dropped when full. Default 2,048. */
  readonly maxQueue?: number;
  /** Spans per export request; a full batch is sent at once. Default 512. */
  readonly maxBatch?: number;
  /** A partial batch waits at most this long. Default 1,000 ms. */
  readonly flushIntervalMs?: number;
  /** Per export request, response included. Default 5,000 ms. */
  readonly exportTimeoutMs?: number;
  /** Before the one retry of a failed batch. Default 100 ms. */
  readonly retryDelayMs?: number;
  /** Called (synchronously, errors ignored) for every drop; wire it to a counter. */
  readonly onDrop?: (spans: number, reason: SpanDropReason) => void;
  /** Called when a batch failed for good (after its retry, or at once if not retryable). */
  readonly onExportError?: (error: Error, spans: number) => void;
}

/** The `Telemetry` part of a RuntimeConfig (structurally). */
export interface TelemetryTracingConfig {
  readonly serviceName: string;
  readonly tracing: {
    readonly enabled: boolean;
    readonly sampling: number;
    readonly otlpEndpoint: string | null;
  };
}

export interface TracerStats {
  /** Ended spans waiting for export. */
  readonly queued: number;
  /** Spans in batches the collector accepted (2xx). */
  readonly exported: number;
  readonly droppedQueueFull: number;
  readonly droppedExportFailed: number;
  readonly droppedShutdown: number;
  /** Export requests that failed, retries included. */
  readonly failedRequests: number;
  /** Batches given up on. */
  readonly failedBatches: number;
  readonly retries: number;
}

interface PostResult {
  readonly ok: boolean;
  readonly retryable: boolean;
  readonly error: Error | undefined;
}

const OPEN = 0;
const CLOSING = 1;
const CLOSED = 2;

/** A Tracer from a RuntimeConfig's `telemetry`. */
export function createTracer(
  telemetry: TelemetryTracingConfig,
  options: Omit<TracerOptions, "serviceName" | "enabled" | "sampling" | "otlpEndpoint"> = {},
): Tracer {
  return new Tracer({
    ...options,
    serviceName: telemetry.serviceName,
    enabled: telemetry.tracing.enabled,
    sampling: telemetry.tracing.sampling,
    otlpEndpoint: telemetry.tracing.otlpEndpoint,
  });
}

export class Tracer {
  readonly enabled: boolean;
  readonly serviceName: string;
  readonly sampling: number;
  /** The full export URL, or null when nothing is recorded. */
  readonly exportUrl: string | null;
  /** The export URL without user and password, for error messages. */
  #shownUrl = "";
  readonly #threshold: RatioThreshold;
  readonly #resource: Attributes;
  readonly #maxQueue: number;
  readonly #maxBatch: number;
  readonly #flushIntervalMs: number;
  readonly #exportTimeoutMs: number;
  readonly #retryDelayMs: number;
  readonly #onDrop: TracerOptions["onDrop"];
  readonly #onExportError: TracerOptions["onExportError"];
  readonly #url: URL | undefined;
  readonly #agent: http.Agent | undefined;
  readonly #headers: Record<string, string>;
  readonly #enqueue = (span: Span): void => this.#push(span);
  #queue: Span[] = [];
  #timer: NodeJS.Timeout | undefined;
  #loop: Promise<void> | undefined;
  #flushWanted = false;
  #state = OPEN;
  /** performance.now() of the shutdown deadline: a retry that cannot start before it is skipped. */
  #deadline = Infinity;
  #shutdown: Promise<void> | undefined;
  #inflight: http.ClientRequest | undefined;
  #exported = 0;
  #droppedQueueFull = 0;
  #droppedExportFailed = 0;
  #droppedShutdown = 0;
  #failedRequests = 0;
  #failedBatches = 0;
  #retries = 0;

  constructor(options: TracerOptions) {
    this.enabled = options.enabled ?? true;
    this.serviceName = options.serviceName;
    this.sampling = options.sampling;
    this.#threshold = ratioThreshold(options.sampling);
    const { "service.name": _ignored, ...resource } = options.resource ?? {};
    this.#resource = { "service.name": options.serviceName, ...resource };
    this.#maxQueue = positiveInt("maxQueue", options.maxQueue, 2048);
    this.#maxBatch = positiveInt("maxBatch", options.maxBatch, 512);
    this.#flushIntervalMs = positiveInt("flushIntervalMs", options.flushIntervalMs, 1000);
    this.#exportTimeoutMs = positiveInt("exportTimeoutMs", options.exportTimeoutMs, 5000);
    this.#retryDelayMs = nonNegativeInt("retryDelayMs", options.retryDelayMs, 100);
    this.#onDrop = options.onDrop;
    this.#onExportError = options.onExportError;
    this.#headers = { ...options.headers, "content-type": "application/json" };
    if (this.enabled && options.otlpEndpoint !== null) {
      const url = exportUrl(options.otlpEndpoint);
      this.#url = url;
      this.exportUrl = url.href;
      this.#shownUrl = `${url.protocol}//${url.host}${url.pathname}`;
      const Agent = url.protocol === "https:" ? https.Agent : http.Agent;
      this.#agent = new Agent({ keepAlive: true, maxSockets: 1 });
    } else {
      this.exportUrl = null;
    }
  }

  /** True when sampled spans are recorded and exported. */
  get recording(): boolean {
    return this.#url !== undefined && this.#state === OPEN;
  }

  /**
   * The span of an incoming request. An invalid `traceparent` starts a new trace (and its `tracestate` is
   * ignored); a valid one continues its trace, sampled as its flag says.
   */
  startServerSpan(
    traceparent: string | readonly string[] | undefined,
    tracestate: string | readonly string[] | undefined,
    init: ServerSpanInit,
  ): SpanLike {
    if (!this.enabled) return NOOP_SPAN;
    const parent = parseTraceparent(traceparent);
    let traceId: string;
    let sampled: boolean;
    let traceState: string | undefined;
    if (parent !== null) {
      traceId = parent.traceId;
      sampled = (parent.flags & FLAG_SAMPLED) !== 0;
      traceState = sanitizeTracestate(tracestate);
    } else {
      traceId = newTraceId();
      sampled = belowThreshold(traceId, this.#threshold);
    }
    if (!sampled || !this.recording) return new NonRecordingSpan(traceId, newSpanId(), traceState, sampled);
    const span = new Span(SpanKind.SERVER, traceId, parent?.parentId ?? "", traceState, this.#enqueue);
    setMethod(span, init.method);
    span.setAttribute("url.path", init.path);
    if (init.scheme !== undefined) span.setAttribute("url.scheme", init.scheme);
    if (init.route !== undefined) span.setAttribute("http.route", init.route);
    if (init.meshgateRoute !== undefined) span.setAttribute("meshgate.route", init.meshgateRoute);
    if (init.serverAddress !== undefined) span.setAttribute("server.address", init.serverAddress);
    if (init.serverPort !== undefined) span.setAttribute("server.port", init.serverPort);
    if (init.peerAddress !== undefined) span.setAttribute("network.peer.address", init.peerAddress);
    if (init.peerPort !== undefined) span.setAttribute("network.peer.port", init.peerPort);
    if (init.attributes !== undefined) span.setAttributes(init.attributes);
    return span;
  }

  /**
   * A span for one request to an upstream, child of `parent`. A parent that does not record is returned
   * as is (its `traceparent()` is what to send).
   */
  startClientSpan(parent: SpanLike, init: ClientSpanInit): SpanLike {
    // A child of a recording span records too, even after shutdown began (it is then dropped as "shutdown").
    if (!(parent instanceof Span)) return parent;
    const span = new Span(SpanKind.CLIENT, parent.traceId, parent.spanId, parent.traceState, this.#enqueue);
    setMethod(span, init.method);
    if (init.serverAddress !== undefined) span.setAttribute("server.address", init.serverAddress);
    if (init.serverPort !== undefined) span.setAttribute("server.port", init.serverPort);
    if (init.url !== undefined) span.setAttribute("url.full", init.url);
    if (init.upstream !== undefined) span.setAttribute("meshgate.upstream", init.upstream);
    if (init.peerAddress !== undefined) span.setAttribute("network.peer.address", init.peerAddress);
    if (init.peerPort !== undefined) span.setAttribute("network.peer.port", init.peerPort);
    if (init.resendCount) span.setAttribute("http.request.resend_count", init.resendCount);
    if (init.attributes !== undefined) span.setAttributes(init.attributes);
    return span;
  }

  stats(): TracerStats {
    return {
      queued: this.#queue.length,
      exported: this.#exported,
      droppedQueueFull: this.#droppedQueueFull,
      droppedExportFailed: this.#droppedExportFailed,
      droppedShutdown: this.#droppedShutdown,
      failedRequests: this.#failedRequests,
      failedBatches: this.#failedBatches,
      retries: this.#retries,
    };
  }

  /** Exports every queued span; resolves (never rejects) when the queue is empty and no export runs. */
  async flush(): Promise<void> {
    if (this.#url === undefined) return;
    this.#flushWanted = true;
    this.#kick();
    while (this.#loop !== undefined) await this.#loop;
  }

  /**
   * Stops recording (later spans do not record, spans ending later are dropped as "shutdown"), flushes the
   * queue for at most `timeoutMs`, then aborts what is left and closes the connection. Never rejects.
   */
  shutdown(timeoutMs = 5000): Promise<void> {
    this.#shutdown ??= this.#close(timeoutMs);
    return this.#shutdown;
  }

  async #close(timeoutMs: number): Promise<void> {
    if (this.#url === undefined) {
      this.#state = CLOSED;
      return;
    }
    this.#state = CLOSING;
    this.#deadline = performance.now() + timeoutMs;
    clearTimeout(this.#timer);
    this.#timer = undefined;
    let deadlineTimer: NodeJS.Timeout | undefined;
    const deadline = new Promise<void>((resolve) => {
      deadlineTimer = setTimeout(resolve, timeoutMs);
    });
    await Promise.race([this.flush(), deadline]);
    clearTimeout(deadlineTimer);
    this.#state = CLOSED;
    this.#inflight?.destroy(new Error("tracer shut down"));
    while (this.#loop !== undefined) await this.#loop;
    this.#drop(this.#queue.length, "shutdown");
    this.#queue = [];
    this.#agent?.destroy();
  }

  #push(span: Span): void {
    if (this.#state === CLOSED) return this.#drop(1, "shutdown");
    const queue = this.#queue;
    if (queue.length >= this.#maxQueue) return this.#drop(1, "queue_full");
    queue.push(span);
    if (this.#state === CLOSING) {
      this.#flushWanted = true;
      this.#kick();
    } else if (queue.length >= this.#maxBatch) {
      this.#kick();
    } else if (this.#timer === undefined) {
      this.#timer = setTimeout(() => {
        this.#timer = undefined;
        this.#flushWanted = true;
        this.#kick();
      }, this.#flushIntervalMs);
      this.#timer.unref();
    }
  }

  #drop(spans: number, reason: SpanDropReason): void {
    if (spans === 0) return;
    if (reason === "queue_full") this.#droppedQueueFull += spans;
    else if (reason === "export_failed") this.#droppedExportFailed += spans;
    else this.#droppedShutdown += spans;
    try {
      this.#onDrop?.(spans, reason);
    } catch {
      // A metrics callback must not break the request or the export loop.
    }
  }

  /** Starts the export loop unless it runs; the loop re-checks the queue before it ends. */
  #kick(): void {
    if (this.#loop !== undefined) return;
    this.#loop = this.#run().finally(() => {
      this.#loop = undefined;
    });
  }

  async #run(): Promise<void> {
    // Off the caller's stack: span.end() returns before any encoding happens.
    await undefined;
    for (;;) {
      const queue = this.#queue;
      if (queue.length === 0) {
        this.#flushWanted = false;
        return;
      }
      if (!this.#flushWanted && queue.length < this.#maxBatch) return;
      // Past the shutdown deadline nothing new starts: shutdown drops what is left.
      if (this.#state === CLOSED) return;
      let batch: Span[];
      if (queue.length <= this.#maxBatch) {
        batch = queue;
        this.#queue = [];
        this.#flushWanted = false;
        clearTimeout(this.#timer);
        this.#timer = undefined;
      } else {
        batch = queue.splice(0, this.#maxBatch);
      }
      await this.#export(batch);
    }
  }

  async #export(batch: Span[]): Promise<void> {
    let body: Buffer;
    try {
      body = Buffer.from(encodeExportRequest(this.#resource, batch));
    } catch (err) {
      return this.#giveUp(asError(err), batch.length);
    }
    let result = await this.#post(body);
    // One retry, unless it could not start before the shutdown deadline.
    if (
      !result.ok &&
      result.retryable &&
      this.#state !== CLOSED &&
      performance.now() + this.#retryDelayMs < this.#deadline
    ) {
      this.#retries++;
      if (this.#retryDelayMs > 0) await sleep(this.#retryDelayMs);
      if (this.#state !== CLOSED && performance.now() < this.#deadline) result = await this.#post(body);
    }
    if (result.ok) this.#exported += batch.length;
    else this.#giveUp(result.error ?? new Error("OTLP export failed"), batch.length);
  }

  #giveUp(error: Error, spans: number): void {
    this.#failedBatches++;
    this.#drop(spans, "export_failed");
    try {
      this.#onExportError?.(error, spans);
    } catch {
      // Ignored, as for onDrop.
    }
  }

  /** One POST; resolves with the outcome, never rejects. */
  #post(body: Buffer): Promise<PostResult> {
    const url = this.#url!;
    // At the shutdown deadline, shutdown destroys the request in flight itself.
    const timeoutMs = this.#exportTimeoutMs;
    return new Promise<PostResult>((resolve) => {
      const request = url.protocol === "https:" ? https.request : http.request;
      let req: http.ClientRequest;
      try {
        req = request(url, {
          method: "POST",
          agent: this.#agent,
          headers: { ...this.#headers, "content-length": body.length },
        });
      } catch (err) {
        this.#failedRequests++;
        resolve({ ok: false, retryable: false, error: asError(err) });
        return;
      }
      this.#inflight = req;
      const timer = setTimeout(() => {
        req.destroy(new Error(`OTLP export to ${this.#shownUrl} timed out after ${timeoutMs} ms`));
      }, timeoutMs);
      timer.unref();
      let settled = false;
      const settle = (result: PostResult): void => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        this.#inflight = undefined;
        if (!result.ok) this.#failedRequests++;
        resolve(result);
      };
      req.on("error", (err) => settle({ ok: false, retryable: true, error: err }));
      req.on("response", (res) => {
        const status = res.statusCode ?? 0;
        res.on("error", (err) => settle({ ok: false, retryable: true, error: err }));
        res.on("end", () => {
          if (status >= 200 && status < 300) {
            settle({ ok: true, retryable: false, error: undefined });
          } else {
            settle({
              ok: false,
              retryable: status >= 500 || status === 429 || status === 408,
              error: new Error(`OTLP export to ${this.#shownUrl} answered HTTP ${status}`),
            });
          }
        });
        res.resume();
      });
      req.on("close", () =>
        settle({
          ok: false,
          retryable: true,
          error: new Error(`OTLP export to ${this.#shownUrl}: connection closed`),
        }),
      );
      req.end(body);
    });
  }
}

/**
 * The export URL of an endpoint. Errors never echo the endpoint: it may carry basic-auth credentials
 * (`https://user:token@…`), and an unencoded `/` or `#` in a token is exactly what makes it unparseable —
 * the message goes to the reload's answer and the log.
 */
function exportUrl(endpoint: string): URL {
  let url: URL;
  try {
    url = new URL(endpoint);
  } catch {
    throw new Error(
      "tracing otlpEndpoint is not a URL; write http(s)://[user:password@]host[:port][/path] (percent-encode special characters of user and password)",
    );
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") {
    throw new Error(`tracing otlpEndpoint must be http: or https:, not ${url.protocol}//`);
  }
  const path = url.pathname.replace(/\/+$/, "");
  url.pathname = path.endsWith("/v1/traces") ? path : `${path}/v1/traces`;
  return url;
}

function positiveInt(name: string, value: number | undefined, fallback: number): number {
  if (value === undefined) return fallback;
  if (Number.isSafeInteger(value) && value >= 1) return value;
  throw new RangeError(`tracer ${name} must be a positive integer, got ${value}`);
}

function nonNegativeInt(name: string, value: number | undefined, fallback: number): number {
  if (value === undefined) return fallback;
  if (Number.isSafeInteger(value) && value >= 0) return value;
  throw new RangeError(`tracer ${name} must be a non-negative integer, got ${value}`);
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms).unref());
}

function asError(err: unknown): Error {
  return err instanceof Error ? err : new Error(String(err));
}
