/**
 * External destinations by the host and port a request or a CONNECT names — pure, shared by the sidecar
 * (CONNECT tunnels, plain-HTTP egress) and the policy checks, so `meshgate explain` answers with the
 * matching the proxy runs.
 *
 * An external's host is one DNS name or IP address, matched exactly, or a wildcard `*.<name>`: every
 * DNS name below <name>, one label deep or more (`*.s3.amazonaws.com` covers `b.s3.amazonaws.com` and
 * `x.b.s3.amazonaws.com`), never <name> itself — the Gateway API's hostname rules, and Istio's for a
 * ServiceEntry host. An address is never covered by a wildcard. A host may also be a CIDR range
 * (`10.20.0.0/16`, `2001:db8::/48`): every address in it (an IPv4 range also holds its IPv4-mapped IPv6
 * forms), never a name. Precedence: an exact host wins over any pattern; of two wildcards the longer name
 * wins, of two ranges the longer prefix (the more specific); then the first declared.
 */
import { canonicalHost } from "./canonical.ts";
import { parseCidr, parseIpInto, rangeHas, type IpRange } from "./authorize.ts";

/** Is this external host a wildcard (`*.example.com`)? */
export const isWildcardHost = (host: string): boolean => host.startsWith("*.");

/** Is this external host a CIDR range (`10.20.0.0/16`)? */
export const isCidrHost = (host: string): boolean => host.includes("/");

/**
 * Does this external host stand for many destinations (a wildcard or a range), so that a connection goes
 * to the name or address the app asked for rather than to the host itself?
 */
export const isPatternHost = (host: string): boolean => isWildcardHost(host) || isCidrHost(host);

/** Does an external host — exact, wildcard or range — reach a canonical host (or cover a narrower pattern)? */
export function hostCovers(pattern: string, host: string): boolean {
  if (pattern === host) return true;
  if (isWildcardHost(pattern)) return wildcardCovers(pattern, isWildcardHost(host) ? host.slice(2) : host);
  if (!isCidrHost(pattern)) return false;
  const r = parseCidr(pattern);
  if (r === null) return false;
  if (isCidrHost(host)) {
    const inner = parseCidr(host);
    return inner !== null && inner.bits >= r.bits && rangeHas(r, inner.words);
  }
  const w: [number, number, number, number] = [0, 0, 0, 0];
  return parseIpInto(host, w) && rangeHas(r, w);
}

/** Loopback, link-local (cloud metadata) and unspecified addresses: no range may hold them. */
// The IPv6 instance-metadata endpoint of AWS (fd00:ec2::254) and the NAT64 forms (64:ff9b::/96) of the
// refused IPv4 ranges are what runtime/net/lookup.ts refuses too.
const REFUSED_RANGES = [
  "0.0.0.0/8",
  "127.0.0.0/8",
  "169.254.0.0/16",
  "::/128",
  "::1/128",
  "fe80::/10",
  "fd00:ec2::254/128",
  "64:ff9b::/104",
  "64:ff9b::7f00:0/104",
  "64:ff9b::a9fe:0/112",
].map((t) => parseCidr(t)!);

/**
 * Why a string is not an external's CIDR range — canonical text (`10.20.0.0/16`, `2001:db8::/48`: the
 * first address of the range, IPv6 in its canonical form), holding no loopback, link-local or unspecified
 * address — or null.
 */
export function cidrProblem(text: string): string | null {
  const slash = text.indexOf("/");
  const addr = text.slice(0, slash);
  const r = parseCidr(text);
  if (r === null || addr.includes("%")) return "is not a CIDR range (such as 10.20.0.0/16 or 2001:db8::/48)";
  const canonical = addr.includes(":") ? canonicalHost(`[${addr}]`)?.slice(1, -1) : addr;
  const prefix = text.slice(slash + 1);
  if (canonical !== addr) return `is not written canonically (${canonical}/${prefix})`;
  const first = parseCidr(addr)!;
  if (first.words.some((w, i) => w !== r.words[i]))
    return `has address bits set past its /${prefix} prefix (write the range's first address)`;
  const overlaps = (a: IpRange, b: IpRange) => rangeHas(a, b.words) || rangeHas(b, a.words);
  const refused = REFUSED_RANGES.find((x) => overlaps(x, r));
  if (refused !== undefined)
    return `holds loopback, link-local (cloud metadata) or unspecified addresses (${refused.text})`;
  return null;
}

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
}

const exactKey = (host: string, port: number) => `${host}\u0000${port}`;

/**
 * An entry's host as requests are compared with it: lower case, no trailing dot, IPv6 in its canonical
 * form without brackets (what canonicalHost makes of a request's Host, and the CONNECT parser of its
 * target) — so a config written `API.Partner.example` or `2001:DB8:0::1` matches plain HTTP and CONNECT
 * alike. A host that is none of those stays as written (and matches nothing a request can name).
 */
function entryHost(host: string): string {
  const c = host.includes(":") ? canonicalHost(`[${host}]`)?.slice(1, -1) : canonicalHost(host);
  return c ?? host;
}

/**
 * Compiles entries (in precedence order for equal matches: the first of two entries with the same host
 * and port wins).
 */
export function compileExternalMatcher<T extends ExternalHostPort>(
  entries: readonly T[],
): ExternalMatcher<T> {
  const exact = new Map<string, T>();
  const wild: { suffix: string; port: number; entry: T }[] = [];
  const ranges: { range: IpRange; port: number; entry: T }[] = [];
  for (const e of entries) {
    if (isWildcardHost(e.host)) {
      wild.push({ suffix: e.host.slice(1), port: e.port, entry: e });
    } else if (isCidrHost(e.host)) {
      const range = parseCidr(e.host);
      if (range !== null) ranges.push({ range, port: e.port, entry: e }); // the spec refuses malformed ones
    } else {
      const k = exactKey(entryHost(e.host), e.port);
      if (!exact.has(k)) exact.set(k, e);
    }
  }
  // Longer suffixes and prefixes first; Array.prototype.sort is stable, so declaration order breaks ties.
  wild.sort((a, b) => b.suffix.length - a.suffix.length);
  ranges.sort((a, b) => b.range.bits - a.range.bits);
  const words: [number, number, number, number] = [0, 0, 0, 0];
  return {
    match(host, port) {
      const e = exact.get(exactKey(host, port));
      if (e !== undefined) return e;
      if (ranges.length > 0 && parseIpInto(host, words)) {
        for (let i = 0; i < ranges.length; i++) {
          const r = ranges[i]!;
          if (r.port === port && rangeHas(r.range, words)) return r.entry;
        }
        return undefined;
      }
      if (wild.length === 0 || host.includes(":")) return undefined;
      for (let i = 0; i < wild.length; i++) {
        const w = wild[i]!;
        if (w.port === port && host.length > w.suffix.length && host.endsWith(w.suffix)) return w.entry;
      }
      return undefined;
    },
  };
}
