/**
 * idempotent-retries: no plan retries a non-idempotent request after its bytes were sent. The proxies
 * already refuse such retries at run time (runtime/upstream/resilience.ts: only connect-failure and
 * refused-stream are retried for POST/PATCH), so a plan that asks for them promises resilience it will
 * not deliver; this guardrail makes the plan say what will happen. Mesh hops are checked for the
 * requests each caller's allow rule admits, against the callee's per-route plans that may apply.
 */
import {
  HTTP_METHODS,
  IDEMPOTENT_METHODS,
  type HttpMethod,
  type RetryPlan,
} from "../../../runtime/contract/schema.ts";
import { patternContains, patternsOverlap } from "../../patterns.ts";
import { builtin, names } from "../support.ts";

/** Failures after which no byte reached the upstream: safe to retry for every method. */
const NEVER_SENT = new Set(["connect-failure", "refused-stream"]);

/** The retry conditions of a plan that fire after bytes were sent (none when it does not retry). */
export function sentByteRetries(plan: RetryPlan): string[] {
  return plan.attempts > 0 ? plan.retryOn.filter((o) => !NEVER_SENT.has(o)) : [];
}

const nonIdempotent = (methods: readonly HttpMethod[]) =>
  (methods.length > 0 ? methods : HTTP_METHODS).filter((m) => !IDEMPOTENT_METHODS.has(m));

export const idempotentRetries = builtin(
  "idempotent-retries",
  "non-idempotent requests are retried only when no byte was sent",
  ({ model, runtime }, report) => {
    for (const r of runtime.gateway?.routes ?? []) {
      if (r.action.kind !== "forward") continue;
      const unsafe = nonIdempotent(r.match.methods);
      const on = sentByteRetries(r.retry);
      if (unsafe.length === 0 || on.length === 0) continue;
      report(
        "E_POLICY_RETRY_NON_IDEMPOTENT",
        model.routeField(r.name, "retries"),
        `route "${r.name}" accepts ${unsafe.join(", ")} and retries ${r.retry.attempts}× on ${on.join(", ")}${model.specRoute(r.name)?.retries ? "" : " (inherited)"}: those failures happen after the request was sent, so the gateway will not retry them`,
        "set retries: { on: [connect-failure, refused-stream] } (or attempts: 0) on the route, or match only idempotent methods",
      );
    }

    // Mesh hops: (callee, plan) → the non-idempotent requests that may use it, and who sends them.
    const hits = new Map<
      string,
      { source: string; callee: string; label: string; on: string[]; reqs: Set<string>; callers: Set<string> }
    >();
    for (const callee of model.serviceNames) {
      const rules = model.sidecar(callee)?.inbound.authz.rules ?? [];
      for (const caller of model.callers(callee)) {
        const plans = model.hopPlans(caller, callee);
        if (plans.length === 0) continue;
        const id = model.spiffeId(caller);
        for (const rule of rules) {
          if (!rule.from.includes(id)) continue;
          for (const m of nonIdempotent(rule.methods)) {
            for (const path of rule.paths.length > 0 ? rule.paths : ["/**"]) {
              const routePlans = plans.filter(
                (p) =>
                  p.match !== null &&
                  (p.match.methods.length === 0 || p.match.methods.includes(m)) &&
                  patternsOverlap(p.match.path, path),
              );
              const covered = routePlans.some((p) => patternContains(p.match!.path, path));
              const applicable = covered ? routePlans : [...routePlans, plans[0]!];
              for (const p of applicable) {
                const on = sentByteRetries(p.retry);
                if (on.length === 0) continue;
                const key = `${callee}\u0000${p.label}`;
                let h = hits.get(key);
                if (!h) {
                  const source =
                    p.label === "default" ? model.serviceField(callee, "retries") : `${p.source}.retries`;
                  hits.set(
                    key,
                    (h = { source, callee, label: p.label, on, reqs: new Set(), callers: new Set() }),
                  );
                }
                h.reqs.add(`${m} ${path}`);
                h.callers.add(caller);
              }
            }
          }
        }
      }
    }
    for (const h of hits.values()) {
      report(
        "E_POLICY_RETRY_NON_IDEMPOTENT",
        h.source,
        `calls to "${h.callee}"${h.label === "default" ? "" : ` on its route ${h.label}`} retry on ${h.on.join(", ")}, and ${names([...h.callers])} may send ${names([...h.reqs].sort(), 3)} with them: the sidecar will not retry those after the request was sent`,
        h.label === "default"
          ? `add a route policy for those requests with retries: { on: [connect-failure, refused-stream] } under services.${h.callee}.routes, or set that on services.${h.callee}.retries`
          : "set retries: { on: [connect-failure, refused-stream] } on this route policy",
      );
    }
  },
);
