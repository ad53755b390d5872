/**
 * Listener protocols with real tools: TLS termination with SNI (certificates from openssl), HTTP/2 over
 * TLS by ALPN and HTTP/1.1 on the same port (curl), cleartext HTTP/2 with prior knowledge next to
 * HTTP/1.1 (curl --http2-prior-knowledge), and certificate rotation by reload and by the files alone.
 * Then HTTP/2 requests forwarded to an HTTP/1.1 upstream (the h2 → h1 downgrade, where desync lives):
 * malformed header blocks written frame by frame never reach the upstream with the malformed field,
 * Cookie crumbs are joined, a Host that contradicts :authority is refused, and a stream the client reset
 * is never forwarded with the truncated body presented as complete. A client without SNI gets the first
 * certificate; one HTTP/2 connection holds at most 100 streams.
 */
import { execFile } from "node:child_process";
import http2 from "node:http2";
import { copyFile, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import tls from "node:tls";
import { setTimeout as sleep } from "node:timers/promises";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { GatewayRuntimeConfig } from "../../runtime/contract/index.ts";
import { selfSignedCert } from "../support/certs.ts";
import {
  gatewayConfig,
  startTestGateway,
  startUpstream,
  type TestGateway,
  type Upstream,
} from "../support/gateway.ts";
import { data, headers, rawH2, rst } from "../support/raw-h2.ts";

const run = promisify(execFile);
const PUBLIC = { public: true, rateLimit: { requests: 100000, per: "1s" } };

let dir: string;
let app: Upstream;
let gw: TestGateway;
let httpsPort: number;
let h2cPort: number;

const cert = (name: string, cn: string, san: string) => selfSignedCert(dir, name, cn, san);

function config(
  a: { certFile: string; keyFile: string },
  b: { certFile: string; keyFile: string },
): GatewayRuntimeConfig {
  return gatewayConfig(
    [
      { name: "all", match: { path: "/**" }, to: "app", ...PUBLIC },
      // The handler awaits before it reads the body: a reset during the wait must still be seen.
      // Generous timeouts: a hundred requests at once through this process on a loaded machine must show
      // up as latency, not as 504s (the defaults: 500 ms per try, 2 s in all).
      {
        name: "slow",
        match: { path: "/slow/**" },
        to: "app",
        fault: { delay: { duration: "300ms", percent: 100 } },
        timeout: "30s",
        retries: { perTryTimeout: "30s" },
        ...PUBLIC,
      },
    ],
    { app },
    {
      hosts: ["a.test", "*.b.test", "127.0.0.1"],
      listeners: [
        {
          name: "https",
          port: 8443,
          protocol: "https",
          tls: {
            minVersion: "TLSv1.2",
            certificates: [
              { hosts: ["a.test"], ...a },
              { hosts: ["*.b.test"], ...b },
            ],
          },
        },
        { name: "http", port: 8080, protocol: "http", http2: true },
      ],
    },
  );
}

/** The CN of the certificate served for `servername` (none: no SNI, as a client connecting by IP). */
function peerCn(servername: string | undefined): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = tls.connect(
      {
        host: "127.0.0.1",
        port: httpsPort,
        ...(servername !== undefined ? { servername } : {}),
        rejectUnauthorized: false,
        ALPNProtocols: ["http/1.1"],
      },
      () => {
        const cn = socket.getPeerCertificate().subject.CN;
        socket.end();
        resolve(String(Array.isArray(cn) ? cn[0] : cn));
      },
    );
    socket.on("error", reject);
  });
}

async function curl(args: string[]): Promise<{ version: string; body: string }> {
  const { stdout } = await run("curl", ["-sS", "--max-time", "5", "-w", "\n%{http_version}", ...args]);
  const lines = stdout.split("\n");
  return { version: lines.pop()!, body: lines.join("\n") };
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "meshgate-tls-"));
  app = await startUpstream((req, res) => {
    const out = JSON.stringify({
      path: req.url,
      proto: req.headers["x-forwarded-proto"],
      host: req.headers.host,
    });
    res.writeHead(200, { "content-type": "application/json", "content-length": Buffer.byteLength(out) });
    res.end(out);
  });
  const [a, b] = await Promise.all([
    cert("a", "a.test", "DNS:a.test"),
    cert("b", "wild.b.test", "DNS:*.b.test"),
  ]);
  gw = await startTestGateway(config(a, b));
  httpsPort = gw.ports.listeners.https!;
  h2cPort = gw.ports.listeners.http!;
});

afterAll(async () => {
  await gw.drain();
  await app.close();
  await rm(dir, { recursive: true, force: true });
});

describe("TLS", () => {
  it("selects_the_certificate_by_sni_with_exact_and_wildcard_hosts", async () => {
    expect(await peerCn("a.test")).toBe("a.test");
    expect(await peerCn("x.b.test")).toBe("wild.b.test");
    expect(await peerCn("unknown.test")).toBe("a.test"); // the first certificate is the default
  });

  // No SNI callback runs for them: the TLS server's own context must serve the first certificate (it had
  // none, and the handshake failed).
  it.each([
    ["a_tls_client_connecting_by_ip", () => peerCn(undefined), "a.test"],
    [
      "curl_over_http1_1",
      async () =>
        JSON.parse((await curl(["-k", "--http1.1", `https://127.0.0.1:${httpsPort}/ip`])).body).path,
      "/ip",
    ],
    [
      "curl_over_http2",
      async () => (await curl(["-k", "--http2", `https://127.0.0.1:${httpsPort}/ip2`])).version,
      "2",
    ],
  ] as [string, () => Promise<string>, string][])(
    "serves_the_first_certificate_to_%s_without_a_server_name",
    async (_claim, get, expected) => {
      expect(await get()).toBe(expected);
    },
  );

  it("serves_http2_negotiated_by_alpn", async () => {
    const r = await curl([
      "-k",
      "--http2",
      "--resolve",
      `a.test:${httpsPort}:127.0.0.1`,
      `https://a.test:${httpsPort}/v/1?x=2`,
    ]);
    expect(r.version).toBe("2");
    expect(JSON.parse(r.body)).toEqual({ path: "/v/1?x=2", proto: "https", host: `a.test:${httpsPort}` });
  });

  it("serves_http1_1_on_the_same_tls_port", async () => {
    const r = await curl([
      "-k",
      "--http1.1",
      "--resolve",
      `a.test:${httpsPort}:127.0.0.1`,
      `https://a.test:${httpsPort}/v`,
    ]);
    expect(r.version).toBe("1.1");
    expect(JSON.parse(r.body)).toMatchObject({ path: "/v", proto: "https" });
  });

  it("keeps_http1_1_connections_alive_over_tls_for_the_listener_idle_timeout", async () => {
    // HTTP/1.1 on the HTTP/2 TLS port is Node's HTTP/1 machinery, whose keep-alive default is 5 s.
    const keepAlive = (head: string) => /\r\nkeep-alive: *([^\r]*)/i.exec(head)?.[1];
    const overTls = await new Promise<string>((resolve, reject) => {
      const s = tls.connect(
        {
          host: "127.0.0.1",
          port: httpsPort,
          servername: "a.test",
          rejectUnauthorized: false,
          ALPNProtocols: ["http/1.1"],
        },
        () => s.write("GET /ka HTTP/1.1\r\nHost: a.test\r\n\r\n"),
      );
      let out = "";
      s.on("data", (c: Buffer) => {
        out += c.toString("latin1");
        if (!out.includes("\r\n\r\n")) return;
        s.destroy();
        resolve(out);
      });
      s.on("error", reject);
    });
    const r = await fetch(`http://127.0.0.1:${h2cPort}/ka`);
    await r.arrayBuffer();
    expect(keepAlive(overTls)).toBe(r.headers.get("keep-alive"));
    expect(keepAlive(overTls)).not.toBe("timeout=5");
  });

  it("applies_decide_over_http2_too", async () => {
    const { stdout } = await run("curl", [
      "-sk",
      "--http2",
      "-o",
      "/dev/null",
      "-w",
      "%{http_code} %{http_version}",
      "--path-as-is",
      "--resolve",
      `a.test:${httpsPort}:127.0.0.1`,
      `https://a.test:${httpsPort}/../etc/passwd`,
    ]);
    expect(stdout).toBe("400 2");
  });

  it("rotates_certificates_on_reload_without_a_config_change", async () => {
    const before = await peerCn("a.test");
    await cert("a", "a-rotated.test", "DNS:a.test"); // rewrite the same files, as a Secret update does
    const r = await gw.reload(
      JSON.stringify(
        config(
          { certFile: join(dir, "a.crt"), keyFile: join(dir, "a.key") },
          { certFile: join(dir, "b.crt"), keyFile: join(dir, "b.key") },
        ),
      ),
    );
    expect(r).toMatchObject({ ok: true, changed: false });
    expect(before).toBe("a.test");
    expect(await peerCn("a.test")).toBe("a-rotated.test");
    expect(await peerCn(undefined)).toBe("a-rotated.test"); // no SNI: the default context follows
  });

  it("serves_a_certificate_renewed_in_place_without_a_reload", async () => {
    // What a Secret renewed by cert-manager looks like to the pod: the mounted files change, nobody
    // signals the gateway. The files are checked every second (certificatePollMs).
    expect(await peerCn("x.b.test")).toBe("wild.b.test");
    await cert("b", "renewed.b.test", "DNS:*.b.test");
    const deadline = Date.now() + 5000;
    while ((await peerCn("x.b.test")) !== "renewed.b.test" && Date.now() < deadline) await sleep(100);
    expect(await peerCn("x.b.test")).toBe("renewed.b.test");
    expect(gw.logs.some((l) => l.event === "certificates_reloaded")).toBe(true);
  });

  it("keeps_serving_the_old_certificate_while_a_renewal_is_half_written_then_takes_the_new_one", async () => {
    // The new certificate lands before its key: the pair does not match yet, so the one serving stays.
    const next = await cert("a-next", "next.a.test", "DNS:a.test");
    await copyFile(next.certFile, join(dir, "a.crt"));
    // The files are checked every second: wait until the half-written pair was looked at (a fixed pause
    // can end before the check on a loaded machine), then the old one must still be served.
    const looked = Date.now() + 5000;
    while (!gw.logs.some((l) => l.event === "certificates_reload_failed") && Date.now() < looked)
      await sleep(100);
    expect(gw.logs.some((l) => l.event === "certificates_reload_failed")).toBe(true);
    expect(await peerCn("a.test")).toBe("a-rotated.test");
    expect(await peerCn(undefined)).toBe("a-rotated.test");
    await copyFile(next.keyFile, join(dir, "a.key"));
    const deadline = Date.now() + 5000;
    while ((await peerCn("a.test")) !== "next.a.test" && Date.now() < deadline) await sleep(100);
    expect(await peerCn("a.test")).toBe("next.a.test");
    expect(await peerCn(undefined)).toBe("next.a.test");
  });

  it("rejects_a_reload_whose_certificate_is_unreadable_and_keeps_serving", async () => {
    const serving = await peerCn("a.test");
    const broken = config(
      { certFile: join(dir, "missing.crt"), keyFile: join(dir, "missing.key") },
      { certFile: join(dir, "b.crt"), keyFile: join(dir, "b.key") },
    );
    const r = await gw.reload(JSON.stringify(broken));
    expect(r.ok).toBe(false);
    expect(r.ok === false && r.error).toContain("missing.crt");
    expect(await peerCn("a.test")).toBe(serving);
  });
});

describe("cleartext", () => {
  it("serves_h2c_with_prior_knowledge", async () => {
    const r = await curl(["--http2-prior-knowledge", `http://127.0.0.1:${h2cPort}/h2c`]);
    expect(r.version).toBe("2");
    expect(JSON.parse(r.body)).toMatchObject({ path: "/h2c", proto: "http" });
  });

  it("serves_http1_1_on_the_same_port", async () => {
    const r = await curl(["--http1.1", `http://127.0.0.1:${h2cPort}/h1`]);
    expect(r.version).toBe("1.1");
    expect(JSON.parse(r.body)).toMatchObject({ path: "/h1" });
  });
});

describe("HTTP/2 to an HTTP/1.1 upstream", () => {
  const base = (path: string, method = "GET"): [string, string][] => [
    [":method", method],
    [":scheme", "http"],
    [":authority", "127.0.0.1"],
    [":path", path],
  ];
  const forwarded = (path: string) => app.received.filter((r) => r.url === path);

  /** One request over Node's client; the status and the body. */
  function h2(headers: http2.OutgoingHttpHeaders): Promise<{ status: number; body: string }> {
    return new Promise((resolve, reject) => {
      const c = http2.connect(`http://127.0.0.1:${h2cPort}`);
      c.on("error", reject);
      const r = c.request(headers);
      let status = 0;
      let body = "";
      r.on("response", (h) => (status = Number(h[":status"])));
      r.on("data", (d: Buffer) => (body += d.toString()));
      r.on("end", () => (c.close(), resolve({ status, body })));
      r.on("error", reject);
      r.end();
    });
  }

  // Each row: the fields after the pseudo-headers of a GET to its own path. Either nghttp2 resets the
  // stream (connection-specific headers, RFC 9113 §8.2.2) or the field is dropped as invalid (§8.2.1):
  // never is it written into the HTTP/1.1 request.
  it.each([
    ["a_value_with_cr", "/h2/cr", [["x-a", "a\rb"]]],
    ["a_value_with_lf", "/h2/lf", [["x-a", "a\nb"]]],
    ["a_value_with_crlf_and_a_header", "/h2/crlf", [["x-a", "a\r\nx-injected: 1"]]],
    ["a_value_with_nul", "/h2/nul", [["x-a", "a\0b"]]],
    ["an_uppercase_name", "/h2/upper", [["X-A", "b"]]],
    ["a_name_with_a_space", "/h2/space", [["x a", "b"]]],
    ["a_name_with_a_colon", "/h2/colon", [["x:a", "b"]]],
    ["connection", "/h2/connection", [["connection", "close"]]],
    ["keep_alive", "/h2/keep-alive", [["keep-alive", "1"]]],
    ["proxy_connection", "/h2/proxy-connection", [["proxy-connection", "x"]]],
    ["transfer_encoding", "/h2/te", [["transfer-encoding", "chunked"]]],
    ["upgrade", "/h2/upgrade", [["upgrade", "websocket"]]],
    ["te_other_than_trailers", "/h2/te-gzip", [["te", "gzip"]]],
    ["a_host_with_crlf", "/h2/host-crlf", [["host", "127.0.0.1\r\nx-injected: 1"]]],
    ["http2_settings", "/h2/settings", [["http2-settings", "AAAA"]]],
  ] as [string, string, [string, string][]][])(
    "an_h2_request_with_%s_never_reaches_the_upstream_with_it",
    async (_claim, path, fields) => {
      await rawH2(h2cPort, [headers(1, [...base(path), ...fields])], 300);
      for (const r of forwarded(path)) {
        const sent = JSON.stringify(r.headers);
        expect(sent).not.toContain("injected");
        expect(r.headers["x-a"]).toBeUndefined();
        for (const name of ["keep-alive", "proxy-connection", "transfer-encoding", "upgrade"])
          expect(r.headers[name]).toBeUndefined();
        expect(r.headers.te).toBeUndefined();
        expect(r.headers["http2-settings"]).toBeUndefined();
        expect(r.headers.host).toBe("127.0.0.1");
      }
    },
  );

  it.each([
    [
      "a_path_without_a_leading_slash",
      [
        [":method", "GET"],
        [":scheme", "http"],
        [":authority", "127.0.0.1"],
        [":path", "h2/np"],
      ],
    ],
    [
      "the_asterisk_path",
      [
        [":method", "GET"],
        [":scheme", "http"],
        [":authority", "127.0.0.1"],
        [":path", "*"],
      ],
    ],
    [
      "no_path",
      [
        [":method", "GET"],
        [":scheme", "http"],
        [":authority", "127.0.0.1"],
      ],
    ],
    [
      "a_duplicate_path",
      [
        [":method", "GET"],
        [":scheme", "http"],
        [":authority", "127.0.0.1"],
        [":path", "/h2/d1"],
        [":path", "/h2/d2"],
      ],
    ],
    [
      "a_pseudo_header_after_a_regular_one",
      [
        [":method", "GET"],
        [":scheme", "http"],
        ["x-a", "1"],
        [":authority", "127.0.0.1"],
        [":path", "/h2/after"],
      ],
    ],
    [
      "connect_with_protocol_not_enabled",
      [
        [":method", "CONNECT"],
        [":protocol", "websocket"],
        [":scheme", "http"],
        [":authority", "127.0.0.1"],
        [":path", "/h2/cp"],
      ],
    ],
    [
      "connect_without_protocol",
      [
        [":method", "CONNECT"],
        [":authority", "127.0.0.1:1"],
      ],
    ],
    [
      "a_method_with_a_request_line_in_it",
      [
        [":method", "GET /h2/x HTTP/1.1\r\n"],
        [":scheme", "http"],
        [":authority", "127.0.0.1"],
        [":path", "/h2/m"],
      ],
    ],
    ["two_hosts", [...base("/h2/2h"), ["host", "127.0.0.1"], ["host", "a.test"]]],
  ] as [string, [string, string][]][])(
    "an_h2_request_with_%s_is_refused_before_anything_is_forwarded",
    async (_c, fields) => {
      const before = app.received.length;
      const r = await rawH2(h2cPort, [headers(1, fields)], 300);
      expect(String(r.streams[1]?.[0])).toMatch(/^rst:|^4\d\d$/);
      expect(app.received.length).toBe(before);
    },
  );

  it("joins_cookie_fields_with_a_semicolon_for_the_http1_upstream", async () => {
    // RFC 9113 §8.2.3: browsers send a Cookie in crumbs (one field per pair) for HPACK.
    const r = await h2({ ":method": "GET", ":path": "/h2/cookies", cookie: ["a=1", "b=2", "c=3"] });
    expect(r.status).toBe(200);
    expect(forwarded("/h2/cookies").map((x) => x.headers.cookie)).toEqual(["a=1; b=2; c=3"]);
  });

  it("refuses_a_host_header_that_differs_from_the_authority_before_anything_is_forwarded", async () => {
    // RFC 9113 §8.3.1: the target's authority is :authority; a Host naming another must not route it.
    const r = await h2({ ":method": "GET", ":path": "/h2/host", ":authority": "127.0.0.1", host: "a.test" });
    expect(r.status).toBe(400);
    expect(JSON.parse(r.body).error.code).toBe("bad_host");
    expect(forwarded("/h2/host")).toHaveLength(0);
    const same = await h2({
      ":method": "GET",
      ":path": "/h2/host-same",
      ":authority": "A.test",
      host: "a.test",
    });
    expect(same.status).toBe(200);
    expect(forwarded("/h2/host-same").map((x) => x.headers["x-forwarded-host"])).toEqual(["A.test"]);
  });

  it.each([
    [
      "reset_in_the_bytes_of_its_headers",
      "/h2/reset-now",
      [Buffer.concat([headers(1, base("/h2/reset-now", "POST"), false), data(1, "hello", false), rst(1)])],
    ],
    [
      "whose_content_length_exceeds_its_data",
      "/h2/cl-more",
      [
        Buffer.concat([
          headers(1, [...base("/h2/cl-more", "POST"), ["content-length", "10"]], false),
          data(1, "hello"),
        ]),
      ],
    ],
    [
      "whose_content_length_is_below_its_data",
      "/h2/cl-less",
      [
        Buffer.concat([
          headers(1, [...base("/h2/cl-less", "POST"), ["content-length", "3"]], false),
          data(1, "hello"),
        ]),
      ],
    ],
    [
      "reset_while_the_gateway_waits_streamed",
      "/slow/chunked",
      [headers(1, base("/slow/chunked", "POST"), false), data(1, "hello", false), 100, rst(1)],
    ],
    [
      "reset_while_the_gateway_waits_buffered",
      "/slow/length",
      [
        headers(1, [...base("/slow/length", "POST"), ["content-length", "10"]], false),
        data(1, "hello", false),
        100,
        rst(1),
      ],
    ],
  ] as [string, string, (Buffer | number)[]][])("never_forwards_a_post_%s", async (_claim, path, frames) => {
    await rawH2(h2cPort, frames, 700);
    expect(forwarded(path)).toHaveLength(0);
  });

  it("forwards_a_complete_h2_post_body_positive_control", async () => {
    await rawH2(
      h2cPort,
      [headers(1, [...base("/h2/post", "POST"), ["content-length", "5"]], false), data(1, "hello")],
      300,
    );
    expect(forwarded("/h2/post").map((r) => r.body)).toEqual(["hello"]);
  });
});

describe("HTTP/2 streams per connection", () => {
  const slow = (stream: number): Buffer =>
    headers(stream, [
      [":method", "GET"],
      [":scheme", "http"],
      [":authority", "127.0.0.1"],
      [":path", `/slow/streams/${stream}`],
    ]);

  // Without SETTINGS_MAX_CONCURRENT_STREAMS (Node's default: 2^32-1) one connection could hold any number of
  // requests in flight at once: the listener's maxConnections would bound nothing.
  it.each([
    ["cleartext", () => http2.connect(`http://127.0.0.1:${h2cPort}`)],
    [
      "tls",
      () =>
        http2.connect(`https://127.0.0.1:${httpsPort}`, {
          servername: "a.test",
          rejectUnauthorized: false,
        }),
    ],
  ] as [string, () => http2.ClientHttp2Session][])(
    "advertises_a_bounded_max_concurrent_streams_over_%s",
    async (_claim, open) => {
      const c = open();
      try {
        const settings = await new Promise<http2.Settings>((resolve, reject) => {
          c.once("remoteSettings", resolve);
          c.once("error", reject);
        });
        expect(settings.maxConcurrentStreams).toBe(100);
      } finally {
        c.destroy();
      }
    },
  );

  // Past the limit nghttp2 ends the connection (RFC 9113 §5.1.2 allows PROTOCOL_ERROR): its requests,
  // held by the route's delay, are never forwarded.
  it.each([
    ["answers_every_stream_of_a_connection_within_the_limit", 100, null, 100],
    ["closes_a_connection_that_opens_streams_past_the_limit_with_protocol_error", 150, 1, 0],
  ] as [string, number, number | null, number][])("%s", async (_claim, count, goaway, forwarded) => {
    const ids = Array.from({ length: count }, (_, i) => 2 * i + 1 + (goaway === null ? 0 : 1000));
    // Within the limit: until every stream is answered (a hundred delayed requests can take longer than
    // a second on a loaded machine). Past it: 1.5 s, long enough for a forwarded request to show.
    const r =
      goaway === null
        ? await rawH2(h2cPort, [100, Buffer.concat(ids.map(slow))], 15_000, undefined, (x) =>
            ids.every((id) => x.streams[id] !== undefined),
          )
        : await rawH2(h2cPort, [100, Buffer.concat(ids.map(slow))], 1500);
    expect(r.goaway).toBe(goaway);
    const paths = new Set(ids.map((id) => `/slow/streams/${id}`));
    expect(app.received.filter((x) => paths.has(x.url))).toHaveLength(forwarded);
    expect(ids.filter((id) => r.streams[id]?.[0] === 200)).toHaveLength(forwarded);
  });
});
