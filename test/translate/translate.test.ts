/** Claims about translate(): determinism, order independence, merging, diagnostics, the contract. */
import { readFile } from "node:fs/promises";
import { describe, expect, it } from "vitest";
import { parse } from "yaml";
import { canonicalJson, loadRuntimeConfig } from "../../runtime/contract/index.ts";
import { loadSpecFile } from "../../components/spec/load.ts";
import { parseSpec } from "../../components/spec/parse.ts";
import type { MeshSpec } from "../../components/spec/schema.ts";
import { localPorts, translate } from "../../components/translate/translate.ts";
import { allowedEdges, deniedCalls } from "../../policies/index.ts";

const SHOP = new URL("../../examples/shop/mesh.yaml", import.meta.url).pathname;
const SHOP_TS = new URL("../../examples/shop/mesh.ts", import.meta.url).pathname;

async function shopRaw(): Promise<Record<string, unknown>> {
  return parse(await readFile(SHOP, "utf8")) as Record<string, unknown>;
}

function specOf(raw: unknown): MeshSpec {
  const r = parseSpec(raw);
  if (!r.ok) throw new Error(r.errors.map((e) => `${e.code} ${e.path}: ${e.message}`).join("\n"));
  return r.spec;
}

/** A spec as plain data, edited freely by the reordering below. */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Loose = any;

/** Reverses the order of every mapping's keys and of the order-free lists of a spec. */
function reorder(raw: Record<string, unknown>): Record<string, unknown> {
  const copy: Loose = structuredClone(raw);
  const reverseKeys = (o: Record<string, unknown>) => Object.fromEntries(Object.entries(o).reverse());
  copy.services = reverseKeys(copy.services);
  for (const svc of Object.values(copy.services) as Loose[]) {
    if (svc.calls) svc.calls.reverse();
    for (const rule of svc.allow ?? []) {
      rule.from.reverse();
      rule.methods?.reverse();
      rule.paths?.reverse();
    }
    svc.routes?.reverse();
  }
  copy.gateway.routes.reverse();
  copy.gateway.hosts.reverse();
  return reverseKeys(copy);
}

describe("translate", () => {
  it("yaml_and_typescript_variants_of_the_shop_give_the_same_ir", async () => {
    const [yaml, ts] = await Promise.all([loadSpecFile(SHOP), loadSpecFile(SHOP_TS)]);
    expect(yaml.ok && ts.ok).toBe(true);
    if (!yaml.ok || !ts.ok) return;
    expect(canonicalJson(translate(ts.spec))).toBe(canonicalJson(translate(yaml.spec)));
  });

  it("is_deterministic", async () => {
    const spec = specOf(await shopRaw());
    expect(JSON.stringify(translate(spec))).toBe(JSON.stringify(translate(specOf(await shopRaw()))));
  });

  it("does_not_depend_on_declaration_order_of_services_routes_and_lists", async () => {
    const raw = await shopRaw();
    const a = translate(specOf(raw));
    const b = translate(specOf(reorder(raw)));
    expect(JSON.stringify(b.infra)).toBe(JSON.stringify(a.infra));
    expect(JSON.stringify(b.runtime)).toBe(JSON.stringify(a.runtime));
  });

  it("does_not_mutate_the_spec", async () => {
    const spec = specOf(await shopRaw());
    const before = JSON.stringify(spec);
    translate(spec);
    expect(JSON.stringify(spec)).toBe(before);
  });

  it("every_runtime_config_loads_in_the_data_plane", async () => {
    const { runtime } = translate(specOf(await shopRaw()));
    const gateway = loadRuntimeConfig(JSON.stringify(runtime.gateway), "gateway");
    expect(gateway.routes).toHaveLength(14);
    for (const s of runtime.sidecars)
      expect(loadRuntimeConfig(JSON.stringify(s), "sidecar").name).toBe(s.name);
  });

  it("gives_every_workload_a_spiffe_identity_in_the_namespace", async () => {
    const { infra } = translate(specOf(await shopRaw()));
    expect(infra.identities.map((i) => i.spiffeId)).toContain("spiffe://shop.example/ns/shop/sa/gateway");
    expect(infra.identities.map((i) => i.spiffeId)).toContain("spiffe://shop.example/ns/shop/sa/payments");
    expect(infra.identities).toHaveLength(10);
  });

  it("authorization_rules_name_peers_by_spiffe_id_and_deny_by_default", async () => {
    const { runtime } = translate(specOf(await shopRaw()));
    const payments = runtime.sidecars.find((s) => s.name === "payments")!;
    expect(payments.inbound.authz.default).toBe("deny");
    expect(payments.inbound.authz.rules).toEqual([
      {
        source: "services.payments.allow[0]",
        from: ["spiffe://shop.example/ns/shop/sa/orders"],
        methods: ["POST"],
        paths: ["/payments"],
      },
      {
        source: "services.payments.allow[1]",
        from: ["spiffe://shop.example/ns/shop/sa/orders"],
        methods: ["GET"],
        paths: ["/payments/{id}"],
      },
    ]);
  });

  it("sidecars_get_clusters_only_for_declared_callees", async () => {
    const { runtime } = translate(specOf(await shopRaw()));
    const orders = runtime.sidecars.find((s) => s.name === "orders")!;
    expect(orders.clusters.map((c) => c.name)).toEqual(["inventory", "notifications", "payments", "users"]);
    expect(orders.clusters.every((c) => c.tls.mode === "mtls")).toBe(true);
    expect(runtime.sidecars.find((s) => s.name === "payments")!.clusters).toEqual([]);
  });

  it.each([
    { claim: "relays_a_destination_it_calls_and_that_allows_it", calls: true, allows: true, relayed: true },
    {
      claim: "does_not_relay_a_destination_it_calls_that_does_not_allow_it",
      calls: true,
      allows: false,
      relayed: false,
    },
    {
      claim: "does_not_relay_a_destination_that_allows_it_but_it_does_not_call",
      calls: false,
      allows: true,
      relayed: false,
    },
  ])("external_destinations_$claim", ({ calls, allows, relayed }) => {
    const raw = {
      name: "x",
      trustDomain: "x.example",
      services: {
        a: { image: "r.example/a:1", port: 8080, calls: calls ? ["db"] : [] },
        b: { image: "r.example/b:1", port: 8080, calls: ["db"] },
      },
      external: {
        db: { host: "10.0.0.5", port: 5432, allow: [{ from: allows ? ["a", "b"] : ["b"] }] },
      },
    };
    const { runtime, infra } = translate(specOf(raw));
    const a = runtime.sidecars.find((s) => s.name === "a")!;
    expect(a.outbound.external.map((x) => x.name)).toEqual(relayed ? ["db"] : []);
    // b is the control: it calls and is allowed, whatever a does.
    expect(runtime.sidecars.find((s) => s.name === "b")!.outbound.external).toEqual([
      {
        name: "db",
        host: "10.0.0.5",
        port: 5432,
        localPort: 15192, // localPorts(): a hash of "db" into 15101–15999
        connectTimeoutMs: 1000,
        timeoutMs: 2000,
        maxConnections: null,
        tls: "passthrough",
        ca: null,
        clientCertificate: null,
      },
    ]);
    // No cluster and no mesh edge for a destination outside the mesh; the egress edge says what it is.
    expect(a.clusters).toEqual([]);
    expect(infra.edges.some((e) => e.to === "db")).toBe(false);
    const edge = infra.egress.find((e) => e.from === "a");
    if (!calls && !allows) expect(edge).toBeUndefined();
    else expect(edge).toMatchObject({ external: "db", declared: calls, allowed: allows });
  });

  it("callers_apply_the_callees_per_route_overrides", async () => {
    const { runtime } = translate(specOf(await shopRaw()));
    const toPayments = runtime.sidecars
      .find((s) => s.name === "orders")!
      .outbound.services.find((s) => s.service === "payments")!;
    expect(toPayments.timeoutMs).toBe(4000);
    const charge = toPayments.routes.find((r) => r.name === "charge")!;
    expect(charge.timeoutMs).toBe(3000);
    expect(charge.retry.attempts).toBe(0);
    const status = toPayments.routes.find((r) => r.name === "status")!;
    expect(status.retry).toMatchObject({
      attempts: 2,
      perTryTimeoutMs: 300,
      retryOn: ["503", "504", "connect-failure", "reset"],
    });
  });

  it("routes_inherit_timeout_and_retries_from_their_heaviest_backend", async () => {
    const { runtime } = translate(specOf(await shopRaw()));
    const route = (n: string) => runtime.gateway!.routes.find((r) => r.name === n)!;
    expect(route("list-orders").timeoutMs).toBe(3000); // orders.timeout
    expect(route("list-products").timeoutMs).toBe(2000); // catalog (weight 90): mesh default
    expect(route("get-order").timeoutMs).toBe(3000); // route override
    expect(route("get-order").retry).toMatchObject({ attempts: 1, perTryTimeoutMs: 300 });
    // POST /orders is what orders' own "create" policy governs: the partner route inherits it.
    expect(route("partner-bulk-orders").timeoutMs).toBe(5000);
    expect(route("partner-bulk-orders").retry).toMatchObject({
      attempts: 1,
      retryOn: ["connect-failure", "refused-stream"],
    });
    const orders = runtime.gateway!.clusters.find((c) => c.name === "orders")!;
    expect(orders.retryBudget).toEqual({ ratio: 0.2, minPerSecond: 10 }); // one budget per destination
  });

  it("fleet_rate_limits_use_redis_when_configured_else_local_per_replica", async () => {
    const raw = await shopRaw();
    expect(translate(specOf(raw)).runtime.gateway!.rateLimitStore).toEqual({
      kind: "redis",
      url: "redis://redis.shop.svc.cluster.local:6379",
      failMode: "open",
      timeoutMs: 50,
    });
    delete (raw.gateway as Record<string, unknown>).rateLimitStore;
    expect(translate(specOf(raw)).runtime.gateway!.rateLimitStore).toEqual({ kind: "local", replicas: 2 });
  });

  it.each([
    ["EC", { type: "ec", options: { namedCurve: "P-256" } }],
    ["RSA", { type: "rsa", options: { modulusLength: 2048 } }],
  ] as const)(
    "an_inline_%s_key_pair_reaches_the_runtime_config_without_its_private_members",
    async (_kty, { type, options }) => {
      const { generateKeyPairSync } = await import("node:crypto");
      const { privateKey } = generateKeyPairSync(type as "ec", options as { namedCurve: string });
      const pair = {
        ...privateKey.export({ format: "jwk" }),
        kid: "k1",
        alg: type === "ec" ? "ES256" : "RS256",
      };
      const raw: Loose = await shopRaw();
      delete raw.gateway.jwt.main.jwksUri;
      raw.gateway.jwt.main.jwks = { keys: [pair] };
      raw.gateway.jwt.main.algorithms = [pair.alg];
      const gateway = translate(specOf(raw)).runtime.gateway!;
      const key = gateway.auth.jwt.find((p) => p.name === "main")!.jwks!.keys[0]!;
      for (const member of ["d", "p", "q", "dp", "dq", "qi"]) expect(key).not.toHaveProperty(member);
      const {
        d: _d,
        p: _p,
        q: _q,
        dp: _dp,
        dq: _dq,
        qi: _qi,
        ...publicPart
      } = pair as Record<string, unknown>;
      expect(key).toEqual(publicPart);
      expect(JSON.stringify(gateway)).not.toContain(String(pair.d));
      expect(() => loadRuntimeConfig(JSON.stringify(gateway), "gateway")).not.toThrow();
    },
  );

  it("public_routes_are_marked_public_and_authenticated_routes_list_their_mechanisms", async () => {
    const { runtime } = translate(specOf(await shopRaw()));
    const route = (n: string) => runtime.gateway!.routes.find((r) => r.name === n)!;
    expect(route("search").auth).toMatchObject({ public: true, anyOf: [] });
    expect(route("list-orders").auth).toMatchObject({
      public: false,
      anyOf: [{ kind: "jwt", provider: "main" }],
      scopes: ["orders:read"],
    });
    expect(route("partner-stock").auth).toMatchObject({
      public: false,
      anyOf: [{ kind: "apiKey" }],
      groups: ["partners"],
    });
    for (const r of runtime.gateway!.routes) expect(r.auth.public || r.auth.anyOf.length > 0).toBe(true);
  });

  it("edges_are_declared_calls_and_allow_rules_nothing_else", async () => {
    const { infra } = translate(specOf(await shopRaw()));
    const allowed = allowedEdges(infra).map((e) => `${e.from}->${e.to}`);
    expect(allowed).toContain("gateway->orders");
    expect(allowed).toContain("orders->payments");
    expect(allowed).not.toContain("gateway->payments");
    expect(allowed).toContain("internet->gateway");
    expect(deniedCalls(infra)).toEqual([]);
  });

  it("warns_about_a_declared_call_the_callee_denies", () => {
    const r = translate(
      specOf({
        name: "m",
        trustDomain: "m.example",
        services: {
          a: { image: "r/a:1", port: 80, calls: ["b"] },
          b: { image: "r/b:1", port: 80, allow: [{ from: ["c"] }] },
          c: { image: "r/c:1", port: 80, calls: ["b"] },
        },
      }),
    );
    expect(r.diagnostics).toContainEqual(
      expect.objectContaining({
        code: "W_SPEC_CALL_NOT_ALLOWED",
        path: "services.a.calls[0]",
        severity: "warning",
      }),
    );
    expect(deniedCalls(r.infra).map((e) => `${e.from}->${e.to}`)).toEqual(["a->b"]);
  });

  it("warns_when_a_gateway_route_targets_a_service_that_denies_the_gateway", () => {
    const r = translate(
      specOf({
        name: "m",
        trustDomain: "m.example",
        services: { a: { image: "r/a:1", port: 80 } },
        gateway: {
          hosts: ["a.example"],
          routes: [
            { name: "r", match: { path: "/" }, to: "a", public: true, rateLimit: { requests: 1, per: "1s" } },
          ],
        },
      }),
    );
    expect(r.diagnostics).toContainEqual(
      expect.objectContaining({ code: "W_SPEC_CALL_NOT_ALLOWED", path: "gateway.routes[0].to" }),
    );
  });

  describe("local ports", () => {
    const names = ["catalog", "orders", "payments", "users", "card-processor"];
    it.each<[string, string[]]>([
      ["adding_a_service_moves_no_other_names_port", [...names, "accounts"]],
      ["removing_a_service_moves_no_other_names_port", names.filter((n) => n !== "orders")],
      ["adding_an_external_destination_moves_no_other_names_port", [...names, "bank-payouts"]],
    ])("%s", (_claim, after) => {
      const [before, now] = [localPorts(names), localPorts(after)];
      for (const n of names.filter((x) => after.includes(x))) expect(now.get(n), n).toBe(before.get(n));
    });

    it("gives_colliding_names_the_next_free_port_whatever_their_order", () => {
      // svc-55 and svc-56 share a slot (842); w256's slot is the range's last (898), w616's the first (0).
      const a = localPorts(["svc-56", "svc-55", "w616", "w256"]);
      const b = localPorts(["w256", "w616", "svc-55", "svc-56"]);
      expect([...a].sort()).toEqual([...b].sort());
      expect(Object.fromEntries(a)).toEqual({ "svc-55": 15943, "svc-56": 15944, w256: 15999, w616: 15101 });
      expect(new Set(a.values()).size).toBe(4);
    });

    it("gives_a_pinned_name_its_port_and_moves_only_a_name_hashed_onto_it", () => {
      const hashed = localPorts(names);
      // Pin users to the port the hash gave orders: orders takes the next free one, nobody else moves.
      const pinned = localPorts(names, new Map([["users", hashed.get("orders")!]]));
      expect(pinned.get("users")).toBe(hashed.get("orders"));
      expect(pinned.get("orders")).toBe(hashed.get("orders")! + 1);
      for (const n of ["catalog", "payments", "card-processor"]) expect(pinned.get(n), n).toBe(hashed.get(n));
      expect(new Set(pinned.values()).size).toBe(names.length);
    });

    it("offers_a_pinned_local_port_in_every_callers_sidecar", () => {
      const r = translate(
        specOf({
          name: "m",
          trustDomain: "m.example",
          services: {
            a: { image: "r/a:1", port: 80, calls: ["b", "db"] },
            b: { image: "r/b:1", port: 80, localPort: 15500, allow: [{ from: ["a"] }] },
          },
          external: { db: { host: "10.0.0.5", port: 5432, localPort: 15432, allow: [{ from: ["a"] }] } },
        }),
      );
      const out = r.runtime.sidecars.find((s) => s.name === "a")!.outbound;
      expect(out.services.map((x) => [x.service, x.localPort])).toEqual([["b", 15500]]);
      expect(out.external.map((x) => [x.name, x.localPort])).toEqual([["db", 15432]]);
    });

    it("keeps_every_port_inside_the_range_and_distinct_until_it_is_full", () => {
      const many = Array.from({ length: 950 }, (_, i) => `s${i}`);
      const ports = localPorts(many);
      expect(ports.size).toBe(899);
      expect(new Set(ports.values()).size).toBe(899);
      for (const p of ports.values()) expect(p >= 15101 && p <= 15999).toBe(true);
    });
  });

  describe("routes to external destinations", () => {
    const edge = (external: Loose, route: Loose = { to: { external: "x" } }) =>
      translate(
        specOf({
          name: "m",
          trustDomain: "m.example",
          services: { a: { image: "r/a:1", port: 80, allow: [{ from: ["gateway"] }] } },
          external: { x: { allow: [{ from: ["gateway"] }], ...external } },
          gateway: {
            hosts: ["a.example"],
            routes: [
              {
                name: "a",
                match: { path: "/a" },
                to: "a",
                public: true,
                rateLimit: { requests: 1, per: "1s" },
              },
              ...(route
                ? [
                    {
                      name: "r",
                      match: { path: "/x/**" },
                      public: true,
                      rateLimit: { requests: 1, per: "1s" },
                      ...route,
                    },
                  ]
                : []),
            ],
          },
        }),
      );
    const cluster = (r: ReturnType<typeof translate>) =>
      r.runtime.gateway!.clusters.find((c) => c.name === "x");
    /** The Host the gateway sends (runtime/gateway: rewrite.host, else the cluster's authority). */
    const hostOf = (r: ReturnType<typeof translate>) => {
      const a = r.runtime.gateway!.routes.find((x) => x.name === "r")!.action;
      return a.kind === "forward" ? (a.rewrite?.host ?? cluster(r)?.authority) : undefined;
    };

    it.each<[string, Loose, Loose, string]>([
      [
        "calls_a_tls_destination_on_443_by_its_bare_name",
        { host: "api.partner.example", port: 443, tls: "originate" },
        undefined,
        "api.partner.example",
      ],
      [
        "calls_a_plain_destination_on_80_by_its_bare_name",
        { host: "legacy.example", port: 80 },
        undefined,
        "legacy.example",
      ],
      [
        "adds_any_other_port_to_the_host",
        { host: "legacy.example", port: 8443, tls: "originate" },
        undefined,
        "legacy.example:8443",
      ],
      ["brackets_an_ipv6_address", { host: "2001:db8::7", port: 8080 }, undefined, "[2001:db8::7]:8080"],
      [
        "keeps_the_routes_own_rewrite_host",
        { host: "legacy.example", port: 80 },
        { host: "internal.example" },
        "internal.example",
      ],
    ])("%s", (_claim, external, rewrite, host) => {
      const r = edge(external, { to: { external: "x" }, ...(rewrite ? { rewrite } : {}) });
      expect(hostOf(r)).toBe(host);
    });

    it("gives_the_cluster_the_destinations_address_tls_timeouts_and_one_never_ejected_endpoint", () => {
      const r = edge({
        host: "api.partner.example",
        port: 443,
        tls: "originate",
        connectTimeout: "250ms",
        timeout: "4s",
        maxConnections: 8,
      });
      expect(cluster(r)).toMatchObject({
        address: "api.partner.example",
        port: 443,
        namespace: "",
        connectTimeoutMs: 250,
        circuitBreaker: { maxConnections: 8 },
        healthCheck: null,
        outlierDetection: { maxEjectedPercent: 0 },
        tls: { mode: "tls", serverName: "api.partner.example", ca: null, clientCertificate: null },
      });
      expect(r.runtime.gateway!.routes.find((x) => x.name === "r")!.timeoutMs).toBe(4000);
      expect(r.infra.egress).toEqual([
        expect.objectContaining({ from: "gateway", external: "x", declared: true, allowed: true }),
      ]);
      // No service's sidecar relays to it: the gateway reaches it itself.
      expect(r.runtime.sidecars.flatMap((s) => s.outbound.external)).toEqual([]);
    });

    it("splits_between_a_service_and_an_external_destination_each_with_its_own_host", () => {
      const r = edge(
        {
          host: "legacy.example",
          port: 8443,
          tls: "originate",
          timeout: "5s",
          clientCertificate: { secret: "legacy-client" },
        },
        {
          split: [
            { external: "x", weight: 90 },
            { service: "a", weight: 10 },
          ],
          rewrite: { path: "/v1/x" },
        },
      );
      const route = r.runtime.gateway!.routes.find((x) => x.name === "r")!;
      expect(route.action).toMatchObject({
        kind: "forward",
        backends: [
          { cluster: "a", weight: 10 },
          { cluster: "x", weight: 90 },
        ],
        rewrite: { path: "/v1/x", host: null },
      });
      expect(cluster(r)).toMatchObject({ address: "legacy.example", authority: "legacy.example:8443" });
      // The mesh service keeps the client's Host: its cluster has no authority.
      expect(r.runtime.gateway!.clusters.find((c) => c.name === "a")?.authority).toBeUndefined();
      // The heaviest entry is the destination: the route takes its timeout.
      expect(route.timeoutMs).toBe(5000);
      expect(r.infra.egress).toEqual([
        expect.objectContaining({ from: "gateway", external: "x", declared: true, allowed: true }),
      ]);
      expect(r.infra.workloads.find((w) => w.name === "gateway")).toMatchObject({
        tlsSecrets: ["legacy-client"],
      });
    });

    it.each<[string, Loose, boolean]>([
      ["warns_when_split_entries_have_different_timeouts_and_the_route_sets_none", {}, true],
      ["does_not_warn_when_the_route_sets_its_own_timeout", { timeout: "5s" }, false],
    ])("%s", (_claim, extra, warned) => {
      const r = edge(
        { host: "legacy.example", port: 80, timeout: "5s" },
        {
          split: [
            { external: "x", weight: 90 },
            { service: "a", weight: 10 },
          ],
          ...extra,
        },
      );
      expect(r.diagnostics.filter((d) => d.code === "W_SPEC_SPLIT_TIMEOUTS")).toEqual(
        warned
          ? [
              expect.objectContaining({
                severity: "warning",
                path: "gateway.routes[1].split",
                message: expect.stringContaining("(x 5s, a 2s)"),
              }),
            ]
          : [],
      );
    });

    it("calls_an_external_destination_from_an_aggregate_part_within_its_timeout", () => {
      const r = edge(
        { host: "api.partner.example", port: 443, tls: "originate", timeout: "750ms" },
        {
          aggregate: {
            partner: { external: "x", path: "/v1/summary" },
            mine: { service: "a", path: "/a" },
          },
        },
      );
      const route = r.runtime.gateway!.routes.find((x) => x.name === "r")!;
      expect(route.action.kind === "aggregate" && route.action.parts).toMatchObject([
        { name: "mine", cluster: "a", timeoutMs: route.timeoutMs },
        { name: "partner", cluster: "x", timeoutMs: 750 },
      ]);
      expect(cluster(r)).toMatchObject({ address: "api.partner.example", authority: "api.partner.example" });
      expect(r.infra.egress).toEqual([
        expect.objectContaining({ from: "gateway", external: "x", declared: true, allowed: true }),
      ]);
    });

    it.each<[string, string, string | undefined, number]>([
      ["the_external_timeout_when_shorter_than_the_routes", "750ms", "2s", 750],
      ["the_routes_timeout_when_shorter_than_the_externals", "30s", "1s", 1000],
      ["its_own_timeout_over_both", "30s", "1s", 5000],
    ])("times_an_aggregate_part_to_an_external_with_%s", (claim, external, routeTimeout, expected) => {
      const own = claim === "its_own_timeout_over_both" ? { timeout: "5s" } : {};
      const r = edge(
        { host: "api.partner.example", port: 443, tls: "originate", timeout: external },
        {
          ...(routeTimeout !== undefined ? { timeout: routeTimeout } : {}),
          aggregate: { partner: { external: "x", path: "/v1/summary", ...own } },
        },
      );
      const route = r.runtime.gateway!.routes.find((x) => x.name === "r")!;
      expect(route.action.kind === "aggregate" && route.action.parts[0]!.timeoutMs).toBe(expected);
    });

    it("notes_a_destination_that_allows_the_gateway_without_a_route_to_it", () => {
      const r = edge({ host: "api.partner.example", port: 443 }, null);
      expect(cluster(r)).toBeUndefined();
      expect(r.diagnostics).toContainEqual(
        expect.objectContaining({ code: "W_SPEC_ALLOW_WITHOUT_CALL", path: "external.x.allow[0].from[0]" }),
      );
    });

    it.each<[string, object, boolean, unknown]>([
      ["withholds_identity_and_address_by_default", {}, true, { identity: false, clientAddress: false }],
      [
        "shares_what_the_destination_says",
        { identity: true },
        true,
        { identity: true, clientAddress: false },
      ],
      ["warns_that_share_without_a_route_has_no_effect", { clientAddress: true }, false, undefined],
    ])("%s", (_claim, share, routed, expected) => {
      const r = edge({ host: "api.partner.example", port: 443, share }, routed ? undefined : null);
      expect(cluster(r)?.share).toEqual(expected);
      const warned = r.diagnostics.filter((d) => d.code === "W_SPEC_SHARE_WITHOUT_ROUTE");
      expect(warned.map((d) => [d.severity, d.path])).toEqual(
        routed ? [] : [["warning", "external.x.share"]],
      );
    });
  });

  it("warns_about_public_routes_without_rate_limit_and_unsafe_retries", () => {
    const r = translate(
      specOf({
        name: "m",
        trustDomain: "m.example",
        services: { a: { image: "r/a:1", port: 80, allow: [{ from: ["gateway"] }] } },
        gateway: {
          hosts: ["a.example"],
          routes: [
            { name: "open", match: { path: "/open" }, to: "a", public: true },
            {
              name: "pay",
              match: { path: "/pay", methods: ["POST"] },
              to: "a",
              public: true,
              rateLimit: { requests: 1, per: "1s" },
              retries: { attempts: 2, on: ["5xx"] },
            },
            {
              name: "safe",
              match: { path: "/safe", methods: ["POST"] },
              to: "a",
              public: true,
              rateLimit: { requests: 1, per: "1s" },
              retries: { attempts: 2, on: ["connect-failure"] },
            },
          ],
        },
      }),
    );
    const codes = r.diagnostics.map((d) => `${d.code} ${d.path}`);
    expect(codes).toContain("W_SPEC_PUBLIC_ROUTE_UNLIMITED gateway.routes[0]");
    expect(codes).toContain("W_SPEC_RETRY_UNSAFE_METHOD gateway.routes[1].retries");
    expect(codes).not.toContain("W_SPEC_RETRY_UNSAFE_METHOD gateway.routes[2].retries");
    // 1 request of burst over the 2 default replicas: each replica still allows 1.
    expect(codes).toContain("W_SPEC_RATE_LIMIT_REPLICA_FLOOR gateway.routes[1].rateLimit");
  });

  // docs/auth.md: scopes and claims constrain token principals only, consumers and groups API-key principals
  // only — a route accepting another mechanism admits its callers without them, which the spec accepted
  // silently (`{ jwt, apiKey, scopes }` admitted an API key of any consumer).
  it.each([
    [
      "warns_that_scopes_leave_api_keys_open",
      { jwt: "corp", apiKey: true, scopes: ["orders:write"] },
      ["scopes apply to tokens only: API keys are admitted without them"],
    ],
    [
      "warns_that_claims_leave_client_certificates_open",
      { jwt: "corp", clientCert: "partner-ca", claims: { tenant: "a" } },
      ["claims apply to tokens only: client certificates are admitted without them"],
    ],
    [
      "warns_that_consumers_leave_tokens_open",
      { jwt: "corp", apiKey: true, consumers: ["initech"] },
      ["consumers apply to API keys only: tokens are admitted without them"],
    ],
    [
      "warns_that_groups_leave_oidc_sessions_open",
      { oidc: "sso", apiKey: true, groups: ["partners"] },
      ["groups apply to API keys only: tokens are admitted without them"],
    ],
    [
      "warns_about_both_sides_at_once",
      { jwt: "corp", apiKey: true, scopes: ["a"], groups: ["partners"] },
      [
        "scopes apply to tokens only: API keys are admitted without them",
        "groups apply to API keys only: tokens are admitted without them",
      ],
    ],
    [
      "is_silent_when_each_accepted_mechanism_is_constrained_alone",
      { jwt: "corp", scopes: ["a"], claims: { tenant: "a" } },
      [],
    ],
    ["is_silent_for_api_keys_with_groups_alone", { apiKey: true, groups: ["partners"] }, []],
    ["is_silent_for_two_mechanisms_without_requirements", { jwt: "corp", apiKey: true }, []],
  ])("%s", async (_claim, auth, expected) => {
    const raw = parse(
      await readFile(new URL("./testdata/gateway-auth.in.yaml", import.meta.url), "utf8"),
    ) as {
      gateway: { routes: unknown[] };
    };
    raw.gateway.routes = [{ name: "r", match: { path: "/r" }, to: "api", auth }];
    const warned = translate(specOf(raw)).diagnostics.filter(
      (d) => d.code === "W_SPEC_AUTH_MECHANISM_UNCONSTRAINED",
    );
    expect(warned.map((d) => [d.severity, d.path])).toEqual(
      expected.length ? [["warning", "gateway.routes[0].auth"]] : [],
    );
    expect(warned.map((d) => d.message)).toEqual(
      expected.length ? [`route "r": ${expected.join("; ")}`] : [],
    );
  });

  // An SLO's error budget is read from the bundled Prometheus: a window past the retention read less than
  // the window (the old defaults — 15d retention, 30d windows — read half, and forgot older outages).
  it.each([
    [
      "warns_about_a_window_longer_than_the_retention",
      { retention: "15d" },
      [{ window: "30d" }],
      ["observability.slos[0].window"],
    ],
    ["is_silent_with_the_default_retention_and_window", {}, [{}], []],
    ["is_silent_when_the_window_equals_the_retention", { retention: "28d" }, [{ window: "28d" }], []],
    [
      "names_only_the_slos_past_the_retention",
      { retention: "7d" },
      [{ window: "7d" }, { window: "14d" }],
      ["observability.slos[1].window"],
    ],
    ["is_silent_without_a_metrics_backend", { retention: "1d", backend: "none" }, [{ window: "30d" }], []],
  ])("%s", (_claim, metrics, windows, expected) => {
    const r = translate(
      specOf({
        name: "m",
        trustDomain: "m.example",
        services: { a: { image: "r/a:1", port: 80, allow: [{ from: ["gateway"] }] } },
        gateway: {
          hosts: ["a.example"],
          routes: [
            {
              name: "r",
              match: { path: "/r" },
              to: "a",
              public: true,
              rateLimit: { requests: 1, per: "1s" },
            },
          ],
        },
        observability: {
          metrics,
          slos: windows.map((w) => ({ route: "r", availability: 99.9, ...w })),
        },
      }),
    );
    const warned = r.diagnostics.filter((d) => d.code === "W_SPEC_SLO_WINDOW_BEYOND_RETENTION");
    expect(warned.map((d) => [d.severity, d.path])).toEqual(expected.map((p) => ["warning", p]));
  });

  it("the_shop_example_has_no_warnings", async () => {
    const { diagnostics } = translate(specOf(await shopRaw()));
    expect(diagnostics.filter((d) => d.severity === "warning")).toEqual([]);
  });
});
