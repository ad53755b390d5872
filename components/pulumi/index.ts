/**
 * meshgate's Pulumi components: `MeshCa` (the mesh CA with @pulumi/tls), `Platform` (spec → translate →
 * CA → the Kubernetes chart as Pulumi resources), and its two layers `Mesh` and `Gateway`.
 * `import { Platform, Gateway, Mesh, MeshCa } from "meshgate"`.
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
export { Platform, preparePlatform, loadPlatformSpec, SPEC_OUTPUT } from "./platform.ts";
export { Mesh, Gateway, prepareGateway } from "./layers.ts";
export type { MeshArgs, GatewayArgs } from "./layers.ts";
export { childName, tierOf, isGatewayObject, resolveDeferred, rollOnDeferred } from "./register.ts";
export type { PlatformArgs, PreparedPlatform } from "./platform.ts";
export {
  RuntimeImage,
  runtimeImageArgErrors,
  packageVersion,
  REPO_ROOT,
  RUNTIME_DOCKERFILE,
} from "./image.ts";
export type { RuntimeImageArgs } from "./image.ts";
