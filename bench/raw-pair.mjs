/**
 * The raw-socket mTLS pair, bench:mesh's floor: what a Node process pays to carry a request through one
 * hop on this machine with no HTTP semantics at all — node:net / node:tls, a message framed by its blank
 * line and Content-Length (no chunked encoding, no header rules, no pipelining), written with one write,
 * kept-alive connections reused. Not a proxy anyone should deploy: a floor under the minimal Node pair
 * (bench/node-proxy.mjs) and the sidecars, to tell Node's cost for the hop from what a proxy does on top.
 * Plain JavaScript (no type stripping at start).
 *
 *   node bench/raw-pair.mjs outbound|inbound <listen port> <next port> <identity dir> <bundle file>
 *     outbound: plain in, TLS 1.3 out with the client SVID, verifying the server's chain against the
 *     bundle and the host name "orders" (as the nginx and Node pairs); inbound: TLS 1.3 in with a
 *     required, verified client certificate, plain to the server. The identity dir holds svid.pem (leaf
 *     and intermediate) and svid-key.pem, as bench/mesh.ts writes them.
 */
import { Buffer } from "node:buffer";
import { readFileSync } from "node:fs";
import net from "node:net";
import { join } from "node:path";
import tls from "node:tls";

const USAGE =
  "usage: node bench/raw-pair.mjs outbound|inbound <listen port> <next port> <identity dir> <bundle file>";
const [mode, listenArg, nextArg, dir, bundleFile] = process.argv.slice(2);
const listen = Number(listenArg);
const next = Number(nextArg);
if (!["outbound", "inbound"].includes(mode) || !listen || !next || !dir || !bundleFile) {
  process.stderr.write(`${USAGE}\n`);
  process.exit(2);
}
const identity = {
  cert: readFileSync(join(dir, "svid.pem")),
  key: readFileSync(join(dir, "svid-key.pem")),
  ca: readFileSync(bundleFile),
  minVersion: "TLSv1.3",
};

const CRLFCRLF = Buffer.from("\r\n\r\n");
const BAD_GATEWAY = "HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\n\r\n";

/**
 * The length of the message at the start of `buf` (head, blank line, Content-Length bytes), 0 while it
 * is incomplete, -1 when it cannot be framed here (no Content-Length on a message that would need one).
 */
function messageLength(buf, response) {
  const end = buf.indexOf(CRLFCRLF);
  if (end < 0) return 0;
  const head = buf.toString("latin1", 0, end);
  const m = /\r\ncontent-length: *(\d+)/i.exec(head);
  let body = 0;
  if (m) body = Number(m[1]);
  else if (/\r\ntransfer-encoding:/i.test(head)) return -1;
  else if (response && !/^HTTP\/1\.1 (1\d\d|204|304) /.test(head)) return -1;
  return buf.length >= end + 4 + body ? end + 4 + body : 0;
}

/** Idle connections to the next hop. */
const idle = [];

function dial() {
  const s =
    mode === "outbound"
      ? tls.connect({ ...identity, host: "127.0.0.1", port: next, servername: "orders" })
      : net.connect({ host: "127.0.0.1", port: next });
  s.setNoDelay(true);
  s.on("error", () => s.destroy());
  s.on("close", () => {
    const i = idle.indexOf(s);
    if (i >= 0) idle.splice(i, 1);
  });
  return s;
}

/** Sends one request upstream and writes the response to `client`; `done` once it is written. */
function exchange(client, request, done) {
  const up = idle.pop() ?? dial();
  let buf = null;
  const finish = (answer, reuse) => {
    up.off("data", onData);
    up.off("close", onClose);
    if (reuse) idle.push(up);
    else up.destroy();
    if (answer === null) client.destroy();
    else client.write(answer);
    done();
  };
  const onData = (chunk) => {
    buf = buf === null ? chunk : Buffer.concat([buf, chunk]);
    const n = messageLength(buf, true);
    if (n === 0) return;
    if (n < 0 || n !== buf.length) return finish(n < 0 ? BAD_GATEWAY : null, false);
    finish(buf, true);
  };
  // Closed before a whole response: a 502 if nothing came, else the client loses its connection too.
  const onClose = () => finish(buf === null ? BAD_GATEWAY : null, false);
  up.on("data", onData);
  up.on("close", onClose);
  up.write(request);
}

function onConnection(client) {
  client.setNoDelay?.(true);
  let buf = null;
  let busy = false;
  const pump = () => {
    if (busy || buf === null) return;
    const n = messageLength(buf, false);
    if (n === 0) return;
    if (n < 0) return void client.end(BAD_GATEWAY);
    const request = buf.subarray(0, n);
    buf = n === buf.length ? null : buf.subarray(n);
    busy = true;
    exchange(client, request, () => {
      busy = false;
      pump();
    });
  };
  client.on("data", (chunk) => {
    buf = buf === null ? chunk : Buffer.concat([buf, chunk]);
    pump();
  });
  client.on("error", () => client.destroy());
}

const server =
  mode === "inbound"
    ? tls.createServer({ ...identity, requestCert: true, rejectUnauthorized: true }, onConnection)
    : net.createServer({ noDelay: true }, onConnection);
server.on("tlsClientError", (_err, socket) => socket.destroy());
server.listen(listen, "127.0.0.1", () =>
  process.stdout.write(`raw pair (${mode}) 127.0.0.1:${listen} -> ${next}\n`),
);
const stop = () => process.exit(0);
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
