/**
 * `meshgate up --watch`, the pure part (stacks/local/watch.ts): what a changed spec means for the running
 * local mesh — which proxies reload in place, which processes restart and why, which start and stop,
 * which identities are issued or retired, and which changes `meshgate up` refuses while it runs.
 * test/local/watch-up.test.ts applies such changes to a real running mesh.
 */
import { describe, expect, it } from "vitest";
import { parse } from "yaml";
import { parseSpec } from "../../components/spec/parse.ts";
import type { MeshSpec } from "../../components/spec/schema.ts";
import { translate } from "../../components/translate/translate.ts";
import { planLocal, type LocalPlan } from "../../stacks/local/plan.ts";
import {
  isEmpty,
  newPorts,
  NO_CHANGES,
  planChanges,
  prometheusReload,
  type PlanChanges,
  type PrometheusReload,
} from "../../stacks/local/watch.ts";
import { TINY } from "../support/tiny-mesh.ts";

type Raw = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

function specOf(edit: (raw: Raw) => void = () => {}): MeshSpec {
  const raw = parse(TINY) as Raw;
  edit(raw);
  const parsed = parseSpec(raw);
  if (!parsed.ok) throw new Error(parsed.errors.map((e) => e.message).join("; "));
  return parsed.spec;
}

function planOf(spec: MeshSpec, prometheus: string | null = null, running?: LocalPlan): LocalPlan {
  const r = planLocal(spec, translate(spec), {
    cwd: "/work/app",
    specDir: "/work/app",
    node: "/usr/bin/node",
    packageRoot: "/opt/meshgate",
    prometheus,
    ...(running ? { running } : {}),
  });
  if (!r.ok) throw new Error(r.error.message);
  return r.plan;
}

/** The change, with file paths shortened to what follows run/ and the restarts as "name: why". */
function summary(c: PlanChanges) {
  return {
    restartUp: c.restartUp,
    files: c.files.map((f) => f.path.replace(/^.*\/run\//, "")).sort(),
    identities: c.identities.map((i) => i.workload),
    retiredIdentities: c.retiredIdentities,
    added: c.added,
    removed: c.removed,
    restart: c.restart.map((r) => `${r.name}: ${r.why}`),
    reload: c.reload.map((r) => r.name),
  };
}

const NOTHING = summary(NO_CHANGES);

describe("a changed spec, as a change of the running local mesh", () => {
  it.each<{
    claim: string;
    edit: (raw: Raw) => void;
    prometheus?: boolean;
    change: Partial<Record<keyof typeof NOTHING, string[]>>;
  }>([
    { claim: "the same spec changes nothing", edit: () => {}, change: {} },
    {
      claim: "a new gateway route rewrites the gateway's config and reloads it in place, restarting nothing",
      edit: (raw) =>
        raw.gateway.routes.push({
          name: "web-root",
          match: { path: "/web", methods: ["GET"] },
          to: "web",
          public: true,
          rateLimit: { requests: 100, per: "1s", key: "ip" },
        }),
      change: { files: ["gateway.json"], reload: ["gateway"] },
    },
    {
      claim: "a wider allow rule reloads the callee's sidecar in place; its demo app keeps running",
      edit: (raw) => raw.services.api.allow[0].methods.push("HEAD"),
      change: { files: ["sidecars/api.json"], reload: ["api-sidecar"] },
    },
    {
      claim: "new allowed paths also restart the demo app, which reads the paths it serves at start",
      edit: (raw) => raw.services.api.allow[0].paths.push("/v2/**"),
      change: {
        files: ["demo/api.json", "sidecars/api.json"],
        reload: ["api-sidecar"],
        restart: ["api: it reads /work/app/.meshgate/run/demo/api.json, which changed"],
      },
    },
    {
      claim: "a moved gateway listener reloads the gateway, which binds the new port itself",
      edit: (raw) => (raw.targets = { local: { gatewayPort: 8181 } }),
      change: { files: ["gateway.json"], reload: ["gateway"] },
    },
    {
      claim:
        "a permissive mesh reloads every sidecar in place (each rebuilds its inbound port on its socket)",
      edit: (raw) => (raw.mesh = { mtls: "permissive" }),
      change: {
        files: ["gateway.json", "sidecars/api.json", "sidecars/web.json"],
        reload: ["api-sidecar", "web-sidecar", "gateway"],
      },
    },
    {
      claim: "a new service starts its app and sidecar after its identity is issued",
      edit: (raw) => {
        raw.services.zeta = {
          image: "example/zeta:1",
          port: 8080,
          allow: [{ from: ["gateway"], methods: ["GET"], paths: ["/zeta"] }],
        };
      },
      change: {
        files: ["demo/zeta.json", "sidecars/zeta.json"],
        identities: ["zeta"],
        added: ["zeta-sidecar", "zeta"],
      },
    },
    {
      claim:
        "a removed service stops its app and sidecar; its caller's sidecar reloads (closing the local port), its app restarts (its environment named the port)",
      edit: (raw) => {
        delete raw.services.api;
        raw.services.web.calls = [];
      },
      change: {
        files: ["demo/web.json", "sidecars/web.json"],
        retiredIdentities: ["api"],
        removed: ["api-sidecar", "api"],
        reload: ["web-sidecar"],
        restart: ["web: its environment changed"],
      },
    },
    {
      claim: "a new call reloads the caller's sidecar, which binds the new local port itself",
      edit: (raw) => {
        raw.services.web.calls = ["api", "zeta"];
        raw.services.zeta = {
          image: "example/zeta:1",
          port: 8080,
          allow: [{ from: ["web"], methods: ["GET"], paths: ["/z"] }],
        };
      },
      change: {
        files: ["demo/web.json", "demo/zeta.json", "sidecars/web.json", "sidecars/zeta.json"],
        identities: ["zeta"],
        added: ["zeta-sidecar", "zeta"],
        reload: ["web-sidecar"],
        restart: ["web: its environment changed"],
      },
    },
    {
      claim: "a new trust domain needs a new dev CA: refused, meshgate up must restart",
      edit: (raw) => (raw.trustDomain = "other.test"),
      change: { restartUp: ["trustDomain"] },
    },
    {
      claim: "a moved local admin server is refused: meshgate up holds that port",
      edit: (raw) => (raw.targets = { local: { adminPort: 9911 } }),
      change: { restartUp: ["targets.local.adminPort (or --admin-port)"] },
    },
    {
      claim: "Prometheus is sent SIGHUP when its rules change: it re-reads its config and rules in place",
      prometheus: true,
      edit: (raw) => (raw.observability = { slos: [{ name: "api-up", service: "api", availability: 99.5 }] }),
      change: {
        files: ["observability/prometheus/rules/meshgate-tiny.rules.yml"],
        reload: ["prometheus"],
      },
    },
  ])("$claim", ({ edit, prometheus, change }) => {
    const bin = prometheus ? "/usr/bin/prometheus" : null;
    const running = planOf(specOf(), bin);
    const c = planChanges(running, planOf(specOf(edit), bin, running));
    expect(summary(c)).toEqual({ ...NOTHING, ...change });
    expect(isEmpty(c)).toBe(Object.keys(change).length === 0);
  });
});

describe("Prometheus's reload metrics after a SIGHUP", () => {
  const asked = Date.UTC(2026, 11, 1, 12, 0, 0, 400); // within the second 1796126400
  const second = Math.floor(asked / 1000);
  const metrics = (ok: number | null, at: number | null) =>
    [
      "# HELP prometheus_config_last_reload_successful Whether the last configuration reload attempt was successful.",
      ...(ok === null ? [] : [`prometheus_config_last_reload_successful ${ok}`]),
      ...(at === null
        ? []
        : [`prometheus_config_last_reload_success_timestamp_seconds ${at.toExponential()}`]),
      "prometheus_tsdb_head_series 12",
    ].join("\n");
  it.each<{ claim: string; text: string; state: PrometheusReload }>([
    {
      claim: "a success in the second the signal was sent is the reload",
      text: metrics(1, second),
      state: "reloaded",
    },
    { claim: "a success after it is the reload", text: metrics(1, second + 2), state: "reloaded" },
    {
      claim: "an earlier success is the previous load: still pending",
      text: metrics(1, second - 1),
      state: "pending",
    },
    { claim: "a failed last reload is a failure", text: metrics(0, second - 5), state: "failed" },
    {
      claim: "no reload metrics (not scraped yet, or not Prometheus) is pending",
      text: metrics(null, null),
      state: "pending",
    },
    {
      claim: "an unreachable Prometheus (no text) is pending until the deadline",
      text: "",
      state: "pending",
    },
  ])("$claim", ({ text, state }) => {
    expect(prometheusReload(text, asked)).toBe(state);
  });
});

describe("ports of a changed spec", () => {
  const running = planOf(specOf());
  const ported = (p: LocalPlan) => Object.fromEntries(p.processes.map((x) => [x.name, x.ports]));

  it("a new service and a new call take ports above the running ones; nobody else's port moves", () => {
    const next = planOf(
      specOf((raw) => {
        raw.services.aaa = { image: "example/aaa:1", port: 8080, calls: ["api"], allow: [] };
        raw.services.api.allow.push({ from: ["aaa"], methods: ["GET"], paths: ["/api/**"] });
      }),
      null,
      running,
    );
    const highest = Math.max(
      ...running.processes.flatMap((p) => Object.values(p.ports)).filter((x) => x < 30000),
    );
    for (const [name, ports] of Object.entries(ported(running))) expect(ported(next)[name]).toEqual(ports);
    const fresh = newPorts(running, next);
    expect(fresh.map(([, what]) => what).sort()).toEqual([
      "aaa app",
      "aaa-sidecar admin",
      "aaa-sidecar inbound",
      "aaa-sidecar outbound",
      "aaa-sidecar to-api",
    ]);
    for (const [port] of fresh) expect(port).toBeGreaterThan(highest);
    // Nothing is set aside for a Prometheus that is not run: the new ports follow the highest at once.
    expect(Math.min(...fresh.map(([port]) => port))).toBe(highest + 1);
  });

  it("without a running plan, ports follow name order (the shop's golden plan pins them)", () => {
    const fresh = planOf(
      specOf((raw) => (raw.services.aaa = { image: "example/aaa:1", port: 8080, allow: [] })),
    );
    expect(ported(fresh)["aaa-sidecar"]!.inbound).toBeLessThan(ported(fresh)["api-sidecar"]!.inbound!);
  });
});
