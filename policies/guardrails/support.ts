/** Helpers shared by the built-in guardrails. */
import { codesOf, type PolicyCode } from "../errors.ts";
import type { Finding, Guardrail, GuardrailContext } from "../types.ts";

/** A built-in guardrail: its codes (and their default severities) come from the policy catalog. */
export function builtin(
  name: string,
  description: string,
  check: (ctx: GuardrailContext, report: Report) => void,
): Guardrail {
  return {
    name,
    description,
    codes: codesOf(name),
    check(ctx) {
      const findings: Finding[] = [];
      check(ctx, (code, path, message, fix) => findings.push({ code, path, message, fix }));
      return findings;
    },
  };
}

export type Report = (code: PolicyCode, path: string, message: string, fix: string) => void;

/** "1.5s", "300ms", "2h": a duration in milliseconds, written the way specs write them. */
export function ms(value: number): string {
  if (!Number.isFinite(value)) return "∞";
  const DAY = 86_400_000;
  if (value % (365 * DAY) === 0 && value > 0) return `${value / (365 * DAY)}y`;
  if (value % DAY === 0 && value >= 7 * DAY) return `${value / DAY}d`;
  const units: [number, string][] = [
    [3_600_000, "h"],
    [60_000, "m"],
    [1000, "s"],
  ];
  for (const [size, unit] of units) if (value >= size && value % size === 0) return `${value / size}${unit}`;
  if (value >= 1000 && (value / 1000) % 0.5 === 0) return `${value / 1000}s`;
  return `${value}ms`;
}

/** "a, b, c and 4 more" */
export function names(items: readonly string[], max = 5): string {
  if (items.length <= max) return items.join(", ");
  return `${items.slice(0, max).join(", ")} and ${items.length - max} more`;
}
