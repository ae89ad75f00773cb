import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import * as path from "node:path";
import { arrow } from "../../src/arrow.ts";
import type { ArrowNs, LanceNs } from "../../src/arrow.ts";
import { addColumns, alterColumns, getJob, isBackfillError } from "../../src/index.ts";
import { createView, listViews, readView } from "../../src/views/view.ts";
import { syncView } from "../../src/views/sync.ts";
import { refreshView, refreshViewAsync } from "../../src/views/refresh.ts";
import { REPO, tempDb, udfRef, type TempDb } from "../helpers.ts";

const STABLE = { storageOptions: { new_table_enable_stable_row_ids: "true" } } as never;

/** Rows id start..start+n-1: id int64, x float64 (= id), s utf8, other int64 (never selected). */
function src(start: number, n: number): ArrowNs.Table {
  const ids = Array.from({ length: n }, (_, i) => BigInt(start + i));
  return new arrow.Table({
    id: arrow.vectorFromArray(ids, new arrow.Int64()),
    x: arrow.vectorFromArray(ids.map(Number), new arrow.Float64()),
    s: arrow.vectorFromArray(ids.map((i) => `s${i}`), new arrow.Utf8()),
    other: arrow.vectorFromArray(ids.map(() => 0n), new arrow.Int64()),
  });
}

async function makeSource(t: TempDb, n = 40, name = "src"): Promise<LanceNs.Table> {
  return t.db.createTable(name, src(0, n), STABLE);
}

type Row = Record<string, unknown>;
async function rowsOf(t: TempDb, name: string, columns: string[], where?: string, version?: number): Promise<Row[]> {
  const table = await t.open(name);
  if (version !== undefined) await table.checkout(version);
  let q = table.query().select(columns);
  if (where !== undefined) q = q.where(where);
  const out = (await q.toArray()).map((r) => Object.fromEntries(columns.map((c) => [c, (r as Row)[c]])));
  return out.sort((a, b) => (a.id as bigint) < (b.id as bigint) ? -1 : 1);
}

/** The view's rows must be the filtered projection of the source, with dbl = 2x. */
async function assertViewMatches(t: TempDb, view: string, where: string, version?: number): Promise<void> {
  const expected = await rowsOf(t, "src", ["id", "x", "s"], where, version);
  const got = await rowsOf(t, view, ["id", "x", "s", "dbl"]);
  assert.deepEqual(got.map(({ dbl: _d, ...r }) => r), expected);
  for (const r of got) assert.equal(r.dbl, (r.x as number) * 2, `dbl of id ${r.id}`);
}

test("create + refresh, then incremental refresh: adds, deletes, updates exactly; unrelated writes recompute nothing", async () => {
  await using t = await tempDb();
  const source = await makeSource(t);
  const v0 = await source.version();
  const where = "x >= 4";
  const info = await createView(t.dir, "v", { source: "src", where, select: ["id", "x", "s"], udfs: { dbl: udfRef("doubled") } });
  assert.equal(info.watermark, null);
  const viewSchema = await (await t.open("v")).schema();
  assert.deepEqual(viewSchema.fields.map((f) => f.name), ["__source_row_id", "__input_hash", "id", "x", "s", "dbl"]);
  assert.equal(String(viewSchema.fields.find((f) => f.name === "x")!.type), "Float64");

  const first = await refreshView(t.dir, "v", { concurrency: 2 });
  assert.deepEqual({ ...first, jobs: undefined, jobId: undefined }, { status: "finished", jobId: undefined, sourceVersion: v0, rowsAdded: 36, rowsDeleted: 0, rowsUpdated: 0, rowsComputed: 36, jobs: undefined });
  await assertViewMatches(t, "v", where);
  assert.equal((await readView(t.dir, "v")).watermark!.sourceVersion, v0);
  const views = await listViews(t.dir);
  assert.deepEqual(views.map((v) => [v.name, v.definition.source, v.definition.where, v.watermark?.sourceVersion]), [["v", "src", where, v0]]);

  // Nothing changed: nothing to do.
  const idle = await refreshView(t.dir, "v");
  assert.deepEqual([idle.rowsAdded, idle.rowsDeleted, idle.rowsUpdated, idle.rowsComputed], [0, 0, 0, 0]);

  const rowIdOf = async (id: number) => (await (await t.open("v")).query().withRowId().where(`id = ${id}`).toArray())[0]!._rowid as bigint;
  const viewRowId10 = await rowIdOf(10);
  await source.add(src(40, 6)); // +6 (x >= 4)
  await source.update({ where: "id IN (10, 11)", values: { x: 1000 } } as never); // 2 updated
  await source.update({ where: "id = 5", values: { x: 1 } } as never); // leaves the filter: -1
  await source.update({ where: "id = 2", values: { x: 50 } } as never); // enters the filter: +1
  await source.update({ where: "id >= 20 AND id <= 25", values: { other: 7 } } as never); // unrelated: nothing
  await source.delete("id IN (30, 31, 32)"); // -3
  const second = await refreshView(t.dir, "v", { concurrency: 2 });
  assert.equal(second.sourceVersion, await source.version());
  assert.deepEqual([second.rowsAdded, second.rowsDeleted, second.rowsUpdated, second.rowsComputed], [7, 4, 2, 9]);
  await assertViewMatches(t, "v", where);
  assert.notEqual(await rowIdOf(10), viewRowId10, "an updated source row's view row is replaced (appended anew, its UDF value recomputed)");

  // Backwards to the first version, then forwards again.
  const back = await refreshView(t.dir, "v", { srcVersion: v0 });
  assert.equal(back.sourceVersion, v0);
  assert.deepEqual([back.rowsAdded, back.rowsDeleted, back.rowsUpdated], [4, 7, 2]);
  assert.equal(back.rowsComputed, 6);
  await assertViewMatches(t, "v", where, v0);
  assert.equal((await readView(t.dir, "v")).watermark!.sourceVersion, v0);
  const fwd = await refreshView(t.dir, "v");
  assert.deepEqual([fwd.rowsAdded, fwd.rowsDeleted, fwd.rowsUpdated, fwd.rowsComputed], [7, 4, 2, 9]);
  await assertViewMatches(t, "v", where);
});

test("a view of a view refreshes from its source view", async () => {
  await using t = await tempDb();
  const source = await makeSource(t);
  await createView(t.dir, "v", { source: "src", where: "x >= 4", select: ["id", "x", "s"], udfs: { dbl: udfRef("doubled") } });
  await refreshView(t.dir, "v");
  await createView(t.dir, "vv", { source: "v", where: "dbl > 40", select: ["id", "x", "dbl"], udfs: { dbl2: udfRef("doubled") } });
  const r = await refreshView(t.dir, "vv");
  assert.equal(r.rowsAdded, 19); // x in 21..39
  const check = async () => {
    const expected = (await rowsOf(t, "v", ["id", "x", "dbl"], "dbl > 40"));
    const got = await rowsOf(t, "vv", ["id", "x", "dbl", "dbl2"]);
    assert.deepEqual(got.map(({ dbl2: _d, ...x }) => x), expected);
    for (const g of got) assert.equal(g.dbl2, (g.x as number) * 2);
  };
  await check();
  await source.delete("id = 30");
  await source.update({ where: "id = 3", values: { x: 100 } } as never);
  await refreshView(t.dir, "v");
  const r2 = await refreshView(t.dir, "vv");
  assert.deepEqual([r2.rowsAdded, r2.rowsDeleted, r2.rowsUpdated], [1, 1, 0]);
  await check();
  assert.deepEqual((await listViews(t.dir)).map((v) => v.name), ["v", "vv"]);
});

test("shuffleSeed appends new rows in a deterministic pseudo-random order of source id", async () => {
  await using t = await tempDb();
  await makeSource(t, 200);
  for (const name of ["a", "b"]) {
    await createView(t.dir, name, { source: "src", select: ["id", "s"], shuffleSeed: 42 });
    const r = await syncView(t.dir, name);
    assert.equal(r.rowsAdded, 200);
  }
  const order = async (name: string) => (await (await t.open(name)).query().select(["id", "s"]).toArray()).map((r) => [r.id, r.s]);
  const a = await order("a");
  assert.deepEqual(a, await order("b"));
  const ids = a.map(([id]) => id as bigint);
  assert.notDeepEqual(ids, [...ids].sort((x, y) => (x < y ? -1 : 1)), "not in source order");
  for (const [id, s] of a) assert.equal(s, `s${id}`);
  assert.deepEqual([...ids].sort((x, y) => (x < y ? -1 : 1)), Array.from({ length: 200 }, (_, i) => BigInt(i)));
});

test("bad input: each a clear error code, nothing written", async () => {
  await using t = await tempDb();
  await makeSource(t);
  await t.db.createTable("plain", src(0, 5));
  const tablesBefore = (await t.db.tableNames()).sort();
  const cases: [string, Parameters<typeof createView>[2], string, RegExp, string?][] = [
    ["unknown source", { source: "nope", select: ["id"] }, "TABLE_NOT_FOUND", /table nope does not exist/],
    ["unknown column", { source: "src", select: ["id", "zz"] }, "COLUMN_NOT_FOUND", /selected column zz is not a column of source table src; its columns are id, x, s, other/],
    ["where that does not parse", { source: "src", select: ["id"], where: "x >>> 3" }, "WHERE_INVALID", /where "x >>> 3" is not a valid filter on source table src/],
    ["where on an unknown column", { source: "src", select: ["id"], where: "zz > 3" }, "WHERE_INVALID", /No field named zz/],
    ["name collision", { source: "src", select: ["id"] }, "TABLE_EXISTS", /view name plain is taken/, "plain"],
    ["no stable row ids", { source: "plain", select: ["id"] }, "TABLE_UNSUPPORTED", /source table plain has no stable row ids.*new_table_enable_stable_row_ids: "true"/],
    ["reserved column", { source: "src", select: ["__source_row_id"] }, "CONFIG_INVALID", /cannot name __source_row_id/],
    ["empty select", { source: "src", select: [] }, "CONFIG_INVALID", /options.select must be a non-empty list/],
    ["bad seed", { source: "src", select: ["id"], shuffleSeed: -1 }, "CONFIG_INVALID", /shuffleSeed must be a non-negative integer \(got -1\)/],
    ["UDF input not selected", { source: "src", select: ["id"], udfs: { dbl: udfRef("doubled") } }, "INPUT_COLUMN_NOT_FOUND", /needs input column\(s\) x.*must be among its selected columns \(select: id\)/],
    ["UDF column clashes with a selected one", { source: "src", select: ["id", "x"], udfs: { x: udfRef("doubled") } }, "COLUMN_EXISTS", /UDF column x clashes/],
  ];
  for (const [label, options, code, message, name = "v"] of cases) {
    await assert.rejects(createView(t.dir, name, options), (e: unknown) => {
      assert.ok(isBackfillError(e, code as never), `${label}: ${String(e)}`);
      assert.match((e as Error).message, message, label);
      return true;
    });
    assert.deepEqual((await t.db.tableNames()).sort(), tablesBefore, `${label}: no table written`);
    assert.ok(!existsSync(path.join(t.dir, "_lancet", name)) || name === "plain", `${label}: no Lancet store written`);
  }
  await assert.rejects(readView(t.dir, "src"), (e: unknown) => isBackfillError(e, "TABLE_UNSUPPORTED") && /table src is not a view/.test((e as Error).message));
  await assert.rejects(refreshView(t.dir, "src"), (e: unknown) => isBackfillError(e, "TABLE_UNSUPPORTED"));
  await assert.rejects(refreshView(t.dir, "nope"), (e: unknown) => isBackfillError(e, "TABLE_NOT_FOUND"));
  await createView(t.dir, "v", { source: "src", select: ["id"] });
  await assert.rejects(syncView(t.dir, "v", { srcVersion: 99 }), (e: unknown) => isBackfillError(e, "CONFIG_INVALID") && /srcVersion must be a version of source table src, an integer from 1 to \d+ \(got 99\)/.test((e as Error).message));
  assert.equal((await t.open("v")).countRows !== undefined && (await (await t.open("v")).countRows()), 0);
  assert.equal((await readView(t.dir, "v")).watermark, null);
  assert.deepEqual((await listViews(t.dir)).map((v) => v.name), ["v"]);
});

test("a refresh that died part-way is finished by re-running it: no duplicate or missing rows, finished work not redone", async () => {
  await using t = await tempDb();
  const source = await makeSource(t);
  const where = "x >= 4";
  await createView(t.dir, "v", { source: "src", where, select: ["id", "x", "s"], udfs: { dbl: udfRef("doubled") } });
  await refreshView(t.dir, "v");
  const indices = await (await t.open("v")).listIndices();
  assert.ok(indices.some((ix) => ix.indexType === "BTree" && ix.columns.includes("__source_row_id")), JSON.stringify(indices));

  await source.add(src(40, 3));
  await source.update({ where: "id = 10", values: { x: 500 } } as never);
  await source.delete("id IN (20, 21)");
  // A crash after the delete step: the view already lost the deleted rows, nothing else happened.
  await (await t.open("v")).delete("__source_row_id IN (20, 21)");
  // A crash after the row sync, before any UDF value was computed.
  const synced = await syncView(t.dir, "v");
  assert.deepEqual([synced.rowsAdded, synced.rowsDeleted, synced.rowsUpdated], [3, 0, 1]);
  const nulls = await (await t.open("v")).countRows("dbl IS NULL");
  assert.equal(nulls, 4);
  const again = await refreshView(t.dir, "v");
  assert.deepEqual([again.rowsAdded, again.rowsDeleted, again.rowsUpdated, again.rowsComputed], [0, 0, 0, 4]);
  await assertViewMatches(t, "v", where);
  assert.equal(await (await t.open("v")).countRows(), 36 + 3 - 2);
});

test("a new UDF version of a view column recomputes it; a column added to a view with addColumns is filled by the refresh", async () => {
  await using t = await tempDb();
  const source = await makeSource(t, 20);
  await createView(t.dir, "v", { source: "src", select: ["id", "x"], udfs: { dbl: udfRef("doubledV1") } });
  assert.equal((await refreshView(t.dir, "v")).rowsComputed, 20);
  await alterColumns({ db: t.dir, table: "v" }, { dbl: udfRef("doubledV2") });
  await addColumns({ db: t.dir, table: "v" }, { f: udfRef("asFloat32") });
  await source.update({ where: "id = 3", values: { x: 100 } } as never);
  const r = await refreshView(t.dir, "v");
  assert.deepEqual([r.rowsUpdated, r.rowsComputed, r.jobs.map((j) => j.column)], [1, 40, ["dbl", "f"]]);
  for (const row of await rowsOf(t, "v", ["id", "x", "dbl", "f"])) {
    assert.equal(row.dbl, (row.x as number) * 3);
    assert.equal(row.f, (row.x as number) + 0.25);
  }
});

test("lists, structs, fixed-size lists and timestamps are copied as they are, shuffled or not, and hash stably", async () => {
  await using t = await tempDb();
  const ids = Array.from({ length: 20 }, (_, i) => BigInt(i));
  const listT = new arrow.List(new arrow.Field("item", new arrow.Float32(), true));
  const structT = new arrow.Struct([new arrow.Field("a", new arrow.Int32(), true), new arrow.Field("b", new arrow.Utf8(), true)]);
  const fslT = new arrow.FixedSizeList(2, new arrow.Field("item", new arrow.Float32(), true));
  const data = new arrow.Table({
    id: arrow.vectorFromArray(ids, new arrow.Int64()),
    l: arrow.vectorFromArray(ids.map((i) => (Number(i) % 3 === 0 ? null : [Number(i), 0.5])), listT),
    st: arrow.vectorFromArray(ids.map((i) => ({ a: Number(i), b: `b${i}` })), structT),
    v: arrow.vectorFromArray(ids.map((i) => [Number(i), 1]), fslT),
    ts: arrow.vectorFromArray(ids.map((i) => new Date(1e12 + Number(i))), new arrow.TimestampMillisecond()),
  });
  await t.db.createTable("src", data, STABLE);
  const cols = ["id", "l", "st", "v", "ts"];
  const json = (r: Row) => JSON.stringify(r, (_k, x: unknown) => (typeof x === "bigint" ? String(x) : x));
  const expected = (await rowsOf(t, "src", cols)).map((r) => json(Object.fromEntries(cols.map((c) => [c, (r[c] as { toJSON?: () => unknown })?.toJSON?.() ?? r[c]]))));
  for (const [name, seed] of [["plain", undefined], ["shuffled", 7]] as const) {
    await createView(t.dir, name, { source: "src", select: cols, ...(seed === undefined ? {} : { shuffleSeed: seed }) });
    assert.equal((await syncView(t.dir, name)).rowsAdded, 20);
    const got = (await rowsOf(t, name, cols)).map((r) => json(Object.fromEntries(cols.map((c) => [c, (r[c] as { toJSON?: () => unknown })?.toJSON?.() ?? r[c]]))));
    assert.deepEqual(got, expected, name);
    assert.deepEqual(await syncView(t.dir, name), { sourceVersion: 1, rowsAdded: 0, rowsDeleted: 0, rowsUpdated: 0, read: "changes" }, `${name}: nothing changed`);
    assert.deepEqual(await syncView(t.dir, name, { full: true }), { sourceVersion: 1, rowsAdded: 0, rowsDeleted: 0, rowsUpdated: 0, read: "all" }, `${name}: the copied values hash as the source's`);
  }
});

test("two refreshes of one view never run at once: the second is refused with TABLE_BUSY; the view ends complete and without duplicates", async () => {
  await using t = await tempDb();
  await makeSource(t, 400);
  await createView(t.dir, "v", { source: "src", select: ["id", "x"], udfs: { slow: udfRef("slowBatch") } });
  const outcomes = await Promise.allSettled([refreshView(t.dir, "v", { concurrency: 1 }), refreshView(t.dir, "v", { concurrency: 1 })]);
  const refused = outcomes.filter((o) => o.status === "rejected");
  assert.equal(refused.length, 1, JSON.stringify(outcomes.map((o) => o.status)));
  const reason = (refused[0] as PromiseRejectedResult).reason as Error;
  assert.ok(isBackfillError(reason, "TABLE_BUSY") && /view v is being refreshed by another process/.test(reason.message), String(reason));
  const ids = (await rowsOf(t, "v", ["id"])).map((r) => Number(r.id));
  assert.deepEqual(ids, Array.from({ length: 400 }, (_, i) => i), "every source row once");
  // The lock is released: a later refresh runs (and has nothing to do).
  const again = await refreshView(t.dir, "v");
  assert.deepEqual([again.rowsAdded, again.rowsDeleted, again.rowsUpdated, again.rowsComputed], [0, 0, 0, 0]);
});

test("a refresh is a job: refreshViewAsync gives a handle; its record (kind refresh) is in the jobs table with the sync's counts, each UDF column's backfill job, events and summed metrics; it can be cancelled", async () => {
  await using t = await tempDb();
  await makeSource(t, 300);
  await createView(t.dir, "v", { source: "src", select: ["id", "x"], udfs: { dbl: udfRef("doubled"), slow: udfRef("slowBatch") } });
  const job = refreshViewAsync(t.dir, "v", { concurrency: 1 });
  const rec = await job.wait();
  assert.equal(rec.kind, "refresh");
  assert.equal(rec.status, "finished");
  assert.equal(rec.refresh!.rowsAdded, 300);
  assert.deepEqual(rec.refresh!.columnJobs.map((j) => [j.column, j.status]), [["dbl", "finished"], ["slow", "finished"]]);
  assert.equal(rec.metrics.rowsComputed, 600, "both columns' values, summed");
  assert.deepEqual(rec.events.map((e) => e.type).filter((x) => ["started", "synced", "column", "finished"].includes(x)), ["started", "synced", "column", "column", "finished"]);
  const stored = await getJob(t.dir, job.id);
  assert.equal(stored.kind, "refresh");
  assert.equal(stored.status, "finished");
  for (const c of rec.refresh!.columnJobs) assert.equal((await getJob(t.dir, c.jobId)).status, "finished");
  // Cancelled while its slow column computes: the refresh ends cancelled; a re-run finishes the view.
  const source = await t.open("src");
  await source.add(src(1000, 400) as never);
  const second = refreshViewAsync(t.dir, "v", { concurrency: 1, checkpointSize: 50 });
  for (let i = 0; i < 500 && !second.record().events.some((e) => e.type === "column"); i++) await new Promise((r) => setTimeout(r, 20));
  await second.cancel();
  assert.equal(second.status(), "cancelled");
  const third = await refreshView(t.dir, "v");
  assert.equal(third.rowsAdded, 0, "the cancelled refresh's row sync stands");
  const nulls = await (await t.open("v")).countRows("slow IS NULL OR dbl IS NULL");
  assert.equal(nulls, 0, "the re-run computed what the cancel left");
});

test("kill -9 of a refresh mid-way (a real process): a re-run finishes it without duplicate or missing rows, and checkpointed work is not recomputed", async () => {
  await using t = await tempDb();
  await makeSource(t, 600);
  await createView(t.dir, "v", { source: "src", select: ["id", "x"], udfs: { slow: udfRef("slowBatch") } });
  const { spawn } = await import("node:child_process");
  const { readdirSync } = await import("node:fs");
  const child = spawn(process.execPath, [path.join(REPO, "bin/lancet.mjs"), "refresh", "--db", t.dir, "--view", "v", "--concurrency", "1", "--checkpoint-size", "50"], { stdio: "ignore" });
  const exited = new Promise((r) => child.on("exit", r));
  // Kill it once some of the UDF column's batches are checkpointed.
  const batches = (): number => {
    try {
      return readdirSync(path.join(t.dir, "_lancet", "v", "ckp", "batches", "slow"), { recursive: true }).filter((f) => String(f).endsWith(".arrow")).length;
    } catch {
      return 0;
    }
  };
  for (let i = 0; i < 1500 && batches() < 3; i++) await new Promise((r) => setTimeout(r, 20));
  child.kill("SIGKILL");
  await exited;
  const secured = batches();
  assert.ok(secured >= 3, `killed with ${secured} batches checkpointed`);
  const r = await refreshView(t.dir, "v");
  const ids = (await rowsOf(t, "v", ["id"])).map((x) => Number(x.id));
  assert.deepEqual(ids, Array.from({ length: 600 }, (_, i) => i), "every source row once");
  assert.equal(await (await t.open("v")).countRows("slow IS NULL"), 0);
  assert.ok(r.rowsComputed <= 600 - secured * 50 + 50, `the re-run computed ${r.rowsComputed} of 600 values (${secured} batches of 50 were checkpointed)`);
});

test("a refresh killed in the middle of its row sync (LANCET_FAILPOINTS=view.mid-sync:kill, with changes of every kind): the re-run converges, every row once, values correct", async () => {
  await using t = await tempDb();
  const source = await makeSource(t, 200);
  await createView(t.dir, "v", { source: "src", select: ["id", "x", "s"], where: "x >= 4", udfs: { dbl: udfRef("doubled") } });
  await refreshView(t.dir, "v");
  await source.add(src(200, 30));
  await source.update({ where: "id IN (10, 11, 12)", values: { x: 500 } } as never);
  await source.delete("id >= 100 AND id < 120");
  const { spawnSync } = await import("node:child_process");
  const r = spawnSync(process.execPath, [path.join(REPO, "bin/lancet.mjs"), "refresh", "--db", t.dir, "--view", "v"], { env: { ...process.env, LANCET_FAILPOINTS: "view.mid-sync:kill" }, encoding: "utf8" });
  assert.equal(r.signal, "SIGKILL", r.stderr);
  const again = await refreshView(t.dir, "v");
  assert.equal(again.status, "finished");
  await assertViewMatches(t, "v", "x >= 4");
  const ids = (await rowsOf(t, "v", ["id"])).map((x) => Number(x.id));
  assert.equal(new Set(ids).size, ids.length, "no duplicate rows");
});
