/**
 * The AWS target's pure parts: the settings checks (each error naming its field), what derives from the
 * instance type (Graviton → arm64 AMI and image), partitions, resource name prefixes, subnet CIDRs, the
 * NLB annotations, the kubeconfig (exec plugin, no credentials) and the IAM documents.
 */
import { describe, expect, it } from "vitest";
import {
  amiTypeOf,
  awsSettingErrors,
  gatewayServiceAnnotations,
  imagePlatformOf,
  installsLoadBalancerController,
  irsaTrustPolicy,
  isGraviton,
  kubeconfigOf,
  namePrefix,
  partitionOf,
  remoteWritePolicy,
  subnetCidrs,
  type AwsTarget,
} from "../../components/aws/index.ts";

type Created = Extract<AwsTarget["cluster"], { kind: "create" }>;
const created = (over: Partial<Created> = {}): Created => ({
  kind: "create",
  version: "1.33",
  instanceType: "m7g.large",
  minNodes: 2,
  maxNodes: 6,
  publicEndpoint: true,
  publicAccessCidrs: ["0.0.0.0/0"],
  ...over,
});
const target = (over: Partial<AwsTarget> = {}): AwsTarget => ({
  region: "eu-west-1",
  availabilityZones: 3,
  cluster: created(),
  managedPrometheus: true,
  certificateArn: null,
  ...over,
});
const check = (
  aws: AwsTarget | null,
  over: {
    observability?: "bundled" | "operator" | "none";
    service?: string;
    loadBalancer?: "nlb" | "nlb-ip";
    controller?: boolean;
    listeners?: { name: string; proxyProtocol: boolean }[];
  } = {},
) =>
  awsSettingErrors({
    aws,
    observability: over.observability ?? "bundled",
    gatewayServiceType: over.service ?? "LoadBalancer",
    ...(over.loadBalancer ? { loadBalancer: over.loadBalancer } : {}),
    ...(over.controller !== undefined ? { loadBalancerController: over.controller } : {}),
    ...(over.listeners ? { gatewayListeners: over.listeners } : {}),
  });
const CERT = "arn:aws:acm:eu-west-1:123456789012:certificate/12345678-1234-1234-1234-123456789012";

describe("AWS settings", () => {
  it("accepts_the_defaults", () => {
    expect(check(target())).toEqual([]);
    expect(check(target({ certificateArn: CERT }))).toEqual([]);
    const limited = created({ publicAccessCidrs: ["203.0.113.0/24", "198.51.100.7/32"] });
    expect(check(target({ cluster: limited }))).toEqual([]);
    expect(check(target({ cluster: created({ publicEndpoint: false }) }))).toEqual([]);
    expect(check(target({ cluster: { kind: "existing", name: "platform-prod" } }))).toEqual([]);
    expect(check(target(), { loadBalancer: "nlb-ip" })).toEqual([]);
    // An existing cluster may already run the controller: nlb-ip without installing it is allowed there.
    const existing = target({ cluster: { kind: "existing", name: "platform-prod" } });
    expect(check(existing, { loadBalancer: "nlb-ip", controller: false })).toEqual([]);
  });

  it.each<[string, AwsTarget | null, Parameters<typeof check>[1], string]>([
    ["a_missing_aws_target", null, {}, "targets.aws"],
    [
      "an_existing_cluster_name_with_spaces",
      target({ cluster: { kind: "existing", name: "my cluster" } }),
      {},
      "targets.aws.cluster.existing",
    ],
    [
      "a_version_that_is_not_a_minor",
      target({ cluster: created({ version: "latest", minNodes: 1, maxNodes: 2 }) }),
      {},
      "targets.aws.cluster.create.version",
    ],
    [
      "a_version_older_than_the_chart_needs",
      target({ cluster: created({ version: "1.28" }) }),
      {},
      "targets.aws.cluster.create.version",
    ],
    [
      "min_nodes_above_max_nodes",
      target({ cluster: created({ minNodes: 4, maxNodes: 2 }) }),
      {},
      "targets.aws.cluster.create.minNodes",
    ],
    ...["203.0.113.0/33", "203.0.113.0", "2001:db8::/32", "203.0.113.1/24", "010.0.0.0/8", "256.0.0.0/8"].map(
      (cidr): [string, AwsTarget, Parameters<typeof check>[1], string] => [
        `a_public_access_range_${cidr}`,
        target({ cluster: created({ publicAccessCidrs: [cidr] }) }),
        {},
        "targets.aws.cluster.create.publicAccessCidrs",
      ],
    ),
    [
      "public_access_ranges_on_a_private_endpoint",
      target({ cluster: created({ publicEndpoint: false, publicAccessCidrs: ["203.0.113.0/24"] }) }),
      {},
      "targets.aws.cluster.create.publicAccessCidrs",
    ],
    [
      "a_certificate_arn_of_another_service",
      target({ certificateArn: "arn:aws:iam::123456789012:role/x" }),
      {},
      "targets.aws.certificateArn",
    ],
    [
      "a_certificate_of_another_region",
      target({ certificateArn: CERT.replace("eu-west-1", "us-east-1") }),
      {},
      "targets.aws.certificateArn",
    ],
    [
      "managed_prometheus_without_bundled_prometheus",
      target(),
      { observability: "operator" },
      "targets.aws.managedPrometheus",
    ],
    ["a_cluster_ip_gateway", target(), { service: "ClusterIP" }, "targets.kubernetes.gatewayServiceType"],
    [
      "proxy_protocol_on_some_listeners_only",
      target(),
      {
        listeners: [
          { name: "http", proxyProtocol: true },
          { name: "https", proxyProtocol: false },
        ],
      },
      "gateway.listeners",
    ],
    [
      "nlb_ip_on_a_created_cluster_without_the_controller",
      target(),
      { loadBalancer: "nlb-ip", controller: false },
      "meshgate:awsLoadBalancerController",
    ],
  ])("refuses_%s_naming_the_field", (_name, aws, over, field) => {
    const errors = check(aws, over);
    expect(errors.map((e) => e.propertyPath)).toEqual([field]);
    expect(errors[0]!.reason.length).toBeGreaterThan(20);
  });

  it.each([
    ["m7g.large", true],
    ["m7gd.xlarge", true],
    ["c6gn.large", true],
    ["t4g.small", true],
    ["im4gn.large", true],
    ["a1.medium", true],
    ["m7i.large", false],
    ["m6a.large", false],
    ["g5.xlarge", false],
    ["t3.medium", false],
  ])("classifies_%s_as_graviton_%s", (type, graviton) => {
    expect(isGraviton(type)).toBe(graviton);
    expect(amiTypeOf(type)).toBe(graviton ? "AL2023_ARM_64_STANDARD" : "AL2023_x86_64_STANDARD");
    expect(imagePlatformOf(type)).toBe(graviton ? "linux/arm64" : "linux/amd64");
  });

  it.each<["nlb" | "nlb-ip", "create" | "existing", boolean | undefined, boolean]>([
    ["nlb", "create", undefined, false],
    ["nlb-ip", "create", undefined, true],
    ["nlb-ip", "existing", undefined, false],
    ["nlb-ip", "existing", true, true],
    ["nlb", "create", true, true],
    ["nlb-ip", "create", false, false],
  ])(
    "with_%s_on_a_%s_cluster_configured_%s_installs_the_controller_%s",
    (mode, cluster, configured, installs) => {
      expect(installsLoadBalancerController(mode, cluster, configured)).toBe(installs);
    },
  );

  it.each([
    ["eu-west-1", "aws"],
    ["cn-north-1", "aws-cn"],
    ["us-gov-west-1", "aws-us-gov"],
  ])("puts_%s_in_partition_%s", (region, partition) => {
    expect(partitionOf(region)).toBe(partition);
  });

  it.each([
    ["shop", "dev", "shop-dev"],
    ["Shop", "Feature_42", "shop-feature-42"],
    ["a-very-long-mesh-name", "with-a-very-long-stack-name", "a-very-long-mesh-name-with-a-very-long"],
  ])("derives_the_name_prefix_of_%s_on_%s", (mesh, stack, prefix) => {
    expect(namePrefix(mesh, stack)).toBe(prefix);
    expect(prefix.length).toBeLessThanOrEqual(38);
  });

  it("splits_the_vpc_into_public_20s_and_private_18s", () => {
    expect(subnetCidrs("10.0.0.0/16", 3)).toEqual({
      public: ["10.0.0.0/20", "10.0.16.0/20", "10.0.32.0/20"],
      private: ["10.0.64.0/18", "10.0.128.0/18", "10.0.192.0/18"],
    });
    expect(subnetCidrs("172.20.0.0/16", 2).private).toEqual(["172.20.64.0/18", "172.20.128.0/18"]);
    expect(() => subnetCidrs("10.0.0.0/20", 2)).toThrow(/cidrBlock/);
  });

  it("asks_the_nlb_for_proxy_protocol_only_when_the_listeners_expect_it", () => {
    const all = [
      { name: "http", proxyProtocol: true },
      { name: "https", proxyProtocol: true },
    ];
    expect(check(target(), { listeners: all })).toEqual([]);
    expect(gatewayServiceAnnotations("nlb", CERT, "http", true)).toEqual({
      "service.beta.kubernetes.io/aws-load-balancer-proxy-protocol": "*",
      "service.beta.kubernetes.io/aws-load-balancer-type": "nlb",
      "service.beta.kubernetes.io/aws-load-balancer-ssl-cert": CERT,
      "service.beta.kubernetes.io/aws-load-balancer-ssl-ports": "http",
    });
    expect(Object.keys(gatewayServiceAnnotations("nlb", null, "http"))).not.toContain(
      "service.beta.kubernetes.io/aws-load-balancer-proxy-protocol",
    );
  });

  it("drains_nlb_ip_targets_for_the_given_grace_period_and_leaves_the_cloud_provider_nlb_alone", () => {
    const key = "service.beta.kubernetes.io/aws-load-balancer-target-group-attributes";
    expect(gatewayServiceAnnotations("nlb-ip", null, "http", false, 40)[key]).toBe(
      "preserve_client_ip.enabled=true,deregistration_delay.timeout_seconds=40",
    );
    expect(gatewayServiceAnnotations("nlb-ip", null, "http", false, null)[key]).toBe(
      "preserve_client_ip.enabled=true",
    );
    // The in-tree cloud provider has no target-group attributes annotation: nothing is written.
    expect(Object.keys(gatewayServiceAnnotations("nlb", null, "http", false, 40))).toEqual([
      "service.beta.kubernetes.io/aws-load-balancer-type",
    ]);
  });

  it("annotates_tls_at_the_nlb_only_with_a_certificate", () => {
    expect(gatewayServiceAnnotations("nlb", null, "http")).toEqual({
      "service.beta.kubernetes.io/aws-load-balancer-type": "nlb",
    });
    expect(gatewayServiceAnnotations("nlb-ip", CERT, "http")).toEqual({
      "service.beta.kubernetes.io/aws-load-balancer-type": "external",
      "service.beta.kubernetes.io/aws-load-balancer-nlb-target-type": "ip",
      "service.beta.kubernetes.io/aws-load-balancer-scheme": "internet-facing",
      "service.beta.kubernetes.io/aws-load-balancer-target-group-attributes":
        "preserve_client_ip.enabled=true",
      "service.beta.kubernetes.io/aws-load-balancer-ssl-cert": CERT,
      "service.beta.kubernetes.io/aws-load-balancer-ssl-ports": "http",
    });
  });

  it("writes_a_kubeconfig_that_execs_aws_eks_get_token_and_holds_no_credentials", () => {
    const config = JSON.parse(
      kubeconfigOf({
        name: "c",
        endpoint: "https://x.eks",
        certificateAuthorityData: "Q0E=",
        region: "eu-west-1",
      }),
    );
    expect(config.users).toEqual([
      {
        name: "c",
        user: {
          exec: {
            apiVersion: "client.authentication.k8s.io/v1beta1",
            command: "aws",
            args: ["eks", "get-token", "--cluster-name", "c", "--region", "eu-west-1", "--output", "json"],
            interactiveMode: "Never",
          },
        },
      },
    ]);
  });

  it("scopes_iam_documents_to_one_service_account_and_one_workspace", () => {
    const trust = JSON.parse(
      irsaTrustPolicy("arn:aws:iam::1:oidc-provider/oidc.eks/id/X", "https://oidc.eks/id/X", "ns", "sa"),
    );
    expect(trust.Statement[0].Condition).toEqual({
      StringEquals: {
        "oidc.eks/id/X:sub": "system:serviceaccount:ns:sa",
        "oidc.eks/id/X:aud": "sts.amazonaws.com",
      },
    });
    expect(JSON.parse(remoteWritePolicy("arn:aws:aps:eu-west-1:1:workspace/ws-1")).Statement).toEqual([
      { Effect: "Allow", Action: ["aps:RemoteWrite"], Resource: "arn:aws:aps:eu-west-1:1:workspace/ws-1" },
    ]);
  });
});
