/**
 * The mesh PKI: a root CA → intermediate → workload X.509-SVIDs (ECDSA P-256, one SPIFFE URI SAN),
 * trust bundles with several roots, the SVID verifier, renewal timing and the staged rotation planner.
 * Loads @peculiar/x509 (through ./x509.ts, which loads reflect-metadata first).
 */
export * from "./errors.ts";
export * from "./spiffe.ts";
export * from "./cert.ts";
export * from "./ca.ts";
export * from "./bundle.ts";
export * from "./verify.ts";
export * from "./tls.ts";
export * from "./rotation.ts";
export * from "./files.ts";
export * from "./identity.ts";
