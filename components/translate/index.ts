export { translate } from "./translate.ts";
export type * from "./ir.ts";
