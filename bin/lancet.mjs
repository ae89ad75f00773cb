#!/usr/bin/env node
// The `lancet` command. The CLI is written in TypeScript and runs through Node's type stripping
// (Node >= 22.18; `npm install` brings Node 24 as a devDependency).
import { run } from "../src/cli/main.ts";

process.exitCode = await run(process.argv.slice(2), {
  stdout: process.stdout,
  stderr: process.stderr,
  isTTY: Boolean(process.stdout.isTTY),
});
