/**
 * Named listeners of a running proxy changed by a reload (the gateway's listeners, the sidecar's
 * per-service local ports): the new ones are bound before the config is accepted; once it serves, this
 * swaps them in and retires the old ones.
 */
import type net from "node:net";
import type { AddressInfo } from "node:net";

/** A bound listener that can stop accepting and close its connections. */
export interface SwappableListener {
  readonly server: net.Server;
  closeIdle(): void;
  closeAll(): void;
}

/**
 * Retires the listeners named in `retire` — they stop accepting, idle connections close now and the
 * rest after `drainMs` (kept in `draining` until then, so a drain of the whole proxy closes them too) —
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
    old.closeIdle();
    draining.add(old);
    setTimeout(() => {
      old.closeAll();
      draining.delete(old);
    }, drainMs).unref();
  }
  for (const [name, l] of opened) {
    const stale = live.get(name);
    if (stale) {
      stale.server.close();
      stale.closeAll();
    }
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
