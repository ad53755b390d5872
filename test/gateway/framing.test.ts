/**
 * HTTP/1 framing at the edge (shared/notes/security.md, "HTTP/1 framing and headers"): a table of raw
 * requests written byte for byte with node:net — request smuggling (CL/TE), malformed chunked bodies, bare
 * LF/CR, NUL, bad header names, Host games, request-target tricks, methods, versions and sizes — in the
 * style of HAProxy's h1_request_target_validation / http_transfer_encoding / truncated tests.
 *
 * Every row claims two things: nothing reached the upstream (checked after a grace period, since a
 * smuggled request could arrive late), and the gateway answered with the expected 4xx status line or
 * closed the connection — never a 2xx. Positive controls prove the same path does forward well-formed
 * requests, so the table cannot pass because the gateway forwards nothing.
 */
import net from "node:net";
import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  gatewayConfig,
  startTestGateway,
  startUpstream,
  type TestGateway,
  type Upstream,
} from "../support/gateway.ts";

interface Exchange {
  /** Every byte the gateway sent (latin1, so bytes map 1:1 to characters). */
  readonly raw: string;
  /** The status of the first response, or null when the gateway sent no status line. */
  readonly status: number | null;
  /** Whether the gateway closed the connection (before the timeout). */
  readonly closed: boolean;
}

let gateway: TestGateway;
let upstream: Upstream;
let port: number;

/**
 * Opens a socket to the gateway, writes `bytes` as they are, and collects everything until the gateway
 * closes the connection or `timeoutMs` passes. A keep-alive connection is not closed after an error
 * response, so once one complete response (by its Content-Length) has arrived the exchange also ends
 * after `settleMs` without further bytes (a second response, e.g. to a smuggled request, would arrive
 * in that window). `halfClose` ends the write side after the bytes (a truncated request then meets EOF).
 */
function exchange(
  bytes: string | Buffer,
  { timeoutMs = 1500, settleMs = 250, halfClose = false } = {},
): Promise<Exchange> {
  return new Promise((resolve) => {
    const socket = net.connect(port, "127.0.0.1");
    const chunks: Buffer[] = [];
    let closed = false;
    let settle: NodeJS.Timeout | undefined;
    let done = false;
    const finish = () => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      clearTimeout(settle);
      const raw = Buffer.concat(chunks).toString("latin1");
      const m = /^HTTP\/1\.[01] (\d{3}) /.exec(raw);
      socket.destroy();
      resolve({ raw, status: m ? Number(m[1]) : null, closed });
    };
    const timer = setTimeout(finish, timeoutMs);
    socket.on("data", (chunk: Buffer) => {
      chunks.push(chunk);
      if (firstResponseComplete(Buffer.concat(chunks).toString("latin1"))) {
        clearTimeout(settle);
        settle = setTimeout(finish, settleMs);
      }
    });
    socket.on("error", () => {}); // a reset is a close
    socket.on("close", () => {
      closed = !done;
      finish();
    });
    socket.write(bytes);
    if (halfClose) socket.end();
  });
}

/** True once the first response's head and its Content-Length body have arrived. */
function firstResponseComplete(raw: string): boolean {
  const end = raw.indexOf("\r\n\r\n");
  if (end < 0) return false;
  const length = /\r\ncontent-length: *(\d+)\r\n/i.exec(raw.slice(0, end + 2));
  return length !== null && raw.length >= end + 4 + Number(length[1]);
}

/** The status codes of every status line in the bytes the gateway sent. */
const statusLines = (raw: string): number[] =>
  [...raw.matchAll(/HTTP\/1\.[01] (\d{3}) /g)].map((m) => Number(m[1]));

const H = "Host: 127.0.0.1\r\n";
const POST = `POST / HTTP/1.1\r\n${H}`;
const CHUNKED = `${POST}Transfer-Encoding: chunked\r\n\r\n`;
/** A second request hidden after the first one's body: it must never reach the upstream. */
const SMUGGLED = `GET /smuggled HTTP/1.1\r\n${H}\r\n`;
const get = (target: string, headers = H, version = "HTTP/1.1") =>
  `GET ${target} ${version}\r\n${headers}\r\n`;

interface Row {
  readonly name: string;
  readonly bytes: string | Buffer;
  /** Acceptable statuses of the first response; null = the connection closed with no response. */
  readonly want: readonly (number | null)[];
  readonly halfClose?: boolean;
}

const row = (
  name: string,
  bytes: string | Buffer,
  want: readonly (number | null)[],
  halfClose?: boolean,
): Row => (halfClose ? { name, bytes, want, halfClose } : { name, bytes, want });

const ROWS: Row[] = [
  // ── Content-Length / Transfer-Encoding (request smuggling) ──
  row(
    "rejects_cl_te_conflict",
    `${POST}Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n${SMUGGLED}`,
    [400],
  ),
  row(
    "rejects_te_cl_conflict_with_chunked_first",
    `${POST}Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n${SMUGGLED}`,
    [400],
  ),
  row(
    "rejects_duplicate_content_length_same_value",
    `${POST}Content-Length: 5\r\nContent-Length: 5\r\n\r\nhello`,
    [400],
  ),
  row(
    "rejects_duplicate_content_length_different_values",
    `${POST}Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!`,
    [400],
  ),
  row("rejects_signed_content_length", `${POST}Content-Length: +5\r\n\r\nhello`, [400]),
  row("rejects_negative_content_length", `${POST}Content-Length: -1\r\n\r\nhello`, [400]),
  row("rejects_hex_content_length", `${POST}Content-Length: 0x5\r\n\r\nhello`, [400]),
  row("rejects_content_length_with_inner_space", `${POST}Content-Length: 5 5\r\n\r\nhello`, [400]),
  row(
    "rejects_overflowing_content_length",
    `${POST}Content-Length: 99999999999999999999\r\n\r\nhello`,
    [400],
  ),
  row("rejects_empty_content_length", `${POST}Content-Length: \r\n\r\nhello`, [400]),
  row("rejects_te_xchunked", `${POST}Transfer-Encoding: xchunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n`, [400]),
  row(
    "rejects_te_chunked_then_identity",
    `${POST}Transfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n`,
    [400],
  ),
  row("rejects_te_identity", `${POST}Transfer-Encoding: identity\r\n\r\n0\r\n\r\n`, [400, 501]),
  row("rejects_te_gzip_then_chunked", `${POST}Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n`, [400, 501]),
  row("rejects_te_obs_fold_continuation", `${POST}Transfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n`, [400]),
  row(
    "rejects_te_hidden_in_obs_fold",
    `${POST}X-Foo: bar\r\n Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n`,
    [400],
  ),
  row(
    "rejects_duplicate_transfer_encoding",
    `${POST}Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n`,
    [400],
  ),
  row(
    "rejects_space_before_colon_in_te",
    `${POST}Transfer-Encoding : chunked\r\n\r\n0\r\n\r\n${SMUGGLED}`,
    [400],
  ),

  // ── chunked bodies ──
  row("rejects_non_hex_chunk_size", `${CHUNKED}zz\r\nhello\r\n0\r\n\r\n`, [400]),
  row("rejects_overflowing_chunk_size", `${CHUNKED}ffffffffffffffffff\r\nhello\r\n0\r\n\r\n`, [400]),
  row("rejects_negative_chunk_size", `${CHUNKED}-5\r\nhello\r\n0\r\n\r\n`, [400]),
  row("rejects_chunk_size_with_0x_prefix", `${CHUNKED}0x5\r\nhello\r\n0\r\n\r\n`, [400]),
  row("rejects_chunk_data_without_crlf", `${CHUNKED}5\r\nhelloXX0\r\n\r\n`, [400]),
  row("rejects_chunk_extension_ending_in_bare_lf", `${CHUNKED}5;a=b\nhello\r\n0\r\n\r\n${SMUGGLED}`, [400]),
  row("rejects_last_chunk_with_bare_lf", `${CHUNKED}5\r\nhello\r\n0\n\n${SMUGGLED}`, [400]),
  row("rejects_truncated_chunked_body", `${CHUNKED}5\r\nhel`, [400, null], true),
  row("rejects_truncated_content_length_body", `${POST}Content-Length: 10\r\n\r\nabc`, [400, null], true),
  row("rejects_truncated_header_block", `GET / HTTP/1.1\r\n${H}X-A: b`, [400, null], true),
  row(
    "rejects_declared_body_over_the_route_limit",
    `POST /small/x HTTP/1.1\r\n${H}Content-Length: 100\r\n\r\n${"a".repeat(100)}`,
    [413],
  ),
  row(
    "rejects_chunked_body_over_the_route_limit",
    `POST /small/x HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\n64\r\n${"a".repeat(100)}\r\n0\r\n\r\n`,
    [413],
  ),

  // ── line endings and control characters ──
  row("rejects_bare_lf_after_request_line", `GET / HTTP/1.1\n${H}\r\n`, [400]),
  row("rejects_bare_lf_between_headers", `GET / HTTP/1.1\r\nHost: 127.0.0.1\nX-A: b\r\n\r\n`, [400]),
  row("rejects_bare_lf_line_endings_throughout", `GET / HTTP/1.1\nHost: 127.0.0.1\n\n`, [400]),
  row("rejects_bare_cr_after_request_line", `GET / HTTP/1.1\r${H}\r\n`, [400]),
  row("rejects_bare_cr_between_headers", `GET / HTTP/1.1\r\nHost: 127.0.0.1\rX-A: b\r\n\r\n`, [400]),
  row("rejects_bare_cr_in_header_value", get("/", `${H}X-A: a\rb\r\n`), [400]),
  row("rejects_nul_in_header_value", get("/", `${H}X-A: a\x00b\r\n`), [400]),
  row("rejects_nul_in_target", get("/a\x00b"), [400]),
  row("rejects_tab_in_target", get("/a\tb"), [400]),

  // ── header names ──
  row("rejects_space_before_colon", get("/", `${H}X-A : b\r\n`), [400]),
  row("rejects_empty_header_name", get("/", `${H}: b\r\n`), [400]),
  row("rejects_at_sign_in_header_name", get("/", `${H}X@A: b\r\n`), [400]),
  row("rejects_parenthesis_in_header_name", get("/", `${H}X(A: b\r\n`), [400]),
  row("rejects_underscore_x_forwarded_for", get("/", `${H}X_Forwarded_For: 1.2.3.4\r\n`), [400]),

  // ── duplicated singleton and credential headers ──
  row(
    "rejects_duplicate_authorization",
    get("/", `${H}Authorization: Bearer a\r\nAuthorization: Bearer b\r\n`),
    [400],
  ),
  row(
    "rejects_duplicate_x_forwarded_for",
    get("/", `${H}X-Forwarded-For: 1.1.1.1\r\nX-Forwarded-For: 2.2.2.2\r\n`),
    [400],
  ),
  row("rejects_duplicate_x_api_key", get("/", `${H}X-Api-Key: a\r\nX-Api-Key: b\r\n`), [400]),
  row("rejects_duplicate_cookie", get("/", `${H}Cookie: a=1\r\nCookie: b=2\r\n`), [400]),
  row(
    "rejects_duplicate_content_type",
    `${POST}Content-Type: text/plain\r\nContent-Type: application/json\r\nContent-Length: 0\r\n\r\n`,
    [400],
  ),

  // ── Host ──
  row("rejects_missing_host_in_http11", get("/", ""), [400]),
  row("rejects_missing_host_in_http10", get("/", "", "HTTP/1.0"), [400]),
  row("rejects_duplicate_host", get("/", `${H}${H}`), [400]),
  row("rejects_duplicate_host_with_different_values", get("/", `${H}Host: evil.example\r\n`), [400]),
  row("rejects_host_with_spaces", get("/", "Host: 127.0.0.1 evil.example\r\n"), [400]),
  row("rejects_host_with_a_path_character", get("/", "Host: 127.0.0.1/x\r\n"), [400]),
  row("rejects_host_with_userinfo", get("/", "Host: user@127.0.0.1\r\n"), [400]),
  row("rejects_empty_host", get("/", "Host: \r\n"), [400]),
  row("rejects_a_host_the_gateway_does_not_serve", get("/", "Host: evil.example\r\n"), [404]),
  row("rejects_absolute_form_naming_an_unserved_host", get("http://evil.example/"), [404]),
  row("rejects_absolute_form_with_userinfo", get("http://user@127.0.0.1/"), [400]),
  row("rejects_absolute_form_with_a_non_http_scheme", get("ftp://127.0.0.1/"), [400]),

  // ── request target ──
  row("rejects_fragment_in_target", get("/a#b"), [400]),
  row("rejects_encoded_slash", get("/a%2Fb"), [400]),
  row("rejects_encoded_slash_traversal", get("/public%2f..%2fadmin"), [400]),
  row("rejects_dot_segment_above_root", get("/../etc/passwd"), [400]),
  row("rejects_encoded_dot_segment_above_root", get("/%2e%2e/etc/passwd"), [400]),
  row("rejects_dot_segment_with_parameters", get("/a/..;x/b"), [400]),
  row("rejects_encoded_nul", get("/a%00b"), [400]),
  row("rejects_encoded_backslash", get("/a%5Cb"), [400]),
  row("rejects_raw_backslash", get("/a\\..\\b"), [400]),
  row("rejects_overlong_utf8_escape", get("/%C0%AE%C0%AE/x"), [400]),
  row("rejects_malformed_percent_escape", get("/a%zz"), [400]),
  row(
    "rejects_raw_non_ascii_in_target",
    Buffer.concat([Buffer.from("GET /caf"), Buffer.from([0xc3, 0xa9]), Buffer.from(` HTTP/1.1\r\n${H}\r\n`)]),
    [400],
  ),
  row("rejects_asterisk_target_with_get", get("*"), [400]),
  row("rejects_asterisk_target_with_options", `OPTIONS * HTTP/1.1\r\n${H}\r\n`, [400]),
  row("rejects_oversized_target", get(`/${"a".repeat(20_000)}`), [414, 431]),

  // ── methods ──
  row(
    "rejects_connect_authority_form",
    `CONNECT evil.example:443 HTTP/1.1\r\nHost: evil.example:443\r\n\r\n`,
    [400, 405, null],
  ),
  row("rejects_connect_origin_form", `CONNECT / HTTP/1.1\r\n${H}\r\n`, [400, 405, null]),
  row("rejects_unknown_method", `FOO / HTTP/1.1\r\n${H}\r\n`, [400, 405, 501]),
  row("rejects_method_with_odd_characters", `G@T / HTTP/1.1\r\n${H}\r\n`, [400, 501]),
  row("rejects_lower_case_method", `get / HTTP/1.1\r\n${H}\r\n`, [400, 501]),

  // ── versions and request-line shape ──
  row("rejects_http09_request_line", "GET /\r\n\r\n", [400, 505]),
  row("rejects_http2_preface_on_http1_listener", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", [400]),
  row("rejects_http_1_2", get("/", H, "HTTP/1.2"), [400, 505]),
  row("rejects_http_9_9", get("/", H, "HTTP/9.9"), [400, 505]),
  row("rejects_lower_case_http_version", get("/", H, "http/1.1"), [400]),
  row("rejects_two_digit_minor_version", get("/", H, "HTTP/1.10"), [400]),
  row("rejects_leading_zero_in_version", get("/", H, "HTTP/01.1"), [400]),
  row("rejects_trailing_space_after_version", get("/", H, "HTTP/1.1 "), [400]),

  // ── sizes ──
  row("rejects_oversized_header_block", get("/", `${H}X-Big: ${"a".repeat(17_000)}\r\n`), [431]),
  row(
    "rejects_too_many_headers",
    get("/", `${H}${Array.from({ length: 3000 }, (_, i) => `X-H${i}: v\r\n`).join("")}`),
    [431],
  ),
  // Found by this corpus, fixed in the source: once forwarded, now refused.
  row("rejects_http09_request_line_with_host", `GET /\r\n${H}\r\n`, [400, 505]),
  row("rejects_http_0_9_version", get("/", H, "HTTP/0.9"), [400, 505]),
  row("rejects_http_2_0_version_on_http1_listener", get("/", H, "HTTP/2.0"), [400, 505]),
  row(
    "rejects_te_in_http10",
    `POST / HTTP/1.0\r\n${H}Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n`,
    [400],
  ),
  row("rejects_dot_alias_of_an_identity_header", get("/", `${H}X.User.Id: 1\r\n`), [400]),
];

/**
 * Accepted and normalized, not refused: Node's parser (llhttp, strict mode) accepts a double space in the
 * request line and JS never sees the raw line. The gateway forwards a freshly serialized request line,
 * so no upstream can read these bytes differently: these rows assert exactly that normalization.
 */
const NORMALIZED: { name: string; bytes: string; url: string }[] = [
  { name: "normalizes_double_space_before_target", bytes: `GET  /x HTTP/1.1\r\n${H}\r\n`, url: "/x" },
  { name: "normalizes_double_space_after_target", bytes: `GET /x  HTTP/1.1\r\n${H}\r\n`, url: "/x" },
];

async function assertRefused(r: Row): Promise<void> {
  const before = upstream.received.length;
  const got = await exchange(r.bytes, r.halfClose ? { halfClose: true } : {});
  await sleep(150); // a smuggled request could reach the upstream after the exchange
  expect(upstream.received.slice(before), "nothing reaches the upstream").toEqual([]);
  expect(
    statusLines(got.raw).filter((s) => s < 300),
    `no 1xx/2xx response; got ${JSON.stringify(got.raw.slice(0, 200))}`,
  ).toEqual([]);
  if (got.status === null)
    expect(got.closed, "with no response the gateway closes the connection").toBe(true);
  expect(r.want, `status of ${JSON.stringify(got.raw.slice(0, 200))}`).toContain(got.status);
}

beforeAll(async () => {
  upstream = await startUpstream();
  const config = gatewayConfig(
    [
      {
        name: "small",
        match: { path: "/small/**" },
        to: "app",
        public: true,
        limits: { maxBodySize: "16B" },
      },
      { name: "all", match: { path: "/**" }, to: "app", public: true },
    ],
    { app: upstream },
    // An HTTP/1-only listener: the HTTP/2 preface row claims exactly that (h2c is tested in protocols.test.ts).
    { hosts: ["127.0.0.1"], listeners: [{ name: "http", port: 8080, protocol: "http", http2: false }] },
  );
  gateway = await startTestGateway(config);
  port = Number(new URL(gateway.url).port);
});

afterAll(async () => {
  await gateway?.drain();
  await upstream?.close();
});

describe("positive controls (the table cannot pass because nothing is forwarded)", () => {
  it("forwards_a_well_formed_get", async () => {
    const before = upstream.received.length;
    const got = await exchange(get("/control?x=1", `${H}Connection: close\r\n`));
    expect(got.status).toBe(200);
    expect(upstream.received.slice(before).map((q) => `${q.method} ${q.url}`)).toEqual(["GET /control?x=1"]);
  });

  it("forwards_a_well_formed_content_length_body", async () => {
    const before = upstream.received.length;
    const got = await exchange(
      `POST /cl HTTP/1.1\r\n${H}Content-Length: 5\r\nConnection: close\r\n\r\nhello`,
    );
    expect(got.status).toBe(200);
    expect(upstream.received.slice(before).map((q) => [q.url, q.body])).toEqual([["/cl", "hello"]]);
  });

  it("forwards_a_well_formed_chunked_body", async () => {
    const before = upstream.received.length;
    const got = await exchange(
      `POST /chunked HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n`,
    );
    expect(got.status).toBe(200);
    expect(upstream.received.slice(before).map((q) => [q.url, q.body])).toEqual([
      ["/chunked", "hello world"],
    ]);
  });

  it("forwards_a_body_within_the_route_limit", async () => {
    const before = upstream.received.length;
    const got = await exchange(
      `POST /small/x HTTP/1.1\r\n${H}Content-Length: 5\r\nConnection: close\r\n\r\nhello`,
    );
    expect(got.status).toBe(200);
    expect(upstream.received.slice(before).map((q) => [q.url, q.body])).toEqual([["/small/x", "hello"]]);
  });

  it("keeps_its_own_forwarded_headers_when_connection_lists_them", async () => {
    const before = upstream.received.length;
    const got = await exchange(
      get(
        "/xff",
        `${H}Connection: close, X-Forwarded-For, X-Forwarded-Host, X-Request-Id\r\nX-Forwarded-For: 6.6.6.6\r\nX-Forwarded-Host: evil.example\r\n`,
      ),
    );
    expect(got.status).toBe(200);
    const seen = upstream.received.slice(before);
    expect(seen.map((q) => q.url)).toEqual(["/xff"]);
    const headers = seen[0]!.headers;
    // trustedHops is 0: the socket peer, and the client-supplied value is replaced, not appended to.
    expect(headers["x-forwarded-for"]).toBe("127.0.0.1");
    expect(headers["x-forwarded-host"]).toBe("127.0.0.1");
    expect(headers["x-forwarded-proto"]).toBe("http");
    expect(headers["x-request-id"]).toMatch(/^[0-9a-f-]{36}$/);
  });
});

describe("refuses malformed HTTP/1 framing without forwarding anything", () => {
  it("has_at_least_45_rows_with_unique_names", () => {
    expect(ROWS.length).toBeGreaterThanOrEqual(45);
    expect(new Set(ROWS.map((r) => r.name)).size).toBe(ROWS.length);
  });

  it.each(ROWS.map((r) => [r.name, r] as const))("%s", async (_name, r) => {
    await assertRefused(r);
  });
});

describe("accepted and normalized (the upstream gets a clean request line)", () => {
  it.each(NORMALIZED.map((r) => [r.name, r] as const))("%s", async (_name, r) => {
    const before = upstream.received.length;
    const got = await exchange(r.bytes);
    await sleep(150);
    expect(got.status).toBe(200);
    expect(upstream.received.slice(before).map((q) => q.url)).toEqual([r.url]);
  });
});
