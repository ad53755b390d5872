/**
 * The Node/V8 flags every sidecar runs with — one list for the Kubernetes and Docker renderers
 * (`NODE_OPTIONS`), local mode (the child's argv) and `bench:mesh`, so that what is measured is what is
 * deployed. Measured in docs/sidecar.md (*Measured*, *V8 flags*):
 *
 * - `--max-semi-space-size=2`: a 2 MiB semi-space (the young generation's half) instead of V8's 16 MiB
 *   default keeps RSS ~20 MiB lower; at 1,000 rps a sidecar allocates a few MiB per second, so
 *   scavenges stay short and frequent rather than rare and larger.
 * - `--max-old-space-size=96`: a leak shows up as a crash (and a restart), not as a node that swaps.
 * - `--no-memory-reducer`: V8's memory reducer runs a full GC a few seconds after the allocation rate
 *   drops, and that GC discards optimized code — when traffic returns, the proxy runs unoptimized code
 *   and recompiles ~200 functions on background threads that compete with it for its CPU: the p99 of
 *   the next 10–15 s read +3.4 to +5 ms instead of +1.4 (bench:mesh, 2026-12-04). A sidecar's heap is
 *   ~20 MiB, so the memory the reducer would return is small.
 */
export const SIDECAR_NODE_FLAGS: readonly string[] = Object.freeze([
  "--max-semi-space-size=2",
  "--max-old-space-size=96",
  "--no-memory-reducer",
]);
