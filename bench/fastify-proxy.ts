/**
 * The `@fastify/http-proxy` reference for bench/gateway.ts: a minimal fastify app (no logger) proxying
 * every request to one upstream with the plugin's defaults (undici pool, keep-alive).
 *
 *   node bench/fastify-proxy.ts <listen port> <upstream port>
 */
import proxy from "@fastify/http-proxy";
import Fastify from "fastify";

const [port, upstream] = process.argv.slice(2).map(Number);
if (!port || !upstream) {
  process.stderr.write("usage: node bench/fastify-proxy.ts <listen port> <upstream port>\n");
  process.exit(2);
}
const app = Fastify({ logger: false });
await app.register(proxy, { upstream: `http://127.0.0.1:${upstream}` });
await app.listen({ port, host: "127.0.0.1" });
process.stdout.write(`fastify proxy http://127.0.0.1:${port} -> ${upstream}\n`);
const stop = () => void app.close().then(() => process.exit(0));
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
