/**
 * The upstream's answer to a WebSocket handshake a proxy relayed (gateway and sidecar tunnels). Until the
 * upstream has switched protocols its connection is an HTTP/1.1 one: bytes the client sends after its
 * handshake — pipelined with it, or after a refusal — would reach the upstream as requests no route or
 * rule admitted (WebSocket smuggling). So a tunnel waits for this answer before relaying anything of the
 * client's, and opens only on a 101 that answers this very handshake, as nginx and Envoy do.
 */
import { createHash } from "node:crypto";
import type { Readable } from "node:stream";

/**
 * The handshake a proxy sends upstream (gateway and sidecar tunnels): the request line and `headers` as
 * given, as the bytes they stand for — latin1, one byte per character, so a header value's obs-text
 * (0x80–0xFF, which Node's parsers hand over one character per byte) reaches the upstream as the client
 * sent it, not re-encoded as UTF-8. Null when a character does not fit one byte: latin1 would keep only
 * its low byte, and U+010A would become an LF (a header injected).
 */
export function upgradeHandshake(path: string, headers: Record<string, string | string[]>): Buffer | null {
  let text = `GET ${path} HTTP/1.1\r\n`;
  for (const [name, value] of Object.entries(headers)) {
    for (const v of Array.isArray(value) ? value : [value]) text += `${name}: ${v}\r\n`;
  }
  text += "\r\n";
  return BEYOND_LATIN1.test(text) ? null : Buffer.from(text, "latin1");
}
const BEYOND_LATIN1 = /[\u0100-\uffff]/;

/** The most an upstream's answer may take before its head ends (16 KiB, as Node's HTTP parser allows). */
export const MAX_UPGRADE_ANSWER_HEAD = 16 * 1024;

export type UpgradeAnswer =
  /** A 101 with `Upgrade: websocket` and this handshake's Sec-WebSocket-Accept: the tunnel may open. */
  | { readonly kind: "switched"; readonly bytes: Buffer }
  /**
   * An ordinary response: relayed to the client, then the connection ends (its body is `contentLength`
   * bytes after `headEnd`, or lasts until the upstream closes when null).
   */
  | {
      readonly kind: "refused";
      readonly status: number;
      readonly bytes: Buffer;
      readonly headEnd: number;
      readonly contentLength: number | null;
    }
  /** A 101 that is not this handshake's answer, a malformed head, or one past the size limit: no tunnel. */
  | { readonly kind: "invalid"; readonly reason: string };

/**
 * Reads `upstream` until its answer head is complete, then calls `done` once (bytes after the head are in
 * `bytes`; the caller relays or drops them). `key` is the client's Sec-WebSocket-Key.
 */
export function readUpgradeAnswer(
  upstream: Readable,
  key: string | string[] | undefined,
  done: (answer: UpgradeAnswer) => void,
): void {
  let seen: Buffer = Buffer.alloc(0);
  const onData = (chunk: Buffer) => {
    seen = seen.length === 0 ? chunk : Buffer.concat([seen, chunk]);
    const end = seen.indexOf("\r\n\r\n");
    if (end < 0) {
      if (seen.length <= MAX_UPGRADE_ANSWER_HEAD) return;
      upstream.off("data", onData);
      return done({ kind: "invalid", reason: "the answer head is too large" });
    }
    upstream.off("data", onData);
    const head = parseHead(seen.subarray(0, end).toString("latin1"));
    if (head === null) return done({ kind: "invalid", reason: "a malformed answer head" });
    if (head.status !== 101) {
      return done({
        kind: "refused",
        status: head.status,
        bytes: seen,
        headEnd: end + 4,
        contentLength: head.contentLength,
      });
    }
    if (!switchedToWebSocket(head.headers, key))
      return done({ kind: "invalid", reason: "a 101 that does not answer this WebSocket handshake" });
    done({ kind: "switched", bytes: seen });
  };
  upstream.on("data", onData);
}

/** The status and headers (lower-case names) of a response head, or null when malformed. */
function parseHead(
  text: string,
): { status: number; headers: Map<string, string>; contentLength: number | null } | null {
  const lines = text.split("\r\n");
  const m = /^HTTP\/1\.[01] ([1-5][0-9][0-9])(?: |$)/.exec(lines[0]!);
  if (!m) return null;
  const headers = new Map<string, string>();
  for (const line of lines.slice(1)) {
    const colon = line.indexOf(":");
    if (colon <= 0) return null;
    const name = line.slice(0, colon).trim().toLowerCase();
    const value = line.slice(colon + 1).trim();
    const prior = headers.get(name);
    if (prior !== undefined && (name === "content-length" || name === "sec-websocket-accept")) return null;
    headers.set(name, prior === undefined ? value : `${prior}, ${value}`);
  }
  const cl = headers.get("content-length");
  if (cl !== undefined && !/^[0-9]{1,15}$/.test(cl)) return null;
  // A chunked or close-delimited body ends when the upstream closes (or idles out).
  const contentLength = cl !== undefined && !headers.has("transfer-encoding") ? Number(cl) : null;
  return { status: Number(m[1]), headers, contentLength };
}

/**
 * A 101 answers this handshake (RFC 6455 §4.1, what the client checks): `Upgrade: websocket`, and the
 * Sec-WebSocket-Accept of the client's Sec-WebSocket-Key.
 */
function switchedToWebSocket(headers: Map<string, string>, key: string | string[] | undefined): boolean {
  if ((headers.get("upgrade") ?? "").toLowerCase() !== "websocket") return false;
  if (typeof key !== "string") return false;
  const accept = createHash("sha1")
    .update(`${key.trim()}258EAFA5-E914-47DA-95CA-C5AB0DC85B11`)
    .digest("base64");
  return headers.get("sec-websocket-accept") === accept;
}
