/**
 * The Docker renderer on the shop example: every sidecar in its app's network namespace, Docker DNS
 * discovery on the standard ports, config and identity files where the runtime reads them (the configs pass
 * the runtime's own loader), admin ports on loopback only, the gateway's listeners and stores adapted to
 * one engine, Prometheus scraping every proxy by name — pinned by a golden plan — and clear errors.
 */
import { createHash } from "node:crypto";
import { describe, expect, it } from "vitest";
import { relative } from "node:path";
import {
  PAUSE_IMAGE,
  planDocker,
  type DockerPlan,
  type DockerPlanOptions,
  type StaticFile as DockerStaticFile,
} from "../../components/docker/plan.ts";
import { listStaticFiles } from "../../components/docker/platform.ts";
import { PATHS } from "../../components/kubernetes/model.ts";
import type { TranslateResult } from "../../components/translate/ir.ts";
import { loadRuntimeConfig } from "../../runtime/contract/load.ts";
import type { GatewayRuntimeConfig } from "../../runtime/contract/schema.ts";
import { expectGolden } from "../support/golden.ts";
import { ROOT, shopRaw, translated } from "./support.ts";
import { SSO_PROVIDER } from "../support/oidc.ts";

type Raw = ReturnType<typeof shopRaw>;

/** The static routes' files as the component lists them, with paths relative to the repository (stable). */
function staticFilesOf(result: TranslateResult): Record<string, DockerStaticFile[]> {
  const listed = listStaticFiles(result, ROOT);
  if (Array.isArray(listed)) throw new Error(listed.map((e) => e.reason).join("; "));
  return Object.fromEntries(
    Object.entries(listed).map(([root, files]) => [
      root,
      files.map((f) => ({ ...f, hostPath: relative(ROOT, f.hostPath) })),
    ]),
  );
}

function planOf(raw: Raw = shopRaw(), o: DockerPlanOptions = {}): DockerPlan {
  const result = translated(raw);
  const r = planDocker(result, { staticFiles: staticFilesOf(result), ...o });
  if (!r.ok) throw new Error(r.errors.map((e) => `${e.field}: ${e.message}`).join("; "));
  return r.plan;
}
const shop = planOf();
const shopResult: TranslateResult = translated(shopRaw());
const byRole = (p: DockerPlan, role: string) => p.containers.filter((c) => c.role === role);
const named = (p: DockerPlan, name: string) => p.containers.find((c) => c.name === name)!;
const text = (p: DockerPlan, container: string, path: string) => {
  const f = named(p, container).files.find((x) => x.path === path);
  if (f?.source.kind !== "text") throw new Error(`${container}: no text file ${path}`);
  return f.source.content;
};

describe("docker plan: wiring", () => {
  // Held by the app, the namespace would be replaced when the app crashes and restarts, and the sidecar
  // left in the old one with nothing but a loopback (moby#24935): the service unreachable for good.
  it("runs_every_app_and_its_sidecar_in_a_network_namespace_that_a_pause_container_holds", () => {
    const services = shopResult.infra.workloads.filter((w) => w.kind === "service").map((w) => w.name);
    expect(byRole(shop, "sidecar").map((c) => c.workload)).toEqual(services);
    expect(byRole(shop, "network").map((c) => c.workload)).toEqual(services);
    for (const sidecar of byRole(shop, "sidecar")) {
      const app = named(shop, `shop-${sidecar.workload}`);
      const holder = named(shop, `shop-${sidecar.workload}-net`);
      expect([app.role, holder.role]).toEqual(["app", "network"]);
      expect(holder.image).toEqual({ kind: "remote", ref: PAUSE_IMAGE });
      expect(holder.network).toEqual({ kind: "network", aliases: [sidecar.workload] });
      for (const member of [app, sidecar])
        expect(member.network).toEqual({ kind: "container", container: holder.name });
      expect(sidecar.ports).toEqual([]);
      expect([holder.after, app.after, sidecar.after]).toEqual([[], [holder.name], [app.name]]);
      expect(holder).toMatchObject({ hardened: true, readOnly: true, files: [], ports: [] });
    }
    expect(shop.remoteImages).toContain(PAUSE_IMAGE);
  });

  it("aliases_every_service_by_its_name_on_the_network_with_no_published_port", () => {
    for (const app of byRole(shop, "app")) {
      expect(named(shop, `shop-${app.workload}-net`).network).toEqual({
        kind: "network",
        aliases: [app.workload],
      });
      expect(app.ports).toEqual([]);
      const w = shopResult.infra.workloads.find((x) => x.name === app.workload);
      expect(app.image).toEqual({ kind: "remote", ref: w?.kind === "service" ? w.image : null });
      expect(shop.remoteImages).toContain(app.image.kind === "remote" ? app.image.ref : "");
    }
  });

  it("creates_apps_then_sidecars_then_the_gateway_after_every_sidecar_then_prometheus", () => {
    const roles = shop.containers.map((c) => c.role);
    const last = (r: string) => roles.lastIndexOf(r as never);
    const first = (r: string) => roles.indexOf(r as never);
    expect(last("app")).toBeLessThan(first("sidecar"));
    expect(last("sidecar")).toBeLessThan(first("gateway"));
    expect(named(shop, "shop-gateway").after).toEqual(byRole(shop, "sidecar").map((c) => c.name));
    expect(roles.at(-1)).toBe("prometheus");
  });

  it("has_the_proxies_discover_services_by_docker_dns_on_the_standard_inbound_port", () => {
    for (const [workload, config] of Object.entries(shop.configs)) {
      expect(config.discovery, workload).toMatchObject({ kind: "dns", template: "{service}" });
      // Mesh services through their sidecars' inbound port; a route's external destination at its own.
      for (const cluster of config.clusters)
        expect(cluster.port, cluster.name).toBe(cluster.address ? 443 : 15006);
    }
    expect(Object.keys(shop.configs).sort()).toEqual(
      ["gateway", ...shopResult.runtime.sidecars.map((s) => s.name)].sort(),
    );
  });

  it("runs_the_proxies_from_the_runtime_image_with_the_config_file_the_plan_writes", () => {
    for (const c of [...byRole(shop, "sidecar"), ...byRole(shop, "gateway")]) {
      expect(c.image).toEqual({ kind: "runtime" });
      expect(c.command.slice(0, 3)).toEqual([c.role, "--config", PATHS.configFile]);
      expect(c.user).toBe("65532:65532");
      expect(c.readOnly).toBe(true);
      expect(c.hardened).toBe(true);
      expect(c.filesDir).toBe("/etc/meshgate");
      expect(c.labels["meshgate.io/config-hash"]).toBe(shop.configs[c.workload!]!.hash);
    }
  });

  it("writes_configs_that_the_runtime_loader_accepts_as_they_are", () => {
    for (const c of [...byRole(shop, "sidecar"), ...byRole(shop, "gateway")]) {
      const content = text(shop, c.name, PATHS.configFile);
      const loaded = loadRuntimeConfig(content, c.role as "gateway");
      expect(loaded.hash).toBe(shop.configs[c.workload!]!.hash);
      expect(loaded.name).toBe(c.workload);
    }
  });

  it("copies_the_identity_to_the_paths_the_config_reads_with_the_key_readable_by_the_runtime_only", () => {
    for (const c of [...byRole(shop, "sidecar"), ...byRole(shop, "gateway")]) {
      const svid = shop.configs[c.workload!]!.svid!;
      const at = (path: string | null) => c.files.find((f) => f.path === path);
      expect(at(svid.certFile)).toMatchObject({
        mode: "0444",
        owner: 65532,
        source: { kind: "svid-chain", identity: c.workload },
      });
      expect(at(svid.keyFile)).toMatchObject({
        mode: "0400",
        owner: 65532,
        source: { kind: "svid-key", identity: c.workload },
      });
      expect(at(svid.bundleFile)?.source).toEqual({ kind: "trust-bundle" });
      expect(at(svid.intermediatesFile)?.source).toEqual({ kind: "intermediates" });
      for (const f of c.files) expect(f.path.startsWith(`${c.filesDir}/`), f.path).toBe(true);
    }
    expect(JSON.stringify(shop)).not.toMatch(/PRIVATE KEY/);
  });

  it("publishes_the_gateway_listener_on_the_target_port_and_admin_ports_on_loopback_only", () => {
    const gateway = named(shop, "shop-gateway");
    expect(gateway.ports).toEqual([
      { internal: 8080, external: 8080, ip: "0.0.0.0" },
      { internal: 9901, external: 9901, ip: "127.0.0.1" },
    ]);
    expect(named(shop, "shop-prometheus").ports).toEqual([
      { internal: 9090, external: 9090, ip: "127.0.0.1" },
    ]);
    expect(shop.urls).toEqual({ gateway: "http://localhost:8080", prometheus: "http://localhost:9090" });
    const moved = planOf(
      { ...shopRaw(), targets: { docker: { gatewayPort: 18080 } } },
      { gatewayAdminPort: 19901, prometheusPort: 19090 },
    );
    expect(named(moved, "shop-gateway").ports).toEqual([
      { internal: 8080, external: 18080, ip: "0.0.0.0" },
      { internal: 9901, external: 19901, ip: "127.0.0.1" },
    ]);
    expect(moved.urls).toEqual({ gateway: "http://localhost:18080", prometheus: "http://localhost:19090" });
  });

  it("has_the_gateway_admin_refuse_foreign_hosts_on_every_connection", () => {
    // Published on the host's 127.0.0.1, but Docker's port forward delivers the connection on the
    // container's bridge address: the admin is told which names it answers, so that a page rebinding its
    // DNS name to 127.0.0.1 is refused there too (runtime/gateway/admin.ts).
    const admin = (shop.configs.gateway as GatewayRuntimeConfig).admin;
    expect(admin.hosts).toEqual(["gateway", "shop-gateway"]);
    const yml = text(shop, "shop-prometheus", "/etc/meshgate/prometheus/prometheus.yml");
    expect(yml).toContain(`- ${admin.hosts![0]}:${admin.port}`);
    for (const c of Object.values(shop.configs))
      if (c.kind === "sidecar") expect(c.admin.hosts).toBeUndefined();
  });

  it("has_prometheus_scrape_every_proxy_admin_port_by_its_name_on_the_network", () => {
    const yml = text(shop, "shop-prometheus", "/etc/meshgate/prometheus/prometheus.yml");
    expect(yml).toContain("- gateway:9901");
    for (const s of shopResult.runtime.sidecars) expect(yml).toContain(`- ${s.name}:15000`);
    expect(yml).toContain("rules/meshgate-shop.rules.yml");
    expect(named(shop, "shop-prometheus").files.map((f) => f.path)).toContain(
      "/etc/meshgate/prometheus/rules/meshgate-shop.rules.yml",
    );
    expect(named(shop, "shop-prometheus").command).toContain(
      "--config.file=/etc/meshgate/prometheus/prometheus.yml",
    );
    const off = shopRaw();
    off.observability.metrics = { backend: "none" };
    const plan = planOf(off);
    expect(byRole(plan, "prometheus")).toEqual([]);
    expect(plan.urls.prometheus).toBeNull();
    expect(plan.remoteImages).not.toContain("quay.io/prometheus/prometheus:v3.5.0");
  });
});

describe("docker plan: replicas", () => {
  it("runs_neither_the_app_nor_the_sidecar_of_a_service_with_replicas_0_as_kubernetes_runs_no_pod", () => {
    const raw = shopRaw();
    raw.services.notifications.replicas = 0;
    const plan = planOf(raw);
    expect(plan.containers.filter((c) => c.workload === "notifications")).toEqual([]);
    expect(plan.containers.map((c) => c.name)).not.toContain("shop-notifications");
    expect(Object.keys(plan.configs)).not.toContain("notifications");
    expect(plan.notes.join("\n")).toMatch(
      /notifications: replicas 0, so neither the app nor its sidecar is run/,
    );
    // Prometheus does not scrape a sidecar that is not there; the others are unchanged.
    const yml = text(plan, "shop-prometheus", "/etc/meshgate/prometheus/prometheus.yml");
    expect(yml).not.toContain("- notifications:15000");
    expect(yml).toContain("- orders:15000");
    expect(plan.containers.filter((c) => c.workload !== "notifications").map((c) => c.name)).toEqual(
      shop.containers.filter((c) => c.workload !== "notifications").map((c) => c.name),
    );
    expect(named(plan, "shop-gateway").after).not.toContain("shop-notifications-sidecar");
  });
});

describe("docker plan: client certificates of externals (mutual TLS)", () => {
  it.each<[string, string[], boolean]>([
    ["does_not_relay_to_an_external_whose_client_certificate_secret_is_not_given", [], false],
    ["relays_to_it_with_the_secrets_files_in_the_sidecar_when_given", ["bank-payouts-client"], true],
    ["does_not_relay_to_it_when_another_secret_is_given", ["shop-tls"], false],
  ])("%s", (_claim, tlsSecrets, relayed) => {
    const plan = planOf(shopRaw(), { tlsSecrets });
    const payments = plan.configs.payments as {
      outbound: { external: { name: string; clientCertificate: unknown }[] };
    };
    expect(payments.outbound.external.some((x) => x.name === "bank-payouts")).toBe(relayed);
    // The other externals stay relayed either way.
    expect(payments.outbound.external.map((x) => x.name)).toEqual(expect.arrayContaining(["card-processor"]));
    expect(
      plan.notes.some((n) =>
        n.includes(
          "payments's sidecar does not relay to bank-payouts: give the client certificate secrets (bank-payouts-client) in tlsCertificates",
        ),
      ),
    ).toBe(!relayed);
    const files = named(plan, "shop-payments-sidecar").files.filter((f) => f.source.kind.startsWith("tls-"));
    expect(files).toEqual(
      relayed
        ? [
            expect.objectContaining({ path: "/etc/meshgate/tls/bank-payouts-client/tls.crt", mode: "0444" }),
            expect.objectContaining({ path: "/etc/meshgate/tls/bank-payouts-client/tls.key", mode: "0400" }),
          ]
        : [],
    );
    // The app's environment names no local port of an external its sidecar does not relay.
    const env = named(plan, "shop-payments").env;
    expect("MESHGATE_EXTERNAL_BANK_PAYOUTS_ADDR" in env).toBe(relayed);
  });
});

describe("docker plan: the gateway on one engine", () => {
  it.each<[string, string[], string[], boolean]>([
    ["keeps_an_https_listener_closed_without_its_certificate_secret", [], ["http"], true],
    ["opens_an_https_listener_when_its_certificate_secret_is_given", ["shop-tls"], ["http", "https"], false],
    ["keeps_it_closed_when_another_secret_is_given", ["other-tls"], ["http"], true],
  ])("%s", (_claim, tlsSecrets, listeners, noted) => {
    const plan = planOf(shopRaw(), { tlsSecrets });
    const gw = plan.configs.gateway as { listeners: { name: string }[] };
    expect(gw.listeners.map((l) => l.name)).toEqual(listeners);
    expect(plan.notes.some((n) => n.includes("https (https :8443) are not opened"))).toBe(noted);
    const files = named(plan, "shop-gateway").files;
    const tls = files.filter((f) => f.source.kind.startsWith("tls-"));
    if (listeners.includes("https")) {
      expect(tls).toEqual([
        expect.objectContaining({ path: "/etc/meshgate/tls/shop-tls/tls.crt", mode: "0444" }),
        expect.objectContaining({ path: "/etc/meshgate/tls/shop-tls/tls.key", mode: "0400" }),
      ]);
      expect(named(plan, "shop-gateway").ports).toContainEqual({
        internal: 8443,
        external: 8443,
        ip: "0.0.0.0",
      });
    } else expect(tls).toEqual([]);
  });

  it.each<[string, string, string]>([
    [
      "keeps_rate_limits_in_process_when_redis_is_a_kubernetes_name",
      "redis://redis.shop.svc.cluster.local:6379",
      "local",
    ],
    ["keeps_a_redis_the_engine_can_reach", "redis://redis.internal.example:6379", "redis"],
  ])("%s", (_claim, url, kind) => {
    const raw = shopRaw();
    raw.gateway.rateLimitStore.redis.url = url;
    const gw = planOf(raw).configs.gateway as { rateLimitStore: { kind: string; replicas?: number } };
    expect(gw.rateLimitStore.kind).toBe(kind);
    if (kind === "local") expect(gw.rateLimitStore.replicas).toBe(1);
  });

  it("never_writes_a_redis_password_into_the_notes_which_are_logged_and_a_stack_output", () => {
    const raw = shopRaw();
    raw.gateway.rateLimitStore.redis.url = "redis://:s3cret-redis-pw@redis.shop.svc.cluster.local:6379";
    const notes = planOf(raw).notes.join("\n");
    expect(notes).toContain("rate limits are kept in the gateway container");
    expect(notes).toContain("redis.shop.svc.cluster.local:6379");
    expect(notes).not.toContain("s3cret-redis-pw");
  });

  it("serves_localhost_besides_the_spec_hosts_so_that_the_gateway_url_answers", () => {
    expect(shop.configs.gateway).toMatchObject({
      hosts: ["127.0.0.1", "api.shop.example", "localhost", "shop.example"],
    });
    expect(shop.notes.join("\n")).toContain("also serves the hosts localhost and 127.0.0.1");
  });

  it("runs_one_gateway_process_with_its_own_svid_as_a_mesh_member", () => {
    const gateway = named(shop, "shop-gateway");
    expect(gateway.command).toEqual(["gateway", "--config", PATHS.configFile, "--workers", "1"]);
    expect(gateway.network).toEqual({ kind: "network", aliases: ["gateway"] });
    const svid = shop.configs.gateway!.svid!;
    expect(svid.certFile).toBe("/etc/meshgate/identity/svid.pem");
    expect(gateway.healthcheck?.test.join(" ")).toContain("http://127.0.0.1:9901/ready");
  });
});

describe("docker plan: static routes", () => {
  it("copies_every_file_of_a_static_route_into_the_gateway_and_points_the_route_there", () => {
    const gw = shop.configs.gateway as {
      routes: { name: string; action: { kind: string; root?: string } }[];
    };
    const app = gw.routes.find((r) => r.action.kind === "static")!;
    expect(app.action.root).toBe(`/etc/meshgate/static/${app.name}`);
    const files = named(shop, "shop-gateway").files.filter((f) => f.source.kind === "host-file");
    const listed = staticFilesOf(shopResult)["examples/shop/web"]!;
    expect(listed.map((f) => f.relative)).toContain("index.html");
    expect(files).toEqual(
      listed.map((f) => ({
        path: `/etc/meshgate/static/${app.name}/${f.relative}`,
        mode: "0444",
        owner: 65532,
        source: { kind: "host-file", path: f.hostPath, sha256: f.sha256 },
      })),
    );
  });

  it("refuses_a_static_route_whose_files_were_not_given", () => {
    const r = planDocker(shopResult, {});
    expect(r.ok).toBe(false);
    if (!r.ok)
      expect(r.errors).toContainEqual(
        expect.objectContaining({ code: "E_DOCKER_STATIC_FILES", field: "gateway.routes" }),
      );
  });
});

describe("docker plan: OIDC client secrets", () => {
  const withOidc = () => {
    const raw = shopRaw();
    raw.gateway.oidc = {
      sso: { ...SSO_PROVIDER },
    };
    return raw;
  };

  it("sets_each_providers_variable_in_the_gateway_from_the_secret_the_caller_gives", () => {
    const p = planOf(withOidc(), { oidcSecrets: ["sso"] });
    expect(named(p, "shop-gateway").secretEnv).toEqual({ SSO_CLIENT_SECRET: "sso" });
    expect(named(p, "shop-gateway").env).toEqual({});
    for (const c of p.containers.filter((x) => x.role !== "gateway")) expect(c.secretEnv, c.name).toEqual({});
  });

  it("refuses_a_provider_whose_secret_is_not_given", () => {
    const result = translated(withOidc());
    const r = planDocker(result, { staticFiles: staticFilesOf(result) });
    expect(r.ok).toBe(false);
    if (!r.ok)
      expect(r.errors).toContainEqual({
        code: "E_DOCKER_OIDC_SECRET",
        field: "oidcClientSecrets",
        message:
          "OIDC provider sso: the gateway reads its client secret from the environment variable SSO_CLIENT_SECRET; give it in oidcClientSecrets.sso",
      });
  });
});

describe("docker plan: a gateway route to an external destination with mutual TLS", () => {
  const withPartner = () => {
    const raw = shopRaw();
    raw.external.partner = {
      host: "api.partner.example",
      port: 443,
      tls: "originate",
      clientCertificate: { secret: "partner-client" },
      allow: [{ from: ["gateway"] }],
    };
    raw.gateway.routes.push({
      name: "partner",
      match: { path: "/partner/api/**", methods: ["GET"] },
      to: { external: "partner" },
      auth: { apiKey: true, groups: ["partners"] },
    });
    return raw;
  };

  it("copies_the_client_certificate_into_the_gateway_only_with_the_key_0400", () => {
    const p = planOf(withPartner(), { tlsSecrets: ["partner-client"] });
    expect(named(p, "shop-gateway").files.filter((f) => f.path.includes("partner-client"))).toEqual([
      expect.objectContaining({ path: "/etc/meshgate/tls/partner-client/tls.crt", mode: "0444" }),
      expect.objectContaining({ path: "/etc/meshgate/tls/partner-client/tls.key", mode: "0400" }),
    ]);
    for (const c of p.containers.filter((x) => x.role !== "gateway"))
      expect(JSON.stringify(c.files), c.name).not.toContain("partner-client");
  });

  it("refuses_the_plan_when_the_client_certificate_secret_is_not_given", () => {
    const result = translated(withPartner());
    const r = planDocker(result, { staticFiles: staticFilesOf(result) });
    expect(r.ok).toBe(false);
    if (!r.ok)
      expect(r.errors).toContainEqual({
        code: "E_DOCKER_CLIENT_CERT",
        field: "tlsCertificates",
        message:
          "the gateway forwards to external partner with mutual TLS: give its client certificate secret (partner-client) in tlsCertificates",
      });
  });
});

describe("docker plan: errors", () => {
  it.each<[string, (raw: Raw) => void, DockerPlanOptions, string, string]>([
    [
      "refuses_a_spec_without_a_docker_target",
      (r) => delete r.targets.docker,
      {},
      "targets.docker",
      "E_DOCKER_TARGET_MISSING",
    ],
    [
      "refuses_a_gateway_port_that_collides_with_the_admin_port",
      (r) => (r.targets.docker.gatewayPort = 9901),
      {},
      "targets.docker.gatewayPort",
      "E_DOCKER_PORT_COLLISION",
    ],
    [
      "refuses_a_prometheus_port_the_gateway_publishes",
      () => {},
      { prometheusPort: 8080 },
      "prometheusPort",
      "E_DOCKER_PORT_COLLISION",
    ],
    [
      "refuses_a_service_named_like_the_prometheus_container",
      (r) => (r.services.prometheus = { image: "ghcr.io/acme/metrics:1.0.0", port: 8080 }),
      {},
      "services.prometheus",
      "E_DOCKER_NAME_COLLISION",
    ],
    [
      "refuses_a_service_named_like_another_services_sidecar",
      (r) => (r.services["search-sidecar"] = { image: "ghcr.io/acme/search:1.0.0", port: 8080 }),
      {},
      "services.search-sidecar",
      "E_DOCKER_NAME_COLLISION",
    ],
    [
      "refuses_a_service_named_like_another_services_network_container",
      (r) => (r.services["search-net"] = { image: "ghcr.io/acme/search:1.0.0", port: 8080 }),
      {},
      "services.search-net",
      "E_DOCKER_NAME_COLLISION",
    ],
    [
      "refuses_a_gateway_whose_only_listener_cannot_be_opened",
      (r) =>
        (r.gateway.listeners = r.gateway.listeners.filter(
          (l: { protocol: string }) => l.protocol === "https",
        )),
      {},
      "gateway.listeners",
      "E_DOCKER_NO_LISTENER",
    ],
  ])("%s", (_claim, patch, options, field, code) => {
    const raw = shopRaw();
    patch(raw);
    const result = translated(raw);
    const r = planDocker(result, { staticFiles: staticFilesOf(result), ...options });
    expect(r.ok).toBe(false);
    if (r.ok) return;
    expect(r.errors).toContainEqual(expect.objectContaining({ field, code }));
  });
});

describe("docker plan: stability", () => {
  it("is_deterministic_and_frozen", () => {
    expect(JSON.stringify(planOf())).toBe(JSON.stringify(shop));
    expect(Object.isFrozen(shop)).toBe(true);
    expect(Object.isFrozen(shop.containers[0]!.files)).toBe(true);
  });

  it("matches_the_golden_plan_of_the_shop", () => {
    // File contents are pinned by their hash (the configs themselves are tested above).
    const summary = {
      ...shop,
      configs: Object.fromEntries(Object.entries(shop.configs).map(([k, c]) => [k, c.hash])),
      containers: shop.containers.map((c) => ({
        ...c,
        files: c.files.map((f) => ({
          ...f,
          source:
            f.source.kind === "text"
              ? { kind: "text", sha256: createHash("sha256").update(f.source.content).digest("hex") }
              : f.source,
        })),
      })),
    };
    expectGolden(`${ROOT}test/docker/testdata/shop.plan.json`, `${JSON.stringify(summary, null, 2)}\n`);
  });
});
