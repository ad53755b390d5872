/**
 * The chart as cdk8s sees it (`MeshChart`), and `synthesize`, which renders it to plain objects:
 * sorted (namespaces first, NetworkPolicies before the pods they protect), keys sorted, deep-frozen.
 */
import { ApiObject, App, Chart } from "cdk8s";
import type { Construct } from "constructs";
import { canonicalJson, compareCodeUnits, deepFreeze } from "../../runtime/contract/canonical.ts";
import type { TranslateResult } from "../translate/ir.ts";
import { meshPolicies } from "./network.ts";
import { resolve, type ChartOptions, type KubeObject } from "./model.ts";
import { observabilityObjects } from "./observability.ts";
import { workloadObjects } from "./workloads.ts";

/** Apply order: what others refer to first; policies before the pods they protect. */
const KIND_ORDER = [
  "Namespace",
  "ServiceAccount",
  "Role",
  "RoleBinding",
  "Secret",
  "ConfigMap",
  "PersistentVolumeClaim",
  "Issuer",
  "Certificate",
  "NetworkPolicy",
  "Service",
  "Deployment",
  "HorizontalPodAutoscaler",
  "PodDisruptionBudget",
  "ServiceMonitor",
  "PrometheusRule",
];

function rank(kind: string): number {
  const i = KIND_ORDER.indexOf(kind);
  return i === -1 ? KIND_ORDER.length : i;
}

/** The chart's canonical object order: kind (apply order), namespace, name. */
export function compareObjects(a: KubeObject, b: KubeObject): number {
  return (
    rank(a.kind) - rank(b.kind) ||
    compareCodeUnits(a.kind, b.kind) ||
    compareCodeUnits(a.metadata.namespace ?? "", b.metadata.namespace ?? "") ||
    compareCodeUnits(a.metadata.name, b.metadata.name)
  );
}

/** Every object of the chart, unsorted, as the builders make them. */
export function chartObjects(result: TranslateResult, opts?: ChartOptions): KubeObject[] {
  const r = resolve(result, opts);
  const objects = [...workloadObjects(r), ...meshPolicies(r), ...observabilityObjects(r)];
  const seen = new Set<string>();
  for (const o of objects) {
    const key = `${o.apiVersion}/${o.kind}/${o.metadata.namespace ?? ""}/${o.metadata.name}`;
    if (seen.has(key))
      throw new Error(`the chart would hold ${key} twice (a workload named like a chart object?)`);
    seen.add(key);
  }
  return objects.sort(compareObjects);
}

/**
 * The mesh as a cdk8s Chart: one `ApiObject` per object of `synthesize` (same content, same order), for
 * cdk8s users who compose it with their own charts: `new MeshChart(app, "shop", translate(spec))`.
 */
export class MeshChart extends Chart {
  /** The chart's objects, as `synthesize` returns them. */
  readonly objects: readonly KubeObject[];

  constructor(scope: Construct, id: string, result: TranslateResult, opts?: ChartOptions) {
    super(scope, id, { disableResourceNameHashes: true });
    this.objects = chartObjects(result, opts);
    for (const o of this.objects) {
      const ns = o.metadata.namespace;
      new ApiObject(this, `${o.kind}-${ns ? `${ns}-` : ""}${o.metadata.name}`, structuredClone(o));
    }
  }
}

/**
 * Renders the chart (through cdk8s) to plain Kubernetes objects: sorted by apply order, namespace and
 * name, keys sorted, deep-frozen. Pure and deterministic: the same result and options give the same objects.
 */
export function synthesize(result: TranslateResult, opts?: ChartOptions): readonly KubeObject[] {
  const app = new App();
  const chart = new MeshChart(app, "meshgate", result, opts);
  // Keys sorted by us too, so CDK8S_DISABLE_SORT in the environment cannot change the output.
  const objects = chart.toJson().map((o) => JSON.parse(canonicalJson(o)) as KubeObject);
  return deepFreeze(objects.sort(compareObjects));
}
