/**
 * The shop example running on 127.0.0.1 for end-to-end tests: a real gateway (a mesh member with its own
 * SVID, HTTP listener only, rate limits in process, request timeouts of at least 10 s — see
 * generousTimeouts) and a real sidecar per service (mTLS with SVIDs from a
 * CA made here), each in front of a small demo app that answers JSON and calls its declared dependencies
 * through its sidecar — search asks catalog (with its own query string); orders charges payments, reserves
 * inventory and reads the user — forwarding W3C trace context as an instrumented app would. catalog
 * answers 503 to a query containing `flaky`.
 *
 *   const shop = await startShopMesh({ tracing: { otlpEndpoint } });
 *   await shop.traffic(5);           // 4 requests per round, every one asserted 200
 *   await shop.stop();
 */
import http, { type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import { expect } from "vitest";
import { loadSpecFile } from "../../components/spec/load.ts";
import type { MeshSpec } from "../../components/spec/schema.ts";
import { svidFiles, translate } from "../../components/translate/translate.ts";
import type { TranslateResult } from "../../components/translate/ir.ts";
import {
  sealRuntimeConfig,
  type GatewayRuntimeConfig,
  type SidecarRuntimeConfig,
} from "../../runtime/contract/index.ts";
import { makeCa, tempDir, type TestCa } from "../pki/support.ts";
import {
  localSidecar,
  startTestSidecar,
  until,
  writeIdentity,
  type TestSidecar,
} from "../sidecar/support.ts";
import { request, startTestGateway, type TestGateway } from "./gateway.ts";

export const SHOP_HOST = "api.shop.example";

export interface ShopMesh {
  readonly spec: MeshSpec;
  readonly translated: TranslateResult;
  readonly ca: TestCa;
  readonly gateway: TestGateway;
  readonly sidecars: ReadonlyMap<string, TestSidecar>;
  /** Every proxy's admin listener: the gateway's and each sidecar's. */
  readonly targets: readonly { workload: string; kind: "gateway" | "sidecar"; adminUrl: string }[];
  /**
   * Rounds of traffic, each four requests at once (all asserted 200): a search (gateway → search →
   * catalog, mirrored to search-next), a product list (→ catalog or catalog-v2), a partner stock lookup
   * with an API key (→ inventory) and a partner bulk order (→ orders → payments, inventory, users).
   */
  traffic(rounds: number, headers?: Record<string, string>): Promise<void>;
  stop(): Promise<void>;
}

export interface ShopMeshOptions {
  /** Export spans of every proxy (sampling 1) to this OTLP/HTTP endpoint. */
  readonly tracing?: { readonly otlpEndpoint: string };
  /** Lifetime of the SVIDs. @default 10 minutes */
  readonly svidTtlMs?: number;
  /**
   * Where the spec's external destinations are, for the sidecars that reach them (plain, no TLS
   * origination): a server on 127.0.0.1 instead of api.stripe.com, so that nothing leaves the machine.
   */
  readonly externals?: Readonly<Record<string, { readonly host: string; readonly port: number }>>;
}

const listen = async (server: http.Server) => {
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  return (server.address() as AddressInfo).port;
};

const json = (res: ServerResponse, status: number, body: unknown) => {
  const text = JSON.stringify(body);
  res.writeHead(status, { "content-type": "application/json", "content-length": Buffer.byteLength(text) });
  res.end(text);
};

const TRACE_HEADERS = ["traceparent", "tracestate"];

/** A call from an app through its sidecar's outbound port, carrying the incoming trace context. */
function callThrough(
  outbound: number,
  service: string,
  method: string,
  path: string,
  incoming: IncomingMessage,
): Promise<number> {
  const headers: Record<string, string> = { host: service };
  for (const h of TRACE_HEADERS) {
    const v = incoming.headers[h];
    if (typeof v === "string") headers[h] = v;
  }
  return new Promise((resolve) => {
    const req = http.request(
      { host: "127.0.0.1", port: outbound, method, path, headers, agent: false },
      (res) => {
        res.resume();
        res.on("end", () => resolve(res.statusCode ?? 0));
      },
    );
    req.on("error", () => resolve(0));
    req.end(method === "POST" ? "{}" : undefined);
  });
}

function demoApp(name: string, outbound: () => number) {
  return (req: IncomingMessage, res: ServerResponse) => {
    req.resume();
    req.on("end", async () => {
      const calls: Record<string, number> = {};
      const call = (service: string, method: string, path: string) =>
        callThrough(outbound(), service, method, path, req).then((s) => (calls[service] = s));
      const query = (req.url ?? "").includes("?") ? (req.url ?? "").slice(req.url!.indexOf("?")) : "";
      // catalog fails a query containing "flaky" with 503 (the callers' sidecars retry it)
      if (name === "catalog" && query.includes("flaky"))
        return json(res, 503, { service: name, error: "flaky" });
      if (name === "search" || name === "search-next") await call("catalog", "GET", `/products${query}`);
      if (name === "orders") {
        await call("payments", "POST", "/payments");
        await call("inventory", "POST", "/inventory/reserve/sku-1");
        await call("users", "GET", "/users/7");
      }
      json(res, 200, { service: name, path: req.url, calls });
    });
  };
}

/** Services in an order where every callee starts before its callers (a sidecar needs its peers' ports). */
function startOrder(s: MeshSpec): string[] {
  const order: string[] = [];
  const visit = (n: string) => {
    if (order.includes(n)) return;
    for (const c of s.services[n]!.calls) if (s.services[c]) visit(c); // external destinations start nothing
    order.push(n);
  };
  for (const n of Object.keys(s.services).sort()) visit(n);
  return order;
}

/** The shortest request and per-try timeout the harness lets a proxy apply. */
const MIN_TIMEOUT_MS = 10_000;

/**
 * The config with every request and per-try timeout (`timeoutMs`, `perTryTimeoutMs`; not health checks)
 * raised to MIN_TIMEOUT_MS: the shop's 300–500 ms per-try budgets are for production; on a CI machine
 * whose cores other test files keep busy, the first requests (TLS handshakes, cold code) can exceed them
 * and answer 504, which these tests are not about.
 */
function generousTimeouts<T>(value: T): T {
  if (Array.isArray(value)) return value.map((v: unknown) => generousTimeouts(v)) as T;
  if (typeof value !== "object" || value === null) return value;
  const o = value as Record<string, unknown>;
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(o))
    out[k] =
      (k === "timeoutMs" || k === "perTryTimeoutMs") && typeof v === "number" && !("intervalMs" in o)
        ? Math.max(v, MIN_TIMEOUT_MS)
        : generousTimeouts(v);
  return out as T;
}

function withTracing<C extends GatewayRuntimeConfig | SidecarRuntimeConfig>(
  c: Omit<C, "hash">,
  tracing: ShopMeshOptions["tracing"],
): Omit<C, "hash"> {
  if (!tracing) return c;
  return {
    ...c,
    telemetry: {
      ...c.telemetry,
      tracing: { enabled: true, sampling: 1, otlpEndpoint: tracing.otlpEndpoint },
    },
  };
}

export async function startShopMesh(o: ShopMeshOptions = {}): Promise<ShopMesh> {
  const loaded = await loadSpecFile(new URL("../../examples/shop/mesh.yaml", import.meta.url).pathname);
  if (!loaded.ok) throw new Error("the shop spec is invalid");
  const spec = loaded.spec;
  const translated = translate(spec);
  const ca = await makeCa(spec.trustDomain);
  const tmp = await tempDir("shop-mesh");
  const sidecars = new Map<string, TestSidecar>();
  const apps: http.Server[] = [];
  let gateway: TestGateway | null = null;
  const stop = async () => {
    await gateway?.drain();
    for (const s of [...sidecars.values()].reverse()) await s.drain();
    for (const a of apps) {
      a.closeAllConnections();
      await new Promise<void>((r) => a.close(() => r()));
    }
    await tmp.cleanup();
  };
  try {
    const identity = async (workload: string) => {
      const dir = join(tmp.dir, workload);
      const spiffeId = translated.infra.identities.find((i) => i.name === workload)!.spiffeId;
      const svid = await ca.issuer.issue(spiffeId, { ttlMs: o.svidTtlMs ?? 10 * 60_000 });
      await writeIdentity(dir, svid, ca.bundle.toPem());
      return dir;
    };
    for (const name of startOrder(spec)) {
      let outbound = 0;
      const app = http.createServer(demoApp(name, () => outbound));
      apps.push(app);
      const appPort = await listen(app);
      const config = translated.runtime.sidecars.find((c) => c.name === name)!;
      const endpoints = Object.fromEntries(
        spec.services[name]!.calls.flatMap((c) =>
          spec.services[c] ? [[c, [sidecars.get(c)!.ports.inbound]]] : [],
        ),
      );
      const identityDir = await identity(name);
      const sidecar = await startTestSidecar(
        localSidecar(config, {
          identityDir,
          appPort,
          endpoints,
          edit: (c) =>
            generousTimeouts(
              withTracing<SidecarRuntimeConfig>(
                {
                  ...c,
                  outbound: {
                    ...c.outbound,
                    external: c.outbound.external.map((e) => {
                      const at = o.externals?.[e.name];
                      if (at)
                        return {
                          ...e,
                          ...at,
                          tls: "passthrough" as const,
                          ca: null,
                          clientCertificate: null,
                        };
                      // A client certificate (a Kubernetes Secret's path in the config): the service's own
                      // SVID files here, which are for client authentication too.
                      return e.clientCertificate === null
                        ? e
                        : {
                            ...e,
                            clientCertificate: {
                              certFile: join(identityDir, "svid.pem"),
                              keyFile: join(identityDir, "svid-key.pem"),
                            },
                          };
                    }),
                  },
                },
                o.tracing,
              ),
            ),
        }),
      );
      outbound = sidecar.ports.outbound;
      sidecars.set(name, sidecar);
    }
    const { hash: _h, ...rest } = translated.runtime.gateway!;
    gateway = await startTestGateway(
      sealRuntimeConfig<GatewayRuntimeConfig>(
        generousTimeouts(
          withTracing<GatewayRuntimeConfig>(
            {
              ...rest,
              listeners: rest.listeners.filter((l) => l.protocol === "http"),
              svid: { ...rest.svid!, ...svidFiles(await identity("gateway")) },
              discovery: {
                kind: "static",
                endpoints: Object.fromEntries(
                  [...sidecars].map(([name, s]) => [name, [{ host: "127.0.0.1", port: s.ports.inbound }]]),
                ),
              },
              // One local gateway: limits in process (the shop's Redis store is a cluster address).
              rateLimitStore: { kind: "local", replicas: 1 },
            },
            o.tracing,
          ),
        ),
      ),
    );
    const gw = gateway;
    await until(async () => (await fetch(`${gw.adminUrl}/ready`)).status === 200, 10_000, "gateway ready");
  } catch (e) {
    await stop();
    throw e;
  }
  const gw = gateway;
  let seq = 0;
  const traffic = async (rounds: number, extra: Record<string, string> = {}) => {
    for (let i = 0; i < rounds; i++) {
      const n = seq++;
      const results = await Promise.all([
        // unique queries: these routes cache, and a cache hit would not reach the services
        request(`${gw.url}/api/search?q=t${n}`, { headers: { host: SHOP_HOST, ...extra } }),
        request(`${gw.url}/api/products?page=${n}`, { headers: { host: SHOP_HOST, ...extra } }),
        request(`${gw.url}/partner/stock/sku-${n}`, {
          headers: { host: SHOP_HOST, "x-api-key": "demo-key-acme-retail", ...extra },
        }),
        request(`${gw.url}/partner/orders`, {
          method: "POST",
          headers: {
            host: SHOP_HOST,
            "x-api-key": "demo-key-globex",
            "x-forwarded-for": "203.0.113.9", // the partner route admits 203.0.113.0/24 only
            "content-type": "application/json",
            ...extra,
          },
          body: JSON.stringify({ ref: `r-${n}` }),
        }),
      ]);
      expect(results.map((r) => r.status)).toEqual([200, 200, 200, 200]);
      const order = JSON.parse(results[3]!.body) as { calls: Record<string, number> };
      expect(order.calls).toEqual({ payments: 200, inventory: 200, users: 200 });
    }
  };
  return {
    spec,
    translated,
    ca,
    gateway: gw,
    sidecars,
    targets: [
      { workload: "gateway", kind: "gateway", adminUrl: gw.adminUrl },
      ...[...sidecars].map(([workload, s]) => ({ workload, kind: "sidecar" as const, adminUrl: s.adminUrl })),
    ],
    traffic,
    stop,
  };
}
