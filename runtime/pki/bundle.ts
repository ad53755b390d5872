/**
 * Trust bundles: the roots a peer trusts for one trust domain. A bundle holds several roots at once so
 * that a root can be rotated in stages (old + new, then new only) without a failed handshake. Bundles
 * are immutable values: `withRoot`/`withoutRoot` return new ones.
 */
import { certificatesToPem, isCa, KeyUsageBits, parseCertificates, type ParsedCertificate } from "./cert.ts";
import { PkiError } from "./errors.ts";
import { checkTrustDomain, parseSpiffeId } from "./spiffe.ts";

export class TrustBundle {
  readonly trustDomain: string;
  readonly roots: readonly ParsedCertificate[];

  /**
   * Every root must be a self-signed CA (cA=true, keyCertSign when key usage is present, a self-signature
   * that verifies) and, when it names a trust domain in a `spiffe://` URI SAN, this one.
   */
  constructor(trustDomain: string, roots: readonly ParsedCertificate[]) {
    const tdError = checkTrustDomain(trustDomain);
    if (tdError) throw new PkiError("E_RT_PKI_INVALID_ID", tdError.reason);
    const unique = new Map<string, ParsedCertificate>();
    for (const root of roots) {
      checkRoot(trustDomain, root);
      unique.set(root.fingerprint, root);
    }
    this.trustDomain = trustDomain;
    this.roots = Object.freeze([...unique.values()]);
  }

  /** A bundle from a PEM text of one or more root certificates. */
  static fromPem(trustDomain: string, pem: string): TrustBundle {
    return new TrustBundle(trustDomain, parseCertificates(pem));
  }

  /** This bundle plus `root` (the first stage of a root rotation). Adding a present root is a no-op. */
  withRoot(root: ParsedCertificate): TrustBundle {
    return new TrustBundle(this.trustDomain, [...this.roots, root]);
  }

  /** This bundle without the root of that fingerprint (the last stage of a root rotation). */
  withoutRoot(fingerprint: string): TrustBundle {
    return new TrustBundle(
      this.trustDomain,
      this.roots.filter((r) => r.fingerprint !== fingerprint),
    );
  }

  has(cert: ParsedCertificate): boolean {
    return this.hasRoot(cert.fingerprint);
  }

  /** Holds the root of that fingerprint (what a verified chain ended at: SvidSuccess.rootFingerprint). */
  hasRoot(fingerprint: string): boolean {
    return this.roots.some((r) => r.fingerprint === fingerprint);
  }

  /** The roots as one PEM text (what `ca` of a Node TLS context and `openssl -CAfile` read). */
  toPem(): string {
    return certificatesToPem(this.roots);
  }
}

function checkRoot(trustDomain: string, root: ParsedCertificate): void {
  const name = root.subject;
  if (!isCa(root))
    throw new PkiError("E_RT_PKI_NOT_A_CA", `bundle root ${name} is not a CA certificate (cA=true)`);
  if (!root.keyUsage || (root.keyUsage.flags & KeyUsageBits.keyCertSign) === 0)
    throw new PkiError("E_RT_PKI_NOT_A_CA", `bundle root ${name} lacks the keyCertSign key usage`);
  if (root.subjectName !== root.issuerName || !root.native.verify(root.publicKey))
    throw new PkiError("E_RT_PKI_NOT_A_CA", `bundle root ${name} is not self-signed`);
  for (const uri of root.uris) {
    const id = parseSpiffeId(uri);
    if (id.ok && id.trustDomain !== trustDomain)
      throw new PkiError(
        "E_RT_PKI_TRUST_DOMAIN_MISMATCH",
        `bundle root ${name} is a root of ${id.trustDomain}, not ${trustDomain}`,
      );
  }
}
