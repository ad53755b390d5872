/**
 * Mesh and Gateway under Pulumi's mocks, on the shop example: their type tokens; together they register
 * exactly the Kubernetes objects one Platform registers (same kinds, namespaces, names and inputs), none
 * twice; every child is parented to its component; the Gateway waits for its Mesh and mounts the
 * identity the Mesh's CA issued; keys stay secret; bad arguments stop before any resource.
 */
import * as pulumi from "@pulumi/pulumi";
import { beforeAll, beforeEach, describe, expect, it } from "vitest";
import type * as Components from "../../components/pulumi/index.ts";
import { loadSpecFile } from "../../components/spec/load.ts";
import { translate } from "../../components/translate/translate.ts";
import type { TranslateResult } from "../../components/translate/ir.ts";
import {
  installMocks,
  mockState,
  registeredOutputs,
  resetRecords,
  runStack,
  secretOf,
  unresolvedPaths,
  valueOf,
  type Registered,
} from "../support/pulumi.ts";

const SHOP = "examples/shop/mesh.yaml";
let m: typeof Components;
let shop: TranslateResult;
let shopRaw: Record<string, unknown>;

beforeAll(async () => {
  await installMocks();
  m = await import("../../components/pulumi/index.ts");
  const loaded = await loadSpecFile(SHOP);
  if (!loaded.ok) throw new Error("the shop example is invalid");
  shop = translate(loaded.spec);
  shopRaw = loaded.raw as Record<string, unknown>;
});
beforeEach(() => resetRecords());

type Layers = { mesh: Components.Mesh; gateway: Components.Gateway };

async function deployLayers(args: Partial<Components.MeshArgs> = {}): Promise<Layers> {
  let layers!: Layers;
  const run = await runStack(() => {
    const mesh = new m.Mesh("shop-mesh", { spec: SHOP, ...args });
    const gateway = new m.Gateway("shop-edge", { mesh });
    layers = { mesh, gateway };
    return { endpoint: gateway.gatewayEndpoint, namespace: mesh.namespace };
  });
  expect(run.errors).toEqual([]);
  expect(unresolvedPaths(run.outputs)).toEqual([]);
  return layers;
}

/** The Kubernetes object a registered resource is: `Kind namespace/name`. */
const objectKey = (r: Registered) => {
  const meta = r.inputs.metadata as { name: string; namespace?: string };
  const kind = r.type.slice(r.type.lastIndexOf(":") + 1);
  return `${kind} ${meta.namespace ?? ""}/${meta.name}`;
};
const kubernetes = () => mockState.registered.filter((r) => r.type.startsWith("kubernetes:"));

const MODES: [string, Partial<Components.MeshArgs>][] = [
  ["default_options", {}],
  ["operator_observability", { observability: "operator" }],
  ["cert_manager_identities", { identities: { mode: "cert-manager", caSecretName: "mesh-ca" } }],
];

describe("Mesh and Gateway", () => {
  it("registers_meshgate_type_tokens", async () => {
    await deployLayers();
    const components = mockState.constructed.filter((c) => c.type.startsWith("meshgate:"));
    expect(components.map((c) => c.type)).toEqual([
      "meshgate:index:Mesh",
      "meshgate:pki:MeshCa",
      "meshgate:index:Gateway",
    ]);
  });

  it.each(MODES)("registers_together_exactly_the_objects_of_one_platform_with_%s", async (_n, args) => {
    await runStack(() => new m.Platform("shop", { spec: SHOP, ...args }));
    const platform = new Map(kubernetes().map((r) => [objectKey(r), r]));
    resetRecords();
    await deployLayers(args);
    const layered = kubernetes().map(objectKey);
    expect(new Set(layered).size, "no object twice").toBe(layered.length);
    expect([...layered].sort()).toEqual([...platform.keys()].sort());
    // The same objects, not only the same names.
    for (const r of kubernetes()) {
      const p = platform.get(objectKey(r))!;
      expect(r.type, objectKey(r)).toBe(p.type);
      // Identity Secrets hold PEMs the (mock) CA named after its component: compare their keys.
      const { stringData, ...inputs } = r.inputs;
      const { stringData: platformData, ...platformInputs } = p.inputs;
      expect(inputs, objectKey(r)).toEqual(platformInputs);
      expect(Object.keys(stringData ?? {}), objectKey(r)).toEqual(Object.keys(platformData ?? {}));
      expect(r.secretInputs, objectKey(r)).toEqual(p.secretInputs);
    }
  });

  it("parents_every_child_to_its_component_and_gives_the_gateway_only_the_gateways_objects", async () => {
    const { mesh, gateway } = await deployLayers();
    const owned = new Map<pulumi.Resource, string[]>([
      [mesh, []],
      [gateway, []],
      [mesh.ca, []],
    ]);
    for (const c of mockState.constructed.filter((x) => x.resource !== mesh && x.resource !== gateway)) {
      expect(c.parent && owned.has(c.parent), `${c.type} ${c.name}`).toBe(true);
      owned.get(c.parent!)!.push(c.name);
      expect(c.name.startsWith(c.parent === gateway ? "shop-edge-" : "shop-mesh-"), c.name).toBe(true);
    }
    expect(owned.get(gateway)!.sort()).toEqual(
      [
        "shop-edge-configmap-shop-meshgate-config-gateway",
        "shop-edge-deployment-shop-gateway",
        "shop-edge-horizontalpodautoscaler-shop-gateway",
        "shop-edge-networkpolicy-shop-meshgate-gateway",
        "shop-edge-poddisruptionbudget-shop-gateway",
        "shop-edge-service-shop-gateway",
        "shop-edge-serviceaccount-shop-gateway",
      ].sort(),
    );
    expect(Object.keys(gateway.resources).sort()).toEqual(owned.get(gateway)!.sort());
    // The mesh keeps the gateway's identity: its SVID Secret, from the mesh's CA.
    expect(owned.get(mesh)).toContain("shop-mesh-secret-shop-meshgate-svid-gateway");
    expect(owned.get(mesh.ca)).toContain("shop-mesh-ca-svid-gateway");
    expect(owned.get(mesh)!.filter((n) => /-(deployment|service)-shop-gateway$/.test(n))).toEqual([]);
  });

  it("makes_the_gateway_wait_for_its_mesh_and_mount_the_meshs_identity", async () => {
    const { mesh, gateway } = await deployLayers();
    const byResource = new Map(mockState.constructed.map((c) => [c.resource, c.name]));
    const constructed = (r: pulumi.Resource) => mockState.constructed.find((c) => c.resource === r)!;
    expect(constructed(gateway).opts.dependsOn).toEqual([mesh]);
    const deps = (name: string) =>
      ((mockState.constructed.find((c) => c.name === name)!.opts.dependsOn ?? []) as pulumi.Resource[]).map(
        (d) => byResource.get(d),
      );
    for (const name of Object.keys(gateway.resources)) expect(deps(name), name).toContain("shop-mesh");
    expect(deps("shop-edge-deployment-shop-gateway")).toEqual(
      expect.arrayContaining([
        "shop-edge-configmap-shop-meshgate-config-gateway",
        "shop-edge-serviceaccount-shop-gateway",
        "shop-edge-networkpolicy-shop-meshgate-gateway",
      ]),
    );
    const secretName = await valueOf(mesh.gatewayIdentitySecretName!);
    expect(secretName).toBe("meshgate-svid-gateway");
    const deployment = mockState.registered.find((r) => r.name === "shop-edge-deployment-shop-gateway")!;
    expect(JSON.stringify(deployment.inputs)).toContain(`"name":"${secretName}"`);
    expect(gateway.spiffeId).toBe(mesh.spiffeIds.gateway);
    expect(gateway.spiffeId).toBe("spiffe://shop.example/ns/shop/sa/gateway");
  });

  it("resolves_the_outputs_and_keeps_every_key_secret", async () => {
    const { mesh, gateway } = await deployLayers();
    expect(await valueOf(mesh.namespace)).toBe("shop");
    expect(await valueOf(gateway.gatewayEndpoint)).toBe("http://gateway.shop.svc.cluster.local:8080");
    expect(await valueOf(mesh.caCertificatePem)).toContain("BEGIN CERTIFICATE");
    expect(await valueOf(mesh.trustBundlePem)).toContain("BEGIN CERTIFICATE");
    // The hash outputs are the pods' config-hash annotations (the config the chart mounts).
    type Workload = { spec: { template: { metadata: { annotations: Record<string, string> } } } };
    const annotation = (child: string) =>
      (mockState.registered.find((r) => r.name === child)!.inputs as unknown as Workload).spec.template
        .metadata.annotations["meshgate.io/config-hash"];
    expect(gateway.configHash).toBe(annotation("shop-edge-deployment-shop-gateway"));
    expect(mesh.configHashes.orders).toBe(annotation("shop-mesh-deployment-shop-orders"));
    expect(gateway.configHash).not.toBe(shop.runtime.gateway!.hash);
    expect(await secretOf(mesh.ca.svids.gateway!.keyPem)).toBe(true);
    const svid = mockState.registered.find((r) => r.name === "shop-mesh-secret-shop-meshgate-svid-gateway")!;
    expect(svid.secretInputs).toContain("stringData");
    const meshOutputs = registeredOutputs("meshgate:index:Mesh", "shop-mesh");
    const gatewayOutputs = registeredOutputs("meshgate:index:Gateway", "shop-edge");
    expect(unresolvedPaths([meshOutputs, gatewayOutputs])).toEqual([]);
    expect(meshOutputs.gatewayIdentitySecretName).toBe("meshgate-svid-gateway");
    expect(typeof meshOutputs[m.SPEC_OUTPUT]).toBe("string");
    expect(gatewayOutputs.identitySecretName).toBe("meshgate-svid-gateway");
    expect(JSON.stringify([meshOutputs, gatewayOutputs])).not.toMatch(/PRIVATE KEY/);
  });

  it("carries_a_gateways_own_spec_so_that_the_crossguard_guardrails_check_its_routes", async () => {
    const spec = structuredClone(shopRaw) as { gateway: { routes: { match: { methods: string[] } }[] } };
    spec.gateway.routes[0]!.match.methods.push("DELETE"); // a public route that now writes
    const run = await runStack(() => {
      const mesh = new m.Mesh("shop-mesh", { spec: SHOP });
      new m.Gateway("shop-edge", { mesh, spec: spec as never });
    });
    expect(run.errors).toEqual([]);
    const { PACK_POLICIES } = await import("../../policies/pack/policies.ts");
    const guardrails = PACK_POLICIES.find((p) => p.name === "meshgate-guardrails")!;
    if (!("validateStack" in guardrails)) throw new Error("meshgate-guardrails is a stack policy");
    const resources = mockState.registered
      .filter((r) => r.type.startsWith("meshgate:index:"))
      .map((r) => ({
        type: r.type,
        name: r.name,
        urn: `urn:pulumi:test::meshgate::${r.type}::${r.name}`,
        props: registeredOutputs(r.type, r.name),
      }));
    const reported: string[] = [];
    await guardrails.validateStack!({ resources, getConfig: () => ({}) } as never, (message, urn) =>
      reported.push(`${urn}: ${message}`),
    );
    // The Mesh's spec is sound; the Gateway deploys a public route that deletes, and the pack says so.
    expect(reported.filter((r) => r.includes("::shop-mesh:"))).toEqual([]);
    expect(reported.join("\n")).toMatch(/Gateway::shop-edge: E_POLICY_PUBLIC_WRITE/);
  });

  it("names_the_cert_manager_certificate_secret_as_the_gateways_identity", async () => {
    const { mesh } = await deployLayers({ identities: { mode: "cert-manager", caSecretName: "mesh-ca" } });
    expect(await valueOf(mesh.gatewayIdentitySecretName!)).toBe("meshgate-svid-gateway");
    const certificate = mockState.registered.find(
      (r) => r.type === "kubernetes:cert-manager.io/v1:Certificate" && r.name.endsWith("-gateway"),
    );
    expect((certificate?.inputs.spec as { secretName: string }).secretName).toBe("meshgate-svid-gateway");
  });

  it("deploys_the_gateway_into_the_meshs_namespace_with_its_own_image", async () => {
    let layers!: Layers;
    await runStack(() => {
      const mesh = new m.Mesh("shop-mesh", { spec: SHOP, namespace: "shop-staging" });
      const gateway = new m.Gateway("shop-edge", {
        spec: SHOP,
        mesh,
        runtimeImage: "registry.example/meshgate-runtime:9.9.9",
      });
      layers = { mesh, gateway };
    });
    expect(await valueOf(layers.gateway.gatewayEndpoint)).toBe(
      "http://gateway.shop-staging.svc.cluster.local:8080",
    );
    for (const r of kubernetes().filter((x) => x.name.startsWith("shop-edge-")))
      expect((r.inputs.metadata as { namespace: string }).namespace, r.name).toBe("shop-staging");
    const images = (name: string) =>
      JSON.stringify(mockState.registered.find((r) => r.name === name)!.inputs).match(/"image":"[^"]+"/g);
    expect(images("shop-edge-deployment-shop-staging-gateway")).toEqual([
      '"image":"registry.example/meshgate-runtime:9.9.9"',
    ]);
    expect(images("shop-mesh-deployment-shop-staging-orders")).not.toContain(
      '"image":"registry.example/meshgate-runtime:9.9.9"',
    );
  });
});

describe("Mesh and Gateway arguments", () => {
  const problems = (err: unknown) => {
    expect(pulumi.InputPropertiesError.isInstance(err), String(err)).toBe(true);
    return (err as pulumi.InputPropertiesError).errors;
  };

  it("rejects_a_bad_mesh_spec_with_every_path_before_registering_anything", async () => {
    let thrown: unknown;
    await runStack(() => {
      try {
        new m.Mesh("bad", { spec: { ...shopRaw, name: "Bad", surprise: 1 } as never });
      } catch (err) {
        thrown = err;
      }
    });
    expect(
      problems(thrown)
        .map((e) => e.propertyPath)
        .sort(),
    ).toEqual(["spec.name", "spec.surprise"]);
    expect(mockState.registered.map((r) => r.type)).toEqual(["pulumi:pulumi:Stack"]);
  });

  const gatewayCases: [string, (mesh: Components.Mesh) => Components.GatewayArgs, string[], RegExp][] = [
    [
      "a_spec_without_a_gateway",
      (mesh) => ({ mesh, spec: withoutGateway("shop") }),
      ["spec.gateway"],
      /no gateway/,
    ],
    [
      "the_spec_of_another_mesh",
      (mesh) => ({ mesh, spec: { ...shopRaw, trustDomain: "other.example" } as never }),
      ["spec.trustDomain"],
      /Mesh "shop\.example"/,
    ],
    [
      "a_bad_spec",
      (mesh) => ({ mesh, spec: { ...shopRaw, surprise: 1 } as never }),
      ["spec.surprise"],
      /E_SPEC_/,
    ],
    [
      "an_unpinned_image",
      (mesh) => ({ mesh, runtimeImage: "ghcr.io/meshgate/runtime:latest" }),
      ["runtimeImage"],
      /not pinned/,
    ],
    ["no_mesh", () => ({ mesh: {} as never }), ["mesh"], /joins a Mesh/],
  ];
  const withoutGateway = (name = "backoffice") =>
    ({
      name,
      trustDomain: "shop.example",
      services: { ledger: { image: "registry.example/ledger:1.0.0", port: 8080 } },
    }) as never;

  it.each(gatewayCases)(
    "rejects_a_gateway_given_%s_before_registering_any_of_its_resources",
    async (_n, args, paths, reason) => {
      let thrown: unknown;
      await runStack(() => {
        const mesh = new m.Mesh("shop-mesh", { spec: SHOP });
        try {
          new m.Gateway("shop-edge", args(mesh));
        } catch (err) {
          thrown = err;
        }
      });
      const errors = problems(thrown);
      expect(errors.map((e) => e.propertyPath)).toEqual(paths);
      expect(errors[0]!.reason).toMatch(reason);
      expect(mockState.registered.filter((r) => r.name.startsWith("shop-edge"))).toEqual([]);
      expect(mockState.registered.filter((r) => r.type === "meshgate:index:Gateway")).toEqual([]);
    },
  );

  it("leaves_the_identity_output_undefined_for_a_mesh_without_a_gateway", async () => {
    let mesh!: Components.Mesh;
    const run = await runStack(() => {
      mesh = new m.Mesh("edge-less", { spec: withoutGateway() });
    });
    expect(run.errors).toEqual([]);
    expect(mesh.gatewayIdentitySecretName).toBeUndefined();
    expect(mesh.spiffeIds.gateway).toBeUndefined();
  });
});
