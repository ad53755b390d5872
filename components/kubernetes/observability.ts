/**
 * The observability backends on Kubernetes, from the generators of components/observability:
 *
 * - "bundled" (own namespace): Prometheus (the generated scrape configuration in its `kubernetes` mode —
 *   pod discovery in the mesh namespace through a Role there —, the generated rules, retention by time
 *   and size, a PersistentVolumeClaim), Grafana (provisioned datasources and dashboards, anonymous
 *   read-only), an OpenTelemetry Collector receiving the proxies' OTLP/HTTP and exporting to the trace
 *   store deployed alongside (Tempo, or Jaeger).
 * - "operator": ServiceMonitors (one per proxy kind, relabelled to the conventions' labels), a
 *   PrometheusRule with the generated rules, and the dashboards as ConfigMaps labelled for Grafana's
 *   dashboard sidecar (`grafana_dashboard: "1"`).
 *
 * Every image is pinned by tag; every container has resources and the restricted security context. Pure.
 */
import type { Container, PodSpec, Volume } from "kubernetes-types/core/v1.js";
import {
  grafanaDashboardProvider,
  grafanaDashboards,
  grafanaDatasources,
  type GeneratedDashboard,
} from "../observability/grafana.ts";
import { toYaml } from "../observability/index.ts";
import { promDuration } from "../observability/promql.ts";
import { prometheusRules } from "../observability/rules.ts";
import { KUBERNETES_SCRAPE_CONTRACT, prometheusConfig, prometheusFlags } from "../observability/scrape.ts";
import { observabilityPolicies } from "./network.ts";
import {
  ANNOTATIONS,
  BACKEND_PORTS,
  IMAGES,
  LABELS,
  NAMES,
  backendSelector,
  containerSecurity,
  contentHash,
  meta,
  podSecurity,
  type KubeObject,
  type Resolved,
} from "./model.ts";
import { gatewayAdminService, namespaceObject } from "./workloads.ts";

/** Storage and retention of the bundled backends. */
export const BACKEND_STORAGE = {
  prometheusVolume: "20Gi",
  /** Prometheus deletes the oldest blocks past this size, before the volume fills up. */
  prometheusRetentionSize: "18GB",
  tempoVolume: "10Gi",
  /** Traces are kept this long (the spec's retention is the metrics'). */
  traceRetention: "72h",
} as const;

/** Resources of the bundled backends. */
export const BACKEND_RESOURCES = {
  prometheus: { requests: { cpu: "250m", memory: "1Gi" }, limits: { memory: "2Gi" } },
  grafana: { requests: { cpu: "100m", memory: "256Mi" }, limits: { memory: "512Mi" } },
  otelCollector: { requests: { cpu: "100m", memory: "256Mi" }, limits: { memory: "512Mi" } },
  tempo: { requests: { cpu: "250m", memory: "512Mi" }, limits: { memory: "1Gi" } },
  jaeger: { requests: { cpu: "250m", memory: "512Mi" }, limits: { memory: "1Gi" } },
} as const;

/** The users the backends' images run as. */
const UIDS = { prometheus: 65534, grafana: 472, otelCollector: 10001, tempo: 10001, jaeger: 10001 } as const;

const PROM = {
  configDir: "/etc/prometheus/config",
  rulesDir: "/etc/prometheus/rules",
  dataDir: "/prometheus",
} as const;

export function observabilityObjects(r: Resolved): KubeObject[] {
  if (r.observability === "none") return [];
  if (r.observability === "operator") return operatorObjects(r);
  return bundledObjects(r);
}

function rulesFile(r: Resolved): { name: string; content: string; groups: unknown } {
  const rules = prometheusRules(r.infra);
  return {
    name: `meshgate-${r.ns}.rules.yml`,
    content: toYaml({ groups: rules.groups }),
    groups: rules.groups,
  };
}

// ───────────── operator ─────────────

function operatorObjects(r: Resolved): KubeObject[] {
  const out: KubeObject[] = [];
  const interval = promDuration(r.infra.observability.metrics.scrapeIntervalMs);
  const podLabel = (l: string) => `__meta_kubernetes_pod_label_${l.replace(/[^a-zA-Z0-9_]/g, "_")}`;
  const gateway = r.infra.workloads.find((w) => w.kind === "gateway");
  if (gateway) out.push(gatewayAdminService(r, gateway));
  for (const proxy of ["gateway", "sidecar"] as const) {
    if (!r.infra.workloads.some((w) => (w.kind === "gateway") === (proxy === "gateway"))) continue;
    out.push({
      apiVersion: "monitoring.coreos.com/v1",
      kind: "ServiceMonitor",
      metadata: meta(r, `meshgate-${r.ns}-${proxy}`, r.ns, "observability", { [LABELS.mesh]: r.mesh }),
      spec: {
        selector: { matchLabels: { [LABELS.mesh]: r.mesh, [LABELS.proxy]: proxy } },
        namespaceSelector: { matchNames: [r.ns] },
        endpoints: [
          {
            port: KUBERNETES_SCRAPE_CONTRACT.adminPortName,
            path: "/metrics",
            scheme: "http",
            interval,
            honorLabels: true,
            // The conventions' target labels (as the bundled scrape configuration sets them).
            relabelings: [
              {
                sourceLabels: [podLabel(KUBERNETES_SCRAPE_CONTRACT.workloadLabel)],
                targetLabel: "service",
                action: "replace",
              },
              { targetLabel: "proxy", replacement: proxy, action: "replace" },
            ],
          },
        ],
      },
    });
  }
  const rules = rulesFile(r);
  out.push({
    apiVersion: "monitoring.coreos.com/v1",
    kind: "PrometheusRule",
    metadata: meta(r, `meshgate-${r.ns}`, r.ns, "observability", { [LABELS.mesh]: r.mesh }),
    spec: { groups: rules.groups },
  });
  if (r.infra.observability.grafana.enabled)
    for (const d of grafanaDashboards(r.infra))
      out.push({
        apiVersion: "v1",
        kind: "ConfigMap",
        metadata: meta(r, `meshgate-dashboard-${d.dashboard.uid}`, r.ns, "observability", {
          [LABELS.mesh]: r.mesh,
          grafana_dashboard: "1",
        }),
        data: { [d.file]: `${JSON.stringify(d.dashboard, null, 2)}\n` },
      });
  return out;
}

// ───────────── bundled ─────────────

function serviceAccount(
  r: Resolved,
  name: string,
  automount: boolean,
  annotations?: Readonly<Record<string, string>> | null,
): KubeObject {
  return {
    apiVersion: "v1",
    kind: "ServiceAccount",
    metadata: meta(
      r,
      name,
      r.obsNs,
      "observability",
      backendSelector(r, name),
      annotations ? { ...annotations } : undefined,
    ),
    automountServiceAccountToken: automount,
  };
}

function configMap(r: Resolved, name: string, data: Record<string, string>, labels = {}): KubeObject {
  return {
    apiVersion: "v1",
    kind: "ConfigMap",
    metadata: meta(r, name, r.obsNs, "observability", labels),
    data,
  };
}

function pvc(r: Resolved, name: string, size: string): KubeObject {
  return {
    apiVersion: "v1",
    kind: "PersistentVolumeClaim",
    metadata: meta(r, name, r.obsNs, "observability"),
    spec: { accessModes: ["ReadWriteOnce"], resources: { requests: { storage: size } } },
  };
}

function service(r: Resolved, name: string, app: string, ports: [string, number][]): KubeObject {
  return {
    apiVersion: "v1",
    kind: "Service",
    metadata: meta(r, name, r.obsNs, "observability", backendSelector(r, app)),
    spec: {
      type: "ClusterIP",
      selector: backendSelector(r, app),
      ports: ports.map(([n, port]) => ({ name: n, port, targetPort: n, protocol: "TCP" })),
    },
  };
}

/** One replica (single-writer storage), replaced rather than rolled. */
function deployment(
  r: Resolved,
  app: string,
  hash: string,
  uid: number,
  container: Container,
  volumes: Volume[],
  automount: boolean,
): KubeObject {
  const selector = backendSelector(r, app);
  const spec: PodSpec = {
    serviceAccountName: app,
    automountServiceAccountToken: automount,
    enableServiceLinks: false,
    securityContext: { ...podSecurity(uid), runAsUser: uid, runAsGroup: uid },
    containers: [{ ...container, securityContext: containerSecurity(uid) }],
    volumes,
  };
  return {
    apiVersion: "apps/v1",
    kind: "Deployment",
    metadata: meta(r, app, r.obsNs, "observability", selector),
    spec: {
      replicas: 1,
      revisionHistoryLimit: 3,
      strategy: { type: "Recreate" },
      selector: { matchLabels: selector },
      template: {
        metadata: { labels: selector, annotations: { [ANNOTATIONS.configHash]: hash } },
        spec,
      },
    },
  };
}

const httpProbes = (ready: string, live: string, port: string) => ({
  readinessProbe: { httpGet: { path: ready, port }, periodSeconds: 10, timeoutSeconds: 3 },
  livenessProbe: {
    httpGet: { path: live, port },
    periodSeconds: 20,
    timeoutSeconds: 3,
    failureThreshold: 6,
  },
});

function prometheusObjects(r: Resolved): KubeObject[] {
  const rules = rulesFile(r);
  const scrape = prometheusConfig(r.infra, {
    mode: { kind: "kubernetes" },
    ruleFiles: [`${PROM.rulesDir}/${rules.name}`],
  });
  const remote = r.prometheusRemoteWrite;
  // Remote write (e.g. to Amazon Managed Prometheus, signed with SigV4 by the pod's IRSA role).
  const config = toYaml(
    remote
      ? {
          ...scrape,
          remote_write: [
            { url: remote.url, ...(remote.sigv4Region ? { sigv4: { region: remote.sigv4Region } } : {}) },
          ],
        }
      : scrape,
  );
  const discovery = { [LABELS.mesh]: r.mesh };
  return [
    serviceAccount(r, "prometheus", true, r.prometheusServiceAccountAnnotations),
    // Pod discovery in the mesh namespace only: a Role there, bound to Prometheus' ServiceAccount.
    {
      apiVersion: "rbac.authorization.k8s.io/v1",
      kind: "Role",
      metadata: meta(r, NAMES.promDiscoveryRole, r.ns, "observability", discovery),
      rules: [{ apiGroups: [""], resources: ["pods"], verbs: ["get", "list", "watch"] }],
    },
    {
      apiVersion: "rbac.authorization.k8s.io/v1",
      kind: "RoleBinding",
      metadata: meta(r, NAMES.promDiscoveryRole, r.ns, "observability", discovery),
      roleRef: { apiGroup: "rbac.authorization.k8s.io", kind: "Role", name: NAMES.promDiscoveryRole },
      subjects: [{ kind: "ServiceAccount", name: "prometheus", namespace: r.obsNs }],
    },
    configMap(r, "prometheus-config", { "prometheus.yml": config }),
    configMap(r, "prometheus-rules", { [rules.name]: rules.content }),
    pvc(r, "prometheus-data", BACKEND_STORAGE.prometheusVolume),
    deployment(
      r,
      "prometheus",
      contentHash(config, rules.content),
      UIDS.prometheus,
      {
        name: "prometheus",
        image: IMAGES.prometheus,
        args: [
          `--config.file=${PROM.configDir}/prometheus.yml`,
          `--storage.tsdb.path=${PROM.dataDir}`,
          ...prometheusFlags(r.infra),
          `--storage.tsdb.retention.size=${BACKEND_STORAGE.prometheusRetentionSize}`,
          `--web.listen-address=:${BACKEND_PORTS.prometheus}`,
        ],
        ports: [{ name: "http", containerPort: BACKEND_PORTS.prometheus, protocol: "TCP" }],
        ...httpProbes("/-/ready", "/-/healthy", "http"),
        resources: structuredClone(BACKEND_RESOURCES.prometheus),
        volumeMounts: [
          { name: "config", mountPath: PROM.configDir, readOnly: true },
          { name: "rules", mountPath: PROM.rulesDir, readOnly: true },
          { name: "data", mountPath: PROM.dataDir },
        ],
      },
      [
        { name: "config", configMap: { name: "prometheus-config" } },
        { name: "rules", configMap: { name: "prometheus-rules" } },
        { name: "data", persistentVolumeClaim: { claimName: "prometheus-data" } },
      ],
      true,
    ),
    service(r, "prometheus", "prometheus", [["http", BACKEND_PORTS.prometheus]]),
  ];
}

function grafanaObjects(r: Resolved): KubeObject[] {
  const dashboardsPath = `/etc/grafana/dashboards/meshgate-${r.ns}`;
  const options = {
    prometheusUrl: `http://prometheus:${BACKEND_PORTS.prometheus}`,
    tempoUrl: `http://tempo:${BACKEND_PORTS.tempo}`,
    jaegerUrl: `http://jaeger:${BACKEND_PORTS.jaegerQuery}`,
    dashboardsPath,
  };
  // Datasources only for the backends deployed here.
  const infra =
    r.traceStore === null
      ? {
          ...r.infra,
          observability: {
            ...r.infra.observability,
            tracing: { ...r.infra.observability.tracing, enabled: false },
          },
        }
      : r.infra;
  const datasources = toYaml(grafanaDatasources(infra, options));
  const provider = toYaml(grafanaDashboardProvider(r.infra, options));
  const dashboards: GeneratedDashboard[] = grafanaDashboards(r.infra);
  // One ConfigMap per dashboard: a ConfigMap holds at most 1 MiB.
  const dashboardMaps = dashboards.map((d) =>
    configMap(r, `grafana-dashboard-${d.dashboard.uid}`, {
      [d.file]: `${JSON.stringify(d.dashboard, null, 2)}\n`,
    }),
  );
  const provisioning = {
    [`datasources.meshgate-${r.ns}.yml`]: datasources,
    [`dashboards.meshgate-${r.ns}.yml`]: provider,
  };
  return [
    serviceAccount(r, "grafana", false),
    configMap(r, "grafana-provisioning", provisioning),
    ...dashboardMaps,
    deployment(
      r,
      "grafana",
      contentHash(datasources, provider, ...dashboardMaps.map((m) => JSON.stringify(m.data))),
      UIDS.grafana,
      {
        name: "grafana",
        image: IMAGES.grafana,
        env: [
          ["GF_PATHS_DATA", "/var/lib/grafana"],
          ["GF_PATHS_PROVISIONING", "/etc/grafana/provisioning"],
          // Read-only and anonymous: the dashboards are provisioned; nothing to log in for.
          ["GF_AUTH_ANONYMOUS_ENABLED", "true"],
          ["GF_AUTH_ANONYMOUS_ORG_ROLE", "Viewer"],
          ["GF_AUTH_DISABLE_LOGIN_FORM", "true"],
          ["GF_AUTH_BASIC_ENABLED", "false"],
          ["GF_USERS_ALLOW_SIGN_UP", "false"],
          ["GF_ANALYTICS_REPORTING_ENABLED", "false"],
          ["GF_ANALYTICS_CHECK_FOR_UPDATES", "false"],
        ].map(([name, value]) => ({ name: name!, value: value! })),
        ports: [{ name: "http", containerPort: BACKEND_PORTS.grafana, protocol: "TCP" }],
        ...httpProbes("/api/health", "/api/health", "http"),
        resources: structuredClone(BACKEND_RESOURCES.grafana),
        volumeMounts: [
          { name: "provisioning", mountPath: "/etc/grafana/provisioning", readOnly: true },
          { name: "dashboards", mountPath: dashboardsPath, readOnly: true },
          { name: "data", mountPath: "/var/lib/grafana" },
          { name: "tmp", mountPath: "/tmp" },
        ],
      },
      [
        {
          name: "provisioning",
          configMap: {
            name: "grafana-provisioning",
            items: [
              { key: `datasources.meshgate-${r.ns}.yml`, path: `datasources/meshgate-${r.ns}.yml` },
              { key: `dashboards.meshgate-${r.ns}.yml`, path: `dashboards/meshgate-${r.ns}.yml` },
            ],
          },
        },
        {
          name: "dashboards",
          projected: {
            sources: dashboardMaps.map((m) => ({ configMap: { name: m.metadata.name } })),
          },
        },
        { name: "data", emptyDir: { sizeLimit: "1Gi" } },
        { name: "tmp", emptyDir: { sizeLimit: "64Mi" } },
      ],
      false,
    ),
    service(r, "grafana", "grafana", [["http", BACKEND_PORTS.grafana]]),
  ];
}

function collectorObjects(r: Resolved, store: "tempo" | "jaeger"): KubeObject[] {
  const config = toYaml({
    receivers: {
      otlp: {
        protocols: {
          http: { endpoint: `0.0.0.0:${BACKEND_PORTS.otlpHttp}` },
          grpc: { endpoint: `0.0.0.0:${BACKEND_PORTS.otlpGrpc}` },
        },
      },
    },
    processors: {
      memory_limiter: { check_interval: "1s", limit_percentage: 80, spike_limit_percentage: 20 },
      batch: { timeout: "5s", send_batch_size: 1024 },
    },
    exporters: {
      otlp: { endpoint: `${store}:${BACKEND_PORTS.otlpGrpc}`, tls: { insecure: true } },
    },
    extensions: { health_check: { endpoint: `0.0.0.0:${BACKEND_PORTS.collectorHealth}` } },
    service: {
      extensions: ["health_check"],
      telemetry: { metrics: { level: "none" } },
      pipelines: {
        traces: { receivers: ["otlp"], processors: ["memory_limiter", "batch"], exporters: ["otlp"] },
      },
    },
  });
  return [
    serviceAccount(r, "otel-collector", false),
    configMap(r, "otel-collector-config", { "config.yaml": config }),
    deployment(
      r,
      "otel-collector",
      contentHash(config),
      UIDS.otelCollector,
      {
        name: "otel-collector",
        image: IMAGES.otelCollector,
        args: ["--config=/etc/otelcol/config.yaml"],
        ports: [
          { name: "otlp-http", containerPort: BACKEND_PORTS.otlpHttp, protocol: "TCP" },
          { name: "otlp-grpc", containerPort: BACKEND_PORTS.otlpGrpc, protocol: "TCP" },
          { name: "health", containerPort: BACKEND_PORTS.collectorHealth, protocol: "TCP" },
        ],
        ...httpProbes("/", "/", "health"),
        resources: structuredClone(BACKEND_RESOURCES.otelCollector),
        volumeMounts: [{ name: "config", mountPath: "/etc/otelcol", readOnly: true }],
      },
      [{ name: "config", configMap: { name: "otel-collector-config" } }],
      false,
    ),
    service(r, "otel-collector", "otel-collector", [
      ["otlp-http", BACKEND_PORTS.otlpHttp],
      ["otlp-grpc", BACKEND_PORTS.otlpGrpc],
    ]),
  ];
}

function tempoObjects(r: Resolved): KubeObject[] {
  const config = toYaml({
    stream_over_http_enabled: true,
    usage_report: { reporting_enabled: false },
    server: { http_listen_port: BACKEND_PORTS.tempo },
    distributor: {
      receivers: { otlp: { protocols: { grpc: { endpoint: `0.0.0.0:${BACKEND_PORTS.otlpGrpc}` } } } },
    },
    compactor: { compaction: { block_retention: BACKEND_STORAGE.traceRetention } },
    storage: {
      trace: {
        backend: "local",
        wal: { path: "/var/tempo/wal" },
        local: { path: "/var/tempo/blocks" },
      },
    },
  });
  return [
    serviceAccount(r, "tempo", false),
    configMap(r, "tempo-config", { "tempo.yaml": config }),
    pvc(r, "tempo-data", BACKEND_STORAGE.tempoVolume),
    deployment(
      r,
      "tempo",
      contentHash(config),
      UIDS.tempo,
      {
        name: "tempo",
        image: IMAGES.tempo,
        args: ["-config.file=/etc/tempo/tempo.yaml"],
        ports: [
          { name: "http", containerPort: BACKEND_PORTS.tempo, protocol: "TCP" },
          { name: "otlp-grpc", containerPort: BACKEND_PORTS.otlpGrpc, protocol: "TCP" },
        ],
        ...httpProbes("/ready", "/ready", "http"),
        resources: structuredClone(BACKEND_RESOURCES.tempo),
        volumeMounts: [
          { name: "config", mountPath: "/etc/tempo", readOnly: true },
          { name: "data", mountPath: "/var/tempo" },
          { name: "tmp", mountPath: "/tmp" },
        ],
      },
      [
        { name: "config", configMap: { name: "tempo-config" } },
        { name: "data", persistentVolumeClaim: { claimName: "tempo-data" } },
        { name: "tmp", emptyDir: { sizeLimit: "64Mi" } },
      ],
      false,
    ),
    service(r, "tempo", "tempo", [
      ["http", BACKEND_PORTS.tempo],
      ["otlp-grpc", BACKEND_PORTS.otlpGrpc],
    ]),
  ];
}

function jaegerObjects(r: Resolved): KubeObject[] {
  return [
    serviceAccount(r, "jaeger", false),
    deployment(
      r,
      "jaeger",
      contentHash(IMAGES.jaeger),
      UIDS.jaeger,
      {
        // The all-in-one defaults: OTLP in, in-memory storage (bounded by the memory limit), query UI.
        name: "jaeger",
        image: IMAGES.jaeger,
        ports: [
          { name: "query", containerPort: BACKEND_PORTS.jaegerQuery, protocol: "TCP" },
          { name: "otlp-grpc", containerPort: BACKEND_PORTS.otlpGrpc, protocol: "TCP" },
        ],
        ...httpProbes("/", "/", "query"),
        resources: structuredClone(BACKEND_RESOURCES.jaeger),
        volumeMounts: [{ name: "tmp", mountPath: "/tmp" }],
      },
      [{ name: "tmp", emptyDir: { sizeLimit: "64Mi" } }],
      false,
    ),
    service(r, "jaeger", "jaeger", [
      ["query", BACKEND_PORTS.jaegerQuery],
      ["otlp-grpc", BACKEND_PORTS.otlpGrpc],
    ]),
  ];
}

function bundledObjects(r: Resolved): KubeObject[] {
  const grafana = r.infra.observability.grafana.enabled;
  return [
    namespaceObject(r, r.obsNs, "observability"),
    ...prometheusObjects(r),
    ...(grafana ? grafanaObjects(r) : []),
    ...(r.traceStore ? collectorObjects(r, r.traceStore) : []),
    ...(r.traceStore === "tempo" ? tempoObjects(r) : []),
    ...(r.traceStore === "jaeger" ? jaegerObjects(r) : []),
    ...observabilityPolicies(r, grafana),
  ];
}
