export * from "./schema.ts";
export * from "./errors.ts";
export { loadRuntimeConfig, validateRuntimeConfig, sealRuntimeConfig, runtimeConfigHash } from "./load.ts";
export { canonicalJson, deepFreeze } from "./canonical.ts";
export { SIDECAR_NODE_FLAGS } from "./node-flags.ts";
