/**
 * The regular expressions of route conditions (`match.headers.<name>.regex`, `match.query.<name>.regex`)
 * run on values a client chooses. A backtracking engine can be made to take exponential time by one
 * value (`(a+)+$` against "aaaa…!": 28 characters took 10 s here), so they are compiled for V8's
 * linear-time engine (the `l` flag) — the guarantee Envoy gets from RE2. That engine refuses what needs
 * backtracking (backreferences, lookaheads) with a SyntaxError: such a regex is refused when the spec is
 * validated and when a config loads, never run.
 */
import { setFlagsFromString } from "node:v8";

let linearEngine = false;

/** `source` compiled for the linear-time engine; throws a SyntaxError for what it cannot run. */
export function linearRegExp(source: string): RegExp {
  if (!linearEngine) {
    // Process-wide and idempotent; only regexes with the `l` flag use the engine.
    setFlagsFromString("--enable-experimental-regexp-engine");
    linearEngine = true;
  }
  // eslint-disable-next-line no-invalid-regexp -- `l` (linear engine) is V8's, enabled just above
  return new RegExp(source, "l");
}
