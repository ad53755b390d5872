/**
 * meshgate/testing's vitest matchers as users write them: toAllow / toDeny on a loaded spec file and on a
 * spec object, passing and failing expectations (with .not), and failure messages that carry the trace.
 */
import { describe, expect, it } from "vitest";
import { defineMesh } from "../../components/spec/define.ts";
import { installMatchers, loadMesh, meshOf } from "../../testing/index.ts";

installMatchers(expect);

const SHOP = new URL("../../examples/shop/mesh.yaml", import.meta.url).pathname;

/** The brief's example: web → orders. */
const small = defineMesh({
  name: "small",
  trustDomain: "small.example",
  services: {
    web: { image: "r/web:1", port: 8080, calls: ["orders"] },
    orders: {
      image: "r/orders:1",
      port: 8080,
      allow: [{ from: ["web"], methods: ["GET"], paths: ["/orders/*"] }],
    },
  },
});

/** The message of a failed expectation. */
function failure(run: () => void): string {
  try {
    run();
  } catch (err) {
    return (err as Error).message;
  }
  throw new Error("the expectation passed");
}

describe("toAllow / toDeny", () => {
  it("passes_for_a_spec_object_as_written", () => {
    expect(small).toAllow({ from: "web", to: "orders", method: "GET", path: "/orders/7" });
    expect(small).toDeny({ from: "web", to: "orders", method: "DELETE", path: "/orders/7" });
    expect(small).toDeny({ from: "orders", to: "web", path: "/", layer: "outbound" });
    expect(small).not.toAllow({ from: "web", to: "orders", method: "POST", path: "/orders/7" });
  });

  it("passes_for_internet_callers_of_a_loaded_spec", async () => {
    const mesh = await loadMesh(SHOP);
    expect(mesh).toAllow({
      from: "internet",
      host: "api.shop.example",
      path: "/api/orders/7",
      claims: { sub: "u", scope: "orders:read" },
    });
    expect(mesh).toAllow({
      from: "internet",
      path: "/api/orders/7",
      scopes: ["orders:read"],
      route: "get-order",
      to: "orders",
    });
    expect(mesh).toDeny({
      from: "internet",
      host: "api.shop.example",
      path: "/api/orders/7",
      layer: "authentication",
      status: 401,
    });
    expect(mesh).toDeny({
      from: "internet",
      method: "POST",
      path: "/partner/orders",
      consumer: "globex",
      clientIp: "10.0.0.1",
      layer: "authorization",
      status: 403,
    });
  });

  it("fails_toAllow_with_the_decision_trace", () => {
    const message = failure(() =>
      expect(small).toAllow({ from: "web", to: "orders", method: "DELETE", path: "/orders/7" }),
    );
    expect(message).toContain(
      "expected DELETE /orders/7 from web to orders to be allowed: expected allow, got deny",
    );
    expect(message).toContain("DENY at mesh: 403 method_not_allowed");
    expect(message).toContain("✓ outbound");
    expect(message).toContain("✗ mesh");
  });

  it("fails_toDeny_with_the_rule_that_allowed_it", () => {
    const message = failure(() => expect(small).toDeny({ from: "web", to: "orders", path: "/orders/7" }));
    expect(message).toContain(
      "expected GET /orders/7 from web to orders to be denied: expected deny, got allow",
    );
    expect(message).toContain("[services.orders.allow[0]]");
  });

  it("fails_a_narrower_expectation_naming_what_differs", async () => {
    const mesh = await loadMesh(SHOP);
    const message = failure(() =>
      expect(mesh).toDeny({ from: "internet", path: "/api/orders", layer: "authorization" }),
    );
    expect(message).toContain("expected layer authorization, got authentication");
  });

  it("fails_not_toDeny_when_the_request_is_denied", () => {
    const message = failure(() =>
      expect(small).not.toDeny({ from: "web", to: "orders", method: "PUT", path: "/orders/7" }),
    );
    expect(message).toContain("not to be denied");
    expect(message).toContain("DENY at mesh");
  });

  it("fails_for_a_request_naming_an_unknown_service_even_negated", () => {
    expect(failure(() => expect(small).toAllow({ from: "wbe", to: "orders", path: "/" }))).toContain(
      'unknown caller "wbe"',
    );
    expect(failure(() => expect(small).not.toAllow({ from: "wbe", to: "orders", path: "/" }))).toContain(
      'unknown caller "wbe"',
    );
  });

  it("refuses_an_invalid_spec_with_its_errors", () => {
    expect(() =>
      meshOf({
        name: "x",
        trustDomain: "x.example",
        services: { a: { image: "r/a:1", port: 1, timout: "1s" } },
      }),
    ).toThrow(/timout/);
  });
});
