/**
 * Renders the small subset of Prometheus's alert templates the generated rules use — `{{ $labels.name }}`,
 * `{{ $value | humanize }}`, `| humanizePercentage`, `| humanizeDuration` and `{{ printf "%.3g" $value }}` —
 * exactly as Prometheus does (Go's `%.4g` formatting included), so generated `promtool test rules` files
 * can state the annotations an alert fires with.
 */

/**
 * The decimal digits of |v| rounded to `precision` significant digits the way Go's strconv does — from
 * the double's exact decimal value, ties to even (JavaScript's toExponential rounds ties up) — and the
 * decimal exponent of the first digit.
 */
function roundDigits(v: number, precision: number): { digits: string; exp: number } {
  // 60 fractional digits hold the exact value of every double this renders (alert values, not subnormals).
  const [m, e] = Math.abs(v).toExponential(60).split("e") as [string, string];
  const all = m.replace(".", "");
  let exp = Number(e);
  const kept = all.slice(0, precision).split("").map(Number);
  const next = Number(all[precision]);
  const rest = all.slice(precision + 1);
  const up = next > 5 || (next === 5 && (/[1-9]/.test(rest) || kept[kept.length - 1]! % 2 === 1));
  if (up) {
    let i = kept.length - 1;
    while (i >= 0 && kept[i] === 9) kept[i--] = 0;
    if (i < 0) {
      kept.unshift(1);
      kept.pop();
      exp++;
    } else kept[i]!++;
  }
  return { digits: kept.join(""), exp };
}

/** Go's `%.{precision}g`. */
export function goG(v: number, precision: number): string {
  if (Number.isNaN(v)) return "NaN";
  if (!Number.isFinite(v)) return v > 0 ? "+Inf" : "-Inf";
  if (v === 0) return "0";
  const sign = v < 0 ? "-" : "";
  const { digits, exp } = roundDigits(v, precision);
  if (exp < -4 || exp >= precision) {
    const abs = Math.abs(exp);
    const mantissa = stripZeros(`${digits[0]}.${digits.slice(1)}`);
    return `${sign}${mantissa}e${exp < 0 ? "-" : "+"}${abs < 10 ? "0" : ""}${abs}`;
  }
  const fixed =
    exp >= 0 ? `${digits.slice(0, exp + 1)}.${digits.slice(exp + 1)}` : `0.${"0".repeat(-exp - 1)}${digits}`;
  return sign + stripZeros(fixed);
}

function stripZeros(s: string): string {
  return s.includes(".") ? s.replace(/0+$/, "").replace(/\.$/, "") : s;
}

/** Prometheus's `humanize`: SI prefixes (k, M, … and m, u, n, …) with 4 significant digits. */
export function humanize(v: number): string {
  if (v === 0 || !Number.isFinite(v)) return goG(v, 4);
  let prefix = "";
  if (Math.abs(v) >= 1) {
    for (const p of ["k", "M", "G", "T", "P", "E", "Z", "Y"]) {
      if (Math.abs(v) < 1000) break;
      prefix = p;
      v /= 1000;
    }
    return `${goG(v, 4)}${prefix}`;
  }
  for (const p of ["m", "u", "n", "p", "f", "a", "z", "y"]) {
    if (Math.abs(v) >= 1) break;
    prefix = p;
    v *= 1000;
  }
  return `${goG(v, 4)}${prefix}`;
}

/** Prometheus's `humanizePercentage`. */
export function humanizePercentage(v: number): string {
  return `${goG(v * 100, 4)}%`;
}

/** Prometheus's `humanizeDuration` (seconds in; `1d 2h 3m 4s`, `7h 50m 0s`, `12.5s`, `500ms`). */
export function humanizeDuration(v: number): string {
  if (!Number.isFinite(v)) return goG(v, 4);
  if (v === 0) return "0s";
  if (Math.abs(v) >= 1) {
    const sign = v < 0 ? "-" : "";
    const abs = Math.abs(v);
    const d = Math.trunc(abs);
    const s = d % 60;
    const m = Math.trunc(d / 60) % 60;
    const h = Math.trunc(d / 3600) % 24;
    const days = Math.trunc(d / 86400);
    if (days !== 0) return `${sign}${days}d ${h}h ${m}m ${s}s`;
    if (h !== 0) return `${sign}${h}h ${m}m ${s}s`;
    if (m !== 0) return `${sign}${m}m ${s}s`;
    return `${sign}${goG(abs, 4)}s`;
  }
  let prefix = "";
  for (const p of ["m", "u", "n", "p", "f", "a", "z", "y"]) {
    if (Math.abs(v) >= 1) break;
    prefix = p;
    v *= 1000;
  }
  return `${goG(v, 4)}${prefix}s`;
}

const ACTION = /\{\{\s*(.*?)\s*\}\}/g;

/**
 * Expands the template actions of an annotation. Throws on an action outside the supported subset (so a
 * new template form cannot silently be rendered wrong in a test's expectation).
 */
export function renderTemplate(
  text: string,
  labels: Readonly<Record<string, string>>,
  value: number,
): string {
  return text.replace(ACTION, (_all, action: string) => {
    let m = /^\$labels\.([a-zA-Z_][a-zA-Z0-9_]*)$/.exec(action);
    if (m) return labels[m[1]!] ?? "";
    m = /^\$value\s*\|\s*(humanize|humanizePercentage|humanizeDuration)$/.exec(action);
    if (m) {
      const fn =
        m[1] === "humanize"
          ? humanize
          : m[1] === "humanizePercentage"
            ? humanizePercentage
            : humanizeDuration;
      return fn(value);
    }
    m = /^printf\s+"%\.([0-9])g"\s+\$value$/.exec(action);
    if (m) return goG(value, Number(m[1]));
    throw new Error(`unsupported template action {{ ${action} }}`);
  });
}
