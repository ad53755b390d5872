/**
 * meshgate's Pulumi components: `MeshCa` (the mesh CA with @pulumi/tls) and `Platform` (spec → translate →
 * CA → the Kubernetes chart as Pulumi resources). `import { Platform, MeshCa } from "meshgate"`.
 */
export { MeshCa, caHours, rotationPlan, meshCaArgErrors, RotationTooEarlyError } from "./ca.ts";
export type {
  MeshCaArgs,
  MeshCaIdentity,
  MeshCaRotation,
  MeshCaRotationStage,
  MeshCaSvid,
  CaHours,
} from "./ca.ts";
export { Platform, preparePlatform, loadPlatformSpec, childName, tierOf, SPEC_OUTPUT } from "./platform.ts";
export type { PlatformArgs, PreparedPlatform } from "./platform.ts";
