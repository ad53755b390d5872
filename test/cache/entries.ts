/** Stored values and keys for the store tests (memory, and Redis' local layer). */
import { primaryKey } from "../../runtime/cache/policy.ts";
import type { StoredResponse } from "../../runtime/cache/store.ts";

/** A stored 200 text response (60 s lifetime, an ETag). */
export const storedResponse = (
  body: string | Buffer,
  headers: Record<string, string | string[]> = {},
): StoredResponse => ({
  kind: "response",
  status: 200,
  headers: { "content-type": "text/plain", ...headers },
  body: Buffer.isBuffer(body) ? body : Buffer.from(body),
  requestTime: 1,
  responseTime: 2,
  initialAgeMs: 0,
  lifetimeMs: 60_000,
  mustRevalidate: false,
  etag: '"e"',
  lastModified: null,
  date: null,
});

/** The cache key of `path` on `host`, route "r", no principal, with a secondary key. */
export const storeKey = (path: string, host = "h", variant = "") =>
  `${primaryKey(path, "", host, "r", null)}\t${variant}`;
