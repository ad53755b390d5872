/**
 * The certificate lifecycle: the staged rotation plan and its guard (`checkStep`), expiry warnings,
 * renewal timing — and real mTLS handshakes through every stage of a root rotation.
 */
import { once } from "node:events";
import type { AddressInfo } from "node:net";
import tls from "node:tls";
import { beforeAll, describe, expect, it } from "vitest";
import {
  checkStep,
  createIntermediateCa,
  createRootCa,
  expiryWarnings,
  needsRenewal,
  planRotation,
  renewalTime,
  spiffeServerIdentity,
  SvidIssuer,
  SvidVerifier,
  TrustBundle,
  parseCertificate,
  type IssuedCa,
  type ParsedCertificate,
  type PkiInventory,
  type RotationOptions,
} from "../../runtime/pki/index.ts";

const HOUR = 3_600_000;
const DAY = 24 * HOUR;
const MIN = 60_000;
const T = Date.UTC(2030, 0, 1, 12, 0, 0);
const TD = "rot.example";
const id = (sa: string) => `spiffe://${TD}/ns/shop/sa/${sa}`;
const SERVICES = ["users", "orders", "payments"];
const OPTIONS: RotationOptions = {
  now: T,
  workloadTtlMs: DAY,
  clockSkewMs: 5 * MIN,
  propagationMs: 2 * MIN,
  warningWindowMs: 30 * DAY,
};
const skew = { clockSkewMs: OPTIONS.clockSkewMs, propagationMs: OPTIONS.propagationMs };

let oldRoot: IssuedCa;
let oldInt: IssuedCa;
let newRoot: IssuedCa;
let newInt: IssuedCa;
let oldLeaves: ParsedCertificate[];

async function leaf(issuer: IssuedCa, sa: string, now: number, ttlMs = DAY): Promise<ParsedCertificate> {
  const s = await new SvidIssuer(issuer).issue(id(sa), { now, ttlMs, clockSkewMs: OPTIONS.clockSkewMs });
  return parseCertificate(s.der);
}

beforeAll(async () => {
  // the old root expires in 20 days and its intermediate in 5: both show up in expiry warnings
  oldRoot = await createRootCa({ trustDomain: TD, now: T - 100 * DAY, validityMs: 120 * DAY });
  oldInt = await createIntermediateCa(oldRoot, { now: T - 100 * DAY, validityMs: 105 * DAY });
  newRoot = await createRootCa({ trustDomain: TD, now: T });
  newInt = await createIntermediateCa(newRoot, { now: T });
  oldLeaves = await Promise.all(SERVICES.map((s) => leaf(oldInt, s, T)));
});

const initial = (): PkiInventory => ({
  trustDomain: TD,
  bundle: [oldRoot.certificate],
  intermediates: [oldInt.certificate, newInt.certificate],
  leaves: oldLeaves,
});

describe("root rotation plan", () => {
  it("orders_add_root_wait_intermediate_reissue_wait_drop_retire", () => {
    const plan = planRotation(
      initial(),
      { kind: "root", newRoot: newRoot.certificate, newIntermediate: newInt.certificate },
      OPTIONS,
    );
    expect(plan.steps.map((s) => s.action)).toEqual([
      "add-root",
      "wait-propagation",
      "issue-intermediate",
      "reissue-leaf",
      "reissue-leaf",
      "reissue-leaf",
      "wait-leaf-expiry",
      "drop-root",
      "retire-intermediate",
    ]);
    expect(plan.steps.map((s) => s.n)).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9]);
    expect(
      plan.steps.filter((s) => s.action === "reissue-leaf").map((s) => "spiffeId" in s && s.spiffeId),
    ).toEqual([id("orders"), id("payments"), id("users")]);
    const drop = plan.steps.find((s) => s.action === "drop-root")!;
    expect(drop).toMatchObject({ root: { fingerprint: oldRoot.certificate.fingerprint } });
    const retire = plan.steps.find((s) => s.action === "retire-intermediate")!;
    expect(retire).toMatchObject({ intermediate: { fingerprint: oldInt.certificate.fingerprint } });
    // the wait covers the leaf TTL and the clock skew, and every old leaf's expiry
    expect(plan.earliestRetirement).toBe(T + DAY + 5 * MIN);
    expect(plan.steps.find((s) => s.action === "wait-leaf-expiry")).toMatchObject({
      until: T + DAY + 5 * MIN,
    });
    for (const s of plan.steps) expect(s.description.length).toBeGreaterThan(20);
  });

  it("skips_the_add_and_the_identities_already_reissued", async () => {
    const reissued = await leaf(newInt, "orders", T + MIN);
    const inv = {
      ...initial(),
      bundle: [oldRoot.certificate, newRoot.certificate],
      leaves: [...oldLeaves, reissued],
    };
    const plan = planRotation(
      inv,
      { kind: "root", newRoot: newRoot.certificate, newIntermediate: newInt.certificate },
      OPTIONS,
    );
    expect(plan.steps[0]!.action).toBe("wait-propagation");
    expect(
      plan.steps.filter((s) => s.action === "reissue-leaf").map((s) => "spiffeId" in s && s.spiffeId),
    ).toEqual([id("payments"), id("users")]);
  });

  it("waits_for_a_leaf_that_outlives_the_ttl", async () => {
    const longLived = await leaf(oldInt, "batch", T, 3 * DAY);
    const plan = planRotation(
      { ...initial(), leaves: [...oldLeaves, longLived] },
      { kind: "root", newRoot: newRoot.certificate },
      OPTIONS,
    );
    expect(plan.earliestRetirement).toBe(longLived.notAfter + 5 * MIN);
  });
});

describe("checkStep", () => {
  it("walks_a_root_rotation_and_refuses_every_premature_step", async () => {
    const plan = planRotation(
      initial(),
      { kind: "root", newRoot: newRoot.certificate, newIntermediate: newInt.certificate },
      OPTIONS,
    );
    const step = (a: string) => plan.steps.find((s) => s.action === a)!;
    const reissue = plan.steps.find((s) => s.action === "reissue-leaf")!;

    // before the new root is in the bundle: nothing that depends on it may run
    let inv = initial();
    expect(checkStep(inv, step("add-root"), T, skew)).toEqual({ ok: true });
    expect(checkStep(inv, step("issue-intermediate"), T, skew)).toMatchObject({
      ok: false,
      code: "E_RT_PKI_ROTATION_ORDER",
    });
    expect(checkStep(inv, reissue, T, skew)).toMatchObject({ ok: false, code: "E_RT_PKI_ROTATION_ORDER" });
    expect(checkStep(inv, step("drop-root"), T, skew)).toMatchObject({
      ok: false,
      code: "E_RT_PKI_ROTATION_LAST_ROOT",
    });

    // stage 1: the bundle holds both roots, and has to reach every peer first
    inv = {
      ...inv,
      bundle: [oldRoot.certificate, newRoot.certificate],
      bundleSince: new Map([[newRoot.certificate.fingerprint, T]]),
    };
    expect(checkStep(inv, step("wait-propagation"), T + MIN, skew)).toMatchObject({
      ok: false,
      code: "E_RT_PKI_ROTATION_WAIT",
    });
    expect(checkStep(inv, step("wait-propagation"), T + 2 * MIN, skew)).toEqual({ ok: true });
    expect(checkStep(inv, step("issue-intermediate"), T + 2 * MIN, skew)).toEqual({ ok: true });
    expect(checkStep(inv, reissue, T + 2 * MIN, skew)).toEqual({ ok: true });

    // stage 2: two of three identities reissued — dropping the old root would strand "users"
    const now = T + 3 * MIN;
    const newOrders = await leaf(newInt, "orders", now);
    const newPayments = await leaf(newInt, "payments", now);
    inv = { ...inv, leaves: [...oldLeaves, newOrders, newPayments] };
    const stranded = checkStep(inv, step("drop-root"), now, skew);
    expect(stranded).toMatchObject({
      ok: false,
      code: "E_RT_PKI_ROTATION_NOT_REISSUED",
      blocking: [id("users")],
    });

    // stage 3: every identity reissued, but the old leaves live until notAfter + skew
    const newUsers = await leaf(newInt, "users", now);
    inv = { ...inv, leaves: [...oldLeaves, newOrders, newPayments, newUsers] };
    const early = checkStep(inv, step("drop-root"), now, skew);
    expect(early).toMatchObject({ ok: false, code: "E_RT_PKI_ROTATION_WAIT" });
    if (!early.ok) {
      expect(early.blocking).toHaveLength(3);
      expect(early.reason).toContain(new Date(T + DAY + 5 * MIN).toISOString());
    }
    expect(checkStep(inv, step("wait-leaf-expiry"), now, skew)).toMatchObject({
      ok: false,
      code: "E_RT_PKI_ROTATION_WAIT",
    });
    expect(checkStep(inv, step("retire-intermediate"), now, skew)).toMatchObject({
      ok: false,
      code: "E_RT_PKI_ROTATION_WAIT",
    });
    // one second before the last old leaf's notAfter + skew: still refused
    expect(checkStep(inv, step("drop-root"), T + DAY + 5 * MIN - 1000, skew)).toMatchObject({
      ok: false,
      code: "E_RT_PKI_ROTATION_WAIT",
    });

    // stage 4: after the wait, the old root and intermediate can go
    const after = T + DAY + 5 * MIN;
    expect(checkStep(inv, step("wait-leaf-expiry"), after, skew)).toEqual({ ok: true });
    expect(checkStep(inv, step("drop-root"), after, skew)).toEqual({ ok: true });
    expect(checkStep(inv, step("retire-intermediate"), after, skew)).toEqual({ ok: true });
    inv = { ...inv, bundle: [newRoot.certificate] };
    expect(
      checkStep(
        inv,
        {
          action: "drop-root",
          root: { subject: "", fingerprint: newRoot.certificate.fingerprint, notAfter: 0 },
        },
        after,
        skew,
      ),
    ).toMatchObject({ ok: false, code: "E_RT_PKI_ROTATION_LAST_ROOT" });
  });

  // A leaf of the new root presented to a peer that has not loaded the root yet fails its handshake:
  // every step that puts the new root's certificates to use waits for the propagation, not only the
  // wait step itself.
  it.each([
    ["wait-propagation", MIN, false],
    ["issue-intermediate", MIN, false],
    ["reissue-leaf", MIN, false],
    ["wait-propagation", 2 * MIN, true],
    ["issue-intermediate", 2 * MIN, true],
    ["reissue-leaf", 2 * MIN, true],
  ] as const)(
    "%s_%d_ms_after_the_new_root_entered_the_bundle_waits_for_its_propagation",
    (action, after, ok) => {
      const plan = planRotation(
        initial(),
        { kind: "root", newRoot: newRoot.certificate, newIntermediate: newInt.certificate },
        OPTIONS,
      );
      const inv: PkiInventory = {
        ...initial(),
        bundle: [oldRoot.certificate, newRoot.certificate],
        bundleSince: new Map([[newRoot.certificate.fingerprint, T]]),
      };
      const check = checkStep(
        inv,
        plan.steps.find((s) => s.action === action)!,
        T + after,
        skew,
      );
      expect(check).toMatchObject(ok ? { ok: true } : { ok: false, code: "E_RT_PKI_ROTATION_WAIT" });
    },
  );

  // A plan made before the new intermediate exists names none in its reissue steps: checked on their own,
  // they were always allowed — even with the new root missing from the bundle.
  it.each([
    ["a_reissue_without_a_named_intermediate_is_refused_while_the_new_root_is_not_in_the_bundle", false, 2 * MIN, "E_RT_PKI_ROTATION_ORDER"],
    ["a_reissue_without_a_named_intermediate_waits_for_the_new_roots_propagation", true, MIN, "E_RT_PKI_ROTATION_WAIT"],
    ["a_reissue_without_a_named_intermediate_is_allowed_once_the_new_root_propagated", true, 2 * MIN, null],
  ] as const)("%s", (_claim, added, after, code) => {
    const plan = planRotation(initial(), { kind: "root", newRoot: newRoot.certificate }, OPTIONS);
    const reissue = plan.steps.find((s) => s.action === "reissue-leaf")!;
    expect("intermediate" in reissue && reissue.intermediate).toBeNull();
    const inv: PkiInventory = added
      ? { ...initial(), bundle: [oldRoot.certificate, newRoot.certificate], bundleSince: new Map([[newRoot.certificate.fingerprint, T]]) }
      : initial();
    expect(checkStep(inv, reissue, T + after, skew)).toMatchObject(code === null ? { ok: true } : { ok: false, code });
  }); // prettier-ignore

  it("guards_an_intermediate_rotation_the_same_way", async () => {
    const inv0: PkiInventory = {
      trustDomain: TD,
      bundle: [oldRoot.certificate],
      intermediates: [oldInt.certificate],
      leaves: oldLeaves,
    };
    const plan = planRotation(inv0, { kind: "intermediate" }, OPTIONS);
    expect(plan.steps.map((s) => s.action)).toEqual([
      "issue-intermediate",
      "reissue-leaf",
      "reissue-leaf",
      "reissue-leaf",
      "wait-leaf-expiry",
      "retire-intermediate",
    ]);
    const retire = plan.steps.at(-1)!;
    expect(checkStep(inv0, retire, T + MIN, skew)).toMatchObject({
      ok: false,
      code: "E_RT_PKI_ROTATION_NOT_REISSUED",
    });
    const sibling = await createIntermediateCa(oldRoot, { now: T });
    const reissued = await Promise.all(SERVICES.map((s) => leaf(sibling, s, T + MIN)));
    const inv1 = {
      ...inv0,
      intermediates: [oldInt.certificate, sibling.certificate],
      leaves: [...oldLeaves, ...reissued],
    };
    expect(checkStep(inv1, retire, T + MIN, skew)).toMatchObject({
      ok: false,
      code: "E_RT_PKI_ROTATION_WAIT",
    });
    expect(checkStep(inv1, retire, T + DAY + 5 * MIN, skew)).toEqual({ ok: true });
  });

  it("ignores_leaves_that_chain_to_nothing_in_the_inventory", async () => {
    const stranger = await createRootCa({ trustDomain: TD, now: T });
    const strangerInt = await createIntermediateCa(stranger, { now: T });
    const orphan = await leaf(strangerInt, "orphan", T);
    const inv: PkiInventory = {
      trustDomain: TD,
      bundle: [oldRoot.certificate, newRoot.certificate],
      intermediates: [oldInt.certificate, newInt.certificate],
      leaves: [orphan],
    };
    expect(
      checkStep(
        inv,
        {
          action: "drop-root",
          root: { subject: "", fingerprint: oldRoot.certificate.fingerprint, notAfter: 0 },
        },
        T,
        skew,
      ),
    ).toEqual({ ok: true });
  });
});

describe("expiry warnings", () => {
  it("lists_every_certificate_expiring_within_the_window_soonest_first", () => {
    const inv = { ...initial(), bundle: [oldRoot.certificate, newRoot.certificate] };
    const w = expiryWarnings(inv, 30 * DAY, T);
    expect(w.map((x) => x.kind)).toEqual(["leaf", "leaf", "leaf", "intermediate", "root"]);
    expect(
      w
        .slice(0, 3)
        .map((x) => x.spiffeId)
        .sort(),
    ).toEqual(SERVICES.map(id).sort());
    expect(w[3]).toMatchObject({ fingerprint: oldInt.certificate.fingerprint, expired: false });
    expect(w[3]!.remainingMs).toBe(oldInt.certificate.notAfter - T);
    expect(w[4]).toMatchObject({ fingerprint: oldRoot.certificate.fingerprint, spiffeId: null });
    expect(w.some((x) => x.fingerprint === newRoot.certificate.fingerprint)).toBe(false);
  });

  it("narrows_with_the_window_and_marks_expired_certificates", () => {
    expect(expiryWarnings(initial(), 2 * DAY, T).map((x) => x.kind)).toEqual(["leaf", "leaf", "leaf"]);
    expect(expiryWarnings(initial(), 0, T)).toEqual([]);
    const later = expiryWarnings(initial(), DAY, T + 6 * DAY);
    expect(later.filter((x) => x.expired).map((x) => x.kind)).toEqual([
      "leaf",
      "leaf",
      "leaf",
      "intermediate",
    ]);
    expect(later.every((x) => x.expired === x.remainingMs < 0)).toBe(true);
  });
});

describe("renewal", () => {
  it.each([
    ["renews_a_day_long_leaf_eight_hours_before_expiry", 0, DAY, 8 * HOUR, DAY - 8 * HOUR],
    ["renews_a_ten_second_leaf_half_way", 0, 10_000, 8 * HOUR, 5_000],
    [
      "renews_a_backdated_leaf_by_renew_before_when_shorter_than_half",
      -5 * MIN,
      HOUR,
      10 * MIN,
      HOUR - 10 * MIN,
    ],
  ])("%s", (_claim, notBefore, notAfter, renewBefore, at) => {
    const cert = { notBefore, notAfter };
    expect(renewalTime(cert, renewBefore)).toBe(at);
    expect(needsRenewal(cert, renewBefore, at - 1)).toBe(false);
    expect(needsRenewal(cert, renewBefore, at)).toBe(true);
  });

  it("schedules_an_issued_svid_by_the_policy", async () => {
    const l = await leaf(newInt, "orders", T);
    expect(renewalTime(l, 8 * HOUR)).toBe(T + DAY - 8 * HOUR);
  });
});

describe("a root rotation under real handshakes", () => {
  /** A TLS server and client that both present SVIDs and verify the other with their current bundle. */
  it("never_fails_a_handshake_when_run_in_the_planned_order", async () => {
    const now = Date.now();
    const a = await createRootCa({ trustDomain: TD, now });
    const aInt = await createIntermediateCa(a, { now });
    const b = await createRootCa({ trustDomain: TD, now });
    const bInt = await createIntermediateCa(b, { now });
    const issue = (ca: IssuedCa, sa: string) => new SvidIssuer(ca).issue(id(sa), { ttlMs: HOUR });
    const known = [aInt.certificate, bInt.certificate];
    const state = {
      serverSvid: await issue(aInt, "orders"),
      clientSvid: await issue(aInt, "gateway"),
      serverBundle: new TrustBundle(TD, [a.certificate]),
      clientBundle: new TrustBundle(TD, [a.certificate]),
    };
    const serverCreds = () => ({
      key: state.serverSvid.keyPem!.reveal(),
      cert: state.serverSvid.chainPem,
      ca: state.serverBundle.toPem(),
    });
    const server = tls.createServer({
      ...serverCreds(),
      requestCert: true,
      rejectUnauthorized: true,
      minVersion: "TLSv1.3",
    });
    const refusals: string[] = [];
    server.on("secureConnection", (s) => {
      const v = new SvidVerifier(state.serverBundle, { intermediates: known }).verify(
        [s.getPeerCertificate(true).raw],
        { expect: id("gateway") },
      );
      if (!v.ok) {
        refusals.push(v.code);
        s.destroy();
      } else s.end("ok");
    });
    server.on("tlsClientError", (e) => refusals.push(e.message));
    server.listen(0, "127.0.0.1");
    await once(server, "listening");
    const port = (server.address() as AddressInfo).port;
    const handshake = () =>
      new Promise<string>((resolve) => {
        const c = tls.connect({
          host: "127.0.0.1",
          port,
          key: state.clientSvid.keyPem!.reveal(),
          cert: state.clientSvid.chainPem,
          ca: state.clientBundle.toPem(),
          checkServerIdentity: spiffeServerIdentity(new SvidVerifier(state.clientBundle), id("orders")),
        });
        let data = "";
        c.on("data", (d: Buffer) => (data += d));
        c.on("close", () => resolve(data));
        c.on("error", (e) => resolve(`error: ${(e as { code?: string }).code ?? e.message}`));
      });
    const round = async (stage: string) => {
      const results = await Promise.all([1, 2, 3].map(handshake));
      expect(results, `${stage}: ${refusals.join("; ")}`).toEqual(["ok", "ok", "ok"]);
    };
    try {
      await round("before");
      // 1. both bundles get the new root
      state.serverBundle = state.serverBundle.withRoot(b.certificate);
      state.clientBundle = state.clientBundle.withRoot(b.certificate);
      server.setSecureContext(serverCreds());
      await round("two roots");
      // 2. the server is reissued from the new intermediate; the client still has its old leaf
      state.serverSvid = await issue(bInt, "orders");
      server.setSecureContext(serverCreds());
      await round("server reissued");
      // dropping the old root now (what checkStep refuses) fails the client's handshake:
      const saved = state.serverBundle;
      state.serverBundle = saved.withoutRoot(a.certificate.fingerprint);
      server.setSecureContext(serverCreds());
      expect(await handshake()).not.toBe("ok");
      expect(refusals.length).toBeGreaterThan(0);
      const v = new SvidVerifier(state.serverBundle, { intermediates: known }).verify([state.clientSvid.der]);
      expect(v).toMatchObject({ ok: false, code: "E_RT_PKI_UNTRUSTED_ISSUER" });
      state.serverBundle = saved;
      server.setSecureContext(serverCreds());
      refusals.length = 0;
      await round("old root kept");
      // 3. the client is reissued too
      state.clientSvid = await issue(bInt, "gateway");
      await round("both reissued");
      // 4. after the wait, the old root goes from both bundles
      state.serverBundle = state.serverBundle.withoutRoot(a.certificate.fingerprint);
      state.clientBundle = state.clientBundle.withoutRoot(a.certificate.fingerprint);
      server.setSecureContext(serverCreds());
      await round("old root dropped");
      expect(refusals).toEqual([]);
    } finally {
      await new Promise<void>((r) => server.close(() => r()));
    }
  });
});
