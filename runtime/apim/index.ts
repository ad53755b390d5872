/**
 * API management at the edge, per route: transforms, CORS, aggregation, static files and response size
 * limits — compiled once per config (at load and at each reload) into one `RouteApim` per route that
 * uses any of them, looked up by the router's compiled route (one Map lookup per request).
 *
 * Where each runs in the gateway's filter order (see docs/api-management.md):
 *   3. CORS preflight answered (decide() routes a preflight by its Access-Control-Request-Method)
 *  10. the action: `static` | `aggregate` | `forward` with the request transform (headers, JSON body)
 *  11. on the response: response transform (headers, JSON body), CORS headers, response size limit
 */
import { identityHeaders } from "../auth/authenticator.ts";
import type { OutgoingHttpHeaders } from "node:http";
import type { GatewayRuntimeConfig } from "../contract/schema.ts";
import type { CompiledRoute } from "../decide/router.ts";
import { parsePathPattern, isPatternError } from "../decide/pattern.ts";
import type { UpstreamCluster } from "../upstream/cluster.ts";
import { compileAggregate, type CompiledAggregate } from "./aggregate.ts";
import { addCorsHeaders, compileCors, type CompiledCors } from "./cors.ts";
import { compileStatic, type CompiledStatic } from "./static.ts";
import { applyHeaderOps, compileTransform, type CompiledTransform } from "./transform.ts";
import type { TemplateContext } from "./template.ts";

export interface RouteApim {
  readonly route: string;
  readonly cors: CompiledCors | null;
  readonly request: CompiledTransform | null;
  readonly response: CompiledTransform | null;
  readonly aggregate: CompiledAggregate | null;
  readonly static: CompiledStatic | null;
  /** Upstream response body limit; null = unlimited streaming. */
  readonly maxResponseBytes: number | null;
  /** Some transform template reads the request: build a TemplateContext for this route. */
  readonly needsContext: boolean;
  /**
   * The response needs a ResponseShaper (a JSON body transform buffers it, a size limit counts it); when
   * false, the route's response shaping is its headers alone (transform headers, CORS), decorated in place.
   */
  readonly shapesBody: boolean;
  /**
   * The response headers the route removes, for an HTTP/1 pool to leave out while parsing (when the
   * headers go straight to the client: no shaper, no cache); null when it removes none.
   */
  readonly dropResponseHeaders: ReadonlySet<string> | null;
}

/** A route whose API-management settings cannot be served: the whole config is refused. */
export class ApimCompileError extends Error {
  readonly code = "E_RT_APIM";
}

/**
 * Compiles every route's API-management settings. `clusters` are the state's upstream clusters
 * (aggregation sends through them); `cwd` resolves relative static roots. Throws ApimCompileError
 * naming the route and field.
 */
export function compileApim(
  config: GatewayRuntimeConfig,
  routes: readonly CompiledRoute[],
  clusters: ReadonlyMap<string, UpstreamCluster>,
  cwd: string = process.cwd(),
): Map<CompiledRoute, RouteApim> {
  // The header names authentication owns: never copied or changed by a route, withheld where not shared.
  const owned = identityHeaders(config);
  const out = new Map<CompiledRoute, RouteApim>();
  for (const r of routes) {
    const c = r.config;
    try {
      const parsed = parsePathPattern(c.match.path);
      const params = isPatternError(parsed) ? [] : parsed.params;
      const request = compileTransform(c.transform.request, "transform.request", {
        params,
        ownedHeaders: owned,
      });
      const response = compileTransform(c.transform.response, "transform.response", {
        params,
        ownedHeaders: owned,
      });
      if (response?.body && c.limits.maxResponseBytes === null)
        throw new Error("a response body transform needs limits.maxResponseBytes (it buffers the response)");
      if (c.action.kind !== "forward" && request?.body)
        throw new Error(`transform.request.body applies only to forward routes, not ${c.action.kind}`);
      if ((c.action.kind === "static" || c.action.kind === "redirect") && request !== null)
        throw new Error(`transform.request does not apply to ${c.action.kind} routes`);
      if ((c.action.kind === "static" || c.action.kind === "redirect") && response?.body)
        throw new Error(`transform.response.body does not apply to ${c.action.kind} routes`);
      const cors = c.cors ? compileCors(c.cors) : null;
      const aggregate =
        c.action.kind === "aggregate"
          ? compileAggregate(c, c.action, clusters, request?.headers ?? null, owned)
          : null;
      const stat = c.action.kind === "static" ? compileStatic(c.name, c.match.path, c.action, cwd) : null;
      const maxResponseBytes = c.limits.maxResponseBytes;
      if (!cors && !request && !response && !aggregate && !stat && maxResponseBytes === null) continue;
      const needsContext =
        (request?.headers?.usesContext ?? false) ||
        (response?.headers?.usesContext ?? false) ||
        (request?.body?.template.length ?? 0) > 0 ||
        (response?.body?.template.length ?? 0) > 0;
      out.set(r, {
        route: c.name,
        cors,
        request,
        response,
        aggregate,
        static: stat,
        maxResponseBytes,
        needsContext,
        shapesBody: (response?.body ?? null) !== null || maxResponseBytes !== null,
        dropResponseHeaders: response?.headers?.remove.length ? new Set(response.headers.remove) : null,
      });
    } catch (err) {
      throw new ApimCompileError(`route ${c.name}: ${(err as Error).message}`);
    }
  }
  return out;
}

/**
 * The route's response headers on a head the gateway sends: the response header transform, then the
 * CORS headers for `origin`. For upstream answers, gateway answers (static, aggregate) and errors alike.
 */
export function decorateResponse(
  apim: RouteApim,
  origin: string | undefined,
  headers: OutgoingHttpHeaders,
  ctx: TemplateContext | null,
): void {
  const ops = apim.response?.headers;
  if (ops) applyHeaderOps(ops, headers, ctx);
  if (apim.cors !== null) addCorsHeaders(apim.cors, origin, headers);
}

export { aggregate, type AggregateObserver, type AggregateResult, type PartOutcome } from "./aggregate.ts";
export { BodyError, BoundedCollector, LimitedWritable, decodeContent, isJsonMediaType } from "./body.ts";
export { isPreflight, preflight, type CompiledCors } from "./cors.ts";
export { serveStatic, type StaticOutcome } from "./static.ts";
export { applyHeaderOps, transformJson, type CompiledTransform } from "./transform.ts";
export type { TemplateContext, TemplatePrincipal } from "./template.ts";
