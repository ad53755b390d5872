/**
 * The pure HTTP pieces of static serving (RFC 9110): byte ranges, validators (ETag, Last-Modified) and
 * their preconditions, Accept-Encoding negotiation. No I/O.
 *
 * Ranges: one `bytes=` range — `a-b`, `a-` or the suffix `-n` — is served as 206; a range that starts
 * past the end (or a zero-length suffix, or any range of an empty file) is unsatisfiable (416).
 * A syntactically invalid Range header is ignored (200), and so is a request for several ranges: the
 * gateway answers those with the full representation instead of multipart/byteranges (RFC 9110 §14.2
 * lets a server ignore Range).
 */

export type RangeResult =
  | { readonly kind: "none" }
  | { readonly kind: "range"; readonly start: number; readonly end: number }
  | { readonly kind: "unsatisfiable" };

const NONE: RangeResult = { kind: "none" };
const UNSATISFIABLE: RangeResult = { kind: "unsatisfiable" };
const DIGITS = /^[0-9]+$/;

/** A non-negative decimal; numbers too long to be exact count as larger than any file. */
function decimal(s: string): number {
  return s.length > 15 ? Number.POSITIVE_INFINITY : Number(s);
}

/** Parses a Range header against a representation of `size` bytes. */
export function parseRange(header: string | undefined, size: number): RangeResult {
  if (header === undefined) return NONE;
  const eq = header.indexOf("=");
  if (eq < 0 || header.slice(0, eq).trim().toLowerCase() !== "bytes") return NONE;
  const spec = header.slice(eq + 1).trim();
  if (spec.includes(",")) return NONE;
  const dash = spec.indexOf("-");
  if (dash < 0) return NONE;
  const first = spec.slice(0, dash).trim();
  const last = spec.slice(dash + 1).trim();
  if (first === "") {
    if (!DIGITS.test(last)) return NONE;
    const n = decimal(last);
    if (n === 0 || size === 0) return UNSATISFIABLE;
    return { kind: "range", start: Math.max(0, size - n), end: size - 1 };
  }
  if (!DIGITS.test(first) || (last !== "" && !DIGITS.test(last))) return NONE;
  const start = decimal(first);
  const end = last === "" ? Number.POSITIVE_INFINITY : decimal(last);
  if (end < start) return NONE;
  if (start >= size) return UNSATISFIABLE;
  return { kind: "range", start, end: Math.min(end, size - 1) };
}

/** A strong ETag from size and modification time, with a suffix per content coding (nginx-style). */
export function makeEtag(size: number, mtimeMs: number, coding: string | null): string {
  const base = `${size.toString(16)}-${Math.floor(mtimeMs).toString(16)}`;
  return coding === null ? `"${base}"` : `"${base}-${coding}"`;
}

/** Splits an If-None-Match / If-Match list into entity tags (`*` stays `*`). */
function entityTags(header: string): string[] {
  const out: string[] = [];
  const re = /\s*(\*|(?:W\/)?"[^"]*")\s*(?:,|$)/gy;
  let m: RegExpExecArray | null;
  while ((m = re.exec(header)) !== null) {
    out.push(m[1]!);
    if (re.lastIndex >= header.length) break;
  }
  return out;
}

const opaque = (tag: string) => (tag.startsWith("W/") ? tag.slice(2) : tag);

/** If-None-Match holds when one listed tag matches by weak comparison, or the list is `*`. */
export function noneMatch(ifNoneMatch: string, etag: string): boolean {
  for (const t of entityTags(ifNoneMatch)) if (t === "*" || opaque(t) === opaque(etag)) return true;
  return false;
}

/** Seconds since the epoch of an HTTP-date, or NaN. */
export function parseHttpDate(value: string): number {
  const t = Date.parse(value);
  return Number.isNaN(t) ? Number.NaN : Math.floor(t / 1000);
}

/** Should a GET/HEAD be answered 304 Not Modified? If-None-Match wins over If-Modified-Since. */
export function notModified(
  ifNoneMatch: string | undefined,
  ifModifiedSince: string | undefined,
  etag: string,
  mtimeMs: number,
): boolean {
  if (ifNoneMatch !== undefined) return noneMatch(ifNoneMatch, etag);
  if (ifModifiedSince !== undefined) {
    const since = parseHttpDate(ifModifiedSince);
    return !Number.isNaN(since) && Math.floor(mtimeMs / 1000) <= since;
  }
  return false;
}

/**
 * If-Range: the Range applies only when the validator still matches — a strong ETag by strong
 * comparison, or an HTTP-date exactly equal to Last-Modified. Anything else sends the full 200.
 */
export function ifRangeHolds(ifRange: string | undefined, etag: string, mtimeMs: number): boolean {
  if (ifRange === undefined) return true;
  const v = ifRange.trim();
  if (v.startsWith('"')) return v === etag;
  if (v.startsWith("W/")) return false;
  const date = parseHttpDate(v);
  return !Number.isNaN(date) && date === Math.floor(mtimeMs / 1000);
}

/**
 * The q-value an Accept-Encoding header gives `coding` (explicitly, else through `*`), 0 when refused
 * or not listed. No header at all means "identity only" for our purposes (no precompressed variant).
 */
export function encodingQuality(acceptEncoding: string | undefined, coding: string): number {
  if (acceptEncoding === undefined) return 0;
  let star = 0;
  for (const item of acceptEncoding.split(",")) {
    const [nameRaw, ...params] = item.split(";");
    const name = nameRaw!.trim().toLowerCase();
    if (name === "") continue;
    let q = 1;
    for (const p of params) {
      const [k, v] = p.split("=");
      if (k?.trim().toLowerCase() === "q") {
        const n = Number(v?.trim());
        q = Number.isFinite(n) && n >= 0 && n <= 1 ? n : 0;
      }
    }
    if (name === coding) return q;
    if (name === "*") star = q;
  }
  return star;
}
