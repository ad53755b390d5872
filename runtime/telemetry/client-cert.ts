/**
 * Logs and metrics of the client certificates a proxy presents to destinations outside the mesh (mutual
 * TLS it originates), shared by the sidecar (external destinations its app calls) and the gateway
 * (external backends its routes forward to):
 *
 * - `meshgate_external_cert_reloads_total{proxy,result}`: loaded (a new pair serves new connections),
 *   rejected (refused; the previous pair keeps serving);
 * - `meshgate_external_cert_expiry_seconds{proxy,external}`, read at scrape time; the series of an external
 *   that no longer presents one is removed (kept at 0, the dropped externals of many reloads would fill
 *   the metric's 64 label sets and fold a live certificate's expiry into `__overflow__`, hiding it);
 * - `external_cert_loaded` / `external_cert_rejected` log lines naming files, subject, serial and
 *   expiry — never key material.
 */
import type { Logger } from "pino";
import { ClientCertificateStore, type ClientCertificateFiles } from "../upstream/client-cert.ts";
import type { MetricsRegistry } from "./metrics.ts";

/** An external destination and the client certificate it is reached with (null: none). */
export interface PresentedCertificate {
  readonly external: string;
  readonly files: ClientCertificateFiles | null;
}

/**
 * A ClientCertificateStore whose events are logged and counted under `proxy`; `presented` lists the
 * externals of the config serving now, for the expiry gauge.
 */
export function observedClientCertificates(
  metrics: MetricsRegistry,
  proxy: string,
  log: Logger,
  presented: () => Iterable<PresentedCertificate>,
  pollIntervalMs?: number,
): ClientCertificateStore {
  const reloads = metrics.counter(
    "external_cert_reloads_total",
    "Loads of the client certificates presented to external destinations: loaded (a new pair serves new connections), rejected (refused; the previous pair keeps serving).",
    ["proxy", "result"],
  );
  const expiry = metrics.gauge(
    "external_cert_expiry_seconds",
    "Seconds until the client certificate presented to an external destination expires (negative once expired), by external.",
    ["proxy", "external"],
    { maxChildren: 64 },
  );
  const store = new ClientCertificateStore({
    ...(pollIntervalMs !== undefined ? { pollIntervalMs } : {}),
    onEvent: (e) => {
      const c = e.certificate;
      if (e.kind === "rejected") {
        reloads.labels(proxy, "rejected").inc();
        log.warn(
          {
            event: "external_cert_rejected",
            code: e.code,
            reason: e.message,
            ...c.files,
            keptPrevious: true,
          },
          "client certificate files refused; the previous certificate keeps serving",
        );
        return;
      }
      reloads.labels(proxy, "loaded").inc();
      const expired = c.notAfter <= Date.now();
      log[expired ? "warn" : "info"]({
        event: "external_cert_loaded",
        ...c.files,
        subject: c.subject,
        serial: c.serial,
        notAfter: new Date(c.notAfter).toISOString(),
        ...(expired ? { expired: true } : {}),
      });
    },
  });
  /** Externals whose expiry series exists: one no longer presenting a certificate has it removed. */
  const shown = new Set<string>();
  metrics.onCollect(() => {
    const now = new Set<string>();
    for (const p of presented()) {
      const c = p.files !== null ? store.get(p.files) : undefined;
      if (c === undefined) continue;
      now.add(p.external);
      shown.add(p.external);
      expiry.labels(proxy, p.external).set(Math.round((c.notAfter - Date.now()) / 1000));
    }
    for (const name of shown) {
      if (now.has(name)) continue;
      expiry.remove(proxy, name);
      shown.delete(name);
    }
  });
  return store;
}
