/**
 * runtime/contract/restart.ts: which gateway listeners a reload adds, removes and moves to another port,
 * and which changes no reload applies because a kept socket or the proxy's start set them up. Every bound setting is named when it changes;
 * everything a reload swaps (routes, clusters, certificates, per-request limits, the sidecar's identity
 * files and rules) passes. The proxies' own tests
 * (test/gateway/operations.test.ts, test/sidecar/process.test.ts) check the refusal on real sockets.
 */
import { describe, expect, it } from "vitest";
import type { GatewayRuntimeConfig, SidecarRuntimeConfig } from "../../runtime/contract/index.ts";
import {
  gatewayListenerChanges,
  gatewayRestartFields,
  refuseRestartFields,
  sidecarLocalPortChanges,
  sidecarRestartFields,
  type ListenerChanges,
  type LocalPortChanges,
} from "../../runtime/contract/restart.ts";
import { gatewayConfig } from "../support/gateway.ts";
import { meshConfigs } from "../sidecar/support.ts";

const PUBLIC = { public: true, rateLimit: { requests: 100, per: "1s", scope: "replica" } };
const gateway: GatewayRuntimeConfig = (() => {
  const c = gatewayConfig([{ name: "v1", match: { path: "/v1/**" }, to: "app", ...PUBLIC }], {
    app: { port: 8080 },
  });
  return {
    ...c,
    listeners: [
      ...c.listeners,
      {
        name: "edge",
        port: 8443,
        protocol: "https",
        http2: true,
        proxyProtocol: true,
        proxyProtocolSources: ["10.0.0.0/16"],
        tls: {
          minVersion: "TLSv1.2",
          certificates: [{ hosts: ["a.example"], certFile: "/c/a.crt", keyFile: "/c/a.key" }],
        },
      },
    ],
  };
})();
const web = gateway.listeners[0]!.name;
type G = GatewayRuntimeConfig;
const NONE: ListenerChanges = { added: [], removed: [], moved: [] };
const editEdge =
  (f: (l: G["listeners"][number]) => G["listeners"][number]) =>
  (c: G): G => ({
    ...c,
    listeners: c.listeners.map((l) => (l.name === "edge" ? f(l) : l)),
  });

describe("gateway reloads: listeners added, removed and moved apply; a kept socket's settings do not", () => {
  it.each<{ claim: string; edit: (c: G) => G; changes?: Partial<ListenerChanges>; fields?: string[] }>([
    { claim: "an identical config changes nothing", edit: (c) => c },
    {
      claim: "routes, clusters and per-request limits swap without touching a listener",
      edit: (c) => ({
        ...c,
        routes: c.routes.map((r) => ({ ...r, name: `${r.name}-renamed` })),
        clusters: [],
        limits: { ...c.limits, maxBodyBytes: c.limits.maxBodyBytes + 1, drainTimeoutMs: 1 },
      }),
    },
    {
      claim: "rotated certificate files reload in place (a listener's certificates are not bound)",
      edit: editEdge((l) => ({
        ...l,
        tls: {
          ...l.tls!,
          certificates: [{ hosts: ["b.example"], certFile: "/c/b.crt", keyFile: "/c/b.key" }],
        },
      })),
    },
    {
      claim: "a renamed listener is one removed and one added (a new socket), applied by the reload",
      edit: (c) => ({
        ...c,
        listeners: c.listeners.map((l) => (l.name === "edge" ? { ...l, name: "edge2" } : l)),
      }),
      changes: { added: ["edge2"], removed: ["edge"] },
    },
    {
      claim: "a listener moved to another port is bound anew there, with whatever else changed",
      edit: editEdge((l) => ({ ...l, port: 9443, http2: false, proxyProtocolSources: ["10.0.1.0/24"] })),
      changes: { moved: ["edge"] },
    },
    {
      claim: "narrowing the PROXY protocol sources of a kept socket is named (never reported as applied)",
      edit: editEdge((l) => ({ ...l, proxyProtocolSources: ["10.0.1.0/24"] })),
      fields: ["listeners.edge.proxyProtocolSources"],
    },
    {
      claim: "turning the PROXY protocol off on a kept socket is named, with its sources",
      edit: editEdge(({ proxyProtocol: _p, proxyProtocolSources: _s, ...l }) => l),
      fields: ["listeners.edge.proxyProtocol", "listeners.edge.proxyProtocolSources"],
    },
    {
      claim: "a kept socket's protocol, HTTP/2 and TLS minimum version are each named",
      edit: editEdge((l) => ({ ...l, protocol: "http", http2: false, tls: null })),
      fields: ["listeners.edge.protocol", "listeners.edge.http2", "listeners.edge.tls.minVersion"],
    },
    {
      claim: "the HTTP parser limits and the connection limit every kept listener was created with are named",
      edit: (c) => ({
        ...c,
        limits: {
          ...c.limits,
          maxHeaderBytes: 1024,
          headerTimeoutMs: 1,
          requestTimeoutMs: 1,
          idleTimeoutMs: 1,
          maxConnections: 1,
        },
      }),
      fields: [
        "limits.maxHeaderBytes",
        "limits.headerTimeoutMs",
        "limits.requestTimeoutMs",
        "limits.idleTimeoutMs",
        "limits.maxConnections",
      ],
    },
    {
      claim:
        "the first client-certificate provider is named (kept listeners must start requesting certificates)",
      edit: (c) => ({
        ...c,
        auth: { ...c.auth, clientCert: [{ name: "p", caFile: "/ca.pem", subjects: [], sans: [] }] },
      }),
      fields: ["auth.clientCert (first provider added)"],
    },
    {
      claim: "the admin port and the gateway's mesh identity are named",
      edit: (c) => ({
        ...c,
        admin: { port: c.admin.port + 1 },
        identity: "spiffe://other.example/ns/x/sa/gw",
        trustDomain: "other.example",
      }),
      fields: ["admin.port", "identity", "trustDomain"],
    },
  ])("$claim", ({ edit, changes = {}, fields = [] }) => {
    expect(gatewayListenerChanges(gateway, edit(gateway))).toEqual({ ...NONE, ...changes });
    expect(gatewayRestartFields(gateway, edit(gateway))).toEqual(fields);
    expect(gatewayListenerChanges(edit(gateway), edit(gateway))).toEqual(NONE);
    expect(gatewayRestartFields(edit(gateway), edit(gateway))).toEqual([]);
  });

  it("new limits with every listener moved need no restart: no socket keeps them", () => {
    const edited: G = {
      ...gateway,
      listeners: gateway.listeners.map((l) => ({ ...l, port: l.port + 1000 })),
      limits: { ...gateway.limits, maxHeaderBytes: 1024 },
    };
    expect(gatewayRestartFields(gateway, edited)).toEqual([]);
    expect(gatewayListenerChanges(gateway, edited).moved).toEqual([web, "edge"]);
  });

  it("a second client-certificate provider added to the first reloads (certificates are already requested)", () => {
    const one: G = {
      ...gateway,
      auth: { ...gateway.auth, clientCert: [{ name: "p", caFile: "/ca.pem", subjects: [], sans: [] }] },
    };
    const two: G = {
      ...one,
      auth: {
        ...one.auth,
        clientCert: [...one.auth.clientCert, { name: "q", caFile: "/q.pem", subjects: [], sans: [] }],
      },
    };
    expect(gatewayRestartFields(one, two)).toEqual([]);
    expect(gatewayRestartFields(two, gateway)).toEqual(["auth.clientCert (last provider removed)"]);
  });

  it(`names the fields and the fix in the refusal (listener ${web} untouched)`, () => {
    expect(() => refuseRestartFields("gateway", [])).not.toThrow();
    expect(() => refuseRestartFields("gateway", ["listeners.edge.port", "admin.port"])).toThrow(
      expect.objectContaining({
        code: "E_RT_RELOAD_RESTART_REQUIRED",
        message: expect.stringMatching(/listeners\.edge\.port, admin\.port.*restart the gateway/),
      }),
    );
  });
});

type S = SidecarRuntimeConfig;
const sidecar: S = (() => {
  const c = meshConfigs({
    web: { image: "r/web:1", port: 8080, calls: ["orders"] },
    orders: { image: "r/orders:1", port: 8080, allow: [{ from: ["web"] }] },
  }).find((s) => s.name === "web")!;
  return {
    ...c,
    outbound: {
      ...c.outbound,
      services: c.outbound.services.map((s) => ({ ...s, localPort: 7001 })),
    },
  };
})();
const editService =
  (f: (s: S["outbound"]["services"][number]) => S["outbound"]["services"][number]) =>
  (c: S): S => ({
    ...c,
    outbound: { ...c.outbound, services: c.outbound.services.map(f) },
  });

const NO_LOCAL: LocalPortChanges = { added: [], removed: [], moved: [] };

describe("sidecar reloads: local ports apply; what else only a restart applies", () => {
  it("the config under test has a service with a local port", () => {
    expect(sidecar.outbound.services.map((s) => [s.service, s.localPort])).toEqual([["orders", 7001]]);
  });

  it.each<{ claim: string; edit: (c: S) => S; fields: string[] }>([
    { claim: "an identical config needs no restart", edit: (c) => c, fields: [] },
    {
      claim: "authorization rules, the app port, timeouts and identity files reload",
      edit: (c) => ({
        ...c,
        inbound: {
          ...c.inbound,
          appPort: c.inbound.appPort + 1,
          authz: { default: "deny", rules: [] },
          limits: { ...c.inbound.limits, maxBodyBytes: 1 },
        },
        svid: { ...c.svid, certFile: "/elsewhere/svid.pem" },
        outbound: { ...c.outbound, services: c.outbound.services.map((s) => ({ ...s, timeoutMs: 1 })) },
      }),
      fields: [],
    },
    {
      claim: "permissive to strict is named (plaintext must stop, so it is never reported as applied)",
      edit: (c) => ({ ...c, mtls: c.mtls === "strict" ? "permissive" : "strict" }),
      fields: ["mtls"],
    },
    {
      claim: "the inbound port and its parser limits are named",
      edit: (c) => ({
        ...c,
        inbound: {
          ...c.inbound,
          port: c.inbound.port + 1,
          limits: { ...c.inbound.limits, maxHeaderBytes: 1024, headerTimeoutMs: 1 },
        },
      }),
      fields: ["inbound.port", "inbound.limits.maxHeaderBytes", "inbound.limits.headerTimeoutMs"],
    },
    {
      claim: "the outbound port and the admin port are named",
      edit: (c) => ({ ...c, outbound: { ...c.outbound, port: c.outbound.port + 1 }, admin: { port: 1 } }),
      fields: ["outbound.port", "admin.port"],
    },
  ])("$claim", ({ edit, fields }) => {
    expect(sidecarRestartFields(sidecar, edit(sidecar))).toEqual(fields);
  });

  it.each<{ claim: string; edit: (c: S) => S; changes: Partial<LocalPortChanges> }>([
    { claim: "an identical config changes no local port", edit: (c) => c, changes: {} },
    {
      claim: "a service's local port changed is moved by the reload (bound anew, the old one closed)",
      edit: editService((s) => ({ ...s, localPort: 7002 })),
      changes: { moved: ["orders"] },
    },
    {
      claim: "a service's local port removed is closed by the reload",
      edit: editService((s) => ({ ...s, localPort: null })),
      changes: { removed: ["orders"] },
    },
  ])("$claim", ({ edit, changes }) => {
    expect(sidecarLocalPortChanges(sidecar, edit(sidecar))).toEqual({ ...NO_LOCAL, ...changes });
    expect(sidecarRestartFields(sidecar, edit(sidecar))).toEqual([]);
  });

  it("a local port added to a service that had none is bound by the reload", () => {
    const none = editService((s) => ({ ...s, localPort: null }))(sidecar);
    expect(sidecarLocalPortChanges(none, sidecar)).toEqual({ ...NO_LOCAL, added: ["orders"] });
    expect(sidecarRestartFields(none, sidecar)).toEqual([]);
  });
});
