import { test } from "node:test";
import assert from "node:assert/strict";
import { addColumns, alterColumns, backfill, columnStatus } from "../../src/index.ts";
import { fragmentLayout, makeTable, readAll, rows, tempDb, udfRef } from "../helpers.ts";

const ref = (dir: string) => ({ db: dir, table: "t" });

test("a re-run computes nothing, appended rows are computed exactly once, a new UDF version recomputes all", async () => {
  await using t = await tempDb();
  const table = await makeTable(t, 4, 500);
  await addColumns(ref(t.dir), { y: udfRef("doubledV1") });
  const first = await backfill(ref(t.dir), "y", { concurrency: 2 });
  assert.equal(first.metrics.rowsComputed, 2000);
  assert.equal(first.metrics.fragmentsCommitted, 4);

  const again = await backfill(ref(t.dir), "y");
  assert.equal(again.metrics.rowsComputed, 0);
  assert.equal(again.metrics.commits, 0);
  assert.equal(again.plan!.fragmentsDone, 4);

  await table.add(rows(2000, 123));
  const layout = await fragmentLayout(t);
  const appended = await backfill(ref(t.dir), "y");
  assert.equal(appended.metrics.rowsComputed, 123);
  assert.deepEqual(await fragmentLayout(t), layout, "fragment ids and rows unchanged");
  for (const r of await readAll(t, ["x", "y"])) assert.equal(r.y, r.x === null ? null : (r.x as number) * 2);

  await alterColumns(ref(t.dir), { y: udfRef("doubledV2") });
  const status = await columnStatus(ref(t.dir));
  assert.equal(status[0]!.binding.version, "v2");
  const recomputed = await backfill(ref(t.dir), "y", { concurrency: 2 });
  assert.equal(recomputed.metrics.rowsComputed, 2123);
  for (const r of await readAll(t, ["x", "y"])) assert.equal(r.y, r.x === null ? null : (r.x as number) * 3);
  assert.equal((await backfill(ref(t.dir), "y")).metrics.rowsComputed, 0);
});

test("rows whose UDF returned null are not recomputed by a re-run", async () => {
  await using t = await tempDb();
  await makeTable(t, 2, 300);
  await addColumns(ref(t.dir), { n: udfRef("nullIfOdd") });
  assert.equal((await backfill(ref(t.dir), "n")).metrics.rowsComputed, 600);
  assert.equal((await backfill(ref(t.dir), "n")).metrics.rowsComputed, 0);
  const all = await readAll(t, ["id", "n"]);
  assert.equal(all.filter((r) => r.n === null).length, 300);
});

test("an explicit where recomputes the matching rows and keeps other rows' values", async () => {
  await using t = await tempDb();
  await makeTable(t, 3, 200);
  await addColumns(ref(t.dir), { y: udfRef("doubledV1") });
  await backfill(ref(t.dir), "y");
  await alterColumns(ref(t.dir), { y: udfRef("doubledV2") });
  const r = await backfill(ref(t.dir), "y", { where: "id < 50 OR id >= 580" });
  assert.equal(r.metrics.rowsComputed, 70);
  for (const row of await readAll(t, ["id", "x", "y"])) {
    const id = Number(row.id);
    const factor = id < 50 || id >= 580 ? 3 : 2;
    assert.equal(row.y, row.x === null ? null : (row.x as number) * factor, `id ${id}`);
  }
  // Same where again: nothing left to do.
  assert.equal((await backfill(ref(t.dir), "y", { where: "id < 50 OR id >= 580" })).metrics.rowsComputed, 0);
});

test("plan-only runs nothing and changes nothing; numFrags runs a pilot that a later run completes", async () => {
  await using t = await tempDb();
  const table = await makeTable(t, 5, 100);
  await addColumns(ref(t.dir), { y: udfRef("doubled") });
  const v = await table.version();
  const plan = await backfill(ref(t.dir), "y", { planOnly: true, taskSize: 40 });
  assert.equal(plan.status, "finished");
  assert.equal(plan.options.planOnly, true);
  assert.equal(plan.plan!.fragmentsToWrite, 5);
  assert.equal(plan.plan!.tasks, 15);
  assert.equal(plan.metrics.rowsComputed, 0);
  await table.checkoutLatest();
  assert.equal(await table.version(), v);

  const pilot = await backfill(ref(t.dir), "y", { numFrags: 2 });
  assert.equal(pilot.metrics.rowsComputed, 200);
  assert.equal(pilot.plan!.fragmentsDeferred, 3);
  const rest = await backfill(ref(t.dir), "y");
  assert.equal(rest.metrics.rowsComputed, 300);
  assert.equal(rest.plan!.fragmentsDone, 2);
});

test("tables with their own unique key and keyless tables both work; commit granularity groups fragments", async () => {
  await using t = await tempDb();
  await makeTable(t, 6, 50);
  await addColumns(ref(t.dir), { y: udfRef("batchDoubled") });
  const seen: number[] = [];
  const r = await backfill(ref(t.dir), "y", {
    commitGranularity: 3,
    concurrency: 1,
    onProgress: (p) => {
      if (seen.at(-1) !== p.fragmentsCommitted) seen.push(p.fragmentsCommitted);
    },
  });
  assert.equal(r.metrics.fragmentsCommitted, 6);
  assert.deepEqual(seen, [0, 3, 6]);
  for (const row of await readAll(t, ["x", "y"])) assert.equal(row.y, row.x === null ? null : (row.x as number) * 2);
});
