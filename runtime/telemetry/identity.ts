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
    "Seconds until the serving SVID expires (negative once expired), by SPIFFE ID.",
    ["proxy", "identity"],
    { maxChildren: 16 },
  );
  metrics.onCollect(() => {
    const c = current();
    if (c) expiry.labels(proxy, c.spiffeId).set(Math.round((c.notAfter - Date.now()) / 1000));
  });
  const iso = (t: number) => new Date(t).toISOString();
  return (e) => {
    switch (e.kind) {
      case "loaded":
        reloads.labels(proxy, "loaded").inc();
        if (e.previous && e.previous.spiffeId !== e.identity.spiffeId)
          expiry.labels(proxy, e.previous.spiffeId).set(0);
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
