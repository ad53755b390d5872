/**
 * The one registration of chart objects as Pulumi resources, shared by `Platform`, `Mesh` and `Gateway`:
 * the typed `@pulumi/kubernetes` resource of each kind, child names, the dependency tiers, the identity
 * Secrets written from `MeshCa`, and the split of the chart between the mesh and its gateway.
 *
 * Tiers: 0 — Namespaces and CRDs; then the identity Secrets and every object that configures
 * (ServiceAccounts, RBAC, ConfigMaps, Services, NetworkPolicies, cert-manager objects, …); 2 — the
 * workloads (Deployments, StatefulSets, DaemonSets) and what acts on them (HPA, PDB). Each tier
 * `dependsOn` the one before (and everything waits for `after`: a Gateway's Mesh).
 */
import * as k8s from "@pulumi/kubernetes";
import * as pulumi from "@pulumi/pulumi";
import {
  ANNOTATIONS,
  contentHash,
  IDENTITY_SECRET_KEYS,
  LABELS,
  secretNames,
  type KubeObject,
} from "../kubernetes/index.ts";
import type { InfraIR } from "../translate/ir.ts";
import type { MeshCa } from "./ca.ts";

type Make = (name: string, obj: KubeObject, opts: pulumi.CustomResourceOptions) => pulumi.CustomResource;
// The typed constructors take the object as it is (their args mirror the Kubernetes schema).
const typed =
  <A>(C: new (name: string, args: A, opts?: pulumi.CustomResourceOptions) => pulumi.CustomResource): Make =>
  (name, obj, opts) =>
    new C(name, obj as unknown as A, opts);

/** The typed resource of each kind the chart emits; any other kind is a `CustomResource`. */
const KINDS: Record<string, Make> = {
  "v1/Namespace": typed(k8s.core.v1.Namespace),
  "v1/ServiceAccount": typed(k8s.core.v1.ServiceAccount),
  "v1/ConfigMap": typed(k8s.core.v1.ConfigMap),
  "v1/Secret": typed(k8s.core.v1.Secret),
  "v1/Service": typed(k8s.core.v1.Service),
  "v1/PersistentVolumeClaim": typed(k8s.core.v1.PersistentVolumeClaim),
  "rbac.authorization.k8s.io/v1/Role": typed(k8s.rbac.v1.Role),
  "rbac.authorization.k8s.io/v1/RoleBinding": typed(k8s.rbac.v1.RoleBinding),
  "rbac.authorization.k8s.io/v1/ClusterRole": typed(k8s.rbac.v1.ClusterRole),
  "rbac.authorization.k8s.io/v1/ClusterRoleBinding": typed(k8s.rbac.v1.ClusterRoleBinding),
  "networking.k8s.io/v1/NetworkPolicy": typed(k8s.networking.v1.NetworkPolicy),
  "apps/v1/Deployment": typed(k8s.apps.v1.Deployment),
  "apps/v1/StatefulSet": typed(k8s.apps.v1.StatefulSet),
  "apps/v1/DaemonSet": typed(k8s.apps.v1.DaemonSet),
  "autoscaling/v2/HorizontalPodAutoscaler": typed(k8s.autoscaling.v2.HorizontalPodAutoscaler),
  "policy/v1/PodDisruptionBudget": typed(k8s.policy.v1.PodDisruptionBudget),
  "apiextensions.k8s.io/v1/CustomResourceDefinition": typed(k8s.apiextensions.v1.CustomResourceDefinition),
};

const makeCustom: Make = (name, obj, opts) =>
  new k8s.apiextensions.CustomResource(name, obj as k8s.apiextensions.CustomResourceArgs, opts);

/** 0: namespaces and CRDs; 1: what configures; 2: workloads and what acts on them. */
export function tierOf(kind: string): 0 | 1 | 2 {
  if (kind === "Namespace" || kind === "CustomResourceDefinition") return 0;
  if (
    [
      "Deployment",
      "StatefulSet",
      "DaemonSet",
      "Job",
      "CronJob",
      "HorizontalPodAutoscaler",
      "PodDisruptionBudget",
    ].includes(kind)
  )
    return 2;
  return 1;
}

/** The child resource name of an object: `<component>-<kind>-<namespace>-<name>`, lower case. */
export function childName(component: string, obj: Pick<KubeObject, "kind" | "metadata">): string {
  const ns = obj.metadata.namespace;
  return `${component}-${obj.kind.toLowerCase()}-${ns ? `${ns}-` : ""}${obj.metadata.name}`;
}

// ───────────── the mesh / gateway split ─────────────

/**
 * Whether a chart object belongs to the edge gateway (the `Gateway` component) rather than the mesh:
 * in the mesh namespace, labelled `meshgate.io/role: gateway` (its Deployment, Service, HPA, PDB) or
 * `meshgate.io/workload: gateway` (its ConfigMap, its admin Service), its ServiceAccount, or the
 * NetworkPolicy that selects its pods. Everything else — the namespace, the services and their
 * sidecars, identities (the gateway's SVID Secret or cert-manager Certificate included), the
 * namespace-wide NetworkPolicies, observability (the gateway's dashboard and
 * ServiceMonitor included) — is the mesh's.
 */
export function isGatewayObject(obj: KubeObject, infra: Pick<InfraIR, "namespace" | "workloads">): boolean {
  const gateway = infra.workloads.find((w) => w.kind === "gateway");
  if (!gateway || obj.metadata.namespace !== infra.namespace) return false;
  const labels = obj.metadata.labels ?? {};
  if (obj.kind === "ServiceAccount") return obj.metadata.name === gateway.serviceAccount;
  // Identities (the gateway's cert-manager Certificate included) come from the mesh's CA.
  if (labels[LABELS.component] === "identity") return false;
  if (labels[LABELS.role] === "gateway" || labels[LABELS.workload] === gateway.name) return true;
  if (obj.kind === "NetworkPolicy") {
    const selector = (obj.spec as { podSelector?: { matchLabels?: Record<string, string> } } | undefined)
      ?.podSelector;
    return selector?.matchLabels?.[LABELS.workload] === gateway.name;
  }
  return false;
}

// ───────────── identity Secrets ─────────────

/** A Secret written from the CA's outputs (its data are Pulumi secrets wherever they carry a key). */
export interface IdentitySecret {
  object: KubeObject & { type: string };
  stringData: Record<string, pulumi.Input<string>>;
}

/** How workload identities reach the pods (ChartOptions["identities"]). */
export type IdentityMode = { mode: "secrets" } | { mode: "cert-manager"; caSecretName: string };

/**
 * The identity Secrets of a mesh: in `secrets` mode the trust bundle and each workload's SVID; in
 * `cert-manager` mode the CA Secret cert-manager's CA Issuer signs with (the intermediate, and the roots
 * as ca.crt).
 */
export function identitySecrets(infra: InfraIR, ca: MeshCa, identities: IdentityMode): IdentitySecret[] {
  const labels = {
    [LABELS.partOf]: infra.name,
    [LABELS.managedBy]: "meshgate",
    [LABELS.component]: "identity",
  };
  const secret = (
    name: string,
    type: string,
    stringData: Record<string, pulumi.Input<string>>,
  ): IdentitySecret => ({
    object: {
      apiVersion: "v1",
      kind: "Secret",
      metadata: { name, namespace: infra.namespace, labels },
      type,
    },
    stringData,
  });
  if (identities.mode === "cert-manager")
    // cert-manager's CA Issuer signs with the intermediate; ca.crt carries the roots to the SVID Secrets.
    return [
      secret(identities.caSecretName, "kubernetes.io/tls", {
        "tls.crt": pulumi.concat(ca.issuerCertificatePem, ca.rootCertificatePem),
        "tls.key": ca.issuerKeyPem,
        "ca.crt": ca.trustBundlePem,
      }),
    ];
  const names = secretNames(infra);
  return [
    secret(names.trustBundle, "Opaque", {
      [IDENTITY_SECRET_KEYS.bundle]: ca.trustBundlePem,
      [IDENTITY_SECRET_KEYS.intermediates]: ca.intermediatesPem,
    }),
    ...infra.identities.map((identity) => {
      const svid = ca.svids[identity.name]!;
      return secret(names.svid[identity.name]!, "Opaque", {
        [IDENTITY_SECRET_KEYS.svid]: svid.certChainPem,
        [IDENTITY_SECRET_KEYS.key]: svid.keyPem,
      });
    }),
  ];
}

// ───────────── outputs in chart objects ─────────────

/** A record with each value mapped. */
export const mapValues = <T, U>(record: Record<string, T>, f: (v: T) => U): Record<string, U> =>
  Object.fromEntries(Object.entries(record).map(([k, v]) => [k, f(v)]));

/**
 * A value with every placeholder of `deferred` replaced by its value: strings that hold one become
 * outputs (deep inside the value, so the rest stays plain); a value without placeholders is returned as is.
 */
export function resolveDeferred(
  value: unknown,
  deferred: ReadonlyMap<string, pulumi.Input<string>>,
): unknown {
  if (deferred.size === 0) return value;
  if (typeof value === "string") {
    const tokens = [...deferred.keys()].filter((t) => value.includes(t));
    if (tokens.length === 0) return value;
    return pulumi
      .all(tokens.map((t) => deferred.get(t)!))
      .apply((values) => tokens.reduce((s, t, i) => s.split(t).join(values[i]!), value));
  }
  if (Array.isArray(value)) return value.map((v) => resolveDeferred(v, deferred));
  // An output already (a config hash folded by rollOnDeferred) is a value, not a record to walk.
  if (pulumi.Output.isInstance(value)) return value;
  if (value !== null && typeof value === "object")
    return mapValues(value as Record<string, unknown>, (v) => resolveDeferred(v, deferred));
  return value;
}

/** ConfigMaps and Secrets (namespace/name) a pod template reads: volumes, projected sources, env, envFrom. */
function podInputs(obj: KubeObject): string[] {
  type Ref = { name?: string; secretName?: string } | undefined;
  type Source = { configMap?: Ref; secret?: Ref };
  type Container = {
    env?: { valueFrom?: { configMapKeyRef?: Ref; secretKeyRef?: Ref } }[];
    envFrom?: { configMapRef?: Ref; secretRef?: Ref }[];
  };
  const pod = (obj.spec as { template?: { spec?: Record<string, unknown> } } | undefined)?.template?.spec;
  if (!pod) return [];
  const ns = obj.metadata.namespace ?? "";
  const out = new Set<string>();
  const add = (kind: "ConfigMap" | "Secret", ref: Ref) => {
    const name = ref?.name ?? ref?.secretName;
    if (name) out.add(`${kind}/${ns}/${name}`);
  };
  for (const v of (pod.volumes as (Source & { projected?: { sources?: Source[] } })[] | undefined) ?? []) {
    add("ConfigMap", v.configMap);
    add("Secret", v.secret);
    for (const s of v.projected?.sources ?? []) {
      add("ConfigMap", s.configMap);
      add("Secret", s.secret);
    }
  }
  const containers = [
    ...((pod.initContainers as Container[] | undefined) ?? []),
    ...((pod.containers as Container[] | undefined) ?? []),
  ];
  for (const c of containers) {
    for (const e of c.env ?? []) {
      add("ConfigMap", e.valueFrom?.configMapKeyRef);
      add("Secret", e.valueFrom?.secretKeyRef);
    }
    for (const e of c.envFrom ?? []) {
      add("ConfigMap", e.configMapRef);
      add("Secret", e.secretRef);
    }
  }
  return [...out];
}

/**
 * A workload whose pod template carries the config-hash annotation, with the hash folded together with
 * the values of the placeholders (`deferred`) that its ConfigMaps and Secrets hold. The chart hashes
 * the content it renders, and a value given as an output (an AMP endpoint in Prometheus' config) is a
 * placeholder there: without this, a new value would change the ConfigMap but not the pod template, and
 * the pods would keep the old config until something else rolled them. The values themselves are never
 * written into the annotation, only a SHA-256 over them. Any other object is returned as it is.
 */
export function rollOnDeferred(
  obj: KubeObject,
  objects: readonly KubeObject[],
  deferred: ReadonlyMap<string, pulumi.Input<string>>,
): KubeObject {
  const template = (obj.spec as { template?: { metadata?: { annotations?: Record<string, string> } } })
    ?.template;
  const hash = template?.metadata?.annotations?.[ANNOTATIONS.configHash];
  if (hash === undefined || deferred.size === 0) return obj;
  const inputs = new Set(podInputs(obj));
  const read = objects
    .filter((o) => inputs.has(`${o.kind}/${o.metadata.namespace ?? ""}/${o.metadata.name}`))
    .map((o) => JSON.stringify([o.data, (o as { stringData?: unknown }).stringData]))
    .join("\n");
  const tokens = [...deferred.keys()].filter((t) => read.includes(t)).sort();
  if (tokens.length === 0) return obj;
  const folded = pulumi
    .all(tokens.map((t) => deferred.get(t)!))
    .apply((values) => contentHash(hash, ...tokens.flatMap((t, i) => [t, values[i]!])));
  const spec = obj.spec as { template: { metadata: { annotations: Record<string, unknown> } } };
  return {
    ...obj,
    spec: {
      ...spec,
      template: {
        ...spec.template,
        metadata: {
          ...spec.template.metadata,
          annotations: { ...spec.template.metadata.annotations, [ANNOTATIONS.configHash]: folded },
        },
      },
    },
  } as unknown as KubeObject;
}

// ───────────── registration ─────────────

/** Who registers the objects, and with what. */
export interface RegisterContext {
  /** The component every child is parented to. */
  parent: pulumi.ComponentResource;
  /** The component's name: the prefix of every child name. */
  name: string;
  /** The Kubernetes provider of every child. @default the stack's default provider */
  provider?: k8s.Provider;
  /** What every child waits for besides its own tiers (a Gateway's Mesh). @default nothing */
  after?: pulumi.Resource[];
  /**
   * Placeholders in the objects and the values (outputs) that replace them in the resources' inputs
   * (PreparedPlatform's `deferred`). @default none
   */
  deferred?: ReadonlyMap<string, pulumi.Input<string>>;
}

/** What `registerChart` created. */
export interface ChartResources {
  /** Every Kubernetes resource, by child name. */
  resources: Record<string, pulumi.CustomResource>;
  /** The identity Secrets, in the order given. */
  secrets: pulumi.CustomResource[];
}

/**
 * Registers chart objects (and identity Secrets) as children of a component, in dependency tiers:
 * tier 0 waits for `after`; the Secrets and tier 1 for tier 0 (cert-manager objects also for the
 * Secrets, the Issuer reads the CA Secret); tier 2 for the Secrets and tier 1.
 */
export function registerChart(
  ctx: RegisterContext,
  objects: readonly KubeObject[],
  secrets: readonly IdentitySecret[] = [],
): ChartResources {
  const after = ctx.after ?? [];
  const childOpts = (dependsOn: pulumi.Resource[]): pulumi.CustomResourceOptions => ({
    parent: ctx.parent,
    ...(ctx.provider ? { provider: ctx.provider } : {}),
    ...(dependsOn.length > 0 ? { dependsOn } : {}),
  });
  const resources: Record<string, pulumi.CustomResource> = {};
  const add = (n: string, r: pulumi.CustomResource) => {
    if (resources[n]) throw new Error(`meshgate: two chart objects have the child name ${n}`);
    resources[n] = r;
    return r;
  };
  const create = (obj: KubeObject, dependsOn: pulumi.Resource[]) => {
    const make = KINDS[`${obj.apiVersion}/${obj.kind}`] ?? makeCustom;
    const n = childName(ctx.name, obj);
    const args = ctx.deferred
      ? (resolveDeferred(rollOnDeferred(obj, objects, ctx.deferred), ctx.deferred) as KubeObject)
      : obj;
    return add(n, make(n, args, childOpts(dependsOn)));
  };

  const tier0 = [...after, ...objects.filter((o) => tierOf(o.kind) === 0).map((o) => create(o, after))];
  const secretResources = secrets.map((s) => {
    const n = childName(ctx.name, s.object);
    return add(
      n,
      new k8s.core.v1.Secret(
        n,
        { ...s.object, stringData: s.stringData } as k8s.core.v1.SecretArgs,
        childOpts(tier0),
      ),
    );
  });
  const tier1 = [
    ...after,
    ...secretResources,
    ...objects
      .filter((o) => tierOf(o.kind) === 1)
      .map((o) =>
        create(o, o.apiVersion.startsWith("cert-manager.io/") ? [...tier0, ...secretResources] : tier0),
      ),
  ];
  for (const o of objects.filter((x) => tierOf(x.kind) === 2)) create(o, tier1);
  return { resources, secrets: secretResources };
}

/** The gateway's URL: its load balancer's address once assigned, else the in-cluster name. */
export function gatewayEndpointOf(
  objects: readonly KubeObject[],
  namespace: string,
  component: string,
  resources: Readonly<Record<string, pulumi.CustomResource>>,
): pulumi.Output<string> | undefined {
  const obj = objects.find(
    (o) =>
      o.kind === "Service" &&
      o.metadata.labels?.[LABELS.role] === "gateway" &&
      o.metadata.namespace === namespace,
  );
  if (!obj) return undefined;
  const service = resources[childName(component, obj)] as k8s.core.v1.Service;
  const spec = obj.spec as { ports?: { port: number; name?: string }[] } | undefined;
  const port = spec?.ports?.find((p) => p.name === "http")?.port ?? spec?.ports?.[0]?.port ?? 80;
  const inCluster = `http://${obj.metadata.name}.${obj.metadata.namespace}.svc.cluster.local:${port}`;
  return service.status.apply((status) => {
    const ingress = status?.loadBalancer?.ingress?.[0];
    const host = ingress?.hostname || ingress?.ip;
    return host ? `http://${host}:${port}` : inCluster;
  });
}

/** The namespace's name once its Namespace exists (or the name, when the objects hold no Namespace). */
export function namespaceOf(
  objects: readonly KubeObject[],
  namespace: string,
  component: string,
  resources: Readonly<Record<string, pulumi.CustomResource>>,
): pulumi.Output<string> {
  const obj = objects.find((o) => o.kind === "Namespace" && o.metadata.name === namespace);
  return obj
    ? (resources[childName(component, obj)] as k8s.core.v1.Namespace).metadata.name
    : pulumi.output(namespace);
}
