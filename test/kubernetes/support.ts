/** Shared helpers of the Kubernetes chart tests: specs to TranslateResults. */
import { join } from "node:path";
import { loadSpecFile } from "../../components/spec/load.ts";
import { parseSpec } from "../../components/spec/parse.ts";
import type { TranslateResult } from "../../components/translate/ir.ts";
import { translate } from "../../components/translate/translate.ts";
import { generateSpec, type GenerateOptions } from "../../testing/generate.ts";

export const ROOT = new URL("../../", import.meta.url).pathname;

export async function shopResult(): Promise<TranslateResult> {
  const loaded = await loadSpecFile(join(ROOT, "examples/shop/mesh.yaml"));
  if (!loaded.ok) throw new Error("the shop example is invalid");
  return translate(loaded.spec);
}

/** The translation of a spec document; throws with the errors when it is invalid. */
export function resultOf(doc: unknown): TranslateResult {
  const r = parseSpec(doc);
  if (!r.ok) throw new Error(r.errors.map((e) => `${e.path}: ${e.message}`).join("\n"));
  return translate(r.spec);
}

export function generatedResult(options: GenerateOptions): TranslateResult {
  return resultOf(generateSpec(options));
}
