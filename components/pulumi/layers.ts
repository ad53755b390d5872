/**
 * The two layers of a `Platform`, for users who deploy them separately (the mesh in one program, the
 * edge gateway owned by another team):
 *
 * - `Mesh` (`meshgate:index:Mesh`): the namespace, the CA (`MeshCa`), the identity Secrets, every
 *   service workload with its sidecar, their ConfigMaps, the NetworkPolicies, the observability backends
 *   — every chart object that is not the gateway's;
 * - `Gateway` (`meshgate:index:Gateway`): the gateway's Deployment, Service, HPA, PDB, ConfigMap,
 *   ServiceAccount and NetworkPolicy, depending on its `Mesh` and mounting the identity the Mesh's CA
 *   issued it.
 *
 * `Mesh` + `Gateway` register exactly the Kubernetes objects one `Platform` registers (the split is
 * `isGatewayObject`), through the same registration (`registerChart`), so the two shapes are
 * interchangeable in the cluster. Both check everything before registering anything: a bad spec throws
 * `pulumi.InputPropertiesError` naming every path.
 */
import type * as k8s from "@pulumi/kubernetes";
import * as pulumi from "@pulumi/pulumi";
import type { KubeObject } from "../kubernetes/index.ts";
import { NAMES } from "../kubernetes/model.ts";
import type { MeshSpecInput } from "../spec/schema.ts";
import type { TranslateResult } from "../translate/ir.ts";
import { MeshCa } from "./ca.ts";
import {
  identityModeOf,
  logDiagnostics,
  meshCaArgs,
  preparePlatform,
  runtimeImageOf,
  SPEC_OUTPUT,
  carriedSpecOutput,
  type PlatformArgs,
  type PreparedPlatform,
} from "./platform.ts";
import {
  childName,
  gatewayEndpointOf,
  identitySecrets,
  isGatewayObject,
  namespaceOf,
  registerChart,
} from "./register.ts";

/** `Mesh`'s arguments: `Platform`'s (every one has a default from the spec). */
/**
 * A Mesh's arguments: Platform's, with a plain-string runtime image (a Gateway reuses it) and without
 * the options that take outputs (use Platform for those).
 */
export type MeshArgs = Omit<
  PlatformArgs,
  | "runtimeImage"
  | "gatewayServiceAnnotations"
  | "prometheusRemoteWrite"
  | "prometheusServiceAccountAnnotations"
> & { runtimeImage?: string };

export interface GatewayArgs {
  /**
   * The mesh spec (as for `Platform`): the Gateway deploys its `gateway` section. It must describe the
   * same mesh as `mesh` (name, namespace, trust domain) and declare a gateway.
   * @default the spec the Mesh was given
   */
  spec?: MeshSpecInput | string;
  /** The Mesh the gateway joins: its namespace, its CA's identity for the gateway, its options. */
  mesh: Mesh;
  /** The Kubernetes provider of the gateway's objects. @default the Mesh's provider */
  provider?: k8s.Provider;
  /**
   * The image the gateway container runs.
   * @default the Mesh's runtime image (its argument, the spec's `targets.kubernetes.runtimeImage`, else `ghcr.io/meshgate/runtime:<package version>`)
   */
  runtimeImage?: string;
}

function invalid(kind: string, name: string, errors: pulumi.InputPropertyErrorDetails[]): never {
  throw new pulumi.InputPropertiesError({
    message: `meshgate ${kind} ${name}: invalid arguments (${errors.length} problem${errors.length === 1 ? "" : "s"})`,
    errors,
  });
}

/**
 * The mesh layer of a meshgate platform: namespace, CA and identities, the services with their sidecars,
 * ConfigMaps, NetworkPolicies and observability — everything but the edge gateway (see `Gateway`).
 */
export class Mesh extends pulumi.ComponentResource {
  /** The mesh's namespace (resolves once the Namespace exists). */
  readonly namespace: pulumi.Output<string>;
  /** The mesh CA's current root certificate (PEM). */
  readonly caCertificatePem: pulumi.Output<string>;
  /** The roots every proxy trusts (PEM; two during a root rotation). */
  readonly trustBundlePem: pulumi.Output<string>;
  /**
   * The name of the Secret holding the gateway's SVID (written by this component, or by cert-manager
   * from this component's CA Secret); undefined when the spec declares no gateway.
   */
  readonly gatewayIdentitySecretName: pulumi.Output<string> | undefined;
  /** Each workload's SPIFFE ID (the gateway's included: its identity is the mesh's). */
  readonly spiffeIds: Readonly<Record<string, string>>;
  /** Each sidecar's RuntimeConfig hash (`sha256:…`). */
  readonly configHashes: Readonly<Record<string, string>>;
  /** The mesh CA. */
  readonly ca: MeshCa;
  /** The Kubernetes resources, by child name. */
  readonly resources: Readonly<Record<string, pulumi.CustomResource>>;
  /** The translated spec this component deployed. */
  readonly translated: TranslateResult;
  /** The arguments a `Gateway` joining this mesh synthesizes its objects with (the same chart). */
  readonly gatewayDefaults: Readonly<Omit<MeshArgs, "caRotation">>;

  /**
   * @param name The unique name of the component; child names are derived from it.
   * @param args The spec and the deployment options (as `Platform`'s).
   * @param opts Options for the component.
   */
  constructor(name: string, args: MeshArgs, opts?: pulumi.ComponentResourceOptions) {
    const prepared = preparePlatform(args);
    if (Array.isArray(prepared)) invalid("Mesh", name, prepared);
    super("meshgate:index:Mesh", name, {}, opts);
    const { result, carried } = prepared;
    const { infra } = result;
    this.translated = result;
    const { caRotation: _rotation, ...defaults } = args;
    this.gatewayDefaults = Object.freeze({ ...defaults, runtimeImage: runtimeImageOf(prepared) });
    logDiagnostics(result, this);

    const objects = prepared.objects.filter((o) => !isGatewayObject(o, infra));
    const identityMode = identityModeOf(args, result);
    this.ca = new MeshCa(`${name}-ca`, meshCaArgs(args, result, identityMode), { parent: this });
    const { resources } = registerChart(
      { parent: this, name, ...(args.provider ? { provider: args.provider } : {}) },
      objects,
      identitySecrets(infra, this.ca, identityMode),
    );
    this.resources = Object.freeze(resources);

    this.namespace = namespaceOf(objects, infra.namespace, name, resources);
    this.caCertificatePem = this.ca.rootCertificatePem;
    this.trustBundlePem = this.ca.trustBundlePem;
    this.gatewayIdentitySecretName = gatewaySecretOf(prepared, name, resources);
    this.spiffeIds = Object.freeze(Object.fromEntries(infra.identities.map((i) => [i.name, i.spiffeId])));
    this.configHashes = Object.freeze(
      Object.fromEntries(result.runtime.sidecars.map((s) => [s.name, prepared.configHashes[s.name]!])),
    );
    this.registerOutputs({
      namespace: this.namespace,
      caCertificatePem: this.caCertificatePem,
      trustBundlePem: this.trustBundlePem,
      gatewayIdentitySecretName: this.gatewayIdentitySecretName,
      spiffeIds: this.spiffeIds,
      configHashes: this.configHashes,
      runtimeImage: this.gatewayDefaults.runtimeImage,
      [SPEC_OUTPUT]: carriedSpecOutput(carried, result),
    });
  }
}

/**
 * The gateway's SVID Secret name, as an output of the resource that produces the Secret: the Secret
 * itself (`secrets` mode) or the cert-manager Certificate that writes it.
 */
function gatewaySecretOf(
  prepared: PreparedPlatform,
  component: string,
  resources: Readonly<Record<string, pulumi.CustomResource>>,
): pulumi.Output<string> | undefined {
  const gateway = prepared.result.infra.workloads.find((w) => w.kind === "gateway");
  if (!gateway) return undefined;
  const secretName = NAMES.svidSecret(gateway.name);
  const ns = prepared.result.infra.namespace;
  const secret =
    resources[childName(component, { kind: "Secret", metadata: { name: secretName, namespace: ns } })];
  if (secret) return (secret as k8s.core.v1.Secret).metadata.name;
  const certificate = prepared.objects.find(
    (o: KubeObject) =>
      o.kind === "Certificate" && (o.spec as { secretName?: string } | undefined)?.secretName === secretName,
  );
  const producer = certificate ? resources[childName(component, certificate)] : undefined;
  if (!producer)
    throw new Error(`meshgate: the chart has no Secret or Certificate for the gateway's SVID ${secretName}`);
  return producer.urn.apply(() => secretName);
}

/**
 * The edge gateway of a `Mesh`: its Deployment, Service, HorizontalPodAutoscaler, PodDisruptionBudget,
 * ConfigMap, ServiceAccount and NetworkPolicy, in the mesh's namespace, after the mesh (`dependsOn`),
 * with the identity the mesh's CA issued it.
 */
export class Gateway extends pulumi.ComponentResource {
  /**
   * Where clients reach the gateway: `http://<load balancer host or IP>:<port>` once the gateway's
   * LoadBalancer has an address, else its in-cluster URL `http://gateway.<ns>.svc.cluster.local:<port>`.
   */
  readonly gatewayEndpoint: pulumi.Output<string>;
  /** The gateway's SPIFFE ID (issued by the Mesh's CA). */
  readonly spiffeId: string;
  /** The gateway's RuntimeConfig hash (`sha256:…`). */
  readonly configHash: string;
  /** The Kubernetes resources, by child name. */
  readonly resources: Readonly<Record<string, pulumi.CustomResource>>;
  /** The Mesh this gateway joined. */
  readonly mesh: Mesh;

  /**
   * @param name The unique name of the component; child names are derived from it.
   * @param args The Mesh, and optionally the spec, provider and image.
   * @param opts Options for the component; the Mesh is added to its `dependsOn`.
   */
  constructor(name: string, args: GatewayArgs, opts?: pulumi.ComponentResourceOptions) {
    const prepared = prepareGateway(args);
    if (Array.isArray(prepared)) invalid("Gateway", name, prepared);
    const { mesh } = args;
    super("meshgate:index:Gateway", name, {}, { ...opts, dependsOn: withMesh(opts?.dependsOn, mesh) });
    const { result } = prepared;
    const { infra } = result;
    this.mesh = mesh;
    logDiagnostics(result, this);

    const objects = prepared.objects.filter((o) => isGatewayObject(o, infra));
    const provider = args.provider ?? mesh.gatewayDefaults.provider;
    const { resources } = registerChart(
      { parent: this, name, after: [mesh], ...(provider ? { provider } : {}) },
      objects,
    );
    this.resources = Object.freeze(resources);
    this.gatewayEndpoint = gatewayEndpointOf(objects, infra.namespace, name, resources)!;
    this.spiffeId = infra.identities.find((i) => i.name === "gateway")!.spiffeId;
    // The gateway pods' config-hash annotation (PreparedPlatform's configHashes).
    this.configHash = prepared.configHashes.gateway!;
    this.registerOutputs({
      gatewayEndpoint: this.gatewayEndpoint,
      spiffeId: this.spiffeId,
      configHash: this.configHash,
      identitySecretName: mesh.gatewayIdentitySecretName,
      runtimeImage: runtimeImageOf(prepared),
      // A spec of its own (its routes may differ from the Mesh's) is carried for the CrossGuard pack too.
      ...(args.spec !== undefined ? { [SPEC_OUTPUT]: carriedSpecOutput(prepared.carried, result) } : {}),
    });
  }
}

function withMesh(
  dependsOn: pulumi.ComponentResourceOptions["dependsOn"],
  mesh: Mesh,
): pulumi.Input<pulumi.Input<pulumi.Resource>[]> {
  if (dependsOn === undefined) return [mesh];
  if (Array.isArray(dependsOn)) return [...(dependsOn as pulumi.Input<pulumi.Resource>[]), mesh];
  if (pulumi.Resource.isInstance(dependsOn)) return [dependsOn, mesh];
  return pulumi
    .output(dependsOn as pulumi.Input<pulumi.Input<pulumi.Resource>[] | pulumi.Resource>)
    .apply((d) => [...(Array.isArray(d) ? d : [d]), mesh]);
}

/**
 * The Gateway's checks and chart (pure, no resources): the spec (the Mesh's by default) with the
 * Mesh's options, which must describe the Mesh's mesh and declare a gateway.
 */
export function prepareGateway(args: GatewayArgs): PreparedPlatform | pulumi.InputPropertyErrorDetails[] {
  if (!(args.mesh instanceof Mesh))
    return [
      { propertyPath: "mesh", reason: "a Gateway joins a Mesh: pass the Mesh component (new Mesh(...))" },
    ];
  const defaults = args.mesh.gatewayDefaults;
  const prepared = preparePlatform({
    ...defaults,
    spec: args.spec ?? defaults.spec,
    runtimeImage: args.runtimeImage ?? defaults.runtimeImage,
  });
  if (Array.isArray(prepared)) return prepared;
  const ours = prepared.result.infra;
  const theirs = args.mesh.translated.infra;
  const errors: pulumi.InputPropertyErrorDetails[] = [];
  for (const field of ["name", "namespace", "trustDomain"] as const)
    if (ours[field] !== theirs[field])
      errors.push({
        propertyPath: `spec.${field}`,
        reason: `the Gateway's spec has ${field} "${ours[field]}" but its Mesh "${theirs[field]}" (fix: give the Gateway the Mesh's spec)`,
      });
  const gateway = ours.workloads.find((w) => w.kind === "gateway");
  if (!gateway)
    errors.push({
      propertyPath: "spec.gateway",
      reason: "the spec declares no gateway (fix: add a gateway section with its listeners and routes)",
    });
  else if (
    errors.length === 0 &&
    args.mesh.spiffeIds[gateway.name] !== ours.identities.find((i) => i.name === gateway.name)?.spiffeId
  )
    errors.push({
      propertyPath: "mesh",
      reason: `the Mesh issues no identity for the gateway (fix: give the Mesh a spec that declares the gateway)`,
    });
  return errors.length > 0 ? errors : prepared;
}
