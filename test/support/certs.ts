/**
 * Self-signed server certificates for TLS listeners in tests, made by the real `openssl` (ECDSA P-256,
 * valid a day): `<dir>/<name>.crt` and `.key`.
 */
import { execFile } from "node:child_process";
import { join } from "node:path";
import { promisify } from "node:util";

const run = promisify(execFile);

export async function selfSignedCert(
  dir: string,
  name: string,
  cn: string,
  san?: string,
): Promise<{ certFile: string; keyFile: string }> {
  const certFile = join(dir, `${name}.crt`);
  const keyFile = join(dir, `${name}.key`);
  await run("openssl", [
    "req",
    "-x509",
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:P-256",
    "-nodes",
    "-keyout",
    keyFile,
    "-out",
    certFile,
    "-days",
    "1",
    "-subj",
    `/CN=${cn}`,
    ...(san !== undefined ? ["-addext", `subjectAltName=${san}`] : []),
  ]);
  return { certFile, keyFile };
}
