/**
 * The mesh's workloads on Kubernetes: namespace, a ServiceAccount per identity, a ConfigMap per proxy
 * (its RuntimeConfig), the services' Deployments with the meshgate sidecar (a native sidecar: an init
 * container with restartPolicy Always, started — and ready — before the app, stopped after it), headless
 * Services (the sidecars load-balance over the pods themselves), a PodDisruptionBudget per service of
 * more than one replica, the gateway's Deployment, Service,
 * HorizontalPodAutoscaler and PodDisruptionBudget, and the identity volumes (caller-provided Secrets, or
 * cert-manager Certificates). Pure.
 */
import type { Container, PodSpec, Volume, VolumeProjection } from "kubernetes-types/core/v1.js";
import {
  sealRuntimeConfig,
  type GatewayRuntimeConfig,
  type RuntimeConfig,
  type SidecarRuntimeConfig,
} from "../../runtime/contract/index.ts";
import { canonicalJson, compareCodeUnits } from "../../runtime/contract/canonical.ts";
import {
  configHoldsSecrets,
  mapCredentialUrls,
  urlHoldsCredentials,
} from "../../runtime/contract/exposed-hash.ts";
import type { GatewayWorkloadIR, ServiceWorkloadIR } from "../translate/ir.ts";
import { DEFAULTS } from "../spec/defaults.ts";
import { withoutCredentials } from "../spec/semantic.ts";
import { parseDuration } from "../spec/units.ts";
import {
  ANNOTATIONS,
  BACKEND_PORTS,
  IDENTITY_SECRET_KEYS,
  LABELS,
  NAMES,
  PATHS,
  PORT_NAMES,
  RUNTIME_UID,
  SIDECAR_ENTRYPOINT,
  containerSecurity,
  contentHash,
  meta,
  podSecurity,
  listenerPortNames,
  workloadSelector,
  ChartInputError,
  type KubeObject,
  type Resolved,
} from "./model.ts";

/** The sidecar container's name (the policy pack's SIDECAR_CONTAINER). */
export const SIDECAR_CONTAINER = "meshgate-sidecar";
/** The app container's name in a service's pod. */
export const APP_CONTAINER = "app";
/** The gateway container's name. */
export const GATEWAY_CONTAINER = "gateway";

/** Resources of the proxies (docs/sidecar.md measures ~115–125 MiB RSS per sidecar). */
export const PROXY_RESOURCES = {
  sidecar: { requests: { cpu: "100m", memory: "160Mi" }, limits: { memory: "256Mi" } },
  /** The gateway's memory is this plus its in-memory cache's maxBytes. */
  gatewayBaseMemoryMi: 320,
  gatewayCpu: "250m",
} as const;

/** The names of the Secrets the chart mounts in "secrets" mode: the caller creates them. */
export function secretNames(infra: { identities: readonly { name: string }[] }): {
  trustBundle: string;
  svid: Record<string, string>;
} {
  return {
    trustBundle: NAMES.trustBundleSecret,
    svid: Object.fromEntries(infra.identities.map((i) => [i.name, NAMES.svidSecret(i.name)])),
  };
}

/**
 * The RuntimeConfig a proxy gets on Kubernetes: translate's, with the bundled collector as the OTLP
 * endpoint when the chart deploys one (re-sealed, so the hash stays the content's).
 */
export function kubernetesConfig<T extends RuntimeConfig>(r: Resolved, config: T): T {
  if (r.traceStore === null || !config.telemetry.tracing.enabled) return config;
  const { hash: _old, ...rest } = config;
  return sealRuntimeConfig<T>({
    ...rest,
    telemetry: {
      ...config.telemetry,
      tracing: { ...config.telemetry.tracing, otlpEndpoint: collectorEndpoint(r) },
    },
  } as never);
}

/** The bundled OpenTelemetry Collector's OTLP/HTTP endpoint. */
export function collectorEndpoint(r: Resolved): string {
  return `http://otel-collector.${r.obsNs}.svc.cluster.local:${BACKEND_PORTS.otlpHttp}`;
}

export function namespaceObject(
  r: Resolved,
  name: string,
  component: string,
  extraLabels: Readonly<Record<string, string>> = {},
): KubeObject {
  return {
    apiVersion: "v1",
    kind: "Namespace",
    metadata: meta(r, name, null, component, {
      ...extraLabels,
      // Every pod the chart creates meets the restricted Pod Security Standard.
      "pod-security.kubernetes.io/enforce": "restricted",
      "pod-security.kubernetes.io/enforce-version": "latest",
    }),
  };
}

function serviceAccounts(r: Resolved): KubeObject[] {
  return r.infra.identities.map((id) => ({
    apiVersion: "v1",
    kind: "ServiceAccount",
    metadata: meta(
      r,
      id.serviceAccount,
      r.ns,
      "identity",
      { [LABELS.mesh]: r.mesh },
      {
        [ANNOTATIONS.spiffeId]: id.spiffeId,
      },
    ),
    // The proxies never talk to the API server.
    automountServiceAccountToken: false,
  }));
}

/**
 * Whether a RuntimeConfig holds a credential: a user or password in one of its URLs — a gateway's Redis
 * stores (`redis://:password@host`, docs/rate-limiting.md), the OTLP endpoint of any proxy, gateway or
 * sidecar (`https://user:token@collector`, sent as basic auth), a JWT provider's `jwksUri`, an OIDC issuer:
 * the runtime's own list (`configHoldsSecrets`, the URLs /config redacts). Such a config is stored in a
 * Secret, not a ConfigMap: ConfigMaps are readable by every holder of the `view` role and are not
 * encrypted at rest, nor kept secret in Pulumi's state.
 */
export function configHoldsCredentials(config: RuntimeConfig): boolean {
  return configHoldsSecrets(config);
}

/** A URL of a config as the annotation hashes it: its user and password replaced, when it has any. */
const hiddenUserinfo = (url: string): string => (urlHoldsCredentials(url) ? withoutCredentials(url) : url);

/**
 * The `meshgate.io/config-hash` annotation of a proxy's pods and config object. For a config without
 * credentials it is the RuntimeConfig's own hash. For one with credentials (configHoldsCredentials) the
 * RuntimeConfig's hash is an unsalted SHA-256 over them — whoever can read the Deployment could test
 * password guesses against it offline — so the annotation is the hash of the config with every URL's
 * userinfo redacted: derivable from nothing secret. Everything else still rolls the pods; a credential
 * changed alone reaches the proxy without a rollout: the kubelet updates the mounted Secret's files in
 * place and the proxy reloads its config file when it changes (new connections with the new
 * credentials; the sealed hash inside the file, which only Secret readers see, changes with them).
 */
export function configAnnotationHash(config: RuntimeConfig): string {
  if (!configHoldsCredentials(config)) return config.hash;
  const { hash: _sealed, ...redacted } = mapCredentialUrls(config, hiddenUserinfo);
  return contentHash("meshgate config-hash: credentials redacted", canonicalJson(redacted));
}

/** A proxy's RuntimeConfig as the object its pod mounts: a ConfigMap, or a Secret when it holds a credential. */
function configMap(r: Resolved, workload: string, config: RuntimeConfig): KubeObject {
  const metadata = meta(r, NAMES.configMap(workload), r.ns, "config", workloadSelector(r, workload), {
    [ANNOTATIONS.configHash]: configAnnotationHash(config),
  });
  const content = { "config.json": `${JSON.stringify(config, null, 2)}\n` };
  if (configHoldsCredentials(config))
    return { apiVersion: "v1", kind: "Secret", metadata, type: "Opaque", stringData: content };
  return { apiVersion: "v1", kind: "ConfigMap", metadata, data: content };
}

/** The volume of a proxy's RuntimeConfig (configMap() above); a Secret's file is readable by the proxy's group only. */
function configVolume(workload: string, config: RuntimeConfig): Volume {
  return configHoldsCredentials(config)
    ? { name: "config", secret: { secretName: NAMES.configMap(workload), defaultMode: 0o440 } }
    : { name: "config", configMap: { name: NAMES.configMap(workload), defaultMode: 0o444 } };
}

// ───────────── identity volumes ─────────────

function identityVolume(r: Resolved, workload: string): Volume {
  const sources: VolumeProjection[] =
    r.identities.mode === "secrets"
      ? [
          {
            secret: {
              name: NAMES.svidSecret(workload),
              items: [
                { key: IDENTITY_SECRET_KEYS.svid, path: IDENTITY_SECRET_KEYS.svid },
                { key: IDENTITY_SECRET_KEYS.key, path: IDENTITY_SECRET_KEYS.key },
              ],
            },
          },
          {
            secret: {
              name: NAMES.trustBundleSecret,
              items: [
                { key: IDENTITY_SECRET_KEYS.bundle, path: IDENTITY_SECRET_KEYS.bundle },
                { key: IDENTITY_SECRET_KEYS.intermediates, path: IDENTITY_SECRET_KEYS.intermediates },
              ],
              // Both keys must exist (intermediates.pem may be empty: the proxies then know only the
              // intermediates of their own chain).
            },
          },
        ]
      : [
          {
            // cert-manager writes tls.crt (the leaf and the CA issuer's chain), tls.key and ca.crt.
            secret: {
              name: NAMES.svidSecret(workload),
              items: [
                { key: "tls.crt", path: IDENTITY_SECRET_KEYS.svid },
                { key: "tls.key", path: IDENTITY_SECRET_KEYS.key },
                { key: "ca.crt", path: IDENTITY_SECRET_KEYS.bundle },
              ],
            },
          },
        ];
  return { name: "identity", projected: { defaultMode: 0o440, sources } };
}

/**
 * cert-manager's admission webhook refuses a Certificate whose `duration` is under an hour or whose
 * `renewBefore` is under five minutes (its MinimumCertificateDuration and MinimumRenewBefore): no SVID
 * would ever be issued, and every pod would wait for its identity Secret.
 */
export const CERT_MANAGER_MINIMUMS = { durationSeconds: 3600, renewBeforeSeconds: 300 } as const;

/** The whole seconds goDuration writes for a duration in milliseconds. */
const wholeSeconds = (ms: number) => Math.max(1, Math.round(ms / 1000));

/** cert-manager: a CA Issuer over the caller's CA Secret and one Certificate (an X.509-SVID) per identity. */
function certManagerObjects(r: Resolved): KubeObject[] {
  if (r.identities.mode !== "cert-manager") return [];
  const ca = r.infra.ca;
  const renewBeforeMs = (ttlMs: number) => Math.min(ca.renewBeforeMs, Math.floor(ttlMs / 2));
  for (const id of r.infra.identities) {
    if (wholeSeconds(id.ttlMs) < CERT_MANAGER_MINIMUMS.durationSeconds)
      throw new ChartInputError(
        `mesh.ca.workloadTtl: ${goDuration(id.ttlMs)} is shorter than the 1h cert-manager accepts as a Certificate's duration (its webhook refuses the Certificate, and no SVID is issued): make it at least 1h, or issue the SVIDs with mesh.ca.provider meshgate`,
      );
    if (wholeSeconds(renewBeforeMs(id.ttlMs)) < CERT_MANAGER_MINIMUMS.renewBeforeSeconds)
      throw new ChartInputError(
        `mesh.ca.renewBefore: ${goDuration(renewBeforeMs(id.ttlMs))} is shorter than the 5m cert-manager accepts as a Certificate's renewBefore (its webhook refuses the Certificate, and no SVID is issued): make it at least 5m`,
      );
  }
  const issuer: KubeObject = {
    apiVersion: "cert-manager.io/v1",
    kind: "Issuer",
    metadata: meta(r, NAMES.issuer, r.ns, "identity", { [LABELS.mesh]: r.mesh }),
    spec: { ca: { secretName: r.identities.caSecretName } },
  };
  const certificates = r.infra.identities.map((id): KubeObject => ({
    apiVersion: "cert-manager.io/v1",
    kind: "Certificate",
    metadata: meta(r, NAMES.svidSecret(id.name), r.ns, "identity", workloadSelector(r, id.name), {
      [ANNOTATIONS.spiffeId]: id.spiffeId,
    }),
    spec: {
      secretName: NAMES.svidSecret(id.name),
      secretTemplate: { labels: workloadSelector(r, id.name) },
      // An X.509-SVID: exactly one URI SAN, no DNS names or subject, a leaf (cA=false).
      uris: [id.spiffeId],
      isCA: false,
      duration: goDuration(id.ttlMs),
      renewBefore: goDuration(renewBeforeMs(id.ttlMs)),
      privateKey: { algorithm: "ECDSA", size: 256, encoding: "PKCS8", rotationPolicy: "Always" },
      usages: ["digital signature", "server auth", "client auth"],
      issuerRef: { name: NAMES.issuer, kind: "Issuer", group: "cert-manager.io" },
    },
  }));
  return [issuer, ...certificates];
}

/** A Go duration (cert-manager's format) of whole seconds: `24h`, `8h`, `90m`, `45s`. */
export function goDuration(ms: number): string {
  const s = Math.max(1, Math.round(ms / 1000));
  if (s % 3600 === 0) return `${s / 3600}h`;
  if (s % 60 === 0) return `${s / 60}m`;
  return `${s}s`;
}

// ───────────── pods ─────────────

const tmpVolume = (name: string): Volume => ({ name, emptyDir: { sizeLimit: "64Mi" } });

function adminProbes(port: string) {
  return {
    readinessProbe: {
      httpGet: { path: "/ready", port },
      periodSeconds: 5,
      timeoutSeconds: 2,
      failureThreshold: 2,
    },
    livenessProbe: {
      httpGet: { path: "/live", port },
      periodSeconds: 10,
      timeoutSeconds: 2,
      failureThreshold: 3,
    },
  };
}

function sidecarContainer(r: Resolved, w: ServiceWorkloadIR): Container {
  return {
    name: SIDECAR_CONTAINER,
    image: r.runtimeImage,
    command: [...SIDECAR_ENTRYPOINT],
    args: ["sidecar", "--config", PATHS.configFile],
    // A native sidecar: started (and, by its startup probe, ready) before the app, stopped after it.
    restartPolicy: "Always",
    ports: [
      { name: PORT_NAMES.mesh, containerPort: w.sidecar.inbound, protocol: "TCP" },
      { name: PORT_NAMES.admin, containerPort: w.sidecar.admin, protocol: "TCP" },
    ],
    startupProbe: {
      httpGet: { path: "/ready", port: PORT_NAMES.admin },
      periodSeconds: 1,
      timeoutSeconds: 2,
      failureThreshold: 120,
    },
    ...adminProbes(PORT_NAMES.admin),
    resources: structuredClone(PROXY_RESOURCES.sidecar) as Container["resources"],
    securityContext: containerSecurity(RUNTIME_UID),
    volumeMounts: [
      { name: "config", mountPath: PATHS.configDir, readOnly: true },
      { name: "identity", mountPath: PATHS.identityDir, readOnly: true },
      // Client certificates of the externals it relays to: Kubernetes rewrites them in place when the
      // Secret changes, and the sidecar re-reads them.
      ...w.tlsSecrets.map((s, i) => ({ name: `tls-${i}`, mountPath: PATHS.tlsDir(s), readOnly: true })),
    ],
  };
}

/** A Kubernetes TLS Secret as a volume of its two files, readable by the proxy's group only. */
function tlsSecretVolume(secretName: string, i: number): Volume {
  return {
    name: `tls-${i}`,
    secret: {
      secretName,
      defaultMode: 0o440,
      items: [
        { key: "tls.crt", path: "tls.crt" },
        { key: "tls.key", path: "tls.key" },
      ],
    },
  };
}

/** Environment that points the app at its sidecar: HTTP_PROXY, and one URL per declared callee's local port. */
export function appEnv(
  w: ServiceWorkloadIR,
  config: SidecarRuntimeConfig,
): { name: string; value: string }[] {
  const proxy = `http://127.0.0.1:${config.outbound.port}`;
  const mesh: [string, string][] = [
    ["HTTP_PROXY", proxy],
    ["http_proxy", proxy],
    // HTTPS through the sidecar too: CONNECT tunnels to the external destinations the spec allows, a
    // clear 403 for any other (the NetworkPolicies deny what bypasses the proxy, but only at L4).
    ["HTTPS_PROXY", proxy],
    ["https_proxy", proxy],
    ["NO_PROXY", "localhost,127.0.0.1,::1"],
    ["no_proxy", "localhost,127.0.0.1,::1"],
  ];
  for (const s of config.outbound.services)
    if (s.localPort !== null)
      mesh.push([
        `MESHGATE_SERVICE_${s.service.toUpperCase().replace(/[^A-Z0-9]/g, "_")}_URL`,
        `http://127.0.0.1:${s.localPort}`,
      ]);
  for (const x of config.outbound.external)
    if (x.localPort !== null)
      mesh.push([
        `MESHGATE_EXTERNAL_${x.name.toUpperCase().replace(/[^A-Z0-9]/g, "_")}_ADDR`,
        `127.0.0.1:${x.localPort}`,
      ]);
  const user = Object.entries(w.env);
  const taken = new Set(user.map(([k]) => k));
  return [...user, ...mesh.filter(([k]) => !taken.has(k))].map(([name, value]) => ({ name, value }));
}

function serviceDeployment(r: Resolved, w: ServiceWorkloadIR, config: SidecarRuntimeConfig): KubeObject {
  const selector = workloadSelector(r, w.name);
  const drainDelay = drainDelaySeconds(r, "service");
  const app: Container = {
    name: APP_CONTAINER,
    image: w.image,
    env: appEnv(w, config),
    ports: [{ name: PORT_NAMES.app, containerPort: w.appPort, protocol: "TCP" }],
    ...(w.healthCheckPath !== null
      ? {
          readinessProbe: {
            httpGet: { path: w.healthCheckPath, port: PORT_NAMES.app },
            periodSeconds: 5,
            timeoutSeconds: 2,
          },
        }
      : {}),
    ...(w.resources
      ? {
          resources: {
            requests: { cpu: w.resources.cpu, memory: w.resources.memory },
            limits: { memory: w.resources.memory },
          },
        }
      : {}),
    securityContext: containerSecurity(),
    volumeMounts: [{ name: "tmp", mountPath: "/tmp" }],
    // Callers' sidecars keep sending here until they re-resolve the headless Service: the app serves on
    // for the delay before SIGTERM. The sidecar, a native sidecar, is stopped only after the app exits.
    ...preStopSleep(drainDelay),
  };
  const pod: PodSpec = {
    serviceAccountName: w.serviceAccount,
    automountServiceAccountToken: false,
    enableServiceLinks: false,
    // The app's preStop sleep, then the sidecar drains in-flight requests for up to 30 s on SIGTERM.
    terminationGracePeriodSeconds: drainDelay + 35,
    securityContext: podSecurity(RUNTIME_UID),
    initContainers: [sidecarContainer(r, w)],
    containers: [app],
    volumes: [
      configVolume(w.name, config),
      identityVolume(r, w.name),
      ...w.tlsSecrets.map(tlsSecretVolume),
      tmpVolume("tmp"),
    ],
  };
  return {
    apiVersion: "apps/v1",
    kind: "Deployment",
    metadata: meta(r, w.name, r.ns, "service", selector),
    spec: {
      replicas: w.replicas,
      revisionHistoryLimit: 5,
      selector: { matchLabels: selector },
      strategy: { type: "RollingUpdate", rollingUpdate: { maxUnavailable: 0, maxSurge: 1 } },
      template: {
        metadata: {
          labels: { ...selector, [LABELS.name]: w.name, [LABELS.proxy]: "sidecar" },
          annotations: {
            [ANNOTATIONS.configHash]: configAnnotationHash(config),
            [ANNOTATIONS.spiffeId]: w.identity,
          },
        },
        spec: pod,
      },
    },
  };
}

/**
 * A service of more than one replica keeps all but one running through voluntary disruptions (node
 * drains, cluster upgrades): without a budget, a drain may evict every replica at once.
 */
function serviceDisruptionBudget(r: Resolved, w: ServiceWorkloadIR): KubeObject[] {
  if (w.replicas <= 1) return [];
  const selector = workloadSelector(r, w.name);
  return [
    {
      apiVersion: "policy/v1",
      kind: "PodDisruptionBudget",
      metadata: meta(r, w.name, r.ns, "service", selector),
      spec: { maxUnavailable: 1, selector: { matchLabels: selector } },
    },
  ];
}

function headlessService(r: Resolved, w: ServiceWorkloadIR): KubeObject {
  const selector = workloadSelector(r, w.name);
  return {
    apiVersion: "v1",
    kind: "Service",
    metadata: meta(r, w.name, r.ns, "service", { ...selector, [LABELS.proxy]: "sidecar" }),
    spec: {
      // Headless: DNS answers with every ready pod, and the callers' sidecars balance over them.
      clusterIP: "None",
      selector,
      // Target ports by number: before Kubernetes 1.33 (kubernetes#128850, not backported) the
      // EndpointSlice controller resolves a port name in the pod's containers only, not in a native
      // sidecar's, and the slice would carry no ports (the operator mode's ServiceMonitor then finds no
      // `meshgate-admin` endpoint to scrape).
      ports: [
        {
          name: PORT_NAMES.mesh,
          port: w.sidecar.inbound,
          targetPort: w.sidecar.inbound,
          protocol: "TCP",
        },
        {
          name: PORT_NAMES.admin,
          port: w.sidecar.admin,
          targetPort: w.sidecar.admin,
          protocol: "TCP",
        },
      ],
    },
  };
}

// ───────────── the gateway ─────────────

/** The gateway's memory: a base plus its in-memory cache. */
export function gatewayMemory(config: GatewayRuntimeConfig): string {
  const cacheMi = config.cacheStore.kind === "memory" ? Math.ceil(config.cacheStore.maxBytes / 2 ** 20) : 0;
  return `${PROXY_RESOURCES.gatewayBaseMemoryMi + cacheMi}Mi`;
}

/** The key of an OIDC client-secret Secret that the gateway's environment variable is filled from. */
export const OIDC_SECRET_KEY = "client-secret";

/**
 * The gateway container's environment: each OIDC provider's client secret from the Kubernetes Secret the
 * spec names (`gateway.oidc.<name>.secret`, key `client-secret`). A provider without one cannot work in a
 * pod (the gateway would refuse to start without the variable): the chart refuses it, naming the field.
 */
export function gatewayEnv(w: GatewayWorkloadIR): NonNullable<Container["env"]> {
  const bySecret = new Map<string, string>();
  for (const o of w.oidcSecrets) {
    if (o.secret === null)
      throw new ChartInputError(
        `gateway.oidc.${o.provider}.secret: on Kubernetes the gateway reads the client secret from the environment variable ${o.env}; ` +
          "name the Secret that holds it (under the key client-secret), e.g. `secret: " +
          `${o.provider}-oidc` +
          "`",
      );
    const other = bySecret.get(o.env);
    if (other !== undefined && other !== o.secret)
      throw new ChartInputError(
        `gateway.oidc.${o.provider}.secret: ${o.env} would come from two Secrets (${other} and ${o.secret}); give each provider its own clientSecretEnv`,
      );
    bySecret.set(o.env, o.secret);
  }
  return [...bySecret]
    .sort(([a], [b]) => compareCodeUnits(a, b))
    .map(([name, secret]) => ({ name, valueFrom: { secretKeyRef: { name: secret, key: OIDC_SECRET_KEY } } }));
}

/**
 * The spec's extra gateway volumes (targets.kubernetes.gatewayVolumes), mounted read-only: their names
 * and mount paths must stay clear of the chart's own (config, identity, tmp, TLS Secrets).
 */
function gatewayVolumes(
  r: Resolved,
  own: readonly { name: string; mountPath: string }[],
): { volumes: Volume[]; mounts: NonNullable<Container["volumeMounts"]> } {
  const extra = r.infra.targets.kubernetes?.gatewayVolumes ?? [];
  const inside = (a: string, b: string) => a === b || a.startsWith(b.endsWith("/") ? b : `${b}/`);
  extra.forEach((v, i) => {
    const field = `targets.kubernetes.gatewayVolumes[${i}]`;
    const taken = own.find((m) => m.name === v.name);
    if (taken)
      throw new ChartInputError(
        `${field}.name: "${v.name}" is a volume the chart mounts itself (at ${taken.mountPath}); choose another name`,
      );
    const path = v.mountPath.replace(/\/+$/, "") || "/";
    const clash = own.find((m) => inside(path, m.mountPath) || inside(m.mountPath, path));
    if (clash)
      throw new ChartInputError(
        `${field}.mountPath: ${path} overlaps the chart's mount of ${clash.name} at ${clash.mountPath}; mount it elsewhere (e.g. /srv/${v.name})`,
      );
  });
  return {
    volumes: extra.map((v): Volume => {
      switch (v.source.kind) {
        case "configMap":
          return { name: v.name, configMap: { name: v.source.name, defaultMode: 0o444 } };
        case "secret":
          return { name: v.name, secret: { secretName: v.source.name, defaultMode: 0o440 } };
        case "persistentVolumeClaim":
          return { name: v.name, persistentVolumeClaim: { claimName: v.source.name, readOnly: true } };
      }
    }),
    mounts: extra.map((v) => ({ name: v.name, mountPath: v.mountPath, readOnly: true })),
  };
}

/**
 * A pod's preStop sleep in whole seconds — the gateway's (targets.kubernetes.gatewayDrainDelay) or each
 * service app's (serviceDrainDelay); their defaults without targets.kubernetes.
 */
function drainDelaySeconds(r: Resolved, pod: "gateway" | "service"): number {
  return (
    r.infra.targets.kubernetes?.[`${pod}DrainDelaySeconds`] ??
    Math.ceil(parseDuration(DEFAULTS[`targets.kubernetes.${pod}DrainDelay`].value) / 1000)
  );
}

/** The container field that sleeps `seconds` before SIGTERM (none for 0). */
const preStopSleep = (seconds: number) =>
  seconds > 0 ? { lifecycle: { preStop: { sleep: { seconds } } } } : {};

function gatewayObjects(r: Resolved, w: GatewayWorkloadIR, config: GatewayRuntimeConfig): KubeObject[] {
  const selector = workloadSelector(r, w.name);
  const labels = { ...selector, [LABELS.role]: "gateway" };
  const lowPort = w.listeners.some((l) => l.port < 1024);
  const listenerNames = listenerPortNames(w.listeners);
  const memory = gatewayMemory(config);
  const ownMounts = [
    { name: "config", mountPath: PATHS.configDir, readOnly: true },
    { name: "identity", mountPath: PATHS.identityDir, readOnly: true },
    ...w.tlsSecrets.map((s, i) => ({ name: `tls-${i}`, mountPath: PATHS.tlsDir(s), readOnly: true })),
    { name: "tmp", mountPath: "/tmp" },
  ];
  const extra = gatewayVolumes(r, ownMounts);
  const env = gatewayEnv(w);
  const drainDelay = drainDelaySeconds(r, "gateway");
  const container: Container = {
    name: GATEWAY_CONTAINER,
    image: r.runtimeImage,
    // One process per pod: the HorizontalPodAutoscaler adds pods (and CPU) instead of workers.
    args: ["gateway", "--config", PATHS.configFile, "--workers", "1"],
    ...(env.length > 0 ? { env } : {}),
    ports: [
      ...w.listeners.map((l) => ({
        name: listenerNames.get(l.port)!,
        containerPort: l.port,
        protocol: "TCP" as const,
      })),
      { name: PORT_NAMES.admin, containerPort: w.adminPort, protocol: "TCP" },
    ],
    ...adminProbes(PORT_NAMES.admin),
    // Kubernetes takes a stopping pod out of endpoints (and kube-proxy, load balancers) while it stops:
    // the gateway keeps serving that long before SIGTERM starts its drain (no binary needed: sleep action).
    ...preStopSleep(drainDelay),
    resources: { requests: { cpu: PROXY_RESOURCES.gatewayCpu, memory }, limits: { memory } },
    securityContext: containerSecurity(RUNTIME_UID),
    volumeMounts: [...ownMounts, ...extra.mounts],
  };
  const deployment: KubeObject = {
    apiVersion: "apps/v1",
    kind: "Deployment",
    metadata: meta(r, w.name, r.ns, "gateway", labels),
    spec: {
      // No `replicas`: the HorizontalPodAutoscaler owns the count (from `gateway.replicas` up). With it
      // here, every apply of the chart (a config change) would scale a scaled-out gateway back down to
      // `gateway.replicas` under load (the Kubernetes docs' warning; Istio's gateway chart omits it too).
      revisionHistoryLimit: 5,
      selector: { matchLabels: selector },
      strategy: { type: "RollingUpdate", rollingUpdate: { maxUnavailable: 0, maxSurge: 1 } },
      template: {
        metadata: {
          labels: { ...labels, [LABELS.name]: w.name, [LABELS.proxy]: "gateway" },
          annotations: {
            [ANNOTATIONS.configHash]: configAnnotationHash(config),
            [ANNOTATIONS.spiffeId]: w.identity,
          },
        },
        spec: {
          serviceAccountName: w.serviceAccount,
          automountServiceAccountToken: false,
          enableServiceLinks: false,
          // The preStop sleep, then the drain of in-flight requests on SIGTERM (limits.drainTimeout).
          terminationGracePeriodSeconds: drainDelay + Math.ceil(config.limits.drainTimeoutMs / 1000) + 5,
          securityContext: {
            ...podSecurity(RUNTIME_UID),
            // Listeners below 1024 without any capability: the namespaced, "safe" sysctl.
            ...(lowPort ? { sysctls: [{ name: "net.ipv4.ip_unprivileged_port_start", value: "0" }] } : {}),
          },
          containers: [container],
          volumes: [
            configVolume(w.name, config),
            identityVolume(r, w.name),
            ...w.tlsSecrets.map(tlsSecretVolume),
            tmpVolume("tmp"),
            ...extra.volumes,
          ],
        },
      },
    },
  };
  const serviceType = r.infra.targets.kubernetes?.gatewayServiceType ?? "LoadBalancer";
  // Only node ports have an external traffic policy (the API refuses one on a ClusterIP Service).
  const externalTrafficPolicy =
    serviceType === "ClusterIP"
      ? null
      : (r.infra.targets.kubernetes?.gatewayExternalTrafficPolicy ??
        DEFAULTS["targets.kubernetes.gatewayExternalTrafficPolicy"].value);
  const service: KubeObject = {
    apiVersion: "v1",
    kind: "Service",
    metadata: meta(
      r,
      w.name,
      r.ns,
      "gateway",
      labels,
      r.gatewayServiceAnnotations ? { ...r.gatewayServiceAnnotations } : undefined,
    ),
    spec: {
      type: serviceType,
      ...(externalTrafficPolicy !== null ? { externalTrafficPolicy } : {}),
      selector,
      ports: w.listeners.map((l) => ({
        name: listenerNames.get(l.port)!,
        port: l.port,
        targetPort: listenerNames.get(l.port)!,
        protocol: "TCP",
      })),
    },
  };
  const hpa: KubeObject = {
    apiVersion: "autoscaling/v2",
    kind: "HorizontalPodAutoscaler",
    metadata: meta(r, w.name, r.ns, "gateway", labels),
    spec: {
      scaleTargetRef: { apiVersion: "apps/v1", kind: "Deployment", name: w.name },
      minReplicas: w.replicas,
      maxReplicas: Math.max(w.replicas * 3, w.replicas + 2),
      metrics: [
        {
          type: "Resource",
          resource: { name: "cpu", target: { type: "Utilization", averageUtilization: 70 } },
        },
      ],
    },
  };
  const pdb: KubeObject = {
    apiVersion: "policy/v1",
    kind: "PodDisruptionBudget",
    metadata: meta(r, w.name, r.ns, "gateway", labels),
    spec: { maxUnavailable: 1, selector: { matchLabels: selector } },
  };
  return [deployment, service, hpa, pdb];
}

/** A ClusterIP Service over the gateway's admin port, for ServiceMonitors (operator mode). */
export function gatewayAdminService(r: Resolved, w: GatewayWorkloadIR): KubeObject {
  const selector = workloadSelector(r, w.name);
  return {
    apiVersion: "v1",
    kind: "Service",
    metadata: meta(r, NAMES.gatewayAdminService, r.ns, "gateway", {
      ...selector,
      [LABELS.proxy]: "gateway",
    }),
    spec: {
      type: "ClusterIP",
      selector,
      ports: [{ name: PORT_NAMES.admin, port: w.adminPort, targetPort: PORT_NAMES.admin, protocol: "TCP" }],
    },
  };
}

/** Every object of the mesh namespace but its NetworkPolicies and the observability objects. */
export function workloadObjects(r: Resolved): KubeObject[] {
  const out: KubeObject[] = [
    namespaceObject(r, r.ns, "mesh", r.namespaceLabels),
    ...serviceAccounts(r),
    ...certManagerObjects(r),
  ];
  const sidecars = new Map(r.result.runtime.sidecars.map((s) => [s.name, s]));
  for (const w of r.infra.workloads) {
    if (w.kind === "gateway") {
      const gw = r.result.runtime.gateway;
      if (!gw) throw new Error("the IR has a gateway workload but no gateway RuntimeConfig");
      const config = kubernetesConfig(r, gw);
      out.push(configMap(r, w.name, config), ...gatewayObjects(r, w, config));
      continue;
    }
    const sidecar = sidecars.get(w.name);
    if (!sidecar) throw new Error(`the IR has service "${w.name}" but no sidecar RuntimeConfig for it`);
    const config = kubernetesConfig(r, sidecar);
    out.push(
      configMap(r, w.name, config),
      serviceDeployment(r, w, config),
      headlessService(r, w),
      ...serviceDisruptionBudget(r, w),
    );
  }
  return out;
}
