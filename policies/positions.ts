/**
 * Source positions of spec paths in a YAML or JSON text, so that violations print as file:line:column.
 * A path whose node does not exist (a field the spec inherits) points at its nearest written ancestor;
 * a mapping key's path points at the key.
 */
import { LineCounter, isMap, isScalar, parseDocument } from "yaml";

export type Locate = (path: string) => { line: number; column: number } | undefined;

/** "gateway.routes[3].retries" → ["gateway", "routes", 3, "retries"] */
export function pathSegments(path: string): (string | number)[] {
  const out: (string | number)[] = [];
  for (const m of path.matchAll(/([^.[\]]+)|\[(\d+)\]/g)) out.push(m[2] !== undefined ? Number(m[2]) : m[1]!);
  return out;
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
