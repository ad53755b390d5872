import { existsSync, readdirSync, readFileSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";
import { defineConfig } from "vitest/config";
import { BaseSequencer, type TestSpecification } from "vitest/node";

/**
 * The suite runs in two groups, one after the other (CI has 2 cores, and nearly every file is timed:
 * sockets, child processes, timeouts, so those run one file at a time, as they always did):
 *
 * 1. "quiet", two files at a time: the files that touch no socket, long-running process, timer or
 *    clock-measured wait — neither they nor a test/ module they import (product modules are not
 *    scanned: a quiet file only calls their pure functions; a command run to completion, such as
 *    openssl or the CLI, is quiet) — beside test/sidecar/rotation.test.ts, the 2-minute rotation run at
 *    200 rps, which leaves most of a core idle and is fine at that load (it falls behind only at a
 *    load average of 15 or more).
 * 2. "timed", one file at a time: everything else. A new file lands here unless the scan finds it
 *    quiet, so nothing timed ever shares the machine by accident.
 */
const TIMED = new RegExp(
  [
    String.raw`node:(net|http|https|http2|tls|dgram|worker_threads|cluster|timers)\b`,
    String.raw`\b(setTimeout|setInterval|performance\.now|chromium)\b`,
    String.raw`(?<![.\w])(spawn|fork|fetch|listen|sleep|until)\s*\(`,
  ].join("|"),
);
const SOAK = ["test/sidecar/rotation.test.ts"];
/** Timed through product code the scan does not read (the host probe's child samples a clock). */
const TIMED_FILES = ["test/bench/hostprobe.test.ts"];

function testFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? testFiles(join(dir, e.name)) : e.name.endsWith(".test.ts") ? [join(dir, e.name)] : [],
  );
}

/** True when the file, or a module under test/ it imports (transitively), matches TIMED. */
function timed(file: string, seen = new Set<string>()): boolean {
  if (seen.has(file)) return false;
  seen.add(file);
  if (!existsSync(file)) return false; // a path in a test's data, not a module
  const text = readFileSync(file, "utf8");
  if (TIMED.test(text)) return true;
  for (const m of text.matchAll(/(?:from|import)\s*\(?\s*"(\.{1,2}\/[^"]+)"/g)) {
    const target = resolve(dirname(file), m[1]!);
    if (relative("test", target).startsWith("..")) continue; // product code: not scanned
    if (timed(target, seen)) return true;
  }
  return false;
}

const quiet = testFiles("test")
  .map((f) => relative(".", f))
  .filter((f) => !SOAK.includes(f) && !TIMED_FILES.includes(f) && !timed(f));

/** Starts the soak run first, so that the quiet files share the machine with it, not the other way. */
class SoakFirst extends BaseSequencer {
  override async sort(files: TestSpecification[]): Promise<TestSpecification[]> {
    const sorted = await super.sort(files);
    const soak = (f: TestSpecification) => SOAK.some((s) => f.moduleId.endsWith(s));
    return [...sorted.filter(soak), ...sorted.filter((f) => !soak(f))];
  }
}

const shared = {
  pool: "forks" as const,
  testTimeout: 30_000,
  hookTimeout: 30_000,
};

export default defineConfig({
  test: {
    reporters: ["default", "./test/support/summary-reporter.ts"],
    sequence: { sequencer: SoakFirst },
    projects: [
      {
        test: {
          ...shared,
          name: "quiet",
          include: [...quiet, ...SOAK],
          maxWorkers: 2,
          sequence: { groupOrder: 0 },
        },
      },
      {
        test: {
          ...shared,
          name: "timed",
          include: ["test/**/*.test.ts"],
          exclude: [...quiet, ...SOAK],
          maxWorkers: 1,
          sequence: { groupOrder: 1 },
        },
      },
    ],
  },
});
