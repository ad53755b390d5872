/**
 * The stack program with `meshgate:target: docker` under Pulumi's mocks (no CLI, no engine): the example end
 * to end with every output resolved, the engine and ports from stack config, TLS certificate files read
 * with the key kept secret, and an invalid spec or option stopped before any resource.
 */
import { createHash } from "node:crypto";
import { mkdtemp, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as pulumi from "@pulumi/pulumi";
import { beforeAll, beforeEach, describe, expect, it } from "vitest";
import { installMocks, mockState, resetRecords, runStack, unresolvedPaths } from "../support/pulumi.ts";

let program: () => Promise<Record<string, unknown>>;
beforeAll(async () => {
  await installMocks("meshgate", "test", async (type, _name, inputs) =>
    type === "docker:index/remoteImage:RemoteImage"
      ? { imageId: `sha256:${createHash("sha256").update(String(inputs.name)).digest("hex")}` }
      : undefined,
  );
  program = (await import("../../stacks/index.ts")).default as typeof program;
});
beforeEach(() => resetRecords());

const docker = (config: Record<string, string> = {}) =>
  pulumi.runtime.setAllConfig({ "meshgate:target": "docker", ...config });

describe("stack program on docker", () => {
  it("deploys_the_default_spec_on_docker_end_to_end_with_every_output_resolved", async () => {
    docker();
    const run = await runStack(program);
    expect(run.errors).toEqual([]);
    expect(unresolvedPaths(run.outputs)).toEqual([]);
    expect(run.outputs).toMatchObject({
      mesh: "shop",
      gatewayUrl: "http://localhost:8080",
      prometheusUrl: "http://localhost:9090",
      network: "shop",
      runtimeImage: "meshgate/runtime:0.1.0",
    });
    expect(run.outputs.containers).toContain("shop-orders-sidecar");
    expect(String(run.outputs.caCertificatePem)).toContain("BEGIN CERTIFICATE");
    const types = new Set(mockState.registered.map((r) => r.type));
    expect(types).toContain("meshgate:docker:DockerPlatform");
    expect(types).toContain("pulumi:providers:docker");
    expect([...types].filter((t) => t.startsWith("kubernetes:"))).toEqual([]);
    const provider = mockState.registered.find((r) => r.type === "pulumi:providers:docker")!;
    expect(provider.inputs.host).toBeUndefined();
  });

  it("takes_the_engine_and_host_ports_from_stack_config", async () => {
    docker({
      "docker:host": "ssh://deploy@build-host",
      "meshgate:gatewayAdminPort": "19901",
      "meshgate:prometheusPort": "19090",
      "meshgate:runtimePlatform": "linux/arm64",
    });
    const run = await runStack(program);
    expect(run.errors).toEqual([]);
    expect(run.outputs.prometheusUrl).toBe("http://localhost:19090");
    const provider = mockState.registered.find((r) => r.type === "pulumi:providers:docker")!;
    expect(provider.inputs.host).toBe("ssh://deploy@build-host");
    const gateway = mockState.registered.find((r) => r.inputs.name === "shop-gateway")!;
    expect(gateway.inputs.ports).toContainEqual({
      internal: 9901,
      external: 19901,
      ip: "127.0.0.1",
      protocol: "tcp",
    });
    const image = mockState.registered.find((r) => r.type === "docker:index/image:Image")!;
    expect((image.inputs.build as { platform: string }).platform).toBe("linux/arm64");
    for (const r of mockState.registered.filter((x) => x.type.startsWith("docker:index/")))
      expect(r.provider, r.name).toMatch(/pulumi:providers:docker::docker::/);
  });

  it("reads_tls_certificate_files_and_keeps_the_key_secret", async () => {
    const dir = await mkdtemp(join(tmpdir(), "meshgate-docker-"));
    await writeFile(join(dir, "tls.crt"), "-----BEGIN CERTIFICATE-----\nCERT\n-----END CERTIFICATE-----\n");
    await writeFile(join(dir, "tls.key"), "-----BEGIN PRIVATE KEY-----\nKEY\n-----END PRIVATE KEY-----\n");
    docker({
      "meshgate:tlsCertificates": JSON.stringify({
        "shop-tls": { certFile: join(dir, "tls.crt"), keyFile: join(dir, "tls.key") },
      }),
    });
    const run = await runStack(program);
    expect(run.errors).toEqual([]);
    const gateway = mockState.registered.find((r) => r.inputs.name === "shop-gateway")!;
    const key = (gateway.inputs.uploads as { file: string; content: string }[]).find(
      (u) => u.file === "/etc/meshgate/tls/shop-tls/tls.key",
    );
    expect(key?.content).toContain("KEY");
    expect(gateway.secretInputs.some((p) => p.startsWith("uploads"))).toBe(true);
    expect(JSON.stringify(run.outputs)).not.toMatch(/PRIVATE KEY/);
  });

  it.each<[string, Record<string, string>, RegExp]>([
    ["refuses_an_unknown_target", { "meshgate:target": "nomad" }, /meshgate:target/],
    [
      "refuses_a_missing_certificate_file",
      { "meshgate:tlsCertificates": JSON.stringify({ "shop-tls": { certFile: "/nonexistent.crt" } }) },
      /tlsCertificates/,
    ],
    [
      "refuses_a_prometheus_port_that_collides_with_the_gateway",
      { "meshgate:prometheusPort": "8080" },
      /prometheusPort/,
    ],
  ])("%s_before_any_resource", async (_claim, config, message) => {
    docker(config);
    const run = await runStack(program);
    expect(run.errors.length).toBeGreaterThan(0);
    const text = run.errors
      .map((e) =>
        pulumi.InputPropertiesError.isInstance(e)
          ? `${e.message} ${e.errors.map((x) => `${x.propertyPath}: ${x.reason}`).join(" ")}`
          : e.message,
      )
      .join("\n");
    expect(text).toMatch(message);
    expect(mockState.registered.map((r) => r.type)).toEqual(["pulumi:pulumi:Stack"]);
  });

  it("keeps_kubernetes_the_default_target", async () => {
    pulumi.runtime.setAllConfig({ "meshgate:observability": "none" });
    const run = await runStack(program);
    expect(run.errors).toEqual([]);
    const types = new Set(mockState.registered.map((r) => r.type));
    expect(types).toContain("meshgate:index:Platform");
    expect([...types].filter((t) => t.startsWith("docker:"))).toEqual([]);
  });
});
