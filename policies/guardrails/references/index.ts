/**
 * references: what the spec cannot check by name alone. The spec refuses unknown names; this guardrail
 * checks the IR's own cross-references (so hand-edited or mismatched RuntimeConfigs are caught before they
 * are deployed) — a sidecar's external destinations included — that every gateway host has a certificate on each https listener, that redirects to this
 * gateway land on a route (asked of decide()), and reports providers and consumers nothing uses.
 */
import { decide } from "../../../runtime/decide/decide.ts";
import { INTERNET } from "../../model.ts";
import { destinationOf } from "../../reachability.ts";
import { builtin, names } from "../support.ts";

/** Does a certificate host cover a served host? TLS wildcards match exactly one label. */
function certCovers(cert: string, host: string): boolean {
  if (cert === host) return true;
  if (!cert.startsWith("*.") || host.startsWith("*.")) return false;
  const suffix = cert.slice(1);
  return host.endsWith(suffix) && !host.slice(0, -suffix.length).includes(".");
}

export const references = builtin(
  "references",
  "the IR's references resolve, certificates cover the hosts, redirects land on routes",
  ({ infra, runtime, spec, model }, report) => {
    const dangling = (path: string, message: string) =>
      report(
        "E_POLICY_DANGLING_REFERENCE",
        path,
        message,
        "deploy the IR and RuntimeConfigs translate() produces from one spec, together",
      );
    const workloads = new Set(infra.workloads.map((w) => w.name));
    const identities = new Set(infra.identities.map((i) => i.spiffeId));

    const gw = runtime.gateway;
    if (gw) {
      const clusters = new Set(gw.clusters.map((c) => c.name));
      for (const r of gw.routes) {
        for (const t of model.targets(r)) {
          if (!clusters.has(t.service))
            dangling(
              t.source,
              `route "${r.name}" sends to cluster "${t.service}", which the gateway config does not define`,
            );
        }
      }
    }
    for (const s of runtime.sidecars) {
      const clusters = new Set(s.clusters.map((c) => c.name));
      for (const o of s.outbound.services) {
        if (!clusters.has(o.cluster))
          dangling(
            `services.${s.name}.calls`,
            `the sidecar of "${s.name}" routes "${o.service}" to cluster "${o.cluster}", which its config does not define`,
          );
      }
      s.inbound.authz.rules.forEach((rule) => {
        for (const peer of rule.from) {
          if (!identities.has(peer))
            dangling(
              rule.source,
              `the sidecar of "${s.name}" admits ${peer}, which is no identity of this mesh`,
            );
        }
      });
      if (!workloads.has(s.name))
        dangling(`services.${s.name}`, `a sidecar config exists for "${s.name}", which is no workload`);
    }
    // Destinations outside the mesh: a sidecar relays only to a destination of the IR, at its host and
    // port, for an egress edge that is both declared and allowed; every egress edge names a workload and
    // a destination of the IR.
    const externals = new Map(infra.externals.map((x) => [x.name, x]));
    for (const s of runtime.sidecars) {
      for (const x of s.outbound.external) {
        const ir = externals.get(x.name);
        const edge = infra.egress.find((e) => e.from === s.name && e.external === x.name);
        if (!ir)
          dangling(
            `services.${s.name}.calls`,
            `the sidecar of "${s.name}" relays to the external destination "${x.name}", which the IR does not define`,
          );
        else if (ir.host !== x.host || ir.port !== x.port)
          dangling(
            `external.${x.name}`,
            `the sidecar of "${s.name}" relays "${x.name}" to ${destinationOf(x)}, but the IR's destination is ${destinationOf(ir)}`,
          );
        else if (!edge || !edge.declared || !edge.allowed)
          dangling(
            `external.${x.name}.allow`,
            `the sidecar of "${s.name}" relays to "${x.name}", but the IR's edge ${s.name} → ${x.name} is ${edge ? (edge.declared ? "not allowed" : "not declared") : "missing"}`,
          );
      }
    }
    for (const e of infra.egress) {
      if (!workloads.has(e.from))
        dangling(
          e.allowedBy[0] ?? `external.${e.external}`,
          `the egress edge ${e.from} → ${e.external} names "${e.from}", which is no workload`,
        );
      if (!externals.has(e.external))
        dangling(
          `services.${e.from}.calls`,
          `the egress edge ${e.from} → ${e.external} names "${e.external}", which is no external destination of the IR`,
        );
      const sidecar = runtime.sidecars.find((c) => c.name === e.from);
      if (e.declared && e.allowed && sidecar && !sidecar.outbound.external.some((x) => x.name === e.external))
        dangling(
          e.allowedBy[0] ?? `external.${e.external}`,
          `the IR's egress edge ${e.from} → ${e.external} is declared and allowed, but the sidecar of "${e.from}" does not relay it`,
        );
    }
    for (const t of infra.observability.metrics.targets) {
      if (!workloads.has(t.workload))
        dangling("observability.metrics", `a metrics target names "${t.workload}", which is no workload`);
    }
    for (const e of infra.edges) {
      for (const end of [e.from, e.to])
        if (end !== INTERNET && !workloads.has(end))
          dangling(
            e.allowedBy[0] ?? "services",
            `the edge ${e.from} → ${e.to} names "${end}", which is no workload`,
          );
    }

    if (gw) {
      // Certificates: every https listener covers every host the gateway serves.
      const specListeners = spec.gateway?.listeners ?? [];
      for (const l of gw.listeners) {
        if (!l.tls) continue;
        const i = specListeners.findIndex((s) => s.name === l.name);
        const certHosts = l.tls.certificates.flatMap((c) => c.hosts);
        const missing = gw.hosts.filter((h) => !certHosts.some((c) => certCovers(c, h)));
        if (missing.length > 0) {
          report(
            "E_POLICY_TLS_HOST_UNCOVERED",
            i >= 0 ? `gateway.listeners[${i}].tls.certificates` : "gateway.listeners",
            `https listener "${l.name}" has no certificate for ${names(missing)}: clients asking for ${missing.length === 1 ? "it" : "them"} get another host's certificate and fail verification`,
            `add ${missing.length === 1 ? "the host" : "the hosts"} to a certificate's hosts (or a certificate for ${missing.length === 1 ? "it" : "them"})`,
          );
        }
      }

      // Redirects to this gateway: the target must be routed (and not back to the redirect itself).
      const compiled = model.gateway()!;
      const exactHosts = gw.hosts.filter((h) => !h.startsWith("*."));
      for (const r of gw.routes) {
        const a = r.action;
        if (a.kind !== "redirect" || a.path === null) continue;
        if (a.host !== null && !servedBy(gw.hosts, a.host)) continue; // another site
        const hosts =
          a.host !== null
            ? [a.host]
            : r.match.hosts.length > 0
              ? r.match.hosts.filter((h) => !h.startsWith("*."))
              : exactHosts;
        const host = hosts[0] ?? "mgprobe.invalid";
        const target = a.path.replace(/\{[A-Za-z_][A-Za-z0-9_]*\}/g, "mgprobe");
        const d = decide(compiled, { method: "GET", target, host, header: () => undefined });
        const path = `${model.routePath(r.name)}.redirect.path`;
        if (d.kind === "reject" && (d.code === "no_route" || d.code === "method_not_allowed")) {
          report(
            "E_POLICY_REDIRECT_UNROUTED",
            path,
            `route "${r.name}" redirects to ${host}${a.path}, which no route serves for GET (the gateway answers ${d.status})`,
            "redirect to a path a route serves, or add the route",
          );
        } else if (d.kind === "route" && d.route.name === r.name) {
          report(
            "E_POLICY_REDIRECT_UNROUTED",
            path,
            `route "${r.name}" redirects to ${host}${a.path}, which it matches itself: clients loop`,
            "redirect to a path this route does not match",
          );
        }
      }

      // Definitions no route uses.
      const used = new Set<string>();
      let anyConsumer = false;
      const consumers = new Set<string>();
      const groups = new Set<string>();
      for (const r of gw.routes) {
        for (const m of r.auth.anyOf) {
          if (m.kind === "apiKey") {
            if (r.auth.consumers.length === 0 && r.auth.groups.length === 0) anyConsumer = true;
            r.auth.consumers.forEach((c) => consumers.add(c));
            r.auth.groups.forEach((g) => groups.add(g));
          } else used.add(`${m.kind}:${m.provider}`);
        }
      }
      const unused = (name: string, path: string, what: string) =>
        report(
          "E_POLICY_UNUSED_DEFINITION",
          path,
          `${what} "${name}" is defined but no route accepts it`,
          "remove it, or reference it from a route's auth",
        );
      for (const p of gw.auth.jwt)
        if (!used.has(`jwt:${p.name}`)) unused(p.name, `gateway.jwt.${p.name}`, "JWT provider");
      for (const p of gw.auth.oidc)
        if (!used.has(`oidc:${p.name}`)) unused(p.name, `gateway.oidc.${p.name}`, "OIDC provider");
      for (const p of gw.auth.clientCert)
        if (!used.has(`clientCert:${p.name}`))
          unused(p.name, `gateway.clientCerts.${p.name}`, "client-certificate provider");
      if (gw.auth.apiKeys && !anyConsumer) {
        for (const c of gw.auth.apiKeys.consumers) {
          if (!consumers.has(c.name) && !c.groups.some((g) => groups.has(g)))
            unused(c.name, `gateway.apiKeys.consumers.${c.name}`, "API-key consumer");
        }
      }
    }
  },
);

function servedBy(hosts: readonly string[], host: string): boolean {
  if (hosts.length === 0) return true;
  return hosts.some(
    (h) => h === host || (h.startsWith("*.") && host.endsWith(h.slice(1)) && host.length > h.length - 1),
  );
}
