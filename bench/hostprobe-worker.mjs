/**
 * The host-speed probe's process (bench/hostprobe.ts starts it with `node --jitless`): every PERIOD ms it
 * times one fixed unit of integer work and, at the end, writes `{ baseUs, samples }` — samples as
 * [start (ms since the epoch), duration (µs)] pairs — to the output file. Under --jitless the unit runs in
 * the interpreter, whose speed does not change as code tiers up, so a slow unit means a slow CPU.
 *
 * argv: seconds outFile [unitUs=50] [periodMs=2]
 */
import { writeFileSync } from "node:fs";
import { performance } from "node:perf_hooks";
import { setTimeout } from "node:timers";

const [seconds, outFile, unitUs = "50", periodMs = "2"] = process.argv.slice(2);
const table = new Int32Array(4096);
function unit(n) {
  let x = 1;
  for (let i = 0; i < n; i++) {
    x = (Math.imul(x, 1103515245) + 12345) | 0;
    table[(x >>> 20) & 4095] += x;
  }
  return x;
}
const now = () => performance.timeOrigin + performance.now();

// Calibrate: iterations for a unit of about unitUs.
let n = 200;
{
  const t = now();
  for (let i = 0; i < 50; i++) unit(n);
  n = Math.max(1, Math.round((n * Number(unitUs)) / (((now() - t) * 1000) / 50)));
}
const end = now() + Number(seconds) * 1000;
const samples = [];
function tick() {
  const t = now();
  unit(n);
  samples.push(t, (now() - t) * 1000);
  if (t < end) setTimeout(tick, Number(periodMs));
  else {
    const durations = samples.filter((_, i) => i % 2 === 1).sort((a, b) => a - b);
    const baseUs = durations[Math.floor(durations.length * 0.1)] ?? 0;
    writeFileSync(outFile, JSON.stringify({ baseUs, samples }));
  }
}
setTimeout(tick, Number(periodMs));
