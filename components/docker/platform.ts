/**
 * `DockerPlatform` (`meshgate:docker:DockerPlatform`): a whole mesh on one Docker engine from one spec —
 * spec → validate → translate → the Docker plan (plan.ts) → `MeshCa` → `@pulumi/docker` resources:
 *
 *   the network (a user-defined bridge: Docker DNS resolves every service by its alias), the runtime image
 *   built from runtime/Dockerfile into the engine (`RuntimeImage`, no push), one `RemoteImage` per app image
 *   and for Prometheus and the pause image (`keepLocally: false`: destroy removes them), per container with
 *   files a volume that receives them, then the containers: every service's network container (the pause
 *   image, on the network, aliased by the service's name), its app and its sidecar in that network
 *   namespace (`networkMode: container:<network container id>`: an app that crashes and restarts rejoins
 *   the same namespace, where its sidecar still is), the gateway (after every sidecar is healthy) and
 *   Prometheus.
 *
 * Files — each proxy's RuntimeConfig, its SVID chain and key, the trust bundle and known intermediates —
 * are copied in by the provider's `uploads` at the paths the runtime reads (`/etc/meshgate/config/…`,
 * `/etc/meshgate/identity/…`), owned by the runtime's uid 65532, keys 0400, the rest 0444; keys are Pulumi
 * secrets all the way. A changed file (a renewed SVID, a new config) replaces the container.
 *
 * Everything about the spec and the options is checked before the component registers anything: a bad
 * spec throws `pulumi.InputPropertiesError` naming every path.
 */
import { createHash } from "node:crypto";
import { readdirSync, readFileSync, type Dirent } from "node:fs";
import { join, relative, resolve, sep } from "node:path";
import * as docker from "@pulumi/docker";
import * as pulumi from "@pulumi/pulumi";
import type { MeshSpecInput } from "../spec/schema.ts";
import type { TranslateResult } from "../translate/ir.ts";
import { MeshCa, type MeshCaRotation } from "../pulumi/ca.ts";
import { RuntimeImage } from "../pulumi/image.ts";
import { configAnnotationHash } from "../kubernetes/workloads.ts";
import {
  SPEC_OUTPUT,
  carriedSpecOutput,
  logDiagnostics,
  meshCaArgs,
  prepareSpec,
} from "../pulumi/platform.ts";
import {
  planDocker,
  RESTART_POLICY,
  type DockerPlan,
  type FileSource,
  type PlannedContainer,
  type StaticFile,
} from "./plan.ts";

export interface DockerPlatformArgs {
  /** The mesh spec: a `defineMesh({...})` value, a plain object, or the path of a `.yaml`/`.yml`/`.json` file. */
  spec: MeshSpecInput | string;
  /**
   * The Docker provider every resource is created with.
   * @default the stack's default provider (stack config `docker:host`, else DOCKER_HOST / the local socket)
   */
  provider?: docker.Provider;
  /**
   * The mesh's namespace: part of every SPIFFE ID, and the prefix of every container name.
   * @default the spec's `namespace`, else its `name`
   */
  namespace?: string;
  /** The mesh CA's staged root rotation (see MeshCa). @default no rotation in progress */
  caRotation?: MeshCaRotation;
  /**
   * The runtime image to build from runtime/Dockerfile into the engine (never pushed).
   * @default repository `meshgate/runtime`, tag the package version, platform linux/amd64
   */
  runtimeImage?: { repository?: string; tag?: string; platform?: string };
  /**
   * Certificates of the gateway's https listeners, by the secret name the spec gives them
   * (`gateway.listeners[].tls.certificates[].secret`). A listener whose secrets are missing is not opened.
   * @default none
   */
  tlsCertificates?: Record<string, { certPem: pulumi.Input<string>; keyPem: pulumi.Input<string> }>;
  /**
   * Client secrets of the gateway's OIDC providers, by provider name (`gateway.oidc.<name>`): set in the
   * gateway container's `clientSecretEnv` variable, as Pulumi secrets. Every provider needs one.
   * @default none
   */
  oidcClientSecrets?: Record<string, pulumi.Input<string>>;
  /** The host port of the gateway's admin listener, bound to 127.0.0.1. @default 9901 */
  gatewayAdminPort?: number;
  /** The host port of Prometheus, bound to 127.0.0.1. @default 9090 */
  prometheusPort?: number;
}

const OPTION_FIELDS = new Set(["prometheusPort", "gatewayAdminPort", "tlsCertificates", "oidcClientSecrets"]);

/** Validates, translates and plans (pure, no resources): the component's first step. */
export function prepareDocker(
  args: DockerPlatformArgs,
): { result: TranslateResult; plan: DockerPlan; carried: unknown } | pulumi.InputPropertyErrorDetails[] {
  // The spec only: no Kubernetes chart (its Secrets and volumes do not apply to containers on one engine).
  const prepared = prepareSpec({
    spec: args.spec,
    ...(args.namespace !== undefined ? { namespace: args.namespace } : {}),
  });
  if (Array.isArray(prepared)) return prepared;
  const errors: pulumi.InputPropertyErrorDetails[] = [];
  for (const key of ["gatewayAdminPort", "prometheusPort"] as const) {
    const v = args[key];
    if (v !== undefined && !(Number.isInteger(v) && v >= 1 && v <= 65535))
      errors.push({ propertyPath: key, reason: `${v} is not a port: use an integer from 1 to 65535` });
  }
  if (errors.length > 0) return errors;
  const staticFiles = listStaticFiles(prepared.result);
  if (Array.isArray(staticFiles)) return staticFiles;
  const planned = planDocker(prepared.result, {
    staticFiles,
    tlsSecrets: Object.keys(args.tlsCertificates ?? {}),
    oidcSecrets: Object.keys(args.oidcClientSecrets ?? {}),
    ...(args.gatewayAdminPort !== undefined ? { gatewayAdminPort: args.gatewayAdminPort } : {}),
    ...(args.prometheusPort !== undefined ? { prometheusPort: args.prometheusPort } : {}),
  });
  if (!planned.ok)
    return planned.errors.map((e) => ({
      propertyPath: OPTION_FIELDS.has(e.field) ? e.field : `spec.${e.field}`,
      reason: `${e.message} [${e.code}]`,
    }));
  return { result: prepared.result, plan: planned.plan, carried: prepared.carried };
}

/**
 * The files of every static route's directory (relative roots resolve against the working directory of
 * the Pulumi program, as the local mode does), or a problem naming the route.
 */
export function listStaticFiles(
  result: TranslateResult,
  cwd: string = process.cwd(),
): Record<string, StaticFile[]> | pulumi.InputPropertyErrorDetails[] {
  const out: Record<string, StaticFile[]> = {};
  const errors: pulumi.InputPropertyErrorDetails[] = [];
  for (const r of result.runtime.gateway?.routes ?? []) {
    if (r.action.kind !== "static" || out[r.action.root]) continue;
    const dir = resolve(cwd, r.action.root);
    try {
      const files = (readdirSync(dir, { recursive: true, withFileTypes: true }) as Dirent[])
        .filter((d) => d.isFile())
        .map((d) => join(d.parentPath, d.name))
        .sort()
        .map((hostPath) => ({
          relative: relative(dir, hostPath).split(sep).join("/"),
          hostPath,
          sha256: createHash("sha256").update(readFileSync(hostPath)).digest("hex"),
        }));
      out[r.action.root] = files;
    } catch (err) {
      errors.push({
        propertyPath: "spec.gateway.routes",
        reason: `route ${r.name}: cannot read its static directory ${dir}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message} (fix: the path is relative to the Pulumi program's working directory)`,
      });
    }
  }
  return errors.length > 0 ? errors : out;
}

/** A resource-name-safe form of an image reference. */
const slug = (ref: string) =>
  ref
    .replace(/@sha256:([0-9a-f]{12})[0-9a-f]*/, "-$1")
    .replace(/[^A-Za-z0-9.-]+/g, "-")
    .replace(/-+/g, "-");

/**
 * A meshgate mesh on one Docker engine: the gateway, every service's app with its sidecar, the mesh CA
 * and identities, Prometheus with the generated configuration and rules — from one spec.
 */
export class DockerPlatform extends pulumi.ComponentResource {
  /** Where clients reach the gateway: `http://localhost:<targets.docker.gatewayPort>` ("" without an http listener). */
  readonly gatewayUrl: pulumi.Output<string>;
  /** Prometheus on the host: `http://localhost:<prometheusPort>` ("" when metrics are off). */
  readonly prometheusUrl: pulumi.Output<string>;
  /** The Docker network's name. */
  readonly networkName: pulumi.Output<string>;
  /** The mesh CA's current root certificate (PEM). */
  readonly caCertificatePem: pulumi.Output<string>;
  /** The roots every proxy trusts (PEM; two during a root rotation). */
  readonly trustBundlePem: pulumi.Output<string>;
  /** The runtime image reference the proxies run. */
  readonly runtimeImageRef: pulumi.Output<string>;
  /** The containers, by plan name (the Docker container names). */
  readonly containers: Readonly<Record<string, docker.Container>>;
  /** Each proxy's RuntimeConfig hash, by workload. */
  readonly configHashes: Readonly<Record<string, string>>;
  /** The plan this component deployed. */
  readonly plan: DockerPlan;
  /** The translated spec. */
  readonly translated: TranslateResult;
  /** The mesh CA. */
  readonly ca: MeshCa;
  readonly network: docker.Network;
  readonly runtimeImage: RuntimeImage;

  /**
   * @param name The unique name of the component; child names are derived from it.
   * @param args The spec and the options (every one has a default).
   * @param opts Options for the component.
   */
  constructor(name: string, args: DockerPlatformArgs, opts?: pulumi.ComponentResourceOptions) {
    // Everything is checked before super(): a bad spec registers nothing, not even the component.
    const prepared = prepareDocker(args);
    if (Array.isArray(prepared))
      throw new pulumi.InputPropertiesError({
        message: `meshgate DockerPlatform ${name}: invalid arguments (${prepared.length} problem${prepared.length === 1 ? "" : "s"})`,
        errors: prepared,
      });
    super("meshgate:docker:DockerPlatform", name, {}, opts);
    const { result, plan, carried } = prepared;
    this.translated = result;
    this.plan = plan;
    logDiagnostics(result, this);
    for (const note of plan.notes) pulumi.log.warn(`docker: ${note}`, this);

    const provider = args.provider ? { provider: args.provider } : {};
    const child = { parent: this, ...provider };
    // Docker has no cert-manager: MeshCa issues every identity's SVID.
    this.ca = new MeshCa(`${name}-ca`, meshCaArgs(args, result, { mode: "secrets" }), { parent: this });
    const labels = (extra: Record<string, string> = {}) =>
      Object.entries({ "meshgate.io/mesh": plan.mesh, "app.kubernetes.io/managed-by": "meshgate", ...extra })
        .sort(([a], [b]) => (a < b ? -1 : 1))
        .map(([label, value]) => ({ label, value }));

    this.network = new docker.Network(
      `${name}-network`,
      { name: plan.network, driver: "bridge", labels: labels() },
      child,
    );
    this.runtimeImage = new RuntimeImage(
      `${name}-runtime`,
      {
        repository: args.runtimeImage?.repository ?? "meshgate/runtime",
        ...(args.runtimeImage?.tag !== undefined ? { tag: args.runtimeImage.tag } : {}),
        ...(args.runtimeImage?.platform !== undefined ? { platform: args.runtimeImage.platform } : {}),
      },
      { parent: this, ...(args.provider ? { providers: [args.provider] } : {}) },
    );
    const remote = new Map(
      plan.remoteImages.map((ref) => [
        ref,
        new docker.RemoteImage(`${name}-image-${slug(ref)}`, { name: ref, keepLocally: false }, child),
      ]),
    );

    const content = (source: FileSource): pulumi.Input<string> => {
      switch (source.kind) {
        case "text":
          return source.secret ? pulumi.secret(source.content) : source.content;
        case "trust-bundle":
          return this.ca.trustBundlePem;
        case "intermediates":
          return this.ca.intermediatesPem;
        case "svid-chain":
          return this.ca.svids[source.identity]!.certChainPem;
        case "svid-key":
          return this.ca.svids[source.identity]!.keyPem;
        case "tls-cert":
          return args.tlsCertificates![source.secret]!.certPem;
        case "tls-key":
          return pulumi.secret(args.tlsCertificates![source.secret]!.keyPem);
        case "host-file":
          throw new Error("host files are uploaded by source");
      }
    };

    const containers: Record<string, docker.Container> = {};
    for (const c of plan.containers) {
      const volumes: { volumeName: pulumi.Input<string>; containerPath: string }[] = [];
      const mounts: [string, string][] = [
        ...(c.filesDir !== null ? ([[c.filesDir, `${c.name}-files`]] as [string, string][]) : []),
        ...Object.entries(c.volumes),
      ];
      for (const [path, volumeName] of mounts) {
        const volume = new docker.Volume(
          `${name}-volume-${volumeName}`,
          { name: volumeName, labels: labels({ "meshgate.io/container": c.name }) },
          child,
        );
        volumes.push({ volumeName: volume.name, containerPath: path });
      }
      containers[c.name] = new docker.Container(
        `${name}-container-${c.name}`,
        containerArgs(c, {
          // By ID, as the pulled images: a rebuilt runtime image (same tag) replaces the proxies.
          image: c.image.kind === "runtime" ? this.runtimeImage.imageId : remote.get(c.image.ref)!.imageId,
          network: this.network.name,
          networkOf: (other) => containers[other]!.id,
          volumes,
          labels: labels(c.labels),
          content,
          secret: (provider) => args.oidcClientSecrets![provider]!,
        }),
        { ...child, dependsOn: c.after.map((a) => containers[a]!), deleteBeforeReplace: true },
      );
    }
    this.containers = Object.freeze(containers);

    this.gatewayUrl = pulumi.output(plan.urls.gateway ?? "");
    this.prometheusUrl = pulumi.output(plan.urls.prometheus ?? "");
    this.networkName = this.network.name;
    this.caCertificatePem = this.ca.rootCertificatePem;
    this.trustBundlePem = this.ca.trustBundlePem;
    this.runtimeImageRef = this.runtimeImage.ref;
    this.configHashes = Object.freeze(
      // Not the sealed hash: that of a config with a Redis password would let stack-output readers test guesses.
      Object.fromEntries(Object.entries(plan.configs).map(([w, c]) => [w, configAnnotationHash(c)])),
    );
    this.registerOutputs({
      gatewayUrl: this.gatewayUrl,
      prometheusUrl: this.prometheusUrl,
      networkName: this.networkName,
      containerNames: plan.containers.map((c) => c.name),
      caCertificatePem: this.caCertificatePem,
      trustBundlePem: this.trustBundlePem,
      runtimeImageRef: this.runtimeImageRef,
      configHashes: this.configHashes,
      [SPEC_OUTPUT]: carriedSpecOutput(carried, result),
    });
  }
}

interface Wiring {
  image: pulumi.Input<string>;
  network: pulumi.Input<string>;
  networkOf: (container: string) => pulumi.Input<string>;
  volumes: { volumeName: pulumi.Input<string>; containerPath: string }[];
  labels: { label: string; value: string }[];
  content: (source: FileSource) => pulumi.Input<string>;
  /** The value of a secret environment variable (PlannedContainer.secretEnv): an OIDC client secret. */
  secret: (provider: string) => pulumi.Input<string>;
}

/** The docker.Container arguments of a planned container. */
export function containerArgs(c: PlannedContainer, w: Wiring): docker.ContainerArgs {
  return {
    name: c.name,
    image: w.image,
    ...(c.entrypoint !== null ? { entrypoints: [...c.entrypoint] } : {}),
    ...(c.command.length > 0 ? { command: [...c.command] } : {}),
    envs: [
      ...Object.entries(c.env).map(([k, v]) => `${k}=${v}`),
      // A client secret stays a Pulumi secret (encrypted in the state, hidden in previews).
      ...Object.entries(c.secretEnv).map(([k, provider]) =>
        pulumi.secret(pulumi.interpolate`${k}=${w.secret(provider)}`),
      ),
    ],
    ...(c.network.kind === "network"
      ? { networksAdvanced: [{ name: w.network, aliases: [...c.network.aliases] }] }
      : // The engine records `container:<id>`; the id also ties the sidecar to this very app container.
        { networkMode: pulumi.interpolate`container:${w.networkOf(c.network.container)}` }),
    ports: c.ports.map((p) => ({ internal: p.internal, external: p.external, ip: p.ip, protocol: "tcp" })),
    uploads: c.files.map((f) => ({
      file: f.path,
      // A site file is read from the deploying machine by the provider (not stored in the state).
      ...(f.source.kind === "host-file"
        ? { source: f.source.path, sourceHash: f.source.sha256 }
        : { content: w.content(f.source) }),
      permissions: f.mode,
      owner: String(f.owner),
      group: String(f.owner),
    })),
    volumes: w.volumes,
    readOnly: c.readOnly,
    ...(c.user !== null ? { user: c.user } : {}),
    ...(Object.keys(c.tmpfs).length > 0 ? { tmpfs: { ...c.tmpfs } } : {}),
    ...(Object.keys(c.sysctls).length > 0 ? { sysctls: { ...c.sysctls } } : {}),
    ...(c.hardened ? { capabilities: { drops: ["ALL"] }, securityOpts: ["no-new-privileges:true"] } : {}),
    privileged: false,
    restart: RESTART_POLICY,
    ...(c.healthcheck
      ? {
          healthcheck: {
            tests: [...c.healthcheck.test],
            interval: "10s",
            timeout: "3s",
            retries: 3,
            startPeriod: c.healthcheck.startPeriod,
          },
          // Created only once healthy: the gateway starts after every sidecar is ready.
          wait: true,
          waitTimeout: 120,
        }
      : {}),
    // The proxies drain in-flight requests on SIGTERM.
    ...(c.role === "gateway" || c.role === "sidecar" ? { destroyGraceSeconds: 35 } : {}),
    labels: w.labels,
  };
}
