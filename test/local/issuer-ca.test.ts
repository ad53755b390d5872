/**
 * The dev CA, the dev token issuer and the demo service of local mode, each with real parts: files and
 * their modes on disk, openssl verifying issued chains, jose verifying tokens the way the gateway does,
 * the demo answering over a real socket.
 */
import { execFile } from "node:child_process";
import { generateKeyPairSync } from "node:crypto";
import http from "node:http";
import { mkdtemp, readFile, rm, stat, writeFile } from "node:fs/promises";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { createLocalJWKSet, decodeProtectedHeader, jwtVerify } from "jose";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { IdentityKeeper, openDevCa, DevCaError } from "../../stacks/local/ca.ts";
import {
  loadDevIssuer,
  openDevIssuer,
  signDevToken,
  writeIssuerInfo,
  IssuerError,
} from "../../stacks/local/issuer.ts";
import { createDemoServer, matchPattern } from "../../stacks/local/demo/service.ts";
import { createLocalAdmin } from "../../stacks/local/admin.ts";
import type { LocalPlan } from "../../stacks/local/plan.ts";

const run = promisify(execFile);
const POLICY = {
  rootValidityMs: 10 * 365 * 86_400_000,
  intermediateValidityMs: 365 * 86_400_000,
  clockSkewMs: 300_000,
};
let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "meshgate-local-"));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});
const mode = async (p: string) => (await stat(p)).mode & 0o777;

describe("dev CA", () => {
  it("creates_the_ca_once_with_0600_keys_and_reuses_it", async () => {
    const caDir = join(dir, "ca1");
    const first = await openDevCa(caDir, "shop.example", POLICY);
    expect(first.created).toBe(true);
    expect(await mode(join(caDir, "root-key.pem"))).toBe(0o600);
    expect(await mode(join(caDir, "intermediate-key.pem"))).toBe(0o600);
    const again = await openDevCa(caDir, "shop.example", POLICY);
    expect(again.created).toBe(false);
    expect(again.ca.root.fingerprint).toBe(first.ca.root.fingerprint);
  });

  it("refuses_a_state_dir_of_another_trust_domain", async () => {
    const caDir = join(dir, "ca2");
    await openDevCa(caDir, "shop.example", POLICY);
    await expect(openDevCa(caDir, "other.example", POLICY)).rejects.toThrow(DevCaError);
    await expect(openDevCa(caDir, "other.example", POLICY)).rejects.toThrow(
      /trust domain shop\.example, not other\.example/,
    );
  });

  it("replaces_an_intermediate_that_expires_within_a_day", async () => {
    const caDir = join(dir, "ca3");
    const first = await openDevCa(caDir, "shop.example", { ...POLICY, intermediateValidityMs: 3_600_000 });
    const next = await openDevCa(caDir, "shop.example", POLICY);
    expect(next.renewedIntermediate).toBe(true);
    expect(next.ca.intermediate.certificate.fingerprint).not.toBe(
      first.ca.intermediate.certificate.fingerprint,
    );
    expect(next.ca.root.fingerprint).toBe(first.ca.root.fingerprint);
  });

  it("writes_svids_openssl_verifies_and_renews_them_at_half_life", async () => {
    const caDir = join(dir, "ca4");
    const { ca } = await openDevCa(caDir, "shop.example", POLICY);
    const events: string[] = [];
    const keeper = new IdentityKeeper(ca, {
      ttlMs: 2000,
      clockSkewMs: 0,
      sink: {
        issued: (e) => events.push(`${e.workload}:${e.renewal}`),
        failed: (e) => events.push(`failed ${e.error.message}`),
      },
    });
    const idDir = join(dir, "identities", "orders");
    try {
      await keeper.start([
        { workload: "orders", spiffeId: "spiffe://shop.example/ns/shop/sa/orders", dir: idDir },
      ]);
      const firstSerial = keeper.current().orders!.serial;
      expect(await mode(join(idDir, "svid-key.pem"))).toBe(0o600);
      const { stdout } = await run("openssl", [
        "verify",
        "-x509_strict",
        "-CAfile",
        join(caDir, "root.pem"),
        "-untrusted",
        join(idDir, "intermediates.pem"),
        join(idDir, "svid.pem"),
      ]);
      expect(stdout).toContain(": OK");
      // 2 s SVIDs: renewed about 1 s later (the minimum delay), with a new serial written in place.
      const deadline = Date.now() + 5000;
      while (keeper.renewals === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
      expect(keeper.renewals).toBeGreaterThanOrEqual(1);
      expect(keeper.current().orders!.serial).not.toBe(firstSerial);
      expect(events).toContain("orders:true");
    } finally {
      keeper.stop();
    }
  });
});

describe("dev CA renewal timer", () => {
  // Half of a 60-day SVID is past setTimeout's 2^31−1 ms: Node fired the renewal after 1 ms, and each
  // renewal armed the next one the same way (a new SVID written every few milliseconds, forever).
  it("a_lifetime_past_what_a_timer_holds_is_not_renewed_at_once", async () => {
    const { ca } = await openDevCa(join(dir, "ca-long"), "shop.example", POLICY);
    const keeper = new IdentityKeeper(ca, {
      ttlMs: 60 * 86_400_000,
      clockSkewMs: 0,
      sink: { issued: () => {}, failed: () => {} },
    });
    try {
      await keeper.start([
        {
          workload: "orders",
          spiffeId: "spiffe://shop.example/ns/shop/sa/orders",
          dir: join(dir, "identities-long", "orders"),
        },
      ]);
      await new Promise((r) => setTimeout(r, 500));
      expect(keeper.renewals).toBe(0);
    } finally {
      keeper.stop();
    }
  });
});

describe("up with an SVID lifetime the CA cannot issue", () => {
  // The CLI bounds --svid-ttl; up() itself (its other callers) used to let the PkiError escape as a
  // stack trace instead of the command's error.
  it("fails_with_an_UpError_naming_the_lifetime_not_a_PkiError", async () => {
    const { up, UpError } = await import("../../stacks/local/up.ts");
    const { TINY } = await import("../support/tiny-mesh.ts");
    const { freeBlock } = await import("../support/ports.ts");
    await writeFile(join(dir, "tiny.yaml"), TINY);
    const base = await freeBlock(40);
    const err = await up({
      specPath: join(dir, "tiny.yaml"),
      stateDir: join(dir, "state-ttl"),
      gatewayPort: base,
      adminPort: base + 1,
      portBase: base + 10,
      svidTtlMs: 100_000_000_000 * 86_400_000,
      prometheus: false,
      out: () => {},
      err: () => {},
    }).then(
      () => null,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(UpError);
    expect(err).toMatchObject({ code: "E_RT_PKI_LIFETIME" });
    expect((err as Error).message).toContain("issuing the SVIDs failed");
  });
});

describe("dev token issuer", () => {
  const info = {
    issuer: "http://127.0.0.1:9901/",
    jwksUri: "http://127.0.0.1:9901/.well-known/jwks.json",
    providers: [{ name: "main", audiences: ["shop-api"] }],
  };

  it("signs_es256_tokens_that_verify_against_its_jwks_with_pinned_claims", async () => {
    const idir = join(dir, "issuer1");
    const { issuer, created } = await openDevIssuer(idir);
    expect(created).toBe(true);
    expect(await mode(join(idir, "jwt-key.pem"))).toBe(0o600);
    expect(issuer.jwks.keys[0]).not.toHaveProperty("d");
    const token = await signDevToken(issuer, info, {
      sub: "alice",
      scopes: ["orders:read", "orders:write"],
      ttlMs: 60_000,
    });
    const { payload, protectedHeader } = await jwtVerify(
      token,
      createLocalJWKSet({ keys: [...issuer.jwks.keys] }),
      {
        issuer: info.issuer,
        audience: "shop-api",
        algorithms: ["ES256"],
        requiredClaims: ["exp", "iss", "aud"],
      },
    );
    expect(payload).toMatchObject({ sub: "alice", scope: "orders:read orders:write" });
    expect(payload.exp! - payload.iat!).toBe(60);
    expect(protectedHeader.kid).toBe(issuer.jwks.keys[0]!.kid);
  });

  it("reuses_its_key_across_runs", async () => {
    const idir = join(dir, "issuer2");
    const a = await openDevIssuer(idir);
    const b = await openDevIssuer(idir);
    expect(b.created).toBe(false);
    expect(b.issuer.kid).toBe(a.issuer.kid);
  });

  it("refuses_an_issuer_json_cut_short_or_edited_with_a_clear_error", async () => {
    const idir = join(dir, "issuer-bad-info");
    await openDevIssuer(idir);
    for (const text of [
      "{bad",
      "null",
      '{"issuer":"x","jwksUri":"y"}',
      '{"issuer":"x","jwksUri":"y","providers":[1]}',
    ]) {
      await writeFile(join(idir, "issuer.json"), text);
      await expect(loadDevIssuer(idir), text).rejects.toMatchObject({
        code: "E_LOCAL_ISSUER",
        message: expect.stringMatching(/is not what `meshgate up` writes/),
      });
    }
  });

  it.each([
    ["not a key", "not a key\n"],
    [
      "a key cut short",
      "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEH\n-----END PRIVATE KEY-----\n",
    ],
    ["an RSA key", null],
  ])("refuses_a_damaged_or_foreign_jwt_key_pem_with_a_clear_error (%s)", async (what, text) => {
    const idir = join(dir, `issuer-bad-key-${what.replace(/ /g, "-")}`);
    await openDevIssuer(idir);
    await writeIssuerInfo(idir, info);
    const pem =
      text ??
      (generateKeyPairSync("rsa", { modulusLength: 2048 }).privateKey.export({
        type: "pkcs8",
        format: "pem",
      }) as string);
    await writeFile(join(idir, "jwt-key.pem"), pem);
    for (const open of [() => openDevIssuer(idir), () => loadDevIssuer(idir)])
      await expect(open()).rejects.toMatchObject({
        code: "E_LOCAL_ISSUER",
        message: expect.stringMatching(/jwt-key\.pem is not the ES256 key `meshgate up` writes: delete it/),
      });
  });

  it("loads_what_up_wrote_and_refuses_without_it", async () => {
    const idir = join(dir, "issuer3");
    await expect(loadDevIssuer(idir)).rejects.toThrow(IssuerError);
    await expect(loadDevIssuer(idir)).rejects.toThrow(/run `meshgate up SPEC` first/);
    const { issuer } = await openDevIssuer(idir);
    await writeIssuerInfo(idir, info);
    const loaded = await loadDevIssuer(idir);
    expect(loaded.info).toEqual(info);
    const t = await signDevToken(loaded.issuer, loaded.info, { sub: "bob", audience: "other" });
    expect(decodeProtectedHeader(t)).toMatchObject({ alg: "ES256", kid: issuer.kid });
    await expect(
      jwtVerify(t, createLocalJWKSet({ keys: [...issuer.jwks.keys] }), {
        audience: "other",
        algorithms: ["ES256"],
      }),
    ).resolves.toBeTruthy();
    expect(JSON.parse(await readFile(join(idir, "issuer.json"), "utf8"))).toEqual(info);
  });
});

async function listen(server: http.Server): Promise<number> {
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  return (server.address() as AddressInfo).port;
}
async function get(port: number, path: string, headers: Record<string, string> = {}) {
  const r = await fetch(`http://127.0.0.1:${port}${path}`, { headers });
  return { status: r.status, headers: r.headers, body: (await r.json()) as Record<string, unknown> };
}

describe("demo service", () => {
  it.each([
    ["/orders", "/orders", {}],
    ["/orders/*", "/orders/7", { p1: "7" }],
    ["/payments/{id}", "/payments/p-1", { id: "p-1" }],
    ["/inventory/**", "/inventory/a/b", { rest: "a/b" }],
    ["/orders", "/orders/7", null],
    ["/orders/*", "/orders", null],
    ["/products/*", "/catalog/1", null],
  ])("matches %s against %s", (pattern, path, want) => {
    expect(matchPattern(pattern, path)).toEqual(want);
  });

  it("answers_declared_paths_with_json_and_calls_each_dependency", async () => {
    const callee = http.createServer((req, res) => {
      res.writeHead(200, { "content-type": "application/json" });
      res.end(
        JSON.stringify({
          got: req.url,
          depth: req.headers["x-meshgate-demo-depth"],
          rid: req.headers["x-request-id"],
        }),
      );
    });
    const calleePort = await listen(callee);
    const demo = createDemoServer({
      service: "orders",
      port: 0,
      paths: ["/orders", "/orders/*", "/me"],
      calls: [
        { service: "payments", method: "GET", path: "/payments/42", url: `http://127.0.0.1:${calleePort}` },
      ],
      outbound: `http://127.0.0.1:${calleePort}`,
    });
    const port = await listen(demo);
    try {
      expect((await get(port, "/healthz")).body).toEqual({ status: "ok", service: "orders" });
      const one = await get(port, "/orders/7", { "x-request-id": "r-1" });
      expect(one.status).toBe(200);
      expect(one.body).toMatchObject({
        id: "7",
        service: "orders",
        calls: { payments: { status: 200, body: { got: "/payments/42", depth: "1", rid: "r-1" } } },
      });
      expect((await get(port, "/orders")).body.items).toHaveLength(2);
      expect((await get(port, "/me", { "x-meshgate-subject": "alice" })).body.id).toBe("alice");
      const deep = await get(port, "/orders/1", { "x-meshgate-demo-depth": "3" });
      expect(deep.body.calls).toEqual({}); // a cycle stops at depth 3
      expect((await get(port, "/nothing")).status).toBe(404);
      const debug = await get(port, "/__meshgate/call?service=payments&path=/x");
      expect(debug.body).toMatchObject({ got: "/x" });
    } finally {
      demo.close();
      callee.close();
    }
  });
});

describe("local admin server", () => {
  it("answers_the_plan_status_and_index_only_for_loopback_host_names", async () => {
    // A page that rebinds its DNS name to 127.0.0.1 must not read the plan (configs, paths, the apps'
    // environment): the same Host check as the topology page. The JWKS and /healthz are public.
    const plan = {
      mesh: "shop",
      urls: { gateway: "http://127.0.0.1:8080", prometheus: null },
      processes: [{ name: "orders", env: { DATABASE_PASSWORD: "hunter2" } }],
      files: [],
    } as unknown as LocalPlan;
    const admin = createLocalAdmin({ plan, jwks: { keys: [] }, status: () => [] });
    const port = await admin.listen(0);
    const status = (path: string, host: string) =>
      new Promise<number>((resolve, reject) =>
        http
          .get({ host: "127.0.0.1", port, path, headers: { host } }, (res) => {
            res.resume();
            resolve(res.statusCode!);
          })
          .on("error", reject),
      );
    try {
      const seen: string[] = [];
      for (const path of ["/api/plan", "/api/status", "/", "/.well-known/jwks.json", "/healthz"])
        for (const host of [
          `rebound.example:${port}`,
          `127.0.0.1:${port}`,
          `localhost:${port}`,
          `[::1]:${port}`,
        ])
          seen.push(`${path} ${host.replace(`:${port}`, "")} ${await status(path, host)}`);
      expect(seen).toEqual([
        "/api/plan rebound.example 403", "/api/plan 127.0.0.1 200", "/api/plan localhost 200", "/api/plan [::1] 200",
        "/api/status rebound.example 403", "/api/status 127.0.0.1 200", "/api/status localhost 200", "/api/status [::1] 200",
        "/ rebound.example 403", "/ 127.0.0.1 200", "/ localhost 200", "/ [::1] 200",
        "/.well-known/jwks.json rebound.example 200", "/.well-known/jwks.json 127.0.0.1 200",
        "/.well-known/jwks.json localhost 200", "/.well-known/jwks.json [::1] 200",
        "/healthz rebound.example 200", "/healthz 127.0.0.1 200", "/healthz localhost 200", "/healthz [::1] 200",
      ]); // prettier-ignore
    } finally {
      await admin.close();
    }
  });

  it("serves_its_index_without_script_or_framing_and_no_answer_a_browser_may_sniff", async () => {
    const plan = {
      mesh: "shop",
      urls: { gateway: "http://127.0.0.1:8080", prometheus: null },
      processes: [],
      files: [],
    } as unknown as LocalPlan;
    const admin = createLocalAdmin({ plan, jwks: { keys: [] }, status: () => [] });
    const port = await admin.listen(0);
    try {
      const seen: Record<string, (string | null)[]> = {};
      for (const path of ["/", "/api/plan", "/api/status", "/.well-known/jwks.json", "/healthz"]) {
        const r = await fetch(`http://127.0.0.1:${port}${path}`);
        await r.arrayBuffer();
        seen[path] = ["x-content-type-options", "content-security-policy", "x-frame-options"].map((h) =>
          r.headers.get(h),
        );
      }
      const json = ["nosniff", null, null];
      expect(seen).toEqual({
        "/": [
          "nosniff",
          "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
          "DENY",
        ],
        "/api/plan": json,
        "/api/status": json,
        "/.well-known/jwks.json": json,
        "/healthz": json,
      });
    } finally {
      await admin.close();
    }
  });

  it("serves_jwks_plan_status_and_tries_mounted_handlers_first", async () => {
    const plan = {
      mesh: "shop",
      urls: { gateway: "http://127.0.0.1:8080", prometheus: null },
      processes: [],
      files: [{ path: "/x/gateway.json", content: `{"keyHashes":["sha256:${"c".repeat(64)}"]}` }],
    } as unknown as LocalPlan;
    const admin = createLocalAdmin({ plan, jwks: { keys: [{ kty: "EC", kid: "k1" }] }, status: () => [] });
    const port = await admin.listen(0);
    try {
      expect((await get(port, "/.well-known/jwks.json")).body).toEqual({ keys: [{ kty: "EC", kid: "k1" }] });
      const p = await fetch(`http://127.0.0.1:${port}/api/plan`).then((r) => r.text());
      expect(p).not.toContain("c".repeat(64));
      expect(p).toContain("[redacted]");
      expect((await get(port, "/healthz")).status).toBe(200);
      const index = await fetch(`http://127.0.0.1:${port}/`).then((r) => r.text());
      expect(index).toContain("meshgate up · shop");
      admin.handlers.push((req, res) => {
        if (req.url !== "/") return false;
        res.end("topology");
        return true;
      });
      expect(await fetch(`http://127.0.0.1:${port}/`).then((r) => r.text())).toBe("topology");
      expect((await get(port, "/nope")).status).toBe(404);
    } finally {
      await admin.close();
    }
  });
});
