/**
 * The intermediate representation that translate() produces from a MeshSpec.
 *
 * - `InfraIR`: what to deploy (workloads, identities, network edges, observability backends, targets);
 *   the renderers (Kubernetes, AWS, Docker, local) read only this and the RuntimeConfigs.
 * - `RuntimeConfig`s: what each proxy does (defined in runtime/contract, which the data plane loads).
 *
 * Everything is plain JSON, in integer milliseconds and bytes, canonically sorted, so the same spec
 * always gives byte-identical output (the golden tests depend on it).
 */
import type { GatewayRuntimeConfig, HttpMethod, SidecarRuntimeConfig } from "../../runtime/contract/index.ts";
import type { Diagnostic } from "../spec/errors.ts";

export interface IdentityIR {
  /** Workload name (a service, or "gateway"). */
  name: string;
  spiffeId: string;
  serviceAccount: string;
  ttlMs: number;
  /** Where the workload's proxy reads its identity files, per target (translate's IDENTITY_DIRS). */
  dirs: { kubernetes: string; local: string | null };
}

export interface SidecarPortsIR {
  inbound: number;
  outbound: number;
  admin: number;
}

export interface ServiceWorkloadIR {
  kind: "service";
  name: string;
  image: string;
  appPort: number;
  protocol: "http" | "http2" | "grpc";
  replicas: number;
  serviceAccount: string;
  identity: string;
  sidecar: SidecarPortsIR;
  healthCheckPath: string | null;
  resources: { cpu: string; memory: string } | null;
  env: Record<string, string>;
  /** Kubernetes TLS Secrets the sidecar reads: client certificates of the externals it relays to. */
  tlsSecrets: string[];
  local: { command: string[]; env: Record<string, string>; cwd: string | null } | null;
}

export interface GatewayWorkloadIR {
  kind: "gateway";
  name: "gateway";
  replicas: number;
  serviceAccount: string;
  identity: string;
  listeners: { name: string; port: number; protocol: "http" | "https" }[];
  adminPort: number;
  /** Kubernetes TLS secrets the listeners read. */
  tlsSecrets: string[];
  /**
   * The OIDC providers' client secrets: the environment variable the gateway reads each from, and the
   * Kubernetes Secret (key `client-secret`) the chart fills it from — null when the spec names none.
   */
  oidcSecrets: { provider: string; env: string; secret: string | null }[];
}

export type WorkloadIR = GatewayWorkloadIR | ServiceWorkloadIR;

/**
 * A directed edge between two workloads. `allowed` edges are what the callee's authorization admits
 * (and what NetworkPolicies open); `declared` edges are the `calls` graph (plus the gateway's routes).
 */
export interface EdgeIR {
  from: string;
  to: string;
  port: number;
  declared: boolean;
  allowed: boolean;
  /** The spec locations of the allow rules that admit this edge. */
  allowedBy: string[];
}

/** A destination outside the mesh (spec `external`): what workloads may reach beyond it. */
export interface ExternalIR {
  name: string;
  /** A lower-case DNS name, an IPv4 / IPv6 address, a wildcard `*.<domain>` or a CIDR range. */
  host: string;
  port: number;
  /** `originate`: the callers' sidecars open TLS to it (the apps speak plain HTTP); `passthrough`: the apps do. */
  tls: "passthrough" | "originate";
  /**
   * The certificate the callers' sidecars present on the TLS they originate (mutual TLS): the Kubernetes
   * TLS Secret it comes from (null: files the spec names) and where the sidecars read it. Null = none.
   */
  clientCertificate: { secret: string | null; certFile: string; keyFile: string } | null;
}

/**
 * A workload's edge to a destination outside the mesh. `allowed` edges are what the external's allow
 * rules admit (the caller's sidecar relays them, the NetworkPolicies open them); `declared` edges are the
 * caller's `calls`. Only pairs that are one or the other are listed.
 */
export interface EgressIR {
  from: string;
  external: string;
  host: string;
  port: number;
  declared: boolean;
  allowed: boolean;
  /** The spec locations of the allow rules that admit this edge. */
  allowedBy: string[];
}

export interface SloIR {
  name: string;
  kind: "route" | "service";
  target: string;
  availability: number;
  latencyP99Ms: number | null;
  windowMs: number;
}

export interface ObservabilityIR {
  metrics: {
    enabled: boolean;
    backend: "prometheus" | "prometheus-operator" | "none";
    scrapeIntervalMs: number;
    retentionMs: number;
    /** Every proxy's metrics endpoint. */
    targets: { workload: string; kind: "gateway" | "sidecar"; port: number; path: string }[];
  };
  tracing: {
    enabled: boolean;
    sampling: number;
    backend: "tempo" | "jaeger" | "none";
    otlpEndpoint: string | null;
  };
  logs: { access: boolean; level: "debug" | "info" | "warn" | "error" };
  grafana: { enabled: boolean };
  slos: SloIR[];
}

export interface CaIR {
  provider: "meshgate" | "cert-manager";
  rootValidityMs: number;
  intermediateValidityMs: number;
  workloadTtlMs: number;
  renewBeforeMs: number;
  clockSkewMs: number;
}

/** A volume of the gateway pod (targets.kubernetes.gatewayVolumes): one source, mounted read-only. */
export interface GatewayVolumeIR {
  name: string;
  mountPath: string;
  source: { kind: "configMap" | "secret" | "persistentVolumeClaim"; name: string };
}

export interface TargetsIR {
  local: { gatewayPort: number; adminPort: number; stateDir: string } | null;
  kubernetes: {
    gatewayServiceType: "LoadBalancer" | "ClusterIP" | "NodePort";
    gatewayExternalTrafficPolicy: "Local" | "Cluster";
    /** targets.kubernetes.gatewayDrainDelay in whole seconds (rounded up): the gateway's preStop sleep. */
    gatewayDrainDelaySeconds: number;
    /** targets.kubernetes.serviceDrainDelay in whole seconds (rounded up): each service app's preStop sleep. */
    serviceDrainDelaySeconds: number;
    runtimeImage: string | null;
    /** Volumes mounted read-only into the gateway container, sorted by name. */
    gatewayVolumes: GatewayVolumeIR[];
  } | null;
  aws: {
    region: string;
    availabilityZones: number;
    cluster:
      | { kind: "existing"; name: string }
      | {
          kind: "create";
          version: string;
          instanceType: string;
          minNodes: number;
          maxNodes: number;
          /** Whether the API endpoint is public (always IAM-authenticated); it is private to the VPC too. */
          publicEndpoint: boolean;
          /** The IPv4 ranges allowed to reach the public endpoint, sorted. */
          publicAccessCidrs: string[];
        };
    managedPrometheus: boolean;
    certificateArn: string | null;
  } | null;
  docker: { network: string; gatewayPort: number } | null;
}

export interface InfraIR {
  name: string;
  namespace: string;
  trustDomain: string;
  mtls: "strict" | "permissive";
  ca: CaIR;
  workloads: WorkloadIR[];
  identities: IdentityIR[];
  edges: EdgeIR[];
  /** Destinations outside the mesh, sorted by name. */
  externals: ExternalIR[];
  /** Edges to them, sorted by from, then external. */
  egress: EgressIR[];
  observability: ObservabilityIR;
  targets: TargetsIR;
}

export interface RuntimeConfigs {
  gateway: GatewayRuntimeConfig | null;
  sidecars: SidecarRuntimeConfig[];
}

export interface TranslateResult {
  infra: InfraIR;
  runtime: RuntimeConfigs;
  diagnostics: Diagnostic[];
}

export type { HttpMethod };
