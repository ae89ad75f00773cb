// A plan reports the rows its selection (a where, or the rows still null) matches, counted on the
// pinned version, not every row of the ranges it scans.
import { test } from "node:test";
import assert from "node:assert/strict";
import { addColumns, backfill } from "../../src/index.ts";
import { makeTable, rows, tempDb, udfRef } from "../helpers.ts";

const ref = (dir: string) => ({ db: dir, table: "t" });

test("a plan with a where reports the rows the where selects, per fragment and in total", async () => {
  await using t = await tempDb();
  await makeTable(t, 3, 10);
  await addColumns(ref(t.dir), { y: udfRef("doubled") });
  const r = await backfill(ref(t.dir), "y", { where: "id < 5 OR id >= 28", planOnly: true });
  const p = r.plan!;
  assert.equal(p.rowsPlanned, 7);
  assert.equal(p.selection, "id < 5 OR id >= 28 (matches 7 of the 30 rows to scan)");
  assert.deepEqual(p.fragments.map((f) => [f.id, f.liveRows, f.rowsToCompute]), [[0, 10, 5], [1, 10, 0], [2, 10, 2]]);
  // The count is of the pinned version: rows added later are not counted; the run computes what the plan said.
  const done = await backfill(ref(t.dir), "y", { where: "id < 5 OR id >= 28" });
  assert.equal(done.plan!.rowsPlanned, 7);
  assert.equal(done.metrics.rowsComputed, 7);
});

test("a re-run's plan counts the rows still null, not every row of their fragments", async () => {
  await using t = await tempDb();
  const table = await makeTable(t, 2, 10);
  await addColumns(ref(t.dir), { y: udfRef("doubled") });
  await backfill(ref(t.dir), "y", { where: "id < 3" });
  // The where run left rows null in fragment 0 and all of fragment 1; a plain run plans their null rows.
  await table.add(rows(20, 10));
  const p = (await backfill(ref(t.dir), "y", { planOnly: true })).plan!;
  assert.equal(p.selection, "rows not yet computed");
  const byId = new Map(p.fragments.map((f) => [f.id, f.rowsToCompute]));
  assert.equal(byId.get(0), 7, "fragment 0: the 7 rows the where left null");
  assert.equal(p.rowsPlanned, 27);
});

test("with many fragments the plan counts once per selection", async () => {
  await using t = await tempDb();
  await makeTable(t, 66, 2);
  await addColumns(ref(t.dir), { y: udfRef("doubled") });
  const p = (await backfill(ref(t.dir), "y", { where: "id % 10 = 0", planOnly: true })).plan!;
  assert.equal(p.fragmentsToWrite, 66);
  assert.equal(p.rowsPlanned, 14);
  assert.match(p.selection, /matches 14 of the 132 rows to scan/);
});
