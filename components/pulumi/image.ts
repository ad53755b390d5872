/**
 * `RuntimeImage` (`meshgate:image:RuntimeImage`): the meshgate runtime image (gateway and sidecar, one
 * bundled file on Node 24) built from `runtime/Dockerfile` with `@pulumi/docker`, and pushed to a registry
 * when one is given (ECR on AWS) or kept in the local Docker engine (the Docker target).
 *
 * `ref` is what workloads must run: the pushed image's digest reference (`repo@sha256:…`, immutable, so a
 * rebuilt image rolls every pod) when pushed, else the local image name. `imageId` is what a container of the
 * same engine runs: the pushed digest reference, or the local build's image ID (`sha256:…`) — a rebuilt
 * image under the same tag (changed code, same package version) has a new ID, so its containers are
 * replaced; by name they would keep running the old image. Tags: `tag` (default the package version) —
 * never `latest`.
 */
import * as docker from "@pulumi/docker";
import * as pulumi from "@pulumi/pulumi";
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

/** The repository root (the image's build context). */
export const REPO_ROOT = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
/** The runtime image's Dockerfile, relative to the build context. */
export const RUNTIME_DOCKERFILE = "runtime/Dockerfile";

/** The package version: the default image tag. */
export function packageVersion(root: string = REPO_ROOT): string {
  const pkg = JSON.parse(readFileSync(join(root, "package.json"), "utf8")) as { version?: string };
  return pkg.version ?? "0.0.0";
}

export interface RuntimeImageArgs {
  /**
   * The image repository without a tag: `<account>.dkr.ecr.<region>.amazonaws.com/<name>` for ECR, or a
   * local name such as `meshgate/runtime`.
   */
  repository: pulumi.Input<string>;
  /**
   * The tag to build and push.
   * @default the package version (package.json)
   */
  tag?: string;
  /**
   * Registry credentials: given → the image is pushed and `ref` is its digest reference; absent → built
   * into the local Docker engine only (`skipPush`).
   */
  registry?: pulumi.Input<{
    server: pulumi.Input<string>;
    username: pulumi.Input<string>;
    password: pulumi.Input<string>;
  }>;
  /**
   * The build context (the repository root: the Dockerfile copies package.json, runtime/ and scripts/).
   * @default the meshgate package's root
   */
  context?: string;
  /**
   * The target platform, e.g. `linux/amd64` (EKS nodes) or `linux/arm64` (Graviton).
   * @default linux/amd64
   */
  platform?: string;
}

/** Argument problems, each naming the field and the fix (empty when valid). */
export function runtimeImageArgErrors(args: RuntimeImageArgs): { propertyPath: string; reason: string }[] {
  const errors: { propertyPath: string; reason: string }[] = [];
  if (args.tag !== undefined && !/^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$/.test(args.tag))
    errors.push({
      propertyPath: "tag",
      reason: `"${args.tag}" is not a Docker tag: use letters, digits, '_', '.', '-' (≤ 128, not starting with '.' or '-')`,
    });
  if (args.tag === "latest")
    errors.push({
      propertyPath: "tag",
      reason: `"latest" is mutable and never rolls a workload: leave tag unset (the package version) or pin one`,
    });
  if (args.platform !== undefined && !/^linux\/(amd64|arm64)$/.test(args.platform))
    errors.push({ propertyPath: "platform", reason: `"${args.platform}": use linux/amd64 or linux/arm64` });
  return errors;
}

export class RuntimeImage extends pulumi.ComponentResource {
  /** The reference workloads run: `repo@sha256:…` when pushed, else `repo:tag` in the local engine. */
  readonly ref: pulumi.Output<string>;
  /** `repository:tag`. */
  readonly imageName: pulumi.Output<string>;
  /** The pushed digest reference, or the local build's image ID (`sha256:…`): unique per build. */
  readonly imageId: pulumi.Output<string>;
  /** The underlying docker image resource. */
  readonly image: docker.Image;

  /**
   * @param name The unique name of the component; the image resource is `<name>-image`.
   * @param args The repository, tag, registry (push) and build context.
   * @param opts Options for the component (the docker provider, parent, …).
   */
  constructor(name: string, args: RuntimeImageArgs, opts?: pulumi.ComponentResourceOptions) {
    const errors = runtimeImageArgErrors(args);
    if (errors.length > 0)
      throw new pulumi.InputPropertiesError({
        message: `meshgate RuntimeImage ${name}: invalid arguments (${errors.length})`,
        errors,
      });
    super("meshgate:image:RuntimeImage", name, {}, opts);
    const tag = args.tag ?? packageVersion();
    const push = args.registry !== undefined;
    this.image = new docker.Image(
      `${name}-image`,
      {
        imageName: pulumi.interpolate`${args.repository}:${tag}`,
        build: {
          context: args.context ?? REPO_ROOT,
          dockerfile: join(args.context ?? REPO_ROOT, RUNTIME_DOCKERFILE),
          platform: args.platform ?? "linux/amd64",
        },
        ...(push ? { registry: args.registry } : { skipPush: true }),
      },
      { parent: this },
    );
    this.imageName = this.image.imageName;
    this.ref = push ? this.image.repoDigest : this.image.imageName;
    // The provider reports a local build's image ID as its repoDigest.
    this.imageId = this.image.repoDigest;
    this.registerOutputs({ ref: this.ref, imageName: this.imageName, imageId: this.imageId });
  }
}
