/**
 * Source positions of spec paths in a YAML or JSON text, so that violations print as file:line:column.
 * A path whose node does not exist (a field the spec inherits) points at its nearest written ancestor;
 * a mapping key's path points at the key, a list item's at the item.
 *
 * Two readers, one meaning (as the spec loader has): `lineLocator` scans block-style YAML line by line — a
 * 10,000-route spec in a fraction of a second — and gives up (returns null) on anything it does not
 * understand exactly (multi-line flow collections or quoted scalars, anchors, several documents, …);
 * `yamlLocator` uses the `yaml` package's parse tree and reads everything. `locatorFor` picks the first
 * that answers. test/policies/positions.test.ts checks that both agree.
 */
import { LineCounter, isMap, isScalar, parseDocument } from "yaml";

export type Locate = (path: string) => { line: number; column: number } | undefined;

/** "gateway.routes[3].retries" → ["gateway", "routes", 3, "retries"] */
export function pathSegments(path: string): (string | number)[] {
  const out: (string | number)[] = [];
  for (const m of path.matchAll(/([^.[\]]+)|\[(\d+)\]/g)) out.push(m[2] !== undefined ? Number(m[2]) : m[1]!);
  return out;
}

/** The fast reader when it understands the text, else the `yaml` package's. */
export function locatorFor(text: string): Locate {
  return lineLocator(text) ?? yamlLocator(text);
}

/** A locator over a YAML/JSON text; it answers undefined for every path when the text does not parse. */
export function yamlLocator(text: string): Locate {
  const lines = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lines, uniqueKeys: false });
  if (doc.errors.length > 0) return () => undefined;
  const at = (offset: number) => {
    const p = lines.linePos(offset);
    return { line: p.line, column: p.col };
  };
  return (path) => {
    const segments = pathSegments(path);
    for (let n = segments.length; n >= 1; n--) {
      const last = segments[n - 1]!;
      if (typeof last === "string") {
        const parent = doc.getIn(segments.slice(0, n - 1), true);
        if (isMap(parent)) {
          const pair = parent.items.find((it) => isScalar(it.key) && String(it.key.value) === last);
          if (pair && isScalar(pair.key) && pair.key.range) return at(pair.key.range[0]);
        }
        continue;
      }
      const node = doc.getIn(segments.slice(0, n), true) as { range?: [number, number, number] } | undefined;
      if (node && typeof node === "object" && node.range) return at(node.range[0]);
    }
    return undefined;
  };
}

interface Frame {
  kind: "map" | "seq";
  /** Column (0-based) of the frame's keys or dashes. */
  indent: number;
  path: string;
  /** seq: the index of the last item. */
  count: number;
  /** map: the path of the last key (its value may be a nested block). */
  lastKey: string | null;
}

const KEY =
  /^(?:"((?:[^"\\]|\\.)*)"|'((?:[^']|'')*)'|([^\s#'"{}[\],&*!|>%@`?:-][^:#]*?|-[^\s:#][^:#]*?))[ \t]*:(?:[ \t]+|$)/;

/**
 * Positions from a line-by-line scan of block-style YAML, or null when the text uses something the scan
 * does not model exactly (then the caller falls back to the full parser).
 */
export function lineLocator(text: string): Locate | null {
  const positions = new Map<string, { line: number; column: number }>();
  /** Where a key's value starts when it is on a later line than the key (what paths inside it point at). */
  const valueAt = new Map<string, { line: number; column: number }>();
  const stack: Frame[] = [];
  const lines = text.split("\n");
  let blockScalarIndent = -1; // skip the lines of a | or > scalar more indented than its key
  let seenContent = false;
  for (let n = 0; n < lines.length; n++) {
    const raw = lines[n]!.replace(/\r$/, "");
    const indent = raw.length - raw.trimStart().length;
    const content = raw.slice(indent);
    if (blockScalarIndent >= 0) {
      if (content === "" || indent > blockScalarIndent) continue;
      blockScalarIndent = -1;
    }
    if (content === "" || content.startsWith("#")) continue;
    if (raw.includes("\t") && /^\s*\t/.test(raw)) return null;
    if (content === "---" || content.startsWith("--- ") || content.startsWith("%")) {
      if (seenContent) return null; // several documents
      continue;
    }
    if (content === "...") return null;
    seenContent = true;
    // Close the frames this line is not inside of.
    while (stack.length > 0 && indent < stack[stack.length - 1]!.indent) stack.pop();
    let col = indent;
    let rest = content;
    // Sequence items ("- x", "- key: value"); a bare "-" with its content below is left to the parser.
    if (rest === "-") return null;
    if (rest.startsWith("- ")) {
      let top = stack[stack.length - 1];
      if (top && top.kind === "map" && top.indent === indent) {
        // "key:\n- item": a compact sequence as the value of the map's last key.
        if (top.lastKey === null) return null;
        stack.push((top = { kind: "seq", indent, path: top.lastKey, count: -1, lastKey: null }));
      } else if (!top || top.kind !== "seq" || top.indent !== indent) {
        const parent = top;
        if (!parent || parent.kind !== "map" || parent.lastKey === null || indent <= parent.indent)
          return null;
        stack.push((top = { kind: "seq", indent, path: parent.lastKey, count: -1, lastKey: null }));
      }
      top.count++;
      const itemPath = `${top.path}[${top.count}]`;
      const after = rest.slice(2);
      col = indent + 2 + (after.length - after.trimStart().length);
      rest = after.trimStart();
      if (rest === "-" || rest.startsWith("- ")) return null;
      positions.set(itemPath, { line: n + 1, column: col + 1 });
      if (!KEY.test(rest)) {
        if (!scalarOnOneLine(rest)) return null;
        continue;
      }
      // A map starts inside the item, its keys at this column.
      stack.push({ kind: "map", indent: col, path: itemPath, count: 0, lastKey: null });
    } else {
      // A compact sequence ends at a key of its own indentation.
      while (
        stack.length > 0 &&
        stack[stack.length - 1]!.kind === "seq" &&
        stack[stack.length - 1]!.indent === indent
      )
        stack.pop();
      const top = stack[stack.length - 1];
      if (!top || top.indent !== indent || top.kind !== "map") {
        if (top && top.kind === "map" && top.lastKey !== null && indent > top.indent) {
          // A key's value on the next, more indented line: a nested map, or a scalar / flow collection.
          if (!KEY.test(rest)) {
            if (!scalarOnOneLine(rest)) return null;
            valueAt.set(top.lastKey, { line: n + 1, column: indent + 1 });
            continue;
          }
          stack.push({ kind: "map", indent, path: top.lastKey, count: 0, lastKey: null });
        } else if (!top && indent === 0)
          stack.push({ kind: "map", indent, path: "", count: 0, lastKey: null });
        else return null;
      }
    }
    const top = stack[stack.length - 1]!;
    const m = KEY.exec(rest);
    if (!m) return null; // a multi-line scalar, a flow document, a complex key: leave it to the parser
    const key =
      m[1] !== undefined
        ? m[1].replace(/\\(.)/g, "$1")
        : m[2] !== undefined
          ? m[2].replace(/''/g, "'")
          : m[3]!;
    const path = top.path ? `${top.path}.${key}` : key;
    positions.set(path, { line: n + 1, column: col + 1 });
    top.lastKey = path;
    const value = rest.slice(m[0].length);
    if (value === "" || value.startsWith("#")) continue;
    if (/^[|>][-+0-9]*\s*(#.*)?$/.test(value)) {
      blockScalarIndent = col;
      continue;
    }
    if (!scalarOnOneLine(value)) return null;
  }
  return (path) => {
    for (let p = path; p !== ""; p = parentPath(p)) {
      const pos = (p !== path ? valueAt.get(p) : undefined) ?? positions.get(p);
      if (pos) return pos;
    }
    return undefined;
  };
}

function parentPath(path: string): string {
  const dot = path.lastIndexOf(".");
  const bracket = path.lastIndexOf("[");
  const cut = Math.max(dot, bracket);
  return cut <= 0 ? "" : path.slice(0, cut);
}

/** Is a value complete on its line: a plain or quoted scalar, or a balanced flow collection? */
function scalarOnOneLine(value: string): boolean {
  const c = value[0];
  if (c === "&" || c === "*" || c === "!" || c === "?") return false; // anchors, aliases, tags, complex keys
  if (c === '"' || c === "'") return closedQuote(value);
  if (c !== "[" && c !== "{") return true;
  let depth = 0;
  for (let i = 0; i < value.length; i++) {
    const ch = value[i]!;
    if (ch === '"' || ch === "'") {
      const end = quoteEnd(value, i);
      if (end < 0) return false;
      i = end;
    } else if (ch === "[" || ch === "{") depth++;
    else if (ch === "]" || ch === "}") {
      depth--;
      if (depth === 0) return /^\s*(#.*)?$/.test(value.slice(i + 1));
    } else if ((ch === "&" || ch === "*") && /[\s[{,]/.test(value[i - 1] ?? " ")) return false;
  }
  return false;
}

function closedQuote(value: string): boolean {
  const end = quoteEnd(value, 0);
  return end > 0 && /^\s*(#.*)?$/.test(value.slice(end + 1));
}

/** Index of the quote closing the one at `start`, or -1. */
function quoteEnd(s: string, start: number): number {
  const q = s[start]!;
  for (let i = start + 1; i < s.length; i++) {
    if (q === '"' && s[i] === "\\") {
      i++;
      continue;
    }
    if (s[i] === q) {
      if (q === "'" && s[i + 1] === "'") {
        i++;
        continue;
      }
      return i;
    }
  }
  return -1;
}
