export * from "./schema.ts";
export * from "./errors.ts";
export { loadRuntimeConfig, validateRuntimeConfig, sealRuntimeConfig, runtimeConfigHash } from "./load.ts";
export { canonicalJson, deepFreeze } from "./canonical.ts";
