/**
 * `MeshCa` (`meshgate:pki:MeshCa`): the mesh's certificate authority as Pulumi resources of the tls
 * provider — a root, an intermediate (the issuer) and one X.509-SVID per workload identity, with the same
 * profile `runtime/pki` issues (docs/pki.md): ECDSA P-256 keys, root `cA=true, pathLen=1` and intermediate
 * `cA=true, pathLen=0` with keyCertSign + cRLSign, leaves `cA=false` with digitalSignature and both
 * EKUs, no CN on leaves, exactly one URI SAN (the SPIFFE ID).
 *
 * Lifetimes come from the spec (`mesh.ca`), in whole hours (the tls provider counts hours). Renewal is the
 * provider's `earlyRenewalHours`: a `pulumi up` inside the renewal window re-issues the certificate.
 * Leaves renew `renewBefore` before expiry (capped at half their lifetime, like the sidecar's renewal);
 * the intermediate renews one leaf lifetime + `renewBefore` before expiry, so every leaf it issued has
 * expired before it does. The root never renews by itself: it is replaced by a staged rotation
 * (`rotation`), the plan of runtime/pki/rotation.ts:
 *
 *   stable     — one root (generation G), its intermediate, leaves; bundle = [G]
 *   add-root   — a new root N is created and joins the bundle = [G, N]; leaves still come from G's
 *                intermediate while every peer loads the new bundle
 *   reissue    — N's intermediate issues every leaf (the old leaves are replaced); bundle = [G, N]; the
 *                known intermediates hold both, so peers with a not-yet-reloaded old leaf still verify;
 *                refused until `propagation` has passed since N was created
 *   drop-root  — G, its intermediate and keys leave the stack; bundle = [N]; refused until every leaf of
 *                G has expired (N's intermediate created ≥ workload TTL + clock skew ago)
 *   then stable with generation N.
 *
 * Private keys are Pulumi secrets (the tls provider marks its key outputs secret; this component wraps
 * every key it exposes in `pulumi.secret` as well). The root's key stays in the stack state (encrypted
 * by the stack's secrets provider): it signs only the intermediate.
 */
import * as pulumi from "@pulumi/pulumi";
import * as tls from "@pulumi/tls";
import { DEFAULT_CA_POLICY, type CaPolicy } from "../../runtime/pki/ca.ts";
import { checkTrustDomain, parseSpiffeId } from "../../runtime/pki/spiffe.ts";

const HOUR = 3_600_000;

/** One workload identity to issue an SVID for. */
export interface MeshCaIdentity {
  /** Workload name (a service, or "gateway"): names the child resources and keys `svids`. */
  name: string;
  /** `spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>`, in the CA's trust domain. */
  spiffeId: string;
}

/** A stage of a root rotation (see the module comment). */
export type MeshCaRotationStage = "stable" | "add-root" | "reissue" | "drop-root";

export interface MeshCaRotation {
  /**
   * Generation label of the root that signs (after the rotation: the new root). Part of child resource
   * names, so changing it creates a new root: change it only together with `previous`.
   * @default "1"
   */
  generation?: string;
  /** During a root rotation: the generation being replaced and the stage reached. */
  previous?: { generation: string; stage: Exclude<MeshCaRotationStage, "stable"> };
  /**
   * How long peers need to load a changed trust bundle (mounted Secrets are refreshed by the kubelet
   * within about a minute): `reissue` is refused until this much time has passed since the new root
   * was created.
   * @default 120000 (2 minutes)
   */
  propagationMs?: number;
}

export interface MeshCaArgs {
  /** The SPIFFE trust domain (`[a-z0-9._-]`, at most 255 bytes). */
  trustDomain: string;
  /** The identities to issue SVIDs for (InfraIR.identities gives them). */
  identities: readonly MeshCaIdentity[];
  /**
   * Lifetimes in milliseconds (InfraIR.ca has these fields).
   * @default DEFAULT_CA_POLICY (root 10y, intermediate 1y, workload 24h, renew 8h before, skew 5m)
   */
  policy?: Partial<CaPolicy>;
  /** The staged root rotation. @default { generation: "1" } (no rotation in progress) */
  rotation?: MeshCaRotation;
}

/** The PEM outputs of one identity. */
export interface MeshCaSvid {
  spiffeId: string;
  /** The leaf, then the intermediate that issued it (what the proxy presents; `svid.pem`). */
  certChainPem: pulumi.Output<string>;
  /** The leaf's PKCS#8 private key (`svid-key.pem`), a secret. */
  keyPem: pulumi.Output<string>;
}

/** The resources of one root generation. */
interface Generation {
  rootKey: tls.PrivateKey;
  root: tls.SelfSignedCert;
  intermediateKey: tls.PrivateKey;
  intermediate: tls.LocallySignedCert;
}

/** Validity and early renewal, in the whole hours the tls provider takes. */
export interface CaHours {
  rootValidity: number;
  intermediateValidity: number;
  intermediateEarlyRenewal: number;
  leafValidity: number;
  leafEarlyRenewal: number;
}

/**
 * The policy in hours: validities rounded down (at least 1), the leaf's renewal `renewBefore` rounded
 * up but at most half its lifetime, the intermediate's one leaf lifetime + renewBefore (so its leaves
 * expire before it does), at most half its own lifetime.
 */
export function caHours(policy: CaPolicy): CaHours {
  const hours = (ms: number) => Math.max(1, Math.floor(ms / HOUR));
  const leafValidity = hours(policy.workloadTtlMs);
  const leafEarlyRenewal = Math.min(Math.ceil(policy.renewBeforeMs / HOUR), Math.floor(leafValidity / 2));
  const intermediateValidity = hours(policy.intermediateValidityMs);
  return {
    rootValidity: hours(policy.rootValidityMs),
    intermediateValidity,
    intermediateEarlyRenewal: Math.min(
      leafValidity + Math.ceil(policy.renewBeforeMs / HOUR),
      Math.floor(intermediateValidity / 2),
    ),
    leafValidity,
    leafEarlyRenewal,
  };
}

/** The roots of the trust bundle and the generation that issues leaves, per stage. */
export function rotationPlan(rotation: MeshCaRotation = {}): {
  current: string;
  previous: string | null;
  stage: MeshCaRotationStage;
  /** Generations whose root and intermediate exist in this stage. */
  present: string[];
  /** Generations in the trust bundle. */
  bundle: string[];
  /** The generation whose intermediate signs the leaves. */
  issuer: string;
} {
  const current = rotation.generation ?? "1";
  const prev = rotation.previous;
  if (!prev)
    return {
      current,
      previous: null,
      stage: "stable",
      present: [current],
      bundle: [current],
      issuer: current,
    };
  const both = [prev.generation, current];
  switch (prev.stage) {
    case "add-root":
      return {
        current,
        previous: prev.generation,
        stage: prev.stage,
        present: both,
        bundle: both,
        issuer: prev.generation,
      };
    case "reissue":
      return {
        current,
        previous: prev.generation,
        stage: prev.stage,
        present: both,
        bundle: both,
        issuer: current,
      };
    case "drop-root":
      return {
        current,
        previous: prev.generation,
        stage: prev.stage,
        present: [current],
        bundle: [current],
        issuer: current,
      };
  }
}

/** Every problem with the args, as InputPropertyError details (empty when valid). */
export function meshCaArgErrors(args: MeshCaArgs): pulumi.InputPropertyErrorDetails[] {
  const errors: pulumi.InputPropertyErrorDetails[] = [];
  const td = checkTrustDomain(args.trustDomain);
  if (td) errors.push({ propertyPath: "trustDomain", reason: td.reason });
  const names = new Set<string>();
  args.identities.forEach((identity, i) => {
    if (!/^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/.test(identity.name))
      errors.push({ propertyPath: `identities[${i}].name`, reason: `"${identity.name}" is not a DNS label` });
    else if (names.has(identity.name))
      errors.push({ propertyPath: `identities[${i}].name`, reason: `"${identity.name}" is listed twice` });
    names.add(identity.name);
    const id = parseSpiffeId(identity.spiffeId);
    if (!id.ok)
      errors.push({ propertyPath: `identities[${i}].spiffeId`, reason: `${id.reason} [${id.code}]` });
    else if (!td && id.trustDomain !== args.trustDomain)
      errors.push({
        propertyPath: `identities[${i}].spiffeId`,
        reason: `${identity.spiffeId} is not in the trust domain ${args.trustDomain}`,
      });
    else if (id.path === "")
      errors.push({ propertyPath: `identities[${i}].spiffeId`, reason: "a workload SPIFFE ID needs a path" });
  });
  const policy = { ...DEFAULT_CA_POLICY, ...args.policy };
  for (const key of ["rootValidityMs", "intermediateValidityMs", "workloadTtlMs", "renewBeforeMs"] as const)
    if (!Number.isFinite(policy[key]) || policy[key] <= 0)
      errors.push({ propertyPath: `policy.${key}`, reason: `must be a positive number of milliseconds` });
  if (policy.workloadTtlMs > policy.intermediateValidityMs)
    errors.push({ propertyPath: "policy.workloadTtlMs", reason: "a leaf must not outlive the intermediate" });
  if (policy.intermediateValidityMs > policy.rootValidityMs)
    errors.push({
      propertyPath: "policy.intermediateValidityMs",
      reason: "the intermediate must not outlive the root",
    });
  const r = args.rotation ?? {};
  const label = /^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$/;
  if (r.generation !== undefined && !label.test(r.generation))
    errors.push({
      propertyPath: "rotation.generation",
      reason: `"${r.generation}" is not a short DNS label`,
    });
  if (r.previous) {
    if (!label.test(r.previous.generation))
      errors.push({
        propertyPath: "rotation.previous.generation",
        reason: `"${r.previous.generation}" is not a short DNS label`,
      });
    if (r.previous.generation === (r.generation ?? "1"))
      errors.push({
        propertyPath: "rotation.previous.generation",
        reason:
          "the previous generation must differ from the current one (set rotation.generation to the new root's)",
      });
    if (!["add-root", "reissue", "drop-root"].includes(r.previous.stage))
      errors.push({
        propertyPath: "rotation.previous.stage",
        reason: `must be add-root, reissue or drop-root, got ${JSON.stringify(r.previous.stage)}`,
      });
  }
  if (r.propagationMs !== undefined && !(r.propagationMs >= 0))
    errors.push({ propertyPath: "rotation.propagationMs", reason: "must be ≥ 0" });
  return errors;
}

const ROOT_USES = ["cert_signing", "crl_signing"];
const LEAF_USES = ["digital_signature", "server_auth", "client_auth"];

/** Thrown inside an output when a rotation stage comes too early; the update fails before the bundle changes. */
export class RotationTooEarlyError extends Error {
  readonly code = "E_RT_PKI_ROTATION_WAIT";
}

/**
 * The mesh CA: root(s), intermediate(s) and workload SVIDs, as `@pulumi/tls` resources under this
 * component. Outputs: the trust bundle, the known intermediates, the issuing root and intermediate, and
 * per identity its certificate chain and (secret) key.
 */
export class MeshCa extends pulumi.ComponentResource {
  /** The roots peers trust, as one PEM text (`bundle.pem`): two roots during a root rotation. */
  readonly trustBundlePem: pulumi.Output<string>;
  /** Every live intermediate (`intermediates.pem`): two during a root rotation's reissue stage. */
  readonly intermediatesPem: pulumi.Output<string>;
  /** The root of the current generation. */
  readonly rootCertificatePem: pulumi.Output<string>;
  /** The intermediate that signs the leaves. */
  readonly issuerCertificatePem: pulumi.Output<string>;
  /**
   * The signing intermediate's PKCS#8 key, a secret: for an issuer outside Pulumi that signs with this
   * CA (cert-manager's CA Issuer reads it from a Secret).
   */
  readonly issuerKeyPem: pulumi.Output<string>;
  /** Per identity name: SPIFFE ID, certificate chain and key. */
  readonly svids: Readonly<Record<string, MeshCaSvid>>;
  /** When the current root expires (RFC 3339): rotate it well before. */
  readonly rootNotAfter: pulumi.Output<string>;
  /** The rotation stage this update applies. */
  readonly rotationStage: MeshCaRotationStage;

  /**
   * @param name The unique name of the component; child names are derived from it.
   * @param args Trust domain, identities, lifetimes and the rotation stage.
   * @param opts Options for the component (provider of the tls resources, parent, …).
   */
  constructor(name: string, args: MeshCaArgs, opts?: pulumi.ComponentResourceOptions) {
    // Validated before super(): invalid arguments register nothing, not even the component.
    const errors = meshCaArgErrors(args);
    if (errors.length > 0)
      throw new pulumi.InputPropertiesError({
        message: `meshgate MeshCa ${name}: invalid arguments (${errors.length})`,
        errors,
      });
    super("meshgate:pki:MeshCa", name, {}, opts);
    const policy: CaPolicy = { ...DEFAULT_CA_POLICY, ...args.policy };
    const hours = caHours(policy);
    const plan = rotationPlan(args.rotation);
    const propagationMs = args.rotation?.propagationMs ?? 120_000;
    const td = args.trustDomain;
    const subject = (cn?: string) => ({ organization: td, ...(cn ? { commonName: cn } : {}) });
    const ecKey = (n: string) =>
      new tls.PrivateKey(n, { algorithm: "ECDSA", ecdsaCurve: "P256" }, { parent: this });

    const generations = new Map<string, Generation>();
    for (const g of plan.present) {
      const rootKey = ecKey(`${name}-root-${g}-key`);
      const root = new tls.SelfSignedCert(
        `${name}-root-${g}`,
        {
          privateKeyPem: rootKey.privateKeyPemPkcs8,
          subject: subject(`meshgate root CA ${g}`),
          uris: [`spiffe://${td}`],
          isCaCertificate: true,
          maxPathLength: 1,
          allowedUses: ROOT_USES,
          validityPeriodHours: hours.rootValidity,
          setSubjectKeyId: true,
          setAuthorityKeyId: true,
        },
        { parent: this },
      );
      const intermediateKey = ecKey(`${name}-intermediate-${g}-key`);
      const csr = new tls.CertRequest(
        `${name}-intermediate-${g}-csr`,
        {
          privateKeyPem: intermediateKey.privateKeyPemPkcs8,
          subject: subject(`meshgate intermediate CA ${g}`),
          uris: [`spiffe://${td}`],
        },
        { parent: this },
      );
      const intermediate = new tls.LocallySignedCert(
        `${name}-intermediate-${g}`,
        {
          certRequestPem: csr.certRequestPem,
          caCertPem: root.certPem,
          caPrivateKeyPem: rootKey.privateKeyPemPkcs8,
          isCaCertificate: true,
          maxPathLength: 0,
          allowedUses: ROOT_USES,
          validityPeriodHours: hours.intermediateValidity,
          earlyRenewalHours: hours.intermediateEarlyRenewal,
          setSubjectKeyId: true,
        },
        { parent: this },
      );
      generations.set(g, { rootKey, root, intermediateKey, intermediate });
    }
    const current = generations.get(plan.current)!;
    const issuer = generations.get(plan.issuer)!;

    // The stage guards: a stage that comes too early fails the update before the bundle changes.
    const now = Date.now();
    let gate: pulumi.Output<void> = pulumi.output(undefined);
    if (plan.stage === "reissue") {
      gate = current.root.validityStartTime.apply((start) => {
        const ready = Date.parse(start) + propagationMs;
        if (start && now < ready)
          throw new RotationTooEarlyError(
            `MeshCa ${name}: the reissue stage is too early: root ${plan.current} entered the trust bundle at ${start}; peers may not have it before ${new Date(ready).toISOString()} (rotation.propagationMs) [E_RT_PKI_ROTATION_WAIT]`,
          );
      });
    } else if (plan.stage === "drop-root") {
      const waitMs = policy.workloadTtlMs + policy.clockSkewMs;
      gate = current.intermediate.validityStartTime.apply((start) => {
        const ready = Date.parse(start) + waitMs;
        if (start && now < ready)
          throw new RotationTooEarlyError(
            `MeshCa ${name}: the drop-root stage is too early: leaves of root ${plan.previous} may live until ${new Date(ready).toISOString()} (the reissue stage began at ${start}; workload TTL + clock skew) [E_RT_PKI_ROTATION_WAIT]`,
          );
      });
    }
    const gated = (o: pulumi.Output<string>) => pulumi.all([o, gate]).apply(([v]) => v);

    const svids: Record<string, MeshCaSvid> = {};
    for (const identity of args.identities) {
      const key = ecKey(`${name}-svid-${identity.name}-key`);
      const csr = new tls.CertRequest(
        `${name}-svid-${identity.name}-csr`,
        { privateKeyPem: key.privateKeyPemPkcs8, subject: subject(), uris: [identity.spiffeId] },
        { parent: this },
      );
      const leaf = new tls.LocallySignedCert(
        `${name}-svid-${identity.name}`,
        {
          certRequestPem: csr.certRequestPem,
          caCertPem: issuer.intermediate.certPem,
          caPrivateKeyPem: issuer.intermediateKey.privateKeyPemPkcs8,
          isCaCertificate: false,
          allowedUses: LEAF_USES,
          validityPeriodHours: hours.leafValidity,
          earlyRenewalHours: hours.leafEarlyRenewal,
          setSubjectKeyId: true,
        },
        { parent: this },
      );
      svids[identity.name] = {
        spiffeId: identity.spiffeId,
        certChainPem: gated(pemJoin([leaf.certPem, issuer.intermediate.certPem])),
        keyPem: pulumi.secret(gated(key.privateKeyPemPkcs8)),
      };
    }

    this.trustBundlePem = gated(pemJoin(plan.bundle.map((g) => generations.get(g)!.root.certPem)));
    this.intermediatesPem = gated(pemJoin(plan.present.map((g) => generations.get(g)!.intermediate.certPem)));
    this.rootCertificatePem = current.root.certPem;
    this.issuerCertificatePem = issuer.intermediate.certPem;
    this.issuerKeyPem = pulumi.secret(gated(issuer.intermediateKey.privateKeyPemPkcs8));
    this.rootNotAfter = current.root.validityEndTime;
    this.rotationStage = plan.stage;
    this.svids = Object.freeze(svids);
    this.registerOutputs({
      trustBundlePem: this.trustBundlePem,
      intermediatesPem: this.intermediatesPem,
      rootCertificatePem: this.rootCertificatePem,
      issuerCertificatePem: this.issuerCertificatePem,
      rootNotAfter: this.rootNotAfter,
      rotationStage: this.rotationStage,
      spiffeIds: Object.fromEntries(Object.entries(svids).map(([n, s]) => [n, s.spiffeId])),
    });
  }
}

/** PEM texts joined, each ending with one newline. */
function pemJoin(parts: pulumi.Input<string>[]): pulumi.Output<string> {
  return pulumi.all(parts).apply((texts) => texts.map((t) => `${t.trimEnd()}\n`).join(""));
}
