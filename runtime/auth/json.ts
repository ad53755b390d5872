/**
 * Strict JSON for security tokens: JSON.parse keeps the last of duplicated members, so
 * `{"sub":"a","sub":"b"}` means different things to different parsers (RFC 7515 §5.2 and RFC 7519 §4 let
 * a recipient reject such input, RFC 8725 §3.11 advises strictness). These helpers refuse duplicated
 * member names (compared after unescaping, so `"s\u0075b"` duplicates `"sub"`) and bound nesting depth.
 */

const MAX_DEPTH = 32;

export type StrictJsonResult =
  | { readonly ok: true; readonly value: unknown }
  | { readonly ok: false; readonly problem: "invalid" | "duplicate_member" | "too_deep" };

/** Parses JSON text, refusing duplicate member names anywhere in it. */
export function parseStrictJson(text: string): StrictJsonResult {
  const scanner = { text, i: 0, problem: null as null | "invalid" | "duplicate_member" | "too_deep" };
  skipWs(scanner);
  if (!value(scanner, 0)) return { ok: false, problem: scanner.problem ?? "invalid" };
  skipWs(scanner);
  if (scanner.i !== text.length) return { ok: false, problem: "invalid" };
  try {
    return { ok: true, value: JSON.parse(text) };
  } catch {
    return { ok: false, problem: "invalid" };
  }
}

interface Scanner {
  readonly text: string;
  i: number;
  problem: null | "invalid" | "duplicate_member" | "too_deep";
}

function skipWs(s: Scanner): void {
  for (;;) {
    const c = s.text.charCodeAt(s.i);
    if (c === 32 || c === 9 || c === 10 || c === 13) s.i++;
    else return;
  }
}

function value(s: Scanner, depth: number): boolean {
  const c = s.text.charCodeAt(s.i);
  if (c === 123 || c === 91) {
    if (depth >= MAX_DEPTH) {
      s.problem = "too_deep";
      return false;
    }
    return c === 123 ? object(s, depth + 1) : array(s, depth + 1);
  }
  if (c === 34) return string(s) !== null;
  return literal(s);
}

function object(s: Scanner, depth: number): boolean {
  s.i++; // {
  skipWs(s);
  if (s.text.charCodeAt(s.i) === 125) {
    s.i++;
    return true;
  }
  const names = new Set<string>();
  for (;;) {
    skipWs(s);
    if (s.text.charCodeAt(s.i) !== 34) return false;
    const name = string(s);
    if (name === null) return false;
    if (names.has(name)) {
      s.problem = "duplicate_member";
      return false;
    }
    names.add(name);
    skipWs(s);
    if (s.text.charCodeAt(s.i) !== 58) return false;
    s.i++;
    skipWs(s);
    if (!value(s, depth)) return false;
    skipWs(s);
    const c = s.text.charCodeAt(s.i++);
    if (c === 125) return true;
    if (c !== 44) return false;
  }
}

function array(s: Scanner, depth: number): boolean {
  s.i++; // [
  skipWs(s);
  if (s.text.charCodeAt(s.i) === 93) {
    s.i++;
    return true;
  }
  for (;;) {
    skipWs(s);
    if (!value(s, depth)) return false;
    skipWs(s);
    const c = s.text.charCodeAt(s.i++);
    if (c === 93) return true;
    if (c !== 44) return false;
  }
}

/** Scans a string literal at s.i; returns its unescaped value, or null when malformed. */
function string(s: Scanner): string | null {
  const start = s.i;
  s.i++; // opening quote
  let escaped = false;
  for (;;) {
    if (s.i >= s.text.length) return null;
    const c = s.text.charCodeAt(s.i++);
    if (c === 34) break;
    if (c < 0x20) return null;
    if (c === 92) {
      escaped = true;
      s.i++; // the escaped character (validated by JSON.parse below)
    }
  }
  const raw = s.text.slice(start, s.i);
  if (!escaped) return raw.slice(1, -1);
  try {
    return JSON.parse(raw) as string;
  } catch {
    return null;
  }
}

const LITERAL = /-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?|true|false|null/y;

function literal(s: Scanner): boolean {
  LITERAL.lastIndex = s.i;
  const m = LITERAL.exec(s.text);
  if (!m) return false;
  s.i += m[0].length;
  return true;
}
