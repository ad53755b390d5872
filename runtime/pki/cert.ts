/**
 * Certificates in and out: DER/PEM decoding, and `parseCertificate`, which reads everything the PKI
 * decides on from the DER once (with @peculiar/x509) next to Node's native parse (OpenSSL) that verifies
 * signatures. Both parsers must accept a certificate for it to be used.
 */
import { X509Certificate as NodeX509Certificate, type KeyObject } from "node:crypto";
import { PkiError } from "./errors.ts";
import { x509 } from "./x509.ts";

/** OIDs of the extensions the PKI understands; any other critical extension makes a certificate unusable. */
export const OID = {
  basicConstraints: "2.5.29.19",
  keyUsage: "2.5.29.15",
  extKeyUsage: "2.5.29.37",
  subjectAltName: "2.5.29.17",
  subjectKeyId: "2.5.29.14",
  authorityKeyId: "2.5.29.35",
  serverAuth: "1.3.6.1.5.5.7.3.1",
  clientAuth: "1.3.6.1.5.5.7.3.2",
} as const;

const KNOWN_EXTENSIONS: ReadonlySet<string> = new Set([
  OID.basicConstraints,
  OID.keyUsage,
  OID.extKeyUsage,
  OID.subjectAltName,
  OID.subjectKeyId,
  OID.authorityKeyId,
]);

/** Key usage bits (RFC 5280 §4.2.1.3), as @peculiar/x509 numbers them. */
export const KeyUsageBits = {
  digitalSignature: 1,
  nonRepudiation: 2,
  keyEncipherment: 4,
  dataEncipherment: 8,
  keyAgreement: 16,
  keyCertSign: 32,
  cRLSign: 64,
  encipherOnly: 128,
  decipherOnly: 256,
} as const;

/** Everything the PKI reads from one certificate, parsed once. Times are epoch milliseconds. */
export interface ParsedCertificate {
  readonly der: Buffer;
  /** @peculiar/x509's view (for printing); decisions use the fields below. */
  readonly cert: x509.X509Certificate;
  /** Node's (OpenSSL's) view: signature verification and the public key. */
  readonly native: NodeX509Certificate;
  readonly publicKey: KeyObject;
  /** SHA-256 of the DER, lowercase hex. */
  readonly fingerprint: string;
  readonly serial: string;
  readonly subject: string;
  readonly issuer: string;
  /**
   * The subject / issuer Name in OpenSSL's one-line form (from node:crypto, cheap): names chain when these
   * are equal. Only a pre-filter: a link also needs matching key identifiers and a verifying signature.
   */
  readonly subjectName: string;
  readonly issuerName: string;
  readonly notBefore: number;
  readonly notAfter: number;
  readonly basicConstraints: { ca: boolean; pathLength: number | undefined; critical: boolean } | null;
  readonly keyUsage: { flags: number; critical: boolean } | null;
  readonly extKeyUsage: readonly string[] | null;
  readonly uris: readonly string[];
  readonly dnsNames: readonly string[];
  readonly subjectKeyId: string | null;
  readonly authorityKeyId: string | null;
  /** OIDs of critical extensions outside the set above. */
  readonly unknownCritical: readonly string[];
  /** OIDs that appear more than once (RFC 5280 forbids it). */
  readonly duplicateExtensions: readonly string[];
}

/** True for a certificate that may sign others: cA=true. */
export const isCa = (c: ParsedCertificate): boolean => c.basicConstraints?.ca === true;

/** Parses one DER certificate (or the first of a PEM text). Throws PkiError E_RT_PKI_PEM when it cannot. */
export function parseCertificate(input: Uint8Array | string): ParsedCertificate {
  const der = typeof input === "string" ? firstPemBlock(input, "CERTIFICATE") : Buffer.from(input);
  let cert: x509.X509Certificate;
  let native: NodeX509Certificate;
  try {
    cert = new x509.X509Certificate(der);
    native = new NodeX509Certificate(der);
  } catch (err) {
    throw new PkiError("E_RT_PKI_PEM", `not a DER X.509 certificate: ${(err as Error).message}`);
  }
  return describe(der, cert, native);
}

function describe(der: Buffer, cert: x509.X509Certificate, native: NodeX509Certificate): ParsedCertificate {
  let basicConstraints: ParsedCertificate["basicConstraints"] = null;
  let keyUsage: ParsedCertificate["keyUsage"] = null;
  let extKeyUsage: string[] | null = null;
  let subjectKeyId: string | null = null;
  let authorityKeyId: string | null = null;
  const uris: string[] = [];
  const dnsNames: string[] = [];
  const unknownCritical: string[] = [];
  const seen = new Set<string>();
  const duplicateExtensions: string[] = [];
  for (const ext of cert.extensions) {
    if (seen.has(ext.type)) duplicateExtensions.push(ext.type);
    seen.add(ext.type);
    if (ext instanceof x509.BasicConstraintsExtension)
      basicConstraints = { ca: ext.ca, pathLength: ext.pathLength, critical: ext.critical };
    else if (ext instanceof x509.KeyUsagesExtension) keyUsage = { flags: ext.usages, critical: ext.critical };
    else if (ext instanceof x509.ExtendedKeyUsageExtension) extKeyUsage = ext.usages.map(String);
    else if (ext instanceof x509.SubjectAlternativeNameExtension) {
      for (const n of ext.names.items) {
        if (n.type === "url") uris.push(n.value);
        else if (n.type === "dns") dnsNames.push(n.value);
      }
    } else if (ext instanceof x509.SubjectKeyIdentifierExtension) subjectKeyId = ext.keyId.toLowerCase();
    else if (ext instanceof x509.AuthorityKeyIdentifierExtension)
      authorityKeyId = ext.keyId?.toLowerCase() ?? null;
    if (ext.critical && !KNOWN_EXTENSIONS.has(ext.type)) unknownCritical.push(ext.type);
  }
  return {
    der,
    cert,
    native,
    publicKey: native.publicKey,
    fingerprint: native.fingerprint256.replace(/:/g, "").toLowerCase(),
    serial: cert.serialNumber.toLowerCase(),
    subject: native.subject.replace(/\n/g, ", "),
    issuer: native.issuer.replace(/\n/g, ", "),
    subjectName: native.subject,
    issuerName: native.issuer,
    notBefore: cert.notBefore.getTime(),
    notAfter: cert.notAfter.getTime(),
    basicConstraints,
    keyUsage,
    extKeyUsage,
    uris,
    dnsNames,
    subjectKeyId,
    authorityKeyId,
    unknownCritical,
    duplicateExtensions,
  };
}

/** Every certificate of a PEM text (in order), or the one certificate of a DER buffer. */
export function parseCertificates(input: Uint8Array | string): ParsedCertificate[] {
  if (typeof input !== "string") {
    const text = Buffer.from(input).toString("latin1");
    if (!text.includes("-----BEGIN")) return [parseCertificate(input)];
    input = text;
  }
  const blocks = pemBlocks(input, "CERTIFICATE");
  if (blocks.length === 0) throw new PkiError("E_RT_PKI_PEM", "no PEM CERTIFICATE block found");
  return blocks.map((der) => parseCertificate(der));
}

/** PEM text of DER certificates, one block each, in order. */
export function certificatesToPem(certs: readonly (ParsedCertificate | Uint8Array)[]): string {
  return certs.map((c) => toPem("der" in c ? c.der : c, "CERTIFICATE")).join("");
}

/** One PEM block with 64-column base64 lines and a final newline. */
export function toPem(der: Uint8Array, label: string): string {
  const b64 = Buffer.from(der).toString("base64");
  const lines = b64.match(/.{1,64}/g) ?? [];
  return `-----BEGIN ${label}-----\n${lines.join("\n")}\n-----END ${label}-----\n`;
}

const PEM_BLOCK = /-----BEGIN ([A-Z0-9 ]+)-----([\s\S]*?)-----END \1-----/g;

/** The DER of every PEM block with that label (other blocks are skipped). */
export function pemBlocks(text: string, label: string): Buffer[] {
  const out: Buffer[] = [];
  for (const m of text.matchAll(PEM_BLOCK)) {
    if (m[1] !== label) continue;
    const body = m[2]!.replace(/\s+/g, "");
    if (!/^[A-Za-z0-9+/]*={0,2}$/.test(body))
      throw new PkiError("E_RT_PKI_PEM", `a PEM ${label} block is not base64`);
    out.push(Buffer.from(body, "base64"));
  }
  return out;
}

function firstPemBlock(text: string, label: string): Buffer {
  const [first] = pemBlocks(text, label);
  if (!first) throw new PkiError("E_RT_PKI_PEM", `no PEM ${label} block found`);
  return first;
}
