/**
 * An organization's own guardrails, loaded from TypeScript/JavaScript modules
 * (`meshgate verify --rules ./my-rules.ts`). A module's default export — or its `guardrails` export — is a
 * Guardrail or a list of them (see types.ts). Every guardrail is checked before anything runs: a name and
 * codes of the documented form, unique across the built-ins and all modules, and a check function.
 */
import { resolve } from "node:path";
import { pathToFileURL } from "node:url";
import type { PolicyLoadError } from "./errors.ts";
import type { Guardrail } from "./types.ts";

const NAME = /^[a-z][a-z0-9]*(-[a-z0-9]+)*$/;
const CODE = /^[A-Z][A-Z0-9]*(_[A-Z0-9]+)+$/;
const SEVERITIES = new Set(["error", "warning", "info"]);

export type RulesLoadResult =
  { ok: true; guardrails: Guardrail[] } | { ok: false; errors: PolicyLoadError[] };

/** Imports rule modules and validates their guardrails against `builtin` (names and codes must not clash). */
export async function loadRuleModules(
  files: readonly string[],
  builtin: readonly Guardrail[],
): Promise<RulesLoadResult> {
  const errors: PolicyLoadError[] = [];
  const guardrails: Guardrail[] = [];
  const names = new Map<string, string>(builtin.map((g) => [g.name, "a built-in guardrail"]));
  const codes = new Map<string, string>();
  for (const g of builtin)
    for (const c of Object.keys(g.codes)) codes.set(c, `built-in guardrail "${g.name}"`);
  for (const file of files) {
    let mod: Record<string, unknown>;
    try {
      mod = (await import(pathToFileURL(resolve(file)).href)) as Record<string, unknown>;
    } catch (err) {
      const e = err as NodeJS.ErrnoException;
      errors.push({
        code: "E_POLICY_RULES_LOAD",
        file,
        path: "",
        message: `importing ${file} failed: ${String(e.message).split("\n")[0]}`,
        hint:
          e.code === "ERR_MODULE_NOT_FOUND"
            ? "check the path (it is relative to the current directory)"
            : "fix the module so that `node " + file + "` loads it",
      });
      continue;
    }
    const exported = mod.default ?? mod.guardrails;
    const list = Array.isArray(exported) ? exported : exported === undefined ? [] : [exported];
    const invalid = (path: string, message: string, hint: string) =>
      errors.push({ code: "E_POLICY_RULES_INVALID", file, path, message, hint });
    if (list.length === 0) {
      invalid(
        "",
        `${file} exports no guardrail`,
        "export default { name, description, codes, check } (or a list of them)",
      );
      continue;
    }
    list.forEach((g: unknown, i) => {
      const where = Array.isArray(exported) ? `default[${i}]` : "default";
      const problem = shapeProblem(g);
      if (problem) {
        invalid(
          where,
          problem,
          "a Guardrail is { name: kebab-case, description, codes: { CODE: { severity, text } }, check(ctx) }",
        );
        return;
      }
      const guardrail = g as Guardrail;
      const owner = names.get(guardrail.name);
      if (owner) {
        invalid(`${where}.name`, `the name "${guardrail.name}" is already ${owner}`, "choose another name");
        return;
      }
      for (const code of Object.keys(guardrail.codes)) {
        const codeOwner = codes.get(code);
        if (codeOwner) {
          invalid(
            `${where}.codes.${code}`,
            `the code ${code} is already declared by ${codeOwner}`,
            "use your own prefix, e.g. E_ACME_…",
          );
          return;
        }
      }
      names.set(guardrail.name, `guardrail "${guardrail.name}" of ${file}`);
      for (const code of Object.keys(guardrail.codes))
        codes.set(code, `guardrail "${guardrail.name}" of ${file}`);
      guardrails.push(guardrail);
    });
  }
  return errors.length > 0 ? { ok: false, errors } : { ok: true, guardrails };
}

function shapeProblem(g: unknown): string | null {
  if (!g || typeof g !== "object")
    return `expected a guardrail object, got ${g === null ? "null" : typeof g}`;
  const o = g as Record<string, unknown>;
  if (typeof o.name !== "string" || !NAME.test(o.name))
    return `name ${JSON.stringify(o.name)} is not kebab-case`;
  if (typeof o.description !== "string" || o.description === "")
    return `guardrail "${o.name}" has no description`;
  if (typeof o.check !== "function") return `guardrail "${o.name}" has no check function`;
  if (!o.codes || typeof o.codes !== "object" || Object.keys(o.codes).length === 0)
    return `guardrail "${o.name}" declares no codes`;
  for (const [code, d] of Object.entries(o.codes as Record<string, unknown>)) {
    if (!CODE.test(code))
      return `code ${JSON.stringify(code)} of "${o.name}" is not upper-case with underscores (E_ACME_NO_OWNER)`;
    const decl = d as { severity?: unknown; text?: unknown } | null;
    if (!decl || !SEVERITIES.has(String(decl.severity)) || typeof decl.text !== "string")
      return `code ${code} of "${o.name}" needs { severity: error|warning|info, text }`;
  }
  return null;
}
