/**
 * The AWS target's settings, checked before any resource: the spec's `targets.aws` (as translated), the
 * stack options, and what derives from them — the partition, the nodes' CPU architecture (Graviton →
 * arm64), the EKS AMI type, the image platform, and the names every resource derives from. Pure.
 */
import { parseIpv4 } from "../../runtime/decide/authorize.ts";
import type { TargetsIR } from "../translate/ir.ts";

/** The translated `targets.aws`. */
export type AwsTarget = NonNullable<TargetsIR["aws"]>;

/** How the gateway's Service is exposed (see docs/aws.md). */
export type LoadBalancerMode = "nlb" | "nlb-ip";

/** A problem with the AWS settings: the field (`targets.aws.cluster.create.minNodes`) and the fix. */
export interface AwsSettingError {
  propertyPath: string;
  reason: string;
}

/** The AWS partition of a region: `aws`, `aws-cn` or `aws-us-gov`. */
/**
 * The oldest Kubernetes minor the chart runs on: native sidecars (1.29). (The preStop `sleep` action of
 * the drain delays needs 1.30; on 1.29 both delays must be 0s — docs/kubernetes.md.)
 */
export const MIN_KUBERNETES_MINOR = 29;

export function partitionOf(region: string): "aws" | "aws-cn" | "aws-us-gov" {
  if (region.startsWith("cn-")) return "aws-cn";
  if (region.startsWith("us-gov-")) return "aws-us-gov";
  return "aws";
}

/**
 * Whether an EC2 instance type runs on AWS Graviton (arm64): a family whose generation digit is followed
 * by `g` (`m7g.large`, `c6gn.xlarge`, `t4g.small`, `im4gn.large`), or the first Graviton `a1`.
 */
export function isGraviton(instanceType: string): boolean {
  return /^a1\./.test(instanceType) || /^[a-z]+\d+g[a-z-]*\./.test(instanceType);
}

/** The managed node group's AMI type for an instance type (Amazon Linux 2023). */
export function amiTypeOf(instanceType: string): "AL2023_ARM_64_STANDARD" | "AL2023_x86_64_STANDARD" {
  return isGraviton(instanceType) ? "AL2023_ARM_64_STANDARD" : "AL2023_x86_64_STANDARD";
}

/** The runtime image's platform for an instance type. */
export function imagePlatformOf(instanceType: string): "linux/arm64" | "linux/amd64" {
  return isGraviton(instanceType) ? "linux/arm64" : "linux/amd64";
}

/**
 * The prefix of every resource name: `<mesh>-<stack>`, lower case, characters other than a-z, 0-9 and
 * `-` replaced, at most 38 characters (IAM role name prefixes, NLB names and the EKS cluster name must fit).
 */
export function namePrefix(mesh: string, stack: string): string {
  const raw = `${mesh}-${stack}`
    .toLowerCase()
    .replace(/[^a-z0-9-]+/g, "-")
    .replace(/-+/g, "-");
  return raw.slice(0, 38).replace(/^-+|-+$/g, "");
}

const INSTANCE_TYPE = /^[a-z][a-z0-9-]*\d[a-z0-9-]*\.[a-z0-9]+$/;
const CERTIFICATE_ARN = /^arn:aws(?:-cn|-us-gov)?:acm:([a-z0-9-]+):\d{12}:certificate\/[0-9a-f-]{36}$/;
const CLUSTER_NAME = /^[0-9A-Za-z][A-Za-z0-9\-_]{0,99}$/;

/** What the AWS stack checks besides the spec. */
export interface AwsCheckInput {
  /** The translated `targets.aws` (null: the spec has none). */
  aws: TargetsIR["aws"];
  /** The gateway Service's type (`targets.kubernetes.gatewayServiceType`, default LoadBalancer). */
  gatewayServiceType: string;
  /** The observability mode the Platform runs with. */
  observability: "bundled" | "operator" | "none";
  /** `meshgate:awsLoadBalancer`. @default nlb */
  loadBalancer?: LoadBalancerMode;
  /** `meshgate:awsLoadBalancerController` as configured (undefined: not set). */
  loadBalancerController?: boolean;
  /** The gateway's listeners and whether each expects a PROXY protocol header. @default none */
  gatewayListeners?: readonly { name: string; proxyProtocol: boolean }[];
}

/**
 * Whether the stack installs the AWS Load Balancer Controller: as configured, else exactly when `nlb-ip`
 * needs it on a cluster the stack creates (an existing cluster usually runs one already; a second
 * installation would fight it for the same Services).
 */
export function installsLoadBalancerController(
  mode: LoadBalancerMode,
  cluster: "create" | "existing",
  configured: boolean | undefined,
): boolean {
  return configured ?? (mode === "nlb-ip" && cluster === "create");
}

/**
 * Why a string is not a range EKS takes in `publicAccessCidrs` — an IPv4 CIDR block (`203.0.113.0/24`)
 * written as its first address, no host bits past the prefix — or null.
 */
export function publicAccessCidrProblem(text: string): string | null {
  const slash = text.indexOf("/");
  const address = slash < 0 ? null : parseIpv4(text.slice(0, slash));
  const prefix = text.slice(slash + 1);
  const bits = /^(0|[1-9][0-9]?)$/.test(prefix) ? Number(prefix) : 33;
  if (address === null || bits > 32)
    return "is not an IPv4 CIDR block (such as 203.0.113.0/24; EKS takes IPv4 ranges only)";
  const size = 2 ** (32 - bits);
  if (address % size !== 0) {
    const first = address - (address % size);
    const dotted = [24, 16, 8, 0].map((s) => Math.floor(first / 2 ** s) % 256).join(".");
    return `has address bits set past its /${bits} prefix: write ${dotted}/${bits}`;
  }
  return null;
}

/** Every problem with the AWS settings (empty when valid), each naming its field and the fix. */
export function awsSettingErrors(input: AwsCheckInput): AwsSettingError[] {
  const { aws } = input;
  if (aws === null)
    return [
      {
        propertyPath: "targets.aws",
        reason:
          "the aws target needs targets.aws in the spec: { region, cluster: { create: {} } } or { region, cluster: { existing: <EKS cluster name> } }",
      },
    ];
  const errors: AwsSettingError[] = [];
  const cluster = aws.cluster;
  if (cluster.kind === "existing" && !CLUSTER_NAME.test(cluster.name))
    errors.push({
      propertyPath: "targets.aws.cluster.existing",
      reason: `"${cluster.name}" is not an EKS cluster name (1–100 of letters, digits, '-', '_', starting with a letter or digit)`,
    });
  if (cluster.kind === "create") {
    const path = "targets.aws.cluster.create";
    if (!/^1\.\d{2}$/.test(cluster.version))
      errors.push({
        propertyPath: `${path}.version`,
        reason: `"${cluster.version}" is not a Kubernetes minor version EKS offers (e.g. "1.33")`,
      });
    else if (Number(cluster.version.slice(2)) < MIN_KUBERNETES_MINOR)
      errors.push({
        propertyPath: `${path}.version`,
        reason: `Kubernetes ${cluster.version} is too old for the chart: it needs 1.${MIN_KUBERNETES_MINOR} or newer (native sidecars); use "1.33"`,
      });
    if (!INSTANCE_TYPE.test(cluster.instanceType))
      errors.push({
        propertyPath: `${path}.instanceType`,
        reason: `"${cluster.instanceType}" is not an EC2 instance type (e.g. "m7g.large")`,
      });
    if (cluster.minNodes > cluster.maxNodes)
      errors.push({
        propertyPath: `${path}.minNodes`,
        reason: `minNodes (${cluster.minNodes}) exceeds maxNodes (${cluster.maxNodes}): raise maxNodes or lower minNodes`,
      });
    for (const cidr of cluster.publicAccessCidrs) {
      const problem = publicAccessCidrProblem(cidr);
      if (problem !== null)
        errors.push({ propertyPath: `${path}.publicAccessCidrs`, reason: `"${cidr}" ${problem}` });
    }
    if (!cluster.publicEndpoint && cluster.publicAccessCidrs.join() !== "0.0.0.0/0")
      errors.push({
        propertyPath: `${path}.publicAccessCidrs`,
        reason:
          "publicAccessCidrs limits the public endpoint, and publicEndpoint is false: remove publicAccessCidrs, or set publicEndpoint to true",
      });
  }
  if (aws.certificateArn !== null) {
    const m = CERTIFICATE_ARN.exec(aws.certificateArn);
    if (!m)
      errors.push({
        propertyPath: "targets.aws.certificateArn",
        reason: `"${aws.certificateArn}" is not an ACM certificate ARN (arn:aws:acm:<region>:<account>:certificate/<id>)`,
      });
    else if (m[1] !== aws.region)
      errors.push({
        propertyPath: "targets.aws.certificateArn",
        reason: `the certificate is in ${m[1]}, the load balancer in ${aws.region}: an NLB uses an ACM certificate of its own region`,
      });
  }
  if (aws.managedPrometheus && input.observability !== "bundled")
    errors.push({
      propertyPath: "targets.aws.managedPrometheus",
      reason: `Amazon Managed Prometheus is written by the bundled Prometheus, but observability is "${input.observability}": use observability.metrics.backend prometheus, or set managedPrometheus: false`,
    });
  if (input.loadBalancer === "nlb-ip" && cluster.kind === "create" && input.loadBalancerController === false)
    errors.push({
      propertyPath: "meshgate:awsLoadBalancerController",
      reason:
        "nlb-ip load balancers are made by the AWS Load Balancer Controller, and a cluster the stack creates has none: leave meshgate:awsLoadBalancerController unset (or true), or use meshgate:awsLoadBalancer nlb",
    });
  const listeners = input.gatewayListeners ?? [];
  const proxied = listeners.filter((l) => l.proxyProtocol).map((l) => l.name);
  if (proxied.length > 0 && proxied.length < listeners.length)
    errors.push({
      propertyPath: "gateway.listeners",
      reason: `the NLB sends PROXY protocol headers to every port of the gateway's Service or to none, but only ${proxied.join(", ")} of the listeners (${listeners.map((l) => l.name).join(", ")}) expect one: set proxyProtocol on all of them or on none`,
    });
  if (input.gatewayServiceType !== "LoadBalancer")
    errors.push({
      propertyPath: "targets.kubernetes.gatewayServiceType",
      reason: `the aws target exposes the gateway through a Network Load Balancer: the gateway Service must be a LoadBalancer (it is ${input.gatewayServiceType})`,
    });
  return errors;
}

/** Tags on every AWS resource (the provider's default tags). */
export function defaultTags(mesh: string, stack: string): Record<string, string> {
  return { "meshgate:mesh": mesh, "meshgate:stack": stack, "managed-by": "meshgate" };
}

/**
 * The mesh namespace's labels for a load balancer mode: with `nlb-ip`, the AWS Load Balancer Controller's
 * readiness gate — a gateway pod counts as ready only once the NLB reports its target healthy, so a
 * rolling update (`maxUnavailable: 0`) never stops old pods before new ones receive traffic.
 */
export function meshNamespaceLabels(mode: LoadBalancerMode): Record<string, string> {
  return mode === "nlb-ip" ? { "elbv2.k8s.aws/pod-readiness-gate-inject": "enabled" } : {};
}

/**
 * The gateway Service's annotations for a load balancer mode: `nlb` — the Kubernetes AWS cloud provider's
 * Network Load Balancer (instance targets, which keep the client's address with the Service's
 * `externalTrafficPolicy: Local`; works on a fresh EKS cluster); `nlb-ip` — the AWS Load Balancer
 * Controller's (`external`, IP targets with client IP preservation, internet-facing). With a certificate,
 * TLS terminates at the NLB on `sslPorts`; with `proxyProtocol`, the NLB sends PROXY v2 headers.
 *
 * `deregistrationDelaySeconds` (`nlb-ip`; the gateway pod's termination grace period): how long the target
 * group keeps a deregistered pod's connections. AWS's default is 300 s, long after the pod is gone — and
 * while a target drains, a new pod that gets the same IP (the VPC CNI reuses them) cannot be registered,
 * so its readiness gate waits up to five minutes.
 */
export function gatewayServiceAnnotations(
  mode: LoadBalancerMode,
  certificateArn: string | null,
  sslPorts: string,
  proxyProtocol = false,
  deregistrationDelaySeconds: number | null = null,
): Record<string, string> {
  const prefix = "service.beta.kubernetes.io/aws-load-balancer";
  return {
    // PROXY protocol v2 on every target group: the gateway's listeners expect it (awsSettingErrors
    // refuses a mix). With TLS at the NLB, it is how the gateway learns the client's address.
    ...(proxyProtocol ? { [`${prefix}-proxy-protocol`]: "*" } : {}),
    ...(mode === "nlb-ip"
      ? {
          [`${prefix}-type`]: "external",
          [`${prefix}-nlb-target-type`]: "ip",
          [`${prefix}-scheme`]: "internet-facing",
          // IP targets see the NLB's address unless the target group preserves the client's.
          [`${prefix}-target-group-attributes`]: [
            "preserve_client_ip.enabled=true",
            ...(deregistrationDelaySeconds !== null
              ? [`deregistration_delay.timeout_seconds=${deregistrationDelaySeconds}`]
              : []),
          ].join(","),
        }
      : { [`${prefix}-type`]: "nlb" }),
    ...(certificateArn !== null
      ? { [`${prefix}-ssl-cert`]: certificateArn, [`${prefix}-ssl-ports`]: sslPorts }
      : {}),
  };
}
