import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync, renameSync, writeFileSync } from "node:fs";
import * as path from "node:path";
import { arrow } from "../../src/arrow.ts";
import { addColumns, backfill, backfillAsync, getJob, isBackfillError, listErrors } from "../../src/index.ts";
import { ErrorsWriter, type ErrorRecord } from "../../src/jobs/errors-table.ts";
import { makeTable, readAll, rows, securedRows, tempDb, udfRef, type TempDb } from "../helpers.ts";

const ref = (dir: string) => ({ db: dir, table: "t" });

async function failingEven<T>(f: () => Promise<T>): Promise<T> {
  process.env.LANCET_TEST_FAIL_EVEN = "1";
  try {
    return await f();
  } finally {
    delete process.env.LANCET_TEST_FAIL_EVEN;
  }
}

test("skip: a batch of 5,000 rows with 2,500 failing rows gives exactly 2,500 records in the errors table, one per row", async () => {
  await using t = await tempDb();
  await makeTable(t, 1, 5000);
  await addColumns(ref(t.dir), { y: udfRef("badEvenBatch") });
  const r = await failingEven(() => backfill(ref(t.dir), "y", { concurrency: 1, checkpointSize: 5000 }));
  assert.equal(r.status, "finished");
  assert.equal(r.metrics.rowsSkipped, 2500);
  const errors = await listErrors(t.dir, { jobId: r.id });
  assert.equal(errors.length, 2500, "one record per skipped row, none capped");
  assert.deepEqual(
    errors.map((e) => e.rowOffset).sort((a, b) => a - b),
    Array.from({ length: 2500 }, (_, i) => 2 * i),
  );
  for (const e of errors) {
    assert.equal(e.fragment, 0);
    assert.equal(BigInt(e.rowAddress), BigInt(e.rowOffset));
    assert.equal(e.message, `batch holds bad row ${e.rowOffset}`);
    assert.equal(e.name, "TypeError");
    assert.ok(e.bisectDepth > 0);
  }
  for (const row of await readAll(t, ["id", "x", "y"])) {
    const id = Number(row.id);
    assert.equal(row.y, id % 2 === 0 || row.x === null ? null : (row.x as number) * 2, `id ${id}`);
  }
});

// Fragment 0: 1,000 rows (one task); fragment 1: 4,000 rows (four tasks). Half the rows fail and are
// skipped, so the errors table is first written after fragment 1's first task (1,000 records); that
// write fails, and the job stops there: fragment 0 is complete and committed, fragment 1 keeps its
// checkpointed first task.
const breakers: [string, (t: TempDb) => Promise<void>][] = [
  [
    "an errors table of another schema",
    async (t) => {
      await t.db.createTable("_lancet_errors", new arrow.Table({ other: arrow.vectorFromArray([1], new arrow.Int32()) }) as never);
    },
  ],
  [
    "an errors table that is a file",
    async (t) => {
      writeFileSync(path.join(t.dir, "_lancet_errors.lance"), "not a table");
    },
  ],
];
for (const [what, breakTable] of breakers) {
  test(`skip with ${what}: the job fails naming the errors table; no fragment is committed with unrecorded skipped rows; checkpoints are kept`, async () => {
    await using t = await tempDb();
    const table = await makeTable(t, 1, 1000);
    await table.add(rows(1000, 4000) as never);
    await addColumns(ref(t.dir), { y: udfRef("badEvenBatch") });
    await breakTable(t);
    const job = await failingEven(async () => {
      const j = backfillAsync(ref(t.dir), "y", { concurrency: 1, taskSize: 1000, checkpointSize: 1000 });
      await assert.rejects(j.wait(), (e: unknown) => {
        assert.ok(isBackfillError(e, "CHECKPOINT_FAILED"), String(e));
        assert.match((e as Error).message, /^could not write to the errors table _lancet_errors \(.*_lancet_errors\.lance\): .+; job \S+ failed so that no row skipped by the error policy of column y \(table t\) goes unrecorded\. Committed fragments stay committed and checkpoints are kept/);
        return true;
      });
      return j;
    });
    assert.equal(job.status(), "failed");
    const stored = await getJob(t.dir, job.id);
    assert.equal(stored.status, "failed");
    assert.equal(stored.error?.code, "CHECKPOINT_FAILED");
    assert.ok(stored.events.some((e) => e.type === "failed" && /_lancet_errors/.test(e.message)));

    // Nothing is committed: fragment 0's skipped rows could not be recorded, so its commit waits (its
    // checkpoints, and fragment 1's first task's, are kept); fragment 1's other tasks did not run.
    const after = await readAll(t, ["id", "x", "y"]);
    assert.ok(after.every((r) => r.y === null), "no fragment committed with unrecorded skipped rows");
    assert.equal(await securedRows(path.join(t.dir, "_lancet", "t"), "y"), 2000, "fragment 0 and fragment 1's first task checkpointed");

    // Once the table is moved aside, a re-run reuses all of that and finishes.
    mkdirSync(path.join(t.dir, "aside"));
    renameSync(path.join(t.dir, "_lancet_errors.lance"), path.join(t.dir, "aside", "_lancet_errors.lance"));
    const again = await backfill(ref(t.dir), "y", { concurrency: 1 });
    assert.ok(again.metrics.rowsComputed >= 3000 && again.metrics.rowsComputed < 4000, `recomputed ${again.metrics.rowsComputed}: fragment 1's unfinished tasks only (the checkpoints are reused)`);
    await backfill(ref(t.dir), "y"); // retries the rows skipped in fragment 1's checkpointed task
    for (const row of await readAll(t, ["x", "y"])) assert.equal(row.y, row.x === null ? null : (row.x as number) * 2);
  });
}

test("the errors writer streams: appends start every flushRecords records, ready() waits until fewer are unwritten, flush() writes the rest", async () => {
  await using t = await tempDb();
  const w = new ErrorsWriter(t.dir, { jobId: "j", table: "t", column: "y", flushRecords: 100 });
  const record = (i: number): ErrorRecord => ({ jobId: "j", table: "t", column: "y", udf: "m#f", udfVersion: "v", fragment: 0, rowAddress: String(i), rowOffset: i, name: "Error", message: `row ${i}`, stack: "", attempt: 1, bisectDepth: 0, at: new Date(0).toISOString() });
  for (let i = 0; i < 250; i += 50) w.add(Array.from({ length: 50 }, (_, k) => record(i + k)));
  assert.equal(w.unwritten, 250);
  await w.ready();
  assert.ok(w.unwritten < 100, `unwritten after ready(): ${w.unwritten}`);
  await w.flush();
  assert.equal(w.unwritten, 0);
  assert.deepEqual((await listErrors(t.dir, { jobId: "j" })).map((e) => e.rowOffset), Array.from({ length: 250 }, (_, i) => i));
  await w.flush(); // idempotent
});
