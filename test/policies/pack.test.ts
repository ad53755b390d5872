/**
 * The CrossGuard pack: every policy called directly with allowed and disallowed resources (props wrapped
 * as the policy server wraps them: `unknownCheckingProxy(structuredClone(props))`), and the pack booted
 * as `pulumi preview --policy-pack` starts it — a real process serving the analyzer over gRPC — answering
 * `analyze` and `analyzeStack` calls from a gRPC client (no Pulumi CLI).
 */
import { spawn, type ChildProcess } from "node:child_process";
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { stringify } from "yaml";
import {
  unknownCheckingProxy,
  type PolicyResource,
  type ResourceValidationArgs,
  type ResourceValidationPolicy,
  type StackValidationArgs,
} from "@pulumi/policy";
import {
  PACK_POLICIES,
  caKeysInSecrets,
  imagePinned,
  imagesPinned,
  loadBalancerOnlyForGateway,
  meshGuardrailWarnings,
  meshGuardrails,
  nonRoot,
  notPrivileged,
  readOnlyRootFilesystem,
  sidecarPresent,
} from "../../policies/pack/policies.ts";
import { ROOT, miniRaw, shopRaw } from "./support.ts";

const require = createRequire(import.meta.url);
const PACK = join(ROOT, "policies/pack");
type Loose = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

function resourceArgs(type: string, props: Loose, name = "r"): ResourceValidationArgs {
  const wrapped = unknownCheckingProxy(structuredClone(props)) as Loose;
  return {
    type,
    props: wrapped,
    urn: `urn:pulumi:dev::shop::${type}::${name}`,
    name,
    opts: {
      protect: false,
      ignoreChanges: [],
      aliases: [],
      customTimeouts: { createSeconds: 0, updateSeconds: 0, deleteSeconds: 0 },
      additionalSecretOutputs: [],
    },
    stackTags: new Map(),
    isType: () => false,
    asType: () => undefined,
    getConfig: <T extends object>() => ({}) as T,
    notApplicable: (reason?: string) => {
      throw new Error(reason ?? "not applicable");
    },
  };
}

async function violationsOf(policy: ResourceValidationPolicy, type: string, props: Loose): Promise<string[]> {
  const out: string[] = [];
  const validations = Array.isArray(policy.validateResource)
    ? policy.validateResource
    : [policy.validateResource!];
  for (const v of validations) await v(resourceArgs(type, props), (m) => out.push(m));
  return out;
}

/** A hardened, meshed Deployment that every resource policy accepts. */
function deployment(over: (d: Loose) => void = () => {}): Loose {
  const d: Loose = {
    metadata: { name: "orders" },
    spec: {
      template: {
        metadata: { labels: { "meshgate.io/mesh": "shop", app: "orders" } },
        spec: {
          securityContext: { runAsNonRoot: true, runAsUser: 10001 },
          containers: [
            {
              name: "orders",
              image: "ghcr.io/acme/orders:1.4.2",
              securityContext: { readOnlyRootFilesystem: true },
            },
            {
              name: "meshgate-sidecar",
              image: "ghcr.io/acme/meshgate@sha256:" + "a".repeat(64),
              securityContext: { readOnlyRootFilesystem: true },
            },
          ],
        },
      },
    },
  };
  over(d);
  return d;
}
const DEPLOYMENT = "kubernetes:apps/v1:Deployment";
const containers = (d: Loose) => d.spec.template.spec.containers as Loose[];
const KEY =
  "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIIrYSSNQFaA2Hwf1duRSxKtLYX5CB04fSeQ6tF1aY/PuoAoGCCqGSM49\n-----END EC PRIVATE KEY-----\n";

describe("pack resource policies", () => {
  it.each<[string, ResourceValidationPolicy, string, Loose, string | null]>([
    ["accepts_a_hardened_meshed_deployment_images", imagesPinned, DEPLOYMENT, deployment(), null],
    [
      "refuses_an_untagged_image",
      imagesPinned,
      DEPLOYMENT,
      deployment((d) => (containers(d)[0]!.image = "ghcr.io/acme/orders")),
      'uses image "ghcr.io/acme/orders"',
    ],
    [
      "refuses_the_latest_tag",
      imagesPinned,
      DEPLOYMENT,
      deployment((d) => (containers(d)[0]!.image = "orders:latest")),
      "pin a version tag",
    ],
    [
      "refuses_a_registry_port_mistaken_for_a_tag",
      imagesPinned,
      DEPLOYMENT,
      deployment((d) => (containers(d)[0]!.image = "registry:5000/orders")),
      "registry:5000/orders",
    ],
    [
      "checks_init_containers_of_cron_jobs_too",
      imagesPinned,
      "kubernetes:batch/v1:CronJob",
      {
        spec: {
          jobTemplate: {
            spec: {
              template: { spec: { initContainers: [{ name: "migrate", image: "migrate" }], containers: [] } },
            },
          },
        },
      },
      'container "migrate"',
    ],
    ["accepts_a_non_root_pod", nonRoot, DEPLOYMENT, deployment(), null],
    [
      "refuses_a_pod_without_run_as_non_root",
      nonRoot,
      DEPLOYMENT,
      deployment((d) => delete d.spec.template.spec.securityContext),
      "runAsNonRoot: true",
    ],
    [
      "refuses_a_container_running_as_uid_0",
      nonRoot,
      DEPLOYMENT,
      deployment((d) => (containers(d)[0]!.securityContext.runAsUser = 0)),
      "runs as user 0",
    ],
    ["accepts_read_only_root_filesystems", readOnlyRootFilesystem, DEPLOYMENT, deployment(), null],
    [
      "refuses_a_writable_root_filesystem",
      readOnlyRootFilesystem,
      DEPLOYMENT,
      deployment((d) => delete containers(d)[1]!.securityContext),
      '"meshgate-sidecar" does not set',
    ],
    [
      "accepts_an_unprivileged_pod",
      notPrivileged,
      "kubernetes:core/v1:Pod",
      { spec: { containers: [{ name: "a", image: "a:1" }] } },
      null,
    ],
    [
      "refuses_a_privileged_container",
      notPrivileged,
      DEPLOYMENT,
      deployment((d) => (containers(d)[0]!.securityContext.privileged = true)),
      '"orders" is privileged',
    ],
    [
      "refuses_the_host_network",
      notPrivileged,
      DEPLOYMENT,
      deployment((d) => (d.spec.template.spec.hostNetwork = true)),
      "hostNetwork: true",
    ],
    [
      "refuses_a_container_that_adds_a_capability_privileged_would_give",
      notPrivileged,
      DEPLOYMENT,
      deployment((d) => (containers(d)[0]!.securityContext.capabilities = { add: ["SYS_ADMIN"] })),
      '"orders" adds capabilities SYS_ADMIN',
    ],
    [
      "accepts_a_container_that_adds_only_net_bind_service",
      notPrivileged,
      DEPLOYMENT,
      deployment(
        (d) =>
          (containers(d)[0]!.securityContext.capabilities = { drop: ["ALL"], add: ["NET_BIND_SERVICE"] }),
      ),
      null,
    ],
    ["accepts_a_meshed_workload_with_its_sidecar", sidecarPresent, DEPLOYMENT, deployment(), null],
    [
      "accepts_the_sidecar_as_a_native_sidecar_init_container",
      sidecarPresent,
      DEPLOYMENT,
      deployment((d) => {
        const [app, sidecar] = containers(d);
        d.spec.template.spec.containers = [app];
        d.spec.template.spec.initContainers = [{ ...sidecar, restartPolicy: "Always" }];
      }),
      null,
    ],
    [
      "refuses_a_meshed_workload_without_its_sidecar",
      sidecarPresent,
      DEPLOYMENT,
      deployment((d) => containers(d).pop()),
      'part of mesh "shop" but has no meshgate-sidecar',
    ],
    [
      "exempts_the_gateway_from_the_sidecar",
      sidecarPresent,
      DEPLOYMENT,
      deployment((d) => {
        containers(d).pop();
        containers(d)[0] = {
          ...containers(d)[0],
          name: "gateway",
          args: ["gateway", "--config", "/etc/meshgate/config.json", "--workers", "1"],
        };
        d.spec.template.metadata.labels["meshgate.io/role"] = "gateway";
      }),
      null,
    ],
    [
      "refuses_a_workload_that_only_wears_the_gateway_label",
      sidecarPresent,
      DEPLOYMENT,
      deployment((d) => {
        containers(d).pop();
        d.spec.template.metadata.labels["meshgate.io/role"] = "gateway";
      }),
      'part of mesh "shop" but has no meshgate-sidecar',
    ],
    [
      "accepts_the_gateway_load_balancer",
      loadBalancerOnlyForGateway,
      "kubernetes:core/v1:Service",
      {
        metadata: { name: "gateway", labels: { "meshgate.io/role": "gateway" } },
        spec: { type: "LoadBalancer" },
      },
      null,
    ],
    [
      "accepts_a_cluster_ip_service",
      loadBalancerOnlyForGateway,
      "kubernetes:core/v1:Service",
      { metadata: { name: "orders" }, spec: { type: "ClusterIP" } },
      null,
    ],
    [
      "refuses_another_load_balancer",
      loadBalancerOnlyForGateway,
      "kubernetes:core/v1:Service",
      { metadata: { name: "orders" }, spec: { type: "LoadBalancer" } },
      'Service "orders" is a LoadBalancer',
    ],
    [
      "refuses_another_node_port_service",
      loadBalancerOnlyForGateway,
      "kubernetes:core/v1:Service",
      { metadata: { name: "orders" }, spec: { type: "NodePort" } },
      'Service "orders" is a NodePort',
    ],
    [
      "accepts_the_gateways_node_port_service",
      loadBalancerOnlyForGateway,
      "kubernetes:core/v1:Service",
      {
        metadata: { name: "gateway", labels: { "meshgate.io/role": "gateway" } },
        spec: { type: "NodePort" },
      },
      null,
    ],
    [
      "accepts_a_config_map_with_a_certificate",
      caKeysInSecrets,
      "kubernetes:core/v1:ConfigMap",
      { data: { "ca.crt": "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n" } },
      null,
    ],
    [
      "refuses_a_ca_key_in_a_config_map",
      caKeysInSecrets,
      "kubernetes:core/v1:ConfigMap",
      { data: { "ca.key": KEY } },
      'ConfigMap key "ca.key" holds a private key',
    ],
    [
      "refuses_a_ca_key_in_config_map_binary_data",
      caKeysInSecrets,
      "kubernetes:core/v1:ConfigMap",
      { binaryData: { "ca.key": Buffer.from(KEY).toString("base64") } },
      'binaryData key "ca.key"',
    ],
    [
      "refuses_a_key_in_an_env_value",
      caKeysInSecrets,
      DEPLOYMENT,
      deployment((d) => (containers(d)[0]!.env = [{ name: "CA_KEY", value: KEY }])),
      "private key in env CA_KEY",
    ],
    [
      "accepts_a_key_from_a_secret_reference",
      caKeysInSecrets,
      DEPLOYMENT,
      deployment(
        (d) =>
          (containers(d)[0]!.env = [
            { name: "CA_KEY", valueFrom: { secretKeyRef: { name: "ca", key: "tls.key" } } },
          ]),
      ),
      null,
    ],
  ])("%s", async (_claim, policy, type, props, expected) => {
    const found = await violationsOf(policy, type, props);
    if (expected === null) expect(found).toEqual([]);
    else
      expect(
        found.some((m) => m.includes(expected)),
        found.join(" | ") || "no violation",
      ).toBe(true);
  });

  it("never_puts_key_material_in_a_violation", async () => {
    const found = [
      ...(await violationsOf(caKeysInSecrets, "kubernetes:core/v1:ConfigMap", { data: { "ca.key": KEY } })),
      ...(await violationsOf(
        caKeysInSecrets,
        DEPLOYMENT,
        deployment((d) => (containers(d)[0]!.env = [{ name: "K", value: KEY }])),
      )),
    ];
    expect(found).toHaveLength(2);
    for (const m of found) {
      expect(m).not.toContain("BEGIN EC PRIVATE KEY");
      expect(m).not.toContain("MHcCAQEE");
    }
  });

  it("accepts_pinned_references", () => {
    for (const ok of ["a:1", "ghcr.io/acme/a:1.2.3", "registry:5000/a:v1", `a@sha256:${"0".repeat(64)}`])
      expect(imagePinned(ok), ok).toBe(true);
  });
});

function stackArgs(
  resources: { type: string; props: Loose; name?: string }[],
  config: Loose = {},
): StackValidationArgs {
  return {
    resources: resources.map((r, i) => {
      const props = unknownCheckingProxy(structuredClone(r.props)) as Loose;
      const resource: PolicyResource = {
        type: r.type,
        props,
        urn: `urn:pulumi:dev::shop::${r.type}::${r.name ?? `r${i}`}`,
        name: r.name ?? `r${i}`,
        opts: {
          protect: false,
          ignoreChanges: [],
          aliases: [],
          customTimeouts: { createSeconds: 0, updateSeconds: 0, deleteSeconds: 0 },
          additionalSecretOutputs: [],
        },
        dependencies: [],
        propertyDependencies: {},
        isType: () => false,
        asType: () => undefined,
      };
      return resource;
    }),
    stackTags: new Map(),
    getConfig: <T extends object>() => ({ enforcementLevel: "mandatory", ...config }) as T,
    notApplicable: (reason?: string): never => {
      throw new Error(reason);
    },
  } as StackValidationArgs;
}

async function stackViolations(
  policy: typeof meshGuardrails,
  args: StackValidationArgs,
): Promise<{ message: string; urn?: string }[]> {
  const out: { message: string; urn?: string }[] = [];
  await policy.validateStack!(args, (m, urn) => out.push({ message: m, ...(urn ? { urn } : {}) }));
  return out;
}

const MESH = "meshgate:index:Mesh";

describe("pack stack policies", () => {
  it("passes_a_spec_every_guardrail_accepts", async () => {
    expect(
      await stackViolations(meshGuardrails, stackArgs([{ type: MESH, props: { meshgateSpec: miniRaw() } }])),
    ).toEqual([]);
  });

  it("reports_each_error_of_the_carried_spec_with_its_code_and_the_carrier", async () => {
    const found = await stackViolations(
      meshGuardrails,
      stackArgs([{ type: MESH, name: "shop", props: { meshgateSpec: shopRaw() } }]),
    );
    expect(found.length).toBe(7);
    expect(found[0]!.urn).toBe(`urn:pulumi:dev::shop::${MESH}::shop`);
    expect(found.map((f) => f.message.split(" ")[0])).toContain("E_POLICY_RETRY_AMPLIFICATION");
    expect(found.find((f) => f.message.includes("get-order"))!.message).toContain(
      "(fix: retry at one layer only",
    );
  });

  it("reads_the_spec_as_yaml_text_from_a_stack_output", async () => {
    const found = await stackViolations(
      meshGuardrails,
      stackArgs([{ type: "pulumi:pulumi:Stack", props: { meshgateSpec: stringify(shopRaw()) } }]),
    );
    expect(found.length).toBe(7);
  });

  it("reports_warnings_only_in_the_advisory_policy", async () => {
    const found = await stackViolations(
      meshGuardrailWarnings,
      stackArgs([{ type: MESH, props: { meshgateSpec: shopRaw() } }]),
    );
    expect(found.length).toBe(6);
    expect(
      found.every(
        (f) =>
          f.message.startsWith("E_POLICY_TIMEOUT_PER_TRY") ||
          f.message.startsWith("E_POLICY_RETRIES_EXCEED_TIMEOUT") ||
          f.message.startsWith("E_POLICY_CLIENT_IP_HOP_COUNT"),
      ),
    ).toBe(true);
  });

  it("applies_the_pack_config_like_a_policy_file", async () => {
    const config = {
      rules: { "retry-amplification": "off", "timeout-budget": "warning", "idempotent-retries": "off" },
    };
    expect(
      await stackViolations(
        meshGuardrails,
        stackArgs([{ type: MESH, props: { meshgateSpec: shopRaw() } }], config),
      ),
    ).toEqual([]);
  });

  it("fails_closed_on_an_invalid_pack_config", async () => {
    const found = await stackViolations(
      meshGuardrails,
      stackArgs([{ type: MESH, props: { meshgateSpec: miniRaw() } }], { rules: { E_POLICY_NOPE: "off" } }),
    );
    expect(found).toEqual([
      { message: expect.stringContaining('rules.E_POLICY_NOPE: unknown rule "E_POLICY_NOPE"') },
    ]);
  });

  it("reports_an_invalid_carried_spec", async () => {
    const spec = miniRaw();
    spec.services.api.timout = "2s";
    const found = await stackViolations(
      meshGuardrails,
      stackArgs([{ type: MESH, props: { meshgateSpec: spec } }]),
    );
    expect(found).toEqual([
      {
        message: expect.stringContaining("the meshgate spec is invalid (1 error): services.api.timout"),
        urn: expect.any(String),
      },
    ]);
  });

  it("ignores_stacks_without_a_meshgate_spec", async () => {
    expect(
      await stackViolations(
        meshGuardrails,
        stackArgs([{ type: "kubernetes:core/v1:Namespace", props: { meshgateSpec: "not ours" } }]),
      ),
    ).toEqual([]);
  });

  it("throws_the_unknown_value_error_during_preview_as_the_server_expects", async () => {
    const { unknownObjectValue } = require("@pulumi/policy/proxy.js") as { unknownObjectValue: string };
    await expect(
      stackViolations(
        meshGuardrails,
        stackArgs([{ type: MESH, props: { meshgateSpec: unknownObjectValue } }]),
      ),
    ).rejects.toThrow("can't be known during preview");
  });

  it("has_unique_policy_names_and_one_pack_entry_point", () => {
    const names = PACK_POLICIES.map((p) => p.name);
    expect(new Set(names).size).toBe(names.length);
    expect(readFileSync(join(PACK, "index.ts"), "utf8").match(/^new PolicyPack\(/gm)).toHaveLength(1);
    expect(JSON.parse(readFileSync(join(PACK, "package.json"), "utf8")).version).toMatch(/^\d+\.\d+\.\d+$/);
    expect(readFileSync(join(PACK, "PulumiPolicy.yaml"), "utf8")).toMatch(/^runtime:\n {2}name: nodejs$/m);
  });
});

describe("the pack over gRPC", () => {
  const grpc = require("@grpc/grpc-js");
  const pb = require("@pulumi/pulumi/proto/analyzer_pb.js");
  const { AnalyzerClient } = require("@pulumi/pulumi/proto/analyzer_grpc_pb.js");
  const { Struct } = require("google-protobuf/google/protobuf/struct_pb.js");
  const { Empty } = require("google-protobuf/google/protobuf/empty_pb.js");
  let child: ChildProcess;
  let client: Loose;

  beforeAll(async () => {
    // As `pulumi preview --policy-pack policies/pack` starts it: node on the pack's entry point, in the
    // pack's directory (PolicyPack reads ./package.json); the server prints its port on stdout.
    child = spawn(process.execPath, ["index.ts"], { cwd: PACK, stdio: ["ignore", "pipe", "pipe"] });
    let stderr = "";
    child.stderr!.on("data", (b) => (stderr += String(b)));
    const port = await new Promise<number>((resolve, reject) => {
      let out = "";
      child.stdout!.on("data", (b) => {
        out += String(b);
        const m = /^(\d+)\n/.exec(out);
        if (m) resolve(Number(m[1]));
      });
      child.once("exit", (code) => reject(new Error(`the pack exited with ${code}: ${stderr}`)));
      setTimeout(() => reject(new Error(`the pack printed no port within 20s: ${stderr}`)), 20_000);
    });
    client = new AnalyzerClient(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
  });
  afterAll(() => {
    client?.close();
    child?.kill("SIGTERM");
  });

  const call = <T>(method: string, req: unknown) =>
    new Promise<T>((resolve, reject) =>
      client[method](req, (err: Error | null, res: T) => (err ? reject(err) : resolve(res))),
    );

  const options = () => {
    const o = new pb.AnalyzerResourceOptions();
    o.setCustomtimeouts(new pb.AnalyzerResourceOptions.CustomTimeouts());
    return o;
  };

  it("describes_its_policies", async () => {
    const info = await call<Loose>("getAnalyzerInfo", new Empty());
    expect(info.getName()).toBe("meshgate");
    expect(info.getVersion()).toBe("0.1.0");
    expect(info.getPoliciesList().map((p: Loose) => p.getName())).toEqual(PACK_POLICIES.map((p) => p.name));
  });

  it("answers_analyze_with_the_load_balancer_violation", async () => {
    const req = new pb.AnalyzeRequest();
    req.setType("kubernetes:core/v1:Service");
    req.setName("orders");
    req.setUrn("urn:pulumi:dev::shop::kubernetes:core/v1:Service::orders");
    req.setProperties(
      Struct.fromJavaScript({ metadata: { name: "orders" }, spec: { type: "LoadBalancer" } }),
    );
    req.setOptions(options());
    const res = await call<Loose>("analyze", req);
    const diagnostics = res
      .getDiagnosticsList()
      .map((d: Loose) => ({ policy: d.getPolicyname(), message: d.getMessage() }));
    expect(diagnostics).toEqual([
      {
        policy: "kubernetes-load-balancer-only-for-the-gateway",
        message: expect.stringContaining('Service "orders" is a LoadBalancer'),
      },
    ]);
  });

  it("answers_analyze_stack_with_the_guardrail_violations_of_the_carried_spec", async () => {
    const r = new pb.AnalyzerResource();
    r.setType(MESH);
    r.setName("shop");
    r.setUrn(`urn:pulumi:dev::shop::${MESH}::shop`);
    r.setProperties(Struct.fromJavaScript({ meshgateSpec: JSON.parse(JSON.stringify(shopRaw())) }));
    r.setOptions(options());
    const req = new pb.AnalyzeStackRequest();
    req.setResourcesList([r]);
    const res = await call<Loose>("analyzeStack", req);
    const byPolicy = new Map<string, number>();
    for (const d of res.getDiagnosticsList())
      byPolicy.set(d.getPolicyname(), (byPolicy.get(d.getPolicyname()) ?? 0) + 1);
    expect(Object.fromEntries(byPolicy)).toEqual({
      "meshgate-guardrails": 7,
      "meshgate-guardrail-warnings": 6,
    });
    const mandatory = res
      .getDiagnosticsList()
      .find((d: Loose) => d.getPolicyname() === "meshgate-guardrails");
    expect(mandatory.getEnforcementlevel()).toBe(pb.EnforcementLevel.MANDATORY);
    expect(mandatory.getUrn()).toBe(`urn:pulumi:dev::shop::${MESH}::shop`);
  });
});
