/**
 * runtime/contract/reload.ts, the one reload procedure of the gateway and the sidecar: what is rejected
 * (and that the old config then keeps serving), what is counted and logged, and that reloads run one
 * after another. The proxies' own reload tests (test/gateway, test/sidecar) run it for real.
 */
import { mkdirSync, mkdtempSync, renameSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import os from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { RuntimeConfigError } from "../../runtime/contract/errors.ts";
import { createReloader, watchConfigFile, type ReloadResult } from "../../runtime/contract/reload.ts";
import { MetricsRegistry } from "../../runtime/telemetry/metrics.ts";
import { capturedLogger } from "../auth/support.ts";

interface Config {
  readonly hash: string;
}

const tmp = mkdtempSync(join(os.tmpdir(), "meshgate-reload-"));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

/** A reloader over configs written as `{"hash": …}`, with hooks that record what ran and can be told to fail. */
function rig(
  opts: {
    configPath?: string;
    fail?: "unchanged" | "check" | "build" | "commit";
    buildMs?: number;
    /** A hook that itself throws (a defect): the reload fails, later ones must still run. */
    brokenUndo?: boolean;
  } = {},
) {
  const registry = new MetricsRegistry({ prefix: "meshgate_" });
  const reloads = registry.counter("config_reloads_total", "reloads", ["proxy", "result"]);
  const info = registry.gauge("config_info", "config", ["proxy", "hash"]);
  info.labels("gateway", "h1").set(1);
  const log = capturedLogger();
  const calls: string[] = [];
  let serving: Config = { hash: "h1" };
  const reload = createReloader<Config, Config>({
    proxy: "gateway",
    ...(opts.configPath ? { configPath: opts.configPath } : {}),
    metrics: { reloads, info },
    log: log.logger,
    current: () => serving,
    load: (text) => {
      const parsed = JSON.parse(text) as { hash?: unknown };
      if (typeof parsed.hash !== "string")
        throw Object.assign(new Error("hash: required"), { code: "E_RT_CONFIG_INVALID" });
      return { hash: parsed.hash };
    },
    unchanged: async (next) => {
      calls.push(`unchanged ${next.hash}`);
      if (opts.fail === "unchanged") throw Object.assign(new Error("ENOENT: cert.pem"), { code: "ENOENT" });
    },
    check: (current, next) => {
      calls.push(`check ${current.hash} → ${next.hash}`);
      if (opts.fail === "check")
        throw new RuntimeConfigError(
          "E_RT_RELOAD_RESTART_REQUIRED",
          "the new config changes listeners.web.port",
        );
    },
    build: async (next) => {
      calls.push(`build ${next.hash}`);
      if (opts.buildMs) await new Promise((r) => setTimeout(r, opts.buildMs));
      if (opts.fail === "build") throw Object.assign(new Error("cannot read ca.pem"), { code: "ENOENT" });
      return next;
    },
    buildFailed: () => {
      calls.push("buildFailed");
      if (opts.brokenUndo) throw new Error("undo failed");
    },
    discard: (built) => calls.push(`discard ${built.hash}`),
    commit: (next, built) => {
      calls.push(`commit ${next.hash}`);
      if (opts.fail === "commit") throw new Error("the new identity did not start");
      serving = built;
    },
  });
  const metric = (line: string) => {
    const m = new RegExp(`^meshgate_${line.replace(/[{}]/g, "\\$&")} (\\S+)$`, "m").exec(registry.render());
    return m ? Number(m[1]) : 0;
  };
  /** The sample lines of one metric. */
  const series = (name: string) =>
    registry
      .render()
      .split("\n")
      .filter((l) => l.startsWith(`meshgate_${name}{`))
      .map((l) => l.slice("meshgate_".length));
  return { reload, calls, serving: () => serving.hash, metric, series, log };
}

/** The hooks of two reloads run one after the other: h1 → h2, then h2 → h3. */
const H2_THEN_H3 = ["check h1 → h2", "build h2", "commit h2", "check h2 → h3", "build h3", "commit h3"];

const CONFIG_FILE = join(tmp, "config.json");
writeFileSync(CONFIG_FILE, JSON.stringify({ hash: "from-file" }));

describe("config reload: rejections keep the old config serving", () => {
  it.each<{
    claim: string;
    rig: Parameters<typeof rig>[0];
    text: string | undefined;
    code: string;
    calls: string[];
    message: RegExp;
  }>([
    {
      claim: "text that is not JSON is rejected with the loader's error",
      rig: {},
      text: "{",
      code: "E_RT_CONFIG_INVALID",
      calls: [],
      message: /JSON/,
    },
    {
      claim: "an invalid config is rejected with the loader's code, nothing built",
      rig: {},
      text: "{}",
      code: "E_RT_CONFIG_INVALID",
      calls: [],
      message: /hash: required/,
    },
    {
      claim: "a reload without text and without a config file is rejected as E_RT_CONFIG_JSON",
      rig: {},
      text: undefined,
      code: "E_RT_CONFIG_JSON",
      calls: [],
      message: /no config file/,
    },
    {
      claim:
        "an unchanged config whose certificates cannot be re-read is E_RT_CONFIG_INVALID, not the fs code",
      rig: { fail: "unchanged" },
      text: '{"hash":"h1"}',
      code: "E_RT_CONFIG_INVALID",
      calls: ["unchanged h1"],
      message: /cert\.pem/,
    },
    {
      claim:
        "a config the running proxy cannot apply is refused with the check's own code before anything is built",
      rig: { fail: "check" },
      text: '{"hash":"h2"}',
      code: "E_RT_RELOAD_RESTART_REQUIRED",
      calls: ["check h1 → h2"],
      message: /listeners\.web\.port/,
    },
    {
      claim: "a config whose state cannot be built is rejected and the build undone, nothing committed",
      rig: { fail: "build" },
      text: '{"hash":"h2"}',
      code: "E_RT_CONFIG_INVALID",
      calls: ["check h1 → h2", "build h2", "buildFailed"],
      message: /ca\.pem/,
    },
    {
      claim:
        "a swap that throws before swapping is a rejection, not a crash, and the built state is released",
      rig: { fail: "commit" },
      text: '{"hash":"h2"}',
      code: "E_RT_CONFIG_INVALID",
      calls: ["check h1 → h2", "build h2", "commit h2", "discard h2"],
      message: /identity did not start/,
    },
  ])("$claim", async ({ rig: o, text, code, calls, message }) => {
    const r = rig(o);
    const result = await r.reload(text);
    expect(result).toMatchObject({ ok: false, code });
    expect((result as { error: string }).error).toMatch(message);
    expect(r.calls).toEqual(calls);
    expect(r.serving()).toBe("h1");
    expect(r.metric('config_reloads_total{proxy="gateway",result="failure"}')).toBe(1);
    expect(r.metric('config_info{proxy="gateway",hash="h1"}')).toBe(1);
    const rejected = r.log.lines().filter((l) => l.event === "reload_rejected");
    expect(rejected).toHaveLength(1);
    expect(rejected[0]).toMatchObject({ code, level: 50 });
  });
});

describe("config reload: accepted configs", () => {
  it("a new config is built, committed, counted, and replaces config_info by its hash", async () => {
    const r = rig();
    expect(await r.reload('{"hash":"h2"}')).toEqual({ ok: true, hash: "h2", changed: true });
    expect(r.calls).toEqual(["check h1 → h2", "build h2", "commit h2"]);
    expect(r.serving()).toBe("h2");
    expect(r.series("config_info")).toEqual(['config_info{proxy="gateway",hash="h2"} 1']);
    expect(r.metric('config_reloads_total{proxy="gateway",result="success"}')).toBe(1);
    expect(r.log.lines().find((l) => l.event === "reloaded")).toMatchObject({ hash: "h2" });
  });

  it("the same config only refreshes (certificates), builds nothing and is counted unchanged", async () => {
    const r = rig();
    expect(await r.reload('{"hash":"h1"}')).toEqual({ ok: true, hash: "h1", changed: false });
    expect(r.calls).toEqual(["unchanged h1"]);
    expect(r.metric('config_reloads_total{proxy="gateway",result="unchanged"}')).toBe(1);
  });

  it("a reload without text re-reads the config file", async () => {
    const r = rig({ configPath: CONFIG_FILE });
    expect(await r.reload()).toEqual({ ok: true, hash: "from-file", changed: true });
  });

  it("reloads run one after another: the second starts when the first has committed", async () => {
    const r = rig({ buildMs: 30 });
    const results: ReloadResult[] = await Promise.all([r.reload('{"hash":"h2"}'), r.reload('{"hash":"h3"}')]);
    expect(r.calls).toEqual(H2_THEN_H3);
    expect(results.map((x) => x.ok && x.hash)).toEqual(["h2", "h3"]);
    expect(r.serving()).toBe("h3");
  });

  it("a reload that throws unexpectedly (a broken hook) does not block the ones after it", async () => {
    const r = rig({ fail: "build", brokenUndo: true });
    const first = r.reload('{"hash":"h2"}');
    const second = r.reload('{"hash":"h1"}');
    await expect(first).rejects.toThrow("undo failed");
    expect(await second).toEqual({ ok: true, hash: "h1", changed: false });
  });

  it("a rejected reload does not block the ones after it", async () => {
    const r = rig();
    const [bad, good] = await Promise.all([r.reload("{"), r.reload('{"hash":"h2"}')]);
    expect(bad.ok).toBe(false);
    expect(good).toEqual({ ok: true, hash: "h2", changed: true });
  });
});

describe("config reload in two phases (a gateway worker's prepare, then commit or abort)", () => {
  it("a prepared config is built but not served until committed, then counted like a reload", async () => {
    const r = rig();
    const p = await r.reload.prepare('{"hash":"h2"}');
    expect(p.result).toEqual({ ok: true, hash: "h2", changed: true });
    expect(r.calls).toEqual(["check h1 → h2", "build h2"]);
    expect(r.serving()).toBe("h1");
    expect(r.metric('config_reloads_total{proxy="gateway",result="success"}')).toBe(0);
    expect(await p.commit()).toEqual({ ok: true, hash: "h2", changed: true });
    expect(r.serving()).toBe("h2");
    expect(r.metric('config_info{proxy="gateway",hash="h2"}')).toBe(1);
    expect(r.metric('config_reloads_total{proxy="gateway",result="success"}')).toBe(1);
  });

  it("an aborted config is released, never served, and counted a failure with E_RT_RELOAD_ABORTED", async () => {
    const r = rig();
    const p = await r.reload.prepare('{"hash":"h2"}');
    expect(p.abort("worker 1 refused it")).toMatchObject({ ok: false, code: "E_RT_RELOAD_ABORTED" });
    expect(r.calls).toEqual(["check h1 → h2", "build h2", "discard h2"]);
    expect(r.serving()).toBe("h1");
    expect(r.metric('config_reloads_total{proxy="gateway",result="failure"}')).toBe(1);
    expect(r.log.lines().find((l) => l.event === "reload_rejected")).toMatchObject({
      code: "E_RT_RELOAD_ABORTED",
      message: "worker 1 refused it",
    });
    // Once aborted it cannot be committed.
    expect(await p.commit()).toMatchObject({ ok: false, code: "E_RT_RELOAD_ABORTED" });
    expect(r.serving()).toBe("h1");
  });

  it("a prepared config holds the queue: a reload asked meanwhile runs after the commit", async () => {
    const r = rig();
    const p = await r.reload.prepare('{"hash":"h2"}');
    const later = r.reload('{"hash":"h3"}');
    await new Promise((res) => setTimeout(res, 20));
    expect(r.calls).toEqual(["check h1 → h2", "build h2"]);
    await p.commit();
    expect(await later).toEqual({ ok: true, hash: "h3", changed: true });
    expect(r.calls).toEqual(H2_THEN_H3);
  });

  it("a prepared config nobody commits is aborted after the hold time and frees the queue", async () => {
    const r = rig();
    const p = await r.reload.prepare('{"hash":"h2"}', 30);
    expect(await r.reload('{"hash":"h3"}')).toEqual({ ok: true, hash: "h3", changed: true });
    expect(r.calls).toEqual([
      "check h1 → h2",
      "build h2",
      "discard h2",
      "check h1 → h3",
      "build h3",
      "commit h3",
    ]);
    expect(await p.commit()).toMatchObject({ ok: false, code: "E_RT_RELOAD_ABORTED" });
    expect(r.log.lines().find((l) => l.code === "E_RT_RELOAD_ABORTED")?.message).toMatch(
      /not committed within 30 ms/,
    );
  });

  it.each<{ claim: string; rig: Parameters<typeof rig>[0]; text: string; result: Partial<ReloadResult> }>([
    {
      claim: "a refused config is refused at prepare, holds nothing, and its commit returns the refusal",
      rig: { fail: "check" },
      text: '{"hash":"h2"}',
      result: { ok: false, code: "E_RT_RELOAD_RESTART_REQUIRED" },
    },
    {
      claim: "an unchanged config is refreshed at prepare and its commit swaps nothing",
      rig: {},
      text: '{"hash":"h1"}',
      result: { ok: true, hash: "h1", changed: false },
    },
  ])("$claim", async ({ rig: o, text, result }) => {
    const r = rig(o);
    const p = await r.reload.prepare(text);
    expect(p.result).toMatchObject(result);
    expect(await p.commit()).toMatchObject(result);
    expect(r.calls.some((c) => c.startsWith("commit"))).toBe(false);
    // Nothing is held: the next reload runs at once.
    expect(await r.reload('{"hash":"h1"}')).toMatchObject({ ok: true, hash: "h1" });
  });
});

describe("config file watch (watchConfigFile): every change is seen, however the file is replaced", () => {
  /**
   * Ways a config file changes: written in place, saved atomically (a temporary file renamed over it: a new
   * inode), and a mounted ConfigMap's update (kubelet: a new timestamped directory, `..data` swapped to it,
   * the old directory removed; the file is a symlink through `..data`). A watch on the file itself follows
   * the first inode and saw only the first replacement.
   */
  const STYLES: readonly {
    style: string;
    setup(dir: string): string;
    write(dir: string, n: number): void;
  }[] = [
    {
      style: "written in place",
      setup: (dir) => (writeFileSync(join(dir, "c.json"), "0"), join(dir, "c.json")),
      write: (dir, n) => writeFileSync(join(dir, "c.json"), String(n)),
    },
    {
      style: "saved atomically (temporary file renamed over it)",
      setup: (dir) => (writeFileSync(join(dir, "c.json"), "0"), join(dir, "c.json")),
      write: (dir, n) => {
        writeFileSync(join(dir, "c.json.tmp"), String(n));
        renameSync(join(dir, "c.json.tmp"), join(dir, "c.json"));
      },
    },
    {
      style: "reached through a symlink to another directory, written in place there",
      setup: (dir) => {
        mkdirSync(join(dir, "real"));
        writeFileSync(join(dir, "real", "gateway.json"), "0");
        mkdirSync(join(dir, "etc"));
        symlinkSync(join(dir, "real", "gateway.json"), join(dir, "etc", "c.json"));
        return join(dir, "etc", "c.json");
      },
      write: (dir, n) => writeFileSync(join(dir, "real", "gateway.json"), String(n)),
    },
    {
      style: "in a Kubernetes ConfigMap volume (..data symlink swap)",
      setup: (dir) => {
        mkdirSync(join(dir, "..v0"));
        writeFileSync(join(dir, "..v0", "c.json"), "0");
        symlinkSync("..v0", join(dir, "..data"));
        symlinkSync(join("..data", "c.json"), join(dir, "c.json"));
        return join(dir, "c.json");
      },
      write: (dir, n) => {
        mkdirSync(join(dir, `..v${n}`));
        writeFileSync(join(dir, `..v${n}`, "c.json"), String(n));
        symlinkSync(`..v${n}`, join(dir, "..data_tmp"));
        renameSync(join(dir, "..data_tmp"), join(dir, "..data"));
        rmSync(join(dir, `..v${n - 1}`), { recursive: true });
      },
    },
  ];

  for (const { style, setup, write } of STYLES) {
    it(`a config file ${style} is seen changed each time, not only the first`, async () => {
      const dir = mkdtempSync(join(tmp, "watch-"));
      const path = setup(dir);
      let changes = 0;
      const watcher = watchConfigFile(path, () => changes++);
      try {
        for (let n = 1; n <= 3; n++) {
          // Past the 100 ms debounce, and a distinct mtime.
          await new Promise((r) => setTimeout(r, 50));
          write(dir, n);
          const deadline = Date.now() + 3000;
          while (changes < n && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
          expect(changes, `change ${n}`).toBe(n);
        }
        // Other files of the directory changing are not the config's change.
        writeFileSync(join(dir, "other.txt"), "x");
        await new Promise((r) => setTimeout(r, 300));
        expect(changes).toBe(3);
      } finally {
        watcher.close();
      }
    });
  }
});
