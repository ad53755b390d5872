/**
 * Points a translated gateway config at endpoints on this machine: every mesh cluster gets static
 * endpoints on 127.0.0.1 and plaintext (no mesh identity) — a backend outside the mesh (an `address`)
 * keeps its own — and the config is resealed. For tests and benchmarks
 * that run a real gateway in front of local upstreams.
 */
import { sealRuntimeConfig, type GatewayRuntimeConfig } from "../runtime/contract/index.ts";

/** One endpoint, or several (a multi-endpoint cluster), given by port. */
export type LocalEndpoints = { readonly port: number } | readonly { readonly port: number }[];

export function plaintextStatic(
  config: GatewayRuntimeConfig,
  upstreams: Readonly<Record<string, LocalEndpoints>>,
): GatewayRuntimeConfig {
  const { hash: _h, ...rest } = config;
  return sealRuntimeConfig<GatewayRuntimeConfig>({
    ...rest,
    discovery: {
      kind: "static",
      endpoints: Object.fromEntries(
        Object.entries(upstreams).map(([n, u]) => [
          n,
          (Array.isArray(u) ? u : [u]).map((e: { port: number }) => ({ host: "127.0.0.1", port: e.port })),
        ]),
      ),
    },
    // Backends outside the mesh (an address) keep their TLS; mesh services are reached in plaintext.
    clusters: rest.clusters.map((c) => (c.address ? c : { ...c, tls: { mode: "none" as const } })),
    svid: null,
  });
}
