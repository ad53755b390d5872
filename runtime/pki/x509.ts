/**
 * The one place that loads @peculiar/x509: it throws at import unless reflect-metadata is loaded first,
 * and it must be told to use Node's WebCrypto. Every other PKI module imports `x509` from here.
 */
import "reflect-metadata";
import * as x509 from "@peculiar/x509";
import { webcrypto } from "node:crypto";

x509.cryptoProvider.set(webcrypto as unknown as ReturnType<typeof x509.cryptoProvider.get>);

export { x509 };

/** ECDSA P-256 with SHA-256: the only key and signature algorithm the mesh issues. */
export const EC_P256 = { name: "ECDSA", namedCurve: "P-256", hash: "SHA-256" } as const;
