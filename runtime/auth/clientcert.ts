/**
 * Client certificates at the edge (mTLS from outside the mesh).
 *
 * The TLS layer asks every client for a certificate (`requestCert: true`) against the CA files of all
 * client-certificate providers, but does not refuse the handshake (`rejectUnauthorized: false`): routes that
 * do not need a certificate keep working for every client, and a route that needs one answers with a clean
 * 401 (no certificate, or one that did not verify) or 403 (a verified certificate whose subject/SANs the
 * provider does not allow) instead of a TLS alert nobody can read.
 *
 * Per request (the verdict is cached per connection): the peer chain must have verified (OpenSSL, dates
 * included) against the listener's CA bundle, and must belong to this provider. A connection outlives the
 * handshake: once the earliest notAfter of the chain it was verified with has passed, its requests get
 * 401 ("expired since the connection was made"), as a new handshake with that certificate would; and once a
 * reload or a CA file rotated in place removed a CA its handshake was verified against, its chain must anchor
 * in the CAs of now (markHandshakeClientCas). With one
 * provider the bundle is its CA file, so verification is attribution. With several providers sharing a listener, the leaf must be
 * issued (`X509Certificate.checkIssued` + `verify`) by a certificate of this provider's CA file — Node does not
 * expose the intermediates a client sends on the server side, so such a provider's caFile must hold the
 * issuing CA (the intermediate), not only the root.
 *
 * Allowed identities (any entry matching admits; no entries admits every certificate of the CA):
 * - `subjects`: an entry with "=" is a distinguished name in RFC 4514 form ("CN=a, O=Acme"); it matches a
 *   subject with exactly the same attributes (order-insensitive, attribute types case-insensitive, values
 *   exact). An entry without "=" matches the subject's single Common Name exactly.
 * - `sans`: "DNS:name" (case-insensitive, no wildcard expansion), "URI:uri" (exact), "email:addr"
 *   (exact), "IP:addr" (same address, any notation). SANs are read from the DER (never from a text form).
 * The principal: subject = the subject DN, claims = { dn, cn, sans, serialNumber, fingerprint256 }.
 */
import "reflect-metadata";
import * as x509 from "@peculiar/x509";
import { X509Certificate } from "node:crypto";
import { readFileSync } from "node:fs";
import { parseCidr, type Principal } from "../decide/authorize.ts";
import { failure, type AuthFailure, type ClientCertProviderConfig, type TlsPeer } from "./types.ts";

type Pair = readonly [type: string, value: string];

interface SanRule {
  readonly type: "dns" | "url" | "email" | "ip";
  readonly value: string;
}

/** Reads every certificate of a PEM bundle; throws naming the file when it is unreadable or empty. */
export function readCaBundle(file: string, what: string): X509Certificate[] {
  let pem: string;
  try {
    pem = readFileSync(file, "utf8");
  } catch (err) {
    throw new Error(`${what}: cannot read caFile ${file} (${(err as Error).message})`, { cause: err });
  }
  const blocks = pem.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? [];
  if (blocks.length === 0) throw new Error(`${what}: caFile ${file} holds no PEM certificate`);
  return blocks.map((b) => new X509Certificate(b));
}

/**
 * What a TLS listener needs so that client certificates can be checked per route: ask for one, verify it
 * against the union of the providers' CAs, and let the handshake succeed either way (the route decides).
 * Null when no provider is configured (the listener then asks for no certificate).
 */
export function clientCertTlsOptions(
  providers: readonly ClientCertProviderConfig[],
): { requestCert: true; rejectUnauthorized: false; ca: string[] } | null {
  if (providers.length === 0) return null;
  const ca: string[] = [];
  for (const p of providers)
    for (const c of readCaBundle(p.caFile, `clientCerts.${p.name}`)) ca.push(c.toString());
  return { requestCert: true, rejectUnauthorized: false, ca };
}

/**
 * The SHA-256 fingerprints of the client-certificate CAs a TLS handshake was verified against, put on the
 * socket by the listener that chose its context (runtime/gateway/listeners.ts). OpenSSL's verdict
 * (`authorized`) holds under those CAs — a reload, or a CA file rotated in place, may since have removed one.
 */
const HANDSHAKE_CAS = Symbol("meshgate.handshakeClientCas");
type Marked = { [HANDSHAKE_CAS]?: ReadonlySet<string> };

/** Records on a TLS socket, when its context is chosen, the client CAs its handshake verifies against. */
export function markHandshakeClientCas(socket: object, fingerprints: ReadonlySet<string>): void {
  (socket as Marked)[HANDSHAKE_CAS] = fingerprints;
}

/** The fingerprints of PEM certificates (a listener's client CAs), for markHandshakeClientCas. */
export function caFingerprints(pems: readonly string[]): ReadonlySet<string> {
  return new Set(pems.map((p) => new X509Certificate(p).fingerprint256));
}

export class ClientCertVerifier {
  readonly name: string;
  private readonly caFile: string;
  private cas: readonly X509Certificate[];
  private caFingerprints: ReadonlySet<string>;
  private readonly subjects: readonly (Pair[] | string)[];
  private readonly sans: readonly SanRule[];
  private verdicts = new WeakMap<object, Principal | AuthFailure>();
  /** Per handshake CA set (one object per listener context): whether each of its CAs is still this provider's. */
  private held = new WeakMap<ReadonlySet<string>, boolean>();

  /** True when this is the only client-certificate provider: the listener then trusts only its CAs. */
  private readonly soleProvider: boolean;
  private readonly now: () => number;

  constructor(cfg: ClientCertProviderConfig, soleProvider = false, now: () => number = Date.now) {
    this.name = cfg.name;
    this.caFile = cfg.caFile;
    this.soleProvider = soleProvider;
    this.now = now;
    this.cas = readCaBundle(cfg.caFile, `clientCerts.${cfg.name}`);
    this.caFingerprints = new Set(this.cas.map((c) => c.fingerprint256));
    this.subjects = cfg.subjects.map((s, i) => {
      if (!s.includes("=")) return s;
      const pairs = parseDn(s);
      if (!pairs)
        throw new Error(`clientCerts.${cfg.name}.subjects[${i}]: not an RFC 4514 distinguished name`);
      return pairs;
    });
    this.sans = cfg.sans.map((s, i) => {
      const rule = parseSanRule(s);
      if (!rule)
        throw new Error(
          `clientCerts.${cfg.name}.sans[${i}]: write DNS:<name>, URI:<uri>, email:<address> or IP:<address>`,
        );
      return rule;
    });
  }

  /**
   * Reads the CA file again (rotated in place) and returns what makes it current; verdicts are then made
   * again. Throws, naming the file, when it is unreadable — the CAs in use stay.
   */
  prepareReload(): () => void {
    const cas = readCaBundle(this.caFile, `clientCerts.${this.name}`);
    return () => {
      this.cas = cas;
      this.caFingerprints = new Set(cas.map((c) => c.fingerprint256));
      this.verdicts = new WeakMap();
      this.held = new WeakMap();
    };
  }

  /**
   * The principal for the connection's certificate: null when there is no TLS or no certificate, a failure
   * when it did not verify, is not from this provider's CA (401), is not allowed (403), or expired since
   * the handshake (401).
   */
  authenticate(peer: TlsPeer | null): Principal | null | AuthFailure {
    if (!peer) return null;
    let verdict = this.verdicts.get(peer);
    if (verdict === undefined) {
      const leaf = peer.getPeerX509Certificate();
      if (!leaf) return null;
      verdict = this.check(peer, leaf);
      this.verdicts.set(peer, verdict);
    }
    if (!("kind" in verdict) && verdict.expiresAt !== null && this.now() > verdict.expiresAt)
      return failure("clientCert", "client certificate expired since the connection was made");
    return verdict;
  }

  private check(peer: TlsPeer, leaf: X509Certificate): Principal | AuthFailure {
    if (!peer.authorized) {
      const why = peer.authorizationError;
      const code =
        typeof why === "string" ? why : ((why as { code?: string } | null | undefined)?.code ?? "");
      return failure(
        "clientCert",
        `client certificate did not verify${/^[A-Z0-9_]{1,64}$/.test(code) ? ` (${code})` : ""}`,
      );
    }
    if (!this.anchored(leaf, chainOf(peer), peer)) {
      if (!this.soleProvider)
        return failure(
          "clientCert",
          `client certificate is not issued by a CA in the caFile of provider ${this.name} (with several providers, caFile must hold the issuing intermediate)`,
        );
      // The handshake's CAs changed since, and the chain Node exposes does not reach one of now (its CA was
      // removed, or it runs through an intermediate only the client sent): a new connection's handshake,
      // against the CAs of now, decides.
      return {
        ...failure(
          "clientCert",
          `client certificate is not issued by a CA in the caFile of provider ${this.name} (the CAs changed since the connection was made: reconnect)`,
        ),
        reconnect: true,
      };
    }
    const parsed = new x509.X509Certificate(leaf.raw);
    const subject = subjectPairs(parsed);
    const sans = sanList(parsed);
    const cns = subject.filter(([t]) => t === "CN").map(([, v]) => v);
    const allowed =
      (this.subjects.length === 0 && this.sans.length === 0) ||
      this.subjects.some((rule) =>
        typeof rule === "string" ? cns.length === 1 && cns[0] === rule : sameDn(rule, subject),
      ) ||
      this.sans.some((rule) => sans.some((s) => sanMatches(rule, s)));
    if (!allowed)
      return failure("clientCert", `client certificate subject is not allowed by provider ${this.name}`, 403);
    const dn = parsed.subject;
    // The leaf, and the issuers OpenSSL completed the chain with (the CA file's certificates).
    let expiresAt = leaf.validToDate.getTime();
    for (const c of chainOf(peer)) expiresAt = Math.min(expiresAt, c.validToDate.getTime());
    return Object.freeze({
      mechanism: "clientCert" as const,
      provider: this.name,
      subject: dn,
      consumer: null,
      groups: Object.freeze([]) as readonly string[],
      scopes: Object.freeze([]) as readonly string[],
      claims: Object.freeze({
        dn,
        cn: cns[0] ?? null,
        sans: Object.freeze(sans.map((s) => `${SAN_PREFIX[s.type]}:${s.value}`)),
        serialNumber: leaf.serialNumber,
        fingerprint256: leaf.fingerprint256,
      }),
      expiresAt,
    });
  }

  /**
   * The certificate chains up to this provider's CA file: the leaf (or a certificate of the chain Node exposes)
   * is one of its certificates or is issued and signed by one. When the listener trusts no other provider's CA,
   * the TLS layer's own verification already anchored it here (this covers chains through intermediates the
   * client sent, which Node does not expose on the server side) — while every CA of that handshake is still
   * this provider's: once one was removed, the chain must anchor in the CAs of now.
   */
  private anchored(leaf: X509Certificate, chain: readonly X509Certificate[], peer: TlsPeer): boolean {
    if (this.soleProvider && this.handshakeTrustHolds(peer)) return true;
    const certs = chain.length && chain[0]!.fingerprint256 === leaf.fingerprint256 ? chain : [leaf, ...chain];
    for (let i = 0; i < certs.length; i++) {
      const c = certs[i]!;
      if (this.caFingerprints.has(c.fingerprint256)) return true;
      for (const ca of this.cas) if (c.checkIssued(ca) && c.verify(ca.publicKey)) return true;
      const next = certs[i + 1];
      if (!next || !c.checkIssued(next) || !c.verify(next.publicKey)) return false;
    }
    return false;
  }

  /**
   * Whether the CAs the peer's handshake was verified against are all still this provider's. A socket no
   * gateway listener marked (a server without reloads, as in this module's tests) is taken as verified
   * against them.
   */
  private handshakeTrustHolds(peer: TlsPeer): boolean {
    const at = (peer as Marked)[HANDSHAKE_CAS];
    if (at === undefined) return true;
    let held = this.held.get(at);
    if (held === undefined) {
      held = true;
      for (const fp of at)
        if (!this.caFingerprints.has(fp)) {
          held = false;
          break;
        }
      this.held.set(at, held);
    }
    return held;
  }
}

/** The peer chain as sent and completed by OpenSSL: leaf first, up to the self-signed root. */
function chainOf(peer: TlsPeer): X509Certificate[] {
  const out: X509Certificate[] = [];
  const seen = new Set<unknown>();
  let c = peer.getPeerCertificate(true) as { raw?: Buffer; issuerCertificate?: unknown } | null;
  while (c && c.raw && !seen.has(c) && out.length < 10) {
    seen.add(c);
    out.push(new X509Certificate(c.raw));
    c = c.issuerCertificate as typeof c;
  }
  return out;
}

const SAN_PREFIX: Readonly<Record<SanRule["type"], string>> = {
  dns: "DNS",
  url: "URI",
  email: "email",
  ip: "IP",
};

function parseSanRule(s: string): SanRule | null {
  const colon = s.indexOf(":");
  if (colon <= 0) return null;
  const prefix = s.slice(0, colon).toLowerCase();
  const value = s.slice(colon + 1);
  if (!value) return null;
  const types: Readonly<Record<string, SanRule["type"]>> = {
    dns: "dns",
    uri: "url",
    email: "email",
    ip: "ip",
  };
  const type = types[prefix];
  if (!type) return null;
  if (type === "ip" && !parseCidr(value)) return null;
  return { type, value: type === "dns" ? value.toLowerCase() : value };
}

function sanMatches(rule: SanRule, san: SanRule): boolean {
  if (rule.type !== san.type) return false;
  if (rule.type === "dns") return rule.value === san.value.toLowerCase();
  if (rule.type === "ip") {
    const a = parseCidr(rule.value);
    const b = parseCidr(san.value);
    return !!a && !!b && a.bits === b.bits && a.words.every((w, i) => w === b.words[i]);
  }
  return rule.value === san.value;
}

/** The certificate's SANs of the four supported kinds, from the DER. */
function sanList(cert: x509.X509Certificate): SanRule[] {
  const ext = cert.getExtension(x509.SubjectAlternativeNameExtension);
  if (!ext) return [];
  const out: SanRule[] = [];
  for (const n of ext.names.items)
    if (n.type === "dns" || n.type === "url" || n.type === "email" || n.type === "ip")
      out.push({ type: n.type, value: n.value });
  return out;
}

function subjectPairs(cert: x509.X509Certificate): Pair[] {
  const out: Pair[] = [];
  for (const rdn of cert.subjectName.toJSON())
    for (const [type, values] of Object.entries(rdn))
      for (const v of values) out.push([type.toUpperCase(), v]);
  return out;
}

function sameDn(rule: readonly Pair[], subject: readonly Pair[]): boolean {
  if (rule.length !== subject.length) return false;
  const key = (p: Pair) => `${p[0]}=${p[1]}`;
  const a = rule.map(key).sort();
  const b = subject.map(key).sort();
  return a.every((x, i) => x === b[i]);
}

/**
 * Parses an RFC 4514 DN string ("CN=a, O=Acme\, Inc+OU=x") into (TYPE, value) pairs: `,` and `+` separate
 * attributes, `\` escapes a special character or two hex digits. Types are upper-cased. Null when malformed.
 */
export function parseDn(text: string): Pair[] | null {
  const out: Pair[] = [];
  let i = 0;
  while (i < text.length) {
    while (text[i] === " ") i++;
    const eq = text.indexOf("=", i);
    if (eq <= i) return null;
    const type = text.slice(i, eq).trim().toUpperCase();
    if (!/^[A-Z][A-Z0-9-]*$|^[0-9]+(\.[0-9]+)+$/.test(type)) return null;
    i = eq + 1;
    let value = "";
    const bytes: number[] = [];
    const flush = () => {
      if (bytes.length) value += Buffer.from(bytes.splice(0)).toString("utf8");
    };
    for (; i < text.length; i++) {
      const c = text[i]!;
      if (c === "," || c === "+") break;
      if (c === "\\") {
        const hex = text.slice(i + 1, i + 3);
        if (/^[0-9A-Fa-f]{2}$/.test(hex)) {
          bytes.push(parseInt(hex, 16));
          i += 2;
          continue;
        }
        const next = text[i + 1];
        if (next === undefined) return null;
        flush();
        value += next;
        i++;
        continue;
      }
      flush();
      value += c;
    }
    flush();
    out.push([type, value.trim()]);
    i++; // the separator
  }
  return out.length ? out : null;
}
