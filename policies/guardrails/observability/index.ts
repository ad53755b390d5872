/**
 * observability: every workload is observable — metrics scraped from every proxy, access logs on, traces
 * sampled. The spec lets a team switch these off; an organization usually does not.
 */
import { builtin, names } from "../support.ts";

export const observability = builtin(
  "observability",
  "metrics and access logs on every workload; tracing on",
  ({ infra, runtime }, report) => {
    const o = infra.observability;
    if (!o.metrics.enabled || o.metrics.backend === "none") {
      report(
        "E_POLICY_METRICS_DISABLED",
        o.metrics.enabled ? "observability.metrics.backend" : "observability.metrics.enabled",
        o.metrics.enabled
          ? "metrics are exported but no backend scrapes them (backend: none)"
          : "metrics are disabled: no proxy exports request, retry, denial or certificate-expiry metrics",
        "set observability.metrics.enabled: true with backend prometheus (or prometheus-operator)",
      );
    } else {
      const scraped = new Set(o.metrics.targets.map((t) => t.workload));
      const missing = infra.workloads.map((w) => w.name).filter((n) => !scraped.has(n));
      if (missing.length > 0) {
        report(
          "E_POLICY_METRICS_TARGET_MISSING",
          "observability.metrics",
          `no metrics target scrapes ${names(missing)}`,
          "deploy the IR translate() produces: it lists every proxy's admin port",
        );
      }
    }
    const proxies = [...(runtime.gateway ? [runtime.gateway] : []), ...runtime.sidecars];
    const silent = proxies.filter((p) => !p.telemetry.accessLog.enabled).map((p) => p.name);
    if (!o.logs.access || silent.length > 0) {
      report(
        "E_POLICY_ACCESS_LOG_DISABLED",
        "observability.logs.access",
        `access logs are off${silent.length > 0 ? ` for ${names(silent)}` : ""}: no record of who called what, and no replay of decisions`,
        "set observability.logs.access: true",
      );
    }
    if (!o.tracing.enabled || o.tracing.sampling === 0) {
      report(
        "E_POLICY_TRACING_DISABLED",
        o.tracing.enabled ? "observability.tracing.sampling" : "observability.tracing.enabled",
        o.tracing.enabled ? "tracing samples nothing (sampling: 0)" : "tracing is disabled",
        "enable tracing with a sampling ratio above 0 (0.1 is the default)",
      );
    }
  },
);
