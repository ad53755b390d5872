/**
 * runtime/Dockerfile, linted (there is no Docker engine here): base images pinned by an exact version
 * tag or a digest, a multi-stage build whose runtime stage is Node 24 slim or distroless and copies only
 * the bundle, a numeric non-root USER, no ADD of remote URLs, the entrypoint and default command the
 * components and the chart rely on. The rules are checked on bad fixtures too, so each can fail.
 */
import { readFile } from "node:fs/promises";
import { describe, expect, it } from "vitest";

interface Instruction {
  keyword: string;
  args: string;
  line: number;
}

/** Instructions of a Dockerfile: comments dropped, `\` continuations joined. */
function instructions(text: string): Instruction[] {
  const out: Instruction[] = [];
  let pending = "";
  let start = 0;
  text.split("\n").forEach((raw, i) => {
    const line = raw.trim();
    if (!pending && (line === "" || line.startsWith("#"))) return;
    if (!pending) start = i + 1;
    pending += (pending ? " " : "") + line.replace(/\\$/, "").trim();
    if (line.endsWith("\\")) return;
    const m = /^(\S+)\s*(.*)$/.exec(pending)!;
    out.push({ keyword: m[1]!.toUpperCase(), args: m[2]!, line: start });
    pending = "";
  });
  return out;
}

/** Every rule the image must satisfy; an empty list is a pass. */
function lint(text: string): string[] {
  const problems: string[] = [];
  const all = instructions(text);
  const stages: { from: Instruction; body: Instruction[] }[] = [];
  for (const ins of all) {
    if (ins.keyword === "FROM") stages.push({ from: ins, body: [] });
    else stages.at(-1)?.body.push(ins);
  }
  if (stages.length < 2) problems.push("not a multi-stage build");
  const names = new Set<string>();
  for (const { from } of stages) {
    const [image = "", as, name] = from.args.split(/\s+/).filter((a) => !a.startsWith("--"));
    if (as?.toUpperCase() === "AS" && name) names.add(name);
    if (names.has(image)) continue; // FROM an earlier stage
    const pinned =
      /@sha256:[0-9a-f]{64}$/.test(image) ||
      /:(\d+\.\d+\.\d+)(-[a-z0-9.-]+)?$/.test(image.replace(/^[^/]+\//, ""));
    if (!pinned)
      problems.push(`line ${from.line}: base image ${image} is not pinned to an exact version tag or digest`);
    if (/:latest$/.test(image)) problems.push(`line ${from.line}: base image ${image} uses latest`);
  }
  const runtime = stages.at(-1);
  if (runtime) {
    const image = runtime.from.args.split(/\s+/)[0] ?? "";
    if (
      !/^(node:24[.\d]*-(bookworm-|trixie-)?slim|gcr\.io\/distroless\/nodejs24-debian\d+(:[\w.-]+)?)/.test(
        image,
      )
    )
      problems.push(`the runtime stage's base ${image} is not node:24-slim or distroless nodejs24`);
    const users = runtime.body.filter((i) => i.keyword === "USER");
    const user = users.at(-1)?.args.split(":")[0];
    if (!user) problems.push("the runtime stage sets no USER (it would run as root)");
    else if (!/^[0-9]+$/.test(user))
      problems.push(`USER ${user} is not numeric (Kubernetes cannot verify runAsNonRoot)`);
    else if (Number(user) === 0) problems.push("USER 0 is root");
    for (const c of runtime.body.filter((i) => i.keyword === "COPY" || i.keyword === "ADD")) {
      const parts = c.args.split(/\s+/).filter((a) => !a.startsWith("--"));
      const sources = parts.slice(0, -1);
      if (!/--from=/.test(c.args) || sources.some((s) => !/^\/src\/dist\/?/.test(s)))
        problems.push(
          `line ${c.line}: the runtime stage copies ${sources.join(" ")}, not only the built dist/`,
        );
    }
    const entry = runtime.body.filter((i) => i.keyword === "ENTRYPOINT").at(-1)?.args;
    if (entry !== '["node","/app/meshgate.js"]')
      problems.push(`ENTRYPOINT is ${entry}, not ["node","/app/meshgate.js"]`);
    const cmd = runtime.body.filter((i) => i.keyword === "CMD").at(-1)?.args;
    if (cmd !== '["gateway","--config","/etc/meshgate/config.json"]')
      problems.push(`CMD is ${cmd}, not the gateway with /etc/meshgate/config.json`);
  }
  for (const ins of all) {
    if (ins.keyword === "ADD" && /\b(https?|ftp|git):\/\//.test(ins.args))
      problems.push(`line ${ins.line}: ADD of a remote URL (download in a build step you can verify)`);
    if (ins.keyword === "RUN" && /curl[^|]*\|\s*(ba)?sh/.test(ins.args))
      problems.push(`line ${ins.line}: pipes a download into a shell`);
  }
  return problems;
}

const GOOD = `FROM node:24.21.0-bookworm-slim AS build
RUN node scripts/build.ts
FROM node:24.21.0-bookworm-slim
COPY --from=build /src/dist/ /app/
USER 1000:1000
ENTRYPOINT ["node","/app/meshgate.js"]
CMD ["gateway","--config","/etc/meshgate/config.json"]
`;

describe("runtime/Dockerfile", () => {
  it("passes_every_rule", async () => {
    const text = await readFile(new URL("../../runtime/Dockerfile", import.meta.url), "utf8");
    expect(lint(text)).toEqual([]);
  });

  it("builds_the_bundle_with_the_build_script_and_ignores_everything_else", async () => {
    const text = await readFile(new URL("../../runtime/Dockerfile", import.meta.url), "utf8");
    expect(
      instructions(text)
        .filter((i) => i.keyword === "RUN")
        .map((i) => i.args),
    ).toContain("node scripts/build.ts");
    const ignore = await readFile(new URL("../../runtime/Dockerfile.dockerignore", import.meta.url), "utf8");
    const rules = ignore.split("\n").filter((l) => l && !l.startsWith("#"));
    expect(rules[0]).toBe("*");
    expect(rules).not.toContain("!node_modules");
  });

  it.each([
    [
      "an_unpinned_base",
      GOOD.replace("node:24.21.0-bookworm-slim AS build", "node:24-slim AS build"),
      /not pinned/,
    ],
    ["latest", GOOD.replace("node:24.21.0-bookworm-slim\nCOPY", "node:latest\nCOPY"), /latest/],
    ["a_single_stage", GOOD.split("FROM node:24.21.0-bookworm-slim\n")[1]!, /multi-stage/],
    ["no_user", GOOD.replace("USER 1000:1000\n", ""), /sets no USER/],
    ["a_root_user", GOOD.replace("USER 1000:1000", "USER 0"), /USER 0 is root/],
    ["a_named_user", GOOD.replace("USER 1000:1000", "USER node"), /not numeric/],
    [
      "a_remote_add",
      GOOD.replace("RUN node", "ADD https://example.com/x.tgz /x.tgz\nRUN node"),
      /remote URL/,
    ],
    [
      "sources_in_the_image",
      GOOD.replace("COPY --from=build /src/dist/ /app/", "COPY . /app/"),
      /not only the built dist/,
    ],
    [
      "a_non_node_runtime",
      GOOD.replace("FROM node:24.21.0-bookworm-slim\nCOPY", "FROM debian:12.8\nCOPY"),
      /not node:24-slim/,
    ],
    ["another_entrypoint", GOOD.replace('["node","/app/meshgate.js"]', '["sh","-c"]'), /ENTRYPOINT/],
    [
      "curl_into_a_shell",
      GOOD.replace("RUN node", "RUN curl -fsSL https://x | sh\nRUN node"),
      /pipes a download/,
    ],
  ])("catches_%s", (_name, text, problem) => {
    expect(lint(text).join("\n")).toMatch(problem);
  });
});
