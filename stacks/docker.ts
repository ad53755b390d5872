/**
 * The Docker stack program (`meshgate:target: docker`): the mesh of the spec at `meshgate:spec` on one Docker
 * engine, deployed by the `DockerPlatform` component — the network, the runtime image built from
 * runtime/Dockerfile, every service's app and sidecar container, the gateway and Prometheus.
 *
 * Stack config (besides meshgate:spec, meshgate:namespace and meshgate:caRotation, shared with Kubernetes):
 *   meshgate:gatewayAdminPort  host port of the gateway's admin listener on 127.0.0.1 (default 9901)
 *   meshgate:prometheusPort    host port of Prometheus on 127.0.0.1 (default 9090)
 *   meshgate:runtimePlatform   linux/amd64 (default) or linux/arm64: the platform the runtime image is built for
 *   meshgate:tlsCertificates   the https listeners' certificate files and the externals' client certificates
 *                              (mutual TLS), by the spec's secret name:
 *                              {"<secret>": {"certFile": "tls/cert.pem", "keyFile": "tls/key.pem"}} (read at
 *                              deploy time; the key becomes a Pulumi secret)
 *   meshgate:oidcClientSecrets the client secret of each OIDC provider, by name (set with --secret:
 *                              pulumi config set --secret --path 'meshgate:oidcClientSecrets.<provider>' VALUE)
 *   docker:host                the engine (default DOCKER_HOST, else the local socket), e.g. ssh://user@host
 *
 * An invalid spec (or option) stops the update before any resource — the provider included — with every
 * problem and its path.
 */
import { readFileSync } from "node:fs";
import * as docker from "@pulumi/docker";
import * as pulumi from "@pulumi/pulumi";
import { loadPlatformSpec } from "../components/pulumi/index.ts";
import { DockerPlatform, prepareDocker, type DockerPlatformArgs } from "../components/docker/index.ts";
import { rotationFromConfig } from "./index.ts";

type TlsCertificates = NonNullable<DockerPlatformArgs["tlsCertificates"]>;

/** `meshgate:tlsCertificates` read from disk (relative paths from the program's directory); every problem named. */
export function tlsFromConfig(value: Record<string, unknown> | undefined): TlsCertificates {
  const out: TlsCertificates = {};
  const errors: pulumi.InputPropertyErrorDetails[] = [];
  for (const [secret, pair] of Object.entries(value ?? {})) {
    const files = (pair ?? {}) as { certFile?: unknown; keyFile?: unknown };
    const read = (field: "certFile" | "keyFile"): string | null => {
      const path = files[field];
      if (typeof path !== "string" || path === "") {
        errors.push({
          propertyPath: `meshgate:tlsCertificates.${secret}.${field}`,
          reason:
            "give the path of a PEM file (pulumi config set --path 'meshgate:tlsCertificates.<secret>.<field>' FILE)",
        });
        return null;
      }
      try {
        return readFileSync(path, "utf8");
      } catch (err) {
        errors.push({
          propertyPath: `meshgate:tlsCertificates.${secret}.${field}`,
          reason: `cannot read ${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`,
        });
        return null;
      }
    };
    const certPem = read("certFile");
    const keyPem = read("keyFile");
    if (certPem !== null && keyPem !== null) out[secret] = { certPem, keyPem: pulumi.secret(keyPem) };
  }
  if (errors.length > 0)
    throw new pulumi.InputPropertiesError({
      message: "meshgate: meshgate:tlsCertificates is invalid",
      errors,
    });
  return out;
}

/** `meshgate:oidcClientSecrets`: a non-empty string per provider, each kept a Pulumi secret. */
export function oidcSecretsFromConfig(
  value: Record<string, unknown> | undefined,
): NonNullable<DockerPlatformArgs["oidcClientSecrets"]> {
  const out: NonNullable<DockerPlatformArgs["oidcClientSecrets"]> = {};
  const errors: pulumi.InputPropertyErrorDetails[] = [];
  for (const [provider, secret] of Object.entries(value ?? {})) {
    if (typeof secret === "string" && secret !== "") out[provider] = pulumi.secret(secret);
    else
      errors.push({
        propertyPath: `meshgate:oidcClientSecrets.${provider}`,
        reason:
          "give the client secret as a string (pulumi config set --secret --path 'meshgate:oidcClientSecrets.<provider>' VALUE)",
      });
  }
  if (errors.length > 0)
    throw new pulumi.InputPropertiesError({
      message: "meshgate: meshgate:oidcClientSecrets is invalid",
      errors,
    });
  return out;
}

export async function dockerProgram() {
  const config = new pulumi.Config("meshgate");
  const specPath = config.get("spec") ?? "examples/shop/mesh.yaml";
  const namespace = config.get("namespace");
  const gatewayAdminPort = config.getNumber("gatewayAdminPort");
  const prometheusPort = config.getNumber("prometheusPort");
  const runtimePlatform = config.get("runtimePlatform", { allowedValues: ["linux/amd64", "linux/arm64"] });
  const caRotation = rotationFromConfig(config.getObject<Record<string, unknown>>("caRotation"));
  const tlsCertificates = tlsFromConfig(config.getObject<Record<string, unknown>>("tlsCertificates"));
  const oidcClientSecrets = oidcSecretsFromConfig(
    config.getObject<Record<string, unknown>>("oidcClientSecrets"),
  );
  const args: DockerPlatformArgs = {
    spec: await loadPlatformSpec(specPath),
    ...(namespace ? { namespace } : {}),
    ...(caRotation ? { caRotation } : {}),
    ...(gatewayAdminPort !== undefined ? { gatewayAdminPort } : {}),
    ...(prometheusPort !== undefined ? { prometheusPort } : {}),
    ...(runtimePlatform ? { runtimeImage: { platform: runtimePlatform } } : {}),
    ...(Object.keys(tlsCertificates).length > 0 ? { tlsCertificates } : {}),
    ...(Object.keys(oidcClientSecrets).length > 0 ? { oidcClientSecrets } : {}),
  };

  // Checked before the provider exists: a bad spec leaves the stack untouched.
  const checked = prepareDocker(args);
  if (Array.isArray(checked))
    throw new pulumi.InputPropertiesError({
      message: `meshgate: ${specPath} cannot be deployed on Docker (${checked.length} problem${checked.length === 1 ? "" : "s"})`,
      errors: checked,
    });

  const host = new pulumi.Config("docker").get("host");
  const provider = new docker.Provider("docker", host ? { host } : {});
  const platform = new DockerPlatform(checked.plan.mesh, { ...args, provider });
  const { plan } = platform;
  return {
    mesh: plan.mesh,
    namespace: plan.namespace,
    trustDomain: plan.trustDomain,
    gatewayUrl: platform.gatewayUrl,
    prometheusUrl: platform.prometheusUrl,
    network: platform.networkName,
    containers: plan.containers.map((c) => c.name),
    runtimeImage: platform.runtimeImageRef,
    caCertificatePem: platform.caCertificatePem,
    configHashes: platform.configHashes,
    notes: plan.notes,
  };
}
