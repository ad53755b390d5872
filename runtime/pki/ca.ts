/**
 * Issuance: root CA → intermediate (the issuer) → workload X.509-SVIDs, all ECDSA P-256 / SHA-256.
 *
 * Lifetimes: every certificate's notBefore is backdated by the clock skew allowance (peers with a slow
 * clock accept it at once). A child never outlives its issuer: notAfter is **clamped** to the issuer's
 * notAfter (the result says `clamped: true`), and notBefore is never earlier than the issuer's. Issuance
 * is refused (E_RT_PKI_LIFETIME) only when the issuer has already expired or the lifetime is not
 * positive. Clamping keeps workloads serving while an issuer nears its end; the rotation planner's
 * expiry warnings make the short leaves visible.
 */
import type { KeyObject } from "node:crypto";
import { createHash, createPrivateKey, createPublicKey, randomBytes, webcrypto } from "node:crypto";
import { inspect } from "node:util";
import {
  certificatesToPem,
  isCa,
  KeyUsageBits,
  parseCertificate,
  pemBlocks,
  toPem,
  type ParsedCertificate,
} from "./cert.ts";
import { PkiError } from "./errors.ts";
import { checkTrustDomain, parseSpiffeId, trustDomainId } from "./spiffe.ts";
import { EC_P256, x509 } from "./x509.ts";

type CryptoKey = webcrypto.CryptoKey;
type CryptoKeyPair = webcrypto.CryptoKeyPair;

/** The CA's lifetimes in milliseconds: the InfraIR's `ca` section has exactly these fields. */
export interface CaPolicy {
  rootValidityMs: number;
  intermediateValidityMs: number;
  workloadTtlMs: number;
  renewBeforeMs: number;
  clockSkewMs: number;
}

const HOUR = 3_600_000;
/** The spec's defaults (`mesh.ca` in components/spec/defaults.ts; a test keeps the two equal). */
export const DEFAULT_CA_POLICY: Readonly<CaPolicy> = Object.freeze({
  rootValidityMs: 10 * 365 * 24 * HOUR,
  intermediateValidityMs: 365 * 24 * HOUR,
  workloadTtlMs: 24 * HOUR,
  renewBeforeMs: 8 * HOUR,
  clockSkewMs: 5 * 60_000,
});

/**
 * A private key's PKCS#8 PEM that does not print itself: `String(k)`, `JSON.stringify` and
 * `console.log` show `[private key]`. Call `reveal()` where the PEM is really needed (a TLS context, a
 * file with mode 0600).
 */
export class PrivateKeyPem {
  readonly #pem: string;
  constructor(pem: string) {
    this.#pem = pem;
  }
  reveal(): string {
    return this.#pem;
  }
  toString(): string {
    return "[private key]";
  }
  toJSON(): string {
    return "[private key]";
  }
  [inspect.custom](): string {
    return "[private key]";
  }
}

/** A CA certificate with its signing key, and the certificates a leaf it issues presents after itself. */
export interface CertificateAuthority {
  readonly certificate: ParsedCertificate;
  readonly privateKey: CryptoKey;
  readonly trustDomain: string;
  /** [] for a root (peers hold it in their bundle), [intermediate] for an intermediate. */
  readonly presentedChain: readonly ParsedCertificate[];
}

/** A freshly made CA with its key as PKCS#8 PEM (to write to a 0600 file). */
export interface IssuedCa extends CertificateAuthority {
  readonly keyPem: PrivateKeyPem;
  /** True when notAfter was cut to the parent's notAfter. */
  readonly clamped: boolean;
}

/** An issued X.509-SVID. `chainPem` (leaf, then intermediates) is what a TLS endpoint presents. */
export interface IssuedSvid {
  readonly spiffeId: string;
  readonly der: Buffer;
  readonly certPem: string;
  readonly chainPem: string;
  /** The intermediates after the leaf, as DER (the verifier's input is [leaf, ...these]). */
  readonly chainDer: readonly Buffer[];
  readonly notBefore: number;
  readonly notAfter: number;
  readonly serial: string;
  readonly clamped: boolean;
  /** Absent when the caller supplied its own public key (the private key never left the workload). */
  readonly keyPem: PrivateKeyPem | null;
  readonly privateKey: CryptoKey | null;
}

export interface LifetimeOptions {
  /** Issue "as of" this time (epoch ms); default now. */
  now?: number;
  clockSkewMs?: number;
}

/** A new extractable ECDSA P-256 key pair. */
export async function generateKeyPair(): Promise<CryptoKeyPair> {
  return (await webcrypto.subtle.generateKey(EC_P256, true, ["sign", "verify"])) as CryptoKeyPair;
}

/** PKCS#8 PEM of a private key (wrapped so that it does not print). */
export async function exportPrivateKey(key: CryptoKey): Promise<PrivateKeyPem> {
  const der = await webcrypto.subtle.exportKey("pkcs8", key);
  return new PrivateKeyPem(toPem(new Uint8Array(der), "PRIVATE KEY"));
}

/**
 * Imports a PKCS#8 PEM P-256 private key, and when a certificate is given, checks that the key is the
 * certificate's (E_RT_PKI_KEY_MISMATCH). Never puts key material in an error message.
 */
export async function importPrivateKey(pem: string, certificate?: ParsedCertificate): Promise<CryptoKey> {
  const [der] = pemBlocks(pem, "PRIVATE KEY");
  if (!der) throw new PkiError("E_RT_PKI_PEM", "no PEM PRIVATE KEY (PKCS#8) block found");
  let key: KeyObject;
  try {
    key = createPrivateKey({ key: der, format: "der", type: "pkcs8" });
  } catch {
    throw new PkiError("E_RT_PKI_PEM", "the PRIVATE KEY block is not a valid PKCS#8 key");
  }
  if (key.asymmetricKeyType !== "ec" || key.asymmetricKeyDetails?.namedCurve !== "prime256v1")
    throw new PkiError("E_RT_PKI_PEM", "the private key is not an ECDSA P-256 key");
  if (certificate) {
    const spki = (k: KeyObject) => k.export({ type: "spki", format: "der" });
    if (!spki(createPublicKey(key)).equals(spki(certificate.publicKey)))
      throw new PkiError(
        "E_RT_PKI_KEY_MISMATCH",
        `the private key does not belong to the certificate ${certificate.subject}`,
      );
  }
  return key.toCryptoKey(EC_P256, true, ["sign"]);
}

/** A random positive 128-bit serial: 16 random bytes with the top bit set, DER-encoded behind a 0x00. */
export function randomSerial(): string {
  const b = randomBytes(16);
  b[0] = b[0]! | 0x80;
  return `00${b.toString("hex")}`;
}

/** 9999-12-31T23:59:59Z: the last time an X.509 validity can hold. */
const MAX_X509_TIME = Date.UTC(9999, 11, 31, 23, 59, 59);

/** The validity window of a new certificate, in whole seconds (X.509 has no milliseconds). */
export function validityWindow(
  lifetimeMs: number,
  clockSkewMs: number,
  now: number,
  issuer?: { notBefore: number; notAfter: number; subject: string },
): { notBefore: number; notAfter: number; clamped: boolean } {
  if (!Number.isFinite(lifetimeMs) || lifetimeMs <= 0)
    throw new PkiError("E_RT_PKI_LIFETIME", `the lifetime must be a positive duration, got ${lifetimeMs} ms`);
  if (!Number.isFinite(clockSkewMs) || clockSkewMs < 0)
    throw new PkiError("E_RT_PKI_LIFETIME", `the clock skew must be zero or positive, got ${clockSkewMs} ms`);
  const sec = (t: number) => Math.floor(t / 1000) * 1000;
  let notBefore = sec(now - clockSkewMs);
  let notAfter = sec(now + lifetimeMs);
  let clamped = false;
  // X.509 times are whole seconds: a lifetime under a second can round down to a certificate that has
  // already expired (or expires as it is issued).
  if (notAfter <= now)
    throw new PkiError(
      "E_RT_PKI_LIFETIME",
      `a lifetime of ${lifetimeMs} ms ends before the next whole second; X.509 validity has one-second resolution`,
    );
  // The last time an X.509 certificate can hold (RFC 5280 §4.1.2.5: GeneralizedTime has four-digit years);
  // past it the certificate cannot be encoded at all.
  if (notAfter > MAX_X509_TIME)
    throw new PkiError(
      "E_RT_PKI_LIFETIME",
      `a lifetime of ${lifetimeMs} ms ends after ${new Date(MAX_X509_TIME).toISOString()}, the last time X.509 can express; shorten it`,
    );
  if (issuer) {
    if (issuer.notAfter <= now)
      throw new PkiError(
        "E_RT_PKI_LIFETIME",
        `the issuer ${issuer.subject} expired at ${new Date(issuer.notAfter).toISOString()}; rotate it`,
      );
    if (notBefore < issuer.notBefore) notBefore = issuer.notBefore;
    if (notAfter > issuer.notAfter) {
      notAfter = issuer.notAfter;
      clamped = true;
    }
  }
  return { notBefore, notAfter, clamped };
}

/**
 * The subject key identifier of RFC 5280 §4.2.1.2 method 1 (SHA-1 of the subjectPublicKey bits), computed
 * with node:crypto from the raw EC point (@peculiar/x509's own helper takes ~1 ms).
 */
async function subjectKeyId(publicKey: CryptoKey): Promise<x509.SubjectKeyIdentifierExtension> {
  const point = new Uint8Array(await webcrypto.subtle.exportKey("raw", publicKey));
  return new x509.SubjectKeyIdentifierExtension(createHash("sha1").update(point).digest("hex"), false);
}

function caName(trustDomain: string, role: string, keyId: string): x509.JsonName {
  return [{ O: [trustDomain] }, { CN: [`meshgate ${role} CA ${keyId.slice(0, 8)}`] }];
}

const CA_KEY_USAGE = KeyUsageBits.keyCertSign | KeyUsageBits.cRLSign;

/** A self-signed root CA for a trust domain (cA=true, pathLen 1, keyCertSign+cRLSign, URI SAN spiffe://td). */
export async function createRootCa(
  options: { trustDomain: string; validityMs?: number } & LifetimeOptions,
): Promise<IssuedCa> {
  const td = options.trustDomain;
  const tdError = checkTrustDomain(td);
  if (tdError) throw new PkiError("E_RT_PKI_INVALID_ID", tdError.reason);
  const now = options.now ?? Date.now();
  const w = validityWindow(
    options.validityMs ?? DEFAULT_CA_POLICY.rootValidityMs,
    options.clockSkewMs ?? DEFAULT_CA_POLICY.clockSkewMs,
    now,
  );
  const keys = await generateKeyPair();
  const ski = await subjectKeyId(keys.publicKey);
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: randomSerial(),
    name: caName(td, "root", ski.keyId),
    notBefore: new Date(w.notBefore),
    notAfter: new Date(w.notAfter),
    keys,
    signingAlgorithm: EC_P256,
    extensions: [
      new x509.BasicConstraintsExtension(true, 1, true),
      new x509.KeyUsagesExtension(CA_KEY_USAGE, true),
      ski,
      new x509.SubjectAlternativeNameExtension([{ type: "url", value: trustDomainId(td) }]),
    ],
  });
  return {
    certificate: parseCertificate(new Uint8Array(cert.rawData)),
    privateKey: keys.privateKey,
    trustDomain: td,
    presentedChain: [],
    keyPem: await exportPrivateKey(keys.privateKey),
    clamped: false,
  };
}

/** An intermediate (issuing) CA signed by `root`: cA=true, pathLen 0; never outlives the root. */
export async function createIntermediateCa(
  root: CertificateAuthority,
  options: { validityMs?: number } & LifetimeOptions = {},
): Promise<IssuedCa> {
  const now = options.now ?? Date.now();
  const parent = root.certificate;
  const w = validityWindow(
    options.validityMs ?? DEFAULT_CA_POLICY.intermediateValidityMs,
    options.clockSkewMs ?? DEFAULT_CA_POLICY.clockSkewMs,
    now,
    parent,
  );
  const keys = await generateKeyPair();
  const ski = await subjectKeyId(keys.publicKey);
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: randomSerial(),
    subject: caName(root.trustDomain, "intermediate", ski.keyId),
    issuer: parent.cert.subjectName,
    notBefore: new Date(w.notBefore),
    notAfter: new Date(w.notAfter),
    publicKey: keys.publicKey,
    signingKey: root.privateKey,
    signingAlgorithm: EC_P256,
    extensions: [
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(CA_KEY_USAGE, true),
      ski,
      authorityKeyId(parent),
      new x509.SubjectAlternativeNameExtension([{ type: "url", value: trustDomainId(root.trustDomain) }]),
    ],
  });
  const certificate = parseCertificate(new Uint8Array(cert.rawData));
  return {
    certificate,
    privateKey: keys.privateKey,
    trustDomain: root.trustDomain,
    presentedChain: [certificate, ...root.presentedChain],
    keyPem: await exportPrivateKey(keys.privateKey),
    clamped: w.clamped,
  };
}

function authorityKeyId(parent: ParsedCertificate): x509.AuthorityKeyIdentifierExtension {
  if (!parent.subjectKeyId)
    throw new PkiError("E_RT_PKI_NOT_A_CA", `the issuer ${parent.subject} has no subject key identifier`);
  return new x509.AuthorityKeyIdentifierExtension(parent.subjectKeyId, false);
}

/**
 * Loads a CA (certificate + PKCS#8 key, both PEM) to issue from. The certificate must be a CA with
 * keyCertSign and the key must be its key; the trust domain comes from its `spiffe://<td>` URI SAN unless
 * given. `chainPem` may add the certificates above an intermediate that leaves should present (not the root).
 */
export async function loadCertificateAuthority(options: {
  certPem: string;
  keyPem: string;
  trustDomain?: string;
  chainPem?: string;
}): Promise<CertificateAuthority> {
  const certificate = parseCertificate(options.certPem);
  if (!isCa(certificate) || ((certificate.keyUsage?.flags ?? CA_KEY_USAGE) & KeyUsageBits.keyCertSign) === 0)
    throw new PkiError(
      "E_RT_PKI_NOT_A_CA",
      `${certificate.subject} is not a CA certificate (cA=true, keyCertSign)`,
    );
  const privateKey = await importPrivateKey(options.keyPem, certificate);
  const fromSan = certificate.uris.map((u) => parseSpiffeId(u)).find((r) => r.ok && r.path === "");
  const trustDomain = options.trustDomain ?? (fromSan?.ok ? fromSan.trustDomain : undefined);
  if (!trustDomain)
    throw new PkiError(
      "E_RT_PKI_INVALID_ID",
      `${certificate.subject} has no spiffe://<trust-domain> URI SAN; pass the trust domain explicitly`,
    );
  const tdError = checkTrustDomain(trustDomain);
  if (tdError) throw new PkiError("E_RT_PKI_INVALID_ID", tdError.reason);
  if (fromSan?.ok && fromSan.trustDomain !== trustDomain)
    throw new PkiError(
      "E_RT_PKI_TRUST_DOMAIN_MISMATCH",
      `${certificate.subject} is a CA for ${fromSan.trustDomain}, not ${trustDomain}`,
    );
  const selfIssued = certificate.subjectName === certificate.issuerName;
  const above = options.chainPem
    ? pemBlocks(options.chainPem, "CERTIFICATE")
        .map((der) => parseCertificate(der))
        .filter((c) => c.subjectName !== c.issuerName && c.fingerprint !== certificate.fingerprint)
    : [];
  return {
    certificate,
    privateKey,
    trustDomain,
    presentedChain: selfIssued ? [] : [certificate, ...above],
  };
}

export interface IssueOptions extends LifetimeOptions {
  /** Lifetime of the SVID; default the policy's workloadTtl (24h). */
  ttlMs?: number;
  /** The workload's own public key (its private key then never leaves it); default: a new key pair. */
  publicKey?: CryptoKey;
  /**
   * DNS SANs next to the SPIFFE ID (X.509-SVIDs may carry other SAN types), for clients that check host
   * names (curl, browsers). Verifiers of SPIFFE peers ignore them.
   */
  dnsNames?: readonly string[];
}

/**
 * Issues X.509-SVIDs from one CA (normally the intermediate) — the API the sidecar calls at run time.
 * Everything that does not change per leaf (issuer name, authority key id, chain PEM) is prepared once.
 */
export class SvidIssuer {
  readonly ca: CertificateAuthority;
  readonly policy: Readonly<CaPolicy>;
  readonly #aki: x509.AuthorityKeyIdentifierExtension;
  readonly #ekus: x509.ExtendedKeyUsageExtension;
  readonly #chainPem: string;
  readonly #chainDer: readonly Buffer[];

  constructor(ca: CertificateAuthority, policy: Partial<CaPolicy> = {}) {
    this.ca = ca;
    this.policy = { ...DEFAULT_CA_POLICY, ...policy };
    this.#aki = authorityKeyId(ca.certificate);
    this.#ekus = new x509.ExtendedKeyUsageExtension([OID_SERVER_AUTH, OID_CLIENT_AUTH], false);
    this.#chainPem = certificatesToPem(ca.presentedChain);
    this.#chainDer = ca.presentedChain.map((c) => c.der);
  }

  /** Issues an SVID for `spiffeId` (must be a workload ID in the CA's trust domain). */
  async issue(spiffeId: string, options: IssueOptions = {}): Promise<IssuedSvid> {
    const id = parseSpiffeId(spiffeId);
    if (!id.ok) throw new PkiError("E_RT_PKI_INVALID_ID", id.reason);
    if (id.path === "")
      throw new PkiError(
        "E_RT_PKI_INVALID_ID",
        `${spiffeId} names a trust domain, not a workload (add a path)`,
      );
    if (id.trustDomain !== this.ca.trustDomain)
      throw new PkiError(
        "E_RT_PKI_TRUST_DOMAIN_MISMATCH",
        `${spiffeId} is outside the CA's trust domain ${this.ca.trustDomain}`,
      );
    for (const name of options.dnsNames ?? [])
      if (!/^(?:\*\.)?[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*$/.test(name) || name.length > 253)
        throw new PkiError("E_RT_PKI_INVALID_ID", `${JSON.stringify(name)} is not a DNS name`);
    const w = validityWindow(
      options.ttlMs ?? this.policy.workloadTtlMs,
      options.clockSkewMs ?? this.policy.clockSkewMs,
      options.now ?? Date.now(),
      this.ca.certificate,
    );
    const keys = options.publicKey ? null : await generateKeyPair();
    const publicKey = options.publicKey ?? keys!.publicKey;
    const serial = randomSerial();
    const cert = await x509.X509CertificateGenerator.create({
      serialNumber: serial,
      // No CN: Node's hostname check falls back to the CN when a certificate has no DNS SAN, and a CN
      // of "orders" would let non-SPIFFE clients accept any namespace's "orders" SVID for host "orders".
      subject: [{ O: [id.trustDomain] }],
      issuer: this.ca.certificate.cert.subjectName,
      notBefore: new Date(w.notBefore),
      notAfter: new Date(w.notAfter),
      publicKey,
      signingKey: this.ca.privateKey,
      signingAlgorithm: EC_P256,
      extensions: [
        new x509.BasicConstraintsExtension(false, undefined, true),
        new x509.KeyUsagesExtension(KeyUsageBits.digitalSignature, true),
        this.#ekus,
        new x509.SubjectAlternativeNameExtension([
          { type: "url", value: spiffeId },
          ...(options.dnsNames ?? []).map((value) => ({ type: "dns" as const, value })),
        ]),
        await subjectKeyId(publicKey),
        this.#aki,
      ],
    });
    const der = Buffer.from(cert.rawData);
    const certPem = toPem(der, "CERTIFICATE");
    return {
      spiffeId,
      der,
      certPem,
      chainPem: certPem + this.#chainPem,
      chainDer: this.#chainDer,
      notBefore: w.notBefore,
      notAfter: w.notAfter,
      serial: serial.replace(/^00/, ""),
      clamped: w.clamped,
      keyPem: keys ? await exportPrivateKey(keys.privateKey) : null,
      privateKey: keys?.privateKey ?? null,
    };
  }
}

const OID_SERVER_AUTH = "1.3.6.1.5.5.7.3.1";
const OID_CLIENT_AUTH = "1.3.6.1.5.5.7.3.2";
