/**
 * The gateway as a mesh member: with its own SVID it calls services over mTLS (gateway → sidecar inbound
 * → app), the service sees the gateway's SPIFFE ID, a server proving another identity is refused, the
 * service's authorization applies to the gateway like to any peer; without an identity (none configured,
 * or not loaded yet) mTLS clusters fail closed with 503 upstream_identity_unavailable and /ready is false
 * until the identity files appear.
 */
import { mkdir } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import {
  sealRuntimeConfig,
  type GatewayRuntimeConfig,
  type SidecarRuntimeConfig,
} from "../../runtime/contract/index.ts";
import { svidFiles, translate } from "../../components/translate/translate.ts";
import { parseSpec } from "../../components/spec/parse.ts";
import { makeCa, tempDir, type TestCa } from "../pki/support.ts";
import {
  localSidecar,
  spiffe,
  startTestSidecar,
  TD,
  until,
  writeIdentity,
  type TestSidecar,
} from "../sidecar/support.ts";
import {
  request,
  startTestGateway,
  startUpstream,
  type TestGateway,
  type Upstream,
} from "../support/gateway.ts";

function translated(allowFrom: string[]): { gateway: GatewayRuntimeConfig; orders: SidecarRuntimeConfig } {
  const r = parseSpec({
    name: "mesh",
    namespace: "shop",
    trustDomain: TD,
    services: {
      orders: { image: "r/orders:1", port: 8080, allow: [{ from: allowFrom }] },
      web: { image: "r/web:1", port: 8080, calls: ["orders"] },
    },
    gateway: {
      hosts: ["127.0.0.1"],
      routes: [
        {
          name: "orders",
          match: { path: "/api/**" },
          to: "orders",
          public: true,
          rateLimit: { requests: 1000, per: "1s" },
        },
        {
          name: "dash",
          match: { path: "/dash" },
          aggregate: { one: { service: "orders", path: "/api/orders/1" } },
          public: true,
          rateLimit: { requests: 1000, per: "1s" },
        },
      ],
    },
  });
  if (!r.ok) throw new Error(r.errors.map((e) => `${e.path}: ${e.message}`).join("\n"));
  const t = translate(r.spec);
  return { gateway: t.runtime.gateway!, orders: t.runtime.sidecars.find((s) => s.name === "orders")! };
}

/** The translated gateway config with static endpoints, its identity files in `dir` (or none). */
function gatewayOn(
  config: GatewayRuntimeConfig,
  endpoints: number[],
  dir: string | null,
): GatewayRuntimeConfig {
  const { hash: _h, ...rest } = config;
  return sealRuntimeConfig<GatewayRuntimeConfig>({
    ...rest,
    svid: dir === null ? null : { ...rest.svid!, ...svidFiles(dir) },
    discovery: {
      kind: "static",
      endpoints: { orders: endpoints.map((port) => ({ host: "127.0.0.1", port })) },
    },
  });
}

let tmp: Awaited<ReturnType<typeof tempDir>>;
let ca: TestCa;
const stops: (() => Promise<void>)[] = [];
beforeAll(async () => {
  tmp = await tempDir("gateway-mesh");
  ca = await makeCa(TD);
});
afterEach(async () => {
  for (const stop of stops.splice(0).reverse()) await stop();
});
afterAll(async () => {
  await tmp?.cleanup();
});

let n = 0;
async function ordersInstance(
  allowFrom: string[],
  identityOf = "orders",
): Promise<{ app: Upstream; sidecar: TestSidecar }> {
  const app = await startUpstream();
  const dir = join(tmp.dir, `orders-${n++}`);
  await writeIdentity(dir, await ca.issuer.issue(spiffe(identityOf)), ca.bundle.toPem());
  const cfg = translated(allowFrom).orders;
  const sidecar = await startTestSidecar(
    localSidecar(identityOf === "orders" ? cfg : { ...cfg, identity: spiffe(identityOf) }, {
      identityDir: dir,
      appPort: app.port,
    }),
  );
  stops.push(async () => {
    await sidecar.drain();
    await app.close();
  });
  return { app, sidecar };
}

async function gateway(
  allowFrom: string[],
  endpoints: number[],
  identity: "files" | "none" | "later",
): Promise<{ gw: TestGateway; dir: string }> {
  const dir = join(tmp.dir, `gateway-${n++}`);
  if (identity === "files")
    await writeIdentity(dir, await ca.issuer.issue(spiffe("gateway")), ca.bundle.toPem());
  const gw = await startTestGateway(
    gatewayOn(translated(allowFrom).gateway, endpoints, identity === "none" ? null : dir),
  );
  stops.push(() => gw.drain());
  return { gw, dir };
}

describe("gateway → service over mTLS", () => {
  it("reaches_the_app_through_the_services_sidecar_with_its_own_identity", async () => {
    const orders = await ordersInstance(["gateway"]);
    const { gw } = await gateway(["gateway"], [orders.sidecar.ports.inbound], "files");
    const r = await request(`${gw.url}/api/orders/1`);
    expect(r.status).toBe(200);
    expect(orders.app.received.at(-1)!.url).toBe("/api/orders/1");
    expect(orders.app.received.at(-1)!.headers["x-meshgate-peer"]).toBe(spiffe("gateway"));
    expect((await fetch(`${gw.adminUrl}/ready`)).status).toBe(200);
    const text = await (await fetch(`${gw.adminUrl}/metrics`)).text();
    expect(text).toMatch(
      new RegExp(`meshgate_cert_expiry_seconds\\{proxy="gateway",identity="${spiffe("gateway")}"\\} \\d+`),
    );
  });

  it("calls_aggregate_parts_over_mtls_too", async () => {
    const orders = await ordersInstance(["gateway"]);
    const { gw } = await gateway(["gateway"], [orders.sidecar.ports.inbound], "files");
    const r = await request(`${gw.url}/dash`);
    expect(r.status).toBe(200);
    expect(JSON.parse(r.body)).toMatchObject({ one: { path: "/api/orders/1", method: "GET" } });
    expect(orders.app.received.at(-1)!.headers["x-meshgate-peer"]).toBe(spiffe("gateway"));
  });

  it("is_subject_to_the_services_authorization", async () => {
    const orders = await ordersInstance(["web"]);
    const { gw } = await gateway(["web"], [orders.sidecar.ports.inbound], "files");
    const r = await request(`${gw.url}/api/orders/1`);
    expect(r.status).toBe(403);
    expect(r.headers["x-meshgate-denied"]).toBe("peer_not_allowed");
    expect(orders.app.received).toHaveLength(0);
  });

  it("refuses_a_server_that_proves_another_identity", async () => {
    const impostor = await ordersInstance(["gateway"], "web");
    const { gw } = await gateway(["gateway"], [impostor.sidecar.ports.inbound], "files");
    const r = await request(`${gw.url}/api/orders/1`);
    expect(r.status).toBe(503);
    expect(r.headers["x-meshgate-error"]).toBe("upstream_connect_failure");
    expect(impostor.app.received).toHaveLength(0);
  });
});

describe("gateway identity reloads", () => {
  // A mesh member's reload naming other identity files: swapped in once they hold a valid identity,
  // refused whole while the serving identity is valid and they do not (as the sidecar's reload is) —
  // swapping a working identity for none fails every mTLS cluster.
  it.each<{ claim: string; files: (dir: string) => Promise<unknown>; accepted: boolean; code?: string }>([
    {
      claim: "refuses_a_reload_naming_identity_files_that_do_not_exist",
      files: async () => {},
      accepted: false,
      code: "E_RT_IDENTITY_FILE",
    },
    {
      claim: "refuses_a_reload_naming_files_that_hold_another_workloads_svid",
      files: async (dir) => writeIdentity(dir, await ca.issuer.issue(spiffe("web")), ca.bundle.toPem()),
      accepted: false,
      code: "E_RT_IDENTITY_MISMATCH",
    },
    {
      claim: "swaps_in_a_reload_naming_other_valid_identity_files",
      files: async (dir) => writeIdentity(dir, await ca.issuer.issue(spiffe("gateway")), ca.bundle.toPem()),
      accepted: true,
    },
  ])("$claim", async ({ files, accepted, code }) => {
    const orders = await ordersInstance(["gateway"]);
    const { gw } = await gateway(["gateway"], [orders.sidecar.ports.inbound], "files");
    expect((await request(`${gw.url}/api/orders/1`)).status).toBe(200);
    const other = join(tmp.dir, `gateway-other-${n++}`);
    await mkdir(other, { recursive: true });
    await files(other);
    const next = gatewayOn(translated(["gateway"]).gateway, [orders.sidecar.ports.inbound], other);
    const r = await gw.reload(JSON.stringify(next));
    expect(r.ok).toBe(accepted);
    if (!accepted) expect(r.ok ? "" : r.error).toContain(code);
    // A new connection (another path through the pool may reuse one; the status is what matters).
    expect((await request(`${gw.url}/api/orders/2`)).status).toBe(200);
    expect((await fetch(`${gw.adminUrl}/ready`)).status).toBe(200);
  });
});

describe("gateway without an identity", () => {
  it("fails_closed_with_503_when_none_is_configured", async () => {
    const orders = await ordersInstance(["gateway"]);
    const { gw } = await gateway(["gateway"], [orders.sidecar.ports.inbound], "none");
    const r = await request(`${gw.url}/api/orders/1`);
    expect(r.status).toBe(503);
    expect(r.headers["x-meshgate-error"]).toBe("upstream_identity_unavailable");
    const dash = await request(`${gw.url}/dash`);
    expect(dash.status).toBe(503);
    expect(dash.headers["x-meshgate-error"]).toBe("upstream_identity_unavailable");
    expect(orders.app.received).toHaveLength(0);
    expect((await fetch(`${gw.adminUrl}/ready`)).status).toBe(200); // nothing to wait for
  });

  it("joins_the_mesh_by_reload_when_its_config_names_identity_files_and_leaves_it_by_the_next", async () => {
    const orders = await ordersInstance(["gateway"]);
    const { gw, dir } = await gateway(["gateway"], [orders.sidecar.ports.inbound], "none");
    expect((await request(`${gw.url}/api/orders/1`)).status).toBe(503);
    expect(await (await fetch(`${gw.adminUrl}/metrics`)).text()).not.toContain(
      "meshgate_cert_expiry_seconds",
    );
    await writeIdentity(dir, await ca.issuer.issue(spiffe("gateway")), ca.bundle.toPem());
    const base = translated(["gateway"]).gateway;
    const member = gatewayOn(base, [orders.sidecar.ports.inbound], dir);
    expect(await gw.reload(JSON.stringify(member))).toMatchObject({ ok: true, hash: member.hash });
    expect(gw.logs.find((l) => l.event === "identity_changed")).toMatchObject({
      identity: spiffe("gateway"),
    });
    const r = await request(`${gw.url}/api/orders/2`);
    expect(r.status).toBe(200);
    expect(orders.app.received.at(-1)?.headers["x-meshgate-peer"]).toBe(spiffe("gateway"));
    expect((await fetch(`${gw.adminUrl}/ready`)).status).toBe(200);
    // A mesh member's identity metrics appear with the identity.
    expect(await (await fetch(`${gw.adminUrl}/metrics`)).text()).toMatch(/^meshgate_cert_expiry_seconds\{/m);
    // Without identity files again: new mTLS connections fail closed (pooled ones are not reused for it).
    const none = gatewayOn(base, [orders.sidecar.ports.inbound], null);
    expect(await gw.reload(JSON.stringify(none))).toMatchObject({ ok: true, hash: none.hash });
    const after = await request(`${gw.url}/api/orders/3`);
    expect(after.status).toBe(503);
    expect(after.headers["x-meshgate-error"]).toBe("upstream_identity_unavailable");
  });

  it("is_not_ready_and_fails_closed_until_its_identity_files_appear", async () => {
    const orders = await ordersInstance(["gateway"]);
    const { gw, dir } = await gateway(["gateway"], [orders.sidecar.ports.inbound], "later");
    expect((await fetch(`${gw.adminUrl}/ready`)).status).toBe(503);
    const before = await request(`${gw.url}/api/orders/1`);
    expect(before.status).toBe(503);
    expect(before.headers["x-meshgate-error"]).toBe("upstream_identity_unavailable");
    await writeIdentity(dir, await ca.issuer.issue(spiffe("gateway")), ca.bundle.toPem());
    await until(async () => (await fetch(`${gw.adminUrl}/ready`)).status === 200, 5000, "gateway ready");
    expect((await request(`${gw.url}/api/orders/1`)).status).toBe(200);
  });
});
