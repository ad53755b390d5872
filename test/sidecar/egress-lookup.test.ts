/**
 * Egress name resolution (runtime/net/lookup.ts): a declared DNS name whose answers are loopback,
 * link-local (cloud metadata) or unspecified addresses is not reached — the answers table, the lookup with
 * scripted answers, and the sidecar end to end on 127.0.0.1, where a resolver scripted for the test maps
 * `metadata.test` to the address of a server that must see no connection (plain HTTP, CONNECT and the
 * local port), while `partner.localhost` (loopback by definition, RFC 6761) still reaches it.
 */
import type { LookupAddress } from "node:dns";
import type { Socket } from "node:net";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { createEgressLookup, refusedEgressAddress, type ResolveAll } from "../../runtime/net/lookup.ts";
import { tempDir } from "../pki/support.ts";
import {
  destroyClients,
  dial,
  egressSidecars,
  external,
  httpOutside,
  readToEnd,
  type EgressSidecars,
  type HTTPOutside,
} from "./outside.ts";
import { metricValue } from "./support.ts";

describe("refusedEgressAddress", () => {
  it.each([
    ["127.0.0.1", true],
    ["127.255.3.4", true],
    ["0.0.0.0", true],
    ["0.1.2.3", true],
    ["169.254.169.254", true],
    ["169.254.0.1", true],
    ["::1", true],
    ["::", true],
    ["fe80::1", true],
    ["FEBF::1", true],
    ["::ffff:127.0.0.1", true],
    ["::ffff:169.254.169.254", true],
    ["fd00:ec2::254", true],
    ["FD00:EC2:0::254", true],
    ["64:ff9b::a9fe:a9fe", true],
    ["64:ff9b::7f00:1", true],
    ["64:ff9b::1", true],
    ["64:ff9b::a00:5", false],
    ["fd00:ec2::253", false],
    ["10.0.0.5", false],
    ["192.168.1.1", false],
    ["128.0.0.1", false],
    ["169.255.0.1", false],
    ["93.184.216.34", false],
    ["2001:db8::1", false],
    ["fec0::1", false],
    ["::ffff:10.0.0.1", false],
    ["not-an-address", false],
  ])("%s_is_refused_%s", (address, refused) => {
    expect(refusedEgressAddress(address)).toBe(refused);
  });
});

/** A resolver answering from a table (what a taken-over DNS zone would answer). */
const scripted =
  (answers: Record<string, string[]>): ResolveAll =>
  (hostname, _options, callback) => {
    const list = answers[hostname];
    if (!list)
      return callback(
        Object.assign(new Error(`getaddrinfo ENOTFOUND ${hostname}`), { code: "ENOTFOUND" }),
        [],
      );
    callback(
      null,
      list.map((address): LookupAddress => ({ address, family: address.includes(":") ? 6 : 4 })),
    );
  };

type Answer = { err: (Error & { code?: string }) | null; address: unknown; family?: number | undefined };
const lookupOf = (lookup: ReturnType<typeof createEgressLookup>, hostname: string, all: boolean) =>
  new Promise<Answer>((resolve) =>
    (lookup as unknown as (h: string, o: object, cb: (...a: unknown[]) => void) => void)(
      hostname,
      { all },
      (err, address, family) =>
        resolve({ err: err as Answer["err"], address, family: family as number | undefined }),
    ),
  );

describe("createEgressLookup", () => {
  const lookup = createEgressLookup(
    scripted({
      "metadata.test": ["169.254.169.254"],
      "rebound.test": ["127.0.0.1", "::1"],
      "mixed.test": ["127.0.0.1", "93.184.216.34", "::1", "2001:db8::7"],
      "partner.localhost": ["127.0.0.1"],
      localhost: ["127.0.0.1", "::1"],
      "api.partner.example": ["203.0.113.9"],
    }),
  );

  it.each([
    ["a_name_that_resolves_to_the_metadata_address", "metadata.test", "169.254.169.254"],
    ["a_name_that_resolves_only_to_loopback", "rebound.test", "127.0.0.1, ::1"],
  ])("refuses_%s_naming_the_answers", async (_claim, hostname, answers) => {
    for (const all of [false, true]) {
      const r = await lookupOf(lookup, hostname, all);
      expect(r.err?.code).toBe("E_RT_EGRESS_ADDRESS_REFUSED");
      expect(r.err?.message).toContain(`${hostname} resolved only to ${answers}`);
    }
  });

  it("keeps_only_the_allowed_answers_of_a_mixed_name", async () => {
    expect(await lookupOf(lookup, "mixed.test", false)).toEqual({
      err: null,
      address: "93.184.216.34",
      family: 4,
    });
    expect((await lookupOf(lookup, "mixed.test", true)).address).toEqual([
      { address: "93.184.216.34", family: 4 },
      { address: "2001:db8::7", family: 6 },
    ]);
  });

  it.each([
    ["localhost", "127.0.0.1"],
    ["partner.localhost", "127.0.0.1"],
    ["api.partner.example", "203.0.113.9"],
  ])("resolves_%s_as_usual", async (hostname, address) => {
    expect(await lookupOf(lookup, hostname, false)).toEqual({ err: null, address, family: 4 });
  });

  it("passes_a_resolver_error_on", async () => {
    expect((await lookupOf(lookup, "nowhere.test", false)).err?.code).toBe("ENOTFOUND");
  });
});

// ───────────────────────────── the sidecar, end to end ─────────────────────────────

let tmp: Awaited<ReturnType<typeof tempDir>>;
let sidecars: EgressSidecars;
/** The server the scripted names point at (127.0.0.1): only partner.localhost may reach it. */
let target: HTTPOutside;

beforeAll(async () => {
  tmp = await tempDir("sidecar-egress-lookup");
  sidecars = await egressSidecars(tmp.dir);
  target = await httpOutside();
}, 30_000);
afterEach(async () => {
  destroyClients();
  await sidecars.stopAll();
});
afterAll(async () => {
  await target?.close();
  await tmp?.cleanup();
});

/** A request through the sidecar's proxy port: its status and the JSON error code, if any. */
async function viaProxy(outboundUrl: string, url: string): Promise<{ status: number; code: string | null }> {
  const u = new URL(outboundUrl);
  const c: Socket = dial(Number(u.port));
  c.write(`GET ${url} HTTP/1.1\r\nHost: ${new URL(url).host}\r\nConnection: close\r\n\r\n`);
  const text = (await readToEnd(c)).toString("latin1");
  const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(text)?.[1] ?? 0);
  return { status, code: /"code":"([a-z_]+)"/.exec(text)?.[1] ?? null };
}

describe("the sidecar resolves external names through the egress lookup", () => {
  it("does_not_reach_a_declared_name_that_resolves_to_a_refused_address_by_any_way_in", async () => {
    const lookup = createEgressLookup(
      scripted({ "metadata.test": ["127.0.0.1"], "partner.localhost": ["127.0.0.1"] }),
    );
    const { sidecar, metrics } = await sidecars.start(
      [
        external("meta", "metadata.test", target.port, { localPort: 15301 }),
        external("partner", "partner.localhost", target.port),
      ],
      { externalLookup: lookup },
    );
    const before = target.connections;
    // Plain HTTP: a connect failure before anything is sent.
    expect(
      await viaProxy(sidecar.outboundUrl, `http://metadata.test:${target.port}/latest/meta-data`),
    ).toEqual({
      status: 503,
      code: "upstream_connect_failure",
    });
    // CONNECT: refused as a failed connect.
    const t = dial(Number(new URL(sidecar.outboundUrl).port));
    t.write(`CONNECT metadata.test:${target.port} HTTP/1.1\r\nHost: metadata.test:${target.port}\r\n\r\n`);
    expect((await readToEnd(t)).toString("latin1")).toMatch(
      /^HTTP\/1\.1 502 [^\r]*\r\n[\s\S]*egress_connect_failed/,
    );
    // The local port: the app's connection is closed without a byte.
    const local = dial(sidecar.ports.external.meta!);
    local.write("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    expect((await readToEnd(local)).length).toBe(0);
    expect(target.connections).toBe(before);
    // The reason is logged with its code, each time.
    const refusals = sidecar.logs.filter((l) => l.code === "E_RT_EGRESS_ADDRESS_REFUSED");
    expect(refusals.map((l) => l.event).sort()).toEqual(["egress_error", "egress_error", "upstream_error"]);
    expect(
      metricValue(await metrics(), "meshgate_egress_connections_total", {
        external: "meta",
        outcome: "failed",
      }),
    ).toBe(2);
    // A name under .localhost is loopback by definition, and is reached.
    expect(await viaProxy(sidecar.outboundUrl, `http://partner.localhost:${target.port}/ok`)).toEqual({
      status: 200,
      code: null,
    });
    expect(target.connections).toBe(before + 1);
  });
});
