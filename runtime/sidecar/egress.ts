/**
 * Egress: TCP tunnels from the app to the destinations outside the mesh its config declares
 * (`outbound.external`, deny by default), as Istio's ServiceEntry with `REGISTRY_ONLY` and Consul's
 * upstream local ports do it.
 *
 * - `CONNECT host:port` on the proxy port (what HTTPS_PROXY clients send): the authority is parsed
 *   strictly and must name a declared external's host and port (400 `egress_bad_authority`, 403
 *   `egress_denied`; nothing is connected then), the external is dialled within its `connectTimeoutMs`
 *   (504 `egress_connect_timeout`, 502 `egress_connect_failed`), then `200 Connection Established` and
 *   bytes flow both ways untouched (TLS stays end to end between the app and the external).
 * - A local TCP port per external with a `localPort`: each accepted connection is relayed to the
 *   external's host and port (a failed connect closes the app's connection).
 *
 * The sidecar connects to the host the config names — for a wildcard external (`*.example.com`), to the
 * canonical name the app asked for, which the wildcard covers (decide/external.ts); for a range
 * (`10.20.0.0/16`), to the address asked for, which it holds — never to the string
 * the app sent, and a name only through the egress lookup (no loopback or link-local answer). A tunnel
 * relays with backpressure (stream.pipeline); a half-close (FIN) on one side is passed on as a
 * half-close, an error or a close without one on either side closes both. A reload that no longer
 * declares a tunnel's external (or changes its host or port) closes the tunnel at once.
 */
import net, { type Socket } from "node:net";
import { pipeline } from "node:stream";
import type { Logger } from "pino";
import type { SidecarRuntimeConfig } from "../contract/schema.ts";
import { canonicalHost as canonicalAuthorityHost } from "../decide/canonical.ts";
import { loggedAuthority } from "../telemetry/logs.ts";
import type { Counter, CounterChild, Gauge, GaugeChild } from "../telemetry/metrics.ts";
import type { SidecarErrorCode } from "./errors.ts";
import { refuseUpgrade } from "./upgrade.ts";
import { originateConnector } from "../upstream/tls.ts";
import { sameClientCertificate, type ClientCertificateStore } from "../upstream/client-cert.ts";
import { compileExternalMatcher, isPatternHost, type ExternalMatcher } from "../decide/external.ts";

export type External = SidecarRuntimeConfig["outbound"]["external"][number];

/** A tunnel with no byte in either direction for this long is closed (Envoy's tcp_proxy default). */
export const EGRESS_IDLE_MS = 3_600_000;
/** The longest CONNECT target quoted back in an error message or an access line. */
const MAX_TARGET_CHARS = 255;

// ───────────────────────────── authorities ─────────────────────────────

const DIGITS = /^[0-9]+$/;
const PORT = /^[0-9]{1,5}$/;

/**
 * A host as the sidecar compares it: an IPv6 address in its canonical form (no brackets), an IPv4
 * address, or a DNS name in lower case without its trailing dot (the Host-header rules of
 * decide/canonical.ts); null when it is none of them.
 */
export function canonicalHost(host: string): string | null {
  if (net.isIPv6(host)) {
    if (host.includes("%")) return null; // a zone ID names an interface of this host, not a destination
    return canonicalAuthorityHost(`[${host}]`)?.slice(1, -1) ?? null;
  }
  if (net.isIPv4(host)) return host;
  if (host.includes(":")) return null; // the Host-header rules would read a port
  const name = canonicalAuthorityHost(host);
  // An all-numeric last label is no DNS name (RFC 3696 §2): `127.1`, `10.0.0.256` are malformed addresses.
  if (name === null || DIGITS.test(name.slice(name.lastIndexOf(".") + 1))) return null;
  return name;
}

export type Authority =
  | { readonly ok: true; readonly host: string; readonly port: number }
  | { readonly ok: false; readonly reason: string };

/**
 * A CONNECT request target (RFC 9110 §9.3.6 authority-form): `host:port` with a DNS name or an IPv4
 * address, or `[IPv6]:port`; the port is required, digits only, 1–65535. No userinfo, path, query or
 * anything else.
 */
export function parseConnectAuthority(target: string): Authority {
  const bad = (reason: string): Authority => ({ ok: false, reason });
  if (target.length === 0) return bad("the target is empty");
  let hostText: string;
  let portText: string;
  let host: string | null;
  if (target.startsWith("[")) {
    const close = target.indexOf("]");
    if (close < 0) return bad("an IPv6 address without its closing ]");
    hostText = target.slice(1, close);
    const rest = target.slice(close + 1);
    if (!rest.startsWith(":")) return bad(rest.length === 0 ? "no port" : "junk after the ]");
    portText = rest.slice(1);
    host = net.isIPv6(hostText) ? canonicalHost(hostText) : null;
    if (host === null) return bad("not an IPv6 address between [ and ]");
  } else {
    const colon = target.lastIndexOf(":");
    if (colon < 0) return bad("no port");
    hostText = target.slice(0, colon);
    portText = target.slice(colon + 1);
    if (hostText.length === 0) return bad("no host");
    if (hostText.includes(":")) return bad("an IPv6 address must be written in brackets, [::1]:443");
    host = canonicalHost(hostText);
    if (host === null) return bad("the host is not a DNS name or an IPv4 address");
  }
  if (portText.length === 0) return bad("no port");
  if (!PORT.test(portText)) return bad("the port is not a number from 1 to 65535");
  const port = Number(portText);
  if (port < 1 || port > 65535) return bad("the port is not a number from 1 to 65535");
  return { ok: true, host, port };
}

/** `host:port`, an IPv6 host in brackets. */
export function targetText(host: string, port: number): string {
  return host.includes(":") ? `[${host}]:${port}` : `${host}:${port}`;
}

// ───────────────────────────── a config's externals ─────────────────────────────

/** A config's externals, by the host and port a CONNECT names and by name (compiled once per config). */
export interface CompiledExternals {
  /** Host and port (canonical) to the external they reach: exact hosts, then the longest wildcard. */
  readonly byTarget: ExternalMatcher<External>;
  readonly byName: ReadonlyMap<string, External>;
}

export function compileExternals(list: readonly External[]): CompiledExternals {
  const byName = new Map<string, External>();
  const targets: External[] = [];
  for (const e of list) {
    // A host that is no name, address or wildcard (translate refuses it) matches no CONNECT; its local
    // port, if any, still dials it (and fails there).
    const host = isPatternHost(e.host) ? e.host : canonicalHost(e.host);
    const c = host === null || host === e.host ? e : { ...e, host };
    // The tunnels hold this canonical copy: a reload compares it with the next config's (stillDeclared),
    // which must be canonical too, or every tunnel to a host not written canonically closed on reload.
    byName.set(e.name, c);
    if (host !== null) targets.push(c);
  }
  return { byTarget: compileExternalMatcher(targets), byName };
}

/** Do two declarations of an external reach it the same way: host, port, TLS, CA and client certificate? */
export const sameTransport = (a: External, b: External): boolean =>
  a.host === b.host &&
  a.port === b.port &&
  a.tls === b.tls &&
  a.ca === b.ca &&
  sameClientCertificate(a.clientCertificate, b.clientCertificate);

/** The tunnel to `e` may go on under `next`: an external of the same name, reached the same way. */
function stillDeclared(e: External, next: CompiledExternals): boolean {
  const n = next.byName.get(e.name);
  return n !== undefined && sameTransport(n, e);
}

// ───────────────────────────── tunnels ─────────────────────────────

export type EgressVia = "connect" | "local";

/** What a tunnel is opened under: the config serving when it started. */
export interface EgressScope {
  readonly externals: CompiledExternals;
  /** The service whose sidecar this is (for messages and access lines). */
  readonly service: string;
  readonly accessLog: boolean;
}

export interface EgressMetrics {
  readonly connections: Counter<readonly ["proxy", "external", "outcome"]>;
  readonly bytes: Counter<readonly ["proxy", "external", "direction"]>;
  readonly active: Gauge<readonly ["proxy", "external"]>;
}

interface ExternalChildren {
  readonly opened: CounterChild;
  readonly failed: CounterChild;
  /** Refused at the external's maxConnections. */
  readonly overflow: CounterChild;
  readonly sent: CounterChild;
  readonly received: CounterChild;
  readonly active: GaugeChild;
}

export interface EgressOptions {
  readonly log: Logger;
  readonly accessLog: Logger;
  readonly metrics: EgressMetrics;
  /** An error answer the sidecar generated (sidecar_errors_total{direction="outbound"}). */
  readonly countError: (code: SidecarErrorCode) => void;
  /** Resolves external destinations' names (net/lookup.ts egressLookup: loopback / link-local refused). */
  readonly lookup: net.LookupFunction;
  /** The client certificates externals with one present when the sidecar originates their TLS. */
  readonly clientCertificates: ClientCertificateStore;
}

/** One tunnel (or attempt): from the app's connection to the external. */
class Tunnel {
  readonly external: External;
  /** Where it goes: the external's host, or the name a CONNECT asked for under a wildcard external. */
  readonly host: string;
  readonly via: EgressVia;
  readonly scope: EgressScope;
  readonly client: Socket;
  readonly started = performance.now();
  /** Set once the external accepted the connection. */
  upstream: Socket | null = null;
  bytesSent = 0;
  bytesReceived = 0;
  /** Why it ended; the first reason wins (a reload, a drain, an error, or a clean close). */
  outcome = "";
  done = false;
  /** The local listener it came through (its tunnels close with it). */
  readonly owner: Set<Tunnel> | null;
  /** Gives up the connection attempt (set while connecting). */
  abort: (() => void) | null = null;

  constructor(
    scope: EgressScope,
    external: External,
    via: EgressVia,
    client: Socket,
    owner: Set<Tunnel> | null,
    host: string = external.host,
  ) {
    this.scope = scope;
    this.external = external;
    this.host = host;
    this.via = via;
    this.client = client;
    this.owner = owner;
  }
}

/** A local TCP port of an external (runtime/net/swap.ts SwappableListener). */
export interface ExternalListener {
  readonly server: net.Server;
  /** Raw TCP has nothing to signal: a retired port's tunnels go on until closeAll (or a reload ends them). */
  retire(): void;
  closeIdle(): void;
  closeAll(): void;
}

export class Egress {
  readonly #o: EgressOptions;
  /** Tunnels open or connecting. */
  readonly #tunnels = new Set<Tunnel>();
  /** Tunnels open or connecting, by external name (its maxConnections counts them). */
  readonly #perExternal = new Map<string, number>();
  readonly #children = new Map<string, ExternalChildren>();

  constructor(o: EgressOptions) {
    this.#o = o;
  }

  #childrenOf(name: string): ExternalChildren {
    let c = this.#children.get(name);
    if (c === undefined) {
      const m = this.#o.metrics;
      c = {
        opened: m.connections.labels("sidecar", name, "opened"),
        failed: m.connections.labels("sidecar", name, "failed"),
        overflow: m.connections.labels("sidecar", name, "overflow"),
        sent: m.bytes.labels("sidecar", name, "sent"),
        received: m.bytes.labels("sidecar", name, "received"),
        active: m.active.labels("sidecar", name),
      };
      this.#children.set(name, c);
    }
    return c;
  }

  /**
   * A `CONNECT` on the proxy port (the HTTP server's `connect` event): refused (400, 403) unless its
   * target is a declared external's host and port; otherwise tunnelled once the external accepts.
   */
  connect(scope: EgressScope, target: string, httpVersionMajor: number, client: Socket, head: Buffer): void {
    client.on("error", () => client.destroy());
    const shown = target.slice(0, MAX_TARGET_CHARS);
    if (httpVersionMajor !== 1)
      return this.#refuse(scope, client, target, 400, "egress_bad_authority", "CONNECT needs HTTP/1.x");
    const a = parseConnectAuthority(target);
    if (!a.ok)
      return this.#refuse(
        scope,
        client,
        target,
        400,
        "egress_bad_authority",
        `CONNECT ${JSON.stringify(shown)}: ${a.reason}; the target must be host:port (a DNS name, an IPv4 address or [an IPv6 address], port 1–65535)`,
      );
    const e = scope.externals.byTarget.match(a.host, a.port);
    const text = targetText(a.host, a.port);
    if (e === undefined)
      return this.#refuse(
        scope,
        client,
        text,
        403,
        "egress_denied",
        `CONNECT ${text}: no external destination with this host and port is declared for ${scope.service} (deny by default); declare it under \`external\` and allow this service`,
      );
    if (this.#full(e)) {
      this.#childrenOf(e.name).overflow.inc();
      return this.#refuse(
        scope,
        client,
        text,
        503,
        "egress_overflow",
        `CONNECT ${text}: external ${e.name} already has its maxConnections (${e.maxConnections}) of tunnels and local-port relays from this sidecar`,
      );
    }
    const t = new Tunnel(scope, e, "connect", client, null, isPatternHost(e.host) ? a.host : e.host);
    this.#dial(t, head, true);
  }

  /**
   * Opens an external's local port on 127.0.0.1; `current` gives the scope (and so the external by
   * `name`) of each connection when it arrives, null to refuse it (draining).
   */
  async listen(name: string, port: number, current: () => EgressScope | null): Promise<ExternalListener> {
    const owned = new Set<Tunnel>();
    const server = net.createServer({ noDelay: true, allowHalfOpen: true }, (client) => {
      client.on("error", () => client.destroy());
      const scope = current();
      const e = scope?.externals.byName.get(name);
      if (scope === null || e === undefined) return void client.destroy();
      if (this.#full(e)) {
        // Nothing to answer on a raw TCP port: the connection closes before anything is connected.
        client.destroy();
        this.#childrenOf(e.name).overflow.inc();
        this.#o.countError("egress_overflow");
        if (scope.accessLog)
          this.#o.accessLog.info({
            event: "egress",
            service: scope.service,
            external: e.name,
            via: "local",
            durationMs: 0,
            outcome: "denied_egress_overflow",
          });
        return;
      }
      this.#dial(new Tunnel(scope, e, "local", client, owned), null, false);
    });
    await new Promise<void>((resolve, reject) => {
      const onError = (err: Error & { code?: string }) =>
        reject(err.code === "EADDRINUSE" ? new Error(`port ${port} on 127.0.0.1 is already in use`) : err);
      server.once("error", onError);
      server.listen({ port, host: "127.0.0.1" }, () => {
        server.off("error", onError);
        resolve();
      });
    });
    const closeAll = () => {
      for (const t of owned) this.#end(t, "port_closed");
    };
    return { server, retire: () => {}, closeIdle: () => {}, closeAll };
  }

  /** A new config serves: tunnels to externals it no longer declares (or moved elsewhere) close now. */
  reconcile(next: CompiledExternals): string[] {
    const closed = new Set<string>();
    for (const t of this.#tunnels)
      if (!stillDeclared(t.external, next)) {
        closed.add(t.external.name);
        this.#end(t, "removed_by_reload");
      }
    return [...closed].sort();
  }

  /** Closes every tunnel (the end of a drain). */
  closeAll(outcome = "drained"): void {
    for (const t of this.#tunnels) this.#end(t, outcome);
  }

  #refuse(
    scope: EgressScope,
    client: Socket,
    target: string,
    status: 400 | 403 | 503,
    code: SidecarErrorCode,
    message: string,
  ): void {
    refuseUpgrade(
      client,
      status,
      status === 400 ? "Bad Request" : status === 503 ? "Service Unavailable" : "Forbidden",
      code,
      message,
    );
    this.#o.countError(code);
    if (scope.accessLog)
      this.#o.accessLog.info({
        event: "egress",
        service: scope.service,
        via: "connect",
        // A refused target as written may carry userinfo (user:password@host:443): never logged.
        target: loggedAuthority(target, MAX_TARGET_CHARS),
        status,
        durationMs: 0,
        outcome: `denied_${code}`,
      });
  }

  /** TLS connectors of externals the sidecar originates TLS to, one per config entry (its trust built once). */
  readonly #originators = new WeakMap<External, (host: string, port: number) => Socket>();
  #originator(e: External): (host: string, port: number) => Socket {
    let c = this.#originators.get(e);
    if (c === undefined) {
      const tlsConnect = originateConnector(
        { serverName: e.host, ca: e.ca, clientCertificate: e.clientCertificate },
        null,
        this.#o.lookup,
        this.#o.clientCertificates,
      );
      c = (host, port) => {
        const socket = tlsConnect(host, port);
        socket.setNoDelay(true);
        return socket;
      };
      this.#originators.set(e, c);
    }
    return c;
  }

  /** Whether the external has its maxConnections of tunnels (open or connecting) from this sidecar. */
  #full(e: External): boolean {
    return e.maxConnections !== null && (this.#perExternal.get(e.name) ?? 0) >= e.maxConnections;
  }

  /** Connects to the external, then relays (answering a CONNECT first). */
  #dial(t: Tunnel, head: Buffer | null, answer: boolean): void {
    const e = t.external;
    const m = this.#childrenOf(e.name);
    this.#tunnels.add(t);
    this.#perExternal.set(e.name, (this.#perExternal.get(e.name) ?? 0) + 1);
    t.owner?.add(t);
    // A local port to an external whose TLS the sidecar originates carries the app's plaintext inside it;
    // a CONNECT tunnel is always the app's own TLS.
    const originate = t.via === "local" && e.tls === "originate";
    const upstream = originate
      ? this.#originator(e)(t.host, e.port)
      : net.connect({
          host: t.host,
          port: e.port,
          lookup: this.#o.lookup,
          noDelay: true,
          allowHalfOpen: true,
        });
    let connected = false;
    let timedOut = false;
    const timer =
      e.connectTimeoutMs > 0
        ? setTimeout(() => {
            timedOut = true;
            upstream.destroy(Object.assign(new Error("connect timeout"), { code: "ETIMEDOUT" }));
          }, e.connectTimeoutMs)
        : null;
    const giveUp = () => {
      // The app left, or a reload or drain ended the attempt, before the external accepted.
      if (connected || t.done) return;
      if (timer) clearTimeout(timer);
      upstream.destroy();
      this.#finish(t, t.outcome || "client_aborted", 0);
    };
    t.client.allowHalfOpen = true; // a FIN from the app ends only its direction (see #relay)
    t.client.once("close", giveUp);
    t.abort = giveUp;
    upstream.once(originate ? "secureConnect" : "connect", () => {
      connected = true;
      t.abort = null;
      if (timer) clearTimeout(timer);
      t.client.off("close", giveUp);
      if (t.done || t.client.destroyed) {
        upstream.destroy();
        if (!t.done) this.#finish(t, "client_aborted", 0);
        return;
      }
      t.upstream = upstream;
      m.opened.inc();
      m.active.inc();
      if (answer) t.client.write("HTTP/1.1 200 Connection Established\r\n\r\n");
      if (head !== null && head.length > 0) {
        t.bytesSent += head.length;
        m.sent.inc(head.length);
        upstream.write(head);
      }
      this.#relay(t, upstream, m);
    });
    upstream.on("error", (err: Error & { code?: string }) => {
      if (connected || t.done) return;
      if (timer) clearTimeout(timer);
      t.client.off("close", giveUp);
      upstream.destroy();
      m.failed.inc();
      const outcome = timedOut ? "connect_timeout" : "connect_failed";
      this.#o.log.warn({
        event: "egress_error",
        external: e.name,
        target: targetText(t.host, e.port),
        via: t.via,
        outcome,
        code: err.code,
      });
      if (answer) {
        const [status, code, reason]: [number, SidecarErrorCode, string] = timedOut
          ? [504, "egress_connect_timeout", "Gateway Timeout"]
          : [502, "egress_connect_failed", "Bad Gateway"];
        refuseUpgrade(
          t.client,
          status,
          reason,
          code,
          timedOut
            ? `external ${e.name} (${targetText(t.host, e.port)}): no connection within ${e.connectTimeoutMs} ms`
            : `external ${e.name} (${targetText(t.host, e.port)}): the connection failed (${err.code ?? err.message})`,
        );
        this.#o.countError(code);
        this.#finish(t, outcome, status);
      } else {
        t.client.destroy();
        this.#finish(t, outcome, 0);
      }
    });
  }

  /**
   * Relays both ways until both directions ended (each FIN passed on as a FIN), or one side failed: an
   * error, or a close before its end, destroys both (stream.pipeline).
   */
  #relay(t: Tunnel, upstream: Socket, m: ExternalChildren): void {
    const client = t.client;
    client.once("error", () => (t.outcome ||= "client_reset"));
    upstream.once("error", () => (t.outcome ||= "external_reset"));
    const done = (err: NodeJS.ErrnoException | null | undefined) => {
      if (err) t.outcome ||= "reset"; // a close without an end (ERR_STREAM_PREMATURE_CLOSE)
    };
    pipeline(client, upstream, done);
    pipeline(upstream, client, done);
    client.on("data", (chunk: Buffer) => {
      t.bytesSent += chunk.length;
      m.sent.inc(chunk.length);
    });
    upstream.on("data", (chunk: Buffer) => {
      t.bytesReceived += chunk.length;
      m.received.inc(chunk.length);
    });
    const idle = () => this.#end(t, "idle_timeout");
    client.setTimeout(EGRESS_IDLE_MS, idle);
    upstream.setTimeout(EGRESS_IDLE_MS, idle);
    let open = 2;
    const closed = () => {
      if (--open > 0) return;
      m.active.dec();
      this.#finish(t, t.outcome || "closed", 200);
    };
    client.once("close", closed);
    upstream.once("close", closed);
  }

  /** Ends a tunnel now (a reload, a drain, an idle timeout): both sides are destroyed. */
  #end(t: Tunnel, outcome: string): void {
    if (t.done) return;
    if (!t.outcome) t.outcome = outcome;
    t.client.destroy();
    if (t.upstream === null) t.abort?.();
    else t.upstream.destroy();
  }

  /** Accounts for a tunnel that ended (or an attempt that failed): its access line. */
  #finish(t: Tunnel, outcome: string, status: number): void {
    if (t.done) return;
    t.done = true;
    this.#tunnels.delete(t);
    const left = (this.#perExternal.get(t.external.name) ?? 1) - 1;
    if (left > 0) this.#perExternal.set(t.external.name, left);
    else this.#perExternal.delete(t.external.name);
    t.owner?.delete(t);
    if (!t.scope.accessLog) return;
    const seconds = (performance.now() - t.started) / 1000;
    this.#o.accessLog.info({
      event: "egress",
      service: t.scope.service,
      external: t.external.name,
      target: targetText(t.host, t.external.port),
      via: t.via,
      ...(t.via === "connect" ? { status } : {}),
      bytesSent: t.bytesSent,
      bytesReceived: t.bytesReceived,
      durationMs: Math.round(seconds * 1e6) / 1e3,
      outcome,
    });
  }
}
