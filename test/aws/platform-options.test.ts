/**
 * The chart and Platform options the AWS target needs, on the shop example: gateway Service annotations
 * (the NLB's), the mesh namespace's labels (the load balancer controller's readiness gate), the bundled
 * Prometheus' remote write with SigV4 and its ServiceAccount's IRSA annotation —
 * strict-schema valid — and arguments given as outputs (the pushed image's digest reference, an AMP
 * endpoint, an IAM role ARN) substituted into the registered resources, no placeholder left.
 */
import * as pulumi from "@pulumi/pulumi";
import { parse } from "yaml";
import { beforeAll, beforeEach, describe, expect, it } from "vitest";
import {
  ANNOTATIONS,
  GATEWAY_CONTAINER,
  SIDECAR_CONTAINER,
  synthesize,
  type ChartOptions,
  type KubeObject,
} from "../../components/kubernetes/index.ts";
import { loadSpecFile } from "../../components/spec/load.ts";
import { translate } from "../../components/translate/translate.ts";
import type { TranslateResult } from "../../components/translate/ir.ts";
import type * as Components from "../../components/pulumi/index.ts";
import { validator } from "../kubernetes/validate.ts";
import { installMocks, mockState, registeredOutputs, resetRecords, runStack } from "../support/pulumi.ts";

const SHOP = "examples/shop/mesh.yaml";
const NLB = {
  "service.beta.kubernetes.io/aws-load-balancer-type": "external",
  "service.beta.kubernetes.io/aws-load-balancer-nlb-target-type": "ip",
  "service.beta.kubernetes.io/aws-load-balancer-scheme": "internet-facing",
};
const ROLE = "arn:aws:iam::123456789012:role/shop-test-amp-writer";
const AMP = "https://aps-workspaces.eu-west-1.amazonaws.com/workspaces/ws-1234/api/v1/remote_write";
type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

let shop: TranslateResult;
let m: typeof Components;
beforeAll(async () => {
  await installMocks();
  m = await import("../../components/pulumi/index.ts");
  const loaded = await loadSpecFile(SHOP);
  if (!loaded.ok) throw new Error("the shop example is invalid");
  shop = translate(loaded.spec);
});
beforeEach(() => resetRecords());

const find = (objects: readonly KubeObject[], kind: string, name: string, ns?: string) =>
  objects.find((o) => o.kind === kind && o.metadata.name === name && (!ns || o.metadata.namespace === ns));
const GATE = { "elbv2.k8s.aws/pod-readiness-gate-inject": "enabled" };
const AWS_OPTIONS: ChartOptions = {
  observability: "bundled",
  gatewayServiceAnnotations: NLB,
  namespaceLabels: GATE,
  prometheusRemoteWrite: { url: AMP, sigv4Region: "eu-west-1" },
  prometheusServiceAccountAnnotations: { "eks.amazonaws.com/role-arn": ROLE },
};

describe("chart options for AWS", () => {
  it("annotates_the_gateway_service_and_no_other", () => {
    const objects = synthesize(shop, AWS_OPTIONS);
    const annotated = objects.filter((o) => o.kind === "Service" && o.metadata.annotations);
    expect(annotated.map((o) => o.metadata.name)).toEqual(["gateway"]);
    expect(annotated[0]!.metadata.annotations).toEqual(NLB);
  });

  it("labels_the_mesh_namespace_and_not_the_observability_one_keeping_the_charts_labels", () => {
    const objects = synthesize(shop, AWS_OPTIONS);
    const mesh = find(objects, "Namespace", "shop")!;
    expect(mesh.metadata.labels).toMatchObject({
      ...GATE,
      "pod-security.kubernetes.io/enforce": "restricted",
      "app.kubernetes.io/managed-by": "meshgate",
    });
    const obs = find(objects, "Namespace", "shop-observability")!;
    expect(Object.keys(obs.metadata.labels ?? {})).not.toContain("elbv2.k8s.aws/pod-readiness-gate-inject");
  });

  it("remote_writes_the_bundled_prometheus_with_sigv4_and_annotates_its_service_account", () => {
    const objects = synthesize(shop, AWS_OPTIONS);
    const config = find(objects, "ConfigMap", "prometheus-config") as Json;
    const prom = parse(config.data["prometheus.yml"]) as Json;
    expect(prom.remote_write).toEqual([{ url: AMP, sigv4: { region: "eu-west-1" } }]);
    expect(prom.scrape_configs.length).toBeGreaterThan(0);
    const sa = find(objects, "ServiceAccount", "prometheus")!;
    expect(sa.metadata.annotations).toEqual({ "eks.amazonaws.com/role-arn": ROLE });
  });

  it("keeps_every_object_valid_against_the_strict_kubernetes_schema", () => {
    const v = validator();
    expect(synthesize(shop, AWS_OPTIONS).flatMap((o) => v.problems(o))).toEqual([]);
  });

  it("renders_no_remote_write_or_annotations_by_default", () => {
    const objects = synthesize(shop, { observability: "bundled" });
    const prom = parse((find(objects, "ConfigMap", "prometheus-config") as Json).data["prometheus.yml"]);
    expect(prom.remote_write).toBeUndefined();
    expect(find(objects, "Service", "gateway")!.metadata.annotations).toBeUndefined();
  });

  it.each<[string, ChartOptions, string]>([
    [
      "remote_write_without_bundled_prometheus",
      { observability: "none", prometheusRemoteWrite: { url: AMP } },
      "prometheusRemoteWrite:",
    ],
    [
      "service_account_annotations_without_bundled_prometheus",
      { observability: "operator", prometheusServiceAccountAnnotations: { a: "b" } },
      "prometheusServiceAccountAnnotations:",
    ],
    [
      "a_plain_http_remote_write_url",
      { prometheusRemoteWrite: { url: "http://amp.example/api/v1/remote_write" } },
      "not an https:// URL",
    ],
    [
      "an_invalid_annotation_key",
      { gatewayServiceAnnotations: { "bad key": "x" } },
      "gatewayServiceAnnotations:",
    ],
    ["an_invalid_namespace_label_key", { namespaceLabels: { "bad key": "x" } }, "namespaceLabels:"],
    [
      "a_namespace_label_value_with_a_space",
      { namespaceLabels: { "example.com/team": "a b" } },
      "namespaceLabels.example.com/team:",
    ],
    [
      "a_namespace_label_that_would_weaken_pod_security",
      { namespaceLabels: { "pod-security.kubernetes.io/enforce": "privileged" } },
      "is the chart's own label",
    ],
    [
      "a_namespace_label_that_would_change_the_charts_ownership",
      { namespaceLabels: { "app.kubernetes.io/managed-by": "helm" } },
      "is the chart's own label",
    ],
  ])("refuses_%s_naming_the_option", (_name, opts, message) => {
    expect(() => synthesize(shop, { observability: "bundled", ...opts })).toThrow(message);
  });
});

describe("Platform arguments given as outputs", () => {
  const digestRef = `123456789012.dkr.ecr.eu-west-1.amazonaws.com/shop@sha256:${"ab".repeat(32)}`;

  async function deploy(amp: pulumi.Input<string> = pulumi.output(AMP)) {
    const run = await runStack(() => {
      new m.Platform("shop", {
        spec: SHOP,
        observability: "bundled",
        runtimeImage: pulumi.output(digestRef),
        gatewayServiceAnnotations: {
          ...NLB,
          "service.beta.kubernetes.io/aws-load-balancer-name": pulumi.output("shop-test"),
        },
        prometheusRemoteWrite: { url: amp, sigv4Region: "eu-west-1" },
        prometheusServiceAccountAnnotations: { "eks.amazonaws.com/role-arn": pulumi.output(ROLE) },
      });
    });
    expect(run.errors).toEqual([]);
    return run;
  }

  it("runs_the_output_image_in_every_proxy_container_and_leaves_no_placeholder", async () => {
    await deploy();
    const kube = mockState.registered.filter((r) => r.type.startsWith("kubernetes:"));
    expect(JSON.stringify(kube)).not.toContain("meshgate-deferred");
    const deployments = kube.filter((r) => r.type === "kubernetes:apps/v1:Deployment");
    const proxies = deployments.flatMap((d) =>
      [
        ...((d.inputs as Json).spec.template.spec.initContainers ?? []),
        ...(d.inputs as Json).spec.template.spec.containers,
      ].filter((c: Json) => [GATEWAY_CONTAINER, SIDECAR_CONTAINER].includes(c.name)),
    );
    expect(proxies.length).toBeGreaterThanOrEqual(6);
    for (const c of proxies) expect(c.image).toBe(digestRef);
    expect(registeredOutputs("meshgate:index:Platform", "shop").runtimeImage).toBe(digestRef);
  });

  it("substitutes_output_annotations_and_the_remote_write_url", async () => {
    await deploy();
    const byName = (n: string) => mockState.registered.find((r) => r.name === n)!.inputs as Json;
    expect(byName("shop-service-shop-gateway").metadata.annotations).toEqual({
      ...NLB,
      "service.beta.kubernetes.io/aws-load-balancer-name": "shop-test",
    });
    expect(byName("shop-serviceaccount-shop-observability-prometheus").metadata.annotations).toEqual({
      "eks.amazonaws.com/role-arn": ROLE,
    });
    const prom = parse(byName("shop-configmap-shop-observability-prometheus-config").data["prometheus.yml"]);
    expect(prom.remote_write).toEqual([{ url: AMP, sigv4: { region: "eu-west-1" } }]);
  });

  /** Each Deployment's pod-template config hash after one deploy, by registered name. */
  async function podHashes(amp: pulumi.Input<string>): Promise<Record<string, string>> {
    resetRecords();
    await deploy(amp);
    return Object.fromEntries(
      mockState.registered
        .filter((r) => r.type === "kubernetes:apps/v1:Deployment")
        .map((r) => [r.name, (r.inputs as Json).spec.template.metadata.annotations[ANNOTATIONS.configHash]]),
    );
  }

  it("rolls_prometheus_when_the_remote_write_endpoint_output_changes_and_nothing_else", async () => {
    const other = AMP.replace("ws-1234", "ws-5678");
    const a = await podHashes(pulumi.output(AMP));
    const again = await podHashes(pulumi.output(AMP));
    const b = await podHashes(pulumi.output(other));
    const prometheus = "shop-deployment-shop-observability-prometheus";
    expect(Object.keys(a)).toContain(prometheus);
    expect(a[prometheus]).toMatch(/^sha256:[0-9a-f]{64}$/);
    // The same endpoint again gives the same pods (no rollout on every update).
    expect(again).toEqual(a);
    // A new endpoint changes Prometheus' pod template (a rollout) and no other workload's.
    expect(b[prometheus]).not.toBe(a[prometheus]);
    expect(Object.keys(b).filter((n) => b[n] !== a[n])).toEqual([prometheus]);
    // Only a hash reaches the annotation, never the endpoint.
    expect(JSON.stringify(b)).not.toContain("ws-5678");
  });

  it("leaves_the_chart_hash_of_a_workload_that_reads_no_placeholder", () => {
    const objects = synthesize(shop, AWS_OPTIONS);
    const deferred = new Map([["meshgate-deferred-0.invalid", pulumi.output("v")]]);
    for (const d of objects.filter((o) => o.kind === "Deployment"))
      expect(m.rollOnDeferred(d, objects, deferred)).toBe(d);
  });

  it("resolves_placeholders_only_where_they_occur", () => {
    const deferred = new Map([["tok-0.invalid", pulumi.output("v")]]);
    const plain = { a: ["x", { b: 1 }] };
    expect(m.resolveDeferred(plain, deferred)).toEqual(plain);
    const out = m.resolveDeferred({ a: ["x", "pre-tok-0.invalid-post"] }, deferred) as Json;
    expect(out.a[0]).toBe("x");
    expect(pulumi.Output.isInstance(out.a[1])).toBe(true);
    // An output inside the value (a folded config hash) is passed through as it is, not walked.
    const folded = pulumi.output("sha256:x");
    expect((m.resolveDeferred({ h: folded }, deferred) as Json).h).toBe(folded);
  });
});
