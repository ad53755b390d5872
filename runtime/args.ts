/**
 * Command-line parsing shared by every `meshgate` command (cli/main.ts, cli/pki.ts and the runtime
 * bundle's runtime/cli.ts): node:util's parseArgs, strict, plus one rule it lacks — an option that takes
 * one value may be given once. parseArgs keeps the last of `--port 8080 --port 9090`; a script that
 * appends a flag to a command line someone else wrote would then change a port, a config file or a
 * trust domain silently. Options declared `multiple: true` (`--header`, `--scope`, …) repeat as before.
 */
import { parseArgs, type ParseArgsConfig } from "node:util";

/** A flag given twice: carries the code parseArgs' own usage errors carry, so callers exit 2 the same way. */
export class RepeatedOptionError extends Error {
  readonly code = "ERR_PARSE_ARGS_REPEATED_OPTION";
  readonly option: string;
  constructor(option: string) {
    super(`--${option} given twice: give it once`);
    this.name = "RepeatedOptionError";
    this.option = option;
  }
}

/** parseArgs(config) with `strict: true`, refusing a single-valued option given more than once. */
export function parseCommandLine<T extends ParseArgsConfig>(config: T): ReturnType<typeof parseArgs<T>> {
  const parsed = parseArgs({ ...config, strict: true, tokens: true });
  const seen = new Set<string>();
  for (const token of parsed.tokens ?? []) {
    if (token.kind !== "option" || config.options?.[token.name]?.multiple === true) continue;
    if (seen.has(token.name)) throw new RepeatedOptionError(token.name);
    seen.add(token.name);
  }
  const { tokens: _tokens, ...result } = parsed;
  return result as ReturnType<typeof parseArgs<T>>;
}

/** A flag's value out of its range: the parseArgs code again, so every command reports it as a usage error. */
export class OptionValueError extends Error {
  readonly code = "ERR_PARSE_ARGS_INVALID_OPTION_VALUE";
  constructor(message: string) {
    super(message);
    this.name = "OptionValueError";
  }
}

/**
 * A TCP port flag: decimal digits from `min` (0 lets the system pick a free port) to 65535. Anything else
 * (99999, -1, 80a, 0x50) is refused with the flag and the range, never passed on or ignored.
 */
export function portFlag(name: string, value: unknown, min: 0 | 1 = 0): number {
  const s = String(value);
  const n = /^[0-9]{1,5}$/.test(s) ? Number(s) : NaN;
  if (!(n >= min && n <= 65535))
    throw new OptionValueError(
      `--${name} must be a port number from ${min} to 65535, got ${JSON.stringify(value)}`,
    );
  return n;
}
