/**
 * meshgate/policies: checks over the IR before deploy. This module grows with the policy issue
 * (guardrails, assertions through decide(), explain, semantic diff); today it exposes the reachability
 * relation that graph and diff are built on.
 */
import type { EdgeIR, InfraIR } from "../components/translate/ir.ts";

/** Who may open a connection to whom, as the callee's authorization rules say (deny by default). */
export function allowedEdges(infra: InfraIR): EdgeIR[] {
  return infra.edges.filter((e) => e.allowed);
}

/** Declared calls (the `calls` graph and the gateway's routes) that the callee's rules would deny. */
export function deniedCalls(infra: InfraIR): EdgeIR[] {
  return infra.edges.filter((e) => e.declared && !e.allowed);
}
