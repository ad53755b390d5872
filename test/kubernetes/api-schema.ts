/**
 * The strict JSON Schema of the Kubernetes API kinds the chart emits, generated from `kubernetes-types`
 * (the API's TypeScript definitions) by ts-json-schema-generator with `additionalProperties: false`, so an
 * unknown or misspelled field is an error. `node scripts/kubernetes-schema.ts` writes it to
 * SCHEMA_FILE; test/kubernetes/validation.test.ts fails when the committed copy is stale.
 */
import { createGenerator } from "ts-json-schema-generator";

const ROOT = new URL("../../", import.meta.url).pathname;
/** The committed schema (relative to the repo root). */
export const SCHEMA_FILE = "test/kubernetes/testdata/kubernetes-api.schema.json";

/** The schema as the script writes it (JSON, 2-space indented, final newline). */
export function generateKubernetesApiSchema(): string {
  const schema = createGenerator({
    path: `${ROOT}test/kubernetes/kubernetes-types.ts`,
    tsconfig: `${ROOT}tsconfig.json`,
    type: "KubernetesApi",
    additionalProperties: false,
    expose: "export",
    topRef: true,
    jsDoc: "none",
    skipTypeCheck: false,
  }).createSchema("KubernetesApi");
  return `${JSON.stringify(schema, null, 2)}\n`;
}
