/**
 * certificates: SVID lifetimes and CA rotation leave room for things to go wrong. The spec refuses
 * lifetimes that cannot work (a leaf outliving its intermediate, renewBefore ≥ TTL, …); this guardrail
 * refuses the ones that work only while nothing fails:
 *  - a renewal that starts within twice the clock skew of expiry meets peers that already see the SVID as
 *    expired as soon as the renewal runs a little late;
 *  - an intermediate can be retired only once every leaf it signed has expired (workloadTtl + clockSkew
 *    after the last one was issued, runtime/pki/rotation.ts), so that lead time must be a small part of
 *    its life;
 *  - a root rotation is staged over at least one intermediate lifetime.
 */
import { builtin, ms } from "../support.ts";

export const certificates = builtin(
  "certificates",
  "SVID lifetimes, renewal and CA rotation leave room for failures and clock skew",
  ({ infra, limits }, report) => {
    const ca = infra.ca;
    if (ca.workloadTtlMs > limits.maxWorkloadTtlMs) {
      report(
        "E_POLICY_CERT_TTL_TOO_LONG",
        "mesh.ca.workloadTtl",
        `workload SVIDs live ${ms(ca.workloadTtlMs)}, longer than the ${ms(limits.maxWorkloadTtlMs)} allowed: a stolen key stays valid that long (SVIDs are not revoked)`,
        `lower mesh.ca.workloadTtl (24h is the default), or raise limits.maxWorkloadTtl in the policy file`,
      );
    }
    if (ca.renewBeforeMs <= 2 * ca.clockSkewMs) {
      report(
        "E_POLICY_CERT_RENEW_SKEW",
        "mesh.ca.renewBefore",
        `SVIDs are renewed ${ms(ca.renewBeforeMs)} before expiry, within twice the ${ms(ca.clockSkewMs)} clock skew: a renewal that runs a little late meets peers whose clocks already see the SVID expired`,
        `raise mesh.ca.renewBefore well above ${ms(2 * ca.clockSkewMs)} (a third of workloadTtl is the default)`,
      );
    }
    if (ca.renewBeforeMs * 4 < ca.workloadTtlMs) {
      report(
        "E_POLICY_CERT_RENEW_WINDOW",
        "mesh.ca.renewBefore",
        `SVIDs are renewed ${ms(ca.renewBeforeMs)} before expiry, under a quarter of their ${ms(ca.workloadTtlMs)} lifetime: a CA outage longer than that takes workloads down`,
        `renew at least ${ms(Math.ceil(ca.workloadTtlMs / 4))} before expiry (a third of the lifetime is the default)`,
      );
    }
    const lead = ca.workloadTtlMs + ca.clockSkewMs;
    if (ca.intermediateValidityMs < 2 * lead) {
      report(
        "E_POLICY_CA_ROTATION_OVERLAP",
        "mesh.ca.intermediateValidity",
        `the intermediate lives ${ms(ca.intermediateValidityMs)}, but must be replaced ${ms(lead)} (workloadTtl + clockSkew) before it expires so that every leaf it signed expires first: more than half of its life`,
        `make intermediateValidity at least ${ms(2 * lead)} (1y is the default), or shorten workloadTtl`,
      );
    }
    if (ca.rootValidityMs < 2 * ca.intermediateValidityMs) {
      report(
        "E_POLICY_CA_ROOT_OVERLAP",
        "mesh.ca.rootValidity",
        `the root lives ${ms(ca.rootValidityMs)}, less than two intermediate lifetimes (${ms(ca.intermediateValidityMs)}): intermediates issued in its second half are cut short and a staged root rotation has no room`,
        `make rootValidity at least ${ms(2 * ca.intermediateValidityMs)} (10y is the default), or shorten intermediateValidity`,
      );
    }
  },
);
