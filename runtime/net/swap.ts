/**
 * Named listeners of a running proxy changed by a reload (the gateway's listeners, the sidecar's
 * per-service local ports): the new ones are bound before the config is accepted; once it serves, this
 * swaps them in and retires the old ones.
 */
import type net from "node:net";
import type { AddressInfo } from "node:net";
import { RuntimeConfigError } from "../contract/errors.ts";
import type { PortChanges } from "../contract/restart.ts";

/** A bound listener that can stop accepting and close its connections. */
export interface SwappableListener {
  readonly server: net.Server;
  /**
   * Stops keeping connections: HTTP/2 sessions get GOAWAY, each HTTP/1 response from now on closes its
   * connection (runtime/net/acceptor.ts `retireServers`).
   */
  retire(): void;
  closeIdle(): void;
  closeAll(): void;
}

/**
 * Retires the listeners named in `retire` — they stop accepting, HTTP/2 sessions get GOAWAY, each
 * HTTP/1 connection closes after its next response (an idle one is not closed under a client that may be
 * sending on it) and what is left after `drainMs` is closed (kept in `draining` until then, so a drain
 * of the whole proxy closes them too) —
 * and puts `opened` in their place, recording each one's bound port in `ports`. A live listener of an
 * opened name that is not retired (one bound at start by a port override the config did not name) is
 * closed at once. Never throws.
 */
export function swapListeners<L extends SwappableListener>(
  live: Map<string, L>,
  ports: Record<string, number>,
  draining: Set<L>,
  retire: readonly string[],
  opened: ReadonlyMap<string, L>,
  drainMs: number,
): void {
  for (const name of retire) {
    const old = live.get(name);
    if (!old) continue;
    live.delete(name);
    delete ports[name];
    old.server.close();
    old.retire();
    draining.add(old);
    setTimeout(() => {
      old.closeAll();
      draining.delete(old);
    }, drainMs).unref();
  }
  for (const [name, l] of opened) {
    const stale = live.get(name);
    if (stale) closeUnused(stale);
    live.set(name, l);
    ports[name] = (l.server.address() as AddressInfo).port;
  }
}

/** What a reload bound (not serving its config yet), the names it retires once it does, and why. */
export interface PreparedSwap<L extends SwappableListener, C> {
  readonly opened: ReadonlyMap<string, L>;
  readonly retire: readonly string[];
  readonly changes: C;
}

/** Closes a listener that never served (a refused or aborted reload's, or a stale one). */
export function closeUnused(l: SwappableListener): void {
  l.server.close();
  l.closeAll();
}

/**
 * Binds what a reload adds and moves, all or none: `open` binds one name; when one cannot be bound,
 * those already opened are closed and the failure is the config's (E_RT_CONFIG_INVALID on the field
 * `fieldOf` names). The added and moved names are retired from the live set once the config serves,
 * with the removed ones.
 */
export async function openChanged<L extends SwappableListener, C extends PortChanges>(
  changes: C,
  open: (name: string) => Promise<L>,
  fieldOf: (name: string) => string,
): Promise<PreparedSwap<L, C>> {
  const opened = new Map<string, L>();
  for (const name of [...changes.added, ...changes.moved]) {
    try {
      opened.set(name, await open(name));
    } catch (err) {
      for (const l of opened.values()) closeUnused(l);
      throw new RuntimeConfigError("E_RT_CONFIG_INVALID", (err as Error).message, fieldOf(name));
    }
  }
  return { opened, retire: [...changes.removed, ...changes.moved], changes };
}

/**
 * How long a drain keeps an idle keep-alive connection open for its client's next request (answered, with
 * `Connection: close`) before closing it. Closing an idle connection at once races a client that is
 * sending on it (its request is lost: a reset); a client that sends within this time is served and told
 * to go. Capped by the drain timeout.
 */
export const DRAIN_IDLE_GRACE_MS = 1000;

/** Connections still open on a listener's socket (accepted and not yet closed). */
function openConnections(l: SwappableListener): Promise<number> {
  return new Promise((resolve) => l.server.getConnections((err, n) => resolve(err ? 0 : n)));
}

/**
 * The first step of a proxy's drain: `serving` listeners stop accepting; they and the `draining` ones
 * (retired by a reload) stop keeping connections (HTTP/2 GOAWAY; each HTTP/1 response closes its
 * connection); idle keep-alive connections get DRAIN_IDLE_GRACE_MS (at most `drainMs`, the drain
 * timeout) for one more request and are closed then — or as soon as no connection is left. Requests
 * still in flight are the caller's to wait for.
 */
export async function retireForDrain(
  serving: readonly SwappableListener[],
  draining: readonly SwappableListener[],
  drainMs: number,
): Promise<void> {
  const all = [...serving, ...draining];
  for (const l of serving) {
    l.server.close();
    l.retire();
  }
  const deadline = Date.now() + Math.min(DRAIN_IDLE_GRACE_MS, drainMs);
  while (Date.now() < deadline) {
    const open = await Promise.all(all.map(openConnections));
    if (open.every((n) => n === 0)) break;
    await new Promise((r) => setTimeout(r, Math.min(25, Math.max(1, deadline - Date.now()))));
  }
  for (const l of all) l.closeIdle();
}
