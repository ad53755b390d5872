/**
 * Self-signed server certificates for TLS listeners in tests, made by the real `openssl` (ECDSA P-256,
 * valid a day): `<dir>/<name>.crt` and `.key`.
 */
import { execFile } from "node:child_process";
import { join } from "node:path";
import { promisify } from "node:util";

const run = promisify(execFile);

/**
 * A CA certificate that parses (self-signed P-256, valid until 2126, its key not kept), for specs that
 * need a PEM and never a handshake.
 */
export const STATIC_CA_PEM = `-----BEGIN CERTIFICATE-----
MIIBoDCCAUegAwIBAgIUOGP4QdeBCSahDrVN8h4TOYPJd6gwCgYIKoZIzj0EAwIw
JTEjMCEGA1UEAwwabWVzaGdhdGUgcmVqZWN0aW9uLXRlc3QgQ0EwIBcNMjYxMjAy
MDQxNzI0WhgPMjEyNjExMDgwNDE3MjRaMCUxIzAhBgNVBAMMGm1lc2hnYXRlIHJl
amVjdGlvbi10ZXN0IENBMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE2KtwUD5m
71raZeocNZ4a5V35aMzMQaUX9w2z/HUxbCw0FTYPcCMDYgojnAv5SHfzORdRy29A
Glt88kn9qaex86NTMFEwHQYDVR0OBBYEFIwO8eIsgsD4lN6jlMQsZzq33FW1MB8G
A1UdIwQYMBaAFIwO8eIsgsD4lN6jlMQsZzq33FW1MA8GA1UdEwEB/wQFMAMBAf8w
CgYIKoZIzj0EAwIDRwAwRAIgBovBr6KIVYeOdMHuk16nsECVdnbADSm81kkMr506
pq0CIHi2+vJyo1vcNYZdwiWSMZvg1oRcVYLS2VbCRmgagrge
-----END CERTIFICATE-----`;

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
