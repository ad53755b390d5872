/**
 * Client certificates a proxy presents when it originates TLS to a server outside the mesh — mutual TLS
 * to a partner's API, as Istio's DestinationRule `tls.mode: MUTUAL` or Envoy Gateway's backend client
 * certificate. Each is a pair of PEM files, the certificate (leaf first, then its chain) and its private
 * key:
 *
 * - **Read when a config names it.** A pair that cannot be read, holds no certificate, whose key is not
 *   the certificate's, or whose extended key usage leaves out client authentication is refused with
 *   `E_RT_CLIENT_CERT_INVALID` naming the field: the config is rejected whole, the previous one keeps
 *   serving (a sidecar that starts with it does not start).
 * - **Re-read when the files change** (Kubernetes rewrites a mounted Secret in place; cert-manager renews
 *   it): the store stat()s every pair each `pollIntervalMs`. A new pair that passes the same checks serves
 *   new connections (open ones finish on the old one); one that fails them is refused and the previous
 *   pair keeps serving.
 * - **Expired is loaded, not refused**: the server is the one to refuse it, and the expiry gauge and a
 *   warning say so; refusing it here would take every other destination's config down with it.
 *
 * Never logs, returns or puts in an error message any key material: messages name files and fields.
 */
import { X509Certificate } from "node:crypto";
import { readFile, stat } from "node:fs/promises";
import tls from "node:tls";
import { RuntimeConfigError } from "../contract/errors.ts";

/** The files of a client certificate, as the RuntimeConfig names them. */
export interface ClientCertificateFiles {
  readonly certFile: string;
  readonly keyFile: string;
}

/** The extended key usage a TLS client certificate needs (RFC 5280 id-kp-clientAuth). */
const CLIENT_AUTH = "1.3.6.1.5.5.7.3.2";
const ANY_EKU = "2.5.29.37.0";

/** What identifies a pair of files (a Map key). */
export const clientCertificateKey = (f: ClientCertificateFiles): string => `${f.certFile}\u0000${f.keyFile}`;

/** Do two configs name the same pair of files (or both none)? */
export const sameClientCertificate = (
  a: ClientCertificateFiles | null | undefined,
  b: ClientCertificateFiles | null | undefined,
): boolean =>
  (a ?? null) === (b ?? null) || (!!a && !!b && clientCertificateKey(a) === clientCertificateKey(b));

/** A pair that passed the checks. */
interface LoadedPair {
  readonly cert: string;
  readonly key: string;
  readonly subject: string;
  readonly serial: string;
  readonly notAfter: number;
  /** What the files looked like when read (inode, size, mtime of each): a change re-reads them. */
  readonly signature: string;
}

/** One pair of files and the pair serving now. */
export class ClientCertificate {
  readonly files: ClientCertificateFiles;
  #pair: LoadedPair;
  /** The signature of files last refused: not read again until they change again. */
  #refused: string | null = null;
  /** Secure contexts of the serving pair, by the CA the server's chain is verified against. */
  #contexts = new Map<string | null, tls.SecureContext>();
  private constructor(files: ClientCertificateFiles, pair: LoadedPair) {
    this.files = files;
    this.#pair = pair;
  }

  /** Reads and checks the pair; `field` prefixes the error path (`outbound.external[0].clientCertificate`). */
  static async load(files: ClientCertificateFiles, field: string): Promise<ClientCertificate> {
    return new ClientCertificate(files, await readPair(files, field));
  }

  get subject(): string {
    return this.#pair.subject;
  }
  get serial(): string {
    return this.#pair.serial;
  }
  /** The leaf's notAfter (epoch ms). */
  get notAfter(): number {
    return this.#pair.notAfter;
  }

  /** The secure context presenting this certificate and trusting `ca` (PEM; null = the system's roots). */
  context(ca: string | null): tls.SecureContext {
    let c = this.#contexts.get(ca);
    if (c === undefined) {
      c = tls.createSecureContext({
        minVersion: "TLSv1.2",
        cert: this.#pair.cert,
        key: this.#pair.key,
        ...(ca !== null ? { ca } : {}),
      });
      this.#contexts.set(ca, c);
    }
    return c;
  }

  /**
   * Re-reads the pair when its files changed: `unchanged`, `loaded` (the new pair serves new connections),
   * or the error that refused it (the previous pair keeps serving).
   */
  async refresh(field: string): Promise<"unchanged" | "loaded" | RuntimeConfigError> {
    let signature: string;
    try {
      signature = await signatureOf(this.files, field);
    } catch (err) {
      if (!(err instanceof RuntimeConfigError)) throw err;
      // Gone (between a Secret's writes, or deleted): refused once, not on every poll while it lasts.
      const mark = `unreadable ${err.message}`;
      if (this.#refused === mark) return "unchanged";
      this.#refused = mark;
      return err;
    }
    if (signature === this.#pair.signature || signature === this.#refused) return "unchanged";
    let next: LoadedPair;
    try {
      next = await readPair(this.files, field);
    } catch (err) {
      if (!(err instanceof RuntimeConfigError)) throw err;
      this.#refused = signature;
      return err;
    }
    this.#refused = null;
    // Rewritten with the same bytes (a Secret's resync): nothing changes.
    if (next.cert === this.#pair.cert && next.key === this.#pair.key) {
      this.#pair = next;
      return "unchanged";
    }
    this.#pair = next;
    this.#contexts = new Map();
    return "loaded";
  }
}

const unreadable = (err: unknown) => {
  const e = err as NodeJS.ErrnoException;
  return `cannot be read (${e.code ?? e.message})`;
};

/** What the files look like now (inode, size, mtime of each); refused naming the file that cannot be read. */
async function signatureOf(f: ClientCertificateFiles, field: string): Promise<string> {
  const one = async (sub: "certFile" | "keyFile", file: string) => {
    try {
      const s = await stat(file);
      return `${s.ino}:${s.size}:${s.mtimeMs}`;
    } catch (err) {
      throw new RuntimeConfigError(
        "E_RT_CLIENT_CERT_INVALID",
        `${file} ${unreadable(err)}`,
        `${field}.${sub}`,
      );
    }
  };
  const [c, k] = await Promise.all([one("certFile", f.certFile), one("keyFile", f.keyFile)]);
  return `${c} ${k}`;
}

async function readPair(f: ClientCertificateFiles, field: string): Promise<LoadedPair> {
  const fail = (sub: string, message: string) =>
    new RuntimeConfigError("E_RT_CLIENT_CERT_INVALID", message, `${field}.${sub}`);
  const read = async (sub: "certFile" | "keyFile", file: string) => {
    try {
      return await readFile(file, "utf8");
    } catch (err) {
      throw fail(sub, `${file} ${unreadable(err)}`);
    }
  };
  // The signature first: a change between stat and read is seen again at the next poll.
  const signature = await signatureOf(f, field);
  const [cert, key] = await Promise.all([read("certFile", f.certFile), read("keyFile", f.keyFile)]);
  let leaf: X509Certificate;
  try {
    leaf = new X509Certificate(cert);
  } catch {
    throw fail("certFile", `${f.certFile} holds no PEM certificate (expected -----BEGIN CERTIFICATE-----)`);
  }
  const eku = leaf.keyUsage;
  if (eku !== undefined && !eku.includes(CLIENT_AUTH) && !eku.includes(ANY_EKU))
    throw fail(
      "certFile",
      `the certificate in ${f.certFile} (${leaf.subject.replace(/\n/g, ", ")}) is not for client authentication: its extended key usage lacks clientAuth, so servers refuse it — issue one with extendedKeyUsage clientAuth`,
    );
  if (!/-----BEGIN [A-Z ]*PRIVATE KEY-----/.test(key))
    throw fail("keyFile", `${f.keyFile} holds no PEM private key (expected -----BEGIN … PRIVATE KEY-----)`);
  try {
    tls.createSecureContext({ cert, key });
  } catch (err) {
    const e = err as { code?: string; reason?: string };
    throw fail(
      "keyFile",
      e.code === "ERR_OSSL_X509_KEY_VALUES_MISMATCH"
        ? `the key in ${f.keyFile} is not the key of the certificate in ${f.certFile}`
        : `the key in ${f.keyFile} cannot be used (${e.reason ?? e.code ?? "unreadable"}; an encrypted key is not supported)`,
    );
  }
  return {
    cert,
    key,
    subject: leaf.subject.replace(/\n/g, ", "),
    serial: leaf.serialNumber,
    notAfter: leaf.validToDate.getTime(),
    signature,
  };
}

/** What happened to a pair of files (for logs and metrics; never key material). */
export type ClientCertificateEvent =
  | { kind: "loaded"; certificate: ClientCertificate }
  | { kind: "rejected"; certificate: ClientCertificate; code: string; message: string };

export interface ClientCertificateStoreOptions {
  /** stat() the files this often; default 1000 ms. */
  pollIntervalMs?: number;
  onEvent?: (e: ClientCertificateEvent) => void;
}

/**
 * The client certificates of a proxy's configs, by files: loaded when a config that names them is built
 * (`prepare`), kept while a serving config names them (`retain`), re-read when they change.
 */
export class ClientCertificateStore {
  readonly #byKey = new Map<string, { certificate: ClientCertificate; field: string }>();
  readonly #o: Required<ClientCertificateStoreOptions>;
  #timer: NodeJS.Timeout | null = null;
  #polling = false;
  constructor(o: ClientCertificateStoreOptions = {}) {
    this.#o = { pollIntervalMs: o.pollIntervalMs ?? 1000, onEvent: o.onEvent ?? (() => {}) };
  }

  /**
   * Loads the pairs a config names (the ones already loaded are kept as they are); throws the first
   * refusal (RuntimeConfigError E_RT_CLIENT_CERT_INVALID, its path the field). `field` of each is where
   * the config names it.
   */
  async prepare(list: readonly { files: ClientCertificateFiles; field: string }[]): Promise<void> {
    for (const { files, field } of list) {
      const k = clientCertificateKey(files);
      if (this.#byKey.has(k)) continue;
      const certificate = await ClientCertificate.load(files, field);
      this.#byKey.set(k, { certificate, field });
      this.#o.onEvent({ kind: "loaded", certificate });
    }
    if (this.#byKey.size > 0 && this.#timer === null) {
      this.#timer = setInterval(() => void this.refresh(), this.#o.pollIntervalMs);
      this.#timer.unref();
    }
  }

  /** The pair serving for these files; undefined when no config loaded them. */
  get(files: ClientCertificateFiles): ClientCertificate | undefined {
    return this.#byKey.get(clientCertificateKey(files))?.certificate;
  }

  /** Forgets the pairs no serving config names. */
  retain(list: readonly ClientCertificateFiles[]): void {
    const keep = new Set(list.map(clientCertificateKey));
    for (const k of this.#byKey.keys()) if (!keep.has(k)) this.#byKey.delete(k);
    if (this.#byKey.size === 0) this.#stop();
  }

  /** Re-reads every pair whose files changed (the poll; SIGHUP; tests). */
  async refresh(): Promise<void> {
    if (this.#polling) return;
    this.#polling = true;
    try {
      for (const { certificate, field } of [...this.#byKey.values()]) {
        const r = await certificate.refresh(field);
        if (r === "loaded") this.#o.onEvent({ kind: "loaded", certificate });
        else if (r !== "unchanged")
          this.#o.onEvent({ kind: "rejected", certificate, code: r.code, message: r.message });
      }
    } finally {
      this.#polling = false;
    }
  }

  close(): void {
    this.#byKey.clear();
    this.#stop();
  }

  #stop(): void {
    if (this.#timer !== null) clearInterval(this.#timer);
    this.#timer = null;
  }
}
