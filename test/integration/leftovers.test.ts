// Checkpoints nothing will read again do not stay in the store: a run killed after a commit but before
// it deleted the fragment's batches (failpoint commit.before-marker) leaves them, and the next run
// removes them once the fragment is complete; batches of fragments gone from the table go too.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync, mkdirSync, readdirSync, writeFileSync } from "node:fs";
import * as path from "node:path";
import { addColumns, backfill } from "../../src/index.ts";
import { MemoryCheckpointStore } from "../../src/checkpoint/store.ts";
import { batchKeyFragment } from "../../src/checkpoint/keys.ts";
import { sweepBatches } from "../../src/checkpoint/sweep.ts";
import { makeTable, readAll, REPO, tempDb, udfRef, type TempDb } from "../helpers.ts";

const ref = (dir: string) => ({ db: dir, table: "t" });

/** Batch files of column `column` in table t's checkpoint store, as "key/range" paths. */
function batchFiles(t: TempDb, column: string): string[] {
  const dir = path.join(t.dir, "_lancet", "t", "ckp", "batches", column);
  if (!existsSync(dir)) return [];
  return (readdirSync(dir, { recursive: true }) as string[]).filter((f) => f.endsWith(".arrow")).sort();
}

/** Runs a backfill in a child process with LANCET_FAILPOINTS set; resolves with how it ended and its stderr. */
function backfillInChild(dir: string, column: string, failpoints: string): Promise<{ code: number | null; signal: NodeJS.Signals | null; stderr: string }> {
  const script = `const { backfill } = await import(${JSON.stringify(path.join(REPO, "src/index.ts"))});
await backfill({ db: ${JSON.stringify(dir)}, table: "t" }, ${JSON.stringify(column)}, { concurrency: 1, commitGranularity: 1 });`;
  const child = spawn(process.execPath, ["--input-type=module", "-e", script], { env: { ...process.env, LANCET_FAILPOINTS: failpoints }, stdio: ["ignore", "ignore", "pipe"] });
  let stderr = "";
  child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
  return new Promise((resolve) => child.on("close", (code, signal) => resolve({ code, signal, stderr })));
}

test("batches of a fragment committed just before a kill are removed by the next run", async () => {
  await using t = await tempDb();
  await makeTable(t, 3, 20);
  await addColumns(ref(t.dir), { y: udfRef("doubled") });
  const killed = await backfillInChild(t.dir, "y", "commit.before-marker:kill");
  assert.equal(killed.signal, "SIGKILL", `the child was killed at the failpoint (code ${killed.code}): ${killed.stderr}`);
  const left = batchFiles(t, "y");
  assert.ok(left.length > 0, "the killed run left the committed fragment's batches");

  const r = await backfill(ref(t.dir), "y");
  assert.equal(r.status, "finished");
  assert.deepEqual(batchFiles(t, "y"), [], "no batch file is left after the re-run");
  const values = await readAll(t, ["x", "y"]);
  for (const v of values) assert.equal(v.y, v.x === null ? null : (v.x as number) * 2);
});

test("batches of fragments gone from the table are removed; those of fragments newer than the run are kept", async () => {
  await using t = await tempDb();
  const table = await makeTable(t, 3, 10);
  await addColumns(ref(t.dir), { y: udfRef("doubled") });
  await table.delete("id >= 10 AND id < 20"); // fragment 1 is gone
  const root = path.join(t.dir, "_lancet", "t", "ckp", "batches", "y");
  for (const key of ["1-00112233445566778899aabbccddeeff", "99-00112233445566778899aabbccddeeff"]) {
    mkdirSync(path.join(root, key), { recursive: true });
    writeFileSync(path.join(root, key, "0-10.arrow"), "");
  }
  await backfill(ref(t.dir), "y");
  assert.deepEqual(batchFiles(t, "y"), [path.join("99-00112233445566778899aabbccddeeff", "0-10.arrow")]);
});

test("a where run sweeps nothing: batches of a plain run it interrupted stay resumable", async () => {
  const store = new MemoryCheckpointStore();
  await store.putBatch("y/0-aa", { start: 0, end: 10 }, new Uint8Array(1));
  await store.putBatch("y/0-bb", { start: 0, end: 10 }, new Uint8Array(1));
  await store.putBatch("y/2-cc", { start: 0, end: 10 }, new Uint8Array(1));
  await store.putBatch("y/7-dd", { start: 0, end: 10 }, new Uint8Array(1));
  await store.putBatch("z/1-ee", { start: 0, end: 10 }, new Uint8Array(1));
  assert.deepEqual(await store.listBatchKeys("y"), ["y/0-aa", "y/0-bb", "y/2-cc", "y/7-dd"]);
  assert.equal(batchKeyFragment("y/12-0abc"), 12);
  assert.equal(batchKeyFragment("y/done"), undefined);
  // Fragment 0 complete, 1 gone, 2 pending, 7 newer than the pinned version: only 0's keys go.
  const deleted = await sweepBatches(store, "y", { complete: new Set([0]), existing: new Set([0, 2, 3]) });
  assert.deepEqual(deleted, ["y/0-aa", "y/0-bb"]);
  assert.deepEqual(await store.listBatchKeys("y"), ["y/2-cc", "y/7-dd"]);
  assert.deepEqual(await store.listBatchKeys("z"), ["z/1-ee"], "other columns are untouched");
});
