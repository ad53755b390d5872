/**
 * The pack's AWS policies: every pack policy passes on the resources the AWS stack registers under the
 * mocks (created and existing cluster), and seeded misconfigurations are reported — a node group in a
 * public subnet (by public IPs, ELB tag, or a route to the internet gateway) and IAM policies with
 * wildcard actions — with tables of cases beside each policy.
 */
import { readFile, writeFile, mkdtemp } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as pulumi from "@pulumi/pulumi";
import {
  unknownCheckingProxy,
  type PolicyResource,
  type ResourceValidationArgs,
  type StackValidationArgs,
} from "@pulumi/policy";
import { parse, stringify } from "yaml";
import { beforeAll, beforeEach, describe, expect, it } from "vitest";
import {
  eksNodeGroupPrivateSubnets,
  iamNoWildcardActions,
  isWildcardAction,
} from "../../policies/pack/aws.ts";
import { PACK_POLICIES } from "../../policies/pack/policies.ts";
import { awsCalls, awsMock, awsResources } from "../support/aws.ts";
import { installMocks, mockState, registeredOutputs, resetRecords, runStack } from "../support/pulumi.ts";

type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any
let program: () => Promise<Record<string, unknown>>;
let shopSpec: Json;
let dir: string;

beforeAll(async () => {
  await installMocks("meshgate", "test", awsResources, awsCalls);
  program = (await import("../../stacks/index.ts")).default as typeof program;
  shopSpec = parse(await readFile("examples/shop/mesh.yaml", "utf8")) as Json;
  dir = await mkdtemp(join(tmpdir(), "meshgate-aws-policies-"));
});
beforeEach(() => {
  resetRecords();
  awsMock.zones = 3;
});

const OPTS = {
  protect: false,
  ignoreChanges: [],
  aliases: [],
  customTimeouts: {},
  additionalSecretOutputs: [],
};

function policyResource(type: string, name: string, props: Json): PolicyResource {
  return {
    type,
    name,
    urn: `urn:pulumi:test::meshgate::${type}::${name}`,
    props,
    opts: OPTS,
    isType: () => false,
    asType: () => undefined,
    dependencies: [],
    propertyDependencies: {},
  } as unknown as PolicyResource;
}

/** The stack's resources as the policy engine sees them after `up`: their outputs (inputs + computed). */
async function stackResources(
  aws: (a: Json) => void = () => {},
  config: Record<string, string> = {},
): Promise<PolicyResource[]> {
  const spec = structuredClone(shopSpec);
  aws(spec.targets.aws);
  const file = join(dir, `shop-${Math.random().toString(36).slice(2)}.yaml`);
  await writeFile(file, stringify(spec));
  pulumi.runtime.setAllConfig({ "meshgate:target": "aws", "meshgate:spec": file, ...config });
  const run = await runStack(program);
  expect(run.errors).toEqual([]);
  return mockState.registered.map((r) => policyResource(r.type, r.name, registeredOutputs(r.type, r.name)));
}

async function violations(resources: PolicyResource[]): Promise<string[]> {
  const out: string[] = [];
  for (const policy of PACK_POLICIES) {
    if ("validateResource" in policy && typeof policy.validateResource === "function")
      for (const r of resources)
        await policy.validateResource(
          { ...r, props: unknownCheckingProxy(structuredClone(r.props)), getConfig: () => ({}) } as never,
          (m: string) => out.push(`${policy.name} ${r.name}: ${m}`),
        );
    // Advisory stack policies (the spec's guardrail warnings) do not fail an update.
    if (
      "validateStack" in policy &&
      typeof policy.validateStack === "function" &&
      policy.enforcementLevel === "mandatory"
    )
      await policy.validateStack(
        { resources, getConfig: () => ({}) } as unknown as StackValidationArgs,
        (m: string) => out.push(`${policy.name}: ${m}`),
      );
  }
  return out;
}

async function nodeGroupViolations(resources: PolicyResource[]): Promise<string[]> {
  const out: string[] = [];
  await eksNodeGroupPrivateSubnets.validateStack(
    { resources, getConfig: () => ({}) } as unknown as StackValidationArgs,
    (m) => out.push(m),
  );
  return out;
}

const byName = (resources: PolicyResource[], name: string, type = "aws:ec2/subnet:Subnet") =>
  resources.find((r) => r.name === name && r.type === type)!;

describe("the pack on the AWS stack", () => {
  it("passes_every_pack_policy_on_the_resources_of_a_created_cluster", async () => {
    const resources = await stackResources();
    expect(resources.filter((r) => r.type === "aws:eks/nodeGroup:NodeGroup")).toHaveLength(1);
    expect(await violations(resources)).toEqual([]);
  });

  it("passes_every_pack_policy_with_the_load_balancer_controller_and_its_iam_policy", async () => {
    const resources = await stackResources(undefined, { "meshgate:awsLoadBalancer": "nlb-ip" });
    const controller = resources.find((r) => r.name === "shop-test-lb-controller-policy")!;
    expect(JSON.parse(String(controller.props.policy)).Statement.length).toBeGreaterThan(10);
    expect(await violations(resources)).toEqual([]);
    // The same check fails on a seeded wildcard in the controller's policy.
    const policy = JSON.parse(String(controller.props.policy)) as Json;
    policy.Statement[1].Action.push("elasticloadbalancing:*");
    controller.props.policy = JSON.stringify(policy);
    expect(await violations(resources)).toEqual([
      `aws-iam-no-wildcard-actions ${controller.name}: policy: statement 1 allows "elasticloadbalancing:*": list the actions the workload needs`,
    ]);
  });

  it("passes_every_pack_policy_on_the_resources_of_an_existing_cluster", async () => {
    const resources = await stackResources((a) => (a.cluster = { existing: "platform-prod" }));
    expect(await violations(resources)).toEqual([]);
  });

  it.each<[string, (rs: PolicyResource[]) => void, RegExp]>([
    [
      "node_group_moved_to_the_public_subnets",
      (rs) => {
        const group = rs.find((r) => r.type === "aws:eks/nodeGroup:NodeGroup")!;
        group.props.subnetIds = [0, 1, 2].map((i) => byName(rs, `shop-test-public-${i}`).props.id);
      },
      /runs in subnet shop-test-public-0, which is public: .*kubernetes\.io\/role\/elb/,
    ],
    [
      "private_subnet_mapping_public_ips",
      (rs) => (byName(rs, "shop-test-private-1").props.mapPublicIpOnLaunch = true),
      /subnet shop-test-private-1, which is public: it maps public IPs on launch/,
    ],
    [
      "private_route_table_routed_to_the_internet_gateway",
      (rs) => {
        const route = rs.find((r) => r.name === "shop-test-private-2-nat")!;
        route.props.gatewayId = byName(
          rs,
          "shop-test-igw",
          "aws:ec2/internetGateway:InternetGateway",
        ).props.id;
        delete route.props.natGatewayId;
      },
      /subnet shop-test-private-2, which is public: its route table rtb-[0-9a-f]+ routes to an internet gateway/,
    ],
  ])("reports_a_seeded_%s", async (_name, seed, message) => {
    const resources = await stackResources();
    expect(await nodeGroupViolations(resources)).toEqual([]);
    seed(resources);
    const found = await nodeGroupViolations(resources);
    expect(found.length).toBeGreaterThan(0);
    expect(found.join("\n")).toMatch(message);
  });

  it("reports_a_seeded_wildcard_action_in_the_stack_iam_policy", async () => {
    const resources = await stackResources();
    const writer = resources.find((r) => r.type === "aws:iam/rolePolicy:RolePolicy")!;
    const policy = JSON.parse(String(writer.props.policy)) as Json;
    policy.Statement[0].Action = ["aps:*"];
    writer.props.policy = JSON.stringify(policy);
    expect(await violations(resources)).toEqual([
      `aws-iam-no-wildcard-actions ${writer.name}: policy: statement 0 allows "aps:*": list the actions the workload needs`,
    ]);
  });

  it("matches_subnets_by_property_dependencies_when_ids_are_absent", async () => {
    const subnet = policyResource("aws:ec2/subnet:Subnet", "pub", { mapPublicIpOnLaunch: true });
    const group = policyResource("aws:eks/nodeGroup:NodeGroup", "nodes", { subnetIds: [] });
    (group as Json).propertyDependencies = { subnetIds: [subnet] };
    expect(await nodeGroupViolations([subnet, group])).toEqual([
      "node group nodes runs in subnet pub, which is public: it maps public IPs on launch (place nodes in private subnets behind NAT)",
    ]);
  });
});

// ───────────── aws-iam-no-wildcard-actions ─────────────

function resourceArgs(type: string, props: Json): ResourceValidationArgs {
  return {
    type,
    props: unknownCheckingProxy(structuredClone(props)) as Json,
    urn: `urn:pulumi:test::meshgate::${type}::r`,
    name: "r",
    opts: OPTS,
    stackTags: new Map(),
    isType: () => false,
    asType: () => undefined,
    getConfig: <T extends object>() => ({}) as T,
    notApplicable: () => {
      throw new Error("not applicable");
    },
  } as unknown as ResourceValidationArgs;
}

async function iamViolations(type: string, props: Json): Promise<string[]> {
  const out: string[] = [];
  const validate = iamNoWildcardActions.validateResource;
  for (const v of Array.isArray(validate) ? validate : [validate!])
    await v(resourceArgs(type, props), (m) => out.push(m));
  return out;
}

const allow = (Action: unknown, extra: Json = {}) =>
  JSON.stringify({
    Version: "2012-10-17",
    Statement: [{ Effect: "Allow", Action, Resource: "*", ...extra }],
  });

describe("aws-iam-no-wildcard-actions", () => {
  it.each<[string, string, Json, RegExp | null]>([
    ["accepts_listed_actions", "aws:iam/rolePolicy:RolePolicy", { policy: allow(["aps:RemoteWrite"]) }, null],
    [
      "accepts_a_prefix_wildcard_of_one_action_family",
      "aws:iam/policy:Policy",
      { policy: allow("s3:Get*") },
      null,
    ],
    [
      "refuses_a_service_wildcard_in_a_role_policy",
      "aws:iam/rolePolicy:RolePolicy",
      { policy: allow("s3:*") },
      /policy: statement 0 allows "s3:\*"/,
    ],
    [
      "refuses_the_global_wildcard_in_a_managed_policy",
      "aws:iam/policy:Policy",
      { policy: allow("*") },
      /statement 0 allows "\*"/,
    ],
    [
      "refuses_a_wildcard_among_listed_actions_of_a_user_policy",
      "aws:iam/userPolicy:UserPolicy",
      { policy: allow(["s3:GetObject", "iam:*"]) },
      /allows "iam:\*"/,
    ],
    [
      "refuses_a_wildcard_in_a_policy_given_as_an_object",
      "aws:iam/groupPolicy:GroupPolicy",
      { policy: JSON.parse(allow("ec2:*")) },
      /allows "ec2:\*"/,
    ],
    [
      "refuses_not_action_in_an_allow_statement",
      "aws:iam/rolePolicy:RolePolicy",
      { policy: JSON.stringify({ Statement: [{ Effect: "Allow", NotAction: "iam:*", Resource: "*" }] }) },
      /NotAction/,
    ],
    [
      "refuses_a_wildcard_in_a_role_inline_policy",
      "aws:iam/role:Role",
      { assumeRolePolicy: "{}", inlinePolicies: [{ name: "all", policy: allow("*") }] },
      /inlinePolicies\[0\] \(all\): statement 0 allows "\*"/,
    ],
    [
      "accepts_a_deny_statement_with_a_wildcard",
      "aws:iam/rolePolicy:RolePolicy",
      { policy: JSON.stringify({ Statement: [{ Effect: "Deny", Action: "*", Resource: "*" }] }) },
      null,
    ],
    ["does_not_read_trust_policies", "aws:iam/role:Role", { assumeRolePolicy: allow("sts:*") }, null],
    [
      "refuses_attaching_administrator_access",
      "aws:iam/rolePolicyAttachment:RolePolicyAttachment",
      { role: "r", policyArn: "arn:aws:iam::aws:policy/AdministratorAccess" },
      /AdministratorAccess/,
    ],
    [
      "refuses_a_full_access_managed_policy_on_a_role",
      "aws:iam/role:Role",
      { assumeRolePolicy: "{}", managedPolicyArns: ["arn:aws:iam::aws:policy/AmazonS3FullAccess"] },
      /AmazonS3FullAccess/,
    ],
    [
      "accepts_the_managed_policies_eks_needs",
      "aws:iam/rolePolicyAttachment:RolePolicyAttachment",
      { role: "r", policyArn: "arn:aws:iam::aws:policy/AmazonEKS_CNI_Policy" },
      null,
    ],
  ])("%s", async (_name, type, props, expected) => {
    const found = await iamViolations(type, props);
    if (expected === null) expect(found).toEqual([]);
    else {
      expect(found).toHaveLength(1);
      expect(found[0]).toMatch(expected);
    }
  });

  it.each([
    ["*", true],
    ["s3:*", true],
    ["S3:*", true],
    ["s3:Get*", false],
    ["aps:RemoteWrite", false],
  ])("classifies_%s_as_wildcard_%s", (action, wildcard) => {
    expect(isWildcardAction(action)).toBe(wildcard);
  });
});
