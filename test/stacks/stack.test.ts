/**
 * The stack program under Pulumi's mocks (no CLI, no cloud): it runs end to end on the example, and an
 * invalid spec stops it before any resource with every error listed.
 */
import { mkdtemp, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as pulumi from "@pulumi/pulumi";
import { beforeAll, describe, expect, it } from "vitest";

const created: string[] = [];

beforeAll(async () => {
  await pulumi.runtime.setMocks(
    {
      newResource: (args) => {
        created.push(args.type);
        return { id: `${args.name}-id`, state: args.inputs };
      },
      call: (args) => args.inputs,
    },
    "meshgate",
    "test",
    false,
  );
});

async function runProgram(spec?: string) {
  pulumi.runtime.setAllConfig(spec ? { "meshgate:spec": spec } : {});
  const { default: program } = await import("../../stacks/index.ts");
  return program();
}

describe("stack program", () => {
  it("translates_the_default_spec_and_exports_the_plan", async () => {
    const out = await runProgram();
    expect(out.mesh).toBe("shop");
    expect(out.identities).toContain("spiffe://shop.example/ns/shop/sa/payments");
    expect(out.allowedEdges).toContain("orders -> payments");
    expect(out.configHashes.gateway).toMatch(/^sha256:[0-9a-f]{64}$/);
    expect(Object.keys(out.configHashes)).toHaveLength(10);
    expect(created).toEqual([]);
  });

  it("fails_before_any_resource_when_the_spec_is_invalid", async () => {
    const dir = await mkdtemp(join(tmpdir(), "meshgate-stack-"));
    const file = join(dir, "bad.yaml");
    await writeFile(file, "name: Bad\ntrustDomain: x\nservices: {}\nsurprise: 1\n");
    await expect(runProgram(file)).rejects.toThrow(
      /name: the string "Bad" is not a DNS label[\s\S]*surprise: unknown key/,
    );
    expect(created).toEqual([]);
  });
});
