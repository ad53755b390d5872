/**
 * Renders the small subset of Prometheus's alert templates the generated rules use — `{{ $labels.name }}`,
 * `{{ $value | humanize }}`, `| humanizePercentage`, `| humanizeDuration` and `{{ printf "%.3g" $value }}` —
 * exactly as Prometheus does (Go's `%.4g` formatting included), so generated `promtool test rules` files
 * can state the annotations an alert fires with.
 */

/** Go's `%.{precision}g`. */
export function goG(v: number, precision: number): string {
  if (Number.isNaN(v)) return "NaN";
  if (!Number.isFinite(v)) return v > 0 ? "+Inf" : "-Inf";
  if (v === 0) return "0";
  const [mantissa, e] = v.toExponential(precision - 1).split("e") as [string, string];
  const exp = Number(e);
  if (exp < -4 || exp >= precision) {
    const abs = Math.abs(exp);
    return `${stripZeros(mantissa)}e${exp < 0 ? "-" : "+"}${abs < 10 ? "0" : ""}${abs}`;
  }
  return stripZeros(v.toFixed(precision - 1 - exp));
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
