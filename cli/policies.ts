/**
 * The policy commands: `meshgate verify`, `meshgate graph`, `meshgate diff`. Exit codes: 0 success, 1 the
 * spec is invalid or a check failed (verify: an error-severity violation; diff: access widened with
 * --fail-on widen), 2 usage errors (unknown options, an unreadable or invalid policy file or rule module, a
 * git ref that does not resolve).
 */
import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { extname } from "node:path";
import { promisify } from "node:util";
import type { LoadResult } from "../components/spec/load.ts";
import type { Guardrail } from "../policies/types.ts";
import type { PolicyConfig } from "../policies/run.ts";
import type { Command, Io } from "./main.ts";

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

const VERIFY_USAGE = "meshgate verify SPEC [--policy FILE] [--rules MODULE]… [--format text|json]";
const GRAPH_USAGE = "meshgate graph SPEC [--format mermaid|dot]";
const DIFF_USAGE =
  "meshgate diff BASE HEAD [--format markdown|json] [--fail-on widen] [--policy FILE] [--rules MODULE]…";

export const POLICY_COMMANDS: Record<string, Command> = {
  verify: {
    summary: "run the guardrails on a spec: every violation with position and fix, N passed, N failed",
    usage: VERIFY_USAGE,
    details:
      "Runs every built-in guardrail (and the guardrails of each --rules module) on SPEC. --policy FILE\n" +
      "(meshgate-policy.yaml) sets severities per code (error|warning|info|off) and limits.\n" +
      "Exit 0 when no check has an error-severity violation, 1 otherwise (or when SPEC is invalid),\n" +
      "2 on usage errors (including an invalid policy file or rule module).",
    options: {
      format: { type: "string", default: "text" },
      policy: { type: "string" },
      rules: { type: "string", multiple: true },
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
      const checks = t.run.runGuardrails(t.run.policyInput(source.loaded.spec), {
        rules: org.rules,
        policy: org.policy,
        ...(source.text !== null ? { locate: t.positions.locatorFor(source.text) } : {}),
      });
      const report = t.verify.verifyReport(source.label, checks);
      io.out(format === "json" ? JSON.stringify(report, null, 2) : t.verify.formatVerifyText(report));
      return report.ok ? 0 : 1;
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
