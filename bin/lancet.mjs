#!/usr/bin/env node
// The `lancet` command. The CLI is written in TypeScript and runs through Node's type stripping
// (Node >= 22.18; `npm install` brings Node 24 as a devDependency, which `npx lancet` uses).
const [major, minor] = process.versions.node.split(".").map(Number);
if (major < 22 || (major === 22 && minor < 18)) {
  process.stderr.write(`lancet: Node ${process.versions.node} is too old; Lancet needs Node >= 22.18. Run it as \`npx lancet\` after \`npm install\` (which brings Node 24), or upgrade Node.\n`);
  process.exit(2);
}
// From a clone: the TypeScript sources. Installed under node_modules (where Node does not strip
// types): the build in dist/, made by `npm run build` (run by npm when packing or installing from git).
const installed = import.meta.url.includes("/node_modules/");
const { run } = await import(installed ? "../dist/cli/main.js" : "../src/cli/main.ts");
process.exitCode = await run(process.argv.slice(2), {
  stdout: process.stdout,
  stderr: process.stderr,
  isTTY: Boolean(process.stderr.isTTY),
});
