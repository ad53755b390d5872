/**
 * Issuance: what the CA puts in roots, intermediates and SVIDs, checked field by field and by the
 * openssl CLI (`verify -x509_strict`) as the independent verifier — for several trust domains and
 * services, and across a root rotation (a bundle with two roots).
 */
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { checkServerIdentity, type PeerCertificate } from "node:tls";
import { inspect } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { DEFAULTS } from "../../components/spec/defaults.ts";
import { parseDuration } from "../../components/spec/units.ts";
import {
  createIntermediateCa,
  DEFAULT_CA_POLICY,
  importPrivateKey,
  KeyUsageBits,
  loadCertificateAuthority,
  parseCertificate,
  parseCertificates,
  PkiError,
  SvidIssuer,
  toPem,
  TrustBundle,
  validityWindow,
} from "../../runtime/pki/index.ts";
import { makeCa, opensslVerify, OIDS, run, tempDir, writeFiles, type TestCa } from "./support.ts";

let tmp: Awaited<ReturnType<typeof tempDir>>;
const cas: Record<string, TestCa> = {};
const TRUST_DOMAINS = ["shop.example", "payments.internal", "a-b_c.d0"];

beforeAll(async () => {
  tmp = await tempDir("pki-issue");
  for (const td of TRUST_DOMAINS) cas[td] = await makeCa(td);
});
afterAll(async () => {
  await tmp.cleanup();
});

describe("openssl verify -x509_strict", () => {
  const cases = TRUST_DOMAINS.flatMap((td) =>
    [
      ["default", "orders"],
      ["shop", "payments"],
      ["kube-system", "gateway"],
    ].map(([ns, sa]) => [td, ns!, sa!] as const),
  );

  it.each(cases)("accepts_the_chain_of_%s_ns_%s_sa_%s", async (td, ns, sa) => {
    const ca = cas[td]!;
    const svid = await ca.issuer.issue(`spiffe://${td}/ns/${ns}/sa/${sa}`);
    const files = await writeFiles(tmp.dir, {
      [`${td}-root.pem`]: toPem(ca.root.certificate.der, "CERTIFICATE"),
      [`${td}-intermediate.pem`]: toPem(ca.intermediate.certificate.der, "CERTIFICATE"),
      [`${td}-${ns}-${sa}.pem`]: svid.certPem,
    });
    const r = await opensslVerify(
      files[`${td}-root.pem`]!,
      files[`${td}-intermediate.pem`]!,
      files[`${td}-${ns}-${sa}.pem`]!,
    );
    expect(r.output).toContain(": OK");
    expect(r.ok).toBe(true);
  });

  it("accepts_the_intermediate_itself_against_the_root", async () => {
    const ca = cas["shop.example"]!;
    const files = await writeFiles(tmp.dir, {
      "r.pem": toPem(ca.root.certificate.der, "CERTIFICATE"),
      "i.pem": toPem(ca.intermediate.certificate.der, "CERTIFICATE"),
    });
    expect((await opensslVerify(files["r.pem"]!, null, files["i.pem"]!)).ok).toBe(true);
  });

  it("accepts_leaves_of_both_roots_with_a_two_root_bundle_after_rotation", async () => {
    const old = cas["shop.example"]!;
    const next = await makeCa("shop.example");
    const bundle = old.bundle.withRoot(next.root.certificate);
    expect(bundle.roots).toHaveLength(2);
    const oldLeaf = await old.issuer.issue("spiffe://shop.example/ns/shop/sa/orders");
    const newLeaf = await next.issuer.issue("spiffe://shop.example/ns/shop/sa/orders");
    const files = await writeFiles(tmp.dir, {
      "bundle2.pem": bundle.toPem(),
      "intermediates2.pem":
        toPem(old.intermediate.certificate.der, "CERTIFICATE") +
        toPem(next.intermediate.certificate.der, "CERTIFICATE"),
      "old-leaf.pem": oldLeaf.certPem,
      "new-leaf.pem": newLeaf.certPem,
      "new-root-only.pem": toPem(next.root.certificate.der, "CERTIFICATE"),
    });
    for (const leaf of ["old-leaf.pem", "new-leaf.pem"])
      expect(
        (await opensslVerify(files["bundle2.pem"]!, files["intermediates2.pem"]!, files[leaf]!)).ok,
      ).toBe(true);
    // and after the old root is dropped, only the reissued leaf still verifies
    expect(
      (await opensslVerify(files["new-root-only.pem"]!, files["intermediates2.pem"]!, files["new-leaf.pem"]!))
        .ok,
    ).toBe(true);
    expect(
      (await opensslVerify(files["new-root-only.pem"]!, files["intermediates2.pem"]!, files["old-leaf.pem"]!))
        .ok,
    ).toBe(false);
    // our verifier agrees with openssl on both bundles
    const { SvidVerifier } = await import("../../runtime/pki/index.ts");
    expect(new SvidVerifier(bundle).verify([oldLeaf.der, ...oldLeaf.chainDer]).ok).toBe(true);
    expect(new SvidVerifier(bundle).verify([newLeaf.der, ...newLeaf.chainDer]).ok).toBe(true);
    const after = bundle.withoutRoot(old.root.certificate.fingerprint);
    expect(new SvidVerifier(after).verify([oldLeaf.der, ...oldLeaf.chainDer])).toMatchObject({
      ok: false,
      code: "E_RT_PKI_UNTRUSTED_ISSUER",
    });
  });
});

describe("certificate contents", () => {
  it("issues_leaves_with_exactly_the_svid_profile", async () => {
    const ca = cas["shop.example"]!;
    const svid = await ca.issuer.issue("spiffe://shop.example/ns/shop/sa/orders");
    const leaf = parseCertificate(svid.der);
    expect(leaf.uris).toEqual(["spiffe://shop.example/ns/shop/sa/orders"]);
    expect(leaf.basicConstraints).toEqual({ ca: false, pathLength: undefined, critical: true });
    expect(leaf.keyUsage).toEqual({ flags: KeyUsageBits.digitalSignature, critical: true });
    expect(leaf.extKeyUsage).toEqual([OIDS.serverAuth, OIDS.clientAuth]);
    expect(leaf.subjectKeyId).toMatch(/^[0-9a-f]{40}$/);
    expect(leaf.authorityKeyId).toBe(ca.intermediate.certificate.subjectKeyId);
    expect(leaf.unknownCritical).toEqual([]);
    expect(leaf.native.publicKey.asymmetricKeyDetails?.namedCurve).toBe("prime256v1");
    expect(leaf.cert.signatureAlgorithm).toMatchObject({ name: "ECDSA", hash: { name: "SHA-256" } });
  });

  it("puts_no_common_name_in_the_leaf_subject_for_hostname_checks_to_fall_back_on", async () => {
    const svid = await cas["shop.example"]!.issuer.issue("spiffe://shop.example/ns/shop/sa/orders");
    const leaf = parseCertificate(svid.der);
    expect(leaf.subject).toBe("O=shop.example");
    const peer = { subject: { O: "shop.example" }, subjectaltname: `URI:${leaf.uris[0]}` };
    expect(checkServerIdentity("orders", peer as unknown as PeerCertificate)).toBeInstanceOf(Error);
  });

  it("issues_cas_with_ca_true_cert_sign_and_path_lengths", () => {
    const ca = cas["shop.example"]!;
    const root = ca.root.certificate;
    const int = ca.intermediate.certificate;
    expect(root.basicConstraints).toEqual({ ca: true, pathLength: 1, critical: true });
    expect(int.basicConstraints).toEqual({ ca: true, pathLength: 0, critical: true });
    for (const c of [root, int]) {
      expect(c.keyUsage).toEqual({ flags: KeyUsageBits.keyCertSign | KeyUsageBits.cRLSign, critical: true });
      expect(c.uris).toEqual(["spiffe://shop.example"]);
      expect(c.subjectKeyId).toMatch(/^[0-9a-f]{40}$/);
    }
    expect(int.authorityKeyId).toBe(root.subjectKeyId);
    expect(root.subjectName).toBe(root.issuerName);
  });

  it("gives_every_certificate_a_random_positive_128_bit_serial", async () => {
    const ca = cas["payments.internal"]!;
    const serials = new Set<string>();
    for (let i = 0; i < 20; i++) {
      const s = await ca.issuer.issue("spiffe://payments.internal/ns/p/sa/ledger");
      const parsed = parseCertificate(s.der);
      expect(parsed.serial).toMatch(/^[89a-f][0-9a-f]{31}$/); // 128 bits, top bit set, encoded positive
      expect(parsed.serial).toBe(s.serial);
      serials.add(parsed.serial);
    }
    expect(serials.size).toBe(20);
    // DER: Certificate SEQ, TBS SEQ, [0] version, then INTEGER of 17 octets: 00 || 16 bytes with the top bit set
    const s = await ca.issuer.issue("spiffe://payments.internal/ns/p/sa/ledger");
    expect([...s.der.subarray(8, 16)]).toEqual([0xa0, 0x03, 0x02, 0x01, 0x02, 0x02, 0x11, 0x00]);
    expect(s.der[16]! & 0x80).toBe(0x80);
  });

  it("round_trips_pem_der_and_pkcs8_keys", async () => {
    const ca = cas["shop.example"]!;
    const svid = await ca.issuer.issue("spiffe://shop.example/ns/shop/sa/orders");
    const chain = parseCertificates(svid.chainPem);
    expect(chain.map((c) => c.fingerprint)).toEqual([
      parseCertificate(svid.der).fingerprint,
      ca.intermediate.certificate.fingerprint,
    ]);
    expect(parseCertificates(svid.der)[0]!.fingerprint).toBe(chain[0]!.fingerprint);
    expect(svid.keyPem!.reveal()).toMatch(
      /^-----BEGIN PRIVATE KEY-----\n[A-Za-z0-9+/=\n]+-----END PRIVATE KEY-----\n$/,
    );
    await expect(importPrivateKey(svid.keyPem!.reveal(), chain[0]!)).resolves.toBeDefined();
    const loaded = await loadCertificateAuthority({
      certPem: toPem(ca.intermediate.certificate.der, "CERTIFICATE"),
      keyPem: ca.intermediate.keyPem.reveal(),
    });
    expect(loaded.trustDomain).toBe("shop.example");
    expect(loaded.presentedChain.map((c) => c.fingerprint)).toEqual([
      ca.intermediate.certificate.fingerprint,
    ]);
    const again = await new SvidIssuer(loaded).issue("spiffe://shop.example/ns/shop/sa/users");
    expect(ca.verifier.verify([again.der, ...again.chainDer]).ok).toBe(true);
  });

  it("refuses_a_key_that_is_not_the_certificates", async () => {
    const ca = cas["shop.example"]!;
    await expect(
      loadCertificateAuthority({
        certPem: toPem(ca.intermediate.certificate.der, "CERTIFICATE"),
        keyPem: ca.root.keyPem.reveal(),
      }),
    ).rejects.toMatchObject({ code: "E_RT_PKI_KEY_MISMATCH" });
  });

  it("refuses_to_issue_from_a_leaf", async () => {
    const ca = cas["shop.example"]!;
    const svid = await ca.issuer.issue("spiffe://shop.example/ns/shop/sa/orders");
    await expect(
      loadCertificateAuthority({ certPem: svid.certPem, keyPem: svid.keyPem!.reveal() }),
    ).rejects.toMatchObject({ code: "E_RT_PKI_NOT_A_CA" });
  });

  it.each([
    ["refuses_an_invalid_spiffe_id", "spiffe://shop.example/ns/../sa/x", "E_RT_PKI_INVALID_ID"],
    ["refuses_a_trust_domain_id_as_workload", "spiffe://shop.example", "E_RT_PKI_INVALID_ID"],
    [
      "refuses_an_id_of_another_trust_domain",
      "spiffe://other.example/ns/a/sa/b",
      "E_RT_PKI_TRUST_DOMAIN_MISMATCH",
    ],
  ])("%s", async (_claim, id, code) => {
    await expect(cas["shop.example"]!.issuer.issue(id)).rejects.toMatchObject({ code });
  });

  it("adds_dns_sans_next_to_the_single_uri_san_on_request", async () => {
    const ca = cas["shop.example"]!;
    const svid = await ca.issuer.issue("spiffe://shop.example/ns/shop/sa/orders", {
      dnsNames: ["localhost", "orders.shop"],
    });
    const leaf = parseCertificate(svid.der);
    expect(leaf.uris).toHaveLength(1);
    expect(leaf.dnsNames).toEqual(["localhost", "orders.shop"]);
    await expect(
      ca.issuer.issue("spiffe://shop.example/ns/shop/sa/orders", { dnsNames: ["bad name"] }),
    ).rejects.toMatchObject({
      code: "E_RT_PKI_INVALID_ID",
    });
  });

  it("issues_for_a_public_key_the_workload_keeps", async () => {
    const ca = cas["shop.example"]!;
    const { generateKeyPair } = await import("../../runtime/pki/index.ts");
    const keys = await generateKeyPair();
    const svid = await ca.issuer.issue("spiffe://shop.example/ns/shop/sa/orders", {
      publicKey: keys.publicKey,
    });
    expect(svid.keyPem).toBeNull();
    expect(svid.privateKey).toBeNull();
    expect(ca.verifier.verify([svid.der, ...svid.chainDer]).ok).toBe(true);
  });
});

describe("lifetimes", () => {
  const HOUR = 3_600_000;

  it("backdates_not_before_by_the_clock_skew_and_sets_the_ttl", async () => {
    const now = Date.UTC(2030, 0, 1, 12, 0, 0);
    const ca = await makeCa("life.example", { now: now - 1000 * HOUR, skewMs: 5 * 60_000 });
    const svid = await ca.issuer.issue("spiffe://life.example/ns/a/sa/b", {
      now,
      ttlMs: 24 * HOUR,
      clockSkewMs: 5 * 60_000,
    });
    const leaf = parseCertificate(svid.der);
    expect(leaf.notBefore).toBe(now - 5 * 60_000);
    expect(leaf.notAfter).toBe(now + 24 * HOUR);
    expect(svid.clamped).toBe(false);
  });

  it("clamps_a_leaf_to_its_intermediates_not_after", async () => {
    const now = Date.UTC(2030, 0, 1);
    const root = await makeCa("clamp.example", { now });
    const shortInt = await createIntermediateCa(root.root, { now, validityMs: 2 * HOUR });
    const svid = await new SvidIssuer(shortInt).issue("spiffe://clamp.example/ns/a/sa/b", {
      now,
      ttlMs: 24 * HOUR,
    });
    expect(svid.clamped).toBe(true);
    expect(svid.notAfter).toBe(shortInt.certificate.notAfter);
    expect(parseCertificate(svid.der).notAfter).toBe(shortInt.certificate.notAfter);
  });

  it("clamps_an_intermediate_to_its_roots_not_after", async () => {
    const now = Date.UTC(2030, 0, 1);
    const { createRootCa } = await import("../../runtime/pki/index.ts");
    const root = await createRootCa({ trustDomain: "clamp.example", now, validityMs: 30 * 24 * HOUR });
    const int = await createIntermediateCa(root, { now, validityMs: 365 * 24 * HOUR });
    expect(int.clamped).toBe(true);
    expect(int.certificate.notAfter).toBe(root.certificate.notAfter);
  });

  it("never_backdates_a_child_before_its_issuer", () => {
    const w = validityWindow(HOUR, 10 * 60_000, 1_000_000_000_000, {
      notBefore: 1_000_000_000_000 - 60_000,
      notAfter: 1_000_000_000_000 + 10 * HOUR,
      subject: "CN=x",
    });
    expect(w.notBefore).toBe(1_000_000_000_000 - 60_000);
  });

  it.each([
    ["refuses_a_zero_ttl", 0, 0],
    ["refuses_a_negative_ttl", -5, 0],
    ["refuses_a_negative_skew", HOUR, -1],
    ["refuses_a_non_finite_ttl", Infinity, 0],
    // Past 9999-12-31 no certificate can be encoded (it used to fail as "not a DER X.509 certificate").
    ["refuses_a_ttl_that_ends_after_the_year_9999", 9000 * 365 * 24 * HOUR, 0],
  ])("%s", (_claim, ttl, skew) => {
    expect(() => validityWindow(ttl, skew, Date.now())).toThrow(PkiError);
  });

  it("refuses_a_ttl_that_rounds_down_to_a_certificate_already_expired", () => {
    // X.509 has whole seconds: 300 ms from xx.200 s would end at xx.000 s, before the issuance
    expect(() => validityWindow(300, 0, 1_000_000_000_200)).toThrow(/one-second resolution/);
    expect(validityWindow(300, 0, 1_000_000_000_800).notAfter).toBe(1_000_000_001_000);
  });

  it("refuses_to_issue_from_an_expired_intermediate", async () => {
    const ca = cas["shop.example"]!;
    await expect(
      ca.issuer.issue("spiffe://shop.example/ns/a/sa/b", {
        now: ca.intermediate.certificate.notAfter + 1000,
      }),
    ).rejects.toMatchObject({ code: "E_RT_PKI_LIFETIME" });
  });

  it("uses_the_spec_defaults_as_its_default_policy", () => {
    expect(DEFAULT_CA_POLICY).toEqual({
      rootValidityMs: parseDuration(DEFAULTS["mesh.ca.rootValidity"].value as string),
      intermediateValidityMs: parseDuration(DEFAULTS["mesh.ca.intermediateValidity"].value as string),
      workloadTtlMs: parseDuration(DEFAULTS["mesh.ca.workloadTtl"].value as string),
      renewBeforeMs: parseDuration(DEFAULTS["mesh.ca.renewBefore"].value as string),
      clockSkewMs: parseDuration(DEFAULTS["mesh.ca.clockSkew"].value as string),
    });
  });
});

describe("trust bundles", () => {
  it("holds_several_roots_and_serializes_them_as_one_pem", async () => {
    const a = cas["shop.example"]!;
    const b = await makeCa("shop.example");
    const bundle = a.bundle.withRoot(b.root.certificate).withRoot(b.root.certificate);
    expect(bundle.roots).toHaveLength(2);
    const back = TrustBundle.fromPem("shop.example", bundle.toPem());
    expect(back.roots.map((r) => r.fingerprint)).toEqual(bundle.roots.map((r) => r.fingerprint));
    expect(bundle.withoutRoot(a.root.certificate.fingerprint).roots.map((r) => r.fingerprint)).toEqual([
      b.root.certificate.fingerprint,
    ]);
  });

  it.each([
    ["refuses_an_intermediate_as_root", "intermediate", "shop.example", "E_RT_PKI_NOT_A_CA"],
    ["refuses_a_root_of_another_trust_domain", "root", "payments.internal", "E_RT_PKI_TRUST_DOMAIN_MISMATCH"],
  ])("%s", (_claim, which, td, code) => {
    const ca = cas["shop.example"]!;
    const cert = which === "root" ? ca.root.certificate : ca.intermediate.certificate;
    expect(() => new TrustBundle(td, [cert])).toThrow(expect.objectContaining({ code }));
  });

  // RFC 5280 §4.2.1.3: a CA MUST include key usage. `openssl req -x509` makes a CA without it (its
  // default v3_ca section leaves keyUsage out), which openssl -x509_strict then refuses as an issuer.
  it("refuses_a_root_without_a_key_usage_extension", async () => {
    const tmp = await tempDir("pki-no-ku");
    try {
      const [key, crt] = [join(tmp.dir, "k.pem"), join(tmp.dir, "c.pem")];
      await run("openssl", ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", key, "-out", crt, "-subj", "/CN=no key usage", "-days", "1",
        "-addext", "subjectAltName=URI:spiffe://shop.example"]); // prettier-ignore
      const [cert] = parseCertificates(await readFile(crt, "utf8"));
      expect(cert!.keyUsage).toBeNull();
      expect(() => new TrustBundle("shop.example", [cert!])).toThrow(
        expect.objectContaining({ code: "E_RT_PKI_NOT_A_CA" }),
      );
    } finally {
      await tmp.cleanup();
    }
  });
});

describe("private keys", () => {
  it("never_print_themselves", async () => {
    const svid = await cas["shop.example"]!.issuer.issue("spiffe://shop.example/ns/a/sa/b");
    const pem = svid.keyPem!.reveal();
    const body = pem.split("\n")[1]!;
    for (const shown of [
      String(svid.keyPem),
      JSON.stringify(svid),
      inspect(svid, { depth: 5 }),
      `${svid.keyPem}`,
    ]) {
      expect(shown).not.toContain("PRIVATE KEY");
      expect(shown).not.toContain(body);
    }
    expect(JSON.stringify(svid)).toContain('"keyPem":"[private key]"');
  });
});
