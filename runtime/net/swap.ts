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
