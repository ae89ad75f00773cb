/**
 * The graft writes a fragment from its checkpoint batches piece by piece when they cover its
 * physical rows in order (its column is never whole in the coordinator's memory): the committer is
 * given a source whose `load()` must not be called. A fragment with deleted rows is not contiguous:
 * the graft takes the whole column instead. A backfill end to end gives the same values either way.
 */
import { test } from "node:test";
import { readdirSync } from "node:fs";
import * as path from "node:path";
import assert from "node:assert/strict";
import { arrow } from "../../src/arrow.ts";
import type { ArrowNs } from "../../src/arrow.ts";
import { addColumns, backfill } from "../../src/index.ts";
import { GraftCommitter } from "../../src/commit/graft.ts";
import type { FragmentSource, FragmentValues } from "../../src/commit/committer.ts";
import { silentLogger } from "../../src/log.ts";
import { CheckpointError } from "../../src/errors.ts";
import { resolveTable } from "../../src/table.ts";
import { makeTable, readAll, tempDb, udfRef } from "../helpers.ts";

const ROWS = 30_000;
/** ~1 KB per row: 30 MB in the fragment, more than one append of the temporary table. */
const text = (i: number): string => `${i}:`.padEnd(1000, String.fromCharCode(97 + (i % 26)));

function pieces(fragmentId: number, from: number, to: number, step: number): FragmentValues[] {
  const out: FragmentValues[] = [];
  for (let s = from; s < to; s += step) {
    const e = Math.min(to, s + step);
    const addrs = BigUint64Array.from({ length: e - s }, (_, k) => (BigInt(fragmentId) << 32n) | BigInt(s + k));
    out.push({ fragmentId, rowAddrs: addrs, values: arrow.vectorFromArray(Array.from({ length: e - s }, (_, k) => text(s + k)), new arrow.Utf8()) as ArrowNs.Vector, rowsSkipped: 0 });
  }
  return out;
}

test("a fragment covered in order by its pieces is staged from them (load() is never called) and reads back exactly", async () => {
  await using t = await tempDb();
  await makeTable(t, 1, ROWS);
  await addColumns({ db: t.dir, table: "t" }, { u: udfRef("asUtf8") });
  const ref = resolveTable({ db: t.dir, table: "t" });
  const graft = new GraftCommitter(ref, "u", "utf8", { logger: silentLogger });
  let streamed = 0;
  const src: FragmentSource = {
    fragmentId: 0,
    load: () => Promise.reject(new Error("load() must not be called for a contiguous fragment")),
    stream: async function* () {
      for (const p of pieces(0, 0, ROWS, 1_000)) {
        streamed += p.rowAddrs.length;
        yield p;
      }
    },
  };
  const { staged, refused } = await graft.stageAll([src]);
  assert.deepEqual([...refused], []);
  assert.equal(streamed, ROWS);
  await graft.publishStaged(staged);
  const rows = await readAll(t, ["id", "u"]);
  assert.equal(rows.length, ROWS);
  for (const r of rows) assert.equal(r.u, text(Number(r.id)), `row ${r.id}`);
});

test("pieces that skip a row (or run short) are not contiguous: the graft loads the whole column instead", async () => {
  await using t = await tempDb();
  await makeTable(t, 1, 2_000);
  await addColumns({ db: t.dir, table: "t" }, { u: udfRef("asUtf8") });
  const graft = new GraftCommitter(resolveTable({ db: t.dir, table: "t" }), "u", "utf8", { logger: silentLogger });
  let loads = 0;
  const all = pieces(0, 0, 2_000, 2_000)[0]!;
  const src: FragmentSource = {
    fragmentId: 0,
    load: async () => {
      loads++;
      return all;
    },
    stream: async function* () {
      yield* pieces(0, 0, 500, 500);
      yield* pieces(0, 501, 2_000, 500); // row 500 missing
    },
  };
  const { staged, refused } = await graft.stageAll([src]);
  assert.deepEqual([...refused], []);
  assert.equal(loads, 1);
  await graft.publishStaged(staged);
  const rows = await readAll(t, ["id", "u"]);
  for (const r of rows) assert.equal(r.u, text(Number(r.id)));
});

test("end to end: backfills of a contiguous fragment and of one with deleted rows give the same, exact values", async () => {
  await using t = await tempDb();
  const table = await makeTable(t, 2, 20_000);
  await table.delete("id >= 25000 AND id < 25100"); // fragment 1 has deleted rows
  await addColumns({ db: t.dir, table: "t" }, { d: udfRef("doubled") });
  const r = await backfill({ db: t.dir, table: "t" }, "d", { checkpointSize: 700, maxCheckpointSize: 700 });
  assert.equal(r.status, "finished");
  assert.deepEqual(r.events.filter((e) => e.type === "commit-fallback").map((e) => e.message), []);
  for (const row of await readAll(t, ["x", "d"])) assert.equal(row.d, row.x === null ? null : (row.x as number) * 2);
});

test("a fragment whose checkpoints cannot be read fails the group with their error, and what the group staged is removed (no fallback)", async () => {
  await using t = await tempDb();
  await makeTable(t, 2, 1_000);
  await addColumns({ db: t.dir, table: "t" }, { u: udfRef("asUtf8") });
  const ref = resolveTable({ db: t.dir, table: "t" });
  const graft = new GraftCommitter(ref, "u", "utf8", { logger: silentLogger });
  const good: FragmentSource = { fragmentId: 0, load: () => Promise.reject(new Error("not used")), stream: async function* () { yield* pieces(0, 0, 1_000, 500); } };
  const bad: FragmentSource = {
    fragmentId: 1,
    load: () => Promise.reject(new Error("not used")),
    stream: async function* () {
      yield* pieces(1, 0, 500, 500);
      throw new CheckpointError("fragment 1 is missing checkpoints for rows 500-999");
    },
  };
  const dataFiles = (): string[] => readdirSync(path.join(ref.tableDir, "data")).sort();
  const before = dataFiles();
  await assert.rejects(graft.stageAll([good, bad]), (e: unknown) => e instanceof CheckpointError && /missing checkpoints/.test((e as Error).message));
  assert.deepEqual(dataFiles(), before, "the first fragment's staged file was removed");
});
