// Lint configuration. The layering rules below are the executable form of DESIGN.md's layout table:
// they fail `npm test` when a folder imports across a boundary it must not cross.
import js from "@eslint/js";
import tseslint from "typescript-eslint";

const pulumi = {
  group: ["@pulumi/*"],
  message: "Only components/, stacks/ and policies/pack/ may import @pulumi/*.",
};
const cdk8s = {
  group: ["cdk8s", "cdk8s-*", "cdk8s/*"],
  message: "Only the Kubernetes chart (components/kubernetes/) may import cdk8s.",
};
const repoFolder = (folder, why) => ({
  group: [`**/${folder}`, `**/${folder}/**`, `meshgate/${folder}`],
  message: why,
});

/** The folders each layer must not import, with the reason printed by the lint error. */
const layers = [
  {
    files: ["runtime/**/*.ts"],
    patterns: [
      repoFolder("components", "runtime/ is the data plane and imports nothing from the other folders."),
      repoFolder("policies", "runtime/ is the data plane and imports nothing from the other folders."),
      repoFolder("stacks", "runtime/ is the data plane and imports nothing from the other folders."),
      repoFolder("cli", "runtime/ is the data plane and imports nothing from the other folders."),
      { group: ["meshgate", "meshgate/*"], message: "runtime/ must not import the meshgate package itself." },
      pulumi,
      cdk8s,
    ],
  },
  {
    files: ["components/**/*.ts"],
    ignores: ["components/kubernetes/**"],
    patterns: [
      repoFolder("policies", "components/ sits below policies/."),
      repoFolder("stacks", "components/ sits below stacks/."),
      repoFolder("cli", "components/ sits below cli/."),
      cdk8s,
    ],
  },
  {
    files: ["components/kubernetes/**/*.ts"],
    patterns: [
      repoFolder("policies", "components/ sits below policies/."),
      repoFolder("stacks", "components/ sits below stacks/."),
      repoFolder("cli", "components/ sits below cli/."),
    ],
  },
  {
    files: ["policies/**/*.ts"],
    ignores: ["policies/pack/**"],
    patterns: [
      repoFolder("stacks", "policies/ sits below stacks/."),
      repoFolder("cli", "policies/ sits below cli/."),
      pulumi,
      cdk8s,
    ],
  },
  {
    files: ["cli/**/*.ts", "bin/**/*.js", "examples/**/*.ts", "bench/**/*.ts"],
    ignores: ["examples/existing-program/**"],
    patterns: [pulumi, cdk8s],
  },
  // A user's Pulumi program that imports the components: Pulumi yes, cdk8s and meshgate's internals no.
  {
    files: ["examples/existing-program/**/*.ts"],
    patterns: [cdk8s, repoFolder("components", 'examples use the public API: import from "meshgate".')],
  },
  { files: ["stacks/**/*.ts"], patterns: [cdk8s] },
];

export default tseslint.config(
  { ignores: ["node_modules/**", "dist/**", "schema/**", "**/testdata/**", ".meshgate/**"] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    languageOptions: {
      ecmaVersion: 2024,
      sourceType: "module",
      globals: { process: "readonly", console: "readonly" },
    },
    rules: {
      "@typescript-eslint/no-unused-vars": ["error", { argsIgnorePattern: "^_", varsIgnorePattern: "^_" }],
      "@typescript-eslint/consistent-type-imports": "error",
      "no-console": "off",
    },
  },
  ...layers.map(({ files, ignores, patterns }) => ({
    files,
    ...(ignores ? { ignores } : {}),
    rules: { "no-restricted-imports": ["error", { patterns }] },
  })),
);
