/**
 * decideInbound(): the sidecar's inbound authorization — pure, and shared with the policy checks that
 * evaluate allow rules before deploy, so a rule verified there is enforced by this very code.
 *
 * Deny by default: a request is allowed only when one rule of `inbound.authz` names the peer's SPIFFE ID
 * in `from`, lists the method (or none), and has a path pattern that matches the canonical path (or
 * none). The path authorized is the canonical path (canonicalizeTarget), which is also the path the app
 * receives. No I/O, no clock, no randomness; it never throws for a request.
 *
 * A plaintext request has no peer identity. In strict mTLS it cannot arrive (and is denied:
 * `no_peer_identity`). In permissive mode — a migration aid, flagged by W_SPEC_MTLS_PERMISSIVE — it is
 * authorized by the rules' methods and paths alone: the rules say what may be reached, and a caller
 * without a sidecar cannot say who it is. Every mTLS request is authorized by its peer as in strict mode.
 */
import type { AuthzRule, SidecarRuntimeConfig } from "../contract/schema.ts";
import { canonicalHost, canonicalizeTarget, type TargetRejectReason } from "./canonical.ts";
import { isPatternError, matchPath, parsePathPattern, type PathPattern } from "./pattern.ts";

/** Why a request was refused; stable (the `x-meshgate-denied` header and metric label). */
export type InboundDenyCode =
  | "bad_request_target"
  | "bad_host"
  | "no_peer_identity"
  | "peer_not_allowed"
  | "method_not_allowed"
  | "path_not_allowed";

/** Every deny code, for bounded metric labels and documentation. */
export const INBOUND_DENY_CODES: readonly InboundDenyCode[] = [
  "bad_request_target",
  "bad_host",
  "no_peer_identity",
  "peer_not_allowed",
  "method_not_allowed",
  "path_not_allowed",
];

/**
 * The refusal a sidecar's answer carries in `x-meshgate-denied` (one of the stable codes), or null: how a
 * proxy that forwarded a request to a mesh service tells the callee sidecar's refusal from the app's 403.
 */
export function inboundDenyCodeOf(value: string | string[] | undefined): InboundDenyCode | null {
  return typeof value === "string" && (INBOUND_DENY_CODES as readonly string[]).includes(value)
    ? (value as InboundDenyCode)
    : null;
}

export interface InboundFacts {
  /** The peer's verified SPIFFE ID; null for a plaintext connection (permissive mode). */
  readonly peer: string | null;
  readonly method: string;
  /** The raw request target (`req.url`). */
  readonly target: string;
  /** The Host header, raw. */
  readonly host: string | undefined;
}

export interface InboundAllow {
  readonly kind: "allow";
  /** The rule that allowed it, as the spec names it (`services.orders.allow[0]`). */
  readonly source: string;
  /** The canonical path that was authorized. */
  readonly path: string;
  readonly query: string;
  /** What the app receives: the canonical path and the query. */
  readonly upstreamTarget: string;
}

export interface InboundDeny {
  readonly kind: "deny";
  readonly status: 400 | 403;
  readonly code: InboundDenyCode;
  /** For bad_request_target: the canonicalization rule that refused the target. */
  readonly targetReason: TargetRejectReason | null;
  /** A sentence for the response body and logs. */
  readonly detail: string;
}

export type InboundDecision = InboundAllow | InboundDeny;

interface CompiledRule {
  readonly source: string;
  /** Method bits; 0 = every method. */
  readonly methods: number;
  /** null = every path. */
  readonly paths: readonly PathPattern[] | null;
}

export interface CompiledInbound {
  readonly rules: readonly AuthzRule[];
  /** Permissive mTLS: plaintext requests are authorized by method and path (compileInbound's option). */
  readonly permissive: boolean;
  /** Every rule, in config order (what a plaintext request is checked against in permissive mode). */
  readonly all: readonly CompiledRule[];
  /** The rules naming each peer, in config order. */
  readonly byPeer: ReadonlyMap<string, readonly CompiledRule[]>;
  /** Every peer some rule names. */
  readonly peers: ReadonlySet<string>;
}

const METHOD_BITS: Readonly<Record<string, number>> = Object.freeze({
  GET: 1,
  HEAD: 2,
  POST: 4,
  PUT: 8,
  PATCH: 16,
  DELETE: 32,
  OPTIONS: 64,
  TRACE: 128,
  CONNECT: 256,
});

/**
 * Compiles `inbound.authz` once (at load and at each reload). Throws with the rule's source when a path
 * pattern is malformed (the config is then rejected whole).
 */
export function compileInbound(
  authz: SidecarRuntimeConfig["inbound"]["authz"],
  options: { permissive?: boolean } = {},
): CompiledInbound {
  const byPeer = new Map<string, CompiledRule[]>();
  const all: CompiledRule[] = [];
  for (const rule of authz.rules) {
    const paths =
      rule.paths.length === 0
        ? null
        : rule.paths.map((p, i) => {
            const parsed = parsePathPattern(p);
            if (isPatternError(parsed)) throw new Error(`${rule.source}.paths[${i}]: ${parsed.error}`);
            return parsed;
          });
    const compiled: CompiledRule = {
      source: rule.source,
      methods: rule.methods.reduce((mask, m) => mask | (METHOD_BITS[m] ?? 0), 0),
      paths,
    };
    all.push(compiled);
    for (const peer of new Set(rule.from)) {
      const list = byPeer.get(peer);
      if (list) list.push(compiled);
      else byPeer.set(peer, [compiled]);
    }
  }
  return {
    rules: authz.rules,
    permissive: options.permissive === true,
    all,
    byPeer,
    peers: new Set(byPeer.keys()),
  };
}

const deny = (
  status: 400 | 403,
  code: InboundDenyCode,
  detail: string,
  targetReason: TargetRejectReason | null = null,
): InboundDeny => ({ kind: "deny", status, code, targetReason, detail });

export function decideInbound(c: CompiledInbound, facts: InboundFacts): InboundDecision {
  const t = canonicalizeTarget(facts.target);
  if (!t.ok) return deny(400, "bad_request_target", t.detail, t.reason);
  if (t.host === null && canonicalHost(facts.host) === null)
    return deny(400, "bad_host", "missing or malformed Host header");
  const peer = facts.peer;
  let rules: readonly CompiledRule[] | undefined;
  if (peer === null) {
    if (!c.permissive || c.all.length === 0)
      return deny(
        403,
        "no_peer_identity",
        "plaintext request: no peer identity to authorize (deny by default)",
      );
    rules = c.all;
  } else {
    rules = c.byPeer.get(peer);
    if (rules === undefined) return deny(403, "peer_not_allowed", `no allow rule admits ${peer}`);
  }
  const who = peer ?? "a plaintext caller";
  const bit = METHOD_BITS[facts.method] ?? 0;
  let methodAllowed = false;
  for (let i = 0; i < rules.length; i++) {
    const r = rules[i]!;
    if (r.methods !== 0 && (r.methods & bit) === 0) continue;
    methodAllowed = true;
    if (r.paths === null || matchesAny(r.paths, t.path)) {
      return {
        kind: "allow",
        source: r.source,
        path: t.path,
        query: t.query,
        upstreamTarget: t.query ? `${t.path}?${t.query}` : t.path,
      };
    }
  }
  return methodAllowed
    ? deny(403, "path_not_allowed", `no allow rule admits ${who} to ${facts.method} ${t.path}`)
    : deny(403, "method_not_allowed", `no allow rule admits ${facts.method} from ${who}`);
}

function matchesAny(patterns: readonly PathPattern[], path: string): boolean {
  for (let i = 0; i < patterns.length; i++) if (matchPath(patterns[i]!, path)) return true;
  return false;
}
