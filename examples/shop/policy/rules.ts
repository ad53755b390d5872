/**
 * An organization's own guardrail, in TypeScript: run it with
 *   meshgate verify examples/shop/mesh.yaml --rules examples/shop/policy/rules.ts
 * A rule module's default export is a Guardrail (or a list of them): a name, the codes it reports with
 * their default severity, and a pure check over the spec and its IR.
 */
import type { Guardrail } from "meshgate/policies";

const healthChecks: Guardrail = {
  name: "shop-health-checks",
  description: "services with more than one replica declare a health check",
  codes: {
    E_SHOP_NO_HEALTH_CHECK: {
      severity: "warning",
      text: "a replicated service has no health check, so a broken replica keeps receiving traffic",
    },
  },
  check: ({ spec }) =>
    Object.entries(spec.services)
      .filter(([, s]) => s.replicas > 1 && !s.healthCheck)
      .map(([name, s]) => ({
        code: "E_SHOP_NO_HEALTH_CHECK",
        path: `services.${name}`,
        message: `"${name}" runs ${s.replicas} replicas without a health check`,
        fix: `add healthCheck: { path: /healthz } to services.${name}`,
      })),
};

export default healthChecks;
