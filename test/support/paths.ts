/**
 * The path-bypass corpus shared by the canonicalization tests (test/runtime/canonical.test.ts) and the
 * gateway's end-to-end authorization corpus (test/auth/gateway.test.ts): programmatic variants of protected
 * and public paths (encodings, "//", dot segments, ";params", case, %00, overlong UTF-8, fragments), and an
 * independent reference resolver (RFC 3986 §5.2.4) to compare accepted targets against.
 */

/** The characters canonicalization decodes from %XX (RFC 3986 unreserved plus sub-delims, ":" and "@"). */
const UNRESERVED = /^[A-Za-z0-9\-._~!$&'()*+,;=:@]$/;

const UNRESERVED_BYTE = (b: number): boolean => b < 128 && UNRESERVED.test(String.fromCharCode(b));
const C1 = /[\u0080-\u009f]/;

/**
 * An independent reference for origin-form targets: validate characters, decode unreserved escapes
 * (others upper-cased), refuse the ambiguous escapes, check UTF-8 with decodeURIComponent, merge slashes
 * (when asked), refuse dot segments with parameters, then RFC 3986 §5.2.4 remove_dot_segments, refusing
 * a climb above the root. Returns the canonical path, or null when the target must be refused.
 */
export function referencePath(target: string, mergeSlashes: boolean): string | null {
  if (!target.startsWith("/") || target.includes("#")) return null;
  const q = target.indexOf("?");
  const rawPath = q < 0 ? target : target.slice(0, q);
  const rawQuery = q < 0 ? "" : target.slice(q + 1);
  if (!/^(?:[A-Za-z0-9\-._~!$&'()*+,;=:@/?]|%[0-9A-Fa-f]{2})*$/.test(rawQuery)) return null;
  if (!/^(?:[A-Za-z0-9\-._~!$&'()*+,;=:@/]|%[0-9A-Fa-f]{2})*$/.test(rawPath)) return null;
  let refused = false;
  let path = rawPath.replace(/%([0-9A-Fa-f]{2})/g, (_m, hex: string) => {
    const b = parseInt(hex, 16);
    if (b === 0x2f || b === 0x5c || b < 0x20 || b === 0x7f) refused = true;
    return UNRESERVED_BYTE(b) ? String.fromCharCode(b) : `%${hex.toUpperCase()}`;
  });
  if (refused) return null;
  if (/%00/.test(rawQuery)) return null;
  try {
    if (C1.test(decodeURIComponent(path))) return null;
  } catch {
    return null;
  }
  if (mergeSlashes) path = path.replace(/\/{2,}/g, "/");
  if (path.split("/").some((seg) => /^\.\.?;/.test(seg))) return null;
  let input = path;
  let output = "";
  const popSegment = (): boolean => {
    if (output === "") return false;
    output = output.slice(0, Math.max(0, output.lastIndexOf("/")));
    return true;
  };
  while (input.length > 0) {
    if (input.startsWith("/./")) input = input.slice(2);
    else if (input === "/.") input = "/";
    else if (input.startsWith("/../")) {
      input = input.slice(3);
      if (!popSegment()) return null;
    } else if (input === "/..") {
      input = "/";
      if (!popSegment()) return null;
    } else {
      const next = input.indexOf("/", 1);
      const end = next < 0 ? input.length : next;
      output += input.slice(0, end);
      input = input.slice(end);
    }
  }
  return output === "" ? "/" : output;
}

/** Programmatic bypass variants of /admin, /api/orders and /public. */
export function bypassCorpus(): string[] {
  const protectedPaths = ["/admin", "/admin/users", "/api/orders", "/api/orders/42"];
  const dots = [
    "..",
    "%2e%2e",
    "%2E%2E",
    ".%2e",
    "%2e.",
    "%252e%252e",
    "%c0%ae%c0%ae",
    "..;",
    "..;x=1",
    ".%00.",
    "..%00",
    "%2e%2e%3b",
    ".;",
    "%2e;",
  ];
  const seps = ["/", "//", "/./", "%2f", "%2F", "%5c", "\\", "/%2e/"];
  const casings = [(p: string) => p, (p: string) => p.toUpperCase(), (p: string) => p.replace("a", "A")];
  const encodings = [
    (p: string) => p,
    (p: string) => p.replace("a", "%61"),
    (p: string) => p.replace("a", "%41"),
    (p: string) => p.replace("d", "%64"),
    (p: string) => p.replace("a", "%2561"),
    (p: string) => p.replace("/", "%2F"),
    (p: string) => p.replace("/", "//"),
    (p: string) => p.replace(/\//g, "/./"),
  ];
  const suffixes = ["", "/", ".", "/.", "/..", "#", "#x", "?x=1", ";a=b", "%00", "%20", "%C0%AE", "%252F"];
  const out = new Set<string>();
  // /public/<dot form><sep><protected path>: traversal out of a public prefix.
  for (const p of protectedPaths) {
    for (const d of dots) {
      for (const s of seps) out.add(`/public${s}${d}${s}${p.slice(1)}`);
    }
  }
  // Direct variants of every prefix: casing, encodings, suffixes.
  for (const p of [...protectedPaths, "/public", "/public/index.html"]) {
    for (const c of casings) {
      for (const e of encodings) {
        for (const s of suffixes) out.add(e(c(p)) + s);
      }
    }
  }
  // Leading-slash and dot prefixes in front of protected paths.
  for (const p of protectedPaths) {
    for (const pre of [
      "/",
      "//",
      "///",
      "/.",
      "/./",
      "/%2e",
      "/public/..",
      "/public/./..",
      "/public//..",
      "/public/%2e%2e",
      "/..",
    ]) {
      out.add(pre + p);
    }
  }
  return [...out];
}
