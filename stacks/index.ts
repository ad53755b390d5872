/**
 * The Pulumi stack program (`pulumi up` with Pulumi.yaml at the repo root).
 *
 * Today it loads the spec named by the `meshgate:spec` config key, fails the update before any resource
 * is touched when the spec is invalid (every error, with its path), and exports the translated plan:
 * identities, allowed edges, proxy configs and their hashes. The Kubernetes, AWS and Docker resources are
 * added by their issues; until then this program creates no resources.
 */
import * as pulumi from "@pulumi/pulumi";
import { loadSpecFile } from "../components/spec/load.ts";
import { formatSpecError } from "../components/spec/errors.ts";
import { translate } from "../components/translate/translate.ts";

export default async function program() {
  const config = new pulumi.Config("meshgate");
  const specPath = config.get("spec") ?? "examples/shop/mesh.yaml";
  const loaded = await loadSpecFile(specPath);
  if (!loaded.ok) {
    throw new pulumi.RunError(
      `meshgate: ${specPath} is invalid:\n${loaded.errors.map((e) => formatSpecError(e, specPath)).join("\n")}`,
    );
  }
  const { infra, runtime, diagnostics } = translate(loaded.spec);
  for (const d of diagnostics) {
    const message = `${d.path}: ${d.message} [${d.code}] (fix: ${d.hint})`;
    if (d.severity === "warning") pulumi.log.warn(message);
    else pulumi.log.info(message);
  }
  return {
    mesh: infra.name,
    namespace: infra.namespace,
    trustDomain: infra.trustDomain,
    identities: infra.identities.map((i) => i.spiffeId),
    allowedEdges: infra.edges.filter((e) => e.allowed).map((e) => `${e.from} -> ${e.to}`),
    configHashes: Object.fromEntries([
      ...(runtime.gateway ? [["gateway", runtime.gateway.hash]] : []),
      ...runtime.sidecars.map((s) => [s.name, s.hash]),
    ]),
  };
}
