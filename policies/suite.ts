/**
 * Guardrail suites: a guardrail's cases beside its code (policies/guardrails/<name>/suite.yaml), in the
 * style of gatekeeper-library's suite.yaml — each case is a fixture spec and what the guardrail must say
 * about it. Organizations test their own rules the same way (`runSuite(dir, myGuardrail)`).
 *
 * ```yaml
 * kind: Suite
 * guardrail: strict-mtls
 * cases:
 *   - name: strict-mesh                # allowed
 *     spec: ../mini.yaml               # a spec file beside the suite (relative to it)
 *     assertions:
 *       - violations: no
 *   - name: permissive-mesh            # disallowed
 *     spec: ../mini.yaml
 *     patch: { mesh: { mtls: permissive } }   # merged into the spec (see mergePatch)
 *     assertions:
 *       - violations: yes
 *         code: E_POLICY_MTLS_PERMISSIVE
 *         path: mesh.mtls
 * ```
 *
 * An assertion `violations: no` requires that the guardrail report nothing; `violations: yes` at least one
 * violation matching every field given (code, path, severity, a message substring) — `count` requires
 * exactly that many.
 */
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { parse } from "yaml";
import { z } from "zod";
import { parseSpec } from "../components/spec/parse.ts";
import { policyInput, runGuardrails, type PolicyConfig } from "./run.ts";
import type { Guardrail, Violation } from "./types.ts";

const Assertion = z.strictObject({
  violations: z.enum(["yes", "no"]),
  code: z.string().optional(),
  path: z.string().optional(),
  severity: z.enum(["error", "warning", "info"]).optional(),
  message: z.string().optional(),
  count: z.number().int().min(0).optional(),
});

const Case = z.strictObject({
  name: z.string().min(1),
  spec: z.string().min(1),
  patch: z.record(z.string(), z.unknown()).optional(),
  assertions: z.array(Assertion).min(1),
});

export const SuiteSchema = z.strictObject({
  kind: z.literal("Suite"),
  guardrail: z.string(),
  cases: z.array(Case).min(1),
});

export type Suite = z.infer<typeof SuiteSchema>;
export type SuiteCase = Suite["cases"][number];

export interface CaseResult {
  name: string;
  /** "allowed" when every assertion says violations: no, else "disallowed". */
  kind: "allowed" | "disallowed";
  ok: boolean;
  /** Why the case failed (empty when ok). */
  failures: string[];
  violations: Violation[];
}

/** Reads and validates `<dir>/suite.yaml`. */
export async function loadSuite(dir: string): Promise<Suite> {
  const file = join(dir, "suite.yaml");
  const parsed = SuiteSchema.safeParse(parse(await readFile(file, "utf8")));
  if (!parsed.success) throw new Error(`${file}: ${z.prettifyError(parsed.error)}`);
  return parsed.data;
}

/**
 * Maps merge key by key, lists and scalars replace, null removes the key. A map whose keys are all list
 * indices patches a list item by item (`routes: { 2: { public: true } }`); an index one past the end
 * appends, and null removes the item.
 */
export function mergePatch(base: unknown, patch: unknown): unknown {
  if (Array.isArray(base) && isMap(patch) && Object.keys(patch).every((k) => /^(0|[1-9][0-9]*)$/.test(k))) {
    const out: unknown[] = structuredClone(base);
    const removed = new Set<number>();
    for (const [k, v] of Object.entries(patch)) {
      if (v === null) removed.add(Number(k));
      else out[Number(k)] = mergePatch(out[Number(k)], v);
    }
    return out.filter((_, i) => !removed.has(i));
  }
  if (!isMap(base) || !isMap(patch)) return structuredClone(patch);
  const out: Record<string, unknown> = structuredClone(base);
  for (const [k, v] of Object.entries(patch)) {
    if (v === null) delete out[k];
    else out[k] = mergePatch(out[k], v);
  }
  return out;
}

const isMap = (v: unknown): v is Record<string, unknown> =>
  v !== null && typeof v === "object" && !Array.isArray(v);

export const caseKind = (c: SuiteCase): CaseResult["kind"] =>
  c.assertions.every((a) => a.violations === "no") ? "allowed" : "disallowed";

/** Runs one case: builds its spec, runs the guardrail, checks every assertion. */
export async function runCase(
  dir: string,
  c: SuiteCase,
  guardrail: Guardrail,
  policy?: PolicyConfig,
): Promise<CaseResult> {
  const base = parse(await readFile(join(dir, c.spec), "utf8"));
  const raw = c.patch ? mergePatch(base, c.patch) : base;
  const parsed = parseSpec(raw);
  const result: CaseResult = { name: c.name, kind: caseKind(c), ok: true, failures: [], violations: [] };
  if (!parsed.ok) {
    result.ok = false;
    result.failures.push(
      `the case's spec is invalid (guardrails run on valid specs): ${parsed.errors.map((e) => `${e.path}: ${e.message} [${e.code}]`).join("; ")}`,
    );
    return result;
  }
  const [check] = runGuardrails(policyInput(parsed.spec), {
    guardrails: [guardrail],
    ...(policy ? { policy } : {}),
  });
  result.violations = check!.violations;
  for (const a of c.assertions) {
    const matching = result.violations.filter(
      (v) =>
        (a.code === undefined || v.code === a.code) &&
        (a.path === undefined || v.path === a.path) &&
        (a.severity === undefined || v.severity === a.severity) &&
        (a.message === undefined || v.message.includes(a.message)),
    );
    const want = JSON.stringify({ ...a, violations: undefined });
    if (a.violations === "no" && matching.length > 0)
      result.failures.push(
        `expected no violation${want === "{}" ? "" : ` matching ${want}`}, got: ${matching.map((v) => `${v.code} at ${v.path}`).join(", ")}`,
      );
    if (a.violations === "yes" && matching.length === 0)
      result.failures.push(
        `expected a violation matching ${want}, got: ${result.violations.map((v) => `${v.code} at ${v.path}`).join(", ") || "none"}`,
      );
    if (a.violations === "yes" && a.count !== undefined && matching.length !== a.count)
      result.failures.push(`expected ${a.count} violation(s) matching ${want}, got ${matching.length}`);
  }
  result.ok = result.failures.length === 0;
  return result;
}

/** Runs every case of the suite in `dir` against `guardrail`. */
export async function runSuite(
  dir: string,
  guardrail: Guardrail,
  policy?: PolicyConfig,
): Promise<CaseResult[]> {
  const suite = await loadSuite(dir);
  if (suite.guardrail !== guardrail.name)
    throw new Error(
      `${join(dir, "suite.yaml")} is the suite of "${suite.guardrail}", not of "${guardrail.name}"`,
    );
  const out: CaseResult[] = [];
  for (const c of suite.cases) out.push(await runCase(dir, c, guardrail, policy));
  return out;
}
