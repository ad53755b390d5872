/**
 * The `meshgate up` and `meshgate token` commands (cli/main.ts holds their table entries and imports
 * this module lazily). Exit codes: 0 success (up: stopped cleanly), 1 failure (invalid spec, port taken,
 * a process never ready, no issuer), 2 usage error, 130 forced stop.
 */
import { join, resolve } from "node:path";
import { parseDuration } from "../../components/spec/units.ts";

export interface CliIo {
  out(text: string): void;
  err(text: string): void;
}

/** A usage problem (exit 2), reported by cli/main.ts with the command's usage line. */
export class LocalUsageError extends Error {
  override name = "LocalUsageError";
}

function portOption(v: unknown, flag: string): number | undefined {
  if (v === undefined) return undefined;
  if (!/^[0-9]{1,5}$/.test(String(v)) || Number(v) < 1 || Number(v) > 65535)
    throw new LocalUsageError(`${flag} must be a port number (1-65535), got ${JSON.stringify(v)}`);
  return Number(v);
}

/** A duration flag's bounds: at least `minMs`, at most `max` (its milliseconds and how the message writes it). */
function durationOption(
  v: unknown,
  flag: string,
  minMs: number,
  max: { readonly ms: number; readonly label: string },
): number | undefined {
  if (v === undefined) return undefined;
  let ms: number;
  try {
    ms = parseDuration(String(v));
  } catch {
    throw new LocalUsageError(`${flag} must be a duration such as 10m or 1h, got ${JSON.stringify(v)}`);
  }
  if (ms < minMs) throw new LocalUsageError(`${flag} must be at least ${minMs / 1000}s`);
  if (!(ms <= max.ms))
    throw new LocalUsageError(`${flag} must be at most ${max.label}, got ${JSON.stringify(v)}`);
  return ms;
}

const DAY_MS = 86_400_000;
/** The longest SVID lifetime `up --svid-ttl` takes (a year; an SVID never outlives its intermediate anyway). */
const SVID_TTL_MAX = { ms: 365 * DAY_MS, label: "365d" };

/** The longest lifetime `meshgate token --ttl` takes: a dev token, not a credential to keep. */
const TOKEN_TTL_MAX = { ms: 30 * DAY_MS, label: "30d" };

/** `meshgate up SPEC …`: runs until SIGINT/SIGTERM/SIGHUP (a second one forces). */
export async function upCommand(
  spec: string | undefined,
  values: Record<string, unknown>,
  io: CliIo,
): Promise<number> {
  if (!spec) throw new LocalUsageError("missing SPEC (a .yaml, .json or .ts spec file)");
  // `--port` is the gateway port's short name (the scripted contract of DESIGN.md); both must agree.
  if (
    values.port !== undefined &&
    values["gateway-port"] !== undefined &&
    values.port !== values["gateway-port"]
  )
    throw new LocalUsageError("--port and --gateway-port name the same port: give one of them");
  const gatewayPort =
    values["gateway-port"] !== undefined
      ? portOption(values["gateway-port"], "--gateway-port")
      : portOption(values.port, "--port");
  const adminPort = portOption(values["admin-port"], "--admin-port");
  const portBase = portOption(values["port-base"], "--port-base");
  const svidTtlMs = durationOption(values["svid-ttl"], "--svid-ttl", 10_000, SVID_TTL_MAX);
  const { up, UpError } = await import("./up.ts");
  // Signals are handled from the start: the children lead their own process groups (a terminal's Ctrl-C
  // reaches only this process), so dying of SIGINT while they start would leave them all running.
  const starting = new AbortController();
  const forcing = new AbortController();
  let handle: Awaited<ReturnType<typeof up>> | undefined;
  let signals = 0;
  let done: (code: number) => void = () => {};
  const onSignal = (signal: string) => {
    signals++;
    if (!handle) {
      io.out(
        signals === 1
          ? `[up] ${signal}: stopping every process started so far (again to force)`
          : `[up] ${signal} again: killing every process started so far now`,
      );
      if (signals === 1) starting.abort();
      else forcing.abort();
    } else if (signals === 1) {
      io.out(`[up] ${signal}: draining and stopping every process (again to force)`);
      void handle.stop().then(() => {
        io.out("[up] stopped");
        done(0);
      });
    } else {
      io.out(`[up] ${signal} again: killing every process now`);
      void handle.stop(true).then(() => done(130));
    }
  };
  // SIGHUP is the terminal closing (or an ssh session dropping): the children are in their own process
  // groups and get no hangup of their own, so a launcher that died of it would leave them all running.
  for (const signal of ["SIGINT", "SIGTERM", "SIGHUP"] as const) process.on(signal, () => onSignal(signal));
  // A reader that is gone — the closed terminal (EIO), or a `| tee` the same Ctrl-C killed (EPIPE) — must
  // not kill the launcher mid-stop either: an unhandled stream error would, leaving every child running.
  // What is left to print is lost; the stop goes on.
  for (const stream of [process.stdout, process.stderr]) stream.on("error", () => {});
  try {
    handle = await up({
      signal: starting.signal,
      force: forcing.signal,
      specPath: spec,
      out: (l) => io.out(l),
      err: (l) => io.err(l),
      prometheus: values["no-prometheus"] !== true,
      watch: values.watch === true,
      ...(gatewayPort !== undefined ? { gatewayPort } : {}),
      ...(adminPort !== undefined ? { adminPort } : {}),
      ...(portBase !== undefined ? { portBase } : {}),
      ...(svidTtlMs !== undefined ? { svidTtlMs } : {}),
      ...(typeof values["state-dir"] === "string" ? { stateDir: values["state-dir"] } : {}),
    });
  } catch (err) {
    if (err instanceof UpError) {
      io.err(`meshgate up: ${err.message} [${err.code}]`);
      return err.code === "E_LOCAL_INTERRUPTED" ? 130 : 1;
    }
    throw err;
  }
  return new Promise<number>((resolve) => (done = resolve));
}

/** `meshgate token`: prints a JWT signed by the dev issuer of the state dir. */
export async function tokenCommand(values: Record<string, unknown>, io: CliIo): Promise<number> {
  const ttlMs = durationOption(values.ttl, "--ttl", 1000, TOKEN_TTL_MAX)!;
  for (const flag of ["sub", "aud"] as const)
    if (values[flag] !== undefined && String(values[flag]).trim() === "")
      throw new LocalUsageError(
        `--${flag} must not be empty: ${flag === "sub" ? "give the subject, e.g. --sub alice (the default)" : "give an audience of the spec's JWT providers, or leave --aud out for the first one"}`,
      );
  const claims: Record<string, string> = {};
  for (const c of (values.claim as string[] | undefined) ?? []) {
    const m = /^([A-Za-z_][A-Za-z0-9_.-]*)=(.*)$/.exec(c);
    if (!m) throw new LocalUsageError(`--claim must be NAME=VALUE, got ${JSON.stringify(c)}`);
    if (["iss", "sub", "aud", "exp", "nbf", "iat", "scope"].includes(m[1]!))
      throw new LocalUsageError(`--claim cannot set ${m[1]} (use the dedicated option)`);
    claims[m[1]!] = m[2]!;
  }
  const scopes = ((values.scope as string[] | undefined) ?? []).flatMap((s) =>
    s.split(/\s+/).filter(Boolean),
  );
  const { loadDevIssuer, signDevToken, IssuerError } = await import("./issuer.ts");
  try {
    const dir = join(resolve(String(values["state-dir"])), "issuer");
    const { issuer, info } = await loadDevIssuer(dir);
    io.out(
      await signDevToken(issuer, info, {
        sub: String(values.sub),
        scopes,
        ttlMs,
        claims,
        ...(typeof values.aud === "string" ? { audience: values.aud } : {}),
      }),
    );
    return 0;
  } catch (err) {
    if (err instanceof IssuerError) {
      io.err(`meshgate token: ${err.message} [${err.code}]`);
      return 1;
    }
    throw err;
  }
}
