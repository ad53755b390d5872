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
import type * as k8s from "@pulumi/kubernetes";
import * as pulumi from "@pulumi/pulumi";
import {
  ChartInputError,
  DEFAULT_CA_SECRET,
  DEFAULT_RUNTIME_IMAGE,
  synthesize,
  type ChartOptions,
  type KubeObject,
} from "../kubernetes/index.ts";
import { remoteWriteUrlProblem, resolve, runtimeImageProblem } from "../kubernetes/model.ts";
import { configAnnotationHash, configHoldsCredentials, kubernetesConfig } from "../kubernetes/workloads.ts";
import type { SpecError } from "../spec/errors.ts";
import { loadSpecText } from "../spec/load.ts";
import { parseSpec } from "../spec/parse.ts";
import type { MeshSpecInput } from "../spec/schema.ts";
import type { TranslateResult } from "../translate/ir.ts";
import { translate } from "../translate/translate.ts";
import { MeshCa, type MeshCaArgs, type MeshCaRotation } from "./ca.ts";
import {
  gatewayEndpointOf,
  identitySecrets,
  namespaceOf,
  mapValues,
  registerChart,
  resolveDeferred,
  type IdentityMode,
} from "./register.ts";

export { childName, tierOf, resolveDeferred } from "./register.ts";

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
   * The image the gateway and sidecar containers run: a string, or an output such as the digest
   * reference of a pushed `RuntimeImage` (`ref`) — an output is rendered into the chart as a placeholder
   * and substituted in the registered resources' inputs (see `resolveDeferred`).
   * @default the spec's `targets.kubernetes.runtimeImage`, else `ghcr.io/meshgate/runtime:<package version>`
   */
  runtimeImage?: pulumi.Input<string>;
  /**
   * Annotations of the gateway's Service (values may be outputs), e.g. the AWS Network Load Balancer's.
   * @default none
   */
  gatewayServiceAnnotations?: Record<string, pulumi.Input<string>>;
  /**
   * More labels of the mesh namespace, e.g. the AWS Load Balancer Controller's
   * `elbv2.k8s.aws/pod-readiness-gate-inject: enabled` (the chart's own labels cannot be replaced).
   * @default none
   */
  namespaceLabels?: Record<string, string>;
  /**
   * Where the bundled Prometheus also remote-writes (the URL may be an output, e.g. an Amazon Managed
   * Prometheus workspace's `<endpoint>api/v1/remote_write`), SigV4-signed in `sigv4Region` when given.
   * Only with bundled observability.
   * @default none
   */
  prometheusRemoteWrite?: { url: pulumi.Input<string>; sigv4Region?: string };
  /**
   * Annotations of the bundled Prometheus' ServiceAccount (values may be outputs), e.g.
   * `eks.amazonaws.com/role-arn` for IAM roles for service accounts.
   * @default none
   */
  prometheusServiceAccountAnnotations?: Record<string, pulumi.Input<string>>;
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
   * The cluster's DNS servers, the only destination of the pods' DNS egress (e.g. add NodeLocal
   * DNSCache's `cidrs: ["169.254.20.10/32"]`).
   * @default `{ namespace: "kube-system", podLabels: { "k8s-app": "kube-dns" } }`
   */
  dns?: ChartOptions["dns"];
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
  /**
   * The chart's placeholders for the arguments given as outputs, each with its value: the objects hold
   * the placeholder, `resolveDeferred` puts the value in their place in the resources' inputs.
   */
  deferred: ReadonlyMap<string, pulumi.Input<string>>;
  /**
   * Each proxy's config-hash annotation as the chart's pods carry it (`gateway` and each service): the
   * hash of the config the chart mounts (kubernetesConfig: the bundled collector as the OTLP endpoint),
   * not translate's.
   */
  configHashes: Readonly<Record<string, string>>;
}

/**
 * The placeholder of an argument given as an output (a plain string is itself): a unique host name
 * (`meshgate-deferred-<n>.invalid`, RFC 2606: never resolvable) shaped as the field requires.
 *
 * The chart validates the placeholder, not the value: a field the chart checks (`check`, the same
 * check resolve applies to a string) is checked again on the resolved value, inside the output, so a
 * value the chart would refuse as a string fails the deployment (an InputPropertiesError naming the
 * field) instead of reaching a resource's inputs or the pods' config-hash annotation.
 */
function deferrer(deferred: Map<string, pulumi.Input<string>>) {
  return (
    value: pulumi.Input<string>,
    shape: (token: string) => string = (t) => t,
    checked?: { field: string; check: (value: string) => string | null },
  ): string => {
    if (typeof value === "string") return value;
    const token = shape(`meshgate-deferred-${deferred.size}.invalid`);
    deferred.set(
      token,
      checked
        ? pulumi.output(value).apply((v) => {
            const reason = checked.check(v);
            if (reason !== null)
              throw new pulumi.InputPropertiesError({
                message: `meshgate: invalid ${checked.field} (given as an output): ${reason}`,
                errors: [{ propertyPath: checked.field, reason }],
              });
            return v;
          })
        : value,
    );
    return token;
  };
}

/**
 * Validates and translates the spec and synthesizes the chart (pure, no resources): the component's
 * first step, exported for tools that want the same checks without Pulumi's engine.
 */
export function preparePlatform(args: PlatformArgs): PreparedPlatform | pulumi.InputPropertyErrorDetails[] {
  const spec = prepareSpec(args);
  if (Array.isArray(spec)) return spec;
  const { result, carried } = spec;
  const deferred = new Map<string, pulumi.Input<string>>();
  const defer = deferrer(deferred);
  const remoteWrite = args.prometheusRemoteWrite;
  const chart: ChartOptions = {
    ...(args.runtimeImage !== undefined
      ? {
          runtimeImage: defer(args.runtimeImage, (t) => `${t}/runtime@sha256:${"0".repeat(64)}`, {
            field: "runtimeImage",
            check: runtimeImageProblem,
          }),
        }
      : {}),
    ...(args.gatewayServiceAnnotations !== undefined
      ? { gatewayServiceAnnotations: mapValues(args.gatewayServiceAnnotations, (v) => defer(v)) }
      : {}),
    ...(remoteWrite !== undefined
      ? {
          prometheusRemoteWrite: {
            url: defer(remoteWrite.url, (t) => `https://${t}/`, {
              field: "prometheusRemoteWrite.url",
              check: remoteWriteUrlProblem,
            }),
            ...(remoteWrite.sigv4Region !== undefined ? { sigv4Region: remoteWrite.sigv4Region } : {}),
          },
        }
      : {}),
    ...(args.prometheusServiceAccountAnnotations !== undefined
      ? {
          prometheusServiceAccountAnnotations: mapValues(args.prometheusServiceAccountAnnotations, (v) =>
            defer(v),
          ),
        }
      : {}),
    ...(args.namespaceLabels !== undefined ? { namespaceLabels: args.namespaceLabels } : {}),
    ...(args.dns !== undefined ? { dns: args.dns } : {}),
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
    const m = /^([A-Za-z0-9.[\]]+): ([\s\S]*)$/.exec(err.message);
    // A spec field the chart refuses (gateway.oidc.<name>.secret, targets.kubernetes.…, mesh.ca.…) is the spec's.
    const path = m ? (/^(gateway|targets|mesh)\./.test(m[1]!) ? `spec.${m[1]!}` : m[1]!) : "(chart)";
    return [specProblem(path, m ? m[2]! : err.message)];
  }
  // Not the sealed hash: that of a config with a credential would let stack-output readers test guesses.
  const r = resolve(result, chart);
  const { gateway, sidecars } = result.runtime;
  const configHashes = Object.freeze(
    Object.fromEntries([
      ...(gateway ? [["gateway", configAnnotationHash(kubernetesConfig(r, gateway))]] : []),
      ...sidecars.map((s) => [s.name, configAnnotationHash(kubernetesConfig(r, s))]),
    ]),
  ) as Readonly<Record<string, string>>;
  return { result, objects, chart, carried, deferred, configHashes };
}

/**
 * Reads, validates and translates the spec (pure): the first step of every platform component. The
 * Kubernetes ones go on to synthesize the chart (preparePlatform); the Docker one plans containers.
 */
export function prepareSpec(
  args: Pick<PlatformArgs, "spec" | "namespace">,
): { result: TranslateResult; carried: unknown } | pulumi.InputPropertyErrorDetails[] {
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
  return { result: translate(parsed.spec), carried };
}

function specError(e: SpecError, file: string | null): pulumi.InputPropertyErrorDetails {
  return specProblem(e.path ? `spec.${e.path}` : "spec", describeSpecError(e, file));
}

/**
 * The spec as the `meshgateSpec` output carries it (for the CrossGuard pack, which sees secrets unwrapped):
 * a Pulumi secret when the spec holds a credential — a user or password in a URL that reaches a proxy's
 * config (configHoldsCredentials: Redis stores, the OTLP endpoint, JWKS and OIDC URLs) — so that it is
 * encrypted in the stack's state like the Secrets the chart renders those configs into.
 */
export function carriedSpecOutput(carried: unknown, result: TranslateResult): unknown {
  const { gateway, sidecars } = result.runtime;
  const configs = gateway ? [gateway, ...sidecars] : sidecars;
  return configs.some(configHoldsCredentials) ? pulumi.secret(carried) : carried;
}

/** The identity mode of the arguments, else the spec's CA provider's. */
export function identityModeOf(
  args: Pick<PlatformArgs, "identities">,
  result: TranslateResult,
): IdentityMode {
  return (
    args.identities ??
    (result.infra.ca.provider === "cert-manager"
      ? { mode: "cert-manager", caSecretName: DEFAULT_CA_SECRET }
      : { mode: "secrets" })
  );
}

/** The mesh CA's arguments: every identity's SVID in `secrets` mode, the root and intermediate only with cert-manager. */
export function meshCaArgs(
  args: Pick<PlatformArgs, "caRotation">,
  result: TranslateResult,
  identities: IdentityMode,
): MeshCaArgs {
  const { infra } = result;
  return {
    trustDomain: infra.trustDomain,
    identities: identities.mode === "secrets" ? infra.identities : [],
    policy: infra.ca,
    ...(args.caRotation ? { rotation: args.caRotation } : {}),
  };
}

/** Logs translate's diagnostics on a component. */
export function logDiagnostics(result: TranslateResult, resource: pulumi.Resource): void {
  for (const d of result.diagnostics)
    pulumi.log[d.severity === "warning" ? "warn" : "info"](
      `${d.path}: ${d.message} [${d.code}] (fix: ${d.hint})`,
      resource,
    );
}

/** The chart's runtime image: the argument, else the spec's, else the package's default. */
export function runtimeImageOf(prepared: PreparedPlatform): string {
  return (
    prepared.chart.runtimeImage ??
    prepared.result.infra.targets.kubernetes?.runtimeImage ??
    DEFAULT_RUNTIME_IMAGE
  );
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
  /** Each proxy's config hash (`sha256:…`): its pods' config-hash annotation (the config the chart mounts). */
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
    logDiagnostics(result, this);

    const identityMode = identityModeOf(args, result);
    this.ca = new MeshCa(`${name}-ca`, meshCaArgs(args, result, identityMode), { parent: this });
    const { resources } = registerChart(
      {
        parent: this,
        name,
        ...(args.provider ? { provider: args.provider } : {}),
        deferred: prepared.deferred,
      },
      objects,
      identitySecrets(infra, this.ca, identityMode),
    );
    this.resources = Object.freeze(resources);

    this.namespace = namespaceOf(objects, infra.namespace, name, resources);
    this.gatewayEndpoint = gatewayEndpointOf(objects, infra.namespace, name, resources) ?? pulumi.output("");
    this.caCertificatePem = this.ca.rootCertificatePem;
    this.trustBundlePem = this.ca.trustBundlePem;
    this.spiffeIds = Object.freeze(Object.fromEntries(infra.identities.map((i) => [i.name, i.spiffeId])));
    this.configHashes = prepared.configHashes;
    this.registerOutputs({
      namespace: this.namespace,
      gatewayEndpoint: this.gatewayEndpoint,
      caCertificatePem: this.caCertificatePem,
      trustBundlePem: this.trustBundlePem,
      spiffeIds: this.spiffeIds,
      configHashes: this.configHashes,
      runtimeImage: resolveDeferred(runtimeImageOf(prepared), prepared.deferred),
      [SPEC_OUTPUT]: carriedSpecOutput(carried, result),
    });
  }
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
