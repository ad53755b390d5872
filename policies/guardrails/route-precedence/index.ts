/**
 * route-precedence: every gateway route can be reached, no two routes tie, and no public route serves an
 * authenticated route's path with only a trailing slash, letter case or `;param` changed. All are decided by the
 * compiled router and decide() on probe requests (policies/route-analysis.ts), so what this guardrail
 * reports is what the gateway will do.
 */
import { analyzeRoutes, publicVariants, type Probe } from "../../route-analysis.ts";
import { builtin, names } from "../support.ts";

export function describeProbe(p: Probe): string {
  const q = p.query ? `?${p.query}` : "";
  const h = Object.entries(p.headers)
    .map(([k, v]) => ` ${k}: ${v}`)
    .join(",");
  return `${p.method} ${p.host}${p.path}${q}${h ? ` with${h}` : ""}`;
}

export const routePrecedence = builtin(
  "route-precedence",
  "no gateway route is shadowed by another, and no two routes tie",
  ({ model }, report) => {
    const gw = model.gateway();
    if (!gw) return;
    const analysis = analyzeRoutes(gw);
    for (const s of analysis.shadowed) {
      report(
        "E_POLICY_ROUTE_SHADOWED",
        `${model.routePath(s.route)}.match`,
        `no request reaches route "${s.route}": ${names(s.by)} take${s.by.length === 1 ? "s" : ""} precedence for every request it matches (e.g. ${describeProbe(s.probe)} → ${s.by[0]})`,
        `remove "${s.route}", or make it more specific than ${names(s.by)} (an exact host, a literal segment, methods, a header condition)`,
      );
    }
    for (const c of analysis.conflicts) {
      report(
        "E_POLICY_ROUTE_CONFLICT",
        `${model.routePath(c.loser)}.match`,
        `routes "${c.winner}" and "${c.loser}" match the same requests with equal precedence (e.g. ${describeProbe(c.probe)}); only the alphabetical order of their names makes "${c.winner}" win`,
        `merge the two routes, or tell them apart (methods, hosts, a header or query condition) so that each request has one route`,
      );
    }
    for (const v of publicVariants(gw)) {
      report(
        "E_POLICY_ROUTE_VARIANT_PUBLIC",
        `${model.routePath(v.route)}.match`,
        `route "${v.route}" authenticates ${describeProbe(v.probe)}, but ${describeProbe(v.variant)} reaches public route "${v.by}", which forwards to ${v.clusters.join(", ")} too: an upstream that ignores a trailing slash, letter case or ;parameters serves it without authentication`,
        `narrow public route "${v.by}" so it does not cover ${v.variant.path}, or add an authenticated route for it; or make ${v.clusters.join(", ")} route strictly (a trailing slash, case or ;parameter is another resource)`,
      );
    }
    for (const u of analysis.unanalyzed) {
      report(
        "E_POLICY_ROUTE_UNANALYZED",
        `${model.routePath(u.route)}.match`,
        `whether route "${u.route}" can be reached was not decided: ${u.reason}`,
        "nothing to fix; lower this code to off if the route is known to be reachable",
      );
    }
  },
);
