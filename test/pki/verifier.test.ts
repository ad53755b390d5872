/**
 * The X.509-SVID verifier: one malformed-SVID fixture per rule of the SPIFFE standards (built with
 * @peculiar/x509 like the real issuer, and a few with `openssl req -addext`), each refused with its own
 * reason code; valid chains accepted; the bundle chosen by the SAN's trust domain; the cache.
 */
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  KeyUsageBits,
  parseSpiffeId,
  SvidVerifier,
  toPem,
  type PkiErrorCode,
  type VerifyOptions,
} from "../../runtime/pki/index.ts";
import { x509 } from "../../runtime/pki/x509.ts";
import {
  breakSignature,
  forge,
  forgeCa,
  makeCa,
  OIDS,
  opensslVerify,
  run,
  tempDir,
  type TestCa,
} from "./support.ts";

const TD = "td.example";
const ID = `spiffe://${TD}/ns/default/sa/orders`;
let main: TestCa;
let foreign: TestCa;
let rogue: TestCa;
let tmp: Awaited<ReturnType<typeof tempDir>>;

beforeAll(async () => {
  tmp = await tempDir("pki-verify");
  [main, foreign, rogue] = await Promise.all([makeCa(TD), makeCa("other.example"), makeCa(TD)]);
  await writeFile(join(tmp.dir, "min.cnf"), "[req]\ndistinguished_name=dn\n[dn]\n");
  await writeFile(join(tmp.dir, "int.pem"), toPem(main.intermediate.certificate.der, "CERTIFICATE"));
  await writeFile(join(tmp.dir, "int-key.pem"), main.intermediate.keyPem.reveal(), { mode: 0o600 });
  await writeFile(join(tmp.dir, "root.pem"), toPem(main.root.certificate.der, "CERTIFICATE"));
});
afterAll(async () => {
  await tmp.cleanup();
});

const HOUR = 3_600_000;
const int = () => main.intermediate.certificate.der;
const leafChain = async (spec: Parameters<typeof forge>[1]) => [
  (await forge(main.intermediate, spec)).der,
  int(),
];

let opensslCount = 0;
/** A leaf made by `openssl req -x509 -CA` from the main intermediate, with exactly these extensions. */
async function opensslLeaf(extensions: string[]): Promise<Buffer[]> {
  const n = ++opensslCount;
  const key = join(tmp.dir, `k${n}.pem`);
  const out = join(tmp.dir, `f${n}.pem`);
  await run("openssl", ["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", key]);
  await run("openssl", [
    "req", "-x509", "-new", "-key", key, "-subj", "/CN=openssl-fixture", "-days", "1", "-sha256",
    "-CA", join(tmp.dir, "int.pem"), "-CAkey", join(tmp.dir, "int-key.pem"), "-config", join(tmp.dir, "min.cnf"),
    "-addext", "subjectKeyIdentifier=hash", "-addext", "authorityKeyIdentifier=keyid:always",
    ...extensions.flatMap((e) => ["-addext", e]),
    "-out", out,
  ]); // prettier-ignore
  const { parseCertificate } = await import("../../runtime/pki/index.ts");
  const { readFile } = await import("node:fs/promises");
  return [parseCertificate(await readFile(out, "utf8")).der, int()];
}

const SVID_EXTS = [
  "basicConstraints=critical,CA:FALSE",
  "keyUsage=critical,digitalSignature",
  "extendedKeyUsage=serverAuth,clientAuth",
];
const san = (...uris: string[]) => `subjectAltName=${uris.map((u) => `URI:${u}`).join(",")}`;

type Fixture = [
  claim: string,
  build: () => Promise<{ chain: Buffer[]; options?: VerifyOptions }>,
  code: PkiErrorCode,
];
const chain = (p: Promise<Buffer[]>, options?: VerifyOptions) =>
  p.then((c) => ({ chain: c, ...(options ? { options } : {}) }));

const FIXTURES: Fixture[] = [
  ["rejects_no_certificate", async () => ({ chain: [] }), "E_RT_PKI_NO_CERTIFICATE"],
  ["rejects_bytes_that_are_not_der", async () => ({ chain: [Buffer.from("not a certificate")] }), "E_RT_PKI_MALFORMED_CERTIFICATE"],
  ["rejects_a_chain_of_nine_certificates", () => chain(leafChain({ uris: [ID] }).then((c) => [c[0]!, ...Array(8).fill(int())])), "E_RT_PKI_CHAIN_TOO_LONG"],
  ["rejects_zero_uri_sans", () => chain(leafChain({ uris: [], dns: ["orders.td.example"] })), "E_RT_PKI_URI_SAN_MISSING"],
  ["rejects_two_uri_sans", () => chain(leafChain({ uris: [ID, `spiffe://${TD}/ns/default/sa/admin`] })), "E_RT_PKI_URI_SAN_MULTIPLE"],
  ["rejects_two_uri_sans_made_by_openssl", () => chain(opensslLeaf([san(ID, `spiffe://${TD}/ns/x/sa/y`), ...SVID_EXTS])), "E_RT_PKI_URI_SAN_MULTIPLE"],
  ["rejects_the_https_scheme", () => chain(leafChain({ uris: [`https://${TD}/ns/default/sa/orders`] })), "E_RT_PKI_ID_SCHEME"],
  ["rejects_an_uppercase_scheme", () => chain(leafChain({ uris: [`SPIFFE://${TD}/ns/default/sa/orders`] })), "E_RT_PKI_ID_SCHEME"],
  ["rejects_an_uppercase_trust_domain", () => chain(leafChain({ uris: ["spiffe://TD.example/ns/default/sa/orders"] })), "E_RT_PKI_ID_TRUST_DOMAIN_CHARS"],
  ["rejects_a_percent_encoded_trust_domain", () => chain(leafChain({ uris: ["spiffe://td%2eexample/ns/a/sa/b"] })), "E_RT_PKI_ID_TRUST_DOMAIN_CHARS"],
  ["rejects_an_empty_trust_domain", () => chain(leafChain({ uris: ["spiffe:///ns/default/sa/orders"] })), "E_RT_PKI_ID_TRUST_DOMAIN_MISSING"],
  ["rejects_a_trust_domain_over_255_bytes", () => chain(leafChain({ uris: [`spiffe://${"a".repeat(256)}/ns/a/sa/b`] })), "E_RT_PKI_ID_TRUST_DOMAIN_TOO_LONG"],
  ["rejects_a_dot_dot_segment", () => chain(leafChain({ uris: [`spiffe://${TD}/ns/../sa/admin`] })), "E_RT_PKI_ID_DOT_SEGMENT"],
  ["rejects_a_dot_segment", () => chain(leafChain({ uris: [`spiffe://${TD}/ns/./sa/orders`] })), "E_RT_PKI_ID_DOT_SEGMENT"],
  ["rejects_an_empty_segment", () => chain(leafChain({ uris: [`spiffe://${TD}/ns//sa/orders`] })), "E_RT_PKI_ID_EMPTY_SEGMENT"],
  ["rejects_a_trailing_slash", () => chain(leafChain({ uris: [`spiffe://${TD}/ns/default/sa/orders/`] })), "E_RT_PKI_ID_EMPTY_SEGMENT"],
  ["rejects_a_percent_encoded_dot_dot_segment", () => chain(leafChain({ uris: [`spiffe://${TD}/ns/%2e%2e/sa/admin`] })), "E_RT_PKI_ID_PERCENT_ENCODED"],
  ["rejects_a_percent_encoded_slash", () => chain(leafChain({ uris: [`spiffe://${TD}/ns/a%2Fb/sa/c`] })), "E_RT_PKI_ID_PERCENT_ENCODED"],
  ["rejects_a_space_in_a_path_segment", () => chain(leafChain({ uris: [`spiffe://${TD}/ns/a b/sa/c`] })), "E_RT_PKI_ID_PATH_CHARS"],
  ["rejects_a_query", () => chain(leafChain({ uris: [`${ID}?admin=1`] })), "E_RT_PKI_ID_QUERY"],
  ["rejects_a_fragment", () => chain(leafChain({ uris: [`${ID}#frag`] })), "E_RT_PKI_ID_FRAGMENT"],
  ["rejects_a_port", () => chain(leafChain({ uris: [`spiffe://${TD}:8443/ns/default/sa/orders`] })), "E_RT_PKI_ID_PORT"],
  ["rejects_userinfo_made_by_openssl", () => chain(opensslLeaf([san(`spiffe://admin@${TD}/ns/default/sa/orders`), ...SVID_EXTS])), "E_RT_PKI_ID_USERINFO"],
  ["rejects_a_root_path_id", () => chain(leafChain({ uris: [`spiffe://${TD}`] })), "E_RT_PKI_ID_ROOT_PATH"],
  ["rejects_an_id_over_2048_bytes", () => chain(leafChain({ uris: [`spiffe://${TD}/${"a".repeat(2040)}`] })), "E_RT_PKI_ID_TOO_LONG"],
  ["rejects_a_ca_true_leaf", () => chain(leafChain({ uris: [ID], ca: true })), "E_RT_PKI_LEAF_IS_CA"],
  ["rejects_the_intermediate_presented_as_the_leaf", async () => ({ chain: [int(), main.root.certificate.der] }), "E_RT_PKI_LEAF_IS_CA"],
  ["rejects_a_key_cert_sign_leaf", () => chain(leafChain({ uris: [ID], keyUsage: KeyUsageBits.digitalSignature | KeyUsageBits.keyCertSign })), "E_RT_PKI_KEY_USAGE_CERT_SIGN"],
  ["rejects_a_crl_sign_leaf", () => chain(leafChain({ uris: [ID], keyUsage: KeyUsageBits.digitalSignature | KeyUsageBits.cRLSign })), "E_RT_PKI_KEY_USAGE_CERT_SIGN"],
  ["rejects_a_missing_key_usage", () => chain(leafChain({ uris: [ID], keyUsage: null })), "E_RT_PKI_KEY_USAGE_MISSING"],
  ["rejects_a_non_critical_key_usage", () => chain(leafChain({ uris: [ID], keyUsageCritical: false })), "E_RT_PKI_KEY_USAGE_NOT_CRITICAL"],
  ["rejects_a_non_critical_key_usage_made_by_openssl", () => chain(opensslLeaf([san(ID), "basicConstraints=critical,CA:FALSE", "keyUsage=digitalSignature", "extendedKeyUsage=serverAuth,clientAuth"])), "E_RT_PKI_KEY_USAGE_NOT_CRITICAL"],
  ["rejects_a_key_usage_without_digital_signature", () => chain(leafChain({ uris: [ID], keyUsage: KeyUsageBits.keyEncipherment })), "E_RT_PKI_KEY_USAGE_NO_DIGITAL_SIGNATURE"],
  ["rejects_an_eku_with_server_auth_only", () => chain(leafChain({ uris: [ID], eku: [OIDS.serverAuth] })), "E_RT_PKI_EKU_MISMATCH"],
  ["rejects_an_eku_with_client_auth_only", () => chain(leafChain({ uris: [ID], eku: [OIDS.clientAuth] })), "E_RT_PKI_EKU_MISMATCH"],
  ["rejects_a_code_signing_eku_made_by_openssl", () => chain(opensslLeaf([san(ID), "basicConstraints=critical,CA:FALSE", "keyUsage=critical,digitalSignature", "extendedKeyUsage=codeSigning"])), "E_RT_PKI_EKU_MISMATCH"],
  ["rejects_an_unknown_critical_extension", () => chain(leafChain({ uris: [ID], extraExtensions: [new x509.Extension("1.3.6.1.4.1.99999.1", true, new Uint8Array([5, 0]))] })), "E_RT_PKI_CRITICAL_EXTENSION_UNKNOWN"],
  ["rejects_a_repeated_san_extension", () => chain(leafChain({ uris: [ID], extraExtensions: [new x509.SubjectAlternativeNameExtension([{ type: "url", value: `spiffe://${TD}/ns/x/sa/admin` }])] })), "E_RT_PKI_MALFORMED_CERTIFICATE"],
  ["rejects_an_expired_leaf", () => chain(leafChain({ uris: [ID], notBefore: Date.now() - 2 * HOUR, notAfter: Date.now() - HOUR })), "E_RT_PKI_EXPIRED"],
  ["rejects_a_not_yet_valid_leaf", () => chain(leafChain({ uris: [ID], notBefore: Date.now() + HOUR, notAfter: Date.now() + 2 * HOUR })), "E_RT_PKI_NOT_YET_VALID"],
  [
    "rejects_a_valid_leaf_under_an_expired_intermediate",
    async () => {
      const old = await forgeCa(main.root, { trustDomain: TD, notBefore: Date.now() - 3 * HOUR, notAfter: Date.now() - HOUR });
      return { chain: [(await forge(old, { uris: [ID], notBefore: Date.now() - 2 * HOUR })).der, old.der] };
    },
    "E_RT_PKI_EXPIRED",
  ],
  ["rejects_a_foreign_trust_domain", async () => chain(Promise.resolve([(await forge(foreign.intermediate, { uris: ["spiffe://other.example/ns/a/sa/b"] })).der, foreign.intermediate.certificate.der])), "E_RT_PKI_UNKNOWN_TRUST_DOMAIN"],
  ["rejects_a_leaf_signed_by_an_untrusted_ca_of_the_same_trust_domain", async () => chain(Promise.resolve([(await forge(rogue.intermediate, { uris: [ID] })).der, rogue.intermediate.certificate.der])), "E_RT_PKI_UNTRUSTED_ISSUER"],
  ["rejects_a_leaf_presented_without_its_intermediate", async () => ({ chain: [(await forge(main.intermediate, { uris: [ID] })).der] }), "E_RT_PKI_UNTRUSTED_ISSUER"],
  ["rejects_a_broken_signature", async () => ({ chain: [breakSignature((await forge(main.intermediate, { uris: [ID] })).der), int()] }), "E_RT_PKI_BAD_SIGNATURE"],
  ["rejects_a_leaf_signed_with_another_key_under_the_issuers_name", () => chain(leafChain({ uris: [ID], signingKey: rogue.intermediate.privateKey })), "E_RT_PKI_BAD_SIGNATURE"],
  [
    "rejects_an_issuer_that_is_not_a_ca",
    async () => {
      const fake = await forgeCa(main.root, { trustDomain: TD, ca: false });
      return { chain: [(await forge(fake, { uris: [ID] })).der, fake.der] };
    },
    "E_RT_PKI_ISSUER_NOT_CA",
  ],
  [
    "rejects_an_issuer_without_key_cert_sign",
    async () => {
      const fake = await forgeCa(main.root, { trustDomain: TD, keyUsage: KeyUsageBits.digitalSignature });
      return { chain: [(await forge(fake, { uris: [ID] })).der, fake.der] };
    },
    "E_RT_PKI_ISSUER_NOT_CA",
  ],
  [
    // RFC 5280 §4.2.1.3 (a CA MUST include key usage); openssl -x509_strict refuses it too.
    "rejects_an_issuer_without_a_key_usage_extension",
    async () => {
      const fake = await forgeCa(main.root, { trustDomain: TD, keyUsage: null });
      return { chain: [(await forge(fake, { uris: [ID] })).der, fake.der] };
    },
    "E_RT_PKI_ISSUER_NOT_CA",
  ],
  [
    "rejects_a_chain_beyond_the_intermediates_path_length",
    async () => {
      const sub = await forgeCa(main.intermediate, { trustDomain: TD });
      return { chain: [(await forge(sub, { uris: [ID] })).der, sub.der, int()] };
    },
    "E_RT_PKI_PATH_LENGTH",
  ],
  ["rejects_a_valid_svid_of_an_unexpected_peer", () => chain(leafChain({ uris: [ID] }), { expect: `spiffe://${TD}/ns/default/sa/payments` }), "E_RT_PKI_UNEXPECTED_PEER"],
  ["rejects_a_valid_svid_outside_an_expected_set", () => chain(leafChain({ uris: [ID] }), { expect: new Set([`spiffe://${TD}/ns/a/sa/b`, `spiffe://${TD}/ns/c/sa/d`]) }), "E_RT_PKI_UNEXPECTED_PEER"],
]; // prettier-ignore

describe("malformed X.509-SVIDs", () => {
  it("has_at_least_25_fixtures_with_distinct_claims", () => {
    expect(FIXTURES.length).toBeGreaterThanOrEqual(25);
    expect(new Set(FIXTURES.map(([c]) => c)).size).toBe(FIXTURES.length);
  });

  it.each(FIXTURES)("%s", async (_claim, build, code) => {
    const { chain, options } = await build();
    const verdict = main.verifier.verify(chain, options);
    expect(verdict).toMatchObject({ ok: false, code });
    if (!verdict.ok) expect(verdict.reason.length).toBeGreaterThan(10);
  });

  it("accepts_the_same_forge_without_a_flaw", async () => {
    // the positive control: every fixture above is this certificate plus one flaw
    const verdict = main.verifier.verify(await leafChain({ uris: [ID] }));
    expect(verdict).toMatchObject({ ok: true, spiffeId: ID });
  });

  it("accepts_a_correct_leaf_made_by_openssl", async () => {
    expect(main.verifier.verify(await opensslLeaf([san(ID), ...SVID_EXTS]))).toMatchObject({
      ok: true,
      spiffeId: ID,
    });
  });

  it.each([
    ["two_uri_sans", [san(ID, `spiffe://${TD}/ns/x/sa/y`), ...SVID_EXTS], "E_RT_PKI_URI_SAN_MULTIPLE"],
    ["userinfo", [san(`spiffe://admin@${TD}/ns/a/sa/b`), ...SVID_EXTS], "E_RT_PKI_ID_USERINFO"],
    ["dot_dot_path", [san(`spiffe://${TD}/ns/../sa/admin`), ...SVID_EXTS], "E_RT_PKI_ID_DOT_SEGMENT"],
  ])("openssl_x509_strict_accepts_the_%s_leaf_that_the_verifier_refuses", async (_name, exts, code) => {
    const [leaf] = await opensslLeaf(exts as string[]);
    const path = join(tmp.dir, `strict-${code}.pem`);
    await writeFile(path, toPem(leaf!, "CERTIFICATE"));
    expect((await opensslVerify(join(tmp.dir, "root.pem"), join(tmp.dir, "int.pem"), path)).ok).toBe(true);
    expect(main.verifier.verify([leaf!, int()])).toMatchObject({ ok: false, code });
  });
});

describe("valid chains", () => {
  it("accepts_an_issued_svid_and_returns_its_identity", async () => {
    const svid = await main.issuer.issue(ID);
    const v = main.verifier.verify([svid.der, ...svid.chainDer]);
    expect(v).toEqual({
      ok: true,
      spiffeId: ID,
      trustDomain: TD,
      path: "/ns/default/sa/orders",
      notBefore: svid.notBefore,
      notAfter: svid.notAfter,
      chainNotAfter: svid.notAfter,
      serial: svid.serial,
      fingerprint: expect.stringMatching(/^[0-9a-f]{64}$/),
      rootFingerprint: main.root.certificate.fingerprint,
    });
  });

  it("accepts_the_expected_peer_and_one_of_an_expected_set", async () => {
    const svid = await main.issuer.issue(ID);
    const chain = [svid.der, ...svid.chainDer];
    expect(main.verifier.verify(chain, { expect: ID }).ok).toBe(true);
    expect(main.verifier.verify(chain, { expect: new Set([ID, `spiffe://${TD}/ns/a/sa/b`]) }).ok).toBe(true);
  });

  it("accepts_intermediates_in_any_order_and_ignores_a_presented_root", async () => {
    const svid = await main.issuer.issue(ID);
    const v = main.verifier.verify([
      svid.der,
      main.root.certificate.der,
      rogue.intermediate.certificate.der,
      int(),
    ]);
    expect(v.ok).toBe(true);
  });

  it("never_trusts_a_presented_root_that_is_not_in_the_bundle", async () => {
    const svid = await rogue.issuer.issue(ID);
    const v = main.verifier.verify([
      svid.der,
      rogue.intermediate.certificate.der,
      rogue.root.certificate.der,
    ]);
    expect(v).toMatchObject({ ok: false, code: "E_RT_PKI_UNTRUSTED_ISSUER" });
  });

  it("completes_a_leaf_only_chain_with_known_intermediates", async () => {
    const svid = await main.issuer.issue(ID);
    const withKnown = new SvidVerifier(main.bundle, {
      intermediates: [main.intermediate.certificate, rogue.intermediate.certificate],
    });
    expect(withKnown.verify([svid.der]).ok).toBe(true);
    // a known intermediate is no trust anchor: a rogue leaf through a known rogue intermediate still fails
    const rogueLeaf = await rogue.issuer.issue(ID);
    expect(withKnown.verify([rogueLeaf.der])).toMatchObject({ ok: false, code: "E_RT_PKI_UNTRUSTED_ISSUER" });
  });

  it("verifies_each_id_against_the_bundle_of_its_own_trust_domain", async () => {
    const both = new SvidVerifier([main.bundle, foreign.bundle]);
    const ours = await main.issuer.issue(ID);
    const theirs = await foreign.issuer.issue("spiffe://other.example/ns/a/sa/b");
    expect(both.verify([ours.der, ...ours.chainDer]).ok).toBe(true);
    expect(both.verify([theirs.der, ...theirs.chainDer]).ok).toBe(true);
    // other.example's CA signs a leaf claiming td.example: it does not chain to td.example's roots
    const crossed = await forge(foreign.intermediate, { uris: [ID] });
    expect(both.verify([crossed.der, foreign.intermediate.certificate.der])).toMatchObject({
      ok: false,
      code: "E_RT_PKI_UNTRUSTED_ISSUER",
      spiffeId: ID,
    });
  });

  it("checks_the_clock_on_every_call_although_it_caches_the_verdict", async () => {
    const svid = await main.issuer.issue(ID, { ttlMs: HOUR });
    const chain = [svid.der, ...svid.chainDer];
    expect(main.verifier.verify(chain).ok).toBe(true);
    expect(main.verifier.verify(chain, { now: svid.notAfter + 1000 })).toMatchObject({
      ok: false,
      code: "E_RT_PKI_EXPIRED",
    });
    expect(main.verifier.verify(chain, { now: svid.notBefore - 1000 })).toMatchObject({
      ok: false,
      code: "E_RT_PKI_NOT_YET_VALID",
    });
    expect(main.verifier.verify(chain).ok).toBe(true);
  });

  it("answers_synchronously", async () => {
    const svid = await main.issuer.issue(ID);
    const v: unknown = main.verifier.verify([svid.der, ...svid.chainDer]);
    expect(v).not.toBeInstanceOf(Promise);
    expect((v as { ok: boolean }).ok).toBe(true);
  });

  it("bounds_its_cache", async () => {
    const small = new SvidVerifier(main.bundle, { cacheSize: 2 });
    const svids = await Promise.all(
      [1, 2, 3, 4].map((i) => main.issuer.issue(`spiffe://${TD}/ns/a/sa/s${i}`)),
    );
    for (const s of svids) expect(small.verify([s.der, ...s.chainDer]).ok).toBe(true);
    for (const s of svids) expect(small.verify([s.der, ...s.chainDer]).ok).toBe(true);
  });
});

describe("SPIFFE IDs", () => {
  it.each([
    ["spiffe://td/ns/a/sa/b", true],
    ["spiffe://td", true],
    ["spiffe://a-b_c.d0/x/Y.z-_/0", true],
    ["spiffe://td/", "E_RT_PKI_ID_EMPTY_SEGMENT"],
    ["spiffe://td/a//b", "E_RT_PKI_ID_EMPTY_SEGMENT"],
    ["spiffe://td/a/./b", "E_RT_PKI_ID_DOT_SEGMENT"],
    ["spiffe://td/..", "E_RT_PKI_ID_DOT_SEGMENT"],
    ["spiffe://td/%41", "E_RT_PKI_ID_PERCENT_ENCODED"],
    ["spiffe://td/a?b#c", "E_RT_PKI_ID_QUERY"],
    ["spiffe://td/a#b?c", "E_RT_PKI_ID_FRAGMENT"],
    ["spiffe://td?x", "E_RT_PKI_ID_QUERY"],
    ["spiffe://u:p@td/a", "E_RT_PKI_ID_USERINFO"],
    ["spiffe://td:1/a", "E_RT_PKI_ID_PORT"],
    ["spiffe://Td/a", "E_RT_PKI_ID_TRUST_DOMAIN_CHARS"],
    ["spiffe://td\u00e9/a", "E_RT_PKI_ID_TRUST_DOMAIN_CHARS"],
    ["spiffe://td/caf\u00e9", "E_RT_PKI_ID_PATH_CHARS"],
    ["spiffe:/td/a", "E_RT_PKI_ID_SCHEME"],
    ["td/a", "E_RT_PKI_ID_SCHEME"],
    ["", "E_RT_PKI_ID_SCHEME"],
  ])("parses_%j", (id, expected) => {
    const r = parseSpiffeId(id);
    if (expected === true) expect(r.ok).toBe(true);
    else expect(r).toMatchObject({ ok: false, code: expected });
  });

  it("never_throws_and_accepts_only_the_spiffe_grammar", () => {
    fc.assert(
      fc.property(fc.string({ maxLength: 80 }), (s) => {
        const r = parseSpiffeId(s);
        if (r.ok) expect(s).toMatch(/^spiffe:\/\/[a-z0-9._-]+(\/[A-Za-z0-9._-]+)*$/);
        if (r.ok) expect(r.segments.every((x) => x !== "." && x !== "..")).toBe(true);
      }),
      { numRuns: 2000 },
    );
  });

  it("accepts_every_id_built_from_the_grammar", () => {
    const td = fc.stringMatching(/^[a-z0-9._-]{1,40}$/);
    const seg = fc.stringMatching(/^[A-Za-z0-9._-]{1,12}$/).filter((s) => s !== "." && s !== "..");
    fc.assert(
      fc.property(td, fc.array(seg, { maxLength: 6 }), (t, segs) => {
        const id = `spiffe://${t}${segs.map((s) => `/${s}`).join("")}`;
        expect(parseSpiffeId(id)).toMatchObject({ ok: true, trustDomain: t, segments: segs });
      }),
      { numRuns: 1000 },
    );
  });
});
