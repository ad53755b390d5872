/** Endpoints from DNS: the cluster name resolves through the system resolver and is re-resolved later. */
import http from "node:http";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { sealRuntimeConfig, type GatewayRuntimeConfig } from "../../runtime/contract/index.ts";
import { gatewayConfig, request, startTestGateway, type TestGateway } from "../support/gateway.ts";

let upstream: http.Server;
let gw: TestGateway;

beforeAll(async () => {
  // Dual-stack, so whichever address "localhost" resolves to (127.0.0.1 or ::1) reaches it.
  upstream = http.createServer((req, res) => res.end(`dns ${req.url}`));
  await new Promise<void>((r) => upstream.listen(0, "::", r));
  const port = (upstream.address() as AddressInfo).port;
  const base = gatewayConfig(
    [{ name: "d", match: { path: "/d" }, to: "app", public: true, rateLimit: { requests: 1000, per: "1s" } }],
    { app: { port } },
  );
  const { hash: _h, ...rest } = base;
  const config = sealRuntimeConfig<GatewayRuntimeConfig>({
    ...rest,
    discovery: { kind: "dns", template: "localhost", refreshMs: 1000 },
    clusters: rest.clusters.map((c) => ({ ...c, port })),
  });
  gw = await startTestGateway(config);
});

afterAll(async () => {
  await gw.drain();
  upstream.close();
});

describe("DNS discovery", () => {
  it("resolves_the_cluster_name_and_forwards_to_it", async () => {
    for (let i = 0; i < 5; i++)
      expect(await request(`${gw.url}/d`)).toMatchObject({ status: 200, body: "dns /d" });
  });
});
