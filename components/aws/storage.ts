/**
 * `BlockStorage` (`meshgate:aws:BlockStorage`): persistent volumes on a created EKS cluster — the
 * `aws-ebs-csi-driver` EKS add-on with its own IRSA role (the AWS-managed `AmazonEBSCSIDriverPolicy`,
 * for the controller's ServiceAccount `kube-system/ebs-csi-controller-sa`) and a default StorageClass
 * `gp3` (encrypted, bound when the pod is scheduled, in its zone). The bundled Prometheus' volume claim
 * needs it: a new EKS cluster has no CSI driver and no default StorageClass.
 */
import * as aws from "@pulumi/aws";
import * as k8s from "@pulumi/kubernetes";
import * as pulumi from "@pulumi/pulumi";
import { IrsaRole } from "./iam.ts";

/** The EBS CSI controller's ServiceAccount. */
export const EBS_CSI_CONTROLLER = {
  namespace: "kube-system",
  serviceAccount: "ebs-csi-controller-sa",
} as const;

export interface BlockStorageArgs {
  clusterName: pulumi.Input<string>;
  oidcProviderArn: pulumi.Input<string>;
  oidcIssuerUrl: pulumi.Input<string>;
  /** The cluster's Kubernetes provider (for the StorageClass). */
  provider: k8s.Provider;
  /** The partition of the managed policy's ARN. @default aws */
  partition?: string;
  /** What the add-on waits for (nodes to run on). @default nothing */
  dependsOn?: pulumi.Resource[];
}

export class BlockStorage extends pulumi.ComponentResource {
  readonly addon: aws.eks.Addon;
  readonly storageClass: k8s.storage.v1.StorageClass;

  /**
   * @param name The unique name; the add-on is `<name>`, its role `<name>-driver`, the StorageClass `<name>-gp3`.
   * @param args The cluster, its OIDC provider and Kubernetes provider.
   * @param opts Options for the component (the aws provider, parent, …).
   */
  constructor(name: string, args: BlockStorageArgs, opts?: pulumi.ComponentResourceOptions) {
    super("meshgate:aws:BlockStorage", name, {}, opts);
    const role = new IrsaRole(
      `${name}-driver`,
      {
        oidcProviderArn: args.oidcProviderArn,
        oidcIssuerUrl: args.oidcIssuerUrl,
        ...EBS_CSI_CONTROLLER,
        managedPolicies: ["service-role/AmazonEBSCSIDriverPolicy"],
        partition: args.partition ?? "aws",
      },
      { parent: this },
    );
    this.addon = new aws.eks.Addon(
      name,
      {
        clusterName: args.clusterName,
        addonName: "aws-ebs-csi-driver",
        serviceAccountRoleArn: role.arn,
        resolveConflictsOnCreate: "OVERWRITE",
        resolveConflictsOnUpdate: "OVERWRITE",
      },
      { parent: this, dependsOn: [role, ...(args.dependsOn ?? [])] },
    );
    this.storageClass = new k8s.storage.v1.StorageClass(
      `${name}-gp3`,
      {
        metadata: { name: "gp3", annotations: { "storageclass.kubernetes.io/is-default-class": "true" } },
        provisioner: "ebs.csi.aws.com",
        parameters: { type: "gp3", encrypted: "true" },
        volumeBindingMode: "WaitForFirstConsumer",
        reclaimPolicy: "Delete",
        allowVolumeExpansion: true,
      },
      { parent: this, provider: args.provider, dependsOn: [this.addon] },
    );
    this.registerOutputs({ addon: this.addon.arn, storageClass: "gp3" });
  }
}
