/**
 * Running guardrails: translate a valid spec once, run every guardrail (built-in and the organization's),
 * apply the policy file's severities and limits, and return one CheckResult per guardrail. A guardrail
 * that throws, or reports a code it does not declare, fails closed (E_POLICY_RULE_FAILED).
 */
import type { MeshSpec } from "../components/spec/schema.ts";
import { translate } from "../components/translate/translate.ts";
import { GUARDRAILS } from "./guardrails/index.ts";
import { MeshModel } from "./model.ts";
import type { Locate } from "./positions.ts";
import {
  DEFAULT_LIMITS,
  type CheckResult,
  type Guardrail,
  type GuardrailContext,
  type PolicyLimits,
  type Severity,
  type Violation,
} from "./types.ts";
import { cmp } from "./order.ts";

/** A spec ready for the policies: the spec, its IR and the indexes over it. */
export interface PolicyInput {
  readonly spec: MeshSpec;
  readonly infra: GuardrailContext["infra"];
  readonly runtime: GuardrailContext["runtime"];
  readonly diagnostics: GuardrailContext["diagnostics"];
  readonly model: MeshModel;
}

/** Translates a valid spec for the policies. */
export function policyInput(spec: MeshSpec): PolicyInput {
  const { infra, runtime, diagnostics } = translate(spec);
  return { spec, infra, runtime, diagnostics, model: new MeshModel(spec, infra, runtime) };
}

/** What an organization's policy file says (see policy-file.ts). */
export interface PolicyConfig {
  /** Code (or guardrail name, for all its codes) → severity in force, or "off". */
  rules: Readonly<Record<string, Severity | "off">>;
  limits: Readonly<PolicyLimits>;
}

export const DEFAULT_POLICY: PolicyConfig = Object.freeze({ rules: {}, limits: DEFAULT_LIMITS });

export interface RunOptions {
  /** The guardrails to run; default: the built-ins. */
  guardrails?: readonly Guardrail[];
  /** Extra guardrails (an organization's rule modules), run after the built-ins. */
  rules?: readonly Guardrail[];
  policy?: PolicyConfig;
  /** Positions for violations (from the spec's text). */
  locate?: Locate;
}

/** Runs every guardrail on one spec. */
export function runGuardrails(input: PolicyInput, options: RunOptions = {}): CheckResult[] {
  const policy = options.policy ?? DEFAULT_POLICY;
  const ctx: GuardrailContext = { ...input, limits: policy.limits };
  const all = [...(options.guardrails ?? GUARDRAILS), ...(options.rules ?? [])];
  return all.map((g) => runOne(g, ctx, policy, options.locate));
}

/** The severity in force for a code of a guardrail: the policy file's code entry, its guardrail entry, or the default. */
export function severityOf(g: Guardrail, code: string, policy: PolicyConfig): Severity | "off" {
  return policy.rules[code] ?? policy.rules[g.name] ?? g.codes[code]?.severity ?? "error";
}

function runOne(
  g: Guardrail,
  ctx: GuardrailContext,
  policy: PolicyConfig,
  locate: Locate | undefined,
): CheckResult {
  const violations: Violation[] = [];
  const failed = (message: string) =>
    violations.push({
      code: "E_POLICY_RULE_FAILED",
      severity: "error",
      guardrail: g.name,
      path: "",
      message,
      fix: `fix the guardrail "${g.name}" (it must return findings with the codes it declares, and not throw)`,
    });
  let findings;
  try {
    findings = g.check(ctx);
    if (!Array.isArray(findings)) throw new TypeError(`check() returned ${typeof findings}, not an array`);
  } catch (err) {
    failed(`guardrail "${g.name}" threw: ${(err as Error)?.message ?? String(err)}`);
    findings = [];
  }
  for (const f of findings) {
    if (!f || typeof f.code !== "string" || !(f.code in g.codes)) {
      failed(`guardrail "${g.name}" reported the undeclared code ${JSON.stringify(f?.code)}`);
      continue;
    }
    const severity = severityOf(g, f.code, policy);
    if (severity === "off") continue;
    const path = typeof f.path === "string" ? f.path : "";
    const pos = locate && path ? locate(path) : undefined;
    violations.push({
      code: f.code,
      severity,
      guardrail: g.name,
      path,
      message: String(f.message),
      fix: String(f.fix),
      ...(pos ?? {}),
    });
  }
  violations.sort(
    (a, b) =>
      (a.line ?? Infinity) - (b.line ?? Infinity) ||
      (a.column ?? 0) - (b.column ?? 0) ||
      cmp(a.path, b.path) ||
      cmp(a.code, b.code) ||
      cmp(a.message, b.message),
  );
  return {
    kind: "guardrail",
    name: g.name,
    description: g.description,
    passed: !violations.some((v) => v.severity === "error"),
    violations,
  };
}
