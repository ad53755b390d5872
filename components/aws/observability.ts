/**
 * Observability on AWS: `ManagedPrometheus` (`meshgate:aws:ManagedPrometheus`) — an Amazon Managed
 * Service for Prometheus workspace and the IRSA role the bundled Prometheus remote-writes with (only
 * `aps:RemoteWrite`, only on that workspace) — and `ContainerLogs` (`meshgate:aws:ContainerLogs`) — the
 * `amazon-cloudwatch-observability` EKS add-on (the CloudWatch agent and Fluent Bit: container logs to
 * CloudWatch Logs) with its own IRSA role holding the AWS-managed `CloudWatchAgentServerPolicy`.
 */
import * as aws from "@pulumi/aws";
import * as pulumi from "@pulumi/pulumi";
import { IrsaRole } from "./iam.ts";

/** The policy of the remote-write role: `aps:RemoteWrite` on one workspace. */
export function remoteWritePolicy(workspaceArn: string): string {
  return JSON.stringify({
    Version: "2012-10-17",
    Statement: [{ Effect: "Allow", Action: ["aps:RemoteWrite"], Resource: workspaceArn }],
  });
}

export interface ManagedPrometheusArgs {
  /** The cluster's OIDC provider and issuer (for the IRSA role). */
  oidcProviderArn: pulumi.Input<string>;
  oidcIssuerUrl: pulumi.Input<string>;
  /** The Prometheus ServiceAccount that writes: its namespace and name. */
  namespace: string;
  serviceAccount: string;
}

export class ManagedPrometheus extends pulumi.ComponentResource {
  readonly workspace: aws.amp.Workspace;
  /** The workspace's Prometheus endpoint (`https://aps-workspaces.<region>.amazonaws.com/workspaces/<id>/`). */
  readonly endpoint: pulumi.Output<string>;
  /** Where Prometheus remote-writes: `<endpoint>api/v1/remote_write`. */
  readonly remoteWriteUrl: pulumi.Output<string>;
  /** The IRSA role of the writer. */
  readonly writer: IrsaRole;

  /**
   * @param name The unique name; the workspace is `<name>` (its alias too), the role `<name>-writer`.
   * @param args The OIDC provider and the writing ServiceAccount.
   * @param opts Options for the component (the aws provider, parent, …).
   */
  constructor(name: string, args: ManagedPrometheusArgs, opts?: pulumi.ComponentResourceOptions) {
    super("meshgate:aws:ManagedPrometheus", name, {}, opts);
    this.workspace = new aws.amp.Workspace(name, { alias: name }, { parent: this });
    this.endpoint = this.workspace.prometheusEndpoint;
    this.remoteWriteUrl = this.endpoint.apply((e) => `${e.replace(/\/?$/, "/")}api/v1/remote_write`);
    this.writer = new IrsaRole(
      `${name}-writer`,
      {
        oidcProviderArn: args.oidcProviderArn,
        oidcIssuerUrl: args.oidcIssuerUrl,
        namespace: args.namespace,
        serviceAccount: args.serviceAccount,
        policy: this.workspace.arn.apply(remoteWritePolicy),
      },
      { parent: this },
    );
    this.registerOutputs({
      endpoint: this.endpoint,
      remoteWriteUrl: this.remoteWriteUrl,
      writerArn: this.writer.arn,
    });
  }
}

/** The add-on's ServiceAccount (the CloudWatch agent's). */
export const CLOUDWATCH_AGENT = {
  namespace: "amazon-cloudwatch",
  serviceAccount: "cloudwatch-agent",
} as const;

export interface ContainerLogsArgs {
  clusterName: pulumi.Input<string>;
  oidcProviderArn: pulumi.Input<string>;
  oidcIssuerUrl: pulumi.Input<string>;
  /** The partition of the managed policy's ARN. @default aws */
  partition?: string;
  /** What the add-on waits for (nodes to run on). @default nothing */
  dependsOn?: pulumi.Resource[];
}

export class ContainerLogs extends pulumi.ComponentResource {
  readonly addon: aws.eks.Addon;
  readonly role: IrsaRole;

  /**
   * @param name The unique name; the add-on is `<name>`, its role `<name>-agent`.
   * @param args The cluster, its OIDC provider and what to wait for.
   * @param opts Options for the component (the aws provider, parent, …).
   */
  constructor(name: string, args: ContainerLogsArgs, opts?: pulumi.ComponentResourceOptions) {
    super("meshgate:aws:ContainerLogs", name, {}, opts);
    this.role = new IrsaRole(
      `${name}-agent`,
      {
        oidcProviderArn: args.oidcProviderArn,
        oidcIssuerUrl: args.oidcIssuerUrl,
        ...CLOUDWATCH_AGENT,
        managedPolicies: ["CloudWatchAgentServerPolicy"],
        partition: args.partition ?? "aws",
      },
      { parent: this },
    );
    this.addon = new aws.eks.Addon(
      name,
      {
        clusterName: args.clusterName,
        addonName: "amazon-cloudwatch-observability",
        serviceAccountRoleArn: this.role.arn,
        resolveConflictsOnCreate: "OVERWRITE",
        resolveConflictsOnUpdate: "OVERWRITE",
      },
      { parent: this, dependsOn: [this.role, ...(args.dependsOn ?? [])] },
    );
    this.registerOutputs({ addon: this.addon.arn, roleArn: this.role.arn });
  }
}
