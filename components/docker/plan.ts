/**
 * The Docker renderer: translate's output → a frozen plan of every container the Docker target runs on
 * one engine — for each service a network container (the pod's pause container: it holds the network
 * namespace and the service's alias), its app container and a meshgate sidecar in that namespace
 * (`networkMode: container:<network container>`), the gateway (a mesh member with its own SVID, like on
 * Kubernetes) and Prometheus with the generated configuration — with images, commands, published ports,
 * healthchecks, labels and every file to copy in (its path, mode, owner and where its content comes from).
 *
 * Pure and deterministic: no I/O, clock or randomness (a golden test pins the shop's plan). Certificates
 * and keys are not content here but references (`svid-chain`, `svid-key`, `trust-bundle`, …) that the
 * `DockerPlatform` component fills from `MeshCa`'s outputs, so a key never enters the plan.
 *
 * Like Kubernetes pods, every service has its own network namespace on one user-defined network, with
 * the service's name as its network alias: the proxies find each other by Docker's DNS
 * (`discovery.template: "{service}"`) on the standard ports (inbound 15006, admin 15000).
 */
import {
  sealRuntimeConfig,
  type GatewayRuntimeConfig,
  type RuntimeConfig,
} from "../../runtime/contract/index.ts";
import { observabilityFiles } from "../observability/index.ts";
import { prometheusFlags } from "../observability/scrape.ts";
import { IMAGES, PATHS, RUNTIME_UID, SIDECAR_ENTRYPOINT } from "../kubernetes/model.ts";
import { appEnv, configAnnotationHash, configHoldsCredentials } from "../kubernetes/workloads.ts";
import { withoutCredentials } from "../spec/semantic.ts";
import { IDENTITY_FILES } from "../translate/translate.ts";
import type { GatewayWorkloadIR, ServiceWorkloadIR, TranslateResult } from "../translate/ir.ts";

/** Labels on every container (the policy pack's docker rules read `meshgate.io/role`). */
export const DOCKER_LABELS = {
  mesh: "meshgate.io/mesh",
  workload: "meshgate.io/workload",
  /** `network`, `app`, `sidecar`, `gateway` or `prometheus`. */
  role: "meshgate.io/role",
  configHash: "meshgate.io/config-hash",
  /** The container port of an unauthenticated admin listener: published on 127.0.0.1 only. */
  adminPort: "meshgate.io/admin-port",
  managedBy: "app.kubernetes.io/managed-by",
} as const;

/** Where the files of a meshgate container live: a per-container volume, the rest of the root is read-only. */
export const DOCKER_FILES_DIR = "/etc/meshgate";
/** Prometheus' files (prometheus.yml and the rules) under the files volume. */
export const PROMETHEUS_DIR = `${DOCKER_FILES_DIR}/prometheus`;
/** Where the gateway's listener certificates are copied (translate's default `certFile` paths). */
export const TLS_DIR = "/etc/meshgate/tls";
/** Where a static route's files are copied: `<STATIC_DIR>/<route name>/…` (in the files volume). */
export const STATIC_DIR = `${DOCKER_FILES_DIR}/static`;
/**
 * The image of each service's network container (the Kubernetes pod's own "pause" container, pinned by
 * tag): it holds the network namespace the app and its sidecar share and does nothing else, so it never
 * exits on its own.
 */
export const PAUSE_IMAGE = "registry.k8s.io/pause:3.10";
/** The pause image's user (its own default, nobody-like 65535). */
const PAUSE_UID = 65535;
/** The Prometheus image (the Kubernetes bundle's, pinned by tag). */
export const PROMETHEUS_IMAGE = IMAGES.prometheus;
/** Prometheus' user in its image (nobody). */
const PROMETHEUS_UID = 65534;
const PROMETHEUS_PORT = 9090;
/** Docker's restart policy for every container. */
export const RESTART_POLICY = "unless-stopped";

export type ContainerRole = "network" | "app" | "sidecar" | "gateway" | "prometheus";

/** Where a file's content comes from: text in the plan, or a certificate or key MeshCa issues. */
export type FileSource =
  /** `secret`: the text holds a credential (a Redis password in the gateway's config): a Pulumi secret. */
  | { readonly kind: "text"; readonly content: string; readonly secret?: true }
  | { readonly kind: "trust-bundle" }
  | { readonly kind: "intermediates" }
  | { readonly kind: "svid-chain"; readonly identity: string }
  | { readonly kind: "svid-key"; readonly identity: string }
  | { readonly kind: "tls-cert"; readonly secret: string }
  | { readonly kind: "tls-key"; readonly secret: string }
  /** A file of the machine that runs the deployment (a static route's site), with its content hash. */
  | { readonly kind: "host-file"; readonly path: string; readonly sha256: string };

/** A file of a static route's directory on the deploying machine. */
export interface StaticFile {
  /** Path relative to the route's directory, with `/` separators. */
  readonly relative: string;
  /** Absolute path on the deploying machine. */
  readonly hostPath: string;
  /** sha256 (hex) of the content: a changed file replaces the gateway container. */
  readonly sha256: string;
}

export interface PlannedFile {
  /** Absolute path in the container. */
  readonly path: string;
  /** Octal mode: 0400 for private keys, 0444 otherwise. */
  readonly mode: "0400" | "0444";
  /** Numeric uid (and gid) owning the file: the process that reads it. */
  readonly owner: number;
  readonly source: FileSource;
}

export interface PlannedPort {
  readonly internal: number;
  readonly external: number;
  /** The host address it binds: 0.0.0.0 for the gateway's listeners, 127.0.0.1 for admin and Prometheus. */
  readonly ip: string;
}

export interface PlannedContainer {
  /** The Docker container name (unique on the engine: prefixed with the mesh's namespace). */
  readonly name: string;
  readonly role: ContainerRole;
  /** The mesh workload it belongs to (null for Prometheus). */
  readonly workload: string | null;
  /** `runtime`: the meshgate runtime image built from runtime/Dockerfile; else a pinned registry image. */
  readonly image: { readonly kind: "runtime" } | { readonly kind: "remote"; readonly ref: string };
  /**
   * The entrypoint instead of the image's (null: the image's; the runtime image's is
   * RUNTIME_ENTRYPOINT, `node /app/meshgate.js`): the sidecars put their Node flags there.
   */
  readonly entrypoint: readonly string[] | null;
  /** The image's CMD (the arguments after the entrypoint). */
  readonly command: readonly string[];
  readonly env: Readonly<Record<string, string>>;
  /**
   * Environment variables whose value is a secret the caller provides (the component passes them as
   * Pulumi secrets): variable → OIDC provider name (`oidcClientSecrets`).
   */
  readonly secretEnv: Readonly<Record<string, string>>;
  /** On the mesh network with these aliases, or in another container's network namespace (its plan name). */
  readonly network:
    | { readonly kind: "network"; readonly aliases: readonly string[] }
    | { readonly kind: "container"; readonly container: string };
  readonly ports: readonly PlannedPort[];
  readonly files: readonly PlannedFile[];
  /** The directory the files volume is mounted at (null: no files). */
  readonly filesDir: string | null;
  /** Other named volumes: mount path → volume name. */
  readonly volumes: Readonly<Record<string, string>>;
  /** Read-only root filesystem (meshgate's own containers; apps keep their image's choice). */
  readonly readOnly: boolean;
  /** `uid:gid`, or null for the image's user. */
  readonly user: string | null;
  readonly tmpfs: Readonly<Record<string, string>>;
  readonly sysctls: Readonly<Record<string, string>>;
  /** Drop every capability and set no-new-privileges (meshgate's own containers). */
  readonly hardened: boolean;
  readonly healthcheck: { readonly test: readonly string[]; readonly startPeriod: string } | null;
  readonly labels: Readonly<Record<string, string>>;
  /** Plan names of the containers that must exist (and be healthy) first. */
  readonly after: readonly string[];
  /** The RuntimeConfig hash (proxies) or null. */
  readonly configHash: string | null;
}

export interface DockerPlan {
  readonly mesh: string;
  readonly namespace: string;
  readonly trustDomain: string;
  /** The user-defined bridge network every container joins. */
  readonly network: string;
  /** Every registry image to pull (apps and Prometheus), sorted: pinned references. */
  readonly remoteImages: readonly string[];
  /** In creation order: each service's network container and app, the sidecars, gateway, Prometheus. */
  readonly containers: readonly PlannedContainer[];
  readonly urls: { readonly gateway: string | null; readonly prometheus: string | null };
  /** Every proxy's RuntimeConfig as deployed, by workload. */
  readonly configs: Readonly<Record<string, RuntimeConfig>>;
  /** What the Docker target does differently from the spec (logged as warnings). */
  readonly notes: readonly string[];
}

export interface DockerPlanOptions {
  /**
   * Secrets of the gateway's TLS listeners that the caller provides (certificate and key): an `https`
   * listener is opened only when every certificate it serves comes from one of them.
   * @default none: https listeners are not opened (noted)
   */
  readonly tlsSecrets?: readonly string[];
  /** The host port of the gateway's admin listener (bound to 127.0.0.1). @default the admin port (9901) */
  readonly gatewayAdminPort?: number;
  /** The host port of Prometheus (bound to 127.0.0.1). @default 9090 */
  readonly prometheusPort?: number;
  /**
   * The files of every static route's directory, by the route's `root` as translate gives it: they are
   * copied into the gateway container (the runtime image holds no site). A static route without an entry
   * is an error.
   */
  readonly staticFiles?: Readonly<Record<string, readonly StaticFile[]>>;
  /**
   * OIDC providers (`gateway.oidc.<name>`) whose client secret the caller provides: the gateway's
   * `clientSecretEnv` is set from it. A provider without one is an error (the gateway cannot start).
   * @default none
   */
  readonly oidcSecrets?: readonly string[];
}

export interface DockerPlanError {
  readonly code:
    | "E_DOCKER_TARGET_MISSING"
    | "E_DOCKER_NO_LISTENER"
    | "E_DOCKER_PORT_COLLISION"
    | "E_DOCKER_NAME_COLLISION"
    | "E_DOCKER_STATIC_FILES"
    | "E_DOCKER_OIDC_SECRET"
    | "E_DOCKER_CLIENT_CERT";
  /** The spec field or option to change. */
  readonly field: string;
  readonly message: string;
}

export type DockerPlanResult =
  | { readonly ok: true; readonly plan: DockerPlan }
  | { readonly ok: false; readonly errors: readonly DockerPlanError[] };

/** The Docker discovery: a service's name resolves on the mesh network (its app container's alias). */
export const DOCKER_DISCOVERY_TEMPLATE = "{service}";

/** A healthcheck of a runtime container: GET /ready on its admin port (the image has node, no curl). */
export function readyCheck(adminPort: number): string[] {
  return [
    "CMD",
    "node",
    "-e",
    `fetch("http://127.0.0.1:${adminPort}/ready").then((r)=>process.exit(r.ok?0:1),()=>process.exit(1))`,
  ];
}

const CLUSTER_LOCAL = /^[a-z]+:\/\/(?:[^@/]*@)?[^/:]+\.svc\.cluster\.local(?::\d+)?(?:\/|$)/;

/** The Docker plan of a translated spec (see the module comment). */
export function planDocker(translated: TranslateResult, o: DockerPlanOptions = {}): DockerPlanResult {
  const { infra, runtime } = translated;
  const target = infra.targets.docker;
  const errors: DockerPlanError[] = [];
  if (!target)
    return {
      ok: false,
      errors: [
        {
          code: "E_DOCKER_TARGET_MISSING",
          field: "targets.docker",
          message: "the spec has no targets.docker: add `targets: { docker: { gatewayPort: 8080 } }`",
        },
      ],
    };
  const prefix = infra.namespace;
  const notes: string[] = [];
  const names = {
    network: (s: string) => `${prefix}-${s}-net`,
    app: (s: string) => `${prefix}-${s}`,
    sidecar: (s: string) => `${prefix}-${s}-sidecar`,
    gateway: `${prefix}-gateway`,
    prometheus: `${prefix}-prometheus`,
  };
  const baseLabels = (
    workload: string | null,
    role: ContainerRole,
    hash: string | null,
    adminPort: number | null = null,
  ) => ({
    [DOCKER_LABELS.managedBy]: "meshgate",
    [DOCKER_LABELS.mesh]: infra.name,
    [DOCKER_LABELS.role]: role,
    ...(workload !== null ? { [DOCKER_LABELS.workload]: workload } : {}),
    ...(hash !== null ? { [DOCKER_LABELS.configHash]: hash } : {}),
    ...(adminPort !== null ? { [DOCKER_LABELS.adminPort]: String(adminPort) } : {}),
  });
  const declared = infra.workloads.filter((w): w is ServiceWorkloadIR => w.kind === "service");
  // replicas: 0 runs no pod on Kubernetes; on Docker neither the app nor its sidecar (callers get no
  // endpoint, as there), and Prometheus does not scrape a sidecar that is not there.
  const services = declared.filter((s) => s.replicas > 0);
  const stopped = declared.filter((s) => s.replicas === 0).map((s) => s.name);
  const gatewayIR = infra.workloads.find((w): w is GatewayWorkloadIR => w.kind === "gateway") ?? null;
  const sidecarOf = new Map(runtime.sidecars.map((s) => [s.name, s]));
  const configs: Record<string, RuntimeConfig> = {};
  const containers: PlannedContainer[] = [];
  const sidecars: PlannedContainer[] = [];
  const remote = new Set<string>();

  const identityFiles = (workload: string): PlannedFile[] => [
    file(`${PATHS.identityDir}/${IDENTITY_FILES.cert}`, { kind: "svid-chain", identity: workload }),
    {
      ...file(`${PATHS.identityDir}/${IDENTITY_FILES.key}`, { kind: "svid-key", identity: workload }),
      mode: "0400",
    },
    file(`${PATHS.identityDir}/${IDENTITY_FILES.bundle}`, { kind: "trust-bundle" }),
    file(`${PATHS.identityDir}/${IDENTITY_FILES.intermediates}`, { kind: "intermediates" }),
  ];
  // A config with a Redis password is a secret in the state, like the Secret the Kubernetes chart renders.
  const configFile = (config: RuntimeConfig) =>
    file(PATHS.configFile, {
      kind: "text",
      content: `${JSON.stringify(config, null, 2)}\n`,
      ...(configHoldsCredentials(config) ? { secret: true as const } : {}),
    });
  const proxyDefaults = {
    image: { kind: "runtime" } as const,
    filesDir: DOCKER_FILES_DIR,
    volumes: {},
    readOnly: true,
    user: `${RUNTIME_UID}:${RUNTIME_UID}`,
    tmpfs: { "/tmp": "rw,noexec,nosuid,size=64m" },
    hardened: true,
  };

  const replicated = services.filter((s) => s.replicas > 1).map((s) => s.name);
  if (gatewayIR && gatewayIR.replicas > 1) replicated.unshift("gateway");
  if (replicated.length > 0)
    notes.push(
      `${replicated.join(", ")}: replicas > 1 run as one container each on Docker (one engine, no scheduler)`,
    );
  if (stopped.length > 0)
    notes.push(
      `${stopped.join(", ")}: replicas 0, so neither the app nor its sidecar is run on Docker (as on Kubernetes, no pod)`,
    );
  if (infra.ca.provider === "cert-manager")
    notes.push(
      "mesh.ca.provider cert-manager: on Docker the Pulumi MeshCa issues every SVID (no cert-manager)",
    );

  // Certificates (listeners', externals' client certificates) come from the secrets the caller gives.
  const provided = new Set(o.tlsSecrets ?? []);
  const tlsPrefix = `${TLS_DIR}/`;
  const secretOf = (path: string) =>
    path.startsWith(tlsPrefix) ? path.slice(tlsPrefix.length).split("/")[0]! : null;
  const givenSecret = (c: { certFile: string; keyFile: string }) => {
    const secret = secretOf(c.certFile);
    return secret !== null && secret === secretOf(c.keyFile) && provided.has(secret) ? secret : null;
  };

  // ── services: the network container, the app and its sidecar in its network namespace ──
  for (const s of services) {
    const sc = sidecarOf.get(s.name);
    if (!sc) throw new Error(`the IR has service "${s.name}" but no sidecar RuntimeConfig for it`);
    // An external whose client certificate is not given is not relayed (its callers get 403), never
    // reached without the certificate.
    const uncertified = sc.outbound.external.filter(
      (x) => x.clientCertificate !== null && givenSecret(x.clientCertificate) === null,
    );
    if (uncertified.length > 0)
      notes.push(
        `${s.name}'s sidecar does not relay to ${uncertified.map((x) => x.name).join(", ")}: give the client certificate secrets (${[...new Set(uncertified.map((x) => secretOf(x.clientCertificate!.certFile) ?? x.clientCertificate!.certFile))].join(", ")}) in tlsCertificates`,
      );
    const config = dockerConfig(
      uncertified.length > 0
        ? {
            ...sc,
            outbound: {
              ...sc.outbound,
              external: sc.outbound.external.filter((x) => !uncertified.includes(x)),
            },
          }
        : sc,
    );
    const clientCertFiles = config.outbound.external.flatMap((x) => {
      if (x.clientCertificate === null) return [];
      const secret = givenSecret(x.clientCertificate)!;
      return [
        file(x.clientCertificate.certFile, { kind: "tls-cert", secret }),
        { ...file(x.clientCertificate.keyFile, { kind: "tls-key", secret }), mode: "0400" as const },
      ];
    });
    configs[s.name] = config;
    remote.add(s.image);
    remote.add(PAUSE_IMAGE);
    const env = Object.fromEntries(appEnv(s, config).map((e) => [e.name, e.value]));
    // The network namespace the app and its sidecar share is held by a container that never exits, as
    // a pod's pause container: held by the app, an app that crashes and restarts would come back in a
    // new namespace, and the sidecar (still in the old one, with no interface but the loopback) would be
    // cut off from the network until it is replaced — the service unreachable, its healthcheck passing.
    containers.push({
      name: names.network(s.name),
      role: "network",
      workload: s.name,
      image: { kind: "remote", ref: PAUSE_IMAGE },
      entrypoint: null,
      command: [],
      env: {},
      secretEnv: {},
      network: { kind: "network", aliases: [s.name] },
      ports: [],
      files: [],
      filesDir: null,
      volumes: {},
      readOnly: true,
      user: `${PAUSE_UID}:${PAUSE_UID}`,
      tmpfs: {},
      sysctls: {},
      hardened: true,
      healthcheck: null,
      labels: baseLabels(s.name, "network", null),
      after: [],
      configHash: null,
    });
    containers.push({
      name: names.app(s.name),
      role: "app",
      workload: s.name,
      image: { kind: "remote", ref: s.image },
      entrypoint: null,
      command: [],
      env,
      secretEnv: {},
      network: { kind: "container", container: names.network(s.name) },
      ports: [],
      files: [],
      filesDir: null,
      volumes: {},
      readOnly: false,
      user: null,
      tmpfs: {},
      sysctls: {},
      hardened: false,
      healthcheck: null,
      labels: baseLabels(s.name, "app", null),
      after: [names.network(s.name)],
      configHash: null,
    });
    sidecars.push({
      ...proxyDefaults,
      name: names.sidecar(s.name),
      role: "sidecar",
      workload: s.name,
      entrypoint: SIDECAR_ENTRYPOINT,
      command: ["sidecar", "--config", PATHS.configFile],
      env: {},
      secretEnv: {},
      network: { kind: "container", container: names.network(s.name) },
      ports: [],
      files: uniqueFiles([configFile(config), ...identityFiles(s.name), ...clientCertFiles]),
      sysctls: {},
      healthcheck: { test: readyCheck(config.admin.port), startPeriod: "30s" },
      labels: baseLabels(s.name, "sidecar", configAnnotationHash(config), config.admin.port),
      after: [names.app(s.name)],
      configHash: configAnnotationHash(config),
    });
  }
  containers.push(...sidecars);

  // ── the gateway ──
  let gatewayUrl: string | null = null;
  const gw = runtime.gateway;
  if (gw && gatewayIR) {
    const opened = gw.listeners.filter(
      (l) => l.tls === null || l.tls.certificates.every((c) => givenSecret(c) !== null),
    );
    const closed = gw.listeners.filter((l) => !opened.includes(l));
    if (closed.length > 0)
      notes.push(
        `gateway listeners ${closed.map((l) => `${l.name} (${l.protocol} :${l.port})`).join(", ")} are not opened: give their certificate secrets (${[...new Set(closed.flatMap((l) => l.tls?.certificates.map((c) => secretOf(c.certFile) ?? c.certFile) ?? []))].join(", ")}) in tlsCertificates`,
      );
    // Each OIDC provider's client secret, given by the caller, in the variable the gateway reads.
    const givenSecrets = new Set(o.oidcSecrets ?? []);
    const secretEnv: Record<string, string> = {};
    for (const p of gw.auth.oidc) {
      if (!givenSecrets.has(p.name))
        errors.push({
          code: "E_DOCKER_OIDC_SECRET",
          field: "oidcClientSecrets",
          message: `OIDC provider ${p.name}: the gateway reads its client secret from the environment variable ${p.clientSecretEnv}; give it in oidcClientSecrets.${p.name}`,
        });
      else secretEnv[p.clientSecretEnv] = p.name;
    }
    const http = opened.find((l) => l.protocol === "http") ?? null;
    if (opened.length === 0)
      errors.push({
        code: "E_DOCKER_NO_LISTENER",
        field: "gateway.listeners",
        message:
          "no gateway listener can be opened on Docker: add an http listener, or give the https listeners' certificate secrets in tlsCertificates",
      });
    const { hash: _h, ...rest } = gw;
    const cluster = (u: string) => CLUSTER_LOCAL.test(u);
    // Notes are logged and a stack output: a URL's password never reaches them.
    if (rest.rateLimitStore.kind === "redis" && cluster(rest.rateLimitStore.url))
      notes.push(
        `rate limits are kept in the gateway container: ${withoutCredentials(rest.rateLimitStore.url)} is a Kubernetes name (one gateway container, so the limits are exact)`,
      );
    if (rest.cacheStore.kind === "redis" && cluster(rest.cacheStore.url))
      notes.push(
        `the HTTP cache is kept in memory: ${withoutCredentials(rest.cacheStore.url)} is a Kubernetes name`,
      );
    const staticFiles: PlannedFile[] = [];
    const routes = rest.routes.map((r) => {
      if (r.action.kind !== "static") return r;
      const files = o.staticFiles?.[r.action.root];
      const dir = `${STATIC_DIR}/${r.name}`;
      if (!files) {
        errors.push({
          code: "E_DOCKER_STATIC_FILES",
          field: "gateway.routes",
          message: `route ${r.name}: the files of its static directory ${r.action.root} were not given: the gateway container holds no site files (the directory must exist where the deployment runs)`,
        });
        return r;
      }
      for (const f of files)
        staticFiles.push(
          file(`${dir}/${f.relative}`, { kind: "host-file", path: f.hostPath, sha256: f.sha256 }),
        );
      return { ...r, action: { ...r.action, root: dir } };
    });
    // The gateway's URL on Docker is http://localhost:<gatewayPort>: the gateway also answers localhost
    // (as in local mode; the spec always names its hosts).
    const hosts = [...new Set([...rest.hosts, "127.0.0.1", "localhost"])].sort();
    if (hosts.length > rest.hosts.length)
      notes.push(
        `the gateway also serves the hosts localhost and 127.0.0.1 (its URL is http://localhost:${target.gatewayPort})`,
      );
    const config = dockerConfig<GatewayRuntimeConfig>({
      ...rest,
      hash: gw.hash,
      hosts,
      // The admin is published on the host's 127.0.0.1 only, but its connections arrive from the bridge:
      // the loopback-Host check (DNS rebinding) must hold on every connection. Prometheus scrapes it as
      // `gateway:<port>` on the network; the container's name resolves too.
      admin: { ...rest.admin, hosts: [...new Set(["gateway", names.gateway])].sort() },
      listeners: opened,
      routes,
      rateLimitStore:
        rest.rateLimitStore.kind === "redis"
          ? cluster(rest.rateLimitStore.url)
            ? { kind: "local", replicas: 1 }
            : rest.rateLimitStore
          : { kind: "local", replicas: 1 },
      cacheStore:
        rest.cacheStore.kind === "redis" && cluster(rest.cacheStore.url)
          ? { kind: "memory", maxBytes: rest.cacheStore.maxBytes }
          : rest.cacheStore,
    });
    configs.gateway = config;
    const adminHost = o.gatewayAdminPort ?? config.admin.port;
    const ports: PlannedPort[] = [
      ...opened.map((l) => ({
        internal: l.port,
        external: l === http ? target.gatewayPort : l.port,
        ip: "0.0.0.0",
      })),
      { internal: config.admin.port, external: adminHost, ip: "127.0.0.1" },
    ];
    const seen = new Map<number, string>();
    for (const p of ports) {
      const what = p.internal === config.admin.port ? "the gateway's admin port" : `listener :${p.internal}`;
      if (seen.has(p.external))
        errors.push({
          code: "E_DOCKER_PORT_COLLISION",
          field: p.external === target.gatewayPort ? "targets.docker.gatewayPort" : "gateway.listeners",
          message: `host port ${p.external} is published twice (${seen.get(p.external)} and ${what}): change targets.docker.gatewayPort or gatewayAdminPort`,
        });
      seen.set(p.external, what);
    }
    // The client certificates of the external backends its routes forward to (mutual TLS): the gateway
    // would not start without them, and never reaches the backend without one.
    const clientCerts = config.clusters.flatMap((c) =>
      c.tls.mode === "tls" && c.tls.clientCertificate
        ? [{ cluster: c.name, files: c.tls.clientCertificate }]
        : [],
    );
    for (const c of clientCerts)
      if (givenSecret(c.files) === null)
        errors.push({
          code: "E_DOCKER_CLIENT_CERT",
          field: "tlsCertificates",
          message: `the gateway forwards to external ${c.cluster} with mutual TLS: give its client certificate secret (${secretOf(c.files.certFile) ?? c.files.certFile}) in tlsCertificates`,
        });
    const tlsFiles: PlannedFile[] = [
      ...new Set([
        ...opened.flatMap((l) => l.tls?.certificates ?? []),
        ...clientCerts.flatMap((c) => (givenSecret(c.files) !== null ? [c.files] : [])),
      ]),
    ].flatMap((c) => {
      const secret = secretOf(c.certFile)!;
      return [
        file(c.certFile, { kind: "tls-cert", secret }),
        { ...file(c.keyFile, { kind: "tls-key", secret }), mode: "0400" as const },
      ];
    });
    const lowPort = opened.some((l) => l.port < 1024);
    containers.push({
      ...proxyDefaults,
      name: names.gateway,
      role: "gateway",
      workload: "gateway",
      entrypoint: null,
      command: ["gateway", "--config", PATHS.configFile, "--workers", "1"],
      env: {},
      secretEnv,
      network: { kind: "network", aliases: ["gateway"] },
      ports,
      files: [configFile(config), ...identityFiles("gateway"), ...uniqueFiles(tlsFiles), ...staticFiles],
      // Listeners below 1024 without any capability: the namespaced sysctl.
      sysctls: lowPort ? { "net.ipv4.ip_unprivileged_port_start": "0" } : {},
      healthcheck: { test: readyCheck(config.admin.port), startPeriod: "30s" },
      // Not the sealed hash: over a Redis password it would let label and output readers test guesses.
      labels: baseLabels("gateway", "gateway", configAnnotationHash(config), config.admin.port),
      after: sidecars.map((c) => c.name),
      configHash: configAnnotationHash(config),
    });
    gatewayUrl = http ? `http://localhost:${target.gatewayPort}` : null;
  }

  // ── Prometheus: scrapes every proxy's admin listener by its name on the network ──
  let prometheusUrl: string | null = null;
  const addresses: Record<string, string[]> = {};
  const scraped = infra.observability.metrics.targets.filter((t) => !stopped.includes(t.workload));
  for (const t of scraped)
    addresses[t.workload] = [`${t.kind === "gateway" ? "gateway" : t.workload}:${t.port}`];
  const bundle = observabilityFiles(
    stopped.length === 0
      ? infra
      : {
          ...infra,
          observability: {
            ...infra.observability,
            metrics: { ...infra.observability.metrics, targets: scraped },
          },
        },
    { scrape: { kind: "static", addresses } },
  );
  const promFiles = bundle.files.filter(
    (f) => f.path.startsWith("prometheus/") && !f.path.includes("/tests/"),
  );
  if (promFiles.length > 0) {
    const hostPort = o.prometheusPort ?? PROMETHEUS_PORT;
    if (gw && containers.some((c) => c.ports.some((p) => p.external === hostPort)))
      errors.push({
        code: "E_DOCKER_PORT_COLLISION",
        field: "prometheusPort",
        message: `host port ${hostPort} is taken by the gateway: choose another prometheusPort`,
      });
    remote.add(PROMETHEUS_IMAGE);
    containers.push({
      name: names.prometheus,
      role: "prometheus",
      workload: null,
      image: { kind: "remote", ref: PROMETHEUS_IMAGE },
      entrypoint: null,
      command: [
        `--config.file=${DOCKER_FILES_DIR}/prometheus/prometheus.yml`,
        "--storage.tsdb.path=/prometheus",
        `--web.listen-address=:${PROMETHEUS_PORT}`,
        ...prometheusFlags(infra),
      ],
      env: {},
      secretEnv: {},
      network: { kind: "network", aliases: ["prometheus"] },
      ports: [{ internal: PROMETHEUS_PORT, external: hostPort, ip: "127.0.0.1" }],
      files: promFiles.map((f) => ({
        path: `${DOCKER_FILES_DIR}/${f.path}`,
        mode: "0444" as const,
        owner: PROMETHEUS_UID,
        source: { kind: "text" as const, content: f.content },
      })),
      filesDir: DOCKER_FILES_DIR,
      volumes: { "/prometheus": `${names.prometheus}-data` },
      readOnly: true,
      user: `${PROMETHEUS_UID}:${PROMETHEUS_UID}`,
      tmpfs: { "/tmp": "rw,noexec,nosuid,size=16m" },
      sysctls: {},
      hardened: true,
      healthcheck: {
        test: ["CMD", "wget", "-q", "-O", "/dev/null", `http://127.0.0.1:${PROMETHEUS_PORT}/-/ready`],
        startPeriod: "30s",
      },
      labels: baseLabels(null, "prometheus", null, PROMETHEUS_PORT),
      after: [],
      configHash: null,
    });
    prometheusUrl = `http://localhost:${hostPort}`;
    if (infra.observability.grafana.enabled) notes.push("Grafana is not bundled on Docker (Prometheus is)");
  }
  if (infra.observability.tracing.enabled && infra.observability.tracing.otlpEndpoint === null)
    notes.push(
      "tracing has no collector on Docker: set observability.tracing.otlpEndpoint to export spans (none is bundled)",
    );

  // Container names and network aliases share the engine's DNS on the network, and a name is unique on
  // the engine: a service named like another container (prometheus, <service>-sidecar) would replace it
  // or answer for it.
  const owners = new Map<string, PlannedContainer>();
  const clashes = new Set<string>();
  for (const c of containers)
    for (const dnsName of new Set([c.name, ...(c.network.kind === "network" ? c.network.aliases : [])])) {
      const first = owners.get(dnsName);
      if (!first) {
        owners.set(dnsName, c);
        continue;
      }
      if (clashes.has(`${first.name} ${c.name}`)) continue; // one error per pair of containers
      clashes.add(`${first.name} ${c.name}`);
      const app = [c, first].find((x) => x.role === "app" && x.workload !== null);
      errors.push({
        code: "E_DOCKER_NAME_COLLISION",
        field: app ? `services.${app.workload}` : "services",
        message: `the name ${dnsName} would belong to two containers on the engine (${first.role} ${first.name} and ${c.role} ${c.name}): rename the service`,
      });
    }

  if (errors.length > 0) return { ok: false, errors };
  const plan: DockerPlan = {
    mesh: infra.name,
    namespace: infra.namespace,
    trustDomain: infra.trustDomain,
    network: target.network,
    remoteImages: [...remote].sort(),
    containers,
    urls: { gateway: gatewayUrl, prometheus: prometheusUrl },
    configs,
    notes,
  };
  return { ok: true, plan: deepFreeze(plan) };
}

/** A proxy's RuntimeConfig on Docker: translate's, with Docker DNS discovery (re-sealed). */
export function dockerConfig<T extends RuntimeConfig>(config: T): T {
  const { hash: _old, ...rest } = config;
  return sealRuntimeConfig<T>({
    ...rest,
    discovery: {
      kind: "dns",
      template: DOCKER_DISCOVERY_TEMPLATE,
      refreshMs: config.discovery.kind === "dns" ? config.discovery.refreshMs : 30_000,
    },
  } as never);
}

function file(path: string, source: FileSource): PlannedFile {
  return { path, mode: "0444", owner: RUNTIME_UID, source };
}

function uniqueFiles(files: PlannedFile[]): PlannedFile[] {
  const seen = new Set<string>();
  return files.filter((f) => (seen.has(f.path) ? false : (seen.add(f.path), true)));
}

function deepFreeze<T>(value: T): T {
  if (value && typeof value === "object" && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const v of Object.values(value as object)) deepFreeze(v);
  }
  return value;
}
