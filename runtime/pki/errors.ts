/**
 * Error catalog of the PKI (E_RT_PKI_*): the SVID verifier's reason codes, and the errors of issuance,
 * trust bundles, CA files and the rotation planner. Codes are stable: sidecars, dashboards and runbooks
 * match on them. The README's error table is generated from this catalog (`npm run schema`).
 */
export const PkiErrorCatalog = {
  // ── the peer's chain as presented ──
  E_RT_PKI_NO_CERTIFICATE: "the peer presented no certificate",
  E_RT_PKI_MALFORMED_CERTIFICATE: "a presented certificate is not valid DER X.509 (or repeats an extension)",
  E_RT_PKI_CHAIN_TOO_LONG: "the peer presented more certificates than a mesh chain can hold",
  // ── the SPIFFE ID in the leaf's URI SAN ──
  E_RT_PKI_LEAF_IS_CA: "the peer's certificate is a CA certificate (basicConstraints cA=true), not an SVID",
  E_RT_PKI_URI_SAN_MISSING: "the leaf has no URI SAN (an X.509-SVID carries exactly one SPIFFE ID)",
  E_RT_PKI_URI_SAN_MULTIPLE: "the leaf has more than one URI SAN (an X.509-SVID carries exactly one)",
  E_RT_PKI_ID_TOO_LONG: "the SPIFFE ID is longer than 2048 bytes",
  E_RT_PKI_ID_SCHEME: "the URI SAN's scheme is not `spiffe://`",
  E_RT_PKI_ID_USERINFO: "the SPIFFE ID has userinfo (`user@`) before the trust domain",
  E_RT_PKI_ID_PORT: "the SPIFFE ID has a port after the trust domain",
  E_RT_PKI_ID_TRUST_DOMAIN_MISSING: "the SPIFFE ID has an empty trust domain",
  E_RT_PKI_ID_TRUST_DOMAIN_CHARS:
    "the trust domain has a character outside [a-z0-9._-] (uppercase and percent-encoding included)",
  E_RT_PKI_ID_TRUST_DOMAIN_TOO_LONG: "the trust domain is longer than 255 bytes",
  E_RT_PKI_ID_QUERY: "the SPIFFE ID has a query (`?`)",
  E_RT_PKI_ID_FRAGMENT: "the SPIFFE ID has a fragment (`#`)",
  E_RT_PKI_ID_EMPTY_SEGMENT: "the SPIFFE ID path has an empty segment (`//` or a trailing `/`)",
  E_RT_PKI_ID_DOT_SEGMENT: "the SPIFFE ID path has a `.` or `..` segment",
  E_RT_PKI_ID_PERCENT_ENCODED: "the SPIFFE ID path is percent-encoded (`%`), which SPIFFE forbids",
  E_RT_PKI_ID_PATH_CHARS: "a SPIFFE ID path segment has a character outside [A-Za-z0-9._-]",
  E_RT_PKI_ID_ROOT_PATH:
    "the leaf's SPIFFE ID has no path (`spiffe://td` names a trust domain, not a workload)",
  // ── the leaf's key usage and extensions ──
  E_RT_PKI_KEY_USAGE_MISSING: "the leaf has no key usage extension",
  E_RT_PKI_KEY_USAGE_NOT_CRITICAL: "the leaf's key usage extension is not marked critical",
  E_RT_PKI_KEY_USAGE_NO_DIGITAL_SIGNATURE: "the leaf's key usage lacks digitalSignature",
  E_RT_PKI_KEY_USAGE_CERT_SIGN: "the leaf's key usage has keyCertSign or cRLSign (a leaf must not sign)",
  E_RT_PKI_EKU_MISMATCH: "the leaf's extended key usage lacks serverAuth or clientAuth",
  E_RT_PKI_CRITICAL_EXTENSION_UNKNOWN:
    "a certificate has a critical extension this verifier does not process",
  // ── the chain against the trust bundle ──
  E_RT_PKI_UNKNOWN_TRUST_DOMAIN: "no trust bundle is configured for the SPIFFE ID's trust domain",
  E_RT_PKI_NOT_YET_VALID: "a certificate of the chain is not valid yet (notBefore in the future)",
  E_RT_PKI_EXPIRED: "a certificate of the chain has expired (notAfter in the past)",
  E_RT_PKI_UNTRUSTED_ISSUER:
    "no issuer of a certificate was found among the presented intermediates and the bundle's roots",
  E_RT_PKI_BAD_SIGNATURE: "a certificate's signature does not verify with its issuer's key",
  E_RT_PKI_ISSUER_NOT_CA: "an issuing certificate is not a CA (cA=true with keyCertSign)",
  E_RT_PKI_PATH_LENGTH: "the chain violates an issuer's pathLenConstraint",
  E_RT_PKI_UNEXPECTED_PEER: "the peer's SPIFFE ID is valid but not the one (or one of those) expected",
  // ── issuance, keys, bundles, files ──
  E_RT_PKI_INVALID_ID: "a SPIFFE ID or trust domain given to the issuer is not valid (reason in the message)",
  E_RT_PKI_PEM: "the input is not a PEM/DER certificate or PKCS#8 private key of the expected kind",
  E_RT_PKI_KEY_MISMATCH: "the private key does not belong to the certificate",
  E_RT_PKI_LIFETIME:
    "the requested lifetime is not positive, or nothing of it is left inside the issuer's validity",
  E_RT_PKI_NOT_A_CA: "a certificate used as issuer or bundle root is not a (self-signed, for roots) CA",
  E_RT_PKI_TRUST_DOMAIN_MISMATCH:
    "the identity or root belongs to another trust domain than the CA or bundle",
  E_RT_PKI_FILE: "a CA or SVID file is missing or unreadable, or writing would overwrite an existing key",
  // ── staged rotation ──
  E_RT_PKI_ROTATION_ORDER:
    "the step comes too early in the plan (its new root is not in the trust bundle yet)",
  E_RT_PKI_ROTATION_NOT_REISSUED:
    "dropping the root would leave identities whose only leaves chain to it (reissue them first)",
  E_RT_PKI_ROTATION_WAIT:
    "a leaf chaining to the root is still live (notAfter + clock skew not yet passed): wait",
  E_RT_PKI_ROTATION_LAST_ROOT: "the step would leave the trust bundle without any root",
} as const;

export type PkiErrorCode = keyof typeof PkiErrorCatalog;

/** A PKI error with a stable code (thrown by issuance, bundle and file functions; the verifier returns values). */
export class PkiError extends Error {
  readonly code: PkiErrorCode;
  constructor(code: PkiErrorCode, message: string) {
    super(message);
    this.name = "PkiError";
    this.code = code;
  }
}
