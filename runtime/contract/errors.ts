/**
 * Error catalog of the runtime layer (E_RT_*). Codes are stable: tools and runbooks match on them.
 * The README's error table is checked against this catalog by test/docs/error-catalog.test.ts.
 */
export const RuntimeErrorCatalog = {
  E_RT_CONFIG_JSON: "the RuntimeConfig file is not valid JSON",
  E_RT_CONFIG_VERSION: "the RuntimeConfig version is not one this runtime understands",
  E_RT_CONFIG_INVALID: "the RuntimeConfig does not match the contract (field named in the message)",
  E_RT_CONFIG_HASH: "the RuntimeConfig hash does not match its content (edited by hand or truncated)",
  E_RT_CONFIG_KIND:
    "the RuntimeConfig is for another proxy kind (gateway config given to a sidecar, or the reverse)",
} as const;

export type RuntimeErrorCode = keyof typeof RuntimeErrorCatalog;

/** A runtime error with a stable code; `path` names the offending field when there is one. */
export class RuntimeConfigError extends Error {
  readonly code: RuntimeErrorCode;
  readonly path: string | undefined;
  constructor(code: RuntimeErrorCode, message: string, path?: string) {
    super(path ? `${path}: ${message}` : message);
    this.name = "RuntimeConfigError";
    this.code = code;
    this.path = path;
  }
}
