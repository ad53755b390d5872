/**
 * The guardrail contract: what a guardrail receives, what it returns, and what `verify` makes of it.
 * Built-in guardrails (policies/guardrails/<name>/) and an organization's own rules
 * (`meshgate verify --rules ./my-rules.ts`) implement the same `Guardrail` interface.
 */
import type { MeshSpec } from "../components/spec/schema.ts";
import type { Diagnostic } from "../components/spec/errors.ts";
import type { InfraIR, RuntimeConfigs } from "../components/translate/ir.ts";
import type { Severity } from "./errors.ts";
import type { MeshModel } from "./model.ts";

export type { Severity };

/** Numbers an organization may tighten or loosen in its policy file (`limits:`). */
export interface PolicyLimits {
  /**
   * The most attempts one client request may cause at any service: the product of (1 + retries) of every
   * hop along a path of the call graph, gateway route included.
   * @default 10 — three attempts at two layers (9) pass; retries at three layers (27) do not.
   */
  maxRetryAmplification: number;
  /**
   * The longest lifetime of a workload SVID, in milliseconds.
   * @default 7 days — SPIFFE recommends short-lived SVIDs; meshgate's default is 24h.
   */
  maxWorkloadTtlMs: number;
}

export const DEFAULT_LIMITS: Readonly<PolicyLimits> = Object.freeze({
  maxRetryAmplification: 10,
  maxWorkloadTtlMs: 7 * 24 * 3_600_000,
});

/** Everything a guardrail may read: the valid spec, its IR, the limits in force, and derived indexes. */
export interface GuardrailContext {
  readonly spec: MeshSpec;
  readonly infra: InfraIR;
  readonly runtime: RuntimeConfigs;
  /** translate()'s non-fatal diagnostics (W_SPEC_*). */
  readonly diagnostics: readonly Diagnostic[];
  readonly limits: Readonly<PolicyLimits>;
  /** Indexes over the IR computed once per spec (routes by name, plans per service, the call graph, …). */
  readonly model: MeshModel;
}

/** One finding of a guardrail. Its severity comes from the code's declaration and the policy file. */
export interface Finding {
  /** A code the guardrail declares in `codes`. */
  code: string;
  /** Dotted spec path of what to change (`gateway.routes[3].retries`), "" for the whole spec. */
  path: string;
  message: string;
  /** How to fix it. */
  fix: string;
}

/** A code a guardrail may report: default severity and one line of meaning (documented in the catalog). */
export interface CodeDeclaration {
  severity: Severity;
  text: string;
}

/**
 * A guardrail: a pure check over a valid spec and its IR. Organizations write their own in TypeScript:
 *
 * ```ts
 * import type { Guardrail } from "meshgate/policies";
 * export default {
 *   name: "owner-label",
 *   description: "every service names its owning team in env.OWNER",
 *   codes: { E_ACME_NO_OWNER: { severity: "error", text: "a service has no OWNER" } },
 *   check: ({ spec }) =>
 *     Object.entries(spec.services)
 *       .filter(([, s]) => !s.env?.OWNER)
 *       .map(([name]) => ({ code: "E_ACME_NO_OWNER", path: `services.${name}.env`,
 *                           message: `${name} has no OWNER`, fix: "set env.OWNER to the team's name" })),
 * } satisfies Guardrail;
 * ```
 */
export interface Guardrail {
  /** Unique, kebab-case (a built-in's folder name). */
  readonly name: string;
  /** One line: what it enforces. */
  readonly description: string;
  /** Every code it may report. Codes are upper-case (`E_POLICY_*` for built-ins, your own prefix for yours). */
  readonly codes: Readonly<Record<string, CodeDeclaration>>;
  /** The findings; an empty list when the mesh complies. Must not do I/O. */
  check(ctx: GuardrailContext): readonly Finding[];
}

/** A finding with the severity in force, the guardrail that found it, and (for files) its position. */
export interface Violation extends Finding {
  severity: Severity;
  guardrail: string;
  /** The file the position is in, when it is not the spec (an assertion file). */
  file?: string;
  line?: number;
  column?: number;
}

/**
 * The outcome of one check of `verify`: a guardrail today; traffic assertions (evaluated through decide())
 * produce the same shape in a later round. A check fails when it has an error-severity violation.
 */
export interface CheckResult {
  kind: "guardrail" | "assertion";
  name: string;
  description: string;
  passed: boolean;
  violations: Violation[];
}
