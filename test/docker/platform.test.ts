/**
 * DockerPlatform under Pulumi's mocks, on the shop example: the resource tree, every image reference the
 * one built or pulled, every app and sidecar in its service's network container's namespace, certificates and
 * RuntimeConfigs copied where the runtime reads them (keys secret, 0400, uid 65532), the creation order,
 * every output resolved, and the CrossGuard pack — guardrails and the Docker policies — passing on what is
 * registered while seeded misconfigurations are caught.
 */
import { createHash } from "node:crypto";
import * as pulumi from "@pulumi/pulumi";
import type { PolicyResource } from "@pulumi/policy";
import { beforeAll, beforeEach, describe, expect, it } from "vitest";
import type * as DockerModule from "../../components/docker/platform.ts";
import {
  installMocks,
  mockState,
  registeredOutputs,
  resetRecords,
  runStack,
  unresolvedPaths,
  valueOf,
  type StackRun,
} from "../support/pulumi.ts";
import { PATHS, SIDECAR_ENTRYPOINT } from "../../components/kubernetes/model.ts";
import { SHOP, shopRaw } from "./support.ts";
import { SSO_PROVIDER } from "../support/oidc.ts";

type Loose = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

/** What the docker provider computes for a pulled image: its ID and digest reference. */
async function dockerOutputs(type: string, _name: string, inputs: Record<string, unknown>) {
  if (type !== "docker:index/remoteImage:RemoteImage") return undefined;
  const hex = createHash("sha256").update(String(inputs.name)).digest("hex");
  return { imageId: `sha256:${hex}`, repoDigest: `${String(inputs.name).split(/[:@]/)[0]}@sha256:${hex}` };
}

let m: typeof DockerModule;
beforeAll(async () => {
  await installMocks("meshgate", "test", dockerOutputs);
  m = await import("../../components/docker/platform.ts");
});
beforeEach(() => resetRecords());

async function deploy(args: Partial<DockerModule.DockerPlatformArgs> = {}) {
  let platform!: DockerModule.DockerPlatform;
  const run: StackRun = await runStack(() => {
    platform = new m.DockerPlatform("shop", { spec: SHOP, ...args });
    return {
      gatewayUrl: platform.gatewayUrl,
      prometheusUrl: platform.prometheusUrl,
      network: platform.networkName,
      ca: platform.caCertificatePem,
      image: platform.runtimeImageRef,
    };
  });
  return { platform, run };
}

const CONTAINER = "docker:index/container:Container";
const containers = () => mockState.registered.filter((r) => r.type === CONTAINER);
const container = (name: string) => containers().find((r) => r.inputs.name === name)!;
const labelsOf = (r: { inputs: Loose }) =>
  Object.fromEntries((r.inputs.labels as { label: string; value: string }[]).map((l) => [l.label, l.value]));
const role = (r: { inputs: Loose }) => labelsOf(r)["meshgate.io/role"];
const uploads = (r: { inputs: Loose }) => r.inputs.uploads as Loose[];

describe("DockerPlatform resources", () => {
  it("registers_the_network_images_volumes_and_containers_under_the_component_with_every_output_resolved", async () => {
    const { platform, run } = await deploy();
    expect(run.errors).toEqual([]);
    expect(unresolvedPaths(run.outputs)).toEqual([]);
    expect(run.outputs).toMatchObject({
      gatewayUrl: "http://localhost:8080",
      prometheusUrl: "http://localhost:9090",
      network: "shop",
      image: "meshgate/runtime:0.1.0",
    });
    expect(String(run.outputs.ca)).toContain("BEGIN CERTIFICATE");
    const types = mockState.registered.map((r) => r.type);
    expect(types.filter((t) => t === "meshgate:docker:DockerPlatform")).toHaveLength(1);
    expect(types.filter((t) => t === "docker:index/network:Network")).toHaveLength(1);
    expect(types.filter((t) => t === "docker:index/image:Image")).toHaveLength(1);
    expect(types.filter((t) => t === "docker:index/remoteImage:RemoteImage")).toHaveLength(
      platform.plan.remoteImages.length,
    );
    expect(
      containers()
        .map((c) => c.inputs.name as string)
        .sort(),
    ).toEqual(platform.plan.containers.map((c) => c.name).sort());
    // One files volume per container with files, plus Prometheus' data.
    expect(types.filter((t) => t === "docker:index/volume:Volume")).toHaveLength(
      platform.plan.containers.filter((c) => c.filesDir !== null).length + 1,
    );
    const top = mockState.constructed.filter((c) => c.parent === platform).map((c) => c.type);
    for (const t of [
      "meshgate:pki:MeshCa",
      "meshgate:image:RuntimeImage",
      CONTAINER,
      "docker:index/network:Network",
    ])
      expect(top).toContain(t);
    const outputs = registeredOutputs("meshgate:docker:DockerPlatform", "shop");
    expect(unresolvedPaths(outputs)).toEqual([]);
    expect(JSON.stringify([outputs, run.outputs])).not.toMatch(/PRIVATE KEY/);
    expect(typeof outputs.meshgateSpec).toBe("string");
  });

  it("runs_every_proxy_from_the_built_runtime_image_and_every_app_from_its_pulled_image", async () => {
    const { platform } = await deploy();
    // By the build's image ID, not its tag: a rebuilt image under the same tag replaces the proxies.
    const ref = await valueOf(platform.runtimeImage.imageId);
    expect(ref).toMatch(/^sha256:[0-9a-f]{64}$/);
    const pulled = new Map(
      mockState.registered
        .filter((r) => r.type === "docker:index/remoteImage:RemoteImage")
        .map((r) => [r.inputs.name as string, r]),
    );
    for (const r of pulled.values()) expect(r.inputs.keepLocally).toBe(false);
    for (const c of containers()) {
      const planned = platform.plan.containers.find((p) => p.name === c.inputs.name)!;
      if (planned.image.kind === "runtime") expect(c.inputs.image, planned.name).toBe(ref);
      else
        expect(c.inputs.image, planned.name).toBe(
          `sha256:${createHash("sha256").update(planned.image.ref).digest("hex")}`,
        );
    }
    expect(
      containers()
        .filter((c) => c.inputs.image === ref)
        .map(role)
        .sort(),
    ).toEqual(["gateway", ...Array(9).fill("sidecar")].sort());
  });

  it("runs_every_app_and_its_sidecar_in_its_services_network_container", async () => {
    await deploy();
    const sidecars = containers().filter((c) => role(c) === "sidecar");
    expect(sidecars).toHaveLength(9);
    for (const s of sidecars) {
      const workload = labelsOf(s)["meshgate.io/workload"];
      const app = container(`shop-${workload}`);
      const holder = container(`shop-${workload}-net`);
      expect([role(app), role(holder)]).toEqual(["app", "network"]);
      for (const member of [s, app]) {
        expect(member.inputs.networkMode).toBe(`container:${holder.name}-id`);
        expect(member.inputs.networksAdvanced).toBeUndefined();
      }
      expect(s.inputs.ports).toEqual([]);
      expect(holder.inputs.networksAdvanced).toEqual([{ name: "shop", aliases: [workload] }]);
      expect(holder.inputs).toMatchObject({
        readOnly: true,
        privileged: false,
        capabilities: { drops: ["ALL"] },
        securityOpts: ["no-new-privileges:true"],
      });
      // Node's flags on its command line (NODE_OPTIONS refuses --no-memory-reducer).
      expect(s.inputs.entrypoints).toEqual([...SIDECAR_ENTRYPOINT]);
      expect(s.inputs.command).toEqual(["sidecar", "--config", PATHS.configFile]);
      expect((s.inputs.envs as string[]).some((e) => e.startsWith("NODE_OPTIONS="))).toBe(false);
    }
    for (const c of containers().filter((x) => role(x) !== "sidecar"))
      expect(c.inputs.entrypoints).toBeUndefined();
  });

  it("copies_configs_and_certificates_where_the_runtime_reads_them_with_keys_secret_and_private", async () => {
    const { platform } = await deploy();
    for (const c of containers().filter((x) => ["sidecar", "gateway"].includes(role(x)!))) {
      const workload = labelsOf(c)["meshgate.io/workload"]!;
      const config = platform.plan.configs[workload]!;
      const at = (path: string) => uploads(c).find((u) => u.file === path);
      expect(JSON.parse(at("/etc/meshgate/config/config.json")!.content).hash).toBe(config.hash);
      const svid = platform.ca.svids[workload]!;
      expect(at(config.svid!.certFile)!.content).toBe(await valueOf(svid.certChainPem));
      expect(at(config.svid!.keyFile)).toMatchObject({
        content: await valueOf(svid.keyPem),
        permissions: "0400",
        owner: "65532",
        group: "65532",
      });
      expect(at(config.svid!.bundleFile)!.content).toBe(await valueOf(platform.ca.trustBundlePem));
      expect(at(config.svid!.intermediatesFile!)!.content).toBe(await valueOf(platform.ca.intermediatesPem));
      expect(
        c.secretInputs.some((p) => p.startsWith("uploads")),
        c.name,
      ).toBe(true);
      expect(c.inputs.volumes).toEqual([
        { volumeName: `${c.inputs.name}-files`, containerPath: "/etc/meshgate" },
      ]);
      expect(c.inputs.readOnly).toBe(true);
      expect(c.inputs.user).toBe("65532:65532");
      expect(c.inputs.capabilities).toEqual({ drops: ["ALL"] });
    }
  });

  it("creates_apps_before_their_sidecars_and_every_sidecar_before_the_gateway_replacing_by_name", async () => {
    await deploy();
    const opts = (name: string) =>
      mockState.constructed.find((c) => c.name === `shop-container-${name}`)!.opts;
    const dependsOn = (name: string) =>
      (opts(name).dependsOn as pulumi.Resource[]).map(
        (d) => mockState.constructed.find((c) => c.resource === d)!.name,
      );
    expect(dependsOn("shop-orders-sidecar")).toEqual(["shop-container-shop-orders"]);
    expect(dependsOn("shop-orders")).toEqual(["shop-container-shop-orders-net"]);
    const sidecars = containers()
      .filter((c) => role(c) === "sidecar")
      .map((c) => `shop-container-${c.inputs.name}`);
    expect(dependsOn("shop-gateway").sort()).toEqual(sidecars.sort());
    for (const c of containers()) {
      expect(
        (opts(c.inputs.name as string) as pulumi.CustomResourceOptions).deleteBeforeReplace,
        c.name,
      ).toBe(true);
      expect(c.inputs.restart).toBe("unless-stopped");
    }
    for (const c of containers().filter((x) => role(x) !== "app" && role(x) !== "network")) {
      expect(c.inputs.wait, c.name).toBe(true);
      expect((c.inputs.healthcheck as Loose).tests.join(" ")).toMatch(/\/ready/);
    }
  });

  it("copies_the_https_listener_certificate_when_given_with_its_key_secret", async () => {
    await deploy({
      tlsCertificates: {
        "shop-tls": {
          certPem: "-----BEGIN CERTIFICATE-----\nTLS\n",
          keyPem: "-----BEGIN PRIVATE KEY-----\nK\n",
        },
      },
    });
    const gateway = container("shop-gateway");
    const at = (path: string) => uploads(gateway).find((u) => u.file === path);
    expect(at("/etc/meshgate/tls/shop-tls/tls.crt")?.content).toMatch(/TLS/);
    expect(at("/etc/meshgate/tls/shop-tls/tls.key")).toMatchObject({ permissions: "0400" });
    expect(gateway.inputs.ports).toContainEqual({
      internal: 8443,
      external: 8443,
      ip: "0.0.0.0",
      protocol: "tcp",
    });
  });

  it("copies_an_externals_client_certificate_into_its_callers_sidecar_only_with_its_key_secret", async () => {
    await deploy({
      tlsCertificates: {
        "bank-payouts-client": {
          certPem: "-----BEGIN CERTIFICATE-----\nBANK\n",
          keyPem: "-----BEGIN PRIVATE KEY-----\nK\n",
        },
      },
    });
    const sidecar = container("shop-payments-sidecar");
    const at = (path: string) => uploads(sidecar).find((u) => u.file === path);
    expect(at("/etc/meshgate/tls/bank-payouts-client/tls.crt")?.content).toMatch(/BANK/);
    expect(at("/etc/meshgate/tls/bank-payouts-client/tls.key")).toMatchObject({ permissions: "0400" });
    for (const other of ["shop-orders-sidecar", "shop-payments", "shop-gateway"])
      expect(uploads(container(other)).map((u) => u.file)).not.toContain(
        "/etc/meshgate/tls/bank-payouts-client/tls.key",
      );
  });

  it("passes_an_oidc_client_secret_to_the_gateway_as_a_secret_environment_variable", async () => {
    const { loadSpecFile } = await import("../../components/spec/load.ts");
    const raw = structuredClone((await loadSpecFile(SHOP)).raw) as Loose;
    raw.gateway.oidc = {
      sso: { ...SSO_PROVIDER },
    };
    const { run } = await deploy({ spec: raw as never, oidcClientSecrets: { sso: "s3cr3t-value" } });
    expect(run.errors).toEqual([]);
    const gateway = container("shop-gateway");
    expect(gateway.inputs.envs).toContain("SSO_CLIENT_SECRET=s3cr3t-value");
    expect(gateway.secretInputs).toContain("envs");
    for (const c of containers().filter((x) => role(x) !== "gateway"))
      expect((c.inputs.envs as string[] | undefined)?.join() ?? "", c.name).not.toContain("s3cr3t-value");
  });

  it("keeps_a_redis_password_of_the_spec_secret_in_the_state_and_out_of_the_gateways_config_hash", async () => {
    const PASSWORD = "s3cret-redis-pw";
    const raw = shopRaw();
    raw.gateway.rateLimitStore.redis.url = `redis://:${PASSWORD}@redis.example:6379`;
    const { platform, run } = await deploy({ spec: raw as never });
    expect(run.errors).toEqual([]);
    const holders = mockState.registered.filter((r) => JSON.stringify(r.inputs).includes(PASSWORD));
    expect(holders.map((r) => r.name)).toEqual(["shop-container-shop-gateway"]);
    const gateway = holders[0]!;
    const at = uploads(gateway).findIndex((u) => String(u.content).includes(PASSWORD));
    expect(uploads(gateway)[at]!.file).toBe("/etc/meshgate/config/config.json");
    // The config file reaches the provider (and the state) as a secret, as the key files do.
    expect(gateway.secretInputs.filter((p) => `uploads[${at}].content`.startsWith(p))).not.toEqual([]);
    // The sealed hash is an unsalted SHA-256 over the password: neither a label nor an output carries it.
    const sealed = platform.plan.configs.gateway!.hash;
    expect(labelsOf(gateway)["meshgate.io/config-hash"]).toMatch(/^sha256:/);
    expect(labelsOf(gateway)["meshgate.io/config-hash"]).not.toBe(sealed);
    expect(platform.configHashes.gateway).not.toBe(sealed);
    expect(JSON.stringify(registeredOutputs("meshgate:docker:DockerPlatform", "shop"))).not.toContain(sealed);
  });

  it("keeps_an_otlp_endpoint_token_secret_in_every_proxys_config_and_out_of_their_config_hashes", async () => {
    // Every proxy exports spans, so every proxy's config holds the endpoint; before, only a Redis URL made
    // a config secret, and the sidecars' labels and outputs carried the sealed hash over the token.
    const TOKEN = "s3cret-otlp-token";
    const raw = shopRaw();
    raw.observability.tracing = {
      sampling: 0.1,
      otlpEndpoint: `https://otel:${TOKEN}@collector.example:4318`,
    };
    const { platform, run } = await deploy({ spec: raw as never });
    expect(run.errors).toEqual([]);
    const holders = mockState.registered.filter((r) => JSON.stringify(r.inputs).includes(TOKEN));
    const proxies = Object.keys(platform.plan.configs);
    expect(holders.length).toBe(proxies.length);
    expect(proxies.length).toBeGreaterThan(5);
    for (const holder of holders) {
      const at = uploads(holder).findIndex((u) => String(u.content).includes(TOKEN));
      expect(uploads(holder)[at]!.file, holder.name).toBe("/etc/meshgate/config/config.json");
      expect(
        holder.secretInputs.filter((p) => `uploads[${at}].content`.startsWith(p)),
        holder.name,
      ).not.toEqual([]);
      const sealed = JSON.parse(String(uploads(holder)[at]!.content)).hash as string;
      expect(labelsOf(holder)["meshgate.io/config-hash"], holder.name).toMatch(/^sha256:/);
      expect(labelsOf(holder)["meshgate.io/config-hash"], holder.name).not.toBe(sealed);
    }
    for (const [w, config] of Object.entries(platform.plan.configs))
      expect(platform.configHashes[w], w).not.toBe(config.hash);
  });

  it("creates_every_docker_resource_with_the_given_provider", async () => {
    let platform!: DockerModule.DockerPlatform;
    await runStack(async () => {
      const docker = await import("@pulumi/docker");
      const provider = new docker.Provider("engine", { host: "unix:///var/run/docker.sock" });
      platform = new m.DockerPlatform("shop", { spec: SHOP, provider });
    });
    expect(platform.plan.mesh).toBe("shop");
    const custom = mockState.registered.filter((r) => r.type.startsWith("docker:index/"));
    expect(custom.length).toBeGreaterThan(30);
    for (const r of custom) expect(r.provider, r.name).toMatch(/pulumi:providers:docker::engine::/);
  });
});

describe("DockerPlatform arguments", () => {
  it.each<[string, Partial<DockerModule.DockerPlatformArgs>, string]>([
    ["refuses_a_spec_without_a_docker_target", { spec: "test/pulumi/testdata/bad-mesh.yaml" }, "spec"],
    ["refuses_an_admin_port_out_of_range", { gatewayAdminPort: 70000 }, "gatewayAdminPort"],
    ["refuses_a_prometheus_port_the_gateway_publishes", { prometheusPort: 8080 }, "prometheusPort"],
  ])("%s_before_registering_anything", async (_claim, args, path) => {
    let thrown: unknown;
    const run = await runStack(() => {
      try {
        new m.DockerPlatform("bad", { spec: SHOP, ...args });
      } catch (err) {
        thrown = err;
      }
    });
    expect(run.errors).toEqual([]);
    expect(pulumi.InputPropertiesError.isInstance(thrown)).toBe(true);
    const paths = (thrown as pulumi.InputPropertiesError).errors.map((e) => e.propertyPath);
    expect(
      paths.some((p) => p === path || p.startsWith(`${path}.`)),
      paths.join(","),
    ).toBe(true);
    expect(mockState.registered.map((r) => r.type)).toEqual(["pulumi:pulumi:Stack"]);
  });

  it("names_the_route_whose_static_directory_is_missing", async () => {
    const { loadSpecFile } = await import("../../components/spec/load.ts");
    const raw = structuredClone((await loadSpecFile(SHOP)).raw) as Loose;
    raw.gateway.routes.find((r: Loose) => r.name === "app").static.dir = "examples/shop/no-such-site";
    const r = m.prepareDocker({ spec: raw as never });
    expect(Array.isArray(r)).toBe(true);
    if (!Array.isArray(r)) return;
    expect(r.map((e) => e.propertyPath)).toEqual(["spec.gateway.routes"]);
    expect(r[0]!.reason).toMatch(/route app: cannot read its static directory .*no-such-site: ENOENT/);
  });

  it("names_the_missing_docker_target", async () => {
    const { prepareDocker } = m;
    const { loadSpecFile } = await import("../../components/spec/load.ts");
    const loaded = await loadSpecFile(SHOP);
    const raw = structuredClone(loaded.raw) as Loose;
    delete raw.targets.docker;
    const r = prepareDocker({ spec: raw as never });
    expect(Array.isArray(r) && r.map((e) => e.propertyPath)).toEqual(["spec.targets.docker"]);
  });
});

/** The registered resources as the policy engine hands them to the pack. */
function policyResources(): PolicyResource[] {
  return mockState.registered.map((r) => ({
    type: r.type,
    name: r.name,
    urn: `urn:pulumi:test::meshgate::${r.type}::${r.name}`,
    props: r.type.startsWith("meshgate:") ? registeredOutputs(r.type, r.name) : r.inputs,
    opts: { protect: false, ignoreChanges: [], aliases: [], customTimeouts: {}, additionalSecretOutputs: [] },
    isType: () => false,
    asType: () => undefined,
    dependencies: [],
    propertyDependencies: {},
  })) as unknown as PolicyResource[];
}

async function violations(resources: PolicyResource[]): Promise<string[]> {
  const { PACK_POLICIES } = await import("../../policies/pack/policies.ts");
  const out: string[] = [];
  for (const policy of PACK_POLICIES) {
    if ("validateResource" in policy && typeof policy.validateResource === "function")
      for (const r of resources)
        await policy.validateResource({ ...r, getConfig: () => ({}) } as never, (message: string) =>
          out.push(`${policy.name} ${r.name}: ${message}`),
        );
    if (
      "validateStack" in policy &&
      typeof policy.validateStack === "function" &&
      policy.enforcementLevel === "mandatory"
    )
      await policy.validateStack({ resources, getConfig: () => ({}) } as never, (message: string) =>
        out.push(`${policy.name}: ${message}`),
      );
  }
  return out;
}

let deployed: PolicyResource[] | undefined;
/** The shop's resources, deployed once for the seeded cases (each case seeds a copy). */
async function deployedOnce(): Promise<PolicyResource[]> {
  if (!deployed) {
    await deploy();
    deployed = policyResources();
  }
  return deployed;
}

describe("DockerPlatform and the CrossGuard pack", () => {
  it("passes_every_mandatory_policy_on_what_it_registers_and_runs_the_guardrails_on_the_carried_spec", async () => {
    await deploy();
    const resources = policyResources();
    expect(await violations(resources)).toEqual([]);
    const carrier = resources.find((r) => r.type === "meshgate:docker:DockerPlatform")!;
    const unsafe = String((carrier.props as Loose).meshgateSpec).replace("mtls: strict", "mtls: permissive");
    const reported = await violations([{ ...carrier, props: { meshgateSpec: unsafe } } as PolicyResource]);
    expect(reported.join("\n")).toMatch(/meshgate-guardrails: .*(mtls|permissive)/i);
  });

  it.each<[string, string, (c: Loose) => void, string]>([
    [
      "reports_a_sidecar_on_its_own_network",
      "shop-orders-sidecar",
      (c) => {
        delete c.networkMode;
        c.networksAdvanced = [{ name: "shop" }];
      },
      "docker-sidecar-shares-the-service-network",
    ],
    [
      "reports_a_sidecar_with_published_ports",
      "shop-orders-sidecar",
      (c) => (c.ports = [{ internal: 15006, external: 15006 }]),
      "docker-sidecar-shares-the-service-network",
    ],
    [
      "reports_the_gateway_admin_port_on_every_interface",
      "shop-gateway",
      (c) => (c.ports[1].ip = "0.0.0.0"),
      "docker-admin-ports-on-loopback",
    ],
    [
      "reports_prometheus_on_every_interface",
      "shop-prometheus",
      (c) => delete c.ports[0].ip,
      "docker-admin-ports-on-loopback",
    ],
    [
      "reports_a_privileged_app",
      "shop-orders",
      (c) => (c.privileged = true),
      "docker-no-privileged-containers",
    ],
    [
      "reports_an_added_capability",
      "shop-gateway",
      (c) => (c.capabilities = { adds: ["SYS_ADMIN"] }),
      "docker-no-privileged-containers",
    ],
    [
      "reports_the_host_network",
      "shop-payments",
      (c) => {
        delete c.networksAdvanced;
        c.networkMode = "host";
      },
      "docker-no-host-network",
    ],
    [
      "reports_an_image_on_latest",
      "shop-users",
      (c) => (c.image = "ghcr.io/acme/users:latest"),
      "docker-images-pinned",
    ],
    [
      "reports_a_private_key_in_env",
      "shop-users",
      (c) => c.envs.push("KEY=-----BEGIN PRIVATE KEY-----\nx"),
      "docker-private-keys-not-in-env",
    ],
  ])("%s", async (_claim, name, seed, policy) => {
    const resources = (await deployedOnce()).map((r) => {
      if (r.type !== CONTAINER || (r.props as Loose).name !== name) return r;
      const props = structuredClone(r.props) as Loose;
      seed(props);
      return { ...r, props };
    });
    const found = await violations(resources);
    expect(found.length).toBeGreaterThan(0);
    expect(
      found.every((v) => v.startsWith(`${policy} shop-container-${name}:`)),
      found.join("\n"),
    ).toBe(true);
  });
});
