/**
 * Platform under Pulumi's mocks, on the shop example: the resource tree (type tokens, parents, names),
 * one typed Kubernetes resource per chart object in dependency order, identity Secrets from MeshCa with
 * secret keys, typed outputs, the spec carried for the CrossGuard pack — whose policies pass on what is
 * registered — and a bad spec stopped before any resource with every path.
 */
import * as pulumi from "@pulumi/pulumi";
import type { PolicyResource } from "@pulumi/policy";
import { beforeAll, beforeEach, describe, expect, it } from "vitest";
import type * as Components from "../../components/pulumi/index.ts";
import { synthesize, secretNames, type KubeObject } from "../../components/kubernetes/index.ts";
import { loadSpecFile } from "../../components/spec/load.ts";
import { translate } from "../../components/translate/translate.ts";
import type { TranslateResult } from "../../components/translate/ir.ts";

type Raw = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any
import {
  installMocks,
  mockState,
  registeredOutputs,
  resetRecords,
  runStack,
  secretOf,
  unresolvedPaths,
  valueOf,
  type StackRun,
} from "../support/pulumi.ts";
import { SSO_PROVIDER } from "../support/oidc.ts";

const SHOP = "examples/shop/mesh.yaml";
let m: typeof Components;
let shop: TranslateResult;
let objects: readonly KubeObject[];

beforeAll(async () => {
  await installMocks();
  m = await import("../../components/pulumi/index.ts");
  const loaded = await loadSpecFile(SHOP);
  if (!loaded.ok) throw new Error("the shop example is invalid");
  shop = translate(loaded.spec);
  objects = synthesize(shop);
});
beforeEach(() => resetRecords());

async function deploy(args: Partial<Components.PlatformArgs> = {}, name = "shop") {
  let platform!: Components.Platform;
  const run: StackRun = await runStack(() => {
    platform = new m.Platform(name, { spec: SHOP, ...args });
    return { endpoint: platform.gatewayEndpoint, namespace: platform.namespace };
  });
  return { platform, run };
}

const k8sType = (o: KubeObject) => {
  const [group, version] = o.apiVersion.includes("/") ? o.apiVersion.split("/") : ["core", o.apiVersion];
  return `kubernetes:${group}/${version}:${o.kind}`;
};

describe("Platform resource tree", () => {
  it("registers_meshgate_type_tokens_and_parents_every_child_to_its_component", async () => {
    const { platform, run } = await deploy();
    expect(run.errors).toEqual([]);
    const components = mockState.constructed.filter((c) => c.type.startsWith("meshgate:"));
    expect(components.map((c) => c.type)).toEqual(["meshgate:index:Platform", "meshgate:pki:MeshCa"]);
    for (const c of components) expect(c.type).toMatch(/^meshgate:[a-z]+:[A-Z][A-Za-z]+$/);
    for (const c of mockState.constructed) {
      if (c.resource === platform) continue;
      const expected = c.type.startsWith("tls:") ? platform.ca : platform;
      expect(c.parent === expected, `${c.type} ${c.name}`).toBe(true);
    }
  });

  it("names_children_from_the_component_name_the_same_on_every_run", async () => {
    await deploy({}, "prod-shop");
    const first = mockState.registered.map((r) => `${r.type}::${r.name}`);
    for (const r of mockState.registered.filter((x) => x.type !== "pulumi:pulumi:Stack"))
      expect(r.name.startsWith("prod-shop"), r.name).toBe(true);
    expect(new Set(first).size).toBe(first.length);
    resetRecords();
    await deploy({}, "prod-shop");
    expect(mockState.registered.map((r) => `${r.type}::${r.name}`)).toEqual(first);
  });

  it("creates_one_typed_resource_per_chart_object_with_the_object_as_its_inputs", async () => {
    await deploy();
    const k8s = mockState.registered.filter((r) => r.type.startsWith("kubernetes:"));
    const identitySecrets = 1 + shop.infra.identities.length;
    expect(k8s).toHaveLength(objects.length + identitySecrets);
    for (const o of objects) {
      const name = m.childName("shop", o);
      const r = k8s.find((x) => x.name === name);
      expect(r?.type, name).toBe(k8sType(o));
      expect(r!.inputs, name).toEqual(JSON.parse(JSON.stringify(o)));
    }
  });

  it("orders_namespaces_before_configuration_before_workloads", async () => {
    const { platform } = await deploy();
    const byResource = new Map(mockState.constructed.map((c) => [c.resource, c]));
    const tierOfName = (n: string) => {
      const o = objects.find((x) => m.childName("shop", x) === n);
      return o ? m.tierOf(o.kind) : 1; // identity Secrets configure
    };
    const checkedTier1 = () =>
      mockState.constructed.filter((x) => x.type.startsWith("kubernetes:") && tierOfName(x.name) === 1)
        .length;
    let checked = 0;
    for (const c of mockState.constructed.filter((x) => x.type.startsWith("kubernetes:"))) {
      const deps = ((c.opts.dependsOn ?? []) as pulumi.Resource[]).map((d) => byResource.get(d)!.name);
      const tier = tierOfName(c.name);
      if (tier === 0) expect(deps, c.name).toEqual([]);
      // Configuration waits for the namespaces and CRDs; workloads for every piece of configuration.
      else expect(deps.map(tierOfName), c.name).toEqual(deps.map(() => tier - 1));
      if (tier === 2) expect(deps.length, c.name).toBe(checkedTier1());
      checked++;
    }
    expect(checked).toBe(objects.length + 1 + shop.infra.identities.length);
    // A workload waits for its own config, identity and NetworkPolicies.
    const orders = mockState.constructed.find((c) => c.name === "shop-deployment-shop-orders")!;
    const deps = (orders.opts.dependsOn as pulumi.Resource[]).map((d) => byResource.get(d)!.name);
    expect(deps).toEqual(
      expect.arrayContaining([
        "shop-configmap-shop-meshgate-config-orders",
        "shop-secret-shop-meshgate-svid-orders",
        "shop-secret-shop-meshgate-trust-bundle",
        expect.stringMatching(/^shop-networkpolicy-shop-/),
      ]),
    );
    expect(platform.resources["shop-namespace-shop"]).toBeDefined();
  });
});

describe("Platform identities", () => {
  it("writes_each_workloads_svid_and_the_trust_bundle_from_the_mesh_ca_as_secrets", async () => {
    await deploy();
    const names = secretNames(shop.infra);
    const secret = (n: string) => mockState.registered.find((r) => r.name === `shop-secret-shop-${n}`)!;
    const bundle = secret(names.trustBundle);
    expect(Object.keys(bundle.inputs.stringData as object).sort()).toEqual([
      "bundle.pem",
      "intermediates.pem",
    ]);
    expect(String((bundle.inputs.stringData as Record<string, string>)["bundle.pem"])).toContain(
      "BEGIN CERTIFICATE",
    );
    for (const identity of shop.infra.identities) {
      const s = secret(names.svid[identity.name]!);
      const data = s.inputs.stringData as Record<string, string>;
      expect(Object.keys(data).sort(), identity.name).toEqual(["svid-key.pem", "svid.pem"]);
      expect(data["svid.pem"]!.match(/BEGIN CERTIFICATE/g), identity.name).toHaveLength(2);
      expect(data["svid-key.pem"], identity.name).toContain("BEGIN PRIVATE KEY");
      // The key reaches the provider as a secret.
      expect(s.secretInputs, identity.name).toContain("stringData");
      expect(s.inputs.metadata).toMatchObject({ namespace: "shop" });
    }
    const svids = mockState.registered.filter(
      (r) => r.type === "tls:index/locallySignedCert:LocallySignedCert",
    );
    expect(svids).toHaveLength(1 + shop.infra.identities.length); // + the intermediate
  });

  it("hands_the_intermediate_to_cert_manager_in_cert_manager_mode", async () => {
    const { run } = await deploy({ identities: { mode: "cert-manager", caSecretName: "mesh-ca" } });
    expect(run.errors).toEqual([]);
    const ca = mockState.registered.find((r) => r.name === "shop-secret-shop-mesh-ca")!;
    expect(ca.inputs.type).toBe("kubernetes.io/tls");
    expect(Object.keys(ca.inputs.stringData as object).sort()).toEqual(["ca.crt", "tls.crt", "tls.key"]);
    expect(ca.secretInputs).toContain("stringData");
    expect(mockState.registered.filter((r) => r.name.startsWith("shop-secret-shop-meshgate-svid-"))).toEqual(
      [],
    );
    expect(mockState.registered.filter((r) => r.name.startsWith("shop-ca-svid-"))).toEqual([]);
    const certificates = mockState.registered.filter(
      (r) => r.type === "kubernetes:cert-manager.io/v1:Certificate",
    );
    expect(certificates).toHaveLength(shop.infra.identities.length);
    const issuer = mockState.constructed.find((c) => c.type === "kubernetes:cert-manager.io/v1:Issuer")!;
    const byResource = new Map(mockState.constructed.map((c) => [c.resource, c.name]));
    expect((issuer.opts.dependsOn as pulumi.Resource[]).map((d) => byResource.get(d))).toContain(
      "shop-secret-shop-mesh-ca",
    );
  });
});

describe("Platform outputs", () => {
  const PASSWORD = "s3cret-redis-pw";
  it.each<[string, (raw: Raw) => void, (shop: TranslateResult) => string[]]>([
    [
      "a_redis_password",
      (raw) =>
        (raw.gateway.rateLimitStore.redis.url = `redis://:${PASSWORD}@redis.shop.svc.cluster.local:6379`),
      () => ["gateway"],
    ],
    // Every proxy's config holds the OTLP endpoint: before, only a Redis URL made a config a Secret, and the
    // sidecars' hash outputs were the sealed hashes over the token.
    [
      "an_otlp_endpoint_token",
      (raw) =>
        (raw.observability.tracing = {
          sampling: 0.1,
          otlpEndpoint: `https://otel:${PASSWORD}@otel.example:4318`,
        }),
      (shop) => ["gateway", ...shop.runtime.sidecars.map((s) => s.name)],
    ],
  ])(
    "%s_in_the_spec_reaches_the_state_only_inside_pulumi_secrets_and_no_hash_output",
    async (_claim, edit, holding) => {
      const raw = (await loadSpecFile(SHOP)).raw as Raw;
      edit(raw);
      const { run, platform } = await deploy({ spec: raw as never });
      expect(run.errors).toEqual([]);
      const holders = mockState.registered.filter((r) => JSON.stringify(r.inputs).includes(PASSWORD));
      expect(holders.map((r) => [r.type, r.name, r.secretInputs]).sort()).toEqual(
        holding(shop)
          .map((w) => ["kubernetes:core/v1:Secret", `shop-secret-shop-meshgate-config-${w}`, ["stringData"]])
          .sort(),
      );
      for (const h of holders) {
        const sealed = JSON.parse((h.inputs.stringData as Record<string, string>)["config.json"]!)
          .hash as string;
        expect(Object.values(platform.configHashes)).not.toContain(sealed);
      }
      // The component's own outputs (the spec for the policy pack) are in the state too: as a secret.
      const monitor = (
        pulumi.runtime as unknown as {
          getMonitor(): { getRegisteredResources(): Map<string, { state: { toJavaScript(): Raw } }> };
        }
      ).getMonitor();
      const state = [...monitor.getRegisteredResources()]
        .find(([urn]) => urn.endsWith("$meshgate:index:Platform::shop"))![1]
        .state.toJavaScript();
      expect(JSON.stringify(state[m.SPEC_OUTPUT])).toContain(PASSWORD);
      expect(state[m.SPEC_OUTPUT]["4dabf18193072939515e22adb298388d"]).toBe(
        "1b47061264138c4ac30d75fd1eb44270",
      );
      // …while the policy pack still reads it (secrets are unwrapped for policies).
      expect(JSON.stringify(registeredOutputs("meshgate:index:Platform", "shop")[m.SPEC_OUTPUT])).toContain(
        PASSWORD,
      );
    },
  );

  it("resolves_every_output_and_carries_the_spec_for_the_policy_pack", async () => {
    const { platform, run } = await deploy();
    expect(run.errors).toEqual([]);
    expect(unresolvedPaths(run.outputs)).toEqual([]);
    expect(await valueOf(platform.namespace)).toBe("shop");
    expect(await valueOf(platform.gatewayEndpoint)).toBe("http://gateway.shop.svc.cluster.local:8080");
    expect(await valueOf(platform.caCertificatePem)).toContain("BEGIN CERTIFICATE");
    expect(await valueOf(platform.trustBundlePem)).toContain("BEGIN CERTIFICATE");
    expect(await secretOf(platform.ca.svids.orders!.keyPem)).toBe(true);
    expect(platform.spiffeIds.payments).toBe("spiffe://shop.example/ns/shop/sa/payments");
    // Each hash output is its pods' config-hash annotation (the config the chart mounts: the shop bundles
    // Tempo, so the OTLP endpoint is the bundled collector's and translate's hash is not it).
    const workloads = mockState.registered.filter(
      (r) =>
        /^kubernetes:apps\/v1:(Deployment|StatefulSet|DaemonSet)$/.test(r.type) &&
        (r.inputs.metadata as { namespace: string }).namespace === "shop",
    );
    const annotations = Object.fromEntries(
      workloads.map((r) => [
        (r.inputs.metadata as { name: string }).name,
        (r.inputs as Raw).spec.template.metadata.annotations["meshgate.io/config-hash"],
      ]),
    );
    expect(Object.keys(platform.configHashes).sort()).toEqual(Object.keys(annotations).sort());
    for (const [w, hash] of Object.entries(platform.configHashes)) {
      expect(hash, w).toBe(annotations[w]);
      expect(hash, w).toMatch(/^sha256:[0-9a-f]{64}$/);
    }
    expect(platform.configHashes.gateway).not.toBe(shop.runtime.gateway!.hash);
    const outputs = registeredOutputs("meshgate:index:Platform", "shop");
    expect(unresolvedPaths(outputs)).toEqual([]);
    expect(outputs.runtimeImage).toMatch(/^ghcr\.io\/meshgate\/runtime:\d+\.\d+\.\d+/);
    expect(typeof outputs[m.SPEC_OUTPUT]).toBe("string");
    expect(outputs[m.SPEC_OUTPUT]).toContain("trustDomain: shop.example");
    // No key in what the components register in clear (their outputs show in `pulumi stack output`).
    const ca = registeredOutputs("meshgate:pki:MeshCa", "shop-ca");
    expect(Object.keys(ca).sort()).toEqual(
      [
        "intermediatesPem",
        "issuerCertificatePem",
        "rootCertificatePem",
        "rootNotAfter",
        "rotationStage",
        "spiffeIds",
        "trustBundlePem",
      ].sort(),
    );
    expect(JSON.stringify([outputs, ca, run.outputs])).not.toMatch(/PRIVATE KEY/);
  });

  it("passes_the_crossguard_pack_on_what_it_registers", async () => {
    const { run } = await deploy();
    expect(run.errors).toEqual([]);
    const { PACK_POLICIES } = await import("../../policies/pack/policies.ts");
    const resources: PolicyResource[] = mockState.registered.map((r) => ({
      type: r.type,
      name: r.name,
      urn: `urn:pulumi:test::meshgate::${r.type}::${r.name}`,
      props: r.type === "meshgate:index:Platform" ? registeredOutputs(r.type, r.name) : r.inputs,
      opts: {
        protect: false,
        ignoreChanges: [],
        aliases: [],
        customTimeouts: {},
        additionalSecretOutputs: [],
      },
      isType: () => false,
      asType: () => undefined,
      dependencies: [],
      propertyDependencies: {},
    })) as unknown as PolicyResource[];
    const violations: string[] = [];
    for (const policy of PACK_POLICIES) {
      if ("validateResource" in policy && typeof policy.validateResource === "function")
        for (const r of resources)
          await policy.validateResource({ ...r, getConfig: () => ({}) } as never, (message: string) =>
            violations.push(`${policy.name} ${r.name}: ${message}`),
          );
      if (
        "validateStack" in policy &&
        typeof policy.validateStack === "function" &&
        policy.enforcementLevel === "mandatory"
      )
        await policy.validateStack({ resources, getConfig: () => ({}) } as never, (message: string) =>
          violations.push(`${policy.name}: ${message}`),
        );
    }
    expect(violations).toEqual([]);
    // The guardrails did run on the carried spec: a spec that breaks one is reported.
    const broken = mockState.registered.find((r) => r.type === "meshgate:index:Platform")!;
    const unsafe = String(registeredOutputs(broken.type, broken.name)[m.SPEC_OUTPUT]).replace(
      "mtls: strict",
      "mtls: permissive",
    );
    const reported: string[] = [];
    const guardrails = PACK_POLICIES.find((p) => p.name === "meshgate-guardrails")!;
    if (!("validateStack" in guardrails)) throw new Error("meshgate-guardrails is a stack policy");
    await guardrails.validateStack!(
      {
        resources: [
          { ...resources[0]!, type: "meshgate:index:Platform", props: { [m.SPEC_OUTPUT]: unsafe } },
        ],
        getConfig: () => ({}),
      } as never,
      (message: string) => reported.push(message),
    );
    expect(reported.join("\n")).toMatch(/mtls|permissive/i);
  });
});

describe("Platform arguments", () => {
  it("rejects_a_bad_spec_with_every_path_before_registering_anything", async () => {
    let thrown: unknown;
    const run = await runStack(() => {
      try {
        new m.Platform("bad", {
          spec: {
            name: "Bad",
            trustDomain: "shop.example",
            services: { orders: { image: "r/orders:1", port: 70000, allow: [{ from: ["gatway"] }] } },
            surprise: 1,
          } as never,
        });
      } catch (err) {
        thrown = err;
      }
    });
    expect(run.errors).toEqual([]);
    expect(pulumi.InputPropertiesError.isInstance(thrown)).toBe(true);
    const errors = (thrown as pulumi.InputPropertiesError).errors;
    expect(errors.map((e) => e.propertyPath).sort()).toEqual(
      [
        "spec.name",
        "spec.services.orders.allow[0].from[0]",
        "spec.services.orders.port",
        "spec.surprise",
      ].sort(),
    );
    for (const e of errors) expect(e.reason).toMatch(/\[E_SPEC_[A-Z_]+\]/);
    expect(mockState.registered.map((r) => r.type)).toEqual(["pulumi:pulumi:Stack"]);
  });

  it.each([
    ["a_missing_file", { spec: "examples/nope.yaml" }, "spec", /cannot read examples\/nope\.yaml: ENOENT/],
    ["a_module_path", { spec: "examples/shop/mesh.ts" }, "spec", /import a TypeScript spec module/],
    ["an_unpinned_image", { runtimeImage: "ghcr.io/meshgate/runtime:latest" }, "runtimeImage", /not pinned/],
    ["a_bad_namespace", { namespace: "Shop" }, "spec.namespace", /DNS label/],
  ] as const)("rejects_%s_before_registering_anything", async (_n, args, path, reason) => {
    let thrown: unknown;
    await runStack(() => {
      try {
        new m.Platform("bad", { spec: SHOP, ...args });
      } catch (err) {
        thrown = err;
      }
    });
    const errors = (thrown as pulumi.InputPropertiesError).errors;
    expect(errors.map((e) => e.propertyPath)).toEqual([path]);
    expect(errors[0]!.reason).toMatch(reason);
    expect(mockState.registered.map((r) => r.type)).toEqual(["pulumi:pulumi:Stack"]);
  });

  // An argument given as an output is a placeholder when the chart checks it: its value is checked
  // once known, as a string would be, and the deployment fails naming the field.
  const REMOTE_WRITE_CM = (r: { type: string; inputs: Record<string, unknown> }) =>
    r.type === "kubernetes:core/v1:ConfigMap" &&
    (r.inputs.metadata as { name: string }).name === "prometheus-config";

  it.each([
    [
      "with_userinfo_over_http",
      "http://admin:s3cret@metrics.example.com/api/v1/write",
      /not an https:\/\/ URL/,
    ],
    [
      "with_userinfo_over_https",
      "https://admin:s3cret@metrics.example.com/api/v1/write",
      /holds credentials/,
    ],
    ["over_http", "http://metrics.example.com/api/v1/write", /not an https:\/\/ URL/],
  ])("refuses_a_remote_write_url_output_%s_naming_the_field", async (_n, url, reason) => {
    const { run } = await deploy({ prometheusRemoteWrite: { url: pulumi.output(url) } });
    expect(run.errors.length).toBeGreaterThan(0);
    for (const err of run.errors) {
      expect(pulumi.InputPropertiesError.isInstance(err), String(err)).toBe(true);
      const { errors } = err as pulumi.InputPropertiesError;
      expect(errors.map((e) => e.propertyPath)).toEqual(["prometheusRemoteWrite.url"]);
      expect(errors[0]!.reason).toMatch(reason);
      expect(err.message).toMatch(/prometheusRemoteWrite\.url/);
    }
    // Neither the ConfigMap nor any pod's config-hash annotation was given the value.
    expect(mockState.registered.filter(REMOTE_WRITE_CM)).toEqual([]);
    for (const r of mockState.registered) expect(JSON.stringify(r.inputs), r.name).not.toContain(url);
  });

  it("writes_a_valid_remote_write_url_output_into_prometheus_config", async () => {
    const url = "https://aps-workspaces.eu-west-1.amazonaws.com/workspaces/ws-1/api/v1/remote_write";
    const { run } = await deploy({ prometheusRemoteWrite: { url: pulumi.output(url) } });
    expect(run.errors).toEqual([]);
    const [cm] = mockState.registered.filter(REMOTE_WRITE_CM);
    expect((cm!.inputs.data as Record<string, string>)["prometheus.yml"]).toContain(`url: ${url}`);
  });

  it.each([
    ["tagged_latest", "ghcr.io/meshgate/runtime:latest"],
    ["untagged", "ghcr.io/meshgate/runtime"],
  ])("refuses_an_unpinned_runtime_image_output_%s_naming_the_field", async (_n, image) => {
    const { run } = await deploy({ runtimeImage: pulumi.output(image) });
    expect(run.errors.length).toBeGreaterThan(0);
    for (const err of run.errors) {
      expect(pulumi.InputPropertiesError.isInstance(err), String(err)).toBe(true);
      const { errors } = err as pulumi.InputPropertiesError;
      expect(errors.map((e) => e.propertyPath)).toEqual(["runtimeImage"]);
      expect(errors[0]!.reason).toMatch(/is not pinned/);
    }
    const workloads = mockState.registered.filter((r) => r.type === "kubernetes:apps/v1:Deployment");
    for (const r of workloads) expect(JSON.stringify(r.inputs), r.name).not.toContain(`"${image}"`);
  });

  it("runs_a_pinned_runtime_image_output", async () => {
    const image = `registry.example/meshgate-runtime@sha256:${"a".repeat(64)}`;
    const { run } = await deploy({ runtimeImage: pulumi.output(image) });
    expect(run.errors).toEqual([]);
    const gateway = mockState.registered.find(
      (r) =>
        r.type === "kubernetes:apps/v1:Deployment" &&
        (r.inputs.metadata as { name: string }).name === "gateway",
    );
    expect(JSON.stringify(gateway!.inputs)).toContain(`"image":"${image}"`);
  });

  it("gives_yaml_errors_their_file_line_and_column", async () => {
    const prepared = m.preparePlatform({ spec: "test/pulumi/testdata/bad-mesh.yaml" });
    expect(Array.isArray(prepared)).toBe(true);
    const errors = prepared as pulumi.InputPropertyErrorDetails[];
    expect(errors.map((e) => e.propertyPath)).toEqual([
      "spec.services.orders.port",
      "spec.services.orders.replicas",
    ]);
    expect(errors[0]!.reason).toMatch(/^test\/pulumi\/testdata\/bad-mesh\.yaml:\d+:\d+: /);
  });

  it.each([
    [
      "an_oidc_provider_without_its_kubernetes_secret",
      (raw: Raw) =>
        (raw.gateway.oidc = {
          sso: { ...SSO_PROVIDER },
        }),
      "spec.gateway.oidc.sso.secret",
      /SSO_CLIENT_SECRET; name the Secret that holds it \(under the key client-secret\)/,
    ],
    [
      "a_gateway_volume_over_the_charts_config",
      (raw: Raw) =>
        (raw.targets.kubernetes = {
          gatewayVolumes: [{ name: "site", mountPath: "/etc/meshgate/config/site", configMap: "site" }],
        }),
      "spec.targets.kubernetes.gatewayVolumes[0].mountPath",
      /overlaps the chart's mount of config/,
    ],
    [
      "a_cert_manager_svid_lifetime_under_an_hour",
      (raw: Raw) =>
        (raw.mesh.ca = { ...raw.mesh.ca, provider: "cert-manager", workloadTtl: "30m", renewBefore: "10m" }),
      "spec.mesh.ca.workloadTtl",
      /shorter than the 1h cert-manager accepts/,
    ],
  ])("names_the_spec_field_the_chart_refuses_%s", async (_claim, patch, path, reason) => {
    const { loadSpecFile } = await import("../../components/spec/load.ts");
    const raw = structuredClone((await loadSpecFile(SHOP)).raw) as Raw;
    patch(raw);
    const prepared = m.preparePlatform({ spec: raw as never });
    expect(Array.isArray(prepared)).toBe(true);
    const errors = prepared as pulumi.InputPropertyErrorDetails[];
    expect(errors.map((e) => e.propertyPath)).toEqual([path]);
    expect(errors[0]!.reason).toMatch(reason);
  });

  it("deploys_into_the_namespace_it_is_given", async () => {
    const { platform } = await deploy({ namespace: "shop-staging" });
    expect(await valueOf(platform.namespace)).toBe("shop-staging");
    expect(platform.spiffeIds.orders).toBe("spiffe://shop.example/ns/shop-staging/sa/orders");
    const deployments = mockState.registered.filter((r) => r.type === "kubernetes:apps/v1:Deployment");
    for (const d of deployments.filter((x) => !x.name.includes("observability")))
      expect((d.inputs.metadata as { namespace: string }).namespace, d.name).toBe("shop-staging");
    const carried = registeredOutputs("meshgate:index:Platform", "shop")[m.SPEC_OUTPUT] as Record<
      string,
      unknown
    >;
    expect(carried.namespace).toBe("shop-staging");
  });
});
