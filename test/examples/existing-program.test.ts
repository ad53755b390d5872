/**
 * examples/existing-program under Pulumi's mocks: an existing program imports `Platform` from "meshgate"
 * (the package's public entry), deploys the mesh with its own provider next to its own resources, and
 * feeds the mesh's outputs into them; every output resolves.
 */
import { beforeAll, describe, expect, it } from "vitest";
import { installMocks, mockState, runStack, unresolvedPaths, type StackRun } from "../support/pulumi.ts";

let run: StackRun;
beforeAll(async () => {
  await installMocks("payments-platform", "dev");
  // The program creates its resources when it is imported, as Pulumi programs do: import it inside the stack.
  run = await runStack(async () => ({ ...(await import("../../examples/existing-program/index.ts")) }));
});

describe("examples/existing-program", () => {
  it("deploys_the_mesh_next_to_the_programs_own_resources_with_every_output_resolved", () => {
    expect(run.errors).toEqual([]);
    expect(unresolvedPaths(run.outputs)).toEqual([]);
    expect(run.outputs.paymentsNamespace).toBe("payments");
    expect(run.outputs.paymentsEndpoint).toBe("http://gateway.payments.svc.cluster.local:8080");
    expect(String(run.outputs.paymentsCa)).toContain("BEGIN CERTIFICATE");
    const names = mockState.registered.map((r) => `${r.type} ${r.name}`);
    expect(names).toEqual(
      expect.arrayContaining([
        "pulumi:providers:kubernetes cluster",
        "kubernetes:core/v1:Namespace tools",
        "meshgate:index:Platform payments",
        "meshgate:pki:MeshCa payments-ca",
        "kubernetes:apps/v1:Deployment payments-deployment-payments-ledger",
        "kubernetes:apps/v1:Deployment payments-deployment-payments-api",
        "kubernetes:apps/v1:Deployment payments-deployment-payments-gateway",
        "kubernetes:core/v1:ConfigMap status-page",
      ]),
    );
  });

  it("uses_the_programs_provider_and_parents_the_mesh_to_the_component", () => {
    const platform = mockState.constructed.find((c) => c.type === "meshgate:index:Platform")!;
    const meshResources = mockState.registered.filter(
      (r) => r.name.startsWith("payments-") && r.type.startsWith("kubernetes:"),
    );
    expect(meshResources.length).toBeGreaterThan(10);
    for (const r of meshResources)
      expect(r.provider, r.name).toMatch(/pulumi:providers:kubernetes::cluster::/);
    for (const c of mockState.constructed.filter(
      (x) => x.name.startsWith("payments-") && !x.type.startsWith("tls:"),
    ))
      expect(c.parent === platform.resource, c.name).toBe(true);
    // The component waits for what the program gave it to depend on.
    const tools = mockState.constructed.find((c) => c.name === "tools")!.resource;
    expect(platform.opts.dependsOn).toContain(tools);
  });

  it("feeds_the_mesh_outputs_into_the_programs_resources", () => {
    const status = mockState.registered.find((r) => r.name === "status-page")!;
    expect(status.inputs.data).toEqual({
      "payments-endpoint": "http://gateway.payments.svc.cluster.local:8080",
      "payments-trust-bundle.pem": expect.stringContaining("BEGIN CERTIFICATE"),
    });
  });
});
