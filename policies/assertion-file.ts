/**
 * Traffic assertions: expected decisions for concrete requests, checked with explainRequest() — the
 * proxies' own decision code — before deploy. Written in YAML beside the spec (`assertions.yaml`, found by
 * `meshgate verify` on its own) or given as values through the TypeScript API:
 *
 * ```yaml
 * assertions:
 *   - name: a customer reads an order
 *     from: internet
 *     method: GET
 *     path: /api/orders/7
 *     claims: { sub: u-1 }
 *     scopes: [orders:read]
 *     expect: allow
 *     route: get-order        # optional: the route that must serve it
 *     to: orders              # optional: a service the route must reach
 *   - name: orders cannot delete payments
 *     from: orders
 *     to: payments
 *     method: DELETE
 *     path: /payments/1
 *     expect: deny
 *     layer: mesh             # optional: the layer that must refuse it
 *     code: method_not_allowed
 *   - name: payments reaches the card processor   # a destination outside the mesh (spec `external`)
 *     from: payments
 *     to: card-processor
 *     path: /v1/charges       # travels inside the tunnel: the sidecar decides on the destination alone
 *     expect: allow
 *     rule: external.card-processor.allow[0]
 * ```
 *
 * Each assertion becomes one check of `meshgate verify` (kind "assertion"); a failed one is an
 * E_POLICY_ASSERTION_FAILED violation with the assertion file's line and the decision's trace. A file that
 * does not parse, has unknown keys, or names a service, consumer, provider or route the spec does not have
 * is refused whole (E_POLICY_ASSERTIONS_INVALID): an assertion about a typo would never test anything.
 */
import { readFile } from "node:fs/promises";
import { parse } from "yaml";
import { z } from "zod";
import { closest } from "../components/spec/semantic.ts";
import { HTTP_METHODS } from "../runtime/contract/schema.ts";
import type { PolicyLoadError } from "./errors.ts";
import {
  LAYERS,
  explainRequest,
  formatDecision,
  requestProblems,
  verdictLine,
  type TrafficDecision,
  type TrafficRequest,
} from "./assertions.ts";
import { INTERNET } from "./model.ts";
import { yamlLocator, type Locate } from "./positions.ts";
import type { PolicyInput } from "./run.ts";
import type { CheckResult, Violation } from "./types.ts";

/** What an assertion expects of the decision; everything but `expect` is optional. */
export interface TrafficExpectation {
  expect: "allow" | "deny";
  /** The gateway route (internet) or the caller's route policy (mesh) that must decide; null = none. */
  route?: string | null;
  /** The layer that must refuse (deny) or the last layer passed (allow). */
  layer?: (typeof LAYERS)[number];
  /** The status the caller must receive. */
  status?: number;
  /** The denial's code (`unauthenticated`, `forbidden`, `peer_not_allowed`, …). */
  code?: string;
  /**
   * Mesh: the callee's allow rule that must admit it (`services.payments.allow[0]`); to an external
   * destination, its allow rule (`external.card-processor.allow[0]`).
   */
  rule?: string;
}

/** One assertion: a request and what must be decided for it. */
export interface TrafficAssertion extends TrafficRequest, TrafficExpectation {
  name?: string;
}

const Assertion = z.strictObject({
  name: z.string().min(1).optional(),
  from: z.string().min(1),
  to: z.string().min(1).optional(),
  method: z
    .string()
    .transform((m) => m.toUpperCase())
    .pipe(z.enum(HTTP_METHODS))
    .optional(),
  path: z.string().min(1),
  host: z.string().min(1).optional(),
  port: z.number().int().min(1).max(65535).optional(),
  headers: z.record(z.string(), z.string()).optional(),
  claims: z.record(z.string(), z.unknown()).optional(),
  scopes: z.array(z.string()).optional(),
  provider: z.string().optional(),
  consumer: z.string().optional(),
  clientIp: z.string().optional(),
  expect: z.enum(["allow", "deny"]),
  route: z.string().nullable().optional(),
  layer: z.enum(LAYERS).optional(),
  status: z.number().int().min(100).max(599).optional(),
  code: z.string().optional(),
  rule: z.string().optional(),
});

const AssertionFile = z.strictObject({
  $schema: z.string().optional(),
  assertions: z.array(Assertion),
});

const ASSERTION_KEYS = Object.keys(Assertion.shape);

/** Assertions read from a file, with where each one is. */
export interface AssertionSet {
  file: string;
  assertions: TrafficAssertion[];
  /** Positions of `assertions[i]` paths in the file. */
  locate: Locate;
}

export type AssertionLoadResult = { ok: true; set: AssertionSet } | { ok: false; errors: PolicyLoadError[] };

const invalid = (
  file: string,
  path: string,
  message: string,
  hint: string,
  locate?: Locate,
): PolicyLoadError => ({
  code: "E_POLICY_ASSERTIONS_INVALID",
  file,
  path,
  message,
  hint,
  ...((path && locate?.(path)) || {}),
});

/** Reads an assertion file (YAML or JSON). */
export async function loadAssertionFile(file: string): Promise<AssertionLoadResult> {
  let text: string;
  try {
    text = await readFile(file, "utf8");
  } catch (err) {
    return {
      ok: false,
      errors: [
        {
          code: "E_POLICY_ASSERTIONS_NOT_FOUND",
          file,
          path: "",
          message: `cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`,
          hint: "check the path (it is relative to the current directory)",
        },
      ],
    };
  }
  return parseAssertionText(text, file);
}

/** Parses and validates the text of an assertion file (its shape; references are checked against a spec). */
export function parseAssertionText(text: string, file: string): AssertionLoadResult {
  let raw: unknown;
  try {
    raw = parse(text, { uniqueKeys: true }) ?? {};
  } catch (err) {
    const e = err as Error & { linePos?: { line: number; col: number }[] };
    const pos = e.linePos?.[0];
    return {
      ok: false,
      errors: [
        {
          code: "E_POLICY_ASSERTIONS_INVALID",
          file,
          path: "",
          message: e.message.split("\n")[0]!.replace(/ at line \d+, column \d+:?$/, ""),
          hint: "fix the YAML syntax at this line and column",
          ...(pos ? { line: pos.line, column: pos.col } : {}),
        },
      ],
    };
  }
  const locate = yamlLocator(text);
  const parsed = AssertionFile.safeParse(raw);
  if (!parsed.success) {
    const errors: PolicyLoadError[] = [];
    for (const issue of parsed.error.issues) {
      const base = issue.path.map((p) => (typeof p === "number" ? `[${p}]` : String(p)));
      const path = base.join(".").replaceAll(".[", "[");
      if (issue.code === "unrecognized_keys") {
        const allowed = base.length === 0 ? ["assertions"] : ASSERTION_KEYS;
        for (const key of issue.keys) {
          const guess = closest(key, allowed);
          errors.push(
            invalid(
              file,
              path ? `${path}.${key}` : key,
              `unknown key ${JSON.stringify(key)}${guess ? ` (did you mean ${JSON.stringify(guess)}?)` : ""}`,
              `allowed here: ${allowed.join(", ")}`,
              locate,
            ),
          );
        }
      } else {
        errors.push(
          invalid(
            file,
            path,
            issue.message,
            path === ""
              ? "write a mapping with assertions: [ … ]"
              : "see docs/policies.md (traffic assertions)",
            locate,
          ),
        );
      }
    }
    return { ok: false, errors };
  }
  const assertions = parsed.data.assertions.map((a) => {
    const out: TrafficAssertion = { from: a.from, path: a.path, expect: a.expect };
    for (const [k, v] of Object.entries(a))
      if (v !== undefined) (out as unknown as Record<string, unknown>)[k] = v;
    return out;
  });
  return { ok: true, set: { file, assertions, locate } };
}

/**
 * The references of every assertion checked against a spec: callers, callees, consumers, providers and
 * expected routes must exist. Returns the problems ([] when every assertion can be evaluated).
 */
export function checkAssertionReferences(input: PolicyInput, set: AssertionSet): PolicyLoadError[] {
  const errors: PolicyLoadError[] = [];
  const routes = input.model.routes.map((r) => r.name);
  set.assertions.forEach((a, i) => {
    for (const p of requestProblems(input, a))
      errors.push(
        invalid(
          set.file,
          `assertions[${i}].${p.field}`,
          p.message.slice(p.field.length + 2),
          fixFor(p.field),
          set.locate,
        ),
      );
    if (a.route !== undefined && a.route !== null && a.from === INTERNET && !routes.includes(a.route)) {
      const guess = closest(a.route, routes);
      errors.push(
        invalid(
          set.file,
          `assertions[${i}].route`,
          `the spec has no gateway route ${JSON.stringify(a.route)}${guess ? ` (did you mean ${JSON.stringify(guess)}?)` : ""}`,
          "name a route of gateway.routes, or drop route:",
          set.locate,
        ),
      );
    }
  });
  return errors;
}

const fixFor = (field: string): string =>
  field === "from" || field === "to"
    ? "name a service of the spec (or internet / gateway as the caller, an external destination as a service's callee)"
    : field === "consumer"
      ? "name a consumer of gateway.apiKeys.consumers"
      : field === "provider"
        ? "name a provider of gateway.jwt"
        : "see docs/policies.md (traffic assertions)";

/** The name of an assertion: its own, or a summary of its request. */
export function assertionName(a: TrafficAssertion): string {
  if (a.name) return a.name;
  const to = a.to && a.from !== INTERNET ? ` → ${a.to}` : "";
  return `${a.from}${to} ${a.method ?? "GET"} ${a.path} is ${a.expect === "allow" ? "allowed" : "denied"}`;
}

/** What differs between an expectation and a decision ([] when it holds). */
export function expectationMismatches(
  a: TrafficExpectation & { to?: string; from?: string },
  d: TrafficDecision,
): string[] {
  const out: string[] = [];
  if (d.verdict !== a.expect) out.push(`expected ${a.expect}, got ${d.verdict}`);
  if (a.route !== undefined && a.route !== d.route)
    out.push(`expected route ${a.route === null ? "none" : a.route}, got ${d.route ?? "none"}`);
  if (a.layer !== undefined && a.layer !== d.layer) out.push(`expected layer ${a.layer}, got ${d.layer}`);
  if (a.status !== undefined && a.status !== d.status)
    out.push(`expected status ${a.status}, got ${d.status ?? "none"}`);
  if (a.code !== undefined && a.code !== d.code) out.push(`expected code ${a.code}, got ${d.code ?? "none"}`);
  if (a.rule !== undefined && a.rule !== d.rule) out.push(`expected rule ${a.rule}, got ${d.rule ?? "none"}`);
  if (a.from === INTERNET && a.to !== undefined && !d.targets.includes(a.to))
    out.push(`expected the request to reach ${a.to}, it reaches ${d.targets.join(", ") || "no service"}`);
  return out;
}

/** Evaluates assertions on a spec: one CheckResult (kind "assertion") per assertion. */
export function runAssertions(
  input: PolicyInput,
  assertions: readonly TrafficAssertion[],
  where: { file?: string; locate?: Locate } = {},
): CheckResult[] {
  return assertions.map((a, i) => {
    const name = assertionName(a);
    const description = `${a.from}${a.to && a.from !== INTERNET ? ` → ${a.to}` : ""} ${a.method ?? "GET"} ${a.host ? `${a.host} ` : ""}${a.path}: expect ${a.expect}`;
    const path = `assertions[${i}]`;
    const violation = (message: string, fix: string): Violation => ({
      code: "E_POLICY_ASSERTION_FAILED",
      severity: "error",
      guardrail: "assertions",
      path,
      message,
      fix,
      ...(where.file ? { file: where.file } : {}),
      ...(where.locate?.(path) ?? {}),
    });
    let d: TrafficDecision;
    try {
      d = explainRequest(input, a);
    } catch (err) {
      return {
        kind: "assertion",
        name,
        description,
        passed: false,
        violations: [violation(`cannot evaluate: ${(err as Error).message}`, "fix the assertion's request")],
      };
    }
    const mismatches = expectationMismatches(a, d);
    return {
      kind: "assertion",
      name,
      description,
      passed: mismatches.length === 0,
      violations:
        mismatches.length === 0
          ? []
          : [
              violation(
                `${name}: ${mismatches.join("; ")} — ${verdictLine(d)}\n${formatDecision(d)
                  .split("\n")
                  .map((l) => `      ${l}`)
                  .join("\n")}`,
                "change the spec so that the proxies decide as asserted, or correct the assertion (meshgate explain shows every step)",
              ),
            ],
    };
  });
}
