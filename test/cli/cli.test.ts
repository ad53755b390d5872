/** The `meshgate` command as a user runs it: a real process, real files, exit codes and output. */
import { execFile, spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { chmod, chown, mkdir, mkdtemp, readFile, readdir, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadRuntimeConfig } from "../../runtime/contract/index.ts";
import { freeBlock } from "../support/ports.ts";
import { alive, killProcessesMentioning, pidsMentioning, spawnUp } from "../support/procs.ts";
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

  it("writes_configs_holding_a_credential_readable_by_their_owner_only_even_over_wider_files", async () => {
    // The chart puts such configs in Secrets; on disk they were world-readable (0644 under the usual umask).
    const out = join(dir, "config-with-credentials");
    const spec = join(dir, "shop-with-credentials.yaml");
    const shop = await readFile(join(ROOT, "examples/shop/mesh.yaml"), "utf8");
    const tracing = "tracing: { sampling: 0.1, backend: tempo }";
    expect(shop).toContain(tracing);
    await writeFile(
      spec,
      shop.replace(
        tracing,
        'tracing: { sampling: 0.1, otlpEndpoint: "https://otel:s3cret@collector.example:4318" }',
      ),
    );
    await mkdir(join(out, "sidecars"), { recursive: true });
    await writeFile(join(out, "gateway.json"), "{}", { mode: 0o644 }); // an earlier run's, wider
    const r = await meshgate(["translate", spec, "--out", out]);
    expect(r.code, r.stderr).toBe(0);
    const files = [
      "infra.json",
      "gateway.json",
      ...(await readdir(join(out, "sidecars"))).map((f) => `sidecars/${f}`),
    ];
    expect(files.length).toBe(11);
    for (const f of files) {
      expect(await readFile(join(out, f), "utf8"), f).toContain("s3cret");
      expect((await stat(join(out, f))).mode & 0o777, f).toBe(0o600);
    }
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

  it.each([
    ["up", ["up"], "meshgate up — run the whole mesh"],
    ["validate", ["validate"], "Usage: meshgate validate"],
    ["a_group", ["pki"], "Usage: meshgate pki <subcommand>"],
    ["a_subcommand", ["pki", "issue"], "Usage: meshgate pki issue"],
  ])("help_names_the_same_text_as_--help_for_%s", async (_name, topic, text) => {
    const viaHelp = await meshgate(["help", ...topic]);
    const viaFlag = await meshgate([...topic, "--help"]);
    expect([viaHelp.code, viaFlag.code]).toEqual([0, 0]);
    expect(viaHelp.stdout).toContain(text);
    expect(viaHelp.stdout).toBe(viaFlag.stdout);
  });

  it("help_refuses_an_unknown_topic_and_lists_the_commands", async () => {
    const r = await meshgate(["help", "frobnicate"]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('no command "frobnicate"');
    expect(r.stderr).toMatch(/validate .*\n.*translate/);
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
    [
      "up_rejects_an_svid_ttl_above_a_year_instead_of_dying_on_the_certificate",
      ["up", "examples/shop/mesh.yaml", "--svid-ttl", "100000000000d", "--state-dir", "/tmp/rv5-state-none"],
      '--svid-ttl must be at most 365d, got "100000000000d"',
    ],
    [
      "token_rejects_a_ttl_above_30_days",
      ["token", "--ttl", "1000000y", "--state-dir", "/tmp/rv5-state-none"],
      '--ttl must be at most 30d, got "1000000y"',
    ],
    [
      "token_rejects_a_ttl_of_1e25_seconds",
      ["token", "--ttl", "9999999999999999999999999s", "--state-dir", "/tmp/rv5-state-none"],
      "--ttl must be at most 30d",
    ],
    [
      "token_rejects_an_empty_subject",
      ["token", "--sub", "", "--state-dir", "/tmp/rv5-state-none"],
      "--sub must not be empty: give the subject, e.g. --sub alice",
    ],
    [
      "token_rejects_an_empty_audience_instead_of_asking_for_one",
      ["token", "--aud", "", "--state-dir", "/tmp/rv5-state-none"],
      "--aud must not be empty: give an audience of the spec's JWT providers, or leave --aud out",
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

/**
 * Runs `meshgate up` on TINY until it settles: it exits by itself (its code and output), or it comes
 * up ("Ctrl-C drains": stopped again with SIGINT, `cameUp` true), or 60 s pass (killed: code "no exit").
 */
async function upUntilSettled(
  upDir: string,
  extra: string[] = [],
): Promise<{ code: number | null | "no exit"; text: string; cameUp: boolean }> {
  const base = await freeBlock(40);
  const child = spawn(
    process.execPath,
    [BIN, "up", join(upDir, "mesh.yaml"), "--no-prometheus", "--port", String(base), "--admin-port",
      String(base + 1), "--port-base", String(base + 10), "--state-dir", join(upDir, "state"), ...extra],
    { cwd: upDir, stdio: ["ignore", "pipe", "pipe"] },
  ); // prettier-ignore
  let text = "";
  child.stdout!.on("data", (d: Buffer) => (text += d.toString()));
  child.stderr!.on("data", (d: Buffer) => (text += d.toString()));
  const exited = new Promise<number | null>((r) => child.on("exit", (code) => r(code)));
  const deadline = Date.now() + 60_000;
  let cameUp = false;
  while (child.exitCode === null && child.signalCode === null && Date.now() < deadline) {
    if (!cameUp && text.includes("Ctrl-C drains")) {
      cameUp = true;
      child.kill("SIGINT");
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  if (child.exitCode === null && child.signalCode === null) {
    child.kill("SIGKILL");
    return { code: "no exit", text, cameUp };
  }
  return { code: await exited, text, cameUp };
}

describe("meshgate up", () => {
  // A state dir up cannot use is one coded line and exit 1, before anything starts: never a stack
  // trace, never a hang, never a mesh started on a CA someone else could have planted.
  it.each<[string, (state: string) => Promise<unknown>, string, string]>([
    [
      "a_ca_of_another_trust_domain_is_refused_naming_it",
      (state) => meshgate(["pki", "init", "--trust-domain", "other.example", "--out", join(state, "ca")]),
      "E_LOCAL_CA",
      "holds a CA for trust domain other.example, not tiny.test",
    ],
    [
      "a_damaged_ca_is_refused_naming_its_directory",
      async (state) => {
        await meshgate(["pki", "init", "--trust-domain", "tiny.test", "--out", join(state, "ca")]);
        await writeFile(join(state, "ca", "intermediate.pem"), "-----BEGIN CERTIFICATE-----\nMIIB\n");
      },
      "E_LOCAL_CA",
      "/state/ca cannot be used (",
    ],
    [
      "a_damaged_issuer_key_is_refused_naming_it",
      async (state) => {
        await mkdir(join(state, "issuer"), { recursive: true, mode: 0o700 });
        await writeFile(join(state, "issuer", "jwt-key.pem"), "not a key\n", { mode: 0o600 });
      },
      "E_LOCAL_ISSUER",
      "issuer/jwt-key.pem is not the ES256 key `meshgate up` writes",
    ],
    [
      "a_world_writable_state_dir_is_refused",
      (state) => chmod(state, 0o777),
      "E_LOCAL_STATE_DIR",
      "is writable by other users (mode 0777)",
    ],
    [
      "a_group_writable_ca_dir_is_refused",
      async (state) => {
        await meshgate(["pki", "init", "--trust-domain", "tiny.test", "--out", join(state, "ca")]);
        await chmod(join(state, "ca"), 0o775);
      },
      "E_LOCAL_STATE_DIR",
      "/ca is writable by other users (mode 0775)",
    ],
    ...(process.getuid?.() === 0
      ? [
          [
            "a_state_dir_of_another_user_is_refused",
            (state: string) => chown(state, 65534, 65534),
            "E_LOCAL_STATE_DIR",
            "belongs to uid 65534, not to this user (uid 0)",
          ] as [string, (state: string) => Promise<unknown>, string, string],
        ]
      : []),
  ])(
    "%s",
    async (_claim, prepare, code, message) => {
      const upDir = await mkdtemp(join(tmpdir(), "meshgate-up-state-"));
      try {
        await writeFile(join(upDir, "mesh.yaml"), TINY);
        const state = join(upDir, "state");
        await mkdir(state, { mode: 0o755 });
        await prepare(state);
        const r = await upUntilSettled(upDir);
        expect({ code: r.code, cameUp: r.cameUp }).toEqual({ code: 1, cameUp: false });
        expect(r.text).toContain(`meshgate up: `);
        expect(r.text).toContain(message);
        expect(r.text).toContain(`[${code}]`);
        expect(r.text).not.toMatch(/\n\s+at /);
        expect(pidsMentioning(upDir)).toEqual([]);
      } finally {
        killProcessesMentioning(upDir);
        await rm(upDir, { recursive: true, force: true });
      }
    },
    90_000,
  );

  it("a_second_up_on_the_same_state_dir_is_refused_while_the_first_runs_and_leaves_its_configs_alone", async () => {
    // With other ports the second would rewrite the first one's configs (which its proxies reload),
    // identities and state.json.
    const upDir = await mkdtemp(join(tmpdir(), "meshgate-up-lock-"));
    try {
      await writeFile(join(upDir, "mesh.yaml"), TINY);
      const base = await freeBlock(40);
      const first = await spawnUp(
        [join(upDir, "mesh.yaml"), "--no-prometheus", "--port", String(base), "--admin-port",
          String(base + 1), "--port-base", String(base + 10), "--state-dir", join(upDir, "state")],
        upDir,
        60_000,
      ); // prettier-ignore
      const config = await readFile(join(upDir, "state", "run", "gateway.json"), "utf8");
      const second = await upUntilSettled(upDir);
      expect({ code: second.code, cameUp: second.cameUp }).toEqual({ code: 1, cameUp: false });
      expect(second.text).toContain(
        `the state dir ${join(upDir, "state")} is in use by another meshgate up (pid ${first.child.pid})`,
      );
      expect(second.text).toContain("[E_LOCAL_STATE_LOCKED]");
      expect(await readFile(join(upDir, "state", "run", "gateway.json"), "utf8")).toBe(config);
      first.child.kill("SIGINT");
      expect(await first.exited).toBe(0);
      // Stopped, it leaves the state dir to the next one.
      expect(existsSync(join(upDir, "state", "up.lock"))).toBe(false);
    } finally {
      killProcessesMentioning(upDir);
      await rm(upDir, { recursive: true, force: true });
    }
  }, 150_000);

  // The children lead their own process groups: a closed terminal's SIGHUP reaches only the launcher,
  // and a reader gone from its output (the closed terminal, or a `| tee` killed by the same Ctrl-C)
  // fails its writes. A launcher that died of either would leave every child running, holding its ports.
  it.each([
    ["sigint_with_its_output_pipe_gone", "SIGINT"],
    ["sighup_when_the_terminal_closes", "SIGHUP"],
  ] as const)(
    "stops_every_child_on_%s",
    async (_claim, signal) => {
      const upDir = await mkdtemp(join(tmpdir(), "meshgate-up-hup-"));
      try {
        await writeFile(join(upDir, "mesh.yaml"), TINY);
        const base = await freeBlock(40);
        const up = await spawnUp(
        [join(upDir, "mesh.yaml"), "--no-prometheus", "--port", String(base), "--admin-port",
          String(base + 1), "--port-base", String(base + 10), "--state-dir", join(upDir, "state")],
        upDir,
        60_000,
      ); // prettier-ignore
        const state = JSON.parse(await readFile(join(upDir, "state", "state.json"), "utf8")) as {
          processes: { pid: number }[];
        };
        const pids = state.processes.map((p) => p.pid);
        expect(pids.length).toBeGreaterThan(0);
        expect(pids.every(alive)).toBe(true);
        up.child.stdout!.destroy();
        up.child.stderr!.destroy();
        up.child.kill(signal);
        const code = await Promise.race([
          up.exited,
          new Promise((r) => setTimeout(() => r("no exit"), 40_000)),
        ]);
        // Whatever the launcher did, its children must be gone once it has.
        const deadline = Date.now() + 5000;
        while (pids.some(alive) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
        expect({ code, left: pids.filter(alive) }).toEqual({ code: 0, left: [] });
      } finally {
        killProcessesMentioning(upDir);
        await rm(upDir, { recursive: true, force: true });
      }
    },
    120_000,
  );

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

  it("a_second_ctrl_c_while_it_starts_kills_every_child_at_once_instead_of_waiting_out_the_stop_timeout", async () => {
    // The app ignores SIGTERM and never gets ready: the first Ctrl-C waits 15 s for it, the second
    // one kills it now (docs/local.md: "A second Ctrl-C kills every group at once").
    const upDir = await mkdtemp(join(tmpdir(), "meshgate-up-force-"));
    try {
      const stubborn = `["${process.execPath}", "-e", "process.on('SIGTERM', () => {}); console.log('ignoring SIGTERM'); setTimeout(() => {}, 60000)", "${upDir}"]`;
      await writeFile(
        join(upDir, "mesh.yaml"),
        TINY.replace(
          "image: example/web:1\n",
          `image: example/web:1\n    local:\n      command: ${stubborn}\n`,
        ),
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
      while (children().length < 3 || !text.includes("[web] ignoring SIGTERM")) {
        if (Date.now() > deadline || child.exitCode !== null) throw new Error(`never started:\n${text}`);
        await new Promise((r) => setTimeout(r, 100));
      }
      child.kill("SIGINT");
      while (!text.includes("[up] SIGINT: stopping every process started so far")) {
        if (Date.now() > deadline + 10_000) throw new Error(`no stop:\n${text}`);
        await new Promise((r) => setTimeout(r, 50));
      }
      child.kill("SIGINT");
      const code = await Promise.race([exited, new Promise((r) => setTimeout(() => r("no exit"), 30_000))]);
      if (child.exitCode === null) child.kill("SIGKILL");
      expect({ code, left: children() }).toEqual({ code: 130, left: [] });
      expect(text).not.toContain("did not stop within"); // killed, not timed out
    } finally {
      killProcessesMentioning(upDir);
      await rm(upDir, { recursive: true, force: true });
    }
  }, 60_000);
});
