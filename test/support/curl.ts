/**
 * curl as an independent HTTP client for tests: the status, the response headers (lower-case names,
 * repeated headers joined with ", "), the body (as bytes), and curl's exit code (18 = transfer closed
 * with data outstanding, 56 = failure receiving: how a reset response looks to a client).
 */
import { execFile } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

export interface CurlResult {
  readonly status: number;
  readonly headers: Readonly<Record<string, string>>;
  readonly body: Buffer;
  readonly text: string;
  readonly exitCode: number;
}

/** `output`: write the body to this file instead (it is then not read into memory; `body` is empty). */
export function curl(
  url: string,
  args: readonly string[] = [],
  options: { timeoutS?: number; output?: string } = {},
): Promise<CurlResult> {
  const timeoutS = options.timeoutS ?? 10;
  const dir = mkdtempSync(join(tmpdir(), "curl-"));
  const headerFile = join(dir, "headers");
  const bodyFile = options.output ?? join(dir, "body");
  return new Promise((resolve, reject) => {
    execFile(
      "curl",
      [
        "-sS",
        "--max-time",
        String(timeoutS),
        "-D",
        headerFile,
        "-o",
        bodyFile,
        "-w",
        "%{http_code}",
        ...args,
        url,
      ],
      (err, stdout) => {
        try {
          const exitCode = err ? ((err as { code?: number }).code ?? 1) : 0;
          const headers: Record<string, string> = {};
          let raw = "";
          try {
            raw = readFileSync(headerFile, "latin1");
          } catch {
            /* no response head */
          }
          // The last response head (after any 100 Continue).
          const blocks = raw.split("\r\n\r\n").filter((b) => b.startsWith("HTTP/"));
          for (const line of (blocks.at(-1) ?? "").split("\r\n").slice(1)) {
            const i = line.indexOf(":");
            if (i <= 0) continue;
            const name = line.slice(0, i).trim().toLowerCase();
            const value = line.slice(i + 1).trim();
            headers[name] = headers[name] === undefined ? value : `${headers[name]}, ${value}`;
          }
          let body = Buffer.alloc(0);
          try {
            if (options.output === undefined) body = readFileSync(bodyFile);
          } catch {
            /* no body */
          }
          resolve({ status: Number(stdout) || 0, headers, body, text: body.toString("utf8"), exitCode });
        } catch (e) {
          reject(e as Error);
        } finally {
          rmSync(dir, { recursive: true, force: true });
        }
      },
    );
  });
}
