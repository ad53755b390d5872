/**
 * IAM for the AWS target: the AWS-managed policies EKS needs (exactly these, nothing broader), trust
 * policies for AWS services, and `IrsaRole` (`meshgate:aws:IrsaRole`) — an IAM role that exactly one
 * Kubernetes ServiceAccount assumes through the cluster's OIDC provider (IAM roles for service accounts).
 */
import * as aws from "@pulumi/aws";
import * as pulumi from "@pulumi/pulumi";

/** The AWS-managed policy ARN of a name in a partition. */
export const managedPolicyArn = (partition: string, name: string): string =>
  `arn:${partition}:iam::aws:policy/${name}`;

/** The managed policies of the EKS cluster role: exactly this one. */
export const CLUSTER_POLICIES = ["AmazonEKSClusterPolicy"] as const;
/** The managed policies of the node role: kubelet, the VPC CNI, image pulls from ECR. */
export const NODE_POLICIES = [
  "AmazonEKSWorkerNodePolicy",
  "AmazonEKS_CNI_Policy",
  "AmazonEC2ContainerRegistryReadOnly",
] as const;

/** A trust policy letting an AWS service (`eks.amazonaws.com`, `ec2.amazonaws.com`) assume the role. */
export function serviceTrustPolicy(service: string): string {
  return JSON.stringify({
    Version: "2012-10-17",
    Statement: [{ Effect: "Allow", Principal: { Service: service }, Action: "sts:AssumeRole" }],
  });
}

/** The OIDC issuer as IAM condition keys name it: the URL without `https://`. */
export const issuerHost = (issuerUrl: string): string => issuerUrl.replace(/^https:\/\//, "");

/**
 * The trust policy of an IRSA role: the cluster's OIDC provider may assume it for exactly one
 * ServiceAccount (`<issuer>:sub`) and the STS audience (`<issuer>:aud`).
 */
export function irsaTrustPolicy(
  oidcProviderArn: string,
  issuerUrl: string,
  namespace: string,
  serviceAccount: string,
): string {
  const host = issuerHost(issuerUrl);
  return JSON.stringify({
    Version: "2012-10-17",
    Statement: [
      {
        Effect: "Allow",
        Principal: { Federated: oidcProviderArn },
        Action: "sts:AssumeRoleWithWebIdentity",
        Condition: {
          StringEquals: {
            [`${host}:sub`]: `system:serviceaccount:${namespace}:${serviceAccount}`,
            [`${host}:aud`]: "sts.amazonaws.com",
          },
        },
      },
    ],
  });
}

export interface IrsaRoleArgs {
  /** The ARN of the cluster's IAM OIDC provider. */
  oidcProviderArn: pulumi.Input<string>;
  /** The cluster's OIDC issuer URL (`https://oidc.eks.<region>.amazonaws.com/id/<id>`). */
  oidcIssuerUrl: pulumi.Input<string>;
  /** The namespace of the ServiceAccount that assumes the role. */
  namespace: string;
  /** The ServiceAccount that assumes the role. */
  serviceAccount: string;
  /**
   * The role's inline policy (a JSON policy document): what the workload may do.
   * @default none
   */
  policy?: pulumi.Input<string>;
  /**
   * AWS-managed policies to attach, by name (e.g. `CloudWatchAgentServerPolicy`).
   * @default none
   */
  managedPolicies?: readonly string[];
  /** The partition of the managed policies' ARNs. @default aws */
  partition?: string;
}

/** An IAM role for one Kubernetes ServiceAccount (IRSA). */
export class IrsaRole extends pulumi.ComponentResource {
  /** The role. */
  readonly role: aws.iam.Role;
  /** The role's ARN: the ServiceAccount's `eks.amazonaws.com/role-arn` annotation. */
  readonly arn: pulumi.Output<string>;

  /**
   * @param name The unique name; the role is `<name>` (its physical name derives from it), its
   *   inline policy `<name>-policy`, each attachment `<name>-<policy name>`.
   * @param args The OIDC provider, the ServiceAccount, and the permissions.
   * @param opts Options for the component (the aws provider, parent, …).
   */
  constructor(name: string, args: IrsaRoleArgs, opts?: pulumi.ComponentResourceOptions) {
    super("meshgate:aws:IrsaRole", name, {}, opts);
    this.role = new aws.iam.Role(
      name,
      {
        assumeRolePolicy: pulumi
          .all([args.oidcProviderArn, args.oidcIssuerUrl])
          .apply(([arn, issuer]) => irsaTrustPolicy(arn, issuer, args.namespace, args.serviceAccount)),
        description: `meshgate: assumed by ServiceAccount ${args.namespace}/${args.serviceAccount}`,
      },
      { parent: this },
    );
    if (args.policy !== undefined)
      new aws.iam.RolePolicy(
        `${name}-policy`,
        { role: this.role.name, policy: args.policy },
        { parent: this },
      );
    for (const policy of args.managedPolicies ?? [])
      new aws.iam.RolePolicyAttachment(
        `${name}-${policy.slice(policy.lastIndexOf("/") + 1).toLowerCase()}`,
        { role: this.role.name, policyArn: managedPolicyArn(args.partition ?? "aws", policy) },
        { parent: this },
      );
    this.arn = this.role.arn;
    this.registerOutputs({ arn: this.arn });
  }
}
