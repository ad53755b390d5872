/**
 * A proxy's workload identity at run time, read from files: the X.509-SVID chain, its key, the trust
 * bundle and the known intermediates (the `svid` section of a RuntimeConfig).
 *
 * - **Hot reload.** The files are watched (fs.watch on their directories: Kubernetes updates a mounted
 *   Secret by swapping a symlinked `..data` directory, the local mode renames each file into place) and,
 *   as a fallback, polled with stat (inode, size, mtime). A change is loaded whole: the chain is parsed,
 *   the leaf must be an X.509-SVID naming this proxy's SPIFFE ID, the key must be the leaf's, the chain
 *   must verify against the bundle now. Anything else — a half-written file, a certificate written
 *   before its key, an expired leaf, another workload's SVID — is refused with a coded event and the
 *   previous identity keeps serving.
 * - **Lifecycle.** `ready()` is false until a valid identity is loaded and once it expired. At the
 *   renewal time (`renewalTime`: renewBefore ahead of notAfter, at most half-way) a `renewal_due` event
 *   fires — the issuer (local mode, cert-manager) is expected to have written new files by then. With
 *   the development-only `issuer` option the source issues its own SVID from a CA directory at that time
 *   and writes it to the files.
 * - **What consumers use.** `current()` holds the parsed identity with a client TLS context (TLS 1.3,
 *   this SVID, the bundle as CA), the server options for `tls.Server#setSecureContext`, and an
 *   SvidVerifier for peers (bundle + known intermediates; reused while those do not change, so its cache
 *   survives leaf renewals). Private keys stay in PrivateKeyPem wrappers and never appear in events.
 */
import { createHash } from "node:crypto";
import { watch, type FSWatcher } from "node:fs";
import { mkdir, readFile, stat } from "node:fs/promises";
import { dirname } from "node:path";
import tls, { type SecureContext } from "node:tls";
import { TrustBundle } from "./bundle.ts";
import { importPrivateKey, PrivateKeyPem, SvidIssuer } from "./ca.ts";
import { certificatesToPem, parseCertificates, type ParsedCertificate } from "./cert.ts";
import { PkiError } from "./errors.ts";
import { loadCaDirectory, writeFileAtomic, type CaDirectory } from "./files.ts";
import { renewalTime } from "./rotation.ts";
import { checkSvidLeaf, SvidVerifier } from "./verify.ts";

/** The `svid` section of a RuntimeConfig (runtime/contract). */
export interface IdentityFiles {
  readonly certFile: string;
  readonly keyFile: string;
  readonly bundleFile: string;
  readonly intermediatesFile: string | null;
  readonly renewBeforeMs: number;
  readonly clockSkewMs: number;
  readonly issuer: { readonly caDir: string; readonly workloadTtlMs: number } | null;
}

/** A loaded, verified identity. */
export interface LoadedIdentity {
  readonly spiffeId: string;
  readonly leaf: ParsedCertificate;
  readonly notBefore: number;
  readonly notAfter: number;
  /** The earliest notAfter of the leaf's path to the bundle (an intermediate may expire first). */
  readonly chainNotAfter: number;
  readonly serial: string;
  /** SHA-256 of the leaf's DER, hex. */
  readonly fingerprint: string;
  /** The chain the proxy presents: the leaf, then its intermediates. */
  readonly chainPem: string;
  readonly key: PrivateKeyPem;
  readonly bundle: TrustBundle;
  /** Intermediates a peer's leaf may be issued by: the proxy's own and the intermediates file's. */
  readonly intermediates: readonly ParsedCertificate[];
  /** Verifies peers: the bundle's roots, the known intermediates. */
  readonly verifier: SvidVerifier;
  /** For `tls.connect({ secureContext })`: TLS 1.3, this SVID, the bundle as CA. */
  readonly clientContext: SecureContext;
  /** For `tls.createServer` / `tls.Server#setSecureContext`. */
  readonly serverOptions: tls.SecureContextOptions;
  /** When it should be renewed (renewalTime with renewBeforeMs). */
  readonly renewAt: number;
  /** SHA-256 of the files' bytes: an identical rewrite is not a change. */
  readonly contentHash: string;
}

export type IdentityEvent =
  | { readonly kind: "loaded"; readonly identity: LoadedIdentity; readonly previous: LoadedIdentity | null }
  | {
      readonly kind: "rejected";
      readonly code: string;
      readonly message: string;
      /** True while an older identity keeps serving. */
      readonly keptPrevious: boolean;
    }
  | { readonly kind: "renewal_due"; readonly identity: LoadedIdentity }
  | { readonly kind: "expired"; readonly identity: LoadedIdentity }
  | { readonly kind: "issued"; readonly spiffeId: string; readonly notAfter: number }
  | { readonly kind: "issue_failed"; readonly code: string; readonly message: string };

export interface IdentitySourceOptions {
  /** The SPIFFE ID this proxy is (the config's `identity`): an SVID naming another is refused. */
  readonly expectedId: string;
  readonly trustDomain: string;
  /** stat() the files this often as a fallback to fs.watch; default 1000 ms. */
  readonly pollIntervalMs?: number;
  /** Wait this long after a watch event before reading (a writer renames several files); default 50 ms. */
  readonly debounceMs?: number;
  readonly now?: () => number;
  readonly onEvent?: (event: IdentityEvent) => void;
}

export type IdentityReload =
  | { readonly ok: true; readonly changed: boolean; readonly identity: LoadedIdentity }
  | { readonly ok: false; readonly code: string; readonly message: string };

/** setTimeout's largest delay (about 24.8 days); longer waits are re-armed when it fires. */
const MAX_TIMER_MS = 2 ** 31 - 1;

/** An identity error with a code from the runtime or PKI catalogs. */
class IdentityError extends Error {
  readonly code: string;
  /** When the same files may be accepted without changing (a certificate not valid yet): epoch ms. */
  readonly retryAt: number | null;
  constructor(code: string, message: string, retryAt: number | null = null) {
    super(message);
    this.code = code;
    this.retryAt = retryAt;
  }
}

export class IdentitySource {
  readonly files: IdentityFiles;
  readonly #o: Required<Omit<IdentitySourceOptions, "onEvent">> & Pick<IdentitySourceOptions, "onEvent">;
  #current: LoadedIdentity | null = null;
  #loading: Promise<unknown> = Promise.resolve();
  /** stat signatures of the files as last read. */
  #seen = "";
  #watchers = new Map<string, FSWatcher>();
  #poll: NodeJS.Timeout | null = null;
  #debounce: NodeJS.Timeout | null = null;
  #renewTimer: NodeJS.Timeout | null = null;
  #expiryTimer: NodeJS.Timeout | null = null;
  #retryTimer: NodeJS.Timeout | null = null;
  /** Development issuer: failed issuances in a row (the retry backs off). */
  #issueFailures = 0;
  /** Development issuer: the CA directory as last read (issued from while the directory cannot be read). */
  #ca: CaDirectory | null = null;
  #closed = false;

  constructor(files: IdentityFiles, options: IdentitySourceOptions) {
    this.files = files;
    this.#o = {
      expectedId: options.expectedId,
      trustDomain: options.trustDomain,
      pollIntervalMs: options.pollIntervalMs ?? 1000,
      debounceMs: options.debounceMs ?? 50,
      now: options.now ?? Date.now,
      onEvent: options.onEvent,
    };
  }

  /** The identity serving now (possibly expired: check `ready()`), or null before the first load. */
  current(): LoadedIdentity | null {
    return this.#current;
  }

  /** A valid identity is loaded: inside its validity window (leaf and chain). */
  ready(now = this.#o.now()): boolean {
    const c = this.#current;
    return c !== null && now >= c.notBefore && now <= c.chainNotAfter;
  }

  /**
   * Loads the files once (and, with an issuer, issues an SVID when they hold no valid one), then watches
   * them. Resolves whether or not an identity could be loaded: the proxy starts not ready and becomes
   * ready when the files appear.
   */
  async start(): Promise<void> {
    await this.reload();
    // Nothing valid on disk: issue now (a loaded identity past its renewal time is renewed by its timer).
    if (this.files.issuer !== null && !this.ready()) await this.#issueAndLoad();
    if (this.#closed) return;
    this.#watch();
    this.#poll = setInterval(() => void this.#checkFiles(), this.#o.pollIntervalMs);
    this.#poll.unref();
  }

  /** Re-reads the files now (SIGHUP, tests); serialized with every other load. */
  reload(): Promise<IdentityReload> {
    const next = this.#loading.then(async () => {
      this.#seen = await this.#signature();
      return this.#load();
    });
    this.#loading = next.catch(() => undefined);
    return next;
  }

  close(): void {
    this.#closed = true;
    for (const w of this.#watchers.values()) w.close();
    this.#watchers.clear();
    for (const t of [this.#poll, this.#debounce, this.#renewTimer, this.#expiryTimer, this.#retryTimer])
      if (t) clearTimeout(t);
  }

  // ───────────── loading ─────────────

  async #load(): Promise<IdentityReload> {
    let next: LoadedIdentity;
    try {
      next = await this.#read();
    } catch (err) {
      const { code, message } = describeError(err);
      this.#emit({ kind: "rejected", code, message, keptPrevious: this.#current !== null });
      // Files refused only for the clock (issued by a machine whose clock runs ahead) become valid
      // without changing: read them again then, or the proxy would wait for a change that may never come.
      if (err instanceof IdentityError && err.retryAt !== null && !this.#closed) {
        if (this.#retryTimer) clearTimeout(this.#retryTimer);
        this.#retryTimer = this.#at(err.retryAt + 1, () => void this.reload());
      }
      return { ok: false, code, message };
    }
    const previous = this.#current;
    if (previous !== null && previous.contentHash === next.contentHash)
      return { ok: true, changed: false, identity: previous };
    this.#current = next;
    this.#arm(next);
    this.#emit({ kind: "loaded", identity: next, previous });
    return { ok: true, changed: true, identity: next };
  }

  async #read(): Promise<LoadedIdentity> {
    const f = this.files;
    const [chainText, keyText, bundleText, intermediatesText] = (await Promise.all([
      readText(f.certFile, "svid.certFile", true),
      readText(f.keyFile, "svid.keyFile", true),
      readText(f.bundleFile, "svid.bundleFile", true),
      f.intermediatesFile ? readText(f.intermediatesFile, "svid.intermediatesFile", false) : "",
    ])) as [string, string, string, string | null];
    const contentHash = createHash("sha256")
      .update(chainText)
      .update("\0")
      .update(keyText)
      .update("\0")
      .update(bundleText)
      .update("\0")
      .update(intermediatesText ?? "")
      .digest("hex");
    const previous = this.#current;
    if (previous !== null && previous.contentHash === contentHash) return previous;

    // PEM parsing skips a block without its END line, so a file caught mid-write would load as the
    // blocks written so far: a bundle short of a root, a chain short of its intermediate.
    incompletePem(chainText, "svid.certFile");
    incompletePem(keyText, "svid.keyFile");
    incompletePem(bundleText, "svid.bundleFile");
    if (intermediatesText) incompletePem(intermediatesText, "svid.intermediatesFile");
    const chain = parseCertificates(chainText);
    const leaf = chain[0]!;
    const checked = checkSvidLeaf(leaf);
    if (!checked.ok) throw new IdentityError(checked.code, `svid.certFile: ${checked.reason}`);
    if (checked.id.id !== this.#o.expectedId)
      throw new IdentityError(
        "E_RT_IDENTITY_MISMATCH",
        `svid.certFile holds an SVID for ${checked.id.id}, but this proxy is ${this.#o.expectedId}`,
      );
    // The key must be the leaf's (a certificate renamed into place before its key is refused here).
    await importPrivateKey(keyText, leaf);
    const bundle = TrustBundle.fromPem(this.#o.trustDomain, bundleText);
    const known = new Map<string, ParsedCertificate>();
    for (const c of chain.slice(1)) known.set(c.fingerprint, c);
    if (intermediatesText) for (const c of parseCertificates(intermediatesText)) known.set(c.fingerprint, c);
    const intermediates = [...known.values()];
    const verifier =
      reuseVerifier(previous, bundle, intermediates) ?? new SvidVerifier(bundle, { intermediates });
    const now = this.#o.now();
    // The chain is checked as it will be presented — its own intermediates only, not the known ones:
    // a peer's OpenSSL holds the bundle's roots alone and refuses a leaf whose intermediate is missing,
    // so a chain file caught mid-write (the leaf whole, the intermediate cut off, which PEM parsing
    // skips) or written without its intermediate must be refused, not served to every handshake.
    const self = new SvidVerifier(bundle, { cacheSize: 1 }).verify(
      chain.map((c) => c.der),
      { now, expect: this.#o.expectedId },
    );
    if (!self.ok) {
      // Not valid yet: worth reading again when the next certificate of the chain or bundle becomes
      // valid (always a time to come, so a retry never spins).
      const later = [...chain, ...bundle.roots].map((c) => c.notBefore).filter((t) => t > now);
      throw new IdentityError(
        self.code,
        `svid.certFile: ${self.reason}`,
        self.code === "E_RT_PKI_NOT_YET_VALID" && later.length > 0 ? Math.min(...later) : null,
      );
    }
    const chainPem = certificatesToPem(chain);
    const bundlePem = bundle.toPem();
    const serverOptions: tls.SecureContextOptions = {
      cert: chainPem,
      key: keyText,
      ca: bundlePem,
      minVersion: "TLSv1.3",
    };
    let clientContext: SecureContext;
    try {
      clientContext = tls.createSecureContext(serverOptions);
    } catch (err) {
      throw new IdentityError(
        "E_RT_PKI_PEM",
        `the SVID and key do not form a TLS context: ${(err as Error).message}`,
      );
    }
    return {
      spiffeId: self.spiffeId,
      leaf,
      notBefore: self.notBefore,
      notAfter: self.notAfter,
      chainNotAfter: self.chainNotAfter,
      serial: self.serial,
      fingerprint: self.fingerprint,
      chainPem,
      key: new PrivateKeyPem(keyText),
      bundle,
      intermediates,
      verifier,
      clientContext,
      serverOptions,
      renewAt: renewalTime(self, f.renewBeforeMs),
      contentHash,
    };
  }

  // ───────────── timers: renewal and expiry ─────────────

  #arm(identity: LoadedIdentity): void {
    if (this.#renewTimer) clearTimeout(this.#renewTimer);
    if (this.#expiryTimer) clearTimeout(this.#expiryTimer);
    this.#renewTimer = this.#at(identity.renewAt, () => {
      if (this.#current !== identity) return;
      this.#emit({ kind: "renewal_due", identity });
      if (this.files.issuer !== null) void this.#issueAndLoad();
    });
    this.#expiryTimer = this.#at(identity.chainNotAfter + 1, () => {
      if (this.#current === identity) this.#emit({ kind: "expired", identity });
    });
  }

  /** A timer at an absolute time, re-armed past setTimeout's limit. */
  #at(when: number, fn: () => void): NodeJS.Timeout {
    const delay = Math.max(0, when - this.#o.now());
    const t = setTimeout(
      () => {
        if (this.#closed) return;
        if (when - this.#o.now() > 0) this.#at(when, fn);
        else fn();
      },
      Math.min(delay, MAX_TIMER_MS),
    );
    t.unref();
    return t;
  }

  /**
   * Development only: issue a new SVID from the CA directory, write it to the files, load it. The CA
   * directory is read at each issuance, so one rotated since is used, and one not readable yet (not
   * written, mid-write) is read again at the next try — retried with backoff; once read, the CA last read
   * serves while the directory cannot be.
   */
  async #issueAndLoad(): Promise<void> {
    const spec = this.files.issuer;
    if (spec === null || this.#closed) return;
    const run = this.#loading.then(async () => {
      try {
        // A directory that cannot be read (mid-write, unmounted) leaves the CA read before serving.
        const ca = await loadCaDirectory(spec.caDir).then(
          (read) => (this.#ca = read),
          (err: unknown) => {
            if (this.#ca === null) throw err;
            return this.#ca;
          },
        );
        const issuer = new SvidIssuer(ca.intermediate, {
          workloadTtlMs: spec.workloadTtlMs,
          clockSkewMs: this.files.clockSkewMs,
        });
        const svid = await issuer.issue(this.#o.expectedId, { now: this.#o.now() });
        const f = this.files;
        await Promise.all(
          [...new Set([f.certFile, f.keyFile, f.bundleFile].map((p) => dirname(p)))].map((d) =>
            mkdir(d, { recursive: true, mode: 0o755 }),
          ),
        );
        if (!(await exists(f.bundleFile))) await writeFileAtomic(f.bundleFile, ca.bundle.toPem(), 0o644);
        await writeFileAtomic(f.keyFile, svid.keyPem!.reveal(), 0o600);
        await writeFileAtomic(f.certFile, svid.chainPem, 0o644);
        this.#emit({ kind: "issued", spiffeId: svid.spiffeId, notAfter: svid.notAfter });
        this.#issueFailures = 0;
      } catch (err) {
        this.#emit({ kind: "issue_failed", ...describeError(err) });
        // Try again soon — 0.5 s, doubling, at most 5 s — and well before the current identity runs out.
        const c = this.#current;
        const cap = c ? Math.max(1000, Math.min(5000, (c.chainNotAfter - this.#o.now()) / 4)) : 5000;
        const retryIn = Math.min(cap, 500 * 2 ** Math.min(this.#issueFailures++, 10));
        if (!this.#closed) this.#at(this.#o.now() + retryIn, () => void this.#issueAndLoad());
        return;
      }
      // Our own write: remember the new signatures so the watcher does not load it a second time.
      this.#seen = await this.#signature();
      await this.#load();
    });
    this.#loading = run.catch(() => undefined);
    await run;
  }

  // ───────────── watching ─────────────

  #watch(): void {
    const f = this.files;
    const dirs = new Set(
      [f.certFile, f.keyFile, f.bundleFile, ...(f.intermediatesFile ? [f.intermediatesFile] : [])].map((p) =>
        dirname(p),
      ),
    );
    for (const dir of dirs) {
      if (this.#watchers.has(dir)) continue;
      try {
        const w = watch(dir, { persistent: false }, () => this.#changed());
        w.on("error", () => {
          w.close();
          this.#watchers.delete(dir);
        });
        this.#watchers.set(dir, w);
      } catch {
        // The directory does not exist (yet): polling covers it, and the next poll tries again.
      }
    }
  }

  #changed(): void {
    if (this.#closed) return;
    if (this.#debounce) clearTimeout(this.#debounce);
    this.#debounce = setTimeout(() => void this.#checkFiles(), this.#o.debounceMs);
    this.#debounce.unref();
  }

  /** Loads when any file's stat signature changed since the last read (poll and watch events). */
  async #checkFiles(): Promise<void> {
    if (this.#closed) return;
    this.#watch();
    const run = this.#loading.then(async () => {
      const sig = await this.#signature();
      if (sig === this.#seen) return;
      this.#seen = sig;
      await this.#load();
    });
    this.#loading = run.catch(() => undefined);
    await run;
  }

  async #signature(): Promise<string> {
    const f = this.files;
    const paths = [
      f.certFile,
      f.keyFile,
      f.bundleFile,
      ...(f.intermediatesFile ? [f.intermediatesFile] : []),
    ];
    const parts = await Promise.all(
      paths.map((p) =>
        stat(p).then(
          (s) => `${s.ino}:${s.size}:${s.mtimeMs}`,
          () => "-",
        ),
      ),
    );
    return parts.join("|");
  }

  #emit(event: IdentityEvent): void {
    try {
      this.#o.onEvent?.(event);
    } catch {
      // A listener's failure must not break loading.
    }
  }
}

/** The previous verifier when bundle roots and known intermediates are the same (its cache stays warm). */
function reuseVerifier(
  previous: LoadedIdentity | null,
  bundle: TrustBundle,
  intermediates: readonly ParsedCertificate[],
): SvidVerifier | null {
  if (previous === null) return null;
  const key = (roots: readonly ParsedCertificate[], ints: readonly ParsedCertificate[]) =>
    `${roots
      .map((r) => r.fingerprint)
      .sort()
      .join(",")}/${ints
      .map((i) => i.fingerprint)
      .sort()
      .join(",")}`;
  return key(previous.bundle.roots, previous.intermediates) === key(bundle.roots, intermediates)
    ? previous.verifier
    : null;
}

const PEM_BLOCK = /-----BEGIN ([A-Z0-9 ]+)-----[\s\S]*?-----END \1-----/g;

/**
 * Refuses a PEM text with a block begun and not ended (a file read while it is written): what is left
 * once the complete blocks are removed must hold no PEM boundary, whole or cut.
 */
function incompletePem(text: string, field: string): void {
  if (text.replace(PEM_BLOCK, "").includes("-----"))
    throw new IdentityError(
      "E_RT_PKI_PEM",
      `${field}: a PEM block is incomplete (the file is being written?)`,
    );
}

async function readText(path: string, field: string, required: boolean): Promise<string | null> {
  try {
    return await readFile(path, "utf8");
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (!required && code === "ENOENT") return null;
    throw new IdentityError("E_RT_IDENTITY_FILE", `${field}: cannot read ${path} (${code ?? "error"})`);
  }
}

async function exists(path: string): Promise<boolean> {
  return stat(path).then(
    () => true,
    () => false,
  );
}

function describeError(err: unknown): { code: string; message: string } {
  if (err instanceof IdentityError || err instanceof PkiError)
    return { code: err.code, message: err.message };
  const e = err as Error & { code?: string };
  return { code: typeof e.code === "string" ? e.code : "E_RT_IDENTITY_FILE", message: e.message };
}
