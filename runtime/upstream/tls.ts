/**
 * mTLS origination for upstream pools: the `connect` function H1Pool calls for clusters with
 * `tls.mode: "mtls"` (PoolCache's `mtls` option). Each new connection takes the identity serving at that
 * moment — after a renewal, new connections present the new SVID while existing ones finish — and
 * accepts the server only when its chain verifies against the bundle and its SPIFFE ID is the cluster's
 * `serverIdentity` (Node's own hostname check ignores URI SANs, so it is replaced).
 */
import net from "node:net";
import tls from "node:tls";
import type { LoadedIdentity } from "../pki/identity.ts";
import { chainFromPeerCertificate, SvidVerificationError } from "../pki/tls.ts";

/** Where the current identity comes from (an IdentitySource). */
export interface IdentityProvider {
  current(): LoadedIdentity | null;
  /** A valid, unexpired identity is loaded. */
  ready(): boolean;
}

/** A socket that fails at once (no identity): H1Pool sees a connect failure that names the cause. */
function failedSocket(message: string): net.Socket {
  const socket = new net.Socket();
  process.nextTick(() =>
    socket.destroy(Object.assign(new Error(message), { code: "E_RT_IDENTITY_UNAVAILABLE" })),
  );
  return socket;
}

/** The application protocol negotiated by ALPN on an mTLS connection. */
export type MtlsProtocol = "http1" | "http2";

/** Opens mTLS connections to a server that must prove `serverIdentity`, speaking `protocol`. */
export type MtlsConnect = (
  serverIdentity: string,
  protocol?: MtlsProtocol,
) => (host: string, port: number) => net.Socket;

/**
 * How long an idle mTLS HTTP/1.1 connection to a mesh member is kept for the next request (shortened by
 * the server's `Keep-Alive: timeout`, which the sidecar's inbound listener sets above it). A full mTLS
 * handshake costs ~2 ms of CPU on each side in Node (OpenSSL 3, ECDSA P-256, both chains verified;
 * measured), so a caller that calls less often than the plain pools' 4 s would pay it on every request,
 * and a burst after a pause would open a connection per concurrent request at once. Envoy keeps idle
 * upstream connections for an hour, nginx's upstream keepalive 60 s.
 */
export const MESH_IDLE_MS = 60_000;

const ALPN_HTTP1 = ["http/1.1"];
const ALPN_HTTP2 = ["h2"];

/**
 * The PoolCache `mtls` factory: for a server identity, a connect function opening TLS 1.3 connections
 * with the provider's current SVID, offering ALPN `http/1.1` (the default) or `h2` (HTTP/2 clusters,
 * whose pool needs the server to select h2).
 */
export function mtlsConnector(identity: IdentityProvider): MtlsConnect {
  return (serverIdentity, protocol = "http1") =>
    (host, port) => {
      const id = identity.ready() ? identity.current() : null;
      if (id === null) return failedSocket("no valid mesh identity is loaded (mTLS needs one)");
      const verifier = id.verifier;
      return tls.connect({
        host,
        port,
        secureContext: id.clientContext,
        minVersion: "TLSv1.3",
        ALPNProtocols: protocol === "http2" ? ALPN_HTTP2 : ALPN_HTTP1,
        // Called by Node only after OpenSSL verified the chain against the bundle (the context's CA).
        checkServerIdentity: (_hostname, cert) => {
          const v = verifier.verify(chainFromPeerCertificate(cert), { expect: serverIdentity });
          return v.ok ? undefined : new SvidVerificationError(v.code, v.reason);
        },
      });
    };
}
