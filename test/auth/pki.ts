/**
 * Certificates made with the openssl CLI for the client-certificate tests: CAs, intermediates, server and
 * client leaves with chosen subjects and SANs.
 */
import { execFileSync } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";

export interface Pem {
  readonly certFile: string;
  readonly keyFile: string;
  readonly cert: string;
  readonly key: string;
}

const openssl = (args: string[]) => execFileSync("openssl", args, { stdio: ["ignore", "ignore", "pipe"] });

function load(certFile: string, keyFile: string): Pem {
  return { certFile, keyFile, cert: readFileSync(certFile, "utf8"), key: readFileSync(keyFile, "utf8") };
}

/** A self-signed CA. */
export function makeCa(dir: string, name: string, subject: string): Pem {
  const certFile = join(dir, `${name}.crt`);
  const keyFile = join(dir, `${name}.key`);
  openssl([
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
    "2",
    "-subj",
    subject,
    "-addext",
    "basicConstraints=critical,CA:TRUE",
    "-addext",
    "keyUsage=critical,keyCertSign,cRLSign",
  ]);
  return load(certFile, keyFile);
}

/** A certificate signed by `issuer`: a leaf (extensions for client or server use) or an intermediate CA. */
export function makeCert(
  dir: string,
  name: string,
  issuer: Pem,
  subject: string,
  o: { san?: string; ca?: boolean; usage?: "client" | "server"; days?: number } = {},
): Pem {
  const certFile = join(dir, `${name}.crt`);
  const keyFile = join(dir, `${name}.key`);
  const csr = join(dir, `${name}.csr`);
  const ext = join(dir, `${name}.ext`);
  openssl([
    "req",
    "-new",
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:P-256",
    "-nodes",
    "-keyout",
    keyFile,
    "-out",
    csr,
    "-subj",
    subject,
  ]);
  const lines = o.ca
    ? ["basicConstraints=critical,CA:TRUE", "keyUsage=critical,keyCertSign,cRLSign"]
    : [
        "basicConstraints=CA:FALSE",
        "keyUsage=critical,digitalSignature",
        `extendedKeyUsage=${o.usage === "server" ? "serverAuth" : "clientAuth"}`,
      ];
  if (o.san) lines.push(`subjectAltName=${o.san}`);
  writeFileSync(ext, lines.join("\n") + "\n");
  openssl([
    "x509",
    "-req",
    "-in",
    csr,
    "-CA",
    issuer.certFile,
    "-CAkey",
    issuer.keyFile,
    "-CAcreateserial",
    "-out",
    certFile,
    "-days",
    String(o.days ?? 2),
    "-extfile",
    ext,
  ]);
  return load(certFile, keyFile);
}
