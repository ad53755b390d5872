/**
 * runtime/contract/restart.ts: which gateway listeners a reload adds, removes, moves to another port and
 * rebuilds on their kept socket (a new connection stack), and which changes no reload applies because the
 * proxy's start set them up. Every such setting is named when it changes;
 * everything a reload swaps (routes, clusters, certificates, per-request limits, the sidecar's identity
 * files and rules) passes. The proxies' own tests
 * (test/gateway/operations.test.ts, test/sidecar/process.test.ts) check the refusal on real sockets.
 */
import { describe, expect, it } from "vitest";
import type { GatewayRuntimeConfig, SidecarRuntimeConfig } from "../../runtime/contract/index.ts";
import {
  gatewayListenerChanges,
  identityChanged,
  refuseRestartFields,
  sidecarListenerChanges,
  restartFields,
  sidecarLocalPortChanges,
  type ListenerChanges,
  type LocalPortChanges,
  type SidecarListenerChanges,
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
const NONE: ListenerChanges = { added: [], removed: [], moved: [], rebuilt: [], settings: [] };
const editEdge =
  (f: (l: G["listeners"][number]) => G["listeners"][number]) =>
  (c: G): G => ({
    ...c,
    listeners: c.listeners.map((l) => (l.name === "edge" ? f(l) : l)),
  });

describe("gateway reloads: listeners added, removed, moved and rebuilt on their socket apply; the admin port and identity do not", () => {
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
      claim: "narrowing the PROXY protocol sources of a kept socket rebuilds that listener only, naming why",
      edit: editEdge((l) => ({ ...l, proxyProtocolSources: ["10.0.1.0/24"] })),
      changes: { rebuilt: ["edge"], settings: ["listeners.edge.proxyProtocolSources"] },
    },
    {
      claim: "turning the PROXY protocol off on a kept socket rebuilds it, naming the option and its sources",
      edit: editEdge(({ proxyProtocol: _p, proxyProtocolSources: _s, ...l }) => l),
      changes: {
        rebuilt: ["edge"],
        settings: ["listeners.edge.proxyProtocol", "listeners.edge.proxyProtocolSources"],
      },
    },
    {
      claim: "a kept socket's protocol, HTTP/2 and TLS minimum version are each named in its rebuild",
      edit: editEdge((l) => ({ ...l, protocol: "http", http2: false, tls: null })),
      changes: {
        rebuilt: ["edge"],
        settings: ["listeners.edge.protocol", "listeners.edge.http2", "listeners.edge.tls.minVersion"],
      },
    },
    {
      claim: "the HTTP parser and timeout limits every listener is built with rebuild every kept listener",
      edit: (c) => ({
        ...c,
        limits: {
          ...c.limits,
          maxHeaderBytes: 1024,
          headerTimeoutMs: 1,
          requestTimeoutMs: 1,
          idleTimeoutMs: 1,
        },
      }),
      changes: {
        rebuilt: [web, "edge"],
        settings: [
          "limits.maxHeaderBytes",
          "limits.headerTimeoutMs",
          "limits.requestTimeoutMs",
          "limits.idleTimeoutMs",
        ],
      },
    },
    {
      claim: "the connection limit rebuilds nothing: it is set on the serving sockets",
      edit: (c) => ({ ...c, limits: { ...c.limits, maxConnections: 1 } }),
    },
    {
      claim:
        "the first client-certificate provider rebuilds every kept listener (they must request certificates)",
      edit: (c) => ({
        ...c,
        auth: { ...c.auth, clientCert: [{ name: "p", caFile: "/ca.pem", subjects: [], sans: [] }] },
      }),
      changes: { rebuilt: [web, "edge"], settings: ["auth.clientCert (first provider added)"] },
    },
    {
      claim: "a listener's own change and a shared one are named once each, the listener rebuilt once",
      edit: (c) =>
        editEdge((l) => ({ ...l, http2: false }))({ ...c, limits: { ...c.limits, maxHeaderBytes: 1024 } }),
      changes: {
        rebuilt: [web, "edge"],
        settings: ["listeners.edge.http2", "limits.maxHeaderBytes"],
      },
    },
    {
      claim: "the admin port is named; the gateway's mesh identity reloads (a new identity source)",
      edit: (c) => ({
        ...c,
        admin: { port: c.admin.port + 1 },
        identity: "spiffe://other.example/ns/x/sa/gw",
        trustDomain: "other.example",
      }),
      fields: ["admin.port"],
    },
  ])("$claim", ({ edit, changes = {}, fields = [] }) => {
    expect(gatewayListenerChanges(gateway, edit(gateway))).toEqual({ ...NONE, ...changes });
    expect(restartFields(gateway, edit(gateway))).toEqual(fields);
    expect(gatewayListenerChanges(edit(gateway), edit(gateway))).toEqual(NONE);
    expect(restartFields(edit(gateway), edit(gateway))).toEqual([]);
  });

  it("new limits with every listener moved rebuild nothing: every socket is new", () => {
    const edited: G = {
      ...gateway,
      listeners: gateway.listeners.map((l) => ({ ...l, port: l.port + 1000 })),
      limits: { ...gateway.limits, maxHeaderBytes: 1024 },
    };
    expect(restartFields(gateway, edited)).toEqual([]);
    expect(gatewayListenerChanges(gateway, edited)).toEqual({ ...NONE, moved: [web, "edge"] });
  });

  it("a second client-certificate provider rebuilds nothing (certificates are already requested); removing the last does", () => {
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
    expect(gatewayListenerChanges(one, two)).toEqual(NONE);
    expect(gatewayListenerChanges(two, gateway)).toEqual({
      ...NONE,
      rebuilt: [web, "edge"],
      settings: ["auth.clientCert (last provider removed)"],
    });
    expect(restartFields(two, gateway)).toEqual([]);
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

/** A sidecar config with other rules, app port and body limit: what a reload swaps as state. */
const rulesAndAppPort = (c: S): S => ({
  ...c,
  inbound: {
    ...c.inbound,
    appPort: c.inbound.appPort + 1,
    authz: { default: "deny", rules: [] },
    limits: { ...c.inbound.limits, maxBodyBytes: 1 },
  },
});

const NO_LOCAL: LocalPortChanges = { added: [], removed: [], moved: [] };

describe("sidecar reloads: the mode, limits and ports apply; the admin port only by a restart", () => {
  it("the config under test has a service with a local port", () => {
    expect(sidecar.outbound.services.map((s) => [s.service, s.localPort])).toEqual([["orders", 7001]]);
  });

  it.each<{ claim: string; edit: (c: S) => S; fields: string[] }>([
    { claim: "an identical config needs no restart", edit: (c) => c, fields: [] },
    {
      claim: "authorization rules, the app port, timeouts and identity files reload",
      edit: (c) => ({
        ...rulesAndAppPort(c),
        svid: { ...c.svid, certFile: "/elsewhere/svid.pem" },
        outbound: { ...c.outbound, services: c.outbound.services.map((s) => ({ ...s, timeoutMs: 1 })) },
      }),
      fields: [],
    },
    {
      claim: "the mode, the inbound port and its parser limits, the outbound port reload",
      edit: (c) => ({
        ...c,
        mtls: c.mtls === "strict" ? "permissive" : "strict",
        inbound: {
          ...c.inbound,
          port: c.inbound.port + 1,
          limits: { ...c.inbound.limits, maxHeaderBytes: 1024, headerTimeoutMs: 1 },
        },
        outbound: { ...c.outbound, port: c.outbound.port + 1 },
      }),
      fields: [],
    },
    {
      claim: "the admin port is named",
      edit: (c) => ({ ...c, admin: { port: 1 } }),
      fields: ["admin.port"],
    },
  ])("$claim", ({ edit, fields }) => {
    expect(restartFields(sidecar, edit(sidecar))).toEqual(fields);
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
    expect(restartFields(sidecar, edit(sidecar))).toEqual([]);
  });

  it.each<{ claim: string; edit: (c: S) => S; changes: Partial<SidecarListenerChanges> }>([
    { claim: "an identical config moves and rebuilds nothing", edit: (c) => c, changes: {} },
    {
      claim: "authorization rules, the app port and body limits rebuild no listener",
      edit: rulesAndAppPort,
      changes: {},
    },
    {
      claim: "the mode rebuilds the inbound stack (plaintext must start or stop on the kept socket)",
      edit: (c) => ({ ...c, mtls: c.mtls === "strict" ? "permissive" : "strict" }),
      changes: { inboundSettings: ["mtls"] },
    },
    {
      claim: "the inbound parser limits rebuild the inbound stack, each named",
      edit: (c) => ({
        ...c,
        inbound: { ...c.inbound, limits: { ...c.inbound.limits, maxHeaderBytes: 1024, headerTimeoutMs: 1 } },
      }),
      changes: { inboundSettings: ["inbound.limits.maxHeaderBytes", "inbound.limits.headerTimeoutMs"] },
    },
    {
      claim: "the inbound and outbound ports move (bound anew)",
      edit: (c) => ({
        ...c,
        inbound: { ...c.inbound, port: c.inbound.port + 1 },
        outbound: { ...c.outbound, port: c.outbound.port + 1 },
      }),
      changes: { moved: ["inbound", "outbound"] },
    },
  ])("$claim", ({ edit, changes }) => {
    expect(sidecarListenerChanges(sidecar, edit(sidecar))).toEqual({
      moved: [],
      inboundSettings: [],
      ...changes,
    });
    expect(sidecarListenerChanges(edit(sidecar), edit(sidecar))).toEqual({ moved: [], inboundSettings: [] });
  });

  it("a local port added to a service that had none is bound by the reload", () => {
    const none = editService((s) => ({ ...s, localPort: null }))(sidecar);
    expect(sidecarLocalPortChanges(none, sidecar)).toEqual({ ...NO_LOCAL, added: ["orders"] });
    expect(restartFields(none, sidecar)).toEqual([]);
  });
});

describe("identity changes: a new identity source for either proxy", () => {
  it.each<{ claim: string; edit: (c: S) => S; changed: boolean }>([
    { claim: "the same identity keeps its source", edit: (c) => c, changed: false },
    { claim: "new rules keep it", edit: rulesAndAppPort, changed: false },
    {
      claim: "another SVID file starts a new one",
      edit: (c) => ({ ...c, svid: { ...c.svid, certFile: "/elsewhere/svid.pem" } }),
      changed: true,
    },
    {
      claim: "another SPIFFE ID starts a new one",
      edit: (c) => ({ ...c, identity: "spiffe://t.example/ns/x/sa/other" }),
      changed: true,
    },
    {
      claim: "another trust domain starts a new one",
      edit: (c) => ({ ...c, trustDomain: "o.example" }),
      changed: true,
    },
  ])("$claim", ({ edit, changed }) => {
    expect(identityChanged(sidecar, edit(sidecar))).toBe(changed);
  });

  it("a gateway that gains or loses its SVID files changes identity", () => {
    const member: G = { ...gateway, svid: { ...sidecar.svid } };
    expect(gateway.svid).toBeNull(); // the test gateway is no mesh member
    expect(identityChanged(gateway, member)).toBe(true);
    expect(identityChanged(member, gateway)).toBe(true);
    expect(identityChanged(member, { ...member })).toBe(false);
  });
});
