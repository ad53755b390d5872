/**
 * The CrossGuard policies of the meshgate pack (index.ts serves them; tests call them directly).
 *
 * Stack policies run meshgate's guardrails (policies/guardrails) on the mesh spec the stack carries.
 * The contract the meshgate components provide — the Kubernetes round implements it:
 *
 *   A resource whose type starts with `meshgate:` (a meshgate ComponentResource registering it with
 *   registerOutputs), or the stack itself (`pulumi:pulumi:Stack`, as a stack output), has the property
 *   `meshgateSpec`: the mesh spec as written (the `defineMesh({...})` value or the parsed YAML, plain JSON),
 *   or the spec's YAML/JSON text.
 *
 * Every such spec is parsed and translated exactly as `meshgate verify` does; error-severity violations
 * are reported by `meshgate-guardrails` (mandatory), warnings by `meshgate-guardrail-warnings` (advisory).
 * The pack's policy config takes the policy file's `rules` and `limits` (`pulumi preview --policy-pack-config`).
 *
 * Resource policies check what is deployed on Kubernetes, with labels the Kubernetes renderer sets:
 *   `meshgate.io/mesh: <mesh>` on every meshed pod template, `meshgate.io/role: gateway` on the gateway's
 *   pods and Service; the sidecar container is named `meshgate-sidecar`.
 */
import type {
  PolicyResource,
  ReportViolation,
  ResourceValidationArgs,
  ResourceValidationPolicy,
  StackValidationArgs,
  StackValidationPolicy,
} from "@pulumi/policy";
import { loadSpecText } from "../../components/spec/load.ts";
import { parseSpec } from "../../components/spec/parse.ts";
import { GUARDRAILS } from "../guardrails/index.ts";
import { DOCKER_POLICIES } from "./docker.ts";
import { parsePolicyObject } from "../policy-file.ts";
import { DEFAULT_POLICY, policyInput, runGuardrails, type PolicyConfig } from "../run.ts";
import type { Violation } from "../types.ts";
import { AWS_POLICIES } from "./aws.ts";

/** The property that carries the mesh spec (on a `meshgate:*` resource or the stack). */
export const SPEC_PROPERTY = "meshgateSpec";
/** Pod-template label of meshed workloads (value: the mesh name). */
export const MESH_LABEL = "meshgate.io/mesh";
/** Label of the gateway's pods and Service. */
export const ROLE_LABEL = "meshgate.io/role";
/** The sidecar container's name. */
export const SIDECAR_CONTAINER = "meshgate-sidecar";
/** The gateway container's name (it runs `meshgate gateway`). */
export const GATEWAY_CONTAINER = "gateway";

// ───────────── stack policies: the guardrails on the carried spec ─────────────

type Loose = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

/** The resources that carry a spec, with the value they carry. */
export function specCarriers(resources: readonly PolicyResource[]): { urn: string; value: unknown }[] {
  const out: { urn: string; value: unknown }[] = [];
  for (const r of resources) {
    if (!r.type.startsWith("meshgate:") && r.type !== "pulumi:pulumi:Stack") continue;
    const value = (r.props as Loose)[SPEC_PROPERTY];
    if (value !== undefined && value !== null) out.push({ urn: r.urn, value });
  }
  return out;
}

type Outcome = { ok: true; violations: Violation[] } | { ok: false; problem: string };

/** Parses the carried spec and runs the guardrails, as `meshgate verify` would. */
export function verifyCarried(value: unknown, policy: PolicyConfig): Outcome {
  const parsed = typeof value === "string" ? loadSpecText(value) : parseSpec(value);
  if (!parsed.ok) {
    const shown = parsed.errors
      .slice(0, 5)
      .map((e) => `${e.path ? `${e.path}: ` : ""}${e.message} [${e.code}]`);
    return {
      ok: false,
      problem: `the meshgate spec is invalid (${parsed.errors.length} error${parsed.errors.length === 1 ? "" : "s"}): ${shown.join("; ")}${parsed.errors.length > 5 ? "; …" : ""}`,
    };
  }
  const checks = runGuardrails(policyInput(parsed.spec), { policy });
  return { ok: true, violations: checks.flatMap((c) => c.violations) };
}

/** The pack config as a policy (the policy file's rules and limits); a problem fails the policy. */
function packPolicy(args: StackValidationArgs): PolicyConfig | string {
  const { enforcementLevel: _level, ...config } = (args.getConfig<Loose>() ?? {}) as Loose;
  if (config.rules === undefined && config.limits === undefined) return DEFAULT_POLICY;
  const r = parsePolicyObject(config, "policy pack config", GUARDRAILS);
  if (!r.ok)
    return `the policy pack config is invalid: ${r.errors.map((e) => `${e.path}: ${e.message}`).join("; ")}`;
  return r.policy;
}

const describeViolation = (v: Violation) =>
  `${v.code} at ${v.path || "(spec)"}: ${v.message} (fix: ${v.fix})`;

function guardrailStack(severities: readonly Violation["severity"][]) {
  return (args: StackValidationArgs, report: ReportViolation) => {
    const policy = packPolicy(args);
    if (typeof policy === "string") {
      if (severities.includes("error")) report(policy);
      return;
    }
    for (const { urn, value } of specCarriers(args.resources)) {
      const outcome = verifyCarried(value, policy);
      if (!outcome.ok) {
        if (severities.includes("error")) report(outcome.problem, urn);
        continue;
      }
      for (const v of outcome.violations)
        if (severities.includes(v.severity)) report(describeViolation(v), urn);
    }
  };
}

const configSchema = {
  properties: {
    rules: {
      type: "object" as const,
      description: "code or guardrail name → error | warning | info | off (as in meshgate-policy.yaml)",
      additionalProperties: { type: "string" as const, enum: ["error", "warning", "info", "off"] },
    },
    limits: {
      type: "object" as const,
      description: "maxRetryAmplification (integer ≥ 1), maxWorkloadTtl (a duration such as 72h)",
      properties: {
        maxRetryAmplification: { type: "integer" as const, minimum: 1 },
        maxWorkloadTtl: { type: "string" as const },
      },
      additionalProperties: false,
    },
  },
};

export const meshGuardrails: StackValidationPolicy = {
  name: "meshgate-guardrails",
  description: "meshgate's guardrails pass on the mesh spec the stack carries (error-severity violations)",
  enforcementLevel: "mandatory",
  configSchema,
  validateStack: guardrailStack(["error"]),
};

export const meshGuardrailWarnings: StackValidationPolicy = {
  name: "meshgate-guardrail-warnings",
  description: "meshgate's guardrail warnings on the mesh spec the stack carries",
  enforcementLevel: "advisory",
  configSchema,
  validateStack: guardrailStack(["warning"]),
};

// ───────────── resource policies: what is deployed on Kubernetes ─────────────

const POD_TEMPLATE_KINDS = new Set([
  "kubernetes:apps/v1:Deployment",
  "kubernetes:apps/v1:StatefulSet",
  "kubernetes:apps/v1:DaemonSet",
  "kubernetes:apps/v1:ReplicaSet",
  "kubernetes:batch/v1:Job",
]);

interface PodView {
  spec: Loose;
  labels: Record<string, string>;
}

/** The pod spec and pod labels of a workload resource (null for other types). */
export function podOf(type: string, props: Loose): PodView | null {
  if (type === "kubernetes:core/v1:Pod")
    return { spec: props.spec ?? {}, labels: props.metadata?.labels ?? {} };
  let template: Loose | undefined;
  if (POD_TEMPLATE_KINDS.has(type)) template = props.spec?.template;
  else if (type === "kubernetes:batch/v1:CronJob") template = props.spec?.jobTemplate?.spec?.template;
  else return null;
  return { spec: template?.spec ?? {}, labels: template?.metadata?.labels ?? {} };
}

const containersOf = (spec: Loose): Loose[] => [...(spec.initContainers ?? []), ...(spec.containers ?? [])];

/** Pinned: a sha256 digest, or a tag other than `latest`. */
export function imagePinned(image: string): boolean {
  if (/@sha256:[0-9a-f]{64}$/.test(image)) return true;
  const name = image.slice(image.lastIndexOf("/") + 1);
  const colon = name.indexOf(":");
  return colon > 0 && colon < name.length - 1 && name.slice(colon + 1) !== "latest";
}

/** A resource policy over every container of a workload's pod. */
function podPolicy(
  name: string,
  description: string,
  check: (pod: PodView, report: ReportViolation, args: ResourceValidationArgs) => void,
): ResourceValidationPolicy {
  return {
    name,
    description,
    enforcementLevel: "mandatory",
    validateResource: (args, report) => {
      const pod = podOf(args.type, args.props);
      if (pod) check(pod, report, args);
    },
  };
}

export const imagesPinned = podPolicy(
  "kubernetes-images-pinned",
  "container images are pinned by tag or sha256 digest (never untagged or :latest)",
  ({ spec }, report) => {
    for (const c of containersOf(spec)) {
      const image = String(c.image ?? "");
      if (!imagePinned(image))
        report(`container "${c.name}" uses image "${image}": pin a version tag or a sha256 digest`);
    }
  },
);

export const nonRoot = podPolicy(
  "kubernetes-non-root",
  "containers run as a non-root user (runAsNonRoot, never runAsUser 0)",
  ({ spec }, report) => {
    const pod = spec.securityContext ?? {};
    for (const c of containersOf(spec)) {
      const sc = c.securityContext ?? {};
      if ((sc.runAsNonRoot ?? pod.runAsNonRoot) !== true)
        report(`container "${c.name}" does not set runAsNonRoot: true (in its or the pod's securityContext)`);
      if ((sc.runAsUser ?? pod.runAsUser) === 0) report(`container "${c.name}" runs as user 0 (root)`);
    }
  },
);

export const readOnlyRootFilesystem = podPolicy(
  "kubernetes-read-only-root-filesystem",
  "containers mount their root filesystem read-only",
  ({ spec }, report) => {
    for (const c of containersOf(spec))
      if (c.securityContext?.readOnlyRootFilesystem !== true)
        report(`container "${c.name}" does not set securityContext.readOnlyRootFilesystem: true`);
  },
);

export const notPrivileged = podPolicy(
  "kubernetes-not-privileged",
  "no privileged containers, no added capabilities beyond NET_BIND_SERVICE, and no host network, PID or IPC namespace",
  ({ spec }, report) => {
    for (const key of ["hostNetwork", "hostPID", "hostIPC"])
      if (spec[key] === true) report(`the pod sets ${key}: true`);
    for (const c of containersOf(spec)) {
      if (c.securityContext?.privileged === true) report(`container "${c.name}" is privileged`);
      // SYS_ADMIN, NET_ADMIN or ALL give a container what privileged would (as docker-no-privileged-containers).
      const adds = ((c.securityContext?.capabilities?.add ?? []) as unknown[])
        .map((x) => String(x))
        .filter((x) => x.replace(/^CAP_/i, "").toUpperCase() !== "NET_BIND_SERVICE");
      if (adds.length > 0) report(`container "${c.name}" adds capabilities ${adds.join(", ")}`);
    }
  },
);

export const sidecarPresent = podPolicy(
  "kubernetes-meshed-workloads-have-their-sidecar",
  `every pod labelled ${MESH_LABEL} (other than the gateway's) runs the ${SIDECAR_CONTAINER} container`,
  ({ spec, labels }, report) => {
    if (labels[MESH_LABEL] === undefined) return;
    // The gateway is its own mesh member (no sidecar). The role label alone does not exempt a pod — any
    // workload can set it — only with the gateway container, running the meshgate gateway, in it.
    const runsGateway = (spec.containers ?? []).some(
      (c: Loose) => c.name === GATEWAY_CONTAINER && Array.isArray(c.args) && c.args[0] === "gateway",
    );
    if (labels[ROLE_LABEL] === "gateway" && runsGateway) return;
    const names = [
      ...(spec.containers ?? []).map((c: Loose) => c.name),
      ...(spec.initContainers ?? [])
        .filter((c: Loose) => c.restartPolicy === "Always")
        .map((c: Loose) => c.name),
    ];
    if (!names.includes(SIDECAR_CONTAINER))
      report(
        `the pod is part of mesh "${labels[MESH_LABEL]}" but has no ${SIDECAR_CONTAINER} container: its traffic bypasses mTLS and authorization`,
      );
  },
);

export const loadBalancerOnlyForGateway: ResourceValidationPolicy = {
  name: "kubernetes-load-balancer-only-for-the-gateway",
  description: `no Service of type LoadBalancer or NodePort except the gateway's (labelled ${ROLE_LABEL}: gateway)`,
  enforcementLevel: "mandatory",
  validateResource: (args, report) => {
    if (args.type !== "kubernetes:core/v1:Service") return;
    const props = args.props as Loose;
    // A NodePort Service is reachable on every node's address: outside the cluster as much as a LoadBalancer.
    const type = props.spec?.type;
    if (type !== "LoadBalancer" && type !== "NodePort") return;
    if (props.metadata?.labels?.[ROLE_LABEL] === "gateway") return;
    report(
      `Service "${props.metadata?.name ?? args.name}" is a ${type}: only the meshgate gateway is exposed outside the cluster (use ClusterIP and a gateway route)`,
    );
  },
};

const PRIVATE_KEY = /-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----/;

export const caKeysInSecrets: ResourceValidationPolicy = {
  name: "kubernetes-private-keys-only-in-secrets",
  description:
    "private keys (the mesh CA's and any other) are stored in Secrets, never in ConfigMaps or env values",
  enforcementLevel: "mandatory",
  validateResource: (args, report) => {
    const props = args.props as Loose;
    if (args.type === "kubernetes:core/v1:ConfigMap") {
      for (const [key, value] of Object.entries((props.data ?? {}) as Record<string, unknown>))
        if (typeof value === "string" && PRIVATE_KEY.test(value))
          report(`ConfigMap key "${key}" holds a private key: store it in a Secret`);
      for (const [key, value] of Object.entries((props.binaryData ?? {}) as Record<string, unknown>))
        if (typeof value === "string" && PRIVATE_KEY.test(Buffer.from(value, "base64").toString("latin1")))
          report(`ConfigMap binaryData key "${key}" holds a private key: store it in a Secret`);
      return;
    }
    const pod = podOf(args.type, props);
    if (!pod) return;
    for (const c of containersOf(pod.spec))
      for (const e of (c.env ?? []) as Loose[])
        if (typeof e.value === "string" && PRIVATE_KEY.test(e.value))
          report(
            `container "${c.name}" has a private key in env ${e.name}: mount it from a Secret (valueFrom.secretKeyRef)`,
          );
  },
};

/** Every policy of the pack, in the order the engine runs them. */
export const PACK_POLICIES: (ResourceValidationPolicy | StackValidationPolicy)[] = [
  meshGuardrails,
  meshGuardrailWarnings,
  imagesPinned,
  nonRoot,
  readOnlyRootFilesystem,
  notPrivileged,
  loadBalancerOnlyForGateway,
  sidecarPresent,
  caKeysInSecrets,
  ...DOCKER_POLICIES,
  ...AWS_POLICIES,
];
