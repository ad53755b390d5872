/**
 * The policy commands: `meshgate verify`, `meshgate explain`, `meshgate replay`, `meshgate graph`,
 * `meshgate diff`. Exit codes: 0 success, 1 the
 * spec is invalid or a check failed (verify: an error-severity violation; diff: access widened with
 * --fail-on widen), 2 usage errors (unknown options, an unreadable or invalid policy file or rule module, a
 * git ref that does not resolve).
 */
import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { dirname, extname, join } from "node:path";
import { promisify } from "node:util";
import type { LoadResult } from "../components/spec/load.ts";
import type { Guardrail } from "../policies/types.ts";
import type { PolicyConfig, PolicyInput } from "../policies/run.ts";
import type { TrafficRequest } from "../policies/assertions.ts";
import type { AssertionSet } from "../policies/assertion-file.ts";
import type { Command, Io } from "./main.ts";
import { portFlag } from "../runtime/args.ts";

const help = { type: "boolean", short: "h" } as const;

/** The policy machinery loads on first use, so `--help` stays fast. */
async function tools() {
  const [
    load,
    errors,
    policyErrors,
    run,
    guardrails,
    policyFile,
    rules,
    verify,
    positions,
    reach,
    diff,
    graph,
    assertions,
    assertionFile,
    replay,
  ] = await Promise.all([
    import("../components/spec/load.ts"),
    import("../components/spec/errors.ts"),
    import("../policies/errors.ts"),
    import("../policies/run.ts"),
    import("../policies/guardrails/index.ts"),
    import("../policies/policy-file.ts"),
    import("../policies/rules.ts"),
    import("../policies/verify.ts"),
    import("../policies/positions.ts"),
    import("../policies/reachability.ts"),
    import("../policies/diff.ts"),
    import("../policies/graph.ts"),
    import("../policies/assertions.ts"),
    import("../policies/assertion-file.ts"),
    import("../policies/replay.ts"),
  ]);
  return {
    load,
    errors,
    policyErrors,
    run,
    guardrails,
    policyFile,
    rules,
    verify,
    positions,
    reach,
    diff,
    graph,
    assertions,
    assertionFile,
    replay,
  };
}
type Tools = Awaited<ReturnType<typeof tools>>;

class Usage {
  readonly message: string;
  constructor(message: string) {
    this.message = message;
  }
}

function option(value: unknown, allowed: string[], name: string): string {
  if (typeof value !== "string" || !allowed.includes(value))
    throw new Usage(`--${name} must be one of ${allowed.join(", ")}, got ${JSON.stringify(value)}`);
  return value;
}

/** A loaded spec and, for YAML/JSON text, its text (for positions). */
interface Source {
  label: string;
  loaded: LoadResult;
  text: string | null;
}

const git = promisify(execFile);

/** A spec from a file, or from git (`REF:PATH`, read with `git show`) when no such file exists. */
async function loadSource(arg: string, t: Tools): Promise<Source> {
  const ref = /^([^:]+):(.+)$/.exec(arg);
  if (!existsSync(arg) && ref) {
    const ext = extname(ref[2]!).toLowerCase();
    if (![".yaml", ".yml", ".json"].includes(ext))
      throw new Usage(
        `${arg}: only YAML and JSON specs can be read from git (a .ts spec imports other files)`,
      );
    let text: string;
    try {
      text = (await git("git", ["show", arg], { maxBuffer: 256 * 1024 * 1024 })).stdout;
    } catch (err) {
      const detail = String((err as { stderr?: string }).stderr ?? (err as Error).message)
        .trim()
        .split("\n")[0];
      throw new Usage(`cannot read ${arg} from git: ${detail}`);
    }
    return { label: arg, loaded: { ...t.load.loadSpecText(text), file: arg }, text };
  }
  const loaded = await t.load.loadSpecFile(arg);
  const text =
    [".yaml", ".yml", ".json"].includes(extname(arg).toLowerCase()) && existsSync(arg)
      ? await readFile(arg, "utf8")
      : null;
  return { label: arg, loaded, text };
}

function printSpecErrors(s: Source, io: Io, t: Tools): void {
  if (s.loaded.ok) return;
  for (const e of s.loaded.errors) io.err(t.errors.formatSpecError(e, s.label));
  io.err(
    `✗ ${s.label}: ${s.loaded.errors.length} error${s.loaded.errors.length === 1 ? "" : "s"} (guardrails run on valid specs; see meshgate validate)`,
  );
}

/** --rules and --policy, validated: the organization's guardrails and policy. */
async function organization(
  values: Record<string, unknown>,
  t: Tools,
): Promise<{ rules: Guardrail[]; policy: PolicyConfig } | { errors: string[] }> {
  const files = (values.rules as string[] | undefined) ?? [];
  let rules: Guardrail[] = [];
  if (files.length > 0) {
    const r = await t.rules.loadRuleModules(files, t.guardrails.GUARDRAILS);
    if (!r.ok) return { errors: r.errors.map(t.policyErrors.formatPolicyLoadError) };
    rules = r.guardrails;
  }
  if (typeof values.policy !== "string") return { rules, policy: t.run.DEFAULT_POLICY };
  const p = await t.policyFile.loadPolicyFile(values.policy, [...t.guardrails.GUARDRAILS, ...rules]);
  if (!p.ok) return { errors: p.errors.map(t.policyErrors.formatPolicyLoadError) };
  return { rules, policy: p.policy };
}

/** Runs a command body; a Usage problem prints the message and the usage line and exits 2. */
function guarded(
  name: string,
  usage: string,
  body: (positionals: string[], values: Record<string, unknown>, io: Io) => Promise<number>,
) {
  return async (positionals: string[], values: Record<string, unknown>, io: Io) => {
    try {
      return await body(positionals, values, io);
    } catch (err) {
      if (err instanceof Usage) {
        io.err(`meshgate ${name}: ${err.message}\nUsage: ${usage}`);
        return 2;
      }
      throw err;
    }
  };
}

const VERIFY_USAGE =
  "meshgate verify SPEC [--assertions FILE]… [--policy FILE] [--rules MODULE]… [--format text|json]";
const EXPLAIN_USAGE =
  "meshgate explain SPEC --from internet|gateway|SERVICE [--to SERVICE|EXTERNAL] [--method M] --path P [--host H] [--port N]\n" +
  "       [--header NAME:VALUE]… [--claims JSON] [--scopes S,S] [--provider P] [--consumer C] [--client-ip IP]\n" +
  "       [--plaintext] [--format text|json]";
const REPLAY_USAGE = "meshgate replay SPEC --log FILE [--base SPEC] [--format text|json] [--fail-on change]";
const GRAPH_USAGE = "meshgate graph SPEC [--format mermaid|dot]";
const DIFF_USAGE =
  "meshgate diff BASE HEAD [--format markdown|json] [--fail-on widen] [--policy FILE] [--rules MODULE]…";

export const POLICY_COMMANDS: Record<string, Command> = {
  verify: {
    summary:
      "run the guardrails and traffic assertions on a spec: every violation with position and fix, N passed, N failed",
    usage: VERIFY_USAGE,
    details:
      "Runs every built-in guardrail (and the guardrails of each --rules module) on SPEC, then the traffic\n" +
      "assertions of each --assertions FILE (default: assertions.yaml or assertions.yml beside SPEC, when\n" +
      "there is one), each evaluated with the proxies' decision code. --policy FILE\n" +
      "(meshgate-policy.yaml) sets severities per code (error|warning|info|off) and limits.\n" +
      "Exit 0 when no check has an error-severity violation, 1 otherwise (or when SPEC is invalid),\n" +
      "2 on usage errors (including an invalid policy file or rule module).",
    options: {
      format: { type: "string", default: "text" },
      policy: { type: "string" },
      rules: { type: "string", multiple: true },
      assertions: { type: "string", multiple: true },
      help,
    },
    run: guarded("verify", VERIFY_USAGE, async ([file], values, io) => {
      const format = option(values.format, ["text", "json"], "format");
      if (!file) throw new Usage("missing SPEC (a .yaml, .json or .ts spec file)");
      const t = await tools();
      const org = await organization(values, t);
      if ("errors" in org) {
        for (const e of org.errors) io.err(e);
        return 2;
      }
      const source = await loadSource(file, t);
      if (!source.loaded.ok) {
        printSpecErrors(source, io, t);
        return 1;
      }
      const input = t.run.policyInput(source.loaded.spec);
      const sets = await assertionSets(file, values, input, t);
      if ("errors" in sets) {
        for (const e of sets.errors) io.err(e);
        return 2;
      }
      const checks = t.run.runGuardrails(input, {
        rules: org.rules,
        policy: org.policy,
        ...(source.text !== null ? { locate: t.positions.locatorFor(source.text) } : {}),
      });
      const asserted = sets.sets.flatMap((set) =>
        t.assertionFile.runAssertions(input, set.assertions, { file: set.file, locate: set.locate }),
      );
      const report = t.verify.verifyReport(source.label, checks, asserted);
      io.out(format === "json" ? JSON.stringify(report, null, 2) : t.verify.formatVerifyText(report));
      return report.ok ? 0 : 1;
    }),
  },
  explain: {
    summary: "the decision for one request, layer by layer, and each rule that produced it",
    usage: EXPLAIN_USAGE,
    details:
      "Evaluates one request with the proxies' decision code: for --from internet the gateway's route,\n" +
      "authentication (--claims/--scopes: a valid token of --provider; --consumer: that consumer's API key)\n" +
      "and authorization (--client-ip), then the sidecars of the services the route reaches (with the\n" +
      "gateway's identity) and the open network edges; for --from SERVICE (or gateway) --to SERVICE the\n" +
      "caller's sidecar, the callee's allow rules and the network edge; --to EXTERNAL with --host and\n" +
      "--port: the name (or address) and port the app asks its sidecar for. --plaintext (--from SERVICE\n" +
      "--to SERVICE): a pod of the caller that bypasses its sidecar, without a client certificate (refused by\n" +
      "a strict sidecar; a permissive one admits it by its allow rules' methods and paths alone). --method is\n" +
      "taken as sent: methods are case-sensitive, and `get` is refused (400) as the proxies refuse it.\n" +
      "Exit 0 whatever the verdict,\n" +
      "1 when SPEC is invalid, 2 on usage errors (an unknown service, consumer or provider).",
    options: {
      from: { type: "string" },
      to: { type: "string" },
      method: { type: "string", default: "GET" },
      path: { type: "string" },
      host: { type: "string" },
      port: { type: "string" },
      header: { type: "string", multiple: true },
      claims: { type: "string" },
      scopes: { type: "string" },
      provider: { type: "string" },
      consumer: { type: "string" },
      "client-ip": { type: "string" },
      plaintext: { type: "boolean" },
      format: { type: "string", default: "text" },
      help,
    },
    run: guarded("explain", EXPLAIN_USAGE, async ([file], values, io) => {
      const format = option(values.format, ["text", "json"], "format");
      if (!file) throw new Usage("missing SPEC (a .yaml, .json or .ts spec file)");
      if (typeof values.from !== "string") throw new Usage("missing --from (internet, gateway or a service)");
      const t = await tools();
      const source = await loadSource(file, t);
      if (!source.loaded.ok) {
        printSpecErrors(source, io, t);
        return 1;
      }
      // A tunnel to an external destination carries no path the sidecar sees: --path is optional there.
      const tunnel = typeof values.to === "string" && source.loaded.spec.external[values.to] !== undefined;
      if (typeof values.path !== "string" && !tunnel)
        throw new Usage("missing --path (the request target, e.g. /api/orders/7)");
      const request = explainRequestOf(
        tunnel && typeof values.path !== "string" ? { ...values, path: "/" } : values,
      );
      const input = t.run.policyInput(source.loaded.spec);
      const problems = t.assertions.requestProblems(input, request);
      if (problems.length > 0)
        throw new Usage(
          problems.map((p) => `--${flagOf(p.field)} ${p.message.slice(p.field.length + 2)}`).join("\n"),
        );
      const d = t.assertions.explainRequest(input, request);
      io.out(format === "json" ? JSON.stringify(d, null, 2) : t.assertions.formatDecision(d));
      return 0;
    }),
  },
  replay: {
    summary: "re-decide logged requests under a proposed spec: which outcomes would change",
    usage: REPLAY_USAGE,
    details:
      "FILE holds JSON access lines of the gateway and/or sidecars (other lines are ignored). Each request is\n" +
      "decided again under SPEC with the proxies' decision code, and compared with its logged outcome, or\n" +
      "with the decision under --base SPEC (BASE and SPEC may be git revisions: main:mesh.yaml). Lists the\n" +
      "requests whose allow/deny, route or refusal status class would change. Lines that cannot be replayed\n" +
      "(refused targets, client-certificate or OIDC principals, unknown callers) are counted as skipped.\n" +
      "Exit 0 (1 with --fail-on change when any outcome changes), 1 when a spec is invalid, 2 on usage errors.",
    options: {
      log: { type: "string" },
      base: { type: "string" },
      format: { type: "string", default: "text" },
      "fail-on": { type: "string" },
      help,
    },
    run: guarded("replay", REPLAY_USAGE, async ([file], values, io) => {
      const format = option(values.format, ["text", "json"], "format");
      if (values["fail-on"] !== undefined) option(values["fail-on"], ["change"], "fail-on");
      if (!file) throw new Usage("missing SPEC (the proposed spec)");
      if (typeof values.log !== "string") throw new Usage("missing --log FILE (JSON access lines)");
      let text: string;
      try {
        text = await readFile(values.log, "utf8");
      } catch (err) {
        throw new Usage(
          `cannot read ${values.log}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`,
        );
      }
      const t = await tools();
      const head = await loadSource(file, t);
      const base = typeof values.base === "string" ? await loadSource(values.base, t) : null;
      if (!head.loaded.ok || (base && !base.loaded.ok)) {
        printSpecErrors(head, io, t);
        if (base) printSpecErrors(base, io, t);
        return 1;
      }
      const { requests } = t.replay.parseAccessLog(text);
      const report = t.replay.replay(requests, t.run.policyInput(head.loaded.spec), {
        headLabel: head.label,
        ...(base && base.loaded.ok
          ? { base: t.run.policyInput(base.loaded.spec), baseLabel: base.label }
          : {}),
      });
      io.out(format === "json" ? JSON.stringify(report, null, 2) : t.replay.formatReplayText(report));
      return values["fail-on"] === "change" && report.changed.length > 0 ? 1 : 0;
    }),
  },
  graph: {
    summary: "draw the service graph (mermaid or dot): allowed edges, public entry points, mTLS state",
    usage: GRAPH_USAGE,
    details:
      "Nodes: internet, the gateway and every service. Edges: what the callee's allow rules admit\n" +
      "(labelled with methods and paths), public and authenticated entry points, declared calls the callee\n" +
      "denies (dashed). Deterministic output. Exit 0, 1 when SPEC is invalid.",
    options: { format: { type: "string", default: "mermaid" }, help },
    run: guarded("graph", GRAPH_USAGE, async ([file], values, io) => {
      const format = option(values.format, ["mermaid", "dot"], "format");
      if (!file) throw new Usage("missing SPEC (a .yaml, .json or .ts spec file)");
      const t = await tools();
      const source = await loadSource(file, t);
      if (!source.loaded.ok) {
        printSpecErrors(source, io, t);
        return 1;
      }
      const input = t.run.policyInput(source.loaded.spec);
      const g = t.graph.buildGraph(input, t.reach.staticReachability(input));
      io.out(format === "dot" ? t.graph.renderDot(g) : t.graph.renderMermaid(g));
      return 0;
    }),
  },
  diff: {
    summary: "semantic diff of two specs: who can now reach what, auth/limit/retry/timeout changes",
    usage: DIFF_USAGE,
    details:
      "BASE and HEAD are spec files, or git revisions of YAML/JSON specs (main:examples/shop/mesh.yaml,\n" +
      "read with git show) when no file of that name exists. Reports allowed edges and routes added and\n" +
      "removed, access widened and narrowed (and for whom), setting changes and new guardrail violations.\n" +
      "--fail-on widen exits 1 when any access widened. Exit 1 also when a spec is invalid, 2 on usage errors.",
    maxPositionals: 2,
    options: {
      format: { type: "string", default: "markdown" },
      "fail-on": { type: "string" },
      policy: { type: "string" },
      rules: { type: "string", multiple: true },
      help,
    },
    run: guarded("diff", DIFF_USAGE, async ([baseArg, headArg], values, io) => {
      const format = option(values.format, ["markdown", "json"], "format");
      if (values["fail-on"] !== undefined) option(values["fail-on"], ["widen"], "fail-on");
      if (!baseArg || !headArg) throw new Usage("give BASE and HEAD (spec files or REF:PATH git revisions)");
      const t = await tools();
      const org = await organization(values, t);
      if ("errors" in org) {
        for (const e of org.errors) io.err(e);
        return 2;
      }
      const [base, head] = [await loadSource(baseArg, t), await loadSource(headArg, t)];
      if (!base.loaded.ok || !head.loaded.ok) {
        printSpecErrors(base, io, t);
        printSpecErrors(head, io, t);
        return 1;
      }
      const bi = t.run.policyInput(base.loaded.spec);
      const hi = t.run.policyInput(head.loaded.spec);
      const d = t.diff.semanticDiff(bi, hi, {
        baseLabel: base.label,
        headLabel: head.label,
        rules: org.rules,
        policy: org.policy,
      });
      io.out(
        format === "json"
          ? JSON.stringify(d, null, 2)
          : t.diff.renderDiffMarkdown(d, {
              base: t.reach.staticReachability(bi),
              head: t.reach.staticReachability(hi),
            }),
      );
      return values["fail-on"] === "widen" && d.widened.length > 0 ? 1 : 0;
    }),
  },
};

const flagOf = (field: string) => (field === "clientIp" ? "client-ip" : field);

/** The request `meshgate explain` describes with its flags. */
function explainRequestOf(values: Record<string, unknown>): TrafficRequest {
  const str = (k: string) => (typeof values[k] === "string" ? (values[k] as string) : undefined);
  // The method as sent (RFC 9110 §9.1: case-sensitive): `get` gets the refusal the proxies give it.
  const r: TrafficRequest = { from: str("from")!, path: str("path")!, method: str("method")! };
  if (values.plaintext === true) r.plaintext = true;
  for (const [flag, key] of [
    ["to", "to"],
    ["host", "host"],
    ["provider", "provider"],
    ["consumer", "consumer"],
    ["client-ip", "clientIp"],
  ] as const) {
    const v = str(flag);
    if (v !== undefined) r[key] = v;
  }
  const port = str("port");
  if (port !== undefined) r.port = portFlag("port", port, 1);
  const headers = (values.header as string[] | undefined) ?? [];
  if (headers.length) {
    r.headers = {};
    for (const h of headers) {
      const i = h.indexOf(":");
      if (i <= 0) throw new Usage(`--header must be NAME:VALUE, got ${JSON.stringify(h)}`);
      r.headers[h.slice(0, i).trim().toLowerCase()] = h.slice(i + 1).trim();
    }
  }
  const claims = str("claims");
  if (claims !== undefined) {
    let parsed: unknown;
    try {
      parsed = JSON.parse(claims);
    } catch {
      throw new Usage(`--claims must be a JSON object (e.g. '{"sub":"u-1"}'), got ${JSON.stringify(claims)}`);
    }
    if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed))
      throw new Usage(`--claims must be a JSON object (e.g. '{"sub":"u-1"}')`);
    r.claims = parsed as Record<string, unknown>;
  }
  const scopes = str("scopes");
  if (scopes !== undefined) r.scopes = scopes.split(/[\s,]+/).filter(Boolean);
  return r;
}

/** The assertion files of a verify run: --assertions FILE…, else assertions.yaml beside the spec. */
async function assertionSets(
  specArg: string,
  values: Record<string, unknown>,
  input: PolicyInput,
  t: Tools,
): Promise<{ sets: AssertionSet[] } | { errors: string[] }> {
  let files = (values.assertions as string[] | undefined) ?? [];
  if (files.length === 0 && existsSync(specArg)) {
    const dir = dirname(specArg);
    files = ["assertions.yaml", "assertions.yml"]
      .map((f) => join(dir, f))
      .filter((f) => existsSync(f))
      .slice(0, 1);
  }
  const sets: AssertionSet[] = [];
  const errors: string[] = [];
  for (const f of files) {
    const r = await t.assertionFile.loadAssertionFile(f);
    if (!r.ok) {
      errors.push(...r.errors.map(t.policyErrors.formatPolicyLoadError));
      continue;
    }
    const problems = t.assertionFile.checkAssertionReferences(input, r.set);
    if (problems.length) errors.push(...problems.map(t.policyErrors.formatPolicyLoadError));
    else sets.push(r.set);
  }
  return errors.length ? { errors } : { sets };
}
