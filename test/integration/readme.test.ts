/**
 * Every code block of README.md runs here, so the README cannot drift from the code.
 *
 * Each runnable block runs in its own copy of one prepared scratch project (a `package.json` with
 * `"type": "module"`, the README's `file` blocks, `./data` and `./demo-data` below): blocks are
 * independent, in any order, and one that changes a table cannot break the next.
 *
 * - `ts` / `js` blocks run as modules with this clone's Node, `lancet` resolved to `src/index.ts`
 *   (test/fixtures/readme/resolve-lancet.mjs);
 * - `sh` blocks run line by line with bash, where `lancet` and `npx lancet` are this clone's
 *   `bin/lancet.mjs` and `node` is this clone's Node; every line must exit 0.
 *
 * A block that must not run as is carries a marker on the line right before its fence:
 *
 * - `<!-- readme-test: skip — REASON -->`: not run (a synopsis, an output sample, a fragment that uses
 *   the reader's own helpers, setup that installs packages); the reason is required;
 * - `<!-- readme-test: file NAME -->`: not run; written as NAME into the scratch project, for the blocks
 *   that use it (the `udfs.ts` that `./udfs.ts#wordCount` names);
 * - `<!-- readme-test: exit N — REASON -->`: run, and its last line must exit with status N (137: killed
 *   by SIGKILL, as a failpoint does).
 *
 * An unmarked block must run and succeed; the test lists every one that does not. Whatever a block
 * prints must not contain `undefined`: an example that prints it reads a field that is not there.
 */
import { strict as assert } from "node:assert";
import { spawn } from "node:child_process";
import { chmodSync, cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { constants, tmpdir } from "node:os";
import * as path from "node:path";
import { after, before, test } from "node:test";
import { arrow, lancedb } from "../../src/arrow.ts";
import type { ArrowNs } from "../../src/arrow.ts";
import { addColumns, backfill, silentLogger } from "../../src/index.ts";
import { FIXTURES, REPO } from "../helpers.ts";

type Mode =
  | { readonly kind: "run" }
  | { readonly kind: "skip"; readonly reason: string }
  | { readonly kind: "file"; readonly name: string }
  | { readonly kind: "exit"; readonly status: number };

interface Block {
  /** 1-based line of the opening fence in README.md. */
  readonly line: number;
  readonly lang: string;
  readonly code: string;
  readonly mode: Mode;
}

const README = path.join(REPO, "README.md");
const MARKER = /^<!-- readme-test: (.*?) -->$/;
const RUNNABLE = new Set(["ts", "js", "sh"]);

/** The fenced blocks of a Markdown text with their markers, and the problems with the markers themselves. */
function readmeBlocks(text: string): { blocks: Block[]; problems: string[] } {
  const lines = text.split("\n");
  const blocks: Block[] = [];
  const problems: string[] = [];
  for (let i = 0; i < lines.length; i++) {
    const marker = MARKER.exec(lines[i]!);
    if (marker !== null && !/^\s*```/.test(lines[i + 1] ?? "")) problems.push(`README.md:${i + 1}: a readme-test marker must be on the line right before a code fence`);
    const open = /^(\s*)```(\S*)/.exec(lines[i]!);
    if (open === null) continue;
    const [, indent, lang = ""] = open;
    const start = i;
    const body: string[] = [];
    for (i++; i < lines.length && lines[i]!.trimEnd() !== `${indent}\`\`\``; i++) body.push(lines[i]!.slice(indent!.length));
    const prev = MARKER.exec(lines[start - 1] ?? "");
    const mode = prev === null ? { kind: "run" as const } : parseMode(prev[1]!);
    if (typeof mode === "string") {
      problems.push(`README.md:${start}: ${mode}`);
      continue;
    }
    blocks.push({ line: start + 1, lang, code: body.join("\n") + "\n", mode });
  }
  return { blocks, problems };
}

function parseMode(text: string): Mode | string {
  const [head = "", reason = ""] = text.split(/\s+[—-]\s+/, 2);
  const [kind, arg] = head.trim().split(/\s+/, 2);
  switch (kind) {
    case "skip":
      return reason.trim() === "" ? `readme-test: skip needs a reason ("skip — why")` : { kind: "skip", reason };
    case "file":
      return arg === undefined || arg.includes("/") ? `readme-test: file needs a file name ("file udfs.ts")` : { kind: "file", name: arg };
    case "exit":
      return arg !== undefined && /^\d+$/.test(arg) ? { kind: "exit", status: Number(arg) } : `readme-test: exit needs a status ("exit 137 — why")`;
    default:
      return `unknown readme-test mode "${text}" (modes: skip — why, file NAME, exit N — why)`;
  }
}

interface Outcome {
  readonly status: number;
  readonly stdout: string;
  readonly stderr: string;
}

function runProcess(command: string, args: string[], cwd: string, env: NodeJS.ProcessEnv): Promise<Outcome> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { cwd, env, stdio: ["ignore", "pipe", "pipe"], timeout: 120_000 });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
    child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    child.on("error", reject);
    child.on("close", (code, signal) => {
      const status = code ?? 128 + (signal === null ? 0 : constants.signals[signal]);
      resolve({ status, stdout, stderr });
    });
  });
}

/** The commands of an sh block: one per line, `\`-continued lines joined, blank and comment lines dropped. */
function shellCommands(code: string): string[] {
  const commands: string[] = [];
  let pending = "";
  for (const line of code.split("\n")) {
    if (line.endsWith("\\")) {
      pending += line.slice(0, -1) + " ";
      continue;
    }
    const command = (pending + line).trim();
    pending = "";
    if (command !== "" && !command.startsWith("#")) commands.push(command);
  }
  return commands;
}

let scratch = "";
let template = "";
let env: NodeJS.ProcessEnv = {};

/** Where the README's examples run: its `file` blocks, `./data` (tables `docs`, and `posts` with stable row ids) and `./demo-data` (the demo's table, `word_count` filled). */
async function prepare(blocks: readonly Block[]): Promise<void> {
  scratch = mkdtempSync(path.join(tmpdir(), "lancet-readme-"));
  template = path.join(scratch, "template");
  mkdirSync(template);
  writeFileSync(path.join(template, "package.json"), JSON.stringify({ name: "readme-project", private: true, type: "module" }, null, 2));
  for (const b of blocks) if (b.mode.kind === "file") writeFileSync(path.join(template, b.mode.name), b.code);

  // `lancet`, `npx lancet` and `node` as a user of this clone would have them; any other `npx` is refused (no network).
  const bin = path.join(scratch, "bin");
  mkdirSync(bin);
  const lancet = `#!/bin/sh\nexec "${process.execPath}" "${path.join(REPO, "bin", "lancet.mjs")}" "$@"\n`;
  const npx = `#!/bin/sh\nif [ "$1" = lancet ]; then shift; exec "${path.join(bin, "lancet")}" "$@"; fi\necho "readme test: only \\\`npx lancet\\\` is available here (got npx $*)" >&2\nexit 127\n`;
  const node = `#!/bin/sh\nexec "${process.execPath}" "$@"\n`;
  for (const [name, text] of Object.entries({ lancet, npx, node })) {
    writeFileSync(path.join(bin, name), text);
    chmodSync(path.join(bin, name), 0o755);
  }
  env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith("LANCET_")));
  env.PATH = `${bin}${path.delimiter}${process.env.PATH ?? ""}`;

  const udfs = path.join(REPO, "demo", "udfs.ts");
  const words = "computed columns for lance tables river mountain quick lazy bright runs reads writes".split(" ");
  const docs = (rows: number): ArrowNs.Table => {
    const texts = Array.from({ length: rows }, (_, i) => (i % 37 === 5 ? null : Array.from({ length: 2 + (i % 7) }, (_, w) => words[(i * 7 + w * 3) % words.length]).join(" ")));
    return new arrow.Table({
      id: arrow.makeVector(Int32Array.from({ length: rows }, (_, i) => i)),
      text: arrow.vectorFromArray(texts, new arrow.Utf8()),
      x: arrow.makeVector(Float64Array.from({ length: rows }, (_, i) => (i % 200) - 100)),
    });
  };
  // ./data: table docs (id, text, x) with `embedding` bound and not yet filled, for the examples that backfill it.
  const data = await lancedb.connect(path.join(template, "data"));
  await data.createTable("docs", docs(3000));
  await addColumns({ db: path.join(template, "data"), table: "docs" }, { embedding: `${udfs}#embedding` });
  // ./data: table posts (id, text, lang) with stable row ids, the source of the Views section's CLI example.
  const posts = docs(200);
  await data.createTable("posts", new arrow.Table({ id: posts.getChild("id")!, text: posts.getChild("text")!, lang: arrow.vectorFromArray(Array.from({ length: 200 }, (_, i) => (i % 3 === 0 ? "fr" : "en")), new arrow.Utf8()) }), { storageOptions: { new_table_enable_stable_row_ids: "true" } } as never);
  // ./demo-data: the demo's table in small, word_count filled (what `npm run demo` leaves).
  const demo = { db: path.join(template, "demo-data"), table: "docs" };
  await (await lancedb.connect(demo.db)).createTable("docs", docs(600));
  await addColumns(demo, { word_count: `${udfs}#wordCount` });
  await backfill(demo, "word_count", { concurrency: 1, logger: silentLogger });
}

/** Runs one block in a fresh copy of the scratch project; resolves to what went wrong, or undefined. */
async function runBlock(b: Block): Promise<string | undefined> {
  const dir = path.join(scratch, `L${b.line}`);
  cpSync(template, dir, { recursive: true });
  const where = `README.md:${b.line} (${b.lang}) \`${b.code.split("\n")[0]}\``;
  const failed = (what: string, o: Outcome): string => `${where}: ${what}\n${(o.stderr + o.stdout).trim().split("\n").slice(-12).join("\n")}`;
  let outcomes: Outcome[] = [];
  if (b.lang === "sh") {
    const commands = shellCommands(b.code);
    for (const [i, command] of commands.entries()) {
      const o = await runProcess("bash", ["-c", command], dir, env);
      outcomes.push(o);
      const want = b.mode.kind === "exit" && i === commands.length - 1 ? b.mode.status : 0;
      if (o.status !== want) return failed(`\`${command}\` exited ${o.status}, expected ${want}`, o);
    }
  } else {
    const file = path.join(dir, `readme-L${b.line}.${b.lang === "js" ? "mjs" : "ts"}`);
    writeFileSync(file, b.code);
    const hooks = path.join(FIXTURES, "readme", "resolve-lancet.mjs");
    const o = await runProcess(process.execPath, ["--import", hooks, file], dir, env);
    outcomes = [o];
    const want = b.mode.kind === "exit" ? b.mode.status : 0;
    if (o.status !== want) return failed(`exited ${o.status}, expected ${want}`, o);
  }
  const printed = outcomes.flatMap((o) => o.stdout.split("\n")).filter((l) => /\bundefined\b/.test(l));
  if (printed.length > 0) return `${where}: printed \`undefined\` (the example reads a field that is not there):\n${printed.slice(0, 5).join("\n")}`;
  rmSync(dir, { recursive: true, force: true });
  return undefined;
}

const { blocks, problems } = readmeBlocks(readFileSync(README, "utf8"));

before(async () => {
  await prepare(blocks);
});
after(() => {
  if (scratch !== "") rmSync(scratch, { recursive: true, force: true });
});

test("README markers are well-formed, and unmarked blocks are in a language this test runs", () => {
  const unrunnable = blocks
    .filter((b) => b.mode.kind !== "skip" && b.mode.kind !== "file" && !RUNNABLE.has(b.lang))
    .map((b) => `README.md:${b.line}: a \`${b.lang || "plain"}\` block cannot run; mark it <!-- readme-test: skip — why --> (an output sample, a synopsis) or make it sh/ts`);
  assert.deepEqual([...problems, ...unrunnable], []);
});

test("every README code block runs, or is marked", async (t) => {
  const runnable = blocks.filter((b) => (b.mode.kind === "run" || b.mode.kind === "exit") && RUNNABLE.has(b.lang));
  const count = (kind: Mode["kind"]): number => blocks.filter((b) => b.mode.kind === kind).length;
  t.diagnostic(`${blocks.length} blocks: ${runnable.length} run, ${count("skip")} skipped, ${count("file")} written as files`);
  // Two at a time: each backfill starts worker processes of its own.
  const failures: string[] = [];
  const queue = [...runnable];
  await Promise.all(
    [0, 1].map(async () => {
      for (let b = queue.shift(); b !== undefined; b = queue.shift()) {
        const t0 = performance.now();
        const failure = await runBlock(b);
        t.diagnostic(`README.md:${b.line} ${b.lang} ${failure === undefined ? "ok" : "FAILED"} (${((performance.now() - t0) / 1000).toFixed(1)} s)`);
        if (failure !== undefined) failures.push(failure);
      }
    }),
  );
  assert.equal(
    failures.length,
    0,
    `${failures.length} README block(s) failed. Fix the example, or, for a block that is not meant to run as is, put <!-- readme-test: skip — why --> on the line before its fence:\n\n${failures.join("\n\n")}`,
  );
});
