#!/usr/bin/env node
// The `meshgate` command. The sources are TypeScript run directly by Node's type stripping (Node >= 24);
// npm scripts and npx use the project's Node 24 from node_modules/.bin.
if (!process.features.typescript) {
  process.stderr.write(
    `meshgate needs Node.js 24 or newer (this is ${process.version}); run it through npm/npx, which use the project's Node 24\n`,
  );
  process.exit(2);
}
const { main } = await import("../cli/main.ts");
process.exitCode = await main(process.argv.slice(2));
