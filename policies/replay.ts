/**
 * Replay: re-decide logged requests under a proposed spec and list those whose outcome would change.
 *
 * The access lines of the gateway and the sidecars carry the facts decide() used: the method, the
 * canonical path (the raw path of requests refused before routing), the Host header, the client address, the values of headers that route conditions read
 * (`[redacted]` for a credential-like name: presence is replayed, a value comparison is skipped),
 * and the principal's identity and grants (mechanism and provider, subject, API-key consumer, scopes — never
 * a credential); a sidecar's inbound line carries the caller's SPIFFE ID. Each line becomes a
 * TrafficRequest that explainRequest() decides under the proposed spec; the outcome (allow or deny, the
 * route, the status class of a refusal) is compared with the logged one, or with the decision under a base
 * spec (`--base`), which isolates the effect of the change from whatever else the log recorded.
 *
 * A sidecar's egress lines (tunnels: `CONNECT host:port` on the proxy port, or an external's local port)
 * are replayed too: the tunnel's caller, host and port are decided again — under the proposed spec a target
 * is the external destination the caller's sidecar would match (decide/external.ts), and a target no
 * external declares any more is refused; an outbound access line to an external carries the name or
 * address the request went to (`host`).
 *
 * What a line cannot carry is said, not guessed: the query string (it may hold credentials) is not logged,
 * so routes with query conditions are replayed without one; token claims other than `sub` and the scopes
 * are not logged (claim conditions see only those); client-certificate and OIDC principals are skipped.
 */
import { compileExternalMatcher } from "../runtime/decide/external.ts";
import { canonicalHost as egressHost, parseConnectAuthority } from "../runtime/sidecar/egress.ts";
import { REDACTED } from "../runtime/gateway/redact.ts";
import { explainRequest, requestProblems, type TrafficDecision, type TrafficRequest } from "./assertions.ts";
import { INTERNET } from "./model.ts";
import type { PolicyInput } from "./run.ts";

/** A request's outcome, as logged or as decided. */
export interface ReplayOutcome {
  verdict: "allow" | "deny";
  /** The gateway route (internet requests) or the callee's allow rule (mesh requests); null = none. */
  route: string | null;
  /** The status class of a refusal (`4xx`), or null when allowed. */
  statusClass: string | null;
}

/** One access line made into a request. */
export interface LoggedRequest {
  /** 1-based line number in the log. */
  line: number;
  requestId: string;
  proxy: "gateway" | "sidecar";
  /** The request to decide again, or null when the line cannot be replayed (see `skipped`). */
  request: TrafficRequest | null;
  /** How the request was authenticated, to re-establish it under each spec. */
  principal: { kind: "jwt"; provider: string } | { kind: "apiKey"; consumer: string } | null;
  /** Why the line is not replayed. */
  skipped: string | null;
  logged: ReplayOutcome & { status: number };
  /**
   * A tunnel (an egress line): through `connect` the host and port the app asked for, decided again to
   * whichever external destination they reach under each spec; through `local` the external's local port,
   * which exists as long as the external does.
   */
  tunnel?: { via: "connect" | "local"; host: string; port: number; external: string | null };
}

export interface ReplayChange {
  line: number;
  requestId: string;
  /** "GET api.shop.example /api/orders from internet (jwt main sub u-1 scopes orders:read)". */
  request: string;
  before: ReplayOutcome;
  after: ReplayOutcome;
  /** The proposed decision's verdict line, with the layer and code of a refusal. */
  detail: string;
}

export interface ReplayReport {
  /** What "before" is: `log` (the logged outcomes) or the base spec's label. */
  base: string;
  head: string;
  lines: number;
  replayed: number;
  skipped: { line: number; reason: string }[];
  changed: ReplayChange[];
  /** With a base spec: requests whose logged outcome the base spec does not reproduce (the log is from another spec). */
  drift: number;
}

const DECIDE_REJECTS = new Set([
  "bad_method",
  "bad_request_target",
  "bad_host",
  "host_not_served",
  "no_route",
  "method_not_allowed",
]);

const statusClass = (status: number) => `${Math.floor(status / 100)}xx`;

/** Parses JSON access lines (other lines and events are ignored); one entry per request id. */
export function parseAccessLog(text: string): { requests: LoggedRequest[]; ignored: number } {
  const requests: LoggedRequest[] = [];
  const seen = new Set<string>();
  let ignored = 0;
  text.split("\n").forEach((raw, i) => {
    if (!raw.trim()) return;
    let l: Record<string, unknown>;
    try {
      l = JSON.parse(raw) as Record<string, unknown>;
    } catch {
      ignored++;
      return;
    }
    if (l.event === "egress" && typeof l.service === "string" && typeof l.target === "string") {
      requests.push(fromEgressLine(l, i + 1));
      return;
    }
    if (l.event !== "access" || typeof l.requestId !== "string" || typeof l.method !== "string") {
      ignored++;
      return;
    }
    // The same request in the caller's outbound line and the callee's inbound line: the first one wins.
    const key = `${l.proxy === "gateway" ? "g" : "s"}:${l.requestId}`;
    if (seen.has(key)) return;
    seen.add(key);
    requests.push(
      l.proxy === "gateway" || l.route !== undefined ? fromGatewayLine(l, i + 1) : fromSidecarLine(l, i + 1),
    );
  });
  return { requests, ignored };
}

const str = (v: unknown): string | undefined => (typeof v === "string" ? v : undefined);

function fromGatewayLine(l: Record<string, unknown>, line: number): LoggedRequest {
  const status = typeof l.status === "number" ? l.status : 0;
  const outcome = str(l.outcome) ?? "";
  const refused = DECIDE_REJECTS.has(outcome) || outcome.startsWith("denied_") || l.route === "none";
  const base: LoggedRequest = {
    line,
    requestId: l.requestId as string,
    proxy: "gateway",
    request: null,
    principal: null,
    skipped: null,
    logged: {
      verdict: refused ? "deny" : "allow",
      route: l.route === "none" || typeof l.route !== "string" ? null : l.route,
      statusClass: refused ? statusClass(status) : null,
      status,
    },
  };
  const skip = (reason: string): LoggedRequest => ({ ...base, skipped: reason });
  if (outcome === "bad_request_target")
    return skip("the target was refused by canonicalization (under every spec)");
  const host = str(l.host);
  const path = str(l.path);
  if (host === undefined || !path)
    return skip("the line has no host or path (written before replay facts were logged)");
  const auth = str(l.auth);
  let principal: LoggedRequest["principal"] = null;
  if (auth?.startsWith("jwt:")) principal = { kind: "jwt", provider: auth.slice(4) };
  else if (auth === "apiKey" && str(l.consumer)) principal = { kind: "apiKey", consumer: str(l.consumer)! };
  else if (auth !== undefined) return skip(`${auth.split(":")[0]} principals are not modelled`);
  const request: TrafficRequest = { from: INTERNET, method: l.method as string, path, host };
  const client = str(l.client);
  if (client) request.clientIp = client;
  if (l.headers && typeof l.headers === "object")
    request.headers = Object.fromEntries(
      Object.entries(l.headers as Record<string, unknown>).filter(
        (e): e is [string, string] => typeof e[1] === "string",
      ),
    );
  if (principal?.kind === "jwt") {
    const claims: Record<string, unknown> = {};
    if (str(l.subject)) claims.sub = str(l.subject);
    request.claims = claims;
    request.scopes = (str(l.scopes) ?? "").split(" ").filter(Boolean);
    request.provider = principal.provider;
  } else if (principal?.kind === "apiKey") request.consumer = principal.consumer;
  return { ...base, request, principal };
}

/** A sidecar line not yet made into a request: its outcome, refused (`denied_*`) or let through. */
function sidecarLine(l: Record<string, unknown>, line: number, requestId: string, route: string | null) {
  const status = typeof l.status === "number" ? l.status : 0;
  const outcome = str(l.outcome) ?? "";
  const refused = outcome.startsWith("denied_");
  const base: LoggedRequest = {
    line,
    requestId,
    proxy: "sidecar",
    request: null,
    principal: null,
    skipped: null,
    logged: {
      verdict: refused ? "deny" : "allow",
      route,
      statusClass: refused ? statusClass(status) : null,
      status,
    },
  };
  return { base, outcome, refused };
}

function fromSidecarLine(l: Record<string, unknown>, line: number): LoggedRequest {
  const route = str(l.direction) === "inbound" ? (str(l.rule) ?? null) : null;
  const { base, outcome, refused } = sidecarLine(l, line, l.requestId as string, route);
  const skip = (reason: string): LoggedRequest => ({ ...base, skipped: reason });
  if (outcome === "denied_bad_request_target")
    return skip("the target was refused by canonicalization (under every spec)");
  const path = str(l.path);
  const service = str(l.service);
  if (!path || !service)
    return skip("the line has no path or service (written before replay facts were logged)");
  if (str(l.direction) === "inbound") {
    const peerId = str(l.peerId);
    if (!peerId) return skip("a plaintext request: no caller identity");
    return { ...base, request: { from: peerId, to: service, method: l.method as string, path } };
  }
  const to = str(l.peer);
  if (!to || refused)
    return skip("an outbound request the caller's sidecar refused: its destination is not logged");
  // The callee's inbound line has the allow rule; from the caller's side only the verdict is compared.
  // To an external destination, `host` is the name or address the request went to.
  const host = str(l.host);
  return {
    ...base,
    logged: { ...base.logged, route: null },
    request: { from: service, to, method: l.method as string, path, ...(host ? { host } : {}) },
  };
}

/** A tunnel's line (`event: "egress"`): refused (`denied_*`), or let through (whatever the network did). */
function fromEgressLine(l: Record<string, unknown>, line: number): LoggedRequest {
  const { base, outcome } = sidecarLine(l, line, `line ${line}`, null);
  if (outcome === "denied_egress_bad_authority")
    return { ...base, skipped: "the CONNECT target was malformed (refused under every spec)" };
  const via = str(l.via) === "local" ? "local" : "connect";
  const a = parseConnectAuthority(l.target as string);
  if (!a.ok) return { ...base, skipped: `the target ${JSON.stringify(l.target)} is not host:port` };
  const external = str(l.external) ?? null;
  return {
    ...base,
    tunnel: { via, host: a.host, port: a.port, external },
    request: { from: l.service as string, to: external ?? "", method: "CONNECT", path: "/" },
  };
}

/**
 * A tunnel under one spec: the external destination it reaches — for a CONNECT, the one the caller's
 * sidecar matches for the host and port (else the one any external declaring them is, for the reason it
 * is refused); for a local port, the external of that name — or the refusal when none does.
 */
function tunnelRequest(input: PolicyInput, r: LoggedRequest): TrafficRequest | ReplayOutcome {
  const t = r.tunnel!;
  const from = r.request!.from;
  const externals = input.model.infra.externals;
  if (t.via === "local") {
    if (t.external === null || !externals.some((x) => x.name === t.external))
      return { verdict: "deny", route: null, statusClass: "none" };
    return { from, to: t.external, method: "CONNECT", path: "/" };
  }
  const canonical = <T extends { host: string }>(x: T): T => ({ ...x, host: egressHost(x.host) ?? x.host });
  const relays = input.model.sidecar(from)?.outbound.external ?? [];
  const e =
    compileExternalMatcher(relays.map(canonical)).match(t.host, t.port) ??
    compileExternalMatcher(externals.map(canonical)).match(t.host, t.port);
  if (e === undefined) return { verdict: "deny", route: null, statusClass: "4xx" };
  return { from, to: e.name, method: "CONNECT", path: "/", host: t.host, port: t.port };
}

/** The request under one spec: the SPIFFE ID named as a workload, credentials the spec no longer has dropped. */
function requestFor(input: PolicyInput, r: LoggedRequest): TrafficRequest | string {
  const req = { ...r.request! };
  if (req.from !== INTERNET && req.from.startsWith("spiffe://")) {
    const name = input.model.identityName(req.from);
    if (name === undefined) return `the caller ${req.from} is not a workload of this spec`;
    req.from = name;
  }
  if (req.from === INTERNET) {
    const gw = input.runtime.gateway;
    // A credential-like header is logged present, its value REDACTED: a route comparing its value cannot
    // be decided again from the line.
    for (const [name, value] of Object.entries(req.headers ?? {}))
      if (
        value === REDACTED &&
        gw?.routes.some((r) => r.match.headers.some((h) => h.name.toLowerCase() === name && h.value !== null))
      )
        return `the value of ${name} is not in access lines (a credential header) and a route compares it`;
    // A token of a provider the spec no longer has, or the key of a removed consumer, authenticates
    // nobody: the request is anonymous under that spec (as the gateway would see it).
    if (req.provider !== undefined && !gw?.auth.jwt.some((p) => p.name === req.provider)) {
      delete req.provider;
      delete req.claims;
      delete req.scopes;
    }
    if (req.consumer !== undefined && !gw?.auth.apiKeys?.consumers.some((c) => c.name === req.consumer))
      delete req.consumer;
  }
  const problems = requestProblems(input, req);
  return problems.length ? problems.map((p) => p.message).join("; ") : req;
}

function outcomeOf(d: TrafficDecision): ReplayOutcome {
  return {
    verdict: d.verdict,
    route: d.request.from === INTERNET ? d.route : d.rule,
    statusClass:
      d.verdict === "deny" && d.status !== null
        ? statusClass(d.status)
        : d.verdict === "deny"
          ? "none"
          : null,
  };
}

const sameOutcome = (a: ReplayOutcome, b: ReplayOutcome, compareRoute: boolean) =>
  a.verdict === b.verdict && (!compareRoute || a.route === b.route) && a.statusClass === b.statusClass;

function describe(r: LoggedRequest, q: TrafficRequest): string {
  const who =
    q.from === INTERNET
      ? `internet${r.principal?.kind === "jwt" ? ` (jwt ${r.principal.provider}${q.claims?.sub ? ` sub ${String(q.claims.sub)}` : ""}${q.scopes?.length ? ` scopes ${q.scopes.join(" ")}` : ""})` : r.principal?.kind === "apiKey" ? ` (API key of ${r.principal.consumer})` : ""}${q.clientIp ? ` client ${q.clientIp}` : ""}`
      : `${q.from} to ${q.to}`;
  return `${q.method} ${q.host ? `${q.host} ` : ""}${q.path} from ${who}`;
}

/**
 * Re-decides every logged request under `head`; compares with the logged outcome, or with the decision
 * under `base` when given.
 */
export function replay(
  requests: readonly LoggedRequest[],
  head: PolicyInput,
  options: { base?: PolicyInput; baseLabel?: string; headLabel?: string } = {},
): ReplayReport {
  const report: ReplayReport = {
    base: options.base ? (options.baseLabel ?? "base") : "log",
    head: options.headLabel ?? "head",
    lines: requests.length,
    replayed: 0,
    skipped: [],
    changed: [],
    drift: 0,
  };
  for (const r of requests) {
    if (r.request === null) {
      report.skipped.push({ line: r.line, reason: r.skipped ?? "cannot be replayed" });
      continue;
    }
    if (r.tunnel !== undefined) {
      replayTunnel(r, head, options.base, report);
      continue;
    }
    const headReq = requestFor(head, r);
    if (typeof headReq === "string") {
      report.skipped.push({ line: r.line, reason: headReq });
      continue;
    }
    const after = explainRequest(head, headReq);
    // An outbound line knows no allow rule: compare verdicts and status classes only.
    const compareRoute = !(r.proxy === "sidecar" && r.logged.route === null && r.logged.verdict === "allow");
    let before: ReplayOutcome = r.logged;
    if (options.base) {
      const baseReq = requestFor(options.base, r);
      if (typeof baseReq === "string") {
        report.skipped.push({ line: r.line, reason: `base: ${baseReq}` });
        continue;
      }
      before = outcomeOf(explainRequest(options.base, baseReq));
      if (!sameOutcome(r.logged, before, compareRoute)) report.drift++;
    }
    report.replayed++;
    const a = outcomeOf(after);
    if (!sameOutcome(before, a, compareRoute || options.base !== undefined))
      report.changed.push({
        line: r.line,
        requestId: r.requestId,
        request: describe(r, headReq),
        before: { verdict: before.verdict, route: before.route, statusClass: before.statusClass },
        after: a,
        detail:
          after.verdict === "deny"
            ? `denied at ${after.layer}: ${after.status ?? ""} ${after.code ?? ""}`.trim()
            : `allowed${after.targets.length ? ` → ${after.targets.join(", ")}` : ""}`,
      });
  }
  return report;
}

/** A tunnel decided again: no destination is a refusal of its own (the sidecar answers 403, or has no port). */
function replayTunnel(
  r: LoggedRequest,
  head: PolicyInput,
  base: PolicyInput | undefined,
  report: ReplayReport,
) {
  const t = r.tunnel!;
  const decideUnder = (input: PolicyInput): { outcome: ReplayOutcome; detail: string } | string => {
    const req = tunnelRequest(input, r);
    if (!("from" in req))
      return {
        outcome: req,
        detail:
          t.via === "local"
            ? `denied: no external destination ${t.external ?? ""} any more (its local port is gone)`
            : `denied at outbound: 403 egress_denied (no external destination declares ${t.host}:${t.port})`,
      };
    const problems = requestProblems(input, req);
    if (problems.length) return problems.map((p) => p.message).join("; ");
    const d = explainRequest(input, req);
    const outcome = outcomeOf(d);
    return {
      // A tunnel's line names no allow rule: a refusal and a let-through are what is compared.
      outcome: { ...outcome, route: null },
      detail:
        d.verdict === "deny"
          ? `denied at ${d.layer}: ${d.status ?? ""} ${d.code ?? ""}`.trim()
          : `allowed → ${req.to} (${d.rule ?? "allowed"})`,
    };
  };
  const after = decideUnder(head);
  if (typeof after === "string") return void report.skipped.push({ line: r.line, reason: after });
  let before: ReplayOutcome = r.logged;
  if (base) {
    const b = decideUnder(base);
    if (typeof b === "string") return void report.skipped.push({ line: r.line, reason: `base: ${b}` });
    before = b.outcome;
    if (!sameOutcome(r.logged, before, false)) report.drift++;
  }
  report.replayed++;
  if (sameOutcome(before, after.outcome, false)) return;
  report.changed.push({
    line: r.line,
    requestId: r.requestId,
    request:
      t.via === "local"
        ? `TCP to the local port of ${t.external} from ${r.request!.from}`
        : `CONNECT ${t.host.includes(":") ? `[${t.host}]` : t.host}:${t.port} from ${r.request!.from}`,
    before: { verdict: before.verdict, route: before.route, statusClass: before.statusClass },
    after: after.outcome,
    detail: after.detail,
  });
}

const show = (o: ReplayOutcome) =>
  `${o.verdict}${o.route ? ` ${o.route}` : ""}${o.statusClass && o.statusClass !== "none" ? ` ${o.statusClass}` : ""}`;

/** The text report: one line per changed request, then the totals. */
export function formatReplayText(r: ReplayReport): string {
  const lines: string[] = [];
  for (const c of r.changed)
    lines.push(`line ${c.line}: ${c.request}\n    ${show(c.before)} → ${show(c.after)} (${c.detail})`);
  if (r.changed.length) lines.push("");
  const skipped = r.skipped.length ? `, ${r.skipped.length} skipped` : "";
  const drift = r.drift
    ? `; ${r.drift} logged outcome(s) differ from the base spec's decision (the log comes from another spec)`
    : "";
  lines.push(
    `${r.replayed} request(s) replayed${skipped}: ${r.changed.length} would change (${r.base} → ${r.head})${drift}`,
  );
  return lines.join("\n");
}
