/**
 * A stand-in for the Pulumi tls provider (pulumi-resource-tls 5.x, a bridge of hashicorp's
 * terraform-provider-tls) under Pulumi's mocks: it makes real keys, CSRs and certificates from a
 * resource's inputs with the rules that provider applies (internal/provider/common_cert.go and
 * resource_*_cert.go, Go's crypto/x509), so that tests can check the certificates MeshCa's arguments
 * produce — with meshgate's SVID verifier and `openssl verify -x509_strict`.
 *
 * What the provider does, and this file reproduces:
 * - `allowed_uses` map to key usages (`digital_signature`, `cert_signing`, `crl_signing`, …; Go marks the
 *   extension critical) and extended key usages (`server_auth`, `client_auth`, …; not critical);
 * - basic constraints are always present and critical (BasicConstraintsValid), `cA` = `is_ca_certificate`;
 *   `max_path_length` is encoded only when > 0 (the provider never sets Go's MaxPathLenZero, so 0 means
 *   "no constraint");
 * - a CA certificate, or `set_subject_key_id`, gets a subject key identifier: SHA-1 of the EC point; a
 *   certificate signed by a parent with one gets it as authority key identifier (Go does that);
 *   `set_authority_key_id` on a self-signed certificate copies its own;
 * - the subject is O then CN (Go's RDN order); a locally signed certificate takes subject, DNS names, IPs
 *   and URIs from the CSR; the SAN is critical only when the subject is empty;
 * - notBefore = now (no backdating), notAfter = now + validity_period_hours; serial: random < 2^128;
 *   ECDSA keys sign with SHA-256.
 *
 * Like the engine with a stack's state, it answers a resource it has seen with the same inputs with the
 * same outputs (an unchanged resource is not re-created), so a test can run several `pulumi up`s.
 */
import { createHash, createPrivateKey, createPublicKey, randomBytes, webcrypto } from "node:crypto";
import { EC_P256, x509 } from "../../runtime/pki/x509.ts";

type Inputs = Record<string, unknown>;
type CryptoKeyPair = webcrypto.CryptoKeyPair;

const KEY_USAGES: Record<string, number> = {
  digital_signature: x509.KeyUsageFlags.digitalSignature,
  content_commitment: x509.KeyUsageFlags.nonRepudiation,
  key_encipherment: x509.KeyUsageFlags.keyEncipherment,
  data_encipherment: x509.KeyUsageFlags.dataEncipherment,
  key_agreement: x509.KeyUsageFlags.keyAgreement,
  cert_signing: x509.KeyUsageFlags.keyCertSign,
  crl_signing: x509.KeyUsageFlags.cRLSign,
  encipher_only: x509.KeyUsageFlags.encipherOnly,
  decipher_only: x509.KeyUsageFlags.decipherOnly,
};
const EXT_KEY_USAGES: Record<string, string> = {
  server_auth: x509.ExtendedKeyUsage.serverAuth,
  client_auth: x509.ExtendedKeyUsage.clientAuth,
  code_signing: x509.ExtendedKeyUsage.codeSigning,
  email_protection: x509.ExtendedKeyUsage.emailProtection,
  timestamping: x509.ExtendedKeyUsage.timeStamping,
  ocsp_signing: x509.ExtendedKeyUsage.ocspSigning,
};

const pem = (der: ArrayBuffer | Buffer, label: string) =>
  `-----BEGIN ${label}-----\n${Buffer.from(der as ArrayBuffer)
    .toString("base64")
    .replace(/.{1,64}/g, "$&\n")}-----END ${label}-----\n`;

async function keyPair(pkcs8Pem: string): Promise<CryptoKeyPair> {
  const key = createPrivateKey(pkcs8Pem);
  return {
    privateKey: key.toCryptoKey(EC_P256, true, ["sign"]),
    publicKey: createPublicKey(key).toCryptoKey(EC_P256, true, ["verify"]),
  } as unknown as CryptoKeyPair;
}

async function skiOf(publicKey: webcrypto.CryptoKey): Promise<string> {
  const point = new Uint8Array(await webcrypto.subtle.exportKey("raw", publicKey));
  return createHash("sha1").update(point).digest("hex");
}

function subjectName(subject: Inputs | undefined): x509.JsonName {
  const name: x509.JsonName = [];
  if (subject?.organization) name.push({ O: [String(subject.organization)] });
  if (subject?.commonName) name.push({ CN: [String(subject.commonName)] });
  return name;
}

function serial(): string {
  const b = randomBytes(16); // rand.Int(2^128): positive, leading 0x00 when the top bit is set
  return (b[0]! & 0x80 ? "00" : "") + b.toString("hex");
}

interface Template {
  subject: x509.JsonName;
  uris: string[];
  dnsNames: string[];
}

async function certificate(
  inputs: Inputs,
  template: Template,
  publicKey: webcrypto.CryptoKey,
  signer: { key: webcrypto.CryptoKey; cert: x509.X509Certificate | null },
  selfSigned: boolean,
  notBefore: Date,
): Promise<Inputs> {
  const uses = (inputs.allowedUses as string[] | undefined) ?? [];
  const isCa = inputs.isCaCertificate === true;
  const maxPath = typeof inputs.maxPathLength === "number" ? inputs.maxPathLength : -1;
  const extensions: x509.Extension[] = [];
  const ku = uses.reduce((f, u) => f | (KEY_USAGES[u] ?? 0), 0);
  if (ku) extensions.push(new x509.KeyUsagesExtension(ku, true));
  const eku = uses.map((u) => EXT_KEY_USAGES[u]).filter((x): x is string => x !== undefined);
  if (eku.length) extensions.push(new x509.ExtendedKeyUsageExtension(eku, false));
  extensions.push(new x509.BasicConstraintsExtension(isCa, isCa && maxPath > 0 ? maxPath : undefined, true));
  const ski = isCa || inputs.setSubjectKeyId === true ? await skiOf(publicKey) : null;
  if (ski) extensions.push(new x509.SubjectKeyIdentifierExtension(ski, false));
  const parentSki = selfSigned
    ? inputs.setAuthorityKeyId === true
      ? ski
      : null
    : (signer.cert!.getExtension(x509.SubjectKeyIdentifierExtension)?.keyId ?? null);
  if (parentSki) extensions.push(new x509.AuthorityKeyIdentifierExtension(parentSki, false));
  const san = [
    ...template.dnsNames.map((value) => ({ type: "dns" as const, value })),
    ...template.uris.map((value) => ({ type: "url" as const, value })),
  ];
  if (san.length)
    extensions.push(new x509.SubjectAlternativeNameExtension(san, template.subject.length === 0));
  const hours = Number(inputs.validityPeriodHours);
  const notAfter = new Date(notBefore.getTime() + hours * 3_600_000);
  const common = {
    serialNumber: serial(),
    notBefore,
    notAfter,
    signingAlgorithm: EC_P256,
    extensions,
  };
  const cert = selfSigned
    ? await x509.X509CertificateGenerator.createSelfSigned({
        ...common,
        name: template.subject,
        keys: { privateKey: signer.key, publicKey } as CryptoKeyPair,
      })
    : await x509.X509CertificateGenerator.create({
        ...common,
        subject: template.subject,
        issuer: signer.cert!.subjectName,
        publicKey,
        signingKey: signer.key,
      });
  return {
    certPem: pem(cert.rawData, "CERTIFICATE"),
    validityStartTime: notBefore.toISOString().replace(/\.\d{3}Z$/, "Z"),
    validityEndTime: notAfter.toISOString().replace(/\.\d{3}Z$/, "Z"),
    readyForRenewal: false,
  };
}

/**
 * The emulated provider: outputs for a tls resource's inputs, or undefined for other types.
 * `validityStart(name)` may backdate a certificate (a test's way of letting time pass).
 */
export function emulatedTlsProvider(validityStart: (name: string) => string | undefined) {
  const seen = new Map<string, Inputs>();
  return async (type: string, name: string, inputs: Inputs): Promise<Inputs | undefined> => {
    if (!type.startsWith("tls:index/")) return undefined;
    const key = `${type}\0${name}\0${JSON.stringify(inputs)}`;
    const known = seen.get(key);
    if (known) return known;
    const notBefore = new Date(
      Math.floor(Date.parse(validityStart(name) ?? new Date().toISOString()) / 1000) * 1000,
    );
    let out: Inputs;
    switch (type) {
      case "tls:index/privateKey:PrivateKey": {
        if (inputs.algorithm !== "ECDSA" || inputs.ecdsaCurve !== "P256")
          throw new Error(
            `the emulated tls provider makes ECDSA P256 keys only, got ${String(inputs.algorithm)}`,
          );
        const pair = (await webcrypto.subtle.generateKey(EC_P256, true, ["sign", "verify"])) as CryptoKeyPair;
        const pkcs8 = pem(await webcrypto.subtle.exportKey("pkcs8", pair.privateKey), "PRIVATE KEY");
        out = {
          privateKeyPem: createPrivateKey(pkcs8).export({ type: "sec1", format: "pem" }).toString(),
          privateKeyPemPkcs8: pkcs8,
          publicKeyPem: pem(await webcrypto.subtle.exportKey("spki", pair.publicKey), "PUBLIC KEY"),
        };
        break;
      }
      case "tls:index/certRequest:CertRequest": {
        const keys = await keyPair(String(inputs.privateKeyPem));
        const uris = (inputs.uris as string[] | undefined) ?? [];
        const csr = await x509.Pkcs10CertificateRequestGenerator.create({
          name: subjectName(inputs.subject as Inputs | undefined),
          keys,
          signingAlgorithm: EC_P256,
          extensions: uris.length
            ? [new x509.SubjectAlternativeNameExtension(uris.map((value) => ({ type: "url", value })))]
            : [],
        });
        out = { certRequestPem: pem(csr.rawData, "CERTIFICATE REQUEST") };
        break;
      }
      case "tls:index/selfSignedCert:SelfSignedCert": {
        const keys = await keyPair(String(inputs.privateKeyPem));
        out = await certificate(
          inputs,
          {
            subject: subjectName(inputs.subject as Inputs | undefined),
            uris: (inputs.uris as string[] | undefined) ?? [],
            dnsNames: (inputs.dnsNames as string[] | undefined) ?? [],
          },
          keys.publicKey,
          { key: keys.privateKey, cert: null },
          true,
          notBefore,
        );
        break;
      }
      case "tls:index/locallySignedCert:LocallySignedCert": {
        const csr = new x509.Pkcs10CertificateRequest(String(inputs.certRequestPem));
        const san = csr.extensions.find((e) => e instanceof x509.SubjectAlternativeNameExtension) as
          x509.SubjectAlternativeNameExtension | undefined;
        const names = (san?.names.items ?? []) as x509.GeneralName[];
        const ca = new x509.X509Certificate(String(inputs.caCertPem));
        const caKeys = await keyPair(String(inputs.caPrivateKeyPem));
        out = await certificate(
          inputs,
          {
            subject: csr.subjectName.toJSON(),
            uris: names.filter((n) => n.type === "url").map((n) => n.value),
            dnsNames: names.filter((n) => n.type === "dns").map((n) => n.value),
          },
          await csr.publicKey.export(EC_P256, ["verify"]),
          { key: caKeys.privateKey, cert: ca },
          false,
          notBefore,
        );
        break;
      }
      default:
        throw new Error(`the emulated tls provider has no ${type}`);
    }
    seen.set(key, out);
    return out;
  };
}
