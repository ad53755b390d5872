/**
 * Test harness for sidecars: a CA, identity directories written the way the issuers write them (each
 * file renamed into place, or a Kubernetes-style `..data` symlink swap), sidecar configs translated from
 * a spec (so tests exercise the real contract) and pointed at 127.0.0.1, and sidecars started on free
 * ports with a captured log.
 */
import { mkdir, rename, symlink, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { Writable } from "node:stream";
import pino from "pino";
import { sealRuntimeConfig, type SidecarRuntimeConfig } from "../../runtime/contract/index.ts";
import { toPem, writeFileAtomic, type IssuedSvid } from "../../runtime/pki/index.ts";
import { startSidecar, type SidecarHandle, type SidecarOptions } from "../../runtime/sidecar/server.ts";
import { parseSpec } from "../../components/spec/parse.ts";
import { svidFiles, translate } from "../../components/translate/translate.ts";

export const TD = "mesh.example";
export const NS = "shop";
export const spiffe = (sa: string) => `spiffe://${TD}/ns/${NS}/sa/${sa}`;

type Loose = Record<string, unknown>;

/** Every sidecar config of a spec's services (trust domain mesh.example, namespace shop). */
export function meshConfigs(services: Record<string, Loose>, mesh: Loose = {}): SidecarRuntimeConfig[] {
  const r = parseSpec({ name: "mesh", namespace: NS, trustDomain: TD, mesh, services });
  if (!r.ok) throw new Error(r.errors.map((e) => `${e.path}: ${e.message}`).join("\n"));
  return translate(r.spec).runtime.sidecars;
}

/**
 * A sidecar config for local tests: identity files under `identityDir`, clusters with static endpoints
 * (by cluster name → inbound ports of peer sidecars), the app on `appPort`, access logs as given.
 */
export function localSidecar(
  config: SidecarRuntimeConfig,
  o: {
    identityDir: string;
    appPort: number;
    endpoints?: Record<string, number[]>;
    svid?: Partial<SidecarRuntimeConfig["svid"]>;
    edit?: (c: Omit<SidecarRuntimeConfig, "hash">) => Omit<SidecarRuntimeConfig, "hash">;
  },
): SidecarRuntimeConfig {
  const { hash: _h, ...rest } = config;
  const next: Omit<SidecarRuntimeConfig, "hash"> = {
    ...rest,
    svid: { ...rest.svid, ...svidFiles(o.identityDir), ...o.svid },
    discovery: {
      kind: "static",
      endpoints: Object.fromEntries(
        Object.entries(o.endpoints ?? {}).map(([name, ports]) => [
          name,
          ports.map((port) => ({ host: "127.0.0.1", port })),
        ]),
      ),
    },
    inbound: { ...rest.inbound, appPort: o.appPort },
  };
  return sealRuntimeConfig<SidecarRuntimeConfig>(o.edit ? o.edit(next) : next);
}

/** Writes an identity directory's files, each renamed into place (what `meshgate pki issue` does). */
export async function writeIdentity(
  dir: string,
  svid: IssuedSvid,
  bundlePem: string,
  intermediatesPem?: string,
): Promise<void> {
  await mkdir(dir, { recursive: true });
  await writeFileAtomic(join(dir, "bundle.pem"), bundlePem, 0o644);
  if (intermediatesPem !== undefined)
    await writeFileAtomic(join(dir, "intermediates.pem"), intermediatesPem, 0o644);
  await writeFileAtomic(join(dir, "svid-key.pem"), svid.keyPem!.reveal(), 0o600);
  await writeFileAtomic(join(dir, "svid.pem"), svid.chainPem, 0o644);
}

let generation = 0;

/**
 * Writes an identity the way the kubelet updates a mounted Secret: the files into a new timestamped
 * directory, a `..data_tmp` symlink to it renamed over `..data`, and `svid.pem` etc. as symlinks to
 * `..data/<name>` (created once). All files change in one atomic rename.
 */
export async function writeIdentityKubernetesStyle(
  dir: string,
  files: { svid: IssuedSvid; bundlePem: string; intermediatesPem?: string },
): Promise<void> {
  await mkdir(dir, { recursive: true });
  const gen = `..${Date.now()}_${process.pid}_${generation++}`;
  const target = join(dir, gen);
  await mkdir(target);
  const contents: Record<string, string> = {
    "svid.pem": files.svid.chainPem,
    "svid-key.pem": files.svid.keyPem!.reveal(),
    "bundle.pem": files.bundlePem,
    "intermediates.pem": files.intermediatesPem ?? "",
  };
  for (const [name, text] of Object.entries(contents))
    await writeFile(join(target, name), text, { mode: name === "svid-key.pem" ? 0o600 : 0o644 });
  await symlink(gen, join(dir, "..data_tmp"));
  await rename(join(dir, "..data_tmp"), join(dir, "..data"));
  for (const name of Object.keys(contents))
    await symlink(join("..data", name), join(dir, name)).catch((e: NodeJS.ErrnoException) => {
      if (e.code !== "EEXIST") throw e;
    });
}

export const intermediatePem = (svid: IssuedSvid) =>
  svid.chainDer.map((d) => toPem(d, "CERTIFICATE")).join("");

export interface TestSidecar extends SidecarHandle {
  readonly name: string;
  readonly logs: Record<string, unknown>[];
  readonly rawLog: () => string;
  readonly outboundUrl: string;
  readonly adminUrl: string;
}

export async function startTestSidecar(
  config: SidecarRuntimeConfig,
  extra: Partial<SidecarOptions> = {},
): Promise<TestSidecar> {
  const logs: Record<string, unknown>[] = [];
  let raw = "";
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      const text = chunk.toString();
      raw += text;
      for (const line of text.split("\n"))
        if (line.trim()) logs.push(JSON.parse(line) as Record<string, unknown>);
      cb();
    },
  });
  const handle = await startSidecar({
    config,
    host: "127.0.0.1",
    ports: {
      inbound: 0,
      outbound: 0,
      admin: 0,
      services: Object.fromEntries(config.outbound.services.map((s) => [s.service, 0])),
      // Externals with a local port get a free one (those without keep none).
      external: Object.fromEntries(
        config.outbound.external.filter((e) => e.localPort !== null).map((e) => [e.name, 0]),
      ),
    },
    logger: pino({ base: { proxy: "sidecar", name: config.name } }, sink),
    identityPollMs: 200,
    ...extra,
  });
  return Object.assign(handle, {
    name: config.name,
    logs,
    rawLog: () => raw,
    outboundUrl: `http://127.0.0.1:${handle.ports.outbound}`,
    adminUrl: `http://127.0.0.1:${handle.ports.admin}`,
  });
}

/** Polls `check` until it returns true (or throws after `ms`). */
export async function until(
  check: () => boolean | Promise<boolean>,
  ms = 5000,
  what = "condition",
): Promise<void> {
  const deadline = Date.now() + ms;
  for (;;) {
    if (await check()) return;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** A metric's value from a Prometheus text exposition (sum over series matching every given label). */
export function metricValue(text: string, name: string, labels: Record<string, string> = {}): number {
  let sum = 0;
  for (const line of text.split("\n")) {
    if (!line.startsWith(`${name}{`) && !line.startsWith(`${name} `)) continue;
    const ok = Object.entries(labels).every(([k, v]) => line.includes(`${k}="${v}"`));
    if (ok) sum += Number(line.slice(line.lastIndexOf(" ") + 1));
  }
  return sum;
}
