/**
 * meshgate/components: the spec (schemas, loader, defineMesh), translate → IR, and (as the target issues
 * land) the renderers and Pulumi components.
 */
export * from "./spec/index.ts";
export * from "./translate/index.ts";
