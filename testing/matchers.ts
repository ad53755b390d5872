/**
 * vitest matchers for traffic rules, for users' own test suites:
 *
 * ```ts
 * import { expect, it } from "vitest";
 * import { installMatchers, loadMesh } from "meshgate/testing";
 * installMatchers(expect); // once, e.g. in a vitest setup file
 *
 * it("keeps payments private", async () => {
 *   const mesh = await loadMesh("mesh.yaml");
 *   expect(mesh).toAllow({ from: "orders", to: "payments", method: "POST", path: "/payments" });
 *   expect(mesh).toDeny({ from: "web", to: "payments", method: "POST", path: "/payments" });
 *   expect(mesh).toDeny({ from: "internet", host: "api.shop.example", path: "/api/orders", layer: "authentication" });
 * });
 * ```
 *
 * The decision comes from explainRequest() (meshgate/policies): the proxies' own decision code on the
 * RuntimeConfigs the spec translates to. A failed expectation prints the decision's trace — each layer, its
 * rule and what it concluded. `mesh` is what loadMesh() returns, or a spec value (a plain object, or
 * defineMesh({...})). The optional expectation fields (`route`, `layer`, `status`, `code`, `rule`) narrow
 * the expectation.
 */
import { loadSpecFile } from "../components/spec/load.ts";
import { parseSpec } from "../components/spec/parse.ts";
import {
  explainRequest,
  formatDecision,
  requestProblems,
  verdictLine,
  type TrafficRequest,
} from "../policies/assertions.ts";
import { expectationMismatches, type TrafficExpectation } from "../policies/assertion-file.ts";
import { policyInput, type PolicyInput } from "../policies/run.ts";

/** A translated spec, ready for the matchers (and for explainRequest). */
export interface LoadedMesh {
  readonly kind: "meshgate.mesh";
  readonly file: string | null;
  readonly input: PolicyInput;
}

/** A request, with optional narrower expectations than allow/deny. */
export type MeshExpectation = TrafficRequest & Omit<TrafficExpectation, "expect">;

/** Loads a spec file (YAML, JSON or a TypeScript module exporting defineMesh({...})); throws listing its errors. */
export async function loadMesh(file: string): Promise<LoadedMesh> {
  const loaded = await loadSpecFile(file);
  if (!loaded.ok)
    throw new Error(
      `${file} is not a valid spec:\n${loaded.errors.map((e) => `  ${e.path}: ${e.message} [${e.code}]`).join("\n")}`,
    );
  return { kind: "meshgate.mesh", file, input: policyInput(loaded.spec) };
}

/** A spec value (plain object or defineMesh result) as a LoadedMesh; throws listing its errors. */
export function meshOf(spec: unknown): LoadedMesh {
  if (isLoaded(spec)) return spec;
  const r = parseSpec(spec);
  if (!r.ok)
    throw new Error(
      `not a valid spec:\n${r.errors.map((e) => `  ${e.path}: ${e.message} [${e.code}]`).join("\n")}`,
    );
  return { kind: "meshgate.mesh", file: null, input: policyInput(r.spec) };
}

const isLoaded = (v: unknown): v is LoadedMesh =>
  typeof v === "object" && v !== null && (v as { kind?: unknown }).kind === "meshgate.mesh";

/** Translated specs of spec values, so that a suite asserting many requests translates each spec once. */
const translated = new WeakMap<object, LoadedMesh>();

function resolveMesh(received: unknown): LoadedMesh {
  if (isLoaded(received)) return received;
  if (typeof received !== "object" || received === null)
    throw new TypeError("expect(mesh): mesh must be what loadMesh() returns, or a spec object");
  let m = translated.get(received);
  if (!m) translated.set(received, (m = meshOf(received)));
  return m;
}

interface MatcherContext {
  isNot?: boolean;
}

interface MatcherResult {
  pass: boolean;
  message: () => string;
}

function describeRequest(r: TrafficRequest): string {
  const to = r.to && r.from !== "internet" ? ` to ${r.to}` : "";
  return `${(r.method ?? "GET").toUpperCase()} ${r.host ? `${r.host} ` : ""}${r.path} from ${r.from}${to}`;
}

function check(
  ctx: MatcherContext,
  received: unknown,
  request: MeshExpectation,
  expect: "allow" | "deny",
): MatcherResult {
  const mesh = resolveMesh(received);
  const problems = requestProblems(mesh.input, request);
  if (problems.length > 0)
    return {
      pass: ctx.isNot === true, // an invalid request fails either way
      message: () =>
        `cannot evaluate ${describeRequest(request)}: ${problems.map((p) => p.message).join("; ")}`,
    };
  const d = explainRequest(mesh.input, request);
  const mismatches = expectationMismatches({ ...request, expect }, d);
  const pass = mismatches.length === 0;
  const trace = formatDecision(d)
    .split("\n")
    .map((l) => `  ${l}`)
    .join("\n");
  const verb = expect === "allow" ? "allowed" : "denied";
  return {
    pass,
    message: () =>
      pass
        ? `expected ${describeRequest(request)} not to be ${verb}${mismatches.length ? "" : " as described"}, but ${verdictLine(d)}\n${trace}`
        : `expected ${describeRequest(request)} to be ${verb}: ${mismatches.join("; ")} — ${verdictLine(d)}\n${trace}`,
  };
}

/** The matchers, for `expect.extend(meshgateMatchers)` (installMatchers does it). */
export const meshgateMatchers = {
  toAllow(this: MatcherContext, received: unknown, request: MeshExpectation): MatcherResult {
    return check(this, received, request, "allow");
  },
  toDeny(this: MatcherContext, received: unknown, request: MeshExpectation): MatcherResult {
    return check(this, received, request, "deny");
  },
};

/** Registers toAllow / toDeny on a vitest (or Jest-compatible) `expect`. */
export function installMatchers(expect: { extend(matchers: typeof meshgateMatchers): void }): void {
  expect.extend(meshgateMatchers);
}

declare module "vitest" {
  // The type parameters must repeat vitest's own declaration of Matchers (T is unused there too).
  // eslint-disable-next-line @typescript-eslint/no-unused-vars
  interface Matchers<R extends void | Promise<void> = void | Promise<void>, T = unknown> {
    /** The proxies allow this request (and decide as the optional route/layer/status/code/rule say). */
    toAllow(request: MeshExpectation): R;
    /** The proxies deny this request (at the optional layer, with the optional status/code). */
    toDeny(request: MeshExpectation): R;
  }
}
