/**
 * timeout-budget: a caller waits long enough for the callee to finish its own calls. When a service S may
 * itself wait up to W on its callees (per-try × attempts + backoff, capped by its timeout), a caller that
 * gives up on an attempt to S sooner than W abandons work S is still doing legitimately — and, if it retries,
 * starts it again. Also: a retry plan whose worst case exceeds its own total timeout has retries that
 * never run.
 */
import type { RetryPlan } from "../../../runtime/contract/schema.ts";
import { attemptMs, hopWorstMs, planWorstMs, type MeshModel } from "../../model.ts";
import { builtin, ms, names } from "../support.ts";

interface Downstream {
  ms: number;
  callee: string;
  label: string;
}

/** The longest `service` may wait on one of its callees (0 when it calls nothing). */
export function downstreamWorst(model: MeshModel, service: string): Downstream {
  let worst: Downstream = { ms: 0, callee: "", label: "" };
  for (const callee of model.callees(service)) {
    for (const p of model.hopPlans(service, callee)) {
      const w = hopWorstMs(p.timeoutMs, p.retry);
      if (w > worst.ms) worst = { ms: w, callee, label: p.label };
    }
  }
  return worst;
}

function describePlan(timeoutMs: number, retry: RetryPlan): string {
  const worst = planWorstMs(retry, timeoutMs);
  const backoff = worst - (retry.attempts + 1) * retry.perTryTimeoutMs;
  return `${retry.attempts + 1} attempts × ${ms(retry.perTryTimeoutMs)}${backoff > 0 ? ` + ${ms(backoff)} backoff` : ""} = ${ms(worst)}`;
}

const downstreamText = (d: Downstream) =>
  `"${d.callee}"${d.label === "default" ? "" : ` (route ${d.label})`} for up to ${ms(d.ms)}`;

export const timeoutBudget = builtin(
  "timeout-budget",
  "every caller's per-attempt timeout covers the callee's worst case; retry plans fit their timeouts",
  ({ model, runtime }, report) => {
    const downstream = new Map<string, Downstream>();
    const down = (s: string) => {
      let d = downstream.get(s);
      if (!d) downstream.set(s, (d = downstreamWorst(model, s)));
      return d;
    };

    for (const r of runtime.gateway?.routes ?? []) {
      let worst: {
        target: string;
        d: Downstream;
        attempt: number;
        part: string | null;
        source: string;
      } | null = null;
      for (const t of model.targets(r)) {
        const d = down(t.service);
        if (t.attemptMs < d.ms && (worst === null || d.ms - t.attemptMs > worst.d.ms - worst.attempt))
          worst = { target: t.service, d, attempt: t.attemptMs, part: t.part, source: t.source };
      }
      if (worst) {
        const limitedBy =
          r.retry.attempts > 0 && r.retry.perTryTimeoutMs > 0 && r.retry.perTryTimeoutMs <= r.timeoutMs
            ? "retries"
            : "timeout";
        report(
          "E_POLICY_TIMEOUT_BUDGET",
          worst.part !== null ? worst.source : model.routeField(r.name, limitedBy),
          `route "${r.name}" gives "${worst.target}" ${ms(worst.attempt)} per attempt${worst.part !== null ? ` (aggregate part "${worst.part}")` : ""}, but "${worst.target}" may wait on ${downstreamText(worst.d)}`,
          `raise the route's ${limitedBy === "retries" ? "retries.perTryTimeout" : "timeout"} to at least ${ms(worst.d.ms)}, or shorten the timeouts of "${worst.target}"'s calls`,
        );
      }
      if (
        r.retry.attempts > 0 &&
        r.retry.perTryTimeoutMs > 0 &&
        planWorstMs(r.retry, r.timeoutMs) > r.timeoutMs
      ) {
        report(
          "E_POLICY_RETRIES_EXCEED_TIMEOUT",
          model.routeField(r.name, "retries"),
          `route "${r.name}": ${describePlan(r.timeoutMs, r.retry)}, longer than its ${ms(r.timeoutMs)} timeout: the last retries never run`,
          "lower retries.attempts or retries.perTryTimeout, or raise the route's timeout",
        );
      }
    }

    // Mesh hops: every caller of a service applies that service's plans, so report once per plan.
    const seen = new Set<string>();
    for (const caller of model.serviceNames) {
      for (const callee of model.callees(caller)) {
        for (const p of model.hopPlans(caller, callee)) {
          const key = `${callee}\u0000${p.label}`;
          if (seen.has(key)) continue;
          seen.add(key);
          const callers = model.callers(callee);
          const attempt = attemptMs(p.timeoutMs, p.retry);
          const d = down(callee);
          const field =
            p.retry.attempts > 0 && p.retry.perTryTimeoutMs > 0 && p.retry.perTryTimeoutMs <= p.timeoutMs
              ? "retries"
              : "timeout";
          const where = p.label === "default" ? model.serviceField(callee, field) : `${p.source}`;
          const plan =
            p.label === "default" ? `calls to "${callee}"` : `calls to "${callee}" on its route ${p.label}`;
          if (attempt < d.ms) {
            report(
              "E_POLICY_TIMEOUT_BUDGET",
              where,
              `${plan} (from ${names([...callers])}) give it ${ms(attempt)} per attempt, but "${callee}" may wait on ${downstreamText(d)}`,
              `raise ${field === "retries" ? "retries.perTryTimeout" : "timeout"} here to at least ${ms(d.ms)}, or shorten the timeouts of "${callee}"'s calls`,
            );
          }
          if (
            p.retry.attempts > 0 &&
            p.retry.perTryTimeoutMs > 0 &&
            planWorstMs(p.retry, p.timeoutMs) > p.timeoutMs
          ) {
            report(
              "E_POLICY_RETRIES_EXCEED_TIMEOUT",
              p.label === "default" ? model.serviceField(callee, "retries") : p.source,
              `${plan}: ${describePlan(p.timeoutMs, p.retry)}, longer than the ${ms(p.timeoutMs)} timeout: the last retries never run`,
              "lower retries.attempts or retries.perTryTimeout, or raise the timeout",
            );
          }
        }
      }
    }
  },
);
