/**
 * Hardening of everything the chart deploys (shop in every option combination, and a generated spec):
 * every container non-root, read-only root filesystem, no privilege escalation, no capabilities,
 * seccomp RuntimeDefault, never privileged; no host namespaces; images pinned; no LoadBalancer but the
 * gateway's; no private key outside a Secret — and the policy pack's resource policies pass on every
 * object, as `pulumi preview --policy-pack policies/pack` would run them on the deployed resources.
 */
import {
  unknownCheckingProxy,
  type ResourceValidationArgs,
  type ResourceValidationPolicy,
} from "@pulumi/policy";
import { describe, expect, it } from "vitest";
import { synthesize, type ChartOptions, type KubeObject } from "../../components/kubernetes/index.ts";
import { configAnnotationHash } from "../../components/kubernetes/workloads.ts";
import { PACK_POLICIES, imagePinned } from "../../policies/pack/policies.ts";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { parse } from "yaml";
import { ROOT, generatedResult, resultOf, shopResult } from "./support.ts";

type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

const OPTIONS: ChartOptions[] = [
  {},
  { observability: "operator", identities: { mode: "cert-manager", caSecretName: "shop-ca" } },
  { observability: "none" },
];

async function everything(): Promise<KubeObject[]> {
  const out: KubeObject[] = [];
  for (const opts of OPTIONS) out.push(...synthesize(await shopResult(), opts));
  out.push(...synthesize(generatedResult({ services: 20, routes: 30, seed: 5 })));
  return out;
}

/** A policy's validateResource function(s). */
function validators(policy: ResourceValidationPolicy) {
  const v = policy.validateResource;
  if (!v) throw new Error(`${policy.name} has no validateResource`);
  return Array.isArray(v) ? v : [v];
}

const pods = (objects: KubeObject[]) =>
  objects
    .filter((o) => o.kind === "Deployment")
    .map((o) => ({
      name: `${o.metadata.namespace}/${o.metadata.name}`,
      spec: (o as Json).spec.template.spec as Json,
    }));

describe("every pod the chart deploys is hardened", () => {
  it("runs_every_container_non_root_read_only_without_capabilities", async () => {
    const problems: string[] = [];
    for (const { name, spec } of pods(await everything())) {
      const podSc = spec.securityContext ?? {};
      if (podSc.seccompProfile?.type !== "RuntimeDefault") problems.push(`${name}: pod seccomp`);
      for (const key of ["hostNetwork", "hostPID", "hostIPC"])
        if (spec[key]) problems.push(`${name}: ${key}`);
      for (const c of [...(spec.initContainers ?? []), ...spec.containers] as Json[]) {
        const sc = c.securityContext ?? {};
        const where = `${name}/${c.name}`;
        if ((sc.runAsNonRoot ?? podSc.runAsNonRoot) !== true) problems.push(`${where}: runAsNonRoot`);
        if ((sc.runAsUser ?? podSc.runAsUser) === 0) problems.push(`${where}: runs as root`);
        if (sc.readOnlyRootFilesystem !== true) problems.push(`${where}: writable root filesystem`);
        if (sc.allowPrivilegeEscalation !== false) problems.push(`${where}: privilege escalation`);
        if (sc.privileged === true) problems.push(`${where}: privileged`);
        if (JSON.stringify(sc.capabilities) !== JSON.stringify({ drop: ["ALL"] }))
          problems.push(`${where}: capabilities`);
        if (sc.seccompProfile?.type !== "RuntimeDefault") problems.push(`${where}: seccomp`);
        if (!imagePinned(c.image)) problems.push(`${where}: image ${c.image} not pinned`);
        if (!c.resources?.limits?.memory || !c.resources?.requests?.cpu)
          if (c.name !== "app") problems.push(`${where}: no resources`);
      }
    }
    expect(problems).toEqual([]);
  });

  it("exposes_no_load_balancer_but_the_gateway", async () => {
    const lbs = (await everything()).filter(
      (o) => o.kind === "Service" && (o as Json).spec.type === "LoadBalancer",
    );
    expect(lbs.length).toBeGreaterThan(0);
    for (const s of lbs) {
      expect(s.metadata.name).toBe("gateway");
      expect(s.metadata.labels?.["meshgate.io/role"]).toBe("gateway");
    }
  });

  it("mounts_no_service_account_token_into_the_proxies", async () => {
    for (const { name, spec } of pods(await everything()))
      if (!name.endsWith("/prometheus")) expect(spec.automountServiceAccountToken, name).toBe(false);
  });

  it("passes_every_resource_policy_of_the_policy_pack", async () => {
    const policies = PACK_POLICIES.filter((p): p is ResourceValidationPolicy => "validateResource" in p);
    expect(policies.length).toBeGreaterThanOrEqual(6);
    const violations: string[] = [];
    let checked = 0;
    for (const o of await everything()) {
      const group = o.apiVersion.includes("/") ? o.apiVersion : `core/${o.apiVersion}`;
      const type = `kubernetes:${group}:${o.kind}`;
      for (const policy of policies) {
        const args = {
          type,
          props: unknownCheckingProxy(structuredClone(o) as Json),
          urn: `urn:pulumi:dev::shop::${type}::${o.metadata.name}`,
          name: o.metadata.name,
          opts: {},
          stackTags: new Map(),
          isType: () => false,
          asType: () => undefined,
          getConfig: () => ({}),
          notApplicable: () => {
            throw new Error("not applicable");
          },
        } as unknown as ResourceValidationArgs;
        const validate = validators(policy);
        for (const v of validate)
          await v(args, (m: string) => violations.push(`${policy.name}: ${type} ${o.metadata.name}: ${m}`));
        checked++;
      }
    }
    expect(checked).toBeGreaterThan(100);
    expect(violations).toEqual([]);
  });

  it("the_pack_would_catch_an_unhardened_chart", async () => {
    // The same check on a deliberately broken copy must report: the policies do look at our objects.
    const d = structuredClone(
      synthesize(await shopResult()).find((o) => o.metadata.name === "orders" && o.kind === "Deployment")!,
    ) as Json;
    delete d.spec.template.spec.initContainers; // no sidecar
    d.spec.template.spec.containers[0].image = "ghcr.io/acme/orders:latest";
    const policies = PACK_POLICIES.filter((p): p is ResourceValidationPolicy => "validateResource" in p);
    const violations: string[] = [];
    for (const policy of policies) {
      const validate = validators(policy);
      for (const v of validate)
        await v(
          {
            type: "kubernetes:apps/v1:Deployment",
            props: unknownCheckingProxy(d),
            name: "orders",
            getConfig: () => ({}),
          } as unknown as ResourceValidationArgs,
          (m: string) => violations.push(`${policy.name}: ${m}`),
        );
    }
    expect(violations.some((v) => v.startsWith("kubernetes-images-pinned"))).toBe(true);
    expect(violations.some((v) => v.startsWith("kubernetes-meshed-workloads-have-their-sidecar"))).toBe(true);
  });
});

describe("credentials of the proxies' configs stay in Secrets", () => {
  const SECRET = "s3cret-Redis-pw";
  const shopWith = (edit: (raw: Json) => void) => {
    const raw = parse(readFileSync(join(ROOT, "examples/shop/mesh.yaml"), "utf8")) as Json;
    edit(raw);
    return resultOf(raw);
  };
  const SERVICES = Object.keys(
    (parse(readFileSync(join(ROOT, "examples/shop/mesh.yaml"), "utf8")) as Json).services,
  ).sort();
  // Each case: the edit, and the workloads whose config then holds the credential.
  const cases: [string, (raw: Json) => void, string[]][] = [
    [
      "a rate-limit Redis password",
      (raw) =>
        (raw.gateway.rateLimitStore.redis.url = `redis://:${SECRET}@redis.shop.svc.cluster.local:6379`),
      ["gateway"],
    ],
    [
      "a rate-limit Redis ACL user and password",
      (raw) =>
        (raw.gateway.rateLimitStore.redis.url = `rediss://meshgate:${SECRET}@redis.example.com:6380/0`),
      ["gateway"],
    ],
    [
      "a cache Redis password",
      (raw) =>
        (raw.gateway.cache = {
          ...raw.gateway.cache,
          redis: { url: `redis://:${SECRET}@redis.shop.svc.cluster.local:6379` },
        }),
      ["gateway"],
    ],
    // Before: only Redis URLs counted, so these were written into ConfigMaps (readable with the `view`
    // role) and annotated with the sealed hash over the password.
    [
      "a JWKS URL user and password",
      (raw) =>
        (raw.gateway.jwt.main.jwksUri = `https://jwks-reader:${SECRET}@id.shop.example/.well-known/jwks.json`),
      ["gateway"],
    ],
    [
      "an OTLP endpoint token (every proxy exports spans)",
      (raw) =>
        (raw.observability.tracing = {
          sampling: 0.1,
          otlpEndpoint: `https://otel:${SECRET}@collector.example.com:4318`,
        }),
      ["gateway", ...SERVICES],
    ],
  ];
  for (const [what, edit, workloads] of cases)
    it(`${what} is rendered into a Secret mounted read-only, never a ConfigMap, env value or argument`, () => {
      for (const opts of OPTIONS) {
        const objects = synthesize(shopWith(edit), opts);
        const holders = objects.filter((o) => JSON.stringify(o).includes(SECRET));
        expect(holders.map((o) => `${o.kind}/${o.metadata.name}`).sort()).toEqual(
          workloads.map((w) => `Secret/meshgate-config-${w}`).sort(),
        );
        for (const holder of holders) expect((holder as Json).type).toBe("Opaque");
        for (const w of workloads) {
          expect(
            objects.some((o) => o.kind === "ConfigMap" && o.metadata.name === `meshgate-config-${w}`),
          ).toBe(false);
          const pod = (objects.find((o) => o.kind === "Deployment" && o.metadata.name === w) as Json).spec
            .template.spec;
          expect(pod.volumes.find((v: Json) => v.name === "config")).toEqual({
            name: "config",
            secret: { secretName: `meshgate-config-${w}`, defaultMode: 0o440 },
          });
          const mounts = [...(pod.initContainers ?? []), ...pod.containers].flatMap(
            (c: Json) => (c.volumeMounts ?? []) as Json[],
          );
          const configMounts = mounts.filter((m: Json) => m.name === "config");
          expect(configMounts.length).toBeGreaterThan(0);
          for (const m of configMounts) expect(m.readOnly).toBe(true);
        }
      }
    });

  // The RuntimeConfig's own hash is an unsalted SHA-256 over the password: annotated where the Deployment's
  // readers see it, it would let them test guesses offline. The annotation must not depend on the password.
  for (const [what, edit, workloads] of cases)
    it(`${what} does not reach the config-hash annotations or the chart's hash outputs`, () => {
      const other = (raw: Json) => {
        edit(raw);
        const s = JSON.stringify(raw).replaceAll(SECRET, "another-Redis-pw");
        for (const k of Object.keys(raw)) delete raw[k];
        Object.assign(raw, JSON.parse(s));
      };
      const [a, b] = [shopWith(edit), shopWith(other)];
      const hashes = (result: typeof a, w: string) => {
        const objects = synthesize(result);
        const deployment = objects.find((o) => o.kind === "Deployment" && o.metadata.name === w) as Json;
        const secret = objects.find(
          (o) => o.kind === "Secret" && o.metadata.name === `meshgate-config-${w}`,
        ) as Json;
        return {
          pod: deployment.spec.template.metadata.annotations["meshgate.io/config-hash"] as string,
          secret: secret.metadata.annotations["meshgate.io/config-hash"] as string,
          sealed: JSON.parse(secret.stringData["config.json"]).hash as string,
        };
      };
      const configOf = (result: typeof a, w: string) =>
        w === "gateway" ? result.runtime.gateway! : result.runtime.sidecars.find((s) => s.name === w)!;
      for (const w of workloads) {
        const [ha, hb] = [hashes(a, w), hashes(b, w)];
        expect(ha.sealed).not.toBe(hb.sealed); // the mounted config changes (and the proxy reloads it)
        expect([ha.pod, ha.secret]).toEqual([hb.pod, hb.secret]); // the annotations do not move with the password
        expect(ha.pod).not.toBe(ha.sealed);
        expect(ha.secret).toBe(ha.pod);
        expect(configAnnotationHash(configOf(a, w))).toBe(configAnnotationHash(configOf(b, w)));
      }
    });

  it("a config without credentials stays a ConfigMap (the shop)", async () => {
    const objects = synthesize(await shopResult());
    expect(objects.filter((o) => o.kind === "Secret")).toEqual([]);
    expect(objects.some((o) => o.kind === "ConfigMap" && o.metadata.name === "meshgate-config-gateway")).toBe(
      true,
    );
  });

  it("a Prometheus remote-write URL with credentials is refused (it would be written into a ConfigMap)", async () => {
    const result = await shopResult();
    expect(() =>
      synthesize(result, {
        prometheusRemoteWrite: { url: `https://user:${SECRET}@aps.example.com/api/v1/remote_write` },
      }),
    ).toThrow(/prometheusRemoteWrite.url: holds credentials/);
    expect(() =>
      synthesize(result, { prometheusRemoteWrite: { url: "https://aps.example.com/api/v1/remote_write" } }),
    ).not.toThrow();
  });
});
