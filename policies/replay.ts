/**
 * Replay: re-decide logged requests under a proposed spec and list those whose outcome would change.
 *
 * The access lines of the gateway and the sidecars carry the facts decide() used: the method, the
 * canonical path (the raw path of requests refused before routing), the Host header, the client address, the values of headers that route conditions read,
 * and the principal's identity and grants (mechanism and provider, subject, API-key consumer, scopes — never
 * a credential); a sidecar's inbound line carries the caller's SPIFFE ID. Each line becomes a
 * TrafficRequest that explainRequest() decides under the proposed spec; the outcome (allow or deny, the
 * route, the status class of a refusal) is compared with the logged one, or with the decision under a base
 * spec (`--base`), which isolates the effect of the change from whatever else the log recorded.
 *
 * What a line cannot carry is said, not guessed: the query string (it may hold credentials) is not logged,
 * so routes with query conditions are replayed without one; token claims other than `sub` and the scopes
 * are not logged (claim conditions see only those); client-certificate and OIDC principals are skipped.
 */
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

function fromSidecarLine(l: Record<string, unknown>, line: number): LoggedRequest {
  const status = typeof l.status === "number" ? l.status : 0;
  const outcome = str(l.outcome) ?? "";
  const refused = outcome.startsWith("denied_");
  const base: LoggedRequest = {
    line,
    requestId: l.requestId as string,
    proxy: "sidecar",
    request: null,
    principal: null,
    skipped: null,
    logged: {
      verdict: refused ? "deny" : "allow",
      route: str(l.direction) === "inbound" ? (str(l.rule) ?? null) : null,
      statusClass: refused ? statusClass(status) : null,
      status,
    },
  };
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
  return {
    ...base,
    logged: { ...base.logged, route: null },
    request: { from: service, to, method: l.method as string, path },
  };
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
