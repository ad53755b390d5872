/**
 * parseSpec: raw document → typed MeshSpec, or every error of the document at once.
 * Structural problems come from the zod schema, mapped to stable codes with fix hints; the semantic pass
 * (references, cross-field rules) always runs too.
 */
import type { z } from "zod";
import { SpecValidationError, formatPath, type SpecError, type SpecErrorCode } from "./errors.ts";
import { FORMATS, MeshSpecSchema, type MeshSpec, type StringFormat } from "./schema.ts";
import { closest, semanticIssues, withoutCredentials, type Issue, type Segments } from "./semantic.ts";
import { compareCodeUnits } from "../../runtime/contract/canonical.ts";

const SUPERSEDES: ReadonlySet<SpecErrorCode> = new Set(["E_SPEC_JWT_ALGORITHM"]);

/** Maps a path inside the source document to a 1-based line and column. */
export type Locator = (segments: Segments, keyOf?: string) => { line: number; column: number } | undefined;

export type ParseResult = { ok: true; spec: MeshSpec; errors: [] } | { ok: false; errors: SpecError[] };

export function parseSpec(raw: unknown, locate?: Locator): ParseResult {
  const parsed = MeshSpecSchema.safeParse(raw);
  const semantic = semanticIssues(raw);
  const structural = parsed.success ? [] : parsed.error.issues.flatMap((i) => mapIssue(i, raw));
  // Where a semantic check explains a value more precisely than the schema's enum error (a refused JWT
  // algorithm), the schema's error at that path is dropped; every other error is kept.
  const superseded = new Set(
    semantic.filter((i) => SUPERSEDES.has(i.code)).map((i) => formatPath(i.segments)),
  );
  const all = [...structural.filter((i) => !superseded.has(formatPath(i.segments))), ...semantic];
  if (all.length === 0 && parsed.success) return { ok: true, spec: parsed.data, errors: [] };

  const seen = new Set<string>();
  const errors: SpecError[] = [];
  for (const issue of all) {
    const path = formatPath(issue.segments);
    const key = `${issue.code} ${path} ${issue.message}`;
    if (seen.has(key)) continue;
    seen.add(key);
    const pos = locate?.(
      issue.segments,
      issue.code === "E_SPEC_UNKNOWN_KEY" ? String(issue.segments.at(-1)) : undefined,
    );
    errors.push({ code: issue.code, path, message: issue.message, hint: issue.hint, ...(pos ?? {}) });
  }
  errors.sort(
    (a, b) =>
      (a.line ?? Infinity) - (b.line ?? Infinity) ||
      (a.column ?? 0) - (b.column ?? 0) ||
      compareCodeUnits(a.path, b.path),
  );
  return { ok: false, errors };
}

/** Like parseSpec, but throws a SpecValidationError listing every error. */
export function parseSpecOrThrow(raw: unknown, source?: string): MeshSpec {
  const result = parseSpec(raw);
  if (!result.ok) throw new SpecValidationError(result.errors, source);
  return result.spec;
}

// ───────────── zod issue → coded issue ─────────────

const FORMAT_BY_PATTERN = new Map<string, StringFormat>(
  Object.values(FORMATS).map((f: StringFormat) => [f.pattern.toString(), f]),
);

function valueAt(raw: unknown, segments: readonly PropertyKey[]): unknown {
  let v = raw;
  for (const s of segments) {
    if (v === null || typeof v !== "object") return undefined;
    v = (v as Record<PropertyKey, unknown>)[s];
  }
  return v;
}

/**
 * Fields where a secret is written by mistake: an API key where its hash belongs (keyHashes), a client
 * secret where the name of its environment variable belongs (clientSecretEnv). Errors never quote them.
 */
const SECRET_FIELDS: ReadonlySet<string> = new Set(["keyHashes", "clientSecretEnv"]);

function isSecretField(segments: readonly (string | number)[]): boolean {
  const named = segments.findLast((s) => typeof s === "string");
  return named !== undefined && SECRET_FIELDS.has(named);
}

/** A value as an error message shows it: never a secret field's text, never a URL's user and password. */
function describeType(v: unknown, secret = false): string {
  if (v === null) return "null";
  if (Array.isArray(v)) return "a list";
  if (typeof v === "object") return "a mapping";
  if (typeof v === "string") {
    if (secret) return `a string of ${v.length} characters`;
    const shown = withoutCredentials(v);
    return `the string ${JSON.stringify(shown.length > 40 ? `${shown.slice(0, 40)}…` : shown)}`;
  }
  return `${typeof v} ${String(v)}`;
}

const EXPECTED: Record<string, string> = {
  object: "a mapping",
  record: "a mapping",
  array: "a list",
  string: "a string",
  number: "a number",
  int: "an integer",
  boolean: "true or false",
};

function mapIssue(issue: z.core.$ZodIssue, raw: unknown): Issue[] {
  const segments = issue.path.map((p) => (typeof p === "number" ? p : String(p)));
  const here = valueAt(raw, issue.path);
  const secret = isSecretField(segments);
  switch (issue.code) {
    case "unrecognized_keys":
      return issue.keys.map((key) => {
        const known = knownKeysAt(MeshSpecSchema, segments);
        const guess = closest(key, known);
        return {
          code: "E_SPEC_UNKNOWN_KEY" as const,
          segments: [...segments, key],
          message: `unknown key ${JSON.stringify(key)}${guess ? ` (did you mean ${JSON.stringify(guess)}?)` : ""}`,
          hint: known.length ? `allowed here: ${known.join(", ")}` : "remove it",
        };
      });
    case "invalid_type": {
      if (here === undefined) {
        const field = segments.at(-1);
        return [
          {
            code: "E_SPEC_MISSING_FIELD",
            segments,
            message: `missing required field ${JSON.stringify(field)}`,
            hint: `add ${String(field)}: ${EXPECTED[issue.expected] ?? issue.expected}`,
          },
        ];
      }
      const expected = EXPECTED[issue.expected] ?? issue.expected;
      return [
        {
          code: "E_SPEC_INVALID_TYPE",
          segments,
          message: `expected ${expected}, got ${describeType(here, secret)}`,
          hint: hintForType(issue.expected, secret && typeof here === "string" ? "…" : here),
        },
      ];
    }
    case "invalid_value": {
      const allowed = issue.values.map((v) => String(v));
      const guess = typeof here === "string" ? closest(here, allowed) : undefined;
      return [
        {
          code: "E_SPEC_INVALID_VALUE",
          segments,
          message: `${describeType(here, secret)} is not allowed${guess ? ` (did you mean ${JSON.stringify(guess)}?)` : ""}`,
          hint: `use one of: ${allowed.join(", ")}`,
        },
      ];
    }
    case "too_small":
    case "too_big": {
      const bound = issue.code === "too_small" ? issue.minimum : issue.maximum;
      const inclusive = issue.inclusive !== false;
      const isList = issue.origin === "array";
      const relation =
        issue.code === "too_small"
          ? inclusive
            ? "at least"
            : "more than"
          : inclusive
            ? "at most"
            : "less than";
      return [
        {
          code: "E_SPEC_OUT_OF_RANGE",
          segments,
          message: isList
            ? `needs ${relation} ${String(bound)} item${Number(bound) === 1 ? "" : "s"}`
            : `${String(here)} is out of range: must be ${relation} ${String(bound)}`,
          hint: isList ? "add the missing entries" : `use a value ${relation} ${String(bound)}`,
        },
      ];
    }
    case "invalid_format": {
      const format = "pattern" in issue ? FORMAT_BY_PATTERN.get(String(issue.pattern)) : undefined;
      const valueText = describeType(here, secret);
      if (format)
        return [
          { code: format.code, segments, message: `${valueText} is ${format.message}`, hint: format.hint },
        ];
      return [
        {
          code: "E_SPEC_INVALID_VALUE",
          segments,
          message: `${valueText}: ${issue.message}`,
          hint: "see the spec reference for the format",
        },
      ];
    }
    case "invalid_union":
      return [
        {
          code: "E_SPEC_INVALID_TYPE",
          segments,
          message: `${describeType(here, secret)}: ${issue.message}`,
          hint: "see the spec reference for the accepted forms",
        },
      ];
    case "invalid_key": {
      const inner = issue.issues[0];
      const key = String(segments.at(-1));
      const format = inner && "pattern" in inner ? FORMAT_BY_PATTERN.get(String(inner.pattern)) : undefined;
      return [
        {
          code: format?.code ?? "E_SPEC_INVALID_NAME",
          segments,
          message: `key ${JSON.stringify(key)} is ${format?.message ?? "not a valid name"}`,
          hint: format?.hint ?? FORMATS.name.hint,
        },
      ];
    }
    case "custom": {
      const params = (issue.params ?? {}) as { code?: SpecErrorCode; hint?: string };
      return [
        {
          code: params.code ?? "E_SPEC_INVALID_VALUE",
          segments,
          message: `${typeof here === "string" && !secret ? JSON.stringify(withoutCredentials(here)) : describeType(here, secret)} ${issue.message}`,
          hint: params.hint ?? "see the spec reference",
        },
      ];
    }
    default:
      return [
        { code: "E_SPEC_INVALID_VALUE", segments, message: issue.message, hint: "see the spec reference" },
      ];
  }
}

function hintForType(expected: string, here: unknown): string {
  if (expected === "array" && typeof here === "string") return `write a list: [${JSON.stringify(here)}]`;
  if (expected === "string" && typeof here === "number")
    return `quote it, with a unit where one is expected: "${here}ms" or "${here}"`;
  if (expected === "object" && here === null) return "give the mapping's fields, or remove the key";
  return `write ${EXPECTED[expected] ?? expected} here`;
}

// ───────────── schema introspection for "did you mean" on keys ─────────────

interface AnyDef {
  type: string;
  shape?: Record<string, unknown>;
  valueType?: unknown;
  element?: unknown;
  innerType?: unknown;
  in?: unknown;
  options?: unknown[];
}
const defOf = (s: unknown): AnyDef => (s as { _zod: { def: AnyDef } })._zod.def;

function unwrap(schema: unknown): unknown[] {
  const def = defOf(schema);
  switch (def.type) {
    case "optional":
    case "nullable":
    case "default":
    case "prefault":
    case "readonly":
    case "catch":
      return unwrap(def.innerType);
    case "pipe":
      return unwrap(def.in);
    case "union":
      return (def.options ?? []).flatMap(unwrap);
    default:
      return [schema];
  }
}

/** The keys an object at `segments` may have, read from the schema itself (so hints never go stale). */
export function knownKeysAt(schema: unknown, segments: readonly (string | number)[]): string[] {
  let current = unwrap(schema);
  for (const seg of segments) {
    const next: unknown[] = [];
    for (const s of current) {
      const def = defOf(s);
      if (def.type === "object" && typeof seg === "string" && def.shape?.[seg])
        next.push(...unwrap(def.shape[seg]));
      else if (def.type === "record") next.push(...unwrap(def.valueType));
      else if (def.type === "array" && typeof seg === "number") next.push(...unwrap(def.element));
    }
    current = next;
  }
  const keys = new Set<string>();
  for (const s of current) {
    const def = defOf(s);
    if (def.type === "object") for (const k of Object.keys(def.shape ?? {})) keys.add(k);
  }
  return [...keys].filter((k) => k !== "$schema");
}
