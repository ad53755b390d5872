/**
 * The generated Prometheus files against the real promtool: `check rules` and `check config` on the shop
 * example and on generated specs, `test rules` on the generated unit tests and on the hand-written ones
 * (test/observability/promtool/), and mutations of the rules that the generated tests must catch.
 */
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parse } from "yaml";
import {
  bundlePaths,
  observabilityFiles,
  toYaml,
  type ObservabilityBundle,
} from "../../components/observability/index.ts";
import type { InfraIR } from "../../components/translate/ir.ts";
import { generateSpec } from "../../testing/index.ts";
import { infraOf, promtool, promtoolAsync, shopInfra, smallSpec, writeFiles } from "./support.ts";

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "meshgate-promtool-"));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** The specs the rules are checked for: the shop, a generated mesh, and edge cases of the SLO math. */
async function specs(): Promise<{ name: string; infra: InfraIR }[]> {
  return [
    { name: "shop", infra: await shopInfra() },
    { name: "generated", infra: infraOf(generateSpec({ services: 30, routes: 60, seed: 3 })) },
    {
      name: "no-gateway",
      infra: infraOf(
        smallSpec({
          gateway: false,
          observability: { slos: [{ service: "db", availability: 99.5, latencyP99: "100ms", window: "7d" }] },
        }),
      ),
    },
    {
      name: "odd-windows",
      infra: infraOf(
        smallSpec({
          mesh: { ca: { workloadTtl: "1h", renewBefore: "20m" } },
          observability: {
            slos: [
              // 2h: the 1d and 3d tiers do not fit the window.
              { name: "short", route: "items", availability: 99, window: "2h" },
              // 90%: a 14.4× burn would need 144% errors, so that tier is left out.
              { name: "loose", route: "health", availability: 90, latencyP99: "2.5s" },
            ],
          },
        }),
      ),
    },
  ];
}

async function bundleIn(
  name: string,
  infra: InfraIR,
): Promise<{ root: string; bundle: ObservabilityBundle }> {
  const root = join(dir, name);
  const bundle = observabilityFiles(infra, {
    scrape: {
      kind: "static",
      addresses: Object.fromEntries(
        infra.observability.metrics.targets.map((t, i) => [t.workload, [`127.0.0.1:${20000 + i}`]]),
      ),
    },
  });
  await writeFiles(root, bundle.files);
  return { root, bundle };
}

describe("promtool check", () => {
  it("accepts_the_rules_and_the_static_config_of_every_spec", async () => {
    for (const { name, infra } of await specs()) {
      const { root } = await bundleIn(name, infra);
      const p = bundlePaths(infra.namespace);
      const rules = promtool(["check", "rules", p.rules], root);
      expect(rules.output, name).toMatch(/SUCCESS: \d+ rules found/);
      expect(rules.status, `${name}: ${rules.output}`).toBe(0);
      const config = promtool(["check", "config", p.prometheusConfig], root);
      expect(config.status, `${name}: ${config.output}`).toBe(0);
      expect(config.output).toContain("SUCCESS");
    }
  });

  it("accepts_the_kubernetes_relabelling", async () => {
    // Debian's Prometheus is built without Kubernetes service discovery (it refuses the
    // kubernetes_sd_configs key), so the jobs are checked with static targets in its place: every
    // relabel rule, regex and label name still goes through promtool.
    const infra = await shopInfra();
    const bundle = observabilityFiles(infra);
    const p = bundlePaths(infra.namespace);
    const root = join(dir, "kubernetes");
    await writeFiles(root, bundle.files);
    const config = parse(bundle.files.find((f) => f.path === p.prometheusConfig)!.content);
    const original = promtool(["check", "config", p.prometheusConfig], root);
    if (!/kubernetes_sd_configs not found/.test(original.output))
      expect(original.status, original.output).toBe(0); // a build with Kubernetes discovery checks it whole
    for (const job of config.scrape_configs) {
      expect(job.kubernetes_sd_configs).toEqual([{ role: "pod", namespaces: { names: ["shop"] } }]);
      delete job.kubernetes_sd_configs;
      job.static_configs = [{ targets: ["127.0.0.1:1"] }];
    }
    await writeFile(join(root, "prometheus", "static.yml"), toYaml(config));
    const r = promtool(["check", "config", "prometheus/static.yml"], root);
    expect(r.status, r.output).toBe(0);
  });

  it("refuses_a_broken_rule_file", async () => {
    // The check can fail: a rule with an unknown function is refused.
    const root = join(dir, "broken");
    await writeFiles(root, [
      {
        path: "r.yml",
        content: toYaml({ groups: [{ name: "g", rules: [{ record: "x", expr: "nosuch(up)" }] }] }),
      },
    ]);
    expect(promtool(["check", "rules", "r.yml"], root).status).not.toBe(0);
  });
});

describe("promtool test rules", () => {
  it("passes_the_generated_unit_tests_of_every_spec", async () => {
    const runs = (await specs()).map(async ({ name, infra }) => {
      const { root } = await bundleIn(`t-${name}`, infra);
      return {
        name,
        ...(await promtoolAsync(["test", "rules", bundlePaths(infra.namespace).ruleTests], root)),
      };
    });
    for (const r of await Promise.all(runs)) {
      expect(r.output, r.name).toContain("SUCCESS");
      expect(r.status, `${r.name}: ${r.output}`).toBe(0);
    }
  }, 240_000);

  it("covers_every_alert_kind_firing_and_not_firing", async () => {
    const infra = await shopInfra();
    const bundle = observabilityFiles(infra);
    const tests = parse(bundle.files.find((f) => f.path === bundlePaths("shop").ruleTests)!.content) as {
      tests: {
        alert_rule_test?: { alertname: string; exp_alerts: unknown[] }[];
        promql_expr_test?: { expr: string; exp_samples: { value: number }[] }[];
      }[];
    };
    const fired = new Set<string>();
    const quiet = new Set<string>();
    for (const t of tests.tests) {
      for (const a of t.alert_rule_test ?? []) (a.exp_alerts.length ? fired : quiet).add(a.alertname);
      for (const e of t.promql_expr_test ?? []) {
        const m = /^ALERTS\{alertname="([A-Za-z]+)"/.exec(e.expr);
        if (m && e.exp_samples.some((s) => s.value === 1)) fired.add(m[1]!);
      }
    }
    const kinds = bundle.rules!.groups.flatMap((g) =>
      g.rules.flatMap((r) => ("alert" in r ? [r.alert] : [])),
    );
    for (const kind of new Set(kinds)) {
      expect(fired, `${kind} is never shown firing`).toContain(kind);
      expect(quiet, `${kind} is never shown quiet`).toContain(kind);
    }
  });

  it("passes_the_hand_written_tests_of_the_shop", async () => {
    const infra = await shopInfra();
    const { root } = await bundleIn("hand", infra);
    const text = await readFile(new URL("./promtool/shop-alerts.test.yml", import.meta.url), "utf8");
    const rules = join(root, bundlePaths("shop").rules);
    await writeFile(
      join(root, "hand.test.yml"),
      text.replace("rule_files: [RULES]", `rule_files: [${rules}]`),
    );
    const r = promtool(["test", "rules", "hand.test.yml"], root);
    expect(r.status, r.output).toBe(0);
  }, 60_000);

  it("expects_no_target_for_a_service_scaled_to_zero_and_needs_no_address_for_it", async () => {
    // db runs no pod (replicas: 0): Prometheus can find no target for it, which must not page; api's
    // missing target still does.
    const doc = smallSpec();
    const infra = infraOf({ ...doc, services: { ...doc.services, db: { ...doc.services.db, replicas: 0 } } });
    const root = join(dir, "scaled-to-zero");
    const addresses = { gateway: ["127.0.0.1:9901"], api: ["127.0.0.1:15000"] };
    await writeFiles(root, observabilityFiles(infra, { scrape: { kind: "static", addresses } }).files);
    const up = (service: string, proxy: string, values: string) => ({
      series: `up{namespace="tiny",proxy="${proxy}",service="${service}",instance="${service}:1"}`,
      values,
    });
    const missing = (eval_time: string, exp: string[]) => ({
      eval_time,
      alertname: "MeshgateTargetMissing",
      exp_alerts: exp.map((service) => ({
        exp_labels: { namespace: "tiny", proxy: "sidecar", service, severity: "critical" },
        exp_annotations: {
          summary: `Prometheus has no target for ${service} (sidecar)`,
          description: `No scrape target of ${service} exists: the workload is not deployed, or service discovery does not find it.`,
          runbook_url: "docs/observability.md#meshgatetargetmissing",
        },
      })),
    });
    const tests = {
      rule_files: [bundlePaths("tiny").rules],
      evaluation_interval: "1m",
      tests: [
        {
          interval: "1m",
          input_series: [up("gateway", "gateway", "1x20"), up("api", "sidecar", "1x20")],
          alert_rule_test: [missing("15m", [])],
        },
        {
          interval: "1m",
          input_series: [up("gateway", "gateway", "1x20")],
          alert_rule_test: [missing("15m", ["api"])],
        },
      ],
    };
    await writeFile(join(root, "zero.test.yml"), toYaml(tests));
    const r = promtool(["test", "rules", "zero.test.yml"], root);
    expect(r.status, r.output).toBe(0);
  });

  // Each mutation weakens or breaks one rule; the generated tests must notice.
  const MUTATIONS: { claim: string; from: RegExp; to: string; failing: RegExp }[] = [
    {
      claim: "a_page_threshold_ten_times_too_high",
      from: /(ratio_rate1h\{namespace="shop",slo="list-orders-route",sli="availability"\} > )0\.0144/,
      to: "$10.144",
      failing: /1h tier alone/,
    },
    {
      claim: "a_6h_page_threshold_doubled",
      from: /(ratio_rate6h\{namespace="shop",slo="list-orders-route",sli="availability"\} > )0\.006/,
      to: "$10.012",
      failing: /6h tier alone/,
    },
    {
      claim: "a_3d_ticket_threshold_tripled",
      from: /(ratio_rate3d\{namespace="shop",slo="list-orders-route",sli="availability"\} > )0\.001/,
      to: "$10.003",
      failing: /2× burn opens a ticket/,
    },
    {
      claim: "a_short_window_left_out",
      from: / and slo:meshgate_sli_error:ratio_rate5m\{namespace="shop",slo="list-orders-route",sli="availability"\} > 0\.0144/,
      to: "",
      failing: /20-minute burst/,
    },
    {
      claim: "a_renew_before_threshold_off",
      from: /< 28800/,
      to: "< 2880",
      failing: /below renewBefore/,
    },
    {
      claim: "the_reload_alert_missing_the_first_failure",
      from: /(meshgate_config_reloads_total\{[^}]*\}\[15m\]\)\) )> 0/,
      to: "$1> 1",
      failing: /the first failure/,
    },
    {
      // The rule as it was: reading the failure series appearing fired on a scrape gap.
      claim: "the_reload_alert_firing_on_a_scrape_gap",
      from: /(sum by \(namespace, proxy, service, instance\) \(increase\((meshgate_config_reloads_total\{[^}]*\})\[15m\]\)\) > 0)/,
      to: "$1 or sum by (namespace, proxy, service, instance) ($2 unless $2 offset 15m)",
      failing: /scrape gap/,
    },
    {
      claim: "a_deny_spike_without_its_fallback_for_new_denials",
      from: / or service:meshgate_authz_denied:rate5m\{namespace="shop"\} \* 0/,
      to: "",
      failing: /denials from nothing/,
    },
    {
      claim: "a_stall_threshold_ten_times_too_high",
      from: /\[5m\]\)\)\) > 0\.1$/m,
      to: "[5m]))) > 1",
      failing: /stalled proxy/,
    },
  ];
  for (const m of MUTATIONS) {
    it(`fails_the_generated_tests_for_${m.claim}`, async () => {
      const infra = await shopInfra();
      const p = bundlePaths("shop");
      // Two bundles side by side (one promtool each, on both cores): the generated rules and the mutated
      // ones. Only the test groups the mutation is about (the whole file takes long): they pass on the
      // generated rules and fail on the mutated ones.
      const [clean, mutant] = await Promise.all(
        ["clean", "mutant"].map(async (kind) => (await bundleIn(`${kind}-${m.claim}`, infra)).root),
      );
      const picks = join("prometheus", "tests", "picked.test.yml");
      for (const root of [clean!, mutant!]) {
        const file = parse(await readFile(join(root, p.ruleTests), "utf8")) as { tests: { name: string }[] };
        const picked = { ...file, tests: file.tests.filter((t) => m.failing.test(t.name)) };
        expect(picked.tests.length, "test groups about the mutation").toBeGreaterThan(0);
        await writeFile(join(root, picks), toYaml(picked));
      }
      const path = join(mutant!, p.rules);
      const text = await readFile(path, "utf8");
      expect(text, "the mutation applies").toMatch(m.from);
      await writeFile(path, text.replace(m.from, m.to));
      const [passed, failed] = await Promise.all(
        [clean!, mutant!].map((root) => promtoolAsync(["test", "rules", picks], root)),
      );
      expect(passed!.status, `the picked tests pass unmutated: ${passed!.output}`).toBe(0);
      expect(failed!.status, failed!.output).not.toBe(0);
      expect(failed!.output).toContain("FAILED");
    }, 60_000);
  }
});

describe("generated notes", () => {
  it("names_the_burn_rate_tiers_that_cannot_apply", () => {
    const infra = infraOf(
      smallSpec({
        observability: {
          slos: [
            { name: "short", route: "items", availability: 99, window: "2h" },
            { name: "loose", route: "health", availability: 90 },
          ],
        },
      }),
    );
    const { notes, rules } = observabilityFiles(infra);
    expect(notes).toEqual([
      "SLO loose (availability): left out the fast burn (2% of the budget in 1h): it would need an error ratio of 144%, which cannot happen",
      "SLO short (availability): left out the fast burn (5% of the budget in 6h): its window is longer than the SLO's 2h",
      "SLO short (availability): left out the slow burn (10% of the budget in 1d): its window is longer than the SLO's 2h",
      "SLO short (availability): left out the slow burn (10% of the budget in 3d): its window is longer than the SLO's 2h",
    ]);
    const alerts = rules!.groups
      .flatMap((g) => g.rules)
      .filter((r) => "alert" in r && r.labels.slo === "short");
    expect(alerts.map((a) => ("alert" in a ? a.alert : ""))).toEqual(["MeshgateSLOBudgetBurnFast"]);
  });

  it("writes_nothing_when_metrics_are_disabled", () => {
    const infra = infraOf(smallSpec({ observability: { metrics: { enabled: false } } }));
    const b = observabilityFiles(infra);
    expect(b.files).toEqual([]);
    expect(b.notes).toEqual(["observability.metrics is disabled: no Prometheus or Grafana files"]);
  });

  it("writes_no_grafana_files_when_grafana_is_disabled", () => {
    const infra = infraOf(smallSpec({ observability: { grafana: { enabled: false } } }));
    const b = observabilityFiles(infra);
    expect(b.files.map((f) => f.path).filter((p) => p.startsWith("grafana/"))).toEqual([]);
    expect(b.files.map((f) => f.path)).toContain("prometheus/prometheus.yml");
  });
});
