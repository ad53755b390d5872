/**
 * meshgate on AWS: the components the AWS stack (stacks/aws.ts) is made of — `Network` (VPC over 2–3
 * zones), `EksCluster` / `ExistingEksCluster`, `IrsaRole`, `ManagedPrometheus`, `ContainerLogs`,
 * `RuntimeRegistry` (ECR + the pushed runtime image), `LoadBalancerController` (the AWS Load Balancer
 * Controller with its IAM role) — and the pure settings checks. See docs/aws.md.
 */
export { Network, subnetCidrs, type NetworkArgs } from "./network.ts";
export {
  EksCluster,
  ExistingEksCluster,
  kubeconfigOf,
  CONTROL_PLANE_LOGS,
  type ClusterHandle,
  type EksClusterArgs,
  type ExistingEksClusterArgs,
} from "./eks.ts";
export {
  IrsaRole,
  irsaTrustPolicy,
  serviceTrustPolicy,
  managedPolicyArn,
  CLUSTER_POLICIES,
  NODE_POLICIES,
  type IrsaRoleArgs,
} from "./iam.ts";
export {
  ManagedPrometheus,
  ContainerLogs,
  remoteWritePolicy,
  CLOUDWATCH_AGENT,
  type ManagedPrometheusArgs,
  type ContainerLogsArgs,
} from "./observability.ts";
export { BlockStorage, EBS_CSI_CONTROLLER, type BlockStorageArgs } from "./storage.ts";
export {
  LoadBalancerController,
  loadBalancerControllerPolicy,
  LOAD_BALANCER_CONTROLLER,
  LOAD_BALANCER_CONTROLLER_CHART,
  type LoadBalancerControllerArgs,
} from "./loadbalancer.ts";
export { RuntimeRegistry, sourceTag, LIFECYCLE_POLICY, type RuntimeRegistryArgs } from "./registry.ts";
export {
  awsSettingErrors,
  amiTypeOf,
  defaultTags,
  gatewayServiceAnnotations,
  imagePlatformOf,
  installsLoadBalancerController,
  isGraviton,
  meshNamespaceLabels,
  namePrefix,
  partitionOf,
  type AwsTarget,
  type AwsSettingError,
  type LoadBalancerMode,
} from "./settings.ts";
