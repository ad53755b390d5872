export { translate, IDENTITY_DIRS, IDENTITY_FILES, identityDir, svidFiles } from "./translate.ts";
export type * from "./ir.ts";
