/**
 * `node stacks/local/demo/main.ts --config FILE`: runs the built-in demo service (see ./service.ts) on
 * 127.0.0.1 at the port its config names; `meshgate up` starts one per service without `local.command`.
 * Exits 0 on SIGTERM/SIGINT once the listener closed.
 */
import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";
import type { DemoConfig } from "../plan.ts";
import { createDemoServer } from "./service.ts";

const { values } = parseArgs({ options: { config: { type: "string" } } });
if (typeof values.config !== "string") {
  process.stderr.write("usage: node stacks/local/demo/main.ts --config FILE\n");
  process.exit(2);
}
const config = JSON.parse(readFileSync(values.config, "utf8")) as DemoConfig;
const server = createDemoServer(config);
server.keepAliveTimeout = 5000;
server.listen(config.port, "127.0.0.1", () => {
  process.stdout.write(
    `demo service ${config.service} on http://127.0.0.1:${config.port} (calls: ${config.calls.map((c) => `${c.method} ${c.service}${c.path}`).join(", ") || "none"})\n`,
  );
});
server.on("error", (err) => {
  process.stderr.write(`demo service ${config.service}: ${err.message}\n`);
  process.exit(1);
});
const stop = () => {
  server.close(() => process.exit(0));
  server.closeIdleConnections();
  setTimeout(() => process.exit(0), 2000).unref();
};
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
