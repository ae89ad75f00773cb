/**
 * The incremental row sync of a view: moving forwards, it reads only the source rows written or
 * deleted since the last refresh (`read: "changes"`), and must give exactly what comparing every row
 * gives (`full: true`). Where the source's history does not allow that (rows
 * brought back by a restore, the watermark's version cleaned up) it reads every id (`read: "all"`).
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { arrow } from "../../src/arrow.ts";
import type { ArrowNs, LanceNs } from "../../src/arrow.ts";
import { createView } from "../../src/views/view.ts";
import { syncView } from "../../src/views/sync.ts";
import { addColumns, backfill } from "../../src/index.ts";
import { tempDb, udfRef, type TempDb } from "../helpers.ts";

const STABLE = { storageOptions: { new_table_enable_stable_row_ids: "true" } } as never;

/** Rows id start..start+n-1: id int64, x float64 (= id), s utf8, other int64 (never selected). */
function rows(start: number, n: number): ArrowNs.Table {
  const ids = Array.from({ length: n }, (_, i) => BigInt(start + i));
  return new arrow.Table({
    id: arrow.vectorFromArray(ids, new arrow.Int64()),
    x: arrow.vectorFromArray(ids.map(Number), new arrow.Float64()),
    s: arrow.vectorFromArray(ids.map((i) => `s${i}`), new arrow.Utf8()),
    other: arrow.vectorFromArray(ids.map(() => 0n), new arrow.Int64()),
  });
}

/** A source of three fragments (ids 0..299, 100 per fragment). */
async function threeFragments(t: TempDb): Promise<LanceNs.Table> {
  const source = await t.db.createTable("src", rows(0, 100), STABLE);
  await source.add(rows(100, 100));
  await source.add(rows(200, 100));
  return source;
}

type Row = Record<string, unknown>;
async function rowsOf(t: TempDb, name: string, where?: string): Promise<Row[]> {
  let q = (await t.open(name)).query().select(["id", "x", "s"]);
  if (where !== undefined) q = q.where(where);
  const out = (await q.toArray()).map((r) => ({ id: (r as Row).id, x: (r as Row).x, s: (r as Row).s }));
  return out.sort((a, b) => ((a.id as bigint) < (b.id as bigint) ? -1 : 1));
}

async function assertInStep(t: TempDb, view: string, where: string): Promise<void> {
  const got = await rowsOf(t, view);
  assert.equal(new Set(got.map((r) => r.id)).size, got.length, "no duplicate view rows");
  assert.deepEqual(got, await rowsOf(t, "src", where));
}

test("an incremental sync reads only the changes and finds exactly what a full comparison finds: inserts, updates, rows entering and leaving the filter, deletes across fragments, unrelated writes", async () => {
  await using t = await tempDb();
  const source = await threeFragments(t);
  await createView(t.dir, "v", { source: "src", where: "x >= 10", select: ["id", "x", "s"] });
  const first = await syncView(t.dir, "v");
  assert.deepEqual({ ...first, sourceVersion: 0 }, { sourceVersion: 0, rowsAdded: 290, rowsDeleted: 0, rowsUpdated: 0, read: "all" });

  await source.add(rows(300, 25)); // +25 rows, all matching
  await source.update({ where: "id >= 50 AND id < 60", values: { s: "'changed'" } } as never); // 10 updated
  await source.update({ where: "id = 20 OR id = 21", values: { x: "-1" } } as never); // 2 leave the filter
  await source.update({ where: "id = 5", values: { x: "500" } } as never); // 1 enters it
  await source.delete("id >= 95 AND id < 105"); // 10 deleted, across fragments 0 and 1
  await source.delete("id = 250"); // and one in fragment 2
  await source.update({ where: "id >= 100", values: { other: "7" } } as never); // unrelated: nothing to do
  const inc = await syncView(t.dir, "v");
  assert.equal(inc.read, "changes");
  assert.deepEqual({ added: inc.rowsAdded, deleted: inc.rowsDeleted, updated: inc.rowsUpdated }, { added: 26, deleted: 13, updated: 10 });
  await assertInStep(t, "v", "x >= 10");
  assert.deepEqual({ ...(await syncView(t.dir, "v", { full: true })), sourceVersion: 0 }, { sourceVersion: 0, rowsAdded: 0, rowsDeleted: 0, rowsUpdated: 0, read: "all" }, "a full comparison finds nothing left to do");
  assert.deepEqual({ ...(await syncView(t.dir, "v")), sourceVersion: 0 }, { sourceVersion: 0, rowsAdded: 0, rowsDeleted: 0, rowsUpdated: 0, read: "changes" });
});

test("whole fragments deleted and compactions are followed through the manifests (read: changes); a restore or the last refresh's version cleaned up makes it compare every row (read: all); the view ends exact each time", async () => {
  await using t = await tempDb();
  const source = await threeFragments(t);
  await createView(t.dir, "v", { source: "src", select: ["id", "x", "s"] });
  await syncView(t.dir, "v");

  // A whole fragment deleted: it leaves the manifest.
  await source.delete("id >= 200");
  let r = await syncView(t.dir, "v");
  assert.deepEqual([r.read, r.rowsDeleted, r.rowsAdded], ["changes", 100, 0]);
  await assertInStep(t, "v", "id >= 0");

  // A restore of an older version brings those rows back (ids the view no longer holds, written long before).
  const before = await source.version();
  await source.checkout(before - 1);
  await source.restore();
  r = await syncView(t.dir, "v");
  assert.deepEqual([r.read, r.rowsAdded, r.rowsDeleted], ["all", 100, 0]);
  await assertInStep(t, "v", "id >= 0");

  // Compaction (with a delete and an update since the last refresh) rewrites fragments.
  await source.delete("id < 5");
  await source.update({ where: "id = 150", values: { s: "'x'" } } as never);
  const fragmentsBefore = (await source.stats()).fragmentStats.numFragments;
  await source.optimize(); // compacts; keeps recent versions
  assert.ok((await source.stats()).fragmentStats.numFragments < fragmentsBefore, "the compaction rewrote fragments");
  r = await syncView(t.dir, "v");
  assert.deepEqual([r.read, r.rowsDeleted, r.rowsUpdated, r.rowsAdded], ["changes", 5, 1, 0]);
  await assertInStep(t, "v", "id >= 0");

  // The watermark's version cleaned up: a later sync cannot read it and compares every row.
  await source.add(rows(1000, 10));
  await source.optimize({ cleanupOlderThan: new Date(Date.now() + 1000) } as never);
  r = await syncView(t.dir, "v");
  assert.deepEqual([r.read, r.rowsAdded], ["all", 10]);
  await assertInStep(t, "v", "id >= 0");
});

test("a restore of the source to before a column was written (its rows keep their old update versions) is caught: the view follows the restored values", async () => {
  await using t = await tempDb();
  const source = await threeFragments(t);
  await addColumns({ db: t.dir, table: "src" }, { f: udfRef("doubled") });
  const before = await source.version();
  await backfill({ db: t.dir, table: "src" }, "f", { commitMode: "graft" });
  await createView(t.dir, "vf", { source: "src", select: ["id", "f"] });
  await syncView(t.dir, "vf");
  const fOf = async (name: string): Promise<string[]> => ((await (await t.open(name)).query().select(["id", "f"]).toArray()) as { id: bigint; f: number | null }[]).map((r) => `${r.id}:${r.f}`).sort();
  assert.deepEqual(await fOf("vf"), await fOf("src"));
  const s = await t.open("src");
  await s.checkout(before);
  await s.restore(); // f reads NULL again; no row's update version moved
  const r = await syncView(t.dir, "vf");
  assert.equal(r.read, "all");
  assert.equal(r.rowsUpdated, 300);
  assert.deepEqual(await fOf("vf"), await fOf("src"));
});
