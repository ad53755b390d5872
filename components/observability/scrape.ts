/**
 * The Prometheus configuration from the IR: one scrape job per proxy kind (`meshgate-<ns>-gateway`,
 * `meshgate-<ns>-sidecar`) over every proxy's admin port, relabelled to the conventions' target labels
 * (`namespace`, `service` = the workload, `proxy`, and `pod` on Kubernetes), plus the rule files. Two ways
 * to find the proxies:
 *
 * - `kubernetes`: pod service discovery in the mesh's namespace. The chart must label each pod
 *   `meshgate.io/workload: <workload>` and `meshgate.io/proxy: gateway|sidecar`, and name the proxy's admin
 *   container port `meshgate-admin` (KUBERNETES_SCRAPE_CONTRACT);
 * - `static`: the addresses the caller knows (the local mode's ports, Docker container names).
 *
 * `honor_labels: true`: the proxies' own `proxy` and (sidecar denials) `service` labels are kept rather than
 * renamed to `exported_*`; they always agree with the target's.
 */
import { compareCodeUnits } from "../../runtime/contract/canonical.ts";
import type { InfraIR } from "../translate/ir.ts";
import { promDuration } from "./promql.ts";

/** What the Kubernetes renderer must put on pods for the `kubernetes` scrape mode to find them. */
export const KUBERNETES_SCRAPE_CONTRACT = {
  /** Pod label: the workload's name (a service, or `gateway`). */
  workloadLabel: "meshgate.io/workload",
  /** Pod label: `gateway` or `sidecar` (the proxy whose admin port is scraped). */
  proxyLabel: "meshgate.io/proxy",
  /** The name of the proxy container's admin port. */
  adminPortName: "meshgate-admin",
} as const;

export type ScrapeMode =
  | { readonly kind: "kubernetes" }
  | {
      readonly kind: "static";
      /** host:port of every replica of each workload's proxy admin listener, by workload name. */
      readonly addresses: Readonly<Record<string, readonly string[]>>;
    };

export interface PrometheusConfigOptions {
  readonly mode: ScrapeMode;
  /** Rule files, relative to the configuration file. */
  readonly ruleFiles?: readonly string[];
}

export interface ScrapeConfig {
  readonly job_name: string;
  readonly honor_labels: boolean;
  readonly metrics_path: string;
  readonly scheme: "http";
  readonly static_configs?: readonly { targets: string[]; labels: Record<string, string> }[];
  readonly kubernetes_sd_configs?: readonly { role: "pod"; namespaces: { names: string[] } }[];
  readonly relabel_configs?: readonly Record<string, unknown>[];
}

export interface PrometheusConfig {
  readonly global: { scrape_interval: string; scrape_timeout: string; evaluation_interval: string };
  readonly rule_files: readonly string[];
  readonly scrape_configs: readonly ScrapeConfig[];
}

/** A problem with the generator's input (not with the spec): e.g. a static address missing. */
export class ObservabilityInputError extends Error {
  override name = "ObservabilityInputError";
}

/**
 * The workloads that run proxies: every one but a service scaled to `replicas: 0` (Kubernetes runs no pod
 * for it, Docker no container). Prometheus can find no target for those, so the rules do not expect one
 * (MeshgateTargetMissing) and the static mode needs no address for them.
 */
export function runningWorkloads(infra: InfraIR): Set<string> {
  return new Set(infra.workloads.filter((w) => w.kind === "gateway" || w.replicas > 0).map((w) => w.name));
}

/** Prometheus meta label of a pod label: non-alphanumerics become `_`. */
const podLabel = (label: string) => `__meta_kubernetes_pod_label_${label.replace(/[^a-zA-Z0-9_]/g, "_")}`;

/** Anchored alternation of literal names for a relabel regex (workload names are DNS labels). */
const alternation = (names: readonly string[]) => names.join("|");

/** The scrape jobs of a mesh, gateway first. Pure. */
export function scrapeConfigs(infra: InfraIR, mode: ScrapeMode): ScrapeConfig[] {
  const ns = infra.namespace;
  const targets = infra.observability.metrics.targets;
  const jobs: ScrapeConfig[] = [];
  for (const proxy of ["gateway", "sidecar"] as const) {
    const mine = targets
      .filter((t) => t.kind === proxy)
      .sort((a, b) => compareCodeUnits(a.workload, b.workload));
    if (mine.length === 0) continue;
    const paths = [...new Set(mine.map((t) => t.path))];
    if (paths.length !== 1)
      throw new ObservabilityInputError(
        `${proxy} metrics paths differ (${paths.join(", ")}): one job needs one path`,
      );
    const base = {
      job_name: `meshgate-${ns}-${proxy}`,
      honor_labels: true,
      metrics_path: paths[0]!,
      scheme: "http" as const,
    };
    if (mode.kind === "static") {
      // A workload scaled to zero runs no proxy: it needs no address (and is scraped if given one).
      const running = runningWorkloads(infra);
      const given = mine.filter((t) => mode.addresses[t.workload]?.length);
      const missing = mine.filter((t) => running.has(t.workload) && !mode.addresses[t.workload]?.length);
      if (missing.length > 0)
        throw new ObservabilityInputError(
          `no scrape address for ${missing.map((t) => t.workload).join(", ")} (give host:port of each ${proxy}'s admin listener)`,
        );
      if (given.length === 0) continue;
      jobs.push({
        ...base,
        static_configs: given.map((t) => ({
          targets: [...mode.addresses[t.workload]!],
          labels: { namespace: ns, proxy, service: t.workload },
        })),
      });
      continue;
    }
    const c = KUBERNETES_SCRAPE_CONTRACT;
    jobs.push({
      ...base,
      kubernetes_sd_configs: [{ role: "pod", namespaces: { names: [ns] } }],
      relabel_configs: [
        { source_labels: [podLabel(c.proxyLabel)], regex: proxy, action: "keep" },
        {
          source_labels: [podLabel(c.workloadLabel)],
          regex: alternation(mine.map((t) => t.workload)),
          action: "keep",
        },
        {
          source_labels: ["__meta_kubernetes_pod_container_port_name"],
          regex: c.adminPortName,
          action: "keep",
        },
        { source_labels: ["__meta_kubernetes_pod_phase"], regex: "Pending|Succeeded|Failed", action: "drop" },
        { source_labels: ["__meta_kubernetes_namespace"], target_label: "namespace" },
        { source_labels: [podLabel(c.workloadLabel)], target_label: "service" },
        { target_label: "proxy", replacement: proxy },
        { source_labels: ["__meta_kubernetes_pod_name"], target_label: "pod" },
      ],
    });
  }
  return jobs;
}

/** A whole prometheus.yml: global intervals from the spec, the rule files, the scrape jobs. Pure. */
export function prometheusConfig(infra: InfraIR, options: PrometheusConfigOptions): PrometheusConfig {
  const interval = infra.observability.metrics.scrapeIntervalMs;
  return {
    global: {
      scrape_interval: promDuration(interval),
      // Prometheus refuses a timeout longer than the interval.
      scrape_timeout: promDuration(Math.min(interval, 10_000)),
      evaluation_interval: promDuration(interval),
    },
    rule_files: [...(options.ruleFiles ?? [])],
    scrape_configs: scrapeConfigs(infra, options.mode),
  };
}

/** Command-line flags for the Prometheus server that the config file cannot carry (retention). */
export function prometheusFlags(infra: InfraIR): string[] {
  return [`--storage.tsdb.retention.time=${promDuration(infra.observability.metrics.retentionMs)}`];
}
