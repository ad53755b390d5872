/**
 * Golden files of the observability bundle for the shop example: every generated file (Prometheus config
 * for Kubernetes and for static addresses, rules, rule tests, Grafana provisioning and dashboards).
 * Regenerate with UPDATE_GOLDEN=1 npx vitest run test/observability/golden.test.ts and review the diff.
 */
import { existsSync, readdirSync, rmSync, statSync } from "node:fs";
import { join, relative } from "node:path";
import { describe, expect, it } from "vitest";
import { observabilityFiles, type ObservabilityOptions } from "../../components/observability/index.ts";
import { expectGolden } from "../support/golden.ts";
import { shopInfra, writeFiles } from "./support.ts";

const TESTDATA = new URL("./testdata/", import.meta.url).pathname;

function listFiles(dir: string): string[] {
  if (!existsSync(dir)) return [];
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    return statSync(path).isDirectory() ? listFiles(path) : [path];
  });
}

const CASES: { name: string; options: ObservabilityOptions }[] = [
  { name: "shop", options: {} },
  {
    name: "shop-static",
    options: {
      scrape: {
        kind: "static",
        addresses: {
          gateway: ["127.0.0.1:9901"],
          catalog: ["127.0.0.1:15100"],
          "catalog-v2": ["127.0.0.1:15101"],
          inventory: ["127.0.0.1:15102"],
          notifications: ["127.0.0.1:15103"],
          orders: ["127.0.0.1:15104", "127.0.0.1:15105"],
          payments: ["127.0.0.1:15106"],
          search: ["127.0.0.1:15107"],
          "search-next": ["127.0.0.1:15108"],
          users: ["127.0.0.1:15109"],
        },
      },
    },
  },
];

describe("observability golden files", () => {
  for (const c of CASES) {
    it(`matches_the_golden_files_of_${c.name.replace(/-/g, "_")}`, async () => {
      const bundle = observabilityFiles(await shopInfra(), c.options);
      const dir = join(TESTDATA, c.name);
      // The static case pins only what differs: the Prometheus configuration.
      const files =
        c.name === "shop" ? bundle.files : bundle.files.filter((f) => f.path === "prometheus/prometheus.yml");
      if (process.env.UPDATE_GOLDEN === "1") {
        rmSync(dir, { recursive: true, force: true });
        await writeFiles(dir, files);
      }
      for (const f of files) expectGolden(join(dir, ...f.path.split("/")), f.content);
      expect(
        listFiles(dir)
          .map((p) => relative(dir, p))
          .sort(),
        "golden files the generator no longer writes",
      ).toEqual(files.map((f) => f.path).sort());
      expect(bundle.notes).toEqual([]);
    });
  }

  it("is_deterministic", async () => {
    const infra = await shopInfra();
    expect(observabilityFiles(infra)).toEqual(observabilityFiles(structuredClone(infra)));
  });
});
