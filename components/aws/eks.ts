/**
 * The EKS cluster the mesh runs on: `EksCluster` (`meshgate:aws:EksCluster`) creates one, following the
 * anatomy of pulumi-eks (service role, cluster, managed node group, OIDC provider, kubeconfig, provider);
 * `ExistingEksCluster` (`meshgate:aws:ExistingEksCluster`) looks one up and creates nothing in AWS.
 * Both give a `ClusterHandle`: the name, the OIDC provider (for IRSA roles), a kubeconfig and a
 * Kubernetes provider built from it.
 *
 * The kubeconfig holds no credentials: it runs `aws eks get-token` (the AWS CLI, with the caller's AWS
 * credentials) for every connection. It is still a secret output (it names the cluster's endpoint).
 */
import * as aws from "@pulumi/aws";
import * as k8s from "@pulumi/kubernetes";
import * as pulumi from "@pulumi/pulumi";
import { CLUSTER_POLICIES, NODE_POLICIES, managedPolicyArn, serviceTrustPolicy } from "./iam.ts";
import { amiTypeOf } from "./settings.ts";

/** What the stack needs of a cluster, created or existing. */
export interface ClusterHandle {
  /** The cluster's name. */
  readonly clusterName: pulumi.Output<string>;
  /** The ARN of the cluster's IAM OIDC provider. */
  readonly oidcProviderArn: pulumi.Output<string>;
  /** The cluster's OIDC issuer URL. */
  readonly oidcIssuerUrl: pulumi.Output<string>;
  /** A kubeconfig for the cluster (secret; exec `aws eks get-token`). */
  readonly kubeconfig: pulumi.Output<string>;
  /** A Kubernetes provider built from `kubeconfig`. */
  readonly provider: k8s.Provider;
  /** What workloads must wait for (the node group of a created cluster). */
  readonly ready: pulumi.Resource[];
  /** The cluster's VPC. */
  readonly vpcId: pulumi.Output<string>;
}

/**
 * A kubeconfig (JSON, which is YAML) for an EKS cluster: its endpoint and CA, and an exec credential
 * plugin that runs `aws eks get-token --cluster-name <name> --region <region>`.
 */
export function kubeconfigOf(cluster: {
  name: string;
  endpoint: string;
  certificateAuthorityData: string;
  region: string;
}): string {
  return JSON.stringify({
    apiVersion: "v1",
    kind: "Config",
    clusters: [
      {
        name: cluster.name,
        cluster: { server: cluster.endpoint, "certificate-authority-data": cluster.certificateAuthorityData },
      },
    ],
    contexts: [{ name: cluster.name, context: { cluster: cluster.name, user: cluster.name } }],
    "current-context": cluster.name,
    users: [
      {
        name: cluster.name,
        user: {
          exec: {
            apiVersion: "client.authentication.k8s.io/v1beta1",
            command: "aws",
            args: [
              "eks",
              "get-token",
              "--cluster-name",
              cluster.name,
              "--region",
              cluster.region,
              "--output",
              "json",
            ],
            interactiveMode: "Never",
          },
        },
      },
    ],
  });
}

export interface EksClusterArgs {
  /** The cluster's name (EKS cluster names are unique per account and region). */
  clusterName: string;
  /** The region (for the kubeconfig's `aws eks get-token`). */
  region: string;
  /** The Kubernetes version, e.g. `1.33`. */
  version: string;
  /** The subnets of the control plane's network interfaces and of public load balancers. */
  publicSubnetIds: pulumi.Input<string>[];
  /** The node group's subnets: private only, the nodes have no public IPs. */
  privateSubnetIds: pulumi.Input<string>[];
  /** The nodes' instance type; a Graviton type (`m7g.large`) selects the arm64 AMI. */
  instanceType: string;
  /**
   * Whether the API endpoint is reachable from the internet (always IAM-authenticated); it is reachable
   * from the VPC either way. Without it, `pulumi up` must run where the VPC is reachable.
   * @default true
   */
  publicEndpoint?: boolean;
  /**
   * The IPv4 ranges allowed to reach the public endpoint (only with `publicEndpoint`).
   * @default ["0.0.0.0/0"]
   */
  publicAccessCidrs?: string[];
  /** The node group's size: it starts with `minNodes`. */
  minNodes: number;
  maxNodes: number;
  /**
   * Days the control plane's logs (api, audit, authenticator) are kept in CloudWatch Logs.
   * @default 30
   */
  logRetentionDays?: number;
  /** The partition of the managed policies' ARNs. @default aws */
  partition?: string;
}

/** The control plane log types sent to CloudWatch Logs. */
export const CONTROL_PLANE_LOGS = ["api", "audit", "authenticator"] as const;

/** A new EKS cluster with a managed node group in private subnets. */
export class EksCluster extends pulumi.ComponentResource implements ClusterHandle {
  readonly cluster: aws.eks.Cluster;
  readonly nodeGroup: aws.eks.NodeGroup;
  readonly clusterRole: aws.iam.Role;
  readonly nodeRole: aws.iam.Role;
  readonly oidcProvider: aws.iam.OpenIdConnectProvider;
  readonly logGroup: aws.cloudwatch.LogGroup;
  /** The `vpc-cni` add-on, with NetworkPolicy enforcement enabled. */
  readonly networkAddon: aws.eks.Addon;
  readonly clusterName: pulumi.Output<string>;
  readonly oidcProviderArn: pulumi.Output<string>;
  readonly oidcIssuerUrl: pulumi.Output<string>;
  readonly kubeconfig: pulumi.Output<string>;
  readonly provider: k8s.Provider;
  readonly ready: pulumi.Resource[];
  readonly vpcId: pulumi.Output<string>;

  /**
   * @param name The unique name; children are `<name>-cluster-role`, `<name>-node-role`, `<name>-nodes`, ….
   * @param args The cluster's name, version, subnets and nodes.
   * @param opts Options for the component (the aws provider, parent, …).
   */
  constructor(name: string, args: EksClusterArgs, opts?: pulumi.ComponentResourceOptions) {
    super("meshgate:aws:EksCluster", name, {}, opts);
    const parent = { parent: this };
    const partition = args.partition ?? "aws";

    // The service role: exactly AmazonEKSClusterPolicy.
    this.clusterRole = new aws.iam.Role(
      `${name}-cluster-role`,
      {
        assumeRolePolicy: serviceTrustPolicy("eks.amazonaws.com"),
        description: "meshgate: EKS control plane",
      },
      parent,
    );
    const clusterAttachments = attachManaged(
      `${name}-cluster`,
      this.clusterRole,
      CLUSTER_POLICIES,
      partition,
      parent,
    );
    // Created before the cluster, with a retention: EKS would create it without one.
    this.logGroup = new aws.cloudwatch.LogGroup(
      `${name}-control-plane`,
      { name: `/aws/eks/${args.clusterName}/cluster`, retentionInDays: args.logRetentionDays ?? 30 },
      parent,
    );
    this.cluster = new aws.eks.Cluster(
      `${name}-cluster`,
      {
        name: args.clusterName,
        version: args.version,
        roleArn: this.clusterRole.arn,
        vpcConfig: {
          subnetIds: [...args.privateSubnetIds, ...args.publicSubnetIds],
          endpointPrivateAccess: true,
          endpointPublicAccess: args.publicEndpoint ?? true,
          ...((args.publicEndpoint ?? true)
            ? { publicAccessCidrs: args.publicAccessCidrs ?? ["0.0.0.0/0"] }
            : {}),
        },
        accessConfig: { authenticationMode: "API", bootstrapClusterCreatorAdminPermissions: true },
        enabledClusterLogTypes: [...CONTROL_PLANE_LOGS],
      },
      { parent: this, dependsOn: [...clusterAttachments, this.logGroup] },
    );

    // The VPC CNI with its network policy agent: without it EKS does not enforce the mesh's NetworkPolicies.
    this.networkAddon = new aws.eks.Addon(
      `${name}-vpc-cni`,
      {
        clusterName: this.cluster.name,
        addonName: "vpc-cni",
        configurationValues: JSON.stringify({ enableNetworkPolicy: "true" }),
        resolveConflictsOnCreate: "OVERWRITE",
        resolveConflictsOnUpdate: "OVERWRITE",
      },
      parent,
    );

    // The node role: kubelet, the VPC CNI, ECR pulls — exactly these.
    this.nodeRole = new aws.iam.Role(
      `${name}-node-role`,
      { assumeRolePolicy: serviceTrustPolicy("ec2.amazonaws.com"), description: "meshgate: EKS nodes" },
      parent,
    );
    const nodeAttachments = attachManaged(`${name}-node`, this.nodeRole, NODE_POLICIES, partition, parent);
    this.nodeGroup = new aws.eks.NodeGroup(
      `${name}-nodes`,
      {
        clusterName: this.cluster.name,
        nodeRoleArn: this.nodeRole.arn,
        subnetIds: args.privateSubnetIds,
        instanceTypes: [args.instanceType],
        amiType: amiTypeOf(args.instanceType),
        scalingConfig: { minSize: args.minNodes, maxSize: args.maxNodes, desiredSize: args.minNodes },
        updateConfig: { maxUnavailable: 1 },
      },
      {
        parent: this,
        dependsOn: [...nodeAttachments, this.networkAddon],
        ignoreChanges: ["scalingConfig.desiredSize"],
      },
    );

    this.oidcIssuerUrl = this.cluster.identities.apply((ids) => {
      const issuer = ids?.[0]?.oidcs?.[0]?.issuer;
      if (!issuer) throw new Error(`EKS cluster ${args.clusterName} reports no OIDC issuer`);
      return issuer;
    });
    this.oidcProvider = new aws.iam.OpenIdConnectProvider(
      `${name}-oidc`,
      { url: this.oidcIssuerUrl, clientIdLists: ["sts.amazonaws.com"] },
      parent,
    );
    this.oidcProviderArn = this.oidcProvider.arn;
    this.clusterName = this.cluster.name;
    this.vpcId = this.cluster.vpcConfig.vpcId;
    this.kubeconfig = pulumi.secret(
      pulumi
        .all([this.cluster.name, this.cluster.endpoint, this.cluster.certificateAuthority])
        .apply(([clusterName, endpoint, ca]) =>
          kubeconfigOf({
            name: clusterName,
            endpoint,
            certificateAuthorityData: ca.data ?? "",
            region: args.region,
          }),
        ),
    );
    this.provider = new k8s.Provider(
      `${name}-k8s`,
      { kubeconfig: this.kubeconfig, enableServerSideApply: true },
      { parent: this, dependsOn: [this.nodeGroup] },
    );
    this.ready = [this.nodeGroup];
    this.registerOutputs({
      clusterName: this.clusterName,
      oidcProviderArn: this.oidcProviderArn,
      kubeconfig: this.kubeconfig,
    });
  }
}

export interface ExistingEksClusterArgs {
  /** The existing cluster's name. */
  clusterName: string;
  /** Its region. */
  region: string;
}

/**
 * An existing EKS cluster, looked up (`aws.eks.getCluster`) with its IAM OIDC provider (by issuer URL:
 * the cluster must have one, `eksctl utils associate-iam-oidc-provider` creates it). Creates only the
 * Kubernetes provider.
 */
export class ExistingEksCluster extends pulumi.ComponentResource implements ClusterHandle {
  readonly clusterName: pulumi.Output<string>;
  readonly oidcProviderArn: pulumi.Output<string>;
  readonly oidcIssuerUrl: pulumi.Output<string>;
  readonly kubeconfig: pulumi.Output<string>;
  readonly provider: k8s.Provider;
  readonly ready: pulumi.Resource[] = [];
  readonly vpcId: pulumi.Output<string>;

  /**
   * @param name The unique name; the Kubernetes provider is `<name>-k8s`.
   * @param args The cluster's name and region.
   * @param opts Options for the component (the aws provider, parent, …).
   */
  constructor(name: string, args: ExistingEksClusterArgs, opts?: pulumi.ComponentResourceOptions) {
    super("meshgate:aws:ExistingEksCluster", name, {}, opts);
    const cluster = aws.eks.getClusterOutput({ name: args.clusterName }, { parent: this });
    this.clusterName = cluster.name;
    this.vpcId = cluster.vpcConfig.vpcId;
    this.oidcIssuerUrl = cluster.identities.apply((ids) => {
      const issuer = ids?.[0]?.oidcs?.[0]?.issuer;
      if (!issuer)
        throw new Error(
          `targets.aws.cluster.existing: EKS cluster ${args.clusterName} reports no OIDC issuer`,
        );
      return issuer;
    });
    this.oidcProviderArn = aws.iam.getOpenIdConnectProviderOutput(
      { url: this.oidcIssuerUrl },
      { parent: this },
    ).arn;
    this.kubeconfig = pulumi.secret(
      pulumi
        .all([cluster.name, cluster.endpoint, cluster.certificateAuthorities])
        .apply(([n, endpoint, cas]) =>
          kubeconfigOf({
            name: n,
            endpoint,
            certificateAuthorityData: cas[0]?.data ?? "",
            region: args.region,
          }),
        ),
    );
    this.provider = new k8s.Provider(
      `${name}-k8s`,
      { kubeconfig: this.kubeconfig, enableServerSideApply: true },
      { parent: this },
    );
    this.registerOutputs({ clusterName: this.clusterName, oidcProviderArn: this.oidcProviderArn });
  }
}

/** One attachment per AWS-managed policy, named `<prefix>-<policy in lower case>`. */
function attachManaged(
  prefix: string,
  role: aws.iam.Role,
  policies: readonly string[],
  partition: string,
  opts: pulumi.CustomResourceOptions,
): aws.iam.RolePolicyAttachment[] {
  return policies.map(
    (p) =>
      new aws.iam.RolePolicyAttachment(
        `${prefix}-${p.toLowerCase()}`,
        { role: role.name, policyArn: managedPolicyArn(partition, p) },
        opts,
      ),
  );
}
