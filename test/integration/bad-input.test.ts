import { test } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, readdirSync, readFileSync, statSync, writeFileSync as writeFile } from "node:fs";
import * as path from "node:path";
import { addColumns, alterColumns, backfill, isBackfillError, type ErrorCode } from "../../src/index.ts";
import { FIXTURES, makeTable, readAll, tempDb, udfRef, type TempDb } from "../helpers.ts";

const ref = (dir: string, table = "t") => ({ db: dir, table });

/** Every file of the table's checkpoint store (finished work: markers and batches), with a hash of its content. */
function checkpoints(t: TempDb): Record<string, string> {
  const root = path.join(t.dir, "_lancet", "t", "ckp");
  const out: Record<string, string> = {};
  if (!existsSync(root)) return out;
  for (const f of readdirSync(root, { recursive: true }) as string[]) {
    const full = path.join(root, f);
    if (statSync(full).isFile()) out[f] = createHash("sha256").update(readFileSync(full)).digest("hex");
  }
  return out;
}

/** Asserts `p` rejects with `code` and a message matching every pattern, and that table t and its finished checkpoints are unchanged. */
async function rejectsUnchanged(t: TempDb, p: () => Promise<unknown>, code: ErrorCode, ...patterns: RegExp[]): Promise<void> {
  const table = await t.open();
  const version = await table.version();
  const columns = (await table.schema()).fields.map((f) => f.name);
  const before = await readAll(t, columns);
  const ckp = checkpoints(t);
  await assert.rejects(p(), (e: unknown) => {
    assert.ok(isBackfillError(e, code), `expected ${code}, got ${(e as { code?: string }).code}: ${(e as Error).message}`);
    for (const re of patterns) assert.match((e as Error).message, re);
    return true;
  });
  await table.checkoutLatest();
  assert.equal(await table.version(), version, "no commit was made");
  assert.deepEqual(await readAll(t, columns), before);
  assert.deepEqual(checkpoints(t), ckp, "checkpoints of finished work are unchanged");
}

/** A table with 2 fragments and a finished UDF column, so there is finished work to protect. */
async function tableWithFinishedWork(t: TempDb): Promise<void> {
  await makeTable(t, 2, 50);
  await addColumns(ref(t.dir), { done: udfRef("doubled") });
  await backfill(ref(t.dir), "done");
}

test("binding errors name the table, column, module, export or input", async () => {
  await using t = await tempDb();
  await tableWithFinishedWork(t);
  await rejectsUnchanged(t, () => addColumns(ref(t.dir, "nope"), { y: udfRef("doubled") }), "TABLE_NOT_FOUND", /table nope does not exist/);
  await rejectsUnchanged(t, () => addColumns(ref(path.join(t.dir, "missing-db")), { y: udfRef("doubled") }), "DB_NOT_FOUND", /missing-db does not exist/);
  await rejectsUnchanged(t, () => addColumns(ref(t.dir), { y: path.join(FIXTURES, "nope.ts#x") }), "UDF_MODULE_NOT_FOUND", /nope\.ts does not exist/);
  await rejectsUnchanged(t, () => addColumns(ref(t.dir), { y: udfRef("noSuchExport") }), "UDF_EXPORT_NOT_FOUND", /no export "noSuchExport"/, /doubled/);
  await rejectsUnchanged(t, () => addColumns(ref(t.dir), { y: udfRef("missingInput") }), "INPUT_COLUMN_NOT_FOUND", /input column\(s\) nope/, /columns are id, x, s/);
  await rejectsUnchanged(t, () => addColumns(ref(t.dir), { y: udfRef("wantsNumbers") }), "INPUT_COLUMN_TYPE", /needs input column s as float64, but in table t it is utf8/);
  writeFile(path.join(t.dir, "a-file"), "");
  await rejectsUnchanged(t, () => addColumns(ref(path.join(t.dir, "a-file")), { y: udfRef("doubled") }), "DB_NOT_FOUND", /a-file is a file, not a directory/);
  await rejectsUnchanged(t, () => addColumns(ref(t.dir), { y: udfRef("badType") }), "CONFIG_INVALID", /dataType "float65" is not a valid type/);
  await rejectsUnchanged(t, () => addColumns(ref(t.dir), { y: udfRef("notAUdf") }), "UDF_INVALID", /inputs must be a non-empty array/);
  await rejectsUnchanged(t, () => addColumns(ref(t.dir), { x: udfRef("doubled") }), "COLUMN_EXISTS", /already has a column x/);
  await rejectsUnchanged(t, () => addColumns(ref(t.dir), { y: path.join(FIXTURES, "syntax-error.mjs#x") }), "UDF_BUNDLE_FAILED", /syntax-error\.mjs could not be bundled at .*syntax-error\.mjs:\d+/);
  await rejectsUnchanged(t, () => alterColumns(ref(t.dir), { zz: udfRef("doubled") }), "COLUMN_NOT_FOUND", /no column zz/);
  await addColumns(ref(t.dir), { y: udfRef("doubled") });
  await rejectsUnchanged(t, () => alterColumns(ref(t.dir), { y: udfRef("asUtf8") }), "UDF_OUTPUT_TYPE", /returns utf8 but column y of table t is float64/);
});

test("backfill errors: unknown column, non-UDF column, missing table, bad where, invalid options", async () => {
  await using t = await tempDb();
  await tableWithFinishedWork(t);
  await addColumns(ref(t.dir), { y: udfRef("doubled") });
  await rejectsUnchanged(t, () => backfill(ref(t.dir), "nope"), "COLUMN_NOT_FOUND", /table t has no column nope; its columns are id, x, s, done, y/);
  await rejectsUnchanged(t, () => backfill(ref(t.dir), "x"), "COLUMN_NOT_UDF", /column x of table t is a data column, not bound to a UDF/);
  await rejectsUnchanged(t, () => backfill(ref(t.dir, "other"), "y"), "TABLE_NOT_FOUND", /table other does not exist/);
  await rejectsUnchanged(t, () => backfill(ref(t.dir), "y", { where: "x >>> 3 AND" }), "WHERE_INVALID", /options.where "x >>> 3 AND" is not a valid filter on table t/);
  await rejectsUnchanged(t, () => backfill(ref(t.dir), "y", { where: "nope > 1" }), "WHERE_INVALID", /nope/);
  const invalid: [Record<string, unknown>, RegExp][] = [
    [{ concurrency: 0 }, /options.concurrency must be a positive integer .*\(got 0\)/],
    [{ concurrency: 1.5 }, /options.concurrency must be a positive integer/],
    [{ intraApplierConcurrency: -1 }, /options.intraApplierConcurrency must be a positive integer/],
    [{ checkpointSize: "10" }, /options.checkpointSize must be a positive integer \(got "10"\)/],
    [{ taskSize: 0 }, /options.taskSize/],
    [{ commitGranularity: Number.NaN }, /options.commitGranularity/],
    [{ numFrags: 0 }, /options.numFrags/],
    [{ maxTaskAttempts: 0 }, /options.maxTaskAttempts/],
    [{ checkpointSize: 100, maxCheckpointSize: 10 }, /options.maxCheckpointSize \(10\) must be at least options.checkpointSize \(100\)/],
    [{ where: "  " }, /options.where must be a non-empty SQL filter/],
    [{ planOnly: "yes" }, /options.planOnly must be a boolean/],
    [{ concurency: 2 }, /options.concurency is not a backfill option/],
    [{ writerConcurrency: 0 }, /options.writerConcurrency/],
    [{ statusIntervalMs: -5 }, /options.statusIntervalMs/],
    [{ taskTimeoutMs: 0 }, /options.taskTimeoutMs/],
    [{ workerMemoryMb: 1.5 }, /options.workerMemoryMb/],
    [{ errorPolicy: "sometimes" }, /options.errorPolicy must be "fail", "skip" or "retry:N"/],
    [{ errorPolicy: [{ action: "retry", message: "([" }] }, /options.errorPolicy\[0\].message "\(\[" is not a valid regular expression/],
  ];
  for (const [opts, re] of invalid) await rejectsUnchanged(t, () => backfill(ref(t.dir), "y", opts as never), "CONFIG_INVALID", re);
});

test("UDF output errors fail the job naming the fragment and rows; nothing is committed", async () => {
  await using t = await tempDb();
  await tableWithFinishedWork(t);
  await addColumns(ref(t.dir), {
    nan: udfRef("nanInt"),
    fnv: udfRef("returnsFunction"),
    ext: udfRef("alwaysCrash"),
    len: udfRef("wrongLength"),
    typ: udfRef("wrongType"),
    emb: udfRef("wrongEmbeddingSize"),
    thr: udfRef("throws"),
    stp: udfRef("setupFails"),
  });
  await rejectsUnchanged(t, () => backfill(ref(t.dir), "len", { taskSize: 50 }), "UDF_OUTPUT_LENGTH", /wrongLength returned a bad value \(table t, column len, fragment \d, rows 0-49\): got 49 values for 50 rows/);
  await rejectsUnchanged(t, () => backfill(ref(t.dir), "typ", { taskSize: 50 }), "UDF_OUTPUT_TYPE", /for row \d+ \(table t, column typ, fragment \d, rows 0-49\): got the string "not a number/, /column typ is float64/);
  await rejectsUnchanged(t, () => backfill(ref(t.dir), "emb"), "UDF_OUTPUT_TYPE", /got a list of length 3, expected fixed_size_list<float32>\[4\]/);
  await rejectsUnchanged(t, () => backfill(ref(t.dir), "thr", { concurrency: 1, taskSize: 50 }), "UDF_FAILED", /throws threw on row \d+ \(table t, column thr, fragment 0, rows 0-49\): RangeError: bad x/);
  await rejectsUnchanged(t, () => backfill(ref(t.dir), "stp"), "UDF_SETUP_FAILED", /setup\(\) of UDF .*setupFails for column stp failed: model weights not found/);
  await rejectsUnchanged(t, () => backfill(ref(t.dir), "nan", { taskSize: 50 }), "UDF_OUTPUT_TYPE", /for row 0 \(table t, column nan, fragment \d, rows 0-49\): got number NaN, expected int32/);
  await rejectsUnchanged(t, () => backfill(ref(t.dir), "fnv", { taskSize: 50 }), "UDF_OUTPUT_TYPE", /got function \(\) => "not a value", expected utf8/);
  await rejectsUnchanged(t, () => backfill(ref(t.dir), "ext", { maxTaskAttempts: 2 }), "WORKER_CRASHED", /worker process exited with code 9 while computing fragment \d rows .*table t, column ext.*failed 2 time/);
});

test("a bound snapshot is what runs: editing or deleting the module file changes nothing until rebinding", async () => {
  await using t = await tempDb();
  await makeTable(t, 1, 20);
  const dir = path.join(t.dir, "udf-src");
  mkdirSync(dir);
  const { writeFileSync, rmSync } = await import("node:fs");
  const file = path.join(dir, "m.ts");
  writeFileSync(file, `export const f = { inputs: ["x"], dataType: "float64", fn: (x: number | null) => x === null ? null : x + 1 };\n`);
  await addColumns(ref(t.dir), { y: `${file}#f` });
  const { columnStatus } = await import("../../src/index.ts");
  assert.equal((await columnStatus(ref(t.dir)))[0]!.moduleState, "current");
  writeFileSync(file, `export const f = { inputs: ["x"], dataType: "float64", fn: (x: number | null) => x === null ? null : x + 100 };\n`);
  assert.equal((await columnStatus(ref(t.dir)))[0]!.moduleState, "changed");
  await backfill(ref(t.dir), "y");
  for (const r of await readAll(t, ["x", "y"])) assert.equal(r.y, r.x === null ? null : (r.x as number) + 1);
  rmSync(file);
  assert.equal((await columnStatus(ref(t.dir)))[0]!.moduleState, "missing");
});
