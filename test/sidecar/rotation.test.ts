/**
 * Rotation under load — the mesh issue's done-when: 200 requests per second for 2 minutes through two
 * sidecars (app → web's outbound → orders' inbound over mTLS → app), with 10-second leaves renewed
 * continuously and a staged root rotation in the middle, gives 0 failed requests and 0 failed
 * handshakes.
 *
 * - The issuer of this test plays cert-manager / the local mode: it writes each identity directory the
 *   way the kubelet updates a mounted Secret (a `..data` symlink swap), renewing each leaf every 4 s
 *   (before the sidecars' renewal time, half-way through the 10 s leaf).
 * - The root rotation follows `planRotation` step by step and runs a step only when `checkStep` allows it
 *   (the waits are polled until it does): add root 2 to the bundles → wait for propagation → a new
 *   intermediate under root 2, added to the known intermediates → reissue both leaves from it → wait
 *   until every leaf of root 1 expired → drop root 1 → retire intermediate 1.
 * - Handshakes happen all the time: orders closes each inbound connection after 25 requests (so web's
 *   pool reconnects several times a second with whatever SVIDs are current), and a prober opens a fresh
 *   mTLS connection to orders every 200 ms with web's current files and sends one request.
 *
 * MESHGATE_ROTATION_SECONDS shortens the run for local iterations (default 120, the issue's 2 minutes).
 */
import { mkdir, readdir, readFile, realpath, rm } from "node:fs/promises";
import http from "node:http";
import { join } from "node:path";
import tls from "node:tls";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  certificatesToPem,
  checkStep,
  createIntermediateCa,
  createRootCa,
  parseCertificate,
  parseCertificates,
  planRotation,
  spiffeServerIdentity,
  SvidIssuer,
  SvidVerifier,
  TrustBundle,
  type IssuedCa,
  type ParsedCertificate,
  type PkiInventory,
  type RotationStep,
} from "../../runtime/pki/index.ts";
import { tempDir } from "../pki/support.ts";
import { startUpstream, type Upstream } from "../support/gateway.ts";
import {
  localSidecar,
  meshConfigs,
  metricValue,
  spiffe,
  startTestSidecar,
  TD,
  until,
  writeIdentityKubernetesStyle,
  type TestSidecar,
} from "./support.ts";

const SECONDS = Number(process.env.MESHGATE_ROTATION_SECONDS ?? 120);
const RPS = 200;
const LEAF_TTL_MS = 10_000;
const RENEW_EVERY_MS = 4_000;
const SKEW_MS = 1_000;
const PROPAGATION_MS = 3_000;
/** The rotation starts at 40 % of the run, so that it sits in the middle with steady traffic around it. */
const ROTATION_AT_MS = SECONDS * 400;

const IDENTITIES = ["web", "orders"] as const;
type Name = (typeof IDENTITIES)[number];

/** The CA side of the test: what the bundles, known intermediates and new leaves are right now. */
class Issuer {
  roots: IssuedCa[];
  intermediates: IssuedCa[];
  issuing: IssuedCa;
  readonly bundleSince = new Map<string, number>();
  /** Every leaf issued and not yet expired (superseded ones included: the guard needs them). */
  readonly leaves: ParsedCertificate[] = [];
  renewals = 0;
  readonly dirs: Record<Name, string>;

  constructor(root: IssuedCa, intermediate: IssuedCa, dirs: Record<Name, string>) {
    this.roots = [root];
    this.intermediates = [intermediate];
    this.issuing = intermediate;
    this.dirs = dirs;
  }

  inventory(): PkiInventory {
    const now = Date.now();
    const live = this.leaves.filter((l) => l.notAfter + SKEW_MS > now);
    this.leaves.splice(0, this.leaves.length, ...live);
    return {
      trustDomain: TD,
      bundle: this.roots.map((r) => r.certificate),
      bundleSince: this.bundleSince,
      intermediates: this.intermediates.map((i) => i.certificate),
      leaves: live,
    };
  }

  async renew(name: Name): Promise<void> {
    const svid = await new SvidIssuer(this.issuing, { clockSkewMs: SKEW_MS }).issue(spiffe(name), {
      ttlMs: LEAF_TTL_MS,
    });
    this.leaves.push(parseCertificate(svid.der));
    await writeIdentityKubernetesStyle(this.dirs[name], {
      svid,
      bundlePem: certificatesToPem(this.roots.map((r) => r.certificate)),
      intermediatesPem: certificatesToPem(this.intermediates.map((i) => i.certificate)),
    });
    await pruneGenerations(this.dirs[name]);
    this.renewals++;
  }

  async renewAll(): Promise<void> {
    for (const name of IDENTITIES) await this.renew(name);
  }
}

/** Removes old generations as the kubelet does (keeping a few, for readers that resolved one just before). */
async function pruneGenerations(dir: string): Promise<void> {
  const gens = (await readdir(dir))
    .filter((n) => n.startsWith("..") && n !== "..data" && n !== "..data_tmp")
    .sort((a, b) => generationTime(a) - generationTime(b));
  for (const g of gens.slice(0, -6)) await rm(join(dir, g), { recursive: true, force: true });
}
const generationTime = (name: string) => Number(/^\.\.(\d+)_\d+_(\d+)$/.exec(name)?.[2] ?? 0);

let tmp: Awaited<ReturnType<typeof tempDir>>;
let app: Upstream;
let web: TestSidecar;
let orders: TestSidecar;
let issuer: Issuer;

beforeAll(async () => {
  tmp = await tempDir("sidecar-rotation");
  const root = await createRootCa({ trustDomain: TD, clockSkewMs: SKEW_MS });
  const intermediate = await createIntermediateCa(root, { clockSkewMs: SKEW_MS });
  const dirs = { web: join(tmp.dir, "web"), orders: join(tmp.dir, "orders") };
  for (const d of Object.values(dirs)) await mkdir(d, { recursive: true });
  issuer = new Issuer(root, intermediate, dirs);
  await issuer.renewAll();
  app = await startUpstream();
  const configs = meshConfigs({
    web: { image: "r/web:1", port: 8080, calls: ["orders"] },
    // Generous timeouts: the suite runs test files in parallel on a small machine, and a starved event
    // loop must show up as latency here, not as timeouts (which would then eject the only endpoint) —
    // a handshake storm after a stall (the load catching up, 25 requests per connection) on a starved
    // CPU takes longer than the default 1 s connect timeout.
    orders: {
      image: "r/orders:1",
      port: 8080,
      allow: [{ from: ["web"] }],
      timeout: "30s",
      connectTimeout: "10s",
      retries: { perTryTimeout: "30s" },
    },
  });
  const cfg = (name: Name) => configs.find((c) => c.name === name)!;
  const svid = { clockSkewMs: SKEW_MS };
  orders = await startTestSidecar(
    localSidecar(cfg("orders"), { identityDir: dirs.orders, appPort: app.port, svid }),
    { maxRequestsPerSocket: 25 },
  );
  web = await startTestSidecar(
    localSidecar(cfg("web"), {
      identityDir: dirs.web,
      appPort: 1,
      endpoints: { orders: [orders.ports.inbound] },
      svid,
    }),
  );
  expect(orders.ready() && web.ready()).toBe(true);
}, 60_000);

afterAll(async () => {
  await web?.drain();
  await orders?.drain();
  await app?.close();
  await tmp?.cleanup();
});

/** One request through web's outbound proxy port; resolves with the status or the error's code. */
const agent = new http.Agent({ keepAlive: true, maxSockets: 64 });
function call(i: number): Promise<string> {
  return new Promise((resolve) => {
    const req = http.request(
      {
        host: "127.0.0.1",
        port: web.ports.outbound,
        path: `http://orders/load/${i}`,
        agent,
        timeout: 60_000,
      },
      (res) => {
        res.resume();
        res.on("end", () => resolve(String(res.statusCode)));
        res.on("error", (e) => resolve(`response error ${(e as NodeJS.ErrnoException).code ?? e.message}`));
      },
    );
    req.on("timeout", () => req.destroy(new Error("timeout")));
    req.on("error", (e) => resolve(`error ${(e as NodeJS.ErrnoException).code ?? e.message}`));
    req.end();
  });
}

/**
 * A fresh mTLS connection to orders with web's current files (read from one generation), verifying
 * orders' SPIFFE ID, and one request on it: "ok" or what failed.
 */
async function probe(): Promise<string> {
  const gen = await realpath(join(issuer.dirs.web, "..data"));
  const [chain, key, bundlePem, intermediatesPem] = await Promise.all(
    ["svid.pem", "svid-key.pem", "bundle.pem", "intermediates.pem"].map((f) =>
      readFile(join(gen, f), "utf8"),
    ),
  );
  const verifier = new SvidVerifier(TrustBundle.fromPem(TD, bundlePem!), {
    intermediates: parseCertificates(intermediatesPem!),
  });
  return new Promise((resolve) => {
    const socket = tls.connect({
      host: "127.0.0.1",
      port: orders.ports.inbound,
      ca: bundlePem,
      cert: chain,
      key,
      minVersion: "TLSv1.3",
      checkServerIdentity: spiffeServerIdentity(verifier, spiffe("orders")),
    });
    let text = "";
    const timer = setTimeout(() => socket.destroy(new Error("probe timeout")), 60_000);
    socket.on("secureConnect", () =>
      socket.write("GET /probe HTTP/1.1\r\nHost: orders\r\nConnection: close\r\n\r\n"),
    );
    socket.on("data", (d: Buffer) => (text += d.toString()));
    socket.on("error", (e) => {
      clearTimeout(timer);
      resolve(`handshake/connection error ${(e as NodeJS.ErrnoException).code ?? e.message}`);
    });
    socket.on("close", () => {
      clearTimeout(timer);
      resolve(text.startsWith("HTTP/1.1 200 ") ? "ok" : `bad response ${JSON.stringify(text.slice(0, 80))}`);
    });
  });
}

describe("rotation under load", () => {
  it(
    "serves_200_rps_through_two_sidecars_with_10_second_leaves_and_a_staged_root_rotation_without_a_failure",
    async () => {
      const started = Date.now();
      const end = started + SECONDS * 1000;
      const results = new Map<string, number>();
      const probes = new Map<string, number>();
      const pending: Promise<void>[] = [];
      const executed: { step: RotationStep; at: number }[] = [];
      let sent = 0;

      // ── load: 200 rps, open loop (2 requests every 10 ms) ──
      const loadTimer = setInterval(() => {
        const due = Math.floor(((Date.now() - started) / 1000) * RPS);
        while (sent < due && Date.now() < end) {
          const i = sent++;
          pending.push(call(i).then((r) => void results.set(r, (results.get(r) ?? 0) + 1)));
        }
      }, 10);
      // ── handshakes: a fresh mTLS connection every 200 ms ──
      const probeTimer = setInterval(() => {
        pending.push(probe().then((r) => void probes.set(r, (probes.get(r) ?? 0) + 1)));
      }, 200);
      // ── renewals: every identity every 4 s ──
      let renewing = Promise.resolve();
      const renewTimer = setInterval(() => {
        renewing = renewing.then(() => issuer.renewAll());
      }, RENEW_EVERY_MS);

      // ── the staged root rotation, in the middle ──
      await sleepUntil(started + ROTATION_AT_MS);
      const root2 = await createRootCa({ trustDomain: TD, clockSkewMs: SKEW_MS });
      const plan = planRotation(
        issuer.inventory(),
        { kind: "root", newRoot: root2.certificate },
        {
          now: Date.now(),
          workloadTtlMs: LEAF_TTL_MS,
          clockSkewMs: SKEW_MS,
          propagationMs: PROPAGATION_MS,
          warningWindowMs: 60_000,
        },
      );
      expect(plan.steps.map((s) => s.action)).toEqual([
        "add-root",
        "wait-propagation",
        "issue-intermediate",
        "reissue-leaf",
        "reissue-leaf",
        "wait-leaf-expiry",
        "drop-root",
        "retire-intermediate",
      ]);
      let int2: IssuedCa | null = null;
      let earlyDropsRefused = 0;
      for (const step of plan.steps) {
        // A step runs only once the guard allows it; a wait is polled until it does.
        for (;;) {
          await renewing;
          const check = checkStep(issuer.inventory(), withNewIntermediate(step, int2), Date.now(), {
            clockSkewMs: SKEW_MS,
            propagationMs: PROPAGATION_MS,
          });
          if (check.ok) break;
          expect(["E_RT_PKI_ROTATION_WAIT"]).toContain(check.code);
          if (step.action === "wait-leaf-expiry") {
            // Meanwhile the guard refuses dropping the old root: leaves chaining to it are still live.
            const drop = plan.steps.find((s) => s.action === "drop-root")!;
            const early = checkStep(issuer.inventory(), drop, Date.now(), {
              clockSkewMs: SKEW_MS,
              propagationMs: PROPAGATION_MS,
            });
            expect(early.ok).toBe(false);
            earlyDropsRefused++;
          }
          if (step.action === "drop-root" || step.action === "retire-intermediate")
            throw new Error(`${step.action} refused after its wait: ${check.reason}`);
          await sleep(250);
        }
        switch (step.action) {
          case "add-root":
            issuer.roots = [...issuer.roots, root2];
            issuer.bundleSince.set(root2.certificate.fingerprint, Date.now());
            renewing = renewing.then(() => issuer.renewAll());
            await renewing;
            await until(() => bothHold((id) => id.bundle.roots.length === 2), 10_000, "new bundle loaded");
            break;
          case "wait-propagation":
            break;
          case "issue-intermediate":
            int2 = await createIntermediateCa(root2, { clockSkewMs: SKEW_MS });
            issuer.intermediates = [...issuer.intermediates, int2];
            renewing = renewing.then(() => issuer.renewAll());
            await renewing;
            await until(
              () =>
                bothHold((id) =>
                  id.intermediates.some((i) => i.fingerprint === int2!.certificate.fingerprint),
                ),
              10_000,
              "new intermediate known",
            );
            break;
          case "reissue-leaf":
            issuer.issuing = int2!;
            renewing = renewing.then(() => issuer.renew(step.spiffeId.endsWith("/web") ? "web" : "orders"));
            await renewing;
            break;
          case "wait-leaf-expiry":
            break;
          case "drop-root":
            issuer.roots = issuer.roots.filter(
              (r) => r.certificate.fingerprint === root2.certificate.fingerprint,
            );
            renewing = renewing.then(() => issuer.renewAll());
            await renewing;
            await until(() => bothHold((id) => id.bundle.roots.length === 1), 10_000, "old root dropped");
            break;
          case "retire-intermediate":
            issuer.intermediates = [int2!];
            renewing = renewing.then(() => issuer.renewAll());
            await renewing;
            break;
          default:
            break;
        }
        executed.push({ step, at: Date.now() - started });
      }
      const rotationDoneAt = Date.now() - started;

      // ── the rest of the run, then wait for every request ──
      await sleepUntil(end);
      clearInterval(loadTimer);
      clearInterval(probeTimer);
      clearInterval(renewTimer);
      await renewing;
      await Promise.all(pending);

      const total = [...results.values()].reduce((a, b) => a + b, 0);
      const summary = {
        seconds: SECONDS,
        requests: Object.fromEntries(results),
        probes: Object.fromEntries(probes),
        renewals: issuer.renewals,
        rotation: executed.map((e) => `${Math.round(e.at / 100) / 10}s ${e.step.action}`),
        rotationDoneAt,
      };
      console.log(JSON.stringify(summary, null, 2));
      if (results.size > 1) {
        // Why requests failed: web's own error codes and upstream outcomes, and its last warnings.
        const text = await (await fetch(`${web.adminUrl}/metrics`)).text();
        console.log(
          text
            .split("\n")
            .filter((l) =>
              /^meshgate_(sidecar_errors_total|upstream_requests_total|upstream_ejections_total|retries_total)/.test(
                l,
              ),
            )
            .join("\n"),
        );
        console.log(
          web.logs
            .filter((l) => (l.level as number) >= 40)
            .slice(-10)
            .map((l) => JSON.stringify(l))
            .join("\n"),
        );
      }

      // 0 failed requests
      expect(total).toBeGreaterThanOrEqual(Math.floor(SECONDS * RPS * 0.95));
      expect(Object.fromEntries(results)).toEqual({ "200": total });
      // 0 failed handshakes: the prober's, orders' inbound (OpenSSL and verifier refusals), web's pool
      expect(Object.fromEntries(probes)).toEqual({ ok: probes.get("ok") });
      expect(probes.get("ok")).toBeGreaterThan(SECONDS * 4);
      const ordersMetrics = await (await fetch(`${orders.adminUrl}/metrics`)).text();
      const webMetrics = await (await fetch(`${web.adminUrl}/metrics`)).text();
      expect(metricValue(ordersMetrics, "meshgate_tls_handshake_failures_total")).toBe(0);
      expect(metricValue(ordersMetrics, "meshgate_tls_handshakes_total")).toBeGreaterThan((total / 25) * 0.9);
      expect(metricValue(webMetrics, "meshgate_upstream_requests_total", { cluster: "orders" })).toBe(
        metricValue(webMetrics, "meshgate_upstream_requests_total", {
          cluster: "orders",
          outcome: "success",
        }),
      );
      expect(metricValue(webMetrics, "meshgate_retries_total")).toBe(0);
      // the identities were renewed all along, and the rotation completed: everything chains to root 2 now
      expect(issuer.renewals).toBeGreaterThan((SECONDS * 1000 * 2) / RENEW_EVERY_MS - 4);
      expect(metricValue(ordersMetrics, "meshgate_identity_reloads_total", { result: "rejected" })).toBe(0);
      expect(metricValue(webMetrics, "meshgate_identity_reloads_total", { result: "rejected" })).toBe(0);
      for (const s of [web, orders]) {
        const id = s.identity()!;
        expect(id.bundle.roots.map((r) => r.fingerprint)).toEqual([root2.certificate.fingerprint]);
        expect(id.leaf.issuerName).toBe(int2!.certificate.subjectName);
        expect(s.ready()).toBe(true);
      }
      expect(rotationDoneAt).toBeLessThan(SECONDS * 1000 - 10_000);
      expect(earlyDropsRefused).toBeGreaterThan(0);
    },
    (SECONDS + 90) * 1000,
  );
});

/** Both sidecars serve an identity for which `test` holds. */
function bothHold(test: (id: NonNullable<ReturnType<TestSidecar["identity"]>>) => boolean): boolean {
  return [web, orders].every((s) => {
    const id = s.identity();
    return id !== null && test(id);
  });
}

/** reissue-leaf / issue-intermediate steps name the intermediate once it exists (planned before it did). */
function withNewIntermediate(step: RotationStep, int2: IssuedCa | null): RotationStep {
  if (int2 === null) return step;
  const ref = {
    subject: int2.certificate.subject,
    fingerprint: int2.certificate.fingerprint,
    notAfter: int2.certificate.notAfter,
  };
  if (step.action === "reissue-leaf") return { ...step, intermediate: ref };
  return step;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
async function sleepUntil(t: number): Promise<void> {
  const ms = t - Date.now();
  if (ms > 0) await sleep(ms);
}
