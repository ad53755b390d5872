/**
 * The live topology page of local mode, as a request handler the local admin server mounts:
 *
 *   const topology = createTopology({ spec, infra, runtime, targets });
 *   http.createServer((req, res) => { if (!topology(req, res)) notFound(res); });
 *   …
 *   topology.close(); // stops scraping
 *
 * - `GET /` and `GET /topology`: one static HTML page (inline CSS and JS, no build step, nothing fetched
 *   from elsewhere) that draws the graph and polls `/api/topology`;
 * - `GET /api/topology`: the graph (graph.ts), live numbers per edge and certificate expiry per identity,
 *   read by scraping every target's `/metrics` every `scrapeIntervalMs` and differencing the counters and
 *   histogram buckets over the last `windowMs` (metrics.ts);
 * - `POST /api/explain`: `explainRequest()` (meshgate/policies: the decision of every layer, as
 *   `meshgate explain --format json` prints it) for the JSON request in the body.
 *
 * Anything else answers false, so the admin server can try its next handler.
 */
import type { IncomingMessage, ServerResponse } from "node:http";
import type { MeshSpec } from "../../../components/spec/schema.ts";
import type { InfraIR, RuntimeConfigs } from "../../../components/translate/ir.ts";
import {
  explainRequest,
  TrafficRequestError,
  type TrafficDecision,
  type TrafficRequest,
} from "../../../policies/index.ts";
import { MeshModel } from "../../../policies/model.ts";
import {
  buildTopology,
  certificateOf,
  edgeSource,
  inFlight,
  type CertificateExpiry,
  type ScrapeTarget,
  type TopologyGraph,
} from "./graph.ts";
import {
  mergeStats,
  parseExposition,
  spanSeconds,
  windowStats,
  withinWindow,
  type Snapshot,
  type TrafficStats,
} from "./metrics.ts";
import { TOPOLOGY_CSP, topologyPage, type PageLink } from "./page.ts";

export type { ScrapeTarget, TopologyGraph, TopologyEdge, TopologyNode, CertificateExpiry } from "./graph.ts";
export type { TrafficStats } from "./metrics.ts";
export type { PageLink } from "./page.ts";
export { buildTopology } from "./graph.ts";

export interface TopologyOptions {
  readonly spec: MeshSpec;
  /** translate(spec)'s output. */
  readonly infra: InfraIR;
  readonly runtime: RuntimeConfigs;
  /** Every proxy to scrape. */
  readonly targets: readonly ScrapeTarget[];
  /** @default 2000 */
  readonly scrapeIntervalMs?: number;
  /** The sliding window rates and quantiles are computed over. @default 10000 */
  readonly windowMs?: number;
  /** @default 1500 */
  readonly scrapeTimeoutMs?: number;
  /**
   * Host names (without port) the page answers for; other Host headers get 403, so a web page that
   * rebinds its DNS name to 127.0.0.1 cannot read the mesh or run explain. @default loopback names
   */
  readonly allowedHosts?: readonly string[];
  /** Links the page's header shows (e.g. the launcher's process status, JWKS, Prometheus). */
  readonly links?: readonly PageLink[];
  /** Whether `GET /` serves the page (else only `/topology`). @default true */
  readonly root?: boolean;
}

/** The Host names a local admin server is reached by. */
export const LOOPBACK_HOSTS: readonly string[] = ["127.0.0.1", "localhost", "[::1]"];

/** One scrape target's state in the API. */
export interface TargetState {
  readonly workload: string;
  readonly kind: "gateway" | "sidecar";
  readonly adminUrl: string;
  /** null before the first scrape. */
  readonly up: boolean | null;
  readonly lastScrapeAt: number | null;
  /** Why the last scrape failed (null when it succeeded). */
  readonly error: string | null;
  /** Requests the proxy is handling now. */
  readonly inFlight: number | null;
}

/** What `GET /api/topology` answers. */
export interface TopologyState {
  readonly generatedAt: number;
  readonly window: { readonly seconds: number; readonly windowMs: number; readonly scrapeIntervalMs: number };
  readonly graph: TopologyGraph;
  /** Live numbers per edge id (`from->to`); null when its proxy has not been scraped twice yet. */
  readonly stats: Readonly<Record<string, TrafficStats | null>>;
  /** Certificate expiry per workload (null when its proxy exports none). */
  readonly certificates: Readonly<Record<string, CertificateExpiry | null>>;
  readonly targets: readonly TargetState[];
  /** The callers and destinations the explain form offers. */
  readonly explain: {
    readonly callers: readonly string[];
    readonly hosts: readonly string[];
    readonly consumers: readonly string[];
    readonly jwtProviders: readonly string[];
  };
}

export interface TopologyHandler {
  /** Answers the page's requests; false for any other request. */
  (req: IncomingMessage, res: ServerResponse): boolean;
  /** Scrapes every target once now (the timer does it every interval). */
  scrape(): Promise<void>;
  /** The state `/api/topology` serves. */
  state(): TopologyState;
  /** The decision for one request (throws TrafficRequestError for a request naming what the mesh lacks). */
  explain(request: TrafficRequest): TrafficDecision;
  /** Stops scraping. */
  close(): void;
}

/** The processes of a local plan, as far as scraping needs them (structurally: stacks/local/plan.ts). */
export interface ProcessLike {
  readonly role: string;
  readonly workload: string | null;
  readonly ports: Readonly<Record<string, number>>;
}

/** The scrape targets of a local plan's processes: every gateway and sidecar admin listener on 127.0.0.1. */
export function scrapeTargetsOf(processes: readonly ProcessLike[]): ScrapeTarget[] {
  const out: ScrapeTarget[] = [];
  for (const p of processes)
    if ((p.role === "gateway" || p.role === "sidecar") && p.workload !== null && p.ports.admin !== undefined)
      out.push({ workload: p.workload, kind: p.role, adminUrl: `http://127.0.0.1:${p.ports.admin}` });
  return out;
}

/** The largest explain request body read. */
export const MAX_EXPLAIN_BODY = 16 * 1024;

interface TargetRuntime {
  readonly target: ScrapeTarget;
  snapshots: Snapshot[];
  up: boolean | null;
  lastScrapeAt: number | null;
  error: string | null;
}

/** Creates the handler and starts scraping (the timer does not keep the process alive). */
export function createTopology(opts: TopologyOptions): TopologyHandler {
  const intervalMs = opts.scrapeIntervalMs ?? 2000;
  const windowMs = opts.windowMs ?? 10_000;
  const timeoutMs = opts.scrapeTimeoutMs ?? 1500;
  const graph = buildTopology(opts.infra);
  const model = new MeshModel(opts.spec, opts.infra, opts.runtime);
  const spiffe = new Map(opts.infra.identities.map((i) => [i.name, i.spiffeId]));
  const spiffeOf = (w: string) => spiffe.get(w) ?? model.spiffeId(w);
  const targets = new Map<string, TargetRuntime>(
    opts.targets.map((t) => [
      t.workload,
      { target: t, snapshots: [], up: null, lastScrapeAt: null, error: null },
    ]),
  );
  const sources = new Map(graph.edges.map((e) => [e.id, edgeSource(e, spiffeOf)]));
  const page = topologyPage(graph.name, opts.links ?? []);
  const root = opts.root ?? true;
  const explainInfo = {
    callers: ["internet", ...graph.nodes.filter((n) => n.kind !== "internet").map((n) => n.id)],
    hosts: opts.runtime.gateway?.hosts ?? [],
    consumers: opts.runtime.gateway?.auth.apiKeys?.consumers.map((c) => c.name) ?? [],
    jwtProviders: opts.runtime.gateway?.auth.jwt.map((p) => p.name) ?? [],
  };

  let running: Promise<void> | null = null;
  const scrapeOne = async (t: TargetRuntime): Promise<void> => {
    const at = Date.now();
    try {
      const res = await fetch(`${t.target.adminUrl.replace(/\/$/, "")}/metrics`, {
        signal: AbortSignal.timeout(timeoutMs),
      });
      const text = await res.text();
      if (res.status !== 200) throw new Error(`/metrics answered ${res.status}`);
      t.snapshots.push({ at, samples: parseExposition(text).samples });
      // Keep one scrape older than the window, so the window is always covered.
      const keepFrom = at - windowMs - intervalMs;
      while (t.snapshots.length > 2 && t.snapshots[1]!.at < keepFrom) t.snapshots.shift();
      t.up = true;
      t.error = null;
    } catch (e) {
      t.up = false;
      t.error = scrapeError(e, timeoutMs);
    }
    t.lastScrapeAt = at;
  };
  const scrape = (): Promise<void> => {
    running ??= Promise.all([...targets.values()].map(scrapeOne)).then(() => {
      running = null;
    });
    return running;
  };
  const timer = setInterval(() => void scrape(), intervalMs);
  timer.unref();
  void scrape();

  const state = (): TopologyState => {
    const stats: Record<string, TrafficStats | null> = {};
    let seconds = 0;
    for (const e of graph.edges) {
      const src = sources.get(e.id);
      const t = src ? targets.get(src.target) : undefined;
      if (!src || !t) {
        stats[e.id] = null;
        continue;
      }
      const win = withinWindow(t.snapshots, windowMs);
      if (win.length < 2) {
        stats[e.id] = null;
        continue;
      }
      seconds = Math.max(seconds, spanSeconds(win));
      const first = windowStats(win, src.stats);
      stats[e.id] = src.also ? mergeStats(first, windowStats(win, src.also)) : first;
    }
    const certificates: Record<string, CertificateExpiry | null> = {};
    for (const n of graph.nodes) {
      if (n.kind === "internet") continue;
      const t = targets.get(n.id);
      const last = t?.snapshots[t.snapshots.length - 1];
      certificates[n.id] = last ? certificateOf(n.id, n.identity, last.samples, last.at) : null;
    }
    return {
      generatedAt: Date.now(),
      window: { seconds, windowMs, scrapeIntervalMs: intervalMs },
      graph,
      stats,
      certificates,
      targets: [...targets.values()].map((t) => {
        const last = t.snapshots[t.snapshots.length - 1];
        return {
          workload: t.target.workload,
          kind: t.target.kind,
          adminUrl: t.target.adminUrl,
          up: t.up,
          lastScrapeAt: t.lastScrapeAt,
          error: t.error,
          inFlight: last && t.up ? inFlight(last.samples) : null,
        };
      }),
      explain: explainInfo,
    };
  };

  const explain = (request: TrafficRequest) => explainRequest(model, request);

  const allowedHosts = new Set((opts.allowedHosts ?? LOOPBACK_HOSTS).map((h) => h.toLowerCase()));
  const handler = (req: IncomingMessage, res: ServerResponse): boolean => {
    const path = (req.url ?? "/").split("?")[0];
    if (path === "/" ? !root : path !== "/topology" && path !== "/api/topology" && path !== "/api/explain")
      return false;
    const host = (req.headers.host ?? "").toLowerCase().replace(/:[0-9]+$/, "");
    if (!allowedHosts.has(host)) {
      sendError(
        res,
        403,
        "host_not_allowed",
        `the topology page answers for ${[...allowedHosts].join(", ")} only`,
      );
      return true;
    }
    if (path === "/" || path === "/topology") {
      if (!isRead(req, res)) return true;
      send(res, 200, "text/html; charset=utf-8", page, req.method === "HEAD");
      return true;
    }
    if (path === "/api/topology") {
      if (!isRead(req, res)) return true;
      send(res, 200, "application/json", JSON.stringify(state()), req.method === "HEAD");
      return true;
    }
    if (path === "/api/explain") {
      if (req.method !== "POST") {
        res.setHeader("allow", "POST");
        sendError(res, 405, "method_not_allowed", "POST a JSON request to /api/explain");
        return true;
      }
      readJson(req, MAX_EXPLAIN_BODY).then(
        (body) => {
          const parsed = parseExplainRequest(body);
          if (typeof parsed === "string") return sendError(res, 400, "invalid_explain_request", parsed);
          let decision: TrafficDecision;
          try {
            decision = explain(parsed);
          } catch (e) {
            if (e instanceof TrafficRequestError)
              return sendError(res, 400, "invalid_explain_request", e.message);
            throw e;
          }
          send(res, 200, "application/json", JSON.stringify(decision), false);
        },
        (e: Error & { status?: number; code?: string }) =>
          sendError(res, e.status ?? 400, e.code ?? "invalid_explain_request", e.message),
      );
      return true;
    }
    return false;
  };
  return Object.assign(handler, { scrape, state, explain, close: () => clearInterval(timer) });
}

/** Why a scrape failed, in words: a timeout, the socket error's code (ECONNREFUSED), or the message. */
function scrapeError(e: unknown, timeoutMs: number): string {
  if (!(e instanceof Error)) return String(e);
  if (e.name === "TimeoutError") return `no answer within ${timeoutMs} ms`;
  const code = (e.cause as { code?: unknown } | undefined)?.code;
  return typeof code === "string" ? `${e.message} (${code})` : e.message;
}

function isRead(req: IncomingMessage, res: ServerResponse): boolean {
  if (req.method === "GET" || req.method === "HEAD") return true;
  res.setHeader("allow", "GET, HEAD");
  sendError(res, 405, "method_not_allowed", `${req.method} is not allowed here`);
  return false;
}

function send(res: ServerResponse, status: number, type: string, body: string, head: boolean): void {
  res.writeHead(status, {
    "content-type": type,
    "content-length": Buffer.byteLength(body),
    "cache-control": "no-store",
    "x-content-type-options": "nosniff",
    ...(type.startsWith("text/html")
      ? { "content-security-policy": TOPOLOGY_CSP, "x-frame-options": "DENY" }
      : {}),
  });
  res.end(head ? undefined : body);
}

function sendError(res: ServerResponse, status: number, code: string, message: string): void {
  send(res, status, "application/json", JSON.stringify({ error: { code, message } }), false);
}

/**
 * Reads a JSON body of at most `limit` bytes. A larger body is read to its end and discarded (so the
 * client sees the 413, not a reset), up to 64 × the limit, past which the connection is dropped.
 */
function readJson(req: IncomingMessage, limit: number): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const type = req.headers["content-type"] ?? "";
    if (!/^application\/json\b/i.test(type)) {
      req.resume();
      return reject(
        Object.assign(new Error("send Content-Type: application/json"), {
          status: 415,
          code: "unsupported_media_type",
        }),
      );
    }
    const chunks: Buffer[] = [];
    let size = 0;
    req.on("data", (c: Buffer) => {
      size += c.length;
      if (size <= limit) chunks.push(c);
      else if (size > limit * 64) req.destroy();
    });
    req.on("end", () => {
      if (size > limit)
        return reject(
          Object.assign(new Error(`the body is over ${limit} bytes`), {
            status: 413,
            code: "body_too_large",
          }),
        );
      try {
        resolve(JSON.parse(Buffer.concat(chunks).toString("utf8")));
      } catch {
        reject(new Error("the body is not valid JSON"));
      }
    });
    req.on("error", reject);
  });
}

const METHOD = /^[A-Z]{1,16}$/;

/**
 * Validates an explain request body: `{ from, method, path, host?, port?, to?, headers?, claims?, scopes?,
 * provider?, consumer?, clientIp?, plaintext? }` — the flags of `meshgate explain`, with the same meaning
 * (`plaintext: true`: a pod of the caller that bypasses its sidecar; `port`: the port a service asks its
 * sidecar for at an external destination). Returns the request or a message naming the field.
 */
export function parseExplainRequest(body: unknown): TrafficRequest | string {
  if (typeof body !== "object" || body === null || Array.isArray(body))
    return "the body must be a JSON object";
  const b = body as Record<string, unknown>;
  const known = new Set([
    "from",
    "method",
    "path",
    "host",
    "to",
    "headers",
    "claims",
    "scopes",
    "provider",
    "consumer",
    "clientIp",
    "plaintext",
    "port",
  ]);
  for (const k of Object.keys(b))
    if (!known.has(k)) return `${k}: unknown field (allowed: ${[...known].join(", ")})`;
  const str = (k: string, max: number, required: boolean): string | undefined | Error => {
    const v = b[k];
    if (v === undefined || v === "") return required ? new Error(`${k}: required`) : undefined;
    if (typeof v !== "string") return new Error(`${k}: must be a string`);
    if (v.length > max) return new Error(`${k}: longer than ${max} characters`);
    return v;
  };
  const out: Record<string, unknown> = {};
  for (const [k, max, required] of [
    ["from", 253, true],
    ["method", 16, true],
    ["path", 4096, true],
    ["host", 253, false],
    ["to", 253, false],
    ["provider", 253, false],
    ["consumer", 253, false],
    ["clientIp", 45, false],
  ] as const) {
    const v = str(k, max, required);
    if (v instanceof Error) return v.message;
    if (v !== undefined) out[k] = v;
  }
  if (!METHOD.test(out.method as string)) return "method: an upper-case HTTP method (GET, POST, …)";
  if (b.scopes !== undefined) {
    if (!Array.isArray(b.scopes) || b.scopes.some((x) => typeof x !== "string"))
      return "scopes: must be an array of strings";
    out.scopes = b.scopes;
  }
  for (const k of ["headers", "claims"] as const) {
    const v = b[k];
    if (v === undefined || v === null) continue;
    if (typeof v !== "object" || Array.isArray(v)) return `${k}: must be a JSON object`;
    if (k === "headers" && Object.values(v).some((x) => typeof x !== "string"))
      return "headers: every value must be a string";
    out[k] = v;
  }
  if (b.plaintext !== undefined && b.plaintext !== null) {
    if (typeof b.plaintext !== "boolean") return "plaintext: must be true or false";
    if (b.plaintext) out.plaintext = true;
  }
  if (b.port !== undefined && b.port !== null) {
    if (!Number.isInteger(b.port) || (b.port as number) < 1 || (b.port as number) > 65535)
      return "port: must be a port number from 1 to 65535";
    out.port = b.port;
  }
  if (out.claims !== undefined && out.consumer !== undefined)
    return "claims, consumer: give a token's claims or an API-key consumer, not both";
  return out as unknown as TrafficRequest;
}
