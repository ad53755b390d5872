/**
 * The client address behind trusted proxies: X-Forwarded-For or RFC 7239 Forwarded, the n-th entry from
 * the right for n trusted hops, never a spoofable entry, never something that is not an address — and the
 * chain the gateway forwards upstream (X-Forwarded-For, Forwarded, X-Real-IP).
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { sealRuntimeConfig, type GatewayRuntimeConfig } from "../../runtime/contract/index.ts";
import { parseCidr } from "../../runtime/decide/authorize.ts";
import { clientAddress, forwardedFor, forwardedHeader } from "../../runtime/gateway/headers.ts";
import {
  gatewayConfig,
  request,
  startTestGateway,
  startUpstream,
  type TestGateway,
  type Upstream,
} from "../support/gateway.ts";

const PEER = "10.0.0.9";

describe("forwardedFor parses RFC 7239 for= nodes", () => {
  const rows: [string, string, string[] | null][] = [
    ["reads_a_single_element", "for=192.0.2.60", ["192.0.2.60"]],
    ["reads_elements_in_order", "for=192.0.2.43, for=198.51.100.17", ["192.0.2.43", "198.51.100.17"]],
    ["reads_for_among_other_pairs", "proto=https;for=192.0.2.1;by=203.0.113.43", ["192.0.2.1"]],
    ["is_case_insensitive_in_names", "For=192.0.2.1", ["192.0.2.1"]],
    ["unquotes_and_unbrackets_ipv6", 'for="[2001:db8:cafe::17]"', ["2001:db8:cafe::17"]],
    ["drops_the_port_of_ipv6", 'for="[2001:db8:cafe::17]:4711"', ["2001:db8:cafe::17"]],
    ["drops_the_port_of_ipv4", 'for="192.0.2.43:47011"', ["192.0.2.43"]],
    ["keeps_obfuscated_identifiers_as_non_addresses", "for=_hidden, for=unknown", ["_hidden", "unknown"]],
    ["yields_empty_for_an_element_without_for", "proto=http, for=192.0.2.2", ["", "192.0.2.2"]],
    [
      "tolerates_spaces_around_separators",
      "for=192.0.2.1 ; proto=http ,  for=192.0.2.2",
      ["192.0.2.1", "192.0.2.2"],
    ],
    ["refuses_a_pair_without_equals", "for", null],
    ["refuses_an_unterminated_quote", 'for="192.0.2.1', null],
    ["refuses_an_unquoted_ipv6_with_brackets", "for=[2001:db8::1]", null],
    ["refuses_garbage_between_elements", "for=192.0.2.1 for=192.0.2.2", null],
    ["refuses_an_empty_token_value", "for=;proto=http", null],
  ];
  for (const [name, text, want] of rows) it(name, () => expect(forwardedFor(text)).toEqual(want));
});

describe("clientAddress trusts exactly the configured hops", () => {
  type Row = [string, string | undefined, number, "x-forwarded-for" | "forwarded", string, string];
  const rows: Row[] = [
    ["uses_the_peer_with_no_trusted_hop", "203.0.113.5", 0, "x-forwarded-for", PEER, PEER],
    ["uses_the_peer_without_the_header", undefined, 1, "x-forwarded-for", PEER, PEER],
    [
      "uses_the_last_xff_entry_for_one_hop",
      "6.6.6.6, 203.0.113.5",
      1,
      "x-forwarded-for",
      "203.0.113.5",
      `203.0.113.5, ${PEER}`,
    ],
    [
      "uses_the_second_last_xff_entry_for_two_hops",
      "6.6.6.6, 203.0.113.5, 10.1.1.1",
      2,
      "x-forwarded-for",
      "203.0.113.5",
      `203.0.113.5, 10.1.1.1, ${PEER}`,
    ],
    ["uses_the_peer_when_xff_is_shorter_than_the_hops", "203.0.113.5", 2, "x-forwarded-for", PEER, PEER],
    [
      "uses_the_peer_when_the_trusted_xff_entry_is_not_an_address",
      "unknown",
      1,
      "x-forwarded-for",
      PEER,
      PEER,
    ],
    [
      "uses_the_last_forwarded_for_for_one_hop",
      "for=6.6.6.6, for=203.0.113.5",
      1,
      "forwarded",
      "203.0.113.5",
      `203.0.113.5, ${PEER}`,
    ],
    [
      "reads_ipv6_from_forwarded",
      'for="[2001:db8::7]:443"',
      1,
      "forwarded",
      "2001:db8::7",
      `2001:db8::7, ${PEER}`,
    ],
    ["uses_the_peer_for_an_obfuscated_forwarded_node", "for=_hidden", 1, "forwarded", PEER, PEER],
    ["uses_the_peer_for_a_malformed_forwarded_value", 'for="203.0.113.5', 1, "forwarded", PEER, PEER],
    ["uses_the_peer_when_an_element_lacks_for", "proto=https", 1, "forwarded", PEER, PEER],
  ];
  for (const [name, value, hops, header, client, chain] of rows) {
    it(name, () => {
      const got = clientAddress(value, PEER, hops, header);
      expect(got.client).toBe(client);
      expect(got.forwardedFor).toBe(chain);
    });
  }

  it("forwarded_header_lists_trusted_hops_then_this_hop", () => {
    expect(forwardedHeader(["203.0.113.5", "2001:db8::7"], PEER, "https", "api.example")).toBe(
      `for=203.0.113.5, for="[2001:db8::7]", for=${PEER};proto=https;host=api.example`,
    );
    expect(forwardedHeader([], PEER, "http", undefined)).toBe(`for=${PEER};proto=http`);
  });
});

describe("clientAddress behind trusted proxy ranges (clientIp.trustedProxies)", () => {
  const RANGES = [parseCidr("10.0.0.0/8")!, parseCidr("2001:db8:ff::/48")!];
  type Row = {
    claim: string;
    value: string | undefined;
    peer?: string;
    header?: "x-forwarded-for" | "forwarded";
    client: string;
    chain: string;
    via: boolean;
  };
  it.each<Row>([
    {
      claim: "a peer outside the ranges is the client whatever the header says",
      value: "203.0.113.5",
      peer: "198.51.100.1",
      client: "198.51.100.1",
      chain: "198.51.100.1",
      via: false,
    },
    {
      claim: "behind one trusted proxy the last entry is the client",
      value: "6.6.6.6, 203.0.113.5",
      client: "203.0.113.5",
      chain: `203.0.113.5, ${PEER}`,
      via: true,
    },
    {
      claim: "any number of trusted proxies are walked over, right to left",
      value: "6.6.6.6, 203.0.113.5, 10.1.1.1, 10.2.2.2",
      client: "203.0.113.5",
      chain: `203.0.113.5, 10.1.1.1, 10.2.2.2, ${PEER}`,
      via: true,
    },
    {
      claim: "a spoofed entry left of the first untrusted one is never the client",
      value: "10.9.9.9, 203.0.113.5, 10.1.1.1",
      client: "203.0.113.5",
      chain: `203.0.113.5, 10.1.1.1, ${PEER}`,
      via: true,
    },
    {
      claim: "when every entry is a trusted proxy the leftmost is the client",
      value: "10.3.3.3, 10.1.1.1",
      client: "10.3.3.3",
      chain: `10.3.3.3, 10.1.1.1, ${PEER}`,
      via: true,
    },
    {
      claim: "a trusted peer without the header is the client",
      value: undefined,
      client: PEER,
      chain: PEER,
      via: true,
    },
    {
      claim: "an entry on the walk that is not an address makes the peer the client",
      value: "203.0.113.5, unknown, 10.1.1.1",
      client: PEER,
      chain: PEER,
      via: true,
    },
    {
      claim: "an IPv4-mapped IPv6 peer is matched against IPv4 ranges",
      value: "203.0.113.5",
      peer: "::ffff:10.0.0.9",
      client: "203.0.113.5",
      chain: "203.0.113.5, ::ffff:10.0.0.9",
      via: true,
    },
    {
      claim: "IPv6 proxies and clients are walked in Forwarded",
      value: 'for="[2001:db8::7]:443", for="[2001:db8:ff::1]"',
      header: "forwarded",
      client: "2001:db8::7",
      chain: `2001:db8::7, 2001:db8:ff::1, ${PEER}`,
      via: true,
    },
    {
      claim: "a malformed Forwarded value makes the peer the client",
      value: 'for="203.0.113.5',
      header: "forwarded",
      client: PEER,
      chain: PEER,
      via: true,
    },
  ])("$claim", ({ value, peer, header, client, chain, via }) => {
    const got = clientAddress(value, peer ?? PEER, RANGES, header ?? "x-forwarded-for");
    expect([got.client, got.forwardedFor, got.viaTrustedProxy]).toEqual([client, chain, via]);
  });

  it("a hop count says the request came through a proxy exactly when it is at least 1", () => {
    expect(clientAddress(undefined, PEER, 0).viaTrustedProxy).toBe(false);
    expect(clientAddress(undefined, PEER, 1).viaTrustedProxy).toBe(true);
  });
});

describe("the gateway forwards the client chain behind a trusted proxy", () => {
  let upstream: Upstream;
  const gateways: TestGateway[] = [];
  const echo = (u: Upstream) => u.received[u.received.length - 1]!.headers;

  beforeAll(async () => {
    upstream = await startUpstream();
  });
  afterAll(async () => {
    for (const g of gateways) await g.drain();
    await upstream.close();
  });

  async function gatewayWith(clientIp: Record<string, unknown>) {
    const config = gatewayConfig(
      [{ name: "all", match: { path: "/**" }, to: "app", public: true }],
      { app: { port: upstream.port } },
      { clientIp },
    );
    const gw = await startTestGateway(config);
    gateways.push(gw);
    return gw;
  }

  it("takes_the_client_from_forwarded_when_the_proxies_write_forwarded", async () => {
    const gw = await gatewayWith({ trustedHops: 1, header: "forwarded" });
    const r = await request(`${gw.url}/a`, {
      headers: { forwarded: "for=6.6.6.6, for=203.0.113.5;proto=https", "x-forwarded-for": "7.7.7.7" },
    });
    expect(r.status).toBe(200);
    const seen = echo(upstream);
    expect(seen["x-real-ip"]).toBe("203.0.113.5");
    expect(seen["x-forwarded-for"]).toBe("203.0.113.5, 127.0.0.1");
    expect(seen.forwarded).toMatch(/^for=203\.0\.113\.5, for=127\.0\.0\.1;proto=http;host=/);
  });

  it("ignores_forwarded_when_the_proxies_write_x_forwarded_for", async () => {
    const gw = await gatewayWith({ trustedHops: 1 });
    await request(`${gw.url}/b`, {
      headers: { forwarded: "for=6.6.6.6", "x-forwarded-for": "6.6.6.6, 198.51.100.4" },
    });
    const seen = echo(upstream);
    expect(seen["x-real-ip"]).toBe("198.51.100.4");
    expect(seen["x-forwarded-for"]).toBe("198.51.100.4, 127.0.0.1");
    expect(seen.forwarded).toMatch(/^for=198\.51\.100\.4, for=127\.0\.0\.1;proto=http/);
  });

  it("walks_over_the_trusted_proxy_ranges_to_the_first_untrusted_entry", async () => {
    const gw = await gatewayWith({ trustedProxies: ["127.0.0.0/8", "10.0.0.0/8"] });
    await request(`${gw.url}/r1`, {
      headers: { "x-forwarded-for": "6.6.6.6, 203.0.113.5, 10.1.1.1" },
    });
    const seen = echo(upstream);
    expect(seen["x-real-ip"]).toBe("203.0.113.5");
    expect(seen["x-forwarded-for"]).toBe("203.0.113.5, 10.1.1.1, 127.0.0.1");
  });

  it("ignores_the_header_of_a_connection_from_outside_the_trusted_proxy_ranges", async () => {
    const gw = await gatewayWith({ trustedProxies: ["10.0.0.0/8"] });
    await request(`${gw.url}/r2`, { headers: { "x-forwarded-for": "203.0.113.5" } });
    const seen = echo(upstream);
    expect(seen["x-real-ip"]).toBe("127.0.0.1");
    expect(seen["x-forwarded-for"]).toBe("127.0.0.1");
  });

  it("refuses_a_runtime_config_whose_trusted_proxy_is_not_a_range_and_keeps_serving", async () => {
    const gw = await gatewayWith({ trustedProxies: ["127.0.0.0/8"] });
    const served = gatewayConfig(
      [{ name: "all", match: { path: "/**" }, to: "app", public: true }],
      { app: { port: upstream.port } },
      { clientIp: { trustedProxies: ["127.0.0.0/8"] } },
    );
    const { hash: _h, ...rest } = served;
    const bad = sealRuntimeConfig<GatewayRuntimeConfig>({
      ...rest,
      clientIp: { ...rest.clientIp, trustedProxies: ["127.0.0.0/8", "proxies"] },
    });
    expect(await gw.reload(JSON.stringify(bad))).toMatchObject({
      ok: false,
      code: "E_RT_CONFIG_INVALID",
      error: expect.stringContaining("clientIp.trustedProxies[1]"),
    });
    await request(`${gw.url}/r3`, { headers: { "x-forwarded-for": "203.0.113.8" } });
    expect(echo(upstream)["x-real-ip"]).toBe("203.0.113.8");
  });

  it("falls_back_to_the_peer_when_the_trusted_entry_is_not_an_address", async () => {
    const gw = await gatewayWith({ trustedHops: 1, header: "forwarded" });
    await request(`${gw.url}/c`, { headers: { forwarded: "for=unknown" } });
    const seen = echo(upstream);
    expect(seen["x-real-ip"]).toBe("127.0.0.1");
    expect(seen["x-forwarded-for"]).toBe("127.0.0.1");
  });
});
