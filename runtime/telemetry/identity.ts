/**
 * Logs and metrics of a proxy's workload identity (an IdentitySource's events), shared by the sidecar
 * and the gateway: `meshgate_identity_reloads_total{proxy,result}` and
 * `meshgate_cert_expiry_seconds{proxy,identity}` (read at scrape time), and one log line per event —
 * SPIFFE ID, serial and times, never key material.
 */
import type { Logger } from "pino";
import type { IdentityEvent, LoadedIdentity } from "../pki/identity.ts";
import type { MetricsRegistry } from "./metrics.ts";

/**
 * Registers the identity metrics and returns the event handler to give the IdentitySource (`onEvent`).
 * `current` reads the identity serving now (for the expiry gauge); `onLoaded` runs after a new identity
 * is loaded (e.g. to swap a TLS server's context).
 */
export function identityObserver(
  metrics: MetricsRegistry,
  proxy: string,
  log: Logger,
  current: () => LoadedIdentity | null,
  onLoaded?: (identity: LoadedIdentity) => void,
): (event: IdentityEvent) => void {
  const reloads = metrics.counter(
    "identity_reloads_total",
    "Identity file loads: loaded (a new SVID serves), rejected (refused; the previous one keeps serving), issued / issue_failed (development issuer).",
    ["proxy", "result"],
  );
  const expiry = metrics.gauge(
    "cert_expiry_seconds",
    "Seconds until the serving SVID or an intermediate of its chain expires, whichever is first (negative once expired), by SPIFFE ID.",
    ["proxy", "identity"],
    { maxChildren: 16 },
  );
  /**
   * The SPIFFE ID whose series shows the serving SVID. Another one serving (a reload that changed the
   * proxy's identity: a new identity source) or none (the gateway left the mesh) leaves that series at 0,
   * what the alerts ignore — never frozen at its last value, which would raise them for a replaced identity.
   */
  let shown: string | null = null;
  metrics.onCollect(() => {
    const c = current();
    const id = c?.spiffeId ?? null;
    if (shown !== null && shown !== id) expiry.labels(proxy, shown).set(0);
    shown = id;
    // The chain's earliest notAfter: an intermediate that ends before the leaf ends the identity (/ready
    // goes false then), and the alerts must see that time, not the leaf's.
    if (c) expiry.labels(proxy, c.spiffeId).set(Math.round((c.chainNotAfter - Date.now()) / 1000));
  });
  const iso = (t: number) => new Date(t).toISOString();
  return (e) => {
    switch (e.kind) {
      case "loaded":
        reloads.labels(proxy, "loaded").inc();
        onLoaded?.(e.identity);
        log.info({
          event: "identity_loaded",
          spiffeId: e.identity.spiffeId,
          serial: e.identity.serial,
          notAfter: iso(e.identity.notAfter),
          renewAt: iso(e.identity.renewAt),
        });
        return;
      case "rejected":
        reloads.labels(proxy, "rejected").inc();
        log.warn(
          { event: "identity_rejected", code: e.code, reason: e.message, keptPrevious: e.keptPrevious },
          e.keptPrevious
            ? "identity files refused; the previous identity keeps serving"
            : "no valid identity yet",
        );
        return;
      case "renewal_due":
        log.warn({
          event: "identity_renewal_due",
          spiffeId: e.identity.spiffeId,
          notAfter: iso(e.identity.notAfter),
          message: "the SVID is due for renewal and no new files have arrived yet (the issuer writes them)",
        });
        return;
      case "expired":
        log.error({
          event: "identity_expired",
          spiffeId: e.identity.spiffeId,
          notAfter: iso(e.identity.notAfter),
        });
        return;
      case "issued":
        reloads.labels(proxy, "issued").inc();
        log.info({ event: "identity_issued", spiffeId: e.spiffeId, notAfter: iso(e.notAfter) });
        return;
      case "issue_failed":
        reloads.labels(proxy, "issue_failed").inc();
        log.error({ event: "identity_issue_failed", code: e.code, reason: e.message });
        return;
    }
  };
}
