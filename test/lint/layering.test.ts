/** The layering rules of DESIGN.md are lint rules; these cases prove they fire (and allow what is allowed). */
import { ESLint } from "eslint";
import { describe, expect, it } from "vitest";

const eslint = new ESLint({ cwd: new URL("../../", import.meta.url).pathname });

async function restricted(file: string, source: string): Promise<boolean> {
  const [result] = await eslint.lintText(`${source}\nexport const x = y;\n`, { filePath: file });
  return result!.messages.some((m) => m.ruleId === "no-restricted-imports");
}

describe("layering lint", () => {
  it.each([
    [
      "runtime_must_not_import_components",
      "runtime/decide/x.ts",
      'import { y } from "../../components/spec/schema.ts";',
    ],
    ["runtime_must_not_import_policies", "runtime/x.ts", 'import { y } from "../policies/index.ts";'],
    ["runtime_must_not_import_stacks", "runtime/gateway/x.ts", 'import { y } from "../../stacks/index.ts";'],
    ["runtime_must_not_import_pulumi", "runtime/x.ts", 'import { y } from "@pulumi/pulumi";'],
    ["runtime_must_not_import_the_package_itself", "runtime/x.ts", 'import { y } from "meshgate";'],
    [
      "components_must_not_import_policies",
      "components/translate/x.ts",
      'import { y } from "../../policies/index.ts";',
    ],
    [
      "the_kubernetes_chart_must_not_import_policies",
      "components/kubernetes/x.ts",
      'import { y } from "../../policies/index.ts";',
    ],
    [
      "components_must_not_import_cdk8s_outside_the_kubernetes_renderer",
      "components/spec/x.ts",
      'import { y } from "cdk8s";',
    ],
    [
      "policies_must_not_import_pulumi_outside_the_pack",
      "policies/x.ts",
      'import { y } from "@pulumi/pulumi";',
    ],
    ["the_cli_must_not_import_pulumi", "cli/x.ts", 'import { y } from "@pulumi/aws";'],
    ["stacks_must_not_import_cdk8s", "stacks/x.ts", 'import { y } from "cdk8s-plus-34";'],
  ])("%s", async (_claim, file, source) => {
    expect(await restricted(file, source)).toBe(true);
  });

  it.each([
    ["runtime_may_import_runtime", "runtime/gateway/x.ts", 'import { y } from "../contract/index.ts";'],
    ["components_may_import_runtime", "components/x.ts", 'import { y } from "../runtime/index.ts";'],
    ["components_may_import_pulumi", "components/pulumi/x.ts", 'import { y } from "@pulumi/pulumi";'],
    ["the_kubernetes_chart_may_import_cdk8s", "components/kubernetes/x.ts", 'import { y } from "cdk8s";'],
    ["stacks_may_import_pulumi", "stacks/x.ts", 'import { y } from "@pulumi/aws";'],
    ["the_policy_pack_may_import_pulumi", "policies/pack/x.ts", 'import { y } from "@pulumi/pulumi";'],
  ])("%s", async (_claim, file, source) => {
    expect(await restricted(file, source)).toBe(false);
  });
});
