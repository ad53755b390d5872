/**
 * RuntimeImage under Pulumi's mocks: the build of runtime/Dockerfile from the repository root, a push
 * (and a digest reference) exactly when registry credentials are given, and argument errors that name
 * the field.
 */
import { beforeAll, beforeEach, describe, expect, it } from "vitest";
import type * as ImageModule from "../../components/pulumi/image.ts";
import { installMocks, mockState, resetRecords, runStack, valueOf } from "../support/pulumi.ts";

let image: typeof ImageModule;
beforeAll(async () => {
  await installMocks();
  image = await import("../../components/pulumi/image.ts");
});
beforeEach(() => resetRecords());

async function build(args: ImageModule.RuntimeImageArgs) {
  let component!: ImageModule.RuntimeImage;
  await runStack(() => {
    component = new image.RuntimeImage("runtime", args);
  });
  const inputs = mockState.registered.find((r) => r.type === "docker:index/image:Image")?.inputs ?? {};
  return { component, inputs };
}

describe("RuntimeImage", () => {
  it("builds_runtime_dockerfile_from_the_repository_root_tagged_with_the_package_version", async () => {
    const { inputs } = await build({ repository: "meshgate/runtime" });
    const b = inputs.build as Record<string, string>;
    expect(b.context).toBe(image.REPO_ROOT);
    expect(b.dockerfile).toBe(`${image.REPO_ROOT}/runtime/Dockerfile`);
    expect(b.platform).toBe("linux/amd64");
    expect(inputs.imageName).toBe(`meshgate/runtime:${image.packageVersion()}`);
  });

  it("keeps_a_local_image_unpushed_and_refers_to_it_by_name", async () => {
    const { component, inputs } = await build({ repository: "meshgate/runtime", tag: "dev" });
    expect(inputs.skipPush).toBe(true);
    expect(inputs.registry).toBeUndefined();
    expect(await valueOf(component.ref)).toBe("meshgate/runtime:dev");
    // What a container of the engine runs: the build's image ID, new with every rebuild.
    expect(await valueOf(component.imageId)).toMatch(/^sha256:[0-9a-f]{64}$/);
  });

  it("pushes_with_registry_credentials_and_refers_to_the_pushed_digest", async () => {
    const repo = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/shop";
    const { component, inputs } = await build({
      repository: repo,
      tag: "1.2.3",
      registry: { server: repo, username: "AWS", password: "pw" },
    });
    expect(inputs.skipPush).not.toBe(true);
    expect((inputs.registry as Record<string, string>).server).toBe(repo);
    const ref = await valueOf(component.ref);
    expect(ref).toMatch(new RegExp(`^${repo.replace(/\./g, "\\.")}@sha256:[0-9a-f]{64}$`));
  });

  it.each([
    ["latest", { tag: "latest" }, "tag"],
    ["a tag with a slash", { tag: "a/b" }, "tag"],
    ["an unsupported platform", { platform: "windows/amd64" }, "platform"],
  ])("refuses_%s_naming_the_field", (_what, extra, field) => {
    const errors = image.runtimeImageArgErrors({ repository: "r", ...extra });
    expect(errors.map((e) => e.propertyPath)).toContain(field);
    expect(() => new image.RuntimeImage("bad", { repository: "r", ...extra })).toThrow(/invalid arguments/);
  });
});
