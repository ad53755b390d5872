/**
 * Aggregation: one request fans out to several clusters in parallel, and the JSON answers are merged
 * into one object `{ "<part>": <json>, … }` (parts in name order).
 *
 * - Every part goes through the shared upstream engine (`forward()`: load balancing, circuit breaking,
 *   retries inside the cluster's budget, outlier detection) with a bounded collecting Writable, and has
 *   its own timeout.
 * - A part fails when it times out, cannot connect, is reset, answers non-2xx, answers something that
 *   is not JSON (content type or syntax), or exceeds the route's response limit. Then its policy
 *   applies: `fail` — the whole request fails at once (504 `aggregate_part_timeout` for a timeout, 502
 *   `aggregate_part_failed` otherwise, with `x-meshgate-part: <name>`) and the other parts are
 *   cancelled; `omit` — the part is left out; `default` — its declared default value is used. Parts
 *   omitted or defaulted are listed in the `x-meshgate-partial` response header.
 * - A HEAD part answers `true` (2xx), else fails.
 * - Each part request carries: the gateway's forwarding headers (X-Forwarded-*, Forwarded, X-Request-Id,
 *   the principal headers authentication sets), `accept: application/json`, `accept-encoding: identity`,
 *   its own `traceparent` (a client span per part under the request's server span), the client headers
 *   the part lists in `forwardHeaders` less the route's credentials (as on a forwarded request) — and
 *   nothing else of the client's: no cookies, no Authorization unless listed — then the route's request
 *   header transform.
 * - A part on a cluster that needs mTLS, which the gateway cannot originate yet (no mesh identity), makes
 *   the whole route answer 503 `upstream_identity_unavailable` (fail closed, whatever its onError).
 */
import type { IncomingHttpHeaders } from "node:http";
import type { GatewayRoute, RetryPlan } from "../contract/schema.ts";
import { inboundDenyCodeOf, type InboundDenyCode } from "../decide/inbound.ts";
import { compileTemplate as compilePathTemplate } from "../decide/router.ts";
import { reservedHeader, withheldHeaders } from "../gateway/headers.ts";
import { setTraceHeaders, type SpanLike, type Tracer } from "../telemetry/tracing.ts";
import type { UpstreamCluster } from "../upstream/cluster.ts";
import { forward, type ForwardObserver } from "../upstream/forward.ts";
import type { CancelToken } from "../upstream/h1pool.ts";
import { BodyError, BoundedCollector, decodeContent, isJsonMediaType, utf8Text } from "./body.ts";
import { applyHeaderOps, type CompiledHeaderOps } from "./transform.ts";
import type { TemplateContext } from "./template.ts";

type AggregateAction = Extract<GatewayRoute["action"], { kind: "aggregate" }>;
/** A part's path: literals and parameters; `query` marks a parameter after the template's `?`. */
type PathTemplate = readonly (string | { readonly param: string; readonly query?: true })[];

export interface CompiledPart {
  readonly name: string;
  /** The part's name as a JSON string, ready for the merged body. */
  readonly key: string;
  readonly clusterName: string;
  readonly cluster: UpstreamCluster | null;
  readonly method: string;
  readonly path: PathTemplate;
  readonly timeoutMs: number;
  readonly onError: "fail" | "omit" | "default";
  /** The default value serialized once. */
  readonly defaultJson: string;
  readonly forwardHeaders: readonly string[];
  /** A backend outside the mesh: the Host it is called with (its cluster's authority), else null. */
  readonly authority: string | null;
  /** The headers it is not sent (gateway/headers.ts withheldHeaders; its cluster's `share`). */
  readonly withheld: readonly string[];
}

export interface CompiledAggregate {
  readonly route: string;
  readonly parts: readonly CompiledPart[];
  /** Bound of each part's body and of the merged body. */
  readonly maxBytes: number;
  /** Parts on clusters that need mTLS to the mesh (not available yet): the route fails closed. */
  readonly mtlsParts: readonly string[];
  /** Parts whose cluster is not configured. */
  readonly missingParts: readonly string[];
  readonly requestHeaders: CompiledHeaderOps | null;
}

export class AggregateCompileError extends Error {
  readonly code = "E_RT_AGGREGATE";
}

/** Compiles an aggregate route against the clusters of the state it serves with. */
export function compileAggregate(
  route: GatewayRoute,
  action: AggregateAction,
  clusters: ReadonlyMap<string, UpstreamCluster>,
  requestHeaders: CompiledHeaderOps | null,
  ownedHeaders: ReadonlySet<string> = new Set(),
): CompiledAggregate {
  const maxBytes = route.limits.maxResponseBytes;
  if (maxBytes === null)
    throw new AggregateCompileError(
      `route ${route.name}: an aggregate route needs limits.maxResponseBytes (it buffers every part)`,
    );
  const parts = action.parts.map((p): CompiledPart => {
    for (const h of p.forwardHeaders) {
      const reason = reservedHeader(h) ?? (ownedHeaders.has(h.toLowerCase()) ? "a principal header" : null);
      if (reason !== null)
        throw new AggregateCompileError(
          `route ${route.name}: aggregate part ${p.name}: forwardHeaders cannot copy ${h}: it is ${reason}`,
        );
    }
    const cluster = clusters.get(p.cluster) ?? null;
    return {
      name: p.name,
      key: JSON.stringify(p.name),
      clusterName: p.cluster,
      cluster,
      authority: cluster?.config.authority ?? null,
      withheld: withheldHeaders(cluster?.config.share, ownedHeaders) ?? [],
      method: p.method,
      path: compilePartPath(p.path),
      timeoutMs: p.timeoutMs,
      onError: p.onError,
      defaultJson: JSON.stringify(p.default ?? null),
      forwardHeaders: p.forwardHeaders.map((h) => h.toLowerCase()),
    };
  });
  return {
    route: route.name,
    parts,
    maxBytes,
    mtlsParts: parts.filter((p) => p.cluster?.config.tls.mode === "mtls").map((p) => p.name),
    missingParts: parts.filter((p) => p.cluster === null).map((p) => p.name),
    requestHeaders,
  };
}

/** How one part ended. */
export type PartOutcome =
  | "success"
  | "timeout"
  | "error_status"
  | "not_json"
  | "too_large"
  | "connect_failure"
  | "reset"
  | "no_endpoint"
  | "overflow"
  | "cancelled";

export interface AggregateObserver extends ForwardObserver {
  /** One call per part: its outcome and duration. */
  part(route: string, part: string, outcome: PartOutcome, seconds: number): void;
}

export interface AggregateRequest {
  readonly params: Readonly<Record<string, string>>;
  /** The client's request headers (only `forwardHeaders` are copied from them). */
  readonly clientHeaders: IncomingHttpHeaders;
  /** Headers the gateway sets on every upstream request (X-Forwarded-*, Forwarded, X-Request-Id, Host, principal). */
  readonly baseHeaders: Readonly<Record<string, string | string[]>>;
  readonly retry: RetryPlan;
  readonly hashKey: string;
  /**
   * Set aborted (and its onabort called) when the client goes away; aggregate() takes its `onabort` to
   * cancel every part.
   */
  readonly cancel: CancelToken;
  readonly span: SpanLike;
  readonly tracer: Tracer;
  /** For templates in the request header transform; null when it has none. */
  readonly templateContext: TemplateContext | null;
  /** The gateway holds a valid mesh identity: parts on mTLS clusters may be called (else they fail closed). */
  readonly meshIdentityReady?: boolean;
  /**
   * Authentication's edits of an upstream request (auth.upstreamHeaders): removes client copies of identity
   * headers and the route's credentials (its JWT header or cookie, API key, OIDC cookies), sets the
   * principal's headers. Applied to each part's headers after the `forwardHeaders` copy, so a part gets
   * what a forwarded request would: listing `cookie` for the app's cookies never hands a part the
   * route's token cookie (docs/auth.md: credentials are not forwarded).
   */
  readonly authHeaders?: (headers: Record<string, string | string[]>) => void;
}

export type AggregateResult =
  | { readonly kind: "ok"; readonly body: Buffer; readonly degraded: readonly string[] }
  | {
      readonly kind: "error";
      readonly status: 502 | 503 | 504;
      readonly code:
        | "aggregate_part_failed"
        | "aggregate_part_timeout"
        | "upstream_identity_unavailable"
        | "no_cluster"
        | "response_too_large";
      readonly message: string;
      /** The part that failed the request, if one did. */
      readonly part: string | null;
      /** That part's refusal by its service's sidecar (403 with `x-meshgate-denied`), if it was one. */
      readonly denied?: InboundDenyCode;
    }
  | { readonly kind: "cancelled" };

type PartResult =
  | { readonly ok: true; readonly json: string }
  | {
      readonly ok: false;
      readonly outcome: Exclude<PartOutcome, "success">;
      readonly detail: string;
      /** The sidecar of the part's service refused it (its x-meshgate-denied code). */
      readonly denied?: InboundDenyCode;
    };

/** Fans out, waits for every part (or the first failure of a `fail` part), and merges. */
export function aggregate(
  agg: CompiledAggregate,
  req: AggregateRequest,
  observer: AggregateObserver,
): Promise<AggregateResult> {
  if (agg.mtlsParts.length > 0 && req.meshIdentityReady !== true) {
    return Promise.resolve({
      kind: "error",
      status: 503,
      code: "upstream_identity_unavailable",
      message: `mTLS to the mesh needs a workload identity (parts: ${agg.mtlsParts.join(", ")})`,
      part: agg.mtlsParts[0]!,
    });
  }
  if (agg.missingParts.length > 0) {
    return Promise.resolve({
      kind: "error",
      status: 503,
      code: "no_cluster",
      message: `the cluster of part ${agg.missingParts[0]} is not configured`,
      part: agg.missingParts[0]!,
    });
  }
  if (req.cancel.aborted) return Promise.resolve({ kind: "cancelled" });
  // One cancel token per part (a token has one onabort slot); the client's token cancels them all.
  const tokens: CancelToken[] = agg.parts.map(() => ({ aborted: false, onabort: null }));
  const cancelAll = () => {
    for (const t of tokens) {
      if (t.aborted) continue;
      t.aborted = true;
      t.onabort?.();
    }
  };
  req.cancel.onabort = cancelAll;

  return new Promise<AggregateResult>((resolve) => {
    const results: (PartResult | undefined)[] = new Array(agg.parts.length);
    let pending = agg.parts.length;
    let settled = false;
    const settle = (r: AggregateResult) => {
      if (settled) return;
      settled = true;
      if (req.cancel.onabort === cancelAll) req.cancel.onabort = null;
      resolve(r);
    };
    agg.parts.forEach((part, i) => {
      void runPart(agg, part, req, tokens[i]!, observer).then((r) => {
        results[i] = r;
        pending--;
        if (req.cancel.aborted) return settle({ kind: "cancelled" });
        if (!r.ok && part.onError === "fail" && r.outcome !== "cancelled") {
          cancelAll(); // the others are no longer needed
          return settle({
            kind: "error",
            status: r.outcome === "timeout" ? 504 : 502,
            code: r.outcome === "timeout" ? "aggregate_part_timeout" : "aggregate_part_failed",
            message: `aggregate part ${part.name} (${part.clusterName}): ${r.detail}`,
            part: part.name,
            ...(r.denied !== undefined ? { denied: r.denied } : {}),
          });
        }
        if (pending === 0) settle(merge(agg, results as PartResult[]));
      });
    });
  });
}

function merge(agg: CompiledAggregate, results: readonly PartResult[]): AggregateResult {
  let out = "{";
  let first = true;
  const degraded: string[] = [];
  for (let i = 0; i < agg.parts.length; i++) {
    const p = agg.parts[i]!;
    const r = results[i]!;
    let value: string | null = null;
    if (r.ok) value = r.json;
    else {
      degraded.push(p.name);
      if (p.onError === "default") value = p.defaultJson;
    }
    if (value === null) continue;
    out += `${first ? "" : ","}${p.key}:${value}`;
    first = false;
  }
  out += "}";
  const body = Buffer.from(out, "utf8");
  if (body.length > agg.maxBytes) {
    return {
      kind: "error",
      status: 502,
      code: "response_too_large",
      message: `the merged response exceeds ${agg.maxBytes} bytes`,
      part: null,
    };
  }
  return { kind: "ok", body, degraded };
}

/** Compiles a part's path template, marking the parameters that land in its query. */
function compilePartPath(path: string): PathTemplate {
  let inQuery = false;
  return compilePathTemplate(path).map((p) => {
    if (typeof p === "string") {
      if (p.includes("?")) inQuery = true;
      return p;
    }
    return inQuery ? { param: p.param, query: true } : p;
  });
}

/**
 * Characters a path segment holds raw (the canonical path even decodes `%26` to `&`) that delimit or
 * change a query's fields: escaped where a parameter lands in the query, so a client's `{user}` of
 * `bob&admin=true` stays one value and cannot add `admin=true` (or a second `user`) to the part's query.
 */
const QUERY_DELIMITERS = /[&=+;#]/g;
const escapeQueryValue = (v: string): string =>
  v.replace(QUERY_DELIMITERS, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);

function fillPath(path: PathTemplate, params: Readonly<Record<string, string>>): string {
  let out = "";
  for (const p of path) {
    if (typeof p === "string") out += p;
    else if (Object.hasOwn(params, p.param))
      out += p.query ? escapeQueryValue(params[p.param]!) : params[p.param];
  }
  return out;
}

async function runPart(
  agg: CompiledAggregate,
  part: CompiledPart,
  req: AggregateRequest,
  cancel: CancelToken,
  observer: AggregateObserver,
): Promise<PartResult> {
  const started = performance.now();
  const span = req.tracer.startClientSpan(req.span, {
    method: part.method,
    upstream: part.clusterName,
    attributes: { "meshgate.aggregate.part": part.name },
  });
  const headers: Record<string, string | string[]> = { ...req.baseHeaders };
  for (const name of part.forwardHeaders) {
    const v = req.clientHeaders[name];
    if (v !== undefined) headers[name] = v;
  }
  req.authHeaders?.(headers);
  if (agg.requestHeaders !== null) applyHeaderOps(agg.requestHeaders, headers, req.templateContext);
  headers.accept = "application/json";
  headers["accept-encoding"] = "identity";
  if (part.authority !== null) headers.host = part.authority;
  for (const name of part.withheld) delete headers[name];
  setTraceHeaders(headers, span);

  let status = 0;
  // (Set by the head callback: typed by `as`, so the flow analysis does not keep it null.)
  let denied = null as InboundDenyCode | null;
  let contentType: string | string[] | undefined;
  let contentEncoding: string | string[] | undefined;
  const collector = new BoundedCollector(agg.maxBytes, () => {
    // Over the limit: stop reading this part (the pool closes its connection).
    if (cancel.aborted) return;
    cancel.aborted = true;
    cancel.onabort?.();
  });
  const result = await forward(
    part.cluster!,
    {
      method: part.method,
      path: fillPath(part.path, req.params),
      headers,
      body: null,
      timeoutMs: part.timeoutMs,
      retry: req.retry,
      hashKey: req.hashKey,
      cancel,
    },
    (statusCode, h) => {
      status = statusCode;
      if (statusCode === 403 && part.cluster!.config.tls.mode === "mtls")
        denied = inboundDenyCodeOf(h["x-meshgate-denied"]);
      contentType = h["content-type"];
      contentEncoding = h["content-encoding"];
      return collector;
    },
    observer,
  );
  if (result.endpoint) span.setAttribute("server.address", result.endpoint.key);

  // The pools end the sink and resolve at once: wait until the collector has every byte.
  if (result.kind === "ok") await collector.done();
  let r: PartResult;
  if (collector.failure !== null) {
    r = fail("too_large", `the answer exceeds ${agg.maxBytes} bytes`);
  } else if (result.kind === "error") {
    // (A part's collector never refuses a write, so no send timeout applies; the outcome is the client's.)
    if (result.outcome === "client_aborted" || result.outcome === "send_timeout" || cancel.aborted)
      r = fail("cancelled", "cancelled");
    else if (result.outcome === "body_too_large") r = fail("reset", "request refused");
    else r = fail(result.outcome, result.outcome.replaceAll("_", " "));
  } else if (status < 200 || status > 299) {
    r = fail("error_status", `upstream answered ${status}`, denied);
  } else if (part.method === "HEAD") {
    r = { ok: true, json: "true" };
  } else if (!isJsonMediaType(contentType)) {
    r = fail(
      "not_json",
      `upstream answered ${typeof contentType === "string" ? contentType : "no content type"}, not JSON`,
    );
  } else {
    r = await parsePart(collector.body(), contentEncoding, agg.maxBytes);
  }
  const outcome: PartOutcome = r.ok ? "success" : r.outcome;
  span.end(
    r.ok
      ? { statusCode: status }
      : { ...(status ? { statusCode: status } : {}), error: new Error(r.detail), errorType: outcome },
  );
  observer.part(agg.route, part.name, outcome, (performance.now() - started) / 1000);
  return r;
}

const fail = (
  outcome: Exclude<PartOutcome, "success">,
  detail: string,
  denied: InboundDenyCode | null = null,
): PartResult => (denied === null ? { ok: false, outcome, detail } : { ok: false, outcome, detail, denied });

async function parsePart(
  body: Buffer,
  encoding: string | string[] | undefined,
  limit: number,
): Promise<PartResult> {
  let text: string;
  try {
    text = utf8Text(await decodeContent(body, encoding, limit));
  } catch (err) {
    return err instanceof BodyError && err.failure === "too_large"
      ? fail("too_large", err.message)
      : fail("not_json", (err as Error).message);
  }
  try {
    JSON.parse(text);
  } catch {
    return fail("not_json", "the answer is not valid JSON");
  }
  return { ok: true, json: text.trim() };
}
