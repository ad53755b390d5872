/**
 * `meshgate verify`: the outcome of every check on one spec — the guardrails, and the traffic assertions
 * (evaluated through decide(): CheckResults of kind "assertion") — as a report
 * with `N passed, N failed` and an exit status: failed when any check has an error-severity violation.
 */
import type { CheckResult, Violation } from "./types.ts";

export interface VerifyReport {
  file: string;
  ok: boolean;
  passed: number;
  failed: number;
  counts: { error: number; warning: number; info: number };
  checks: CheckResult[];
}

/** Combines the results of every check (guardrails, and assertions when there are any). */
export function verifyReport(file: string, ...groups: readonly CheckResult[][]): VerifyReport {
  const checks = groups.flat();
  const counts = { error: 0, warning: 0, info: 0 };
  for (const c of checks) for (const v of c.violations) counts[v.severity]++;
  const failed = checks.filter((c) => !c.passed).length;
  return { file, ok: failed === 0, passed: checks.length - failed, failed, counts, checks };
}

export function formatViolation(v: Violation, file: string): string {
  const where = `${v.file ?? file}${v.line ? `:${v.line}:${v.column}` : ""}`;
  return `${where}: ${v.severity}: ${v.path ? `${v.path}: ` : ""}${v.message} [${v.code}]\n    fix: ${v.fix}`;
}

const plural = (n: number, word: string) => `${n} ${word}${n === 1 ? "" : "s"}`;

/** The text report: every violation (file:line:col), one line per check, and the totals. */
export function formatVerifyText(r: VerifyReport): string {
  const lines: string[] = [];
  const all = r.checks.flatMap((c) => c.violations);
  for (const v of all) lines.push(formatViolation(v, r.file));
  if (all.length > 0) lines.push("");
  for (const c of r.checks) {
    const n = (sev: string) => c.violations.filter((v) => v.severity === sev).length;
    const parts = [
      n("error") ? plural(n("error"), "error") : "",
      n("warning") ? plural(n("warning"), "warning") : "",
      n("info") ? `${n("info")} info` : "",
    ].filter(Boolean);
    const tail = parts.length > 0 ? ` (${parts.join(", ")})` : "";
    lines.push(`${c.passed ? "✓" : "✗"} ${c.kind === "assertion" ? "assertion " : ""}${c.name}${tail}`);
  }
  const { error, warning, info } = r.counts;
  lines.push(
    `${r.passed} passed, ${r.failed} failed (${plural(error, "error")}, ${plural(warning, "warning")}, ${info} info)`,
  );
  return lines.join("\n");
}
