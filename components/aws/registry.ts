/**
 * `RuntimeRegistry` (`meshgate:aws:RuntimeRegistry`): an ECR repository for the meshgate runtime image
 * (scan on push, immutable tags, a lifecycle policy) and the image built from runtime/Dockerfile and
 * pushed there with the registry's short-lived credentials (`aws.ecr.getAuthorizationToken`), through
 * `RuntimeImage`. `ref` is the pushed digest reference: what every workload runs.
 *
 * Tags are immutable, so the tag is `<package version>-<hash of the build inputs>`: a changed runtime
 * pushes a new tag, an unchanged one re-pushes nothing.
 */
import { createHash } from "node:crypto";
import { readdirSync, readFileSync } from "node:fs";
import { join, relative } from "node:path";
import * as aws from "@pulumi/aws";
import * as pulumi from "@pulumi/pulumi";
import { packageVersion, REPO_ROOT, RuntimeImage } from "../pulumi/image.ts";

/** The build context's files the Dockerfile copies (see runtime/Dockerfile). */
const BUILD_INPUTS = ["package.json", "package-lock.json", "runtime", "scripts/build.ts"];

function files(root: string, path: string): string[] {
  const full = join(root, path);
  try {
    return readdirSync(full, { withFileTypes: true })
      .flatMap((e) => files(root, join(path, e.name)))
      .sort();
  } catch {
    return [full];
  }
}

/** `<version>-<first 12 hex of sha256 over the build inputs' paths and contents>`. */
export function sourceTag(root: string = REPO_ROOT): string {
  const hash = createHash("sha256");
  for (const input of BUILD_INPUTS)
    for (const file of files(root, input)) {
      hash.update(relative(root, file)).update("\0").update(readFileSync(file)).update("\0");
    }
  return `${packageVersion(root)}-${hash.digest("hex").slice(0, 12)}`;
}

/** Keep the last 20 images; untagged ones (superseded layers) expire after 7 days. */
export const LIFECYCLE_POLICY = JSON.stringify({
  rules: [
    {
      rulePriority: 1,
      description: "untagged images expire after 7 days",
      selection: { tagStatus: "untagged", countType: "sinceImagePushed", countUnit: "days", countNumber: 7 },
      action: { type: "expire" },
    },
    {
      rulePriority: 2,
      description: "keep the last 20 images",
      selection: { tagStatus: "any", countType: "imageCountMoreThan", countNumber: 20 },
      action: { type: "expire" },
    },
  ],
});

export interface RuntimeRegistryArgs {
  /** The image platform: `linux/arm64` for Graviton nodes, else `linux/amd64`. */
  platform: "linux/arm64" | "linux/amd64";
  /**
   * Whether `pulumi destroy` deletes the repository with its images (true), or fails while it holds any.
   * @default true (images are rebuilt from source)
   */
  forceDelete?: boolean;
  /** The image tag. @default sourceTag() */
  tag?: string;
}

export class RuntimeRegistry extends pulumi.ComponentResource {
  readonly repository: aws.ecr.Repository;
  readonly image: RuntimeImage;
  /** The repository URL (`<account>.dkr.ecr.<region>.amazonaws.com/<name>`). */
  readonly repositoryUrl: pulumi.Output<string>;
  /** The pushed image's digest reference. */
  readonly ref: pulumi.Output<string>;

  /**
   * @param name The unique name; the repository is `<name>` (also its ECR name), the image `<name>-runtime`.
   * @param args The platform, teardown choice and tag.
   * @param opts Options for the component (the aws provider, parent, …).
   */
  constructor(name: string, args: RuntimeRegistryArgs, opts?: pulumi.ComponentResourceOptions) {
    super("meshgate:aws:RuntimeRegistry", name, {}, opts);
    this.repository = new aws.ecr.Repository(
      name,
      {
        name,
        imageTagMutability: "IMMUTABLE",
        imageScanningConfiguration: { scanOnPush: true },
        encryptionConfigurations: [{ encryptionType: "AES256" }],
        forceDelete: args.forceDelete ?? true,
      },
      { parent: this },
    );
    new aws.ecr.LifecyclePolicy(
      name,
      { repository: this.repository.name, policy: LIFECYCLE_POLICY },
      { parent: this },
    );
    this.repositoryUrl = this.repository.repositoryUrl;
    const token = aws.ecr.getAuthorizationTokenOutput(
      { registryId: this.repository.registryId },
      { parent: this },
    );
    this.image = new RuntimeImage(
      `${name}-runtime`,
      {
        repository: this.repository.repositoryUrl,
        tag: args.tag ?? sourceTag(),
        platform: args.platform,
        registry: {
          server: token.proxyEndpoint,
          username: token.userName,
          password: pulumi.secret(token.password),
        },
      },
      { parent: this },
    );
    this.ref = this.image.ref;
    this.registerOutputs({ repositoryUrl: this.repositoryUrl, ref: this.ref });
  }
}
