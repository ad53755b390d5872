/**
 * `Network` (`meshgate:aws:Network`): the VPC an EKS cluster runs in — one public and one private subnet
 * in each of the first `availabilityZones` available zones of the region, an internet gateway for the
 * public subnets, and NAT for the private ones (one NAT gateway in total by default, or one per zone).
 *
 * Addresses (the VPC is a /16, `10.0.0.0/16` by default): public subnets are /20s at the start
 * (`10.0.0.0/20`, `10.0.16.0/20`, `10.0.32.0/20`), private subnets /18s (`10.0.64.0/18`, `10.0.128.0/18`,
 * `10.0.192.0/18`) — pods take their IPs from the private subnets (the VPC CNI), so those are large.
 *
 * Subnet tags for load balancers: `kubernetes.io/role/elb: 1` on the public subnets (internet-facing),
 * `kubernetes.io/role/internal-elb: 1` on the private ones, and `kubernetes.io/cluster/<cluster>: shared`
 * on both. Public subnets do not map public IPs on launch: nothing but load balancers and the NAT gateway
 * lives there.
 */
import * as aws from "@pulumi/aws";
import * as pulumi from "@pulumi/pulumi";

export interface NetworkArgs {
  /**
   * How many availability zones (2 or 3): the first available ones of the region (opt-in zones such as
   * Local Zones are excluded).
   */
  availabilityZones: number;
  /** The EKS cluster's name, for the subnets' `kubernetes.io/cluster/<name>` tag. */
  clusterName: string;
  /**
   * The VPC's CIDR block: a /16.
   * @default 10.0.0.0/16
   */
  cidrBlock?: string;
  /**
   * NAT gateways: `single` — one, in the first zone (cheaper; private subnets lose egress if that zone
   * fails); `perZone` — one per zone (zone-independent egress, a NAT gateway's hourly price per zone).
   * @default single
   */
  natGateways?: "single" | "perZone";
}

/** The subnet CIDRs of a /16 for a number of zones: public /20s and private /18s. */
export function subnetCidrs(cidrBlock: string, zones: number): { public: string[]; private: string[] } {
  const m = /^(\d{1,3})\.(\d{1,3})\.0\.0\/16$/.exec(cidrBlock);
  if (!m) throw new Error(`cidrBlock: "${cidrBlock}" is not a /16 block such as 10.0.0.0/16`);
  const base = `${m[1]}.${m[2]}`;
  const range = Array.from({ length: zones }, (_, i) => i);
  return {
    public: range.map((i) => `${base}.${i * 16}.0/20`),
    private: range.map((i) => `${base}.${64 + i * 64}.0/18`),
  };
}

export class Network extends pulumi.ComponentResource {
  readonly vpc: aws.ec2.Vpc;
  readonly vpcId: pulumi.Output<string>;
  /** The public subnets, one per zone in zone order. */
  readonly publicSubnets: aws.ec2.Subnet[];
  /** The private subnets, one per zone in zone order. */
  readonly privateSubnets: aws.ec2.Subnet[];
  readonly publicSubnetIds: pulumi.Output<string>[];
  readonly privateSubnetIds: pulumi.Output<string>[];
  /** The zones used, in order. */
  readonly availabilityZones: pulumi.Output<string[]>;
  readonly natGateways: aws.ec2.NatGateway[];

  /**
   * @param name The unique name; every child is `<name>-<part>` (`<name>-public-0`, `<name>-nat-0`, …).
   * @param args The zones, the cluster name for subnet tags, the CIDR block and the NAT layout.
   * @param opts Options for the component (the aws provider, parent, …).
   */
  constructor(name: string, args: NetworkArgs, opts?: pulumi.ComponentResourceOptions) {
    if (!Number.isInteger(args.availabilityZones) || args.availabilityZones < 2 || args.availabilityZones > 3)
      throw new pulumi.InputPropertiesError({
        message: `meshgate Network ${name}: invalid arguments`,
        errors: [{ propertyPath: "availabilityZones", reason: "use 2 or 3 availability zones" }],
      });
    const cidrBlock = args.cidrBlock ?? "10.0.0.0/16";
    if (!/^(\d{1,3})\.(\d{1,3})\.0\.0\/16$/.test(cidrBlock))
      throw new pulumi.InputPropertiesError({
        message: `meshgate Network ${name}: invalid arguments`,
        errors: [
          { propertyPath: "cidrBlock", reason: `"${cidrBlock}" is not a /16 block such as 10.0.0.0/16` },
        ],
      });
    const cidrs = subnetCidrs(cidrBlock, args.availabilityZones);
    super("meshgate:aws:Network", name, {}, opts);
    const parent = { parent: this };
    const n = args.availabilityZones;

    const zones = aws
      .getAvailabilityZonesOutput(
        { state: "available", filters: [{ name: "opt-in-status", values: ["opt-in-not-required"] }] },
        parent,
      )
      .names.apply((names) => {
        if (names.length < n)
          throw new Error(
            `targets.aws.availabilityZones: ${n} zones asked, the region has ${names.length} available: lower availabilityZones`,
          );
        return names.slice(0, n);
      });
    this.availabilityZones = zones;

    this.vpc = new aws.ec2.Vpc(
      `${name}-vpc`,
      {
        cidrBlock,
        enableDnsHostnames: true,
        enableDnsSupport: true,
        tags: { Name: `${name}-vpc` },
      },
      parent,
    );
    this.vpcId = this.vpc.id;
    const igw = new aws.ec2.InternetGateway(
      `${name}-igw`,
      { vpcId: this.vpc.id, tags: { Name: `${name}-igw` } },
      parent,
    );
    const clusterTag = { [`kubernetes.io/cluster/${args.clusterName}`]: "shared" };
    const subnet = (kind: "public" | "private", i: number) =>
      new aws.ec2.Subnet(
        `${name}-${kind}-${i}`,
        {
          vpcId: this.vpc.id,
          cidrBlock: cidrs[kind][i]!,
          availabilityZone: zones[i]!,
          mapPublicIpOnLaunch: false,
          tags: {
            Name: `${name}-${kind}-${i}`,
            ...clusterTag,
            [kind === "public" ? "kubernetes.io/role/elb" : "kubernetes.io/role/internal-elb"]: "1",
          },
        },
        parent,
      );
    this.publicSubnets = Array.from({ length: n }, (_, i) => subnet("public", i));
    this.privateSubnets = Array.from({ length: n }, (_, i) => subnet("private", i));
    this.publicSubnetIds = this.publicSubnets.map((s) => s.id);
    this.privateSubnetIds = this.privateSubnets.map((s) => s.id);

    const publicRoutes = new aws.ec2.RouteTable(
      `${name}-public`,
      { vpcId: this.vpc.id, tags: { Name: `${name}-public` } },
      parent,
    );
    new aws.ec2.Route(
      `${name}-public-internet`,
      { routeTableId: publicRoutes.id, destinationCidrBlock: "0.0.0.0/0", gatewayId: igw.id },
      parent,
    );
    this.publicSubnets.forEach(
      (s, i) =>
        new aws.ec2.RouteTableAssociation(
          `${name}-public-${i}`,
          { subnetId: s.id, routeTableId: publicRoutes.id },
          parent,
        ),
    );

    const natCount = args.natGateways === "perZone" ? n : 1;
    this.natGateways = Array.from({ length: natCount }, (_, i) => {
      const eip = new aws.ec2.Eip(
        `${name}-nat-${i}`,
        { domain: "vpc", tags: { Name: `${name}-nat-${i}` } },
        parent,
      );
      return new aws.ec2.NatGateway(
        `${name}-nat-${i}`,
        { allocationId: eip.id, subnetId: this.publicSubnets[i]!.id, tags: { Name: `${name}-nat-${i}` } },
        { parent: this, dependsOn: [igw] },
      );
    });
    this.privateSubnets.forEach((s, i) => {
      const table = new aws.ec2.RouteTable(
        `${name}-private-${i}`,
        { vpcId: this.vpc.id, tags: { Name: `${name}-private-${i}` } },
        parent,
      );
      new aws.ec2.Route(
        `${name}-private-${i}-nat`,
        {
          routeTableId: table.id,
          destinationCidrBlock: "0.0.0.0/0",
          natGatewayId: this.natGateways[natCount === 1 ? 0 : i]!.id,
        },
        parent,
      );
      new aws.ec2.RouteTableAssociation(
        `${name}-private-${i}`,
        { subnetId: s.id, routeTableId: table.id },
        parent,
      );
    });
    this.registerOutputs({
      vpcId: this.vpcId,
      publicSubnetIds: this.publicSubnetIds,
      privateSubnetIds: this.privateSubnetIds,
      availabilityZones: this.availabilityZones,
    });
  }
}
