/**
 * CORS decisions as tables: which origins match (exact, subdomain patterns, `*`), which preflights are
 * allowed (origin, method, requested headers) with which headers, and the headers of actual responses.
 */
import type { OutgoingHttpHeaders } from "node:http";
import { describe, expect, it } from "vitest";
import {
  addCorsHeaders,
  appendVary,
  compileCors,
  isPreflight,
  originAllowed,
  originEntryProblem,
  preflight,
} from "../../runtime/apim/cors.ts";
import type { GatewayRoute } from "../../runtime/contract/schema.ts";
import { compileGateway, decide } from "../../runtime/decide/decide.ts";
import { gatewayConfig } from "../support/gateway.ts";

type Cors = NonNullable<GatewayRoute["cors"]>;
const policy = (over: Partial<Cors> = {}) =>
  compileCors({
    origins: ["https://app.example", "https://*.preview.example", "http://localhost:3000"],
    methods: ["GET", "POST"],
    headers: ["content-type", "x-tenant"],
    exposeHeaders: ["x-request-id"],
    credentials: true,
    maxAgeSeconds: 600,
    ...over,
  });

describe("origin entries", () => {
  it.each([
    ["accepts_an_exact_https_origin", "https://app.example", null],
    ["accepts_an_origin_with_a_port", "http://localhost:3000", null],
    ["accepts_a_subdomain_pattern", "https://*.preview.example", null],
    ["accepts_the_any_origin", "*", null],
    ["refuses_the_null_origin", "null", "sandboxed"],
    ["refuses_a_trailing_slash", "https://app.example/", "not an origin"],
    ["refuses_a_path", "https://app.example/app", "not an origin"],
    ["refuses_upper_case", "https://App.example", "not an origin"],
    ["refuses_a_wildcard_over_a_tld", "https://*.example", "two labels"],
    ["refuses_a_wildcard_inside_a_label", "https://app*.example.com", "not an origin"],
    ["refuses_a_bare_wildcard_host", "https://*", "not an origin"],
    ["refuses_another_scheme", "ftp://app.example", "not an origin"],
    ["refuses_userinfo", "https://u@app.example", "not an origin"],
  ])("%s", (_claim, entry, problem) => {
    const p = originEntryProblem(entry);
    if (problem === null) expect(p).toBeNull();
    else expect(p).toContain(problem);
  });

  it("refuses_any_origin_with_credentials_at_compile", () => {
    expect(() => policy({ origins: ["*"], credentials: true })).toThrow("credentials");
  });
});

describe("origin matching", () => {
  const c = policy();
  it.each([
    ["matches_an_exact_origin", "https://app.example", true],
    ["matches_an_origin_with_its_port", "http://localhost:3000", true],
    ["refuses_the_same_host_on_another_port", "http://localhost:3001", false],
    ["refuses_another_scheme_of_an_allowed_host", "http://app.example", false],
    ["refuses_a_case_variant", "https://APP.example", false],
    ["matches_one_subdomain_label", "https://pr-12.preview.example", true],
    ["matches_several_subdomain_labels", "https://a.b.preview.example", true],
    ["refuses_the_pattern_apex", "https://preview.example", false],
    ["refuses_a_suffix_lookalike", "https://evilpreview.example", false],
    ["refuses_a_pattern_host_with_a_port", "https://a.preview.example:8443", false],
    ["refuses_a_pattern_with_another_scheme", "http://a.preview.example", false],
    ["refuses_userinfo_in_front_of_a_pattern", "https://evil.com@a.preview.example", false],
    ["refuses_a_path_smuggled_before_the_suffix", "https://evil.com/.preview.example", false],
    ["refuses_an_allowed_origin_as_a_prefix", "https://app.example.evil.com", false],
    ["refuses_null", "null", false],
  ])("%s", (_claim, origin, allowed) => {
    expect(originAllowed(c, origin)).toBe(allowed);
  });

  it("matches_any_origin_with_a_star", () => {
    expect(originAllowed(policy({ origins: ["*"], credentials: false }), "https://whoever.example")).toBe(
      true,
    );
  });
});

describe("preflight detection", () => {
  it.each([
    ["detects_options_with_origin_and_request_method", "OPTIONS", "https://a.example", "POST", true],
    ["ignores_options_without_origin", "OPTIONS", undefined, "POST", false],
    ["ignores_options_without_request_method", "OPTIONS", "https://a.example", undefined, false],
    ["ignores_other_methods", "GET", "https://a.example", "POST", false],
  ])("%s", (_claim, method, origin, requested, expected) => {
    expect(isPreflight(method, origin, requested)).toBe(expected);
  });
});

describe("preflight decisions", () => {
  const c = policy();
  it("allows_a_listed_origin_method_and_headers", () => {
    const r = preflight(c, "https://app.example", "POST", "Content-Type, X-Tenant");
    expect(r).toEqual({
      allowed: true,
      headers: {
        "access-control-allow-origin": "https://app.example",
        "access-control-allow-methods": "GET, POST",
        "access-control-allow-headers": "content-type, x-tenant",
        "access-control-allow-credentials": "true",
        "access-control-max-age": "600",
        vary: "Origin, Access-Control-Request-Method, Access-Control-Request-Headers",
        "content-length": 0,
      },
    });
  });

  it.each([
    ["denies_an_unlisted_origin", "https://evil.example", "POST", undefined, "origin"],
    ["denies_an_unlisted_method", "https://app.example", "DELETE", undefined, "method DELETE"],
    [
      "denies_an_unlisted_request_header",
      "https://app.example",
      "POST",
      "content-type, authorization",
      "authorization",
    ],
    ["denies_a_malformed_request_header", "https://app.example", "POST", "x tenant", "x tenant"],
  ])("%s", (_claim, origin, method, headers, reason) => {
    const r = preflight(c, origin, method, headers);
    expect(r.allowed).toBe(false);
    if (!r.allowed) {
      expect(r.reason).toContain(reason);
      expect(Object.keys(r.headers).filter((h) => h.startsWith("access-control-"))).toEqual([]);
    }
  });

  it("allows_any_requested_header_with_a_star", () => {
    const r = preflight(policy({ headers: ["*"] }), "https://app.example", "GET", "x-anything");
    expect(r.allowed && r.headers["access-control-allow-headers"]).toBe("x-anything");
  });

  it("answers_star_without_credentials_for_the_any_origin", () => {
    const r = preflight(
      policy({ origins: ["*"], credentials: false }),
      "https://x.example",
      "GET",
      undefined,
    );
    expect(r.allowed && r.headers["access-control-allow-origin"]).toBe("*");
    expect(r.allowed && r.headers["access-control-allow-credentials"]).toBeUndefined();
  });
});

describe("actual responses", () => {
  it("adds_allow_origin_credentials_expose_and_vary_for_an_allowed_origin", () => {
    const h: OutgoingHttpHeaders = { "content-type": "application/json", vary: "Accept-Encoding" };
    expect(addCorsHeaders(policy(), "https://pr-1.preview.example", h)).toBe(true);
    expect(h).toEqual({
      "content-type": "application/json",
      vary: "Accept-Encoding, Origin",
      "access-control-allow-origin": "https://pr-1.preview.example",
      "access-control-allow-credentials": "true",
      "access-control-expose-headers": "x-request-id",
    });
  });

  it("adds_only_vary_for_a_disallowed_origin_and_drops_the_upstreams_cors_headers", () => {
    const h: OutgoingHttpHeaders = {
      "access-control-allow-origin": "*",
      "access-control-allow-credentials": "true",
    };
    expect(addCorsHeaders(policy(), "https://evil.example", h)).toBe(false);
    expect(h).toEqual({ vary: "Origin" });
  });

  it("adds_only_vary_without_an_origin", () => {
    const h: OutgoingHttpHeaders = {};
    addCorsHeaders(policy(), undefined, h);
    expect(h).toEqual({ vary: "Origin" });
  });

  it.each([
    ["answers_star_without_vary_for_the_any_origin", "https://x.example"],
    // Fetch, "CORS protocol and HTTP caches": a static `*` goes on non-CORS responses as well, without
    // Vary, or a cache in front stores the Origin-less answer and serves it to every page's CORS request.
    ["answers_star_without_vary_for_the_any_origin_to_a_request_without_an_origin", undefined],
  ])("%s", (_claim, origin) => {
    const h: OutgoingHttpHeaders = {};
    addCorsHeaders(policy({ origins: ["*"], credentials: false, exposeHeaders: [] }), origin, h);
    expect(h).toEqual({ "access-control-allow-origin": "*" });
  });

  it.each([
    ["appends_to_an_existing_vary", "Accept-Encoding", "Accept-Encoding, Origin"],
    ["keeps_a_vary_that_lists_origin", "origin, accept", "origin, accept"],
    ["keeps_vary_star", "*", "*"],
  ])("%s", (_claim, before, after) => {
    const h: OutgoingHttpHeaders = { vary: before };
    appendVary(h, "Origin");
    expect(h.vary).toBe(after);
  });
});

describe("preflight routing in decide()", () => {
  const config = gatewayConfig(
    [
      {
        name: "items",
        match: { path: "/api/items", methods: ["GET", "POST"] },
        to: "app",
        public: true,
        cors: { origins: ["https://app.example"] },
      },
      { name: "plain", match: { path: "/api/plain", methods: ["POST"] }, to: "app", public: true },
      { name: "options", match: { path: "/api/plain", methods: ["OPTIONS"] }, to: "app", public: true },
    ],
    { app: { port: 1 } },
  );
  const gw = compileGateway(config);
  const facts = (path: string, headers: Record<string, string>) => ({
    method: "OPTIONS",
    target: path,
    host: "localhost",
    header: (n: string) => headers[n],
  });

  it.each([
    [
      "routes_a_preflight_by_its_announced_method",
      "/api/items",
      { origin: "https://x", "access-control-request-method": "POST" },
      "items",
      true,
    ],
    [
      "keeps_options_without_origin_a_plain_request",
      "/api/items",
      { "access-control-request-method": "POST" },
      null,
      false,
    ],
    [
      "keeps_a_preflight_on_a_route_without_cors_a_plain_options",
      "/api/plain",
      { origin: "https://x", "access-control-request-method": "POST" },
      "options",
      false,
    ],
  ] as const)("%s", (_claim, path, headers, route, preflight) => {
    const d = decide(gw, facts(path, headers));
    if (route === null) expect(d.kind).toBe("reject");
    else {
      expect(d.kind === "route" && d.route.name).toBe(route);
      expect(d.kind === "route" && d.preflight).toBe(preflight);
    }
  });

  it("reads_headers_through_facts_whose_header_is_a_method", () => {
    // The gateway passes its per-request Exchange object; its header() needs its own `this`.
    class Facts {
      readonly method = "OPTIONS";
      readonly target = "/api/items";
      readonly host = "localhost";
      readonly headers: Record<string, string> = {
        origin: "https://x",
        "access-control-request-method": "GET",
      };
      header(name: string): string | undefined {
        return this.headers[name];
      }
    }
    const d = decide(gw, new Facts());
    expect(d.kind === "route" && d.preflight).toBe(true);
    const conditioned = compileGateway(
      gatewayConfig(
        [
          { name: "plain", match: { path: "/p", methods: ["GET"] }, to: "app", public: true },
          {
            name: "chaos",
            match: { path: "/p", methods: ["GET"], headers: { "x-chaos": "on" } },
            to: "app",
            public: true,
          },
        ],
        { app: { port: 1 } },
      ),
    );
    const f = Object.assign(new Facts(), { method: "GET", target: "/p" });
    expect(decide(conditioned, f)).toMatchObject({ kind: "route", route: { name: "plain" } });
    f.headers["x-chaos"] = "on";
    expect(decide(conditioned, f)).toMatchObject({ kind: "route", route: { name: "chaos" } });
  });

  it("never_marks_other_methods_as_preflights", () => {
    const d = decide(gw, {
      ...facts("/api/items", { origin: "https://x", "access-control-request-method": "POST" }),
      method: "GET",
    });
    expect(d.kind === "route" && d.preflight).toBe(false);
  });
});
