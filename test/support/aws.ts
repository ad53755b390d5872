/**
 * AWS as the mocks see it: the outputs AWS computes for the resources the AWS components create (ids in
 * AWS's formats, ARNs, an EKS cluster's endpoint, CA and OIDC issuer, an AMP workspace's endpoint, an ECR
 * repository's URL) and the data sources they invoke (availability zones, an existing cluster, its OIDC
 * provider, ECR credentials). Only AWS is emulated; meshgate's code runs as it is.
 *
 *   await installMocks("meshgate", "test", awsResources, awsCalls);
 *   awsMock.zones = 2; // the region's available zones for the next run
 */
import { createHash } from "node:crypto";
import type { CallEmulation, ProviderEmulation } from "./pulumi.ts";

export const ACCOUNT = "123456789012";

/** What the emulated account holds; tests change it between runs. */
export const awsMock = {
  region: "eu-west-1",
  /** Available zones in the region. */
  zones: 3,
  /** Existing EKS clusters by name. */
  clusters: new Set<string>(["platform-prod"]),
  /** The VPC an existing cluster is in. */
  vpcOfExisting: (cluster: string) => vpcOfExisting(cluster),
  /** The ECR password getAuthorizationToken returns (a secret: it must never appear unwrapped). */
  ecrPassword: "mock-ecr-password-5f2c",
};

const hex = (seed: string, n: number) => createHash("sha256").update(seed).digest("hex").slice(0, n);
const arn = (service: string, resource: string, region = awsMock.region) =>
  `arn:aws:${service}:${region}:${ACCOUNT}:${resource}`;
const issuerOf = (cluster: string) =>
  `https://oidc.eks.${awsMock.region}.amazonaws.com/id/${hex(cluster, 32).toUpperCase()}`;
const endpointOf = (cluster: string) =>
  `https://${hex(cluster, 32).toUpperCase()}.gr7.${awsMock.region}.eks.amazonaws.com`;
const caOf = (cluster: string) => Buffer.from(`MOCK CA ${cluster}`).toString("base64");
const vpcOfExisting = (cluster: string) => `vpc-${hex(`existing ${cluster}`, 17)}`;
/** The VPC of each subnet created so far (AWS derives a cluster's VPC from its subnets). */
const subnetVpc = new Map<string, string>();
const registryHost = () => `${ACCOUNT}.dkr.ecr.${awsMock.region}.amazonaws.com`;

/** The outputs AWS computes for a resource (undefined for other providers: the default mocks). */
export const awsResources: ProviderEmulation = async (type, name, inputs) => {
  const spec = inputs.spec as { type?: string } | undefined;
  if (type === "kubernetes:core/v1:Service" && spec?.type === "LoadBalancer") {
    // The load balancer AWS provisions for the Service: its DNS name in the Service's status.
    const metadata = inputs.metadata as Record<string, unknown>;
    const hostname = `${hex(name, 32)}.elb.${awsMock.region}.amazonaws.com`;
    return {
      metadata: { ...metadata, uid: `uid-${name}` },
      status: { loadBalancer: { ingress: [{ hostname }] } },
    };
  }
  if (!type.startsWith("aws:")) return undefined;
  const physical = `${name}-${hex(name, 7)}`;
  const ids: Record<string, string> = {
    "aws:ec2/vpc:Vpc": `vpc-${hex(name, 17)}`,
    "aws:ec2/subnet:Subnet": `subnet-${hex(name, 17)}`,
    "aws:ec2/internetGateway:InternetGateway": `igw-${hex(name, 17)}`,
    "aws:ec2/eip:Eip": `eipalloc-${hex(name, 17)}`,
    "aws:ec2/natGateway:NatGateway": `nat-${hex(name, 17)}`,
    "aws:ec2/routeTable:RouteTable": `rtb-${hex(name, 17)}`,
    "aws:ec2/routeTableAssociation:RouteTableAssociation": `rtbassoc-${hex(name, 17)}`,
  };
  if (type === "aws:ec2/subnet:Subnet") subnetVpc.set(ids[type]!, String(inputs.vpcId));
  if (ids[type])
    return { id: ids[type], arn: arn("ec2", `${type.split(":")[2]!.toLowerCase()}/${ids[type]}`) };
  switch (type) {
    case "aws:iam/role:Role":
      return { id: physical, name: physical, arn: `arn:aws:iam::${ACCOUNT}:role/${physical}` };
    case "aws:iam/openIdConnectProvider:OpenIdConnectProvider": {
      const host = String(inputs.url).replace(/^https:\/\//, "");
      return { arn: `arn:aws:iam::${ACCOUNT}:oidc-provider/${host}` };
    }
    case "aws:eks/cluster:Cluster": {
      const n = String(inputs.name ?? physical);
      // Tests also read a cluster's computed outputs by name alone (no vpcConfig).
      const vpcConfig = inputs.vpcConfig as { subnetIds: string[] } | undefined;
      const vpcs = new Set(vpcConfig?.subnetIds.map((id) => subnetVpc.get(id)));
      if (vpcConfig && (vpcs.size !== 1 || vpcs.has(undefined)))
        throw new Error(`creating EKS Cluster (${n}): subnets must be known and in one VPC`);
      return {
        id: n,
        name: n,
        arn: arn("eks", `cluster/${n}`),
        ...(vpcConfig ? { vpcConfig: { ...vpcConfig, vpcId: [...vpcs][0] } } : {}),
        endpoint: endpointOf(n),
        certificateAuthority: { data: caOf(n) },
        identities: [{ oidcs: [{ issuer: issuerOf(n) }] }],
        status: "ACTIVE",
      };
    }
    case "aws:eks/nodeGroup:NodeGroup":
      return { arn: arn("eks", `nodegroup/${String(inputs.clusterName)}/${physical}`), status: "ACTIVE" };
    case "aws:eks/addon:Addon":
      return { arn: arn("eks", `addon/${String(inputs.clusterName)}/${String(inputs.addonName)}`) };
    case "aws:cloudwatch/logGroup:LogGroup":
      return { id: String(inputs.name), arn: arn("logs", `log-group:${String(inputs.name)}`) };
    case "aws:amp/workspace:Workspace": {
      const id = `ws-${hex(name, 8)}-${hex(`${name}1`, 4)}`;
      return {
        id,
        arn: arn("aps", `workspace/${id}`),
        prometheusEndpoint: `https://aps-workspaces.${awsMock.region}.amazonaws.com/workspaces/${id}/`,
      };
    }
    case "aws:ecr/repository:Repository": {
      const n = String(inputs.name ?? physical);
      return {
        id: n,
        name: n,
        arn: arn("ecr", `repository/${n}`),
        registryId: ACCOUNT,
        repositoryUrl: `${registryHost()}/${n}`,
      };
    }
    default:
      return { arn: arn(type.split(/[:/]/)[1]!, physical) };
  }
};

/** AWS's data sources; an unknown token echoes its inputs. */
export const awsCalls: CallEmulation = (token, inputs) => {
  switch (token) {
    case "aws:index/getAvailabilityZones:getAvailabilityZones": {
      const names = Array.from({ length: awsMock.zones }, (_, i) => `${awsMock.region}${"abcdef"[i]}`);
      return {
        id: awsMock.region,
        names,
        zoneIds: names.map((_, i) => `euw1-az${i + 1}`),
        state: "available",
      };
    }
    case "aws:index/getCallerIdentity:getCallerIdentity":
      return { id: ACCOUNT, accountId: ACCOUNT, arn: `arn:aws:iam::${ACCOUNT}:user/ci`, userId: "AIDAMOCK" };
    case "aws:index/getPartition:getPartition":
      return { id: "aws", partition: "aws", dnsSuffix: "amazonaws.com" };
    case "aws:eks/getCluster:getCluster": {
      const n = String(inputs.name);
      if (!awsMock.clusters.has(n)) {
        // As the engine reports a provider's failure: a gRPC error whose details are the message.
        const message = `reading EKS Cluster (${n}): couldn't find resource`;
        throw Object.assign(new Error(message), { details: message });
      }
      return {
        id: n,
        name: n,
        arn: arn("eks", `cluster/${n}`),
        endpoint: endpointOf(n),
        certificateAuthorities: [{ data: caOf(n) }],
        vpcConfig: { vpcId: vpcOfExisting(n), subnetIds: [], securityGroupIds: [] },
        identities: [{ oidcs: [{ issuer: issuerOf(n) }] }],
        version: "1.33",
      };
    }
    case "aws:iam/getOpenIdConnectProvider:getOpenIdConnectProvider": {
      const host = String(inputs.url).replace(/^https:\/\//, "");
      return {
        id: `arn:aws:iam::${ACCOUNT}:oidc-provider/${host}`,
        arn: `arn:aws:iam::${ACCOUNT}:oidc-provider/${host}`,
        url: host,
        clientIdLists: ["sts.amazonaws.com"],
        thumbprintLists: [],
      };
    }
    case "aws:ecr/getAuthorizationToken:getAuthorizationToken":
      return {
        id: awsMock.region,
        proxyEndpoint: `https://${registryHost()}`,
        userName: "AWS",
        password: awsMock.ecrPassword,
        authorizationToken: Buffer.from(`AWS:${awsMock.ecrPassword}`).toString("base64"),
        expiresAt: "2026-12-01T00:00:00Z",
      };
    default:
      return undefined;
  }
};
