/**
 * A small Prometheus metrics registry for the gateway and the sidecar proxies: counters, gauges and
 * histograms with a fixed, declared list of label names, rendered in the text exposition format 0.0.4.
 *
 *   const registry = new MetricsRegistry({ prefix: "meshgate_" });
 *   const requests = registry.counter("requests_total", "Requests handled.", ["route", "code_class"]);
 *   const ok = requests.labels("list-orders", "2xx"); // look up once, keep the child
 *   ok.inc();                                          // hot path: one add, no allocation
 *
 * Hot path. `labels(...)` finds a child in a Map keyed by the label values joined with U+0000; callers
 * cache the child, whose `inc` / `dec` / `set` / `observe` only update numbers (a histogram finds its
 * bucket by a linear scan: bucket lists are short).
 *
 * Bounded cardinality. A metric holds at most `maxChildren` label sets (default 2,000, per metric or per
 * registry). Further label sets are folded into one extra child whose label values are all
 * `"__overflow__"`, and each fold increments `<prefix>metrics_label_overflow_total{metric="…"}`: memory
 * stays bounded and no value is dropped silently. A fold is counted per `labels()` call that folds, so a
 * caller that does not cache children counts one fold per call.
 *
 * Collectors registered with `onCollect` run synchronously at the start of `render()`, so gauges such as
 * certificate expiry or process RSS are read only when scraped; an error thrown by one fails the render.
 */
import { constants as perfConstants, performance, PerformanceObserver } from "node:perf_hooks";

/** The Content-Type of `render()`'s output. */
export const EXPOSITION_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8";

/**
 * Request-latency buckets, in seconds: 0.5 ms to 5 min — the longest a request may take (the sidecar's
 * inbound limit, 300 s), so a slow request's quantile is not clamped at the last bound below it (with
 * 10 s last, a 40 s p99 read "10 s").
 */
export const DEFAULT_LATENCY_BUCKETS: readonly number[] = Object.freeze([
  0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300,
]);

export const DEFAULT_MAX_CHILDREN = 2_000;

/** The label value of every label of the child that holds the label sets folded at the cap. */
export const OVERFLOW_LABEL_VALUE = "__overflow__";

/** Refreshes metrics lazily; called at the start of every `render()`. */
export type Collector = () => void;

/** One string per declared label name, in the declared order. */
export type LabelValues<L extends readonly string[]> = { readonly [K in keyof L]: string };

export interface MetricOptions {
  /** Distinct label sets kept before folding into the `__overflow__` child; an integer ≥ 1 or Infinity. */
  readonly maxChildren?: number;
}

export interface RegistryOptions {
  /** Prepended to every metric name, e.g. "meshgate_". */
  readonly prefix?: string;
  /** The `maxChildren` of metrics registered without one. */
  readonly defaultMaxChildren?: number;
}

type MetricType = "counter" | "gauge" | "histogram";

const METRIC_NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
// The exposition format's label names: unlike metric names, no ":".
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*$/;
const KEY_SEPARATOR = "\u0000";

// ---------------------------------------------------------------------------------------------------------
// Children: the per-label-set state. Their methods are the hot path.

export class CounterChild {
  #value = 0;

  /** Adds `v` (default 1); throws on a negative or NaN amount, since a counter only goes up. */
  inc(v = 1): void {
    if (!(v >= 0)) throw new RangeError(`counter increment must be a non-negative number, got ${v}`);
    this.#value += v;
  }

  get(): number {
    return this.#value;
  }
}

export class GaugeChild {
  #value = 0;

  inc(v = 1): void {
    this.#value += v;
  }

  dec(v = 1): void {
    this.#value -= v;
  }

  set(v: number): void {
    this.#value = v;
  }

  get(): number {
    return this.#value;
  }
}

export class HistogramChild {
  readonly #upperBounds: Float64Array;
  /** Per-bucket (not cumulative) counts; the last slot is the +Inf bucket. */
  readonly #counts: Float64Array;
  #sum = 0;
  #count = 0;

  constructor(upperBounds: Float64Array) {
    this.#upperBounds = upperBounds;
    this.#counts = new Float64Array(upperBounds.length + 1);
  }

  /** Records `v`. NaN lands in the +Inf bucket only and makes the sum NaN, as in the Go client. */
  observe(v: number): void {
    const bounds = this.#upperBounds;
    const n = bounds.length;
    let i = 0;
    while (i < n && !(v <= bounds[i]!)) i++;
    this.#counts[i]!++;
    this.#sum += v;
    this.#count++;
  }

  /** Observation count, sum, and cumulative bucket counts (the last one is the +Inf bucket). */
  snapshot(): { count: number; sum: number; buckets: number[] } {
    const buckets: number[] = [];
    let cumulative = 0;
    for (const c of this.#counts) buckets.push((cumulative += c));
    return { count: this.#count, sum: this.#sum, buckets };
  }
}

// ---------------------------------------------------------------------------------------------------------
// Metrics: a name, help, label names and the children by label values.

/** A metric's registration, checked by the registry. */
interface Declared<L extends readonly string[]> {
  readonly name: string;
  readonly help: string;
  readonly labelNames: L;
  readonly maxChildren: number;
  readonly onFold: () => void;
}

interface Series<C> {
  readonly child: C;
  /** `a="x",b="y"`, escaped; "" for a metric without labels. */
  readonly labelText: string;
}

/** What every metric shares; the registry renders through it. */
abstract class Metric<L extends readonly string[], C> {
  abstract readonly type: MetricType;
  /** The full name, prefix included. */
  readonly name: string;
  readonly help: string;
  readonly labelNames: L;
  readonly maxChildren: number;
  readonly #lookup = new Map<string, C>();
  readonly #series: Series<C>[] = [];
  readonly #overflowKey: string;
  #overflow: Series<C> | undefined;
  readonly #onFold: () => void;
  readonly #newChild: () => C;
  /** The child of a metric without labels. */
  protected readonly only: C | undefined;

  constructor(declared: Declared<L>, newChild: () => C) {
    this.name = declared.name;
    this.help = declared.help;
    this.labelNames = declared.labelNames;
    this.maxChildren = declared.maxChildren;
    this.#onFold = declared.onFold;
    this.#newChild = newChild;
    this.#overflowKey = this.labelNames.map(() => OVERFLOW_LABEL_VALUE).join(KEY_SEPARATOR);
    this.only = this.labelNames.length === 0 ? this.#add("", []) : undefined;
  }

  /** The child for these label values (one per declared label name, in order); cache it. */
  labels(...values: LabelValues<L>): C {
    const n = this.labelNames.length;
    if (values.length !== n) {
      throw new Error(
        `metric ${this.name} takes ${n} label value(s) (${this.labelNames.join(", ")}), got ${values.length}`,
      );
    }
    let key: string;
    if (n === 1) {
      key = values[0]!;
    } else {
      // Joined keys are only unambiguous when no value holds the separator.
      for (let i = 0; i < n; i++) checkLabelValue(this, values[i]);
      key = values.join(KEY_SEPARATOR);
    }
    const child = this.#lookup.get(key);
    if (child !== undefined) return child;
    if (n === 1) checkLabelValue(this, key);
    if (key === this.#overflowKey) return this.#overflowChild();
    if (this.#lookup.size >= this.maxChildren) {
      this.#onFold();
      return this.#overflowChild();
    }
    return this.#add(key, values);
  }

  /**
   * Drops the child of these label values, if any: its series is no longer rendered (Prometheus marks it
   * stale) and its slot counts against `maxChildren` no more. For series that describe a state which ended
   * (the config that served before a reload); a caller must not keep using a child it removed. Folded
   * label sets stay in the `__overflow__` child. Not for the hot path (a linear scan of the series).
   */
  remove(...values: LabelValues<L>): boolean {
    if (values.length !== this.labelNames.length || values.length === 0) return false;
    const key = values.length === 1 ? values[0]! : values.join(KEY_SEPARATOR);
    const child = this.#lookup.get(key);
    if (child === undefined) return false;
    this.#lookup.delete(key);
    const i = this.#series.findIndex((s) => s.child === child);
    if (i >= 0) this.#series.splice(i, 1);
    return true;
  }

  #overflowChild(): C {
    this.#overflow ??= {
      child: this.#newChild(),
      labelText: this.#labelText(this.labelNames.map(() => OVERFLOW_LABEL_VALUE)),
    };
    return this.#overflow.child;
  }

  #add(key: string, values: readonly string[]): C {
    const child = this.#newChild();
    this.#lookup.set(key, child);
    this.#series.push({ child, labelText: this.#labelText(values) });
    return child;
  }

  #labelText(values: readonly string[]): string {
    return this.labelNames.map((label, i) => `${label}="${escapeLabelValue(values[i]!)}"`).join(",");
  }

  /** @internal Appends the HELP, TYPE and sample lines. */
  renderInto(lines: string[]): void {
    lines.push(`# HELP ${this.name} ${escapeHelp(this.help)}`);
    lines.push(`# TYPE ${this.name} ${this.type}`);
    for (const s of this.#series) this.renderSeries(lines, s.child, s.labelText);
    if (this.#overflow) this.renderSeries(lines, this.#overflow.child, this.#overflow.labelText);
  }

  protected abstract renderSeries(lines: string[], child: C, labelText: string): void;

  protected onlyChild(): C {
    if (this.only === undefined) {
      throw new Error(`metric ${this.name} has labels (${this.labelNames.join(", ")}): use .labels(...)`);
    }
    return this.only;
  }
}

function checkLabelValue(metric: { readonly name: string }, value: unknown): void {
  if (typeof value !== "string" || value.includes(KEY_SEPARATOR)) {
    throw new TypeError(
      `metric ${metric.name}: label values must be strings without U+0000, got ${JSON.stringify(value)}`,
    );
  }
}

export class Counter<L extends readonly string[] = readonly []> extends Metric<L, CounterChild> {
  readonly type = "counter";

  /** @internal Use `MetricsRegistry.counter`. */
  constructor(declared: Declared<L>) {
    super(declared, () => new CounterChild());
  }

  protected renderSeries(lines: string[], child: CounterChild, labelText: string): void {
    lines.push(sampleLine(this.name, labelText, child.get()));
  }

  /** Only for a metric without labels. */
  inc(this: Counter<readonly []>, v = 1): void {
    this.onlyChild().inc(v);
  }

  get(this: Counter<readonly []>): number {
    return this.onlyChild().get();
  }
}

export class Gauge<L extends readonly string[] = readonly []> extends Metric<L, GaugeChild> {
  readonly type = "gauge";

  /** @internal Use `MetricsRegistry.gauge`. */
  constructor(declared: Declared<L>) {
    super(declared, () => new GaugeChild());
  }

  protected renderSeries(lines: string[], child: GaugeChild, labelText: string): void {
    lines.push(sampleLine(this.name, labelText, child.get()));
  }

  /** Only for a metric without labels. */
  inc(this: Gauge<readonly []>, v = 1): void {
    this.onlyChild().inc(v);
  }

  dec(this: Gauge<readonly []>, v = 1): void {
    this.onlyChild().dec(v);
  }

  set(this: Gauge<readonly []>, v: number): void {
    this.onlyChild().set(v);
  }

  get(this: Gauge<readonly []>): number {
    return this.onlyChild().get();
  }
}

export class Histogram<L extends readonly string[] = readonly []> extends Metric<L, HistogramChild> {
  readonly type = "histogram";
  /** Finite upper bounds, strictly increasing; the +Inf bucket is implicit. */
  readonly buckets: readonly number[];
  readonly #leTexts: readonly string[];

  /** @internal Use `MetricsRegistry.histogram`. */
  constructor(declared: Declared<L>, upperBounds: Float64Array) {
    super(declared, () => new HistogramChild(upperBounds));
    this.buckets = Object.freeze([...upperBounds]);
    this.#leTexts = [...this.buckets.map(formatNumber), "+Inf"];
  }

  protected renderSeries(lines: string[], child: HistogramChild, labelText: string): void {
    const { count, sum, buckets } = child.snapshot();
    const bucket = `${this.name}_bucket{${labelText === "" ? "" : `${labelText},`}le="`;
    for (let i = 0; i < buckets.length; i++) {
      lines.push(`${bucket}${this.#leTexts[i]!}"} ${formatNumber(buckets[i]!)}`);
    }
    const braces = labelText === "" ? "" : `{${labelText}}`;
    lines.push(`${this.name}_sum${braces} ${formatNumber(sum)}`);
    lines.push(`${this.name}_count${braces} ${formatNumber(count)}`);
  }

  /** Only for a metric without labels. */
  observe(this: Histogram<readonly []>, v: number): void {
    this.onlyChild().observe(v);
  }
}

function checkBuckets(name: string, buckets: readonly number[]): Float64Array {
  const finite =
    buckets.length > 0 && buckets[buckets.length - 1] === Infinity ? buckets.slice(0, -1) : buckets;
  for (let i = 0; i < finite.length; i++) {
    const b = finite[i]!;
    if (typeof b !== "number" || !Number.isFinite(b)) {
      throw new Error(`histogram ${name}: bucket bounds must be finite numbers (+Inf only last), got ${b}`);
    }
    if (i > 0 && !(b > finite[i - 1]!)) {
      throw new Error(
        `histogram ${name}: bucket bounds must be strictly increasing, got ${finite.join(", ")}`,
      );
    }
  }
  return Float64Array.from(finite);
}

// ---------------------------------------------------------------------------------------------------------
// The registry.

type AnyMetric = Metric<readonly string[], unknown>;

export class MetricsRegistry {
  readonly prefix: string;
  readonly #defaultMaxChildren: number;
  readonly #metrics: AnyMetric[] = [];
  /** Every sample name taken, including a histogram's _bucket, _sum and _count. */
  readonly #taken = new Set<string>();
  readonly #collectors: Collector[] = [];
  readonly #overflow: Counter<readonly ["metric"]>;

  constructor(options: RegistryOptions = {}) {
    const prefix = options.prefix ?? "";
    if (prefix !== "" && !METRIC_NAME.test(prefix)) {
      throw new Error(`metric name prefix ${JSON.stringify(prefix)} must match ${METRIC_NAME.source}`);
    }
    this.prefix = prefix;
    this.#defaultMaxChildren = checkMaxChildren("defaultMaxChildren", options.defaultMaxChildren);
    this.#overflow = this.counter(
      "metrics_label_overflow_total",
      "Label sets folded into the __overflow__ series because a metric reached its child cap, by metric.",
      ["metric"],
      { maxChildren: Infinity },
    );
  }

  counter<const L extends readonly string[] = readonly []>(
    name: string,
    help: string,
    labelNames?: L,
    options?: MetricOptions,
  ): Counter<L> {
    return this.#keep(new Counter(this.#declare("counter", name, help, labelNames, options)));
  }

  gauge<const L extends readonly string[] = readonly []>(
    name: string,
    help: string,
    labelNames?: L,
    options?: MetricOptions,
  ): Gauge<L> {
    return this.#keep(new Gauge(this.#declare("gauge", name, help, labelNames, options)));
  }

  histogram<const L extends readonly string[] = readonly []>(
    name: string,
    help: string,
    labelNames?: L,
    buckets: readonly number[] = DEFAULT_LATENCY_BUCKETS,
    options?: MetricOptions,
  ): Histogram<L> {
    const upperBounds = checkBuckets(`${this.prefix}${name}`, buckets);
    return this.#keep(
      new Histogram(this.#declare("histogram", name, help, labelNames, options), upperBounds),
    );
  }

  /** Runs `fn` at the start of every `render()`, in registration order. */
  onCollect(fn: Collector): void {
    if (typeof fn !== "function") throw new TypeError("onCollect takes a function");
    this.#collectors.push(fn);
  }

  /** The text exposition format 0.0.4 (serve with EXPOSITION_CONTENT_TYPE). */
  render(): string {
    for (const fn of this.#collectors) fn();
    const lines: string[] = [];
    for (const m of this.#metrics) m.renderInto(lines);
    lines.push("");
    return lines.join("\n");
  }

  #declare<L extends readonly string[]>(
    type: MetricType,
    name: string,
    help: string,
    labelNames: L | undefined,
    options: MetricOptions | undefined,
  ): Declared<L> {
    const full = `${this.prefix}${name}`;
    if (typeof name !== "string" || !METRIC_NAME.test(full)) {
      throw new Error(`invalid metric name ${JSON.stringify(full)}: must match ${METRIC_NAME.source}`);
    }
    if (typeof help !== "string") throw new TypeError(`metric ${full}: help must be a string`);
    const labels = Object.freeze([...(labelNames ?? [])]) as unknown as L;
    const seen = new Set<string>();
    for (const label of labels) {
      if (typeof label !== "string" || !LABEL_NAME.test(label)) {
        throw new Error(
          `metric ${full}: invalid label name ${JSON.stringify(label)}: must match ${LABEL_NAME.source}`,
        );
      }
      if (label.startsWith("__")) {
        throw new Error(
          `metric ${full}: label name ${JSON.stringify(label)} must not start with "__" (reserved)`,
        );
      }
      if (type === "histogram" && label === "le") {
        throw new Error(`histogram ${full}: label name "le" is reserved for bucket bounds`);
      }
      if (seen.has(label))
        throw new Error(`metric ${full}: label name ${JSON.stringify(label)} is declared twice`);
      seen.add(label);
    }
    const samples = type === "histogram" ? [full, `${full}_bucket`, `${full}_sum`, `${full}_count`] : [full];
    for (const s of samples) {
      if (this.#taken.has(s)) throw new Error(`metric ${full} is already registered (${s} is taken)`);
    }
    const maxChildren =
      options?.maxChildren === undefined
        ? this.#defaultMaxChildren
        : checkMaxChildren(`metric ${full}: maxChildren`, options.maxChildren);
    for (const s of samples) this.#taken.add(s);
    let folds: CounterChild | undefined;
    const onFold = () => (folds ??= this.#overflow.labels(full)).inc();
    return { name: full, help, labelNames: labels, maxChildren, onFold };
  }

  #keep<M>(metric: M): M {
    this.#metrics.push(metric as AnyMetric);
    return metric;
  }
}

function checkMaxChildren(what: string, value: number | undefined): number {
  if (value === undefined) return DEFAULT_MAX_CHILDREN;
  if (value === Infinity || (Number.isInteger(value) && value >= 1)) return value;
  throw new RangeError(`${what} must be an integer ≥ 1 or Infinity, got ${value}`);
}

// ---------------------------------------------------------------------------------------------------------
// Process metrics.

/** How often the event-loop sampler's timer is due (ms; the help text of event_loop_delay_seconds says 20). */
export const EVENT_LOOP_SAMPLE_MS = 20;
/** Event-loop delay buckets, in seconds: 1 ms (a timer's granularity) to 10 s. */
export const EVENT_LOOP_DELAY_BUCKETS: readonly number[] = Object.freeze([
  0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10,
]);
/** Garbage-collection pause buckets, in seconds: 0.1 ms (a young-generation scavenge) to 1 s. */
export const GC_DURATION_BUCKETS: readonly number[] = Object.freeze([
  0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1,
]);
/** V8's collection kinds as perf_hooks reports them → the `kind` label. */
const GC_KINDS: readonly (readonly [number, string])[] = [
  [perfConstants.NODE_PERFORMANCE_GC_MINOR, "minor"],
  [perfConstants.NODE_PERFORMANCE_GC_MAJOR, "major"],
  [perfConstants.NODE_PERFORMANCE_GC_INCREMENTAL, "incremental"],
  [perfConstants.NODE_PERFORMANCE_GC_WEAKCB, "weakcb"],
];

/**
 * Registers `process_resident_memory_bytes`, `process_cpu_seconds_total` and `process_start_time_seconds`
 * (with the registry's prefix), refreshed by a collector at each render; and the two measures of a
 * stalled proxy — everything a Node process serves waits while its one thread is busy:
 *
 * - `event_loop_delay_seconds`, a histogram of how late a timer due every EVENT_LOOP_SAMPLE_MS ran (the
 *   delay any callback — a read, a write, a timeout — met at that moment: a long synchronous task, a GC
 *   pause, or a host that did not run the process);
 * - `gc_duration_seconds{kind}`, a histogram of V8's garbage-collection pauses (perf_hooks' gc entries):
 *   minor (young-generation scavenges), major (mark-compact), incremental (marking steps), weakcb.
 *
 * Both are cumulative histograms, so any number of scrapers read them without resetting each other (a
 * quantile over a window is `histogram_quantile` of their `rate`). The sampler costs ~50 timer callbacks
 * a second. Returns a function that stops the sampler and the GC observer (the proxy's close).
 */
export function registerProcessMetrics(registry: MetricsRegistry): () => void {
  const rss = registry.gauge("process_resident_memory_bytes", "Resident memory size in bytes.");
  const cpu = registry.counter(
    "process_cpu_seconds_total",
    "Total user and system CPU time spent in seconds.",
  );
  const start = registry.gauge(
    "process_start_time_seconds",
    "Start time of the process since unix epoch in seconds.",
  );
  start.set(performance.timeOrigin / 1000);
  const collect = () => {
    rss.set(process.memoryUsage.rss());
    const { user, system } = process.cpuUsage();
    // cpuUsage() is monotonic; re-anchoring on the true total each time keeps rounding from accumulating.
    const total = (user + system) / 1e6;
    const delta = total - cpu.get();
    if (delta > 0) cpu.inc(delta);
  };
  collect();
  registry.onCollect(collect);

  const delay = registry.histogram(
    "event_loop_delay_seconds",
    "How late a timer due every 20 ms ran: the delay every callback met at that moment.",
    [],
    EVENT_LOOP_DELAY_BUCKETS,
  );
  let due = performance.now() + EVENT_LOOP_SAMPLE_MS;
  const sampler = setInterval(() => {
    const now = performance.now();
    // A timer runs up to ~1 ms early by the loop's cached clock: that is no delay.
    delay.observe(Math.max(0, now - due) / 1000);
    due = now + EVENT_LOOP_SAMPLE_MS;
  }, EVENT_LOOP_SAMPLE_MS);
  sampler.unref();

  const gc = registry.histogram(
    "gc_duration_seconds",
    "Garbage-collection pauses, by kind (minor: young-generation scavenges; major: mark-compact; incremental: marking steps; weakcb: weak callbacks).",
    ["kind"],
    GC_DURATION_BUCKETS,
  );
  const byKind = new Map(GC_KINDS.map(([k, name]) => [k, gc.labels(name)] as const));
  const observer = new PerformanceObserver((list) => {
    for (const entry of list.getEntries()) {
      const child = byKind.get((entry as { detail?: { kind?: number } }).detail?.kind ?? -1);
      child?.observe(entry.duration / 1000);
    }
  });
  observer.observe({ entryTypes: ["gc"] });
  return () => {
    clearInterval(sampler);
    observer.disconnect();
  };
}

// ---------------------------------------------------------------------------------------------------------
// Exposition text.

/** A sample value as Prometheus writes it: +Inf, -Inf, NaN, integers without exponent, else JS's shortest form. */
export function formatNumber(v: number): string {
  if (Number.isFinite(v)) {
    // Below 1e21 String() never uses an exponent for integers; above, BigInt spells the exact value.
    if (Math.abs(v) >= 1e21 && Number.isInteger(v)) return BigInt(v).toString();
    return String(v);
  }
  return v > 0 ? "+Inf" : v < 0 ? "-Inf" : "NaN";
}

/** Escapes `\`, `"` and newline in a label value. */
export function escapeLabelValue(value: string): string {
  return /[\\"\n]/.test(value) ? value.replace(/[\\"\n]/g, (c) => (c === "\n" ? "\\n" : `\\${c}`)) : value;
}

/** Escapes `\` and newline in help text. */
export function escapeHelp(help: string): string {
  return /[\\\n]/.test(help) ? help.replace(/[\\\n]/g, (c) => (c === "\n" ? "\\n" : "\\\\")) : help;
}

function sampleLine(name: string, labelText: string, value: number): string {
  return labelText === "" ? `${name} ${formatNumber(value)}` : `${name}{${labelText}} ${formatNumber(value)}`;
}

// ---------------------------------------------------------------------------------------------------------
// Metrics both proxies keep.

/**
 * The upstream metrics both proxies keep, registered once per registry with one name, help and label
 * set (the conventions' catalog, components/observability/conventions.ts): attempts by outcome,
 * retries, retry-budget refusals, circuit-breaker overflow, outlier ejections, health transitions and
 * panic routing — the first label of each is the proxy (gateway, sidecar).
 */
export function registerUpstreamMetrics(registry: MetricsRegistry) {
  return {
    upstream: registry.counter("upstream_requests_total", "Upstream attempts, by cluster and outcome.", [
      "proxy",
      "cluster",
      "outcome",
    ]),
    retries: registry.counter("retries_total", "Retries, by cluster and the failure retried.", [
      "proxy",
      "cluster",
      "reason",
    ]),
    budget: registry.counter(
      "retry_budget_exhausted_total",
      "Retries refused because the budget was spent.",
      ["proxy", "cluster"],
    ),
    overflow: registry.counter("upstream_overflow_total", "Requests refused by the circuit breaker.", [
      "proxy",
      "cluster",
    ]),
    ejections: registry.counter("upstream_ejections_total", "Endpoints ejected by outlier detection.", [
      "proxy",
      "cluster",
    ]),
    health: registry.counter("upstream_health_changes_total", "Active health-check transitions.", [
      "proxy",
      "cluster",
      "healthy",
    ]),
    panic: registry.counter(
      "upstream_panic_total",
      "Requests balanced across every endpoint of a cluster, available or not, because fewer than half were available (panic routing).",
      ["proxy", "cluster"],
    ),
  };
}

/**
 * `config_reloads_total{proxy,result}`, its `success` and `failure` series created at 0: a series that
 * first appears at 1 is no increase to `increase()`, so the reload alert could not see a process's first
 * failure (and read the series appearing instead, which a scrape gap fakes).
 */
export function registerReloadsCounter(registry: MetricsRegistry, proxy: "gateway" | "sidecar") {
  const reloads = registry.counter("config_reloads_total", "Config reload attempts, by result.", [
    "proxy",
    "result",
  ]);
  reloads.labels(proxy, "success");
  reloads.labels(proxy, "failure");
  return reloads;
}

/**
 * The lifecycle metrics both proxies keep: requests in flight (the child of `proxy`), config reload
 * attempts by result (registerReloadsCounter), and the serving config's hash (config_info: one series, the
 * serving hash's; a reload removes the previous one).
 */
export function registerLifecycleMetrics(registry: MetricsRegistry, proxy: "gateway" | "sidecar") {
  return {
    inFlight: registry.gauge("requests_in_flight", "Requests being handled.", ["proxy"]).labels(proxy),
    reloads: registerReloadsCounter(registry, proxy),
    info: registry.gauge(
      "config_info",
      "The config serving now (value 1), by content hash.",
      ["proxy", "hash"],
      {
        maxChildren: 4,
      },
    ),
  };
}

/**
 * `access_log_dropped_total{proxy}`: access lines the buffered logger dropped on a stalled stdout
 * (telemetry/logs.ts), read from `dropped` (a running total) at each render. The series exists (0) without
 * a source too, so dashboards show 0, not nothing.
 */
export function registerAccessLogDropped(
  registry: MetricsRegistry,
  proxy: "gateway" | "sidecar",
  dropped: (() => number) | undefined,
): void {
  const child = registry
    .counter(
      "access_log_dropped_total",
      "Access lines dropped because stdout did not take them (a stalled log collector); the requests were served.",
      ["proxy"],
    )
    .labels(proxy);
  if (dropped === undefined) return;
  let counted = 0;
  registry.onCollect(() => {
    const n = dropped();
    if (n > counted) child.inc(n - counted);
    counted = n;
  });
}
