/**
 * admin-ports: the admin listeners (/config, /metrics, the local JWKS, /ready) are for operators and the
 * metrics scraper, never for clients. They must not share a port with a gateway listener or with the
 * local gateway port, and a service must not listen on one of its own sidecar's ports — including the local
 * ports it binds on 127.0.0.1 for apps that cannot use a proxy: one per callee service and one per
 * external destination it relays to (15101–15999, by a hash of the name: translate's localPorts), read
 * from its RuntimeConfig.
 */
import { PROXY_PORTS } from "../../../components/spec/defaults.ts";
import { destinationOf } from "../../reachability.ts";
import { builtin } from "../support.ts";

const SIDECAR_PORTS: readonly [string, number][] = [
  ["inbound", PROXY_PORTS.sidecarInbound],
  ["outbound", PROXY_PORTS.sidecarOutbound],
  ["admin", PROXY_PORTS.sidecarAdmin],
];

export const adminPorts = builtin(
  "admin-ports",
  "admin ports are never where clients connect; services do not take their sidecar's ports",
  ({ infra, spec, runtime }, report) => {
    for (const w of infra.workloads) {
      if (w.kind === "gateway") {
        const specListeners = spec.gateway?.listeners ?? [];
        for (const l of w.listeners) {
          if (l.port !== w.adminPort) continue;
          const i = specListeners.findIndex((s) => s.name === l.name);
          report(
            "E_POLICY_ADMIN_PORT_EXPOSED",
            i >= 0 ? `gateway.listeners[${i}].port` : "gateway.listeners",
            `gateway listener "${l.name}" uses port ${l.port}, the admin port: /config and /metrics would be served to clients`,
            `move the listener off port ${w.adminPort}`,
          );
        }
      } else {
        for (const [role, port] of SIDECAR_PORTS) {
          if (w.appPort !== port) continue;
          report(
            "E_POLICY_PORT_COLLISION",
            `services.${w.name}.port`,
            `"${w.name}" listens on ${port}, its sidecar's ${role} port${role === "admin" ? " (the sidecar's /config and /metrics)" : ""}: one of them cannot bind`,
            `use another port for the service (the sidecar takes ${SIDECAR_PORTS.map(([, p]) => p).join(", ")})`,
          );
        }
        // The sidecar also binds a local port on 127.0.0.1 per declared callee and per external destination
        // it relays to (apps that cannot use a proxy).
        const sidecar = runtime.sidecars.find((c) => c.name === w.name);
        const local = [
          ...(sidecar?.outbound.services ?? []).map((o) => ({
            port: o.localPort,
            what: `calls to "${o.service}"`,
          })),
          ...(sidecar?.outbound.external ?? []).map((x) => ({
            port: x.localPort,
            what: `the external destination "${x.name}" (${destinationOf(x)})`,
          })),
        ];
        for (const l of local) {
          if (l.port === null || l.port !== w.appPort) continue;
          report(
            "E_POLICY_PORT_COLLISION",
            `services.${w.name}.port`,
            `"${w.name}" listens on ${w.appPort}, its sidecar's local port for ${l.what}: one of them cannot bind`,
            `use another port for the service (the sidecar's local ports lie in ${PROXY_PORTS.localPortRange.first}–${PROXY_PORTS.localPortRange.first + PROXY_PORTS.localPortRange.size - 1}: one per service and per external destination, by a hash of its name)`,
          );
        }
      }
    }
    const local = infra.targets.local;
    if (local && local.adminPort === local.gatewayPort) {
      report(
        "E_POLICY_ADMIN_PORT_EXPOSED",
        "targets.local.adminPort",
        `local mode serves the admin listener on ${local.adminPort}, the gateway's own port: clients of the gateway reach /config and the JWKS`,
        "give targets.local.adminPort its own port (9901 is the default)",
      );
    }
  },
);
