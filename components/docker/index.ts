/**
 * The Docker target: `planDocker(translate(spec))` (pure: every container, its image, network, ports and
 * files) and `DockerPlatform` (the plan as @pulumi/docker resources, with MeshCa and RuntimeImage).
 */
export {
  planDocker,
  dockerConfig,
  readyCheck,
  STATIC_DIR,
  DOCKER_LABELS,
  DOCKER_DISCOVERY_TEMPLATE,
  DOCKER_FILES_DIR,
  PROMETHEUS_IMAGE,
  RESTART_POLICY,
} from "./plan.ts";
export type {
  DockerPlan,
  DockerPlanOptions,
  DockerPlanError,
  DockerPlanResult,
  PlannedContainer as DockerPlannedContainer,
  PlannedFile as DockerPlannedFile,
  PlannedPort as DockerPlannedPort,
  FileSource as DockerFileSource,
  StaticFile as DockerStaticFile,
  ContainerRole as DockerContainerRole,
} from "./plan.ts";
export { DockerPlatform, prepareDocker, containerArgs, listStaticFiles } from "./platform.ts";
export type { DockerPlatformArgs } from "./platform.ts";
