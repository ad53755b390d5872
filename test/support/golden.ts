import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { expect } from "vitest";

/**
 * Compares `actual` with the golden file, or rewrites the file when UPDATE_GOLDEN=1. A missing golden
 * file fails (it never silently passes): create it with UPDATE_GOLDEN=1 and review the diff.
 */
export function expectGolden(file: string, actual: string): void {
  if (process.env.UPDATE_GOLDEN === "1") {
    writeFileSync(file, actual);
    return;
  }
  if (!existsSync(file)) {
    throw new Error(
      `golden file ${file} is missing: run UPDATE_GOLDEN=1 npx vitest run <this test> and review it`,
    );
  }
  expect(actual, `${file} is stale: run with UPDATE_GOLDEN=1 and review the diff`).toBe(
    readFileSync(file, "utf8"),
  );
}
