/**
 * decideOutbound(): which declared service an app's request goes to (proxy absolute-form, Host header,
 * or a service's local port), undeclared destinations refused, and the per-route policy chosen by the
 * router's precedence — checked against the Router on random route sets.
 */
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import type { GatewayRoute, SidecarRuntimeConfig } from "../../runtime/contract/index.ts";
import { compileOutbound, decideOutbound, type OutboundDecision } from "../../runtime/decide/outbound.ts";
import { Router } from "../../runtime/decide/router.ts";
import { parseSpec } from "../../components/spec/parse.ts";
import { translate } from "../../components/translate/translate.ts";

function webSidecar(): SidecarRuntimeConfig {
  const r = parseSpec({
    name: "shop",
    trustDomain: "shop.example",
    services: {
      web: {
        image: "r/web:1",
        port: 8080,
        calls: [
          "orders",
          "payments",
          "legacy",
          "stripe",
          "v6",
          "ledger",
          "ledger-tls",
          "not-allowed",
          "buckets",
          "corp",
          "corp-eu",
          "onprem",
        ],
      },
      orders: {
        image: "r/orders:1",
        port: 8080,
        allow: [{ from: ["web"] }],
        timeout: "3s",
        routes: [
          { name: "slow-report", match: { path: "/reports/**" }, timeout: "10s" },
          { name: "one-order", match: { path: "/orders/{id}", methods: ["GET"] }, timeout: "500ms" },
          { name: "recent", match: { path: "/orders/recent" }, timeout: "700ms", retries: { attempts: 0 } },
          { name: "any-order", match: { path: "/orders/*" }, timeout: "900ms" },
        ],
      },
      payments: { image: "r/payments:1", port: 8080, allow: [{ from: ["web"] }] },
      secrets: { image: "r/secrets:1", port: 8080 },
    },
    external: {
      legacy: { host: "legacy.corp.example", port: 8080, timeout: "4s", allow: [{ from: ["web"] }] },
      stripe: { host: "api.stripe.com", port: 443, tls: "originate", allow: [{ from: ["web"] }] },
      v6: { host: "2001:DB8::7", port: 80, allow: [{ from: ["web"] }] },
      // Declares port 80 of the host another external originates TLS to: http://ledger.example/ is this one.
      ledger: { host: "ledger.example", port: 80, allow: [{ from: ["web"] }] },
      "ledger-tls": { host: "ledger.example", port: 443, tls: "originate", allow: [{ from: ["web"] }] },
      "not-allowed": { host: "nope.example", port: 80 },
      // Wildcards: every name below the domain; an exact host wins, then the longer wildcard.
      buckets: { host: "*.s3.example.com", port: 443, tls: "originate", allow: [{ from: ["web"] }] },
      corp: { host: "*.corp.example", port: 8080, timeout: "6s", allow: [{ from: ["web"] }] },
      "corp-eu": { host: "*.eu.corp.example", port: 8080, timeout: "7s", allow: [{ from: ["web"] }] },
      // A range: every address in it.
      onprem: { host: "10.20.0.0/16", port: 8080, allow: [{ from: ["web"] }] },
    },
  });
  if (!r.ok) throw new Error(r.errors.map((e) => `${e.path}: ${e.message}`).join("\n"));
  return translate(r.spec).runtime.sidecars.find((s) => s.name === "web")!;
}

const config = webSidecar();
const compiled = compileOutbound(config.outbound, config.namespace);
const decide = (target: string, host: string | undefined, method = "GET", service: string | null = null) =>
  decideOutbound(compiled, { method, target, host, service });
const verdict = (d: OutboundDecision) =>
  d.kind === "route"
    ? `${d.service} ${d.route ?? "-"} ${d.timeoutMs}`
    : d.kind === "external"
      ? `external ${d.external} ${d.host} ${d.upstreamTarget} ${d.timeoutMs}`
      : `${d.status} ${d.code}`;

describe("decideOutbound", () => {
  it.each([
    [
      "routes_absolute_form_to_a_declared_service",
      "http://orders/x",
      "ignored",
      "GET",
      null,
      "orders - 3000",
    ],
    ["routes_absolute_form_with_a_port", "http://orders:8080/x", undefined, "GET", null, "orders - 3000"],
    ["routes_origin_form_by_host", "/x", "payments", "GET", null, "payments - 2000"],
    ["routes_namespace_qualified_host", "/x", "orders.shop", "GET", null, "orders - 3000"],
    ["routes_cluster_local_host", "/x", "ORDERS.shop.svc.cluster.local", "GET", null, "orders - 3000"],
    ["refuses_an_undeclared_mesh_service", "/x", "secrets", "GET", null, "403 destination_not_declared"],
    [
      "refuses_an_outside_host",
      "http://example.com/x",
      undefined,
      "GET",
      null,
      "403 destination_not_declared",
    ],
    ["refuses_another_namespace", "/x", "orders.other", "GET", null, "403 destination_not_declared"],
    ["refuses_https_absolute_form", "https://orders/x", undefined, "GET", null, "400 unsupported_scheme"],
    ["refuses_a_missing_host", "/x", undefined, "GET", null, "400 bad_host"],
    ["refuses_an_ambiguous_target", "/x%2fy", "orders", "GET", null, "400 bad_request_target"],
    ["refuses_authority_form", "orders:443", "orders", "CONNECT", null, "400 bad_request_target"],
    ["local_port_routes_a_loopback_host", "/x", "127.0.0.1:15102", "GET", "orders", "orders - 3000"],
    [
      "local_port_of_an_undeclared_service_is_refused",
      "/x",
      "secrets",
      "GET",
      "secrets",
      "403 destination_not_declared",
    ],
    ["picks_the_literal_route_over_a_param", "/orders/recent", "orders", "GET", null, "orders recent 700"],
    [
      "picks_the_param_route_with_methods_over_star",
      "/orders/42",
      "orders",
      "GET",
      null,
      "orders one-order 500",
    ],
    ["falls_to_star_route_for_other_methods", "/orders/42", "orders", "DELETE", null, "orders any-order 900"],
    ["matches_rest_route_on_its_prefix", "/reports", "orders", "GET", null, "orders slow-report 10000"],
    ["matches_the_canonical_path", "/reports/../orders/./recent", "orders", "GET", null, "orders recent 700"],
    ["uses_service_defaults_without_a_route", "/other", "orders", "GET", null, "orders - 3000"],
    // Plain HTTP to external destinations (HTTP_PROXY): host and port must be a declared one.
    [
      "forwards_plain_http_to_a_declared_external_at_its_port",
      "http://legacy.corp.example:8080/a?b=1",
      undefined,
      "POST",
      null,
      "external legacy legacy.corp.example:8080 /a?b=1 4000",
    ],
    [
      "finds_the_external_by_the_host_header_too",
      "/a",
      "LEGACY.corp.example.:8080",
      "GET",
      null,
      "external legacy legacy.corp.example:8080 /a 4000",
    ],
    [
      "refuses_a_declared_external_host_at_another_port",
      "http://legacy.corp.example/a",
      undefined,
      "GET",
      null,
      "403 destination_not_declared",
    ],
    [
      "takes_http_on_port_80_to_an_originating_external",
      "http://api.stripe.com/v1/charges",
      undefined,
      "POST",
      null,
      "external stripe api.stripe.com /v1/charges 2000",
    ],
    [
      "takes_its_declared_port_too",
      "http://api.stripe.com:443/v1",
      undefined,
      "GET",
      null,
      "external stripe api.stripe.com /v1 2000",
    ],
    [
      "leaves_port_80_to_an_external_declaring_it",
      "http://ledger.example/x",
      undefined,
      "GET",
      null,
      "external ledger ledger.example /x 2000",
    ],
    [
      "still_reaches_the_originating_one_at_its_port",
      "http://ledger.example:443/x",
      undefined,
      "GET",
      null,
      "external ledger-tls ledger.example /x 2000",
    ],
    [
      "matches_an_ipv6_external_canonically",
      "http://[2001:db8:0::7]/x",
      undefined,
      "GET",
      null,
      "external v6 [2001:db8::7] /x 2000",
    ],
    [
      "refuses_an_external_the_caller_is_not_allowed",
      "http://nope.example/x",
      undefined,
      "GET",
      null,
      "403 destination_not_declared",
    ],
    [
      "refuses_https_to_an_external_use_connect",
      "https://api.stripe.com/v1",
      undefined,
      "GET",
      null,
      "400 unsupported_scheme",
    ],
    [
      "canonicalizes_the_path_sent_to_an_external",
      "http://legacy.corp.example:8080/a/./b/../c",
      undefined,
      "GET",
      null,
      "external legacy legacy.corp.example:8080 /a/c 4000",
    ],
    [
      "refuses_an_ambiguous_path_to_an_external",
      "http://legacy.corp.example:8080/a%2fb",
      undefined,
      "GET",
      null,
      "400 bad_request_target",
    ],
    // Wildcard externals: the request goes to the name the app called.
    [
      "a_wildcard_takes_a_name_below_its_domain",
      "http://media.s3.example.com/k?v=1",
      undefined,
      "PUT",
      null,
      "external buckets media.s3.example.com /k?v=1 2000",
    ],
    [
      "a_wildcard_takes_names_several_labels_below",
      "http://a.b.s3.example.com:443/k",
      undefined,
      "GET",
      null,
      "external buckets a.b.s3.example.com /k 2000",
    ],
    [
      "a_wildcard_never_takes_its_domain_itself",
      "http://s3.example.com/k",
      undefined,
      "GET",
      null,
      "403 destination_not_declared",
    ],
    [
      "a_wildcard_never_takes_a_lookalike_name",
      "http://evils3.example.com/k",
      undefined,
      "GET",
      null,
      "403 destination_not_declared",
    ],
    [
      "a_wildcard_takes_the_host_header_name_canonically",
      "/x",
      "Files.CORP.example.:8080",
      "GET",
      null,
      "external corp files.corp.example:8080 /x 6000",
    ],
    [
      "an_exact_host_wins_over_a_wildcard",
      "http://legacy.corp.example:8080/a",
      undefined,
      "GET",
      null,
      "external legacy legacy.corp.example:8080 /a 4000",
    ],
    [
      "the_longer_wildcard_wins",
      "http://db.eu.corp.example:8080/a",
      undefined,
      "GET",
      null,
      "external corp-eu db.eu.corp.example:8080 /a 7000",
    ],
    [
      "a_wildcard_holds_only_its_port",
      "http://files.corp.example:9090/a",
      undefined,
      "GET",
      null,
      "403 destination_not_declared",
    ],
    [
      "a_wildcard_never_takes_an_address",
      "http://10.0.0.1:8080/a",
      undefined,
      "GET",
      null,
      "403 destination_not_declared",
    ],
    [
      "a_range_takes_an_address_in_it",
      "http://10.20.3.4:8080/x",
      undefined,
      "GET",
      null,
      "external onprem 10.20.3.4:8080 /x 2000",
    ],
    [
      "a_range_never_takes_an_address_outside_it",
      "http://10.21.0.1:8080/x",
      undefined,
      "GET",
      null,
      "403 destination_not_declared",
    ],
    [
      "local_port_of_a_service_never_reaches_an_external",
      "http://legacy.corp.example:8080/a",
      undefined,
      "GET",
      "orders",
      "421 misdirected_request",
    ],
    // A local port serves its service under a loopback Host or the service's names, nothing else (DNS
    // rebinding: a page whose name resolves to 127.0.0.1 sends its own host).
    ["local_port_answers_localhost", "/x", "LOCALHOST:15102", "GET", "orders", "orders - 3000"],
    ["local_port_answers_any_127_8_address", "/x", "127.9.8.7:1", "GET", "orders", "orders - 3000"],
    ["local_port_answers_the_ipv6_loopback", "/x", "[::1]:15102", "GET", "orders", "orders - 3000"],
    ["local_port_answers_the_services_names", "/x", "orders.shop.svc", "GET", "orders", "orders - 3000"],
    ["local_port_answers_http_1_0_without_host", "/x", undefined, "GET", "orders", "orders - 3000"],
    [
      "local_port_refuses_a_rebound_host",
      "/x",
      "evil.example:15102",
      "GET",
      "orders",
      "421 misdirected_request",
    ],
    [
      "local_port_refuses_another_services_name",
      "/x",
      "payments",
      "GET",
      "orders",
      "421 misdirected_request",
    ],
    [
      "local_port_refuses_a_name_starting_like_the_loopback",
      "/x",
      "127.0.0.1.evil.example",
      "GET",
      "orders",
      "421 misdirected_request",
    ],
    [
      "local_port_refuses_a_quad_out_of_range",
      "/x",
      "127.0.0.256",
      "GET",
      "orders",
      "421 misdirected_request",
    ],
    ["local_port_refuses_a_short_127_form", "/x", "127.1", "GET", "orders", "421 misdirected_request"],
    [
      "local_port_refuses_a_localhost_subdomain",
      "/x",
      "localhost.evil.example",
      "GET",
      "orders",
      "421 misdirected_request",
    ],
    ["local_port_refuses_a_malformed_host", "/x", "evil_example:15102", "GET", "orders", "400 bad_host"],
  ])("%s", (_claim, target, host, method, service, expected) => {
    expect(verdict(decide(target, host, method, service))).toBe(expected);
  });

  it.each([
    ["refuses_a_cross_site_fetch", "orders", undefined, "cross-site", "403 browser_request"],
    ["refuses_a_same_site_fetch", "orders", undefined, "same-site", "403 browser_request"],
    ["refuses_an_unknown_fetch_site_value", "orders", undefined, "x", "403 browser_request"],
    ["refuses_any_origin_header", "orders", "null", undefined, "403 browser_request"],
    [
      "refuses_a_same_origin_post_with_origin",
      "orders",
      "http://127.0.0.1:15102",
      "same-origin",
      "403 browser_request",
    ],
    [
      "refuses_a_browser_on_the_proxy_port",
      null,
      "https://evil.example",
      "cross-site",
      "403 browser_request",
    ],
    ["serves_node_fetch_which_sends_neither", "orders", undefined, undefined, "orders - 3000"],
    ["serves_a_same_origin_fetch_without_origin", "orders", undefined, "same-origin", "orders - 3000"],
    ["serves_a_user_initiated_request", "orders", undefined, "none", "orders - 3000"],
  ])("%s", (_claim, service, origin, fetchSite, expected) => {
    const d = decideOutbound(compiled, {
      method: "GET",
      target: "/x",
      host: service === null ? "orders" : "127.0.0.1:15102",
      service,
      origin,
      fetchSite,
    });
    expect(verdict(d)).toBe(expected);
  });

  it("sends_the_named_host_or_the_service_name", () => {
    expect(decide("/x?y=1", "Orders.shop:80")).toMatchObject({
      host: "orders.shop",
      upstreamTarget: "/x?y=1",
      cluster: "orders",
    });
    expect(decide("/x", "127.0.0.1:15102", "GET", "orders")).toMatchObject({ host: "orders" });
  });

  it("connects_to_the_external_s_host_or_the_name_a_wildcard_covers", () => {
    expect(decide("http://legacy.corp.example:8080/a", undefined)).toMatchObject({
      destination: "legacy.corp.example",
      host: "legacy.corp.example:8080",
    });
    expect(decide("http://[2001:db8::7]/x", undefined)).toMatchObject({ destination: "2001:db8::7" });
    expect(decide("/x", "Files.CORP.example.:8080")).toMatchObject({
      destination: "files.corp.example",
      host: "files.corp.example:8080",
    });
    expect(decide("http://media.s3.example.com/k", undefined)).toMatchObject({
      destination: "media.s3.example.com",
      host: "media.s3.example.com",
    });
  });

  it("carries_the_route_retry_plan", () => {
    const d = decide("/orders/recent", "orders");
    expect(d.kind === "route" && d.retry.attempts).toBe(0);
  });
});

// The per-route policy equals the route the gateway's Router would pick for the same patterns.
describe("decideOutbound properties", () => {
  const patternArb = fc
    .tuple(fc.array(fc.constantFrom("a", "b", "*", "{p}"), { maxLength: 3 }), fc.boolean())
    .map(([segs, rest]) => {
      const named = segs.map((s, i) => (s === "{p}" ? `{p${i}}` : s));
      const all = rest ? [...named, "**"] : named;
      return all.length === 0 ? "/" : `/${all.join("/")}`;
    });
  const routesArb = fc.uniqueArray(fc.record({ path: patternArb, get: fc.boolean() }), {
    maxLength: 6,
    selector: (r) => `${r.path} ${r.get}`,
  });
  const pathArb = fc.array(fc.constantFrom("a", "b", "c"), { maxLength: 4 }).map((s) => `/${s.join("/")}`);

  it("route_policy_choice_equals_the_router_choice", () => {
    let matched = 0;
    fc.assert(
      fc.property(routesArb, pathArb, fc.constantFrom("GET", "POST"), (routes, path, method) => {
        const named = routes.map((r, i) => ({ ...r, name: `r${i}` }));
        const base = config.outbound.services.find((s) => s.service === "payments")!;
        const outbound = {
          ...config.outbound,
          services: [
            {
              ...base,
              routes: named.map((r) => ({
                name: r.name,
                match: { path: r.path, methods: r.get ? (["GET"] as const) : [] },
                timeoutMs: 1000,
                retry: base.retry,
              })),
            },
          ],
        } as SidecarRuntimeConfig["outbound"];
        const d = decideOutbound(compileOutbound(outbound, "shop"), {
          method,
          target: path,
          host: "payments",
          service: null,
        });
        const router = new Router(
          named.map(
            (r) =>
              ({
                name: r.name,
                match: { path: r.path, methods: r.get ? ["GET"] : [], hosts: [], headers: [], query: [] },
                action: { kind: "redirect", status: 301, scheme: null, host: null, port: null, path: null },
              }) as unknown as GatewayRoute,
          ),
        );
        const m = router.match("payments", { method, path, query: "", headers: { header: () => undefined } });
        const expected = m.kind === "matched" ? m.route.name : null;
        if (expected !== null) matched++;
        expect(d.kind === "route" ? d.route : "reject").toBe(expected);
      }),
      { numRuns: 3000 },
    );
    expect(matched).toBeGreaterThan(300);
  });
});
