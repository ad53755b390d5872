/**
 * Every object the chart emits is a valid Kubernetes object, checked two independent ways: the strict
 * JSON Schema generated from kubernetes-types (unknown fields rejected; hand-written strict schemas for
 * the cert-manager and Prometheus Operator resources) and kubernetes-models' validation — for the shop
 * example in every option combination and for generated specs. The committed schema must be current, and
 * the validators must actually reject what is wrong.
 */
import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { synthesize, type ChartOptions, type KubeObject } from "../../components/kubernetes/index.ts";
import { SCHEMA_FILE, generateKubernetesApiSchema } from "./api-schema.ts";
import { ROOT, generatedResult, shopResult } from "./support.ts";
import { validator } from "./validate.ts";

const v = validator();

const OPTIONS: [string, ChartOptions][] = [
  ["defaults", {}],
  [
    "operator_and_cert_manager",
    { observability: "operator", identities: { mode: "cert-manager", caSecretName: "shop-ca" } },
  ],
  ["no_observability", { observability: "none" }],
];

type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any
const mutable = (o: KubeObject): Json => structuredClone(o) as Json;

describe("chart objects validate against the Kubernetes API", () => {
  it("committed_schema_is_generated_from_kubernetes_types", () => {
    expect(
      readFileSync(`${ROOT}${SCHEMA_FILE}`, "utf8"),
      `${SCHEMA_FILE} is stale: run node scripts/kubernetes-schema.ts`,
    ).toBe(generateKubernetesApiSchema());
  });

  for (const [name, opts] of OPTIONS)
    it(`every_shop_object_is_valid_with_${name}`, async () => {
      const objects = synthesize(await shopResult(), opts);
      expect(objects.length).toBeGreaterThan(40);
      expect(objects.flatMap((o) => v.problems(o))).toEqual([]);
    });

  it.each([[{ services: 25, routes: 40, seed: 1 }], [{ services: 60, routes: 120, seed: 2 }]])(
    "every_object_of_a_generated_spec_is_valid_%#",
    (gen) => {
      for (const [, opts] of OPTIONS) {
        const objects = synthesize(generatedResult(gen), opts);
        expect(objects.flatMap((o) => v.problems(o))).toEqual([]);
      }
    },
  );

  it("covers_every_kind_the_chart_emits", async () => {
    const kinds = new Set<string>();
    for (const [, opts] of OPTIONS)
      for (const o of synthesize(await shopResult(), opts)) kinds.add(`${o.apiVersion}/${o.kind}`);
    for (const k of kinds)
      expect(
        v
          .problems({
            apiVersion: k.slice(0, k.lastIndexOf("/")),
            kind: k.slice(k.lastIndexOf("/") + 1),
            metadata: { name: "x" },
          })
          .join(),
      ).not.toContain("no strict schema");
  });
});

describe("the validators reject what is wrong", () => {
  const find = async (kind: string, name: string, opts: ChartOptions = {}) =>
    mutable(synthesize(await shopResult(), opts).find((o) => o.kind === kind && o.metadata.name === name)!);

  it.each([
    [
      "misspelled_container_field",
      "Deployment",
      "orders",
      (d: Json): unknown => (d.spec.template.spec.containers[0].imagePullPolice = "Always"),
    ],
    [
      "misspelled_pod_field",
      "Deployment",
      "gateway",
      (d: Json): unknown => (d.spec.template.spec.serviceAcountName = "x"),
    ],
    [
      "misspelled_network_policy_peer",
      "NetworkPolicy",
      "meshgate-orders",
      (d: Json): unknown => (d.spec.ingress[0].from[0].podSelectr = {}),
    ],
    [
      "unknown_service_field",
      "Service",
      "gateway",
      (d: Json): unknown => (d.spec.loadBalancerIPs = ["1.2.3.4"]),
    ],
  ] as const)("strict_schema_rejects_%s", async (_claim, kind, name, mutate) => {
    const o = await find(kind, name);
    mutate(o);
    const problems = v.problems(o);
    expect(
      problems.some((p) => p.includes("schema:") && p.includes("must NOT have additional properties")),
    ).toBe(true);
  });

  it.each([
    ["wrong_type", "Deployment", "orders", (d: Json): unknown => (d.spec.replicas = "three")],
    [
      "missing_required_container_name",
      "Deployment",
      "orders",
      (d: Json): unknown => delete d.spec.template.spec.containers[0].name,
    ],
    ["missing_selector", "Deployment", "orders", (d: Json): unknown => delete d.spec.selector],
  ] as const)("kubernetes_models_rejects_%s", async (_claim, kind, name, mutate) => {
    const o = await find(kind, name);
    mutate(o);
    expect(v.problems(o).some((p) => p.includes("kubernetes-models:"))).toBe(true);
  });

  it.each([
    [
      "certificate_with_a_misspelled_field",
      "Certificate",
      "meshgate-svid-orders",
      (d: Json): unknown => (d.spec.renewbefore = "8h"),
    ],
    [
      "certificate_with_an_unknown_usage",
      "Certificate",
      "meshgate-svid-orders",
      (d: Json): unknown => (d.spec.usages = ["server-auth"]),
    ],
    [
      "service_monitor_with_a_bad_interval",
      "ServiceMonitor",
      "meshgate-shop-sidecar",
      (d: Json): unknown => (d.spec.endpoints[0].interval = "15 seconds"),
    ],
    [
      "prometheus_rule_without_record_or_alert",
      "PrometheusRule",
      "meshgate-shop",
      (d: Json): unknown => delete d.spec.groups[0].rules[0].record,
    ],
  ] as const)("crd_schema_rejects_%s", async (_claim, kind, name, mutate) => {
    const o = await find(kind, name, OPTIONS[1]![1]);
    expect(v.problems(o)).toEqual([]);
    mutate(o);
    expect(v.problems(o).length).toBeGreaterThan(0);
  });
});
