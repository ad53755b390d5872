/**
 * Name resolution for connections to destinations outside the mesh (egress): the system resolver's
 * answers, minus the addresses a declared DNS name must never lead to — loopback (127.0.0.0/8, ::1),
 * link-local (169.254.0.0/16, where cloud metadata services answer, and fe80::/10), and the unspecified
 * addresses (0.0.0.0/8, ::), IPv4-mapped forms included. A name that resolves only to such addresses
 * fails the connection with `E_RT_EGRESS_ADDRESS_REFUSED` before any packet is sent, so a declared name
 * whose DNS is taken over (or rebinds) cannot turn the sidecar against the pod it serves or the node's
 * metadata endpoint. `localhost` and names under `.localhost` (RFC 6761: loopback by definition) resolve
 * as usual; an external declared by IP address is connected without a lookup, so an operator who means
 * 127.0.0.1 says so.
 */
import dns, { type LookupAddress, type LookupAllOptions, type LookupOneOptions } from "node:dns";
import net from "node:net";

/**
 * IPv6 answers refused beyond loopback, link-local and unspecified: AWS's instance metadata endpoint over
 * IPv6 (fd00:ec2::254, Nitro instances with IPv6 metadata on — what 169.254.169.254 is over IPv4), and the
 * NAT64 forms (64:ff9b::/96, RFC 6052) of the refused IPv4 ranges, which a DNS64 resolver hands out for them.
 */
const REFUSED_V6 = new net.BlockList();
REFUSED_V6.addAddress("fd00:ec2::254", "ipv6");
REFUSED_V6.addSubnet("64:ff9b::7f00:0", 104, "ipv6"); // 127.0.0.0/8
REFUSED_V6.addSubnet("64:ff9b::", 104, "ipv6"); // 0.0.0.0/8
REFUSED_V6.addSubnet("64:ff9b::a9fe:0", 112, "ipv6"); // 169.254.0.0/16

/**
 * Whether a resolved address is one egress refuses (loopback, link-local, unspecified; the IPv6 metadata
 * endpoint and NAT64 forms of those).
 */
export function refusedEgressAddress(address: string): boolean {
  const family = net.isIP(address);
  if (family === 4) return refusedIPv4(address);
  if (family !== 6) return false;
  const a = address.toLowerCase();
  if (a === "::" || a === "::1") return true;
  // IPv4-mapped (::ffff:a.b.c.d) answers are the IPv4 address.
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/.exec(a);
  if (mapped) return refusedIPv4(mapped[1]!);
  // fe80::/10: the first 10 bits 1111111010.
  const first = Number.parseInt(a.split(":")[0] || "0", 16);
  return (first & 0xffc0) === 0xfe80 || REFUSED_V6.check(a, "ipv6");
}

function refusedIPv4(address: string): boolean {
  const [a, b] = address.split(".").map(Number) as [number, number];
  return a === 127 || a === 0 || (a === 169 && b === 254);
}

const isLocalhost = (hostname: string) => {
  const h = hostname.toLowerCase().replace(/\.$/, "");
  return h === "localhost" || h.endsWith(".localhost");
};

type LookupCallback = (
  err: NodeJS.ErrnoException | null,
  address: string | LookupAddress[],
  family?: number,
) => void;

const refused = (hostname: string, addresses: string[]) =>
  Object.assign(
    new Error(
      `${hostname} resolved only to ${addresses.join(", ")}: loopback, link-local and unspecified addresses are not reachable by name outside the mesh (declare the IP address if it is meant)`,
    ),
    { code: "E_RT_EGRESS_ADDRESS_REFUSED" },
  );

/** Answers every address of a name (dns.lookup with `all: true`). */
export type ResolveAll = (
  hostname: string,
  options: LookupAllOptions,
  callback: (err: NodeJS.ErrnoException | null, addresses: LookupAddress[]) => void,
) => void;

/**
 * A `lookup` for net.connect / tls.connect that drops the answers egress refuses (see the module),
 * resolving with `resolve` (the system's resolver by default).
 */
export function createEgressLookup(resolve: ResolveAll = dns.lookup): net.LookupFunction {
  return ((hostname: string, options: LookupOneOptions | LookupAllOptions, callback: LookupCallback) => {
    resolve(hostname, { ...options, all: true }, (err, answers) => {
      if (err) return callback(err, "", 0);
      const kept = isLocalhost(hostname) ? answers : answers.filter((x) => !refusedEgressAddress(x.address));
      if (kept.length === 0)
        return callback(
          refused(
            hostname,
            answers.map((x) => x.address),
          ),
          "",
          0,
        );
      if ((options as LookupAllOptions).all) return callback(null, kept);
      callback(null, kept[0]!.address, kept[0]!.family);
    });
  }) as net.LookupFunction;
}

/** createEgressLookup() with the system's resolver. */
export const egressLookup: net.LookupFunction = createEgressLookup();
