/**
 * The package as users import it: every `exports` entry resolves under real Node resolution (the
 * package's self-reference), and the toolchain runs on Node 24.
 */
import { execFile } from "node:child_process";
import { promisify } from "node:util";
import { describe, expect, it } from "vitest";

const run = promisify(execFile);
const ROOT = new URL("../../", import.meta.url).pathname;

async function exportsOf(specifier: string): Promise<string[]> {
  const { stdout } = await run(
    process.execPath,
    [
      "--input-type=module",
      "-e",
      `const m = await import(${JSON.stringify(specifier)}); console.log(JSON.stringify(Object.keys(m).sort()));`,
    ],
    { cwd: ROOT },
  );
  return JSON.parse(stdout) as string[];
}

describe("package", () => {
  it("runs_the_tests_on_node_24", () => {
    expect(process.versions.node.split(".")[0]).toBe("24");
  });

  it.each([
    [
      "meshgate",
      [
        "defineMesh",
        "loadSpecFile",
        "parseSpec",
        "translate",
        "SpecErrorCatalog",
        "Platform",
        "Mesh",
        "Gateway",
        "MeshCa",
      ],
    ],
    ["meshgate/spec", ["defineMesh", "loadSpecFile", "parseSpec", "MeshSpecSchema", "SpecErrorCatalog"]],
    [
      "meshgate/components",
      [
        "defineMesh",
        "translate",
        "specJsonSchema",
        "DEFAULTS",
        "observability",
        "kubernetes",
        "Platform",
        "Mesh",
        "Gateway",
        "MeshCa",
        "RuntimeImage",
        "DockerPlatform",
        "planDocker",
      ],
    ],
    [
      "meshgate/aws",
      [
        "Network",
        "EksCluster",
        "ExistingEksCluster",
        "IrsaRole",
        "ManagedPrometheus",
        "RuntimeRegistry",
        "LoadBalancerController",
      ],
    ],
    ["meshgate/runtime", ["loadRuntimeConfig", "sealRuntimeConfig", "RuntimeConfig", "RuntimeErrorCatalog"]],
    [
      "meshgate/runtime/pki",
      ["createRootCa", "createIntermediateCa", "SvidIssuer", "SvidVerifier", "TrustBundle", "planRotation"],
    ],
    [
      "meshgate/policies",
      [
        "allowedEdges",
        "deniedCalls",
        "GUARDRAILS",
        "runGuardrails",
        "semanticDiff",
        "renderMermaid",
        "explainRequest",
        "runAssertions",
        "networkEdges",
        "replay",
      ],
    ],
    ["meshgate/testing", ["generateSpec", "installMatchers", "loadMesh", "meshgateMatchers"]],
  ])("%s_exports_its_api", async (specifier, names) => {
    const keys = await exportsOf(specifier);
    for (const n of names) expect(keys).toContain(n);
  });
});
