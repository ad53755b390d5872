/**
 * Request-target canonicalization: one canonical path that is matched, authorized, rate-limited and
 * forwarded — the same string at every step, so no layer can be fooled into seeing another path.
 *
 * Rules (see shared/notes/security.md for the CVEs behind each):
 * - origin-form `/path?query`, or absolute-form `http(s)://host/path` (its host then overrides Host);
 *   asterisk-form and authority-form are refused;
 * - only RFC 3986 characters; no raw spaces, controls, non-ASCII, `\`, or fragments (`#`);
 * - percent-escapes must be well-formed; escapes of characters a path segment may hold raw (unreserved
 *   `A-Z a-z 0-9 - . _ ~`, sub-delims `! $ & ' ( ) * + , ; =`, `:` and `@`) are decoded — upstream servers
 *   decode them, so matching must see them decoded too (`/x%3Adelete` is `/x:delete`); every other escape
 *   is kept with upper-case hex (so `%2e` is `.`, but `%252e` stays a literal `%25` + `2e`);
 * - escaped `/` and `\`, `%00`, escaped controls (C0, DEL and C1) are refused (ambiguous between proxy and
 *   upstream); in the query only `%00` is refused (form values may hold newlines);
 * - the escaped bytes must form valid UTF-8 (overlong forms such as `%C0%AE` are refused);
 * - dot segments are resolved (RFC 3986 §5.2.4); one that climbs above the root is refused, and so is a
 *   dot segment with parameters (`..;x`), which some upstreams (Tomcat) resolve as `..`;
 * - empty segments (`//`) are merged when `mergeSlashes` is set (the default).
 * Canonicalization is idempotent: the canonical form canonicalizes to itself (a property test checks it).
 */
import { isIPv6 } from "node:net";

export type TargetRejectReason =
  | "empty_target"
  | "unsupported_form"
  | "invalid_character"
  | "fragment"
  | "backslash"
  | "bad_percent_encoding"
  | "encoded_slash"
  | "encoded_backslash"
  | "encoded_control"
  | "invalid_utf8"
  | "dot_segment_above_root"
  | "dot_segment_with_parameters"
  | "userinfo"
  | "invalid_host";

export type CanonicalTarget =
  | { readonly ok: true; readonly path: string; readonly query: string; readonly host: string | null }
  | { readonly ok: false; readonly reason: TargetRejectReason; readonly detail: string };

export interface CanonicalizeOptions {
  /** Merge empty segments (`//`) into one slash. Default true. */
  readonly mergeSlashes?: boolean;
}

const HEX = "0123456789ABCDEF";

/** Characters allowed raw in a path: RFC 3986 pchar (unreserved, sub-delims, ":", "@"), "/" and "%". */
const PATH_CHAR = new Uint8Array(128);
for (const c of "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~!$&'()*+,;=:@/%") {
  PATH_CHAR[c.charCodeAt(0)] = 1;
}
/** Characters allowed raw in a query: pchar, "/", "?" and "%". */
const QUERY_CHAR = new Uint8Array(128);
for (let i = 0; i < 128; i++) QUERY_CHAR[i] = PATH_CHAR[i]!;
QUERY_CHAR["?".charCodeAt(0)] = 1;

/** Escaped characters that are decoded: everything a segment may hold raw except "/" and "%". */
const DECODED = new Uint8Array(128);
for (let i = 0; i < 128; i++) DECODED[i] = PATH_CHAR[i]!;
DECODED["/".charCodeAt(0)] = 0;
DECODED["%".charCodeAt(0)] = 0;

const utf8 = new TextDecoder("utf-8", { fatal: true });

function hexValue(code: number): number {
  if (code >= 48 && code <= 57) return code - 48;
  if (code >= 65 && code <= 70) return code - 55;
  if (code >= 97 && code <= 102) return code - 87;
  return -1;
}

const reject = (reason: TargetRejectReason, detail: string): CanonicalTarget => ({
  ok: false,
  reason,
  detail,
});

/** An absolute-form request target's scheme and authority (RFC 9112 §3.2.2): `http(s)://authority`. */
const ABSOLUTE_FORM = /^(https?):\/\/([^/?#]*)/i;

/** The authority of an absolute-form target as written (`http://a.example:8080/x` → `a.example:8080`), or null. */
export function absoluteFormAuthority(target: string): string | null {
  if (target.charCodeAt(0) === 47 /* / */) return null;
  return ABSOLUTE_FORM.exec(target)?.[2] ?? null;
}

export function canonicalizeTarget(target: string, options: CanonicalizeOptions = {}): CanonicalTarget {
  if (target.length === 0) return reject("empty_target", "empty request target");
  let host: string | null = null;
  let rest = target;
  if (target.charCodeAt(0) !== 47 /* / */) {
    const absolute = ABSOLUTE_FORM.exec(target);
    if (!absolute) {
      return reject("unsupported_form", "the request target must be a path (origin-form) or an http(s) URL");
    }
    const authority = absolute[2]!;
    if (authority.includes("@")) return reject("userinfo", "credentials in the request target are refused");
    const h = canonicalHost(authority);
    if (h === null) return reject("invalid_host", "the host in the request target is not valid");
    host = h;
    rest = target.slice(absolute[0].length) || "/";
    if (rest.charCodeAt(0) !== 47) rest = `/${rest}`;
  }
  const q = rest.indexOf("?");
  const rawPath = q < 0 ? rest : rest.slice(0, q);
  const rawQuery = q < 0 ? "" : rest.slice(q + 1);

  const path = canonicalPath(rawPath, options.mergeSlashes !== false);
  if (typeof path !== "string") return path;
  const queryProblem = checkQuery(rawQuery);
  if (queryProblem) return queryProblem;
  return { ok: true, path, query: rawQuery, host };
}

function checkQuery(query: string): CanonicalTarget | null {
  for (let i = 0; i < query.length; i++) {
    const c = query.charCodeAt(i);
    if (c === 35 /* # */) return reject("fragment", "fragments (#) are not sent to servers; refused");
    if (c >= 128 || QUERY_CHAR[c] === 0) {
      return reject("invalid_character", `character 0x${c.toString(16)} is not allowed in a query`);
    }
    if (c === 37 /* % */) {
      const hi = hexValue(query.charCodeAt(i + 1));
      const lo = hexValue(query.charCodeAt(i + 2));
      if (hi < 0 || lo < 0) return reject("bad_percent_encoding", "malformed percent-escape in the query");
      if (hi === 0 && lo === 0) return reject("encoded_control", "%00 in the query is refused");
    }
  }
  return null;
}

/**
 * True when the path is already canonical: only characters allowed raw, no escapes, no "//", and no
 * segment starting with "." (so no dot segments). Most request paths are; they skip the full pass.
 */
function alreadyCanonical(raw: string): boolean {
  let prev = 0;
  for (let i = 0; i < raw.length; i++) {
    const c = raw.charCodeAt(i);
    if (c >= 128 || PATH_CHAR[c] === 0 || c === 37 /* % */) return false;
    if (prev === 47 /* / */ && (c === 47 || c === 46) /* . */) return false;
    prev = c;
  }
  return true;
}

/** The canonical form of a raw path, or the reason it is refused. */
function canonicalPath(raw: string, mergeSlashes: boolean): string | CanonicalTarget {
  if (alreadyCanonical(raw)) return raw;
  // Pass 1: characters and escapes, decoding unreserved escapes; collect escaped bytes for UTF-8 checking.
  let decoded = "";
  let escapedNonAscii = false;
  for (let i = 0; i < raw.length; i++) {
    const c = raw.charCodeAt(i);
    if (c === 35) return reject("fragment", "fragments (#) are not sent to servers; refused");
    if (c === 92) return reject("backslash", "a raw backslash in the path is ambiguous; refused");
    if (c >= 128 || PATH_CHAR[c] === 0) {
      return reject("invalid_character", `character 0x${c.toString(16)} is not allowed in a path`);
    }
    if (c !== 37) {
      decoded += raw[i];
      continue;
    }
    const hi = hexValue(raw.charCodeAt(i + 1));
    const lo = hexValue(raw.charCodeAt(i + 2));
    if (hi < 0 || lo < 0) return reject("bad_percent_encoding", "malformed percent-escape in the path");
    const byte = hi * 16 + lo;
    i += 2;
    if (byte === 0x2f)
      return reject("encoded_slash", "an escaped slash (%2F) in the path is ambiguous; refused");
    if (byte === 0x5c)
      return reject("encoded_backslash", "an escaped backslash (%5C) in the path is ambiguous; refused");
    if (byte < 0x20 || byte === 0x7f)
      return reject("encoded_control", "escaped control characters are refused");
    if (byte < 128 && DECODED[byte] === 1) {
      decoded += String.fromCharCode(byte);
      continue;
    }
    decoded += `%${HEX[hi]}${HEX[lo]}`;
    if (byte >= 128) escapedNonAscii = true;
  }
  if (escapedNonAscii) {
    const text = decodeUtf8(decoded);
    if (text === null) {
      return reject(
        "invalid_utf8",
        "the escaped bytes are not valid UTF-8 (overlong or truncated sequences are refused)",
      );
    }
    if (/[\u0080-\u009f]/.test(text))
      return reject("encoded_control", "escaped C1 control characters are refused");
  }

  // Pass 2: segments — dot segments resolved, empty ones merged.
  const parts = decoded.split("/");
  const out: string[] = [];
  const last = parts.length - 1;
  for (let i = 1; i <= last; i++) {
    const seg = parts[i]!;
    if (seg === ".") {
      if (i === last) out.push("");
      continue;
    }
    if (seg === "..") {
      if (out.length === 0) return reject("dot_segment_above_root", "the path climbs above the root with ..");
      out.pop();
      if (i === last) out.push("");
      continue;
    }
    const semi = seg.indexOf(";");
    if (semi >= 0) {
      const head = seg.slice(0, semi);
      if (head === "." || head === "..") {
        return reject(
          "dot_segment_with_parameters",
          `segment "${seg}" is a dot segment with parameters; refused`,
        );
      }
    }
    if (seg === "" && mergeSlashes && i !== last) continue;
    out.push(seg);
  }
  return `/${out.join("/")}`;
}

/** Decodes the percent-escaped bytes of a (pass-1) path as UTF-8, or null when they are not valid UTF-8. */
function decodeUtf8(decoded: string): string | null {
  const bytes: number[] = [];
  for (let i = 0; i < decoded.length; i++) {
    const c = decoded.charCodeAt(i);
    if (c === 37) {
      bytes.push(hexValue(decoded.charCodeAt(i + 1)) * 16 + hexValue(decoded.charCodeAt(i + 2)));
      i += 2;
    } else {
      bytes.push(c);
    }
  }
  try {
    return utf8.decode(Uint8Array.from(bytes));
  } catch {
    return null;
  }
}

/**
 * The canonical host of a Host header or URL authority: lower-case, port and a trailing dot removed,
 * IPv6 in its canonical text form. `null` when it is not a DNS name (labels of 1–63 characters of
 * `a-z 0-9 -`, not starting or ending with `-`, at most 253 in all), an IPv4 address or a bracketed IPv6
 * address, or when the port is not 1–65535. Only ASCII is accepted, and only A–Z are lower-cased:
 * Unicode case folding (the Kelvin sign "K" → "k") would make two different hosts look the same.
 * One pass over the characters; no regular expression on the hot path.
 */
export function canonicalHost(raw: string | undefined): string | null {
  if (raw === undefined || raw.length === 0 || raw.length > 261) return null;
  const n = raw.length;
  if (raw.charCodeAt(0) === 91 /* [ */) {
    for (let i = 0; i < n; i++) if (raw.charCodeAt(i) > 0x7e || raw.charCodeAt(i) < 0x21) return null;
    const end = raw.indexOf("]");
    if (end < 0) return null;
    if (end + 1 < n && !validPort(raw, end + 1)) return null;
    const inner = raw.slice(1, end).toLowerCase();
    if (!isIPv6(inner)) return null;
    return canonicalIPv6(inner);
  }
  // The host part ends at ":" (then a port must follow) or at the end.
  let hostEnd = n;
  let upper = false;
  let labelLength = 0;
  let labelStart = true;
  let last = 0;
  for (let i = 0; i < n; i++) {
    let c = raw.charCodeAt(i);
    if (c === 58 /* : */) {
      hostEnd = i;
      break;
    }
    if (c >= 65 && c <= 90) {
      upper = true;
      c += 32;
    }
    if (c === 46 /* . */) {
      // An empty label, or one ending with "-", is malformed; a single trailing dot is allowed.
      if (labelStart || last === 45) return null;
      labelStart = true;
      labelLength = 0;
    } else if ((c >= 97 && c <= 122) || (c >= 48 && c <= 57) || c === 45 /* - */) {
      if (labelStart && c === 45) return null;
      labelStart = false;
      if (++labelLength > 63) return null;
    } else return null;
    last = c;
  }
  if (hostEnd < n && !validPort(raw, hostEnd)) return null;
  let end = hostEnd;
  if (end > 0 && raw.charCodeAt(end - 1) === 46) end--; // one trailing dot: the same host
  if (end === 0 || end > 253) return null;
  // The last label must be complete (not empty, not ending with "-").
  const lastChar = raw.charCodeAt(end - 1);
  if (lastChar === 46 || lastChar === 45) return null;
  const host = end === n ? raw : raw.slice(0, end);
  return upper ? lowerAscii(host) : host;
}

function lowerAscii(s: string): string {
  let out = "";
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    out += c >= 65 && c <= 90 ? String.fromCharCode(c + 32) : s[i];
  }
  return out;
}

/** The port at `raw[colon]` (":" then 1–5 digits, 1–65535) is valid. */
function validPort(raw: string, colon: number): boolean {
  if (raw.charCodeAt(colon) !== 58) return false;
  const len = raw.length - colon - 1;
  if (len < 1 || len > 5) return false;
  let v = 0;
  for (let i = colon + 1; i < raw.length; i++) {
    const c = raw.charCodeAt(i);
    if (c < 48 || c > 57) return false;
    v = v * 10 + (c - 48);
  }
  return v >= 1 && v <= 65535;
}

/** "[::1]" for "0::1" and every other spelling of the same address (WHATWG URL serializes it canonically). */
function canonicalIPv6(inner: string): string | null {
  try {
    return new URL(`http://[${inner}]/`).hostname;
  } catch {
    return null;
  }
}
