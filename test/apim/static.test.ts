/**
 * The static-files route kind through a real gateway, checked with curl: types, validators and 304s,
 * byte ranges (206, 416, If-Range, several ranges), precompressed siblings, directory indexes, the SPA
 * fallback, and every way out of the root (dot segments, encodings, dotfiles, symlinks, FIFOs) —
 * plus a large file streamed from disk only as fast as the client reads it.
 */
import { execFileSync } from "node:child_process";
import http from "node:http";
import net from "node:net";
import { setTimeout as sleep } from "node:timers/promises";
import {
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
  truncateSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import zlib from "node:zlib";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { curl } from "../support/curl.ts";
import { gatewayConfig, request, startTestGateway, type TestGateway } from "../support/gateway.ts";

const PUBLIC = { public: true, rateLimit: { requests: 100000, per: "1s" } };
const JS = "console.log('meshgate');\n".repeat(200);
const CSS = "body { color: #333; }\n".repeat(100);
const BIG_BYTES = 128 * 1024 * 1024;

let dir: string;
let root: string;
let gw: TestGateway;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "static-"));
  root = join(dir, "root");
  mkdirSync(root);
  mkdirSync(join(dir, "outside"));
  writeFileSync(join(dir, "outside", "secret.txt"), "outside the root");
  writeFileSync(join(root, "index.html"), "<html>spa</html>");
  writeFileSync(join(root, "app.js"), JS);
  writeFileSync(join(root, "app.js.br"), zlib.brotliCompressSync(JS));
  writeFileSync(join(root, "app.js.gz"), zlib.gzipSync(JS));
  writeFileSync(join(root, "style.css"), CSS);
  writeFileSync(join(root, "style.css.gz"), zlib.gzipSync(CSS));
  writeFileSync(join(root, "data.json"), '{"a":1}');
  writeFileSync(join(root, "range.txt"), "0123456789abcdefghij");
  writeFileSync(join(root, "empty.txt"), "");
  writeFileSync(join(root, ".env"), "SECRET=1");
  mkdirSync(join(root, ".git"));
  writeFileSync(join(root, ".git", "config"), "[core]");
  mkdirSync(join(root, "docs"));
  writeFileSync(join(root, "docs", "index.html"), "<html>docs</html>");
  writeFileSync(join(root, "shrink.bin"), "");
  truncateSync(join(root, "shrink.bin"), 16 * 1024 * 1024);
  writeFileSync(join(root, "big.bin"), "");
  truncateSync(join(root, "big.bin"), BIG_BYTES); // sparse: cheap to create, real bytes to send
  symlinkSync(join(root, "range.txt"), join(root, "inside-link.txt"));
  symlinkSync(join(dir, "outside", "secret.txt"), join(root, "escape-link.txt"));
  symlinkSync(join(dir, "outside"), join(root, "escape-dir"));
  symlinkSync(join(root, ".env"), join(root, "hidden-link.txt"));
  execFileSync("mkfifo", [join(root, "pipe.txt")]);

  const config = gatewayConfig(
    [
      {
        name: "site",
        match: { path: "/site/**" },
        static: { dir: root, spaFallback: "/index.html" },
        ...PUBLIC,
      },
      {
        name: "files",
        match: { path: "/files/**", methods: ["GET", "HEAD"] },
        static: { dir: root, precompressed: false },
        cors: { origins: ["https://app.example"] },
        transform: { response: { headers: { set: { "cache-control": "public, max-age=60" } } } },
        ...PUBLIC,
      },
    ],
    {},
  );
  gw = await startTestGateway(config);
});

afterAll(async () => {
  await gw.drain();
  rmSync(dir, { recursive: true, force: true });
});

const url = (path: string) => `${gw.url}${path}`;

describe("files and validators", () => {
  it("serves_a_file_with_type_length_etag_last_modified_and_nosniff", async () => {
    const r = await curl(url("/site/app.js"));
    expect(r.status).toBe(200);
    expect(r.text).toBe(JS);
    expect(r.headers["content-type"]).toBe("text/javascript; charset=utf-8");
    expect(r.headers["content-length"]).toBe(String(JS.length));
    expect(r.headers.etag).toMatch(/^"[0-9a-f]+-[0-9a-f]+"$/);
    expect(new Date(r.headers["last-modified"]!).getTime()).toBe(
      Math.floor(statSync(join(root, "app.js")).mtimeMs / 1000) * 1000,
    );
    expect(r.headers["x-content-type-options"]).toBe("nosniff");
    expect(r.headers["accept-ranges"]).toBe("bytes");
    expect(r.headers.vary).toBe("Accept-Encoding");
  });

  it("answers_head_with_the_headers_and_no_body", async () => {
    const r = await request(url("/site/data.json"), { method: "HEAD" });
    expect(r.status).toBe(200);
    expect(r.headers["content-length"]).toBe("7");
    expect(r.headers["content-type"]).toBe("application/json");
    expect(r.body.length).toBe(0);
  });

  it("serves_an_empty_file", async () => {
    const r = await curl(url("/site/empty.txt"));
    expect(r.status).toBe(200);
    expect(r.headers["content-length"]).toBe("0");
  });

  it("answers_304_for_a_matching_if_none_match", async () => {
    const first = await curl(url("/site/data.json"));
    const r = await curl(url("/site/data.json"), ["-H", `If-None-Match: "x", ${first.headers.etag}`]);
    expect(r.status).toBe(304);
    expect(r.body.length).toBe(0);
    expect(r.headers.etag).toBe(first.headers.etag);
  });

  it("answers_304_for_if_modified_since_at_the_last_modified_date", async () => {
    const first = await curl(url("/site/data.json"));
    const r = await curl(url("/site/data.json"), [
      "-H",
      `If-Modified-Since: ${first.headers["last-modified"]}`,
    ]);
    expect(r.status).toBe(304);
  });

  it("answers_200_when_if_none_match_differs_even_with_a_matching_date", async () => {
    const first = await curl(url("/site/data.json"));
    const r = await curl(url("/site/data.json"), [
      "-H",
      'If-None-Match: "other"',
      "-H",
      `If-Modified-Since: ${first.headers["last-modified"]}`,
    ]);
    expect(r.status).toBe(200);
  });
});

describe("ranges", () => {
  it("serves_a_byte_range_with_206_and_content_range", async () => {
    const r = await curl(url("/site/range.txt"), ["-r", "2-5"]);
    expect(r.status).toBe(206);
    expect(r.text).toBe("2345");
    expect(r.headers["content-range"]).toBe("bytes 2-5/20");
    expect(r.headers["content-length"]).toBe("4");
  });

  it("serves_a_suffix_range", async () => {
    const r = await curl(url("/site/range.txt"), ["-r", "-4"]);
    expect(r.status).toBe(206);
    expect(r.text).toBe("ghij");
    expect(r.headers["content-range"]).toBe("bytes 16-19/20");
  });

  it("serves_an_open_range_to_the_end", async () => {
    const r = await curl(url("/site/range.txt"), ["-r", "15-"]);
    expect(r.status).toBe(206);
    expect(r.text).toBe("fghij");
  });

  it("answers_416_for_an_unsatisfiable_range", async () => {
    const r = await curl(url("/site/range.txt"), ["-r", "20-30"]);
    expect(r.status).toBe(416);
    expect(r.headers["content-range"]).toBe("bytes */20");
    expect(r.headers["x-meshgate-error"]).toBe("range_not_satisfiable");
  });

  it("serves_the_full_file_for_several_ranges", async () => {
    const r = await curl(url("/site/range.txt"), ["-r", "0-1,4-5"]);
    expect(r.status).toBe(200);
    expect(r.text).toBe("0123456789abcdefghij");
  });

  it("ignores_the_range_when_if_range_does_not_match", async () => {
    const r = await curl(url("/site/range.txt"), ["-r", "0-1", "-H", 'If-Range: "stale"']);
    expect(r.status).toBe(200);
    expect(r.text.length).toBe(20);
  });

  it("honours_the_range_when_if_range_matches_the_etag", async () => {
    const first = await curl(url("/site/range.txt"));
    const r = await curl(url("/site/range.txt"), ["-r", "0-1", "-H", `If-Range: ${first.headers.etag}`]);
    expect(r.status).toBe(206);
    expect(r.text).toBe("01");
  });
});

describe("precompressed siblings", () => {
  it("serves_the_brotli_sibling_when_accepted", async () => {
    const r = await curl(url("/site/app.js"), ["-H", "Accept-Encoding: gzip, br"]);
    expect(r.status).toBe(200);
    expect(r.headers["content-encoding"]).toBe("br");
    expect(r.headers["content-type"]).toBe("text/javascript; charset=utf-8");
    expect(r.headers.vary).toBe("Accept-Encoding");
    expect(zlib.brotliDecompressSync(r.body).toString()).toBe(JS);
  });

  it("serves_the_gzip_sibling_that_curl_decodes", async () => {
    const r = await curl(url("/site/app.js"), ["--compressed", "-H", "Accept-Encoding: gzip"]);
    expect(r.headers["content-encoding"]).toBe("gzip");
    expect(r.text).toBe(JS);
  });

  it("prefers_gzip_when_brotli_is_refused", async () => {
    const r = await curl(url("/site/app.js"), ["-H", "Accept-Encoding: br;q=0, gzip"]);
    expect(r.headers["content-encoding"]).toBe("gzip");
  });

  it("falls_back_to_gzip_when_no_brotli_sibling_exists", async () => {
    const r = await curl(url("/site/style.css"), ["-H", "Accept-Encoding: br, gzip"]);
    expect(r.headers["content-encoding"]).toBe("gzip");
    expect(zlib.gunzipSync(r.body).toString()).toBe(CSS);
  });

  it("serves_the_file_itself_without_accept_encoding", async () => {
    const r = await curl(url("/site/app.js"));
    expect(r.headers["content-encoding"]).toBeUndefined();
    expect(r.text).toBe(JS);
  });

  it("gives_each_coding_its_own_etag", async () => {
    const plain = await curl(url("/site/app.js"));
    const br = await curl(url("/site/app.js"), ["-H", "Accept-Encoding: br"]);
    expect(br.headers.etag).not.toBe(plain.headers.etag);
    const revalidated = await curl(url("/site/app.js"), [
      "-H",
      "Accept-Encoding: br",
      "-H",
      `If-None-Match: ${plain.headers.etag}`,
    ]);
    expect(revalidated.status).toBe(200);
  });

  it("serves_no_sibling_on_a_route_without_precompressed", async () => {
    const r = await curl(url("/files/app.js"), ["-H", "Accept-Encoding: br, gzip"]);
    expect(r.headers["content-encoding"]).toBeUndefined();
    expect(r.headers.vary).toBe("Origin");
  });
});

describe("directories and the spa fallback", () => {
  it("redirects_a_directory_without_its_trailing_slash", async () => {
    const r = await curl(url("/site/docs?x=1"));
    expect(r.status).toBe(301);
    expect(r.headers.location).toBe("/site/docs/?x=1");
  });

  it("serves_the_directory_index", async () => {
    const r = await curl(url("/site/docs/"));
    expect(r.status).toBe(200);
    expect(r.text).toBe("<html>docs</html>");
    expect(r.headers["content-type"]).toBe("text/html; charset=utf-8");
  });

  it("serves_the_root_index_for_the_route_prefix", async () => {
    expect((await curl(url("/site"))).headers.location).toBe("/site/");
    expect((await curl(url("/site/"))).text).toBe("<html>spa</html>");
  });

  it("falls_back_to_the_spa_page_for_html_navigations", async () => {
    const r = await curl(url("/site/orders/42"), ["-H", "Accept: text/html,application/xhtml+xml"]);
    expect(r.status).toBe(200);
    expect(r.text).toBe("<html>spa</html>");
  });

  it("answers_404_for_missing_assets_without_html_in_accept", async () => {
    const r = await curl(url("/site/missing.js"), ["-H", "Accept: */*"]);
    expect(r.status).toBe(404);
    expect(r.headers["x-meshgate-error"]).toBe("static_not_found");
  });

  it("answers_404_without_a_fallback_route", async () => {
    const r = await curl(url("/files/orders/42"), ["-H", "Accept: text/html"]);
    expect(r.status).toBe(404);
  });

  it("answers_405_with_allow_for_other_methods", async () => {
    const r = await curl(url("/site/app.js"), ["-X", "POST", "-d", "x"]);
    expect(r.status).toBe(405);
    expect(r.headers.allow).toBe("GET, HEAD");
  });
});

describe("staying inside the root", () => {
  it.each([
    ["refuses_a_dotfile", "/site/.env"],
    ["refuses_a_dot_directory", "/site/.git/config"],
    ["refuses_an_encoded_dotfile", "/site/%2eenv"],
    ["refuses_a_symlink_that_leaves_the_root", "/site/escape-link.txt"],
    ["refuses_a_symlinked_directory_that_leaves_the_root", "/site/escape-dir/secret.txt"],
    ["refuses_a_symlink_to_a_dotfile", "/site/hidden-link.txt"],
    ["refuses_a_fifo_without_hanging", "/site/pipe.txt"],
  ])("%s", async (_claim, path) => {
    const r = await curl(url(path), ["-H", "Accept: text/html", "--path-as-is"], { timeoutS: 5 });
    expect(r.status).toBe(404);
    expect(r.text).not.toContain("SECRET");
    expect(r.text).not.toContain("outside the root");
    expect(r.text).not.toContain("<html>spa");
  });

  it.each([
    ["dot_dot", "/site/../outside/secret.txt"],
    ["encoded_dot_dot", "/site/%2e%2e/%2e%2e/outside/secret.txt"],
    ["mixed_dot_dot", "/site/.%2e/.%2E/outside/secret.txt"],
    ["encoded_slash", "/site/..%2f..%2foutside%2fsecret.txt"],
    ["encoded_backslash", "/site/..%5c..%5coutside%5csecret.txt"],
    ["raw_backslash", "/site/..\\..\\outside\\secret.txt"],
    ["nul", "/site/range.txt%00.html"],
    ["overlong_utf8_dot", "/site/%c0%ae%c0%ae/outside/secret.txt"],
    ["double_encoding", "/site/%252e%252e/outside/secret.txt"],
    ["parameter_dot_dot", "/site/..;/outside/secret.txt"],
  ])("refuses_traversal_by_%s", async (_claim, path) => {
    const r = await request(url(path));
    expect([400, 404]).toContain(r.status);
    expect(r.body).not.toContain("outside the root");
  });

  it("serves_a_symlink_that_stays_inside_the_root", async () => {
    const r = await curl(url("/site/inside-link.txt"));
    expect(r.status).toBe(200);
    expect(r.text).toBe("0123456789abcdefghij");
  });
});

describe("route settings on static responses", () => {
  it("adds_the_response_header_transform_and_cors_headers", async () => {
    const r = await curl(url("/files/data.json"), ["-H", "Origin: https://app.example"]);
    expect(r.status).toBe(200);
    expect(r.headers["cache-control"]).toBe("public, max-age=60");
    expect(r.headers["access-control-allow-origin"]).toBe("https://app.example");
    expect(r.headers.vary).toBe("Origin");
  });

  it("adds_cors_headers_to_a_static_404", async () => {
    const r = await curl(url("/files/nope.txt"), ["-H", "Origin: https://app.example"]);
    expect(r.status).toBe(404);
    expect(r.headers["access-control-allow-origin"]).toBe("https://app.example");
  });
});

describe("streaming", () => {
  it("resets_the_response_of_a_file_cut_short_while_it_is_sent_never_a_clean_end", async () => {
    // Content-Length promised 16 MiB; the file shrinks to 1 MiB under the stream. Ending the response
    // there would keep the HTTP/1.1 connection for the next request, whose answer the client would read
    // as the rest of this body: the connection must be closed instead.
    const sock = net.connect(Number(new URL(gw.url).port), "127.0.0.1");
    await new Promise((r) => sock.once("connect", r));
    let received = 0;
    const closed = new Promise<boolean>((r) => {
      sock.once("close", () => r(true));
      setTimeout(() => r(false), 3000);
    });
    sock.pause();
    sock.write("GET /site/shrink.bin HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
    await sleep(300);
    truncateSync(join(root, "shrink.bin"), 1024 * 1024);
    sock.on("data", (c: Buffer) => (received += c.length));
    sock.resume();
    expect(await closed).toBe(true);
    expect(received).toBeLessThan(16 * 1024 * 1024);
    sock.destroy();
  });

  // The send timeout (the idle timeout, 1 s here) covers a file as it covers a forwarded response: a
  // client that reads none of a large file had its connection (and the open descriptor) kept until the
  // request timeout; one that pauses for less, then reads on, gets the whole file.
  it.each([
    ["cuts_a_client_that_reads_none_of_a_large_file_for_the_send_timeout", 3000, false],
    ["keeps_a_client_that_pauses_for_less_than_the_send_timeout", 400, true],
  ] as const)(
    "%s",
    async (_claim, pauseMs, whole) => {
      const quick = await startTestGateway(
        gatewayConfig(
          [{ name: "site", match: { path: "/site/**" }, static: { dir: root }, ...PUBLIC }],
          {},
          { limits: { idleTimeout: "1s" } },
        ),
      );
      try {
        const sock = net.connect(Number(new URL(quick.url).port), "127.0.0.1");
        await new Promise((r) => sock.once("connect", r));
        let received = 0;
        const ended = new Promise<void>((r) => {
          sock.once("close", () => r());
          sock.once("end", () => r());
        });
        sock.pause();
        sock.write("GET /site/big.bin HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
        await sleep(pauseMs);
        sock.on("data", (c: Buffer) => (received += c.length));
        sock.resume();
        await ended;
        sock.destroy();
        // The head (about 300 bytes) comes before the body.
        if (whole) expect(received).toBeGreaterThan(BIG_BYTES);
        else {
          expect(received).toBeLessThan(BIG_BYTES);
          expect(quick.logs.filter((l) => l.event === "send_timeout" && l.source === "static")).toHaveLength(
            1,
          );
        }
      } finally {
        await quick.drain();
      }
    },
    30_000,
  );

  /** Bytes this process has read through read(2) and friends, all threads (the gateway runs here). */
  const bytesRead = () => Number(/rchar:\s+(\d+)/.exec(readFileSync("/proc/self/io", "utf8"))![1]);

  it("streams_a_large_file_from_disk_as_the_client_reads_it", async () => {
    const before = bytesRead();
    let received = 0;
    let paused = 0;
    const status = await new Promise<number>((resolve, reject) => {
      const req = http.get(url("/site/big.bin"), { agent: false }, (res) => {
        res.once("data", (first: Buffer) => {
          received += first.length;
          res.pause();
          // The client stops reading: the gateway may fill the socket buffers, never read the file ahead.
          setTimeout(() => {
            paused = bytesRead() - before;
            res.on("data", (c: Buffer) => (received += c.length));
            res.resume();
          }, 500);
        });
        res.once("end", () => resolve(res.statusCode ?? 0));
        res.once("error", reject);
      });
      req.once("error", reject);
    });
    expect(status).toBe(200);
    expect(received).toBe(BIG_BYTES);
    expect(paused).toBeLessThan(24 * 1024 * 1024);
    expect(bytesRead() - before).toBeGreaterThanOrEqual(BIG_BYTES);
  });
});
