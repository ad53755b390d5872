/**
 * Codes only a hand-edited or mismatched IR can trigger (a spec always translates to a consistent one):
 * the guardrails read the IR and RuntimeConfigs they are given, so a config that was edited, stale, or
 * built for local tests is refused before deploy.
 */
import { describe, expect, it } from "vitest";
import type { InfraIR, RuntimeConfigs } from "../../components/translate/ir.ts";
import { MeshModel } from "../../policies/model.ts";
import { runGuardrails, type PolicyInput } from "../../policies/run.ts";
import { plaintextStatic } from "../../testing/static.ts";
import { inputOf, miniRaw } from "./support.ts";

/** The mini spec where web calls an external destination that admits it. */
function egressRaw() {
  const raw = miniRaw();
  raw.services.web.calls.push("billing");
  raw.external = { billing: { host: "billing.example", port: 443, allow: [{ from: ["web"] }] } };
  return raw;
}

/** The mini spec's input with its IR and RuntimeConfigs changed by `edit` (the model rebuilt on them). */
function edited(edit: (infra: InfraIR, runtime: RuntimeConfigs) => void, raw = miniRaw()): PolicyInput {
  const base = inputOf(raw);
  const infra = structuredClone(base.infra);
  const runtime = structuredClone(base.runtime);
  edit(infra, runtime);
  return { ...base, infra, runtime, model: new MeshModel(base.spec, infra, runtime) };
}

const codes = (input: PolicyInput) =>
  runGuardrails(input)
    .flatMap((c) => c.violations)
    .map((v) => `${v.code} ${v.path}`);

describe("IR integrity", () => {
  it("accepts_the_ir_translate_produces", () => {
    expect(codes(inputOf(miniRaw()))).toEqual([]);
  });

  it.each<[string, (infra: InfraIR, runtime: RuntimeConfigs) => void, string]>([
    [
      "refuses_a_gateway_config_with_plaintext_clusters",
      (_i, rt) => {
        rt.gateway = plaintextStatic(rt.gateway!, { api: { port: 9001 }, web: { port: 9002 } });
      },
      "E_POLICY_CLUSTER_PLAINTEXT gateway",
    ],
    [
      "refuses_a_route_that_requires_nothing_and_is_not_public",
      (_i, rt) => {
        rt.gateway!.routes.find((r) => r.name === "list-items")!.auth.anyOf = [];
      },
      "E_POLICY_ROUTE_UNAUTHENTICATED gateway.routes[1]",
    ],
    [
      "refuses_a_route_to_a_cluster_the_gateway_does_not_define",
      (_i, rt) => {
        rt.gateway!.clusters = rt.gateway!.clusters.filter((c) => c.name !== "web");
      },
      "E_POLICY_DANGLING_REFERENCE gateway.routes[0].to",
    ],
    [
      "refuses_an_allow_rule_for_an_identity_of_another_mesh",
      (_i, rt) => {
        rt.sidecars
          .find((s) => s.name === "api")!
          .inbound.authz.rules[0]!.from.push("spiffe://other.example/ns/x/sa/y");
      },
      "E_POLICY_DANGLING_REFERENCE services.api.allow[0]",
    ],
    [
      "refuses_a_metrics_target_for_no_workload",
      (infra) => {
        infra.observability.metrics.targets.push({
          workload: "ghost",
          kind: "sidecar",
          port: 15000,
          path: "/metrics",
        });
      },
      "E_POLICY_DANGLING_REFERENCE observability.metrics",
    ],
    [
      "refuses_a_workload_nobody_scrapes",
      (infra) => {
        infra.observability.metrics.targets = infra.observability.metrics.targets.filter(
          (t) => t.workload !== "api",
        );
      },
      "E_POLICY_METRICS_TARGET_MISSING observability.metrics",
    ],
    [
      "refuses_a_proxy_with_access_logs_off",
      (_i, rt) => {
        rt.sidecars[0]!.telemetry.accessLog.enabled = false;
      },
      "E_POLICY_ACCESS_LOG_DISABLED observability.logs.access",
    ],
    [
      "refuses_a_gateway_listener_on_the_admin_port",
      (infra) => {
        const gw = infra.workloads.find((w) => w.kind === "gateway")!;
        if (gw.kind === "gateway") gw.listeners[0]!.port = gw.adminPort;
      },
      "E_POLICY_ADMIN_PORT_EXPOSED gateway.listeners[0].port",
    ],
  ])("%s", (_claim, edit, expected) => {
    expect(codes(edited(edit))).toContain(expected);
  });

  it("accepts_the_ir_translate_produces_for_an_external_destination", () => {
    expect(codes(inputOf(egressRaw()))).toEqual([]);
  });

  it.each<[string, (infra: InfraIR, runtime: RuntimeConfigs) => void, string]>([
    [
      "refuses_a_sidecar_relaying_to_a_destination_the_ir_does_not_define",
      (infra) => {
        infra.externals = [];
        infra.egress = [];
      },
      "E_POLICY_DANGLING_REFERENCE services.web.calls",
    ],
    [
      "refuses_a_sidecar_relaying_to_another_host_than_the_irs_destination",
      (_i, rt) => {
        rt.sidecars.find((s) => s.name === "web")!.outbound.external[0]!.host = "billing.evil.example";
      },
      "E_POLICY_DANGLING_REFERENCE external.billing",
    ],
    [
      "refuses_a_sidecar_relaying_an_edge_the_ir_does_not_allow",
      (infra) => {
        infra.egress[0]!.allowed = false;
        infra.egress[0]!.allowedBy = [];
      },
      "E_POLICY_DANGLING_REFERENCE external.billing.allow",
    ],
    [
      "refuses_an_allowed_declared_edge_the_sidecar_does_not_relay",
      (_i, rt) => {
        rt.sidecars.find((s) => s.name === "web")!.outbound.external = [];
      },
      "E_POLICY_DANGLING_REFERENCE external.billing.allow[0]",
    ],
    [
      "refuses_an_egress_edge_from_no_workload",
      (infra) => {
        infra.egress.push({ ...infra.egress[0]!, from: "ghost", allowedBy: [] });
      },
      "E_POLICY_DANGLING_REFERENCE external.billing",
    ],
  ])("%s", (_claim, edit, expected) => {
    expect(codes(edited(edit, egressRaw()))).toContain(expected);
  });
});
