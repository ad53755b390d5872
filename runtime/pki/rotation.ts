/**
 * Certificate lifecycle: renewal timing, expiry warnings, and the staged rotation of roots and
 * intermediates.
 *
 * A root rotation that never fails a handshake goes in stages:
 *   1. add the new root to every trust bundle (old + new), 2. wait until every peer has loaded it,
 *   3. issue a new intermediate under the new root, 4. reissue every leaf from it,
 *   5. wait until every leaf that chains to the old root has expired (≥ the leaf TTL, plus clock skew),
 *   6. drop the old root, 7. retire the old intermediate.
 * `planRotation` lists these steps for a concrete inventory; `checkStep` refuses a step that would
 * remove trust while a live leaf still depends on it, so that the plan cannot be run out of order.
 */
import { isCa, type ParsedCertificate } from "./cert.ts";
import { PkiError, type PkiErrorCode } from "./errors.ts";
import { parseSpiffeId } from "./spiffe.ts";
import { compareCodeUnits } from "../contract/canonical.ts";

/** What the rotation planner knows about one trust domain. */
export interface PkiInventory {
  trustDomain: string;
  /** The roots of the trust bundle that peers hold now. */
  bundle: readonly ParsedCertificate[];
  /**
   * When each bundle root (by fingerprint) was known to be in every peer's bundle (epoch ms). A root
   * missing here counts as loaded long ago.
   */
  bundleSince?: ReadonlyMap<string, number>;
  /** Issuing CAs: current and retiring intermediates. */
  intermediates: readonly ParsedCertificate[];
  /** Every issued leaf not yet expired, current and superseded (a superseded leaf may still be in use). */
  leaves: readonly ParsedCertificate[];
}

export type RotationTarget =
  /** Replace the bundle's root(s) with `newRoot` (and its intermediate, when already issued). */
  | { kind: "root"; newRoot: ParsedCertificate; newIntermediate?: ParsedCertificate }
  /** Replace the issuing intermediate under the same root. */
  | { kind: "intermediate"; newIntermediate?: ParsedCertificate };

/** A certificate named in a plan. */
export interface CertRef {
  subject: string;
  fingerprint: string;
  notAfter: number;
}

export type RotationAction =
  | { action: "add-root"; root: CertRef }
  | { action: "wait-propagation"; root: CertRef; minMs: number }
  | { action: "issue-intermediate"; root: CertRef; intermediate: CertRef | null }
  | {
      action: "reissue-leaf";
      spiffeId: string;
      current: CertRef;
      intermediate: CertRef | null;
      /** The root the new leaf chains to: without a named intermediate, what the guard checks. */
      root: CertRef;
    }
  | { action: "wait-leaf-expiry"; retiring: CertRef[]; until: number }
  | { action: "drop-root"; root: CertRef }
  | { action: "retire-intermediate"; intermediate: CertRef };

export type RotationStep = RotationAction & { n: number; description: string };

export interface ExpiryWarning {
  kind: "root" | "intermediate" | "leaf";
  subject: string;
  spiffeId: string | null;
  fingerprint: string;
  notAfter: number;
  /** Negative once expired. */
  remainingMs: number;
  expired: boolean;
}

export interface RotationPlan {
  kind: RotationTarget["kind"];
  trustDomain: string;
  steps: RotationStep[];
  /** If every leaf were reissued at `now`, the earliest time the old root/intermediate can go. */
  earliestRetirement: number;
  warnings: ExpiryWarning[];
}

export interface RotationOptions {
  /** Plan as of this time (epoch ms). */
  now: number;
  /** The leaf TTL new leaves get (a leaf issued just before the reissue lives this long). */
  workloadTtlMs: number;
  clockSkewMs: number;
  /** How long a new bundle takes to reach every peer (Kubernetes mounted Secrets: about a minute). */
  propagationMs: number;
  /** Expiry warnings cover certificates that expire within this window. */
  warningWindowMs: number;
}

export type StepCheck = { ok: true } | { ok: false; code: PkiErrorCode; reason: string; blocking: string[] };

// ───────────── renewal ─────────────

/**
 * When a certificate should be renewed: `renewBefore` ahead of notAfter, but never later than half-way
 * through its validity (a 10-second leaf with an 8-hour renewBefore renews after 5 seconds, not at once
 * and forever).
 */
export function renewalTime(cert: { notBefore: number; notAfter: number }, renewBeforeMs: number): number {
  return cert.notAfter - Math.min(renewBeforeMs, (cert.notAfter - cert.notBefore) / 2);
}

/** True once `now` has reached the certificate's renewal time. */
export function needsRenewal(
  cert: { notBefore: number; notAfter: number },
  renewBeforeMs: number,
  now: number,
): boolean {
  return now >= renewalTime(cert, renewBeforeMs);
}

// ───────────── expiry warnings ─────────────

/** Every certificate of the inventory that expires within `windowMs` of `now` (or already has), soonest first. */
export function expiryWarnings(inventory: PkiInventory, windowMs: number, now: number): ExpiryWarning[] {
  const out: ExpiryWarning[] = [];
  const seen = new Set<string>();
  const add = (kind: ExpiryWarning["kind"], c: ParsedCertificate) => {
    if (seen.has(c.fingerprint)) return;
    seen.add(c.fingerprint);
    if (c.notAfter > now + windowMs) return;
    out.push({
      kind,
      subject: c.subject,
      spiffeId: kind === "leaf" ? leafId(c) : null,
      fingerprint: c.fingerprint,
      notAfter: c.notAfter,
      remainingMs: c.notAfter - now,
      expired: c.notAfter < now,
    });
  };
  for (const r of inventory.bundle) add("root", r);
  for (const i of inventory.intermediates) add("intermediate", i);
  for (const l of inventory.leaves) add("leaf", l);
  return out.sort((a, b) => a.notAfter - b.notAfter || compareCodeUnits(a.subject, b.subject));
}

// ───────────── chains inside an inventory ─────────────

const ref = (c: ParsedCertificate): CertRef => ({
  subject: c.subject,
  fingerprint: c.fingerprint,
  notAfter: c.notAfter,
});

/** `parent` issued `child`: names chain and key identifiers agree (our own files; no signature check). */
function issued(parent: ParsedCertificate, child: ParsedCertificate): boolean {
  return (
    parent.subjectName === child.issuerName &&
    (!child.authorityKeyId || !parent.subjectKeyId || child.authorityKeyId === parent.subjectKeyId)
  );
}

function leafId(c: ParsedCertificate): string | null {
  if (c.uris.length !== 1) return null;
  const id = parseSpiffeId(c.uris[0]!);
  return id.ok ? id.id : null;
}

/** The leaf's label: its SPIFFE ID, else its subject. */
const identity = (c: ParsedCertificate): string => leafId(c) ?? c.subject;

/** The fingerprints of the roots (among `roots`) a leaf chains to through `intermediates` (or directly). */
function rootsOf(
  leaf: ParsedCertificate,
  intermediates: readonly ParsedCertificate[],
  roots: readonly ParsedCertificate[],
): Set<string> {
  const out = new Set<string>();
  for (const r of roots) if (issued(r, leaf)) out.add(r.fingerprint);
  for (const i of intermediates) {
    if (!issued(i, leaf)) continue;
    for (const r of roots) if (issued(r, i)) out.add(r.fingerprint);
  }
  return out;
}

const live = (c: ParsedCertificate, now: number, skew: number) => now < c.notAfter + skew;

// ───────────── the plan ─────────────

/** The ordered steps to reach `target` from `inventory`, with expiry warnings. */
export function planRotation(
  inventory: PkiInventory,
  target: RotationTarget,
  options: RotationOptions,
): RotationPlan {
  const { now, clockSkewMs: skew } = options;
  const steps: RotationAction[] = [];
  const newIntermediate = target.newIntermediate ?? null;
  const liveLeaves = inventory.leaves.filter((l) => !isCa(l) && live(l, now, skew));
  let retiringRoots: ParsedCertificate[] = [];
  let retiringIntermediates: ParsedCertificate[];
  let newRoot: ParsedCertificate;

  if (target.kind === "root") {
    newRoot = target.newRoot;
    retiringRoots = inventory.bundle.filter((r) => r.fingerprint !== newRoot.fingerprint);
    retiringIntermediates = inventory.intermediates.filter(
      (i) => !issued(newRoot, i) && (!newIntermediate || i.fingerprint !== newIntermediate.fingerprint),
    );
    if (!inventory.bundle.some((r) => r.fingerprint === newRoot.fingerprint))
      steps.push({ action: "add-root", root: ref(newRoot) });
    steps.push({ action: "wait-propagation", root: ref(newRoot), minMs: options.propagationMs });
  } else {
    // The intermediate is replaced under the root that issued the current one.
    const current = inventory.intermediates.filter(
      (i) => !newIntermediate || i.fingerprint !== newIntermediate.fingerprint,
    );
    newRoot =
      inventory.bundle.find((r) => current.some((i) => issued(r, i))) ??
      inventory.bundle[0] ??
      (() => {
        throw new PkiError("E_RT_PKI_ROTATION_LAST_ROOT", "the inventory's trust bundle has no root");
      })();
    retiringIntermediates = current;
  }
  steps.push({
    action: "issue-intermediate",
    root: ref(newRoot),
    intermediate: newIntermediate ? ref(newIntermediate) : null,
  });

  // One reissue per identity that has no live leaf under the target yet.
  const targetIssued = (l: ParsedCertificate) =>
    newIntermediate
      ? issued(newIntermediate, l)
      : target.kind === "root" && rootsOf(l, inventory.intermediates, [newRoot]).size > 0;
  const byId = new Map<string, ParsedCertificate[]>();
  for (const l of liveLeaves) byId.set(identity(l), [...(byId.get(identity(l)) ?? []), l]);
  for (const [id, leaves] of [...byId.entries()].sort(([a], [b]) => compareCodeUnits(a, b))) {
    if (leaves.some(targetIssued)) continue;
    const current = leaves.reduce((a, b) => (b.notAfter > a.notAfter ? b : a));
    steps.push({
      action: "reissue-leaf",
      spiffeId: id,
      current: ref(current),
      intermediate: newIntermediate ? ref(newIntermediate) : null,
      root: ref(newRoot),
    });
  }

  const retiringLeaves = liveLeaves.filter((l) => !targetIssued(l));
  const earliestRetirement = Math.max(
    now + options.workloadTtlMs + skew,
    ...retiringLeaves.map((l) => l.notAfter + skew),
  );
  steps.push({
    action: "wait-leaf-expiry",
    retiring: [...retiringRoots, ...retiringIntermediates].map(ref),
    until: earliestRetirement,
  });
  for (const r of retiringRoots) steps.push({ action: "drop-root", root: ref(r) });
  for (const i of retiringIntermediates) steps.push({ action: "retire-intermediate", intermediate: ref(i) });

  return {
    kind: target.kind,
    trustDomain: inventory.trustDomain,
    steps: steps.map((s, i) => ({ ...s, n: i + 1, description: describeStep(s, options) })),
    earliestRetirement,
    warnings: expiryWarnings(inventory, options.warningWindowMs, now),
  };
}

const iso = (t: number) => new Date(t).toISOString();

function describeStep(s: RotationAction, o: RotationOptions): string {
  switch (s.action) {
    case "add-root":
      return `add the new root ${s.root.subject} to every trust bundle, next to the current root(s)`;
    case "wait-propagation":
      return `wait ≥ ${Math.round(s.minMs / 1000)}s until every peer has loaded the bundle with ${s.root.subject}`;
    case "issue-intermediate":
      return s.intermediate
        ? `use the new intermediate ${s.intermediate.subject} (issued by ${s.root.subject}) for every new leaf, and add it to the verifiers' known intermediates`
        : `issue a new intermediate under ${s.root.subject}, use it for every new leaf, and add it to the verifiers' known intermediates`;
    case "reissue-leaf":
      return `reissue ${s.spiffeId} from the new intermediate (current leaf expires ${iso(s.current.notAfter)})`;
    case "wait-leaf-expiry":
      return (
        `wait until every leaf that chains to the retiring certificate(s) has expired: ≥ the leaf TTL ` +
        `(${Math.round(o.workloadTtlMs / 1000)}s) + clock skew (${Math.round(o.clockSkewMs / 1000)}s) after the last reissue; ` +
        `not before ${iso(s.until)} if every leaf is reissued now`
      );
    case "drop-root":
      return `drop the old root ${s.root.subject} from every trust bundle`;
    case "retire-intermediate":
      return `retire the old intermediate ${s.intermediate.subject} (stop issuing with it; drop it from the verifiers' known intermediates)`;
  }
}

// ───────────── the guard ─────────────

export interface CheckOptions {
  clockSkewMs: number;
  /**
   * How long a new bundle takes to reach every peer: a new root's intermediate and leaves wait this long
   * after the root entered the bundle (`bundleSince`), as the wait-propagation step does — a leaf of a
   * root a peer has not loaded yet fails its handshakes.
   */
  propagationMs: number;
}

/**
 * May `step` run now, given the inventory as it is? Refuses (with the leaves or identities in the way):
 * a new root's intermediate or leaves before the root is in the bundle (and has propagated); dropping a
 * root while an identity has no live leaf under another root, or while any live leaf chains to it;
 * retiring an intermediate while a live leaf was issued by it; emptying the bundle.
 */
export function checkStep(
  inventory: PkiInventory,
  step: RotationAction,
  now: number,
  options: CheckOptions,
): StepCheck {
  const skew = options.clockSkewMs;
  const inBundle = (fp: string) => inventory.bundle.some((r) => r.fingerprint === fp);
  const propagated = (root: CertRef, minMs: number): StepCheck => {
    if (!inBundle(root.fingerprint))
      return refuse(
        "E_RT_PKI_ROTATION_ORDER",
        `${root.subject} is not in the trust bundle yet: add it first`,
        [],
      );
    const since = inventory.bundleSince?.get(root.fingerprint);
    if (since !== undefined && now < since + minMs)
      return refuse(
        "E_RT_PKI_ROTATION_WAIT",
        `${root.subject} entered the bundle at ${iso(since)}; peers may not have it before ${iso(since + minMs)}`,
        [],
      );
    return { ok: true };
  };
  const liveLeaves = inventory.leaves.filter((l) => !isCa(l) && live(l, now, skew));
  switch (step.action) {
    case "add-root":
    case "wait-propagation":
      return step.action === "add-root" ? { ok: true } : propagated(step.root, step.minMs);
    case "issue-intermediate":
      return propagated(step.root, options.propagationMs);
    case "reissue-leaf": {
      // A plan made before the new intermediate existed names none: the leaf chains to the plan's root,
      // which must be in the bundle and propagated like for any certificate under it.
      if (!step.intermediate) return propagated(step.root, options.propagationMs);
      const int = inventory.intermediates.find((i) => i.fingerprint === step.intermediate!.fingerprint);
      const root = int && inventory.bundle.find((r) => issued(r, int));
      if (!root)
        return refuse(
          "E_RT_PKI_ROTATION_ORDER",
          `the intermediate ${step.intermediate.subject} does not chain to a root of the trust bundle yet`,
          [],
        );
      return propagated(ref(root), options.propagationMs);
    }
    case "wait-leaf-expiry": {
      const blocking = liveLeaves.filter((l) =>
        step.retiring.some((c) => {
          const cert = [...inventory.bundle, ...inventory.intermediates].find(
            (x) => x.fingerprint === c.fingerprint,
          );
          return cert ? issued(cert, l) || rootsOf(l, inventory.intermediates, [cert]).size > 0 : false;
        }),
      );
      return blocking.length === 0 ? { ok: true } : waitFor(blocking, skew, "the retiring certificates");
    }
    case "drop-root": {
      const remaining = inventory.bundle.filter((r) => r.fingerprint !== step.root.fingerprint);
      if (remaining.length === 0)
        return refuse("E_RT_PKI_ROTATION_LAST_ROOT", `${step.root.subject} is the bundle's only root`, []);
      const dropped = step.root.fingerprint;
      if (!inBundle(dropped)) return { ok: true };
      return guardRetirement(liveLeaves, skew, step.root.subject, (l) => {
        const roots = rootsOf(l, inventory.intermediates, inventory.bundle);
        if (roots.size === 0) return "unrelated";
        return roots.has(dropped) && roots.size === 1 ? "retiring" : "other";
      });
    }
    case "retire-intermediate": {
      const int = inventory.intermediates.find((i) => i.fingerprint === step.intermediate.fingerprint);
      if (!int) return { ok: true };
      return guardRetirement(liveLeaves, skew, step.intermediate.subject, (l) => {
        if (issued(int, l)) return "retiring";
        return rootsOf(l, inventory.intermediates, inventory.bundle).size > 0 ? "other" : "unrelated";
      });
    }
  }
}

/**
 * Retiring X is safe when every identity that had a leaf depending on X has a live leaf without it
 * (reissued), and no live leaf depends on X alone any more (waited out). Leaves that chain to nothing
 * in the inventory are broken already and do not block.
 */
function guardRetirement(
  leaves: readonly ParsedCertificate[],
  skew: number,
  what: string,
  classify: (l: ParsedCertificate) => "retiring" | "other" | "unrelated",
): StepCheck {
  const covered = new Set<string>();
  const dependentIds = new Set<string>();
  const dependent: ParsedCertificate[] = [];
  for (const l of leaves) {
    const c = classify(l);
    if (c === "other") covered.add(identity(l));
    if (c === "retiring") {
      dependentIds.add(identity(l));
      dependent.push(l);
    }
  }
  const notReissued = [...dependentIds].filter((id) => !covered.has(id)).sort();
  if (notReissued.length > 0)
    return refuse(
      "E_RT_PKI_ROTATION_NOT_REISSUED",
      `${notReissued.length} identit${notReissued.length === 1 ? "y has" : "ies have"} no live leaf without ${what}: reissue ${notReissued.join(", ")} first`,
      notReissued,
    );
  return dependent.length === 0 ? { ok: true } : waitFor(dependent, skew, what);
}

function waitFor(leaves: readonly ParsedCertificate[], skew: number, what: string): StepCheck {
  const until = Math.max(...leaves.map((l) => l.notAfter + skew));
  return refuse(
    "E_RT_PKI_ROTATION_WAIT",
    `${leaves.length} live leaf certificate(s) still chain to ${what}; wait until ${iso(until)} (last notAfter + clock skew)`,
    leaves.map((l) => `${identity(l)} (serial ${l.serial}, notAfter ${iso(l.notAfter)})`),
  );
}

function refuse(code: PkiErrorCode, reason: string, blocking: string[]): StepCheck {
  return { ok: false, code, reason, blocking };
}
