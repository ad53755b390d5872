/**
 * Helpers for the PKI tests: a CA per trust domain, a certificate forge that can break any X.509-SVID rule
 * (built with @peculiar/x509 like the real issuer, so that a fixture differs from a good SVID only by
 * its flaw), files for openssl, and the openssl CLI as the independent verifier.
 */
import { execFile } from "node:child_process";
import { createHash, webcrypto } from "node:crypto";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import {
  createIntermediateCa,
  createRootCa,
  KeyUsageBits,
  SvidIssuer,
  SvidVerifier,
  toPem,
  TrustBundle,
  type CertificateAuthority,
  type IssuedCa,
} from "../../runtime/pki/index.ts";
import { EC_P256, x509 } from "../../runtime/pki/x509.ts";

export const run = promisify(execFile);

export interface TestCa {
  trustDomain: string;
  root: IssuedCa;
  intermediate: IssuedCa;
  issuer: SvidIssuer;
  bundle: TrustBundle;
  verifier: SvidVerifier;
}

export async function makeCa(
  trustDomain: string,
  options: { now?: number; skewMs?: number } = {},
): Promise<TestCa> {
  const lifetime = {
    ...(options.now !== undefined ? { now: options.now } : {}),
    clockSkewMs: options.skewMs ?? 300_000,
  };
  const root = await createRootCa({ trustDomain, ...lifetime });
  const intermediate = await createIntermediateCa(root, lifetime);
  const bundle = new TrustBundle(trustDomain, [root.certificate]);
  return {
    trustDomain,
    root,
    intermediate,
    issuer: new SvidIssuer(intermediate, { clockSkewMs: lifetime.clockSkewMs }),
    bundle,
    verifier: new SvidVerifier(bundle),
  };
}

export const OIDS = {
  serverAuth: "1.3.6.1.5.5.7.3.1",
  clientAuth: "1.3.6.1.5.5.7.3.2",
  codeSigning: "1.3.6.1.5.5.7.3.3",
};

/** Every knob of a certificate the forge can turn; the defaults make a correct X.509-SVID. */
export interface ForgeSpec {
  uris?: string[];
  dns?: string[];
  /** cA of basicConstraints; null leaves the extension out. */
  ca?: boolean | null;
  pathLength?: number;
  keyUsage?: number | null;
  keyUsageCritical?: boolean;
  eku?: string[] | null;
  notBefore?: number;
  notAfter?: number;
  /** Sign with this key instead of the issuer's (names and key ids still say the issuer). */
  signingKey?: webcrypto.CryptoKey;
  extraExtensions?: x509.Extension[];
  subject?: string;
}

/** A certificate issued by `issuer` from `spec`, and its key pair. */
export async function forge(
  issuer: CertificateAuthority,
  spec: ForgeSpec = {},
): Promise<{ der: Buffer; pem: string; keys: webcrypto.CryptoKeyPair }> {
  const keys = (await webcrypto.subtle.generateKey(EC_P256, true, [
    "sign",
    "verify",
  ])) as webcrypto.CryptoKeyPair;
  const now = Date.now();
  const point = new Uint8Array(await webcrypto.subtle.exportKey("raw", keys.publicKey));
  const extensions: x509.Extension[] = [];
  if (spec.ca !== null)
    extensions.push(new x509.BasicConstraintsExtension(spec.ca ?? false, spec.pathLength, true));
  if (spec.keyUsage !== null)
    extensions.push(
      new x509.KeyUsagesExtension(
        spec.keyUsage ?? KeyUsageBits.digitalSignature,
        spec.keyUsageCritical ?? true,
      ),
    );
  if (spec.eku !== null)
    extensions.push(new x509.ExtendedKeyUsageExtension(spec.eku ?? [OIDS.serverAuth, OIDS.clientAuth]));
  const names = [
    ...(spec.uris ?? ["spiffe://td.example/ns/default/sa/forged"]).map((value) => ({
      type: "url" as const,
      value,
    })),
    ...(spec.dns ?? []).map((value) => ({ type: "dns" as const, value })),
  ];
  if (names.length > 0) extensions.push(new x509.SubjectAlternativeNameExtension(names));
  extensions.push(new x509.SubjectKeyIdentifierExtension(createHash("sha1").update(point).digest("hex")));
  extensions.push(new x509.AuthorityKeyIdentifierExtension(issuer.certificate.subjectKeyId!));
  extensions.push(...(spec.extraExtensions ?? []));
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: "01" + createHash("sha256").update(point).digest("hex").slice(0, 30),
    subject: spec.subject ?? "CN=forged",
    issuer: issuer.certificate.cert.subjectName,
    notBefore: new Date(spec.notBefore ?? now - 60_000),
    notAfter: new Date(spec.notAfter ?? now + 3_600_000),
    publicKey: keys.publicKey,
    signingKey: spec.signingKey ?? issuer.privateKey,
    signingAlgorithm: EC_P256,
    extensions,
  });
  const der = Buffer.from(cert.rawData);
  return { der, pem: toPem(der, "CERTIFICATE"), keys };
}

/** A forged CA (for chains with a bad intermediate): key included, so it can sign leaves. */
export async function forgeCa(
  issuer: CertificateAuthority,
  spec: ForgeSpec & { trustDomain: string },
): Promise<CertificateAuthority & { der: Buffer }> {
  const made = await forge(issuer, {
    uris: [`spiffe://${spec.trustDomain}`],
    ca: true,
    keyUsage: KeyUsageBits.keyCertSign | KeyUsageBits.cRLSign,
    eku: null,
    subject: `CN=forged CA ${Math.random().toString(16).slice(2, 10)}`,
    ...spec,
  });
  const { parseCertificate } = await import("../../runtime/pki/index.ts");
  const certificate = parseCertificate(made.der);
  return {
    der: made.der,
    certificate,
    privateKey: made.keys.privateKey,
    trustDomain: spec.trustDomain,
    presentedChain: [certificate, ...issuer.presentedChain],
  };
}

/** Flips one bit inside the signature value (the DER structure stays intact). */
export function breakSignature(der: Buffer): Buffer {
  const out = Buffer.from(der);
  out[out.length - 5] = out[out.length - 5]! ^ 0x01;
  return out;
}

export async function tempDir(prefix: string): Promise<{ dir: string; cleanup: () => Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), `meshgate-${prefix}-`));
  return { dir, cleanup: () => rm(dir, { recursive: true, force: true }) };
}

export async function writeFiles(
  dir: string,
  files: Record<string, string>,
): Promise<Record<string, string>> {
  const paths: Record<string, string> = {};
  for (const [name, content] of Object.entries(files)) {
    paths[name] = join(dir, name);
    await writeFile(paths[name], content, { mode: 0o600 });
  }
  return paths;
}

/** `openssl verify -x509_strict -CAfile ROOTS -untrusted INTERMEDIATES LEAF`: exit 0 and "OK", or the error. */
export async function opensslVerify(
  caFile: string,
  untrusted: string | null,
  leaf: string,
): Promise<{ ok: boolean; output: string }> {
  const args = [
    "verify",
    "-x509_strict",
    "-CAfile",
    caFile,
    ...(untrusted ? ["-untrusted", untrusted] : []),
    leaf,
  ];
  try {
    const { stdout, stderr } = await run("openssl", args);
    return { ok: stdout.trim() === `${leaf}: OK`, output: stdout + stderr };
  } catch (err) {
    const e = err as { stdout: string; stderr: string };
    return { ok: false, output: e.stdout + e.stderr };
  }
}
