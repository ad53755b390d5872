/** The `meshgate` command as a user runs it: a real process, real files, exit codes and output. */
import { execFile, spawn } from "node:child_process";
import { mkdtemp, readFile, readdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadRuntimeConfig } from "../../runtime/contract/index.ts";
import { freeBlock } from "../support/ports.ts";
import { killProcessesMentioning, pidsMentioning } from "../support/procs.ts";
import { TINY } from "../support/tiny-mesh.ts";

const run = promisify(execFile);
const ROOT = new URL("../../", import.meta.url).pathname;
const BIN = join(ROOT, "bin/meshgate.js");

interface Result {
  code: number;
  stdout: string;
  stderr: string;
}

async function meshgate(args: string[], nodeArgs: string[] = []): Promise<Result> {
  try {
    const { stdout, stderr } = await run(process.execPath, [...nodeArgs, BIN, ...args], { cwd: ROOT });
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code: number; stdout: string; stderr: string };
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "meshgate-cli-"));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

const BROKEN = `name: shop
trustDomain: shop.example
services:
  orders:
    image: ghcr.io/acme/orders:1.4.2
    port: 8080
    timout: 2s
    allow:
      - from: [gatway]
gateway:
  hosts: [api.shop.example]
  routes:
    - name: list
      match:
        path: /api/orders
      to: orders
`;

describe("meshgate validate", () => {
  it("exits_0_for_the_shop_example", async () => {
    const r = await meshgate(["validate", "examples/shop/mesh.yaml"]);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain("✓ examples/shop/mesh.yaml is valid: 9 services, 14 gateway routes");
  });

  it("exits_0_for_the_typescript_variant", async () => {
    const r = await meshgate(["validate", "examples/shop/mesh.ts"]);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain("is valid: 9 services");
  });

  it("exits_1_and_lists_every_error_with_position_and_fix", async () => {
    const file = join(dir, "broken.yaml");
    await writeFile(file, BROKEN);
    const r = await meshgate(["validate", file]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(
      `${file}:7:5: services.orders.timout: unknown key "timout" (did you mean "timeout"?) [E_SPEC_UNKNOWN_KEY]`,
    );
    expect(r.stderr).toContain(
      `${file}:9:16: services.orders.allow[0].from[0]: unknown service "gatway" (did you mean "gateway"?) [E_SPEC_UNKNOWN_REFERENCE]`,
    );
    expect(r.stderr).toContain(
      `${file}:13:7: gateway.routes[0]: route "list" has no auth [E_SPEC_ROUTE_WITHOUT_AUTH]`,
    );
    expect(r.stderr).toContain("fix: ");
    expect(r.stderr).toContain("✗");
    expect(r.stderr).toContain("3 errors");
  });

  it("prints_json_with_errors_and_summary", async () => {
    const bad = JSON.parse(
      (await meshgate(["validate", join(dir, "broken.yaml"), "--format", "json"])).stdout,
    );
    expect(bad.valid).toBe(false);
    expect(bad.errors.map((e: { code: string }) => e.code)).toEqual([
      "E_SPEC_UNKNOWN_KEY",
      "E_SPEC_UNKNOWN_REFERENCE",
      "E_SPEC_ROUTE_WITHOUT_AUTH",
    ]);
    const good = JSON.parse(
      (await meshgate(["validate", "examples/shop/mesh.yaml", "--format", "json"])).stdout,
    );
    expect(good).toMatchObject({
      valid: true,
      errors: [],
      summary: { services: 9, gatewayRoutes: 14, identities: 10 },
    });
  });

  it("reports_a_missing_file", async () => {
    const r = await meshgate(["validate", "nope/mesh.yaml"]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain("cannot read nope/mesh.yaml: ENOENT [E_SPEC_FILE_NOT_FOUND]");
  });

  it("reports_a_yaml_syntax_error_with_line_and_column", async () => {
    const file = join(dir, "syntax.yaml");
    await writeFile(file, "name: shop\nservices:\n  orders: [a\n");
    const r = await meshgate(["validate", file]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(new RegExp(`${file}:\\d+:\\d+: .*\\[E_SPEC_YAML_SYNTAX\\]`));
  });
});

describe("meshgate translate", () => {
  it("prints_the_ir_as_yaml_by_default_and_json_on_request", async () => {
    const yaml = await meshgate(["translate", "examples/shop/mesh.yaml", "--part", "infra"]);
    expect(yaml.code).toBe(0);
    expect(yaml.stdout).toContain("trustDomain: shop.example");
    const json = JSON.parse(
      (await meshgate(["translate", "examples/shop/mesh.yaml", "--format", "json"])).stdout,
    );
    expect(Object.keys(json)).toEqual(["infra", "runtime", "diagnostics"]);
    expect(json.runtime.sidecars).toHaveLength(9);
  });

  it("writes_configs_the_data_plane_loads", async () => {
    const out = join(dir, "config");
    const r = await meshgate(["translate", "examples/shop/mesh.yaml", "--out", out]);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain(`wrote 11 files to ${out}`);
    const gateway = loadRuntimeConfig(await readFile(join(out, "gateway.json"), "utf8"), "gateway");
    expect(gateway.name).toBe("gateway");
    const sidecars = await readdir(join(out, "sidecars"));
    expect(sidecars.sort()).toEqual(
      [
        "catalog",
        "catalog-v2",
        "inventory",
        "notifications",
        "orders",
        "payments",
        "search",
        "search-next",
        "users",
      ]
        .map((s) => `${s}.json`)
        .sort(),
    );
    for (const f of sidecars)
      expect(loadRuntimeConfig(await readFile(join(out, "sidecars", f), "utf8"), "sidecar").kind).toBe(
        "sidecar",
      );
  });

  it("exits_1_on_an_invalid_spec_and_writes_nothing", async () => {
    const out = join(dir, "not-written");
    const r = await meshgate(["translate", join(dir, "broken.yaml"), "--out", out]);
    expect(r.code).toBe(1);
    await expect(readdir(out)).rejects.toThrow();
  });
});

describe("usage", () => {
  it.each(["validate", "translate"])("%s_has_help", async (command) => {
    const r = await meshgate([command, "--help"]);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain(`Usage: meshgate ${command}`);
  });

  it("lists_the_commands", async () => {
    const r = await meshgate(["--help"]);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/validate .*\n.*translate/);
  });

  it.each([
    ["rejects_an_unknown_command", ["frobnicate"], "unknown command"],
    ["rejects_an_unknown_flag", ["validate", "examples/shop/mesh.yaml", "--colour"], "Unknown option"],
    [
      "rejects_a_bad_format",
      ["validate", "examples/shop/mesh.yaml", "--format", "xml"],
      "expected one of text, json",
    ],
    ["requires_a_spec", ["validate"], "missing SPEC"],
    ["rejects_extra_arguments", ["validate", "a.yaml", "b.yaml"], "unexpected argument"],
    [
      "up_rejects_two_different_gateway_ports",
      ["up", "examples/shop/mesh.yaml", "--port", "8181", "--gateway-port", "8282"],
      "--port and --gateway-port name the same port",
    ],
    [
      "gateway_rejects_an_admin_port_above_65535",
      ["gateway", "--config", "no-such-gateway.json", "--admin-port", "99999"],
      '--admin-port must be a port number from 0 to 65535, got "99999"',
    ],
    [
      "sidecar_rejects_an_outbound_port_above_65535",
      ["sidecar", "--config", "no-such-sidecar.json", "--outbound-port", "65536"],
      '--outbound-port must be a port number from 0 to 65535, got "65536"',
    ],
    [
      "explain_rejects_a_port_above_65535_whatever_the_caller",
      [
        "explain",
        "examples/shop/mesh.yaml",
        "--from",
        "internet",
        "--path",
        "/api/orders",
        "--port",
        "99999",
      ],
      '--port must be a port number from 1 to 65535, got "99999"',
    ],
    [
      "explain_rejects_port_0",
      ["explain", "examples/shop/mesh.yaml", "--from", "payments", "--to", "card-processor", "--port", "0"],
      '--port must be a port number from 1 to 65535, got "0"',
    ],
    [
      "explain_rejects_a_port_on_an_internet_request_instead_of_ignoring_it",
      ["explain", "examples/shop/mesh.yaml", "--from", "internet", "--path", "/api/orders", "--port", "443"],
      "--port a port is given only for a service's request to a destination outside the mesh",
    ],
    [
      "a_single_valued_flag_given_twice_is_refused_not_last_wins",
      [
        "explain",
        "examples/shop/mesh.yaml",
        "--from",
        "internet",
        "--path",
        "/api/orders",
        "--path",
        "/admin",
      ],
      "--path given twice",
    ],
    [
      "a_flag_given_twice_in_the_equals_form_is_refused",
      ["gateway", "--config=a.json", "--config=b.json"],
      "--config given twice",
    ],
    [
      "a_pki_flag_given_twice_is_refused",
      ["pki", "init", "--trust-domain", "a.example", "--trust-domain", "b.example", "--out", "/dev/null/ca"],
      "--trust-domain given twice",
    ],
    [
      "up_rejects_a_port_that_is_not_one",
      ["up", "examples/shop/mesh.yaml", "--port", "80a"],
      "--port must be a port",
    ],
  ])("%s", async (_claim, args, message) => {
    const r = await meshgate(args);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain(message);
  });

  it("a_multi_valued_flag_still_repeats", async () => {
    const r = await meshgate([
      "explain",
      "examples/shop/mesh.yaml",
      "--from",
      "internet",
      "--path",
      "/api/orders",
      "--header",
      "x-a:1",
      "--header",
      "x-b:2",
    ]);
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    expect(r.stdout).toContain("route list-orders matches");
  });

  // --out naming a file (or a path through one): exit 1 with the path and the errno, never a stack trace.
  it.each([
    ["translate_writes_nowhere_through_a_file", ["translate", "examples/shop/mesh.yaml", "--out"], "ENOTDIR"],
    [
      "observability_writes_nowhere_through_a_file",
      ["observability", "examples/shop/mesh.yaml", "--out"],
      "ENOTDIR",
    ],
    ["synth_writes_no_manifests_over_a_file", ["synth", "examples/shop/mesh.yaml", "--out"], "EEXIST"],
    ["pki_init_writes_no_ca_over_a_file", ["pki", "init", "--trust-domain", "a.example", "--out"], "EEXIST"],
  ])("%s", async (_claim, args, errno) => {
    const file = join(dir, "a-file");
    await writeFile(file, "not a directory\n");
    const r = await meshgate([...args, file]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`cannot mkdir ${file}`);
    expect(r.stderr).toContain(errno);
    expect(r.stderr).toContain("fix: ");
    expect(r.stderr).not.toMatch(/\n\s+at /);
  });

  it("refuses_a_node_without_type_stripping_with_a_clear_message", async () => {
    const r = await meshgate(["--help"], ["--no-experimental-strip-types"]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain("meshgate needs Node.js 24 or newer");
  });
});

describe("meshgate up", () => {
  it("a_ctrl_c_while_it_starts_stops_every_child_started_so_far_and_exits_130", async () => {
    // The children lead their own process groups, so the terminal's SIGINT reaches only the launcher:
    // one that died of it would leave them running, holding their ports. The app here never gets ready.
    const upDir = await mkdtemp(join(tmpdir(), "meshgate-up-intr-"));
    try {
      const never = `["${process.execPath}", "-e", "setTimeout(() => {}, 60000)", "${upDir}"]`;
      await writeFile(
        join(upDir, "mesh.yaml"),
        TINY.replace("image: example/web:1\n", `image: example/web:1\n    local:\n      command: ${never}\n`),
      );
      const base = await freeBlock(40);
      const child = spawn(
        process.execPath,
        [BIN, "up", join(upDir, "mesh.yaml"), "--no-prometheus", "--port", String(base), "--admin-port",
          String(base + 1), "--port-base", String(base + 10), "--state-dir", join(upDir, "state")],
        { cwd: upDir, stdio: ["ignore", "pipe", "pipe"] },
      ); // prettier-ignore
      let text = "";
      child.stdout!.on("data", (d: Buffer) => (text += d.toString()));
      child.stderr!.on("data", (d: Buffer) => (text += d.toString()));
      const exited = new Promise<number | null>((r) => child.on("exit", (code) => r(code)));
      const children = () => pidsMentioning(upDir).filter((p) => p !== child.pid);
      const deadline = Date.now() + 20_000;
      while (children().length < 3) {
        if (Date.now() > deadline || child.exitCode !== null) throw new Error(`never started:\n${text}`);
        await new Promise((r) => setTimeout(r, 100));
      }
      child.kill("SIGINT");
      const code = await Promise.race([exited, new Promise((r) => setTimeout(() => r("no exit"), 20_000))]);
      if (child.exitCode === null) child.kill("SIGKILL");
      expect({ code, left: children() }).toEqual({ code: 130, left: [] });
      expect(text).toContain("[E_LOCAL_INTERRUPTED]");
    } finally {
      killProcessesMentioning(upDir);
      await rm(upDir, { recursive: true, force: true });
    }
  }, 60_000);
});
