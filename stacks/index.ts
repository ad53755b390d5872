/**
 * The Kubernetes stack program (`pulumi up` with Pulumi.yaml at the repo root): the mesh of the spec at
 * `meshgate:spec`, deployed by the `Platform` component into the cluster of the stack's kubeconfig.
 *
 * Stack config (Pulumi.dev.yaml is an example):
 *   meshgate:target          kubernetes (default) | docker (stacks/docker.ts) | aws (stacks/aws.ts: EKS, see docs/aws.md)
 *   meshgate:spec            path of the spec (YAML, JSON, or a TypeScript module exporting defineMesh)
 *   meshgate:runtimeImage    the gateway/sidecar image (default: the spec's, else ghcr.io/meshgate/runtime:<version>)
 *   meshgate:identities      secrets | cert-manager (default: the spec's mesh.ca.provider)
 *   meshgate:observability   bundled | operator | none (default: the spec's observability.metrics.backend)
 *   meshgate:namespace       the mesh's namespace (default: the spec's)
 *   meshgate:caRotation      the CA's root rotation stage, e.g. {generation: "2", previous: {generation: "1", stage: add-root}}
 *   kubernetes:kubeconfig    a kubeconfig (its contents or a path; a secret is fine), else the ambient one
 *   kubernetes:context       a context of that kubeconfig, else its current context
 *
 * An invalid spec (or option) stops the update before any resource — the provider included — with every
 * problem and its path.
 */
import * as k8s from "@pulumi/kubernetes";
import * as pulumi from "@pulumi/pulumi";
import {
  loadPlatformSpec,
  Platform,
  preparePlatform,
  type PlatformArgs,
} from "../components/pulumi/index.ts";
import type { MeshCaRotation } from "../components/pulumi/ca.ts";

/** `meshgate:identities` values. */
export const IDENTITY_MODES = ["secrets", "cert-manager"] as const;
/** `meshgate:observability` values. */
export const OBSERVABILITY = ["bundled", "operator", "none"] as const;
const TARGETS = ["kubernetes", "docker", "aws"] as const;

/**
 * The `Platform` arguments every Kubernetes-based stack (this one, stacks/aws.ts) reads from the stack
 * config: the spec at `meshgate:spec`, `identities`, `observability`, `namespace`, `caRotation`.
 */
export async function platformArgsFromConfig(
  config: pulumi.Config,
): Promise<{ specPath: string; args: PlatformArgs }> {
  const specPath = config.get("spec") ?? "examples/shop/mesh.yaml";
  const identities = config.get("identities", { allowedValues: [...IDENTITY_MODES] });
  const observability = config.get("observability", { allowedValues: [...OBSERVABILITY] });
  const namespace = config.get("namespace");
  const caRotation = rotationFromConfig(config.getObject<Record<string, unknown>>("caRotation"));
  const args: PlatformArgs = {
    spec: await loadPlatformSpec(specPath),
    ...(identities === "secrets" ? { identities: { mode: "secrets" as const } } : {}),
    ...(identities === "cert-manager"
      ? {
          identities: {
            mode: "cert-manager" as const,
            caSecretName: config.get("caSecretName") ?? "meshgate-ca",
          },
        }
      : {}),
    ...(observability ? { observability } : {}),
    ...(namespace ? { namespace } : {}),
    ...(caRotation ? { caRotation } : {}),
  };
  return { specPath, args };
}

export default async function program(): Promise<Record<string, unknown>> {
  const config = new pulumi.Config("meshgate");
  const target = config.get("target", { allowedValues: [...TARGETS] }) ?? "kubernetes";
  if (target === "docker") return (await import("./docker.ts")).dockerProgram();
  if (target === "aws") return (await import("./aws.ts")).default();
  const { specPath, args: platformArgs } = await platformArgsFromConfig(config);
  const runtimeImage = config.get("runtimeImage");
  const args: PlatformArgs = { ...platformArgs, ...(runtimeImage ? { runtimeImage } : {}) };

  // Checked before the provider exists: a bad spec leaves the stack untouched.
  const checked = preparePlatform(args);
  if (Array.isArray(checked))
    throw new pulumi.InputPropertiesError({
      message: `meshgate: ${specPath} cannot be deployed (${checked.length} problem${checked.length === 1 ? "" : "s"})`,
      errors: checked,
    });

  const kube = new pulumi.Config("kubernetes");
  const kubeconfig = kube.getSecret("kubeconfig");
  const context = kube.get("context");
  const provider = new k8s.Provider("kubernetes", {
    ...(kubeconfig ? { kubeconfig } : {}),
    ...(context ? { context } : {}),
  });

  const platform = new Platform(checked.result.infra.name, { ...args, provider });
  const { infra } = platform.translated;
  return {
    mesh: infra.name,
    namespace: platform.namespace,
    trustDomain: infra.trustDomain,
    gatewayEndpoint: platform.gatewayEndpoint,
    caCertificatePem: platform.caCertificatePem,
    identities: infra.identities.map((i) => i.spiffeId),
    allowedEdges: infra.edges.filter((e) => e.allowed).map((e) => `${e.from} -> ${e.to}`),
    configHashes: platform.configHashes,
  };
}

/**
 * `meshgate:caRotation` as MeshCa's `rotation`: generations as strings (`pulumi config set --path` stores
 * `2` as a number), other fields as given (MeshCa validates them).
 */
export function rotationFromConfig(value: Record<string, unknown> | undefined): MeshCaRotation | undefined {
  if (value === undefined) return undefined;
  const previous = value.previous as Record<string, unknown> | undefined;
  return {
    ...(value as MeshCaRotation),
    ...(value.generation !== undefined ? { generation: String(value.generation) } : {}),
    ...(previous
      ? {
          previous: {
            ...(previous as object),
            generation: String(previous.generation),
          } as MeshCaRotation["previous"],
        }
      : {}),
  };
}
