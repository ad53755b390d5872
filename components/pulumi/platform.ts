/**
 * `Platform` (`meshgate:index:Platform`): a whole mesh on Kubernetes from one spec —
 * spec → validate → translate → `MeshCa` → identity Secrets → the chart's objects as typed
 * `@pulumi/kubernetes` resources, in dependency order.
 *
 * Everything about the spec and the chart's options is checked before the component registers
 * anything: a bad spec throws `pulumi.InputPropertiesError` naming every path (`spec.services.orders.port`),
 * so `pulumi preview`/`up` stop before the first resource.
 *
 * Order: Namespaces and CRDs → the identity Secrets (from MeshCa) and every object that configures
 * (ServiceAccounts, RBAC, ConfigMaps, Services, NetworkPolicies, cert-manager objects, …) → the
 * workloads (Deployments, StatefulSets, DaemonSets) and what acts on them (HPA, PDB). Each tier
 * `dependsOn` the one before, so a pod never starts before its identity, config and NetworkPolicies.
 *
 * Children are parented to the component and named `<name>-<kind>-<namespace>-<object name>`
 * (lower-case kind; cluster-scoped objects have no namespace part), so names are stable and two
 * Platforms in one stack do not collide.
 */
import { readFileSync } from "node:fs";
import { extname } from "node:path";
import * as k8s from "@pulumi/kubernetes";
import * as pulumi from "@pulumi/pulumi";
import {
  ChartInputError,
  DEFAULT_CA_SECRET,
  DEFAULT_RUNTIME_IMAGE,
  IDENTITY_SECRET_KEYS,
  LABELS,
  secretNames,
  synthesize,
  type ChartOptions,
  type KubeObject,
} from "../kubernetes/index.ts";
import type { SpecError } from "../spec/errors.ts";
import { loadSpecText } from "../spec/load.ts";
import { parseSpec } from "../spec/parse.ts";
import type { MeshSpecInput } from "../spec/schema.ts";
import type { TranslateResult } from "../translate/ir.ts";
import { translate } from "../translate/translate.ts";
import { MeshCa, type MeshCaRotation } from "./ca.ts";

/** The property that carries the spec for the CrossGuard pack (policies/pack: SPEC_PROPERTY). */
export const SPEC_OUTPUT = "meshgateSpec";

export interface PlatformArgs {
  /**
   * The mesh spec: a `defineMesh({...})` value or a plain object as the YAML would parse, or the path
   * of a `.yaml`/`.yml`/`.json` spec file (relative to the working directory of the Pulumi program).
   * For a TypeScript spec module, import it and pass its default export (or use `loadPlatformSpec`).
   */
  spec: MeshSpecInput | string;
  /**
   * The Kubernetes provider every object is created with.
   * @default the stack's default provider (stack config `kubernetes:kubeconfig`, else the ambient kubeconfig and context)
   */
  provider?: k8s.Provider;
  /**
   * The image the gateway and sidecar containers run.
   * @default the spec's `targets.kubernetes.runtimeImage`, else `ghcr.io/meshgate/runtime:<package version>`
   */
  runtimeImage?: string;
  /**
   * Where workload identities come from: `secrets` — MeshCa issues every SVID with @pulumi/tls and this
   * component writes the Secrets the pods mount; `cert-manager` — MeshCa issues the root and intermediate
   * only, this component writes them to the Secret `caSecretName` and cert-manager's CA Issuer issues
   * (and renews) the SVIDs (cert-manager must be installed).
   * @default the spec's `mesh.ca.provider`: meshgate → `{ mode: "secrets" }`, cert-manager → `{ mode: "cert-manager", caSecretName: "meshgate-ca" }`
   */
  identities?: ChartOptions["identities"];
  /**
   * Observability backends: `bundled` (Prometheus, Grafana, OpenTelemetry Collector, Tempo/Jaeger in
   * their own namespace), `operator` (ServiceMonitors and a PrometheusRule), `none`.
   * @default from the spec's `observability.metrics.backend`
   */
  observability?: ChartOptions["observability"];
  /**
   * The namespace of the bundled backends (or of the Prometheus Operator, which may scrape the proxies).
   * @default bundled: `<namespace>-observability`; operator: `monitoring`
   */
  observabilityNamespace?: string;
  /**
   * The mesh's namespace (it is part of every SPIFFE ID).
   * @default the spec's `namespace`, else its `name`
   */
  namespace?: string;
  /** The mesh CA's staged root rotation (see MeshCa). @default no rotation in progress */
  caRotation?: MeshCaRotation;
}

/** The spec given as a path: read synchronously (text formats), so that errors precede any resource. */
type Source = { raw: unknown; text: string | null; file: string | null };

function specProblem(path: string, reason: string): pulumi.InputPropertyErrorDetails {
  return { propertyPath: path, reason };
}

function readSource(spec: MeshSpecInput | string): Source | pulumi.InputPropertyErrorDetails {
  if (typeof spec !== "string") return { raw: spec, text: null, file: null };
  const ext = extname(spec).toLowerCase();
  if (![".yaml", ".yml", ".json"].includes(ext))
    return specProblem(
      "spec",
      `${spec}: Platform reads .yaml, .yml and .json spec files; import a TypeScript spec module and pass its default export (or await loadPlatformSpec(path))`,
    );
  try {
    return { raw: undefined, text: readFileSync(spec, "utf8"), file: spec };
  } catch (err) {
    return specProblem(
      "spec",
      `cannot read ${spec}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message} [E_SPEC_FILE_NOT_FOUND] (fix: the path is relative to the Pulumi program's working directory)`,
    );
  }
}

const describeSpecError = (e: SpecError, file: string | null) =>
  `${file ? `${file}${e.line ? `:${e.line}:${e.column}` : ""}: ` : ""}${e.message} [${e.code}]${e.hint ? ` (fix: ${e.hint})` : ""}`;

/** What the component needs, or every problem with the arguments. */
export interface PreparedPlatform {
  result: TranslateResult;
  objects: readonly KubeObject[];
  chart: ChartOptions;
  /** The spec as written (plain JSON) or the spec file's text: what the CrossGuard pack re-reads. */
  carried: unknown;
}

/**
 * Validates and translates the spec and synthesizes the chart (pure, no resources): the component's
 * first step, exported for tools that want the same checks without Pulumi's engine.
 */
export function preparePlatform(args: PlatformArgs): PreparedPlatform | pulumi.InputPropertyErrorDetails[] {
  const source = readSource(args.spec);
  if ("propertyPath" in source) return [source];
  let parsed;
  // The spec as written, for the CrossGuard pack: the file's text, or the value (with the namespace given).
  let carried: unknown = source.text;
  if (source.text !== null && args.namespace === undefined) parsed = loadSpecText(source.text);
  else {
    let raw = source.raw;
    if (source.text !== null) {
      const loaded = loadSpecText(source.text);
      if (!loaded.ok) return loaded.errors.map((e) => specError(e, source.file));
      raw = loaded.raw;
    }
    if (args.namespace !== undefined) raw = { ...(raw as object), namespace: args.namespace };
    carried = JSON.parse(JSON.stringify(raw));
    parsed = parseSpec(raw);
  }
  if (!parsed.ok) return parsed.errors.map((e) => specError(e, source.file));
  const result = translate(parsed.spec);
  const chart: ChartOptions = {
    ...(args.runtimeImage !== undefined ? { runtimeImage: args.runtimeImage } : {}),
    ...(args.identities !== undefined ? { identities: args.identities } : {}),
    ...(args.observability !== undefined ? { observability: args.observability } : {}),
    ...(args.observabilityNamespace !== undefined
      ? { observabilityNamespace: args.observabilityNamespace }
      : {}),
  };
  let objects: readonly KubeObject[];
  try {
    objects = synthesize(result, chart);
  } catch (err) {
    if (!(err instanceof ChartInputError)) throw err;
    const m = /^([A-Za-z.]+): ([\s\S]*)$/.exec(err.message);
    return [specProblem(m ? m[1]! : "(chart)", m ? m[2]! : err.message)];
  }
  return { result, objects, chart, carried };
}

function specError(e: SpecError, file: string | null): pulumi.InputPropertyErrorDetails {
  return specProblem(e.path ? `spec.${e.path}` : "spec", describeSpecError(e, file));
}

// ───────────── Kubernetes objects as typed resources ─────────────

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

// ───────────── the component ─────────────

/**
 * A meshgate mesh on Kubernetes: the gateway, every service with its sidecar, the mesh CA and
 * identities, NetworkPolicies, ConfigMaps with each proxy's RuntimeConfig, and the observability
 * backends — from one spec.
 */
export class Platform extends pulumi.ComponentResource {
  /** The mesh's namespace (resolves once the Namespace exists). */
  readonly namespace: pulumi.Output<string>;
  /**
   * Where clients reach the gateway: `http://<load balancer host or IP>:<port>` once the gateway's
   * LoadBalancer has an address, else its in-cluster URL `http://gateway.<ns>.svc.cluster.local:<port>`.
   */
  readonly gatewayEndpoint: pulumi.Output<string>;
  /** The mesh CA's current root certificate (PEM). */
  readonly caCertificatePem: pulumi.Output<string>;
  /** The roots every proxy trusts (PEM; two during a root rotation). */
  readonly trustBundlePem: pulumi.Output<string>;
  /** Each workload's SPIFFE ID. */
  readonly spiffeIds: Readonly<Record<string, string>>;
  /** Each proxy's RuntimeConfig hash (`sha256:…`): what the pods' config-hash annotation rolls on. */
  readonly configHashes: Readonly<Record<string, string>>;
  /** The mesh CA. */
  readonly ca: MeshCa;
  /** The Kubernetes resources, by child name. */
  readonly resources: Readonly<Record<string, pulumi.CustomResource>>;
  /** The translated spec (the IR and the proxies' configs) this component deployed. */
  readonly translated: TranslateResult;

  /**
   * @param name The unique name of the component; child names are derived from it.
   * @param args The spec and the deployment options (every one has a default from the spec).
   * @param opts Options for the component; `providers`/`provider` reach the children as usual.
   */
  constructor(name: string, args: PlatformArgs, opts?: pulumi.ComponentResourceOptions) {
    // Everything is checked before super(): a bad spec registers nothing, not even the component.
    const prepared = preparePlatform(args);
    if (Array.isArray(prepared))
      throw new pulumi.InputPropertiesError({
        message: `meshgate Platform ${name}: invalid arguments (${prepared.length} problem${prepared.length === 1 ? "" : "s"})`,
        errors: prepared,
      });
    super("meshgate:index:Platform", name, {}, opts);
    const { result, objects, carried } = prepared;
    const { infra } = result;
    this.translated = result;
    for (const d of result.diagnostics)
      pulumi.log[d.severity === "warning" ? "warn" : "info"](
        `${d.path}: ${d.message} [${d.code}] (fix: ${d.hint})`,
        this,
      );

    const childOpts = (dependsOn: pulumi.Resource[]): pulumi.CustomResourceOptions => ({
      parent: this,
      ...(args.provider ? { provider: args.provider } : {}),
      ...(dependsOn.length > 0 ? { dependsOn } : {}),
    });
    const resources: Record<string, pulumi.CustomResource> = {};
    const create = (obj: KubeObject, dependsOn: pulumi.Resource[]) => {
      const make = KINDS[`${obj.apiVersion}/${obj.kind}`] ?? makeCustom;
      const n = childName(name, obj);
      const r = make(n, obj, childOpts(dependsOn));
      resources[n] = r;
      return r;
    };

    // Tier 0: namespaces and CRDs.
    const tier0 = objects.filter((o) => tierOf(o.kind) === 0).map((o) => create(o, []));

    // The CA, and the identity Secrets the chart's pods mount.
    const identityMode =
      args.identities ??
      (infra.ca.provider === "cert-manager"
        ? ({ mode: "cert-manager", caSecretName: DEFAULT_CA_SECRET } as const)
        : ({ mode: "secrets" } as const));
    this.ca = new MeshCa(
      `${name}-ca`,
      {
        trustDomain: infra.trustDomain,
        identities: identityMode.mode === "secrets" ? infra.identities : [],
        policy: infra.ca,
        ...(args.caRotation ? { rotation: args.caRotation } : {}),
      },
      { parent: this },
    );
    const labels = {
      [LABELS.partOf]: infra.name,
      [LABELS.managedBy]: "meshgate",
      [LABELS.component]: "identity",
    };
    const secret = (secretName: string, type: string, stringData: Record<string, pulumi.Input<string>>) => {
      const obj = {
        apiVersion: "v1",
        kind: "Secret",
        metadata: { name: secretName, namespace: infra.namespace, labels },
        type,
      } as const;
      const n = childName(name, obj);
      const r = new k8s.core.v1.Secret(n, { ...obj, stringData }, childOpts(tier0));
      resources[n] = r;
      return r;
    };
    const identitySecrets: pulumi.CustomResource[] = [];
    if (identityMode.mode === "secrets") {
      const names = secretNames(infra);
      identitySecrets.push(
        secret(names.trustBundle, "Opaque", {
          [IDENTITY_SECRET_KEYS.bundle]: this.ca.trustBundlePem,
          [IDENTITY_SECRET_KEYS.intermediates]: this.ca.intermediatesPem,
        }),
      );
      for (const identity of infra.identities) {
        const svid = this.ca.svids[identity.name]!;
        identitySecrets.push(
          secret(names.svid[identity.name]!, "Opaque", {
            [IDENTITY_SECRET_KEYS.svid]: svid.certChainPem,
            [IDENTITY_SECRET_KEYS.key]: svid.keyPem,
          }),
        );
      }
    } else {
      // cert-manager's CA Issuer signs with the intermediate; ca.crt carries the roots to the SVID Secrets.
      identitySecrets.push(
        secret(identityMode.caSecretName, "kubernetes.io/tls", {
          "tls.crt": pulumi.concat(this.ca.issuerCertificatePem, this.ca.rootCertificatePem),
          "tls.key": this.ca.issuerKeyPem,
          "ca.crt": this.ca.trustBundlePem,
        }),
      );
    }

    // Tier 1: what configures; tier 2: the workloads.
    const tier1 = [
      ...identitySecrets,
      ...objects
        .filter((o) => tierOf(o.kind) === 1)
        // cert-manager's Issuer reads the CA Secret; everything else needs only its namespace.
        .map((o) =>
          create(o, o.apiVersion.startsWith("cert-manager.io/") ? [...tier0, ...identitySecrets] : tier0),
        ),
    ];
    for (const o of objects.filter((x) => tierOf(x.kind) === 2)) create(o, tier1);
    this.resources = Object.freeze(resources);

    const nsObject = objects.find((o) => o.kind === "Namespace" && o.metadata.name === infra.namespace);
    this.namespace = nsObject
      ? (resources[childName(name, nsObject)] as k8s.core.v1.Namespace).metadata.name
      : pulumi.output(infra.namespace);
    const gatewayService = objects.find(
      (o) =>
        o.kind === "Service" &&
        o.metadata.labels?.[LABELS.role] === "gateway" &&
        o.metadata.namespace === infra.namespace,
    );
    this.gatewayEndpoint = gatewayService
      ? endpointOf(resources[childName(name, gatewayService)] as k8s.core.v1.Service, gatewayService)
      : pulumi.output("");
    this.caCertificatePem = this.ca.rootCertificatePem;
    this.trustBundlePem = this.ca.trustBundlePem;
    this.spiffeIds = Object.freeze(Object.fromEntries(infra.identities.map((i) => [i.name, i.spiffeId])));
    this.configHashes = Object.freeze(
      Object.fromEntries([
        ...(result.runtime.gateway ? [["gateway", result.runtime.gateway.hash]] : []),
        ...result.runtime.sidecars.map((s) => [s.name, s.hash]),
      ]),
    );
    this.registerOutputs({
      namespace: this.namespace,
      gatewayEndpoint: this.gatewayEndpoint,
      caCertificatePem: this.caCertificatePem,
      trustBundlePem: this.trustBundlePem,
      spiffeIds: this.spiffeIds,
      configHashes: this.configHashes,
      runtimeImage:
        prepared.chart.runtimeImage ?? infra.targets.kubernetes?.runtimeImage ?? DEFAULT_RUNTIME_IMAGE,
      [SPEC_OUTPUT]: carried,
    });
  }
}

/** The gateway's URL: its load balancer's address once assigned, else the in-cluster name. */
function endpointOf(service: k8s.core.v1.Service, obj: KubeObject): pulumi.Output<string> {
  const spec = obj.spec as { ports?: { port: number; name?: string }[] } | undefined;
  const port = spec?.ports?.find((p) => p.name === "http")?.port ?? spec?.ports?.[0]?.port ?? 80;
  const inCluster = `http://${obj.metadata.name}.${obj.metadata.namespace}.svc.cluster.local:${port}`;
  return service.status.apply((status) => {
    const ingress = status?.loadBalancer?.ingress?.[0];
    const host = ingress?.hostname || ingress?.ip;
    return host ? `http://${host}:${port}` : inCluster;
  });
}

/**
 * A spec for `Platform` from any spec file, TypeScript modules included (they are imported, which is
 * asynchronous): the module's default export, or the path itself for text formats.
 */
export async function loadPlatformSpec(path: string): Promise<MeshSpecInput | string> {
  const ext = extname(path).toLowerCase();
  if (![".ts", ".mts", ".js", ".mjs"].includes(ext)) return path;
  const { loadSpecFile } = await import("../spec/load.ts");
  const loaded = await loadSpecFile(path);
  if (loaded.raw !== undefined) return loaded.raw as MeshSpecInput;
  throw new pulumi.InputPropertiesError({
    message: `meshgate: cannot load the spec module ${path}`,
    errors: loaded.errors.map((e) => specError(e, path)),
  });
}
