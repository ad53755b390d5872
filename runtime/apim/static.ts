/**
 * The static-files route kind: a directory served like a small web server, so one gateway can also
 * serve a single-page app.
 *
 * - GET and HEAD only (405 with `Allow: GET, HEAD` otherwise).
 * - The file is found from the canonical path: with a trailing `**` in match.path, the part `**` matched
 *   (`/app/**` + `dir: web` serves `/app/main.js` from `web/main.js`); without one, the whole path.
 *   Each segment is percent-decoded; a segment that is empty, `.`/`..`, starts with `.` (dotfiles,
 *   `.git`, `.env`), or holds `/`, `\`, NUL or a control character gives 404. The file must resolve
 *   (symlinks followed) to a regular file inside the root's real path, and no segment of that real path
 *   may start with `.` — a symlink that leaves the root, or points at a dotfile, gives 404.
 * - A directory path without a trailing slash is redirected (301) to the path with one; with it, the
 *   first index file that exists is served.
 * - ETag: strong, from size and mtime (nginx-style, one per content coding); Last-Modified from mtime.
 *   If-None-Match (weak comparison, `*`), else If-Modified-Since, gives 304.
 * - One byte range per request (206 with Content-Range; 416 with `Content-Range: bytes *\/size` when
 *   unsatisfiable; If-Range honoured); several ranges get the full 200.
 * - With `precompressed`, a `.br` or `.gz` sibling is sent when Accept-Encoding accepts it (br
 *   preferred at equal q), with Content-Encoding and `Vary: Accept-Encoding`.
 * - Content-Type from a built-in extension table (`application/octet-stream` otherwise), always with
 *   `X-Content-Type-Options: nosniff`.
 * - With `spaFallback`, a GET/HEAD for a path that is no file and whose Accept lists text/html gets the
 *   fallback file (200) — refused paths (dotfiles, escapes, FIFOs and other special files) never fall
 *   back.
 * - Files stream from an open descriptor (`FileHandle.createReadStream`): never read whole into memory,
 *   and headers describe the very file that is streamed (fstat of the open descriptor).
 */
import { constants, realpathSync, statSync } from "node:fs";
import { open, realpath, type FileHandle } from "node:fs/promises";
import type { OutgoingHttpHeaders, ServerResponse } from "node:http";
import { extname, isAbsolute, join, resolve, sep } from "node:path";
import type { GatewayRoute } from "../contract/schema.ts";
import { parsePathPattern, isPatternError } from "../decide/pattern.ts";
import { encodingQuality, ifRangeHolds, makeEtag, notModified, parseRange } from "./http-cache.ts";
import { sendTimeoutError } from "../net/send-timeout.ts";

type StaticAction = Extract<GatewayRoute["action"], { kind: "static" }>;

export interface CompiledStatic {
  /** The root's real path (symlinks resolved at load). */
  readonly root: string;
  /** Leading canonical-path segments that are not part of the file path (those before `**`). */
  readonly prefixSegments: number;
  readonly index: readonly string[];
  /** The fallback file's path segments under the root, or null. */
  readonly spaFallback: readonly string[] | null;
  readonly precompressed: boolean;
}

/** A static route that cannot be served: the config is refused whole. */
export class StaticCompileError extends Error {
  readonly code = "E_RT_STATIC";
}

/**
 * Compiles a static route: the root must exist and be a directory (a relative root is resolved
 * against the gateway's working directory); index names are plain file names; the fallback a path.
 */
export function compileStatic(
  routeName: string,
  pattern: string,
  action: StaticAction,
  cwd = process.cwd(),
): CompiledStatic {
  const where = `route ${routeName}: static`;
  const abs = isAbsolute(action.root) ? action.root : resolve(cwd, action.root);
  let root: string;
  try {
    root = realpathSync(abs);
    if (!statSync(root).isDirectory()) throw new Error("not a directory");
  } catch (err) {
    throw new StaticCompileError(
      `${where}.root: ${abs} is not a readable directory (${(err as Error).message})`,
    );
  }
  for (const name of action.index) {
    if (
      name === "" ||
      name.includes("/") ||
      name.includes("\\") ||
      name.startsWith(".") ||
      name.includes("\0")
    )
      throw new StaticCompileError(`${where}.index: ${JSON.stringify(name)} is not a plain file name`);
  }
  let spaFallback: readonly string[] | null = null;
  if (action.spaFallback !== null) {
    const mapped = action.spaFallback.startsWith("/") ? mapStaticPath(action.spaFallback, 0) : null;
    if (mapped === null || mapped.directory)
      throw new StaticCompileError(
        `${where}.spaFallback: ${JSON.stringify(action.spaFallback)} is not a file path such as /index.html`,
      );
    spaFallback = mapped.segments;
  }
  const parsed = parsePathPattern(pattern);
  if (isPatternError(parsed)) throw new StaticCompileError(`${where}: ${parsed.error}`);
  const segs = parsed.segments;
  const prefixSegments = segs.length > 0 && segs[segs.length - 1]!.kind === "rest" ? segs.length - 1 : 0;
  return { root, prefixSegments, index: action.index, spaFallback, precompressed: action.precompressed };
}

export interface MappedPath {
  /** Decoded file-name segments under the root. */
  readonly segments: readonly string[];
  /** The path ends with a slash: it names a directory. */
  readonly directory: boolean;
}

/**
 * Maps a canonical request path to segments under the root, or null when it may not name a file
 * (404). Pure; the first line of defence (the real-path check after it is the second).
 */
export function mapStaticPath(path: string, prefixSegments: number): MappedPath | null {
  if (!path.startsWith("/")) return null;
  const all = path === "/" ? [] : path.slice(1).split("/");
  if (all.length < prefixSegments) return null;
  const rest = all.slice(prefixSegments);
  // A trailing slash names a directory; "/app" for "/app/**" names the root without one (redirected).
  const directory = path.endsWith("/");
  if (rest.length > 0 && rest[rest.length - 1] === "") rest.pop();
  const segments: string[] = [];
  for (const raw of rest) {
    let seg: string;
    try {
      seg = decodeURIComponent(raw);
    } catch {
      return null;
    }
    if (seg === "" || seg.startsWith(".")) return null;
    for (let i = 0; i < seg.length; i++) {
      const c = seg.charCodeAt(i);
      if (c < 0x20 || c === 0x7f || c === 47 /* / */ || c === 92 /* \ */) return null;
    }
    segments.push(seg);
  }
  return { segments, directory };
}

/** Content types by extension; text types carry charset=utf-8. */
export const CONTENT_TYPES: Readonly<Record<string, string>> = {
  ".html": "text/html; charset=utf-8",
  ".htm": "text/html; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".mjs": "text/javascript; charset=utf-8",
  ".json": "application/json",
  ".map": "application/json",
  ".webmanifest": "application/manifest+json",
  ".txt": "text/plain; charset=utf-8",
  ".md": "text/markdown; charset=utf-8",
  ".csv": "text/csv; charset=utf-8",
  ".xml": "application/xml",
  ".svg": "image/svg+xml",
  ".png": "image/png",
  ".jpg": "image/jpeg",
  ".jpeg": "image/jpeg",
  ".gif": "image/gif",
  ".webp": "image/webp",
  ".avif": "image/avif",
  ".ico": "image/x-icon",
  ".woff": "font/woff",
  ".woff2": "font/woff2",
  ".ttf": "font/ttf",
  ".otf": "font/otf",
  ".wasm": "application/wasm",
  ".pdf": "application/pdf",
  ".mp4": "video/mp4",
  ".webm": "video/webm",
  ".mp3": "audio/mpeg",
  ".ogg": "audio/ogg",
  ".wav": "audio/wav",
  ".zip": "application/zip",
};

export function contentTypeOf(fileName: string): string {
  const ext = extname(fileName).toLowerCase();
  return Object.hasOwn(CONTENT_TYPES, ext) ? CONTENT_TYPES[ext]! : "application/octet-stream";
}

/** The request facts static serving reads. */
export interface StaticRequest {
  readonly method: string;
  /** Canonical path. */
  readonly path: string;
  /** Raw query string (kept on the trailing-slash redirect). */
  readonly query: string;
  readonly header: (name: string) => string | undefined;
}

export type StaticOutcome =
  | { readonly kind: "served"; readonly status: number }
  | {
      readonly kind: "error";
      readonly status: 404 | 405 | 416 | 500;
      readonly code: "static_not_found" | "method_not_allowed" | "range_not_satisfiable" | "internal_error";
      readonly message: string;
      readonly headers?: OutgoingHttpHeaders;
    };

interface OpenFile {
  readonly fh: FileHandle;
  readonly size: number;
  readonly mtimeMs: number;
  readonly directory: boolean;
}

const OPEN_FLAGS = constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK;
const MISSING = new Set(["ENOENT", "ENOTDIR", "ELOOP", "ENAMETOOLONG", "EACCES", "EPERM", "EISDIR"]);

/** A path that exists but may not be served (outside the root, a dotfile, not a regular file). */
const REFUSED = "refused" as const;

/**
 * Opens `candidate` when its real path lies inside the root and no segment of it is a dotfile, and it
 * is a regular file or a directory; null when it does not exist, REFUSED when it may not be served.
 * Errors other than "not there" are thrown.
 */
async function openUnder(s: CompiledStatic, candidate: string): Promise<OpenFile | null | typeof REFUSED> {
  let real: string;
  try {
    real = await realpath(candidate);
  } catch (err) {
    if (MISSING.has((err as { code?: string }).code ?? "")) return null;
    throw err;
  }
  if (real !== s.root) {
    if (!real.startsWith(s.root + sep)) return REFUSED;
    for (const seg of real.slice(s.root.length + 1).split(sep)) if (seg.startsWith(".")) return REFUSED;
  }
  let fh: FileHandle;
  try {
    // O_NOFOLLOW: the real path has no symlink left, so a swap to one after realpath() fails here;
    // O_NONBLOCK: opening a FIFO planted in the root does not block a thread-pool thread.
    fh = await open(real, OPEN_FLAGS);
  } catch (err) {
    if (MISSING.has((err as { code?: string }).code ?? "")) return null;
    throw err;
  }
  const st = await fh.stat();
  if (!st.isFile() && !st.isDirectory()) {
    await fh.close();
    return REFUSED;
  }
  return { fh, size: st.size, mtimeMs: st.mtimeMs, directory: st.isDirectory() };
}

/** The file to send for a path: the file itself, or a directory's index. */
async function findFile(
  s: CompiledStatic,
  segments: readonly string[],
  directoryRequest: boolean,
): Promise<{ file: OpenFile; path: string } | { redirect: true } | null | typeof REFUSED> {
  const candidate = segments.length === 0 ? s.root : join(s.root, ...segments);
  const opened = await openUnder(s, candidate);
  if (opened === null || opened === REFUSED) return opened;
  if (!opened.directory) {
    if (directoryRequest) {
      // "/file.txt/" names a directory that is not there.
      await opened.fh.close();
      return null;
    }
    return { file: opened, path: candidate };
  }
  await opened.fh.close();
  if (!directoryRequest) return { redirect: true };
  for (const name of s.index) {
    const path = join(candidate, name);
    const f = await openUnder(s, path);
    if (f === null || f === REFUSED) continue;
    if (!f.directory) return { file: f, path };
    await f.fh.close();
  }
  return null;
}

const notFound = (path: string): StaticOutcome => ({
  kind: "error",
  status: 404,
  code: "static_not_found",
  message: `no file for ${path}`,
});

/** The send timeout of a file's body, and what to do (log) when it cuts one. */
export interface SendTimeout {
  readonly ms: number;
  onTimeout(): void;
}

/**
 * Serves one request from a static route. Writes the response itself (200/206/301/304, HEAD without a
 * body) and returns "served", or returns the error for the gateway to answer (404/405/416/500).
 * `decorate` adds route headers (response transform, CORS) to every response head it writes.
 */
export async function serveStatic(
  s: CompiledStatic,
  req: StaticRequest,
  res: ServerResponse,
  decorate?: (headers: OutgoingHttpHeaders) => void,
  sendTimeout?: SendTimeout,
): Promise<StaticOutcome> {
  if (req.method !== "GET" && req.method !== "HEAD") {
    return {
      kind: "error",
      status: 405,
      code: "method_not_allowed",
      message: `${req.method} is not allowed on a static route`,
      headers: { allow: "GET, HEAD" },
    };
  }
  const mapped = mapStaticPath(req.path, s.prefixSegments);
  if (mapped === null) return notFound(req.path);
  let found: Awaited<ReturnType<typeof findFile>>;
  try {
    found = await findFile(s, mapped.segments, mapped.directory);
    if (found === null && s.spaFallback !== null && acceptsHtml(req.header("accept")))
      found = await findFile(s, s.spaFallback, false);
  } catch (err) {
    return {
      kind: "error",
      status: 500,
      code: "internal_error",
      message: `static file error: ${(err as { code?: string }).code ?? "unknown"}`,
    };
  }
  if (found === null || found === REFUSED) return notFound(req.path);
  if ("redirect" in found) {
    const headers: OutgoingHttpHeaders = {
      location: `${req.path}/${req.query ? `?${req.query}` : ""}`,
      "content-length": 0,
    };
    decorate?.(headers);
    res.writeHead(301, headers);
    res.end();
    return { kind: "served", status: 301 };
  }
  return send(s, req, res, found.file, found.path, decorate, sendTimeout);
}

function acceptsHtml(accept: string | undefined): boolean {
  return accept !== undefined && accept.toLowerCase().includes("text/html");
}

async function send(
  s: CompiledStatic,
  req: StaticRequest,
  res: ServerResponse,
  original: OpenFile,
  path: string,
  decorate: ((headers: OutgoingHttpHeaders) => void) | undefined,
  sendTimeout: SendTimeout | undefined,
): Promise<StaticOutcome> {
  let file = original;
  let coding: "br" | "gzip" | null = null;
  if (s.precompressed) {
    const ae = req.header("accept-encoding");
    const br = encodingQuality(ae, "br");
    const gz = encodingQuality(ae, "gzip");
    const order: ["br" | "gzip", string][] =
      br >= gz
        ? [
            ["br", ".br"],
            ["gzip", ".gz"],
          ]
        : [
            ["gzip", ".gz"],
            ["br", ".br"],
          ];
    for (const [c, ext] of order) {
      if ((c === "br" ? br : gz) <= 0) continue;
      let variant: OpenFile | null | typeof REFUSED;
      try {
        variant = await openUnder(s, path + ext);
      } catch {
        variant = null;
      }
      if (variant === null || variant === REFUSED) continue;
      if (variant.directory) {
        await variant.fh.close();
        continue;
      }
      await original.fh.close();
      file = variant;
      coding = c;
      break;
    }
  }
  const etag = makeEtag(file.size, file.mtimeMs, coding);
  const headers: OutgoingHttpHeaders = {
    "content-type": contentTypeOf(path),
    etag,
    "last-modified": new Date(file.mtimeMs).toUTCString(),
    "accept-ranges": "bytes",
    "x-content-type-options": "nosniff",
  };
  if (s.precompressed) headers.vary = "Accept-Encoding";
  if (coding !== null) headers["content-encoding"] = coding;
  decorate?.(headers);

  if (notModified(req.header("if-none-match"), req.header("if-modified-since"), etag, file.mtimeMs)) {
    await file.fh.close();
    delete headers["content-type"];
    delete headers["content-encoding"];
    res.writeHead(304, headers);
    res.end();
    return { kind: "served", status: 304 };
  }

  let status = 200;
  let start = 0;
  let end = file.size - 1;
  if (req.method === "GET" && ifRangeHolds(req.header("if-range"), etag, file.mtimeMs)) {
    const range = parseRange(req.header("range"), file.size);
    if (range.kind === "unsatisfiable") {
      await file.fh.close();
      return {
        kind: "error",
        status: 416,
        code: "range_not_satisfiable",
        message: `the range is outside the ${file.size} bytes of the file`,
        headers: { "content-range": `bytes */${file.size}` },
      };
    }
    if (range.kind === "range") {
      status = 206;
      start = range.start;
      end = range.end;
      headers["content-range"] = `bytes ${start}-${end}/${file.size}`;
    }
  }
  headers["content-length"] = Math.max(0, end - start + 1);
  res.writeHead(status, headers);
  if (req.method === "HEAD" || file.size === 0) {
    await file.fh.close();
    res.end();
    return { kind: "served", status };
  }
  const length = end - start + 1;
  const stream = file.fh.createReadStream({ start, end, autoClose: true });
  stream.on("error", (err) => res.destroy(err));
  res.once("close", () => {
    if (!stream.destroyed) stream.destroy();
  });
  // A file cut short while it is sent (truncated or replaced in place) ends the stream early: ending the
  // response then would present a short body as complete, and on a kept-alive HTTP/1.1 connection the
  // client would read the next response as the rest of this body. Reset instead (nginx: "file was
  // truncated", connection closed).
  stream.pipe(res, { end: false });
  // The send timeout (nginx's send_timeout): pipe() pauses the file while the client takes nothing; a
  // client that takes nothing for that long has its response destroyed (the descriptor closed with it).
  const timeoutMs = sendTimeout?.ms ?? 0;
  if (sendTimeout !== undefined && timeoutMs > 0) {
    let timer: NodeJS.Timeout | null = null;
    const stop = () => {
      if (timer !== null) clearTimeout(timer);
      timer = null;
    };
    stream.on("pause", () => {
      stop();
      timer = setTimeout(() => {
        timer = null;
        sendTimeout.onTimeout();
        res.destroy(sendTimeoutError());
      }, timeoutMs);
    });
    res.on("drain", stop); // pipe() resumes the file on the client's 'drain' (no 'resume' event)
    stream.once("close", stop);
  }
  stream.once("end", () => {
    if (stream.bytesRead < length) res.destroy(new Error(`${path} shrank while it was sent`));
    else res.end();
  });
  return { kind: "served", status };
}
