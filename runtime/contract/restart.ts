/**
 * What a reload changes beyond a swap of state. A proxy builds most of what it runs per config (routes,
 * clusters, auth, limits per request, certificates) and a reload swaps that whole. Sockets change too:
 *
 * - the gateway's listeners and the sidecar's per-service local ports a reload adds, and those it moves
 *   to another port, are bound before the config is accepted (a port that cannot be bound refuses the
 *   reload) and removed and moved-away ports close once it serves, draining their connections;
 * - a gateway listener that keeps its port but changes how it serves — protocol, HTTP/2, TLS minimum
 *   version, PROXY protocol and sources, the parser and timeout limits, the client-certificate request —
 *   keeps its socket and gets a new connection stack (runtime/net/acceptor.ts): new connections meet the
 *   new settings, connections already open finish on the old ones (`rebuilt`, `gatewayListenerChanges`);
 *   the connection limit applies to every listener at once;
 * - the sidecar's inbound listener likewise gets a new stack when its mode (strict/permissive) or its
 *   parser limits change, and its inbound and outbound ports move like local ports
 *   (`sidecarListenerChanges`).
 *
 * The proxies' identities reload too (new SVID files, another SPIFFE ID or trust domain: a new identity
 * source, swapped in with the config).
 *
 * What a reload cannot apply is refused whole, naming the field, rather than accepted and silently not
 * applied: either proxy's admin port, the operator's fixed point (as Envoy's admin address is
 * bootstrap-only). Applying it takes a restart — on Kubernetes a changed config already rolls the pods
 * (its hash is a pod annotation), so this only meets reloads of a file by hand or by SIGHUP.
 *
 * Pure: two validated configs in, the changed field paths out (spec-like paths, listeners by name).
 */
import { RuntimeConfigError } from "./errors.ts";
import type { GatewayRuntimeConfig, SidecarRuntimeConfig } from "./schema.ts";

type Listener = GatewayRuntimeConfig["listeners"][number];

/**
 * The settings a gateway listener's connection stack is built with (certificates are not: they reload in
 * place, read per handshake).
 */
const LISTENER_STACK: readonly ((l: Listener) => [field: string, value: unknown])[] = [
  (l) => ["protocol", l.protocol],
  (l) => ["http2", l.http2],
  (l) => ["tls.minVersion", l.tls?.minVersion ?? null],
  (l) => ["proxyProtocol", l.proxyProtocol ?? false],
  (l) => ["proxyProtocolSources", l.proxyProtocolSources ?? null],
];

/** The gateway's limits every listener's HTTP servers and parsers are built with. */
const GATEWAY_LIMITS_STACK = [
  "maxHeaderBytes",
  "headerTimeoutMs",
  "requestTimeoutMs",
  "idleTimeoutMs",
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
/** The gateway's listeners a reload adds, removes, moves and rebuilds in place, by listener name. */
export interface ListenerChanges extends PortChanges {
  /** Listeners that keep their port and socket but get a new connection stack (new settings). */
  readonly rebuilt: readonly string[];
  /** Why: the changed settings, as field paths (`listeners.edge.http2`, `limits.maxHeaderBytes`). */
  readonly settings: readonly string[];
}
/** The sidecar's per-service local ports a reload adds, removes and moves, by service. */
export type LocalPortChanges = PortChanges;

/**
 * The listeners `next` adds, removes and moves to another port (each bound anew), and those that keep
 * their port but not how it serves (each gets a new connection stack on its socket).
 */
export function gatewayListenerChanges(
  current: GatewayRuntimeConfig,
  next: GatewayRuntimeConfig,
): ListenerChanges {
  const ports = (c: GatewayRuntimeConfig) => new Map(c.listeners.map((l) => [l.name, l.port]));
  const sockets = portChanges(ports(current), ports(next));
  const after = new Map(next.listeners.map((l) => [l.name, l]));
  const kept = current.listeners.filter((l) => after.get(l.name)?.port === l.port);
  // Settings every listener is built with: each kept listener is rebuilt when one changes.
  const shared: string[] = [];
  for (const k of GATEWAY_LIMITS_STACK) if (current.limits[k] !== next.limits[k]) shared.push(`limits.${k}`);
  // Listeners request client certificates only when some clientCert provider exists.
  if (current.auth.clientCert.length > 0 !== next.auth.clientCert.length > 0)
    shared.push(
      `auth.clientCert (${next.auth.clientCert.length > 0 ? "first provider added" : "last provider removed"})`,
    );
  const rebuilt: string[] = [];
  const settings: string[] = [];
  for (const old of kept) {
    const l = after.get(old.name)!;
    const own = LISTENER_STACK.flatMap((get) => {
      const [field, value] = get(l);
      return same(get(old)[1], value) ? [] : [`listeners.${l.name}.${field}`];
    });
    if (own.length + shared.length === 0) continue;
    rebuilt.push(l.name);
    settings.push(...own);
  }
  if (rebuilt.length > 0) settings.push(...shared);
  return { ...sockets, rebuilt, settings };
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

type ProxyConfig = GatewayRuntimeConfig | SidecarRuntimeConfig;

/** The fields `next` changes that only a restart of the proxy applies (empty: the reload can apply it all). */
export function restartFields(current: ProxyConfig, next: ProxyConfig): string[] {
  return current.admin.port !== next.admin.port ? ["admin.port"] : [];
}

/** `next` names other identity files, another SPIFFE ID or trust domain: a new identity source is started. */
export function identityChanged(current: ProxyConfig, next: ProxyConfig): boolean {
  return (
    !same(current.svid, next.svid) ||
    current.identity !== next.identity ||
    current.trustDomain !== next.trustDomain
  );
}

/** How a reload changes the sidecar's inbound and outbound listeners. */
export interface SidecarListenerChanges {
  /** The listeners bound anew on another port (`inbound`, `outbound`), the old port closed once it serves. */
  readonly moved: readonly ("inbound" | "outbound")[];
  /**
   * The inbound settings its connection stack is built with that changed (mode, parser limits): a new
   * stack, on the kept socket or on the moved one.
   */
  readonly inboundSettings: readonly string[];
}

/** The sidecar's inbound and outbound listeners `next` moves, and the inbound stack's changed settings. */
export function sidecarListenerChanges(
  current: SidecarRuntimeConfig,
  next: SidecarRuntimeConfig,
): SidecarListenerChanges {
  const moved: ("inbound" | "outbound")[] = [];
  if (current.inbound.port !== next.inbound.port) moved.push("inbound");
  if (current.outbound.port !== next.outbound.port) moved.push("outbound");
  const inboundSettings: string[] = [];
  if (current.mtls !== next.mtls) inboundSettings.push("mtls");
  if (current.inbound.limits.maxHeaderBytes !== next.inbound.limits.maxHeaderBytes)
    inboundSettings.push("inbound.limits.maxHeaderBytes");
  if (current.inbound.limits.headerTimeoutMs !== next.inbound.limits.headerTimeoutMs)
    inboundSettings.push("inbound.limits.headerTimeoutMs");
  return { moved, inboundSettings };
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

/** The local ports of externals (`outbound.external[].localPort`) `next` adds, removes and moves, by name. */
export function sidecarExternalPortChanges(
  current: SidecarRuntimeConfig,
  next: SidecarRuntimeConfig,
): LocalPortChanges {
  const ports = (c: SidecarRuntimeConfig) =>
    new Map(
      c.outbound.external.flatMap((e) => (e.localPort === null ? [] : ([[e.name, e.localPort]] as const))),
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
