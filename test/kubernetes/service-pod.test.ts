/**
 * A service pod's shutdown (targets.kubernetes.serviceDrainDelay): the app container sleeps in preStop
 * while callers' sidecars still send to the pod (they re-resolve the headless Service within its DNS TTL),
 * then gets SIGTERM; the native sidecar stops after it and drains; the grace period covers both — every
 * object still valid against the strict Kubernetes API schema.
 */
import { describe, expect, it } from "vitest";
import { APP_CONTAINER, synthesize, type KubeObject } from "../../components/kubernetes/index.ts";
import { parseSpec } from "../../components/spec/parse.ts";
import { resultOf } from "./support.ts";
import { validator } from "./validate.ts";

const v = validator();

const spec = (kubernetes?: Record<string, unknown>) => ({
  name: "shop",
  trustDomain: "shop.example",
  services: {
    web: { image: "r/web:1.0.0", port: 8080, allow: [{ from: ["gateway"] }] },
    orders: { image: "r/orders:1.0.0", port: 8080, allow: [{ from: ["web"] }] },
  },
  gateway: {
    hosts: ["shop.example"],
    routes: [{ name: "web", match: { path: "/**" }, to: "web", public: true }],
  },
  ...(kubernetes ? { targets: { kubernetes } } : {}),
});

interface PodSpec {
  terminationGracePeriodSeconds: number;
  containers: { name: string; lifecycle?: unknown }[];
  initContainers: { name: string; lifecycle?: unknown }[];
}

function servicePods(kubernetes?: Record<string, unknown>): Map<string, PodSpec> {
  const objects = synthesize(resultOf(spec(kubernetes)));
  expect(objects.flatMap((o) => v.problems(o))).toEqual([]);
  const pods = new Map<string, PodSpec>();
  for (const o of objects)
    if (o.kind === "Deployment" && (o.metadata.name === "web" || o.metadata.name === "orders"))
      pods.set(
        o.metadata.name,
        (o as KubeObject & { spec: { template: { spec: PodSpec } } }).spec.template.spec,
      );
  expect([...pods.keys()].sort()).toEqual(["orders", "web"]);
  return pods;
}

describe("a service pod's drain delay (targets.kubernetes.serviceDrainDelay)", () => {
  // The grace period covers the app's sleep, the sidecar's drain (30 s) and 5 s to exit.
  it.each<[string, Record<string, unknown> | undefined, number | null, number]>([
    ["sleeps_5s_by_default_without_targets_kubernetes", undefined, 5, 40],
    ["sleeps_5s_by_default_with_targets_kubernetes", { gatewayServiceType: "ClusterIP" }, 5, 40],
    ["sleeps_the_configured_whole_seconds", { serviceDrainDelay: "20s" }, 20, 55],
    ["rounds_a_fraction_of_a_second_up", { serviceDrainDelay: "1500ms" }, 2, 37],
    ["has_no_pre_stop_hook_with_0s", { serviceDrainDelay: "0s" }, null, 35],
  ])("%s_in_every_service_app", (_claim, kubernetes, seconds, grace) => {
    for (const [name, pod] of servicePods(kubernetes)) {
      const app = pod.containers.find((c) => c.name === APP_CONTAINER)!;
      expect(app.lifecycle, name).toEqual(seconds === null ? undefined : { preStop: { sleep: { seconds } } });
      // The sidecar gets no sleep of its own: Kubernetes stops a native sidecar after the app exits.
      expect(
        pod.initContainers.map((c) => c.lifecycle),
        name,
      ).toEqual([undefined]);
      expect(pod.terminationGracePeriodSeconds, name).toBe(grace);
    }
  });

  it("the_spec_refuses_a_delay_over_a_minute_naming_the_field", () => {
    const r = parseSpec(spec({ serviceDrainDelay: "2m" }));
    expect(r.ok).toBe(false);
    if (r.ok) return;
    expect(r.errors.map((e) => [e.path, e.code, e.message])).toEqual([
      [
        "targets.kubernetes.serviceDrainDelay",
        "E_SPEC_LIMIT_TOO_LOOSE",
        expect.stringContaining("at most 60s"),
      ],
    ]);
  });
});
