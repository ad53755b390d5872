/** `meshgate observability` as a user runs it: a real process, real files, exit codes and messages. */
import { execFile } from "node:child_process";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parse } from "yaml";
import { promtool, ROOT } from "./support.ts";

const run = promisify(execFile);
const GOLDEN = new URL("./testdata/shop/", import.meta.url).pathname;

async function meshgate(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await run(process.execPath, [join(ROOT, "bin/meshgate.js"), ...args], {
      cwd: ROOT,
    });
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code: number; stdout: string; stderr: string };
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "meshgate-obs-cli-"));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

const SHOP_WORKLOADS = [
  "catalog",
  "catalog-v2",
  "gateway",
  "inventory",
  "notifications",
  "orders",
  "payments",
  "search",
  "search-next",
  "users",
];

describe("meshgate observability", () => {
  it("writes_the_golden_bundle_for_the_shop", async () => {
    const out = join(dir, "k8s");
    const r = await meshgate(["observability", "examples/shop/mesh.yaml", "--out", out]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain(`wrote 16 files to ${out}:`);
    for (const rel of [
      "prometheus/prometheus.yml",
      "prometheus/rules/meshgate-shop.rules.yml",
      "prometheus/tests/meshgate-shop.test.yml",
      "grafana/provisioning/datasources/meshgate-shop.yml",
      "grafana/dashboards/meshgate-shop-overview.json",
    ])
      expect(await readFile(join(out, rel), "utf8"), rel).toBe(await readFile(join(GOLDEN, rel), "utf8"));
  });

  it("writes_a_static_scrape_config_that_promtool_accepts", async () => {
    const out = join(dir, "static");
    const targets = SHOP_WORKLOADS.flatMap((w, i) => ["--target", `${w}=127.0.0.1:${20000 + i}`]);
    const r = await meshgate([
      "observability",
      "examples/shop/mesh.yaml",
      "--out",
      out,
      "--scrape",
      "static",
      ...targets,
      "--target",
      "orders=127.0.0.1:29999",
      "--prometheus-url",
      "http://127.0.0.1:9090",
    ]);
    expect(r.code, r.stderr).toBe(0);
    const config = parse(await readFile(join(out, "prometheus/prometheus.yml"), "utf8"));
    const orders = config.scrape_configs[1].static_configs.find(
      (s: { labels: { service: string } }) => s.labels.service === "orders",
    );
    expect(orders.targets).toEqual(["127.0.0.1:20005", "127.0.0.1:29999"]);
    const check = promtool(["check", "config", "prometheus/prometheus.yml"], out);
    expect(check.status, check.output).toBe(0);
    const ds = parse(await readFile(join(out, "grafana/provisioning/datasources/meshgate-shop.yml"), "utf8"));
    expect(ds.datasources[0].url).toBe("http://127.0.0.1:9090");
  });

  const USAGE: { claim: string; args: string[]; message: RegExp }[] = [
    { claim: "without_out", args: [], message: /missing --out DIR/ },
    {
      claim: "with_static_scraping_and_missing_targets",
      args: ["--scrape", "static", "--target", "gateway=127.0.0.1:9901"],
      message: /no scrape address for catalog, catalog-v2, .*users/,
    },
    {
      claim: "with_a_target_for_an_unknown_workload",
      args: ["--scrape", "static", "--target", "billing=127.0.0.1:1"],
      message: /--target names no scraped workload: billing/,
    },
    {
      claim: "with_a_malformed_target",
      args: ["--scrape", "static", "--target", "orders"],
      message: /WORKLOAD=HOST:PORT/,
    },
    {
      claim: "with_targets_for_kubernetes_scraping",
      args: ["--target", "orders=127.0.0.1:1"],
      message: /--target is for --scrape static/,
    },
    {
      claim: "with_an_unknown_scrape_mode",
      args: ["--scrape", "consul"],
      message: /expected one of kubernetes, static/,
    },
  ];
  for (const u of USAGE)
    it(`exits_2_${u.claim}`, async () => {
      const r = await meshgate([
        "observability",
        "examples/shop/mesh.yaml",
        ...(u.claim === "without_out" ? [] : ["--out", join(dir, "x")]),
        ...u.args,
      ]);
      expect(r.code).toBe(2);
      expect(r.stderr).toMatch(u.message);
      expect(r.stderr).toContain("Usage: meshgate observability SPEC --out DIR");
    });

  it("exits_1_for_an_invalid_spec", async () => {
    const r = await meshgate(["observability", "test/translate/testdata/nope.yaml", "--out", join(dir, "y")]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain("E_SPEC_FILE_NOT_FOUND");
  });

  it("is_listed_in_the_help", async () => {
    const r = await meshgate(["--help"]);
    expect(r.stdout).toMatch(
      /observability\s+write the Prometheus config, rules, rule tests and Grafana dashboards/,
    );
  });
});
