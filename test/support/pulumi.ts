/**
 * Pulumi's mocks for component tests (no CLI, no engine, no provider plugins): the mock monitor records
 * every registered resource, and providers answer with their inputs plus the outputs a provider would
 * compute (the tls provider's PEMs and validity times, a Kubernetes object's metadata). Only Pulumi's
 * engine and the providers are mocked — meshgate's code runs as it is.
 *
 * `runStack(fn)` runs `fn` as a stack program (under a real `pulumi:pulumi:Stack` root resource) and
 * records every resource constructed, with its parent, through a stack transformation that the SDK
 * applies in-process.
 *
 * Call `installMocks()` in `beforeAll` and import the code that creates resources afterwards (with
 * `await import()`): a module imported before setMocks records nothing. Vitest runs each file in its own
 * process (pool: forks), so each file starts with fresh Pulumi state.
 */
import { createHash } from "node:crypto";
import * as pulumi from "@pulumi/pulumi";

export interface Registered {
  type: string;
  name: string;
  /** The inputs the monitor received, secrets unwrapped. */
  inputs: Record<string, unknown>;
  /** Paths (`a.b`) of the inputs that arrived as secrets. */
  secretInputs: string[];
  custom: boolean;
  provider: string | undefined;
}

export interface Constructed {
  type: string;
  name: string;
  resource: pulumi.Resource;
  parent: pulumi.Resource | undefined;
  opts: pulumi.ResourceOptions;
}

export interface MockState {
  /** Every resource the monitor registered, in order. */
  registered: Registered[];
  /** Every resource constructed inside runStack, in order (the stack itself excluded). */
  constructed: Constructed[];
  /** validityStartTime the tls mocks report, by resource name (default: the mock's clock). */
  validityStart: Map<string, string>;
  /** The mock clock for validity times (epoch ms). */
  now: number;
}

export const mockState: MockState = {
  registered: [],
  constructed: [],
  validityStart: new Map(),
  now: Date.now(),
};

const pem = (label: string, name: string) =>
  `-----BEGIN ${label}-----\nMOCK ${Buffer.from(name).toString("base64")}\n-----END ${label}-----\n`;

/** The outputs a provider computes, for the types the components create. */
function computed(type: string, name: string, inputs: Record<string, unknown>): Record<string, unknown> {
  const hours = Number(inputs.validityPeriodHours ?? 0);
  const start = mockState.validityStart.get(name) ?? new Date(mockState.now).toISOString();
  const validity = {
    validityStartTime: start,
    validityEndTime: new Date(Date.parse(start) + hours * 3_600_000).toISOString(),
    readyForRenewal: false,
  };
  switch (type) {
    case "tls:index/privateKey:PrivateKey":
      return {
        privateKeyPem: pem("EC PRIVATE KEY", name),
        privateKeyPemPkcs8: pem("PRIVATE KEY", name),
        publicKeyPem: pem("PUBLIC KEY", name),
      };
    case "tls:index/certRequest:CertRequest":
      return { certRequestPem: pem("CERTIFICATE REQUEST", name) };
    case "tls:index/selfSignedCert:SelfSignedCert":
    case "tls:index/locallySignedCert:LocallySignedCert":
      return { certPem: pem("CERTIFICATE", name), ...validity };
    case "docker:index/image:Image": {
      // A pushed image reports its digest reference; a local one its image ID (as @pulumi/docker ≥ 4.4 does).
      const imageName = String(inputs.imageName);
      const repo = imageName.replace(/:[^:/]+$/, "");
      const digest = createHash("sha256").update(name).digest("hex");
      return { imageName, repoDigest: inputs.skipPush ? `sha256:${digest}` : `${repo}@sha256:${digest}` };
    }
    default:
      if (type.startsWith("kubernetes:") && typeof inputs.metadata === "object" && inputs.metadata) {
        const metadata = inputs.metadata as Record<string, unknown>;
        return { metadata: { ...metadata, uid: `uid-${name}` } };
      }
      return {};
  }
}

const SECRET_SIG = "1b47061264138c4ac30d75fd1eb44270";
const SIG_KEY = "4dabf18193072939515e22adb298388d";

/** The value with Pulumi's secret wrappers removed; the wrapped paths are pushed to `paths`. */
function unwrapSecrets(value: unknown, path: string, paths: string[]): unknown {
  if (value === null || typeof value !== "object") return value;
  const record = value as Record<string, unknown>;
  if (record[SIG_KEY] === SECRET_SIG) {
    paths.push(path);
    return unwrapSecrets(record.value, path, []);
  }
  if (Array.isArray(value)) return value.map((v, i) => unwrapSecrets(v, `${path}[${i}]`, paths));
  return Object.fromEntries(
    Object.entries(record).map(([k, v]) => [k, unwrapSecrets(v, path ? `${path}.${k}` : k, paths)]),
  );
}

/** A provider's outputs for a resource's inputs (undefined: use the default mock outputs). */
export type ProviderEmulation = (
  type: string,
  name: string,
  inputs: Record<string, unknown>,
) => Promise<Record<string, unknown> | undefined>;

/** A provider's answer to an invoke (`aws:eks/getCluster:getCluster`); undefined: echo the inputs. */
export type CallEmulation = (
  token: string,
  inputs: Record<string, unknown>,
) => Record<string, unknown> | undefined;

/**
 * Installs the mocks (preview = false: every output resolves). `provider` may compute real outputs
 * (test/support/tls-provider.ts makes real certificates); by default they are recognisable placeholders.
 * An `id` among the outputs becomes the resource's id (default `<name>-id`). `call` answers invokes
 * (test/support/aws.ts emulates AWS data sources); by default an invoke returns its inputs.
 */
export async function installMocks(
  project = "meshgate",
  stack = "test",
  provider?: ProviderEmulation,
  call?: CallEmulation,
): Promise<MockState> {
  await pulumi.runtime.setMocks(
    {
      newResource: async (args) => {
        const secretInputs: string[] = [];
        const inputs = unwrapSecrets(args.inputs, "", secretInputs) as Record<string, unknown>;
        mockState.registered.push({
          type: args.type,
          name: args.name,
          inputs,
          secretInputs,
          custom: args.custom ?? false,
          provider: args.provider,
        });
        const outputs =
          (await provider?.(args.type, args.name, inputs)) ?? computed(args.type, args.name, inputs);
        const id = typeof outputs.id === "string" ? outputs.id : `${args.name}-id`;
        return { id, state: { ...args.inputs, ...outputs } };
      },
      call: (args) => call?.(args.token, args.inputs as Record<string, unknown>) ?? args.inputs,
    },
    project,
    stack,
    false,
  );
  return mockState;
}

/** Forgets what was recorded (between runs in one file). */
export function resetRecords(): void {
  mockState.registered.length = 0;
  mockState.constructed.length = 0;
}

export interface StackRun {
  /** The stack outputs, resolved. */
  outputs: Record<string, unknown>;
  /**
   * Errors the program raised asynchronously (an output whose apply threw, a failed registration): what
   * the Pulumi language host reports and fails the update with.
   */
  errors: Error[];
}

/**
 * Runs `program` as a stack (the root `pulumi:pulumi:Stack` resource is its parent by default), waits
 * until every resource registration has finished, and returns the resolved stack outputs and the
 * asynchronous errors of the run (the language host's unhandled-rejection handler, emulated: during
 * the run they are collected instead of failing the test file).
 */
export async function runStack(program: () => unknown): Promise<StackRun> {
  const errors: Error[] = [];
  const saved = process.listeners("unhandledRejection");
  process.removeAllListeners("unhandledRejection");
  // One failure often rejects several promises (the resource, the stack outputs): keep each error once.
  const collect = (reason: unknown) => {
    const err = reason instanceof Error ? reason : new Error(String(reason));
    if (!errors.includes(err)) errors.push(err);
  };
  process.on("unhandledRejection", collect);
  try {
    const outputs = await pulumi.runtime
      .runInPulumiStack(async () => {
        pulumi.runtime.registerStackTransformation((args) => {
          mockState.constructed.push({
            type: args.type,
            name: args.name,
            resource: args.resource,
            parent: args.opts.parent,
            opts: args.opts,
          });
          return undefined;
        });
        return ((await program()) ?? undefined) as Record<string, unknown> | undefined;
      })
      .catch((err: unknown) => {
        collect(err);
        return {};
      });
    await (pulumi.runtime as unknown as { waitForRPCs(): Promise<void> }).waitForRPCs();
    await new Promise((r) => setImmediate(r)); // let the last rejections surface
    return { outputs: (outputs ?? {}) as Record<string, unknown>, errors };
  } finally {
    process.off("unhandledRejection", collect);
    for (const l of saved) process.on("unhandledRejection", l);
  }
}

/** The value of an output (under mocks with preview = false it always resolves). */
export function valueOf<T>(output: pulumi.Input<T>): Promise<T> {
  // Output#promise is the SDK's own accessor (internal in the typings): it rejects when an apply threw.
  return (pulumi.output(output) as unknown as { promise(): Promise<T> }).promise();
}

/**
 * What a resource registered as its outputs (a component's registerOutputs, a custom resource's state),
 * as the mock monitor keeps it, with secrets unwrapped. Throws when no such resource exists.
 */
export function registeredOutputs(type: string, name: string): Record<string, unknown> {
  const monitor = (
    pulumi.runtime as unknown as {
      getMonitor(): { getRegisteredResources(): Map<string, { state: unknown }> };
    }
  ).getMonitor();
  for (const [urn, r] of monitor.getRegisteredResources()) {
    const [qualifiedType, resourceName] = urn.split("::").slice(-2);
    if (resourceName !== name || qualifiedType!.split("$").pop() !== type) continue;
    const state = r.state as { toJavaScript?: () => unknown } | Record<string, unknown>;
    const plain = typeof state.toJavaScript === "function" ? state.toJavaScript() : state;
    return unwrapSecrets(plain, "", []) as Record<string, unknown>;
  }
  throw new Error(`no registered resource ${type} ${name}`);
}

/** Whether an output is a secret. */
export function secretOf(output: pulumi.Output<unknown>): Promise<boolean> {
  return pulumi.isSecret(output);
}

/**
 * Paths (`a.b[0]`) in a resolved value that are not plain, known data: `undefined`, an Output, a
 * Promise, or Pulumi's unknown sentinel. Empty means fully resolved.
 */
export function unresolvedPaths(value: unknown, path = ""): string[] {
  if (value === undefined) return [path || "(root)"];
  if (value === null || typeof value !== "object") {
    return value === "04da6b54-80e4-46f7-96ec-b56ff0331ba9" ? [path] : [];
  }
  if (pulumi.Output.isInstance(value) || value instanceof Promise) return [path || "(root)"];
  if (Array.isArray(value)) return value.flatMap((v, i) => unresolvedPaths(v, `${path}[${i}]`));
  return Object.entries(value).flatMap(([k, v]) => unresolvedPaths(v, path ? `${path}.${k}` : k));
}
