/**
 * Loading a spec from a file: YAML (.yaml/.yml), JSON (.json), or a TypeScript/JavaScript module whose
 * default export is `defineMesh({...})`. Text formats keep their parse tree so every error carries the
 * line and column it points at.
 */
import { readFile } from "node:fs/promises";
import { extname, resolve } from "node:path";
import { pathToFileURL } from "node:url";
import fastYaml from "js-yaml";
import { LineCounter, isMap, isScalar, parseDocument, type Document } from "yaml";
import { isMeshDefinition } from "./define.ts";
import type { SpecError } from "./errors.ts";
import { parseSpec, type Locator, type ParseResult } from "./parse.ts";
import type { Segments } from "./semantic.ts";

export type LoadResult = (ParseResult & { raw?: unknown }) & { file: string };

const TEXT = new Set([".yaml", ".yml", ".json"]);
const MODULE = new Set([".ts", ".mts", ".js", ".mjs"]);

/**
 * Loads and validates a spec file. Never throws for a bad spec: problems come back as coded errors.
 * `fresh`: a module spec (.ts/.js) is imported again rather than from the module cache (a watcher
 * reading the file after a change; the modules it imports stay cached).
 */
export async function loadSpecFile(file: string, opts: { fresh?: boolean } = {}): Promise<LoadResult> {
  const ext = extname(file).toLowerCase();
  if (!TEXT.has(ext) && !MODULE.has(ext)) {
    return fail(
      file,
      "E_SPEC_FILE_TYPE",
      `cannot read ${ext || "files without an extension"}`,
      "give a .yaml, .yml, .json, .ts or .js spec",
    );
  }
  if (MODULE.has(ext)) return loadSpecModule(file, opts.fresh === true);
  let text: string;
  try {
    text = await readFile(file, "utf8");
  } catch (err) {
    return fail(
      file,
      "E_SPEC_FILE_NOT_FOUND",
      `cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`,
      "check the path (it is relative to the current directory)",
    );
  }
  return { ...loadSpecText(text), file };
}

/**
 * Parses YAML or JSON text (JSON is YAML) and validates it.
 *
 * Two readers, one meaning: a fast one (js-yaml, YAML 1.2 core schema, duplicate keys refused) reads
 * valid specs; whenever it fails or the spec has errors, the text is read again by `yaml`'s document
 * parser, which keeps every node's position so each error carries its line and column. Texts with
 * anchors or aliases always take the position-keeping reader (it bounds alias expansion).
 * test/spec/load.test.ts checks that both readers give the same document.
 */
export function loadSpecText(text: string): ParseResult & { raw?: unknown } {
  if (!ALIAS_OR_ANCHOR.test(text)) {
    let raw: unknown;
    try {
      raw = fastLoad(text);
    } catch {
      raw = undefined; // the position-keeping reader reports the syntax error
    }
    if (raw !== undefined) {
      const result = parseSpec(raw);
      if (result.ok) return { ...result, raw };
    }
  }
  return loadWithPositions(text);
}

/**
 * YAML 1.2 core-schema integers as `yaml` reads them — decimal with an optional sign, unsigned 0o octal and
 * 0x hex. js-yaml's own also takes 0b binary and signed hex and octal (`port: 0b1111101000` validated, but
 * was a string to the position-keeping reader as soon as another error sent the text there).
 */
const CORE_INT = new fastYaml.Type("tag:yaml.org,2002:int", {
  kind: "scalar",
  resolve: (data: unknown) =>
    typeof data === "string" && /^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$/.test(data),
  construct: (data: string) =>
    data.startsWith("0o")
      ? parseInt(data.slice(2), 8)
      : data.startsWith("0x")
        ? parseInt(data.slice(2), 16)
        : parseInt(data, 10),
  predicate: (v: unknown) => Number.isInteger(v),
});
const FAST_SCHEMA = fastYaml.CORE_SCHEMA.extend({ implicit: [CORE_INT] });

/** The fast reader alone (YAML 1.2 core schema, duplicate keys refused); throws on a syntax error. */
export function fastLoad(text: string): unknown {
  return fastYaml.load(text, { schema: FAST_SCHEMA, json: false });
}

const MAX_ALIAS_COUNT = 100;

/** `&anchor` or `*alias` where YAML reads them: at the start of a value, after space, `[`, `{` or `,`. */
const ALIAS_OR_ANCHOR = /(?:^|[\s[{,])[&*][^\s,[\]{}]/m;

/** The reader that keeps positions: slower, used for error reports and for anchors/aliases. */
export function loadWithPositions(text: string): ParseResult & { raw?: unknown } {
  const lineCounter = new LineCounter();
  const doc = parseDocument(text, { lineCounter, uniqueKeys: true, prettyErrors: true, strict: true });
  if (doc.errors.length > 0) {
    // The first syntax error is the real one; the parser's recovery after it only produces noise.
    const errors: SpecError[] = doc.errors.slice(0, 1).map((e) => {
      const pos = e.linePos?.[0];
      const duplicate = e.code === "DUPLICATE_KEY";
      const sourceLine = pos ? (text.split("\n")[pos.line - 1] ?? "") : "";
      // `{param}` inside a flow list/map ([...] or {...}) is YAML syntax, not text: the common trap.
      const braceTrap = /[[{][^\n]*\/\{[A-Za-z_]/.test(sourceLine);
      return {
        code: duplicate ? "E_SPEC_DUPLICATE_KEY" : "E_SPEC_YAML_SYNTAX",
        path: "",
        message: e.message.split("\n")[0]!.replace(/ at line \d+, column \d+:?$/, ""),
        hint: duplicate
          ? "remove or rename one of the two keys"
          : braceTrap
            ? 'quote path patterns with {params} inside [ ] or { }: ["/orders/{id}"], or use a block list'
            : "fix the syntax at this line and column",
        ...(pos ? { line: pos.line, column: pos.col } : {}),
      };
    });
    return { ok: false, errors };
  }
  let raw: unknown;
  try {
    raw = doc.toJS({ maxAliasCount: MAX_ALIAS_COUNT });
  } catch (err) {
    // yaml refuses alias expansion beyond the limit ("billion laughs"); report it, never crash.
    return {
      ok: false,
      errors: [
        {
          code: "E_SPEC_YAML_SYNTAX",
          path: "",
          message: `the document expands too many aliases (${(err as Error).message})`,
          hint: `use at most ${MAX_ALIAS_COUNT} alias expansions, or write the values out`,
        },
      ],
    };
  }
  return { ...parseSpec(raw, locator(doc, lineCounter)), raw };
}

/** Imports made with `fresh`, so each gets a URL of its own. */
let freshImports = 0;

async function loadSpecModule(file: string, fresh: boolean): Promise<LoadResult> {
  let mod: { default?: unknown };
  try {
    const url = pathToFileURL(resolve(file));
    if (fresh) url.searchParams.set("meshgate-load", String(++freshImports));
    mod = (await import(url.href)) as { default?: unknown };
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === "ERR_MODULE_NOT_FOUND" && String((err as Error).message).includes(resolve(file))) {
      return fail(
        file,
        "E_SPEC_FILE_NOT_FOUND",
        `cannot read ${file}: ENOENT`,
        "check the path (it is relative to the current directory)",
      );
    }
    return fail(
      file,
      "E_SPEC_MODULE_LOAD",
      `loading ${file} threw: ${(err as Error).message.split("\n")[0]}`,
      "fix the module so that it loads (try running it with node)",
    );
  }
  if (!isMeshDefinition(mod.default)) {
    return fail(
      file,
      "E_SPEC_MODULE_EXPORT",
      `the default export of ${file} is not a mesh definition`,
      "end the module with `export default defineMesh({ ... })`",
    );
  }
  return { ...parseSpec(mod.default), raw: mod.default, file };
}

function fail(file: string, code: SpecError["code"], message: string, hint: string): LoadResult {
  return { ok: false, errors: [{ code, path: "", message, hint }], file };
}

/** Finds the source position of a path; for a missing node, its nearest existing ancestor. */
function locator(doc: Document, lines: LineCounter): Locator {
  return (segments: Segments, keyOf?: string) => {
    const pos = (offset: number | undefined) => {
      if (offset === undefined) return undefined;
      const p = lines.linePos(offset);
      return { line: p.line, column: p.col };
    };
    if (keyOf !== undefined) {
      const parent = doc.getIn(segments.slice(0, -1), true);
      if (isMap(parent)) {
        const pair = parent.items.find((it) => isScalar(it.key) && String(it.key.value) === keyOf);
        if (pair && isScalar(pair.key)) return pos(pair.key.range?.[0]);
      }
    }
    for (let n = segments.length; n >= 0; n--) {
      const node = doc.getIn(segments.slice(0, n), true) as { range?: [number, number, number] } | undefined;
      if (node && typeof node === "object" && node.range) return pos(node.range[0]);
    }
    return undefined;
  };
}
