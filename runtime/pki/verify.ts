/**
 * The X.509-SVID verifier. It reads the peer's DER (never Node's `subjectaltname` string: Node's TLS
 * hostname check ignores URI SANs) and enforces the X.509-SVID rules of the SPIFFE standards:
 *
 * - leaf: not a CA; exactly one URI SAN, a valid SPIFFE ID with a non-root path; critical key usage with
 *   digitalSignature and without keyCertSign/cRLSign; EKU, when present, with serverAuth and clientAuth;
 *   no critical extension it does not understand;
 * - chain: built from the presented intermediates up to a root of the bundle **of the SAN's trust
 *   domain**, every link's signature verified (OpenSSL, through node:crypto), every issuer a CA with
 *   keyCertSign, pathLenConstraints honoured, and every certificate valid at the given time;
 * - optionally, the SPIFFE ID is the one (or one of those) the caller expects.
 *
 * It returns a value, never throws for a bad peer, and is synchronous (usable from `checkServerIdentity`).
 * Everything but the clock and the expected ID depends only on the chain's bytes, so a verdict is cached
 * by those bytes: the second handshake with the same certificate costs a map lookup.
 */
import { isCa, KeyUsageBits, OID, parseCertificate, type ParsedCertificate } from "./cert.ts";
import { PkiError, type PkiErrorCode } from "./errors.ts";
import { parseSpiffeId, type SpiffeId } from "./spiffe.ts";
import type { TrustBundle } from "./bundle.ts";

/** Most certificates a peer may present (leaf + intermediates); meshgate chains have two. */
export const MAX_PRESENTED_CERTIFICATES = 8;
/** Longest path from leaf to root, both included. */
export const MAX_PATH_LENGTH = 5;
/** Signature checks one chain may cost while searching for a path (bounds a hostile chain's cost). */
const SIGNATURE_BUDGET = 16;
/** Paths kept per chain: more than one only when a re-issued CA shares name and key with another. */
const MAX_PATHS = 4;

/** A verified peer. `notAfter` is the leaf's; `chainNotAfter` the earliest notAfter of the whole path. */
export interface SvidSuccess {
  ok: true;
  spiffeId: string;
  trustDomain: string;
  path: string;
  notBefore: number;
  notAfter: number;
  chainNotAfter: number;
  serial: string;
  fingerprint: string;
  rootFingerprint: string;
}

/** A refused peer: a stable catalog code and a sentence for logs (never key material). */
export interface SvidFailure {
  ok: false;
  code: PkiErrorCode;
  reason: string;
  /** The SPIFFE ID when one was read (e.g. for E_RT_PKI_UNEXPECTED_PEER or E_RT_PKI_EXPIRED). */
  spiffeId?: string;
}

export type SvidVerdict = SvidSuccess | SvidFailure;

/** The identities a caller accepts: one SPIFFE ID, or a set of them. */
export type PeerExpectation = string | ReadonlySet<string>;

export interface VerifyOptions {
  /** Verify as of this time (epoch ms); default now. */
  now?: number;
  /** Refuse a valid SVID whose ID is not this one / not in this set (E_RT_PKI_UNEXPECTED_PEER). */
  expect?: PeerExpectation;
}

const failure = (code: PkiErrorCode, reason: string, spiffeId?: string): SvidFailure =>
  spiffeId === undefined ? { ok: false, code, reason } : { ok: false, code, reason, spiffeId };

/**
 * The leaf rules alone (no chain, no time): what `meshgate pki inspect` reports without a bundle, and the
 * first stage of `SvidVerifier.verify`. Returns the parsed SPIFFE ID or the first rule broken.
 */
export function checkSvidLeaf(leaf: ParsedCertificate): { ok: true; id: SpiffeId } | SvidFailure {
  if (leaf.duplicateExtensions.length > 0)
    return failure(
      "E_RT_PKI_MALFORMED_CERTIFICATE",
      `the leaf repeats extension ${leaf.duplicateExtensions[0]} (RFC 5280 allows each once)`,
    );
  if (leaf.basicConstraints?.ca)
    return failure(
      "E_RT_PKI_LEAF_IS_CA",
      `the peer's certificate ${leaf.subject} is a CA certificate (cA=true); signing certificates are never peers`,
    );
  if (leaf.uris.length === 0)
    return failure("E_RT_PKI_URI_SAN_MISSING", "the leaf has no URI SAN (no SPIFFE ID)");
  if (leaf.uris.length > 1)
    return failure(
      "E_RT_PKI_URI_SAN_MULTIPLE",
      `the leaf has ${leaf.uris.length} URI SANs; an X.509-SVID has one`,
    );
  const id = parseSpiffeId(leaf.uris[0]!);
  if (!id.ok) return failure(id.code, id.reason);
  const spiffeId = id.id;
  if (id.path === "")
    return failure(
      "E_RT_PKI_ID_ROOT_PATH",
      `${spiffeId} names the trust domain itself; a workload SVID needs a path`,
      spiffeId,
    );
  const ku = leaf.keyUsage;
  if (!ku) return failure("E_RT_PKI_KEY_USAGE_MISSING", "the leaf has no key usage extension", spiffeId);
  if (!ku.critical)
    return failure(
      "E_RT_PKI_KEY_USAGE_NOT_CRITICAL",
      "the leaf's key usage extension is not critical",
      spiffeId,
    );
  if ((ku.flags & KeyUsageBits.digitalSignature) === 0)
    return failure(
      "E_RT_PKI_KEY_USAGE_NO_DIGITAL_SIGNATURE",
      "the leaf's key usage lacks digitalSignature",
      spiffeId,
    );
  if ((ku.flags & (KeyUsageBits.keyCertSign | KeyUsageBits.cRLSign)) !== 0)
    return failure(
      "E_RT_PKI_KEY_USAGE_CERT_SIGN",
      `the leaf's key usage has ${(ku.flags & KeyUsageBits.keyCertSign) !== 0 ? "keyCertSign" : "cRLSign"}; a leaf must not sign certificates`,
      spiffeId,
    );
  const eku = leaf.extKeyUsage;
  if (eku) {
    const missing = [
      eku.includes(OID.serverAuth) ? null : "serverAuth",
      eku.includes(OID.clientAuth) ? null : "clientAuth",
    ].filter((x) => x !== null);
    if (missing.length > 0)
      return failure(
        "E_RT_PKI_EKU_MISMATCH",
        `the leaf's extended key usage lacks ${missing.join(" and ")} (has ${eku.map(ekuName).join(", ") || "nothing"})`,
        spiffeId,
      );
  }
  if (leaf.unknownCritical.length > 0)
    return failure(
      "E_RT_PKI_CRITICAL_EXTENSION_UNKNOWN",
      `the leaf has critical extension ${leaf.unknownCritical[0]}, which this verifier does not process`,
      spiffeId,
    );
  return { ok: true, id };
}

const EKU_NAMES: Record<string, string> = {
  [OID.serverAuth]: "serverAuth",
  [OID.clientAuth]: "clientAuth",
  "1.3.6.1.5.5.7.3.3": "codeSigning",
  "1.3.6.1.5.5.7.3.4": "emailProtection",
  "1.3.6.1.5.5.7.3.8": "timeStamping",
  "1.3.6.1.5.5.7.3.9": "OCSPSigning",
};
const ekuName = (oid: string) => EKU_NAMES[oid] ?? oid;

/** One certificate of a verified path, as far as time goes. */
interface Window {
  label: string;
  notBefore: number;
  notAfter: number;
}

/** What a chain's bytes decide, cached by those bytes. */
type Structural =
  | SvidFailure
  | {
      ok: true;
      id: SpiffeId;
      leaf: ParsedCertificate;
      /** Each path: windows of leaf, intermediates, root; and the root's fingerprint. */
      paths: { windows: Window[]; root: string; chainNotAfter: number }[];
    };

export interface SvidVerifierOptions {
  /** Chains whose verdict is remembered (FIFO). Default 1024. */
  cacheSize?: number;
  /**
   * Known intermediates, tried after the ones the peer presented (like `openssl verify -untrusted`):
   * never trusted by themselves, they must chain to a bundle root like any presented one. A Node TLS
   * server needs them today: Node 24 drops the client's intermediates before `secureConnection` when
   * OpenSSL verified the chain (nodejs/node#65579), so the server sees the leaf alone.
   */
  intermediates?: readonly ParsedCertificate[];
}

/**
 * Verifies X.509-SVID chains against trust bundles (one per trust domain). Immutable: when bundles
 * change (a root rotation stage), build a new verifier and swap it in; its cache starts empty.
 */
export class SvidVerifier {
  readonly bundles: ReadonlyMap<string, TrustBundle>;
  readonly #cacheSize: number;
  readonly #intermediates: readonly ParsedCertificate[];
  readonly #verdicts = new Map<string, Structural>();
  readonly #certs = new Map<string, ParsedCertificate>();

  constructor(bundles: TrustBundle | Iterable<TrustBundle>, options: SvidVerifierOptions = {}) {
    const map = new Map<string, TrustBundle>();
    for (const b of isBundle(bundles) ? [bundles] : bundles) {
      if (map.has(b.trustDomain))
        throw new PkiError("E_RT_PKI_TRUST_DOMAIN_MISMATCH", `two bundles for trust domain ${b.trustDomain}`);
      map.set(b.trustDomain, b);
    }
    this.bundles = map;
    this.#cacheSize = options.cacheSize ?? 1024;
    this.#intermediates = options.intermediates ?? [];
  }

  /**
   * Verifies a peer's chain: `chain[0]` is the leaf, the rest the intermediates it presented (any order;
   * a copy of a root is ignored, roots come only from the bundle).
   */
  verify(chain: readonly Uint8Array[], options: VerifyOptions = {}): SvidVerdict {
    if (chain.length === 0) return failure("E_RT_PKI_NO_CERTIFICATE", "the peer presented no certificate");
    if (chain.length > MAX_PRESENTED_CERTIFICATES)
      return failure(
        "E_RT_PKI_CHAIN_TOO_LONG",
        `the peer presented ${chain.length} certificates (at most ${MAX_PRESENTED_CERTIFICATES})`,
      );
    const keys = chain.map(bytesKey);
    const key = keys.length === 1 ? keys[0]! : keys.join("");
    let s = this.#verdicts.get(key);
    if (s === undefined) {
      s = this.#structural(chain, keys);
      if (this.#verdicts.size >= this.#cacheSize) this.#verdicts.delete(this.#verdicts.keys().next().value!);
      this.#verdicts.set(key, s);
    }
    return finish(s, options.now ?? Date.now(), options.expect);
  }

  /** Verifies certificates already parsed (by `meshgate pki inspect`); not cached. */
  verifyParsed(chain: readonly ParsedCertificate[], options: VerifyOptions = {}): SvidVerdict {
    if (chain.length === 0) return failure("E_RT_PKI_NO_CERTIFICATE", "no certificate given");
    return finish(this.#structuralParsed(chain), options.now ?? Date.now(), options.expect);
  }

  #structural(chain: readonly Uint8Array[], keys: readonly string[]): Structural {
    const parsed: ParsedCertificate[] = [];
    for (const [i, der] of chain.entries()) {
      let cert = this.#certs.get(keys[i]!);
      if (!cert) {
        try {
          cert = parseCertificate(der);
        } catch (err) {
          return failure(
            "E_RT_PKI_MALFORMED_CERTIFICATE",
            `certificate ${i} of the chain is not valid DER X.509 (${(err as Error).message})`,
          );
        }
        if (this.#certs.size >= this.#cacheSize) this.#certs.delete(this.#certs.keys().next().value!);
        this.#certs.set(keys[i]!, cert);
      }
      parsed.push(cert);
    }
    return this.#structuralParsed(parsed);
  }

  #structuralParsed(chain: readonly ParsedCertificate[]): Structural {
    const leaf = chain[0]!;
    const checked = checkSvidLeaf(leaf);
    if (!checked.ok) return checked;
    const { id } = checked;
    const bundle = this.bundles.get(id.trustDomain);
    if (!bundle)
      return failure(
        "E_RT_PKI_UNKNOWN_TRUST_DOMAIN",
        `no trust bundle for trust domain ${id.trustDomain} (trusted: ${[...this.bundles.keys()].join(", ") || "none"})`,
        id.id,
      );
    const search = new PathSearch(bundle, [...chain.slice(1), ...this.#intermediates]);
    search.extend(leaf, [leaf]);
    if (search.paths.length === 0) {
      const e =
        search.error ?? failure("E_RT_PKI_UNTRUSTED_ISSUER", `no path from ${leaf.subject} to a root`);
      return { ...e, spiffeId: id.id };
    }
    return {
      ok: true,
      id,
      leaf,
      paths: search.paths.map((p) => ({
        windows: p.map((c, i) => ({
          label: i === 0 ? "the leaf" : `${i === p.length - 1 ? "root" : "intermediate"} ${c.subject}`,
          notBefore: c.notBefore,
          notAfter: c.notAfter,
        })),
        root: p[p.length - 1]!.fingerprint,
        chainNotAfter: Math.min(...p.map((c) => c.notAfter)),
      })),
    };
  }
}

/** Depth-first search for paths from the leaf to a root of the bundle, with bounded cost. */
class PathSearch {
  readonly paths: ParsedCertificate[][] = [];
  error: SvidFailure | null = null;
  #budget = SIGNATURE_BUDGET;
  readonly #roots: readonly ParsedCertificate[];
  readonly #pool: readonly ParsedCertificate[];

  constructor(bundle: TrustBundle, presented: readonly ParsedCertificate[]) {
    this.#roots = bundle.roots;
    // A presented copy of a bundle root adds nothing (the root itself is tried first); nor does a repeat.
    const seen = new Set(bundle.roots.map((r) => r.fingerprint));
    this.#pool = presented.filter((c) => !seen.has(c.fingerprint) && seen.add(c.fingerprint));
  }

  #fail(e: SvidFailure): void {
    if (!this.error || this.error.code === "E_RT_PKI_UNTRUSTED_ISSUER") this.error = e;
  }

  extend(child: ParsedCertificate, path: ParsedCertificate[]): void {
    if (path.length >= MAX_PATH_LENGTH) {
      this.#fail(
        failure("E_RT_PKI_PATH_LENGTH", `no root within ${MAX_PATH_LENGTH} certificates of the leaf`),
      );
      return;
    }
    let found = false;
    for (const [anchor, candidates] of [
      [true, this.#roots],
      [false, this.#pool],
    ] as const) {
      for (const cand of candidates) {
        if (this.paths.length >= MAX_PATHS) return;
        if (cand.subjectName !== child.issuerName) continue;
        if (child.authorityKeyId && cand.subjectKeyId && child.authorityKeyId !== cand.subjectKeyId) continue;
        if (path.some((c) => c.fingerprint === cand.fingerprint)) continue;
        found = true;
        if (this.#budget-- <= 0) {
          this.#fail(failure("E_RT_PKI_UNTRUSTED_ISSUER", "the chain needs too many signature checks"));
          return;
        }
        if (!child.native.verify(cand.publicKey)) {
          this.#fail(
            failure(
              "E_RT_PKI_BAD_SIGNATURE",
              `the signature of ${describe(child, path)} does not verify with ${cand.subject}'s key`,
            ),
          );
          continue;
        }
        const problem = issuerProblem(cand, path.length - 1);
        if (problem) {
          this.#fail(problem);
          continue;
        }
        if (anchor) this.paths.push([...path, cand]);
        else this.extend(cand, [...path, cand]);
      }
    }
    if (!found)
      this.#fail(
        failure(
          "E_RT_PKI_UNTRUSTED_ISSUER",
          `no trusted issuer for ${describe(child, path)} (issuer ${child.issuer} is neither a presented intermediate nor a root of the bundle)`,
        ),
      );
  }
}

function describe(c: ParsedCertificate, path: readonly ParsedCertificate[]): string {
  return path.length === 1 ? "the leaf" : `intermediate ${c.subject}`;
}

/** Why `cand` may not sign here (`below` = intermediates between it and the leaf), or null. */
function issuerProblem(cand: ParsedCertificate, below: number): SvidFailure | null {
  if (!isCa(cand))
    return failure(
      "E_RT_PKI_ISSUER_NOT_CA",
      `issuer ${cand.subject} is not a CA (basicConstraints cA is not true)`,
    );
  // Absent key usage is no licence to sign (RFC 5280 §4.2.1.3: a CA MUST include it; openssl -x509_strict
  // refuses a CA without it): the verifier enforces what it documents, keyCertSign present.
  if (!cand.keyUsage || (cand.keyUsage.flags & KeyUsageBits.keyCertSign) === 0)
    return failure("E_RT_PKI_ISSUER_NOT_CA", `issuer ${cand.subject} lacks the keyCertSign key usage`);
  if (cand.duplicateExtensions.length > 0)
    return failure("E_RT_PKI_MALFORMED_CERTIFICATE", `issuer ${cand.subject} repeats an extension`);
  if (cand.unknownCritical.length > 0)
    return failure(
      "E_RT_PKI_CRITICAL_EXTENSION_UNKNOWN",
      `issuer ${cand.subject} has critical extension ${cand.unknownCritical[0]}, which this verifier does not process`,
    );
  const max = cand.basicConstraints?.pathLength;
  if (max !== undefined && below > max)
    return failure(
      "E_RT_PKI_PATH_LENGTH",
      `issuer ${cand.subject} allows ${max} intermediate(s) below it, the chain has ${below}`,
    );
  return null;
}

function finish(s: Structural, now: number, expect: PeerExpectation | undefined): SvidVerdict {
  if (!s.ok) return s;
  const id = s.id.id;
  let timeError: SvidFailure | null = null;
  let good: (typeof s.paths)[number] | null = null;
  for (const p of s.paths) {
    const bad = p.windows.find((w) => now < w.notBefore || now > w.notAfter);
    if (!bad) {
      good = p;
      break;
    }
    timeError ??=
      now < bad.notBefore
        ? failure(
            "E_RT_PKI_NOT_YET_VALID",
            `${bad.label} is not valid before ${new Date(bad.notBefore).toISOString()}`,
            id,
          )
        : failure("E_RT_PKI_EXPIRED", `${bad.label} expired at ${new Date(bad.notAfter).toISOString()}`, id);
  }
  if (!good) return timeError!;
  if (expect !== undefined && (typeof expect === "string" ? expect !== id : !expect.has(id)))
    return failure(
      "E_RT_PKI_UNEXPECTED_PEER",
      `the peer is ${id}, expected ${typeof expect === "string" ? expect : `one of ${[...expect].join(", ")}`}`,
      id,
    );
  return {
    ok: true,
    spiffeId: id,
    trustDomain: s.id.trustDomain,
    path: s.id.path,
    notBefore: s.leaf.notBefore,
    notAfter: s.leaf.notAfter,
    chainNotAfter: good.chainNotAfter,
    serial: s.leaf.serial,
    fingerprint: s.leaf.fingerprint,
    rootFingerprint: good.root,
  };
}

function bytesKey(der: Uint8Array): string {
  return (Buffer.isBuffer(der) ? der : Buffer.from(der.buffer, der.byteOffset, der.byteLength)).toString(
    "latin1",
  );
}

function isBundle(b: TrustBundle | Iterable<TrustBundle>): b is TrustBundle {
  return !(Symbol.iterator in b);
}
