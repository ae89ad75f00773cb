// The diagnosis's advice for a waiting UDF follows what its calls showed: a synchronous UDF is told to
// add worker processes, an async one to overlap its calls (issue 11: no async advice for a sync UDF).
import { test } from "node:test";
import assert from "node:assert/strict";
import { addColumns, backfill } from "../../src/index.ts";
import { makeTable, tempDb, udfRef } from "../helpers.ts";

test("a waiting synchronous UDF is told to raise concurrency, an async one intraApplierConcurrency", async () => {
  await using t = await tempDb();
  await makeTable(t, 2, 150);
  await addColumns({ db: t.dir, table: "t" }, { ws: udfRef("sleepsSync", "nested.ts"), wa: udfRef("sleepsAsync", "nested.ts") });
  const sync = await backfill({ db: t.dir, table: "t" }, "ws", { concurrency: 1 });
  assert.match(sync.diagnosis?.hint ?? "", /a synchronous UDF blocks its worker/, JSON.stringify(sync.diagnosis));
  assert.doesNotMatch(sync.diagnosis?.hint ?? "", /async UDF waiting/);
  const async_ = await backfill({ db: t.dir, table: "t" }, "wa", { concurrency: 1 });
  assert.match(async_.diagnosis?.hint ?? "", /an async UDF waiting on I\/O/, JSON.stringify(async_.diagnosis));
});
