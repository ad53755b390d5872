/**
 * External destinations by the host and port a request or a CONNECT names — pure, shared by the sidecar
 * (CONNECT tunnels, plain-HTTP egress) and the policy checks, so `meshgate explain` answers with the
 * matching the proxy runs.
 *
 * An external's host is one DNS name or IP address, matched exactly, or a wildcard `*.<name>`: every
 * DNS name below <name>, one label deep or more (`*.s3.amazonaws.com` covers `b.s3.amazonaws.com` and
 * `x.b.s3.amazonaws.com`), never <name> itself — the Gateway API's hostname rules, and Istio's for a
 * ServiceEntry host. An address is never covered by a wildcard. Precedence: an exact host wins over any
 * wildcard; of two wildcards the longer name wins (the more specific); then the first declared.
 */

/** Is this external host a wildcard (`*.example.com`)? */
export const isWildcardHost = (host: string): boolean => host.startsWith("*.");

/**
 * Does a wildcard (`*.example.com`) cover a canonical host (lower case, no trailing dot)? Only names
 * strictly below its suffix: at least one whole label in front of it. False for a host that is no wildcard.
 */
export function wildcardCovers(wildcard: string, host: string): boolean {
  if (!isWildcardHost(wildcard)) return false;
  const suffix = wildcard.slice(1); // ".example.com"
  return host.length > suffix.length && host.endsWith(suffix) && !host.includes(":");
}

export interface ExternalHostPort {
  /** A canonical host (DNS name in lower case, IPv4, IPv6 without brackets) or a wildcard `*.<name>`. */
  readonly host: string;
  readonly port: number;
}

/** Finds the entry a host and port reach: compiled once per config, no allocation per lookup. */
export interface ExternalMatcher<T extends ExternalHostPort> {
  /** The entry for a canonical host and port, by the precedence above; undefined when none. */
  match(host: string, port: number): T | undefined;
  /** Are there wildcard entries (a matched host may then differ from the entry's)? */
  readonly wildcards: boolean;
}

const exactKey = (host: string, port: number) => `${host}\u0000${port}`;

/**
 * Compiles entries (in precedence order for equal matches: the first of two entries with the same host
 * and port wins).
 */
export function compileExternalMatcher<T extends ExternalHostPort>(
  entries: readonly T[],
): ExternalMatcher<T> {
  const exact = new Map<string, T>();
  const wild: { suffix: string; port: number; entry: T }[] = [];
  for (const e of entries) {
    if (isWildcardHost(e.host)) {
      wild.push({ suffix: e.host.slice(1), port: e.port, entry: e });
    } else {
      const k = exactKey(e.host, e.port);
      if (!exact.has(k)) exact.set(k, e);
    }
  }
  // Longer suffixes first; Array.prototype.sort is stable, so declaration order breaks ties.
  wild.sort((a, b) => b.suffix.length - a.suffix.length);
  return {
    wildcards: wild.length > 0,
    match(host, port) {
      const e = exact.get(exactKey(host, port));
      if (e !== undefined || wild.length === 0 || host.includes(":")) return e;
      for (let i = 0; i < wild.length; i++) {
        const w = wild[i]!;
        if (w.port === port && host.length > w.suffix.length && host.endsWith(w.suffix)) return w.entry;
      }
      return undefined;
    },
  };
}
