import { createHash } from "node:crypto";

/**
 * Code-unit string order for every sort whose result is configuration or output: unlike localeCompare it
 * does not depend on the ICU data or locale of the machine, so the same spec gives the same bytes
 * everywhere.
 */
export const compareCodeUnits = (a: string, b: string): number => (a < b ? -1 : a > b ? 1 : 0);

/** JSON with object keys sorted at every depth: the same value always gives the same bytes. */
export function canonicalJson(value: unknown): string {
  return JSON.stringify(sortKeys(value));
}

/**
 * Sorted key lists by object shape: configs repeat a few shapes thousands of times (routes, clusters),
 * so each shape is sorted once. Bounded, because record-valued fields can have any number of shapes.
 */
const sortedKeysByShape = new Map<string, string[]>();
const MAX_SHAPES = 4096;

function sortedKeys(value: object): string[] {
  const keys = Object.keys(value);
  const shape = keys.join("\u0000");
  let sorted = sortedKeysByShape.get(shape);
  if (!sorted) {
    sorted = keys.sort();
    if (sortedKeysByShape.size >= MAX_SHAPES) sortedKeysByShape.clear();
    sortedKeysByShape.set(shape, sorted);
  }
  return sorted;
}

function sortKeys(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(sortKeys);
  if (value !== null && typeof value === "object") {
    const out: Record<string, unknown> = {};
    for (const key of sortedKeys(value)) {
      const v = (value as Record<string, unknown>)[key];
      if (v !== undefined) out[key] = sortKeys(v);
    }
    return out;
  }
  return value;
}

export function sha256Hex(text: string): string {
  return createHash("sha256").update(text).digest("hex");
}

/** Freezes a plain JSON value and everything inside it. */
export function deepFreeze<T>(value: T): T {
  if (value !== null && typeof value === "object" && !Object.isFrozen(value)) {
    for (const v of Object.values(value)) deepFreeze(v);
    Object.freeze(value);
  }
  return value;
}
