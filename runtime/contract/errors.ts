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
  E_RT_RELOAD_RESTART_REQUIRED:
    "a reload changes the proxy's admin port, which it binds only when it starts; restart the proxy to apply it — the previous config keeps serving. (Everything else is applied by a reload: listeners added, removed, moved or changed on their port — protocol, TLS, PROXY protocol, limits, the sidecar's mtls mode — and the identity.)",
  E_RT_RELOAD_ABORTED:
    "a gateway worker prepared a new config but the primary aborted it, because another worker refused it (or did not answer in time): every worker keeps the previous config",
  E_RT_IDENTITY_FILE:
    "an identity file (svid.certFile, keyFile, bundleFile) is missing or unreadable; the proxy keeps its previous identity",
  E_RT_IDENTITY_MISMATCH:
    "the SVID in svid.certFile names another SPIFFE ID than the config's `identity`; the proxy refuses to serve as someone else",
  E_RT_IDENTITY_UNAVAILABLE:
    "an mTLS connection was needed but no valid identity is loaded yet (or it expired)",
  E_RT_CLIENT_CERT_INVALID:
    "a client certificate for TLS the proxy originates (an external's clientCertificate) cannot be read, holds no certificate, is not for client authentication, or its key is not the certificate's: a config naming it is rejected whole; a rotated pair that fails so is refused and the previous one keeps serving",
  E_RT_EGRESS_ADDRESS_REFUSED:
    "an external destination's DNS name resolved only to loopback, link-local (cloud metadata) or unspecified addresses, which the sidecar does not connect to by name (declare the IP address if it is meant)",
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
