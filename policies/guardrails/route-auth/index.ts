/**
 * route-auth: every gateway route authenticates unless it says `public: true` (checked again on the
 * RuntimeConfig, so a hand-edited or stale config cannot slip an open route through), public routes
 * never write, and routes that write require more than "any valid credential".
 */
import type { GatewayRoute, GatewayRuntimeConfig } from "../../../runtime/contract/schema.ts";
import { builtin } from "../support.ts";

/** RFC 9110 §9.2.1 safe methods: the only ones an anonymous caller may send to a service. */
const SAFE = new Set(["GET", "HEAD", "OPTIONS", "TRACE"]);

/** The unsafe methods a route accepts ("any method" when it names none). */
function unsafeMethods(r: GatewayRoute): string[] {
  if (r.match.methods.length === 0) return ["any method"];
  return r.match.methods.filter((m) => !SAFE.has(m));
}

/** The accepted mechanisms that admit any principal they authenticate (no scope, claim, consumer, …). */
function unrestricted(r: GatewayRoute, gw: GatewayRuntimeConfig): string[] {
  const a = r.auth;
  const out: string[] = [];
  for (const m of a.anyOf) {
    if ((m.kind === "jwt" || m.kind === "oidc") && a.scopes.length === 0 && a.claims.length === 0)
      out.push(`${m.kind} ${m.provider}`);
    if (m.kind === "apiKey" && a.consumers.length === 0 && a.groups.length === 0) out.push("any API key");
    if (m.kind === "clientCert") {
      const p = gw.auth.clientCert.find((c) => c.name === m.provider);
      if (p && p.subjects.length === 0 && p.sans.length === 0) out.push(`clientCert ${m.provider}`);
    }
  }
  return out;
}

export const routeAuth = builtin(
  "route-auth",
  "routes authenticate unless public; public routes only read; writes need a scope, claim, consumer or group",
  ({ runtime, model }, report) => {
    const gw = runtime.gateway;
    if (!gw) return;
    for (const r of gw.routes) {
      const path = model.routePath(r.name);
      if (!r.auth.public && r.auth.anyOf.length === 0) {
        report(
          "E_POLICY_ROUTE_UNAUTHENTICATED",
          path,
          `route "${r.name}" requires no authentication in the gateway RuntimeConfig but is not marked public`,
          "deploy the config translate() produces from the spec; give the route auth, or public: true in the spec",
        );
        continue;
      }
      if (r.action.kind !== "forward") continue; // redirects, static files and GET fan-outs write nothing upstream
      const unsafe = unsafeMethods(r);
      if (unsafe.length === 0) continue;
      if (r.auth.public) {
        report(
          "E_POLICY_PUBLIC_WRITE",
          r.match.methods.length === 0 ? `${path}.match` : `${path}.match.methods`,
          `public route "${r.name}" forwards ${unsafe.join(", ")} from anyone to ${r.action.backends.map((b) => b.cluster).join(", ")}`,
          "authenticate the route (auth: { jwt: … , scopes: [...] }), or match only GET and HEAD",
        );
        continue;
      }
      const open = unrestricted(r, gw);
      if (open.length > 0) {
        report(
          "E_POLICY_WRITE_UNSCOPED",
          `${path}.auth`,
          `route "${r.name}" accepts ${unsafe.join(", ")} from every caller that authenticates with ${open.join(" or ")}`,
          "require scopes or claims for tokens, consumers or groups for API keys (or subjects/sans on the client-certificate provider)",
        );
      }
    }
  },
);
