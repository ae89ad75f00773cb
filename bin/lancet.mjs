#!/usr/bin/env node
// The `lancet` command. The CLI is written in TypeScript: from a clone it runs the sources through
// Node's type stripping; installed under node_modules (where Node does not strip types) it runs the
// build in dist/, made by `npm run build` (run by npm when packing or installing from git).
//
// First, the Node check the library runs too (./node-version.mjs, plain JavaScript so that it loads
// on the Nodes it refuses): on one it cannot run on, say so and what to do, and nothing else.
try {
  await import("./node-version.mjs");
} catch (error) {
  if (error?.code !== "NODE_UNSUPPORTED") throw error;
  process.stderr.write(`lancet: error NODE_UNSUPPORTED: ${error.message}\n`);
  process.exit(1);
}
const installed = import.meta.url.includes("/node_modules/");
const { run } = await import(installed ? "../dist/cli/main.js" : "../src/cli/main.ts");
process.exitCode = await run(process.argv.slice(2), {
  stdout: process.stdout,
  stderr: process.stderr,
  isTTY: Boolean(process.stderr.isTTY),
});
