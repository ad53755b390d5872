/**
 * Every generated artefact of the repo, computed in memory: the spec's JSON Schema, the spec reference,
 * and the README's error and defaults tables. `npm run schema` writes them; test/docs/generated.test.ts
 * fails when a committed copy is stale, so docs and code cannot drift.
 */
import { readFileSync } from "node:fs";
import { DEFAULTS } from "../components/spec/defaults.ts";
import { SpecErrorCatalog } from "../components/spec/errors.ts";
import { specJsonSchema } from "../components/spec/json-schema.ts";
import { RuntimeErrorCatalog } from "../runtime/contract/errors.ts";
import { GatewayErrorCatalog } from "../runtime/gateway/errors.ts";
import { PkiErrorCatalog } from "../runtime/pki/errors.ts";
import { PolicyErrorCatalog } from "../policies/errors.ts";

export interface Artefact {
  path: string;
  content: string;
}

const ROOT = new URL("../", import.meta.url);
const BEGIN = (name: string) => `<!-- BEGIN GENERATED: ${name} (npm run schema) -->`;
const END = (name: string) => `<!-- END GENERATED: ${name} -->`;

export function artefacts(): Artefact[] {
  const schema = specJsonSchema();
  let readme = readFileSync(new URL("README.md", ROOT), "utf8");
  readme = replaceSection(readme, "errors", errorTable());
  readme = replaceSection(readme, "defaults", defaultsTable());
  readme = replaceSection(readme, "gateway-errors", gatewayErrorTable());
  return [
    { path: "schema/mesh.schema.json", content: `${JSON.stringify(schema, null, 2)}\n` },
    { path: "docs/spec-reference.md", content: specReference(schema) },
    { path: "README.md", content: readme },
  ];
}

function replaceSection(text: string, name: string, body: string): string {
  const begin = text.indexOf(BEGIN(name));
  const end = text.indexOf(END(name));
  if (begin < 0 || end < begin)
    throw new Error(`README.md lacks the markers of the generated "${name}" section`);
  return `${text.slice(0, begin + BEGIN(name).length)}\n\n${body}\n${text.slice(end)}`;
}

const cell = (s: string) => s.replace(/\|/g, "\\|").replace(/\n/g, " ");

export function errorTable(): string {
  const rows = [
    ...Object.entries(SpecErrorCatalog).map(([code, text]) => [
      code,
      code.startsWith("W_") ? "spec (warning)" : "spec",
      text,
    ]),
    ...Object.entries(RuntimeErrorCatalog).map(([code, text]) => [code, "runtime", text]),
    ...Object.entries(PkiErrorCatalog).map(([code, text]) => [code, "runtime (pki)", text]),
    ...Object.entries(PolicyErrorCatalog).map(([code, e]) => [
      code,
      e.guardrail
        ? `policy: ${e.guardrail} (${e.severity})`
        : code.startsWith("E_POLICY_ASSERTION")
          ? "policy (traffic assertions)"
          : "policy (file or rule module)",
      e.text,
    ]),
  ];
  return (
    [
      "| code | layer | meaning |",
      "|---|---|---|",
      ...rows.map(([c, l, t]) => `| \`${c}\` | ${l} | ${cell(t!)} |`),
    ].join("\n") + "\n"
  );
}

export function gatewayErrorTable(): string {
  const rows = Object.entries(GatewayErrorCatalog).map(
    ([code, [status, text]]) =>
      `| \`${code}\` | ${status === 0 ? "from the rule" : status} | ${cell(text)} |`,
  );
  return ["| `x-meshgate-error` | status | meaning |", "|---|---|---|", ...rows].join("\n") + "\n";
}

export function defaultsTable(): string {
  const rows = Object.entries(DEFAULTS).map(
    ([path, d]) =>
      `| \`${path}\` | \`${cell(typeof d.value === "string" ? d.value : JSON.stringify(d.value))}\` | ${cell(d.reason)} |`,
  );
  return ["| field | default | why |", "|---|---|---|", ...rows].join("\n") + "\n";
}

type Json = Record<string, unknown>;

/** A flat reference of every field of the spec: path, type, default, description. */
export function specReference(schema: Json): string {
  const rows: string[] = [];
  walk(schema, "", rows, schema);
  return [
    "# Spec reference",
    "",
    "Generated from the zod schema by `npm run schema`; do not edit. `<name>` stands for a key you choose,",
    "`[]` for a list item. Durations are strings such as `500ms`, `2s`, `1m30s`; sizes such as `16KiB`, `1MiB`.",
    "Defaults and the reason for each are in the README's defaults table. A duration is at most `1000y`; one",
    "the proxies arm as a timer — every timeout (`timeout`, `connectTimeout`, `perTryTimeout`, `requestTimeout`,",
    "`idleTimeout`, `drainTimeout`, Redis `timeout`s, aggregate parts'), retry `backoff`, `healthCheck.interval`",
    "and `fault.delay.duration` — is at most `24d` (E_SPEC_OUT_OF_RANGE): Node holds a timer for at most",
    "2^31−1 ms (about 24.8 days) and fires a longer one after 1 ms. Lifetimes and windows (cache TTLs,",
    "certificate lifetimes, SLO windows) are no timers and keep the `1000y` bound.",
    "",
    "| field | type | default | description |",
    "|---|---|---|---|",
    ...rows,
    "",
  ].join("\n");
}

function typeOf(s: Json): string {
  if (Array.isArray(s.anyOf)) return (s.anyOf as Json[]).map(typeOf).join(" | ");
  if (Array.isArray(s.enum)) return (s.enum as unknown[]).map((v) => JSON.stringify(v)).join(" | ");
  if (s.const !== undefined) return JSON.stringify(s.const);
  if (s.type === "array") return `list of ${typeOf((s.items as Json) ?? {})}`;
  if (s.type === "object") return s.properties ? "mapping" : "mapping of name → …";
  if (s.type === "string" && typeof s.pattern === "string") {
    if (s.pattern.includes("ms|s|m|h|d|y")) return "duration";
    if (s.pattern.includes("KiB")) return "size";
  }
  return typeof s.type === "string" ? s.type : "any";
}

function walk(s: Json, path: string, rows: string[], root: Json): void {
  const props = s.properties as Record<string, Json> | undefined;
  const required = new Set((s.required as string[] | undefined) ?? []);
  if (props) {
    for (const [key, child] of Object.entries(props)) {
      if (key === "$schema") continue;
      const p = path ? `${path}.${key}` : key;
      const def =
        child.default !== undefined
          ? `\`${cell(JSON.stringify(child.default))}\``
          : required.has(key)
            ? "**required**"
            : "";
      const reason =
        DEFAULTS[p.replace(/\[\]/g, ".*").replace(/<name>/g, "*") as keyof typeof DEFAULTS]?.reason;
      const text = String(child.description ?? (reason ? `Default because: ${reason}.` : ""));
      rows.push(`| \`${p}\` | ${cell(typeOf(child))} | ${def} | ${cell(text)} |`);
      descend(child, p, rows, root);
    }
  }
}

function descend(s: Json, path: string, rows: string[], root: Json): void {
  if (s.properties) walk(s, path, rows, root);
  else if (s.type === "object" && typeof s.additionalProperties === "object")
    descend(s.additionalProperties as Json, `${path}.<name>`, rows, root);
  else if (s.type === "array" && s.items) descend(s.items as Json, `${path}[]`, rows, root);
  else if (Array.isArray(s.anyOf))
    for (const o of s.anyOf as Json[]) if (o.properties) walk(o, path, rows, root);
}
