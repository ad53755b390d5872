/**
 * Helpers shared by the benchmarks: gateway RuntimeConfigs built from spec routes (parseSpec → translate →
 * testing/static.ts, as the tests do), and plain-text tables.
 */
import type { GatewayRuntimeConfig } from "../runtime/contract/index.ts";
import { plaintextStatic } from "../testing/static.ts";
import { parseSpec } from "../components/spec/parse.ts";
import { translate } from "../components/translate/translate.ts";

type Loose = Record<string, unknown>;

export interface SpecGatewayOptions {
  /** Spec `gateway.routes`. */
  routes: Loose[];
  /** Upstream port per service name; every service's endpoints become 127.0.0.1:<port>. */
  upstreams: Record<string, number>;
  /** Host names the gateway serves; default 127.0.0.1 and localhost. */
  hosts?: string[];
  /** Extra gateway-level spec fields (listeners, limits, …). */
  gateway?: Loose;
  /** Spec `observability`. */
  observability?: Loose;
  /** Extra spec fields for every service (circuitBreaker, …). */
  service?: Loose;
}

/**
 * A gateway RuntimeConfig from spec routes: parseSpec + translate, then every cluster switched to static
 * endpoints on 127.0.0.1 and plaintext (testing/static.ts, which the tests use too).
 */
export function specGatewayConfig(o: SpecGatewayOptions): GatewayRuntimeConfig {
  const services = Object.fromEntries(
    Object.keys(o.upstreams).map((name) => [
      name,
      { image: `r/${name}:1`, port: 8080, allow: [{ from: ["gateway"] }], ...o.service },
    ]),
  );
  const r = parseSpec({
    name: "bench",
    trustDomain: "bench.example",
    services,
    gateway: { hosts: o.hosts ?? ["127.0.0.1", "localhost"], ...o.gateway, routes: o.routes },
    ...(o.observability ? { observability: o.observability } : {}),
  });
  if (!r.ok) {
    const shown = r.errors.slice(0, 5).map((e) => `${e.path}: ${e.message}`);
    throw new Error(`the generated spec is invalid:\n${shown.join("\n")}`);
  }
  const config = translate(r.spec).runtime.gateway;
  if (!config) throw new Error("translate produced no gateway config");
  return plaintextStatic(
    config,
    Object.fromEntries(Object.entries(o.upstreams).map(([n, port]) => [n, { port }])),
  );
}

export const median = (values: readonly number[]): number => {
  const s = [...values].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
};

/** Renders rows as an aligned table; columns listed in `right` are right-aligned. */
export function table(header: string[], rows: string[][], right: (i: number) => boolean): string[] {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)));
  const line = (cells: string[]) =>
    cells
      .map((c, i) => (right(i) ? c.padStart(widths[i]!) : c.padEnd(widths[i]!)))
      .join("  ")
      .trimEnd();
  return [line(header), line(widths.map((w) => "-".repeat(w))), ...rows.map(line)];
}

/**
 * The meshgate entry the benchmarks run: the runtime bundle (dist/meshgate.js, built here with the options
 * of `npm run build`) — what the runtime image runs — or, with `--source`, bin/meshgate.js (TypeScript
 * sources through Node's type stripping, as `npm start` runs them). Returns the path and a label.
 */
export async function meshgateEntry(root: string): Promise<{ path: string; label: string }> {
  if (process.argv.includes("--source"))
    return { path: `${root}bin/meshgate.js`, label: "sources (bin/meshgate.js, type stripping)" };
  const { build } = await import("esbuild");
  const { runtimeBundleOptions } = await import("../scripts/build.ts");
  const outfile = `${root}dist/meshgate.js`;
  await build(runtimeBundleOptions(outfile));
  return { path: outfile, label: "the runtime bundle (dist/meshgate.js, as in the runtime image)" };
}
