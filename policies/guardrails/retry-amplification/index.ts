/**
 * retry-amplification: one client request must not turn into more than `limits.maxRetryAmplification`
 * attempts at any service. Along a path of the call graph every hop multiplies: a gateway route with 3
 * retries (4 attempts) in front of a service that retries its callee twice (3 attempts) sends up to 12
 * requests to that callee. The worst path is found on the condensation of the declared call graph (its
 * strongly connected components), so the check is linear in the size of the mesh; a cycle whose hops
 * retry amplifies without bound.
 */
import { reachingAttempts, type MeshModel } from "../../model.ts";
import { builtin, names } from "../support.ts";

interface Worst {
  /** Worst-case attempts reaching the deepest service from one request entering here. */
  amp: number;
  /** The hops of the worst path after this node: [callee, factor]. */
  path: [string, number][];
  /** The cycle that makes it unbounded, when it is. */
  cycle: string[] | null;
  /** The service the path leaves from (another member of a cyclic component than the one asked about). */
  from: string;
}

/**
 * The most attempts of one request `caller` may send to `callee` that reach it (over the callee's default
 * and per-route plans; the methods of mesh calls are not declared, so any method).
 */
export function hopFactor(model: MeshModel, caller: string, callee: string): number {
  let f = 1;
  for (const p of model.hopPlans(caller, callee))
    f = Math.max(f, reachingAttempts(p.retry, p.match?.methods ?? []));
  return f;
}

/** Tarjan's algorithm, iterative; components come out in reverse topological order. */
export function stronglyConnected(
  nodes: readonly string[],
  next: (n: string) => readonly string[],
): string[][] {
  const index = new Map<string, number>();
  const low = new Map<string, number>();
  const onStack = new Set<string>();
  const stack: string[] = [];
  const out: string[][] = [];
  let counter = 0;
  for (const root of nodes) {
    if (index.has(root)) continue;
    const work: [string, number][] = [[root, 0]];
    while (work.length > 0) {
      const frame = work[work.length - 1]!;
      const [v, i] = frame;
      if (i === 0) {
        index.set(v, counter);
        low.set(v, counter);
        counter++;
        stack.push(v);
        onStack.add(v);
      }
      const succ = next(v);
      if (i < succ.length) {
        frame[1] = i + 1;
        const w = succ[i]!;
        if (!index.has(w)) work.push([w, 0]);
        else if (onStack.has(w)) low.set(v, Math.min(low.get(v)!, index.get(w)!));
        continue;
      }
      work.pop();
      if (work.length > 0) {
        const parent = work[work.length - 1]![0];
        low.set(parent, Math.min(low.get(parent)!, low.get(v)!));
      }
      if (low.get(v) === index.get(v)) {
        const comp: string[] = [];
        let w: string;
        do {
          w = stack.pop()!;
          onStack.delete(w);
          comp.push(w);
        } while (w !== v);
        out.push(comp.sort());
      }
    }
  }
  return out;
}

/** A cycle through `start` inside its component (breadth-first, so the shortest). */
function cycleThrough(
  start: string,
  members: ReadonlySet<string>,
  next: (n: string) => readonly string[],
): string[] {
  const prev = new Map<string, string>();
  const queue = [start];
  for (let k = 0; k < queue.length; k++) {
    const v = queue[k]!;
    for (const w of next(v)) {
      if (!members.has(w)) continue;
      if (w === start) {
        const path = [start];
        for (let u = v; u !== start; u = prev.get(u)!) path.push(u);
        return [start, ...path.slice(1).reverse(), start];
      }
      if (!prev.has(w)) {
        prev.set(w, v);
        queue.push(w);
      }
    }
  }
  return [start, start];
}

/** Worst-case amplification below every service, and the cyclic components of the call graph. */
export function amplification(model: MeshModel): { worst: Map<string, Worst>; cycles: string[][] } {
  const next = (n: string) => model.callees(n).filter((c) => model.spec.services[c] !== undefined);
  const comps = stronglyConnected(model.serviceNames, next);
  const compOf = new Map<string, number>();
  comps.forEach((c, i) => c.forEach((n) => compOf.set(n, i)));
  const worst = new Map<string, Worst>();
  const cycles: string[][] = [];
  comps.forEach((comp, ci) => {
    const members = new Set(comp);
    let cycle: string[] | null = null;
    if (comp.length > 1) {
      cycle = cycleThrough(comp[0]!, members, next);
      cycles.push(cycle);
    }
    const amplifies =
      comp.length > 1 && comp.some((u) => next(u).some((v) => members.has(v) && hopFactor(model, u, v) > 1));
    let best: Worst = { amp: 1, path: [], cycle: null, from: comp[0]! };
    if (amplifies) best = { amp: Infinity, path: [], cycle, from: comp[0]! };
    else {
      for (const u of comp) {
        for (const v of next(u)) {
          if (compOf.get(v) === ci) continue;
          const w = worst.get(v)!;
          const amp = hopFactor(model, u, v) * w.amp;
          if (amp > best.amp || (amp === best.amp && best.path.length === 0 && amp > 1))
            best = { amp, path: [[v, hopFactor(model, u, v)], ...w.path], cycle: w.cycle, from: u };
        }
      }
    }
    for (const u of comp) worst.set(u, best);
  });
  return { worst, cycles };
}

/** "orders ×4 → payments": each service, and the attempts it may send to the next. */
function chain(start: string, w: Worst): string {
  if (w.amp === Infinity)
    return `unbounded: the call graph cycles through ${w.cycle!.join(" → ")} with retries on the way`;
  const via = w.path.length > 0 && w.from !== start ? ` → … → ${w.from}` : "";
  return start + via + w.path.map(([callee, f]) => ` ×${f} → ${callee}`).join("");
}

/** The service the worst path ends at. */
function last(start: string, w: Worst): string {
  return w.path.length > 0 ? w.path[w.path.length - 1]![0] : start;
}

export const retryAmplification = builtin(
  "retry-amplification",
  "retries multiplied along every path of the call graph stay within limits.maxRetryAmplification",
  ({ model, runtime, limits }, report) => {
    const { worst, cycles } = amplification(model);
    const limit = limits.maxRetryAmplification;
    for (const cycle of cycles) {
      report(
        "E_POLICY_CALL_CYCLE",
        `services.${cycle[0]}.calls`,
        `the declared calls form a cycle: ${cycle.join(" → ")}`,
        "break the cycle (an event, a cache, or moving the shared logic into one service)",
      );
    }
    const routedTargets = new Set<string>();
    // Entry points whose calls reach a cycle that retries: reported once per cycle, with who reaches it.
    const unbounded = new Map<string, { cycle: string[]; routes: string[]; services: string[] }>();
    const reachesCycle = (w: Worst, entry: { route?: string; service?: string }) => {
      const key = w.cycle!.join(" → ");
      let u = unbounded.get(key);
      if (!u) unbounded.set(key, (u = { cycle: w.cycle!, routes: [], services: [] }));
      if (entry.route) u.routes.push(entry.route);
      if (entry.service) u.services.push(entry.service);
    };
    for (const r of runtime.gateway?.routes ?? []) {
      let worstAmp = 0;
      let text = "";
      let cyclic: Worst | null = null;
      for (const t of model.targets(r)) {
        routedTargets.add(t.service);
        const w = worst.get(t.service);
        if (!w) continue;
        if (w.amp === Infinity) {
          cyclic = w;
          continue;
        }
        const f = reachingAttempts(r.retry, t.methods);
        if (f * w.amp <= worstAmp) continue;
        worstAmp = f * w.amp;
        text = `one request on route "${r.name}" may cause ${worstAmp} attempts at "${last(t.service, w)}": ${r.name} ×${f} → ${chain(t.service, w)}`;
      }
      if (cyclic) reachesCycle(cyclic, { route: r.name });
      else if (worstAmp > limit) {
        report(
          "E_POLICY_RETRY_AMPLIFICATION",
          model.routeField(r.name, "retries"),
          `${text} (limit ${limit})`,
          "retry at one layer only (usually the one closest to the client): lower retries.attempts on the other hops, or raise limits.maxRetryAmplification in the policy file",
        );
      }
    }
    // Services that nothing in the mesh calls and no route reaches are entry points of their own (jobs, …).
    for (const name of model.serviceNames) {
      if (model.callers(name).length > 0 || routedTargets.has(name)) continue;
      const w = worst.get(name)!;
      if (w.amp === Infinity) reachesCycle(w, { service: name });
      else if (w.amp > limit) {
        report(
          "E_POLICY_RETRY_AMPLIFICATION",
          `services.${name}.calls`,
          `one request entering "${name}" may cause ${w.amp} attempts at "${last(name, w)}": ${chain(name, w)} (limit ${limit})`,
          "retry at one layer only: lower retries.attempts on some hops, or raise limits.maxRetryAmplification in the policy file",
        );
      }
    }
    for (const u of unbounded.values()) {
      const who = [
        u.routes.length > 0
          ? `${u.routes.length} gateway route${u.routes.length === 1 ? "" : "s"} (${names(u.routes)})`
          : "",
        u.services.length > 0
          ? `the entry service${u.services.length === 1 ? "" : "s"} ${names(u.services)}`
          : "",
      ].filter(Boolean);
      report(
        "E_POLICY_RETRY_AMPLIFICATION",
        `services.${u.cycle[0]}.calls`,
        `attempts multiply without bound along the cycle ${u.cycle.join(" → ")}, whose hops retry; ${who.join(" and ")} reach${u.routes.length + u.services.length === 1 ? "es" : ""} it (limit ${limit})`,
        "break the cycle, or set retries.attempts: 0 on one of its hops",
      );
    }
  },
);
