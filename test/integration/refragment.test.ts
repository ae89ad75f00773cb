// refragment: indexes kept, other writers' commits never lost, interrupted runs roll forward.
import "../lance-quiet.ts"; // FTS and vector searches of the kept indexes make Lance warn (scoring autoprojection, empty k-means clusters)
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFile, spawn } from "node:child_process";
import { existsSync } from "node:fs";
import * as path from "node:path";
import { promisify } from "node:util";
import { arrow, lancedb } from "../../src/arrow.ts";
import { addColumns, backfill, backfillAsync, isBackfillError, refragment, type RefragmentOptions } from "../../src/index.ts";
import { FIXTURES, REPO, fragmentLayout, readAll, rows, tempDb, udfRef, type TempDb } from "../helpers.ts";

const ref = (db: string) => ({ db, table: "t" });
const sans = (rs: Record<string, unknown>[]) => rs.map(({ _rowaddr: _a, ...r }) => r);
const run = promisify(execFile);

/** Another process changing the table (test/fixtures/mutate.ts). */
async function mutate(dir: string, op: "append" | "update" | "delete"): Promise<{ ok: boolean; error?: string }> {
  const { stdout } = await run(process.execPath, [path.join(FIXTURES, "mutate.ts"), dir, "t", op], { cwd: REPO });
  return JSON.parse(stdout.trim().split("\n").pop()!) as { ok: boolean; error?: string };
}

/** Runs refragment in a child process with LANCET_FAILPOINTS set; resolves with its exit and output. */
function child(dir: string, failpoints: string, maxRows: number): Promise<{ code: number | null; signal: NodeJS.Signals | null; out: string }> {
  const script = `import { refragment } from ${JSON.stringify(path.join(REPO, "src/index.ts"))};
try { await refragment({ db: ${JSON.stringify(dir)}, table: "t" }, { maxRowsPerFragment: ${maxRows} }); console.log(JSON.stringify({ ok: true })); }
catch (e) { console.log(JSON.stringify({ ok: false, code: e.code, message: e.message })); process.exitCode = 3; }`;
  return new Promise((resolve) => {
    const p = spawn(process.execPath, ["--input-type=module", "-e", script], { cwd: REPO, env: { ...process.env, LANCET_FAILPOINTS: failpoints }, stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    p.stdout.on("data", (d: Buffer) => (out += d.toString()));
    p.stderr.on("data", (d: Buffer) => (out += d.toString()));
    p.on("exit", (code, signal) => resolve({ code, signal, out }));
  });
}

/** A table of `n` rows (id, x, s, v: 4-d vector) in `fragments` fragments, with a BTREE on id, FTS on s, IVF_FLAT on v. */
async function indexedTable(t: TempDb, n: number, fragments: number): Promise<void> {
  const withVec = (start: number, k: number) => {
    const v = arrow.vectorFromArray(Array.from({ length: k }, (_, i) => [(start + i) % 13, (start + i) % 7, 1, 2]), new arrow.FixedSizeList(4, new arrow.Field("item", new arrow.Float32(), true)));
    return rows(start, k).assign(new arrow.Table({ v }));
  };
  const per = Math.ceil(n / fragments);
  const table = await t.db.createTable("t", withVec(0, per) as never);
  for (let s = per; s < n; s += per) await table.add(withVec(s, Math.min(per, n - s)) as never);
  await table.createIndex("id", { config: lancedb.Index.btree() });
  await table.createIndex("s", { config: lancedb.Index.fts() });
  await table.createIndex("v", { config: lancedb.Index.ivfFlat({ numPartitions: 2, distanceType: "cosine" }) });
}

/** A table with just id, x, s (what mutate.ts appends), BTREE on id. */
async function plainTable(t: TempDb, n: number, fragments: number): Promise<void> {
  const per = Math.ceil(n / fragments);
  const table = await t.db.createTable("t", rows(0, per));
  for (let s = per; s < n; s += per) await table.add(rows(s, Math.min(per, n - s)));
  await table.createIndex("id", { config: lancedb.Index.btree() });
}

/** Every version of the table opens and reads; returns how many there are. */
async function everyVersionReads(t: TempDb): Promise<number> {
  const versions = await (await t.open()).listVersions();
  for (const v of versions) {
    const h = await (await lancedb.connect(t.dir)).openTable("t", undefined, { version: v.version } as never);
    const n = await h.countRows();
    const data = await h.query().select(["id"]).toArrow();
    assert.equal(data.numRows, n, `version ${v.version} reads ${data.numRows} of ${n} rows`);
  }
  return versions.length;
}

async function indexes(t: TempDb): Promise<string[]> {
  return (await (await t.open()).listIndices()).map((i) => `${i.name}:${i.indexType}:${i.columns.join(",")}`).sort();
}

const journal = (t: TempDb) => path.join(t.dir, "_lancet", "t", "refragment", "journal.json");

test("refragment keeps every index (BTREE, FTS, IVF_FLAT) with its name, type and column, and queries use them", async () => {
  await using t = await tempDb();
  await indexedTable(t, 3000, 1);
  await (await t.open()).delete("id % 10 = 3");
  const before = await readAll(t, ["id", "x", "s"]);
  const ixBefore = await indexes(t);
  assert.equal(ixBefore.length, 3);
  const versionsBefore = (await (await t.open()).listVersions()).length;

  const r = await refragment(ref(t.dir), { maxRowsPerFragment: 500 });
  assert.deepEqual([r.rows, r.fragmentsBefore, r.fragmentsAfter, r.swapVersion, r.resumed, r.conflicts], [2700, 1, 6, r.fromVersion + 1, false, 0]);
  assert.deepEqual([...r.indexes].sort(), ["id_idx", "s_idx", "v_idx"]);
  assert.deepEqual((await fragmentLayout(t)).map((f) => f.physicalRows), [500, 500, 500, 500, 500, 200]);
  assert.deepEqual(sans(await readAll(t, ["id", "x", "s"])), sans(before));
  assert.deepEqual(await indexes(t), ixBefore);
  const table = await t.open();
  for (const ix of await table.listIndices()) assert.equal(ix.numIndexedRows, 2700, ix.name);
  assert.match(await table.query().where("id = 1234").explainPlan(), /ScalarIndexQuery: query=\[id = 1234\]@id_idx\(BTree\)/);
  assert.deepEqual((await table.query().fullTextSearch("w1234").select(["id"]).toArray()).map((x) => Number(x.id)), [1234]);
  assert.equal((await table.search([1, 1, 1, 2]).select(["id"]).limit(5).toArray()).length, 5);
  // Nothing was discarded: every version before is still there and readable, plus the swap and 3 index builds.
  assert.equal(await everyVersionReads(t), versionsBefore + 4);
  assert.ok(!existsSync(journal(t)));
  assert.ok(!existsSync(path.join(t.dir, "_lancet", "t", "refragment", `stage-x`)));
});

test("refragment of a stable-row-id table continues row ids and keeps data", async () => {
  await using t = await tempDb();
  const table = await t.db.createTable("t", rows(0, 2000), { storageOptions: { new_table_enable_stable_row_ids: "true" } } as never);
  await table.delete("id < 10");
  const before = await readAll(t, ["id", "x", "s"]);
  const r = await refragment(ref(t.dir), { maxRowsPerFragment: 700 });
  assert.equal(r.fragmentsAfter, 3);
  assert.deepEqual(sans(await readAll(t, ["id", "x", "s"])), sans(before));
  const ids = (await (await t.open()).query().select(["_rowid"]).toArray()).map((x) => Number(x._rowid));
  assert.equal(new Set(ids).size, 1990);
  assert.ok(Math.min(...ids) >= 2000, "row ids continue after the old ones");
  await (await t.open()).add(rows(5000, 5));
  assert.equal(await (await t.open()).countRows(), 1995);
});

const expectEffect = async (t: TempDb, op: "append" | "update" | "delete", committed: boolean, base: number): Promise<void> => {
  const ids = new Set((await readAll(t, ["id"])).map((r) => Number(r.id)));
  const table = await t.open();
  switch (op) {
    case "append":
      assert.equal(await table.countRows(), base + (committed ? 250 : 0));
      for (const id of [100_000, 100_125, 100_249]) assert.equal(ids.has(id), committed, `appended id ${id}`);
      break;
    case "update":
      assert.equal(await table.countRows(), base);
      assert.equal(await table.countRows("s = 'updated'"), committed ? 10 : 0);
      break;
    case "delete":
      assert.equal(await table.countRows(), base - (committed ? 20 : 0));
      for (const id of [5600, 5619]) assert.equal(ids.has(id), !committed, `deleted id ${id}`);
      break;
  }
};

test("another process appends, updates or deletes during the rewrite: its commits all survive, every version reads (12 runs)", async () => {
  const ops = ["append", "update", "delete"] as const;
  let conflicted = 0;
  for (let runNo = 0; runNo < 12; runNo++) {
    await using t = await tempDb();
    await plainTable(t, 6000, 3);
    const op = ops[runNo % 3]!;
    const awaited = runNo < 6; // first half: the writer commits while the rewrite waits mid-way; then free-running
    let writer: Promise<{ ok: boolean; error?: string }> | undefined;
    const versionsBefore = (await (await t.open()).listVersions()).map((v) => v.version);
    const r = await refragment(ref(t.dir), {
      maxRowsPerFragment: 250,
      onProgress: async (p: Parameters<NonNullable<RefragmentOptions["onProgress"]>>[0]) => {
        if (p.phase !== "staging" || p.attempt > 0 || writer !== undefined || p.fragmentsStaged !== 3) return;
        writer = mutate(t.dir, op);
        if (awaited) await writer;
      },
    });
    const w = await writer!;
    if (awaited) assert.ok(w.ok, `writer ${op}: ${w.error}`);
    if (r.conflicts > 0) conflicted++;
    if (awaited) assert.ok(r.conflicts >= 1, "the writer committed during the rewrite: refragment started again");
    await expectEffect(t, op, w.ok, 6000);
    const vs = (await (await t.open()).listVersions()).map((v) => v.version);
    for (const v of versionsBefore) assert.ok(vs.includes(v), `version ${v} kept`);
    await everyVersionReads(t);
    assert.deepEqual(await indexes(t), ["id_idx:BTree:id"]);
    // Every fragment of the final layout holds at most 250 rows unless the writer committed after the swap.
    if (r.toVersion === (await (await t.open()).version())) assert.ok((await fragmentLayout(t)).every((f) => f.physicalRows <= 250));
  }
  assert.ok(conflicted >= 6);
});

test("a writer whose handle predates the swap and commits after it is refused by Lance (Incompatible ... Overwrite), never silently lost", async () => {
  for (const op of ["append", "update", "delete"] as const) {
    await using t = await tempDb();
    await plainTable(t, 6000, 1);
    const stale = await t.open();
    await stale.countRows();
    await refragment(ref(t.dir), { maxRowsPerFragment: 1000 });
    const write = op === "append" ? stale.add(rows(100_000, 250)) : op === "update" ? stale.update({ where: "id >= 5500 AND id < 5510", values: { s: "updated" } } as never) : stale.delete("id >= 5600 AND id < 5620");
    await assert.rejects(write, /incompatible with concurrent transaction Overwrite/);
    await expectEffect(t, op, false, 6000);
    // A fresh handle writes normally on the new layout.
    assert.ok((await mutate(t.dir, op)).ok);
    await expectEffect(t, op, true, 6000);
    await everyVersionReads(t);
  }
});

test("with no retries left, a concurrent commit stops refragment with COMMIT_CONFLICT and the writer's commit intact", async () => {
  await using t = await tempDb();
  await plainTable(t, 6000, 3);
  const layout = await fragmentLayout(t);
  await assert.rejects(
    refragment(ref(t.dir), {
      maxRowsPerFragment: 500,
      conflictRetries: 0,
      onProgress: async (p) => {
        if (p.fragmentsStaged === 2) assert.ok((await mutate(t.dir, "append")).ok);
      },
    }),
    (e: unknown) => isBackfillError(e, "COMMIT_CONFLICT") && e.retryable && /another writer committed while it rewrote version \d+.*Nothing of the refragment was committed; the table keeps every other writer's commits/.test((e as Error).message),
  );
  await expectEffect(t, "append", true, 6000);
  assert.deepEqual((await fragmentLayout(t)).slice(0, 3), layout);
  assert.ok(!existsSync(journal(t)));
  await everyVersionReads(t);
});

test("killed mid-rewrite (LANCET_FAILPOINTS=refragment.mid-rewrite:kill): the table is untouched and a re-run rolls forward", async () => {
  await using t = await tempDb();
  await indexedTable(t, 4000, 2);
  const before = await readAll(t, ["id", "x", "s"]);
  const versions = (await (await t.open()).listVersions()).length;
  const k = await child(t.dir, "refragment.mid-rewrite:kill@3", 400);
  assert.equal(k.signal, "SIGKILL", k.out);
  assert.equal((await (await t.open()).listVersions()).length, versions, "nothing was committed");
  assert.deepEqual(sans(await readAll(t, ["id", "x", "s"])), sans(before));
  assert.ok(existsSync(journal(t)));
  // The re-run resumes the staging where it stopped (fragment 4 of 10 is the first one it writes).
  const seen: number[] = [];
  const r = await refragment(ref(t.dir), { maxRowsPerFragment: 400, onProgress: (p) => void (p.phase === "staging" && seen.push(p.fragmentsStaged)) });
  assert.equal(r.resumed, true);
  assert.equal(seen[0], 4);
  assert.equal(r.fragmentsAfter, 10);
  assert.deepEqual(sans(await readAll(t, ["id", "x", "s"])), sans(before));
  assert.equal(await everyVersionReads(t), versions + 4);
  assert.deepEqual((await indexes(t)).length, 3);
  assert.ok(!existsSync(journal(t)));
});

test("killed mid-rewrite, then another process appends: the re-run starts over from the latest version and keeps the appended rows", async () => {
  await using t = await tempDb();
  await plainTable(t, 6000, 2);
  const before = await readAll(t, ["id", "x", "s"]);
  const k = await child(t.dir, "refragment.mid-rewrite:kill@2", 1000);
  assert.equal(k.signal, "SIGKILL", k.out);
  assert.ok((await mutate(t.dir, "append")).ok);
  const versions = (await (await t.open()).listVersions()).map((v) => v.version);
  const r = await refragment(ref(t.dir), { maxRowsPerFragment: 1000 });
  assert.equal(r.fromVersion, Math.max(...versions), "rewrote the latest version, with the append");
  assert.equal(r.rows, 6250);
  const after = sans(await readAll(t, ["id", "x", "s"]));
  assert.deepEqual(after.slice(0, 6000), sans(before));
  assert.deepEqual(after.slice(6000).map((x) => Number(x.id)), Array.from({ length: 250 }, (_, i) => 100_000 + i));
  const vs = (await (await t.open()).listVersions()).map((v) => v.version);
  for (const v of versions) assert.ok(vs.includes(v), `version ${v} kept`);
  await everyVersionReads(t);
  assert.deepEqual(await indexes(t), ["id_idx:BTree:id"]);
});

test("LANCET_FAILPOINTS=refragment.mid-rewrite (fail) gives an error that says the table is unchanged and how to go on", async () => {
  await using t = await tempDb();
  await plainTable(t, 3000, 1);
  const v = await (await t.open()).version();
  const f = await child(t.dir, "refragment.mid-rewrite", 1000);
  assert.equal(f.code, 3, f.out);
  const e = JSON.parse(f.out.trim().split("\n").pop()!) as { code: string; message: string };
  assert.equal(e.code, "INTERNAL");
  assert.match(e.message, new RegExp(`^refragment of table t stopped \\(failpoint refragment\\.mid-rewrite .*\\): the table is unchanged at version ${v} \\(nothing was committed to it\\); 1 new fragment\\(s\\) with 1000 of 3000 rows are staged in .*refragment/stage-.*\\. Run refragment again to finish it`));
  assert.equal(await (await t.open()).version(), v);
  const r = await refragment(ref(t.dir), { maxRowsPerFragment: 1000 });
  assert.deepEqual([r.resumed, r.fragmentsAfter, r.rows], [true, 3, 3000]);
});

test("UDF bindings and values survive; uncommitted checkpoints refuse the rewrite unless force", async () => {
  await using t = await tempDb();
  await plainTable(t, 3000, 1);
  await addColumns(ref(t.dir), { y: udfRef("doubled") });
  await backfill(ref(t.dir), "y");
  const meta = async () => Object.fromEntries((await (await t.open()).schema()).fields.map((f) => [f.name, [...f.metadata.entries()].sort()]));
  const before = await readAll(t, ["id", "x", "s", "y"]);
  const metaBefore = await meta();
  const { mkdirSync, writeFileSync } = await import("node:fs");
  const pending = path.join(t.dir, "_lancet", "t", "ckp", "batches", "y", "0-abc");
  mkdirSync(pending, { recursive: true });
  writeFileSync(path.join(pending, "0-10.arrow"), "");
  await assert.rejects(refragment(ref(t.dir), { maxRowsPerFragment: 1000 }), (e: unknown) => isBackfillError(e, "TABLE_BUSY") && /column\(s\) y \(1 batch\).*--force/.test((e as Error).message));
  assert.ok(!existsSync(journal(t)));
  const r = await refragment(ref(t.dir), { maxRowsPerFragment: 1000, force: true });
  assert.equal(r.fragmentsAfter, 3);
  assert.ok(!existsSync(path.join(t.dir, "_lancet", "t", "ckp")));
  assert.deepEqual(sans(await readAll(t, ["id", "x", "s", "y"])), sans(before));
  assert.deepEqual(await meta(), metaBefore);
  // Only the rows whose value is NULL (x is NULL) look unfilled; nothing else is computed again.
  assert.equal((await backfill(ref(t.dir), "y")).metrics.rowsComputed, before.filter((r) => r.y === null).length);
});

test("options are validated", async () => {
  await using t = await tempDb();
  await plainTable(t, 100, 1);
  await assert.rejects(refragment(ref(t.dir), { maxRowsPerFragment: 0 }), /options\.maxRowsPerFragment must be a positive integer \(got 0\)/);
  await assert.rejects(refragment(ref(t.dir), { maxRowsPerFragment: 10, conflictRetries: -1 }), /options\.conflictRetries must be a non-negative integer \(got -1\)/);
});

test("refragment and backfills exclude each other: a second refragment, or a backfill, during a refragment is refused; a refragment during a backfill too", async () => {
  await using t = await tempDb();
  await t.db.createTable("t", rows(0, 3000));
  await addColumns(ref(t.dir), { y: udfRef("slowBatch") });
  let during: unknown[] = [];
  await refragment(ref(t.dir), {
    maxRowsPerFragment: 1000,
    onProgress: async (p) => {
      if (p.phase !== "staging" || p.fragmentsStaged !== 1) return;
      during = await Promise.all([
        refragment(ref(t.dir), { maxRowsPerFragment: 500 }).then(() => "ran", (e: unknown) => e),
        backfill(ref(t.dir), "y").then(() => "ran", (e: unknown) => e),
      ]);
    },
  });
  assert.equal(during.length, 2);
  assert.ok(isBackfillError(during[0], "TABLE_BUSY") && /is being refragmented by another process/.test((during[0] as Error).message), String(during[0]));
  assert.ok(isBackfillError(during[1], "TABLE_BUSY") && /is being refragmented/.test((during[1] as Error).message), String(during[1]));
  // And the other way round: a refragment while a backfill holds its column's lock.
  await addColumns(ref(t.dir), { z: udfRef("slowBatch") });
  const job = backfillAsync(ref(t.dir), "z", { concurrency: 1, checkpointSize: 50 });
  for (let i = 0; i < 600 && job.record().status !== "running"; i++) await new Promise((r) => setTimeout(r, 20));
  assert.equal(job.record().status, "running");
  const refused = await refragment(ref(t.dir), { maxRowsPerFragment: 500 }).then(() => "ran", (e: unknown) => e);
  assert.ok(isBackfillError(refused, "TABLE_BUSY") && /running backfill of column z/.test((refused as Error).message), String(refused));
  await job.wait();
  const r = await refragment(ref(t.dir), { maxRowsPerFragment: 500 });
  assert.equal(r.fragmentsAfter, 6);
});
