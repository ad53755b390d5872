/**
 * What the gateway's pod gets beyond config and identity: each OIDC provider's client secret as an
 * environment variable from the Kubernetes Secret the spec names (and a clear refusal without one), and
 * the spec's extra volumes (targets.kubernetes.gatewayVolumes) mounted read-only, and the preStop sleep
 * that keeps a stopping gateway serving while it leaves endpoints (targets.kubernetes.gatewayDrainDelay) —
 * every object still valid against the strict Kubernetes API schema.
 */
import { describe, expect, it } from "vitest";
import { ChartInputError, synthesize, type KubeObject } from "../../components/kubernetes/index.ts";
import { parseSpec } from "../../components/spec/parse.ts";
import { resultOf } from "./support.ts";
import { validator } from "./validate.ts";

const v = validator();

function spec(gateway: Record<string, unknown> = {}, kubernetes?: Record<string, unknown>) {
  return {
    name: "shop",
    trustDomain: "shop.example",
    services: { web: { image: "r/web:1.0.0", port: 8080, allow: [{ from: ["gateway"] }] } },
    gateway: {
      hosts: ["shop.example"],
      routes: [{ name: "web", match: { path: "/**" }, to: "web", public: true }],
      ...gateway,
    },
    ...(kubernetes ? { targets: { kubernetes } } : {}),
  };
}

const oidc = (providers: Record<string, { env: string; secret?: string }>) => ({
  oidc: Object.fromEntries(
    Object.entries(providers).map(([name, p]) => [
      name,
      {
        issuer: `https://${name}.example/`,
        clientId: "meshgate",
        clientSecretEnv: p.env,
        ...(p.secret ? { secret: p.secret } : {}),
        redirectPath: `/oauth2/${name}/callback`,
        cookieName: `meshgate_session_${name}`,
      },
    ]),
  ),
});

function gatewayPod(objects: readonly KubeObject[]) {
  const d = objects.find((o) => o.kind === "Deployment" && o.metadata.name === "gateway") as KubeObject & {
    spec: {
      template: { spec: { containers: Record<string, unknown>[]; volumes: Record<string, unknown>[] } };
    };
  };
  return { container: d.spec.template.spec.containers[0]!, volumes: d.spec.template.spec.volumes };
}

describe("OIDC client secrets in the gateway pod", () => {
  it("fills_each_providers_variable_from_the_secret_the_spec_names", () => {
    const objects = synthesize(
      resultOf(
        spec(
          oidc({
            sso: { env: "SSO_CLIENT_SECRET", secret: "sso-oidc" },
            partners: { env: "PARTNER_SECRET", secret: "partner-oidc" },
          }),
        ),
      ),
    );
    expect(gatewayPod(objects).container.env).toEqual([
      { name: "PARTNER_SECRET", valueFrom: { secretKeyRef: { name: "partner-oidc", key: "client-secret" } } },
      { name: "SSO_CLIENT_SECRET", valueFrom: { secretKeyRef: { name: "sso-oidc", key: "client-secret" } } },
    ]);
    expect(objects.flatMap((o) => v.problems(o))).toEqual([]);
  });

  it("gives_a_gateway_without_oidc_no_environment", () => {
    expect(gatewayPod(synthesize(resultOf(spec()))).container.env).toBeUndefined();
  });

  it.each([
    [
      "a_provider_without_a_secret",
      { sso: { env: "SSO_CLIENT_SECRET" } },
      /gateway\.oidc\.sso\.secret: on Kubernetes the gateway reads the client secret from the environment variable SSO_CLIENT_SECRET; name the Secret/,
    ],
    [
      "one_variable_from_two_secrets",
      { a: { env: "SHARED", secret: "a-oidc" }, b: { env: "SHARED", secret: "b-oidc" } },
      /gateway\.oidc\.b\.secret: SHARED would come from two Secrets \(a-oidc and b-oidc\)/,
    ],
  ])("refuses_%s_naming_the_field", (_claim, providers, message) => {
    const result = resultOf(spec(oidc(providers)));
    expect(() => synthesize(result)).toThrow(ChartInputError);
    expect(() => synthesize(result)).toThrow(message);
  });
});

describe("extra gateway volumes", () => {
  it("mounts_each_read_only_with_its_source", () => {
    const objects = synthesize(
      resultOf(
        spec(
          {},
          {
            gatewayVolumes: [
              { name: "site", mountPath: "/srv/site", persistentVolumeClaim: "site-content" },
              { name: "client-ca", mountPath: "/etc/client-ca", configMap: "partner-ca" },
              { name: "certs", mountPath: "/etc/certs/", secret: "api-cert-files" },
            ],
          },
        ),
      ),
    );
    const { container, volumes } = gatewayPod(objects);
    expect(container.volumeMounts).toEqual(
      expect.arrayContaining([
        { name: "certs", mountPath: "/etc/certs/", readOnly: true },
        { name: "client-ca", mountPath: "/etc/client-ca", readOnly: true },
        { name: "site", mountPath: "/srv/site", readOnly: true },
      ]),
    );
    expect(volumes).toEqual(
      expect.arrayContaining([
        { name: "certs", secret: { secretName: "api-cert-files", defaultMode: 0o440 } },
        { name: "client-ca", configMap: { name: "partner-ca", defaultMode: 0o444 } },
        { name: "site", persistentVolumeClaim: { claimName: "site-content", readOnly: true } },
      ]),
    );
    expect(objects.flatMap((o) => v.problems(o))).toEqual([]);
  });

  it.each([
    [
      "a_name_the_chart_uses",
      { name: "config", mountPath: "/srv/config", configMap: "x" },
      /gatewayVolumes\[0\]\.name: "config" is a volume the chart mounts itself/,
    ],
    [
      "a_path_above_the_charts_config",
      { name: "etc", mountPath: "/etc/meshgate", configMap: "x" },
      /gatewayVolumes\[0\]\.mountPath: \/etc\/meshgate overlaps the chart's mount of config/,
    ],
    [
      "a_path_inside_tmp",
      { name: "scratch", mountPath: "/tmp/scratch", configMap: "x" },
      /gatewayVolumes\[0\]\.mountPath: \/tmp\/scratch overlaps the chart's mount of tmp/,
    ],
    [
      "the_root",
      { name: "root", mountPath: "/", configMap: "x" },
      /gatewayVolumes\[0\]\.mountPath: \/ overlaps the chart's mount of config/,
    ],
  ])("refuses_%s_naming_the_field", (_claim, volume, message) => {
    const result = resultOf(spec({}, { gatewayVolumes: [volume] }));
    expect(() => synthesize(result)).toThrow(message);
  });

  it.each([
    [
      "two_sources",
      [{ name: "a", mountPath: "/srv/a", configMap: "x", secret: "y" }],
      "targets.kubernetes.gatewayVolumes[0]",
      "needs exactly one of configMap, secret, persistentVolumeClaim",
    ],
    [
      "no_source",
      [{ name: "a", mountPath: "/srv/a" }],
      "targets.kubernetes.gatewayVolumes[0]",
      "needs exactly one of configMap, secret, persistentVolumeClaim",
    ],
    [
      "a_relative_mount_path",
      [{ name: "a", mountPath: "srv/a", configMap: "x" }],
      "targets.kubernetes.gatewayVolumes[0].mountPath",
      "must be an absolute path",
    ],
    [
      "a_dot_dot_segment",
      [{ name: "a", mountPath: "/srv/../etc", configMap: "x" }],
      "targets.kubernetes.gatewayVolumes[0].mountPath",
      "must be an absolute path",
    ],
    [
      "a_leading_dot_dot_segment",
      [{ name: "a", mountPath: "/../etc", configMap: "x" }],
      "targets.kubernetes.gatewayVolumes[0].mountPath",
      "must be an absolute path",
    ],
    [
      "a_dot_segment",
      [{ name: "a", mountPath: "/./srv", configMap: "x" }],
      "targets.kubernetes.gatewayVolumes[0].mountPath",
      "must be an absolute path",
    ],
    [
      "a_repeated_name",
      [
        { name: "a", mountPath: "/srv/a", configMap: "x" },
        { name: "a", mountPath: "/srv/b", configMap: "y" },
      ],
      "targets.kubernetes.gatewayVolumes[1].name",
      'gateway volume name "a" is already used at [0]',
    ],
    [
      "a_repeated_mount_path",
      [
        { name: "a", mountPath: "/srv/a", configMap: "x" },
        { name: "b", mountPath: "/srv/a/", configMap: "y" },
      ],
      "targets.kubernetes.gatewayVolumes[1].mountPath",
      'mount path "/srv/a" is already used at [0]',
    ],
  ])("the_spec_refuses_%s", (_claim, gatewayVolumes, path, message) => {
    const r = parseSpec(spec({}, { gatewayVolumes }));
    expect(r.ok).toBe(false);
    if (r.ok) return;
    expect(r.errors.map((e) => [e.path, e.message])).toEqual(
      expect.arrayContaining([[path, expect.stringContaining(message)]]),
    );
  });
});

describe("the gateway pod's drain delay (targets.kubernetes.gatewayDrainDelay)", () => {
  const pod = (kubernetes?: Record<string, unknown>) => {
    const objects = synthesize(resultOf(spec({}, kubernetes)));
    expect(objects.flatMap((o) => v.problems(o))).toEqual([]);
    const d = objects.find((o) => o.kind === "Deployment" && o.metadata.name === "gateway") as KubeObject & {
      spec: {
        template: { spec: { terminationGracePeriodSeconds: number; containers: { lifecycle?: unknown }[] } };
      };
    };
    return d.spec.template.spec;
  };

  // The grace period covers the sleep, the drain (limits.drainTimeout, 30 s by default) and 5 s to exit.
  it.each<[string, Record<string, unknown> | undefined, number | null, number]>([
    ["sleeps_5s_by_default_without_targets_kubernetes", undefined, 5, 40],
    ["sleeps_5s_by_default_with_targets_kubernetes", { gatewayServiceType: "ClusterIP" }, 5, 40],
    ["sleeps_the_configured_whole_seconds", { gatewayDrainDelay: "15s" }, 15, 50],
    ["rounds_a_fraction_of_a_second_up", { gatewayDrainDelay: "2500ms" }, 3, 38],
    ["has_no_pre_stop_hook_with_0s", { gatewayDrainDelay: "0s" }, null, 35],
  ])("%s", (_claim, kubernetes, seconds, grace) => {
    const spec = pod(kubernetes);
    expect(spec.containers[0]!.lifecycle).toEqual(
      seconds === null ? undefined : { preStop: { sleep: { seconds } } },
    );
    expect(spec.terminationGracePeriodSeconds).toBe(grace);
  });

  it("the_spec_refuses_a_delay_over_a_minute_naming_the_field", () => {
    const r = parseSpec(spec({}, { gatewayDrainDelay: "90s" }));
    expect(r.ok).toBe(false);
    if (r.ok) return;
    expect(r.errors.map((e) => [e.path, e.code, e.message])).toEqual([
      [
        "targets.kubernetes.gatewayDrainDelay",
        "E_SPEC_LIMIT_TOO_LOOSE",
        expect.stringContaining("at most 60s"),
      ],
    ]);
  });
});

describe("the gateway Service's external traffic policy (targets.kubernetes.gatewayExternalTrafficPolicy)", () => {
  const service = (kubernetes?: Record<string, unknown>) => {
    const objects = synthesize(resultOf(spec({}, kubernetes)));
    expect(objects.flatMap((o) => v.problems(o))).toEqual([]);
    return (objects.find((o) => o.kind === "Service" && o.metadata.name === "gateway") as KubeObject & {
      spec: { type: string; externalTrafficPolicy?: string };
    })!.spec;
  };

  it.each<[string, Record<string, unknown> | undefined, string, string | undefined]>([
    ["keeps_client_addresses_by_default_without_targets_kubernetes", undefined, "LoadBalancer", "Local"],
    [
      "keeps_client_addresses_by_default_on_a_node_port",
      { gatewayServiceType: "NodePort" },
      "NodePort",
      "Local",
    ],
    ["spreads_per_pod_when_asked", { gatewayExternalTrafficPolicy: "Cluster" }, "LoadBalancer", "Cluster"],
    ["sets_none_on_a_cluster_ip_service", { gatewayServiceType: "ClusterIP" }, "ClusterIP", undefined],
  ])("%s", (_claim, kubernetes, type, policy) => {
    const s = service(kubernetes);
    expect(s.type).toBe(type);
    expect(s.externalTrafficPolicy).toBe(policy);
  });

  it("the_spec_refuses_another_value_naming_the_field", () => {
    const r = parseSpec(spec({}, { gatewayExternalTrafficPolicy: "Global" }));
    expect(r.ok).toBe(false);
    if (r.ok) return;
    expect(r.errors.map((e) => e.path)).toEqual(["targets.kubernetes.gatewayExternalTrafficPolicy"]);
  });
});

// A pod's container port names (and a Service's) must differ — the API refuses a duplicate — and the
// scrape configuration keeps the port named meshgate-admin: a listener never takes that name.
describe("the gateway's port names", () => {
  it.each([
    ["a_listener_named_like_the_admin_port", ["meshgate-admin", "web"], ["p-8080", "web", "meshgate-admin"]],
    [
      "a_listener_named_like_another_ports_fallback",
      ["p-8081", "a-listener-name-too-long"],
      ["p-8080", "p-8081", "meshgate-admin"],
    ],
    ["names_that_fit", ["public", "internal"], ["public", "internal", "meshgate-admin"]],
  ])("are_unique_with_%s", (_claim, names, want) => {
    const listeners = names.map((name, i) => ({ name, port: 8080 + i, protocol: "http" }));
    const objects = synthesize(resultOf(spec({ listeners })));
    const ports = gatewayPod(objects).container.ports as { name: string; containerPort: number }[];
    expect(ports.map((p) => p.name).sort()).toEqual([...want].sort());
    const service = objects.find((o) => o.kind === "Service" && o.metadata.name === "gateway")!;
    const servicePorts = (service.spec as { ports: { name: string; targetPort: string }[] }).ports;
    expect(servicePorts.map((p) => [p.name, p.targetPort]).sort()).toEqual(
      want
        .slice(0, 2)
        .map((n) => [n, n])
        .sort(),
    );
  });
});
