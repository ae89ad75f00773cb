import { test } from "node:test";
import assert from "node:assert/strict";
import { addColumns, backfill } from "../../src/index.ts";
import { fragmentLayout, makeTable, readAll, tempDb, udfRef } from "../helpers.ts";

// Expected value per output column, from the row's inputs (mirrors test/fixtures/udfs.ts).
const expected: Record<string, (r: { id: bigint; x: number | null; s: string | null }) => unknown> = {
  c_int32: (r) => Number(r.id % 1000n) - 500,
  c_int64: (r) => r.id * 1_000_000_007n,
  c_float32: (r) => (r.x === null ? null : Math.fround(r.x + 0.25)),
  c_float64: (r) => (r.x === null ? null : r.x * 2),
  c_bool: (r) => r.id % 2n === 0n,
  c_utf8: (r) => (r.s === null ? null : r.s.toUpperCase()),
  c_binary: (r) => (r.s === null ? null : Array.from(new TextEncoder().encode(r.s))),
  c_list: (r) => (r.x === null ? null : Array.from({ length: (r.x * 2) % 4 }, (_, i) => i + 0.5)),
  c_embedding: (r) => [0, 1, 2, 3].map((k) => Number(r.id) + k),
  c_struct: (r) => ({ n: Number(r.id), label: r.s }),
  c_batch: (r) => (r.x === null ? null : r.x * 2),
  c_embedding_nulls: (r) => (r.x === null ? null : [r.x, r.x + 1]),
};

test("every output type is computed correctly, with null inputs, deleted rows and several fragments", async () => {
  await using t = await tempDb();
  const table = await makeTable(t, 3, 400);
  await table.delete("id % 50 = 7 OR id = 0");
  await addColumns({ db: t.dir, table: "t" }, {
    c_int32: udfRef("asInt32"),
    c_int64: udfRef("asInt64"),
    c_float32: udfRef("asFloat32"),
    c_float64: udfRef("doubled"),
    c_bool: udfRef("asBool"),
    c_utf8: udfRef("asUtf8"),
    c_binary: udfRef("asBinary"),
    c_list: udfRef("asList"),
    c_embedding: udfRef("asEmbedding"),
    c_struct: udfRef("asStruct"),
    c_batch: udfRef("batchDoubled"),
    c_embedding_nulls: udfRef("embeddingWithNulls"),
  });
  const layoutBefore = await fragmentLayout(t);
  const before = await readAll(t, ["id", "x", "s"]);
  for (const column of Object.keys(expected)) {
    const r = await backfill({ db: t.dir, table: "t" }, column, { concurrency: 2, checkpointSize: 97, maxCheckpointSize: 300 });
    assert.equal(r.status, "finished");
    assert.equal(r.metrics.rowsComputed, before.length, `${column}: every live row computed once`);
  }
  const after = await readAll(t, ["id", "x", "s", ...Object.keys(expected)]);
  assert.equal(after.length, before.length);
  for (const row of after) {
    const inputs = row as { id: bigint; x: number | null; s: string | null };
    for (const [column, f] of Object.entries(expected)) {
      let got = row[column];
      if (got instanceof Uint8Array) got = Array.from(got);
      assert.deepEqual(got, f(inputs), `${column} of id ${inputs.id}`);
    }
  }
  // Other columns and the fragment layout are unchanged.
  assert.deepEqual(
    after.map((r) => [r.id, r.x, r.s, r._rowaddr]),
    before.map((r) => [r.id, r.x, r.s, r._rowaddr]),
  );
  assert.deepEqual(await fragmentLayout(t), layoutBefore);
});
