/** Shared helpers of the Docker target tests: the shop example as a raw document, translated. */
import { readFileSync } from "node:fs";
import { parse } from "yaml";
import { parseSpec } from "../../components/spec/parse.ts";
import { translate } from "../../components/translate/translate.ts";
import type { TranslateResult } from "../../components/translate/ir.ts";

export const ROOT = new URL("../../", import.meta.url).pathname;
export const SHOP = "examples/shop/mesh.yaml";

type Raw = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

/** A fresh copy of the shop example's document. */
export function shopRaw(): Raw {
  return parse(readFileSync(`${ROOT}${SHOP}`, "utf8")) as Raw;
}

/** translate() of a raw spec; throws with the spec errors when it is invalid. */
export function translated(raw: unknown): TranslateResult {
  const r = parseSpec(raw);
  if (!r.ok)
    throw new Error(`invalid spec: ${r.errors.map((e) => `${e.path}: ${e.message} [${e.code}]`).join("; ")}`);
  return translate(r.spec);
}
