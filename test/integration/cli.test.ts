import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import * as path from "node:path";
import { run, type CliIo } from "../../src/cli/main.ts";
import { makeTable, REPO, tempDb, udfRef } from "../helpers.ts";

function io(): CliIo & { out: string; err: string } {
  const o = { out: "", err: "", isTTY: false } as CliIo & { out: string; err: string };
  return Object.assign(o, {
    stdout: { write: (s: string) => (o.out += s) },
    stderr: { write: (s: string) => (o.err += s) },
  });
}
const lastJson = (s: string): Record<string, unknown> => JSON.parse(s.trim().split("\n").at(-1)!) as Record<string, unknown>;

test("add-column, backfill --json, re-run, status --json, plan", async () => {
  await using t = await tempDb();
  await makeTable(t, 3, 100);
  const base = ["--db", t.dir, "--table", "t"];
  let o = io();
  assert.equal(await run(["add-column", ...base, "--column", "y", "--udf", udfRef("doubled")], o), 0, o.err);
  assert.match(o.out, /added column y → .*udfs\.ts#doubled \(float64, version [0-9a-f]{16}\)/);

  o = io();
  assert.equal(await run(["backfill", ...base, "--column", "y", "--plan"], o), 0, o.err);
  assert.match(o.out, /fragments: 3 to write, 0 already complete/);

  o = io();
  assert.equal(await run(["backfill", ...base, "--column", "y", "--json", "--concurrency", "2"], o), 0, o.err);
  const r = lastJson(o.out);
  assert.equal(r.status, "finished");
  assert.equal((r.metrics as { rowsComputed: number }).rowsComputed, 300);
  assert.equal(typeof r.id, "string");

  o = io();
  assert.equal(await run(["backfill", ...base, "--column", "y", "--json"], o), 0);
  assert.equal((lastJson(o.out).metrics as { rowsComputed: number }).rowsComputed, 0);

  o = io();
  assert.equal(await run(["backfill", ...base, "--column", "y"], o), 0);
  assert.match(o.out, /backfill of t\.y: nothing to do: all 3 fragments already complete/);
  assert.doesNotMatch(o.err, /fragments 0\/0/);

  o = io();
  assert.equal(await run(["status", ...base, "--json"], o), 0);
  const status = JSON.parse(o.out) as { column: string; filledRows: number; totalRows: number; moduleState: string }[];
  assert.deepEqual(status.map((s) => [s.column, s.filledRows, s.totalRows, s.moduleState]), [["y", 257, 300, "current"]]);
  o = io();
  assert.equal(await run(["status", ...base], o), 0);
  assert.match(o.out, /^y {2}float64 {2}.*#doubled {2}version \w+ {2}filled 257 \/ 300$/m);
});

test("failures exit non-zero with a JSON status line; usage errors exit 2", async () => {
  await using t = await tempDb();
  await makeTable(t, 1, 50);
  const base = ["--db", t.dir, "--table", "t"];
  let o = io();
  assert.equal(await run(["add-column", ...base, "--column", "w", "--udf", udfRef("wrongType")], o), 0);
  o = io();
  assert.equal(await run(["backfill", ...base, "--column", "w", "--json"], o), 1);
  const r = lastJson(o.out);
  assert.equal(r.status, "failed");
  assert.equal(typeof r.id, "string");
  assert.equal((r.metrics as { rowsComputed: number }).rowsComputed, 0);
  assert.equal((r.error as { code: string }).code, "UDF_OUTPUT_TYPE");
  assert.match(o.err, /error UDF_OUTPUT_TYPE: .*column w/);

  o = io();
  assert.equal(await run(["backfill", ...base, "--column", "w", "--concurrency", "abc", "--json"], o), 2);
  assert.match(o.err, /--concurrency must be an integer/);
  assert.equal(lastJson(o.out).status, "failed");
  o = io();
  assert.equal(await run(["backfill", ...base, "--column", "w", "--concurrency", "0"], o), 2);
  assert.match(o.err, /^lancet: --concurrency must be a positive integer .*\(got 0\)/);
  assert.doesNotMatch(o.err, /options\./);
  o = io();
  assert.equal(await run(["backfill", "--table", "t", "--column", "w"], o), 2);
  assert.match(o.err, /--db DIR\|URI is required \(or LANCET_DB\)\n\nRun `lancet backfill --help` for usage/);
  o = io();
  assert.equal(await run(["frobnicate"], o), 2);
  assert.match(o.err, /unknown command "frobnicate"\n\nRun `lancet --help` for usage/);
});

test("the lancet bin answers --help and --version", () => {
  const bin = path.join(REPO, "bin/lancet.mjs");
  const help = execFileSync(process.execPath, [bin, "--help"], { encoding: "utf8" });
  assert.match(help, /lancet backfill +--db DIR --table NAME --column COL/);
  const version = spawnSync(process.execPath, [bin, "--version"], { encoding: "utf8" });
  assert.equal(version.status, 0);
  assert.match(version.stdout, /^\d+\.\d+\.\d+\n$/);
});
