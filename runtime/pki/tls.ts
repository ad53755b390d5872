/**
 * The verifier at a TLS endpoint. Node's own checks do not know SPIFFE: `checkServerIdentity` matches DNS
 * names and IPs and ignores URI SANs, and `rejectUnauthorized` checks the chain against the whole `ca`
 * list, whatever the trust domain. These helpers take the peer's raw DER chain from the socket and run
 * the SVID verifier on it.
 */
import type { PeerCertificate, DetailedPeerCertificate, TLSSocket } from "node:tls";
import type { PeerExpectation, SvidVerdict, SvidVerifier, VerifyOptions } from "./verify.ts";
import type { PkiErrorCode } from "./errors.ts";

/**
 * The DER chain of a TLS peer, leaf first ([] when it presented none), from `getPeerCertificate(true)`.
 * Not from `getPeerX509Certificate()`: in Node 24 that call removes a certificate from OpenSSL's peer
 * chain each time it runs (a second call on a client returns undefined), and Node's own server calls it
 * before `secureConnection` when OpenSSL verified the chain — so a server sees the client's leaf alone
 * (nodejs/node#65579). Give the server's verifier the trust domain's intermediates for that case.
 */
export function peerChain(socket: TLSSocket): Buffer[] {
  return chainFromPeerCertificate(socket.getPeerCertificate(true));
}

/**
 * The DER chain of a `getPeerCertificate(true)` object (what `checkServerIdentity` receives), leaf first.
 * The object of a self-signed root points at itself; the walk stops there.
 */
export function chainFromPeerCertificate(
  cert: PeerCertificate | DetailedPeerCertificate | undefined,
): Buffer[] {
  const out: Buffer[] = [];
  const seen = new Set<object>();
  let c: PeerCertificate | DetailedPeerCertificate | undefined = cert;
  while (c && c.raw && !seen.has(c) && out.length <= 16) {
    seen.add(c);
    out.push(c.raw);
    c = "issuerCertificate" in c ? c.issuerCertificate : undefined;
  }
  return out;
}

/** Verifies the peer of an established TLS connection (e.g. in a server's `secureConnection` handler). */
export function verifyTlsPeer(
  socket: TLSSocket,
  verifier: SvidVerifier,
  options?: VerifyOptions,
): SvidVerdict {
  return verifier.verify(peerChain(socket), options);
}

/** The error `checkServerIdentity` returns; Node copies `code` into `socket.authorizationError`. */
export class SvidVerificationError extends Error {
  readonly code: PkiErrorCode;
  readonly reason: string;
  constructor(code: PkiErrorCode, reason: string) {
    super(`peer SVID refused: ${reason} [${code}]`);
    this.name = "SvidVerificationError";
    this.code = code;
    this.reason = reason;
  }
}

/**
 * A `checkServerIdentity` for `tls.connect`/`https.request` that ignores the host name and accepts the
 * server only when its SVID verifies and its SPIFFE ID is `expect`. Node calls it only after OpenSSL's
 * chain check passed, so give the connection `ca: bundle.toPem()` as well.
 */
export function spiffeServerIdentity(
  verifier: SvidVerifier,
  expect: PeerExpectation,
  now?: () => number,
): (hostname: string, cert: PeerCertificate) => Error | undefined {
  return (_hostname, cert) => {
    const v = verifier.verify(chainFromPeerCertificate(cert), { expect, ...(now ? { now: now() } : {}) });
    return v.ok ? undefined : new SvidVerificationError(v.code, v.reason);
  };
}
