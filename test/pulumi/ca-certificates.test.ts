/**
 * The certificates MeshCa's arguments produce, made by a stand-in for the tls provider that applies the
 * provider's own rules (test/support/tls-provider.ts): every SVID passes meshgate's SVID verifier (as the
 * sidecar runs it), its key loads as the sidecar loads it, and `openssl verify -x509_strict` accepts the
 * chain. Then a root rotation, one `pulumi up` per stage: a peer that still holds its old leaf is trusted
 * until the old root is dropped, and the stage guards let each stage through once its wait is over.
 */
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type * as CaModule from "../../components/pulumi/ca.ts";
import {
  checkSvidLeaf,
  importPrivateKey,
  KeyUsageBits,
  parseCertificates,
  SvidVerifier,
  TrustBundle,
  type ParsedCertificate,
} from "../../runtime/pki/index.ts";
import { opensslVerify } from "../pki/support.ts";
import { installMocks, mockState, runStack, valueOf } from "../support/pulumi.ts";
import { emulatedTlsProvider } from "../support/tls-provider.ts";

const TD = "shop.example";
const IDS = [
  { name: "gateway", spiffeId: `spiffe://${TD}/ns/shop/sa/gateway` },
  { name: "orders", spiffeId: `spiffe://${TD}/ns/shop/sa/orders` },
];
const HOUR = 3_600_000;

let ca: typeof CaModule;
let dir: string;
beforeAll(async () => {
  await installMocks(
    "meshgate",
    "test",
    emulatedTlsProvider((name) => mockState.validityStart.get(name)),
  );
  ca = await import("../../components/pulumi/ca.ts");
  dir = await mkdtemp(join(tmpdir(), "meshgate-meshca-"));
});
afterAll(() => rm(dir, { recursive: true, force: true }));

interface Issued {
  bundle: string;
  intermediates: string;
  chains: Record<string, string>;
  keys: Record<string, string>;
  errors: Error[];
}

/** One `pulumi up` of a MeshCa in the given rotation stage. */
async function up(rotation: CaModule.MeshCaRotation): Promise<Issued> {
  let component!: CaModule.MeshCa;
  const run = await runStack(() => {
    component = new ca.MeshCa("mesh", { trustDomain: TD, identities: IDS, rotation });
  });
  if (run.errors.length > 0)
    return { bundle: "", intermediates: "", chains: {}, keys: {}, errors: run.errors };
  const chains: Record<string, string> = {};
  const keys: Record<string, string> = {};
  for (const id of IDS) {
    chains[id.name] = await valueOf(component.svids[id.name]!.certChainPem);
    keys[id.name] = await valueOf(component.svids[id.name]!.keyPem);
  }
  return {
    bundle: await valueOf(component.trustBundlePem),
    intermediates: await valueOf(component.intermediatesPem),
    chains,
    keys,
    errors: [],
  };
}

/** The sidecar's check of a peer: the chain against the bundle, knowing the intermediates. */
function verify(issued: Pick<Issued, "bundle" | "intermediates">, chainPem: string, expect: string) {
  const verifier = new SvidVerifier(TrustBundle.fromPem(TD, issued.bundle), {
    intermediates: parseCertificates(issued.intermediates),
  });
  return verifier.verify(
    parseCertificates(chainPem).map((c) => c.der),
    { expect },
  );
}

describe("MeshCa certificates", () => {
  let issued: Issued;
  beforeAll(async () => {
    issued = await up({ generation: "1" });
  });

  it("issues_svids_that_the_svid_verifier_accepts_with_keys_the_sidecar_loads", async () => {
    expect(issued.errors).toEqual([]);
    for (const id of IDS) {
      const chain = parseCertificates(issued.chains[id.name]!);
      expect(chain).toHaveLength(2);
      expect(checkSvidLeaf(chain[0]!)).toMatchObject({ ok: true });
      await importPrivateKey(issued.keys[id.name]!, chain[0]!); // PKCS#8 P-256, and the leaf's key
      const verdict = verify(issued, issued.chains[id.name]!, id.spiffeId);
      expect(verdict, id.name).toMatchObject({ ok: true, spiffeId: id.spiffeId });
    }
    expect(verify(issued, issued.chains.orders!, IDS[0]!.spiffeId)).toMatchObject({ ok: false });
  });

  it("issues_chains_that_openssl_verifies_strictly", async () => {
    const files = {
      bundle: join(dir, "bundle.pem"),
      intermediate: join(dir, "intermediate.pem"),
    };
    await writeFile(files.bundle, issued.bundle);
    await writeFile(files.intermediate, issued.intermediates);
    for (const id of IDS) {
      const leaf = join(dir, `${id.name}.pem`);
      await writeFile(
        leaf,
        `${issued.chains[id.name]!.split("-----END CERTIFICATE-----")[0]}-----END CERTIFICATE-----\n`,
      );
      const result = await opensslVerify(files.bundle, files.intermediate, leaf);
      expect(result.output, id.name).toContain(": OK");
      expect(result.ok, result.output).toBe(true);
    }
  });

  it("gives_root_intermediate_and_leaf_the_profile_of_the_mesh_pki", () => {
    const [root] = parseCertificates(issued.bundle) as [ParsedCertificate];
    const [leaf, intermediate] = parseCertificates(issued.chains.orders!) as [
      ParsedCertificate,
      ParsedCertificate,
    ];
    const profile = (c: ParsedCertificate) => ({
      subject: c.subject,
      ca: c.basicConstraints?.ca ?? false,
      pathLength: c.basicConstraints?.pathLength ?? null,
      keyUsage: c.keyUsage ? [c.keyUsage.flags, c.keyUsage.critical] : null,
      uris: c.uris,
    });
    expect(profile(root)).toEqual({
      subject: `O=${TD}, CN=meshgate root CA 1`,
      ca: true,
      pathLength: 1,
      keyUsage: [KeyUsageBits.keyCertSign | KeyUsageBits.cRLSign, true],
      uris: [`spiffe://${TD}`],
    });
    // The tls provider encodes no pathLen 0 (Go's MaxPathLenZero is never set); the root's pathLen 1
    // still limits every path to this one intermediate.
    expect(profile(intermediate)).toEqual({
      subject: `O=${TD}, CN=meshgate intermediate CA 1`,
      ca: true,
      pathLength: null,
      keyUsage: [KeyUsageBits.keyCertSign | KeyUsageBits.cRLSign, true],
      uris: [`spiffe://${TD}`],
    });
    expect(profile(leaf)).toEqual({
      subject: `O=${TD}`,
      ca: false,
      pathLength: null,
      keyUsage: [KeyUsageBits.digitalSignature, true],
      uris: [`spiffe://${TD}/ns/shop/sa/orders`],
    });
    expect(leaf.notAfter - leaf.notBefore).toBe(24 * HOUR);
  });
});

describe("MeshCa root rotation, one pulumi up per stage", () => {
  it("keeps_every_live_leaf_trusted_until_the_old_root_is_dropped", async () => {
    const stable = await up({ generation: "1" });
    expect(stable.errors).toEqual([]);
    const oldLeaf = stable.chains.orders!;

    // Let time pass as the stages require: root 2 entered the bundle an hour ago, its intermediate two days ago.
    mockState.validityStart.set("mesh-root-2", new Date(Date.now() - HOUR).toISOString());
    mockState.validityStart.set("mesh-intermediate-2", new Date(Date.now() - 48 * HOUR).toISOString());

    const addRoot = await up({ generation: "2", previous: { generation: "1", stage: "add-root" } });
    expect(addRoot.errors).toEqual([]);
    expect(parseCertificates(addRoot.bundle)).toHaveLength(2);
    expect(addRoot.chains.orders).toBe(oldLeaf); // leaves untouched while peers load the new bundle
    expect(verify(addRoot, oldLeaf, IDS[1]!.spiffeId)).toMatchObject({ ok: true });

    const reissue = await up({ generation: "2", previous: { generation: "1", stage: "reissue" } });
    expect(reissue.errors).toEqual([]);
    const newLeaf = reissue.chains.orders!;
    expect(newLeaf).not.toBe(oldLeaf);
    expect(parseCertificates(newLeaf)[1]!.subject).toBe(`O=${TD}, CN=meshgate intermediate CA 2`);
    // Mid-rotation, a peer may hold either leaf: both verify against what every proxy now has.
    expect(verify(reissue, newLeaf, IDS[1]!.spiffeId)).toMatchObject({ ok: true });
    expect(verify(reissue, oldLeaf, IDS[1]!.spiffeId)).toMatchObject({ ok: true });
    // A proxy that has not reloaded yet (old bundle, new peer) must trust the new leaf too: it does not —
    // which is why add-root waits for propagation before any leaf is reissued.
    expect(verify(stable, newLeaf, IDS[1]!.spiffeId)).toMatchObject({ ok: false });

    const drop = await up({ generation: "2", previous: { generation: "1", stage: "drop-root" } });
    expect(drop.errors).toEqual([]);
    expect(parseCertificates(drop.bundle).map((c) => c.subject)).toEqual([`O=${TD}, CN=meshgate root CA 2`]);
    expect(drop.chains.orders).toBe(newLeaf);
    expect(verify(drop, newLeaf, IDS[1]!.spiffeId)).toMatchObject({ ok: true });
    expect(verify(drop, oldLeaf, IDS[1]!.spiffeId)).toMatchObject({ ok: false });

    const done = await up({ generation: "2" });
    expect(done.errors).toEqual([]);
    expect(done.bundle).toBe(drop.bundle);
    expect(done.chains.orders).toBe(newLeaf);
  });

  it("refuses_to_drop_a_root_whose_leaves_may_still_live", async () => {
    mockState.validityStart.set("mesh-root-3", new Date(Date.now() - HOUR).toISOString());
    await up({ generation: "3", previous: { generation: "2", stage: "add-root" } });
    await up({ generation: "3", previous: { generation: "2", stage: "reissue" } });
    const early = await up({ generation: "3", previous: { generation: "2", stage: "drop-root" } });
    expect(early.errors.map((e) => e.message).join("\n")).toMatch(
      /drop-root stage is too early: leaves of root 2 may live until .*\[E_RT_PKI_ROTATION_WAIT\]/,
    );
  });
});
