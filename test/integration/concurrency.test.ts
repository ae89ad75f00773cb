import { test } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import * as path from "node:path";
import { promisify } from "node:util";
import { addColumns, backfill, backfillAsync, isBackfillError, type JobRecord } from "../../src/index.ts";
import { FIXTURES, makeTable, readAll, REPO, tempDb, udfRef, type TempDb } from "../helpers.ts";

const exec = promisify(execFile);
const ref = (dir: string) => ({ db: dir, table: "t" });
const ROWS = 6000;

async function until(what: string, f: () => boolean, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!f()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Runs OP from another process once the backfill has committed its first fragment; returns both outcomes. */
async function duringBackfill(t: TempDb, op: string, checkpointSize = 50): Promise<{ mutation: { ok: boolean; error?: string }; job: JobRecord | unknown }> {
  const job = backfillAsync(ref(t.dir), "y", { concurrency: 2, checkpointSize, commitGranularity: 1 });
  const outcome = job.wait().then((r) => r, (e: unknown) => e);
  await until("a first commit", () => job.record().metrics.fragmentsCommitted >= 1);
  const { stdout } = await exec(process.execPath, [path.join(FIXTURES, "mutate.ts"), t.dir, "t", op]);
  const mutation = JSON.parse(stdout.trim()) as { ok: boolean; error?: string };
  return { mutation, job: await outcome };
}

async function setup(t: TempDb): Promise<void> {
  await makeTable(t, 6, 1000);
  await addColumns(ref(t.dir), { y: udfRef("slowBatch") });
}

function assertValues(rows: Record<string, unknown>[]): void {
  for (const r of rows) assert.equal(r.y, r.x === null ? null : (r.x as number) * 2, `id ${String(r.id)}`);
}

test("an append by another process during a backfill is safe; the new rows are left for the next run", async () => {
  await using t = await tempDb();
  await setup(t);
  const { mutation, job } = await duringBackfill(t, "append");
  assert.deepEqual(mutation, { ok: true });
  assert.equal((job as JobRecord).status, "finished");
  const all = await readAll(t, ["id", "x", "y"]);
  assert.equal(all.length, ROWS + 250, "the appended rows are there");
  assert.equal(all.filter((r) => Number(r.id) >= 100_000 && r.y !== null).length, 0, "not computed by the running job");
  const next = await backfill(ref(t.dir), "y");
  assert.equal(next.metrics.rowsComputed, 250);
  assertValues(await readAll(t, ["id", "x", "y"]));
});

test("a backfill of another column at the same time is safe", async () => {
  await using t = await tempDb();
  await setup(t);
  await addColumns(ref(t.dir), { z: udfRef("batchDoubled") });
  const [a, b] = await Promise.all([
    backfill(ref(t.dir), "y", { concurrency: 1, checkpointSize: 100 }),
    backfill(ref(t.dir), "z", { concurrency: 1, checkpointSize: 100 }),
  ]);
  assert.equal(a.metrics.rowsComputed, ROWS);
  assert.equal(b.metrics.rowsComputed, ROWS);
  for (const r of await readAll(t, ["x", "y", "z"])) {
    assert.equal(r.y, r.x === null ? null : (r.x as number) * 2);
    assert.equal(r.z, r.x === null ? null : (r.x as number) * 2);
  }
});

test("mergeInsert path: three backfills of different columns in three processes and an appending process at once; nothing is lost and re-runs fill every value", async () => {
  await using t = await tempDb();
  await makeTable(t, 3, 300);
  await addColumns(ref(t.dir), { a: udfRef("doubled"), b: udfRef("doubled"), c: udfRef("doubled") });
  const cli = (column: string) =>
    exec(process.execPath, [path.join(REPO, "bin/lancet.mjs"), "backfill", "--db", t.dir, "--table", "t", "--column", column, "--commit-mode", "merge", "--concurrency", "1", "--commit-granularity", "1"]).then(
      () => "",
      (e: { stderr?: string }) => e.stderr ?? String(e),
    );
  const appender = exec(process.execPath, ["--input-type=module", "-e", `
    const { lancedb } = await import(${JSON.stringify(path.join(REPO, "src/arrow.ts"))});
    const { rows } = await import(${JSON.stringify(path.join(REPO, "test/helpers.ts"))});
    const t = await (await lancedb.connect(${JSON.stringify(t.dir)})).openTable("t");
    for (let i = 0; i < 5; i++) await t.add(rows(10000 + i * 10, 10));
  `]);
  const [ea, eb, ec] = await Promise.all([cli("a"), cli("b"), cli("c"), appender]);
  // A fragment may fail to commit when merges race (a clear COMMIT_* error naming it); never a loss.
  for (const e of [ea, eb, ec]) assert.ok(e === "" || /lancet: error COMMIT_(FAILED|CONFLICT): .*Run the backfill again/.test(e), e);
  // Re-runs fill what is left; each count opens the table anew (a handle does not see later commits).
  const missing = async (c: string) => (await t.open("t")).countRows(`x IS NOT NULL AND ${c} IS NULL`);
  for (const c of ["a", "b", "c"]) for (let i = 0; i < 3 && (await missing(c)) > 0; i++) await backfill(ref(t.dir), c).catch((e: unknown) => assert.ok(isBackfillError(e, "COMMIT_FAILED"), String(e)));
  const all = await readAll(t, ["id", "x", "a", "b", "c"]);
  assert.equal(all.length, 950, "every original and appended row is there");
  for (const r of all) for (const c of ["a", "b", "c"]) assert.equal(r[c], r.x === null ? null : (r.x as number) * 2, `row ${String(r.id)} column ${c}`);
});

test("two backfills of the same column at once: the second refuses, naming the first; nothing is corrupted", async () => {
  await using t = await tempDb();
  await setup(t);
  const first = backfillAsync(ref(t.dir), "y", { concurrency: 1, checkpointSize: 100 });
  await until("the first job to run", () => first.status() === "running");
  await assert.rejects(backfill(ref(t.dir), "y"), (e: unknown) => isBackfillError(e, "TABLE_BUSY") && new RegExp(`being backfilled by job ${first.id}`).test((e as Error).message));
  await first.wait();
  assertValues(await readAll(t, ["id", "x", "y"]));
  assert.equal((await backfill(ref(t.dir), "y")).metrics.rowsComputed, 0, "and the lock is released");
});

for (const op of ["update", "delete", "optimize"] as const) {
  test(`${op} by another process during a backfill: no lost writes; only the fragments it touches are affected; a re-run completes`, async () => {
    await using t = await tempDb();
    await setup(t);
    const before = await readAll(t, ["id", "x", "s"]);
    const { mutation, job } = await duringBackfill(t, op);
    if (op !== "optimize") assert.deepEqual(mutation, { ok: true });
    else assert.ok(mutation.ok || /preempted|conflict/i.test(mutation.error ?? ""), JSON.stringify(mutation));
    if (job instanceof Error) {
      // Graceful degradation: the touched fragments failed, the healthy ones were committed.
      assert.ok(isBackfillError(job, "COMMIT_FAILED"), (job as Error).message);
      assert.match((job as Error).message, /fragment\(s\) of table t could not be committed .*Run the backfill again/);
    } else {
      assert.equal((job as JobRecord).status, "finished");
    }
    await backfill(ref(t.dir), "y");
    const after = await readAll(t, ["id", "x", "s", "y"]);
    // The other writer's change is intact…
    const expectedIds = before.map((r) => Number(r.id)).filter((id) => op !== "delete" || id < 5600 || id >= 5620);
    assert.deepEqual(after.map((r) => Number(r.id)).sort((a, b) => a - b), expectedIds.sort((a, b) => a - b));
    if (op === "update") assert.equal(after.filter((r) => r.s === "updated").length, 10);
    // …and so is the backfill's: every row has its value.
    assertValues(after);
  });
}

test("a fragment that cannot be committed fails alone: the healthy fragments are committed and the failed one is reported with its reason", async () => {
  await using t = await tempDb();
  await setup(t);
  // Smaller batches: the job runs long enough for the other process to act before the last fragment commits.
  const { mutation, job } = await duringBackfill(t, "delete-fragment", 20);
  assert.deepEqual(mutation, { ok: true });
  assert.ok(isBackfillError(job, "COMMIT_FAILED"), String(job));
  assert.match((job as Error).message, /^1 fragment\(s\) of table t could not be committed \(5 were\): fragment 5: .*Run the backfill again/);
  const { getJob } = await import("../../src/index.ts");
  const record = await getJob(t.dir, (job as { context: { jobId: string } }).context.jobId);
  assert.equal(record.status, "failed");
  assert.deepEqual(record.failedFragments.map((f) => f.id), [5]);
  assert.equal(record.metrics.fragmentsCommitted, 5);
  assert.ok(record.events.some((e) => e.type === "commit-failed" && /fragment 5/.test(e.message)));
  const rows = await readAll(t, ["id", "x", "y"]);
  assert.equal(rows.length, 5000);
  assertValues(rows);
  const again = await backfill(ref(t.dir), "y");
  assert.equal(again.metrics.rowsComputed, 0);
});

test("a job whose column lock was taken over commits nothing more (fencing right before each publication)", async () => {
  await using t = await tempDb();
  await setup(t);
  const job = backfillAsync(ref(t.dir), "y", { concurrency: 1, checkpointSize: 50, commitGranularity: 1, writerConcurrency: 1 });
  const outcome = job.wait().then((r) => r, (e: unknown) => e);
  await until("a first commit", () => job.record().metrics.fragmentsCommitted >= 1);
  // Another job takes the lock over: a higher token appears beside the running job's lock.
  const dir = path.join(t.dir, "_lancet", "t", "locks", "y");
  const { readdirSync, readFileSync, writeFileSync } = await import("node:fs");
  const mine = readdirSync(dir).filter((f) => f.endsWith(".lock")).sort((a, b) => parseInt(b) - parseInt(a))[0]!;
  const body = JSON.parse(readFileSync(path.join(dir, mine), "utf8")) as Record<string, unknown>;
  writeFileSync(path.join(dir, `${parseInt(mine) + 1}.lock`), JSON.stringify({ ...body, token: parseInt(mine) + 1, jobId: "intruder" }));
  const versionAtTakeover = await (await t.open()).version();
  const result = await outcome;
  assert.ok(isBackfillError(result, "TABLE_BUSY") || isBackfillError(result, "COMMIT_FAILED"), String(result));
  assert.match((result as Error).message, /was taken over/);
  // At most the one publication already past its fence when the lock changed hands.
  assert.ok((await (await t.open()).version()) <= versionAtTakeover + 1);
  assert.ok(job.record().metrics.fragmentsCommitted < 6);
});
