/**
 * The local renderer (stacks/local/plan.ts): the shop's whole plan pinned by a golden file, and the
 * rules behind it — deterministic ports, every cluster on 127.0.0.1 at the callee's sidecar inbound,
 * the gateway a mesh member with its own SVID, JWT providers on the dev issuer, one local replica for
 * rate limits, collisions refused with the field to change.
 */
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { stringify } from "yaml";
import { loadSpecFile } from "../../components/spec/load.ts";
import { parseSpec } from "../../components/spec/parse.ts";
import type { MeshSpec } from "../../components/spec/schema.ts";
import { translate } from "../../components/translate/translate.ts";
import {
  loadRuntimeConfig,
  type GatewayRuntimeConfig,
  type SidecarRuntimeConfig,
} from "../../runtime/contract/index.ts";
import { createLocalAdmin, publicPlan } from "../../stacks/local/admin.ts";
import { fillPattern, planLocal, type LocalPlan, type LocalPlanOptions } from "../../stacks/local/plan.ts";
import { expectGolden } from "../support/golden.ts";

const ROOT = new URL("../../", import.meta.url).pathname;
const OPTIONS: LocalPlanOptions = {
  cwd: "/work/app",
  specDir: "/work/app/examples/shop",
  node: "/usr/bin/node",
  packageRoot: "/opt/meshgate",
  devApiKeyHashes: {
    "acme-retail": `sha256:${"a".repeat(64)}`,
    globex: `sha256:${"b".repeat(64)}`,
  },
  prometheus: "/usr/bin/prometheus",
};

async function shop(): Promise<MeshSpec> {
  const loaded = await loadSpecFile(join(ROOT, "examples/shop/mesh.yaml"));
  if (!loaded.ok) throw new Error("the shop example is invalid");
  return loaded.spec;
}

function plan(spec: MeshSpec, o: Partial<LocalPlanOptions> = {}): LocalPlan {
  const r = planLocal(spec, translate(spec), { ...OPTIONS, ...o });
  if (!r.ok) throw new Error(r.error.message);
  return r.plan;
}

const file = (p: LocalPlan, suffix: string) => p.files.find((f) => f.path.endsWith(suffix))!.content;
const gatewayOf = (p: LocalPlan) =>
  loadRuntimeConfig(file(p, "/run/gateway.json"), "gateway") as GatewayRuntimeConfig;
const sidecarOf = (p: LocalPlan, s: string) =>
  loadRuntimeConfig(file(p, `/run/sidecars/${s}.json`), "sidecar") as SidecarRuntimeConfig;

describe("local plan", () => {
  it("matches_the_golden_plan_of_the_shop", async () => {
    const p = plan(await shop());
    const readable = {
      ...p,
      files: p.files.map((f) => ({
        path: f.path,
        content: f.path.endsWith(".json") ? JSON.parse(f.content) : f.content,
      })),
    };
    expectGolden(
      join(ROOT, "test/local/testdata/shop.plan.yaml"),
      stringify(readable, { lineWidth: 0, aliasDuplicateObjects: false }),
    );
  });

  it("is_deterministic_and_frozen", async () => {
    const spec = await shop();
    expect(JSON.stringify(plan(spec))).toBe(JSON.stringify(plan(spec)));
    const p = plan(spec);
    expect(Object.isFrozen(p)).toBe(true);
    expect(Object.isFrozen(p.processes[0]!.argv)).toBe(true);
  });

  it("writes_configs_the_runtime_contract_accepts", async () => {
    const p = plan(await shop());
    for (const f of p.files.filter((x) => x.path.includes("/run/sidecars/")))
      expect(() => loadRuntimeConfig(f.content, "sidecar")).not.toThrow();
    expect(() => gatewayOf(p)).not.toThrow();
  });

  it("assigns_every_port_once_from_the_range_and_the_spec", async () => {
    const p = plan(await shop(), { portBase: 31000, gatewayPort: 18080, adminPort: 18901 });
    const ports = [p.ports.admin, ...p.processes.flatMap((x) => Object.values(x.ports))];
    expect(new Set(ports).size).toBe(ports.length);
    expect(p.ports).toEqual({ gateway: 18080, admin: 18901, gatewayAdmin: 31000, prometheus: 31001 });
    expect(p.processes.find((x) => x.name === "catalog")!.ports).toEqual({ app: 31002 });
    expect(p.processes.find((x) => x.name === "catalog-sidecar")!.ports).toMatchObject({
      inbound: 31003,
      outbound: 31004,
      admin: 31005,
    });
    for (const x of p.processes)
      for (const port of Object.values(x.ports))
        if (port !== 18080) expect(port).toBeGreaterThanOrEqual(31000);
  });

  it("keeps_active_health_checks_and_the_callees_sidecar_admits_each_prober", async () => {
    const p = plan(await shop());
    const probing = [
      gatewayOf(p),
      ...p.processes
        .filter((x) => x.role === "sidecar")
        .map((x) => sidecarOf(p, x.name.replace(/-sidecar$/, ""))),
    ];
    let probes = 0;
    for (const cfg of probing)
      for (const c of cfg.clusters) {
        if (!c.healthCheck) continue;
        probes++;
        const rule = sidecarOf(p, c.service).inbound.authz.rules.find(
          (r) => r.source === `services.${c.service}.healthCheck`,
        );
        expect(rule?.from).toContain(cfg.identity);
        expect(rule?.methods).toEqual(["GET"]);
        expect(rule?.paths).toEqual([c.healthCheck.path]);
      }
    expect(probes).toBeGreaterThan(0);
  });

  it("points_every_cluster_at_the_callees_sidecar_inbound_on_loopback_with_mtls", async () => {
    const p = plan(await shop());
    const inbound = (s: string) => p.processes.find((x) => x.name === `${s}-sidecar`)!.ports.inbound!;
    const gw = gatewayOf(p);
    const orders = sidecarOf(p, "orders");
    // The one external backend of a gateway route (track-shipment) is reached at its own address with TLS.
    expect(gw.clusters.filter((c) => c.address).map((c) => [c.name, c.address, c.tls.mode])).toEqual([
      ["carrier-tracking", "tracking.carrier.example", "tls"],
    ]);
    for (const c of [...gw.clusters.filter((x) => !x.address), ...orders.clusters]) {
      expect(c.tls).toEqual({
        mode: "mtls",
        serverIdentity: `spiffe://shop.example/ns/shop/sa/${c.service}`,
      });
      // HTTP/2 services stay HTTP/2 between the proxies (the sidecars mesh h2 over mTLS).
      expect(c.protocol).toBe(c.service === "notifications" ? "http2" : "http1");
    }
    // The demo service speaks HTTP/1.1: notifications' sidecar talks HTTP/1.1 to it.
    expect(sidecarOf(p, "notifications").inbound.protocol).toBe("http1");
    for (const cfg of [gw, orders]) {
      if (cfg.discovery.kind !== "static") throw new Error("static discovery expected");
      for (const c of cfg.clusters)
        expect(cfg.discovery.endpoints[c.name]).toEqual(
          c.address ? undefined : [{ host: "127.0.0.1", port: inbound(c.service) }],
        );
    }
    expect(orders.inbound.appPort).toBe(p.processes.find((x) => x.name === "orders")!.ports.app);
  });

  it("makes_the_gateway_a_mesh_member_with_its_own_svid", async () => {
    const p = plan(await shop(), { stateDir: "state" });
    const gw = gatewayOf(p);
    expect(gw.svid).toMatchObject({
      certFile: "/work/app/state/identities/gateway/svid.pem",
      keyFile: "/work/app/state/identities/gateway/svid-key.pem",
      bundleFile: "/work/app/state/identities/gateway/bundle.pem",
      issuer: null,
    });
    expect(p.identities.map((i) => i.workload)).toContain("gateway");
    expect(sidecarOf(p, "payments").svid.issuer).toBeNull(); // the launcher issues; no sidecar holds a CA key
  });

  it("trusts_the_dev_issuer_and_serves_localhost_with_one_http_listener", async () => {
    const p = plan(await shop(), { adminPort: 19999 });
    const gw = gatewayOf(p);
    expect(gw.auth.jwt.map((j) => [j.issuer, j.jwksUri, j.jwks, j.audiences])).toEqual([
      ["http://127.0.0.1:19999/", "http://127.0.0.1:19999/.well-known/jwks.json", null, ["shop-api"]],
    ]);
    expect(gw.listeners).toEqual([{ name: "http", port: 8080, protocol: "http", http2: true, tls: null }]);
    expect(gw.hosts).toEqual(expect.arrayContaining(["127.0.0.1", "localhost", "api.shop.example"]));
    expect(gw.rateLimitStore).toEqual({ kind: "local", replicas: 1 });
    const acme = gw.auth.apiKeys!.consumers.find((c) => c.name === "acme-retail")!;
    expect(acme.keyHashes).toContain(`sha256:${"a".repeat(64)}`);
    expect(acme.keyHashes).toContain(
      "sha256:8914c106c8337bca394019955a780658b362d4ce5069eafaa26f12c9de1451b4",
    );
    const app = gw.routes.find((r) => r.name === "app")!;
    expect(app.action).toMatchObject({ kind: "static", root: "/work/app/examples/shop/web" });
    expect(p.notes.join("\n")).toMatch(/one replica/);
  });

  it("does_not_relay_to_an_external_whose_client_certificate_is_a_kubernetes_secret_and_says_so", async () => {
    const p = plan(await shop());
    const payments = sidecarOf(p, "payments");
    expect(payments.outbound.external.map((x) => x.name)).not.toContain("bank-payouts");
    expect(payments.outbound.external.map((x) => x.name)).toContain("card-processor");
    expect(p.notes).toContain(
      "bank-payouts: not relayed locally — the client certificate is a Kubernetes Secret (bank-payouts-client); give certFile and keyFile to reach it from here",
    );
    const app = p.processes.find((x) => x.name === "payments")!;
    expect(Object.keys(app.env)).not.toContain("MESHGATE_EXTERNAL_BANK_PAYOUTS_ADDR");
  });

  it("says_that_localport_pins_do_not_apply_and_gives_ports_from_the_base_instead", async () => {
    const spec = await shop();
    const raw = structuredClone(spec) as unknown as { services: Record<string, Record<string, unknown>> };
    raw.services.payments!.localPort = 15450;
    const parsed = parseSpec(raw);
    if (!parsed.ok) throw new Error(parsed.errors.map((e) => e.message).join("\n"));
    const p = plan(parsed.spec);
    expect(p.notes).toContain(
      "localPort pins do not apply locally (every sidecar shares 127.0.0.1): payments (15450) get ports from --port-base; apps read MESHGATE_SERVICE_<CALLEE>_URL and MESHGATE_EXTERNAL_<NAME>_ADDR",
    );
    const toPayments = sidecarOf(p, "orders").outbound.services.find((x) => x.service === "payments")!;
    expect(toPayments.localPort).not.toBe(15450);
    expect(plan(await shop()).notes.join("\n")).not.toContain("localPort pins");
  });

  it("reads_client_certificate_files_relative_to_the_working_directory", async () => {
    const spec = await shop();
    const raw = structuredClone(spec) as unknown as { external: Record<string, Record<string, unknown>> };
    raw.external["bank-payouts"]!.clientCertificate = {
      certFile: "certs/bank.crt",
      keyFile: "/secure/bank.key",
    };
    const parsed = parseSpec(raw);
    if (!parsed.ok) throw new Error(parsed.errors.map((e) => e.message).join("\n"));
    const p = plan(parsed.spec);
    const bank = sidecarOf(p, "payments").outbound.external.find((x) => x.name === "bank-payouts")!;
    expect(bank.clientCertificate).toEqual({
      certFile: "/work/app/certs/bank.crt",
      keyFile: "/secure/bank.key",
    });
    expect(p.notes.join("\n")).not.toContain("bank-payouts: not relayed locally");
  });

  it.each<[string, Record<string, string>, boolean]>([
    [
      "serves_a_route_to_an_external_with_client_certificate_files_resolved_from_the_working_directory",
      { certFile: "certs/carrier.crt", keyFile: "/secure/carrier.key" },
      true,
    ],
    [
      "does_not_serve_a_route_to_an_external_whose_client_certificate_is_a_kubernetes_secret_and_says_so",
      { secret: "carrier-client" },
      false,
    ],
  ])("%s", async (_claim, clientCertificate, served) => {
    const raw = structuredClone(await shop()) as unknown as {
      external: Record<string, Record<string, unknown>>;
    };
    raw.external["carrier-tracking"]!.clientCertificate = clientCertificate;
    const parsed = parseSpec(raw);
    if (!parsed.ok) throw new Error(parsed.errors.map((e) => e.message).join("\n"));
    const p = plan(parsed.spec);
    const gw = gatewayOf(p);
    const carrier = gw.clusters.find((c) => c.name === "carrier-tracking");
    expect(gw.routes.some((r) => r.name === "track-shipment")).toBe(served);
    expect(carrier?.tls).toEqual(
      served
        ? {
            mode: "tls",
            serverName: "tracking.carrier.example",
            ca: null,
            clientCertificate: { certFile: "/work/app/certs/carrier.crt", keyFile: "/secure/carrier.key" },
          }
        : undefined,
    );
    expect(
      p.notes.includes(
        "gateway routes track-shipment are not served locally — they forward to carrier-tracking, whose client certificate is a Kubernetes Secret",
      ),
    ).toBe(!served);
  });

  it("runs_the_demo_service_unless_the_spec_gives_a_local_command", async () => {
    const spec = await shop();
    const withCommand = parseSpec({
      ...(JSON.parse(JSON.stringify(spec)) as object),
      services: {
        ...spec.services,
        users: {
          ...spec.services.users,
          local: { command: "./run-users.sh", env: { DEBUG: "1" }, cwd: "users" },
        },
      },
    });
    if (!withCommand.ok) throw new Error(withCommand.errors.map((e) => e.message).join("\n"));
    const p = plan(withCommand.spec);
    const users = p.processes.find((x) => x.name === "users")!;
    expect(users.argv).toEqual(["sh", "-c", "./run-users.sh"]);
    expect(users.cwd).toBe("/work/app/examples/shop/users");
    expect(users.env).toMatchObject({ DEBUG: "1", PORT: String(users.ports.app), MESHGATE_SERVICE: "users" });
    expect(users.ready).toEqual({ kind: "tcp", port: users.ports.app });
    const orders = p.processes.find((x) => x.name === "orders")!;
    expect(orders.argv.slice(1, 2)).toEqual(["/opt/meshgate/stacks/local/demo/main.ts"]);
    const sidecar = p.processes.find((x) => x.name === "orders-sidecar")!;
    expect(orders.env.MESHGATE_CALL_PAYMENTS_URL).toBe(`http://127.0.0.1:${sidecar.ports["to-payments"]}`);
    // The name the Kubernetes and Docker targets set, for the same port.
    expect(orders.env.MESHGATE_SERVICE_PAYMENTS_URL).toBe(`http://127.0.0.1:${sidecar.ports["to-payments"]}`);
    expect(orders.env.MESHGATE_OUTBOUND_URL).toBe(`http://127.0.0.1:${sidecar.ports.outbound}`);
    expect(p.files.some((f) => f.path.endsWith("/demo/users.json"))).toBe(false);
  });

  it("serves_the_plan_on_the_admin_server_without_url_credentials_or_environment_values", async () => {
    // Any local user may curl /api/plan, while the run files are 0600: a password in the OTLP endpoint
    // (every proxy's config) or in a service's local.env must not be served; the names and hosts stay.
    const spec = await shop();
    const withSecrets = parseSpec({
      ...(JSON.parse(JSON.stringify(spec)) as object),
      observability: {
        ...spec.observability,
        tracing: { otlpEndpoint: "https://user:s3cretpw@otel.example:4318" },
      },
      services: {
        ...spec.services,
        users: {
          ...spec.services.users,
          local: { command: "./run-users.sh", env: { DB_PASSWORD: "hunter2-env" } },
        },
      },
    });
    if (!withSecrets.ok) throw new Error(withSecrets.errors.map((e) => e.message).join("\n"));
    const p = plan(withSecrets.spec);
    expect(JSON.stringify(p)).toContain("s3cretpw"); // the run files do hold it (0600)
    expect(JSON.stringify(p)).toContain("hunter2-env");
    const admin = createLocalAdmin({ plan: p, jwks: { keys: [] }, status: () => [] });
    const port = await admin.listen(0);
    try {
      const body = await fetch(`http://127.0.0.1:${port}/api/plan`).then((r) => r.text());
      expect(body).not.toContain("s3cretpw");
      expect(body).not.toContain("user:");
      expect(body).not.toContain("hunter2-env");
      expect(body).toContain("[redacted]@otel.example:4318");
      const served = JSON.parse(body) as LocalPlan;
      expect(served.processes.find((x) => x.name === "users")!.env).toMatchObject({
        DB_PASSWORD: "[redacted]",
      });
      expect(served.files.map((f) => f.path)).toEqual(p.files.map((f) => f.path));
    } finally {
      await admin.close();
    }
    // A URL without credentials is served as written.
    expect(JSON.stringify(publicPlan(plan(spec)))).toContain("http://127.0.0.1:");
  });

  it("gives_the_demo_one_allowed_request_per_declared_callee", async () => {
    const p = plan(await shop());
    const demo = JSON.parse(file(p, "/run/demo/orders.json")) as {
      calls: { service: string; method: string; path: string }[];
    };
    expect(demo.calls.map((c) => `${c.method} ${c.service}${c.path}`)).toEqual([
      "GET inventory/inventory/42",
      "POST notifications/shop.notifications.v1.Notifier/Send",
      "GET payments/payments/42",
      "GET users/users/42",
    ]);
  });

  it("starts_apps_and_sidecars_then_the_gateway_then_prometheus", async () => {
    const p = plan(await shop());
    const phase = (role: string) => [
      ...new Set(p.processes.filter((x) => x.role === role).map((x) => x.phase)),
    ];
    expect([phase("app"), phase("sidecar"), phase("gateway"), phase("prometheus")]).toEqual([
      [0],
      [0],
      [1],
      [2],
    ]);
    expect(plan(await shop(), { prometheus: null }).processes.some((x) => x.role === "prometheus")).toBe(
      false,
    );
  });

  it.each([
    [{ gatewayPort: 20010 }, "E_LOCAL_PORT_COLLISION", "targets.local.gatewayPort"],
    [{ adminPort: 20000 }, "E_LOCAL_PORT_COLLISION", "targets.local.adminPort"],
    [{ adminPort: 8080 }, "E_LOCAL_PORT_COLLISION", "targets.local.adminPort"],
    [{ portBase: 65500 }, "E_LOCAL_PORT_RANGE", "--port-base"],
  ])("refuses_colliding_ports %o", async (o, code, field) => {
    const spec = await shop();
    const r = planLocal(spec, translate(spec), { ...OPTIONS, ...o });
    expect(r.ok).toBe(false);
    if (r.ok) return;
    expect(r.error).toMatchObject({ code, field });
    expect(r.error.message).toContain(field);
  });

  it("fills_path_patterns_for_example_requests", () => {
    expect(fillPattern("/orders/{id}", "42")).toBe("/orders/42");
    expect(fillPattern("/inventory/**", "42")).toBe("/inventory/42");
    expect(fillPattern("/a/*/b", "x")).toBe("/a/x/b");
  });

  it("prints_curl_lines_for_a_public_a_jwt_an_api_key_and_an_aggregated_route", async () => {
    const p = plan(await shop(), { stateDir: "/tmp/st" });
    expect(p.examples.map((e) => e.route)).toEqual([
      "list-products",
      "list-orders",
      "partner-stock",
      "dashboard",
    ]);
    expect(p.examples[1]!.command).toBe(
      'curl -i -H "Authorization: Bearer $(npx meshgate token --sub alice --scope orders:read --state-dir /tmp/st)" http://127.0.0.1:8080/api/orders',
    );
    expect(p.examples[2]!.command).toContain("$(cat /tmp/st/api-keys/acme-retail)");
  });

  it("never_puts_a_key_in_the_plan", async () => {
    const text = JSON.stringify(plan(await shop()));
    expect(text).not.toContain("PRIVATE KEY");
  });
});
