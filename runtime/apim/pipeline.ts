/**
 * The gateway's API-management steps, as the request pipeline calls them (server.ts keeps only the
 * calls): the CORS preflight answer (step 3), the static and aggregate actions and the request body
 * transform (step 10), and the response shaping of forwarded requests — response transform, CORS
 * headers, response size limit (step 11).
 */
import type { IncomingHttpHeaders, OutgoingHttpHeaders, ServerResponse } from "node:http";
import type { Writable } from "node:stream";
import type { RouteDecision } from "../decide/decide.ts";
import type { GatewayErrorCode } from "../gateway/errors.ts";
import type { AnyRequest } from "../gateway/listeners.ts";
import type { SpanLike, Tracer } from "../telemetry/tracing.ts";
import type { ForwardResult } from "../upstream/forward.ts";
import type { CancelToken } from "../upstream/h1pool.ts";
import { aggregate, type AggregateObserver } from "./aggregate.ts";
import {
  BodyError,
  BoundedCollector,
  LimitedWritable,
  decodeContent,
  isJsonMediaType,
  listsMediaTypes,
} from "./body.ts";
import { preflight } from "./cors.ts";
import { decorateResponse, type RouteApim } from "./index.ts";
import { serveStatic, type SendTimeout } from "./static.ts";
import type { TemplateContext, TemplatePrincipal } from "./template.ts";
import { applyHeaderOps, transformJson } from "./transform.ts";

/** What the steps need of the gateway. */
export interface ApimHost {
  respondError(
    req: AnyRequest,
    res: ServerResponse,
    status: number,
    code: GatewayErrorCode,
    message: string,
    extra?: Record<string, string>,
  ): void;
  /** Counts an error the gateway could not answer as a response (a reset after the head went out). */
  countError(code: GatewayErrorCode): void;
  readonly aggregateObserver: AggregateObserver;
  /** The send timeout of a static file's body (the gateway's idle timeout), and its log line. */
  readonly fileSendTimeout: SendTimeout;
}

const firstHeader = (req: AnyRequest, name: string): string | undefined => {
  const v = req.headers[name];
  return Array.isArray(v) ? v[0] : v;
};

/** The Origin of a request on a route with CORS (undefined otherwise: nothing to check). */
export function corsOrigin(ap: RouteApim | undefined, req: AnyRequest): string | undefined {
  return ap?.cors ? firstHeader(req, "origin") : undefined;
}

/** The facts transform templates read, built once per request on routes whose templates need them. */
export function templateContext(
  d: RouteDecision,
  req: AnyRequest,
  requestId: string,
  clientIp: string,
  principal: TemplatePrincipal | null,
): TemplateContext {
  return new RequestTemplateContext(d, req, requestId, clientIp, principal);
}

/** A TemplateContext read from the decision and the request when a template asks (no closure, no copies). */
class RequestTemplateContext implements TemplateContext {
  readonly #d: RouteDecision;
  readonly #req: AnyRequest;
  readonly requestId: string;
  readonly clientIp: string;
  readonly principal: TemplatePrincipal | null;

  constructor(
    d: RouteDecision,
    req: AnyRequest,
    requestId: string,
    clientIp: string,
    principal: TemplatePrincipal | null,
  ) {
    this.#d = d;
    this.#req = req;
    this.requestId = requestId;
    this.clientIp = clientIp;
    this.principal = principal;
  }

  get method(): string {
    return this.#req.method ?? "GET";
  }
  get path(): string {
    return this.#d.path;
  }
  get host(): string {
    return this.#d.host;
  }
  get query(): string {
    return this.#d.query;
  }
  get params(): Readonly<Record<string, string>> {
    return this.#d.params;
  }
  header(name: string): string | undefined {
    return firstHeader(this.#req, name);
  }
}

/** Step 3: answers a CORS preflight (decide() marked it) — 204 with the allow headers, or 403. */
export function answerPreflight(host: ApimHost, req: AnyRequest, res: ServerResponse, ap: RouteApim): void {
  const r = preflight(
    ap.cors!,
    firstHeader(req, "origin") ?? "",
    firstHeader(req, "access-control-request-method") ?? "",
    firstHeader(req, "access-control-request-headers"),
  );
  if (!r.allowed) {
    host.respondError(req, res, 403, "cors_denied", r.reason, r.headers as Record<string, string>);
    return;
  }
  res.writeHead(204, r.headers);
  res.end();
}

/** CORS headers on an error the gateway generates on a CORS route (so the page can read a 401 or 429). */
export function errorCorsHeaders(ap: RouteApim, origin: string | undefined): Record<string, string> {
  const h: OutgoingHttpHeaders = {};
  decorateResponse({ ...ap, response: null }, origin, h, null);
  return h as Record<string, string>;
}

/**
 * On a CORS route, puts the CORS headers for this origin on the response up front (`setHeader`), so
 * every answer — the upstream's, or an error the gateway generates at any later step (401, 413, 429,
 * 5xx) — carries them; writeHead merges them with its own.
 */
export function presetCorsHeaders(ap: RouteApim, origin: string | undefined, res: ServerResponse): void {
  const h = errorCorsHeaders(ap, origin);
  for (const name in h) res.setHeader(name, h[name]!);
}

/** Step 10, `static`: serves a file (or answers the error). Returns the access-log outcome. */
export async function serveStaticRoute(
  host: ApimHost,
  req: AnyRequest,
  res: ServerResponse,
  d: RouteDecision,
  ap: RouteApim,
  origin: string | undefined,
  ctx: TemplateContext | null,
): Promise<string> {
  const r = await serveStatic(
    ap.static!,
    { method: req.method ?? "GET", path: d.path, query: d.query, header: (n) => firstHeader(req, n) },
    res,
    (h) => decorateResponse(ap, origin, h, ctx),
    host.fileSendTimeout,
  );
  if (r.kind === "served") return `static_${r.status}`;
  host.respondError(req, res, r.status, r.code, r.message, {
    ...(r.headers as Record<string, string> | undefined),
    ...errorCorsHeaders(ap, origin),
  });
  return `static_${r.status}`;
}

/** Step 10, `aggregate`: fans out, merges, answers. Returns the access-log outcome. */
export async function aggregateRoute(
  host: ApimHost,
  req: AnyRequest,
  res: ServerResponse,
  d: RouteDecision,
  ap: RouteApim,
  origin: string | undefined,
  ctx: TemplateContext | null,
  upstream: {
    readonly baseHeaders: Record<string, string | string[]>;
    readonly hashKey: string;
    readonly span: SpanLike;
    readonly tracer: Tracer;
    /** The exchange's token: the gateway aborts it when the client goes away. */
    readonly cancel: CancelToken;
    /** The gateway holds a valid mesh identity (parts on mTLS clusters may be called). */
    readonly meshIdentityReady?: boolean;
    /** Authentication's edits of each part's headers (AggregateRequest.authHeaders). */
    readonly authHeaders?: (headers: Record<string, string | string[]>) => void;
  },
): Promise<string> {
  const cancel = upstream.cancel;
  const result = await aggregate(
    ap.aggregate!,
    {
      params: d.params,
      clientHeaders: req.headers as IncomingHttpHeaders,
      baseHeaders: upstream.baseHeaders,
      retry: d.retry,
      hashKey: upstream.hashKey,
      cancel,
      span: upstream.span,
      tracer: upstream.tracer,
      templateContext: ctx,
      meshIdentityReady: upstream.meshIdentityReady === true,
      ...(upstream.authHeaders ? { authHeaders: upstream.authHeaders } : {}),
    },
    host.aggregateObserver,
  );
  if (result.kind === "cancelled") {
    res.destroy();
    return "client_aborted";
  }
  if (result.kind === "error") {
    host.respondError(req, res, result.status, result.code, result.message, {
      ...(result.part !== null ? { "x-meshgate-part": result.part } : {}),
      ...errorCorsHeaders(ap, origin),
    });
    // A part the sidecar of its service refused: logged as that refusal (replay reads it as one).
    return result.denied !== undefined ? `denied_mesh_${result.denied}` : result.code;
  }
  let body = result.body;
  if (ap.response?.body) {
    const t = transformJson(ap.response.body, body, ctx);
    if (!t.ok) {
      host.respondError(
        req,
        res,
        502,
        "response_transform_failed",
        "the merged response could not be transformed",
        errorCorsHeaders(ap, origin),
      );
      return "response_transform_failed";
    }
    body = t.body;
  }
  const headers: OutgoingHttpHeaders = { "content-type": "application/json", "content-length": body.length };
  if (result.degraded.length > 0) headers["x-meshgate-partial"] = result.degraded.join(", ");
  decorateResponse(ap, origin, headers, ctx);
  res.writeHead(200, headers);
  res.end(req.method === "HEAD" ? undefined : body);
  return result.degraded.length > 0 ? "partial" : "success";
}

/**
 * Removes what describes the upstream's bytes rather than the transformed body: validators, range
 * support and digests (RFC 9530 Content-Digest/Repr-Digest, RFC 3230 Digest, Content-MD5) — a digest
 * of the untransformed body would fail the client's check and is a hash over the dropped fields.
 */
function dropRepresentationHeaders(h: OutgoingHttpHeaders): void {
  delete h.etag;
  delete h["content-md5"];
  delete h["accept-ranges"];
  delete h.digest;
  delete h["content-digest"];
  delete h["repr-digest"];
}

export type RequestBodyResult =
  | { readonly kind: "body"; readonly body: Buffer }
  | { readonly kind: "untouched" }
  | {
      readonly kind: "error";
      readonly status: 400 | 413 | 415;
      readonly code: "bad_json_body" | "body_too_large" | "unsupported_media_type";
      readonly message: string;
    }
  | { readonly kind: "aborted" };

/**
 * Step 10, `forward` with a request body transform: a JSON body (Content-Type application/json or
 * +json) is read whole — at most the route's body limit — decoded if it has a Content-Encoding,
 * transformed, and sent with a recomputed Content-Length. Any other body streams untouched — except on a
 * route whose operations set, template or drop fields: those are fields the upstream trusts the gateway to
 * have written (`${principal.subject}`) or removed, and an upstream that parses JSON whatever the declared
 * type would take the client's own values from the same JSON sent as text/plain (or with no type). Such a
 * body is refused, 415 unsupported_media_type (fail closed).
 * Mutates `headers` (content-length, content-encoding) when it returns a body.
 */
export async function transformRequestBody(
  ap: RouteApim,
  req: AnyRequest,
  headers: Record<string, string | string[]>,
  limit: number,
  ctx: TemplateContext | null,
): Promise<RequestBodyResult> {
  const ops = ap.request?.body;
  if (!ops) return { kind: "untouched" };
  if (!isJsonMediaType(req.headers["content-type"])) {
    if (ops.set.length === 0 && ops.template.length === 0 && ops.drop.length === 0)
      return { kind: "untouched" };
    return {
      kind: "error",
      status: 415,
      code: "unsupported_media_type",
      message:
        "the route sets or removes fields of JSON request bodies: send the body as application/json (or a +json type)",
    };
  }
  const collected = await readBounded(req, limit);
  if (collected === "aborted") return { kind: "aborted" };
  if (collected === "too_large")
    return {
      kind: "error",
      status: 413,
      code: "body_too_large",
      message: `the request body exceeds ${limit} bytes`,
    };
  let raw: Buffer;
  try {
    raw = await decodeContent(collected, req.headers["content-encoding"], limit);
  } catch (err) {
    return err instanceof BodyError && err.failure === "too_large"
      ? {
          kind: "error",
          status: 413,
          code: "body_too_large",
          message: `the decoded request body exceeds ${limit} bytes`,
        }
      : { kind: "error", status: 400, code: "bad_json_body", message: (err as Error).message };
  }
  const t = transformJson(ops, raw, ctx);
  if (!t.ok)
    return {
      kind: "error",
      status: 400,
      code: "bad_json_body",
      message: "the request body is not valid JSON",
    };
  delete headers["content-encoding"];
  delete headers["transfer-encoding"];
  headers["content-length"] = String(t.body.length);
  return { kind: "body", body: t.body };
}

function readBounded(req: AnyRequest, limit: number): Promise<Buffer | "too_large" | "aborted"> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let done = false;
    const finish = (r: Buffer | "too_large" | "aborted") => {
      if (done) return;
      done = true;
      req.removeListener("data", onData);
      resolve(r);
    };
    const onData = (c: Buffer) => {
      size += c.length;
      if (size > limit) {
        req.pause();
        finish("too_large");
      } else chunks.push(c);
    };
    req.on("data", onData);
    req.once("end", () => finish(Buffer.concat(chunks, size)));
    req.once("error", () => finish("aborted"));
    req.once("aborted", () => finish("aborted"));
  });
}

/** Headers a forwarded request gets on a route whose response body is transformed (whole, uncompressed JSON). */
export function prepareForResponseTransform(ap: RouteApim, headers: Record<string, string | string[]>): void {
  if (!ap.response?.body) return;
  headers["accept-encoding"] = "identity";
  delete headers.range;
  delete headers["if-range"];
}

/** Applies the route's request header transform (after the gateway set its own headers). */
export function transformRequestHeaders(
  ap: RouteApim,
  headers: Record<string, string | string[]>,
  ctx: TemplateContext | null,
): void {
  if (ap.request?.headers) applyHeaderOps(ap.request.headers, headers, ctx);
}

/**
 * Step 11 for forwarded requests: what happens to the upstream's response head and body. Created per
 * request on routes with API-management settings; `head` is forward()'s onHead, `finish` completes
 * the response after forward() returned.
 */
export class ResponseShaper {
  private readonly host: ApimHost;
  private readonly ap: RouteApim;
  private readonly req: AnyRequest;
  private readonly res: ServerResponse;
  private readonly origin: string | undefined;
  private readonly ctx: TemplateContext | null;
  private readonly cancel: CancelToken;
  private collector: BoundedCollector | null = null;
  private limiter: LimitedWritable | null = null;
  private tooLarge = false;
  /** A body-transform route got a response with several Content-Type fields (refused: 502). */
  private repeatedType = false;
  private status = 0;
  private headers: OutgoingHttpHeaders = {};

  constructor(
    host: ApimHost,
    ap: RouteApim,
    req: AnyRequest,
    res: ServerResponse,
    origin: string | undefined,
    ctx: TemplateContext | null,
    cancel: CancelToken,
  ) {
    this.host = host;
    this.ap = ap;
    this.req = req;
    this.res = res;
    this.origin = origin;
    this.ctx = ctx;
    this.cancel = cancel;
  }

  private readonly stop = () => {
    if (this.cancel.aborted) return;
    this.cancel.aborted = true;
    this.cancel.onabort?.();
  };

  /** forward()'s onHead: headers already filtered by the gateway (hop-by-hop gone). */
  head(status: number, headers: OutgoingHttpHeaders): Writable {
    const ap = this.ap;
    const limit = ap.maxResponseBytes;
    const method = this.req.method;
    const hasBody = method !== "HEAD" && status >= 200 && status !== 204 && status !== 304;
    if (ap.response?.body && hasBody && listsMediaTypes(headers["content-type"] as string | string[])) {
      // Content-Type is a singleton field (RFC 9110 §8.3): an HTTP/1.1 upstream that repeats it, or lists
      // two types on one line, sent an invalid answer, and passing it on untransformed would hand the client
      // the fields the route drops (a browser reads "application/json, application/json" and
      // "text/plain, application/json" as JSON: Fetch takes the last type). Refused like invalid JSON.
      this.repeatedType = true;
      process.nextTick(this.stop);
      return new BoundedCollector(0);
    }
    if (ap.response?.body && hasBody && isJsonMediaType(headers["content-type"] as string | undefined)) {
      this.status = status;
      this.headers = headers;
      this.collector = new BoundedCollector(limit!, this.stop);
      return this.collector;
    }
    if (ap.response?.body && method === "HEAD") {
      delete headers["content-length"];
      // The same head a GET gets (RFC 9110 §9.3.2): its body would be transformed.
      if (isJsonMediaType(headers["content-type"] as string | undefined)) dropRepresentationHeaders(headers);
    }
    const declared = Number(headers["content-length"]);
    if (limit !== null && hasBody && declared > limit) {
      // Known to be too large before a byte was sent: refuse cleanly (502) instead of a reset later.
      this.tooLarge = true;
      process.nextTick(this.stop);
      return new BoundedCollector(0);
    }
    decorateResponse(ap, this.origin, headers, this.ctx);
    this.res.writeHead(status, headers);
    if (limit === null || !hasBody) return this.res;
    this.limiter = new LimitedWritable(this.res, limit, this.stop);
    return this.limiter;
  }

  /**
   * Completes the response after forward() returned: a buffered JSON response is transformed and sent,
   * a limit breach answered (502) or reset. Returns the access-log outcome when it answered, or null
   * when the gateway's usual outcome handling applies.
   */
  async finish(result: { readonly kind: ForwardResult["kind"] }): Promise<string | null> {
    const { host, req, res, ap } = this;
    if (this.tooLarge) {
      host.respondError(
        req,
        res,
        502,
        "response_too_large",
        `the upstream response exceeds ${ap.maxResponseBytes} bytes`,
        errorCorsHeaders(ap, this.origin),
      );
      return "response_too_large";
    }
    if (this.repeatedType) {
      host.respondError(
        req,
        res,
        502,
        "response_transform_failed",
        "the upstream response has several Content-Type fields",
        errorCorsHeaders(ap, this.origin),
      );
      return "response_transform_failed";
    }
    if (this.limiter?.exceeded) {
      // The head is out: the client must see a reset, never a clean but truncated response.
      res.destroy();
      host.countError("response_too_large");
      return "response_too_large";
    }
    const collector = this.collector;
    if (collector === null) return null;
    if (result.kind === "ok") await collector.done();
    if (collector.failure !== null) {
      host.respondError(
        req,
        res,
        502,
        "response_too_large",
        `the upstream response exceeds ${ap.maxResponseBytes} bytes`,
        errorCorsHeaders(ap, this.origin),
      );
      return "response_too_large";
    }
    if (result.kind === "error") return null; // nothing was sent: the gateway answers 502/504
    const h = this.headers;
    let raw: Buffer;
    try {
      raw = await decodeContent(
        collector.body(),
        h["content-encoding"] as string | undefined,
        collector.limit,
      );
    } catch (err) {
      const code =
        err instanceof BodyError && err.failure === "too_large"
          ? "response_too_large"
          : "response_transform_failed";
      host.respondError(
        req,
        res,
        502,
        code,
        `the upstream response could not be decoded: ${(err as Error).message}`,
        errorCorsHeaders(ap, this.origin),
      );
      return code;
    }
    const t = transformJson(ap.response!.body!, raw, this.ctx);
    if (!t.ok) {
      host.respondError(
        req,
        res,
        502,
        "response_transform_failed",
        "the upstream response is not valid JSON",
        errorCorsHeaders(ap, this.origin),
      );
      return "response_transform_failed";
    }
    delete h["content-encoding"];
    dropRepresentationHeaders(h);
    h["content-length"] = t.body.length;
    decorateResponse(ap, this.origin, h, this.ctx);
    res.writeHead(this.status, h);
    res.end(t.body);
    return null;
  }
}
