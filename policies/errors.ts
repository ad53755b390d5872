/**
 * The policy layer's catalog (E_POLICY_*): every violation a built-in guardrail reports, with the guardrail
 * that owns it and its default severity, and the errors of policy files and rule modules. Codes are stable:
 * CI scripts and policy files match on them; messages may improve. The README's error table is generated
 * from this catalog (scripts/generated.ts) and test/docs/generated.test.ts keeps them in sync.
 *
 * Guardrails are the policy layer over a *valid* spec: what the spec already refuses (unknown references,
 * routes without auth, inconsistent CA lifetimes, …) is never repeated here. Several spec warnings
 * (W_SPEC_*) come back as policy violations with a severity an organization can promote or lower.
 */

/** How bad a violation is: `error` fails `meshgate verify`, `warning` and `info` are reported only. */
export type Severity = "error" | "warning" | "info";

interface Entry {
  /** The guardrail folder (policies/guardrails/<name>) that reports the code; "" for file/module errors. */
  readonly guardrail: string;
  readonly severity: Severity;
  readonly text: string;
}

const g = (guardrail: string, severity: Severity, text: string): Entry => ({ guardrail, severity, text });

export const PolicyErrorCatalog = {
  // strict-mtls
  E_POLICY_MTLS_PERMISSIVE: g(
    "strict-mtls",
    "error",
    "mTLS is permissive: sidecars also accept plaintext without a peer identity",
  ),
  E_POLICY_CLUSTER_PLAINTEXT: g(
    "strict-mtls",
    "error",
    "a proxy's RuntimeConfig reaches a mesh service without mTLS (tls.mode none)",
  ),
  E_POLICY_EDGE_PLAINTEXT: g(
    "strict-mtls",
    "warning",
    "the gateway has no https listener and no TLS-terminating target: clients reach the edge in plaintext",
  ),
  E_POLICY_EXTERNAL_PLAINTEXT: g(
    "strict-mtls",
    "warning",
    "a gateway route forwards to an external destination over plain HTTP (no tls: originate): its requests leave the mesh unencrypted",
  ),
  // default-deny
  E_POLICY_ALLOW_ANY_REQUEST: g(
    "default-deny",
    "warning",
    "an allow rule names no methods and no paths: every request of its peers is admitted",
  ),
  E_POLICY_ALLOW_EVERY_PEER: g(
    "default-deny",
    "error",
    "an allow rule admits every other workload of the mesh: deny-by-default in name only",
  ),
  E_POLICY_CATCH_ALL_ROUTE: g(
    "default-deny",
    "warning",
    "a gateway route matches every path (/**) of every host: nothing is denied at the edge by default",
  ),
  // route-auth
  E_POLICY_ROUTE_UNAUTHENTICATED: g(
    "route-auth",
    "error",
    "a gateway route in the RuntimeConfig requires no authentication and is not marked public",
  ),
  E_POLICY_PUBLIC_WRITE: g(
    "route-auth",
    "error",
    "a public route accepts an unsafe method (POST, PUT, PATCH, DELETE, or any method): anonymous writes",
  ),
  E_POLICY_WRITE_UNSCOPED: g(
    "route-auth",
    "warning",
    "an authenticated route accepts unsafe methods from any authenticated caller (no scopes, claims, consumers or groups)",
  ),
  // public-rate-limit
  E_POLICY_PUBLIC_ROUTE_UNLIMITED: g("public-rate-limit", "error", "a public route has no rate limit"),
  E_POLICY_RATE_LIMIT_CLIENT_KEY: g(
    "public-rate-limit",
    "warning",
    "a public route's rate limit is keyed by a header the client chooses: a new value per request evades it",
  ),
  E_POLICY_RATE_LIMIT_FAIL_OPEN: g(
    "public-rate-limit",
    "info",
    "public routes share a Redis rate-limit store that fails open: an outage lifts their limits",
  ),
  // client-address
  E_POLICY_CLIENT_IP_HOP_COUNT: g(
    "client-address",
    "warning",
    "routes admit by client address (auth.clientIps) taken from X-Forwarded-For by hop count: a connection that bypasses the proxies names its own",
  ),
  E_POLICY_CLIENT_IP_PROXY_ANY_SOURCE: g(
    "client-address",
    "error",
    "routes admit by client address while a listener takes PROXY headers from any source: whoever reaches its port names the address",
  ),
  // route-precedence
  E_POLICY_ROUTE_SHADOWED: g(
    "route-precedence",
    "error",
    "no request can reach the route: a route of higher precedence always wins (decided by the compiled router)",
  ),
  E_POLICY_ROUTE_CONFLICT: g(
    "route-precedence",
    "error",
    "two routes match the same requests with equal precedence: only their names decide which one serves",
  ),
  E_POLICY_ROUTE_VARIANT_PUBLIC: g(
    "route-precedence",
    "warning",
    "a path differing from an authenticated route's only in a trailing slash, case or ;param reaches a public route to the same upstream",
  ),
  E_POLICY_ROUTE_UNANALYZED: g(
    "route-precedence",
    "info",
    "the route's regex condition matches none of the probe values, so shadowing could not be decided",
  ),
  // references
  E_POLICY_DANGLING_REFERENCE: g(
    "references",
    "error",
    "the IR refers to a cluster, identity or workload it does not define (hand-edited or mismatched configs)",
  ),
  E_POLICY_TLS_HOST_UNCOVERED: g(
    "references",
    "error",
    "an https listener has no certificate for one of the gateway's hosts",
  ),
  E_POLICY_REDIRECT_UNROUTED: g(
    "references",
    "warning",
    "a redirect points at a path of this gateway that no route serves (the client follows it into a 404)",
  ),
  E_POLICY_UNUSED_DEFINITION: g(
    "references",
    "info",
    "an auth provider or API-key consumer is defined but no route uses it",
  ),
  // calls-allow
  E_POLICY_CALL_DENIED: g(
    "calls-allow",
    "error",
    "a declared call (or a gateway route) targets a service whose allow rules deny every such request",
  ),
  E_POLICY_CALL_PARTLY_DENIED: g(
    "calls-allow",
    "warning",
    "a gateway route forwards requests (methods or paths) that the target's allow rules deny",
  ),
  E_POLICY_ALLOW_WITHOUT_CALL: g(
    "calls-allow",
    "warning",
    "an allow rule names a peer that never calls the service (reachable surface nobody needs)",
  ),
  // retry-amplification
  E_POLICY_RETRY_AMPLIFICATION: g(
    "retry-amplification",
    "error",
    "along a path of the call graph, retries multiply beyond limits.maxRetryAmplification attempts",
  ),
  E_POLICY_CALL_CYCLE: g(
    "retry-amplification",
    "warning",
    "the declared call graph has a cycle (retries along it amplify without bound)",
  ),
  // timeout-budget
  E_POLICY_TIMEOUT_BUDGET: g(
    "timeout-budget",
    "error",
    "a caller's timeout for a call is shorter than the callee's own worst case (per-try × attempts + backoff): it always gives up first",
  ),
  E_POLICY_TIMEOUT_PER_TRY: g(
    "timeout-budget",
    "warning",
    "a caller's per-try timeout is shorter than the callee's worst case: it may abandon (and retry) an attempt the callee is still working on",
  ),
  E_POLICY_RETRIES_EXCEED_TIMEOUT: g(
    "timeout-budget",
    "warning",
    "a retry plan's worst case (per-try × attempts + backoff) is longer than its total timeout: the last retries never run",
  ),
  // idempotent-retries
  E_POLICY_RETRY_NON_IDEMPOTENT: g(
    "idempotent-retries",
    "error",
    "a retry plan retries failures after bytes were sent on requests with non-idempotent methods",
  ),
  // certificates
  E_POLICY_CERT_TTL_TOO_LONG: g(
    "certificates",
    "warning",
    "workload SVIDs live longer than limits.maxWorkloadTtl",
  ),
  E_POLICY_CERT_RENEW_SKEW: g(
    "certificates",
    "error",
    "renewBefore is within twice the clock skew: a slightly late renewal meets peers that already see the SVID expired",
  ),
  E_POLICY_CERT_RENEW_WINDOW: g(
    "certificates",
    "warning",
    "renewBefore is under a quarter of the SVID lifetime: a failed renewal has little time to recover",
  ),
  E_POLICY_CA_ROTATION_OVERLAP: g(
    "certificates",
    "error",
    "the intermediate must be rotated more than half its lifetime before expiry (every leaf it signed must expire first)",
  ),
  E_POLICY_CA_ROOT_OVERLAP: g(
    "certificates",
    "warning",
    "the root lives less than two intermediate lifetimes: a staged root rotation has no room",
  ),
  // observability
  E_POLICY_METRICS_DISABLED: g("observability", "error", "metrics are disabled (or have no backend)"),
  E_POLICY_METRICS_TARGET_MISSING: g("observability", "error", "a workload has no metrics scrape target"),
  E_POLICY_ACCESS_LOG_DISABLED: g("observability", "error", "access logs are disabled"),
  E_POLICY_TRACING_DISABLED: g("observability", "warning", "tracing is disabled or samples nothing"),
  // admin-ports
  E_POLICY_ADMIN_PORT_EXPOSED: g(
    "admin-ports",
    "error",
    "an admin port (/config, /metrics, JWKS) is reachable where clients connect: a gateway listener or the local gateway port",
  ),
  E_POLICY_PORT_COLLISION: g(
    "admin-ports",
    "error",
    "a service's port is one of its sidecar's ports (inbound, outbound, admin)",
  ),
  // policy files and rule modules
  E_POLICY_FILE_NOT_FOUND: g("", "error", "the policy file (--policy) cannot be read"),
  E_POLICY_FILE_INVALID: g(
    "",
    "error",
    "the policy file does not parse, or has an unknown key, rule code or severity (the message names it)",
  ),
  E_POLICY_RULES_LOAD: g("", "error", "a rule module (--rules) cannot be imported"),
  E_POLICY_RULES_INVALID: g(
    "",
    "error",
    "a rule module exports no valid Guardrail (name, description, codes, check), or reuses a name or code",
  ),
  // traffic assertions
  E_POLICY_ASSERTION_FAILED: g(
    "",
    "error",
    "a traffic assertion does not hold: the proxies would decide otherwise (the message shows each step)",
  ),
  E_POLICY_ASSERTIONS_NOT_FOUND: g("", "error", "the assertion file (--assertions) cannot be read"),
  E_POLICY_ASSERTIONS_INVALID: g(
    "",
    "error",
    "the assertion file does not parse, has an unknown key, or names a service, consumer, provider or route the spec does not have",
  ),
  E_POLICY_RULE_FAILED: g(
    "",
    "error",
    "a guardrail threw, or reported a code it does not declare: reported as a failure (fail closed)",
  ),
} as const satisfies Record<string, Entry>;

export type PolicyCode = keyof typeof PolicyErrorCatalog;

/** The catalog entry of a code. */
export function policyCode(code: PolicyCode): Entry {
  return PolicyErrorCatalog[code];
}

/** The codes a built-in guardrail reports, with their default severity and meaning. */
export function codesOf(guardrail: string): Record<string, { severity: Severity; text: string }> {
  const out: Record<string, { severity: Severity; text: string }> = {};
  for (const [code, e] of Object.entries(PolicyErrorCatalog) as [PolicyCode, Entry][]) {
    if (e.guardrail === guardrail) out[code] = { severity: e.severity, text: e.text };
  }
  return out;
}

/** A problem with a policy file or a rule module: code, where, what, and how to fix it. */
export interface PolicyLoadError {
  code: Extract<
    PolicyCode,
    | "E_POLICY_FILE_NOT_FOUND"
    | "E_POLICY_FILE_INVALID"
    | "E_POLICY_RULES_LOAD"
    | "E_POLICY_RULES_INVALID"
    | "E_POLICY_ASSERTIONS_NOT_FOUND"
    | "E_POLICY_ASSERTIONS_INVALID"
  >;
  /** The file the problem is in. */
  file: string;
  /** Dotted path inside the file ("" for the whole file). */
  path: string;
  message: string;
  hint: string;
  line?: number;
  column?: number;
}

export function formatPolicyLoadError(e: PolicyLoadError): string {
  const where = `${e.file}${e.line ? `:${e.line}:${e.column}` : ""}: `;
  return `${where}${e.path ? `${e.path}: ` : ""}${e.message} [${e.code}]\n    fix: ${e.hint}`;
}
