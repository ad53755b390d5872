/** The data plane's public surface. Imports nothing from the other folders of the repo. */
export * from "./contract/index.ts";
export * from "./decide/index.ts";
