import type { MeshSpecInput } from "./schema.ts";

const DEFINITION = Symbol.for("meshgate.meshDefinition");

/** A spec written in TypeScript: `export default defineMesh({...})`. */
export type MeshDefinition = MeshSpecInput & { readonly [DEFINITION]: true };

/**
 * Declares a mesh in TypeScript with full typing (editors complete every key; excess keys are compile
 * errors). Validation happens where the spec is used (`meshgate validate`, `translate`, the components),
 * so every error is reported with its path, exactly as for YAML.
 */
export function defineMesh(spec: MeshSpecInput): MeshDefinition {
  return Object.defineProperty({ ...spec }, DEFINITION, { value: true, enumerable: false }) as MeshDefinition;
}

export function isMeshDefinition(value: unknown): value is MeshDefinition {
  return (
    value !== null && typeof value === "object" && (value as Record<symbol, unknown>)[DEFINITION] === true
  );
}
