/**
 * PromQL helpers for the generators (selectors, durations, bucket matchers) and a small reader that finds
 * every selector an expression uses — the metric names and their label matchers — and every label named in
 * a `by`/`without`/`on`/`ignoring`/`group_*` clause. The tests use the reader to check that generated
 * rules and dashboards only query series the proxies emit.
 */

/** A label matcher value: an exact string, or `{ re }` for `=~`, `{ not }` for `!=`. */
export type MatcherValue = string | { readonly re: string } | { readonly not: string };

/** `"…"` with PromQL's escapes (backslash, double quote, newline). */
export function quote(value: string): string {
  return `"${value.replace(/\\/g, "\\\\").replace(/"/g, '\\"').replace(/\n/g, "\\n")}"`;
}

/** `metric{a="x",b=~"y"}`; matchers in the given order, empty braces omitted. */
export function selector(metric: string, matchers: Readonly<Record<string, MatcherValue>> = {}): string {
  const parts = Object.entries(matchers).map(([label, v]) =>
    typeof v === "string"
      ? `${label}=${quote(v)}`
      : "re" in v
        ? `${label}=~${quote(v.re)}`
        : `${label}!=${quote(v.not)}`,
  );
  return parts.length === 0 ? metric : `${metric}{${parts.join(",")}}`;
}

const UNITS: readonly [string, number][] = [
  ["y", 365 * 86_400_000],
  ["w", 7 * 86_400_000],
  ["d", 86_400_000],
  ["h", 3_600_000],
  ["m", 60_000],
  ["s", 1000],
];

/** A Prometheus duration for whole milliseconds: the largest unit that divides it (`30d`, `5m`, `1500ms`). */
export function promDuration(ms: number): string {
  if (!Number.isInteger(ms) || ms <= 0)
    throw new RangeError(`a duration must be a positive integer ms, got ${ms}`);
  for (const [unit, per] of UNITS) {
    // Weeks only when they read better than days would not: 7d stays 7d, 14d stays 14d.
    if (unit === "w" || unit === "y") continue;
    if (ms % per === 0) return `${ms / per}${unit}`;
  }
  return `${ms}ms`;
}

/**
 * The `le` matcher of a histogram bucket bound. The runtime writes bounds as JavaScript numbers (`0.25`,
 * `1`); Prometheus 3 normalizes integral bounds to `1.0` when it ingests classic histograms, so an integral
 * bound matches both spellings.
 */
export function leMatcher(seconds: number): MatcherValue {
  const text = String(seconds);
  return Number.isInteger(seconds) ? { re: `${text}|${text}\\.0` } : text;
}

/** A number as PromQL reads it back exactly, without float noise (`0.0144`, not `0.014400000000000001`). */
export function promNumber(v: number): string {
  if (!Number.isFinite(v)) throw new RangeError(`not a finite number: ${v}`);
  return String(Number(v.toPrecision(12)));
}

// ───────────────────────────── the reader ─────────────────────────────

export interface Matcher {
  readonly label: string;
  readonly op: "=" | "!=" | "=~" | "!~";
  readonly value: string;
}

export interface Selector {
  readonly metric: string;
  readonly matchers: readonly Matcher[];
}

export interface ExpressionParts {
  readonly selectors: readonly Selector[];
  /** Label lists of `by (…)`, `without (…)`, `on (…)`, `ignoring (…)`, `group_left (…)`, `group_right (…)`. */
  readonly groupings: readonly (readonly string[])[];
}

const KEYWORDS = new Set([
  "by",
  "without",
  "on",
  "ignoring",
  "group_left",
  "group_right",
  "bool",
  "and",
  "or",
  "unless",
  "offset",
  "atan2",
  "inf",
  "nan",
  "start",
  "end",
]);
const GROUPING = new Set(["by", "without", "on", "ignoring", "group_left", "group_right"]);
/** Aggregation operators: `sum by (x) (…)` puts the grouping between the name and its parenthesis. */
const AGGREGATIONS = new Set([
  "sum",
  "min",
  "max",
  "avg",
  "group",
  "stddev",
  "stdvar",
  "count",
  "count_values",
  "bottomk",
  "topk",
  "quantile",
  "limitk",
  "limit_ratio",
]);

type Token =
  | { kind: "range"; text: string; at: number }
  | { kind: "ident"; text: string; at: number }
  | { kind: "string"; text: string; at: number }
  | { kind: "number"; text: string; at: number }
  | { kind: "punct"; text: string; at: number };

const IDENT = /^[a-zA-Z_:][a-zA-Z0-9_:]*/;
const NUMBER =
  /^(?:0x[0-9a-fA-F]+|[0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)(?:(?:ms|[smhdwy])(?:[0-9]+(?:ms|[smhdwy]))*)?/;
const PUNCT = /^(?:=~|!~|!=|==|<=|>=|[-+*/%^=<>(){},:@])/;

function tokenize(expr: string): Token[] {
  const out: Token[] = [];
  let i = 0;
  while (i < expr.length) {
    const rest = expr.slice(i);
    const c = expr[i]!;
    if (/\s/.test(c)) {
      i++;
      continue;
    }
    if (c === "#") {
      const nl = expr.indexOf("\n", i);
      i = nl < 0 ? expr.length : nl;
      continue;
    }
    if (c === "[") {
      // A range or subquery (durations, or a dashboard variable such as $__rate_interval): one token.
      const end = expr.indexOf("]", i);
      if (end < 0) throw new SyntaxError(`unterminated [ at ${i} in ${expr}`);
      out.push({ kind: "range", text: expr.slice(i, end + 1), at: i });
      i = end + 1;
      continue;
    }
    if (c === '"' || c === "'" || c === "`") {
      let j = i + 1;
      let text = "";
      while (j < expr.length && expr[j] !== c) {
        if (expr[j] === "\\" && c !== "`") {
          const n = expr[j + 1];
          text += n === "n" ? "\n" : n === "t" ? "\t" : (n ?? "");
          j += 2;
        } else text += expr[j++];
      }
      if (j >= expr.length) throw new SyntaxError(`unterminated string at ${i} in ${expr}`);
      out.push({ kind: "string", text, at: i });
      i = j + 1;
      continue;
    }
    const num = NUMBER.exec(rest);
    if (num && /[0-9.]/.test(c)) {
      out.push({ kind: "number", text: num[0], at: i });
      i += num[0].length;
      continue;
    }
    const id = IDENT.exec(rest);
    if (id) {
      out.push({ kind: "ident", text: id[0], at: i });
      i += id[0].length;
      continue;
    }
    const p = PUNCT.exec(rest);
    if (p) {
      out.push({ kind: "punct", text: p[0], at: i });
      i += p[0].length;
      continue;
    }
    throw new SyntaxError(`unexpected ${JSON.stringify(c)} at ${i} in ${expr}`);
  }
  return out;
}

/**
 * Every selector (metric name and matchers) and every grouping label list of a PromQL expression. Range
 * and subquery brackets, numbers, strings and function names are skipped. A selector without a metric name
 * (`{__name__=~"…"}`) is refused: the generators never write one, and it could not be checked.
 */
export function readExpression(expr: string): ExpressionParts {
  const tokens = tokenize(expr);
  const selectors: Selector[] = [];
  const groupings: string[][] = [];
  const isPunct = (t: Token | undefined, text: string) => t?.kind === "punct" && t.text === text;
  let i = 0;
  const matchersAt = (): Matcher[] => {
    // tokens[i] is "{"
    const matchers: Matcher[] = [];
    i++;
    while (!isPunct(tokens[i], "}")) {
      const label = tokens[i];
      const op = tokens[i + 1];
      const value = tokens[i + 2];
      if (label?.kind !== "ident" || op?.kind !== "punct" || value?.kind !== "string")
        throw new SyntaxError(`malformed label matcher at ${label?.at ?? expr.length} in ${expr}`);
      if (!["=", "!=", "=~", "!~"].includes(op.text))
        throw new SyntaxError(`unknown matcher operator ${op.text} in ${expr}`);
      matchers.push({ label: label.text, op: op.text as Matcher["op"], value: value.text });
      i += 3;
      if (isPunct(tokens[i], ",")) i++;
    }
    i++;
    return matchers;
  };
  while (i < tokens.length) {
    const t = tokens[i]!;
    if (t.kind === "punct" && t.text === "{")
      throw new SyntaxError(`a selector without a metric name at ${t.at} in ${expr}`);
    if (t.kind !== "ident") {
      i++;
      continue;
    }
    if (GROUPING.has(t.text)) {
      i++;
      if (isPunct(tokens[i], "(")) {
        const labels: string[] = [];
        i++;
        while (i < tokens.length && !isPunct(tokens[i], ")")) {
          const l = tokens[i]!;
          if (l.kind === "ident") labels.push(l.text);
          i++;
        }
        i++;
        groupings.push(labels);
      }
      continue;
    }
    if (KEYWORDS.has(t.text)) {
      i++;
      continue;
    }
    const next = tokens[i + 1];
    if (
      isPunct(next, "(") ||
      (AGGREGATIONS.has(t.text) && next?.kind === "ident" && GROUPING.has(next.text))
    ) {
      i++; // a function or aggregation
      continue;
    }
    i++;
    selectors.push({ metric: t.text, matchers: isPunct(tokens[i], "{") ? matchersAt() : [] });
  }
  return { selectors, groupings };
}
