/**
 * Human-readable durations (`500ms`, `2s`, `1m30s`, `24h`, `10y`) and sizes (`16KiB`, `1MiB`, `512B`).
 * The regular expressions are exported so the JSON Schema carries them as `pattern` for editors.
 */

export const DURATION_PATTERN = "^(?:[0-9]+(?:\\.[0-9]+)?(?:ms|s|m|h|d|y))+$";
export const SIZE_PATTERN = "^[0-9]+(?:\\.[0-9]+)?(?:B|KiB|MiB|GiB|KB|MB|GB)$";

const DURATION_RE = new RegExp(DURATION_PATTERN);
const DURATION_PART_RE = /([0-9]+(?:\.[0-9]+)?)(ms|s|m|h|d|y)/g;
const SIZE_RE = /^([0-9]+(?:\.[0-9]+)?)(B|KiB|MiB|GiB|KB|MB|GB)$/;

const MS_PER: Record<string, number> = {
  ms: 1,
  s: 1000,
  m: 60_000,
  h: 3_600_000,
  d: 86_400_000,
  y: 365 * 86_400_000,
};
const BYTES_PER: Record<string, number> = {
  B: 1,
  KB: 1000,
  MB: 1000 ** 2,
  GB: 1000 ** 3,
  KiB: 1024,
  MiB: 1024 ** 2,
  GiB: 1024 ** 3,
};

export function isDuration(text: string): boolean {
  return DURATION_RE.test(text);
}

/** Milliseconds in a duration string, rounded to a whole millisecond. Throws on a malformed string. */
export function parseDuration(text: string): number {
  if (!DURATION_RE.test(text))
    throw new Error(`"${text}" is not a duration (write e.g. "500ms", "2s", "1m30s")`);
  let total = 0;
  for (const m of text.matchAll(DURATION_PART_RE)) total += Number(m[1]) * MS_PER[m[2]!]!;
  return Math.round(total);
}

export function isSize(text: string): boolean {
  return SIZE_RE.test(text);
}

/** Bytes in a size string, rounded down to a whole byte. Throws on a malformed string. */
export function parseSize(text: string): number {
  const m = SIZE_RE.exec(text);
  if (!m) throw new Error(`"${text}" is not a size (write e.g. "16KiB", "1MiB")`);
  return Math.floor(Number(m[1]) * BYTES_PER[m[2]!]!);
}

/** The shortest exact human form of a millisecond count (`1500` → `1500ms`, `60000` → `1m`). */
export function formatDuration(ms: number): string {
  for (const unit of ["y", "d", "h", "m", "s"] as const) {
    const per = MS_PER[unit]!;
    if (ms >= per && ms % per === 0) return `${ms / per}${unit}`;
  }
  return `${ms}ms`;
}
