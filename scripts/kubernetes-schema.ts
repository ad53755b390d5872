/**
 * Writes the strict JSON Schema of the Kubernetes API kinds the chart emits (from kubernetes-types):
 * `node scripts/kubernetes-schema.ts`. Run it after adding a kind to test/kubernetes/kubernetes-types.ts
 * or upgrading kubernetes-types; test/kubernetes/validation.test.ts checks the committed copy is current.
 */
import { writeFileSync } from "node:fs";
import { SCHEMA_FILE, generateKubernetesApiSchema } from "../test/kubernetes/api-schema.ts";

writeFileSync(new URL(`../${SCHEMA_FILE}`, import.meta.url), generateKubernetesApiSchema());
console.log(`wrote ${SCHEMA_FILE}`);
