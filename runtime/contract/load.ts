import { canonicalJson, deepFreeze, sha256Hex } from "./canonical.ts";
import { RuntimeConfigError } from "./errors.ts";
import {
  RUNTIME_CONFIG_VERSION,
  RuntimeConfig,
  type GatewayRuntimeConfig,
  type SidecarRuntimeConfig,
} from "./schema.ts";

type Unsealed<T> = Omit<T, "hash">;

/** Computes the content hash of a config (everything but `hash` itself). */
export function runtimeConfigHash(config: Unsealed<RuntimeConfig> | RuntimeConfig): string {
  const { hash: _ignored, ...rest } = config as RuntimeConfig;
  return `sha256:${sha256Hex(canonicalJson(rest))}`;
}

/** Adds the content hash, so a proxy can tell a changed config from a re-written one. */
export function sealRuntimeConfig<T extends RuntimeConfig>(config: Unsealed<T>): T {
  return { ...config, hash: runtimeConfigHash(config) } as T;
}

/**
 * Parses and validates a RuntimeConfig once, at load: the whole file is checked (schema, version, hash)
 * and then frozen, so request handling never re-validates. Any problem rejects the whole config with a
 * coded error; callers keep serving their previous config.
 */
export function loadRuntimeConfig(text: string, expectKind?: "gateway"): GatewayRuntimeConfig;
export function loadRuntimeConfig(text: string, expectKind?: "sidecar"): SidecarRuntimeConfig;
export function loadRuntimeConfig(text: string, expectKind?: RuntimeConfig["kind"]): RuntimeConfig;
export function loadRuntimeConfig(text: string, expectKind?: RuntimeConfig["kind"]): RuntimeConfig {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    throw new RuntimeConfigError("E_RT_CONFIG_JSON", `not valid JSON: ${(err as Error).message}`);
  }
  return validateRuntimeConfig(raw, expectKind);
}

export function validateRuntimeConfig(raw: unknown, expectKind?: RuntimeConfig["kind"]): RuntimeConfig {
  const version = (raw as { version?: unknown } | null)?.version;
  if (version !== RUNTIME_CONFIG_VERSION) {
    throw new RuntimeConfigError(
      "E_RT_CONFIG_VERSION",
      `version ${JSON.stringify(version)} is not supported (this runtime reads version ${RUNTIME_CONFIG_VERSION}); regenerate the config with the matching meshgate`,
      "version",
    );
  }
  const parsed = RuntimeConfig.safeParse(raw);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    const path = issue.path
      .map((p) => (typeof p === "number" ? `[${p}]` : `.${String(p)}`))
      .join("")
      .replace(/^\./, "");
    const more =
      parsed.error.issues.length > 1 ? ` (and ${parsed.error.issues.length - 1} more problems)` : "";
    throw new RuntimeConfigError("E_RT_CONFIG_INVALID", `${issue.message}${more}`, path || undefined);
  }
  const config = parsed.data;
  if (expectKind && config.kind !== expectKind) {
    throw new RuntimeConfigError(
      "E_RT_CONFIG_KIND",
      `this is a ${config.kind} config, but a ${expectKind} was started with it; pass the ${expectKind}'s file`,
      "kind",
    );
  }
  const actual = runtimeConfigHash(config);
  if (actual !== config.hash) {
    throw new RuntimeConfigError(
      "E_RT_CONFIG_HASH",
      `content hash is ${actual} but the file says ${config.hash}; do not edit generated configs by hand, regenerate them`,
      "hash",
    );
  }
  return deepFreeze(config);
}
