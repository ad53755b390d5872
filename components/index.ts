/**
 * meshgate/components: the spec (schemas, loader, defineMesh), translate → IR, the generated observability
 * (Prometheus rules and scrape config, Grafana dashboards), and (as the target issues land) the renderers and
 * Pulumi components.
 */
export * from "./spec/index.ts";
export * from "./translate/index.ts";
/** Generated observability: `observability.observabilityFiles(infra)`, `observability.prometheusRules(infra)`, … */
export * as observability from "./observability/index.ts";
/** The Kubernetes chart: `kubernetes.synthesize(translate(spec))`, `new kubernetes.MeshChart(app, id, result)`, … */
export * as kubernetes from "./kubernetes/index.ts";
/** The Pulumi components: `Platform`, `Mesh`, `Gateway`, `MeshCa` (loads @pulumi/pulumi, @pulumi/kubernetes, @pulumi/tls). */
export * from "./pulumi/index.ts";
/** The Docker target: `planDocker(translate(spec))` and `DockerPlatform` (loads @pulumi/docker). */
export * from "./docker/index.ts";
