/**
 * `meshgate pki init|issue|inspect|plan-rotation`: the mesh PKI as files, for people who want them.
 * Exit codes as for every meshgate command: 0 success, 1 the operation (or a verdict) failed, 2 usage.
 * Private keys are written (mode 0600) but never printed.
 */
import { readdir, readFile, stat } from "node:fs/promises";
import { join } from "node:path";
import type { ParseArgsConfig } from "node:util";
import { parseCommandLine } from "../runtime/args.ts";
import type { Io } from "./main.ts";
import type {
  ParsedCertificate,
  PkiError,
  RotationPlan,
  StepCheck,
  SvidVerdict,
} from "../runtime/pki/index.ts";
import { compareCodeUnits } from "../runtime/contract/canonical.ts";

/** The PKI loads @peculiar/x509 (and reflect-metadata) on first use, so `--help` stays fast. */
const pki = () => import("../runtime/pki/index.ts");
const units = () => import("../components/spec/units.ts");

class UsageError extends Error {}

interface Subcommand {
  summary: string;
  usage: string;
  details: string;
  options: NonNullable<ParseArgsConfig["options"]>;
  /** Most positionals accepted (FILE… takes many). */
  maxPositionals: number;
  run(positionals: string[], values: Record<string, unknown>, io: Io): Promise<number>;
}

const help = { type: "boolean", short: "h" } as const;
const format = { type: "string", default: "text" } as const;

const SUBCOMMANDS: Record<string, Subcommand> = {
  init: {
    summary: "create a root CA and an intermediate (issuer) for a trust domain",
    usage:
      "meshgate pki init --trust-domain D --out DIR [--root-validity 10y] [--intermediate-validity 1y] [--clock-skew 5m]",
    details:
      "Writes DIR/root.pem, DIR/root-key.pem, DIR/intermediate.pem, DIR/intermediate-key.pem and\n" +
      "DIR/bundle.pem (the roots peers trust). Keys are PKCS#8 PEM with mode 0600; keep root-key.pem\n" +
      "offline. Refuses to overwrite an existing CA key (rotate with a new directory instead).\n" +
      "The intermediate never outlives the root: its validity is clamped to the root's.",
    options: {
      "trust-domain": { type: "string" },
      out: { type: "string" },
      "root-validity": { type: "string", default: "10y" },
      "intermediate-validity": { type: "string", default: "1y" },
      "clock-skew": { type: "string", default: "5m" },
      help,
    },
    maxPositionals: 0,
    async run(_p, values, io) {
      const td = required(values, "trust-domain");
      const out = required(values, "out");
      const rootValidityMs = await duration(values, "root-validity");
      const intermediateValidityMs = await duration(values, "intermediate-validity");
      const clockSkewMs = await duration(values, "clock-skew");
      const { checkTrustDomain, createRootCa, createIntermediateCa, writeCaDirectory } = await pki();
      const tdError = checkTrustDomain(td);
      if (tdError) throw new UsageError(`--trust-domain: ${tdError.reason} [${tdError.code}]`);
      const root = await createRootCa({ trustDomain: td, validityMs: rootValidityMs, clockSkewMs });
      const intermediate = await createIntermediateCa(root, {
        validityMs: intermediateValidityMs,
        clockSkewMs,
      });
      const files = await writeCaDirectory(out, { root, intermediate });
      io.out(`✓ created the CA of trust domain ${td} in ${out}`);
      io.out(certLine("root", root.certificate));
      io.out(certLine("intermediate", intermediate.certificate));
      if (intermediate.clamped)
        io.out("  note: the intermediate's validity was clamped to the root's notAfter");
      io.out(fileList(files));
      return 0;
    },
  },
  issue: {
    summary: "issue a workload X.509-SVID from a CA directory",
    usage:
      "meshgate pki issue --ca DIR (--spiffe-id ID | --service S --namespace N) --out DIR [--ttl 24h] [--clock-skew 5m]\n" +
      "                   [--dns NAME]…",
    details:
      "Issues an SVID (ECDSA P-256, one URI SAN) from DIR's intermediate and writes OUT/svid.pem (leaf,\n" +
      "then intermediate), OUT/svid-key.pem (mode 0600) and OUT/bundle.pem. --service/--namespace make\n" +
      "spiffe://<trust-domain>/ns/<namespace>/sa/<service>. The leaf never outlives the intermediate: its\n" +
      "notAfter is clamped to the intermediate's (and the output says so). --dns adds DNS SANs next to the\n" +
      "SPIFFE ID, for clients that check host names (curl, browsers).",
    options: {
      ca: { type: "string" },
      "spiffe-id": { type: "string" },
      service: { type: "string" },
      namespace: { type: "string" },
      out: { type: "string" },
      dns: { type: "string", multiple: true },
      ttl: { type: "string", default: "24h" },
      "clock-skew": { type: "string", default: "5m" },
      help,
    },
    maxPositionals: 0,
    async run(_p, values, io) {
      const caDir = required(values, "ca");
      const out = required(values, "out");
      const ttlMs = await duration(values, "ttl");
      const clockSkewMs = await duration(values, "clock-skew");
      const byId = typeof values["spiffe-id"] === "string";
      const byService = typeof values.service === "string" || typeof values.namespace === "string";
      if (byId === byService) throw new UsageError("give either --spiffe-id ID or --service S --namespace N");
      const { loadCaDirectory, parseSpiffeId, SvidIssuer, workloadSpiffeId, writeSvidDirectory } =
        await pki();
      const ca = await loadCaDirectory(caDir);
      let id: string;
      if (byId) {
        id = values["spiffe-id"] as string;
        const parsed = parseSpiffeId(id);
        if (!parsed.ok) throw new UsageError(`--spiffe-id: ${parsed.reason} [${parsed.code}]`);
        if (parsed.path === "")
          throw new UsageError(
            `--spiffe-id: ${id} names a trust domain, not a workload [E_RT_PKI_ID_ROOT_PATH]`,
          );
      } else {
        const service = required(values, "service");
        const namespace = required(values, "namespace");
        // Each is one path segment: "a/b" would make another ID's shape (ns/x/sa/a/b).
        for (const [flag, v] of [
          ["--service", service],
          ["--namespace", namespace],
        ] as const)
          if (v.includes("/")) throw new UsageError(`${flag}: ${JSON.stringify(v)} is one name, without '/'`);
        id = workloadSpiffeId(ca.trustDomain, namespace, service);
        const parsed = parseSpiffeId(id);
        if (!parsed.ok) throw new UsageError(`--service/--namespace: ${parsed.reason} [${parsed.code}]`);
      }
      const dnsNames = (values.dns as string[] | undefined) ?? [];
      const svid = await new SvidIssuer(ca.intermediate).issue(id, { ttlMs, clockSkewMs, dnsNames });
      const files = await writeSvidDirectory(out, svid, ca.bundle);
      io.out(`✓ issued ${id}`);
      io.out(
        `  valid ${iso(svid.notBefore)} → ${iso(svid.notAfter)}  serial ${svid.serial}` +
          (svid.clamped ? "\n  note: the lifetime was clamped to the intermediate's notAfter" : ""),
      );
      io.out(fileList(files));
      return 0;
    },
  },
  inspect: {
    summary: "print certificates, their SPIFFE IDs, and the SVID verifier's verdict",
    usage:
      "meshgate pki inspect FILE… [--bundle FILE] [--untrusted FILE]… [--expect ID]… [--at TIME] [--format text|json]",
    details:
      "Each FILE is PEM (one or more certificates: the first is inspected as the peer, the others are its\n" +
      "chain) or DER. Prints subject, issuer, SPIFFE ID, validity, key usage, EKU and constraints, then the\n" +
      "chain status against --bundle (roots, grouped by the spiffe://<td> URI SAN each carries) and the\n" +
      "X.509-SVID verifier's verdict. Without --bundle only the leaf rules are checked. --at verifies as of\n" +
      "an ISO time. Exit 1 when any SVID verdict is negative.",
    options: {
      bundle: { type: "string", multiple: true },
      untrusted: { type: "string", multiple: true },
      expect: { type: "string", multiple: true },
      "trust-domain": { type: "string" },
      at: { type: "string" },
      format,
      help,
    },
    maxPositionals: Infinity,
    async run(files, values, io) {
      if (files.length === 0) throw new UsageError("missing FILE (a PEM or DER certificate file)");
      const fmt = choice(values.format, ["text", "json"]);
      const now = at(values.at);
      const lib = await pki();
      const bundleFiles = (values.bundle as string[] | undefined) ?? [];
      const roots = (await Promise.all(bundleFiles.map(readCerts))).flat();
      const extra = (
        await Promise.all(((values.untrusted as string[] | undefined) ?? []).map(readCerts))
      ).flat();
      const expects = (values.expect as string[] | undefined) ?? [];
      const verifier =
        bundleFiles.length > 0
          ? new lib.SvidVerifier(groupRoots(lib, roots, values["trust-domain"] as string | undefined), {
              intermediates: extra,
            })
          : null;
      const reports: InspectReport[] = [];
      for (const file of files) {
        const chain = await readCerts(file);
        const leaf = chain[0]!;
        let verdict: SvidVerdict | null = null;
        let scope: InspectReport["scope"] = "signing-certificate";
        if (!lib.isCa(leaf)) {
          const expect =
            expects.length === 0 ? undefined : expects.length === 1 ? expects[0]! : new Set(expects);
          if (verifier) {
            scope = "chain";
            verdict = verifier.verifyParsed(chain, { now, ...(expect !== undefined ? { expect } : {}) });
          } else {
            scope = "leaf-rules";
            verdict = leafOnly(lib, leaf, now);
          }
        }
        reports.push({ file, certificates: chain.map((c) => describeCert(c, now)), scope, verdict });
      }
      if (fmt === "json") io.out(JSON.stringify({ at: iso(now), reports }, null, 2));
      else for (const r of reports) io.out(formatReport(r));
      return reports.some((r) => r.verdict && !r.verdict.ok) ? 1 : 0;
    },
  },
  "plan-rotation": {
    summary: "print the staged rotation plan for a root or intermediate, with expiry warnings",
    usage:
      "meshgate pki plan-rotation --ca DIR [--new-root DIR] --leaves DIR… [--window 30d] [--workload-ttl 24h]\n" +
      "                            [--clock-skew 5m] [--propagation 2m] [--at TIME] [--format text|json]",
    details:
      "DIR is the current CA directory (its bundle.pem holds the roots peers trust now). With --new-root\n" +
      "(another `meshgate pki init` directory of the same trust domain) it plans a root rotation, without\n" +
      "it an intermediate rotation. --leaves (repeatable) names directories or files holding the issued\n" +
      "leaves (every *.pem below them is read). Each step is checked against the current state: `ready`,\n" +
      "or `blocked` with the code and the leaves in the way. Warnings list every certificate expiring within\n" +
      "--window.",
    options: {
      ca: { type: "string" },
      "new-root": { type: "string" },
      leaves: { type: "string", multiple: true },
      window: { type: "string", default: "30d" },
      "workload-ttl": { type: "string", default: "24h" },
      "clock-skew": { type: "string", default: "5m" },
      propagation: { type: "string", default: "2m" },
      at: { type: "string" },
      format,
      help,
    },
    maxPositionals: 0,
    async run(_p, values, io) {
      const caDir = required(values, "ca");
      const leafPaths = (values.leaves as string[] | undefined) ?? [];
      if (leafPaths.length === 0) throw new UsageError("missing --leaves DIR (where the issued SVIDs are)");
      const fmt = choice(values.format, ["text", "json"]);
      const now = at(values.at);
      const options = {
        now,
        warningWindowMs: await duration(values, "window"),
        workloadTtlMs: await duration(values, "workload-ttl"),
        clockSkewMs: await duration(values, "clock-skew"),
        propagationMs: await duration(values, "propagation"),
      };
      const lib = await pki();
      const current = await readCaCertificates(caDir);
      const next =
        typeof values["new-root"] === "string" ? await readCaCertificates(values["new-root"]) : null;
      const collected = (await Promise.all(leafPaths.map(collectPem))).flat();
      const leaves = collected.filter((c) => !lib.isCa(c));
      const unique = [...new Map(leaves.map((l) => [l.fingerprint, l])).values()];
      // The intermediates the leaves present (svid.pem: leaf, then its intermediate) count too: a live
      // leaf of an earlier intermediate of the same root (replaced in DIR since) still chains to that
      // root, and must block dropping it. Only those a known root really signed are taken.
      const roots = [...current.bundle, ...(next ? [next.root] : [])];
      const presented = collected.filter(
        (c) =>
          lib.isCa(c) &&
          c.subjectName !== c.issuerName &&
          roots.some((r) => r.subjectName === c.issuerName && c.native.verify(r.publicKey)),
      );
      const intermediates = [
        ...new Map(
          [current.intermediate, ...(next ? [next.intermediate] : []), ...presented].map((c) => [
            c.fingerprint,
            c,
          ]),
        ).values(),
      ];
      const inventory = {
        trustDomain: current.trustDomain,
        bundle: current.bundle,
        intermediates,
        leaves: unique,
      };
      if (next && next.trustDomain !== current.trustDomain)
        throw new UsageError(
          `--new-root is a CA of ${next.trustDomain}, --ca of ${current.trustDomain}: a root rotation stays in one trust domain`,
        );
      const plan = lib.planRotation(
        inventory,
        next
          ? { kind: "root", newRoot: next.root, newIntermediate: next.intermediate }
          : { kind: "intermediate" },
        options,
      );
      const checks = plan.steps.map((s) => lib.checkStep(inventory, s, now, options));
      if (fmt === "json")
        io.out(JSON.stringify({ at: iso(now), leaves: unique.length, plan, checks }, null, 2));
      else io.out(formatPlan(plan, checks, unique.length, now, options.warningWindowMs));
      return 0;
    },
  },
};

type Lib = Awaited<ReturnType<typeof pki>>;

/** The `pki` group as main.ts registers it. */
export const pkiCommand = {
  summary: "the mesh CA as files: init, issue, inspect, plan-rotation",
  dispatch: runPki,
};

async function runPki(argv: string[], io: Io): Promise<number> {
  const [name, ...rest] = argv;
  if (!name || name === "--help" || name === "-h" || name === "help") {
    io.out(groupHelp());
    return name ? 0 : 2;
  }
  const sub = SUBCOMMANDS[name];
  if (!sub) {
    io.err(`meshgate pki: unknown subcommand ${JSON.stringify(name)}\n\n${groupHelp()}`);
    return 2;
  }
  try {
    const { values, positionals } = parseCommandLine({
      args: rest,
      options: sub.options,
      allowPositionals: true,
    });
    if (values.help) {
      io.out(`meshgate pki ${name} — ${sub.summary}\n\nUsage: ${sub.usage}\n\n${sub.details}`);
      return 0;
    }
    if (positionals.length > sub.maxPositionals)
      throw new UsageError(`unexpected argument ${JSON.stringify(positionals[sub.maxPositionals])}`);
    return await sub.run(positionals, values, io);
  } catch (err) {
    if (err instanceof UsageError || (err as NodeJS.ErrnoException).code?.startsWith("ERR_PARSE_ARGS")) {
      io.err(`meshgate pki ${name}: ${(err as Error).message}\nUsage: ${sub.usage}`);
      return 2;
    }
    if ((err as Error).name === "PkiError") {
      const e = err as PkiError;
      io.err(`meshgate pki ${name}: ${e.message} [${e.code}]`);
      return 1;
    }
    const problem = fileProblem(err);
    if (problem !== null) {
      io.err(`meshgate pki ${name}: ${problem}`);
      return 1;
    }
    throw err;
  }
}

/**
 * A file-system failure as a message (an --out that names a file, a directory without write permission),
 * never a stack trace; null for any other error.
 */
export function fileProblem(err: unknown): string | null {
  const e = err as NodeJS.ErrnoException;
  // A file system error names its path (a socket's names an address instead).
  if (!(err instanceof Error) || typeof e.code !== "string" || typeof e.syscall !== "string") return null;
  if (typeof e.path !== "string") return null;
  return (
    `cannot ${e.syscall} ${e.path}: ${e.code}\n` +
    "    fix: check the path: a file stands where a directory is expected, or it is not writable"
  );
}

function groupHelp(): string {
  const width = Math.max(...Object.keys(SUBCOMMANDS).map((c) => c.length));
  return [
    `meshgate pki — ${pkiCommand.summary}`,
    "",
    "Usage: meshgate pki <subcommand> [options]",
    "",
    "Subcommands:",
    ...Object.entries(SUBCOMMANDS).map(([n, c]) => `  ${n.padEnd(width)}  ${c.summary}`),
    "",
    "Run `meshgate pki <subcommand> --help` for its options.",
  ].join("\n");
}

// ───────────── arguments ─────────────

function required(values: Record<string, unknown>, name: string): string {
  const v = values[name];
  if (typeof v !== "string" || v === "") throw new UsageError(`missing --${name}`);
  return v;
}

async function duration(values: Record<string, unknown>, name: string): Promise<number> {
  const { parseDuration } = await units();
  try {
    const ms = parseDuration(String(values[name]));
    if (ms <= 0 && name !== "clock-skew") throw new Error(`must be positive`);
    return ms;
  } catch (err) {
    throw new UsageError(`--${name}: ${(err as Error).message}`);
  }
}

function choice(value: unknown, allowed: string[]): string {
  if (typeof value !== "string" || !allowed.includes(value))
    throw new UsageError(`expected one of ${allowed.join(", ")}, got ${JSON.stringify(value)}`);
  return value;
}

function at(value: unknown): number {
  if (value === undefined) return Date.now();
  const t = Date.parse(String(value));
  if (Number.isNaN(t))
    throw new UsageError(`--at: ${JSON.stringify(value)} is not an ISO time (2026-05-01T12:00:00Z)`);
  return t;
}

// ───────────── files ─────────────

async function readCerts(file: string): Promise<ParsedCertificate[]> {
  const { parseCertificates, PkiError } = await pki();
  let bytes: Buffer;
  try {
    bytes = await readFile(file);
  } catch (err) {
    throw new PkiError(
      "E_RT_PKI_FILE",
      `cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? "error"}`,
    );
  }
  try {
    return parseCertificates(bytes);
  } catch (err) {
    throw new PkiError("E_RT_PKI_PEM", `${file}: ${(err as Error).message}`);
  }
}

/** Every certificate in the *.pem files under `path` (a file or a directory, three levels deep). */
async function collectPem(path: string, depth = 0): Promise<ParsedCertificate[]> {
  const { PkiError } = await pki();
  const s = await stat(path).catch(() => {
    throw new PkiError("E_RT_PKI_FILE", `cannot read ${path}: ENOENT`);
  });
  if (!s.isDirectory()) return (await readFile(path, "utf8")).includes("CERTIFICATE") ? readCerts(path) : [];
  if (depth >= 3) return [];
  const out: ParsedCertificate[] = [];
  for (const e of (await readdir(path, { withFileTypes: true })).sort((a, b) =>
    compareCodeUnits(a.name, b.name),
  )) {
    if (e.isDirectory()) out.push(...(await collectPem(join(path, e.name), depth + 1)));
    else if (e.name.endsWith(".pem") && !e.name.includes("key"))
      out.push(...(await readCerts(join(path, e.name))));
  }
  return out;
}

/** The certificates of a CA directory (no key is read). */
async function readCaCertificates(dir: string) {
  const { CA_FILES, TrustBundle, parseSpiffeId, PkiError } = await pki();
  const [root] = await readCerts(join(dir, CA_FILES.rootCert));
  const [intermediate] = await readCerts(join(dir, CA_FILES.intermediateCert));
  const td = root!.uris.map((u) => parseSpiffeId(u)).find((r) => r.ok && r.path === "");
  if (!td?.ok)
    throw new PkiError("E_RT_PKI_INVALID_ID", `${join(dir, CA_FILES.rootCert)} names no trust domain`);
  const bundlePath = join(dir, CA_FILES.bundle);
  const bundle = (await stat(bundlePath).catch(() => null))
    ? new TrustBundle(td.trustDomain, await readCerts(bundlePath)).roots
    : [root!];
  return { trustDomain: td.trustDomain, root: root!, intermediate: intermediate!, bundle };
}

/** Bundles from a list of roots: by the trust domain each names, else the one given with --trust-domain. */
function groupRoots(lib: Lib, roots: ParsedCertificate[], fallback: string | undefined) {
  const byTd = new Map<string, ParsedCertificate[]>();
  for (const r of roots) {
    const named = r.uris.map((u) => lib.parseSpiffeId(u)).find((x) => x.ok && x.path === "");
    const td = named?.ok ? named.trustDomain : fallback;
    if (!td)
      throw new UsageError(`--bundle: root ${r.subject} names no trust domain; give --trust-domain for it`);
    byTd.set(td, [...(byTd.get(td) ?? []), r]);
  }
  return [...byTd.entries()].map(([td, rs]) => new lib.TrustBundle(td, rs));
}

// ───────────── output ─────────────

const iso = (t: number) => new Date(t).toISOString();

function certLine(role: string, c: ParsedCertificate): string {
  return `  ${role.padEnd(13)}${c.subject}\n  ${"".padEnd(13)}valid ${iso(c.notBefore)} → ${iso(c.notAfter)}  sha256 ${c.fingerprint}`;
}

function fileList(files: string[]): string {
  return `  files:\n${files.map((f) => `    ${f}${/key\.pem$/.test(f) ? "  (private key, mode 0600)" : ""}`).join("\n")}`;
}

interface CertDescription {
  subject: string;
  issuer: string;
  serial: string;
  fingerprint: string;
  spiffeIds: readonly string[];
  dnsNames: readonly string[];
  notBefore: string;
  notAfter: string;
  validity: string;
  basicConstraints: string;
  keyUsage: string;
  extKeyUsage: string;
  subjectKeyId: string | null;
  authorityKeyId: string | null;
}

interface InspectReport {
  file: string;
  certificates: CertDescription[];
  /** What the verdict covers: the whole chain, the leaf rules only (no bundle), or nothing (a CA). */
  scope: "chain" | "leaf-rules" | "signing-certificate";
  verdict: SvidVerdict | null;
}

const KU_NAMES: [number, string][] = [
  [1, "digitalSignature"],
  [2, "nonRepudiation"],
  [4, "keyEncipherment"],
  [8, "dataEncipherment"],
  [16, "keyAgreement"],
  [32, "keyCertSign"],
  [64, "cRLSign"],
  [128, "encipherOnly"],
  [256, "decipherOnly"],
];
const EKU_NAMES: Record<string, string> = {
  "1.3.6.1.5.5.7.3.1": "serverAuth",
  "1.3.6.1.5.5.7.3.2": "clientAuth",
  "1.3.6.1.5.5.7.3.3": "codeSigning",
  "1.3.6.1.5.5.7.3.4": "emailProtection",
  "1.3.6.1.5.5.7.3.8": "timeStamping",
  "1.3.6.1.5.5.7.3.9": "OCSPSigning",
};

function describeCert(c: ParsedCertificate, now: number): CertDescription {
  const ku = c.keyUsage;
  const days = (ms: number) => `${(ms / 86_400_000).toFixed(ms < 86_400_000 ? 2 : 0)} days`;
  return {
    subject: c.subject,
    issuer: c.issuer,
    serial: c.serial,
    fingerprint: c.fingerprint,
    spiffeIds: c.uris,
    dnsNames: c.dnsNames,
    notBefore: iso(c.notBefore),
    notAfter: iso(c.notAfter),
    validity:
      now < c.notBefore
        ? `not yet valid (starts in ${days(c.notBefore - now)})`
        : now > c.notAfter
          ? `expired ${days(now - c.notAfter)} ago`
          : `valid, ${days(c.notAfter - now)} left`,
    basicConstraints: c.basicConstraints
      ? `cA=${c.basicConstraints.ca}${c.basicConstraints.pathLength !== undefined ? `, pathLen=${c.basicConstraints.pathLength}` : ""}${c.basicConstraints.critical ? " (critical)" : ""}`
      : "absent",
    keyUsage: ku
      ? `${
          KU_NAMES.filter(([bit]) => (ku.flags & bit) !== 0)
            .map(([, n]) => n)
            .join(", ") || "none"
        }${ku.critical ? " (critical)" : " (not critical)"}`
      : "absent",
    extKeyUsage: c.extKeyUsage ? c.extKeyUsage.map((o) => EKU_NAMES[o] ?? o).join(", ") : "absent",
    subjectKeyId: c.subjectKeyId,
    authorityKeyId: c.authorityKeyId,
  };
}

/** The leaf rules and the leaf's own validity window (no chain). */
function leafOnly(lib: Lib, leaf: ParsedCertificate, now: number): SvidVerdict {
  const r = lib.checkSvidLeaf(leaf);
  if (!r.ok) return r;
  if (now < leaf.notBefore)
    return {
      ok: false,
      code: "E_RT_PKI_NOT_YET_VALID",
      reason: `the leaf is not valid before ${iso(leaf.notBefore)}`,
      spiffeId: r.id.id,
    };
  if (now > leaf.notAfter)
    return {
      ok: false,
      code: "E_RT_PKI_EXPIRED",
      reason: `the leaf expired at ${iso(leaf.notAfter)}`,
      spiffeId: r.id.id,
    };
  return {
    ok: true,
    spiffeId: r.id.id,
    trustDomain: r.id.trustDomain,
    path: r.id.path,
    notBefore: leaf.notBefore,
    notAfter: leaf.notAfter,
    chainNotAfter: leaf.notAfter,
    serial: leaf.serial,
    fingerprint: leaf.fingerprint,
    rootFingerprint: "",
  };
}

const CHAIN_CODES = new Set([
  "E_RT_PKI_UNKNOWN_TRUST_DOMAIN",
  "E_RT_PKI_UNTRUSTED_ISSUER",
  "E_RT_PKI_BAD_SIGNATURE",
  "E_RT_PKI_ISSUER_NOT_CA",
  "E_RT_PKI_PATH_LENGTH",
  "E_RT_PKI_EXPIRED",
  "E_RT_PKI_NOT_YET_VALID",
]);

function formatReport(r: InspectReport): string {
  const lines = [`${r.file}:`];
  for (const [i, c] of r.certificates.entries()) {
    lines.push(
      `  ${i === 0 ? "certificate" : `chain[${i}]`}: ${c.subject}`,
      `    issuer:      ${c.issuer}`,
      `    serial:      ${c.serial}`,
      `    SPIFFE ID:   ${c.spiffeIds.length > 0 ? c.spiffeIds.join(", ") : "none"}${c.dnsNames.length > 0 ? `  (DNS: ${c.dnsNames.join(", ")})` : ""}`,
      `    validity:    ${c.notBefore} → ${c.notAfter}  (${c.validity})`,
      `    constraints: ${c.basicConstraints}`,
      `    key usage:   ${c.keyUsage}`,
      `    EKU:         ${c.extKeyUsage}`,
      `    sha256:      ${c.fingerprint}`,
    );
  }
  const v = r.verdict;
  if (r.scope === "signing-certificate") {
    lines.push(
      "  chain:   not checked (a CA certificate)",
      "  verdict: a signing (CA) certificate, never accepted as a peer SVID",
    );
  } else if (r.scope === "leaf-rules") {
    lines.push("  chain:   not checked (give --bundle FILE with the trusted roots)");
    lines.push(
      v!.ok
        ? `  verdict: ✓ the leaf follows the X.509-SVID rules (${v!.spiffeId}); chain not verified`
        : `  verdict: ✗ ${v!.reason} [${v!.code}]`,
    );
  } else if (v!.ok) {
    lines.push(
      `  chain:   ✓ verified to root sha256 ${v!.rootFingerprint} (chain valid until ${iso(v!.chainNotAfter)})`,
      `  verdict: ✓ valid X.509-SVID ${v!.spiffeId}`,
    );
  } else {
    lines.push(
      CHAIN_CODES.has(v!.code)
        ? `  chain:   ✗ ${v!.reason} [${v!.code}]`
        : "  chain:   not checked (the leaf itself is refused)",
      `  verdict: ✗ ${v!.reason} [${v!.code}]`,
    );
  }
  return lines.join("\n");
}

function formatPlan(
  plan: RotationPlan,
  checks: StepCheck[],
  leafCount: number,
  now: number,
  windowMs: number,
): string {
  const lines = [
    `${plan.kind === "root" ? "Root" : "Intermediate"} rotation plan for trust domain ${plan.trustDomain} (as of ${iso(now)}, ${leafCount} leaf certificate${leafCount === 1 ? "" : "s"} read):`,
  ];
  for (const [i, s] of plan.steps.entries()) {
    const c = checks[i]!;
    lines.push(`  ${String(s.n).padStart(2)}. [${s.action}] ${s.description}`);
    lines.push(c.ok ? "      now: ready" : `      now: blocked — ${c.reason} [${c.code}]`);
    if (!c.ok) for (const b of c.blocking.slice(0, 10)) lines.push(`        · ${b}`);
    if (!c.ok && c.blocking.length > 10) lines.push(`        · … ${c.blocking.length - 10} more`);
  }
  lines.push(`  earliest retirement if every leaf is reissued now: ${iso(plan.earliestRetirement)}`);
  lines.push(`Expiry warnings (within ${Math.round(windowMs / 86_400_000)} days):`);
  if (plan.warnings.length === 0) lines.push("  none");
  for (const w of plan.warnings)
    lines.push(
      `  ${w.expired ? "EXPIRED" : "expires"} ${iso(w.notAfter)}  ${w.kind.padEnd(12)} ${w.spiffeId ?? w.subject}`,
    );
  return lines.join("\n");
}
