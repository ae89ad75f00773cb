import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync, rmSync } from "node:fs";
import * as path from "node:path";
import { addColumns, backfill, isBackfillError } from "../../src/index.ts";
import { makeTable, readAll, REPO, securedRows, tempDb, udfRef } from "../helpers.ts";

const ref = (dir: string) => ({ db: dir, table: "t" });

test("a UDF that kills its worker process once: the task is retried on a fresh process and the job finishes", async () => {
  await using t = await tempDb();
  await makeTable(t, 3, 300);
  await addColumns(ref(t.dir), { y: udfRef("crashOnce") });
  const marker = path.join(t.dir, "crashed-once");
  process.env.LANCET_TEST_CRASH_MARKER = marker;
  try {
    const r = await backfill(ref(t.dir), "y", { concurrency: 2, checkpointSize: 50 });
    assert.equal(r.status, "finished");
    assert.equal(r.metrics.workerCrashes, 1);
    assert.ok(existsSync(marker));
  } finally {
    delete process.env.LANCET_TEST_CRASH_MARKER;
  }
  for (const row of await readAll(t, ["x", "y"])) assert.equal(row.y, row.x === null ? null : (row.x as number) * 2);
});

test("a UDF that always kills its worker fails the job after maxTaskAttempts with WORKER_CRASHED; the table is unchanged", async () => {
  await using t = await tempDb();
  const table = await makeTable(t, 2, 100);
  await addColumns(ref(t.dir), { y: udfRef("alwaysCrash") });
  const v = await table.version();
  await assert.rejects(backfill(ref(t.dir), "y", { concurrency: 1, maxTaskAttempts: 2 }), (e: unknown) => {
    assert.ok(isBackfillError(e, "WORKER_CRASHED"));
    assert.match((e as Error).message, /exited with code 9 .*fragment 0.*table t, column y.*failed 2 time/);
    return true;
  });
  await table.checkoutLatest();
  assert.equal(await table.version(), v);
});

test("kill -9 of the backfill process mid-job: a re-run recomputes only what was in flight and all values are correct", async () => {
  await using t = await tempDb();
  await makeTable(t, 4, 2000);
  await addColumns(ref(t.dir), { y: udfRef("slowBatch") });
  const storeDir = path.join(t.dir, "_lancet", "t");
  const child = spawn(process.execPath, [path.join(REPO, "bin/lancet.mjs"), "backfill", "--db", t.dir, "--table", "t", "--column", "y", "--concurrency", "2", "--checkpoint-size", "100", "--commit-granularity", "1"], {
    stdio: ["ignore", "pipe", "pipe"],
    detached: true, // its own process group, so the kill takes the workers too
  });
  let stderr = "";
  child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<void>((r) => child.on("exit", () => r()));
  // Wait until a few batches are checkpointed (and at least one fragment is likely committed).
  const deadline = Date.now() + 60_000;
  while (Date.now() < deadline && (await securedRows(storeDir, "y")) < 2600) await new Promise((r) => setTimeout(r, 50));
  process.kill(-child.pid!, "SIGKILL");
  await exited;
  await new Promise((r) => setTimeout(r, 200));
  const secured = await securedRows(storeDir, "y");
  assert.ok(secured >= 2600 && secured < 8000, `killed mid-job (secured ${secured} rows; stderr: ${stderr.slice(-500)})`);

  const r = await backfill(ref(t.dir), "y", { concurrency: 2 });
  assert.equal(r.metrics.rowsComputed, 8000 - secured, "a re-run recomputes exactly the rows that were not checkpointed");
  for (const row of await readAll(t, ["x", "y"])) assert.equal(row.y, row.x === null ? null : (row.x as number) * 2);
  assert.equal((await backfill(ref(t.dir), "y")).metrics.rowsComputed, 0);
  rmSync(storeDir, { recursive: true, force: true });
});

test("a UDF whose setup() never finishes: its worker is killed after taskTimeoutMs and the job fails with WORKER_CRASHED naming setup()", async () => {
  await using t = await tempDb();
  const table = await makeTable(t, 1, 50);
  await addColumns(ref(t.dir), { y: udfRef("setupHangs") });
  const v = await table.version();
  const t0 = Date.now();
  await assert.rejects(backfill(ref(t.dir), "y", { concurrency: 1, taskTimeoutMs: 1500 }), (e: unknown) => {
    assert.ok(isBackfillError(e, "WORKER_CRASHED"), String(e));
    assert.match((e as Error).message, /made no progress for 1500 ms \(taskTimeoutMs\) and was killed while starting \(the UDF's setup\(\) of .*setupHangs did not finish; raise taskTimeoutMs/);
    return true;
  });
  assert.ok(Date.now() - t0 < 15_000);
  await table.checkoutLatest();
  assert.equal(await table.version(), v);
});
