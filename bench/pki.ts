/**
 * `node bench/pki.ts`: what the mesh PKI costs per operation, as CPU time of this process (wall time on a
 * shared machine measures the neighbours too):
 *   issue         SvidIssuer.issue: key pair, leaf, PKCS#8 export (the sidecar's renewal)
 *   verify cold   a fresh verifier per chain: leaf + intermediate parsed, two signatures checked
 *   verify leaf   a new leaf through a verifier that has seen its intermediate (the common handshake)
 *   verify hit    a chain the verifier has seen (a reconnecting peer): a map lookup and the clock
 * Each measurement runs once to warm up; the median of several rounds is reported.
 * Benchmarks are not pass/fail.
 */
import {
  createIntermediateCa,
  createRootCa,
  SvidIssuer,
  SvidVerifier,
  TrustBundle,
  type IssuedSvid,
} from "../runtime/pki/index.ts";

const cpu = () => {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000; // ms
};

async function measure(
  name: string,
  rounds: number,
  perRound: number,
  fn: (i: number) => unknown,
): Promise<void> {
  const call = async (i: number) => {
    const r = fn(i);
    if (r instanceof Promise) await r;
  };
  for (let i = 0; i < perRound; i++) await call(i); // warm up
  const samples: number[] = [];
  for (let r = 0; r < rounds; r++) {
    const start = cpu();
    if (perRound > 1000)
      for (let i = 0; i < perRound; i++) fn(i); // synchronous: no await per call
    else for (let i = 0; i < perRound; i++) await call(i);
    samples.push((cpu() - start) / perRound);
  }
  samples.sort((a, b) => a - b);
  const median = samples[Math.floor(samples.length / 2)]!;
  const fmt = (ms: number) => (ms >= 1 ? `${ms.toFixed(2)} ms` : `${(ms * 1000).toFixed(1)} µs`);
  console.log(
    `${name.padEnd(12)} median ${fmt(median).padStart(10)}  min ${fmt(samples[0]!).padStart(10)}  (${rounds}×${perRound} CPU)`,
  );
}

const root = await createRootCa({ trustDomain: "bench.example" });
const intermediate = await createIntermediateCa(root);
const issuer = new SvidIssuer(intermediate);
const bundle = new TrustBundle("bench.example", [root.certificate]);

await measure("issue", 5, 40, (i) => issuer.issue(`spiffe://bench.example/ns/bench/sa/s${i}`));

const svids: IssuedSvid[] = [];
for (let i = 0; i < 400; i++) svids.push(await issuer.issue(`spiffe://bench.example/ns/bench/sa/v${i}`));
const chain = (s: IssuedSvid) => [s.der, ...s.chainDer];
let next = 0;
const fresh = () => svids[next++ % svids.length]!;

await measure("verify cold", 5, 30, () => {
  if (!new SvidVerifier(bundle).verify(chain(fresh())).ok) throw new Error("verify failed");
});
const warm = new SvidVerifier(bundle, { cacheSize: 100_000 });
warm.verify(chain(svids[0]!));
await measure("verify leaf", 5, 40, () => {
  // a leaf the verifier has not seen yet: parse + one signature + the cached intermediate
  const s = svids[next++ % svids.length]!;
  const v = new SvidVerifier(bundle, { intermediates: [intermediate.certificate] });
  if (!v.verify([s.der]).ok) throw new Error("verify failed");
});
for (const s of svids) warm.verify(chain(s));
await measure("verify hit", 5, 20_000, (i) => {
  if (!warm.verify(chain(svids[i % svids.length]!)).ok) throw new Error("verify failed");
});
