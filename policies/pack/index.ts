/**
 * The pack's entry point: `pulumi preview --policy-pack policies/pack` runs it, and `new PolicyPack(...)`
 * starts the analyzer's gRPC server (its port is printed on stdout for the engine). Keep it the only
 * statement here: the policies live in policies.ts, which the tests import and call directly.
 */
import { PolicyPack } from "@pulumi/policy";
import { PACK_POLICIES } from "./policies.ts";

new PolicyPack("meshgate", {
  description: "meshgate guardrails on the mesh spec, and Kubernetes workload hardening",
  enforcementLevel: "mandatory",
  policies: PACK_POLICIES,
});
