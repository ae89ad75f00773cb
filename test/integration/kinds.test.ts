import { test } from "node:test";
import assert from "node:assert/strict";
import { addColumns, backfill, isBackfillError } from "../../src/index.ts";
import { makeTable, readAll, tempDb, udfRef } from "../helpers.ts";

const ref = (dir: string) => ({ db: dir, table: "t" });

test("async UDFs run up to intraApplierConcurrency calls at once per worker", async () => {
  await using t = await tempDb();
  await makeTable(t, 1, 120);
  await addColumns(ref(t.dir), { a: udfRef("asyncMaxInflight"), b: udfRef("asyncMaxInflight") });
  await backfill(ref(t.dir), "a", { concurrency: 1, intraApplierConcurrency: 8, checkpointSize: 120 });
  await backfill(ref(t.dir), "b", { concurrency: 1, intraApplierConcurrency: 1, checkpointSize: 120 });
  const all = await readAll(t, ["a", "b"]);
  const maxA = Math.max(...all.map((r) => r.a as number));
  const maxB = Math.max(...all.map((r) => r.b as number));
  assert.equal(maxA, 8, "8 calls in flight at most, and the limit is reached");
  assert.equal(maxB, 1, "one at a time without intra-applier concurrency");
});

test("stateful UDFs run setup() once per worker process and share its result across batches", async () => {
  await using t = await tempDb();
  await makeTable(t, 4, 100);
  await addColumns(ref(t.dir), { st: udfRef("stateful"), bs: udfRef("batchStateful") });
  await backfill(ref(t.dir), "st", { concurrency: 2, checkpointSize: 10, taskSize: 50 });
  const values = (await readAll(t, ["st"])).map((r) => r.st as string);
  const pids = new Set(values.map((v) => v.split(":")[0]));
  assert.ok(pids.size >= 1 && pids.size <= 2, `at most 2 worker processes (${[...pids].join(", ")})`);
  for (const v of values) assert.equal(v.split(":")[1], "1", "setup ran exactly once in each process");
  await backfill(ref(t.dir), "bs", { concurrency: 2 });
  for (const r of await readAll(t, ["x", "bs"])) assert.equal(r.bs, r.x === null ? null : (r.x as number) * 10);
});

test("UDF modules may use the typed udf() helper from lancet", async () => {
  await using t = await tempDb();
  await makeTable(t, 1, 30);
  const [bound] = await addColumns(ref(t.dir), { y: udfRef("tripled", "typed.ts") });
  assert.equal(bound!.binding.version, "typed-1");
  await backfill(ref(t.dir), "y");
  for (const r of await readAll(t, ["x", "y"])) assert.equal(r.y, r.x === null ? null : (r.x as number) * 3);
});

test("dataType may be an apache-arrow DataType, and batched results may be vectors from the UDF's own Arrow copy", async () => {
  await using t = await tempDb();
  await makeTable(t, 2, 40);
  const [a, b] = await addColumns(ref(t.dir), { a: udfRef("arrowTyped", "arrow-typed.ts"), b: udfRef("arrowEmbedding", "arrow-typed.ts") });
  assert.equal(a!.binding.dataType, "float64");
  assert.equal(b!.binding.dataType, "fixed_size_list<float32>[2]");
  await backfill(ref(t.dir), "a");
  await backfill(ref(t.dir), "b");
  for (const r of await readAll(t, ["x", "a", "b"])) {
    const x = r.x as number | null;
    assert.equal(r.a, x === null ? null : x + 1);
    assert.deepEqual(r.b, x === null ? null : [x, -x]);
  }
});

test("an async UDF failing in batch after batch with several calls in flight fails the job with UDF_FAILED (the sliding window never crashes the worker)", async () => {
  await using t = await tempDb();
  await makeTable(t, 1, 200);
  await addColumns(ref(t.dir), { z: udfRef("asyncAlwaysFails") });
  await assert.rejects(backfill(ref(t.dir), "z", { concurrency: 1, intraApplierConcurrency: 8, checkpointSize: 10, maxCheckpointSize: 10, maxTaskAttempts: 2 }), (e: unknown) => {
    assert.ok(isBackfillError(e, "UDF_FAILED"), `expected UDF_FAILED, got ${(e as { code?: string }).code}: ${(e as Error).message}`);
    assert.match((e as Error).message, /401 Unauthorized/);
    return true;
  });
});
