// One conformance suite, run against both committers: the DataReplacement graft and mergeInsert.
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { arrow, lancedb } from "../../src/arrow.ts";
import { addColumns, backfill, backfillAsync } from "../../src/index.ts";
import * as path from "node:path";
import { readManifest } from "../../src/read/manifest.ts";
import { fragmentLayout, everyVersionReadable, makeTable, readAll, REPO, rows, tempDb, udfRef } from "../helpers.ts";

const ref = (dir: string) => ({ db: dir, table: "t" });

const TYPES: Record<string, [string, (r: { id: bigint; x: number | null; s: string | null }) => unknown, string?]> = {
  c_int32: ["asInt32", (r) => Number(r.id % 1000n) - 500],
  c_int64: ["asInt64", (r) => r.id * 1_000_000_007n],
  c_float32: ["asFloat32", (r) => (r.x === null ? null : Math.fround(r.x + 0.25))],
  c_float64: ["doubled", (r) => (r.x === null ? null : r.x * 2)],
  c_bool: ["asBool", (r) => r.id % 2n === 0n],
  c_utf8: ["asUtf8", (r) => (r.s === null ? null : r.s.toUpperCase())],
  c_binary: ["asBinary", (r) => (r.s === null ? null : Array.from(new TextEncoder().encode(r.s)))],
  c_list: ["asList", (r) => (r.x === null ? null : Array.from({ length: (r.x * 2) % 4 }, (_, i) => i + 0.5))],
  c_embedding: ["embeddingWithNulls", (r) => (r.x === null ? null : [r.x, r.x + 1])],
  c_struct: ["asStruct", (r) => ({ n: Number(r.id), label: r.s })],
  c_struct64: ["asStruct64", (r) => ({ big: r.id * 4_000_000_000n, tags: r.s === null ? null : [r.s, `${r.s}!`], label: r.s }), "nested.ts"],
  c_list_struct: ["asListOfStructs", (r) => Array.from({ length: Number(r.id % 3n) }, (_, i) => ({ k: r.id + BigInt(i), v: i / 2 })), "nested.ts"],
  c_date: ["asDate", (r) => Date.UTC(2020, 0, 1) + Number(r.id) * 86_400_000, "nested.ts"],
};

for (const mode of ["graft", "merge"] as const) {
  describe(`Committer conformance: ${mode}`, () => {
    test("every output type, null inputs, deleted rows, several fragments; other columns, fragment ids and every version intact", async () => {
      await using t = await tempDb();
      const table = await makeTable(t, 3, 200);
      await table.delete("id % 40 = 9 OR id = 0");
      await addColumns(ref(t.dir), Object.fromEntries(Object.entries(TYPES).map(([c, [f, , file]]) => [c, udfRef(f, file)])));
      const layout = await fragmentLayout(t);
      const before = await readAll(t, ["id", "x", "s"]);
      for (const column of Object.keys(TYPES)) {
        const r = await backfill(ref(t.dir), column, { commitMode: mode, commitGranularity: 2, checkpointSize: 70, maxCheckpointSize: 70 });
        assert.equal(r.metrics.rowsComputed, before.length);
      }
      const after = await readAll(t, ["id", "x", "s", ...Object.keys(TYPES)]);
      for (const row of after) {
        for (const [column, [, f]] of Object.entries(TYPES)) {
          let got = row[column];
          if (got instanceof Uint8Array) got = Array.from(got);
          assert.deepEqual(got, f(row as never), `${column} of id ${String(row.id)}`);
        }
      }
      assert.deepEqual(after.map((r) => [r.id, r.x, r.s, r._rowaddr]), before.map((r) => [r.id, r.x, r.s, r._rowaddr]));
      assert.deepEqual(await fragmentLayout(t), layout);
      await everyVersionReadable(t);
    });

    test("several fragments per commit; commits every commitGranularity fragments; incremental runs", async () => {
      await using t = await tempDb();
      const table = await makeTable(t, 6, 100);
      await addColumns(ref(t.dir), { y: udfRef("batchDoubled") });
      const seen: number[] = [];
      const r = await backfill(ref(t.dir), "y", {
        commitMode: mode,
        commitGranularity: 3,
        concurrency: 1,
        writerConcurrency: 1,
        onProgress: (p) => {
          if (seen.at(-1) !== p.fragmentsCommitted) seen.push(p.fragmentsCommitted);
        },
      });
      assert.deepEqual(seen, [0, 3, 6]);
      assert.equal(r.metrics.commits, mode === "graft" ? 2 : 2);
      await table.add(rows(600, 50));
      assert.equal((await backfill(ref(t.dir), "y", { commitMode: mode })).metrics.rowsComputed, 50);
      for (const row of await readAll(t, ["x", "y"])) assert.equal(row.y, row.x === null ? null : (row.x as number) * 2);
      await everyVersionReadable(t);
    });

    test("stable row ids: values correct and rows' last-updated version moves to the commit", async () => {
      await using t = await tempDb();
      const table = await t.db.createTable("t", rows(0, 300), { storageOptions: { new_table_enable_stable_row_ids: "true" } } as never);
      await table.add(rows(300, 300));
      await addColumns(ref(t.dir), { y: udfRef("doubled") });
      const before = (await (await t.open()).query().select(["id", "_row_last_updated_at_version"]).toArray()) as { _row_last_updated_at_version: bigint }[];
      const r = await backfill(ref(t.dir), "y", { commitMode: mode });
      const after = (await (await t.open()).query().select(["id", "x", "y", "_row_last_updated_at_version"]).toArray()) as { x: number | null; y: number | null; _row_last_updated_at_version: bigint }[];
      for (const row of after) assert.equal(row.y, row.x === null ? null : row.x * 2);
      const maxBefore = before.reduce((m, x) => (BigInt(x._row_last_updated_at_version) > m ? BigInt(x._row_last_updated_at_version) : m), 0n);
      assert.ok(after.every((x) => BigInt(x._row_last_updated_at_version) > maxBefore), "every row was updated by the backfill's commits");
      assert.ok(after.every((x) => BigInt(x._row_last_updated_at_version) <= BigInt(r.plan!.readVersion + 10)));
      await everyVersionReadable(t);
    });

    test("a concurrent LanceDB writer: both writes survive", async () => {
      await using t = await tempDb();
      await makeTable(t, 6, 1000);
      await addColumns(ref(t.dir), { y: udfRef("slowBatch") });
      const job = backfillAsync(ref(t.dir), "y", { commitMode: mode, concurrency: 2, checkpointSize: 100, commitGranularity: 1 });
      const writer = await (await lancedb.connect(t.dir)).openTable("t");
      for (let i = 0; i < 5; i++) {
        await writer.add(rows(50_000 + i * 20, 20));
        await new Promise((r) => setTimeout(r, 100));
      }
      await job.wait();
      const all = await readAll(t, ["id", "x", "y"]);
      assert.equal(all.length, 6100);
      for (const r of all) if (Number(r.id) < 50_000) assert.equal(r.y, r.x === null ? null : (r.x as number) * 2);
      await everyVersionReadable(t);
    });
  });
}

test("graft mode refuses fragments it cannot write (values already there) with a clear error; auto sends them to mergeInsert", async () => {
  await using t = await tempDb();
  await makeTable(t, 2, 100);
  await addColumns(ref(t.dir), { y: udfRef("doubledV1") });
  await backfill(ref(t.dir), "y", { commitMode: "graft" });
  await assert.rejects(backfill(ref(t.dir), "y", { commitMode: "graft", where: "id < 10" }), /already has a file for column y/);
  const r = await backfill(ref(t.dir), "y", { where: "id < 10" });
  assert.equal(r.metrics.rowsComputed, 0, "the refused run's checkpoints are reused");
  assert.equal(r.metrics.rowsCommitted, 10);
  for (const row of await readAll(t, ["x", "y"])) assert.equal(row.y, row.x === null ? null : (row.x as number) * 2);
  void arrow;
});

test("the default commit mode grafts every output type, nested 64-bit fields included, with no fallback", async () => {
  await using t = await tempDb();
  // Fragments larger than the read-back's head and tail probes (1024 rows each), with deletions.
  const table = await makeTable(t, 2, 2500);
  await table.delete("id % 25 = 3");
  await addColumns(ref(t.dir), Object.fromEntries(Object.entries(TYPES).map(([c, [f, , file]]) => [c, udfRef(f, file)])));
  for (const column of Object.keys(TYPES)) {
    const r = await backfill(ref(t.dir), column);
    assert.deepEqual(r.events.filter((e) => e.type === "commit-fallback"), [], `${column} went through the graft`);
  }
  for (const row of await readAll(t, ["id", "x", "s", ...Object.keys(TYPES)])) {
    for (const [column, [, f]] of Object.entries(TYPES)) {
      const got = row[column] instanceof Uint8Array ? Array.from(row[column] as Uint8Array) : row[column];
      assert.deepEqual(got, f(row as never), `${column} of id ${String(row.id)}`);
    }
  }
});

test("a large column (over 24 MB, with deletions) is handed to LanceDB in pieces and still grafted as one file per fragment", async () => {
  await using t = await tempDb();
  const n = 20_000;
  const table = await t.db.createTable("t", new arrow.Table({ id: arrow.vectorFromArray(BigInt64Array.from({ length: n }, (_, i) => BigInt(i))) }) as never);
  await table.delete("id % 10 = 3");
  await addColumns(ref(t.dir), { e: `${REPO}bench/udfs-embed.ts#embed384` });
  const files = async (): Promise<number[]> => (await readManifest(path.join(t.dir, "t.lance"))).fragments.map((f) => f.files.length);
  const before = await files();
  const r = await backfill(ref(t.dir), "e");
  assert.deepEqual(r.events.filter((e) => e.type === "commit-fallback"), []);
  assert.deepEqual(await files(), before.map((k) => k + 1), "one new data file per fragment");
  const rows = await (await t.open()).query().where("id IN (0, 1, 12, 19999)").select(["id", "e"]).toArray();
  assert.equal(rows.length, 4);
  for (const row of rows) {
    const id = Number(row.id);
    const e = Array.from(row.e.toArray() as Float32Array);
    assert.equal(e.length, 384);
    assert.equal(e[5], Math.fround(((id % 1000) + 5) / 1000), `id ${id}`);
  }
});
