/**
 * strict-mtls: every hop of the mesh is mutually authenticated. The spec accepts `mesh.mtls: permissive`
 * for migrations (with a warning); this guardrail refuses it, refuses any RuntimeConfig that reaches a
 * mesh service without mTLS, and warns when clients reach the edge itself in plaintext, or when a gateway
 * route's requests leave the mesh in plaintext (an external backend without `tls: originate`).
 */
import { builtin } from "../support.ts";

export const strictMtls = builtin(
  "strict-mtls",
  "mTLS is strict on every hop; the edge offers TLS",
  ({ infra, runtime, spec }, report) => {
    if (infra.mtls !== "strict") {
      report(
        "E_POLICY_MTLS_PERMISSIVE",
        "mesh.mtls",
        "mTLS is permissive: every sidecar also accepts plaintext requests, which carry no peer identity, so allow rules cannot tell callers apart",
        "set mesh.mtls: strict once every workload runs a sidecar (or lower E_POLICY_MTLS_PERMISSIVE to warning in the policy file for the migration)",
      );
    }
    const proxies = [
      ...(runtime.gateway ? [{ config: runtime.gateway, path: "gateway" }] : []),
      ...runtime.sidecars.map((s) => ({ config: s, path: `services.${s.name}` })),
    ];
    for (const { config, path } of proxies) {
      for (const c of config.clusters) {
        if (c.address) {
          // A backend outside the mesh (a route's external destination): TLS is the destination's choice.
          if (c.tls.mode === "none")
            report(
              "E_POLICY_EXTERNAL_PLAINTEXT",
              `external.${c.name}.tls`,
              `gateway routes forward to external "${c.name}" (${c.address}:${c.port}) over plain HTTP: requests, with the principal headers the gateway adds, leave the mesh unencrypted`,
              `set tls: originate on external.${c.name} if it speaks TLS (with ca for a private CA); keep plain HTTP only on a network you trust`,
            );
          continue;
        }
        if (c.tls.mode !== "mtls") {
          report(
            "E_POLICY_CLUSTER_PLAINTEXT",
            path,
            `the ${config.kind} RuntimeConfig "${config.name}" reaches "${c.service}" without mTLS (cluster ${c.name} has tls.mode ${c.tls.mode})`,
            "deploy the config translate() produces (every mesh cluster uses mTLS); plaintext clusters are for local tests only",
          );
        }
      }
    }
    const gateway = infra.workloads.find((w) => w.kind === "gateway");
    const tlsAtLoadBalancer = infra.targets.aws?.certificateArn != null;
    if (gateway && !gateway.listeners.some((l) => l.protocol === "https") && !tlsAtLoadBalancer) {
      report(
        "E_POLICY_EDGE_PLAINTEXT",
        spec.gateway?.listeners ? "gateway.listeners" : "gateway",
        `the gateway listens only on plaintext http (${gateway.listeners.map((l) => `${l.name}:${l.port}`).join(", ")}) and no target terminates TLS in front of it`,
        "add an https listener with tls.certificates, or terminate TLS at the load balancer (targets.aws.certificateArn)",
      );
    }
  },
);
