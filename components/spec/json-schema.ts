import { z } from "zod";
import { MeshSpecSchema } from "./schema.ts";

export const JSON_SCHEMA_ID = "https://meshgate.dev/schema/mesh.schema.json";

/**
 * The JSON Schema of the spec *as written* (defaults optional), generated from the zod schema. Committed
 * as schema/mesh.schema.json for editors (yaml-language-server); a test fails when it is stale.
 */
export function specJsonSchema(): Record<string, unknown> {
  const schema = z.toJSONSchema(MeshSpecSchema, { io: "input", unrepresentable: "any" }) as Record<
    string,
    unknown
  >;
  return { ...schema, $id: JSON_SCHEMA_ID, title: "meshgate mesh spec" };
}
