/** Shared helpers of the policy tests: the shop example as a raw document, and specs → PolicyInput. */
import { readFileSync } from "node:fs";
import { parse } from "yaml";
import { parseSpec } from "../../components/spec/parse.ts";
import { policyInput, type PolicyInput } from "../../policies/run.ts";

export const ROOT = new URL("../../", import.meta.url).pathname;
/** The shop example before its retry/timeout fixes: a realistic spec that fails three guardrails. */
export const SHOP_FILE = `${ROOT}test/policies/testdata/shop-unsafe.yaml`;
export const MINI_FILE = `${ROOT}policies/guardrails/mini.yaml`;

type Raw = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

/** A fresh copy of the shop example's document. */
export function shopRaw(): Raw {
  return parse(readFileSync(SHOP_FILE, "utf8")) as Raw;
}

export function miniRaw(): Raw {
  return parse(readFileSync(MINI_FILE, "utf8")) as Raw;
}

/** A valid spec's PolicyInput; throws with the spec errors when the document is invalid. */
export function inputOf(raw: unknown): PolicyInput {
  const r = parseSpec(raw);
  if (!r.ok)
    throw new Error(`invalid spec: ${r.errors.map((e) => `${e.path}: ${e.message} [${e.code}]`).join("; ")}`);
  return policyInput(r.spec);
}

/** The spec route index of a route name. */
export function routeIndex(raw: Raw, name: string): number {
  const i = (raw.gateway.routes as { name: string }[]).findIndex((r) => r.name === name);
  if (i < 0) throw new Error(`no route ${name}`);
  return i;
}
