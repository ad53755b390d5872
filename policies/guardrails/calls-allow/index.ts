/**
 * calls-allow: the declared call graph and the allow rules agree. A declared call (or a gateway route) that
 * the callee would refuse is an error — every such request gets 403 — and a route some of whose requests
 * would be refused is a warning; an allow rule for a peer that never calls is reachable surface nobody
 * needs. Gateway routes are checked per method and path against the callee's rules (patterns.ts); a later
 * round refines this with the sidecar's own decision code. The same holds for destinations outside the
 * mesh (spec `external`): a declared call no allow rule of the destination admits is refused by the
 * caller's sidecar, and an allow rule naming a service that never calls the destination opens nothing
 * today but lets a later `calls` entry reach it unreviewed.
 */
import { GATEWAY } from "../../model.ts";
import { describeSet } from "../../patterns.ts";
import { destinationOf } from "../../reachability.ts";
import { builtin } from "../support.ts";

export const callsAllow = builtin(
  "calls-allow",
  "declared calls and gateway routes are admitted by the callee; allow rules name only callers",
  ({ spec, runtime, model }, report) => {
    const routed = new Set<string>();
    for (const name of model.serviceNames) {
      spec.services[name]!.calls.forEach((callee, i) => {
        const external = spec.external[callee];
        if (external) {
          if (!external.allow.some((r) => r.from.includes(name)))
            report(
              "E_POLICY_CALL_DENIED",
              `services.${name}.calls[${i}]`,
              `"${name}" declares a call to the external destination "${callee}" (${destinationOf(external)}), but no allow rule of external.${callee} admits "${name}": its sidecar refuses every such connection`,
              `add "${name}" to an allow rule of external.${callee}, or remove the call`,
            );
          return;
        }
        const rules = model.sidecar(callee)?.inbound.authz.rules ?? [];
        if (!rules.some((r) => r.from.includes(model.spiffeId(name)))) {
          report(
            "E_POLICY_CALL_DENIED",
            `services.${name}.calls[${i}]`,
            `"${name}" declares a call to "${callee}", but no allow rule of "${callee}" admits "${name}": every such request gets 403`,
            `add "${name}" to an allow rule of services.${callee} (with the methods and paths it needs), or remove the call`,
          );
        }
      });
    }
    for (const r of runtime.gateway?.routes ?? []) {
      for (const t of model.targets(r)) {
        routed.add(t.service);
        if (!model.sidecar(t.service)) continue;
        const set = { methods: t.methods, path: t.path };
        const verdict = model.admits(t.service, GATEWAY, set);
        const what =
          t.kind === "part" ? `aggregate part "${t.part}"` : t.kind === "mirror" ? "its mirror" : "it";
        if (verdict === "none") {
          report(
            "E_POLICY_CALL_DENIED",
            t.source,
            `route "${r.name}" sends ${describeSet(set)} to "${t.service}" (${what}), which no allow rule of "${t.service}" admits from the gateway: every such request gets 403`,
            `admit the gateway in services.${t.service}.allow for ${describeSet(set)}, or change the route`,
          );
        } else if (verdict === "some") {
          report(
            "E_POLICY_CALL_PARTLY_DENIED",
            t.source,
            `route "${r.name}" sends ${describeSet(set)} to "${t.service}" (${what}), but the allow rules of "${t.service}" admit only part of it from the gateway: the rest gets 403`,
            `widen the gateway's allow rule of services.${t.service} to cover ${describeSet(set)}, or narrow the route's methods or path`,
          );
        }
      }
    }
    for (const name of model.serviceNames) {
      spec.services[name]!.allow.forEach((rule, i) => {
        rule.from.forEach((peer, j) => {
          const calls = peer === GATEWAY ? routed.has(name) : model.callees(peer).includes(name);
          if (calls) return;
          report(
            "E_POLICY_ALLOW_WITHOUT_CALL",
            `services.${name}.allow[${i}].from[${j}]`,
            `"${name}" admits "${peer}", which never ${peer === GATEWAY ? "routes to it" : "declares a call to it"}`,
            peer === GATEWAY
              ? "remove the gateway from this rule, or add a gateway route to the service"
              : `remove "${peer}" here, or add "${name}" to services.${peer}.calls`,
          );
        });
      });
    }
    for (const name of model.externalNames) {
      spec.external[name]!.allow.forEach((rule, i) => {
        rule.from.forEach((peer, j) => {
          if (model.externalCalls(peer).includes(name)) return;
          report(
            "E_POLICY_ALLOW_WITHOUT_CALL",
            `external.${name}.allow[${i}].from[${j}]`,
            `the external destination "${name}" admits "${peer}", which never declares a call to it (its sidecar relays nothing there until it does)`,
            `remove "${peer}" here, or add "${name}" to services.${peer}.calls`,
          );
        });
      });
    }
  },
);
