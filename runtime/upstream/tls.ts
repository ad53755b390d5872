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
import type { ClientCertificateFiles, ClientCertificateStore } from "./client-cert.ts";

/** Where the current identity comes from (an IdentitySource). */
export interface IdentityProvider {
  current(): LoadedIdentity | null;
  /** A valid, unexpired identity is loaded. */
  ready(): boolean;
}

/** A socket that fails at once (no identity): H1Pool sees a connect failure that names the cause. */
function failedSocket(message: string, code = "E_RT_IDENTITY_UNAVAILABLE"): net.Socket {
  const socket = new net.Socket();
  process.nextTick(() => socket.destroy(Object.assign(new Error(message), { code })));
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
 * How long a TLS session is offered for resumption at most: the sidecar's inbound listener accepts its
 * tickets for Node's default 300 s (`sessionTimeout`), and a session is never offered past the earliest
 * notAfter of the server chain it was verified with.
 */
export const SESSION_MAX_AGE_MS = 300_000;
/** Sessions remembered per connector (one per server address, identity and protocol; FIFO). */
const MAX_SESSIONS = 1024;

/** A TLS session of a verified server, for the next connection to the same address. */
interface KeptSession {
  /** The identity the session was made with: a renewed SVID or a new bundle starts a full handshake. */
  readonly identity: LoadedIdentity;
  readonly session: Buffer;
  /** Not offered after this (epoch ms). */
  readonly until: number;
  /** What the server's chain was verified as when the session was made (a resumed connection's trust). */
  readonly trust: ServerTrust;
}

/** What a server's chain was verified as: the earliest notAfter of its path, and the bundle root it ends at. */
interface ServerTrust {
  readonly chainNotAfter: number;
  readonly root: string;
}

/**
 * How much earlier than the server, at the least, a caller stops reusing a connection whose certificates
 * expire: the server closes its side when the caller's chain expires (runtime/sidecar/listeners.ts), and a
 * request written into that close would fail, so the caller's own deadline comes first by this margin.
 */
export const EXPIRY_MARGIN_MS = 1000;

/** The lease of an established mTLS connection (on the socket): why and until when it may be reused. */
interface Lease {
  /** Not reused from then on (epoch ms): the earliest notAfter of both chains, less EXPIRY_MARGIN_MS. */
  readonly until: number;
  /** The bundle root the server's chain ends at. */
  readonly root: string;
  readonly provider: IdentityProvider;
  /** The identity whose bundle was last found to hold `root`. */
  checkedWith: LoadedIdentity;
}
const LEASE = Symbol("meshgate.mtlsLease");
type LeasedSocket = net.Socket & { [LEASE]?: Lease };

/**
 * Whether a pool may send another request on this connection (H1Pool's and H2Pool's `reusable`): always
 * for a plain one; for an mTLS one, only before its lease ends — the earliest notAfter of the server's
 * chain and of the chain this proxy presented, less EXPIRY_MARGIN_MS — and while a valid identity is
 * loaded whose bundle still holds the root the server's chain ended at (after a root rotation drops it,
 * the connection is not reused). A connection is never used past the certificates it was authenticated
 * with, however busy it stays.
 */
export function connectionReusable(socket: net.Socket): boolean {
  const lease = (socket as LeasedSocket)[LEASE];
  if (lease === undefined) return true;
  if (Date.now() >= lease.until) return false;
  const provider = lease.provider;
  const current = provider.ready() ? provider.current() : null;
  if (current === lease.checkedWith) return true;
  if (current === null || !current.bundle.hasRoot(lease.root)) return false;
  lease.checkedWith = current;
  return true;
}

/**
 * The PoolCache `mtls` factory: for a server identity, a connect function opening TLS 1.3 connections
 * with the provider's current SVID, offering ALPN `http/1.1` (the default) or `h2` (HTTP/2 clusters,
 * whose pool needs the server to select h2).
 *
 * **Session resumption.** A new connection to an address offers the TLS session ticket of the last
 * verified connection to that address, for that server identity and protocol, made with the identity
 * serving now: resuming skips both certificate chains and signatures, about half of a full mTLS
 * handshake's CPU on each side (measured: 4.2 → 2.3 ms for both sides in one Node process). Node does
 * not call `checkServerIdentity` for a resumed session; the server proved the identity checked when the
 * session was made (only a server holding the session's keys can resume it), and a session is offered
 * only within SESSION_MAX_AGE_MS and the earliest notAfter of the chain checked then. The server verifies
 * the client's leaf again on every connection, resumed or not (runtime/sidecar/server.ts).
 */
export function mtlsConnector(identity: IdentityProvider): MtlsConnect {
  const sessions = new Map<string, KeptSession>();
  const keep = (key: string, kept: KeptSession) => {
    sessions.delete(key);
    if (sessions.size >= MAX_SESSIONS) sessions.delete(sessions.keys().next().value!);
    sessions.set(key, kept);
  };
  return (serverIdentity, protocol = "http1") =>
    (host, port) => {
      const id = identity.ready() ? identity.current() : null;
      if (id === null) return failedSocket("no valid mesh identity is loaded (mTLS needs one)");
      const verifier = id.verifier;
      const key = `${serverIdentity} ${protocol} ${host} ${port}`;
      const kept = sessions.get(key);
      const offered = kept && kept.identity === id && Date.now() < kept.until ? kept : undefined;
      /** Until when this connection's sessions may be offered: set once the server is verified. */
      let until = 0;
      let trust: ServerTrust | null = null;
      let pending: Buffer | null = null;
      const socket = tls.connect({
        host,
        port,
        secureContext: id.clientContext,
        minVersion: "TLSv1.3",
        ALPNProtocols: protocol === "http2" ? ALPN_HTTP2 : ALPN_HTTP1,
        ...(offered ? { session: offered.session } : {}),
        // Called by Node only after OpenSSL verified the chain against the bundle (the context's CA), and
        // only for a full handshake.
        checkServerIdentity: (_hostname, cert) => {
          const v = verifier.verify(chainFromPeerCertificate(cert), { expect: serverIdentity });
          if (!v.ok) return new SvidVerificationError(v.code, v.reason);
          until = Math.min(Date.now() + SESSION_MAX_AGE_MS, v.chainNotAfter);
          trust = { chainNotAfter: v.chainNotAfter, root: v.rootFingerprint };
          return undefined;
        },
      });
      // "secureConnect" comes only after the server was verified (or resumed a verified session), and
      // before the pool's own listener (registered after this one) sends anything; a ticket may arrive
      // before it and waits for it.
      socket.once("secureConnect", () => {
        if (socket.isSessionReused() && offered) {
          until = offered.until;
          trust = offered.trust;
        }
        if (trust === null) {
          // Unreachable: a full handshake reaches "secureConnect" only through checkServerIdentity.
          socket.destroy(
            new SvidVerificationError("E_RT_PKI_UNEXPECTED_PEER", "the server was not verified"),
          );
          return;
        }
        (socket as LeasedSocket)[LEASE] = {
          until: Math.min(trust.chainNotAfter, id.chainNotAfter) - EXPIRY_MARGIN_MS,
          root: trust.root,
          provider: identity,
          checkedWith: id,
        };
        if (pending && until > Date.now()) keep(key, { identity: id, session: pending, until, trust });
        pending = null;
      });
      socket.on("session", (session: Buffer) => {
        if (trust === null) pending = session;
        else if (until > Date.now()) keep(key, { identity: id, session, until, trust });
      });
      return socket;
    };
}

/** The trust of TLS to a server outside the mesh (a cluster's `tls.mode: "tls"`). */
export interface OriginateTls {
  /** The name the certificate must carry, sent as SNI (not sent when it is an IP address). */
  serverName: string;
  /** PEM certificates trusted instead of the system's roots; null = the system's roots. */
  ca: string | null;
  /** The certificate presented to the server (mutual TLS), loaded in the connector's store; null = none. */
  clientCertificate?: ClientCertificateFiles | null;
}

/**
 * The secure context of each trust (a cluster's `tls` object, kept as long as its config): built once,
 * whether a pool, a WebSocket or a relay asks for a connector.
 */
const contexts = new WeakMap<OriginateTls, tls.SecureContext>();

/**
 * Opens TLS connections to a server outside the mesh (egress with TLS origination): TLS 1.2 or later,
 * the chain verified against `ca` (or Node's root store), the certificate checked for `serverName` by
 * Node's RFC 6125 rules (DNS names and IP addresses in the SAN). One secure context per trust object.
 * A failed verification fails the connection before anything is sent (the pool sees a connect failure).
 * `protocol` is the ALPN offered: HTTP/1.1, h2, or none (null); `lookup` resolves the host (egress:
 * net/lookup.ts). With a `clientCertificate`, each connection presents the pair `clients` serves for its
 * files at that moment (mutual TLS); without one loaded there, the connection fails at once
 * (E_RT_CLIENT_CERT_INVALID) — it is never opened without the certificate.
 */
export function originateConnector(
  trust: OriginateTls,
  protocol: MtlsProtocol | null = "http1",
  lookup?: net.LookupFunction,
  clients?: ClientCertificateStore,
): (host: string, port: number) => net.Socket {
  const files = trust.clientCertificate ?? null;
  let context = contexts.get(trust);
  if (context === undefined && files === null)
    contexts.set(
      trust,
      (context = tls.createSecureContext({
        minVersion: "TLSv1.2",
        ...(trust.ca !== null ? { ca: trust.ca } : {}),
      })),
    );
  const servername = net.isIP(trust.serverName) === 0 ? trust.serverName : undefined;
  return (host, port) => {
    let secureContext = context;
    if (files !== null) {
      // The pair serving now: a rotated certificate is presented from the next connection on.
      const client = clients?.get(files);
      if (client === undefined)
        return failedSocket(
          `no client certificate is loaded from ${files.certFile} (mutual TLS needs one)`,
          "E_RT_CLIENT_CERT_INVALID",
        );
      secureContext = client.context(trust.ca);
    }
    return tls.connect({
      host,
      port,
      secureContext,
      ...(lookup !== undefined ? { lookup } : {}),
      ...(servername !== undefined ? { servername } : {}),
      // null: a byte relay (an external's local port) — the app's protocol is unknown, so no ALPN is
      // offered, and a half-close is the relay's to pass on (the socket does not end itself on the server's).
      ...(protocol !== null
        ? { ALPNProtocols: protocol === "http2" ? ALPN_HTTP2 : ALPN_HTTP1 }
        : { allowHalfOpen: true }),
      checkServerIdentity: (_host, cert) => tls.checkServerIdentity(trust.serverName, cert),
    });
  };
}
