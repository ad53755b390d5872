/**
 * client-address: access decided by the client's address (`auth.clientIps`) rests on an address a client
 * cannot name itself. The gateway takes it from X-Forwarded-For/Forwarded (clientIp) or from a PROXY
 * header (a listener's proxyProtocol); both are the client's own words unless only the proxies can write
 * them. A hop count trusts whatever a connection sends when it bypasses the proxies (another port, the pod's
 * address); a PROXY listener without sources trusts whoever reaches its port.
 */
import { builtin, names } from "../support.ts";

export const clientAddress = builtin(
  "client-address",
  "routes that admit by client address get it from a source only the proxies in front can write",
  ({ spec, runtime }, report) => {
    const gw = runtime.gateway;
    if (!gw) return;
    const byAddress = gw.routes.filter((r) => r.auth.clientIps.length > 0).map((r) => r.name);
    if (byAddress.length === 0) return;
    const routes =
      byAddress.length === 1 ? `route ${names(byAddress)} admits` : `routes ${names(byAddress)} admit`;
    if (gw.clientIp.trustedHops > 0 && !gw.clientIp.trustedProxies)
      report(
        "E_POLICY_CLIENT_IP_HOP_COUNT",
        "gateway.clientIp.trustedHops",
        `${routes} by client address, which the gateway takes from ${gw.clientIp.header} by hop count: a connection that reaches the gateway without passing the ${gw.clientIp.trustedHops === 1 ? "proxy" : "proxies"} names any address it likes`,
        "list the proxies' ranges in clientIp.trustedProxies instead of trustedHops (a connection from elsewhere then keeps its own address)",
      );
    (spec.gateway?.listeners ?? []).forEach((l, i) => {
      if (l.proxyProtocol && !l.proxyProtocolSources)
        report(
          "E_POLICY_CLIENT_IP_PROXY_ANY_SOURCE",
          `gateway.listeners[${i}]`,
          `listener "${l.name}" takes PROXY headers from any source, and ${routes} by the address they name: whoever reaches the port can pass as an allowed client`,
          "add proxyProtocolSources: the load balancers' CIDR ranges",
        );
    });
  },
);
