/**
 * `npm run build`: the runtime bundle — runtime/cli.ts (gateway and sidecar) and everything it imports,
 * as one ES module for Node 24 at dist/meshgate.js, which the runtime image runs
 * (`node /app/meshgate.js gateway --config …`). Nothing of the spec tooling, Pulumi or cdk8s is in it
 * (runtime/ cannot import them; test/build/bundle.test.ts checks the output).
 */
import type { BuildOptions } from "esbuild";

/** The esbuild options of the runtime bundle, written to `outfile`. */
export function runtimeBundleOptions(outfile: string): BuildOptions {
  return {
    entryPoints: [new URL("../runtime/cli.ts", import.meta.url).pathname],
    outfile,
    bundle: true,
    platform: "node",
    format: "esm",
    target: "node24",
    // CommonJS dependencies call require() for Node's built-ins; an ES module has none of its own.
    banner: {
      js: 'import { createRequire as __meshgateRequire } from "node:module"; const require = __meshgateRequire(import.meta.url);',
    },
    minifyWhitespace: true,
    minifySyntax: true,
    // No keepNames: it wraps every function — closures created per request included — in a __name()
    // call (≈ 0.3–0.7 µs per gateway request, measured); no class is renamed by bundling (error names
    // stay), a few helper functions show a numeric suffix in stack traces.
    keepNames: false,
    legalComments: "none",
    metafile: true,
    logLevel: "warning",
  };
}

if (import.meta.main) {
  const { build } = await import("esbuild");
  const outfile = new URL("../dist/meshgate.js", import.meta.url).pathname;
  const result = await build(runtimeBundleOptions(outfile));
  const bytes = Object.values(result.metafile!.outputs).reduce((n, o) => n + o.bytes, 0);
  console.log(`wrote ${outfile} (${(bytes / 1024).toFixed(0)} KiB)`);
}
