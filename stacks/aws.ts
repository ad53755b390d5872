/**
 * The AWS stack program (`meshgate:target: aws`): the mesh of the spec at `meshgate:spec` on Amazon EKS.
 *
 * From the spec's `targets.aws` (region, availability zones, cluster, managedPrometheus, certificateArn):
 * a VPC over 2–3 zones (`Network`), an EKS cluster with a managed node group in the private subnets
 * (`EksCluster`) or an existing cluster (`ExistingEksCluster`), an ECR repository with the runtime image
 * built and pushed (`RuntimeRegistry`), an Amazon Managed Prometheus workspace the bundled Prometheus
 * remote-writes to (`ManagedPrometheus`), container logs to CloudWatch (`ContainerLogs`), EBS volumes
 * on a created cluster (`BlockStorage`: the EBS CSI driver and a default gp3 StorageClass), the AWS Load
 * Balancer Controller when `nlb-ip` needs it (`LoadBalancerController`), and the `Platform` on the
 * cluster, its gateway behind a Network Load Balancer.
 *
 * Every AWS resource is created with one explicit aws provider in the spec's region whose default tags
 * are `meshgate:mesh`, `meshgate:stack` and `managed-by: meshgate`; every name starts with
 * `<mesh>-<stack>`. Stack config (besides the Kubernetes stack's meshgate:spec, namespace, identities,
 * observability, caRotation):
 *   meshgate:awsLoadBalancer   nlb (default: the cloud provider's NLB) | nlb-ip (the AWS Load Balancer Controller's)
 *   meshgate:awsLoadBalancerController  true | false: install the controller (default: for nlb-ip on a created cluster)
 *   meshgate:awsNatGateways    single (default) | perZone
 *   meshgate:awsContainerLogs  true (default) | false: the amazon-cloudwatch-observability add-on
 *   meshgate:awsEcrForceDelete true (default) | false: whether destroy deletes the repository's images
 *
 * Invalid settings stop the update before any resource, each naming its field.
 */
import * as aws from "@pulumi/aws";
import * as pulumi from "@pulumi/pulumi";
import {
  BlockStorage,
  ContainerLogs,
  EksCluster,
  ExistingEksCluster,
  LoadBalancerController,
  ManagedPrometheus,
  Network,
  RuntimeRegistry,
  awsSettingErrors,
  defaultTags,
  gatewayServiceAnnotations,
  imagePlatformOf,
  installsLoadBalancerController,
  meshNamespaceLabels,
  namePrefix,
  partitionOf,
  type ClusterHandle,
  type LoadBalancerMode,
} from "../components/aws/index.ts";
import { LABELS } from "../components/kubernetes/index.ts";
import { resolve } from "../components/kubernetes/model.ts";
import { Platform, preparePlatform } from "../components/pulumi/index.ts";
import { platformArgsFromConfig } from "./index.ts";

const LOAD_BALANCERS = ["nlb", "nlb-ip"] as const;
const NAT = ["single", "perZone"] as const;
/** The bundled Prometheus' ServiceAccount (components/kubernetes/observability.ts). */
const PROMETHEUS_SA = "prometheus";

function invalid(specPath: string, errors: pulumi.InputPropertyErrorDetails[]): never {
  throw new pulumi.InputPropertiesError({
    message: `meshgate: ${specPath} cannot be deployed on AWS (${errors.length} problem${errors.length === 1 ? "" : "s"})`,
    errors,
  });
}

export default async function awsProgram(): Promise<Record<string, unknown>> {
  const config = new pulumi.Config("meshgate");
  const { specPath, args: base } = await platformArgsFromConfig(config);
  const loadBalancer: LoadBalancerMode =
    config.get("awsLoadBalancer", { allowedValues: [...LOAD_BALANCERS] }) ?? "nlb";
  const natGateways = config.get("awsNatGateways", { allowedValues: [...NAT] }) ?? "single";
  const containerLogs = config.getBoolean("awsContainerLogs") ?? true;
  const forceDelete = config.getBoolean("awsEcrForceDelete") ?? true;
  const controllerConfigured = config.getBoolean("awsLoadBalancerController");

  // The spec first, then the AWS settings: both before any resource.
  const checked = preparePlatform(base);
  if (Array.isArray(checked)) invalid(specPath, checked);
  const { infra } = checked.result;
  const gatewayListeners = checked.result.runtime.gateway?.listeners ?? [];
  const resolved = resolve(checked.result, checked.chart);
  const errors = awsSettingErrors({
    aws: infra.targets.aws,
    gatewayServiceType: infra.targets.kubernetes?.gatewayServiceType ?? "LoadBalancer",
    observability: resolved.observability,
    loadBalancer,
    ...(controllerConfigured !== undefined ? { loadBalancerController: controllerConfigured } : {}),
    gatewayListeners: gatewayListeners.map((l) => ({
      name: l.name,
      proxyProtocol: l.proxyProtocol === true,
    })),
  });
  if (errors.length > 0) invalid(specPath, errors);
  const target = infra.targets.aws!;

  const stack = pulumi.getStack();
  const prefix = namePrefix(infra.name, stack);
  const partition = partitionOf(target.region);
  const awsProvider = new aws.Provider(`${prefix}-aws`, {
    region: target.region as aws.Region,
    defaultTags: { tags: defaultTags(infra.name, stack) },
  });
  const withAws = { providers: { aws: awsProvider } };

  // The cluster: created in a new VPC, or an existing one.
  const cluster: ClusterHandle =
    target.cluster.kind === "create"
      ? (() => {
          const spec = target.cluster;
          const network = new Network(
            prefix,
            { availabilityZones: target.availabilityZones, clusterName: prefix, natGateways },
            withAws,
          );
          return new EksCluster(
            prefix,
            {
              clusterName: prefix,
              region: target.region,
              version: spec.version,
              publicSubnetIds: network.publicSubnetIds,
              privateSubnetIds: network.privateSubnetIds,
              instanceType: spec.instanceType,
              minNodes: spec.minNodes,
              maxNodes: spec.maxNodes,
              publicEndpoint: spec.publicEndpoint,
              publicAccessCidrs: spec.publicAccessCidrs,
              partition,
            },
            withAws,
          );
        })()
      : new ExistingEksCluster(prefix, { clusterName: target.cluster.name, region: target.region }, withAws);

  // An existing cluster's nodes are assumed x86-64 unless meshgate:awsImagePlatform says otherwise.
  const platform =
    target.cluster.kind === "create"
      ? imagePlatformOf(target.cluster.instanceType)
      : ((config.get("awsImagePlatform", { allowedValues: ["linux/amd64", "linux/arm64"] }) as
          "linux/amd64" | "linux/arm64" | undefined) ?? "linux/amd64");
  const registry = new RuntimeRegistry(`${prefix}-runtime`, { platform, forceDelete }, withAws);

  const prometheus = target.managedPrometheus
    ? new ManagedPrometheus(
        `${prefix}-metrics`,
        {
          oidcProviderArn: cluster.oidcProviderArn,
          oidcIssuerUrl: cluster.oidcIssuerUrl,
          namespace: resolved.obsNs,
          serviceAccount: PROMETHEUS_SA,
        },
        withAws,
      )
    : undefined;
  if (containerLogs)
    new ContainerLogs(
      `${prefix}-logs`,
      {
        clusterName: cluster.clusterName,
        oidcProviderArn: cluster.oidcProviderArn,
        oidcIssuerUrl: cluster.oidcIssuerUrl,
        partition,
        dependsOn: cluster.ready,
      },
      withAws,
    );

  // Volumes for the bundled Prometheus: a created cluster has no CSI driver nor default StorageClass.
  const storage =
    cluster instanceof EksCluster
      ? new BlockStorage(
          `${prefix}-storage`,
          {
            clusterName: cluster.clusterName,
            oidcProviderArn: cluster.oidcProviderArn,
            oidcIssuerUrl: cluster.oidcIssuerUrl,
            provider: cluster.provider,
            partition,
            dependsOn: cluster.ready,
          },
          withAws,
        )
      : undefined;

  // The AWS Load Balancer Controller (nlb-ip): the gateway's Service waits for its webhook, and on destroy
  // goes first, so the controller is still there to delete the NLB and its security groups.
  const controller = installsLoadBalancerController(loadBalancer, target.cluster.kind, controllerConfigured)
    ? new LoadBalancerController(
        `${prefix}-lb`,
        {
          clusterName: cluster.clusterName,
          region: target.region,
          vpcId: cluster.vpcId,
          oidcProviderArn: cluster.oidcProviderArn,
          oidcIssuerUrl: cluster.oidcIssuerUrl,
          provider: cluster.provider,
          partition,
          tags: defaultTags(infra.name, stack),
          dependsOn: cluster.ready,
        },
        withAws,
      )
    : undefined;

  // TLS at the NLB on the gateway's http port, when a certificate is given.
  const gatewayService = checked.objects.find(
    (o) => o.kind === "Service" && o.metadata.labels?.[LABELS.role] === "gateway",
  );
  const ports =
    (gatewayService?.spec as { ports?: { name?: string; port: number }[] } | undefined)?.ports ?? [];
  const httpPort = ports.find((p) => p.name === "http") ?? ports[0];
  // The NLB drains a deregistered gateway pod for as long as the pod may take to stop, no longer.
  const gatewayDeployment = checked.objects.find(
    (o) => o.kind === "Deployment" && o.metadata.labels?.[LABELS.role] === "gateway",
  );
  const gracePeriod =
    (
      gatewayDeployment?.spec as
        { template?: { spec?: { terminationGracePeriodSeconds?: number } } } | undefined
    )?.template?.spec?.terminationGracePeriodSeconds ?? null;
  const mesh = new Platform(
    infra.name,
    {
      ...base,
      runtimeImage: registry.ref,
      observabilityNamespace: resolved.obsNs,
      namespaceLabels: meshNamespaceLabels(loadBalancer),
      gatewayServiceAnnotations: gatewayServiceAnnotations(
        loadBalancer,
        target.certificateArn,
        String(httpPort?.name ?? httpPort?.port ?? "http"),
        gatewayListeners.some((l) => l.proxyProtocol === true),
        gracePeriod,
      ),
      ...(prometheus
        ? {
            prometheusRemoteWrite: { url: prometheus.remoteWriteUrl, sigv4Region: target.region },
            prometheusServiceAccountAnnotations: { "eks.amazonaws.com/role-arn": prometheus.writer.arn },
          }
        : {}),
      provider: cluster.provider,
    },
    { dependsOn: [...cluster.ready, ...(storage ? [storage] : []), ...(controller ? [controller] : [])] },
  );

  return {
    mesh: infra.name,
    namespace: mesh.namespace,
    region: target.region,
    clusterName: cluster.clusterName,
    kubeconfig: cluster.kubeconfig,
    gatewayUrl:
      target.certificateArn !== null
        ? mesh.gatewayEndpoint.apply((u) =>
            u.includes(".svc.cluster.local") ? u : u.replace(/^http:/, "https:"),
          )
        : mesh.gatewayEndpoint,
    ampEndpoint: prometheus ? prometheus.endpoint : "",
    ecrRepository: registry.repositoryUrl,
    imageRef: registry.ref,
    caCertificatePem: mesh.caCertificatePem,
    configHashes: mesh.configHashes,
  };
}
