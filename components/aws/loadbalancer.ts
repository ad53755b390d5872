/**
 * `LoadBalancerController` (`meshgate:aws:LoadBalancerController`): the AWS Load Balancer Controller on an
 * EKS cluster — the Helm chart `aws-load-balancer-controller` from `https://aws.github.io/eks-charts` in
 * `kube-system`, with its own IRSA role carrying the controller's documented IAM policy, trusted by the
 * controller's ServiceAccount only. The `nlb-ip` load balancer mode needs it: the gateway's Service is then a
 * Network Load Balancer with IP targets (the pods, no NodePort hop) that the controller provisions.
 *
 * Choices (docs/aws.md): the region and VPC are set explicitly (the controller otherwise asks the instance
 * metadata service, which a hop limit of 1 hides from pods); the Service mutator webhook is off, so the
 * controller does not take over other LoadBalancer Services of an existing cluster; two replicas with a
 * disruption budget; the load balancers it creates carry the stack's tags.
 */
import * as k8s from "@pulumi/kubernetes";
import * as pulumi from "@pulumi/pulumi";
import { IrsaRole } from "./iam.ts";

/** The controller's ServiceAccount (the IRSA role trusts exactly this one). */
export const LOAD_BALANCER_CONTROLLER = {
  namespace: "kube-system",
  serviceAccount: "aws-load-balancer-controller",
} as const;

/** The chart and the version installed unless `chartVersion` says otherwise (controller v2.14.0). */
export const LOAD_BALANCER_CONTROLLER_CHART = {
  chart: "aws-load-balancer-controller",
  repo: "https://aws.github.io/eks-charts",
  version: "1.14.0",
} as const;

/** The tag the controller puts on every resource it creates, and requires on the ones it changes. */
const CLUSTER_TAG = "elbv2.k8s.aws/cluster";

type Statement = {
  Effect: "Allow";
  Action: string[];
  Resource: string | string[];
  Condition?: Record<string, Record<string, string | string[]>>;
};

/**
 * The controller's IAM policy (the one its installation guide publishes for v2.14, written out here
 * statement by statement): read what it discovers (subnets, security groups, certificates, load
 * balancers), and change only what carries its cluster tag — it creates security groups, load balancers
 * and target groups tagged `elbv2.k8s.aws/cluster`, and modifies or deletes only resources so tagged.
 * Named actions only: no `*`, no `service:*` (the pack's `aws-iam-no-wildcard-actions` holds).
 */
export function loadBalancerControllerPolicy(partition: string): string {
  const elb = (resource: string) => `arn:${partition}:elasticloadbalancing:*:*:${resource}`;
  const securityGroups = `arn:${partition}:ec2:*:*:security-group/*`;
  const loadBalancers = [elb("targetgroup/*/*"), elb("loadbalancer/net/*/*"), elb("loadbalancer/app/*/*")];
  const tagged = { Null: { [`aws:ResourceTag/${CLUSTER_TAG}`]: "false" } };
  const creatingTagged = { Null: { [`aws:RequestTag/${CLUSTER_TAG}`]: "false" } };
  const retagging = {
    Null: { [`aws:RequestTag/${CLUSTER_TAG}`]: "true", [`aws:ResourceTag/${CLUSTER_TAG}`]: "false" },
  };
  const statements: Statement[] = [
    {
      Effect: "Allow",
      Action: ["iam:CreateServiceLinkedRole"],
      Resource: "*",
      Condition: { StringEquals: { "iam:AWSServiceName": "elasticloadbalancing.amazonaws.com" } },
    },
    {
      Effect: "Allow",
      Action: [
        ...[
          "DescribeAccountAttributes",
          "DescribeAddresses",
          "DescribeAvailabilityZones",
          "DescribeInternetGateways",
          "DescribeVpcs",
          "DescribeVpcPeeringConnections",
          "DescribeSubnets",
          "DescribeSecurityGroups",
          "DescribeInstances",
          "DescribeNetworkInterfaces",
          "DescribeTags",
          "GetCoipPoolUsage",
          "DescribeCoipPools",
          "GetSecurityGroupsForVpc",
          "DescribeIpamPools",
          "DescribeRouteTables",
        ].map((a) => `ec2:${a}`),
        ...[
          "DescribeLoadBalancers",
          "DescribeLoadBalancerAttributes",
          "DescribeListeners",
          "DescribeListenerCertificates",
          "DescribeSSLPolicies",
          "DescribeRules",
          "DescribeTargetGroups",
          "DescribeTargetGroupAttributes",
          "DescribeTargetHealth",
          "DescribeTags",
          "DescribeTrustStores",
          "DescribeListenerAttributes",
          "DescribeCapacityReservation",
        ].map((a) => `elasticloadbalancing:${a}`),
      ],
      Resource: "*",
    },
    {
      // What Ingress (ALB) features look up and attach: certificates, WAF, Shield, Cognito.
      Effect: "Allow",
      Action: [
        "cognito-idp:DescribeUserPoolClient",
        "acm:ListCertificates",
        "acm:DescribeCertificate",
        "iam:ListServerCertificates",
        "iam:GetServerCertificate",
        "waf-regional:GetWebACL",
        "waf-regional:GetWebACLForResource",
        "waf-regional:AssociateWebACL",
        "waf-regional:DisassociateWebACL",
        "wafv2:GetWebACL",
        "wafv2:GetWebACLForResource",
        "wafv2:AssociateWebACL",
        "wafv2:DisassociateWebACL",
        "shield:GetSubscriptionState",
        "shield:DescribeProtection",
        "shield:CreateProtection",
        "shield:DeleteProtection",
      ],
      Resource: "*",
    },
    {
      // Rules on the nodes' and pods' security groups, which the controller does not own.
      Effect: "Allow",
      Action: ["ec2:AuthorizeSecurityGroupIngress", "ec2:RevokeSecurityGroupIngress"],
      Resource: "*",
    },
    { Effect: "Allow", Action: ["ec2:CreateSecurityGroup"], Resource: "*" },
    {
      Effect: "Allow",
      Action: ["ec2:CreateTags"],
      Resource: securityGroups,
      Condition: { StringEquals: { "ec2:CreateAction": "CreateSecurityGroup" }, ...creatingTagged },
    },
    {
      Effect: "Allow",
      Action: ["ec2:CreateTags", "ec2:DeleteTags"],
      Resource: securityGroups,
      Condition: retagging,
    },
    {
      Effect: "Allow",
      Action: [
        "ec2:AuthorizeSecurityGroupIngress",
        "ec2:RevokeSecurityGroupIngress",
        "ec2:DeleteSecurityGroup",
      ],
      Resource: "*",
      Condition: tagged,
    },
    {
      Effect: "Allow",
      Action: ["elasticloadbalancing:CreateLoadBalancer", "elasticloadbalancing:CreateTargetGroup"],
      Resource: "*",
      Condition: creatingTagged,
    },
    {
      Effect: "Allow",
      Action: [
        "elasticloadbalancing:CreateListener",
        "elasticloadbalancing:DeleteListener",
        "elasticloadbalancing:CreateRule",
        "elasticloadbalancing:DeleteRule",
      ],
      Resource: "*",
    },
    {
      Effect: "Allow",
      Action: ["elasticloadbalancing:AddTags", "elasticloadbalancing:RemoveTags"],
      Resource: loadBalancers,
      Condition: retagging,
    },
    {
      Effect: "Allow",
      Action: ["elasticloadbalancing:AddTags", "elasticloadbalancing:RemoveTags"],
      Resource: [
        elb("listener/net/*/*/*"),
        elb("listener/app/*/*/*"),
        elb("listener-rule/net/*/*/*"),
        elb("listener-rule/app/*/*/*"),
      ],
    },
    {
      Effect: "Allow",
      Action: [
        "ModifyLoadBalancerAttributes",
        "SetIpAddressType",
        "SetSecurityGroups",
        "SetSubnets",
        "DeleteLoadBalancer",
        "ModifyTargetGroup",
        "ModifyTargetGroupAttributes",
        "DeleteTargetGroup",
        "ModifyListenerAttributes",
        "ModifyCapacityReservation",
        "ModifyIpPools",
      ].map((a) => `elasticloadbalancing:${a}`),
      Resource: "*",
      Condition: tagged,
    },
    {
      // Tags in the same call that creates the load balancer or target group.
      Effect: "Allow",
      Action: ["elasticloadbalancing:AddTags"],
      Resource: loadBalancers,
      Condition: {
        StringEquals: { "elasticloadbalancing:CreateAction": ["CreateTargetGroup", "CreateLoadBalancer"] },
        ...creatingTagged,
      },
    },
    {
      Effect: "Allow",
      Action: ["elasticloadbalancing:RegisterTargets", "elasticloadbalancing:DeregisterTargets"],
      Resource: elb("targetgroup/*/*"),
    },
    {
      Effect: "Allow",
      Action: [
        "elasticloadbalancing:SetWebAcl",
        "elasticloadbalancing:ModifyListener",
        "elasticloadbalancing:AddListenerCertificates",
        "elasticloadbalancing:RemoveListenerCertificates",
        "elasticloadbalancing:ModifyRule",
        "elasticloadbalancing:SetRulePriorities",
      ],
      Resource: "*",
    },
  ];
  return JSON.stringify({ Version: "2012-10-17", Statement: statements });
}

export interface LoadBalancerControllerArgs {
  /** The cluster's name (the controller tags what it creates with it and finds subnets by it). */
  clusterName: pulumi.Input<string>;
  /** The cluster's region. */
  region: string;
  /** The cluster's VPC. */
  vpcId: pulumi.Input<string>;
  /** The ARN of the cluster's IAM OIDC provider. */
  oidcProviderArn: pulumi.Input<string>;
  /** The cluster's OIDC issuer URL. */
  oidcIssuerUrl: pulumi.Input<string>;
  /** The cluster's Kubernetes provider (for the Helm release). */
  provider: k8s.Provider;
  /** The partition of the policy's ARNs. @default aws */
  partition?: string;
  /**
   * The chart version (`helm search repo eks/aws-load-balancer-controller --versions`).
   * @default LOAD_BALANCER_CONTROLLER_CHART.version
   */
  chartVersion?: string;
  /**
   * Controller replicas (one is the leader; a disruption budget keeps one running through node drains).
   * @default 2
   */
  replicas?: number;
  /**
   * Tags on every AWS resource the controller creates (load balancers, target groups, security groups).
   * @default none
   */
  tags?: Record<string, string>;
  /** What the release waits for (nodes to run on). @default nothing */
  dependsOn?: pulumi.Resource[];
}

/** The AWS Load Balancer Controller, installed with Helm, with its own IAM role. */
export class LoadBalancerController extends pulumi.ComponentResource {
  /** The controller's IRSA role. */
  readonly role: IrsaRole;
  /** The Helm release (`aws-load-balancer-controller` in `kube-system`). */
  readonly release: k8s.helm.v3.Release;

  /**
   * @param name The unique name; the role is `<name>-controller`, the Helm release `<name>`.
   * @param args The cluster (name, region, VPC, OIDC provider, Kubernetes provider).
   * @param opts Options for the component (the aws provider, parent, …).
   */
  constructor(name: string, args: LoadBalancerControllerArgs, opts?: pulumi.ComponentResourceOptions) {
    super("meshgate:aws:LoadBalancerController", name, {}, opts);
    const partition = args.partition ?? "aws";
    const replicas = args.replicas ?? 2;
    if (!Number.isInteger(replicas) || replicas < 1)
      throw new Error(
        `LoadBalancerController ${name}: replicas must be a whole number ≥ 1 (got ${replicas})`,
      );
    this.role = new IrsaRole(
      `${name}-controller`,
      {
        oidcProviderArn: args.oidcProviderArn,
        oidcIssuerUrl: args.oidcIssuerUrl,
        ...LOAD_BALANCER_CONTROLLER,
        policy: loadBalancerControllerPolicy(partition),
        partition,
      },
      { parent: this },
    );
    this.release = new k8s.helm.v3.Release(
      name,
      {
        name: LOAD_BALANCER_CONTROLLER.serviceAccount,
        namespace: LOAD_BALANCER_CONTROLLER.namespace,
        chart: LOAD_BALANCER_CONTROLLER_CHART.chart,
        version: args.chartVersion ?? LOAD_BALANCER_CONTROLLER_CHART.version,
        repositoryOpts: { repo: LOAD_BALANCER_CONTROLLER_CHART.repo },
        values: {
          clusterName: args.clusterName,
          region: args.region,
          vpcId: args.vpcId,
          replicaCount: replicas,
          serviceAccount: {
            create: true,
            name: LOAD_BALANCER_CONTROLLER.serviceAccount,
            annotations: { "eks.amazonaws.com/role-arn": this.role.arn },
          },
          enableServiceMutatorWebhook: false,
          ...(replicas > 1 ? { podDisruptionBudget: { maxUnavailable: 1 } } : {}),
          ...(args.tags && Object.keys(args.tags).length > 0 ? { defaultTags: args.tags } : {}),
        },
        // Ready means the webhook answers: a Service created before it would be refused.
        atomic: true,
        cleanupOnFail: true,
      },
      { parent: this, provider: args.provider, dependsOn: [this.role, ...(args.dependsOn ?? [])] },
    );
    this.registerOutputs({ role: this.role.arn, release: this.release.status });
  }
}
