/**
 * The AWS stack program (meshgate:target aws) under Pulumi's mocks with AWS emulated
 * (test/support/aws.ts): it runs end to end on the shop example with every output resolved, and the
 * wiring that matters holds — subnets over the zones, the node group in private subnets, exactly the
 * managed IAM policies EKS needs, the AMP write policy scoped to its workspace, IRSA trust naming the
 * right ServiceAccount, the Kubernetes provider from the cluster's kubeconfig, the pushed image in every
 * proxy, tags and names from the stack; invalid settings stop it before any resource.
 */
import { mkdtemp, readFile, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as pulumi from "@pulumi/pulumi";
import { parse, stringify } from "yaml";
import { beforeAll, beforeEach, describe, expect, it } from "vitest";
import { GATEWAY_CONTAINER, SIDECAR_CONTAINER } from "../../components/kubernetes/index.ts";
import { LOAD_BALANCER_CONTROLLER_CHART, loadBalancerControllerPolicy } from "../../components/aws/index.ts";
import { ACCOUNT, awsCalls, awsMock, awsResources } from "../support/aws.ts";
import {
  installMocks,
  mockState,
  resetRecords,
  runStack,
  secretOf,
  unresolvedPaths,
  type Registered,
} from "../support/pulumi.ts";

type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any
let program: () => Promise<Record<string, unknown>>;
let shopSpec: Json;
let dir: string;

beforeAll(async () => {
  await installMocks("meshgate", "test", awsResources, awsCalls);
  program = (await import("../../stacks/index.ts")).default as typeof program;
  shopSpec = parse(await readFile("examples/shop/mesh.yaml", "utf8")) as Json;
  dir = await mkdtemp(join(tmpdir(), "meshgate-aws-"));
});
beforeEach(() => {
  resetRecords();
  awsMock.zones = 3;
});

/** The shop spec with targets.aws changed, written to a file; the stack config pointing at it. */
async function configure(aws: (a: Json) => void = () => {}, config: Record<string, string> = {}) {
  const spec = structuredClone(shopSpec);
  aws(spec.targets.aws);
  const file = join(dir, `shop-${Math.random().toString(36).slice(2)}.yaml`);
  await writeFile(file, stringify(spec));
  pulumi.runtime.setAllConfig({ "meshgate:target": "aws", "meshgate:spec": file, ...config });
}

async function deploy(aws?: (a: Json) => void, config?: Record<string, string>) {
  await configure(aws, config);
  const run = await runStack(program);
  expect(run.errors).toEqual([]);
  return run;
}

const all = (type: string) => mockState.registered.filter((r) => r.type === type);
const one = (type: string, name?: string): Registered => {
  const found = all(type).filter((r) => name === undefined || r.name === name);
  expect(
    found.map((r) => r.name),
    type,
  ).toHaveLength(1);
  return found[0]!;
};
const idOf = (type: string, name: string) => awsResources(type, name, {}).then((o) => String(o!.id));
const physicalRole = async (name: string) =>
  String((await awsResources("aws:iam/role:Role", name, {}))!.name);
const doc = (r: Registered, field: string) => JSON.parse(String(r.inputs[field])) as Json;

describe("AWS stack: a created cluster", () => {
  it("runs_end_to_end_with_every_output_resolved", async () => {
    const run = await deploy();
    expect(unresolvedPaths(run.outputs)).toEqual([]);
    expect(run.outputs).toMatchObject({
      mesh: "shop",
      region: "eu-west-1",
      clusterName: "shop-test",
      ampEndpoint: expect.stringMatching(
        /^https:\/\/aps-workspaces\.eu-west-1\.amazonaws\.com\/workspaces\/ws-/,
      ),
      ecrRepository: `${ACCOUNT}.dkr.ecr.eu-west-1.amazonaws.com/shop-test-runtime`,
      imageRef: expect.stringMatching(
        new RegExp(
          `^${ACCOUNT}\\.dkr\\.ecr\\.eu-west-1\\.amazonaws\\.com/shop-test-runtime@sha256:[0-9a-f]{64}$`,
        ),
      ),
    });
    expect(String(run.outputs.gatewayUrl)).toMatch(
      /^http:\/\/[0-9a-f]{32}\.elb\.eu-west-1\.amazonaws\.com:8080$/,
    );
    for (const t of [
      "meshgate:aws:Network",
      "meshgate:aws:EksCluster",
      "meshgate:aws:RuntimeRegistry",
      "meshgate:aws:ManagedPrometheus",
      "meshgate:aws:ContainerLogs",
      "meshgate:index:Platform",
    ])
      expect(all(t), t).toHaveLength(1);
  });

  it("spreads_one_public_and_one_private_subnet_over_each_zone", async () => {
    await deploy();
    const subnets = all("aws:ec2/subnet:Subnet");
    expect(subnets).toHaveLength(6);
    for (const kind of ["public", "private"]) {
      const zones = subnets.filter((s) => s.name.includes(`-${kind}-`)).map((s) => s.inputs.availabilityZone);
      expect(zones, kind).toEqual(["eu-west-1a", "eu-west-1b", "eu-west-1c"]);
    }
    for (const s of subnets) {
      expect(s.inputs.mapPublicIpOnLaunch, s.name).toBe(false);
      const tags = s.inputs.tags as Record<string, string>;
      expect(tags["kubernetes.io/cluster/shop-test"]).toBe("shared");
      expect(
        tags[s.name.includes("-public-") ? "kubernetes.io/role/elb" : "kubernetes.io/role/internal-elb"],
      ).toBe("1");
    }
    // One NAT gateway by default, in a public subnet; each private subnet routes through it.
    const nat = one("aws:ec2/natGateway:NatGateway");
    expect(nat.inputs.subnetId).toBe(await idOf("aws:ec2/subnet:Subnet", "shop-test-public-0"));
    const natRoutes = all("aws:ec2/route:Route").filter((r) => r.inputs.natGatewayId);
    expect(natRoutes).toHaveLength(3);
  });

  it("uses_two_zones_and_a_nat_gateway_per_zone_when_asked", async () => {
    awsMock.zones = 2;
    await deploy((a) => (a.availabilityZones = 2), { "meshgate:awsNatGateways": "perZone" });
    expect(
      all("aws:ec2/subnet:Subnet")
        .map((s) => s.inputs.availabilityZone)
        .sort(),
    ).toEqual(["eu-west-1a", "eu-west-1a", "eu-west-1b", "eu-west-1b"]);
    expect(all("aws:ec2/natGateway:NatGateway")).toHaveLength(2);
  });

  it("fails_when_the_region_has_fewer_zones_than_asked", async () => {
    awsMock.zones = 2;
    await configure((a) => (a.availabilityZones = 3));
    const run = await runStack(program);
    expect(run.errors.map((e) => e.message).join("\n")).toMatch(
      /targets\.aws\.availabilityZones: 3 zones asked, the region has 2/,
    );
  });

  it("puts_the_node_group_in_the_private_subnets_only_with_the_graviton_ami", async () => {
    await deploy();
    const group = one("aws:eks/nodeGroup:NodeGroup");
    const privateIds = await Promise.all(
      [0, 1, 2].map((i) => idOf("aws:ec2/subnet:Subnet", `shop-test-private-${i}`)),
    );
    expect(group.inputs.subnetIds).toEqual(privateIds);
    expect(group.inputs).toMatchObject({
      clusterName: "shop-test",
      instanceTypes: ["m7g.large"],
      amiType: "AL2023_ARM_64_STANDARD",
      scalingConfig: { minSize: 2, maxSize: 6, desiredSize: 2 },
    });
    const cluster = one("aws:eks/cluster:Cluster");
    expect((cluster.inputs.vpcConfig as Json).subnetIds).toHaveLength(6);
    expect(cluster.inputs.enabledClusterLogTypes).toEqual(["api", "audit", "authenticator"]);
    expect(one("aws:cloudwatch/logGroup:LogGroup").inputs).toMatchObject({
      name: "/aws/eks/shop-test/cluster",
      retentionInDays: 30,
    });
  });

  it("keeps_the_api_endpoint_public_to_the_ranges_given_or_private_to_the_vpc", async () => {
    await deploy();
    expect(one("aws:eks/cluster:Cluster").inputs.vpcConfig).toMatchObject({
      endpointPrivateAccess: true,
      endpointPublicAccess: true,
      publicAccessCidrs: ["0.0.0.0/0"],
    });
    resetRecords();
    await deploy(
      (a) => (a.cluster = { create: { publicAccessCidrs: ["203.0.113.0/24", "198.51.100.7/32"] } }),
    );
    expect((one("aws:eks/cluster:Cluster").inputs.vpcConfig as Json).publicAccessCidrs).toEqual([
      "198.51.100.7/32",
      "203.0.113.0/24",
    ]);
    resetRecords();
    await deploy((a) => (a.cluster = { create: { publicEndpoint: false } }));
    const vpc = one("aws:eks/cluster:Cluster").inputs.vpcConfig as Json;
    expect(vpc).toMatchObject({ endpointPrivateAccess: true, endpointPublicAccess: false });
    expect(vpc.publicAccessCidrs).toBeUndefined();
  });

  it("enforces_network_policies_with_the_vpc_cni_before_nodes_join", async () => {
    await deploy();
    const addon = one("aws:eks/addon:Addon", "shop-test-vpc-cni");
    expect(addon.inputs).toMatchObject({ clusterName: "shop-test", addonName: "vpc-cni" });
    expect(JSON.parse(String(addon.inputs.configurationValues))).toEqual({ enableNetworkPolicy: "true" });
    const nodes = mockState.constructed.find((c) => c.type === "aws:eks/nodeGroup:NodeGroup")!;
    const names = (nodes.opts.dependsOn as pulumi.Resource[]).map(
      (d) => mockState.constructed.find((c) => c.resource === d)?.name,
    );
    expect(names).toContain("shop-test-vpc-cni");
  });

  it("attaches_exactly_the_managed_policies_eks_needs", async () => {
    await deploy();
    const byRole = new Map<string, string[]>();
    for (const a of all("aws:iam/rolePolicyAttachment:RolePolicyAttachment")) {
      const role = String(a.inputs.role);
      byRole.set(role, [...(byRole.get(role) ?? []), String(a.inputs.policyArn)].sort());
    }
    const managed = (...names: string[]) => names.map((n) => `arn:aws:iam::aws:policy/${n}`).sort();
    expect(Object.fromEntries(byRole)).toEqual({
      [await physicalRole("shop-test-cluster-role")]: managed("AmazonEKSClusterPolicy"),
      [await physicalRole("shop-test-node-role")]: managed(
        "AmazonEKSWorkerNodePolicy",
        "AmazonEKS_CNI_Policy",
        "AmazonEC2ContainerRegistryReadOnly",
      ),
      [await physicalRole("shop-test-logs-agent")]: managed("CloudWatchAgentServerPolicy"),
      [await physicalRole("shop-test-storage-driver")]: managed("service-role/AmazonEBSCSIDriverPolicy"),
    });
    expect(doc(one("aws:iam/role:Role", "shop-test-cluster-role"), "assumeRolePolicy").Statement).toEqual([
      { Effect: "Allow", Principal: { Service: "eks.amazonaws.com" }, Action: "sts:AssumeRole" },
    ]);
    expect(
      doc(one("aws:iam/role:Role", "shop-test-node-role"), "assumeRolePolicy").Statement[0].Principal,
    ).toEqual({
      Service: "ec2.amazonaws.com",
    });
  });

  it("scopes_the_only_inline_policy_to_remote_write_on_its_workspace", async () => {
    await deploy();
    const policy = one("aws:iam/rolePolicy:RolePolicy");
    expect(policy.inputs.role).toBe(await physicalRole("shop-test-metrics-writer"));
    const workspace = await awsResources("aws:amp/workspace:Workspace", "shop-test-metrics", {});
    expect(doc(policy, "policy").Statement).toEqual([
      { Effect: "Allow", Action: ["aps:RemoteWrite"], Resource: workspace!.arn },
    ]);
  });

  it.each([
    ["shop-test-metrics-writer", "system:serviceaccount:shop-observability:prometheus"],
    ["shop-test-logs-agent", "system:serviceaccount:amazon-cloudwatch:cloudwatch-agent"],
    ["shop-test-storage-driver", "system:serviceaccount:kube-system:ebs-csi-controller-sa"],
  ])("trusts_the_cluster_oidc_provider_for_exactly_the_service_account_of_%s", async (role, subject) => {
    await deploy();
    const issuer = (await awsResources("aws:eks/cluster:Cluster", "", { name: "shop-test" }))!
      .identities as Json;
    const host = String(issuer[0].oidcs[0].issuer).replace("https://", "");
    const provider = one("aws:iam/openIdConnectProvider:OpenIdConnectProvider");
    expect(provider.inputs).toMatchObject({ url: `https://${host}`, clientIdLists: ["sts.amazonaws.com"] });
    expect(doc(one("aws:iam/role:Role", role), "assumeRolePolicy").Statement).toEqual([
      {
        Effect: "Allow",
        Principal: { Federated: `arn:aws:iam::${ACCOUNT}:oidc-provider/${host}` },
        Action: "sts:AssumeRoleWithWebIdentity",
        Condition: { StringEquals: { [`${host}:sub`]: subject, [`${host}:aud`]: "sts.amazonaws.com" } },
      },
    ]);
  });

  it("builds_the_kubernetes_provider_from_the_cluster_kubeconfig_for_every_kubernetes_resource", async () => {
    await deploy();
    const provider = one("pulumi:providers:kubernetes");
    expect(provider.secretInputs).toContain("kubeconfig");
    const kubeconfig = JSON.parse(String(provider.inputs.kubeconfig)) as Json;
    const cluster = (await awsResources("aws:eks/cluster:Cluster", "", { name: "shop-test" }))!;
    expect(kubeconfig.clusters[0].cluster).toEqual({
      server: cluster.endpoint,
      "certificate-authority-data": (cluster.certificateAuthority as Json).data,
    });
    expect(kubeconfig.users[0].user.exec).toMatchObject({
      command: "aws",
      args: ["eks", "get-token", "--cluster-name", "shop-test", "--region", "eu-west-1", "--output", "json"],
    });
    expect(JSON.stringify(kubeconfig.users)).not.toMatch(/"(token|password|client-key-data)"/);
    const kube = mockState.registered.filter((r) => r.type.startsWith("kubernetes:"));
    expect(kube.length).toBeGreaterThan(50);
    for (const r of kube)
      expect(r.provider, r.name).toMatch(/[:$]pulumi:providers:kubernetes::shop-test-k8s::/);
    const eks = mockState.constructed.find((c) => c.type === "meshgate:aws:EksCluster")!;
    expect(
      await secretOf((eks.resource as unknown as { kubeconfig: pulumi.Output<string> }).kubeconfig),
    ).toBe(true);
  });

  it("runs_the_pushed_image_in_every_proxy_container", async () => {
    const run = await deploy();
    const image = one("docker:index/image:Image");
    expect(image.inputs.imageName).toMatch(/shop-test-runtime:0\.1\.0-[0-9a-f]{12}$/);
    expect((image.inputs.build as Json).platform).toBe("linux/arm64");
    expect((image.inputs.registry as Json).server).toBe(`https://${ACCOUNT}.dkr.ecr.eu-west-1.amazonaws.com`);
    expect(image.secretInputs.some((p) => p.startsWith("registry"))).toBe(true);
    const containers = mockState.registered
      .filter((r) => /^kubernetes:apps\/v1:(Deployment|StatefulSet|DaemonSet)$/.test(r.type))
      .flatMap((r) => {
        const pod = (r.inputs as Json).spec.template.spec;
        return [...(pod.initContainers ?? []), ...pod.containers] as Json[];
      })
      .filter((c) => [GATEWAY_CONTAINER, SIDECAR_CONTAINER].includes(c.name));
    expect(containers.length).toBeGreaterThanOrEqual(6);
    for (const c of containers) expect(c.image).toBe(run.outputs.imageRef);
    const repo = one("aws:ecr/repository:Repository");
    expect(repo.inputs).toMatchObject({
      imageTagMutability: "IMMUTABLE",
      imageScanningConfiguration: { scanOnPush: true },
    });
    expect(one("aws:ecr/lifecyclePolicy:LifecyclePolicy").inputs.repository).toBe("shop-test-runtime");
  });

  it("remote_writes_prometheus_to_the_workspace_with_the_writer_role", async () => {
    const run = await deploy();
    const config = mockState.registered.find(
      (r) => r.name === "shop-configmap-shop-observability-prometheus-config",
    )!;
    const prom = parse((config.inputs as Json).data["prometheus.yml"]) as Json;
    expect(prom.remote_write).toEqual([
      { url: `${String(run.outputs.ampEndpoint)}api/v1/remote_write`, sigv4: { region: "eu-west-1" } },
    ]);
    const sa = mockState.registered.find(
      (r) => r.name === "shop-serviceaccount-shop-observability-prometheus",
    )!;
    expect((sa.inputs as Json).metadata.annotations).toEqual({
      "eks.amazonaws.com/role-arn": `arn:aws:iam::${ACCOUNT}:role/${await physicalRole("shop-test-metrics-writer")}`,
    });
    expect(one("aws:eks/addon:Addon", "shop-test-logs").inputs).toMatchObject({
      clusterName: "shop-test",
      addonName: "amazon-cloudwatch-observability",
    });
  });

  it("gives_the_prometheus_volume_a_default_ebs_storage_class", async () => {
    await deploy();
    expect(one("aws:eks/addon:Addon", "shop-test-storage").inputs).toMatchObject({
      clusterName: "shop-test",
      addonName: "aws-ebs-csi-driver",
    });
    const sc = one("kubernetes:storage.k8s.io/v1:StorageClass");
    expect(sc.inputs).toMatchObject({
      metadata: { name: "gp3", annotations: { "storageclass.kubernetes.io/is-default-class": "true" } },
      provisioner: "ebs.csi.aws.com",
      parameters: { type: "gp3", encrypted: "true" },
    });
    const pvc = mockState.registered.find((r) => r.type === "kubernetes:core/v1:PersistentVolumeClaim")!;
    expect((pvc.inputs as Json).spec.storageClassName).toBeUndefined();
  });

  it("creates_every_aws_resource_with_the_tagged_provider_and_a_stack_derived_name", async () => {
    await deploy();
    const provider = one("pulumi:providers:aws");
    expect(provider.name).toBe("shop-test-aws");
    expect(provider.inputs).toMatchObject({
      region: "eu-west-1",
    });
    expect(JSON.parse(String(provider.inputs.defaultTags))).toEqual({
      tags: { "meshgate:mesh": "shop", "meshgate:stack": "test", "managed-by": "meshgate" },
    });
    const awsResourcesCreated = mockState.registered.filter((r) => r.type.startsWith("aws:"));
    expect(awsResourcesCreated.length).toBeGreaterThan(30);
    for (const r of awsResourcesCreated) {
      expect(r.provider, r.name).toMatch(/[:$]pulumi:providers:aws::shop-test-aws::/);
      expect(r.name).toMatch(/^shop-test-/);
    }
  });

  it.each<[string, Record<string, string>, (a: Json) => void, Record<string, string>, RegExp]>([
    [
      "the_cloud_provider_nlb_by_default",
      {},
      () => {},
      { "service.beta.kubernetes.io/aws-load-balancer-type": "nlb" },
      /^http:\/\/[0-9a-f]{32}\.elb\.eu-west-1\.amazonaws\.com:8080$/,
    ],
    [
      "the_load_balancer_controller_nlb_with_ip_targets",
      { "meshgate:awsLoadBalancer": "nlb-ip" },
      () => {},
      {
        "service.beta.kubernetes.io/aws-load-balancer-type": "external",
        "service.beta.kubernetes.io/aws-load-balancer-nlb-target-type": "ip",
        "service.beta.kubernetes.io/aws-load-balancer-scheme": "internet-facing",
        // Drained for the gateway pod's grace period (5 s delay + 30 s drain + 5 s), not AWS's 300 s.
        "service.beta.kubernetes.io/aws-load-balancer-target-group-attributes":
          "preserve_client_ip.enabled=true,deregistration_delay.timeout_seconds=40",
      },
      /^http:\/\/[0-9a-f]{32}\.elb\.eu-west-1\.amazonaws\.com:8080$/,
    ],
    [
      "tls_at_the_nlb_with_the_acm_certificate",
      {},
      (a) =>
        (a.certificateArn = `arn:aws:acm:eu-west-1:${ACCOUNT}:certificate/${"0".repeat(8)}-0000-0000-0000-${"0".repeat(12)}`),
      {
        "service.beta.kubernetes.io/aws-load-balancer-type": "nlb",
        "service.beta.kubernetes.io/aws-load-balancer-ssl-cert": `arn:aws:acm:eu-west-1:${ACCOUNT}:certificate/${"0".repeat(8)}-0000-0000-0000-${"0".repeat(12)}`,
        "service.beta.kubernetes.io/aws-load-balancer-ssl-ports": "http",
      },
      /^https:\/\/[0-9a-f]{32}\.elb\.eu-west-1\.amazonaws\.com:8080$/,
    ],
  ])("exposes_the_gateway_through_%s", async (_name, config, aws, annotations, url) => {
    const run = await deploy(aws, config);
    const service = mockState.registered.find((r) => r.name === "shop-service-shop-gateway")!;
    expect((service.inputs as Json).metadata.annotations).toEqual(annotations);
    expect((service.inputs as Json).spec.type).toBe("LoadBalancer");
    // Instance targets keep the client's address only when kube-proxy does not forward between nodes.
    expect((service.inputs as Json).spec.externalTrafficPolicy).toBe("Local");
    expect(String(run.outputs.gatewayUrl)).toMatch(url);
  });

  it("asks_the_nlb_for_proxy_protocol_when_every_gateway_listener_expects_it", async () => {
    const spec = structuredClone(shopSpec);
    for (const l of spec.gateway.listeners as Json[]) l.proxyProtocol = true;
    const file = join(dir, "proxied.yaml");
    await writeFile(file, stringify(spec));
    pulumi.runtime.setAllConfig({ "meshgate:target": "aws", "meshgate:spec": file });
    const run = await runStack(program);
    expect(run.errors).toEqual([]);
    const service = mockState.registered.find((r) => r.name === "shop-service-shop-gateway")!;
    expect((service.inputs as Json).metadata.annotations).toMatchObject({
      "service.beta.kubernetes.io/aws-load-balancer-proxy-protocol": "*",
    });
  });

  it("drains_nlb_ip_targets_for_the_gateway_pods_own_grace_period", async () => {
    const spec = structuredClone(shopSpec);
    (spec.targets as Json).kubernetes = { ...(spec.targets as Json).kubernetes, gatewayDrainDelay: "15s" };
    (spec.gateway as Json).limits = { ...(spec.gateway as Json).limits, drainTimeout: "25s" };
    const file = join(dir, "drain.yaml");
    await writeFile(file, stringify(spec));
    pulumi.runtime.setAllConfig({
      "meshgate:target": "aws",
      "meshgate:spec": file,
      "meshgate:awsLoadBalancer": "nlb-ip",
    });
    const run = await runStack(program);
    expect(run.errors).toEqual([]);
    const deployment = mockState.registered.find((r) => r.name === "shop-deployment-shop-gateway")!;
    expect((deployment.inputs as Json).spec.template.spec.terminationGracePeriodSeconds).toBe(45);
    const service = mockState.registered.find((r) => r.name === "shop-service-shop-gateway")!;
    expect((service.inputs as Json).metadata.annotations).toMatchObject({
      "service.beta.kubernetes.io/aws-load-balancer-target-group-attributes":
        "preserve_client_ip.enabled=true,deregistration_delay.timeout_seconds=45",
    });
  });

  it("never_outputs_the_registry_password", async () => {
    const run = await deploy();
    expect(JSON.stringify(run.outputs)).not.toContain(awsMock.ecrPassword);
    const image = one("docker:index/image:Image");
    expect(image.secretInputs).toEqual(expect.arrayContaining([expect.stringMatching(/^registry/)]));
  });
});

describe("AWS stack: the AWS Load Balancer Controller", () => {
  const RELEASE = "kubernetes:helm.sh/v3:Release";
  const NLB_IP = { "meshgate:awsLoadBalancer": "nlb-ip" };
  const dependencyNames = (type: string) =>
    (mockState.constructed.find((c) => c.type === type)!.opts.dependsOn as pulumi.Resource[]).map(
      (d) => mockState.constructed.find((c) => c.resource === d)?.name,
    );

  it("installs_the_controller_chart_for_nlb_ip_on_a_created_cluster_in_its_vpc_with_its_own_role", async () => {
    await deploy(undefined, NLB_IP);
    expect(all("meshgate:aws:LoadBalancerController")).toHaveLength(1);
    const release = one(RELEASE);
    expect(release.provider).toMatch(/[:$]pulumi:providers:kubernetes::shop-test-k8s::/);
    expect(release.inputs).toMatchObject({
      name: "aws-load-balancer-controller",
      namespace: "kube-system",
      chart: "aws-load-balancer-controller",
      version: LOAD_BALANCER_CONTROLLER_CHART.version,
      repositoryOpts: { repo: "https://aws.github.io/eks-charts" },
      atomic: true,
    });
    const vpc = await idOf("aws:ec2/vpc:Vpc", "shop-test-vpc");
    expect(release.inputs.values).toEqual({
      clusterName: "shop-test",
      region: "eu-west-1",
      vpcId: vpc,
      replicaCount: 2,
      serviceAccount: {
        create: true,
        name: "aws-load-balancer-controller",
        annotations: {
          "eks.amazonaws.com/role-arn": `arn:aws:iam::${ACCOUNT}:role/${await physicalRole("shop-test-lb-controller")}`,
        },
      },
      enableServiceMutatorWebhook: false,
      podDisruptionBudget: { maxUnavailable: 1 },
      defaultTags: { "meshgate:mesh": "shop", "meshgate:stack": "test", "managed-by": "meshgate" },
    });
    // On the nodes: the release waits for the node group.
    expect(dependencyNames(RELEASE)).toContain("shop-test-nodes");
  });

  it("trusts_the_controller_role_to_exactly_its_service_account_and_scopes_it_by_the_cluster_tag", async () => {
    await deploy(undefined, NLB_IP);
    const trust = doc(one("aws:iam/role:Role", "shop-test-lb-controller"), "assumeRolePolicy");
    const host = String(trust.Statement[0].Principal.Federated).replace(/^.*:oidc-provider\//, "");
    expect(trust.Statement[0].Condition).toEqual({
      StringEquals: {
        [`${host}:sub`]: "system:serviceaccount:kube-system:aws-load-balancer-controller",
        [`${host}:aud`]: "sts.amazonaws.com",
      },
    });
    const inline = all("aws:iam/rolePolicy:RolePolicy").find(
      (p) => p.name === "shop-test-lb-controller-policy",
    )!;
    expect(inline.inputs.role).toBe(await physicalRole("shop-test-lb-controller"));
    const statements = doc(inline, "policy").Statement as Json[];
    expect(JSON.stringify(statements)).toBe(
      JSON.stringify(JSON.parse(loadBalancerControllerPolicy("aws")).Statement),
    );
    const grants = (action: string) => statements.filter((st) => (st.Action as string[]).includes(action));
    // What destroys or reshapes a load balancer, target group or security group needs the cluster tag on it…
    for (const action of [
      "elasticloadbalancing:DeleteLoadBalancer",
      "elasticloadbalancing:DeleteTargetGroup",
      "elasticloadbalancing:ModifyLoadBalancerAttributes",
      "elasticloadbalancing:SetSecurityGroups",
      "ec2:DeleteSecurityGroup",
    ]) {
      expect(grants(action), action).toHaveLength(1);
      expect(grants(action)[0]!.Condition, action).toEqual({
        Null: { "aws:ResourceTag/elbv2.k8s.aws/cluster": "false" },
      });
    }
    // …and what creates one must tag it in the same call.
    for (const action of [
      "elasticloadbalancing:CreateLoadBalancer",
      "elasticloadbalancing:CreateTargetGroup",
    ])
      expect(
        grants(action).map((st) => st.Condition),
        action,
      ).toEqual([{ Null: { "aws:RequestTag/elbv2.k8s.aws/cluster": "false" } }]);
    expect(grants("iam:CreateServiceLinkedRole")[0]!.Condition).toEqual({
      StringEquals: { "iam:AWSServiceName": "elasticloadbalancing.amazonaws.com" },
    });
    for (const st of statements)
      for (const a of st.Action as string[])
        expect(a, "named actions only").toMatch(/^[a-z0-9-]+:[A-Za-z]+$/);
  });

  it.each<[string, Record<string, string>, string | undefined]>([
    ["nlb_ip", NLB_IP, "enabled"],
    ["nlb", {}, undefined],
  ])(
    "labels_the_mesh_namespace_for_the_target_health_readiness_gate_only_with_nlb_ip_here_%s",
    async (_n, config, value) => {
      await deploy(undefined, config);
      const ns = all("kubernetes:core/v1:Namespace").find(
        (r) => (r.inputs as Json).metadata.name === "shop",
      )!;
      expect((ns.inputs as Json).metadata.labels["elbv2.k8s.aws/pod-readiness-gate-inject"]).toBe(value);
    },
  );

  it("creates_the_gateway_service_after_the_controller_and_so_deletes_it_first", async () => {
    const run = await deploy(undefined, NLB_IP);
    expect(dependencyNames("meshgate:index:Platform")).toContain("shop-test-lb");
    const service = mockState.registered.find((r) => r.name === "shop-service-shop-gateway")!;
    expect((service.inputs as Json).metadata.annotations).toMatchObject({
      "service.beta.kubernetes.io/aws-load-balancer-type": "external",
      "service.beta.kubernetes.io/aws-load-balancer-nlb-target-type": "ip",
    });
    expect(String(run.outputs.gatewayUrl)).toMatch(/\.elb\.eu-west-1\.amazonaws\.com:8080$/);
  });

  it.each<[string, (a: Json) => void, Record<string, string>]>([
    ["the_default_nlb", () => {}, {}],
    [
      "nlb_ip_on_an_existing_cluster_unless_asked",
      (a) => (a.cluster = { existing: "platform-prod" }),
      NLB_IP,
    ],
  ])("installs_no_controller_with_%s", async (_name, aws, config) => {
    await deploy(aws, config);
    expect(all("meshgate:aws:LoadBalancerController")).toEqual([]);
    expect(all(RELEASE)).toEqual([]);
    expect(all("aws:iam/role:Role").map((r) => r.name)).not.toContain("shop-test-lb-controller");
  });

  it("installs_it_on_an_existing_cluster_when_asked_in_the_cluster_vpc", async () => {
    await deploy((a) => (a.cluster = { existing: "platform-prod" }), {
      ...NLB_IP,
      "meshgate:awsLoadBalancerController": "true",
    });
    expect((one(RELEASE).inputs.values as Json).vpcId).toBe(awsMock.vpcOfExisting("platform-prod"));
    expect((one(RELEASE).inputs.values as Json).clusterName).toBe("platform-prod");
  });
});

describe("AWS stack: an existing cluster", () => {
  it("looks_the_cluster_up_and_creates_no_network_cluster_or_node_group", async () => {
    const run = await deploy((a) => (a.cluster = { existing: "platform-prod" }));
    expect(unresolvedPaths(run.outputs)).toEqual([]);
    expect(run.outputs.clusterName).toBe("platform-prod");
    for (const t of [
      "aws:ec2/vpc:Vpc",
      "aws:ec2/subnet:Subnet",
      "aws:eks/cluster:Cluster",
      "aws:eks/nodeGroup:NodeGroup",
      "aws:iam/openIdConnectProvider:OpenIdConnectProvider",
      "meshgate:aws:BlockStorage",
    ])
      expect(all(t), t).toEqual([]);
    const kubeconfig = JSON.parse(String(one("pulumi:providers:kubernetes").inputs.kubeconfig)) as Json;
    expect(kubeconfig["current-context"]).toBe("platform-prod");
    const trust = doc(one("aws:iam/role:Role", "shop-test-metrics-writer"), "assumeRolePolicy");
    expect(trust.Statement[0].Principal.Federated).toMatch(
      new RegExp(`^arn:aws:iam::${ACCOUNT}:oidc-provider/oidc\\.eks\\.eu-west-1\\.amazonaws\\.com/id/`),
    );
    expect((one("docker:index/image:Image").inputs.build as Json).platform).toBe("linux/amd64");
  });

  it("fails_when_the_existing_cluster_does_not_exist", async () => {
    await configure((a) => (a.cluster = { existing: "nowhere" }));
    const run = await runStack(program);
    expect(run.errors.map((e) => e.message).join("\n")).toMatch(/reading EKS Cluster \(nowhere\)/);
  });
});

describe("AWS stack: invalid settings", () => {
  it.each<[string, (a: Json) => void, Record<string, string>, string, RegExp]>([
    [
      "min_nodes_above_max_nodes",
      (a) => (a.cluster = { create: { minNodes: 5, maxNodes: 2 } }),
      {},
      "targets.aws.cluster.create.minNodes",
      /exceeds maxNodes/,
    ],
    [
      "a_certificate_of_another_region",
      (a) =>
        (a.certificateArn = `arn:aws:acm:us-east-1:${ACCOUNT}:certificate/${"1".repeat(8)}-1111-1111-1111-${"1".repeat(12)}`),
      {},
      "targets.aws.certificateArn",
      /us-east-1/,
    ],
    [
      "managed_prometheus_without_the_bundled_prometheus",
      () => {},
      { "meshgate:observability": "none" },
      "targets.aws.managedPrometheus",
      /bundled/,
    ],
    [
      "nlb_ip_with_the_controller_turned_off_on_a_created_cluster",
      () => {},
      { "meshgate:awsLoadBalancer": "nlb-ip", "meshgate:awsLoadBalancerController": "false" },
      "meshgate:awsLoadBalancerController",
      /AWS Load Balancer Controller/,
    ],
    [
      "a_public_access_range_with_host_bits",
      (a) => (a.cluster = { create: { publicAccessCidrs: ["203.0.113.9/24"] } }),
      {},
      "targets.aws.cluster.create.publicAccessCidrs",
      /write 203\.0\.113\.0\/24/,
    ],
    [
      "an_instance_type_that_is_not_one",
      (a) => (a.cluster = { create: { instanceType: "huge" } }),
      {},
      "targets.aws.cluster.create.instanceType",
      /EC2 instance type/,
    ],
  ])("refuses_%s_before_any_resource", async (_name, aws, config, path, reason) => {
    await configure(aws, config);
    const run = await runStack(program);
    expect(run.errors).toHaveLength(1);
    const err = run.errors[0]!;
    expect(pulumi.InputPropertiesError.isInstance(err)).toBe(true);
    const problem = (err as pulumi.InputPropertiesError).errors.find((p) => p.propertyPath === path);
    expect(problem?.reason).toMatch(reason);
    expect(mockState.registered.map((r) => r.type)).toEqual(["pulumi:pulumi:Stack"]);
  });

  it("refuses_a_spec_without_targets_aws", async () => {
    const spec = structuredClone(shopSpec);
    delete spec.targets.aws;
    const file = join(dir, "no-aws.yaml");
    await writeFile(file, stringify(spec));
    pulumi.runtime.setAllConfig({ "meshgate:target": "aws", "meshgate:spec": file });
    const run = await runStack(program);
    expect((run.errors[0] as pulumi.InputPropertiesError).errors.map((e) => e.propertyPath)).toEqual([
      "targets.aws",
    ]);
    expect(mockState.registered.map((r) => r.type)).toEqual(["pulumi:pulumi:Stack"]);
  });
});
