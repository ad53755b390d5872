/**
 * The dev CA of `meshgate up`: a root and an intermediate persisted under `<stateDir>/ca/` (keys 0600,
 * reused across runs, so a browser or curl that trusts the bundle keeps trusting it), and short-lived
 * X.509-SVIDs for every workload (10 minutes by default) written atomically into
 * `<stateDir>/identities/<workload>/` — the files the sidecars and the gateway watch — and renewed at
 * half-life while running, so certificate rotation is exercised on every run.
 */
import { mkdir, readFile, stat } from "node:fs/promises";
import { join } from "node:path";
import {
  CA_FILES,
  certificatesToPem,
  createIntermediateCa,
  createRootCa,
  loadCaDirectory,
  loadCertificateAuthority,
  SvidIssuer,
  toPem,
  writeCaDirectory,
  writeFileAtomic,
  type CaDirectory,
  type IssuedSvid,
} from "../../runtime/pki/index.ts";
import { IDENTITY_FILES } from "../../components/translate/translate.ts";
import { MAX_TIMER_MS } from "../../runtime/contract/schema.ts";

export interface DevCaPolicy {
  readonly rootValidityMs: number;
  readonly intermediateValidityMs: number;
  readonly clockSkewMs: number;
}

/** A problem with the state directory's CA that the user must resolve (the message says how). */
export class DevCaError extends Error {
  override name = "DevCaError";
  readonly code = "E_LOCAL_CA";
}

const exists = (p: string) =>
  stat(p).then(
    () => true,
    () => false,
  );

/**
 * Opens the CA in `dir`, creating it on first use. A CA of another trust domain is refused (the state
 * directory belongs to another mesh); an intermediate with less than a day left is replaced by a new one
 * under the same root (the root key stays on disk for that — a dev CA, never a production one).
 */
export async function openDevCa(
  dir: string,
  trustDomain: string,
  policy: DevCaPolicy,
  now = Date.now(),
): Promise<{ ca: CaDirectory; created: boolean; renewedIntermediate: boolean }> {
  if (!(await exists(join(dir, CA_FILES.intermediateKey)))) {
    const root = await createRootCa({
      trustDomain,
      validityMs: policy.rootValidityMs,
      clockSkewMs: policy.clockSkewMs,
      now,
    });
    const intermediate = await createIntermediateCa(root, {
      validityMs: policy.intermediateValidityMs,
      clockSkewMs: policy.clockSkewMs,
      now,
    });
    await writeCaDirectory(dir, { root, intermediate });
    return { ca: await loadCaDirectory(dir), created: true, renewedIntermediate: false };
  }
  let ca = await loadCaDirectory(dir);
  if (ca.trustDomain !== trustDomain)
    throw new DevCaError(
      `${dir} holds a CA for trust domain ${ca.trustDomain}, not ${trustDomain}: pass another --state-dir (or delete ${dir})`,
    );
  if (ca.root.notAfter <= now + 86_400_000)
    throw new DevCaError(`the dev root CA in ${dir} expires within a day: delete ${dir} to make a new one`);
  if (ca.intermediate.certificate.notAfter > now + 86_400_000)
    return { ca, created: false, renewedIntermediate: false };
  const root = await loadCertificateAuthority({
    certPem: await readFile(join(dir, CA_FILES.rootCert), "utf8"),
    keyPem: await readFile(join(dir, CA_FILES.rootKey), "utf8"),
  });
  const intermediate = await createIntermediateCa(root, {
    validityMs: policy.intermediateValidityMs,
    clockSkewMs: policy.clockSkewMs,
    now,
  });
  await writeFileAtomic(join(dir, CA_FILES.intermediateKey), intermediate.keyPem.reveal(), 0o600);
  await writeFileAtomic(
    join(dir, CA_FILES.intermediateCert),
    toPem(intermediate.certificate.der, "CERTIFICATE"),
    0o644,
  );
  ca = await loadCaDirectory(dir);
  return { ca, created: false, renewedIntermediate: true };
}

/**
 * Writes an SVID into an identity directory the way a watching proxy expects: bundle, known
 * intermediates, key (0600), then the chain — each renamed into place.
 */
export async function writeIdentityFiles(dir: string, svid: IssuedSvid, ca: CaDirectory): Promise<void> {
  if (!svid.keyPem) throw new DevCaError("an SVID without its private key cannot be written");
  await mkdir(dir, { recursive: true, mode: 0o755 });
  await writeFileAtomic(join(dir, IDENTITY_FILES.bundle), ca.bundle.toPem(), 0o644);
  await writeFileAtomic(
    join(dir, IDENTITY_FILES.intermediates),
    certificatesToPem([ca.intermediate.certificate]),
    0o644,
  );
  await writeFileAtomic(join(dir, IDENTITY_FILES.key), svid.keyPem.reveal(), 0o600);
  await writeFileAtomic(join(dir, IDENTITY_FILES.cert), svid.chainPem, 0o644);
}

export interface IdentityEventSink {
  issued(e: { workload: string; serial: string; notAfter: number; renewal: boolean }): void;
  failed(e: { workload: string; error: Error }): void;
}

/**
 * Keeps every identity's SVID fresh: issues one now, and a new one at half-life of each, for as long as
 * it runs. `stop()` cancels the timers.
 */
export class IdentityKeeper {
  readonly #issuer: SvidIssuer;
  readonly #ca: CaDirectory;
  readonly #ttlMs: number;
  readonly #sink: IdentityEventSink;
  readonly #timers = new Map<string, NodeJS.Timeout>();
  readonly #current = new Map<string, { serial: string; notAfter: number }>();
  #renewals = 0;
  #stopped = false;

  constructor(ca: CaDirectory, o: { ttlMs: number; clockSkewMs: number; sink: IdentityEventSink }) {
    this.#ca = ca;
    this.#ttlMs = o.ttlMs;
    this.#sink = o.sink;
    this.#issuer = new SvidIssuer(ca.intermediate, { workloadTtlMs: o.ttlMs, clockSkewMs: o.clockSkewMs });
  }

  /** Issues and writes the first SVID of every identity (before any proxy starts). */
  async start(identities: readonly { workload: string; spiffeId: string; dir: string }[]): Promise<void> {
    await Promise.all(identities.map((i) => this.#issue(i, false)));
  }

  /**
   * Issues these identities now and renews them from then on, replacing the renewal of a workload
   * already kept (its SPIFFE ID changed); `retire` stops renewing workloads that are gone.
   */
  async add(
    identities: readonly { workload: string; spiffeId: string; dir: string }[],
    retire: readonly string[] = [],
  ): Promise<void> {
    for (const w of [...retire, ...identities.map((i) => i.workload)]) {
      clearTimeout(this.#timers.get(w));
      this.#timers.delete(w);
    }
    for (const w of retire) this.#current.delete(w);
    await Promise.all(identities.map((i) => this.#issue(i, false)));
  }

  /** Renewals done so far (not counting the first issuance). */
  get renewals(): number {
    return this.#renewals;
  }

  /** The serving SVID of each workload (serial, notAfter). */
  current(): Record<string, { serial: string; notAfter: number }> {
    return Object.fromEntries(this.#current);
  }

  stop(): void {
    this.#stopped = true;
    for (const t of this.#timers.values()) clearTimeout(t);
    this.#timers.clear();
  }

  async #issue(i: { workload: string; spiffeId: string; dir: string }, renewal: boolean): Promise<void> {
    if (this.#stopped) return;
    let delay: number;
    try {
      const issuedAt = Date.now();
      const svid = await this.#issuer.issue(i.spiffeId, { ttlMs: this.#ttlMs, now: issuedAt });
      await writeIdentityFiles(i.dir, svid, this.#ca);
      this.#current.set(i.workload, { serial: svid.serial, notAfter: svid.notAfter });
      if (renewal) this.#renewals++;
      this.#sink.issued({ workload: i.workload, serial: svid.serial, notAfter: svid.notAfter, renewal });
      // At half-life, but never past setTimeout's limit (about 24.8 days): Node fires a longer timer
      // after 1 ms, which renewed every SVID of a long --svid-ttl in a loop. Renewing early is harmless.
      delay = Math.min(MAX_TIMER_MS, Math.max(1000, Math.floor((svid.notAfter - issuedAt) / 2)));
    } catch (err) {
      if (!renewal) throw err;
      this.#sink.failed({ workload: i.workload, error: err as Error });
      delay = 5000;
    }
    if (this.#stopped) return;
    this.#timers.set(
      i.workload,
      setTimeout(() => void this.#issue(i, true), delay),
    );
  }
}
