/**
 * The chart of the shop example: golden manifests (GIVEN the shop spec WHEN synthesized THEN the files
 * equal test/kubernetes/testdata/<case>/; UPDATE_GOLDEN=1 regenerates them), determinism, the cdk8s
 * chart's objects, the options and their defaults, the RuntimeConfigs in the ConfigMaps (loadable, the
 * pods' config-hash), identities by Secrets or cert-manager, and `meshgate synth`.
 */
import {
  mkdtempSync,
  readFileSync,
  readdirSync,
  rmSync,
  writeFileSync,
  existsSync,
  mkdirSync,
  statSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { App } from "cdk8s";
import { afterAll, describe, expect, it } from "vitest";
import { parse, parseAllDocuments } from "yaml";
import {
  ChartInputError,
  DEFAULT_RUNTIME_IMAGE,
  MeshChart,
  manifestFiles,
  secretNames,
  synthesize,
  type ChartOptions,
  type KubeObject,
} from "../../components/kubernetes/index.ts";
import { grafanaDashboards } from "../../components/observability/grafana.ts";
import { loadRuntimeConfig, type SidecarRuntimeConfig } from "../../runtime/contract/index.ts";
import { main } from "../../cli/main.ts";
import { expectGolden } from "../support/golden.ts";
import { promtool } from "../observability/support.ts";
import { ROOT, resultOf, shopResult } from "./support.ts";

const TESTDATA = new URL("./testdata/", import.meta.url).pathname;
type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

const tmp: string[] = [];
afterAll(() => {
  for (const d of tmp) rmSync(d, { recursive: true, force: true });
});
function tempDir(): string {
  const d = mkdtempSync(join(tmpdir(), "meshgate-synth-"));
  tmp.push(d);
  return d;
}

const byName = (objects: readonly KubeObject[], kind: string, name: string) =>
  objects.find((o) => o.kind === kind && o.metadata.name === name) as Json | undefined;

/** The dashboards' JSON is the observability generator's (pinned by test/observability's golden files). */
const isDashboard = (path: string) =>
  path.startsWith("configmap-grafana-dashboard-") || path.startsWith("configmap-meshgate-dashboard-");

function checkGolden(dir: string, files: { path: string; content: string }[]) {
  if (process.env.UPDATE_GOLDEN === "1") {
    rmSync(dir, { recursive: true, force: true });
    mkdirSync(dir, { recursive: true });
  }
  for (const f of files) expectGolden(join(dir, f.path), f.content);
  const onDisk = existsSync(dir) ? readdirSync(dir).sort() : [];
  expect(onDisk, "golden files the chart no longer writes").toEqual(files.map((f) => f.path).sort());
}

describe("the shop chart", () => {
  it("given_the_shop_spec_when_synthesized_then_the_manifests_match_the_golden_files", async () => {
    const files = manifestFiles(synthesize(await shopResult()));
    checkGolden(
      join(TESTDATA, "shop"),
      files.filter((f) => !isDashboard(f.path)),
    );
  });

  it("given_operator_mode_and_cert_manager_when_synthesized_then_the_changed_manifests_match_the_golden_files", async () => {
    const base = new Map(manifestFiles(synthesize(await shopResult())).map((f) => [f.path, f.content]));
    const files = manifestFiles(
      synthesize(await shopResult(), {
        observability: "operator",
        identities: { mode: "cert-manager", caSecretName: "shop-ca" },
      }),
    );
    // Only what differs from the default case (new files, or changed content).
    const changed = files.filter((f) => !isDashboard(f.path) && base.get(f.path) !== f.content);
    expect(changed.length).toBeGreaterThan(10);
    checkGolden(join(TESTDATA, "shop-operator-cert-manager"), changed);
  });

  it("bundles_the_generated_dashboards_unchanged", async () => {
    const result = await shopResult();
    const objects = synthesize(result);
    for (const d of grafanaDashboards(result.infra)) {
      const cm = byName(objects, "ConfigMap", `grafana-dashboard-${d.dashboard.uid}`);
      expect(JSON.parse(cm!.data[d.file])).toEqual(d.dashboard);
    }
  });

  it("is_deterministic_and_frozen", async () => {
    const a = synthesize(await shopResult());
    const b = synthesize(await shopResult());
    expect(manifestFiles(a)).toEqual(manifestFiles(b));
    expect(Object.isFrozen(a)).toBe(true);
    expect(Object.isFrozen(a[0]!.metadata)).toBe(true);
    expect(() => {
      (a[0]!.metadata as Json).name = "x";
    }).toThrow();
  });

  it("mesh_chart_holds_the_same_objects_for_cdk8s_users", async () => {
    const result = await shopResult();
    const app = new App();
    const chart = new MeshChart(app, "shop", result, { observability: "operator" });
    const fromChart = chart.toJson();
    expect(JSON.parse(JSON.stringify(synthesize(result, { observability: "operator" })))).toEqual(
      expect.arrayContaining(fromChart),
    );
    expect(fromChart.length).toBe(synthesize(result, { observability: "operator" }).length);
    // cdk8s keeps the names as given (no hashes).
    expect(fromChart.map((o: Json) => o.metadata.name)).toContain("meshgate-orders");
  });

  it("orders_namespaces_first_and_policies_before_the_pods", async () => {
    const kinds = synthesize(await shopResult()).map((o) => o.kind);
    expect(kinds[0]).toBe("Namespace");
    expect(kinds.lastIndexOf("NetworkPolicy")).toBeLessThan(kinds.indexOf("Deployment"));
    expect(kinds.lastIndexOf("ConfigMap")).toBeLessThan(kinds.indexOf("Deployment"));
  });
});

describe("proxies and their RuntimeConfigs", () => {
  it("mounts_each_proxy_config_and_rolls_pods_on_change_by_its_hash", async () => {
    const result = await shopResult();
    const objects = synthesize(result);
    for (const w of result.infra.workloads) {
      const cm = byName(objects, "ConfigMap", `meshgate-config-${w.name}`)!;
      const config = loadRuntimeConfig(cm.data["config.json"]);
      expect(config.name).toBe(w.name);
      const deployment = byName(objects, "Deployment", w.name)!;
      expect(deployment.spec.template.metadata.annotations["meshgate.io/config-hash"]).toBe(config.hash);
    }
    // A changed spec changes exactly the affected pods' hashes.
    const doc = parse(readFileSync(join(ROOT, "examples/shop/mesh.yaml"), "utf8"));
    doc.services.payments.timeout = "5s";
    const changed = synthesize(resultOf(doc));
    const hash = (objs: readonly KubeObject[], name: string) =>
      byName(objs, "Deployment", name)!.spec.template.metadata.annotations["meshgate.io/config-hash"];
    expect(hash(changed, "orders")).not.toBe(hash(objects, "orders")); // orders calls payments
    expect(hash(changed, "users")).toBe(hash(objects, "users"));
  });

  it("points_the_proxies_at_the_bundled_collector_and_keeps_the_hash_sealed", async () => {
    const objects = synthesize(await shopResult());
    const gw = loadRuntimeConfig(
      byName(objects, "ConfigMap", "meshgate-config-gateway")!.data["config.json"],
    );
    expect(gw.telemetry.tracing.otlpEndpoint).toBe(
      "http://otel-collector.shop-observability.svc.cluster.local:4318",
    );
    const none = synthesize(await shopResult(), { observability: "none" });
    const gw2 = loadRuntimeConfig(byName(none, "ConfigMap", "meshgate-config-gateway")!.data["config.json"]);
    expect(gw2.telemetry.tracing.otlpEndpoint).toBeNull();
  });

  it("runs_the_sidecar_as_a_native_sidecar_with_probes_on_its_admin_port", async () => {
    const d = byName(synthesize(await shopResult()), "Deployment", "orders")!;
    const pod = d.spec.template.spec;
    const sidecar = pod.initContainers[0];
    expect(sidecar.name).toBe("meshgate-sidecar");
    expect(sidecar.restartPolicy).toBe("Always");
    expect(sidecar.args).toEqual(["sidecar", "--config", "/etc/meshgate/config/config.json"]);
    for (const probe of ["startupProbe", "readinessProbe", "livenessProbe"])
      expect(sidecar[probe].httpGet.port).toBe("meshgate-admin");
    expect(sidecar.ports).toEqual([
      { containerPort: 15006, name: "mesh", protocol: "TCP" },
      { containerPort: 15000, name: "meshgate-admin", protocol: "TCP" },
    ]);
    expect(sidecar.resources.limits.memory).toBe("256Mi");
    const env = Object.fromEntries(pod.containers[0].env.map((e: Json) => [e.name, e.value]));
    expect(env.HTTP_PROXY).toBe("http://127.0.0.1:15001");
    expect(env.MESHGATE_SERVICE_PAYMENTS_URL).toBe("http://127.0.0.1:15450");
    expect(env.MESHGATE_SERVICE_CATALOG_URL).toBeUndefined(); // orders does not call catalog
  });

  it("mounts_an_externals_client_certificate_secret_into_the_sidecars_of_its_callers_only", async () => {
    const objects = synthesize(await shopResult());
    const payments = byName(objects, "Deployment", "payments")!.spec.template.spec;
    expect(payments.initContainers[0].volumeMounts).toContainEqual({
      name: "tls-0",
      mountPath: "/etc/meshgate/tls/bank-payouts-client",
      readOnly: true,
    });
    expect(payments.volumes).toContainEqual({
      name: "tls-0",
      secret: {
        secretName: "bank-payouts-client",
        defaultMode: 0o440,
        items: [
          { key: "tls.crt", path: "tls.crt" },
          { key: "tls.key", path: "tls.key" },
        ],
      },
    });
    // The app container does not get it; nor does a service that does not call the bank.
    expect(JSON.stringify(payments.containers)).not.toContain("bank-payouts-client");
    expect(JSON.stringify(byName(objects, "Deployment", "orders")!.spec)).not.toContain(
      "bank-payouts-client",
    );
    const config = loadRuntimeConfig(
      byName(objects, "ConfigMap", "meshgate-config-payments")!.data["config.json"],
      "sidecar",
    ) as SidecarRuntimeConfig;
    expect(config.outbound.external.find((x) => x.name === "bank-payouts")!.clientCertificate).toEqual({
      certFile: "/etc/meshgate/tls/bank-payouts-client/tls.crt",
      keyFile: "/etc/meshgate/tls/bank-payouts-client/tls.key",
    });
  });

  it("mounts_a_routed_externals_client_certificate_into_the_gateway_and_opens_its_egress", () => {
    const objects = synthesize(
      resultOf({
        name: "edge",
        trustDomain: "edge.example",
        services: { web: { image: "r/web:1", port: 8080, allow: [{ from: ["gateway"] }] } },
        external: {
          partner: {
            host: "api.partner.example",
            port: 8443,
            tls: "originate",
            clientCertificate: { secret: "partner-client" },
            allow: [{ from: ["gateway"] }],
          },
          legacy: { host: "10.20.0.5", port: 8080, allow: [{ from: ["gateway"] }] },
        },
        gateway: {
          hosts: ["edge.example"],
          routes: [
            {
              name: "web",
              match: { path: "/web" },
              to: "web",
              public: true,
              rateLimit: { requests: 9, per: "1s" },
            },
            {
              name: "partner",
              match: { path: "/partner/**" },
              to: { external: "partner" },
              public: true,
              rateLimit: { requests: 9, per: "1s" },
            },
            {
              name: "legacy",
              match: { path: "/legacy/**" },
              to: { external: "legacy" },
              public: true,
              rateLimit: { requests: 9, per: "1s" },
            },
          ],
        },
      }),
    );
    const gw = byName(objects, "Deployment", "gateway")!.spec.template.spec;
    const mounts = gw.containers[0].volumeMounts as Json[];
    expect(mounts).toContainEqual({
      name: "tls-0",
      mountPath: "/etc/meshgate/tls/partner-client",
      readOnly: true,
    });
    expect(gw.volumes).toContainEqual(
      expect.objectContaining({
        name: "tls-0",
        secret: expect.objectContaining({ secretName: "partner-client" }),
      }),
    );
    // The gateway's NetworkPolicy opens exactly the destinations' addresses and ports (a name: any address).
    const egress = byName(objects, "NetworkPolicy", "meshgate-gateway")!.spec.egress as Json[];
    expect(egress).toContainEqual({
      to: [{ ipBlock: { cidr: "10.20.0.5/32" } }],
      ports: [{ protocol: "TCP", port: 8080 }],
    });
    expect(egress).toContainEqual({
      to: [{ ipBlock: { cidr: "0.0.0.0/0" } }, { ipBlock: { cidr: "::/0" } }],
      ports: [{ protocol: "TCP", port: 8443 }],
    });
    // No service's sidecar gets the certificate or the destinations.
    expect(JSON.stringify(byName(objects, "Deployment", "web")!.spec)).not.toContain("partner-client");
    const web = loadRuntimeConfig(
      byName(objects, "ConfigMap", "meshgate-config-web")!.data["config.json"],
      "sidecar",
    ) as SidecarRuntimeConfig;
    expect(web.outbound.external).toEqual([]);
  });

  it("gives_the_gateway_a_service_hpa_and_pdb", async () => {
    const result = await shopResult();
    const objects = synthesize(result);
    expect(byName(objects, "Service", "gateway")!.spec.type).toBe("LoadBalancer");
    expect(byName(objects, "Service", "gateway")!.spec.ports.map((p: Json) => p.port)).toEqual([8080, 8443]);
    expect(byName(objects, "HorizontalPodAutoscaler", "gateway")!.spec.minReplicas).toBe(2);
    expect(byName(objects, "PodDisruptionBudget", "gateway")!.spec.maxUnavailable).toBe(1);
    const pod = byName(objects, "Deployment", "gateway")!.spec.template.spec;
    // The TLS secret of the https listener, where the gateway config reads it.
    expect(pod.containers[0].volumeMounts).toContainEqual({
      name: "tls-0",
      mountPath: "/etc/meshgate/tls/shop-tls",
      readOnly: true,
    });
    // 128 MiB memory cache on top of the base.
    expect(pod.containers[0].resources.limits.memory).toBe("448Mi");
    const clusterIp = parse(readFileSync(join(ROOT, "examples/shop/mesh.yaml"), "utf8"));
    clusterIp.targets.kubernetes.gatewayServiceType = "ClusterIP";
    expect(byName(synthesize(resultOf(clusterIp)), "Service", "gateway")!.spec.type).toBe("ClusterIP");
  });

  // The Kubernetes docs: with an HPA, leave spec.replicas out of the manifest, or every apply (a
  // config change) scales the Deployment back to it; Istio's gateway chart omits it when autoscaling.
  it("leaves_the_gateway_replica_count_to_its_hpa_so_an_apply_does_not_scale_it_down", async () => {
    const objects = synthesize(await shopResult());
    const hpa = byName(objects, "HorizontalPodAutoscaler", "gateway")!;
    expect(hpa.spec.scaleTargetRef).toEqual({ apiVersion: "apps/v1", kind: "Deployment", name: "gateway" });
    expect(byName(objects, "Deployment", "gateway")!.spec).not.toHaveProperty("replicas");
    expect(hpa.spec.minReplicas).toBe(2);
  });

  it.each<[string, number, boolean]>([
    ["a_service_of_three_replicas_keeps_two_through_a_node_drain", 3, true],
    ["a_service_of_two_replicas_keeps_one_through_a_node_drain", 2, true],
    ["a_single_replica_service_gets_no_budget_that_would_block_drains", 1, false],
    ["a_service_scaled_to_zero_gets_none", 0, false],
  ])("%s", async (_claim, replicas, budget) => {
    const doc = parse(readFileSync(join(ROOT, "examples/shop/mesh.yaml"), "utf8"));
    doc.services.orders.replicas = replicas;
    const objects = synthesize(resultOf(doc));
    const pdb = byName(objects, "PodDisruptionBudget", "orders");
    if (!budget) {
      expect(pdb).toBeUndefined();
      return;
    }
    const pods = byName(objects, "Deployment", "orders")!.spec.template.metadata.labels;
    expect(pdb!.spec.maxUnavailable).toBe(1);
    for (const [k, v] of Object.entries(pdb!.spec.selector.matchLabels)) expect(pods[k]).toBe(v);
  });

  // The EndpointSlice controller resolves a named targetPort in the pod's containers only before
  // Kubernetes 1.33 (kubernetes#128850, not backported): a name on the native sidecar (an init
  // container) leaves the slice without ports, and a ServiceMonitor selecting the port by name — the
  // operator mode's sidecar scrape — finds no target. Every Service's port must resolve that way too.
  it.each<[string, ChartOptions]>([
    ["bundled", {}],
    ["operator", { observability: "operator" }],
  ])("every_service_port_resolves_on_its_pods_as_kubernetes_1_29_resolves_it_%s", async (_, opts) => {
    const objects = synthesize(await shopResult(), opts);
    const pods = objects
      .filter((o) => o.kind === "Deployment")
      .map((d) => ({ ns: d.metadata.namespace, template: (d.spec as Json).template }));
    const unresolved: string[] = [];
    for (const svc of objects.filter((o) => o.kind === "Service")) {
      const spec = svc.spec as Json;
      const selected = pods.filter(
        (p) =>
          p.ns === svc.metadata.namespace &&
          Object.entries(spec.selector as Record<string, string>).every(
            ([k, v]) => p.template.metadata.labels[k] === v,
          ),
      );
      expect(selected.length, svc.metadata.name).toBeGreaterThan(0);
      for (const { template } of selected)
        for (const port of spec.ports as Json[]) {
          if (typeof port.targetPort === "number") continue;
          const found = (template.spec.containers as Json[]).some((c) =>
            (c.ports ?? []).some((cp: Json) => cp.name === port.targetPort),
          );
          if (!found) unresolved.push(`${svc.metadata.namespace}/${svc.metadata.name}:${port.name}`);
        }
    }
    expect(unresolved).toEqual([]);
  });

  it("makes_every_mesh_service_headless", async () => {
    const result = await shopResult();
    const objects = synthesize(result);
    for (const w of result.infra.workloads.filter((x) => x.kind === "service"))
      expect(byName(objects, "Service", w.name)!.spec.clusterIP).toBe("None");
  });
});

describe("the bundled Prometheus", () => {
  it("mounts_rules_that_promtool_accepts_at_the_path_its_configuration_names", async () => {
    const objects = synthesize(await shopResult());
    const dir = tempDir();
    const rules = byName(objects, "ConfigMap", "prometheus-rules")!.data as Record<string, string>;
    const [ruleFile, ruleText] = Object.entries(rules)[0]!;
    writeFileSync(join(dir, ruleFile), ruleText);
    const checked = promtool(["check", "rules", join(dir, ruleFile)]);
    expect(checked.output).toContain("SUCCESS");
    expect(checked.status).toBe(0);
    // (promtool check config needs kubernetes_sd_configs, which the Debian build leaves out.)
    const config = parse(byName(objects, "ConfigMap", "prometheus-config")!.data["prometheus.yml"]);
    expect(config.rule_files).toEqual([`/etc/prometheus/rules/${ruleFile}`]);
    const pod = byName(objects, "Deployment", "prometheus")!.spec.template.spec;
    expect(pod.containers[0].volumeMounts).toContainEqual({
      name: "rules",
      mountPath: "/etc/prometheus/rules",
      readOnly: true,
    });
    expect(config.scrape_configs.map((j: Json) => j.kubernetes_sd_configs[0].namespaces.names)).toEqual([
      ["shop"],
      ["shop"],
    ]);
    expect(pod.containers[0].args).toContain("--storage.tsdb.retention.time=30d");
  });
});

describe("identities", () => {
  it("mounts_the_caller_secrets_named_by_secret_names", async () => {
    const result = await shopResult();
    const names = secretNames(result.infra);
    expect(names.trustBundle).toBe("meshgate-trust-bundle");
    expect(Object.keys(names.svid).sort()).toEqual(result.infra.identities.map((i) => i.name).sort());
    const objects = synthesize(result);
    for (const id of result.infra.identities) {
      const pod = byName(objects, "Deployment", id.name)!.spec.template.spec;
      const sources = pod.volumes.find((v: Json) => v.name === "identity").projected.sources;
      expect(sources.map((s: Json) => s.secret.name)).toEqual([names.svid[id.name], names.trustBundle]);
    }
    expect(objects.filter((o) => o.kind === "Secret")).toEqual([]); // the caller provides them
  });

  it("issues_svids_through_cert_manager_when_selected", async () => {
    const result = await shopResult();
    const objects = synthesize(result, { identities: { mode: "cert-manager", caSecretName: "shop-ca" } });
    expect(byName(objects, "Issuer", "meshgate-ca")!.spec).toEqual({ ca: { secretName: "shop-ca" } });
    for (const id of result.infra.identities) {
      const cert = byName(objects, "Certificate", `meshgate-svid-${id.name}`)!;
      expect(cert.spec.uris).toEqual([id.spiffeId]);
      expect(cert.spec.duration).toBe("24h");
      expect(cert.spec.renewBefore).toBe("8h");
      expect(cert.spec.isCA).toBe(false);
      expect(cert.spec.privateKey).toEqual({
        algorithm: "ECDSA",
        size: 256,
        encoding: "PKCS8",
        rotationPolicy: "Always",
      });
      expect(cert.spec.dnsNames).toBeUndefined();
    }
  });

  // cert-manager's webhook refuses a Certificate of duration < 1h or renewBefore < 5m: no SVID, no pod.
  it.each([
    [
      "a_workload_ttl_under_an_hour",
      { workloadTtl: "30m", renewBefore: "10m" },
      /^mesh\.ca\.workloadTtl: 30m is shorter than the 1h/,
    ],
    [
      "a_renew_before_under_five_minutes",
      { renewBefore: "2m" },
      /^mesh\.ca\.renewBefore: 2m is shorter than the 5m/,
    ],
  ])("refuses_cert_manager_svids_its_webhook_would_reject_%s", (_claim, ca, message) => {
    const doc = parse(readFileSync(join(ROOT, "examples/shop/mesh.yaml"), "utf8"));
    doc.mesh.ca = { ...doc.mesh.ca, ...ca };
    const result = resultOf(doc);
    expect(() =>
      synthesize(result, { identities: { mode: "cert-manager", caSecretName: "shop-ca" } }),
    ).toThrow(message);
    // The mesh CA has no such floor: the same lifetimes issue SVIDs in secrets mode.
    expect(synthesize(result, { identities: { mode: "secrets" } }).length).toBeGreaterThan(0);
  });

  it("accepts_the_smallest_cert_manager_lifetimes", () => {
    const doc = parse(readFileSync(join(ROOT, "examples/shop/mesh.yaml"), "utf8"));
    doc.mesh.ca = { ...doc.mesh.ca, provider: "cert-manager", workloadTtl: "1h", renewBefore: "5m" };
    const cert = byName(synthesize(resultOf(doc)), "Certificate", "meshgate-svid-orders")!;
    expect([cert.spec.duration, cert.spec.renewBefore]).toEqual(["1h", "5m"]);
  });

  it("takes_the_identity_mode_from_the_spec_ca_provider", async () => {
    const doc = parse(readFileSync(join(ROOT, "examples/shop/mesh.yaml"), "utf8"));
    doc.mesh.ca.provider = "cert-manager";
    const objects = synthesize(resultOf(doc));
    expect(byName(objects, "Issuer", "meshgate-ca")!.spec.ca.secretName).toBe("meshgate-ca");
  });
});

describe("options", () => {
  it("defaults_the_runtime_image_to_the_package_version", async () => {
    const version = JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8")).version;
    expect(DEFAULT_RUNTIME_IMAGE).toBe(`ghcr.io/meshgate/runtime:${version}`);
    const d = byName(synthesize(await shopResult()), "Deployment", "gateway")!;
    expect(d.spec.template.spec.containers[0].image).toBe(DEFAULT_RUNTIME_IMAGE);
    const custom = synthesize(await shopResult(), { runtimeImage: "registry.example/meshgate:9.9.9" });
    expect(byName(custom, "Deployment", "orders")!.spec.template.spec.initContainers[0].image).toBe(
      "registry.example/meshgate:9.9.9",
    );
  });

  it.each([
    [
      "unpinned_runtime_image",
      { runtimeImage: "ghcr.io/meshgate/runtime:latest" },
      /runtimeImage.*not pinned/,
    ],
    ["untagged_runtime_image", { runtimeImage: "ghcr.io/meshgate/runtime" }, /runtimeImage.*not pinned/],
    ["observability_namespace_equal_to_the_mesh", { observabilityNamespace: "shop" }, /own namespace/],
    ["invalid_observability_namespace", { observabilityNamespace: "Not_A_Name" }, /observabilityNamespace/],
    ["invalid_ca_secret", { identities: { mode: "cert-manager", caSecretName: "A B" } }, /caSecretName/],
  ] as [string, ChartOptions, RegExp][])("rejects_%s", async (_claim, opts, message) => {
    const result = await shopResult();
    expect(() => synthesize(result, opts)).toThrow(ChartInputError);
    expect(() => synthesize(result, opts)).toThrow(message);
  });

  it("follows_the_spec_metrics_backend_by_default", async () => {
    const doc = parse(readFileSync(join(ROOT, "examples/shop/mesh.yaml"), "utf8"));
    doc.observability.metrics.backend = "prometheus-operator";
    const kinds = new Set(synthesize(resultOf(doc)).map((o) => o.kind));
    expect(kinds.has("ServiceMonitor") && kinds.has("PrometheusRule")).toBe(true);
    doc.observability.metrics.backend = "none";
    const none = synthesize(resultOf(doc));
    expect(none.some((o) => o.kind === "ServiceMonitor" || o.metadata.name === "prometheus")).toBe(false);
  });
});

describe("meshgate synth", () => {
  const run = async (args: string[]) => {
    const out: string[] = [];
    const err: string[] = [];
    const code = await main(args, { out: (t) => out.push(t), err: (t) => err.push(t) });
    return { code, out: out.join("\n"), err: err.join("\n") };
  };

  it("writes_one_file_per_object_and_a_kustomization_stable_across_runs", async () => {
    const a = tempDir();
    const b = tempDir();
    const r = await run(["synth", join(ROOT, "examples/shop/mesh.yaml"), "--out", a]);
    expect(r.code).toBe(0);
    await run(["synth", join(ROOT, "examples/shop/mesh.yaml"), "--out", b]);
    const files = readdirSync(a).sort();
    expect(readdirSync(b).sort()).toEqual(files);
    for (const f of files) expect(readFileSync(join(b, f), "utf8")).toBe(readFileSync(join(a, f), "utf8"));
    const kustomization = parse(readFileSync(join(a, "kustomization.yaml"), "utf8"));
    expect(kustomization.kind).toBe("Kustomization");
    expect([...kustomization.resources].sort()).toEqual(files.filter((f) => f !== "kustomization.yaml"));
    for (const f of kustomization.resources) {
      const docs = parseAllDocuments(readFileSync(join(a, f), "utf8"));
      expect(docs.length).toBe(1);
      const o = docs[0]!.toJS() as Json;
      expect(f).toBe(`${o.kind}-${o.metadata.name}.yaml`.toLowerCase());
    }
    expect(r.out).toContain(`wrote ${files.length} files`);
  });

  it("removes_only_its_own_stale_files", async () => {
    const dir = tempDir();
    await run(["synth", join(ROOT, "examples/shop/mesh.yaml"), "--out", dir]);
    const stale = "deployment-retired.yaml";
    writeFileSync(join(dir, stale), readFileSync(join(dir, "deployment-orders.yaml")));
    writeFileSync(join(dir, "mine.yaml"), "kind: ConfigMap\n");
    const r = await run(["synth", join(ROOT, "examples/shop/mesh.yaml"), "--out", dir]);
    expect(r.out).toContain(`removed ${stale}`);
    expect(existsSync(join(dir, stale))).toBe(false);
    expect(existsSync(join(dir, "mine.yaml"))).toBe(true);
  });

  it.each([
    [["--observability", "operator"], "servicemonitor-meshgate-shop-sidecar.yaml"],
    [["--identities", "cert-manager", "--ca-secret", "shop-ca"], "certificate-meshgate-svid-orders.yaml"],
  ])("applies_options_%#", async (args, file) => {
    const dir = tempDir();
    const r = await run(["synth", join(ROOT, "examples/shop/mesh.yaml"), "--out", dir, ...args]);
    expect(r.code).toBe(0);
    expect(existsSync(join(dir, file))).toBe(true);
  });

  it.each([
    [["--target", "aws"], /expected one of kubernetes/],
    [["--observability", "grafana"], /expected one of bundled, operator, none/],
    [["--ca-secret", "x"], /--ca-secret goes with --identities cert-manager/],
    [["--runtime-image", "x:latest"], /not pinned/],
  ])("refuses_bad_arguments_with_exit_2_%#", async (args, message) => {
    const r = await run(["synth", join(ROOT, "examples/shop/mesh.yaml"), "--out", tempDir(), ...args]);
    expect(r.code).toBe(2);
    expect(r.err).toMatch(message);
  });

  // A Secret's manifest holds the Redis password: owner-only, also when an earlier synth left it wider.
  it.each([
    ["writes_a_secret_manifest_readable_by_its_owner_only", null],
    ["narrows_an_earlier_world_readable_secret_manifest_to_its_owner", 0o644],
  ])("%s", async (_claim, earlier) => {
    const dir = tempDir();
    const spec = join(dir, "mesh.yaml");
    writeFileSync(
      spec,
      readFileSync(join(ROOT, "examples/shop/mesh.yaml"), "utf8").replace(
        /rateLimitStore:[\s\S]*?url: [^\n]*/,
        (m) => m.replace(/url: [^\n]*/, "url: redis://:pw-9f2@redis.shop.svc.cluster.local:6379"),
      ),
    );
    const out = join(dir, "out");
    const file = join(out, "secret-meshgate-config-gateway.yaml");
    if (earlier !== null) {
      mkdirSync(out);
      writeFileSync(
        file,
        "# Generated by meshgate synth from the mesh spec: edit the spec, not this file.\n",
        {
          mode: earlier,
        },
      );
    }
    const r = await run(["synth", spec, "--out", out]);
    expect(r.code).toBe(0);
    expect(readFileSync(file, "utf8")).toContain("pw-9f2");
    expect(statSync(file).mode & 0o777).toBe(0o600);
  });

  it("exits_1_on_an_invalid_spec_and_writes_nothing", async () => {
    const dir = tempDir();
    const spec = join(dir, "bad.yaml");
    writeFileSync(
      spec,
      "name: shop\ntrustDomain: shop.example\nservices: { a: { image: x:latest, port: 80 } }\n",
    );
    const out = join(dir, "out");
    const r = await run(["synth", spec, "--out", out]);
    expect(r.code).toBe(1);
    expect(existsSync(out)).toBe(false);
  });
});
