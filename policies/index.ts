/**
 * meshgate/policies: checks over the IR before deploy — guardrails (built-in and your own), traffic
 * assertions and explanations through the proxies' decision code (explainRequest), replay of access logs,
 * the reachability relation, the semantic diff, and the service graph.
 */
import type { EdgeIR, EgressIR, InfraIR } from "../components/translate/ir.ts";

/** Who may open a connection to whom, as the callee's authorization rules say (deny by default). */
export function allowedEdges(infra: InfraIR): EdgeIR[] {
  return infra.edges.filter((e) => e.allowed);
}

/** Declared calls (the `calls` graph and the gateway's routes) that the callee's rules would deny. */
export function deniedCalls(infra: InfraIR): EdgeIR[] {
  return infra.edges.filter((e) => e.declared && !e.allowed);
}

/** Declared calls to destinations outside the mesh that no allow rule of the destination admits. */
export function deniedEgress(infra: InfraIR): EgressIR[] {
  return infra.egress.filter((e) => e.declared && !e.allowed);
}

export { PolicyErrorCatalog, formatPolicyLoadError } from "./errors.ts";
export type { PolicyCode, PolicyLoadError, Severity } from "./errors.ts";
export { DEFAULT_LIMITS } from "./types.ts";
export type {
  CheckResult,
  CodeDeclaration,
  Finding,
  Guardrail,
  GuardrailContext,
  PolicyLimits,
  Violation,
} from "./types.ts";
export { GUARDRAILS } from "./guardrails/index.ts";
export { DEFAULT_POLICY, policyInput, runGuardrails, severityOf } from "./run.ts";
export type { PolicyConfig, PolicyInput, RunOptions } from "./run.ts";
export { MeshModel } from "./model.ts";
export { loadPolicyFile, parsePolicyText } from "./policy-file.ts";
export { loadRuleModules } from "./rules.ts";
export { formatVerifyText, formatViolation, verifyReport } from "./verify.ts";
export type { VerifyReport } from "./verify.ts";
export { lineLocator, locatorFor, yamlLocator } from "./positions.ts";
export { loadSuite, mergePatch, runCase, runSuite } from "./suite.ts";
export type { CaseResult, Suite } from "./suite.ts";
export { analyzeRoutes } from "./route-analysis.ts";
export type { RouteAnalysis } from "./route-analysis.ts";
export { admission, patternContains, patternsOverlap } from "./patterns.ts";
export { authCovers, destinationOf, principalOf, staticReachability } from "./reachability.ts";
export type {
  EgressAccess,
  ExternalDestination,
  Grant,
  MeshAccess,
  Reachability,
  ReachabilityFn,
  RouteAccess,
} from "./reachability.ts";
export { renderDiffMarkdown, semanticDiff } from "./diff.ts";
export type {
  AccessChange,
  DiffOptions,
  EgressRef,
  ExternalChange,
  SemanticDiff,
  SettingChange,
} from "./diff.ts";
export { buildGraph, renderDot, renderMermaid } from "./graph.ts";
export {
  DEFAULT_CLIENT_IP,
  LAYERS,
  TrafficRequestError,
  explainRequest,
  formatDecision,
  requestProblems,
  verdictLine,
} from "./assertions.ts";
export type { DecisionStep, Layer, ResolvedRequest, TrafficDecision, TrafficRequest } from "./assertions.ts";
export {
  assertionName,
  checkAssertionReferences,
  expectationMismatches,
  loadAssertionFile,
  parseAssertionText,
  runAssertions,
} from "./assertion-file.ts";
export type {
  AssertionLoadResult,
  AssertionSet,
  TrafficAssertion,
  TrafficExpectation,
} from "./assertion-file.ts";
export { egressEdges, egressPeers, networkEdge, networkEdges } from "./network.ts";
export type { EgressNetworkEdge, NetworkEdge } from "./network.ts";
export { formatReplayText, parseAccessLog, replay } from "./replay.ts";
export type { LoggedRequest, ReplayChange, ReplayOutcome, ReplayReport } from "./replay.ts";
