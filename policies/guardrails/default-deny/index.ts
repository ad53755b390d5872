/**
 * default-deny: the sidecars deny by default (the RuntimeConfig contract has no other mode); this
 * guardrail keeps the allow rules from undoing it — rules that admit every request of a peer, services
 * that admit every other workload — and flags a gateway route that catches every path of every host.
 */
import { builtin, names } from "../support.ts";

/** A service admitting this many other workloads (all of them) is "allow all" in practice. */
const EVERY_PEER_MINIMUM = 3;

export const defaultDeny = builtin(
  "default-deny",
  "allow rules stay narrow; the edge does not catch every path",
  ({ spec, model }, report) => {
    const workloads = model.serviceNames.length + (spec.gateway ? 1 : 0);
    for (const name of model.serviceNames) {
      const svc = spec.services[name]!;
      svc.allow.forEach((rule, i) => {
        if ((rule.methods?.length ?? 0) === 0 && (rule.paths?.length ?? 0) === 0) {
          report(
            "E_POLICY_ALLOW_ANY_REQUEST",
            `services.${name}.allow[${i}]`,
            `the rule admits every method on every path of "${name}" from ${names(rule.from)}`,
            "list the methods and paths the peers need (methods: [...], paths: [...])",
          );
        }
      });
      // The spec refuses unknown peers and the service itself, so admitting every other workload is
      // admitting as many distinct peers as there are.
      const admitted = new Set(svc.allow.flatMap((r) => r.from));
      const peers = workloads - 1;
      if (peers >= EVERY_PEER_MINIMUM && admitted.size === peers) {
        report(
          "E_POLICY_ALLOW_EVERY_PEER",
          `services.${name}.allow`,
          `"${name}" admits all ${peers} other workloads of the mesh (${names([...admitted].sort())})`,
          `admit only the peers that call "${name}" (its callers: ${names([...model.callers(name)]) || "none"})`,
        );
      }
    }
    for (const r of model.routes) {
      const m = r.match;
      if (m.path === "/**" && m.hosts.length === 0 && m.headers.length === 0 && m.query.length === 0) {
        report(
          "E_POLICY_CATCH_ALL_ROUTE",
          `${model.routePath(r.name)}.match.path`,
          `route "${r.name}" matches every path of every host${m.methods.length ? ` for ${m.methods.join(", ")}` : ""}: requests no other route claims reach ${describeAction(r.action)} instead of a 404`,
          "match the paths this route serves (e.g. /app/**), or restrict it to hosts",
        );
      }
    }
  },
);

function describeAction(a: { kind: string; backends?: { cluster: string }[] }): string {
  return a.kind === "forward" && a.backends ? a.backends.map((b) => b.cluster).join(", ") : `its ${a.kind}`;
}
