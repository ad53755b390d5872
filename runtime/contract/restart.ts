/**
 * What a reload changes beyond a swap of state. A proxy builds most of what it runs per config (routes,
 * clusters, auth, limits per request, certificates) and a reload swaps that whole. The gateway's
 * listeners are sockets: a reload binds the listeners it adds and those it moves to another port (with
 * their new settings) before the config is accepted — a port that cannot be bound refuses the reload —
 * and closes removed and moved-away ports once the config serves, draining their connections
 * (`gatewayListenerChanges`).
 *
 * What a socket was set up with cannot change while it stays bound: a listener that keeps its port keeps
 * its protocol, HTTP/2, TLS minimum version, PROXY protocol and sources, and the parser and connection
 * limits and client-certificate request every listener is created with. Nor do the admin port and the
 * gateway's mesh identity, or the sidecar's mode (strict/permissive), its inbound, outbound and admin
 * ports and inbound parser limits (its per-service local ports, like the gateway's listeners, are
 * added, removed and moved by a reload: `sidecarLocalPortChanges`). A
 * new config that changes such a setting is refused whole, naming every field, rather than accepted and
 * silently not applied: a reload that narrows `proxyProtocolSources` or turns a sidecar from permissive
 * to strict must never report success while the old setting keeps serving. Applying them takes a
 * restart — on Kubernetes a changed config already rolls the pods (its hash is a pod annotation), so
 * this only meets reloads of a file by hand or by SIGHUP.
 *
 * Pure: two validated configs in, the changed field paths out (spec-like paths, listeners by name).
 */
import { RuntimeConfigError } from "./errors.ts";
import type { GatewayRuntimeConfig, SidecarRuntimeConfig } from "./schema.ts";

type Listener = GatewayRuntimeConfig["listeners"][number];

/** The settings a gateway listener's socket is set up with (certificates are not: they reload in place). */
const LISTENER_BOUND: readonly ((l: Listener) => [field: string, value: unknown])[] = [
  (l) => ["protocol", l.protocol],
  (l) => ["http2", l.http2],
  (l) => ["tls.minVersion", l.tls?.minVersion ?? null],
  (l) => ["proxyProtocol", l.proxyProtocol ?? false],
  (l) => ["proxyProtocolSources", l.proxyProtocolSources ?? null],
];

/** The gateway's limits its listeners and HTTP parsers are created with. */
const GATEWAY_LIMITS_BOUND = [
  "maxHeaderBytes",
  "headerTimeoutMs",
  "requestTimeoutMs",
  "idleTimeoutMs",
  "maxConnections",
] as const;

const same = (a: unknown, b: unknown): boolean => JSON.stringify(a) === JSON.stringify(b);

/**
 * How a reload changes a proxy's sockets, by name (the gateway's listeners, the sidecar's per-service
 * local ports): added and moved ones are bound before the config is accepted, removed and moved-away
 * ones closed once it serves.
 */
export interface PortChanges {
  readonly added: readonly string[];
  readonly removed: readonly string[];
  /** On a new port: bound anew there (with whatever else changed), the old port closed once it serves. */
  readonly moved: readonly string[];
}
/** The gateway's listeners a reload adds, removes and moves, by listener name. */
export type ListenerChanges = PortChanges;
/** The sidecar's per-service local ports a reload adds, removes and moves, by service. */
export type LocalPortChanges = PortChanges;

/** The listeners `next` adds, removes and moves to another port (each bound anew). */
export function gatewayListenerChanges(
  current: GatewayRuntimeConfig,
  next: GatewayRuntimeConfig,
): ListenerChanges {
  const ports = (c: GatewayRuntimeConfig) => new Map(c.listeners.map((l) => [l.name, l.port]));
  return portChanges(ports(current), ports(next));
}

/** Sockets by name → port, before and after: the names added, removed, and on another port (in order). */
function portChanges(before: ReadonlyMap<string, number>, after: ReadonlyMap<string, number>): PortChanges {
  const added: string[] = [];
  const moved: string[] = [];
  for (const [name, port] of after)
    if (!before.has(name)) added.push(name);
    else if (before.get(name) !== port) moved.push(name);
  const removed = [...before.keys()].filter((n) => !after.has(n));
  return { added, removed, moved };
}

/** The gateway fields `next` changes that only a restart applies (empty: the reload can apply it all). */
export function gatewayRestartFields(current: GatewayRuntimeConfig, next: GatewayRuntimeConfig): string[] {
  const changed: string[] = [];
  const after = new Map(next.listeners.map((l) => [l.name, l]));
  // A listener that keeps its port keeps its socket: what the socket was set up with cannot change.
  const kept = current.listeners.filter((l) => after.get(l.name)?.port === l.port);
  for (const old of kept) {
    const l = after.get(old.name)!;
    for (const get of LISTENER_BOUND) {
      const [field, value] = get(l);
      if (!same(get(old)[1], value)) changed.push(`listeners.${l.name}.${field}`);
    }
  }
  if (kept.length > 0) {
    for (const k of GATEWAY_LIMITS_BOUND)
      if (current.limits[k] !== next.limits[k]) changed.push(`limits.${k}`);
    // Listeners request client certificates only when some clientCert provider exists.
    if (current.auth.clientCert.length > 0 !== next.auth.clientCert.length > 0)
      changed.push(
        `auth.clientCert (${next.auth.clientCert.length > 0 ? "first provider added" : "last provider removed"})`,
      );
  }
  if (current.admin.port !== next.admin.port) changed.push("admin.port");
  if (!same(current.svid, next.svid)) changed.push("svid");
  if (current.identity !== next.identity) changed.push("identity");
  if (current.trustDomain !== next.trustDomain) changed.push("trustDomain");
  return changed;
}

/** The sidecar fields `next` changes that only a restart applies (its identity, by contrast, reloads). */
export function sidecarRestartFields(current: SidecarRuntimeConfig, next: SidecarRuntimeConfig): string[] {
  const changed: string[] = [];
  if (current.mtls !== next.mtls) changed.push("mtls");
  if (current.inbound.port !== next.inbound.port) changed.push("inbound.port");
  if (current.inbound.limits.maxHeaderBytes !== next.inbound.limits.maxHeaderBytes)
    changed.push("inbound.limits.maxHeaderBytes");
  if (current.inbound.limits.headerTimeoutMs !== next.inbound.limits.headerTimeoutMs)
    changed.push("inbound.limits.headerTimeoutMs");
  if (current.outbound.port !== next.outbound.port) changed.push("outbound.port");
  if (current.admin.port !== next.admin.port) changed.push("admin.port");
  return changed;
}

/** The per-service local ports `next` adds, removes and moves (each a socket of its own, 127.0.0.1). */
export function sidecarLocalPortChanges(
  current: SidecarRuntimeConfig,
  next: SidecarRuntimeConfig,
): LocalPortChanges {
  const ports = (c: SidecarRuntimeConfig) =>
    new Map(
      c.outbound.services.flatMap((s) => (s.localPort === null ? [] : ([[s.service, s.localPort]] as const))),
    );
  return portChanges(ports(current), ports(next));
}

/**
 * Throws E_RT_RELOAD_RESTART_REQUIRED naming the fields when `changed` is not empty; the reloader turns it
 * into a rejected reload (the previous config keeps serving).
 */
export function refuseRestartFields(proxy: "gateway" | "sidecar", changed: readonly string[]): void {
  if (changed.length === 0) return;
  throw new RuntimeConfigError(
    "E_RT_RELOAD_RESTART_REQUIRED",
    `the new config changes ${changed.join(", ")}, which the ${proxy} sets only when it starts; ` +
      `restart the ${proxy} to apply it (on Kubernetes a changed config rolls the pods), or reload a config ` +
      `that keeps these as they are`,
  );
}
