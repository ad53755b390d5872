/**
 * The purge API the admin listener exposes as `POST /cache/purge`: a JSON body naming what to remove —
 * `{"url": "/api/orders/7?x=1"}` (every variant of that URL, on every host and route, for every principal),
 * `{"prefix": "/api/orders/"}` (every URL starting with it), or `{"all": true}` — optionally narrowed with
 * `"host": "api.example.com"` for url and prefix. Answers `{"purged": <stored responses removed>}`.
 */
import { canonicalHost, canonicalizeTarget } from "../decide/canonical.ts";
import type { PurgeRequest } from "./store.ts";

/** Largest purge request body accepted. */
export const PURGE_BODY_LIMIT = 8 * 1024;

export type ParsedPurge = { ok: true; request: PurgeRequest } | { ok: false; error: string };

/**
 * Validates a purge request body. URLs are canonicalized the way decide() canonicalizes request targets
 * (so `/api//orders/%37` purges what `/api/orders/7` stored); a prefix must be a path prefix without
 * spaces or controls.
 */
export function parsePurgeRequest(body: string): ParsedPurge {
  let v: unknown;
  try {
    v = JSON.parse(body);
  } catch {
    return { ok: false, error: 'the body must be JSON: {"url": …} | {"prefix": …} | {"all": true}' };
  }
  if (v === null || typeof v !== "object" || Array.isArray(v)) {
    return { ok: false, error: 'the body must be a JSON object: {"url": …} | {"prefix": …} | {"all": true}' };
  }
  const o = v as Record<string, unknown>;
  const known = new Set(["url", "prefix", "all", "host"]);
  for (const k of Object.keys(o)) if (!known.has(k)) return { ok: false, error: `unknown field "${k}"` };
  const kinds = ["url", "prefix", "all"].filter((k) => o[k] !== undefined);
  if (kinds.length !== 1) return { ok: false, error: 'give exactly one of "url", "prefix" or "all"' };
  let host: string | undefined;
  if (o.host !== undefined) {
    if (o.all !== undefined) return { ok: false, error: '"host" narrows "url" or "prefix", not "all"' };
    const h = typeof o.host === "string" ? canonicalHost(o.host) : null;
    if (h === null) return { ok: false, error: '"host" must be a host name, e.g. "api.example.com"' };
    host = h;
  }
  const withHost = <T extends object>(r: T): T => (host === undefined ? r : { ...r, host });
  if (o.all !== undefined) {
    if (o.all !== true) return { ok: false, error: '"all" must be true' };
    return { ok: true, request: { all: true } };
  }
  if (o.url !== undefined) {
    if (typeof o.url !== "string" || !o.url.startsWith("/")) {
      return { ok: false, error: '"url" must be a path starting with "/" (query allowed)' };
    }
    const c = canonicalizeTarget(o.url);
    if (!c.ok) return { ok: false, error: `"url" is not a valid request target: ${c.detail}` };
    return { ok: true, request: withHost({ url: c.query ? `${c.path}?${c.query}` : c.path }) };
  }
  const prefix = o.prefix;
  if (
    typeof prefix !== "string" ||
    !prefix.startsWith("/") ||
    prefix.length > 2048 ||
    hasSpaceOrControl(prefix)
  ) {
    return {
      ok: false,
      error: '"prefix" must be a path prefix starting with "/", without spaces or controls',
    };
  }
  return { ok: true, request: withHost({ prefix }) };
}

function hasSpaceOrControl(s: string): boolean {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c <= 32 || c === 127) return true;
  }
  return false;
}
