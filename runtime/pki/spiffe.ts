/**
 * SPIFFE IDs (`spiffe://<trust-domain>/<path>`), parsed by hand to the letter of the SPIFFE ID standard.
 * Never through WHATWG `URL`: it resolves dot segments and normalizes percent-encoding, which would turn
 * a forbidden ID into an accepted one.
 */
import type { PkiErrorCode } from "./errors.ts";

/** Longest SPIFFE ID in bytes (SPIFFE ID standard §2.3). */
export const MAX_SPIFFE_ID_BYTES = 2048;
/** Longest trust domain name in bytes (SPIFFE ID standard §2.1). */
export const MAX_TRUST_DOMAIN_BYTES = 255;

const SCHEME = "spiffe://";
const TRUST_DOMAIN_CHAR = /^[a-z0-9._-]+$/;
const SEGMENT_CHAR = /^[A-Za-z0-9._-]+$/;

/** A parsed SPIFFE ID. `path` is `""` for a trust domain ID (`spiffe://td`), else starts with `/`. */
export interface SpiffeId {
  id: string;
  trustDomain: string;
  path: string;
  segments: readonly string[];
}

/** Why an ID is not a SPIFFE ID: a catalog code and a sentence naming the offending part. */
export interface SpiffeIdError {
  code: PkiErrorCode;
  reason: string;
}

export type SpiffeIdResult = ({ ok: true } & SpiffeId) | ({ ok: false } & SpiffeIdError);

const fail = (code: PkiErrorCode, reason: string): SpiffeIdResult => ({ ok: false, code, reason });

/** Checks a trust domain name: non-empty, ≤ 255 bytes, only `[a-z0-9._-]`. */
export function checkTrustDomain(td: string): SpiffeIdError | null {
  if (td === "") return { code: "E_RT_PKI_ID_TRUST_DOMAIN_MISSING", reason: "the trust domain is empty" };
  if (Buffer.byteLength(td) > MAX_TRUST_DOMAIN_BYTES)
    return {
      code: "E_RT_PKI_ID_TRUST_DOMAIN_TOO_LONG",
      reason: `the trust domain is ${Buffer.byteLength(td)} bytes long (at most ${MAX_TRUST_DOMAIN_BYTES})`,
    };
  if (!TRUST_DOMAIN_CHAR.test(td)) {
    const bad = [...td].find((c) => !/[a-z0-9._-]/.test(c)) ?? "";
    return {
      code: "E_RT_PKI_ID_TRUST_DOMAIN_CHARS",
      reason:
        `the trust domain ${JSON.stringify(td)} has ${JSON.stringify(bad)}; only lowercase letters, digits, ` +
        `'.', '-' and '_' are allowed` +
        (/[A-Z]/.test(bad) ? " (write it in lowercase)" : ""),
    };
  }
  return null;
}

/**
 * Parses a SPIFFE ID. Trust domain IDs (no path) are valid here; an SVID additionally needs a path,
 * which the verifier checks (E_RT_PKI_ID_ROOT_PATH).
 */
export function parseSpiffeId(id: string): SpiffeIdResult {
  if (Buffer.byteLength(id) > MAX_SPIFFE_ID_BYTES)
    return fail(
      "E_RT_PKI_ID_TOO_LONG",
      `the SPIFFE ID is ${Buffer.byteLength(id)} bytes long (at most ${MAX_SPIFFE_ID_BYTES})`,
    );
  if (!id.startsWith(SCHEME)) {
    const scheme = /^([^:/?#]*):/.exec(id)?.[1];
    return fail(
      "E_RT_PKI_ID_SCHEME",
      scheme === undefined
        ? `${JSON.stringify(short(id))} has no scheme; a SPIFFE ID starts with spiffe://`
        : `the scheme is ${JSON.stringify(scheme)}; a SPIFFE ID starts with spiffe:// (lowercase)`,
    );
  }
  const rest = id.slice(SCHEME.length);
  const end = firstOf(rest, "/?#");
  const authority = rest.slice(0, end);
  const tail = rest.slice(end);
  if (authority.includes("@"))
    return fail("E_RT_PKI_ID_USERINFO", `${JSON.stringify(short(id))} has userinfo before the trust domain`);
  if (authority.includes(":"))
    return fail("E_RT_PKI_ID_PORT", `${JSON.stringify(short(id))} has a port after the trust domain`);
  const tdError = checkTrustDomain(authority);
  if (tdError) return { ok: false, ...tdError };
  const q = tail.indexOf("?");
  const h = tail.indexOf("#");
  if (q >= 0 && (h < 0 || q < h))
    return fail("E_RT_PKI_ID_QUERY", `${JSON.stringify(short(id))} has a query; SPIFFE IDs have none`);
  if (h >= 0)
    return fail("E_RT_PKI_ID_FRAGMENT", `${JSON.stringify(short(id))} has a fragment; SPIFFE IDs have none`);
  if (tail === "") return { ok: true, id, trustDomain: authority, path: "", segments: [] };
  const segments = tail.slice(1).split("/");
  for (const [i, s] of segments.entries()) {
    if (s === "")
      return fail(
        "E_RT_PKI_ID_EMPTY_SEGMENT",
        i === segments.length - 1 && i > 0
          ? `${JSON.stringify(short(id))} ends with '/'`
          : `${JSON.stringify(short(id))} has an empty path segment`,
      );
    if (s === "." || s === "..")
      return fail(
        "E_RT_PKI_ID_DOT_SEGMENT",
        `${JSON.stringify(short(id))} has a ${JSON.stringify(s)} path segment`,
      );
    if (s.includes("%"))
      return fail(
        "E_RT_PKI_ID_PERCENT_ENCODED",
        `path segment ${JSON.stringify(short(s))} is percent-encoded; SPIFFE IDs forbid '%'`,
      );
    if (!SEGMENT_CHAR.test(s))
      return fail(
        "E_RT_PKI_ID_PATH_CHARS",
        `path segment ${JSON.stringify(short(s))} has a character outside [A-Za-z0-9._-]`,
      );
  }
  return { ok: true, id, trustDomain: authority, path: tail, segments };
}

/** The workload ID meshgate gives a service: `spiffe://<td>/ns/<namespace>/sa/<service-account>`. */
export function workloadSpiffeId(trustDomain: string, namespace: string, serviceAccount: string): string {
  return `${SCHEME}${trustDomain}/ns/${namespace}/sa/${serviceAccount}`;
}

/** The trust domain ID (`spiffe://<td>`) that meshgate puts in its CA certificates. */
export function trustDomainId(trustDomain: string): string {
  return `${SCHEME}${trustDomain}`;
}

function firstOf(s: string, chars: string): number {
  for (let i = 0; i < s.length; i++) if (chars.includes(s[i]!)) return i;
  return s.length;
}

/** IDs in messages are cut so that a 100 kB URI SAN does not become a 100 kB log line. */
function short(s: string): string {
  return s.length > 120 ? `${s.slice(0, 117)}...` : s;
}
