/**
 * What every part of the Kubernetes chart shares: the object type, the options and their defaults (from
 * the spec), labels, names, images, ports and paths. Pure; imports no cdk8s (chart.ts does).
 */
import { createRequire } from "node:module";
import { createHash } from "node:crypto";
import type { ObjectMeta } from "kubernetes-types/meta/v1.js";
import { parseCidr } from "../../runtime/decide/authorize.ts";
import { SIDECAR_NODE_FLAGS } from "../../runtime/contract/node-flags.ts";
import { IDENTITY_DIRS, IDENTITY_FILES } from "../translate/translate.ts";
import type { InfraIR, TranslateResult } from "../translate/ir.ts";

/** One Kubernetes object as plain JSON (what `kubectl apply` and Pulumi's ConfigGroup take). */
export interface KubeObject {
  readonly apiVersion: string;
  readonly kind: string;
  readonly metadata: ObjectMeta & { readonly name: string };
  readonly [field: string]: unknown;
}

export interface ChartOptions {
  /**
   * Runtime image reference (default: `targets.kubernetes.runtimeImage`, else `ghcr.io/meshgate/runtime:<package.json version>`).
   * It must have `node` on its PATH and the bundle at `/app/meshgate.js` (the sidecar's `command` is
   * SIDECAR_ENTRYPOINT), as runtime/Dockerfile builds it.
   */
  runtimeImage?: string;
  /**
   * "secrets": SVIDs/trust bundle come from Secrets the caller provides (names from `secretNames`),
   * "cert-manager": the chart emits cert-manager Issuer/Certificates (CA issuer, SVIDs of `mesh.ca.workloadTtl`).
   * @default `mesh.ca.provider`: meshgate → secrets, cert-manager → { mode: "cert-manager", caSecretName: "meshgate-ca" }
   */
  identities?: { mode: "secrets" } | { mode: "cert-manager"; caSecretName: string };
  /**
   * Observability backends: "bundled" (Prometheus, Grafana, OTel Collector, Tempo or Jaeger), "operator"
   * (ServiceMonitors/PrometheusRule for a Prometheus Operator), "none".
   * @default `observability.metrics.backend`: prometheus → bundled, prometheus-operator → operator, none → none
   */
  observability?: "bundled" | "operator" | "none";
  /**
   * The namespace Prometheus scrapes from: the NetworkPolicies admit scrapes of the proxies' admin ports
   * from there. In "bundled" mode the backends are deployed into it.
   * @default bundled: `<namespace>-observability`; operator: "monitoring"
   */
  observabilityNamespace?: string;
  /**
   * Annotations of the gateway's Service, e.g. the AWS load balancer's
   * (`service.beta.kubernetes.io/aws-load-balancer-type: external`, …).
   * @default none
   */
  gatewayServiceAnnotations?: Record<string, string>;
  /**
   * More labels of the mesh namespace, e.g. the AWS Load Balancer Controller's
   * `elbv2.k8s.aws/pod-readiness-gate-inject: enabled`. The chart's own labels (`app.kubernetes.io/*`,
   * `pod-security.kubernetes.io/*`) cannot be replaced.
   * @default none
   */
  namespaceLabels?: Record<string, string>;
  /**
   * Where the bundled Prometheus also remote-writes its samples (e.g. an Amazon Managed Prometheus
   * workspace's `<endpoint>api/v1/remote_write`, signed with SigV4 in `sigv4Region`). Only with
   * `observability: "bundled"`.
   * @default none (samples stay in the bundled Prometheus)
   */
  prometheusRemoteWrite?: { url: string; sigv4Region?: string };
  /**
   * Annotations of the bundled Prometheus' ServiceAccount, e.g. `eks.amazonaws.com/role-arn` (IAM roles
   * for service accounts: the role its remote write signs with). Only with `observability: "bundled"`.
   * @default none
   */
  prometheusServiceAccountAnnotations?: Record<string, string>;
  /**
   * The cluster's DNS servers: the only destination of the pods' DNS egress (port 53, UDP and TCP) —
   * pods labelled `podLabels` in `namespace`, and the addresses `cidrs` (e.g. NodeLocal DNSCache's
   * `169.254.20.10/32`). Not "anywhere on port 53": a pod could then reach any host that listens there.
   * @default `{ namespace: "kube-system", podLabels: { "k8s-app": "kube-dns" } }` (CoreDNS or kube-dns on
   * kubeadm, EKS, GKE and AKS)
   */
  dns?: { namespace?: string; podLabels?: Record<string, string>; cidrs?: string[] };
}

/** The cluster DNS servers' defaults (ChartOptions.dns). */
export const DEFAULT_DNS = { namespace: "kube-system", podLabels: { "k8s-app": "kube-dns" } } as const;

/** ChartOptions with every default applied. */
export interface Resolved {
  readonly result: TranslateResult;
  readonly infra: InfraIR;
  readonly mesh: string;
  readonly ns: string;
  readonly runtimeImage: string;
  readonly identities: { mode: "secrets" } | { mode: "cert-manager"; caSecretName: string };
  readonly observability: "bundled" | "operator" | "none";
  readonly obsNs: string;
  /** The bundled trace store, or null (no tracing, a user endpoint, or not bundled). */
  readonly traceStore: "tempo" | "jaeger" | null;
  readonly gatewayServiceAnnotations: Readonly<Record<string, string>> | null;
  readonly namespaceLabels: Readonly<Record<string, string>>;
  readonly prometheusRemoteWrite: { url: string; sigv4Region?: string } | null;
  readonly prometheusServiceAccountAnnotations: Readonly<Record<string, string>> | null;
  readonly dns: {
    readonly namespace: string;
    readonly podLabels: Readonly<Record<string, string>>;
    readonly cidrs: readonly string[];
  };
}

const require = createRequire(import.meta.url);
/** The package version: the default runtime image tag. */
export const PACKAGE_VERSION: string = (require("../../package.json") as { version: string }).version;
export const DEFAULT_RUNTIME_IMAGE = `ghcr.io/meshgate/runtime:${PACKAGE_VERSION}`;
/** The Secret holding the CA that the cert-manager Issuer signs with, when the spec selects cert-manager. */
export const DEFAULT_CA_SECRET = "meshgate-ca";

/** A problem with the chart's input (not the spec): an option that cannot work. */
export class ChartInputError extends Error {
  override name = "ChartInputError";
}

const DNS_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;

export function resolve(result: TranslateResult, opts: ChartOptions = {}): Resolved {
  const infra = result.infra;
  const o = infra.observability;
  const observability =
    opts.observability ??
    (!o.metrics.enabled || o.metrics.backend === "none"
      ? "none"
      : o.metrics.backend === "prometheus-operator"
        ? "operator"
        : "bundled");
  const obsNs =
    opts.observabilityNamespace ??
    (observability === "operator" ? "monitoring" : dnsLabel(`${infra.namespace}-observability`));
  if (!DNS_LABEL.test(obsNs) || obsNs.length > 63)
    throw new ChartInputError(
      `observabilityNamespace: ${JSON.stringify(obsNs)} is not a namespace name (a DNS label: a-z, 0-9, '-', at most 63)`,
    );
  if (observability === "bundled" && obsNs === infra.namespace)
    throw new ChartInputError(
      `observabilityNamespace: the bundled backends need their own namespace, not the mesh's ("${obsNs}")`,
    );
  const identities =
    opts.identities ??
    (infra.ca.provider === "cert-manager"
      ? { mode: "cert-manager" as const, caSecretName: DEFAULT_CA_SECRET }
      : { mode: "secrets" as const });
  if (identities.mode === "cert-manager" && !DNS_LABEL.test(identities.caSecretName))
    throw new ChartInputError(
      `identities.caSecretName: ${JSON.stringify(identities.caSecretName)} is not a Secret name`,
    );
  const runtimeImage = opts.runtimeImage ?? infra.targets.kubernetes?.runtimeImage ?? DEFAULT_RUNTIME_IMAGE;
  const imageProblem = runtimeImageProblem(runtimeImage);
  if (imageProblem !== null) throw new ChartInputError(`runtimeImage: ${imageProblem}`);
  for (const field of ["gatewayServiceAnnotations", "prometheusServiceAccountAnnotations"] as const)
    for (const key of Object.keys(opts[field] ?? {}))
      if (!ANNOTATION_KEY.test(key))
        throw new ChartInputError(
          `${field}: ${JSON.stringify(key)} is not an annotation key ([prefix/]name, name ≤ 63 of a-z, A-Z, 0-9, '-', '_', '.')`,
        );
  for (const [key, value] of Object.entries(opts.namespaceLabels ?? {})) {
    if (!ANNOTATION_KEY.test(key))
      throw new ChartInputError(
        `namespaceLabels: ${JSON.stringify(key)} is not a label key ([prefix/]name, name ≤ 63 of a-z, A-Z, 0-9, '-', '_', '.')`,
      );
    if (/^(app\.kubernetes\.io|pod-security\.kubernetes\.io)\//.test(key))
      throw new ChartInputError(
        `namespaceLabels: ${JSON.stringify(key)} is the chart's own label (it sets app.kubernetes.io/* and pod-security.kubernetes.io/*): choose another key`,
      );
    if (!LABEL_VALUE.test(value))
      throw new ChartInputError(
        `namespaceLabels.${key}: ${JSON.stringify(value)} is not a label value (≤ 63 of a-z, A-Z, 0-9, '-', '_', '.', alphanumeric at both ends)`,
      );
  }
  const remoteWrite = opts.prometheusRemoteWrite ?? null;
  const remoteWriteProblem = remoteWrite === null ? null : remoteWriteUrlProblem(remoteWrite.url);
  if (remoteWriteProblem !== null)
    throw new ChartInputError(`prometheusRemoteWrite.url: ${remoteWriteProblem}`);
  for (const field of ["prometheusRemoteWrite", "prometheusServiceAccountAnnotations"] as const)
    if (observability !== "bundled" && opts[field] !== undefined)
      throw new ChartInputError(
        `${field}: the chart's Prometheus exists only with observability "bundled" (it is "${observability}")`,
      );
  const dns = resolveDns(opts.dns);
  const t = o.tracing;
  const traceStore =
    observability === "bundled" && t.enabled && t.otlpEndpoint === null && t.backend !== "none"
      ? t.backend
      : null;
  return {
    result,
    infra,
    mesh: infra.name,
    ns: infra.namespace,
    runtimeImage,
    identities,
    observability,
    obsNs,
    traceStore,
    gatewayServiceAnnotations: opts.gatewayServiceAnnotations ?? null,
    namespaceLabels: opts.namespaceLabels ?? {},
    prometheusRemoteWrite: remoteWrite,
    prometheusServiceAccountAnnotations: opts.prometheusServiceAccountAnnotations ?? null,
    dns,
  };
}

/** ChartOptions.dns with its defaults, checked. */
function resolveDns(dns: ChartOptions["dns"] = {}): Resolved["dns"] {
  const namespace = dns.namespace ?? DEFAULT_DNS.namespace;
  if (!DNS_LABEL.test(namespace) || namespace.length > 63)
    throw new ChartInputError(`dns.namespace: ${JSON.stringify(namespace)} is not a namespace name`);
  const podLabels = dns.podLabels ?? DEFAULT_DNS.podLabels;
  if (Object.keys(podLabels).length === 0)
    throw new ChartInputError(
      "dns.podLabels: give the labels of the DNS server's pods (no labels would admit every pod of the namespace on port 53)",
    );
  for (const [key, value] of Object.entries(podLabels))
    if (!ANNOTATION_KEY.test(key) || !LABEL_VALUE.test(value))
      throw new ChartInputError(
        `dns.podLabels: ${JSON.stringify(key)}: ${JSON.stringify(value)} is not a label`,
      );
  const cidrs = dns.cidrs ?? [];
  for (const cidr of cidrs) {
    if (!cidr.includes("/") || parseCidr(cidr) === null)
      throw new ChartInputError(
        `dns.cidrs: ${JSON.stringify(cidr)} is not a CIDR range (e.g. "169.254.20.10/32")`,
      );
  }
  return { namespace, podLabels: { ...podLabels }, cidrs: [...cidrs] };
}

/** An annotation key: an optional DNS subdomain prefix and `/`, then a name of at most 63 characters. */
const ANNOTATION_KEY =
  /^(?:[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?\/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$/;

/** A label value: empty, or ≤ 63 characters, alphanumeric at both ends. */
const LABEL_VALUE = /^(?:[A-Za-z0-9](?:[-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$/;

/**
 * Why `prometheusRemoteWrite.url` cannot be used (null: it can). Checked by resolve on a string and,
 * for a value given as a Pulumi output, on the resolved value (the Platform's deferred arguments).
 */
export function remoteWriteUrlProblem(url: string): string | null {
  if (!/^https:\/\/[^\s/]+\/\S*$/.test(url)) return `${JSON.stringify(url)} is not an https:// URL`;
  // Credentials in the URL would land in the prometheus-config ConfigMap (readable with the `view` role).
  if (/^https:\/\/[^/]*@/.test(url))
    return "holds credentials (user:password@), which would be written into a ConfigMap; sign with sigv4Region (IAM roles for service accounts) instead";
  return null;
}

/** Why `runtimeImage` cannot be used (null: it can): it must be pinned (imagePinned). */
export function runtimeImageProblem(image: string): string | null {
  return imagePinned(image)
    ? null
    : `${JSON.stringify(image)} is not pinned: give a version tag other than latest, or a sha256 digest`;
}

/** Pinned: a sha256 digest, or a tag other than `latest` (the policy pack's rule). */
export function imagePinned(image: string): boolean {
  if (/@sha256:[0-9a-f]{64}$/.test(image)) return true;
  const name = image.slice(image.lastIndexOf("/") + 1);
  const colon = name.indexOf(":");
  return colon > 0 && colon < name.length - 1 && name.slice(colon + 1) !== "latest";
}

/** A DNS label of at most 63 characters: the name itself when it fits, else a prefix and a stable hash. */
export function dnsLabel(name: string): string {
  if (name.length <= 63) return name;
  const hash = createHash("sha256").update(name).digest("hex").slice(0, 8);
  return `${name.slice(0, 54).replace(/-+$/, "")}-${hash}`;
}

// ───────────── labels ─────────────

/** The labels the chart sets; the policy pack and the scrape configuration rely on the meshgate.io ones. */
export const LABELS = {
  /** Pod template label of meshed workloads and the mesh's objects (value: the mesh name); the policy pack's MESH_LABEL. */
  mesh: "meshgate.io/mesh",
  /** Pod label: the workload (a service, or `gateway`); the scrape contract's workloadLabel. */
  workload: "meshgate.io/workload",
  /** Pod label: `gateway` or `sidecar`, the proxy whose admin port is scraped; the scrape contract's proxyLabel. */
  proxy: "meshgate.io/proxy",
  /** `gateway` on the gateway's pods and Services; the policy pack's ROLE_LABEL. */
  role: "meshgate.io/role",
  name: "app.kubernetes.io/name",
  component: "app.kubernetes.io/component",
  partOf: "app.kubernetes.io/part-of",
  managedBy: "app.kubernetes.io/managed-by",
} as const;

/** Annotations the chart sets. */
export const ANNOTATIONS = {
  /** Pod template annotation: the RuntimeConfig's hash (or the backend config's): a change rolls the pods. */
  configHash: "meshgate.io/config-hash",
  /** ServiceAccount and pod annotation: the workload's SPIFFE ID. */
  spiffeId: "meshgate.io/spiffe-id",
} as const;

/** The label set on every object of the chart. */
export function baseLabels(r: Resolved, component: string): Record<string, string> {
  return { [LABELS.partOf]: r.mesh, [LABELS.managedBy]: "meshgate", [LABELS.component]: component };
}

/** The selector labels of a mesh workload's pods. */
export function workloadSelector(r: Resolved, workload: string): Record<string, string> {
  return { [LABELS.mesh]: r.mesh, [LABELS.workload]: workload };
}

/** The selector labels of a bundled backend's pods (never meshgate.io/mesh: they run no sidecar). */
export function backendSelector(r: Resolved, app: string): Record<string, string> {
  return { [LABELS.name]: app, [LABELS.partOf]: r.mesh };
}

export function meta(
  r: Resolved,
  name: string,
  namespace: string | null,
  component: string,
  extraLabels: Record<string, string> = {},
  annotations?: Record<string, string>,
): KubeObject["metadata"] {
  return {
    name,
    ...(namespace !== null ? { namespace } : {}),
    labels: { ...baseLabels(r, component), ...extraLabels },
    ...(annotations ? { annotations } : {}),
  };
}

// ───────────── names, paths, ports ─────────────

export const NAMES = {
  configMap: (workload: string) => `meshgate-config-${workload}`,
  trustBundleSecret: "meshgate-trust-bundle",
  svidSecret: (workload: string) => `meshgate-svid-${workload}`,
  issuer: "meshgate-ca",
  gatewayAdminService: "meshgate-gateway-admin",
  promDiscoveryRole: "meshgate-prometheus-discovery",
} as const;

/** Where the proxies' files are mounted. */
export const PATHS = {
  configDir: "/etc/meshgate/config",
  configFile: "/etc/meshgate/config/config.json",
  identityDir: IDENTITY_DIRS.kubernetes,
  tlsDir: (secret: string) => `/etc/meshgate/tls/${secret}`,
} as const;

/** The keys of the identity Secrets the caller provides in "secrets" mode (the files the proxies read). */
export const IDENTITY_SECRET_KEYS = {
  /** In each workload's SVID Secret: the leaf SVID, then the intermediates it presents. */
  svid: IDENTITY_FILES.cert,
  /** In each workload's SVID Secret: the leaf's PKCS#8 private key. */
  key: IDENTITY_FILES.key,
  /** In the trust-bundle Secret: the roots. */
  bundle: IDENTITY_FILES.bundle,
  /** In the trust-bundle Secret (optional key): the trust domain's intermediates. */
  intermediates: IDENTITY_FILES.intermediates,
} as const;

/** The runtime image's entrypoint (runtime/Dockerfile `ENTRYPOINT`): Node and the bundle. */
export const RUNTIME_ENTRYPOINT: readonly string[] = ["node", "/app/meshgate.js"];
/**
 * The sidecar containers' entrypoint: the image's, with the sidecar's Node/V8 flags on Node's command
 * line (runtime/contract/node-flags.ts) — some of them (`--no-memory-reducer`) are refused in
 * `NODE_OPTIONS`, where Node exits with status 9 before running anything.
 */
export const SIDECAR_ENTRYPOINT: readonly string[] = [
  RUNTIME_ENTRYPOINT[0]!,
  ...SIDECAR_NODE_FLAGS,
  ...RUNTIME_ENTRYPOINT.slice(1),
];

/** The user the runtime image's processes run as (distroless "nonroot"). */
export const RUNTIME_UID = 65532;
/** Port names of the proxies' containers (the admin one is the scrape contract's adminPortName). */
export const PORT_NAMES = { admin: "meshgate-admin", mesh: "mesh", app: "app" } as const;

/** Container images of the bundled backends, pinned by tag. */
export const IMAGES = {
  prometheus: "quay.io/prometheus/prometheus:v3.5.0",
  grafana: "docker.io/grafana/grafana:12.1.1",
  otelCollector: "docker.io/otel/opentelemetry-collector-contrib:0.132.0",
  tempo: "docker.io/grafana/tempo:2.8.2",
  jaeger: "docker.io/jaegertracing/jaeger:2.9.0",
} as const;

/** Ports of the bundled backends. */
export const BACKEND_PORTS = {
  prometheus: 9090,
  grafana: 3000,
  otlpGrpc: 4317,
  otlpHttp: 4318,
  collectorHealth: 13133,
  tempo: 3200,
  jaegerQuery: 16686,
} as const;

/** Hardened container security context (restricted Pod Security Standard). */
export function containerSecurity(uid?: number) {
  return {
    allowPrivilegeEscalation: false,
    privileged: false,
    readOnlyRootFilesystem: true,
    runAsNonRoot: true,
    ...(uid !== undefined ? { runAsUser: uid, runAsGroup: uid } : {}),
    capabilities: { drop: ["ALL"] },
    seccompProfile: { type: "RuntimeDefault" },
  };
}

/** Pod security context: non-root, RuntimeDefault seccomp, files of mounted volumes readable by `fsGroup`. */
export function podSecurity(fsGroup: number) {
  return { runAsNonRoot: true, fsGroup, seccompProfile: { type: "RuntimeDefault" } };
}

/** A container/Service port name (IANA_SVC_NAME: ≤ 15 characters, a-z0-9 and single '-', a letter). */
export function portName(name: string, port: number): string {
  const ok = name.length <= 15 && /^[a-z0-9]+(-[a-z0-9]+)*$/.test(name) && /[a-z]/.test(name);
  return ok ? name : `p-${port}`;
}

/**
 * The port name of each of a pod's listeners, by port: portName's, unique in the pod — a container's port
 * names (and a Service's) must differ, or the API refuses the object. A listener's own name that is the
 * admin port's (`meshgate-admin`, which the scrape configuration also selects by), or the fallback name
 * of another listener's port (`p-8443` on port 8080), gives way to its own fallback `p-<port>`: ports
 * differ, so fallbacks do.
 */
export function listenerPortNames(listeners: readonly { name: string; port: number }[]): Map<number, string> {
  const otherFallback = (name: string, port: number) =>
    listeners.some((l) => l.port !== port && name === `p-${l.port}`);
  return new Map(
    listeners.map((l) => {
      const name = portName(l.name, l.port);
      const taken = name === PORT_NAMES.admin || otherFallback(name, l.port);
      return [l.port, taken ? `p-${l.port}` : name];
    }),
  );
}

/** sha256 of text, as the config-hash annotation writes it. */
export function contentHash(...parts: string[]): string {
  const h = createHash("sha256");
  for (const p of parts) h.update(p).update("\0");
  return `sha256:${h.digest("hex")}`;
}
