/**
 * The organization's policy file (`meshgate-policy.yaml`, given with `--policy`):
 *
 * ```yaml
 * rules:                         # code (or guardrail name) → error | warning | info | off
 *   E_POLICY_RETRY_AMPLIFICATION: warning
 *   E_POLICY_RATE_LIMIT_FAIL_OPEN: off
 *   observability: warning       # every code of a guardrail at once
 * limits:
 *   maxRetryAmplification: 8     # default 10
 *   maxWorkloadTtl: 72h          # default 7d
 * ```
 *
 * Parsed strictly (zod): unknown keys, unknown codes and unknown severities are errors with the file's
 * line and column and a did-you-mean, never silently ignored.
 */
import { readFile } from "node:fs/promises";
import { parse } from "yaml";
import { z } from "zod";
import { closest } from "../components/spec/semantic.ts";
import { isDuration, parseDuration } from "../components/spec/units.ts";
import type { PolicyLoadError } from "./errors.ts";
import { yamlLocator, type Locate } from "./positions.ts";
import { DEFAULT_POLICY, type PolicyConfig } from "./run.ts";
import { DEFAULT_LIMITS, type Guardrail } from "./types.ts";

const SEVERITIES = ["error", "warning", "info", "off"] as const;

const PolicyFileSchema = z.strictObject({
  $schema: z.string().optional(),
  rules: z.record(z.string(), z.enum(SEVERITIES)).optional(),
  limits: z
    .strictObject({
      maxRetryAmplification: z.number().int().min(1).max(1_000_000).optional(),
      maxWorkloadTtl: z
        .string()
        .refine(isDuration, { error: 'not a duration (write e.g. "24h", "7d")' })
        .optional(),
    })
    .optional(),
});

export type PolicyLoadResult = { ok: true; policy: PolicyConfig } | { ok: false; errors: PolicyLoadError[] };

/** Reads and validates a policy file against the guardrails that will run (their codes and names). */
export async function loadPolicyFile(
  file: string,
  guardrails: readonly Guardrail[],
): Promise<PolicyLoadResult> {
  let text: string;
  try {
    text = await readFile(file, "utf8");
  } catch (err) {
    return {
      ok: false,
      errors: [
        {
          code: "E_POLICY_FILE_NOT_FOUND",
          file,
          path: "",
          message: `cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`,
          hint: "check the path (it is relative to the current directory)",
        },
      ],
    };
  }
  return parsePolicyText(text, file, guardrails);
}

/** Validates a policy file's text (YAML or JSON). */
export function parsePolicyText(
  text: string,
  file: string,
  guardrails: readonly Guardrail[],
): PolicyLoadResult {
  const errors: PolicyLoadError[] = [];
  const locate = yamlLocator(text);
  let raw: unknown;
  try {
    raw = parse(text, { uniqueKeys: true }) ?? {};
  } catch (err) {
    const e = err as Error & { linePos?: { line: number; col: number }[] };
    const pos = e.linePos?.[0];
    errors.push({
      code: "E_POLICY_FILE_INVALID",
      file,
      path: "",
      message: e.message.split("\n")[0]!.replace(/ at line \d+, column \d+:?$/, ""),
      hint: "fix the YAML syntax at this line and column",
      ...(pos ? { line: pos.line, column: pos.col } : {}),
    });
    return { ok: false, errors };
  }
  return parsePolicyObject(raw, file, guardrails, locate);
}

/**
 * Validates a policy given as a value (the parsed file, or the CrossGuard pack's policy config). `locate`
 * gives positions when the value came from a text.
 */
export function parsePolicyObject(
  raw: unknown,
  file: string,
  guardrails: readonly Guardrail[],
  locate: Locate = () => undefined,
): PolicyLoadResult {
  const errors: PolicyLoadError[] = [];
  const add = (path: string, message: string, hint: string) =>
    errors.push({ code: "E_POLICY_FILE_INVALID", file, path, message, hint, ...(locate(path) ?? {}) });
  const parsed = PolicyFileSchema.safeParse(raw);
  if (!parsed.success) {
    for (const issue of parsed.error.issues) {
      const base = issue.path.map(String);
      if (issue.code === "unrecognized_keys") {
        const allowed = base.length === 0 ? ["rules", "limits"] : ["maxRetryAmplification", "maxWorkloadTtl"];
        for (const key of issue.keys) {
          const guess = closest(key, allowed);
          add(
            [...base, key].join("."),
            `unknown key ${JSON.stringify(key)}${guess ? ` (did you mean ${JSON.stringify(guess)}?)` : ""}`,
            `allowed here: ${allowed.join(", ")}`,
          );
        }
      } else if (base[0] === "rules" && base.length === 2) {
        add(
          base.join("."),
          `severity ${JSON.stringify(valueAt(raw, base))} is not one of ${SEVERITIES.join(", ")}`,
          "write error, warning, info or off",
        );
      } else {
        add(
          base.join("."),
          issue.message,
          base[0] === "limits"
            ? "see the limits in the documentation (docs/policies.md)"
            : "write a mapping with rules: and limits:",
        );
      }
    }
    return { ok: false, errors };
  }
  const known = new Set<string>();
  for (const g of guardrails) {
    known.add(g.name);
    for (const code of Object.keys(g.codes)) known.add(code);
  }
  const rules = parsed.data.rules ?? {};
  for (const key of Object.keys(rules)) {
    if (known.has(key)) continue;
    const guess = closest(key, known);
    add(
      `rules.${key}`,
      `unknown rule ${JSON.stringify(key)}${guess ? ` (did you mean ${JSON.stringify(guess)}?)` : ""}`,
      "name a code a guardrail reports (meshgate verify --format json lists them) or a guardrail",
    );
  }
  if (errors.length > 0) return { ok: false, errors };
  const limits = parsed.data.limits ?? {};
  return {
    ok: true,
    policy: {
      rules,
      limits: {
        ...DEFAULT_POLICY.limits,
        ...(limits.maxRetryAmplification !== undefined
          ? { maxRetryAmplification: limits.maxRetryAmplification }
          : {}),
        ...(limits.maxWorkloadTtl !== undefined
          ? { maxWorkloadTtlMs: parseDuration(limits.maxWorkloadTtl) }
          : {}),
      },
    },
  };
}

function valueAt(raw: unknown, path: string[]): unknown {
  let v = raw;
  for (const p of path) v = v && typeof v === "object" ? (v as Record<string, unknown>)[p] : undefined;
  return v;
}

export { DEFAULT_LIMITS };
