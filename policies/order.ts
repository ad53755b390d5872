/**
 * Code-unit string order, for every sort of the policy outputs: unlike localeCompare it does not depend on
 * the ICU data or locale of the machine, so golden files and CI comments are byte-identical everywhere.
 * The same order translate uses (runtime/contract/canonical.ts).
 */
export { compareCodeUnits as cmp } from "../runtime/contract/canonical.ts";
