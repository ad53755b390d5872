/**
 * The pack's AWS policies (the AWS target, stacks/aws.ts):
 *
 * - `aws-iam-no-wildcard-actions` (resource, mandatory): no IAM permission policy allows every action
 *   (`"*"`) or every action of a service (`"s3:*"`), nor uses `NotAction` in an Allow statement — in
 *   managed policies (`aws:iam/policy:Policy`), role/user/group inline policies (`RolePolicy`,
 *   `UserPolicy`, `GroupPolicy`, a Role's `inlinePolicies`); no attachment of the AWS-managed policies
 *   that do (`AdministratorAccess`, `PowerUserAccess`, `*FullAccess`). Trust policies
 *   (`assumeRolePolicy`) are not permission policies and are not checked.
 * - `aws-eks-node-group-private-subnets` (stack, mandatory): every subnet of an EKS managed node group
 *   created in the same stack is private — it does not map public IPs on launch, is not tagged for
 *   internet-facing load balancers (`kubernetes.io/role/elb`), and its route table (explicit association)
 *   has no route to an internet gateway. Subnets the stack does not create cannot be checked and are
 *   not reported.
 *
 * Resources are matched by their `id` output (bridged AWS resources carry it in their outputs) or by
 * property dependencies. Unknown values (a preview before creation) are skipped, never guessed.
 */
import type { PolicyResource, ResourceValidationPolicy, StackValidationPolicy } from "@pulumi/policy";

type Loose = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

/** The policy documents of a resource that grant permissions, with where they are. */
export function permissionDocuments(type: string, props: Loose): { where: string; document: unknown }[] {
  switch (type) {
    case "aws:iam/policy:Policy":
    case "aws:iam/rolePolicy:RolePolicy":
    case "aws:iam/userPolicy:UserPolicy":
    case "aws:iam/groupPolicy:GroupPolicy":
      return [{ where: "policy", document: props.policy }];
    case "aws:iam/role:Role":
      return ((props.inlinePolicies ?? []) as Loose[]).map((p, i) => ({
        where: `inlinePolicies[${i}] (${String(p?.name ?? "")})`,
        document: p?.policy,
      }));
    default:
      return [];
  }
}

/** A document as an object: JSON text parsed; anything else (unknown, malformed) is null. */
function asDocument(document: unknown): Loose | null {
  if (typeof document === "string") {
    try {
      return JSON.parse(document) as Loose;
    } catch {
      return null;
    }
  }
  return document !== null && typeof document === "object" ? (document as Loose) : null;
}

const list = <T>(v: T | T[] | undefined): T[] => (v === undefined ? [] : Array.isArray(v) ? v : [v]);

/** Whether an action grants everything, or everything of one service (`*`, `s3:*`, `S3:*`). */
export const isWildcardAction = (action: string): boolean =>
  action === "*" || /^[A-Za-z0-9-]+:\*$/.test(action);

/** The wildcard grants of a policy document, as messages (empty when none). */
export function wildcardGrants(document: unknown): string[] {
  const doc = asDocument(document);
  if (doc === null) return [];
  const out: string[] = [];
  list<Loose>(doc.Statement).forEach((s, i) => {
    if (s?.Effect !== "Allow") return;
    const label = s.Sid ? `statement ${i} (${String(s.Sid)})` : `statement ${i}`;
    for (const a of list<unknown>(s.Action))
      if (typeof a === "string" && isWildcardAction(a))
        out.push(`${label} allows "${a}": list the actions the workload needs`);
    if (s.NotAction !== undefined)
      out.push(
        `${label} allows NotAction: everything but the listed actions; list the allowed actions instead`,
      );
  });
  return out;
}

/** AWS-managed policies that grant every action, or every action of a service. */
export const isBroadManagedPolicy = (arn: string): boolean =>
  /^arn:aws[a-z-]*:iam::aws:policy\/(?:.*\/)?(AdministratorAccess|PowerUserAccess|[A-Za-z0-9]+FullAccess)$/.test(
    arn,
  );

function attachedPolicies(type: string, props: Loose): string[] {
  if (
    type === "aws:iam/rolePolicyAttachment:RolePolicyAttachment" ||
    type === "aws:iam/userPolicyAttachment:UserPolicyAttachment" ||
    type === "aws:iam/groupPolicyAttachment:GroupPolicyAttachment" ||
    type === "aws:iam/policyAttachment:PolicyAttachment"
  )
    return typeof props.policyArn === "string" ? [props.policyArn] : [];
  if (type === "aws:iam/role:Role")
    return ((props.managedPolicyArns ?? []) as unknown[]).filter((a): a is string => typeof a === "string");
  return [];
}

export const iamNoWildcardActions: ResourceValidationPolicy = {
  name: "aws-iam-no-wildcard-actions",
  description:
    'no IAM permission policy allows "*" or "<service>:*" (or NotAction), and no AWS-managed policy that does is attached',
  enforcementLevel: "mandatory",
  validateResource: (args, report) => {
    const props = args.props as Loose;
    for (const { where, document } of permissionDocuments(args.type, props))
      for (const grant of wildcardGrants(document)) report(`${where}: ${grant}`);
    for (const arn of attachedPolicies(args.type, props))
      if (isBroadManagedPolicy(arn))
        report(
          `attaches ${arn}, which allows whole services: attach or write a policy with the actions needed`,
        );
  },
};

// ───────────── node groups in private subnets ─────────────

const TYPES = {
  nodeGroup: "aws:eks/nodeGroup:NodeGroup",
  subnet: "aws:ec2/subnet:Subnet",
  association: "aws:ec2/routeTableAssociation:RouteTableAssociation",
  routeTable: "aws:ec2/routeTable:RouteTable",
  route: "aws:ec2/route:Route",
  igw: "aws:ec2/internetGateway:InternetGateway",
} as const;

const idOf = (r: PolicyResource): string | undefined =>
  typeof (r.props as Loose).id === "string" ? ((r.props as Loose).id as string) : undefined;

/** Why a subnet is public (empty: it is private as far as the stack shows). */
export function publicReasons(subnet: PolicyResource, resources: readonly PolicyResource[]): string[] {
  const props = subnet.props as Loose;
  const reasons: string[] = [];
  if (props.mapPublicIpOnLaunch === true) reasons.push("it maps public IPs on launch");
  if (props.tags?.["kubernetes.io/role/elb"] !== undefined)
    reasons.push("it is tagged kubernetes.io/role/elb (internet-facing load balancers)");
  const id = idOf(subnet);
  const of = (type: string) => resources.filter((r) => r.type === type);
  const igws = new Set(
    of(TYPES.igw)
      .map(idOf)
      .filter((x): x is string => x !== undefined),
  );
  const isIgw = (gatewayId: unknown) =>
    typeof gatewayId === "string" && (igws.has(gatewayId) || gatewayId.startsWith("igw-"));
  const tables = of(TYPES.association)
    .filter(
      (a) =>
        (id !== undefined && (a.props as Loose).subnetId === id) ||
        a.propertyDependencies?.subnetId?.includes(subnet),
    )
    .map((a) => (a.props as Loose).routeTableId as unknown)
    .filter((t): t is string => typeof t === "string");
  for (const table of tables) {
    const inline = of(TYPES.routeTable)
      .filter((t) => idOf(t) === table)
      .flatMap((t) => ((t.props as Loose).routes ?? []) as Loose[]);
    const separate = of(TYPES.route)
      .filter((r) => (r.props as Loose).routeTableId === table)
      .map((r) => r.props as Loose);
    if ([...inline, ...separate].some((r) => isIgw(r.gatewayId)))
      reasons.push(`its route table ${table} routes to an internet gateway`);
  }
  return reasons;
}

export const eksNodeGroupPrivateSubnets: StackValidationPolicy = {
  name: "aws-eks-node-group-private-subnets",
  description:
    "EKS managed node groups run in private subnets (no public IPs, no route to an internet gateway)",
  enforcementLevel: "mandatory",
  validateStack: (args, report) => {
    const subnets = args.resources.filter((r) => r.type === TYPES.subnet);
    for (const group of args.resources.filter((r) => r.type === TYPES.nodeGroup)) {
      const ids = ((group.props as Loose).subnetIds ?? []) as unknown[];
      const matched = new Set<PolicyResource>([
        ...subnets.filter((s) => ids.includes(idOf(s))),
        ...(group.propertyDependencies?.subnetIds ?? []).filter((s) => s.type === TYPES.subnet),
      ]);
      for (const subnet of matched)
        for (const reason of publicReasons(subnet, args.resources))
          report(
            `node group ${group.name} runs in subnet ${subnet.name}, which is public: ${reason} (place nodes in private subnets behind NAT)`,
            group.urn,
          );
    }
  },
};

/** The pack's AWS policies. */
export const AWS_POLICIES: (ResourceValidationPolicy | StackValidationPolicy)[] = [
  iamNoWildcardActions,
  eksNodeGroupPrivateSubnets,
];
