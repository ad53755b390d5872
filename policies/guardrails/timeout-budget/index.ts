/**
 * timeout-budget: a caller waits long enough for the callee to finish its own calls. When a service S may
 * itself wait up to W on its callees (per-try × attempts + backoff, capped by its timeout):
 *  - a caller whose whole timeout for the call is shorter than W always gives up first (error);
 *  - a caller whose per-try timeout is shorter than W may abandon an attempt S is still legitimately
 *    working on, and retry it — more work for a service that is already slow (warning; the mesh defaults,
 *    2s total and 500ms per try at every hop, do this from two hops deep).
 * Also: a retry plan whose worst case exceeds its own timeout has retries that never run.
 */
import type { RetryPlan } from "../../../runtime/contract/schema.ts";
import { attemptMs, hopWorstMs, planWorstMs, type MeshModel } from "../../model.ts";
import { builtin, ms, names, type Report } from "../support.ts";

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

const retries = (retry: RetryPlan) => retry.attempts > 0 && retry.perTryTimeoutMs > 0;

/** One caller → callee hop: its total timeout and per-attempt time against the callee's worst case. */
function checkHop(
  report: Report,
  hop: {
    what: string;
    callee: string;
    timeoutMs: number;
    attemptMs: number;
    timeoutPath: string;
    perTryPath: string;
  },
  d: Downstream,
): void {
  if (hop.timeoutMs < d.ms) {
    report(
      "E_POLICY_TIMEOUT_BUDGET",
      hop.timeoutPath,
      `${hop.what} time out after ${ms(hop.timeoutMs)}, but "${hop.callee}" may wait on ${downstreamText(d)}: the caller always gives up first`,
      `raise the timeout to at least ${ms(d.ms)}, or shorten the timeouts of "${hop.callee}"'s own calls`,
    );
  } else if (hop.attemptMs < d.ms) {
    report(
      "E_POLICY_TIMEOUT_PER_TRY",
      hop.perTryPath,
      `${hop.what} give "${hop.callee}" ${ms(hop.attemptMs)} per attempt, but "${hop.callee}" may wait on ${downstreamText(d)}: an attempt can be abandoned (and retried) while it is still working`,
      `raise retries.perTryTimeout to at least ${ms(d.ms)}, or shorten the timeouts of "${hop.callee}"'s own calls`,
    );
  }
}

export const timeoutBudget = builtin(
  "timeout-budget",
  "every caller's timeout covers the callee's worst case; retry plans fit their timeouts",
  ({ model, runtime }, report) => {
    const downstream = new Map<string, Downstream>();
    const down = (s: string) => {
      let d = downstream.get(s);
      if (!d) downstream.set(s, (d = downstreamWorst(model, s)));
      return d;
    };

    for (const r of runtime.gateway?.routes ?? []) {
      // The target with the largest shortfall speaks for the route.
      let worst: { t: ReturnType<MeshModel["targets"]>[number]; d: Downstream; gap: number } | null = null;
      for (const t of model.targets(r)) {
        const d = down(t.service);
        const gap = d.ms - t.attemptMs;
        if (gap > 0 && (worst === null || gap > worst.gap)) worst = { t, d, gap };
      }
      if (worst) {
        const { t, d } = worst;
        const part = t.kind === "part" ? model.specRoute(r.name)?.aggregate?.[t.part!] : undefined;
        const timeoutMs =
          t.kind === "part" && r.action.kind === "aggregate"
            ? r.action.parts.find((p) => p.name === t.part)!.timeoutMs
            : r.timeoutMs;
        checkHop(
          report,
          {
            what:
              t.kind === "part"
                ? `route "${r.name}"'s requests to aggregate part "${t.part}"`
                : `route "${r.name}"'s requests`,
            callee: t.service,
            timeoutMs,
            attemptMs: t.attemptMs,
            timeoutPath:
              t.kind === "part"
                ? part?.timeout !== undefined
                  ? `${t.source}.timeout`
                  : t.source
                : model.routeField(r.name, "timeout"),
            perTryPath: model.routeField(r.name, "retries"),
          },
          d,
        );
      }
      if (retries(r.retry) && planWorstMs(r.retry, r.timeoutMs) > r.timeoutMs) {
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
          const plan =
            p.label === "default" ? `calls to "${callee}"` : `calls to "${callee}" on its route ${p.label}`;
          const from = `${plan} (from ${names([...model.callers(callee)])})`;
          checkHop(
            report,
            {
              what: from,
              callee,
              timeoutMs: p.timeoutMs,
              attemptMs: attemptMs(p.timeoutMs, p.retry),
              timeoutPath: p.label === "default" ? model.serviceField(callee, "timeout") : p.source,
              perTryPath: p.label === "default" ? model.serviceField(callee, "retries") : p.source,
            },
            down(callee),
          );
          if (retries(p.retry) && planWorstMs(p.retry, p.timeoutMs) > p.timeoutMs) {
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
