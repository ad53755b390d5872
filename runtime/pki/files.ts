/**
 * The PKI on disk. A CA directory (`meshgate pki init`) and an SVID directory (`meshgate pki issue`, and
 * what a sidecar mounts). Private keys are written with mode 0600; every file is written to a temporary
 * name and renamed, so a process watching the directory never reads half a file.
 *
 *   CA dir:   root.pem  root-key.pem  intermediate.pem  intermediate-key.pem  bundle.pem
 *   SVID dir: svid.pem (leaf, then intermediate)  svid-key.pem  bundle.pem
 */
import { randomBytes } from "node:crypto";
import { chmod, mkdir, readFile, rename, rm, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { TrustBundle } from "./bundle.ts";
import { loadCertificateAuthority, type CertificateAuthority, type IssuedCa, type IssuedSvid } from "./ca.ts";
import { parseCertificate, toPem, type ParsedCertificate } from "./cert.ts";
import { PkiError } from "./errors.ts";

export const CA_FILES = {
  rootCert: "root.pem",
  rootKey: "root-key.pem",
  intermediateCert: "intermediate.pem",
  intermediateKey: "intermediate-key.pem",
  bundle: "bundle.pem",
} as const;

export const SVID_FILES = { chain: "svid.pem", key: "svid-key.pem", bundle: "bundle.pem" } as const;

/** Writes a file atomically (temporary name + rename) with the given mode. */
export async function writeFileAtomic(path: string, content: string, mode: number): Promise<void> {
  const tmp = `${path}.${randomBytes(6).toString("hex")}.tmp`;
  try {
    await writeFile(tmp, content, { mode, flag: "wx" });
    await chmod(tmp, mode); // the umask may have removed bits; never adds any beyond `mode`
    await rename(tmp, path);
  } catch (err) {
    await rm(tmp, { force: true });
    throw new PkiError(
      "E_RT_PKI_FILE",
      `cannot write ${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`,
    );
  }
}

async function exists(path: string): Promise<boolean> {
  return stat(path).then(
    () => true,
    () => false,
  );
}

async function read(path: string): Promise<string> {
  try {
    return await readFile(path, "utf8");
  } catch (err) {
    throw new PkiError(
      "E_RT_PKI_FILE",
      `cannot read ${path}: ${(err as NodeJS.ErrnoException).code ?? "error"}`,
    );
  }
}

/**
 * Writes a new CA directory. Refuses (E_RT_PKI_FILE) when the directory already holds a CA key: a CA is
 * replaced by rotation, never by overwriting its key.
 */
export async function writeCaDirectory(
  dir: string,
  ca: { root: IssuedCa; intermediate: IssuedCa },
): Promise<string[]> {
  await mkdir(dir, { recursive: true, mode: 0o755 });
  for (const f of [CA_FILES.rootKey, CA_FILES.intermediateKey])
    if (await exists(join(dir, f)))
      throw new PkiError(
        "E_RT_PKI_FILE",
        `${join(dir, f)} exists; refusing to overwrite a CA key (rotate instead)`,
      );
  const bundle = new TrustBundle(ca.root.trustDomain, [ca.root.certificate]);
  const files: [string, string, number][] = [
    [CA_FILES.rootCert, toPem(ca.root.certificate.der, "CERTIFICATE"), 0o644],
    [CA_FILES.rootKey, ca.root.keyPem.reveal(), 0o600],
    [CA_FILES.intermediateCert, toPem(ca.intermediate.certificate.der, "CERTIFICATE"), 0o644],
    [CA_FILES.intermediateKey, ca.intermediate.keyPem.reveal(), 0o600],
    [CA_FILES.bundle, bundle.toPem(), 0o644],
  ];
  for (const [name, content, mode] of files) await writeFileAtomic(join(dir, name), content, mode);
  return files.map(([name]) => join(dir, name));
}

/** A CA directory loaded to issue from: the intermediate (with its key), the root, and the bundle. */
export interface CaDirectory {
  dir: string;
  trustDomain: string;
  root: ParsedCertificate;
  intermediate: CertificateAuthority;
  bundle: TrustBundle;
}

/**
 * Loads a CA directory. The root key is not read (it may be kept offline); the intermediate's key must
 * match its certificate, and the intermediate must be issued by the root. `bundle.pem` defaults to the root.
 */
export async function loadCaDirectory(dir: string): Promise<CaDirectory> {
  const root = parseCertificate(await read(join(dir, CA_FILES.rootCert)));
  const intermediate = await loadCertificateAuthority({
    certPem: await read(join(dir, CA_FILES.intermediateCert)),
    keyPem: await read(join(dir, CA_FILES.intermediateKey)),
  });
  const int = intermediate.certificate;
  if (int.issuerName !== root.subjectName || !int.native.verify(root.publicKey))
    throw new PkiError(
      "E_RT_PKI_NOT_A_CA",
      `${join(dir, CA_FILES.intermediateCert)} (${int.subject}) was not issued by ${join(dir, CA_FILES.rootCert)} (${root.subject})`,
    );
  const bundlePath = join(dir, CA_FILES.bundle);
  const bundle = (await exists(bundlePath))
    ? TrustBundle.fromPem(intermediate.trustDomain, await read(bundlePath))
    : new TrustBundle(intermediate.trustDomain, [root]);
  return { dir, trustDomain: intermediate.trustDomain, root, intermediate, bundle };
}

/** Writes an SVID directory (chain, key with mode 0600, bundle); an existing SVID there is replaced. */
export async function writeSvidDirectory(
  dir: string,
  svid: IssuedSvid,
  bundle: TrustBundle,
): Promise<string[]> {
  if (!svid.keyPem)
    throw new PkiError(
      "E_RT_PKI_PEM",
      "the SVID was issued for a caller's public key; there is no key to write",
    );
  await mkdir(dir, { recursive: true, mode: 0o755 });
  const files: [string, string, number][] = [
    [SVID_FILES.chain, svid.chainPem, 0o644],
    [SVID_FILES.key, svid.keyPem.reveal(), 0o600],
    [SVID_FILES.bundle, bundle.toPem(), 0o644],
  ];
  for (const [name, content, mode] of files) await writeFileAtomic(join(dir, name), content, mode);
  return files.map(([name]) => join(dir, name));
}
