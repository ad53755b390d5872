/**
 * The arithmetic of the topology page's live numbers, pure: a parser of the Prometheus text exposition
 * format (0.0.4, what the proxies' `/metrics` serve), and windowed differencing of counters and cumulative
 * histogram buckets over a series of scrapes — request rate, error ratio and a quantile from buckets,
 * computed the way Prometheus' `increase()` (without extrapolation) and `histogram_quantile()` do.
 *
 * No I/O, no clock: scrape times are arguments.
 */

/** One sample of an exposition: a series name, its labels, and the value. */
export interface Sample {
  readonly name: string;
  readonly labels: Readonly<Record<string, string>>;
  readonly value: number;
}

export interface ParsedExposition {
  readonly samples: readonly Sample[];
  /** Lines that could not be read (`line N: why`); the other lines are still returned. */
  readonly errors: readonly string[];
}

const NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*/;
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*/;

/**
 * Parses a text exposition. Comments (`# HELP`, `# TYPE`) and blank lines are skipped; a malformed line
 * is reported in `errors` and skipped, so one bad line never hides the rest. Never throws.
 */
export function parseExposition(text: string): ParsedExposition {
  const samples: Sample[] = [];
  const errors: string[] = [];
  const lines = text.split("\n");
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!.trim();
    if (line === "" || line.startsWith("#")) continue;
    const s = parseSampleLine(line);
    if (typeof s === "string") errors.push(`line ${i + 1}: ${s}`);
    else samples.push(s);
  }
  return { samples, errors };
}

/** One sample line, or why it is malformed. */
export function parseSampleLine(line: string): Sample | string {
  const name = NAME.exec(line);
  if (!name) return "no metric name";
  let i = name[0].length;
  const labels: Record<string, string> = {};
  if (line[i] === "{") {
    i++;
    for (;;) {
      while (line[i] === " ") i++;
      if (line[i] === "}") {
        i++;
        break;
      }
      const ln = LABEL_NAME.exec(line.slice(i));
      if (!ln) return "malformed label name";
      i += ln[0].length;
      while (line[i] === " ") i++;
      if (line[i] !== "=" || line[i + 1] !== '"') return `label ${ln[0]}: expected ="…"`;
      i += 2;
      let value = "";
      for (;;) {
        const c = line[i];
        if (c === undefined) return `label ${ln[0]}: unterminated value`;
        i++;
        if (c === '"') break;
        if (c === "\\") {
          const e = line[i++];
          if (e === "n") value += "\n";
          else if (e === "\\" || e === '"') value += e;
          else return `label ${ln[0]}: bad escape \\${e ?? ""}`;
        } else value += c;
      }
      labels[ln[0]] = value;
      while (line[i] === " ") i++;
      if (line[i] === ",") i++;
      else if (line[i] !== "}") return "expected , or } after a label";
    }
  }
  if (line[i] !== " " && line[i] !== "\t") return "expected a space before the value";
  const rest = line
    .slice(i)
    .trim()
    .split(/[ \t]+/);
  if (rest.length < 1 || rest.length > 2) return "expected a value and an optional timestamp";
  const value = parseValue(rest[0]!);
  if (value === null) return `malformed value ${JSON.stringify(rest[0])}`;
  return { name: name[0], labels, value };
}

function parseValue(s: string): number | null {
  if (s === "+Inf" || s === "Inf") return Infinity;
  if (s === "-Inf") return -Infinity;
  if (s === "NaN") return NaN;
  if (!/^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$/.test(s)) return null;
  return Number(s);
}

/** Label matchers: every listed label must have the value (or one of the values). */
export type Match = Readonly<Record<string, string | readonly string[]>>;

function matches(labels: Readonly<Record<string, string>>, match: Match): boolean {
  for (const k in match) {
    const want = match[k]!;
    const got = labels[k];
    if (got === undefined) return false;
    if (typeof want === "string" ? got !== want : !want.includes(got)) return false;
  }
  return true;
}

/** The sum of the values of the series `name` that match (NaN samples are left out). */
export function sumOf(samples: readonly Sample[], name: string, match: Match = {}): number {
  let sum = 0;
  for (const s of samples)
    if (s.name === name && !Number.isNaN(s.value) && matches(s.labels, match)) sum += s.value;
  return sum;
}

/** One scrape of one target: when it was taken (ms) and what it returned. */
export interface Snapshot {
  readonly at: number;
  readonly samples: readonly Sample[];
}

/** A series' identity within one target: its name and labels, in a canonical key. */
export function seriesKey(s: Sample): string {
  const keys = Object.keys(s.labels).sort();
  let k = s.name;
  for (const l of keys) k += `\u0000${l}\u0001${s.labels[l]}`;
  return k;
}

/**
 * How much each matching counter series grew between the first and the last snapshot, summed: per series
 * the sum of its step-to-step increases, where a drop is a counter reset (the process restarted) and the
 * new value counts as the increase. A series absent from a snapshot counts as 0 there — the proxies create
 * a series on its first event, so its first value is all increase.
 */
export function increase(snapshots: readonly Snapshot[], name: string, match: Match = {}): number {
  return increases(snapshots, name, match, null).get("") ?? 0;
}

/** `increase` per value of the label `by` (e.g. `le` for buckets, `code_class` for status classes). */
export function increaseBy(
  snapshots: readonly Snapshot[],
  name: string,
  by: string,
  match: Match = {},
): Map<string, number> {
  return increases(snapshots, name, match, by);
}

function increases(
  snapshots: readonly Snapshot[],
  name: string,
  match: Match,
  by: string | null,
): Map<string, number> {
  const out = new Map<string, number>();
  if (snapshots.length < 2) return out;
  let prev = valuesOf(snapshots[0]!, name, match);
  for (let i = 1; i < snapshots.length; i++) {
    const cur = valuesOf(snapshots[i]!, name, match);
    for (const [key, { value, group }] of cur) {
      const before = prev.get(key)?.value ?? 0;
      const inc = value >= before ? value - before : value;
      const g = by === null ? "" : (group[by] ?? "");
      out.set(g, (out.get(g) ?? 0) + inc);
    }
    prev = cur;
  }
  return out;
}

function valuesOf(
  snap: Snapshot,
  name: string,
  match: Match,
): Map<string, { value: number; group: Readonly<Record<string, string>> }> {
  const m = new Map<string, { value: number; group: Readonly<Record<string, string>> }>();
  for (const s of snap.samples)
    if (s.name === name && !Number.isNaN(s.value) && matches(s.labels, match))
      m.set(seriesKey(s), { value: s.value, group: s.labels });
  return m;
}

/** Seconds between the first and the last snapshot (0 with fewer than two). */
export function spanSeconds(snapshots: readonly Snapshot[]): number {
  if (snapshots.length < 2) return 0;
  return (snapshots[snapshots.length - 1]!.at - snapshots[0]!.at) / 1000;
}

/**
 * The φ-quantile of a histogram given as cumulative bucket counts by upper bound (the `le` label's
 * text, `+Inf` included), as Prometheus' `histogram_quantile` computes it: the rank φ × count is found in
 * the first bucket whose cumulative count reaches it, and interpolated linearly inside it (the lowest
 * bucket starts at 0); a rank in the +Inf bucket answers the highest finite bound. null when the
 * histogram is empty (no observations) or has no +Inf bucket.
 */
export function bucketQuantile(q: number, buckets: ReadonlyMap<string, number>): number | null {
  const list = [...buckets]
    .map(([le, count]) => ({ upper: parseValue(le), count }))
    .filter((b): b is { upper: number; count: number } => b.upper !== null && !Number.isNaN(b.upper))
    .sort((a, b) => a.upper - b.upper);
  if (list.length < 1 || list[list.length - 1]!.upper !== Infinity) return null;
  // Cumulative counts that decrease (buckets scraped mid-update) are made monotonic, as Prometheus does.
  for (let i = 1; i < list.length; i++)
    if (list[i]!.count < list[i - 1]!.count) list[i]!.count = list[i - 1]!.count;
  const total = list[list.length - 1]!.count;
  if (!(total > 0)) return null;
  if (q < 0) return -Infinity;
  if (q > 1) return Infinity;
  const rank = q * total;
  const b = list.findIndex((x) => x.count >= rank); // found: the +Inf bucket holds every observation
  if (b === list.length - 1) return list.length > 1 ? list[list.length - 2]!.upper : null;
  const upper = list[b]!.upper;
  if (b === 0 && upper <= 0) return upper;
  const lower = b === 0 ? 0 : list[b - 1]!.upper;
  const below = b === 0 ? 0 : list[b - 1]!.count;
  const inBucket = list[b]!.count - below;
  return inBucket > 0 ? lower + (upper - lower) * ((rank - below) / inBucket) : lower;
}

/** Live numbers of one edge (or node) over the window. */
export interface TrafficStats {
  /** Requests per second. */
  readonly rate: number;
  /** Share of requests answered 5xx (0 without requests). */
  readonly errorRatio: number;
  /** Requests per second by status class (`2xx`…`5xx`), or by outcome where only outcomes exist. */
  readonly codes: Readonly<Record<string, number>>;
  /** The 99th percentile latency in seconds (null without a latency histogram or without requests). */
  readonly p99: number | null;
  /** Requests counted in the window. */
  readonly requests: number;
}

/** Where an edge's numbers are read: a counter with a status label, and optionally a latency histogram. */
export interface StatsSource {
  readonly counter: string;
  /** The label holding the status class (`code_class`) or outcome. */
  readonly statusLabel: string;
  /** Whether a status value counts as an error (`5xx`; outcomes such as `connect_failure`). */
  readonly isError: (status: string) => boolean;
  readonly histogram: string | null;
  readonly match: Match;
}

/** Rate, error ratio, status mix and p99 of one source over a window of snapshots. */
export function windowStats(snapshots: readonly Snapshot[], src: StatsSource): TrafficStats {
  const seconds = spanSeconds(snapshots);
  const byStatus = increaseBy(snapshots, src.counter, src.statusLabel, src.match);
  let requests = 0;
  let errors = 0;
  const codes: Record<string, number> = {};
  for (const [status, n] of [...byStatus].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) {
    if (n === 0) continue;
    requests += n;
    if (src.isError(status)) errors += n;
    codes[status] = seconds > 0 ? n / seconds : 0;
  }
  const p99 =
    src.histogram === null || requests === 0
      ? null
      : bucketQuantile(0.99, increaseBy(snapshots, `${src.histogram}_bucket`, "le", src.match));
  return {
    rate: seconds > 0 ? requests / seconds : 0,
    errorRatio: requests > 0 ? errors / requests : 0,
    codes,
    p99,
    requests,
  };
}

/**
 * Two sources' numbers as one (an egress edge: requests and tunnels): rates, counts and the status mix
 * add up, the error ratio is over both, the p99 is the first's (the second has no latency).
 */
export function mergeStats(a: TrafficStats, b: TrafficStats): TrafficStats {
  const requests = a.requests + b.requests;
  const errors = a.errorRatio * a.requests + b.errorRatio * b.requests;
  const codes: Record<string, number> = { ...a.codes };
  for (const [k, v] of Object.entries(b.codes)) codes[k] = (codes[k] ?? 0) + v;
  return {
    rate: a.rate + b.rate,
    errorRatio: requests > 0 ? errors / requests : 0,
    codes,
    p99: a.p99 ?? b.p99,
    requests,
  };
}

/** The snapshots within `windowMs` of the newest one (at least the newest two, when there are two). */
export function withinWindow(snapshots: readonly Snapshot[], windowMs: number): Snapshot[] {
  if (snapshots.length === 0) return [];
  const newest = snapshots[snapshots.length - 1]!.at;
  const inside = snapshots.filter((s) => s.at >= newest - windowMs);
  return inside.length >= 2 || snapshots.length < 2 ? inside : snapshots.slice(-2);
}
