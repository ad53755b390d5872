/**
 * The stack program under Pulumi's mocks (no CLI, no cluster): it deploys the example end to end with
 * every output resolved, reads the cluster and the options from stack config, and an invalid spec stops
 * it before any resource — the Kubernetes provider included — with every problem listed.
 */
import { mkdtemp, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as pulumi from "@pulumi/pulumi";
import { beforeAll, beforeEach, describe, expect, it } from "vitest";
import { installMocks, mockState, resetRecords, runStack, unresolvedPaths } from "../support/pulumi.ts";

let program: () => Promise<Record<string, unknown>>;
beforeAll(async () => {
  await installMocks();
  program = (await import("../../stacks/index.ts")).default as typeof program;
});
beforeEach(() => resetRecords());

function withConfig(config: Record<string, string>) {
  pulumi.runtime.setAllConfig(
    config,
    Object.keys(config).filter((k) => k === "kubernetes:kubeconfig"),
  );
}

describe("stack program", () => {
  it("deploys_the_default_spec_end_to_end_with_every_output_resolved", async () => {
    withConfig({});
    const run = await runStack(program);
    expect(run.errors).toEqual([]);
    expect(unresolvedPaths(run.outputs)).toEqual([]);
    expect(run.outputs).toMatchObject({
      mesh: "shop",
      namespace: "shop",
      trustDomain: "shop.example",
      gatewayEndpoint: "http://gateway.shop.svc.cluster.local:8080",
    });
    expect(run.outputs.identities).toContain("spiffe://shop.example/ns/shop/sa/payments");
    expect(run.outputs.allowedEdges).toContain("orders -> payments");
    expect(Object.keys(run.outputs.configHashes as object)).toHaveLength(10);
    expect(String(run.outputs.caCertificatePem)).toContain("BEGIN CERTIFICATE");
    const types = new Set(mockState.registered.map((r) => r.type));
    for (const t of ["meshgate:index:Platform", "meshgate:pki:MeshCa", "pulumi:providers:kubernetes"])
      expect(types).toContain(t);
    expect(types).toContain("kubernetes:apps/v1:Deployment");
  });

  it("creates_every_kubernetes_resource_with_the_provider_from_stack_config", async () => {
    withConfig({
      "kubernetes:kubeconfig": "apiVersion: v1\nkind: Config\n",
      "kubernetes:context": "kind-mesh",
    });
    const run = await runStack(program);
    expect(run.errors).toEqual([]);
    const provider = mockState.registered.find((r) => r.type === "pulumi:providers:kubernetes")!;
    expect(provider.inputs).toMatchObject({
      kubeconfig: "apiVersion: v1\nkind: Config\n",
      context: "kind-mesh",
    });
    expect(provider.secretInputs).toContain("kubeconfig");
    const kube = mockState.registered.filter((r) => r.type.startsWith("kubernetes:"));
    expect(kube.length).toBeGreaterThan(50);
    for (const r of kube) expect(r.provider, r.name).toMatch(/[:$]pulumi:providers:kubernetes::kubernetes::/);
  });

  it("uses_the_ambient_kubeconfig_without_stack_config", async () => {
    withConfig({});
    await runStack(program);
    const provider = mockState.registered.find((r) => r.type === "pulumi:providers:kubernetes")!;
    expect(provider.inputs.kubeconfig).toBeUndefined();
    expect(provider.inputs.context).toBeUndefined();
  });

  it("passes_the_options_from_stack_config_to_the_platform", async () => {
    withConfig({
      "meshgate:namespace": "shop-dev",
      "meshgate:runtimeImage": "registry.example/meshgate/runtime:0.1.0-dev.3",
      "meshgate:observability": "none",
    });
    const run = await runStack(program);
    expect(run.errors).toEqual([]);
    expect(run.outputs.namespace).toBe("shop-dev");
    const gateway = mockState.registered.find((r) => r.name === "shop-deployment-shop-dev-gateway")!;
    const images = JSON.stringify(gateway.inputs).match(
      /registry\.example\/meshgate\/runtime:0\.1\.0-dev\.3/g,
    );
    expect(images?.length).toBeGreaterThan(0);
    expect(mockState.registered.filter((r) => r.name.includes("observability"))).toEqual([]);
  });

  it("runs_a_root_rotation_stage_from_stack_config_with_numeric_generations", async () => {
    pulumi.runtime.setAllConfig({
      "meshgate:caRotation": JSON.stringify({
        generation: 2,
        previous: { generation: 1, stage: "add-root" },
      }),
    });
    const run = await runStack(program);
    expect(run.errors).toEqual([]);
    const roots = mockState.registered.filter((r) => r.type === "tls:index/selfSignedCert:SelfSignedCert");
    expect(roots.map((r) => r.name).sort()).toEqual(["shop-ca-root-1", "shop-ca-root-2"]);
    const bundle = mockState.registered.find((r) => r.name === "shop-secret-shop-meshgate-trust-bundle")!;
    const pem = (bundle.inputs.stringData as Record<string, string>)["bundle.pem"]!;
    expect(pem.match(/BEGIN CERTIFICATE/g)).toHaveLength(2);
  });

  it("loads_a_typescript_spec_module", async () => {
    withConfig({ "meshgate:spec": "examples/shop/mesh.ts" });
    const run = await runStack(program);
    expect(run.errors).toEqual([]);
    expect(run.outputs.mesh).toBe("shop");
  });

  it("fails_before_any_resource_when_the_spec_is_invalid", async () => {
    const dir = await mkdtemp(join(tmpdir(), "meshgate-stack-"));
    const file = join(dir, "bad.yaml");
    await writeFile(file, "name: Bad\ntrustDomain: x\nservices: {}\nsurprise: 1\n");
    withConfig({ "meshgate:spec": file });
    const run = await runStack(program);
    expect(run.errors).toHaveLength(1);
    const err = run.errors[0]!;
    expect(pulumi.InputPropertiesError.isInstance(err)).toBe(true);
    const problems = (err as pulumi.InputPropertiesError).errors;
    expect(problems.map((p) => p.propertyPath)).toEqual(["spec.name", "spec.surprise"]);
    expect(problems[0]!.reason).toMatch(/bad\.yaml:1:7: the string "Bad" is not a DNS label/);
    expect(mockState.registered.map((r) => r.type)).toEqual(["pulumi:pulumi:Stack"]);
  });

  it("refuses_an_unknown_option_value_before_any_resource", async () => {
    withConfig({ "meshgate:observability": "grafana-cloud" });
    const run = await runStack(program);
    expect(run.errors.map((e) => e.message).join("\n")).toMatch(/meshgate:observability/);
    expect(mockState.registered.map((r) => r.type)).toEqual(["pulumi:pulumi:Stack"]);
  });
});
