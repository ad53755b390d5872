/** `meshgate pki …` as a user runs it: a real process, real files, exit codes, output — and openssl. */
import { execFile } from "node:child_process";
import { readFile, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  createIntermediateCa,
  createRootCa,
  exportPrivateKey,
  parseCertificate,
  SvidIssuer,
  toPem,
  TrustBundle,
  writeCaDirectory,
  writeSvidDirectory,
} from "../../runtime/pki/index.ts";
import { forge, makeCa, opensslVerify, tempDir } from "./support.ts";

const run = promisify(execFile);
const ROOT = new URL("../../", import.meta.url).pathname;
const BIN = join(ROOT, "bin/meshgate.js");

interface Result {
  code: number;
  stdout: string;
  stderr: string;
}

/** Everything the command printed in this file, checked for private keys at the end. */
const printed: string[] = [];

async function meshgate(args: string[]): Promise<Result> {
  let r: Result;
  try {
    const { stdout, stderr } = await run(process.execPath, [BIN, ...args], { cwd: ROOT });
    r = { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code: number; stdout: string; stderr: string };
    r = { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
  printed.push(r.stdout, r.stderr);
  return r;
}

let tmp: Awaited<ReturnType<typeof tempDir>>;
let dir: string;
const TD = "shop.example";
const ORDERS = `spiffe://${TD}/ns/shop/sa/orders`;
const PAYMENTS = `spiffe://${TD}/ns/shop/sa/payments`;

beforeAll(async () => {
  tmp = await tempDir("pki-cli");
  dir = tmp.dir;
});
afterAll(async () => {
  await tmp.cleanup();
});

const mode = async (path: string) => (await stat(path)).mode & 0o777;

describe("meshgate pki init", () => {
  it("writes_root_intermediate_keys_and_bundle_with_private_modes", async () => {
    const r = await meshgate(["pki", "init", "--trust-domain", TD, "--out", join(dir, "ca")]);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain(`✓ created the CA of trust domain ${TD}`);
    expect(r.stdout).toMatch(/root +O=shop\.example, CN=meshgate root CA [0-9a-f]{8}/);
    expect(r.stdout).toMatch(/intermediate +O=shop\.example, CN=meshgate intermediate CA [0-9a-f]{8}/);
    for (const f of ["root-key.pem", "intermediate-key.pem"])
      expect(await mode(join(dir, "ca", f))).toBe(0o600);
    for (const f of ["root.pem", "intermediate.pem", "bundle.pem"])
      expect(await mode(join(dir, "ca", f))).toBe(0o644);
    const r2 = await opensslVerify(join(dir, "ca", "bundle.pem"), null, join(dir, "ca", "intermediate.pem"));
    expect(r2.ok).toBe(true);
  });

  it("refuses_to_overwrite_an_existing_ca_key", async () => {
    const before = await readFile(join(dir, "ca", "root-key.pem"), "utf8");
    const r = await meshgate(["pki", "init", "--trust-domain", TD, "--out", join(dir, "ca")]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain("refusing to overwrite a CA key");
    expect(r.stderr).toContain("[E_RT_PKI_FILE]");
    expect(await readFile(join(dir, "ca", "root-key.pem"), "utf8")).toBe(before);
  });

  it("refuses_a_root_validity_past_the_year_9999_as_a_lifetime", async () => {
    const out = join(dir, "ca-forever");
    const r = await meshgate([
      "pki",
      "init",
      "--trust-domain",
      TD,
      "--out",
      out,
      "--root-validity",
      "100000y",
    ]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain("the last time X.509 can express");
    expect(r.stderr).toContain("[E_RT_PKI_LIFETIME]");
    expect(r.stderr).not.toContain("not a DER X.509 certificate");
  });

  it.concurrent.each([
    [
      "rejects_an_uppercase_trust_domain",
      ["--trust-domain", "Shop.example", "--out", "x"],
      "--trust-domain: ",
    ],
    ["requires_out", ["--trust-domain", TD], "missing --out"],
    [
      "rejects_a_bad_duration",
      ["--trust-domain", TD, "--out", "x", "--root-validity", "ten years"],
      "--root-validity",
    ],
  ])("%s", async (_claim, args, message) => {
    const r = await meshgate(["pki", "init", ...args]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain(message);
    expect(r.stderr).toContain("Usage: meshgate pki init");
  });
});

describe("meshgate pki issue", () => {
  it("issues_an_svid_that_openssl_verifies", async () => {
    const out = join(dir, "svids", "orders");
    const r = await meshgate([
      "pki",
      "issue",
      "--ca",
      join(dir, "ca"),
      "--service",
      "orders",
      "--namespace",
      "shop",
      "--out",
      out,
    ]);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain(`✓ issued ${ORDERS}`);
    expect(await mode(join(out, "svid-key.pem"))).toBe(0o600);
    const v = await opensslVerify(
      join(dir, "ca", "root.pem"),
      join(dir, "ca", "intermediate.pem"),
      join(out, "svid.pem"),
    );
    expect(v.output).toContain("OK");
    expect(v.ok).toBe(true);
  });

  it("issues_by_spiffe_id_with_a_ttl", async () => {
    const out = join(dir, "svids", "payments");
    const started = Date.now();
    const r = await meshgate([
      "pki", "issue", "--ca", join(dir, "ca"), "--spiffe-id", `spiffe://${TD}/ns/shop/sa/payments`, "--ttl", "1h",
      "--clock-skew", "0s", "--dns", "localhost", "--out", out,
    ]); // prettier-ignore
    expect(r.code).toBe(0);
    const leaf = parseCertificate(await readFile(join(out, "svid.pem"), "utf8"));
    expect(leaf.uris).toEqual([`spiffe://${TD}/ns/shop/sa/payments`]);
    expect(leaf.dnsNames).toEqual(["localhost"]);
    expect(leaf.notAfter - leaf.notBefore).toBe(3_600_000);
    expect(Math.abs(leaf.notBefore - started)).toBeLessThan(10_000);
  });

  it.concurrent.each([
    ["requires_an_identity", ["--out", "x"], "give either --spiffe-id ID or --service S --namespace N"],
    [
      "refuses_both_identity_forms",
      ["--spiffe-id", ORDERS, "--service", "o", "--namespace", "n", "--out", "x"],
      "give either",
    ],
    ["requires_the_namespace_with_the_service", ["--service", "orders", "--out", "x"], "missing --namespace"],
    [
      "rejects_a_dot_dot_spiffe_id",
      ["--spiffe-id", `spiffe://${TD}/ns/../x`, "--out", "x"],
      "[E_RT_PKI_ID_DOT_SEGMENT]",
    ],
    ["rejects_a_bad_ttl", ["--spiffe-id", ORDERS, "--out", "x", "--ttl", "soon"], "--ttl"],
    // ns/shop/sa/a/b: another ID's shape, not the service "a/b"
    [
      "rejects_a_service_name_with_a_slash",
      ["--service", "a/b", "--namespace", "shop", "--out", "x"],
      "--service",
    ],
    [
      "rejects_a_namespace_with_a_slash",
      ["--service", "a", "--namespace", "shop/sa/x", "--out", "x"],
      "--namespace",
    ],
  ])("%s", async (_claim, args, message) => {
    const r = await meshgate(["pki", "issue", "--ca", join(dir, "ca"), ...args]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain(message);
  });

  it.concurrent.each([
    [
      "fails_for_an_id_of_another_trust_domain",
      ["--ca", "CA", "--spiffe-id", "spiffe://other.example/ns/a/sa/b"],
      "E_RT_PKI_TRUST_DOMAIN_MISMATCH",
    ],
    ["fails_for_a_missing_ca_directory", ["--ca", "nope", "--spiffe-id", ORDERS], "E_RT_PKI_FILE"],
  ])("%s", async (_claim, args, code) => {
    const r = await meshgate([
      "pki",
      "issue",
      ...args.map((a) => (a === "CA" ? join(dir, "ca") : a)),
      "--out",
      join(dir, "x"),
    ]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`[${code}]`);
  });
});

describe("meshgate pki inspect", () => {
  it("prints_the_certificate_the_chain_and_a_positive_verdict", async () => {
    const r = await meshgate([
      "pki",
      "inspect",
      join(dir, "svids", "orders", "svid.pem"),
      "--bundle",
      join(dir, "ca", "bundle.pem"),
    ]);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain(`SPIFFE ID:   ${ORDERS}`);
    expect(r.stdout).toContain("constraints: cA=false (critical)");
    expect(r.stdout).toContain("key usage:   digitalSignature (critical)");
    expect(r.stdout).toContain("EKU:         serverAuth, clientAuth");
    expect(r.stdout).toMatch(/validity: +\S+Z → \S+Z {2}\(valid, [0-9.]+ days left\)/);
    expect(r.stdout).toContain("chain[1]: O=shop.example, CN=meshgate intermediate CA");
    expect(r.stdout).toMatch(/chain: +✓ verified to root sha256 [0-9a-f]{64}/);
    expect(r.stdout).toContain(`verdict: ✓ valid X.509-SVID ${ORDERS}`);
  });

  it("checks_only_the_leaf_rules_without_a_bundle", async () => {
    const r = await meshgate(["pki", "inspect", join(dir, "svids", "orders", "svid.pem")]);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain("chain:   not checked (give --bundle FILE");
    expect(r.stdout).toContain("verdict: ✓ the leaf follows the X.509-SVID rules");
  });

  it("calls_a_ca_certificate_a_signing_certificate", async () => {
    const r = await meshgate(["pki", "inspect", join(dir, "ca", "root.pem")]);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain("constraints: cA=true, pathLen=1 (critical)");
    expect(r.stdout).toContain("key usage:   keyCertSign, cRLSign (critical)");
    expect(r.stdout).toContain("verdict: a signing (CA) certificate");
  });

  it("exits_1_for_a_chain_of_an_untrusted_ca", async () => {
    await meshgate(["pki", "init", "--trust-domain", TD, "--out", join(dir, "other-ca")]);
    const r = await meshgate([
      "pki",
      "inspect",
      join(dir, "svids", "orders", "svid.pem"),
      "--bundle",
      join(dir, "other-ca", "bundle.pem"),
    ]);
    expect(r.code).toBe(1);
    expect(r.stdout).toMatch(/chain: +✗ .*\[E_RT_PKI_UNTRUSTED_ISSUER\]/);
    expect(r.stdout).toMatch(/verdict: ✗ .*\[E_RT_PKI_UNTRUSTED_ISSUER\]/);
  });

  it.concurrent.each([
    ["exits_1_after_expiry", ["--at", "2099-01-01T00:00:00Z"], "E_RT_PKI_EXPIRED"],
    [
      "exits_1_for_an_unexpected_peer",
      ["--expect", `spiffe://${TD}/ns/shop/sa/payments`],
      "E_RT_PKI_UNEXPECTED_PEER",
    ],
  ])("%s", async (_claim, args, code) => {
    const r = await meshgate([
      "pki",
      "inspect",
      join(dir, "svids", "orders", "svid.pem"),
      "--bundle",
      join(dir, "ca", "bundle.pem"),
      ...args,
    ]);
    expect(r.code).toBe(1);
    expect(r.stdout).toContain(`[${code}]`);
  });

  it("exits_1_for_a_malformed_svid_and_names_the_rule", async () => {
    const ca = await makeCa(TD);
    const bad = await forge(ca.intermediate, { uris: [`spiffe://${TD}/ns/shop/../sa/admin`] });
    await writeFile(join(dir, "bad.pem"), bad.pem + toPem(ca.intermediate.certificate.der, "CERTIFICATE"));
    await writeFile(join(dir, "bad-bundle.pem"), ca.bundle.toPem());
    const r = await meshgate([
      "pki",
      "inspect",
      join(dir, "bad.pem"),
      "--bundle",
      join(dir, "bad-bundle.pem"),
    ]);
    expect(r.code).toBe(1);
    expect(r.stdout).toContain("chain:   not checked (the leaf itself is refused)");
    expect(r.stdout).toMatch(/verdict: ✗ .*"\.\." path segment \[E_RT_PKI_ID_DOT_SEGMENT\]/);
  });

  it("prints_json", async () => {
    const r = await meshgate([
      "pki",
      "inspect",
      join(dir, "svids", "orders", "svid.pem"),
      "--bundle",
      join(dir, "ca", "bundle.pem"),
      "--format",
      "json",
    ]);
    expect(r.code).toBe(0);
    const json = JSON.parse(r.stdout);
    expect(json.reports[0]).toMatchObject({
      scope: "chain",
      verdict: { ok: true, spiffeId: ORDERS, trustDomain: TD },
      certificates: [
        { spiffeIds: [ORDERS], extKeyUsage: "serverAuth, clientAuth" },
        { basicConstraints: "cA=true, pathLen=0 (critical)" },
      ],
    });
  });

  it("exits_1_for_a_file_that_holds_no_certificate", async () => {
    await writeFile(join(dir, "junk.pem"), "hello\n");
    const r = await meshgate(["pki", "inspect", join(dir, "junk.pem")]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain("[E_RT_PKI_PEM]");
  });
});

describe("meshgate pki plan-rotation", () => {
  it("prints_the_staged_root_rotation_with_the_state_of_each_step", async () => {
    await meshgate(["pki", "init", "--trust-domain", TD, "--out", join(dir, "ca-next")]);
    const r = await meshgate([
      "pki", "plan-rotation", "--ca", join(dir, "ca"), "--new-root", join(dir, "ca-next"), "--leaves", join(dir, "svids"),
      "--window", "2d",
    ]); // prettier-ignore
    expect(r.code).toBe(0);
    expect(r.stdout).toContain(`Root rotation plan for trust domain ${TD}`);
    expect(r.stdout).toContain("2 leaf certificates read");
    const actions = [...r.stdout.matchAll(/^ +\d+\. \[([a-z-]+)\]/gm)].map((m) => m[1]);
    expect(actions).toEqual([
      "add-root",
      "wait-propagation",
      "issue-intermediate",
      "reissue-leaf",
      "reissue-leaf",
      "wait-leaf-expiry",
      "drop-root",
      "retire-intermediate",
    ]);
    expect(r.stdout).toMatch(/1\. \[add-root\].*\n +now: ready/);
    expect(r.stdout).toMatch(/\[reissue-leaf\].*\n +now: blocked — .*\[E_RT_PKI_ROTATION_ORDER\]/);
    expect(r.stdout).toMatch(
      /\[retire-intermediate\].*\n +now: blocked — .*\[E_RT_PKI_ROTATION_NOT_REISSUED\]/,
    );
    expect(r.stdout).toContain(`expires`);
    expect(r.stdout).toMatch(/leaf +spiffe:\/\/shop\.example\/ns\/shop\/sa\/payments/);
  });

  it("plans_an_intermediate_rotation_without_a_new_root_as_json", async () => {
    const r = await meshgate([
      "pki",
      "plan-rotation",
      "--ca",
      join(dir, "ca"),
      "--leaves",
      join(dir, "svids"),
      "--format",
      "json",
    ]);
    expect(r.code).toBe(0);
    const json = JSON.parse(r.stdout);
    expect(json.plan.kind).toBe("intermediate");
    expect(json.plan.steps.map((s: { action: string }) => s.action)).toEqual([
      "issue-intermediate",
      "reissue-leaf",
      "reissue-leaf",
      "wait-leaf-expiry",
      "retire-intermediate",
    ]);
    expect(json.checks).toHaveLength(5);
    expect(json.checks.at(-1)).toMatchObject({ ok: false, code: "E_RT_PKI_ROTATION_NOT_REISSUED" });
  });

  it.concurrent.each([
    ["requires_leaves", ["--ca", "CA"], "missing --leaves"],
    ["requires_the_ca", ["--leaves", "x"], "missing --ca"],
  ])("%s", async (_claim, args, message) => {
    const r = await meshgate([
      "pki",
      "plan-rotation",
      ...args.map((a) => (a === "CA" ? join(dir, "ca") : a)),
    ]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain(message);
  });

  it("refuses_a_new_root_of_another_trust_domain", async () => {
    await meshgate(["pki", "init", "--trust-domain", "other.example", "--out", join(dir, "ca-other")]);
    const r = await meshgate([
      "pki",
      "plan-rotation",
      "--ca",
      join(dir, "ca"),
      "--new-root",
      join(dir, "ca-other"),
      "--leaves",
      join(dir, "svids"),
    ]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain("a root rotation stays in one trust domain");
  });
});

describe.concurrent("usage", () => {
  it("a_live_leaf_of_an_earlier_intermediate_blocks_drop_root_through_the_intermediate_it_presents", async () => {
    // The CA directory's intermediate was replaced under the same root; payments still serves a live
    // leaf of the earlier one (svid.pem: leaf, then that intermediate) and has none under the new root.
    const d = join(dir, "earlier-int");
    const root = await createRootCa({ trustDomain: TD });
    const earlier = await createIntermediateCa(root);
    const nextRoot = await createRootCa({ trustDomain: TD });
    const nextInt = await createIntermediateCa(nextRoot);
    await writeCaDirectory(join(d, "ca"), { root, intermediate: await createIntermediateCa(root) });
    await writeFile(
      join(d, "ca", "bundle.pem"),
      new TrustBundle(TD, [root.certificate, nextRoot.certificate]).toPem(),
    );
    await writeCaDirectory(join(d, "ca-next"), { root: nextRoot, intermediate: nextInt });
    const bundle = new TrustBundle(TD, [root.certificate]);
    await writeSvidDirectory(join(d, "svids", "orders"), await new SvidIssuer(nextInt).issue(ORDERS), bundle);
    await writeSvidDirectory(
      join(d, "svids", "payments"),
      await new SvidIssuer(earlier).issue(PAYMENTS),
      bundle,
    );
    const r = await meshgate([
      "pki", "plan-rotation", "--ca", join(d, "ca"), "--new-root", join(d, "ca-next"),
      "--leaves", join(d, "svids"), "--format", "json",
    ]); // prettier-ignore
    expect(r.code).toBe(0);
    const j = JSON.parse(r.stdout) as {
      plan: { steps: { action: string; spiffeId?: string }[] };
      checks: { ok: boolean; code?: string; blocking?: string[] }[];
    };
    const drop = j.plan.steps.findIndex((s) => s.action === "drop-root");
    expect(j.plan.steps.filter((s) => s.action === "reissue-leaf").map((s) => s.spiffeId)).toEqual([
      PAYMENTS,
    ]);
    expect(j.checks[drop]).toMatchObject({
      ok: false,
      code: "E_RT_PKI_ROTATION_NOT_REISSUED",
      blocking: [PAYMENTS],
    });
  });

  it.each(["init", "issue", "inspect", "plan-rotation"])("pki_%s_has_help", async (sub) => {
    const r = await meshgate(["pki", sub, "--help"]);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain(`Usage: meshgate pki ${sub}`);
  });

  it("lists_pki_in_the_main_help_and_its_subcommands_in_its_own", async () => {
    expect((await meshgate(["--help"])).stdout).toMatch(/^ +pki +the mesh CA as files/m);
    const r = await meshgate(["pki", "--help"]);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/init .*\n.*issue .*\n.*inspect .*\n.*plan-rotation/);
  });

  it.each([
    ["rejects_an_unknown_subcommand", ["pki", "frobnicate"], "unknown subcommand"],
    ["rejects_a_missing_subcommand", ["pki"], "Usage: meshgate pki <subcommand>"],
    ["rejects_an_unknown_flag", ["pki", "init", "--trust-domian", "x"], "Unknown option"],
    [
      "rejects_extra_arguments",
      ["pki", "init", "extra", "--trust-domain", TD, "--out", "x"],
      "unexpected argument",
    ],
    ["requires_a_file_to_inspect", ["pki", "inspect"], "missing FILE"],
  ])("%s", async (_claim, args, message) => {
    const r = await meshgate(args);
    expect(r.code).toBe(2);
    expect(r.stdout + r.stderr).toContain(message);
  });
});

describe("secrets", () => {
  it("never_prints_a_private_key", async () => {
    const keys = [
      join(dir, "ca", "root-key.pem"),
      join(dir, "ca", "intermediate-key.pem"),
      join(dir, "svids", "orders", "svid-key.pem"),
      join(dir, "svids", "payments", "svid-key.pem"),
    ];
    const bodies = (await Promise.all(keys.map((k) => readFile(k, "utf8")))).map(
      (pem) => pem.split("\n")[1]!,
    );
    expect(printed.length).toBeGreaterThan(40);
    for (const text of printed) {
      expect(text).not.toContain("PRIVATE KEY-----");
      for (const b of bodies) expect(text).not.toContain(b.slice(0, 24));
    }
    // and the module's own PEM wrapper stays wrapped when logged
    const ca = await makeCa(TD);
    expect(String(await exportPrivateKey(ca.intermediate.privateKey))).toBe("[private key]");
  });
});
