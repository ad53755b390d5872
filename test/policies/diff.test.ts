/**
 * The semantic diff: who can now reach what. The done-when — opening payments to a new caller is
 * reported as exactly that edge widened — and the other kinds of change, each as a claim.
 */
import { createHash } from "node:crypto";
import { describe, expect, it } from "vitest";
import { STATIC_CA_PEM } from "../support/certs.ts";
import {
  renderDiffMarkdown,
  semanticDiff,
  type AccessChange,
  type SemanticDiff,
  type SettingChange,
} from "../../policies/diff.ts";
import { HTTP_METHODS } from "../../runtime/contract/schema.ts";
import { explainRequest } from "../../policies/assertions.ts";
import { staticReachability, type ReachabilityFn } from "../../policies/reachability.ts";
import { runGuardrails } from "../../policies/run.ts";
import { inputOf, miniRaw, routeIndex, shopRaw } from "./support.ts";

type Raw = ReturnType<typeof shopRaw>;
const BASE = inputOf(shopRaw());

function diffAfter(mutate: (raw: Raw) => void, reachability?: ReachabilityFn): SemanticDiff {
  const raw = shopRaw();
  mutate(raw);
  return semanticDiff(BASE, inputOf(raw), reachability ? { reachability } : {});
}
const route = (raw: Raw, name: string) => raw.gateway.routes[routeIndex(raw, name)];

describe("semantic diff", () => {
  it("reports_opening_payments_to_a_new_caller_as_exactly_that_edge_widened", () => {
    const d = diffAfter((r) => {
      r.services.payments.allow.push({ from: ["users"], methods: ["POST"], paths: ["/payments"] });
      r.services.users.calls = ["payments"];
    });
    expect(d.widened).toEqual([
      {
        from: "users",
        to: ["payments"],
        via: null,
        principal: null,
        grants: "POST /payments",
        reason: "new edge (services.payments.allow[2])",
      },
    ]);
    expect(d.narrowed).toEqual([]);
    expect(d.edges.added).toEqual([{ from: "users", to: "payments" }]);
    expect(d.edges.callsAdded).toEqual([{ from: "users", to: "payments" }]);
    expect(d.edges.removed).toEqual([]);
    expect(d.routes).toEqual({ added: [], removed: [] });
  });

  it("reports_an_allow_rule_for_a_peer_that_never_calls_as_widened_and_as_a_new_violation", () => {
    const d = diffAfter((r) =>
      r.services.payments.allow.push({ from: ["users"], methods: ["POST"], paths: ["/payments"] }),
    );
    expect(d.widened.map((w) => `${w.from}->${w.to.join()}`)).toEqual(["users->payments"]);
    expect(d.violations.added.map((v) => v.code)).toContain("E_POLICY_ALLOW_WITHOUT_CALL");
  });

  it("reports_a_wider_path_for_an_existing_peer", () => {
    const d = diffAfter((r) => (r.services.payments.allow[0].paths = ["/payments/**"]));
    expect(d.widened).toEqual([
      expect.objectContaining({
        from: "orders",
        to: ["payments"],
        grants: "POST /payments/**",
        reason: expect.stringMatching(/^allow rules widened/),
      }),
    ]);
    expect(d.edges.added).toEqual([]);
  });

  it("reports_a_removed_rule_as_narrowed_and_its_edge_as_removed", () => {
    const d = diffAfter((r) => (r.services.users.allow = [r.services.users.allow[0]]));
    expect(d.narrowed).toEqual([
      expect.objectContaining({
        from: "orders",
        to: ["users"],
        grants: "GET /users/*",
        reason: "edge removed",
      }),
    ]);
    expect(d.edges.removed).toEqual([{ from: "orders", to: "users" }]);
    expect(d.widened).toEqual([]);
  });

  it("reports_a_route_made_public_as_widened_for_anyone", () => {
    const d = diffAfter((r) => {
      const me = route(r, "me");
      delete me.auth;
      me.public = true;
      me.rateLimit = { requests: 60, per: "1m", key: "ip" };
    });
    expect(d.widened).toEqual([
      {
        from: "internet",
        to: ["users"],
        via: "me",
        principal: "anyone",
        grants: "GET /api/me",
        reason: "auth: jwt main → anyone",
      },
    ]);
    expect(d.settings).toContainEqual({
      scope: "route",
      name: "me",
      field: "auth",
      before: "jwt main",
      after: "anyone",
    });
    expect(d.settings).toContainEqual(
      expect.objectContaining({ name: "me", field: "rateLimit", before: "none" }),
    );
  });

  it("reports_an_added_mechanism_as_widened_and_an_added_scope_as_narrowed", () => {
    const wider = diffAfter((r) => (route(r, "me").auth = { jwt: "main", apiKey: true }));
    expect(wider.widened.map((w) => w.via)).toEqual(["me"]);
    const narrower = diffAfter((r) => (route(r, "me").auth = { jwt: "main", scopes: ["profile:read"] }));
    expect(narrower.widened).toEqual([]);
    expect(narrower.narrowed).toEqual([
      expect.objectContaining({ via: "me", reason: "auth: jwt main → jwt main with scopes profile:read" }),
    ]);
  });

  it("reports_a_new_route_as_widened_and_a_renamed_route_as_no_access_change", () => {
    const added = diffAfter((r) =>
      r.gateway.routes.push({
        name: "payment-status",
        match: { path: "/api/payments/{id}", methods: ["GET"] },
        to: "payments",
        rewrite: { path: "/payments/{id}" },
        auth: { jwt: "main", scopes: ["payments:read"] },
      }),
    );
    expect(added.routes.added).toEqual(["payment-status"]);
    expect(added.widened).toEqual([
      expect.objectContaining({
        from: "internet",
        to: ["payments"],
        via: "payment-status",
        reason: "route added",
      }),
    ]);
    const renamed = diffAfter((r) => (route(r, "me").name = "profile"));
    expect(renamed.routes).toEqual({ added: ["profile"], removed: ["me"] });
    expect(renamed.widened).toEqual([]);
    expect(renamed.narrowed).toEqual([]);
  });

  it("reports_a_route_sent_to_one_more_service", () => {
    const d = diffAfter((r) => (route(r, "search").mirror = { service: "catalog-v2", percent: 5 }));
    expect(d.widened).toEqual([
      expect.objectContaining({ via: "search", to: ["catalog-v2"], reason: "now also reaches catalog-v2" }),
    ]);
  });

  describe("access that moves without the route's own match or auth changing", () => {
    /** A public route to inventory, and an authenticated one more specific than it, on both sides. */
    const stock = (r: Raw) =>
      r.gateway.routes.push(
        {
          name: "stock",
          match: { path: "/api/stock/{sku}", methods: ["GET"] },
          to: "inventory",
          rewrite: { path: "/inventory/{sku}" },
          public: true,
          rateLimit: { requests: 60, per: "1m", key: "ip" },
        },
        {
          name: "stock-reserved",
          match: { path: "/api/stock/reserved", methods: ["GET"] },
          to: "inventory",
          rewrite: { path: "/inventory/reserved" },
          auth: { jwt: "main", scopes: ["stock:admin"] },
        },
      );
    const between = (head: (r: Raw) => void) => {
      const [rb, rh] = [shopRaw(), shopRaw()];
      stock(rb);
      stock(rh);
      head(rh);
      return semanticDiff(inputOf(rb), inputOf(rh));
    };
    it.each([
      {
        change: "a public route rewritten to another path of the same service",
        head: (r: Raw) => (route(r, "stock").rewrite = { path: "/inventory/admin/{sku}" }),
        widened: {
          via: "stock",
          principal: "anyone",
          reason: "now sends GET /inventory/admin/{sku} to inventory",
        },
      },
      {
        change: "an authenticated route removed under a public one that matches its paths",
        head: (r: Raw) => r.gateway.routes.splice(routeIndex(r, "stock-reserved"), 1),
        widened: {
          via: "stock",
          principal: "anyone",
          grants: "GET /api/stock/reserved",
          reason:
            "takes over requests of stock-reserved (route removed): jwt main with scopes stock:admin → anyone",
        },
      },
      {
        change: "an authenticated route moved off a path a public one matches",
        head: (r: Raw) => (route(r, "stock-reserved").match.path = "/api/stock-reserved"),
        widened: {
          via: "stock",
          principal: "anyone",
          grants: "GET /api/stock/reserved",
          reason:
            "takes over requests of stock-reserved (match narrowed): jwt main with scopes stock:admin → anyone",
        },
      },
      {
        change: "an authenticated route moved to another host",
        head: (r: Raw) => {
          r.gateway.hosts.push("admin.shop.example");
          route(r, "stock-reserved").match.hosts = ["admin.shop.example"];
        },
        widened: { via: "stock", principal: "anyone", grants: "GET /api/stock/reserved" },
      },
    ])("reports $change as widened", ({ head, widened }) => {
      const d = between(head);
      expect(d.widened).toContainEqual(expect.objectContaining({ from: "internet", ...widened }));
    });

    it("reports_no_hand_over_when_the_authenticated_route_is_renamed_or_its_auth_changes", () => {
      expect(between((r) => (route(r, "stock-reserved").name = "reserved-stock")).widened).toEqual([]);
      const scoped = between((r) => (route(r, "stock-reserved").auth.scopes = ["stock:admin", "stock:read"]));
      expect(scoped.widened).toEqual([]);
    });

    it("reports_mtls_made_permissive_as_widened_for_plaintext_callers_of_every_service", () => {
      const d = diffAfter((r) => (r.mesh.mtls = "permissive"));
      expect(d.widened).toContainEqual({
        from: "plaintext callers",
        to: ["payments"],
        via: null,
        principal: null,
        grants: "POST /payments; GET /payments/{id}",
        reason:
          "mtls strict → permissive: requests without a peer identity are admitted by the rules' methods and paths",
      });
      const back = semanticDiff(
        inputOf({ ...shopRaw(), mesh: { ...shopRaw().mesh, mtls: "permissive" } }),
        BASE,
      );
      expect(back.widened).toEqual([]);
      expect(back.narrowed.map((n) => n.from)).toContain("plaintext callers");
    });
  });

  it("reports_retry_timeout_and_rate_limit_changes_per_route_and_service", () => {
    const d = diffAfter((r) => {
      route(r, "get-order").retries.attempts = 1;
      route(r, "list-orders").rateLimit.requests = 200;
      r.services.payments.timeout = "5s";
    });
    const fields = d.settings.map((s) => `${s.scope}:${s.name}:${s.field}`).sort();
    // payments' route policy "status" sets no timeout of its own: it follows the service's.
    expect(fields).toEqual([
      "route:get-order:retry",
      "route:list-orders:rateLimit",
      "service:payments (route status):timeout",
      "service:payments:timeout",
    ]);
    expect(d.settings).toContainEqual({
      scope: "service",
      name: "payments",
      field: "timeout",
      before: "4000ms",
      after: "5000ms",
    });
    expect(d.widened).toEqual([]);
  });

  it.each<{ claim: string; mutate: (r: Raw) => void; name: string; before: string; after: string }>([
    {
      claim: "reports_one_more_trusted_hop_as_a_client_address_change",
      mutate: (r) => (r.gateway.clientIp.trustedHops = 2),
      name: "clientIp",
      before: "x-forwarded-for entry 1 from the right (1 trusted hop)",
      after: "x-forwarded-for entry 2 from the right (2 trusted hops)",
    },
    {
      claim: "reports_trusted_proxies_instead_of_hops_as_a_client_address_change",
      mutate: (r) => (r.gateway.clientIp = { trustedProxies: ["10.0.0.0/16"] }),
      name: "clientIp",
      before: "x-forwarded-for entry 1 from the right (1 trusted hop)",
      after: "the rightmost x-forwarded-for entry outside trusted proxies 10.0.0.0/16",
    },
    {
      claim: "reports_a_listener_taking_proxy_headers_from_anyone_as_a_client_address_change",
      mutate: (r) => (r.gateway.listeners[0].proxyProtocol = true),
      name: "http",
      before: "the connection",
      after: "a PROXY header from any source",
    },
  ])("$claim", ({ mutate, name, before, after }) => {
    const d = diffAfter(mutate);
    const changes = d.settings.filter((s) => s.field === "clientAddress");
    expect(changes.map((s) => [s.scope, s.name, s.before, s.after])).toEqual([
      ["gateway", name, before, after],
    ]);
    // The routes that believe the address: IP ranges and per-IP limits of the shop.
    expect(changes[0]!.note).toMatch(/^read by routes .*\(clientIps\).*\(ip rate limit\)/);
    const raw = shopRaw();
    mutate(raw);
    const md = renderDiffMarkdown(d, {
      base: staticReachability(BASE),
      head: staticReachability(inputOf(raw)),
    });
    expect(md).toContain(`| gateway \`${name}\` | clientAddress | ${before} | ${after} |`);
    expect(md).toContain(`- clientAddress: ${changes[0]!.note}`);
  });

  it.each<{
    claim: string;
    mutate: (r: Raw) => void;
    name: string;
    before: string;
    after: string;
    note?: string;
  }>([
    {
      claim: "reports_a_tls_listener_turned_to_plaintext_as_a_weakened_transport",
      mutate: (r) => {
        const l = r.gateway.listeners.find((x: { name: string }) => x.name === "https");
        l.protocol = "http";
        delete l.tls;
      },
      name: "https",
      before: "https on 8443 (TLS ≥ 1.2; HTTP/1.1 and HTTP/2)",
      after: "http on 8443 (plaintext; HTTP/1.1 and h2c)",
      note: "weakened: a listener that served TLS now serves plaintext",
    },
    {
      claim: "reports_a_raised_tls_minimum_without_a_warning",
      mutate: (r) =>
        (r.gateway.listeners.find((x: { name: string }) => x.name === "https").tls.minVersion = "TLSv1.3"),
      name: "https",
      before: "https on 8443 (TLS ≥ 1.2; HTTP/1.1 and HTTP/2)",
      after: "https on 8443 (TLS ≥ 1.3; HTTP/1.1 and HTTP/2)",
    },
    {
      claim: "reports_a_new_listener_with_its_port_and_transport",
      mutate: (r) =>
        r.gateway.listeners.push({ name: "internal", port: 9090, protocol: "http", http2: false }),
      name: "internal",
      before: "no listener",
      after: "http on 9090 (plaintext; HTTP/1.1)",
    },
    {
      claim: "reports_a_moved_listener",
      mutate: (r) => (r.gateway.listeners.find((x: { name: string }) => x.name === "http").port = 8081),
      name: "http",
      before: "http on 8080 (plaintext; HTTP/1.1 and h2c)",
      after: "http on 8081 (plaintext; HTTP/1.1 and h2c)",
    },
  ])("$claim", ({ mutate, name, before, after, note }) => {
    const d = diffAfter(mutate);
    const changes = d.settings.filter((s) => s.field === "transport");
    expect(changes).toEqual([
      { scope: "gateway", name, field: "transport", before, after, ...(note ? { note } : {}) },
    ]);
    expect(d.widened).toEqual([]);
    const raw = shopRaw();
    mutate(raw);
    const md = renderDiffMarkdown(d, {
      base: staticReachability(BASE),
      head: staticReachability(inputOf(raw)),
    });
    expect(md).toContain(`| gateway \`${name}\` | transport | ${before} | ${after} |`);
    if (note) expect(md).toContain(`- transport: ${note}`);
    else expect(md).not.toContain("- transport:");
  });

  it.each<{ claim: string; mutate: (r: Raw) => void; before: string; after: string; note?: string }>([
    {
      claim: "reports_an_external_no_longer_given_tls_by_the_sidecar_as_a_weakened_transport",
      mutate: (r) => delete r.external["card-processor"].tls,
      before: "TLS originated by the sidecar (verified against the system's roots)",
      after: "passthrough (the app's own TLS; plain HTTP forwarded as sent)",
      note: "weakened: plain HTTP to a destination the sidecar encrypted now leaves unencrypted",
    },
    {
      claim: "reports_a_private_ca_for_an_external_without_a_warning",
      mutate: (r) => (r.external["card-processor"].ca = STATIC_CA_PEM),
      before: "TLS originated by the sidecar (verified against the system's roots)",
      after: `TLS originated by the sidecar (verified against ca sha256:${createHash("sha256").update(STATIC_CA_PEM).digest("hex").slice(0, 12)})`,
    },
    {
      claim: "reports_a_client_certificate_the_sidecar_now_presents",
      mutate: (r) => (r.external["card-processor"].clientCertificate = { secret: "stripe-client" }),
      before: "TLS originated by the sidecar (verified against the system's roots)",
      after:
        "mutual TLS originated by the sidecar (verified against the system's roots; presenting the client certificate of Secret stripe-client)",
    },
    {
      claim: "reports_a_client_certificate_moved_to_other_files",
      mutate: (r) =>
        (r.external["card-processor"].clientCertificate = {
          certFile: "/etc/stripe/client.crt",
          keyFile: "/etc/stripe/client.key",
        }),
      before: "TLS originated by the sidecar (verified against the system's roots)",
      after:
        "mutual TLS originated by the sidecar (verified against the system's roots; presenting the client certificate /etc/stripe/client.crt)",
    },
  ])("$claim", ({ mutate, before, after, note }) => {
    // The shop, whose payments calls card-processor, with the sidecar originating TLS to it.
    const withExternal = () => {
      const r = shopRaw();
      r.external["card-processor"].tls = "originate";
      return r;
    };
    const base = inputOf(withExternal());
    const raw = withExternal();
    mutate(raw);
    const d = semanticDiff(base, inputOf(raw));
    expect(d.settings).toEqual([
      {
        scope: "external",
        name: "card-processor",
        field: "transport",
        before,
        after,
        ...(note ? { note } : {}),
      },
    ]);
    expect([d.widened, d.narrowed, d.externals.changed]).toEqual([[], [], []]);
    const md = renderDiffMarkdown(d, {
      base: staticReachability(base),
      head: staticReachability(inputOf(raw)),
    });
    expect(md).toContain(`| external \`card-processor\` | transport | ${before} | ${after} |`);
    if (note) expect(md).toContain(`- transport: ${note}`);
    else expect(md).not.toContain("- transport:");
  });

  it("reports_violations_that_appear_and_disappear", () => {
    const d = diffAfter((r) => {
      r.mesh.mtls = "permissive";
      route(r, "get-order").retries.attempts = 1;
    });
    expect(d.violations.added.map((v) => v.code)).toEqual(["E_POLICY_MTLS_PERMISSIVE"]);
    expect(d.violations.resolved.map((v) => `${v.code} ${v.path}`)).toContain(
      "E_POLICY_RETRY_AMPLIFICATION gateway.routes[5].retries",
    );
  });

  it("reports_nothing_for_the_same_spec", () => {
    const d = semanticDiff(BASE, inputOf(shopRaw()));
    expect([d.widened, d.narrowed, d.settings, d.edges.added, d.violations.added]).toEqual([
      [],
      [],
      [],
      [],
      [],
    ]);
    expect(
      renderDiffMarkdown(d, { base: staticReachability(BASE), head: staticReachability(BASE) }),
    ).toContain("No change in who can reach what");
  });

  it("gives_the_same_diff_when_the_guardrail_results_are_reused", () => {
    const raw = shopRaw();
    raw.mesh.mtls = "permissive";
    const head = inputOf(raw);
    const checks = runGuardrails(head);
    expect(semanticDiff(BASE, head, { checks: { head: checks } })).toEqual(semanticDiff(BASE, head));
  });

  it("computes_reachability_through_the_function_it_is_given", () => {
    // A later round passes a relation refined with decide(); here one that hides the gateway's access to users.
    const refined: ReachabilityFn = (input) => {
      const r = staticReachability(input);
      return input === BASE
        ? r
        : { ...r, mesh: r.mesh.filter((m) => !(m.from === "gateway" && m.to === "users")) };
    };
    const d = diffAfter(() => {}, refined);
    expect(d.narrowed).toEqual([
      expect.objectContaining({ from: "gateway", to: ["users"], reason: "edge removed" }),
    ]);
  });

  it("highlights_added_edges_in_the_mermaid_graph", () => {
    const raw = shopRaw();
    raw.services.payments.allow.push({ from: ["users"], methods: ["POST"], paths: ["/payments"] });
    raw.services.users.calls = ["payments"];
    const head = inputOf(raw);
    const md = renderDiffMarkdown(semanticDiff(BASE, head), {
      base: staticReachability(BASE),
      head: staticReachability(head),
    });
    const mermaid = md.slice(md.indexOf("```mermaid"), md.indexOf("```", md.indexOf("```mermaid") + 3));
    const edges = mermaid.split("\n").filter((l) => /n_\S+ (-->|==>|-\.->)/.test(l));
    const i = edges.findIndex((l) => l.includes("n_users ==>|added| n_payments"));
    expect(i).toBeGreaterThanOrEqual(0);
    expect(mermaid).toContain(`linkStyle ${i} stroke:#d62728,stroke-width:3px`);
    expect(md).toContain(
      "| `users` | `payments` | POST /payments | mesh | new edge (services.payments.allow[2]) |",
    );
  });
});

describe("semantic diff of the widenings a reviewer must see", () => {
  const permissive = (r: Raw) => (r.mesh.mtls = "permissive");
  /** A public route that wins products-chaos' requests: its match with one more header condition. */
  const publicChaos = (r: Raw) => {
    const { auth: _auth, ...chaos } = structuredClone(route(r, "products-chaos"));
    chaos.match.headers["x-debug"] = "1";
    r.gateway.routes.push({
      ...chaos,
      name: "products-chaos-debug",
      public: true,
      rateLimit: { requests: 60, per: "1m", key: "ip" },
    });
  };
  const MAIN =
    "issuer https://id.shop.example/, audiences shop-api, ES256, keys from https://id.shop.example/.well-known/jwks.json";
  it.each<{
    change: string;
    base?: (r: Raw) => void;
    head: (r: Raw) => void;
    widened?: Partial<AccessChange>;
    setting?: Partial<SettingChange>;
  }>([
    {
      change: "an allow rule gaining a method",
      head: (r) => r.services.payments.allow[0].methods.push("PUT"),
      widened: { from: "orders", to: ["payments"], grants: "PUT /payments" },
    },
    {
      change: "an allow rule gaining a path pattern",
      head: (r) => r.services.inventory.allow[1].paths.push("/inventory/admin/**"),
      widened: { from: "gateway", to: ["inventory"], grants: "GET /inventory/admin/**" },
    },
    {
      change: "a path pattern made broader (/users/* → /users/**)",
      head: (r) => (r.services.users.allow[1].paths = ["/users/**"]),
      widened: { from: "orders", to: ["users"], grants: "GET /users/**" },
    },
    {
      change: "the mesh turned from strict to permissive mTLS",
      head: permissive,
      widened: { from: "plaintext callers", to: ["users"], grants: "GET /me, /users/*" },
    },
    {
      change: "an allow rule added for a peer on a permissive mesh (plaintext callers get it too)",
      base: permissive,
      head: (r) => {
        permissive(r);
        r.services.users.allow.push({ from: ["orders"], methods: ["DELETE"], paths: ["/users/*"] });
      },
      widened: {
        from: "plaintext callers",
        to: ["users"],
        grants: "DELETE /users/*",
        reason: "mtls permissive: allow rules widened for requests without a peer identity",
      },
    },
    {
      change: "a route losing its scopes",
      head: (r) => delete route(r, "get-order").auth.scopes,
      widened: {
        via: "get-order",
        principal: "jwt main",
        reason: "auth: jwt main with scopes orders:read → jwt main",
      },
    },
    {
      change: "a route's methods list removed (any method)",
      head: (r) => delete route(r, "me").match.methods,
      widened: { via: "me", principal: "jwt main", reason: expect.stringMatching(/^match widened/) },
    },
    {
      change: "a route's hosts removed (served on every host)",
      head: (r) => delete route(r, "partner-bulk-orders").match.hosts,
      widened: { via: "partner-bulk-orders", reason: "hosts: api.shop.example → every host" },
    },
    {
      change: "a mirror sending traffic to another service",
      head: (r) => (route(r, "me").mirror = { service: "catalog-v2", percent: 5 }),
      widened: { via: "me", to: ["catalog-v2"], reason: "now also reaches catalog-v2" },
    },
    {
      change: "a new public route winning an authenticated route's requests by router precedence",
      head: publicChaos,
      widened: {
        from: "internet",
        to: ["catalog-v2"],
        via: "products-chaos-debug",
        principal: "anyone",
        grants: "GET /api/products",
        reason:
          "takes over requests of products-chaos (route added, router precedence): jwt main with scopes chaos:inject → anyone",
      },
    },
    {
      change: "an external destination's allow rule naming a caller that calls it",
      base: (r) => (r.services.users.calls = ["card-processor"]),
      head: (r) => {
        r.services.users.calls = ["card-processor"];
        r.external["card-processor"].allow.push({ from: ["users"] });
      },
      widened: { from: "users", to: ["card-processor"], egress: true },
    },
    {
      change: "a JWT provider trusting another issuer (every route naming it admits its tokens)",
      head: (r) => (r.gateway.jwt.main.issuer = "https://id.partner.example/"),
      setting: {
        scope: "gateway",
        name: "jwt main",
        field: "auth",
        before: MAIN,
        after: MAIN.replace("https://id.shop.example/,", "https://id.partner.example/,"),
        note: "accepted by routes create-order, dashboard, get-order, list-orders, me, products-chaos, track-shipment",
      },
    },
    {
      change: "an authenticated route switched to a JWT provider of another issuer",
      head: (r) => {
        r.gateway.jwt.partner = { ...r.gateway.jwt.main, issuer: "https://id.partner.example/" };
        route(r, "me").auth = { jwt: "partner" };
      },
      widened: { via: "me", principal: "jwt partner", reason: "auth: jwt main → jwt partner" },
    },
    {
      change: "an API-key consumer added to a group routes require",
      head: (r) => r.gateway.apiKeys.consumers["acme-retail"].groups.push("bulk"),
      setting: {
        scope: "gateway",
        name: "apiKey consumer acme-retail",
        field: "auth",
        before: expect.stringMatching(/^groups partners; 1 key #[0-9a-f]{12}$/),
        after: expect.stringMatching(/^groups bulk, partners; 1 key #[0-9a-f]{12}$/),
        note: "accepted by routes partner-bulk-orders, partner-stock",
      },
    },
    {
      // authorize(): a listed consumer OR a member of a listed group — a consumer beside the groups widens.
      change: "a consumer listed beside a route's groups",
      head: (r) => (route(r, "partner-bulk-orders").auth.consumers = ["acme-retail"]),
      widened: { via: "partner-bulk-orders" },
    },
    {
      // An empty method list admits PROPFIND, PURGE, …: not the same as the nine method names listed.
      change: "an allow rule's list of all nine methods removed (any method)",
      base: (r) => (r.services.payments.allow[1].methods = [...HTTP_METHODS]),
      head: (r) => delete r.services.payments.allow[1].methods,
      widened: { from: "orders", to: ["payments"] },
    },
    {
      change: "an API-key consumer given a second key",
      head: (r) => r.gateway.apiKeys.consumers["acme-retail"].keyHashes.push(`sha256:${"ab".repeat(32)}`),
      setting: { name: "apiKey consumer acme-retail", after: expect.stringMatching(/; 2 keys #/) },
    },
    {
      change: "a public static route serving a parent of its directory",
      head: (r) => (route(r, "app").static.dir = "examples/shop"),
      setting: {
        scope: "route",
        name: "app",
        field: "backends",
        before: expect.stringMatching(
          /^static files under \S*examples\/shop\/web \(SPA fallback \/index.html\)$/,
        ),
        after: expect.stringMatching(/^static files under \S*examples\/shop \(SPA fallback \/index.html\)$/),
        note: "widened: the route serves files outside the directory it served",
      },
    },
    {
      change: "a public route's rate limit removed",
      head: (r) => delete route(r, "search").rateLimit,
      setting: { scope: "route", name: "search", field: "rateLimit", after: "none" },
    },
  ])("reports $change", ({ base, head, widened, setting }) => {
    const [rb, rh] = [shopRaw(), shopRaw()];
    base?.(rb);
    head(rh);
    const d = semanticDiff(inputOf(rb), inputOf(rh));
    if (widened) expect(d.widened).toContainEqual(expect.objectContaining(widened));
    if (setting) expect(d.settings).toContainEqual(expect.objectContaining(setting));
  });

  // The router tries exact hosts before wildcards: a public route narrowed from every host to one exact
  // name wins that name's requests from an authenticated route on a wildcard — a narrowing of its own
  // match, and a widening for the requests it takes.
  it("reports_a_route_narrowed_to_an_exact_host_taking_a_wildcard_routes_requests", () => {
    const spec = (pubHosts?: string[]) => {
      const raw = miniRaw();
      raw.gateway.hosts = ["mini.example", "*.mini.example"];
      raw.gateway.listeners[0].tls.certificates[0].hosts = ["mini.example", "*.mini.example"];
      raw.services.api.allow[1].paths = ["/items", "/items/*", "/api/**"];
      raw.gateway.routes = [
        { name: "pub", match: { path: "/api/**", methods: ["GET"], ...(pubHosts ? { hosts: pubHosts } : {}) },
          to: "api", public: true, rateLimit: { requests: 600, per: "1m", key: "ip" } },
        { name: "admin", match: { path: "/api/items", methods: ["GET"], hosts: ["mini.example", "*.mini.example"] },
          to: "api", auth: { jwt: "main", scopes: ["items:read"] } },
      ];
      return inputOf(raw);
    }; // prettier-ignore
    const [base, head] = [spec(), spec(["api.mini.example"])];
    const request = { from: "internet", method: "GET", path: "/api/items", host: "api.mini.example" };
    expect(explainRequest(base, request)).toMatchObject({ verdict: "deny", route: "admin" });
    expect(explainRequest(head, request)).toMatchObject({ verdict: "allow", route: "pub" });
    expect(semanticDiff(base, head).widened).toContainEqual(
      expect.objectContaining({ via: "pub", grants: "GET /api/items" }),
    );
  });

  // A client-certificate or OIDC provider that admits other holders widens every route naming it, as a JWT
  // provider trusting another issuer does: no route's own auth shows it.
  it.each<{
    claim: string;
    provider: "clientCert" | "oidc";
    head: (r: Raw) => void;
    before: RegExp;
    after: RegExp;
  }>([
    {
      claim: "reports_a_client_certificate_provider_that_trusts_another_ca_and_any_san",
      provider: "clientCert",
      head: (r) => (r.gateway.clientCerts.partners = { caFile: "/etc/ca/any-public-ca.pem" }),
      before: /^CA \/etc\/ca\/partners\.pem, any subject, SANs spiffe:\/\/partner\.example\/acme$/,
      after: /^CA \/etc\/ca\/any-public-ca\.pem, any subject, any SAN$/,
    },
    {
      claim: "reports_an_oidc_provider_that_trusts_another_issuer",
      provider: "oidc",
      head: (r) => (r.gateway.oidc.sso.issuer = "https://login.other.example"),
      before: /^issuer https:\/\/login\.mini\.example, client mini, scopes openid, sessions \d+s$/,
      after: /^issuer https:\/\/login\.other\.example, /,
    },
  ])("$claim", ({ provider, head, before, after }) => {
    const spec = (change?: (r: Raw) => void) => {
      const raw = miniRaw();
      raw.gateway.clientCerts = { partners: { caFile: "/etc/ca/partners.pem", sans: ["spiffe://partner.example/acme"] } };
      raw.gateway.oidc = { sso: { issuer: "https://login.mini.example", clientId: "mini", clientSecretEnv: "MINI_SECRET", redirectPath: "/oauth2/callback" } };
      raw.gateway.routes.push(
        { name: "partner", match: { path: "/api/items/{id}", methods: ["GET"] }, to: "api", rewrite: { path: "/items/{id}" }, auth: { clientCert: "partners" } },
        { name: "portal", match: { path: "/portal/**", methods: ["GET"] }, to: "api", auth: { oidc: "sso" } },
      );
      change?.(raw);
      return inputOf(raw);
    }; // prettier-ignore
    const name = provider === "clientCert" ? "clientCert partners" : "oidc sso";
    expect(semanticDiff(spec(), spec(head)).settings).toContainEqual(
      expect.objectContaining({
        scope: "gateway",
        name,
        field: "auth",
        before: expect.stringMatching(before),
        after: expect.stringMatching(after),
        note: `accepted by routes ${provider === "clientCert" ? "partner" : "portal"}`,
      }),
    );
  });

  it("reports_no_take_over_when_a_route_that_already_won_is_renamed_or_given_other_settings", () => {
    const [rb, renamed, limited] = [shopRaw(), shopRaw(), shopRaw()];
    for (const r of [rb, renamed, limited]) publicChaos(r);
    route(renamed, "products-chaos-debug").name = "chaos-debug";
    route(limited, "products-chaos-debug").rateLimit.requests = 30;
    for (const head of [renamed, limited])
      expect(semanticDiff(inputOf(rb), inputOf(head)).widened).toEqual([]);
  });

  it("names_the_route_the_proxies_choose_for_a_public_route_that_wins_by_precedence", () => {
    // decide() is the source of truth: the anonymous request the diff names is refused before, served after.
    const head = shopRaw();
    publicChaos(head);
    const request = { from: "internet", path: "/api/products", headers: { "x-chaos": "on", "x-debug": "1" } };
    expect(explainRequest(BASE, request)).toMatchObject({ verdict: "deny", route: "products-chaos" });
    expect(explainRequest(inputOf(head), request)).toMatchObject({
      verdict: "allow",
      route: "products-chaos-debug",
    });
  });

  it("names_what_a_plaintext_caller_reaches_after_a_rule_is_added_on_a_permissive_mesh", () => {
    // A request without a peer identity: refused before, admitted by the new rule's method and path after.
    const [base, head] = [shopRaw(), shopRaw()];
    permissive(base);
    permissive(head);
    head.services.users.allow.push({ from: ["orders"], methods: ["DELETE"], paths: ["/users/*"] });
    const request = { from: "orders", to: "users", method: "DELETE", path: "/users/7", plaintext: true };
    expect(explainRequest(inputOf(base), request).verdict).toBe("deny");
    expect(explainRequest(inputOf(head), request)).toMatchObject({
      verdict: "allow",
      rule: "services.users.allow[2]",
    });
  });

  it("gives_the_same_diff_whatever_the_order_of_the_spec_and_on_every_run", () => {
    const change = (r: Raw) => {
      publicChaos(r);
      r.services.payments.allow[0].methods.push("PUT");
      r.gateway.jwt.main.issuer = "https://id.partner.example/";
      delete route(r, "search").rateLimit;
    };
    const reversed = (r: Raw) => {
      change(r);
      r.gateway.routes.reverse();
      r.services = Object.fromEntries(Object.entries(r.services).reverse());
    };
    const [rb, ra, rr] = [shopRaw(), shopRaw(), shopRaw()];
    change(ra);
    reversed(rr);
    const d = semanticDiff(inputOf(rb), inputOf(ra));
    expect(JSON.stringify(semanticDiff(inputOf(rb), inputOf(ra)))).toBe(JSON.stringify(d));
    // Guardrail violations name spec positions (gateway.routes[3]), which the reordering moves.
    const access = ({ violations: _v, ...rest }: SemanticDiff) => JSON.stringify(rest);
    expect(access(semanticDiff(inputOf(rb), inputOf(rr)))).toBe(access(d));
  });
});

describe("semantic diff outside the mesh", () => {
  /** The diff between the shop changed by `base` and by `head`, with its markdown. */
  function between(base: (raw: Raw) => void, head: (raw: Raw) => void) {
    const [rb, rh] = [shopRaw(), shopRaw()];
    base(rb);
    head(rh);
    const [ib, ih] = [inputOf(rb), inputOf(rh)];
    const d = semanticDiff(ib, ih);
    const md = renderDiffMarkdown(d, { base: staticReachability(ib), head: staticReachability(ih) });
    return { d, md, mermaid: md.slice(md.indexOf("```mermaid"), md.lastIndexOf("```")) };
  }
  const unchanged = () => {};
  const egress = (from: string, to: string, destination: string) => ({ from, to, destination });
  const ledger = (r: Raw) => {
    r.external.ledger = { host: "10.0.0.9", port: 5432, allow: [{ from: ["orders"] }] };
    r.services.orders.calls.push("ledger");
  };

  it("reports_a_new_external_destination_and_its_caller_as_egress_widened", () => {
    const { d, md } = between(unchanged, ledger);
    expect(d.externals).toEqual({
      added: [
        {
          name: "ledger",
          host: "10.0.0.9",
          port: 5432,
          tls: "passthrough",
          mutual: false,
          destination: "10.0.0.9:5432",
        },
      ],
      removed: [],
      changed: [],
    });
    expect(d.egress.added).toEqual([egress("orders", "ledger", "10.0.0.9:5432")]);
    expect(d.widened).toEqual([
      {
        from: "orders",
        to: ["ledger"],
        via: null,
        principal: null,
        grants: "TCP 10.0.0.9:5432",
        reason: "new egress (external.ledger.allow[0])",
        egress: true,
      },
    ]);
    // An external destination is no mesh edge and no service call.
    expect([d.edges.added, d.edges.callsAdded, d.narrowed]).toEqual([[], [], []]);
    expect(md).toContain("· egress: 1 added, 0 removed ·");
    expect(md).toContain(
      "| `orders` | `ledger` | TCP 10.0.0.9:5432 | egress | new egress (external.ledger.allow[0]) |",
    );
    expect(md).toContain("- external destinations added: `ledger` (10.0.0.9:5432)");
    expect(md).toContain("- egress added (the sidecar relays it): `orders → ledger` (10.0.0.9:5432)");
  });

  it.each<[string, number | undefined, number | undefined, string, string]>([
    ["reports_a_lowered_connection_limit", 16, 4, "16 per proxy", "4 per proxy"],
    ["reports_a_removed_connection_limit", 16, undefined, "16 per proxy", "no limit of its own"],
    ["reports_a_new_connection_limit", undefined, 8, "no limit of its own", "8 per proxy"],
  ])("%s_of_an_external_destination", (_claim, before, after, textBefore, textAfter) => {
    const limit = (n: number | undefined) => (r: Raw) => {
      if (n === undefined) delete r.external["risk-engine"].maxConnections;
      else r.external["risk-engine"].maxConnections = n;
    };
    const { d, md } = between(limit(before), limit(after));
    expect(d.settings).toEqual([
      {
        scope: "external",
        name: "risk-engine",
        field: "maxConnections",
        before: textBefore,
        after: textAfter,
      },
    ]);
    expect(md).toContain(`| external \`risk-engine\` | maxConnections | ${textBefore} | ${textAfter} |`);
    // No one reaches anything new or less.
    expect([d.widened, d.narrowed]).toEqual([[], []]);
  });

  type Route = { name: string; [k: string]: unknown };
  const route = (r: Raw, name: string) => r.gateway.routes.find((x: Route) => x.name === name) as Route;
  it.each<[string, string, (r: Raw) => void, string, string]>([
    [
      "reports_a_canarys_next_step_as_changed_weights",
      "list-products",
      (r) =>
        (route(r, "list-products").split = [
          { service: "catalog", weight: 50 },
          { service: "catalog-v2", weight: 50 },
        ]),
      "catalog 90%, catalog-v2 10%",
      "catalog 50%, catalog-v2 50%",
    ],
    [
      "reports_a_route_moving_off_an_external_destination_a_share_at_a_time",
      "track-shipment",
      (r) => {
        const t = route(r, "track-shipment");
        delete t.to;
        t.split = [
          { external: "carrier-tracking", weight: 70 },
          { service: "orders", weight: 30 },
        ];
      },
      "carrier-tracking (external)",
      "carrier-tracking (external) 70%, orders 30%",
    ],
    [
      "reports_a_mirror_share_changed",
      "search",
      (r) => (route(r, "search").mirror = { service: "search-next", percent: 50 }),
      "search; mirror search-next 20%",
      "search; mirror search-next 50%",
    ],
  ])("%s", (_claim, name, change, before, after) => {
    const { d } = between(unchanged, change);
    expect(d.settings.filter((x) => x.field === "backends")).toEqual([
      { scope: "route", name, field: "backends", before, after },
    ]);
  });

  // A weight-0 entry of a split receives no request: it is not reached, and giving it weight widens access.
  const weights = (v2: number) => (r: Raw) =>
    (route(r, "list-products").split = [
      { service: "catalog", weight: 100 - v2 },
      { service: "catalog-v2", weight: v2 },
    ]);
  it.each<[string, number, number, string[], string[]]>([
    ["reports_a_weight_0_backend_given_weight_as_widened", 0, 10, ["catalog-v2"], []],
    ["reports_a_backend_set_to_weight_0_as_narrowed", 10, 0, [], ["catalog-v2"]],
    ["reports_nothing_for_a_weight_0_backend_that_stays_at_0", 0, 0, [], []],
  ])("%s", (_claim, before, after, widenedTo, narrowedTo) => {
    const { d } = between(weights(before), weights(after));
    const via = (list: typeof d.widened) =>
      list.filter((c) => c.via === "list-products").flatMap((c) => c.to);
    expect(via(d.widened)).toEqual(widenedTo);
    expect(via(d.narrowed)).toEqual(narrowedTo);
  });

  it("does_not_count_a_weight_0_backend_as_reached", () => {
    const raw = shopRaw();
    weights(0)(raw);
    const r = staticReachability(inputOf(raw)).routes.find((x) => x.route === "list-products")!;
    expect(r.targets.map((t) => t.service)).toEqual(["catalog"]);
  });

  const NOTHING = "nothing about the client";
  const IDENTITY = "the client's identity (principal headers, forwarded claims)";
  const ADDRESS = "the client's address (X-Forwarded-For, Forwarded, X-Real-IP)";
  it.each<[string, object, object, string, string, boolean]>([
    ["reports_newly_shared_identity_as_widened", {}, { identity: true }, NOTHING, IDENTITY, true],
    [
      "reports_newly_shared_addresses_as_widened",
      { identity: true },
      { identity: true, clientAddress: true },
      IDENTITY,
      `${IDENTITY} and ${ADDRESS}`,
      true,
    ],
    ["reports_identity_no_longer_shared_without_a_note", { identity: true }, {}, IDENTITY, NOTHING, false],
    [
      "reports_identity_traded_for_addresses_as_widened",
      { identity: true },
      { clientAddress: true },
      IDENTITY,
      ADDRESS,
      true,
    ],
  ])("%s_by_a_gateway_route_to_an_external_destination", (_c, before, after, from, to, widened) => {
    const share = (s: object) => (r: Raw) => {
      r.external["carrier-tracking"].share = s;
    };
    const { d, md } = between(share(before), share(after));
    const note = "widened: the gateway now tells a third party more about its clients";
    expect(d.settings).toEqual([
      {
        scope: "external",
        name: "carrier-tracking",
        field: "share",
        before: from,
        after: to,
        ...(widened ? { note } : {}),
      },
    ]);
    expect(md).toContain(`| external \`carrier-tracking\` | share | ${from} | ${to} |`);
    expect(md.includes(note)).toBe(widened);
  });

  it("does_not_report_sharing_with_a_destination_no_gateway_route_forwards_to", () => {
    // risk-engine is reached by sidecars only: the gateway tells it nothing whatever it says.
    const { d } = between(unchanged, (r) => (r.external["risk-engine"].share = { identity: true }));
    expect(d.settings).toEqual([]);
  });

  it("reports_a_gateway_route_to_an_external_destination_as_widened_access_and_gateway_egress", () => {
    const noRoute = (r: Raw) => {
      r.gateway.routes = r.gateway.routes.filter((x: { name: string }) => x.name !== "track-shipment");
      r.external["carrier-tracking"].allow = [{ from: ["orders"] }];
      r.services.orders.calls.push("carrier-tracking");
    };
    const { d, md } = between(noRoute, unchanged);
    expect(d.egress.added).toEqual([egress("gateway", "carrier-tracking", "tracking.carrier.example:443")]);
    expect(d.egress.removed).toEqual([egress("orders", "carrier-tracking", "tracking.carrier.example:443")]);
    expect(d.routes.added).toEqual(["track-shipment"]);
    expect(d.widened.map((w) => [w.from, w.to, w.via, w.reason])).toEqual([
      ["internet", ["carrier-tracking"], "track-shipment", "route added"],
      ["gateway", ["carrier-tracking"], null, "new egress (external.carrier-tracking.allow[0])"],
    ]);
    expect(md).toContain(
      "- egress added (a gateway route forwards to it): `gateway → carrier-tracking` (tracking.carrier.example:443)",
    );
    // Who opens the TLS: the sidecars of its callers before, the gateway now.
    expect(d.settings.find((c) => c.scope === "external" && c.name === "carrier-tracking")).toMatchObject({
      before: "TLS originated by the sidecar (verified against the system's roots)",
      after: "TLS originated by the gateway (verified against the system's roots)",
    });
  });

  it("reports_a_removed_external_destination_as_egress_narrowed", () => {
    const { d, md } = between(unchanged, (r) => {
      delete r.external["card-processor"];
      r.services.payments.calls = ["risk-engine", "bank-payouts"];
    });
    expect(d.externals.removed.map((x) => x.destination)).toEqual(["api.stripe.com:443"]);
    expect(d.egress.removed).toEqual([egress("payments", "card-processor", "api.stripe.com:443")]);
    expect(d.narrowed).toEqual([
      expect.objectContaining({
        from: "payments",
        to: ["card-processor"],
        reason: "egress removed",
        egress: true,
      }),
    ]);
    expect([d.widened, d.edges.removed, d.edges.callsRemoved]).toEqual([[], [], []]);
    expect(md).toContain("- external destinations removed: `card-processor` (api.stripe.com:443)");
  });

  it.each<[string, (r: Raw) => void, string]>([
    [
      "reports_an_external_destination_moved_to_another_host_as_widened_for_its_caller",
      (r) => (r.external["card-processor"].host = "api.evil.example"),
      "api.evil.example:443",
    ],
    [
      "reports_an_external_destination_moved_to_another_port_as_widened_for_its_caller",
      (r) => (r.external["card-processor"].port = 8443),
      "api.stripe.com:8443",
    ],
    [
      "reports_an_external_destination_moved_to_an_ip_address_in_brackets_when_ipv6",
      (r) => (r.external["card-processor"].host = "2001:db8::7"),
      "[2001:db8::7]:443",
    ],
  ])("%s", (_claim, move, after) => {
    const { d, md, mermaid } = between(unchanged, move);
    expect(d.externals.changed).toEqual([{ name: "card-processor", before: "api.stripe.com:443", after }]);
    expect(d.widened).toEqual([
      {
        from: "payments",
        to: ["card-processor"],
        via: null,
        principal: null,
        grants: `TCP ${after}`,
        reason: `destination changed: api.stripe.com:443 → ${after}`,
        egress: true,
      },
    ]);
    expect(d.narrowed).toEqual([
      expect.objectContaining({
        grants: "TCP api.stripe.com:443",
        reason: `destination changed: api.stripe.com:443 → ${after}`,
      }),
    ]);
    // The same caller relays to the same name: no egress edge added or removed, the move is the change.
    expect([d.egress.added, d.egress.removed]).toEqual([[], []]);
    expect(md).toContain(`- external destinations moved: \`card-processor\` api.stripe.com:443 → ${after}`);
    expect(mermaid).toContain(`ext_card_processor[/"card-processor<br/>api.stripe.com:443 → ${after}"/]`);
    const edges = mermaid.split("\n").filter((l) => / (-->|==>|-\.->)/.test(l));
    const i = edges.indexOf("  n_payments ==>|widened| ext_card_processor");
    expect(i).toBeGreaterThanOrEqual(0);
    expect(mermaid).toContain(`linkStyle ${i} stroke:#ff7f0e,stroke-width:3px`);
  });

  it("reports_an_exact_destination_turned_into_a_wildcard_over_it_as_widened_only", () => {
    const { d, md } = between(unchanged, (r) => (r.external["card-processor"].host = "*.stripe.com"));
    expect(d.externals.changed).toEqual([
      { name: "card-processor", before: "api.stripe.com:443", after: "*.stripe.com:443" },
    ]);
    expect(d.widened).toEqual([
      expect.objectContaining({
        from: "payments",
        grants: "TCP *.stripe.com:443",
        reason: "destination changed: api.stripe.com:443 → *.stripe.com:443",
      }),
    ]);
    // Every connection the exact host took, the wildcard takes too: nothing narrowed.
    expect(d.narrowed).toEqual([]);
    expect(md).toContain(
      "- external destinations moved: `card-processor` api.stripe.com:443 → *.stripe.com:443",
    );
  });

  it("reports_a_wildcard_narrowed_to_a_name_or_a_deeper_wildcard_as_narrowed_only", () => {
    const wide = (r: Raw) => (r.external["card-processor"].host = "*.stripe.com");
    for (const host of ["api.stripe.com", "*.eu.stripe.com"]) {
      const { d } = between(wide, (r) => (r.external["card-processor"].host = host));
      expect(d.widened).toEqual([]);
      expect(d.narrowed).toEqual([
        expect.objectContaining({ from: "payments", grants: "TCP *.stripe.com:443" }),
      ]);
    }
  });

  it("reports_an_address_turned_into_a_range_holding_it_as_widened_only_and_back_as_narrowed_only", () => {
    const one = (r: Raw) => (r.external["card-processor"].host = "10.20.30.40");
    const range = (r: Raw) => (r.external["card-processor"].host = "10.20.0.0/16");
    const wider = between(one, range).d;
    expect(wider.widened).toEqual([
      expect.objectContaining({ from: "payments", grants: "TCP 10.20.0.0/16:443" }),
    ]);
    expect(wider.narrowed).toEqual([]);
    const narrower = between(range, one).d;
    expect(narrower.widened).toEqual([]);
    expect(narrower.narrowed).toEqual([
      expect.objectContaining({ from: "payments", grants: "TCP 10.20.0.0/16:443" }),
    ]);
  });

  it("reports_a_caller_newly_allowed_to_a_destination_it_calls_as_widened_and_its_denial_resolved", () => {
    const calls = (r: Raw) => (r.services.users.calls = ["card-processor"]);
    const { d, mermaid } = between(calls, (r) => {
      calls(r);
      r.external["card-processor"].allow.push({ from: ["users"] });
    });
    expect(d.egress).toEqual({
      added: [egress("users", "card-processor", "api.stripe.com:443")],
      removed: [],
      deniedAdded: [],
      deniedRemoved: [egress("users", "card-processor", "api.stripe.com:443")],
    });
    expect(d.widened).toEqual([
      expect.objectContaining({
        from: "users",
        to: ["card-processor"],
        reason: "new egress (external.card-processor.allow[1])",
      }),
    ]);
    expect(d.violations.resolved.map((v) => `${v.code} ${v.path}`)).toEqual([
      "E_POLICY_CALL_DENIED services.users.calls[0]",
    ]);
    expect(mermaid).toContain("  n_users ==>|added| ext_card_processor");
  });

  it("reports_a_caller_removed_from_the_allow_rules_as_narrowed_and_its_call_as_denied", () => {
    const { d, md, mermaid } = between(unchanged, (r) => (r.external["card-processor"].allow = []));
    expect(d.egress).toEqual({
      added: [],
      removed: [egress("payments", "card-processor", "api.stripe.com:443")],
      deniedAdded: [egress("payments", "card-processor", "api.stripe.com:443")],
      deniedRemoved: [],
    });
    expect(d.narrowed.map((n) => `${n.from}->${n.to.join()} ${n.reason}`)).toEqual([
      "payments->card-processor egress removed",
    ]);
    expect(d.widened).toEqual([]);
    expect(d.violations.added.map((v) => `${v.code} ${v.path}`)).toEqual([
      "E_POLICY_CALL_DENIED services.payments.calls[0]",
    ]);
    expect(md).toContain(
      "- declared egress calls denied (no allow rule names the caller): `payments → card-processor` (api.stripe.com:443)",
    );
    const edges = mermaid.split("\n").filter((l) => / (-->|==>|-\.->)/.test(l));
    const i = edges.indexOf("  n_payments -.->|declared, denied| ext_card_processor");
    expect(i).toBeGreaterThanOrEqual(0);
    expect(mermaid).toContain(`linkStyle ${i} stroke:#d62728,stroke-width:1px`);
  });

  it("reports_a_new_call_no_allow_rule_admits_as_denied_not_widened", () => {
    const { d } = between(unchanged, (r) => (r.services.users.calls = ["card-processor"]));
    expect(d.egress.deniedAdded).toEqual([egress("users", "card-processor", "api.stripe.com:443")]);
    expect([d.widened, d.egress.added]).toEqual([[], []]);
    expect(d.violations.added.map((v) => v.code)).toEqual(["E_POLICY_CALL_DENIED"]);
  });

  it("reports_an_allow_rule_without_a_call_as_no_access_but_a_new_violation", () => {
    const { d } = between(unchanged, (r) => r.external["card-processor"].allow[0].from.push("users"));
    expect([d.widened, d.narrowed, d.egress.added, d.egress.deniedAdded]).toEqual([[], [], [], []]);
    expect(d.violations.added.map((v) => `${v.code} ${v.path}`)).toEqual([
      "E_POLICY_ALLOW_WITHOUT_CALL external.card-processor.allow[0].from[1]",
    ]);
  });

  it("reports_a_renamed_external_destination_as_no_access_change", () => {
    const { d } = between(unchanged, (r) => {
      r.external.stripe = r.external["card-processor"];
      delete r.external["card-processor"];
      r.services.payments.calls = ["stripe", "risk-engine", "bank-payouts"];
    });
    expect(d.externals.added.map((x) => x.name)).toEqual(["stripe"]);
    expect(d.externals.removed.map((x) => x.name)).toEqual(["card-processor"]);
    expect(d.egress.added).toEqual([egress("payments", "stripe", "api.stripe.com:443")]);
    expect(d.egress.removed).toEqual([egress("payments", "card-processor", "api.stripe.com:443")]);
    expect([d.widened, d.narrowed]).toEqual([[], []]);
  });

  it("reports_nothing_outside_the_mesh_for_the_same_spec_and_leaves_egress_out_of_meshes_without_externals", () => {
    const { d, md } = between(unchanged, unchanged);
    expect(d.externals).toEqual({ added: [], removed: [], changed: [] });
    expect(d.egress).toEqual({ added: [], removed: [], deniedAdded: [], deniedRemoved: [] });
    expect(md).toContain("No change in who can reach what");
    const none = (r: Raw) => {
      delete r.external;
      r.services.payments.calls = [];
      r.services.catalog.calls = [];
      r.gateway.routes = r.gateway.routes.filter((x: { name: string }) => x.name !== "track-shipment");
    };
    const without = between(none, (r) => {
      none(r);
      r.services.payments.timeout = "5s";
    });
    expect(without.md).not.toContain("egress:");
    expect(without.mermaid).not.toContain("ext_");
  });
});
