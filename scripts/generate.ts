/** Writes every generated artefact (`npm run schema`). */
import { mkdirSync, writeFileSync } from "node:fs";
import { dirname } from "node:path";
import { artefacts } from "./generated.ts";

const root = new URL("../", import.meta.url);
for (const a of artefacts()) {
  const target = new URL(a.path, root);
  mkdirSync(dirname(target.pathname), { recursive: true });
  writeFileSync(target, a.content);
  console.log(`wrote ${a.path}`);
}
