/**
 * Response headers of a rate-limited route, after draft-ietf-httpapi-ratelimit-headers-06 (the last
 * revision with the separate fields; from -07 on they merge into `RateLimit` and `RateLimit-Policy`
 * structured fields, which clients do not read yet):
 *
 * | field | value |
 * |---|---|
 * | `RateLimit-Limit` | whole tokens in a full bucket (the burst this replica allows) |
 * | `RateLimit-Remaining` | whole tokens left after this request |
 * | `RateLimit-Reset` | seconds until the bucket is full again (rounded up) |
 * | `RateLimit-Policy` | `<quota>;w=<window seconds>`, and `burst=<tokens>` when the bucket differs from the quota |
 * | `Retry-After` (429 only) | seconds until the next token, rounded up, at least 1 (RFC 9110 §10.2.3) |
 *
 * When the store failed and the fail mode answered, the numbers are unknown and no RateLimit fields are
 * sent (a `Retry-After: 1` goes with a fail-closed refusal).
 */
import type { BucketPolicy } from "./bucket.ts";
import type { RateLimitDecision } from "./local.ts";

/** The RateLimit-* fields for a decision (lower-case names), or null when the store failed. */
export function rateLimitHeaders(policy: BucketPolicy, d: RateLimitDecision): Record<string, string> | null {
  if (d.storeError) return null;
  return {
    "ratelimit-limit": String(policy.limit),
    "ratelimit-remaining": String(Math.min(policy.limit, Math.max(0, d.remaining))),
    "ratelimit-reset": String(Math.ceil(d.resetMs / 1000)),
    "ratelimit-policy": policy.policyHeader,
  };
}

/** `Retry-After` in whole seconds, at least 1. */
export function retryAfterSeconds(d: RateLimitDecision): number {
  return Math.max(1, Math.ceil(d.retryAfterMs / 1000));
}
