/** meshgate/testing: helpers for tests and benchmarks (synthetic specs). */
export * from "./generate.ts";
export { plaintextStatic, type LocalEndpoints } from "./static.ts";
