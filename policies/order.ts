/**
 * Code-unit string order, for every sort of the policy outputs: unlike localeCompare it does not depend on
 * the ICU data or locale of the machine, so golden files and CI comments are byte-identical everywhere.
 */
export const cmp = (a: string, b: string): number => (a < b ? -1 : a > b ? 1 : 0);
