// Fragment files: a task that covers a whole fragment writes the column file itself (appended to a
// one-column LanceDB table kept with its checkpoints), and the graft links that file into the table.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync, readdirSync, statSync } from "node:fs";
import * as path from "node:path";
import { arrow } from "../../src/arrow.ts";
import { currentFragmentFile, FragmentFileWriter, fragmentFileRows } from "../../src/checkpoint/fragment-file.ts";
import { FileCheckpointStore } from "../../src/checkpoint/store.ts";
import { addColumns, backfill } from "../../src/index.ts";
import { readManifest } from "../../src/read/manifest.ts";
import { everyVersionReadable, makeTable, readAll, REPO, tempDb, udfRef, type TempDb } from "../helpers.ts";

const ref = (dir: string) => ({ db: dir, table: "t" });

function runCli(t: TempDb, args: string[], env: Record<string, string> = {}): Promise<{ code: number | null; signal: NodeJS.Signals | null; stderr: string }> {
  const child = spawn(process.execPath, [path.join(REPO, "bin/lancet.mjs"), "backfill", "--db", t.dir, "--table", "t", ...args], { stdio: ["ignore", "ignore", "pipe"], env: { ...process.env, ...env } });
  let stderr = "";
  child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
  return new Promise((r) => child.on("exit", (code, signal) => r({ code, signal, stderr })));
}

/** The checkpoint directories of column `column`, by fragment id. */
function batchDirs(t: TempDb, column: string): Map<number, string> {
  const root = path.join(t.dir, "_lancet", "t", "ckp", "batches", column);
  const out = new Map<number, string>();
  if (!existsSync(root)) return out;
  for (const d of readdirSync(root)) out.set(Number(d.split("-")[0]), path.join(root, d));
  return out;
}

function expectDoubled(rows: Record<string, unknown>[], column = "y"): void {
  for (const row of rows) assert.equal(row[column], row.x === null ? null : (row.x as number) * 2);
}

test("whole-fragment tasks write the column file: the table's data file is the checkpoint's file, linked, not copied", async () => {
  await using t = await tempDb();
  await makeTable(t, 3, 500);
  await addColumns(ref(t.dir), { y: udfRef("doubled") });
  // Killed right after the first group's commit, before its done markers: its checkpoint is still there.
  const r = await runCli(t, ["--column", "y", "--concurrency", "1", "--commit-granularity", "1"], { LANCET_FAILPOINTS: "commit.before-marker:kill" });
  assert.equal(r.signal, "SIGKILL", r.stderr);
  const dirs = batchDirs(t, "y");
  assert.ok(dirs.size >= 1);
  const [fragmentId, dir] = [...dirs].sort((a, b) => a[0] - b[0])[0]!;
  assert.equal(fragmentId, 0);
  const file = await currentFragmentFile(dir);
  assert.equal(file?.rows, 500, "the checkpoint is a fragment file of the whole fragment");
  const fileData = readdirSync(path.join(file!.tableDir, "data")).filter((f) => f.endsWith(".lance"));
  assert.equal(fileData.length, 1, "compacted into one data file");
  const ckpFile = statSync(path.join(file!.tableDir, "data", fileData[0]!));
  const m = await readManifest(path.join(t.dir, "t.lance"));
  const yField = m.fields.find((f) => f.name === "y")!.id;
  const tableFile = m.fragments.find((f) => f.id === 0)!.files.find((f) => f.fields.includes(yField))!;
  const inTable = statSync(path.join(t.dir, "t.lance", "data", tableFile.path));
  assert.equal(inTable.ino, ckpFile.ino, "the table's file is a hard link to the checkpoint's");
  assert.equal(inTable.nlink, 2);
  // The re-run computes only what no fragment file holds yet, removes the checkpoints, and every value is right.
  let inFiles = 0;
  for (const [id, d] of dirs) if (id !== 0) inFiles += await fragmentFileRows(d);
  const again = await backfill(ref(t.dir), "y", { concurrency: 1 });
  // (Fragment 0 is committed but not marked done: its rows whose value is null are planned again.)
  const planned = again.plan!.fragments.filter((f) => f.id !== 0).reduce((n, f) => n + f.rowsToCompute, 0);
  assert.equal(planned, 1000 - inFiles, JSON.stringify(again.plan));
  expectDoubled(await readAll(t, ["x", "y"]));
  assert.equal(batchDirs(t, "y").size, 0);
  assert.equal(statSync(path.join(t.dir, "t.lance", "data", tableFile.path)).nlink, 1);
  await everyVersionReadable(t);
});

test("a re-run continues a fragment file from where it ends; a file with more rows than its fragment is removed and recomputed", async () => {
  await using t = await tempDb();
  await makeTable(t, 2, 1000);
  await addColumns(ref(t.dir), { y: udfRef("doubled") });
  // Plan only, to learn each fragment's checkpoint key.
  const plan = await backfill(ref(t.dir), "y", { planOnly: true, concurrency: 1 });
  assert.equal(plan.plan!.fragmentsToWrite, 2);
  // A previous attempt's file: fragment 0's first 600 rows (the right values), fragment 1's 1,200 rows (wrong).
  const rows = await readAll(t, ["x"]);
  const keys = await keysOf(t);
  const store = new FileCheckpointStore(path.join(t.dir, "_lancet", "t", "ckp"));
  const w0 = await FragmentFileWriter.open(store.batchDir(keys.get(0)!), "y", new arrow.Float64(), "2.0", { table: "t", column: "y", fragmentId: 0 });
  await w0.append({ start: 0, end: 600 }, arrow.vectorFromArray(rows.slice(0, 600).map((r) => (r.x === null ? null : (r.x as number) * 2)), new arrow.Float64()) as never, 0);
  w0.close();
  const w1 = await FragmentFileWriter.open(store.batchDir(keys.get(1)!), "y", new arrow.Float64(), "2.0", { table: "t", column: "y", fragmentId: 1 });
  await w1.append({ start: 0, end: 1200 }, arrow.vectorFromArray(Array.from({ length: 1200 }, () => -1), new arrow.Float64()) as never, 0);
  w1.close();
  assert.deepEqual(await store.listBatches(keys.get(0)!), [{ start: 0, end: 600, file: true }]);

  const r = await backfill(ref(t.dir), "y", { concurrency: 1 });
  assert.equal(r.metrics.rowsComputed, 400 + 1000, "fragment 0 from row 600; fragment 1 from scratch");
  expectDoubled(await readAll(t, ["x", "y"]));
  await everyVersionReadable(t);
});

test("two writers appending to one fragment file at once: the file is poisoned, both stop, and the next writer starts a new file", async () => {
  await using t = await tempDb();
  const dir = path.join(t.dir, "ckp-race");
  const where = { table: "t", column: "y", fragmentId: 0 };
  const a = await FragmentFileWriter.open(dir, "y", new arrow.Float64(), "2.0", where);
  const vec = (n: number, v: number) => arrow.vectorFromArray(Array.from({ length: n }, () => v), new arrow.Float64()) as never;
  await a.append({ start: 0, end: 10 }, vec(10, 1), 0);
  const b = await FragmentFileWriter.open(dir, "y", new arrow.Float64(), "2.0", where);
  assert.equal(b.rows, 10);
  await b.append({ start: 10, end: 20 }, vec(10, 2), 0);
  await assert.rejects(a.append({ start: 10, end: 20 }, vec(10, 3), 0), /another attempt appended at the same time .*poisoned/);
  assert.equal(await fragmentFileRows(dir), 0, "the poisoned file counts as no rows: they are computed again");
  // The survivor's next append is refused too: it never writes into a file nobody uses again… 
  await assert.rejects(b.append({ start: 20, end: 30 }, vec(10, 4), 0), /another attempt wrote to it at the same time/);
  a.close();
  b.close();
  // …and the next writer starts the next file from row 0, never the poisoned folder.
  const c = await FragmentFileWriter.open(dir, "y", new arrow.Float64(), "2.0", where);
  assert.equal(c.rows, 0);
  await c.append({ start: 0, end: 5 }, vec(5, 9), 0);
  c.close();
  const f = await currentFragmentFile(dir);
  assert.equal(f?.rows, 5);
  assert.match(f!.dir, /file-2$/);
});

test("rows no append record accounts for (an append that raced, a writer killed before recording) make the file invalid, not wrong", async () => {
  await using t = await tempDb();
  const dir = path.join(t.dir, "ckp-chain");
  const where = { table: "t", column: "y", fragmentId: 0 };
  const vec = (n: number, v: number) => arrow.vectorFromArray(Array.from({ length: n }, () => v), new arrow.Float64()) as never;
  const a = await FragmentFileWriter.open(dir, "y", new arrow.Float64(), "2.0", where);
  await a.append({ start: 0, end: 10 }, vec(10, 1), 0);
  a.close();
  // Another process appends without a record (the racing append of a writer killed before it could poison the file).
  const { lancedb } = await import("../../src/arrow.ts");
  const file = await currentFragmentFile(dir);
  const db = await lancedb.connect(file!.dir);
  await (await db.openTable("v")).add(new arrow.Table({ y: vec(10, 7) }) as never);
  assert.equal(await fragmentFileRows(dir), 0, "20 rows but records for 10: not a checkpoint");
  const b = await FragmentFileWriter.open(dir, "y", new arrow.Float64(), "2.0", where);
  assert.equal(b.rows, 0, "a new file starts from row 0");
  b.close();
});

test("rows skipped by the error policy in a fragment file are counted: the fragment is not done and the next run retries them", async () => {
  await using t = await tempDb();
  await makeTable(t, 2, 50);
  await addColumns(ref(t.dir), { y: udfRef("throws") });
  const first = await backfill(ref(t.dir), "y", { concurrency: 1, errorPolicy: "skip" });
  assert.ok(first.metrics.rowsSkipped > 0);
  const dirs = batchDirs(t, "y");
  assert.equal(dirs.size, 0, "committed: checkpoints removed");
  const markers = readdirSync(path.join(t.dir, "_lancet", "t", "ckp", "markers", "y", "done"));
  assert.equal(markers.length, 2);
  // The next run plans the skipped rows again (the markers record them).
  const again = await backfill(ref(t.dir), "y", { concurrency: 1, planOnly: true });
  assert.equal(again.plan!.fragmentsDone, 0);
});

async function keysOf(t: TempDb): Promise<Map<number, string>> {
  // A plan-only run records nothing in the store; the keys come from a killed run's directories or,
  // as here, from the same function the planner uses.
  const { batchKey, deletionIdentity, inputIdentity } = await import("../../src/checkpoint/keys.ts");
  const { readBinding } = await import("../../src/udf/binding.ts");
  const { lancedb } = await import("../../src/arrow.ts");
  const db = await lancedb.connect(t.dir);
  const table = await db.openTable("t");
  const field = (await table.schema()).fields.find((f) => f.name === "y")!;
  const binding = readBinding(field.metadata, "t", "y")!;
  const m = await readManifest(path.join(t.dir, "t.lance"));
  const inputIds = m.fields.filter((f) => binding.inputs.includes(f.name)).map((f) => f.id);
  return new Map(m.fragments.map((f) => [f.id, batchKey({ table: "t", column: "y", udfVersion: binding.version, selection: "", fragmentId: f.id, inputIdentity: inputIdentity(f, inputIds), deletionIdentity: deletionIdentity(f) })]));
}

for (const commitMode of ["auto", "merge"] as const) {
  test(`a fragment file from an earlier run plus batch checkpoints for the rest (smaller tasks now): ${commitMode} commits the fragment from both, in order`, async () => {
    await using t = await tempDb();
    await makeTable(t, 1, 1000);
    await addColumns(ref(t.dir), { y: udfRef("doubled") });
    // An earlier run's fragment file: the first 600 rows, computed right.
    const x = await readAll(t, ["x"]);
    const [key] = [...(await keysOf(t)).values()];
    const store = new FileCheckpointStore(path.join(t.dir, "_lancet", "t", "ckp"));
    const w = await FragmentFileWriter.open(store.batchDir(key!), "y", new arrow.Float64(), "2.0", { table: "t", column: "y", fragmentId: 0 });
    await w.append({ start: 0, end: 600 }, arrow.vectorFromArray(x.slice(0, 600).map((r) => (r.x === null ? null : (r.x as number) * 2)), new arrow.Float64()) as never, 0);
    w.close();
    // Now tasks of 250 rows: none covers the whole fragment, so the rest goes to batch checkpoints.
    const r = await backfill(ref(t.dir), "y", { concurrency: 1, taskSize: 250, commitMode });
    assert.equal(r.metrics.rowsComputed, 400);
    expectDoubled(await readAll(t, ["x", "y"]));
    await everyVersionReadable(t);
  });
}
