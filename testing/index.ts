/** meshgate/testing: helpers for tests and benchmarks (synthetic specs). */
export * from "./generate.ts";
export { plaintextStatic, type LocalEndpoints } from "./static.ts";
export {
  installMatchers,
  loadMesh,
  meshOf,
  meshgateMatchers,
  type LoadedMesh,
  type MeshExpectation,
} from "./matchers.ts";
