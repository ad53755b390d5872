/**
 * MeshCa under Pulumi's mocks: the tls resources it declares (profile of docs/pki.md), parents and names,
 * keys as secrets, the trust bundle and intermediates of every root-rotation stage, and the stage guards.
 */
import * as pulumi from "@pulumi/pulumi";
import { beforeAll, beforeEach, describe, expect, it } from "vitest";
import type * as CaModule from "../../components/pulumi/ca.ts";
import {
  installMocks,
  mockState,
  resetRecords,
  runStack,
  secretOf,
  valueOf,
  type StackRun,
} from "../support/pulumi.ts";

let ca: typeof CaModule;
beforeAll(async () => {
  await installMocks();
  ca = await import("../../components/pulumi/ca.ts");
});
beforeEach(() => {
  resetRecords();
  mockState.validityStart.clear();
});

const TD = "shop.example";
const IDS = [
  { name: "gateway", spiffeId: `spiffe://${TD}/ns/shop/sa/gateway` },
  { name: "orders", spiffeId: `spiffe://${TD}/ns/shop/sa/orders` },
];
const HOUR = 3_600_000;
const inputsOf = (name: string) => mockState.registered.find((r) => r.name === name)?.inputs ?? {};
/** The mock PEM names in a PEM text (each mock PEM encodes its resource name). */
const pemNames = (text: string) =>
  [...text.matchAll(/MOCK ([A-Za-z0-9+/=]+)/g)].map((m) => Buffer.from(m[1]!, "base64").toString());

let lastRun: StackRun;
async function build(args: Partial<CaModule.MeshCaArgs> = {}, name = "mesh") {
  let component!: CaModule.MeshCa;
  lastRun = await runStack(() => {
    component = new ca.MeshCa(name, { trustDomain: TD, identities: IDS, ...args });
  });
  return component;
}

describe("MeshCa resources", () => {
  it("declares_root_intermediate_and_one_svid_per_identity_with_the_pki_profile", async () => {
    await build();
    const types = mockState.registered.map((r) => `${r.type} ${r.name}`);
    expect(types).toEqual(
      expect.arrayContaining([
        "meshgate:pki:MeshCa mesh",
        "tls:index/privateKey:PrivateKey mesh-root-1-key",
        "tls:index/selfSignedCert:SelfSignedCert mesh-root-1",
        "tls:index/privateKey:PrivateKey mesh-intermediate-1-key",
        "tls:index/certRequest:CertRequest mesh-intermediate-1-csr",
        "tls:index/locallySignedCert:LocallySignedCert mesh-intermediate-1",
        "tls:index/privateKey:PrivateKey mesh-svid-orders-key",
        "tls:index/certRequest:CertRequest mesh-svid-orders-csr",
        "tls:index/locallySignedCert:LocallySignedCert mesh-svid-orders",
        "tls:index/locallySignedCert:LocallySignedCert mesh-svid-gateway",
      ]),
    );
    expect(mockState.registered).toHaveLength(1 + 5 + 3 * IDS.length + 1); // + the stack
    for (const r of mockState.registered.filter((x) => x.type === "tls:index/privateKey:PrivateKey"))
      expect(r.inputs).toEqual({ algorithm: "ECDSA", ecdsaCurve: "P256" });
    expect(inputsOf("mesh-root-1")).toMatchObject({
      isCaCertificate: true,
      maxPathLength: 1,
      allowedUses: ["cert_signing", "crl_signing"],
      uris: [`spiffe://${TD}`],
      subject: { organization: TD, commonName: "meshgate root CA 1" },
      validityPeriodHours: 10 * 365 * 24,
    });
    expect(inputsOf("mesh-root-1")).not.toHaveProperty("earlyRenewalHours");
    expect(inputsOf("mesh-intermediate-1")).toMatchObject({
      isCaCertificate: true,
      maxPathLength: 0,
      allowedUses: ["cert_signing", "crl_signing"],
      validityPeriodHours: 365 * 24,
      earlyRenewalHours: 24 + 8,
    });
    expect(inputsOf("mesh-svid-orders-csr")).toEqual({
      privateKeyPem: expect.stringContaining("BEGIN PRIVATE KEY"),
      subject: { organization: TD },
      uris: [`spiffe://${TD}/ns/shop/sa/orders`],
    });
    expect(inputsOf("mesh-svid-orders")).toMatchObject({
      isCaCertificate: false,
      allowedUses: ["digital_signature", "server_auth", "client_auth"],
      validityPeriodHours: 24,
      earlyRenewalHours: 8,
    });
    expect(pemNames(String(inputsOf("mesh-svid-orders").caCertPem))).toEqual(["mesh-intermediate-1"]);
    // Keys reach the provider as secrets (never in clear in the engine's state or logs).
    const registered = (n: string) => mockState.registered.find((r) => r.name === n)!;
    expect(registered("mesh-svid-orders-csr").secretInputs).toEqual(["privateKeyPem"]);
    expect(registered("mesh-svid-orders").secretInputs).toEqual(["caPrivateKeyPem"]);
    expect(registered("mesh-intermediate-1").secretInputs).toEqual(["caPrivateKeyPem"]);
    expect(registered("mesh-root-1").secretInputs).toEqual(["privateKeyPem"]);
    expect(pemNames(String(inputsOf("mesh-svid-orders").caPrivateKeyPem))).toEqual([
      "mesh-intermediate-1-key",
    ]);
  });

  it("parents_every_child_to_the_component_and_derives_child_names_from_its_name", async () => {
    const component = await build({}, "edge-ca");
    const children = mockState.constructed.filter((c) => c.resource !== component);
    expect(children.length).toBeGreaterThan(0);
    for (const c of children) {
      expect(c.parent, c.name).toBe(component);
      expect(c.name.startsWith("edge-ca-"), c.name).toBe(true);
    }
  });

  it("names_children_the_same_on_every_run", async () => {
    await build();
    const first = mockState.registered.map((r) => `${r.type}::${r.name}`);
    resetRecords();
    await build();
    expect(mockState.registered.map((r) => `${r.type}::${r.name}`)).toEqual(first);
  });

  it("marks_every_private_key_it_exposes_and_passes_as_secret", async () => {
    const component = await build();
    for (const svid of Object.values(component.svids)) {
      expect(await secretOf(svid.keyPem)).toBe(true);
      expect(await secretOf(svid.certChainPem)).toBe(false);
    }
    expect(await secretOf(component.trustBundlePem)).toBe(false);
    // The tls provider's own key outputs are declared secret (additionalSecretOutputs), and every
    // resource that takes a key wraps it in pulumi.secret: the key is a secret wherever it flows.
    const keyHolders = mockState.constructed.filter((c) =>
      ["tls:index/certRequest:CertRequest", "tls:index/locallySignedCert:LocallySignedCert"].includes(c.type),
    );
    for (const c of keyHolders) {
      const key = (c.resource as unknown as Record<string, pulumi.Output<string>>)[
        c.type.includes("CertRequest") ? "privateKeyPem" : "caPrivateKeyPem"
      ]!;
      expect(await secretOf(key), c.name).toBe(true);
    }
    for (const c of mockState.constructed.filter((x) => x.type === "tls:index/privateKey:PrivateKey")) {
      expect((c.opts as pulumi.CustomResourceOptions).additionalSecretOutputs, c.name).toEqual(
        expect.arrayContaining(["privateKeyPem", "privateKeyPemPkcs8"]),
      );
    }
  });

  it("outputs_the_chain_leaf_first_and_the_bundle_with_the_root", async () => {
    const component = await build();
    expect(pemNames(await valueOf(component.svids.orders!.certChainPem))).toEqual([
      "mesh-svid-orders",
      "mesh-intermediate-1",
    ]);
    expect(pemNames(await valueOf(component.svids.orders!.keyPem))).toEqual(["mesh-svid-orders-key"]);
    expect(component.svids.orders!.spiffeId).toBe(`spiffe://${TD}/ns/shop/sa/orders`);
    expect(pemNames(await valueOf(component.trustBundlePem))).toEqual(["mesh-root-1"]);
    expect(pemNames(await valueOf(component.intermediatesPem))).toEqual(["mesh-intermediate-1"]);
    expect(await valueOf(component.rootNotAfter)).toMatch(/^\d{4}-\d\d-\d\dT/);
  });
});

describe("MeshCa lifetimes", () => {
  it.each([
    // [policy, leaf validity h, leaf early renewal h, intermediate early renewal h]
    [{}, 24, 8, 32],
    [{ workloadTtlMs: 2 * HOUR, renewBeforeMs: 8 * HOUR }, 2, 1, 10],
    [{ workloadTtlMs: 72 * HOUR, renewBeforeMs: 90 * 60_000 }, 72, 2, 74],
    [{ workloadTtlMs: 30 * 60_000, renewBeforeMs: 10 * 60_000 }, 1, 0, 2],
    [{ intermediateValidityMs: 48 * HOUR }, 24, 8, 24],
  ])("maps_%j_to_whole_hours_renewing_at_most_half_way", (policy, leaf, leafEarly, intEarly) => {
    const h = ca.caHours({
      rootValidityMs: 10 * 365 * 24 * HOUR,
      intermediateValidityMs: 365 * 24 * HOUR,
      workloadTtlMs: 24 * HOUR,
      renewBeforeMs: 8 * HOUR,
      clockSkewMs: 300_000,
      ...policy,
    });
    expect([h.leafValidity, h.leafEarlyRenewal, h.intermediateEarlyRenewal]).toEqual([
      leaf,
      leafEarly,
      intEarly,
    ]);
  });
});

describe("MeshCa root rotation", () => {
  it.each([
    // stage, roots in the bundle, intermediates known, the intermediate that signs leaves
    ["stable", ["mesh-root-2"], ["mesh-intermediate-2"], "mesh-intermediate-2"],
    [
      "add-root",
      ["mesh-root-1", "mesh-root-2"],
      ["mesh-intermediate-1", "mesh-intermediate-2"],
      "mesh-intermediate-1",
    ],
    [
      "reissue",
      ["mesh-root-1", "mesh-root-2"],
      ["mesh-intermediate-1", "mesh-intermediate-2"],
      "mesh-intermediate-2",
    ],
    ["drop-root", ["mesh-root-2"], ["mesh-intermediate-2"], "mesh-intermediate-2"],
  ] as const)("stage_%s_bundles_%j", async (stage, bundle, intermediates, issuer) => {
    const long = new Date(Date.now() - 30 * 24 * HOUR).toISOString(); // everything is a month old
    for (const n of ["mesh-root-1", "mesh-root-2", "mesh-intermediate-1", "mesh-intermediate-2"])
      mockState.validityStart.set(n, long);
    const component = await build({
      rotation:
        stage === "stable" ? { generation: "2" } : { generation: "2", previous: { generation: "1", stage } },
    });
    expect(lastRun.errors).toEqual([]);
    expect(component.rotationStage).toBe(stage);
    expect(pemNames(await valueOf(component.trustBundlePem))).toEqual(bundle);
    expect(pemNames(await valueOf(component.intermediatesPem))).toEqual(intermediates);
    expect(pemNames(await valueOf(component.svids.gateway!.certChainPem))).toEqual([
      "mesh-svid-gateway",
      issuer,
    ]);
    expect(pemNames(String(inputsOf("mesh-svid-gateway").caCertPem))).toEqual([issuer]);
    const roots = mockState.registered.filter((r) => r.type === "tls:index/selfSignedCert:SelfSignedCert");
    expect(roots.map((r) => r.name).sort()).toEqual(bundle.length === 2 ? bundle : ["mesh-root-2"]);
    expect(pemNames(await valueOf(component.rootCertificatePem))).toEqual(["mesh-root-2"]);
  });

  it("refuses_the_reissue_stage_before_the_new_root_has_propagated", async () => {
    mockState.validityStart.set("mesh-root-2", new Date(Date.now() - 30_000).toISOString());
    const component = await build({
      rotation: { generation: "2", previous: { generation: "1", stage: "reissue" }, propagationMs: 120_000 },
    });
    await expect(valueOf(component.trustBundlePem)).rejects.toThrow(
      /reissue stage is too early[\s\S]*E_RT_PKI_ROTATION_WAIT/,
    );
    expect(lastRun.errors.map((e: Error) => e.message).join("\n")).toMatch(/reissue stage is too early/);
  });

  it("refuses_to_drop_the_old_root_while_its_leaves_may_live", async () => {
    // The new intermediate (the reissue stage) is 10 hours old; leaves live 24 h (+5 min skew).
    mockState.validityStart.set("mesh-intermediate-2", new Date(Date.now() - 10 * HOUR).toISOString());
    const component = await build({
      rotation: { generation: "2", previous: { generation: "1", stage: "drop-root" } },
    });
    await expect(valueOf(component.svids.orders!.certChainPem)).rejects.toThrow(
      /drop-root stage is too early: leaves of root 1 may live until/,
    );
    expect(lastRun.errors.map((e: Error) => e.message).join("\n")).toMatch(/drop-root stage is too early/);
  });
});

describe("MeshCa arguments", () => {
  it("rejects_every_invalid_argument_at_once_before_registering_anything", async () => {
    let thrown: unknown;
    await runStack(() => {
      try {
        new ca.MeshCa("bad", {
          trustDomain: "Shop.Example",
          identities: [
            { name: "orders", spiffeId: "spiffe://shop.example/ns/shop/../sa/orders" },
            { name: "orders", spiffeId: "spiffe://other.example/ns/shop/sa/x" },
          ],
          policy: { workloadTtlMs: 400 * 24 * HOUR },
          rotation: { generation: "2", previous: { generation: "2", stage: "add-root" } },
        });
      } catch (err) {
        thrown = err;
      }
    });
    expect(pulumi.InputPropertiesError.isInstance(thrown)).toBe(true);
    const paths = (thrown as pulumi.InputPropertiesError).errors.map((e) => e.propertyPath);
    expect(paths).toEqual([
      "trustDomain",
      "identities[0].spiffeId",
      "identities[1].name",
      "policy.workloadTtlMs",
      "rotation.previous.generation",
    ]);
    expect(mockState.registered.map((r) => r.type)).toEqual(["pulumi:pulumi:Stack"]);
  });
});
