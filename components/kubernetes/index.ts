/**
 * meshgate on Kubernetes: the cdk8s chart of a translated mesh (the only module that imports cdk8s).
 *
 * ```ts
 * const objects = synthesize(translate(spec));            // plain objects, sorted, frozen
 * new MeshChart(app, "shop", translate(spec), { observability: "operator" }); // the same, for cdk8s users
 * ```
 *
 * See docs/kubernetes.md for the objects, labels, options, identities (caller Secrets or
 * cert-manager), the NetworkPolicy derivation and the observability backends.
 */
export { MeshChart, compareObjects, synthesize } from "./chart.ts";
export { manifestFiles, manifestNames, writeManifests, type ManifestFile } from "./files.ts";
export {
  ANNOTATIONS,
  ChartInputError,
  contentHash,
  DEFAULT_CA_SECRET,
  DEFAULT_RUNTIME_IMAGE,
  IDENTITY_SECRET_KEYS,
  IMAGES,
  LABELS,
  PATHS,
  type ChartOptions,
  type KubeObject,
} from "./model.ts";
export { BACKEND_RESOURCES, BACKEND_STORAGE } from "./observability.ts";
export {
  APP_CONTAINER,
  GATEWAY_CONTAINER,
  PROXY_RESOURCES,
  SIDECAR_CONTAINER,
  secretNames,
} from "./workloads.ts";
