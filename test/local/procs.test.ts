/** The cleanup sweep the end-to-end tests use: it finds and kills exactly the processes naming a marker. */
import { spawn } from "node:child_process";
import { randomUUID } from "node:crypto";
import { describe, expect, it } from "vitest";
import { killProcessesMentioning, pidsMentioning } from "../support/procs.ts";

describe("killProcessesMentioning", () => {
  it("kills_the_processes_whose_command_line_names_the_marker_and_no_other", async () => {
    const marker = `/tmp/meshgate-sweep-${randomUUID()}`;
    const spawnIdle = (arg: string) =>
      spawn(process.execPath, ["-e", "setTimeout(() => {}, 30000)", arg], { stdio: "ignore" });
    const marked = [spawnIdle(marker), spawnIdle(`${marker}/run/x.json`)];
    const other = spawnIdle(`/tmp/meshgate-other-${randomUUID()}`);
    try {
      await new Promise((r) => setTimeout(r, 200));
      expect(pidsMentioning(marker).sort()).toEqual(marked.map((c) => c.pid).sort());
      const exits = marked.map((c) => new Promise((r) => c.on("exit", (_code, signal) => r(signal))));
      expect(killProcessesMentioning(marker)).toBe(2);
      expect(await Promise.all(exits)).toEqual(["SIGKILL", "SIGKILL"]);
      expect(other.exitCode).toBeNull();
      expect(pidsMentioning(marker)).toEqual([]);
    } finally {
      for (const c of [...marked, other]) c.kill("SIGKILL");
    }
  });
});
